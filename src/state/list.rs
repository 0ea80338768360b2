//! [`ListState`]: an ordered list of elements per key and namespace.

use std::fmt;
use std::slice;
use std::vec;

use super::{Core, LendOnce, view_common, write_stamp};
use crate::backend::{Bare, ListRef, ListTable};
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
    #[inline]
    pub fn get(&self, key: &Key<K>, ns: &N) -> Result<vec::IntoIter<E>> {
        // Without TTL, the table's values and nothing around them, inlined into the caller;
        // the TTL path a function of its own (DESIGN.md §9, "Single reads without their
        // stamps").
        match &self.core.ttl {
            None => self.core.table.values(key, ns).map(Vec::into_iter),
            Some(ttl) => self.get_expiring(key, ns, ttl),
        }
    }

    /// [`get`](Self::get) of a state with TTL.
    fn get_expiring(&self, key: &Key<K>, ns: &N, ttl: &TtlPolicy) -> Result<vec::IntoIter<E>> {
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

    /// Lends the elements to `f` instead of returning copies: `f` gets an iterator of
    /// references, oldest first (empty when absent), with [`get`](Self::get)'s semantics. On
    /// the heap engine the elements are read where the list is stored, with no vector
    /// allocated and no element cloned; on RocksDB they are decoded from one pinned read, as
    /// `get` does. Under TTL, a list that holds an expired element, or one that is re-stamped
    /// on read (`OnReadAndWrite`), is read through `get` (which drops or re-stamps), and `f`
    /// walks that copy.
    ///
    /// On the heap engine `f` runs while the state's table is held: keep it short, as for
    /// [`ValueState::with`](crate::state::ValueState::with).
    ///
    /// ```
    /// use keyed_state::{HeapEngine, KeyedStateBackend, state::ListStateDescriptor};
    /// let backend = KeyedStateBackend::<u64>::new(HeapEngine::default());
    /// let words = backend.list_state(&ListStateDescriptor::<String>::new("words"))?;
    /// let key = backend.key(7)?;
    /// words.add_all(&key, &(), ["stream".to_string(), "state".to_string()])?;
    /// let letters = words.with(&key, &(), |words| words.map(String::len).sum::<usize>())?;
    /// assert_eq!(letters, 11);
    /// assert_eq!(words.with(&backend.key(8)?, &(), |words| words.len())?, 0);
    /// # Ok::<(), keyed_state::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// What [`get`](Self::get) reports (then `f` is not called), and
    /// [`Error::Reentrant`](crate::Error::Reentrant) from any call on this same state made
    /// inside `f` (heap engine).
    pub fn with<R>(&self, key: &Key<K>, ns: &N, f: impl FnOnce(ListIter<'_, E>) -> R) -> Result<R> {
        let ttl = self.core.ttl.as_ref();
        let mut f = LendOnce::new(f);
        self.core.table.peek(key, ns, &mut |elements| {
            // Lent as stored only when `get` would return every element unchanged.
            let as_read = match (ttl, elements) {
                (None, _) => true,
                (Some(_), list) if list.is_empty() => true,
                (Some(ttl), ListRef::Stamped(list)) => {
                    ttl.read_keeps(list.iter().map(|s| s.last_access))
                }
                // Stamped 0 under TTL: `get` decides.
                (Some(_), ListRef::Bare(_)) => false,
            };
            if as_read {
                f.lend(|f| f(ListIter::lent(elements)));
            }
        })?;
        f.or_owned(|f| {
            let owned = self.get(key, ns)?;
            Ok(f(ListIter::owned(owned.as_slice())))
        })
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
        let Some(ttl) = self.core.ttl.as_ref() else {
            return self.core.table.get_many_values(items);
        };
        let stored = self.core.table.get_many(items);
        debug_assert_eq!(stored.len(), items.len(), "one result per pair");
        let now = ttl.now();
        stored
            .into_iter()
            .zip(items)
            .map(|(read, &(key, ns))| {
                let list = read?;
                let as_read =
                    !ttl.refresh_on_read() && list.iter().all(|s| !ttl.expired(s.last_access, now));
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

/// The elements [`ListState::with`] lends, oldest first: each a reference to the stored
/// element (heap) or to a decoded copy (RocksDB, or a list TTL made `with` read through `get`).
pub struct ListIter<'a, E>(Lent<'a, E>);

enum Lent<'a, E> {
    Stamped(slice::Iter<'a, Stamped<E>>),
    Bare(slice::Iter<'a, Bare<E>>),
    Owned(slice::Iter<'a, E>),
}

impl<'a, E> ListIter<'a, E> {
    fn lent(list: ListRef<'a, E>) -> Self {
        ListIter(match list {
            ListRef::Stamped(list) => Lent::Stamped(list.iter()),
            ListRef::Bare(list) => Lent::Bare(list.iter()),
        })
    }

    fn owned(list: &'a [E]) -> Self {
        ListIter(Lent::Owned(list.iter()))
    }
}

impl<'a, E> Iterator for ListIter<'a, E> {
    type Item = &'a E;

    #[inline]
    fn next(&mut self) -> Option<&'a E> {
        match &mut self.0 {
            Lent::Stamped(it) => it.next().map(|s| &s.value),
            Lent::Bare(it) => it.next().map(|b| &b.0),
            Lent::Owned(it) => it.next(),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.len();
        (n, Some(n))
    }

    // Walks the slice in one loop instead of matching the source per element.
    fn fold<B, F: FnMut(B, &'a E) -> B>(self, init: B, mut f: F) -> B {
        match self.0 {
            Lent::Stamped(it) => it.fold(init, |acc, s| f(acc, &s.value)),
            Lent::Bare(it) => it.fold(init, |acc, b| f(acc, &b.0)),
            Lent::Owned(it) => it.fold(init, f),
        }
    }
}

impl<E> DoubleEndedIterator for ListIter<'_, E> {
    #[inline]
    fn next_back(&mut self) -> Option<Self::Item> {
        match &mut self.0 {
            Lent::Stamped(it) => it.next_back().map(|s| &s.value),
            Lent::Bare(it) => it.next_back().map(|b| &b.0),
            Lent::Owned(it) => it.next_back(),
        }
    }
}

impl<E> ExactSizeIterator for ListIter<'_, E> {
    fn len(&self) -> usize {
        match &self.0 {
            Lent::Stamped(it) => it.len(),
            Lent::Bare(it) => it.len(),
            Lent::Owned(it) => it.len(),
        }
    }
}

impl<E> std::iter::FusedIterator for ListIter<'_, E> {}

impl<E> fmt::Debug for ListIter<'_, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ListIter")
            .field("remaining", &self.len())
            .finish()
    }
}
