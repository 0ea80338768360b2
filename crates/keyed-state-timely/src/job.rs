//! A job's configuration and what each worker restores at start: the latest committed
//! checkpoint, the key groups this worker now owns, its own checkpoint store.
//!
//! Layout of the checkpoint root (a local directory or an `s3://` URL):
//!
//! - `commits/`: the [`CommitLog`](crate::CommitLog), written by worker 0 only;
//! - `worker-<i>/`: worker `i`'s [`CheckpointStore`] (one writer: the worker; a restart's
//!   workers also read the parts of the committed checkpoint from every old worker's root).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use keyed_state::checkpoint::{
    CheckpointStorage, CheckpointStore, Manifest, RestoreSource, manifest_path, open_storage,
};
use keyed_state::clock::SharedClock;
use keyed_state::key_group::{KeyGroupRange, range_for_operator};
use keyed_state::{
    AnyEngine, CheckpointError, EngineConfig, HeapEngine, KeyedStateBackend, StateKey,
};

use crate::commit::{CommitLog, CommitRecord};
use crate::error::Error;

/// Parts a worker keeps: a store never subsumes by count, parts are discarded once a newer
/// checkpoint is committed ([`Worker::prune`]).
const RETAIN_ALL: usize = usize::MAX / 2;

/// Which engine keeps each worker's state.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EngineChoice {
    /// The heap engine.
    Heap,
    /// The RocksDB engine (cargo feature `rocksdb`), each worker's database in
    /// `<dir>/worker-<i>`: a working copy, rebuilt from the checkpoint at every start.
    RocksDb {
        /// Local directory for the databases.
        dir: PathBuf,
    },
}

/// How a job keeps and checkpoints its state.
#[derive(Debug, Clone)]
pub struct JobConfig {
    root: String,
    storage_settings: Vec<(String, String)>,
    engine: EngineChoice,
    max_parallelism: u32,
    checkpoint_every: u64,
    /// The first failure of any worker of this process: every worker stops on it.
    pub(crate) failure: FailureSlot,
    layer: Option<StorageLayer>,
}

/// A function wrapping a storage root.
type LayerFn = dyn Fn(Arc<dyn CheckpointStorage>) -> Arc<dyn CheckpointStorage> + Send + Sync;

/// Wraps every storage root the job opens ([`JobConfig::with_storage_layer`]).
#[derive(Clone)]
struct StorageLayer(Arc<LayerFn>);

impl std::fmt::Debug for StorageLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StorageLayer")
    }
}

/// Where the workers of one process report the first failure.
pub(crate) type FailureSlot = Arc<Mutex<Option<(usize, String)>>>;

/// Records `worker`'s failure unless one is recorded already.
pub(crate) fn set_failure(slot: &FailureSlot, worker: usize, reason: &str) {
    let mut s = slot
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if s.is_none() {
        *s = Some((worker, reason.to_owned()));
    }
}

/// Whether a worker of this process failed.
pub(crate) fn failed(slot: &FailureSlot) -> bool {
    slot.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .is_some()
}

/// The failure recorded, if any.
pub(crate) fn failure(slot: &FailureSlot) -> Option<(usize, String)> {
    slot.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
}

impl JobConfig {
    /// A job checkpointing into `root` (a local directory, `file://` or `s3://` URL), on the
    /// heap engine, 128 key groups, a checkpoint every 10 epochs.
    pub fn new(root: impl Into<String>) -> Self {
        JobConfig {
            root: root.into(),
            storage_settings: Vec::new(),
            engine: EngineChoice::Heap,
            max_parallelism: 128,
            checkpoint_every: 10,
            failure: FailureSlot::default(),
            layer: None,
        }
    }

    /// Settings for an `s3://` root (object_store's names, such as `aws_endpoint`).
    #[must_use]
    pub fn with_storage_settings(mut self, settings: Vec<(String, String)>) -> Self {
        self.storage_settings = settings;
        self
    }

