//! Where a timer service keeps its timers: [`TimerStore`], part of the engine contract. The
//! heap keeps them in ordered sets (`heap/timers.rs`); the RocksDB engine can keep them in a
//! column family (`rocksdb/timers.rs`).

use crate::error::Result;
use crate::types::{GroupTimers, TimerId};

/// The timers of both domains (0 event time, 1 processing time) over a key-group range;
/// `index` is a key group's index in the range. An engine may supply one through
/// [`Engine::timer_store`](crate::Engine::timer_store); the default keeps timers on the heap.
pub trait TimerStore: Send {
    /// Adds a timer; `false` when it was there already.
    ///
    /// # Errors
    ///
    /// The store's storage failures (RocksDB's, for timers kept there).
    fn add(&mut self, domain: usize, index: usize, ts: u64, id: TimerId) -> Result<bool>;
    /// Removes a timer; `false` when it was not there.
    ///
    /// # Errors
    ///
    /// The store's storage failures.
    fn remove(&mut self, domain: usize, index: usize, ts: u64, id: &TimerId) -> Result<bool>;
    /// The earliest pending timestamp of `domain`.
    fn peek(&self, domain: usize) -> Option<u64>;
    /// Removes and returns the earliest timer of `domain` if due at `upto`.
    ///
    /// # Errors
    ///
    /// The store's storage failures.
    fn pop_due(&mut self, domain: usize, upto: u64) -> Result<Option<(usize, u64, TimerId)>>;
    /// Pending timers of `domain`.
    fn len(&self, domain: usize) -> u64;
    /// The timers of one key group of `domain`, in order. A checkpoint's synchronous part
    /// calls this for every key group of the range with processing stopped: a store should
    /// hand out a shared set where it can (see [`GroupTimers`]) rather than copy.
    ///
    /// # Errors
    ///
    /// The store's storage failures.
    fn group(&self, domain: usize, index: usize) -> Result<GroupTimers>;
    /// Whether the timers are part of the engine's own checkpoint files (then a native
    /// checkpoint needs no timers file).
    fn in_engine_files(&self) -> bool;
}
