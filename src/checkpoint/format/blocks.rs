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
//! payload := Value, Reducing, Aggregating: stamp | value bytes
//!          | List: element count (varint) | (stamp | element bytes)*
//!          | Map:  entry count (varint)   | (user-key bytes | stamp | value bytes)*
//! ```
//!
//! Key, namespace, user-key and value bytes are the types' top-level codec encodings; stamps
//! are the TTL last-access time in ms (0 for states without TTL). Nothing here depends on an
//! engine's own layout, which is what makes a savepoint portable.
//!
//! A stamp's form depends on the data version ([`Stamps`]): version 1 wrote 8 bytes big-endian;
//! version 2 writes the zigzag LEB128 of its difference from the previous stamp of the same
//! section (from 0 for the section's first), so a list's or map's equal stamps cost a zero byte
//! each. Engines write and read records in the *record form* (8-byte stamps, as version 1):
//! [`GroupBlocks::section`] rewrites the stamps on the way into a block and [`sections`] on the
//! way out, so only this module knows the file's form.

// A decoder of bytes from disk or the network: no indexing that can panic.
#![deny(clippy::indexing_slicing)]

use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;

use rayon::prelude::*;

use super::manifest::BlockEntry;
use crate::codec::{ByteReader, read_varint_u64, write_varint_u32, write_varint_u64};
use crate::error::{CheckpointError, CodecError, Result};
use crate::key_group::KeyGroupRange;
use crate::types::StateKind;

/// The data file header.
pub(crate) const DATA_MAGIC: &[u8; 4] = b"KSKG";
/// The data format version written: 2 (delta stamps). Version 1 (8-byte stamps) is still read.
pub(crate) const DATA_VERSION: u16 = 2;
/// Largest raw block accepted on read (a corrupt length cannot make us allocate more).
pub(crate) const MAX_RAW_BLOCK: u32 = 1 << 30;
/// The most a zstd frame can expand: a 128 KiB block of one repeated byte is 4 bytes (an RLE
/// block), so no frame decompresses to more than this many times its size (plus a little for
/// tiny frames). A block whose recorded raw length claims more is refused unread.
pub(crate) const MAX_ZSTD_RATIO: u64 = 32_768;
/// The raw size at which writers start another block of the same key group: a key group's
/// data larger than one block (1 GiB) is split over several, in group order, each a sequence
/// of whole sections. Adjustable (downwards) by tests through [`set_block_split_bytes`], so the
/// split is exercised without gigabytes of state.
static BLOCK_SPLIT_BYTES: AtomicUsize = AtomicUsize::new(MAX_RAW_BLOCK as usize);

/// Sets the raw size at which a key group's data continues in another block (at most, and by
/// default, [`MAX_RAW_BLOCK`]). Process-wide; for tests of the split.
#[doc(hidden)]
pub fn set_block_split_bytes(bytes: usize) {
    BLOCK_SPLIT_BYTES.store(bytes.clamp(64, MAX_RAW_BLOCK as usize), Ordering::Relaxed);
}

fn block_split_bytes() -> usize {
    BLOCK_SPLIT_BYTES.load(Ordering::Relaxed)
}

/// zstd level: 1 compresses at several hundred MB/s per core and already shrinks typical
/// state (small integers, repeated stamps) three- to tenfold.
const ZSTD_LEVEL: i32 = 1;

/// Builds a data file block by block.
#[derive(Debug)]
pub(crate) struct DataFileWriter {
    bytes: Vec<u8>,
    blocks: Vec<BlockEntry>,
}

