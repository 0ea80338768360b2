//! The RocksDB engine's tables: the Value, List and Map contracts over one column family.

use std::marker::PhantomData;
use std::sync::Arc;

use rayon::prelude::*;
use rocksdb::{BoundColumnFamily, ReadOptions, WriteBatch, WriteOptions};

use super::column::Column;
use super::layout::{
    RawKey, decode_prefix, encode_element, encode_value, group_prefix_len, key_prefix, read_list,
    read_user_key, read_value, write_elements, write_group, write_value_part,
};
use super::options::MIN_KEYS_PER_READ_THREAD;
use super::scan::ScanSlot;
use super::{DbHandle, RocksDbOptions, cf_name};
use crate::backend::{Bare, ListPeekFn, ListRef, ListTable, MapTable, ValueTable};
use crate::error::{CodecError, Error, Result};
use crate::key::Key;
use crate::ttl::Stamped;
use crate::types::{EngineConfig, MapKey, Namespace, StateKey, StateMeta, StateValue};

/// The marker of a table's types.
type Types<K, N, X> = PhantomData<fn() -> (K, N, X)>;

/// One state's column family. `X` names the shape: `V` (Value, Reducing, Aggregating),
/// `Vec<E>` (List) or `(UK, UV)` (Map).
pub(crate) struct RocksTable<K, N, X> {
    /// The database and the state's column family, looked up once.
    column: Column,
    config: EngineConfig,
    state: Arc<str>,
    ttl: bool,
    prefix_len: usize,
    write: WriteOptions,
    /// Kept, not made per read: `get_pinned_cf` would allocate RocksDB's read options on
    /// every call.
    read: ReadOptions,
    /// [`RocksDbOptions::batch_read_threads`], at least 1.
    read_threads: usize,
    /// The iterator kept between scans, registered with the engine, which releases it.
    scans: Arc<ScanSlot>,
    /// [`RocksDbOptions::scan_iterator_reuse`].
    reuse_scans: bool,
    _types: Types<K, N, X>,
}

impl<K: StateKey, N: Namespace, X> RocksTable<K, N, X> {
    pub(crate) fn new(
        handle: Arc<DbHandle>,
        config: &EngineConfig,
        meta: &StateMeta,
        options: &RocksDbOptions,
        scans: Arc<ScanSlot>,
    ) -> Result<Self> {
        let mut write = WriteOptions::default();
        write.disable_wal(!options.write_ahead_log());
        Ok(RocksTable {
            column: Column::open(handle, &cf_name(&meta.name), &meta.name)?,
            scans,
            reuse_scans: options.scan_iterator_reuse(),
            config: config.clone(),
            state: meta.name.as_str().into(),
            ttl: meta.ttl.is_some(),
            prefix_len: group_prefix_len(config.max_parallelism()),
            write,
            read: ReadOptions::default(),
            read_threads: options.batch_read_threads().max(1),
            _types: PhantomData,
        })
    }

