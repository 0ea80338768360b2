//! The `keyed-state inspect` command on a real checkpoint directory.

use std::process::Command;
use std::sync::Arc;

use keyed_state::checkpoint::{CheckpointStore, LocalStorage};
use keyed_state::state::{ListStateDescriptor, ValueStateDescriptor};
use keyed_state::{EngineConfig, HeapEngine, KeyedStateBackend};

fn inspect(args: &[&str]) -> (i32, String, String) {
    keyed_state("inspect", args)
}

/// Runs `keyed-state <command> <args>`: exit code, stdout, stderr.
fn keyed_state(command: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_keyed-state"))
        .arg(command)
        .args(args)
        .output()
        .expect("run keyed-state");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn inspect_prints_verifies_and_names_bad_files() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Arc::new(LocalStorage::new(dir.path()).unwrap());
    let store = Arc::new(CheckpointStore::open(storage, 1).unwrap().0);
    let backend = KeyedStateBackend::<u64>::new(HeapEngine::new(EngineConfig::default()));
    let count = backend
        .value_state(&ValueStateDescriptor::<u64>::new("count"))
        .unwrap();
    let recent = backend
        .list_state(&ListStateDescriptor::<u64>::new("recent"))
        .unwrap();
    for k in 0..1000 {
        let key = backend.key(k).unwrap();
        count.update(&key, &(), k).unwrap();
        recent.add(&key, &(), k * 2).unwrap();
    }
    let m = backend
        .checkpoint(&store, 4, &[("input", 1000)])
        .unwrap()
        .wait()
        .unwrap();
    let chk = dir.path().join("chk-4");
    let chk = chk.to_str().unwrap();

    let (code, out, _) = inspect(&[chk]);
    assert_eq!(code, 0);
    assert!(
        out.contains("checkpoint 4 (full snapshot, heap engine)"),
        "{out}"
    );
    assert!(out.contains("count") && out.contains("recent"), "{out}");
    assert!(out.contains("input = 1000"), "{out}");
    assert!(out.contains(&format!("({} bytes)", m.full_size())), "{out}");

    let (code, out, _) = inspect(&[chk, "--json"]);
    assert_eq!(code, 0);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["checkpoint_id"], 4);
    assert_eq!(json["states"].as_array().unwrap().len(), 2);
    assert_eq!(json["full_size"], m.full_size());
    assert_eq!(json["files"][0]["blocks"].as_array().unwrap().len(), 128);

    let (code, out, _) = inspect(&[chk, "--verify"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("verify: all 1 files"), "{out}");

    // Damage the data file: verify names it and exits 1.
    let data = dir.path().join(&m.files[0].path);
    let mut bytes = std::fs::read(&data).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    std::fs::write(&data, &bytes).unwrap();
    let (code, out, _) = inspect(&[chk, "--verify"]);
    assert_eq!(code, 1);
    assert!(
        out.contains("BAD") && out.contains(&m.files[0].path),
        "{out}"
    );
    let (code, out, _) = inspect(&[chk, "--verify", "--json"]);
    assert_eq!(code, 1);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["verify"]["ok"], false);

    // A damaged manifest is a clear error, exit 2.
    let manifest = dir.path().join("chk-4/_manifest");
    std::fs::write(&manifest, b"KSCP garbage").unwrap();
    let (code, _, err) = inspect(&[chk]);
    assert_eq!(code, 2);
    assert!(err.contains("_manifest"), "{err}");
    let (code, _, err) = inspect(&[dir.path().join("chk-9").to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
}

fn simulate(args: &[&str]) -> (i32, String, String) {
    keyed_state("simulate", args)
}

fn report(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout.lines().next().expect("a JSON line")).expect("JSON")
}

const SMALL: &[&str] = &[
    "--seed",
    "5",
    "--events",
    "12000",
    "--keys",
    "300",
    "--checkpoint-every",
    "1000",
    "--json",
];

#[test]
fn simulate_is_deterministic_across_runs_engines_and_real_process_kills() {
    let run = |extra: &[&str]| {
        let args: Vec<&str> = SMALL.iter().chain(extra).copied().collect();
        let (code, out, err) = simulate(&args);
        assert_eq!(code, 0, "{args:?}: {err}");
        report(&out)
    };
    let digests = |r: &serde_json::Value| (r["state_digest"].clone(), r["output_digest"].clone());
    let faulty = run(&[
        "--crashes",
        "4",
        "--storage-faults",
        "3",
        "--random-rescales",
        "2",
    ]);
    for field in [
        "seed",
        "engine",
        "events",
        "checkpoints",
        "crashes",
        "restores",
        "rescales",
        "divergences",
        "state_digest",
        "output_digest",
        "elapsed_s",
    ] {
        assert!(!faulty[field].is_null(), "{field} in {faulty}");
    }
    assert_eq!(faulty["divergences"], 0);
    assert!(faulty["crashes"].as_u64().unwrap() >= 4);
    let clean = run(&["--crashes", "0", "--storage-faults", "0"]);
    assert_eq!(clean["crashes"], 0);
    assert_eq!(digests(&faulty), digests(&clean), "faults change nothing");
    assert_eq!(
        digests(&run(&[
            "--crashes",
            "4",
            "--storage-faults",
            "3",
            "--random-rescales",
            "2"
        ])),
        digests(&faulty)
    );
    #[cfg(feature = "rocksdb")]
    assert_eq!(digests(&run(&["--engine", "rocksdb"])), digests(&clean));
    // Real processes: the worker is SIGKILLed three times (a bare --kill) and restarted.
    let killed = run(&["--kill"]);
    assert_eq!(killed["crashes"], 3);
    // A kill before the first checkpoint restarts from the beginning, not from a restore.
    assert!(killed["restores"].as_u64().unwrap() >= 1);
    assert_eq!(digests(&killed), digests(&clean));
}

