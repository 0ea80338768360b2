//! [`MapState`]: a map from user keys to user values per key and namespace.

use std::vec;

use super::{Core, lend, read_batch, view_common, write_stamp};
use crate::backend::MapTable;
use crate::error::Result;
use crate::key::Key;
use crate::ttl::Stamped;

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
    pub fn get(&self, key: &Key<K>, ns: &N, user_key: &UK) -> Result<Option<UV>> {
        let Some(stored) = self.core.table.get(key, ns, user_key)? else {
            return Ok(None);
        };
        let Some(ttl) = &self.core.ttl else {
            return Ok(Some(stored.value));
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
        let stored = self.core.table.get_many(items);
        read_batch(
            stored,
            items,
            self.core.ttl.as_ref(),
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
