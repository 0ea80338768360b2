//! Per-operation cost of the heap engine against a raw `std::collections::HashMap` doing the
//! equivalent work, in the same criterion group so the ratio is what we quote.
//!
//! Setup for every group: 1,000,000 `u64` keys drawn with a fixed seed, 8-byte (`u64`) values,
//! lists and maps of 10 elements. Accesses visit the keys in a fixed random order. The `heap`
//! functions resolve the key per operation (serialize, key-group hash, in-memory hash), as a
//! record does; `raw_hashmap` uses the same hasher as the engine (foldhash, fixed seed), not
//! SipHash, so the ratio measures the engine's overhead, not a hasher choice.
//!
//! Every group also runs `rocksdb` (the RocksDB engine) and `raw_rocksdb` (the `rocksdb` crate
//! directly, same options, keys of the same length) when the `rocksdb` feature is on.
//!
//! `value_get` and `value_update` also run `heap_prepared_key`: the same access with keys
//! resolved beforehand (untimed), as when one record's key serves several views. `value_get`
//! also runs `raw_hashmap_dependent`: raw lookups chained so that no two cache misses overlap.
//! With 1M keys every lookup misses the cache; a tight loop of independent raw lookups keeps
//! several misses in flight, which no state-access path of a few hundred instructions can, so
//! the dependent variant shows what one miss costs on its own (see DESIGN.md, "Performance").

use std::collections::HashMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{
    BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main, measurement::WallTime,
};
use foldhash::fast::FixedState;
use keyed_state::state::{ListStateDescriptor, MapStateDescriptor, ValueStateDescriptor};
use keyed_state::{HeapEngine, KeyedStateBackend};

mod support;
use support::SplitMix;
#[cfg(feature = "rocksdb")]
use support::u64_at;

const KEYS: usize = 1_000_000;
const ELEMENTS: u64 = 10;
/// Operations per timed batch (one criterion "iteration").
const BATCH: usize = 1024;

type Raw<V> = HashMap<u64, V, FixedState>;

fn raw<V>() -> Raw<V> {
    HashMap::with_hasher(FixedState::with_seed(0x6b65_7965_642d_7374))
}

/// The keys, and the order in which the benchmarks visit them (a permutation).
struct Workload {
    keys: Vec<u64>,
    order: Vec<u64>,
}

fn workload() -> Workload {
    let mut rng = SplitMix(42);
    let keys: Vec<u64> = (0..KEYS).map(|_| rng.next()).collect();
    let mut order = keys.clone();
    for i in (1..order.len()).rev() {
        let j = rng.next() % (i as u64 + 1); // at most i: fits a usize
        order.swap(i, usize::try_from(j).expect("an index"));
    }
    Workload { keys, order }
}

/// Runs `op` over the next `BATCH` keys of the visiting order per iteration.
fn over_keys(order: &[u64], mut op: impl FnMut(u64)) -> impl FnMut() {
    let mut pos = 0usize;
    move || {
        for _ in 0..BATCH {
            op(order[pos]);
            pos += 1;
            if pos == order.len() {
                pos = 0;
            }
        }
    }
}

/// Times `iters` batches of `op` on keys resolved beforehand, untimed: the cost of a state
/// access alone, when a record's key is resolved once and shared by several views.
fn with_prepared_keys<E: keyed_state::Engine>(
    backend: &KeyedStateBackend<u64, E>,
    order: &[u64],
    mut op: impl FnMut(&keyed_state::Key<u64>),
) -> impl FnMut(u64) -> Duration {
    let mut pos = 0usize;
    let mut batch = Vec::with_capacity(BATCH);
    move |iters| {
        let mut total = Duration::ZERO;
        for _ in 0..iters {
            batch.clear();
            for _ in 0..BATCH {
                batch.push(backend.key(order[pos]).expect("key"));
                pos = (pos + 1) % order.len();
            }
            let start = Instant::now();
            batch.iter().for_each(&mut op);
            total += start.elapsed();
        }
        total
    }
}

