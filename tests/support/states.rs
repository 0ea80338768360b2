//! State fixtures shared by the checkpoint suites (`tests/checkpoint.rs`, `tests/s3.rs`,
//! `tests/checkpoint_protocol.rs`): one state of every kind plus a TTL state, a deterministic
//! way to fill them, a dump of everything observable through the views, and the files a
//! store's retained checkpoints reference.
#![allow(dead_code)] // each suite uses its own part

use std::collections::BTreeSet;
use std::time::Duration;

use keyed_state::checkpoint::{CheckpointStorage, CheckpointStore};
use keyed_state::state::{
    AggregateFunction, AggregatingState, AggregatingStateDescriptor, ListState,
    ListStateDescriptor, MapState, MapStateDescriptor, ReducingState, ReducingStateDescriptor,
    ValueState, ValueStateDescriptor,
};
use keyed_state::ttl::TtlConfig;
use keyed_state::{Engine, KeyedStateBackend};

pub struct Avg;
impl AggregateFunction for Avg {
    type In = u64;
    type Acc = (u64, u64);
    type Out = u64;
    fn create_accumulator(&self) -> (u64, u64) {
        (0, 0)
    }
    fn add(&self, x: u64, (s, n): (u64, u64)) -> (u64, u64) {
        (s + x, n + 1)
    }
    fn get_result(&self, &(s, n): &(u64, u64)) -> u64 {
        s.checked_div(n).unwrap_or(0)
    }
    fn merge(&self, a: (u64, u64), b: (u64, u64)) -> (u64, u64) {
        (a.0 + b.0, a.1 + b.1)
    }
}

/// One state of every kind, plus a TTL state.
pub struct States {
    pub value: ValueState<u64, u64>,
    pub list: ListState<u64, u64, u32>,
    pub map: MapState<u64, String, u64>,
    pub reducing: ReducingState<u64, u64>,
    pub aggregating: AggregatingState<u64, Avg>,
    pub ttl: ValueState<u64, u64>,
}

pub fn register<E: Engine>(b: &KeyedStateBackend<u64, E>) -> States {
    States {
        value: b.value_state(&ValueStateDescriptor::new("value")).unwrap(),
        list: b.list_state(&ListStateDescriptor::new("list")).unwrap(),
        map: b.map_state(&MapStateDescriptor::new("map")).unwrap(),
        reducing: b
            .reducing_state(&ReducingStateDescriptor::new("reducing", |a, b| a + b))
            .unwrap(),
        aggregating: b
            .aggregating_state(&AggregatingStateDescriptor::new("aggregating", Avg))
            .unwrap(),
        ttl: b
            .value_state(
                &ValueStateDescriptor::new("ttl").with_ttl(TtlConfig::new(Duration::from_secs(10))),
            )
            .unwrap(),
    }
}

/// Writes round `round` of state for `keys` (only those this backend owns).
pub fn populate<E: Engine>(b: &KeyedStateBackend<u64, E>, s: &States, keys: &[u64], round: u64) {
    for &k in keys {
        let Ok(key) = b.key(k) else { continue };
        s.value.update(&key, &(), k * 10 + round).unwrap();
        s.list.add(&key, &((k % 3) as u32), k + round).unwrap();
        s.map
            .put(&key, &(), format!("e{}", (k + round) % 5), k * round)
            .unwrap();
        s.reducing.add(&key, &(), k + round).unwrap();
        s.aggregating.add(&key, &(), k * round).unwrap();
        if k % 2 == round % 2 {
            s.ttl.update(&key, &(), k).unwrap();
        }
        if k % 7 == 0 {
            s.map
                .remove(&key, &(), &format!("e{}", (k + round) % 5))
                .unwrap();
        }
    }
}

/// Everything observable through the views, over the backend's own key groups, one line per
/// (state, key, namespace).
pub fn dump<E: Engine>(b: &KeyedStateBackend<u64, E>, s: &States) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for g in b.key_group_range() {
        for (k, ns) in s.value.keys_in_group(g).unwrap() {
            let key = b.key(k).unwrap();
            out.insert(format!("value {k} {:?}", s.value.get(&key, &ns).unwrap()));
        }
        for (k, ns) in s.list.keys_in_group(g).unwrap() {
            let key = b.key(k).unwrap();
            let l: Vec<u64> = s.list.get(&key, &ns).unwrap().collect();
            out.insert(format!("list {k} {ns} {l:?}"));
        }
        for (k, ns) in s.map.keys_in_group(g).unwrap() {
            let key = b.key(k).unwrap();
            let mut e: Vec<(String, u64)> = s.map.entries(&key, &ns).unwrap().collect();
            e.sort();
            out.insert(format!("map {k} {e:?}"));
        }
        for (k, ns) in s.reducing.keys_in_group(g).unwrap() {
            let key = b.key(k).unwrap();
            out.insert(format!(
                "reducing {k} {:?}",
                s.reducing.get(&key, &ns).unwrap()
            ));
        }
        for (k, ns) in s.aggregating.keys_in_group(g).unwrap() {
            let key = b.key(k).unwrap();
            out.insert(format!(
                "aggregating {k} {:?}",
                s.aggregating.get(&key, &ns).unwrap()
            ));
        }
        for (k, ns) in s.ttl.keys_in_group(g).unwrap() {
            let key = b.key(k).unwrap();
            if let Some(v) = s.ttl.get(&key, &ns).unwrap() {
                out.insert(format!("ttl {k} {v}"));
            }
        }
    }
    out
}

/// Files in storage, without manifests.
pub fn data_files(storage: &dyn CheckpointStorage) -> BTreeSet<String> {
    storage.list().unwrap().into_iter().collect()
}

/// What the retained checkpoints reference, plus their manifests.
pub fn referenced(store: &CheckpointStore) -> BTreeSet<String> {
    store
        .retained()
        .iter()
        .flat_map(|m| {
            m.files
                .iter()
                .map(|f| f.path.clone())
                .chain([format!("chk-{}/_manifest", m.checkpoint_id)])
        })
        .collect()
}

/// The ids of the store's retained checkpoints, oldest first.
pub fn retained_ids(store: &CheckpointStore) -> Vec<u64> {
    store.retained().iter().map(|m| m.checkpoint_id).collect()
}
