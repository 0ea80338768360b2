//! Checkpoints: storage, the manifest, retention, and the engine-neutral parts of snapshotting
//! and restoring.
//!
//! Nothing here imports an engine. An engine implements
//! [`Engine::snapshot`](crate::Engine::snapshot): a short synchronous part (heap: freeze the
//! copy-on-write tables; RocksDB: flush and list files) that returns a [`SnapshotUpload`], which
//! [`KeyedStateBackend::checkpoint`](crate::KeyedStateBackend::checkpoint) runs on a background
//! thread while processing continues, then commits through the [`CheckpointStore`].
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

pub mod blocks;
pub mod canonical;
mod faults;
pub mod manifest;
#[cfg(feature = "s3")]
mod object;
pub mod path;
mod storage;
mod store;

pub use faults::FaultyStorage;
pub use manifest::{BlockEntry, FileEntry, FileRole, Manifest, SnapshotKind, TimerMeta};
#[cfg(feature = "s3")]
pub use object::{ObjectStorage, ObjectStorageOptions};
pub use storage::{CheckpointStorage, FileInfo, LocalStorage, MemoryStorage};
pub use store::{
    CheckpointStore, DEFAULT_RETAINED, OpenReport, fetch_verified, read_verified, verify_files,
};

use std::fmt;
use std::sync::Arc;
use std::thread::JoinHandle;

/// Runs `f` over `items` with at most `concurrency` at a time (scoped threads) and returns the
/// results in order; after a failure no new item starts, and the first failure (by index) is
/// returned. Uploads and downloads of a checkpoint's files go through this, so a restore from
/// object storage is not one file at a time.
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
    if not_run {
        return Err(
            crate::error::CheckpointError::Incompatible("a transfer did not run".into()).into(),
        );
    }
    Ok(out)
}

/// Opens checkpoint storage by URL: `file:///path` or a plain path is a [`LocalStorage`]
/// (fsync and atomic rename); `s3://bucket/prefix` is an [`ObjectStorage`] (cargo feature
/// `s3`) configured from the `AWS_*` environment plus `settings` (object_store's names, such
/// as `aws_endpoint` or `aws_allow_http`).
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
            return Err(crate::error::CheckpointError::StorageConfig(format!(
                "{url}: S3 storage needs the `s3` cargo feature"
            ))
            .into());
        }
    }
    if url.contains("://") {
        return Err(crate::error::CheckpointError::StorageConfig(format!(
            "{url}: unknown scheme (file:// or s3://)"
        ))
        .into());
    }
    Ok(Arc::new(LocalStorage::new(url)?))
}

use crate::error::{CheckpointError, Result};
use crate::key_group::KeyGroupRange;
use crate::state::StateMeta;
use crate::timer::snapshot::TimersSnapshot;

/// What kind of snapshot to take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
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
#[derive(Debug, Clone)]
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

/// A checkpoint whose synchronous part is done and whose upload runs in the background.
#[must_use = "a checkpoint completes in the background; wait() reports whether it did"]
pub struct PendingCheckpoint {
    id: u64,
    handle: JoinHandle<Result<Manifest>>,
}

impl PendingCheckpoint {
    /// Starts the background part: upload, then commit (or abort on any error).
    pub(crate) fn spawn(
        store: Arc<CheckpointStore>,
        id: u64,
        job: SnapshotJob,
        timers: TimersSnapshot,
        offsets: Vec<(String, u64)>,
    ) -> Result<Self> {
        let handle = std::thread::Builder::new()
            .name(format!("checkpoint-{id}"))
            .spawn(move || {
                let result = run(&store, id, job, timers, offsets);
                if let Err(e) = &result {
                    tracing::warn!(checkpoint = id, error = %e, "checkpoint aborted");
                    if let Err(cleanup) = store.abort(id) {
                        tracing::warn!(checkpoint = id, error = %cleanup, "cleanup after abort failed; the next open retries");
                    }
                }
                result
            })?;
        Ok(PendingCheckpoint { id, handle })
    }

    /// The checkpoint id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Whether the background part has finished (successfully or not).
    pub fn is_finished(&self) -> bool {
        self.handle.is_finished()
    }

    /// Waits for the background part: the completed checkpoint's manifest, or why it aborted.
    pub fn wait(self) -> Result<Manifest> {
        self.handle
            .join()
            .unwrap_or_else(|_| Err(CheckpointError::Lost(self.id).into()))
    }
}

