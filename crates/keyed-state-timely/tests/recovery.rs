//! A keyed job on timely workers in one process, checked against an oracle computed without
//! timely: full runs on several worker counts, crashes (the dataflow dropped on every worker
//! after a commit, so whatever was not committed is lost) and restarts on other worker
//! counts, and the refusals.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use keyed_state::checkpoint::FaultyStorage;
use keyed_state::clock::ManualClock;
use keyed_state::state::{
    ReducingState, ReducingStateDescriptor, ValueState, ValueStateDescriptor,
};
use keyed_state::timer::{Timer, TimerService};
use keyed_state::{AnyEngine, Key, KeyedStateBackend};
use keyed_state_timely::{Error, JobConfig, KeyedLogic, KeyedStateStream, Worker};
use serde::{Deserialize, Serialize};
use timely::dataflow::InputHandleVec;

const KEYS: u64 = 40;
const PER_EPOCH: u64 = 60;
const EPOCH_MS: u64 = 1_000;
const GAP_MS: u64 = 2_500;
const M: u32 = 32;
/// Epochs between checkpoints.
const EVERY: u64 = 3;

/// One event: its position in the input is its order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct Event {
    seq: u64,
    key: u64,
    amount: u64,
    ts: u64,
}

fn event(seq: u64) -> Event {
    let mut x = seq.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5151;
    x ^= x >> 29;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 32;
    let epoch = seq / PER_EPOCH + 1;
    Event {
        seq,
        key: x % KEYS,
        amount: (x >> 8) % 100,
        ts: (epoch - 1) * EPOCH_MS + (x >> 20) % EPOCH_MS,
    }
}

fn watermark(epoch: u64) -> u64 {
    (epoch * EPOCH_MS).saturating_sub(1)
}

type Out = (String, u64, u64, u64);
/// Per key: count, total, open session (events, latest time).
type State = BTreeMap<u64, (Option<u64>, Option<u64>, Option<(u64, u64)>)>;

/// Per key: a count (every 7th emits), a running total, a session of events closed by an
/// event-time timer `GAP_MS` after the latest event (emits the session's size and the total).
struct Sessions {
    backend: Arc<KeyedStateBackend<u64, AnyEngine>>,
    count: ValueState<u64, u64>,
    total: ReducingState<u64, u64>,
    session: ValueState<u64, (u64, u64)>,
    timers: Arc<TimerService<u64>>,
}

impl Sessions {
    fn new(backend: &Arc<KeyedStateBackend<u64, AnyEngine>>) -> keyed_state::Result<Self> {
        Ok(Sessions {
            backend: backend.clone(),
            count: backend.value_state(&ValueStateDescriptor::new("count"))?,
            total: backend.reducing_state(&ReducingStateDescriptor::new("total", |a, b| a + b))?,
            session: backend.value_state(&ValueStateDescriptor::new("session"))?,
            timers: backend.timer_service("sessions")?,
        })
    }

    fn dump(&self) -> keyed_state::Result<State> {
        let mut out = BTreeMap::new();
        for g in self.backend.key_group_range() {
            for (k, ()) in self.count.keys_in_group(g)? {
                let key = self.backend.key(k)?;
                out.insert(
                    k,
                    (
                        self.count.get(&key, &())?,
                        self.total.get(&key, &())?,
                        self.session.get(&key, &())?,
                    ),
                );
            }
        }
        Ok(out)
    }
}

impl KeyedLogic for Sessions {
    type Key = u64;
    type Record = Event;
    type Output = Out;

    fn key(e: &Event) -> u64 {
        e.key
    }

    fn process(&mut self, _epoch: u64, e: Event, out: &mut Vec<Out>) -> keyed_state::Result<()> {
        let key = self.backend.key(e.key)?;
        let n = self.count.get(&key, &())?.unwrap_or(0) + 1;
        self.count.update(&key, &(), n)?;
        if n.is_multiple_of(7) {
            out.push(("count".into(), e.key, n, 0));
        }
        self.total.add(&key, &(), e.amount)?;
        let (events, last) = self.session.get(&key, &())?.unwrap_or((0, 0));
        if events > 0 {
            self.timers
                .delete_event_time_timer(&key, &(), last + GAP_MS)?;
        }
        let last = last.max(e.ts);
        self.session.update(&key, &(), (events + 1, last))?;
        self.timers
            .register_event_time_timer(&key, &(), last + GAP_MS)
    }

