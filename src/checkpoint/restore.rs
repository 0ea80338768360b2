//! The engine-neutral side of restoring: which checkpoints restore which key groups
//! ([`plan_restore`]), and reading the canonical data files and the timers files of the owned
//! key groups (every file verified against its size and crc32 before a byte of it is used).

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::fmt;
use std::sync::Arc;

use rayon::prelude::*;

use super::format::blocks::{self, RecordShape};
use super::format::canonical::{self, Restored, RestoredGroup, is_canonical};
use super::format::manifest::{FileRole, Manifest};
use super::format::timers::{self, RestoredTimers};
use super::storage::CheckpointStorage;
use super::store::{CheckpointStore, read_verified};
use crate::error::{CheckpointError, Result};
use crate::key_group::KeyGroupRange;
use crate::types::StateMeta;

/// A completed snapshot to restore from: its manifest and the storage holding its files.
#[derive(Clone)]
pub struct RestoreSource {
    /// The storage root of the checkpoint.
    pub storage: Arc<dyn CheckpointStorage>,
    /// Its manifest.
    pub manifest: Manifest,
}

impl RestoreSource {
    /// The latest completed checkpoint of `store`.
    ///
    /// # Errors
    ///
    /// [`CheckpointError::NoCheckpoint`](crate::CheckpointError::NoCheckpoint) when the store
    /// holds no completed checkpoint.
    pub fn latest(store: &CheckpointStore) -> Result<Self> {
        let manifest = store
            .latest()
            .ok_or_else(|| CheckpointError::NoCheckpoint(format!("{:?}", store.storage())))?;
        Ok(RestoreSource {
            storage: store.storage().clone(),
            manifest,
        })
    }
}

impl fmt::Debug for RestoreSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RestoreSource")
            .field("storage", &self.storage)
            .field("checkpoint", &self.manifest.checkpoint_id)
            .field("range", &self.manifest.range)
            .finish()
    }
}

/// Checks that `sources` can restore key groups `range` of `max_parallelism`: same number of
/// key groups, no key group in two sources, every group of `range` in one, and one metadata
/// per state name. Returns the sources that overlap `range` and the states, by name.
///
/// # Errors
///
/// [`CheckpointError::Incompatible`](crate::CheckpointError::Incompatible) naming the conflict:
/// another `max_parallelism`, two sources holding the same key group, a key group of `range` in
/// none, one state with different metadata in two sources.
pub fn plan_restore(
    sources: &[RestoreSource],
    max_parallelism: u32,
    range: KeyGroupRange,
) -> Result<(Vec<&RestoreSource>, Vec<StateMeta>)> {
    let incompatible = |m: String| CheckpointError::Incompatible(m);
    let mut used: Vec<&RestoreSource> = Vec::new();
    let mut states: Vec<StateMeta> = Vec::new();
    for s in sources {
        let m = &s.manifest;
        if m.max_parallelism != max_parallelism {
            return Err(incompatible(format!(
                "checkpoint {} has max_parallelism {}, the backend {max_parallelism}",
                m.checkpoint_id, m.max_parallelism
            ))
            .into());
        }
        let overlap = m.range.intersect(&range);
        if overlap.is_empty() {
            continue;
        }
        if let Some(other) = used
            .iter()
            .find(|o| !o.manifest.range.intersect(&overlap).is_empty())
        {
            return Err(incompatible(format!(
                "checkpoints {} ({}) and {} ({}) both hold key groups of {range}",
                other.manifest.checkpoint_id, other.manifest.range, m.checkpoint_id, m.range
            ))
            .into());
        }
        for meta in &m.states {
            match states.iter().find(|s| s.name == meta.name) {
                Some(known) => {
                    if let Some((field, a, b)) = known.restore_difference(meta) {
                        return Err(incompatible(format!(
                            "state '{}' has {field} {a} in one checkpoint and {b} in another",
                            meta.name
                        ))
                        .into());
                    }
                }
                None => states.push(meta.clone()),
            }
        }
        used.push(s);
    }
    let covered: usize = used
        .iter()
        .map(|s| s.manifest.range.intersect(&range).len())
        .sum();
    if covered != range.len() {
        return Err(incompatible(format!(
            "the checkpoints hold {covered} of the {} key groups of {range}",
            range.len()
        ))
        .into());
    }
    states.sort_by(|a, b| a.name.cmp(&b.name));
    Ok((used, states))
}

