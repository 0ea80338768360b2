//! The canonical key-group format: heap checkpoints and savepoints of either engine.
//!
//! A data file is a 6-byte header (`"KSKG"`, version u16) followed by one block per key group
//! that holds state, in ascending group order. A block is one zstd frame; the manifest's
//! [`BlockEntry`] gives its offset, compressed and raw lengths and the crc32 of its compressed
//! bytes, so a rescaling restore reads and decompresses only the groups it needs. A block's raw
//! bytes are sections, one per state with entries in the group:
//!
//! ```text
//! section := state index (varint, into the manifest's state list) | record count (varint) | record*
//! record  := key bytes | namespace bytes | payload          (bytes := varint length | bytes)
//! payload := Value, Reducing, Aggregating: stamp u64 | value bytes
//!          | List: element count (varint) | (stamp u64 | element bytes)*
//!          | Map:  entry count (varint)   | (user-key bytes | stamp u64 | value bytes)*
//! ```
//!
//! Key, namespace, user-key and value bytes are the types' top-level codec encodings; stamps
//! are the TTL last-access time in ms (0 for states without TTL), big-endian. Nothing here
//! depends on an engine's own layout, which is what makes a savepoint portable.

use bytes::Bytes;

use rayon::prelude::*;

use super::manifest::{BlockEntry, FileEntry, FileRole};
use super::store::CheckpointStore;
use crate::codec::{read_varint_u32, write_varint_u32};
use crate::error::{CheckpointError, CodecError};
use crate::key_group::KeyGroupRange;

/// The data file header.
pub const DATA_MAGIC: &[u8; 4] = b"KSKG";
/// The data format version.
pub const DATA_VERSION: u16 = 1;
/// Largest raw block accepted on read (a corrupt length cannot make us allocate more).
pub const MAX_RAW_BLOCK: u32 = 1 << 30;
/// zstd level: 1 compresses at several hundred MB/s per core and already shrinks typical
/// state (small integers, repeated stamps) three- to tenfold.
const ZSTD_LEVEL: i32 = 1;

/// Builds a data file block by block.
pub struct DataFileWriter {
    bytes: Vec<u8>,
    blocks: Vec<BlockEntry>,
}

impl Default for DataFileWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl DataFileWriter {
    /// An empty file (header only).
    pub fn new() -> Self {
        let mut bytes = Vec::with_capacity(1 << 16);
        bytes.extend_from_slice(DATA_MAGIC);
        bytes.extend_from_slice(&DATA_VERSION.to_be_bytes());
        DataFileWriter {
            bytes,
            blocks: Vec::new(),
        }
    }

    /// Compresses and appends the raw block of `group` (groups must ascend; an empty block is
    /// skipped).
    pub fn add_block(&mut self, group: u16, raw: &[u8]) -> std::io::Result<()> {
        if raw.is_empty() {
            return Ok(());
        }
        let (compressed, raw_len) = compress_block(group, raw)?;
        self.add_compressed(group, &compressed, raw_len);
        Ok(())
    }

    /// Appends a block [`compress_block`] made (so blocks can be compressed in parallel and
    /// appended in group order).
    pub fn add_compressed(&mut self, group: u16, compressed: &[u8], raw_len: u32) {
        debug_assert!(self.blocks.last().is_none_or(|b| b.group < group));
        let offset = self.bytes.len() as u64;
        self.bytes.extend_from_slice(compressed);
        self.blocks.push(BlockEntry {
            group,
            offset,
            len: compressed.len() as u32,
            raw_len,
            crc32: crc32fast::hash(compressed),
        });
    }

    /// Uploads the file as checkpoint `id`'s private file `name` and returns its manifest
    /// entry, with `role` and the block index.
    pub fn publish(
        self,
        store: &CheckpointStore,
        id: u64,
        name: &str,
        role: FileRole,
    ) -> crate::error::Result<FileEntry> {
        let (bytes, blocks) = self.finish();
        let (path, info) = store.put_private(id, name, &bytes)?;
        Ok(FileEntry {
            path,
            role,
            size: info.size,
            crc32: info.crc32,
            blocks,
        })
    }

    /// The file's bytes and its block index.
    pub fn finish(self) -> (Vec<u8>, Vec<BlockEntry>) {
        (self.bytes, self.blocks)
    }
}

