//! Reading the canonical key-group format ([`blocks`](super::blocks)) back: per state and key
//! group, the records of the owned key groups as slices of the decompressed blocks, not yet
//! decoded (the engine does that once the state's types are known, at registration).

use std::collections::BTreeMap;

use bytes::Bytes;
use rayon::prelude::*;

use super::blocks::{self, RecordShape};
use super::{BlockEntry, FileRole, Manifest, RestoreSource, SnapshotKind, read_verified};
use crate::error::{CheckpointError, Result};
use crate::key_group::KeyGroupRange;
use crate::state::StateMeta;

/// Whether `manifest` describes a snapshot in the canonical format (heap checkpoints and every
/// savepoint), as opposed to an engine's native files.
pub fn is_canonical(manifest: &Manifest) -> bool {
    manifest.kind == SnapshotKind::Savepoint || manifest.engine == "heap"
}

/// Restored records of one key group of one state, not yet decoded.
#[derive(Debug, Clone)]
pub(crate) struct RestoredGroup {
    pub(crate) records: u32,
    pub(crate) bytes: Bytes,
}

/// A restored state waiting for its registration.
#[derive(Debug, Clone)]
pub(crate) struct Restored {
    pub(crate) meta: StateMeta,
    pub(crate) groups: BTreeMap<u16, RestoredGroup>,
}

/// Reads the key groups of `range` from verified data files of `sources` into per-state
/// restored records. Only the blocks of groups in `range` are decompressed.
pub(crate) fn read_sources(
    sources: &[&RestoreSource],
    states: &[StateMeta],
    range: KeyGroupRange,
) -> Result<BTreeMap<String, Restored>> {
    let mut out: BTreeMap<String, Restored> = states
        .iter()
        .map(|m| {
            (
                m.name.clone(),
                Restored {
                    meta: m.clone(),
                    groups: BTreeMap::new(),
                },
            )
        })
        .collect();
    for source in sources {
        let manifest = &source.manifest;
        if !is_canonical(manifest) {
            return Err(CheckpointError::Incompatible(format!(
                "checkpoint {} is a native {} {} checkpoint, not in the canonical format",
                manifest.checkpoint_id, manifest.engine, manifest.kind
            ))
            .into());
        }
        let shapes: Vec<RecordShape> = manifest
            .states
            .iter()
            .map(|m| RecordShape::of(m.kind))
            .collect();
        for file in manifest
            .files
            .iter()
            .filter(|f| f.role == FileRole::KeyGroupData)
        {
            let wanted: Vec<_> = file
                .blocks
                .iter()
                .filter(|b| range.contains(b.group))
                .collect();
            if wanted.is_empty() {
                continue;
            }
            let bytes = read_verified(source.storage.as_ref(), file)?;
            blocks::check_header(&file.path, &bytes)?;
            // Decompress and split blocks in parallel; each is independent.
            let split = wanted
                .par_iter()
                .map(|entry| split_block(&file.path, &bytes, entry, &shapes))
                .collect::<Result<Vec<_>>>()?;
            for (group, sections) in split {
                for s in sections {
                    let name = &manifest.states[s.state].name;
                    if let Some(r) = out.get_mut(name) {
                        r.groups.insert(
                            group,
                            RestoredGroup {
                                records: s.records,
                                bytes: s.bytes,
                            },
                        );
                    }
                }
            }
        }
    }
    Ok(out)
}

/// Decompresses one block and splits it into per-state sections.
fn split_block(
    path: &str,
    file: &[u8],
    entry: &BlockEntry,
    shapes: &[RecordShape],
) -> Result<(u16, Vec<blocks::Section>)> {
    let block = blocks::read_block(path, file, entry)?;
    let sections = blocks::sections(&block, shapes.len(), |state, input| {
        blocks::skip_record(input, shapes[state])
    })
    .map_err(|e| CheckpointError::Corrupt {
        path: path.to_owned(),
        reason: format!("key group {}: {e}", entry.group),
    })?;
    Ok((entry.group, sections))
}
