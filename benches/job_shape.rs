//! The state work of one keyed operator, in the shape Apache Flink's own backends are measured
//! on by `../shared/peers/flink` (issue 15), so the two can be compared op for op in one window.
//!
//! Setup: `KS_BENCH_KEYS` keys (default 1,000,000; `u64` 0..N-1), 128 key groups, and per key
//! four states: `value8` (a `u64` value), `value100` (a 100-byte value, kept as
//! [`bytes::Bytes`] as Flink keeps a `byte[]`: a read hands back the stored bytes, not a copy),
//! `list` (10 `u64` elements) and `map` (10 entries `u64 → u64`, user keys 0..9), preloaded in
//! key order. Every operation resolves a uniform-random key (a fixed-seed sequence of 4 Mi key
//! indexes, cycled, one position advanced across every function and sample of the run) and
//! makes one state call, as the Flink harness does with `setCurrentKey`.
//!
//! One criterion group per op (`job_value_get` … `job_map_iterate`), functions `heap` and
//! `rocksdb`. RocksDB gets the memory of Flink's slot: a 512 MiB block cache, with the
//! memtables charged to it (a 256 MiB write-buffer budget inside the cache) and the SSTs'
//! index and filter blocks in it (the engine's default). Every RocksDB engine the run has
//! loaded is settled (no flush or compaction running) before each function, so that no
//! function, a heap one included, shares the cores with another's background work. The line a
//! shape prints after its preload says what the engine holds: memtables (heap: tables), cache,
//! and what no budget bounds.
//! `KS_BENCH_ROW_CACHE_MIB=N` moves N MiB of the 512 (at most 256) to a row cache
//! (`RocksDbOptions::with_row_cache_bytes`). `KS_BENCH_SCAN_REUSE=0` makes every map scan
//! with a new iterator (`RocksDbOptions::with_scan_iterator_reuse(false)`), as before the
//! engine kept one per state.
//!
//! Every group runs `raw_hashmap` first: the same op on the same keys in std `HashMap`s with
//! the engine's hasher (foldhash, fixed seed), preloaded alike (`u64 → u64`, `u64 → Bytes`,
//! `u64 → Vec<u64>` of 10, `u64 → HashMap<u64, u64>` of 10), with nothing of a state backend:
//! no key groups, no serialization, no lock. It runs in the same process as the engines'
//! functions, so their ratio to it is read off one run (between two processes `raw_hashmap`
//! alone swings up to 2×, DESIGN.md §9). After `rocksdb` comes `raw_rocksdb`: the same op
//! through the raw `rocksdb` crate on the `rocksdb` function's own database
//! (`RocksDbEngine::db`: the same files, options and caches), keys and values laid out as the
//! engine lays them, so its ratio to `rocksdb` is the engine's own cost over RocksDB's.
//!
//! `job_value100_get` also runs `heap_with` and `rocksdb_with`: the same read through
//! `ValueState::with`, which lends the stored value to a closure instead of returning a clone
//! (heap: the `Bytes` is not cloned, so no reference count is touched; RocksDB decodes as `get`
//! does), which is what Flink's heap backend does when it hands back its stored `byte[]`.
//! `job_list_get` runs them too, through `ListState::with` (heap: the elements are summed where
//! the list is stored, with no vector allocated; RocksDB decodes as `get` does), and so does
//! `job_map_iterate`, through `MapState::with_entries`.
//!
//! `job_value_get`, `job_value_update`, `job_map_get` and `job_list_add` also run `heap_batch`
//! and `rocksdb_batch`: the same ops through the batched calls (`get_batch`, `update_batch`,
//! `add_batch`), 1,024 records at a time, resolving their keys included; so does
//! `job_list_get` (`ListState::get_batch`), after its single reads. The four groups run
//! `raw_rocksdb_batch` after `rocksdb_batch`: the same chunk through the raw crate on the
//! `rocksdb` function's database, as the engine batches it (reads: one sorted
//! `batched_multi_get_cf`; writes: one `WriteBatch`). The two read groups,
//! `job_value_get` and `job_map_get`, also run `rocksdb_batch_parallel`: `rocksdb_batch` on a
//! third RocksDB engine whose batched reads split over as many threads as the machine has
//! cores (`RocksDbOptions::with_batch_read_threads`).
//!
//! The same four groups run `heap_ttl` and `rocksdb_ttl`: the single op on a second pair of
//! engines whose four states have a one-day TTL (refreshed on write, the default incremental
//! cleanup), so time with TTL ÷ time without is read off one group.
//!
//! `job_value_get_absent` (`heap`, `rocksdb`; last) reads keys `n..2n`, which no state holds: the
//! first touch of a key, what RocksDB's bloom filters answer. `KS_BENCH_FILTERS_FOR_HITS=1`
//! gives every RocksDB engine `RocksDbOptions::with_optimize_filters_for_hits` (no filter probe
//! in the last level: present keys read faster, absent ones slower). Flink's harness has no
//! such op.
//!
//! For state larger than the block cache (`KS_BENCH_KEYS=10000000`): `KS_BENCH_MMAP_READS=1`
//! gives every RocksDB engine `RocksDbOptions::with_mmap_reads` (SST files read through a
//! mapping, not `pread`), `KS_BENCH_COMPRESSION=none|lz4|zstd` sets every state's SST
//! compression (default LZ4, the engine's), and `KS_BENCH_BLOCK_SIZE=BYTES` every state's data
//! block size (`RocksDbOptions::with_block_size_bytes`; default 4096, the engine's).
//!
//! Group `job_checkpoint` runs first, on the shapes as preloaded: the time of a checkpoint
//! into a fresh local directory, so every one is complete (`heap`, `heap_ttl`: the canonical
//! format; `rocksdb`, `rocksdb_ttl`: native, every SST uploaded), and, printed once per
//! function, the bytes it describes (its manifest's `full_size`): the growth of a checkpoint
//! with TTL is `heap_ttl`'s bytes ÷ `heap`'s.
//!
//! Lists grow during `job_list_add` (about one element per key per 5 M adds); `job_list_get`
//! runs before it on lists of exactly 10.

