//! [`CheckpointStore`]: the checkpoints of one backend instance in one storage root, with
//! retention, shared-file reference counting and orphan cleanup.
//!
//! The protocol: [`begin`](CheckpointStore::begin) an id larger than every completed one;
//! upload files (new shared files under `shared/`, private ones under `chk-<id>/`);
//! [`complete`](CheckpointStore::complete) writes the manifest — the commit point — and then
//! subsumes checkpoints beyond the retained count (savepoints do not count and are never
//! subsumed: they stay until discarded), deleting exactly the files no retained checkpoint
//! references; or [`abort`](CheckpointStore::abort), which deletes what the attempt
//! uploaded and nothing a retained checkpoint needs. [`open`](CheckpointStore::open) after a crash removes whatever an
//! interrupted attempt or subsumption left behind.
//!
//! One writer per root: opening a store takes the storage's writer lock (a local directory's
//! OS file lock, [`DirLock`]), so a second process opening the same root gets
//! [`CheckpointError::Locked`] instead of cleaning up the first one's files.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;

use super::format::blocks::DataFileWriter;
use super::format::manifest::{FileEntry, FileRole, MAX_MANIFEST_BYTES, Manifest, SnapshotKind};
use super::format::path::{
    MANIFEST_FILE, SHARED_DIR, checkpoint_dir, manifest_path, parse_checkpoint_dir,
};
use super::storage::{CheckpointStorage, DirLock, FileInfo};
use crate::error::{CheckpointError, Result};

/// How many completed checkpoints a store keeps (Flink's `state.checkpoints.num-retained`).
pub const DEFAULT_RETAINED: usize = 1;

struct Inner {
    /// Completed, retained checkpoints by id.
    completed: BTreeMap<u64, Manifest>,
    /// Checkpoint directories whose manifest exists but does not validate: kept, reported, and
    /// a reason not to collect shared files (we cannot know what they reference).
    unreadable: BTreeMap<u64, String>,
    /// The attempt between `begin` and `complete`/`abort`.
    in_progress: Option<u64>,
    /// A deletion failed: garbage may be left, and the next `begin` cleans first.
    dirty: bool,
}

/// See the module documentation.
pub struct CheckpointStore {
    storage: Arc<dyn CheckpointStorage>,
    retain: usize,
    inner: Mutex<Inner>,
    /// The storage's writer lock (local directories), held while the store is open.
    _lock: Option<DirLock>,
}

/// What [`CheckpointStore::open`] found and cleaned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct OpenReport {
    /// Completed checkpoints kept.
    pub retained: Vec<u64>,
    /// Completed checkpoints beyond the retained count, removed.
    pub subsumed: Vec<u64>,
    /// Files removed: leftovers of aborted or interrupted checkpoints and unreferenced shared
    /// files.
    pub orphans_removed: usize,
    /// Checkpoint directories with an invalid manifest, left untouched, with the reason.
    pub unreadable: Vec<(u64, String)>,
}

impl CheckpointStore {
    /// Opens the checkpoints in `storage`, keeping the latest `retain` (at least 1) completed
    /// checkpoints and every savepoint, and removing everything else that is not referenced
    /// by them.
    ///
    /// # Errors
    ///
    /// [`CheckpointError::Locked`] when another process (or another open store) writes to
    /// this storage; the storage cannot be listed or a manifest cannot be read (a failed read
    /// is never taken as a verdict on the checkpoint), or a deletion while cleaning failed. A manifest that
    /// reads but does not validate is not an error: it is kept and reported
    /// ([`OpenReport::unreadable`]).
    pub fn open(storage: Arc<dyn CheckpointStorage>, retain: usize) -> Result<(Self, OpenReport)> {
        // First of all: a second writer must not clean, subsume or publish here.
        let lock = storage.lock_exclusive()?;
        let retain = retain.max(1);
        let mut report = OpenReport::default();
        let files = storage.list()?;
        let mut completed = BTreeMap::new();
        let mut unreadable = BTreeMap::new();
        for path in &files {
            let Some(id) = path
                .strip_suffix(&format!("/{MANIFEST_FILE}"))
                .and_then(parse_checkpoint_dir)
            else {
                continue; // directories without a manifest never completed: `clean` removes them
            };
            // A failed read is an error of `open`, not a verdict on the checkpoint: skipping a
            // readable-but-unread checkpoint would silently restore an older one.
            let checked = match storage.size(path)? {
                Some(n) if n > MAX_MANIFEST_BYTES => Err(CheckpointError::Corrupt {
                    path: path.clone(),
                    reason: format!("{n} bytes, more than any manifest ({MAX_MANIFEST_BYTES})"),
                }
                .into()),
                _ => Manifest::decode_for(id, path, &storage.get(path)?),
            };
            match checked {
                Ok(m) => {
                    completed.insert(id, m);
                }
                Err(e) => {
                    tracing::warn!(checkpoint = id, error = %e, "keeping a checkpoint whose manifest does not validate");
                    unreadable.insert(id, e.to_string());
                }
            }
        }
        let store = CheckpointStore {
            _lock: lock,
            storage,
            retain,
            inner: Mutex::new(Inner {
                completed,
                unreadable,
                in_progress: None,
                dirty: false,
            }),
        };
        {
            let mut inner = store.inner.lock();
            report.subsumed = store.subsume(&mut inner);
            report.orphans_removed = store.clean_locked(&mut inner)?;
            report.retained = inner.completed.keys().copied().collect();
            report.unreadable = inner
                .unreadable
                .iter()
                .map(|(id, e)| (*id, e.clone()))
                .collect();
        }
        Ok((store, report))
    }

