//! Time-to-live: configuration, the stamp stored with every value, and the expiry predicate.
//!
//! Every stored value, list element and map entry carries the processing time of its last
//! access ([`Stamped::last_access`], milliseconds). An entry is **expired** when
//! `last_access + ttl <= now` (saturating, so a huge TTL never wraps); written at `t` with a TTL
//! of 100 ms it is visible at `t + 99` and expired at `t + 100`, as in Flink.
//!
//! ```
//! use keyed_state::ttl::{StateVisibility, TtlConfig, UpdateType};
//! use std::time::Duration;
//! let cfg = TtlConfig::new(Duration::from_secs(24 * 3600))
//!     .with_update(UpdateType::OnReadAndWrite)
//!     .with_visibility(StateVisibility::ReturnExpiredIfNotCleanedUp);
//! assert_eq!(cfg.ttl_millis(), 86_400_000);
//! ```

use std::time::Duration;

use crate::clock::EngineClock;
use crate::error::ConfigError;

/// When the last-access stamp is refreshed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum UpdateType {
    /// On creation and on every write (the default).
    #[default]
    OnCreateAndWrite,
    /// On every read as well.
    OnReadAndWrite,
}

/// Whether an expired value that was not yet removed may still be returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum StateVisibility {
    /// Expired values are never returned (the default).
    #[default]
    NeverReturnExpired,
    /// An expired value is returned once, by the read that then removes it.
    ReturnExpiredIfNotCleanedUp,
}

/// The default number of entries the heap engine's incremental cleanup visits per state access.
pub const DEFAULT_CLEANUP_PER_ACCESS: usize = 5;

/// TTL configuration of one state.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TtlConfig {
    ttl: Duration,
    update: UpdateType,
    visibility: StateVisibility,
    cleanup_per_access: usize,
}

impl TtlConfig {
    /// Entries expire `ttl` after their last access; defaults: [`UpdateType::OnCreateAndWrite`],
    /// [`StateVisibility::NeverReturnExpired`], incremental cleanup of
    /// [`DEFAULT_CLEANUP_PER_ACCESS`] entries per access.
    pub fn new(ttl: Duration) -> Self {
        TtlConfig {
            ttl,
            update: UpdateType::default(),
            visibility: StateVisibility::default(),
            cleanup_per_access: DEFAULT_CLEANUP_PER_ACCESS,
        }
    }

    /// Sets when the stamp is refreshed.
    #[must_use]
    pub fn with_update(mut self, update: UpdateType) -> Self {
        self.update = update;
        self
    }

    /// Sets whether expired values may be returned.
    #[must_use]
    pub fn with_visibility(mut self, visibility: StateVisibility) -> Self {
        self.visibility = visibility;
        self
    }

    /// Sets how many entries incremental cleanup visits per state access (0 turns it off;
    /// expired entries are then only removed when read). The heap engine pays this in steps:
    /// every 16th access of a state visits the entries of the 16, in one sweep.
    #[must_use]
    pub fn with_cleanup_per_access(mut self, entries: usize) -> Self {
        self.cleanup_per_access = entries;
        self
    }

    /// The time to live.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The time to live in whole milliseconds (saturating at `u64::MAX`).
    pub fn ttl_millis(&self) -> u64 {
        u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX)
    }

    /// When the stamp is refreshed.
    pub fn update(&self) -> UpdateType {
        self.update
    }

    /// Whether expired values may be returned.
    pub fn visibility(&self) -> StateVisibility {
        self.visibility
    }

    /// Entries visited by incremental cleanup per access.
    pub fn cleanup_per_access(&self) -> usize {
        self.cleanup_per_access
    }

    /// Checks the configuration (a TTL below 1 ms is rejected).
    ///
    /// # Errors
    ///
    /// [`ConfigError::ZeroTtl`] for a TTL under one millisecond.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.ttl_millis() == 0 {
            Err(ConfigError::ZeroTtl)
        } else {
            Ok(())
        }
    }
}

/// A stored value with the processing time of its last access (0 when the state has no TTL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamped<V> {
    /// Last access, milliseconds since the epoch.
    pub last_access: u64,
    /// The user's value.
    pub value: V,
}

impl<V> Stamped<V> {
    /// Pairs `value` with its stamp.
    pub fn new(last_access: u64, value: V) -> Self {
        Stamped { last_access, value }
    }
}

/// The expiry predicate: `last_access + ttl <= now`, saturating.
#[inline]
pub fn is_expired(last_access: u64, ttl_millis: u64, now: u64) -> bool {
    last_access.saturating_add(ttl_millis) <= now
}

/// A state's TTL at run time: its configuration and the clock it reads.
#[derive(Debug, Clone)]
pub(crate) struct TtlPolicy {
    pub(crate) ttl_millis: u64,
    pub(crate) update: UpdateType,
    pub(crate) visibility: StateVisibility,
    pub(crate) clock: EngineClock,
}

impl TtlPolicy {
    pub(crate) fn new(config: &TtlConfig, clock: EngineClock) -> Self {
        TtlPolicy {
            ttl_millis: config.ttl_millis(),
            update: config.update(),
            visibility: config.visibility(),
            clock,
        }
    }

    #[inline]
    pub(crate) fn now(&self) -> u64 {
        self.clock.now_millis()
    }

    pub(crate) fn expired(&self, last_access: u64, now: u64) -> bool {
        is_expired(last_access, self.ttl_millis, now)
    }

    pub(crate) fn refresh_on_read(&self) -> bool {
        self.update == UpdateType::OnReadAndWrite
    }

    /// Whether a read leaves values with these stamps as they are: none re-stamped on read,
    /// none expired (so a borrowing read may lend them as stored). The clock is read only
    /// when the stamps decide.
    pub(crate) fn read_keeps(&self, stamps: impl IntoIterator<Item = u64>) -> bool {
        if self.refresh_on_read() {
            return false;
        }
        let now = self.now();
        stamps.into_iter().all(|stamp| !self.expired(stamp, now))
    }

    pub(crate) fn returns_expired(&self) -> bool {
        self.visibility == StateVisibility::ReturnExpiredIfNotCleanedUp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_is_inclusive_and_saturating() {
        assert!(!is_expired(0, 100, 99));
        assert!(is_expired(0, 100, 100));
        assert!(!is_expired(10, u64::MAX, 50));
        assert!(is_expired(u64::MAX - 1, u64::MAX, u64::MAX));
    }

    #[test]
    fn zero_ttl_is_rejected() {
        assert_eq!(
            TtlConfig::new(Duration::from_micros(999)).validate(),
            Err(ConfigError::ZeroTtl)
        );
        assert!(TtlConfig::new(Duration::from_millis(1)).validate().is_ok());
    }
}
