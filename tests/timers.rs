//! Timers against a `BTreeSet` oracle: random register / delete / advance sequences in both
//! domains, with callbacks that register and delete timers while an advance runs.

use std::collections::BTreeSet;
use std::sync::Arc;

#[cfg(feature = "rocksdb")]
use keyed_state::backend::rocksdb::{RocksDbEngine, RocksDbOptions};
use keyed_state::key_group::{KeyGroupRange, range_for_operator};
use keyed_state::timer::{TimeDomain, Timer, TimerService};
use keyed_state::{Engine, EngineConfig, Error, HeapEngine, KeyedStateBackend};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Register(bool, u64, u32, u64),
    Delete(bool, u64, u32, u64),
    Advance(bool, u64),
}

fn domain(event: bool) -> TimeDomain {
    if event {
        TimeDomain::EventTime
    } else {
        TimeDomain::ProcessingTime
    }
}

fn op() -> impl Strategy<Value = Op> {
    let timer = (any::<bool>(), 0u64..40, 0u32..3, 0u64..100);
    prop_oneof![
        5 => timer.clone().prop_map(|(d, k, n, t)| Op::Register(d, k, n, t)),
        2 => timer.prop_map(|(d, k, n, t)| Op::Delete(d, k, n, t)),
        2 => (any::<bool>(), 0u64..120).prop_map(|(d, t)| Op::Advance(d, t)),
    ]
}

/// What a callback does on firing (key, ns, ts): some register a follow-up timer (due at once
/// for even keys), some delete a later one.
/// A timer as (key, namespace, timestamp).
type Triple = (u64, u32, u64);

fn follow_up(key: u64, ns: u32, ts: u64) -> (Option<Triple>, Option<Triple>) {
    let register = (key.is_multiple_of(3) && ns == 0).then_some((key, 1, ts + key % 2));
    let delete = (key % 7 == 1).then_some((key, 0, ts + 5));
    (register, delete)
}

type Oracle = [BTreeSet<(u64, u64, u32)>; 2];

fn oracle_advance(oracle: &mut Oracle, d: usize, upto: u64) -> Vec<(u64, u64, u32)> {
    let mut fired = Vec::new();
    while let Some(&(ts, key, ns)) = oracle[d].first() {
        if ts > upto {
            break;
        }
        oracle[d].pop_first();
        fired.push((ts, key, ns));
        let (register, delete) = follow_up(key, ns, ts);
        if let Some((k, n, t)) = register {
            oracle[d].insert((t, k, n));
        }
        if let Some((k, n, t)) = delete {
            oracle[d].remove(&(t, k, n));
        }
    }
    fired
}

