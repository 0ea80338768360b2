//! A key group larger than one block (1 GiB raw) can be checkpointed and restored (issue 14,
//! item 11): its data continues in further blocks of the same group, split at section and
//! record boundaries. The split size is lowered for this test binary (a process-wide knob),
//! so one group of a few hundred KB spreads over many blocks, on both engines and for timers.

use std::sync::Arc;

use keyed_state::checkpoint::{
    CheckpointStore, FileRole, MemoryStorage, RestoreSource, set_block_split_bytes,
};
use keyed_state::clock::ManualClock;
use keyed_state::timer::TimeDomain;
use keyed_state::{Engine, EngineConfig, HeapEngine, KeyedStateBackend, SnapshotMode};

#[path = "support/states.rs"]
mod states;
use states::{dump, populate, register};

/// One key group, so every key shares it.
const M: u32 = 1;

fn fill<E: Engine>(b: &KeyedStateBackend<u64, E>) {
    let s = register(b);
    let keys: Vec<u64> = (0..3000).collect();
    populate(b, &s, &keys, 1);
    populate(b, &s, &keys, 2);
    let t = b.timer_service::<u32>("t").unwrap();
    for k in 0..3000u64 {
        let key = b.key(k).unwrap();
        t.register(TimeDomain::EventTime, &key, &0, 10 + k).unwrap();
    }
}

fn check<E: Engine>(b: &KeyedStateBackend<u64, E>, mode: SnapshotMode) {
    let store = Arc::new(
        CheckpointStore::open(Arc::new(MemoryStorage::new()), 1)
            .unwrap()
            .0,
    );
    let m = b
        .snapshot_into(&store, 1, &[], mode)
        .unwrap()
        .wait()
        .unwrap();
    for role in [FileRole::KeyGroupData, FileRole::Timers] {
        let file = m.files.iter().find(|f| f.role == role).unwrap();
        assert!(
            file.blocks.len() > 5,
            "{role:?}: {} blocks",
            file.blocks.len()
        );
        assert!(file.blocks.iter().all(|b| b.group == 0));
    }
    let expected = dump(b, &register(b));
    let clock = ManualClock::new(0);
    let config = EngineConfig::new(M).unwrap().with_clock(clock.shared());
    let r = KeyedStateBackend::<u64>::new(
        HeapEngine::restore(config, &[RestoreSource::latest(&store).unwrap()]).unwrap(),
    );
    assert_eq!(dump(&r, &register(&r)), expected);
    let t = r.timer_service::<u32>("t").unwrap();
    assert_eq!(t.pending(TimeDomain::EventTime), 3000);
}

#[test]
fn a_key_group_larger_than_a_block_spreads_over_several() {
    set_block_split_bytes(8 << 10);
    let clock = ManualClock::new(0);
    let config = EngineConfig::new(M).unwrap().with_clock(clock.shared());
    let b = KeyedStateBackend::<u64>::new(HeapEngine::new(config));
    fill(&b);
    check(&b, SnapshotMode::Checkpoint);
    #[cfg(feature = "rocksdb")]
    {
        use keyed_state::backend::rocksdb::{RocksDbEngine, RocksDbOptions};
        let config = EngineConfig::new(M).unwrap().with_clock(clock.shared());
        let r = KeyedStateBackend::<u64, _>::new(
            RocksDbEngine::open_temporary(config, RocksDbOptions::default()).unwrap(),
        );
        fill(&r);
        check(&r, SnapshotMode::Savepoint);
    }
}
