//! The façade, at the top of the library: [`KeyedStateBackend`] registers states and timer
//! services on an engine, resolves keys, hands out typed views, and takes checkpoints (the
//! engine's synchronous part, a copy of the timers, then the upload, the timers file and the
//! manifest in the background: [`PendingCheckpoint`]). A backend built over a restored engine
//! gets the engine's restored timers at construction, so a restore is one call.

mod checkpoint;

pub use checkpoint::PendingCheckpoint;

use std::any::Any;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::backend::heap::HeapEngine;
use crate::backend::{Engine, SnapshotMode};
use crate::checkpoint::format::timers::{RestoredTimers, ServiceTimers, TimersSnapshot};
use crate::checkpoint::{CheckpointStore, TimerMeta};
use crate::clock::SharedClock;
use crate::error::{CheckpointError, Error, Result};
use crate::key::Key;
use crate::key_group::KeyGroupRange;
use crate::state::descriptor::meta;
use crate::state::{
    AggregateFunction, AggregatingState, AggregatingStateDescriptor, Core, ListState,
    ListStateDescriptor, MapState, MapStateDescriptor, ReducingState, ReducingStateDescriptor,
    StateDescriptor, ValueState, ValueStateDescriptor,
};
use crate::timer::{TimerService, TimerSnapshotter};
use crate::ttl::TtlPolicy;
use crate::types::{EngineConfig, MapKey, Namespace, StateKey, StateMeta, StateValue, TimerId};

struct RegisteredTimers {
    typed: Box<dyn Any + Send + Sync>,
    snapshotter: Arc<dyn TimerSnapshotter>,
}

struct Registered {
    meta: StateMeta,
    /// The engine's table as `Arc<dyn …Table<…>>`, type-erased.
    table: Box<dyn Any + Send + Sync>,
}

/// The keyed state of one operator instance: an engine plus the states registered on it.
///
/// `K` is the key type. Resolve each record's key once with [`KeyedStateBackend::key`], then
/// pass that handle to every view.
///
/// ```
/// use keyed_state::{EngineConfig, HeapEngine, KeyedStateBackend};
/// use keyed_state::state::ValueStateDescriptor;
/// let backend = KeyedStateBackend::<u64>::new(HeapEngine::new(EngineConfig::default()));
/// let count = backend.value_state(&ValueStateDescriptor::<u64>::new("count")).unwrap();
/// let key = backend.key(42).unwrap();
/// count.update(&key, &(), 1).unwrap();
/// assert_eq!(count.get(&key, &()).unwrap(), Some(1));
/// ```
pub struct KeyedStateBackend<K, E = HeapEngine> {
    engine: E,
    states: Mutex<HashMap<String, Registered>>,
    /// Timer services by name: the typed `Arc<TimerService<K, N>>` (erased) and its
    /// checkpoint view.
    timers: Mutex<HashMap<String, RegisteredTimers>>,
    /// Restored timers of services not created yet, by name.
    restored_timers: Mutex<BTreeMap<String, RestoredTimers>>,
    _key: PhantomData<fn() -> K>,
}

impl<K: StateKey, E: Engine> KeyedStateBackend<K, E> {
    /// A backend over `engine`, with no state registered yet. A restored engine's state comes
    /// back as states are registered again, and its timers as timer services are created (the
    /// engine hands them over here).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use keyed_state::checkpoint::{CheckpointStore, MemoryStorage, RestoreSource};
    /// use keyed_state::{EngineConfig, HeapEngine, KeyedStateBackend};
    /// # fn main() -> Result<(), keyed_state::Error> {
    /// let store = Arc::new(CheckpointStore::open(Arc::new(MemoryStorage::new()), 1)?.0);
    /// let backend = KeyedStateBackend::<u64>::new(HeapEngine::new(EngineConfig::default()));
    /// backend.timer_service::<()>("t")?.register_event_time_timer(&backend.key(1)?, &(), 5)?;
    /// backend.checkpoint(&store, 1, &[])?.wait()?;
    ///
    /// // One call restores state and timers.
    /// let source = RestoreSource::latest(&store)?;
    /// let restored = KeyedStateBackend::<u64>::new(HeapEngine::restore(EngineConfig::default(), &[source])?);
    /// assert_eq!(restored.timer_service::<()>("t")?.next_timer(keyed_state::timer::TimeDomain::EventTime), Some(5));
    /// # Ok(())
    /// # }
    /// ```
    pub fn new(engine: E) -> Self {
        let restored = engine.take_restored_timers();
        KeyedStateBackend {
            engine,
            states: Mutex::new(HashMap::new()),
            timers: Mutex::new(HashMap::new()),
            restored_timers: Mutex::new(restored.services),
            _key: PhantomData,
        }
    }