/// The RocksDB side: the engine, and a raw `rocksdb` database with the same options (shared
/// 64 MiB HyperClock block cache holding the pinned index and filter blocks, 10-bit bloom
/// filter, LZ4, 64 MiB write buffers x2, no WAL, a concatenating merge operator) and keys of
/// the same length as the engine's.
#[cfg(feature = "rocksdb")]
mod rocks {
    use keyed_state::backend::rocksdb::{RocksDbEngine, RocksDbOptions};
    use keyed_state::{EngineConfig, KeyedStateBackend};
    use rocksdb::{
        BlockBasedOptions, Cache, ColumnFamilyDescriptor, DBCompressionType, Options, WriteOptions,
    };

    pub type Backend = KeyedStateBackend<u64, RocksDbEngine>;

    pub fn engine() -> Backend {
        let engine =
            RocksDbEngine::open_temporary(EngineConfig::default(), RocksDbOptions::default())
                .expect("open");
        KeyedStateBackend::new(engine)
    }

    pub struct Raw {
        pub db: rocksdb::DB,
        pub write: WriteOptions,
        _dir: tempfile::TempDir,
    }

    pub fn raw() -> Raw {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = Cache::new_hyper_clock_cache(64 << 20, 0);
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&cache);
        table.set_bloom_filter(10.0, false);
        table.set_cache_index_and_filter_blocks(true);
        table.set_unpartitioned_pinning_tier(rocksdb::BlockBasedTablePinningTier::All);
        let mut cf = Options::default();
        cf.set_block_based_table_factory(&table);
        cf.set_write_buffer_size(64 << 20);
        cf.set_max_write_buffer_number(2);
        cf.set_compression_type(DBCompressionType::Lz4);
        cf.set_merge_operator_associative("concat", |_k, existing, ops| {
            let mut out = existing.map(<[u8]>::to_vec).unwrap_or_default();
            for op in ops {
                out.extend_from_slice(op);
            }
            Some(out)
        });
        let mut db_opts = Options::default();
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        db_opts.set_max_background_jobs(2);
        let db = rocksdb::DB::open_cf_descriptors(
            &db_opts,
            dir.path(),
            [ColumnFamilyDescriptor::new("raw", cf)],
        )
        .expect("open raw");
        let mut write = WriteOptions::default();
        write.disable_wal(true);
        Raw {
            db,
            write,
            _dir: dir,
        }
    }

    /// Waits until both databases finished their background flushes and compactions, so that
    /// neither measurement pays for the other's (or the setup's) background work.
    pub fn settle(backend: &Backend, raw: &Raw) {
        backend.engine().settle().expect("settle engine");
        let mut opts = rocksdb::WaitForCompactOptions::default();
        opts.set_flush(true);
        raw.db.wait_for_compact(&opts).expect("settle raw");
    }

    /// A raw key as long as the engine's for a `u64` key: a group byte and 8 key bytes.
    pub fn key(k: u64) -> [u8; 9] {
        let mut out = [0u8; 9];
        out[0] = (k % 128) as u8;
        out[1..].copy_from_slice(&k.to_be_bytes());
        out
    }

    /// A raw map entry key: the key and 8 user-key bytes, as the engine lays out a `u64` map.
    pub fn entry_key(k: u64, user_key: u64) -> [u8; 17] {
        let mut out = [0u8; 17];
        out[..9].copy_from_slice(&key(k));
        out[9..].copy_from_slice(&user_key.to_be_bytes());
        out
    }

    /// The exclusive upper bound of a prefix scan (the prefix's first byte is below 0x80, so
    /// there always is one).
    pub fn successor(prefix: &[u8]) -> Vec<u8> {
        let mut bound = prefix.to_vec();
        while let Some(last) = bound.pop() {
            if last < 0xff {
                bound.push(last + 1);
                break;
            }
        }
        bound
    }

    /// A raw list element framed as the engine frames it: a length byte and 8 bytes.
    pub fn element(v: u64) -> [u8; 9] {
        let mut out = [8u8; 9];
        out[1..].copy_from_slice(&v.to_be_bytes());
        out
    }
}

fn group<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut g = c.benchmark_group(name);
    g.throughput(Throughput::Elements(BATCH as u64));
    g.sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    g
}

