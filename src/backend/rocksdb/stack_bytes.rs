//! [`StackBytes`]: the bytes of one key or value made for one RocksDB call, kept on the stack
//! when they are short.
//!
//! A single read or write made its key in a `Vec`: an allocation and a free per operation,
//! for 10 to 20 bytes. `smallvec` avoids the allocation, but its `extend_from_slice` is an
//! insertion (a capacity check, a `memmove` of the empty tail, a `memcpy`): under callgrind
//! it cost more instructions than the allocation it saved. Keys and values are only ever
//! appended to, so this buffer does just that: a bounds-checked copy into an array while the
//! bytes fit, a `Vec` once they do not.

use std::ops::Deref;

use super::layout::KeyOut;

/// Bytes kept inline: a `u64` key, a small namespace and a `u64` map key take 17, a TTL stamp
/// and a `u64` value 16.
const INLINE: usize = 40;

/// Append-only bytes: inline up to [`INLINE`], in a `Vec` beyond.
#[derive(Clone)]
pub(crate) struct StackBytes {
    inline: [u8; INLINE],
    /// Bytes used of `inline`; unused once `heap` holds them all.
    len: usize,
    heap: Option<Vec<u8>>,
}

impl StackBytes {
    /// Empty, inline.
    #[inline]
    pub(crate) fn new() -> Self {
        StackBytes {
            inline: [0; INLINE],
            len: 0,
            heap: None,
        }
    }

    /// Empty, with room for `capacity` bytes: inline if they fit, else one allocation.
    #[inline]
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        let mut out = StackBytes::new();
        if capacity > INLINE {
            out.heap = Some(Vec::with_capacity(capacity));
        }
        out
    }

    /// The bytes of `vec`, without a copy.
    pub(crate) fn from_vec(vec: Vec<u8>) -> Self {
        let mut out = StackBytes::new();
        out.heap = Some(vec);
        out
    }
}

impl KeyOut for StackBytes {
    #[inline(always)]
    fn put(&mut self, bytes: &[u8]) {
        if let Some(heap) = &mut self.heap {
            heap.extend_from_slice(bytes);
            return;
        }
        let end = self.len + bytes.len();
        if let Some(dst) = self.inline.get_mut(self.len..end) {
            dst.copy_from_slice(bytes);
            self.len = end;
        } else {
            let mut heap = Vec::with_capacity(end.max(2 * INLINE));
            heap.extend_from_slice(self.inline.get(..self.len).unwrap_or_default());
            heap.extend_from_slice(bytes);
            self.heap = Some(heap);
        }
    }
}

impl Extend<u8> for StackBytes {
    fn extend<I: IntoIterator<Item = u8>>(&mut self, iter: I) {
        for byte in iter {
            self.put(&[byte]);
        }
    }
}

impl Deref for StackBytes {
    type Target = [u8];

    #[inline]
    fn deref(&self) -> &[u8] {
        match &self.heap {
            Some(heap) => heap,
            // `len` never exceeds the array: `put` moves to the heap first.
            None => self.inline.get(..self.len).unwrap_or_default(),
        }
    }
}

impl AsRef<[u8]> for StackBytes {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl std::fmt::Debug for StackBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever the pieces, the bytes are their concatenation, inline or spilled.
        #[test]
        fn appends_like_a_vec(pieces in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..30), 0..8), capacity in 0usize..100) {
            let mut ours = StackBytes::with_capacity(capacity);
            let mut model = Vec::new();
            for piece in &pieces {
                ours.put(piece);
                model.extend_from_slice(piece);
                prop_assert_eq!(&*ours, &model[..]);
            }
            ours.extend([7u8, 8]);
            model.extend([7u8, 8]);
            prop_assert_eq!(&*ours.clone(), &model[..]);
            prop_assert_eq!(ours.heap.is_some(), model.len() > INLINE || capacity > INLINE);
        }
    }

    #[test]
    fn from_vec_keeps_the_bytes() {
        let v: Vec<u8> = (0..100).collect();
        assert_eq!(&*StackBytes::from_vec(v.clone()), &v[..]);
        assert_eq!(&*StackBytes::new(), &[] as &[u8]);
    }
}
