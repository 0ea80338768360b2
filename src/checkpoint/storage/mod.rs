//! Where checkpoint files live: the [`CheckpointStorage`] trait and its implementations, a
//! crash-safe local directory ([`LocalStorage`], the default), memory ([`MemoryStorage`]),
//! S3-compatible object storage ([`ObjectStorage`], cargo feature `s3`) and a fault-injecting
//! wrapper ([`FaultyStorage`]).
//!
//! Every path is checked by [`check_path`](super::format::path::check_path) first, so no caller,
//! and no manifest read back from storage, can reach outside the root.

mod faults;
mod local;
mod lock;
mod memory;
#[cfg(feature = "s3")]
mod object;

pub use faults::FaultyStorage;
pub use local::LocalStorage;
pub use lock::{DirLock, LOCK_FILE};
pub use memory::MemoryStorage;
#[cfg(feature = "s3")]
pub use object::{ObjectStorage, ObjectStorageOptions};

use std::fmt;
use std::fs::{self, File};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;

use crate::error::{CheckpointError, Result};

/// Size and crc32 of a stored file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileInfo {
    /// Bytes.
    pub size: u64,
    /// crc32 (IEEE, as `crc32fast` computes it) of the bytes.
    pub crc32: u32,
}

impl FileInfo {
    /// The size and crc32 of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        FileInfo {
            size: bytes.len() as u64,
            crc32: crc32fast::hash(bytes),
        }
    }
}

/// A flat store of immutable files under relative paths (`shared/<file>`, `chk-<id>/<file>`:
/// one or two components of `[A-Za-z0-9._-]`, never `.` or `..`).
///
/// **Atomic visibility**: after `put` returns, the whole file is durable and visible under its
/// path; if the process dies during `put`, the path shows either nothing or (when it existed)
/// the previous contents, never a partial file. Files are never modified in place.
pub trait CheckpointStorage: Send + Sync + fmt::Debug {
    /// Stores `bytes` at `path`, atomically, replacing any previous file.
    ///
    /// # Errors
    ///
    /// A path outside the layout
    /// ([`CheckpointError::UnsafePath`](crate::CheckpointError::UnsafePath)) and the storage's
    /// own failures: local I/O naming the file ([`Error::File`](crate::Error::File)) or a remote request that
    /// failed after its retries ([`CheckpointError::Remote`](crate::CheckpointError::Remote)
    /// and the other remote variants).
    fn put(&self, path: &str, bytes: &[u8]) -> Result<()>;

    /// Stores `bytes` at `path` only if nothing is there (publish-once): a file that exists is
    /// [`CheckpointError::AlreadyExists`] and stays untouched. Manifests and other commit
    /// points are written this way, so no writer can ever replace a completed one. The
    /// default checks, then writes: atomic only for a single writer; implementations do better
    /// (a no-clobber link locally, a conditional put on object storage).
    ///
    /// # Errors
    ///
    /// A path outside the layout
    /// ([`CheckpointError::UnsafePath`](crate::CheckpointError::UnsafePath)) and the storage's
    /// own failures: local I/O naming the file ([`Error::File`](crate::Error::File)) or a remote request that
    /// failed after its retries ([`CheckpointError::Remote`](crate::CheckpointError::Remote)
    /// and the other remote variants).
    fn put_new(&self, path: &str, bytes: &[u8]) -> Result<()> {
        if self.size(path)?.is_some() {
            return Err(CheckpointError::AlreadyExists {
                path: path.to_owned(),
            }
            .into());
        }
        self.put(path, bytes)
    }

    /// Stores the local file `source` at `path`, atomically; returns its size and crc32.
    /// Implementations stream, so a large SST file need not fit in memory.
    ///
    /// # Errors
    ///
    /// A path outside the layout
    /// ([`CheckpointError::UnsafePath`](crate::CheckpointError::UnsafePath)) and the storage's
    /// own failures: local I/O naming the file ([`Error::File`](crate::Error::File)) or a remote request that
    /// failed after its retries ([`CheckpointError::Remote`](crate::CheckpointError::Remote)
    /// and the other remote variants).
    fn put_file(&self, path: &str, source: &Path) -> Result<FileInfo> {
        let bytes = fs::read(source)?;
        self.put(path, &bytes)?;
        Ok(FileInfo::of(&bytes))
    }

