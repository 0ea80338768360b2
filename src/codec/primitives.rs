//! [`Codec`] impls for the built-in types.

// A decoder of bytes from disk or the network: no indexing that can panic.
#![deny(clippy::indexing_slicing)]

use bytes::Bytes;

use super::{Codec, SMALL_ENCODING_BYTES, expect_end, read_varint_u32, take, write_len};
use crate::error::CodecError;

fn fixed<const N: usize>(bytes: &[u8], what: &'static str) -> Result<[u8; N], CodecError> {
    match <[u8; N]>::try_from(bytes) {
        Ok(a) => Ok(a),
        Err(_) if bytes.len() < N => Err(CodecError::UnexpectedEnd {
            what,
            needed: N - bytes.len(),
        }),
        Err(_) => Err(CodecError::TrailingBytes {
            what,
            extra: bytes.len() - N,
        }),
    }
}

/// `bytes` copied to the front of `out`, and their length; `None` if they do not fit.
#[inline]
fn small(out: &mut [u8; SMALL_ENCODING_BYTES], bytes: &[u8]) -> Option<usize> {
    out.get_mut(..bytes.len())?.copy_from_slice(bytes);
    Some(bytes.len())
}

macro_rules! unsigned {
    ($($t:ty => $id:literal),*) => {$(
        impl Codec for $t {
            const FIXED_LEN: Option<usize> = Some(size_of::<$t>());
            fn codec_id() -> String { $id.into() }
            #[inline]
            fn encode(&self, out: &mut Vec<u8>) { out.extend_from_slice(&self.to_be_bytes()); }
            #[inline]
            fn encode_small(&self, out: &mut [u8; SMALL_ENCODING_BYTES]) -> Option<usize> {
                small(out, &self.to_be_bytes())
            }
            #[inline]
            fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
                Ok(<$t>::from_be_bytes(fixed(bytes, $id)?))
            }
        }
    )*};
}
unsigned!(u8 => "u8", u16 => "u16", u32 => "u32", u64 => "u64", u128 => "u128");

macro_rules! signed {
    ($($t:ty, $u:ty => $id:literal),*) => {$(
        impl Codec for $t {
            const FIXED_LEN: Option<usize> = Some(size_of::<$t>());
            fn codec_id() -> String { $id.into() }
            #[inline]
            fn encode(&self, out: &mut Vec<u8>) {
                // Flipping the sign bit maps MIN..=MAX onto 0..=UMAX monotonically.
                let flipped = (*self as $u) ^ (1 << (<$u>::BITS - 1));
                out.extend_from_slice(&flipped.to_be_bytes());
            }
            #[inline]
            fn encode_small(&self, out: &mut [u8; SMALL_ENCODING_BYTES]) -> Option<usize> {
                let flipped = (*self as $u) ^ (1 << (<$u>::BITS - 1));
                small(out, &flipped.to_be_bytes())
            }
            #[inline]
            fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
                let raw = <$u>::from_be_bytes(fixed(bytes, $id)?);
                Ok((raw ^ (1 << (<$u>::BITS - 1))) as $t)
            }
        }
    )*};
}
signed!(i8, u8 => "i8", i16, u16 => "i16", i32, u32 => "i32", i64, u64 => "i64", i128, u128 => "i128");

impl Codec for usize {
    const FIXED_LEN: Option<usize> = Some(8);
    fn codec_id() -> String {
        "u64".into() // same bytes as u64 on every platform
    }
    fn encode(&self, out: &mut Vec<u8>) {
        (*self as u64).encode(out)
    }
    fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        usize::try_from(u64::decode(bytes)?).map_err(|_| CodecError::Invalid {
            what: "usize",
            reason: "exceeds this platform's usize".into(),
        })
    }
}

macro_rules! float {
    ($($t:ty, $u:ty => $id:literal),*) => {$(
        impl Codec for $t {
            const FIXED_LEN: Option<usize> = Some(size_of::<$t>());
            fn codec_id() -> String { $id.into() }
            fn encode(&self, out: &mut Vec<u8>) {
                // IEEE 754 total order: negative numbers have all bits flipped, others the sign.
                let bits = self.to_bits();
                let sign = 1 << (<$u>::BITS - 1);
                let key = if bits & sign != 0 { !bits } else { bits | sign };
                out.extend_from_slice(&key.to_be_bytes());
            }
            fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
                let key = <$u>::from_be_bytes(fixed(bytes, $id)?);
                let sign = 1 << (<$u>::BITS - 1);
                let bits = if key & sign != 0 { key & !sign } else { !key };
                Ok(<$t>::from_bits(bits))
            }
        }
    )*};
}
float!(f32, u32 => "f32", f64, u64 => "f64");

