//! Format stability, pinned: small checkpoints written by the code of their day are committed
//! under `tests/fixtures/`, and each must still restore, on every engine this build has, to
//! the dump committed beside it. A change to the manifest, the canonical key-group format or
//! the timers file then fails here instead of silently breaking the restore of checkpoints
//! users already hold.
//!
//! - `heap-checkpoint`: a heap checkpoint (manifest version 2, the key-group data file and the
//!   timers file);
//! - `heap-checkpoint-v1`: the same state without timers, its manifest rewritten as version 1
//!   (no timer-service list), as the first format wrote it;
//! - `rocksdb-savepoint`: a savepoint written by the RocksDB engine (canonical format), with
//!   timers.
//!
//! The fixtures were written by `write_golden_fixtures` (ignored; it needs the `rocksdb`
//! feature): `cargo test --release --features rocksdb --test golden -- --ignored` rewrites
//! them, which is only right after a deliberate, documented format change.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use keyed_state::checkpoint::{CheckpointStore, LocalStorage, RestoreSource};
use keyed_state::clock::ManualClock;
use keyed_state::{Engine, EngineConfig, HeapEngine, KeyedStateBackend};

#[path = "support/states.rs"]
mod states;
use states::{dump, register};

const M: u32 = 16;
/// The engine clock when the fixtures were written and when they are restored: TTL entries
/// (10 s) written at this time are live.
const NOW: u64 = 1_700_000_000_000;
const CASES: [&str; 3] = ["heap-checkpoint", "heap-checkpoint-v1", "rocksdb-savepoint"];

fn fixture_dir(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(case)
}

fn config(clock: &ManualClock) -> EngineConfig {
    EngineConfig::new(M).unwrap().with_clock(clock.shared())
}

/// Everything the backend holds: the states' dump, then every timer of the service `t` (fired,
/// which empties it).
fn dump_all<E: Engine>(b: &KeyedStateBackend<u64, E>, with_timers: bool) -> Vec<String> {
    let s = register(b);
    let mut lines: BTreeSet<String> = dump(b, &s);
    if with_timers {
        let t = b.timer_service::<u32>("t").unwrap();
        t.advance_watermark(u64::MAX, |x| {
            lines.insert(format!(
                "timer event {} {} {}",
                x.timestamp, x.key, x.namespace
            ));
            Ok(())
        })
        .unwrap();
        t.advance_processing_time(u64::MAX, |x| {
            lines.insert(format!(
                "timer processing {} {} {}",
                x.timestamp, x.key, x.namespace
            ));
            Ok(())
        })
        .unwrap();
    }
    lines.into_iter().collect()
}

/// The fixture's checkpoint, from a copy of its directory (opening a store may clean).
fn source(case: &str, scratch: &Path) -> RestoreSource {
    let root = scratch.join(case);
    std::fs::create_dir_all(root.join("chk-1")).unwrap();
    for entry in std::fs::read_dir(fixture_dir(case).join("chk-1")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), root.join("chk-1").join(entry.file_name())).unwrap();
    }
    let storage = Arc::new(LocalStorage::new(&root).unwrap());
    let (store, report) = CheckpointStore::open(storage, 1).unwrap();
    assert_eq!(
        report.retained,
        vec![1],
        "{case}: the fixture is a complete checkpoint"
    );
    assert_eq!(report.orphans_removed, 0, "{case}");
    RestoreSource::latest(&store).unwrap()
}

fn expected(case: &str) -> Vec<String> {
    let text = std::fs::read_to_string(fixture_dir(case).join("dump.txt")).unwrap();
    text.lines().map(str::to_owned).collect()
}

#[test]
fn golden_checkpoints_restore_to_their_dumps_on_the_heap() {
    let scratch = tempfile::tempdir().unwrap();
    for case in CASES {
        let clock = ManualClock::new(NOW);
        let b = KeyedStateBackend::<u64>::new(
            HeapEngine::restore(config(&clock), &[source(case, scratch.path())]).unwrap(),
        );
        let want = expected(case);
        let with_timers = want.iter().any(|l| l.starts_with("timer "));
        assert_eq!(dump_all(&b, with_timers), want, "{case} on the heap");
    }
}

#[cfg(feature = "rocksdb")]
#[test]
fn golden_checkpoints_restore_to_their_dumps_on_rocksdb() {
    use keyed_state::backend::rocksdb::{RocksDbEngine, RocksDbOptions};
    let scratch = tempfile::tempdir().unwrap();
    for case in CASES {
        let clock = ManualClock::new(NOW);
        let engine = RocksDbEngine::restore(
            scratch.path().join(format!("db-{case}")),
            config(&clock),
            RocksDbOptions::default(),
            &[source(case, scratch.path())],
        )
        .unwrap();
        let b = KeyedStateBackend::<u64, _>::new(engine);
        let want = expected(case);
        let with_timers = want.iter().any(|l| l.starts_with("timer "));
        assert_eq!(dump_all(&b, with_timers), want, "{case} on RocksDB");
    }
}

