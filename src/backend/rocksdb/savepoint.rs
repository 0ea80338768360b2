//! RocksDB savepoints: the engine-independent key-group format (`checkpoint/format/blocks.rs`)
//! written from, and restored into, a RocksDB engine.
//!
//! Writing: the synchronous part makes the same RocksDB checkpoint (hard links) as a native
//! checkpoint; the background part opens it read-only and walks every state's column family
//! once, key group by key group, turning RocksDB keys and values into canonical records.
//! Splitting a key into its parts needs each type's fixed width, which the engine learns when a
//! state is registered and persists (`meta/shape/<name>`), so a state restored natively and
//! not registered again still splits; records of a state restored from the canonical format
//! and not registered yet are parked canonical records, written as they are.
//!
//! Restoring: the records of each state and key group are parked in the `default` column
//! family under `pending/…` (so native checkpoints carry them), and written into the state's
//! column family in the engine's layout when the state is registered.

// A decoder of bytes from disk or the network: no indexing that can panic.
#![deny(clippy::indexing_slicing)]

use std::path::PathBuf;

use rocksdb::{ColumnFamilyDescriptor, DBRawIteratorWithThreadMode};

use super::Db;
use super::layout::{
    group_prefix_len, list_elements, read_group, read_part_of_width, split_stamp, write_group,
    write_raw_elements,
};
use crate::backend::{SnapshotOutput, SnapshotUpload};
use crate::checkpoint::format::blocks::{
    DataFileWriter, GroupBlocks, Order, RecordShape, read_bytes, read_count, read_stamp,
    write_bytes,
};
use crate::checkpoint::{CheckpointStore, FileRole, SnapshotKind};
use crate::codec::{Codec, read_varint_u32, write_varint_u32};
use crate::error::{CheckpointError, CodecError, Error, Result};
use crate::key_group::{KeyGroupRange, key_group_for_bytes};
use crate::ttl::is_expired;
use crate::types::StateMeta;

/// The data file of a savepoint inside `chk-<id>/`.
const DATA_FILE: &str = "state-data";

/// The fixed widths (`Codec::FIXED_LEN`) of a state's key, namespace and user key: what
/// splitting a RocksDB key into parts needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PartShape {
    pub(crate) key: Option<usize>,
    pub(crate) ns: Option<usize>,
    pub(crate) user_key: Option<usize>,
}

/// The `default`-column-family key of a state's persisted shape: `meta/shape/<name>`.
pub(crate) fn shape_key(state: &str) -> Vec<u8> {
    [SHAPE_PREFIX, state.as_bytes()].concat()
}

/// The prefix of every persisted shape.
pub(crate) const SHAPE_PREFIX: &[u8] = b"meta/shape/";

impl PartShape {
    /// The persisted form: version 1, then the codec encoding of the three widths as
    /// `(Option<u64>, Option<u64>, Option<u64>)` (key, namespace, user key).
    pub(crate) fn encode(self) -> Vec<u8> {
        let width = |w: Option<usize>| w.and_then(|w| u64::try_from(w).ok());
        let mut out = vec![1];
        (width(self.key), width(self.ns), width(self.user_key)).encode(&mut out);
        out
    }

    /// Reads what [`encode`](Self::encode) wrote.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        let invalid = |reason: &str| CodecError::Invalid {
            what: "state shape",
            reason: reason.into(),
        };
        let Some((&1, body)) = bytes.split_first() else {
            return Err(invalid("unknown version"));
        };
        let (key, ns, user_key) = <(Option<u64>, Option<u64>, Option<u64>)>::decode(body)?;
        let width = |w: Option<u64>| {
            w.map(|w| usize::try_from(w).map_err(|_| invalid("a width past usize")))
                .transpose()
        };
        Ok(PartShape {
            key: width(key)?,
            ns: width(ns)?,
            user_key: width(user_key)?,
        })
    }
}

/// Appends a part in the engine's layout.
fn write_part(out: &mut Vec<u8>, fixed: Option<usize>, bytes: &[u8]) -> Result<(), CodecError> {
    match fixed {
        Some(n) if n != bytes.len() => Err(CodecError::Invalid {
            what: "restored record",
            reason: format!("a part of {} bytes where the type has {n}", bytes.len()),
        }),
        Some(_) => {
            out.extend_from_slice(bytes);
            Ok(())
        }
        None => write_bytes(out, bytes),
    }
}

