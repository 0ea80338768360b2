//! The stateful operator and the committer, as timely operators.
//!
//! ```text
//!  input ──route──exchange by key group──▶ keyed-state ──exchange to worker 0──▶ commit ──▶ committed outputs
//!        (marks to every worker)            (per worker)   (outputs, parts)     (worker 0)
//! ```
//!
//! - **route** sends each record to the worker owning its key group
//!   (`operator_for_key_group`), and, once per batch, a *mark* of the batch's epoch to every
//!   worker, so that every worker knows which epochs carried data anywhere: the checkpoint
//!   cuts below depend on that set, which is then the same on every worker.
//! - **keyed-state** stashes records by epoch; once the input frontier passes an epoch, it
//!   processes that epoch's records in their order (`Ord`), between two calls of
//!   [`KeyedLogic::on_epoch_end`] (the previous epoch's, then this one's) which fire timers.
//!   When the frontier passes a multiple `m` of the checkpoint interval and some epoch in
//!   `(previous cut, m]` carried data, it calls `on_epoch_end(m)` and starts checkpoint `m`
//!   of its backend: every worker then has exactly the records of epochs `≤ m` in its state
//!   (the alignment comes from timely's progress tracking, no barriers). The upload runs in
//!   the background while later epochs are processed; a capability at `m` is held until it
//!   completes, then the worker's *part* goes to the committer. At the end of the input a
//!   last cut is taken at the next multiple. One checkpoint at a time: a cut that comes while
//!   the previous upload runs waits for it.
//! - **commit** (worker 0) collects outputs by epoch and parts by checkpoint; once it has
//!   every worker's part of `m` and the outputs' frontier has passed `m`, it publishes the
//!   commit record with the outputs of epochs `≤ m` — the exactly-once sink — and emits them
//!   downstream.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use keyed_state::checkpoint::CheckpointStorage;
use keyed_state::codec::Codec;
use keyed_state::key_group::{key_group_for_bytes, operator_for_key_group};
use keyed_state::{PendingCheckpoint, StateKey};
use serde::{Deserialize, Serialize};
use timely::ExchangeData;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::{Capability, Exchange, Probe};
use timely::dataflow::{ProbeHandle, StreamVec};

use crate::commit::{CommitLog, CommitRecord};
use crate::job::{Worker, worker_root};
use crate::progress::{JobProbe, Progress};

/// A job's logic per key, run by the keyed-state operator on the worker that owns the key.
///
/// The logic keeps the state views and timer services it registered on the worker's backend
/// ([`Worker::backend`]) and uses them in [`process`](Self::process); timers fire in
/// [`on_epoch_end`](Self::on_epoch_end), where the logic advances its timer services: epochs
/// are timely's times, and the input frontier is the watermark.
pub trait KeyedLogic: 'static {
    /// The key type.
    type Key: StateKey;
    /// The input records. Their order (`Ord`) is the order in which one epoch's records are
    /// processed, whatever order they arrive in: give records a total order (a sequence
    /// number, say) for results that do not depend on scheduling.
    type Record: ExchangeData + Ord;
    /// What the logic emits; committed with checkpoints in its [`Codec`] encoding.
    type Output: ExchangeData + Codec;

    /// The key of a record.
    fn key(record: &Self::Record) -> Self::Key;

    /// Processes one record of `epoch`, pushing outputs into `out`.
    ///
    /// # Errors
    ///
    /// Any state failure: it stops the job (the last committed checkpoint stays intact).
    fn process(
        &mut self,
        epoch: u64,
        record: Self::Record,
        out: &mut Vec<Self::Output>,
    ) -> keyed_state::Result<()>;

    /// Called once the input has no more records of epochs `≤ epoch` for this worker: fire
    /// the timers due (for example `advance_watermark(epoch_end_time)`). Called more than once
    /// with the same or smaller epochs; must be idempotent for them.
    ///
    /// # Errors
    ///
    /// Any state failure: it stops the job.
    fn on_epoch_end(&mut self, epoch: u64, out: &mut Vec<Self::Output>) -> keyed_state::Result<()>;
}