    /// The storage.
    pub fn storage(&self) -> &Arc<dyn CheckpointStorage> {
        &self.storage
    }

    /// How many completed checkpoints are kept.
    pub fn retained_count(&self) -> usize {
        self.retain
    }

    /// The latest completed checkpoint.
    pub fn latest(&self) -> Option<Manifest> {
        self.inner.lock().completed.values().next_back().cloned()
    }

    /// A retained completed checkpoint by id.
    pub fn get(&self, id: u64) -> Option<Manifest> {
        self.inner.lock().completed.get(&id).cloned()
    }

    /// Every retained completed checkpoint, by ascending id.
    pub fn retained(&self) -> Vec<Manifest> {
        self.inner.lock().completed.values().cloned().collect()
    }

    /// The shared file at `path` as a retained completed checkpoint lists it: an incremental
    /// checkpoint references such a file instead of uploading it again. Files of checkpoints
    /// that never completed are never offered.
    #[cfg(feature = "rocksdb")]
    pub(crate) fn shared_file(&self, path: &str) -> Option<FileEntry> {
        let inner = self.inner.lock();
        inner
            .completed
            .values()
            .rev()
            .flat_map(|m| m.files.iter())
            .find(|f| f.path == path)
            .cloned()
    }

    /// Starts checkpoint `id`: it must be larger than every completed one, and no other
    /// checkpoint of this store may be in progress.
    pub(crate) fn begin(&self, id: u64) -> Result<()> {
        let mut inner = self.inner.lock();
        let protocol = |reason: String| CheckpointError::Protocol { id, reason };
        if let Some(other) = inner.in_progress {
            return Err(protocol(format!("checkpoint {other} is still in progress")).into());
        }
        let last = inner
            .completed
            .keys()
            .chain(inner.unreadable.keys())
            .next_back()
            .copied();
        if let Some(last) = last.filter(|&l| l >= id) {
            return Err(protocol(format!("checkpoint {last} already exists")).into());
        }
        if inner.dirty
            && let Err(e) = self.clean_locked(&mut inner)
        {
            tracing::warn!(error = %e, "cleaning up after an earlier failure failed; retrying later");
        }
        inner.in_progress = Some(id);
        Ok(())
    }

    /// Removes everything no retained checkpoint needs: temporary files, directories of
    /// checkpoints that never completed, shared files nobody references. Runs on `open`, and
    /// on `begin` after a failed deletion; returns how many files it removed. Does nothing to
    /// shared files while a checkpoint is in progress (its new files are not referenced yet).
    ///
    /// # Errors
    ///
    /// A path outside the layout
    /// ([`CheckpointError::UnsafePath`](crate::CheckpointError::UnsafePath)) and the storage's
    /// own failures: local I/O naming the file ([`Error::File`](crate::Error::File)) or a remote request that
    /// failed after its retries ([`CheckpointError::Remote`](crate::CheckpointError::Remote)
    /// and the other remote variants).
    pub fn clean(&self) -> Result<usize> {
        let mut inner = self.inner.lock();
        self.clean_locked(&mut inner)
    }

    fn clean_locked(&self, inner: &mut Inner) -> Result<usize> {
        inner.dirty = true;
        let mut removed = self.storage.remove_temporaries()?;
        let files = self.storage.list()?;
        for path in &files {
            let Some(id) = path
                .split_once('/')
                .and_then(|(d, _)| parse_checkpoint_dir(d))
            else {
                continue;
            };
            let keep = inner.completed.contains_key(&id)
                || inner.unreadable.contains_key(&id)
                || inner.in_progress == Some(id);
            if !keep {
                self.storage.delete(path)?;
                removed += 1;
            }
        }
        if inner.in_progress.is_none() {
            removed += self.collect_shared(inner, &files)?;
            self.storage.remove_empty_dirs()?;
        }
        inner.dirty = false;
        Ok(removed)
    }