/// Runs `ops` against the backend's timer service "t" and the oracle, checking every step.
fn check_model<E: Engine>(
    backend: &KeyedStateBackend<u64, E>,
    ops: Vec<Op>,
) -> Result<(), TestCaseError> {
    let timers = backend.timer_service::<u32>("t").unwrap();
    let mut oracle: Oracle = [BTreeSet::new(), BTreeSet::new()];
    for op in ops {
        match op {
            Op::Register(e, k, n, t) => {
                let added = timers
                    .register(domain(e), &backend.key(k).unwrap(), &n, t)
                    .unwrap();
                prop_assert_eq!(added, oracle[usize::from(!e)].insert((t, k, n)));
            }
            Op::Delete(e, k, n, t) => {
                let removed = timers
                    .delete(domain(e), &backend.key(k).unwrap(), &n, t)
                    .unwrap();
                prop_assert_eq!(removed, oracle[usize::from(!e)].remove(&(t, k, n)));
            }
            Op::Advance(e, upto) => {
                let mut fired = Vec::new();
                let on_timer = |t: Timer<u64, u32>| {
                    fired.push((t.timestamp, t.key, t.namespace));
                    let (register, delete) = follow_up(t.key, t.namespace, t.timestamp);
                    if let Some((k, n, ts)) = register {
                        timers.register(domain(e), &backend.key(k)?, &n, ts)?;
                    }
                    if let Some((k, n, ts)) = delete {
                        timers.delete(domain(e), &backend.key(k)?, &n, ts)?;
                    }
                    Ok(())
                };
                let count = if e {
                    timers.advance_watermark(upto, on_timer).unwrap()
                } else {
                    timers.advance_processing_time(upto, on_timer).unwrap()
                };
                let expected = oracle_advance(&mut oracle, usize::from(!e), upto);
                prop_assert_eq!(count, expected.len() as u64);
                prop_assert_eq!(fired, expected);
            }
        }
        for (i, d) in [TimeDomain::EventTime, TimeDomain::ProcessingTime]
            .into_iter()
            .enumerate()
        {
            prop_assert_eq!(timers.pending(d), oracle[i].len() as u64);
            prop_assert_eq!(timers.next_timer(d), oracle[i].first().map(|t| t.0));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn heap_timers_match_the_oracle(ops in proptest::collection::vec(op(), 1..80)) {
        let backend = KeyedStateBackend::<u64>::new(HeapEngine::new(EngineConfig::default()));
        check_model(&backend, ops)?;
    }
}

#[cfg(feature = "rocksdb")]
proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn rocksdb_timers_match_the_oracle(ops in proptest::collection::vec(op(), 1..80)) {
        let engine = RocksDbEngine::open_temporary(
            EngineConfig::default(),
            RocksDbOptions::default().with_timers_in_rocksdb(true),
        )
        .unwrap();
        let backend = KeyedStateBackend::<u64, _>::new(engine);
        check_model(&backend, ops)?;
    }
}

#[test]
fn keys_outside_the_range_are_typed_errors_and_groups_are_reported() {
    let range = range_for_operator(128, 4, 1).unwrap();
    let config = EngineConfig::new(128)
        .unwrap()
        .with_key_group_range(range)
        .unwrap();
    let owned = KeyedStateBackend::<u64>::new(HeapEngine::new(config.clone()));
    let everything = KeyedStateBackend::<u64>::new(HeapEngine::new(EngineConfig::default()));
    let timers = TimerService::<u64>::new("t", &config);
    let outside = (0..1000)
        .map(|k| everything.key(k).unwrap())
        .find(|k| !range.contains(k.group()))
        .unwrap();
    let err = timers
        .register_event_time_timer(&outside, &(), 5)
        .unwrap_err();
    assert!(matches!(err, Error::KeyGroupOutOfRange { .. }), "{err}");
    let inside = (0..1000).find_map(|k| owned.key(k).ok()).unwrap();
    timers.register_event_time_timer(&inside, &(), 5).unwrap();
    let mut groups = Vec::new();
    timers
        .advance_watermark(5, |t| {
            groups.push(t.key_group);
            Ok(())
        })
        .unwrap();
    assert_eq!(groups, vec![inside.group()]);
    assert!(KeyGroupRange::all(128).unwrap().contains(groups[0]));
}

#[test]
fn a_service_is_shared_by_name_and_typed() {
    let backend = KeyedStateBackend::<u64>::new(HeapEngine::new(EngineConfig::default()));
    let a: Arc<TimerService<u64, u32>> = backend.timer_service("sessions").unwrap();
    let b = backend.timer_service::<u32>("sessions").unwrap();
    assert!(Arc::ptr_eq(&a, &b));
    assert!(backend.timer_service::<u64>("sessions").is_err());
    // A callback error stops the advance and leaves the rest pending.
    let key = backend.key(1).unwrap();
    for ts in 1..=3 {
        a.register_processing_time_timer(&key, &0, ts).unwrap();
    }
    let err = a
        .advance_processing_time(10, |t| {
            if t.timestamp == 2 {
                Err(Error::UnknownState("boom".into()))
            } else {
                Ok(())
            }
        })
        .unwrap_err();
    assert!(matches!(err, Error::UnknownState(_)));
    assert_eq!(a.pending(TimeDomain::ProcessingTime), 1);
    assert_eq!(a.next_timer(TimeDomain::ProcessingTime), Some(3));
}

mod checkpoints {
    use super::*;
    use keyed_state::SnapshotMode;
    use keyed_state::checkpoint::{CheckpointStore, MemoryStorage, RestoreSource};

    const M: u32 = 128;

    fn config(range: KeyGroupRange) -> EngineConfig {
        EngineConfig::new(M)
            .unwrap()
            .with_key_group_range(range)
            .unwrap()
    }

    type Fired = BTreeSet<(bool, u64, u64, u32)>;

    /// Registers timers for the keys `b` owns; fires those at or before 100 in both domains.
    /// Returns the timers still pending.
    fn setup<E: Engine>(b: &KeyedStateBackend<u64, E>) -> Fired {
        let t = b.timer_service::<u32>("t").unwrap();
        let mut pending = Fired::new();
        for k in 0..300u64 {
            let Ok(key) = b.key(k) else { continue };
            for (e, ts) in [(true, k * 3), (false, 1000 - k), (true, 500 + k % 7)] {
                let ns = (k % 4) as u32;
                t.register(domain(e), &key, &ns, ts).unwrap();
                pending.insert((e, ts, k, ns));
            }
        }
        let mut fired = Fired::new();
        t.advance_watermark(100, |x| {
            fired.insert((true, x.timestamp, x.key, x.namespace));
            Ok(())
        })
        .unwrap();
        t.advance_processing_time(100, |x| {
            fired.insert((false, x.timestamp, x.key, x.namespace));
            Ok(())
        })
        .unwrap();
        pending.retain(|p| !fired.contains(p));
        pending
    }

    /// Fires everything `b` holds, checking each timer's group is owned.
    fn fire_all<E: Engine>(b: &KeyedStateBackend<u64, E>) -> Vec<(bool, u64, u64, u32)> {
        let t = b.timer_service::<u32>("t").unwrap();
        let mut out = Vec::new();
        let range = b.key_group_range();
        for e in [true, false] {
            let mut cb = |x: Timer<u64, u32>| {
                assert!(range.contains(x.key_group));
                assert_eq!(b.key(x.key).unwrap().group(), x.key_group);
                out.push((e, x.timestamp, x.key, x.namespace));
                Ok(())
            };
            if e {
                t.advance_watermark(u64::MAX, &mut cb).unwrap();
            } else {
                t.advance_processing_time(u64::MAX, &mut cb).unwrap();
            }
        }
        out
    }

    fn rescale(
        rocks_from: bool,
        rocks_to: bool,
        p: u32,
        q: u32,
        mode: SnapshotMode,
        timers_in_rocksdb: bool,
    ) {
        #[cfg(feature = "rocksdb")]
        let options = RocksDbOptions::default().with_timers_in_rocksdb(timers_in_rocksdb);
        #[cfg(not(feature = "rocksdb"))]
        assert!(
            !(rocks_from || rocks_to || timers_in_rocksdb),
            "RocksDB cases need the rocksdb feature"
        );
        #[cfg(feature = "rocksdb")]
        let dir = tempfile::tempdir().unwrap();
        let mut expected = Fired::new();
        let mut sources = Vec::new();
        for i in 0..p {
            let c = config(range_for_operator(M, p, i).unwrap());
            let store = Arc::new(
                CheckpointStore::open(Arc::new(MemoryStorage::new()), 1)
                    .unwrap()
                    .0,
            );
            let mut snap = |pending: Fired, m| {
                expected.extend(pending);
                let m: &keyed_state::checkpoint::Manifest = &m;
                // RocksDB-resident timers travel in the SST files of native checkpoints, all
                // others in a timers file.
                let in_files = rocks_from && timers_in_rocksdb && mode != SnapshotMode::Savepoint;
                assert_eq!(m.timers.is_empty(), in_files);
                sources.push(RestoreSource::latest(&store).unwrap());
            };
            #[cfg(feature = "rocksdb")]
            if rocks_from {
                let b = KeyedStateBackend::<u64, _>::new(
                    RocksDbEngine::open(dir.path().join(format!("src-{i}")), c, options.clone())
                        .unwrap(),
                );
                let pending = setup(&b);
                let m = b
                    .snapshot_into(&store, 1, &[], mode)
                    .unwrap()
                    .wait()
                    .unwrap();
                // Not in the checkpoint: registered after its synchronous part.
                let late = b
                    .key((0..300).find(|k| b.key(*k).is_ok()).unwrap())
                    .unwrap();
                b.timer_service::<u32>("t")
                    .unwrap()
                    .register_event_time_timer(&late, &9, 1)
                    .unwrap();
                snap(pending, m);
                continue;
            }
            {
                let b = KeyedStateBackend::<u64>::new(HeapEngine::new(c));
                let pending = setup(&b);
                let m = b
                    .snapshot_into(&store, 1, &[], mode)
                    .unwrap()
                    .wait()
                    .unwrap();
                snap(pending, m);
            }
        }
        let mut got = Vec::new();
        for j in 0..q {
            let c = config(range_for_operator(M, q, j).unwrap());
            // One call restores state and timers; the timers wait for their service.
            #[cfg(feature = "rocksdb")]
            if rocks_to {
                let b = KeyedStateBackend::<u64, _>::new(
                    RocksDbEngine::restore(
                        dir.path().join(format!("dst-{j}")),
                        c,
                        options.clone(),
                        &sources,
                    )
                    .unwrap(),
                );
                got.extend(fire_all(&b));
                continue;
            }
            let b = KeyedStateBackend::<u64>::new(HeapEngine::restore(c, &sources).unwrap());
            got.extend(fire_all(&b));
        }
        let unique: Fired = got.iter().copied().collect();
        assert_eq!(unique.len(), got.len(), "no timer fired twice");
        assert_eq!(unique, expected, "every pending timer fired once");
    }

    #[test]
    fn heap_timers_restore_and_rescale_firing_each_once() {
        for (p, q) in [(1, 1), (1, 3), (3, 2), (4, 1), (2, 5)] {
            rescale(false, false, p, q, SnapshotMode::Checkpoint, false);
        }
    }

    #[cfg(feature = "rocksdb")]
    #[test]
    fn rocksdb_timers_restore_and_rescale_firing_each_once() {
        for (p, q) in [(1, 1), (1, 3), (3, 2), (2, 5)] {
            rescale(true, true, p, q, SnapshotMode::Checkpoint, false);
        }
    }

    #[cfg(feature = "rocksdb")]
    #[test]
    fn timers_travel_in_savepoints_between_engines() {
        rescale(true, false, 2, 3, SnapshotMode::Savepoint, false);
        rescale(false, true, 3, 1, SnapshotMode::Savepoint, false);
        // Timers kept in RocksDB travel in savepoints too.
        rescale(true, false, 2, 1, SnapshotMode::Savepoint, true);
        rescale(false, true, 1, 2, SnapshotMode::Savepoint, true);
    }

    #[cfg(feature = "rocksdb")]
    #[test]
    fn rocksdb_resident_timers_restore_and_rescale_through_native_checkpoints() {
        for (p, q) in [(1, 1), (1, 3), (3, 2), (2, 5)] {
            rescale(true, true, p, q, SnapshotMode::Checkpoint, true);
        }
    }

    /// Registers, deletes and fires timers while the checkpoint's background part runs: the
    /// checkpoint holds the timers of its synchronous part, the live service the new ones.
    /// (`mode`: a canonical snapshot, restored on the heap.)
    fn timers_changed_during_the_upload_stay_out<E: Engine>(
        b: &KeyedStateBackend<u64, E>,
        mode: SnapshotMode,
    ) {
        let t = b.timer_service::<u32>("t").unwrap();
        let mut at_sync = Fired::new();
        for k in 0..20_000u64 {
            let key = b.key(k).unwrap();
            t.register_event_time_timer(&key, &1, 10 + k % 1000)
                .unwrap();
            t.register_processing_time_timer(&key, &2, 5000 + k)
                .unwrap();
            at_sync.insert((true, 10 + k % 1000, k, 1));
            at_sync.insert((false, 5000 + k, k, 2));
        }
        let store = Arc::new(
            CheckpointStore::open(Arc::new(MemoryStorage::new()), 1)
                .unwrap()
                .0,
        );
        let pending = b.snapshot_into(&store, 1, &[], mode).unwrap();
        // Every key group changes: new timers, deletions, and half the event-time ones fire.
        let mut live = at_sync.clone();
        for k in (0..20_000u64).step_by(3) {
            let key = b.key(k).unwrap();
            t.register_event_time_timer(&key, &3, 7).unwrap();
            t.delete_processing_time_timer(&key, &2, 5000 + k).unwrap();
            live.insert((true, 7, k, 3));
            live.remove(&(false, 5000 + k, k, 2));
        }
        t.advance_watermark(500, |x| {
            assert!(live.remove(&(true, x.timestamp, x.key, x.namespace)));
            Ok(())
        })
        .unwrap();
        let m = pending.wait().unwrap();
        assert_eq!(m.timers.len(), 1);
        let sources = [RestoreSource::latest(&store).unwrap()];
        let restored = KeyedStateBackend::<u64>::new(
            HeapEngine::restore(EngineConfig::default(), &sources).unwrap(),
        );
        let fired: Fired = fire_all(&restored).into_iter().collect();
        assert_eq!(
            fired, at_sync,
            "the checkpoint holds its synchronous part's timers"
        );
        let now: Fired = fire_all(b).into_iter().collect();
        assert_eq!(now, live, "the live service holds every change");
    }

    #[test]
    fn heap_timers_changed_during_the_upload_stay_out_of_the_checkpoint() {
        let b = KeyedStateBackend::<u64>::new(HeapEngine::new(EngineConfig::default()));
        timers_changed_during_the_upload_stay_out(&b, SnapshotMode::Checkpoint);
    }

    #[cfg(feature = "rocksdb")]
    #[test]
    fn rocksdb_heap_timers_changed_during_the_upload_stay_out_of_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let b = KeyedStateBackend::<u64, _>::new(
            RocksDbEngine::open(
                dir.path(),
                EngineConfig::default(),
                RocksDbOptions::default(),
            )
            .unwrap(),
        );
        timers_changed_during_the_upload_stay_out(&b, SnapshotMode::Savepoint);
    }

    #[test]
    fn a_timer_service_must_match_its_checkpoint() {
        let b = KeyedStateBackend::<u64>::new(HeapEngine::new(EngineConfig::default()));
        let pending = setup(&b);
        let event_time = pending.iter().filter(|p| p.0).count() as u64;
        let store = Arc::new(
            CheckpointStore::open(Arc::new(MemoryStorage::new()), 1)
                .unwrap()
                .0,
        );
        let m = b.checkpoint(&store, 1, &[]).unwrap().wait().unwrap();
        assert_eq!(m.timers.len(), 1);
        let sources = [RestoreSource::latest(&store).unwrap()];
        let r = KeyedStateBackend::<u64>::new(
            HeapEngine::restore(EngineConfig::default(), &sources).unwrap(),
        );
        let err = r.timer_service::<u64>("t").unwrap_err();
        assert!(
            matches!(err, Error::IncompatibleRegistration { .. }),
            "{err}"
        );
        // Not created at all: the next checkpoint still carries the timers.
        r.checkpoint(&store, 2, &[]).unwrap().wait().unwrap();
        let sources = [RestoreSource::latest(&store).unwrap()];
        let r2 = KeyedStateBackend::<u64>::new(
            HeapEngine::restore(EngineConfig::default(), &sources).unwrap(),
        );
        let t = r2.timer_service::<u32>("t").unwrap();
        assert_eq!(t.pending(TimeDomain::EventTime), event_time);
        assert_eq!(
            t.pending(TimeDomain::ProcessingTime),
            pending.len() as u64 - event_time
        );
    }
}

