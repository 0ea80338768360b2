//! [`LocalStorage`]: checkpoint files in a local directory, written crash-safely.

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::{CheckpointStorage, DirLock, FileInfo, missing};
use crate::checkpoint::format::path::{SHARED_DIR, check_path};
use crate::error::{CheckpointError, IoAt, Result};

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
    ///
    /// # Errors
    ///
    /// The directory cannot be created ([`Error::File`](crate::Error::File)).
    pub fn new(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        fs::create_dir_all(&root).at(&root)?;
        Ok(LocalStorage {
            root,
            hard_links: true,
        })
    }

    /// Whether [`link_to_file`](CheckpointStorage::link_to_file) may hard-link stored files
    /// into a restored database (default on; it falls back to a copy across file systems).
    /// Restoring RocksDB SSTs by link costs a read for the checksum instead of a copy.
    #[must_use]
    pub fn with_hard_links(mut self, on: bool) -> Self {
        self.hard_links = on;
        self
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file system path of storage path `path`, after checking its text
    /// ([`check_path`]) and that its directory, if any, is a real directory under the root and
    /// not a symbolic link that would lead reads and deletes elsewhere.
    fn resolve(&self, path: &str) -> Result<PathBuf> {
        check_path(path)?;
        if let Some((dir, _)) = path.split_once('/') {
            let dir = self.root.join(dir);
            match fs::symlink_metadata(&dir) {
                Ok(m) if m.file_type().is_symlink() || !m.is_dir() => {
                    return Err(CheckpointError::UnsafePath {
                        path: path.to_owned(),
                        reason: "its directory is a symbolic link or not a directory",
                    }
                    .into());
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).at(&dir),
            }
        }
        Ok(self.root.join(path))
    }

    /// Opens the stored file `path` for reading: never through a symbolic link, never blocking
    /// on a FIFO or device, and only a regular file.
    fn open_stored(&self, path: &str) -> Result<(File, PathBuf)> {
        let full = self.resolve(path)?;
        let file = match open_regular(&full) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(missing(path).into()),
            Err(e) if is_not_regular(&e) => {
                return Err(CheckpointError::NotRegular {
                    path: path.to_owned(),
                }
                .into());
            }
            Err(e) => return Err(e).at(&full),
        };
        Ok((file, full))
    }

    /// Creates the parent directory of `target` if needed (durably) and returns it.
    fn parent_of(&self, target: &Path) -> Result<PathBuf> {
        let parent = target.parent().unwrap_or(&self.root).to_path_buf();
        if !parent.exists() {
            fs::create_dir_all(&parent).at(&parent)?;
            sync_dir(&self.root).at(&self.root)?;
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
            .tempfile_in(&parent)
            .at(&parent)?;
        let out = fill(temp.as_file_mut()).at(temp.path())?;
        temp.as_file().sync_all().at(temp.path())?;
        if clobber {
            temp.persist(&target).map_err(|e| e.error).at(&target)?;
        } else {
            // A hard link, then unlink of the temporary: atomic create-if-absent.
            temp.persist_noclobber(&target).map_err(|e| {
                if e.error.kind() == io::ErrorKind::AlreadyExists {
                    crate::Error::from(CheckpointError::AlreadyExists {
                        path: path.to_owned(),
                    })
                } else {
                    crate::Error::File {
                        path: target.clone(),
                        source: e.error,
                    }
                }
            })?;
        }
        sync_dir(&parent).at(&parent)?;
        Ok(out)
    }
}

/// Copies `input` into a new file `dest` through a temporary file beside it and a rename:
/// `dest` is never opened for writing, so whatever it was (a hard link to a stored file, say)
/// is replaced, never written through, and a crash leaves no half-written `dest`. Refuses an
/// existing `dest`. Not fsynced: restores write working files a crash makes us rebuild.
fn copy_to_new_file(input: &mut File, dest: &Path) -> Result<FileInfo> {
    let dir = dest.parent().unwrap_or(Path::new("."));
    let mut temp = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .tempfile_in(dir)
        .at(dir)?;
    let info = copy_with_crc(input, temp.as_file_mut()).at(temp.path())?;
    temp.persist_noclobber(dest)
        .map_err(|e| crate::Error::File {
            path: dest.to_path_buf(),
            source: e.error,
        })?;
    Ok(info)
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
        size += u64::try_from(n).unwrap_or(u64::MAX);
    }
    Ok(FileInfo {
        size,
        crc32: hasher.finalize(),
    })
}

/// Opens `path` read-only without following a final symbolic link and without blocking (a
/// FIFO would wait for a writer), then refuses anything but a regular file.
fn open_regular(path: &Path) -> io::Result<File> {
    let mut options = fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
    }
    let file = options.open(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, NOT_REGULAR));
    }
    Ok(file)
}

