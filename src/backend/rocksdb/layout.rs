//! The byte layout of RocksDB keys and values (DESIGN.md §7b describes it byte by byte).
//!
//! Keys: `[key group: 1 byte if M ≤ 128, else 2, big-endian][key part][namespace part]`
//! and, for Map states, `[user-key part]`. A *part* is the top-level codec encoding of the
//! value, preceded by its canonical LEB128 length unless the type has a fixed width. Every
//! part is prefix-free, so a whole key is too: no two different (key, namespace, user key)
//! triples encode to the same bytes or to a prefix of one another, and the prefix of a map's
//! entries, `[group][key][namespace]`, matches that map's entries only.
//!
//! Values: `[8-byte big-endian last access, TTL states only][value]`. A list without TTL is a
//! sequence of elements, each `[LEB128 length][element]`; a TTL list is a sequence of runs of
//! elements that share a stamp, `[0][8-byte stamp][LEB128 count][count × [LEB128 length]
//! [element]]`, and reads the per-element stamps written before runs too (§7b).

// A decoder of bytes from disk or the network: no indexing that can panic.
#![deny(clippy::indexing_slicing)]

use std::ops::Deref;

use super::stack_bytes::StackBytes;
use crate::codec::{Codec, SMALL_ENCODING_BYTES, expect_end, read_varint_u32, take, write_len};
use crate::error::CodecError;
use crate::key::Key;
use crate::ttl::Stamped;

/// Bytes of the key-group prefix for `max_parallelism` groups.
pub(crate) fn group_prefix_len(max_parallelism: u32) -> usize {
    if max_parallelism <= 128 { 1 } else { 2 }
}

/// A buffer keys are written to: a `Vec`, or a [`RawKey`] that keeps short keys on the stack.
pub(crate) trait KeyOut: Extend<u8> {
    /// Appends `bytes`.
    fn put(&mut self, bytes: &[u8]);
}

impl KeyOut for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// A key made for one operation, on the stack when short, so a single read or write does not
/// allocate for its key.
pub(crate) type RawKey = StackBytes;

/// Appends the key-group prefix.
pub(crate) fn write_group(out: &mut impl KeyOut, group: u16, prefix_len: usize) {
    let [hi, lo] = group.to_be_bytes();
    if prefix_len == 1 {
        // One byte for M ≤ 128: groups are below 128.
        debug_assert!(hi == 0 && lo < 128, "group {group} in a one-byte prefix");
        out.put(&[lo]);
    } else {
        out.put(&[hi, lo]);
    }
}

/// Reads the key-group prefix.
pub(crate) fn read_group(input: &mut &[u8], prefix_len: usize) -> Result<u16, CodecError> {
    let bytes = take(input, prefix_len, "key group")?;
    match *bytes {
        [g] => Ok(u16::from(g)),
        [hi, lo] => Ok(u16::from_be_bytes([hi, lo])),
        _ => Err(CodecError::Invalid {
            what: "key group",
            reason: format!("{prefix_len}-byte prefix"),
        }),
    }
}

/// Appends a part: the already-encoded top-level bytes of a `T`, length-prefixed unless `T`
/// has a fixed width.
pub(crate) fn write_part<T: Codec>(out: &mut impl KeyOut, encoded: &[u8]) {
    debug_assert!(T::FIXED_LEN.is_none_or(|n| n == encoded.len()));
    if T::FIXED_LEN.is_none() {
        write_len(out, encoded.len());
    }
    out.put(encoded);
}

/// Encodes `value` as a part: through [`Codec::encode_small`] on the stack when the type has
/// that path and the encoding fits, else through a `Vec`.
pub(crate) fn write_value_part<T: Codec>(out: &mut impl KeyOut, value: &T) {
    let mut small = [0u8; SMALL_ENCODING_BYTES];
    if let Some(encoded) = small_encoding(value, &mut small) {
        write_part::<T>(out, encoded);
    } else {
        let mut body = Vec::new();
        value.encode(&mut body);
        write_part::<T>(out, &body);
    }
}

