//! [`AggregatingState`]: an accumulator driven by an [`AggregateFunction`].

use std::sync::Arc;

use super::{AggregateFunction, Core, fold_single, merge_single, read_single, view_common};
use crate::backend::ValueTable;
use crate::error::Result;
use crate::key::Key;

/// An accumulator per (key, namespace); `add` folds inputs in, `get` returns the function's
/// result. TTL applies to the accumulator as a whole, as for [`ReducingState`](super::ReducingState).
pub struct AggregatingState<K, F: AggregateFunction, N = ()> {
    pub(crate) core: Core<dyn ValueTable<K, N, F::Acc>, Arc<F>>,
}

view_common!(AggregatingState<K, F: AggregateFunction, N>);

impl<K, F: AggregateFunction, N: PartialEq> AggregatingState<K, F, N> {
    /// The result for the current accumulator, or `None` when nothing was added.
    ///
    /// # Errors
    ///
    /// A key of a key group this backend does not own
    /// ([`Error::KeyGroupOutOfRange`](crate::Error::KeyGroupOutOfRange),
    /// [`Error::MaxParallelismMismatch`](crate::Error::MaxParallelismMismatch)); the engine's
    /// failures: stored bytes the codecs reject ([`Error::Decode`](crate::Error::Decode)),
    /// RocksDB's own errors.
    pub fn get(&self, key: &Key<K>, ns: &N) -> Result<Option<F::Out>> {
        let acc = read_single(&*self.core.table, self.core.ttl.as_ref(), key, ns)?;
        Ok(acc.map(|a| self.core.extra.get_result(&a)))
    }

    /// Adds `value` to the accumulator (a fresh one when absent or expired).
    ///
    /// # Errors
    ///
    /// A key of a key group this backend does not own
    /// ([`Error::KeyGroupOutOfRange`](crate::Error::KeyGroupOutOfRange),
    /// [`Error::MaxParallelismMismatch`](crate::Error::MaxParallelismMismatch)); the engine's
    /// failures: stored bytes the codecs reject ([`Error::Decode`](crate::Error::Decode)),
    /// RocksDB's own errors.
    pub fn add(&self, key: &Key<K>, ns: &N, value: F::In) -> Result<()> {
        let f = &self.core.extra;
        fold_single(
            &*self.core.table,
            self.core.ttl.as_ref(),
            key,
            ns,
            |current| f.add(value, current.unwrap_or_else(|| f.create_accumulator())),
        )
    }

    /// Removes the accumulator.
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

    /// Merges the live accumulators of `sources` (in order) and then `target`'s into `target`
    /// with [`AggregateFunction::merge`], and removes the sources.
    ///
    /// # Errors
    ///
    /// A key of a key group this backend does not own
    /// ([`Error::KeyGroupOutOfRange`](crate::Error::KeyGroupOutOfRange),
    /// [`Error::MaxParallelismMismatch`](crate::Error::MaxParallelismMismatch)); the engine's
    /// failures: stored bytes the codecs reject ([`Error::Decode`](crate::Error::Decode)),
    /// RocksDB's own errors.
    pub fn merge_namespaces(&self, key: &Key<K>, target: &N, sources: &[N]) -> Result<()> {
        let f = &self.core.extra;
        merge_single(
            &*self.core.table,
            self.core.ttl.as_ref(),
            key,
            target,
            sources,
            |a, b| f.merge(a, b),
        )
    }
}