/// A data file of the raw blocks `raw_block(index in range, group)` of every group of `range`:
/// key groups are independent, so they are built and compressed in parallel (rayon keeps the
/// order) and appended in group order; empty blocks are left out.
pub fn build_parallel(
    range: KeyGroupRange,
    raw_block: impl Fn(usize, u16) -> Vec<u8> + Sync,
) -> std::io::Result<DataFileWriter> {
    let groups: Vec<(usize, u16)> = range.iter().enumerate().collect();
    let compressed = groups
        .par_iter()
        .map(|&(index, group)| {
            let raw = raw_block(index, group);
            if raw.is_empty() {
                return Ok(None);
            }
            compress_block(group, &raw).map(|(c, raw_len)| Some((group, c, raw_len)))
        })
        .collect::<std::io::Result<Vec<_>>>()?;
    let mut writer = DataFileWriter::new();
    for (group, c, raw_len) in compressed.into_iter().flatten() {
        writer.add_compressed(group, &c, raw_len);
    }
    Ok(writer)
}

/// Compresses the raw block of `group`: the zstd frame and the raw length.
pub fn compress_block(group: u16, raw: &[u8]) -> std::io::Result<(Vec<u8>, u32)> {
    let raw_len = u32::try_from(raw.len())
        .ok()
        .filter(|&n| n <= MAX_RAW_BLOCK)
        .ok_or_else(|| {
            std::io::Error::other(format!(
                "key group {group} holds {} bytes; at most {MAX_RAW_BLOCK} fit one block",
                raw.len()
            ))
        })?;
    Ok((zstd::bulk::compress(raw, ZSTD_LEVEL)?, raw_len))
}

fn corrupt(path: &str, reason: impl Into<String>) -> CheckpointError {
    CheckpointError::Corrupt {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

/// Checks a data file's header.
pub fn check_header(path: &str, file: &[u8]) -> Result<(), CheckpointError> {
    if file.len() < 6 || &file[..4] != DATA_MAGIC {
        return Err(corrupt(path, "not a key-group data file (bad magic)"));
    }
    let version = u16::from_be_bytes([file[4], file[5]]);
    if version != DATA_VERSION {
        return Err(corrupt(path, format!("unsupported data version {version}")));
    }
    Ok(())
}

/// The raw bytes of one block of `file` (already verified as a whole), checked against its
/// entry.
pub fn read_block(path: &str, file: &[u8], entry: &BlockEntry) -> Result<Bytes, CheckpointError> {
    let start = usize::try_from(entry.offset).unwrap_or(usize::MAX);
    let compressed = start
        .checked_add(entry.len as usize)
        .and_then(|end| file.get(start..end))
        .ok_or_else(|| {
            corrupt(
                path,
                format!("block of key group {} past the end", entry.group),
            )
        })?;
    let crc = crc32fast::hash(compressed);
    if crc != entry.crc32 {
        return Err(corrupt(
            path,
            format!(
                "block of key group {} has crc32 {crc:08x}, not {:08x}",
                entry.group, entry.crc32
            ),
        ));
    }
    if entry.raw_len > MAX_RAW_BLOCK {
        return Err(corrupt(
            path,
            format!("block raw length {} too large", entry.raw_len),
        ));
    }
    let raw = zstd::bulk::decompress(compressed, entry.raw_len as usize)
        .map_err(|e| corrupt(path, format!("block of key group {}: {e}", entry.group)))?;
    if raw.len() != entry.raw_len as usize {
        return Err(corrupt(
            path,
            format!(
                "block of key group {} decompressed to {} bytes, not {}",
                entry.group,
                raw.len(),
                entry.raw_len
            ),
        ));
    }
    Ok(Bytes::from(raw))
}

/// One state's section of a block: which state and its records' bytes.
#[derive(Debug, Clone)]
pub struct Section {
    /// Index into the manifest's state list.
    pub state: usize,
    /// Number of records.
    pub records: u32,
    /// The records (a slice of the block, no copy).
    pub bytes: Bytes,
}

/// Splits a raw block into its sections. `record_len` skips one record of a state (by index),
/// so sections can be cut without decoding values.
pub fn sections(
    block: &Bytes,
    states: usize,
    mut record_len: impl FnMut(usize, &mut &[u8]) -> Result<(), CodecError>,
) -> Result<Vec<Section>, CodecError> {
    let mut out = Vec::new();
    let mut input: &[u8] = block;
    while !input.is_empty() {
        let state = read_varint_u32(&mut input, "section state")? as usize;
        if state >= states || out.iter().any(|s: &Section| s.state == state) {
            return Err(CodecError::Invalid {
                what: "section",
                reason: format!("state index {state} unknown or repeated"),
            });
        }
        let records = read_varint_u32(&mut input, "section record count")?;
        let start = block.len() - input.len();
        for _ in 0..records {
            record_len(state, &mut input)?;
        }
        let end = block.len() - input.len();
        out.push(Section {
            state,
            records,
            bytes: block.slice(start..end),
        });
    }
    Ok(out)
}

/// Appends a section header.
pub fn write_section_header(out: &mut Vec<u8>, state: usize, records: u32) {
    write_varint_u32(out, state as u32);
    write_varint_u32(out, records);
}

/// Appends length-prefixed bytes.
pub fn write_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    write_varint_u32(out, bytes.len() as u32);
    out.extend_from_slice(bytes);
}

/// Reads length-prefixed bytes.
pub fn read_bytes<'a>(input: &mut &'a [u8], what: &'static str) -> Result<&'a [u8], CodecError> {
    let n = read_varint_u32(input, what)? as usize;
    crate::codec::take(input, n, what)
}

/// Reads a stamp.
pub fn read_stamp(input: &mut &[u8]) -> Result<u64, CodecError> {
    let b = crate::codec::take(input, 8, "stamp")?;
    let mut a = [0; 8];
    a.copy_from_slice(b);
    Ok(u64::from_be_bytes(a))
}

/// Reads a count of items of at least `min_size` bytes each, bounded by the input left.
pub fn read_count(
    input: &mut &[u8],
    what: &'static str,
    min_size: usize,
) -> Result<usize, CodecError> {
    let n = read_varint_u32(input, what)? as usize;
    if n.saturating_mul(min_size) > input.len() {
        return Err(CodecError::Invalid {
            what,
            reason: format!("{n} items cannot fit in {} bytes", input.len()),
        });
    }
    Ok(n)
}

/// Skips one record of a state of the given shape (`list`/`map` flags) without decoding it.
pub fn skip_record(input: &mut &[u8], shape: RecordShape) -> Result<(), CodecError> {
    read_bytes(input, "key")?;
    read_bytes(input, "namespace")?;
    match shape {
        RecordShape::Single => {
            read_stamp(input)?;
            read_bytes(input, "value")?;
        }
        RecordShape::List => {
            for _ in 0..read_count(input, "list length", 9)? {
                read_stamp(input)?;
                read_bytes(input, "element")?;
            }
        }
        RecordShape::Map => {
            for _ in 0..read_count(input, "map length", 10)? {
                read_bytes(input, "user key")?;
                read_stamp(input)?;
                read_bytes(input, "value")?;
            }
        }
    }
    Ok(())
}

/// The payload shape of a state kind's records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordShape {
    /// Value, Reducing, Aggregating.
    Single,
    /// List.
    List,
    /// Map.
    Map,
}

