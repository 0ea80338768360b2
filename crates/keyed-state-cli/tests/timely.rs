//! `keyed-state timely` for real: processes over loopback TCP, SIGKILLed in the middle of the
//! stream and in the middle of a checkpoint, restarted on other numbers of processes and
//! workers, and the committed output and final state checked against the oracle by the
//! launcher (`check: ... equal the oracle's`); on both engines, and once on the S3 server.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use keyed_state_timely::{CommitLog, JobConfig};

const BIN: &str = env!("CARGO_BIN_EXE_keyed-state");

/// The job every test runs: small enough for CI, long enough to be killed in the middle.
fn job_args(engine: &str) -> Vec<String> {
    [
        "--events=60000",
        "--keys=3000",
        "--epoch-events=500",
        "--checkpoint-every=4",
        "--seed=11",
    ]
    .iter()
    .map(ToString::to_string)
    .chain([format!("--engine={engine}")])
    .collect()
}

/// The last checkpoint of [`job_args`]: 120 epochs, every 4.
const FINAL: u64 = 120;

/// Runs the launcher to the end on `dir` and returns its output, asserting the oracle check.
fn finish(dir: &Path, processes: u32, workers: u32, engine: &str, extra: &[String]) -> String {
    let out = Command::new(BIN)
        .arg("timely")
        .args(job_args(engine))
        .args([
            format!("--processes={processes}"),
            format!("--workers={workers}"),
        ])
        .arg(format!("--dir={}", dir.display()))
        .args(extra)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{processes}x{workers} failed: {stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("check: the committed output and the final state equal the oracle's"),
        "{stdout}\n{stderr}"
    );
    stdout
}

/// Starts the processes of a `processes × workers` cluster on `dir` directly (not through the
/// launcher), so that the test can kill them.
fn start(dir: &Path, processes: u32, workers: u32, engine: &str, extra: &[String]) -> Vec<Child> {
    let hosts = dir.join(format!("hosts-{}", std::process::id()));
    let ports: Vec<u16> = (0..processes)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect::<Vec<_>>()
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect();
    let text: String = ports.iter().map(|p| format!("127.0.0.1:{p}\n")).collect();
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(&hosts, text).unwrap();
    (0..processes)
        .map(|i| {
            Command::new(BIN)
                .arg("timely")
                .args(job_args(engine))
                .args([
                    format!("--workers={workers}"),
                    format!("--process={i}"),
                    format!("--hostfile={}", hosts.display()),
                    format!("--dir={}", dir.display()),
                ])
                .args(extra)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect()
}

fn job(dir: &Path, extra: &[String]) -> JobConfig {
    let root = extra
        .iter()
        .find_map(|a| a.strip_prefix("--storage="))
        .map_or_else(
            || dir.join("checkpoints").to_string_lossy().into_owned(),
            str::to_owned,
        );
    let settings = extra
        .iter()
        .filter_map(|a| a.strip_prefix("--storage-option="))
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    JobConfig::new(root).with_storage_settings(settings)
}

fn latest_commit(dir: &Path, extra: &[String]) -> Option<u64> {
    let storage = job(dir, extra).storage("commits").ok()?;
    CommitLog::latest_id(storage.as_ref()).ok().flatten()
}

/// Waits until `cond` holds, failing with `what` after a minute.
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "timed out waiting: {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// SIGKILLs process `victim`; the others lose their peer and must end on their own with an
/// error (a job restarts as a whole from its last commit).
fn kill_one(mut procs: Vec<Child>, victim: usize) {
    procs[victim].kill().unwrap();
    procs[victim].wait().unwrap();
    let start = Instant::now();
    for (i, p) in procs.iter_mut().enumerate().filter(|(i, _)| *i != victim) {
        loop {
            if let Some(status) = p.try_wait().unwrap() {
                assert!(
                    !status.success(),
                    "process {i} finished although its peer died"
                );
                break;
            }
            if start.elapsed() > Duration::from_secs(60) {
                p.kill().unwrap();
                panic!("process {i} did not end within 60 s of its peer's death");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut err = String::new();
        if let Some(mut e) = p.stderr.take() {
            std::io::Read::read_to_string(&mut e, &mut err).unwrap();
        }
        assert!(
            err.contains("error"),
            "process {i} ended without saying why: {err}"
        );
    }
}

/// Kills a cluster in the middle of the stream: once checkpoint `after` is committed.
fn kill_mid_stream(
    dir: &Path,
    processes: u32,
    workers: u32,
    engine: &str,
    extra: &[String],
    after: u64,
) -> u64 {
    let procs = start(dir, processes, workers, engine, extra);
    wait_until("a commit", || {
        latest_commit(dir, extra).is_some_and(|c| c >= after)
    });
    kill_one(procs, processes as usize - 1);
    let at = latest_commit(dir, extra).unwrap();
    assert!(
        at < FINAL,
        "the job finished before it was killed (commit {at})"
    );
    at
}

fn slow() -> Vec<String> {
    vec!["--slow-storage-ms=15".into()]
}

#[test]
fn heap_killed_mid_stream_restarts_on_3x1_then_1x1() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let first = kill_mid_stream(d, 2, 2, "heap", &slow(), 16);
    let second = kill_mid_stream(d, 3, 1, "heap", &slow(), first + 16);
    assert!(second > first);
    let out = finish(d, 1, 1, "heap", &[]);
    assert!(out.contains(&format!("from epoch {}", second + 1)), "{out}");
    // The same digests as an uninterrupted run on one worker.
    let clean = tempfile::tempdir().unwrap();
    let want = finish(clean.path(), 1, 1, "heap", &[]);
    let digests = |s: &str| {
        s.lines()
            .find(|l| l.starts_with("committed:"))
            .map(str::to_owned)
    };
    assert_eq!(digests(&out), digests(&want));
}

/// Kills the committer (process 0) while some worker's checkpoint is in flight: a `chk-N`
/// directory newer than the last commit with no manifest yet.
fn kill_mid_checkpoint(engine: &str) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let extra = vec!["--slow-storage-ms=60".to_string()];
    let procs = start(d, 2, 2, engine, &extra);
    wait_until("a commit", || latest_commit(d, &extra).is_some());
    wait_until("a checkpoint in flight", || {
        let committed = latest_commit(d, &extra).unwrap_or(0);
        (0..4).any(|w| {
            let root = d.join("checkpoints").join(format!("worker-{w}"));
            std::fs::read_dir(&root)
                .into_iter()
                .flatten()
                .flatten()
                .any(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    name.strip_prefix("chk-")
                        .and_then(|n| n.parse::<u64>().ok())
                        .is_some_and(|n| n > committed && !e.path().join("_manifest").exists())
                })
        })
    });
    kill_one(procs, 0);
    assert!(latest_commit(d, &extra).unwrap() < FINAL);
    finish(d, 1, 1, engine, &[]);
    // The restart removed the interrupted attempts of the workers it opened.
    let root = d.join("checkpoints").join("worker-0");
    let committed = latest_commit(d, &[]).unwrap();
    for e in std::fs::read_dir(&root).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(n) = name
            .strip_prefix("chk-")
            .and_then(|n| n.parse::<u64>().ok())
        {
            assert!(
                n <= committed && e.path().join("_manifest").exists(),
                "worker-0 keeps complete parts up to the last commit ({committed}), found {name}"
            );
        }
    }
}