use std::cell::{OnceCell, RefCell};
use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{
    BenchmarkGroup, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
    measurement::WallTime,
};
use foldhash::fast::FixedState;
use keyed_state::backend::rocksdb::{Compression, RocksDbEngine, RocksDbOptions};
use keyed_state::checkpoint::{CheckpointStore, LocalStorage};
use keyed_state::state::{
    ListState, ListStateDescriptor, MapState, MapStateDescriptor, ValueState, ValueStateDescriptor,
};
use keyed_state::ttl::TtlConfig;
use keyed_state::{Engine, EngineConfig, HeapEngine, Key, KeyedStateBackend};

mod support;
use support::{SplitMix, u64_at};

/// Operations per timed batch (one criterion "iteration").
const BATCH: usize = 1024;
/// Elements per list and entries per map.
const ELEMENTS: u64 = 10;
/// Length of the pre-generated key sequence.
const SEQUENCE: usize = 4 << 20;

/// The number of keys: `KS_BENCH_KEYS`, default 1,000,000.
fn keys() -> u64 {
    std::env::var("KS_BENCH_KEYS")
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .filter(|&n: &u64| n > 0)
        .unwrap_or(1_000_000)
}

/// Uniform random keys in `0..n`, and a user key in 0..9 for each.
fn sequence(n: u64) -> Vec<(u64, u64)> {
    let mut rng = SplitMix(42);
    (0..SEQUENCE)
        .map(|_| {
            let r = rng.next();
            (r % n, (r >> 40) % ELEMENTS)
        })
        .collect()
}

/// One engine with the four states registered.
struct Shape<E: Engine> {
    backend: KeyedStateBackend<u64, E>,
    value8: ValueState<u64, u64>,
    value100: ValueState<u64, Bytes>,
    list: ListState<u64, u64>,
    map: MapState<u64, u64, u64>,
}

impl<E: Engine> Shape<E> {
    /// The four states, with `ttl` on all of them when given.
    fn new(engine: E, ttl: Option<&TtlConfig>) -> Self {
        let backend = KeyedStateBackend::new(engine);
        macro_rules! with_ttl {
            ($descriptor:expr) => {
                match ttl {
                    Some(ttl) => $descriptor.with_ttl(ttl.clone()),
                    None => $descriptor,
                }
            };
        }
        Shape {
            value8: backend
                .value_state(&with_ttl!(ValueStateDescriptor::new("value8")))
                .expect("register"),
            value100: backend
                .value_state(&with_ttl!(ValueStateDescriptor::new("value100")))
                .expect("register"),
            list: backend
                .list_state(&with_ttl!(ListStateDescriptor::new("list")))
                .expect("register"),
            map: backend
                .map_state(&with_ttl!(MapStateDescriptor::new("map")))
                .expect("register"),
            backend,
        }
    }

    /// Every key gets its four states, in key order; returns keys per second.
    fn preload(&self, n: u64, payloads: &[Bytes]) -> f64 {
        let start = std::time::Instant::now();
        for k in 0..n {
            let key = self.backend.key(k).expect("key");
            self.value8.update(&key, &(), k).expect("value8");
            let payload =
                &payloads[usize::try_from(k).expect("a key fits a usize") % payloads.len()];
            self.value100
                .update(&key, &(), payload.clone())
                .expect("value100");
            self.list
                .update(&key, &(), (0..ELEMENTS).map(|e| k + e))
                .expect("list");
            self.map
                .put_all(&key, &(), (0..ELEMENTS).map(|u| (u, k ^ u)))
                .expect("map");
        }
        n as f64 / start.elapsed().as_secs_f64()
    }
}

/// A std `HashMap` with the engine's hasher (foldhash, its fixed seed), as `raw_hashmap` in
/// `benches/state_ops.rs`.
type Raw<V> = HashMap<u64, V, FixedState>;

fn hasher() -> FixedState {
    FixedState::with_seed(0x6b65_7965_642d_7374)
}

/// The four states in std `HashMap`s, preloaded as [`Shape::preload`] loads an engine: the work
/// of every op with nothing of a state backend (no key groups, no serialization, no lock, no
/// snapshots), function `raw_hashmap` of every group.
struct RawShape {
    value8: Raw<u64>,
    value100: Raw<Bytes>,
    list: Raw<Vec<u64>>,
    map: Raw<Raw<u64>>,
}

impl RawShape {
    fn load(n: u64, payloads: &[Bytes]) -> Self {
        let capacity = usize::try_from(n).expect("a key count fits a usize");
        let mut shape = RawShape {
            value8: Raw::with_capacity_and_hasher(capacity, hasher()),
            value100: Raw::with_capacity_and_hasher(capacity, hasher()),
            list: Raw::with_capacity_and_hasher(capacity, hasher()),
            map: Raw::with_capacity_and_hasher(capacity, hasher()),
        };
        for k in 0..n {
            shape.value8.insert(k, k);
            let payload =
                &payloads[usize::try_from(k).expect("a key fits a usize") % payloads.len()];
            shape.value100.insert(k, payload.clone());
            // Exactly ten, as the engines' lists: the first add reallocates here too.
            shape.list.insert(k, (0..ELEMENTS).map(|e| k + e).collect());
            let mut entries = Raw::with_hasher(hasher());
            entries.extend((0..ELEMENTS).map(|u| (u, k ^ u)));
            shape.map.insert(k, entries);
        }
        shape
    }
}