/// `value`'s encoding through [`Codec::encode_small`] into `small`, if the type has that path
/// and the encoding fits; a length beyond the array (a broken `encode_small`) counts as none.
fn small_encoding<'a, T: Codec>(
    value: &T,
    small: &'a mut [u8; SMALL_ENCODING_BYTES],
) -> Option<&'a [u8]> {
    let n = value.encode_small(small)?;
    small.get(..n)
}

/// Splits a part off the front of `input` (its top-level bytes).
pub(crate) fn read_part<'a, T: Codec>(input: &mut &'a [u8]) -> Result<&'a [u8], CodecError> {
    read_part_of_width(input, T::FIXED_LEN)
}

/// Splits a part off `input` knowing only its type's fixed width (`None`: length-prefixed),
/// for code that has no types at hand (savepoints).
pub(crate) fn read_part_of_width<'a>(
    input: &mut &'a [u8],
    fixed: Option<usize>,
) -> Result<&'a [u8], CodecError> {
    let len = match fixed {
        Some(n) => n,
        None => usize::try_from(read_varint_u32(input, "part length")?).unwrap_or(usize::MAX),
    };
    take(input, len, "key part")
}

/// The RocksDB key prefix of (key, namespace): `[group][key part][namespace part]`.
pub(crate) fn key_prefix<K: Codec, N: Codec>(
    out: &mut impl KeyOut,
    prefix_len: usize,
    key: &Key<K>,
    ns: &N,
) {
    write_group(out, key.group(), prefix_len);
    write_part::<K>(out, key.bytes());
    write_value_part(out, ns);
}

/// Decodes `(group, key, namespace)` from the front of a RocksDB key; returns the rest.
pub(crate) fn decode_prefix<K: Codec, N: Codec>(
    raw: &[u8],
    prefix_len: usize,
) -> Result<(u16, K, N, &[u8]), CodecError> {
    let mut input = raw;
    let group = read_group(&mut input, prefix_len)?;
    let key = K::decode(read_part::<K>(&mut input)?)?;
    let ns = N::decode(read_part::<N>(&mut input)?)?;
    Ok((group, key, ns, input))
}

/// The smallest byte string greater than every string starting with `prefix`, or `None` when
/// there is none (all bytes 0xff): the exclusive upper bound of a prefix scan.
pub(crate) fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut bound = prefix.to_vec();
    while let Some(last) = bound.pop() {
        if last < 0xff {
            bound.push(last + 1);
            return Some(bound);
        }
    }
    None
}

/// Appends a stored value: the stamp when the state has TTL, then the value.
pub(crate) fn write_value<V: Codec>(out: &mut Vec<u8>, ttl: bool, value: &Stamped<V>) {
    if ttl {
        out.extend_from_slice(&value.last_access.to_be_bytes());
    }
    value.value.encode(out);
}

/// A value's bytes for one write.
pub(crate) enum RawValue<'a> {
    /// The value's own memory, which is its whole encoding ([`Codec::encoded_bytes`]; no TTL
    /// stamp to put before it).
    Borrowed(&'a [u8]),
    /// Made for the write: on the stack when short.
    Made(StackBytes),
}

impl Deref for RawValue<'_> {
    type Target = [u8];

    #[inline]
    fn deref(&self) -> &[u8] {
        match self {
            RawValue::Borrowed(bytes) => bytes,
            RawValue::Made(bytes) => bytes,
        }
    }
}

impl AsRef<[u8]> for RawValue<'_> {
    #[inline]
    fn as_ref(&self) -> &[u8] {
        self
    }
}