    fn cf(&self) -> &Arc<BoundColumnFamily<'_>> {
        self.column.cf()
    }

    /// A batched read that RocksDB answered with fewer values than keys.
    fn short_read(&self) -> Error {
        self.decode_err(CodecError::Invalid {
            what: "batched read",
            reason: "RocksDB returned fewer values than keys".into(),
        })
    }

    fn decode_err(&self, source: CodecError) -> Error {
        Error::Decode {
            state: self.state.to_string(),
            source,
        }
    }

    /// The key prefix of (key, ns), after checking the key's group and `max_parallelism`.
    fn prefix(&self, key: &Key<K>, ns: &N) -> Result<RawKey> {
        self.config.group_index(key)?;
        // On the stack when short, else one allocation of about the size needed.
        let mut out = RawKey::with_capacity(self.prefix_len + key.bytes().len() + 8);
        key_prefix(&mut out, self.prefix_len, key, ns);
        Ok(out)
    }

    fn get_raw(&self, raw_key: &[u8]) -> Result<Option<rocksdb::DBPinnableSlice<'_>>> {
        Ok(self
            .column
            .db()
            .get_pinned_cf_opt(self.cf(), raw_key, &self.read)?)
    }

    fn put_raw(&self, raw_key: &[u8], value: &[u8]) -> Result<()> {
        Ok(self
            .column
            .db()
            .put_cf_opt(self.cf(), raw_key, value, &self.write)?)
    }

    fn delete_raw(&self, raw_key: &[u8]) -> Result<()> {
        Ok(self
            .column
            .db()
            .delete_cf_opt(self.cf(), raw_key, &self.write)?)
    }

    /// Reads every raw key in sorted multi-gets (one, or one per part on rayon's pool: see
    /// [`RocksDbOptions::batch_read_threads`]) and decodes each value found with `decode`
    /// (`None`: absent); a key that could not be made keeps its error. Results come back in
    /// the order of `raw_keys`.
    fn multi_get<T: Send>(
        &self,
        raw_keys: Vec<Result<RawKey>>,
        decode: impl Fn(Option<&[u8]>) -> Result<T, CodecError> + Sync,
    ) -> Vec<Result<T>> {
        let cf = self.cf();
        // RocksDB's batched lookup wants its keys sorted; remember where each came from. Each
        // key is sorted by its first 8 bytes as a number, then by all of them: the same order
        // (`sort_head`), with a `memcmp` only between keys that share those 8 bytes.
        let mut sorted: Vec<(u64, &[u8], usize)> = raw_keys
            .iter()
            .enumerate()
            .filter_map(|(i, raw)| raw.as_deref().ok().map(|key| (sort_head(key), key, i)))
            .collect();
        sorted.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(b.1)));
        let read = |part: &[(u64, &[u8], usize)]| -> Vec<Result<T>> {
            let found = self.column.db().batched_multi_get_cf_opt(
                cf,
                part.iter().map(|&(_, key, _)| key),
                true,
                &self.read,
            );
            if found.len() != part.len() {
                // Not in RocksDB's contract; answer the part with errors rather than pair
                // values with the wrong keys.
                return part.iter().map(|_| Err(self.short_read())).collect();
            }
            found
                .into_iter()
                .map(|value| match value {
                    Ok(value) => decode(value.as_deref()).map_err(|e| self.decode_err(e)),
                    Err(e) => Err(e.into()),
                })
                .collect()
        };
        let parts = self
            .read_threads
            .min(sorted.len() / MIN_KEYS_PER_READ_THREAD)
            .max(1);
        // Parts are consecutive runs of the sorted keys, each still sorted, and come back in
        // order, so `found[j]` is the value of `sorted[j]` either way.
        let found: Vec<Result<T>> = if parts == 1 {
            read(&sorted)
        } else {
            sorted
                .par_chunks(sorted.len().div_ceil(parts))
                .flat_map_iter(read)
                .collect()
        };
        debug_assert_eq!(found.len(), sorted.len(), "one answer per key read");
        let mut decoded: Vec<Option<Result<T>>> = (0..raw_keys.len()).map(|_| None).collect();
        for (&(_, _, i), value) in sorted.iter().zip(found) {
            decoded[i] = Some(value);
        }
        raw_keys
            .into_iter()
            .zip(decoded)
            .map(|(raw, value)| {
                raw?;
                value.unwrap_or_else(|| Err(self.short_read()))
            })
            .collect()
    }

    /// Writes one batch: `add(batch, cf, raw_key, payload)` per item, after every key was
    /// made (a key this table does not own fails the call before anything is written).
    fn write_many<P>(
        &self,
        items: impl Iterator<Item = (Result<RawKey>, P)>,
        mut add: impl FnMut(&mut WriteBatch, &Arc<BoundColumnFamily<'_>>, RawKey, P),
    ) -> Result<()> {
        let items = items
            .map(|(raw, payload)| Ok((raw?, payload)))
            .collect::<Result<Vec<_>>>()?;
        let cf = self.cf();
        let mut batch = WriteBatch::default();
        for (raw, payload) in items {
            add(&mut batch, cf, raw, payload);
        }
        Ok(self.column.db().write_opt(batch, &self.write)?)
    }

    /// Calls `visit` with every raw (key, value) starting with `prefix`, in key order, until it
    /// returns `false`. A raw iterator lends each entry where RocksDB holds it (the crate's
    /// `DBIterator` would copy every key and value into two boxes first); the table keeps it
    /// for the next scan (`scan.rs`).
    fn scan(&self, prefix: &[u8], visit: impl FnMut(&[u8], &[u8]) -> Result<bool>) -> Result<()> {
        self.scans.scan(self.cf(), prefix, self.reuse_scans, visit)
    }

    /// Every distinct (key, namespace) in `group` whose value passes `keep`.
    fn keys_of(&self, group: u16, keep: impl Fn(&[u8]) -> bool) -> Result<Vec<(K, N)>> {
        self.config.local_index(group)?;
        let mut prefix = Vec::with_capacity(2);
        write_group(&mut prefix, group, self.prefix_len);
        let mut out: Vec<(K, N)> = Vec::new();
        let mut last: Option<Vec<u8>> = None;
        self.scan(&prefix, |raw, value| {
            let (_, k, ns, rest) =
                decode_prefix::<K, N>(raw, self.prefix_len).map_err(|e| self.decode_err(e))?;
            let head = &raw[..raw.len() - rest.len()];
            // Map entries repeat their (key, namespace) prefix: list it once.
            if keep(value) && last.as_deref() != Some(head) {
                last = Some(head.to_vec());
                out.push((k, ns));
            }
            Ok(true)
        })?;
        Ok(out)
    }
}