    /// Whether an earlier deletion failed, so garbage may be left until the next clean.
    pub fn has_garbage(&self) -> bool {
        self.inner.lock().dirty
    }

    /// Uploads a private file of checkpoint `id` from memory and returns its entry fields.
    pub(crate) fn put_private(
        &self,
        id: u64,
        name: &str,
        bytes: &[u8],
    ) -> Result<(String, FileInfo)> {
        let path = format!("{}/{name}", checkpoint_dir(id));
        self.storage.put(&path, bytes)?;
        Ok((path, FileInfo::of(bytes)))
    }

    /// Uploads a data file (key-group blocks) as checkpoint `id`'s private file `name` and
    /// returns its manifest entry, with `role` and the block index.
    pub(crate) fn put_data_file(
        &self,
        id: u64,
        name: &str,
        role: FileRole,
        file: DataFileWriter,
    ) -> Result<FileEntry> {
        let (bytes, blocks) = file.finish();
        let (path, info) = self.put_private(id, name, &bytes)?;
        Ok(FileEntry {
            path,
            role,
            size: info.size,
            crc32: info.crc32,
            blocks,
        })
    }

    /// Completes the checkpoint in progress: publishes its manifest (after this, the
    /// checkpoint exists), then subsumes old checkpoints. Failures while subsuming are logged,
    /// not returned: the checkpoint is complete, and the next `open` finishes the cleanup.
    pub(crate) fn complete(&self, manifest: Manifest) -> Result<()> {
        let id = manifest.checkpoint_id;
        let mut inner = self.inner.lock();
        if inner.in_progress != Some(id) {
            return Err(CheckpointError::Protocol {
                id,
                reason: "completed without begin".into(),
            }
            .into());
        }
        assert!(
            manifest.files.iter().all(|f| {
                f.path.starts_with(SHARED_DIR) || f.path.starts_with(&checkpoint_dir(id))
            }),
            "a checkpoint's files lie in shared/ or its own directory"
        );
        // Publish-once: a completed checkpoint's manifest is never replaced.
        self.storage
            .put_new(&manifest_path(id), &manifest.encode()?)?;
        inner.in_progress = None;
        inner.completed.insert(id, manifest);
        self.subsume(&mut inner);
        Ok(())
    }

    /// Abandons checkpoint `id`: deletes its directory and every shared file no retained
    /// checkpoint references (with one attempt in flight at a time, those are exactly what the
    /// attempt uploaded).
    pub(crate) fn abort(&self, id: u64) -> Result<()> {
        let mut inner = self.inner.lock();
        if inner.in_progress == Some(id) {
            inner.in_progress = None;
        }
        self.clean_locked(&mut inner).map(|_| ())
    }

    /// Removes checkpoint `id` whatever its state: completed (manifest first, then the files
    /// no other retained checkpoint references), unreadable (its directory), in progress (as
    /// an abort), or absent (nothing to do). A job whose checkpoint is complete
    /// only when every instance completed it uses this to withdraw the instances' part of an
    /// attempt that failed elsewhere, so retention never keeps a checkpoint the job cannot use
    /// in place of one it can.
    ///
    /// # Errors
    ///
    /// A path outside the layout
    /// ([`CheckpointError::UnsafePath`](crate::CheckpointError::UnsafePath)) and the storage's
    /// own failures: local I/O naming the file ([`Error::File`](crate::Error::File)) or a remote request that
    /// failed after its retries ([`CheckpointError::Remote`](crate::CheckpointError::Remote)
    /// and the other remote variants). The checkpoint is then withdrawn as far as the deletions
    /// went; the next clean finishes.
    pub fn discard(&self, id: u64) -> Result<()> {
        let mut inner = self.inner.lock();
        if inner.in_progress == Some(id) {
            inner.in_progress = None;
        }
        if let Some(old) = inner.completed.remove(&id) {
            inner.dirty = true;
            self.storage.delete(&manifest_path(id))?;
            let still = referenced(&inner);
            for f in old
                .files
                .iter()
                .filter(|f| !still.contains(f.path.as_str()))
            {
                self.storage.delete(&f.path)?;
            }
            inner.dirty = false;
        }
        if inner.unreadable.remove(&id).is_some() {
            inner.dirty = true;
        }
        // The directory's remaining files (private files, or those of an unreadable or
        // unfinished attempt) and shared files nobody references any more.
        self.clean_locked(&mut inner).map(|_| ())
    }

