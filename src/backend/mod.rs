//! The engine contract: what every storage engine implements beneath the typed views.
//!
//! The contract is **typed**: an engine stores `(key, namespace) → value` tables of the user's
//! own types. The heap engine keeps them as Rust objects, so an access costs no serialization
//! (as Flink's heap backend); a byte-level engine (RocksDB) encodes with the types' codecs
//! inside its table implementation. TTL stamps ([`Stamped`]) are part of the contract, so an
//! engine can expire entries in the background (heap: incremental cleanup; RocksDB: a
//! compaction filter) while the views keep one implementation of the read-side semantics.
//!
//! Tables are shared (`Arc<dyn …>`) and take `&self`: each engine brings its own interior
//! synchronisation, so views are `Send + Sync` and cheap to clone.

mod any;
pub mod heap;
#[cfg(feature = "rocksdb")]
pub mod rocksdb;
mod snapshot;
mod timer_store;

pub use any::AnyEngine;
pub use snapshot::{SnapshotJob, SnapshotMode, SnapshotOutput, SnapshotUpload};
pub use timer_store::TimerStore;

use std::fmt;
use std::sync::Arc;

use crate::checkpoint::{RestoredTimerSet, TimerMeta};
use crate::error::Result;
use crate::key::Key;
use crate::ttl::{Stamped, is_expired};
use crate::types::{EngineConfig, MapKey, Namespace, StateKey, StateMeta, StateValue};

/// What [`ValueTable::peek`] lends a stored value to: its stamp and a reference to it, or
/// `None` when absent.
pub type PeekFn<'a, V> = dyn FnMut(Option<(u64, &V)>) + 'a;

/// A stored list lent by [`ListTable::peek`], oldest first (empty when absent): the elements
/// where the engine keeps them.
pub enum ListRef<'a, E> {
    /// Elements with their TTL stamps.
    Stamped(&'a [Stamped<E>]),
    /// Elements of a state without TTL, kept without stamps (each reads as stamped 0).
    Bare(&'a [Bare<E>]),
}

/// A value, list element or map value of a state without TTL, kept without a stamp (it reads
/// as stamped 0): what the heap engine stores, 8 bytes smaller than a [`Stamped`] one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bare<V>(pub V);

impl<E> Clone for ListRef<'_, E> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<E> Copy for ListRef<'_, E> {}

impl<E> ListRef<'_, E> {
    /// The number of elements.
    pub fn len(&self) -> usize {
        match self {
            ListRef::Stamped(list) => list.len(),
            ListRef::Bare(list) => list.len(),
        }
    }

    /// Whether there are none (the list is absent).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<E> fmt::Debug for ListRef<'_, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self {
            ListRef::Stamped(_) => "Stamped",
            ListRef::Bare(_) => "Bare",
        };
        f.debug_struct("ListRef")
            .field("kind", &kind)
            .field("len", &self.len())
            .finish()
    }
}

/// What [`ListTable::peek`] lends a stored list to (empty when absent).
pub type ListPeekFn<'a, E> = dyn FnMut(ListRef<'_, E>) + 'a;

/// A stored map lent by [`MapTable::peek_entries`]: its entries with their stamps, each
/// borrowed where the engine keeps them, in [`entries`](MapTable::entries)' order (none when
/// the map is absent).
pub enum MapRef<'a, UK, UV> {
    /// Entries side by side, with their TTL stamps.
    Stamped(&'a [(UK, Stamped<UV>)]),
    /// Entries side by side, of a state without TTL (each reads as stamped 0).
    Bare(&'a [(UK, Bare<UV>)]),
    /// Entries kept otherwise (the heap's hashed large maps), walked through [`MapWalk`].
    Walk(&'a dyn MapWalk<UK, UV>),
}

impl<UK, UV> Clone for MapRef<'_, UK, UV> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<UK, UV> Copy for MapRef<'_, UK, UV> {}

impl<UK, UV> MapRef<'_, UK, UV> {
    /// The number of entries.
    pub fn len(&self) -> usize {
        match self {
            MapRef::Stamped(m) => m.len(),
            MapRef::Bare(m) => m.len(),
            MapRef::Walk(m) => m.len(),
        }
    }

    /// Whether there are none (the map is absent).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<UK, UV> fmt::Debug for MapRef<'_, UK, UV> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self {
            MapRef::Stamped(_) => "Stamped",
            MapRef::Bare(_) => "Bare",
            MapRef::Walk(_) => "Walk",
        };
        f.debug_struct("MapRef")
            .field("kind", &kind)
            .field("len", &self.len())
            .finish()
    }
}

