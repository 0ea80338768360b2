//! Where a timer service keeps its timers: [`TimerStore`], with the in-memory
//! [`HeapTimerStore`]; the RocksDB engine can supply a store of its own (timers in a column
//! family, see `backend/rocksdb/timers.rs`).

use super::queue::{TimerId, TimerQueue};
use crate::error::Result;

/// The timers of both domains (0 event time, 1 processing time) over a key-group range;
/// `index` is a key group's index in the range. An engine may supply one through
/// [`Engine::timer_store`](crate::Engine::timer_store); the default keeps timers on the heap.
pub trait TimerStore: Send {
    /// Adds a timer; `false` when it was there already.
    fn add(&mut self, domain: usize, index: usize, ts: u64, id: TimerId) -> Result<bool>;
    /// Removes a timer; `false` when it was not there.
    fn remove(&mut self, domain: usize, index: usize, ts: u64, id: &TimerId) -> Result<bool>;
    /// The earliest pending timestamp of `domain`.
    fn peek(&self, domain: usize) -> Option<u64>;
    /// Removes and returns the earliest timer of `domain` if due at `upto`.
    fn pop_due(&mut self, domain: usize, upto: u64) -> Result<Option<(usize, u64, TimerId)>>;
    /// Pending timers of `domain`.
    fn len(&self, domain: usize) -> u64;
    /// The timers of one key group of `domain`, in order.
    fn group(&self, domain: usize, index: usize) -> Result<Vec<(u64, TimerId)>>;
    /// Whether the timers are part of the engine's own checkpoint files (then a native
    /// checkpoint needs no timers file).
    fn in_engine_files(&self) -> bool;
}

/// Timers on the heap: a [`TimerQueue`] per domain.
#[derive(Debug, Clone)]
pub(crate) struct HeapTimerStore {
    domains: [TimerQueue; 2],
}

impl HeapTimerStore {
    /// Empty, over `groups` key groups.
    pub(crate) fn new(groups: usize) -> Self {
        HeapTimerStore {
            domains: [TimerQueue::new(groups), TimerQueue::new(groups)],
        }
    }
}

impl TimerStore for HeapTimerStore {
    fn add(&mut self, domain: usize, index: usize, ts: u64, id: TimerId) -> Result<bool> {
        Ok(self.domains[domain].add(index, ts, id))
    }
    fn remove(&mut self, domain: usize, index: usize, ts: u64, id: &TimerId) -> Result<bool> {
        Ok(self.domains[domain].remove(index, ts, id))
    }
    fn peek(&self, domain: usize) -> Option<u64> {
        self.domains[domain].peek()
    }
    fn pop_due(&mut self, domain: usize, upto: u64) -> Result<Option<(usize, u64, TimerId)>> {
        Ok(self.domains[domain].pop_due(upto))
    }
    fn len(&self, domain: usize) -> u64 {
        self.domains[domain].len()
    }
    fn group(&self, domain: usize, index: usize) -> Result<Vec<(u64, TimerId)>> {
        Ok(self.domains[domain].group(index).cloned().collect())
    }
    fn in_engine_files(&self) -> bool {
        false
    }
}