impl DataFileWriter {
    /// An empty file (header only).
    pub(crate) fn new() -> Self {
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
    #[cfg(any(test, feature = "rocksdb"))]
    pub(crate) fn add_block(&mut self, group: u16, raw: &[u8]) -> Result<()> {
        if raw.is_empty() {
            return Ok(());
        }
        let (compressed, raw_len) = compress_block(group, raw)?;
        self.add_compressed(group, &compressed, raw_len)
    }

    /// Appends a block [`compress_block`] made (so blocks can be compressed in parallel and
    /// appended in group order).
    pub(crate) fn add_compressed(
        &mut self,
        group: u16,
        compressed: &[u8],
        raw_len: u32,
    ) -> Result<()> {
        assert!(
            self.blocks.last().is_none_or(|b| b.group <= group),
            "key-group blocks are appended in ascending group order"
        );
        let len = u32::try_from(compressed.len())
            .map_err(|_| CodecError::too_large("compressed key-group block", compressed.len()))?;
        let offset = u64::try_from(self.bytes.len())
            .map_err(|_| CodecError::too_large("data file", self.bytes.len()))?;
        self.bytes.extend_from_slice(compressed);
        self.blocks.push(BlockEntry {
            group,
            offset,
            len,
            raw_len,
            crc32: crc32fast::hash(compressed),
        });
        Ok(())
    }

    /// The file's bytes and its block index.
    pub(crate) fn finish(self) -> (Vec<u8>, Vec<BlockEntry>) {
        (self.bytes, self.blocks)
    }
}

/// A data file of the blocks `group_blocks(index in range, group)` builds for every group of
/// `range`: key groups are independent, so they are built and compressed in parallel (rayon
/// keeps the order) and appended in group order; groups without data are left out.
pub(crate) fn build_parallel(
    range: KeyGroupRange,
    group_blocks: impl Fn(usize, u16) -> Result<GroupBlocks, CodecError> + Sync,
) -> Result<DataFileWriter> {
    let groups: Vec<(usize, u16)> = range.iter().enumerate().collect();
    let compressed = groups
        .par_iter()
        .map(|&(index, group)| {
            group_blocks(index, group)?
                .finish()
                .iter()
                .map(|raw| compress_block(group, raw).map(|(c, raw_len)| (group, c, raw_len)))
                .collect::<Result<Vec<_>>>()
        })
        .collect::<Result<Vec<_>>>()?;
    let mut writer = DataFileWriter::new();
    for (group, c, raw_len) in compressed.into_iter().flatten() {
        writer.add_compressed(group, &c, raw_len)?;
    }
    Ok(writer)
}

/// The raw blocks of one key group, built section by section: a section that would take the
/// current block past the split size starts another block (split at record boundaries when
/// it is larger than a block by itself), so no key group is too large to checkpoint.
#[derive(Debug)]
pub(crate) struct GroupBlocks {
    limit: usize,
    /// The finished blocks, then the one being filled.
    blocks: Vec<Vec<u8>>,
}

impl Default for GroupBlocks {
    fn default() -> Self {
        GroupBlocks {
            limit: block_split_bytes(),
            blocks: vec![Vec::new()],
        }
    }
}

/// Bytes of a section header at most: two varints.
const SECTION_HEADER: usize = 10;

impl GroupBlocks {
    /// Appends the section of state `state`: `count` records of `shape`, `records` their bytes
    /// in the record form, written with the stamps of the current data version.
    pub(crate) fn section(
        &mut self,
        state: usize,
        count: usize,
        records: &[u8],
        shape: RecordShape,
    ) -> Result<(), CodecError> {
        if count == 0 {
            return Ok(());
        }
        // Records go into `piece` one by one; a record that would take the current block past
        // the split size ends the piece (a section of its own) and starts another block. Each
        // piece starts its stamp deltas from 0, so it reads without the pieces before it.
        let (mut input, mut piece) = (records, Vec::with_capacity(records.len()));
        let (mut n, mut total, mut prev) = (0usize, 0usize, 0u64);
        let put = |input: &mut &[u8], prev: &mut u64, piece: &mut Vec<u8>| {
            transcode_record(input, shape, Stamps::Fixed, Stamps::Delta, prev, piece)
        };
        while !input.is_empty() {
            let record = input;
            let before = piece.len();
            put(&mut input, &mut prev, &mut piece)?;
            if !self.fits(piece.len()) {
                piece.truncate(before);
                if n > 0 {
                    self.append(state, n, &piece)?;
                    total += n;
                    n = 0;
                    piece.clear();
                }
                if self.current_len() > 0 {
                    self.blocks.push(Vec::new());
                }
                (input, prev) = (record, 0);
                put(&mut input, &mut prev, &mut piece)?;
                if !self.fits(piece.len()) {
                    return Err(CodecError::too_large(
                        "record (larger than a block)",
                        piece.len(),
                    ));
                }
            }
            n += 1;
        }
        if n > 0 {
            self.append(state, n, &piece)?;
            total += n;
        }
        // A count that is not what the records hold would make the section unreadable: an
        // error here, not a damaged file found at restore.
        if total != count {
            return Err(CodecError::Invalid {
                what: "section",
                reason: format!("{count} records announced, {total} written"),
            });
        }
        Ok(())
    }

