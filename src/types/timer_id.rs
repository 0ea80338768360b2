//! Timer ids: a timer's key and namespace as bytes, `varint key length | key bytes | namespace
//! bytes` (the top-level codec encodings). The id is what timer stores order ties by and what
//! the timers file and the RocksDB timer column family hold, so its layout is fixed.

// A decoder of bytes from disk or the network: no indexing that can panic.
#![deny(clippy::indexing_slicing)]

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::sync::Arc;

use smallvec::SmallVec;

use crate::codec::{Codec, read_varint_u32, take, write_varint_u32};
use crate::error::CodecError;

/// A timer's key and namespace bytes; inline up to 22 bytes (a `u64` key and a small
/// namespace), so the common timer allocates nothing beyond its set node.
pub type TimerId = SmallVec<[u8; 22]>;

/// One domain's timers of one key group, in order: `(timestamp, id)`. Shared, so a store that
/// keeps its timers in such sets (the heap's) hands a snapshot its own set without copying it,
/// and changes its copy on write afterwards
/// ([`TimerStore::group`](crate::backend::TimerStore::group)).
pub type GroupTimers = Arc<BTreeSet<(u64, TimerId)>>;

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// The id of the timer of key bytes `key_bytes` in namespace `ns`.
pub(crate) fn timer_id<N: Codec>(key_bytes: &[u8], ns: &N) -> TimerId {
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        s.clear();
        ns.encode(&mut s);
        timer_id_from_parts(key_bytes, &s)
    })
}

/// The id of the timer whose key and namespace encode to `key` and `ns`.
///
/// # Panics
///
/// When `key` is longer than `u32::MAX` bytes: keys come from [`Key`](crate::Key), whose bytes
/// a codec produced in memory, and no codec's length prefix can describe such a key.
pub(crate) fn timer_id_from_parts(key: &[u8], ns: &[u8]) -> TimerId {
    let key_len = u32::try_from(key.len()).expect("a key of at most 4 GiB");
    let mut id = TimerId::with_capacity(5 + key.len() + ns.len());
    let mut len = Vec::with_capacity(5);
    write_varint_u32(&mut len, key_len);
    id.extend_from_slice(&len);
    id.extend_from_slice(key);
    id.extend_from_slice(ns);
    id
}

/// Splits an id into key bytes and namespace bytes.
pub(crate) fn split_timer_id(id: &[u8]) -> Result<(&[u8], &[u8]), CodecError> {
    let mut input = id;
    let n = read_varint_u32(&mut input, "timer key length")?;
    let key = take(
        &mut input,
        usize::try_from(n).unwrap_or(usize::MAX),
        "timer key",
    )?;
    Ok((key, input))
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, reason = "tests index what they built")]
mod tests {
    use super::*;

    #[test]
    fn ids_split_back_into_their_parts() {
        let id = timer_id_from_parts(b"alice", &[0, 0, 0, 7]);
        assert_eq!(&id[..], b"\x05alice\x00\x00\x00\x07");
        assert_eq!(
            split_timer_id(&id).unwrap(),
            (&b"alice"[..], &[0, 0, 0, 7][..])
        );
        assert_eq!(timer_id(b"alice", &7u32), id);
        assert!(split_timer_id(b"\x09abc").is_err());
        assert!(split_timer_id(b"").is_err());
    }
}
