//! The engine contract: what every storage engine implements beneath the typed views.
//!
//! The contract is **typed**: an engine stores `(key, namespace) → value` tables of the user's
//! own types. The heap engine keeps them as Rust objects, so an access costs no serialization
//! (as Flink's heap backend); a byte-level engine (RocksDB) encodes with the types' codecs
//! inside its table implementation. TTL stamps ([`Stamped`]) are part of the contract, so an
//! engine can expire entries in the background (heap: incremental cleanup; RocksDB: a
//! compaction filter) while the views keep one implementation of the read-side semantics.
//!
//! Tables are shared (`Arc<dyn …>`) and take `&self`: each engine brings its own interior
//! synchronisation, so views are `Send + Sync` and cheap to clone.

pub mod heap;
mod keyed;
#[cfg(feature = "rocksdb")]
pub mod rocksdb;

pub use keyed::KeyedStateBackend;

use std::fmt;
use std::sync::Arc;

use crate::checkpoint::{SnapshotJob, SnapshotMode};
use crate::clock::{SharedClock, SystemClock};
use crate::error::{ConfigError, Error, Result};
use crate::key::Key;
use crate::key_group::{DEFAULT_MAX_PARALLELISM, KeyGroupRange, check_max_parallelism};
use crate::state::{MapKey, Namespace, StateKey, StateMeta, StateValue};
use crate::timer::TimerStore;
use crate::ttl::Stamped;

/// Storage for one Value, Reducing or Aggregating state: one stamped value per (key, namespace).
pub trait ValueTable<K, N, V>: Send + Sync {
    /// The stored value, if any (expired or not: the views apply TTL).
    fn get(&self, key: &Key<K>, ns: &N) -> Result<Option<Stamped<V>>>;
    /// Stores `value`, replacing any previous one.
    fn put(&self, key: &Key<K>, ns: &N, value: Stamped<V>) -> Result<()>;
    /// Removes the value; a no-op when absent.
    fn remove(&self, key: &Key<K>, ns: &N) -> Result<()>;
    /// Every (key, namespace) with a stored value in `group`.
    fn keys(&self, group: u16) -> Result<Vec<(K, N)>>;
}

/// Storage for one List state: an ordered list of stamped elements per (key, namespace).
pub trait ListTable<K, N, E>: Send + Sync {
    /// The stored elements; empty when absent.
    fn get(&self, key: &Key<K>, ns: &N) -> Result<Vec<Stamped<E>>>;
    /// Appends `elements` (a no-op when empty).
    fn append(&self, key: &Key<K>, ns: &N, elements: Vec<Stamped<E>>) -> Result<()>;
    /// Replaces the list; an empty `elements` removes it.
    fn put(&self, key: &Key<K>, ns: &N, elements: Vec<Stamped<E>>) -> Result<()>;
    /// Removes the list; a no-op when absent.
    fn remove(&self, key: &Key<K>, ns: &N) -> Result<()>;
    /// Every (key, namespace) with a non-empty list in `group`.
    fn keys(&self, group: u16) -> Result<Vec<(K, N)>>;
}

/// Storage for one Map state: a map of stamped user values per (key, namespace).
pub trait MapTable<K, N, UK, UV>: Send + Sync {
    /// The entry for `user_key`, if any.
    fn get(&self, key: &Key<K>, ns: &N, user_key: &UK) -> Result<Option<Stamped<UV>>>;
    /// Inserts or replaces one entry.
    fn put(&self, key: &Key<K>, ns: &N, user_key: UK, value: Stamped<UV>) -> Result<()>;
    /// Inserts or replaces the entries.
    fn put_all(&self, key: &Key<K>, ns: &N, entries: Vec<(UK, Stamped<UV>)>) -> Result<()>;
    /// Removes the entry for `user_key`; removing the last entry removes the map.
    fn remove(&self, key: &Key<K>, ns: &N, user_key: &UK) -> Result<()>;
    /// All entries, in an engine-defined order (heap: hash order; byte engines: byte order).
    fn entries(&self, key: &Key<K>, ns: &N) -> Result<Vec<(UK, Stamped<UV>)>>;
    /// Whether the map has no entry (expired or not).
    fn is_empty(&self, key: &Key<K>, ns: &N) -> Result<bool>;
    /// Removes the whole map.
    fn clear(&self, key: &Key<K>, ns: &N) -> Result<()>;
    /// Every (key, namespace) with a non-empty map in `group`.
    fn keys(&self, group: u16) -> Result<Vec<(K, N)>>;
}

