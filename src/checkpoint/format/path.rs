//! Storage paths: the only names a [`CheckpointStorage`](super::CheckpointStorage) accepts.
//!
//! A path is relative to the storage root and has one or two components separated by `/`:
//! `shared/<file>`, `chk-<id>/<file>`, or a top-level file. Each component is 1 to 255 bytes
//! of `[A-Za-z0-9._-]` and is neither `.` nor `..`. So no path can be absolute, climb out of
//! the root, or name a directory deeper than the layout has; a manifest naming anything else is
//! rejected before any file is touched.

// A decoder of bytes from disk or the network: no indexing that can panic.
#![deny(clippy::indexing_slicing)]

use crate::error::CheckpointError;

/// The directory of files several checkpoints may reference.
pub const SHARED_DIR: &str = "shared";
/// The manifest's file name inside `chk-<id>/`.
pub const MANIFEST_FILE: &str = "_manifest";

/// The directory of checkpoint `id`'s private files and manifest.
pub fn checkpoint_dir(id: u64) -> String {
    format!("chk-{id}")
}

/// The storage path of checkpoint `id`'s manifest.
pub fn manifest_path(id: u64) -> String {
    format!("chk-{id}/{MANIFEST_FILE}")
}

/// The id of a `chk-<id>` directory name.
pub fn parse_checkpoint_dir(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("chk-")?;
    // Canonical decimal only, so one id has one directory.
    if digits.is_empty() || (digits.len() > 1 && digits.starts_with('0')) {
        return None;
    }
    digits.parse().ok()
}

fn unsafe_path(path: &str, reason: &'static str) -> CheckpointError {
    CheckpointError::UnsafePath {
        path: path.to_owned(),
        reason,
    }
}

/// Checks one path component.
pub fn check_component<'a>(path: &str, c: &'a str) -> Result<&'a str, CheckpointError> {
    if c.is_empty() {
        return Err(unsafe_path(path, "empty component"));
    }
    if c == "." || c == ".." {
        return Err(unsafe_path(path, "'.' or '..' component"));
    }
    if c.len() > 255 {
        return Err(unsafe_path(path, "component longer than 255 bytes"));
    }
    if !c
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(unsafe_path(path, "characters outside [A-Za-z0-9._-]"));
    }
    Ok(c)
}

/// Checks a storage path (see the module documentation).
pub fn check_path(path: &str) -> Result<(), CheckpointError> {
    let mut parts = path.split('/');
    let first = parts.next().unwrap_or_default();
    check_component(path, first)?;
    if let Some(second) = parts.next() {
        check_component(path, second)?;
    }
    if parts.next().is_some() {
        return Err(unsafe_path(path, "more than two components"));
    }
    Ok(())
}

/// Checks a file named by checkpoint `id`'s manifest: it must lie in `shared/` or in the
/// checkpoint's own `chk-<id>/`, and must not be the manifest itself.
pub fn check_manifest_file(id: u64, path: &str) -> Result<(), CheckpointError> {
    check_path(path)?;
    let Some((dir, file)) = path.split_once('/') else {
        return Err(unsafe_path(
            path,
            "not inside shared/ or the checkpoint's directory",
        ));
    };
    if dir != SHARED_DIR && dir != checkpoint_dir(id) {
        return Err(unsafe_path(
            path,
            "not inside shared/ or the checkpoint's directory",
        ));
    }
    if file == MANIFEST_FILE {
        return Err(unsafe_path(path, "names the manifest"));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, reason = "tests index what they built")]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_layout() {
        for p in [
            "shared/a-000012.sst",
            "chk-7/MANIFEST-000005",
            "chk-7/_manifest",
            "x",
        ] {
            check_path(p).unwrap();
        }
        check_manifest_file(7, "chk-7/CURRENT").unwrap();
        check_manifest_file(7, "shared/abc.sst").unwrap();
    }

    #[test]
    fn rejects_escapes_and_odd_names() {
        for p in [
            "",
            "/etc/passwd",
            "../x",
            "shared/../x",
            "shared/..",
            "./x",
            "a//b",
            "a/b/c",
            "shared/",
            "a\\b",
            "shared/a b",
            "chk-1/\u{e9}",
            "shared/a\0b",
        ] {
            assert!(check_path(p).is_err(), "{p:?} must be rejected");
        }
        let long = format!("shared/{}", "a".repeat(256));
        assert!(check_path(&long).is_err());
        for p in [
            "chk-8/CURRENT",
            "CURRENT",
            "other/x",
            "chk-7/_manifest",
            "chk-07/x",
        ] {
            assert!(check_manifest_file(7, p).is_err(), "{p:?} must be rejected");
        }
    }

    #[test]
    fn checkpoint_dirs_parse_canonically() {
        assert_eq!(parse_checkpoint_dir("chk-12"), Some(12));
        assert_eq!(
            parse_checkpoint_dir(&checkpoint_dir(u64::MAX)),
            Some(u64::MAX)
        );
        for bad in ["chk-", "chk-012", "chk-x", "chk--1", "shared", "chk-1a"] {
            assert_eq!(parse_checkpoint_dir(bad), None, "{bad}");
        }
    }
}