impl Codec for bool {
    const FIXED_LEN: Option<usize> = Some(1);
    fn codec_id() -> String {
        "bool".into()
    }
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(u8::from(*self));
    }
    fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        match fixed::<1>(bytes, "bool")? {
            [0] => Ok(false),
            [1] => Ok(true),
            [b] => Err(CodecError::Invalid {
                what: "bool",
                reason: format!("byte {b:#04x}"),
            }),
        }
    }
}

impl Codec for () {
    const FIXED_LEN: Option<usize> = Some(0);
    fn codec_id() -> String {
        "()".into()
    }
    fn encode(&self, _out: &mut Vec<u8>) {}
    fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        expect_end(bytes, "()")
    }
}

/// Variable-length byte-like types: raw bytes at top level, length-prefixed when nested.
macro_rules! byte_like {
    ($t:ty, $id:literal, |$b:ident| $from:expr, |$s:ident| $as_bytes:expr) => {
        impl Codec for $t {
            fn codec_id() -> String {
                $id.into()
            }
            fn encode(&self, out: &mut Vec<u8>) {
                let $s = self;
                out.extend_from_slice($as_bytes);
            }
            #[inline]
            fn encode_small(&self, out: &mut [u8; SMALL_ENCODING_BYTES]) -> Option<usize> {
                let $s = self;
                small(out, $as_bytes)
            }
            #[inline]
            fn encoded_bytes(&self) -> Option<&[u8]> {
                let $s = self;
                Some($as_bytes)
            }
            fn decode($b: &[u8]) -> Result<Self, CodecError> {
                $from
            }
            fn encode_nested(&self, out: &mut Vec<u8>) {
                let $s = self;
                let bytes: &[u8] = $as_bytes;
                write_len(out, bytes.len());
                out.extend_from_slice(bytes);
            }
            fn decode_nested(input: &mut &[u8]) -> Result<Self, CodecError> {
                let len = read_varint_u32(input, $id)? as usize;
                let $b = take(input, len, $id)?;
                $from
            }
        }
    };
}
byte_like!(
    String,
    "string",
    |b| std::str::from_utf8(b)
        .map(str::to_owned)
        .map_err(|e| CodecError::Invalid {
            what: "string",
            reason: e.to_string()
        }),
    |s| s.as_bytes()
);
byte_like!(Vec<u8>, "bytes", |b| Ok(b.to_vec()), |s| s.as_slice());
byte_like!(Bytes, "bytes", |b| Ok(Bytes::copy_from_slice(b)), |s| s
    .as_ref());

impl<T: Codec> Codec for Option<T> {
    fn codec_id() -> String {
        format!("option<{}>", T::codec_id())
    }
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            None => out.push(0),
            Some(v) => {
                out.push(1);
                v.encode(out);
            }
        }
    }
    fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        match bytes.split_first() {
            Some((0, rest)) => expect_end(rest, "option").map(|()| None),
            Some((1, rest)) => T::decode(rest).map(Some),
            Some((tag, _)) => Err(CodecError::Invalid {
                what: "option",
                reason: format!("tag {tag:#04x}"),
            }),
            None => Err(CodecError::UnexpectedEnd {
                what: "option",
                needed: 1,
            }),
        }
    }
    fn encode_nested(&self, out: &mut Vec<u8>) {
        match self {
            None => out.push(0),
            Some(v) => {
                out.push(1);
                v.encode_nested(out);
            }
        }
    }
    fn decode_nested(input: &mut &[u8]) -> Result<Self, CodecError> {
        match take(input, 1, "option")? {
            [0] => Ok(None),
            [1] => T::decode_nested(input).map(Some),
            [tag, ..] => Err(CodecError::Invalid {
                what: "option",
                reason: format!("tag {tag:#04x}"),
            }),
            [] => Err(CodecError::UnexpectedEnd {
                what: "option",
                needed: 1,
            }),
        }
    }
}

#[allow(
    clippy::indexing_slicing,
    reason = "a const fn over a constant slice, bounded by its length"
)]
const fn sum_fixed(lens: &[Option<usize>]) -> Option<usize> {
    let mut total = 0;
    let mut i = 0;
    while i < lens.len() {
        match lens[i] {
            Some(n) => total += n,
            None => return None,
        }
        i += 1;
    }
    Some(total)
}

