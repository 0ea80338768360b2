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

/// A temporary engine with `options` and a value state holding `k * factor` for every key `k`
/// in `0..keys`.
fn with_values(
    options: RocksDbOptions,
    keys: u64,
    factor: u64,
) -> (
    KeyedStateBackend<u64, RocksDbEngine>,
    crate::state::ValueState<u64, u64>,
) {
    let config = EngineConfig::new(128).unwrap();
    let b =
        KeyedStateBackend::<u64, _>::new(RocksDbEngine::open_temporary(config, options).unwrap());
    let value = b
        .value_state(&ValueStateDescriptor::<u64>::new("value"))
        .unwrap();
    for k in 0..keys {
        value.update(&b.key(k).unwrap(), &(), k * factor).unwrap();
    }
    (b, value)
}

/// Checks what [`with_values`] wrote: every 7th of the `keys` present keys, and the next 1,000
/// keys absent.
fn assert_values(
    b: &KeyedStateBackend<u64, RocksDbEngine>,
    value: &crate::state::ValueState<u64, u64>,
    keys: u64,
    factor: u64,
) {
    for k in (0..keys).step_by(7) {
        assert_eq!(
            value.get(&b.key(k).unwrap(), &()).unwrap(),
            Some(k * factor)
        );
    }
    for k in keys..keys + 1_000 {
        assert_eq!(value.get(&b.key(k).unwrap(), &()).unwrap(), None);
    }
}

/// Keys of the tests that measure bloom filters, and what 10 bits per key of filter alone take.
const FILTER_TEST_KEYS: u64 = 50_000;
const FILTER_BYTES: u64 = FILTER_TEST_KEYS * 10 / 8;

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

/// Either kind of block cache, with the memtables' budget charged to it, serves reads of flushed
/// values and holds their blocks afterwards (compared with its usage before the reads, which
/// already holds the file's index and filter blocks).
#[test]
fn both_block_cache_kinds_serve_reads_and_hold_blocks() {
    use super::BlockCache;
    use crate::Engine;
    for kind in [BlockCache::HyperClock, BlockCache::Lru] {
        let opts = options()
            .with_block_cache(kind)
            .with_block_cache_bytes(8 << 20)
            .with_memory_budget_bytes(Some(4 << 20));
        let (b, value) = with_values(opts, 20_000, 3);
        b.engine().flush().unwrap();
        // The flushed memtable, and its charge to the cache, go only when its last reader lets
        // go (this thread's cached view of the database goes with its next read): read once,
        // then wait for the cache's usage to stop moving before taking the baseline.
        assert_eq!(value.get(&b.key(0).unwrap(), &()).unwrap(), Some(0));
        let mut before = b.engine().metrics().unwrap().cache_bytes;
        for _ in 0..100 {
            std::thread::sleep(std::time::Duration::from_millis(10));
            let now = b.engine().metrics().unwrap().cache_bytes;
            if now == before {
                break;
            }
            before = now;
        }
        for k in 1..20_000 {
            assert_eq!(
                value.get(&b.key(k).unwrap(), &()).unwrap(),
                Some(k * 3),
                "{kind:?}"
            );
        }
        let after = b.engine().metrics().unwrap().cache_bytes;
        assert!(
            after > before,
            "{kind:?}: no block cached after reading flushed values ({before} -> {after} bytes)"
        );
    }
}

/// With `index_and_filters_in_cache` (the default) a flushed file's index and filter blocks are
/// in the block cache, counted by its usage, before anything is read; without it they are in
/// the file's reader, outside the cache, where `table_reader_bytes` counts them. Reads are the
/// same either way.
#[test]
fn index_and_filter_blocks_are_charged_to_the_cache_or_counted_beside_it() {
    use crate::Engine;
    for in_cache in [true, false] {
        let opts = options()
            .with_block_cache_bytes(32 << 20)
            .with_index_and_filters_in_cache(in_cache);
        let (b, value) = with_values(opts, FILTER_TEST_KEYS, 3);
        b.engine().flush().unwrap();
        let m = b.engine().metrics().unwrap();
        if in_cache {
            assert!(m.cache_bytes >= FILTER_BYTES, "{m:?}");
            assert!(m.table_reader_bytes < FILTER_BYTES / 2, "{m:?}");
        } else {
            assert!(m.table_reader_bytes >= FILTER_BYTES, "{m:?}");
            assert!(m.cache_bytes < FILTER_BYTES / 2, "{m:?}");
        }
        assert_values(&b, &value, FILTER_TEST_KEYS, 3);
    }
}

