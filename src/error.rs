//! Typed errors.
//!
//! One narrow enum per concern, each convertible into the umbrella [`Error`], so callers can
//! match precisely and `?` still works.

use crate::key_group::KeyGroupRange;

/// A value's bytes could not be decoded by its codec, or a value cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The input ended before the value was complete.
    #[error("unexpected end of input: needed {needed} more byte(s) to decode {what}")]
    UnexpectedEnd {
        /// What was being decoded (a codec id).
        what: &'static str,
        /// How many bytes were missing.
        needed: usize,
    },
    /// Bytes were left over after a complete value.
    #[error("{extra} trailing byte(s) after a complete {what}")]
    TrailingBytes {
        /// What was being decoded.
        what: &'static str,
        /// How many bytes were left.
        extra: usize,
    },
    /// The bytes are not a valid encoding of the type.
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// What was being decoded.
        what: &'static str,
        /// Why it is invalid.
        reason: String,
    },
    /// A length or count does not fit the field that must hold it (a string, value or list
    /// longer than `u32::MAX` bytes or items, a key group beyond a block's size limit).
    #[error("{what} of {len} is too large to encode")]
    TooLarge {
        /// What was being encoded.
        what: &'static str,
        /// Its length.
        len: u64,
    },
}

impl CodecError {
    /// [`CodecError::TooLarge`] for a length `len`.
    pub fn too_large(what: &'static str, len: usize) -> Self {
        CodecError::TooLarge {
            what,
            len: u64::try_from(len).unwrap_or(u64::MAX),
        }
    }
}

/// A configuration value is outside its allowed domain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `max_parallelism` must lie in `1..=32768`.
    #[error("max_parallelism {0} is outside 1..=32768")]
    MaxParallelism(u32),
    /// Parallelism must lie in `1..=max_parallelism`.
    #[error("parallelism {parallelism} is outside 1..={max_parallelism}")]
    Parallelism {
        /// The requested parallelism.
        parallelism: u32,
        /// The maximum parallelism it must not exceed.
        max_parallelism: u32,
    },
    /// An operator index must be below the parallelism.
    #[error("operator index {index} is not below parallelism {parallelism}")]
    OperatorIndex {
        /// The requested operator index.
        index: u32,
        /// The parallelism.
        parallelism: u32,
    },
    /// A key-group range reaches past `max_parallelism`.
    #[error("key-group range {range} does not fit max_parallelism {max_parallelism}")]
    RangeOutsideMaxParallelism {
        /// The offending range.
        range: KeyGroupRange,
        /// The maximum parallelism (number of key groups).
        max_parallelism: u32,
    },
    /// State written with one `max_parallelism` cannot be opened with another: the key → group
    /// mapping and the key layout depend on it.
    #[error("the state was written with max_parallelism {stored}, not {requested}")]
    MaxParallelismChanged {
        /// What the stored state was written with.
        stored: u32,
        /// What the engine was configured with.
        requested: u32,
    },
    /// A TTL must be at least one millisecond.
    #[error("TTL must be at least 1 ms")]
    ZeroTtl,
    /// A setting outside its domain, described (tools built on the library use it too).
    #[error("{0}")]
    Invalid(String),
}

/// A checkpoint, its manifest or one of its files is missing, malformed or inconsistent, or the
/// checkpoint protocol was used out of order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// A path is not a safe relative storage path (`..`, absolute, empty or odd components,
    /// separators where none belong).
    #[error("unsafe path {path:?} in checkpoint storage: {reason}")]
    UnsafePath {
        /// The offending path.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A file the checkpoint needs is not in storage.
    #[error("file {path} is missing from checkpoint storage")]
    Missing {
        /// The file's storage path.
        path: String,
    },
    /// A file has another size than its manifest records.
    #[error("file {path} has {actual} bytes, the manifest says {expected}")]
    SizeMismatch {
        /// The file's storage path.
        path: String,
        /// The size the manifest records.
        expected: u64,
        /// The size found.
        actual: u64,
    },
    /// A file's crc32 differs from its manifest's.
    #[error("file {path} has crc32 {actual:08x}, the manifest says {expected:08x}")]
    ChecksumMismatch {
        /// The file's storage path.
        path: String,
        /// The checksum the manifest records.
        expected: u32,
        /// The checksum computed.
        actual: u32,
    },
    /// A file's contents are malformed (bad magic, unknown version, truncated, bad block).
    #[error("file {path} is corrupt: {reason}")]
    Corrupt {
        /// The file's storage path.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A file the checkpoint lists could not be read (an I/O error, not a verdict on its
    /// bytes).
    #[error("file {path} cannot be read: {reason}")]
    Unreadable {
        /// The file's storage path.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// A storage path names something other than a regular file (a symbolic link, a FIFO, a
    /// device, a directory): refused before any byte is read.
    #[error("file {path} in checkpoint storage is not a regular file")]
    NotRegular {
        /// The file's storage path.
        path: String,
    },
    /// Another process (or another owner in this one) writes to this storage root or
    /// directory: one writer at a time.
    #[error(
        "{path} is owned by another process (or another store of this one): one writer at a time"
    )]
    Locked {
        /// The directory.
        path: String,
    },
    /// No completed checkpoint exists to restore from.
    #[error("no completed checkpoint in {0}")]
    NoCheckpoint(String),
    /// Restore inputs do not fit together (max parallelism, engine, overlapping ranges...).
    #[error("cannot restore: {0}")]
    Incompatible(String),
    /// A checkpoint with this id (or a later one) already completed, or one is in progress.
    #[error("checkpoint {id}: {reason}")]
    Protocol {
        /// The checkpoint id.
        id: u64,
        /// What was out of order.
        reason: String,
    },
    /// A publish-once write found a file already at its path (it is left untouched).
    #[error("file {path} already exists; completed files are never replaced")]
    AlreadyExists {
        /// The file's storage path.
        path: String,
    },
    /// Remote storage refused the credentials or the access (permanent: not retried).
    #[error("{url}: access denied: {reason}")]
    AccessDenied {
        /// The storage URL.
        url: String,
        /// What the store said.
        reason: String,
    },
    /// Remote storage has no such bucket or container (permanent: not retried).
    #[error("{url}: no such bucket: {reason}")]
    NoBucket {
        /// The storage URL.
        url: String,
        /// What the store said.
        reason: String,
    },
    /// A remote storage operation failed after its retries and within its deadline.
    #[error("{url}: {op} {path} failed: {reason}")]
    Remote {
        /// The storage URL.
        url: String,
        /// The operation.
        op: &'static str,
        /// The file's storage path.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// A storage URL or option that cannot be used.
    #[error("storage configuration: {0}")]
    StorageConfig(String),
    /// An operation failed on purpose (the fault-injecting storage of tests and the simulator).
    #[error("injected fault: {0}")]
    Injected(String),
    /// A RocksDB savepoint needs every state's key layout, which the engine learns when the
    /// state is registered in this process: a restored state not registered again refuses.
    #[error(
        "state '{state}' must be registered in this process before a savepoint (its key layout depends on its types)"
    )]
    Unregistered {
        /// The state's name.
        state: String,
    },
    /// The background part of a checkpoint stopped without a result (its thread panicked).
    #[error("checkpoint {0}: the background upload did not finish")]
    Lost(u64),
}

