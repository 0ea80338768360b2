//! The simulated job's operators on a real backend: one instance per key-group range.
//!
//! Per event of user `u` (the semantics the oracle repeats on plain maps):
//! - de-duplication (Map event id → (), 24-hour TTL on processing time): `seen`; an event whose
//!   id is live in it emits `dup u id` and goes no further; otherwise its id is added.
//! - `count` (Value): events so far; every 100th emits `count u n`.
//! - `max` (Reducing) and `avg` (Aggregating: sum and count) of the amounts.
//! - sessions with a 30-minute inactivity gap: `per-kind` (Map kind → events) and
//!   `session-last` (Value, the latest event time), an event-time timer at last + gap, moved
//!   (deleted and registered again) by every event; when it fires: emit `session u events
//!   last`, clear both states.
//! - hourly windows (Value in namespace window): `window-count`, a timer at the window's last
//!   millisecond; when it fires: emit `window u w n`, clear.
//! - a velocity rule (List with a 24-hour TTL on processing time): `recent` amounts; when the
//!   live ones number a positive multiple of 5 after an add, emit `velocity u n`.
//! - an amount-spike rule (Value with a 90-day TTL on processing time): `profile` (sum and
//!   count of amounts); when it holds at least 5 amounts and the new one exceeds 3× their
//!   mean, emit `spike u amount` and register a processing-time timer 10 minutes later in
//!   namespace `amount`; when it fires: emit `review u amount n` (n: the profile's count
//!   then). The new amount is added to the profile after the check.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use keyed_state::checkpoint::CheckpointStore;
use keyed_state::state::{
    AggregateFunction, AggregatingState, AggregatingStateDescriptor, ListState,
    ListStateDescriptor, MapState, MapStateDescriptor, ReducingState, ReducingStateDescriptor,
    ValueState, ValueStateDescriptor,
};
use keyed_state::timer::{Timer, TimerService};
use keyed_state::ttl::TtlConfig;
use keyed_state::{AnyEngine, KeyedStateBackend, PendingCheckpoint, Result};

use super::generator::Event;

/// The session inactivity gap.
pub const SESSION_GAP_MS: u64 = 30 * 60_000;
/// The window size.
pub const WINDOW_MS: u64 = 3_600_000;
/// `count` emits every this many events of a user.
pub const COUNT_EMIT_EVERY: u64 = 100;
/// The TTL of `recent`, on processing time.
pub const RECENT_TTL_MS: u64 = 24 * 3_600_000;
/// `velocity` emits when the live recent amounts number a multiple of this.
pub const VELOCITY_EVERY: u64 = 5;
/// The TTL of `seen` (de-duplication), on processing time.
pub const DEDUP_TTL_MS: u64 = 24 * 3_600_000;
/// The TTL of `profile`, on processing time.
pub const PROFILE_TTL_MS: u64 = 90 * 24 * 3_600_000;
/// `spike` needs at least this many amounts in the profile.
pub const SPIKE_MIN_HISTORY: u64 = 5;
/// `spike` fires above this multiple of the profile's mean.
pub const SPIKE_FACTOR: u64 = 3;
/// A spike's review fires this long after it, on processing time.
pub const REVIEW_DELAY_MS: u64 = 10 * 60_000;

/// One state entry as the simulator compares it: (state, user, namespace or map key) → value.
pub type Dump = BTreeMap<(&'static str, u64, String), String>;

/// The operator a state belongs to, for divergence reports.
pub fn operator_of(state: &str) -> &'static str {
    match state {
        "seen" => "dedup",
        "count" => "count",
        "max" => "running-max",
        "avg" => "running-average",
        "per-kind" | "session-last" => "sessions",
        "window-count" => "windows",
        "recent" => "fraud-velocity",
        "profile" => "fraud-spike",
        _ => "?",
    }
}

/// Sum and count of amounts.
#[derive(Debug, Clone, Copy)]
pub struct Average;

impl AggregateFunction for Average {
    type In = u64;
    type Acc = (u64, u64);
    type Out = (u64, u64);
    fn create_accumulator(&self) -> (u64, u64) {
        (0, 0)
    }
    fn add(&self, x: u64, (sum, n): (u64, u64)) -> (u64, u64) {
        (sum + x, n + 1)
    }
    fn get_result(&self, acc: &(u64, u64)) -> (u64, u64) {
        *acc
    }
    fn merge(&self, a: (u64, u64), b: (u64, u64)) -> (u64, u64) {
        (a.0 + b.0, a.1 + b.1)
    }
}