    fn on_epoch_end(&mut self, epoch: u64, out: &mut Vec<Out>) -> keyed_state::Result<()> {
        self.timers
            .advance_watermark(watermark(epoch), |t: Timer<u64>| {
                let key: Key<u64> = self.backend.key(t.key)?;
                let (events, _) = self.session.get(&key, &())?.unwrap_or((0, 0));
                let total = self.total.get(&key, &())?.unwrap_or(0);
                out.push(("session".into(), t.key, events, total));
                self.session.clear(&key, &())
            })?;
        Ok(())
    }
}

/// The same job on plain maps, epoch by epoch, for input epochs `1..=epochs`, up to the
/// job's last cut: the next multiple of the checkpoint interval, where the end of the input
/// advances the watermark to.
fn oracle(epochs: u64) -> (Vec<Out>, State) {
    let through = epochs.div_ceil(EVERY) * EVERY;
    let mut out = Vec::new();
    let mut state: State = BTreeMap::new();
    let mut timers: BTreeMap<(u64, u64), ()> = BTreeMap::new(); // (ts, key)
    for epoch in 1..=through {
        for seq in ((epoch - 1) * PER_EPOCH..epoch * PER_EPOCH).filter(|_| epoch <= epochs) {
            let e = event(seq);
            let s = state.entry(e.key).or_default();
            let n = s.0.unwrap_or(0) + 1;
            s.0 = Some(n);
            if n.is_multiple_of(7) {
                out.push(("count".into(), e.key, n, 0));
            }
            s.1 = Some(s.1.unwrap_or(0) + e.amount);
            let (events, last) = s.2.unwrap_or((0, 0));
            if events > 0 {
                timers.remove(&(last + GAP_MS, e.key));
            }
            let last = last.max(e.ts);
            s.2 = Some((events + 1, last));
            timers.insert((last + GAP_MS, e.key), ());
        }
        while let Some((&(ts, k), ())) = timers.first_key_value() {
            if ts > watermark(epoch) {
                break;
            }
            timers.pop_first();
            let s = state.entry(k).or_default();
            out.push((
                "session".into(),
                k,
                s.2.map_or(0, |x| x.0),
                s.1.unwrap_or(0),
            ));
            s.2 = None;
        }
    }
    out.sort();
    (out, state)
}

/// How a run ends.
#[derive(Clone, Copy)]
enum End {
    /// The input ends after this epoch and the job finishes.
    Finish(u64),
    /// The input runs to this epoch, and once checkpoint `commit` is committed every worker
    /// drops the dataflow (what was not committed is lost, as in a crash).
    CrashAfterCommit { epochs: u64, commit: u64 },
}

fn run(dir: &std::path::Path, workers: usize, end: End, m: u32) -> Result<(), Error> {
    run_on(dir, workers, end, m, None)
}

