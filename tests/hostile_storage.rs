//! A storage root someone else can write to: symbolic links, FIFOs, devices, huge sparse files
//! and names that already exist must neither lead reads and deletes outside the root, nor
//! hang, nor exhaust memory, nor let a restore write into a stored file (issue 14, items 1, 6
//! and 7). Real files, real links, a real FIFO.

use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use keyed_state::checkpoint::{
    CheckpointStorage, CheckpointStore, FileEntry, FileRole, LocalStorage, Manifest, SnapshotKind,
    verify_files,
};
use keyed_state::key_group::KeyGroupRange;
use keyed_state::{CheckpointError, Error};

/// Runs `f` on a thread and fails the test if it takes longer than `secs` (a hang).
fn within<T: Send + 'static>(secs: u64, what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(secs))
        .unwrap_or_else(|_| panic!("{what} hangs"))
}

fn manifest(files: Vec<FileEntry>) -> Manifest {
    Manifest {
        checkpoint_id: 1,
        kind: SnapshotKind::Full,
        engine: "heap".into(),
        max_parallelism: 128,
        range: KeyGroupRange::new(0, 127),
        created_at_millis: 0,
        states: Vec::new(),
        offsets: Vec::new(),
        timers: Vec::new(),
        files,
        uploaded_bytes: 0,
    }
}

fn entry(path: &str, bytes: &[u8]) -> FileEntry {
    FileEntry {
        path: path.into(),
        role: FileRole::Private,
        size: bytes.len() as u64,
        crc32: crc32fast::hash(bytes),
        blocks: Vec::new(),
    }
}

fn mkfifo(path: &Path) {
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("mkfifo");
    assert!(status.success());
}

