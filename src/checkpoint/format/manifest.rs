//! The manifest: what one checkpoint (or savepoint) of one backend instance consists of.
//!
//! Written last: a checkpoint exists exactly when `chk-<id>/_manifest` is complete and valid.
//! The format (DESIGN.md §7c has it byte by byte):
//!
//! ```text
//! "KSCP" | version u16 | body | crc32 u32 of everything before it
//! ```
//!
//! Integers are big-endian; `varint` is LEB128 (canonical); a string is a varint length and
//! UTF-8. Every count read is bounded by the bytes left before anything is allocated, and every
//! file name is checked against the layout, so a hostile manifest yields a typed error.

// A decoder of bytes from disk or the network: no indexing that can panic.
#![deny(clippy::indexing_slicing)]

use std::fmt;

use crate::codec::{ByteReader, write_varint_u32};
use crate::error::{CheckpointError, CodecError, Result};
use crate::key_group::KeyGroupRange;
use crate::types::{StateMeta, meta_codec};

use super::path::check_manifest_file;

const MAGIC: &[u8; 4] = b"KSCP";
/// The format version this build writes. Version 1 (no timer services) is still read.
pub const MANIFEST_VERSION: u16 = 2;
/// The largest manifest read: far above what any checkpoint lists (a file entry with all
/// 32,768 key-group blocks takes ~720 KiB), so a bigger "manifest" is damage or hostile, and
/// refusing it before reading bounds memory and time.
pub const MAX_MANIFEST_BYTES: u64 = 64 << 20;

/// What kind of snapshot a manifest describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SnapshotKind {
    /// A checkpoint that references files of earlier ones (RocksDB).
    Incremental,
    /// A checkpoint whose files are all its own (heap, or RocksDB in full mode).
    Full,
    /// An engine-independent full snapshot in the canonical key-group format.
    Savepoint,
}

impl SnapshotKind {
    fn code(self) -> u8 {
        match self {
            SnapshotKind::Incremental => 0,
            SnapshotKind::Full => 1,
            SnapshotKind::Savepoint => 2,
        }
    }
}

impl fmt::Display for SnapshotKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SnapshotKind::Incremental => "incremental",
            SnapshotKind::Full => "full",
            SnapshotKind::Savepoint => "savepoint",
        })
    }
}

/// What a listed file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FileRole {
    /// An immutable RocksDB SST file in `shared/`, referenced by every checkpoint that holds it.
    SharedSst,
    /// A RocksDB file private to the checkpoint (MANIFEST, CURRENT, OPTIONS).
    Private,
    /// Key-group blocks in the canonical format (heap checkpoints, savepoints).
    KeyGroupData,
    /// Key-group blocks of timers (same format; sections index the manifest's timer services).
    Timers,
}

impl FileRole {
    fn code(self) -> u8 {
        match self {
            FileRole::SharedSst => 0,
            FileRole::Private => 1,
            FileRole::KeyGroupData => 2,
            FileRole::Timers => 3,
        }
    }
}

/// Where one key group's block lies in a [`FileRole::KeyGroupData`] file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockEntry {
    /// The key group.
    pub group: u16,
    /// Byte offset of the compressed block in the file.
    pub offset: u64,
    /// Compressed length.
    pub len: u32,
    /// Length once decompressed (bounds the allocation when reading).
    pub raw_len: u32,
    /// crc32 of the compressed bytes.
    pub crc32: u32,
}

/// One file of a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    /// Storage path: `shared/<name>` or `chk-<id>/<name>`.
    pub path: String,
    /// What the file holds.
    pub role: FileRole,
    /// Size in bytes.
    pub size: u64,
    /// crc32 of the whole file.
    pub crc32: u32,
    /// The key-group index of a data file (empty for other roles), by ascending group.
    pub blocks: Vec<BlockEntry>,
}

impl FileEntry {
    /// The file name without its directory.
    pub fn file_name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or(&self.path)
    }
}

