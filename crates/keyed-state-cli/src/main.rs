//! The `keyed-state` command: tools around the library.
//!
//! `keyed-state simulate` runs the deterministic simulator (see `keyed_state_cli::sim`): a
//! seeded stream through a stateful job with checkpoints and crashes, checked against an
//! oracle.
//!
//! `keyed-state inspect <checkpoint dir>` prints a checkpoint's manifest for people (states,
//! key groups, files, sizes, totals); `--json` prints it for tools; `--verify` checks every
//! listed file's presence, size and crc32 and exits 1 naming each bad file.

use std::io::Write;
use std::ops::Range;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

#[cfg(feature = "timely")]
mod timely_cmd;
use keyed_state_cli::inspect;
use keyed_state_cli::sim::{
    EngineKind, MAX_FAULTS, MAX_SEEDS, SimConfig, SimReport, Skew, run_with_progress,
};

/// Tools for keyed-state: the simulator and checkpoint inspection.
#[derive(Debug, Parser)]
#[command(name = "keyed-state", version, about, arg_required_else_help = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs a seeded stream through a stateful job on several instances with checkpoints,
    /// crashes, storage faults and rescales, and checks the restored state, the committed
    /// output and the final state against an oracle.
    Simulate(SimulateArgs),
    /// Prints a checkpoint's manifest: states, key groups, files, sizes.
    Inspect(InspectArgs),
    /// Runs the simulator's job on timely-dataflow: several processes over TCP, aligned
    /// checkpoints, exactly-once output, restarts on any number of processes and workers, then
    /// checks the committed output and the final state against the oracle.
    #[cfg(feature = "timely")]
    Timely(timely_cmd::TimelyArgs),
}

#[derive(Debug, Args)]
struct InspectArgs {
    /// The checkpoint directory (chk-<id>, inside a storage root).
    dir: PathBuf,
    /// Prints JSON for tools.
    #[arg(long)]
    json: bool,
    /// Checks every file's presence, size and crc32; exits 1 if any is bad.
    #[arg(long)]
    verify: bool,
}

#[derive(Debug, Args)]
struct SimulateArgs {
    /// The seed of the input and the fault points.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// A sweep of seeds A..B (B excluded); overrides --seed.
    #[arg(long, value_parser = parse_seeds, value_name = "A..B")]
    seeds: Option<Range<u64>>,
    /// Events in the input.
    #[arg(long, default_value_t = 200_000)]
    events: u64,
    /// Distinct user keys.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    keys: u64,
    /// Key distribution: uniform or zipf:S.
    #[arg(long, default_value = "uniform", value_parser = parse_skew)]
    skew: Skew,
    /// The state engine: heap or rocksdb.
    #[arg(long, default_value = "heap", value_parser = parse_engine)]
    engine: EngineKind,
    /// Instances.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=32_768))]
    parallelism: u32,
    /// Key groups.
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..=32_768))]
    max_parallelism: u32,
    /// Events between checkpoints.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..))]
    checkpoint_every: u64,
    /// Crashes at seeded points: between records, during checkpoints, during restores.
    #[arg(long, default_value_t = 3)]
    crashes: u32,
    /// Transient storage failures at seeded checkpoints (the checkpoint aborts, the job goes
    /// on).
    #[arg(long, default_value_t = 2)]
    storage_faults: u32,
    /// A crash during a write leaves nothing (default: half the file, a torn tail).
    #[arg(long)]
    no_torn_writes: bool,
    /// A real storage error: the storage of a seeded instance fills up at a seeded checkpoint
    /// (writes fail with ENOSPC); the run stops with that error and exit status 1, and
    /// resuming its --dir after that goes on from the latest job checkpoint.
    #[arg(long)]
    disk_full: bool,
    /// Rescale to Q instances at the first checkpoint past half the input.
    #[arg(long, value_name = "Q", value_parser = clap::value_parser!(u32).range(1..=32_768))]
    rescale_to: Option<u32>,
    /// Rescales to a seeded number of instances (1..=4) at seeded checkpoints.
    #[arg(long, default_value_t = 1)]
    random_rescales: u32,
    /// Real-process mode: run the job in a worker child process and SIGKILL it this many
    /// times (3 for a bare --kill) at seeded input positions, restarting it each time
    /// (in-process faults are off).
    #[arg(long, value_name = "N", num_args = 0..=1, default_value_t = 0, default_missing_value = "3",
          value_parser = clap::value_parser!(u32).range(0..=i64::from(MAX_FAULTS)))]
    kill: u32,
    /// Keep checkpoints and databases here, one seed-<N> directory per seed (default: a
    /// removed temporary directory).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Checkpoint storage URL: s3://bucket/prefix (cargo feature s3; credentials and endpoint
    /// from the AWS_* environment and --storage-option) or file:///path (default: --dir); one
    /// seed-<N> prefix per seed.
    #[arg(long)]
    storage: Option<String>,
    /// KEY=VALUE for remote storage, object_store's names (aws_endpoint=http://127.0.0.1:9000,
    /// aws_allow_http=true, ...).
    #[arg(long = "storage-option", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    storage_options: Vec<(String, String)>,
    /// One JSON object per seed on stdout.
    #[arg(long)]
    json: bool,
    /// The child of --kill: continues the run in --dir, prints progress lines and its report
    /// on stdout.
    #[arg(long, hide = true)]
    worker: bool,
}

