//! The driver: runs the job on `p` instances with periodic checkpoints and seeded crashes,
//! restores the last completed checkpoint after each crash, replays the input from its offset,
//! and compares the committed output and the final state with the oracle's.

use std::collections::BTreeSet;
use std::hash::BuildHasher;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use super::generator::{Generator, Skew, SplitMix64};
use super::job::{Instance, Job};
use super::oracle::Oracle;
use crate::HeapEngine;
use crate::backend::rocksdb::{RocksDbEngine, RocksDbOptions};
use crate::backend::{EngineConfig, KeyedStateBackend};
use crate::checkpoint::{CheckpointStore, LocalStorage, RestoreSource};
use crate::clock::ManualClock;
use crate::error::{CheckpointError, Result};
use crate::key_group::{operator_for_key_group, range_for_operator};

/// The engine instances run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineKind {
    /// [`HeapEngine`].
    Heap,
    /// [`RocksDbEngine`].
    RocksDb,
}

impl EngineKind {
    /// `"heap"` or `"rocksdb"`.
    pub fn name(self) -> &'static str {
        match self {
            EngineKind::Heap => "heap",
            EngineKind::RocksDb => "rocksdb",
        }
    }
}

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The seed: input, crash points.
    pub seed: u64,
    /// Events in the input.
    pub events: u64,
    /// Distinct users.
    pub keys: u64,
    /// Key distribution.
    pub skew: Skew,
    /// The engine.
    pub engine: EngineKind,
    /// Instances.
    pub parallelism: u32,
    /// Key groups.
    pub max_parallelism: u32,
    /// Events between checkpoints.
    pub checkpoint_every: u64,
    /// Crashes at seeded points of the input.
    pub crashes: u32,
    /// Rescale to this many instances at the first checkpoint past half the input.
    pub rescale_to: Option<u32>,
    /// Where checkpoints (and RocksDB databases) go; a temporary directory when `None`.
    pub dir: Option<PathBuf>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 1,
            events: 200_000,
            keys: 10_000,
            skew: Skew::Uniform,
            engine: EngineKind::Heap,
            parallelism: 2,
            max_parallelism: 128,
            checkpoint_every: 20_000,
            crashes: 3,
            rescale_to: None,
            dir: None,
        }
    }
}

/// What a run did and found.
#[derive(Debug, Clone, Default)]
pub struct SimReport {
    /// The seed.
    pub seed: u64,
    /// The engine's name.
    pub engine: &'static str,
    /// Events in the input.
    pub events: u64,
    /// Events processed, replays included.
    pub processed: u64,
    /// Checkpoints completed (per job, not per instance).
    pub checkpoints: u64,
    /// Crashes.
    pub crashes: u64,
    /// Restores from a checkpoint.
    pub restores: u64,
    /// Rescalings.
    pub rescales: u64,
    /// Bytes uploaded by all checkpoints.
    pub bytes_checkpointed: u64,
    /// Committed outputs.
    pub outputs: u64,
    /// Every difference from the oracle (empty: the run is correct).
    pub divergences: Vec<String>,
    /// A digest of the final state (equal across engines for the same flags).
    pub state_digest: u64,
    /// A digest of the committed output.
    pub output_digest: u64,
    /// Wall time.
    pub elapsed_s: f64,
}

/// Watermarks advance every this many events.
const WATERMARK_EVERY: u64 = 100;
/// Mean event-time gap between events, ms.
const EVENT_GAP_MS: u64 = 1_000;
/// Bounded disorder of event time, ms.
const DISORDER_MS: u64 = 60_000;
/// Processing time advances this much per input position (a pure function of the position,
/// so a replay sees the same times): a 24-hour TTL spans 2,880 events.
const PROCESSING_MS_PER_EVENT: u64 = 30_000;

