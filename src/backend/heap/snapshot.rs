//! Heap snapshots: the canonical key-group format (`checkpoint/format/blocks.rs`) written from
//! frozen copy-on-write tables in the background, and read back per key group on restore.
//!
//! Restore is lazy in types: the engine does not know a state's Rust types until the state is
//! registered again, so restored records wait, per state and key group, as slices of the
//! decompressed blocks ([`Restored`]); registration decodes them into the new table. A state
//! that is restored but not registered again is written to the next snapshot unchanged, so a
//! job that registers its states lazily loses nothing.

// A decoder of bytes from disk or the network: no indexing that can panic.
#![deny(clippy::indexing_slicing)]

use std::cell::RefCell;
use std::collections::BTreeMap;

use smallvec::{Array, SmallVec};

use super::table::{Bare, MapEntries};
use crate::backend::{SnapshotOutput, SnapshotUpload};
use crate::checkpoint::format::blocks::{
    GroupBlocks, Order, RecordShape, build_parallel, read_bytes, read_count, read_stamp,
    write_bytes,
};
use crate::checkpoint::format::canonical::RestoredGroup;
use crate::checkpoint::{CheckpointStore, FileRole, SnapshotKind};
use crate::codec::{Codec, write_varint_u32};
use crate::error::{CodecError, Result};
use crate::key_group::KeyGroupRange;
use crate::ttl::{Stamped, is_expired};
use crate::types::{MapKey, StateMeta, StateValue};

/// The data file of a heap checkpoint (or savepoint) inside `chk-<id>/`.
pub(crate) const DATA_FILE: &str = "state-data";

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Appends `value`'s top-level encoding, length-prefixed.
pub(crate) fn write_encoded<T: Codec>(out: &mut Vec<u8>, value: &T) -> Result<(), CodecError> {
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        s.clear();
        value.encode(&mut s);
        write_bytes(out, &s)
    })
}

/// Appends a varint count of list elements or map entries.
fn write_count(out: &mut Vec<u8>, n: usize, what: &'static str) -> Result<(), CodecError> {
    write_varint_u32(
        out,
        u32::try_from(n).map_err(|_| CodecError::too_large(what, n))?,
    );
    Ok(())
}

/// One stored value or element in the canonical form `stamp | bytes`.
pub(crate) trait Element: Sized {
    fn stamp(&self) -> u64;
    fn write(&self, out: &mut Vec<u8>) -> Result<(), CodecError>;
    fn read(input: &mut &[u8]) -> Result<Self, CodecError>;
}

impl<V: StateValue> Element for Stamped<V> {
    fn stamp(&self) -> u64 {
        self.last_access
    }
    fn write(&self, out: &mut Vec<u8>) -> Result<(), CodecError> {
        out.extend_from_slice(&self.last_access.to_be_bytes());
        write_encoded(out, &self.value)
    }
    fn read(input: &mut &[u8]) -> Result<Self, CodecError> {
        let stamp = read_stamp(input)?;
        Ok(Stamped::new(stamp, V::decode(read_bytes(input, "value")?)?))
    }
}

impl<V: StateValue> Element for Bare<V> {
    fn stamp(&self) -> u64 {
        0
    }
    fn write(&self, out: &mut Vec<u8>) -> Result<(), CodecError> {
        out.extend_from_slice(&0u64.to_be_bytes());
        write_encoded(out, &self.0)
    }
    fn read(input: &mut &[u8]) -> Result<Self, CodecError> {
        read_stamp(input)?; // states without TTL carry no stamp that matters
        Ok(Bare(V::decode(read_bytes(input, "value")?)?))
    }
}

fn live(stamp: u64, ttl: Option<u64>, now: u64) -> bool {
    ttl.is_none_or(|ttl| !is_expired(stamp, ttl, now))
}

/// A stored state shape (value, list or map) in its canonical payload form.
pub(crate) trait Canonical: Sized {
    /// Appends the payload of the live part; `false` (and nothing appended) when nothing is
    /// live, so expired entries are not written.
    fn write_live(&self, ttl: Option<u64>, now: u64, out: &mut Vec<u8>)
    -> Result<bool, CodecError>;
    /// Reads a payload.
    fn read(input: &mut &[u8]) -> Result<Self, CodecError>;
}

macro_rules! single {
    ($ty:ident) => {
        impl<V: StateValue> Canonical for $ty<V> {
            fn write_live(
                &self,
                ttl: Option<u64>,
                now: u64,
                out: &mut Vec<u8>,
            ) -> Result<bool, CodecError> {
                if !live(self.stamp(), ttl, now) {
                    return Ok(false);
                }
                self.write(out)?;
                Ok(true)
            }
            fn read(input: &mut &[u8]) -> Result<Self, CodecError> {
                <Self as Element>::read(input)
            }
        }
    };
}
single!(Stamped);
single!(Bare);

