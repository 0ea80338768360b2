//! The heap engine's table: one [`CowMap`] per key group of `(key, namespace, state)` entries,
//! implementing the Value, List and Map table contracts.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use rayon::prelude::*;

use super::arena::TableAlloc;
use super::cow_map::{CowMap, CowSnapshot, Cursor, Located, Slot, Verdict};
use super::snapshot::{Canonical, FrozenState, write_encoded};
use crate::backend::{
    ListPeekFn, ListRef, ListTable, MapPeekFn, MapRef, MapTable, MapWalk, PeekFn, ValueTable,
    unexpired,
};
use crate::checkpoint::format::blocks::{read_bytes, sorted_by_bytes};
use crate::checkpoint::format::canonical::RestoredGroup;
use crate::codec::Codec;
use crate::error::{CodecError, Error, Result};
use crate::key::{Key, hash_bytes};
use crate::key_group::key_group_for_bytes;
use crate::ttl::{Stamped, is_expired};
use crate::types::{EngineConfig, MapKey, Namespace, StateKey, StateMeta, StateValue};

pub(crate) use super::small_map::MapEntries;
use smallvec::{Array, SmallVec};

/// A table's lock: taken by a compare-exchange, released by a plain store, and a waiter yields
/// its time slice until the holder is done. Why not a parking mutex (DESIGN.md §7): its
/// release is a second locked instruction, which waits for every store before it; after a
/// store into a line the lookup had not read (a list's end, a map's new entry), that is a
/// whole cache miss per operation. Held by one processing thread at a time in the intended
/// use, so a waiter is rare and brief.
type TableLock<T> = spin::mutex::SpinMutex<T, spin::relax::Yield>;
type TableGuard<'a, T> = spin::mutex::SpinMutexGuard<'a, T>;

/// This thread's token for [`HeapTable::reader`]: the address of a thread-local, so distinct
/// for every live thread and never 0.
#[inline]
fn thread_token() -> usize {
    thread_local! {
        static TOKEN: u8 = const { 0 };
    }
    TOKEN.with(|t| std::ptr::from_ref(t) as usize)
}

/// Clears [`HeapTable::reader`] when a borrowing read's closure returns or unwinds.
struct Reading<'a>(&'a AtomicUsize);

impl<'a> Reading<'a> {
    #[inline]
    fn start(reader: &'a AtomicUsize) -> Self {
        reader.store(thread_token(), Ordering::Relaxed);
        Reading(reader)
    }
}

impl Drop for Reading<'_> {
    #[inline]
    fn drop(&mut self) {
        self.0.store(0, Ordering::Relaxed);
    }
}

/// The last-access stamp of a packed value.
pub(crate) trait HasStamp {
    /// What a list or map of these keeps beside itself: a lower bound of its elements'
    /// stamps (`u64`) with TTL, nothing (`()`) without.
    type Floor: Floor;
    fn last_access(&self) -> u64;
}

/// A lower bound of the oldest stamp of a list or map, kept inline in its table entry, so
/// incremental cleanup judges most entries from the bucket alone instead of reading the
/// list's or map's own allocation (one more cache miss per visited entry). It only has to be
/// a bound: writes lower it to what they write, removals and re-stamps leave it (still a
/// bound, maybe a stale one), and the cleanup sets it exactly when it looks inside.
pub(crate) trait Floor: Copy + Send + Sync + 'static {
    /// The floor of nothing.
    const EMPTY: Self;
    /// Whether the floor tracks anything (states without TTL keep none).
    const TRACKED: bool;
    /// Lowers the floor to `stamp` if below.
    fn lower(&mut self, stamp: u64);
    /// Lowers the floor to `other` if below (`other`: the floor of what a write adds).
    fn meet(&mut self, other: Self);
    /// Whether nothing above this floor has expired at `now`.
    fn all_live(self, ttl: u64, now: u64) -> bool;
    /// Whether the floor is at or below `stamp` (the invariant, for assertions).
    fn admits(self, stamp: u64) -> bool;
    /// The floor as a stamp bound (0, which bounds everything, when it tracks nothing).
    fn bound(self) -> u64;
}

impl Floor for () {
    const EMPTY: Self = ();
    const TRACKED: bool = false;
    fn lower(&mut self, _: u64) {}
    fn meet(&mut self, (): ()) {}
    fn all_live(self, _: u64, _: u64) -> bool {
        false
    }
    fn admits(self, _: u64) -> bool {
        true
    }
    fn bound(self) -> u64 {
        0
    }
}

impl Floor for u64 {
    const EMPTY: Self = u64::MAX;
    const TRACKED: bool = true;
    fn lower(&mut self, stamp: u64) {
        *self = (*self).min(stamp);
    }
    fn meet(&mut self, other: u64) {
        self.lower(other);
    }
    fn all_live(self, ttl: u64, now: u64) -> bool {
        !is_expired(self, ttl, now)
    }
    fn admits(self, stamp: u64) -> bool {
        self <= stamp
    }
    fn bound(self) -> u64 {
        self
    }
}

/// The floor of one stamp.
fn floor_at<F: Floor>(stamp: u64) -> F {
    floor_of(std::iter::once(stamp))
}

/// The floor of `stamps` (not even iterated for a floor that tracks nothing).
fn floor_of<F: Floor>(stamps: impl Iterator<Item = u64>) -> F {
    let mut floor = F::EMPTY;
    if F::TRACKED {
        stamps.for_each(|s| floor.lower(s));
    }
    floor
}

/// How one value, list element or map value is kept: with its TTL stamp ([`Stamped`]), or
/// [`Bare`] when the state has no TTL, which saves 8 bytes per value.
pub(crate) trait Packed<V>: HasStamp + Clone + Send + Sync + 'static {
    fn pack(stamped: Stamped<V>) -> Self;
    fn unpack(&self) -> Stamped<V>;
    /// The stamp and the value, borrowed.
    fn peek(&self) -> (u64, &V);
    /// A list of these, lent as stored.
    fn lend_list(list: &[Self]) -> ListRef<'_, V>;
    /// A small map's entries, lent as stored.
    fn lend_map<K>(entries: &[(K, Self)]) -> MapRef<'_, K, V>;
}

pub(crate) use crate::backend::Bare;

impl<V> HasStamp for Stamped<V> {
    type Floor = u64;
    fn last_access(&self) -> u64 {
        self.last_access
    }
}

impl<V> HasStamp for Bare<V> {
    type Floor = ();
    fn last_access(&self) -> u64 {
        0
    }
}

