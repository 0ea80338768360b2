//! `keyed-state timely`: the launcher (starts the processes of a local cluster, waits, checks
//! the result against the oracle) and one process of a cluster (`--process I --hostfile F`).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use keyed_state_cli::cluster::{ClusterConfig, ProcessReport, run_with, verify};
use keyed_state_cli::sim::EngineKind;

use crate::{parse_engine, parse_key_value};

#[derive(Debug, Args, Clone)]
pub struct TimelyArgs {
    /// Processes (each its own OS process, over TCP on 127.0.0.1 when launched here).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=256))]
    processes: u32,
    /// Worker threads per process.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=256))]
    workers: u32,
    /// Events in the input.
    #[arg(long, default_value_t = 200_000)]
    events: u64,
    /// Distinct user keys.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    keys: u64,
    /// The seed of the input.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Input positions per epoch (timely's time).
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..))]
    epoch_events: u64,
    /// Epochs between checkpoints.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..))]
    checkpoint_every: u64,
    /// Key groups: the most workers the job can ever have; fixed for its checkpoints.
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..=32_768))]
    max_parallelism: u32,
    /// The state engine: heap or rocksdb.
    #[arg(long, default_value = "heap", value_parser = parse_engine)]
    engine: EngineKind,
    /// The run's directory (checkpoints, RocksDB working copies, the host file). A directory
    /// that holds a run resumes it from its last committed checkpoint, on any number of
    /// processes and workers. Default: a temporary directory, removed after the run.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Checkpoint storage URL (s3://bucket/prefix with the `s3` feature) instead of DIR.
    #[arg(long)]
    storage: Option<String>,
    /// KEY=VALUE for remote storage, object_store's names.
    #[arg(long = "storage-option", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    storage_options: Vec<(String, String)>,
    /// Runs only process I of the cluster in --hostfile (on each machine, one per line of the
    /// file: `host:port`, in process order); without it, all processes start here.
    #[arg(long, value_name = "I", requires = "hostfile")]
    process: Option<usize>,
    /// The cluster's addresses, one `host:port` per process.
    #[arg(long, value_name = "FILE")]
    hostfile: Option<PathBuf>,
    /// Seconds to wait for every peer process to connect.
    #[arg(long, default_value_t = 60)]
    connect_timeout: u64,
    /// Skips the check against the oracle after the run.
    #[arg(long)]
    no_check: bool,
    /// Testing: every write to checkpoint storage takes this many milliseconds longer.
    #[arg(long, hide = true, default_value_t = 0)]
    slow_storage_ms: u64,
}

impl TimelyArgs {
    fn cluster(&self, dir: &Path) -> ClusterConfig {
        ClusterConfig {
            seed: self.seed,
            events: self.events,
            keys: self.keys,
            epoch_events: self.epoch_events,
            checkpoint_every: self.checkpoint_every,
            max_parallelism: self.max_parallelism,
            engine: self.engine,
            dir: dir.to_path_buf(),
            storage: self.storage.clone(),
            storage_settings: self.storage_options.clone(),
            slow_storage: Duration::from_millis(self.slow_storage_ms),
        }
    }
}