/// The raw `rocksdb` crate on the `rocksdb` shape's own database ([`RocksDbEngine::db`]): the
/// same files, options and caches, so `raw_rocksdb` ÷ `rocksdb` is what the engine's layer
/// costs (key group check, key and namespace encoding, decoding, the TTL flag) on RocksDB's
/// own work. Keys and values as the engine lays them out (DESIGN.md §7b): `[group][key BE]`,
/// a map entry's with `[user key BE]` after, values big-endian, a list's elements framed
/// `[8][element BE]`; writes write what the engine's would, so the functions after a raw
/// write read what they would have read. The key's group comes from the backend, as the
/// engine's functions resolve it.
struct RawRocks<'a> {
    backend: &'a KeyedStateBackend<u64, RocksDbEngine>,
    db: &'a rocksdb::DBWithThreadMode<rocksdb::MultiThreaded>,
    value8: Arc<rocksdb::BoundColumnFamily<'a>>,
    value100: Arc<rocksdb::BoundColumnFamily<'a>>,
    list: Arc<rocksdb::BoundColumnFamily<'a>>,
    map: Arc<rocksdb::BoundColumnFamily<'a>>,
    read: rocksdb::ReadOptions,
    write: rocksdb::WriteOptions,
}

impl<'a> RawRocks<'a> {
    fn new(shape: &'a Shape<RocksDbEngine>) -> Self {
        let engine = shape.backend.engine();
        let db = engine.db();
        let cf = |name: &str| {
            db.cf_handle(&format!("state:{name}"))
                .expect("column family")
        };
        let mut write = rocksdb::WriteOptions::default();
        write.disable_wal(!engine.options().write_ahead_log());
        let raw = RawRocks {
            backend: &shape.backend,
            db,
            value8: cf("value8"),
            value100: cf("value100"),
            list: cf("list"),
            map: cf("map"),
            read: rocksdb::ReadOptions::default(),
            write,
        };
        // The layout above is the engine's: the raw reads decode what its reads return.
        for k in [0, 1, 4_242] {
            let key = shape.backend.key(k).expect("key");
            assert_eq!(raw.value8_get(k), shape.value8.get(&key, &()).expect("get"));
            assert_eq!(
                raw.get(&raw.value100, raw.key(k)).as_deref(),
                shape.value100.get(&key, &()).expect("get").as_deref()
            );
            assert_eq!(
                raw.list_sum(k),
                shape.list.get(&key, &()).expect("get").sum::<u64>()
            );
            assert_eq!(
                raw.map_get(k, 3),
                shape.map.get(&key, &(), &3).expect("get")
            );
            assert_eq!(
                raw.map_sum(k),
                shape
                    .map
                    .entries(&key, &())
                    .expect("entries")
                    .map(|(u, v)| u ^ v)
                    .sum::<u64>()
            );
        }
        raw
    }

    /// `[group][key BE]`.
    fn key(&self, k: u64) -> [u8; 9] {
        let key = self.backend.key(k).expect("key");
        let mut out = [0u8; 9];
        out[0] = u8::try_from(key.group()).expect("128 key groups: one byte");
        out[1..].copy_from_slice(key.bytes());
        out
    }

    fn entry_key(&self, k: u64, u: u64) -> [u8; 17] {
        let mut out = [0u8; 17];
        out[..9].copy_from_slice(&self.key(k));
        out[9..].copy_from_slice(&u.to_be_bytes());
        out
    }

    fn get(
        &self,
        cf: &Arc<rocksdb::BoundColumnFamily<'a>>,
        key: impl AsRef<[u8]>,
    ) -> Option<Vec<u8>> {
        self.db
            .get_pinned_cf_opt(cf, key, &self.read)
            .expect("get")
            .map(|v| v.to_vec())
    }

    fn u64_at(&self, cf: &Arc<rocksdb::BoundColumnFamily<'a>>, key: &[u8]) -> Option<u64> {
        let v = self
            .db
            .get_pinned_cf_opt(cf, key, &self.read)
            .expect("get")?;
        Some(u64_at(&v, 0))
    }

    fn value8_get(&self, k: u64) -> Option<u64> {
        self.u64_at(&self.value8, &self.key(k))
    }

    /// The first byte and the length of the 100-byte value: what a caller touches.
    fn value100_touch(&self, k: u64) -> usize {
        self.db
            .get_pinned_cf_opt(&self.value100, self.key(k), &self.read)
            .expect("get")
            .map_or(0, |v| usize::from(v[0]) + v.len())
    }

    /// The sum of a list's elements, walked in place.
    fn list_sum(&self, k: u64) -> u64 {
        let Some(v) = self
            .db
            .get_pinned_cf_opt(&self.list, self.key(k), &self.read)
            .expect("get")
        else {
            return 0;
        };
        v.chunks_exact(9)
            .map(|e| {
                assert_eq!(e[0], 8, "an element's frame");
                u64_at(e, 1)
            })
            .sum()
    }

    fn map_get(&self, k: u64, u: u64) -> Option<u64> {
        self.u64_at(&self.map, &self.entry_key(k, u))
    }

    /// `u ^ v` summed over a map's entries: a prefix scan with a new iterator, as a plain
    /// user of the crate makes one per scan.
    fn map_sum(&self, k: u64) -> u64 {
        let prefix = self.key(k);
        let mut it = self.db.raw_iterator_cf(&self.map);
        it.seek(prefix);
        let mut sum = 0;
        while let (Some(key), Some(value)) = (it.key(), it.value()) {
            let Some(u) = key.strip_prefix(&prefix[..]) else {
                break;
            };
            let u = u64::from_be_bytes(u.try_into().expect("8 bytes"));
            sum += u ^ u64::from_be_bytes(value.try_into().expect("8 bytes"));
            it.next();
        }
        it.status().expect("scan");
        sum
    }

    fn put(&self, cf: &Arc<rocksdb::BoundColumnFamily<'a>>, key: &[u8], value: &[u8]) {
        self.db
            .put_cf_opt(cf, key, value, &self.write)
            .expect("put");
    }