/// A lent map whose entries are not side by side ([`MapRef::Walk`]). The reader may walk it
/// more than once.
pub trait MapWalk<UK, UV> {
    /// The number of entries.
    fn len(&self) -> usize;
    /// Whether there are none.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The entries: user key, stamp, value.
    fn entries(&self) -> Box<dyn Iterator<Item = (&UK, u64, &UV)> + '_>;
}

/// What [`MapTable::peek_entries`] lends a stored map to.
pub type MapPeekFn<'a, UK, UV> = dyn FnMut(MapRef<'_, UK, UV>) + 'a;

/// The values of a batched read, their stamps dropped (the default `get_many_values`).
fn unstamped<V>(read: Vec<Result<Option<Stamped<V>>>>) -> Vec<Result<Option<V>>> {
    read.into_iter()
        .map(|r| r.map(|s| s.map(|s| s.value)))
        .collect()
}

/// [`ValueTable::get_unexpired`]'s answer for what a read `found` (stamp and value):
/// `Some(Some(value))` live, `Some(None)` absent, `None` expired.
pub(crate) fn unexpired<V>(
    found: Option<(u64, V)>,
    ttl_millis: u64,
    now: u64,
) -> Option<Option<V>> {
    match found {
        None => Some(None),
        Some((stamp, value)) => (!is_expired(stamp, ttl_millis, now)).then_some(Some(value)),
    }
}

