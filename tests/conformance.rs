//! The conformance suite: the behaviour every engine must show, written once against the
//! [`Engine`] trait and run for each engine by the `conformance!` macro at the bottom.
//! (Flink's `StateBackendTestBase` and `TtlStateTestBase` are the models for most cases.)

use std::time::Duration;

use keyed_state::clock::ManualClock;
use keyed_state::key_group::{KeyGroupRange, range_for_operator};
use keyed_state::state::{
    AggregateFunction, AggregatingStateDescriptor, ListStateDescriptor, MapStateDescriptor,
    ReducingStateDescriptor, ValueStateDescriptor,
};
use keyed_state::ttl::{StateVisibility, TtlConfig, UpdateType};
use keyed_state::{ConfigError, Engine, EngineConfig, Error, HeapEngine, Key, KeyedStateBackend};

type R = Result<(), Error>;

/// Everything a case needs: a backend on a manual clock.
struct Fixture<E: Engine> {
    clock: ManualClock,
    backend: KeyedStateBackend<String, E>,
}

impl<E: Engine> Fixture<E> {
    fn new(make: &dyn Fn(EngineConfig) -> E) -> Self {
        Self::with_range(make, 128, None)
    }

    fn with_range(
        make: &dyn Fn(EngineConfig) -> E,
        max_parallelism: u32,
        range: Option<KeyGroupRange>,
    ) -> Self {
        let clock = ManualClock::new(0);
        let mut config = EngineConfig::new(max_parallelism)
            .unwrap()
            .with_clock(clock.shared());
        if let Some(range) = range {
            config = config.with_key_group_range(range).unwrap();
        }
        Fixture {
            clock,
            backend: KeyedStateBackend::new(make(config)),
        }
    }

    fn key(&self, k: &str) -> Key<String> {
        self.backend.key(k.to_string()).unwrap()
    }

    fn at(&self, millis: u64) {
        self.clock.set(millis);
    }
}

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

/// TTL of 100 ms as in Flink's TTL tests; incremental cleanup off so visibility is exact.
fn ttl(update: UpdateType, visibility: StateVisibility) -> TtlConfig {
    TtlConfig::new(Duration::from_millis(100))
        .with_update(update)
        .with_visibility(visibility)
        .with_cleanup_per_access(0)
}

struct SumPlusThree;
impl AggregateFunction for SumPlusThree {
    type In = i64;
    type Acc = i64;
    type Out = String;
    fn create_accumulator(&self) -> i64 {
        3
    }
    fn add(&self, v: i64, acc: i64) -> i64 {
        acc + v
    }
    fn get_result(&self, acc: &i64) -> String {
        acc.to_string()
    }
    fn merge(&self, a: i64, b: i64) -> i64 {
        a + b
    }
}

// ---------------------------------------------------------------------------------------------
// Value

fn value_basics<E: Engine>(make: &dyn Fn(EngineConfig) -> E) -> R {
    let f = Fixture::new(make);
    let s = f
        .backend
        .value_state(&ValueStateDescriptor::<String>::new("v"))?;
    let (a, b) = (f.key("a"), f.key("b"));
    assert_eq!(s.get(&a, &())?, None, "absent is None, never a default");
    s.update(&a, &(), "1".into())?;
    s.update(&b, &(), "2".into())?;
    assert_eq!(s.get(&a, &())?.as_deref(), Some("1"));
    s.update(&a, &(), "3".into())?;
    assert_eq!(s.get(&a, &())?.as_deref(), Some("3"));
    assert_eq!(
        sorted(s.keys_for_namespace(&())?),
        vec!["a".to_string(), "b".to_string()]
    );
    s.clear(&a, &())?;
    assert_eq!(s.get(&a, &())?, None);
    assert_eq!(s.get(&b, &())?.as_deref(), Some("2"));
    s.clear(&a, &())?; // clearing an absent value is a no-op
    s.clear(&b, &())?;
    assert!(
        s.keys_for_namespace(&())?.is_empty(),
        "clear removes the entry physically"
    );
    Ok(())
}

