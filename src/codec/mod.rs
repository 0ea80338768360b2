//! Codecs: how keys, namespaces and values become bytes and back.
//!
//! Every type stored in keyed state implements [`Codec`]. Two encodings exist per type:
//! - the **top-level** encoding (`encode` / `decode`), used when the value owns a whole byte
//!   string (a stored value, a serialized key);
//! - the **nested** encoding (`encode_nested` / `decode_nested`), which is self-delimiting, used
//!   inside tuples, options and composite keys. Fixed-width types write the same bytes in both;
//!   variable-width types prefix a canonical LEB128 length in the nested form.
//!
//! Integers are order-preserving: big-endian, with the sign bit flipped for signed types, so
//! unsigned lexicographic byte order equals numeric order (floats likewise, IEEE total order).
//! Every decoder rejects malformed input with a [`CodecError`]; none panics, and no length read
//! from input allocates more than the input holds.
//!
//! ```
//! use keyed_state::codec::Codec;
//! let mut bytes = Vec::new();
//! (7u32, "seven".to_string()).encode(&mut bytes);
//! assert_eq!(<(u32, String)>::decode(&bytes).unwrap(), (7, "seven".to_string()));
//! assert!(u64::decode(&[1, 2, 3]).is_err());
//! ```

// A decoder of bytes from disk or the network: no indexing that can panic.
#![deny(clippy::indexing_slicing)]

mod primitives;
mod reader;
#[cfg(feature = "serde")]
pub mod serde_support;
mod varint;

pub use reader::ByteReader;
pub use varint::{read_varint_u32, read_varint_u64, write_varint_u32, write_varint_u64};

use crate::error::CodecError;

/// The size of the buffer [`Codec::encode_small`] writes into: encodings up to this long are
/// kept inline in a resolved [`Key`](crate::Key), longer ones spill to the heap.
pub const SMALL_ENCODING_BYTES: usize = 24;

/// A type that can be stored in keyed state: keys, namespaces, values, map keys.
pub trait Codec: Sized {
    /// `Some(n)` when every value encodes to exactly `n` bytes (then the nested form carries no
    /// length prefix).
    const FIXED_LEN: Option<usize> = None;

    /// A stable name of the encoding, persisted with each state's metadata; registering a state
    /// again with a different codec id is an error.
    fn codec_id() -> String;

    /// Appends the top-level encoding of `self` to `out`.
    fn encode(&self, out: &mut Vec<u8>);

    /// Writes the top-level encoding of `self` to the front of `out` and returns its length,
    /// when it fits; `None` when it does not, or when the type has no such path (the default).
    ///
    /// An optional fast path for key resolution: [`Key::new`](crate::Key::new) tries it first,
    /// and a key it serves costs no shared buffer and no copy out of one (a few hundred
    /// instructions less per record for a `u64` key). The RocksDB engine tries it too for the
    /// namespaces, map keys and values of single reads and writes, which then make their
    /// RocksDB key and value on the stack. An implementation must write exactly the bytes
    /// [`encode`](Codec::encode) appends. The integers, `String`, `Vec<u8>` and `Bytes`
    /// implement it.
    ///
    /// ```
    /// use keyed_state::codec::{Codec, SMALL_ENCODING_BYTES};
    /// let mut out = [0u8; SMALL_ENCODING_BYTES];
    /// assert_eq!(7u16.encode_small(&mut out), Some(2));
    /// assert_eq!(&out[..2], &[0, 7]);
    /// assert_eq!("x".repeat(25).encode_small(&mut out), None);
    /// ```
    #[inline]
    fn encode_small(&self, out: &mut [u8; SMALL_ENCODING_BYTES]) -> Option<usize> {
        let _ = out;
        None
    }

    /// The top-level encoding of `self` where it already lies, for a type whose memory holds
    /// exactly those bytes; `None` (the default) for every other type.
    ///
    /// An optional fast path for writes: the RocksDB engine hands these bytes to RocksDB as the
    /// stored value of a state without TTL, with no buffer made and no copy into one (a
    /// 100-byte `Bytes` value costs an allocation, a reallocation and two copies less per
    /// write). An implementation must return exactly the bytes [`encode`](Codec::encode)
    /// appends. `String`, `Vec<u8>` and `Bytes` implement it.
    ///
    /// ```
    /// use keyed_state::codec::Codec;
    /// assert_eq!("abc".to_string().encoded_bytes(), Some(&b"abc"[..]));
    /// assert_eq!(7u64.encoded_bytes(), None); // stored big-endian, not as it lies in memory
    /// ```
    #[inline]
    fn encoded_bytes(&self) -> Option<&[u8]> {
        None
    }

    /// Decodes a value that occupies all of `bytes`.
    ///
    /// # Errors
    ///
    /// [`CodecError`] for bytes that are not a valid encoding: too short,
    /// with trailing bytes, or invalid.
    fn decode(bytes: &[u8]) -> Result<Self, CodecError>;

    /// Appends the self-delimiting encoding of `self` to `out`.
    fn encode_nested(&self, out: &mut Vec<u8>) {
        if Self::FIXED_LEN.is_some() {
            self.encode(out);
        } else {
            let mut body = Vec::new();
            self.encode(&mut body);
            write_len(out, body.len());
            out.extend_from_slice(&body);
        }
    }

    /// Decodes a self-delimiting value from the front of `input` and advances `input` past it.
    ///
    /// # Errors
    ///
    /// [`CodecError`] for bytes that are not a valid encoding: too short,
    /// with trailing bytes, or invalid.
    fn decode_nested(input: &mut &[u8]) -> Result<Self, CodecError> {
        let len = match Self::FIXED_LEN {
            Some(n) => n,
            None => read_varint_u32(input, "length prefix")? as usize,
        };
        let body = take(input, len, "nested value")?;
        Self::decode(body)
    }

    /// Encodes into a fresh vector (convenience).
    fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::FIXED_LEN.unwrap_or(16));
        self.encode(&mut out);
        out
    }
}

/// Writes a nested length prefix.
///
/// # Panics
///
/// For a length above `u32::MAX` (a nested value of 4 GiB or more): the prefix cannot hold it,
/// and writing a wrong one would corrupt state silently. Encoding is infallible by the
/// [`Codec`] contract, so a value that large is refused at its first write.
pub(crate) fn write_len(out: &mut impl Extend<u8>, len: usize) {
    let len = u32::try_from(len)
        .unwrap_or_else(|_| panic!("a nested value of {len} bytes is too large to encode"));
    write_varint_u32(out, len);
}

/// Splits `n` bytes off the front of `input`, or reports how many are missing.
///
/// # Errors
///
/// [`CodecError::UnexpectedEnd`] when fewer than `n` bytes
/// are left.
pub fn take<'a>(
    input: &mut &'a [u8],
    n: usize,
    what: &'static str,
) -> Result<&'a [u8], CodecError> {
    if input.len() < n {
        return Err(CodecError::UnexpectedEnd {
            what,
            needed: n - input.len(),
        });
    }
    let (head, tail) = input.split_at(n);
    *input = tail;
    Ok(head)
}

/// Fails when `rest` is not empty: a top-level value must use all of its bytes.
///
/// # Errors
///
/// [`CodecError::TrailingBytes`] when `rest` is not empty.
pub fn expect_end(rest: &[u8], what: &'static str) -> Result<(), CodecError> {
    if rest.is_empty() {
        Ok(())
    } else {
        Err(CodecError::TrailingBytes {
            what,
            extra: rest.len(),
        })
    }
}
