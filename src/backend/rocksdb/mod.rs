//! The RocksDB engine: every registered state in its own column family of one RocksDB instance,
//! through the `rocksdb` crate (cargo feature `rocksdb`, on by default).
//!
//! Keys and values are laid out as `layout.rs` describes (and DESIGN.md byte by byte). List
//! state appends through a merge operator (no read before write; `get` is one point read); map
//! iteration is a bounded prefix scan; Reducing and Aggregating read, modify and write. TTL
//! values carry an 8-byte stamp, and a compaction filter plus the merge operator drop what
//! expired (`ttl_filter.rs`). The write-ahead log is off by default: durability comes from
//! checkpoints. State metadata is persisted, so a reopened instance finds its states again and
//! refuses a registration that does not match.

mod adopt;
mod column;
pub(crate) mod layout;
mod options;
mod savepoint;
mod scan;
mod snapshot;
mod stack_bytes;
mod tables;
#[cfg(test)]
mod tests;
mod timers;
mod ttl_filter;

pub use options::{
    BlockCache, Compression, MAX_BLOCK_SIZE, MIN_BLOCK_SIZE, MIN_KEYS_PER_READ_THREAD,
    RocksDbOptions,
};

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamilyDescriptor, DBCompressionType, MultiThreaded,
    WriteBufferManager,
};

use crate::backend::{
    Engine, EngineMetrics, ListTable, MapTable, SnapshotJob, SnapshotMode, StateMetrics,
    TimerStore, ValueTable,
};
use crate::checkpoint::format::canonical::is_canonical;
use crate::checkpoint::storage::map_bounded;
use crate::checkpoint::{
    FileEntry, FileRole, RestoreSource, RestoredTimerSet, TimerMeta, fetch_verified, plan_restore,
    read_canonical,
};
use crate::error::{CheckpointError, ConfigError, Error, IoAt, Result};
use crate::key_group::KeyGroupRange;
use crate::ttl::StateVisibility;
use crate::types::{
    EngineConfig, MapKey, Namespace, StateKey, StateKind, StateMeta, StateValue, meta_codec,
};
use savepoint::PartShape;
use scan::ScanSlot;
use tables::RocksTable;
use ttl_filter::{TtlFilterFactory, TtlRule, TtlSlot};

type Db = rocksdb::DBWithThreadMode<MultiThreaded>;

/// How a restore brought the checkpoints' data in ([`RocksDbEngine::restore_summary`]): the
/// source overlapping the range most is opened as it is; the others' column families are
/// adopted file by file, or where RocksDB refuses a file (it overlaps what the database
/// holds), their entries are rewritten.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RestoreSummary {
    /// Checkpoints restored from.
    pub sources: usize,
    /// SST files of the other sources ingested as they are.
    pub files_adopted: usize,
    /// Column families of the other sources whose entries were read and rewritten instead.
    pub column_families_rewritten: usize,
}

/// What a state's column family name starts with (a timer service's: `timers:`).
const STATE_CF_PREFIX: &str = "state:";

/// The column family of a state: its name prefixed, so no state collides with `default`.
fn cf_name(state: &str) -> String {
    format!("{STATE_CF_PREFIX}{state}")
}

/// The state whose column family `cf` is ([`cf_name`]'s inverse); `None` for the others
/// (`default`, timer services).
fn state_of_cf(cf: &str) -> Option<&str> {
    cf.strip_prefix(STATE_CF_PREFIX)
}

/// The open database, shared by the engine and its tables. Field order matters: the database
/// closes before a temporary directory is removed.
pub(crate) struct DbHandle {
    db: Db,
    _temp_dir: Option<tempfile::TempDir>,
}

/// The RocksDB engine. See the module documentation.
///
/// ```
/// use keyed_state::backend::rocksdb::{RocksDbEngine, RocksDbOptions};
/// use keyed_state::state::ListStateDescriptor;
/// use keyed_state::{EngineConfig, KeyedStateBackend};
/// # fn main() -> Result<(), keyed_state::Error> {
/// let dir = tempfile::tempdir()?;
/// let engine = RocksDbEngine::open(dir.path(), EngineConfig::default(), RocksDbOptions::default())?;
/// let backend = KeyedStateBackend::<String, _>::new(engine);
/// let recent = backend.list_state(&ListStateDescriptor::<u64>::new("recent"))?;
/// let key = backend.key("alice".to_string())?;
/// recent.add(&key, &(), 30)?; // a merge: no read before the write
/// recent.add(&key, &(), 70)?;
/// assert_eq!(recent.get(&key, &())?.collect::<Vec<_>>(), vec![30, 70]);
/// # Ok(())
/// # }
/// ```
pub struct RocksDbEngine {
    config: EngineConfig,
    options: RocksDbOptions,
    path: PathBuf,
    cache: Cache,
    /// RocksDB's row cache, when the options ask for one and the database holds no range
    /// deletion ([`RocksDbOptions::row_cache_bytes`]).
    row_cache: Option<Cache>,
    write_buffers: Option<WriteBufferManager>,
    /// The TTL slot of every state column family, by column family name.
    slots: Mutex<HashMap<String, Arc<TtlSlot>>>,
    /// Every state's metadata as the database records it, by name.
    metas: Mutex<BTreeMap<String, StateMeta>>,
    /// This database's id: the prefix of its SSTs' shared names in checkpoints.
    uid: String,
    /// Shared names of SSTs restored from a checkpoint, by local file name.
    restored_ssts: HashMap<String, String>,
    /// How the restore that made this engine went (default for an opened one).
    restored: RestoreSummary,
    /// Timers a restore read from the checkpoints' timers files, until the backend takes them.
    restored_timers: Mutex<RestoredTimerSet>,
    /// The background compaction of the key groups a rescaling restore cut away, joined on
    /// drop (after cancelling it) so the database is closed when the engine is gone.
    compaction: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// The part widths of every state registered in this process (savepoints need them).
    shapes: Mutex<HashMap<String, PartShape>>,
    /// Every table's kept scan iterator, released when memtables or files are let go
    /// ([`RocksDbEngine::release_scans`]).
    scans: Mutex<Vec<std::sync::Weak<ScanSlot>>>,
    handle: Arc<DbHandle>,
}

const META_PREFIX: &[u8] = b"meta/state/";
const UID_KEY: &[u8] = b"meta/uid";

impl RocksDbEngine {
    /// Opens (or creates) the engine's database in directory `path`. States registered there
    /// before are found again; their registrations are checked against the persisted metadata.
    ///
    /// # Errors
    ///
    /// An option out of its bounds ([`ConfigError::Invalid`]); the database cannot be opened or
    /// created (RocksDB's errors), was written with another `max_parallelism`
    /// ([`ConfigError::MaxParallelismChanged`]), or holds metadata that does not decode
    /// ([`Error::Decode`]).
    pub fn open(
        path: impl AsRef<Path>,
        config: EngineConfig,
        options: RocksDbOptions,
    ) -> Result<Self> {
        options.check()?;
        Self::open_in(path.as_ref().to_path_buf(), None, config, options, false)
    }