/// [`run`], with every storage root filling up (writes fail with `ENOSPC`) after `full_after`
/// operations on it.
fn run_on(
    dir: &std::path::Path,
    workers: usize,
    end: End,
    m: u32,
    full_after: Option<u64>,
) -> Result<(), Error> {
    let mut config = JobConfig::new(dir.to_string_lossy())
        .with_max_parallelism(m)
        .with_checkpoint_every(EVERY);
    if let Some(ops) = full_after {
        config = config.with_storage_layer(move |inner| {
            let faulty = FaultyStorage::new(inner);
            faulty.fill_up_from(ops);
            Arc::new(faulty)
        });
    }
    let crash = Arc::new(AtomicBool::new(false));
    let guards = timely::execute(
        timely::Config::process(workers),
        move |w| -> Result<(), Error> {
            let worker =
                Worker::<u64>::start(&config, w.index(), w.peers(), ManualClock::new(0).shared())?;
            let logic = Sessions::new(worker.backend())?;
            let mut input = InputHandleVec::new();
            let dataflow = w.next_dataflow_index();
            let probe = w.dataflow(|scope| input.to_stream(scope).keyed_state(&worker, logic).1);
            let last = match end {
                End::Finish(e) | End::CrashAfterCommit { epochs: e, .. } => e,
            };
            for epoch in worker.resume_epoch()..=last {
                input.advance_to(epoch);
                for seq in (epoch - 1) * PER_EPOCH..epoch * PER_EPOCH {
                    if seq % w.peers() as u64 == w.index() as u64 {
                        input.send(event(seq));
                    }
                }
                // Keep the input at most two epochs ahead of the state.
                while probe.processing_before(epoch.saturating_sub(2)) {
                    probe.check()?;
                    w.step();
                }
            }
            if let End::CrashAfterCommit { commit, .. } = end {
                input.advance_to(last + 1);
                while !crash.load(Ordering::SeqCst) {
                    probe.check()?;
                    if w.index() == 0 && probe.progress().committed.is_some_and(|c| c >= commit) {
                        crash.store(true, Ordering::SeqCst);
                    }
                    w.step();
                }
                w.drop_dataflow(dataflow);
                return Ok(());
            }
            input.close();
            while !probe.is_done() {
                probe.check()?;
                w.step();
            }
            probe.check()
        },
    )
    .map_err(Error::Config)?;
    for r in guards.join() {
        r.map_err(Error::Config)??;
    }
    Ok(())
}

/// The committed outputs, sorted, and the committed state read back on one worker.
fn committed(dir: &std::path::Path) -> (Vec<Out>, State) {
    let config = JobConfig::new(dir.to_string_lossy()).with_max_parallelism(M);
    let log = config.commit_log().unwrap();
    let mut outs: Vec<Out> = log
        .records()
        .flat_map(|r| r.decode_outputs::<Out>().unwrap())
        .collect();
    outs.sort();
    let scratch = tempfile::tempdir().unwrap();
    // Read the state through a restore into one worker of a copy of the job's root, so the
    // job's own roots are not touched.
    copy_dir(dir, scratch.path());
    let reader = JobConfig::new(scratch.path().to_string_lossy()).with_max_parallelism(M);
    let worker = Worker::<u64>::start(&reader, 0, 1, ManualClock::new(0).shared()).unwrap();
    let state = Sessions::new(worker.backend()).unwrap().dump().unwrap();
    (outs, state)
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_dir(&entry.path(), &target);
        } else if !entry.file_name().to_string_lossy().starts_with('.') {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

#[test]
fn full_runs_match_the_oracle_on_any_number_of_workers() {
    let (want_out, want_state) = oracle(10);
    for workers in [1, 3] {
        let dir = tempfile::tempdir().unwrap();
        run(dir.path(), workers, End::Finish(10), M).unwrap();
        let (out, state) = committed(dir.path());
        assert_eq!(out, want_out, "{workers} workers: committed outputs");
        assert_eq!(state, want_state, "{workers} workers: final state");
        let log = JobConfig::new(dir.path().to_string_lossy())
            .commit_log()
            .unwrap();
        let ids: Vec<u64> = log.records().map(|r| r.id).collect();
        assert_eq!(
            ids,
            vec![3, 6, 9, 12],
            "{workers} workers: a cut every 3 epochs and one at the end"
        );
        assert!(log.records().all(|r| r.workers as usize == workers));
    }
}

#[test]
fn crashes_and_rescaling_restarts_lose_and_duplicate_nothing() {
    let (want_out, want_state) = oracle(20);
    let dir = tempfile::tempdir().unwrap();
    // 2 workers, crash once checkpoint 6 is committed (epochs up to 8 fed: some lost).
    run(
        dir.path(),
        2,
        End::CrashAfterCommit {
            epochs: 8,
            commit: 6,
        },
        M,
    )
    .unwrap();
    let log = JobConfig::new(dir.path().to_string_lossy())
        .commit_log()
        .unwrap();
    let first = log.latest().unwrap().id;
    assert!(first >= 6, "committed {first}");
    // 3 workers from there, crash again after the next commits.
    run(
        dir.path(),
        3,
        End::CrashAfterCommit {
            epochs: 14,
            commit: first + 3,
        },
        M,
    )
    .unwrap();
    let log = JobConfig::new(dir.path().to_string_lossy())
        .commit_log()
        .unwrap();
    assert_eq!(log.latest().unwrap().workers, 3);
    // 1 worker to the end.
    run(dir.path(), 1, End::Finish(20), M).unwrap();
    let (out, state) = committed(dir.path());
    assert_eq!(out.len(), want_out.len(), "no output lost or duplicated");
    assert_eq!(out, want_out);
    assert_eq!(state, want_state);
    // The rescale to fewer workers left no parts behind in roots no one restores.
    for j in 1..3 {
        let root = dir.path().join(format!("worker-{j}"));
        let left: Vec<_> = std::fs::read_dir(&root)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                    .collect()
            })
            .unwrap_or_default();
        assert!(left.is_empty(), "worker-{j} still holds {left:?}");
    }
}

