//! [`FaultyStorage`]: a [`CheckpointStorage`] wrapper that fails operations on demand, for
//! tests and the simulator.
//!
//! Operations are numbered from 0 in the order they reach the wrapper. `fail_from(k)` makes
//! operation k and every later one fail (an outage, or a crash when the caller then drops
//! everything and reopens the inner storage); `fail_only(k)` fails just operation k (a
//! transient error). A failed `put` writes nothing, as the storage contract's atomic
//! visibility promises — unless [`tear_writes`](FaultyStorage::tear_writes) is on: then the
//! `put` that `fail_from` stops publishes the first half of its bytes (a torn tail, what a
//! storage without atomic publication leaves when the writer dies), so tests can show that
//! nothing completed ever depends on such a file and that recovery removes it.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;

use super::{CheckpointStorage, FileInfo};
use crate::error::{CheckpointError, Result};

/// See the module documentation.
pub struct FaultyStorage {
    inner: Arc<dyn CheckpointStorage>,
    ops: AtomicU64,
    fail_from: AtomicU64,
    fail_only: AtomicU64,
    full_from: AtomicU64,
    tear: AtomicBool,
}

impl FaultyStorage {
    /// Wraps `inner`; no operation fails until told to.
    pub fn new(inner: Arc<dyn CheckpointStorage>) -> Self {
        FaultyStorage {
            inner,
            ops: AtomicU64::new(0),
            fail_from: AtomicU64::new(u64::MAX),
            fail_only: AtomicU64::new(u64::MAX),
            full_from: AtomicU64::new(u64::MAX),
            tear: AtomicBool::new(false),
        }
    }

    /// From operation `op` on, every write fails as a full disk does: a real
    /// [`std::io::ErrorKind::StorageFull`] error (`ENOSPC`), not an injected one, so callers
    /// that tell planned faults from real ones treat it as real. Reads and deletes go on
    /// (deleting is how space comes back).
    pub fn fill_up_from(&self, op: u64) {
        self.full_from.store(op, Ordering::SeqCst);
    }

    /// Fails operation `op` and every later one.
    pub fn fail_from(&self, op: u64) {
        self.fail_from.store(op, Ordering::SeqCst);
    }

    /// Fails operation `op` only.
    pub fn fail_only(&self, op: u64) {
        self.fail_only.store(op, Ordering::SeqCst);
    }

    /// Whether the `put` at which `fail_from` starts leaves a torn file (see the module
    /// documentation).
    pub fn tear_writes(&self, on: bool) {
        self.tear.store(on, Ordering::SeqCst);
    }

    /// Stops failing (and frees the space of [`fill_up_from`](Self::fill_up_from)).
    pub fn heal(&self) {
        self.fail_from.store(u64::MAX, Ordering::SeqCst);
        self.fail_only.store(u64::MAX, Ordering::SeqCst);
        self.full_from.store(u64::MAX, Ordering::SeqCst);
    }

    /// Operations seen so far (failed ones included).
    pub fn operations(&self) -> u64 {
        self.ops.load(Ordering::SeqCst)
    }

    fn check(&self, what: &str, path: &str) -> Result<()> {
        self.check_put(what, path, None)
    }

    /// Like `check`; for a `put` of `bytes` at the operation where `fail_from` starts, with
    /// tearing on, publishes half of them first.
    fn check_put(&self, what: &str, path: &str, bytes: Option<&dyn Fn() -> Vec<u8>>) -> Result<()> {
        let n = self.ops.fetch_add(1, Ordering::SeqCst);
        if bytes.is_some() && n >= self.full_from.load(Ordering::SeqCst) {
            return Err(crate::Error::File {
                path: path.into(),
                source: disk_full(),
            });
        }
        let from = self.fail_from.load(Ordering::SeqCst);
        if n >= from || n == self.fail_only.load(Ordering::SeqCst) {
            if let Some(bytes) = bytes.filter(|_| n == from && self.tear.load(Ordering::SeqCst)) {
                let all = bytes();
                // Best effort: the writer is dying anyway.
                let _ = self.inner.put(path, &all[..all.len() / 2]);
            }
            return Err(CheckpointError::Injected(format!("{what} {path} (operation {n})")).into());
        }
        Ok(())
    }
}

/// What a write to a full disk fails with.
fn disk_full() -> std::io::Error {
    #[cfg(unix)]
    {
        std::io::Error::from_raw_os_error(libc::ENOSPC)
    }
    #[cfg(not(unix))]
    {
        std::io::Error::from(std::io::ErrorKind::StorageFull)
    }
}

impl CheckpointStorage for FaultyStorage {
    fn put(&self, path: &str, bytes: &[u8]) -> Result<()> {
        self.check_put("put", path, Some(&|| bytes.to_vec()))?;
        self.inner.put(path, bytes)
    }

    fn put_new(&self, path: &str, bytes: &[u8]) -> Result<()> {
        self.check_put("put", path, Some(&|| bytes.to_vec()))?;
        self.inner.put_new(path, bytes)
    }

    fn put_file(&self, path: &str, source: &Path) -> Result<FileInfo> {
        self.check_put(
            "put",
            path,
            Some(&|| std::fs::read(source).unwrap_or_default()),
        )?;
        self.inner.put_file(path, source)
    }

    fn get(&self, path: &str) -> Result<Bytes> {
        self.check("get", path)?;
        self.inner.get(path)
    }

    fn get_to_file(&self, path: &str, dest: &Path) -> Result<FileInfo> {
        self.check("get", path)?;
        self.inner.get_to_file(path, dest)
    }

    fn link_to_file(&self, path: &str, dest: &Path) -> Result<FileInfo> {
        self.check("get", path)?;
        self.inner.link_to_file(path, dest)
    }

    fn size(&self, path: &str) -> Result<Option<u64>> {
        self.check("size", path)?;
        self.inner.size(path)
    }

    fn list(&self) -> Result<Vec<String>> {
        self.check("list", "")?;
        self.inner.list()
    }

    fn delete(&self, path: &str) -> Result<()> {
        self.check("delete", path)?;
        self.inner.delete(path)
    }

    /// One at a time: operation numbers must be deterministic for fault injection to be.
    fn transfer_concurrency(&self) -> usize {
        1
    }

    /// Not an operation that fails on purpose (and not counted): the lock is the inner
    /// storage's.
    fn lock_exclusive(&self) -> Result<Option<super::DirLock>> {
        self.inner.lock_exclusive()
    }

    /// Not counted: directories are not files, and the operation numbers of checkpoints stay
    /// what they were.
    fn remove_empty_dirs(&self) -> Result<usize> {
        self.inner.remove_empty_dirs()
    }

    fn remove_temporaries(&self) -> Result<usize> {
        self.check("remove temporaries", "")?;
        self.inner.remove_temporaries()
    }
}

impl fmt::Debug for FaultyStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultyStorage")
            .field("inner", &self.inner)
            .field("operations", &self.operations())
            .finish()
    }
}
