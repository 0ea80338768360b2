//! `ops_vs_model`: a random sequence of operations on every view (namespaces, TTL with clock
//! advances) and on a timer service, applied to the heap engine, the RocksDB engine and a model
//! on plain maps; every result must agree.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use arbitrary::Unstructured;

use crate::HeapEngine;
use crate::backend::rocksdb::{RocksDbEngine, RocksDbOptions};
use crate::clock::ManualClock;
use crate::error::Result;
use crate::key_group::KeyGroupRange;
use crate::state::{
    AggregateFunction, AggregatingState, AggregatingStateDescriptor, ListState,
    ListStateDescriptor, MapState, MapStateDescriptor, ReducingState, ReducingStateDescriptor,
    ValueState, ValueStateDescriptor,
};
use crate::timer::{Timer, TimerService};
use crate::ttl::TtlConfig;
use crate::{Engine, EngineConfig, KeyedStateBackend};

const M: u32 = 8;
/// The TTL of `value` and `map`, ms.
const TTL: u64 = 100;

/// One operation. Keys are 0..6, namespaces 0..3, so sequences revisit entries.
#[derive(Debug, Clone)]
enum Op {
    ValueUpdate(u32, u8, u64),
    ValueGet(u32, u8),
    ValueClear(u32, u8),
    ListAdd(u32, u16),
    ListUpdate(u32, Vec<u16>),
    ListGet(u32),
    ListClear(u32),
    MapPut(u32, u8, u8, u32),
    MapRemove(u32, u8, u8),
    MapGet(u32, u8, u8),
    MapEntries(u32, u8),
    SumAdd(u32, u32),
    SumGet(u32),
    AvgAdd(u32, u32),
    AvgGet(u32),
    Advance(u64),
    Register(u32, u8, u64),
    Delete(u32, u8, u64),
    Watermark(u64),
    Keys,
}

fn op(u: &mut Unstructured<'_>) -> arbitrary::Result<Op> {
    let k = |u: &mut Unstructured<'_>| u.int_in_range(0..=5u32);
    let ns = |u: &mut Unstructured<'_>| u.int_in_range(0..=2u8);
    Ok(match u.int_in_range(0..=19u8)? {
        0 => Op::ValueUpdate(k(u)?, ns(u)?, u.arbitrary()?),
        1 => Op::ValueGet(k(u)?, ns(u)?),
        2 => Op::ValueClear(k(u)?, ns(u)?),
        3 => Op::ListAdd(k(u)?, u.arbitrary()?),
        4 => {
            let key = k(u)?;
            let n = u.int_in_range(0..=3usize)?;
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                v.push(u.arbitrary()?);
            }
            Op::ListUpdate(key, v)
        }
        5 => Op::ListGet(k(u)?),
        6 => Op::ListClear(k(u)?),
        7 => Op::MapPut(k(u)?, ns(u)?, u.int_in_range(0..=4u8)?, u.arbitrary()?),
        8 => Op::MapRemove(k(u)?, ns(u)?, u.int_in_range(0..=4u8)?),
        9 => Op::MapGet(k(u)?, ns(u)?, u.int_in_range(0..=4u8)?),
        10 => Op::MapEntries(k(u)?, ns(u)?),
        11 => Op::SumAdd(k(u)?, u.arbitrary()?),
        12 => Op::SumGet(k(u)?),
        13 => Op::AvgAdd(k(u)?, u.arbitrary()?),
        14 => Op::AvgGet(k(u)?),
        15 => Op::Advance(u.int_in_range(0..=150u64)?),
        16 => Op::Register(k(u)?, ns(u)?, u.int_in_range(0..=50u64)?),
        17 => Op::Delete(k(u)?, ns(u)?, u.int_in_range(0..=50u64)?),
        18 => Op::Watermark(u.int_in_range(0..=50u64)?),
        _ => Op::Keys,
    })
}

/// Mean of u32s as (sum, count).
#[derive(Debug, Clone, Copy)]
struct Mean;

