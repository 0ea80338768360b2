//! [`ListState`]: an ordered list of elements per key and namespace.

use std::vec;

use super::{Core, view_common, write_stamp};
use crate::backend::ListTable;
use crate::error::Result;
use crate::key::Key;
use crate::ttl::{Stamped, TtlPolicy};

/// An ordered list per (key, namespace): duplicates and insertion order are preserved; an
/// absent or empty list reads as an empty iterator. With TTL, elements expire one by one.
pub struct ListState<K, E, N = ()> {
    pub(crate) core: Core<dyn ListTable<K, N, E>>,
}

view_common!(ListState<K, E, N>);

impl<K, E: Clone, N: PartialEq> ListState<K, E, N> {
    /// The elements, oldest first; empty when absent.
    ///
    /// With TTL: expired elements are skipped (returned under `ReturnExpiredIfNotCleanedUp`);
    /// a list whose elements all expired is removed; under `OnReadAndWrite` the live elements
    /// are re-stamped (and the expired ones dropped).
    ///
    /// # Errors
    ///
    /// A key of a key group this backend does not own
    /// ([`Error::KeyGroupOutOfRange`](crate::Error::KeyGroupOutOfRange),
    /// [`Error::MaxParallelismMismatch`](crate::Error::MaxParallelismMismatch)); the engine's
    /// failures: stored bytes the codecs reject ([`Error::Decode`](crate::Error::Decode)),
    /// RocksDB's own errors.
    pub fn get(&self, key: &Key<K>, ns: &N) -> Result<vec::IntoIter<E>> {
        let Some(ttl) = &self.core.ttl else {
            return Ok(self.core.table.values(key, ns)?.into_iter());
        };
        let stored = self.core.table.get(key, ns)?;
        if stored.is_empty() {
            return Ok(Vec::new().into_iter());
        }
        let now = ttl.now();
        let live_count = stored
            .iter()
            .filter(|s| !ttl.expired(s.last_access, now))
            .count();
        if live_count == 0 {
            self.core.table.remove(key, ns)?;
        } else if ttl.refresh_on_read() {
            let live: Vec<Stamped<E>> = stored
                .iter()
                .filter(|s| !ttl.expired(s.last_access, now))
                .map(|s| Stamped::new(now, s.value.clone()))
                .collect();
            self.core.table.put(key, ns, live)?;
        }
        let returns_expired = ttl.returns_expired();
        let out: Vec<E> = stored
            .into_iter()
            .filter(|s| returns_expired || !ttl.expired(s.last_access, now))
            .map(|s| s.value)
            .collect();
        Ok(out.into_iter())
    }

    /// Appends one element.
    ///
    /// # Errors
    ///
    /// A key of a key group this backend does not own
    /// ([`Error::KeyGroupOutOfRange`](crate::Error::KeyGroupOutOfRange),
    /// [`Error::MaxParallelismMismatch`](crate::Error::MaxParallelismMismatch)); the engine's
    /// failures: stored bytes the codecs reject ([`Error::Decode`](crate::Error::Decode)),
    /// RocksDB's own errors.
    pub fn add(&self, key: &Key<K>, ns: &N, element: E) -> Result<()> {
        let stamp = write_stamp(self.core.ttl.as_ref());
        self.core.table.push(key, ns, Stamped::new(stamp, element))
    }

    /// The lists of many (key, namespace) pairs at once, in order: what [`get`](Self::get)
    /// returns for each (collected), with the same TTL semantics, read in one pass so that
    /// the pairs' memory accesses overlap. A list with expired elements, or re-stamped on
    /// read, goes through [`get`](Self::get) itself.
    ///
    /// # Errors
    ///
    /// One result per pair: what [`get`](Self::get) reports for that pair.
    pub fn get_batch(&self, items: &[(&Key<K>, &N)]) -> Vec<Result<Vec<E>>> {
        let stored = self.core.table.get_many(items);
        debug_assert_eq!(stored.len(), items.len(), "one result per pair");
        let ttl = self.core.ttl.as_ref();
        let now = ttl.map_or(0, TtlPolicy::now);
        stored
            .into_iter()
            .zip(items)
            .map(|(read, &(key, ns))| {
                let list = read?;
                let as_read = ttl.is_none_or(|t| {
                    !t.refresh_on_read() && list.iter().all(|s| !t.expired(s.last_access, now))
                });
                if as_read {
                    Ok(list.into_iter().map(|s| s.value).collect())
                } else {
                    Ok(self.get(key, ns)?.collect())
                }
            })
            .collect()
    }