/// Tuples: every element but the last in its nested form, the last in its top-level form (so a
/// trailing string needs no prefix); nested, every element is nested. Fixed-width tuples of
/// fixed-width elements are order-preserving.
macro_rules! tuple {
    ($($name:ident)+; $last:ident) => {
        impl<$($name: Codec,)+ $last: Codec> Codec for ($($name,)+ $last,) {
            const FIXED_LEN: Option<usize> = sum_fixed(&[$($name::FIXED_LEN,)+ $last::FIXED_LEN]);
            fn codec_id() -> String {
                let parts: Vec<String> = vec![$($name::codec_id(),)+ $last::codec_id()];
                format!("({})", parts.join(","))
            }
            #[allow(non_snake_case)]
            fn encode(&self, out: &mut Vec<u8>) {
                let ($($name,)+ $last,) = self;
                $($name.encode_nested(out);)+
                $last.encode(out);
            }
            #[allow(non_snake_case)]
            fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
                let mut input = bytes;
                $(let $name = $name::decode_nested(&mut input)?;)+
                let $last = $last::decode(input)?;
                Ok(($($name,)+ $last,))
            }
            #[allow(non_snake_case)]
            fn encode_nested(&self, out: &mut Vec<u8>) {
                let ($($name,)+ $last,) = self;
                $($name.encode_nested(out);)+
                $last.encode_nested(out);
            }
            #[allow(non_snake_case)]
            fn decode_nested(input: &mut &[u8]) -> Result<Self, CodecError> {
                $(let $name = $name::decode_nested(input)?;)+
                let $last = $last::decode_nested(input)?;
                Ok(($($name,)+ $last,))
            }
        }
    };
}
tuple!(A; B);
tuple!(A B; C);
tuple!(A B C; D);
tuple!(A B C D; E);
tuple!(A B C D E; F);

