//! The driver: runs the job on `p` instances with periodic job-wide checkpoints, injects the
//! seeded faults (crashes between records, during a checkpoint and during a restore; transient
//! storage failures; torn writes), recovers from the last checkpoint the whole job completed,
//! replays the input from its offset, rescales, and compares the restored state after every
//! recovery, and the committed output and the final state at the end, with the oracle's.
//!
//! Storage layout under the run's directory: `job/` holds the [`JobLog`], `instance-<i>/` the
//! checkpoints of instance `i` (a [`CheckpointStore`] each), `db-<i>-gen-<g>/` the RocksDB
//! working databases (disposable: a crash abandons them).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

#[cfg(feature = "rocksdb")]
use keyed_state::backend::rocksdb::{RocksDbEngine, RocksDbOptions};
use keyed_state::checkpoint::{
    CheckpointStorage, CheckpointStore, DirLock, FaultyStorage, LOCK_FILE, LocalStorage,
    RestoreSource, parse_checkpoint_dir,
};
use keyed_state::clock::ManualClock;
use keyed_state::error::IoAt;
use keyed_state::key_group::{key_group_for_bytes, operator_for_key_group, range_for_operator};
use keyed_state::{
    AnyEngine, CheckpointError, EngineConfig, Error, HeapEngine, KeyedStateBackend,
    PendingCheckpoint, Result,
};

use super::coordinator::{JobLog, JobRecord};
use super::generator::{Generator, Skew, SplitMix64};
use super::job::{Dump, Job, operator_of};
use super::oracle::Oracle;
use super::report::{Divergence, SimReport};

/// The engine instances run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    /// [`HeapEngine`].
    Heap,
    /// The RocksDB engine (this crate's cargo feature `rocksdb`; without it a run on RocksDB
    /// is refused with [`Error::Unsupported`]).
    #[serde(rename = "rocksdb")]
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

    /// Whether this build of the simulator can run on the engine.
    pub fn is_available(self) -> bool {
        match self {
            EngineKind::Heap => true,
            EngineKind::RocksDb => cfg!(feature = "rocksdb"),
        }
    }
}

impl std::fmt::Display for EngineKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The seed: input, fault points.
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
    /// Crashes at seeded points: between records, during a checkpoint (at a storage
    /// operation of an instance, before or after the job's commit) and during a restore.
    pub crashes: u32,
    /// Transient storage failures at seeded checkpoints (an instance's or the job log's
    /// operation fails once: the checkpoint aborts and the job goes on).
    pub storage_faults: u32,
    /// Whether a crash during a storage write leaves a torn (half-written) file behind.
    pub torn_writes: bool,
    /// Rescale to this many instances at the first checkpoint past half the input.
    pub rescale_to: Option<u32>,
    /// Rescales to a seeded number of instances (1..=4) at seeded checkpoints.
    pub random_rescales: u32,
    /// The storage of a seeded instance fills up at a seeded checkpoint: a real error (not an
    /// injected one), which stops the run with that error; a resumed run goes on from the
    /// latest job checkpoint once space is back.
    pub disk_full: bool,
    /// Where checkpoints (and RocksDB databases) go; a temporary directory when `None`. Must
    /// be empty unless `resume`.
    pub dir: Option<PathBuf>,
    /// Continue the run found in `dir` (from its job log) instead of starting one: what a
    /// restarted worker does after `--kill`. In-process faults are off in a resumed run.
    pub resume: bool,
    /// Checkpoint storage URL (`s3://bucket/prefix`, `file:///path`); `None`: `dir` itself.
    /// RocksDB working directories stay in `dir`.
    pub storage: Option<String>,
    /// Settings for remote storage (object_store's names, e.g. `aws_endpoint`).
    pub storage_settings: Vec<(String, String)>,
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
            storage_faults: 2,
            torn_writes: true,
            rescale_to: None,
            random_rescales: 1,
            disk_full: false,
            dir: None,
            resume: false,
            storage: None,
            storage_settings: Vec::new(),
        }
    }
}

/// Seeds one `--seeds` sweep may run (a larger range is refused up front).
pub const MAX_SEEDS: u64 = 1_000_000;
/// Distinct keys a Zipf stream may have: its table holds 8 bytes per key (400 MB here).
pub const MAX_ZIPF_KEYS: u64 = 50_000_000;
/// Crashes, storage faults, rescales or kills one run may plan.
pub const MAX_FAULTS: u32 = 100_000;