/// One state of a savepoint.
pub(crate) struct StateSpec {
    pub(crate) meta: StateMeta,
    pub(crate) cf: String,
    /// `None`: neither registered in this process nor persisted (a state restored from the
    /// canonical format and not registered yet: all its records are parked).
    pub(crate) shape: Option<PartShape>,
    pub(crate) cf_options: rocksdb::Options,
}

/// The background part of a RocksDB savepoint.
pub(crate) struct SavepointUpload {
    /// The RocksDB checkpoint directory, removed when the upload ends.
    pub(crate) staging: PathBuf,
    pub(crate) max_parallelism: u32,
    pub(crate) range: KeyGroupRange,
    pub(crate) now: u64,
    /// Sorted by name; the index is the section's state index.
    pub(crate) states: Vec<StateSpec>,
}

/// Builds the canonical records of one state for one key group from its RocksDB entries.
struct RecordBuilder<'a> {
    spec: &'a StateSpec,
    ttl: Option<u64>,
    now: u64,
    out: Vec<u8>,
    count: usize,
    /// Map states: the (key, namespace) prefix being collected and its live entries.
    map: Option<(Vec<u8>, Vec<u8>, u32)>,
}

impl RecordBuilder<'_> {
    fn live(&self, stamp: u64) -> bool {
        self.ttl.is_none_or(|ttl| !is_expired(stamp, ttl, self.now))
    }

    fn flush_map(&mut self) {
        if let Some((head, entries, n)) = self.map.take()
            && n > 0
        {
            self.out.extend_from_slice(&head);
            write_varint_u32(&mut self.out, n);
            self.out.extend_from_slice(&entries);
            self.count += 1;
        }
    }

    /// Adds one RocksDB entry (its key after the group prefix).
    fn add(&mut self, key_rest: &[u8], value: &[u8]) -> Result<(), CodecError> {
        let Some(shape) = self.spec.shape else {
            // Entries in the column family of a state whose key layout is unknown.
            return Err(CodecError::Invalid {
                what: "savepoint",
                reason: "entries of a state whose key layout is unknown".into(),
            });
        };
        let ttl = self.ttl.is_some();
        let mut input = key_rest;
        let key = read_part_of_width(&mut input, shape.key)?;
        let ns = read_part_of_width(&mut input, shape.ns)?;
        match RecordShape::of(self.spec.meta.kind) {
            RecordShape::Single => {
                crate::codec::expect_end(input, "value key")?;
                let (stamp, body) = split_stamp(value, ttl)?;
                if self.live(stamp) {
                    write_bytes(&mut self.out, key)?;
                    write_bytes(&mut self.out, ns)?;
                    self.out.extend_from_slice(&stamp.to_be_bytes());
                    write_bytes(&mut self.out, body)?;
                    self.count += 1;
                }
            }
            RecordShape::List => {
                crate::codec::expect_end(input, "list key")?;
                let mut elements = Vec::new();
                let mut n = 0u32;
                for element in list_elements(value, ttl) {
                    let (stamp, body) = element?;
                    if self.live(stamp) {
                        elements.extend_from_slice(&stamp.to_be_bytes());
                        write_bytes(&mut elements, body)?;
                        n += 1;
                    }
                }
                if n > 0 {
                    write_bytes(&mut self.out, key)?;
                    write_bytes(&mut self.out, ns)?;
                    write_varint_u32(&mut self.out, n);
                    self.out.extend_from_slice(&elements);
                    self.count += 1;
                }
            }
            RecordShape::Map => {
                let user_key = read_part_of_width(&mut input, shape.user_key)?;
                crate::codec::expect_end(input, "map entry key")?;
                let mut head = Vec::with_capacity(key.len() + ns.len() + 4);
                write_bytes(&mut head, key)?;
                write_bytes(&mut head, ns)?;
                if self.map.as_ref().is_none_or(|(h, _, _)| *h != head) {
                    self.flush_map();
                    self.map = Some((head, Vec::new(), 0));
                }
                let (stamp, body) = split_stamp(value, ttl)?;
                if self.live(stamp)
                    && let Some((_, entries, n)) = self.map.as_mut()
                {
                    write_bytes(entries, user_key)?;
                    entries.extend_from_slice(&stamp.to_be_bytes());
                    write_bytes(entries, body)?;
                    *n += 1;
                }
            }
        }
        Ok(())
    }
}

