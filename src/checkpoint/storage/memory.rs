//! [`MemoryStorage`]: checkpoint files in memory.

use std::collections::BTreeMap;
use std::fmt;

use bytes::Bytes;
use parking_lot::Mutex;

use super::{CheckpointStorage, missing};
use crate::checkpoint::format::path::check_path;
use crate::error::{CheckpointError, Result};

/// Checkpoint files in memory: for tests, and for small jobs that need checkpoints only to
/// rescale or to survive a failure of the processing code, not of the process (Flink's memory
/// state backend).
#[derive(Default)]
pub struct MemoryStorage {
    files: Mutex<BTreeMap<String, Bytes>>,
}

impl MemoryStorage {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Total bytes stored.
    pub fn total_bytes(&self) -> u64 {
        self.files.lock().values().map(|b| b.len() as u64).sum()
    }

    /// Replaces a stored file's bytes without any check (tests of corruption).
    pub fn overwrite_unchecked(&self, path: &str, bytes: Vec<u8>) {
        self.files
            .lock()
            .insert(path.to_owned(), Bytes::from(bytes));
    }
}

impl CheckpointStorage for MemoryStorage {
    fn put(&self, path: &str, bytes: &[u8]) -> Result<()> {
        check_path(path)?;
        self.files
            .lock()
            .insert(path.to_owned(), Bytes::copy_from_slice(bytes));
        Ok(())
    }

    /// Transfers are memory copies: threads would only add their cost.
    fn transfer_concurrency(&self) -> usize {
        1
    }

    fn put_new(&self, path: &str, bytes: &[u8]) -> Result<()> {
        check_path(path)?;
        match self.files.lock().entry(path.to_owned()) {
            std::collections::btree_map::Entry::Occupied(_) => {
                Err(CheckpointError::AlreadyExists {
                    path: path.to_owned(),
                }
                .into())
            }
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert(Bytes::copy_from_slice(bytes));
                Ok(())
            }
        }
    }

    fn get(&self, path: &str) -> Result<Bytes> {
        check_path(path)?;
        self.files
            .lock()
            .get(path)
            .cloned()
            .ok_or_else(|| missing(path).into())
    }

    fn size(&self, path: &str) -> Result<Option<u64>> {
        check_path(path)?;
        Ok(self.files.lock().get(path).map(|b| b.len() as u64))
    }

    fn list(&self) -> Result<Vec<String>> {
        Ok(self.files.lock().keys().cloned().collect())
    }

    fn delete(&self, path: &str) -> Result<()> {
        check_path(path)?;
        self.files.lock().remove(path);
        Ok(())
    }
}

impl fmt::Debug for MemoryStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let files = self.files.lock();
        f.debug_struct("MemoryStorage")
            .field("files", &files.len())
            .field("bytes", &files.values().map(|b| b.len()).sum::<usize>())
            .finish()
    }
}
