//! The job's checkpoint log: a checkpoint of the job is complete only when every instance
//! completed its part and the coordinator then published a [`JobRecord`] — the commit point of
//! the whole job, as Flink's checkpoint metadata file is. The record also carries the outputs
//! the job produced since the previous record, so publishing it is also the commit of the
//! exactly-once sink: the log of records *is* the committed output.
//!
//! Records are files `job-<id, 20 digits>` in their own storage root, written once through
//! [`CheckpointStorage::put_new`] (atomic, publish-once) and never modified or deleted.
//!
//! A record, byte by byte (integers little-endian):
//!
//! | bytes | field |
//! |---|---|
//! | 4 | magic `KSJB` |
//! | 1 | version, 1 |
//! | 8 | checkpoint id |
//! | 4 | parallelism: instances `0..p` each hold checkpoint `id` |
//! | 8 | input offset: events before it are in the state |
//! | 8 | largest event time seen (the watermark's base) |
//! | 4 | number of outputs `n` |
//! | n × (4 + len) | each output: length, then UTF-8 bytes |
//! | 4 | crc32 of everything before |

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use keyed_state::checkpoint::CheckpointStorage;
use keyed_state::codec::ByteReader;
use keyed_state::{CheckpointError, CodecError, Result};

const MAGIC: &[u8; 4] = b"KSJB";
const VERSION: u8 = 1;
const PREFIX: &str = "job-";
/// magic, version, id, parallelism, offset, max_ts, count, crc.
const FIXED: usize = 4 + 1 + 8 + 4 + 8 + 8 + 4 + 4;

/// A completed checkpoint of the whole job (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRecord {
    /// The checkpoint id every instance completed.
    pub id: u64,
    /// Instances `0..parallelism` hold it.
    pub parallelism: u32,
    /// The input offset to replay from.
    pub input: u64,
    /// The largest event time before `input`.
    pub max_ts: u64,
    /// Outputs committed by this checkpoint, in production order.
    pub outputs: Vec<String>,
}

impl JobRecord {
    /// The record's storage path.
    pub fn path(id: u64) -> String {
        format!("{PREFIX}{id:020}")
    }