impl AggregateFunction for Mean {
    type In = u32;
    type Acc = (u64, u64);
    type Out = (u64, u64);
    fn create_accumulator(&self) -> (u64, u64) {
        (0, 0)
    }
    fn add(&self, x: u32, (s, n): (u64, u64)) -> (u64, u64) {
        (s + u64::from(x), n + 1)
    }
    fn get_result(&self, acc: &(u64, u64)) -> (u64, u64) {
        *acc
    }
    fn merge(&self, a: (u64, u64), b: (u64, u64)) -> (u64, u64) {
        (a.0 + b.0, a.1 + b.1)
    }
}

fn sum(a: u64, b: u64) -> u64 {
    a.wrapping_add(b)
}

/// The system under test: one backend and its views.
struct Subject<E: Engine> {
    b: KeyedStateBackend<u32, E>,
    value: ValueState<u32, u64, u8>,
    list: ListState<u32, u16>,
    map: MapState<u32, u8, u32, u8>,
    sum: ReducingState<u32, u64>,
    avg: AggregatingState<u32, Mean>,
    timers: std::sync::Arc<TimerService<u32, u8>>,
}

impl<E: Engine> Subject<E> {
    fn new(engine: E) -> Result<Self> {
        let b = KeyedStateBackend::new(engine);
        let ttl = TtlConfig::new(Duration::from_millis(TTL));
        Ok(Subject {
            value: b.value_state(&ValueStateDescriptor::new("value").with_ttl(ttl.clone()))?,
            list: b.list_state(&ListStateDescriptor::new("list"))?,
            map: b.map_state(&MapStateDescriptor::new("map").with_ttl(ttl))?,
            sum: b.reducing_state(&ReducingStateDescriptor::new("sum", sum))?,
            avg: b.aggregating_state(&AggregatingStateDescriptor::new("avg", Mean))?,
            timers: b.timer_service("timers")?,
            b,
        })
    }

    /// Applies `op`; returns what it observed, formatted.
    fn apply(&self, op: &Op, clock: &ManualClock) -> Result<String> {
        let key = |k: u32| self.b.key(k);
        Ok(match op {
            Op::ValueUpdate(k, ns, v) => format!("{:?}", self.value.update(&key(*k)?, ns, *v)?),
            Op::ValueGet(k, ns) => format!("{:?}", self.value.get(&key(*k)?, ns)?),
            Op::ValueClear(k, ns) => format!("{:?}", self.value.clear(&key(*k)?, ns)?),
            Op::ListAdd(k, v) => format!("{:?}", self.list.add(&key(*k)?, &(), *v)?),
            Op::ListUpdate(k, v) => format!("{:?}", self.list.update(&key(*k)?, &(), v.clone())?),
            Op::ListGet(k) => format!("{:?}", self.list.get(&key(*k)?, &())?.collect::<Vec<_>>()),
            Op::ListClear(k) => format!("{:?}", self.list.clear(&key(*k)?, &())?),
            Op::MapPut(k, ns, uk, v) => format!("{:?}", self.map.put(&key(*k)?, ns, *uk, *v)?),
            Op::MapRemove(k, ns, uk) => format!("{:?}", self.map.remove(&key(*k)?, ns, uk)?),
            Op::MapGet(k, ns, uk) => format!("{:?}", self.map.get(&key(*k)?, ns, uk)?),
            Op::MapEntries(k, ns) => {
                // Iteration order is engine-defined (hash order on the heap): compare sorted.
                let mut entries: Vec<(u8, u32)> = self.map.entries(&key(*k)?, ns)?.collect();
                entries.sort_unstable();
                format!("{entries:?}")
            }
            Op::SumAdd(k, v) => format!("{:?}", self.sum.add(&key(*k)?, &(), u64::from(*v))?),
            Op::SumGet(k) => format!("{:?}", self.sum.get(&key(*k)?, &())?),
            Op::AvgAdd(k, v) => format!("{:?}", self.avg.add(&key(*k)?, &(), *v)?),
            Op::AvgGet(k) => format!("{:?}", self.avg.get(&key(*k)?, &())?),
            Op::Advance(ms) => {
                clock.advance_millis(*ms);
                String::new()
            }
            Op::Register(k, ns, ts) => {
                format!(
                    "{:?}",
                    self.timers.register_event_time_timer(&key(*k)?, ns, *ts)?
                )
            }
            Op::Delete(k, ns, ts) => {
                format!(
                    "{:?}",
                    self.timers.delete_event_time_timer(&key(*k)?, ns, *ts)?
                )
            }
            Op::Watermark(wm) => {
                let mut fired = Vec::new();
                self.timers.advance_watermark(*wm, |t: Timer<u32, u8>| {
                    fired.push((t.timestamp, t.key, t.namespace));
                    Ok(())
                })?;
                // Ties (same timestamp) fire in an engine-defined but stable order; the
                // model compares the set per timestamp.
                fired.sort_unstable();
                format!("{fired:?}")
            }
            Op::Keys => {
                // Listings of the states without TTL (a TTL state may list an expired entry
                // that cleanup has not reached yet, differently per engine).
                let mut keys = BTreeSet::new();
                for g in self.b.key_group_range() {
                    for (k, ()) in self.list.keys_in_group(g)? {
                        keys.insert(format!("list {k}"));
                    }
                    for (k, ()) in self.sum.keys_in_group(g)? {
                        keys.insert(format!("sum {k}"));
                    }
                    for (k, ()) in self.avg.keys_in_group(g)? {
                        keys.insert(format!("avg {k}"));
                    }
                }
                format!("{keys:?}")
            }
        })
    }
}

