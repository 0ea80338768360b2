//! One time domain's timers: an ordered set per key group and an index of the groups' heads.
//!
//! A timer is `(timestamp, id)` where `id` is the timer's key and namespace as bytes
//! (`varint key length | key | namespace`, the top-level codec encodings). Each key group keeps
//! its timers in a `BTreeSet`: a set (registering twice holds one timer), ordered (the head is
//! the first element, deletion is O(log n), and a snapshot iterates in order). A second
//! ordered set holds every non-empty group's head `(timestamp, id, group)`, so the global next
//! timer is its first element and firing costs O(log n + log groups), independent of how many
//! key groups exist.
//!
//! Ties at one timestamp fire in the order of their `id` bytes, then of key group: stable,
//! independent of registration order and of the instance layout.

use std::collections::BTreeSet;

use crate::backend::TimerStore;
use crate::error::Result;
use crate::types::TimerId;

/// The timers of one domain over a key-group range.
#[derive(Debug, Clone, Default)]
pub(crate) struct TimerQueue {
    /// One set per key group of the range, by index in the range.
    groups: Vec<BTreeSet<(u64, TimerId)>>,
    /// The head of every non-empty group: `(timestamp, id, group index)`.
    heads: BTreeSet<(u64, TimerId, usize)>,
    len: u64,
}

impl TimerQueue {
    /// An empty queue over `groups` key groups.
    pub(crate) fn new(groups: usize) -> Self {
        TimerQueue {
            groups: vec![BTreeSet::new(); groups],
            heads: BTreeSet::new(),
            len: 0,
        }
    }

    /// Pending timers.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Keeps `heads` in step with group `index`'s head, after a change that may have moved it
    /// from `old`.
    fn rehead(&mut self, index: usize, old: Option<(u64, TimerId)>) {
        let new = self.groups[index].first().cloned();
        if old == new {
            return;
        }
        if let Some((ts, id)) = old {
            self.heads.remove(&(ts, id, index));
        }
        if let Some((ts, id)) = new {
            self.heads.insert((ts, id, index));
        }
    }

    /// Adds a timer to group `index`; `false` when it was already there.
    pub(crate) fn add(&mut self, index: usize, ts: u64, id: TimerId) -> bool {
        let group = &mut self.groups[index];
        let becomes_head = group.first().is_none_or(|(h, hid)| (ts, &id) < (*h, hid));
        let old = if becomes_head {
            group.first().cloned()
        } else {
            None
        };
        if !group.insert((ts, id)) {
            return false;
        }
        self.len += 1;
        if becomes_head {
            self.rehead(index, old);
        }
        true
    }

    /// Removes a timer from group `index`; `false` when it was not there.
    pub(crate) fn remove(&mut self, index: usize, ts: u64, id: &TimerId) -> bool {
        let group = &mut self.groups[index];
        let was_head = group.first().is_some_and(|(h, hid)| *h == ts && hid == id);
        let key = (ts, id.clone());
        if !group.remove(&key) {
            return false;
        }
        self.len -= 1;
        if was_head {
            self.rehead(index, Some(key));
        }
        true
    }

    /// The earliest timestamp pending.
    pub(crate) fn peek(&self) -> Option<u64> {
        self.heads.first().map(|(ts, _, _)| *ts)
    }

    /// Removes and returns the earliest timer if its timestamp is at most `upto`:
    /// `(group index, timestamp, id)`.
    pub(crate) fn pop_due(&mut self, upto: u64) -> Option<(usize, u64, TimerId)> {
        let (ts, _, index) = self.heads.first()?;
        if *ts > upto {
            return None;
        }
        let index = *index;
        let head = self.groups[index].pop_first()?;
        self.len -= 1;
        self.rehead(index, Some(head.clone()));
        Some((index, head.0, head.1))
    }

    /// The timers of group `index`, in order.
    pub(crate) fn group(&self, index: usize) -> impl Iterator<Item = &(u64, TimerId)> {
        self.groups.get(index).into_iter().flatten()
    }
}

/// Timers on the heap: a [`TimerQueue`] per domain.
#[derive(Debug, Clone)]
pub(crate) struct HeapTimerStore {
    domains: [TimerQueue; 2],
}

impl HeapTimerStore {
    /// Empty, over `groups` key groups.
    pub(crate) fn new(groups: usize) -> Self {
        HeapTimerStore {
            domains: [TimerQueue::new(groups), TimerQueue::new(groups)],
        }
    }
}

impl TimerStore for HeapTimerStore {
    fn add(&mut self, domain: usize, index: usize, ts: u64, id: TimerId) -> Result<bool> {
        Ok(self.domains[domain].add(index, ts, id))
    }
    fn remove(&mut self, domain: usize, index: usize, ts: u64, id: &TimerId) -> Result<bool> {
        Ok(self.domains[domain].remove(index, ts, id))
    }
    fn peek(&self, domain: usize) -> Option<u64> {
        self.domains[domain].peek()
    }
    fn pop_due(&mut self, domain: usize, upto: u64) -> Result<Option<(usize, u64, TimerId)>> {
        Ok(self.domains[domain].pop_due(upto))
    }
    fn len(&self, domain: usize) -> u64 {
        self.domains[domain].len()
    }
    fn group(&self, domain: usize, index: usize) -> Result<Vec<(u64, TimerId)>> {
        Ok(self.domains[domain].group(index).cloned().collect())
    }
    fn in_engine_files(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(b: &[u8]) -> TimerId {
        TimerId::from_slice(b)
    }

    #[test]
    fn heads_follow_adds_removes_and_pops() {
        let mut q = TimerQueue::new(3);
        assert!(q.add(0, 10, id(b"a")));
        assert!(!q.add(0, 10, id(b"a")), "a set");
        assert!(q.add(1, 5, id(b"b")));
        assert!(q.add(2, 5, id(b"a")));
        assert!(q.add(0, 7, id(b"c")));
        assert_eq!(q.len(), 4);
        assert_eq!(q.peek(), Some(5));
        // Ties by id bytes: "a" (group 2) before "b" (group 1).
        assert_eq!(q.pop_due(5), Some((2, 5, id(b"a"))));
        assert_eq!(q.pop_due(5), Some((1, 5, id(b"b"))));
        assert_eq!(q.pop_due(6), None);
        assert!(q.remove(0, 7, &id(b"c")));
        assert!(!q.remove(0, 7, &id(b"c")));
        assert_eq!(q.peek(), Some(10));
        assert_eq!(q.pop_due(u64::MAX), Some((0, 10, id(b"a"))));
        assert_eq!(q.peek(), None);
        assert_eq!(q.len(), 0);
    }
}
