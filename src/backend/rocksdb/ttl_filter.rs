//! TTL inside RocksDB: a compaction filter (through a factory) that drops expired values and map
//! entries and rewrites lists without their expired elements, and the list merge operator,
//! which drops expired elements when it folds operands into a value.
//!
//! Both run on RocksDB's threads, inside C++: they must never panic (a panic would abort the
//! process). Bytes they cannot parse are kept unchanged and counted.
//!
//! Each column family gets its own [`TtlSlot`], created when the column family is opened and
//! configured once, when its state is registered (until then everything is kept). Merge operands
//! are not passed to compaction filters, and values a merge produces inside a compaction are not
//! either; expiring inside the full merge covers them, and reads filter as well.

// A decoder of bytes from disk or the network: no indexing that can panic.
#![deny(clippy::indexing_slicing)]

use std::ffi::{CStr, CString};
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use rocksdb::MergeOperands;
use rocksdb::compaction_filter::{CompactionFilter, Decision};
use rocksdb::compaction_filter_factory::{CompactionFilterContext, CompactionFilterFactory};

use super::layout::{list_elements, split_stamp, write_raw_elements};
use crate::clock::SharedClock;
use crate::ttl::is_expired;

/// The TTL a column family's callbacks apply, set once at registration.
#[derive(Debug)]
pub(crate) struct TtlRule {
    pub(crate) ttl_millis: u64,
    /// The values are lists of framed elements (else single stamped values).
    pub(crate) list: bool,
    /// Whether the merge operator drops expired elements. Only under `NeverReturnExpired`:
    /// RocksDB also runs the full merge on reads, and a read must still see an expired element
    /// that was not cleaned up when the state may return it.
    pub(crate) prune_on_merge: bool,
    pub(crate) clock: SharedClock,
}

/// Per column family: the rule (absent for states without TTL) and a count of values the
/// callbacks could not parse.
#[derive(Debug, Default)]
pub(crate) struct TtlSlot {
    rule: OnceLock<Option<TtlRule>>,
    unparsable: AtomicU64,
}

impl TtlSlot {
    /// Sets the rule; later calls keep the first (a state's TTL cannot change while open).
    pub(crate) fn configure(&self, rule: Option<TtlRule>) {
        let _ = self.rule.set(rule);
    }

    fn rule(&self) -> Option<&TtlRule> {
        self.rule.get().and_then(Option::as_ref)
    }

    /// Values the callbacks kept because they could not parse them.
    pub(crate) fn unparsable(&self) -> u64 {
        self.unparsable.load(Ordering::Relaxed)
    }

    fn count_unparsable(&self) {
        self.unparsable.fetch_add(1, Ordering::Relaxed);
    }
}

/// What became of a list once its expired elements are dropped.
#[derive(Debug, PartialEq, Eq)]
enum Pruned {
    Unchanged,
    Empty,
    Rewritten,
}

/// Writes the live elements of the TTL list `list` into `out`, in runs (one per stretch of
/// equal stamps). `Unchanged` (and `out` left empty) when nothing expired and, if `join`,
/// `list` is already in that form: with `join` a list written before runs, or whose merged
/// operands left two runs with one stamp side by side, is rewritten. `Err` when an item is
/// malformed.
fn prune_list(
    list: &[u8],
    ttl: u64,
    now: u64,
    join: bool,
    out: &mut Vec<u8>,
) -> Result<Pruned, ()> {
    out.clear();
    // A first pass that allocates nothing: most lists a read's merge or a compaction sees
    // have nothing to drop and nothing to join.
    let mut elements = list_elements(list, true);
    let (mut live, mut dropped) = (0usize, false);
    for element in elements.by_ref() {
        let (stamp, _) = element.map_err(|_| ())?;
        if is_expired(stamp, ttl, now) {
            dropped = true;
        } else {
            live += 1;
        }
    }
    if live == 0 {
        // An empty list (all elements expired in a merge) is removed too.
        return Ok(Pruned::Empty);
    }
    if !dropped && (!join || elements.is_canonical()) {
        return Ok(Pruned::Unchanged);
    }
    // The first pass parsed every item, so this one meets no error.
    let kept: Vec<(u64, &[u8])> = list_elements(list, true)
        .filter_map(Result::ok)
        .filter(|&(stamp, _)| !is_expired(stamp, ttl, now))
        .collect();
    write_raw_elements(out, true, &kept);
    Ok(Pruned::Rewritten)
}

