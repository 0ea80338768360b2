//! Checkpoint and restore benchmarks (issue 4).
//!
//! State: `KS_BENCH_KEYS` keys (default 8,000,000) of a `ValueState<u64, Vec<u8>>` with
//! 100-byte values: ~0.9 GB of user data (1 GB-scale), on each engine. Group `checkpoint`
//! times one checkpoint after 1 % or 10 % of the keys were updated (the updates are not
//! timed), for `rocksdb_incremental`, `rocksdb_full` and `heap_full`, and prints the bytes
//! each uploaded. Group `restore` times a restore of the latest checkpoint of each mode and
//! `raw_copy`, a `std::fs::copy` of the RocksDB full checkpoint's files, in the same run.
//! RocksDB restores hard-link SSTs out of a local checkpoint directory (and read them for the
//! checksum); `rocksdb_full_no_links` restores the same checkpoint copying every file.
//! Checkpoints go to a local directory ([`LocalStorage`]).
//!
//! Group `rescale_restore` (issue 16): `KS_RESCALE_KEYS` keys (default 1,000,000) of the same
//! state, checkpointed by one instance holding every key group and by two instances holding
//! half each; then the restore time of `plain` (one checkpoint into the same range), `1_to_2`
//! (one instance of two, from the single checkpoint) and `2_to_1` (one instance from both
//! checkpoints), on each engine (`rocksdb_*`, `heap_*`), beside `raw_link`, hard-linking the
//! single checkpoint's files (the floor of a RocksDB restore from a local directory).
//!
//! State is loaded only for the benchmarks a filter selects (a plain substring of the ids, as
//! criterion matches it), so `cargo bench --features rocksdb --bench checkpoint --
//! rescale_restore` does not load the 8,000,000 keys of the other two groups.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use keyed_state::SnapshotMode;
use keyed_state::backend::rocksdb::{RocksDbEngine, RocksDbOptions};
use keyed_state::checkpoint::{CheckpointStore, LocalStorage, Manifest, RestoreSource};
use keyed_state::key_group::{KeyGroupRange, range_for_operator};
use keyed_state::state::{ValueState, ValueStateDescriptor};
use keyed_state::{Engine, EngineConfig, HeapEngine, KeyedStateBackend};

const VALUE_BYTES: usize = 100;

fn keys() -> u64 {
    std::env::var("KS_BENCH_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8_000_000)
}

/// A value that compresses like typical state (a counter-ish prefix, then varied bytes).
fn value(k: u64, round: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(VALUE_BYTES);
    let mut x = k.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ round;
    while v.len() < VALUE_BYTES {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&(x % 1000).to_be_bytes()[4..]);
    }
    v.truncate(VALUE_BYTES);
    v
}

struct Job<E: Engine> {
    backend: KeyedStateBackend<u64, E>,
    state: ValueState<u64, Vec<u8>>,
    store: Arc<CheckpointStore>,
    next_id: u64,
    round: u64,
    mode: SnapshotMode,
}

impl<E: Engine> Job<E> {
    fn new(engine: E, root: &Path, mode: SnapshotMode) -> Self {
        let backend = KeyedStateBackend::new(engine);
        let state = backend
            .value_state(&ValueStateDescriptor::<Vec<u8>>::new("values"))
            .expect("register");
        let storage = Arc::new(LocalStorage::new(root).expect("storage"));
        let store = Arc::new(CheckpointStore::open(storage, 1).expect("store").0);
        let n = keys();
        for k in 0..n {
            let key = backend.key(k).expect("key");
            state.update(&key, &(), value(k, 0)).expect("update");
        }
        let mut job = Job {
            backend,
            state,
            store,
            next_id: 1,
            round: 0,
            mode,
        };
        job.checkpoint(); // the base every measured checkpoint follows
        job
    }

    /// Updates `percent` % of the keys (spread over the key space).
    fn churn(&mut self, percent: u64) {
        self.round += 1;
        let n = keys();
        let step = 100 / percent;
        let offset = self.round % step;
        let mut k = offset;
        while k < n {
            let key = self.backend.key(k).expect("key");
            self.state
                .update(&key, &(), value(k, self.round))
                .expect("update");
            k += step;
        }
    }