impl<V: StateValue> Packed<V> for Stamped<V> {
    fn pack(stamped: Stamped<V>) -> Self {
        stamped
    }
    fn unpack(&self) -> Stamped<V> {
        self.clone()
    }
    fn peek(&self) -> (u64, &V) {
        (self.last_access, &self.value)
    }
    fn lend_list(list: &[Self]) -> ListRef<'_, V> {
        ListRef::Stamped(list)
    }
    fn lend_map<K>(entries: &[(K, Self)]) -> MapRef<'_, K, V> {
        MapRef::Stamped(entries)
    }
}

impl<V: StateValue> Packed<V> for Bare<V> {
    fn pack(stamped: Stamped<V>) -> Self {
        debug_assert_eq!(stamped.last_access, 0, "states without TTL are stamped 0");
        Bare(stamped.value)
    }
    fn unpack(&self) -> Stamped<V> {
        Stamped::new(0, self.0.clone())
    }
    fn peek(&self) -> (u64, &V) {
        (0, &self.0)
    }
    fn lend_list(list: &[Self]) -> ListRef<'_, V> {
        ListRef::Bare(list)
    }
    fn lend_map<K>(entries: &[(K, Self)]) -> MapRef<'_, K, V> {
        MapRef::Bare(entries)
    }
}

#[derive(Clone)]
struct Entry<K, N, S: Expiring> {
    key: K,
    ns: N,
    /// Beside the state, not in it: judged without reading the state's allocation.
    floor: S::Floor,
    state: S,
}

/// How a stored state shape expires (for incremental cleanup).
pub(crate) trait Expiring: Clone {
    /// What the table entry keeps for the cleanup ([`Floor`]; `()` for single values, whose
    /// stamp is inline already).
    type Floor: Floor;
    /// The exact floor of the state.
    fn floor(&self) -> Self::Floor;
    /// What the cleanup does with the state, given the entry's `floor`.
    fn judge(&self, floor: Self::Floor, ttl: u64, now: u64) -> Verdict;
    fn drop_expired(&mut self, ttl: u64, now: u64);
    /// A lower bound of every stamp in the state, given the entry's `floor` (for the
    /// segment floors of [`CowMap`]).
    fn bound(&self, floor: Self::Floor) -> u64;
}

fn judge_one(p: &impl HasStamp, ttl: u64, now: u64) -> Verdict {
    if is_expired(p.last_access(), ttl, now) {
        Verdict::Remove
    } else {
        Verdict::Keep
    }
}

/// Lists and maps: keep when the floor vouches for every element; else remove when all
/// expired, rewrite when some are, and rewrite a stale floor (none expired though the floor
/// said they might) so the next visits need not look inside again.
fn judge_many<F: Floor>(
    floor: F,
    ttl: u64,
    now: u64,
    stamps: impl Iterator<Item = u64> + Clone,
) -> Verdict {
    debug_assert!(
        stamps.clone().all(|stamp| floor.admits(stamp)),
        "a floor above a stamp hides it from cleanup"
    );
    if floor.all_live(ttl, now) {
        return Verdict::Keep;
    }
    let (mut total, mut expired) = (0, 0);
    for stamp in stamps {
        total += 1;
        expired += usize::from(is_expired(stamp, ttl, now));
    }
    match expired {
        0 if F::TRACKED => Verdict::Rewrite,
        0 => Verdict::Keep,
        n if n == total => Verdict::Remove,
        _ => Verdict::Rewrite,
    }
}

impl<V: Clone> Expiring for Stamped<V> {
    type Floor = ();
    fn floor(&self) {}
    fn judge(&self, (): (), ttl: u64, now: u64) -> Verdict {
        judge_one(self, ttl, now)
    }
    fn drop_expired(&mut self, _: u64, _: u64) {}
    fn bound(&self, (): ()) -> u64 {
        self.last_access()
    }
}

impl<V: Clone> Expiring for Bare<V> {
    type Floor = ();
    fn floor(&self) {}
    fn judge(&self, (): (), ttl: u64, now: u64) -> Verdict {
        judge_one(self, ttl, now)
    }
    fn drop_expired(&mut self, _: u64, _: u64) {}
    fn bound(&self, (): ()) -> u64 {
        self.last_access()
    }
}

impl<A: Array<Item = P>, P: HasStamp + Clone> Expiring for SmallVec<A> {
    type Floor = P::Floor;
    fn floor(&self) -> P::Floor {
        floor_of(self.iter().map(HasStamp::last_access))
    }
    fn judge(&self, floor: P::Floor, ttl: u64, now: u64) -> Verdict {
        judge_many(floor, ttl, now, self.iter().map(HasStamp::last_access))
    }
    fn drop_expired(&mut self, ttl: u64, now: u64) {
        self.retain(|s| !is_expired(s.last_access(), ttl, now));
    }
    fn bound(&self, floor: P::Floor) -> u64 {
        floor.bound()
    }
}

impl<UK: MapKey, P: HasStamp + Clone, A: Array<Item = (UK, P)>> Expiring for MapEntries<UK, P, A> {
    type Floor = P::Floor;
    fn floor(&self) -> P::Floor {
        floor_of(self.values().map(HasStamp::last_access))
    }
    fn judge(&self, floor: P::Floor, ttl: u64, now: u64) -> Verdict {
        judge_many(floor, ttl, now, self.values().map(HasStamp::last_access))
    }
    fn drop_expired(&mut self, ttl: u64, now: u64) {
        self.retain(|_, s| !is_expired(s.last_access(), ttl, now));
    }
    fn bound(&self, floor: P::Floor) -> u64 {
        floor.bound()
    }
}

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Hash of a value's encoded bytes (the same function [`Key`] uses for keys).
fn encoded_hash<T: Codec>(value: &T) -> u64 {
    SCRATCH.with(|buf| {
        let mut buf = buf.borrow_mut();
        buf.clear();
        value.encode(&mut buf);
        hash_bytes(&buf)
    })
}

/// Hash of a namespace: 0 for zero-sized namespaces such as `()`, so the default namespace
/// costs nothing.
#[inline]
fn ns_hash<N: Codec>(ns: &N) -> u64 {
    if N::FIXED_LEN == Some(0) {
        0
    } else {
        encoded_hash(ns)
    }
}