/// Creates one [`TtlFilter`] per compaction.
pub(crate) struct TtlFilterFactory {
    slot: Arc<TtlSlot>,
    name: CString,
}

impl TtlFilterFactory {
    pub(crate) fn new(slot: Arc<TtlSlot>) -> Self {
        TtlFilterFactory {
            slot,
            name: c"keyed-state-ttl-factory".to_owned(),
        }
    }
}

impl CompactionFilterFactory for TtlFilterFactory {
    type Filter = TtlFilter;

    fn create(&mut self, _context: CompactionFilterContext) -> TtlFilter {
        TtlFilter {
            slot: self.slot.clone(),
            buf: Vec::new(),
            name: c"keyed-state-ttl".to_owned(),
        }
    }

    fn name(&self) -> &CStr {
        &self.name
    }
}

/// The compaction filter of one compaction run.
pub(crate) struct TtlFilter {
    slot: Arc<TtlSlot>,
    /// Holds a rewritten list until RocksDB has copied it (see `filter`).
    buf: Vec<u8>,
    name: CString,
}

impl CompactionFilter for TtlFilter {
    fn filter(&mut self, _level: u32, _key: &[u8], value: &[u8]) -> Decision {
        let Some(rule) = self.slot.rule() else {
            return Decision::Keep;
        };
        let now = rule.clock.now_millis();
        if !rule.list {
            return match split_stamp(value, true) {
                Ok((stamp, _)) if is_expired(stamp, rule.ttl_millis, now) => Decision::Remove,
                Ok(_) => Decision::Keep,
                Err(_) => {
                    self.slot.count_unparsable();
                    Decision::Keep
                }
            };
        }
        match prune_list(value, rule.ttl_millis, now, true, &mut self.buf) {
            Ok(Pruned::Unchanged) => Decision::Keep,
            Ok(Pruned::Empty) => Decision::Remove,
            Ok(Pruned::Rewritten) => {
                // SAFETY: `Decision::Change` wants `&'static [u8]`, but RocksDB's C API copies
                // the new value (`new_value->assign(...)`) as soon as this callback returns,
                // before it can call `filter` again; `buf` is neither touched nor dropped until
                // the next call on this filter, so the slice outlives every use of it.
                #[expect(unsafe_code, reason = "RocksDB copies the value at once; see SAFETY")]
                let bytes: &'static [u8] =
                    unsafe { std::mem::transmute::<&[u8], &'static [u8]>(&self.buf) };
                Decision::Change(bytes)
            }
            Err(()) => {
                self.slot.count_unparsable();
                Decision::Keep
            }
        }
    }

    fn name(&self) -> &CStr {
        &self.name
    }
}

/// The list merge operator's full merge: the existing value followed by every operand, with
/// expired elements dropped when the state has TTL. Never fails: unparsable input is kept as is.
pub(crate) fn full_merge(
    slot: &TtlSlot,
    existing: Option<&[u8]>,
    operands: &MergeOperands,
) -> Vec<u8> {
    let mut joined = Vec::with_capacity(
        existing.map_or(0, <[u8]>::len) + operands.iter().map(<[u8]>::len).sum::<usize>(),
    );
    if let Some(existing) = existing {
        joined.extend_from_slice(existing);
    }
    for op in operands {
        joined.extend_from_slice(op);
    }
    let Some(rule) = slot.rule().filter(|r| r.prune_on_merge) else {
        return joined;
    };
    // Runs are not joined here: RocksDB runs this merge on reads and flushes too, where a
    // rewrite costs a copy and saves nothing; the compaction filter joins them.
    let mut pruned = Vec::new();
    match prune_list(
        &joined,
        rule.ttl_millis,
        rule.clock.now_millis(),
        false,
        &mut pruned,
    ) {
        Ok(Pruned::Unchanged) => joined,
        Ok(Pruned::Empty | Pruned::Rewritten) => pruned,
        Err(()) => {
            slot.count_unparsable();
            joined
        }
    }
}

/// The partial merge: operands concatenated (no clock read; the full merge prunes).
pub(crate) fn partial_merge(operands: &MergeOperands) -> Vec<u8> {
    let mut joined = Vec::with_capacity(operands.iter().map(<[u8]>::len).sum());
    for op in operands {
        joined.extend_from_slice(op);
    }
    joined
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, reason = "tests index what they built")]
mod tests {
    use super::*;
    use crate::backend::rocksdb::layout::write_elements;
    use crate::ttl::Stamped;