    /// Resolves `key` for this backend: serializes it once, computes its key group and checks
    /// that this instance owns the group.
    ///
    /// # Errors
    ///
    /// [`Error::KeyGroupOutOfRange`](crate::Error::KeyGroupOutOfRange) for a key of a group
    /// this instance does not own.
    #[inline]
    pub fn key(&self, key: K) -> Result<Key<K>> {
        let key = Key::with_divisor(key, self.config().key_group_divisor());
        self.config().local_index(key.group())?;
        Ok(key)
    }

    /// The engine.
    pub fn engine(&self) -> &E {
        &self.engine
    }

    /// The engine's configuration.
    pub fn config(&self) -> &EngineConfig {
        self.engine.config()
    }

    /// The key groups this instance owns.
    pub fn key_group_range(&self) -> KeyGroupRange {
        self.config().key_group_range()
    }

    /// The clock TTL reads.
    pub fn clock(&self) -> &SharedClock {
        self.config().clock()
    }

    /// The metadata of every registered state, sorted by name.
    pub fn registered_states(&self) -> Vec<StateMeta> {
        let mut metas: Vec<StateMeta> = self
            .states
            .lock()
            .values()
            .map(|r| r.meta.clone())
            .collect();
        metas.sort_by(|a, b| a.name.cmp(&b.name));
        metas
    }