#[inline]
fn combine(key_hash: u64, ns_hash: u64) -> u64 {
    key_hash ^ ns_hash.rotate_left(23).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

fn rehash<K: Codec, N: Codec, S: Expiring>(e: &Entry<K, N, S>) -> u64 {
    combine(encoded_hash(&e.key), ns_hash(&e.ns))
}

/// Accesses whose incremental cleanup runs as one step: accesses are counted, and every
/// `CLEANUP_EVERY`-th visits the entries all of them owe (their count × the budget). The same
/// entries get visited; one longer sequential sweep lets the processor overlap the misses that
/// a few entries per access cannot, and reads the clock once instead of on every access
/// (DESIGN §5).
const CLEANUP_EVERY: usize = 16;

/// How many items ahead of its lookups a batch requests an item's table lines: far enough
/// that they arrive in time (a miss costs about as much as a dozen lookups that hit), near
/// enough that they are not evicted again first.
const PREFETCH_AHEAD: usize = 8;

/// Before a batch's item `i`: requests the table lines of item `i + PREFETCH_AHEAD` (and, at
/// the first item, those of the items before it too). `at(j)` is item `j`'s (key-group index,
/// hash), `None` past the end or for an item that could not be located.
#[inline]
fn prefetch_ahead<T: Clone>(
    groups: &[CowMap<T>],
    i: usize,
    at: impl Fn(usize) -> Option<(usize, u64)>,
) {
    // Plain branches per item: a range filtered through `at`, the form before, took 60
    // instructions a call (callgrind), nearly as many as the lookup it serves.
    let request = |j| {
        if let Some((index, hash)) = at(j)
            && let Some(group) = groups.get(index)
        {
            group.prefetch(hash);
        }
    };
    if i == 0 {
        (0..PREFETCH_AHEAD).for_each(request);
    }
    request(i + PREFETCH_AHEAD);
}

struct Inner<K, N, S: Expiring> {
    groups: Vec<CowMap<Entry<K, N, S>>>,
    /// Incremental cleanup position: a key-group index and a cursor in it.
    cleanup: (usize, Cursor),
    /// Accesses since incremental cleanup's last step (each owes it the per-access budget).
    cleanup_accesses: usize,
    /// A lower bound of every stamp in the table (0 while unknown), for incremental cleanup:
    /// lowered by every write of a stamp, as the segment floors are, and raised to the least
    /// segment floor at the end of each lap of the cleanup cursor. While nothing at or above
    /// it can have expired, a cleanup step has nothing to find and is skipped.
    floor: u64,
}

/// One state's table. `S` is the stored shape: `Stamped<V>` or `Bare<V>`, a `SmallVec` of those
/// (a list), or a map of those.
pub(crate) struct HeapTable<K, N, S: Expiring> {
    /// The state's name (for errors).
    name: Box<str>,
    config: EngineConfig,
    /// `(ttl in ms, entries to visit per access)` when the state has TTL and cleanup is on.
    cleanup: Option<(u64, usize)>,
    /// The TTL in ms (snapshots leave out what expired).
    ttl_millis: Option<u64>,
    inner: TableLock<Inner<K, N, S>>,
    /// The token of the thread running a borrowing read's closure under the lock
    /// ([`thread_token`]; 0: none), so that the closure reaching this table again gets
    /// [`Error::Reentrant`] instead of spinning on a lock its own thread holds.
    reader: AtomicUsize,
    /// Where the key groups' maps get their memory (restores make fresh ones).
    alloc: TableAlloc,
}

impl<K: StateKey, N: Namespace, S: Expiring + Send + Sync> HeapTable<K, N, S> {
    pub(crate) fn new(config: &EngineConfig, meta: &StateMeta, alloc: &TableAlloc) -> Self {
        let groups = (0..config.key_group_range().len())
            .map(|_| CowMap::new(alloc.clone()))
            .collect();
        let cleanup = meta
            .ttl
            .as_ref()
            .filter(|t| t.cleanup_per_access() > 0)
            .map(|t| (t.ttl_millis(), t.cleanup_per_access()));
        HeapTable {
            name: meta.name.as_str().into(),
            config: config.clone(),
            cleanup,
            ttl_millis: meta.ttl.as_ref().map(|t| t.ttl_millis()),
            inner: TableLock::new(Inner {
                groups,
                cleanup: (0, Cursor::default()),
                cleanup_accesses: 0,
                floor: 0,
            }),
            reader: AtomicUsize::new(0),
            alloc: alloc.clone(),
        }
    }

    /// Takes the table's lock; fails instead of waiting when this thread holds it already,
    /// inside a borrowing read's closure (which would wait forever).
    #[inline]
    fn lock(&self) -> Result<TableGuard<'_, Inner<K, N, S>>> {
        match self.inner.try_lock() {
            Some(guard) => Ok(guard),
            None => self.lock_contended(),
        }
    }

    #[cold]
    fn lock_contended(&self) -> Result<TableGuard<'_, Inner<K, N, S>>> {
        if self.reader.load(Ordering::Relaxed) == thread_token() {
            return Err(self.reentrant());
        }
        Ok(self.inner.lock())
    }

    fn reentrant(&self) -> Error {
        Error::Reentrant {
            state: self.name.to_string(),
        }
    }

    /// Runs `f` on the key group of `key` with the entry hash of (key, ns), under the lock,
    /// then lets incremental cleanup visit its share of entries.
    #[inline]
    fn with_group<R>(
        &self,
        key: &Key<K>,
        ns: &N,
        f: impl FnOnce(&mut CowMap<Entry<K, N, S>>, u64, &mut u64) -> R,
    ) -> Result<R> {
        let (index, hash) = self.locate(key, ns)?;
        self.with_groups(1, |groups, floor| f(&mut groups[index], hash, floor))
    }

    /// Runs `f` on the key groups and the table's floor (`Inner::floor`, which a write of a
    /// stamp must lower) under one lock for a batch of `accesses` accesses, then lets
    /// incremental cleanup visit the entries those accesses would have visited one by one.
    #[inline]
    fn with_groups<R>(
        &self,
        accesses: usize,
        f: impl FnOnce(&mut [CowMap<Entry<K, N, S>>], &mut u64) -> R,
    ) -> Result<R> {
        let mut inner = self.lock()?;
        debug_assert_eq!(inner.groups.len(), self.config.key_group_range().len());
        let Inner { groups, floor, .. } = &mut *inner;
        let result = f(groups, floor);
        if let Some((ttl, budget)) = self.cleanup {
            // A count, not the entries owed: an add per access, the multiply once per step.
            inner.cleanup_accesses = inner.cleanup_accesses.saturating_add(accesses);
            if inner.cleanup_accesses >= CLEANUP_EVERY {
                let now = self.config.now_millis();
                let owed = budget.saturating_mul(std::mem::take(&mut inner.cleanup_accesses));
                // Nothing can have expired: the step would only walk past fresh segments (a
                // few hundred instructions per access that find nothing).
                if is_expired(inner.floor, ttl, now) {
                    inner.cleanup_step(ttl, owed, now);
                }
            }
        }
        Ok(result)
    }

    /// The key-group index and entry hash of (key, ns), or the key's range error.
    #[inline]
    fn locate(&self, key: &Key<K>, ns: &N) -> Result<(usize, u64)> {
        Ok((
            self.config.group_index(key)?,
            combine(key.hash(), ns_hash(ns)),
        ))
    }

    /// `read(item, state)` for each item's (key, ns) (`pair` picks them), under one lock.
    /// Every item is located first, under the lock and down to its segment (a [`Located`]
    /// borrows it), so that each item's table lines can be requested a few items before its
    /// lookup and the processor overlaps their cache misses, which one call per item cannot;
    /// neither the request nor the lookup indexes the directory again. The locations are kept
    /// without their errors (a `Result` of one is 96 bytes, the `Error`'s size, an `Option`
    /// of a location 24: a batch of 1,024 keeps 24 KiB of them, not 96, and reads 1.3× as
    /// fast, DESIGN.md §9); an item that could not be located is located again for its error
    /// when its turn comes.
    fn get_states<T, R>(
        &self,
        items: &[T],
        pair: impl Fn(&T) -> (&Key<K>, &N),
        mut read: impl FnMut(&T, Option<&S>) -> R,
    ) -> Vec<Result<R>> {
        let read = self.with_groups(items.len(), |groups, _| {
            let groups = &*groups;
            let located: Vec<Option<Located<'_, Entry<K, N, S>>>> = items
                .iter()
                .map(|item| {
                    let (key, ns) = pair(item);
                    let (index, hash) = self.locate(key, ns).ok()?;
                    Some(groups[index].locate(hash))
                })
                .collect();
            let request = |j: usize| {
                if let Some(Some(at)) = located.get(j) {
                    at.prefetch();
                }
            };
            (0..PREFETCH_AHEAD).for_each(request);
            // Each item's lines requested `PREFETCH_AHEAD` items before its lookup, and its
            // answer built at once: a separate pass over the states found cost more
            // instructions than the shorter loop saved (DESIGN.md §9).
            items
                .iter()
                .zip(&located)
                .enumerate()
                .map(|(i, (item, at))| {
                    request(i + PREFETCH_AHEAD);
                    let (key, ns) = pair(item);
                    let at = match at {
                        Some(at) => *at,
                        None => {
                            let (index, hash) = self.locate(key, ns)?;
                            groups[index].locate(hash)
                        }
                    };
                    let state = at.get(Self::eq(key, ns)).map(|e| &e.state);
                    Ok(read(item, state))
                })
                .collect()
        });
        // The lock refused (this thread holds it, in a borrowing read): every item fails so.
        read.unwrap_or_else(|_| items.iter().map(|_| Err(self.reentrant())).collect())
    }

    /// [`upsert`](Self::upsert) of every item in order, under one lock; every key is checked
    /// before anything is written. An item's floor is that of what it writes.
    fn upsert_many<X>(
        &self,
        items: Vec<(&Key<K>, &N, S::Floor, X)>,
        mut create: impl FnMut(X) -> S,
        mut modify: impl FnMut(&mut S, X),
    ) -> Result<()> {
        // A loop, not a `collect` into a `Result`: that moved each 96-byte `Result` through
        // its adapter (49 instructions a pair, DESIGN.md §9).
        let mut located = Vec::with_capacity(items.len());
        for (key, ns, _, _) in &items {
            located.push(self.locate(key, ns)?);
        }
        let swept = self.cleanup.is_some();
        self.with_groups(items.len(), |groups, table_floor| {
            for (i, ((key, ns, floor, payload), (index, hash))) in
                items.into_iter().zip(located.iter().copied()).enumerate()
            {
                prefetch_ahead(groups, i, |j| located.get(j).copied());
                Self::place(
                    &mut groups[index],
                    hash,
                    (key, ns),
                    (floor, payload),
                    &mut create,
                    &mut modify,
                    swept.then_some(&mut *table_floor),
                );
            }
        })
    }

    fn eq<'a>(key: &'a Key<K>, ns: &'a N) -> impl Fn(&Entry<K, N, S>) -> bool + 'a {
        move |e| e.key == *key.key() && e.ns == *ns
    }

    fn get_state<R>(&self, key: &Key<K>, ns: &N, read: impl FnOnce(Option<&S>) -> R) -> Result<R> {
        self.with_group(key, ns, |m, h, _| {
            read(m.get(h, Self::eq(key, ns)).map(|e| &e.state))
        })
    }

    /// [`get_state`](Self::get_state) for a borrowing read: `read` is the caller's code, run
    /// under the lock, so this thread is marked as the table's reader meanwhile (a lock
    /// attempt from inside it then fails with `Reentrant` instead of spinning).
    fn lend_state(&self, key: &Key<K>, ns: &N, read: impl FnOnce(Option<&S>)) -> Result<()> {
        self.get_state(key, ns, |s| {
            let _reading = Reading::start(&self.reader);
            read(s);
        })
    }

    /// Modifies the state of (key, ns) in place with `payload`, or creates it from `payload`;
    /// `floor` is the [`Floor`] of what `payload` writes (it lowers the entry's).
    fn upsert<X>(
        &self,
        key: &Key<K>,
        ns: &N,
        floor: S::Floor,
        payload: X,
        create: impl FnOnce(X) -> S,
        modify: impl FnOnce(&mut S, X),
    ) -> Result<()> {
        let swept = self.cleanup.is_some();
        self.with_group(key, ns, |m, h, table_floor| {
            let table_floor = swept.then_some(table_floor);
            Self::place(
                m,
                h,
                (key, ns),
                (floor, payload),
                create,
                modify,
                table_floor,
            );
        })
    }

    /// Modifies the entry of (key, ns) in `map` with `payload` (whose floor is `floor`), or
    /// creates it; `table_floor`: the table's floor when it runs incremental cleanup, which
    /// reads it and the segment floors (a table without it keeps them at 0, untouched).
    fn place<X>(
        map: &mut CowMap<Entry<K, N, S>>,
        hash: u64,
        (key, ns): (&Key<K>, &N),
        (floor, payload): (S::Floor, X),
        create: impl FnOnce(X) -> S,
        modify: impl FnOnce(&mut S, X),
        table_floor: Option<&mut u64>,
    ) {
        let e = match map.slot(hash, Self::eq(key, ns), rehash) {
            Slot::Occupied(e) => {
                modify(&mut e.state, payload);
                e.floor.meet(floor);
                e
            }
            Slot::Vacant(slot) => slot.insert(Entry {
                key: key.key().clone(),
                ns: ns.clone(),
                floor,
                state: create(payload),
            }),
        };
        if let Some(table_floor) = table_floor {
            let bound = e.state.bound(e.floor);
            map.lower_floor(hash, bound);
            *table_floor = (*table_floor).min(bound);
        }
    }

    fn remove_entry(&self, key: &Key<K>, ns: &N) -> Result<()> {
        self.with_group(key, ns, |m, h, _| {
            m.remove(h, Self::eq(key, ns));
        })
    }

    fn keys_of(&self, group: u16) -> Result<Vec<(K, N)>> {
        let index = self.config.local_index(group)?;
        let inner = self.lock()?;
        Ok(inner.groups[index]
            .iter()
            .map(|e| (e.key.clone(), e.ns.clone()))
            .collect())
    }
}

