//! Timers: event-time and processing-time timers per key and namespace, partitioned by key
//! group like all other state.
//!
//! A [`TimerService`] holds two [`TimeDomain`]s. A timer is the triple (key, namespace,
//! timestamp): registering it twice holds one timer, deleting an absent one does nothing.
//! [`advance_watermark`](TimerService::advance_watermark) fires every event-time timer with
//! `timestamp <= watermark`, [`advance_processing_time`](TimerService::advance_processing_time)
//! every processing-time timer with `timestamp <= now`, in timestamp order; ties fire in the
//! order of the timers' encoded (key, namespace) bytes, then of key group — stable and
//! independent of registration order. The callback runs without any lock held, so it may
//! register and delete timers, and a timer it registers that is already due fires in the same
//! advance.
//!
//! ```
//! use keyed_state::{EngineConfig, HeapEngine, KeyedStateBackend};
//! # fn main() -> Result<(), keyed_state::Error> {
//! let backend = KeyedStateBackend::<String>::new(HeapEngine::new(EngineConfig::default()));
//! let sessions = backend.timer_service::<()>("session-end")?;
//! let alice = backend.key("alice".to_string())?;
//! sessions.register_event_time_timer(&alice, &(), 30 * 60_000)?;
//! sessions.delete_event_time_timer(&alice, &(), 30 * 60_000)?; // the next event came
//! sessions.register_event_time_timer(&alice, &(), 45 * 60_000)?;
//! let mut fired = Vec::new();
//! sessions.advance_watermark(60 * 60_000, |t| {
//!     fired.push((t.key, t.timestamp));
//!     Ok(())
//! })?;
//! assert_eq!(fired, vec![("alice".to_string(), 45 * 60_000)]);
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::marker::PhantomData;

use parking_lot::Mutex;

use crate::backend::TimerStore;
use crate::backend::heap::HeapTimerStore;
use crate::checkpoint::format::TimerMeta;
use crate::checkpoint::format::timers::{RestoredTimers, ServiceTimers};
use crate::error::{CodecError, Error, Result};
use crate::key::Key;
use crate::key_group::key_group_for_bytes;
use crate::types::{EngineConfig, Namespace, StateKey, split_timer_id, timer_id};

/// Which clock a timer follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimeDomain {
    /// Fires when the watermark reaches the timestamp.
    EventTime,
    /// Fires when processing time (the engine's clock) reaches the timestamp.
    ProcessingTime,
}

impl TimeDomain {
    fn index(self) -> usize {
        match self {
            TimeDomain::EventTime => 0,
            TimeDomain::ProcessingTime => 1,
        }
    }
}

/// A fired timer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timer<K, N = ()> {
    /// When it was due.
    pub timestamp: u64,
    /// The key it was registered for.
    pub key: K,
    /// The namespace it was registered for.
    pub namespace: N,
    /// Its key group.
    pub key_group: u16,
}

/// The timers of one operator instance. See the module documentation.
pub struct TimerService<K, N = ()> {
    name: String,
    config: EngineConfig,
    store: Mutex<Box<dyn TimerStore>>,
    _types: PhantomData<fn() -> (K, N)>,
}

impl<K: StateKey, N: Namespace> TimerService<K, N> {
    /// An empty service named `name` (its name in checkpoints) for `config`'s key groups,
    /// keeping its timers on the heap.
    pub fn new(name: impl Into<String>, config: &EngineConfig) -> Self {
        let groups = config.key_group_range().len();
        Self::with_store(name, config, Box::new(HeapTimerStore::new(groups)))
    }

    /// A service over `store` (the engine's choice of where timers live).
    pub(crate) fn with_store(
        name: impl Into<String>,
        config: &EngineConfig,
        store: Box<dyn TimerStore>,
    ) -> Self {
        TimerService {
            name: name.into(),
            config: config.clone(),
            store: Mutex::new(store),
            _types: PhantomData,
        }
    }

    /// The service's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Registers a timer; `false` when the same (key, namespace, timestamp) was registered.
    /// A key of a group this instance does not own is a typed error.
    ///
    /// # Errors
    ///
    /// A key of a key group this instance does not own
    /// ([`Error::KeyGroupOutOfRange`],
    /// [`Error::MaxParallelismMismatch`]); the timer
    /// store's failures (RocksDB's, when timers live there).
    pub fn register(&self, domain: TimeDomain, key: &Key<K>, ns: &N, ts: u64) -> Result<bool> {
        let index = self.config.group_index(key)?;
        let id = timer_id(key.bytes(), ns);
        self.store.lock().add(domain.index(), index, ts, id)
    }

