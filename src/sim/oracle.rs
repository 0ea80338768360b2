//! The oracle: the same operators as [`job`](super::job) on plain maps, with timers as ordered
//! sets — no engine code — run on the same input without faults.

use std::collections::{BTreeMap, BTreeSet};

use super::generator::Event;
use super::job::{COUNT_EMIT_EVERY, RECENT_TTL_MS, SESSION_GAP_MS, VELOCITY_EVERY, WINDOW_MS};

/// See the module documentation.
#[derive(Debug, Default)]
pub struct Oracle {
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
        recent.retain(|(stamp, _)| stamp + RECENT_TTL_MS > now);
        let live = recent.len() as u64;
        if live.is_multiple_of(VELOCITY_EVERY) {
            out.push(format!("velocity {} {live}", e.user));
        }

        let window = e.ts / WINDOW_MS;
        *self.window_count.entry((e.user, window)).or_default() += 1;
        self.window_timers
            .insert(((window + 1) * WINDOW_MS - 1, e.user, window));
    }

    /// Fires the timers due at `watermark`: sessions, then windows.
    pub fn advance(&mut self, watermark: u64, out: &mut Vec<String>) {
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
    }

    /// Every state entry at processing time `now`, in the job's dump format.
    pub fn dump(&self, now: u64) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for (u, n) in &self.count {
            out.insert(format!("count {u} {:?}", Some(n)));
        }
        for (u, m) in &self.max {
            out.insert(format!("max {u} {:?}", Some(m)));
        }
        for (u, a) in &self.avg {
            out.insert(format!("avg {u} {:?}", Some(a)));
        }
        for (u, kinds) in &self.per_kind {
            for (k, n) in kinds {
                out.insert(format!("per-kind {u} {k} {n}"));
            }
        }
        for (u, l) in &self.session_last {
            out.insert(format!("session-last {u} {:?}", Some(l)));
        }
        for (u, list) in &self.recent {
            let live: Vec<u64> = list
                .iter()
                .filter(|(stamp, _)| stamp + RECENT_TTL_MS > now)
                .map(|(_, a)| *a)
                .collect();
            if !live.is_empty() {
                out.insert(format!("recent {u} {live:?}"));
            }
        }
        for ((u, w), n) in &self.window_count {
            out.insert(format!("window-count {u} {w} {:?}", Some(n)));
        }
        out
    }
}