    fn fits(&self, records: usize) -> bool {
        self.current_len() + SECTION_HEADER + records <= self.limit
    }

    fn current_len(&self) -> usize {
        self.blocks.last().map_or(0, Vec::len)
    }

    fn append(&mut self, state: usize, count: usize, records: &[u8]) -> Result<(), CodecError> {
        if self.blocks.is_empty() {
            self.blocks.push(Vec::new());
        }
        let Some(block) = self.blocks.last_mut() else {
            return Ok(());
        };
        write_section_header(block, state, count)?;
        block.extend_from_slice(records);
        Ok(())
    }

    /// The group's raw blocks, without empty ones.
    pub(crate) fn finish(self) -> Vec<Vec<u8>> {
        self.blocks.into_iter().filter(|b| !b.is_empty()).collect()
    }
}

/// Compresses the raw block of `group`: the zstd frame and the raw length.
pub(crate) fn compress_block(group: u16, raw: &[u8]) -> Result<(Vec<u8>, u32)> {
    let Some(raw_len) = u32::try_from(raw.len())
        .ok()
        .filter(|&n| n <= MAX_RAW_BLOCK)
    else {
        tracing::warn!(
            group,
            bytes = raw.len(),
            limit = MAX_RAW_BLOCK,
            "a key group's data is too large for one block"
        );
        return Err(CodecError::too_large("key-group block", raw.len()).into());
    };
    Ok((zstd::bulk::compress(raw, ZSTD_LEVEL)?, raw_len))
}

fn corrupt(path: &str, reason: impl Into<String>) -> CheckpointError {
    CheckpointError::Corrupt {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

/// Checks a data file's header; returns its data version (1 or 2).
pub(crate) fn check_header(path: &str, file: &[u8]) -> Result<u16, CheckpointError> {
    let mut r = ByteReader::new(file);
    let magic = r.array::<4>("magic");
    if magic.as_ref().is_ok_and(|m| m == DATA_MAGIC) {
        // The magic is right; the version is checked below.
    } else {
        return Err(corrupt(path, "not a key-group data file (bad magic)"));
    }
    let version = r
        .u16_be("data version")
        .map_err(|e| corrupt(path, e.to_string()))?;
    if !(1..=DATA_VERSION).contains(&version) {
        return Err(corrupt(path, format!("unsupported data version {version}")));
    }
    Ok(version)
}

/// The raw bytes of one block of `file` (already verified as a whole), checked against its
/// entry.
pub(crate) fn read_block(
    path: &str,
    file: &[u8],
    entry: &BlockEntry,
) -> Result<Bytes, CheckpointError> {
    let past_end = || {
        corrupt(
            path,
            format!("block of key group {} past the end", entry.group),
        )
    };
    let start = usize::try_from(entry.offset).map_err(|_| past_end())?;
    let len = usize::try_from(entry.len).map_err(|_| past_end())?;
    let compressed = start
        .checked_add(len)
        .and_then(|end| file.get(start..end))
        .ok_or_else(past_end)?;
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
    let raw_len = usize::try_from(entry.raw_len)
        .ok()
        .filter(|_| entry.raw_len <= MAX_RAW_BLOCK)
        .ok_or_else(|| {
            corrupt(
                path,
                format!("block raw length {} too large", entry.raw_len),
            )
        })?;
    // What these bytes can decompress to at most: a larger claim is damage or a lie.
    let possible = u64::from(entry.len)
        .saturating_mul(MAX_ZSTD_RATIO)
        .saturating_add(1 << 10);
    if u64::from(entry.raw_len) > possible {
        return Err(corrupt(
            path,
            format!(
                "block of key group {} claims {} raw bytes from {} compressed",
                entry.group, entry.raw_len, entry.len
            ),
        ));
    }
    let raw = decompress_bounded(compressed, raw_len)
        .map_err(|e| corrupt(path, format!("block of key group {}: {e}", entry.group)))?;
    if raw.len() != raw_len {
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

/// Decompresses one zstd frame, streaming: memory grows with the bytes the frame really
/// produces (never with what a length field claims), and at most `limit + 1` are produced.
fn decompress_bounded(compressed: &[u8], limit: usize) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let decoder = zstd::stream::read::Decoder::with_buffer(compressed)?;
    let mut out = Vec::with_capacity(limit.min(1 << 20));
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    decoder.take(cap).read_to_end(&mut out)?;
    Ok(out)
}

/// One state's section of a block: which state and its records' bytes.
#[derive(Debug, Clone)]
pub(crate) struct Section {
    /// Index into the manifest's state list.
    pub(crate) state: usize,
    /// Number of records.
    pub(crate) records: u32,
    /// The records (a slice of the block, no copy).
    pub(crate) bytes: Bytes,
}

/// Splits a raw block of a data file of `version` into its sections, their records in the
/// record form: version 1's are slices of the block (no copy), version 2's are rewritten (one
/// buffer per block). `shape` gives a state's record shape by index.
pub(crate) fn sections(
    block: &Bytes,
    version: u16,
    states: usize,
    shape: impl Fn(usize) -> RecordShape,
) -> Result<Vec<Section>, CodecError> {
    let form = Stamps::of_version(version);
    // (state, records, span of the block or of `rewritten`)
    let mut parts: Vec<(usize, u32, std::ops::Range<usize>)> = Vec::new();
    // A rewritten block is its bytes plus 7 per stamp of 1 byte: reserve for a few.
    let mut rewritten = match form {
        Stamps::Fixed => Vec::new(),
        Stamps::Delta => Vec::with_capacity(block.len().saturating_add(block.len() / 4)),
    };
    let mut r = ByteReader::new(block);
    while !r.is_empty() {
        let state = usize::try_from(r.varint("section state")?).unwrap_or(usize::MAX);
        if state >= states || parts.iter().any(|p| p.0 == state) {
            return Err(CodecError::Invalid {
                what: "section",
                reason: format!("state index {state} unknown or repeated"),
            });
        }
        let records = r.varint("section record count")?;
        let mut input = r.rest();
        let span = match form {
            Stamps::Fixed => {
                let start = block.len() - input.len();
                for _ in 0..records {
                    skip_record(&mut input, shape(state))?;
                }
                start..block.len() - input.len()
            }
            Stamps::Delta => {
                let (start, mut prev) = (rewritten.len(), 0);
                for _ in 0..records {
                    transcode_record(
                        &mut input,
                        shape(state),
                        Stamps::Delta,
                        Stamps::Fixed,
                        &mut prev,
                        &mut rewritten,
                    )?;
                }
                start..rewritten.len()
            }
        };
        parts.push((state, records, span));
        r = ByteReader::new(input);
    }
    let source = match form {
        Stamps::Fixed => block.clone(),
        Stamps::Delta => Bytes::from(rewritten),
    };
    Ok(parts
        .into_iter()
        .map(|(state, records, span)| Section {
            state,
            records,
            bytes: source.slice(span),
        })
        .collect())
}

/// Appends a section header.
pub(crate) fn write_section_header(
    out: &mut Vec<u8>,
    state: usize,
    records: usize,
) -> Result<(), CodecError> {
    write_varint_u32(
        out,
        u32::try_from(state).map_err(|_| CodecError::too_large("state index", state))?,
    );
    write_varint_u32(
        out,
        u32::try_from(records).map_err(|_| CodecError::too_large("section", records))?,
    );
    Ok(())
}

/// Appends length-prefixed bytes.
pub(crate) fn write_bytes(out: &mut Vec<u8>, bytes: &[u8]) -> Result<(), CodecError> {
    let len =
        u32::try_from(bytes.len()).map_err(|_| CodecError::too_large("value", bytes.len()))?;
    write_varint_u32(out, len);
    out.extend_from_slice(bytes);
    Ok(())
}

/// Runs one read on `input` through a [`ByteReader`] and advances `input` past it.
fn read_with<'a, T>(
    input: &mut &'a [u8],
    read: impl FnOnce(&mut ByteReader<'a>) -> Result<T, CodecError>,
) -> Result<T, CodecError> {
    let mut r = ByteReader::new(input);
    let v = read(&mut r)?;
    *input = r.rest();
    Ok(v)
}

/// Reads length-prefixed bytes.
pub(crate) fn read_bytes<'a>(
    input: &mut &'a [u8],
    what: &'static str,
) -> Result<&'a [u8], CodecError> {
    read_with(input, |r| r.len_prefixed(what))
}

/// Reads a stamp.
pub(crate) fn read_stamp(input: &mut &[u8]) -> Result<u64, CodecError> {
    read_with(input, |r| r.u64_be("stamp"))
}

/// Reads a count of items of at least `min_size` bytes each, bounded by the input left.
pub(crate) fn read_count(
    input: &mut &[u8],
    what: &'static str,
    min_size: usize,
) -> Result<usize, CodecError> {
    read_with(input, |r| r.count(what, min_size))
}

/// Skips one record of a state of the given shape without decoding it.
pub(crate) fn skip_record(input: &mut &[u8], shape: RecordShape) -> Result<(), CodecError> {
    walk_record(input, shape, Stamps::Fixed, |input| {
        read_stamp(input).map(drop)
    })
}

/// Walks one record of `shape` at the front of `input`, its stamps in form `stamps`, handing
/// `stamp` the input at each stamp (it must consume the stamp): the one place that knows a
/// record's layout, for skipping and for rewriting stamps alike.
fn walk_record<'a>(
    input: &mut &'a [u8],
    shape: RecordShape,
    stamps: Stamps,
    mut stamp: impl FnMut(&mut &'a [u8]) -> Result<(), CodecError>,
) -> Result<(), CodecError> {
    read_bytes(input, "key")?;
    read_bytes(input, "namespace")?;
    match shape {
        RecordShape::Single => {
            stamp(input)?;
            read_bytes(input, "value")?;
        }
        RecordShape::List => {
            // An element is at least a stamp and a length byte.
            for _ in 0..read_count(input, "list length", stamps.min_len() + 1)? {
                stamp(input)?;
                read_bytes(input, "element")?;
            }
        }
        RecordShape::Map => {
            // An entry is at least a user key's length byte, a stamp and a length byte.
            for _ in 0..read_count(input, "map length", stamps.min_len() + 2)? {
                read_bytes(input, "user key")?;
                stamp(input)?;
                read_bytes(input, "value")?;
            }
        }
    }
    Ok(())
}

/// How a record's stamps are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stamps {
    /// 8 bytes big-endian: the record form engines write and read, and data version 1's.
    Fixed,
    /// Data version 2's: the zigzag LEB128 of the (wrapping) difference from the previous
    /// stamp of the section, or from 0 for its first.
    Delta,
}

impl Stamps {
    /// The stamps of data version `version`.
    pub(crate) fn of_version(version: u16) -> Self {
        if version >= 2 {
            Stamps::Delta
        } else {
            Stamps::Fixed
        }
    }