fn digest<'a>(lines: impl IntoIterator<Item = &'a String>) -> u64 {
    let state = foldhash::fast::FixedState::with_seed(0x5eed);
    lines
        .into_iter()
        .fold(0u64, |acc, l| acc.rotate_left(5) ^ state.hash_one(l))
}

/// The processing time at input position `i`.
fn processing_time(i: u64) -> u64 {
    i * PROCESSING_MS_PER_EVENT
}

struct Running {
    instances: Vec<Box<dyn Instance>>,
    stores: Vec<Arc<CheckpointStore>>,
}

/// Runs one simulation (see the module documentation).
pub fn run(cfg: &SimConfig) -> Result<SimReport> {
    run_with_progress(cfg, &mut |_| {})
}

/// Like [`run`], calling `progress` with the input position every 1,000 events processed
/// (replays included).
pub fn run_with_progress(cfg: &SimConfig, progress: &mut dyn FnMut(u64)) -> Result<SimReport> {
    let started = Instant::now();
    let temp = match &cfg.dir {
        Some(_) => None,
        None => Some(
            tempfile::Builder::new()
                .prefix("keyed-state-sim-")
                .tempdir()?,
        ),
    };
    let root = cfg
        .dir
        .clone()
        .or_else(|| temp.as_ref().map(|t| t.path().to_path_buf()))
        .unwrap_or_default();
    let stream = Generator::new(cfg.seed, cfg.keys, cfg.skew, EVENT_GAP_MS, DISORDER_MS);
    let p = cfg.parallelism.max(1);
    let m = cfg.max_parallelism;
    let every = cfg.checkpoint_every.max(1);

    // Crash points: distinct event positions, drawn from the seed.
    let mut rng = SplitMix64::new(cfg.seed ^ 0xc4a5_4e5f);
    let mut crash_points: BTreeSet<u64> = BTreeSet::new();
    while (crash_points.len() as u32) < cfg.crashes.min(cfg.events.saturating_sub(1) as u32) {
        crash_points.insert(1 + rng.below(cfg.events - 1));
    }

    let mut report = SimReport {
        seed: cfg.seed,
        engine: cfg.engine.name(),
        events: cfg.events,
        ..SimReport::default()
    };
    let mut generation = 0u64;
    let mut p = p;
    let mut rescale_to = cfg.rescale_to.filter(|&q| q >= 1 && q != p);
    let clock = ManualClock::new(0);
    let mut running = start(cfg, &root, p, m, &clock, generation, None)?;
    let (mut i, mut max_ts, mut next_id) = (0u64, 0u64, 1u64);
    let mut committed: Vec<String> = Vec::new();
    let mut pending: Vec<String> = Vec::new();
    while i < cfg.events {
        if crash_points.remove(&i) {
            // A crash: the instances are gone without shutdown, uncommitted output too.
            report.crashes += 1;
            drop(running);
            pending.clear();
            // The crashed instances' local databases are disposable working copies.
            for k in 0..p {
                let _ = std::fs::remove_dir_all(root.join(format!("db-{k}-gen-{generation}")));
            }
            generation += 1;
            let restored = latest_complete(&root, p)?;
            // Processing time goes back to the restored position before any engine opens:
            // RocksDB's TTL compaction filter reads the clock from background threads, and
            // must not expire elements at a time the replay has not reached yet.
            clock.set(processing_time(restored.map_or(0, |(_, offset, _)| offset)));
            running = start(
                cfg,
                &root,
                p,
                m,
                &clock,
                generation,
                restored.map(|(id, _, _)| (id, p)),
            )?;
            match restored {
                Some((id, offset, ts)) => {
                    report.restores += 1;
                    (i, max_ts, next_id) = (offset, ts, id + 1);
                }
                None => (i, max_ts, next_id) = (0, 0, 1),
            }
            tracing::debug!(seed = cfg.seed, at = i, "recovered");
            continue;
        }
        let e = stream.event(i);
        clock.set(processing_time(i));
        let group = crate::key_group::key_group_for_bytes(&e.user.to_be_bytes(), m);
        let owner = operator_for_key_group(m, p, group) as usize;
        running.instances[owner].process(&e, &mut pending)?;
        report.processed += 1;
        if report.processed.is_multiple_of(1000) {
            progress(i);
        }
        max_ts = max_ts.max(e.ts);
        i += 1;
        if i % WATERMARK_EVERY == 0 || i == cfg.events {
            let wm = max_ts.saturating_sub(stream.disorder_ms());
            for inst in &running.instances {
                inst.advance(wm, &mut pending)?;
            }
        }
        if i % every == 0 || i == cfg.events {
            for (inst, store) in running.instances.iter().zip(&running.stores) {
                let manifest =
                    inst.checkpoint(store, next_id, &[("input", i), ("max_ts", max_ts)])?;
                report.bytes_checkpointed += manifest.uploaded_bytes;
            }
            // Every instance completed: the checkpoint's output is committed.
            committed.append(&mut pending);
            report.checkpoints += 1;
            next_id += 1;
            // Rescaling at the first checkpoint past half the input: stop all p instances,
            // start q from the p manifests, and checkpoint the new layout at once.
            if let Some(q) = rescale_to.filter(|_| i >= cfg.events / 2 && i < cfg.events) {
                rescale_to = None;
                drop(running);
                for k in 0..p {
                    let _ = std::fs::remove_dir_all(root.join(format!("db-{k}-gen-{generation}")));
                }
                generation += 1;
                running = start(cfg, &root, q, m, &clock, generation, Some((next_id - 1, p)))?;
                p = q;
                report.rescales += 1;
                for (inst, store) in running.instances.iter().zip(&running.stores) {
                    let manifest =
                        inst.checkpoint(store, next_id, &[("input", i), ("max_ts", max_ts)])?;
                    report.bytes_checkpointed += manifest.uploaded_bytes;
                }
                report.checkpoints += 1;
                next_id += 1;
            }
        }
    }

    // The oracle, fault-free.
    let mut oracle = Oracle::default();
    let mut expected_out = Vec::new();
    let mut oracle_max = 0;
    for j in 0..cfg.events {
        let e = stream.event(j);
        oracle.process(&e, processing_time(j), &mut expected_out);
        oracle_max = oracle_max.max(e.ts);
        if (j + 1) % WATERMARK_EVERY == 0 || j + 1 == cfg.events {
            oracle.advance(
                oracle_max.saturating_sub(stream.disorder_ms()),
                &mut expected_out,
            );
        }
    }
    let now = processing_time(cfg.events);
    clock.set(now);
    let mut state = BTreeSet::new();
    for inst in &running.instances {
        state.extend(inst.dump()?);
    }
    let expected_state = oracle.dump(now);
    compare("state", &expected_state, &state, &mut report.divergences);
    let mut got_out = committed.clone();
    got_out.sort();
    expected_out.sort();
    if got_out != expected_out {
        // Lines whose number of occurrences differ (missing, unexpected or repeated).
        let mut counts: std::collections::BTreeMap<&str, (u64, u64)> = Default::default();
        for l in &expected_out {
            counts.entry(l).or_default().0 += 1;
        }
        for l in &got_out {
            counts.entry(l).or_default().1 += 1;
        }
        for (line, (want, got)) in counts.into_iter().filter(|(_, (a, b))| a != b).take(10) {
            report.divergences.push(format!(
                "output: `{line}` committed {got} time(s), the oracle emits it {want} time(s)"
            ));
        }
    }
    report.outputs = committed.len() as u64;
    report.state_digest = digest(&state);
    report.output_digest = digest(&got_out);
    report.elapsed_s = started.elapsed().as_secs_f64();
    drop(running);
    Ok(report)
}

