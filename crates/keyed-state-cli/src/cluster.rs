//! `keyed-state timely`: the simulator's job (every state kind, TTL, event- and
//! processing-time timers; see [`sim::job`](crate::sim::job)) as a real distributed job on
//! timely-dataflow, through [`keyed_state_timely`]: several processes over TCP, each with
//! several worker threads, aligned checkpoints, an exactly-once commit log, restarts on any
//! number of processes and workers, and a check of the committed output and the final state
//! against the simulator's oracle.
//!
//! The input is the simulator's seeded stream, cut into epochs of `epoch_events` positions;
//! each worker feeds the positions `p` with `p % workers == index`, so a restarted job replays
//! exactly the epochs after its last commit. Event time is the generator's; the watermark
//! after epoch `e` is the earliest time any later event can carry (the generator's disorder
//! bound), so no event is late; processing time is a pure function of the position (as in the
//! simulator), set on each worker's clock before each record.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use keyed_state::checkpoint::{CheckpointStorage, DirLock, FileInfo};
use keyed_state::clock::ManualClock;
use keyed_state::{AnyEngine, KeyedStateBackend};
use keyed_state_timely::{EngineChoice, Error, JobConfig, KeyedLogic, KeyedStateStream, Worker};
use serde::{Deserialize, Serialize};
use timely::dataflow::InputHandleVec;

use crate::sim::generator::{Event, Generator};
use crate::sim::job::{Dump, Job};
use crate::sim::oracle::Oracle;
use crate::sim::{DISORDER_MS, EVENT_GAP_MS, EngineKind, PROCESSING_MS_PER_EVENT, Skew, digest};

/// A distributed run of the job.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// The seed of the input.
    pub seed: u64,
    /// Events in the input.
    pub events: u64,
    /// Distinct user keys.
    pub keys: u64,
    /// Input positions per epoch (timely's time).
    pub epoch_events: u64,
    /// Epochs between checkpoints.
    pub checkpoint_every: u64,
    /// Key groups.
    pub max_parallelism: u32,
    /// The engine.
    pub engine: EngineKind,
    /// The run's directory: checkpoints (unless `storage`), RocksDB working copies.
    pub dir: PathBuf,
    /// Checkpoint root URL (`s3://...`) instead of `dir/checkpoints`.
    pub storage: Option<String>,
    /// Settings for `storage`.
    pub storage_settings: Vec<(String, String)>,
    /// Every write to checkpoint storage takes this much longer (tests: a wider window to
    /// kill a process in the middle of a checkpoint).
    pub slow_storage: Duration,
}

impl ClusterConfig {
    /// The last input epoch.
    pub fn last_epoch(&self) -> u64 {
        self.events.div_ceil(self.epoch_events)
    }

    /// The last checkpoint: the first multiple of the interval at or after the last epoch.
    pub fn final_checkpoint(&self) -> u64 {
        self.last_epoch().div_ceil(self.checkpoint_every) * self.checkpoint_every
    }

    /// The job configuration of the library.
    pub fn job_config(&self) -> JobConfig {
        let root = self
            .storage
            .clone()
            .unwrap_or_else(|| self.dir.join("checkpoints").to_string_lossy().into_owned());
        let engine = match self.engine {
            EngineKind::Heap => EngineChoice::Heap,
            EngineKind::RocksDb => EngineChoice::RocksDb {
                dir: self.dir.join("db"),
            },
        };
        let job = JobConfig::new(root)
            .with_storage_settings(self.storage_settings.clone())
            .with_engine(engine)
            .with_max_parallelism(self.max_parallelism)
            .with_checkpoint_every(self.checkpoint_every);
        if self.slow_storage.is_zero() {
            return job;
        }
        let delay = self.slow_storage;
        job.with_storage_layer(move |inner| Arc::new(SlowStorage::new(inner, delay)))
    }

    fn generator(&self) -> Generator {
        Generator::new(
            self.seed,
            self.keys,
            Skew::Uniform,
            EVENT_GAP_MS,
            DISORDER_MS,
        )
    }

    /// The watermark once epochs `..=epoch` are in: below every later event's time.
    fn watermark(&self, epoch: u64) -> u64 {
        (epoch * self.epoch_events * EVENT_GAP_MS).saturating_sub(DISORDER_MS)
    }

    /// Processing time at the end of `epoch` (the first position of the next one).
    fn epoch_end_time(&self, epoch: u64) -> u64 {
        epoch * self.epoch_events * PROCESSING_MS_PER_EVENT
    }
}

/// An input record: the event and its position, which orders an epoch's records.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Positioned {
    pos: u64,
    id: u64,
    user: u64,
    kind: u8,
    amount: u64,
    ts: u64,
}