impl SavepointUpload {
    fn run(&self, store: &CheckpointStore, id: u64) -> Result<SnapshotOutput> {
        let descriptors = std::iter::once(ColumnFamilyDescriptor::new(
            "default",
            rocksdb::Options::default(),
        ))
        .chain(
            self.states
                .iter()
                .map(|s| ColumnFamilyDescriptor::new(&s.cf, s.cf_options.clone())),
        );
        let db = Db::open_cf_descriptors_read_only(
            &rocksdb::Options::default(),
            &self.staging,
            descriptors,
            false,
        )?;
        let prefix_len = group_prefix_len(self.max_parallelism);
        let mut start = Vec::new();
        if !self.range.is_empty() {
            write_group(&mut start, self.range.start(), prefix_len);
        }
        let mut iters: Vec<DBRawIteratorWithThreadMode<'_, Db>> = Vec::new();
        for spec in &self.states {
            let cf = db
                .cf_handle(&spec.cf)
                .ok_or_else(|| Error::UnknownState(spec.meta.name.clone()))?;
            let mut it = db.raw_iterator_cf(&cf);
            it.seek(&start);
            iters.push(it);
        }
        let mut writer = DataFileWriter::new();
        for group in self.range.iter() {
            let mut blocks = GroupBlocks::default();
            for (index, (spec, it)) in self.states.iter().zip(iters.iter_mut()).enumerate() {
                let mut builder = RecordBuilder {
                    spec,
                    ttl: spec.meta.ttl.as_ref().map(|t| t.ttl_millis()),
                    now: self.now,
                    out: Vec::new(),
                    count: 0,
                    map: None,
                };
                let decode = |source| Error::Decode {
                    state: spec.meta.name.clone(),
                    source,
                };
                while let (Some(key), Some(value)) = (it.key(), it.value()) {
                    let mut rest = key;
                    let g = read_group(&mut rest, prefix_len).map_err(decode)?;
                    if g != group {
                        break;
                    }
                    if spec.shape.is_none() {
                        return Err(CheckpointError::Unregistered {
                            state: spec.meta.name.clone(),
                        }
                        .into());
                    }
                    builder.add(rest, value).map_err(decode)?;
                    it.next();
                }
                it.status()?;
                builder.flush_map();
                // Records a canonical restore parked and no registration converted yet are
                // canonical already: they follow as they are.
                if let Some(parked) = db.get(pending_key(&spec.meta.name, group))? {
                    let mut input: &[u8] = &parked;
                    let n = read_varint_u32(&mut input, "parked record count").map_err(decode)?;
                    builder.out.extend_from_slice(input);
                    builder.count += usize::try_from(n).unwrap_or(usize::MAX);
                }
                blocks
                    .section(
                        index,
                        builder.count,
                        &builder.out,
                        RecordShape::of(spec.meta.kind),
                        Order::Key,
                    )
                    .map_err(decode)?;
            }
            for block in blocks.finish() {
                writer.add_block(group, &block)?;
            }
        }
        let file = store.put_data_file(id, DATA_FILE, FileRole::KeyGroupData, writer)?;
        Ok(SnapshotOutput {
            kind: SnapshotKind::Savepoint,
            states: self.states.iter().map(|s| s.meta.clone()).collect(),
            uploaded_bytes: file.size,
            files: vec![file],
        })
    }
}

impl SnapshotUpload for SavepointUpload {
    fn upload(self: Box<Self>, store: &CheckpointStore, id: u64) -> Result<SnapshotOutput> {
        let result = self.run(store, id);
        if let Err(e) = std::fs::remove_dir_all(&self.staging) {
            tracing::warn!(dir = %self.staging.display(), error = %e, "could not remove a savepoint staging directory");
        }
        result
    }
}