/// What the engine's metrics read from a table.
pub(crate) trait TableStats: Send + Sync {
    /// (key, namespace) entries over all key groups.
    fn entries(&self) -> Result<u64>;
    /// Bytes of the hash tables (not what values own on the heap).
    fn bytes(&self) -> Result<u64>;
}

impl<K: StateKey, N: Namespace, S: Expiring + Send + Sync> TableStats for HeapTable<K, N, S> {
    fn entries(&self) -> Result<u64> {
        Ok(self.lock()?.groups.iter().map(|g| g.len() as u64).sum())
    }

    fn bytes(&self) -> Result<u64> {
        Ok(self
            .lock()?
            .groups
            .iter()
            .map(|g| g.allocation_size() as u64)
            .sum())
    }
}

/// What snapshots and restores need from a table, type-erased.
pub(crate) trait HeapState: TableStats {
    /// Freezes the table: O(key groups), no entry is copied.
    ///
    /// # Errors
    ///
    /// [`Error::Reentrant`] from inside a borrowing read's closure on this table.
    fn freeze(&self) -> Result<Box<dyn FrozenState>>;
    /// Decodes restored canonical records, per key group, into the (fresh) table.
    fn restore_groups(&self, groups: &BTreeMap<u16, RestoredGroup>) -> Result<(), CodecError>;
}

