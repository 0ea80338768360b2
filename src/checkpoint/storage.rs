//! Where checkpoint files live: the [`CheckpointStorage`] trait, a crash-safe local directory
//! ([`LocalStorage`], the default) and an in-memory store ([`MemoryStorage`]).
//!
//! Every path is checked by [`check_path`](super::path::check_path) first, so no caller, and no
//! manifest read back from storage, can reach outside the root.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use parking_lot::Mutex;

use super::path::check_path;
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

/// A flat store of immutable files under relative paths (see [`super::path`]).
///
/// **Atomic visibility**: after `put` returns, the whole file is durable and visible under its
/// path; if the process dies during `put`, the path shows either nothing or (when it existed)
/// the previous contents, never a partial file. Files are never modified in place.
pub trait CheckpointStorage: Send + Sync + fmt::Debug {
    /// Stores `bytes` at `path`, atomically, replacing any previous file.
    fn put(&self, path: &str, bytes: &[u8]) -> Result<()>;

    /// Stores `bytes` at `path` only if nothing is there (publish-once): a file that exists is
    /// [`CheckpointError::AlreadyExists`] and stays untouched. Manifests and other commit
    /// points are written this way, so no writer can ever replace a completed one. The
    /// default checks, then writes: atomic only for a single writer; implementations do better
    /// (a no-clobber link locally, a conditional put on object storage).
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
    fn put_file(&self, path: &str, source: &Path) -> Result<FileInfo> {
        let bytes = fs::read(source)?;
        self.put(path, &bytes)?;
        Ok(FileInfo::of(&bytes))
    }

    /// The contents of `path`; [`CheckpointError::Missing`] when absent.
    fn get(&self, path: &str) -> Result<Bytes>;

    /// Copies `path` into the local file `dest` (created or truncated) and returns what was
    /// copied. The copy is not fsynced: restore writes working files that a crash makes us
    /// rebuild from the checkpoint anyway, never the only copy of anything.
    fn get_to_file(&self, path: &str, dest: &Path) -> Result<FileInfo> {
        let bytes = self.get(path)?;
        let mut file = File::create(dest)?;
        file.write_all(&bytes)?;
        Ok(FileInfo::of(&bytes))
    }

    /// Like [`get_to_file`](Self::get_to_file), but may make `dest` share the stored file
    /// (a hard link) instead of copying it. Only for files the caller never modifies (RocksDB
    /// SSTs): stored files are immutable, and so must the shared one stay.
    fn link_to_file(&self, path: &str, dest: &Path) -> Result<FileInfo> {
        self.get_to_file(path, dest)
    }

    /// The size of `path`, or `None` when absent.
    fn size(&self, path: &str) -> Result<Option<u64>>;

    /// Every stored file's path, sorted.
    fn list(&self) -> Result<Vec<String>>;

    /// Removes `path`; removing an absent file is not an error.
    fn delete(&self, path: &str) -> Result<()>;

    /// How many file transfers of one checkpoint may run at once against this storage
    /// (uploads of a snapshot's files, downloads of a restore's). Remote stores gain most;
    /// local directories a little (several SSTs copy in parallel).
    fn transfer_concurrency(&self) -> usize {
        4
    }

    /// Removes leftovers of interrupted writes (temporary files). Called when a
    /// [`CheckpointStore`](super::CheckpointStore) opens.
    fn remove_temporaries(&self) -> Result<usize> {
        Ok(0)
    }
}

fn missing(path: &str) -> CheckpointError {
    CheckpointError::Missing {
        path: path.to_owned(),
    }
}

/// Prefix of temporary files; a leading `.` keeps them out of [`CheckpointStorage::list`].
const TEMP_PREFIX: &str = ".tmp-";

/// Checkpoint files in a local directory, written crash-safely: a temporary file in the
/// target's directory, fsync, rename over the target, fsync of the directory.
///
/// [`get`](CheckpointStorage::get) maps the file into memory (`memmap2`), so restore reads
/// each byte once and decodes straight from the mapping. Published files are never modified
/// (see the trait), which is what makes the mapping safe.
pub struct LocalStorage {
    root: PathBuf,
    hard_links: bool,
}

impl LocalStorage {
    /// Uses directory `root`, creating it if needed.
    pub fn new(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        fs::create_dir_all(&root)?;
        Ok(LocalStorage {
            root,
            hard_links: true,
        })
    }