impl Positioned {
    fn new(pos: u64, e: Event) -> Self {
        Positioned {
            pos,
            id: e.id,
            user: e.user,
            kind: e.kind,
            amount: e.amount,
            ts: e.ts,
        }
    }

    fn event(&self) -> Event {
        Event {
            id: self.id,
            user: self.user,
            kind: self.kind,
            amount: self.amount,
            ts: self.ts,
        }
    }
}

/// The simulator's job as the operator's logic.
struct SimLogic {
    job: Job,
    clock: ManualClock,
    cfg: ClusterConfig,
}

impl KeyedLogic for SimLogic {
    type Key = u64;
    type Record = Positioned;
    type Output = String;

    fn key(r: &Positioned) -> u64 {
        r.user
    }

    fn process(
        &mut self,
        _epoch: u64,
        r: Positioned,
        out: &mut Vec<String>,
    ) -> keyed_state::Result<()> {
        self.clock.set(r.pos * PROCESSING_MS_PER_EVENT);
        self.job.process(&r.event(), out)
    }

    fn on_epoch_end(&mut self, epoch: u64, out: &mut Vec<String>) -> keyed_state::Result<()> {
        let now = self.cfg.epoch_end_time(epoch);
        self.clock.set(now);
        self.job.advance(self.cfg.watermark(epoch), now, out)
    }
}

/// What one process reports.
#[derive(Debug, Clone, Default)]
pub struct ProcessReport {
    /// Events this process fed.
    pub events: u64,
    /// The epoch the run resumed from (1 for a fresh job).
    pub resumed_from: u64,
    /// Time from start to the restored workers being ready.
    pub restore: Duration,
    /// Time from the restored workers being ready to the final commit.
    pub run: Duration,
    /// Checkpoint parts this process's workers completed.
    pub checkpoints: u64,
    /// The longest time between two consecutive epochs this process's first worker processed
    /// (a checkpoint's synchronous part, a stall), start-up excluded.
    pub longest_pause: Duration,
}

/// Runs this process's workers of the job to the end of the input: restores from the latest
/// committed checkpoint, feeds the epochs after it, waits for the final commit. `progress` is
/// called on the first worker of the process about once a second with (epoch, events fed by
/// this process).
///
/// # Errors
///
/// A worker failed to start (see [`Worker::start`]) or the job failed (a state or storage
/// failure on any worker of this process); timely could not start.
pub fn run_process(
    cfg: &ClusterConfig,
    communication: timely::CommunicationConfig,
    progress: Arc<dyn Fn(u64, u64) + Send + Sync>,
) -> Result<ProcessReport, Error> {
    let threads = match &communication {
        timely::CommunicationConfig::Cluster { threads, .. } => *threads,
        timely::CommunicationConfig::Process(n) | timely::CommunicationConfig::ProcessBinary(n) => {
            *n
        }
        timely::CommunicationConfig::Thread => 1,
    };
    let (builders, others) = communication.try_build().map_err(Error::Config)?;
    run_with(cfg, threads, builders, others, progress)
}

