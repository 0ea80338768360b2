//! A table's prefix scans, through an iterator kept from one scan to the next.
//!
//! A map's entries (and a key group's keys) are read by seeking an iterator to a prefix and
//! stepping while keys share it. Making the iterator is a third of a short scan's cost: RocksDB
//! allocates its arena, references the column family's current *super version* (memtables
//! and SST files), and builds a child iterator per memtable and level, each of which loads
//! its index on the first seek. A kept iterator is instead *refreshed*: when the super
//! version has not changed (no flush or compaction since), that only moves its sequence
//! number to the latest, so it sees every write made since, and its children keep their
//! positions. Over 1M keys' 10-entry maps a scan took 9.5 µs with a new iterator and 6.0 µs
//! with the kept one (medians, DESIGN.md §7b).
//!
//! The price is what the kept iterator holds between scans: the super version of its last
//! refresh, so memtables flushed since (their memory, charged to the memory budget) and SST
//! files compacted away since (their disk space) are freed only at the table's next scan or
//! when the engine lets go of every kept iterator ([`ScanSlot::release`]), which it does after
//! each flush, settle, compaction and checkpoint it is asked for.
//! [`RocksDbOptions::scan_iterator_reuse`] turns the reuse off.
//!
//! Without an upper bound (the bound lives in the read options, fixed when the iterator is
//! made), the kept iterator stops at the first key without the prefix, as Flink's map
//! iterator does; the fresh one is bounded, so RocksDB skips no deleted keys past the prefix.
//!
//! [`RocksDbOptions::scan_iterator_reuse`]: super::RocksDbOptions::scan_iterator_reuse

use std::sync::Arc;

use parking_lot::Mutex;
use rocksdb::{AsColumnFamilyRef, DBRawIteratorWithThreadMode, ReadOptions};

use super::layout::prefix_successor;
use super::{Db, DbHandle};
use crate::error::Result;

/// A raw iterator over the database of `'db`.
type RawIter<'db> = DBRawIteratorWithThreadMode<'db, Db>;

/// The kept iterator, if any; a scan holds the lock while it runs.
type Parked<'db> = Mutex<Option<RawIter<'db>>>;

self_cell::self_cell!(
    /// The database and one table's kept scan iterator (which borrows the database).
    pub(crate) struct ScanSlot {
        owner: Arc<DbHandle>,

        #[not_covariant]
        dependent: Parked,
    }
);

impl ScanSlot {
    /// A slot with no iterator yet.
    pub(crate) fn empty(handle: Arc<DbHandle>) -> Self {
        ScanSlot::new(handle, |_| Mutex::new(None))
    }

    /// Calls `visit` with every (key, value) of `cf` whose key starts with `prefix`, in key
    /// order, until it returns `false`. With `reuse`, through the kept iterator, refreshed
    /// (made when there is none, or when its refresh fails); a fresh, bounded iterator when
    /// another scan of this table holds the kept one (another thread), or without `reuse`.
    pub(crate) fn scan(
        &self,
        cf: &impl AsColumnFamilyRef,
        prefix: &[u8],
        reuse: bool,
        visit: impl FnMut(&[u8], &[u8]) -> Result<bool>,
    ) -> Result<()> {
        self.with_dependent(|handle, parked| {
            if reuse && let Some(mut kept) = parked.try_lock() {
                if let Some(it) = kept.as_mut()
                    && it.refresh().is_err()
                {
                    *kept = None;
                }
                let it = kept.get_or_insert_with(|| {
                    handle.db.raw_iterator_cf_opt(cf, ReadOptions::default())
                });
                return walk(it, prefix, visit);
            }
            let mut read = ReadOptions::default();
            if let Some(upper) = prefix_successor(prefix) {
                read.set_iterate_upper_bound(upper);
            }
            walk(&mut handle.db.raw_iterator_cf_opt(cf, read), prefix, visit)
        })
    }

    /// Drops the kept iterator, so the memtables and files it holds can go (waits for a scan
    /// running on it: scans run no caller code, so they end).
    pub(crate) fn release(&self) {
        self.with_dependent(|_, parked| drop(parked.lock().take()));
    }

