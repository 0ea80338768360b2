//! Timers in checkpoints: a `chk-<id>/timers` file in the canonical key-group format
//! ([`blocks`]), one block per key group, one section per (timer service, domain): section
//! index `2 × service + domain` (0 event time, 1 processing time) into the manifest's timer
//! list. A timer is a record of the Value shape with the timestamp as its stamp and an empty
//! value: `bytes key | bytes namespace | timestamp | varint 0` (a timer set is sorted by
//! timestamp, so its stamp deltas are small). The synchronous part of a checkpoint takes a
//! reference to each key group's timer set (copy-on-write on the heap, `heap/timers.rs`);
//! encoding and upload run in the background with the state's.

// A decoder of bytes from disk or the network: no indexing that can panic.
#![deny(clippy::indexing_slicing)]

use std::collections::BTreeMap;

use super::blocks::{
    self, DataFileWriter, GroupBlocks, Order, RecordShape, build_parallel, read_bytes, read_stamp,
    write_bytes,
};
use super::manifest::{BlockEntry, Manifest, TimerMeta};
use crate::error::{CheckpointError, CodecError, Result};
use crate::key_group::KeyGroupRange;
use crate::types::{GroupTimers, TimerId, split_timer_id, timer_id_from_parts};

/// The file name of a checkpoint's timers.
pub(crate) const TIMERS_FILE: &str = "timers";

/// What a timer service hands to a snapshot: its metadata and, per domain, per key group of
/// the range (by index), its timers (shared with a heap store, not copied).
#[derive(Debug, Clone)]
pub(crate) struct ServiceTimers {
    pub(crate) meta: TimerMeta,
    pub(crate) domains: [Vec<GroupTimers>; 2],
}

/// The timers of every service at a snapshot's synchronous part.
#[derive(Debug, Clone)]
pub(crate) struct TimersSnapshot {
    pub(crate) range: KeyGroupRange,
    /// Sorted by name; the index is the service's index in the manifest.
    pub(crate) services: Vec<ServiceTimers>,
}

impl TimersSnapshot {
    /// The services' metadata, in manifest order.
    pub(crate) fn metas(&self) -> Vec<TimerMeta> {
        self.services.iter().map(|s| s.meta.clone()).collect()
    }

    fn block(&self, index: usize) -> Result<GroupBlocks, CodecError> {
        let (mut blocks, mut records) = (GroupBlocks::default(), Vec::new());
        for (service, s) in self.services.iter().enumerate() {
            for (domain, groups) in s.domains.iter().enumerate() {
                let Some(timers) = groups.get(index).filter(|t| !t.is_empty()) else {
                    continue;
                };
                records.clear();
                for (ts, id) in timers.iter() {
                    // Ids come from a timer service, which builds them with their key length;
                    // one that does not split is written whole as the key (and fails the key
                    // group check on restore rather than vanishing here).
                    let (key, ns) = split_timer_id(id).unwrap_or((id, &[]));
                    write_bytes(&mut records, key)?;
                    write_bytes(&mut records, ns)?;
                    records.extend_from_slice(&ts.to_be_bytes());
                    write_bytes(&mut records, &[])?;
                }
                blocks.section(
                    2 * service + domain,
                    timers.len(),
                    &records,
                    RecordShape::Single,
                    Order::Given,
                )?;
            }
        }
        Ok(blocks)
    }

    /// The timers data file, or `None` when there is no timer service.
    pub(crate) fn encode(&self) -> Result<Option<DataFileWriter>> {
        if self.services.is_empty() {
            return Ok(None);
        }
        build_parallel(self.range, |index, _| self.block(index)).map(Some)
    }
}

/// Restored timers of one service, waiting for the service to be created: per domain,
/// `(key group, timestamp, id)`.
#[derive(Debug, Clone)]
pub(crate) struct RestoredTimers {
    pub(crate) meta: TimerMeta,
    pub(crate) timers: [Vec<(u16, u64, TimerId)>; 2],
}

/// Decodes the block of `entry` of the timers file `path` of `manifest` (the whole file in
/// `file`, verified, of data `version`) into `out`, by service name.
pub(crate) fn decode_block(
    manifest: &Manifest,
    path: &str,
    file: &[u8],
    version: u16,
    entry: &BlockEntry,
    out: &mut BTreeMap<String, RestoredTimers>,
) -> Result<()> {
    let corrupt = |e: CodecError| CheckpointError::Corrupt {
        path: path.to_owned(),
        reason: format!("timers of key group {}: {e}", entry.group),
    };
    let block = blocks::read_block(path, file, entry)?;
    let sections = 2 * manifest.timers.len();
    let parts =
        blocks::sections(&block, version, sections, |_| RecordShape::Single).map_err(corrupt)?;
    for part in parts {
        // `sections` checked the index against the service count.
        let Some(meta) = manifest.timers.get(part.state / 2) else {
            return Err(corrupt(CodecError::Invalid {
                what: "timer section",
                reason: format!("index {} past the timer services", part.state),
            })
            .into());
        };
        let restored = out
            .entry(meta.name.clone())
            .or_insert_with(|| RestoredTimers {
                meta: meta.clone(),
                timers: [Vec::new(), Vec::new()],
            });
        if restored.meta != *meta {
            return Err(CheckpointError::Incompatible(format!(
                "timer service '{}' has other codecs in another checkpoint",
                meta.name
            ))
            .into());
        }
        let [event, processing] = &mut restored.timers;
        let domain = if part.state % 2 == 0 {
            event
        } else {
            processing
        };
        let mut input: &[u8] = &part.bytes;
        for _ in 0..part.records {
            let key = read_bytes(&mut input, "timer key").map_err(corrupt)?;
            let ns = read_bytes(&mut input, "timer namespace").map_err(corrupt)?;
            let ts = read_stamp(&mut input).map_err(corrupt)?;
            read_bytes(&mut input, "timer value").map_err(corrupt)?;
            domain.push((entry.group, ts, timer_id_from_parts(key, ns)));
        }
    }
    Ok(())
}
