//! Bad bytes inside a live database, written with the crate-private `put_raw`: typed errors
//! naming the state when views read them, and a TTL compaction filter that keeps and counts
//! what it cannot parse (it runs inside RocksDB's C++, where a panic would abort the process).

use std::time::Duration;

use super::{RocksDbEngine, RocksDbOptions};
use crate::clock::ManualClock;
use crate::state::{ListStateDescriptor, ValueStateDescriptor};
use crate::ttl::TtlConfig;
use crate::{EngineConfig, Error, KeyedStateBackend};

fn options() -> RocksDbOptions {
    RocksDbOptions::default().with_auto_compaction(false)
}

#[test]
fn undecodable_bytes_are_typed_errors_naming_the_state() {
    let clock = ManualClock::new(0);
    let config = EngineConfig::new(128).unwrap().with_clock(clock.shared());
    let b =
        KeyedStateBackend::<u64, _>::new(RocksDbEngine::open_temporary(config, options()).unwrap());
    let count = b
        .value_state(&ValueStateDescriptor::<u64>::new("count"))
        .unwrap();
    let list = b
        .list_state(&ListStateDescriptor::<u64>::new("list"))
        .unwrap();
    let key = b.key(9).unwrap();
    count.update(&key, &(), 1).unwrap();
    list.add(&key, &(), 1).unwrap();
    let raw_key = b.engine().raw_entries("count").unwrap().remove(0).0;
    b.engine().put_raw("count", &raw_key, &[1, 2, 3]).unwrap();
    b.engine().put_raw("list", &raw_key, &[9, 1]).unwrap();
    match count.get(&key, &()) {
        Err(Error::Decode { state, .. }) => assert_eq!(state, "count"),
        other => panic!("expected a decode error, got {other:?}"),
    }
    match list.get(&key, &()) {
        Err(Error::Decode { state, .. }) => assert_eq!(state, "list"),
        other => panic!("expected a decode error, got {other:?}"),
    }
    // Unknown keys in the column family are decode errors too, when listing keys.
    b.engine().put_raw("count", &[5, 0xff], &[0; 8]).unwrap();
    assert!(matches!(count.keys_in_group(5), Err(Error::Decode { .. })));
}

#[test]
fn the_ttl_filter_keeps_and_counts_what_it_cannot_parse() {
    let clock = ManualClock::new(0);
    let config = EngineConfig::new(128).unwrap().with_clock(clock.shared());
    let b =
        KeyedStateBackend::<u64, _>::new(RocksDbEngine::open_temporary(config, options()).unwrap());
    let ttl = TtlConfig::new(Duration::from_millis(10));
    let _list = b
        .list_state(&ListStateDescriptor::<u64>::new("list").with_ttl(ttl))
        .unwrap();
    b.engine()
        .put_raw("list", &[3, 0, 0, 0, 0, 0, 0, 0, 1], &[200, 1, 2])
        .unwrap();
    clock.set(1000);
    b.engine().compact_state("list").unwrap();
    assert_eq!(
        b.engine().raw_entries("list").unwrap().len(),
        1,
        "kept unchanged"
    );
    // Counted on every visit (a forced full compaction passes over the value more than once).
    assert!(b.engine().unparsable_values("list") >= 1);
}
