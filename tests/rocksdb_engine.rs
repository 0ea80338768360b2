//! Behaviour specific to the RocksDB engine: TTL removal by the compaction filter and the merge
//! operator (asserted on the raw column family), persisted metadata across a reopen, typed
//! errors for undecodable bytes, metrics, and the key layout pinned byte by byte.
#![cfg(feature = "rocksdb")]

use std::time::Duration;

use keyed_state::backend::rocksdb::{RocksDbEngine, RocksDbOptions};
use keyed_state::clock::ManualClock;
use keyed_state::state::{ListStateDescriptor, MapStateDescriptor, ValueStateDescriptor};
use keyed_state::ttl::TtlConfig;
use keyed_state::{Engine, EngineConfig, Error, KeyedStateBackend};

fn options() -> RocksDbOptions {
    RocksDbOptions::default().with_auto_compaction(false)
}

fn backend_at(dir: &std::path::Path, clock: &ManualClock) -> KeyedStateBackend<u64, RocksDbEngine> {
    let config = EngineConfig::new(128).unwrap().with_clock(clock.shared());
    KeyedStateBackend::new(RocksDbEngine::open(dir, config, options()).unwrap())
}

/// With automatic compaction off, expired state stays physically present until a compaction;
/// then the filter drops expired values and map entries and rewrites lists, and the merge
/// operator drops expired elements when it folds appends. Live state is untouched.
#[test]
fn compaction_physically_removes_expired_state_and_keeps_live_state() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(0);
    let b = backend_at(dir.path(), &clock);
    let ttl = TtlConfig::new(Duration::from_millis(100));
    let value = b
        .value_state(&ValueStateDescriptor::<u64>::new("value").with_ttl(ttl.clone()))
        .unwrap();
    let map = b
        .map_state(&MapStateDescriptor::<u32, u64>::new("map").with_ttl(ttl.clone()))
        .unwrap();
    let put_list = b
        .list_state(&ListStateDescriptor::<u64>::new("put-list").with_ttl(ttl.clone()))
        .unwrap();
    let merged_list = b
        .list_state(&ListStateDescriptor::<u64>::new("merged-list").with_ttl(ttl))
        .unwrap();
    for k in 0..20u64 {
        let key = b.key(k).unwrap();
        value.update(&key, &(), k).unwrap();
        map.put(&key, &(), 1, k).unwrap();
        put_list.update(&key, &(), [k]).unwrap();
        merged_list.add(&key, &(), k).unwrap();
    }
    b.engine().flush().unwrap();
    clock.set(60);
    for k in 10..20u64 {
        let key = b.key(k).unwrap();
        value.update(&key, &(), k + 100).unwrap();
        map.put(&key, &(), 2, k).unwrap();
        put_list.update(&key, &(), [k, k + 1]).unwrap(); // restamped whole list at 60
        merged_list.add(&key, &(), k + 1).unwrap(); // one element at 0, one at 60
    }
    clock.set(100); // what was written at 0 has expired
    let engine = b.engine();
    for state in ["value", "map", "put-list", "merged-list"] {
        assert!(
            engine.raw_entries(state).unwrap().len() >= 10,
            "{state}: nothing removed yet"
        );
    }
    let live_values_before = engine
        .raw_entries("value")
        .unwrap()
        .into_iter()
        .filter(|(_, v)| v[..8] == 60u64.to_be_bytes())
        .collect::<Vec<_>>();
    for state in ["value", "map", "put-list", "merged-list"] {
        engine.compact_state(state).unwrap();
        engine.compact_state(state).unwrap(); // a second pass filters what the first one merged
    }
    assert_eq!(
        engine.raw_entries("value").unwrap(),
        live_values_before,
        "only the values written at 60 remain, unchanged"
    );
    assert_eq!(
        engine.raw_entries("map").unwrap().len(),
        10,
        "entries written at 0 are gone"
    );
    assert_eq!(engine.raw_entries("put-list").unwrap().len(), 10);
    let merged = engine.raw_entries("merged-list").unwrap();
    assert_eq!(
        merged.len(),
        10,
        "lists with only expired elements are gone"
    );
    for k in 10..20u64 {
        let key = b.key(k).unwrap();
        assert_eq!(
            merged_list.get(&key, &()).unwrap().collect::<Vec<_>>(),
            vec![k + 1]
        );
        assert_eq!(
            put_list.get(&key, &()).unwrap().collect::<Vec<_>>(),
            vec![k, k + 1]
        );
        assert_eq!(
            map.entries(&key, &()).unwrap().collect::<Vec<_>>(),
            vec![(2, k)]
        );
        assert_eq!(value.get(&key, &()).unwrap(), Some(k + 100));
    }
    // Each remaining merged list holds exactly one run of one element:
    // [0][8-byte stamp][count 1][len 8][8-byte value].
    assert!(merged.iter().all(|(_, v)| v.len() == 1 + 8 + 1 + 1 + 8
        && v[0] == 0
        && v[1..9] == 60u64.to_be_bytes()
        && v[9..11] == [1, 8]));
    assert_eq!(engine.unparsable_values("value"), 0);
}