/// The bytes [`write_value`] writes: the value's own when they are all of it (no TTL, and a
/// type whose memory is its encoding), else on the stack when the value has a small encoding
/// ([`Codec::encode_small`]), else in one allocation of the size needed when the type lends
/// its bytes.
pub(crate) fn encode_value<V: Codec>(ttl: bool, value: &Stamped<V>) -> RawValue<'_> {
    let lent = value.value.encoded_bytes();
    if !ttl && let Some(bytes) = lent {
        return RawValue::Borrowed(bytes);
    }
    let mut small = [0u8; SMALL_ENCODING_BYTES];
    if let Some(encoded) = small_encoding(&value.value, &mut small) {
        let mut out = StackBytes::new();
        if ttl {
            out.put(&value.last_access.to_be_bytes());
        }
        out.put(encoded);
        RawValue::Made(out)
    } else {
        let body = lent.map_or(V::FIXED_LEN.unwrap_or(16), <[u8]>::len);
        let mut bytes = Vec::with_capacity(8 + body);
        write_value(&mut bytes, ttl, value);
        RawValue::Made(StackBytes::from_vec(bytes))
    }
}

/// Splits a stored value into its stamp (0 without TTL) and the value's bytes.
pub(crate) fn split_stamp(bytes: &[u8], ttl: bool) -> Result<(u64, &[u8]), CodecError> {
    if !ttl {
        return Ok((0, bytes));
    }
    let mut input = bytes;
    Ok((read_stamp(&mut input)?, input))
}

/// Decodes a stored value.
pub(crate) fn read_value<V: Codec>(bytes: &[u8], ttl: bool) -> Result<Stamped<V>, CodecError> {
    let (last_access, body) = split_stamp(bytes, ttl)?;
    Ok(Stamped::new(last_access, V::decode(body)?))
}

/// The byte that opens a run of a TTL list. A list written before runs starts each element
/// (a *legacy element*, DESIGN.md §7b) with its frame's length, at least 8 (the stamp), so a
/// zero never opened one: old and new items can share a value, as a merge leaves them.
pub(crate) const RUN_MARKER: u8 = 0;

/// Appends list elements. Without TTL each is framed as `[LEB128 length][element]`. With TTL
/// elements are grouped into *runs* of consecutive elements with the same stamp, each
/// `[RUN_MARKER][8-byte big-endian stamp][LEB128 count ≥ 1][count × [LEB128 length][element]]`,
/// so a list written at once (or re-stamped at once) carries one stamp, not one per element.
pub(crate) fn write_elements<E: Codec>(out: &mut Vec<u8>, ttl: bool, elements: &[Stamped<E>]) {
    write_runs(
        out,
        ttl,
        elements,
        |e| e.last_access,
        |out, e| e.value.encode(out),
    );
}

/// [`write_elements`] for elements already encoded: `(stamp, element bytes)`.
pub(crate) fn write_raw_elements(out: &mut Vec<u8>, ttl: bool, elements: &[(u64, &[u8])]) {
    write_runs(
        out,
        ttl,
        elements,
        |&(stamp, _)| stamp,
        |out, &(_, body)| out.extend_from_slice(body),
    );
}

fn write_runs<T>(
    out: &mut Vec<u8>,
    ttl: bool,
    elements: &[T],
    stamp: impl Fn(&T) -> u64,
    mut body: impl FnMut(&mut Vec<u8>, &T),
) {
    if !ttl {
        for e in elements {
            write_frame(out, |out| body(out, e));
        }
        return;
    }
    // A count is a u32: a longer run of equal stamps is split.
    for same in elements.chunk_by(|a, b| stamp(a) == stamp(b)) {
        for run in same.chunks(u32::MAX as usize) {
            let Some(first) = run.first() else { continue };
            out.push(RUN_MARKER);
            out.extend_from_slice(&stamp(first).to_be_bytes());
            write_len(out, run.len());
            for e in run {
                write_frame(out, |out| body(out, e));
            }
        }
    }
}

/// Appends `[LEB128 length][what `body` writes]`.
fn write_frame(out: &mut Vec<u8>, body: impl FnOnce(&mut Vec<u8>)) {
    // Encode in place after a one-byte length, the common case; move the body along when the
    // length needs more bytes.
    let start = out.len();
    out.push(0);
    body(out);
    let len = out.len() - start - 1;
    match (u8::try_from(len), out.get_mut(start)) {
        (Ok(one_byte), Some(slot)) if one_byte < 0x80 => *slot = one_byte,
        _ => {
            let mut prefix = Vec::with_capacity(5);
            write_len(&mut prefix, len);
            out.splice(start..=start, prefix);
        }
    }
}

