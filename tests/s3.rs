//! Checkpoints on S3-compatible object storage, against a real S3 server (`s3s-fs`, installed
//! by `scripts/setup`) that the tests start on 127.0.0.1 and stop themselves: the storage
//! contract (publish-once, multipart, listing), checkpoint and restore on both engines,
//! rescaling, retention and garbage collection, corruption detection, typed permanent errors,
//! and slow, failing and dropped requests (through a fault-injecting TCP proxy) aborting a
//! checkpoint cleanly while the previous one still restores.
//!
//! Run with `cargo test --release --locked --features s3`. The server binary is found through
//! `KS_S3S_FS`, then `$HOME/.cache/keyed-state/tools/bin/s3s-fs`, then `PATH`; without it these
//! tests fail (they never pass silently).
#![cfg(feature = "s3")]

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use keyed_state::backend::rocksdb::{RocksDbEngine, RocksDbOptions};
use keyed_state::checkpoint::{
    CheckpointStorage, CheckpointStore, FaultyStorage, ObjectStorage, ObjectStorageOptions,
    RestoreSource,
};
use keyed_state::clock::ManualClock;
use keyed_state::key_group::{KeyGroupRange, range_for_operator};
use keyed_state::{CheckpointError, EngineConfig, Error, HeapEngine, KeyedStateBackend};

#[path = "support/s3_server.rs"]
mod s3_server;
use s3_server::{BUCKET, options, server};
#[path = "support/states.rs"]
mod states;
use states::{dump, populate, referenced, register};

const M: u32 = 64;

/// A storage root of its own (a fresh prefix) in the test bucket.
fn storage(name: &str) -> Arc<ObjectStorage> {
    storage_with(name, options(server().port))
}