    /// Whether an iterator is kept (tests).
    #[cfg(test)]
    pub(crate) fn holds_iterator(&self) -> bool {
        self.with_dependent(|_, parked| parked.lock().is_some())
    }
}

/// Seeks `it` to `prefix` and visits the entries that start with it.
fn walk(
    it: &mut RawIter<'_>,
    prefix: &[u8],
    mut visit: impl FnMut(&[u8], &[u8]) -> Result<bool>,
) -> Result<()> {
    it.seek(prefix);
    while let Some((key, value)) = it.item() {
        if !key.starts_with(prefix) || !visit(key, value)? {
            break;
        }
        it.next();
    }
    Ok(it.status()?)
}

impl std::fmt::Debug for ScanSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScanSlot").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::ScanSlot;
    use crate::backend::rocksdb::{RocksDbEngine, RocksDbOptions};
    use crate::checkpoint::{CheckpointStore, MemoryStorage};
    use crate::state::{MapState, MapStateDescriptor};
    use crate::{EngineConfig, KeyedStateBackend};

    type Backend = KeyedStateBackend<u64, RocksDbEngine>;

    /// An engine with automatic compaction off and one map state, `keys` maps of ten entries
    /// (`u → k * 100 + u`).
    fn with_maps(reuse: bool, keys: u64) -> (Backend, MapState<u64, u64, u64>) {
        let options = RocksDbOptions::default()
            .with_auto_compaction(false)
            .with_scan_iterator_reuse(reuse);
        let engine = RocksDbEngine::open_temporary(EngineConfig::new(128).unwrap(), options);
        let b = Backend::new(engine.unwrap());
        let map = b
            .map_state(&MapStateDescriptor::<u64, u64>::new("m"))
            .unwrap();
        for k in 0..keys {
            let key = b.key(k).unwrap();
            map.put_all(&key, &(), (0..10).map(|u| (u, k * 100 + u)))
                .unwrap();
        }
        (b, map)
    }

    /// The one state's slot.
    fn slot(b: &Backend) -> Arc<ScanSlot> {
        let slots = b.engine().scans.lock();
        assert_eq!(slots.len(), 1);
        slots[0].upgrade().expect("the table is alive")
    }

    fn entries(b: &Backend, map: &MapState<u64, u64, u64>, k: u64) -> Vec<(u64, u64)> {
        let mut all: Vec<_> = map.entries(&b.key(k).unwrap(), &()).unwrap().collect();
        all.sort_unstable();
        all
    }

    /// RocksDB's memtable bytes: active, not yet flushed, and flushed but pinned.
    fn memtable_bytes(b: &Backend) -> u64 {
        let db = &b.engine().handle.db;
        let cf = b.engine().cf("m").unwrap();
        db.property_int_value_cf(&cf, "rocksdb.size-all-mem-tables")
            .unwrap()
            .unwrap()
    }

    #[test]
    fn a_kept_iterator_sees_every_write_since_its_last_scan() {
        let (b, map) = with_maps(true, 50);
        let slot = slot(&b);
        assert!(!slot.holds_iterator());
        assert_eq!(entries(&b, &map, 7).len(), 10);
        assert!(slot.holds_iterator(), "the scan kept its iterator");

        // Writes in the same memtable: the refresh moves the sequence number.
        let key = b.key(7).unwrap();
        map.put(&key, &(), 42, 1).unwrap();
        map.remove(&key, &(), &3).unwrap();
        map.put(&key, &(), 0, 9).unwrap();
        let mut want: Vec<(u64, u64)> = (0..10).filter(|&u| u != 3).map(|u| (u, 700 + u)).collect();
        want[0].1 = 9;
        want.push((42, 1));
        want.sort_unstable();
        assert_eq!(entries(&b, &map, 7), want);

        // The next key's map cleared: the scan of key 7 stops at its own prefix and the
        // cleared one reads empty.
        map.clear(&b.key(8).unwrap(), &()).unwrap();
        assert_eq!(entries(&b, &map, 7), want);
        assert!(entries(&b, &map, 8).is_empty());

        // A flush and a compaction the engine did not make (so nothing released the kept
        // iterator): its refresh rebuilds it on the new memtables and files.
        let db = &b.engine().handle.db;
        let cf = b.engine().cf("m").unwrap();
        db.flush_cf(&cf).unwrap();
        assert!(slot.holds_iterator());
        map.put(&key, &(), 43, 2).unwrap();
        want.push((43, 2));
        assert_eq!(entries(&b, &map, 7), want);
        db.compact_range_cf(&cf, None::<&[u8]>, None::<&[u8]>);
        map.remove(&key, &(), &42).unwrap();
        want.retain(|&(u, _)| u != 42);
        assert_eq!(entries(&b, &map, 7), want);
        for k in (0..50).filter(|&k| k != 7 && k != 8) {
            let expect: Vec<_> = (0..10).map(|u| (u, k * 100 + u)).collect();
            assert_eq!(entries(&b, &map, k), expect, "key {k}");
        }
        assert!(!map.is_empty(&key, &()).unwrap());
        assert!(map.is_empty(&b.key(8).unwrap(), &()).unwrap());
    }

    #[test]
    fn the_engine_lets_go_of_kept_iterators_and_their_memtables() {
        let (b, map) = with_maps(true, 2_000);
        let slot = slot(&b);
        entries(&b, &map, 1);
        assert!(slot.holds_iterator());

        // Flushed behind the engine's back, the memtable stays pinned by the kept iterator.
        let before = memtable_bytes(&b);
        let db = &b.engine().handle.db;
        db.flush_cf(&b.engine().cf("m").unwrap()).unwrap();
        let pinned = memtable_bytes(&b);
        assert!(
            pinned * 2 > before,
            "the kept iterator holds the flushed memtable: {pinned} of {before} bytes"
        );
        slot.release();
        assert!(!slot.holds_iterator());
        let freed = memtable_bytes(&b);
        assert!(freed * 4 < before, "released: {freed} of {before} bytes");

        // The engine's own flush, settle, compaction and checkpoint release every slot.
        let (store, _) = CheckpointStore::open(Arc::new(MemoryStorage::new()), 1).unwrap();
        let store = Arc::new(store);
        let releases: [&dyn Fn(); 4] = [
            &|| b.engine().flush().unwrap(),
            &|| b.engine().settle().unwrap(),
            &|| b.engine().compact_state("m").unwrap(),
            &|| drop(b.checkpoint(&store, 1, &[]).unwrap().wait().unwrap()),
        ];
        for (i, release) in releases.iter().enumerate() {
            map.put(&b.key(1).unwrap(), &(), 100 + i as u64, 1).unwrap();
            assert_eq!(entries(&b, &map, 1).len(), 11 + i);
            assert!(slot.holds_iterator());
            release();
            assert!(!slot.holds_iterator(), "release {i}");
        }
    }

    #[test]
    fn without_reuse_no_iterator_is_kept() {
        let (b, map) = with_maps(false, 20);
        let slot = slot(&b);
        for k in 0..20 {
            assert_eq!(entries(&b, &map, k).len(), 10);
        }
        assert!(!slot.holds_iterator());
    }

    #[test]
    fn concurrent_scans_of_one_state_see_whole_writes() {
        // Readers on two threads share one slot (one takes the kept iterator, the other
        // a fresh one when they meet) while a third rewrites the map whole, in one batch:
        // every scan sees one write's ten entries, never a mix.
        let (b, map) = with_maps(true, 4);
        let (b, map) = (&b, &map);
        let done = &std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(move || {
                for round in 1..=2_000u64 {
                    let key = b.key(round % 4).unwrap();
                    map.put_all(&key, &(), (0..10).map(|u| (u, round))).unwrap();
                }
                done.store(true, std::sync::atomic::Ordering::Release);
            });
            for _ in 0..2 {
                s.spawn(move || {
                    while !done.load(std::sync::atomic::Ordering::Acquire) {
                        for k in 0..4 {
                            let got = entries(b, map, k);
                            assert_eq!(got.len(), 10);
                            let first = got[0].1;
                            let whole = got.iter().all(|&(_, v)| v == first)
                                || got
                                    .iter()
                                    .enumerate()
                                    .all(|(u, &(_, v))| v == k * 100 + u as u64);
                            assert!(whole, "key {k}: {got:?}");
                        }
                    }
                });
            }
        });
    }
}
