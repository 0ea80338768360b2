//! Options of the RocksDB engine, with documented defaults. Everything the engine sets on
//! RocksDB is derived from this struct explicitly, rather than left to RocksDB's defaults.

use std::collections::BTreeMap;

/// Block compression of SST files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Compression {
    /// No compression.
    None,
    /// LZ4: fast, moderate ratio (the default).
    #[default]
    Lz4,
    /// Zstandard: slower, better ratio.
    Zstd,
}

/// The kind of the block cache every state's column family shares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum BlockCache {
    /// RocksDB's HyperClockCache (its automatically sized variant): lookups take no lock and
    /// eviction is a clock sweep, not a list kept in recency order (the default; DESIGN.md
    /// §9 has the figures that chose it).
    #[default]
    HyperClock,
    /// RocksDB's sharded LRU cache: a mutex per shard, taken on every lookup to move the
    /// entry to the list's head (RocksDB's long-standing default, and Flink's).
    Lru,
}

/// Options of [`RocksDbEngine`](super::RocksDbEngine).
///
/// ```
/// use keyed_state::backend::rocksdb::{Compression, RocksDbOptions};
/// let opts = RocksDbOptions::default()
///     .with_block_cache_bytes(256 << 20)
///     .with_compression(Compression::Zstd)
///     .with_memory_budget_bytes(Some(1 << 30));
/// assert!(!opts.write_ahead_log());
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct RocksDbOptions {
    block_cache_bytes: usize,
    block_cache: BlockCache,
    write_buffer_bytes: usize,
    max_write_buffers: i32,
    compression: Compression,
    block_size_bytes: usize,
    bloom_bits_per_key: Option<f64>,
    index_and_filters_in_cache: bool,
    optimize_filters_for_hits: bool,
    memory_budget_bytes: Option<usize>,
    write_ahead_log: bool,
    auto_compaction: bool,
    background_jobs: i32,
    timers_in_rocksdb: bool,
    compact_after_rescale: bool,
    batch_read_threads: usize,
    row_cache_bytes: usize,
    state_compression: BTreeMap<String, Compression>,
    state_block_size: BTreeMap<String, usize>,
    mmap_reads: bool,
    scan_iterator_reuse: bool,
}

impl Default for RocksDbOptions {
    /// 64 MiB HyperClock block cache shared by all states, holding every SST's index and filter
    /// blocks (pinned) as well as data blocks, 64 MiB write buffers (2 per state), LZ4, 4 KiB
    /// data blocks, 10-bit bloom filters for point lookups in every level, no overall memory
    /// budget, **no write-ahead log** (durability comes from checkpoints), automatic
    /// compaction with 2 background jobs, timers on the heap, key groups a rescaling restore
    /// cut away compacted in the background, batched reads on the caller's thread alone, no
    /// row cache, every state with the same compression and block size, SST files read with
    /// `pread` (not mapped), scan iterators kept between scans.
    fn default() -> Self {
        RocksDbOptions {
            block_cache_bytes: 64 << 20,
            block_cache: BlockCache::HyperClock,
            write_buffer_bytes: 64 << 20,
            max_write_buffers: 2,
            compression: Compression::Lz4,
            block_size_bytes: 4 << 10,
            bloom_bits_per_key: Some(10.0),
            index_and_filters_in_cache: true,
            optimize_filters_for_hits: false,
            memory_budget_bytes: None,
            write_ahead_log: false,
            auto_compaction: true,
            background_jobs: 2,
            timers_in_rocksdb: false,
            compact_after_rescale: true,
            batch_read_threads: 1,
            row_cache_bytes: 0,
            state_compression: BTreeMap::new(),
            state_block_size: BTreeMap::new(),
            mmap_reads: false,
            scan_iterator_reuse: true,
        }
    }
}