    /// Removes completed checkpoints beyond the retained count: manifest first (so a crash
    /// leaves an orphan, never a half-deleted checkpoint that looks complete), then the files
    /// nobody retained references.
    /// A failed deletion leaves the checkpoint subsumed (it is no longer offered) and marks
    /// the store for a later clean.
    fn subsume(&self, inner: &mut Inner) -> Vec<u64> {
        let mut subsumed = Vec::new();
        // Savepoints do not count and are not subsumed: they are the user's, kept until
        // discarded, and taking one must not drop the checkpoint (and its shared files) the
        // next incremental checkpoint builds on (Flink's FLINK-23949).
        let is_checkpoint = |m: &Manifest| m.kind != SnapshotKind::Savepoint;
        while inner
            .completed
            .values()
            .filter(|m| is_checkpoint(m))
            .count()
            > self.retain
        {
            let Some(id) = inner
                .completed
                .iter()
                .find(|(_, m)| is_checkpoint(m))
                .map(|(id, _)| *id)
            else {
                break;
            };
            let Some(old) = inner.completed.remove(&id) else {
                break;
            };
            subsumed.push(id);
            if let Err(e) = self.storage.delete(&manifest_path(id)) {
                tracing::warn!(checkpoint = id, error = %e, "could not delete a subsumed manifest");
                inner.dirty = true;
                continue; // its files stay until a clean sees the manifest gone
            }
            let still = referenced(inner);
            let mut failed = false;
            for f in old
                .files
                .iter()
                .filter(|f| !still.contains(f.path.as_str()))
            {
                if let Err(e) = self.storage.delete(&f.path) {
                    tracing::warn!(file = %f.path, error = %e, "could not delete a subsumed file");
                    failed = true;
                }
            }
            inner.dirty |= failed;
            tracing::debug!(checkpoint = id, "subsumed");
        }
        subsumed
    }

