//! The byte layout of RocksDB keys and values (DESIGN.md §7b describes it byte by byte).
//!
//! Keys: `[key group: 1 byte if M ≤ 128, else 2, big-endian][key part][namespace part]`
//! and, for Map states, `[user-key part]`. A *part* is the top-level codec encoding of the
//! value, preceded by its canonical LEB128 length unless the type has a fixed width. Every
//! part is prefix-free, so a whole key is too: no two different (key, namespace, user key)
//! triples encode to the same bytes or to a prefix of one another, and the prefix of a map's
//! entries, `[group][key][namespace]`, matches that map's entries only.
//!
//! Values: `[8-byte big-endian last access, TTL states only][value]`; a list is a sequence of
//! elements, each `[LEB128 length][8-byte stamp, TTL only][element]`.

// A decoder of bytes from disk or the network: no indexing that can panic.
#![deny(clippy::indexing_slicing)]

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

/// A value made for one write: the stamp and a small value stay on the stack.
pub(crate) type RawValue = StackBytes;

/// The bytes [`write_value`] writes, on the stack when the value has a small encoding
/// ([`Codec::encode_small`]), else in one allocation.
pub(crate) fn encode_value<V: Codec>(ttl: bool, value: &Stamped<V>) -> RawValue {
    let mut small = [0u8; SMALL_ENCODING_BYTES];
    if let Some(encoded) = small_encoding(&value.value, &mut small) {
        let mut out = RawValue::new();
        if ttl {
            out.put(&value.last_access.to_be_bytes());
        }
        out.put(encoded);
        out
    } else {
        let mut bytes = Vec::with_capacity(8 + V::FIXED_LEN.unwrap_or(16));
        write_value(&mut bytes, ttl, value);
        RawValue::from_vec(bytes)
    }
}

/// Splits a stored value into its stamp (0 without TTL) and the value's bytes.
pub(crate) fn split_stamp(bytes: &[u8], ttl: bool) -> Result<(u64, &[u8]), CodecError> {
    if !ttl {
        return Ok((0, bytes));
    }
    let mut input = bytes;
    let stamp = take(&mut input, 8, "TTL stamp")?;
    let mut ts = [0u8; 8];
    ts.copy_from_slice(stamp);
    Ok((u64::from_be_bytes(ts), input))
}

/// Decodes a stored value.
pub(crate) fn read_value<V: Codec>(bytes: &[u8], ttl: bool) -> Result<Stamped<V>, CodecError> {
    let (last_access, body) = split_stamp(bytes, ttl)?;
    Ok(Stamped::new(last_access, V::decode(body)?))
}

/// Appends list elements, each framed as `[LEB128 length][stored value]`.
pub(crate) fn write_elements<E: Codec>(out: &mut Vec<u8>, ttl: bool, elements: &[Stamped<E>]) {
    for e in elements {
        // Encode in place after a one-byte length, the common case; move the body along when
        // the length needs more bytes.
        let start = out.len();
        out.push(0);
        write_value(out, ttl, e);
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
}

/// Iterates the frames of a list value (each a stored value's bytes); stops with an error at
/// the first malformed frame.
pub(crate) fn frames(mut bytes: &[u8]) -> impl Iterator<Item = Result<&[u8], CodecError>> {
    std::iter::from_fn(move || {
        if bytes.is_empty() {
            return None;
        }
        let frame = read_varint_u32(&mut bytes, "list element length").and_then(|len| {
            let len = usize::try_from(len).unwrap_or(usize::MAX);
            take(&mut bytes, len, "list element")
        });
        if frame.is_err() {
            bytes = &[]; // stop after reporting
        }
        Some(frame)
    })
}

/// Decodes a list value.
pub(crate) fn read_elements<E: Codec>(
    bytes: &[u8],
    ttl: bool,
) -> Result<Vec<Stamped<E>>, CodecError> {
    frames(bytes)
        .map(|f| f.and_then(|f| read_value(f, ttl)))
        .collect()
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
            prop_assert_eq!(&*encode_value(ttl, &Stamped::new(stamp, n)), &written[..]);
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

        #[test]
        fn lists_roundtrip_and_garbage_never_panics(elems in proptest::collection::vec((any::<u64>(), ".*"), 0..6), ttl in any::<bool>(),
                                                    garbage in proptest::collection::vec(any::<u8>(), 0..40)) {
            let stamped: Vec<Stamped<String>> = elems.iter().map(|(t, v)| Stamped::new(if ttl { *t } else { 0 }, v.clone())).collect();
            let mut bytes = Vec::new();
            write_elements(&mut bytes, ttl, &stamped);
            prop_assert_eq!(read_elements::<String>(&bytes, ttl).unwrap(), stamped);
            let _ = read_elements::<String>(&garbage, ttl);
            let _ = decode_prefix::<String, u32>(&garbage, 2);
        }
    }

    #[test]
    fn long_list_elements_get_multi_byte_lengths() {
        let elems = vec![
            Stamped::new(7, "x".repeat(300)),
            Stamped::new(8, "y".to_string()),
            Stamped::new(9, "z".repeat(127)),
        ];
        let mut bytes = Vec::new();
        write_elements(&mut bytes, true, &elems);
        assert_eq!(
            &bytes[..2],
            &[0xb4, 0x02],
            "308 = 8-byte stamp + 300 bytes, two LEB128 bytes"
        );
        assert_eq!(read_elements::<String>(&bytes, true).unwrap(), elems);
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