/// Runs the subcommand.
pub fn timely(args: TimelyArgs) -> ExitCode {
    if !args.engine.is_available() {
        eprintln!(
            "error: the {} engine: this build lacks the `rocksdb` cargo feature (cargo run --release --features timely,rocksdb)",
            args.engine
        );
        return ExitCode::from(2);
    }
    let result = match args.process {
        Some(i) => one_process(&args, i),
        None => launch(&args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

/// One process of the cluster: connects to its peers (or gives up after the timeout), runs
/// its workers to the end of the input, prints its report line.
fn one_process(args: &TimelyArgs, index: usize) -> Result<ExitCode, String> {
    let hostfile = args.hostfile.as_ref().ok_or("--process needs --hostfile")?;
    let addresses = read_hostfile(hostfile)?;
    if index >= addresses.len() {
        return Err(format!(
            "--process {index}, but {} lists {} processes",
            hostfile.display(),
            addresses.len()
        ));
    }
    let dir = args.dir.clone().ok_or(
        "--process needs --dir (the run's directory, the same for every process on a machine)",
    )?;
    let cfg = args.cluster(&dir);
    // A lost peer surfaces as a panic in timely's communication threads: end the process
    // with a clear message (a job restarts from its last commit; nothing is lost).
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("a panic");
        eprintln!(
            "error: process {index}: {msg} (at {}); a peer process is probably gone: restart the job, it resumes from its last committed checkpoint",
            info.location()
                .map_or_else(String::new, ToString::to_string)
        );
        std::process::exit(1);
    }));
    let threads = args.workers as usize;
    let communication = timely::CommunicationConfig::Cluster {
        threads,
        process: index,
        addresses: addresses.clone(),
        report: false,
        zerocopy: false,
    };
    // timely retries connecting forever: bound it.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("keyed-state-connect".into())
        .spawn(move || {
            let _ = tx.send(communication.try_build());
        })
        .map_err(|e| format!("starting the connection thread: {e}"))?;
    let timeout = Duration::from_secs(args.connect_timeout);
    let (builders, others) = match rx.recv_timeout(timeout) {
        Ok(Ok(built)) => built,
        Ok(Err(e)) => return Err(format!("process {index}: connecting to its peers: {e}")),
        Err(_) => {
            return Err(format!(
                "process {index}: could not reach every peer within {} s ({}); check that all {} processes run and the addresses are reachable",
                args.connect_timeout,
                addresses.join(", "),
                addresses.len()
            ));
        }
    };
    println!("ks connected {index}");
    let progress: Arc<dyn Fn(u64, u64) + Send + Sync> = Arc::new(move |epoch, events| {
        println!("ks progress {index} {epoch} {events}");
    });
    let r = run_with(&cfg, threads, builders, others, progress).map_err(|e| e.to_string())?;
    println!(
        "ks report {index} events={} resumed={} restore_ms={} run_ms={} checkpoints={} pause_ms={}",
        r.events,
        r.resumed_from,
        r.restore.as_millis(),
        r.run.as_millis(),
        r.checkpoints,
        r.longest_pause.as_millis()
    );
    Ok(ExitCode::SUCCESS)
}

fn read_hostfile(path: &Path) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("reading the host file {}: {e}", path.display()))?;
    let hosts: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect();
    if hosts.is_empty() {
        return Err(format!("the host file {} lists no process", path.display()));
    }
    Ok(hosts)
}

