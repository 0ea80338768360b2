//! Which lists and maps the heap engine keeps inside its table entries.
//!
//! A list, or a map's short vector ([`MapEntries`](super::small_map::MapEntries)), in an
//! allocation of its own costs every access one more dependent cache miss after the table's:
//! the entry must arrive before its vector's address is known. Kept in a [`SmallVec`] whose
//! first elements sit inside the entry, a short one is read with the entry itself, and a
//! lookup costs the one miss of a single value. The price is space: every entry of the state
//! is as large as its inline part, whether its list holds one element or none. So a state's
//! lists and maps go inline only when that part is at most [`INLINE_BYTES`]; those of larger
//! element types, and every one when [`HeapEngine::with_inline_collections`] turns it off,
//! keep a vector on the heap (the same type with an inline part of none).
//!
//! [`SmallVec`]: smallvec::SmallVec
//! [`HeapEngine::with_inline_collections`]: super::HeapEngine::with_inline_collections

/// Elements of a list kept inline (more spill to the heap, as a whole).
pub(crate) const LIST_INLINE: usize = 16;

/// Entries of a map kept inline (more spill to the heap, as a whole).
pub(crate) const MAP_INLINE: usize = 12;

/// The most bytes a state's lists or maps may add inline to every entry of its table: 16
/// stamped `u64` elements, or 12 entries of a `u64` key and a stamped `u64`.
pub(crate) const INLINE_BYTES: usize = 288;

/// Whether `n` values of `T` fit the inline budget.
pub(crate) const fn fits<T>(n: usize) -> bool {
    n.saturating_mul(size_of::<T>()) <= INLINE_BYTES
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::heap::table::Bare;
    use crate::ttl::Stamped;

    #[test]
    fn small_elements_fit_and_large_ones_do_not() {
        assert!(fits::<Bare<u64>>(LIST_INLINE));
        assert!(fits::<Stamped<u64>>(LIST_INLINE));
        assert!(fits::<(u64, Bare<u64>)>(MAP_INLINE));
        assert!(fits::<(u64, Stamped<u64>)>(MAP_INLINE));
        assert!(!fits::<Bare<String>>(LIST_INLINE));
        assert!(!fits::<(String, Stamped<u64>)>(MAP_INLINE));
        assert!(!fits::<u8>(usize::MAX));
    }
}
