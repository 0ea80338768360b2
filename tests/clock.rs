//! The coarse clock's ticker thread, watched from outside: one thread however many reads, gone
//! once reads stop, back at the next read. A test binary of its own, with one test: nothing else
//! in the process reads the clock meanwhile.

#![cfg(target_os = "linux")]

use std::time::{Duration, Instant};

use keyed_state::clock::{Clock, CoarseClock, SystemClock};

/// Threads of this process named as the ticker.
fn tickers() -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        // A task that ended while being listed is not the ticker.
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.trim() == "ks-coarse-clock")
        .count()
}

/// Polls `done` for up to `limit`; whether it held.
fn within(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    done()
}

/// The coarse clock against the precise one: never ahead, less than a second behind.
fn assert_current(coarse: u64) {
    let precise = SystemClock.now_millis();
    assert!(coarse <= precise, "coarse {coarse} ahead of {precise}");
    assert!(precise - coarse < 1_000, "coarse {coarse} behind {precise}");
}

#[test]
fn the_ticker_runs_while_the_clock_is_read_and_stops_when_it_is_not() {
    assert_eq!(tickers(), 0, "no read yet, no thread");

    // Reads, for longer than the ticker's idle time: one thread, and the clock moves.
    let first = CoarseClock.now_millis();
    assert_current(first);
    let start = Instant::now();
    let mut last = first;
    let mut most = 0;
    while start.elapsed() < Duration::from_millis(300) {
        let now = CoarseClock.now_millis();
        assert!(now >= last, "the clock went back: {last} → {now}");
        assert_current(now);
        last = now;
        most = most.max(tickers());
    }
    assert_eq!(most, 1, "one ticker however many reads");
    assert!(
        last >= first + 200,
        "the clock did not move: {first} → {last}"
    );

    // No reads: the thread ends (after 100 ms idle; generous for a loaded machine).
    assert!(
        within(Duration::from_secs(10), || tickers() == 0),
        "the ticker still runs without reads"
    );

    // The next read is current (the kernel answers it) and starts the ticker again.
    assert_current(CoarseClock.now_millis());
    assert!(
        within(Duration::from_secs(10), || {
            assert_current(CoarseClock.now_millis());
            tickers() == 1
        }),
        "a read did not start the ticker again"
    );
}