/// What the route step sends to a keyed-state worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum Routed<R> {
    /// The batch's epoch carried data (somewhere).
    Mark,
    /// A record this worker owns.
    Record(R),
}

/// What a keyed-state worker sends to the committer.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum Event<O> {
    Output(O),
    /// Worker `worker`'s part of checkpoint `id` completed (or failed, with why).
    Part {
        id: u64,
        worker: usize,
        failure: Option<String>,
    },
}

/// Adds [`keyed_state`](KeyedStateStream::keyed_state) to timely streams of epochs (`u64`).
pub trait KeyedStateStream<'scope, R> {
    /// Runs `logic` over the stream, keyed by [`KeyedLogic::key`], with the state of `worker`,
    /// checkpointing aligned with the epochs and committing outputs exactly once (see the
    /// module documentation). Returns the committed outputs (on worker 0; empty elsewhere)
    /// and a probe of the job's progress.
    fn keyed_state<L: KeyedLogic<Record = R>>(
        self,
        worker: &Worker<L::Key>,
        logic: L,
    ) -> (StreamVec<'scope, u64, L::Output>, JobProbe);
}

impl<'scope, R: ExchangeData + Ord> KeyedStateStream<'scope, R> for StreamVec<'scope, u64, R> {
    fn keyed_state<L: KeyedLogic<Record = R>>(
        self,
        worker: &Worker<L::Key>,
        logic: L,
    ) -> (StreamVec<'scope, u64, L::Output>, JobProbe) {
        let scope = self.scope();
        let peers = scope.peers();
        let m = worker.config.max_parallelism();
        let progress = Rc::new(RefCell::new(Progress::default()));
        let failure = worker.config.failure.clone();

        // Route: each record to its key group's owner, one mark per batch to everyone.
        let routed = self
            .unary::<CapacityContainerBuilder<Vec<(u64, Routed<R>)>>, _, _, _>(
                Pipeline,
                "keyed-state-route",
                move |_, _| {
                    let mut bytes = Vec::new();
                    move |input, output| {
                        input.for_each(|cap, data| {
                            let mut session = output.session(&cap);
                            for r in data.drain(..) {
                                bytes.clear();
                                L::key(&r).encode(&mut bytes);
                                let group = key_group_for_bytes(&bytes, m);
                                let to = operator_for_key_group(m, peers_u32(peers), group);
                                session.give((u64::from(to), Routed::Record(r)));
                            }
                            for w in 0..peers {
                                session.give((w as u64, Routed::Mark));
                            }
                        });
                    }
                },
            )
            .exchange(|(to, _): &(u64, Routed<R>)| *to);

        let mut keyed = KeyedOperator {
            logic,
            backend_checkpoint: {
                let backend = worker.backend.clone();
                Box::new(move |store, id| backend.checkpoint(store, id, &[("epoch", id)]))
            },
            store: worker.store.clone(),
            commits: worker.commits.clone(),
            index: worker.index,
            every: worker.config.checkpoint_every(),
            last_cut: worker.resume_epoch() - 1,
            dirty: false,
            stash: BTreeMap::new(),
            marked: BTreeSet::new(),
            pending: None,
            progress: progress.clone(),
            failure: failure.clone(),
            dead: false,
        };
        let events = routed
            .unary_frontier::<CapacityContainerBuilder<Vec<Event<L::Output>>>, _, _, _>(
                Pipeline,
                "keyed-state",
                move |cap, info| {
                    let activator = scope.activator_for(info.address);
                    let mut held = Some(cap);
                    move |(input, frontier), output| {
                        input.for_each(|cap, data| {
                            for (_, msg) in data.drain(..) {
                                match msg {
                                    Routed::Mark => {
                                        keyed.marked.insert(epoch_of(&cap));
                                    }
                                    Routed::Record(r) => {
                                        keyed.stash.entry(epoch_of(&cap)).or_default().push(r);
                                    }
                                }
                            }
                        });
                        let f = frontier.frontier().first().copied();
                        let mut out = Vec::new();
                        keyed.step(f, &mut held, &mut out);
                        for (cap, events) in out {
                            output.session(&cap).give_iterator(events.into_iter());
                        }
                        if keyed.pending.is_some() {
                            activator.activate_after(Duration::from_millis(2));
                        }
                    }
                },
            );

        let processed = ProbeHandle::new();
        let events = events.probe_with(&processed);
        let mut committer = Committer {
            log: None,
            opened: None,
            workers: peers,
            max_parallelism: m,
            old_workers: worker.restored.as_ref().map_or(0, |r| r.workers as usize),
            config: worker.config.clone(),
            outputs: BTreeMap::new(),
            parts: BTreeMap::new(),
            progress: progress.clone(),
            failure,
        };
        if worker.index == 0 {
            committer.log = Some(worker.commits.clone());
        }
        let committed = events
            .exchange(|_: &Event<L::Output>| 0)
            .unary_frontier::<CapacityContainerBuilder<Vec<L::Output>>, _, _, _>(
                Pipeline,
                "keyed-state-commit",
                move |_, _| {
                    move |(input, frontier), output| {
                        input.for_each(|cap, data| {
                            for e in data.drain(..) {
                                committer.receive(&cap, e);
                            }
                        });
                        let f = frontier.frontier().first().copied();
                        for (cap, outs) in committer.commit_ready(f) {
                            output.session(&cap).give_iterator(outs.into_iter());
                        }
                    }
                },
            );
        let done = ProbeHandle::new();
        let committed = committed.probe_with(&done);
        (
            committed,
            JobProbe::new(
                processed,
                done,
                progress,
                worker.config.failure.clone(),
                worker.index,
            ),
        )
    }
}

