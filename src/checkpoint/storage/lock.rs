//! [`DirLock`]: one process at a time owns a directory (a checkpoint storage root, a
//! simulation's run directory), through an exclusive OS file lock on a lock file inside it.
//! The operating system releases the lock when the process dies, however it dies, so a crash
//! never leaves a directory locked.

use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};

use crate::error::{CheckpointError, IoAt, Result};

/// The lock file's name: hidden (a leading `.`), so storage listings skip it.
pub const LOCK_FILE: &str = ".keyed-state.lock";

/// An exclusive lock on a directory, held until dropped.
///
/// ```
/// use keyed_state::checkpoint::DirLock;
/// # fn main() -> Result<(), keyed_state::Error> {
/// let dir = tempfile::tempdir()?;
/// let lock = DirLock::acquire(dir.path())?;
/// assert!(DirLock::acquire(dir.path()).is_err(), "a second owner is refused");
/// drop(lock);
/// DirLock::acquire(dir.path())?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct DirLock {
    _file: File,
    path: PathBuf,
}

impl DirLock {
    /// Takes the lock of `dir` (created if missing), or fails at once if another owner holds
    /// it (another process, or another owner in this one).
    ///
    /// # Errors
    ///
    /// [`CheckpointError::Locked`] naming the directory when someone else owns it; the lock
    /// file cannot be created or locked ([`Error::File`](crate::Error::File)).
    pub fn acquire(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).at(dir)?;
        let path = dir.join(LOCK_FILE);
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .at(&path)?;
        match file.try_lock() {
            Ok(()) => Ok(DirLock { _file: file, path }),
            Err(TryLockError::WouldBlock) => Err(CheckpointError::Locked {
                path: dir.display().to_string(),
            }
            .into()),
            Err(TryLockError::Error(e)) => Err(e).at(&path),
        }
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}