const NOT_REGULAR: &str = "not a regular file";

/// Whether an error of [`open_regular`] says the path is a symbolic link or not a regular
/// file.
fn is_not_regular(e: &io::Error) -> bool {
    #[cfg(unix)]
    if e.raw_os_error() == Some(libc::ELOOP) {
        return true;
    }
    e.kind() == io::ErrorKind::InvalidInput && e.to_string() == NOT_REGULAR
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
        let mut input = File::open(source).at(source)?;
        self.publish(path, true, |out| copy_with_crc(&mut input, out))
    }

    fn get(&self, path: &str) -> Result<Bytes> {
        let (file, full) = self.open_stored(path)?;
        if file.metadata().at(&full)?.len() == 0 {
            return Ok(Bytes::new()); // an empty file cannot be mapped
        }
        // SAFETY: published files are immutable (written once through a temporary file and a
        // rename, never modified in place), so the mapping does not change under us.
        #[expect(
            unsafe_code,
            reason = "mapping an immutable published file; see SAFETY"
        )]
        let map = unsafe { memmap2::Mmap::map(&file).at(&full)? };
        Ok(Bytes::from_owner(map))
    }

    fn get_to_file(&self, path: &str, dest: &Path) -> Result<FileInfo> {
        let (mut input, _) = self.open_stored(path)?;
        copy_to_new_file(&mut input, dest)
    }

    fn link_to_file(&self, path: &str, dest: &Path) -> Result<FileInfo> {
        if self.hard_links {
            let (_, source) = self.open_stored(path)?; // a regular file, not a symbolic link
            match fs::hard_link(&source, dest) {
                // The checksum is still computed from the bytes, through a mapping.
                Ok(()) => return Ok(FileInfo::of(&self.get(path)?)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(missing(path).into()),
                // Another file has that name: never open it (it may be a link to a stored
                // file), never replace it.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Err(e).at(dest),
                Err(e) => {
                    tracing::debug!(error = %e, "hard link failed (another file system?); copying");
                }
            }
        }
        self.get_to_file(path, dest)
    }

    fn size(&self, path: &str) -> Result<Option<u64>> {
        let full = self.resolve(path)?;
        // Not following a final symbolic link: a link is not a stored file.
        match fs::symlink_metadata(&full) {
            Ok(m) if m.is_file() => Ok(Some(m.len())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).at(&full),
        }
    }

    fn list(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.root).at(&self.root)? {
            let entry = entry.at(&self.root)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let kind = entry.file_type().at(entry.path())?;
            if kind.is_file() {
                out.push(name);
            } else if kind.is_dir() {
                let dir = entry.path();
                for inner in fs::read_dir(&dir).at(&dir)? {
                    let inner = inner.at(&dir)?;
                    let file = inner.file_name().to_string_lossy().into_owned();
                    if !file.starts_with('.') && inner.file_type().at(inner.path())?.is_file() {
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
            Err(e) => return Err(e).at(&target),
        }
        if let Some(parent) = target.parent() {
            sync_dir(parent).at(parent)?;
            // A checkpoint directory goes once its last file has; `shared/` stays.
            if parent != self.root && !parent.ends_with(SHARED_DIR) {
                let _ = fs::remove_dir(parent); // fails while not empty, which is fine
            }
        }
        Ok(())
    }

    fn lock_exclusive(&self) -> Result<Option<DirLock>> {
        DirLock::acquire(&self.root).map(Some)
    }

    fn remove_empty_dirs(&self) -> Result<usize> {
        let mut removed = 0;
        for entry in fs::read_dir(&self.root).at(&self.root)? {
            let entry = entry.at(&self.root)?;
            let is_dir = entry.file_type().at(entry.path())?.is_dir(); // links are not dirs
            if is_dir && entry.file_name() != SHARED_DIR {
                // Fails while not empty, which is the point.
                if fs::remove_dir(entry.path()).is_ok() {
                    removed += 1;
                }
            }
        }
        if removed > 0 {
            sync_dir(&self.root).at(&self.root)?;
        }
        Ok(removed)
    }

    fn remove_temporaries(&self) -> Result<usize> {
        let mut removed = 0;
        let mut dirs = vec![self.root.clone()];
        for entry in fs::read_dir(&self.root).at(&self.root)? {
            let entry = entry.at(&self.root)?;
            if entry.file_type().at(entry.path())?.is_dir() {
                dirs.push(entry.path());
            }
        }
        for dir in dirs {
            for entry in fs::read_dir(&dir).at(&dir)? {
                let entry = entry.at(&dir)?;
                if entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
                    fs::remove_file(entry.path()).at(entry.path())?;
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