fn peers_u32(peers: usize) -> u32 {
    // Worker::start checked the number of workers against the key groups (a u32).
    u32::try_from(peers).unwrap_or(u32::MAX)
}

type Checkpointer = Box<
    dyn Fn(
        &Arc<keyed_state::checkpoint::CheckpointStore>,
        u64,
    ) -> keyed_state::Result<PendingCheckpoint>,
>;

/// The keyed-state operator's state on one worker.
struct KeyedOperator<L: KeyedLogic> {
    logic: L,
    backend_checkpoint: Checkpointer,
    store: Arc<keyed_state::checkpoint::CheckpointStore>,
    commits: Arc<dyn CheckpointStorage>,
    index: usize,
    every: u64,
    /// The last cut taken or passed over (no data since the one before).
    last_cut: u64,
    /// An epoch with data (anywhere) was processed since `last_cut`.
    dirty: bool,
    stash: BTreeMap<u64, Vec<L::Record>>,
    /// Epochs with data somewhere, not yet processed.
    marked: BTreeSet<u64>,
    pending: Option<(PendingCheckpoint, Capability<u64>)>,
    progress: Rc<RefCell<Progress>>,
    failure: crate::job::FailureSlot,
    dead: bool,
}

type Emitted<O> = Vec<(Capability<u64>, Vec<Event<O>>)>;

impl<L: KeyedLogic> KeyedOperator<L> {
    /// Does all the work the frontier `f` (`None`: the input ended) allows.
    fn step(
        &mut self,
        f: Option<u64>,
        held: &mut Option<Capability<u64>>,
        out: &mut Emitted<L::Output>,
    ) {
        if self.dead || crate::job::failed(&self.failure) {
            self.stop(held);
            return;
        }
        if let Err(e) = self.run(f, held, out) {
            self.fail(&e.to_string());
            self.stop(held);
        }
    }

    fn stop(&mut self, held: &mut Option<Capability<u64>>) {
        self.dead = true;
        self.stash.clear();
        self.marked.clear();
        self.pending = None;
        *held = None;
    }

    fn fail(&mut self, reason: &str) {
        tracing::error!(worker = self.index, %reason, "keyed-state operator failed; stopping the job");
        crate::job::set_failure(&self.failure, self.index, reason);
    }

