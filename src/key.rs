//! The resolved key: what a caller computes once per record and hands to every view it touches.

use std::fmt;
use std::hash::BuildHasher;

use smallvec::SmallVec;

use crate::codec::Codec;
use crate::error::ConfigError;
use crate::key_group::{KeyGroupDivisor, check_max_parallelism, key_group_for_bytes};

thread_local! {
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Inline capacity for serialized keys; longer keys spill to the heap.
const INLINE_KEY_BYTES: usize = crate::codec::SMALL_ENCODING_BYTES;

/// The in-memory hasher of the heap engine: foldhash with a fixed seed, so runs are
/// reproducible (iteration order of the heap engine is deterministic for a given history).
#[inline]
pub(crate) fn hash_bytes(bytes: &[u8]) -> u64 {
    foldhash::fast::FixedState::with_seed(0x6b65_7965_642d_7374).hash_one(bytes)
}

/// A key resolved once per record: the typed key, its serialized bytes, its key group and an
/// in-memory hash of its bytes. No view re-serializes or re-hashes the key.
///
/// ```
/// use keyed_state::Key;
/// let key = Key::new("user-17".to_string(), 128).unwrap();
/// assert_eq!(key.group(), 105);
/// assert_eq!(key.bytes(), b"user-17");
/// ```
#[derive(Clone)]
pub struct Key<K> {
    key: K,
    bytes: SmallVec<[u8; INLINE_KEY_BYTES]>,
    hash: u64,
    group: u16,
    max_parallelism: u16,
}

impl<K: Codec> Key<K> {
    /// Resolves `key` for `max_parallelism` key groups (in `1..=32768`).
    ///
    /// # Errors
    ///
    /// [`ConfigError::MaxParallelism`] outside `1..=32768`.
    #[inline]
    pub fn new(key: K, max_parallelism: u32) -> Result<Self, ConfigError> {
        check_max_parallelism(max_parallelism)?;
        Ok(Self::resolve(key, max_parallelism, |bytes| {
            key_group_for_bytes(bytes, max_parallelism)
        }))
    }

    /// [`new`](Self::new) for a backend, whose divisor is validated already and divides
    /// without a `div` instruction.
    #[inline]
    pub(crate) fn with_divisor(key: K, divisor: KeyGroupDivisor) -> Self {
        Self::resolve(key, divisor.max_parallelism(), |bytes| {
            divisor.key_group(bytes)
        })
    }

    /// Serializes `key` and hashes it; `group` computes the key group of its bytes.
    /// `max_parallelism` lies in `1..=32768`.
    #[inline]
    fn resolve(key: K, max_parallelism: u32, group: impl Fn(&[u8]) -> u16) -> Self {
        debug_assert!(check_max_parallelism(max_parallelism).is_ok());
        let mut small = [0u8; INLINE_KEY_BYTES];
        let (bytes, hash, group) = match key.encode_small(&mut small) {
            // The fast path: no shared buffer, and hashes over a length known here (for a `u64`
            // key, a constant the compiler unrolls them for).
            Some(len) if len <= INLINE_KEY_BYTES => {
                let encoded = &small[..len];
                let hash = hash_bytes(encoded);
                let group = group(encoded);
                (SmallVec::from_buf_and_len(small, len), hash, group)
            }
            // Encode into a reused buffer: no allocation per record for keys that fit inline.
            _ => SCRATCH.with(|buf| {
                let mut buf = buf.borrow_mut();
                buf.clear();
                key.encode(&mut buf);
                (SmallVec::from_slice(&buf), hash_bytes(&buf), group(&buf))
            }),
        };
        Key {
            hash,
            group,
            bytes,
            key,
            // Stored minus one so that 32768 fits a u16 (`max_parallelism` ≥ 1 is checked).
            max_parallelism: u16::try_from(max_parallelism.saturating_sub(1)).unwrap_or(u16::MAX),
        }
    }
}

impl<K> Key<K> {
    /// The typed key.
    pub fn key(&self) -> &K {
        &self.key
    }

    /// The key's serialized (top-level) bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The key's group.
    pub fn group(&self) -> u16 {
        self.group
    }

    /// The `max_parallelism` the key was resolved for.
    pub fn max_parallelism(&self) -> u32 {
        u32::from(self.max_parallelism) + 1
    }

    /// The in-memory hash of the key's bytes (heap engine).
    pub(crate) fn hash(&self) -> u64 {
        self.hash
    }

    /// Consumes the handle, returning the typed key.
    pub fn into_key(self) -> K {
        self.key
    }
}

impl<K: fmt::Debug> fmt::Debug for Key<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("key", &self.key)
            .field("group", &self.group)
            .field("max_parallelism", &self.max_parallelism())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::CodecError;

    /// A `u64` or string key without the small-encoding path: resolved through the shared
    /// buffer, with the bytes its inner value encodes to.
    #[derive(Debug, Clone)]
    struct Slow<T>(T);

    impl<T: Codec> Codec for Slow<T> {
        fn codec_id() -> String {
            T::codec_id()
        }
        fn encode(&self, out: &mut Vec<u8>) {
            self.0.encode(out);
        }
        fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
            T::decode(bytes).map(Slow)
        }
    }

    fn same<A: Codec, B: Codec>(fast: Key<A>, slow: Key<B>) {
        assert_eq!(fast.bytes(), slow.bytes());
        assert_eq!(fast.hash(), slow.hash());
        assert_eq!(fast.group(), slow.group());
        assert_eq!(fast.max_parallelism(), slow.max_parallelism());
    }

    /// Both resolution paths give a key the same bytes, hash and group: the fast path is only
    /// faster, for every length up to the inline size and past it (where it falls back).
    #[test]
    fn the_small_encoding_path_resolves_keys_as_the_buffer_does() {
        for (i, max) in [1, 128, 32768].into_iter().enumerate() {
            for k in [0u64, 1, 42, u64::MAX, 0x0123_4567_89ab_cdef] {
                let k = k.wrapping_add(i as u64);
                same(Key::new(k, max).unwrap(), Key::new(Slow(k), max).unwrap());
            }
            for len in 0..=40 {
                let s = "k".repeat(len);
                same(
                    Key::new(s.clone(), max).unwrap(),
                    Key::new(Slow(s), max).unwrap(),
                );
            }
        }
        // Flink's key group of a string key (the crate docs' example), through the fast path.
        assert_eq!(Key::new("user-17".to_string(), 128).unwrap().group(), 105);
    }

    /// A backend's resolution (a precomputed divisor, no `div`) gives every key what
    /// [`Key::new`] gives it, on both encoding paths and for every kind of `max_parallelism`
    /// (1, powers of two, odd, the largest).
    #[test]
    fn resolving_with_a_divisor_is_resolving_with_new() {
        for max in [1, 2, 7, 128, 1000, 4099, 32767, 32768] {
            let divisor = KeyGroupDivisor::new(max).unwrap();
            for k in (0..2000u64).map(|k| k.wrapping_mul(0x9e37_79b9_7f4a_7c15)) {
                same(Key::with_divisor(k, divisor), Key::new(k, max).unwrap());
                same(
                    Key::with_divisor(Slow(k), divisor),
                    Key::new(k, max).unwrap(),
                );
            }
            let s = format!("user-{max}");
            same(
                Key::with_divisor(s.clone(), divisor),
                Key::new(s, max).unwrap(),
            );
        }
    }

    #[test]
    fn an_invalid_max_parallelism_is_a_typed_error_on_both_paths() {
        for max in [0, 32769] {
            assert_eq!(
                Key::new(7u64, max).err(),
                Some(ConfigError::MaxParallelism(max))
            );
            assert_eq!(
                Key::new(Slow(7u64), max).err(),
                Some(ConfigError::MaxParallelism(max))
            );
        }
    }
}