fn value_groups(c: &mut Criterion, w: &Workload) {
    let backend = KeyedStateBackend::<u64>::new(HeapEngine::default());
    let state = backend
        .value_state(&ValueStateDescriptor::<u64>::new("value"))
        .expect("register");
    let mut map = raw::<u64>();
    for &k in &w.keys {
        state
            .update(&backend.key(k).expect("key"), &(), k)
            .expect("update");
        map.insert(k, k);
    }
    #[cfg(feature = "rocksdb")]
    let (rbackend, rstate, rraw) = {
        let rb = rocks::engine();
        let rs = rb
            .value_state(&ValueStateDescriptor::<u64>::new("value"))
            .expect("register");
        let raw = rocks::raw();
        let cf = raw.db.cf_handle("raw").expect("cf");
        for &k in &w.keys {
            rs.update(&rb.key(k).expect("key"), &(), k).expect("update");
            raw.db
                .put_cf_opt(&cf, rocks::key(k), k.to_be_bytes(), &raw.write)
                .expect("put");
        }
        drop(cf);
        rocks::settle(&rb, &raw); // no background compaction during the heap measurements
        (rb, rs, raw)
    };

    let mut g = group(c, "value_get");
    g.bench_function("heap", |b| {
        let mut step = over_keys(&w.order, |k| {
            let key = backend.key(k).expect("key");
            black_box(state.get(&key, &()).expect("get"));
        });
        b.iter(&mut step)
    });
    g.bench_function("raw_hashmap", |b| {
        let mut step = over_keys(&w.order, |k| {
            black_box(map.get(&k).copied());
        });
        b.iter(&mut step)
    });
    // Each lookup's key depends on the previous result, so no two cache misses overlap: the
    // latency of one lookup, which is what a record paying one state access per miss sees.
    g.bench_function("raw_hashmap_dependent", |b| {
        let (mut prev, zero) = (0u64, black_box(0u64));
        let mut step = over_keys(&w.order, |k| {
            prev = map.get(&(k ^ (prev & zero))).copied().unwrap_or(0);
        });
        b.iter(&mut step)
    });
    g.bench_function("heap_prepared_key", |b| {
        b.iter_custom(with_prepared_keys(&backend, &w.order, |key| {
            black_box(state.get(key, &()).expect("get"));
        }))
    });
    #[cfg(feature = "rocksdb")]
    {
        rocks::settle(&rbackend, &rraw);
        g.bench_function("rocksdb", |b| {
            let mut step = over_keys(&w.order, |k| {
                black_box(
                    rstate
                        .get(&rbackend.key(k).expect("key"), &())
                        .expect("get"),
                );
            });
            b.iter(&mut step)
        });
        let cf = rraw.db.cf_handle("raw").expect("cf");
        rocks::settle(&rbackend, &rraw);
        g.bench_function("raw_rocksdb", |b| {
            let mut step = over_keys(&w.order, |k| {
                let v = rraw.db.get_pinned_cf(&cf, rocks::key(k)).expect("get");
                black_box(v.map(|v| u64_at(&v, 0)));
            });
            b.iter(&mut step)
        });
    }
    g.finish();

    let mut g = group(c, "value_update");
    g.bench_function("heap", |b| {
        let mut step = over_keys(&w.order, |k| {
            let key = backend.key(k).expect("key");
            state.update(&key, &(), k ^ 1).expect("update");
        });
        b.iter(&mut step)
    });
    g.bench_function("raw_hashmap", |b| {
        let mut step = over_keys(&w.order, |k| {
            map.insert(k, k ^ 1);
        });
        b.iter(&mut step)
    });
    g.bench_function("heap_prepared_key", |b| {
        b.iter_custom(with_prepared_keys(&backend, &w.order, |key| {
            state.update(key, &(), 7).expect("update");
        }))
    });
    #[cfg(feature = "rocksdb")]
    {
        rocks::settle(&rbackend, &rraw);
        g.bench_function("rocksdb", |b| {
            let mut step = over_keys(&w.order, |k| {
                rstate
                    .update(&rbackend.key(k).expect("key"), &(), k ^ 1)
                    .expect("update");
            });
            b.iter(&mut step)
        });
        let cf = rraw.db.cf_handle("raw").expect("cf");
        rocks::settle(&rbackend, &rraw);
        g.bench_function("raw_rocksdb", |b| {
            let mut step = over_keys(&w.order, |k| {
                rraw.db
                    .put_cf_opt(&cf, rocks::key(k), (k ^ 1).to_be_bytes(), &rraw.write)
                    .expect("put");
            });
            b.iter(&mut step)
        });
    }
    g.finish();
}