    /// The fewest bytes a stamp takes.
    fn min_len(self) -> usize {
        match self {
            Stamps::Fixed => 8,
            Stamps::Delta => 1,
        }
    }

    fn read(self, input: &mut &[u8], prev: u64) -> Result<u64, CodecError> {
        Ok(match self {
            Stamps::Fixed => read_stamp(input)?,
            Stamps::Delta => prev.wrapping_add(unzigzag(read_varint_u64(input, "stamp delta")?)),
        })
    }

    fn write(self, out: &mut Vec<u8>, stamp: u64, prev: u64) {
        match self {
            Stamps::Fixed => out.extend_from_slice(&stamp.to_be_bytes()),
            Stamps::Delta => write_varint_u64(out, zigzag(stamp.wrapping_sub(prev))),
        }
    }
}

/// Maps a two's-complement difference to an unsigned number that is small when the difference
/// is near 0 either way (0, -1, 1, -2, … → 0, 1, 2, 3, …).
fn zigzag(d: u64) -> u64 {
    (d << 1) ^ 0u64.wrapping_sub(d >> 63)
}

/// The inverse of [`zigzag`].
fn unzigzag(z: u64) -> u64 {
    (z >> 1) ^ 0u64.wrapping_sub(z & 1)
}

/// Moves one record of `shape` from the front of `input` to `out`, reading its stamps in form
/// `from` and writing them in form `to`; `prev` is the previous stamp of the section (delta
/// form), updated to this record's last.
pub(crate) fn transcode_record(
    input: &mut &[u8],
    shape: RecordShape,
    from: Stamps,
    to: Stamps,
    prev: &mut u64,
    out: &mut Vec<u8>,
) -> Result<(), CodecError> {
    // Everything but the stamps is copied as it is, a span at a time: `span` is where the
    // bytes not yet copied start.
    let mut span = *input;
    walk_record(input, shape, from, |input| {
        let copied = span.len() - input.len();
        out.extend_from_slice(span.get(..copied).unwrap_or_default());
        let stamp = from.read(input, *prev)?;
        to.write(out, stamp, *prev);
        *prev = stamp;
        span = *input;
        Ok(())
    })?;
    let copied = span.len() - input.len();
    out.extend_from_slice(span.get(..copied).unwrap_or_default());
    Ok(())
}

/// The payload shape of a state kind's records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RecordShape {
    /// Value, Reducing, Aggregating.
    Single,
    /// List.
    List,
    /// Map.
    Map,
}