    /// Opens an engine in a fresh temporary directory, removed when the engine and all its
    /// states are dropped (tests, benchmarks, state that needs no restart).
    ///
    /// # Errors
    ///
    /// The temporary directory cannot be created ([`Error::File`]), or as [`open`](Self::open).
    pub fn open_temporary(config: EngineConfig, options: RocksDbOptions) -> Result<Self> {
        options.check()?;
        let dir = tempfile::Builder::new()
            .prefix("keyed-state-")
            .tempdir()
            .at(std::env::temp_dir())?;
        Self::open_in(dir.path().to_path_buf(), Some(dir), config, options, false)
    }

    fn open_in(
        path: PathBuf,
        temp_dir: Option<tempfile::TempDir>,
        config: EngineConfig,
        options: RocksDbOptions,
        fresh_uid: bool,
    ) -> Result<Self> {
        // The options were checked by the public entry point (`open`, `open_temporary`,
        // `restore`), before it created or read anything.
        if options.row_cache_bytes() == 0 || !path.join("CURRENT").exists() {
            return Self::open_db(path, temp_dir, config, options, fresh_uid, true);
        }
        // RocksDB's row cache ignores range deletions: an existing database (one a rescaling
        // restore cut, or whose restored files carry a cut of their own) is first opened
        // without it and compacted free of them.
        Self::open_db(path, None, config, options, fresh_uid, false)?
            .reopen_with_row_cache(&[], temp_dir)
    }

    /// Compacts the range deletions away ([`drop_range_deletions`](Self::drop_range_deletions),
    /// `cuts` first), closes the database and opens it again with the row cache the options
    /// ask for, or without one, with a warning, if range deletions are left. `self` was opened
    /// without it and has no table yet (nothing else holds the database open).
    fn reopen_with_row_cache(
        mut self,
        cuts: &[Cut],
        temp_dir: Option<tempfile::TempDir>,
    ) -> Result<Self> {
        let purged = self.drop_range_deletions(cuts)?;
        if !purged {
            tracing::warn!(path = %self.path.display(), "opening RocksDB without its row cache: range deletions are left that compactions did not drop");
        }
        let restored_ssts = std::mem::take(&mut self.restored_ssts);
        let (path, config, options) =
            (self.path.clone(), self.config.clone(), self.options.clone());
        drop(self);
        let mut engine = Self::open_db(path, temp_dir, config, options, false, purged)?;
        engine.restored_ssts = restored_ssts;
        Ok(engine)
    }

    /// Opens the database, with the row cache the options ask for only if `row_cache` (the
    /// caller has made sure no range deletion is left, see [`open_in`](Self::open_in)).
    fn open_db(
        path: PathBuf,
        temp_dir: Option<tempfile::TempDir>,
        config: EngineConfig,
        options: RocksDbOptions,
        fresh_uid: bool,
        row_cache: bool,
    ) -> Result<Self> {
        let cache = match options.block_cache() {
            // 0: RocksDB sizes the table itself (AutoHyperClockCache), with no guess of the
            // average entry's charge to get wrong.
            BlockCache::HyperClock => Cache::new_hyper_clock_cache(options.block_cache_bytes(), 0),
            BlockCache::Lru => Cache::new_lru_cache(options.block_cache_bytes()),
        };
        let write_buffers = options.memory_budget_bytes().map(|budget| {
            WriteBufferManager::new_write_buffer_manager_with_cache(budget, false, cache.clone())
        });
        let mut db_opts = rocksdb::Options::default();
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        db_opts.set_max_background_jobs(options.background_jobs());
        db_opts.set_allow_mmap_reads(options.mmap_reads());
        db_opts.set_disable_auto_compactions(!options.auto_compaction());
        if let Some(wbm) = &write_buffers {
            db_opts.set_write_buffer_manager(wbm);
        }
        let row_cache = (row_cache && options.row_cache_bytes() > 0)
            .then(|| Cache::new_lru_cache(options.row_cache_bytes()));
        if let Some(rows) = &row_cache {
            db_opts.set_row_cache(rows);
        }
        let existing = if path.join("CURRENT").exists() {
            Db::list_cf(&db_opts, &path)?
        } else {
            Vec::new()
        };
        let mut slots = HashMap::new();
        let mut descriptors = vec![ColumnFamilyDescriptor::new(
            "default",
            rocksdb::Options::default(),
        )];
        for name in existing.into_iter().filter(|n| n != "default") {
            let slot = Arc::new(TtlSlot::default());
            descriptors.push(ColumnFamilyDescriptor::new(
                name.clone(),
                state_cf_options(&options, &name, &cache, &write_buffers, &slot),
            ));
            slots.insert(name, slot);
        }
        let db = Db::open_cf_descriptors(&db_opts, &path, descriptors)?;
        check_max_parallelism_unchanged(&db, config.max_parallelism())?;
        // Staging directories of checkpoints a crash interrupted (the database lock is ours
        // now, so nobody else is using them).
        snapshot::remove_stale_staging(&path);
        let metas = read_metas(&db)?;
        let shapes = read_shapes(&db)?;
        let uid = match db.get(UID_KEY)? {
            Some(uid) if !fresh_uid => String::from_utf8_lossy(&uid).into_owned(),
            _ => {
                let uid = new_uid();
                db.put(UID_KEY, uid.as_bytes())?;
                uid
            }
        };
        tracing::debug!(path = %path.display(), states = slots.len(), uid, "opened RocksDB engine");
        Ok(RocksDbEngine {
            config,
            options,
            path,
            cache,
            row_cache,
            write_buffers,
            slots: Mutex::new(slots),
            metas: Mutex::new(metas),
            uid,
            restored_ssts: HashMap::new(),
            restored: RestoreSummary::default(),
            restored_timers: Mutex::new(RestoredTimerSet::default()),
            compaction: Mutex::new(None),
            shapes: Mutex::new(shapes),
            scans: Mutex::new(Vec::new()),
            handle: Arc::new(DbHandle {
                db,
                _temp_dir: temp_dir,
            }),
        })
    }

