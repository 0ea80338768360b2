//! Injected time. No engine code reads the system clock directly: TTL, processing-time timers
//! and the RocksDB compaction filter ask a [`Clock`], so tests and the simulator can drive time
//! with a [`ManualClock`]. Engines default to [`CoarseClock`], the wall clock at the kernel
//! tick's resolution, because TTL states read the clock on every access.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of processing time, in milliseconds since the Unix epoch.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current time in milliseconds.
    fn now_millis(&self) -> u64;
}

/// A clock shared between a backend, its states and the caller.
pub type SharedClock = Arc<dyn Clock>;

/// The wall clock, read to the millisecond (`clock_gettime(CLOCK_REALTIME)`, about 35 ns here).
///
/// [`CoarseClock`], the default of [`EngineConfig`](crate::EngineConfig), reads the same clock
/// ten times cheaper at the kernel tick's resolution; this one is for a caller whose timers or
/// TTL must see every millisecond.
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

/// The wall clock at the kernel tick's resolution: on Linux `CLOCK_REALTIME_COARSE`, the time of
/// the last timer tick (a few milliseconds old: steps of 4-8 ms measured here); elsewhere the
/// same as [`SystemClock`].
///
/// The default clock of every engine. A TTL state reads the clock on every access, and even the
/// coarse clock's system call (a vDSO call, no kernel entry) cost a heap read with TTL about
/// 55 ns of its 150 in the benchmarks: the processor stops overlapping one access's cache miss
/// with the next access. So the first read starts one thread, `ks-coarse-clock`, that copies
/// the kernel's coarse clock into memory every millisecond, and every read is a load of that
/// copy. A read lags the kernel's coarse clock by at most that millisecond, more only while the
/// scheduler keeps the thread off every core. Where the thread cannot be started, every read
/// asks the kernel, as before. A child process forked without `exec` after the first read
/// inherits the copy but not the thread, so its coarse clock stands still: such a child should
/// give its engines a [`SystemClock`].
///
/// A TTL of minutes or days, and processing-time timers fired by polling, do not need
/// sub-tick precision. Both clocks read the same time and the coarse one never runs ahead of
/// the precise one: a processing-time timer fires up to a tick later than with
/// [`SystemClock`], never earlier, and an entry's age (stamped and judged on tick boundaries)
/// is off by less than a tick either way.
///
/// ```
/// use keyed_state::clock::{Clock, CoarseClock, SystemClock};
/// let coarse = CoarseClock.now_millis();
/// let precise = SystemClock.now_millis();
/// assert!(coarse <= precise && precise - coarse < 1_000);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct CoarseClock;

impl Clock for CoarseClock {
    #[inline]
    fn now_millis(&self) -> u64 {
        ticked_millis()
            .or_else(coarse_millis)
            .unwrap_or_else(|| SystemClock.now_millis())
    }
}

/// The kernel's coarse clock as of the ticker thread's last copy (see [`CoarseClock`]).
static TICKED: AtomicU64 = AtomicU64::new(0);
/// Whether the ticker thread runs; decided by the first read.
static TICKER: OnceLock<bool> = OnceLock::new();
/// How often the ticker thread copies the clock.
const TICK: Duration = Duration::from_millis(1);

/// The ticker's copy of the coarse clock, starting the ticker on the first call; `None` where
/// there is no coarse clock or no thread could be started.
#[inline]
fn ticked_millis() -> Option<u64> {
    let running = *TICKER.get_or_init(|| {
        let Some(now) = coarse_millis() else {
            return false;
        };
        // Stored before the thread starts, so no read ever sees the initial 0.
        TICKED.store(now, Ordering::Relaxed);
        std::thread::Builder::new()
            // At most 15 bytes: Linux cuts a thread's name there.
            .name("ks-coarse-clock".into())
            .spawn(|| {
                loop {
                    std::thread::sleep(TICK);
                    if let Some(now) = coarse_millis() {
                        TICKED.store(now, Ordering::Relaxed);
                    }
                }
            })
            .is_ok()
    });
    running.then(|| TICKED.load(Ordering::Relaxed))
}

/// `CLOCK_REALTIME_COARSE` in milliseconds, or `None` where it failed or reads before 1970.
#[cfg(any(target_os = "linux", target_os = "android"))]
#[inline]
fn coarse_millis() -> Option<u64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable `timespec` for the whole call, which writes only it;
    // the clock id is a constant the kernel knows (since Linux 2.6.32).
    #[expect(
        unsafe_code,
        reason = "clock_gettime has no safe wrapper in std or libc"
    )]
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &raw mut ts) };
    if rc != 0 {
        return None;
    }
    let secs = u64::try_from(ts.tv_sec).ok()?;
    let nanos = u64::try_from(ts.tv_nsec).ok()?;
    Some(secs.saturating_mul(1_000).saturating_add(nanos / 1_000_000))
}

/// No coarse clock here: [`CoarseClock`] reads the precise one.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
#[inline]
fn coarse_millis() -> Option<u64> {
    None
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_coarse_clock_follows_the_precise_one_within_a_tick() {
        let start = CoarseClock.now_millis();
        for _ in 0..1_000 {
            let coarse = CoarseClock.now_millis();
            let precise = SystemClock.now_millis();
            assert!(
                coarse <= precise,
                "coarse {coarse} ahead of precise {precise}"
            );
            assert!(
                precise - coarse < 100,
                "coarse {coarse} lags precise {precise}"
            );
            assert!(coarse >= start, "coarse clock went back");
        }
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            CoarseClock.now_millis() >= start + 30,
            "coarse clock did not move"
        );
    }

    /// Reads of the coarse clock are loads of the ticker's copy: the thread runs after the
    /// first read, and the copy moves with the kernel's clock.
    #[cfg(target_os = "linux")]
    #[test]
    fn the_coarse_clock_is_copied_by_a_ticker_thread() {
        let first = CoarseClock.now_millis();
        let tickers = std::fs::read_dir("/proc/self/task")
            .unwrap()
            // Other tests' threads may end meanwhile: a task that vanished is not the ticker.
            .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
            .filter(|comm| comm.trim() == "ks-coarse-clock")
            .count();
        assert_eq!(tickers, 1, "one ticker thread, however many reads");
        assert_eq!(ticked_millis().map(|t| t >= first), Some(true));
        std::thread::sleep(Duration::from_millis(50));
        let later = ticked_millis().unwrap();
        assert!(
            later >= first + 30,
            "the copy did not move: {first} → {later}"
        );
        assert!(later <= SystemClock.now_millis());
    }
}