    /// Deletes shared files no retained checkpoint references, unless an unreadable manifest
    /// might reference them.
    fn collect_shared(&self, inner: &Inner, files: &[String]) -> Result<usize> {
        if !inner.unreadable.is_empty() {
            return Ok(0);
        }
        let referenced = referenced(inner);
        let mut removed = 0;
        for path in files {
            if path.starts_with(&format!("{SHARED_DIR}/")) && !referenced.contains(path.as_str()) {
                self.storage.delete(path)?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Checks every file of `manifest`: present, of the recorded size and crc32. Returns one
    /// error per bad file (empty when all are good).
    pub fn verify(&self, manifest: &Manifest) -> Vec<CheckpointError> {
        verify_files(self.storage.as_ref(), manifest)
    }

    /// The bytes of `entry`, checked against its size and crc32 before anything uses them.
    ///
    /// # Errors
    ///
    /// [`CheckpointError::Missing`](crate::CheckpointError::Missing),
    /// [`CheckpointError::SizeMismatch`](crate::CheckpointError::SizeMismatch) or
    /// [`CheckpointError::ChecksumMismatch`](crate::CheckpointError::ChecksumMismatch) for a
    /// file that is not as its entry records; the storage's failures.
    pub fn read_verified(&self, entry: &FileEntry) -> Result<Bytes> {
        read_verified(self.storage.as_ref(), entry)
    }
}

/// Every file referenced by a retained completed checkpoint.
fn referenced(inner: &Inner) -> BTreeSet<&str> {
    inner
        .completed
        .values()
        .flat_map(|m| m.files.iter().map(|f| f.path.as_str()))
        .collect()
}

/// See [`CheckpointStore::verify`].
pub fn verify_files(storage: &dyn CheckpointStorage, manifest: &Manifest) -> Vec<CheckpointError> {
    manifest
        .files
        .iter()
        .filter_map(|f| read_verified(storage, f).err().map(|e| (f, e)))
        .map(|(f, e)| match e {
            crate::Error::Checkpoint(c) => c,
            // Not a verdict on the bytes (an I/O error reading them): still name the file.
            other => CheckpointError::Unreadable {
                path: f.path.clone(),
                reason: other.to_string(),
            },
        })
        .collect()
}

/// See [`CheckpointStore::read_verified`].
pub(crate) fn read_verified(storage: &dyn CheckpointStorage, entry: &FileEntry) -> Result<Bytes> {
    let bytes = storage.get(&entry.path)?;
    check_file(entry, FileInfo::of(&bytes))?;
    Ok(bytes)
}

/// Copies `entry` to the local file `dest` (or links it, with `link`, for files nobody will
/// modify), checked against its size and crc32 (on a mismatch `dest` is removed).
#[cfg(feature = "rocksdb")]
pub(crate) fn fetch_verified(
    storage: &dyn CheckpointStorage,
    entry: &FileEntry,
    dest: &std::path::Path,
    link: bool,
) -> Result<()> {
    let info = if link {
        storage.link_to_file(&entry.path, dest)?
    } else {
        storage.get_to_file(&entry.path, dest)?
    };
    if let Err(e) = check_file(entry, info) {
        let _ = std::fs::remove_file(dest);
        return Err(e.into());
    }
    Ok(())
}

fn check_file(entry: &FileEntry, info: FileInfo) -> Result<(), CheckpointError> {
    if info.size != entry.size {
        return Err(CheckpointError::SizeMismatch {
            path: entry.path.clone(),
            expected: entry.size,
            actual: info.size,
        });
    }
    if info.crc32 != entry.crc32 {
        return Err(CheckpointError::ChecksumMismatch {
            path: entry.path.clone(),
            expected: entry.crc32,
            actual: info.crc32,
        });
    }
    Ok(())
}

impl fmt::Debug for CheckpointStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.inner.lock();
        f.debug_struct("CheckpointStore")
            .field("storage", &self.storage)
            .field("retain", &self.retain)
            .field("completed", &inner.completed.keys().collect::<Vec<_>>())
            .field("unreadable", &inner.unreadable.keys().collect::<Vec<_>>())
            .field("in_progress", &inner.in_progress)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    //! The protocol's ordering rules, through the crate-private steps a backend's checkpoint
    //! runs (`begin`, `put_private`, `complete`, `abort`); the integration tests drive the same
    //! rules through `KeyedStateBackend::checkpoint`.

    use super::*;
    use crate::checkpoint::{MemoryStorage, SnapshotKind};
    use crate::key_group::KeyGroupRange;

    fn manifest(id: u64, files: Vec<FileEntry>) -> Manifest {
        Manifest {
            checkpoint_id: id,
            kind: SnapshotKind::Full,
            engine: "heap".into(),
            max_parallelism: 128,
            range: KeyGroupRange::new(0, 127),
            created_at_millis: 0,
            states: Vec::new(),
            offsets: Vec::new(),
            timers: Vec::new(),
            files,
            uploaded_bytes: 0,
        }
    }

    fn private_file(store: &CheckpointStore, id: u64) -> FileEntry {
        let (path, info) = store.put_private(id, "data", b"bytes").unwrap();
        FileEntry {
            path,
            role: FileRole::Private,
            size: info.size,
            crc32: info.crc32,
            blocks: Vec::new(),
        }
    }

    #[test]
    fn ids_grow_and_one_checkpoint_is_in_flight_at_a_time() {
        let memory = Arc::new(MemoryStorage::new());
        let (store, _) = CheckpointStore::open(memory, 1).unwrap();
        store.begin(1).unwrap();
        let f = private_file(&store, 1);
        store.complete(manifest(1, vec![f])).unwrap();
        assert!(store.begin(1).is_err(), "ids must grow");
        store.begin(2).unwrap();
        assert!(
            store.begin(3).is_err(),
            "one checkpoint in flight at a time"
        );
        assert!(
            store.complete(manifest(3, Vec::new())).is_err(),
            "completed without begin"
        );
    }

    #[test]
    fn discard_and_abort_withdraw_an_attempt_in_progress() {
        let memory = Arc::new(MemoryStorage::new());
        let (store, _) = CheckpointStore::open(memory.clone(), 3).unwrap();
        store.begin(1).unwrap();
        let f = private_file(&store, 1);
        store.complete(manifest(1, vec![f])).unwrap();
        let before = memory.list().unwrap();
        // In progress: discard is an abort.
        store.begin(4).unwrap();
        private_file(&store, 4);
        store.discard(4).unwrap();
        assert_eq!(memory.list().unwrap(), before);
        store.begin(4).unwrap();
        private_file(&store, 4);
        store.abort(4).unwrap();
        assert_eq!(memory.list().unwrap(), before);
        // An unreadable (torn) manifest keeps its id until discarded.
        memory.put("chk-5/_manifest", b"KSCP torn").unwrap();
        drop(store);
        let (store, report) = CheckpointStore::open(memory.clone(), 3).unwrap();
        assert_eq!(report.unreadable.len(), 1);
        assert!(
            store.begin(5).is_err(),
            "an unreadable checkpoint still holds its id"
        );
        store.discard(5).unwrap();
        assert_eq!(memory.list().unwrap(), before);
        store.begin(5).unwrap();
    }
}
