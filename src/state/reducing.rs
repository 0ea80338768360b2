//! [`ReducingState`]: a value folded with a reduce function.

use super::{Core, fold_single, merge_single, read_single, read_single_with, view_common};
use crate::backend::ValueTable;
use crate::error::Result;
use crate::key::Key;
use crate::state::ReduceFn;

/// A value per (key, namespace) that `add` folds with the descriptor's reduce function.
/// With TTL the whole accumulated value shares one stamp: an add refreshes it, and an expired
/// value is dropped (the next add starts afresh).
pub struct ReducingState<K, V, N = ()> {
    pub(crate) core: Core<dyn ValueTable<K, N, V>, ReduceFn<V>>,
}

view_common!(ReducingState<K, V, N>);

impl<K, V: Clone, N: PartialEq> ReducingState<K, V, N> {
    /// The reduced value, or `None` when nothing was added.
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

    /// Lends the reduced value to `f` instead of returning a copy, as
    /// [`ValueState::with`](crate::state::ValueState::with) does (same semantics as
    /// [`get`](Self::get); no clone on the heap engine).
    ///
    /// # Errors
    ///
    /// What [`get`](Self::get) reports (then `f` is not called), and
    /// [`Error::Reentrant`](crate::Error::Reentrant) from any call on this same state made
    /// inside `f` on the heap engine.
    pub fn with<R>(&self, key: &Key<K>, ns: &N, f: impl FnOnce(Option<&V>) -> R) -> Result<R> {
        read_single_with(&*self.core.table, self.core.ttl.as_ref(), key, ns, f)
    }

    /// Folds `value` in: `reduce(current, value)`, or `value` when absent.
    ///
    /// # Errors
    ///
    /// A key of a key group this backend does not own
    /// ([`Error::KeyGroupOutOfRange`](crate::Error::KeyGroupOutOfRange),
    /// [`Error::MaxParallelismMismatch`](crate::Error::MaxParallelismMismatch)); the engine's
    /// failures: stored bytes the codecs reject ([`Error::Decode`](crate::Error::Decode)),
    /// RocksDB's own errors.
    pub fn add(&self, key: &Key<K>, ns: &N, value: V) -> Result<()> {
        let reduce = &self.core.extra;
        fold_single(
            &*self.core.table,
            self.core.ttl.as_ref(),
            key,
            ns,
            |current| match current {
                Some(current) => reduce(current, value),
                None => value,
            },
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

    /// Reduces the live values of `sources` (in order) and then `target`'s into `target`, and
    /// removes the sources. A source equal to `target` is skipped.
    ///
    /// # Errors
    ///
    /// A key of a key group this backend does not own
    /// ([`Error::KeyGroupOutOfRange`](crate::Error::KeyGroupOutOfRange),
    /// [`Error::MaxParallelismMismatch`](crate::Error::MaxParallelismMismatch)); the engine's
    /// failures: stored bytes the codecs reject ([`Error::Decode`](crate::Error::Decode)),
    /// RocksDB's own errors.
    pub fn merge_namespaces(&self, key: &Key<K>, target: &N, sources: &[N]) -> Result<()> {
        let reduce = &self.core.extra;
        merge_single(
            &*self.core.table,
            self.core.ttl.as_ref(),
            key,
            target,
            sources,
            |a, b| reduce(a, b),
        )
    }
}