impl<P: Element, A: Array<Item = P>> Canonical for SmallVec<A> {
    fn write_live(
        &self,
        ttl: Option<u64>,
        now: u64,
        out: &mut Vec<u8>,
    ) -> Result<bool, CodecError> {
        let n = self.iter().filter(|e| live(e.stamp(), ttl, now)).count();
        if n == 0 {
            return Ok(false);
        }
        write_count(out, n, "list")?;
        for e in self.iter().filter(|e| live(e.stamp(), ttl, now)) {
            e.write(out)?;
        }
        Ok(true)
    }
    fn read(input: &mut &[u8]) -> Result<Self, CodecError> {
        let n = read_count(input, "list length", 9)?;
        let list = (0..n)
            .map(|_| P::read(input))
            .collect::<Result<SmallVec<A>, _>>()?;
        if list.is_empty() {
            return Err(CodecError::Invalid {
                what: "list",
                reason: "an empty list is never stored".into(),
            });
        }
        Ok(list)
    }
}

impl<UK: MapKey, P: Element, A: Array<Item = (UK, P)>> Canonical for MapEntries<UK, P, A> {
    fn write_live(
        &self,
        ttl: Option<u64>,
        now: u64,
        out: &mut Vec<u8>,
    ) -> Result<bool, CodecError> {
        let n = self.values().filter(|e| live(e.stamp(), ttl, now)).count();
        if n == 0 {
            return Ok(false);
        }
        write_count(out, n, "map")?;
        for (k, v) in self.iter().filter(|(_, e)| live(e.stamp(), ttl, now)) {
            write_encoded(out, k)?;
            v.write(out)?;
        }
        Ok(true)
    }
    fn read(input: &mut &[u8]) -> Result<Self, CodecError> {
        let n = read_count(input, "map length", 10)?;
        let mut map = MapEntries::with_capacity(n);
        for _ in 0..n {
            let k = UK::decode(read_bytes(input, "user key")?)?;
            let v = P::read(input)?;
            if map.insert(k, v).is_some() {
                return Err(CodecError::Invalid {
                    what: "map",
                    reason: "a user key appears twice".into(),
                });
            }
        }
        if map.is_empty() {
            return Err(CodecError::Invalid {
                what: "map",
                reason: "an empty map is never stored".into(),
            });
        }
        Ok(map)
    }
}

/// A table frozen by a snapshot's synchronous part.
pub(crate) trait FrozenState: Send + Sync {
    /// Appends the canonical records of the live entries of the key group at `index` in the
    /// range; returns how many.
    fn write_group(&self, index: usize, now: u64, out: &mut Vec<u8>) -> Result<usize, CodecError>;
}

/// One state in a heap snapshot.
pub(crate) enum Source {
    Live(Box<dyn FrozenState>),
    Restored(BTreeMap<u16, RestoredGroup>),
}

/// The background part of a heap snapshot.
pub(crate) struct HeapUpload {
    pub(crate) range: KeyGroupRange,
    pub(crate) now: u64,
    pub(crate) savepoint: bool,
    /// Sorted by name; the index is the section's state index.
    pub(crate) states: Vec<(StateMeta, Source)>,
}

impl HeapUpload {
    /// The raw block of the key group at `index` in the range (empty when it holds no state).
    fn raw_block(&self, index: usize, group: u16) -> Result<GroupBlocks, CodecError> {
        let (mut blocks, mut records) = (GroupBlocks::default(), Vec::new());
        for (state, (meta, source)) in self.states.iter().enumerate() {
            records.clear();
            let n = match source {
                Source::Live(frozen) => frozen.write_group(index, self.now, &mut records)?,
                Source::Restored(groups) => groups.get(&group).map_or(0, |g| {
                    records.extend_from_slice(&g.bytes);
                    // A u32 count widens losslessly on every platform this crate builds for.
                    usize::try_from(g.records).unwrap_or(usize::MAX)
                }),
            };
            blocks.section(state, n, &records, RecordShape::of(meta.kind), Order::Key)?;
        }
        Ok(blocks)
    }
}

impl SnapshotUpload for HeapUpload {
    fn upload(self: Box<Self>, store: &CheckpointStore, id: u64) -> Result<SnapshotOutput> {
        let data = build_parallel(self.range, |index, group| self.raw_block(index, group))?;
        let file = store.put_data_file(id, DATA_FILE, FileRole::KeyGroupData, data)?;
        Ok(SnapshotOutput {
            kind: if self.savepoint {
                SnapshotKind::Savepoint
            } else {
                SnapshotKind::Full
            },
            states: self.states.into_iter().map(|(m, _)| m).collect(),
            uploaded_bytes: file.size,
            files: vec![file],
        })
    }
}
