//! [`ByteReader`]: the one bounds-checked reader behind every hand-written decoder (the
//! manifest, the canonical key-group blocks, the simulator's job records). Every read checks
//! the bytes left first and fails with a [`CodecError`] naming what was being read; counts are
//! bounded by the bytes left before anything is allocated for them.

// A decoder of bytes from disk or the network: no indexing that can panic.
#![deny(clippy::indexing_slicing)]

use super::{read_varint_u32, take};
use crate::error::CodecError;

/// A cursor over untrusted bytes. No method panics or allocates more than the input holds.
///
/// ```
/// use keyed_state::codec::ByteReader;
/// let mut r = ByteReader::new(&[0, 7, 2, b'h', b'i']);
/// assert_eq!(r.u16_be("version").unwrap(), 7);
/// assert_eq!(r.string("name").unwrap(), "hi");
/// assert!(r.is_empty());
/// assert!(r.u8("more").is_err());
/// ```
#[derive(Debug, Clone, Copy)]
pub struct ByteReader<'a> {
    input: &'a [u8],
}

impl<'a> ByteReader<'a> {
    /// A reader over `input`.
    pub fn new(input: &'a [u8]) -> Self {
        ByteReader { input }
    }

    /// The bytes not read yet.
    pub fn rest(&self) -> &'a [u8] {
        self.input
    }

    /// Whether every byte was read.
    pub fn is_empty(&self) -> bool {
        self.input.is_empty()
    }

    /// How many bytes are left.
    pub fn remaining(&self) -> usize {
        self.input.len()
    }

    /// The next `n` bytes.
    ///
    /// # Errors
    ///
    /// [`CodecError::UnexpectedEnd`] when fewer are left.
    pub fn bytes(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], CodecError> {
        take(&mut self.input, n, what)
    }

    /// The next `N` bytes as an array.
    ///
    /// # Errors
    ///
    /// [`CodecError::UnexpectedEnd`] when fewer are left.
    pub fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], CodecError> {
        let mut a = [0; N];
        a.copy_from_slice(self.bytes(N, what)?);
        Ok(a)
    }

    /// One byte.
    ///
    /// # Errors
    ///
    /// [`CodecError::UnexpectedEnd`] at the end.
    pub fn u8(&mut self, what: &'static str) -> Result<u8, CodecError> {
        Ok(u8::from_be_bytes(self.array(what)?))
    }

    /// A big-endian `u16`.
    ///
    /// # Errors
    ///
    /// [`CodecError::UnexpectedEnd`] when fewer than 2 bytes are left.
    pub fn u16_be(&mut self, what: &'static str) -> Result<u16, CodecError> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }

    /// A big-endian `u32`.
    ///
    /// # Errors
    ///
    /// [`CodecError::UnexpectedEnd`] when fewer than 4 bytes are left.
    pub fn u32_be(&mut self, what: &'static str) -> Result<u32, CodecError> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }

    /// A big-endian `u64`.
    ///
    /// # Errors
    ///
    /// [`CodecError::UnexpectedEnd`] when fewer than 8 bytes are left.
    pub fn u64_be(&mut self, what: &'static str) -> Result<u64, CodecError> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }

    /// A little-endian `u32`.
    ///
    /// # Errors
    ///
    /// [`CodecError::UnexpectedEnd`] when fewer than 4 bytes are left.
    pub fn u32_le(&mut self, what: &'static str) -> Result<u32, CodecError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    /// A little-endian `u64`.
    ///
    /// # Errors
    ///
    /// [`CodecError::UnexpectedEnd`] when fewer than 8 bytes are left.
    pub fn u64_le(&mut self, what: &'static str) -> Result<u64, CodecError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A canonical LEB128 `u32` ([`read_varint_u32`]).
    ///
    /// # Errors
    ///
    /// A [`CodecError`] for a truncated, overlong or overflowing varint.
    pub fn varint(&mut self, what: &'static str) -> Result<u32, CodecError> {
        read_varint_u32(&mut self.input, what)
    }

    /// A count of items that take at least `min_size` bytes each (`count` read by `read`),
    /// refused when that many cannot fit in the bytes left: a corrupt count never makes the
    /// caller allocate.
    ///
    /// # Errors
    ///
    /// The error of `read`, or [`CodecError::Invalid`] for a count the input cannot hold.
    pub fn bounded(
        &mut self,
        count: u64,
        what: &'static str,
        min_size: usize,
    ) -> Result<usize, CodecError> {
        let n = usize::try_from(count).unwrap_or(usize::MAX);
        if n.saturating_mul(min_size.max(1)) > self.input.len() {
            return Err(CodecError::Invalid {
                what,
                reason: format!("{count} exceeds the {} bytes left", self.input.len()),
            });
        }
        Ok(n)
    }

    /// A varint count of items of at least `min_size` bytes each, bounded by the bytes left
    /// (see [`bounded`](Self::bounded)).
    ///
    /// # Errors
    ///
    /// As [`varint`](Self::varint) and [`bounded`](Self::bounded).
    pub fn count(&mut self, what: &'static str, min_size: usize) -> Result<usize, CodecError> {
        let n = self.varint(what)?;
        self.bounded(u64::from(n), what, min_size)
    }

    /// Varint-length-prefixed bytes.
    ///
    /// # Errors
    ///
    /// As [`count`](Self::count), or [`CodecError::UnexpectedEnd`].
    pub fn len_prefixed(&mut self, what: &'static str) -> Result<&'a [u8], CodecError> {
        let n = self.count(what, 1)?;
        self.bytes(n, what)
    }

    /// A varint-length-prefixed UTF-8 string.
    ///
    /// # Errors
    ///
    /// As [`len_prefixed`](Self::len_prefixed), or [`CodecError::Invalid`] for bytes that are
    /// not UTF-8.
    pub fn string(&mut self, what: &'static str) -> Result<String, CodecError> {
        let raw = self.len_prefixed(what)?;
        String::from_utf8(raw.to_vec()).map_err(|_| CodecError::Invalid {
            what,
            reason: "not UTF-8".into(),
        })
    }

    /// Fails unless every byte was read.
    ///
    /// # Errors
    ///
    /// [`CodecError::TrailingBytes`].
    pub fn finish(self, what: &'static str) -> Result<(), CodecError> {
        super::expect_end(self.input, what)
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, reason = "tests index what they built")]
mod tests {
    use super::*;

    #[test]
    fn reads_are_bounded_and_never_panic() {
        let bytes = [
            0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 3, b'a', b'b', b'c',
        ];
        let mut r = ByteReader::new(&bytes);
        assert_eq!(r.u32_be("a").unwrap(), 0x1234_5678);
        assert_eq!(r.u32_le("b").unwrap(), 0xf0de_bc9a);
        assert_eq!(r.len_prefixed("c").unwrap(), b"abc");
        assert!(r.is_empty());
        assert!(matches!(
            r.u64_be("d"),
            Err(CodecError::UnexpectedEnd { needed: 8, .. })
        ));
        // A count larger than the input can hold is refused before any allocation.
        let mut r = ByteReader::new(&[0xff, 0xff, 0xff, 0xff, 0x0f, 1, 2]);
        assert!(matches!(r.count("n", 1), Err(CodecError::Invalid { .. })));
        assert!(ByteReader::new(&[1]).finish("x").is_err());
        for cut in 0..bytes.len() {
            let mut r = ByteReader::new(&bytes[..cut]);
            let _ = r.u64_le("x").and_then(|_| r.string("y")); // never panics
        }
    }
}
