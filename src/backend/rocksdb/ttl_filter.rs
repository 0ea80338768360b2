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

use super::layout::{frames, split_stamp};
use crate::clock::SharedClock;
use crate::codec::write_varint_u32;
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

/// Copies the live frames of `list` into `out` (re-framed). `Err` when a frame is malformed.
fn prune_list(list: &[u8], ttl: u64, now: u64, out: &mut Vec<u8>) -> Result<Pruned, ()> {
    out.clear();
    let (mut kept, mut dropped) = (0usize, 0usize);
    for frame in frames(list) {
        let frame = frame.map_err(|_| ())?;
        let (stamp, _) = split_stamp(frame, true).map_err(|_| ())?;
        if is_expired(stamp, ttl, now) {
            dropped += 1;
        } else {
            kept += 1;
            // A frame read from a list: its length came from a u32 varint.
            write_varint_u32(out, u32::try_from(frame.len()).map_err(|_| ())?);
            out.extend_from_slice(frame);
        }
    }
    // An empty list (all elements expired in a merge) is removed too.
    Ok(match (kept, dropped) {
        (0, _) => Pruned::Empty,
        (_, 0) => Pruned::Unchanged,
        _ => Pruned::Rewritten,
    })
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
        match prune_list(value, rule.ttl_millis, now, &mut self.buf) {
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
    let mut pruned = Vec::new();
    match prune_list(
        &joined,
        rule.ttl_millis,
        rule.clock.now_millis(),
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
            prune_list(&list(&[0, 50, 10, 60]), 100, 110, &mut out),
            Ok(Pruned::Rewritten)
        );
        assert_eq!(
            out,
            list(&[50, 60]),
            "0 and 10 expired at 100 and 110; order kept"
        );
        assert_eq!(
            prune_list(&list(&[10, 60]), 100, 105, &mut out),
            Ok(Pruned::Unchanged)
        );
        assert_eq!(
            prune_list(&list(&[0, 1]), 100, 105, &mut out),
            Ok(Pruned::Empty)
        );
        assert_eq!(prune_list(&[], 100, 105, &mut out), Ok(Pruned::Empty));
        assert_eq!(prune_list(&[5, 1, 2], 100, 105, &mut out), Err(()));
        assert_eq!(
            prune_list(&[1, 7], 100, 105, &mut out),
            Err(()),
            "a frame shorter than a stamp"
        );
    }
}