/// The umbrella error of every fallible operation in this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A key belongs to a key group this backend does not own.
    #[error("key group {group} is outside this backend's range {range}")]
    KeyGroupOutOfRange {
        /// The key's group.
        group: u16,
        /// The range the backend owns.
        range: KeyGroupRange,
    },
    /// A key handle was resolved for another `max_parallelism`.
    #[error("key was resolved for max_parallelism {key} but the backend uses {backend}")]
    MaxParallelismMismatch {
        /// The key's max parallelism.
        key: u32,
        /// The backend's max parallelism.
        backend: u32,
    },
    /// A state name was registered again with another kind, codec or TTL.
    #[error("state '{name}' is already registered with {field} {existing}, not {requested}")]
    IncompatibleRegistration {
        /// The state's name.
        name: String,
        /// Which part of the registration differs (`kind`, `value codec`, ...).
        field: &'static str,
        /// What the existing registration has.
        existing: String,
        /// What this registration asked for.
        requested: String,
    },
    /// Stored bytes of a state could not be decoded.
    #[error("state '{state}': {source}")]
    Decode {
        /// The state whose bytes are bad.
        state: String,
        /// What the codec said.
        #[source]
        source: CodecError,
    },
    /// No state of that name is registered.
    #[error("no state named '{0}' is registered")]
    UnknownState(String),
    /// A state was used from inside the closure of a borrowing read of the same state
    /// ([`ValueState::with`](crate::state::ValueState::with), and `with` of Reducing and Map
    /// states), which on the heap engine holds the state's table until the closure returns.
    /// Read what the closure needs before or after it.
    #[error("state '{state}' was used from inside its own `with` closure, which holds it")]
    Reentrant {
        /// The state's name.
        state: String,
    },
    /// This build cannot do what was asked: the cargo feature that provides it is off.
    #[error("not available in this build: {0}")]
    Unsupported(String),
    /// A file-system operation on `path` failed.
    #[error("I/O on {}: {source}", path.display())]
    File {
        /// The file or directory.
        path: std::path::PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// A directory that must be empty (a restore target, a new run) is not.
    #[error("{} is not empty: {reason}", path.display())]
    NotEmpty {
        /// The directory.
        path: std::path::PathBuf,
        /// Why it must be empty.
        reason: &'static str,
    },
    /// An I/O operation failed where no single path names it (a pipe, a thread, compression).
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// RocksDB reported an error.
    #[cfg(feature = "rocksdb")]
    #[error("RocksDB: {0}")]
    RocksDb(#[from] rocksdb::Error),
    /// Bytes could not be decoded (no state involved).
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// A configuration value is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A checkpoint or restore failed.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Names the path an I/O operation failed on, as [`Error::File`].
///
/// ```
/// use keyed_state::error::IoAt;
/// let missing = std::path::Path::new("/no/such/file");
/// let err = std::fs::read(missing).at(missing).unwrap_err();
/// assert!(err.to_string().contains("/no/such/file"), "{err}");
/// ```
pub trait IoAt<T> {
    /// The error as [`Error::File`] on `path`.
    ///
    /// # Errors
    ///
    /// The I/O error, with `path`.
    fn at(self, path: impl AsRef<std::path::Path>) -> Result<T>;
}

impl<T> IoAt<T> for std::io::Result<T> {
    fn at(self, path: impl AsRef<std::path::Path>) -> Result<T> {
        self.map_err(|source| Error::File {
            path: path.as_ref().to_path_buf(),
            source,
        })
    }
}