#[test]
fn simulate_keeps_its_directory_for_inspect_and_refuses_to_reuse_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let args: Vec<&str> = SMALL.iter().copied().chain(["--dir", d]).collect();
    let (code, _, err) = simulate(&args);
    assert_eq!(code, 0, "{err}");
    let instance = dir.path().join("seed-5/instance-0");
    let chk = std::fs::read_dir(&instance)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("chk-"))
        .expect("a retained checkpoint");
    let (code, out, err) = inspect(&[chk.to_str().unwrap(), "--verify"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        dir.path().join("seed-5/job").is_dir(),
        "the job log is kept"
    );
    let (code, _, err) = simulate(&args);
    assert_eq!(code, 1, "a used directory is refused");
    assert!(err.contains("not empty"), "{err}");
    let (code, _, err) = simulate(&["--skew", "zipf:x"]);
    assert_eq!(code, 2);
    assert!(err.contains("--skew"), "{err}");
}

#[test]
fn bad_arguments_are_refused_with_exit_2_and_the_flag_named() {
    for (args, flag) in [
        (&["--seeds", "5..5"][..], "--seeds"),
        (&["--seeds", "a..b"][..], "--seeds"),
        (&["--parallelism", "0"][..], "--parallelism"),
        (&["--max-parallelism", "40000"][..], "--max-parallelism"),
        (&["--checkpoint-every", "0"][..], "--checkpoint-every"),
        (&["--rescale-to", "0"][..], "--rescale-to"),
        (&["--storage-option", "novalue"][..], "--storage-option"),
        (&["--engine", "ramdisk"][..], "--engine"),
    ] {
        let (code, _, err) = simulate(args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(flag), "{args:?}: {err}");
    }
}

/// Without the `rocksdb` feature the command says how to get the engine instead of failing
/// later.
#[cfg(not(feature = "rocksdb"))]
#[test]
fn rocksdb_without_the_feature_says_how_to_build_it() {
    let (code, _, err) = simulate(&["--engine", "rocksdb"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("scripts/run --engine rocksdb"), "{err}");
}

/// Sizes that would abort, hang or exhaust memory are refused before anything runs, with
/// exit status 2 and the flag named (issue 14, item 12).
#[test]
fn sizes_that_cannot_run_are_refused_up_front() {
    for (args, flag) in [
        (&["--seeds", "0..1000000000000"][..], "--seeds"),
        (
            &["--keys", "100000000000", "--skew", "zipf:1.1"][..],
            "--keys",
        ),
        (&["--crashes", "4294967295"][..], "--crashes"),
        (&["--events", "10", "--crashes", "11"][..], "--crashes"),
        (&["--kill", "4294967295"][..], "--kill"),
    ] {
        let started = std::time::Instant::now();
        let (code, _, err) = simulate(args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(flag), "{args:?}: {err}");
        assert!(started.elapsed().as_secs() < 30, "{args:?} refused at once");
    }
}

/// Reads one line of `keyed-state <args>` and closes the pipe: the program must end quietly
/// (no panic message), as `… | head -1` expects (issue 14, item 12).
fn first_line_then_close(args: &[&str]) -> (Option<i32>, String) {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(env!("CARGO_BIN_EXE_keyed-state"))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    // The reader is dropped here: stdout is closed.
    let out = child.wait_with_output().unwrap();
    assert!(!line.is_empty());
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_closed_stdout_ends_the_program_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        CheckpointStore::open(Arc::new(LocalStorage::new(dir.path()).unwrap()), 1)
            .unwrap()
            .0,
    );
    let backend = KeyedStateBackend::<u64>::new(HeapEngine::new(EngineConfig::default()));
    let count = backend
        .value_state(&ValueStateDescriptor::<u64>::new("count"))
        .unwrap();
    count.update(&backend.key(1).unwrap(), &(), 1).unwrap();
    backend.checkpoint(&store, 1, &[]).unwrap().wait().unwrap();
    let chk = dir.path().join("chk-1");
    let (code, err) = first_line_then_close(&["inspect", chk.to_str().unwrap(), "--json"]);
    assert!(!err.contains("panicked"), "{err}");
    assert!(code == Some(0) || code.is_none(), "{code:?}: {err}");
    let (code, err) = first_line_then_close(&[
        "simulate",
        "--seeds",
        "1..4",
        "--events",
        "3000",
        "--checkpoint-every",
        "500",
    ]);
    assert!(!err.contains("panicked"), "{err}");
    assert!(code == Some(0) || code.is_none(), "{code:?}: {err}");
}