/// Reads the key groups of `range` from verified data files of `sources` into per-state
/// restored records. Only the blocks of groups in `range` are decompressed.
pub(crate) fn read_canonical(
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
            let version = blocks::check_header(&file.path, &bytes)?;
            // Decompress and split blocks in parallel; each is independent.
            let split = wanted
                .par_iter()
                .map(|entry| canonical::split_block(&file.path, &bytes, version, entry, &shapes))
                .collect::<Result<Vec<_>>>()?;
            for (group, sections) in split {
                for s in sections {
                    // `sections` checked the index against the manifest's states.
                    let Some(meta) = manifest.states.get(s.state) else {
                        continue;
                    };
                    if let Some(r) = out.get_mut(&meta.name) {
                        match r.groups.entry(group) {
                            Entry::Vacant(v) => {
                                v.insert(RestoredGroup {
                                    records: s.records,
                                    bytes: s.bytes,
                                });
                            }
                            // The group continues from an earlier block (a group too large
                            // for one): its records follow the earlier ones.
                            Entry::Occupied(mut o) => {
                                let g = o.get_mut();
                                g.records = g.records.checked_add(s.records).ok_or_else(|| {
                                    CheckpointError::Corrupt {
                                        path: file.path.clone(),
                                        reason: format!("key group {group}: too many records"),
                                    }
                                })?;
                                g.bytes = [&g.bytes[..], &s.bytes[..]].concat().into();
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(out)
}

/// The timers a restore read for a backend's key groups, by timer service, waiting for the
/// services to be created (an engine hands them to the backend through
/// [`Engine::take_restored_timers`](crate::Engine::take_restored_timers)).
#[derive(Debug, Clone, Default)]
pub struct RestoredTimerSet {
    pub(crate) services: BTreeMap<String, RestoredTimers>,
}

impl RestoredTimerSet {
    /// Reads the timers of the key groups of `range` from the timers files of `sources` (all
    /// of one `max_parallelism`, as [`plan_restore`] checks), verifying each file first.
    ///
    /// # Errors
    ///
    /// A missing or damaged timers file, or one service with other codecs in two sources.
    pub fn read(sources: &[&RestoreSource], range: KeyGroupRange) -> Result<Self> {
        Ok(RestoredTimerSet {
            services: read_timers(sources, range)?,
        })
    }

    /// Whether no timer service has restored timers.
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }

    /// The names of the services with restored timers.
    pub fn services(&self) -> impl Iterator<Item = &str> {
        self.services.keys().map(String::as_str)
    }
}

/// Reads the timers of the key groups of `range` from the timer files of `sources` (which
/// `plan_restore` has checked), verifying each file first.
fn read_timers(
    sources: &[&RestoreSource],
    range: KeyGroupRange,
) -> Result<BTreeMap<String, RestoredTimers>> {
    let mut out: BTreeMap<String, RestoredTimers> = BTreeMap::new();
    for source in sources {
        let manifest = &source.manifest;
        for file in manifest.files.iter().filter(|f| f.role == FileRole::Timers) {
            let bytes = read_verified(source.storage.as_ref(), file)?;
            let version = blocks::check_header(&file.path, &bytes)?;
            for entry in file.blocks.iter().filter(|b| range.contains(b.group)) {
                timers::decode_block(manifest, &file.path, &bytes, version, entry, &mut out)?;
            }
        }
    }
    Ok(out)
}