    /// Restores an engine into directory `path` (which must not exist or be empty) from
    /// RocksDB checkpoints, for `config`'s key-group range.
    ///
    /// Every file is checked against its size and crc32 as it is downloaded. With one source
    /// holding exactly the range, its files are opened as they are. When rescaling, the source
    /// overlapping the range most is opened and clipped (range deletions on the key-group
    /// prefixes outside the range), and the other sources' key groups are written into SST
    /// files and ingested. Heap checkpoints and savepoints of either engine restore too (their
    /// records are written in as each state is registered). Timers come back through the
    /// backend built over the engine
    /// ([`KeyedStateBackend::new`](crate::KeyedStateBackend::new)).
    ///
    /// # Errors
    ///
    /// An option out of its bounds ([`ConfigError::Invalid`]), before anything is read or
    /// written; a non-empty `path`, sources that do not fit the range or one another
    /// ([`plan_restore`]), native and canonical sources mixed, a missing or damaged file; the
    /// target is left empty.
    pub fn restore(
        path: impl AsRef<Path>,
        config: EngineConfig,
        options: RocksDbOptions,
        sources: &[RestoreSource],
    ) -> Result<Self> {
        options.check()?;
        let path = path.as_ref().to_path_buf();
        let range = config.key_group_range();
        let (used, states) = plan_restore(sources, config.max_parallelism(), range)?;
        if path.exists() && fs::read_dir(&path).at(&path)?.next().is_some() {
            return Err(Error::NotEmpty {
                path,
                reason: "a restore target must be empty (or absent)",
            });
        }
        // The target was empty: on failure, leave it so again (nothing half-restored stays).
        let result = RestoredTimerSet::read(&used, range).and_then(|timers| {
            let engine = Self::restore_into(path.clone(), config, options, &used, &states)?;
            *engine.restored_timers.lock() = timers;
            Ok(engine)
        });
        if result.is_err()
            && let Err(e) = fs::remove_dir_all(&path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %path.display(), error = %e, "could not remove a failed restore");
        }
        result
    }

    fn restore_into(
        path: PathBuf,
        config: EngineConfig,
        options: RocksDbOptions,
        used: &[&RestoreSource],
        states: &[StateMeta],
    ) -> Result<Self> {
        let range = config.key_group_range();
        let canonical = used.iter().filter(|s| is_canonical(&s.manifest)).count();
        if canonical == used.len() && canonical > 0 {
            return Self::restore_canonical(path, config, options, used, states);
        }
        if let Some(s) = used.iter().find(|s| is_canonical(&s.manifest)) {
            return Err(CheckpointError::Incompatible(format!(
                "checkpoint {} is a {} {} and others are native RocksDB checkpoints; restore from one kind",
                s.manifest.checkpoint_id, s.manifest.engine, s.manifest.kind
            ))
            .into());
        }
        let Some(base) = used
            .iter()
            .max_by_key(|s| s.manifest.range.intersect(&range).len())
        else {
            // An empty range: nothing to restore.
            return Self::open(path, config, options);
        };
        fs::create_dir_all(&path).at(&path)?;
        let restored_ssts = download(base, &path)?;
        // Without the row cache for now: it refuses the range deletions of the clip below.
        let mut engine = Self::open_db(path, None, config, options, true, false)?;
        engine.restored_ssts = restored_ssts;
        for meta in states {
            engine.prepare_state(meta)?;
        }
        let mut summary = RestoreSummary {
            sources: used.len(),
            ..RestoreSummary::default()
        };
        // The others' files first, as they are (their key groups outside the range too), then
        // one clip for all: RocksDB refuses ingested files that overlap a range deletion.
        for other in used.iter().filter(|s| !std::ptr::eq(**s, *base)) {
            engine.adopt(other, range, &mut summary)?;
        }
        // Every used source overlaps the range, so none is empty.
        let held = KeyGroupRange::new(
            used.iter()
                .map(|s| s.manifest.range.start())
                .min()
                .unwrap_or(0),
            used.iter()
                .map(|s| s.manifest.range.end())
                .max()
                .unwrap_or(0),
        );
        let cuts = engine.clip(held, range)?;
        if engine.options.row_cache_bytes() > 0 {
            // The row cache ignores range deletions: compact the cuts away now, then reopen
            // with it.
            engine = engine.reopen_with_row_cache(&cuts, None)?;
        } else if engine.options.compact_after_rescale() && !cuts.is_empty() {
            *engine.compaction.lock() = compact_in_background(engine.handle.clone(), cuts);
        }
        tracing::info!(path = %engine.path.display(), range = %range, sources = summary.sources, files_adopted = summary.files_adopted, rewritten = summary.column_families_rewritten, "restored RocksDB engine");
        engine.restored = summary;
        Ok(engine)
    }

    /// Writes the records a canonical restore parked for `meta`'s state into its column
    /// family, in the engine's layout, one key group per atomic batch.
    fn apply_parked(&self, meta: &StateMeta, shape: PartShape) -> Result<()> {
        let db = &self.handle.db;
        let prefix = savepoint::pending_prefix(&meta.name);
        let parked = default_cf_prefix(db, &prefix)?;
        if parked.is_empty() {
            return Ok(());
        }
        let cf = self.cf(&meta.name)?;
        let mut write = rocksdb::WriteOptions::default();
        write.disable_wal(!self.options.write_ahead_log());
        for (key, records) in parked {
            let range = self.config.key_group_range();
            let Some(group) = savepoint::parked_group(&key).filter(|g| range.contains(*g)) else {
                return Err(Error::Decode {
                    state: meta.name.clone(),
                    source: crate::error::CodecError::Invalid {
                        what: "parked records",
                        reason: format!("a key outside key groups {range}"),
                    },
                });
            };
            let mut batch = rocksdb::WriteBatch::default();
            savepoint::convert_records(
                meta,
                shape,
                self.config.max_parallelism(),
                group,
                &records,
                |k, v| batch.put_cf(&cf, k, v),
            )
            .map_err(|source| Error::Decode {
                state: meta.name.clone(),
                source,
            })?;
            batch.delete(&key);
            db.write_opt(batch, &write)?;
        }
        tracing::debug!(state = %meta.name, "wrote restored records");
        Ok(())
    }

    /// Restores from heap checkpoints or savepoints: a fresh database whose states' records are
    /// parked until each state is registered (see [`savepoint`]).
    fn restore_canonical(
        path: PathBuf,
        config: EngineConfig,
        options: RocksDbOptions,
        used: &[&RestoreSource],
        states: &[StateMeta],
    ) -> Result<Self> {
        let range = config.key_group_range();
        let restored = read_canonical(used, states, range)?;
        let engine = Self::open_in(path, None, config, options, true)?;
        for r in restored.values() {
            engine.prepare_state(&r.meta)?;
            for (group, g) in &r.groups {
                engine.handle.db.put(
                    savepoint::pending_key(&r.meta.name, *group),
                    savepoint::pending_value(g.records, &g.bytes),
                )?;
            }
        }
        tracing::info!(path = %engine.path.display(), range = %range, sources = used.len(), "restored RocksDB engine from the canonical format");
        Ok(engine)
    }

    /// The column family `name` (a state's or a timer service's), created if missing, and its
    /// TTL slot.
    fn ensure_cf(&self, name: &str) -> Result<Arc<TtlSlot>> {
        let mut slots = self.slots.lock();
        if let Some(slot) = slots.get(name) {
            return Ok(slot.clone());
        }
        let slot = Arc::new(TtlSlot::default());
        self.handle.db.create_cf(
            name,
            &state_cf_options(&self.options, name, &self.cache, &self.write_buffers, &slot),
        )?;
        slots.insert(name.to_owned(), slot.clone());
        Ok(slot)
    }

    /// What a savepoint needs per state: its key shape, known from a registration in this
    /// process or persisted by an earlier one (`None` for a state restored from the
    /// canonical format and never registered: its records are parked, canonical already).
    fn savepoint_specs(&self) -> Result<Vec<savepoint::StateSpec>> {
        let shapes = self.shapes.lock();
        let slots = self.slots.lock();
        let mut specs = Vec::new();
        for meta in self.metas.lock().values() {
            // Unknown only for a state restored from the canonical format and never registered
            // (its records are parked, canonical already) or from an old database.
            let shape = shapes.get(&meta.name).copied();
            let cf = cf_name(&meta.name);
            let slot = slots.get(&cf).cloned().unwrap_or_default();
            specs.push(savepoint::StateSpec {
                meta: meta.clone(),
                cf_options: state_cf_options(&self.options, &cf, &self.cache, &None, &slot),
                cf,
                shape,
            });
        }
        Ok(specs)
    }

    /// Deletes the key groups of `held` (what the sources held) outside `range` from every
    /// state: files wholly outside it are dropped, the rest is hidden by range deletions.
    /// Returns the cut ranges, for the caller to compact (which reclaims their space and drops
    /// the range deletions: files that carry them cannot be adopted by a later rescale, and
    /// the row cache ignores them).
    fn clip(&self, held: KeyGroupRange, range: KeyGroupRange) -> Result<Vec<Cut>> {
        let prefix_len = layout::group_prefix_len(self.config.max_parallelism());
        let key = |g: u32| {
            let mut out = Vec::new();
            // Groups are below 2^15, so every group prefix is below [0x80].
            match u16::try_from(g) {
                Ok(g) if u32::from(g) < self.config.max_parallelism() => {
                    layout::write_group(&mut out, g, prefix_len);
                }
                _ => out.push(0x80),
            }
            out
        };
        // (from, to) for the range deletion (`to` excluded), and the last key a file may end
        // with to be dropped whole (RocksDB's file deletion includes its end key): below the
        // range, the previous group's prefix followed by 0xff bytes, so a file ending with a
        // key of the range's first group (even one that is only its prefix) stays. Only where
        // the sources held groups: a range deletion over nothing would still be in the files.
        let mut cuts = Vec::new();
        if held.start() < range.start() {
            let mut last = key(u32::from(range.start()) - 1);
            last.extend_from_slice(&[0xff; 32]);
            cuts.push((key(0), key(u32::from(range.start())), last));
        }
        if held.end() > range.end() {
            let to = key(self.config.max_parallelism());
            cuts.push((key(u32::from(range.end()) + 1), to.clone(), to));
        }
        if cuts.is_empty() {
            return Ok(Vec::new());
        }
        let mut compactions = Vec::new();
        for name in self.state_cfs() {
            let Some(cf) = self.handle.db.cf_handle(&name) else {
                continue;
            };
            for (from, to, last) in &cuts {
                self.handle.db.delete_file_in_range_cf(&cf, from, last)?;
                self.handle.db.delete_range_cf(&cf, from, to)?;
                compactions.push((name.clone(), from.clone(), to.clone()));
            }
        }
        // Records parked by a canonical restore and not registered yet are clipped too.
        for (key, _) in parked_records(&self.handle.db)? {
            if savepoint::parked_group(&key).is_some_and(|g| !range.contains(g)) {
                self.handle.db.delete(&key)?;
            }
        }
        Ok(compactions)
    }

    /// Flushes and compacts every column family until none holds a range deletion (RocksDB's
    /// row cache ignores them: a cached entry would outlive a range deletion in its own file).
    /// `cuts` are where this engine's own clip put some: those ranges are compacted first, and
    /// a column family with range deletions left (restored files that carried a cut of their
    /// own) is compacted whole. Returns whether none is left.
    fn drop_range_deletions(&self, cuts: &[Cut]) -> Result<bool> {
        let db = &self.handle.db;
        let force = to_the_bottom();
        let mut names = self.state_cfs();
        names.push("default".to_owned());
        for name in names {
            let Some(cf) = db.cf_handle(&name) else {
                continue;
            };
            db.flush_cf(&cf)?;
            if range_deletions(db, &cf)? == 0 {
                continue;
            }
            for (_, from, to) in cuts.iter().filter(|(cut, ..)| *cut == name) {
                db.compact_range_cf_opt(&cf, Some(from), Some(to), &force);
            }
            if range_deletions(db, &cf)? > 0 {
                db.compact_range_cf_opt(&cf, None::<&[u8]>, None::<&[u8]>, &force);
            }
            let left = range_deletions(db, &cf)?;
            tracing::debug!(cf = %name, left, "compacted range deletions away for the row cache");
            if left > 0 {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Brings the key groups of `range` held by `source` in: each column family's files as
    /// they are ([`adopt`]), or where RocksDB refuses them, the entries of those key groups
    /// rewritten into a new SST file. Either way the key groups outside `range` are left for
    /// [`clip`](Self::clip).
    fn adopt(
        &self,
        source: &RestoreSource,
        range: KeyGroupRange,
        summary: &mut RestoreSummary,
    ) -> Result<()> {
        let parent = self.path.parent().unwrap_or(Path::new("."));
        let scratch = tempfile::Builder::new()
            .prefix(".restore-")
            .tempdir_in(parent)
            .at(parent)?;
        let dir = scratch.path().join("db");
        fs::create_dir_all(&dir).at(&dir)?;
        download(source, &dir)?;
        let cfs = Db::list_cf(&rocksdb::Options::default(), &dir)?;
        let inert = Arc::new(TtlSlot::default());
        let descriptors: Vec<ColumnFamilyDescriptor> = cfs
            .iter()
            .map(|name| {
                let opts = if name == "default" {
                    rocksdb::Options::default()
                } else {
                    state_cf_options(&self.options, name, &self.cache, &None, &inert)
                };
                ColumnFamilyDescriptor::new(name, opts)
            })
            .collect();
        let other = Db::open_cf_descriptors_read_only(
            &rocksdb::Options::default(),
            &dir,
            descriptors,
            false,
        )?;
        let prefix_len = layout::group_prefix_len(self.config.max_parallelism());
        let part = source.manifest.range.intersect(&range);
        let mut lower = Vec::new();
        layout::write_group(&mut lower, part.start(), prefix_len);
        let mut upper = Vec::new();
        if u32::from(part.end()) + 1 >= self.config.max_parallelism() {
            upper.push(0x80);
        } else {
            layout::write_group(&mut upper, part.end() + 1, prefix_len);
        }
        for (key, value) in parked_records(&other)? {
            if savepoint::parked_group(&key).is_some_and(|g| part.contains(g)) {
                self.handle.db.put(&key, &value)?;
            }
        }
        // Key shapes of states only this source knows (for savepoints before registration).
        for (name, shape) in read_shapes(&other)? {
            if let std::collections::hash_map::Entry::Vacant(v) = self.shapes.lock().entry(name) {
                self.handle
                    .db
                    .put(savepoint::shape_key(v.key()), shape.encode())?;
                v.insert(shape);
            }
        }
        let live = other.live_files()?;
        for name in cfs.iter().filter(|n| n.as_str() != "default") {
            // Column families the base lacks (a state or timer service only another source
            // has) are created first.
            self.ensure_cf(name)?;
            let (Some(from), Some(into)) = (other.cf_handle(name), self.handle.db.cf_handle(name))
            else {
                continue;
            };
            let files = adopt::files_in_ingest_order(&live, name, &dir);
            if files.is_empty() {
                continue;
            }
            match adopt::ingest_as_is(&self.handle.db, &into, &files) {
                Ok(()) => {
                    summary.files_adopted += files.len();
                    continue;
                }
                Err(reason) => {
                    tracing::debug!(cf = %name, checkpoint = source.manifest.checkpoint_id, %reason, "rewriting entries: RocksDB refused the files as they are");
                    summary.column_families_rewritten += 1;
                }
            }
            let mut read = rocksdb::ReadOptions::default();
            read.set_iterate_upper_bound(upper.clone());
            let slot = self
                .slots
                .lock()
                .get(name)
                .cloned()
                .unwrap_or_else(|| inert.clone());
            let opts = state_cf_options(&self.options, name, &self.cache, &None, &slot);
            let mut writer = rocksdb::SstFileWriter::create(&opts);
            let sst = scratch
                .path()
                .join(format!("{}.sst", name.replace(':', "_")));
            let mut any = false;
            for item in other.iterator_cf_opt(
                &from,
                read,
                rocksdb::IteratorMode::From(&lower, rocksdb::Direction::Forward),
            ) {
                let (k, v) = item?;
                if !any {
                    writer.open(&sst)?;
                    any = true;
                }
                writer.put(&k, &v)?;
            }
            if any {
                writer.finish()?;
                let mut ingest = rocksdb::IngestExternalFileOptions::default();
                ingest.set_move_files(true);
                self.handle
                    .db
                    .ingest_external_file_cf_opts(&into, &ingest, vec![&sst])?;
            }
        }
        Ok(())
    }

    fn open_timer_store(&self, cf: String) -> Result<timers::RocksTimerStore> {
        timers::RocksTimerStore::open(
            self.handle.clone(),
            cf,
            layout::group_prefix_len(self.config.max_parallelism()),
            self.config.key_group_range(),
            !self.options.write_ahead_log(),
        )
    }

    /// How the restore that made this engine brought its data in (all zero for an engine
    /// [opened](Self::open) rather than restored).
    pub fn restore_summary(&self) -> &RestoreSummary {
        &self.restored
    }

    /// The database directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The options the engine was opened with.
    pub fn options(&self) -> &RocksDbOptions {
        &self.options
    }

    /// The RocksDB database underneath (the `rocksdb` crate's type), for what the engine does
    /// not wrap: RocksDB's properties and statistics, or a baseline of the raw crate on the
    /// same files (`raw_rocksdb` in `benches/job_shape.rs`). Every state's column family is
    /// named `state:<name>`; keys and values are laid out as DESIGN.md §7b describes.
    ///
    /// Read through it freely. A write through it bypasses the engine's checks, TTL stamps and
    /// kept scan iterators (which see it only at their next refresh); one that does not follow
    /// the layout is read back as [`Error::Decode`].
    ///
    /// ```
    /// use keyed_state::backend::rocksdb::{RocksDbEngine, RocksDbOptions};
    /// use keyed_state::state::ValueStateDescriptor;
    /// use keyed_state::{EngineConfig, KeyedStateBackend};
    /// # fn main() -> Result<(), keyed_state::Error> {
    /// let engine = RocksDbEngine::open_temporary(EngineConfig::default(), RocksDbOptions::default())?;
    /// let backend = KeyedStateBackend::<u64, _>::new(engine);
    /// let count = backend.value_state(&ValueStateDescriptor::<u64>::new("count"))?;
    /// count.update(&backend.key(7)?, &(), 1)?;
    /// let db = backend.engine().db();
    /// let cf = db.cf_handle("state:count").expect("one column family per state");
    /// let keys = db.property_int_value_cf(&cf, "rocksdb.estimate-num-keys")?;
    /// assert_eq!(keys, Some(1));
    /// # Ok(())
    /// # }
    /// ```
    pub fn db(&self) -> &rocksdb::DBWithThreadMode<MultiThreaded> {
        &self.handle.db
    }

    /// Flushes every state's memtables to SST files.
    ///
    /// # Errors
    ///
    /// RocksDB's errors.
    pub fn flush(&self) -> Result<()> {
        for name in self.state_cfs() {
            if let Some(cf) = self.handle.db.cf_handle(&name) {
                self.handle.db.flush_cf(&cf)?;
            }
        }
        self.release_scans();
        Ok(())
    }

    /// Drops every table's kept scan iterator (`scan.rs`), so that the memtables and SST
    /// files each holds since its last scan are freed now, not at that table's next scan:
    /// after the engine's own flushes, compactions and checkpoints.
    fn release_scans(&self) {
        let slots: Vec<Arc<ScanSlot>> = self
            .scans
            .lock()
            .iter()
            .filter_map(std::sync::Weak::upgrade)
            .collect();
        for slot in slots {
            slot.release();
        }
    }

    /// Flushes every memtable and waits until RocksDB's background flushes and compactions are
    /// done: a quiet point for measurements and for deterministic runs.
    ///
    /// # Errors
    ///
    /// RocksDB's errors.
    pub fn settle(&self) -> Result<()> {
        let mut opts = rocksdb::WaitForCompactOptions::default();
        opts.set_flush(true);
        self.handle.db.wait_for_compact(&opts)?;
        self.release_scans();
        Ok(())
    }

    /// Flushes and fully compacts one state's column family (TTL cleanup runs in compactions;
    /// with automatic compaction off, this is when it happens).
    ///
    /// # Errors
    ///
    /// [`Error::UnknownState`] for a state with no column family; RocksDB's errors.
    pub fn compact_state(&self, state: &str) -> Result<()> {
        let cf = self.cf(state)?;
        self.handle.db.flush_cf(&cf)?;
        self.handle
            .db
            .compact_range_cf_opt(&cf, None::<&[u8]>, None::<&[u8]>, &to_the_bottom());
        self.release_scans();
        Ok(())
    }

    /// Every raw (key, value) pair of a state's column family, in key order: what is
    /// physically there, expired or not (tests and tooling).
    ///
    /// # Errors
    ///
    /// [`Error::UnknownState`] for a state with no column family; RocksDB's errors.
    pub fn raw_entries(&self, state: &str) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let cf = self.cf(state)?;
        let mut out = Vec::new();
        for item in self
            .handle
            .db
            .iterator_cf(&cf, rocksdb::IteratorMode::Start)
        {
            let (k, v) = item?;
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    /// Writes raw bytes into a state's column family (tests of bad input and tooling).
    #[cfg(test)]
    pub(crate) fn put_raw(&self, state: &str, key: &[u8], value: &[u8]) -> Result<()> {
        let cf = self.cf(state)?;
        Ok(self.handle.db.put_cf(&cf, key, value)?)
    }

    /// Values of a state that the TTL compaction filter or merge operator could not parse (and
    /// so kept unchanged).
    pub fn unparsable_values(&self, state: &str) -> u64 {
        self.slots
            .lock()
            .get(&cf_name(state))
            .map_or(0, |s| s.unparsable())
    }

    fn cf(&self, state: &str) -> Result<Arc<rocksdb::BoundColumnFamily<'_>>> {
        self.handle
            .db
            .cf_handle(&cf_name(state))
            .ok_or_else(|| Error::UnknownState(state.to_owned()))
    }

    fn state_cfs(&self) -> Vec<String> {
        self.slots.lock().keys().cloned().collect()
    }

    /// Checks `meta` against what the database recorded (or records it), makes sure the column
    /// family exists and configures its TTL callbacks.
    fn prepare_state(&self, meta: &StateMeta) -> Result<()> {
        let db = &self.handle.db;
        let key = [META_PREFIX, meta.name.as_bytes()].concat();
        match db.get(&key)? {
            Some(bytes) => {
                let stored = meta_codec::decode(&bytes).map_err(|source| Error::Decode {
                    state: meta.name.clone(),
                    source,
                })?;
                if let Some((field, existing, requested)) = stored.restore_difference(meta) {
                    return Err(Error::IncompatibleRegistration {
                        name: meta.name.clone(),
                        field,
                        existing,
                        requested,
                    });
                }
                if stored.ttl != meta.ttl {
                    // New TTL settings: recorded, and the compaction filter below follows them.
                    db.put(&key, meta_codec::encode(meta))?;
                    tracing::info!(state = %meta.name, "TTL settings changed across a restart");
                }
            }
            None => db.put(&key, meta_codec::encode(meta))?,
        }
        self.metas.lock().insert(meta.name.clone(), meta.clone());
        let slot = self.ensure_cf(&cf_name(&meta.name))?;
        slot.configure(meta.ttl.as_ref().map(|t| TtlRule {
            ttl_millis: t.ttl_millis(),
            list: meta.kind == StateKind::List,
            prune_on_merge: t.visibility() == StateVisibility::NeverReturnExpired,
            clock: self.config.clock().clone(),
        }));
        Ok(())
    }

    /// The table of a registered state; `user_key` is the map user key's fixed width (`None`
    /// for other kinds). Records parked by a canonical restore are written in now.
    fn table<K: StateKey, N: Namespace, X>(
        &self,
        meta: &StateMeta,
        user_key: Option<usize>,
    ) -> Result<RocksTable<K, N, X>> {
        self.prepare_state(meta)?;
        let shape = PartShape {
            key: K::FIXED_LEN,
            ns: N::FIXED_LEN,
            user_key,
        };
        // Persisted, so a savepoint after a restart or a restore can split this state's keys
        // before it is registered again.
        if self.shapes.lock().insert(meta.name.clone(), shape) != Some(shape) {
            self.handle
                .db
                .put(savepoint::shape_key(&meta.name), shape.encode())?;
        }
        self.apply_parked(meta, shape)?;
        let scans = Arc::new(ScanSlot::empty(self.handle.clone()));
        let mut kept = self.scans.lock();
        kept.retain(|slot| slot.strong_count() > 0);
        kept.push(Arc::downgrade(&scans));
        drop(kept);
        RocksTable::new(
            self.handle.clone(),
            &self.config,
            meta,
            &self.options,
            scans,
        )
    }
}

/// A raw (key, value) pair read from RocksDB.
type KeyValue = (Box<[u8]>, Box<[u8]>);

/// Every (key, value) of the `default` column family starting with `prefix`.
fn default_cf_prefix(db: &Db, prefix: &[u8]) -> Result<Vec<KeyValue>> {
    Ok(db
        .prefix_iterator(prefix)
        .take_while(|item| item.as_ref().map_or(true, |(k, _)| k.starts_with(prefix)))
        .collect::<std::result::Result<_, _>>()?)
}

/// Every record parked by a canonical restore, of every state.
fn parked_records(db: &Db) -> Result<Vec<KeyValue>> {
    default_cf_prefix(db, savepoint::PARKED_PREFIX)
}

/// Compacts `(column family, from, to)` ranges on a thread of its own, to the bottom level, so
/// the data and range deletions of key groups a restore cut away are gone from the files. Best
/// effort: a failure is logged, and dropping the engine stops it
/// ([`adopt::stop_manual_compactions`]).
fn compact_in_background(
    handle: Arc<DbHandle>,
    ranges: Vec<(String, Vec<u8>, Vec<u8>)>,
) -> Option<std::thread::JoinHandle<()>> {
    let spawned = std::thread::Builder::new()
        .name("keyed-state-compact-clipped".into())
        .spawn(move || {
            let options = to_the_bottom();
            for (name, from, to) in ranges {
                let Some(cf) = handle.db.cf_handle(&name) else {
                    continue;
                };
                handle
                    .db
                    .compact_range_cf_opt(&cf, Some(&from), Some(&to), &options);
            }
            tracing::debug!(path = %handle.db.path().display(), "compacted the key groups a restore cut away");
        });
    match spawned {
        Ok(h) => Some(h),
        Err(e) => {
            tracing::warn!(error = %e, "could not start compacting the key groups a restore cut away");
            None
        }
    }
}

/// Options of a manual compaction that rewrites the bottom level too, so what it drops
/// (expired entries, entries under range deletions, and the range deletions themselves) is gone
/// from every level.
fn to_the_bottom() -> rocksdb::CompactOptions {
    let mut options = rocksdb::CompactOptions::default();
    options.set_bottommost_level_compaction(rocksdb::BottommostLevelCompaction::Force);
    options
}

/// A key range of a column family a restore cut away: (column family, from, to excluded).
type Cut = (String, Vec<u8>, Vec<u8>);

/// How many range deletions the SST files of `cf` hold (RocksDB's aggregated table
/// properties; memtables are not counted, so flush first). A figure that cannot be read
/// counts as some.
fn range_deletions(db: &Db, cf: &impl rocksdb::AsColumnFamilyRef) -> Result<u64> {
    Ok(table_property(db, cf, "# range deletions")?.unwrap_or(u64::MAX))
}

/// One count of a column family's SST files summed (`rocksdb.aggregated-table-properties`,
/// e.g. `# range deletions`, `# data blocks`): 0 with no file, `None` if it cannot be read.
fn table_property(
    db: &Db,
    cf: &impl rocksdb::AsColumnFamilyRef,
    field: &str,
) -> Result<Option<u64>> {
    let properties = db.property_value_cf(cf, "rocksdb.aggregated-table-properties")?;
    Ok(properties.as_deref().map_or(Some(0), |p| {
        p.split(';')
            .filter_map(|f| f.split_once('='))
            .find(|(name, _)| name.trim() == field)
            .and_then(|(_, value)| value.trim().parse().ok())
    }))
}

/// Downloads a checkpoint's files into `dir` (verified), returning the restored SSTs' shared
/// names by local file name.
fn download(source: &RestoreSource, dir: &Path) -> Result<HashMap<String, String>> {
    let entries: Vec<&FileEntry> = source
        .manifest
        .files
        .iter()
        .filter(|e| e.role != FileRole::Timers) // read by `RestoredTimerSet::read`
        .collect();
    // Two entries with one local name would make the second download land on the first
    // (possibly a hard link to a stored file): refuse before anything is written.
    let mut seen: HashMap<&str, &str> = HashMap::new();
    for entry in &entries {
        if let Some(other) = seen.insert(snapshot::local_name(entry), &entry.path) {
            return Err(CheckpointError::Corrupt {
                path: crate::checkpoint::manifest_path(source.manifest.checkpoint_id),
                reason: format!(
                    "{other} and {} both restore as {}",
                    entry.path,
                    snapshot::local_name(entry)
                ),
            }
            .into());
        }
    }
    let storage = source.storage.as_ref();
    map_bounded(&entries, storage.transfer_concurrency(), |entry| {
        let local = snapshot::local_name(entry);
        // SSTs are immutable for RocksDB too, so they may share the stored file; MANIFEST
        // and friends are appended to and must be copies.
        let link = local.ends_with(".sst");
        fetch_verified(storage, entry, &dir.join(local), link)
    })?;
    Ok(entries
        .iter()
        .filter(|e| e.role == FileRole::SharedSst)
        .map(|e| (snapshot::local_name(e).to_owned(), e.path.clone()))
        .collect())
}

/// Every state's persisted key shape.
fn read_shapes(db: &Db) -> Result<HashMap<String, PartShape>> {
    let mut out = HashMap::new();
    for (k, v) in default_cf_prefix(db, savepoint::SHAPE_PREFIX)? {
        let name =
            String::from_utf8_lossy(k.get(savepoint::SHAPE_PREFIX.len()..).unwrap_or_default())
                .into_owned();
        let shape = PartShape::decode(&v).map_err(|source| Error::Decode {
            state: name.clone(),
            source,
        })?;
        out.insert(name, shape);
    }
    Ok(out)
}

/// Every state's metadata recorded in the database.
fn read_metas(db: &Db) -> Result<BTreeMap<String, StateMeta>> {
    let mut out = BTreeMap::new();
    for item in db.prefix_iterator(META_PREFIX) {
        let (k, v) = item?;
        if !k.starts_with(META_PREFIX) {
            break;
        }
        let name = String::from_utf8_lossy(&k[META_PREFIX.len()..]).into_owned();
        let meta = meta_codec::decode(&v).map_err(|source| Error::Decode {
            state: name.clone(),
            source,
        })?;
        out.insert(name, meta);
    }
    Ok(out)
}

/// A fresh id for a database's shared SST names: 16 hex digits, random per process and call.
fn new_uid() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    format!("{:016x}", h.finish())
}

/// Records `max_parallelism` in a new database, or checks it against the recorded one.
fn check_max_parallelism_unchanged(db: &Db, requested: u32) -> Result<()> {
    const KEY: &[u8] = b"meta/max_parallelism";
    match db.get(KEY)? {
        None => Ok(db.put(KEY, requested.to_be_bytes())?),
        Some(bytes) => {
            let stored =
                <u32 as crate::codec::Codec>::decode(&bytes).map_err(|source| Error::Decode {
                    state: "meta/max_parallelism".into(),
                    source,
                })?;
            if stored == requested {
                Ok(())
            } else {
                Err(ConfigError::MaxParallelismChanged { stored, requested }.into())
            }
        }
    }
}

/// The options of every state column family: shared block cache, bloom filters (or none in the
/// last level), compression, memtables, the list merge operator and the TTL compaction filter
/// (both inert until the state's TTL is known).
fn state_cf_options(
    options: &RocksDbOptions,
    cf_name: &str,
    cache: &Cache,
    write_buffers: &Option<WriteBufferManager>,
    slot: &Arc<TtlSlot>,
) -> rocksdb::Options {
    // Timer column families (`timers:…`) take the engine-wide block size and compression.
    let state = state_of_cf(cf_name);
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(cache);
    table.set_block_size(state.map_or(options.block_size_bytes(), |s| options.block_size_of(s)));
    if let Some(bits) = options.bloom_bits_per_key() {
        table.set_bloom_filter(bits, false);
    }
    if options.index_and_filters_in_cache() {
        // Charged to the cache, and pinned so they are never read back in (§7b).
        table.set_cache_index_and_filter_blocks(true);
        table.set_unpartitioned_pinning_tier(rocksdb::BlockBasedTablePinningTier::All);
    }
    let mut cf = rocksdb::Options::default();
    cf.set_block_based_table_factory(&table);
    cf.set_optimize_filters_for_hits(options.optimize_filters_for_hits());
    cf.set_write_buffer_size(options.write_buffer_bytes());
    cf.set_max_write_buffer_number(options.max_write_buffers());
    cf.set_disable_auto_compactions(!options.auto_compaction());
    if let Some(wbm) = write_buffers {
        cf.set_write_buffer_manager(wbm);
    }
    let compression = state.map_or(options.compression(), |s| options.compression_of(s));
    cf.set_compression_type(match compression {
        Compression::None => DBCompressionType::None,
        Compression::Lz4 => DBCompressionType::Lz4,
        Compression::Zstd => DBCompressionType::Zstd,
    });
    let full = slot.clone();
    cf.set_merge_operator(
        "keyed-state-list-append",
        move |_key: &[u8], existing: Option<&[u8]>, operands: &rocksdb::MergeOperands| {
            Some(ttl_filter::full_merge(&full, existing, operands))
        },
        |_key: &[u8], _existing: Option<&[u8]>, operands: &rocksdb::MergeOperands| {
            Some(ttl_filter::partial_merge(operands))
        },
    );
    cf.set_compaction_filter_factory(TtlFilterFactory::new(slot.clone()));
    cf
}

impl Engine for RocksDbEngine {
    fn name(&self) -> &'static str {
        "rocksdb"
    }

    /// With [`RocksDbOptions::timers_in_rocksdb`], a store in the column family
    /// `timers:<name>`; otherwise the heap.
    fn timer_store(&self, meta: &TimerMeta) -> Result<Option<Box<dyn TimerStore>>> {
        if !self.options.timers_in_rocksdb() {
            return Ok(None);
        }
        // The service's codecs, checked against what this database recorded (a restored
        // database has its checkpoint's), as states' metadata is.
        let key = timers::timer_meta_key(&meta.name);
        match self.handle.db.get(&key)? {
            Some(bytes) => {
                let stored = timers::decode_timer_meta(&bytes).map_err(|source| Error::Decode {
                    state: timers::timer_cf_name(&meta.name),
                    source,
                })?;
                if stored != *meta {
                    return Err(Error::IncompatibleRegistration {
                        name: meta.name.clone(),
                        field: "timer key / namespace codecs",
                        existing: format!("{} / {}", stored.key_codec, stored.namespace_codec),
                        requested: format!("{} / {}", meta.key_codec, meta.namespace_codec),
                    });
                }
            }
            None => self.handle.db.put(&key, timers::encode_timer_meta(meta))?,
        }
        let cf = timers::timer_cf_name(&meta.name);
        self.ensure_cf(&cf)?;
        Ok(Some(Box::new(self.open_timer_store(cf)?)))
    }

    fn resident_timer_services(&self) -> Result<Vec<(String, Option<TimerMeta>)>> {
        let mut names: Vec<String> = self
            .state_cfs()
            .into_iter()
            .filter_map(|cf| cf.strip_prefix(timers::TIMER_CF_PREFIX).map(str::to_owned))
            .collect();
        names.sort();
        names
            .into_iter()
            .map(|name| {
                let meta = match self.handle.db.get(timers::timer_meta_key(&name))? {
                    Some(bytes) => {
                        Some(
                            timers::decode_timer_meta(&bytes).map_err(|source| Error::Decode {
                                state: timers::timer_cf_name(&name),
                                source,
                            })?,
                        )
                    }
                    None => None,
                };
                Ok((name, meta))
            })
            .collect()
    }

    fn resident_timer_store(&self, name: &str) -> Result<Option<Box<dyn TimerStore>>> {
        let cf = timers::timer_cf_name(name);
        if !self.slots.lock().contains_key(&cf) {
            return Ok(None);
        }
        Ok(Some(Box::new(self.open_timer_store(cf)?)))
    }

    /// Flushes every column family and makes a RocksDB checkpoint (hard links) into a staging
    /// directory; the upload runs in the returned job.
    fn snapshot(&self, mode: SnapshotMode) -> Result<SnapshotJob> {
        let specs = if mode == SnapshotMode::Savepoint {
            Some(self.savepoint_specs()?)
        } else {
            None
        };
        let db = &self.handle.db;
        let mut flush = rocksdb::FlushOptions::default();
        flush.set_wait(true);
        for name in self.state_cfs() {
            if let Some(cf) = db.cf_handle(&name) {
                db.flush_cf_opt(&cf, &flush)?;
            }
        }
        db.flush_opt(&flush)?;
        // The memtables just flushed are freed once no kept iterator holds them.
        self.release_scans();
        let now = self.config.now_millis();
        // The checkpoint id is not known here; a per-call counter keeps staging names apart.
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let staging = snapshot::staging_dir(
            &self.path,
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        );
        if staging.exists() {
            fs::remove_dir_all(&staging).at(&staging)?;
        }
        rocksdb::checkpoint::Checkpoint::new(db)?.create_checkpoint(&staging)?;
        if let Some(states) = specs {
            return Ok(SnapshotJob {
                upload: Box::new(savepoint::SavepointUpload {
                    staging,
                    max_parallelism: self.config.max_parallelism(),
                    range: self.config.key_group_range(),
                    now,
                    states,
                }),
                engine: self.name(),
                max_parallelism: self.config.max_parallelism(),
                range: self.config.key_group_range(),
                created_at_millis: now,
            });
        }
        Ok(SnapshotJob {
            upload: Box::new(snapshot::RocksUpload {
                staging,
                mode,
                uid: self.uid.clone(),
                restored: self.restored_ssts.clone(),
                states: self.metas.lock().values().cloned().collect(),
            }),
            engine: self.name(),
            max_parallelism: self.config.max_parallelism(),
            range: self.config.key_group_range(),
            created_at_millis: now,
        })
    }

    fn config(&self) -> &EngineConfig {
        &self.config
    }

    fn value_table<K: StateKey, N: Namespace, V: StateValue>(
        &self,
        meta: &StateMeta,
    ) -> Result<Arc<dyn ValueTable<K, N, V>>> {
        Ok(Arc::new(self.table::<K, N, V>(meta, None)?))
    }

    fn list_table<K: StateKey, N: Namespace, E: StateValue>(
        &self,
        meta: &StateMeta,
    ) -> Result<Arc<dyn ListTable<K, N, E>>> {
        Ok(Arc::new(self.table::<K, N, Vec<E>>(meta, None)?))
    }

    fn map_table<K: StateKey, N: Namespace, UK: MapKey, UV: StateValue>(
        &self,
        meta: &StateMeta,
    ) -> Result<Arc<dyn MapTable<K, N, UK, UV>>> {
        Ok(Arc::new(self.table::<K, N, (UK, UV)>(meta, UK::FIXED_LEN)?))
    }

    fn take_restored_timers(&self) -> RestoredTimerSet {
        std::mem::take(&mut *self.restored_timers.lock())
    }

    fn metrics(&self) -> Result<EngineMetrics> {
        let db = &self.handle.db;
        let mut states = Vec::new();
        let mut memtable_bytes = 0;
        let mut table_reader_bytes = 0;
        let mut names = self.state_cfs();
        names.sort();
        for name in names {
            // Timer column families are not states.
            let (Some(state), Some(cf)) = (state_of_cf(&name), db.cf_handle(&name)) else {
                continue;
            };
            let int = |prop: &str| db.property_int_value_cf(&cf, prop).map(|v| v.unwrap_or(0));
            memtable_bytes += int("rocksdb.cur-size-all-mem-tables")?;
            table_reader_bytes += int("rocksdb.estimate-table-readers-mem")?;
            states.push(StateMetrics {
                name: state.to_owned(),
                approximate_entries: int("rocksdb.estimate-num-keys")?,
                approximate_bytes: int("rocksdb.total-sst-files-size")?
                    + int("rocksdb.cur-size-all-mem-tables")?,
            });
        }
        Ok(EngineMetrics {
            states,
            memory_bytes: memtable_bytes,
            cache_bytes: u64::try_from(self.cache.get_usage()).unwrap_or(u64::MAX),
            row_cache_bytes: self
                .row_cache
                .as_ref()
                .map_or(0, |c| u64::try_from(c.get_usage()).unwrap_or(u64::MAX)),
            table_reader_bytes,
        })
    }
}

impl Drop for RocksDbEngine {
    fn drop(&mut self) {
        // A background compaction of cut-away key groups holds the database open: cancel it
        // and wait for its thread, so the database closes (and its directory is free for a
        // new instance) once the last table is dropped, not whenever the compaction ends.
        adopt::stop_manual_compactions(&self.handle.db);
        if let Some(h) = self.compaction.lock().take()
            && h.join().is_err()
        {
            tracing::warn!("the background compaction of a restore's cut key groups panicked");
        }
    }
}

impl fmt::Debug for RocksDbEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RocksDbEngine")
            .field("path", &self.path)
            .field("config", &self.config)
            .field("options", &self.options)
            .field("states", &self.slots.lock().len())
            .field("row_cache", &self.row_cache.is_some())
            .finish()
    }
}