impl RecordShape {
    /// The shape of `kind`'s records.
    pub(crate) fn of(kind: StateKind) -> Self {
        match kind {
            StateKind::List => RecordShape::List,
            StateKind::Map => RecordShape::Map,
            StateKind::Value | StateKind::Reducing | StateKind::Aggregating => RecordShape::Single,
        }
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, reason = "tests index what they built")]
#[allow(clippy::cast_possible_truncation, reason = "small test values")]
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
        assert_eq!(check_header("f", &file).unwrap(), DATA_VERSION);
        assert_eq!(read_block("f", &file, &blocks[0]).unwrap(), raw1);
        assert_eq!(&read_block("f", &file, &blocks[1]).unwrap()[..], b"hello");
        let mut bad = file.clone();
        bad[blocks[1].offset as usize + 2] ^= 1;
        assert!(read_block("f", &bad, &blocks[1]).is_err());
        let mut lying = blocks[0];
        lying.raw_len -= 1; // a frame larger than the recorded length is an error, not a resize
        assert!(read_block("f", &file, &lying).is_err());
        // A claim within zstd's reach but beyond the frame's content: decoded streaming (no
        // allocation of the claim) and refused.
        let mut claims = blocks[1];
        claims.raw_len = claims.len * 1000;
        let err = read_block("f", &file, &claims).unwrap_err();
        assert!(err.to_string().contains("decompressed to 5 bytes"), "{err}");
        // A claim no zstd frame of that size can produce: refused unread.
        claims.raw_len = MAX_RAW_BLOCK;
        let err = read_block("f", &file, &claims).unwrap_err();
        assert!(err.to_string().contains("claims"), "{err}");
        assert_eq!(
            check_header("f", b"KSKG\0\x01").unwrap(),
            1,
            "version 1 is still read"
        );
        assert!(check_header("f", b"KSKG\0\x03").is_err());
        assert!(check_header("f", b"KSKG\0\x00").is_err());
        assert!(check_header("f", b"KS").is_err());
    }

    #[test]
    fn sections_split_and_reject_garbage() {
        let mut raw = Vec::new();
        write_section_header(&mut raw, 1, 2).unwrap();
        for k in [b"a", b"b"] {
            write_bytes(&mut raw, k).unwrap();
            write_bytes(&mut raw, b"").unwrap();
            raw.extend_from_slice(&5u64.to_be_bytes());
            write_bytes(&mut raw, b"v").unwrap();
        }
        // Version 1: the record form as it is.
        let block = Bytes::from(raw.clone());
        let s = sections(&block, 1, 2, |_| RecordShape::Single).unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!((s[0].state, s[0].records), (1, 2));
        assert_eq!(s[0].bytes, raw[2..]);
        assert!(sections(&block, 1, 1, |_| RecordShape::Single).is_err());
        // Version 2: what `GroupBlocks` writes reads back as the same records.
        let mut g = GroupBlocks::default();
        g.section(1, 2, &raw[2..], RecordShape::Single).unwrap();
        let v2 = Bytes::from(g.finish().remove(0));
        assert_eq!(
            v2.len(),
            raw.len() - 2 * 7,
            "an 8-byte stamp 5 is 1 byte, then 0 more"
        );
        let s = sections(&v2, 2, 2, |_| RecordShape::Single).unwrap();
        assert_eq!((s[0].state, s[0].records), (1, 2));
        assert_eq!(s[0].bytes, raw[2..]);
        for (version, raw) in [(1, &raw[..]), (2, &v2[..])] {
            for cut in 0..raw.len() {
                let b = Bytes::copy_from_slice(&raw[..cut]);
                for shape in [RecordShape::Single, RecordShape::List, RecordShape::Map] {
                    let _ = sections(&b, version, 2, |_| shape); // never panics
                }
            }
        }
    }

    #[test]
    fn a_group_splits_over_blocks_at_record_boundaries() {
        let mut records = Vec::new();
        for k in 0..100u32 {
            write_bytes(&mut records, &k.to_be_bytes()).unwrap();
            write_bytes(&mut records, b"").unwrap();
            // Stamps that differ, so a piece that did not restart its deltas would misread.
            records.extend_from_slice(&(1_700_000_000_000 + u64::from(k)).to_be_bytes());
            write_bytes(&mut records, &[1; 20]).unwrap();
        }
        let mut g = GroupBlocks {
            limit: 200,
            blocks: vec![Vec::new()],
        };
        g.section(0, 100, &records, RecordShape::Single).unwrap();
        g.section(1, 100, &records, RecordShape::Single).unwrap();
        let blocks = g.finish();
        assert!(blocks.len() > 10);
        let mut seen = [0u32; 2];
        let mut joined = [Vec::new(), Vec::new()];
        for b in &blocks {
            assert!(b.len() <= 200);
            for s in sections(&Bytes::copy_from_slice(b), DATA_VERSION, 2, |_| {
                RecordShape::Single
            })
            .unwrap()
            {
                seen[s.state] += s.records;
                joined[s.state].extend_from_slice(&s.bytes);
            }
        }
        assert_eq!(seen, [100, 100]);
        assert_eq!(joined[0], records);
        assert_eq!(joined[1], records);
        // A single record larger than a block cannot be split.
        let mut big = Vec::new();
        write_bytes(&mut big, b"k").unwrap();
        write_bytes(&mut big, b"").unwrap();
        big.extend_from_slice(&0u64.to_be_bytes());
        write_bytes(&mut big, &[0; 500]).unwrap();
        let mut g = GroupBlocks {
            limit: 200,
            blocks: vec![Vec::new()],
        };
        assert!(matches!(
            g.section(0, 1, &big, RecordShape::Single),
            Err(CodecError::TooLarge { .. })
        ));
    }

    /// Records of `shape` in the record form, one per `(stamps, bytes)`: a list or map gets one
    /// element or entry per stamp.
    fn records_of(shape: RecordShape, items: &[(Vec<u64>, Vec<u8>)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, (stamps, bytes)) in items.iter().enumerate() {
            write_bytes(&mut out, &(i as u32).to_be_bytes()).unwrap();
            write_bytes(&mut out, b"ns").unwrap();
            match shape {
                RecordShape::Single => {
                    out.extend_from_slice(&stamps[0].to_be_bytes());
                    write_bytes(&mut out, bytes).unwrap();
                }
                RecordShape::List | RecordShape::Map => {
                    write_varint_u32(&mut out, stamps.len() as u32);
                    for (j, stamp) in stamps.iter().enumerate() {
                        if shape == RecordShape::Map {
                            write_bytes(&mut out, &[j as u8]).unwrap();
                        }
                        out.extend_from_slice(&stamp.to_be_bytes());
                        write_bytes(&mut out, bytes).unwrap();
                    }
                }
            }
        }
        out
    }

    #[test]
    fn equal_stamps_cost_a_byte_each() {
        let now = 1_700_000_000_000u64;
        let items: Vec<_> = (0..50).map(|i| (vec![now + i; 10], vec![9; 8])).collect();
        let records = records_of(RecordShape::List, &items);
        let mut g = GroupBlocks::default();
        g.section(0, 50, &records, RecordShape::List).unwrap();
        let block = g.finish().remove(0);
        // 500 stamps: the first costs 6 bytes (from 0), every other 1 (0, or +1 to the
        // next record's first), where version 1 spent 8 on each.
        assert_eq!(block.len(), 2 + records.len() - 500 * 8 + 6 + 499);
    }

    proptest::proptest! {
        #[test]
        fn version_2_sections_read_back_as_written(
            shape in proptest::sample::select(vec![
                RecordShape::Single,
                RecordShape::List,
                RecordShape::Map,
            ]),
            items in proptest::collection::vec(
                (
                    proptest::collection::vec(proptest::num::u64::ANY, 1..4),
                    proptest::collection::vec(proptest::num::u8::ANY, 0..12),
                ),
                1..40,
            ),
            limit in 64usize..400,
        ) {
            let records = records_of(shape, &items);
            let mut g = GroupBlocks { limit, blocks: vec![Vec::new()] };
            match g.section(3, items.len(), &records, shape) {
                Ok(()) => {}
                // A record larger than the (tiny) block: refused whole.
                Err(CodecError::TooLarge { .. }) => return Ok(()),
                Err(e) => panic!("{e}"),
            }
            let mut joined = Vec::new();
            let mut count = 0;
            for b in g.finish() {
                proptest::prop_assert!(b.len() <= limit);
                for s in sections(&Bytes::from(b), 2, 4, |_| shape).unwrap() {
                    proptest::prop_assert_eq!(s.state, 3);
                    count += s.records as usize;
                    joined.extend_from_slice(&s.bytes);
                }
            }
            proptest::prop_assert_eq!(count, items.len());
            proptest::prop_assert_eq!(joined, records);
        }
    }

    #[test]
    fn a_count_that_is_not_the_records_is_refused() {
        let records = records_of(RecordShape::Single, &[(vec![1], vec![2])]);
        let mut g = GroupBlocks::default();
        assert!(g.section(0, 2, &records, RecordShape::Single).is_err());
    }
}