fn parse_seeds(s: &str) -> Result<Range<u64>, String> {
    let (a, b) = s
        .split_once("..")
        .ok_or_else(|| format!("expected A..B, not {s}"))?;
    let a: u64 = a.parse().map_err(|e| format!("{a}: {e}"))?;
    let b: u64 = b.parse().map_err(|e| format!("{b}: {e}"))?;
    if a >= b {
        return Err(format!("A must be below B in A..B, not {s}"));
    }
    if b - a > MAX_SEEDS {
        return Err(format!(
            "at most {MAX_SEEDS} seeds in one sweep, not {}",
            b - a
        ));
    }
    Ok(a..b)
}

fn parse_skew(s: &str) -> Result<Skew, String> {
    if s == "uniform" {
        return Ok(Skew::Uniform);
    }
    match s.strip_prefix("zipf:").map(str::parse::<f64>) {
        Some(Ok(e)) if e > 0.0 && e.is_finite() => Ok(Skew::Zipf(e)),
        _ => Err(format!("uniform or zipf:S with S > 0, not {s}")),
    }
}

fn parse_engine(s: &str) -> Result<EngineKind, String> {
    let engine = match s {
        "heap" => EngineKind::Heap,
        "rocksdb" => EngineKind::RocksDb,
        other => return Err(format!("heap or rocksdb, not {other}")),
    };
    if !engine.is_available() {
        return Err(format!(
            "this keyed-state was built without the {engine} engine: `bash scripts/run --engine \
             {engine}` builds it (RocksDB's C++, 15-25 minutes once per machine), as does \
             `cargo build --release -p keyed-state-cli --features {engine}`"
        ));
    }
    Ok(engine)
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("KEY=VALUE, not {s}"))
}