    /// The `u64`s found under `keys`, summed, through one sorted batched multi-get, as the
    /// engine's batched reads make theirs.
    fn multi_get_sum<K: AsRef<[u8]> + Ord>(
        &self,
        cf: &Arc<rocksdb::BoundColumnFamily<'a>>,
        mut keys: Vec<K>,
    ) -> u64 {
        keys.sort_unstable();
        self.db
            .batched_multi_get_cf_opt(cf, &keys, true, &self.read)
            .into_iter()
            .map(|v| v.expect("get").map_or(0, |v| u64_at(&v, 0)))
            .sum()
    }

    /// One `WriteBatch` filled by `fill`, written as the engine writes its batches.
    fn write_batch(&self, fill: impl FnOnce(&mut rocksdb::WriteBatch)) {
        let mut batch = rocksdb::WriteBatch::default();
        fill(&mut batch);
        self.db.write_opt(batch, &self.write).expect("write");
    }

    /// `[8][element BE]`, a list element's frame.
    fn frame(element: u64) -> [u8; 9] {
        let mut framed = [8u8; 9];
        framed[1..].copy_from_slice(&element.to_be_bytes());
        framed
    }

    fn list_add(&self, k: u64, element: u64) {
        self.db
            .merge_cf_opt(&self.list, self.key(k), Self::frame(element), &self.write)
            .expect("merge");
    }
}

/// The RocksDB engine with the memory of Flink's slot (see the module documentation).
fn rocksdb_engine() -> RocksDbEngine {
    rocksdb_engine_with(1)
}

/// [`rocksdb_engine`], with batched reads split over `threads` threads.
fn rocksdb_engine_with(threads: usize) -> RocksDbEngine {
    let rows = row_cache_mib();
    let options = RocksDbOptions::default()
        .with_block_cache_bytes((512 - rows) << 20)
        .with_memory_budget_bytes(Some(256 << 20))
        .with_row_cache_bytes(rows << 20)
        .with_optimize_filters_for_hits(env_flag("KS_BENCH_FILTERS_FOR_HITS"))
        .with_mmap_reads(env_flag("KS_BENCH_MMAP_READS"))
        .with_compression(compression())
        .with_block_size_bytes(block_size())
        .with_scan_iterator_reuse(!std::env::var("KS_BENCH_SCAN_REUSE").is_ok_and(|v| v == "0"))
        .with_batch_read_threads(threads);
    RocksDbEngine::open_temporary(EngineConfig::new(128).expect("config"), options)
        .expect("open RocksDB")
}

/// Whether the environment variable `name` is `1`.
fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| v == "1")
}

/// The SST compression of every state: `KS_BENCH_COMPRESSION` (`none`, `lz4`, `zstd`; default
/// the engine's, LZ4). Anything else stops the run rather than measure what was not asked for.
fn compression() -> Compression {
    match std::env::var("KS_BENCH_COMPRESSION").as_deref() {
        Err(_) | Ok("lz4") => Compression::Lz4,
        Ok("none") => Compression::None,
        Ok("zstd") => Compression::Zstd,
        Ok(other) => panic!("KS_BENCH_COMPRESSION={other}: none, lz4 or zstd"),
    }
}

/// The data block size of every state: `KS_BENCH_BLOCK_SIZE` in bytes (default the engine's,
/// 4096). Anything that is not a number stops the run; a number out of bounds stops it when the
/// engine refuses it.
fn block_size() -> usize {
    match std::env::var("KS_BENCH_BLOCK_SIZE") {
        Err(_) => RocksDbOptions::default().block_size_bytes(),
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("KS_BENCH_BLOCK_SIZE={v}: a size in bytes")),
    }
}

/// MiB of the 512 given to RocksDB's row cache (`KS_BENCH_ROW_CACHE_MIB`, default 0: none, at
/// most 256), the rest to its block cache.
fn row_cache_mib() -> usize {
    std::env::var("KS_BENCH_ROW_CACHE_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
        .min(256)
}

/// 256 distinct 100-byte payloads, as the Flink harness's pool.
fn payloads() -> Vec<Bytes> {
    let mut rng = SplitMix(7);
    (0..256)
        .map(|_| {
            let bytes: Vec<u8> = (0..100).map(|_| rng.next().to_le_bytes()[0]).collect();
            Bytes::from(bytes)
        })
        .collect()
}

/// Both engines' shapes, built on first use, so a filtered run (`-- job_map_get/heap`) loads
/// only what it needs.
#[derive(Default)]
struct Shapes<'a> {
    n: u64,
    payloads: &'a [Bytes],
    heap: OnceCell<Shape<HeapEngine>>,
    rocks: OnceCell<Shape<RocksDbEngine>>,
    heap_ttl: OnceCell<Shape<HeapEngine>>,
    rocks_ttl: OnceCell<Shape<RocksDbEngine>>,
    rocks_parallel: OnceCell<Shape<RocksDbEngine>>,
    raw: OnceCell<RefCell<RawShape>>,
}

/// The TTL of the `_ttl` functions: one day, refreshed on write (the default update type),
/// with the default incremental cleanup.
fn one_day() -> TtlConfig {
    TtlConfig::new(Duration::from_secs(24 * 3600))
}