impl SimConfig {
    /// Checks the configuration's bounds before a run allocates or plans anything: a Zipf
    /// table must fit memory, the fault plan must fit the input.
    ///
    /// # Errors
    ///
    /// A message naming the flag and its bound.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if matches!(self.skew, Skew::Zipf(_)) && self.keys > MAX_ZIPF_KEYS {
            return Err(format!(
                "--keys {} with --skew zipf: at most {MAX_ZIPF_KEYS} (the Zipf table takes 8 bytes per key)",
                self.keys
            ));
        }
        for (flag, n) in [
            ("--crashes", self.crashes),
            ("--storage-faults", self.storage_faults),
            ("--random-rescales", self.random_rescales),
        ] {
            if n > MAX_FAULTS || u64::from(n) > self.events {
                return Err(format!(
                    "{flag} {n}: at most {MAX_FAULTS} and at most the number of events ({})",
                    self.events
                ));
            }
        }
        if self.parallelism == 0 || self.parallelism > self.max_parallelism {
            return Err(format!(
                "--parallelism {}: 1..={} (the key groups)",
                self.parallelism, self.max_parallelism
            ));
        }
        if self.checkpoint_every == 0 {
            return Err("--checkpoint-every 0: at least 1".into());
        }
        Ok(())
    }

    /// The `keyed-state simulate` arguments that reproduce this run (without `--dir`), one
    /// string per argument (a worker process of `--kill` is started with them).
    pub fn args(&self) -> Vec<String> {
        let skew = match self.skew {
            Skew::Uniform => "uniform".to_string(),
            Skew::Zipf(s) => format!("zipf:{s}"),
        };
        let mut args: Vec<String> = [
            ("--seed", self.seed.to_string()),
            ("--events", self.events.to_string()),
            ("--keys", self.keys.to_string()),
            ("--skew", skew),
            ("--engine", self.engine.name().to_string()),
            ("--parallelism", self.parallelism.to_string()),
            ("--max-parallelism", self.max_parallelism.to_string()),
            ("--checkpoint-every", self.checkpoint_every.to_string()),
            ("--crashes", self.crashes.to_string()),
            ("--storage-faults", self.storage_faults.to_string()),
            ("--random-rescales", self.random_rescales.to_string()),
        ]
        .into_iter()
        .flat_map(|(flag, value)| [flag.to_string(), value])
        .collect();
        if let Some(q) = self.rescale_to {
            args.extend(["--rescale-to".to_string(), q.to_string()]);
        }
        if !self.torn_writes {
            args.push("--no-torn-writes".to_string());
        }
        if self.disk_full {
            args.push("--disk-full".to_string());
        }
        if let Some(url) = &self.storage {
            args.extend(["--storage".to_string(), url.clone()]);
            for (k, v) in &self.storage_settings {
                args.extend(["--storage-option".to_string(), format!("{k}={v}")]);
            }
        }
        args
    }

    /// The command line that reproduces this run (without `--dir`).
    /// Each argument is quoted as a POSIX shell needs it (shlex), so the line can be pasted.
    pub fn command(&self) -> String {
        let args = self.args();
        let quoted =
            shlex::try_join(args.iter().map(String::as_str)).unwrap_or_else(|_| args.join(" ")); // only a NUL byte cannot be quoted
        format!("keyed-state simulate {quoted}")
    }
}

/// [`run_with_progress`] reports the input position every this many events processed.
pub const PROGRESS_EVERY: u64 = 1_000;
/// Watermarks (and processing-time timers) advance every this many events.
const WATERMARK_EVERY: u64 = 100;
/// Mean event-time gap between events, ms.
pub const EVENT_GAP_MS: u64 = 1_000;
/// Bounded disorder of event time, ms.
pub const DISORDER_MS: u64 = 60_000;
/// Processing time advances this much per input position (a pure function of the position,
/// so a replay sees the same times): a 24-hour TTL spans 2,880 events.
pub const PROCESSING_MS_PER_EVENT: u64 = 30_000;
/// Retained checkpoints per instance: the job's latest, plus one attempt that completed on
/// this instance but may still fail elsewhere (then it is discarded).
const RETAIN: usize = 2;
/// Differences reported per check (the rest are counted, not listed).
const REPORTED: usize = 8;

/// The processing time at input position `i`.
fn processing_time(i: u64) -> u64 {
    i * PROCESSING_MS_PER_EVENT
}

/// The digest of a sequence of lines: XXH3-64 (seed 0) of the lines, each followed by `\n` —
/// specified (xxHash's XXH3), the same on every platform and version, and reproducible with
/// `xxhsum -H3` on the lines printed one per line.
pub fn digest<'a>(lines: impl IntoIterator<Item = &'a String>) -> u64 {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    for line in lines {
        hasher.update(line.as_bytes());
        hasher.update(b"\n");
    }
    hasher.digest()
}

fn dump_digest(d: &Dump) -> u64 {
    let lines: Vec<String> = d
        .iter()
        .map(|((s, u, detail), v)| format!("{s} {u} {detail} {v}"))
        .collect();
    digest(&lines)
}