/// Timers kept in RocksDB across restores where their service is not created again, or is
/// created on another store or with other codecs (issue 14, items 3, 4 and 5): a savepoint
/// carries them, a restore that now keeps timers on the heap moves them there (once), and a
/// service asked for with other codecs is refused, as heap timers are.
#[cfg(feature = "rocksdb")]
mod resident {
    use super::*;
    use keyed_state::SnapshotMode;
    use keyed_state::checkpoint::{CheckpointStore, MemoryStorage, RestoreSource};

    fn store() -> Arc<CheckpointStore> {
        Arc::new(
            CheckpointStore::open(Arc::new(MemoryStorage::new()), 1)
                .unwrap()
                .0,
        )
    }

    fn rocks(
        dir: &std::path::Path,
        in_rocksdb: bool,
        sources: &[RestoreSource],
    ) -> KeyedStateBackend<u64, RocksDbEngine> {
        let options = RocksDbOptions::default().with_timers_in_rocksdb(in_rocksdb);
        KeyedStateBackend::new(if sources.is_empty() {
            RocksDbEngine::open(dir, EngineConfig::default(), options).unwrap()
        } else {
            RocksDbEngine::restore(dir, EngineConfig::default(), options, sources).unwrap()
        })
    }

    /// A RocksDB backend keeping 200 event-time timers in RocksDB, checkpointed natively.
    fn native_checkpoint(dir: &std::path::Path) -> Vec<RestoreSource> {
        let b = rocks(&dir.join("source"), true, &[]);
        let t = b.timer_service::<u32>("t").unwrap();
        for k in 0..200u64 {
            t.register_event_time_timer(&b.key(k).unwrap(), &7, 1000 + k)
                .unwrap();
        }
        let store = store();
        let m = b.checkpoint(&store, 1, &[]).unwrap().wait().unwrap();
        assert!(m.timers.is_empty(), "the timers travel in the SSTs");
        vec![RestoreSource::latest(&store).unwrap()]
    }