    fn checkpoint(&mut self) -> Manifest {
        let id = self.next_id;
        self.next_id += 1;
        self.backend
            .snapshot_into(&self.store, id, &[], self.mode)
            .expect("checkpoint")
            .wait()
            .expect("checkpoint completes")
    }
}

fn settle(job: &Job<RocksDbEngine>) {
    job.backend.engine().settle().expect("settle");
}

fn rocks_engine(path: &Path) -> RocksDbEngine {
    RocksDbEngine::open(path, EngineConfig::default(), RocksDbOptions::default()).expect("open")
}

fn report(name: &str, percent: u64, m: &Manifest, new_sst_bytes: Option<u64>) {
    let ratio = new_sst_bytes
        .filter(|&b| b > 0)
        .map(|b| {
            format!(
                ", {:.2}x the {} new SST bytes",
                m.uploaded_bytes as f64 / b as f64,
                b
            )
        })
        .unwrap_or_default();
    eprintln!(
        "  {name} after {percent}% churn: uploaded {} of {} bytes{ratio}",
        m.uploaded_bytes,
        m.full_size()
    );
}

/// SST bytes in `m` that `prev` did not have.
fn new_sst_bytes(prev: &Manifest, m: &Manifest) -> u64 {
    m.files
        .iter()
        .filter(|f| {
            f.path.ends_with(".sst") && !prev.files.iter().any(|p| p.file_name() == f.file_name())
        })
        .map(|f| f.size)
        .sum()
}

/// Whether the command line's filter (its first argument that is not a flag) selects one of
/// `ids`, or there is none.
fn selected(ids: &[&str]) -> bool {
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    filter.is_none_or(|f| ids.iter().any(|id| id.contains(f.as_str())))
}

fn benches(c: &mut Criterion) {
    if !selected(&[
        "checkpoint/rocksdb_incremental/churn_1pct",
        "checkpoint/rocksdb_incremental/churn_10pct",
        "checkpoint/rocksdb_full/churn_1pct",
        "checkpoint/rocksdb_full/churn_10pct",
        "checkpoint/heap_full/churn_1pct",
        "checkpoint/heap_full/churn_10pct",
        "restore/rocksdb_incremental",
        "restore/rocksdb_full",
        "restore/rocksdb_full_no_links",
        "restore/heap_full",
        "restore/raw_copy",
    ]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    eprintln!(
        "loading {} keys x {VALUE_BYTES} B into each engine...",
        keys()
    );
    let mut incremental = Job::new(
        rocks_engine(&dir.path().join("db-inc")),
        &dir.path().join("chk-inc"),
        SnapshotMode::Checkpoint,
    );
    let mut full = Job::new(
        rocks_engine(&dir.path().join("db-full")),
        &dir.path().join("chk-full"),
        SnapshotMode::Full,
    );
    let mut heap = Job::new(
        HeapEngine::new(EngineConfig::default()),
        &dir.path().join("chk-heap"),
        SnapshotMode::Checkpoint,
    );

    let mut g = c.benchmark_group("checkpoint");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_secs(20));
    for percent in [1u64, 10] {
        let id = |f: &str| BenchmarkId::new(f, format!("churn_{percent}pct"));
        g.bench_function(id("rocksdb_incremental"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let prev = incremental.store.latest().expect("base");
                    incremental.churn(percent);
                    settle(&incremental);
                    let t = Instant::now();
                    let m = incremental.checkpoint();
                    total += t.elapsed();
                    report(
                        "rocksdb_incremental",
                        percent,
                        &m,
                        Some(new_sst_bytes(&prev, &m)),
                    );
                }
                total
            })
        });
        g.bench_function(id("rocksdb_full"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    full.churn(percent);
                    settle(&full);
                    let t = Instant::now();
                    let m = full.checkpoint();
                    total += t.elapsed();
                    report("rocksdb_full", percent, &m, None);
                }
                total
            })
        });
        g.bench_function(id("heap_full"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    heap.churn(percent);
                    let t = Instant::now();
                    let m = heap.checkpoint();
                    total += t.elapsed();
                    report("heap_full", percent, &m, None);
                }
                total
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("restore");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_secs(20));
    let latest =
        |job_store: &Arc<CheckpointStore>| RestoreSource::latest(job_store).expect("latest");
    let full_latest = latest(&full.store);
    // The same full checkpoint read through a storage that copies SSTs instead of linking.
    let copying = RestoreSource {
        storage: Arc::new(
            LocalStorage::new(dir.path().join("chk-full"))
                .expect("storage")
                .with_hard_links(false),
        ),
        manifest: full_latest.manifest.clone(),
    };
    let sources = [
        ("rocksdb_incremental", latest(&incremental.store)),
        ("rocksdb_full", full_latest),
        ("rocksdb_full_no_links", copying),
        ("heap_full", latest(&heap.store)),
    ];
    let scratch = dir.path().join("restore");
    for (name, source) in &sources {
        eprintln!("  {name}: restoring {} bytes", source.manifest.full_size());
        g.throughput(Throughput::Bytes(source.manifest.full_size()));
        g.bench_function(*name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let _ = std::fs::remove_dir_all(&scratch);
                    let t = Instant::now();
                    if *name == "heap_full" {
                        let engine = HeapEngine::restore(
                            EngineConfig::default(),
                            std::slice::from_ref(source),
                        )
                        .expect("restore");
                        let backend = KeyedStateBackend::<u64, _>::new(engine);
                        // Registration decodes the restored records into the tables.
                        black_box(
                            backend
                                .value_state(&ValueStateDescriptor::<Vec<u8>>::new("values"))
                                .expect("register"),
                        );
                        total += t.elapsed();
                        drop(backend);
                    } else {
                        let engine = RocksDbEngine::restore(
                            &scratch,
                            EngineConfig::default(),
                            RocksDbOptions::default(),
                            std::slice::from_ref(source),
                        )
                        .expect("restore");
                        total += t.elapsed();
                        drop(engine);
                    }
                }
                total
            })
        });
    }
    // The baseline: copy the RocksDB full checkpoint's files with std::fs.
    let full_source = &sources[1].1;
    let root = dir.path().join("chk-full");
    g.throughput(Throughput::Bytes(full_source.manifest.full_size()));
    g.bench_function("raw_copy", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let _ = std::fs::remove_dir_all(&scratch);
                let t = Instant::now();
                std::fs::create_dir_all(&scratch).expect("dir");
                for f in &full_source.manifest.files {
                    std::fs::copy(root.join(&f.path), scratch.join(f.file_name())).expect("copy");
                }
                total += t.elapsed();
            }
            total
        })
    });
    g.finish();
}