fn compare(what: &str, expected: &BTreeSet<String>, got: &BTreeSet<String>, out: &mut Vec<String>) {
    for line in expected.difference(got).take(5) {
        out.push(format!("{what}: missing `{line}`"));
    }
    for line in got.difference(expected).take(5) {
        out.push(format!("{what}: unexpected `{line}`"));
    }
}

/// The latest checkpoint every instance completed: `(id, input offset, max event time)`.
fn latest_complete(root: &std::path::Path, p: u32) -> Result<Option<(u64, u64, u64)>> {
    let mut common: Option<BTreeSet<u64>> = None;
    let mut manifests = Vec::new();
    for i in 0..p {
        let storage = Arc::new(LocalStorage::new(root.join(format!("instance-{i}")))?);
        let (store, _) = CheckpointStore::open(storage, 2)?;
        let ids: BTreeSet<u64> = store.retained().iter().map(|m| m.checkpoint_id).collect();
        common = Some(match common {
            None => ids,
            Some(c) => c.intersection(&ids).copied().collect(),
        });
        manifests.push(store.retained());
    }
    let Some(id) = common.and_then(|c| c.last().copied()) else {
        return Ok(None);
    };
    let m = manifests[0]
        .iter()
        .find(|m| m.checkpoint_id == id)
        .ok_or_else(|| CheckpointError::NoCheckpoint(format!("checkpoint {id}")))?;
    Ok(Some((
        id,
        m.offset("input").unwrap_or(0),
        m.offset("max_ts").unwrap_or(0),
    )))
}