/// Storage for one Value, Reducing or Aggregating state: one stamped value per (key, namespace).
pub trait ValueTable<K, N, V>: Send + Sync {
    /// The stored value, if any (expired or not: the views apply TTL).
    ///
    /// # Errors
    ///
    /// An implementation reports a key of a group it does not own
    /// ([`Error::KeyGroupOutOfRange`](crate::Error::KeyGroupOutOfRange)), stored bytes its
    /// codecs reject ([`Error::Decode`](crate::Error::Decode)) and its storage's failures.
    fn get(&self, key: &Key<K>, ns: &N) -> Result<Option<Stamped<V>>>;
    /// [`get`](Self::get) without the stamp: the read of a state without TTL (the heap engine
    /// clones the value where it is stored; the default strips what `get` read).
    ///
    /// # Errors
    ///
    /// What [`get`](Self::get) reports.
    fn get_value(&self, key: &Key<K>, ns: &N) -> Result<Option<V>> {
        Ok(self.get(key, ns)?.map(|s| s.value))
    }
    /// The read of a state with a TTL of `ttl_millis` that no read re-stamps, at `now`:
    /// `Some(Some(value))` when stored and not expired ([`is_expired`]), `Some(None)` when
    /// absent, and `None` when stored but expired, which the view then reads through
    /// [`get`](Self::get) to remove it (the heap engine judges the stamp where it is stored
    /// and clones only a live value; the default reads through `get`).
    ///
    /// # Errors
    ///
    /// What [`get`](Self::get) reports.
    fn get_unexpired(
        &self,
        key: &Key<K>,
        ns: &N,
        ttl_millis: u64,
        now: u64,
    ) -> Result<Option<Option<V>>> {
        Ok(unexpired(
            self.get(key, ns)?.map(|s| (s.last_access, s.value)),
            ttl_millis,
            now,
        ))
    }
    /// Calls `read` once with the stored value's stamp and a reference to it, or `None`
    /// (expired or not: the views apply TTL), without copying the value where the engine
    /// holds it decoded. The heap engine calls `read` under the table's lock, so `read` must
    /// not reach this table (the views' `with` documents that); the default reads a copy
    /// through [`get`](Self::get), what an engine that decodes every read does anyway.
    ///
    /// # Errors
    ///
    /// What [`get`](Self::get) reports; `read` is then not called.
    fn peek(&self, key: &Key<K>, ns: &N, read: &mut PeekFn<'_, V>) -> Result<()> {
        let s = self.get(key, ns)?;
        read(s.as_ref().map(|s| (s.last_access, &s.value)));
        Ok(())
    }
    /// Stores `value`, replacing any previous one.
    ///
    /// # Errors
    ///
    /// An implementation reports a key of a group it does not own
    /// ([`Error::KeyGroupOutOfRange`](crate::Error::KeyGroupOutOfRange)), stored bytes its
    /// codecs reject ([`Error::Decode`](crate::Error::Decode)) and its storage's failures.
    fn put(&self, key: &Key<K>, ns: &N, value: Stamped<V>) -> Result<()>;
    /// What [`get`](Self::get) returns for each (key, namespace) pair, in order, read in one
    /// pass (heap: under one lock; RocksDB: one sorted multi-get), so that the pairs' memory
    /// accesses overlap.
    ///
    /// # Errors
    ///
    /// Per pair, what [`get`](Self::get) reports for it.
    fn get_many(&self, items: &[(&Key<K>, &N)]) -> Vec<Result<Option<Stamped<V>>>>;
    /// [`get_many`](Self::get_many) without the stamps: the batched read of a state without
    /// TTL, in one pass over the pairs (the heap engine reads the values where they are
    /// stored; the default strips what `get_many` read).
    ///
    /// # Errors
    ///
    /// Per pair, what [`get`](Self::get) reports for it.
    fn get_many_values(&self, items: &[(&Key<K>, &N)]) -> Vec<Result<Option<V>>> {
        unstamped(self.get_many(items))
    }
    /// Stores every value in order, as [`put`](Self::put) one by one would (a pair given
    /// twice keeps the later value), in one pass.
    ///
    /// # Errors
    ///
    /// Every key is checked before anything is written: a key of a group this table does not
    /// own fails the whole call, and nothing is written. Then the storage's failures (RocksDB
    /// writes the batch atomically).
    fn put_many(&self, items: Vec<(&Key<K>, &N, Stamped<V>)>) -> Result<()>;
    /// Removes the value; a no-op when absent.
    ///
    /// # Errors
    ///
    /// An implementation reports a key of a group it does not own
    /// ([`Error::KeyGroupOutOfRange`](crate::Error::KeyGroupOutOfRange)), stored bytes its
    /// codecs reject ([`Error::Decode`](crate::Error::Decode)) and its storage's failures.
    fn remove(&self, key: &Key<K>, ns: &N) -> Result<()>;
    /// Every (key, namespace) with a stored value in `group`.
    ///
    /// # Errors
    ///
    /// An implementation reports a key of a group it does not own
    /// ([`Error::KeyGroupOutOfRange`](crate::Error::KeyGroupOutOfRange)), stored bytes its
    /// codecs reject ([`Error::Decode`](crate::Error::Decode)) and its storage's failures.
    fn keys(&self, group: u16) -> Result<Vec<(K, N)>>;
}

