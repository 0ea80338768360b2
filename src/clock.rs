//! Injected time. No engine code reads the system clock directly: TTL, processing-time timers
//! and the RocksDB compaction filter ask a [`Clock`], so tests and the simulator can drive time
//! with a [`ManualClock`]. Engines default to [`CoarseClock`], the wall clock at the kernel
//! tick's resolution, because TTL states read the clock on every access.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of processing time, in milliseconds since the Unix epoch.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current time in milliseconds.
    fn now_millis(&self) -> u64;
}

/// A clock shared between a backend, its states and the caller.
pub type SharedClock = Arc<dyn Clock>;

/// The clock an engine reads: its [`SharedClock`], and whether that is the default
/// [`CoarseClock`], which is then read inline rather than through the trait object (a TTL state
/// reads the clock on every access, and the indirect call costs it about 7 %: DESIGN §5).
#[derive(Debug, Clone)]
pub(crate) struct EngineClock {
    shared: SharedClock,
    coarse: bool,
}

impl EngineClock {
    /// The default: [`CoarseClock`], read inline.
    pub(crate) fn coarse() -> Self {
        EngineClock {
            shared: Arc::new(CoarseClock),
            coarse: true,
        }
    }

    /// `clock`, read through its trait object (whatever it is).
    pub(crate) fn shared(clock: SharedClock) -> Self {
        EngineClock {
            shared: clock,
            coarse: false,
        }
    }

    /// The clock as the public API hands it out.
    pub(crate) fn as_shared(&self) -> &SharedClock {
        &self.shared
    }

    /// The time, in milliseconds since the Unix epoch.
    #[inline]
    pub(crate) fn now_millis(&self) -> u64 {
        if self.coarse {
            CoarseClock.now_millis()
        } else {
            self.shared.now_millis()
        }
    }
}

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
/// scheduler keeps the thread off every core. The thread stops after 100 ms without a read (a
/// process without TTL state reads the clock only now and then), and the next read, which asks
/// the kernel itself, starts it again. Where the thread cannot be started, every read asks the
/// kernel. A child process forked without `exec` while the thread runs inherits the copy but
/// not the thread, so its coarse clock stands still: such a child should give its engines a
/// [`SystemClock`].
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

/// The kernel's coarse clock as of the ticker thread's last copy, or 0 while no ticker keeps it
/// current (see [`CoarseClock`]).
static TICKED: AtomicU64 = AtomicU64::new(0);
/// Set by reads of the copy, cleared by the ticker at every tick: whether anyone read since.
static READ: AtomicBool = AtomicBool::new(false);
/// The ticker's state: [`STOPPED`], [`RUNNING`] (which includes starting and stopping) or
/// [`UNAVAILABLE`].
static TICKER: AtomicU8 = AtomicU8::new(STOPPED);
const STOPPED: u8 = 0;
const RUNNING: u8 = 1;
/// No coarse clock, or no thread could be started: every read asks the kernel, for good.
const UNAVAILABLE: u8 = 2;
/// How often the ticker thread copies the clock.
const TICK: Duration = Duration::from_millis(1);
/// Ticks without a read after which the ticker stops, until the next read starts it again: a
/// process that reads the clock now and then (a checkpoint's timestamp, a processing-time
/// timer's poll) keeps no thread waking a thousand times a second.
const IDLE_TICKS: u32 = 100;

/// The ticker's copy of the coarse clock. While no ticker runs, the call starts one (unless one
/// is starting or stopping, or none can be) and returns the time it gave the copy; `None` when
/// it did not start one, and the caller asks the kernel.
#[inline]
fn ticked_millis() -> Option<u64> {
    let now = TICKED.load(Ordering::Relaxed);
    if now == 0 {
        return start_ticker();
    }
    // Loaded first, so that the store, which takes the line from the ticker's core, comes once
    // per tick rather than once per read.
    if !READ.load(Ordering::Relaxed) {
        READ.store(true, Ordering::Relaxed);
    }
    Some(now)
}

/// Starts the ticker thread, unless one runs (or is starting or stopping) or none can; the
/// time it stored into the copy when it did.
#[cold]
fn start_ticker() -> Option<u64> {
    if TICKER.load(Ordering::Relaxed) != STOPPED
        || TICKER
            .compare_exchange(STOPPED, RUNNING, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
    {
        return None;
    }
    let Some(now) = coarse_millis() else {
        TICKER.store(UNAVAILABLE, Ordering::Relaxed);
        return None;
    };
    READ.store(true, Ordering::Relaxed);
    // Stored before the thread starts, so that the copy is current from this read on. The
    // acquire above ordered it after the last store of a stopped ticker, its 0.
    TICKED.store(now, Ordering::Relaxed);
    let spawned = std::thread::Builder::new()
        // At most 15 bytes: Linux cuts a thread's name there.
        .name("ks-coarse-clock".into())
        .spawn(tick);
    if spawned.is_err() {
        TICKED.store(0, Ordering::Relaxed);
        TICKER.store(UNAVAILABLE, Ordering::Relaxed);
    }
    // The copy's time, not a later kernel read: the next read, of the copy, must not go back.
    Some(now)
}

/// The ticker thread: copies the coarse clock every [`TICK`] until [`IDLE_TICKS`] pass without
/// a read.
fn tick() {
    let mut idle = 0;
    while idle < IDLE_TICKS {
        std::thread::sleep(TICK);
        idle = if READ.swap(false, Ordering::Relaxed) {
            0
        } else {
            idle + 1
        };
        if let Some(now) = coarse_millis() {
            TICKED.store(now, Ordering::Relaxed);
        }
    }
    // Reads ask the kernel from here until one starts a new ticker, which can only happen
    // after the release below.
    TICKED.store(0, Ordering::Relaxed);
    TICKER.store(STOPPED, Ordering::Release);
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

    /// An engine's clock: the default reads the coarse clock (inline), any other its own.
    #[test]
    fn an_engine_clock_reads_the_clock_it_was_given() {
        let manual = ManualClock::new(42);
        let given = EngineClock::shared(manual.shared());
        assert_eq!(given.now_millis(), 42);
        manual.advance_millis(8);
        assert_eq!(given.now_millis(), 50);
        assert_eq!(given.as_shared().now_millis(), 50);
        let default = EngineClock::coarse();
        for clock in [default.now_millis(), default.as_shared().now_millis()] {
            let precise = SystemClock.now_millis();
            assert!(
                clock <= precise && precise - clock < 1_000,
                "{clock} vs {precise}"
            );
        }
    }

    /// Reads of the coarse clock are loads of the ticker's copy, which moves with the kernel's
    /// clock. (The thread itself, how many there are and when it stops: `tests/clock.rs`, a
    /// process of its own, where no other test reads the clock meanwhile.)
    #[cfg(target_os = "linux")]
    #[test]
    fn the_coarse_clock_is_copied_by_a_ticker_thread() {
        let first = CoarseClock.now_millis();
        // The read started the ticker if it had stopped; it copies within a tick.
        let copied = (0..1_000).find_map(|_| {
            std::thread::sleep(Duration::from_millis(1));
            ticked_millis()
        });
        assert!(copied.is_some_and(|t| t >= first), "no copy: {copied:?}");
        std::thread::sleep(Duration::from_millis(50));
        // 50 ms without a read: the ticker (stopped after 100) still runs.
        let later = ticked_millis().expect("the ticker stopped within its idle time");
        assert!(
            later >= first + 30,
            "the copy did not move: {first} → {later}"
        );
        assert!(later <= SystemClock.now_millis());
    }
}