impl Shapes<'_> {
    fn load<E: Engine>(&self, engine: E, ttl: Option<&TtlConfig>, name: &str) -> Shape<E> {
        let shape = Shape::new(engine, ttl);
        let rate = shape.preload(self.n, self.payloads);
        // What the engine holds in memory after the preload, and (RocksDB) how much of it no
        // budget bounds (index and filter blocks outside the block cache).
        let m = shape.backend.engine().metrics().expect("metrics");
        let mib = |bytes: u64| bytes as f64 / f64::from(1 << 20);
        eprintln!(
            "job_shape: {} keys; {name} preload {rate:.0} keys/s; memory {:.0} MiB, \
             cache {:.0} MiB, table readers {:.0} MiB",
            self.n,
            mib(m.memory_bytes),
            mib(m.cache_bytes),
            mib(m.table_reader_bytes)
        );
        shape
    }

    /// Waits until no loaded engine has background work running, not only the one about to
    /// be measured: a heap function right after a RocksDB function that wrote would otherwise
    /// share the cores with that engine's flushes and compactions (Flink's harness runs each
    /// backend in a JVM of its own).
    fn quiesce(&self) {
        for rocks in [&self.rocks, &self.rocks_ttl, &self.rocks_parallel] {
            if let Some(shape) = rocks.get() {
                shape.backend.engine().quiesce();
            }
        }
    }

    fn heap(&self) -> &Shape<HeapEngine> {
        self.heap
            .get_or_init(|| self.load(heap_engine(), None, "heap"))
    }

    fn rocks(&self) -> &Shape<RocksDbEngine> {
        self.rocks
            .get_or_init(|| self.load(rocksdb_engine(), None, "rocksdb"))
    }

    fn heap_ttl(&self) -> &Shape<HeapEngine> {
        self.heap_ttl
            .get_or_init(|| self.load(heap_engine(), Some(&one_day()), "heap_ttl"))
    }

    fn rocks_ttl(&self) -> &Shape<RocksDbEngine> {
        self.rocks_ttl
            .get_or_init(|| self.load(rocksdb_engine(), Some(&one_day()), "rocksdb_ttl"))
    }

    fn rocks_parallel(&self) -> &Shape<RocksDbEngine> {
        self.rocks_parallel.get_or_init(|| {
            let cores = std::thread::available_parallelism().map_or(1, usize::from);
            self.load(rocksdb_engine_with(cores), None, "rocksdb_parallel")
        })
    }

    fn raw(&self) -> &RefCell<RawShape> {
        self.raw
            .get_or_init(|| RefCell::new(RawShape::load(self.n, self.payloads)))
    }
}

fn heap_engine() -> HeapEngine {
    HeapEngine::new(EngineConfig::new(128).expect("config"))
}

/// The key sequence and one position in it for the whole run, advanced by every iteration of
/// every function, as the Flink harness advances its `streamPos` across ops. Criterion calls
/// a function's closure once per sample (and several times to warm up): a position kept in
/// that closure would start over at every sample, and a function would read the same first
/// few hundred thousand keys again and again, a working set that caches (the CPU's, RocksDB's
/// block and row caches) hold far better than the uniform million Flink's harness reads.
struct Stream {
    seq: Vec<(u64, u64)>,
    pos: std::cell::Cell<usize>,
}

impl Stream {
    fn new(seq: Vec<(u64, u64)>) -> Self {
        assert!(seq.len() >= BATCH && seq.len().is_multiple_of(BATCH));
        Stream {
            seq,
            pos: std::cell::Cell::new(0),
        }
    }

    /// The next `BATCH` (key, user key) pairs, wrapping at the end.
    fn next_chunk(&self) -> &[(u64, u64)] {
        let pos = self.pos.get();
        self.pos.set((pos + BATCH) % self.seq.len());
        &self.seq[pos..pos + BATCH]
    }
}

/// Runs `op` over the next `BATCH` (key, user key) pairs of the stream per iteration.
fn over_sequence(stream: &Stream, mut op: impl FnMut(u64, u64)) -> impl FnMut() {
    move || {
        for &(k, u) in stream.next_chunk() {
            op(k, u);
        }
    }
}

/// Runs `op` on the next chunk of `BATCH` (key, user key) pairs of the stream per iteration.
fn over_chunks(stream: &Stream, mut op: impl FnMut(&[(u64, u64)])) -> impl FnMut() {
    move || op(stream.next_chunk())
}

fn group<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut g = c.benchmark_group(name);
    g.throughput(Throughput::Elements(BATCH as u64));
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    g
}

/// Waits until an engine has no background work running (RocksDB: flushes and compactions),
/// so that no measurement pays for the setup's or another function's.
trait Quiesce {
    fn quiesce(&self);
}

impl Quiesce for HeapEngine {
    fn quiesce(&self) {}
}

impl Quiesce for RocksDbEngine {
    fn quiesce(&self) {
        self.settle().expect("settle");
    }
}