#[test]
fn a_restart_with_another_max_parallelism_is_refused_and_leaves_the_commit_intact() {
    let dir = tempfile::tempdir().unwrap();
    run(dir.path(), 2, End::Finish(6), M).unwrap();
    let before = std::fs::read(
        dir.path()
            .join("commits")
            .join("commit-00000000000000000006"),
    )
    .unwrap();
    let e = run(dir.path(), 2, End::Finish(9), M * 2).unwrap_err();
    assert!(e.to_string().contains("max parallelism"), "{e}");
    let after = std::fs::read(
        dir.path()
            .join("commits")
            .join("commit-00000000000000000006"),
    )
    .unwrap();
    assert_eq!(before, after);
    // The same job goes on with the right value.
    run(dir.path(), 2, End::Finish(9), M).unwrap();
    let (out, state) = committed(dir.path());
    let (want_out, want_state) = oracle(9);
    assert_eq!(out, want_out);
    assert_eq!(state, want_state);
}

#[test]
fn a_damaged_commit_record_stops_the_start_with_its_name() {
    let dir = tempfile::tempdir().unwrap();
    run(dir.path(), 1, End::Finish(3), M).unwrap();
    let path = dir
        .path()
        .join("commits")
        .join("commit-00000000000000000003");
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    let e = run(dir.path(), 1, End::Finish(6), M).unwrap_err();
    assert!(e.to_string().contains("commit-00000000000000000003"), "{e}");
}

#[test]
fn worker_indices_and_counts_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let config = JobConfig::new(dir.path().to_string_lossy()).with_max_parallelism(4);
    let clock = ManualClock::new(0);
    assert!(matches!(
        Worker::<u64>::start(&config, 2, 2, clock.shared()),
        Err(Error::Config(_))
    ));
    assert!(matches!(
        Worker::<u64>::start(&config, 0, 5, clock.shared()),
        Err(Error::Config(_))
    ));
}

#[test]
fn a_full_checkpoint_storage_stops_the_job_and_the_last_commit_stays_the_restart_point() {
    let dir = tempfile::tempdir().unwrap();
    run(dir.path(), 2, End::Finish(6), M).unwrap();
    let log = JobConfig::new(dir.path().to_string_lossy())
        .commit_log()
        .unwrap();
    let before: Vec<_> = log.records().cloned().collect();
    assert_eq!(before.last().unwrap().id, 6);
    // The storage fills up a few operations into the restart: a part or a commit fails.
    let e = run_on(dir.path(), 2, End::Finish(15), M, Some(12)).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("checkpoint") || msg.contains("commit"),
        "{msg}"
    );
    assert!(
        msg.to_lowercase().contains("space"),
        "the storage's error is named: {msg}"
    );
    let log = JobConfig::new(dir.path().to_string_lossy())
        .commit_log()
        .unwrap();
    let after: Vec<_> = log.records().cloned().collect();
    assert_eq!(
        after[..before.len()],
        before[..],
        "earlier commits untouched"
    );
    // With space again, the job resumes from its last commit and ends as the oracle says.
    run(dir.path(), 3, End::Finish(15), M).unwrap();
    let (out, state) = committed(dir.path());
    let (want_out, want_state) = oracle(15);
    assert_eq!(out, want_out);
    assert_eq!(state, want_state);
}
