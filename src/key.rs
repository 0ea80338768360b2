//! The resolved key: what a caller computes once per record and hands to every view it touches.

use std::fmt;
use std::hash::BuildHasher;

use smallvec::SmallVec;

use crate::codec::Codec;
use crate::error::ConfigError;
use crate::key_group::{check_max_parallelism, key_group_for_bytes};

thread_local! {
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Inline capacity for serialized keys; longer keys spill to the heap.
const INLINE_KEY_BYTES: usize = 24;

/// The in-memory hasher of the heap engine: foldhash with a fixed seed, so runs are
/// reproducible (iteration order of the heap engine is deterministic for a given history).
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
    pub fn new(key: K, max_parallelism: u32) -> Result<Self, ConfigError> {
        check_max_parallelism(max_parallelism)?;
        // Encode into a reused buffer: no allocation per record for keys that fit inline.
        let bytes = SCRATCH.with(|buf| {
            let mut buf = buf.borrow_mut();
            buf.clear();
            key.encode(&mut buf);
            SmallVec::from_slice(&buf)
        });
        Ok(Key {
            hash: hash_bytes(&bytes),
            group: key_group_for_bytes(&bytes, max_parallelism),
            bytes,
            key,
            // Stored minus one so that 32768 fits a u16 (`check_max_parallelism` passed above).
            max_parallelism: u16::try_from(max_parallelism - 1)
                .map_err(|_| ConfigError::MaxParallelism(max_parallelism))?,
        })
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