struct Frozen<K, N, S: Expiring> {
    groups: Vec<CowSnapshot<Entry<K, N, S>>>,
    ttl: Option<u64>,
}

impl<K: StateKey, N: Namespace, S: Expiring + Canonical + Send + Sync + 'static> FrozenState
    for Frozen<K, N, S>
{
    fn write_group(&self, index: usize, now: u64, out: &mut Vec<u8>) -> Result<usize, CodecError> {
        let Some(group) = self.groups.get(index).filter(|g| g.len() > 0) else {
            return Ok(0);
        };
        // Records go out in key order (the order `Order::Key` gives a section, which then has
        // nothing to move): each entry's `bytes key | bytes namespace` first, sorted, then the
        // records in that order. Sorting here rather than the section's records reads entries
        // in key order instead of copying 100-byte records from scattered places.
        let mut prefixes = Vec::new();
        let mut entries = Vec::with_capacity(group.len());
        for e in group.iter() {
            let start = prefixes.len();
            write_encoded(&mut prefixes, &e.key)?;
            write_encoded(&mut prefixes, &e.ns)?;
            entries.push((start, prefixes.len(), e));
        }
        let sorted = sorted_by_bytes(
            entries
                .iter()
                .map(|&(start, end, e)| (prefixes.get(start..end).unwrap_or(&[]), e)),
        );
        let mut n = 0;
        for (prefix, e) in sorted {
            let start = out.len();
            out.extend_from_slice(prefix);
            if e.state.write_live(self.ttl, now, out)? {
                n += 1;
            } else {
                out.truncate(start);
            }
        }
        Ok(n)
    }
}

impl<K: StateKey, N: Namespace, S: Expiring + Canonical + Send + Sync + 'static> HeapState
    for HeapTable<K, N, S>
{
    fn freeze(&self) -> Result<Box<dyn FrozenState>> {
        let inner = self.lock()?;
        Ok(Box::new(Frozen {
            groups: inner.groups.iter().map(CowMap::snapshot).collect(),
            ttl: self.ttl_millis,
        }))
    }

    fn restore_groups(&self, groups: &BTreeMap<u16, RestoredGroup>) -> Result<(), CodecError> {
        let invalid = |reason: String| CodecError::Invalid {
            what: "restored record",
            reason,
        };
        let mut items = Vec::with_capacity(groups.len());
        for (&group, g) in groups {
            let index = self
                .config
                .local_index(group)
                .map_err(|e| invalid(e.to_string()))?;
            items.push((index, group, g));
        }
        // Key groups decode independently: build their maps in parallel, then install them
        // under the lock.
        let built = items
            .par_iter()
            .map(|&(index, group, g)| {
                self.decode_group(group, g.records, &g.bytes)
                    .map(|map| (index, map))
            })
            .collect::<Result<Vec<_>, CodecError>>()?;
        let mut inner = self.inner.lock();
        for (index, map) in built {
            let slot = inner
                .groups
                .get_mut(index)
                .ok_or_else(|| invalid(format!("key group index {index} outside the table")))?;
            assert_eq!(slot.len(), 0, "restore fills a fresh table");
            *slot = map;
        }
        // The restored stamps are bounded by nothing known yet (their segment floors are 0).
        inner.floor = 0;
        Ok(())
    }
}

impl<K: StateKey, N: Namespace, S: Expiring + Canonical + Send + Sync + 'static>
    HeapTable<K, N, S>
{
    /// Decodes `records` canonical records of key group `group` into a fresh map.
    fn decode_group(
        &self,
        group: u16,
        records: u32,
        bytes: &[u8],
    ) -> Result<CowMap<Entry<K, N, S>>, CodecError> {
        let invalid = |reason: String| CodecError::Invalid {
            what: "restored record",
            reason,
        };
        let max_parallelism = self.config.max_parallelism();
        let mut input = bytes;
        // As many records as the bytes can hold (a record takes at least 3: a key's length, a
        // namespace's, a payload's first byte).
        let capacity = usize::try_from(records).map_or(0, |n| n.min(bytes.len() / 3));
        let mut decoded = Vec::with_capacity(capacity);
        for _ in 0..records {
            let key_bytes = read_bytes(&mut input, "key")?;
            if key_group_for_bytes(key_bytes, max_parallelism) != group {
                return Err(invalid(format!(
                    "a key of another group in key group {group}"
                )));
            }
            let key = K::decode(key_bytes)?;
            let ns = N::decode(read_bytes(&mut input, "namespace")?)?;
            let state = S::read(&mut input)?;
            let hash = combine(hash_bytes(key_bytes), ns_hash(&ns));
            decoded.push((hash, key, ns, state));
        }
        crate::codec::expect_end(input, "restored records")?;
        // Inserted in the map's own order (segment, then home bucket), not the file's (key
        // order): each segment then fills in one pass over neighbouring buckets, where key
        // order scatters the inserts over the whole group's table (a third slower at 2M keys).
        let order = CowMap::<Entry<K, N, S>>::fill_order(decoded.len());
        decoded.sort_unstable_by_key(|&(hash, ..)| order(hash));
        let mut map = CowMap::with_capacity(decoded.len(), self.alloc.clone());
        for (hash, key, ns, state) in decoded {
            match map.slot(hash, |e| e.key == key && e.ns == ns, rehash) {
                Slot::Occupied(_) => {
                    return Err(invalid("a key and namespace appear twice".into()));
                }
                Slot::Vacant(slot) => {
                    let floor = state.floor();
                    slot.insert(Entry {
                        key,
                        ns,
                        floor,
                        state,
                    });
                }
            }
        }
        Ok(map)
    }
}

