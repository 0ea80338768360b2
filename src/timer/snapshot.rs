//! Timers in checkpoints: a `chk-<id>/timers` file in the canonical key-group format
//! ([`blocks`](crate::checkpoint::blocks)), one block per key group, one section per
//! (timer service, domain): section index `2 × service + domain` (0 event time, 1 processing
//! time) into the manifest's timer list. A timer is a record of the Value shape with the
//! timestamp as its stamp and an empty value: `bytes key | bytes namespace | u64 timestamp |
//! varint 0`. The synchronous part copies the timer sets (O(timers), as Flink's heap timers);
//! encoding and upload run in the background with the state's.

use std::collections::BTreeMap;

use super::{TimerId, id_from_parts, split_id};
use crate::checkpoint::blocks::{
    self, RecordShape, build_parallel, read_bytes, read_stamp, write_bytes, write_section_header,
};
use crate::checkpoint::{
    CheckpointStore, FileEntry, FileRole, RestoreSource, TimerMeta, read_verified,
};
use crate::error::{CheckpointError, Result};
use crate::key_group::KeyGroupRange;

/// The file name of a checkpoint's timers.
const TIMERS_FILE: &str = "timers";

/// One domain's timers of one key group, in order.
pub(crate) type GroupTimers = Vec<(u64, TimerId)>;

/// What a timer service hands to a snapshot: its metadata and, per domain, per key group of
/// the range (by index), its timers.
pub(crate) struct ServiceTimers {
    pub(crate) meta: TimerMeta,
    pub(crate) domains: [Vec<GroupTimers>; 2],
}

/// The timers of every service at a snapshot's synchronous part.
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

    fn block(&self, index: usize) -> Vec<u8> {
        let mut block = Vec::new();
        for (service, s) in self.services.iter().enumerate() {
            for (domain, groups) in s.domains.iter().enumerate() {
                let Some(timers) = groups.get(index).filter(|t| !t.is_empty()) else {
                    continue;
                };
                write_section_header(&mut block, 2 * service + domain, timers.len() as u32);
                for (ts, id) in timers {
                    // A malformed id cannot come from a service; write what is there.
                    let (key, ns) = split_id(id).unwrap_or((id, &[]));
                    write_bytes(&mut block, key);
                    write_bytes(&mut block, ns);
                    block.extend_from_slice(&ts.to_be_bytes());
                    write_bytes(&mut block, &[]);
                }
            }
        }
        block
    }

    /// Uploads the timers file of checkpoint `id`; `None` when there is no timer service.
    pub(crate) fn upload(&self, store: &CheckpointStore, id: u64) -> Result<Option<FileEntry>> {
        if self.services.is_empty() {
            return Ok(None);
        }
        build_parallel(self.range, |index, _| self.block(index))?
            .publish(store, id, TIMERS_FILE, FileRole::Timers)
            .map(Some)
    }
}

/// Restored timers of one service, waiting for the service to be created: per domain,
/// `(key group, timestamp, id)`.
#[derive(Debug, Clone)]
pub(crate) struct RestoredTimers {
    pub(crate) meta: TimerMeta,
    pub(crate) timers: [Vec<(u16, u64, TimerId)>; 2],
}

/// Reads the timers of the key groups of `range` from the timer files of `sources` (which
/// `plan_restore` has checked), verifying each file first.
pub(crate) fn read_timers(
    sources: &[&RestoreSource],
    range: KeyGroupRange,
) -> Result<BTreeMap<String, RestoredTimers>> {
    let mut out: BTreeMap<String, RestoredTimers> = BTreeMap::new();
    for source in sources {
        let manifest = &source.manifest;
        for file in manifest.files.iter().filter(|f| f.role == FileRole::Timers) {
            let bytes = read_verified(source.storage.as_ref(), file)?;
            blocks::check_header(&file.path, &bytes)?;
            let sections = 2 * manifest.timers.len();
            for entry in file.blocks.iter().filter(|b| range.contains(b.group)) {
                let corrupt = |e: crate::error::CodecError| CheckpointError::Corrupt {
                    path: file.path.clone(),
                    reason: format!("timers of key group {}: {e}", entry.group),
                };
                let block = blocks::read_block(&file.path, &bytes, entry)?;
                let parts = blocks::sections(&block, sections, |_, input| {
                    blocks::skip_record(input, RecordShape::Single)
                })
                .map_err(corrupt)?;
                for part in parts {
                    let meta = &manifest.timers[part.state / 2];
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
                    let mut input: &[u8] = &part.bytes;
                    for _ in 0..part.records {
                        let key = read_bytes(&mut input, "timer key").map_err(corrupt)?;
                        let ns = read_bytes(&mut input, "timer namespace").map_err(corrupt)?;
                        let ts = read_stamp(&mut input).map_err(corrupt)?;
                        read_bytes(&mut input, "timer value").map_err(corrupt)?;
                        let id = id_from_parts(key, ns);
                        restored.timers[part.state % 2].push((entry.group, ts, id));
                    }
                }
            }
        }
    }
    Ok(out)
}
