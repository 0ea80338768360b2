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
//!
//! Each group's set sits behind an `Arc`, copy-on-write like the state tables' segments: a
//! checkpoint's synchronous part takes one reference per group (O(key groups), whatever the
//! number of timers), and the first change to a group while a snapshot still holds it copies
//! that group's set alone. Groups nobody touches before the snapshot is written are never
//! copied.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::unshared;
use crate::backend::TimerStore;
use crate::error::Result;
use crate::types::{GroupTimers, TimerId};

/// The timers of one domain over a key-group range.
#[derive(Debug, Clone, Default)]
pub(crate) struct TimerQueue {
    /// One set per key group of the range, by index in the range; shared with snapshots.
    groups: Vec<GroupTimers>,
    /// The head of every non-empty group: `(timestamp, id, group index)`.
    heads: BTreeSet<(u64, TimerId, usize)>,
    len: u64,
}

impl TimerQueue {
    /// An empty queue over `groups` key groups.
    pub(crate) fn new(groups: usize) -> Self {
        TimerQueue {
            groups: vec![GroupTimers::default(); groups],
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

    /// Group `index`'s set to change: copied first if a snapshot still shares it.
    fn group_mut(&mut self, index: usize) -> &mut BTreeSet<(u64, TimerId)> {
        unshared::make_mut(&mut self.groups[index])
    }

    /// [`group_mut`](Self::group_mut), unless a snapshot shares the group and `changes` says
    /// the change at hand would change nothing: then `None`, and nothing is copied for it.
    /// Registering a timer again is common (a window's cleanup timer, once per record), and so
    /// is deleting one already gone.
    fn group_to_change(
        &mut self,
        index: usize,
        changes: impl FnOnce(&BTreeSet<(u64, TimerId)>) -> bool,
    ) -> Option<&mut BTreeSet<(u64, TimerId)>> {
        let group = &self.groups[index];
        if Arc::strong_count(group) > 1 && !changes(group) {
            return None;
        }
        Some(self.group_mut(index))
    }

    /// Adds a timer to group `index`; `false` when it was already there.
    pub(crate) fn add(&mut self, index: usize, ts: u64, id: TimerId) -> bool {
        let group = &self.groups[index];
        let key = (ts, id);
        let becomes_head = group.first().is_none_or(|head| key < *head);
        let old = if becomes_head {
            group.first().cloned()
        } else {
            None
        };
        let Some(set) = self.group_to_change(index, |g| !g.contains(&key)) else {
            return false;
        };
        if !set.insert(key) {
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
        let key = (ts, id.clone());
        let was_head = self.groups[index].first() == Some(&key);
        let Some(set) = self.group_to_change(index, |g| g.contains(&key)) else {
            return false;
        };
        if !set.remove(&key) {
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
        let head = self.group_mut(index).pop_first()?;
        self.len -= 1;
        self.rehead(index, Some(head.clone()));
        Some((index, head.0, head.1))
    }

    /// The timers of group `index`, in order: the queue's own set, shared (no copy).
    pub(crate) fn group(&self, index: usize) -> GroupTimers {
        self.groups.get(index).cloned().unwrap_or_default()
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
    fn group(&self, domain: usize, index: usize) -> Result<GroupTimers> {
        Ok(self.domains[domain].group(index))
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

    #[test]
    fn a_snapshot_shares_groups_and_changes_copy_only_the_touched_one() {
        let mut q = TimerQueue::new(3);
        for (g, ts) in [(0, 1), (0, 2), (1, 3), (2, 4)] {
            q.add(g, ts, id(b"k"));
        }
        let snap: Vec<GroupTimers> = (0..3).map(|g| q.group(g)).collect();
        assert!(
            (0..3).all(|g| Arc::ptr_eq(&snap[g], &q.groups[g])),
            "no copy"
        );
        // Re-adding a present timer or removing an absent one copies nothing.
        assert!(!q.add(0, 1, id(b"k")));
        assert!(!q.remove(1, 9, &id(b"k")));
        assert!(Arc::ptr_eq(&snap[0], &q.groups[0]) && Arc::ptr_eq(&snap[1], &q.groups[1]));
        assert!(q.add(0, 5, id(b"k")));
        assert!(q.remove(1, 3, &id(b"k")));
        assert_eq!(q.pop_due(1), Some((0, 1, id(b"k"))));
        // The snapshot still sees what it took; the queue sees the changes.
        let set = |v: &[u64]| v.iter().map(|t| (*t, id(b"k"))).collect::<BTreeSet<_>>();
        assert_eq!(*snap[0], set(&[1, 2]));
        assert_eq!(*snap[1], set(&[3]));
        assert_eq!(*q.group(0), set(&[2, 5]));
        assert!(q.group(1).is_empty());
        assert!(
            Arc::ptr_eq(&snap[2], &q.groups[2]),
            "an untouched group stays shared"
        );
        assert_eq!((q.len(), q.peek()), (3, Some(2)));
    }
}