impl<K: Clone, N: Clone, S: Expiring> Inner<K, N, S> {
    /// Visits up to `budget` entries from the cleanup cursor, dropping what expired.
    fn cleanup_step(&mut self, ttl: u64, budget: usize, now: u64) {
        let groups = self.groups.len();
        // One budget for the whole step, whatever groups it crosses (a fresh one per group
        // would visit up to a budget more per group boundary: with the steps' larger budgets
        // and small groups, twice the work).
        let (mut visits, mut probes) = (budget, budget.saturating_mul(8));
        // Each sweep either spends the budget or wraps to the next group; stop after one lap.
        for _ in 0..groups {
            let (group, cursor) = &mut self.cleanup;
            let Some(map) = self.groups.get_mut(*group) else {
                self.cleanup = (0, Cursor::default());
                continue;
            };
            let wrapped = map.sweep(
                cursor,
                (&mut visits, &mut probes),
                |floor| !is_expired(floor, ttl, now),
                |e| e.state.judge(e.floor, ttl, now),
                |e| {
                    e.state.drop_expired(ttl, now);
                    e.floor = e.state.floor();
                },
                |e| e.state.bound(e.floor),
            );
            if !wrapped {
                return;
            }
            *group = (*group + 1) % groups;
            if *group == 0 {
                // A lap ended: every segment floor bounds its stamps, so their least bounds
                // the table's.
                self.floor = self
                    .groups
                    .iter()
                    .map(CowMap::floor)
                    .min()
                    .unwrap_or(u64::MAX);
            }
        }
    }
}

impl<K: StateKey, N: Namespace, V: StateValue, P: Packed<V> + Expiring> ValueTable<K, N, V>
    for HeapTable<K, N, P>
{
    fn get(&self, key: &Key<K>, ns: &N) -> Result<Option<Stamped<V>>> {
        self.get_state(key, ns, |s| s.map(P::unpack))
    }

    fn get_value(&self, key: &Key<K>, ns: &N) -> Result<Option<V>> {
        self.get_state(key, ns, |s| s.map(|p| p.peek().1.clone()))
    }

    fn get_unexpired(
        &self,
        key: &Key<K>,
        ns: &N,
        ttl_millis: u64,
        now: u64,
    ) -> Result<Option<Option<V>>> {
        // Judged on the stored value, cloned only when live.
        self.get_state(key, ns, |s| {
            unexpired(s.map(P::peek), ttl_millis, now).map(|v| v.cloned())
        })
    }

    fn peek(&self, key: &Key<K>, ns: &N, read: &mut PeekFn<'_, V>) -> Result<()> {
        self.lend_state(key, ns, |s| read(s.map(P::peek)))
    }

    fn put(&self, key: &Key<K>, ns: &N, value: Stamped<V>) -> Result<()> {
        let floor = floor_at(value.last_access);
        self.upsert(key, ns, floor, P::pack(value), |v| v, |state, v| *state = v)
    }

    fn get_many(&self, items: &[(&Key<K>, &N)]) -> Vec<Result<Option<Stamped<V>>>> {
        self.get_states(items, |&(key, ns)| (key, ns), |_, s| s.map(P::unpack))
    }

    fn get_many_values(&self, items: &[(&Key<K>, &N)]) -> Vec<Result<Option<V>>> {
        self.get_states(
            items,
            |&(key, ns)| (key, ns),
            |_, s| s.map(|p| p.peek().1.clone()),
        )
    }

    fn put_many(&self, items: Vec<(&Key<K>, &N, Stamped<V>)>) -> Result<()> {
        let items = items
            .into_iter()
            .map(|(key, ns, v)| (key, ns, floor_at(v.last_access), v))
            .collect();
        self.upsert_many(items, P::pack, |state, v| *state = P::pack(v))
    }

    fn remove(&self, key: &Key<K>, ns: &N) -> Result<()> {
        self.remove_entry(key, ns)
    }

    fn keys(&self, group: u16) -> Result<Vec<(K, N)>> {
        self.keys_of(group)
    }
}

/// A large (hashed) map's entries, lent by [`MapTable::peek_entries`] where the table keeps
/// them.
struct LentMap<'a, M>(&'a M);

impl<UK, UV, P: Packed<UV>, S> MapWalk<UK, UV> for LentMap<'_, hashbrown::HashMap<UK, P, S>> {
    fn len(&self) -> usize {
        self.0.len()
    }
    fn entries(&self) -> Box<dyn Iterator<Item = (&UK, u64, &UV)> + '_> {
        Box::new(self.0.iter().map(|(k, p)| {
            let (stamp, v) = p.peek();
            (k, stamp, v)
        }))
    }
}

/// The elements packed, and their floor.
fn pack_all<E, P: Packed<E>, A: Array<Item = P>>(
    elements: Vec<Stamped<E>>,
) -> (P::Floor, SmallVec<A>) {
    let floor = floor_of(elements.iter().map(|e| e.last_access));
    (floor, elements.into_iter().map(P::pack).collect())
}

impl<K: StateKey, N: Namespace, E: StateValue, P: Packed<E>, A> ListTable<K, N, E>
    for HeapTable<K, N, SmallVec<A>>
