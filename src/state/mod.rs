//! Typed state views and their descriptors.
//!
//! A descriptor names a state and fixes its types (and so its codecs), its TTL, and for
//! Reducing / Aggregating the function. Registering it on a
//! [`KeyedStateBackend`](crate::KeyedStateBackend) returns a view; every view method takes the
//! resolved [`Key`] and a namespace (use `&()` for the default namespace).
//!
//! Semantics follow Flink's keyed state: an absent value reads as `None` (never a default), and
//! a state that becomes empty (a list updated to `[]`, the last map entry removed) is absent.

mod aggregating;
pub(crate) mod descriptor;
mod list;
mod map;
mod reducing;
mod value;

pub use aggregating::AggregatingState;
pub use descriptor::{
    AggregateFunction, AggregatingStateDescriptor, ListStateDescriptor, MapStateDescriptor,
    ReduceFn, ReducingStateDescriptor, StateDescriptor, ValueStateDescriptor,
};
pub use list::{ListIter, ListState};
pub use map::{MapIter, MapState};
pub use reducing::ReducingState;
pub use value::ValueState;
// The bounds every view's type parameters meet, defined with the vocabulary.
pub use crate::types::{MapKey, Namespace, StateKey, StateKind, StateMeta, StateValue};

use crate::backend::{PeekFn, ValueTable};
use crate::error::Result;
use crate::key::Key;
use crate::ttl::{Stamped, TtlPolicy};

/// Reads the single stamped value of Value, Reducing and Aggregating states, applying TTL:
/// an expired value is removed (and returned only under `ReturnExpiredIfNotCleanedUp`); under
/// `OnReadAndWrite` a live value is re-stamped.
#[inline]
pub(crate) fn read_single<K, N, V: Clone>(
    table: &dyn ValueTable<K, N, V>,
    ttl: Option<&TtlPolicy>,
    key: &Key<K>,
    ns: &N,
) -> Result<Option<V>> {
    // Without TTL, the table's own read without stamps and nothing around it, inlined into
    // the view: not a call whose answer is unpacked and packed again, in a function that
    // saves every register for the TTL path first (DESIGN.md §9).
    match ttl {
        None => table.get_value(key, ns),
        // A read that re-stamps nothing: the stamp judged where it is stored, the full path
        // only for a value found expired (which it removes).
        Some(ttl) if !ttl.refresh_on_read() => {
            match table.get_unexpired(key, ns, ttl.ttl_millis, ttl.now())? {
                Some(answer) => Ok(answer),
                None => read_expiring(table, ttl, key, ns),
            }
        }
        Some(ttl) => read_expiring(table, ttl, key, ns),
    }
}

/// [`read_single`] of a state with TTL.
fn read_expiring<K, N, V: Clone>(
    table: &dyn ValueTable<K, N, V>,
    ttl: &TtlPolicy,
    key: &Key<K>,
    ns: &N,
) -> Result<Option<V>> {
    let Some(stored) = table.get(key, ns)? else {
        return Ok(None);
    };
    let now = ttl.now();
    if ttl.expired(stored.last_access, now) {
        table.remove(key, ns)?;
        return Ok(ttl.returns_expired().then_some(stored.value));
    }
    if ttl.refresh_on_read() {
        table.put(key, ns, Stamped::new(now, stored.value.clone()))?;
    }
    Ok(Some(stored.value))
}

/// [`read_single`] lent to `f` instead of returned (Value and Reducing `with`).
pub(crate) fn read_single_with<K, N, V: Clone, R>(
    table: &dyn ValueTable<K, N, V>,
    ttl: Option<&TtlPolicy>,
    key: &Key<K>,
    ns: &N,
    f: impl FnOnce(Option<&V>) -> R,
) -> Result<R> {
    lend(
        ttl,
        |read| table.peek(key, ns, read),
        || read_single(table, ttl, key, ns),
        f,
    )
}

