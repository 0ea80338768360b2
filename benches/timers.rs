//! Timer benchmarks (issue 5): group `timer_register_fire` registers 1,000,000 event-time
//! timers over 100,000 keys, then advances the watermark past all of them.
//! `heap` keeps timers in memory, `rocksdb` in a RocksDB column family (the engine's
//! `timers_in_rocksdb` option; opening the database is inside the measurement, dropping it is
//! not); `raw_binaryheap` is the baseline: a std `BinaryHeap` with a `HashSet` for deduplication.
//! Keys are resolved once beforehand (a stream processor resolves a record's key once for all
//! its state and timer accesses).
//!
//! Group `timer_checkpoint`, function `checkpoint_sync` (issue 15, item 6): the synchronous
//! part of a heap checkpoint (the call to `checkpoint`, during which processing stands still)
//! with 1M and 4M pending event-time timers and no other state. The background part (encoding
//! and writing the timers) is waited for outside the measurement, so each sample takes one
//! checkpoint (flat sampling).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
use std::hint::black_box;
use std::time::Duration;

use std::sync::Arc;
use std::time::Instant;

use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use keyed_state::backend::rocksdb::{RocksDbEngine, RocksDbOptions};
use keyed_state::checkpoint::{CheckpointStore, LocalStorage};
use keyed_state::timer::TimerService;
use keyed_state::{EngineConfig, HeapEngine, Key, KeyedStateBackend};

const TIMERS: u64 = 1_000_000;
const KEYS: u64 = 100_000;

/// The i-th timer: a key and a timestamp spread over an hour.
fn timer(i: u64) -> (u64, u64) {
    let x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (i % KEYS, (x >> 20) % 3_600_000)
}

/// Registers every timer, then fires them all; returns a sum so nothing is optimised away.
fn register_and_fire(timers: &TimerService<u64>, keys: &[Key<u64>]) -> u64 {
    for i in 0..TIMERS {
        let (k, ts) = timer(i);
        timers
            .register_event_time_timer(&keys[usize::try_from(k).expect("a key index")], &(), ts)
            .expect("register");
    }
    let mut fired = 0u64;
    timers
        .advance_watermark(u64::MAX, |t| {
            fired += black_box(t.key);
            Ok(())
        })
        .expect("advance");
    fired
}

fn benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("timer_register_fire");
    g.throughput(Throughput::Elements(TIMERS));
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10));

    let backend = KeyedStateBackend::<u64>::new(HeapEngine::new(EngineConfig::default()));
    let keys: Vec<_> = (0..KEYS).map(|k| backend.key(k).expect("key")).collect();
    g.bench_function("heap", |b| {
        b.iter(|| {
            let timers = TimerService::<u64>::new("bench", backend.config());
            register_and_fire(&timers, &keys)
        })
    });

    g.bench_function("rocksdb", |b| {
        b.iter_with_large_drop(|| {
            let engine = RocksDbEngine::open_temporary(
                EngineConfig::default(),
                RocksDbOptions::default().with_timers_in_rocksdb(true),
            )
            .expect("open");
            let backend = KeyedStateBackend::<u64, _>::new(engine);
            let timers = backend.timer_service::<()>("bench").expect("service");
            black_box(register_and_fire(&timers, &keys));
            backend
        })
    });

    g.bench_function("raw_binaryheap", |b| {
        b.iter(|| {
            let mut heap = BinaryHeap::new();
            let mut set = HashSet::new();
            for i in 0..TIMERS {
                let (k, ts) = timer(i);
                if set.insert((ts, k)) {
                    heap.push(Reverse((ts, k)));
                }
            }
            let mut fired = 0u64;
            while let Some(Reverse((ts, k))) = heap.pop() {
                set.remove(&(ts, k));
                fired += black_box(k);
            }
            fired
        })
    });
    g.finish();
}

/// The synchronous part of a heap checkpoint holding `count` timers.
fn checkpoint_sync(c: &mut Criterion) {
    let mut g = c.benchmark_group("timer_checkpoint");
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_millis(1));
    for (label, count) in [("1M", 1_000_000u64), ("4M", 4_000_000)] {
        let backend = KeyedStateBackend::<u64>::new(HeapEngine::new(EngineConfig::default()));
        let keys: Vec<_> = (0..KEYS).map(|k| backend.key(k).expect("key")).collect();
        let timers = backend.timer_service::<u64>("bench").expect("service");
        for i in 0..count {
            // A distinct (key, namespace, timestamp) each: `count` pending timers.
            let (k, ts) = timer(i);
            let key = &keys[usize::try_from(k).expect("a key index")];
            timers
                .register_event_time_timer(key, &(i / KEYS), ts)
                .expect("register");
        }
        assert_eq!(
            timers.pending(keyed_state::timer::TimeDomain::EventTime),
            count
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = Arc::new(LocalStorage::new(dir.path()).expect("storage"));
        let store = Arc::new(CheckpointStore::open(storage, 1).expect("store").0);
        let mut id = 0;
        g.bench_function(BenchmarkId::new("checkpoint_sync", label), |b| {
            b.iter_custom(|iters| {
                let mut sync = Duration::ZERO;
                for _ in 0..iters {
                    id += 1;
                    let start = Instant::now();
                    let pending = backend.checkpoint(&store, id, &[]).expect("checkpoint");
                    sync += start.elapsed();
                    pending.wait().expect("the background part");
                }
                sync
            })
        });
    }
    g.finish();
}

criterion_group!(timers, benches, checkpoint_sync);
criterion_main!(timers);