#[test]
fn golden_manifests_have_the_versions_they_pin() {
    let version = |case: &str| {
        let bytes = std::fs::read(fixture_dir(case).join("chk-1/_manifest")).unwrap();
        assert_eq!(&bytes[..4], b"KSCP", "{case}");
        u16::from_be_bytes([bytes[4], bytes[5]])
    };
    assert_eq!(version("heap-checkpoint"), 2);
    assert_eq!(version("heap-checkpoint-v1"), 1);
    assert_eq!(version("rocksdb-savepoint"), 2);
}

/// Writes the fixtures (see the module documentation). Ignored: run it only after a
/// deliberate format change, and say so in DESIGN.md.
#[cfg(feature = "rocksdb")]
#[test]
#[ignore = "rewrites tests/fixtures"]
fn write_golden_fixtures() {
    use keyed_state::SnapshotMode;
    use keyed_state::backend::rocksdb::{RocksDbEngine, RocksDbOptions};
    use keyed_state::checkpoint::MANIFEST_FILE;
    use keyed_state::codec::ByteReader;
    use keyed_state::timer::TimeDomain;
    use states::populate;

    let keys: Vec<u64> = (0..40).collect();
    let write = |case: &str, b: &dyn Fn(&Arc<CheckpointStore>) -> Vec<String>| {
        let dir = fixture_dir(case);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).unwrap();
        }
        let storage = Arc::new(LocalStorage::new(&dir).unwrap());
        let store = Arc::new(CheckpointStore::open(storage, 1).unwrap().0);
        let lines = b(&store);
        drop(store);
        std::fs::remove_file(dir.join(keyed_state::checkpoint::LOCK_FILE)).unwrap();
        std::fs::write(dir.join("dump.txt"), lines.join("\n") + "\n").unwrap();
    };
    let timers = |b: &dyn Fn(u64) -> Option<keyed_state::Key<u64>>,
                  t: &keyed_state::timer::TimerService<u64, u32>| {
        for k in 0..40u64 {
            if let Some(key) = b(k) {
                let ns = u32::try_from(k % 3).unwrap();
                t.register(TimeDomain::EventTime, &key, &ns, 1000 + k)
                    .unwrap();
                t.register(TimeDomain::ProcessingTime, &key, &ns, NOW + 5000 + k)
                    .unwrap();
            }
        }
    };
    write("heap-checkpoint", &|store| {
        let clock = ManualClock::new(NOW);
        let b = KeyedStateBackend::<u64>::new(HeapEngine::new(config(&clock)));
        let s = register(&b);
        populate(&b, &s, &keys, 1);
        populate(&b, &s, &keys, 2);
        timers(&|k| b.key(k).ok(), &b.timer_service::<u32>("t").unwrap());
        b.checkpoint(store, 1, &[("input", 40)])
            .unwrap()
            .wait()
            .unwrap();
        dump_all(&b, true)
    });
    write("heap-checkpoint-v1", &|store| {
        let clock = ManualClock::new(NOW);
        let b = KeyedStateBackend::<u64>::new(HeapEngine::new(config(&clock)));
        let s = register(&b);
        populate(&b, &s, &keys, 3);
        let m = b
            .checkpoint(store, 1, &[("input", 40)])
            .unwrap()
            .wait()
            .unwrap();
        // Version 1 is version 2 without the timer-service count (one byte, 0, after the
        // offsets): rewrite what today's code wrote as the first format had it.
        let v2 = m.encode().unwrap();
        let mut r = ByteReader::new(&v2[4 + 2 + 8 + 1..]); // past magic, version, id, kind
        r.string("engine").unwrap();
        r.u32_be("max parallelism").unwrap();
        r.u16_be("range start").unwrap();
        r.u16_be("range end").unwrap();
        r.u64_be("creation time").unwrap();
        for _ in 0..r.count("states", 1).unwrap() {
            r.len_prefixed("state metadata").unwrap();
        }
        for _ in 0..r.count("offsets", 1).unwrap() {
            r.string("offset name").unwrap();
            r.u64_be("offset").unwrap();
        }
        let at = v2.len() - r.remaining();
        assert_eq!(v2[at], 0, "the timer-service count");
        let mut v1 = v2[..v2.len() - 4].to_vec();
        v1.remove(at);
        v1[4..6].copy_from_slice(&1u16.to_be_bytes());
        let crc = crc32fast::hash(&v1);
        v1.extend_from_slice(&crc.to_be_bytes());
        let storage = store.storage();
        storage.delete(&format!("chk-1/{MANIFEST_FILE}")).unwrap();
        storage.put(&format!("chk-1/{MANIFEST_FILE}"), &v1).unwrap();
        dump_all(&b, false)
    });
    write("rocksdb-savepoint", &|store| {
        let clock = ManualClock::new(NOW);
        let db = tempfile::tempdir().unwrap();
        let engine = RocksDbEngine::open(
            db.path().join("db"),
            config(&clock),
            RocksDbOptions::default(),
        )
        .unwrap();
        let b = KeyedStateBackend::<u64, _>::new(engine);
        let s = register(&b);
        populate(&b, &s, &keys, 4);
        populate(&b, &s, &keys, 5);
        timers(&|k| b.key(k).ok(), &b.timer_service::<u32>("t").unwrap());
        b.snapshot_into(store, 1, &[("input", 40)], SnapshotMode::Savepoint)
            .unwrap()
            .wait()
            .unwrap();
        dump_all(&b, true)
    });
}