/// A timer service in a checkpoint: its name and the codecs of its keys and namespaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimerMeta {
    /// The service's name.
    pub name: String,
    /// The key codec's id.
    pub key_codec: String,
    /// The namespace codec's id.
    pub namespace_codec: String,
}

/// A checkpoint's description. See the module documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The checkpoint id (ascending over a job's checkpoints).
    pub checkpoint_id: u64,
    /// Incremental, full or savepoint.
    pub kind: SnapshotKind,
    /// The engine that wrote it (`"heap"`, `"rocksdb"`).
    pub engine: String,
    /// The number of key groups.
    pub max_parallelism: u32,
    /// The key groups the snapshot holds.
    pub range: KeyGroupRange,
    /// When it was taken, in the engine clock's milliseconds.
    pub created_at_millis: u64,
    /// Every registered state's metadata, by name.
    pub states: Vec<StateMeta>,
    /// The input offsets the caller handed in, returned on restore.
    pub offsets: Vec<(String, u64)>,
    /// The timer services whose timers the [`FileRole::Timers`] file holds (version 2).
    pub timers: Vec<TimerMeta>,
    /// Every file the checkpoint needs.
    pub files: Vec<FileEntry>,
    /// Bytes this checkpoint uploaded itself (the rest it references from earlier ones).
    pub uploaded_bytes: u64,
}

impl Manifest {
    /// The full size of the state it describes: the sum of all its files.
    pub fn full_size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    /// The input offset recorded under `name`.
    pub fn offset(&self, name: &str) -> Option<u64> {
        self.offsets
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, o)| *o)
    }

    /// Encodes the manifest (see the module documentation).
    ///
    /// # Errors
    ///
    /// [`CodecError::TooLarge`] when a string or a count does not fit its length field (more
    /// than `u32::MAX` states, files, blocks or bytes of a name).
    pub fn encode(&self) -> Result<Vec<u8>, CodecError> {
        let mut out = Vec::with_capacity(256 + self.files.len() * 64);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&MANIFEST_VERSION.to_be_bytes());
        out.extend_from_slice(&self.checkpoint_id.to_be_bytes());
        out.push(self.kind.code());
        put_str(&mut out, &self.engine)?;
        out.extend_from_slice(&self.max_parallelism.to_be_bytes());
        out.extend_from_slice(&self.range.start().to_be_bytes());
        out.extend_from_slice(&self.range.end().to_be_bytes());
        out.extend_from_slice(&self.created_at_millis.to_be_bytes());
        put_len(&mut out, self.states.len(), "state count")?;
        for meta in &self.states {
            let bytes = meta_codec::encode(meta);
            put_len(&mut out, bytes.len(), "state metadata")?;
            out.extend_from_slice(&bytes);
        }
        put_len(&mut out, self.offsets.len(), "offset count")?;
        for (name, offset) in &self.offsets {
            put_str(&mut out, name)?;
            out.extend_from_slice(&offset.to_be_bytes());
        }
        put_len(&mut out, self.timers.len(), "timer service count")?;
        for t in &self.timers {
            put_str(&mut out, &t.name)?;
            put_str(&mut out, &t.key_codec)?;
            put_str(&mut out, &t.namespace_codec)?;
        }
        put_len(&mut out, self.files.len(), "file count")?;
        for file in &self.files {
            put_str(&mut out, &file.path)?;
            out.push(file.role.code());
            out.extend_from_slice(&file.size.to_be_bytes());
            out.extend_from_slice(&file.crc32.to_be_bytes());
            put_len(&mut out, file.blocks.len(), "block count")?;
            for b in &file.blocks {
                out.extend_from_slice(&b.group.to_be_bytes());
                out.extend_from_slice(&b.offset.to_be_bytes());
                out.extend_from_slice(&b.len.to_be_bytes());
                out.extend_from_slice(&b.raw_len.to_be_bytes());
                out.extend_from_slice(&b.crc32.to_be_bytes());
            }
        }
        out.extend_from_slice(&self.uploaded_bytes.to_be_bytes());
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        Ok(out)
    }

    /// Decodes and validates a manifest read from `path` (named in errors): checksum, version,
    /// bounds, file names inside the layout, key-group indexes inside the range and the file.
    ///
    /// # Errors
    ///
    /// [`CheckpointError::ChecksumMismatch`](crate::CheckpointError::ChecksumMismatch) for a
    /// wrong crc32, [`CheckpointError::UnsafePath`](crate::CheckpointError::UnsafePath) for a
    /// file outside the layout, [`CheckpointError::Corrupt`](crate::CheckpointError::Corrupt)
    /// naming `path` for anything else: a bad magic or version, truncation, a count the bytes
    /// cannot hold, an unknown code, a duplicate, a block outside the range or the file,
    /// trailing bytes.
    pub fn decode(path: &str, bytes: &[u8]) -> Result<Manifest> {
        Ok(decode(path, bytes)?)
    }

    /// Decodes the manifest of checkpoint directory `chk-<id>`: as [`decode`](Self::decode),
    /// and the manifest must record that id (a manifest copied into another checkpoint's
    /// directory is refused as such, before its files' paths are checked against its id).
    ///
    /// # Errors
    ///
    /// As [`decode`](Self::decode); [`CheckpointError::Corrupt`] naming both ids when the
    /// manifest records another checkpoint.
    pub fn decode_for(id: u64, path: &str, bytes: &[u8]) -> Result<Manifest> {
        // The id sits at a fixed offset; check it before the layout checks that depend on it,
        // once the checksum says the bytes are what was written.
        let recorded = bytes
            .get(6..14)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_be_bytes);
        let checksum_ok = bytes.len() >= MAGIC.len() + 2 + 4
            && bytes
                .split_last_chunk::<4>()
                .is_some_and(|(content, crc)| crc32fast::hash(content) == u32::from_be_bytes(*crc));
        if checksum_ok && bytes.starts_with(MAGIC) && recorded.is_some_and(|r| r != id) {
            return Err(CheckpointError::Corrupt {
                path: path.to_owned(),
                reason: format!(
                    "records checkpoint {} but lies in the directory of checkpoint {id}",
                    recorded.unwrap_or_default()
                ),
            }
            .into());
        }
        let m = decode(path, bytes)?;
        if m.checkpoint_id != id {
            return Err(CheckpointError::Corrupt {
                path: path.to_owned(),
                reason: format!("records checkpoint {}, not {id}", m.checkpoint_id),
            }
            .into());
        }
        Ok(m)
    }
}

