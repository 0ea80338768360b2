//! The byte encoding of [`StateMeta`], shared by the RocksDB engine (which persists every
//! state's metadata in its database, so a restarted instance checks registrations against it)
//! and checkpoint manifests.
//!
//! The encoding is a version byte
//! (`1`) followed by the codec encoding of
//! `((name, kind), (key codec, namespace codec, user key codec, value codec), ttl)` where
//! `kind` is a `u8` (Value 0, List 1, Map 2, Reducing 3, Aggregating 4) and `ttl` is
//! `Option<(seconds u64, nanoseconds u32, update u8, visibility u8, cleanup per access u64)>`.

// A decoder of bytes from disk or the network: no indexing that can panic.
#![deny(clippy::indexing_slicing)]

use std::time::Duration;

use super::{StateKind, StateMeta};
use crate::codec::Codec;
use crate::error::CodecError;
use crate::ttl::{StateVisibility, TtlConfig, UpdateType};

const VERSION: u8 = 1;

type TtlTuple = (u64, u32, u8, u8, u64);
type Encoded = (
    (String, u8),
    (String, String, Option<String>, String),
    Option<TtlTuple>,
);

fn kind_code(kind: StateKind) -> u8 {
    match kind {
        StateKind::Value => 0,
        StateKind::List => 1,
        StateKind::Map => 2,
        StateKind::Reducing => 3,
        StateKind::Aggregating => 4,
    }
}

fn invalid(reason: String) -> CodecError {
    CodecError::Invalid {
        what: "state metadata",
        reason,
    }
}

/// Encodes `meta`.
pub(crate) fn encode(meta: &StateMeta) -> Vec<u8> {
    let ttl = meta.ttl.as_ref().map(|t| {
        let update = u8::from(t.update() == UpdateType::OnReadAndWrite);
        let visibility = u8::from(t.visibility() == StateVisibility::ReturnExpiredIfNotCleanedUp);
        (
            t.ttl().as_secs(),
            t.ttl().subsec_nanos(),
            update,
            visibility,
            t.cleanup_per_access() as u64,
        )
    });
    let encoded: Encoded = (
        (meta.name.clone(), kind_code(meta.kind)),
        (
            meta.key_codec.clone(),
            meta.namespace_codec.clone(),
            meta.user_key_codec.clone(),
            meta.value_codec.clone(),
        ),
        ttl,
    );
    let mut out = vec![VERSION];
    encoded.encode(&mut out);
    out
}

/// Decodes what [`encode`] wrote.
pub(crate) fn decode(bytes: &[u8]) -> Result<StateMeta, CodecError> {
    let Some((&version, body)) = bytes.split_first() else {
        return Err(CodecError::UnexpectedEnd {
            what: "state metadata",
            needed: 1,
        });
    };
    if version != VERSION {
        return Err(invalid(format!("unknown version {version}")));
    }
    let ((name, kind), (key_codec, namespace_codec, user_key_codec, value_codec), ttl) =
        Encoded::decode(body)?;
    let kind = match kind {
        0 => StateKind::Value,
        1 => StateKind::List,
        2 => StateKind::Map,
        3 => StateKind::Reducing,
        4 => StateKind::Aggregating,
        k => return Err(invalid(format!("unknown state kind {k}"))),
    };
    let ttl = ttl
        .map(|(secs, nanos, update, visibility, cleanup)| {
            // `Duration::new` would panic on a carry past u64::MAX seconds: a sub-second part
            // of a second or more is not what `encode` writes, so it is invalid.
            if nanos >= 1_000_000_000 {
                return Err(invalid(format!("TTL nanoseconds {nanos} ≥ one second")));
            }
            if update > 1 || visibility > 1 {
                return Err(invalid(format!(
                    "TTL update type {update} or visibility {visibility} unknown"
                )));
            }
            Ok((Duration::new(secs, nanos), update, visibility, cleanup))
        })
        .transpose()?
        .map(|(ttl, update, visibility, cleanup)| {
            TtlConfig::new(ttl)
                .with_update(if update == 1 {
                    UpdateType::OnReadAndWrite
                } else {
                    UpdateType::OnCreateAndWrite
                })
                .with_visibility(if visibility == 1 {
                    StateVisibility::ReturnExpiredIfNotCleanedUp
                } else {
                    StateVisibility::NeverReturnExpired
                })
                .with_cleanup_per_access(usize::try_from(cleanup).unwrap_or(usize::MAX))
        });
    Ok(StateMeta {
        name,
        kind,
        key_codec,
        namespace_codec,
        user_key_codec,
        value_codec,
        ttl,
    })
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, reason = "tests index what they built")]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_bad_bytes() {
        let meta = StateMeta {
            name: "sessions".into(),
            kind: StateKind::Map,
            key_codec: "string".into(),
            namespace_codec: "u64".into(),
            user_key_codec: Some("string".into()),
            value_codec: "u64".into(),
            ttl: Some(
                TtlConfig::new(Duration::from_millis(1500)).with_update(UpdateType::OnReadAndWrite),
            ),
        };
        let bytes = encode(&meta);
        assert_eq!(decode(&bytes).unwrap(), meta);
        assert!(decode(&[]).is_err());
        assert!(decode(&[2]).is_err());
        assert!(decode(&bytes[..bytes.len() - 1]).is_err());
        for i in 0..bytes.len() {
            let _ = decode(&bytes[..i]); // never panics
        }
    }

    /// A crafted TTL whose nanoseconds carry past `u64::MAX` seconds: `Duration::new` would
    /// panic, and the metadata comes from a manifest every restart reads (issue 14, item 9).
    #[test]
    fn a_ttl_that_overflows_is_an_error_not_a_panic() {
        for (secs, nanos, update, visibility) in [
            (u64::MAX, 1_000_000_000u32, 0u8, 0u8),
            (1, u32::MAX, 0, 0),
            (1, 0, 2, 0),
            (1, 0, 0, 7),
        ] {
            let encoded: Encoded = (
                ("s".into(), 0),
                ("u64".into(), "()".into(), None, "u64".into()),
                Some((secs, nanos, update, visibility, 5)),
            );
            let mut bytes = vec![VERSION];
            encoded.encode(&mut bytes);
            assert!(
                matches!(decode(&bytes), Err(CodecError::Invalid { .. })),
                "{secs} s {nanos} ns, update {update}, visibility {visibility}"
            );
        }
    }
}
