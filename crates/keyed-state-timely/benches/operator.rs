//! The operator's overhead (issue 16): group `operator_overhead` runs the same keyed logic over
//! the same input with the same checkpoints, `plain_backend` on a `KeyedStateBackend` in one
//! thread (the baseline: no timely, no routing), `timely_1x1` through `keyed_state` on one
//! timely worker (routing, exchange, stashing and sorting by epoch, marks, the commit log).
//!
//! The logic per event: a count (Value), a running total (Reducing), a session of events whose
//! event-time timer moves with every event (deleted and registered again), fired by the
//! watermark at the end of each epoch. 100,000 events over 10,000 keys, epochs of 1,000, a
//! heap checkpoint to a local directory every 10 epochs.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use keyed_state::checkpoint::{CheckpointStore, LocalStorage};
use keyed_state::clock::ManualClock;
use keyed_state::state::{
    ReducingState, ReducingStateDescriptor, ValueState, ValueStateDescriptor,
};
use keyed_state::timer::{Timer, TimerService};
use keyed_state::{AnyEngine, EngineConfig, HeapEngine, KeyedStateBackend};
use keyed_state_timely::{JobConfig, KeyedLogic, KeyedStateStream, Worker};
use serde::{Deserialize, Serialize};
use timely::dataflow::InputHandleVec;

const EVENTS: u64 = 100_000;
const KEYS: u64 = 10_000;
const PER_EPOCH: u64 = 1_000;
const EVERY: u64 = 10;
const GAP_MS: u64 = 30_000;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct Event {
    seq: u64,
    key: u64,
    amount: u64,
    ts: u64,
}

fn event(seq: u64) -> Event {
    let x = seq.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    Event {
        seq,
        key: (x >> 17) % KEYS,
        amount: (x >> 40) % 100,
        ts: seq * 10,
    }
}

struct Logic {
    backend: Arc<KeyedStateBackend<u64, AnyEngine>>,
    count: ValueState<u64, u64>,
    total: ReducingState<u64, u64>,
    last: ValueState<u64, u64>,
    timers: Arc<TimerService<u64>>,
}

impl Logic {
    fn new(backend: Arc<KeyedStateBackend<u64, AnyEngine>>) -> Self {
        Logic {
            count: backend
                .value_state(&ValueStateDescriptor::new("count"))
                .expect("count"),
            total: backend
                .reducing_state(&ReducingStateDescriptor::new("total", |a: u64, b| a + b))
                .expect("total"),
            last: backend
                .value_state(&ValueStateDescriptor::new("last"))
                .expect("last"),
            timers: backend.timer_service("sessions").expect("timers"),
            backend,
        }
    }
}

impl KeyedLogic for Logic {
    type Key = u64;
    type Record = Event;
    type Output = (u64, u64);

    fn key(e: &Event) -> u64 {
        e.key
    }

    fn process(&mut self, _: u64, e: Event, out: &mut Vec<(u64, u64)>) -> keyed_state::Result<()> {
        let key = self.backend.key(e.key)?;
        let n = self.count.get(&key, &())?.unwrap_or(0) + 1;
        self.count.update(&key, &(), n)?;
        self.total.add(&key, &(), e.amount)?;
        if let Some(last) = self.last.get(&key, &())? {
            self.timers
                .delete_event_time_timer(&key, &(), last + GAP_MS)?;
        }
        self.last.update(&key, &(), e.ts)?;
        self.timers
            .register_event_time_timer(&key, &(), e.ts + GAP_MS)?;
        if n.is_multiple_of(50) {
            out.push((e.key, n));
        }
        Ok(())
    }

    fn on_epoch_end(&mut self, epoch: u64, out: &mut Vec<(u64, u64)>) -> keyed_state::Result<()> {
        let watermark = (epoch * PER_EPOCH * 10).saturating_sub(1);
        self.timers.advance_watermark(watermark, |t: Timer<u64>| {
            let key = self.backend.key(t.key)?;
            out.push((t.key, self.total.get(&key, &())?.unwrap_or(0)));
            self.last.clear(&key, &())
        })?;
        Ok(())
    }
}

/// The logic on a backend in one thread, epoch by epoch, with the same checkpoints.
fn plain(dir: &std::path::Path) -> usize {
    let config = EngineConfig::new(128)
        .expect("config")
        .with_clock(ManualClock::new(0).shared());
    let backend = Arc::new(KeyedStateBackend::new(AnyEngine::from(HeapEngine::new(
        config,
    ))));
    let mut logic = Logic::new(backend.clone());
    let storage = Arc::new(LocalStorage::new(dir).expect("storage"));
    let store = Arc::new(CheckpointStore::open(storage, 2).expect("store").0);
    let mut out = Vec::new();
    let mut pending = None;
    for epoch in 1..=EVENTS / PER_EPOCH {
        for seq in (epoch - 1) * PER_EPOCH..epoch * PER_EPOCH {
            logic.process(epoch, event(seq), &mut out).expect("process");
        }
        logic.on_epoch_end(epoch, &mut out).expect("advance");
        if epoch.is_multiple_of(EVERY) {
            if let Some(p) = pending.take() {
                keyed_state::PendingCheckpoint::wait(p).expect("checkpoint");
            }
            pending = Some(
                backend
                    .checkpoint(&store, epoch, &[("epoch", epoch)])
                    .expect("checkpoint"),
            );
        }
    }
    if let Some(p) = pending {
        p.wait().expect("checkpoint");
    }
    out.len()
}

/// The logic through the operator on one timely worker.
fn operator(dir: &std::path::Path) -> u64 {
    let config = JobConfig::new(dir.to_string_lossy()).with_checkpoint_every(EVERY);
    let guards = timely::execute(timely::Config::thread(), move |w| {
        let worker =
            Worker::<u64>::start(&config, w.index(), w.peers(), ManualClock::new(0).shared())
                .expect("start");
        let logic = Logic::new(worker.backend().clone());
        let mut input = InputHandleVec::new();
        let probe = w.dataflow(|scope| input.to_stream(scope).keyed_state(&worker, logic).1);
        for epoch in 1..=EVENTS / PER_EPOCH {
            input.advance_to(epoch);
            for seq in (epoch - 1) * PER_EPOCH..epoch * PER_EPOCH {
                input.send(event(seq));
            }
            while probe.processing_before(epoch.saturating_sub(EVERY + 2)) {
                w.step();
            }
        }
        input.close();
        while !probe.is_done() {
            probe.check().expect("job");
            w.step();
        }
        probe.progress().outputs_committed
    })
    .expect("timely");
    guards.join().into_iter().map(|r| r.expect("worker")).sum()
}

fn overhead(c: &mut Criterion) {
    let mut g = c.benchmark_group("operator_overhead");
    g.throughput(Throughput::Elements(EVENTS));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(20));
    g.bench_function("plain_backend", |b| {
        b.iter(|| {
            let dir = tempfile::tempdir().expect("dir");
            black_box(plain(dir.path()))
        });
    });
    g.bench_function("timely_1x1", |b| {
        b.iter(|| {
            let dir = tempfile::tempdir().expect("dir");
            black_box(operator(dir.path()))
        });
    });
    g.finish();
}

criterion_group!(benches, overhead);
criterion_main!(benches);