fn storage_with(name: &str, options: ObjectStorageOptions) -> Arc<ObjectStorage> {
    static N: AtomicU64 = AtomicU64::new(0);
    let prefix = format!(
        "{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    );
    let url = format!("s3://{BUCKET}/{prefix}");
    Arc::new(ObjectStorage::open(&url, options).unwrap())
}

#[test]
fn the_storage_contract_holds_on_s3() {
    let s = storage("contract");
    assert_eq!(s.list().unwrap(), Vec::<String>::new());
    s.put("chk-1/data", b"hello").unwrap();
    assert_eq!(&s.get("chk-1/data").unwrap()[..], b"hello");
    assert_eq!(s.size("chk-1/data").unwrap(), Some(5));
    assert_eq!(s.size("chk-1/other").unwrap(), None);
    s.put("chk-1/data", b"replaced").unwrap();
    assert_eq!(&s.get("chk-1/data").unwrap()[..], b"replaced");
    // Publish-once: a second put_new fails typed and leaves the first.
    s.put_new("chk-1/_manifest", b"first").unwrap();
    let e = s.put_new("chk-1/_manifest", b"second").unwrap_err();
    assert!(
        matches!(e, Error::Checkpoint(CheckpointError::AlreadyExists { .. })),
        "{e}"
    );
    assert_eq!(&s.get("chk-1/_manifest").unwrap()[..], b"first");
    let e = s.get("chk-9/none").unwrap_err();
    assert!(
        matches!(e, Error::Checkpoint(CheckpointError::Missing { .. })),
        "{e}"
    );
    assert!(s.get("../escape").is_err(), "paths are checked");
    // A multipart upload (threshold lowered): parts, then one object; size and crc32 match.
    let big = storage_with("multipart", {
        let mut o = options(server().port);
        o.multipart_threshold = 1 << 20;
        o.part_size = 5 << 20;
        o
    });
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.sst");
    let bytes: Vec<u8> = (0..12_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&file, &bytes).unwrap();
    let info = big.put_file("shared/big.sst", &file).unwrap();
    assert_eq!(info.size, bytes.len() as u64);
    assert_eq!(info.crc32, crc32fast::hash(&bytes));
    let back = dir.path().join("back.sst");
    let got = big.get_to_file("shared/big.sst", &back).unwrap();
    assert_eq!(got, info);
    assert_eq!(std::fs::read(&back).unwrap(), bytes);
    assert_eq!(
        big.list().unwrap(),
        vec!["shared/big.sst".to_string()],
        "no parts left behind"
    );
    s.delete("chk-1/data").unwrap();
    s.delete("chk-1/data").unwrap(); // absent: fine
    assert_eq!(s.list().unwrap(), vec!["chk-1/_manifest".to_string()]);
}

#[test]
fn permanent_errors_are_typed() {
    let port = server().port;
    let wrong = storage_with(
        "denied",
        options(port).with("aws_secret_access_key", "not-the-secret"),
    );
    let e = wrong.put("chk-1/x", b"x").unwrap_err();
    assert!(
        matches!(e, Error::Checkpoint(CheckpointError::AccessDenied { .. })),
        "{e}"
    );
    // Opening a store lists its root first: that is where a missing bucket shows.
    let no_bucket: Arc<dyn CheckpointStorage> =
        Arc::new(ObjectStorage::open("s3://no-such-bucket/x", options(port)).unwrap());
    let e = CheckpointStore::open(no_bucket, 1).unwrap_err();
    assert!(
        matches!(e, Error::Checkpoint(CheckpointError::NoBucket { .. })),
        "{e}"
    );
    let e = ObjectStorage::open("s3://b/x", options(port).with("aws_no_such_setting", "1"))
        .unwrap_err();
    assert!(
        matches!(e, Error::Checkpoint(CheckpointError::StorageConfig(_))),
        "{e}"
    );
}

fn config(clock: &ManualClock, range: KeyGroupRange) -> EngineConfig {
    EngineConfig::new(M)
        .unwrap()
        .with_key_group_range(range)
        .unwrap()
        .with_clock(clock.shared())
}

fn rocks_open(path: &std::path::Path, clock: &ManualClock, range: KeyGroupRange) -> RocksDbEngine {
    RocksDbEngine::open(path, config(clock, range), RocksDbOptions::default()).unwrap()
}

fn rocks_restore(
    path: &std::path::Path,
    clock: &ManualClock,
    range: KeyGroupRange,
    sources: &[RestoreSource],
) -> RocksDbEngine {
    RocksDbEngine::restore(
        path,
        config(clock, range),
        RocksDbOptions::default(),
        sources,
    )
    .unwrap()
}

#[test]
fn rocksdb_incremental_checkpoints_restore_rescale_and_collect_on_s3() {
    let clock = ManualClock::new(1_000);
    let all = KeyGroupRange::all(M).unwrap();
    let s3 = storage("rocksdb");
    let (store, _) = CheckpointStore::open(s3.clone(), 1).unwrap();
    let store = Arc::new(store);
    let dir = tempfile::tempdir().unwrap();
    let b = KeyedStateBackend::new(rocks_open(&dir.path().join("db"), &clock, all));
    let s = register(&b);
    let keys: Vec<u64> = (0..2_000).collect();
    let mut last = BTreeSet::new();
    for round in 1..=3 {
        populate(
            &b,
            &s,
            &keys[..usize::try_from(round * 600).unwrap()],
            round,
        );
        let m = b
            .checkpoint(&store, round, &[("input", round)])
            .unwrap()
            .wait()
            .unwrap();
        last = dump(&b, &s);
        assert!(m.files.iter().any(|f| f.path.starts_with("shared/")));
        // Retention 1 with reference counting: the bucket holds exactly the latest's files.
        let listed: BTreeSet<String> = s3.list().unwrap().into_iter().collect();
        assert_eq!(listed, referenced(&store), "round {round}");
    }
    // A fresh process lists the bucket to find the latest checkpoint and restores it.
    drop(store);
    let (store, report) = CheckpointStore::open(s3.clone(), 1).unwrap();
    assert_eq!(report.retained, vec![3]);
    let source = RestoreSource::latest(&store).unwrap();
    let r = KeyedStateBackend::new(rocks_restore(
        &dir.path().join("restored"),
        &clock,
        all,
        std::slice::from_ref(&source),
    ));
    assert_eq!(dump(&r, &register(&r)), last);
    // Rescale: two instances from the one checkpoint, each with its half.
    let mut union = BTreeSet::new();
    for i in 0..2 {
        let range = range_for_operator(M, 2, i).unwrap();
        let part = KeyedStateBackend::new(rocks_restore(
            &dir.path().join(format!("part-{i}")),
            &clock,
            range,
            std::slice::from_ref(&source),
        ));
        let d = dump(&part, &register(&part));
        assert!(!d.is_empty());
        union.extend(d);
    }
    assert_eq!(union, last);
}

#[test]
fn heap_checkpoints_restore_and_corruption_is_detected_on_s3() {
    let clock = ManualClock::new(1_000);
    let all = KeyGroupRange::all(M).unwrap();
    let s3 = storage("heap");
    let (store, _) = CheckpointStore::open(s3.clone(), 2).unwrap();
    let store = Arc::new(store);
    let b = KeyedStateBackend::new(HeapEngine::new(config(&clock, all)));
    let s = register(&b);
    populate(&b, &s, &(0..500).collect::<Vec<_>>(), 1);
    let m = b.checkpoint(&store, 1, &[]).unwrap().wait().unwrap();
    let want = dump(&b, &s);
    let source = RestoreSource {
        storage: s3.clone(),
        manifest: m.clone(),
    };
    let r = KeyedStateBackend::new(
        HeapEngine::restore(config(&clock, all), std::slice::from_ref(&source)).unwrap(),
    );
    assert_eq!(dump(&r, &register(&r)), want);
    // Damage the data object behind the store's back: restore refuses it, typed.
    let data = &m.files[0].path;
    let mut bytes = s3.get(data).unwrap().to_vec();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    s3.put(data, &bytes).unwrap();
    let e = HeapEngine::restore(config(&clock, all), &[source]).unwrap_err();
    assert!(
        matches!(
            e,
            Error::Checkpoint(CheckpointError::ChecksumMismatch { .. })
        ),
        "{e}"
    );
    assert!(!store.verify(&m).is_empty(), "verify names the bad object");
}

/// A TCP proxy between the client and the server that passes, delays or drops connections.
struct Proxy {
    port: u16,
    mode: Arc<AtomicU8>,
}

const PASS: u8 = 0;
const SLOW: u8 = 1;
const DROP: u8 = 2;

impl Proxy {
    fn start(upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mode = Arc::new(AtomicU8::new(PASS));
        let m = mode.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let m = m.clone();
                std::thread::spawn(move || proxy_connection(client, upstream, m));
            }
        });
        Proxy { port, mode }
    }

    fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
    }
}

