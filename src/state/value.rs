//! [`ValueState`]: one value per key and namespace.

use super::{Core, read_batch, read_single, read_single_with, view_common, write_stamp};
use crate::backend::ValueTable;
use crate::error::Result;
use crate::key::Key;
use crate::ttl::Stamped;

/// A single value per (key, namespace). Absent reads as `None`.
pub struct ValueState<K, V, N = ()> {
    pub(crate) core: Core<dyn ValueTable<K, N, V>>,
}

view_common!(ValueState<K, V, N>);

impl<K, V: Clone, N> ValueState<K, V, N> {
    /// The value, or `None` when absent (or expired, under `NeverReturnExpired`).
    ///
    /// # Errors
    ///
    /// A key of a key group this backend does not own
    /// ([`Error::KeyGroupOutOfRange`](crate::Error::KeyGroupOutOfRange),
    /// [`Error::MaxParallelismMismatch`](crate::Error::MaxParallelismMismatch)); the engine's
    /// failures: stored bytes the codecs reject ([`Error::Decode`](crate::Error::Decode)),
    /// RocksDB's own errors.
    pub fn get(&self, key: &Key<K>, ns: &N) -> Result<Option<V>> {
        read_single(&*self.core.table, self.core.ttl.as_ref(), key, ns)
    }

    /// Lends the value to `f` instead of returning a copy: `f(Some(&value))`, or `f(None)` when
    /// absent (or expired, under `NeverReturnExpired`), with [`get`](Self::get)'s semantics
    /// (an expired value is removed; `OnReadAndWrite` re-stamps). On the heap engine the value
    /// is read where it is stored, with no clone (for `Bytes`, `Arc` or `Vec` values, no
    /// reference count touched or allocation made); on RocksDB it is decoded from a pinned
    /// read, as `get` does.
    ///
    /// On the heap engine `f` runs while the state's table is held: keep it short, since
    /// another thread using this state waits until it returns, and do not make it wait on
    /// such a thread.
    ///
    /// ```
    /// use keyed_state::{HeapEngine, KeyedStateBackend, state::ValueStateDescriptor};
    /// let backend = KeyedStateBackend::<u64>::new(HeapEngine::default());
    /// let names = backend.value_state(&ValueStateDescriptor::<String>::new("name"))?;
    /// let key = backend.key(7)?;
    /// names.update(&key, &(), "seven".to_string())?;
    /// assert_eq!(names.with(&key, &(), |name| name.map(String::len))?, Some(5));
    /// assert!(names.with(&backend.key(8)?, &(), |name| name.is_none())?);
    /// # Ok::<(), keyed_state::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// What [`get`](Self::get) reports (then `f` is not called), and
    /// [`Error::Reentrant`](crate::Error::Reentrant) from any call on this same state made
    /// inside `f`: the heap engine holds the state's table while `f` runs, so read what `f`
    /// needs before the call (RocksDB holds nothing and allows it).
    pub fn with<R>(&self, key: &Key<K>, ns: &N, f: impl FnOnce(Option<&V>) -> R) -> Result<R> {
        read_single_with(&*self.core.table, self.core.ttl.as_ref(), key, ns, f)
    }

    /// Sets the value.
    ///
    /// # Errors
    ///
    /// A key of a key group this backend does not own
    /// ([`Error::KeyGroupOutOfRange`](crate::Error::KeyGroupOutOfRange),
    /// [`Error::MaxParallelismMismatch`](crate::Error::MaxParallelismMismatch)); the engine's
    /// failures: stored bytes the codecs reject ([`Error::Decode`](crate::Error::Decode)),
    /// RocksDB's own errors.
    pub fn update(&self, key: &Key<K>, ns: &N, value: V) -> Result<()> {
        self.core.table.put(
            key,
            ns,
            Stamped::new(write_stamp(self.core.ttl.as_ref()), value),
        )
    }

    /// The values of many (key, namespace) pairs at once, in order: what [`get`](Self::get)
    /// returns for each, with the same TTL semantics, read in one pass so that the pairs'
    /// memory accesses overlap (heap: one lock and back-to-back lookups; RocksDB: one sorted
    /// multi-get). Resolve a batch of records' keys, then read their state together.
    ///
    /// ```
    /// use keyed_state::{HeapEngine, KeyedStateBackend, state::ValueStateDescriptor};
    /// let backend = KeyedStateBackend::<u64>::new(HeapEngine::default());
    /// let counts = backend.value_state(&ValueStateDescriptor::<u64>::new("count"))?;
    /// let keys = (0..4).map(|k| backend.key(k)).collect::<Result<Vec<_>, _>>()?;
    /// counts.update_batch(keys.iter().map(|k| (k, &(), *k.key() * 10)))?;
    /// let pairs: Vec<_> = keys.iter().map(|k| (k, &())).collect();
    /// let read = counts.get_batch(&pairs).into_iter().collect::<Result<Vec<_>, _>>()?;
    /// assert_eq!(read, [Some(0), Some(10), Some(20), Some(30)]);
    /// # Ok::<(), keyed_state::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// One result per pair: what [`get`](Self::get) reports for that pair.
    pub fn get_batch(&self, items: &[(&Key<K>, &N)]) -> Vec<Result<Option<V>>> {
        let table = &*self.core.table;
        let Some(ttl) = self.core.ttl.as_ref() else {
            return table.get_many_values(items);
        };
        read_batch(table.get_many(items), items, ttl, |&(key, ns)| {
            read_single(table, Some(ttl), key, ns)
        })
    }

    /// Sets many values at once, in order (a pair given twice keeps the later value), all
    /// stamped with one time under TTL, written in one pass (RocksDB: one write batch).
    ///
    /// # Errors
    ///
    /// Every key is checked first: a key of a key group this backend does not own
    /// ([`Error::KeyGroupOutOfRange`](crate::Error::KeyGroupOutOfRange),
    /// [`Error::MaxParallelismMismatch`](crate::Error::MaxParallelismMismatch)) fails the call
    /// and nothing is written. Then RocksDB's own errors (its batch is atomic).
    pub fn update_batch<'a>(
        &self,
        items: impl IntoIterator<Item = (&'a Key<K>, &'a N, V)>,
    ) -> Result<()>
    where
        K: 'a,
        N: 'a,
    {
        let stamp = write_stamp(self.core.ttl.as_ref());
        self.core.table.put_many(
            items
                .into_iter()
                .map(|(key, ns, value)| (key, ns, Stamped::new(stamp, value)))
                .collect(),
        )
    }

    /// Removes the value.
    ///
    /// # Errors
    ///
    /// A key of a key group this backend does not own
    /// ([`Error::KeyGroupOutOfRange`](crate::Error::KeyGroupOutOfRange),
    /// [`Error::MaxParallelismMismatch`](crate::Error::MaxParallelismMismatch)); the engine's
    /// failures: stored bytes the codecs reject ([`Error::Decode`](crate::Error::Decode)),
    /// RocksDB's own errors.
    pub fn clear(&self, key: &Key<K>, ns: &N) -> Result<()> {
        self.core.table.remove(key, ns)
    }
}