    fn run(
        &mut self,
        f: Option<u64>,
        held: &mut Option<Capability<u64>>,
        out: &mut Emitted<L::Output>,
    ) -> Result<(), String> {
        self.poll(out)?;
        let complete = |t: u64| f.is_none_or(|f| t < f);
        loop {
            let Some(cap) = held.as_ref() else {
                return Ok(());
            };
            let next_data = self.marked.first().copied().filter(|&t| complete(t));
            let cut = self.last_cut + self.every - self.last_cut % self.every;
            match next_data {
                Some(t) if t <= cut || !self.dirty => {
                    if !self.dirty {
                        // No data since the last cut: no checkpoint for the multiples before t.
                        self.last_cut = self.last_cut.max((t - 1) / self.every * self.every);
                    }
                    self.marked.remove(&t);
                    let records = self.stash.remove(&t).unwrap_or_default();
                    let cap = cap.delayed(&t);
                    let mut outs = Vec::new();
                    self.logic
                        .on_epoch_end(t - 1, &mut outs)
                        .map_err(|e| e.to_string())?;
                    let mut records = records;
                    records.sort();
                    for r in records {
                        self.logic
                            .process(t, r, &mut outs)
                            .map_err(|e| e.to_string())?;
                    }
                    self.logic
                        .on_epoch_end(t, &mut outs)
                        .map_err(|e| e.to_string())?;
                    self.dirty = true;
                    self.progress.borrow_mut().epochs_processed += 1;
                    push(out, cap, outs.into_iter().map(Event::Output).collect());
                }
                _ if self.dirty && (complete(cut) || (f.is_none() && self.marked.is_empty())) => {
                    if self.pending.is_some() {
                        return Ok(()); // one checkpoint at a time: polled again shortly
                    }
                    let cap = cap.delayed(&cut);
                    let mut outs = Vec::new();
                    self.logic
                        .on_epoch_end(cut, &mut outs)
                        .map_err(|e| e.to_string())?;
                    push(
                        out,
                        cap.clone(),
                        outs.into_iter().map(Event::Output).collect(),
                    );
                    crate::job::Worker::<L::Key>::prune(&self.store, self.commits.as_ref())
                        .map_err(|e| format!("discarding parts older than the last commit: {e}"))?;
                    let pending = (self.backend_checkpoint)(&self.store, cut)
                        .map_err(|e| format!("checkpoint {cut}: {e}"))?;
                    tracing::debug!(worker = self.index, checkpoint = cut, "checkpoint started");
                    self.pending = Some((pending, cap));
                    self.last_cut = cut;
                    self.dirty = false;
                    self.poll(out)?;
                }
                _ => break,
            }
        }
        // Everything still to come is at or after the frontier, a stashed epoch or a cut
        // waiting for the previous upload.
        let mut lower = f;
        if let Some(&t) = self.marked.first() {
            lower = Some(lower.map_or(t, |l| l.min(t)));
        }
        if self.dirty {
            let cut = self.last_cut + self.every - self.last_cut % self.every;
            lower = Some(lower.map_or(cut, |l| l.min(cut)));
        }
        match lower {
            Some(t) => {
                if let Some(c) = held.as_mut()
                    && *c.time() < t
                {
                    c.downgrade(&t);
                }
            }
            None => *held = None,
        }
        Ok(())
    }

    /// Emits the part of the running checkpoint once its upload completed.
    fn poll(&mut self, out: &mut Emitted<L::Output>) -> Result<(), String> {
        if !self.pending.as_ref().is_some_and(|(p, _)| p.is_finished()) {
            return Ok(());
        }
        let Some((pending, cap)) = self.pending.take() else {
            return Ok(());
        };
        let id = pending.id();
        let failure = pending.wait().err().map(|e| e.to_string());
        let event = Event::Part {
            id,
            worker: self.index,
            failure: failure.clone(),
        };
        push(out, cap, vec![event]);
        match failure {
            None => {
                self.progress.borrow_mut().checkpoints += 1;
                tracing::debug!(worker = self.index, checkpoint = id, "part completed");
                Ok(())
            }
            Some(e) => Err(format!("checkpoint {id}: {e}")),
        }
    }
}

fn push<O>(out: &mut Emitted<O>, cap: Capability<u64>, events: Vec<Event<O>>) {
    if !events.is_empty() {
        out.push((cap, events));
    }
}