/// Errors name their subject (issue 14, item 13): a manifest moved into another checkpoint's
/// directory is refused as such, and names in a manifest are printed with control characters
/// escaped.
#[test]
fn inspect_names_a_manifest_in_the_wrong_directory_and_escapes_names() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        CheckpointStore::open(Arc::new(LocalStorage::new(dir.path()).unwrap()), 2)
            .unwrap()
            .0,
    );
    let backend = KeyedStateBackend::<u64>::new(HeapEngine::new(EngineConfig::default()));
    let evil = backend
        .value_state(&ValueStateDescriptor::<u64>::new("evil\u{1b}[2Jname"))
        .unwrap();
    evil.update(&backend.key(1).unwrap(), &(), 1).unwrap();
    backend.checkpoint(&store, 4, &[]).unwrap().wait().unwrap();
    backend.checkpoint(&store, 5, &[]).unwrap().wait().unwrap();
    let (chk4, chk5) = (dir.path().join("chk-4"), dir.path().join("chk-5"));
    let (code, out, _) = inspect(&[chk4.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(
        !out.contains('\u{1b}'),
        "an escape sequence printed raw: {out:?}"
    );
    assert!(out.contains("evil\\u{1b}[2Jname"), "{out}");
    // Swap the two manifests.
    let (m4, m5) = (chk4.join("_manifest"), chk5.join("_manifest"));
    let (b4, b5) = (std::fs::read(&m4).unwrap(), std::fs::read(&m5).unwrap());
    std::fs::write(&m4, b5).unwrap();
    std::fs::write(&m5, b4).unwrap();
    let (code, _, err) = inspect(&[chk5.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("records checkpoint 4 but lies in the directory of checkpoint 5"),
        "{err}"
    );
}

/// Two writers on one run directory (issue 14, item 2): while a run is live, a resumed worker
/// on its directory is refused with a typed error and touches nothing; once the first process
/// is SIGKILLed (the OS releases its lock), the worker resumes the run and matches the oracle.
#[test]
fn a_second_process_on_a_live_run_is_refused_until_the_first_dies() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let run = [
        "--seed",
        "1",
        "--events",
        "300000",
        "--keys",
        "300",
        "--checkpoint-every",
        "2000",
        "--crashes",
        "0",
        "--storage-faults",
        "0",
        "--random-rescales",
        "0",
        "--json",
    ];
    let mut first = Command::new(env!("CARGO_BIN_EXE_keyed-state"))
        .arg("simulate")
        .args(run)
        .args(["--dir", d])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let seed_dir = dir.path().join("seed-1");
    let started = std::time::Instant::now();
    while !seed_dir.join("job").is_dir() {
        assert!(
            started.elapsed().as_secs() < 60,
            "the first run did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let worker: Vec<&str> = run
        .iter()
        .copied()
        .chain(["--worker", "--dir", seed_dir.to_str().unwrap()])
        .collect();
    let (code, _, err) = simulate(&worker);
    assert!(
        first.try_wait().unwrap().is_none(),
        "the first run must still be live"
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("owned by another process"), "{err}");
    first.kill().unwrap(); // SIGKILL
    first.wait().unwrap();
    let (code, out, err) = simulate(&worker);
    assert_eq!(code, 0, "{err}");
    let report: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(report["divergences"], 0, "{report}");
}

/// A full disk (issue 14, item 10): `simulate` stops with the error and exit status 1 instead
/// of retrying forever, shows the library's warning about the aborted checkpoint, and the
/// directory it leaves resumes to a run that matches the oracle.
#[test]
fn a_full_disk_stops_simulate_with_exit_1_and_the_run_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let run = [
        "--seed",
        "1",
        "--events",
        "60000",
        "--checkpoint-every",
        "5000",
    ];
    let args: Vec<&str> = run
        .iter()
        .copied()
        .chain(["--disk-full", "--dir", d])
        .collect();
    let started = std::time::Instant::now();
    let (code, _, err) = simulate(&args);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("No space left on device"), "{err}");
    assert!(
        err.contains("WARN") && err.contains("checkpoint aborted"),
        "{err}"
    );
    assert!(started.elapsed().as_secs() < 60, "stopped, not spinning");
    let seed_dir = dir.path().join("seed-1");
    let worker: Vec<&str> = run
        .iter()
        .copied()
        .chain(["--json", "--worker", "--dir", seed_dir.to_str().unwrap()])
        .collect();
    let (code, out, err) = simulate(&worker);
    assert_eq!(code, 0, "{err}");
    let report: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(report["divergences"], 0, "{report}");
}