/// [`run_process`] with the communication already built (`threads` workers in this process).
///
/// # Errors
///
/// As [`run_process`].
pub fn run_with(
    cfg: &ClusterConfig,
    threads: usize,
    builders: Vec<timely::communication::AllocatorBuilder>,
    others: Box<dyn std::any::Any + Send>,
    progress: Arc<dyn Fn(u64, u64) + Send + Sync>,
) -> Result<ProcessReport, Error> {
    let cfg = cfg.clone();
    let job = cfg.job_config();
    let started = Instant::now();
    let guards = timely::execute::execute_from(
        builders,
        others,
        timely::WorkerConfig::default(),
        move |w| -> Result<ProcessReport, Error> {
            let clock = ManualClock::new(0);
            let worker = Worker::<u64>::start(&job, w.index(), w.peers(), clock.shared())?;
            let backend: Arc<KeyedStateBackend<u64, AnyEngine>> = worker.backend().clone();
            let logic = SimLogic {
                job: Job::new(backend)?,
                clock,
                cfg: cfg.clone(),
            };
            let mut report = ProcessReport {
                resumed_from: worker.resume_epoch(),
                restore: started.elapsed(),
                ..ProcessReport::default()
            };
            let ready = Instant::now();
            let mut input = InputHandleVec::new();
            let probe = w.dataflow(|scope| input.to_stream(scope).keyed_state(&worker, logic).1);
            let stream = cfg.generator();
            let (index, peers) = (w.index() as u64, w.peers() as u64);
            let mut last_report = Instant::now();
            let mut last_epoch_done = Instant::now();
            let mut done_before = 0;
            for epoch in worker.resume_epoch()..=cfg.last_epoch() {
                input.advance_to(epoch);
                let end = (epoch * cfg.epoch_events).min(cfg.events);
                let mut pos = (epoch - 1) * cfg.epoch_events;
                pos += (index + peers - pos % peers) % peers;
                while pos < end {
                    input.send(Positioned::new(pos, stream.event(pos)));
                    report.events += 1;
                    pos += peers;
                }
                // Bounded input: at most one checkpoint interval (plus two epochs) in flight
                // past the state, so a checkpoint upload does not stop the input at once.
                while probe.processing_before(epoch.saturating_sub(cfg.checkpoint_every + 2)) {
                    probe.check()?;
                    w.step_or_park(Some(Duration::from_millis(1)));
                    note_pause(&probe, &mut done_before, &mut last_epoch_done, &mut report);
                }
                note_pause(&probe, &mut done_before, &mut last_epoch_done, &mut report);
                // Workers of a process have consecutive global indices.
                if w.index() % threads.max(1) == 0
                    && last_report.elapsed() >= Duration::from_secs(1)
                {
                    progress(epoch, report.events);
                    last_report = Instant::now();
                }
            }
            input.close();
            while !probe.is_done() {
                probe.check()?;
                w.step_or_park(Some(Duration::from_millis(1)));
            }
            probe.check()?;
            report.run = ready.elapsed();
            report.checkpoints = probe.progress().checkpoints;
            Ok(report)
        },
    )
    .map_err(Error::Config)?;
    let mut total = ProcessReport::default();
    for r in guards.join() {
        let r = r.map_err(|e| Error::Config(format!("a worker thread panicked: {e}")))??;
        total.events += r.events;
        total.resumed_from = r.resumed_from;
        total.restore = total.restore.max(r.restore);
        total.run = total.run.max(r.run);
        total.checkpoints += r.checkpoints;
        total.longest_pause = total.longest_pause.max(r.longest_pause);
    }
    Ok(total)
}

fn note_pause(
    probe: &keyed_state_timely::JobProbe,
    done_before: &mut u64,
    last: &mut Instant,
    report: &mut ProcessReport,
) {
    let processed = probe.progress().epochs_processed;
    if processed != *done_before {
        // The wait for the first epoch is start-up (peers connecting), not a pause.
        if *done_before > 0 {
            report.longest_pause = report.longest_pause.max(last.elapsed());
        }
        *done_before = processed;
        *last = Instant::now();
    }
}

/// The result of checking a finished run.
#[derive(Debug, Clone)]
pub struct Verification {
    /// Committed outputs.
    pub outputs: usize,
    /// XXH3 digest of the committed outputs, sorted: the same for any number of processes,
    /// workers and crashes.
    pub output_digest: u64,
    /// XXH3 digest of the final state.
    pub state_digest: u64,
    /// Committed checkpoints.
    pub commits: usize,
    /// Differences from the oracle (empty: none), at most a few listed.
    pub differences: Vec<String>,
}

/// Checks a finished run: the committed outputs (sorted) and the final state (restored on one
/// worker into `scratch`) against the oracle.
///
/// # Errors
///
/// The run did not finish (its last commit is not the final checkpoint), or the commit log or
/// the final checkpoint cannot be read.
pub fn verify(cfg: &ClusterConfig, scratch: &std::path::Path) -> Result<Verification, Error> {
    let job = cfg.job_config();
    let log = job.commit_log()?;
    let Some(last) = log.latest() else {
        return Err(Error::Config("no checkpoint was committed".into()));
    };
    if last.id != cfg.final_checkpoint() {
        return Err(Error::Config(format!(
            "the run has not finished: the last commit is checkpoint {}, the final one is {}",
            last.id,
            cfg.final_checkpoint()
        )));
    }
    let mut outputs = Vec::new();
    for r in log.records() {
        outputs.extend(
            r.decode_outputs::<String>()
                .map_err(|e| Error::State(e.into()))?,
        );
    }
    outputs.sort();
    // The oracle, epoch by epoch, to the final checkpoint.
    let stream = cfg.generator();
    let mut oracle = Oracle::default();
    let mut expected = Vec::new();
    for epoch in 1..=cfg.final_checkpoint() {
        let end = (epoch * cfg.epoch_events).min(cfg.events);
        for pos in (epoch - 1) * cfg.epoch_events..end {
            oracle.process(
                &stream.event(pos),
                pos * PROCESSING_MS_PER_EVENT,
                &mut expected,
            );
        }
        oracle.advance(
            cfg.watermark(epoch),
            cfg.epoch_end_time(epoch),
            &mut expected,
        );
    }
    expected.sort();
    let now = cfg.epoch_end_time(cfg.final_checkpoint());
    let want_state = oracle.dump(now);
    // The final state, restored on one worker from the job's parts (a copy of the engine's
    // working files goes to `scratch`; the parts are only read).
    let reader = match cfg.engine {
        EngineKind::Heap => job.clone(),
        EngineKind::RocksDb => job.clone().with_engine(EngineChoice::RocksDb {
            dir: scratch.to_path_buf(),
        }),
    };
    let clock = ManualClock::new(now);
    let (_, backend) = Worker::<u64>::read_committed(&reader, clock.shared())?;
    let state = Job::new(backend)?.dump()?;
    let mut differences = Vec::new();
    diff_lines(&expected, &outputs, "output", &mut differences);
    diff_state(&want_state, &state, &mut differences);
    Ok(Verification {
        outputs: outputs.len(),
        output_digest: digest(&outputs),
        state_digest: digest(&dump_lines(&state)),
        commits: log.records().count(),
        differences,
    })
}