/// The first 8 bytes of `key` as a big-endian number, zero-padded when shorter. Ordering keys
/// by it, then by their bytes, is their byte order: where two heads differ, the first byte that
/// differs lies in them (a padding zero only ever differs from a real byte above zero, and the
/// shorter key is then the smaller, as a prefix is); where they agree, the bytes decide.
fn sort_head(key: &[u8]) -> u64 {
    let mut head = [0u8; 8];
    let n = key.len().min(8);
    if let (Some(to), Some(from)) = (head.get_mut(..n), key.get(..n)) {
        to.copy_from_slice(from);
    }
    u64::from_be_bytes(head)
}

impl<K: StateKey, N: Namespace, V: StateValue> ValueTable<K, N, V> for RocksTable<K, N, V> {
    fn get(&self, key: &Key<K>, ns: &N) -> Result<Option<Stamped<V>>> {
        let raw_key = self.prefix(key, ns)?;
        match self.get_raw(&raw_key)? {
            Some(bytes) => read_value(&bytes, self.ttl)
                .map(Some)
                .map_err(|e| self.decode_err(e)),
            None => Ok(None),
        }
    }

    fn put(&self, key: &Key<K>, ns: &N, value: Stamped<V>) -> Result<()> {
        let raw_key = self.prefix(key, ns)?;
        self.put_raw(&raw_key, &encode_value(self.ttl, &value))
    }

    fn get_many(&self, items: &[(&Key<K>, &N)]) -> Vec<Result<Option<Stamped<V>>>> {
        let raw = items
            .iter()
            .map(|&(key, ns)| self.prefix(key, ns))
            .collect();
        self.multi_get(raw, |value| {
            value.map(|bytes| read_value(bytes, self.ttl)).transpose()
        })
    }

    fn put_many(&self, items: Vec<(&Key<K>, &N, Stamped<V>)>) -> Result<()> {
        self.write_many(
            items
                .into_iter()
                .map(|(key, ns, value)| (self.prefix(key, ns), value)),
            |batch, cf, raw, value| batch.put_cf(cf, raw, encode_value(self.ttl, &value)),
        )
    }

    fn remove(&self, key: &Key<K>, ns: &N) -> Result<()> {
        self.delete_raw(&self.prefix(key, ns)?)
    }

    fn keys(&self, group: u16) -> Result<Vec<(K, N)>> {
        self.keys_of(group, |_| true)
    }
}

impl<K: StateKey, N: Namespace, E: StateValue> RocksTable<K, N, Vec<E>> {
    /// The list of (key, ns) decoded into `make(stamp, element)` per element (empty when
    /// absent).
    fn read_list<T>(&self, key: &Key<K>, ns: &N, make: impl Fn(u64, E) -> T) -> Result<Vec<T>> {
        let raw_key = self.prefix(key, ns)?;
        match self.get_raw(&raw_key)? {
            Some(bytes) => read_list(&bytes, self.ttl, make).map_err(|e| self.decode_err(e)),
            None => Ok(Vec::new()),
        }
    }

    /// [`read_list`](Self::read_list) of every pair, in one sorted multi-get.
    fn read_lists<T: Send>(
        &self,
        items: &[(&Key<K>, &N)],
        make: impl Fn(u64, E) -> T + Sync,
    ) -> Vec<Result<Vec<T>>> {
        let raw = items
            .iter()
            .map(|&(key, ns)| self.prefix(key, ns))
            .collect();
        self.multi_get(raw, |value| {
            value.map_or(Ok(Vec::new()), |bytes| read_list(bytes, self.ttl, &make))
        })
    }
}