macro_rules! option {
    ($(#[$doc:meta])* $field:ident, $with:ident, $ty:ty) => {
        $(#[$doc])*
        pub fn $field(&self) -> $ty {
            self.$field
        }

        $(#[$doc])*
        #[must_use]
        pub fn $with(mut self, value: $ty) -> Self {
            self.$field = value;
            self
        }
    };
}

impl RocksDbOptions {
    option!(
        /// Size of the block cache shared by every state's column family.
        block_cache_bytes, with_block_cache_bytes, usize);
    option!(
        /// Kind of the block cache: [`BlockCache::HyperClock`] (the default) or
        /// [`BlockCache::Lru`]. The row cache is always an LRU cache (a HyperClockCache
        /// takes only fixed-size keys, which rows do not have).
        ///
        /// ```
        /// use keyed_state::backend::rocksdb::{BlockCache, RocksDbOptions};
        /// let opts = RocksDbOptions::default().with_block_cache(BlockCache::Lru);
        /// assert_eq!(opts.block_cache(), BlockCache::Lru);
        /// assert_eq!(RocksDbOptions::default().block_cache(), BlockCache::HyperClock);
        /// ```
        block_cache, with_block_cache, BlockCache);
    option!(
        /// Memtable size per state before it is flushed.
        write_buffer_bytes, with_write_buffer_bytes, usize);
    option!(
        /// Memtables per state (one active, the rest being flushed).
        max_write_buffers, with_max_write_buffers, i32);
    option!(
        /// SST block compression.
        compression, with_compression, Compression);
    option!(
        /// Target size of an SST data block before compression: 4 KiB, the default (RocksDB's
        /// and Flink's), or any size from [`MIN_BLOCK_SIZE`] to [`MAX_BLOCK_SIZE`] (an engine
        /// opened with another is refused with [`ConfigError::Invalid`](crate::ConfigError)).
        /// Per state with [`with_state_block_size`](Self::with_state_block_size). It applies to
        /// the files written from then on; files already written keep theirs until compacted.
        ///
        /// A point read searches the index for its block, then the block. Which size reads
        /// faster depends on where the blocks are. In the block cache, larger blocks mean a
        /// smaller index and fewer cache entries: at 1 million keys of the `job_shape`
        /// benchmark's state, all of it in a 512 MiB cache, 16 KiB blocks read 2-13 % faster
        /// than 4 KiB and 64 KiB blocks 10-14 % faster, 2 KiB ones 4-8 % slower. Past the
        /// cache, a read that misses copies and decompresses a whole block for one entry, so
        /// smaller blocks win: at 10 million keys, 2 KiB blocks read lists and map entries 6-17 %
        /// faster than 4 KiB, and 16 KiB blocks read them 29-38 % slower (DESIGN.md §9). Hence
        /// the default of 4 KiB for an engine meant for state larger than memory. Smaller blocks
        /// also compress less well and take a larger index (pinned in the cache with
        /// [`index_and_filters_in_cache`](Self::index_and_filters_in_cache)).
        ///
        /// ```
        /// use keyed_state::backend::rocksdb::RocksDbOptions;
        /// assert_eq!(RocksDbOptions::default().block_size_bytes(), 4 << 10);
        /// // State that lives in the block cache.
        /// let opts = RocksDbOptions::default().with_block_size_bytes(16 << 10);
        /// assert_eq!(opts.block_size_of("counts"), 16 << 10);
        /// ```
        block_size_bytes, with_block_size_bytes, usize);
    option!(
        /// Bloom filter bits per key for point lookups (`None`: no filter).
        bloom_bits_per_key, with_bloom_bits_per_key, Option<f64>);
    option!(
        /// Whether every SST's index and filter blocks live in the block cache, charged to it
        /// and pinned there while their file is open (on, the default), or in the file's
        /// reader beside the cache (off, RocksDB's own default).
        ///
        /// They grow with the data, not with the cache: about 1.25 bytes of filter per entry
        /// at 10 bits per key, and an index entry per data block. On, they are charged to the
        /// block cache, so the cache (with the memtables charged to it, see
        /// [`memory_budget_bytes`](Self::memory_budget_bytes)) accounts for the engine's
        /// memory, as Flink's managed memory does for its RocksDB; what they take is no longer
        /// there for data blocks. Off, they come on top of every bound, and
        /// [`EngineMetrics::table_reader_bytes`](crate::backend::EngineMetrics) shows how much.
        /// Pinned, they are never evicted, so a lookup never waits to read one back (the
        /// thrashing that makes RocksDB leave them out of the cache by default). Size the
        /// cache for them: with more data than the cache has room for theirs, data blocks get
        /// none (the cache then holds more than its size, as much as they would take outside
        /// it), and [`EngineMetrics::cache_bytes`](crate::backend::EngineMetrics) shows it.
        ///
        /// ```
        /// use keyed_state::backend::rocksdb::RocksDbOptions;
        /// assert!(RocksDbOptions::default().index_and_filters_in_cache());
        /// let opts = RocksDbOptions::default().with_index_and_filters_in_cache(false);
        /// assert!(!opts.index_and_filters_in_cache());
        /// ```
        index_and_filters_in_cache, with_index_and_filters_in_cache, bool);
    option!(
        /// Whether the last level of the LSM tree goes without bloom filters (RocksDB's
        /// `optimize_filters_for_hits`; off by default): compactions into it build none, and
        /// reads skip the filters of files that reached it another way.
        ///
        /// For state that is almost always read where it exists. The last level holds about
        /// 90 % of the data, so this skips the filter probe of most reads of a present key, a
        /// cache miss of its own once the filters outgrow the processor's caches, and the
        /// files compacted into it take no memory and no checkpoint bytes for filters (1.25
        /// bytes per entry at 10 bits per key; files moved there whole keep theirs). The price
        /// is the read of an absent key (the first touch of a key or a window, every read of a
        /// deduplication): where the filter answered, the last level's index and a data block
        /// are searched, from the block cache or else from the file. DESIGN.md §9 has the
        /// figures: reads of a map state of 10 million entries 8-17 % faster, the other reads
        /// level, reads of absent keys 3× slower.
        ///
        /// ```
        /// use keyed_state::backend::rocksdb::RocksDbOptions;
        /// assert!(!RocksDbOptions::default().optimize_filters_for_hits());
        /// let opts = RocksDbOptions::default().with_optimize_filters_for_hits(true);
        /// assert!(opts.optimize_filters_for_hits());
        /// ```
        optimize_filters_for_hits, with_optimize_filters_for_hits, bool);
    option!(
        /// A budget for all memtables together, charged to the block cache so memtables and
        /// cache share one bound (`None`: each state's memtables are bounded on their own).
        memory_budget_bytes, with_memory_budget_bytes, Option<usize>);
    option!(
        /// Whether writes go through RocksDB's write-ahead log (off: checkpoints give
        /// durability, and a crash restores the last one).
        write_ahead_log, with_write_ahead_log, bool);
    option!(
        /// Whether RocksDB compacts on its own; tests and the simulator turn it off and compact
        /// at chosen points so TTL effects are deterministic.
        auto_compaction, with_auto_compaction, bool);
    option!(
        /// Background flush and compaction threads.
        background_jobs, with_background_jobs, i32);
    option!(
        /// Whether timer services keep their timers in RocksDB (a column family per service,
        /// with each key group's head cached in memory) instead of on the heap. Off by
        /// default: timers are usually far fewer than state entries, and the heap is several
        /// times faster (DESIGN.md §7d); turn it on when timers do not fit in memory.
        timers_in_rocksdb, with_timers_in_rocksdb, bool);
    option!(
        /// Whether a restore that cut key groups away (rescaling: range deletions over the
        /// groups outside the new range) then compacts those ranges on a background thread.
        /// On by default: it frees their space, and their checkpoint files can be adopted as
        /// they are by a later rescale (files that carry range deletions cannot, and that
        /// restore rewrites their entries instead, which is slower).
        compact_after_rescale, with_compact_after_rescale, bool);
    option!(
        /// Into how many parts a batched read (`get_batch` on any view) splits its sorted keys,
        /// read in parallel on rayon's global thread pool; a part has at least
        /// [`MIN_KEYS_PER_READ_THREAD`] keys, so small batches stay on the caller's thread.
        /// 1 (the default) reads on the caller's thread alone.
        ///
        /// RocksDB's own batched lookup cannot overlap its cache misses within one thread
        /// (that takes its coroutine build), so more threads are the way a batch's misses
        /// overlap, as Flink's asynchronous state access reads through a pool of I/O threads.
        /// It spends other cores on one task's reads: worth it when the machine has cores to
        /// spare, not when every core already runs a task. The pool is the one savepoints and
        /// restores encode and decode key groups on, so a batch read meanwhile may wait for
        /// their work. Results, errors and their order are the same whatever the value; 0
        /// counts as 1.
        ///
        /// ```
        /// use keyed_state::backend::rocksdb::RocksDbOptions;
        /// let opts = RocksDbOptions::default().with_batch_read_threads(2);
        /// assert_eq!(opts.batch_read_threads(), 2);
        /// ```
        batch_read_threads, with_batch_read_threads, usize);
    option!(
        /// Size of RocksDB's row cache (0, the default: none), a cache of single entries read
        /// by point lookups, beside the block cache and not part of it. A point read (`get`
        /// on any view, a map's `get` or `contains`, their batched forms) whose entry is
        /// cached skips the SST's filter, index and data-block search. Scans (a map's entries,
        /// key listings, checkpoints) do not use it.
        ///
        /// It pays only when the entries read again fit in it: in the `job_shape` benchmark,
        /// 128 MiB of rows beside a 384 MiB block cache made point reads 2-3× faster on a
        /// working set of a quarter of a million keys read over and over, and gained nothing
        /// on uniform reads over a million keys, where it made map reads with TTL 4× slower
        /// (an entry takes about 150 bytes of cache whatever its size, a miss costs an insert,
        /// and the block cache it was taken from holds less; DESIGN.md §7b). So: for skewed
        /// access whose hot entries fit, not for uniform access to more entries than it holds.
        ///
        /// RocksDB's row cache ignores range deletions, so with one a rescaling restore
        /// compacts the key groups it cuts away before it returns, instead of in the
        /// background (and any range deletion its checkpoint files carry), which makes such a
        /// restore slower.
        ///
        /// ```
        /// use keyed_state::backend::rocksdb::RocksDbOptions;
        /// // 512 MiB in all: 384 MiB of blocks (memtables charged to them), 128 MiB of rows.
        /// let opts = RocksDbOptions::default()
        ///     .with_block_cache_bytes(384 << 20)
        ///     .with_memory_budget_bytes(Some(256 << 20))
        ///     .with_row_cache_bytes(128 << 20);
        /// assert_eq!(opts.row_cache_bytes(), 128 << 20);
        /// ```
        row_cache_bytes, with_row_cache_bytes, usize);
    option!(
        /// Whether SST files are mapped into memory and read from the mapping (RocksDB's
        /// `allow_mmap_reads`) instead of copied out of the page cache by a `pread` per block
        /// (off, the default).
        ///
        /// For state larger than the block cache whose files the page cache holds: a read
        /// that misses the block cache then costs no system call and no copy, and a block
        /// stored uncompressed ([`Compression::None`], engine-wide or per state with
        /// [`with_state_compression`](Self::with_state_compression)) is searched where it
        /// lies, without being decompressed or put in the block cache. At 10 million keys of
        /// the `job_shape` benchmark (3 GB of state, a 512 MiB budget), mapped files read
        /// 100-byte values about a third faster; mapped and uncompressed, reads of 100-byte
        /// values, lists and maps went 1.5-2× as fast as with the defaults (8-byte values
        /// 1.1×). At 1 million keys, where the block cache holds most blocks, reads are level,
        /// and uncompressed checkpoints 75 % larger (DESIGN.md §9).
        ///
        /// Why off by default: a read error of a mapped file (a failing disk, a file
        /// truncated under the engine) is delivered as `SIGBUS` and ends the process, where a
        /// `pread` returns an error the engine reports as [`Error::RocksDb`](crate::Error::RocksDb).
        /// Either way the job restores its last checkpoint; mapped, it gets no error to log.
        /// The mapping also makes the files' pages count in the process's resident memory.
        ///
        /// ```
        /// use keyed_state::backend::rocksdb::{Compression, RocksDbOptions};
        /// assert!(!RocksDbOptions::default().mmap_reads());
        /// // State read far beyond the block cache, on a machine with page cache to spare.
        /// let opts = RocksDbOptions::default()
        ///     .with_mmap_reads(true)
        ///     .with_compression(Compression::None);
        /// assert!(opts.mmap_reads());
        /// ```
        mmap_reads, with_mmap_reads, bool);
    option!(
        /// Whether each state keeps the iterator of its last prefix scan (a map's entries,
        /// keys or values, a key group's keys) for the next one, refreshing it to the latest
        /// writes instead of making a new one: a 10-entry map scan about 1.5× faster. On by
        /// default. The price: between its scans the kept iterator holds the memtables and
        /// SST files of its last one, so memtables flushed and files compacted away since are
        /// freed at the state's next scan, or at the engine's next
        /// [`flush`](super::RocksDbEngine::flush), [`settle`](super::RocksDbEngine::settle),
        /// [`compact_state`](super::RocksDbEngine::compact_state) or checkpoint, which let go
        /// of every kept iterator. Turn it off for a state scanned once in a long while on a
        /// database that writes between checkpoints more than its memory budget holds.
        ///
        /// ```
        /// use keyed_state::backend::rocksdb::RocksDbOptions;
        /// let opts = RocksDbOptions::default().with_scan_iterator_reuse(false);
        /// assert!(!opts.scan_iterator_reuse());
        /// assert!(RocksDbOptions::default().scan_iterator_reuse());
        /// ```
        scan_iterator_reuse, with_scan_iterator_reuse, bool);

    /// The compression of one state's SST files, in place of
    /// [`compression`](Self::compression) for that state alone. It applies to the files
    /// written from then on (flushes, compactions, restores that rewrite entries); files
    /// already written keep theirs until compacted.
    ///
    /// For state read past the block cache whose blocks compress: every read that misses
    /// the cache decompresses a whole block. At 10 million keys of the `job_shape`
    /// benchmark, LZ4 took 22 % of a list read, and its lists of `u64` read 23 % faster
    /// stored uncompressed, but the other states' reads 8 % slower: the larger blocks take
    /// more of the shared cache (DESIGN.md §9). The price is that, and the state's disk
    /// and checkpoint bytes.
    ///
    /// ```
    /// use keyed_state::backend::rocksdb::{Compression, RocksDbOptions};
    /// let opts = RocksDbOptions::default().with_state_compression("events", Compression::None);
    /// assert_eq!(opts.compression_of("events"), Compression::None);
    /// assert_eq!(opts.compression_of("counts"), Compression::Lz4);
    /// ```
    #[must_use]
    pub fn with_state_compression(mut self, state: &str, compression: Compression) -> Self {
        self.state_compression.insert(state.to_owned(), compression);
        self
    }

    /// The data block size of one state's SST files, in place of
    /// [`block_size_bytes`](Self::block_size_bytes) for that state alone (same bounds, same
    /// trade: larger for state read from the block cache, smaller for state read far past
    /// it). It applies to the files written from then on.
    ///
    /// ```
    /// use keyed_state::backend::rocksdb::RocksDbOptions;
    /// // A large map state read past the cache, beside small hot values.
    /// let opts = RocksDbOptions::default()
    ///     .with_block_size_bytes(16 << 10)
    ///     .with_state_block_size("sessions", 2 << 10);
    /// assert_eq!(opts.block_size_of("sessions"), 2 << 10);
    /// assert_eq!(opts.block_size_of("counts"), 16 << 10);
    /// ```
    #[must_use]
    pub fn with_state_block_size(mut self, state: &str, bytes: usize) -> Self {
        self.state_block_size.insert(state.to_owned(), bytes);
        self
    }

    /// The data block size of `state`'s SST files: its own (see
    /// [`with_state_block_size`](Self::with_state_block_size)), or else
    /// [`block_size_bytes`](Self::block_size_bytes).
    pub fn block_size_of(&self, state: &str) -> usize {
        self.state_block_size
            .get(state)
            .copied()
            .unwrap_or(self.block_size_bytes)
    }

    /// Checks the settings that have bounds, before anything is opened.
    pub(crate) fn check(&self) -> Result<(), crate::ConfigError> {
        let sizes = std::iter::once((None, self.block_size_bytes)).chain(
            self.state_block_size
                .iter()
                .map(|(state, &bytes)| (Some(state), bytes)),
        );
        for (state, bytes) in sizes {
            if !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&bytes) {
                let whose = state.map_or_else(String::new, |s| format!(" of state {s:?}"));
                return Err(crate::ConfigError::Invalid(format!(
                    "RocksDB block size{whose} of {bytes} bytes: it must lie in \
                     {MIN_BLOCK_SIZE}..={MAX_BLOCK_SIZE}"
                )));
            }
        }
        Ok(())
    }

    /// The compression of `state`'s SST files: its own (see
    /// [`with_state_compression`](Self::with_state_compression)), or else
    /// [`compression`](Self::compression).
    pub fn compression_of(&self, state: &str) -> Compression {
        self.state_compression
            .get(state)
            .copied()
            .unwrap_or(self.compression)
    }
}

/// The smallest data block size [`RocksDbOptions::with_block_size_bytes`] takes (256 bytes:
/// below that a block holds a handful of entries and its index entry costs as much as they).
pub const MIN_BLOCK_SIZE: usize = 256;

/// The largest data block size [`RocksDbOptions::with_block_size_bytes`] takes (256 MiB;
/// RocksDB itself refuses 4 GiB and more).
pub const MAX_BLOCK_SIZE: usize = 256 << 20;

/// The fewest keys a batched read hands to one thread (see
/// [`RocksDbOptions::batch_read_threads`]): below this, starting a thread's part costs more
/// than the lookups it would take over.
pub const MIN_KEYS_PER_READ_THREAD: usize = 64;
