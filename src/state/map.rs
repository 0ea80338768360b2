//! [`MapState`]: a map from user keys to user values per key and namespace.

use std::fmt;
use std::slice;
use std::vec;

use super::{Core, LendOnce, lend, read_batch, view_common, write_stamp};
use crate::backend::{Bare, MapRef, MapTable};
use crate::error::Result;
use crate::key::Key;
use crate::ttl::{Stamped, TtlPolicy};

/// A map per (key, namespace). Removing the last entry removes the map. With TTL, entries
/// expire one by one. Iteration order is engine-defined (heap: hash order; byte-level engines:
/// the byte order of the encoded user keys).
pub struct MapState<K, UK, UV, N = ()> {
    pub(crate) core: Core<dyn MapTable<K, N, UK, UV>>,
}

view_common!(MapState<K, UK, UV, N>);

impl<K, UK: Clone, UV: Clone, N: PartialEq> MapState<K, UK, UV, N> {
    /// The value for `user_key`, or `None`.
    ///
    /// # Errors
    ///
    /// A key of a key group this backend does not own
    /// ([`Error::KeyGroupOutOfRange`](crate::Error::KeyGroupOutOfRange),
    /// [`Error::MaxParallelismMismatch`](crate::Error::MaxParallelismMismatch)); the engine's
    /// failures: stored bytes the codecs reject ([`Error::Decode`](crate::Error::Decode)),
    /// RocksDB's own errors.
    #[inline]
    pub fn get(&self, key: &Key<K>, ns: &N, user_key: &UK) -> Result<Option<UV>> {
        // Without TTL, the table's read without stamps and nothing around it, inlined into the
        // caller; the TTL path a function of its own (DESIGN.md §9, "Single reads without
        // their stamps").
        match &self.core.ttl {
            None => self.core.table.get_value(key, ns, user_key),
            Some(ttl) => self.get_expiring(key, ns, user_key, ttl),
        }
    }

    /// [`get`](Self::get) of a state with TTL.
    fn get_expiring(
        &self,
        key: &Key<K>,
        ns: &N,
        user_key: &UK,
        ttl: &TtlPolicy,
    ) -> Result<Option<UV>> {
        let Some(stored) = self.core.table.get(key, ns, user_key)? else {
            return Ok(None);
        };
        let now = ttl.now();
        if ttl.expired(stored.last_access, now) {
            self.core.table.remove(key, ns, user_key)?;
            return Ok(ttl.returns_expired().then_some(stored.value));
        }
        if ttl.refresh_on_read() {
            self.core.table.put(
                key,
                ns,
                user_key.clone(),
                Stamped::new(now, stored.value.clone()),
            )?;
        }
        Ok(Some(stored.value))
    }

    /// Lends the value for `user_key` to `f` instead of returning a copy: `f(Some(&value))`,
    /// or `f(None)`, with [`get`](Self::get)'s semantics (an expired entry is removed;
    /// `OnReadAndWrite` re-stamps). On the heap engine the value is read where it is stored,
    /// with no clone; on RocksDB it is decoded as `get` does.
    ///
    /// As with [`ValueState::with`](crate::state::ValueState::with), keep `f` short: on the
    /// heap engine it runs while the state's table is held.
    ///
    /// ```
    /// use keyed_state::{HeapEngine, KeyedStateBackend, state::MapStateDescriptor};
    /// let backend = KeyedStateBackend::<u64>::new(HeapEngine::default());
    /// let notes = backend.map_state(&MapStateDescriptor::<u32, String>::new("notes"))?;
    /// let key = backend.key(1)?;
    /// notes.put(&key, &(), 7, "seven".to_string())?;
    /// assert_eq!(notes.with(&key, &(), &7, |n| n.map(|n| n.starts_with("se")))?, Some(true));
    /// assert_eq!(notes.with(&key, &(), &8, |n| n.is_none())?, true);
    /// # Ok::<(), keyed_state::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// What [`get`](Self::get) reports (then `f` is not called), and
    /// [`Error::Reentrant`](crate::Error::Reentrant) from any call on this same state made
    /// inside `f` on the heap engine, which holds the state's table while `f` runs.
    pub fn with<R>(
        &self,
        key: &Key<K>,
        ns: &N,
        user_key: &UK,
        f: impl FnOnce(Option<&UV>) -> R,
    ) -> Result<R> {
        lend(
            self.core.ttl.as_ref(),
            |read| self.core.table.peek(key, ns, user_key, read),
            || self.get(key, ns, user_key),
            f,
        )
    }