/// With `optimize_filters_for_hits` a compaction into the last level builds no bloom filter, so
/// the compacted file's reader holds an index alone; without it (the default) the filter is
/// there. Present and absent keys read the same either way.
#[test]
fn the_last_level_goes_without_filters_when_asked() {
    use crate::Engine;
    for for_hits in [true, false] {
        // Outside the cache, so `table_reader_bytes` counts the filters.
        let opts = options()
            .with_index_and_filters_in_cache(false)
            .with_optimize_filters_for_hits(for_hits);
        let (b, value) = with_values(opts, FILTER_TEST_KEYS, 3);
        b.engine().compact_state("value").unwrap();
        let m = b.engine().metrics().unwrap();
        if for_hits {
            assert!(m.table_reader_bytes < FILTER_BYTES / 2, "{m:?}");
        } else {
            assert!(m.table_reader_bytes >= FILTER_BYTES, "{m:?}");
        }
        assert_values(&b, &value, FILTER_TEST_KEYS, 3);
    }
}

/// With mapped reads the engine's SST files are mapped into the process (and read back right,
/// compressed or not); without, none is.
#[cfg(target_os = "linux")]
#[test]
fn reads_map_the_files_when_asked() {
    use super::Compression;
    for (mmap, compression) in [
        (true, Compression::Lz4),
        (true, Compression::None),
        (false, Compression::Lz4),
    ] {
        let opts = options()
            .with_mmap_reads(mmap)
            .with_compression(compression);
        let (b, value) = with_values(opts, FILTER_TEST_KEYS, 3);
        b.engine().compact_state("value").unwrap();
        assert_values(&b, &value, FILTER_TEST_KEYS, 3);
        let dir = b.engine().path().canonicalize().unwrap();
        let dir = dir.to_str().unwrap();
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let mapped: Vec<&str> = maps
            .lines()
            .filter_map(|l| l.split_whitespace().nth(5))
            .filter(|p| p.starts_with(dir) && p.ends_with(".sst"))
            .collect();
        assert_eq!(!mapped.is_empty(), mmap, "{compression:?}: {mapped:?}");
    }
}

/// A state given its own compression keeps it in its files, beside states compressed as the
/// engine is: the same compressible values take several times the bytes uncompressed, and read
/// back the same. A state not named takes the engine's compression.
#[test]
fn a_state_keeps_its_own_compression() {
    use super::Compression;
    use crate::Engine;
    const KEYS: u64 = 20_000;
    let opts = options()
        .with_compression(Compression::Lz4)
        .with_state_compression("plain", Compression::None)
        .with_state_compression("squeezed", Compression::Zstd);
    let config = EngineConfig::new(128).unwrap();
    let b = KeyedStateBackend::<u64, _>::new(RocksDbEngine::open_temporary(config, opts).unwrap());
    let names = ["plain", "lz4", "squeezed"];
    let states: Vec<_> = names
        .into_iter()
        .map(|n| {
            b.value_state(&ValueStateDescriptor::<Vec<u8>>::new(n))
                .unwrap()
        })
        .collect();
    // 200 bytes that compress: the key's low byte, repeated.
    let value = |k: u64| vec![k.to_le_bytes()[0]; 200];
    for k in 0..KEYS {
        let key = b.key(k).unwrap();
        for s in &states {
            s.update(&key, &(), value(k)).unwrap();
        }
    }
    for n in names {
        b.engine().compact_state(n).unwrap();
    }
    let m = b.engine().metrics().unwrap();
    let bytes = |n: &str| {
        m.states
            .iter()
            .find(|s| s.name == n)
            .map(|s| s.approximate_bytes)
            .unwrap()
    };
    assert!(bytes("plain") >= KEYS * 200, "{m:?}");
    assert!(bytes("plain") > 3 * bytes("lz4"), "{m:?}");
    assert!(bytes("plain") > 3 * bytes("squeezed"), "{m:?}");
    for k in (0..KEYS).step_by(13) {
        let key = b.key(k).unwrap();
        for s in &states {
            assert_eq!(s.get(&key, &()).unwrap(), Some(value(k)));
        }
    }
}