/// A fault planned at a checkpoint position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CheckpointFault {
    /// Storage operation `op` of instance `instance % p` (counted from the checkpoint's
    /// start) fails once.
    Transient { instance: u32, op: u64 },
    /// The job log's write fails once: every instance completed, the job did not.
    TransientCommit,
    /// The process dies at storage operation `op` of instance `instance % p`: that operation
    /// and every later one fail, and the job is abandoned when the checkpoint ends.
    Crash { instance: u32, op: u64 },
    /// Every instance completed; the process dies before the job record.
    CrashBeforeCommit,
    /// The process dies right after the job record.
    CrashAfterCommit,
    /// From storage operation `op` of instance `instance % p` on, every write fails as a full
    /// disk does: a real error, which stops the run.
    DiskFull { instance: u32, op: u64 },
}

/// Every fault of a run, drawn from the seed up front; each fires once.
#[derive(Debug, Default)]
struct FaultPlan {
    /// Crashes before processing the event at these positions.
    between: BTreeSet<u64>,
    /// Faults at the checkpoint taken at these positions.
    at_checkpoint: BTreeMap<u64, CheckpointFault>,
    /// Restores that fail at this storage operation (the process dies mid-restore), in order.
    restore: Vec<u64>,
    /// Rescale targets at these checkpoint positions.
    rescales: BTreeMap<u64, u32>,
}

impl FaultPlan {
    fn draw(cfg: &SimConfig) -> Self {
        let mut plan = FaultPlan::default();
        if cfg.events < 2 || cfg.resume {
            return plan;
        }
        let mut rng = SplitMix64::new(cfg.seed ^ 0xc4a5_4e5f);
        // Storage operations that every instance checkpoint, and every restore from an
        // instance's checkpoint, of the engine performs: transient and restore faults are
        // drawn among them, so that a planned fault fires (a heap checkpoint writes three
        // files; a RocksDB one uploads its SSTs and private files). Crash points range past
        // them: a crash after the last upload is a crash before the job record.
        let (checkpoint_ops, restore_ops) = match cfg.engine {
            EngineKind::Heap => (3, 2),
            EngineKind::RocksDb => (10, 6),
        };
        let every = cfg.checkpoint_every.max(1);
        let checkpoints: Vec<u64> = (1..=cfg.events / every)
            .map(|k| k * every)
            .chain((!cfg.events.is_multiple_of(every)).then_some(cfg.events))
            .collect();
        let free_checkpoint = |rng: &mut SplitMix64, plan: &FaultPlan| {
            // A few tries for a position without a fault; crowded plans drop the fault.
            (0..8)
                .map(|_| checkpoints[rng.index(checkpoints.len())])
                .find(|c| !plan.at_checkpoint.contains_key(c))
        };
        for _ in 0..cfg.crashes {
            match rng.below(6) {
                0 | 1 => {
                    plan.between.insert(1 + rng.below(cfg.events - 1));
                }
                2 => {
                    plan.between.insert(1 + rng.below(cfg.events - 1));
                    plan.restore.push(rng.below(restore_ops));
                }
                kind => {
                    let fault = match kind {
                        3 => CheckpointFault::Crash {
                            instance: rng.below_u32(8),
                            op: rng.below(12),
                        },
                        4 => CheckpointFault::CrashBeforeCommit,
                        _ => CheckpointFault::CrashAfterCommit,
                    };
                    if let Some(at) = free_checkpoint(&mut rng, &plan) {
                        plan.at_checkpoint.insert(at, fault);
                    }
                }
            }
        }
        for _ in 0..cfg.storage_faults {
            let fault = if rng.below(5) == 0 {
                CheckpointFault::TransientCommit
            } else {
                CheckpointFault::Transient {
                    instance: rng.below_u32(8),
                    op: rng.below(checkpoint_ops),
                }
            };
            if let Some(at) = free_checkpoint(&mut rng, &plan) {
                plan.at_checkpoint.insert(at, fault);
            }
        }
        for _ in 0..cfg.random_rescales {
            let at = checkpoints[rng.index(checkpoints.len())];
            plan.rescales.insert(at, 1 + rng.below_u32(4));
        }
        // Drawn last, so every other fault of a seed stays where it was without it.
        if cfg.disk_full {
            let fault = CheckpointFault::DiskFull {
                instance: rng.below_u32(8),
                op: rng.below(checkpoint_ops),
            };
            if let Some(at) = free_checkpoint(&mut rng, &plan) {
                plan.at_checkpoint.insert(at, fault);
            }
        }
        plan
    }
}

/// The oracle run alongside: fault-free, and kept at the input positions of the checkpoints
/// a recovery may restore, with the number of outputs it had produced there.
struct OracleRun {
    stream: Generator,
    events: u64,
    oracle: Oracle,
    pos: u64,
    max_ts: u64,
    outputs: Vec<String>,
    at: BTreeMap<u64, (Oracle, usize)>,
}

