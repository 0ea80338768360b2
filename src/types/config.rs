//! [`EngineConfig`]: the key-group scheme and the clock every engine, view and timer service of
//! one backend instance shares.

use std::fmt;

use crate::clock::{EngineClock, SharedClock};
use crate::error::{ConfigError, Error, Result};
use crate::key::Key;
use crate::key_group::{DEFAULT_MAX_PARALLELISM, KeyGroupDivisor, KeyGroupRange};

/// What every engine is configured with: the key-group scheme and the clock.
#[derive(Clone)]
pub struct EngineConfig {
    /// `max_parallelism` (kept once, here) and its divisor, for resolving keys ([`Key`])
    /// without a division.
    divisor: KeyGroupDivisor,
    range: KeyGroupRange,
    clock: EngineClock,
}

impl EngineConfig {
    /// `max_parallelism` key groups, all owned by this instance, on the
    /// wall clock at tick resolution ([`CoarseClock`](crate::clock::CoarseClock)).
    ///
    /// # Errors
    ///
    /// [`ConfigError::MaxParallelism`](crate::ConfigError::MaxParallelism) outside `1..=32768`.
    pub fn new(max_parallelism: u32) -> Result<Self, ConfigError> {
        Ok(EngineConfig {
            range: KeyGroupRange::all(max_parallelism)?,
            divisor: KeyGroupDivisor::new(max_parallelism)?,
            clock: EngineClock::coarse(),
        })
    }

    /// Owns only `range` (which must fit `max_parallelism`).
    ///
    /// # Errors
    ///
    /// [`ConfigError::RangeOutsideMaxParallelism`](crate::ConfigError::RangeOutsideMaxParallelism)
    /// for a range past `max_parallelism`.
    pub fn with_key_group_range(mut self, range: KeyGroupRange) -> Result<Self, ConfigError> {
        range.check_fits(self.max_parallelism())?;
        self.range = range;
        Ok(self)
    }

    /// Reads time from `clock` (a [`ManualClock`](crate::clock::ManualClock) in tests).
    #[must_use]
    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.clock = EngineClock::shared(clock);
        self
    }

    /// The number of key groups.
    #[inline]
    pub fn max_parallelism(&self) -> u32 {
        self.divisor.max_parallelism()
    }

    /// `max_parallelism`'s divisor.
    #[inline]
    pub(crate) fn key_group_divisor(&self) -> KeyGroupDivisor {
        self.divisor
    }

    /// The key groups this instance owns.
    pub fn key_group_range(&self) -> KeyGroupRange {
        self.range
    }

    /// The clock.
    pub fn clock(&self) -> &SharedClock {
        self.clock.as_shared()
    }

    /// The clock as engines read it (the default one inline).
    pub(crate) fn engine_clock(&self) -> &EngineClock {
        &self.clock
    }

    /// The time on the clock, in milliseconds since the Unix epoch.
    #[inline]
    pub(crate) fn now_millis(&self) -> u64 {
        self.clock.now_millis()
    }

    /// Checks that `key` was resolved for this configuration and that its group is owned here;
    /// returns the group's index within the range.
    ///
    /// # Errors
    ///
    /// [`Error::MaxParallelismMismatch`](crate::Error::MaxParallelismMismatch) for a key
    /// resolved for another `max_parallelism`,
    /// [`Error::KeyGroupOutOfRange`](crate::Error::KeyGroupOutOfRange) for a group outside the
    /// range.
    #[inline]
    pub fn group_index<K>(&self, key: &Key<K>) -> Result<usize> {
        self.local_index(key.group()).and_then(|i| {
            if key.max_parallelism() == self.max_parallelism() {
                Ok(i)
            } else {
                Err(Error::MaxParallelismMismatch {
                    key: key.max_parallelism(),
                    backend: self.max_parallelism(),
                })
            }
        })
    }

    /// The index of `group` within the range, or a typed error.
    ///
    /// # Errors
    ///
    /// [`Error::KeyGroupOutOfRange`](crate::Error::KeyGroupOutOfRange) for a group outside the
    /// range.
    #[inline]
    pub fn local_index(&self, group: u16) -> Result<usize> {
        // Built on a miss only: `ok_or(error)` built it on every call and dropped it on every
        // hit, two dozen instructions per access (DESIGN 9, "Key resolution").
        match self.range.index_of(group) {
            Some(index) => Ok(index),
            None => Err(Error::KeyGroupOutOfRange {
                group,
                range: self.range,
            }),
        }
    }
}

// The default configuration below relies on this.
const _: () = assert!(DEFAULT_MAX_PARALLELISM >= 1 && DEFAULT_MAX_PARALLELISM <= 1 << 15);
#[expect(
    clippy::cast_possible_truncation,
    reason = "DEFAULT_MAX_PARALLELISM ≤ 2^15, asserted above"
)]
const DEFAULT_LAST_GROUP: u16 = (DEFAULT_MAX_PARALLELISM - 1) as u16;

impl Default for EngineConfig {
    /// [`DEFAULT_MAX_PARALLELISM`] key groups, all owned, on
    /// [`CoarseClock`](crate::clock::CoarseClock).
    fn default() -> Self {
        EngineConfig {
            divisor: KeyGroupDivisor::DEFAULT,
            range: KeyGroupRange::new(0, DEFAULT_LAST_GROUP),
            clock: EngineClock::coarse(),
        }
    }
}

impl fmt::Debug for EngineConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EngineConfig")
            .field("max_parallelism", &self.max_parallelism())
            .field("key_group_range", &self.range)
            .field("clock", self.clock.as_shared())
            .finish()
    }
}