/// The `default`-column-family key of a state's parked records of one key group.
pub(crate) fn pending_key(state: &str, group: u16) -> Vec<u8> {
    let mut k = pending_prefix(state);
    k.extend_from_slice(&group.to_be_bytes());
    k
}

/// The prefix of every parked record.
pub(crate) const PARKED_PREFIX: &[u8] = b"pending/";

/// The key group of a parked record's key.
pub(crate) fn parked_group(key: &[u8]) -> Option<u16> {
    let rest = key.strip_prefix(PARKED_PREFIX)?;
    let (len, rest) = rest.split_first_chunk::<4>()?;
    let rest = rest.get(usize::try_from(u32::from_be_bytes(*len)).ok()?..)?;
    match *rest {
        [hi, lo] => Some(u16::from_be_bytes([hi, lo])),
        _ => None,
    }
}

/// The prefix of a state's parked records.
pub(crate) fn pending_prefix(state: &str) -> Vec<u8> {
    let mut k = PARKED_PREFIX.to_vec();
    // State names are at most `u32::MAX` bytes: the manifest's and metadata's length fields
    // refuse longer ones at registration.
    let len = u32::try_from(state.len()).unwrap_or(u32::MAX);
    k.extend_from_slice(&len.to_be_bytes());
    k.extend_from_slice(state.as_bytes());
    k
}

/// A parked value: the record count and the records.
pub(crate) fn pending_value(records: u32, bytes: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(bytes.len() + 5);
    write_varint_u32(&mut v, records);
    v.extend_from_slice(bytes);
    v
}

/// Converts parked canonical records of `group` into the engine's (key, value) pairs, calling
/// `put` for each.
pub(crate) fn convert_records(
    meta: &StateMeta,
    shape: PartShape,
    max_parallelism: u32,
    group: u16,
    parked: &[u8],
    mut put: impl FnMut(&[u8], &[u8]),
) -> Result<(), CodecError> {
    let mut input = parked;
    let records = read_varint_u32(&mut input, "record count")?;
    let prefix_len = group_prefix_len(max_parallelism);
    let ttl = meta.ttl.is_some();
    let (mut k, mut v) = (Vec::new(), Vec::new());
    let stamp_into = |v: &mut Vec<u8>, stamp: u64| {
        if ttl {
            v.extend_from_slice(&stamp.to_be_bytes());
        }
    };
    for _ in 0..records {
        let key = read_bytes(&mut input, "key")?;
        if key_group_for_bytes(key, max_parallelism) != group {
            return Err(CodecError::Invalid {
                what: "restored record",
                reason: format!("a key of another group in key group {group}"),
            });
        }
        let ns = read_bytes(&mut input, "namespace")?;
        k.clear();
        write_group(&mut k, group, prefix_len);
        write_part(&mut k, shape.key, key)?;
        write_part(&mut k, shape.ns, ns)?;
        match RecordShape::of(meta.kind) {
            RecordShape::Single => {
                let stamp = read_stamp(&mut input)?;
                let body = read_bytes(&mut input, "value")?;
                v.clear();
                stamp_into(&mut v, stamp);
                v.extend_from_slice(body);
                put(&k, &v);
            }
            RecordShape::List => {
                let mut elements = Vec::new();
                for _ in 0..read_count(&mut input, "list length", 9)? {
                    let stamp = read_stamp(&mut input)?;
                    elements.push((stamp, read_bytes(&mut input, "element")?));
                }
                v.clear();
                write_raw_elements(&mut v, ttl, &elements);
                put(&k, &v);
            }
            RecordShape::Map => {
                let prefix = k.len();
                for _ in 0..read_count(&mut input, "map length", 10)? {
                    let user_key = read_bytes(&mut input, "user key")?;
                    let stamp = read_stamp(&mut input)?;
                    let body = read_bytes(&mut input, "value")?;
                    k.truncate(prefix);
                    write_part(&mut k, shape.user_key, user_key)?;
                    v.clear();
                    stamp_into(&mut v, stamp);
                    v.extend_from_slice(body);
                    put(&k, &v);
                }
            }
        }
    }
    crate::codec::expect_end(input, "restored records")
}