#[test]
fn heap_killed_mid_checkpoint_restarts_on_1x1() {
    kill_mid_checkpoint("heap");
}

#[cfg(feature = "rocksdb")]
#[test]
fn rocksdb_killed_mid_checkpoint_restarts_on_1x1() {
    kill_mid_checkpoint("rocksdb");
}

#[cfg(feature = "rocksdb")]
#[test]
fn rocksdb_killed_mid_stream_restarts_on_3x1() {
    let dir = tempfile::tempdir().unwrap();
    let first = kill_mid_stream(dir.path(), 2, 2, "rocksdb", &slow(), 16);
    let out = finish(dir.path(), 3, 1, "rocksdb", &[]);
    assert!(out.contains(&format!("from epoch {}", first + 1)), "{out}");
}

#[cfg(feature = "s3")]
#[path = "../../../tests/support/s3_server.rs"]
mod s3_server;

#[cfg(feature = "s3")]
#[test]
fn checkpoints_on_s3_survive_a_kill_and_a_restart_on_1x2() {
    let port = s3_server::server().port;
    let mut extra = vec![format!(
        "--storage=s3://{}/timely-{}",
        s3_server::BUCKET,
        std::process::id()
    )];
    for (k, v) in s3_server::options(port).settings {
        extra.push(format!("--storage-option={k}={v}"));
    }
    let dir = tempfile::tempdir().unwrap();
    kill_mid_stream(dir.path(), 2, 1, "heap", &extra, 8);
    finish(dir.path(), 1, 2, "heap", &extra);
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN).arg("timely").args(args).output().unwrap()
}

#[test]
fn an_unreachable_peer_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let hosts = dir.path().join("hosts");
    let ports: Vec<u16> = (0..2)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect::<Vec<_>>()
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect();
    std::fs::write(
        &hosts,
        format!("127.0.0.1:{}\n127.0.0.1:{}\n", ports[0], ports[1]),
    )
    .unwrap();
    let d = format!("--dir={}", dir.path().display());
    let h = format!("--hostfile={}", hosts.display());
    let out = run(&["--process=0", &h, &d, "--connect-timeout=2"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("could not reach every peer within 2 s"),
        "{err}"
    );
    let out = run(&["--process=5", &h, &d]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("lists 2 processes"));
}

#[test]
fn a_restart_with_another_max_parallelism_fails_and_keeps_the_commit() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    finish(d, 1, 1, "heap", &[]);
    let commit = d
        .join("checkpoints/commits")
        .join(format!("commit-{FINAL:020}"));
    let before = std::fs::read(&commit).unwrap();
    let out = Command::new(BIN)
        .arg("timely")
        .args(job_args("heap"))
        .args(["--processes=1", "--workers=2", "--max-parallelism=64"])
        .arg(format!("--dir={}", d.display()))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("max parallelism"), "{err}");
    assert_eq!(std::fs::read(&commit).unwrap(), before);
}