/// The model: plain maps; TTL entries carry the time of their last write.
#[derive(Default)]
struct Model {
    now: u64,
    value: BTreeMap<(u32, u8), (u64, u64)>,
    list: BTreeMap<u32, Vec<u16>>,
    map: BTreeMap<(u32, u8), BTreeMap<u8, (u64, u32)>>,
    sum: BTreeMap<u32, u64>,
    avg: BTreeMap<u32, (u64, u64)>,
    timers: BTreeSet<(u64, u32, u8)>,
}

impl Model {
    fn live(&self, stamp: u64) -> bool {
        stamp + TTL > self.now
    }

    fn apply(&mut self, op: &Op) -> String {
        let unit = format!("{:?}", ());
        match op {
            Op::ValueUpdate(k, ns, v) => {
                self.value.insert((*k, *ns), (self.now, *v));
                unit
            }
            Op::ValueGet(k, ns) => {
                let v = self
                    .value
                    .get(&(*k, *ns))
                    .filter(|(s, _)| self.live(*s))
                    .map(|(_, v)| *v);
                format!("{v:?}")
            }
            Op::ValueClear(k, ns) => {
                self.value.remove(&(*k, *ns));
                unit
            }
            Op::ListAdd(k, v) => {
                self.list.entry(*k).or_default().push(*v);
                unit
            }
            Op::ListUpdate(k, v) => {
                if v.is_empty() {
                    self.list.remove(k);
                } else {
                    self.list.insert(*k, v.clone());
                }
                unit
            }
            Op::ListGet(k) => format!("{:?}", self.list.get(k).cloned().unwrap_or_default()),
            Op::ListClear(k) => {
                self.list.remove(k);
                unit
            }
            Op::MapPut(k, ns, uk, v) => {
                let now = self.now;
                self.map
                    .entry((*k, *ns))
                    .or_default()
                    .insert(*uk, (now, *v));
                unit
            }
            Op::MapRemove(k, ns, uk) => {
                if let Some(m) = self.map.get_mut(&(*k, *ns)) {
                    m.remove(uk);
                    if m.is_empty() {
                        self.map.remove(&(*k, *ns));
                    }
                }
                unit
            }
            Op::MapGet(k, ns, uk) => {
                let v = self
                    .map
                    .get(&(*k, *ns))
                    .and_then(|m| m.get(uk))
                    .filter(|(s, _)| self.live(*s))
                    .map(|(_, v)| *v);
                format!("{v:?}")
            }
            Op::MapEntries(k, ns) => {
                let entries: Vec<(u8, u32)> = self
                    .map
                    .get(&(*k, *ns))
                    .map(|m| {
                        m.iter()
                            .filter(|(_, (s, _))| self.live(*s))
                            .map(|(uk, (_, v))| (*uk, *v))
                            .collect()
                    })
                    .unwrap_or_default();
                format!("{entries:?}")
            }
            Op::SumAdd(k, v) => {
                let e = self.sum.entry(*k).or_insert(0);
                *e = e.wrapping_add(u64::from(*v));
                unit
            }
            Op::SumGet(k) => format!("{:?}", self.sum.get(k)),
            Op::AvgAdd(k, v) => {
                let e = self.avg.entry(*k).or_default();
                *e = (e.0 + u64::from(*v), e.1 + 1);
                unit
            }
            Op::AvgGet(k) => format!("{:?}", self.avg.get(k)),
            Op::Advance(ms) => {
                self.now += ms;
                String::new()
            }
            Op::Register(k, ns, ts) => {
                self.timers.insert((*ts, *k, *ns));
                unit
            }
            Op::Delete(k, ns, ts) => {
                self.timers.remove(&(*ts, *k, *ns));
                unit
            }
            Op::Watermark(wm) => {
                let mut fired = Vec::new();
                while let Some(&t) = self.timers.first().filter(|t| t.0 <= *wm) {
                    self.timers.pop_first();
                    fired.push(t);
                }
                format!("{fired:?}")
            }
            Op::Keys => {
                let mut keys = BTreeSet::new();
                keys.extend(self.list.keys().map(|k| format!("list {k}")));
                keys.extend(self.sum.keys().map(|k| format!("sum {k}")));
                keys.extend(self.avg.keys().map(|k| format!("avg {k}")));
                format!("{keys:?}")
            }
        }
    }
}

