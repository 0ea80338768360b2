//! The heap engine: state as Rust objects in memory, per state and per key group.
//!
//! Each registered state gets one table: a vector with one `CowMap` (a copy-on-write segmented hash table) per owned key
//! group, behind a mutex, holding `(key, namespace, state)` entries of the user's own types
//! (an access costs no serialization). Entries are found by a hash of the key's bytes (computed
//! once per record in [`Key`](crate::Key)) combined with the namespace's. Tables apply TTL
//! cleanup incrementally: every access visits a bounded number of entries and drops expired
//! ones, so keys nobody reads again do not live forever.

mod arena;
mod cow_map;
mod inline;
mod small_map;
mod snapshot;
mod table;
mod timers;
mod unshared;

pub(crate) use timers::HeapTimerStore;

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::Mutex;
use smallvec::SmallVec;

use crate::backend::{
    Engine, EngineMetrics, ListTable, MapTable, SnapshotJob, SnapshotMode, StateMetrics, ValueTable,
};
use crate::checkpoint::format::canonical::Restored;
use crate::checkpoint::{RestoreSource, RestoredTimerSet, plan_restore, read_canonical};
use crate::error::{Error, Result};
use crate::ttl::Stamped;
use crate::types::{EngineConfig, MapKey, Namespace, StateKey, StateMeta, StateValue};
use arena::TableAlloc;
use snapshot::{HeapUpload, Source};
use table::{Bare, HeapState, HeapTable, MapEntries};

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
pub struct HeapEngine {
    config: EngineConfig,
    /// Every table created, with its state's metadata, for metrics and snapshots.
    tables: Mutex<Vec<(StateMeta, Arc<dyn HeapState>)>>,
    /// Restored states not registered again yet, by name (see [`snapshot`]).
    restored: Mutex<BTreeMap<String, Restored>>,
    /// Restored timers, until the backend takes them.
    restored_timers: Mutex<RestoredTimerSet>,
    /// Whether small lists and maps may live inside their table entries ([`inline`]).
    inline_collections: bool,
    /// Where tables registered from now on get their memory ([`arena`]).
    alloc: TableAlloc,
}

impl HeapEngine {
    /// A heap engine with `config`.
    pub fn new(config: EngineConfig) -> Self {
        HeapEngine {
            config,
            tables: Mutex::new(Vec::new()),
            restored: Mutex::new(BTreeMap::new()),
            restored_timers: Mutex::new(RestoredTimerSet::default()),
            inline_collections: true,
            alloc: TableAlloc::arena(),
        }
    }

    /// Whether the lists and maps of states registered from now on may keep their first
    /// elements inside the state's table entries (on by default).
    ///
    /// Inline, a read of a short list or map costs one cache miss instead of two: about 1.7×
    /// the reads per second of one on the heap at a million keys. But every entry of such a
    /// state is as large as the inline part (up to 16 list elements or 12 map entries, and
    /// only for element types that keep it within 288 bytes), whether its list holds one
    /// element or ten. Turn it off for states with many keys and lists or maps of one or two
    /// elements, where memory matters more than speed.
    ///
    /// ```
    /// use keyed_state::{EngineConfig, HeapEngine};
    /// let engine = HeapEngine::new(EngineConfig::default()).with_inline_collections(false);
    /// assert!(!engine.inline_collections());
    /// ```
    #[must_use]
    pub fn with_inline_collections(mut self, inline: bool) -> Self {
        self.inline_collections = inline;
        self
    }

    /// Whether lists and maps may live inside their table entries
    /// ([`with_inline_collections`](Self::with_inline_collections)).
    pub fn inline_collections(&self) -> bool {
        self.inline_collections
    }

