//! Behaviour specific to the heap engine: incremental TTL cleanup and sharing across threads.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use keyed_state::clock::ManualClock;
use keyed_state::state::{ListStateDescriptor, MapStateDescriptor, ValueStateDescriptor};
use keyed_state::ttl::{StateVisibility, TtlConfig};
use keyed_state::{EngineConfig, HeapEngine, KeyedStateBackend};

#[path = "support/arena.rs"]
mod arena;

fn backend(clock: &ManualClock) -> KeyedStateBackend<u64> {
    KeyedStateBackend::new(HeapEngine::new(
        EngineConfig::new(128).unwrap().with_clock(clock.shared()),
    ))
}

/// Every key holding state, over all key groups, from a view's `keys_in_group`.
fn all_keys(
    backend: &KeyedStateBackend<u64>,
    keys_in_group: impl Fn(u16) -> Result<Vec<(u64, ())>, keyed_state::Error>,
) -> BTreeSet<u64> {
    backend
        .key_group_range()
        .iter()
        .flat_map(|g| keys_in_group(g).unwrap())
        .map(|(k, ())| k)
        .collect()
}

/// Keys nobody reads again must not live forever: accesses to one hot key drive a bounded
/// cleanup that eventually visits and drops every expired entry of the state.
#[test]
fn incremental_cleanup_removes_untouched_expired_keys() {
    let clock = ManualClock::new(0);
    let b = backend(&clock);
    let ttl = TtlConfig::new(Duration::from_millis(100)).with_cleanup_per_access(5);
    let value = b
        .value_state(&ValueStateDescriptor::<u64>::new("v").with_ttl(ttl.clone()))
        .unwrap();
    let list = b
        .list_state(&ListStateDescriptor::<u64>::new("l").with_ttl(ttl.clone()))
        .unwrap();
    let map = b
        .map_state(&MapStateDescriptor::<u8, u64>::new("m").with_ttl(ttl))
        .unwrap();
    for k in 0..3000u64 {
        let key = b.key(k).unwrap();
        value.update(&key, &(), k).unwrap();
        list.add_all(&key, &(), [k, k + 1]).unwrap();
        map.put(&key, &(), 1, k).unwrap();
    }
    // Half of the lists and maps get a fresh element later: they must be rewritten, not dropped.
    clock.set(60);
    for k in (0..3000u64).step_by(2) {
        let key = b.key(k).unwrap();
        list.add(&key, &(), 99).unwrap();
        map.put(&key, &(), 2, 99).unwrap();
    }
    clock.set(100); // everything written at 0 has expired; what was written at 60 lives
    let hot = b.key(1_000_000).unwrap();
    for _ in 0..4000 {
        value.get(&hot, &()).unwrap();
        list.get(&hot, &()).unwrap();
        map.get(&hot, &(), &1).unwrap();
    }
    assert!(all_keys(&b, |g| value.keys_in_group(g)).is_empty());
    let evens: BTreeSet<u64> = (0..3000).step_by(2).collect();
    assert_eq!(all_keys(&b, |g| list.keys_in_group(g)), evens);
    assert_eq!(all_keys(&b, |g| map.keys_in_group(g)), evens);
    // The survivors hold only their live element (the cleanup rewrote them).
    let k = b.key(42).unwrap();
    assert_eq!(list.get(&k, &()).unwrap().collect::<Vec<_>>(), vec![99]);
    assert_eq!(
        map.entries(&k, &()).unwrap().collect::<Vec<_>>(),
        vec![(2, 99)]
    );
}

/// The cleanup passes over segments whose entries are all younger than the TTL, judged by a
/// per-segment floor of their stamps. A write of an older stamp (here with the clock set back;
/// merges and restores write old stamps too) must lower that floor, or the cleanup would never
/// look at the expired entry again.
#[test]
fn cleanup_finds_an_old_stamp_written_after_its_segment_was_judged_fresh() {
    let clock = ManualClock::new(1_000);
    let b = backend(&clock);
    let ttl = TtlConfig::new(Duration::from_millis(100))
        .with_cleanup_per_access(5)
        .with_visibility(StateVisibility::ReturnExpiredIfNotCleanedUp);
    let value = b
        .value_state(&ValueStateDescriptor::<u64>::new("v").with_ttl(ttl.clone()))
        .unwrap();
    let list = b
        .list_state(&ListStateDescriptor::<u64>::new("l").with_ttl(ttl))
        .unwrap();
    for k in 0..3000u64 {
        let key = b.key(k).unwrap();
        value.update(&key, &(), k).unwrap();
        list.add(&key, &(), k).unwrap();
    }
    let hot = b.key(1_000_000).unwrap();
    let drive = || {
        for _ in 0..4000 {
            value.get(&hot, &()).unwrap();
            list.get(&hot, &()).unwrap();
        }
    };
    drive(); // every segment judged: its floor is 1000
    clock.set(0);
    let (old_value, old_list) = (b.key(7).unwrap(), b.key(8).unwrap());
    value.update(&old_value, &(), 70).unwrap();
    list.add(&old_list, &(), 80).unwrap();
    clock.set(150); // written at 0: expired; written at 1000: live
    drive();
    // Cleaned up: an expired value or element is no longer there to be returned.
    assert_eq!(value.get(&old_value, &()).unwrap(), None);
    assert_eq!(
        list.get(&old_list, &()).unwrap().collect::<Vec<_>>(),
        vec![8]
    );
    assert_eq!(value.get(&b.key(9).unwrap(), &()).unwrap(), Some(9));
}