fn main() -> ExitCode {
    init_logging();
    match Cli::parse().command {
        Command::Simulate(args) => simulate(args),
        #[cfg(feature = "timely")]
        Command::Timely(args) => timely_cmd::timely(args),
        Command::Inspect(args) => match inspect_command(&args) {
            Ok(code) => code,
            Err(e) if closed_stdout(&e) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
    }
}

/// The library's events on stderr: warnings by default (an aborted checkpoint, a cleanup that
/// failed), more with `KEYED_STATE_LOG=info` or `debug`, none with `off`.
fn init_logging() {
    use tracing_subscriber::filter::LevelFilter;
    let level = match std::env::var("KEYED_STATE_LOG").as_deref().map(str::trim) {
        Ok("off") => LevelFilter::OFF,
        Ok("error") => LevelFilter::ERROR,
        Ok("info") => LevelFilter::INFO,
        Ok("debug") => LevelFilter::DEBUG,
        Ok("trace") => LevelFilter::TRACE,
        _ => LevelFilter::WARN,
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .with_target(false)
        .without_time()
        .init();
}

/// Whether `e` is a write to a stdout whose reader went away (`keyed-state inspect | head`):
/// the program then ends quietly, as the reader wanted.
fn closed_stdout(e: &keyed_state::Error) -> bool {
    matches!(e, keyed_state::Error::Io(io) if io.kind() == std::io::ErrorKind::BrokenPipe)
}

/// Prints one line on stdout; `false` when stdout is closed (the caller stops quietly).
fn print_line(line: &str) -> bool {
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{line}").and_then(|()| out.flush()) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => false,
        Err(e) => {
            eprintln!("error: writing to stdout: {e}");
            false
        }
    }
}

fn inspect_command(args: &InspectArgs) -> keyed_state::Result<ExitCode> {
    let found = inspect::inspect(&args.dir, args.verify)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&inspect::to_json(&found, args.verify))
                .unwrap_or_default()
        )?;
    } else {
        inspect::print_human(&mut out, &found, args.verify)?;
    }
    Ok(if found.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn simulate(args: SimulateArgs) -> ExitCode {
    // Lazily: a sweep is never materialized (its size is bounded by `parse_seeds` anyway).
    let seeds: Range<u64> = match &args.seeds {
        Some(range) => range.clone(),
        None => args.seed..args.seed.saturating_add(1),
    };
    let kills = args.kill;
    let base = SimConfig {
        events: args.events,
        keys: args.keys,
        skew: args.skew,
        engine: args.engine,
        parallelism: args.parallelism.min(args.max_parallelism),
        max_parallelism: args.max_parallelism,
        checkpoint_every: args.checkpoint_every,
        crashes: if kills > 0 { 0 } else { args.crashes },
        storage_faults: if kills > 0 { 0 } else { args.storage_faults },
        torn_writes: !args.no_torn_writes,
        disk_full: args.disk_full && kills == 0,
        rescale_to: args.rescale_to.map(|q| q.min(args.max_parallelism)),
        random_rescales: if kills > 0 { 0 } else { args.random_rescales },
        resume: args.worker,
        storage_settings: args.storage_options.clone(),
        ..SimConfig::default()
    };
    if let Err(message) = base.validate() {
        eprintln!("error: {message}");
        return ExitCode::from(2);
    }
    if args.worker {
        // The child of --kill: the parent passes the seed's own directory and storage URL.
        let cfg = SimConfig {
            seed: seeds.start,
            dir: args.dir.clone(),
            storage: args.storage.clone(),
            ..base
        };
        if cfg.dir.is_none() {
            eprintln!("error: --worker needs --dir");
            return ExitCode::from(2);
        }
        return match keyed_state_cli::sim::kill::run_worker(&cfg, &mut std::io::stdout()) {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("worker: error: {e}");
                ExitCode::from(2)
            }
        };
    }
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!("error: cannot find this program to start workers: {e}");
            return ExitCode::from(2);
        }
    };
    let mut failed = false;
    let mut totals = Totals::default();
    // Progress on stderr, drawn only on a terminal (indicatif hides it otherwise).
    let seed_count = seeds.end - seeds.start;
    let bar = indicatif::ProgressBar::new(base.events.saturating_mul(seed_count));
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} seed {msg} [{bar:30}] {pos}/{len} events, {per_sec}, eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    for (n, seed) in (0u64..).zip(seeds.clone()) {
        bar.set_message(seed.to_string());
        let offset = base.events.saturating_mul(n);
        let cfg = SimConfig {
            seed,
            dir: args.dir.as_ref().map(|d| d.join(format!("seed-{seed}"))),
            storage: args
                .storage
                .as_ref()
                .map(|u| format!("{}/seed-{seed}", u.trim_end_matches('/'))),
            ..base.clone()
        };
        let result = if kills > 0 {
            keyed_state_cli::sim::kill::run_killed(&cfg, kills, &exe, &mut |at| {
                bar.set_position(offset + at)
            })
        } else {
            run_with_progress(&cfg, &mut |at| bar.set_position(offset + at))
        };
        let r = match result {
            Ok(r) => r,
            Err(e) => {
                bar.suspend(|| eprintln!("seed {seed}: error: {e}"));
                failed = true;
                continue;
            }
        };
        bar.set_position(offset + base.events);
        totals.add(&r);
        let line = if args.json {
            r.to_json().to_string()
        } else {
            summary(&r, kills > 0)
        };
        // Printed with the progress bar out of the way; a closed stdout ends the sweep.
        if !bar.suspend(|| print_line(&line)) {
            bar.finish_and_clear();
            return if failed {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            };
        }
        if !r.divergences.is_empty() {
            failed = true;
            bar.suspend(|| {
                for d in &r.divergences {
                    eprintln!("seed {seed}: {d}");
                }
                let kill = if kills > 0 {
                    format!(" --kill {kills}")
                } else {
                    String::new()
                };
                eprintln!("replay: {}{kill}", cfg.command());
            });
        }
    }
    bar.finish_and_clear();
    if !args.json {
        eprintln!(
            "total: {} seeds, {} events processed, {} checkpoints, {} crashes, {} divergences, {:.1} s",
            seed_count,
            totals.processed,
            totals.checkpoints,
            totals.crashes,
            totals.divergences,
            totals.elapsed_s
        );
    }
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// Sums over the seeds of a sweep.
#[derive(Debug, Default)]
struct Totals {
    processed: u64,
    crashes: u64,
    checkpoints: u64,
    divergences: usize,
    elapsed_s: f64,
}

impl Totals {
    fn add(&mut self, r: &SimReport) {
        self.processed += r.processed;
        self.crashes += r.crashes;
        self.checkpoints += r.checkpoints;
        self.divergences += r.divergences.len();
        self.elapsed_s += r.elapsed_s;
    }
}

/// One seed's line for people.
fn summary(r: &SimReport, killed: bool) -> String {
    // Display only: events per second needs no more precision than a float gives.
    let rate = r.processed as f64 / r.elapsed_s.max(1e-9);
    format!(
        "seed {} on {}: {} events ({} processed with replays, {rate:.0} events/s); \
         {} checkpoints completed ({} bytes uploaded), {} aborted; {} crashes ({} during \
         checkpoints, {} during restores{}), {} restores, {} rescales; {} committed \
         outputs; state {:016x}, output {:016x}: {}",
        r.seed,
        r.engine,
        r.events,
        r.processed,
        r.checkpoints,
        r.bytes_checkpointed,
        r.checkpoints_aborted,
        r.crashes,
        r.crashes_in_checkpoint,
        r.crashes_in_restore,
        if killed {
            ", SIGKILLs of the worker"
        } else {
            ""
        },
        r.restores,
        r.rescales,
        r.outputs,
        r.state_digest,
        r.output_digest,
        if r.divergences.is_empty() {
            "matches the oracle".to_string()
        } else {
            format!("{} DIVERGENCES", r.divergences.len())
        }
    )
}
