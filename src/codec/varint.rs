//! Canonical unsigned LEB128 for `u32` (1 to 5 bytes).
//!
//! Canonical means one encoding per number: a non-final byte has its high bit set, and the final
//! byte of a multi-byte encoding is not zero. Decoders reject the other (overlong) forms, so two
//! different byte strings never decode to the same length: composite keys stay unambiguous.

// A decoder of bytes from disk or the network: no indexing that can panic.
#![deny(clippy::indexing_slicing)]

use crate::error::CodecError;

/// Appends `v` in canonical LEB128.
#[expect(
    clippy::cast_possible_truncation,
    reason = "each byte carries the low 7 bits of what is left"
)]
pub fn write_varint_u32(out: &mut Vec<u8>, mut v: u32) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads a canonical LEB128 `u32` from the front of `input`, advancing it.
///
/// # Errors
///
/// [`CodecError`](crate::CodecError) for a truncated, overlong (non-canonical) or overflowing
/// varint.
pub fn read_varint_u32(input: &mut &[u8], what: &'static str) -> Result<u32, CodecError> {
    let mut value: u32 = 0;
    for i in 0..5 {
        let Some((&byte, rest)) = input.split_first() else {
            return Err(CodecError::UnexpectedEnd { what, needed: 1 });
        };
        *input = rest;
        let bits = u32::from(byte & 0x7f);
        if i == 4 && bits > 0x0f {
            return Err(CodecError::Invalid {
                what,
                reason: "varint overflows u32".into(),
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
        reason: "varint longer than 5 bytes".into(),
    })
}

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
    }

    #[test]
    fn rejects_overlong_and_overflowing_forms() {
        assert!(read_varint_u32(&mut &[0x80, 0x00][..], "t").is_err());
        assert!(read_varint_u32(&mut &[0xff, 0xff, 0xff, 0xff, 0x1f][..], "t").is_err());
        assert!(read_varint_u32(&mut &[0xff, 0xff, 0xff, 0xff, 0xff, 0x01][..], "t").is_err());
        assert!(read_varint_u32(&mut &[0x80][..], "t").is_err());
        assert!(read_varint_u32(&mut &[][..], "t").is_err());
    }

    proptest! {
        #[test]
        fn roundtrip(v in any::<u32>(), tail in proptest::collection::vec(any::<u8>(), 0..4)) {
            let mut buf = Vec::new();
            write_varint_u32(&mut buf, v);
            buf.extend_from_slice(&tail);
            let mut input = &buf[..];
            prop_assert_eq!(read_varint_u32(&mut input, "t").unwrap(), v);
            prop_assert_eq!(input, &tail[..]);
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..8)) {
            let _ = read_varint_u32(&mut &bytes[..], "t");
        }
    }
}
