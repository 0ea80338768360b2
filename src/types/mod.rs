//! The vocabulary every layer speaks: what keys, namespaces and values must implement, the
//! state kinds and their metadata (and its byte encoding), timer ids, and the engine
//! configuration. This is the bottom of the library beside [`key_group`](crate::key_group),
//! [`codec`](crate::codec), [`ttl`](crate::ttl), [`clock`](crate::clock) and
//! [`error`](crate::error): views, engines, timers and checkpoints all import it, and it imports
//! none of them.

mod config;
pub(crate) mod meta_codec;
mod timer_id;

pub use config::EngineConfig;
pub use timer_id::{GroupTimers, TimerId};
pub(crate) use timer_id::{split_timer_id, timer_id, timer_id_from_parts};

use std::fmt;
use std::hash::Hash;

use crate::codec::Codec;
use crate::ttl::TtlConfig;

/// What a key type needs: a codec, equality, and to be shareable across threads.
pub trait StateKey: Codec + Clone + Eq + Send + Sync + 'static {}
impl<T: Codec + Clone + Eq + Send + Sync + 'static> StateKey for T {}

/// What a namespace type needs (the same as a key).
pub trait Namespace: Codec + Clone + Eq + Send + Sync + 'static {}
impl<T: Codec + Clone + Eq + Send + Sync + 'static> Namespace for T {}

/// What a stored value, list element or accumulator needs.
pub trait StateValue: Codec + Clone + Send + Sync + 'static {}
impl<T: Codec + Clone + Send + Sync + 'static> StateValue for T {}

/// What a map state's user key needs (the heap engine keeps a hash map per key and namespace).
pub trait MapKey: Codec + Clone + Eq + Hash + Send + Sync + 'static {}
impl<T: Codec + Clone + Eq + Hash + Send + Sync + 'static> MapKey for T {}

/// The five kinds of keyed state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StateKind {
    /// One value per key and namespace.
    Value,
    /// An ordered list of elements.
    List,
    /// A map from user keys to user values.
    Map,
    /// A value folded with a reduce function.
    Reducing,
    /// An accumulator folded with an [`AggregateFunction`](crate::state::AggregateFunction).
    Aggregating,
}

impl fmt::Display for StateKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Everything that identifies a registered state: persisted with snapshots and compared when a
/// name is registered again.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StateMeta {
    /// The state's unique name.
    pub name: String,
    /// Its kind.
    pub kind: StateKind,
    /// Codec id of the backend's key type.
    pub key_codec: String,
    /// Codec id of the namespace type.
    pub namespace_codec: String,
    /// Codec id of the map's user key (Map only).
    pub user_key_codec: Option<String>,
    /// Codec id of the value (List: element; Map: user value; Aggregating: accumulator).
    pub value_codec: String,
    /// The TTL configuration, if any.
    pub ttl: Option<TtlConfig>,
}

impl StateMeta {
    /// Describes the first field in which `self` and `other` differ, as
    /// `(field, self's value, other's value)`.
    pub fn first_difference(&self, other: &StateMeta) -> Option<(&'static str, String, String)> {
        let fields: [(&'static str, String, String); 6] = [
            ("kind", self.kind.to_string(), other.kind.to_string()),
            ("key codec", self.key_codec.clone(), other.key_codec.clone()),
            (
                "namespace codec",
                self.namespace_codec.clone(),
                other.namespace_codec.clone(),
            ),
            (
                "user key codec",
                format!("{:?}", self.user_key_codec),
                format!("{:?}", other.user_key_codec),
            ),
            (
                "value codec",
                self.value_codec.clone(),
                other.value_codec.clone(),
            ),
            ("TTL", format!("{:?}", self.ttl), format!("{:?}", other.ttl)),
        ];
        fields.into_iter().find(|(_, a, b)| a != b)
    }

    /// Like [`first_difference`](Self::first_difference), for registering `requested` over
    /// state restored or persisted as `self`: the TTL's settings (duration, update type,
    /// visibility, cleanup) may change, as in Flink — every value carries its last-access
    /// stamp, so the new TTL simply applies to it — while turning TTL on or off changes the
    /// stored layout and is a difference.
    pub fn restore_difference(
        &self,
        requested: &StateMeta,
    ) -> Option<(&'static str, String, String)> {
        let on = |ttl: &Option<TtlConfig>| match ttl {
            Some(t) => format!("on ({t:?})"),
            None => "off".to_string(),
        };
        match (&self.ttl, &requested.ttl) {
            (Some(_), None) | (None, Some(_)) => {
                return Some((
                    "TTL on or off (its settings may change across a restore, not whether it is on)",
                    on(&self.ttl),
                    on(&requested.ttl),
                ));
            }
            _ => {}
        }
        let same_ttl = StateMeta {
            ttl: requested.ttl.clone(),
            ..self.clone()
        };
        same_ttl.first_difference(requested)
    }
}