    /// The contents of `path`; [`CheckpointError::Missing`] when absent.
    ///
    /// # Errors
    ///
    /// A path outside the layout
    /// ([`CheckpointError::UnsafePath`](crate::CheckpointError::UnsafePath)) and the storage's
    /// own failures: local I/O naming the file ([`Error::File`](crate::Error::File)) or a remote request that
    /// failed after its retries ([`CheckpointError::Remote`](crate::CheckpointError::Remote)
    /// and the other remote variants).
    fn get(&self, path: &str) -> Result<Bytes>;

    /// Copies `path` into the local file `dest` (created or truncated) and returns what was
    /// copied. The copy is not fsynced: restore writes working files that a crash makes us
    /// rebuild from the checkpoint anyway, never the only copy of anything.
    ///
    /// # Errors
    ///
    /// A path outside the layout
    /// ([`CheckpointError::UnsafePath`](crate::CheckpointError::UnsafePath)) and the storage's
    /// own failures: local I/O naming the file ([`Error::File`](crate::Error::File)) or a remote request that
    /// failed after its retries ([`CheckpointError::Remote`](crate::CheckpointError::Remote)
    /// and the other remote variants).
    fn get_to_file(&self, path: &str, dest: &Path) -> Result<FileInfo> {
        let bytes = self.get(path)?;
        let mut file = File::create(dest)?;
        file.write_all(&bytes)?;
        Ok(FileInfo::of(&bytes))
    }

    /// Like [`get_to_file`](Self::get_to_file), but may make `dest` share the stored file
    /// (a hard link) instead of copying it. Only for files the caller never modifies (RocksDB
    /// SSTs): stored files are immutable, and so must the shared one stay.
    ///
    /// # Errors
    ///
    /// A path outside the layout
    /// ([`CheckpointError::UnsafePath`](crate::CheckpointError::UnsafePath)) and the storage's
    /// own failures: local I/O naming the file ([`Error::File`](crate::Error::File)) or a remote request that
    /// failed after its retries ([`CheckpointError::Remote`](crate::CheckpointError::Remote)
    /// and the other remote variants).
    fn link_to_file(&self, path: &str, dest: &Path) -> Result<FileInfo> {
        self.get_to_file(path, dest)
    }

    /// The size of `path`, or `None` when absent.
    ///
    /// # Errors
    ///
    /// A path outside the layout
    /// ([`CheckpointError::UnsafePath`](crate::CheckpointError::UnsafePath)) and the storage's
    /// own failures: local I/O naming the file ([`Error::File`](crate::Error::File)) or a remote request that
    /// failed after its retries ([`CheckpointError::Remote`](crate::CheckpointError::Remote)
    /// and the other remote variants).
    fn size(&self, path: &str) -> Result<Option<u64>>;

    /// Every stored file's path, sorted.
    ///
    /// # Errors
    ///
    /// A path outside the layout
    /// ([`CheckpointError::UnsafePath`](crate::CheckpointError::UnsafePath)) and the storage's
    /// own failures: local I/O naming the file ([`Error::File`](crate::Error::File)) or a remote request that
    /// failed after its retries ([`CheckpointError::Remote`](crate::CheckpointError::Remote)
    /// and the other remote variants).
    fn list(&self) -> Result<Vec<String>>;

    /// Removes `path`; removing an absent file is not an error.
    ///
    /// # Errors
    ///
    /// A path outside the layout
    /// ([`CheckpointError::UnsafePath`](crate::CheckpointError::UnsafePath)) and the storage's
    /// own failures: local I/O naming the file ([`Error::File`](crate::Error::File)) or a remote request that
    /// failed after its retries ([`CheckpointError::Remote`](crate::CheckpointError::Remote)
    /// and the other remote variants).
    fn delete(&self, path: &str) -> Result<()>;

    /// How many file transfers of one checkpoint may run at once against this storage
    /// (uploads of a snapshot's files, downloads of a restore's). Remote stores gain most;
    /// local directories a little (several SSTs copy in parallel).
    fn transfer_concurrency(&self) -> usize {
        4
    }

    /// Makes the caller the only writer of this storage until the returned guard is dropped
    /// (a [`CheckpointStore`](super::CheckpointStore) holds it while open), or fails when
    /// another process (or another store in this one) is the writer. Storage without a way to
    /// lock (memory, object storage) returns `None`: one writer per root is then the caller's
    /// to ensure.
    ///
    /// # Errors
    ///
    /// [`CheckpointError::Locked`] when another writer holds the storage; the lock cannot be
    /// taken ([`Error::File`](crate::Error::File)).
    fn lock_exclusive(&self) -> Result<Option<DirLock>> {
        Ok(None)
    }

