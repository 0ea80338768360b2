//! Reading the canonical key-group format ([`blocks`](super::blocks)) back: per state and key
//! group, the records of the owned key groups as slices of the decompressed blocks, not yet
//! decoded (the engine does that once the state's types are known, at registration).

// A decoder of bytes from disk or the network: no indexing that can panic.
#![deny(clippy::indexing_slicing)]

use std::collections::BTreeMap;

use bytes::Bytes;

use super::blocks::{self, RecordShape};
use super::manifest::{BlockEntry, Manifest, SnapshotKind};
use crate::error::{CheckpointError, Result};
use crate::types::StateMeta;

/// Whether `manifest` describes a snapshot in the canonical format (heap checkpoints and every
/// savepoint), as opposed to an engine's native files.
pub(crate) fn is_canonical(manifest: &Manifest) -> bool {
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

/// Decompresses one block of a data file of `version` and splits it into per-state sections
/// (records in the record form).
pub(crate) fn split_block(
    path: &str,
    file: &[u8],
    version: u16,
    entry: &BlockEntry,
    shapes: &[RecordShape],
) -> Result<(u16, Vec<blocks::Section>)> {
    let block = blocks::read_block(path, file, entry)?;
    let sections = blocks::sections(&block, version, shapes.len(), |state| {
        // `sections` checked the index against `shapes.len()`.
        shapes.get(state).copied().unwrap_or(RecordShape::Single)
    })
    .map_err(|e| CheckpointError::Corrupt {
        path: path.to_owned(),
        reason: format!("key group {}: {e}", entry.group),
    })?;
    Ok((entry.group, sections))
}