    /// Wraps every storage root the job opens (the commit log, the workers' stores) in
    /// `layer`: metrics, throttling, fault injection in tests.
    #[must_use]
    pub fn with_storage_layer(
        mut self,
        layer: impl Fn(Arc<dyn CheckpointStorage>) -> Arc<dyn CheckpointStorage> + Send + Sync + 'static,
    ) -> Self {
        self.layer = Some(StorageLayer(Arc::new(layer)));
        self
    }

    /// The engine.
    #[must_use]
    pub fn with_engine(mut self, engine: EngineChoice) -> Self {
        self.engine = engine;
        self
    }

    /// The number of key groups: the most workers the job can ever run on. Fixed for the
    /// life of the job's checkpoints (a restart with another value is refused).
    #[must_use]
    pub fn with_max_parallelism(mut self, max_parallelism: u32) -> Self {
        self.max_parallelism = max_parallelism;
        self
    }

    /// A checkpoint is cut when the input frontier passes a multiple of `every` epochs (and
    /// once more at the end of the input). At least 1.
    #[must_use]
    pub fn with_checkpoint_every(mut self, every: u64) -> Self {
        self.checkpoint_every = every.max(1);
        self
    }

    /// The checkpoint root.
    pub fn root(&self) -> &str {
        &self.root
    }

    /// The engine.
    pub fn engine(&self) -> &EngineChoice {
        &self.engine
    }

    /// The number of key groups.
    pub fn max_parallelism(&self) -> u32 {
        self.max_parallelism
    }

    /// Epochs between checkpoints.
    pub fn checkpoint_every(&self) -> u64 {
        self.checkpoint_every
    }

    /// Opens the storage root `name` under the job's root.
    ///
    /// # Errors
    ///
    /// The storage cannot be opened (see [`open_storage`]).
    pub fn storage(&self, name: &str) -> keyed_state::Result<Arc<dyn CheckpointStorage>> {
        let root = self.root.trim_end_matches('/');
        let storage = open_storage(&format!("{root}/{name}"), &self.storage_settings)?;
        Ok(match &self.layer {
            Some(layer) => (layer.0)(storage),
            None => storage,
        })
    }

    /// The commit log, read in full.
    ///
    /// # Errors
    ///
    /// The storage cannot be opened or a record does not decode.
    pub fn commit_log(&self) -> keyed_state::Result<CommitLog> {
        CommitLog::open(self.storage(COMMITS)?)
    }
}

/// The commit log's root under the job's root.
pub(crate) const COMMITS: &str = "commits";

/// The checkpoint root of worker `i`.
pub(crate) fn worker_root(i: usize) -> String {
    format!("worker-{i}")
}

/// One worker of a job, started: its backend (restored from the latest committed checkpoint,
/// if any, for the key groups it owns now), its checkpoint store, and where the input
/// resumes.
#[derive(Debug)]
pub struct Worker<K: StateKey> {
    pub(crate) config: JobConfig,
    pub(crate) index: usize,
    pub(crate) workers: usize,
    pub(crate) backend: Arc<KeyedStateBackend<K, AnyEngine>>,
    pub(crate) store: Arc<CheckpointStore>,
    pub(crate) commits: Arc<dyn CheckpointStorage>,
    pub(crate) restored: Option<CommitRecord>,
}