/// One instance of the job, on the engine chosen at run time.
#[derive(Debug)]
pub struct Job {
    backend: Arc<KeyedStateBackend<u64, AnyEngine>>,
    seen: MapState<u64, u64, ()>,
    profile: ValueState<u64, (u64, u64)>,
    reviews: Arc<TimerService<u64, u64>>,
    count: ValueState<u64, u64>,
    max: ReducingState<u64, u64>,
    avg: AggregatingState<u64, Average>,
    per_kind: MapState<u64, u8, u64>,
    session_last: ValueState<u64, u64>,
    window_count: ValueState<u64, u64, u64>,
    recent: ListState<u64, u64>,
    sessions: Arc<TimerService<u64>>,
    windows: Arc<TimerService<u64, u64>>,
}

impl Job {
    /// Registers the job's states and timer services on `backend`.
    ///
    /// # Errors
    ///
    /// A state or timer service the backend refuses (see
    /// [`KeyedStateBackend::value_state`](keyed_state::KeyedStateBackend::value_state)).
    pub fn new(backend: impl Into<Arc<KeyedStateBackend<u64, AnyEngine>>>) -> Result<Self> {
        let backend = backend.into();
        Ok(Job {
            seen: backend.map_state(
                &MapStateDescriptor::new("seen")
                    .with_ttl(TtlConfig::new(Duration::from_millis(DEDUP_TTL_MS))),
            )?,
            profile: backend.value_state(
                &ValueStateDescriptor::new("profile")
                    .with_ttl(TtlConfig::new(Duration::from_millis(PROFILE_TTL_MS))),
            )?,
            reviews: backend.timer_service("reviews")?,
            count: backend.value_state(&ValueStateDescriptor::new("count"))?,
            max: backend.reducing_state(&ReducingStateDescriptor::new("max", u64::max))?,
            avg: backend.aggregating_state(&AggregatingStateDescriptor::new("avg", Average))?,
            per_kind: backend.map_state(&MapStateDescriptor::new("per-kind"))?,
            session_last: backend.value_state(&ValueStateDescriptor::new("session-last"))?,
            window_count: backend.value_state(&ValueStateDescriptor::new("window-count"))?,
            recent: backend.list_state(
                &ListStateDescriptor::new("recent")
                    .with_ttl(TtlConfig::new(Duration::from_millis(RECENT_TTL_MS))),
            )?,
            sessions: backend.timer_service("sessions")?,
            windows: backend.timer_service("windows")?,
            backend,
        })
    }
}

impl Job {
    /// Processes one event, appending outputs.
    ///
    /// # Errors
    ///
    /// The engine's failures on any state access.
    pub fn process(&self, e: &Event, out: &mut Vec<String>) -> Result<()> {
        let key = self.backend.key(e.user)?;
        if self.seen.contains(&key, &(), &e.id)? {
            out.push(format!("dup {} {}", e.user, e.id));
            return Ok(());
        }
        self.seen.put(&key, &(), e.id, ())?;

        let (sum, history) = self.profile.get(&key, &())?.unwrap_or((0, 0));
        if history >= SPIKE_MIN_HISTORY && e.amount * history > SPIKE_FACTOR * sum {
            out.push(format!("spike {} {}", e.user, e.amount));
            let now = self.backend.config().clock().now_millis();
            self.reviews
                .register_processing_time_timer(&key, &e.amount, now + REVIEW_DELAY_MS)?;
        }
        self.profile
            .update(&key, &(), (sum + e.amount, history + 1))?;

        let n = self.count.get(&key, &())?.unwrap_or(0) + 1;
        self.count.update(&key, &(), n)?;
        if n % COUNT_EMIT_EVERY == 0 {
            out.push(format!("count {} {n}", e.user));
        }
        self.max.add(&key, &(), e.amount)?;
        self.avg.add(&key, &(), e.amount)?;

        let last = self.session_last.get(&key, &())?;
        if let Some(last) = last {
            self.sessions
                .delete_event_time_timer(&key, &(), last + SESSION_GAP_MS)?;
        }
        let events = self.per_kind.get(&key, &(), &e.kind)?.unwrap_or(0);
        self.per_kind.put(&key, &(), e.kind, events + 1)?;
        let last = last.map_or(e.ts, |l| l.max(e.ts));
        self.session_last.update(&key, &(), last)?;
        self.sessions
            .register_event_time_timer(&key, &(), last + SESSION_GAP_MS)?;

        self.recent.add(&key, &(), e.amount)?;
        let live = u64::try_from(self.recent.get(&key, &())?.count()).unwrap_or(u64::MAX);
        if live.is_multiple_of(VELOCITY_EVERY) {
            out.push(format!("velocity {} {live}", e.user));
        }

        let window = e.ts / WINDOW_MS;
        let c = self.window_count.get(&key, &window)?.unwrap_or(0);
        self.window_count.update(&key, &window, c + 1)?;
        self.windows
            .register_event_time_timer(&key, &window, (window + 1) * WINDOW_MS - 1)
    }

