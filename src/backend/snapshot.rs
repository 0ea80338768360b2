//! The snapshot side of the engine contract: an engine's [`Engine::snapshot`](super::Engine)
//! does the short synchronous part and returns a [`SnapshotJob`], whose upload the façade runs
//! in the background before it assembles and publishes the manifest.

use std::fmt;

use crate::checkpoint::{CheckpointStore, FileEntry, SnapshotKind};
use crate::error::Result;
use crate::key_group::KeyGroupRange;
use crate::types::StateMeta;

/// What kind of snapshot to take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum SnapshotMode {
    /// The engine's checkpoint: incremental on RocksDB, a full key-group file on the heap.
    #[default]
    Checkpoint,
    /// A checkpoint that copies every file (RocksDB), for comparison; the heap's checkpoint
    /// is already full.
    Full,
    /// An engine-independent snapshot in the canonical key-group format.
    Savepoint,
}

/// What the background part of a snapshot produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotOutput {
    /// Incremental, full or savepoint.
    pub kind: SnapshotKind,
    /// The metadata of every state in the snapshot (registered or restored and not yet
    /// registered again).
    pub states: Vec<StateMeta>,
    /// The files (already uploaded or referenced).
    pub files: Vec<FileEntry>,
    /// Bytes uploaded by this snapshot.
    pub uploaded_bytes: u64,
}

/// The background part of a snapshot: encode and upload. Runs off the processing thread.
pub trait SnapshotUpload: Send {
    /// Uploads the snapshot's files for checkpoint `id` into `store`.
    ///
    /// # Errors
    ///
    /// Any storage or encoding error; the caller then aborts the checkpoint.
    fn upload(self: Box<Self>, store: &CheckpointStore, id: u64) -> Result<SnapshotOutput>;
}

/// What the synchronous part hands to the background thread: the upload and the facts the
/// manifest needs.
pub struct SnapshotJob {
    /// The engine's upload.
    pub upload: Box<dyn SnapshotUpload>,
    /// The engine name.
    pub engine: &'static str,
    /// The number of key groups.
    pub max_parallelism: u32,
    /// The key groups snapshotted.
    pub range: KeyGroupRange,
    /// The engine clock's time at the synchronous part.
    pub created_at_millis: u64,
}

impl fmt::Debug for SnapshotJob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SnapshotJob")
            .field("engine", &self.engine)
            .field("max_parallelism", &self.max_parallelism)
            .field("range", &self.range)
            .field("created_at_millis", &self.created_at_millis)
            .finish_non_exhaustive()
    }
}