/// Forwards both ways; the mode is read for every chunk, so pooled (kept-alive) connections
/// see it too: SLOW holds each chunk past the client's deadline, DROP closes the connection.
fn proxy_connection(client: TcpStream, upstream: u16, mode: Arc<AtomicU8>) {
    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
        return;
    };
    let pipe = move |mut from: TcpStream, mut to: TcpStream, mode: Arc<AtomicU8>| {
        let mut buf = [0u8; 64 * 1024];
        loop {
            if mode.load(Ordering::SeqCst) == DROP {
                break;
            }
            let Ok(n) = from.read(&mut buf) else { break };
            match mode.load(Ordering::SeqCst) {
                DROP => break,
                SLOW => std::thread::sleep(Duration::from_secs(3)),
                _ => {}
            }
            if n == 0 || to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    };
    let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    let m2 = mode.clone();
    let up = std::thread::spawn(move || pipe(c2, s2, m2));
    pipe(server, client, mode);
    let _ = up.join();
}

#[test]
fn slow_failing_and_dropped_requests_abort_cleanly_and_the_previous_checkpoint_restores() {
    let clock = ManualClock::new(1_000);
    let all = KeyGroupRange::all(M).unwrap();
    let proxy = Proxy::start(server().port);
    let mut opts = options(proxy.port);
    opts.timeout = Duration::from_secs(2);
    opts.retries = 1;
    opts.retry_timeout = Duration::from_secs(4);
    let s3 = storage_with("faults", opts);
    let faulty = Arc::new(FaultyStorage::new(s3.clone()));
    let (store, _) = CheckpointStore::open(faulty.clone(), 1).unwrap();
    let store = Arc::new(store);
    let dir = tempfile::tempdir().unwrap();
    let b = KeyedStateBackend::new(rocks_open(&dir.path().join("db"), &clock, all));
    let s = register(&b);
    let keys: Vec<u64> = (0..300).collect();
    populate(&b, &s, &keys, 1);
    b.checkpoint(&store, 1, &[]).unwrap().wait().unwrap();
    let good = dump(&b, &s);
    assert_eq!(
        s3.transfer_concurrency(),
        8,
        "uploads run in parallel on S3"
    );
    let mut id = 2;
    for mode in [SLOW, DROP] {
        populate(&b, &s, &keys, id);
        proxy.set(mode);
        let e = b.checkpoint(&store, id, &[]).unwrap().wait().unwrap_err();
        assert!(
            matches!(e, Error::Checkpoint(CheckpointError::Remote { .. })),
            "mode {mode}: {e}"
        );
        proxy.set(PASS);
        id += 1;
    }
    // One request failing: the k-th storage operation of an attempt, for growing k, until one
    // hits an operation the checkpoint cannot do without (a failed cleanup of the earlier
    // aborts is only logged and retried; an attempt that survives is a new good state).
    let mut good = good;
    let mut good_id = 1;
    let mut failed = false;
    for k in 0..30 {
        populate(&b, &s, &keys, id);
        faulty.fail_only(faulty.operations() + k);
        let outcome = b.checkpoint(&store, id, &[]).unwrap().wait();
        faulty.heal();
        id += 1;
        if outcome.is_err() {
            failed = true;
            break;
        }
        good = dump(&b, &s);
        good_id = id - 1;
    }
    assert!(failed, "a failed upload request fails the checkpoint");
    // Nothing of the aborted attempts is left, and the last good checkpoint restores exactly.
    drop(store);
    let (store, report) = CheckpointStore::open(s3.clone(), 1).unwrap();
    assert_eq!(report.retained, vec![good_id]);
    let listed: BTreeSet<String> = s3.list().unwrap().into_iter().collect();
    assert_eq!(listed, referenced(&store));
    let r = KeyedStateBackend::new(rocks_restore(
        &dir.path().join("restored"),
        &clock,
        all,
        &[RestoreSource::latest(&store).unwrap()],
    ));
    assert_eq!(dump(&r, &register(&r)), good);
    // And the job goes on: the next checkpoint succeeds.
    let store = Arc::new(store);
    b.checkpoint(&store, id, &[]).unwrap().wait().unwrap();
}

