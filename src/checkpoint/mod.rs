//! Checkpoints, engine-neutral: where files live (storage: a local directory, memory, object
//! storage, fault injection), what they contain (`format`: the manifest, the canonical
//! key-group data files, the timers file, storage paths), and the protocol that makes a
//! checkpoint exist exactly when its manifest does ([`CheckpointStore`]: begin, publish,
//! retention, shared-file collection), plus the engine-neutral side of restoring
//! ([`RestoreSource`], [`plan_restore`]).
//!
//! Nothing here imports an engine, a view or the façade. An engine implements
//! [`Engine::snapshot`](crate::Engine::snapshot): a short synchronous part (heap: freeze the
//! copy-on-write tables; RocksDB: flush and make a RocksDB checkpoint) that returns an upload,
//! which [`KeyedStateBackend::checkpoint`](crate::KeyedStateBackend::checkpoint) runs on a
//! background thread while processing continues, then commits through the
//! [`CheckpointStore`].
//!
//! Layout of a storage root (one backend instance's checkpoints):
//!
//! ```text
//! shared/<file>        files several checkpoints may reference (RocksDB SSTs)
//! chk-<id>/<file>      a checkpoint's private files
//! chk-<id>/_manifest   its manifest, written last: the checkpoint exists iff this is valid
//! ```
//!
//! ```
//! use std::sync::Arc;
//! use keyed_state::checkpoint::{CheckpointStore, MemoryStorage, RestoreSource};
//! use keyed_state::state::ValueStateDescriptor;
//! use keyed_state::{EngineConfig, HeapEngine, KeyedStateBackend};
//! # fn main() -> Result<(), keyed_state::Error> {
//! let (store, _) = CheckpointStore::open(Arc::new(MemoryStorage::new()), 1)?;
//! let store = Arc::new(store);
//! let backend = KeyedStateBackend::<u64>::new(HeapEngine::new(EngineConfig::default()));
//! let count = backend.value_state(&ValueStateDescriptor::<u64>::new("count"))?;
//! count.update(&backend.key(7)?, &(), 1)?;
//! // Only the freeze is synchronous; encoding and upload run in the background.
//! let pending = backend.checkpoint(&store, 1, &[("input", 100)])?;
//! count.update(&backend.key(7)?, &(), 2)?; // not in checkpoint 1
//! let manifest = pending.wait()?;
//! assert_eq!(manifest.offset("input"), Some(100));
//!
//! let source = RestoreSource::latest(&store)?;
//! let restored = KeyedStateBackend::<u64>::new(HeapEngine::restore(EngineConfig::default(), &[source])?);
//! let count = restored.value_state(&ValueStateDescriptor::<u64>::new("count"))?;
//! assert_eq!(count.get(&restored.key(7)?, &())?, Some(1));
//! # Ok(())
//! # }
//! ```

pub(crate) mod format;
mod restore;
pub(crate) mod storage;
mod store;

#[doc(hidden)]
pub use format::blocks::set_block_split_bytes;
pub use format::manifest::{
    BlockEntry, FileEntry, FileRole, MAX_MANIFEST_BYTES, Manifest, SnapshotKind, TimerMeta,
};
pub use format::path::{
    MANIFEST_FILE, SHARED_DIR, checkpoint_dir, manifest_path, parse_checkpoint_dir,
};
pub(crate) use restore::read_canonical;
pub use restore::{RestoreSource, RestoredTimerSet, plan_restore};
pub use storage::{
    CheckpointStorage, DirLock, FaultyStorage, FileInfo, LOCK_FILE, LocalStorage, MemoryStorage,
    open_storage,
};
#[cfg(feature = "s3")]
pub use storage::{ObjectStorage, ObjectStorageOptions};
#[cfg(feature = "rocksdb")]
pub(crate) use store::fetch_verified;
pub use store::{CheckpointStore, DEFAULT_RETAINED, OpenReport, verify_files};
