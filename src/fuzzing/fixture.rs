//! Small real snapshots the restore targets start from: a fixed set of states and timers,
//! populated deterministically, snapshotted by the real engines into memory.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::HeapEngine;
use crate::backend::rocksdb::{RocksDbEngine, RocksDbOptions};
use crate::checkpoint::{
    CheckpointStorage, CheckpointStore, Manifest, MemoryStorage, RestoreSource,
};
use crate::clock::ManualClock;
use crate::error::Result;
use crate::key_group::KeyGroupRange;
use crate::state::{
    ListState, ListStateDescriptor, MapState, MapStateDescriptor, ReducingState,
    ReducingStateDescriptor, ValueState, ValueStateDescriptor,
};
use crate::timer::{Timer, TimerService};
use crate::ttl::TtlConfig;
use crate::{Engine, EngineConfig, KeyedStateBackend, SnapshotMode};

/// Key groups of the fixtures.
pub(crate) const M: u32 = 16;
/// The clock when the fixtures are taken and restored.
const NOW: u64 = 1_000_000;

/// Which snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A heap checkpoint (canonical key-group data file and timers file).
    Heap,
    /// A RocksDB incremental checkpoint (shared SSTs, private files, timers file).
    RocksDb,
    /// A savepoint written by RocksDB (canonical format), restored by either engine.
    Savepoint,
}

/// A snapshot as files and manifest, plus what restoring it must read back.
#[derive(Debug)]
pub(crate) struct Fixture {
    pub files: BTreeMap<String, Vec<u8>>,
    pub manifest: Manifest,
    pub dump: BTreeSet<String>,
}

struct States {
    value: ValueState<u64, u64, u8>,
    list: ListState<u64, String>,
    map: MapState<u64, u32, Vec<u8>>,
    sum: ReducingState<u64, u64>,
    timers: Arc<TimerService<u64, u8>>,
}

fn add(a: u64, b: u64) -> u64 {
    a.wrapping_add(b)
}

fn register<E: Engine>(b: &KeyedStateBackend<u64, E>) -> Result<States> {
    Ok(States {
        value: b.value_state(
            &ValueStateDescriptor::new("value").with_ttl(TtlConfig::new(Duration::from_secs(3600))),
        )?,
        list: b.list_state(&ListStateDescriptor::new("list"))?,
        map: b.map_state(
            &MapStateDescriptor::new("map").with_ttl(TtlConfig::new(Duration::from_secs(60))),
        )?,
        sum: b.reducing_state(&ReducingStateDescriptor::new("sum", add))?,
        timers: b.timer_service("timers")?,
    })
}

fn populate<E: Engine>(b: &KeyedStateBackend<u64, E>, s: &States) -> Result<()> {
    for k in 0..40u64 {
        let key = b.key(k)?;
        s.value.update(&key, &((k % 3) as u8), k * 7)?;
        if k % 2 == 0 {
            s.list.add(&key, &(), format!("e{k}"))?;
            s.list.add(&key, &(), "x".repeat(k as usize % 5))?;
        }
        if k % 3 == 0 {
            s.map.put(&key, &(), k as u32, vec![k as u8; 3])?;
            s.map.put(&key, &(), 1000, Vec::new())?;
        }
        s.sum.add(&key, &(), k)?;
        s.timers
            .register_event_time_timer(&key, &((k % 4) as u8), 500 + k)?;
        if k % 5 == 0 {
            s.timers.register_processing_time_timer(&key, &0, NOW + k)?;
        }
    }
    Ok(())
}

/// Every entry and timer, read through the views (and by firing the timers).
fn dump<E: Engine>(b: &KeyedStateBackend<u64, E>, s: &States) -> Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    for g in b.key_group_range() {
        for (k, ns) in s.value.keys_in_group(g)? {
            let v = s.value.get(&b.key(k)?, &ns)?;
            out.insert(format!("value {k} {ns} {v:?}"));
        }
        for (k, ()) in s.list.keys_in_group(g)? {
            let v: Vec<String> = s.list.get(&b.key(k)?, &())?.collect();
            out.insert(format!("list {k} {v:?}"));
        }
        for (k, ()) in s.map.keys_in_group(g)? {
            for (uk, v) in s.map.entries(&b.key(k)?, &())? {
                out.insert(format!("map {k} {uk} {v:?}"));
            }
        }
        for (k, ()) in s.sum.keys_in_group(g)? {
            let v = s.sum.get(&b.key(k)?, &())?;
            out.insert(format!("sum {k} {v:?}"));
        }
    }
    s.timers.advance_watermark(u64::MAX, |t: Timer<u64, u8>| {
        out.insert(format!(
            "event timer {} {} {}",
            t.key, t.namespace, t.timestamp
        ));
        Ok(())
    })?;
    s.timers
        .advance_processing_time(u64::MAX, |t: Timer<u64, u8>| {
            out.insert(format!(
                "processing timer {} {} {}",
                t.key, t.namespace, t.timestamp
            ));
            Ok(())
        })?;
    Ok(out)
}

