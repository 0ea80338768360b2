//! RocksDB checkpoints: incremental by shared SST files, and restore with rescaling.
//!
//! Synchronous part: flush every column family, then a RocksDB checkpoint (hard links to the
//! live SSTs plus a fresh MANIFEST, CURRENT and OPTIONS) into a staging directory beside the
//! database — a consistent file set that compactions cannot delete under us. Background part:
//! each SST goes to `shared/<engine id>-<file>` unless a retained completed checkpoint already
//! holds that name (SSTs are immutable and their numbers never reused within one database, so
//! the name identifies the content); the small private files are copied every time. Full
//! mode copies every SST into the checkpoint's own directory instead.
//!
//! Restore downloads the best-overlapping checkpoint's files (checked against size and crc32)
//! and opens them; when rescaling, it deletes the key groups outside the new range with range
//! deletions on their key-group prefixes and brings the other sources' key groups in as SST
//! files (`SstFileWriter` + `ingest_external_file`), never entry by entry through the write
//! path.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use crate::backend::{SnapshotMode, SnapshotOutput, SnapshotUpload};
use crate::checkpoint::storage::map_bounded;
use crate::checkpoint::{CheckpointStore, FileEntry, FileRole, SnapshotKind, checkpoint_dir};
use crate::error::{CheckpointError, IoAt, Result};
use crate::types::StateMeta;

/// The background part of a RocksDB checkpoint.
pub(crate) struct RocksUpload {
    /// The RocksDB checkpoint directory (hard links), removed when the upload ends.
    pub(crate) staging: PathBuf,
    pub(crate) mode: SnapshotMode,
    /// This database's id, the prefix of its shared file names.
    pub(crate) uid: String,
    /// Shared names of SSTs restored from a checkpoint, by local file name.
    pub(crate) restored: HashMap<String, String>,
    pub(crate) states: Vec<StateMeta>,
}

/// The shared name of a local SST.
pub(crate) fn shared_path(uid: &str, restored: &HashMap<String, String>, local: &str) -> String {
    restored
        .get(local)
        .cloned()
        .unwrap_or_else(|| format!("shared/{uid}-{local}"))
}

/// The local file name of a checkpoint file: shared SSTs drop their `<id>-` prefix.
pub(crate) fn local_name(entry: &FileEntry) -> &str {
    let name = entry.file_name();
    match entry.role {
        FileRole::SharedSst => name.split_once('-').map_or(name, |(_, local)| local),
        _ => name,
    }
}

impl RocksUpload {
    fn run(&self, store: &CheckpointStore, id: u64) -> Result<SnapshotOutput> {
        let mut names: Vec<String> = fs::read_dir(&self.staging)
            .and_then(|entries| {
                entries
                    .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
                    .collect::<std::io::Result<_>>()
            })
            .at(&self.staging)?;
        names.sort();
        let storage = store.storage();
        // First what each file is (sequential: cheap), then the uploads, several at a time.
        enum Plan {
            Held(FileEntry),
            Upload(String, FileRole, PathBuf),
        }
        let mut plans = Vec::with_capacity(names.len());
        for name in names {
            let local = self.staging.join(&name);
            let is_sst = name.ends_with(".sst");
            if is_sst && self.mode == SnapshotMode::Checkpoint {
                let path = shared_path(&self.uid, &self.restored, &name);
                if let Some(held) = store.shared_file(&path) {
                    let size = fs::metadata(&local).at(&local)?.len();
                    if size != held.size {
                        return Err(CheckpointError::SizeMismatch {
                            path,
                            expected: held.size,
                            actual: size,
                        }
                        .into());
                    }
                    plans.push(Plan::Held(held));
                    continue;
                }
                plans.push(Plan::Upload(path, FileRole::SharedSst, local));
            } else {
                let path = format!("{}/{name}", checkpoint_dir(id));
                plans.push(Plan::Upload(path, FileRole::Private, local));
            }
        }
        let mut uploaded = 0u64;
        let files = map_bounded(&plans, storage.transfer_concurrency(), |plan| match plan {
            Plan::Held(held) => Ok((held.clone(), 0)),
            Plan::Upload(path, role, local) => {
                let info = storage.put_file(path, local)?;
                let entry = FileEntry {
                    path: path.clone(),
                    role: *role,
                    size: info.size,
                    crc32: info.crc32,
                    blocks: Vec::new(),
                };
                Ok((entry, info.size))
            }
        })?
        .into_iter()
        .map(|(entry, bytes)| {
            uploaded += bytes;
            entry
        })
        .collect();
        Ok(SnapshotOutput {
            kind: if self.mode == SnapshotMode::Checkpoint {
                SnapshotKind::Incremental
            } else {
                SnapshotKind::Full
            },
            states: self.states.clone(),
            files,
            uploaded_bytes: uploaded,
        })
    }
}

impl SnapshotUpload for RocksUpload {
    fn upload(self: Box<Self>, store: &CheckpointStore, id: u64) -> Result<SnapshotOutput> {
        let result = self.run(store, id);
        if let Err(e) = fs::remove_dir_all(&self.staging) {
            tracing::warn!(dir = %self.staging.display(), error = %e, "could not remove a checkpoint staging directory");
        }
        result
    }
}

/// The staging directory of checkpoint `id` of the database at `db`: a sibling, on the same
/// file system (hard links need that).
pub(crate) fn staging_dir(db: &Path, id: u64) -> PathBuf {
    let mut name = db.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".staging-{id}"));
    db.with_file_name(name)
}

/// Removes leftover staging directories of the database at `db`.
pub(crate) fn remove_stale_staging(db: &Path) {
    let (Some(parent), Some(name)) = (db.parent(), db.file_name()) else {
        return;
    };
    let prefix = format!("{}.staging-", name.to_string_lossy());
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix)
            && let Err(e) = fs::remove_dir_all(entry.path())
        {
            tracing::warn!(dir = %entry.path().display(), error = %e, "could not remove a stale staging directory");
        }
    }
}