    fn fire_all<E: Engine>(b: &KeyedStateBackend<u64, E>) -> Vec<(u64, u64, u32)> {
        let mut fired = Vec::new();
        b.timer_service::<u32>("t")
            .unwrap()
            .advance_watermark(u64::MAX, |t| {
                fired.push((t.timestamp, t.key, t.namespace));
                Ok(())
            })
            .unwrap();
        fired
    }

    #[test]
    fn a_savepoint_carries_timers_of_a_service_not_created_again() {
        let dir = tempfile::tempdir().unwrap();
        let sources = native_checkpoint(dir.path());
        let restored = rocks(&dir.path().join("restored"), true, &sources);
        let store = store();
        let m = restored
            .snapshot_into(&store, 2, &[], SnapshotMode::Savepoint)
            .unwrap()
            .wait()
            .unwrap();
        assert_eq!(m.timers.len(), 1);
        let heap = KeyedStateBackend::<u64>::new(
            HeapEngine::restore(
                EngineConfig::default(),
                &[RestoreSource::latest(&store).unwrap()],
            )
            .unwrap(),
        );
        let fired = fire_all(&heap);
        assert_eq!(fired.len(), 200);
        assert!(fired.iter().all(|&(_, _, ns)| ns == 7));
    }

    #[test]
    fn timers_move_to_the_heap_when_a_restore_keeps_timers_there() {
        let dir = tempfile::tempdir().unwrap();
        let sources = native_checkpoint(dir.path());
        let on_heap = rocks(&dir.path().join("heap-timers"), false, &sources);
        let t = on_heap.timer_service::<u32>("t").unwrap();
        assert_eq!(t.pending(TimeDomain::EventTime), 200);
        // Once: the next native checkpoint holds them in its timers file and no longer in
        // the column family, so restoring it (either way) finds each timer once.
        let store = store();
        let m = on_heap.checkpoint(&store, 2, &[]).unwrap().wait().unwrap();
        assert_eq!(m.timers.len(), 1);
        let source = vec![RestoreSource::latest(&store).unwrap()];
        for (i, in_rocksdb) in [false, true].into_iter().enumerate() {
            let again = rocks(&dir.path().join(format!("again-{i}")), in_rocksdb, &source);
            assert_eq!(fire_all(&again).len(), 200, "in RocksDB: {in_rocksdb}");
        }
    }

    #[test]
    fn timers_restored_with_other_codecs_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let sources = native_checkpoint(dir.path());
        for (i, in_rocksdb) in [true, false].into_iter().enumerate() {
            let restored = rocks(&dir.path().join(format!("other-{i}")), in_rocksdb, &sources);
            let err = restored.timer_service::<i32>("t").unwrap_err();
            assert!(
                matches!(err, Error::IncompatibleRegistration { .. }),
                "in RocksDB: {in_rocksdb}: {err}"
            );
            // The right codecs still work afterwards.
            assert_eq!(fire_all(&restored).len(), 200);
        }
    }
}