impl<K: StateKey> Worker<K> {
    /// Starts worker `index` of `workers`: reads the latest committed checkpoint, opens this
    /// worker's store (discarding parts no commit names: attempts a crash interrupted), and
    /// restores the key groups `range_for_operator(max_parallelism, workers, index)` from
    /// whichever old workers' parts hold them — a rescaling restore when the number of
    /// workers changed. `clock` is the engine's processing-time clock.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an index outside `0..workers` or more workers than key groups;
    /// the latest commit names a different max parallelism or a part that is missing
    /// ([`Error::State`] with [`CheckpointError`]); the storage's and the engine's failures.
    /// Nothing committed is modified by a failed start.
    pub fn start(
        config: &JobConfig,
        index: usize,
        workers: usize,
        clock: SharedClock,
    ) -> Result<Self, Error> {
        if index >= workers {
            return Err(Error::Config(format!(
                "worker {index} of {workers}: the index must be below the number of workers"
            )));
        }
        let m = config.max_parallelism;
        let (Ok(n), Ok(i)) = (u32::try_from(workers), u32::try_from(index)) else {
            return Err(Error::Config(format!("{workers} workers: too many")));
        };
        if n > m {
            return Err(Error::Config(format!(
                "{workers} workers but {m} key groups: each worker needs at least one"
            )));
        }
        let commits = config.storage(COMMITS)?;
        let latest = CommitLog::read_latest(commits.as_ref())?;
        if let Some(r) = &latest
            && r.max_parallelism != m
        {
            return Err(Error::State(
                CheckpointError::Incompatible(format!(
                    "the job's checkpoints have {} key groups (max parallelism), this start asks for {m}; \
                     key groups cannot be re-split",
                    r.max_parallelism
                ))
                .into(),
            ));
        }
        let latest_id = latest.as_ref().map_or(0, |r| r.id);
        let (store, _) = CheckpointStore::open(config.storage(&worker_root(index))?, RETAIN_ALL)?;
        // Parts newer than the commit never completed as a job checkpoint; older ones are
        // subsumed by it.
        for m in store.retained() {
            if m.checkpoint_id != latest_id {
                store.discard(m.checkpoint_id)?;
            }
        }
        let sources = match &latest {
            Some(r) => committed_parts(config, r)?,
            None => Vec::new(),
        };
        let range = range_for_operator(m, n, i)?;
        let engine = restore_engine(config, index, range, clock, latest.is_some(), &sources)?;
        tracing::info!(worker = index, workers, range = %range, restored = ?latest.as_ref().map(|r| r.id), "worker started");
        Ok(Worker {
            config: config.clone(),
            index,
            workers,
            backend: Arc::new(KeyedStateBackend::new(engine)),
            store: Arc::new(store),
            commits,
            restored: latest,
        })
    }

    /// The state of the latest committed checkpoint, every key group on one backend, for
    /// reading (checking a run, inspecting, exporting): the job's roots are only read — no
    /// store is opened, nothing is locked, cleaned or discarded. A RocksDB engine's working
    /// copy goes to `<dir>/worker-0` of the configured engine directory.
    ///
    /// # Errors
    ///
    /// No checkpoint was committed ([`CheckpointError::NoCheckpoint`]); as
    /// [`start`](Self::start) otherwise.
    pub fn read_committed(
        config: &JobConfig,
        clock: SharedClock,
    ) -> Result<(CommitRecord, KeyedStateBackend<K, AnyEngine>), Error> {
        let Some(latest) = CommitLog::read_latest(config.storage(COMMITS)?.as_ref())? else {
            return Err(Error::State(
                CheckpointError::NoCheckpoint(format!(
                    "no job checkpoint is committed under {}",
                    config.root
                ))
                .into(),
            ));
        };
        let sources = committed_parts(config, &latest)?;
        let range = KeyGroupRange::all(latest.max_parallelism)?;
        let config = config.clone().with_max_parallelism(latest.max_parallelism);
        let engine = restore_engine(&config, 0, range, clock, true, &sources)?;
        Ok((latest, KeyedStateBackend::new(engine)))
    }

    /// The backend: register states and timer services on it before building the dataflow.
    pub fn backend(&self) -> &Arc<KeyedStateBackend<K, AnyEngine>> {
        &self.backend
    }

    /// The input epoch to resume from: epochs up to the restored checkpoint's id are in the
    /// state; 1 for a fresh job. Feed the input from here.
    pub fn resume_epoch(&self) -> u64 {
        self.restored.as_ref().map_or(1, |r| r.id + 1)
    }