    /// Deletes a timer; `false` (and no error) when it did not exist.
    ///
    /// # Errors
    ///
    /// A key of a key group this instance does not own
    /// ([`Error::KeyGroupOutOfRange`],
    /// [`Error::MaxParallelismMismatch`]); the timer
    /// store's failures (RocksDB's, when timers live there).
    pub fn delete(&self, domain: TimeDomain, key: &Key<K>, ns: &N, ts: u64) -> Result<bool> {
        let index = self.config.group_index(key)?;
        let id = timer_id(key.bytes(), ns);
        self.store.lock().remove(domain.index(), index, ts, &id)
    }

    /// Registers an event-time timer.
    ///
    /// # Errors
    ///
    /// A key of a key group this instance does not own
    /// ([`Error::KeyGroupOutOfRange`],
    /// [`Error::MaxParallelismMismatch`]); the timer
    /// store's failures (RocksDB's, when timers live there).
    pub fn register_event_time_timer(&self, key: &Key<K>, ns: &N, ts: u64) -> Result<()> {
        self.register(TimeDomain::EventTime, key, ns, ts).map(drop)
    }

    /// Deletes an event-time timer (a no-op when absent).
    ///
    /// # Errors
    ///
    /// A key of a key group this instance does not own
    /// ([`Error::KeyGroupOutOfRange`],
    /// [`Error::MaxParallelismMismatch`]); the timer
    /// store's failures (RocksDB's, when timers live there).
    pub fn delete_event_time_timer(&self, key: &Key<K>, ns: &N, ts: u64) -> Result<()> {
        self.delete(TimeDomain::EventTime, key, ns, ts).map(drop)
    }

    /// Registers a processing-time timer.
    ///
    /// # Errors
    ///
    /// A key of a key group this instance does not own
    /// ([`Error::KeyGroupOutOfRange`],
    /// [`Error::MaxParallelismMismatch`]); the timer
    /// store's failures (RocksDB's, when timers live there).
    pub fn register_processing_time_timer(&self, key: &Key<K>, ns: &N, ts: u64) -> Result<()> {
        self.register(TimeDomain::ProcessingTime, key, ns, ts)
            .map(drop)
    }

    /// Deletes a processing-time timer (a no-op when absent).
    ///
    /// # Errors
    ///
    /// A key of a key group this instance does not own
    /// ([`Error::KeyGroupOutOfRange`],
    /// [`Error::MaxParallelismMismatch`]); the timer
    /// store's failures (RocksDB's, when timers live there).
    pub fn delete_processing_time_timer(&self, key: &Key<K>, ns: &N, ts: u64) -> Result<()> {
        self.delete(TimeDomain::ProcessingTime, key, ns, ts)
            .map(drop)
    }

    /// The earliest pending timestamp of `domain`.
    pub fn next_timer(&self, domain: TimeDomain) -> Option<u64> {
        self.store.lock().peek(domain.index())
    }

    /// How many timers of `domain` are pending.
    pub fn pending(&self, domain: TimeDomain) -> u64 {
        self.store.lock().len(domain.index())
    }

    /// Fires every event-time timer with `timestamp <= watermark`, in order, calling
    /// `on_timer` for each (without any lock held); returns how many fired. An error from the
    /// callback stops the advance (the timers not yet fired stay pending).
    ///
    /// # Errors
    ///
    /// An error `on_timer` returns (the advance stops there; unfired timers stay pending), a
    /// stored timer that does not decode ([`Error::Decode`]), the timer
    /// store's failures.
    pub fn advance_watermark(
        &self,
        watermark: u64,
        on_timer: impl FnMut(Timer<K, N>) -> Result<()>,
    ) -> Result<u64> {
        self.fire(TimeDomain::EventTime, watermark, on_timer)
    }

    /// Fires every processing-time timer with `timestamp <= now`, like
    /// [`advance_watermark`](Self::advance_watermark).
    ///
    /// # Errors
    ///
    /// An error `on_timer` returns (the advance stops there; unfired timers stay pending), a
    /// stored timer that does not decode ([`Error::Decode`]), the timer
    /// store's failures.
    pub fn advance_processing_time(
        &self,
        now: u64,
        on_timer: impl FnMut(Timer<K, N>) -> Result<()>,
    ) -> Result<u64> {
        self.fire(TimeDomain::ProcessingTime, now, on_timer)
    }

    /// Fires the processing-time timers due at the engine clock's current time.
    ///
    /// # Errors
    ///
    /// An error `on_timer` returns (the advance stops there; unfired timers stay pending), a
    /// stored timer that does not decode ([`Error::Decode`]), the timer
    /// store's failures.
    pub fn fire_due_processing_timers(
        &self,
        on_timer: impl FnMut(Timer<K, N>) -> Result<()>,
    ) -> Result<u64> {
        let now = self.config.now_millis();
        self.advance_processing_time(now, on_timer)
    }