    /// Returns the table registered under `meta.name`, creating it on first registration.
    /// A second registration must match the first exactly (kind, codecs, TTL, Rust types).
    fn table<T: Clone + Send + Sync + 'static>(
        &self,
        meta: StateMeta,
        create: impl FnOnce(&E, &StateMeta) -> Result<T>,
    ) -> Result<T> {
        if let Some(ttl) = &meta.ttl {
            ttl.validate()?;
        }
        let mut states = self.states.lock();
        if let Some(existing) = states.get(&meta.name) {
            if let Some((field, had, asked)) = existing.meta.first_difference(&meta) {
                return Err(Error::IncompatibleRegistration {
                    name: meta.name,
                    field,
                    existing: had,
                    requested: asked,
                });
            }
            // Same codec ids but other Rust types (say `usize` and `u64`): refuse as well.
            return existing.table.downcast_ref::<T>().cloned().ok_or_else(|| {
                Error::IncompatibleRegistration {
                    name: meta.name.clone(),
                    field: "Rust type",
                    existing: "another type with the same codec".into(),
                    requested: std::any::type_name::<T>().into(),
                }
            });
        }
        let table = create(&self.engine, &meta)?;
        tracing::debug!(state = %meta.name, kind = %meta.kind, engine = self.engine.name(), "registered state");
        states.insert(
            meta.name.clone(),
            Registered {
                meta,
                table: Box::new(table.clone()),
            },
        );
        Ok(table)
    }

    fn core<T: ?Sized, X>(
        &self,
        desc: &impl StateDescriptor,
        table: Arc<T>,
        extra: X,
    ) -> Core<T, X> {
        Core {
            name: desc.name().into(),
            table,
            ttl: desc
                .ttl()
                .map(|c| TtlPolicy::new(c, self.config().engine_clock().clone())),
            range: self.key_group_range(),
            extra,
        }
    }

    /// The timer service `name` with namespace type `N`, created on first use. Asking again
    /// with another namespace type is a typed error.
    ///
    /// # Errors
    ///
    /// [`Error::IncompatibleRegistration`](crate::Error::IncompatibleRegistration) for a
    /// service created before with another namespace type, or restored with other key or
    /// namespace codecs; the engine's failures to set up its store.
    pub fn timer_service<N: Namespace>(&self, name: &str) -> Result<Arc<TimerService<K, N>>> {
        let mut timers = self.timers.lock();
        if let Some(existing) = timers.get(name) {
            return existing
                .typed
                .downcast_ref::<Arc<TimerService<K, N>>>()
                .cloned()
                .ok_or_else(|| Error::IncompatibleRegistration {
                    name: name.to_owned(),
                    field: "timer namespace",
                    existing: "another type".into(),
                    requested: std::any::type_name::<N>().into(),
                });
        }
        let meta = TimerMeta {
            name: name.to_owned(),
            key_codec: K::codec_id(),
            namespace_codec: N::codec_id(),
        };
        let service = Arc::new(match self.engine.timer_store(&meta)? {
            Some(store) => TimerService::<K, N>::with_store(name, self.config(), store),
            None => {
                let service = TimerService::<K, N>::new(name, self.config());
                // Timers the engine holds in its own files for this service (a native restore
                // of a checkpoint that kept them there), while it now keeps timers on the heap:
                // they move to the heap, checked against the codecs recorded with them.
                if let Some(resident) = self.engine.resident_timer_store(name)? {
                    let recorded = self
                        .engine
                        .resident_timer_services()?
                        .into_iter()
                        .find_map(|(n, m)| (n == name).then_some(m))
                        .flatten();
                    if let Some(recorded) = recorded.filter(|r| *r != meta) {
                        return Err(incompatible_timers(&recorded, &meta));
                    }
                    let moved = service.absorb(resident)?;
                    tracing::info!(
                        service = name,
                        moved,
                        "timers moved from the engine's files to the heap"
                    );
                }
                service
            }
        });
        let parked = self.restored_timers.lock().remove(name);
        if let Some(parked) = parked {
            if parked.meta != meta {
                let err = incompatible_timers(&parked.meta, &meta);
                self.restored_timers.lock().insert(name.to_owned(), parked);
                return Err(err);
            }
            service.restore(&parked)?;
        }
        timers.insert(
            name.to_owned(),
            RegisteredTimers {
                typed: Box::new(service.clone()),
                snapshotter: service.clone(),
            },
        );
        Ok(service)
    }

    /// Every timer service's timers (created or restored and not created yet), for a
    /// snapshot.
    /// Services whose timers live in the engine's files are left out of native checkpoints
    /// (the engine's files carry them), not out of savepoints.
    fn snapshot_timers(&self, mode: SnapshotMode) -> Result<TimersSnapshot> {
        let range = self.key_group_range();
        let savepoint = mode == SnapshotMode::Savepoint;
        let mut by_name: BTreeMap<String, ServiceTimers> = BTreeMap::new();
        let created: Vec<String> = {
            let timers = self.timers.lock();
            for t in timers.values() {
                if savepoint || !t.snapshotter.in_engine_files() {
                    let s = t.snapshotter.snapshot()?;
                    merge_service(&mut by_name, s)?;
                }
            }
            timers.keys().cloned().collect()
        };
        for r in self.restored_timers.lock().values() {
            let mut domains: [Vec<BTreeSet<(u64, TimerId)>>; 2] = [
                vec![BTreeSet::new(); range.len()],
                vec![BTreeSet::new(); range.len()],
            ];
            for (d, timers) in r.timers.iter().enumerate() {
                for (group, ts, id) in timers {
                    if let (Some(i), Some(domain)) = (range.index_of(*group), domains.get_mut(d))
                        && let Some(g) = domain.get_mut(i)
                    {
                        g.insert((*ts, id.clone()));
                    }
                }
            }
            let domains = domains.map(|groups| groups.into_iter().map(Arc::new).collect());
            merge_service(
                &mut by_name,
                ServiceTimers {
                    meta: r.meta.clone(),
                    domains,
                },
            )?;
        }
        // A savepoint leaves no engine files behind: timers the engine holds for services not
        // created in this process (restored natively, created later if ever) go in too.
        if savepoint {
            for (name, meta) in self.engine.resident_timer_services()? {
                if created.contains(&name) {
                    continue;
                }
                let Some(store) = self.engine.resident_timer_store(&name)? else {
                    continue;
                };
                if store.len(0) + store.len(1) == 0 {
                    continue;
                }
                let meta = meta.ok_or_else(|| CheckpointError::Unregistered {
                    state: format!("timer service {name}"),
                })?;
                let copy = |d: usize| {
                    (0..range.len())
                        .map(|i| store.group(d, i))
                        .collect::<Result<Vec<_>>>()
                };
                let domains = [copy(0)?, copy(1)?];
                merge_service(&mut by_name, ServiceTimers { meta, domains })?;
            }
        }
        Ok(TimersSnapshot {
            range,
            services: by_name.into_values().collect(),
        })
    }

    /// Registers (or looks up) a value state.
    ///
    /// # Errors
    ///
    /// The name registered before with another kind, codecs, TTL or Rust types
    /// ([`Error::IncompatibleRegistration`](crate::Error::IncompatibleRegistration)), an
    /// invalid TTL ([`ConfigError::ZeroTtl`](crate::ConfigError::ZeroTtl)), restored state of
    /// that name that the registration does not match or cannot decode, the engine's failures
    /// (RocksDB's own errors).
    pub fn value_state<V: StateValue, N: Namespace>(
        &self,
        desc: &ValueStateDescriptor<V, N>,
    ) -> Result<ValueState<K, V, N>> {
        let table = self.table(meta::<K, N, V>(desc, None), |e, m| {
            e.value_table::<K, N, V>(m)
        })?;
        Ok(ValueState {
            core: self.core(desc, table, ()),
        })
    }

    /// Registers (or looks up) a list state.
    ///
    /// # Errors
    ///
    /// The name registered before with another kind, codecs, TTL or Rust types
    /// ([`Error::IncompatibleRegistration`](crate::Error::IncompatibleRegistration)), an
    /// invalid TTL ([`ConfigError::ZeroTtl`](crate::ConfigError::ZeroTtl)), restored state of
    /// that name that the registration does not match or cannot decode, the engine's failures
    /// (RocksDB's own errors).
    pub fn list_state<E2: StateValue, N: Namespace>(
        &self,
        desc: &ListStateDescriptor<E2, N>,
    ) -> Result<ListState<K, E2, N>> {
        let table = self.table(meta::<K, N, E2>(desc, None), |e, m| {
            e.list_table::<K, N, E2>(m)
        })?;
        Ok(ListState {
            core: self.core(desc, table, ()),
        })
    }

    /// Registers (or looks up) a map state.
    ///
    /// # Errors
    ///
    /// The name registered before with another kind, codecs, TTL or Rust types
    /// ([`Error::IncompatibleRegistration`](crate::Error::IncompatibleRegistration)), an
    /// invalid TTL ([`ConfigError::ZeroTtl`](crate::ConfigError::ZeroTtl)), restored state of
    /// that name that the registration does not match or cannot decode, the engine's failures
    /// (RocksDB's own errors).
    pub fn map_state<UK: MapKey, UV: StateValue, N: Namespace>(
        &self,
        desc: &MapStateDescriptor<UK, UV, N>,
    ) -> Result<MapState<K, UK, UV, N>> {
        let meta = meta::<K, N, UV>(desc, Some(UK::codec_id()));
        let table = self.table(meta, |e, m| e.map_table::<K, N, UK, UV>(m))?;
        Ok(MapState {
            core: self.core(desc, table, ()),
        })
    }

    /// Registers (or looks up) a reducing state.
    ///
    /// # Errors
    ///
    /// The name registered before with another kind, codecs, TTL or Rust types
    /// ([`Error::IncompatibleRegistration`](crate::Error::IncompatibleRegistration)), an
    /// invalid TTL ([`ConfigError::ZeroTtl`](crate::ConfigError::ZeroTtl)), restored state of
    /// that name that the registration does not match or cannot decode, the engine's failures
    /// (RocksDB's own errors).
    pub fn reducing_state<V: StateValue, N: Namespace>(
        &self,
        desc: &ReducingStateDescriptor<V, N>,
    ) -> Result<ReducingState<K, V, N>> {
        let table = self.table(meta::<K, N, V>(desc, None), |e, m| {
            e.value_table::<K, N, V>(m)
        })?;
        Ok(ReducingState {
            core: self.core(desc, table, desc.reduce.clone()),
        })
    }

    /// Registers (or looks up) an aggregating state.
    ///
    /// # Errors
    ///
    /// The name registered before with another kind, codecs, TTL or Rust types
    /// ([`Error::IncompatibleRegistration`](crate::Error::IncompatibleRegistration)), an
    /// invalid TTL ([`ConfigError::ZeroTtl`](crate::ConfigError::ZeroTtl)), restored state of
    /// that name that the registration does not match or cannot decode, the engine's failures
    /// (RocksDB's own errors).
    pub fn aggregating_state<F: AggregateFunction, N: Namespace>(
        &self,
        desc: &AggregatingStateDescriptor<F, N>,
    ) -> Result<AggregatingState<K, F, N>> {
        let table = self.table(meta::<K, N, F::Acc>(desc, None), |e, m| {
            e.value_table::<K, N, F::Acc>(m)
        })?;
        Ok(AggregatingState {
            core: self.core(desc, table, desc.function.clone()),
        })
    }
}