impl OracleRun {
    fn new(stream: Generator, events: u64) -> Self {
        OracleRun {
            stream,
            events,
            oracle: Oracle::default(),
            pos: 0,
            max_ts: 0,
            outputs: Vec::new(),
            at: BTreeMap::new(),
        }
    }

    /// Runs the oracle up to input position `to` (no-op when it is there or beyond).
    fn advance_to(&mut self, to: u64) {
        while self.pos < to {
            let e = self.stream.event(self.pos);
            self.oracle
                .process(&e, processing_time(self.pos), &mut self.outputs);
            self.max_ts = self.max_ts.max(e.ts);
            self.pos += 1;
            if self.pos.is_multiple_of(WATERMARK_EVERY) || self.pos == self.events {
                let wm = self.max_ts.saturating_sub(self.stream.disorder_ms());
                self.oracle
                    .advance(wm, processing_time(self.pos), &mut self.outputs);
            }
        }
    }

    /// Remembers the oracle at position `pos` (the first time the job checkpoints there).
    fn keep(&mut self, pos: u64) {
        if self.pos <= pos && !self.at.contains_key(&pos) {
            self.advance_to(pos);
            self.at
                .insert(pos, (self.oracle.clone(), self.outputs.len()));
        }
    }

    /// The oracle's state and output count at `pos`.
    fn at(&mut self, pos: u64) -> Option<(Dump, usize)> {
        self.keep(pos);
        if self.pos == pos {
            return Some((self.oracle.dump(processing_time(pos)), self.outputs.len()));
        }
        self.at
            .get(&pos)
            .map(|(o, n)| (o.dump(processing_time(pos)), *n))
    }

    /// Forgets positions before `pos` (no recovery can go back there any more).
    fn forget_before(&mut self, pos: u64) {
        self.at = self.at.split_off(&pos);
    }
}

/// The live job: its instances, their checkpoint stores and the fault-injecting storage
/// under each.
struct Running {
    instances: Vec<Job>,
    stores: Vec<Arc<CheckpointStore>>,
    faults: Vec<Arc<FaultyStorage>>,
}

/// Why a step stopped: the process died (a planned crash), or a real error.
enum Stop {
    Crash,
    Error(Error),
}

impl From<Error> for Stop {
    fn from(e: Error) -> Self {
        Stop::Error(e)
    }
}

/// A run's mutable state.
struct Sim<'a> {
    cfg: &'a SimConfig,
    root: PathBuf,
    stream: Generator,
    clock: ManualClock,
    plan: FaultPlan,
    report: SimReport,
    oracle: OracleRun,
    log_faults: Arc<FaultyStorage>,
    log: JobLog,
    /// The job's parallelism (changes when rescaling).
    p: u32,
    /// The largest parallelism the run has had (instance roots up to it may exist).
    max_p: u32,
    /// RocksDB working directories are per generation: a crash abandons them.
    generation: u64,
    running: Option<Running>,
    /// The next input position.
    i: u64,
    max_ts: u64,
    next_id: u64,
    /// Outputs since the last committed job checkpoint.
    pending: Vec<String>,
    rescale_to: Option<u32>,
}

/// Runs one simulation (see the module documentation).
///
/// # Errors
///
/// A storage or engine failure that is not a planned fault (a planned crash is recovered from
/// and counted); a directory that is not empty for a new run.
pub fn run(cfg: &SimConfig) -> Result<SimReport> {
    run_with_progress(cfg, &mut |_| {})
}