    /// Encodes the record (see the module documentation).
    ///
    /// # Errors
    ///
    /// [`CodecError::TooLarge`] for more than `u32::MAX` outputs or an output of more than
    /// `u32::MAX` bytes.
    pub fn encode(&self) -> std::result::Result<Vec<u8>, CodecError> {
        let len = |n: usize, what| u32::try_from(n).map_err(|_| CodecError::too_large(what, n));
        let mut b =
            Vec::with_capacity(FIXED + self.outputs.iter().map(|o| 4 + o.len()).sum::<usize>());
        b.extend_from_slice(MAGIC);
        b.push(VERSION);
        b.extend_from_slice(&self.id.to_le_bytes());
        b.extend_from_slice(&self.parallelism.to_le_bytes());
        b.extend_from_slice(&self.input.to_le_bytes());
        b.extend_from_slice(&self.max_ts.to_le_bytes());
        b.extend_from_slice(&len(self.outputs.len(), "output count")?.to_le_bytes());
        for o in &self.outputs {
            b.extend_from_slice(&len(o.len(), "output")?.to_le_bytes());
            b.extend_from_slice(o.as_bytes());
        }
        let crc = crc32fast::hash(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        Ok(b)
    }

    /// Decodes a record read from `path`; any damage is a [`CheckpointError::Corrupt`].
    ///
    /// # Errors
    ///
    /// [`CheckpointError::Corrupt`] naming `path` for a wrong checksum, magic or version, a
    /// truncated or overlong record, an output that is not UTF-8, or parallelism 0.
    pub fn decode(path: &str, bytes: &[u8]) -> Result<Self> {
        let corrupt = |reason: String| CheckpointError::Corrupt {
            path: path.to_owned(),
            reason,
        };
        if bytes.len() < FIXED {
            return Err(corrupt(format!(
                "{} bytes, a record has at least {FIXED}",
                bytes.len()
            ))
            .into());
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        let codec = |e: CodecError| corrupt(e.to_string());
        let stored = ByteReader::new(crc).u32_le("crc32").map_err(codec)?;
        let actual = crc32fast::hash(body);
        if stored != actual {
            return Err(corrupt(format!("crc32 {actual:08x}, recorded {stored:08x}")).into());
        }
        let mut r = ByteReader::new(body);
        if r.array::<4>("magic").map_err(codec)? != *MAGIC {
            return Err(corrupt("not a job record (bad magic)".into()).into());
        }
        let version = r.u8("version").map_err(codec)?;
        if version != VERSION {
            return Err(corrupt(format!("version {version}, expected {VERSION}")).into());
        }
        let id = r.u64_le("id").map_err(codec)?;
        let parallelism = r.u32_le("parallelism").map_err(codec)?;
        let input = r.u64_le("input offset").map_err(codec)?;
        let max_ts = r.u64_le("max_ts").map_err(codec)?;
        // Each output takes at least its 4-byte length: bound the count before allocating.
        let count = r.u32_le("output count").map_err(codec)?;
        let n = r
            .bounded(u64::from(count), "output count", 4)
            .map_err(codec)?;
        let mut outputs = Vec::with_capacity(n);
        for k in 0..n {
            let len = r.u32_le("output length").map_err(codec)?;
            let len = usize::try_from(len).unwrap_or(usize::MAX);
            let s = r
                .bytes(len, "output")
                .map_err(|e| corrupt(format!("output {k}: {e}")))?;
            let s = std::str::from_utf8(s).map_err(|e| corrupt(format!("output {k}: {e}")))?;
            outputs.push(s.to_owned());
        }
        if !r.is_empty() {
            return Err(corrupt(format!("{} bytes after the last output", r.remaining())).into());
        }
        if parallelism == 0 {
            return Err(corrupt("parallelism 0".into()).into());
        }
        Ok(JobRecord {
            id,
            parallelism,
            input,
            max_ts,
            outputs,
        })
    }
}

/// The job's records in one storage root.
pub struct JobLog {
    storage: Arc<dyn CheckpointStorage>,
    records: BTreeMap<u64, JobRecord>,
}

impl JobLog {
    /// Reads every record in `storage`. A record that does not decode is an error, not a
    /// record to skip: it was published whole, so damage is corruption, and skipping it would
    /// silently restore an older checkpoint and commit its outputs twice.
    ///
    /// # Errors
    ///
    /// A record that cannot be read or does not decode
    /// ([`CheckpointError::Corrupt`]): damage is
    /// corruption, never "not committed".
    pub fn open(storage: Arc<dyn CheckpointStorage>) -> Result<Self> {
        let mut records = BTreeMap::new();
        for path in storage.list()? {
            let Some(id) = path
                .strip_prefix(PREFIX)
                .and_then(|s| s.parse::<u64>().ok())
            else {
                continue;
            };
            let record = JobRecord::decode(&path, &storage.get(&path)?)?;
            if record.id != id {
                return Err(CheckpointError::Corrupt {
                    path,
                    reason: format!("records checkpoint id {}", record.id),
                }
                .into());
            }
            records.insert(id, record);
        }
        Ok(JobLog { storage, records })
    }

    /// The latest completed checkpoint of the job.
    pub fn latest(&self) -> Option<&JobRecord> {
        self.records.values().next_back()
    }

    /// Publishes `record`: the job's checkpoint is complete and its outputs committed once
    /// this returns.
    ///
    /// # Errors
    ///
    /// An id not above the latest record's
    /// ([`CheckpointError::Protocol`]); the storage's
    /// failures (the record is then not committed).
    pub fn commit(&mut self, record: JobRecord) -> Result<()> {
        if let Some(last) = self.latest().filter(|l| l.id >= record.id) {
            return Err(CheckpointError::Protocol {
                id: record.id,
                reason: format!("job checkpoint {} already committed", last.id),
            }
            .into());
        }
        // Publish-once: a committed record is never replaced, not even by a second writer
        // that slipped past the run directory's lock (object storage has none).
        self.storage
            .put_new(&JobRecord::path(record.id), &record.encode()?)?;
        self.records.insert(record.id, record);
        Ok(())
    }

    /// Every committed output, in commit order.
    pub fn outputs(&self) -> impl Iterator<Item = &String> {
        self.records.values().flat_map(|r| r.outputs.iter())
    }

    /// How many records there are.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether no checkpoint completed yet.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

impl fmt::Debug for JobLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobLog")
            .field("storage", &self.storage)
            .field("records", &self.records.keys().collect::<Vec<_>>())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyed_state::checkpoint::MemoryStorage;

    fn record() -> JobRecord {
        JobRecord {
            id: 7,
            parallelism: 3,
            input: 1234,
            max_ts: 99,
            outputs: vec!["count 1 100".into(), String::new(), "window 2 3 4".into()],
        }
    }

    #[test]
    fn records_round_trip_and_every_damage_is_a_typed_error() {
        let r = record();
        let bytes = r.encode().unwrap();
        assert_eq!(JobRecord::decode("p", &bytes).unwrap(), r);
        for cut in 0..bytes.len() {
            assert!(
                JobRecord::decode("p", &bytes[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            assert!(JobRecord::decode("p", &bad).is_err(), "flip at {i}");
        }
        // A huge count with a valid crc is refused before allocating.
        let mut lying = bytes[..bytes.len() - 4].to_vec();
        lying[33..37].copy_from_slice(&u32::MAX.to_le_bytes());
        let crc = crc32fast::hash(&lying);
        lying.extend_from_slice(&crc.to_le_bytes());
        let e = JobRecord::decode("p", &lying).unwrap_err().to_string();
        assert!(e.contains("4294967295 exceeds the 35 bytes left"), "{e}");
    }

    #[test]
    fn the_log_commits_in_order_and_reopens() {
        let storage: Arc<dyn CheckpointStorage> = Arc::new(MemoryStorage::new());
        let mut log = JobLog::open(storage.clone()).unwrap();
        assert!(log.is_empty());
        log.commit(record()).unwrap();
        assert!(log.commit(record()).is_err(), "ids only grow");
        log.commit(JobRecord {
            id: 9,
            outputs: vec!["x".into()],
            ..record()
        })
        .unwrap();
        let log = JobLog::open(storage).unwrap();
        assert_eq!(log.len(), 2);
        assert_eq!(log.latest().map(|r| r.id), Some(9));
        assert_eq!(log.outputs().count(), 4);
    }
}