#[cfg(test)]
#[allow(clippy::indexing_slicing, reason = "tests index what they built")]
#[allow(clippy::cast_possible_truncation, reason = "small test values")]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn roundtrip<T: Codec + PartialEq + std::fmt::Debug>(v: &T) -> Result<(), TestCaseError> {
        let bytes = v.to_bytes();
        if let Some(n) = T::FIXED_LEN {
            prop_assert_eq!(bytes.len(), n);
        }
        let mut small = [0xEE; SMALL_ENCODING_BYTES];
        if let Some(n) = v.encode_small(&mut small) {
            prop_assert_eq!(&small[..n], &bytes[..]);
        }
        if let Some(lent) = v.encoded_bytes() {
            prop_assert_eq!(lent, &bytes[..]);
        }
        prop_assert_eq!(&T::decode(&bytes)?, v);
        // Nested: self-delimiting, leaves what follows untouched.
        let mut nested = Vec::new();
        v.encode_nested(&mut nested);
        nested.extend_from_slice(&[0xAB, 0xCD]);
        let mut input = &nested[..];
        prop_assert_eq!(&T::decode_nested(&mut input)?, v);
        prop_assert_eq!(input, &[0xAB, 0xCD][..]);
        Ok(())
    }

    fn order<T: Codec + PartialOrd>(a: &T, b: &T) -> Result<(), TestCaseError> {
        let (ea, eb) = (a.to_bytes(), b.to_bytes());
        prop_assert_eq!(a.partial_cmp(b), Some(ea.cmp(&eb)));
        Ok(())
    }

    proptest! {
        #[test]
        fn integers_roundtrip_and_preserve_order(a in any::<i64>(), b in any::<i64>(), c in any::<u32>(), d in any::<u32>(),
                                                  e in any::<i8>(), f in any::<i8>(), g in any::<i128>(), h in any::<i128>()) {
            roundtrip(&a)?; roundtrip(&c)?; roundtrip(&e)?; roundtrip(&g)?;
            order(&a, &b)?; order(&c, &d)?; order(&e, &f)?; order(&g, &h)?;
            order(&(a as u64), &(b as u64))?; order(&(a as i16), &(b as i16))?; order(&(c as u16), &(d as u16))?;
        }

        #[test]
        fn floats_roundtrip_and_preserve_order(a in any::<f64>(), b in any::<f64>(), c in any::<f32>(), d in any::<f32>()) {
            // NaN has no order; the total order is checked on everything else.
            prop_assert_eq!(f64::decode(&a.to_bytes())?.to_bits(), a.to_bits());
            prop_assert_eq!(f32::decode(&c.to_bytes())?.to_bits(), c.to_bits());
            if !(a.is_nan() || b.is_nan() || a == 0.0 && b == 0.0) { order(&a, &b)?; }
            if !(c.is_nan() || d.is_nan() || c == 0.0 && d == 0.0) { order(&c, &d)?; }
        }

        #[test]
        fn composites_roundtrip(s in ".*", v in proptest::collection::vec(any::<u8>(), 0..40), o in any::<Option<u64>>(),
                                n in any::<i32>(), flag in any::<bool>()) {
            roundtrip(&s)?; roundtrip(&v)?; roundtrip(&Bytes::from(v.clone()))?; roundtrip(&o)?; roundtrip(&flag)?;
            roundtrip(&(n, s.clone()))?; roundtrip(&(s.clone(), n))?; roundtrip(&(o, s.clone(), v.clone()))?;
            roundtrip(&Some(s.clone()))?; roundtrip(&(n, flag, o, (), s.clone(), v.clone()))?;
            roundtrip(&Some((s.clone(), Some(v.clone()))))?;
        }

        #[test]
        fn fixed_width_tuples_and_options_preserve_order(a in any::<(u16, i32)>(), b in any::<(u16, i32)>(),
                                                          c in any::<Option<i64>>(), d in any::<Option<i64>>()) {
            order(&a, &b)?;
            order(&c, &d)?;
        }

        #[test]
        fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = u64::decode(&bytes); let _ = i32::decode(&bytes); let _ = bool::decode(&bytes);
            let _ = String::decode(&bytes); let _ = <Option<String>>::decode(&bytes);
            let _ = <(String, u64, Option<Vec<u8>>)>::decode(&bytes); let _ = f64::decode(&bytes);
            let _ = <()>::decode(&bytes); let _ = <(u8, String)>::decode_nested(&mut &bytes[..]);
            let _ = <Option<(String, Bytes)>>::decode_nested(&mut &bytes[..]);
        }

        /// The types with a small-encoding path take it whenever the encoding fits, and only then
        /// (`roundtrip` checks that it writes what `encode` appends).
        #[test]
        fn small_encodings_serve_exactly_what_fits(a in any::<u64>(), b in any::<i32>(), c in any::<i128>(),
                                                   s in ".{0,30}", v in proptest::collection::vec(any::<u8>(), 0..40)) {
            let mut out = [0; SMALL_ENCODING_BYTES];
            prop_assert_eq!(a.encode_small(&mut out), Some(8));
            prop_assert_eq!(b.encode_small(&mut out), Some(4));
            prop_assert_eq!(c.encode_small(&mut out), Some(16));
            let fits = |n: usize| (n <= SMALL_ENCODING_BYTES).then_some(n);
            prop_assert_eq!(s.encode_small(&mut out), fits(s.len()));
            prop_assert_eq!(v.encode_small(&mut out), fits(v.len()));
            prop_assert_eq!(Bytes::from(v.clone()).encode_small(&mut out), fits(v.len()));
            // Types without the path say so.
            prop_assert_eq!(Some(a).encode_small(&mut out), None);
            prop_assert_eq!((b, a).encode_small(&mut out), None);
            roundtrip(&a)?; roundtrip(&b)?; roundtrip(&c)?; roundtrip(&s)?; roundtrip(&v)?;
        }

        /// Nested encodings are prefix-free: two different values never encode so that one
        /// is a prefix of the other (what makes composite keys unambiguous).
        #[test]
        fn nested_encodings_are_prefix_free(a in any::<(Option<String>, Vec<u8>)>(), b in any::<(Option<String>, Vec<u8>)>()) {
            let (mut ea, mut eb) = (Vec::new(), Vec::new());
            a.encode_nested(&mut ea);
            b.encode_nested(&mut eb);
            if a != b {
                prop_assert!(!ea.starts_with(&eb) && !eb.starts_with(&ea));
            }
        }
    }

    #[test]
    fn malformed_input_gives_typed_errors() {
        assert_eq!(
            u64::decode(&[1, 2]),
            Err(CodecError::UnexpectedEnd {
                what: "u64",
                needed: 6
            })
        );
        assert_eq!(
            u16::decode(&[1, 2, 3]),
            Err(CodecError::TrailingBytes {
                what: "u16",
                extra: 1
            })
        );
        assert!(matches!(
            bool::decode(&[2]),
            Err(CodecError::Invalid { .. })
        ));
        assert!(matches!(
            String::decode(&[0xff, 0xfe]),
            Err(CodecError::Invalid { .. })
        ));
        assert!(matches!(
            <Option<u8>>::decode(&[7, 1]),
            Err(CodecError::Invalid { .. })
        ));
        assert!(matches!(
            <Option<u8>>::decode(&[0, 1]),
            Err(CodecError::TrailingBytes { .. })
        ));
        assert!(<()>::decode(&[0]).is_err());
        // A nested length larger than the input is an error, not an allocation.
        assert!(matches!(
            String::decode_nested(&mut &[0xff, 0xff, 0xff, 0xff, 0x0f, b'a'][..]),
            Err(CodecError::UnexpectedEnd { .. })
        ));
    }

    #[test]
    fn codec_ids_name_the_encoding() {
        assert_eq!(<(u64, Option<String>)>::codec_id(), "(u64,option<string>)");
        assert_eq!(<(u64, i32)>::FIXED_LEN, Some(12));
        assert_eq!(<(u64, String)>::FIXED_LEN, None);
        assert_eq!(i64::MIN.to_bytes(), [0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!((-1i32).to_bytes(), [0x7f, 0xff, 0xff, 0xff]);
    }
}
