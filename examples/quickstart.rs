//! A small stateful job on the heap engine: every state kind, namespaces and TTL, driven by a
//! seeded stream of events, checked against plain-Rust bookkeeping at the end.
//!
//! ```text
//! cargo run --release --example quickstart -- --events 200000 --users 5000 --seed 7
//! ```

use std::collections::HashMap;
use std::time::{Duration, Instant};

use keyed_state::clock::ManualClock;
use keyed_state::state::{
    AggregateFunction, AggregatingStateDescriptor, ListStateDescriptor, MapStateDescriptor,
    ReducingStateDescriptor, ValueStateDescriptor,
};
use keyed_state::ttl::TtlConfig;
use keyed_state::{EngineConfig, Error, HeapEngine, KeyedStateBackend};

/// Running average of amounts: (sum, count) → mean.
struct Average;
impl AggregateFunction for Average {
    type In = u64;
    type Acc = (u64, u64);
    type Out = f64;
    fn create_accumulator(&self) -> (u64, u64) {
        (0, 0)
    }
    fn add(&self, amount: u64, (sum, n): (u64, u64)) -> (u64, u64) {
        (sum + amount, n + 1)
    }
    fn get_result(&self, &(sum, n): &(u64, u64)) -> f64 {
        if n == 0 { 0.0 } else { sum as f64 / n as f64 }
    }
    fn merge(&self, a: (u64, u64), b: (u64, u64)) -> (u64, u64) {
        (a.0 + b.0, a.1 + b.1)
    }
}

struct Args {
    events: u64,
    users: u64,
    seed: u64,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        events: 200_000,
        users: 5_000,
        seed: 7,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| -> Result<u64, String> {
            it.next()
                .and_then(|v| v.parse().ok())
                .ok_or(format!("{name} needs a number"))
        };
        match flag.as_str() {
            "--events" => args.events = value("--events")?,
            "--users" => args.users = value("--users")?.max(1),
            "--seed" => args.seed = value("--seed")?,
            "-h" | "--help" => {
                println!("usage: quickstart [--events N] [--users N] [--seed N]");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other} (try --help)")),
        }
    }
    Ok(args)
}

/// SplitMix64: a tiny seeded generator for the event stream.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

const HOUR_MS: u64 = 3_600_000;
const KINDS: [&str; 4] = ["view", "click", "cart", "buy"];

fn main() -> Result<(), Error> {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("quickstart: {e}");
            std::process::exit(2);
        }
    };
    let clock = ManualClock::new(0);
    let backend = KeyedStateBackend::<String>::new(HeapEngine::new(
        EngineConfig::new(128)?.with_clock(clock.shared()),
    ));

    let count = backend.value_state(&ValueStateDescriptor::<u64>::new("count"))?;
    let recent = backend.list_state(
        &ListStateDescriptor::<u64>::new("recent-amounts")
            .with_ttl(TtlConfig::new(Duration::from_millis(24 * HOUR_MS))),
    )?;
    let per_kind = backend.map_state(&MapStateDescriptor::<String, u64>::new("per-kind"))?;
    let max = backend.reducing_state(&ReducingStateDescriptor::<u64>::new(
        "max-amount",
        |a, b| a.max(b),
    ))?;
    let avg =
        backend.aggregating_state(&AggregatingStateDescriptor::<_>::new("avg-amount", Average))?;
    // Hourly tumbling windows: the namespace is the window's start.
    let hourly = backend.value_state(&ValueStateDescriptor::<u64, u64>::new("hourly-count"))?;
    let last_kind = backend.value_state(&ValueStateDescriptor::<String>::new("last-kind"))?;

    let mut rng = Rng(args.seed);
    let mut expected_counts: HashMap<String, u64> = HashMap::new();
    let mut velocity_alerts = 0u64;
    let mut kind_switches = 0u64;
    let started = Instant::now();
    for _ in 0..args.events {
        clock.advance_millis(rng.next() % 2_000); // events arrive every ~1 s on average
        let user = format!("user-{}", rng.next() % args.users);
        let kind = KINDS[(rng.next() % 4) as usize].to_string();
        let amount = 1 + rng.next() % 500;

        let key = backend.key(user.clone())?; // serialize + hash once per record
        let n = count.get(&key, &())?.unwrap_or(0) + 1;
        count.update(&key, &(), n)?;
        recent.add(&key, &(), amount)?;
        // Borrowing reads: count the live amounts, and compare with the stored `String`,
        // without copying either.
        if recent.with(&key, &(), |amounts| amounts.len())? > 20 {
            velocity_alerts += 1; // more than 20 events in 24 h
        }
        if last_kind.with(&key, &(), |last| last.is_some_and(|l| *l != kind))? {
            kind_switches += 1;
        }
        last_kind.update(&key, &(), kind.clone())?;
        let k = per_kind.get(&key, &(), &kind)?.unwrap_or(0);
        per_kind.put(&key, &(), kind, k + 1)?;
        max.add(&key, &(), amount)?;
        avg.add(&key, &(), amount)?;
        let window = clock_hour(&clock);
        let h = hourly.get(&key, &window)?.unwrap_or(0);
        hourly.update(&key, &window, h + 1)?;

        *expected_counts.entry(user).or_default() += 1;
    }
    let elapsed = started.elapsed();

    // Check the state against the plain bookkeeping.
    let mut mismatches = 0;
    for (user, expected) in &expected_counts {
        let key = backend.key(user.clone())?;
        let by_kind: u64 = per_kind.values(&key, &())?.sum();
        if count.get(&key, &())? != Some(*expected) || by_kind != *expected {
            mismatches += 1;
        }
    }
    let (top_user, top_count) = expected_counts
        .iter()
        .max_by_key(|(u, c)| (**c, std::cmp::Reverse((*u).clone())))
        .map(|(u, c)| (u.clone(), *c))
        .unwrap_or_default();
    let top = backend.key(top_user.clone())?;

    println!(
        "keyed-state quickstart (heap engine, {} key groups)",
        backend.config().max_parallelism()
    );
    println!("  events          {}", args.events);
    println!("  users seen      {}", expected_counts.len());
    println!(
        "  simulated time  {:.1} h",
        clock_ms(&clock) as f64 / HOUR_MS as f64
    );
    println!(
        "  wall time       {:.2?} ({:.0} events/s, 7 states touched per event)",
        elapsed,
        args.events as f64 / elapsed.as_secs_f64()
    );
    println!("  velocity alerts {velocity_alerts} (more than 20 events within 24 h)");
    println!("  kind switches   {kind_switches} (an event of another kind than the user's last)");
    println!(
        "  busiest user    {top_user}: {top_count} events, max amount {}, average {:.1}, {} in the last 24 h",
        max.get(&top, &())?.unwrap_or(0),
        avg.get(&top, &())?.unwrap_or(0.0),
        recent.get(&top, &())?.len()
    );
    println!(
        "  check           {} of {} users match the bookkeeping",
        expected_counts.len() - mismatches,
        expected_counts.len()
    );
    if mismatches > 0 {
        eprintln!("quickstart: {mismatches} users disagree with the bookkeeping");
        std::process::exit(1);
    }
    Ok(())
}

fn clock_ms(clock: &ManualClock) -> u64 {
    use keyed_state::clock::Clock;
    clock.now_millis()
}

fn clock_hour(clock: &ManualClock) -> u64 {
    clock_ms(clock) / HOUR_MS * HOUR_MS
}