    /// Fires the event-time timers due at `watermark` and the processing-time timers due at
    /// `now`, appending outputs.
    ///
    /// # Errors
    ///
    /// The engine's failures while firing timers.
    pub fn advance(&self, watermark: u64, now: u64, out: &mut Vec<String>) -> Result<()> {
        self.sessions
            .advance_watermark(watermark, |t: Timer<u64>| {
                let key = self.backend.key(t.key)?;
                let events: u64 = self.per_kind.values(&key, &())?.sum();
                out.push(format!(
                    "session {} {events} {}",
                    t.key,
                    t.timestamp - SESSION_GAP_MS
                ));
                self.per_kind.clear(&key, &())?;
                self.session_last.clear(&key, &())
            })?;
        self.windows
            .advance_watermark(watermark, |t: Timer<u64, u64>| {
                let key = self.backend.key(t.key)?;
                let n = self.window_count.get(&key, &t.namespace)?.unwrap_or(0);
                out.push(format!("window {} {} {n}", t.key, t.namespace));
                self.window_count.clear(&key, &t.namespace)
            })?;
        self.reviews
            .advance_processing_time(now, |t: Timer<u64, u64>| {
                let key = self.backend.key(t.key)?;
                let history = self.profile.get(&key, &())?.map_or(0, |(_, n)| n);
                out.push(format!("review {} {} {history}", t.key, t.namespace));
                Ok(())
            })?;
        Ok(())
    }

    /// Starts checkpoint `id` (the synchronous part); the upload runs in the background.
    ///
    /// # Errors
    ///
    /// The synchronous part failed (see
    /// [`KeyedStateBackend::checkpoint`](keyed_state::KeyedStateBackend::checkpoint)).
    pub fn checkpoint(
        &self,
        store: &Arc<CheckpointStore>,
        id: u64,
        offsets: &[(&str, u64)],
    ) -> Result<PendingCheckpoint> {
        self.backend.checkpoint(store, id, offsets)
    }

    /// Every live state entry, through the views and their key listings.
    ///
    /// # Errors
    ///
    /// The engine's failures while reading.
    pub fn dump(&self) -> Result<Dump> {
        let mut out = Dump::new();
        let mut put = |state: &'static str, u: u64, detail: String, value: String| {
            out.insert((state, u, detail), value);
        };
        for g in self.backend.key_group_range() {
            for (u, ()) in self.seen.keys_in_group(g)? {
                let key = self.backend.key(u)?;
                for id in self.seen.keys(&key, &())? {
                    put("seen", u, format!("id {id}"), "()".into());
                }
            }
            for (u, ()) in self.profile.keys_in_group(g)? {
                let key = self.backend.key(u)?;
                if let Some(p) = self.profile.get(&key, &())? {
                    put("profile", u, String::new(), format!("{p:?}"));
                }
            }
            for (u, ()) in self.count.keys_in_group(g)? {
                let key = self.backend.key(u)?;
                put(
                    "count",
                    u,
                    String::new(),
                    format!("{:?}", self.count.get(&key, &())?),
                );
            }
            for (u, ()) in self.max.keys_in_group(g)? {
                let key = self.backend.key(u)?;
                put(
                    "max",
                    u,
                    String::new(),
                    format!("{:?}", self.max.get(&key, &())?),
                );
            }
            for (u, ()) in self.avg.keys_in_group(g)? {
                let key = self.backend.key(u)?;
                put(
                    "avg",
                    u,
                    String::new(),
                    format!("{:?}", self.avg.get(&key, &())?),
                );
            }
            for (u, ()) in self.per_kind.keys_in_group(g)? {
                let key = self.backend.key(u)?;
                for (kind, n) in self.per_kind.entries(&key, &())? {
                    put("per-kind", u, format!("kind {kind}"), n.to_string());
                }
            }
            for (u, ()) in self.session_last.keys_in_group(g)? {
                let key = self.backend.key(u)?;
                let last = self.session_last.get(&key, &())?;
                put("session-last", u, String::new(), format!("{last:?}"));
            }
            for (u, ()) in self.recent.keys_in_group(g)? {
                let key = self.backend.key(u)?;
                let live: Vec<u64> = self.recent.get(&key, &())?.collect();
                // A list whose elements all expired is absent to a reader.
                if !live.is_empty() {
                    put("recent", u, String::new(), format!("{live:?}"));
                }
            }
            for (u, w) in self.window_count.keys_in_group(g)? {
                let key = self.backend.key(u)?;
                let n = self.window_count.get(&key, &w)?;
                put("window-count", u, format!("window {w}"), format!("{n:?}"));
            }
        }
        Ok(out)
    }
}