#[test]
fn reopening_finds_states_and_checks_their_registration() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(0);
    {
        let b = backend_at(dir.path(), &clock);
        let count = b
            .value_state(&ValueStateDescriptor::<u64>::new("count"))
            .unwrap();
        let list = b
            .list_state(&ListStateDescriptor::<String, u32>::new("names"))
            .unwrap();
        count.update(&b.key(1).unwrap(), &(), 41).unwrap();
        list.add_all(&b.key(1).unwrap(), &7, ["a".to_string(), "b".to_string()])
            .unwrap();
        b.engine().flush().unwrap(); // no write-ahead log: what is not flushed is not kept
    }
    {
        let b = backend_at(dir.path(), &clock);
        let count = b
            .value_state(&ValueStateDescriptor::<u64>::new("count"))
            .unwrap();
        let list = b
            .list_state(&ListStateDescriptor::<String, u32>::new("names"))
            .unwrap();
        assert_eq!(count.get(&b.key(1).unwrap(), &()).unwrap(), Some(41));
        assert_eq!(
            list.get(&b.key(1).unwrap(), &7)
                .unwrap()
                .collect::<Vec<_>>(),
            vec!["a", "b"]
        );
    }
    let b = backend_at(dir.path(), &clock);
    match b.value_state(&ValueStateDescriptor::<String>::new("count")) {
        Err(Error::IncompatibleRegistration { name, field, .. }) => {
            assert_eq!((name.as_str(), field), ("count", "value codec"))
        }
        other => panic!("expected a persisted-metadata mismatch, got {other:?}"),
    }
    match b.value_state(
        &ValueStateDescriptor::<u64>::new("count").with_ttl(TtlConfig::new(Duration::from_secs(1))),
    ) {
        // Turning TTL on over state stored without it (its settings alone may change).
        Err(Error::IncompatibleRegistration { field, .. })
            if field.starts_with("TTL on or off") => {}
        other => panic!("expected a TTL mismatch, got {other:?}"),
    }
    match b.list_state(&ListStateDescriptor::<String>::new("names")) {
        Err(Error::IncompatibleRegistration {
            field: "namespace codec",
            ..
        }) => {}
        other => panic!("expected a namespace mismatch, got {other:?}"),
    }
}

/// The layout is a format: pin it. M = 128 → a 1-byte group prefix; u64 keys are fixed-width
/// (no length); String parts carry a LEB128 length; `()` namespaces take no byte.
#[test]
fn key_layout_is_pinned() {
    let b = KeyedStateBackend::<String, _>::new(
        RocksDbEngine::open_temporary(EngineConfig::default(), options()).unwrap(),
    );
    let s = b
        .map_state(&MapStateDescriptor::<String, u64, u32>::new("m"))
        .unwrap();
    let key = b.key("alice".to_string()).unwrap();
    s.put(&key, &7, "x".to_string(), 1).unwrap();
    let (k, v) = b.engine().raw_entries("m").unwrap().remove(0);
    let mut expected = vec![u8::try_from(key.group()).unwrap(), 5];
    expected.extend_from_slice(b"alice");
    expected.extend_from_slice(&[0, 0, 0, 7, 1, b'x']);
    assert_eq!(k, expected);
    assert_eq!(v, 1u64.to_be_bytes());
}

#[test]
fn metrics_report_every_state() {
    let b = KeyedStateBackend::<u64, _>::new(
        RocksDbEngine::open_temporary(EngineConfig::default(), options()).unwrap(),
    );
    let v = b
        .value_state(&ValueStateDescriptor::<u64>::new("v"))
        .unwrap();
    let m = b
        .map_state(&MapStateDescriptor::<u64, u64>::new("m"))
        .unwrap();
    for k in 0..1000u64 {
        let key = b.key(k).unwrap();
        v.update(&key, &(), k).unwrap();
        m.put_all(&key, &(), [(1, 1), (2, 2)]).unwrap();
    }
    b.engine().flush().unwrap();
    let metrics = b.engine().metrics().unwrap();
    let names: Vec<&str> = metrics.states.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, vec!["m", "v"]);
    let (ms, vs) = (&metrics.states[0], &metrics.states[1]);
    assert!((1500..=2500).contains(&ms.approximate_entries), "{ms:?}");
    assert!((700..=1300).contains(&vs.approximate_entries), "{vs:?}");
    assert!(ms.approximate_bytes > 0 && vs.approximate_bytes > 0);
}
