//! State descriptors: a name, the types (hence codecs), an optional TTL, and the function of
//! Reducing and Aggregating states.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use crate::codec::Codec;
use crate::ttl::TtlConfig;
use crate::types::{StateKind, StateMeta};

/// What every descriptor offers.
pub trait StateDescriptor {
    /// The state's unique name within a backend.
    fn name(&self) -> &str;
    /// The TTL configuration, if any.
    fn ttl(&self) -> Option<&TtlConfig>;
    /// The state's kind.
    fn kind(&self) -> StateKind;
}

/// A reduce function `(accumulated, new) -> accumulated`.
pub type ReduceFn<V> = Arc<dyn Fn(V, V) -> V + Send + Sync>;

/// Folds inputs into an accumulator and reads a result from it (Flink's `AggregateFunction`).
///
/// ```
/// use keyed_state::state::AggregateFunction;
/// /// Running average of `f64` inputs.
/// struct Average;
/// impl AggregateFunction for Average {
///     type In = f64;
///     type Acc = (f64, u64);
///     type Out = f64;
///     fn create_accumulator(&self) -> (f64, u64) { (0.0, 0) }
///     fn add(&self, x: f64, (sum, n): (f64, u64)) -> (f64, u64) { (sum + x, n + 1) }
///     fn get_result(&self, &(sum, n): &(f64, u64)) -> f64 { if n == 0 { 0.0 } else { sum / n as f64 } }
///     fn merge(&self, a: (f64, u64), b: (f64, u64)) -> (f64, u64) { (a.0 + b.0, a.1 + b.1) }
/// }
/// ```
pub trait AggregateFunction: Send + Sync + 'static {
    /// The input type of `add`.
    type In;
    /// The accumulator, which is what is stored.
    type Acc: Codec + Clone + Send + Sync + 'static;
    /// The result type of `get`.
    type Out;
    /// A fresh, empty accumulator.
    fn create_accumulator(&self) -> Self::Acc;
    /// Adds `value` to `acc`, returning the new accumulator.
    fn add(&self, value: Self::In, acc: Self::Acc) -> Self::Acc;
    /// The result for `acc`.
    fn get_result(&self, acc: &Self::Acc) -> Self::Out;
    /// Merges two accumulators (for `merge_namespaces`).
    fn merge(&self, a: Self::Acc, b: Self::Acc) -> Self::Acc;
}

macro_rules! descriptor_common {
    ($ty:ident < $($p:ident),* >, $kind:expr $(, $extra:ident)*) => {
        // By hand: a derive would require the type parameters to be `Clone`.
        impl<$($p),*> Clone for $ty<$($p),*> {
            fn clone(&self) -> Self {
                $ty {
                    name: self.name.clone(),
                    ttl: self.ttl.clone(),
                    $($extra: self.$extra.clone(),)*
                    _types: PhantomData,
                }
            }
        }

        impl<$($p),*> StateDescriptor for $ty<$($p),*> {
            fn name(&self) -> &str {
                &self.name
            }
            fn ttl(&self) -> Option<&TtlConfig> {
                self.ttl.as_ref()
            }
            fn kind(&self) -> StateKind {
                $kind
            }
        }

        impl<$($p),*> fmt::Debug for $ty<$($p),*> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($ty))
                    .field("name", &self.name)
                    .field("ttl", &self.ttl)
                    .finish_non_exhaustive()
            }
        }
    };
}

/// Describes a [`ValueState`](super::ValueState) holding one `V` per key and namespace `N`.
///
/// ```
/// use keyed_state::state::ValueStateDescriptor;
/// use keyed_state::ttl::TtlConfig;
/// use std::time::Duration;
/// let profile = ValueStateDescriptor::<String>::new("profile")
///     .with_ttl(TtlConfig::new(Duration::from_secs(90 * 24 * 3600)));
/// ```
pub struct ValueStateDescriptor<V, N = ()> {
    name: String,
    ttl: Option<TtlConfig>,
    _types: PhantomData<fn() -> (V, N)>,
}

/// Describes a [`ListState`](super::ListState) of `E` elements.
pub struct ListStateDescriptor<E, N = ()> {
    name: String,
    ttl: Option<TtlConfig>,
    _types: PhantomData<fn() -> (E, N)>,
}