/// Like [`run`], calling `progress` with the input position every [`PROGRESS_EVERY`] events
/// processed (replays included).
///
/// # Errors
///
/// A storage or engine failure that is not a planned fault (a planned crash is recovered from
/// and counted); a directory that is not empty for a new run.
pub fn run_with_progress(cfg: &SimConfig, progress: &mut dyn FnMut(u64)) -> Result<SimReport> {
    cfg.validate().map_err(keyed_state::ConfigError::Invalid)?;
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
    std::fs::create_dir_all(&root).at(&root)?;
    // One process per run directory: a second one (a fresh run, or a resumed worker, on the
    // same directory) is refused before it touches anything, held until the run ends.
    let _lock = DirLock::acquire(&root)?;
    let occupied = std::fs::read_dir(&root)
        .at(&root)?
        .filter_map(std::result::Result::ok)
        .any(|e| e.file_name() != LOCK_FILE);
    if !cfg.resume && occupied {
        return Err(Error::NotEmpty {
            path: root,
            reason: "a new run needs an empty directory (or resume)",
        });
    }
    if cfg.resume {
        // The RocksDB working directories of a dead process: disposable, rebuilt on restore.
        for entry in std::fs::read_dir(&root).at(&root)?.flatten() {
            if entry.file_name().to_string_lossy().starts_with("db-") {
                std::fs::remove_dir_all(entry.path()).at(entry.path())?;
            }
        }
    }
    let stream = Generator::new(cfg.seed, cfg.keys, cfg.skew, EVENT_GAP_MS, DISORDER_MS);
    let job_root = open_root(cfg, &root, "job")?;
    if !cfg.resume && !job_root.list()?.is_empty() {
        return Err(CheckpointError::StorageConfig(format!(
            "{job_root:?} holds a run already: a new run needs empty storage"
        ))
        .into());
    }
    let log_faults = Arc::new(FaultyStorage::new(job_root));
    let log = JobLog::open(log_faults.clone())?;
    // A resumed run continues with the parallelism of its latest checkpoint.
    let p = log
        .latest()
        .map_or(cfg.parallelism, |r| r.parallelism)
        .max(1);
    let mut sim = Sim {
        cfg,
        root,
        oracle: OracleRun::new(stream.clone(), cfg.events),
        stream,
        clock: ManualClock::new(0),
        plan: FaultPlan::draw(cfg),
        report: SimReport {
            seed: cfg.seed,
            engine: cfg.engine,
            events: cfg.events,
            ..SimReport::default()
        },
        log_faults,
        log,
        p,
        max_p: p
            .max(cfg.parallelism)
            .max(cfg.rescale_to.unwrap_or(0))
            .max(8),
        generation: 0,
        running: None,
        i: 0,
        max_ts: 0,
        next_id: 1,
        pending: Vec::new(),
        rescale_to: cfg.rescale_to.filter(|&q| q >= 1 && q != cfg.parallelism),
    };
    sim.recover()?;
    sim.run(progress)?;
    sim.finish()?;
    let mut report = sim.report;
    report.elapsed_s = started.elapsed().as_secs_f64();
    Ok(report)
}