/// A storage engine: creates the tables of registered states.
///
/// The views and [`KeyedStateBackend`] are written against this trait only; the conformance
/// suite in `tests/` runs every engine through the same behaviour.
pub trait Engine: Send + Sync + fmt::Debug + 'static {
    /// A short name (`"heap"`, `"rocksdb"`), recorded in snapshots.
    fn name(&self) -> &'static str;
    /// The engine's configuration.
    fn config(&self) -> &EngineConfig;
    /// Creates the table of a Value, Reducing or Aggregating state.
    fn value_table<K: StateKey, N: Namespace, V: StateValue>(
        &self,
        meta: &StateMeta,
    ) -> Result<Arc<dyn ValueTable<K, N, V>>>;
    /// Creates the table of a List state.
    fn list_table<K: StateKey, N: Namespace, E: StateValue>(
        &self,
        meta: &StateMeta,
    ) -> Result<Arc<dyn ListTable<K, N, E>>>;
    /// Creates the table of a Map state.
    fn map_table<K: StateKey, N: Namespace, UK: MapKey, UV: StateValue>(
        &self,
        meta: &StateMeta,
    ) -> Result<Arc<dyn MapTable<K, N, UK, UV>>>;
    /// Figures a caller can poll cheaply (no scan of the state).
    fn metrics(&self) -> Result<EngineMetrics>;
    /// The synchronous part of a snapshot: as short as the engine can make it; the returned
    /// job's upload runs in the background while processing continues.
    fn snapshot(&self, mode: SnapshotMode) -> Result<SnapshotJob>;
    /// Where the timer service `name` keeps its timers: `None` (the default) for the heap.
    fn timer_store(&self, name: &str) -> Result<Option<Box<dyn TimerStore>>> {
        let _ = name;
        Ok(None)
    }
}

/// Per-state figures of [`EngineMetrics`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateMetrics {
    /// The state's name.
    pub name: String,
    /// Entries: (key, namespace) pairs on the heap; RocksDB's estimate of its keys (map
    /// entries count one each; deleted and expired entries until compaction).
    pub approximate_entries: u64,
    /// Bytes: the heap's hash tables (not what values own on the heap); RocksDB's SST files
    /// plus memtables.
    pub approximate_bytes: u64,
}

/// What an engine reports about itself; both engines fill the same struct.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EngineMetrics {
    /// One entry per registered state, by name.
    pub states: Vec<StateMetrics>,
    /// Memory of live state: all memtables (RocksDB) or all hash tables (heap).
    pub memory_bytes: u64,
    /// Block-cache usage (RocksDB; 0 on the heap).
    pub cache_bytes: u64,
}

/// What every engine is configured with: the key-group scheme and the clock.
#[derive(Clone)]
pub struct EngineConfig {
    max_parallelism: u32,
    range: KeyGroupRange,
    clock: SharedClock,
}

impl EngineConfig {
    /// `max_parallelism` key groups, all owned by this instance, on the system clock.
    pub fn new(max_parallelism: u32) -> Result<Self, ConfigError> {
        Ok(EngineConfig {
            range: KeyGroupRange::all(max_parallelism)?,
            max_parallelism,
            clock: Arc::new(SystemClock),
        })
    }

    /// Owns only `range` (which must fit `max_parallelism`).
    pub fn with_key_group_range(mut self, range: KeyGroupRange) -> Result<Self, ConfigError> {
        range.check_fits(self.max_parallelism)?;
        self.range = range;
        Ok(self)
    }

    /// Reads time from `clock` (a [`ManualClock`](crate::clock::ManualClock) in tests).
    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// The number of key groups.
    pub fn max_parallelism(&self) -> u32 {
        self.max_parallelism
    }

    /// The key groups this instance owns.
    pub fn key_group_range(&self) -> KeyGroupRange {
        self.range
    }

    /// The clock.
    pub fn clock(&self) -> &SharedClock {
        &self.clock
    }

    /// Checks that `key` was resolved for this configuration and that its group is owned here;
    /// returns the group's index within the range.
    #[inline]
    pub fn group_index<K>(&self, key: &Key<K>) -> Result<usize> {
        self.local_index(key.group()).and_then(|i| {
            if key.max_parallelism() == self.max_parallelism {
                Ok(i)
            } else {
                Err(Error::MaxParallelismMismatch {
                    key: key.max_parallelism(),
                    backend: self.max_parallelism,
                })
            }
        })
    }

    /// The index of `group` within the range, or a typed error.
    #[inline]
    pub fn local_index(&self, group: u16) -> Result<usize> {
        self.range.index_of(group).ok_or(Error::KeyGroupOutOfRange {
            group,
            range: self.range,
        })
    }
}

impl Default for EngineConfig {
    /// [`DEFAULT_MAX_PARALLELISM`] key groups, all owned, on the system clock.
    fn default() -> Self {
        debug_assert!(check_max_parallelism(DEFAULT_MAX_PARALLELISM).is_ok());
        EngineConfig {
            max_parallelism: DEFAULT_MAX_PARALLELISM,
            range: KeyGroupRange::new(0, (DEFAULT_MAX_PARALLELISM - 1) as u16),
            clock: Arc::new(SystemClock),
        }
    }
}

impl fmt::Debug for EngineConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EngineConfig")
            .field("max_parallelism", &self.max_parallelism)
            .field("key_group_range", &self.range)
            .field("clock", &self.clock)
            .finish()
    }
}
