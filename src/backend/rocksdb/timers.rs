//! Timers in RocksDB: one column family per timer service, `timers:<name>`, keys
//! `[key group prefix][domain: 0 event, 1 processing][timestamp u64 BE][timer id]`, empty
//! values. Keys sort by group, domain, timestamp, then id bytes — the same order as the heap
//! store, so both fire ties identically. The head of every (domain, key group) is cached in
//! memory with an ordered index over the heads, as on the heap; only the group whose head moves
//! is read again (one seek, starting at the removed key to skip what was before it).
//!
//! The column family is part of the database, so native checkpoints carry the timers in their
//! SST files, and restore and rescaling (range deletion, ingestion) treat them like state.

use std::collections::BTreeSet;
use std::sync::Arc;

use rocksdb::{ReadOptions, WriteOptions};

use super::DbHandle;
use super::column::Column;
use super::layout::{prefix_successor, write_group};
use crate::backend::TimerStore;
use crate::checkpoint::TimerMeta;
use crate::codec::Codec;
use crate::error::{CodecError, Error, Result};
use crate::key_group::KeyGroupRange;
use crate::types::{GroupTimers, TimerId};

/// The prefix of every timer service's column family.
pub(crate) const TIMER_CF_PREFIX: &str = "timers:";

/// The column family of timer service `name`.
pub(crate) fn timer_cf_name(name: &str) -> String {
    format!("{TIMER_CF_PREFIX}{name}")
}

/// The `default`-column-family key of a timer service's recorded codecs.
pub(crate) fn timer_meta_key(name: &str) -> Vec<u8> {
    [b"meta/timer/".as_slice(), name.as_bytes()].concat()
}

/// A timer service's recorded codecs: version 1, then the codec encoding of `(name, key
/// codec, namespace codec)`.
pub(crate) fn encode_timer_meta(meta: &TimerMeta) -> Vec<u8> {
    let mut out = vec![1];
    (
        meta.name.clone(),
        meta.key_codec.clone(),
        meta.namespace_codec.clone(),
    )
        .encode(&mut out);
    out
}

/// Reads what [`encode_timer_meta`] wrote.
pub(crate) fn decode_timer_meta(bytes: &[u8]) -> Result<TimerMeta, CodecError> {
    let Some((&1, body)) = bytes.split_first() else {
        return Err(CodecError::Invalid {
            what: "timer service metadata",
            reason: "unknown version".into(),
        });
    };
    let (name, key_codec, namespace_codec) = <(String, String, String)>::decode(body)?;
    Ok(TimerMeta {
        name,
        key_codec,
        namespace_codec,
    })
}

/// See the module documentation.
pub(crate) struct RocksTimerStore {
    /// The database and the service's column family, looked up once.
    column: Column,
    cf: String,
    prefix_len: usize,
    range: KeyGroupRange,
    write: WriteOptions,
    /// Per domain, the head of each key group (by index in the range).
    heads: [Vec<Option<(u64, TimerId)>>; 2],
    /// Per domain, the heads ordered: `(timestamp, id, group index)`.
    order: [BTreeSet<(u64, TimerId, usize)>; 2],
    len: [u64; 2],
}

impl RocksTimerStore {
    /// Opens the store over the (existing) column family `cf`, loading heads and counts.
    pub(crate) fn open(
        handle: Arc<DbHandle>,
        cf: String,
        prefix_len: usize,
        range: KeyGroupRange,
        no_wal: bool,
    ) -> Result<Self> {
        let mut write = WriteOptions::default();
        write.disable_wal(no_wal);
        let groups = range.len();
        let mut store = RocksTimerStore {
            column: Column::open(handle, &cf, &cf)?,
            cf,
            prefix_len,
            range,
            write,
            heads: [vec![None; groups], vec![None; groups]],
            order: [BTreeSet::new(), BTreeSet::new()],
            len: [0, 0],
        };
        for domain in 0..2 {
            for index in 0..groups {
                let prefix = store.prefix(domain, index);
                let pending = store.scan(&prefix, &prefix, usize::MAX)?.len();
                store.len[domain] += u64::try_from(pending).unwrap_or(u64::MAX);
                store.reload_head(domain, index, None)?;
            }
        }
        Ok(store)
    }