    /// Whether the tables of states registered from now on keep their larger allocations (a
    /// table's segments beyond a few hundred entries) in memory the engine maps itself and
    /// asks Linux to back with transparent huge pages (on by default).
    ///
    /// On 4 KiB pages, a lookup at a million keys also misses the TLB twice: its table's
    /// control bytes and bucket lie on two pages, neither in the TLB. With 2 MiB pages, most
    /// heap reads and writes at a million keys ran 10-45 % faster (values, lists and maps
    /// alike; reads of values kept in allocations of their own, such as `Bytes`, gain
    /// little). The cost: the engine's table memory grows in 2 MiB steps and goes back to the
    /// system only when a whole map of it is free (at most 256 MiB each), and the first write
    /// to each 2 MiB may wait while the kernel finds a huge page. Where
    /// `/sys/kernel/mm/transparent_hugepage/enabled` is `never` (or off Linux) it is ordinary
    /// memory. Turn it off to leave every allocation to the global allocator.
    ///
    /// ```
    /// use keyed_state::{EngineConfig, HeapEngine};
    /// let engine = HeapEngine::new(EngineConfig::default()).with_huge_pages(false);
    /// assert!(!engine.huge_pages());
    /// ```
    #[must_use]
    pub fn with_huge_pages(mut self, on: bool) -> Self {
        self.alloc = if on {
            TableAlloc::arena()
        } else {
            TableAlloc::global()
        };
        self
    }

    /// Whether tables get their larger allocations from the engine's own huge-page memory
    /// ([`with_huge_pages`](Self::with_huge_pages)).
    pub fn huge_pages(&self) -> bool {
        self.alloc.stats().is_some()
    }

    /// A heap engine for `config`'s key-group range, restored from heap checkpoints or
    /// savepoints of either engine. With several sources (rescaling), each must hold a
    /// distinct part of the range and together all of it; only the blocks of owned key groups
    /// are read. Every file is checked against its size and crc32 first.
    ///
    /// Restored states come back as their states are registered again, which must match the
    /// checkpoint's metadata; until then they are carried into new snapshots unchanged. The
    /// checkpoints' timers come back through the backend built over the engine
    /// ([`KeyedStateBackend::new`](crate::KeyedStateBackend::new)), as its timer services are
    /// created.
    ///
    /// # Errors
    ///
    /// Sources that do not fit the range or one another ([`plan_restore`]), a missing or
    /// damaged file ([`CheckpointError`](crate::CheckpointError)), a native RocksDB checkpoint.
    pub fn restore(config: EngineConfig, sources: &[RestoreSource]) -> Result<Self> {
        let range = config.key_group_range();
        let (used, states) = plan_restore(sources, config.max_parallelism(), range)?;
        let restored = read_canonical(&used, &states, range)?;
        let timers = RestoredTimerSet::read(&used, range)?;
        tracing::info!(states = restored.len(), range = %range, sources = used.len(), "restored heap engine");
        Ok(HeapEngine {
            config,
            tables: Mutex::new(Vec::new()),
            restored: Mutex::new(restored),
            restored_timers: Mutex::new(timers),
            inline_collections: true,
            alloc: TableAlloc::arena(),
        })
    }

    /// A new table of shape `S` for the state `meta`, in the engine's table memory: recorded
    /// for metrics and snapshots, and filled with the state's restored records if there are any.
    fn table<K, N, S>(&self, meta: &StateMeta) -> Result<Arc<HeapTable<K, N, S>>>
    where
        K: StateKey,
        N: Namespace,
        S: table::Expiring + Send + Sync,
        HeapTable<K, N, S>: HeapState + 'static,
    {
        let table = HeapTable::<K, N, S>::new(&self.config, meta, &self.alloc);
        let pending = self.restored.lock().remove(&meta.name);
        if let Some(pending) = pending {
            if let Some((field, existing, requested)) = pending.meta.restore_difference(meta) {
                let name = meta.name.clone();
                self.restored.lock().insert(name.clone(), pending);
                return Err(Error::IncompatibleRegistration {
                    name,
                    field,
                    existing,
                    requested,
                });
            }
            table
                .restore_groups(&pending.groups)
                .map_err(|source| Error::Decode {
                    state: meta.name.clone(),
                    source,
                })?;
        }
        let table = Arc::new(table);
        self.tables.lock().push((meta.clone(), table.clone()));
        Ok(table)
    }
}

impl Default for HeapEngine {
    /// [`EngineConfig::default`]: 128 key groups, all owned, on [`CoarseClock`](crate::clock::CoarseClock).
    fn default() -> Self {
        HeapEngine::new(EngineConfig::default())
    }
}