fn config(clock: &ManualClock) -> Result<EngineConfig> {
    Ok(EngineConfig::new(M)?
        .with_key_group_range(KeyGroupRange::all(M)?)?
        .with_clock(clock.shared()))
}

fn take(kind: Kind) -> Result<Fixture> {
    let clock = ManualClock::new(NOW);
    let memory = Arc::new(MemoryStorage::new());
    let (store, _) = CheckpointStore::open(memory.clone(), 1)?;
    let store = Arc::new(store);
    let dir = tempfile::tempdir()?;
    let manifest = match kind {
        Kind::Heap => {
            let b = KeyedStateBackend::new(HeapEngine::new(config(&clock)?));
            let s = register(&b)?;
            populate(&b, &s)?;
            b.checkpoint(&store, 1, &[("input", 9)])?.wait()?
        }
        Kind::RocksDb | Kind::Savepoint => {
            let engine = RocksDbEngine::open(
                dir.path().join("db"),
                config(&clock)?,
                RocksDbOptions::default(),
            )?;
            let b = KeyedStateBackend::new(engine);
            let s = register(&b)?;
            populate(&b, &s)?;
            let mode = if kind == Kind::Savepoint {
                SnapshotMode::Savepoint
            } else {
                SnapshotMode::Checkpoint
            };
            b.snapshot_into(&store, 1, &[("input", 9)], mode)?.wait()?
        }
    };
    let mut files = BTreeMap::new();
    for path in memory.list()? {
        files.insert(path.clone(), memory.get(&path)?.to_vec());
    }
    let mut fixture = Fixture {
        files,
        manifest,
        dump: BTreeSet::new(),
    };
    fixture.dump = restore(&fixture.files, &fixture.manifest, kind != Kind::Heap)?;
    assert!(fixture.dump.len() > 100, "the fixture has state");
    Ok(fixture)
}

/// The fixture of `kind`, taken once per process.
pub(crate) fn fixture(kind: Kind) -> &'static Fixture {
    static HEAP: OnceLock<Fixture> = OnceLock::new();
    static ROCKS: OnceLock<Fixture> = OnceLock::new();
    static SAVEPOINT: OnceLock<Fixture> = OnceLock::new();
    let cell = match kind {
        Kind::Heap => &HEAP,
        Kind::RocksDb => &ROCKS,
        Kind::Savepoint => &SAVEPOINT,
    };
    cell.get_or_init(|| match take(kind) {
        Ok(f) => f,
        // The fixture is built from constants by the real engines: failing here is a bug in
        // them, which is what a fuzz target reports by panicking.
        Err(e) => panic!("building the {kind:?} fixture failed: {e}"),
    })
}

/// Restores `files` (with `manifest`) into a fresh engine (RocksDB when `rocksdb`), registers
/// the fixture's states, and reads everything back.
pub(crate) fn restore(
    files: &BTreeMap<String, Vec<u8>>,
    manifest: &Manifest,
    rocksdb: bool,
) -> Result<BTreeSet<String>> {
    let clock = ManualClock::new(NOW);
    let memory = Arc::new(MemoryStorage::new());
    for (path, bytes) in files {
        memory.put(path, bytes)?;
    }
    let sources = [RestoreSource {
        storage: memory as Arc<dyn CheckpointStorage>,
        manifest: manifest.clone(),
    }];
    if rocksdb {
        let dir = tempfile::tempdir()?;
        let engine = RocksDbEngine::restore(
            dir.path().join("db"),
            config(&clock)?,
            RocksDbOptions::default(),
            &sources,
        )?;
        let b = KeyedStateBackend::new(engine);
        let s = register(&b)?;
        dump(&b, &s)
    } else {
        let b = KeyedStateBackend::new(HeapEngine::restore(config(&clock)?, &sources)?);
        let s = register(&b)?;
        dump(&b, &s)
    }
}