fn config(clock: &ManualClock) -> Result<EngineConfig> {
    Ok(EngineConfig::new(M)?
        .with_key_group_range(KeyGroupRange::all(M)?)?
        .with_clock(clock.shared()))
}

/// See the module documentation. At most 200 operations per input.
pub fn ops_vs_model(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let mut ops = Vec::new();
    while ops.len() < 200 {
        match op(&mut u) {
            Ok(o) => ops.push(o),
            Err(_) => break,
        }
    }
    if ops.is_empty() {
        return;
    }
    let (heap_clock, rocks_clock) = (ManualClock::new(0), ManualClock::new(0));
    let dir = tempfile::tempdir().expect("a temporary directory");
    let setup = || -> Result<_> {
        let heap = Subject::new(HeapEngine::new(config(&heap_clock)?))?;
        let rocks = Subject::new(RocksDbEngine::open(
            dir.path().join("db"),
            config(&rocks_clock)?,
            RocksDbOptions::default(),
        )?)?;
        Ok((heap, rocks))
    };
    let (heap, rocks) = setup().unwrap_or_else(|e| panic!("opening the engines: {e}"));
    let mut model = Model::default();
    for (i, op) in ops.iter().enumerate() {
        let want = model.apply(op);
        let h = heap
            .apply(op, &heap_clock)
            .unwrap_or_else(|e| panic!("step {i} {op:?}: heap failed: {e}"));
        let r = rocks
            .apply(op, &rocks_clock)
            .unwrap_or_else(|e| panic!("step {i} {op:?}: rocksdb failed: {e}"));
        assert_eq!(h, want, "step {i} {op:?}: heap vs model");
        assert_eq!(r, want, "step {i} {op:?}: rocksdb vs model");
    }
}