    fn fire(
        &self,
        domain: TimeDomain,
        upto: u64,
        mut on_timer: impl FnMut(Timer<K, N>) -> Result<()>,
    ) -> Result<u64> {
        let mut fired = 0;
        loop {
            // Pop one timer at a time and release the lock before the callback, which may
            // register or delete timers (including ones due in this advance).
            let popped = self.store.lock().pop_due(domain.index(), upto)?;
            let Some((index, ts, id)) = popped else {
                return Ok(fired);
            };
            let timer = self.decode(index, ts, &id)?;
            fired += 1;
            on_timer(timer)?;
        }
    }

    fn decode(&self, index: usize, ts: u64, id: &[u8]) -> Result<Timer<K, N>> {
        let decode = |source| Error::Decode {
            state: self.name.clone(),
            source,
        };
        let (key, ns) = split_timer_id(id).map_err(decode)?;
        let range = self.config.key_group_range();
        // A store hands back indexes of the range it was built for.
        let key_group = u16::try_from(index)
            .ok()
            .and_then(|i| range.start().checked_add(i))
            .filter(|g| range.contains(*g))
            .ok_or_else(|| {
                decode(CodecError::Invalid {
                    what: "timer",
                    reason: format!("key group index {index} outside {range}"),
                })
            })?;
        Ok(Timer {
            timestamp: ts,
            key: K::decode(key).map_err(decode)?,
            namespace: N::decode(ns).map_err(decode)?,
            key_group,
        })
    }
}

/// What checkpoints need from a timer service, whatever its types.
pub(crate) trait TimerSnapshotter: Send + Sync {
    /// A copy of every pending timer, per domain and key group.
    fn snapshot(&self) -> Result<ServiceTimers>;
    /// Whether the timers are in the engine's own checkpoint files.
    fn in_engine_files(&self) -> bool;
}

impl<K: StateKey, N: Namespace> TimerSnapshotter for TimerService<K, N> {
    fn in_engine_files(&self) -> bool {
        self.store.lock().in_engine_files()
    }

    fn snapshot(&self) -> Result<ServiceTimers> {
        let store = self.store.lock();
        let groups = self.config.key_group_range().len();
        let copy = |d: usize| {
            (0..groups)
                .map(|i| store.group(d, i))
                .collect::<Result<Vec<_>>>()
        };
        Ok(ServiceTimers {
            meta: self.meta(),
            domains: [copy(0)?, copy(1)?],
        })
    }
}

impl<K: StateKey, N: Namespace> TimerService<K, N> {
    /// The service's metadata in checkpoints.
    pub(crate) fn meta(&self) -> TimerMeta {
        TimerMeta {
            name: self.name.clone(),
            key_codec: K::codec_id(),
            namespace_codec: N::codec_id(),
        }
    }

    /// Moves every timer of `other` (a store over the same key groups) into this service's
    /// store, emptying `other`; returns how many moved.
    pub(crate) fn absorb(&self, mut other: Box<dyn TimerStore>) -> Result<u64> {
        let mut store = self.store.lock();
        let mut moved = 0;
        for domain in 0..2 {
            while let Some((index, ts, id)) = other.pop_due(domain, u64::MAX)? {
                store.add(domain, index, ts, id)?;
                moved += 1;
            }
        }
        Ok(moved)
    }

    /// Adds restored timers (of owned key groups only; each key's group is checked).
    pub(crate) fn restore(&self, restored: &RestoredTimers) -> Result<()> {
        let invalid = |reason: String| Error::Decode {
            state: self.name.clone(),
            source: CodecError::Invalid {
                what: "restored timer",
                reason,
            },
        };
        let max_parallelism = self.config.max_parallelism();
        let mut store = self.store.lock();
        for (domain, timers) in restored.timers.iter().enumerate() {
            for (group, ts, id) in timers {
                let (key, _) = split_timer_id(id).map_err(|e| invalid(e.to_string()))?;
                if key_group_for_bytes(key, max_parallelism) != *group {
                    return Err(invalid(format!(
                        "a key of another group in key group {group}"
                    )));
                }
                let index = self.config.local_index(*group)?;
                store.add(domain, index, *ts, id.clone())?;
            }
        }
        Ok(())
    }
}

impl<K, N> fmt::Debug for TimerService<K, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let store = self.store.lock();
        f.debug_struct("TimerService")
            .field("name", &self.name)
            .field("range", &self.config.key_group_range())
            .field("event_time_timers", &store.len(0))
            .field("processing_time_timers", &store.len(1))
            .field("in_engine_files", &store.in_engine_files())
            .finish()
    }
}