fn dump_lines(d: &Dump) -> Vec<String> {
    d.iter()
        .map(|((s, u, detail), v)| format!("{s} {u} {detail} {v}"))
        .collect()
}

/// Lines in one sorted multiset and not the other.
fn diff_lines(want: &[String], got: &[String], what: &str, out: &mut Vec<String>) {
    let mut count: BTreeMap<&String, i64> = BTreeMap::new();
    for l in want {
        *count.entry(l).or_default() += 1;
    }
    for l in got {
        *count.entry(l).or_default() -= 1;
    }
    for (l, n) in count.into_iter().filter(|(_, n)| *n != 0) {
        if n > 0 {
            out.push(format!("{what} missing ({n}x): {l}"));
        } else {
            out.push(format!("{what} extra ({}x): {l}", -n));
        }
    }
}

fn diff_state(want: &Dump, got: &Dump, out: &mut Vec<String>) {
    diff_lines(&dump_lines(want), &dump_lines(got), "state", out);
}

/// Checkpoint storage whose writes each take `delay` longer (`keyed-state timely
/// --slow-storage-ms`): widens the window in which a checkpoint is in flight, so that tests can
/// kill a process in the middle of one.
pub struct SlowStorage {
    inner: Arc<dyn CheckpointStorage>,
    delay: Duration,
}

impl SlowStorage {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn CheckpointStorage>, delay: Duration) -> Self {
        SlowStorage { inner, delay }
    }
}

impl std::fmt::Debug for SlowStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlowStorage")
            .field("inner", &self.inner)
            .field("delay", &self.delay)
            .finish()
    }
}

impl CheckpointStorage for SlowStorage {
    fn put(&self, path: &str, bytes: &[u8]) -> keyed_state::Result<()> {
        std::thread::sleep(self.delay);
        self.inner.put(path, bytes)
    }
    fn put_new(&self, path: &str, bytes: &[u8]) -> keyed_state::Result<()> {
        std::thread::sleep(self.delay);
        self.inner.put_new(path, bytes)
    }
    fn put_file(&self, path: &str, source: &std::path::Path) -> keyed_state::Result<FileInfo> {
        std::thread::sleep(self.delay);
        self.inner.put_file(path, source)
    }
    fn get(&self, path: &str) -> keyed_state::Result<Bytes> {
        self.inner.get(path)
    }
    fn get_to_file(&self, path: &str, dest: &std::path::Path) -> keyed_state::Result<FileInfo> {
        self.inner.get_to_file(path, dest)
    }
    fn link_to_file(&self, path: &str, dest: &std::path::Path) -> keyed_state::Result<FileInfo> {
        self.inner.link_to_file(path, dest)
    }
    fn size(&self, path: &str) -> keyed_state::Result<Option<u64>> {
        self.inner.size(path)
    }
    fn list(&self) -> keyed_state::Result<Vec<String>> {
        self.inner.list()
    }
    fn delete(&self, path: &str) -> keyed_state::Result<()> {
        self.inner.delete(path)
    }
    fn transfer_concurrency(&self) -> usize {
        self.inner.transfer_concurrency()
    }
    fn lock_exclusive(&self) -> keyed_state::Result<Option<DirLock>> {
        self.inner.lock_exclusive()
    }
    fn remove_empty_dirs(&self) -> keyed_state::Result<usize> {
        self.inner.remove_empty_dirs()
    }
    fn remove_temporaries(&self) -> keyed_state::Result<usize> {
        self.inner.remove_temporaries()
    }
}
