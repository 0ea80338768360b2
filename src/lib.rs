//! # keyed-state
//!
//! A standalone keyed-state storage engine for stream processors: the state layer of a system
//! like Apache Flink (keyed Value, List, Map, Reducing and Aggregating state, namespaces, TTL,
//! key groups for rescaling) as a library any engine can embed.
//!
//! State is partitioned into **key groups** ([`key_group`]): a key's group is a fixed hash of
//! its serialized bytes modulo `max_parallelism`, and each backend instance owns a contiguous
//! range of groups. A caller resolves each record's key once ([`KeyedStateBackend::key`]) and
//! hands that [`Key`] to every state view it touches.
//!
//! ```
//! use keyed_state::{EngineConfig, HeapEngine, KeyedStateBackend};
//! use keyed_state::clock::ManualClock;
//! use keyed_state::state::{ListStateDescriptor, ReducingStateDescriptor, ValueStateDescriptor};
//! use keyed_state::ttl::TtlConfig;
//! use std::time::Duration;
//!
//! # fn main() -> Result<(), keyed_state::Error> {
//! let clock = ManualClock::new(0);
//! let config = EngineConfig::new(128)?.with_clock(clock.shared());
//! let backend = KeyedStateBackend::<String>::new(HeapEngine::new(config));
//!
//! let count = backend.value_state(&ValueStateDescriptor::<u64>::new("count"))?;
//! let recent = backend.list_state(
//!     &ListStateDescriptor::<u64>::new("recent").with_ttl(TtlConfig::new(Duration::from_secs(60))),
//! )?;
//! let max = backend.reducing_state(&ReducingStateDescriptor::<u64>::new("max", |a, b| a.max(b)))?;
//!
//! for (user, amount) in [("alice", 30), ("bob", 5), ("alice", 70)] {
//!     let key = backend.key(user.to_string())?; // serialize + hash once per record
//!     let n = count.get(&key, &())?.unwrap_or(0);
//!     count.update(&key, &(), n + 1)?;
//!     recent.add(&key, &(), amount)?;
//!     max.add(&key, &(), amount)?;
//! }
//!
//! let alice = backend.key("alice".to_string())?;
//! assert_eq!(count.get(&alice, &())?, Some(2));
//! assert_eq!(max.get(&alice, &())?, Some(70));
//! assert_eq!(recent.get(&alice, &())?.collect::<Vec<_>>(), vec![30, 70]);
//! clock.advance(Duration::from_secs(60)); // the list's elements expire
//! assert_eq!(recent.get(&alice, &())?.count(), 0);
//! # Ok(())
//! # }
//! ```
//!
//! Modules mirror the architecture (DESIGN.md §1), top to bottom:
//!
//! - [`KeyedStateBackend`] (module `keyed`), the façade: registration, keys, views, timer
//!   services, checkpoints;
//! - [`state`] (the typed views) and [`timer`] (timer services);
//! - [`backend`]: the engine contract ([`Engine`]), [`HeapEngine`], the RocksDB engine (cargo
//!   feature `rocksdb`) and [`AnyEngine`] to choose one at run time;
//! - [`checkpoint`]: storage, formats, the store protocol, restore planning;
//! - the vocabulary: [`types`], [`key`], [`key_group`], [`codec`], [`ttl`], [`clock`],
//!   [`error`].
//!
//! # Cargo features
//!
//! - `rocksdb`: the RocksDB engine (`backend::rocksdb::RocksDbEngine`); builds RocksDB's C++ (needs
//!   libclang). Off by default, so the heap engine alone builds in seconds.
//! - `serde`: [`serde_codec!`] stores serde types (postcard encoding).
//! - `s3`: checkpoint storage on S3-compatible object storage
//!   ([`checkpoint::ObjectStorage`]).

// Nothing that comes from disk or a caller is unwrapped in the library (tests may).
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod backend;
pub mod checkpoint;
pub mod clock;
pub mod codec;
pub mod error;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod key;
pub mod key_group;
mod keyed;
pub mod state;
pub mod timer;
pub mod ttl;
pub mod types;

pub use backend::heap::HeapEngine;
pub use backend::{AnyEngine, Engine, SnapshotMode};
pub use error::{CheckpointError, CodecError, ConfigError, Error, Result};
pub use key::Key;
pub use keyed::{KeyedStateBackend, PendingCheckpoint};
pub use types::{EngineConfig, MapKey, Namespace, StateKey, StateValue};

// What users share across threads: checked at compile time, so a change that loses `Send` or
// `Sync` fails here rather than in a user's build.
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<KeyedStateBackend<u64, HeapEngine>>();
    send_sync::<KeyedStateBackend<String, AnyEngine>>();
    send_sync::<state::ValueState<u64, u64>>();
    send_sync::<state::ListState<u64, u64>>();
    send_sync::<state::MapState<u64, u64, u64>>();
    send_sync::<state::ReducingState<u64, u64>>();
    send_sync::<timer::TimerService<u64, u64>>();
    send_sync::<checkpoint::CheckpointStore>();
    send_sync::<PendingCheckpoint>();
    #[cfg(feature = "rocksdb")]
    send_sync::<KeyedStateBackend<u64, backend::rocksdb::RocksDbEngine>>();
};