/// The elements of a stored list, in order, as `(stamp, element bytes)` (stamp 0 without
/// TTL); stops after the first malformed item, which it reports as an error. Reads runs and
/// the per-element stamps written before them alike, and notes whether the list is in the
/// canonical form [`write_elements`] produces ([`is_canonical`](Self::is_canonical)).
pub(crate) struct ListElements<'a> {
    rest: &'a [u8],
    ttl: bool,
    /// The stamp of the current run (of the element returned last).
    stamp: u64,
    /// Elements of the current run still to come.
    left: u32,
    /// Whether an element has been returned.
    started: bool,
    canonical: bool,
}

/// Iterates the elements of a stored list (see [`ListElements`]).
pub(crate) fn list_elements(bytes: &[u8], ttl: bool) -> ListElements<'_> {
    ListElements {
        rest: bytes,
        ttl,
        stamp: 0,
        left: 0,
        started: false,
        canonical: true,
    }
}

impl<'a> ListElements<'a> {
    /// Whether every item read so far is a run, each run's stamp differing from the one before
    /// it: nothing a rewrite could shorten. Meaningful once the iterator is exhausted.
    pub(crate) fn is_canonical(&self) -> bool {
        self.canonical
    }

    /// Splits a `[LEB128 length][bytes]` frame off the front.
    #[inline(always)]
    fn frame(&mut self) -> Result<&'a [u8], CodecError> {
        // A one-byte length, the common case, inline.
        if let Some((&len, rest)) = self.rest.split_first()
            && len < 0x80
            && let Some((body, after)) = rest.split_at_checked(usize::from(len))
        {
            self.rest = after;
            return Ok(body);
        }
        self.long_frame()
    }

    /// [`frame`](Self::frame) past its one-byte case: a longer length, or the input's end.
    #[inline(never)]
    fn long_frame(&mut self) -> Result<&'a [u8], CodecError> {
        self.guard(|input| {
            let len = read_varint_u32(input, "list element length")?;
            take(
                input,
                usize::try_from(len).unwrap_or(usize::MAX),
                "list element",
            )
        })
    }

    /// Runs `read` on the input; on an error, ends the iteration after reporting it.
    fn guard<T>(
        &mut self,
        read: impl FnOnce(&mut &'a [u8]) -> Result<T, CodecError>,
    ) -> Result<T, CodecError> {
        read(&mut self.rest).map_err(|e| self.stop(e))
    }

    /// Ends the iteration (after `e` is reported).
    fn stop(&mut self, e: CodecError) -> CodecError {
        (self.rest, self.left) = (&[], 0);
        e
    }

    /// The first element of a TTL list's next item: a run, or an element written before runs.
    /// Out of line: an element inside a run, and every element without TTL, need none of it.
    #[inline(never)]
    fn item(&mut self) -> Result<(u64, &'a [u8]), CodecError> {
        let (stamp, body) = if self.rest.first() == Some(&RUN_MARKER) {
            let (stamp, count) = self.guard(|input| {
                *input = input.get(1..).unwrap_or_default();
                let stamp = read_stamp(input)?;
                match read_varint_u32(input, "list run length")? {
                    0 => Err(CodecError::Invalid {
                        what: "list run",
                        reason: "a run of no elements".into(),
                    }),
                    count => Ok((stamp, count)),
                }
            })?;
            let body = self.frame()?;
            self.left = count - 1;
            (stamp, body)
        } else {
            // An element of a list written before runs: `[length][stamp][element]`.
            self.canonical = false;
            let mut frame = self.frame()?;
            (read_stamp(&mut frame).map_err(|e| self.stop(e))?, frame)
        };
        if self.started && stamp == self.stamp {
            self.canonical = false; // this run could have joined the one before
        }
        (self.stamp, self.started) = (stamp, true);
        Ok((stamp, body))
    }
}

