//! [`ValueState`]: one value per key and namespace.

use super::{Core, read_single, view_common, write_stamp};
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