/// The block size reaches the files: the same entries, written into a state of 1 KiB blocks
/// and into states of the engine's 16 KiB (named or not), make about 16 times as many data
/// blocks in the first, and read back the same.
#[test]
fn a_state_keeps_its_own_block_size() {
    const KEYS: u64 = 20_000;
    let opts = options()
        .with_block_size_bytes(16 << 10)
        .with_state_block_size("small", 1 << 10)
        .with_state_block_size("large", 16 << 10);
    let config = EngineConfig::new(128).unwrap();
    let b = KeyedStateBackend::<u64, _>::new(RocksDbEngine::open_temporary(config, opts).unwrap());
    let names = ["small", "large", "default"];
    let states: Vec<_> = names
        .into_iter()
        .map(|n| b.value_state(&ValueStateDescriptor::<u64>::new(n)).unwrap())
        .collect();
    for k in 0..KEYS {
        let key = b.key(k).unwrap();
        for s in &states {
            s.update(&key, &(), k.wrapping_mul(0x9e37_79b9_7f4a_7c15))
                .unwrap();
        }
    }
    for n in names {
        b.engine().compact_state(n).unwrap();
    }
    let db = b.engine().db();
    let blocks = |n: &str| {
        let cf = db.cf_handle(&format!("state:{n}")).unwrap();
        super::table_property(db, &cf, "# data blocks")
            .unwrap()
            .unwrap()
    };
    let (small, large, default) = (blocks("small"), blocks("large"), blocks("default"));
    // 20,000 entries of about 17 bytes: some 330 KiB, so ~330 blocks of 1 KiB, ~21 of 16.
    assert!(large > 0 && large == default, "{small} {large} {default}");
    assert!(small >= 10 * large, "{small} {large} {default}");
    for k in (0..KEYS).step_by(11) {
        let key = b.key(k).unwrap();
        for s in &states {
            assert_eq!(
                s.get(&key, &()).unwrap(),
                Some(k.wrapping_mul(0x9e37_79b9_7f4a_7c15))
            );
        }
    }
}

/// A block size out of bounds, engine-wide or for one state, is refused before anything is
/// opened, with the setting named.
#[test]
fn a_block_size_out_of_bounds_is_refused() {
    use super::{MAX_BLOCK_SIZE, MIN_BLOCK_SIZE};
    let dir = tempfile::tempdir().unwrap();
    let open = |opts: RocksDbOptions| {
        RocksDbEngine::open(dir.path().join("db"), EngineConfig::new(128).unwrap(), opts)
    };
    for (opts, needle) in [
        (options().with_block_size_bytes(0), "block size of 0 bytes"),
        (
            options().with_block_size_bytes(MAX_BLOCK_SIZE + 1),
            "block size of",
        ),
        (
            options().with_state_block_size("events", MIN_BLOCK_SIZE - 1),
            "of state \"events\"",
        ),
    ] {
        match open(opts) {
            Err(Error::Config(crate::ConfigError::Invalid(why))) => {
                assert!(why.contains(needle), "{why}");
            }
            other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
        }
        assert!(!dir.path().join("db").exists(), "nothing opened");
    }
    for opts in [
        options().with_block_size_bytes(MIN_BLOCK_SIZE),
        options().with_block_size_bytes(MAX_BLOCK_SIZE),
    ] {
        drop(open(opts).unwrap());
    }
    assert!(matches!(
        RocksDbEngine::open_temporary(
            EngineConfig::new(128).unwrap(),
            options().with_block_size_bytes(1)
        ),
        Err(Error::Config(crate::ConfigError::Invalid(_)))
    ));
}