#[test]
fn without_incremental_cleanup_expired_keys_wait_for_a_read() {
    let clock = ManualClock::new(0);
    let b = backend(&clock);
    let ttl = TtlConfig::new(Duration::from_millis(100)).with_cleanup_per_access(0);
    let value = b
        .value_state(&ValueStateDescriptor::<u64>::new("v").with_ttl(ttl))
        .unwrap();
    for k in 0..100u64 {
        value.update(&b.key(k).unwrap(), &(), k).unwrap();
    }
    clock.set(500);
    let hot = b.key(1_000_000).unwrap();
    for _ in 0..1000 {
        value.get(&hot, &()).unwrap();
    }
    let left = all_keys(&b, |g| value.keys_in_group(g));
    assert_eq!(left.len(), 100);
    assert_eq!(value.get(&b.key(7).unwrap(), &()).unwrap(), None);
}

/// Views are `Send + Sync` and clones share the state: threads writing the same few keys at
/// once through clones lose no write (the table lock, a spin lock whose waiters yield, keeps
/// them apart), and every thread's writes are all there.
#[test]
fn views_are_shared_across_threads() {
    const THREADS: usize = 4;
    const WRITES: u64 = 20_000;
    let b = Arc::new(KeyedStateBackend::<u64>::new(HeapEngine::default()));
    let list = b.list_state(&ListStateDescriptor::<u64>::new("l")).unwrap();
    let map = b
        .map_state(&MapStateDescriptor::<u64, u64>::new("m"))
        .unwrap();
    let handles: Vec<_> = (0..THREADS as u64)
        .map(|t| {
            let (b, list, map) = (b.clone(), list.clone(), map.clone());
            std::thread::spawn(move || {
                for i in 0..WRITES {
                    let key = b.key(i % 10).unwrap();
                    list.add(&key, &(), t).unwrap();
                    map.put(&key, &(), t * WRITES + i, i).unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let mut per_thread = [0u64; THREADS];
    let mut entries = 0;
    for k in 0..10u64 {
        let key = b.key(k).unwrap();
        for t in list.get(&key, &()).unwrap() {
            per_thread[usize::try_from(t).unwrap()] += 1;
        }
        for (user_key, value) in map.entries(&key, &()).unwrap() {
            assert_eq!(user_key % WRITES, value);
            assert_eq!(value % 10, k);
            entries += 1;
        }
    }
    assert_eq!(per_thread, [WRITES; THREADS]);
    assert_eq!(entries, per_thread.iter().sum::<u64>());
}

#[test]
fn metrics_count_entries_per_state() {
    use keyed_state::Engine;
    let b = KeyedStateBackend::<u64>::new(HeapEngine::default());
    let v = b
        .value_state(&ValueStateDescriptor::<u64>::new("v"))
        .unwrap();
    let m = b
        .map_state(&MapStateDescriptor::<u8, u64>::new("m"))
        .unwrap();
    for k in 0..500u64 {
        v.update(&b.key(k).unwrap(), &(), k).unwrap();
        m.put_all(&b.key(k).unwrap(), &(), [(1, 1), (2, 2)])
            .unwrap();
    }
    v.clear(&b.key(0).unwrap(), &()).unwrap();
    let metrics = b.engine().metrics().unwrap();
    let figures: Vec<(&str, u64)> = metrics
        .states
        .iter()
        .map(|s| (s.name.as_str(), s.approximate_entries))
        .collect();
    assert_eq!(figures, vec![("m", 500), ("v", 499)]);
    assert!(
        metrics
            .states
            .iter()
            .all(|s| s.approximate_bytes >= 500 * 8)
    );
    assert_eq!(
        metrics.memory_bytes,
        metrics
            .states
            .iter()
            .map(|s| s.approximate_bytes)
            .sum::<u64>()
    );
}

/// The cleanup judges a list or map by a bound of its oldest stamp kept beside it: elements
/// older than the list they join (merged from another namespace) must lower that bound, or
/// the cleanup would take the list for live and never drop them.
#[test]
fn cleanup_drops_old_elements_merged_into_a_newer_list() {
    let clock = ManualClock::new(0);
    let b = backend(&clock);
    let ttl = TtlConfig::new(Duration::from_millis(100))
        .with_cleanup_per_access(5)
        .with_visibility(StateVisibility::ReturnExpiredIfNotCleanedUp);
    let list = b
        .list_state(&ListStateDescriptor::<u64, u32>::new("l").with_ttl(ttl))
        .unwrap();
    let key = b.key(7).unwrap();
    list.add(&key, &1, 10).unwrap();
    clock.set(50);
    list.add(&key, &2, 20).unwrap();
    list.merge_namespaces(&key, &2, &[1]).unwrap();
    clock.set(120); // 10 (written at 0) expired, 20 (written at 50) lives
    let hot = b.key(1_000_000).unwrap();
    for _ in 0..4000 {
        list.get(&hot, &0).unwrap();
    }
    // Cleaned up: an expired element is no longer there to be returned.
    assert_eq!(list.get(&key, &2).unwrap().collect::<Vec<_>>(), vec![20]);
}

/// Lists and maps of small elements live inside their table entries up to a limit (16 list
/// elements, 12 map entries) and spill to the heap beyond it; with
/// `with_inline_collections(false)` they never do. Either way a state reads back what was
/// written as it grows across the limit and shrinks again, with and without TTL, and a
/// checkpoint of one shape restores into the other (the shape is not persisted).
#[test]
fn lists_and_maps_cross_the_inline_limit_in_both_shapes() {
    use keyed_state::checkpoint::{CheckpointStore, MemoryStorage, RestoreSource};
    use std::collections::BTreeMap;

    for inline in [true, false] {
        for with_ttl in [false, true] {
            let clock = ManualClock::new(0);
            let config = || EngineConfig::new(128).unwrap().with_clock(clock.shared());
            let b = KeyedStateBackend::<u64>::new(
                HeapEngine::new(config()).with_inline_collections(inline),
            );
            let ttl = TtlConfig::new(Duration::from_millis(1_000)).with_cleanup_per_access(5);
            let ld = ListStateDescriptor::<u64>::new("l");
            let md = MapStateDescriptor::<u64, u64>::new("m");
            let (ld, md) = if with_ttl {
                (ld.with_ttl(ttl.clone()), md.with_ttl(ttl))
            } else {
                (ld, md)
            };
            let (list, map) = (b.list_state(&ld).unwrap(), b.map_state(&md).unwrap());
            let mut lists: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
            let mut maps: BTreeMap<u64, BTreeMap<u64, u64>> = BTreeMap::new();
            let check = |b: &KeyedStateBackend<u64>,
                         lists: &BTreeMap<u64, Vec<u64>>,
                         maps: &BTreeMap<u64, BTreeMap<u64, u64>>| {
                let (list, map) = (b.list_state(&ld).unwrap(), b.map_state(&md).unwrap());
                for k in 0..8u64 {
                    let key = b.key(k).unwrap();
                    let want = lists.get(&k).cloned().unwrap_or_default();
                    assert_eq!(list.get(&key, &()).unwrap().collect::<Vec<_>>(), want);
                    let got: BTreeMap<u64, u64> = map.entries(&key, &()).unwrap().collect();
                    assert_eq!(got, maps.get(&k).cloned().unwrap_or_default());
                }
            };
            // Key k grows to 5k elements and entries: some stay inline, some spill.
            for round in 0..40u64 {
                for k in 0..8u64 {
                    if round >= 5 * k {
                        continue;
                    }
                    let key = b.key(k).unwrap();
                    list.add(&key, &(), round * 100 + k).unwrap();
                    lists.entry(k).or_default().push(round * 100 + k);
                    map.put(&key, &(), round, k ^ round).unwrap();
                    maps.entry(k).or_default().insert(round, k ^ round);
                }
                check(&b, &lists, &maps);
            }
            // Shrink: every third map entry goes, and lists are replaced by their even half.
            for k in 0..8u64 {
                let key = b.key(k).unwrap();
                for u in (0..40u64).step_by(3) {
                    map.remove(&key, &(), &u).unwrap();
                    if let Some(m) = maps.get_mut(&k) {
                        m.remove(&u);
                    }
                }
                let even: Vec<u64> = lists
                    .get(&k)
                    .into_iter()
                    .flatten()
                    .copied()
                    .filter(|e| e % 2 == 0)
                    .collect();
                list.update(&key, &(), even.clone()).unwrap();
                if even.is_empty() {
                    lists.remove(&k);
                } else {
                    lists.insert(k, even);
                }
                maps.retain(|_, m| !m.is_empty());
            }
            check(&b, &lists, &maps);

            let store = Arc::new(
                CheckpointStore::open(Arc::new(MemoryStorage::new()), 1)
                    .unwrap()
                    .0,
            );
            b.checkpoint(&store, 1, &[]).unwrap().wait().unwrap();
            let source = RestoreSource::latest(&store).unwrap();
            let restored = KeyedStateBackend::<u64>::new(
                HeapEngine::restore(config(), &[source])
                    .unwrap()
                    .with_inline_collections(!inline),
            );
            check(&restored, &lists, &maps);
            if with_ttl {
                // Everything was written at 0: all of it expires, inline or spilled.
                clock.set(1_000);
                check(&restored, &BTreeMap::new(), &BTreeMap::new());
            }
        }
    }
}

/// Tables whose segments live in the engine's huge-page arena hold exactly what tables on the
/// global allocator hold, through growth, copy-on-write after a checkpoint, removals, and a
/// restore into an engine of the other kind.
#[test]
fn tables_on_huge_pages_hold_what_tables_on_the_global_allocator_hold() {
    use keyed_state::checkpoint::{CheckpointStore, MemoryStorage, RestoreSource};
    use std::collections::BTreeMap;

    let mapped = |b: &KeyedStateBackend<u64>| arena::arena_bytes(b.engine(), "mapped");

    /// Per key: the value, the list, the map.
    type Oracle = BTreeMap<u64, (u64, Vec<u64>, BTreeMap<u64, u64>)>;

    // Four key groups, so that 30,000 keys make segments of thousands of entries.
    let config = || EngineConfig::new(4).unwrap();
    let n = 30_000u64;
    for huge in [true, false] {
        let engine = HeapEngine::new(config()).with_huge_pages(huge);
        assert_eq!(engine.huge_pages(), huge);
        let b = KeyedStateBackend::<u64>::new(engine);
        let vd = ValueStateDescriptor::<u64>::new("v");
        let ld = ListStateDescriptor::<u64>::new("l");
        let md = MapStateDescriptor::<u64, u64>::new("m")
            .with_ttl(TtlConfig::new(Duration::from_secs(3_600)));
        let (value, list, map) = (
            b.value_state(&vd).unwrap(),
            b.list_state(&ld).unwrap(),
            b.map_state(&md).unwrap(),
        );
        let mut oracle = Oracle::new();
        let write = |k: u64, round: u64, oracle: &mut Oracle| {
            let key = b.key(k).unwrap();
            value.update(&key, &(), k * 3 + round).unwrap();
            list.add(&key, &(), round).unwrap();
            map.put(&key, &(), round % 3, k).unwrap();
            let o = oracle.entry(k).or_default();
            o.0 = k * 3 + round;
            o.1.push(round);
            o.2.insert(round % 3, k);
        };
        let check = |b: &KeyedStateBackend<u64>, oracle: &Oracle| {
            let (value, list, map) = (
                b.value_state(&vd).unwrap(),
                b.list_state(&ld).unwrap(),
                b.map_state(&md).unwrap(),
            );
            for k in 0..n {
                let key = b.key(k).unwrap();
                let want = oracle.get(&k);
                assert_eq!(value.get(&key, &()).unwrap(), want.map(|o| o.0), "key {k}");
                let got: Vec<u64> = list.get(&key, &()).unwrap().collect();
                assert_eq!(got, want.map(|o| o.1.clone()).unwrap_or_default());
                let got: BTreeMap<u64, u64> = map.entries(&key, &()).unwrap().collect();
                assert_eq!(got, want.map(|o| o.2.clone()).unwrap_or_default());
            }
        };
        for k in 0..n {
            write(k, 0, &mut oracle);
        }
        let store = Arc::new(
            CheckpointStore::open(Arc::new(MemoryStorage::new()), 1)
                .unwrap()
                .0,
        );
        let job = b.checkpoint(&store, 1, &[]).unwrap();
        let at_checkpoint = oracle.clone();
        // Writes while the checkpoint holds the tables copy their segments.
        for k in (0..n).step_by(2) {
            write(k, 1, &mut oracle);
        }
        for k in (0..n).step_by(5) {
            let key = b.key(k).unwrap();
            value.clear(&key, &()).unwrap();
            list.clear(&key, &()).unwrap();
            map.clear(&key, &()).unwrap();
            oracle.remove(&k);
        }
        job.wait().unwrap();
        check(&b, &oracle);
        assert_eq!(mapped(&b) > 0, huge, "{:?}", b.engine());

        let source = RestoreSource::latest(&store).unwrap();
        let restored = KeyedStateBackend::<u64>::new(
            HeapEngine::restore(config(), &[source])
                .unwrap()
                .with_huge_pages(!huge),
        );
        check(&restored, &at_checkpoint);
        assert_eq!(mapped(&restored) > 0, !huge, "{:?}", restored.engine());
    }
}