impl fmt::Debug for PendingCheckpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingCheckpoint")
            .field("id", &self.id)
            .field("finished", &self.is_finished())
            .finish()
    }
}

fn run(
    store: &CheckpointStore,
    id: u64,
    job: SnapshotJob,
    timers: TimersSnapshot,
    offsets: Vec<(String, u64)>,
) -> Result<Manifest> {
    let mut out = job.upload.upload(store, id)?;
    let timer_file = timers.upload(store, id)?;
    if let Some(file) = timer_file {
        out.uploaded_bytes += file.size;
        out.files.push(file);
    }
    let manifest = Manifest {
        checkpoint_id: id,
        kind: out.kind,
        engine: job.engine.to_owned(),
        max_parallelism: job.max_parallelism,
        range: job.range,
        created_at_millis: job.created_at_millis,
        states: out.states,
        offsets,
        timers: timers.metas(),
        files: out.files,
        uploaded_bytes: out.uploaded_bytes,
    };
    store.complete(manifest.clone())?;
    tracing::info!(
        checkpoint = id,
        full_size = manifest.full_size(),
        uploaded = manifest.uploaded_bytes,
        "checkpoint completed"
    );
    Ok(manifest)
}

/// A completed snapshot to restore from: its manifest and the storage holding its files.
#[derive(Clone)]
pub struct RestoreSource {
    /// The storage root of the checkpoint.
    pub storage: Arc<dyn CheckpointStorage>,
    /// Its manifest.
    pub manifest: Manifest,
}

impl RestoreSource {
    /// The latest completed checkpoint of `store`.
    pub fn latest(store: &CheckpointStore) -> Result<Self> {
        let manifest = store
            .latest()
            .ok_or_else(|| CheckpointError::NoCheckpoint(format!("{:?}", store.storage())))?;
        Ok(RestoreSource {
            storage: store.storage().clone(),
            manifest,
        })
    }
}

impl fmt::Debug for RestoreSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RestoreSource")
            .field("storage", &self.storage)
            .field("checkpoint", &self.manifest.checkpoint_id)
            .field("range", &self.manifest.range)
            .finish()
    }
}

/// Checks that `sources` can restore key groups `range` of `max_parallelism`: same number of
/// key groups, no key group in two sources, every group of `range` in one, and one metadata
/// per state name. Returns the sources that overlap `range` and the states, by name.
pub fn plan_restore(
    sources: &[RestoreSource],
    max_parallelism: u32,
    range: KeyGroupRange,
) -> Result<(Vec<&RestoreSource>, Vec<StateMeta>)> {
    let incompatible = |m: String| CheckpointError::Incompatible(m);
    let mut used: Vec<&RestoreSource> = Vec::new();
    let mut states: Vec<StateMeta> = Vec::new();
    for s in sources {
        let m = &s.manifest;
        if m.max_parallelism != max_parallelism {
            return Err(incompatible(format!(
                "checkpoint {} has max_parallelism {}, the backend {max_parallelism}",
                m.checkpoint_id, m.max_parallelism
            ))
            .into());
        }
        let overlap = m.range.intersect(&range);
        if overlap.is_empty() {
            continue;
        }
        if let Some(other) = used
            .iter()
            .find(|o| !o.manifest.range.intersect(&overlap).is_empty())
        {
            return Err(incompatible(format!(
                "checkpoints {} ({}) and {} ({}) both hold key groups of {range}",
                other.manifest.checkpoint_id, other.manifest.range, m.checkpoint_id, m.range
            ))
            .into());
        }
        for meta in &m.states {
            match states.iter().find(|s| s.name == meta.name) {
                Some(known) => {
                    if let Some((field, a, b)) = known.first_difference(meta) {
                        return Err(incompatible(format!(
                            "state '{}' has {field} {a} in one checkpoint and {b} in another",
                            meta.name
                        ))
                        .into());
                    }
                }
                None => states.push(meta.clone()),
            }
        }
        used.push(s);
    }
    let covered: usize = used
        .iter()
        .map(|s| s.manifest.range.intersect(&range).len())
        .sum();
    if covered != range.len() {
        return Err(incompatible(format!(
            "the checkpoints hold {covered} of the {} key groups of {range}",
            range.len()
        ))
        .into());
    }
    states.sort_by(|a, b| a.name.cmp(&b.name));
    Ok((used, states))
}