/// A temporary engine on a manual clock at `now`, with a list state `"list"` of TTL `ttl_ms`.
fn with_ttl_list(
    now: u64,
    ttl_ms: u64,
) -> (
    ManualClock,
    KeyedStateBackend<u64, RocksDbEngine>,
    crate::state::ListState<u64, u64>,
) {
    let clock = ManualClock::new(now);
    let config = EngineConfig::new(128).unwrap().with_clock(clock.shared());
    let b =
        KeyedStateBackend::<u64, _>::new(RocksDbEngine::open_temporary(config, options()).unwrap());
    let ttl = TtlConfig::new(Duration::from_millis(ttl_ms));
    let list = b
        .list_state(&ListStateDescriptor::<u64>::new("list").with_ttl(ttl))
        .unwrap();
    (clock, b, list)
}

#[test]
fn the_ttl_filter_keeps_and_counts_what_it_cannot_parse() {
    let (clock, b, _list) = with_ttl_list(0, 10);
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

mod row_cache {
    //! The row cache: reads through it match an oracle across flushes and compactions, and no
    //! range deletion is ever left in a database opened with one (RocksDB ignores them there).

    use std::collections::BTreeMap;
    use std::sync::Arc;

    use proptest::prelude::*;

    use super::super::range_deletions;
    use super::*;
    use crate::Engine;
    use crate::checkpoint::{CheckpointStore, MemoryStorage, RestoreSource};
    use crate::clock::Clock;
    use crate::key_group::KeyGroupRange;
    use crate::state::MapStateDescriptor;

    fn with_rows() -> RocksDbOptions {
        options().with_row_cache_bytes(4 << 20)
    }

    /// Range deletions in the SST files of every column family of `engine`.
    fn range_deletions_in(engine: &RocksDbEngine) -> u64 {
        let db = &engine.handle.db;
        let mut names = engine.state_cfs();
        names.push("default".to_owned());
        names
            .iter()
            .map(|name| range_deletions(db, &db.cf_handle(name).unwrap()).unwrap())
            .sum()
    }

    #[derive(Debug, Clone)]
    enum Op {
        Put(u64, u64),
        Clear(u64),
        Add(u64, u64),
        MapPut(u64, u8, u64),
        MapRemove(u64, u8),
        Advance(u64),
        Flush,
        Compact,
    }

    fn op() -> impl Strategy<Value = Op> {
        let k = 0u64..12;
        prop_oneof![
            3 => (k.clone(), any::<u64>()).prop_map(|(k, v)| Op::Put(k, v)),
            1 => k.clone().prop_map(Op::Clear),
            2 => (k.clone(), any::<u64>()).prop_map(|(k, v)| Op::Add(k, v)),
            2 => (k.clone(), 0u8..4, any::<u64>()).prop_map(|(k, u, v)| Op::MapPut(k, u, v)),
            1 => (k, 0u8..4).prop_map(|(k, u)| Op::MapRemove(k, u)),
            1 => (0u64..8).prop_map(Op::Advance),
            2 => Just(Op::Flush),
            1 => Just(Op::Compact),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Every key is read (point lookups, through the row cache once its entry is in an
        /// SST file) after every op, against a `BTreeMap` oracle: overwrites, clears, list
        /// appends (merge operands on top of a cached entry), map entries, TTL expiry of a
        /// cached value, across flushes and full compactions.
        #[test]
        fn reads_through_the_row_cache_match_the_oracle(
            ops in proptest::collection::vec(op(), 1..60)
        ) {
            let clock = ManualClock::new(0);
            let config = EngineConfig::new(128).unwrap().with_clock(clock.shared());
            let b = KeyedStateBackend::<u64, _>::new(
                RocksDbEngine::open_temporary(config, with_rows()).unwrap(),
            );
            let ttl = TtlConfig::new(Duration::from_millis(10));
            let value = b
                .value_state(&ValueStateDescriptor::<u64>::new("value").with_ttl(ttl))
                .unwrap();
            let list = b.list_state(&ListStateDescriptor::<u64>::new("list")).unwrap();
            let map = b.map_state(&MapStateDescriptor::<u8, u64>::new("map")).unwrap();
            // The oracle: values with their write time, lists, maps.
            let mut values: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
            let mut lists: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
            let mut maps: BTreeMap<(u64, u8), u64> = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Put(k, v) => {
                        value.update(&b.key(k).unwrap(), &(), v).unwrap();
                        values.insert(k, (v, clock.now_millis()));
                    }
                    Op::Clear(k) => {
                        value.clear(&b.key(k).unwrap(), &()).unwrap();
                        values.remove(&k);
                    }
                    Op::Add(k, v) => {
                        list.add(&b.key(k).unwrap(), &(), v).unwrap();
                        lists.entry(k).or_default().push(v);
                    }
                    Op::MapPut(k, u, v) => {
                        map.put(&b.key(k).unwrap(), &(), u, v).unwrap();
                        maps.insert((k, u), v);
                    }
                    Op::MapRemove(k, u) => {
                        map.remove(&b.key(k).unwrap(), &(), &u).unwrap();
                        maps.remove(&(k, u));
                    }
                    Op::Advance(ms) => clock.advance_millis(ms),
                    Op::Flush => b.engine().flush().unwrap(),
                    Op::Compact => {
                        for state in ["value", "list", "map"] {
                            b.engine().compact_state(state).unwrap();
                        }
                    }
                }
                let now = clock.now_millis();
                for k in 0..12 {
                    let key = b.key(k).unwrap();
                    let live = values.get(&k).filter(|(_, at)| now < at + 10).map(|(v, _)| *v);
                    prop_assert_eq!(value.get(&key, &()).unwrap(), live, "value {}", k);
                    let got: Vec<u64> = list.get(&key, &()).unwrap().collect();
                    let expected = lists.get(&k).cloned().unwrap_or_default();
                    prop_assert_eq!(got, expected, "list {}", k);
                    for u in 0..4 {
                        prop_assert_eq!(
                            map.get(&key, &(), &u).unwrap(),
                            maps.get(&(k, u)).copied(),
                            "map {} {}", k, u
                        );
                    }
                }
            }
        }
    }

    /// After a flush, reads fill the row cache: the test above does go through it.
    #[test]
    fn point_reads_of_flushed_entries_fill_the_row_cache() {
        let (b, value) = with_values(with_rows(), 100, 1);
        b.engine().flush().unwrap();
        assert_eq!(b.engine().metrics().unwrap().row_cache_bytes, 0);
        for k in 0..100 {
            assert_eq!(value.get(&b.key(k).unwrap(), &()).unwrap(), Some(k));
        }
        assert!(b.engine().metrics().unwrap().row_cache_bytes > 0);
    }

    /// A checkpoint of the whole key-group range, of 300 keys in a value state.
    fn source() -> RestoreSource {
        let (b, _value) = with_values(options(), 300, 3);
        let store = Arc::new(
            CheckpointStore::open(Arc::new(MemoryStorage::new()), 1)
                .unwrap()
                .0,
        );
        b.checkpoint(&store, 1, &[]).unwrap().wait().unwrap();
        RestoreSource::latest(&store).unwrap()
    }

    fn half() -> EngineConfig {
        EngineConfig::new(128)
            .unwrap()
            .with_key_group_range(KeyGroupRange::new(0, 63))
            .unwrap()
    }

    /// Checks the restored half: exactly its keys, with their values.
    fn check_half(engine: RocksDbEngine) {
        let b = KeyedStateBackend::<u64, _>::new(engine);
        let value = b
            .value_state(&ValueStateDescriptor::<u64>::new("value"))
            .unwrap();
        let mut owned = 0;
        for k in 0..300 {
            match b.key(k) {
                Ok(key) => {
                    owned += 1;
                    assert_eq!(value.get(&key, &()).unwrap(), Some(k * 3));
                }
                Err(Error::KeyGroupOutOfRange { .. }) => {}
                Err(e) => panic!("{e}"),
            }
        }
        assert!(
            owned > 100 && owned < 200,
            "{owned} keys in half the key groups"
        );
    }

    /// A rescaling restore cuts with range deletions; with a row cache it compacts them away
    /// before it opens with the cache. Without one (and no background compaction) they are
    /// there to see, so the probe is not blind.
    #[test]
    fn a_cutting_restore_with_a_row_cache_leaves_no_range_deletion() {
        let source = source();
        let dir = tempfile::tempdir().unwrap();
        let plain = RocksDbEngine::restore(
            dir.path().join("plain"),
            half(),
            options().with_compact_after_rescale(false),
            std::slice::from_ref(&source),
        )
        .unwrap();
        assert!(plain.row_cache.is_none());
        plain.flush().unwrap();
        assert!(range_deletions_in(&plain) > 0);
        drop(plain);
        let cached = RocksDbEngine::restore(
            dir.path().join("cached"),
            half(),
            with_rows(),
            std::slice::from_ref(&source),
        )
        .unwrap();
        assert!(cached.row_cache.is_some());
        assert_eq!(range_deletions_in(&cached), 0);
        check_half(cached);
    }

    /// A database left with range deletions (a cutting restore whose background compaction
    /// never ran) and opened again with a row cache is compacted free of them first.
    #[test]
    fn opening_with_a_row_cache_compacts_range_deletions_away() {
        let source = source();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let cut = RocksDbEngine::restore(
            &path,
            half(),
            options().with_compact_after_rescale(false),
            &[source],
        )
        .unwrap();
        cut.flush().unwrap();
        assert!(range_deletions_in(&cut) > 0);
        drop(cut);
        let reopened = RocksDbEngine::open(&path, half(), with_rows()).unwrap();
        assert!(reopened.row_cache.is_some());
        assert_eq!(range_deletions_in(&reopened), 0);
        check_half(reopened);
    }
}

/// A TTL list written before runs (each element `[length][stamp][element]`, DESIGN.md §7b)
/// reads back, alone or with runs merged onto it, and compactions rewrite it in runs: the
/// compactions after an upgrade shrink such lists without any migration step (a merged value
/// at the next compaction, as the filter does not see a merge's output).
#[test]
fn ttl_lists_written_before_runs_read_and_compact_into_runs() {
    use super::layout::write_elements;
    use crate::ttl::Stamped;

    let (clock, b, list) = with_ttl_list(1000, 100);
    let (alone, merged) = (b.key(3).unwrap(), b.key(4).unwrap());
    list.add(&alone, &(), 0).unwrap();
    list.add(&merged, &(), 0).unwrap();
    let mut legacy = Vec::new();
    for (stamp, element) in [(950u64, 5u64), (1000, 6), (1000, 7)] {
        legacy.push(16);
        legacy.extend_from_slice(&stamp.to_be_bytes());
        legacy.extend_from_slice(&element.to_be_bytes());
    }
    for (raw_key, _) in b.engine().raw_entries("list").unwrap() {
        b.engine().put_raw("list", &raw_key, &legacy).unwrap();
    }
    list.add(&merged, &(), 8).unwrap();
    let read = |key| list.get(key, &()).unwrap().collect::<Vec<_>>();
    assert_eq!(read(&alone), [5, 6, 7]);
    assert_eq!(read(&merged), [5, 6, 7, 8]);

    b.engine().compact_state("list").unwrap();
    b.engine().compact_state("list").unwrap();
    let runs = |elements: &[(u64, u64)]| {
        let stamped: Vec<Stamped<u64>> =
            elements.iter().map(|&(t, e)| Stamped::new(t, e)).collect();
        let mut out = Vec::new();
        write_elements(&mut out, true, &stamped);
        out
    };
    let mut values: Vec<Vec<u8>> = b
        .engine()
        .raw_entries("list")
        .unwrap()
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    values.sort_by_key(Vec::len);
    assert_eq!(
        values,
        [
            runs(&[(950, 5), (1000, 6), (1000, 7)]),
            runs(&[(950, 5), (1000, 6), (1000, 7), (1000, 8)]),
        ]
    );
    assert!(values[0].len() < legacy.len(), "two stamps, not three");
    assert_eq!(b.engine().unparsable_values("list"), 0);
    assert_eq!(read(&merged), [5, 6, 7, 8]);
    clock.set(1050);
    assert_eq!(read(&alone), [6, 7], "950 expired at 1050");
}