    /// Whether [`link_to_file`](CheckpointStorage::link_to_file) may hard-link stored files
    /// into a restored database (default on; it falls back to a copy across file systems).
    /// Restoring RocksDB SSTs by link costs a read for the checksum instead of a copy.
    pub fn with_hard_links(mut self, on: bool) -> Self {
        self.hard_links = on;
        self
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn resolve(&self, path: &str) -> Result<PathBuf> {
        check_path(path)?;
        Ok(self.root.join(path))
    }

    /// Creates the parent directory of `target` if needed (durably) and returns it.
    fn parent_of(&self, target: &Path) -> Result<PathBuf> {
        let parent = target.parent().unwrap_or(&self.root).to_path_buf();
        if !parent.exists() {
            fs::create_dir_all(&parent)?;
            sync_dir(&self.root)?;
        }
        Ok(parent)
    }

    /// Writes through a temporary file with `fill`, then publishes it at `path` (replacing a
    /// previous file, or, with `clobber` false, failing when one exists).
    fn publish<T>(
        &self,
        path: &str,
        clobber: bool,
        fill: impl FnOnce(&mut File) -> io::Result<T>,
    ) -> Result<T> {
        let target = self.resolve(path)?;
        let parent = self.parent_of(&target)?;
        let mut temp = tempfile::Builder::new()
            .prefix(TEMP_PREFIX)
            .tempfile_in(&parent)?;
        let out = fill(temp.as_file_mut())?;
        temp.as_file().sync_all()?;
        if clobber {
            temp.persist(&target).map_err(|e| e.error)?;
        } else {
            // A hard link, then unlink of the temporary: atomic create-if-absent.
            temp.persist_noclobber(&target).map_err(|e| {
                if e.error.kind() == io::ErrorKind::AlreadyExists {
                    crate::Error::from(CheckpointError::AlreadyExists {
                        path: path.to_owned(),
                    })
                } else {
                    e.error.into()
                }
            })?;
        }
        sync_dir(&parent)?;
        Ok(out)
    }
}

/// Copies `input` to `out` in 1 MiB chunks, computing the size and crc32 on the way.
fn copy_with_crc(input: &mut impl Read, out: &mut impl Write) -> io::Result<FileInfo> {
    let mut hasher = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = input.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])?;
        size += n as u64;
    }
    Ok(FileInfo {
        size,
        crc32: hasher.finalize(),
    })
}

/// fsync of a directory, so a rename or a new entry in it is durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl CheckpointStorage for LocalStorage {
    fn put(&self, path: &str, bytes: &[u8]) -> Result<()> {
        self.publish(path, true, |f| f.write_all(bytes))
    }

    fn put_new(&self, path: &str, bytes: &[u8]) -> Result<()> {
        self.publish(path, false, |f| f.write_all(bytes))
    }

    fn put_file(&self, path: &str, source: &Path) -> Result<FileInfo> {
        let mut input = File::open(source)?;
        self.publish(path, true, |out| copy_with_crc(&mut input, out))
    }

    fn get(&self, path: &str) -> Result<Bytes> {
        let file = match File::open(self.resolve(path)?) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(missing(path).into()),
            Err(e) => return Err(e.into()),
        };
        if file.metadata()?.len() == 0 {
            return Ok(Bytes::new()); // an empty file cannot be mapped
        }
        // SAFETY: published files are immutable (written once through a temporary file and a
        // rename, never modified in place), so the mapping does not change under us.
        let map = unsafe { memmap2::Mmap::map(&file)? };
        Ok(Bytes::from_owner(map))
    }

    fn get_to_file(&self, path: &str, dest: &Path) -> Result<FileInfo> {
        let source = self.resolve(path)?;
        let mut input = match File::open(&source) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(missing(path).into()),
            Err(e) => return Err(e.into()),
        };
        let mut out = File::create(dest)?;
        Ok(copy_with_crc(&mut input, &mut out)?)
    }

    fn link_to_file(&self, path: &str, dest: &Path) -> Result<FileInfo> {
        if self.hard_links {
            let source = self.resolve(path)?;
            match fs::hard_link(&source, dest) {
                // The checksum is still computed from the bytes, through a mapping.
                Ok(()) => return Ok(FileInfo::of(&self.get(path)?)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(missing(path).into()),
                Err(e) => {
                    tracing::debug!(error = %e, "hard link failed; copying");
                }
            }
        }
        self.get_to_file(path, dest)
    }

    fn size(&self, path: &str) -> Result<Option<u64>> {
        match fs::metadata(self.resolve(path)?) {
            Ok(m) if m.is_file() => Ok(Some(m.len())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn list(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.root)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let kind = entry.file_type()?;
            if kind.is_file() {
                out.push(name);
            } else if kind.is_dir() {
                for inner in fs::read_dir(entry.path())? {
                    let inner = inner?;
                    let file = inner.file_name().to_string_lossy().into_owned();
                    if !file.starts_with('.') && inner.file_type()?.is_file() {
                        out.push(format!("{name}/{file}"));
                    }
                }
            }
        }
        out.sort();
        Ok(out)
    }

    fn delete(&self, path: &str) -> Result<()> {
        let target = self.resolve(path)?;
        match fs::remove_file(&target) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        if let Some(parent) = target.parent() {
            sync_dir(parent)?;
            // A checkpoint directory goes once its last file has; `shared/` stays.
            if parent != self.root && !parent.ends_with(super::path::SHARED_DIR) {
                let _ = fs::remove_dir(parent); // fails while not empty, which is fine
            }
        }
        Ok(())
    }

    fn remove_temporaries(&self) -> Result<usize> {
        let mut removed = 0;
        let mut dirs = vec![self.root.clone()];
        for entry in fs::read_dir(&self.root)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                dirs.push(entry.path());
            }
        }
        for dir in dirs {
            for entry in fs::read_dir(&dir)? {
                let entry = entry?;
                if entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
                    fs::remove_file(entry.path())?;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }
}

impl fmt::Debug for LocalStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalStorage")
            .field("root", &self.root)
            .field("hard_links", &self.hard_links)
            .finish()
    }
}

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