impl<K: StateKey, E: Engine> KeyedStateBackend<K, E> {
    /// Takes checkpoint `id` into `store`: the engine's synchronous part runs now; the upload
    /// and the commit run on a background thread while processing continues. `offsets` (for
    /// example the input position this state reflects) are stored in the manifest and come
    /// back on restore. On any failure the attempt is aborted and leaves nothing behind.
    ///
    /// # Errors
    ///
    /// The synchronous part failed:
    /// [`CheckpointError::Protocol`](crate::CheckpointError::Protocol) for an id not above
    /// every completed one or while another checkpoint of `store` is in flight, or the engine's
    /// snapshot failed. Failures of the background part come from [`PendingCheckpoint::wait`].
    pub fn checkpoint(
        &self,
        store: &Arc<CheckpointStore>,
        id: u64,
        offsets: &[(&str, u64)],
    ) -> Result<PendingCheckpoint> {
        self.snapshot_into(store, id, offsets, SnapshotMode::Checkpoint)
    }

    /// Like [`checkpoint`](Self::checkpoint), in the given mode ([`SnapshotMode::Full`] copies
    /// every file; [`SnapshotMode::Savepoint`] writes the canonical format either engine can
    /// restore).
    ///
    /// # Errors
    ///
    /// As [`checkpoint`](Self::checkpoint); a RocksDB savepoint also refuses while a restored
    /// state is not registered again.
    pub fn snapshot_into(
        &self,
        store: &Arc<CheckpointStore>,
        id: u64,
        offsets: &[(&str, u64)],
        mode: SnapshotMode,
    ) -> Result<PendingCheckpoint> {
        store.begin(id)?;
        // The synchronous part: the engine's, then a copy of the timers.
        let prepared = self
            .engine
            .snapshot(mode)
            .and_then(|job| Ok((job, self.snapshot_timers(mode)?)));
        let (job, timers) = match prepared {
            Ok(p) => p,
            Err(e) => {
                let _ = store.abort(id);
                return Err(e);
            }
        };
        let offsets = offsets.iter().map(|(n, o)| ((*n).to_owned(), *o)).collect();
        PendingCheckpoint::spawn(store.clone(), id, job, timers, offsets)
    }
}