/// One op: functions `raw_hashmap` (the `raw = |..|` body on the [`RawShape`]), `heap`,
/// `rocksdb` and `raw_rocksdb` (the `rocks = |..|` body on the [`RawRocks`]); with a `batch`
/// body (a whole chunk of `BATCH` ops, from resolving their keys on) also `heap_batch`,
/// `rocksdb_batch` and `raw_rocksdb_batch` (the `rocks_batch = |..|` body), and the single op
/// again on the states with TTL, `heap_ttl` and `rocksdb_ttl`; with a function name after the
/// batch bodies, that name runs the batch on the parallel-read RocksDB engine.
macro_rules! job_op {
    ($c:expr, $name:literal, $shapes:expr, $seq:expr, $payloads:expr,
     raw = |$r:ident, $rk:ident, $ru:ident, $rp:ident| $raw:expr,
     rocks = |$d:ident, $dk:ident, $du:ident, $dp:ident| $rocks:expr,
     |$s:ident, $k:ident, $u:ident, $p:ident| $body:expr) => {{
        let mut g = group($c, $name);
        job_op!(@raw g, $shapes, $seq, $payloads, |$r, $rk, $ru, $rp| $raw);
        job_op!(@one g, "heap", $shapes, heap, $seq, $payloads, |$s, $k, $u, $p| $body);
        job_op!(@one g, "rocksdb", $shapes, rocks, $seq, $payloads, |$s, $k, $u, $p| $body);
        job_op!(@rawdb g, $shapes, $seq, $payloads, |$d, $dk, $du, $dp| $rocks);
        g.finish();
    }};
    ($c:expr, $name:literal, $shapes:expr, $seq:expr, $payloads:expr,
     raw = |$r:ident, $rk:ident, $ru:ident, $rp:ident| $raw:expr,
     rocks = |$d:ident, $dk:ident, $du:ident, $dp:ident| $rocks:expr,
     |$s:ident, $k:ident, $u:ident, $p:ident| $body:expr,
     batch |$bs:ident, $chunk:ident| $batch:expr,
     rocks_batch = |$rd:ident, $rchunk:ident| $rocks_batch:expr $(, $parallel:literal)?) => {{
        let mut g = group($c, $name);
        job_op!(@raw g, $shapes, $seq, $payloads, |$r, $rk, $ru, $rp| $raw);
        job_op!(@one g, "heap", $shapes, heap, $seq, $payloads, |$s, $k, $u, $p| $body);
        job_op!(@one g, "rocksdb", $shapes, rocks, $seq, $payloads, |$s, $k, $u, $p| $body);
        job_op!(@rawdb g, $shapes, $seq, $payloads, |$d, $dk, $du, $dp| $rocks);
        job_op!(@chunks g, "heap_batch", $shapes, heap, $seq, |$bs, $chunk| $batch);
        job_op!(@chunks g, "rocksdb_batch", $shapes, rocks, $seq, |$bs, $chunk| $batch);
        job_op!(@rawbatch g, $shapes, $seq, |$rd, $rchunk| $rocks_batch);
        $(job_op!(@chunks g, $parallel, $shapes, rocks_parallel, $seq, |$bs, $chunk| $batch);)?
        job_op!(@one g, "heap_ttl", $shapes, heap_ttl, $seq, $payloads, |$s, $k, $u, $p| $body);
        job_op!(@one g, "rocksdb_ttl", $shapes, rocks_ttl, $seq, $payloads, |$s, $k, $u, $p| $body);
        g.finish();
    }};
    // Function `raw_hashmap`: the raw body on the `RawShape`, one key of the sequence at a time.
    (@raw $g:ident, $shapes:expr, $seq:expr, $payloads:expr,
     |$r:ident, $k:ident, $u:ident, $p:ident| $raw:expr) => {
        $g.bench_function("raw_hashmap", |b| {
            let mut shape = $shapes.raw().borrow_mut();
            $shapes.quiesce();
            let mut step = over_sequence($seq, |$k, $u| {
                let $p = &$payloads[usize::from($k.to_le_bytes()[0])];
                let $r = &mut *shape;
                black_box($raw);
            });
            b.iter(&mut step)
        });
    };
    // Function `raw_rocksdb`: the body on a `RawRocks` over the `rocksdb` shape's database.
    (@rawdb $g:ident, $shapes:expr, $seq:expr, $payloads:expr,
     |$d:ident, $k:ident, $u:ident, $p:ident| $body:expr) => {
        $g.bench_function("raw_rocksdb", |b| {
            let $d = RawRocks::new($shapes.rocks());
            $shapes.quiesce();
            let mut step = over_sequence($seq, |$k, $u| {
                let $p = &$payloads[usize::from($k.to_le_bytes()[0])];
                black_box($body);
            });
            b.iter(&mut step)
        });
    };
    // Function `raw_rocksdb_batch`: the batch body on a `RawRocks`, one chunk at a time.
    (@rawbatch $g:ident, $shapes:expr, $seq:expr, |$d:ident, $chunk:ident| $body:expr) => {
        $g.bench_function("raw_rocksdb_batch", |b| {
            let $d = RawRocks::new($shapes.rocks());
            $shapes.quiesce();
            let mut step = over_chunks($seq, |$chunk| {
                black_box($body);
            });
            b.iter(&mut step)
        });
    };
    // Function `$function`: the single op on `$shape`, one key of the sequence at a time.
    (@one $g:ident, $function:literal, $shapes:expr, $shape:ident, $seq:expr, $payloads:expr,
     |$s:ident, $k:ident, $u:ident, $p:ident| $body:expr) => {
        $g.bench_function($function, |b| {
            let $s = $shapes.$shape();
            $shapes.quiesce();
            let mut step = over_sequence($seq, |$k, $u| {
                let $p = &$payloads[usize::from($k.to_le_bytes()[0])];
                black_box($body);
            });
            b.iter(&mut step)
        });
    };
    // Function `$function`: the batch body on `$shape`, one chunk of the sequence at a time.
    (@chunks $g:ident, $function:literal, $shapes:expr, $shape:ident, $seq:expr,
     |$bs:ident, $chunk:ident| $batch:expr) => {
        $g.bench_function($function, |b| {
            let $bs = $shapes.$shape();
            $shapes.quiesce();
            let mut step = over_chunks($seq, |$chunk| {
                black_box($batch);
            });
            b.iter(&mut step)
        });
    };
}

/// The keys of a chunk, resolved.
fn resolve<E: Engine>(s: &Shape<E>, chunk: &[(u64, u64)]) -> Vec<Key<u64>> {
    chunk
        .iter()
        .map(|&(k, _)| s.backend.key(k).expect("key"))
        .collect()
}

/// Function `name` of `job_checkpoint`: each sample is the first checkpoint of `shape` into a
/// fresh local directory (so RocksDB uploads every SST too); the size is printed once.
fn checkpoint_function<'s, E: Engine + Quiesce>(
    g: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    shape: impl Fn() -> &'s Shape<E>,
) {
    let printed = std::cell::Cell::new(false);
    // Criterion calls this closure once per sample.
    g.bench_function(name, |b| {
        let s = shape();
        let dir = tempfile::tempdir().expect("temporary directory");
        let storage = LocalStorage::new(dir.path()).expect("storage");
        let store = Arc::new(
            CheckpointStore::open(Arc::new(storage), 1)
                .expect("store")
                .0,
        );
        let mut id = 0;
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                id += 1;
                let start = Instant::now();
                let manifest = s
                    .backend
                    .checkpoint(&store, id, &[])
                    .and_then(|pending| pending.wait())
                    .expect("checkpoint");
                total += start.elapsed();
                if !printed.replace(true) {
                    eprintln!(
                        "job_checkpoint/{name}: {} bytes ({:.1} MB)",
                        manifest.full_size(),
                        manifest.full_size() as f64 / 1e6
                    );
                }
            }
            total
        });
        s.backend.engine().quiesce();
    });
}