/// Starts every process of a local cluster, waits for them, checks the result.
fn launch(args: &TimelyArgs) -> Result<ExitCode, String> {
    let temp;
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => {
            temp = tempfile::Builder::new()
                .prefix("keyed-state-timely-")
                .tempdir()
                .map_err(|e| format!("creating a temporary directory: {e}"))?;
            temp.path().to_path_buf()
        }
    };
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let cfg = args.cluster(&dir);
    let hostfile = match &args.hostfile {
        Some(f) => f.clone(),
        None => {
            let f = dir.join("hosts");
            let ports = free_ports(args.processes as usize)?;
            let text: String = ports.iter().map(|p| format!("127.0.0.1:{p}\n")).collect();
            std::fs::write(&f, text).map_err(|e| format!("writing {}: {e}", f.display()))?;
            f
        }
    };
    eprintln!(
        "timely: {} processes × {} workers, {} engine, {} events in epochs of {}, a checkpoint every {} epochs, in {}",
        args.processes,
        args.workers,
        args.engine,
        args.events,
        args.epoch_events,
        args.checkpoint_every,
        dir.display()
    );
    let exe = std::env::current_exe().map_err(|e| format!("finding this program: {e}"))?;
    let started = Instant::now();
    let mut children = Vec::new();
    for i in 0..args.processes {
        let mut cmd = Command::new(&exe);
        cmd.arg("timely")
            .args(child_args(args, &dir, &hostfile))
            .args(["--process", &i.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("starting process {i}: {e}"))?;
        let stdout = child.stdout.take();
        children.push((child, stdout));
    }
    let total_epochs = cfg.last_epoch();
    let mut readers = Vec::new();
    for (i, (_, stdout)) in children.iter_mut().enumerate() {
        let Some(out) = stdout.take() else { continue };
        readers.push(std::thread::spawn(move || {
            let mut reports = Vec::new();
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let mut words = line.split_whitespace();
                match (words.next(), words.next()) {
                    (Some("ks"), Some("progress")) if i == 0 => {
                        let rest: Vec<&str> = words.collect();
                        if let [_, epoch, events] = rest.as_slice() {
                            eprintln!(
                                "  epoch {epoch}/{total_epochs}: process 0 fed {events} events"
                            );
                        }
                    }
                    (Some("ks"), Some("report")) => reports.push(line.clone()),
                    _ => {} // timely's own connection chatter
                }
            }
            reports
        }));
    }
    let mut failed = Vec::new();
    for (i, (mut child, _)) in children.into_iter().enumerate() {
        match child.wait() {
            Ok(s) if s.success() => {}
            Ok(s) => failed.push(format!("process {i} exited with {s}")),
            Err(e) => failed.push(format!("process {i}: {e}")),
        }
    }
    let wall = started.elapsed();
    let reports: Vec<String> = readers
        .into_iter()
        .filter_map(|r| r.join().ok())
        .flatten()
        .collect();
    if !failed.is_empty() {
        return Err(format!("the job failed: {}", failed.join("; ")));
    }
    let parsed: Vec<ProcessReport> = reports.iter().map(|l| parse_report(l)).collect();
    let events: u64 = parsed.iter().map(|r| r.events).sum();
    let run = parsed.iter().map(|r| r.run).max().unwrap_or_default();
    let restore = parsed.iter().map(|r| r.restore).max().unwrap_or_default();
    let pause = parsed
        .iter()
        .map(|r| r.longest_pause)
        .max()
        .unwrap_or_default();
    let resumed = parsed.first().map_or(1, |r| r.resumed_from);
    let rate = events as f64 / run.as_secs_f64().max(1e-9);
    println!(
        "ran: {events} events from epoch {resumed} in {:.2} s ({rate:.0} events/s), restore {} ms, longest pause between epochs {} ms, {:.2} s wall",
        run.as_secs_f64(),
        restore.as_millis(),
        pause.as_millis(),
        wall.as_secs_f64()
    );
    if args.no_check {
        return Ok(ExitCode::SUCCESS);
    }
    let scratch = tempfile::Builder::new()
        .prefix("keyed-state-verify-")
        .tempdir()
        .map_err(|e| format!("creating a temporary directory: {e}"))?;
    let v = verify(&cfg, scratch.path()).map_err(|e| e.to_string())?;
    println!(
        "committed: {} checkpoints, {} outputs, output digest {:016x}, state digest {:016x}",
        v.commits, v.outputs, v.output_digest, v.state_digest
    );
    if v.differences.is_empty() {
        println!("check: the committed output and the final state equal the oracle's");
        Ok(ExitCode::SUCCESS)
    } else {
        println!(
            "check: {} differences from the oracle:",
            v.differences.len()
        );
        for d in v.differences.iter().take(20) {
            println!("  {d}");
        }
        Ok(ExitCode::from(1))
    }
}

/// The arguments a launched process gets: the launcher's, minus what the launcher decides.
fn child_args(args: &TimelyArgs, dir: &Path, hostfile: &Path) -> Vec<String> {
    let mut v = vec![
        format!("--workers={}", args.workers),
        format!("--events={}", args.events),
        format!("--keys={}", args.keys),
        format!("--seed={}", args.seed),
        format!("--epoch-events={}", args.epoch_events),
        format!("--checkpoint-every={}", args.checkpoint_every),
        format!("--max-parallelism={}", args.max_parallelism),
        format!("--engine={}", args.engine),
        format!("--dir={}", dir.display()),
        format!("--hostfile={}", hostfile.display()),
        format!("--connect-timeout={}", args.connect_timeout),
        format!("--slow-storage-ms={}", args.slow_storage_ms),
    ];
    if let Some(s) = &args.storage {
        v.push(format!("--storage={s}"));
    }
    for (k, val) in &args.storage_options {
        v.push(format!("--storage-option={k}={val}"));
    }
    v
}

fn parse_report(line: &str) -> ProcessReport {
    let mut r = ProcessReport::default();
    for word in line.split_whitespace() {
        let Some((k, v)) = word.split_once('=') else {
            continue;
        };
        let n: u64 = v.parse().unwrap_or(0);
        match k {
            "events" => r.events = n,
            "resumed" => r.resumed_from = n,
            "restore_ms" => r.restore = Duration::from_millis(n),
            "run_ms" => r.run = Duration::from_millis(n),
            "checkpoints" => r.checkpoints = n,
            "pause_ms" => r.longest_pause = Duration::from_millis(n),
            _ => {}
        }
    }
    r
}

/// `n` ports free on 127.0.0.1 now (bound, read, released).
fn free_ports(n: usize) -> Result<Vec<u16>, String> {
    let listeners: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("finding free ports on 127.0.0.1: {e}"))?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("finding free ports on 127.0.0.1: {e}"))
}