fn list_groups(c: &mut Criterion, w: &Workload) {
    let backend = KeyedStateBackend::<u64>::new(HeapEngine::default());
    let state = backend
        .list_state(&ListStateDescriptor::<u64>::new("list"))
        .expect("register");
    let mut map = raw::<Vec<u64>>();
    let reset_heap = |k: u64| {
        state
            .update(&backend.key(k).expect("key"), &(), 0..ELEMENTS)
            .expect("update")
    };
    for &k in &w.keys {
        reset_heap(k);
        map.insert(k, (0..ELEMENTS).collect());
    }
    #[cfg(feature = "rocksdb")]
    let (rbackend, rstate, rraw) = {
        let rb = rocks::engine();
        let rs = rb
            .list_state(&ListStateDescriptor::<u64>::new("list"))
            .expect("register");
        (rb, rs, rocks::raw())
    };
    #[cfg(feature = "rocksdb")]
    let raw_list: Vec<u8> = (0..ELEMENTS).flat_map(rocks::element).collect();
    #[cfg(feature = "rocksdb")]
    let reset_rocks = |k: u64| {
        rstate
            .update(&rbackend.key(k).expect("key"), &(), 0..ELEMENTS)
            .expect("update")
    };
    #[cfg(feature = "rocksdb")]
    let reset_raw = |k: u64| {
        let cf = rraw.db.cf_handle("raw").expect("cf");
        rraw.db
            .put_cf_opt(&cf, rocks::key(k), &raw_list, &rraw.write)
            .expect("put");
    };
    #[cfg(feature = "rocksdb")]
    for &k in &w.keys {
        reset_rocks(k);
        reset_raw(k);
    }
    #[cfg(feature = "rocksdb")]
    rocks::settle(&rbackend, &rraw); // no background compaction during the heap measurements

    let mut g = group(c, "list_get");
    g.bench_function("heap", |b| {
        let mut step = over_keys(&w.order, |k| {
            let key = backend.key(k).expect("key");
            black_box(state.get(&key, &()).expect("get").sum::<u64>());
        });
        b.iter(&mut step)
    });
    g.bench_function("raw_hashmap", |b| {
        let mut step = over_keys(&w.order, |k| {
            black_box(map.get(&k).map(|l| l.iter().sum::<u64>()));
        });
        b.iter(&mut step)
    });
    #[cfg(feature = "rocksdb")]
    {
        rocks::settle(&rbackend, &rraw);
        g.bench_function("rocksdb", |b| {
            let mut step = over_keys(&w.order, |k| {
                black_box(
                    rstate
                        .get(&rbackend.key(k).expect("key"), &())
                        .expect("get")
                        .sum::<u64>(),
                );
            });
            b.iter(&mut step)
        });
        let cf = rraw.db.cf_handle("raw").expect("cf");
        rocks::settle(&rbackend, &rraw);
        g.bench_function("raw_rocksdb", |b| {
            let mut step = over_keys(&w.order, |k| {
                let v = rraw.db.get_pinned_cf(&cf, rocks::key(k)).expect("get");
                black_box(v.map(|v| v.chunks_exact(9).map(|e| u64_at(e, 1)).sum::<u64>()));
            });
            b.iter(&mut step)
        });
    }
    g.finish();

    // Appends to lists of 10; after each full pass over the keys (one more element each) the
    // lists are cut back to 10 elements, untimed, so they stay the documented size.
    let mut g = group(c, "list_add");
    g.bench_function("heap", |b| {
        let mut pos = 0usize;
        b.iter_custom(|iters| {
            timed_passes(
                iters,
                &mut pos,
                w,
                |k| {
                    state
                        .add(&backend.key(k).expect("key"), &(), k)
                        .expect("add");
                },
                &reset_heap,
            )
        })
    });
    g.bench_function("raw_hashmap", |b| {
        let mut pos = 0usize;
        let map = std::cell::RefCell::new(&mut map);
        b.iter_custom(|iters| {
            timed_passes(
                iters,
                &mut pos,
                w,
                |k| {
                    map.borrow_mut().entry(k).or_default().push(k);
                },
                |k| {
                    map.borrow_mut().insert(k, (0..ELEMENTS).collect());
                },
            )
        })
    });
    #[cfg(feature = "rocksdb")]
    {
        rocks::settle(&rbackend, &rraw);
        g.bench_function("rocksdb", |b| {
            let mut pos = 0usize;
            b.iter_custom(|iters| {
                timed_passes(
                    iters,
                    &mut pos,
                    w,
                    |k| {
                        rstate
                            .add(&rbackend.key(k).expect("key"), &(), k)
                            .expect("add")
                    },
                    &reset_rocks,
                )
            })
        });
        rocks::settle(&rbackend, &rraw);
        g.bench_function("raw_rocksdb", |b| {
            let mut pos = 0usize;
            let cf = rraw.db.cf_handle("raw").expect("cf");
            b.iter_custom(|iters| {
                timed_passes(
                    iters,
                    &mut pos,
                    w,
                    |k| {
                        rraw.db
                            .merge_cf_opt(&cf, rocks::key(k), rocks::element(k), &rraw.write)
                            .expect("merge")
                    },
                    &reset_raw,
                )
            })
        });
    }
    g.finish();
}