/// The committer's state (worker 0 publishes; elsewhere it only forwards nothing).
struct Committer<O> {
    /// Worker 0's commit log storage, and the log once read.
    log: Option<Arc<dyn CheckpointStorage>>,
    opened: Option<CommitLog>,
    workers: usize,
    max_parallelism: u32,
    /// Workers of the checkpoint the job was restored from: roots beyond `workers` go once
    /// the first checkpoint of this run is committed.
    old_workers: usize,
    config: crate::job::JobConfig,
    outputs: BTreeMap<u64, Vec<O>>,
    /// By checkpoint id: the parts received and a capability at the id.
    parts: BTreeMap<u64, (usize, Capability<u64>)>,
    progress: Rc<RefCell<Progress>>,
    failure: crate::job::FailureSlot,
}

impl<O: Codec> Committer<O> {
    fn receive(&mut self, cap: &timely::dataflow::operators::InputCapability<u64>, e: Event<O>) {
        match e {
            Event::Output(o) => self.outputs.entry(epoch_of(cap)).or_default().push(o),
            Event::Part {
                id,
                worker,
                failure,
            } => {
                if let Some(reason) = failure {
                    crate::job::set_failure(
                        &self.failure,
                        worker,
                        &format!("checkpoint {id}: {reason}"),
                    );
                    return;
                }
                let entry = self
                    .parts
                    .entry(id)
                    .or_insert_with(|| (0, cap.delayed(&id, 0)));
                entry.0 += 1;
            }
        }
    }

    /// Commits every checkpoint whose parts are all in and whose outputs are complete.
    fn commit_ready(&mut self, f: Option<u64>) -> Vec<(Capability<u64>, Vec<O>)> {
        let mut emitted = Vec::new();
        if crate::job::failed(&self.failure) {
            self.parts.clear();
            self.outputs.clear();
            return emitted;
        }
        while let Some((&id, (count, _))) = self.parts.first_key_value() {
            if *count < self.workers || f.is_some_and(|f| f <= id) {
                break;
            }
            let Some((_, (_, cap))) = self.parts.pop_first() else {
                break;
            };
            let later = self.outputs.split_off(&(id + 1));
            let mine = std::mem::replace(&mut self.outputs, later);
            let mut encoded: Vec<(u64, Vec<u8>, O)> = Vec::new();
            for (t, outs) in mine {
                for o in outs {
                    encoded.push((t, o.to_bytes(), o));
                }
            }
            encoded.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
            if let Err(e) = self.publish(id, &encoded) {
                crate::job::set_failure(
                    &self.failure,
                    0,
                    &format!("committing checkpoint {id}: {e}"),
                );
                return emitted;
            }
            emitted.push((cap, encoded.into_iter().map(|(_, _, o)| o).collect()));
        }
        emitted
    }

    fn publish(&mut self, id: u64, outputs: &[(u64, Vec<u8>, O)]) -> keyed_state::Result<()> {
        let Some(storage) = &self.log else {
            return Ok(()); // only worker 0 commits; the others never receive parts
        };
        let record = CommitRecord {
            id,
            workers: u32::try_from(self.workers).unwrap_or(u32::MAX),
            max_parallelism: self.max_parallelism,
            outputs: outputs.iter().map(|(_, b, _)| b.clone()).collect(),
        };
        if self.opened.is_none() {
            self.opened = Some(CommitLog::open(storage.clone())?);
        }
        if let Some(log) = self.opened.as_mut() {
            log.commit(record)?;
        }
        tracing::info!(
            checkpoint = id,
            outputs = outputs.len(),
            "job checkpoint committed"
        );
        {
            let mut p = self.progress.borrow_mut();
            p.committed = Some(id);
            p.outputs_committed += outputs.len() as u64;
        }
        // The roots of workers a rescale to fewer left behind hold nothing anyone restores now.
        for j in self.workers..std::mem::take(&mut self.old_workers) {
            let root = self.config.storage(&worker_root(j))?;
            for path in root.list()? {
                root.delete(&path)?;
            }
        }
        Ok(())
    }
}

/// The epoch of a batch (its stamp's least time; epochs are totally ordered).
fn epoch_of(cap: &timely::dataflow::operators::InputCapability<u64>) -> u64 {
    cap.least().copied().unwrap_or_default()
}