/// The marker of a map descriptor's types.
type MapTypes<UK, UV, N> = PhantomData<fn() -> (UK, UV, N)>;

/// Describes a [`MapState`](super::MapState) from `UK` to `UV`.
pub struct MapStateDescriptor<UK, UV, N = ()> {
    name: String,
    ttl: Option<TtlConfig>,
    _types: MapTypes<UK, UV, N>,
}

/// Describes a [`ReducingState`](super::ReducingState) folding `V`s with a reduce function.
pub struct ReducingStateDescriptor<V, N = ()> {
    name: String,
    ttl: Option<TtlConfig>,
    pub(crate) reduce: ReduceFn<V>,
    _types: PhantomData<fn() -> N>,
}

/// Describes an [`AggregatingState`](super::AggregatingState) driven by `F`.
pub struct AggregatingStateDescriptor<F, N = ()> {
    name: String,
    ttl: Option<TtlConfig>,
    pub(crate) function: Arc<F>,
    _types: PhantomData<fn() -> N>,
}

descriptor_common!(ValueStateDescriptor<V, N>, StateKind::Value);
descriptor_common!(ListStateDescriptor<E, N>, StateKind::List);
descriptor_common!(MapStateDescriptor<UK, UV, N>, StateKind::Map);
descriptor_common!(ReducingStateDescriptor<V, N>, StateKind::Reducing, reduce);
descriptor_common!(AggregatingStateDescriptor<F, N>, StateKind::Aggregating, function);

macro_rules! with_ttl {
    () => {
        /// Gives the state a TTL.
        #[must_use]
        pub fn with_ttl(mut self, ttl: TtlConfig) -> Self {
            self.ttl = Some(ttl);
            self
        }
    };
}

impl<V, N> ValueStateDescriptor<V, N> {
    /// A value state named `name`, without TTL.
    pub fn new(name: impl Into<String>) -> Self {
        ValueStateDescriptor {
            name: name.into(),
            ttl: None,
            _types: PhantomData,
        }
    }
    with_ttl!();
}

impl<E, N> ListStateDescriptor<E, N> {
    /// A list state named `name`, without TTL.
    pub fn new(name: impl Into<String>) -> Self {
        ListStateDescriptor {
            name: name.into(),
            ttl: None,
            _types: PhantomData,
        }
    }
    with_ttl!();
}

impl<UK, UV, N> MapStateDescriptor<UK, UV, N> {
    /// A map state named `name`, without TTL.
    pub fn new(name: impl Into<String>) -> Self {
        MapStateDescriptor {
            name: name.into(),
            ttl: None,
            _types: PhantomData,
        }
    }
    with_ttl!();
}

impl<V, N> ReducingStateDescriptor<V, N> {
    /// A reducing state named `name` folding with `reduce(accumulated, new)`.
    pub fn new(
        name: impl Into<String>,
        reduce: impl Fn(V, V) -> V + Send + Sync + 'static,
    ) -> Self {
        ReducingStateDescriptor {
            name: name.into(),
            ttl: None,
            reduce: Arc::new(reduce),
            _types: PhantomData,
        }
    }
    with_ttl!();
}

impl<F, N> AggregatingStateDescriptor<F, N> {
    /// An aggregating state named `name` driven by `function`.
    pub fn new(name: impl Into<String>, function: F) -> Self {
        AggregatingStateDescriptor {
            name: name.into(),
            ttl: None,
            function: Arc::new(function),
            _types: PhantomData,
        }
    }
    with_ttl!();
}

/// Builds the metadata of a state from a descriptor and its codec types.
pub(crate) fn meta<K: Codec, N: Codec, V: Codec>(
    desc: &impl StateDescriptor,
    user_key_codec: Option<String>,
) -> StateMeta {
    StateMeta {
        name: desc.name().to_owned(),
        kind: desc.kind(),
        key_codec: K::codec_id(),
        namespace_codec: N::codec_id(),
        user_key_codec,
        value_codec: V::codec_id(),
        ttl: desc.ttl().cloned(),
    }
}
