//! Format stability, pinned: small checkpoints written by the code of their day are committed
//! under `tests/fixtures/`, and each must still restore, on every engine this build has, to
//! the dump committed beside it. A change to the manifest, the canonical key-group format or
//! the timers file then fails here instead of silently breaking the restore of checkpoints
//! users already hold.
//!
//! Written by today's code (data version 3: records in key order, stamps in a column):
//! - `heap-checkpoint-data-v3`: a heap checkpoint (manifest version 2, the key-group data file
//!   and the timers file);
//! - `rocksdb-savepoint-data-v3`: a savepoint written by the RocksDB engine (canonical format),
//!   with timers.
//!
//! Frozen, written by earlier code, which today's code no longer writes but must still read:
//! - data version 2 (delta stamps in the records): `heap-checkpoint-data-v2` and
//!   `rocksdb-savepoint-data-v2`, as the version-3 cases;
//! - data version 1 (8-byte stamps): `heap-checkpoint`, as `heap-checkpoint-data-v3`;
//!   `heap-checkpoint-v1`, the same state without timers, its manifest rewritten as version 1
//!   (no timer-service list), as the first format wrote it; `rocksdb-savepoint`, as
//!   `rocksdb-savepoint-data-v3`.
//!
//! `write_golden_fixtures` (ignored; it needs the `rocksdb` feature) writes the current cases:
//! `cargo test --release --features rocksdb --test golden -- --ignored` rewrites them, which
//! is only right after a deliberate, documented format change (and then the cases of the
//! format before are kept, frozen, as these were).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use keyed_state::checkpoint::{CheckpointStore, LocalStorage, RestoreSource};
use keyed_state::clock::ManualClock;
use keyed_state::{Engine, EngineConfig, HeapEngine, KeyedStateBackend};

#[path = "support/states.rs"]
mod states;
use states::{dump, register};

#[path = "support/package.rs"]
mod package;

const M: u32 = 16;
/// The engine clock when the fixtures were written and when they are restored: TTL entries
/// (10 s) written at this time are live.
const NOW: u64 = 1_700_000_000_000;
const CASES: [&str; 7] = [
    "heap-checkpoint",
    "heap-checkpoint-v1",
    "rocksdb-savepoint",
    "heap-checkpoint-data-v2",
    "rocksdb-savepoint-data-v2",
    "heap-checkpoint-data-v3",
    "rocksdb-savepoint-data-v3",
];

fn fixture_dir(case: &str) -> PathBuf {
    package::manifest_dir().join("tests/fixtures").join(case)
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
fn golden_fixtures_have_the_versions_they_pin() {
    let version = |case: &str, file: &str, magic: &[u8; 4]| {
        let bytes = std::fs::read(fixture_dir(case).join("chk-1").join(file)).unwrap();
        assert_eq!(&bytes[..4], magic, "{case} {file}");
        u16::from_be_bytes([bytes[4], bytes[5]])
    };
    let manifest = |case| version(case, "_manifest", b"KSCP");
    let data = |case| version(case, "state-data", b"KSKG");
    let timers = |case| version(case, "timers", b"KSKG");
    assert_eq!(manifest("heap-checkpoint"), 2);
    assert_eq!(manifest("heap-checkpoint-v1"), 1);
    assert_eq!(manifest("rocksdb-savepoint"), 2);
    assert_eq!(manifest("heap-checkpoint-data-v2"), 2);
    assert_eq!(manifest("rocksdb-savepoint-data-v2"), 2);
    assert_eq!(manifest("heap-checkpoint-data-v3"), 2);
    assert_eq!(manifest("rocksdb-savepoint-data-v3"), 2);
    for case in ["heap-checkpoint", "heap-checkpoint-v1", "rocksdb-savepoint"] {
        assert_eq!(data(case), 1, "{case}");
    }
    for case in ["heap-checkpoint", "rocksdb-savepoint"] {
        assert_eq!(timers(case), 1, "{case}");
    }
    for case in ["heap-checkpoint-data-v2", "rocksdb-savepoint-data-v2"] {
        assert_eq!(data(case), 2, "{case}");
        assert_eq!(timers(case), 2, "{case}");
    }
    for case in ["heap-checkpoint-data-v3", "rocksdb-savepoint-data-v3"] {
        assert_eq!(data(case), 3, "{case}");
        assert_eq!(timers(case), 3, "{case}");
    }
}

/// Version 2 stores the same state in fewer bytes: most of the fixtures' stamps are equal to
/// the one before them in their section (0 without TTL, or the same write time).
#[test]
fn data_version_2_is_smaller_than_version_1() {
    let raw = |case: &str| {
        let bytes = std::fs::read(fixture_dir(case).join("chk-1/_manifest")).unwrap();
        let m = keyed_state::checkpoint::Manifest::decode(case, &bytes).unwrap();
        m.files
            .iter()
            .flat_map(|f| f.blocks.iter())
            .map(|b| u64::from(b.raw_len))
            .sum::<u64>()
    };
    for (v1, v2) in [
        ("heap-checkpoint", "heap-checkpoint-data-v2"),
        ("rocksdb-savepoint", "rocksdb-savepoint-data-v2"),
    ] {
        assert_eq!(expected(v1), expected(v2), "the same state");
        assert!(
            raw(v2) * 10 < raw(v1) * 8,
            "{v2}: {} raw bytes, {v1}: {}",
            raw(v2),
            raw(v1)
        );
    }
}

/// Writes the fixtures (see the module documentation). Ignored: run it only after a
/// deliberate format change, and say so in DESIGN.md.
#[cfg(feature = "rocksdb")]
#[test]
#[ignore = "rewrites tests/fixtures"]
fn write_golden_fixtures() {
    use keyed_state::SnapshotMode;
    use keyed_state::backend::rocksdb::{RocksDbEngine, RocksDbOptions};
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
    write("heap-checkpoint-data-v3", &|store| {
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
    write("rocksdb-savepoint-data-v3", &|store| {
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