where
    A: Array<Item = P> + Send + Sync + 'static,
{
    fn get(&self, key: &Key<K>, ns: &N) -> Result<Vec<Stamped<E>>> {
        self.get_state(key, ns, |s| {
            s.map(|l| l.iter().map(P::unpack).collect())
                .unwrap_or_default()
        })
    }

    fn peek(&self, key: &Key<K>, ns: &N, read: &mut ListPeekFn<'_, E>) -> Result<()> {
        self.lend_state(key, ns, |s| {
            read(P::lend_list(s.map_or(&[][..], |l| l.as_slice())))
        })
    }

    fn get_many(&self, items: &[(&Key<K>, &N)]) -> Vec<Result<Vec<Stamped<E>>>> {
        self.get_states(
            items,
            |&(key, ns)| (key, ns),
            |_, s| {
                s.map(|l| l.iter().map(P::unpack).collect())
                    .unwrap_or_default()
            },
        )
    }

    fn get_many_values(&self, items: &[(&Key<K>, &N)]) -> Vec<Result<Vec<E>>> {
        self.get_states(
            items,
            |&(key, ns)| (key, ns),
            |_, s| {
                s.map(|l| l.iter().map(|p| p.peek().1.clone()).collect())
                    .unwrap_or_default()
            },
        )
    }

    fn push_many(&self, items: Vec<(&Key<K>, &N, Stamped<E>)>) -> Result<()> {
        let items = items
            .into_iter()
            .map(|(key, ns, e)| (key, ns, floor_at(e.last_access), e))
            .collect();
        self.upsert_many(
            items,
            |e| smallvec::smallvec![P::pack(e)],
            |list, e| list.push(P::pack(e)),
        )
    }

    fn values(&self, key: &Key<K>, ns: &N) -> Result<Vec<E>> {
        self.get_state(key, ns, |s| {
            s.map(|l| l.iter().map(|p| p.peek().1.clone()).collect())
                .unwrap_or_default()
        })
    }

    fn push(&self, key: &Key<K>, ns: &N, element: Stamped<E>) -> Result<()> {
        self.upsert(
            key,
            ns,
            floor_at(element.last_access),
            P::pack(element),
            |p| smallvec::smallvec![p],
            |list, p| list.push(p),
        )
    }

    fn append(&self, key: &Key<K>, ns: &N, elements: Vec<Stamped<E>>) -> Result<()> {
        if elements.is_empty() {
            return Ok(());
        }
        let (floor, packed) = pack_all::<E, P, A>(elements);
        self.upsert(key, ns, floor, packed, |e| e, |list, e| list.extend(e))
    }

    fn put(&self, key: &Key<K>, ns: &N, elements: Vec<Stamped<E>>) -> Result<()> {
        if elements.is_empty() {
            return self.remove_entry(key, ns);
        }
        let (floor, packed) = pack_all::<E, P, A>(elements);
        self.upsert(key, ns, floor, packed, |e| e, |list, e| *list = e)
    }

    fn remove(&self, key: &Key<K>, ns: &N) -> Result<()> {
        self.remove_entry(key, ns)
    }

    fn keys(&self, group: u16) -> Result<Vec<(K, N)>> {
        self.keys_of(group)
    }
}

impl<K: StateKey, N: Namespace, UK: MapKey, UV: StateValue, P: Packed<UV>, A> MapTable<K, N, UK, UV>
    for HeapTable<K, N, MapEntries<UK, P, A>>