    fn list(stamps: &[u64]) -> Vec<u8> {
        let elems: Vec<Stamped<u32>> = stamps
            .iter()
            .map(|&t| Stamped::new(t, u32::try_from(t).unwrap()))
            .collect();
        let mut out = Vec::new();
        write_elements(&mut out, true, &elems);
        out
    }

    #[test]
    fn pruning_keeps_live_elements_in_order() {
        let mut out = Vec::new();
        assert_eq!(
            prune_list(&list(&[0, 50, 10, 60]), 100, 110, true, &mut out),
            Ok(Pruned::Rewritten)
        );
        assert_eq!(
            out,
            list(&[50, 60]),
            "0 and 10 expired at 100 and 110; order kept"
        );
        assert_eq!(
            prune_list(&list(&[10, 60]), 100, 105, true, &mut out),
            Ok(Pruned::Unchanged)
        );
        assert_eq!(
            prune_list(&list(&[0, 1]), 100, 105, true, &mut out),
            Ok(Pruned::Empty)
        );
        assert_eq!(prune_list(&[], 100, 105, true, &mut out), Ok(Pruned::Empty));
        assert_eq!(prune_list(&[5, 1, 2], 100, 105, true, &mut out), Err(()));
        assert_eq!(
            prune_list(&[1, 7], 100, 105, true, &mut out),
            Err(()),
            "a frame shorter than a stamp"
        );
        let mut zero_run = list(&[10]);
        zero_run[9] = 0;
        assert_eq!(prune_list(&zero_run, 100, 105, true, &mut out), Err(()));
    }

    /// With `join` (the compaction filter), runs with one stamp side by side (two merged
    /// operands) are joined, and a list written before runs is rewritten in them, even when
    /// nothing expired.
    #[test]
    fn pruning_joins_runs_and_rewrites_lists_written_before_runs() {
        let mut out = Vec::new();
        let joined = [list(&[50]), list(&[50, 60])].concat();
        assert_eq!(
            prune_list(&joined, 100, 105, true, &mut out),
            Ok(Pruned::Rewritten)
        );
        assert_eq!(out, list(&[50, 50, 60]));
        // The same stamp in runs that are not neighbours stays in two runs.
        assert_eq!(
            prune_list(&list(&[50, 60, 50]), 100, 105, true, &mut out),
            Ok(Pruned::Unchanged)
        );
        let mut legacy = Vec::new();
        for t in [50u64, 50, 60] {
            legacy.push(12); // frame length: stamp + u32
            legacy.extend_from_slice(&t.to_be_bytes());
            legacy.extend_from_slice(&u32::try_from(t).unwrap().to_be_bytes());
        }
        assert_eq!(
            prune_list(&legacy, 100, 105, true, &mut out),
            Ok(Pruned::Rewritten)
        );
        assert_eq!(out, list(&[50, 50, 60]));
        assert!(out.len() < legacy.len());
        assert_eq!(
            prune_list(
                &[legacy.clone(), list(&[10, 70])].concat(),
                100,
                112,
                true,
                &mut out
            ),
            Ok(Pruned::Rewritten)
        );
        assert_eq!(out, list(&[50, 50, 60, 70]), "10 expired at 110");
        // Without `join` (the merge operator), only a drop rewrites.
        assert_eq!(
            prune_list(&joined, 100, 105, false, &mut out),
            Ok(Pruned::Unchanged)
        );
        assert_eq!(
            prune_list(&legacy, 100, 105, false, &mut out),
            Ok(Pruned::Unchanged)
        );
        assert_eq!(
            prune_list(&legacy, 100, 155, false, &mut out),
            Ok(Pruned::Rewritten)
        );
        assert_eq!(out, list(&[60]), "50 expired at 150");
    }
}