fn job_shape(c: &mut Criterion) {
    let n = keys();
    let seq = Stream::new(sequence(n));
    let payloads = payloads();
    let shapes = Shapes {
        n,
        payloads: &payloads,
        ..Shapes::default()
    };

    // First, while every shape is as preloaded (the ops below change lists and maps).
    let mut g = c.benchmark_group("job_checkpoint");
    // One checkpoint per sample (flat sampling): a second or two each, so ten in all.
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_secs(10));
    checkpoint_function(&mut g, "heap", || shapes.heap());
    checkpoint_function(&mut g, "heap_ttl", || shapes.heap_ttl());
    checkpoint_function(&mut g, "rocksdb", || shapes.rocks());
    checkpoint_function(&mut g, "rocksdb_ttl", || shapes.rocks_ttl());
    g.finish();

    job_op!(
        c,
        "job_value_get",
        shapes,
        &seq,
        payloads,
        raw = |r, k, _u, _p| r.value8.get(&k).copied(),
        rocks = |d, k, _u, _p| d.value8_get(k),
        |s, k, _u, _p| {
            let key = s.backend.key(k).expect("key");
            s.value8.get(&key, &()).expect("get")
        },
        batch | s,
        chunk | {
            let keys = resolve(s, chunk);
            let pairs: Vec<_> = keys.iter().map(|k| (k, &())).collect();
            s.value8
                .get_batch(&pairs)
                .into_iter()
                .map(|r| r.expect("get").unwrap_or(0))
                .sum::<u64>()
        },
        rocks_batch = |d, chunk| {
            let keys = chunk.iter().map(|&(k, _)| d.key(k)).collect();
            d.multi_get_sum(&d.value8, keys)
        },
        "rocksdb_batch_parallel"
    );
    job_op!(
        c,
        "job_value_update",
        shapes,
        &seq,
        payloads,
        raw = |r, k, _u, _p| r.value8.insert(k, k ^ 1),
        rocks = |d, k, _u, _p| d.put(&d.value8, &d.key(k), &(k ^ 1).to_be_bytes()),
        |s, k, _u, _p| {
            let key = s.backend.key(k).expect("key");
            s.value8.update(&key, &(), k ^ 1).expect("update")
        },
        batch | s,
        chunk | {
            let keys = resolve(s, chunk);
            s.value8
                .update_batch(keys.iter().map(|k| (k, &(), *k.key() ^ 1)))
                .expect("update")
        },
        rocks_batch = |d, chunk| d.write_batch(|batch| {
            for &(k, _) in chunk {
                batch.put_cf(&d.value8, d.key(k), (k ^ 1).to_be_bytes());
            }
        })
    );
    {
        // Also through the borrowing read, `with`, which lends the stored `Bytes` (heap: no
        // reference count touched), as Flink's heap backend hands back its stored object.
        let mut g = group(c, "job_value100_get");
        fn get<E: Engine>(s: &Shape<E>, k: u64) -> Option<Bytes> {
            let key = s.backend.key(k).expect("key");
            s.value100.get(&key, &()).expect("get")
        }
        fn with<E: Engine>(s: &Shape<E>, k: u64) -> Option<usize> {
            let key = s.backend.key(k).expect("key");
            s.value100
                .with(&key, &(), |v| v.map(Bytes::len))
                .expect("with")
        }
        job_op!(@raw g, shapes, &seq, payloads, |r, k, _u, _p| r.value100.get(&k).cloned());
        job_op!(@one g, "heap", shapes, heap, &seq, payloads, |s, k, _u, _p| get(s, k));
        job_op!(@one g, "rocksdb", shapes, rocks, &seq, payloads, |s, k, _u, _p| get(s, k));
        job_op!(@rawdb g, shapes, &seq, payloads, |d, k, _u, _p| d.value100_touch(k));
        job_op!(@one g, "heap_with", shapes, heap, &seq, payloads, |s, k, _u, _p| with(s, k));
        job_op!(@one g, "rocksdb_with", shapes, rocks, &seq, payloads, |s, k, _u, _p| with(s, k));
        g.finish();
    }
    job_op!(
        c,
        "job_value100_update",
        shapes,
        &seq,
        payloads,
        raw = |r, k, _u, p| r.value100.insert(k, p.clone()),
        rocks = |d, k, _u, p| d.put(&d.value100, &d.key(k), p),
        |s, k, _u, p| {
            let key = s.backend.key(k).expect("key");
            s.value100.update(&key, &(), p.clone()).expect("update")
        }
    );
    {
        // Also through `ListState::with`, which walks the stored elements in place (heap: no
        // vector allocated) instead of returning a copy of the list.
        let mut g = group(c, "job_list_get");
        fn get<E: Engine>(s: &Shape<E>, k: u64) -> u64 {
            let key = s.backend.key(k).expect("key");
            s.list.get(&key, &()).expect("get").sum::<u64>()
        }
        fn with<E: Engine>(s: &Shape<E>, k: u64) -> u64 {
            let key = s.backend.key(k).expect("key");
            s.list.with(&key, &(), |l| l.sum::<u64>()).expect("with")
        }
        job_op!(@raw g, shapes, &seq, payloads, |r, k, _u, _p| r
            .list
            .get(&k)
            .map_or(0, |l| l.iter().sum::<u64>()));
        job_op!(@one g, "heap", shapes, heap, &seq, payloads, |s, k, _u, _p| get(s, k));
        job_op!(@one g, "rocksdb", shapes, rocks, &seq, payloads, |s, k, _u, _p| get(s, k));
        job_op!(@rawdb g, shapes, &seq, payloads, |d, k, _u, _p| d.list_sum(k));
        job_op!(@one g, "heap_with", shapes, heap, &seq, payloads, |s, k, _u, _p| with(s, k));
        job_op!(@one g, "rocksdb_with", shapes, rocks, &seq, payloads, |s, k, _u, _p| with(s, k));
        // The batched read too (`ListState::get_batch`; issue 15 names four other groups).
        fn batch<E: Engine>(s: &Shape<E>, chunk: &[(u64, u64)]) -> u64 {
            let keys = resolve(s, chunk);
            let pairs: Vec<_> = keys.iter().map(|k| (k, &())).collect();
            s.list
                .get_batch(&pairs)
                .into_iter()
                .map(|r| r.expect("get").iter().sum::<u64>())
                .sum()
        }
        job_op!(@chunks g, "heap_batch", shapes, heap, &seq, |s, chunk| batch(s, chunk));
        job_op!(@chunks g, "rocksdb_batch", shapes, rocks, &seq, |s, chunk| batch(s, chunk));
        g.finish();
    }
    job_op!(
        c,
        "job_list_add",
        shapes,
        &seq,
        payloads,
        raw = |r, k, _u, _p| r.list.entry(k).or_default().push(k),
        rocks = |d, k, _u, _p| d.list_add(k, k),
        |s, k, _u, _p| {
            let key = s.backend.key(k).expect("key");
            s.list.add(&key, &(), k).expect("add")
        },
        batch | s,
        chunk | {
            let keys = resolve(s, chunk);
            s.list
                .add_batch(keys.iter().map(|k| (k, &(), *k.key())))
                .expect("add")
        },
        rocks_batch = |d, chunk| d.write_batch(|batch| {
            for &(k, _) in chunk {
                batch.merge_cf(&d.list, d.key(k), RawRocks::frame(k));
            }
        })
    );
    job_op!(
        c,
        "job_map_get",
        shapes,
        &seq,
        payloads,
        raw = |r, k, u, _p| r.map.get(&k).and_then(|m| m.get(&u)).copied(),
        rocks = |d, k, u, _p| d.map_get(k, u),
        |s, k, u, _p| {
            let key = s.backend.key(k).expect("key");
            s.map.get(&key, &(), &u).expect("get")
        },
        batch | s,
        chunk | {
            let keys = resolve(s, chunk);
            let triples: Vec<_> = keys
                .iter()
                .zip(chunk)
                .map(|(k, (_, u))| (k, &(), u))
                .collect();
            s.map
                .get_batch(&triples)
                .into_iter()
                .map(|r| r.expect("get").unwrap_or(0))
                .sum::<u64>()
        },
        rocks_batch = |d, chunk| {
            let keys = chunk.iter().map(|&(k, u)| d.entry_key(k, u)).collect();
            d.multi_get_sum(&d.map, keys)
        },
        "rocksdb_batch_parallel"
    );
    job_op!(
        c,
        "job_map_put",
        shapes,
        &seq,
        payloads,
        raw = |r, k, u, _p| r
            .map
            .entry(k)
            .or_insert_with(|| Raw::with_hasher(hasher()))
            .insert(u, k),
        rocks = |d, k, u, _p| d.put(&d.map, &d.entry_key(k, u), &k.to_be_bytes()),
        |s, k, u, _p| {
            let key = s.backend.key(k).expect("key");
            s.map.put(&key, &(), u, k).expect("put")
        }
    );
    {
        // Also through `MapState::with_entries`, which walks the stored entries in place.
        let mut g = group(c, "job_map_iterate");
        fn entries<E: Engine>(s: &Shape<E>, k: u64) -> u64 {
            let key = s.backend.key(k).expect("key");
            s.map
                .entries(&key, &())
                .expect("entries")
                .map(|(u, v)| u ^ v)
                .sum::<u64>()
        }
        fn with<E: Engine>(s: &Shape<E>, k: u64) -> u64 {
            let key = s.backend.key(k).expect("key");
            s.map
                .with_entries(&key, &(), |m| m.map(|(u, v)| u ^ v).sum::<u64>())
                .expect("with_entries")
        }
        job_op!(@raw g, shapes, &seq, payloads, |r, k, _u, _p| r
            .map
            .get(&k)
            .map_or(0, |m| m.iter().map(|(u, v)| u ^ v).sum::<u64>()));
        job_op!(@one g, "heap", shapes, heap, &seq, payloads, |s, k, _u, _p| entries(s, k));
        job_op!(@one g, "rocksdb", shapes, rocks, &seq, payloads, |s, k, _u, _p| entries(s, k));
        job_op!(@rawdb g, shapes, &seq, payloads, |d, k, _u, _p| d.map_sum(k));
        job_op!(@one g, "heap_with", shapes, heap, &seq, payloads, |s, k, _u, _p| with(s, k));
        job_op!(@one g, "rocksdb_with", shapes, rocks, &seq, payloads, |s, k, _u, _p| with(s, k));
        g.finish();
    }
    // Reads of keys no state holds (`n..2n`): the first touch of a key, which a bloom filter
    // answers, and which searches the index and a data block in a level without one. Last, so
    // the functions above keep their places in the run.
    job_op!(
        c,
        "job_value_get_absent",
        shapes,
        &seq,
        payloads,
        raw = |r, k, _u, _p| r.value8.get(&(k + n)).copied(),
        rocks = |d, k, _u, _p| d.value8_get(k + n),
        |s, k, _u, _p| {
            let key = s.backend.key(k + n).expect("key");
            s.value8.get(&key, &()).expect("get")
        }
    );
}

criterion_group!(benches, job_shape);
criterion_main!(benches);
