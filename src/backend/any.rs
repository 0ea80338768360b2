//! [`AnyEngine`]: either engine behind one type, so a program chooses its engine at run time
//! (a command-line flag, a configuration file) without a trait of its own.

use std::sync::Arc;

use super::heap::HeapEngine;
#[cfg(feature = "rocksdb")]
use super::rocksdb::RocksDbEngine;
use super::{
    Engine, EngineMetrics, ListTable, MapTable, SnapshotJob, SnapshotMode, TimerStore, ValueTable,
};
use crate::checkpoint::{RestoredTimerSet, TimerMeta};
use crate::error::Result;
use crate::types::{EngineConfig, MapKey, Namespace, StateKey, StateMeta, StateValue};

/// Either engine, chosen at run time; implements [`Engine`] by delegating to the one it holds.
///
/// ```
/// use keyed_state::{AnyEngine, EngineConfig, HeapEngine, KeyedStateBackend};
/// use keyed_state::state::ValueStateDescriptor;
/// # fn main() -> Result<(), keyed_state::Error> {
/// let engine_name = "heap"; // say, from a command-line flag
/// let engine = match engine_name {
///     "heap" => AnyEngine::from(HeapEngine::new(EngineConfig::default())),
///     #[cfg(feature = "rocksdb")]
///     _ => AnyEngine::from(keyed_state::backend::rocksdb::RocksDbEngine::open_temporary(
///         EngineConfig::default(),
///         Default::default(),
///     )?),
///     #[cfg(not(feature = "rocksdb"))]
///     _ => unreachable!(),
/// };
/// let backend = KeyedStateBackend::<u64, AnyEngine>::new(engine);
/// let count = backend.value_state(&ValueStateDescriptor::<u64>::new("count"))?;
/// count.update(&backend.key(1)?, &(), 7)?;
/// assert_eq!(backend.engine().name(), "heap");
/// # use keyed_state::Engine;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
#[non_exhaustive]
#[allow(
    clippy::large_enum_variant,
    reason = "one engine per backend, created and moved once; boxing buys nothing"
)]
pub enum AnyEngine {
    /// The in-memory engine.
    Heap(HeapEngine),
    /// The RocksDB engine (cargo feature `rocksdb`).
    #[cfg(feature = "rocksdb")]
    RocksDb(RocksDbEngine),
}

impl From<HeapEngine> for AnyEngine {
    fn from(engine: HeapEngine) -> Self {
        AnyEngine::Heap(engine)
    }
}

#[cfg(feature = "rocksdb")]
impl From<RocksDbEngine> for AnyEngine {
    fn from(engine: RocksDbEngine) -> Self {
        AnyEngine::RocksDb(engine)
    }
}

impl AnyEngine {
    /// The heap engine, if that is what this is.
    pub fn as_heap(&self) -> Option<&HeapEngine> {
        match self {
            AnyEngine::Heap(e) => Some(e),
            #[cfg(feature = "rocksdb")]
            AnyEngine::RocksDb(_) => None,
        }
    }

    /// The RocksDB engine, if that is what this is.
    #[cfg(feature = "rocksdb")]
    pub fn as_rocksdb(&self) -> Option<&RocksDbEngine> {
        match self {
            AnyEngine::RocksDb(e) => Some(e),
            AnyEngine::Heap(_) => None,
        }
    }
}

/// Runs `$body` with `$e` bound to the engine inside `$self`.
macro_rules! delegate {
    ($self:expr, $e:ident => $body:expr) => {
        match $self {
            AnyEngine::Heap($e) => $body,
            #[cfg(feature = "rocksdb")]
            AnyEngine::RocksDb($e) => $body,
        }
    };
}

impl Engine for AnyEngine {
    fn name(&self) -> &'static str {
        delegate!(self, e => e.name())
    }

    fn config(&self) -> &EngineConfig {
        delegate!(self, e => e.config())
    }

    fn value_table<K: StateKey, N: Namespace, V: StateValue>(
        &self,
        meta: &StateMeta,
    ) -> Result<Arc<dyn ValueTable<K, N, V>>> {
        delegate!(self, e => e.value_table(meta))
    }

    fn list_table<K: StateKey, N: Namespace, E: StateValue>(
        &self,
        meta: &StateMeta,
    ) -> Result<Arc<dyn ListTable<K, N, E>>> {
        delegate!(self, e => e.list_table(meta))
    }

    fn map_table<K: StateKey, N: Namespace, UK: MapKey, UV: StateValue>(
        &self,
        meta: &StateMeta,
    ) -> Result<Arc<dyn MapTable<K, N, UK, UV>>> {
        delegate!(self, e => e.map_table(meta))
    }

    fn metrics(&self) -> Result<EngineMetrics> {
        delegate!(self, e => e.metrics())
    }

    fn snapshot(&self, mode: SnapshotMode) -> Result<SnapshotJob> {
        delegate!(self, e => e.snapshot(mode))
    }

    fn timer_store(&self, meta: &TimerMeta) -> Result<Option<Box<dyn TimerStore>>> {
        delegate!(self, e => e.timer_store(meta))
    }

    fn resident_timer_services(&self) -> Result<Vec<(String, Option<TimerMeta>)>> {
        delegate!(self, e => e.resident_timer_services())
    }

    fn resident_timer_store(&self, name: &str) -> Result<Option<Box<dyn TimerStore>>> {
        delegate!(self, e => e.resident_timer_store(name))
    }

    fn take_restored_timers(&self) -> RestoredTimerSet {
        delegate!(self, e => e.take_restored_timers())
    }
}