    /// The values of many (key, namespace, user key) triples at once, in order: what
    /// [`get`](Self::get) returns for each, with the same TTL semantics, read in one pass so
    /// that their memory accesses overlap (heap: one lock; RocksDB: one sorted multi-get).
    ///
    /// # Errors
    ///
    /// One result per triple: what [`get`](Self::get) reports for it.
    pub fn get_batch(&self, items: &[(&Key<K>, &N, &UK)]) -> Vec<Result<Option<UV>>> {
        let Some(ttl) = self.core.ttl.as_ref() else {
            return self.core.table.get_many_values(items);
        };
        read_batch(
            self.core.table.get_many(items),
            items,
            ttl,
            |&(key, ns, user_key)| self.get(key, ns, user_key),
        )
    }

    /// Inserts or replaces many entries at once, in order, all stamped with one time under
    /// TTL, in one pass (RocksDB: one write batch).
    ///
    /// # Errors
    ///
    /// Every key is checked first: a key of a key group this backend does not own
    /// ([`Error::KeyGroupOutOfRange`](crate::Error::KeyGroupOutOfRange),
    /// [`Error::MaxParallelismMismatch`](crate::Error::MaxParallelismMismatch)) fails the call
    /// and nothing is written. Then RocksDB's own errors (its batch is atomic).
    pub fn put_batch<'a>(
        &self,
        items: impl IntoIterator<Item = (&'a Key<K>, &'a N, UK, UV)>,
    ) -> Result<()>
    where
        K: 'a,
        N: 'a,
    {
        let stamp = write_stamp(self.core.ttl.as_ref());
        self.core.table.put_many(
            items
                .into_iter()
                .map(|(key, ns, user_key, value)| (key, ns, user_key, Stamped::new(stamp, value)))
                .collect(),
        )
    }

    /// Whether `user_key` has a (visible) entry.
    ///
    /// # Errors
    ///
    /// A key of a key group this backend does not own
    /// ([`Error::KeyGroupOutOfRange`](crate::Error::KeyGroupOutOfRange),
    /// [`Error::MaxParallelismMismatch`](crate::Error::MaxParallelismMismatch)); the engine's
    /// failures: stored bytes the codecs reject ([`Error::Decode`](crate::Error::Decode)),
    /// RocksDB's own errors.
    pub fn contains(&self, key: &Key<K>, ns: &N, user_key: &UK) -> Result<bool> {
        Ok(self.get(key, ns, user_key)?.is_some())
    }

    /// Inserts or replaces one entry.
    ///
    /// # Errors
    ///
    /// A key of a key group this backend does not own
    /// ([`Error::KeyGroupOutOfRange`](crate::Error::KeyGroupOutOfRange),
    /// [`Error::MaxParallelismMismatch`](crate::Error::MaxParallelismMismatch)); the engine's
    /// failures: stored bytes the codecs reject ([`Error::Decode`](crate::Error::Decode)),
    /// RocksDB's own errors.
    pub fn put(&self, key: &Key<K>, ns: &N, user_key: UK, value: UV) -> Result<()> {
        let stamp = write_stamp(self.core.ttl.as_ref());
        self.core
            .table
            .put(key, ns, user_key, Stamped::new(stamp, value))
    }

    /// Inserts or replaces every entry, all with one TTL stamp.
    ///
    /// # Errors
    ///
    /// A key of a key group this backend does not own
    /// ([`Error::KeyGroupOutOfRange`](crate::Error::KeyGroupOutOfRange),
    /// [`Error::MaxParallelismMismatch`](crate::Error::MaxParallelismMismatch)); the engine's
    /// failures: stored bytes the codecs reject ([`Error::Decode`](crate::Error::Decode)),
    /// RocksDB's own errors.
    pub fn put_all(
        &self,
        key: &Key<K>,
        ns: &N,
        entries: impl IntoIterator<Item = (UK, UV)>,
    ) -> Result<()> {
        let stamp = write_stamp(self.core.ttl.as_ref());
        let entries: Vec<_> = entries
            .into_iter()
            .map(|(k, v)| (k, Stamped::new(stamp, v)))
            .collect();
        if entries.is_empty() {
            Ok(())
        } else {
            self.core.table.put_all(key, ns, entries)
        }
    }

    /// Removes the entry for `user_key` (a no-op when absent).
    ///
    /// # Errors
    ///
    /// A key of a key group this backend does not own
    /// ([`Error::KeyGroupOutOfRange`](crate::Error::KeyGroupOutOfRange),
    /// [`Error::MaxParallelismMismatch`](crate::Error::MaxParallelismMismatch)); the engine's
    /// failures: stored bytes the codecs reject ([`Error::Decode`](crate::Error::Decode)),
    /// RocksDB's own errors.
    pub fn remove(&self, key: &Key<K>, ns: &N, user_key: &UK) -> Result<()> {
        self.core.table.remove(key, ns, user_key)
    }

    /// The (visible) entries. With TTL, expired entries are removed as they are met (and
    /// returned under `ReturnExpiredIfNotCleanedUp`); under `OnReadAndWrite` the returned live
    /// entries are re-stamped.
    ///
    /// # Errors
    ///
    /// A key of a key group this backend does not own
    /// ([`Error::KeyGroupOutOfRange`](crate::Error::KeyGroupOutOfRange),
    /// [`Error::MaxParallelismMismatch`](crate::Error::MaxParallelismMismatch)); the engine's
    /// failures: stored bytes the codecs reject ([`Error::Decode`](crate::Error::Decode)),
    /// RocksDB's own errors.
    pub fn entries(&self, key: &Key<K>, ns: &N) -> Result<vec::IntoIter<(UK, UV)>> {
        let stored = self.core.table.entries(key, ns)?;
        let Some(ttl) = &self.core.ttl else {
            return Ok(stored
                .into_iter()
                .map(|(k, s)| (k, s.value))
                .collect::<Vec<_>>()
                .into_iter());
        };
        let now = ttl.now();
        let mut out = Vec::with_capacity(stored.len());
        let mut refreshed = Vec::new();
        for (user_key, s) in stored {
            if ttl.expired(s.last_access, now) {
                self.core.table.remove(key, ns, &user_key)?;
                if ttl.returns_expired() {
                    out.push((user_key, s.value));
                }
            } else {
                if ttl.refresh_on_read() {
                    refreshed.push((user_key.clone(), Stamped::new(now, s.value.clone())));
                }
                out.push((user_key, s.value));
            }
        }
        if !refreshed.is_empty() {
            self.core.table.put_all(key, ns, refreshed)?;
        }
        Ok(out.into_iter())
    }

    /// Lends the entries to `f` instead of returning copies: `f` gets an iterator of
    /// `(&user_key, &value)` in [`entries`](Self::entries)' order, with its semantics. On the
    /// heap engine the entries are read where the map is stored, with no key or value cloned;
    /// on RocksDB they are decoded from one scan, as `entries` does. Under TTL, a map that
    /// holds an expired entry, or whose entries are re-stamped on read (`OnReadAndWrite`), is
    /// read through `entries` (which removes or re-stamps), and `f` walks that copy.
    ///
    /// On the heap engine `f` runs while the state's table is held: keep it short, as for
    /// [`ValueState::with`](crate::state::ValueState::with).
    ///
    /// ```
    /// use keyed_state::{HeapEngine, KeyedStateBackend, state::MapStateDescriptor};
    /// let backend = KeyedStateBackend::<u64>::new(HeapEngine::default());
    /// let notes = backend.map_state(&MapStateDescriptor::<u32, String>::new("notes"))?;
    /// let key = backend.key(1)?;
    /// notes.put(&key, &(), 7, "seven".to_string())?;
    /// notes.put(&key, &(), 8, "eight".to_string())?;
    /// let longest = notes.with_entries(&key, &(), |entries| {
    ///     entries.map(|(_, note)| note.len()).max()
    /// })?;
    /// assert_eq!(longest, Some(5));
    /// assert_eq!(notes.with_entries(&backend.key(2)?, &(), |entries| entries.len())?, 0);
    /// # Ok::<(), keyed_state::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// What [`entries`](Self::entries) reports (then `f` is not called), and
    /// [`Error::Reentrant`](crate::Error::Reentrant) from any call on this same state made
    /// inside `f` (heap engine).
    pub fn with_entries<R>(
        &self,
        key: &Key<K>,
        ns: &N,
        f: impl FnOnce(MapIter<'_, UK, UV>) -> R,
    ) -> Result<R> {
        let ttl = self.core.ttl.as_ref();
        let mut f = LendOnce::new(f);
        self.core.table.peek_entries(key, ns, &mut |entries| {
            // Lent as stored only when `entries` would return every entry unchanged.
            let as_read = match (ttl, entries) {
                (None, _) => true,
                (Some(_), m) if m.is_empty() => true,
                (Some(ttl), MapRef::Stamped(m)) => {
                    ttl.read_keeps(m.iter().map(|(_, s)| s.last_access))
                }
                (Some(ttl), MapRef::Walk(m)) => {
                    ttl.read_keeps(m.entries().map(|(_, stamp, _)| stamp))
                }
                // Stamped 0 under TTL: `entries` decides.
                (Some(_), MapRef::Bare(_)) => false,
            };
            if as_read {
                f.lend(|f| f(MapIter::lent(entries)));
            }
        })?;
        f.or_owned(|f| {
            let owned = self.entries(key, ns)?;
            Ok(f(MapIter::owned(owned.as_slice())))
        })
    }

    /// The (visible) user keys; see [`MapState::entries`].
    ///
    /// # Errors
    ///
    /// A key of a key group this backend does not own
    /// ([`Error::KeyGroupOutOfRange`](crate::Error::KeyGroupOutOfRange),
    /// [`Error::MaxParallelismMismatch`](crate::Error::MaxParallelismMismatch)); the engine's
    /// failures: stored bytes the codecs reject ([`Error::Decode`](crate::Error::Decode)),
    /// RocksDB's own errors.
    pub fn keys(
        &self,
        key: &Key<K>,
        ns: &N,
    ) -> Result<impl Iterator<Item = UK> + use<K, UK, UV, N>> {
        Ok(self.entries(key, ns)?.map(|(k, _)| k))
    }

    /// The (visible) user values; see [`MapState::entries`].
    ///
    /// # Errors
    ///
    /// A key of a key group this backend does not own
    /// ([`Error::KeyGroupOutOfRange`](crate::Error::KeyGroupOutOfRange),
    /// [`Error::MaxParallelismMismatch`](crate::Error::MaxParallelismMismatch)); the engine's
    /// failures: stored bytes the codecs reject ([`Error::Decode`](crate::Error::Decode)),
    /// RocksDB's own errors.
    pub fn values(
        &self,
        key: &Key<K>,
        ns: &N,
    ) -> Result<impl Iterator<Item = UV> + use<K, UK, UV, N>> {
        Ok(self.entries(key, ns)?.map(|(_, v)| v))
    }

    /// Whether the map has no visible entry. Unlike Flink (which ignores expiry here), a map
    /// holding only expired entries is empty under `NeverReturnExpired` (the entries are
    /// removed on the way).
    ///
    /// # Errors
    ///
    /// A key of a key group this backend does not own
    /// ([`Error::KeyGroupOutOfRange`](crate::Error::KeyGroupOutOfRange),
    /// [`Error::MaxParallelismMismatch`](crate::Error::MaxParallelismMismatch)); the engine's
    /// failures: stored bytes the codecs reject ([`Error::Decode`](crate::Error::Decode)),
    /// RocksDB's own errors.
    pub fn is_empty(&self, key: &Key<K>, ns: &N) -> Result<bool> {
        let Some(ttl) = self.core.ttl.as_ref().filter(|t| !t.returns_expired()) else {
            return self.core.table.is_empty(key, ns);
        };
        let stored = self.core.table.entries(key, ns)?;
        let now = ttl.now();
        if stored.iter().any(|(_, s)| !ttl.expired(s.last_access, now)) {
            return Ok(false);
        }
        if !stored.is_empty() {
            self.core.table.clear(key, ns)?;
        }
        Ok(true)
    }

    /// Removes the whole map.
    ///
    /// # Errors
    ///
    /// A key of a key group this backend does not own
    /// ([`Error::KeyGroupOutOfRange`](crate::Error::KeyGroupOutOfRange),
    /// [`Error::MaxParallelismMismatch`](crate::Error::MaxParallelismMismatch)); the engine's
    /// failures: stored bytes the codecs reject ([`Error::Decode`](crate::Error::Decode)),
    /// RocksDB's own errors.
    pub fn clear(&self, key: &Key<K>, ns: &N) -> Result<()> {
        self.core.table.clear(key, ns)
    }
}