#[test]
fn a_restore_copy_never_writes_through_an_existing_file() {
    let root = tempfile::tempdir().unwrap();
    let storage = LocalStorage::new(root.path()).unwrap();
    storage.put("shared/a.sst", b"stored bytes of a").unwrap();
    storage.put("shared/b.sst", b"other").unwrap();
    let work = tempfile::tempdir().unwrap();
    let dest = work.path().join("000001.sst");
    // The first file is linked in, as a restore does for SSTs.
    storage.link_to_file("shared/a.sst", &dest).unwrap();
    // A second file mapped to the same local name: both a link and a copy must refuse, not
    // truncate the link (which is the stored file).
    assert!(storage.link_to_file("shared/b.sst", &dest).is_err());
    assert!(storage.get_to_file("shared/b.sst", &dest).is_err());
    assert_eq!(
        &storage.get("shared/a.sst").unwrap()[..],
        b"stored bytes of a"
    );
    let no_links = LocalStorage::new(root.path())
        .unwrap()
        .with_hard_links(false);
    assert!(no_links.link_to_file("shared/b.sst", &dest).is_err());
    assert_eq!(
        &storage.get("shared/a.sst").unwrap()[..],
        b"stored bytes of a"
    );
    // A copy lands whole under its name and leaves no temporary file behind.
    let copy = work.path().join("copy");
    storage.get_to_file("shared/b.sst", &copy).unwrap();
    assert_eq!(std::fs::read(&copy).unwrap(), b"other");
    let names: Vec<_> = std::fs::read_dir(work.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

#[test]
fn symbolic_links_lead_nowhere_outside_the_root() {
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("secret");
    std::fs::write(&secret, b"not yours").unwrap();
    let root = tempfile::tempdir().unwrap();
    let storage = Arc::new(LocalStorage::new(root.path()).unwrap());
    storage.put("shared/real.sst", b"x").unwrap();
    // A stored name that is a link to a file outside the root, with a matching entry.
    std::os::unix::fs::symlink(&secret, root.path().join("shared/passwd")).unwrap();
    let m = manifest(vec![entry("shared/passwd", b"not yours")]);
    let problems = verify_files(storage.as_ref(), &m);
    assert!(
        matches!(problems.as_slice(), [CheckpointError::NotRegular { .. }]),
        "{problems:?}"
    );
    assert!(storage.get("shared/passwd").is_err());
    assert_eq!(storage.size("shared/passwd").unwrap(), None);
    assert!(
        !storage
            .list()
            .unwrap()
            .contains(&"shared/passwd".to_string())
    );
    // A directory under the root that is a link to another directory: neither read nor
    // deleted through, even by the store's cleanup of a stray checkpoint.
    std::fs::write(outside.path().join("000009.sst"), b"outside").unwrap();
    std::os::unix::fs::symlink(outside.path(), root.path().join("chk-7")).unwrap();
    assert!(matches!(
        storage.get("chk-7/000009.sst"),
        Err(Error::Checkpoint(CheckpointError::UnsafePath { .. }))
    ));
    assert!(storage.delete("chk-7/000009.sst").is_err());
    let _ = CheckpointStore::open(storage.clone(), 1);
    assert!(
        outside.path().join("000009.sst").exists(),
        "deleted outside the root"
    );
    assert_eq!(std::fs::read(&secret).unwrap(), b"not yours");
}

#[test]
fn fifos_devices_and_huge_files_are_refused_without_hanging() {
    let root = tempfile::tempdir().unwrap();
    let storage = Arc::new(LocalStorage::new(root.path()).unwrap());
    storage.put("chk-1/state-data", b"data").unwrap();
    // A FIFO as a data file: reading it would wait forever for a writer.
    mkfifo(&root.path().join("chk-1/fifo"));
    let s = storage.clone();
    let r = within(10, "reading a FIFO", move || {
        s.get("chk-1/fifo").map(|b| b.len())
    });
    assert!(
        matches!(
            r,
            Err(Error::Checkpoint(CheckpointError::NotRegular { .. }))
        ),
        "{r:?}"
    );
    let s = storage.clone();
    let m = manifest(vec![entry("chk-1/fifo", b"")]);
    let problems = within(10, "verifying a FIFO", move || verify_files(s.as_ref(), &m));
    assert_eq!(problems.len(), 1);
    // A manifest that is a link to /dev/zero, then an 8 GiB sparse manifest: refused before
    // reading, the second kept and reported as unreadable.
    std::fs::create_dir_all(root.path().join("chk-3")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", root.path().join("chk-3/_manifest")).unwrap();
    let s = storage.clone();
    let r = within(10, "reading /dev/zero", move || {
        s.get("chk-3/_manifest").map(|b| b.len())
    });
    assert!(r.is_err());
    std::fs::create_dir_all(root.path().join("chk-4")).unwrap();
    let huge = std::fs::File::create(root.path().join("chk-4/_manifest")).unwrap();
    huge.set_len(8 << 30).unwrap();
    let s = storage.clone();
    let (_, report) = within(20, "opening a store with an 8 GiB manifest", move || {
        CheckpointStore::open(s, 1).unwrap()
    });
    assert_eq!(report.unreadable.len(), 1, "{report:?}");
    assert!(
        report.unreadable[0].1.contains("more than any manifest"),
        "{report:?}"
    );
}

/// One writer per storage root (issue 14, item 2): a second store on the same directory is
/// refused with a typed error while the first is open, and allowed once it is closed. The
/// lock is an OS file lock, so a dead process releases it (the CLI suite kills a real one).
#[test]
fn a_second_writer_on_one_root_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let a = Arc::new(LocalStorage::new(root.path()).unwrap());
    let b = Arc::new(LocalStorage::new(root.path()).unwrap());
    let (first, _) = CheckpointStore::open(a.clone(), 1).unwrap();
    let err = CheckpointStore::open(b.clone(), 1).unwrap_err();
    assert!(
        matches!(err, Error::Checkpoint(CheckpointError::Locked { .. })),
        "{err}"
    );
    assert!(
        !a.list().unwrap().iter().any(|p| p.contains("lock")),
        "the lock file is not a stored file"
    );
    drop(first);
    CheckpointStore::open(b, 1).unwrap();
}

/// A pending checkpoint dropped without `wait` (a job torn down mid-upload) must not leave its
/// background thread holding the store, and so the root's lock, past everything the caller
/// dropped: a restart in the same process opens the root at once, and finds the checkpoint
/// complete (the drop waited for it).
#[test]
fn a_pending_checkpoint_dropped_unwaited_releases_the_root() {
    use keyed_state::state::ValueStateDescriptor;
    use keyed_state::{EngineConfig, HeapEngine, KeyedStateBackend};

    let root = tempfile::tempdir().unwrap();
    for round in 1..=3u64 {
        let storage = Arc::new(LocalStorage::new(root.path()).unwrap());
        let store = Arc::new(CheckpointStore::open(storage, 1).unwrap().0);
        let b = KeyedStateBackend::<u64>::new(HeapEngine::new(EngineConfig::default()));
        let v = b
            .value_state(&ValueStateDescriptor::<Vec<u8>>::new("v"))
            .unwrap();
        // Enough state that the upload outlasts the drops below.
        for k in 0..100_000u64 {
            v.update(
                &b.key(k).unwrap(),
                &(),
                vec![u8::try_from(round).unwrap(); 100],
            )
            .unwrap();
        }
        let pending = b.checkpoint(&store, round, &[]).unwrap();
        drop((pending, v, b, store));
        let reopened = LocalStorage::new(root.path()).unwrap();
        let (store, _) = CheckpointStore::open(Arc::new(reopened), 1).unwrap();
        assert_eq!(store.latest().map(|m| m.checkpoint_id), Some(round));
    }
}

/// A heap checkpoint whose block entries all point at one small zstd frame claiming 1 GiB
/// raw (issue 14, item 8): refused by the manifest's decoder (blocks may not overlap), and,
/// when such a manifest is handed to a restore directly, refused by each block's bounds
/// (a claim zstd cannot produce from those bytes) without allocating what it claims.
#[test]
fn a_decompression_bomb_is_refused_without_allocating_it() {
    use keyed_state::checkpoint::{MemoryStorage, RestoreSource};
    use keyed_state::state::ValueStateDescriptor;
    use keyed_state::{EngineConfig, HeapEngine, KeyedStateBackend};

    let memory = Arc::new(MemoryStorage::new());
    let store = Arc::new(CheckpointStore::open(memory.clone(), 1).unwrap().0);
    let b = KeyedStateBackend::<u64>::new(HeapEngine::new(EngineConfig::default()));
    let v = b
        .value_state(&ValueStateDescriptor::<u64>::new("v"))
        .unwrap();
    for k in 0..2000 {
        v.update(&b.key(k).unwrap(), &(), k).unwrap();
    }
    let mut m = b.checkpoint(&store, 1, &[]).unwrap().wait().unwrap();
    let data = m
        .files
        .iter_mut()
        .find(|f| f.role == FileRole::KeyGroupData)
        .unwrap();
    let first = data.blocks[0];
    for block in &mut data.blocks {
        block.offset = first.offset;
        block.len = first.len;
        block.crc32 = first.crc32;
        block.raw_len = 1 << 30;
    }
    let bytes = m.encode().unwrap();
    let err = Manifest::decode("chk-1/_manifest", &bytes).unwrap_err();
    assert!(err.to_string().contains("overlaps"), "{err}");
    // Handed over without decoding: every block is checked before decompression.
    let source = RestoreSource {
        storage: memory,
        manifest: m,
    };
    let started = std::time::Instant::now();
    let err = HeapEngine::restore(EngineConfig::default(), &[source]).unwrap_err();
    assert!(
        matches!(err, Error::Checkpoint(CheckpointError::Corrupt { .. })),
        "{err}"
    );
    assert!(started.elapsed().as_secs() < 5, "refused at once");
}

/// A write that fails after creating its checkpoint's directory (a full disk fails the
/// temporary file, not the directory) must not leave directories behind: opening or cleaning
/// a store removes empty checkpoint directories, never `shared/` (issue 14, item 10).
#[test]
fn empty_checkpoint_directories_are_removed() {
    let root = tempfile::tempdir().unwrap();
    let storage = Arc::new(LocalStorage::new(root.path()).unwrap());
    storage.put("shared/x.sst", b"x").unwrap();
    storage.delete("shared/x.sst").unwrap();
    for dir in ["chk-5", "chk-6", "chk-7"] {
        std::fs::create_dir(root.path().join(dir)).unwrap();
    }
    let (store, _) = CheckpointStore::open(storage.clone(), 1).unwrap();
    let left: Vec<_> = std::fs::read_dir(root.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    assert_eq!(left, vec!["shared".to_string()]);
    std::fs::create_dir(root.path().join("chk-8")).unwrap();
    store.clean().unwrap();
    assert!(!root.path().join("chk-8").exists());
}