where
    A: Array<Item = (UK, P)> + Send + Sync + 'static,
{
    fn get(&self, key: &Key<K>, ns: &N, user_key: &UK) -> Result<Option<Stamped<UV>>> {
        self.get_state(key, ns, |s| s.and_then(|m| m.get(user_key).map(P::unpack)))
    }

    fn get_value(&self, key: &Key<K>, ns: &N, user_key: &UK) -> Result<Option<UV>> {
        self.get_state(key, ns, |s| {
            s.and_then(|m| m.get(user_key)).map(|p| p.peek().1.clone())
        })
    }

    fn peek(&self, key: &Key<K>, ns: &N, user_key: &UK, read: &mut PeekFn<'_, UV>) -> Result<()> {
        self.lend_state(key, ns, |s| {
            read(s.and_then(|m| m.get(user_key)).map(P::peek))
        })
    }

    fn get_many(&self, items: &[(&Key<K>, &N, &UK)]) -> Vec<Result<Option<Stamped<UV>>>> {
        self.get_states(
            items,
            |&(key, ns, _)| (key, ns),
            |&(_, _, user_key), s| s.and_then(|m| m.get(user_key).map(P::unpack)),
        )
    }

    fn get_many_values(&self, items: &[(&Key<K>, &N, &UK)]) -> Vec<Result<Option<UV>>> {
        self.get_states(
            items,
            |&(key, ns, _)| (key, ns),
            |&(_, _, user_key), s| s.and_then(|m| m.get(user_key)).map(|p| p.peek().1.clone()),
        )
    }

    fn put_many(&self, items: Vec<(&Key<K>, &N, UK, Stamped<UV>)>) -> Result<()> {
        self.upsert_many(
            items
                .into_iter()
                .map(|(key, ns, user_key, value)| {
                    (
                        key,
                        ns,
                        floor_at(value.last_access),
                        (user_key, P::pack(value)),
                    )
                })
                .collect(),
            |(k, v)| MapEntries::from_iter([(k, v)]),
            |map, (k, v)| {
                map.insert(k, v);
            },
        )
    }

    fn put(&self, key: &Key<K>, ns: &N, user_key: UK, value: Stamped<UV>) -> Result<()> {
        let single = |(k, v)| MapEntries::from_iter([(k, v)]);
        self.upsert(
            key,
            ns,
            floor_at(value.last_access),
            (user_key, P::pack(value)),
            single,
            |map, (k, v)| {
                map.insert(k, v);
            },
        )
    }

    fn put_all(&self, key: &Key<K>, ns: &N, entries: Vec<(UK, Stamped<UV>)>) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let floor = floor_of(entries.iter().map(|(_, v)| v.last_access));
        let packed: Vec<(UK, P)> = entries.into_iter().map(|(k, v)| (k, P::pack(v))).collect();
        self.upsert(
            key,
            ns,
            floor,
            packed,
            |e| e.into_iter().collect(),
            |map, e| map.extend(e),
        )
    }

    fn remove(&self, key: &Key<K>, ns: &N, user_key: &UK) -> Result<()> {
        self.with_group(key, ns, |m, h, _| {
            let eq = Self::eq(key, ns);
            // Look first, so removing an absent entry copies no segment shared with a snapshot.
            if !m
                .get(h, &eq)
                .is_some_and(|e| e.state.contains_key(user_key))
            {
                return;
            }
            let now_empty = m.get_mut(h, &eq).is_some_and(|e| {
                e.state.remove(user_key);
                e.state.is_empty()
            });
            if now_empty {
                m.remove(h, &eq);
            }
        })
    }

    fn entries(&self, key: &Key<K>, ns: &N) -> Result<Vec<(UK, Stamped<UV>)>> {
        self.get_state(key, ns, |s| {
            s.map(|m| m.iter().map(|(k, v)| (k.clone(), v.unpack())).collect())
                .unwrap_or_default()
        })
    }

    fn peek_entries(&self, key: &Key<K>, ns: &N, read: &mut MapPeekFn<'_, UK, UV>) -> Result<()> {
        self.lend_state(key, ns, |s| match s {
            None => read(P::lend_map(&[])),
            Some(MapEntries::Small(m)) => read(P::lend_map(m.as_slice())),
            Some(MapEntries::Large(m)) => read(MapRef::Walk(&LentMap(m))),
        })
    }

    fn is_empty(&self, key: &Key<K>, ns: &N) -> Result<bool> {
        self.get_state(key, ns, |s| s.is_none_or(|m| m.is_empty()))
    }

    fn clear(&self, key: &Key<K>, ns: &N) -> Result<()> {
        self.remove_entry(key, ns)
    }

    fn keys(&self, group: u16) -> Result<Vec<(K, N)>> {
        self.keys_of(group)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::backend::ValueTable;
    use crate::clock::ManualClock;
    use crate::ttl::TtlConfig;
    use crate::types::StateKind;

    /// A value table of `u64`s with a TTL of 100 ms and incremental cleanup, on `clock`.
    fn table(clock: &ManualClock) -> (EngineConfig, HeapTable<u64, (), Stamped<u64>>) {
        let config = EngineConfig::new(128).unwrap().with_clock(clock.shared());
        let meta = StateMeta {
            name: "v".into(),
            kind: StateKind::Value,
            key_codec: u64::codec_id(),
            namespace_codec: <()>::codec_id(),
            user_key_codec: None,
            value_codec: u64::codec_id(),
            ttl: Some(TtlConfig::new(Duration::from_millis(100)).with_cleanup_per_access(5)),
        };
        let t = HeapTable::new(&config, &meta, &TableAlloc::global());
        (config, t)
    }

    fn cursor_of(t: &HeapTable<u64, (), Stamped<u64>>) -> (usize, Cursor) {
        t.inner.lock().cleanup
    }

    /// Inside a borrowing read's closure the table refuses this thread (every kind of access)
    /// instead of spinning on its own lock; the mark is cleared when the closure returns or
    /// unwinds; and another thread that finds the lock taken waits, it is not refused.
    #[test]
    fn a_borrowing_read_refuses_its_own_thread_only() {
        let clock = ManualClock::new(1_000);
        let (config, t) = table(&clock);
        let key = Key::new(3u64, config.max_parallelism()).unwrap();
        t.put(&key, &(), Stamped::new(1_000, 30)).unwrap();
        let reentrant =
            |r: Result<()>| matches!(r, Err(Error::Reentrant { state }) if state == "v");
        let mut seen = None;
        t.peek(&key, &(), &mut |v| {
            seen = v.map(|(stamp, v)| (stamp, *v));
            assert_eq!(t.reader.load(Ordering::Relaxed), thread_token());
            assert!(reentrant(t.get(&key, &()).map(drop)));
            assert!(reentrant(t.put(&key, &(), Stamped::new(1_000, 1))));
            assert!(reentrant(t.keys(0).map(drop)));
            assert!(reentrant(t.entries().map(drop)));
            assert!(reentrant(t.freeze().map(drop)));
            let many = t.get_many(&[(&key, &()), (&key, &())]);
            assert!(many.into_iter().all(|r| reentrant(r.map(drop))));
        })
        .unwrap();
        assert_eq!(seen, Some((1_000, 30)), "lent the stored stamp and value");
        assert_eq!(t.reader.load(Ordering::Relaxed), 0, "cleared on return");
        assert_eq!(t.get(&key, &()).unwrap().map(|s| s.value), Some(30));

        let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            t.peek(&key, &(), &mut |_| panic!("the reader's own panic"))
        }));
        assert!(unwound.is_err());
        assert_eq!(t.reader.load(Ordering::Relaxed), 0, "cleared on unwind");
        assert_eq!(t.get(&key, &()).unwrap().map(|s| s.value), Some(30));

        // Another thread holds the table in a closure; this one waits for it.
        let (inside_tx, inside_rx) = std::sync::mpsc::channel();
        std::thread::scope(|scope| {
            scope.spawn(|| {
                t.peek(&key, &(), &mut |_| {
                    inside_tx.send(()).unwrap();
                    std::thread::sleep(Duration::from_millis(50));
                })
                .unwrap();
            });
            inside_rx.recv().unwrap();
            let waited = t.get(&key, &());
            assert_eq!(
                waited.unwrap().map(|s| s.value),
                Some(30),
                "waited, not refused"
            );
        });
    }

    /// The table's floor: unknown (0) until a lap of the cleanup ends, then the least stamp;
    /// lowered by a write of an older stamp; and while nothing at or above it can have
    /// expired, cleanup steps leave the cursor where it is.
    #[test]
    fn the_table_floor_bounds_every_stamp_and_skips_fresh_steps() {
        let clock = ManualClock::new(1_000);
        let (config, t) = table(&clock);
        let key = |k: u64| Key::new(k, config.max_parallelism()).unwrap();
        t.put(&key(0), &(), Stamped::new(1_000, 0)).unwrap();
        assert_eq!(t.inner.lock().floor, 0, "unknown before a lap");
        for k in 1..200 {
            t.put(&key(k), &(), Stamped::new(1_000 + k % 3, k)).unwrap();
        }
        // Accesses drive the cleanup through a whole lap.
        for _ in 0..2_000 {
            t.get(&key(0), &()).unwrap();
        }
        assert_eq!(t.inner.lock().floor, 1_000, "the least stamp after a lap");
        let before = cursor_of(&t);
        for _ in 0..2_000 {
            t.get(&key(0), &()).unwrap();
        }
        assert_eq!(cursor_of(&t), before, "fresh: no step moved the cursor");
        // An older stamp lowers the floor at once.
        t.put(&key(7), &(), Stamped::new(900, 7)).unwrap();
        assert_eq!(t.inner.lock().floor, 900);
        // Past its expiry the steps run again and drop it.
        clock.set(1_050);
        for _ in 0..2_000 {
            t.get(&key(0), &()).unwrap();
        }
        // (The table's own `get` applies no TTL: only the cleanup removes.)
        assert_eq!(
            t.get(&key(7), &()).unwrap(),
            None,
            "the steps ran and dropped it"
        );
        assert_eq!(
            t.inner.lock().floor,
            1_000,
            "and a later lap raised the floor again"
        );
        assert_eq!(t.get(&key(8), &()).unwrap().map(|s| s.value), Some(8));
    }
}