/// The entries [`MapState::with_entries`] lends, as `(&user_key, &value)`: each borrowed where
/// the map is stored (heap) or from a decoded copy (RocksDB, or a map TTL made
/// `with_entries` read through `entries`).
pub struct MapIter<'a, UK, UV> {
    entries: Entries<'a, UK, UV>,
    remaining: usize,
}

type Walk<'a, UK, UV> = Box<dyn Iterator<Item = (&'a UK, u64, &'a UV)> + 'a>;

enum Entries<'a, UK, UV> {
    Stamped(slice::Iter<'a, (UK, Stamped<UV>)>),
    Bare(slice::Iter<'a, (UK, Bare<UV>)>),
    Walk(Walk<'a, UK, UV>),
    Owned(slice::Iter<'a, (UK, UV)>),
}

impl<'a, UK, UV> MapIter<'a, UK, UV> {
    fn lent(entries: MapRef<'a, UK, UV>) -> Self {
        MapIter {
            remaining: entries.len(),
            entries: match entries {
                MapRef::Stamped(m) => Entries::Stamped(m.iter()),
                MapRef::Bare(m) => Entries::Bare(m.iter()),
                MapRef::Walk(m) => Entries::Walk(m.entries()),
            },
        }
    }

    fn owned(entries: &'a [(UK, UV)]) -> Self {
        MapIter {
            remaining: entries.len(),
            entries: Entries::Owned(entries.iter()),
        }
    }
}

impl<'a, UK, UV> Iterator for MapIter<'a, UK, UV> {
    type Item = (&'a UK, &'a UV);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        let next = match &mut self.entries {
            Entries::Stamped(it) => it.next().map(|(k, s)| (k, &s.value)),
            Entries::Bare(it) => it.next().map(|(k, b)| (k, &b.0)),
            Entries::Walk(it) => it.next().map(|(k, _, v)| (k, v)),
            Entries::Owned(it) => it.next().map(|(k, v)| (k, v)),
        };
        debug_assert!(
            next.is_some() == (self.remaining > 0),
            "an engine lent as many entries as its map's length"
        );
        self.remaining = self.remaining.saturating_sub(1);
        next
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl<UK, UV> ExactSizeIterator for MapIter<'_, UK, UV> {}

impl<UK, UV> std::iter::FusedIterator for MapIter<'_, UK, UV> {}

impl<UK, UV> fmt::Debug for MapIter<'_, UK, UV> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MapIter")
            .field("remaining", &self.remaining)
            .finish()
    }
}