/// The server a test process starts dies with it, and its directory goes: the test binary runs
/// itself as a child (this test, with `KS_S3_SERVER_CHILD` set), which starts the server,
/// prints its pid and directory, and exits.
#[test]
fn the_s3_server_stops_when_its_test_process_exits() {
    if std::env::var_os("KS_S3_SERVER_CHILD").is_some() {
        let server = server();
        println!("server pid {} dir {}", server.pid(), server.dir().display());
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "the_s3_server_stops_when_its_test_process_exits",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("KS_S3_SERVER_CHILD", "1")
        .output()
        .unwrap();
    assert!(out.status.success(), "child failed: {out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        // The harness prints the test's name on the same line first.
        .find_map(|l| l.split_once("server pid ").map(|(_, rest)| rest))
        .unwrap_or_else(|| panic!("the child printed no server: {stdout}"));
    let (pid, dir) = line.split_once(" dir ").unwrap();
    // The child's exit closed the watching shell's pipe; the shell then kills the server and
    // removes its directory, which takes it a moment.
    let proc = std::path::PathBuf::from(format!("/proc/{pid}"));
    let dir = std::path::Path::new(dir);
    let start = std::time::Instant::now();
    while (proc.exists() || dir.exists()) && start.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !proc.exists(),
        "the S3 server {pid} outlived its test process"
    );
    assert!(
        !dir.exists(),
        "the S3 server's directory {} outlived its test process",
        dir.display()
    );
}
