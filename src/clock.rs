//! Injected time. No engine code reads the system clock directly: TTL, processing-time timers
//! and (later) the RocksDB compaction filter ask a [`Clock`], so tests and the simulator can
//! drive time with a [`ManualClock`].

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of processing time, in milliseconds since the Unix epoch.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current time in milliseconds.
    fn now_millis(&self) -> u64;
}

/// A clock shared between a backend, its states and the caller.
pub type SharedClock = Arc<dyn Clock>;

/// The wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_millis(&self) -> u64 {
        // A clock set before 1970 reads as 0 rather than failing.
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

/// A clock that moves only when told to; cheap to clone (clones share the time).
///
/// ```
/// use keyed_state::clock::{Clock, ManualClock};
/// use std::time::Duration;
/// let clock = ManualClock::new(1_000);
/// let view = clock.clone();
/// clock.advance(Duration::from_secs(2));
/// assert_eq!(view.now_millis(), 3_000);
/// ```
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    now: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock reading `start_millis`.
    pub fn new(start_millis: u64) -> Self {
        ManualClock {
            now: Arc::new(AtomicU64::new(start_millis)),
        }
    }

    /// Sets the time (it may go backwards; TTL then treats entries as younger).
    pub fn set(&self, millis: u64) {
        self.now.store(millis, Ordering::SeqCst);
    }

    /// Moves the time forward by `by` (saturating).
    pub fn advance(&self, by: Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.advance_millis(ms);
    }

    /// Moves the time forward by `ms` milliseconds (saturating).
    pub fn advance_millis(&self, ms: u64) {
        // fetch_update with a closure that always returns Some cannot fail.
        let _ = self
            .now
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |t| {
                Some(t.saturating_add(ms))
            });
    }

    /// This clock as a [`SharedClock`].
    pub fn shared(&self) -> SharedClock {
        Arc::new(self.clone())
    }
}

impl Clock for ManualClock {
    fn now_millis(&self) -> u64 {
        self.now.load(Ordering::SeqCst)
    }
}
