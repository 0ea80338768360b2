//! The heap engine: state as Rust objects in memory, per state and per key group.
//!
//! Each registered state gets one table: a vector with one `CowMap` (a copy-on-write segmented hash table) per owned key
//! group, behind a mutex, holding `(key, namespace, state)` entries of the user's own types
//! (an access costs no serialization). Entries are found by a hash of the key's bytes (computed
//! once per record in [`Key`](crate::Key)) combined with the namespace's. Tables apply TTL
//! cleanup incrementally: every access visits a bounded number of entries and drops expired
//! ones, so keys nobody reads again do not live forever.

mod cow_map;
mod table;

use std::sync::Arc;

use parking_lot::Mutex;

use crate::backend::{
    Engine, EngineConfig, EngineMetrics, ListTable, MapTable, StateMetrics, ValueTable,
};
use crate::error::Result;
use crate::state::{MapKey, Namespace, StateKey, StateMeta, StateValue};
use crate::ttl::Stamped;
use table::{Bare, HeapTable, MapEntries, TableStats};

/// The in-memory engine. Cheap to create; see the module docs for its structure.
///
/// ```
/// use keyed_state::{EngineConfig, HeapEngine, KeyedStateBackend};
/// use keyed_state::key_group::range_for_operator;
/// // Operator 1 of 4 owns a quarter of the 128 key groups.
/// let config = EngineConfig::new(128).unwrap()
///     .with_key_group_range(range_for_operator(128, 4, 1).unwrap()).unwrap();
/// let backend = KeyedStateBackend::<String>::new(HeapEngine::new(config));
/// assert_eq!(backend.key_group_range().len(), 32);
/// ```
#[derive(Default)]
pub struct HeapEngine {
    config: EngineConfig,
    /// Every table created, by state name, for metrics.
    tables: Mutex<Vec<(String, Arc<dyn TableStats>)>>,
}

impl HeapEngine {
    /// A heap engine with `config`.
    pub fn new(config: EngineConfig) -> Self {
        HeapEngine {
            config,
            tables: Mutex::new(Vec::new()),
        }
    }

    /// Records `table` for metrics and returns it.
    fn track<T: TableStats + 'static>(&self, meta: &StateMeta, table: T) -> Arc<T> {
        let table = Arc::new(table);
        self.tables.lock().push((meta.name.clone(), table.clone()));
        table
    }
}

impl std::fmt::Debug for HeapEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeapEngine")
            .field("config", &self.config)
            .field("states", &self.tables.lock().len())
            .finish()
    }
}

impl Engine for HeapEngine {
    fn name(&self) -> &'static str {
        "heap"
    }

    fn config(&self) -> &EngineConfig {
        &self.config
    }

    fn value_table<K: StateKey, N: Namespace, V: StateValue>(
        &self,
        meta: &StateMeta,
    ) -> Result<Arc<dyn ValueTable<K, N, V>>> {
        // States without TTL keep bare values: 8 bytes less per value.
        Ok(if meta.ttl.is_some() {
            self.track(meta, HeapTable::<K, N, Stamped<V>>::new(&self.config, meta))
        } else {
            self.track(meta, HeapTable::<K, N, Bare<V>>::new(&self.config, meta))
        })
    }

    fn list_table<K: StateKey, N: Namespace, E: StateValue>(
        &self,
        meta: &StateMeta,
    ) -> Result<Arc<dyn ListTable<K, N, E>>> {
        Ok(if meta.ttl.is_some() {
            self.track(
                meta,
                HeapTable::<K, N, Vec<Stamped<E>>>::new(&self.config, meta),
            )
        } else {
            self.track(
                meta,
                HeapTable::<K, N, Vec<Bare<E>>>::new(&self.config, meta),
            )
        })
    }

    fn map_table<K: StateKey, N: Namespace, UK: MapKey, UV: StateValue>(
        &self,
        meta: &StateMeta,
    ) -> Result<Arc<dyn MapTable<K, N, UK, UV>>> {
        Ok(if meta.ttl.is_some() {
            self.track(
                meta,
                HeapTable::<K, N, MapEntries<UK, Stamped<UV>>>::new(&self.config, meta),
            )
        } else {
            self.track(
                meta,
                HeapTable::<K, N, MapEntries<UK, Bare<UV>>>::new(&self.config, meta),
            )
        })
    }

    fn metrics(&self) -> Result<EngineMetrics> {
        let mut states: Vec<StateMetrics> = self
            .tables
            .lock()
            .iter()
            .map(|(name, t)| StateMetrics {
                name: name.clone(),
                approximate_entries: t.entries(),
                approximate_bytes: t.bytes(),
            })
            .collect();
        states.sort_by(|a, b| a.name.cmp(&b.name));
        let memory_bytes = states.iter().map(|s| s.approximate_bytes).sum();
        Ok(EngineMetrics {
            states,
            memory_bytes,
            cache_bytes: 0,
        })
    }
}
