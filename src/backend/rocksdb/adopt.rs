//! Adopting another database's SST files as they are. A rescaling restore that merges several
//! checkpoints opens the one overlapping the target range most and brings the others' column
//! families in by ingesting their files (RocksDB's `IngestExternalFile` with
//! `allow_db_generated_files`, as Flink 2.x's ingestDB restore does) instead of reading and
//! rewriting every entry; key groups outside the range are cut afterwards with range deletions.
//!
//! RocksDB keeps the files' own sequence numbers (and raises the database's last sequence above
//! them), so it refuses a file whose key range overlaps anything the column family already
//! holds: another checkpoint's data, or a range deletion an earlier clip left in a file. The
//! caller then rewrites that column family's entries instead (the slow path, always correct).
//!
//! The `rocksdb` crate does not wrap that option, so the call goes through its C API (as does
//! cancelling manual compactions, which it does not wrap either).

use std::ffi::{CStr, CString, c_char};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use librocksdb_sys as ffi;
use rocksdb::{AsColumnFamilyRef, AsRawPtr, LiveFile};

use super::Db;

/// The SST files of column family `cf` among `live` (the files of a database opened from a
/// checkpoint in `dir`), in the order ingestion needs: where two files may hold the same key,
/// the one with the older entries first — the deepest level first, and within level 0 (whose
/// files overlap) the oldest file, the lowest file number, first.
pub(super) fn files_in_ingest_order(live: &[LiveFile], cf: &str, dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<(i32, u64, PathBuf)> = live
        .iter()
        .filter(|f| f.column_family_name == cf)
        .map(|f| {
            let name = f.name.trim_start_matches('/');
            let number = name
                .strip_suffix(".sst")
                .and_then(|n| n.parse().ok())
                .unwrap_or(u64::MAX);
            (f.level, number, dir.join(name))
        })
        .collect();
    files.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    files.into_iter().map(|(_, _, path)| path).collect()
}

/// Ingests database-made SST `files` into column family `cf` of `db` with their sequence
/// numbers (files moved in: linked, then unlinked from where they were). Returns RocksDB's
/// message when it refuses them (an overlap, see the module documentation); nothing was
/// ingested then, and the files are where they were.
pub(super) fn ingest_as_is(
    db: &Db,
    cf: &impl AsColumnFamilyRef,
    files: &[PathBuf],
) -> Result<(), String> {
    let paths = files
        .iter()
        .map(|p| CString::new(p.as_os_str().as_bytes()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("a file path with a NUL byte: {e}"))?;
    let pointers: Vec<*const c_char> = paths.iter().map(|p| p.as_ptr()).collect();
    #[expect(
        unsafe_code,
        reason = "the C API call the rocksdb crate does not wrap; see SAFETY"
    )]
    // SAFETY: `options` is created here and destroyed once, after its only use. `db` and `cf`
    // are borrowed for the whole call, so their handles are alive; the path pointers point into
    // `paths`, alive until the function returns; RocksDB copies what it keeps. `error` is null
    // or a message RocksDB allocated, read once and freed with `rocksdb_free`.
    unsafe {
        let options = ffi::rocksdb_ingestexternalfileoptions_create();
        ffi::rocksdb_ingestexternalfileoptions_set_move_files(options, 1);
        ffi::rocksdb_ingestexternalfileoptions_set_allow_db_generated_files(options, 1);
        // Database-made files keep their sequence numbers: no global one, so no snapshot
        // consistency either (nobody holds a snapshot of a database being restored).
        ffi::rocksdb_ingestexternalfileoptions_set_snapshot_consistency(options, 0);
        ffi::rocksdb_ingestexternalfileoptions_set_allow_global_seqno(options, 0);
        ffi::rocksdb_ingestexternalfileoptions_set_allow_blocking_flush(options, 0);
        let mut error: *mut c_char = std::ptr::null_mut();
        ffi::rocksdb_ingest_external_file_cf(
            db.as_raw_ptr(),
            cf.inner(),
            pointers.as_ptr(),
            pointers.len(),
            options,
            &raw mut error,
        );
        ffi::rocksdb_ingestexternalfileoptions_destroy(options);
        if error.is_null() {
            Ok(())
        } else {
            let message = CStr::from_ptr(error).to_string_lossy().into_owned();
            ffi::rocksdb_free(error.cast());
            Err(message)
        }
    }
}

/// Cancels the manual compactions running on `db` and refuses new ones (RocksDB's
/// `DisableManualCompaction`): for an engine being dropped.
pub(super) fn stop_manual_compactions(db: &Db) {
    #[expect(
        unsafe_code,
        reason = "the C API call the rocksdb crate does not wrap; see SAFETY"
    )]
    // SAFETY: `db` is borrowed for the call, so its handle is alive; the call takes nothing
    // else and returns nothing.
    unsafe {
        ffi::rocksdb_disable_manual_compaction(db.as_raw_ptr());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(cf: &str, name: &str, level: i32) -> LiveFile {
        LiveFile {
            column_family_name: cf.into(),
            name: name.into(),
            size: 1,
            level,
            start_key: None,
            end_key: None,
            num_entries: 1,
            num_deletions: 0,
        }
    }

    #[test]
    fn files_come_oldest_entries_first_one_column_family_only() {
        let live = [
            file("state:a", "/000012.sst", 0),
            file("state:a", "/000009.sst", 0),
            file("state:b", "/000001.sst", 6),
            file("state:a", "/000004.sst", 6),
            file("state:a", "/000010.sst", 1),
        ];
        let got = files_in_ingest_order(&live, "state:a", Path::new("/d"));
        let names: Vec<_> = got
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "/d/000004.sst",
                "/d/000010.sst",
                "/d/000009.sst",
                "/d/000012.sst"
            ]
        );
    }
}
