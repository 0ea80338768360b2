//! Canonical unsigned LEB128 for `u32` (1 to 5 bytes) and `u64` (1 to 10 bytes).
//!
//! Canonical means one encoding per number: a non-final byte has its high bit set, and the final
//! byte of a multi-byte encoding is not zero. Decoders reject the other (overlong) forms, so two
//! different byte strings never decode to the same length: composite keys stay unambiguous.

// A decoder of bytes from disk or the network: no indexing that can panic.
#![deny(clippy::indexing_slicing)]

use crate::error::CodecError;

macro_rules! varint {
    ($write:ident, $read:ident, $t:ty, $max_bytes:literal, $last_bits:literal) => {
        #[doc = concat!("Appends `v` (a `", stringify!($t), "`) in canonical LEB128 to `out` (a `Vec<u8>`, or any other byte sink).")]
        #[expect(
            clippy::cast_possible_truncation,
            reason = "each byte carries the low 7 bits of what is left"
        )]
        pub fn $write(out: &mut impl Extend<u8>, mut v: $t) {
            while v >= 0x80 {
                out.extend([(v as u8) | 0x80]);
                v >>= 7;
            }
            out.extend([v as u8]);
        }

        #[doc = concat!("Reads a canonical LEB128 `", stringify!($t), "` from the front of `input`, advancing it.")]
        ///
        /// # Errors
        ///
        /// [`CodecError`](crate::CodecError) for a truncated, overlong (non-canonical) or
        /// overflowing varint.
        pub fn $read(input: &mut &[u8], what: &'static str) -> Result<$t, CodecError> {
            let mut value: $t = 0;
            for i in 0..$max_bytes {
                let Some((&byte, rest)) = input.split_first() else {
                    return Err(CodecError::UnexpectedEnd { what, needed: 1 });
                };
                *input = rest;
                let bits = <$t>::from(byte & 0x7f);
                // The last byte holds only the bits the type has left.
                if i == $max_bytes - 1 && bits > $last_bits {
                    return Err(CodecError::Invalid {
                        what,
                        reason: concat!("varint overflows ", stringify!($t)).into(),
                    });
                }
                value |= bits << (7 * i);
                if byte & 0x80 == 0 {
                    if i > 0 && byte == 0 {
                        return Err(CodecError::Invalid {
                            what,
                            reason: "overlong varint".into(),
                        });
                    }
                    return Ok(value);
                }
            }
            Err(CodecError::Invalid {
                what,
                reason: concat!("varint longer than ", $max_bytes, " bytes").into(),
            })
        }
    };
}

varint!(write_varint_u32, read_varint_u32, u32, 5, 0x0f);
varint!(write_varint_u64, read_varint_u64, u64, 10, 0x01);

#[cfg(test)]
#[allow(clippy::indexing_slicing, reason = "tests index what they built")]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_encodings() {
        let enc = |v| {
            let mut o = Vec::new();
            write_varint_u32(&mut o, v);
            o
        };
        assert_eq!(enc(0), [0]);
        assert_eq!(enc(127), [0x7f]);
        assert_eq!(enc(128), [0x80, 0x01]);
        assert_eq!(enc(u32::MAX), [0xff, 0xff, 0xff, 0xff, 0x0f]);
        let mut o = Vec::new();
        write_varint_u64(&mut o, u64::MAX);
        assert_eq!(
            o,
            [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]
        );
        assert_eq!(read_varint_u64(&mut &o[..], "t").unwrap(), u64::MAX);
    }

    #[test]
    fn rejects_overlong_and_overflowing_forms() {
        assert!(read_varint_u32(&mut &[0x80, 0x00][..], "t").is_err());
        assert!(read_varint_u32(&mut &[0xff, 0xff, 0xff, 0xff, 0x1f][..], "t").is_err());
        assert!(read_varint_u32(&mut &[0xff, 0xff, 0xff, 0xff, 0xff, 0x01][..], "t").is_err());
        assert!(read_varint_u32(&mut &[0x80][..], "t").is_err());
        assert!(read_varint_u32(&mut &[][..], "t").is_err());
        let mut over = vec![0xff; 9];
        over.push(0x02); // bit 64
        assert!(read_varint_u64(&mut &over[..], "t").is_err());
        let mut long = vec![0xff; 10];
        long.push(0x01);
        assert!(read_varint_u64(&mut &long[..], "t").is_err());
        assert!(read_varint_u64(&mut &[0x80, 0x00][..], "t").is_err());
    }

    /// `v` written then read back, with `tail` after it: the same value, and `tail` left.
    fn roundtrips<T: PartialEq + std::fmt::Debug + Copy>(
        write: fn(&mut Vec<u8>, T),
        read: fn(&mut &[u8], &'static str) -> Result<T, CodecError>,
        v: T,
        tail: &[u8],
    ) -> Result<(), TestCaseError> {
        let mut buf = Vec::new();
        write(&mut buf, v);
        buf.extend_from_slice(tail);
        let mut input = &buf[..];
        prop_assert_eq!(read(&mut input, "t").unwrap(), v);
        prop_assert_eq!(input, tail);
        Ok(())
    }

    proptest! {
        #[test]
        fn roundtrip(
            v32 in any::<u32>(),
            v64 in any::<u64>(),
            tail in proptest::collection::vec(any::<u8>(), 0..4),
        ) {
            roundtrips(write_varint_u32, read_varint_u32, v32, &tail)?;
            roundtrips(write_varint_u64, read_varint_u64, v64, &tail)?;
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..8)) {
            let _ = read_varint_u32(&mut &bytes[..], "t");
            let _ = read_varint_u64(&mut &bytes[..], "t");
        }
    }
}