impl<K: StateKey, N: Namespace, E: StateValue> ListTable<K, N, E> for RocksTable<K, N, Vec<E>> {
    fn get(&self, key: &Key<K>, ns: &N) -> Result<Vec<Stamped<E>>> {
        self.read_list(key, ns, Stamped::new)
    }

    /// The elements decoded straight into the caller's vector, not into stamped ones first.
    fn values(&self, key: &Key<K>, ns: &N) -> Result<Vec<E>> {
        self.read_list(key, ns, |_, element| element)
    }

    /// Without TTL the elements are lent bare, decoded once (no stamps to carry).
    fn peek(&self, key: &Key<K>, ns: &N, read: &mut ListPeekFn<'_, E>) -> Result<()> {
        if self.ttl {
            read(ListRef::Stamped(&self.get(key, ns)?));
        } else {
            read(ListRef::Bare(
                &self.read_list(key, ns, |_, element| Bare(element))?,
            ));
        }
        Ok(())
    }

    fn get_many(&self, items: &[(&Key<K>, &N)]) -> Vec<Result<Vec<Stamped<E>>>> {
        self.read_lists(items, Stamped::new)
    }

    fn get_many_values(&self, items: &[(&Key<K>, &N)]) -> Vec<Result<Vec<E>>> {
        self.read_lists(items, |_, element| element)
    }

    /// One merge of the element's frame, made on the stack when it is small.
    fn push(&self, key: &Key<K>, ns: &N, element: Stamped<E>) -> Result<()> {
        let raw_key = self.prefix(key, ns)?;
        Ok(self.column.db().merge_cf_opt(
            self.cf(),
            &raw_key,
            encode_element(self.ttl, &element),
            &self.write,
        )?)
    }

    fn push_many(&self, items: Vec<(&Key<K>, &N, Stamped<E>)>) -> Result<()> {
        self.write_many(
            items
                .into_iter()
                .map(|(key, ns, element)| (self.prefix(key, ns), element)),
            |batch, cf, raw, element| {
                batch.merge_cf(cf, raw, encode_element(self.ttl, &element));
            },
        )
    }

    fn append(&self, key: &Key<K>, ns: &N, elements: Vec<Stamped<E>>) -> Result<()> {
        if elements.is_empty() {
            return Ok(());
        }
        let raw_key = self.prefix(key, ns)?;
        let mut bytes = Vec::new();
        write_elements(&mut bytes, self.ttl, &elements);
        Ok(self
            .column
            .db()
            .merge_cf_opt(self.cf(), &raw_key, &bytes, &self.write)?)
    }

    fn put(&self, key: &Key<K>, ns: &N, elements: Vec<Stamped<E>>) -> Result<()> {
        let raw_key = self.prefix(key, ns)?;
        if elements.is_empty() {
            return self.delete_raw(&raw_key);
        }
        let mut bytes = Vec::new();
        write_elements(&mut bytes, self.ttl, &elements);
        self.put_raw(&raw_key, &bytes)
    }

    fn remove(&self, key: &Key<K>, ns: &N) -> Result<()> {
        self.delete_raw(&self.prefix(key, ns)?)
    }

    fn keys(&self, group: u16) -> Result<Vec<(K, N)>> {
        // A merge that expired every element leaves an empty value until compaction drops it.
        self.keys_of(group, |value| !value.is_empty())
    }
}

impl<K: StateKey, N: Namespace, UK: MapKey, UV: StateValue> RocksTable<K, N, (UK, UV)> {
    fn entry_key(&self, key: &Key<K>, ns: &N, user_key: &UK) -> Result<RawKey> {
        let mut raw_key = self.prefix(key, ns)?;
        write_value_part(&mut raw_key, user_key);
        Ok(raw_key)
    }
}

