//! Checkpoint upload and restore throughput to a real S3 server on loopback (`s3s-fs`, started
//! by the bench) beside the local directory, in the same run (issue 8). Needs the `s3` feature:
//! `cargo bench --locked --features s3 --bench remote`.
//!
//! State: `KS_BENCH_KEYS` keys (default 400,000) of a `ValueState<u64, Vec<u8>>` with 100-byte
//! values (~40 MB of user data). Group `remote_checkpoint`: one checkpoint after 10 % of the
//! keys changed — `rocksdb_incremental_{local,s3}` (new SSTs only) and `heap_full_{local,s3}`
//! (the whole state) — throughput in bytes uploaded. Group `remote_restore`: a restore of the
//! latest checkpoint into a fresh engine, `rocksdb_incremental_{local,s3}` and
//! `heap_full_{local,s3}`, throughput in the checkpoint's full size. S3 transfers run
//! `ObjectStorageOptions::transfers` (8) files at a time; local ones 4.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use keyed_state::backend::rocksdb::{RocksDbEngine, RocksDbOptions};
use keyed_state::checkpoint::{
    CheckpointStorage, CheckpointStore, LocalStorage, ObjectStorage, RestoreSource,
};
use keyed_state::state::{ValueState, ValueStateDescriptor};
use keyed_state::{Engine, EngineConfig, HeapEngine, KeyedStateBackend};

#[path = "../tests/support/s3_server.rs"]
mod s3_server;

const M: u32 = 128;

fn keys() -> u64 {
    std::env::var("KS_BENCH_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400_000)
}

fn value(k: u64, round: u64) -> Vec<u8> {
    let mut x = k.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ round;
    let mut v = Vec::with_capacity(100);
    while v.len() < 100 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&(x % 1000).to_be_bytes()[4..]);
    }
    v.truncate(100);
    v
}

struct Job<E: Engine> {
    backend: KeyedStateBackend<u64, E>,
    state: ValueState<u64, Vec<u8>>,
    store: Arc<CheckpointStore>,
    storage: Arc<dyn CheckpointStorage>,
    next_id: u64,
    round: u64,
}

impl<E: Engine> Job<E> {
    fn new(engine: E, storage: Arc<dyn CheckpointStorage>) -> Self {
        let backend = KeyedStateBackend::new(engine);
        let state = backend
            .value_state(&ValueStateDescriptor::<Vec<u8>>::new("values"))
            .expect("register");
        for k in 0..keys() {
            state
                .update(&backend.key(k).expect("key"), &(), value(k, 0))
                .expect("update");
        }
        let store = Arc::new(CheckpointStore::open(storage.clone(), 1).expect("store").0);
        let mut job = Job {
            backend,
            state,
            store,
            storage,
            next_id: 1,
            round: 0,
        };
        job.checkpoint();
        job
    }

    fn churn(&mut self) {
        self.round += 1;
        let n = keys();
        for i in 0..n / 10 {
            let k = (i * 10 + self.round) % n;
            self.state
                .update(
                    &self.backend.key(k).expect("key"),
                    &(),
                    value(k, self.round),
                )
                .expect("update");
        }
    }

    /// One checkpoint; returns the bytes it uploaded and the time it took.
    fn checkpoint(&mut self) -> (u64, Duration) {
        let started = Instant::now();
        let m = self
            .backend
            .checkpoint(&self.store, self.next_id, &[])
            .expect("checkpoint")
            .wait()
            .expect("completed");
        self.next_id += 1;
        (m.uploaded_bytes, started.elapsed())
    }

    fn latest(&self) -> RestoreSource {
        RestoreSource {
            storage: self.storage.clone(),
            manifest: self.store.latest().expect("a checkpoint"),
        }
    }
}

fn config() -> EngineConfig {
    EngineConfig::new(M).expect("config")
}

fn s3(name: &str) -> Arc<dyn CheckpointStorage> {
    let server = s3_server::server();
    let url = format!(
        "s3://{}/bench-{name}-{}",
        s3_server::BUCKET,
        std::process::id()
    );
    Arc::new(ObjectStorage::open(&url, s3_server::options(server.port)).expect("s3 storage"))
}

fn local(dir: &Path, name: &str) -> Arc<dyn CheckpointStorage> {
    Arc::new(LocalStorage::new(dir.join(name)).expect("local storage"))
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let rocks = |name: &str, storage| {
        let engine =
            RocksDbEngine::open(dir.path().join(name), config(), RocksDbOptions::default())
                .expect("open");
        Job::new(engine, storage)
    };
    let mut rocks_local = rocks("db-local", local(dir.path(), "chk-rocks"));
    let mut rocks_s3 = rocks("db-s3", s3("rocks"));
    let mut heap_local = Job::new(HeapEngine::new(config()), local(dir.path(), "chk-heap"));
    let mut heap_s3 = Job::new(HeapEngine::new(config()), s3("heap"));

    let mut g = c.benchmark_group("remote_checkpoint");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    macro_rules! checkpoint_fn {
        ($name:literal, $job:ident) => {{
            // Bytes per checkpoint, measured once, for the throughput figure.
            $job.churn();
            let (bytes, _) = $job.checkpoint();
            eprintln!("{}: {} bytes per checkpoint", $name, bytes);
            g.throughput(Throughput::Bytes(bytes));
            g.bench_function($name, |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        $job.churn(); // not timed
                        total += $job.checkpoint().1;
                    }
                    total
                })
            });
        }};
    }
    checkpoint_fn!("rocksdb_incremental_local", rocks_local);
    checkpoint_fn!("rocksdb_incremental_s3", rocks_s3);
    checkpoint_fn!("heap_full_local", heap_local);
    checkpoint_fn!("heap_full_s3", heap_s3);
    g.finish();

    let mut g = c.benchmark_group("remote_restore");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    let mut n = 0u64;
    for (name, source, rocksdb) in [
        ("rocksdb_incremental_local", rocks_local.latest(), true),
        ("rocksdb_incremental_s3", rocks_s3.latest(), true),
        ("heap_full_local", heap_local.latest(), false),
        ("heap_full_s3", heap_s3.latest(), false),
    ] {
        g.throughput(Throughput::Bytes(source.manifest.full_size()));
        g.bench_function(name, |b| {
            b.iter(|| {
                n += 1;
                if rocksdb {
                    let target = dir.path().join(format!("restore-{n}"));
                    let e = RocksDbEngine::restore(
                        &target,
                        config(),
                        RocksDbOptions::default(),
                        std::slice::from_ref(&source),
                    )
                    .expect("restore");
                    drop(e);
                    let _ = std::fs::remove_dir_all(target);
                } else {
                    let e = HeapEngine::restore(config(), std::slice::from_ref(&source))
                        .expect("restore");
                    // Registration decodes the parked records: part of a restore.
                    let b = KeyedStateBackend::<u64, _>::new(e);
                    b.value_state(&ValueStateDescriptor::<Vec<u8>>::new("values"))
                        .expect("register");
                }
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