impl Sim<'_> {
    fn run(&mut self, progress: &mut dyn FnMut(u64)) -> Result<()> {
        let every = self.cfg.checkpoint_every.max(1);
        loop {
            let finished = self
                .log
                .latest()
                .is_some_and(|r| r.input == self.cfg.events);
            if finished {
                return Ok(());
            }
            let step = if self.i == self.cfg.events {
                // The input is done but its final checkpoint aborted: take it again.
                self.checkpoint()
            } else if self.plan.between.remove(&self.i) {
                Err(Stop::Crash)
            } else {
                self.process(progress).and_then(|()| {
                    if self.i.is_multiple_of(every) || self.i == self.cfg.events {
                        self.checkpoint()
                    } else {
                        Ok(())
                    }
                })
            };
            match step {
                Ok(()) => {}
                Err(Stop::Crash) => {
                    self.report.crashes += 1;
                    self.crash();
                    self.recover()?;
                }
                Err(Stop::Error(e)) => return Err(e),
            }
        }
    }

    /// Processes the event at position `i`, then advances time every `WATERMARK_EVERY`.
    fn process(&mut self, progress: &mut dyn FnMut(u64)) -> Result<(), Stop> {
        let e = self.stream.event(self.i);
        self.clock.set(processing_time(self.i));
        let group = key_group_for_bytes(&e.user.to_be_bytes(), self.cfg.max_parallelism);
        let owner = operator_for_key_group(self.cfg.max_parallelism, self.p, group) as usize;
        let running = self.running.as_ref().ok_or_else(no_job)?;
        running.instances[owner].process(&e, &mut self.pending)?;
        self.report.processed += 1;
        if self.report.processed.is_multiple_of(PROGRESS_EVERY) {
            progress(self.i);
        }
        self.max_ts = self.max_ts.max(e.ts);
        self.i += 1;
        if self.i.is_multiple_of(WATERMARK_EVERY) || self.i == self.cfg.events {
            let wm = self.max_ts.saturating_sub(self.stream.disorder_ms());
            let now = processing_time(self.i);
            self.clock.set(now);
            for inst in &running.instances {
                inst.advance(wm, now, &mut self.pending)?;
            }
        }
        Ok(())
    }

    /// Takes a job checkpoint at the current position: every instance's checkpoint runs
    /// concurrently; when all completed, the job record commits them and the pending output.
    /// Any instance failing aborts the job checkpoint (the others' parts are discarded).
    fn checkpoint(&mut self) -> Result<(), Stop> {
        let (pos, id) = (self.i, self.next_id);
        self.next_id += 1;
        self.oracle.keep(pos);
        let fault = self.plan.at_checkpoint.remove(&pos);
        let running = self.running.as_ref().ok_or_else(no_job)?;
        let p = self.p;
        assert_eq!(
            running.instances.len(),
            p as usize,
            "one instance per index"
        );
        match fault {
            Some(CheckpointFault::Transient { instance, op }) => {
                let s = &running.faults[(instance % p) as usize];
                s.fail_only(s.operations() + op);
            }
            Some(CheckpointFault::Crash { instance, op }) => {
                let s = &running.faults[(instance % p) as usize];
                s.tear_writes(self.cfg.torn_writes);
                s.fail_from(s.operations() + op);
            }
            Some(CheckpointFault::TransientCommit) => {
                self.log_faults.fail_only(self.log_faults.operations());
            }
            Some(CheckpointFault::DiskFull { instance, op }) => {
                let s = &running.faults[(instance % p) as usize];
                s.fill_up_from(s.operations() + op);
            }
            _ => {}
        }
        let offsets = [("input", pos), ("max_ts", self.max_ts)];
        let started: Vec<Result<PendingCheckpoint>> = running
            .instances
            .iter()
            .zip(&running.stores)
            .map(|(inst, store)| inst.checkpoint(store, id, &offsets))
            .collect();
        let mut results: Vec<_> = started
            .into_iter()
            .map(|s| s.and_then(|c| c.wait()))
            .collect();
        for s in &running.faults {
            s.heal();
        }
        if let Some(CheckpointFault::Crash { .. } | CheckpointFault::CrashBeforeCommit) = fault {
            // Whatever the instances managed, the process is gone before the job record.
            self.report.crashes_in_checkpoint += 1;
            return Err(Stop::Crash);
        }
        // A real storage failure (not one this run planned) stops the run: retrying would spin
        // on, say, a full disk. The attempt is withdrawn first; the job's latest checkpoint
        // stays, and a resumed run goes on from it once the cause is gone.
        if let Some(at) = results
            .iter()
            .position(|r| r.as_ref().is_err_and(|e| !is_injected(e)))
        {
            for store in &running.stores {
                store.discard(id)?;
            }
            if let Err(real) = results.swap_remove(at) {
                return Err(Stop::Error(real));
            }
        }
        let mut failed = results.iter().filter_map(|r| r.as_ref().err()).peekable();
        let committed = if let Some(e) = failed.peek() {
            tracing::debug!(checkpoint = id, error = %e, "an instance's checkpoint failed");
            false
        } else {
            let record = JobRecord {
                id,
                parallelism: p,
                input: pos,
                max_ts: self.max_ts,
                outputs: self.pending.clone(),
            };
            let commit = self.log.commit(record);
            self.log_faults.heal();
            match commit {
                Ok(()) => true,
                Err(e) if is_injected(&e) => false,
                Err(e) => return Err(e.into()),
            }
        };
        if !committed {
            // Withdraw the instances' parts: retention must keep the job's latest checkpoint.
            self.report.checkpoints_aborted += 1;
            for store in &running.stores {
                store.discard(id)?;
            }
            return Ok(());
        }
        self.report.checkpoints += 1;
        self.report.bytes_checkpointed += results
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .map(|m| m.uploaded_bytes)
            .sum::<u64>();
        self.pending.clear();
        self.oracle.forget_before(pos);
        self.remove_unused_instances(p)?;
        if fault == Some(CheckpointFault::CrashAfterCommit) {
            self.report.crashes_in_checkpoint += 1;
            return Err(Stop::Crash);
        }
        // Rescaling: stop all instances and start the new number from this checkpoint.
        let fixed = self
            .rescale_to
            .filter(|_| pos >= self.cfg.events / 2 && pos < self.cfg.events);
        let random = self
            .plan
            .rescales
            .remove(&pos)
            .filter(|_| pos < self.cfg.events);
        if let Some(q) = fixed.or(random).filter(|&q| q != self.p) {
            if fixed.is_some() {
                self.rescale_to = None;
            }
            self.p = q;
            self.max_p = self.max_p.max(q);
            self.report.rescales += 1;
            self.crash(); // a stop without a final checkpoint: the one just taken is it
            self.recover()?;
        }
        Ok(())
    }

    /// Abandons the running job without any clean shutdown: no abort, no flush; pending
    /// output is lost; the RocksDB working directories are thrown away.
    fn crash(&mut self) {
        self.running = None;
        self.pending.clear();
        let suffix = format!("-gen-{}", self.generation);
        for entry in std::fs::read_dir(&self.root)
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("db-") && name.ends_with(&suffix) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        self.generation += 1;
    }

    /// Starts the job from the latest job checkpoint (or from the beginning), retrying when a
    /// planned fault kills the restore, then checks the restored state and the committed
    /// output against the oracle at that point.
    fn recover(&mut self) -> Result<()> {
        loop {
            self.log_faults.heal();
            self.log = JobLog::open(self.log_faults.clone())?;
            let latest = self.log.latest().cloned();
            let restore_fault = if latest.is_some() && !self.plan.restore.is_empty() {
                Some(self.plan.restore.remove(0))
            } else {
                None
            };
            // Processing time goes back to the restored position before any engine opens:
            // RocksDB's TTL compaction filter reads the clock from background threads, and
            // must not expire elements at a time the replay has not reached yet.
            let offset = latest.as_ref().map_or(0, |r| r.input);
            self.clock.set(processing_time(offset));
            match self.start(latest.as_ref(), restore_fault) {
                Ok(running) => {
                    self.running = Some(running);
                    match &latest {
                        Some(r) => {
                            self.report.restores += 1;
                            (self.i, self.max_ts, self.next_id) = (r.input, r.max_ts, r.id + 1);
                        }
                        None => (self.i, self.max_ts, self.next_id) = (0, 0, 1),
                    }
                    self.pending.clear();
                    if let Some(r) = &latest {
                        self.check(&format!(
                            "after restoring job checkpoint {} (input offset {})",
                            r.id, r.input
                        ))?;
                    }
                    return Ok(());
                }
                Err(e) if restore_fault.is_some() && is_injected(&e) => {
                    tracing::debug!(error = %e, "crash during restore");
                    self.report.crashes += 1;
                    self.report.crashes_in_restore += 1;
                    self.crash();
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Opens the instance stores, discards every instance checkpoint newer than the job's
    /// latest (attempts the job never completed, torn manifests included), and starts `p`
    /// instances restored from `latest`'s instances (a rescale when their number differs).
    /// `restore_fault`: the process dies at this storage operation of the restore.
    fn start(&self, latest: Option<&JobRecord>, restore_fault: Option<u64>) -> Result<Running> {
        let latest_id = latest.map_or(0, |r| r.id);
        let from = latest.map_or(0, |r| r.parallelism);
        let mut stores = Vec::new();
        let mut faults = Vec::new();
        for i in 0..self.p.max(from) {
            let faulty = Arc::new(FaultyStorage::new(open_root(
                self.cfg,
                &self.root,
                &format!("instance-{i}"),
            )?));
            let (store, _) = CheckpointStore::open(faulty.clone(), RETAIN)?;
            let newer: Vec<u64> = store
                .retained()
                .iter()
                .map(|m| m.checkpoint_id)
                .filter(|&id| id > latest_id)
                .collect();
            for id in newer {
                store.discard(id)?;
            }
            // Unreadable manifests (a torn write) are never retained: discard by listing.
            for path in faulty.list()? {
                if let Some(id) = path
                    .split_once('/')
                    .and_then(|(d, _)| parse_checkpoint_dir(d))
                    .filter(|&id| id > latest_id)
                {
                    store.discard(id)?;
                }
            }
            stores.push(Arc::new(store));
            faults.push(faulty);
        }
        let mut sources = Vec::new();
        if let Some(r) = latest {
            for i in 0..from as usize {
                let manifest = stores[i].get(r.id).ok_or_else(|| {
                    CheckpointError::NoCheckpoint(format!(
                        "job checkpoint {} lists instance {i}, whose store does not hold it",
                        r.id
                    ))
                })?;
                let storage = Arc::new(FaultyStorage::new(faults[i].clone()));
                if let Some(op) = restore_fault.filter(|_| i == 0) {
                    storage.fail_from(op);
                }
                sources.push(RestoreSource {
                    storage: storage as Arc<dyn CheckpointStorage>,
                    manifest,
                });
            }
        }
        stores.truncate(self.p as usize);
        faults.truncate(self.p as usize);
        let m = self.cfg.max_parallelism;
        let mut instances = Vec::new();
        for i in 0..self.p {
            let config = EngineConfig::new(m)?
                .with_key_group_range(range_for_operator(m, self.p, i)?)?
                .with_clock(self.clock.shared());
            // One call restores state and timers: the backend takes the engine's timers.
            let engine: AnyEngine = match self.cfg.engine {
                EngineKind::Heap if latest.is_some() => {
                    HeapEngine::restore(config, &sources)?.into()
                }
                EngineKind::Heap => HeapEngine::new(config).into(),
                #[cfg(feature = "rocksdb")]
                EngineKind::RocksDb => {
                    let path = self.root.join(format!("db-{i}-gen-{}", self.generation));
                    let options = RocksDbOptions::default();
                    if latest.is_some() {
                        RocksDbEngine::restore(&path, config, options, &sources)?.into()
                    } else {
                        RocksDbEngine::open(&path, config, options)?.into()
                    }
                }
                #[cfg(not(feature = "rocksdb"))]
                EngineKind::RocksDb => {
                    return Err(Error::Unsupported(
                        "the RocksDB engine: this build lacks the `rocksdb` cargo feature".into(),
                    ));
                }
            };
            instances.push(Job::new(KeyedStateBackend::new(engine))?);
        }
        Ok(Running {
            instances,
            stores,
            faults,
        })
    }

    /// After a job checkpoint of `p` instances committed, the roots of instances `p..` (left
    /// by a rescale to fewer instances) hold nothing anyone can restore.
    fn remove_unused_instances(&self, p: u32) -> Result<()> {
        for i in p..self.max_p {
            let name = format!("instance-{i}");
            let storage = open_root(self.cfg, &self.root, &name)?;
            for path in storage.list()? {
                storage.delete(&path)?;
            }
            let local = self.root.join(&name);
            if local.exists() {
                std::fs::remove_dir_all(&local).at(&local)?;
            }
        }
        Ok(())
    }

    fn dump(&self) -> Result<Dump> {
        let mut state = Dump::new();
        for inst in &self.running.as_ref().ok_or_else(no_job)?.instances {
            state.extend(inst.dump()?);
        }
        Ok(state)
    }

    /// Compares the running job's state and the committed output with the oracle at the
    /// current position; records the differences as divergences at `step`.
    fn check(&mut self, step: &str) -> Result<(Dump, Vec<String>)> {
        let state = self.dump()?;
        let Some((expected, n)) = self.oracle.at(self.i) else {
            return Err(CheckpointError::NoCheckpoint(format!(
                "the oracle has no state at input offset {}",
                self.i
            ))
            .into());
        };
        let mut found = Vec::new();
        let keys: BTreeSet<_> = expected.keys().chain(state.keys()).collect();
        for k in keys {
            let (want, got) = (expected.get(k), state.get(k));
            if want != got {
                found.push(Divergence {
                    step: step.to_owned(),
                    operator: operator_of(k.0).to_owned(),
                    state: k.0.to_owned(),
                    key: Some(k.1),
                    detail: k.2.clone(),
                    expected: want.cloned(),
                    actual: got.cloned(),
                });
            }
        }
        let mut got_out: Vec<String> = self.log.outputs().cloned().collect();
        let mut want_out = self.oracle.outputs[..n].to_vec();
        got_out.sort();
        want_out.sort();
        if got_out != want_out {
            // Lines whose number of occurrences differ (missing, unexpected or repeated).
            let mut counts: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
            for l in &want_out {
                counts.entry(l).or_default().0 += 1;
            }
            for l in &got_out {
                counts.entry(l).or_default().1 += 1;
            }
            for (line, (want, got)) in counts.into_iter().filter(|(_, (a, b))| a != b) {
                let user = line.split(' ').nth(1).and_then(|u| u.parse().ok());
                found.push(Divergence {
                    step: step.to_owned(),
                    operator: "sink".into(),
                    state: "output".into(),
                    key: user,
                    detail: line.to_owned(),
                    expected: Some(format!("committed {want} time(s)")),
                    actual: Some(format!("committed {got} time(s)")),
                });
            }
        }
        let total = found.len();
        self.report
            .divergences
            .extend(found.into_iter().take(REPORTED));
        if total > REPORTED {
            self.report.divergences.push(Divergence {
                step: step.to_owned(),
                operator: "*".into(),
                state: "*".into(),
                key: None,
                detail: format!("{} more differences not listed", total - REPORTED),
                expected: None,
                actual: None,
            });
        }
        Ok((state, got_out))
    }

    /// The final comparison and the digests.
    fn finish(&mut self) -> Result<()> {
        self.oracle.advance_to(self.cfg.events);
        self.clock.set(processing_time(self.cfg.events));
        let (state, outputs) =
            self.check(&format!("at the end (input offset {})", self.cfg.events))?;
        self.report.outputs = outputs.len() as u64;
        self.report.state_digest = dump_digest(&state);
        self.report.output_digest = digest(&outputs);
        self.running = None;
        Ok(())
    }
}

fn no_job() -> Error {
    CheckpointError::NoCheckpoint("no running job".into()).into()
}

fn is_injected(e: &Error) -> bool {
    matches!(e, Error::Checkpoint(CheckpointError::Injected(_)))
        || e.to_string().contains("injected")
}

/// The checkpoint root `name` of a run: under the storage URL when one is set, else in the
/// run's directory.
fn open_root(cfg: &SimConfig, dir: &Path, name: &str) -> Result<Arc<dyn CheckpointStorage>> {
    match &cfg.storage {
        Some(url) => keyed_state::checkpoint::open_storage(
            &format!("{}/{name}", url.trim_end_matches('/')),
            &cfg.storage_settings,
        ),
        None => Ok(Arc::new(LocalStorage::new(dir.join(name))?)),
    }
}

/// The job log of the run `cfg` describes (its `storage`, else `dir`).
///
/// # Errors
///
/// The log's storage cannot be opened or a record does not decode.
pub fn job_log(cfg: &SimConfig) -> Result<JobLog> {
    let dir = cfg.dir.clone().unwrap_or_default();
    JobLog::open(open_root(cfg, &dir, "job")?)
}

/// Whether `dir` holds a run (a job log) that [`SimConfig::resume`] can continue.
pub fn has_run(dir: &Path) -> bool {
    dir.join("job").is_dir()
}