/// The error for a timer service asked for with other codecs than its timers have.
fn incompatible_timers(existing: &TimerMeta, requested: &TimerMeta) -> Error {
    Error::IncompatibleRegistration {
        name: requested.name.clone(),
        field: "timer key / namespace codecs",
        existing: format!("{} / {}", existing.key_codec, existing.namespace_codec),
        requested: format!("{} / {}", requested.key_codec, requested.namespace_codec),
    }
}

/// Adds `s` to the snapshot's services: one entry per name (the manifest's timer list has
/// unique names), timers of the same service from two places joined (sets: in order, once).
fn merge_service(by_name: &mut BTreeMap<String, ServiceTimers>, s: ServiceTimers) -> Result<()> {
    match by_name.entry(s.meta.name.clone()) {
        std::collections::btree_map::Entry::Vacant(v) => {
            v.insert(s);
        }
        std::collections::btree_map::Entry::Occupied(mut o) => {
            let known = o.get_mut();
            if known.meta != s.meta {
                return Err(incompatible_timers(&known.meta, &s.meta));
            }
            for (mine, theirs) in known.domains.iter_mut().zip(s.domains) {
                for (g, more) in mine.iter_mut().zip(theirs) {
                    if g.is_empty() {
                        *g = more;
                    } else if !more.is_empty() {
                        Arc::make_mut(g).extend(more.iter().cloned());
                    }
                }
            }
        }
    }
    Ok(())
}

impl<K, E: Engine> fmt::Debug for KeyedStateBackend<K, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<String> = self.states.lock().keys().cloned().collect();
        f.debug_struct("KeyedStateBackend")
            .field("key", &std::any::type_name::<K>())
            .field("engine", &self.engine)
            .field("states", &names)
            .finish()
    }
}