/// Storage for one List state: an ordered list of stamped elements per (key, namespace).
pub trait ListTable<K, N, E>: Send + Sync {
    /// The stored elements; empty when absent.
    ///
    /// # Errors
    ///
    /// An implementation reports a key of a group it does not own
    /// ([`Error::KeyGroupOutOfRange`](crate::Error::KeyGroupOutOfRange)), stored bytes its
    /// codecs reject ([`Error::Decode`](crate::Error::Decode)) and its storage's failures.
    fn get(&self, key: &Key<K>, ns: &N) -> Result<Vec<Stamped<E>>>;
    /// Calls `read` once with the stored elements and their stamps (expired or not: the views
    /// apply TTL), without copying them where the engine holds them decoded. The heap engine
    /// calls `read` under the table's lock, as [`ValueTable::peek`] does; the default lends
    /// what [`get`](Self::get) read.
    ///
    /// # Errors
    ///
    /// What [`get`](Self::get) reports; `read` is then not called.
    fn peek(&self, key: &Key<K>, ns: &N, read: &mut ListPeekFn<'_, E>) -> Result<()> {
        let list = self.get(key, ns)?;
        read(ListRef::Stamped(&list));
        Ok(())
    }
    /// What [`get`](Self::get) returns for each (key, namespace) pair, in order, read in one
    /// pass.
    ///
    /// # Errors
    ///
    /// Per pair, what [`get`](Self::get) reports for it.
    fn get_many(&self, items: &[(&Key<K>, &N)]) -> Vec<Result<Vec<Stamped<E>>>>;
    /// [`get_many`](Self::get_many) without the stamps (a list state without TTL), in one
    /// pass (the heap engine copies the elements where they are stored; the default strips
    /// what `get_many` read).
    ///
    /// # Errors
    ///
    /// Per pair, what [`get`](Self::get) reports for it.
    fn get_many_values(&self, items: &[(&Key<K>, &N)]) -> Vec<Result<Vec<E>>> {
        self.get_many(items)
            .into_iter()
            .map(|r| r.map(|list| list.into_iter().map(|s| s.value).collect()))
            .collect()
    }
    /// Appends each element to its pair's list, in order, in one pass.
    ///
    /// # Errors
    ///
    /// Every key is checked before anything is written: a key of a group this table does not
    /// own fails the whole call, and nothing is written. Then the storage's failures (RocksDB
    /// writes the batch atomically).
    fn push_many(&self, items: Vec<(&Key<K>, &N, Stamped<E>)>) -> Result<()>;
    /// Appends `elements` (a no-op when empty).
    ///
    /// # Errors
    ///
    /// An implementation reports a key of a group it does not own
    /// ([`Error::KeyGroupOutOfRange`](crate::Error::KeyGroupOutOfRange)), stored bytes its
    /// codecs reject ([`Error::Decode`](crate::Error::Decode)) and its storage's failures.
    fn append(&self, key: &Key<K>, ns: &N, elements: Vec<Stamped<E>>) -> Result<()>;
    /// Appends one element: [`append`](Self::append) of one, which an engine may do without
    /// allocating the batch (what `ListState::add` calls, once per record).
    ///
    /// # Errors
    ///
    /// As [`append`](Self::append).
    fn push(&self, key: &Key<K>, ns: &N, element: Stamped<E>) -> Result<()> {
        self.append(key, ns, vec![element])
    }
    /// The stored elements without their stamps (what a state without TTL reads): the values
    /// of [`get`](Self::get), which an engine may collect in one pass.
    ///
    /// # Errors
    ///
    /// As [`get`](Self::get).
    fn values(&self, key: &Key<K>, ns: &N) -> Result<Vec<E>> {
        Ok(self.get(key, ns)?.into_iter().map(|s| s.value).collect())
    }
    /// Replaces the list; an empty `elements` removes it.
    ///
    /// # Errors
    ///
    /// An implementation reports a key of a group it does not own
    /// ([`Error::KeyGroupOutOfRange`](crate::Error::KeyGroupOutOfRange)), stored bytes its
    /// codecs reject ([`Error::Decode`](crate::Error::Decode)) and its storage's failures.
    fn put(&self, key: &Key<K>, ns: &N, elements: Vec<Stamped<E>>) -> Result<()>;
    /// Removes the list; a no-op when absent.
    ///
    /// # Errors
    ///
    /// An implementation reports a key of a group it does not own
    /// ([`Error::KeyGroupOutOfRange`](crate::Error::KeyGroupOutOfRange)), stored bytes its
    /// codecs reject ([`Error::Decode`](crate::Error::Decode)) and its storage's failures.
    fn remove(&self, key: &Key<K>, ns: &N) -> Result<()>;
    /// Every (key, namespace) with a non-empty list in `group`.
    ///
    /// # Errors
    ///
    /// An implementation reports a key of a group it does not own
    /// ([`Error::KeyGroupOutOfRange`](crate::Error::KeyGroupOutOfRange)), stored bytes its
    /// codecs reject ([`Error::Decode`](crate::Error::Decode)) and its storage's failures.
    fn keys(&self, group: u16) -> Result<Vec<(K, N)>>;
}

