//! A model-based proptest of the checkpoint protocol: random sequences of state changes,
//! checkpoints, transient failures, crashes in the middle of a checkpoint and restarts. After
//! every step the files in storage are exactly the retained checkpoints' files, and every
//! retained checkpoint restores to exactly the state it was taken from.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use keyed_state::checkpoint::{
    CheckpointStorage, CheckpointStore, FaultyStorage, MemoryStorage, RestoreSource,
};
use keyed_state::state::{ListStateDescriptor, MapStateDescriptor, ValueStateDescriptor};
use keyed_state::{EngineConfig, HeapEngine, KeyedStateBackend};
use proptest::prelude::*;

#[path = "support/states.rs"]
mod states;
use states::{referenced, retained_ids};

#[derive(Debug, Clone)]
enum Step {
    /// Change the state of some keys.
    Mutate(u64),
    /// A checkpoint that completes.
    Checkpoint,
    /// A checkpoint whose n-th storage operation fails once.
    Transient(u64),
    /// A crash during a checkpoint: every operation from the n-th fails, then a restart.
    Crash(u64),
    /// A clean restart of the store.
    Restart,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0u64..1000).prop_map(Step::Mutate),
        3 => Just(Step::Checkpoint),
        2 => (0u64..12).prop_map(Step::Transient),
        2 => (0u64..12).prop_map(Step::Crash),
        1 => Just(Step::Restart),
    ]
}

type Backend = KeyedStateBackend<u64, HeapEngine>;

fn register(b: &Backend) {
    b.value_state(&ValueStateDescriptor::<u64>::new("v"))
        .unwrap();
    b.list_state(&ListStateDescriptor::<u64>::new("l")).unwrap();
    b.map_state(&MapStateDescriptor::<u64, u64>::new("m"))
        .unwrap();
}

fn mutate(b: &Backend, seed: u64) {
    let v = b
        .value_state(&ValueStateDescriptor::<u64>::new("v"))
        .unwrap();
    let l = b.list_state(&ListStateDescriptor::<u64>::new("l")).unwrap();
    let m = b
        .map_state(&MapStateDescriptor::<u64, u64>::new("m"))
        .unwrap();
    for i in 0..20 {
        let k = (seed * 31 + i * 7) % 50;
        let key = b.key(k).unwrap();
        v.update(&key, &(), seed + i).unwrap();
        l.add(&key, &(), seed).unwrap();
        if i % 3 == 0 {
            m.remove(&key, &(), &(seed % 4)).unwrap();
        } else {
            m.put(&key, &(), seed % 4, i).unwrap();
        }
    }
}

fn dump(b: &Backend) -> BTreeSet<String> {
    let v = b
        .value_state(&ValueStateDescriptor::<u64>::new("v"))
        .unwrap();
    let l = b.list_state(&ListStateDescriptor::<u64>::new("l")).unwrap();
    let m = b
        .map_state(&MapStateDescriptor::<u64, u64>::new("m"))
        .unwrap();
    let mut out = BTreeSet::new();
    for k in 0..50 {
        let key = b.key(k).unwrap();
        out.insert(format!("{k} {:?}", v.get(&key, &()).unwrap()));
        out.insert(format!(
            "{k} {:?}",
            l.get(&key, &()).unwrap().collect::<Vec<_>>()
        ));
        let mut e: Vec<_> = m.entries(&key, &()).unwrap().collect();
        e.sort();
        out.insert(format!("{k} {e:?}"));
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn storage_holds_exactly_the_retained_checkpoints(
        retain in 1usize..4,
        steps in proptest::collection::vec(step(), 1..30),
    ) {
        let memory = Arc::new(MemoryStorage::new());
        let faulty = Arc::new(FaultyStorage::new(memory.clone()));
        let open = || Arc::new(CheckpointStore::open(faulty.clone(), retain).unwrap().0);
        let mut store = open();
        let b = Backend::new(HeapEngine::new(EngineConfig::default()));
        register(&b);
        let mut expected: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
        let mut next_id = 1;
        for step in steps {
            match step {
                Step::Mutate(seed) => mutate(&b, seed),
                Step::Checkpoint | Step::Transient(_) | Step::Crash(_) => {
                    let id = next_id;
                    next_id += 1;
                    let base = faulty.operations();
                    match step {
                        Step::Transient(n) => faulty.fail_only(base + n),
                        Step::Crash(n) => faulty.fail_from(base + n),
                        _ => {}
                    }
                    let state = dump(&b);
                    let result = b.checkpoint(&store, id, &[]).and_then(|p| p.wait());
                    if result.is_ok() {
                        expected.insert(id, state.clone());
                    } else if let Step::Checkpoint = step {
                        panic!("an unfaulted checkpoint failed: {result:?}");
                    }
                    if let Step::Crash(_) = step {
                        drop(store);
                        faulty.heal();
                        store = open();
                        // The manifest may have been published before the crash.
                        if store.get(id).is_some() {
                            expected.insert(id, state);
                        }
                    }
                    faulty.heal();
                }
                Step::Restart => {
                    drop(store);
                    store = open();
                }
            }
            // A failed deletion leaves garbage that the store knows of and cleans.
            if store.has_garbage() {
                store.clean().unwrap();
            }
            prop_assert!(!store.has_garbage());
            // Storage holds exactly the retained checkpoints, and they are the latest ones.
            let files: BTreeSet<String> = memory.list().unwrap().into_iter().collect();
            prop_assert_eq!(&files, &referenced(&store));
            let retained = retained_ids(&store);
            let completed: Vec<u64> = expected.keys().copied().collect();
            let tail = &completed[completed.len().saturating_sub(retain)..];
            prop_assert_eq!(retained.as_slice(), tail);
            for m in store.retained() {
                let source = RestoreSource { storage: memory.clone(), manifest: m.clone() };
                let r = Backend::new(HeapEngine::restore(EngineConfig::default(), &[source]).unwrap());
                register(&r);
                prop_assert_eq!(&dump(&r), &expected[&m.checkpoint_id]);
            }
        }
    }
}