/// Starts `p` instances, restored from checkpoint `restored` (its id) if given.
fn start(
    cfg: &SimConfig,
    root: &std::path::Path,
    p: u32,
    m: u32,
    clock: &ManualClock,
    generation: u64,
    restored: Option<(u64, u32)>,
) -> Result<Running> {
    let open = |i: u32| -> Result<(Arc<LocalStorage>, CheckpointStore)> {
        let storage = Arc::new(LocalStorage::new(root.join(format!("instance-{i}")))?);
        let (store, _) = CheckpointStore::open(storage.clone(), 2)?;
        Ok((storage, store))
    };
    // Restore sources: checkpoint `id` of each of the `from` instances that took it (`from`
    // differs from `p` when rescaling).
    let mut sources = Vec::new();
    if let Some((id, from)) = restored {
        for i in 0..from {
            let (storage, store) = open(i)?;
            let manifest = store
                .get(id)
                .ok_or_else(|| CheckpointError::NoCheckpoint(format!("checkpoint {id}")))?;
            sources.push(RestoreSource { storage, manifest });
        }
    }
    let stores = (0..p)
        .map(|i| open(i).map(|(_, store)| Arc::new(store)))
        .collect::<Result<Vec<_>>>()?;
    let mut instances: Vec<Box<dyn Instance>> = Vec::new();
    for i in 0..p {
        let config = EngineConfig::new(m)?
            .with_key_group_range(range_for_operator(m, p, i)?)?
            .with_clock(clock.shared());
        match cfg.engine {
            EngineKind::Heap => {
                let engine = if restored.is_some() {
                    HeapEngine::restore(config, &sources)?
                } else {
                    HeapEngine::new(config)
                };
                let backend = KeyedStateBackend::new(engine);
                if restored.is_some() {
                    backend.restore_timers(&sources)?;
                }
                instances.push(Box::new(Job::new(backend)?));
            }
            EngineKind::RocksDb => {
                let path = root.join(format!("db-{i}-gen-{generation}"));
                let options = RocksDbOptions::default();
                let engine = if restored.is_some() {
                    RocksDbEngine::restore(&path, config, options, &sources)?
                } else {
                    RocksDbEngine::open(&path, config, options)?
                };
                let backend = KeyedStateBackend::new(engine);
                if restored.is_some() {
                    backend.restore_timers(&sources)?;
                }
                instances.push(Box::new(Job::new(backend)?));
            }
        }
    }
    Ok(Running { instances, stores })
}