impl<'a> Iterator for ListElements<'a> {
    type Item = Result<(u64, &'a [u8]), CodecError>;

    // Inlined into the decoding loops: as a call it cost 36 instructions an element of a
    // list of `u64`s, the loop around it 28 more (callgrind, DESIGN.md §9).
    #[inline(always)]
    fn next(&mut self) -> Option<Self::Item> {
        if self.left > 0 {
            self.left -= 1;
            return Some(self.frame().map(|body| (self.stamp, body)));
        }
        if self.rest.is_empty() {
            return None;
        }
        if !self.ttl {
            return Some(self.frame().map(|body| (0, body)));
        }
        Some(self.item())
    }
}

/// Reads an 8-byte big-endian stamp (a `u64`'s codec encoding).
fn read_stamp(input: &mut &[u8]) -> Result<u64, CodecError> {
    u64::decode(take(input, 8, "TTL stamp")?)
}

/// Decodes a list value with its stamps: the form the tests and fuzzers compare with what was
/// written (the engine's reads call [`read_list`] with what they make of each element).
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn read_elements<E: Codec>(
    bytes: &[u8],
    ttl: bool,
) -> Result<Vec<Stamped<E>>, CodecError> {
    read_list(bytes, ttl, Stamped::new)
}

/// Decodes a list value into `make(stamp, element)` per element, in one vector sized once
/// for a type of fixed width: a loop, not a `collect` into a `Result`, which grew the vector
/// by doubling and moved each element's `Result` through its adapter (callgrind, 10 `u64`s:
/// 688 instructions of decoding, 485 of reallocation, DESIGN.md §9).
pub(crate) fn read_list<E: Codec, T>(
    bytes: &[u8],
    ttl: bool,
    make: impl Fn(u64, E) -> T,
) -> Result<Vec<T>, CodecError> {
    let mut out = Vec::with_capacity(list_capacity::<E>(bytes));
    for item in list_elements(bytes, ttl) {
        let (stamp, body) = item?;
        out.push(make(stamp, E::decode(body)?));
    }
    Ok(out)
}

/// At least the number of elements a stored list of `bytes` holds when its type has a fixed
/// width (each takes that many bytes and a length byte, or more), else 0 (the vector grows):
/// a capacity the input justifies, for any bytes.
fn list_capacity<E: Codec>(bytes: &[u8]) -> usize {
    E::FIXED_LEN.map_or(0, |width| bytes.len() / (width + 1))
}

/// The bytes [`write_elements`] writes for the one element of a push, on the stack when its
/// encoding is small ([`Codec::encode_small`]) and its frame's length one byte.
pub(crate) fn encode_element<E: Codec>(ttl: bool, element: &Stamped<E>) -> StackBytes {
    let mut small = [0u8; SMALL_ENCODING_BYTES];
    match small_encoding(&element.value, &mut small) {
        Some(encoded) if encoded.len() < 0x80 => {
            let mut out = StackBytes::new();
            if ttl {
                // A run of one: the marker, the stamp, the count 1 (one LEB128 byte).
                out.put(&[RUN_MARKER]);
                out.put(&element.last_access.to_be_bytes());
                out.put(&[1]);
            }
            out.put(&[u8::try_from(encoded.len()).unwrap_or(0)]);
            out.put(encoded);
            out
        }
        _ => {
            let mut bytes = Vec::new();
            write_elements(&mut bytes, ttl, std::slice::from_ref(element));
            StackBytes::from_vec(bytes)
        }
    }
}

/// Decodes the user key of a map entry from what follows the (key, namespace) prefix.
pub(crate) fn read_user_key<UK: Codec>(mut rest: &[u8]) -> Result<UK, CodecError> {
    let uk = UK::decode(read_part::<UK>(&mut rest)?)?;
    expect_end(rest, "map entry key")?;
    Ok(uk)
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, reason = "tests index what they built")]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn full_key<K: Codec + Clone, N: Codec, UK: Codec>(
        m: u32,
        k: &K,
        ns: &N,
        uk: Option<&UK>,
    ) -> Vec<u8> {
        let key = Key::new(k.clone(), m).unwrap();
        let mut out = Vec::new();
        key_prefix(&mut out, group_prefix_len(m), &key, ns);
        if let Some(uk) = uk {
            write_value_part(&mut out, uk);
        }
        out
    }

    type Triple = (String, Option<Vec<u8>>, String);

    proptest! {
        /// Flink's composite keys are ambiguous when key and namespace are both variable-size
        /// and not length-suffixed; ours never are: different triples never encode to equal
        /// bytes or to a prefix of one another, for 1- and 2-byte group prefixes.
        #[test]
        fn composite_keys_are_unambiguous(a in any::<Triple>(), b in any::<Triple>(), m in prop_oneof![Just(128u32), Just(32768u32)]) {
            let ka = full_key(m, &a.0, &a.1, Some(&a.2));
            let kb = full_key(m, &b.0, &b.1, Some(&b.2));
            if a != b {
                prop_assert!(!ka.starts_with(&kb) && !kb.starts_with(&ka), "{:?} vs {:?}", ka, kb);
            } else {
                prop_assert_eq!(&ka, &kb);
            }
            // A map's prefix scan sees exactly its own entries.
            let pa = full_key::<String, Option<Vec<u8>>, ()>(m, &a.0, &a.1, None);
            prop_assert_eq!(kb.starts_with(&pa), a.0 == b.0 && a.1 == b.1);
        }

        #[test]
        fn fixed_and_unit_parts_are_unambiguous(a in any::<(u64, u32, i16)>(), b in any::<(u64, u32, i16)>()) {
            let ka = full_key(128, &a.0, &a.1, Some(&a.2));
            let kb = full_key(128, &b.0, &b.1, Some(&b.2));
            prop_assert_eq!(ka == kb, a == b);
            let ua = full_key::<u64, (), ()>(128, &a.0, &(), None);
            let ub = full_key::<u64, (), ()>(128, &b.0, &(), None);
            prop_assert_eq!(ua.len(), 9);
            prop_assert_eq!(ua == ub, a.0 == b.0);
        }

        /// Keys made on the stack (`StackBytes`, through `encode_small` where a type has it)
        /// are the bytes the `Vec` path makes, and a part is its type's encoding, length-prefixed
        /// unless fixed-width; a stored value is `write_value`'s bytes either way.
        #[test]
        fn stack_keys_and_values_match_the_vec_path(k in ".{0,40}", ns in any::<(u32, String)>(), uk in any::<Vec<u8>>(), n in any::<u64>(), ttl in any::<bool>(), stamp in any::<u64>()) {
            let m = 128;
            let key = Key::new(k, m).unwrap();
            let mut vec = Vec::new();
            let mut stack = StackBytes::new();
            key_prefix(&mut vec, 1, &key, &ns);
            key_prefix(&mut stack, 1, &key, &ns);
            write_value_part(&mut vec, &uk);
            write_value_part(&mut stack, &uk);
            write_value_part(&mut stack, &n);
            prop_assert_eq!(&stack[..vec.len()], &vec[..]);
            prop_assert_eq!(&stack[vec.len()..], &n.to_be_bytes()[..]);
            let mut reference = Vec::new();
            write_len(&mut reference, uk.len());
            reference.extend_from_slice(&uk);
            prop_assert!(vec.ends_with(&reference));
            for value in [Stamped::new(stamp, uk.clone()), Stamped::new(stamp, n.to_be_bytes().to_vec())] {
                let mut written = Vec::new();
                write_value(&mut written, ttl, &value);
                prop_assert_eq!(&*encode_value(ttl, &value), &written[..]);
            }
            let mut written = Vec::new();
            write_value(&mut written, ttl, &Stamped::new(stamp, n));
            let value = Stamped::new(stamp, n);
            prop_assert_eq!(&*encode_value(ttl, &value), &written[..]);
        }

        #[test]
        fn prefixes_decode_back(k in ".*", ns in any::<(u32, String)>(), m in prop_oneof![Just(128u32), Just(32768u32)]) {
            let key = Key::new(k.clone(), m).unwrap();
            let mut raw = Vec::new();
            key_prefix(&mut raw, group_prefix_len(m), &key, &ns);
            let (g, k2, ns2, rest) = decode_prefix::<String, (u32, String)>(&raw, group_prefix_len(m)).unwrap();
            prop_assert_eq!((g, k2, ns2), (key.group(), k, ns));
            prop_assert!(rest.is_empty());
        }

        /// Lists come back as written, with or without TTL; a TTL list is written in its
        /// canonical form (one run per stretch of equal stamps, so a list written at once
        /// carries one stamp); garbage never panics.
        #[test]
        fn lists_roundtrip_and_garbage_never_panics(elems in proptest::collection::vec((0u64..3, ".*"), 0..8), ttl in any::<bool>(),
                                                    garbage in proptest::collection::vec(any::<u8>(), 0..40)) {
            let stamped: Vec<Stamped<String>> = elems.iter().map(|(t, v)| Stamped::new(if ttl { *t } else { 0 }, v.clone())).collect();
            let mut bytes = Vec::new();
            write_elements(&mut bytes, ttl, &stamped);
            prop_assert_eq!(read_elements::<String>(&bytes, ttl).unwrap(), stamped.clone());
            if ttl {
                let mut elements = list_elements(&bytes, true);
                prop_assert_eq!(elements.by_ref().count(), stamped.len());
                prop_assert!(elements.is_canonical());
                let runs = stamped.chunk_by(|a, b| a.last_access == b.last_access).count();
                let frames: usize = stamped.iter().map(|e| 1 + e.value.len()).sum();
                // Only strings of at most 127 bytes, so one-byte lengths and counts.
                if stamped.iter().all(|e| e.value.len() < 128) && stamped.len() < 128 {
                    prop_assert_eq!(bytes.len(), runs * 10 + frames);
                }
            }
            // The raw writer writes the same bytes.
            let encoded: Vec<(u64, Vec<u8>)> = stamped.iter().map(|e| (e.last_access, e.value.as_bytes().to_vec())).collect();
            let raw: Vec<(u64, &[u8])> = encoded.iter().map(|(t, b)| (*t, &b[..])).collect();
            let mut again = Vec::new();
            write_raw_elements(&mut again, ttl, &raw);
            prop_assert_eq!(&again, &bytes);
            let _ = read_elements::<String>(&garbage, ttl);
            let _ = list_elements(&garbage, ttl).count();
            let _ = decode_prefix::<String, u32>(&garbage, 2);
        }

        /// A push's bytes are what the list writer writes for that one element, whether they
        /// stay on the stack or not; a list of fixed-width elements decodes into a vector
        /// sized once, stamps kept or dropped.
        #[test]
        fn one_element_encodes_as_the_list_writer_does(stamp in any::<u64>(), text in ".{0,200}", n in any::<u64>(), ttl in any::<bool>(),
                                                       numbers in proptest::collection::vec(any::<u64>(), 0..40)) {
            let stamp = if ttl { stamp } else { 0 };
            let text = Stamped::new(stamp, text);
            let mut expected = Vec::new();
            write_elements(&mut expected, ttl, std::slice::from_ref(&text));
            prop_assert_eq!(&*encode_element(ttl, &text), &expected[..]);
            let number = Stamped::new(stamp, n);
            expected.clear();
            write_elements(&mut expected, ttl, std::slice::from_ref(&number));
            prop_assert_eq!(&*encode_element(ttl, &number), &expected[..]);
            let list: Vec<Stamped<u64>> = numbers.iter().map(|&v| Stamped::new(stamp, v)).collect();
            let mut bytes = Vec::new();
            write_elements(&mut bytes, ttl, &list);
            prop_assert!(list_capacity::<u64>(&bytes) >= list.len());
            prop_assert_eq!(read_elements::<u64>(&bytes, ttl).unwrap(), list);
            prop_assert_eq!(read_list(&bytes, ttl, |_, v: u64| v).unwrap(), numbers);
        }

        /// A TTL list written before runs (each element `[length][stamp][element]`), and one
        /// whose merged operands mix those elements with runs, read as the elements in order.
        #[test]
        fn lists_written_before_runs_still_read(old in proptest::collection::vec((any::<u64>(), ".{0,20}"), 0..6),
                                                new in proptest::collection::vec((any::<u64>(), ".{0,20}"), 0..6)) {
            let stamped = |v: &[(u64, String)]| -> Vec<Stamped<String>> { v.iter().map(|(t, s)| Stamped::new(*t, s.clone())).collect() };
            let mut legacy = Vec::new();
            for e in stamped(&old) {
                write_len(&mut legacy, 8 + e.value.len());
                legacy.extend_from_slice(&e.last_access.to_be_bytes());
                legacy.extend_from_slice(e.value.as_bytes());
            }
            let mut runs = Vec::new();
            write_elements(&mut runs, true, &stamped(&new));
            for (bytes, expected) in [
                ([legacy.clone(), runs.clone()].concat(), [stamped(&old), stamped(&new)].concat()),
                ([runs.clone(), legacy.clone()].concat(), [stamped(&new), stamped(&old)].concat()),
            ] {
                prop_assert_eq!(read_elements::<String>(&bytes, true).unwrap(), expected);
                let mut elements = list_elements(&bytes, true);
                elements.by_ref().for_each(drop);
                prop_assert_eq!(elements.is_canonical(), old.is_empty() && bytes == runs);
            }
        }
    }

    #[test]
    fn long_list_elements_get_multi_byte_lengths() {
        let elems = vec![
            Stamped::new(7, "x".repeat(300)),
            Stamped::new(7, "y".to_string()),
            Stamped::new(9, "z".repeat(127)),
        ];
        let mut bytes = Vec::new();
        write_elements(&mut bytes, true, &elems);
        assert_eq!(
            &bytes[..12],
            &[RUN_MARKER, 0, 0, 0, 0, 0, 0, 0, 7, 2, 0xac, 0x02],
            "a run of two elements stamped 7, then 300 in two LEB128 bytes"
        );
        assert_eq!(read_elements::<String>(&bytes, true).unwrap(), elems);
        let mut plain = Vec::new();
        write_elements(&mut plain, false, &elems);
        assert_eq!(&plain[..2], &[0xac, 0x02], "no runs without TTL");
        assert_eq!(
            read_elements::<String>(&plain, false).unwrap(),
            elems
                .iter()
                .map(|e| Stamped::new(0, e.value.clone()))
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_run_of_no_elements_is_an_error() {
        let bytes = [RUN_MARKER, 0, 0, 0, 0, 0, 0, 0, 7, 0];
        assert!(matches!(
            read_elements::<u64>(&bytes, true),
            Err(CodecError::Invalid {
                what: "list run",
                ..
            })
        ));
        let truncated = [RUN_MARKER, 0, 0, 0, 0, 0, 0, 0, 7, 2, 0];
        assert!(
            read_elements::<()>(&truncated, true).is_err(),
            "one of two elements"
        );
        let outcomes: Vec<bool> = list_elements(&truncated, true).map(|e| e.is_ok()).collect();
        assert_eq!(outcomes, [true, false], "the error is the last item");
        let garbage = [5, 1, 2, 0, 0];
        assert_eq!(
            list_elements(&garbage, false).count(),
            1,
            "stops after the error"
        );
    }

    #[test]
    fn prefix_successor_is_the_exclusive_bound() {
        assert_eq!(prefix_successor(&[1, 2]), Some(vec![1, 3]));
        assert_eq!(prefix_successor(&[1, 0xff]), Some(vec![2]));
        assert_eq!(prefix_successor(&[0xff, 0xff]), None);
        assert_eq!(prefix_successor(&[]), None);
    }

    #[test]
    fn group_prefix_is_big_endian() {
        let mut out = Vec::new();
        write_group(&mut out, 0x0102, 2);
        write_group(&mut out, 0x7f, 1);
        assert_eq!(out, [1, 2, 0x7f]);
        let mut input = &out[..];
        assert_eq!(read_group(&mut input, 2).unwrap(), 0x0102);
        assert_eq!(read_group(&mut input, 1).unwrap(), 0x7f);
    }
}
