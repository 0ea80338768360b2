//! The oracle: the same operators as [`job`](super::job) on plain maps, with timers as ordered
//! sets — no engine code — run on the same input without faults.

use std::collections::{BTreeMap, BTreeSet};

use super::generator::Event;
use super::job::{
    COUNT_EMIT_EVERY, DEDUP_TTL_MS, Dump, PROFILE_TTL_MS, RECENT_TTL_MS, REVIEW_DELAY_MS,
    SESSION_GAP_MS, SPIKE_FACTOR, SPIKE_MIN_HISTORY, VELOCITY_EVERY, WINDOW_MS,
};

/// An entry stamped at `at` (processing time) is live at `now` while `at + ttl > now`.
fn live(at: u64, ttl: u64, now: u64) -> bool {
    at + ttl > now
}

/// See the module documentation.
#[derive(Debug, Default, Clone)]
pub struct Oracle {
    /// Per user, event id → processing time it was added.
    seen: BTreeMap<u64, BTreeMap<u64, u64>>,
    /// Per user, (processing time of the last write, sum, count).
    profile: BTreeMap<u64, (u64, u64, u64)>,
    /// (timestamp, user, amount)
    review_timers: BTreeSet<(u64, u64, u64)>,
    count: BTreeMap<u64, u64>,
    max: BTreeMap<u64, u64>,
    avg: BTreeMap<u64, (u64, u64)>,
    per_kind: BTreeMap<u64, BTreeMap<u8, u64>>,
    session_last: BTreeMap<u64, u64>,
    window_count: BTreeMap<(u64, u64), u64>,
    /// Per user, (processing time added, amount).
    recent: BTreeMap<u64, Vec<(u64, u64)>>,
    /// (timestamp, user)
    session_timers: BTreeSet<(u64, u64)>,
    /// (timestamp, user, window)
    window_timers: BTreeSet<(u64, u64, u64)>,
}

impl Oracle {
    /// Processes one event at processing time `now`.
    pub fn process(&mut self, e: &Event, now: u64, out: &mut Vec<String>) {
        let seen = self.seen.entry(e.user).or_default();
        seen.retain(|_, at| live(*at, DEDUP_TTL_MS, now));
        if seen
            .get(&e.id)
            .is_some_and(|&at| live(at, DEDUP_TTL_MS, now))
        {
            out.push(format!("dup {} {}", e.user, e.id));
            return;
        }
        seen.insert(e.id, now);

        let (sum, history) = match self.profile.get(&e.user) {
            Some(&(at, sum, n)) if live(at, PROFILE_TTL_MS, now) => (sum, n),
            _ => (0, 0),
        };
        if history >= SPIKE_MIN_HISTORY && e.amount * history > SPIKE_FACTOR * sum {
            out.push(format!("spike {} {}", e.user, e.amount));
            self.review_timers
                .insert((now + REVIEW_DELAY_MS, e.user, e.amount));
        }
        self.profile
            .insert(e.user, (now, sum + e.amount, history + 1));

        let n = self.count.entry(e.user).or_default();
        *n += 1;
        if n.is_multiple_of(COUNT_EMIT_EVERY) {
            out.push(format!("count {} {n}", e.user));
        }
        let m = self.max.entry(e.user).or_insert(e.amount);
        *m = (*m).max(e.amount);
        let a = self.avg.entry(e.user).or_default();
        *a = (a.0 + e.amount, a.1 + 1);

        let last = self.session_last.get(&e.user).copied();
        if let Some(last) = last {
            self.session_timers.remove(&(last + SESSION_GAP_MS, e.user));
        }
        *self
            .per_kind
            .entry(e.user)
            .or_default()
            .entry(e.kind)
            .or_default() += 1;
        let last = last.map_or(e.ts, |l| l.max(e.ts));
        self.session_last.insert(e.user, last);
        self.session_timers.insert((last + SESSION_GAP_MS, e.user));

        let recent = self.recent.entry(e.user).or_default();
        recent.push((now, e.amount));
        // An element expires once its stamp plus the TTL is reached.
        recent.retain(|(stamp, _)| live(*stamp, RECENT_TTL_MS, now));
        let live = recent.len() as u64;
        if live.is_multiple_of(VELOCITY_EVERY) {
            out.push(format!("velocity {} {live}", e.user));
        }

        let window = e.ts / WINDOW_MS;
        *self.window_count.entry((e.user, window)).or_default() += 1;
        self.window_timers
            .insert(((window + 1) * WINDOW_MS - 1, e.user, window));
    }

    /// Fires the event-time timers due at `watermark` (sessions, then windows) and the
    /// processing-time timers due at `now` (reviews).
    pub fn advance(&mut self, watermark: u64, now: u64, out: &mut Vec<String>) {
        while let Some(&(ts, user)) = self.session_timers.first() {
            if ts > watermark {
                break;
            }
            self.session_timers.pop_first();
            let events: u64 = self.per_kind.remove(&user).map_or(0, |m| m.values().sum());
            out.push(format!("session {user} {events} {}", ts - SESSION_GAP_MS));
            self.session_last.remove(&user);
        }
        while let Some(&(ts, user, window)) = self.window_timers.first() {
            if ts > watermark {
                break;
            }
            self.window_timers.pop_first();
            let n = self.window_count.remove(&(user, window)).unwrap_or(0);
            out.push(format!("window {user} {window} {n}"));
        }
        while let Some(&(ts, user, amount)) = self.review_timers.first() {
            if ts > now {
                break;
            }
            self.review_timers.pop_first();
            let history = match self.profile.get(&user) {
                Some(&(at, _, n)) if live(at, PROFILE_TTL_MS, now) => n,
                _ => 0,
            };
            out.push(format!("review {user} {amount} {history}"));
        }
    }

    /// Every live state entry at processing time `now`, as [`Job`](super::job::Job) dumps.
    pub fn dump(&self, now: u64) -> Dump {
        let mut out = Dump::new();
        let mut put = |state: &'static str, u: u64, detail: String, value: String| {
            out.insert((state, u, detail), value);
        };
        for (u, ids) in &self.seen {
            for (id, at) in ids {
                if live(*at, DEDUP_TTL_MS, now) {
                    put("seen", *u, format!("id {id}"), "()".into());
                }
            }
        }
        for (u, (at, sum, n)) in &self.profile {
            if live(*at, PROFILE_TTL_MS, now) {
                put("profile", *u, String::new(), format!("{:?}", (sum, n)));
            }
        }
        for (u, n) in &self.count {
            put("count", *u, String::new(), format!("{:?}", Some(n)));
        }
        for (u, m) in &self.max {
            put("max", *u, String::new(), format!("{:?}", Some(m)));
        }
        for (u, a) in &self.avg {
            put("avg", *u, String::new(), format!("{:?}", Some(a)));
        }
        for (u, kinds) in &self.per_kind {
            for (k, n) in kinds {
                put("per-kind", *u, format!("kind {k}"), n.to_string());
            }
        }
        for (u, l) in &self.session_last {
            put("session-last", *u, String::new(), format!("{:?}", Some(l)));
        }
        for (u, list) in &self.recent {
            let live: Vec<u64> = list
                .iter()
                .filter(|(stamp, _)| live(*stamp, RECENT_TTL_MS, now))
                .map(|(_, a)| *a)
                .collect();
            if !live.is_empty() {
                put("recent", *u, String::new(), format!("{live:?}"));
            }
        }
        for ((u, w), n) in &self.window_count {
            put(
                "window-count",
                *u,
                format!("window {w}"),
                format!("{:?}", Some(n)),
            );
        }
        out
    }
}