/// Times `iters` batches of `op`, resetting (untimed) every key after each full pass.
fn timed_passes(
    iters: u64,
    pos: &mut usize,
    w: &Workload,
    mut op: impl FnMut(u64),
    mut reset: impl FnMut(u64),
) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let mut start = Instant::now();
        for _ in 0..BATCH {
            op(w.order[*pos]);
            *pos += 1;
            if *pos == w.order.len() {
                total += start.elapsed();
                w.order.iter().for_each(|&k| reset(k));
                *pos = 0;
                start = Instant::now();
            }
        }
        total += start.elapsed();
    }
    total
}

fn map_groups(c: &mut Criterion, w: &Workload) {
    let backend = KeyedStateBackend::<u64>::new(HeapEngine::default());
    let state = backend
        .map_state(&MapStateDescriptor::<u64, u64>::new("map"))
        .expect("register");
    let mut map = raw::<Raw<u64>>();
    for &k in &w.keys {
        state
            .put_all(
                &backend.key(k).expect("key"),
                &(),
                (0..ELEMENTS).map(|u| (u, k ^ u)),
            )
            .expect("put_all");
        let mut inner = raw();
        inner.extend((0..ELEMENTS).map(|u| (u, k ^ u)));
        map.insert(k, inner);
    }
    #[cfg(feature = "rocksdb")]
    let (rbackend, rstate, rraw) = {
        let rb = rocks::engine();
        let rs = rb
            .map_state(&MapStateDescriptor::<u64, u64>::new("map"))
            .expect("register");
        let raw = rocks::raw();
        let cf = raw.db.cf_handle("raw").expect("cf");
        for &k in &w.keys {
            rs.put_all(
                &rb.key(k).expect("key"),
                &(),
                (0..ELEMENTS).map(|u| (u, k ^ u)),
            )
            .expect("put_all");
            let mut batch = rocksdb::WriteBatch::default();
            for u in 0..ELEMENTS {
                batch.put_cf(&cf, rocks::entry_key(k, u), (k ^ u).to_be_bytes());
            }
            raw.db.write_opt(batch, &raw.write).expect("write");
        }
        drop(cf);
        rocks::settle(&rb, &raw); // no background compaction during the heap measurements
        (rb, rs, raw)
    };

    let mut g = group(c, "map_put");
    g.bench_function("heap", |b| {
        let mut step = over_keys(&w.order, |k| {
            state
                .put(&backend.key(k).expect("key"), &(), k % ELEMENTS, k)
                .expect("put");
        });
        b.iter(&mut step)
    });
    g.bench_function("raw_hashmap", |b| {
        let mut step = over_keys(&w.order, |k| {
            map.entry(k).or_insert_with(raw).insert(k % ELEMENTS, k);
        });
        b.iter(&mut step)
    });
    #[cfg(feature = "rocksdb")]
    {
        rocks::settle(&rbackend, &rraw);
        g.bench_function("rocksdb", |b| {
            let mut step = over_keys(&w.order, |k| {
                rstate
                    .put(&rbackend.key(k).expect("key"), &(), k % ELEMENTS, k)
                    .expect("put");
            });
            b.iter(&mut step)
        });
        let cf = rraw.db.cf_handle("raw").expect("cf");
        rocks::settle(&rbackend, &rraw);
        g.bench_function("raw_rocksdb", |b| {
            let mut step = over_keys(&w.order, |k| {
                let key = rocks::entry_key(k, k % ELEMENTS);
                rraw.db
                    .put_cf_opt(&cf, key, k.to_be_bytes(), &rraw.write)
                    .expect("put");
            });
            b.iter(&mut step)
        });
    }
    g.finish();

    let mut g = group(c, "map_get");
    g.bench_function("heap", |b| {
        let mut step = over_keys(&w.order, |k| {
            black_box(
                state
                    .get(&backend.key(k).expect("key"), &(), &(k % ELEMENTS))
                    .expect("get"),
            );
        });
        b.iter(&mut step)
    });
    g.bench_function("raw_hashmap", |b| {
        let mut step = over_keys(&w.order, |k| {
            black_box(map.get(&k).and_then(|m| m.get(&(k % ELEMENTS)).copied()));
        });
        b.iter(&mut step)
    });
    #[cfg(feature = "rocksdb")]
    {
        rocks::settle(&rbackend, &rraw);
        g.bench_function("rocksdb", |b| {
            let mut step = over_keys(&w.order, |k| {
                black_box(
                    rstate
                        .get(&rbackend.key(k).expect("key"), &(), &(k % ELEMENTS))
                        .expect("get"),
                );
            });
            b.iter(&mut step)
        });
        let cf = rraw.db.cf_handle("raw").expect("cf");
        rocks::settle(&rbackend, &rraw);
        g.bench_function("raw_rocksdb", |b| {
            let mut step = over_keys(&w.order, |k| {
                let v = rraw
                    .db
                    .get_pinned_cf(&cf, rocks::entry_key(k, k % ELEMENTS))
                    .expect("get");
                black_box(v.map(|v| u64_at(&v, 0)));
            });
            b.iter(&mut step)
        });
    }
    g.finish();

    let mut g = group(c, "map_iter");
    g.bench_function("heap", |b| {
        let mut step = over_keys(&w.order, |k| {
            let entries = state
                .entries(&backend.key(k).expect("key"), &())
                .expect("entries");
            black_box(entries.map(|(u, v)| u ^ v).sum::<u64>());
        });
        b.iter(&mut step)
    });
    g.bench_function("raw_hashmap", |b| {
        let mut step = over_keys(&w.order, |k| {
            black_box(
                map.get(&k)
                    .map(|m| m.iter().map(|(u, v)| u ^ v).sum::<u64>()),
            );
        });
        b.iter(&mut step)
    });
    #[cfg(feature = "rocksdb")]
    {
        rocks::settle(&rbackend, &rraw);
        g.bench_function("rocksdb", |b| {
            let mut step = over_keys(&w.order, |k| {
                let entries = rstate
                    .entries(&rbackend.key(k).expect("key"), &())
                    .expect("entries");
                black_box(entries.map(|(u, v)| u ^ v).sum::<u64>());
            });
            b.iter(&mut step)
        });
        let cf = rraw.db.cf_handle("raw").expect("cf");
        rocks::settle(&rbackend, &rraw);
        g.bench_function("raw_rocksdb", |b| {
            let mut step = over_keys(&w.order, |k| {
                let prefix = rocks::key(k);
                let mut read = rocksdb::ReadOptions::default();
                read.set_iterate_upper_bound(rocks::successor(&prefix));
                let iter = rraw.db.iterator_cf_opt(
                    &cf,
                    read,
                    rocksdb::IteratorMode::From(&prefix, rocksdb::Direction::Forward),
                );
                let sum: u64 = iter
                    .map(|item| {
                        let (key, value) = item.expect("iterate");
                        u64_at(&key, 9) ^ u64_at(&value, 0)
                    })
                    .sum();
                black_box(sum);
            });
            b.iter(&mut step)
        });
    }
    g.finish();
}

fn benches(c: &mut Criterion) {
    let w = workload();
    value_groups(c, &w);
    list_groups(c, &w);
    map_groups(c, &w);
}

criterion_group!(state_ops, benches);
criterion_main!(state_ops);
