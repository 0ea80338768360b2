//! The map of one Map state's (key, namespace) in the heap engine: its entries in one short
//! vector while there are few, a hash map beyond.
//!
//! Most keyed maps are small (a few entries per key). A hash map costs two dependent cache
//! misses per lookup (control bytes, then the bucket) on top of the table's own; a short
//! vector of pairs is read front to back by a linear scan. Past [`SMALL_MAP_MAX`] entries the
//! scan would cost more than hashing, and the map converts.
//!
//! The vector is a [`SmallVec`] over `A`: with `A = [(K, V); n]` its first `n` entries sit
//! inside the map itself, that is inside the heap table's entry, so a lookup costs no miss
//! beyond the table's own; with `A = [(K, V); 0]` it is an ordinary heap vector. The engine
//! picks one per state from the entry size ([`super::inline`]).

use std::hash::Hash;

use foldhash::fast::FixedState;
use smallvec::{Array, SmallVec};

/// Entries up to which a map stays a vector (a linear scan of 16 keys is cheaper than hashing
/// and probing one of them).
pub(crate) const SMALL_MAP_MAX: usize = 16;

/// See the module documentation. Entries in the vector keep their insertion order; hashed ones
/// have hash order.
pub(crate) enum MapEntries<K, V, A: Array<Item = (K, V)> = [(K, V); 0]> {
    /// At most [`SMALL_MAP_MAX`] entries, no two with the same key.
    Small(SmallVec<A>),
    /// More entries than that (a map that shrinks again stays hashed).
    Large(hashbrown::HashMap<K, V, FixedState>),
}

// By hand: a derive would ask for `A: Clone`, which `[(K, V); n]` is only for cloneable pairs.
impl<K: Clone, V: Clone, A: Array<Item = (K, V)>> Clone for MapEntries<K, V, A> {
    fn clone(&self) -> Self {
        match self {
            MapEntries::Small(v) => MapEntries::Small(v.clone()),
            MapEntries::Large(m) => MapEntries::Large(m.clone()),
        }
    }
}

impl<K, V, A: Array<Item = (K, V)>> Default for MapEntries<K, V, A> {
    fn default() -> Self {
        MapEntries::Small(SmallVec::new())
    }
}

impl<K: Eq + Hash, V, A: Array<Item = (K, V)>> MapEntries<K, V, A> {
    /// An empty map with room for `n` entries.
    pub(crate) fn with_capacity(n: usize) -> Self {
        if n <= SMALL_MAP_MAX {
            MapEntries::Small(SmallVec::with_capacity(n))
        } else {
            MapEntries::Large(hashbrown::HashMap::with_capacity_and_hasher(
                n,
                FixedState::default(),
            ))
        }
    }

    /// Number of entries.
    pub(crate) fn len(&self) -> usize {
        match self {
            MapEntries::Small(v) => v.len(),
            MapEntries::Large(m) => m.len(),
        }
    }

    /// Whether there is no entry.
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The value of `key`.
    #[inline]
    pub(crate) fn get(&self, key: &K) -> Option<&V> {
        match self {
            MapEntries::Small(v) => v.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            MapEntries::Large(m) => m.get(key),
        }
    }

    /// Whether `key` has an entry.
    pub(crate) fn contains_key(&self, key: &K) -> bool {
        self.get(key).is_some()
    }

    /// Inserts or replaces the entry of `key`, returning the value it replaced.
    pub(crate) fn insert(&mut self, key: K, value: V) -> Option<V> {
        match self {
            MapEntries::Small(v) => {
                if let Some((_, old)) = v.iter_mut().find(|(k, _)| *k == key) {
                    return Some(std::mem::replace(old, value));
                }
                if v.len() < SMALL_MAP_MAX {
                    v.push((key, value));
                    return None;
                }
                let mut map = hashbrown::HashMap::with_capacity_and_hasher(
                    SMALL_MAP_MAX * 2,
                    FixedState::default(),
                );
                map.extend(v.drain(..));
                map.insert(key, value);
                *self = MapEntries::Large(map);
                None
            }
            MapEntries::Large(m) => m.insert(key, value),
        }
    }

    /// Removes the entry of `key`, returning its value.
    pub(crate) fn remove(&mut self, key: &K) -> Option<V> {
        match self {
            MapEntries::Small(v) => {
                let at = v.iter().position(|(k, _)| k == key)?;
                // `remove`, not `swap_remove`: inline entries keep their insertion order.
                Some(v.remove(at).1)
            }
            MapEntries::Large(m) => m.remove(key),
        }
    }