impl<K: StateKey, N: Namespace, UK: MapKey, UV: StateValue> MapTable<K, N, UK, UV>
    for RocksTable<K, N, (UK, UV)>
{
    fn get(&self, key: &Key<K>, ns: &N, user_key: &UK) -> Result<Option<Stamped<UV>>> {
        let raw_key = self.entry_key(key, ns, user_key)?;
        match self.get_raw(&raw_key)? {
            Some(bytes) => read_value(&bytes, self.ttl)
                .map(Some)
                .map_err(|e| self.decode_err(e)),
            None => Ok(None),
        }
    }

    fn get_many(&self, items: &[(&Key<K>, &N, &UK)]) -> Vec<Result<Option<Stamped<UV>>>> {
        let raw = items
            .iter()
            .map(|&(key, ns, user_key)| self.entry_key(key, ns, user_key))
            .collect();
        self.multi_get(raw, |value| {
            value.map(|bytes| read_value(bytes, self.ttl)).transpose()
        })
    }

    fn put_many(&self, items: Vec<(&Key<K>, &N, UK, Stamped<UV>)>) -> Result<()> {
        self.write_many(
            items
                .into_iter()
                .map(|(key, ns, user_key, value)| (self.entry_key(key, ns, &user_key), value)),
            |batch, cf, raw, value| batch.put_cf(cf, raw, encode_value(self.ttl, &value)),
        )
    }

    fn put(&self, key: &Key<K>, ns: &N, user_key: UK, value: Stamped<UV>) -> Result<()> {
        let raw_key = self.entry_key(key, ns, &user_key)?;
        self.put_raw(&raw_key, &encode_value(self.ttl, &value))
    }

    fn put_all(&self, key: &Key<K>, ns: &N, entries: Vec<(UK, Stamped<UV>)>) -> Result<()> {
        let prefix = self.prefix(key, ns)?;
        let cf = self.cf();
        let mut batch = WriteBatch::default();
        for (user_key, value) in &entries {
            let mut raw_key = prefix.clone();
            write_value_part(&mut raw_key, user_key);
            batch.put_cf(cf, raw_key, encode_value(self.ttl, value));
        }
        Ok(self.column.db().write_opt(batch, &self.write)?)
    }

    fn remove(&self, key: &Key<K>, ns: &N, user_key: &UK) -> Result<()> {
        self.delete_raw(&self.entry_key(key, ns, user_key)?)
    }

    fn entries(&self, key: &Key<K>, ns: &N) -> Result<Vec<(UK, Stamped<UV>)>> {
        let prefix = self.prefix(key, ns)?;
        let mut out = Vec::new();
        self.scan(&prefix, |raw, value| {
            let user_key =
                read_user_key::<UK>(&raw[prefix.len()..]).map_err(|e| self.decode_err(e))?;
            out.push((
                user_key,
                read_value(value, self.ttl).map_err(|e| self.decode_err(e))?,
            ));
            Ok(true)
        })?;
        Ok(out)
    }

    fn is_empty(&self, key: &Key<K>, ns: &N) -> Result<bool> {
        let prefix = self.prefix(key, ns)?;
        let mut empty = true;
        self.scan(&prefix, |_, _| {
            empty = false;
            Ok(false)
        })?;
        Ok(empty)
    }

    fn clear(&self, key: &Key<K>, ns: &N) -> Result<()> {
        // Point deletions in one batch, not a range deletion: range tombstones in the
        // memtable are fragmented again by every later read, which made a workload clearing
        // many small maps (sessions) spend most of its time in RocksDB's FragmentTombstones.
        let prefix = self.prefix(key, ns)?;
        let mut batch = WriteBatch::default();
        let cf = self.cf();
        self.scan(&prefix, |raw, _| {
            batch.delete_cf(cf, raw);
            Ok(true)
        })?;
        Ok(self.column.db().write_opt(batch, &self.write)?)
    }

    fn keys(&self, group: u16) -> Result<Vec<(K, N)>> {
        self.keys_of(group, |_| true)
    }
}

#[cfg(test)]
mod tests {
    use super::sort_head;
    use proptest::prelude::*;

    proptest! {
        /// Keys ordered by their head, then their bytes, come out in byte order: short keys,
        /// keys with zero bytes and keys sharing their first 8 bytes included.
        #[test]
        fn head_then_bytes_is_byte_order(keys in proptest::collection::vec(
            proptest::collection::vec(prop_oneof![Just(0u8), Just(1u8), Just(0xff), any::<u8>()], 0..12), 0..40)) {
            let mut by_head = keys.clone();
            by_head.sort_by(|a, b| sort_head(a).cmp(&sort_head(b)).then_with(|| a.cmp(b)));
            let mut by_bytes = keys;
            by_bytes.sort();
            prop_assert_eq!(by_head, by_bytes);
        }
    }
}