impl RecordShape {
    /// The shape of `kind`'s records.
    pub fn of(kind: crate::state::StateKind) -> Self {
        use crate::state::StateKind;
        match kind {
            StateKind::List => RecordShape::List,
            StateKind::Map => RecordShape::Map,
            StateKind::Value | StateKind::Reducing | StateKind::Aggregating => RecordShape::Single,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_roundtrip_and_detect_damage() {
        let mut w = DataFileWriter::new();
        let raw1: Vec<u8> = (0..5000u32).flat_map(|i| (i % 7).to_be_bytes()).collect();
        w.add_block(3, &raw1).unwrap();
        w.add_block(4, &[]).unwrap();
        w.add_block(9, b"hello").unwrap();
        let (file, blocks) = w.finish();
        assert_eq!(blocks.len(), 2);
        assert!(blocks[0].len < raw1.len() as u32 / 4, "zstd compresses");
        check_header("f", &file).unwrap();
        assert_eq!(read_block("f", &file, &blocks[0]).unwrap(), raw1);
        assert_eq!(&read_block("f", &file, &blocks[1]).unwrap()[..], b"hello");
        let mut bad = file.clone();
        bad[blocks[1].offset as usize + 2] ^= 1;
        assert!(read_block("f", &bad, &blocks[1]).is_err());
        let mut lying = blocks[0];
        lying.raw_len -= 1; // a frame larger than the recorded length is an error, not a resize
        assert!(read_block("f", &file, &lying).is_err());
        assert!(check_header("f", b"KSKG\0\x02").is_err());
        assert!(check_header("f", b"KS").is_err());
    }

    #[test]
    fn sections_split_and_reject_garbage() {
        let mut raw = Vec::new();
        write_section_header(&mut raw, 1, 2);
        for k in [b"a", b"b"] {
            write_bytes(&mut raw, k);
            write_bytes(&mut raw, b"");
            raw.extend_from_slice(&5u64.to_be_bytes());
            write_bytes(&mut raw, b"v");
        }
        let block = Bytes::from(raw.clone());
        let s = sections(&block, 2, |_, i| skip_record(i, RecordShape::Single)).unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!((s[0].state, s[0].records), (1, 2));
        assert!(sections(&block, 1, |_, i| skip_record(i, RecordShape::Single)).is_err());
        for cut in 0..raw.len() {
            let b = Bytes::copy_from_slice(&raw[..cut]);
            let _ = sections(&b, 2, |_, i| skip_record(i, RecordShape::Map)); // never panics
        }
    }
}