    /// Keeps the entries for which `keep` returns `true`.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&K, &mut V) -> bool) {
        match self {
            MapEntries::Small(v) => v.retain(|(k, v)| keep(k, v)),
            MapEntries::Large(m) => m.retain(|k, v| keep(k, v)),
        }
    }

    /// Every entry.
    pub(crate) fn iter(&self) -> Iter<'_, K, V> {
        match self {
            MapEntries::Small(v) => Iter::Small(v.iter()),
            MapEntries::Large(m) => Iter::Large(m.iter()),
        }
    }

    /// Every value.
    pub(crate) fn values(&self) -> impl Iterator<Item = &V> + Clone {
        self.iter().map(|(_, v)| v)
    }
}

impl<K: Eq + Hash, V, A: Array<Item = (K, V)>> Extend<(K, V)> for MapEntries<K, V, A> {
    fn extend<I: IntoIterator<Item = (K, V)>>(&mut self, entries: I) {
        for (k, v) in entries {
            self.insert(k, v);
        }
    }
}

impl<K: Eq + Hash, V, A: Array<Item = (K, V)>> FromIterator<(K, V)> for MapEntries<K, V, A> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(entries: I) -> Self {
        let entries = entries.into_iter();
        let mut map = MapEntries::with_capacity(entries.size_hint().0);
        map.extend(entries);
        map
    }
}

/// The iterator of [`MapEntries::iter`].
pub(crate) enum Iter<'a, K, V> {
    Small(std::slice::Iter<'a, (K, V)>),
    Large(hashbrown::hash_map::Iter<'a, K, V>),
}

// By hand: a derive would ask for `K: Clone, V: Clone`, which iterating by reference does not
// need.
impl<K, V> Clone for Iter<'_, K, V> {
    fn clone(&self) -> Self {
        match self {
            Iter::Small(it) => Iter::Small(it.clone()),
            Iter::Large(it) => Iter::Large(it.clone()),
        }
    }
}

impl<'a, K, V> Iterator for Iter<'a, K, V> {
    type Item = (&'a K, &'a V);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Iter::Small(it) => it.next().map(|(k, v)| (k, v)),
            Iter::Large(it) => it.next(),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match self {
            Iter::Small(it) => it.size_hint(),
            Iter::Large(it) => it.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    /// Runs `ops` on a map over `A` and on a `BTreeMap` oracle, comparing after each.
    fn check_against_oracle<A: Array<Item = (u8, u16)>>(
        ops: &[(u8, u8, u16)],
    ) -> Result<(), TestCaseError> {
        let mut map = MapEntries::<u8, u16, A>::default();
        let mut oracle = BTreeMap::new();
        for &(op, k, v) in ops {
            match op {
                0 | 1 => prop_assert_eq!(map.insert(k, v), oracle.insert(k, v)),
                2 => prop_assert_eq!(map.remove(&k), oracle.remove(&k)),
                3 => {
                    map.retain(|k, _| k % 3 != 0);
                    oracle.retain(|k, _| k % 3 != 0);
                }
                _ => {
                    // A clone is what a write after a snapshot works on.
                    let copy = map.clone();
                    map = copy;
                }
            }
            prop_assert_eq!(map.len(), oracle.len());
            prop_assert_eq!(map.get(&k), oracle.get(&k));
            prop_assert_eq!(map.contains_key(&k), oracle.contains_key(&k));
            let mut seen: Vec<(u8, u16)> = map.iter().map(|(k, v)| (*k, *v)).collect();
            seen.sort_unstable();
            prop_assert_eq!(
                seen,
                oracle.iter().map(|(k, v)| (*k, *v)).collect::<Vec<_>>()
            );
            if let MapEntries::Small(v) = &map {
                prop_assert!(v.len() <= SMALL_MAP_MAX);
            }
        }
        Ok(())
    }

    proptest! {
        /// Against a `BTreeMap` oracle, across the conversion to a hash map and back down,
        /// with the vector on the heap, and with part of it inline (spilling past 12 entries).
        #[test]
        fn behaves_as_a_map(ops in proptest::collection::vec((0u8..5, 0u8..40, any::<u16>()), 0..200)) {
            check_against_oracle::<[(u8, u16); 0]>(&ops)?;
            check_against_oracle::<[(u8, u16); 12]>(&ops)?;
        }
    }

    #[test]
    fn a_map_turns_hashed_past_the_vector_limit() {
        let mut map: MapEntries<usize, usize> = (0..SMALL_MAP_MAX).map(|i| (i, i)).collect();
        assert!(matches!(map, MapEntries::Small(_)));
        map.insert(SMALL_MAP_MAX, 0);
        assert!(matches!(map, MapEntries::Large(_)));
        assert_eq!(map.len(), SMALL_MAP_MAX + 1);
        assert_eq!(map.get(&3), Some(&3));
    }
}