    /// Appends one element to each pair's list, in order, all stamped with one time under
    /// TTL, in one pass (RocksDB: one write batch of merges).
    ///
    /// # Errors
    ///
    /// Every key is checked first: a key of a key group this backend does not own
    /// ([`Error::KeyGroupOutOfRange`](crate::Error::KeyGroupOutOfRange),
    /// [`Error::MaxParallelismMismatch`](crate::Error::MaxParallelismMismatch)) fails the call
    /// and nothing is written. Then RocksDB's own errors (its batch is atomic).
    pub fn add_batch<'a>(
        &self,
        items: impl IntoIterator<Item = (&'a Key<K>, &'a N, E)>,
    ) -> Result<()>
    where
        K: 'a,
        N: 'a,
    {
        let stamp = write_stamp(self.core.ttl.as_ref());
        self.core.table.push_many(
            items
                .into_iter()
                .map(|(key, ns, element)| (key, ns, Stamped::new(stamp, element)))
                .collect(),
        )
    }

    /// Appends every element (one write; a no-op when empty).
    ///
    /// # Errors
    ///
    /// A key of a key group this backend does not own
    /// ([`Error::KeyGroupOutOfRange`](crate::Error::KeyGroupOutOfRange),
    /// [`Error::MaxParallelismMismatch`](crate::Error::MaxParallelismMismatch)); the engine's
    /// failures: stored bytes the codecs reject ([`Error::Decode`](crate::Error::Decode)),
    /// RocksDB's own errors.
    pub fn add_all(
        &self,
        key: &Key<K>,
        ns: &N,
        elements: impl IntoIterator<Item = E>,
    ) -> Result<()> {
        let stamped = self.stamp_all(elements);
        if stamped.is_empty() {
            Ok(())
        } else {
            self.core.table.append(key, ns, stamped)
        }
    }

    /// Replaces the list (one write); an empty `elements` clears it.
    ///
    /// # Errors
    ///
    /// A key of a key group this backend does not own
    /// ([`Error::KeyGroupOutOfRange`](crate::Error::KeyGroupOutOfRange),
    /// [`Error::MaxParallelismMismatch`](crate::Error::MaxParallelismMismatch)); the engine's
    /// failures: stored bytes the codecs reject ([`Error::Decode`](crate::Error::Decode)),
    /// RocksDB's own errors.
    pub fn update(
        &self,
        key: &Key<K>,
        ns: &N,
        elements: impl IntoIterator<Item = E>,
    ) -> Result<()> {
        let stamped = self.stamp_all(elements);
        self.core.table.put(key, ns, stamped)
    }

    /// Removes the list.
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

    /// Moves every element of the `sources` namespaces, in order, to the end of `target`'s list
    /// and removes the sources (what merging session windows needs). Elements keep their TTL
    /// stamps; a source equal to `target` is skipped.
    ///
    /// # Errors
    ///
    /// A key of a key group this backend does not own
    /// ([`Error::KeyGroupOutOfRange`](crate::Error::KeyGroupOutOfRange),
    /// [`Error::MaxParallelismMismatch`](crate::Error::MaxParallelismMismatch)); the engine's
    /// failures: stored bytes the codecs reject ([`Error::Decode`](crate::Error::Decode)),
    /// RocksDB's own errors.
    pub fn merge_namespaces(&self, key: &Key<K>, target: &N, sources: &[N]) -> Result<()> {
        let mut moved = Vec::new();
        for source in sources.iter().filter(|s| *s != target) {
            let elements = self.core.table.get(key, source)?;
            if !elements.is_empty() {
                self.core.table.remove(key, source)?;
                moved.extend(elements);
            }
        }
        if moved.is_empty() {
            Ok(())
        } else {
            self.core.table.append(key, target, moved)
        }
    }

    fn stamp_all(&self, elements: impl IntoIterator<Item = E>) -> Vec<Stamped<E>> {
        let stamp = write_stamp(self.core.ttl.as_ref());
        elements
            .into_iter()
            .map(|e| Stamped::new(stamp, e))
            .collect()
    }
}