/// Storage for one Map state: a map of stamped user values per (key, namespace).
pub trait MapTable<K, N, UK, UV>: Send + Sync {
    /// The entry for `user_key`, if any.
    ///
    /// # Errors
    ///
    /// An implementation reports a key of a group it does not own
    /// ([`Error::KeyGroupOutOfRange`](crate::Error::KeyGroupOutOfRange)), stored bytes its
    /// codecs reject ([`Error::Decode`](crate::Error::Decode)) and its storage's failures.
    fn get(&self, key: &Key<K>, ns: &N, user_key: &UK) -> Result<Option<Stamped<UV>>>;
    /// [`get`](Self::get) without the stamp, as [`ValueTable::get_value`] (a state without
    /// TTL).
    ///
    /// # Errors
    ///
    /// What [`get`](Self::get) reports.
    fn get_value(&self, key: &Key<K>, ns: &N, user_key: &UK) -> Result<Option<UV>> {
        Ok(self.get(key, ns, user_key)?.map(|s| s.value))
    }
    /// Calls `read` once with the entry's stamp and a reference to its value, or `None`, as
    /// [`ValueTable::peek`] does for a value (same contract: the heap engine calls it under
    /// the table's lock; the default lends a copy read through [`get`](Self::get)).
    ///
    /// # Errors
    ///
    /// What [`get`](Self::get) reports; `read` is then not called.
    fn peek(&self, key: &Key<K>, ns: &N, user_key: &UK, read: &mut PeekFn<'_, UV>) -> Result<()> {
        let s = self.get(key, ns, user_key)?;
        read(s.as_ref().map(|s| (s.last_access, &s.value)));
        Ok(())
    }
    /// What [`get`](Self::get) returns for each (key, namespace, user key), in order, read
    /// in one pass.
    ///
    /// # Errors
    ///
    /// Per pair, what [`get`](Self::get) reports for it.
    fn get_many(&self, items: &[(&Key<K>, &N, &UK)]) -> Vec<Result<Option<Stamped<UV>>>>;
    /// [`get_many`](Self::get_many) without the stamps (a state without TTL), in one pass.
    ///
    /// # Errors
    ///
    /// Per triple, what [`get`](Self::get) reports for it.
    fn get_many_values(&self, items: &[(&Key<K>, &N, &UK)]) -> Vec<Result<Option<UV>>> {
        unstamped(self.get_many(items))
    }
    /// Inserts or replaces each entry, in order, in one pass.
    ///
    /// # Errors
    ///
    /// Every key is checked before anything is written: a key of a group this table does not
    /// own fails the whole call, and nothing is written. Then the storage's failures (RocksDB
    /// writes the batch atomically).
    fn put_many(&self, items: Vec<(&Key<K>, &N, UK, Stamped<UV>)>) -> Result<()>;
    /// Inserts or replaces one entry.
    ///
    /// # Errors
    ///
    /// An implementation reports a key of a group it does not own
    /// ([`Error::KeyGroupOutOfRange`](crate::Error::KeyGroupOutOfRange)), stored bytes its
    /// codecs reject ([`Error::Decode`](crate::Error::Decode)) and its storage's failures.
    fn put(&self, key: &Key<K>, ns: &N, user_key: UK, value: Stamped<UV>) -> Result<()>;
    /// Inserts or replaces the entries.
    ///
    /// # Errors
    ///
    /// An implementation reports a key of a group it does not own
    /// ([`Error::KeyGroupOutOfRange`](crate::Error::KeyGroupOutOfRange)), stored bytes its
    /// codecs reject ([`Error::Decode`](crate::Error::Decode)) and its storage's failures.
    fn put_all(&self, key: &Key<K>, ns: &N, entries: Vec<(UK, Stamped<UV>)>) -> Result<()>;
    /// Removes the entry for `user_key`; removing the last entry removes the map.
    ///
    /// # Errors
    ///
    /// An implementation reports a key of a group it does not own
    /// ([`Error::KeyGroupOutOfRange`](crate::Error::KeyGroupOutOfRange)), stored bytes its
    /// codecs reject ([`Error::Decode`](crate::Error::Decode)) and its storage's failures.
    fn remove(&self, key: &Key<K>, ns: &N, user_key: &UK) -> Result<()>;
    /// All entries, in an engine-defined order (heap: hash order; byte engines: byte order).
    ///
    /// # Errors
    ///
    /// An implementation reports a key of a group it does not own
    /// ([`Error::KeyGroupOutOfRange`](crate::Error::KeyGroupOutOfRange)), stored bytes its
    /// codecs reject ([`Error::Decode`](crate::Error::Decode)) and its storage's failures.
    fn entries(&self, key: &Key<K>, ns: &N) -> Result<Vec<(UK, Stamped<UV>)>>;
    /// Calls `read` once with every entry, its stamp and its value borrowed (expired or not:
    /// the views apply TTL), as [`ListTable::peek`] does for a list (same contract: the heap
    /// engine calls it under the table's lock; the default lends what
    /// [`entries`](Self::entries) read).
    ///
    /// # Errors
    ///
    /// What [`entries`](Self::entries) reports; `read` is then not called.
    fn peek_entries(&self, key: &Key<K>, ns: &N, read: &mut MapPeekFn<'_, UK, UV>) -> Result<()> {
        let entries = self.entries(key, ns)?;
        read(MapRef::Stamped(&entries));
        Ok(())
    }
    /// Whether the map has no entry (expired or not).
    ///
    /// # Errors
    ///
    /// An implementation reports a key of a group it does not own
    /// ([`Error::KeyGroupOutOfRange`](crate::Error::KeyGroupOutOfRange)), stored bytes its
    /// codecs reject ([`Error::Decode`](crate::Error::Decode)) and its storage's failures.
    fn is_empty(&self, key: &Key<K>, ns: &N) -> Result<bool>;
    /// Removes the whole map.
    ///
    /// # Errors
    ///
    /// An implementation reports a key of a group it does not own
    /// ([`Error::KeyGroupOutOfRange`](crate::Error::KeyGroupOutOfRange)), stored bytes its
    /// codecs reject ([`Error::Decode`](crate::Error::Decode)) and its storage's failures.
    fn clear(&self, key: &Key<K>, ns: &N) -> Result<()>;
    /// Every (key, namespace) with a non-empty map in `group`.
    ///
    /// # Errors
    ///
    /// An implementation reports a key of a group it does not own
    /// ([`Error::KeyGroupOutOfRange`](crate::Error::KeyGroupOutOfRange)), stored bytes its
    /// codecs reject ([`Error::Decode`](crate::Error::Decode)) and its storage's failures.
    fn keys(&self, group: u16) -> Result<Vec<(K, N)>>;
}