fn value_namespaces_are_isolated<E: Engine>(make: &dyn Fn(EngineConfig) -> E) -> R {
    let f = Fixture::new(make);
    let s = f
        .backend
        .value_state(&ValueStateDescriptor::<u64, u32>::new("v"))?;
    let a = f.key("a");
    s.update(&a, &1, 10)?;
    s.update(&a, &2, 20)?;
    assert_eq!(s.get(&a, &1)?, Some(10));
    assert_eq!(s.get(&a, &2)?, Some(20));
    assert_eq!(s.get(&a, &3)?, None);
    s.clear(&a, &1)?;
    assert_eq!(s.get(&a, &1)?, None);
    assert_eq!(s.get(&a, &2)?, Some(20));
    assert_eq!(s.keys_for_namespace(&2)?, vec!["a".to_string()]);
    assert!(s.keys_for_namespace(&1)?.is_empty());
    assert_eq!(s.keys_in_group(a.group())?, vec![("a".to_string(), 2)]);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// List

fn list_semantics<E: Engine>(make: &dyn Fn(EngineConfig) -> E) -> R {
    let f = Fixture::new(make);
    let s = f
        .backend
        .list_state(&ListStateDescriptor::<i32>::new("l"))?;
    let a = f.key("a");
    assert_eq!(s.get(&a, &())?.count(), 0, "absent list reads empty");
    s.add_all(&a, &(), Vec::new())?;
    assert!(
        s.keys_for_namespace(&())?.is_empty(),
        "add_all([]) on absent is a no-op"
    );
    s.add_all(&a, &(), [1, 2])?;
    s.add(&a, &(), 3)?;
    s.add_all(&a, &(), [2, 1])?;
    assert_eq!(
        s.get(&a, &())?.collect::<Vec<_>>(),
        vec![1, 2, 3, 2, 1],
        "order and duplicates kept"
    );
    s.add_all(&a, &(), [])?;
    assert_eq!(s.get(&a, &())?.count(), 5);
    s.update(&a, &(), [7, 8])?;
    assert_eq!(
        s.get(&a, &())?.collect::<Vec<_>>(),
        vec![7, 8],
        "update replaces"
    );
    s.update(&a, &(), [])?;
    assert_eq!(s.get(&a, &())?.count(), 0);
    assert!(
        s.keys_for_namespace(&())?.is_empty(),
        "update([]) removes the list"
    );
    s.add(&a, &(), 5)?;
    s.clear(&a, &())?;
    assert_eq!(s.get(&a, &())?.count(), 0);
    assert!(s.keys_for_namespace(&())?.is_empty());
    Ok(())
}

fn list_merge_namespaces<E: Engine>(make: &dyn Fn(EngineConfig) -> E) -> R {
    let f = Fixture::new(make);
    let s = f
        .backend
        .list_state(&ListStateDescriptor::<i32, String>::new("l"))?;
    let a = f.key("a");
    let ns = |n: &str| n.to_string();
    s.add_all(&a, &ns("w1"), [1, 2])?;
    s.add_all(&a, &ns("w2"), [3])?;
    s.add_all(&a, &ns("target"), [0])?;
    s.merge_namespaces(
        &a,
        &ns("target"),
        &[ns("w1"), ns("empty"), ns("w2"), ns("target")],
    )?;
    assert_eq!(
        s.get(&a, &ns("target"))?.collect::<Vec<_>>(),
        vec![0, 1, 2, 3]
    );
    assert_eq!(s.get(&a, &ns("w1"))?.count(), 0, "sources are removed");
    assert_eq!(s.get(&a, &ns("w2"))?.count(), 0);
    assert_eq!(s.keys_for_namespace(&ns("w1"))?.len(), 0);
    // All-empty sources leave an absent target absent.
    s.merge_namespaces(&a, &ns("new"), &[ns("x"), ns("y")])?;
    assert!(s.keys_for_namespace(&ns("new"))?.is_empty());
    // An absent target receives the sources.
    s.add(&a, &ns("x"), 9)?;
    s.merge_namespaces(&a, &ns("new"), &[ns("x")])?;
    assert_eq!(s.get(&a, &ns("new"))?.collect::<Vec<_>>(), vec![9]);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Map

fn map_semantics<E: Engine>(make: &dyn Fn(EngineConfig) -> E) -> R {
    let f = Fixture::new(make);
    let s = f
        .backend
        .map_state(&MapStateDescriptor::<u32, Option<String>>::new("m"))?;
    let a = f.key("a");
    assert!(s.is_empty(&a, &())?);
    assert_eq!(s.entries(&a, &())?.count(), 0);
    assert_eq!(s.get(&a, &(), &1)?, None);
    s.put(&a, &(), 1, Some("one".into()))?;
    s.put(&a, &(), 2, None)?; // a present entry whose value is None
    assert!(s.contains(&a, &(), &2)?);
    assert_eq!(s.get(&a, &(), &2)?, Some(None));
    assert!(!s.is_empty(&a, &())?);
    s.put_all(
        &a,
        &(),
        [(3, Some("three".into())), (1, Some("uno".into()))],
    )?;
    assert_eq!(
        sorted(s.entries(&a, &())?.collect()),
        vec![
            (1, Some("uno".to_string())),
            (2, None),
            (3, Some("three".to_string()))
        ]
    );
    assert_eq!(sorted(s.keys(&a, &())?.collect()), vec![1, 2, 3]);
    assert_eq!(
        sorted(s.values(&a, &())?.collect()),
        vec![None, Some("three".to_string()), Some("uno".to_string())]
    );
    s.remove(&a, &(), &9)?; // absent: no-op
    for k in [1, 2, 3] {
        s.remove(&a, &(), &k)?;
    }
    assert!(
        s.is_empty(&a, &())?,
        "removing the last entry empties the map"
    );
    assert!(
        s.keys_for_namespace(&())?.is_empty(),
        "…and removes it physically"
    );
    s.put(&a, &(), 4, None)?;
    s.clear(&a, &())?;
    assert!(s.is_empty(&a, &())?);
    assert_eq!(s.get(&a, &(), &4)?, None);
    assert!(s.keys_for_namespace(&())?.is_empty());
    Ok(())
}

fn map_many_entries<E: Engine>(make: &dyn Fn(EngineConfig) -> E) -> R {
    let f = Fixture::new(make);
    let s = f
        .backend
        .map_state(&MapStateDescriptor::<i32, i32>::new("m"))?;
    let a = f.key("a");
    s.put_all(&a, &(), (0..1024).map(|i| (i, -i)))?;
    assert_eq!(s.entries(&a, &())?.count(), 1024);
    for i in (0..1024).step_by(3) {
        assert_eq!(s.get(&a, &(), &i)?, Some(-i));
    }
    for i in 0..1024 {
        s.remove(&a, &(), &i)?;
    }
    assert!(s.is_empty(&a, &())?);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Reducing and Aggregating

fn reducing_semantics<E: Engine>(make: &dyn Fn(EngineConfig) -> E) -> R {
    let f = Fixture::new(make);
    let s = f
        .backend
        .reducing_state(&ReducingStateDescriptor::<i64, u8>::new("r", |a, b| a + b))?;
    let a = f.key("a");
    assert_eq!(s.get(&a, &0)?, None);
    s.add(&a, &0, 17)?;
    s.add(&a, &0, 11)?;
    assert_eq!(s.get(&a, &0)?, Some(28));
    s.clear(&a, &0)?;
    assert_eq!(s.get(&a, &0)?, None);
    // merge: 1 + 2 from sources, 4 already in the target.
    s.add(&a, &1, 1)?;
    s.add(&a, &2, 2)?;
    s.add(&a, &9, 4)?;
    s.merge_namespaces(&a, &9, &[1, 2, 3, 9])?;
    assert_eq!(s.get(&a, &9)?, Some(7));
    assert_eq!(s.get(&a, &1)?, None);
    assert_eq!(s.get(&a, &2)?, None);
    s.merge_namespaces(&a, &5, &[6, 7])?;
    assert_eq!(
        s.get(&a, &5)?,
        None,
        "merging nothing leaves the target absent"
    );
    Ok(())
}

/// `with` lends what `get` returns, calls its closure exactly once, and returns its result.
fn borrowed_reads_match_get<E: Engine>(make: &dyn Fn(EngineConfig) -> E) -> R {
    let f = Fixture::new(make);
    let s = f
        .backend
        .value_state(&ValueStateDescriptor::<String, u8>::new("v"))?;
    let r = f
        .backend
        .reducing_state(&ReducingStateDescriptor::<i64, u8>::new("r", |a, b| a + b))?;
    let (a, b) = (f.key("a"), f.key("b"));
    let mut calls = 0;
    let absent = s.with(&a, &0, |v| {
        calls += 1;
        v.is_none()
    })?;
    assert!(absent, "absent lends None");
    assert_eq!(calls, 1, "the closure runs once");
    s.update(&a, &0, "one".into())?;
    s.update(&a, &1, "eleven".into())?;
    s.update(&b, &0, "two".into())?;
    for (key, ns) in [(&a, 0), (&a, 1), (&b, 0), (&b, 1)] {
        assert_eq!(s.with(key, &ns, |v| v.cloned())?, s.get(key, &ns)?);
    }
    assert_eq!(s.with(&a, &1, |v| v.map(String::len))?, Some(6));
    s.clear(&a, &0)?;
    assert_eq!(s.with(&a, &0, |v| v.cloned())?, None, "cleared lends None");
    r.add(&a, &0, 17)?;
    r.add(&a, &0, 11)?;
    assert_eq!(r.with(&a, &0, |v| v.copied())?, Some(28));
    assert_eq!(r.with(&b, &0, |v| v.copied())?, None);
    let m = f
        .backend
        .map_state(&MapStateDescriptor::<u32, String, u8>::new("m"))?;
    m.put(&a, &0, 1, "x".into())?;
    m.put(&a, &0, 2, "yy".into())?;
    for (key, ns, uk) in [(&a, 0, 1), (&a, 0, 2), (&a, 0, 3), (&a, 1, 1), (&b, 0, 1)] {
        assert_eq!(
            m.with(key, &ns, &uk, |v| v.cloned())?,
            m.get(key, &ns, &uk)?
        );
    }
    assert_eq!(m.with(&a, &0, &2, |v| v.map(String::len))?, Some(2));
    for (key, ns) in [(&a, 0), (&a, 1), (&b, 0)] {
        let want: Vec<(u32, String)> = m.entries(key, &ns)?.collect();
        let have = m.with_entries(key, &ns, |it| {
            assert_eq!(it.len(), want.len(), "the exact length");
            it.map(|(k, v)| (*k, v.clone())).collect::<Vec<_>>()
        })?;
        assert_eq!(have, want, "the entries, in `entries`' order");
    }
    let total = m.with_entries(&a, &0, |it| it.map(|(_, v)| v.len()).sum::<usize>())?;
    assert_eq!(total, 3);
    // A map past the heap's small-map size (hashed there), lent through its own path.
    m.put_all(&b, &1, (0..40).map(|u| (u, format!("v{u}"))))?;
    let want: Vec<(u32, String)> = m.entries(&b, &1)?.collect();
    let have = m.with_entries(&b, &1, |it| {
        assert_eq!(it.len(), 40);
        it.map(|(k, v)| (*k, v.clone())).collect::<Vec<_>>()
    })?;
    assert_eq!(have, want, "a large map's entries, in `entries`' order");
    m.clear(&b, &1)?;
    let inner = m.with_entries(&a, &0, |_| match m.put(&a, &0, 9, "z".into()) {
        Ok(()) => Ok(true),
        Err(Error::Reentrant { state }) => {
            assert_eq!(state, "m");
            Ok(false)
        }
        Err(e) => Err(e),
    })?;
    let written = inner?;
    assert_eq!(
        m.contains(&a, &0, &9)?,
        written,
        "a refused put wrote nothing"
    );
    m.remove(&a, &0, &9)?;
    let l = f
        .backend
        .list_state(&ListStateDescriptor::<String, u8>::new("l"))?;
    calls = 0;
    let empty = l.with(&a, &0, |it| {
        calls += 1;
        it.len()
    })?;
    assert_eq!((empty, calls), (0, 1), "absent lends an empty list, once");
    l.add_all(&a, &0, ["p".into(), "qq".into(), "rrr".into()])?;
    l.add(&a, &1, "s".into())?;
    for (key, ns) in [(&a, 0), (&a, 1), (&b, 0)] {
        let want: Vec<String> = l.get(key, &ns)?.collect();
        assert_eq!(
            l.with(key, &ns, |it| it.cloned().collect::<Vec<_>>())?,
            want
        );
        let mut rev = want.clone();
        rev.reverse();
        assert_eq!(
            l.with(key, &ns, |it| it.rev().cloned().collect::<Vec<_>>())?,
            rev
        );
    }
    // Both ends of one iterator, and its exact length as it shrinks.
    let ends = l.with(&a, &0, |mut it| {
        let first = it.next().cloned();
        let last = it.next_back().cloned();
        (
            first,
            last,
            it.len(),
            it.next().cloned(),
            it.next().cloned(),
            it.next_back().cloned(),
        )
    })?;
    assert_eq!(
        ends,
        (
            Some("p".into()),
            Some("rrr".into()),
            1,
            Some("qq".into()),
            None,
            None
        )
    );
    // Another state inside the closure is free to use; the same state either answers as it
    // would outside or refuses with `Reentrant` (the heap engine holds its table), never hangs.
    let inner = s.with(&b, &0, |v| {
        assert_eq!(v.map(String::as_str), Some("two"));
        r.add(&b, &0, 5)?;
        assert_eq!(r.get(&b, &0)?, Some(5));
        match s.get(&a, &1) {
            Ok(got) => assert_eq!(got.as_deref(), Some("eleven")),
            Err(Error::Reentrant { state }) => assert_eq!(state, "v"),
            Err(e) => return Err(e),
        }
        Ok::<_, Error>(())
    })?;
    inner?;
    let inner = l.with(&a, &0, |it| {
        assert_eq!(it.len(), 3);
        match l.add(&a, &0, "t".into()) {
            Ok(()) => Ok(true),
            Err(Error::Reentrant { state }) => {
                assert_eq!(state, "l");
                Ok(false)
            }
            Err(e) => Err(e),
        }
    })?;
    let want = if inner? { 4 } else { 3 };
    assert_eq!(l.get(&a, &0)?.len(), want, "a refused add wrote nothing");
    s.update(&b, &0, "after".into())?;
    assert_eq!(
        s.get(&b, &0)?.as_deref(),
        Some("after"),
        "usable afterwards"
    );
    Ok(())
}

/// Under each TTL configuration, `with` expires, removes and re-stamps exactly as `get` does:
/// two states written and read in step give the same answers and keep the same entries.
fn ttl_borrowed_reads_as_get<E: Engine>(make: &dyn Fn(EngineConfig) -> E) -> R {
    let f = Fixture::new(make);
    let configs = [
        (
            UpdateType::OnCreateAndWrite,
            StateVisibility::NeverReturnExpired,
        ),
        (
            UpdateType::OnCreateAndWrite,
            StateVisibility::ReturnExpiredIfNotCleanedUp,
        ),
        (
            UpdateType::OnReadAndWrite,
            StateVisibility::NeverReturnExpired,
        ),
        (
            UpdateType::OnReadAndWrite,
            StateVisibility::ReturnExpiredIfNotCleanedUp,
        ),
    ];
    let k = f.key("k");
    for (i, (update, visibility)) in configs.into_iter().enumerate() {
        let d = |name: String| {
            ValueStateDescriptor::<String>::new(name).with_ttl(ttl(update, visibility))
        };
        let got = f.backend.value_state(&d(format!("get{i}")))?;
        let lent = f.backend.value_state(&d(format!("with{i}")))?;
        let md = |name: String| {
            MapStateDescriptor::<u8, String>::new(name).with_ttl(ttl(update, visibility))
        };
        let map_got = f.backend.map_state(&md(format!("map-get{i}")))?;
        let map_lent = f.backend.map_state(&md(format!("map-with{i}")))?;
        let ld = |name: String| {
            ListStateDescriptor::<String>::new(name).with_ttl(ttl(update, visibility))
        };
        let list_got = f.backend.list_state(&ld(format!("list-get{i}")))?;
        let list_lent = f.backend.list_state(&ld(format!("list-with{i}")))?;
        // Maps past the heap's small-map size; half their entries are written again later,
        // so they expire in two steps.
        let big_got = f.backend.map_state(&md(format!("big-get{i}")))?;
        let big_lent = f.backend.map_state(&md(format!("big-with{i}")))?;
        f.at(0);
        for l in [&list_got, &list_lent] {
            l.add(&k, &(), "a0".into())?;
        }
        for m in [&big_got, &big_lent] {
            m.put_all(&k, &(), (0..40u8).map(|u| (u, format!("b{u}"))))?;
        }
        got.update(&k, &(), "v0".into())?;
        lent.update(&k, &(), "v0".into())?;
        for m in [&map_got, &map_lent] {
            m.put(&k, &(), 1, "e0".into())?;
        }
        for t in [50, 120, 149, 170, 219, 260, 320, 330] {
            f.at(t);
            let want = got.get(&k, &())?;
            let have = lent.with(&k, &(), |v| v.cloned())?;
            let ctx = format!("{update:?} {visibility:?} at {t}");
            assert_eq!(have, want, "{ctx}");
            assert_eq!(
                lent.keys_for_namespace(&())?,
                got.keys_for_namespace(&())?,
                "{ctx}: the same entries kept"
            );
            let want = map_got.get(&k, &(), &1)?;
            let have = map_lent.with(&k, &(), &1, |v| v.cloned())?;
            assert_eq!(have, want, "{ctx}: map entry");
            let want: Vec<(u8, String)> = map_got.entries(&k, &())?.collect();
            let have = map_lent.with_entries(&k, &(), |it| {
                it.map(|(u, v)| (*u, v.clone())).collect::<Vec<_>>()
            })?;
            assert_eq!(have, want, "{ctx}: map entries");
            let mut want: Vec<(u8, String)> = big_got.entries(&k, &())?.collect();
            let mut have = big_lent.with_entries(&k, &(), |it| {
                it.map(|(u, v)| (*u, v.clone())).collect::<Vec<_>>()
            })?;
            // A hashed map's order may differ between two maps of the same entries.
            want.sort();
            have.sort();
            assert_eq!(have, want, "{ctx}: large map entries");
            assert_eq!(
                map_lent.keys_for_namespace(&())?,
                map_got.keys_for_namespace(&())?,
                "{ctx}: the same maps kept"
            );
            // One element expires before the other (added at 0 and 50, or 260 and 320).
            let want: Vec<String> = list_got.get(&k, &())?.collect();
            let have = list_lent.with(&k, &(), |it| it.cloned().collect::<Vec<_>>())?;
            assert_eq!(have, want, "{ctx}: list");
            assert_eq!(
                list_lent.keys_for_namespace(&())?,
                list_got.keys_for_namespace(&())?,
                "{ctx}: the same lists kept"
            );
            if t == 50 || t == 260 || t == 320 {
                for l in [&list_got, &list_lent] {
                    l.add(&k, &(), format!("a{t}"))?;
                }
                // A second map entry, which expires after the first.
                for m in [&map_got, &map_lent] {
                    m.put(&k, &(), 2, format!("f{t}"))?;
                }
                for m in [&big_got, &big_lent] {
                    m.put_all(&k, &(), (0..20u8).map(|u| (u, format!("c{t}"))))?;
                }
            }
            if t == 260 {
                got.update(&k, &(), "v1".into())?;
                lent.update(&k, &(), "v1".into())?;
                for m in [&map_got, &map_lent] {
                    m.put(&k, &(), 1, "e1".into())?;
                }
            }
        }
    }
    Ok(())
}

fn aggregating_semantics<E: Engine>(make: &dyn Fn(EngineConfig) -> E) -> R {
    let f = Fixture::new(make);
    let s = f
        .backend
        .aggregating_state(&AggregatingStateDescriptor::<_, u8>::new(
            "agg",
            SumPlusThree,
        ))?;
    let a = f.key("a");
    assert_eq!(s.get(&a, &0)?, None);
    s.add(&a, &0, 5)?;
    assert_eq!(s.get(&a, &0)?.as_deref(), Some("8"));
    s.add(&a, &0, 7)?;
    assert_eq!(s.get(&a, &0)?.as_deref(), Some("15"));
    s.clear(&a, &0)?;
    assert_eq!(s.get(&a, &0)?, None);
    // Flink's merge expectation: 11..55 spread over namespaces, merged into one.
    for (ns, v) in [(1, 11), (2, 22), (3, 33), (1, 44), (4, 55)] {
        s.add(&a, &ns, v)?;
    }
    s.merge_namespaces(&a, &4, &[1, 2, 3])?;
    assert_eq!(
        s.get(&a, &4)?.as_deref(),
        Some((165 + 4 * 3).to_string().as_str())
    );
    for ns in [1, 2, 3] {
        assert_eq!(s.get(&a, &ns)?, None);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// TTL (Flink's TtlStateTestBase timelines, TTL = 100 ms)

fn ttl_exact_expiration_on_write<E: Engine>(make: &dyn Fn(EngineConfig) -> E) -> R {
    let f = Fixture::new(make);
    let d = ValueStateDescriptor::<String>::new("v").with_ttl(ttl(
        UpdateType::OnCreateAndWrite,
        StateVisibility::NeverReturnExpired,
    ));
    let s = f.backend.value_state(&d)?;
    let k = f.key("k");
    f.at(0);
    s.update(&k, &(), "v0".into())?;
    f.at(20);
    assert_eq!(s.get(&k, &())?.as_deref(), Some("v0"));
    f.at(50);
    s.update(&k, &(), "v1".into())?;
    f.at(120);
    assert_eq!(
        s.get(&k, &())?.as_deref(),
        Some("v1"),
        "a write at 50 lives until 150"
    );
    f.at(149);
    assert_eq!(
        s.get(&k, &())?.as_deref(),
        Some("v1"),
        "reads do not refresh OnCreateAndWrite"
    );
    f.at(150);
    assert_eq!(
        s.get(&k, &())?,
        None,
        "expired exactly at last_access + ttl"
    );
    assert!(
        s.keys_for_namespace(&())?.is_empty(),
        "an expired read removes the entry"
    );
    Ok(())
}

fn ttl_relaxed_expiration_on_write<E: Engine>(make: &dyn Fn(EngineConfig) -> E) -> R {
    let f = Fixture::new(make);
    let d = ValueStateDescriptor::<String>::new("v").with_ttl(ttl(
        UpdateType::OnCreateAndWrite,
        StateVisibility::ReturnExpiredIfNotCleanedUp,
    ));
    let s = f.backend.value_state(&d)?;
    let k = f.key("k");
    s.update(&k, &(), "v0".into())?;
    f.at(120);
    assert_eq!(
        s.get(&k, &())?.as_deref(),
        Some("v0"),
        "stale value returned once"
    );
    assert_eq!(s.get(&k, &())?, None, "…and cleaned up by that read");
    Ok(())
}

fn ttl_exact_expiration_on_read<E: Engine>(make: &dyn Fn(EngineConfig) -> E) -> R {
    let f = Fixture::new(make);
    let d = ValueStateDescriptor::<String>::new("v").with_ttl(ttl(
        UpdateType::OnReadAndWrite,
        StateVisibility::NeverReturnExpired,
    ));
    let s = f.backend.value_state(&d)?;
    let k = f.key("k");
    s.update(&k, &(), "v0".into())?;
    f.at(50);
    assert_eq!(s.get(&k, &())?.as_deref(), Some("v0")); // refreshed to 50
    f.at(120);
    assert_eq!(s.get(&k, &())?.as_deref(), Some("v0")); // refreshed to 120
    f.at(219);
    assert_eq!(s.get(&k, &())?.as_deref(), Some("v0")); // refreshed to 219
    f.at(319);
    assert_eq!(s.get(&k, &())?, None);
    Ok(())
}

fn ttl_relaxed_expiration_on_read<E: Engine>(make: &dyn Fn(EngineConfig) -> E) -> R {
    let f = Fixture::new(make);
    let d = ValueStateDescriptor::<String>::new("v").with_ttl(ttl(
        UpdateType::OnReadAndWrite,
        StateVisibility::ReturnExpiredIfNotCleanedUp,
    ));
    let s = f.backend.value_state(&d)?;
    let k = f.key("k");
    s.update(&k, &(), "v0".into())?;
    f.at(50);
    assert_eq!(s.get(&k, &())?.as_deref(), Some("v0"));
    f.at(170);
    assert_eq!(
        s.get(&k, &())?.as_deref(),
        Some("v0"),
        "expired at 150, returned once"
    );
    assert_eq!(s.get(&k, &())?, None);
    Ok(())
}

fn ttl_list_elements_expire_one_by_one<E: Engine>(make: &dyn Fn(EngineConfig) -> E) -> R {
    let f = Fixture::new(make);
    let d = ListStateDescriptor::<i32>::new("l").with_ttl(ttl(
        UpdateType::OnCreateAndWrite,
        StateVisibility::NeverReturnExpired,
    ));
    let s = f.backend.list_state(&d)?;
    let k = f.key("k");
    s.add_all(&k, &(), [5, 7, 10])?;
    f.at(60);
    s.add_all(&k, &(), [8, 9])?;
    f.at(100);
    assert_eq!(
        s.get(&k, &())?.collect::<Vec<_>>(),
        vec![8, 9],
        "the elements of t=0 expired"
    );
    f.at(159);
    assert_eq!(s.get(&k, &())?.collect::<Vec<_>>(), vec![8, 9]);
    f.at(160);
    assert_eq!(s.get(&k, &())?.count(), 0);
    assert!(
        s.keys_for_namespace(&())?.is_empty(),
        "a fully expired list is removed on read"
    );

    // OnReadAndWrite re-stamps the live elements and drops the expired ones.
    let d2 = ListStateDescriptor::<i32>::new("l2").with_ttl(ttl(
        UpdateType::OnReadAndWrite,
        StateVisibility::ReturnExpiredIfNotCleanedUp,
    ));
    let s2 = f.backend.list_state(&d2)?;
    f.at(1000);
    s2.add(&k, &(), 1)?;
    f.at(1050);
    s2.add(&k, &(), 2)?;
    f.at(1120);
    assert_eq!(
        s2.get(&k, &())?.collect::<Vec<_>>(),
        vec![1, 2],
        "expired element returned once"
    );
    assert_eq!(
        s2.get(&k, &())?.collect::<Vec<_>>(),
        vec![2],
        "…then gone; 2 was re-stamped at 1120"
    );
    f.at(1219);
    assert_eq!(s2.get(&k, &())?.collect::<Vec<_>>(), vec![2]);
    Ok(())
}

fn ttl_map_entries_expire_one_by_one<E: Engine>(make: &dyn Fn(EngineConfig) -> E) -> R {
    let f = Fixture::new(make);
    let d = MapStateDescriptor::<u32, String>::new("m").with_ttl(ttl(
        UpdateType::OnCreateAndWrite,
        StateVisibility::NeverReturnExpired,
    ));
    let s = f.backend.map_state(&d)?;
    let k = f.key("k");
    s.put_all(&k, &(), [(3, "3".to_string()), (5, "5".to_string())])?;
    f.at(50);
    s.put(&k, &(), 7, "7".into())?;
    f.at(100);
    assert_eq!(s.get(&k, &(), &3)?, None);
    assert!(!s.contains(&k, &(), &5)?);
    assert!(s.contains(&k, &(), &7)?);
    assert_eq!(
        sorted(s.entries(&k, &())?.collect()),
        vec![(7, "7".to_string())]
    );
    assert!(!s.is_empty(&k, &())?);
    f.at(150);
    assert!(
        s.is_empty(&k, &())?,
        "only expired entries: empty under NeverReturnExpired"
    );
    assert!(s.keys_for_namespace(&())?.is_empty());

    let d2 = MapStateDescriptor::<u32, String>::new("m2").with_ttl(ttl(
        UpdateType::OnReadAndWrite,
        StateVisibility::ReturnExpiredIfNotCleanedUp,
    ));
    let s2 = f.backend.map_state(&d2)?;
    f.at(1000);
    s2.put(&k, &(), 1, "a".into())?;
    f.at(1080);
    assert_eq!(s2.get(&k, &(), &1)?.as_deref(), Some("a")); // refreshed to 1080
    f.at(1179);
    assert_eq!(
        sorted(s2.entries(&k, &())?.collect()),
        vec![(1, "a".to_string())]
    ); // refreshed to 1179
    f.at(1279);
    assert_eq!(
        s2.get(&k, &(), &1)?.as_deref(),
        Some("a"),
        "expired but returned once"
    );
    assert_eq!(s2.get(&k, &(), &1)?, None);
    Ok(())
}

fn ttl_reducing_and_aggregating_restamp_on_add<E: Engine>(make: &dyn Fn(EngineConfig) -> E) -> R {
    let f = Fixture::new(make);
    let t = ttl(
        UpdateType::OnCreateAndWrite,
        StateVisibility::NeverReturnExpired,
    );
    let r = f.backend.reducing_state(
        &ReducingStateDescriptor::<i64>::new("r", |a, b| a + b).with_ttl(t.clone()),
    )?;
    let g = f
        .backend
        .aggregating_state(&AggregatingStateDescriptor::<_>::new("g", SumPlusThree).with_ttl(t))?;
    let k = f.key("k");
    r.add(&k, &(), 5)?;
    g.add(&k, &(), 5)?;
    f.at(90);
    r.add(&k, &(), 7)?; // refreshes the whole accumulator
    g.add(&k, &(), 7)?;
    f.at(150);
    assert_eq!(r.get(&k, &())?, Some(12));
    assert_eq!(g.get(&k, &())?.as_deref(), Some("15"));
    f.at(190);
    assert_eq!(r.get(&k, &())?, None);
    assert_eq!(g.get(&k, &())?, None);
    r.add(&k, &(), 6)?; // an expired accumulator is not resurrected
    g.add(&k, &(), 6)?;
    assert_eq!(r.get(&k, &())?, Some(6));
    assert_eq!(g.get(&k, &())?.as_deref(), Some("9"));
    Ok(())
}

/// Flink's `TtlStateTestBase.testMergeNamespaces`, TTL 100: expired updates at 0, unexpired at
/// 120, final at 150, merge at 230.
fn ttl_merge_namespaces<E: Engine>(make: &dyn Fn(EngineConfig) -> E) -> R {
    let f = Fixture::new(make);
    let t = ttl(
        UpdateType::OnCreateAndWrite,
        StateVisibility::NeverReturnExpired,
    );
    let l = f
        .backend
        .list_state(&ListStateDescriptor::<i64, String>::new("l").with_ttl(t.clone()))?;
    let r = f.backend.reducing_state(
        &ReducingStateDescriptor::<i64, String>::new("r", |a, b| a + b).with_ttl(t.clone()),
    )?;
    let g = f.backend.aggregating_state(
        &AggregatingStateDescriptor::<_, String>::new("g", SumPlusThree).with_ttl(t),
    )?;
    let k = f.key("k");
    let ns = |n: &str| n.to_string();
    let add = |n: &str, v: i64| -> R {
        l.add(&k, &ns(n), v)?;
        r.add(&k, &ns(n), v)?;
        g.add(&k, &ns(n), v)
    };
    f.at(0);
    add("expired", 1)?;
    add("expiredAndUpdated", 2)?;
    f.at(120);
    add("expiredAndUpdated", 10)?;
    add("unexpired", 20)?;
    f.at(150);
    add("final", 100)?;
    add("unexpired", 200)?;
    f.at(230);
    let sources: Vec<String> = [
        "unset1",
        "unset2",
        "expired",
        "expiredAndUpdated",
        "unexpired",
        "final",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    l.merge_namespaces(&k, &ns("target"), &sources)?;
    r.merge_namespaces(&k, &ns("target"), &sources)?;
    g.merge_namespaces(&k, &ns("target"), &sources)?;
    // Lists expire element-wise: only the elements written at 150 are alive at 230.
    assert_eq!(sorted(l.get(&k, &ns("target"))?.collect()), vec![100, 200]);
    // Reducing: adds at 150 re-stamped "unexpired" (holding 20 + 200); "expiredAndUpdated"
    // was re-stamped at 120 and so expired at 220.
    assert_eq!(r.get(&k, &ns("target"))?, Some(100 + 220));
    // Aggregating: the same sums plus one fresh accumulator (3) per live namespace.
    assert_eq!(
        g.get(&k, &ns("target"))?.as_deref(),
        Some((100 + 220 + 3 * 2).to_string().as_str())
    );
    for source in &sources {
        assert_eq!(r.get(&k, source)?, None);
        assert_eq!(l.get(&k, source)?.count(), 0);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Batches

fn batches_match_single_calls<E: Engine>(make: &dyn Fn(EngineConfig) -> E) -> R {
    let f = Fixture::new(make);
    let v = f
        .backend
        .value_state(&ValueStateDescriptor::<u64, u32>::new("v"))?;
    let l = f
        .backend
        .list_state(&ListStateDescriptor::<u64, u32>::new("l"))?;
    let m = f
        .backend
        .map_state(&MapStateDescriptor::<u32, u64, u32>::new("m"))?;
    // Enough keys that an engine reading batches on several threads
    // (`rocksdb_parallel_reads`) splits these reads into parts.
    let keys: Vec<Key<String>> = (0..300).map(|i| f.key(&format!("k{i}"))).collect();
    // Namespaces differ per item; key 0 is given twice: the later value wins, both list
    // elements are appended in order.
    let ns: Vec<u32> = (0..keys.len()).map(|i| [0, 1, 2][i % 3]).collect();
    let writes = keys
        .iter()
        .zip(&ns)
        .enumerate()
        .map(|(i, (k, n))| (k, n, i as u64));
    v.update_batch(writes.clone().chain([(&keys[0], &ns[0], 99)]))?;
    l.add_batch(writes.clone().chain([(&keys[0], &ns[0], 99)]))?;
    m.put_batch(writes.map(|(k, n, i)| {
        (
            k,
            n,
            [0, 1, 2, 3][usize::try_from(i % 4).expect("below 4")],
            i,
        )
    }))?;
    let pairs: Vec<(&Key<String>, &u32)> = keys.iter().zip(&ns).collect();
    // Reads: present, absent (another namespace), and the same pair twice.
    let mut reads = pairs.clone();
    reads.push((&keys[1], &7));
    reads.push(pairs[0]);
    let values = v.get_batch(&reads);
    let lists = l.get_batch(&reads);
    assert_eq!(values.len(), reads.len());
    for (i, &(k, n)) in reads.iter().enumerate() {
        assert_eq!(values[i].as_ref().unwrap(), &v.get(k, n)?, "value {i}");
        assert_eq!(
            lists[i].as_ref().unwrap(),
            &l.get(k, n)?.collect::<Vec<_>>(),
            "list {i}"
        );
    }
    assert_eq!(values[0].as_ref().unwrap(), &Some(99));
    assert_eq!(lists[0].as_ref().unwrap(), &vec![0, 99]);
    assert_eq!(values[keys.len()].as_ref().unwrap(), &None);
    let triples: Vec<(&Key<String>, &u32, &u32)> = reads
        .iter()
        .enumerate()
        .map(|(i, &(k, n))| (k, n, [&0, &1, &2, &3][i % 4]))
        .collect();
    let entries = m.get_batch(&triples);
    for (i, &(k, n, uk)) in triples.iter().enumerate() {
        assert_eq!(entries[i].as_ref().unwrap(), &m.get(k, n, uk)?, "map {i}");
    }
    assert_eq!(entries[5].as_ref().unwrap(), &Some(5));
    Ok(())
}

fn batches_report_errors_per_key<E: Engine>(make: &dyn Fn(EngineConfig) -> E) -> R {
    let range = range_for_operator(128, 4, 1)?;
    let f = Fixture::with_range(make, 128, Some(range));
    let v = f
        .backend
        .value_state(&ValueStateDescriptor::<u64>::new("v"))?;
    let l = f
        .backend
        .list_state(&ListStateDescriptor::<u64>::new("l"))?;
    let m = f
        .backend
        .map_state(&MapStateDescriptor::<u32, u64>::new("m"))?;
    let all: Vec<Key<String>> = (0..800)
        .map(|i| Key::new(format!("k{i}"), 128).unwrap())
        .collect();
    let inside = all.iter().find(|k| range.contains(k.group())).unwrap();
    let outside = all.iter().find(|k| !range.contains(k.group())).unwrap();
    // A write batch with one foreign key writes nothing.
    let out_of_range = |r: R| matches!(r, Err(Error::KeyGroupOutOfRange { .. }));
    assert!(out_of_range(
        v.update_batch([(inside, &(), 1), (outside, &(), 2)])
    ));
    assert!(out_of_range(
        l.add_batch([(inside, &(), 1), (outside, &(), 2)])
    ));
    assert!(out_of_range(
        m.put_batch([(inside, &(), 1, 1), (outside, &(), 1, 2)])
    ));
    assert_eq!(v.get(inside, &())?, None, "nothing written");
    assert_eq!(l.get(inside, &())?.count(), 0, "nothing written");
    assert_eq!(m.get(inside, &(), &1)?, None, "nothing written");
    // Reads answer each key on its own.
    v.update(inside, &(), 5)?;
    l.add(inside, &(), 5)?;
    m.put(inside, &(), 1, 5)?;
    let read = v.get_batch(&[(outside, &()), (inside, &())]);
    assert!(matches!(read[0], Err(Error::KeyGroupOutOfRange { .. })));
    assert_eq!(read[1].as_ref().unwrap(), &Some(5));
    let read = l.get_batch(&[(inside, &()), (outside, &())]);
    assert_eq!(read[0].as_ref().unwrap(), &vec![5]);
    assert!(matches!(read[1], Err(Error::KeyGroupOutOfRange { .. })));
    let read = m.get_batch(&[(outside, &(), &1), (inside, &(), &1)]);
    assert!(matches!(read[0], Err(Error::KeyGroupOutOfRange { .. })));
    assert_eq!(read[1].as_ref().unwrap(), &Some(5));
    // A long read, foreign keys among the others (split into parts by an engine that reads
    // batches on several threads): each answer in its place.
    let pairs: Vec<_> = all.iter().map(|k| (k, &())).collect();
    for (k, answer) in all.iter().zip(v.get_batch(&pairs)) {
        match answer {
            Ok(value) => {
                assert!(range.contains(k.group()), "{k:?} answered");
                assert_eq!(value, std::ptr::eq(k, inside).then_some(5), "{k:?}");
            }
            Err(e) => assert!(
                !range.contains(k.group()) && matches!(e, Error::KeyGroupOutOfRange { .. }),
                "{k:?}: {e}"
            ),
        }
    }
    assert!(v.get_batch(&[]).is_empty());
    v.update_batch([])?;
    Ok(())
}

fn ttl_batches_expire_and_restamp_as_single_calls<E: Engine>(
    make: &dyn Fn(EngineConfig) -> E,
) -> R {
    for (update, visibility) in [
        (
            UpdateType::OnCreateAndWrite,
            StateVisibility::NeverReturnExpired,
        ),
        (
            UpdateType::OnReadAndWrite,
            StateVisibility::NeverReturnExpired,
        ),
        (
            UpdateType::OnCreateAndWrite,
            StateVisibility::ReturnExpiredIfNotCleanedUp,
        ),
    ] {
        let f = Fixture::new(make);
        let config = ttl(update, visibility);
        let v = f
            .backend
            .value_state(&ValueStateDescriptor::<u64>::new("v").with_ttl(config.clone()))?;
        let l = f
            .backend
            .list_state(&ListStateDescriptor::<u64>::new("l").with_ttl(config.clone()))?;
        let m = f
            .backend
            .map_state(&MapStateDescriptor::<u32, u64>::new("m").with_ttl(config))?;
        let (a, b) = (f.key("a"), f.key("b"));
        f.at(0);
        v.update_batch([(&a, &(), 1)])?;
        l.add_batch([(&a, &(), 1)])?;
        m.put_batch([(&a, &(), 1, 1)])?;
        f.at(60);
        v.update_batch([(&b, &(), 2)])?;
        l.add_batch([(&a, &(), 2), (&b, &(), 2)])?;
        m.put_batch([(&a, &(), 2, 2), (&b, &(), 1, 2)])?;
        // a's first writes expire at 100; b's and a's second ones at 160.
        f.at(120);
        let shows = visibility == StateVisibility::ReturnExpiredIfNotCleanedUp;
        let refresh = update == UpdateType::OnReadAndWrite;
        let values = v.get_batch(&[(&a, &()), (&b, &()), (&a, &())]);
        let values: Vec<_> = values.into_iter().collect::<Result<_, _>>()?;
        assert_eq!(
            values,
            [shows.then_some(1), Some(2), None],
            "{update:?} {visibility:?}"
        );
        let lists = l.get_batch(&[(&a, &()), (&b, &()), (&a, &())]);
        let lists: Vec<_> = lists.into_iter().collect::<Result<_, _>>()?;
        let first = if shows { vec![1, 2] } else { vec![2] };
        // As `get`, a read drops a list's expired elements only when it re-stamps the list.
        let again = if refresh { vec![2] } else { first.clone() };
        assert_eq!(lists, [first, vec![2], again], "{update:?} {visibility:?}");
        let entries = m.get_batch(&[(&a, &(), &1), (&a, &(), &2), (&a, &(), &1)]);
        let entries: Vec<_> = entries.into_iter().collect::<Result<_, _>>()?;
        assert_eq!(
            entries,
            [shows.then_some(1), Some(2), None],
            "{update:?} {visibility:?}"
        );
        // Under OnReadAndWrite the batch read re-stamped b at 120: alive at 170.
        f.at(170);
        let b_now = v.get_batch(&[(&b, &())]).remove(0)?;
        assert_eq!(
            b_now.is_some(),
            refresh || shows,
            "{update:?} {visibility:?}"
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Key groups, registration

fn key_group_range_errors<E: Engine>(make: &dyn Fn(EngineConfig) -> E) -> R {
    let range = range_for_operator(128, 4, 1)?;
    let f = Fixture::with_range(make, 128, Some(range));
    let s = f
        .backend
        .value_state(&ValueStateDescriptor::<u64>::new("v"))?;
    let mut inside = None;
    let mut outside = None;
    for i in 0..1000 {
        let k = Key::new(format!("k{i}"), 128)?;
        if range.contains(k.group()) {
            inside.get_or_insert(k)
        } else {
            outside.get_or_insert(k)
        };
    }
    let (inside, outside) = (inside.unwrap(), outside.unwrap());
    assert!(matches!(
        f.backend.key(outside.key().clone()),
        Err(Error::KeyGroupOutOfRange { group, range: r }) if group == outside.group() && r == range
    ));
    assert!(matches!(
        s.update(&outside, &(), 1),
        Err(Error::KeyGroupOutOfRange { .. })
    ));
    assert!(matches!(
        s.get(&outside, &()),
        Err(Error::KeyGroupOutOfRange { .. })
    ));
    assert!(
        matches!(
            s.with(&outside, &(), |_| panic!("not called on an error")),
            Err(Error::KeyGroupOutOfRange { .. })
        ),
        "a borrowed read reports the range error without calling its closure"
    );
    assert!(matches!(
        s.keys_in_group(outside.group()),
        Err(Error::KeyGroupOutOfRange { .. })
    ));
    s.update(&inside, &(), 1)?;
    assert_eq!(s.get(&inside, &())?, Some(1));
    // A key resolved for another max_parallelism is refused even if its group number fits.
    let other = Key::new(inside.key().clone(), 32768)?;
    if range.contains(other.group()) {
        assert!(matches!(
            s.get(&other, &()),
            Err(Error::MaxParallelismMismatch { .. })
        ));
    }
    let other = (0..1000)
        .map(|i| Key::new(format!("m{i}"), 256).unwrap())
        .find(|k| range.contains(k.group()))
        .unwrap();
    assert!(matches!(
        s.get(&other, &()),
        Err(Error::MaxParallelismMismatch {
            key: 256,
            backend: 128
        })
    ));
    Ok(())
}

fn keys_are_listed_per_key_group<E: Engine>(make: &dyn Fn(EngineConfig) -> E) -> R {
    let f = Fixture::new(make);
    let s = f
        .backend
        .value_state(&ValueStateDescriptor::<u64>::new("v"))?;
    let keys: Vec<Key<String>> = (0..300).map(|i| f.key(&format!("user-{i}"))).collect();
    for (i, k) in keys.iter().enumerate() {
        s.update(k, &(), i as u64)?;
    }
    let mut total = 0;
    for g in f.backend.key_group_range().iter() {
        let listed = s.keys_in_group(g)?;
        let mut expected: Vec<(String, ())> = keys
            .iter()
            .filter(|k| k.group() == g)
            .map(|k| (k.key().clone(), ()))
            .collect();
        expected.sort();
        assert_eq!(sorted(listed.clone()), expected, "group {g}");
        total += listed.len();
    }
    assert_eq!(total, 300);
    Ok(())
}

fn registration_rules<E: Engine>(make: &dyn Fn(EngineConfig) -> E) -> R {
    let f = Fixture::new(make);
    let d = ValueStateDescriptor::<u64>::new("s");
    let first = f.backend.value_state(&d)?;
    let again = f.backend.value_state(&d)?;
    let k = f.key("k");
    first.update(&k, &(), 5)?;
    assert_eq!(
        again.get(&k, &())?,
        Some(5),
        "the same descriptor returns the same state"
    );
    let incompatible = |r: Result<(), Error>, expected_field: &str| match r {
        Err(Error::IncompatibleRegistration { name, field, .. }) => {
            assert_eq!(name, "s");
            assert_eq!(field, expected_field);
        }
        other => panic!("expected IncompatibleRegistration({expected_field}), got {other:?}"),
    };
    incompatible(
        f.backend
            .list_state(&ListStateDescriptor::<u64>::new("s"))
            .map(|_| ()),
        "kind",
    );
    incompatible(
        f.backend
            .value_state(&ValueStateDescriptor::<String>::new("s"))
            .map(|_| ()),
        "value codec",
    );
    incompatible(
        f.backend
            .value_state(&ValueStateDescriptor::<u64, u8>::new("s"))
            .map(|_| ()),
        "namespace codec",
    );
    incompatible(
        f.backend
            .value_state(
                &ValueStateDescriptor::<u64>::new("s")
                    .with_ttl(TtlConfig::new(Duration::from_secs(1))),
            )
            .map(|_| ()),
        "TTL",
    );
    incompatible(
        f.backend
            .value_state(&ValueStateDescriptor::<usize>::new("s"))
            .map(|_| ()),
        "Rust type",
    );
    let names: Vec<String> = f
        .backend
        .registered_states()
        .into_iter()
        .map(|m| m.name)
        .collect();
    assert_eq!(names, vec!["s".to_string()]);
    let zero = ValueStateDescriptor::<u64>::new("z").with_ttl(TtlConfig::new(Duration::ZERO));
    assert!(matches!(
        f.backend.value_state(&zero),
        Err(Error::Config(ConfigError::ZeroTtl))
    ));
    Ok(())
}

fn large_max_parallelism<E: Engine>(make: &dyn Fn(EngineConfig) -> E) -> R {
    let range = range_for_operator(32768, 3, 2)?;
    let f = Fixture::with_range(make, 32768, Some(range));
    let s = f
        .backend
        .map_state(&MapStateDescriptor::<String, u64>::new("m"))?;
    let mut written = 0;
    for i in 0..2000 {
        let Ok(k) = f.backend.key(format!("k{i}")) else {
            continue;
        };
        s.put(&k, &(), "x".into(), i)?;
        written += 1;
    }
    let listed: usize = range
        .iter()
        .map(|g| s.keys_in_group(g).map(|v| v.len()))
        .sum::<Result<usize, _>>()?;
    assert_eq!(listed, written);
    assert!(
        written > 500,
        "about a third of the keys land in the last third of the groups"
    );
    Ok(())
}

/// Generates one `#[test]` per conformance case for an engine.
macro_rules! conformance {
    ($engine:ident, $make:expr) => {
        mod $engine {
            use super::*;
            conformance!(@cases $make;
                value_basics, value_namespaces_are_isolated, list_semantics, list_merge_namespaces,
                map_semantics, map_many_entries, reducing_semantics, aggregating_semantics,
                ttl_exact_expiration_on_write, ttl_relaxed_expiration_on_write,
                ttl_exact_expiration_on_read, ttl_relaxed_expiration_on_read,
                ttl_list_elements_expire_one_by_one, ttl_map_entries_expire_one_by_one,
                ttl_reducing_and_aggregating_restamp_on_add, ttl_merge_namespaces,
                key_group_range_errors, keys_are_listed_per_key_group, registration_rules,
                large_max_parallelism, batches_match_single_calls, batches_report_errors_per_key,
                ttl_batches_expire_and_restamp_as_single_calls, borrowed_reads_match_get,
                ttl_borrowed_reads_as_get);
        }
    };
    (@cases $make:expr; $($case:ident),*) => {
        $(
            #[test]
            fn $case() {
                super::$case(&$make).unwrap();
            }
        )*
    };
}

conformance!(heap, HeapEngine::new);

/// The heap engine with every list and map on the heap, none inline in its table entry
/// (`heap` keeps those of small element types inline): results must not depend on it.
fn heap_without_inline_engine(config: EngineConfig) -> HeapEngine {
    HeapEngine::new(config).with_inline_collections(false)
}

conformance!(heap_without_inline, heap_without_inline_engine);

#[cfg(feature = "rocksdb")]
fn rocksdb_engine(config: EngineConfig) -> keyed_state::backend::rocksdb::RocksDbEngine {
    use keyed_state::backend::rocksdb::{RocksDbEngine, RocksDbOptions};
    // No background compaction: TTL effects happen only when a test asks for them.
    RocksDbEngine::open_temporary(
        config,
        RocksDbOptions::default().with_auto_compaction(false),
    )
    .unwrap()
}

#[cfg(feature = "rocksdb")]
conformance!(rocksdb, rocksdb_engine);

/// RocksDB whose batched reads split over threads: results must not depend on it.
#[cfg(feature = "rocksdb")]
fn rocksdb_parallel_reads_engine(
    config: EngineConfig,
) -> keyed_state::backend::rocksdb::RocksDbEngine {
    use keyed_state::backend::rocksdb::{RocksDbEngine, RocksDbOptions};
    RocksDbEngine::open_temporary(
        config,
        RocksDbOptions::default()
            .with_auto_compaction(false)
            .with_batch_read_threads(4),
    )
    .unwrap()
}

#[cfg(feature = "rocksdb")]
conformance!(rocksdb_parallel_reads, rocksdb_parallel_reads_engine);
