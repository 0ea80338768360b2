//! A [`Codec`](super::Codec) for user types through serde, in the `postcard` format
//! (compact, with a stable, documented wire format). Enabled by the `serde` cargo feature.
//!
//! ```
//! # #[cfg(feature = "serde")] {
//! #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug, Clone)]
//! struct Profile { average: f64, seen: u32 }
//! keyed_state::serde_codec!(Profile, "profile-v1");
//!
//! use keyed_state::codec::Codec;
//! let p = Profile { average: 12.5, seen: 3 };
//! assert_eq!(Profile::decode(&p.to_bytes()).unwrap(), p);
//! assert_eq!(Profile::codec_id(), "serde-postcard:profile-v1");
//! # }
//! ```

// A decoder of bytes from disk or the network: no indexing that can panic.
#![deny(clippy::indexing_slicing)]

use serde::{Serialize, de::DeserializeOwned};

use crate::error::CodecError;

/// Appends the postcard encoding of `value`.
///
/// # Panics
/// When `value`'s `Serialize` impl itself fails (postcard cannot encode sequences of unknown
/// length, or a custom impl returned an error). That is a property of the user's type, found the
/// first time such a value is written, never of stored bytes.
pub fn encode<T: Serialize>(value: &T, out: &mut Vec<u8>) {
    let buf = std::mem::take(out);
    match postcard::to_extend(value, buf) {
        Ok(buf) => *out = buf,
        Err(e) => panic!("serde value cannot be encoded by postcard: {e}"),
    }
}

/// Decodes a postcard-encoded value that occupies all of `bytes`.
///
/// # Errors
///
/// [`CodecError::Invalid`] for bytes postcard cannot decode as `T`,
/// or with bytes left over.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (value, rest) = postcard::take_from_bytes(bytes).map_err(|e| CodecError::Invalid {
        what: "serde value",
        reason: e.to_string(),
    })?;
    super::expect_end(rest, "serde value")?;
    Ok(value)
}

/// Implements [`Codec`](crate::codec::Codec) for a serde type, encoded with postcard.
///
/// `serde_codec!(Type)` names the codec after the type as written; `serde_codec!(Type, "id")`
/// gives it an explicit, stable identity (recommended: renaming the type then keeps the state).
#[macro_export]
macro_rules! serde_codec {
    ($ty:ty) => {
        $crate::serde_codec!($ty, stringify!($ty));
    };
    ($ty:ty, $id:expr) => {
        impl $crate::codec::Codec for $ty {
            fn codec_id() -> String {
                format!("serde-postcard:{}", $id)
            }
            fn encode(&self, out: &mut Vec<u8>) {
                $crate::codec::serde_support::encode(self, out)
            }
            fn decode(bytes: &[u8]) -> Result<Self, $crate::CodecError> {
                $crate::codec::serde_support::decode(bytes)
            }
        }
    };
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, reason = "tests index what they built")]
mod tests {
    use crate::codec::Codec;
    use crate::state::ValueStateDescriptor;
    use crate::{CodecError, HeapEngine, KeyedStateBackend};
    use proptest::prelude::*;

    #[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq)]
    struct Profile {
        name: String,
        average: f64,
        tags: Vec<String>,
        limit: Option<u32>,
    }
    crate::serde_codec!(Profile, "profile-v1");

    #[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq, Hash)]
    struct Account(u64, String);
    crate::serde_codec!(Account);

    proptest! {
        #[test]
        fn serde_values_roundtrip(name in ".*", average in any::<f64>().prop_filter("not NaN", |f| !f.is_nan()),
                                  tags in proptest::collection::vec(".*", 0..4), limit in any::<Option<u32>>()) {
            let p = Profile { name, average, tags, limit };
            prop_assert_eq!(Profile::decode(&p.to_bytes()).unwrap(), p.clone());
            let mut nested = Vec::new();
            p.encode_nested(&mut nested);
            nested.push(7);
            let mut input = &nested[..];
            prop_assert_eq!(Profile::decode_nested(&mut input).unwrap(), p);
            prop_assert_eq!(input, &[7][..]);
        }

        #[test]
        fn serde_garbage_is_an_error_not_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = Profile::decode(&bytes);
            let _ = Account::decode(&bytes);
        }
    }

    #[test]
    fn truncated_and_trailing_bytes_are_typed_errors() {
        let bytes = Account(7, "seven".into()).to_bytes();
        assert!(matches!(
            Account::decode(&bytes[..bytes.len() - 1]),
            Err(CodecError::Invalid { .. })
        ));
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(
            Account::decode(&longer),
            Err(CodecError::TrailingBytes { .. })
        ));
        assert_eq!(Account::codec_id(), "serde-postcard:Account");
    }

    #[test]
    fn serde_types_work_as_keys_and_values() {
        let backend = KeyedStateBackend::<Account>::new(HeapEngine::default());
        let state = backend
            .value_state(&ValueStateDescriptor::<Profile>::new("profile"))
            .unwrap();
        let key = backend.key(Account(1, "a".into())).unwrap();
        let p = Profile {
            name: "a".into(),
            average: 2.5,
            tags: vec!["x".into()],
            limit: None,
        };
        state.update(&key, &(), p.clone()).unwrap();
        assert_eq!(state.get(&key, &()).unwrap(), Some(p));
    }
}
