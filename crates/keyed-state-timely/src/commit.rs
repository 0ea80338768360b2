//! The job's commit log: a checkpoint of the job counts only once the committer (worker 0)
//! has every worker's part and publishes a [`CommitRecord`] for it. The record carries the
//! outputs the job produced up to the checkpoint and after the previous one, so publishing it
//! is also the commit of the exactly-once sink: the log *is* the committed output.
//!
//! Records are files `commit-<id, 20 digits>` in the storage root `commits/`, written once
//! with [`CheckpointStorage::put_new`] (atomic, publish-once) and never modified.
//!
//! A record, byte by byte (integers little-endian):
//!
//! | bytes | field |
//! |---|---|
//! | 4 | magic `KSTC` |
//! | 1 | version, 1 |
//! | 8 | checkpoint id: the last input epoch whose records are in the state |
//! | 4 | workers: workers `0..n` each hold part `id` in `worker-<i>/` |
//! | 4 | max_parallelism of the job's key groups |
//! | 4 | number of outputs `n` |
//! | n × (4 + len) | each output: length, then the output's [`Codec`] encoding |
//! | 4 | crc32 of everything before |

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use keyed_state::checkpoint::CheckpointStorage;
use keyed_state::codec::{ByteReader, Codec};
use keyed_state::{CheckpointError, CodecError};

const MAGIC: &[u8; 4] = b"KSTC";
const VERSION: u8 = 1;
const PREFIX: &str = "commit-";
/// magic, version, id, workers, max_parallelism, count, crc.
const FIXED: usize = 4 + 1 + 8 + 4 + 4 + 4 + 4;

/// One committed checkpoint of the whole job (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitRecord {
    /// The checkpoint id: the last input epoch whose records the state holds. A restarted
    /// job replays its input from the epoch after it.
    pub id: u64,
    /// Workers `0..workers` each hold part `id`.
    pub workers: u32,
    /// The key groups' max parallelism; a restart must use the same.
    pub max_parallelism: u32,
    /// Outputs committed by this checkpoint, each in its [`Codec`] encoding, in a
    /// deterministic order (by time, then by encoding).
    pub outputs: Vec<Vec<u8>>,
}

impl CommitRecord {
    /// The record's path in the `commits/` root.
    pub fn path(id: u64) -> String {
        format!("{PREFIX}{id:020}")
    }