    fn cf(&self) -> &Arc<rocksdb::BoundColumnFamily<'_>> {
        self.column.cf()
    }

    /// `[group][domain]`.
    fn prefix(&self, domain: usize, index: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.prefix_len + 1);
        // Indexes and domains come from the service, which built them for this range.
        let group = u16::try_from(index)
            .ok()
            .and_then(|i| self.range.start().checked_add(i))
            .filter(|g| self.range.contains(*g));
        assert!(
            group.is_some() && domain < 2,
            "timer index {index} or domain {domain} out of range"
        );
        write_group(&mut out, group.unwrap_or(0), self.prefix_len);
        out.push(u8::from(domain == 1));
        out
    }

    fn key(&self, domain: usize, index: usize, ts: u64, id: &[u8]) -> Vec<u8> {
        let mut out = self.prefix(domain, index);
        out.extend_from_slice(&ts.to_be_bytes());
        out.extend_from_slice(id);
        out
    }

    /// Up to `limit` timers with `prefix`, from key `from` on.
    fn scan(&self, prefix: &[u8], from: &[u8], limit: usize) -> Result<Vec<(u64, TimerId)>> {
        let cf = self.cf();
        let mut read = ReadOptions::default();
        if let Some(upper) = prefix_successor(prefix) {
            read.set_iterate_upper_bound(upper);
        }
        let mut it = self.column.db().raw_iterator_cf_opt(cf, read);
        it.seek(from);
        let mut out = Vec::new();
        while out.len() < limit
            && let Some(key) = it.key()
        {
            let rest = &key[prefix.len()..];
            let (ts, id) = rest.split_first_chunk::<8>().ok_or_else(|| Error::Decode {
                state: self.cf.clone(),
                source: crate::error::CodecError::Invalid {
                    what: "timer key",
                    reason: format!("{} bytes after the prefix", rest.len()),
                },
            })?;
            out.push((u64::from_be_bytes(*ts), TimerId::from_slice(id)));
            it.next();
        }
        it.status()?;
        Ok(out)
    }

    /// Reads group `index`'s head again (from `from`, a key at or before it) and updates the
    /// cache and the ordered index.
    fn reload_head(&mut self, domain: usize, index: usize, from: Option<&[u8]>) -> Result<()> {
        let prefix = self.prefix(domain, index);
        let head = self
            .scan(&prefix, from.unwrap_or(&prefix), 1)?
            .into_iter()
            .next();
        self.set_head(domain, index, head);
        Ok(())
    }

    fn set_head(&mut self, domain: usize, index: usize, head: Option<(u64, TimerId)>) {
        if let Some((ts, id)) = self.heads[domain][index].take() {
            self.order[domain].remove(&(ts, id, index));
        }
        if let Some((ts, id)) = &head {
            self.order[domain].insert((*ts, id.clone(), index));
        }
        self.heads[domain][index] = head;
    }

    fn exists(&self, key: &[u8]) -> Result<bool> {
        Ok(self.column.db().get_pinned_cf(self.cf(), key)?.is_some())
    }
}

impl TimerStore for RocksTimerStore {
    fn add(&mut self, domain: usize, index: usize, ts: u64, id: TimerId) -> Result<bool> {
        let key = self.key(domain, index, ts, &id);
        if self.exists(&key)? {
            return Ok(false);
        }
        self.column
            .db()
            .put_cf_opt(self.cf(), &key, [], &self.write)?;
        self.len[domain] += 1;
        let earlier = self.heads[domain][index]
            .as_ref()
            .is_none_or(|(h, hid)| (ts, &id) < (*h, hid));
        if earlier {
            self.set_head(domain, index, Some((ts, id)));
        }
        Ok(true)
    }

    fn remove(&mut self, domain: usize, index: usize, ts: u64, id: &TimerId) -> Result<bool> {
        let key = self.key(domain, index, ts, id);
        if !self.exists(&key)? {
            return Ok(false);
        }
        self.column
            .db()
            .delete_cf_opt(self.cf(), &key, &self.write)?;
        self.len[domain] -= 1;
        let was_head = self.heads[domain][index]
            .as_ref()
            .is_some_and(|(h, hid)| *h == ts && hid == id);
        if was_head {
            self.reload_head(domain, index, Some(&key))?;
        }
        Ok(true)
    }

    fn peek(&self, domain: usize) -> Option<u64> {
        self.order[domain].first().map(|(ts, _, _)| *ts)
    }

    fn pop_due(&mut self, domain: usize, upto: u64) -> Result<Option<(usize, u64, TimerId)>> {
        let Some((ts, id, index)) = self.order[domain].first().cloned() else {
            return Ok(None);
        };
        if ts > upto {
            return Ok(None);
        }
        let key = self.key(domain, index, ts, &id);
        self.column
            .db()
            .delete_cf_opt(self.cf(), &key, &self.write)?;
        self.len[domain] -= 1;
        self.reload_head(domain, index, Some(&key))?;
        Ok(Some((index, ts, id)))
    }

    fn len(&self, domain: usize) -> u64 {
        self.len[domain]
    }

    fn group(&self, domain: usize, index: usize) -> Result<GroupTimers> {
        let prefix = self.prefix(domain, index);
        // Native checkpoints carry these timers in the engine's files; only a savepoint asks.
        Ok(Arc::new(
            self.scan(&prefix, &prefix, usize::MAX)?
                .into_iter()
                .collect(),
        ))
    }

    fn in_engine_files(&self) -> bool {
        true
    }
}