    /// The committed checkpoint this worker was restored from.
    pub fn restored(&self) -> Option<&CommitRecord> {
        self.restored.as_ref()
    }

    /// This worker's index.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The number of workers.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// Discards this worker's parts older than the latest committed checkpoint: a later
    /// restore never needs them.
    pub(crate) fn prune(
        store: &CheckpointStore,
        commits: &dyn CheckpointStorage,
    ) -> keyed_state::Result<()> {
        let Some(latest) = CommitLog::latest_id(commits)? else {
            return Ok(());
        };
        for m in store.retained() {
            if m.checkpoint_id < latest {
                store.discard(m.checkpoint_id)?;
            }
        }
        Ok(())
    }
}

/// The parts of committed checkpoint `r`: one per worker that took it, read directly from
/// their roots (manifests verified against their checksums).
fn committed_parts(config: &JobConfig, r: &CommitRecord) -> Result<Vec<RestoreSource>, Error> {
    let mut sources = Vec::new();
    for j in 0..r.workers as usize {
        let storage = config.storage(&worker_root(j))?;
        let path = manifest_path(r.id);
        let bytes = storage
            .get(&path)
            .map_err(|e| part_missing(r, j, &e.to_string()))?;
        let manifest = Manifest::decode_for(r.id, &path, &bytes)
            .map_err(|e| part_missing(r, j, &e.to_string()))?;
        sources.push(RestoreSource { storage, manifest });
    }
    Ok(sources)
}

/// The engine of worker `index` for `range`: restored from `sources` when `restore`, else
/// empty.
fn restore_engine(
    config: &JobConfig,
    index: usize,
    range: KeyGroupRange,
    clock: SharedClock,
    restore: bool,
    sources: &[RestoreSource],
) -> Result<AnyEngine, Error> {
    let engine_config = EngineConfig::new(config.max_parallelism)?
        .with_key_group_range(range)?
        .with_clock(clock);
    Ok(match &config.engine {
        EngineChoice::Heap if restore => HeapEngine::restore(engine_config, sources)?.into(),
        EngineChoice::Heap => HeapEngine::new(engine_config).into(),
        EngineChoice::RocksDb { dir } => rocksdb_engine(dir, index, engine_config, sources)?,
    })
}

fn part_missing(r: &CommitRecord, worker: usize, reason: &str) -> Error {
    Error::State(
        CheckpointError::NoCheckpoint(format!(
            "committed checkpoint {} lists worker {worker}, whose part cannot be read: {reason}",
            r.id
        ))
        .into(),
    )
}

#[cfg(feature = "rocksdb")]
fn rocksdb_engine(
    dir: &std::path::Path,
    index: usize,
    config: EngineConfig,
    sources: &[RestoreSource],
) -> Result<AnyEngine, Error> {
    use keyed_state::backend::rocksdb::{RocksDbEngine, RocksDbOptions};
    let path = dir.join(worker_root(index));
    // The working copy of a previous run is disposable: state comes from the checkpoint.
    if path.exists() {
        std::fs::remove_dir_all(&path)
            .map_err(|e| Error::Config(format!("removing {}: {e}", path.display())))?;
    }
    let options = RocksDbOptions::default();
    Ok(if sources.is_empty() {
        RocksDbEngine::open(&path, config, options)?.into()
    } else {
        RocksDbEngine::restore(&path, config, options, sources)?.into()
    })
}

#[cfg(not(feature = "rocksdb"))]
fn rocksdb_engine(
    _dir: &std::path::Path,
    _index: usize,
    _config: EngineConfig,
    _sources: &[RestoreSource],
) -> Result<AnyEngine, Error> {
    Err(Error::Config(
        "the RocksDB engine: this build lacks the `rocksdb` cargo feature".into(),
    ))
}