/// Appends a varint length or count, refusing one that does not fit `u32`.
fn put_len(out: &mut Vec<u8>, n: usize, what: &'static str) -> Result<(), CodecError> {
    write_varint_u32(
        out,
        u32::try_from(n).map_err(|_| CodecError::too_large(what, n))?,
    );
    Ok(())
}

fn put_str(out: &mut Vec<u8>, s: &str) -> Result<(), CodecError> {
    put_len(out, s.len(), "string")?;
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

/// The body's reader: [`ByteReader`], with errors naming the manifest.
struct ManifestReader<'a> {
    r: ByteReader<'a>,
    path: &'a str,
}

impl<'a> ManifestReader<'a> {
    fn corrupt(&self, reason: impl Into<String>) -> CheckpointError {
        CheckpointError::Corrupt {
            path: self.path.to_owned(),
            reason: reason.into(),
        }
    }

    fn map<T>(&self, read: Result<T, CodecError>) -> Result<T, CheckpointError> {
        read.map_err(|e| self.corrupt(e.to_string()))
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, CheckpointError> {
        let v = self.r.u8(what);
        self.map(v)
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, CheckpointError> {
        let v = self.r.u16_be(what);
        self.map(v)
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, CheckpointError> {
        let v = self.r.u32_be(what);
        self.map(v)
    }
    fn u64(&mut self, what: &'static str) -> Result<u64, CheckpointError> {
        let v = self.r.u64_be(what);
        self.map(v)
    }
    /// A count of items that take at least `min_size` bytes each, bounded by what is left.
    fn count(&mut self, what: &'static str, min_size: usize) -> Result<usize, CheckpointError> {
        let v = self.r.count(what, min_size);
        self.map(v)
    }
    fn len_prefixed(&mut self, what: &'static str) -> Result<&'a [u8], CheckpointError> {
        let v = self.r.len_prefixed(what);
        self.map(v)
    }
    fn string(&mut self, what: &'static str) -> Result<String, CheckpointError> {
        let v = self.r.string(what);
        self.map(v)
    }
}

fn decode(path: &str, bytes: &[u8]) -> Result<Manifest, CheckpointError> {
    let corrupt = |reason: String| CheckpointError::Corrupt {
        path: path.to_owned(),
        reason,
    };
    if bytes.len() < MAGIC.len() + 2 + 4 {
        return Err(corrupt(format!("{} bytes is too short", bytes.len())));
    }
    let (content, crc) = bytes.split_at(bytes.len() - 4);
    let stored = ByteReader::new(crc)
        .u32_be("manifest crc32")
        .map_err(|e| corrupt(e.to_string()))?;
    let actual = crc32fast::hash(content);
    if stored != actual {
        return Err(CheckpointError::ChecksumMismatch {
            path: path.to_owned(),
            expected: stored,
            actual,
        });
    }
    let (magic, body) = content.split_at(MAGIC.len());
    if magic != MAGIC {
        return Err(corrupt("not a keyed-state manifest (bad magic)".into()));
    }
    let mut r = ManifestReader {
        r: ByteReader::new(body),
        path,
    };
    let version = r.u16("version")?;
    if !(1..=MANIFEST_VERSION).contains(&version) {
        return Err(corrupt(format!("unsupported version {version}")));
    }
    let checkpoint_id = r.u64("checkpoint id")?;
    let kind = match r.u8("kind")? {
        0 => SnapshotKind::Incremental,
        1 => SnapshotKind::Full,
        2 => SnapshotKind::Savepoint,
        k => return Err(r.corrupt(format!("unknown snapshot kind {k}"))),
    };
    let engine = r.string("engine")?;
    let max_parallelism = r.u32("max parallelism")?;
    let range = KeyGroupRange::new(r.u16("range start")?, r.u16("range end")?);
    range
        .check_fits(max_parallelism)
        .map_err(|e| r.corrupt(e.to_string()))?;
    let created_at_millis = r.u64("creation time")?;
    let n = r.count("state count", 2)?;
    let mut states = Vec::with_capacity(n);
    for _ in 0..n {
        let raw = r.len_prefixed("state metadata")?;
        let meta = meta_codec::decode(raw).map_err(|e| r.corrupt(e.to_string()))?;
        if states.iter().any(|s: &StateMeta| s.name == meta.name) {
            return Err(r.corrupt(format!("state '{}' listed twice", meta.name)));
        }
        states.push(meta);
    }
    let n = r.count("offset count", 9)?;
    let mut offsets = Vec::with_capacity(n);
    for _ in 0..n {
        offsets.push((r.string("offset name")?, r.u64("offset")?));
    }
    let mut timers: Vec<TimerMeta> = Vec::new();
    if version >= 2 {
        let n = r.count("timer service count", 3)?;
        for _ in 0..n {
            let t = TimerMeta {
                name: r.string("timer service name")?,
                key_codec: r.string("timer key codec")?,
                namespace_codec: r.string("timer namespace codec")?,
            };
            if timers.iter().any(|o| o.name == t.name) {
                return Err(r.corrupt(format!("timer service '{}' listed twice", t.name)));
            }
            timers.push(t);
        }
    }
    let n = r.count("file count", 14)?;
    let mut files: Vec<FileEntry> = Vec::with_capacity(n);
    for _ in 0..n {
        let file_path = r.string("file path")?;
        check_manifest_file(checkpoint_id, &file_path)?;
        if files.iter().any(|f| f.path == file_path) {
            return Err(r.corrupt(format!("file {file_path} listed twice")));
        }
        let role = match r.u8("file role")? {
            0 => FileRole::SharedSst,
            1 => FileRole::Private,
            2 => FileRole::KeyGroupData,
            3 => FileRole::Timers,
            k => return Err(r.corrupt(format!("unknown file role {k}"))),
        };
        let size = r.u64("file size")?;
        let crc32 = r.u32("file crc32")?;
        let nb = r.count("block count", 22)?;
        if nb > 0 && !matches!(role, FileRole::KeyGroupData | FileRole::Timers) {
            return Err(r.corrupt(format!("{file_path} has blocks but is not a data file")));
        }
        let mut blocks: Vec<BlockEntry> = Vec::with_capacity(nb);
        for _ in 0..nb {
            let b = BlockEntry {
                group: r.u16("block group")?,
                offset: r.u64("block offset")?,
                len: r.u32("block length")?,
                raw_len: r.u32("block raw length")?,
                crc32: r.u32("block crc32")?,
            };
            if !range.contains(b.group) {
                return Err(r.corrupt(format!("block of key group {} outside {range}", b.group)));
            }
            // Ascending groups; a group too large for one block continues in the next.
            if blocks.last().is_some_and(|p| p.group > b.group) {
                return Err(r.corrupt("key-group blocks out of order".to_string()));
            }
            // Blocks lie one after the other: entries sharing bytes would let one frame be
            // decompressed (and kept) once per entry.
            if blocks
                .last()
                .is_some_and(|p| p.offset.saturating_add(u64::from(p.len)) > b.offset)
            {
                return Err(r.corrupt(format!(
                    "block of key group {} overlaps the one before",
                    b.group
                )));
            }
            if b.offset
                .checked_add(u64::from(b.len))
                .is_none_or(|end| end > size)
            {
                return Err(r.corrupt(format!("block of key group {} past the file end", b.group)));
            }
            blocks.push(b);
        }
        files.push(FileEntry {
            path: file_path,
            role,
            size,
            crc32,
            blocks,
        });
    }
    let uploaded_bytes = r.u64("uploaded bytes")?;
    if !r.r.is_empty() {
        return Err(r.corrupt(format!("{} trailing bytes", r.r.remaining())));
    }
    Ok(Manifest {
        checkpoint_id,
        kind,
        engine,
        max_parallelism,
        range,
        created_at_millis,
        states,
        offsets,
        timers,
        files,
        uploaded_bytes,
    })
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, reason = "tests index what they built")]
mod tests {
    use super::*;
    use crate::types::StateKind;

    pub(crate) fn sample() -> Manifest {
        Manifest {
            checkpoint_id: 7,
            kind: SnapshotKind::Full,
            engine: "heap".into(),
            max_parallelism: 128,
            range: KeyGroupRange::new(32, 63),
            created_at_millis: 1_700_000_000_000,
            states: vec![StateMeta {
                name: "count".into(),
                kind: StateKind::Value,
                key_codec: "u64".into(),
                namespace_codec: "()".into(),
                user_key_codec: None,
                value_codec: "u64".into(),
                ttl: None,
            }],
            offsets: vec![("input".into(), 4242)],
            timers: vec![TimerMeta {
                name: "sessions".into(),
                key_codec: "u64".into(),
                namespace_codec: "()".into(),
            }],
            files: vec![FileEntry {
                path: "chk-7/state-data".into(),
                role: FileRole::KeyGroupData,
                size: 100,
                crc32: 0xdead_beef,
                blocks: vec![
                    BlockEntry {
                        group: 32,
                        offset: 0,
                        len: 40,
                        raw_len: 90,
                        crc32: 1,
                    },
                    BlockEntry {
                        group: 40,
                        offset: 40,
                        len: 60,
                        raw_len: 200,
                        crc32: 2,
                    },
                ],
            }],
            uploaded_bytes: 100,
        }
    }

    #[test]
    fn roundtrip() {
        let m = sample();
        let bytes = m.encode().unwrap();
        assert_eq!(Manifest::decode("m", &bytes).unwrap(), m);
        assert_eq!(m.full_size(), 100);
        assert_eq!(m.offset("input"), Some(4242));
    }

    #[test]
    fn every_flip_and_truncation_is_a_typed_error() {
        let bytes = sample().encode().unwrap();
        for i in 0..bytes.len() {
            assert!(
                Manifest::decode("m", &bytes[..i]).is_err(),
                "truncated at {i}"
            );
            for bit in 0..8 {
                let mut b = bytes.clone();
                b[i] ^= 1 << bit;
                assert!(Manifest::decode("m", &b).is_err(), "flip at {i}.{bit}");
            }
        }
    }

    /// Re-encodes with a valid checksum, so validation past the checksum is what rejects.
    fn with_crc(mut m: Manifest, f: impl FnOnce(&mut Manifest)) -> Vec<u8> {
        f(&mut m);
        m.encode().unwrap()
    }

    #[test]
    fn escaping_paths_and_bad_indexes_are_rejected_despite_a_valid_checksum() {
        for bad in [
            "../x",
            "/etc/passwd",
            "chk-8/x",
            "shared/a/b",
            "chk-7/_manifest",
            "x",
        ] {
            let bytes = with_crc(sample(), |m| m.files[0].path = bad.into());
            let err = Manifest::decode("m", &bytes).unwrap_err();
            assert!(
                matches!(
                    err,
                    crate::Error::Checkpoint(CheckpointError::UnsafePath { .. })
                ),
                "{bad}: {err}"
            );
        }
        let past_end = with_crc(sample(), |m| m.files[0].blocks[1].len = 61);
        assert!(Manifest::decode("m", &past_end).is_err());
        let outside = with_crc(sample(), |m| m.files[0].blocks[0].group = 3);
        assert!(Manifest::decode("m", &outside).is_err());
        let unordered = with_crc(sample(), |m| m.files[0].blocks.swap(0, 1));
        assert!(Manifest::decode("m", &unordered).is_err());
        let twice = with_crc(sample(), |m| {
            let f = m.files[0].clone();
            m.files.push(f)
        });
        assert!(Manifest::decode("m", &twice).is_err());
    }

    #[test]
    fn version_1_without_timers_is_still_read() {
        let mut m = sample();
        m.timers.clear();
        let v2 = m.encode().unwrap();
        // Version 1 is version 2 without the timer-service count (one byte, 0, after offsets).
        let mut at = 4 + 2 + 8 + 1 + (1 + m.engine.len()) + 4 + 4 + 8 + 1;
        for s in &m.states {
            at += 1 + meta_codec::encode(s).len();
        }
        at += 1 + m
            .offsets
            .iter()
            .map(|(n, _)| 1 + n.len() + 8)
            .sum::<usize>();
        assert_eq!(v2[at], 0);
        let mut v1 = v2[..v2.len() - 4].to_vec();
        v1.remove(at);
        v1[4..6].copy_from_slice(&1u16.to_be_bytes());
        let crc = crc32fast::hash(&v1);
        v1.extend_from_slice(&crc.to_be_bytes());
        assert_eq!(Manifest::decode("m", &v1).unwrap(), m);
        let mut v3 = v2.clone();
        v3[4..6].copy_from_slice(&3u16.to_be_bytes());
        let n = v3.len() - 4;
        let crc = crc32fast::hash(&v3[..n]);
        v3[n..].copy_from_slice(&crc.to_be_bytes());
        assert!(
            Manifest::decode("m", &v3).is_err(),
            "a future version is refused"
        );
    }

    #[test]
    fn a_huge_count_does_not_allocate() {
        // A valid header followed by a state count of 2^32-1: rejected by the bound.
        let mut m = sample().encode().unwrap();
        m.truncate(4 + 2 + 8 + 1 + 5 + 4 + 4 + 8);
        m.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
        let crc = crc32fast::hash(&m);
        m.extend_from_slice(&crc.to_be_bytes());
        let err = Manifest::decode("m", &m).unwrap_err().to_string();
        assert!(err.contains("exceeds"), "{err}");
    }
}