impl std::fmt::Debug for HeapEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeapEngine")
            .field("config", &self.config)
            .field("states", &self.tables.lock().len())
            .field("restored_unregistered", &self.restored.lock().len())
            .field("inline_collections", &self.inline_collections)
            .field("table_memory", &self.alloc)
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
            self.table::<K, N, Stamped<V>>(meta)?
        } else {
            self.table::<K, N, Bare<V>>(meta)?
        })
    }

    fn list_table<K: StateKey, N: Namespace, E: StateValue>(
        &self,
        meta: &StateMeta,
    ) -> Result<Arc<dyn ListTable<K, N, E>>> {
        // Four shapes: stamped or bare elements, inline or on the heap ([`inline`]).
        macro_rules! list {
            ($p:ty) => {
                if self.inline_collections && inline::fits::<$p>(inline::LIST_INLINE) {
                    self.table::<K, N, SmallVec<[$p; inline::LIST_INLINE]>>(meta)?
                } else {
                    self.table::<K, N, SmallVec<[$p; 0]>>(meta)?
                }
            };
        }
        Ok(if meta.ttl.is_some() {
            list!(Stamped<E>)
        } else {
            list!(Bare<E>)
        })
    }

    fn map_table<K: StateKey, N: Namespace, UK: MapKey, UV: StateValue>(
        &self,
        meta: &StateMeta,
    ) -> Result<Arc<dyn MapTable<K, N, UK, UV>>> {
        macro_rules! map {
            ($p:ty) => {
                if self.inline_collections && inline::fits::<(UK, $p)>(inline::MAP_INLINE) {
                    self.table::<K, N, MapEntries<UK, $p, [(UK, $p); inline::MAP_INLINE]>>(meta)?
                } else {
                    self.table::<K, N, MapEntries<UK, $p>>(meta)?
                }
            };
        }
        Ok(if meta.ttl.is_some() {
            map!(Stamped<UV>)
        } else {
            map!(Bare<UV>)
        })
    }

    /// Freezes every table (O(states × key groups)); encoding, compression and the upload run
    /// in the returned job. Every heap snapshot is full and in the canonical format, so a
    /// checkpoint and a savepoint differ only in their manifest's kind.
    fn snapshot(&self, mode: SnapshotMode) -> Result<SnapshotJob> {
        let now = self.config.now_millis();
        let mut states: Vec<(StateMeta, Source)> = self
            .tables
            .lock()
            .iter()
            .map(|(meta, table)| Ok((meta.clone(), Source::Live(table.freeze()?))))
            .collect::<Result<_>>()?;
        states.extend(
            self.restored
                .lock()
                .values()
                .map(|r| (r.meta.clone(), Source::Restored(r.groups.clone()))),
        );
        states.sort_by(|a, b| a.0.name.cmp(&b.0.name));
        Ok(SnapshotJob {
            upload: Box::new(HeapUpload {
                range: self.config.key_group_range(),
                now,
                savepoint: mode == SnapshotMode::Savepoint,
                states,
            }),
            engine: self.name(),
            max_parallelism: self.config.max_parallelism(),
            range: self.config.key_group_range(),
            created_at_millis: now,
        })
    }

    fn take_restored_timers(&self) -> RestoredTimerSet {
        std::mem::take(&mut *self.restored_timers.lock())
    }

    fn metrics(&self) -> Result<EngineMetrics> {
        let mut states: Vec<StateMetrics> = self
            .tables
            .lock()
            .iter()
            .map(|(meta, t)| {
                Ok(StateMetrics {
                    name: meta.name.clone(),
                    approximate_entries: t.entries()?,
                    approximate_bytes: t.bytes()?,
                })
            })
            .collect::<Result<_>>()?;
        states.sort_by(|a, b| a.name.cmp(&b.name));
        let memory_bytes = states.iter().map(|s| s.approximate_bytes).sum();
        Ok(EngineMetrics {
            states,
            memory_bytes,
            cache_bytes: 0,
            row_cache_bytes: 0,
            table_reader_bytes: 0,
        })
    }
}