/// A storage engine: creates the tables of registered states.
///
/// The views and [`KeyedStateBackend`](crate::KeyedStateBackend) are written against this trait only; the conformance
/// suite in `tests/` runs every engine through the same behaviour.
pub trait Engine: Send + Sync + fmt::Debug + 'static {
    /// A short name (`"heap"`, `"rocksdb"`), recorded in snapshots.
    fn name(&self) -> &'static str;
    /// The engine's configuration.
    fn config(&self) -> &EngineConfig;
    /// Creates the table of a Value, Reducing or Aggregating state.
    ///
    /// # Errors
    ///
    /// The state's metadata does not match what the engine holds for its name (persisted or
    /// restored: [`Error::IncompatibleRegistration`](crate::Error::IncompatibleRegistration)),
    /// restored records that do not decode, the engine's storage failures.
    fn value_table<K: StateKey, N: Namespace, V: StateValue>(
        &self,
        meta: &StateMeta,
    ) -> Result<Arc<dyn ValueTable<K, N, V>>>;
    /// Creates the table of a List state.
    ///
    /// # Errors
    ///
    /// As [`value_table`](Self::value_table).
    fn list_table<K: StateKey, N: Namespace, E: StateValue>(
        &self,
        meta: &StateMeta,
    ) -> Result<Arc<dyn ListTable<K, N, E>>>;
    /// Creates the table of a Map state.
    ///
    /// # Errors
    ///
    /// As [`value_table`](Self::value_table).
    fn map_table<K: StateKey, N: Namespace, UK: MapKey, UV: StateValue>(
        &self,
        meta: &StateMeta,
    ) -> Result<Arc<dyn MapTable<K, N, UK, UV>>>;
    /// Figures a caller can poll cheaply (no scan of the state).
    ///
    /// # Errors
    ///
    /// The engine's own failures (RocksDB's property reads).
    fn metrics(&self) -> Result<EngineMetrics>;
    /// The synchronous part of a snapshot: as short as the engine can make it; the returned
    /// job's upload runs in the background while processing continues.
    ///
    /// # Errors
    ///
    /// The synchronous part failed (RocksDB: a flush or its checkpoint; a savepoint of a
    /// RocksDB state not registered in this process); nothing was taken.
    fn snapshot(&self, mode: SnapshotMode) -> Result<SnapshotJob>;
    /// Where the timer service `meta.name` keeps its timers: `None` (the default) for the
    /// heap. An engine that keeps timers in its own files checks `meta` (the service's key and
    /// namespace codecs) against what it recorded for the service, and records it.
    ///
    /// # Errors
    ///
    /// [`Error::IncompatibleRegistration`](crate::Error::IncompatibleRegistration) when the
    /// engine holds this service's timers under other codecs; the engine could not set up the
    /// store (RocksDB: creating or scanning the column family).
    fn timer_store(&self, meta: &TimerMeta) -> Result<Option<Box<dyn TimerStore>>> {
        let _ = meta;
        Ok(None)
    }
    /// Timer services whose timers lie in the engine's own files, whether or not a service
    /// was created in this process (RocksDB: its `timers:<name>` column families, restored
    /// with native checkpoints), each with the codecs recorded for it (`None` when the files
    /// predate recording them). The default: none.
    ///
    /// # Errors
    ///
    /// Recorded metadata that does not decode; the engine's own failures.
    fn resident_timer_services(&self) -> Result<Vec<(String, Option<TimerMeta>)>> {
        Ok(Vec::new())
    }
    /// A store over the timers of resident service `name`, whatever the engine's options:
    /// to carry a service not created in this process into a savepoint, or to move its
    /// timers to the heap when the engine now keeps timers there. `None` when there are none.
    ///
    /// # Errors
    ///
    /// The engine could not open the store.
    fn resident_timer_store(&self, name: &str) -> Result<Option<Box<dyn TimerStore>>> {
        let _ = name;
        Ok(None)
    }
    /// The timers a restore of this engine read from its checkpoints' timers files, handed
    /// over once: [`KeyedStateBackend::new`](crate::KeyedStateBackend::new) takes them, so a
    /// restored backend gets its state and its timers from one call. The default (an engine
    /// that was not restored) has none.
    fn take_restored_timers(&self) -> RestoredTimerSet {
        RestoredTimerSet::default()
    }
}

/// Per-state figures of [`EngineMetrics`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StateMetrics {
    /// The state's name.
    pub name: String,
    /// Entries: (key, namespace) pairs on the heap; RocksDB's estimate of its keys (map
    /// entries count one each; deleted and expired entries until compaction).
    pub approximate_entries: u64,
    /// Bytes: the heap's hash tables (not what values own on the heap); RocksDB's SST files
    /// plus memtables.
    pub approximate_bytes: u64,
}

/// What an engine reports about itself; both engines fill the same struct.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct EngineMetrics {
    /// One entry per registered state, by name.
    pub states: Vec<StateMetrics>,
    /// Memory of live state: all memtables (RocksDB) or all hash tables (heap).
    pub memory_bytes: u64,
    /// Block-cache usage (RocksDB; 0 on the heap).
    pub cache_bytes: u64,
    /// Row-cache usage (RocksDB with a row cache; 0 otherwise).
    pub row_cache_bytes: u64,
    /// Memory the open SST files' readers hold outside the block cache, counted by no
    /// budget: their index and filter blocks unless
    /// `RocksDbOptions::index_and_filters_in_cache` keeps those in the cache (RocksDB; 0 on
    /// the heap).
    pub table_reader_bytes: u64,
}