/// A borrowing read: `peek` lends the stored value (and its stamp) where the engine holds it;
/// a value that is live and needs no re-stamping goes to `f` as lent. An expired one, or one
/// re-stamped on read, is not lent: `owned` (the view's `get`, which removes or re-stamps it)
/// reads it again and `f` borrows that copy. So the answer and the state's changes are `get`'s.
pub(crate) fn lend<V, R>(
    ttl: Option<&TtlPolicy>,
    peek: impl FnOnce(&mut PeekFn<'_, V>) -> Result<()>,
    owned: impl FnOnce() -> Result<Option<V>>,
    f: impl FnOnce(Option<&V>) -> R,
) -> Result<R> {
    let mut f = LendOnce::new(f);
    peek(&mut |stored| {
        // The clock is read only for a value found under TTL, as `get` reads it.
        let as_read = match (stored, ttl) {
            (Some((stamp, _)), Some(ttl)) => ttl.read_keeps([stamp]),
            _ => true,
        };
        if as_read {
            f.lend(|f| f(stored.map(|(_, v)| v)));
        }
    })?;
    f.or_owned(|f| Ok(f(owned()?.as_ref())))
}

/// The caller's closure of a borrowing read (`with`, `with_entries`), run exactly once: on
/// what the engine lends, when the view lends it as stored ([`lend`](Self::lend), inside the
/// engine's peek), or else on the owned read's copy ([`or_owned`](Self::or_owned)).
pub(crate) struct LendOnce<F, R> {
    f: Option<F>,
    lent: Option<R>,
}

impl<F, R> LendOnce<F, R> {
    pub(crate) fn new(f: F) -> Self {
        LendOnce {
            f: Some(f),
            lent: None,
        }
    }

    /// Runs the closure through `call`, unless it has run.
    pub(crate) fn lend(&mut self, call: impl FnOnce(F) -> R) {
        if let Some(f) = self.f.take() {
            self.lent = Some(call(f));
        }
    }

    /// The lent call's result, or the closure run through `owned` when nothing was lent.
    pub(crate) fn or_owned(self, owned: impl FnOnce(F) -> Result<R>) -> Result<R> {
        match (self.lent, self.f) {
            (Some(r), _) => Ok(r),
            (None, Some(f)) => owned(f),
            (None, None) => unreachable!("the closure ran, so its result is kept"),
        }
    }
}

/// TTL over a batch of single-value reads (Value, Reducing, Aggregating, Map entries):
/// `stored` is what the table's `get_many` read for `items`. A live value that needs no
/// re-stamping is returned as read; an expired value, or one re-stamped on read, goes through
/// `single` (the one-item call), which reads it again, so an item given twice sees what the
/// first occurrence did, as calls one by one would.
pub(crate) fn read_batch<T, V>(
    stored: Vec<Result<Option<Stamped<V>>>>,
    items: &[T],
    ttl: &TtlPolicy,
    single: impl Fn(&T) -> Result<Option<V>>,
) -> Vec<Result<Option<V>>> {
    debug_assert_eq!(stored.len(), items.len(), "one result per item");
    let now = ttl.now();
    stored
        .into_iter()
        .zip(items)
        .map(|(read, item)| match read? {
            None => Ok(None),
            Some(s) if !ttl.refresh_on_read() && !ttl.expired(s.last_access, now) => {
                Ok(Some(s.value))
            }
            Some(_) => single(item),
        })
        .collect()
}

/// Read-modify-write of a single stamped value (Reducing and Aggregating `add`): `fold` gets
/// the live value (an expired one counts as absent) and its result is stored, stamped now.
pub(crate) fn fold_single<K, N, V>(
    table: &dyn ValueTable<K, N, V>,
    ttl: Option<&TtlPolicy>,
    key: &Key<K>,
    ns: &N,
    fold: impl FnOnce(Option<V>) -> V,
) -> Result<()> {
    let now = write_stamp(ttl);
    let live = table.get(key, ns)?.and_then(|s| match ttl {
        Some(t) if t.expired(s.last_access, now) => None,
        _ => Some(s.value),
    });
    table.put(key, ns, Stamped::new(now, fold(live)))
}

/// Folds the live values of `sources` (in order), then `target`'s, with `combine` into `target`,
/// removing the sources (shared by Reducing and Aggregating `merge_namespaces`). A source equal
/// to `target` is skipped; the merged value is stamped now.
pub(crate) fn merge_single<K, N: PartialEq, V>(
    table: &dyn ValueTable<K, N, V>,
    ttl: Option<&TtlPolicy>,
    key: &Key<K>,
    target: &N,
    sources: &[N],
    combine: impl Fn(V, V) -> V,
) -> Result<()> {
    let now = write_stamp(ttl);
    let live = |s: &Stamped<V>| ttl.is_none_or(|t| !t.expired(s.last_access, now));
    let mut merged: Option<V> = None;
    for source in sources.iter().filter(|s| *s != target) {
        let Some(stored) = table.get(key, source)? else {
            continue;
        };
        table.remove(key, source)?;
        if live(&stored) {
            merged = Some(match merged {
                Some(acc) => combine(acc, stored.value),
                None => stored.value,
            });
        }
    }
    let Some(mut merged) = merged else {
        return Ok(());
    };
    if let Some(current) = table.get(key, target)?.filter(|s| live(s)) {
        merged = combine(merged, current.value);
    }
    table.put(key, target, Stamped::new(now, merged))
}

/// The stamp for a write now: the clock's time under TTL, else 0 (the clock is not read).
pub(crate) fn write_stamp(ttl: Option<&TtlPolicy>) -> u64 {
    ttl.map_or(0, TtlPolicy::now)
}

/// Keys having state in `ns`, over all of the backend's key groups.
pub(crate) fn keys_in_namespace<K, N: PartialEq>(
    groups: impl Iterator<Item = u16>,
    mut keys_of_group: impl FnMut(u16) -> Result<Vec<(K, N)>>,
    ns: &N,
) -> Result<Vec<K>> {
    let mut out = Vec::new();
    for g in groups {
        out.extend(
            keys_of_group(g)?
                .into_iter()
                .filter(|(_, n)| n == ns)
                .map(|(k, _)| k),
        );
    }
    Ok(out)
}

/// What every view holds: its name, its engine table, its TTL policy, the backend's range, and
/// a kind-specific extra (the reduce or aggregate function).
pub(crate) struct Core<T: ?Sized, X = ()> {
    pub(crate) name: std::sync::Arc<str>,
    pub(crate) table: std::sync::Arc<T>,
    pub(crate) ttl: Option<TtlPolicy>,
    pub(crate) range: crate::key_group::KeyGroupRange,
    pub(crate) extra: X,
}

impl<T: ?Sized, X: Clone> Clone for Core<T, X> {
    fn clone(&self) -> Self {
        Core {
            name: self.name.clone(),
            table: self.table.clone(),
            ttl: self.ttl.clone(),
            range: self.range,
            extra: self.extra.clone(),
        }
    }
}

/// `Clone`, `Debug`, `name`, `keys_in_group` and `keys` for a view holding `core`.
macro_rules! view_common {
    ($view:ident < $($p:ident $(: $bound:path)?),* >) => {
        impl<$($p $(: $bound)?),*> Clone for $view<$($p),*> {
            fn clone(&self) -> Self {
                $view { core: self.core.clone() }
            }
        }

        impl<$($p $(: $bound)?),*> std::fmt::Debug for $view<$($p),*> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($view))
                    .field("name", &self.core.name)
                    .field("ttl", &self.core.ttl)
                    .finish_non_exhaustive()
            }
        }

        impl<$($p $(: $bound)?),*> $view<$($p),*> where N: PartialEq {
            /// The state's name.
            pub fn name(&self) -> &str {
                &self.core.name
            }

            /// Every (key, namespace) with state in `group` (expired entries not yet cleaned up
            /// included), for tooling.
            ///
            /// # Errors
            ///
            /// A key of a key group this backend does not own
            /// ([`Error::KeyGroupOutOfRange`](crate::Error::KeyGroupOutOfRange),
            /// [`Error::MaxParallelismMismatch`](crate::Error::MaxParallelismMismatch)); the
            /// engine's failures: stored bytes the codecs reject
            /// ([`Error::Decode`](crate::Error::Decode)), RocksDB's own errors.
            pub fn keys_in_group(&self, group: u16) -> crate::error::Result<Vec<(K, N)>> {
                self.core.table.keys(group)
            }

            /// Every key with state in namespace `ns`, over all of the backend's key groups.
            ///
            /// # Errors
            ///
            /// A key of a key group this backend does not own
            /// ([`Error::KeyGroupOutOfRange`](crate::Error::KeyGroupOutOfRange),
            /// [`Error::MaxParallelismMismatch`](crate::Error::MaxParallelismMismatch)); the
            /// engine's failures: stored bytes the codecs reject
            /// ([`Error::Decode`](crate::Error::Decode)), RocksDB's own errors.
            pub fn keys_for_namespace(&self, ns: &N) -> crate::error::Result<Vec<K>> {
                crate::state::keys_in_namespace(self.core.range.iter(), |g| self.core.table.keys(g), ns)
            }
        }
    };
}
pub(crate) use view_common;