fn rescale_keys() -> u64 {
    std::env::var("KS_RESCALE_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

/// Checkpoints of the same `rescale_keys()` keys: `one` by an instance holding every key group,
/// `two` by two instances holding half each.
struct RescaleSources {
    one: RestoreSource,
    two: Vec<RestoreSource>,
}

fn rescale_sources<E: Engine>(
    root: &Path,
    fresh: &mut dyn FnMut(EngineConfig) -> E,
) -> RescaleSources {
    let m = EngineConfig::default().max_parallelism();
    let mut checkpoint = |name: &str, range: KeyGroupRange| {
        let config = EngineConfig::default()
            .with_key_group_range(range)
            .expect("range");
        let backend = KeyedStateBackend::<u64, _>::new(fresh(config));
        let state = backend
            .value_state(&ValueStateDescriptor::<Vec<u8>>::new("values"))
            .expect("register");
        for k in 0..rescale_keys() {
            if let Ok(key) = backend.key(k) {
                state.update(&key, &(), value(k, 0)).expect("update");
            }
        }
        let storage = Arc::new(LocalStorage::new(root.join(name)).expect("storage"));
        let store = Arc::new(CheckpointStore::open(storage, 1).expect("store").0);
        backend
            .snapshot_into(&store, 1, &[], SnapshotMode::Checkpoint)
            .expect("checkpoint")
            .wait()
            .expect("checkpoint completes");
        RestoreSource::latest(&store).expect("latest")
    };
    RescaleSources {
        one: checkpoint("one", KeyGroupRange::all(m).expect("range")),
        two: (0..2)
            .map(|i| {
                checkpoint(
                    &format!("two-{i}"),
                    range_for_operator(m, 2, i).expect("range"),
                )
            })
            .collect(),
    }
}

fn rescale_restore(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let scratch = dir.path().join("restore");
    let m = EngineConfig::default().max_parallelism();
    let all = KeyGroupRange::all(m).expect("range");
    let half = |i| range_for_operator(m, 2, i).expect("range");
    // Loaded on first use (criterion calls a benchmark only when the filter selects it).
    let mut rocks: Option<RescaleSources> = None;
    let mut heap: Option<RescaleSources> = None;
    let rocks_dir = dir.path().join("rocks");
    let heap_dir = dir.path().join("heap");
    let mut rocks_sources = || -> RescaleSources {
        eprintln!(
            "loading {} keys x {VALUE_BYTES} B into RocksDB (1 and 2 instances)...",
            rescale_keys()
        );
        let mut n = 0;
        rescale_sources(&rocks_dir, &mut |config| {
            n += 1;
            RocksDbEngine::open(
                rocks_dir.join(format!("db-{n}")),
                config,
                RocksDbOptions::default(),
            )
            .expect("open")
        })
    };
    let heap_sources = || -> RescaleSources {
        eprintln!(
            "loading {} keys x {VALUE_BYTES} B into the heap (1 and 2 instances)...",
            rescale_keys()
        );
        rescale_sources(&heap_dir, &mut HeapEngine::new)
    };

    let mut g = c.benchmark_group("rescale_restore");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_secs(10));
    // (function, sources: one or two, target range of the timed instance)
    type Case = (&'static str, bool, usize);
    let cases: [Case; 3] = [
        ("plain", false, 2),
        ("1_to_2", false, 0),
        ("2_to_1", true, 2),
    ];
    for (case, from_two, target) in cases {
        g.bench_function(format!("rocksdb_{case}"), |b| {
            let s = rocks.get_or_insert_with(&mut rocks_sources);
            let sources = if from_two {
                s.two.clone()
            } else {
                vec![s.one.clone()]
            };
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for i in 0..iters {
                    // 1 -> 2: instances 0 and 1 in turn (each restores half).
                    let range = if target == 2 {
                        all
                    } else {
                        half(u32::try_from(i % 2).unwrap_or(0))
                    };
                    let config = EngineConfig::default()
                        .with_key_group_range(range)
                        .expect("range");
                    let _ = std::fs::remove_dir_all(&scratch);
                    let t = Instant::now();
                    let engine = RocksDbEngine::restore(
                        &scratch,
                        config,
                        RocksDbOptions::default(),
                        &sources,
                    )
                    .expect("restore");
                    total += t.elapsed();
                    drop(black_box(engine));
                }
                total
            })
        });
        g.bench_function(format!("heap_{case}"), |b| {
            let s = heap.get_or_insert_with(heap_sources);
            let sources = if from_two {
                s.two.clone()
            } else {
                vec![s.one.clone()]
            };
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for i in 0..iters {
                    let range = if target == 2 {
                        all
                    } else {
                        half(u32::try_from(i % 2).unwrap_or(0))
                    };
                    let config = EngineConfig::default()
                        .with_key_group_range(range)
                        .expect("range");
                    let t = Instant::now();
                    let backend = KeyedStateBackend::<u64, _>::new(
                        HeapEngine::restore(config, &sources).expect("restore"),
                    );
                    // Registration decodes the restored records into the tables.
                    black_box(
                        backend
                            .value_state(&ValueStateDescriptor::<Vec<u8>>::new("values"))
                            .expect("register"),
                    );
                    total += t.elapsed();
                    drop(backend);
                }
                total
            })
        });
    }
    // The floor: hard-link the single checkpoint's files into an empty directory.
    g.bench_function("raw_link", |b| {
        let s = rocks.get_or_insert_with(&mut rocks_sources);
        let root = rocks_dir.join("one");
        let files = s.one.manifest.files.clone();
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let _ = std::fs::remove_dir_all(&scratch);
                let t = Instant::now();
                std::fs::create_dir_all(&scratch).expect("dir");
                for f in &files {
                    std::fs::hard_link(root.join(&f.path), scratch.join(f.file_name()))
                        .expect("link");
                }
                total += t.elapsed();
            }
            total
        })
    });
    g.finish();
}

criterion_group!(checkpoint, benches, rescale_restore);
criterion_main!(checkpoint);