    /// Removes empty checkpoint directories (left by attempts that failed before their first
    /// file, say on a full disk); `shared/` stays. Called by a store's clean while no attempt
    /// is in flight. The default (storage without directories) does nothing.
    ///
    /// # Errors
    ///
    /// The root cannot be listed.
    fn remove_empty_dirs(&self) -> Result<usize> {
        Ok(0)
    }

    /// Removes leftovers of interrupted writes (temporary files). Called when a
    /// [`CheckpointStore`](super::CheckpointStore) opens.
    ///
    /// # Errors
    ///
    /// A path outside the layout
    /// ([`CheckpointError::UnsafePath`](crate::CheckpointError::UnsafePath)) and the storage's
    /// own failures: local I/O naming the file ([`Error::File`](crate::Error::File)) or a remote request that
    /// failed after its retries ([`CheckpointError::Remote`](crate::CheckpointError::Remote)
    /// and the other remote variants).
    fn remove_temporaries(&self) -> Result<usize> {
        Ok(0)
    }
}

fn missing(path: &str) -> CheckpointError {
    CheckpointError::Missing {
        path: path.to_owned(),
    }
}

/// Runs `f` over `items` with at most `concurrency` at a time (scoped threads) and returns the
/// results in order; after a failure no new item starts, and the first failure (by index) is
/// returned. Uploads and downloads of a checkpoint's files go through this, so a restore from
/// object storage is not one file at a time.
#[cfg(feature = "rocksdb")]
pub(crate) fn map_bounded<T: Sync, R: Send>(
    items: &[T],
    concurrency: usize,
    f: impl Fn(&T) -> crate::Result<R> + Sync,
) -> crate::Result<Vec<R>> {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    if concurrency <= 1 || items.len() <= 1 {
        return items.iter().map(f).collect();
    }
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let results: Vec<parking_lot::Mutex<Option<crate::Result<R>>>> = items
        .iter()
        .map(|_| parking_lot::Mutex::new(None))
        .collect();
    std::thread::scope(|scope| {
        for _ in 0..concurrency.min(items.len()) {
            scope.spawn(|| {
                while !failed.load(Ordering::SeqCst) {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(item) = items.get(i) else { break };
                    let r = f(item);
                    if r.is_err() {
                        failed.store(true, Ordering::SeqCst);
                    }
                    *results[i].lock() = Some(r);
                }
            });
        }
    });
    let mut out = Vec::with_capacity(items.len());
    let mut not_run = false;
    // The first failure by index wins; after one, later items may not have run.
    for r in results.into_iter().map(|m| m.into_inner()) {
        match r {
            Some(r) => out.push(r?),
            None => not_run = true,
        }
    }
    // Items start in index order and stop only after a failure, which the loop above has
    // returned: every item ran.
    assert!(
        !not_run,
        "a transfer was skipped without a failure before it"
    );
    Ok(out)
}

/// Opens checkpoint storage by URL: `file:///path` or a plain path is a [`LocalStorage`]
/// (fsync and atomic rename); `s3://bucket/prefix` is an [`ObjectStorage`] (cargo feature
/// `s3`) configured from the `AWS_*` environment plus `settings` (object_store's names, such
/// as `aws_endpoint` or `aws_allow_http`).
///
/// # Errors
///
/// [`CheckpointError::StorageConfig`](crate::CheckpointError::StorageConfig) for an unknown
/// scheme, an `s3://` URL without the `s3` feature or a bad setting; the storage's own failures
/// to open.
pub fn open_storage(
    url: &str,
    settings: &[(String, String)],
) -> crate::Result<Arc<dyn CheckpointStorage>> {
    if let Some(path) = url.strip_prefix("file://") {
        return Ok(Arc::new(LocalStorage::new(path)?));
    }
    if url.starts_with("s3://") {
        #[cfg(feature = "s3")]
        {
            let options = ObjectStorageOptions {
                settings: settings.to_vec(),
                ..ObjectStorageOptions::default()
            };
            return Ok(Arc::new(ObjectStorage::open(url, options)?));
        }
        #[cfg(not(feature = "s3"))]
        {
            let _ = settings;
            return Err(CheckpointError::StorageConfig(format!(
                "{url}: S3 storage needs the `s3` cargo feature"
            ))
            .into());
        }
    }
    if url.contains("://") {
        return Err(CheckpointError::StorageConfig(format!(
            "{url}: unknown scheme (file:// or s3://)"
        ))
        .into());
    }
    Ok(Arc::new(LocalStorage::new(url)?))
}