    /// Encodes the record (see the module documentation).
    ///
    /// # Errors
    ///
    /// [`CodecError::TooLarge`] for more than `u32::MAX` outputs or an output longer than
    /// `u32::MAX` bytes.
    pub fn encode(&self) -> Result<Vec<u8>, CodecError> {
        let len = |n: usize, what| u32::try_from(n).map_err(|_| CodecError::too_large(what, n));
        let mut b =
            Vec::with_capacity(FIXED + self.outputs.iter().map(|o| 4 + o.len()).sum::<usize>());
        b.extend_from_slice(MAGIC);
        b.push(VERSION);
        b.extend_from_slice(&self.id.to_le_bytes());
        b.extend_from_slice(&self.workers.to_le_bytes());
        b.extend_from_slice(&self.max_parallelism.to_le_bytes());
        b.extend_from_slice(&len(self.outputs.len(), "output count")?.to_le_bytes());
        for o in &self.outputs {
            b.extend_from_slice(&len(o.len(), "output")?.to_le_bytes());
            b.extend_from_slice(o);
        }
        let crc = crc32fast::hash(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        Ok(b)
    }

    /// Decodes a record read from `path`.
    ///
    /// # Errors
    ///
    /// [`CheckpointError::Corrupt`] naming `path` for a wrong checksum, magic or version, a
    /// truncated or overlong record, or zero workers.
    pub fn decode(path: &str, bytes: &[u8]) -> Result<Self, CheckpointError> {
        let corrupt = |reason: String| CheckpointError::Corrupt {
            path: path.to_owned(),
            reason,
        };
        if bytes.len() < FIXED {
            return Err(corrupt(format!(
                "{} bytes, a commit record has at least {FIXED}",
                bytes.len()
            )));
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        let codec = |e: CodecError| corrupt(e.to_string());
        let stored = ByteReader::new(crc).u32_le("crc32").map_err(codec)?;
        let actual = crc32fast::hash(body);
        if stored != actual {
            return Err(corrupt(format!(
                "crc32 {actual:08x}, recorded {stored:08x}"
            )));
        }
        let mut r = ByteReader::new(body);
        if r.array::<4>("magic").map_err(codec)? != *MAGIC {
            return Err(corrupt("not a commit record (bad magic)".into()));
        }
        let version = r.u8("version").map_err(codec)?;
        if version != VERSION {
            return Err(corrupt(format!("version {version}, expected {VERSION}")));
        }
        let id = r.u64_le("id").map_err(codec)?;
        let workers = r.u32_le("workers").map_err(codec)?;
        let max_parallelism = r.u32_le("max_parallelism").map_err(codec)?;
        // Each output takes at least its 4-byte length: bound the count before allocating.
        let count = r.u32_le("output count").map_err(codec)?;
        let n = r
            .bounded(u64::from(count), "output count", 4)
            .map_err(codec)?;
        let mut outputs = Vec::with_capacity(n);
        for k in 0..n {
            let len = r.u32_le("output length").map_err(codec)?;
            let len = usize::try_from(len).unwrap_or(usize::MAX);
            let o = r
                .bytes(len, "output")
                .map_err(|e| corrupt(format!("output {k}: {e}")))?;
            outputs.push(o.to_vec());
        }
        if !r.is_empty() {
            return Err(corrupt(format!(
                "{} bytes after the last output",
                r.remaining()
            )));
        }
        if workers == 0 {
            return Err(corrupt("0 workers".into()));
        }
        Ok(CommitRecord {
            id,
            workers,
            max_parallelism,
            outputs,
        })
    }

    /// The outputs decoded as `O`.
    ///
    /// # Errors
    ///
    /// An output that does not decode as `O`.
    pub fn decode_outputs<O: Codec>(&self) -> Result<Vec<O>, CodecError> {
        self.outputs.iter().map(|o| O::decode(o)).collect()
    }
}

/// The commit records in one storage root.
pub struct CommitLog {
    storage: Arc<dyn CheckpointStorage>,
    records: BTreeMap<u64, CommitRecord>,
}

impl CommitLog {
    /// Reads every record in `storage`. A record that does not decode is an error, not one to
    /// skip: it was published whole, so damage is corruption, and skipping it would restore an
    /// older checkpoint and commit its outputs twice.
    ///
    /// # Errors
    ///
    /// A record that cannot be read or does not decode ([`CheckpointError::Corrupt`]).
    pub fn open(storage: Arc<dyn CheckpointStorage>) -> keyed_state::Result<Self> {
        let mut records = BTreeMap::new();
        for path in storage.list()? {
            let Some(id) = id_of(&path) else {
                continue;
            };
            records.insert(id, read(storage.as_ref(), path, id)?);
        }
        Ok(CommitLog { storage, records })
    }

    /// The latest committed record alone: one listing and one read, however long the log
    /// (what a restarting worker needs, without reading every checkpoint's outputs).
    ///
    /// # Errors
    ///
    /// As [`open`](Self::open), for the latest record.
    pub fn read_latest(
        storage: &dyn CheckpointStorage,
    ) -> keyed_state::Result<Option<CommitRecord>> {
        match Self::latest_id(storage)? {
            Some(id) => read(storage, CommitRecord::path(id), id).map(Some),
            None => Ok(None),
        }
    }

    /// The id of the latest committed checkpoint in `storage`, from the listing alone (no
    /// record is read): what a worker needs to know which of its parts are obsolete.
    ///
    /// # Errors
    ///
    /// The storage cannot be listed.
    pub fn latest_id(storage: &dyn CheckpointStorage) -> keyed_state::Result<Option<u64>> {
        Ok(storage.list()?.iter().filter_map(|p| id_of(p)).max())
    }

    /// The latest committed checkpoint.
    pub fn latest(&self) -> Option<&CommitRecord> {
        self.records.values().next_back()
    }

    /// Every record, oldest first.
    pub fn records(&self) -> impl Iterator<Item = &CommitRecord> {
        self.records.values()
    }

    /// Publishes `record`: the checkpoint is complete and its outputs committed once this
    /// returns.
    ///
    /// # Errors
    ///
    /// An id not above the latest record's ([`CheckpointError::Protocol`]); the storage's
    /// failures, including a record already there (the checkpoint is then not committed by
    /// this call).
    pub fn commit(&mut self, record: CommitRecord) -> keyed_state::Result<()> {
        if let Some(last) = self.latest().filter(|l| l.id >= record.id) {
            return Err(CheckpointError::Protocol {
                id: record.id,
                reason: format!("job checkpoint {} already committed", last.id),
            }
            .into());
        }
        self.storage
            .put_new(&CommitRecord::path(record.id), &record.encode()?)?;
        self.records.insert(record.id, record);
        Ok(())
    }
}

/// The checkpoint id a record's path names.
fn id_of(path: &str) -> Option<u64> {
    path.strip_prefix(PREFIX)
        .and_then(|s| s.parse::<u64>().ok())
}

/// Reads and decodes the record at `path`, which must record checkpoint `id`.
fn read(
    storage: &dyn CheckpointStorage,
    path: String,
    id: u64,
) -> keyed_state::Result<CommitRecord> {
    let record = CommitRecord::decode(&path, &storage.get(&path)?)?;
    if record.id != id {
        return Err(CheckpointError::Corrupt {
            path,
            reason: format!("records checkpoint id {}", record.id),
        }
        .into());
    }
    Ok(record)
}

impl fmt::Debug for CommitLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CommitLog")
            .field("storage", &self.storage)
            .field("records", &self.records.keys().collect::<Vec<_>>())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyed_state::checkpoint::MemoryStorage;

    fn record(id: u64) -> CommitRecord {
        CommitRecord {
            id,
            workers: 3,
            max_parallelism: 128,
            outputs: vec![b"a".to_vec(), Vec::new(), vec![0xff; 300]],
        }
    }

    #[test]
    fn records_round_trip_and_damage_is_named() {
        let r = record(7);
        let bytes = r.encode().unwrap();
        assert_eq!(CommitRecord::decode("p", &bytes).unwrap(), r);
        for cut in 0..bytes.len() {
            let e = CommitRecord::decode("p", &bytes[..cut]).unwrap_err();
            assert!(e.to_string().contains('p'), "{e}");
        }
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            assert!(CommitRecord::decode("p", &bad).is_err(), "flip at {i}");
        }
    }

    #[test]
    fn the_log_is_publish_once_and_ordered() {
        let storage: Arc<dyn CheckpointStorage> = Arc::new(MemoryStorage::new());
        let mut log = CommitLog::open(storage.clone()).unwrap();
        assert!(log.latest().is_none());
        log.commit(record(5)).unwrap();
        log.commit(record(10)).unwrap();
        assert!(log.commit(record(10)).is_err(), "an id again");
        assert!(log.commit(record(7)).is_err(), "an older id");
        let again = CommitLog::open(storage.clone()).unwrap();
        assert_eq!(again.latest().map(|r| r.id), Some(10));
        assert_eq!(CommitLog::latest_id(storage.as_ref()).unwrap(), Some(10));
        let latest = CommitLog::read_latest(storage.as_ref()).unwrap().unwrap();
        assert_eq!(latest, record(10));
        assert_eq!(again.records().count(), 2);
        // A second writer that never read the log cannot replace a record.
        let mut stale = CommitLog {
            storage: storage.clone(),
            records: BTreeMap::new(),
        };
        assert!(stale.commit(record(10)).is_err());
    }
}
