//! The `keyed-state` command: tools around the library.
//!
//! `keyed-state simulate` runs the deterministic simulator (see `keyed_state::sim`): a seeded
//! stream through a stateful job with checkpoints and crashes, checked against an oracle.
//!
//! `keyed-state inspect <checkpoint dir>` prints a checkpoint's manifest for people (states,
//! key groups, files, sizes, totals); `--json` prints it for tools; `--verify` checks every
//! listed file's presence, size and crc32 and exits non-zero naming each bad file.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Arg, ArgAction, Command};
use keyed_state::checkpoint::path::MANIFEST_FILE;
use keyed_state::checkpoint::{FileRole, LocalStorage, Manifest, verify_files};

fn cli() -> Command {
    Command::new("keyed-state")
        .about("Tools for keyed-state checkpoints")
        .version(env!("CARGO_PKG_VERSION"))
        .subcommand_required(true)
        .arg_required_else_help(true)
        .subcommand(simulate_command())
        .subcommand(
            Command::new("inspect")
                .about("Prints a checkpoint's manifest: states, key groups, files, sizes")
                .arg(
                    Arg::new("dir")
                        .help("The checkpoint directory (chk-<id>, inside a storage root)")
                        .required(true)
                        .value_parser(clap::value_parser!(PathBuf)),
                )
                .arg(
                    Arg::new("json")
                        .long("json")
                        .help("Prints JSON for tools")
                        .action(ArgAction::SetTrue),
                )
                .arg(
                    Arg::new("verify")
                        .long("verify")
                        .help("Checks every file's presence, size and crc32; exits 1 if any is bad")
                        .action(ArgAction::SetTrue),
                ),
        )
}

fn main() -> ExitCode {
    let matches = cli().get_matches();
    match matches.subcommand() {
        Some(("simulate", m)) => simulate(m),
        Some(("inspect", m)) => {
            let dir = m.get_one::<PathBuf>("dir").cloned().unwrap_or_default();
            match inspect(&dir, m.get_flag("json"), m.get_flag("verify")) {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(2)
                }
            }
        }
        _ => ExitCode::from(2),
    }
}

fn inspect(dir: &Path, json: bool, verify: bool) -> keyed_state::Result<ExitCode> {
    let dir = dir.canonicalize()?;
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let root = dir.parent().unwrap_or(&dir).to_path_buf();
    let manifest_path = format!("{name}/{MANIFEST_FILE}");
    let bytes = std::fs::read(dir.join(MANIFEST_FILE))?;
    let manifest = Manifest::decode(&manifest_path, &bytes)?;
    let problems = if verify {
        let storage = Arc::new(LocalStorage::new(&root)?);
        verify_files(storage.as_ref(), &manifest)
    } else {
        Vec::new()
    };
    if json {
        println!("{}", to_json(&manifest, verify.then_some(&problems)));
    } else {
        print_human(&manifest);
        if verify {
            if problems.is_empty() {
                println!(
                    "verify: all {} files present, sizes and crc32 match",
                    manifest.files.len()
                );
            } else {
                for p in &problems {
                    println!("BAD {p}");
                }
            }
        }
    }
    Ok(if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

fn role(r: FileRole) -> &'static str {
    match r {
        FileRole::SharedSst => "shared sst",
        FileRole::Private => "private",
        FileRole::KeyGroupData => "key-group data",
        FileRole::Timers => "timers",
    }
}

fn print_human(m: &Manifest) {
    println!(
        "checkpoint {} ({} snapshot, {} engine)",
        m.checkpoint_id, m.kind, m.engine
    );
    println!(
        "key groups {} of {} (max_parallelism {})",
        m.range,
        m.range.len(),
        m.max_parallelism
    );
    println!("taken at {} ms (engine clock)", m.created_at_millis);
    for (name, offset) in &m.offsets {
        println!("input offset {name} = {offset}");
    }
    println!("states ({}):", m.states.len());
    for s in &m.states {
        let ttl = s
            .ttl
            .as_ref()
            .map(|t| format!(", ttl {:?}", t.ttl()))
            .unwrap_or_default();
        let user_key = s
            .user_key_codec
            .as_ref()
            .map(|c| format!(", user key {c}"))
            .unwrap_or_default();
        println!(
            "  {:<24} {:<12} key {}, namespace {}{user_key}, value {}{ttl}",
            s.name, s.kind, s.key_codec, s.namespace_codec, s.value_codec
        );
    }
    if !m.timers.is_empty() {
        println!("timer services ({}):", m.timers.len());
        for t in &m.timers {
            println!(
                "  {:<24} key {}, namespace {}",
                t.name, t.key_codec, t.namespace_codec
            );
        }
    }
    println!("files ({}):", m.files.len());
    for f in &m.files {
        let blocks = if f.blocks.is_empty() {
            String::new()
        } else {
            format!(", {} key-group blocks", f.blocks.len())
        };
        println!(
            "  {:<48} {:>12} crc32 {:08x} {}{blocks}",
            f.path,
            human_bytes(f.size),
            f.crc32,
            role(f.role)
        );
    }
    println!(
        "total: full size {} ({} bytes), uploaded by this checkpoint {} ({} bytes)",
        human_bytes(m.full_size()),
        m.full_size(),
        human_bytes(m.uploaded_bytes),
        m.uploaded_bytes
    );
}

fn to_json(m: &Manifest, problems: Option<&Vec<keyed_state::CheckpointError>>) -> String {
    use serde_json::json;
    let states: Vec<_> = m
        .states
        .iter()
        .map(|s| {
            json!({
                "name": s.name,
                "kind": s.kind.to_string(),
                "key_codec": s.key_codec,
                "namespace_codec": s.namespace_codec,
                "user_key_codec": s.user_key_codec,
                "value_codec": s.value_codec,
                "ttl_millis": s.ttl.as_ref().map(|t| t.ttl_millis()),
            })
        })
        .collect();
    let files: Vec<_> = m
        .files
        .iter()
        .map(|f| {
            json!({
                "path": f.path,
                "role": role(f.role),
                "size": f.size,
                "crc32": f.crc32,
                "blocks": f.blocks.iter().map(|b| json!({
                    "group": b.group, "offset": b.offset, "len": b.len,
                    "raw_len": b.raw_len, "crc32": b.crc32,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let mut out = json!({
        "checkpoint_id": m.checkpoint_id,
        "kind": m.kind.to_string(),
        "engine": m.engine,
        "max_parallelism": m.max_parallelism,
        "key_groups": { "start": m.range.start(), "end": m.range.end(), "count": m.range.len() },
        "created_at_millis": m.created_at_millis,
        "offsets": m.offsets.iter().map(|(n, o)| json!({"name": n, "offset": o})).collect::<Vec<_>>(),
        "states": states,
        "timer_services": m.timers.iter().map(|t| json!({
            "name": t.name, "key_codec": t.key_codec, "namespace_codec": t.namespace_codec,
        })).collect::<Vec<_>>(),
        "files": files,
        "full_size": m.full_size(),
        "uploaded_bytes": m.uploaded_bytes,
    });
    if let Some(problems) = problems {
        out["verify"] = json!({
            "ok": problems.is_empty(),
            "problems": problems.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
        });
    }
    serde_json::to_string_pretty(&out).unwrap_or_default()
}

fn simulate_command() -> Command {
    let num = |name: &'static str, default: &'static str, help: &'static str| {
        Arg::new(name)
            .long(name)
            .default_value(default)
            .help(help)
            .value_parser(clap::value_parser!(u64))
    };
    Command::new("simulate")
        .about(
            "Runs a seeded stream through a stateful job on several instances with checkpoints, \
             crashes, storage faults and rescales, and checks the restored state, the committed \
             output and the final state against an oracle",
        )
        .arg(num("seed", "1", "The seed of the input and the fault points"))
        .arg(
            Arg::new("seeds")
                .long("seeds")
                .help("A sweep of seeds A..B (B excluded); overrides --seed"),
        )
        .arg(num("events", "200000", "Events in the input"))
        .arg(num("keys", "10000", "Distinct user keys"))
        .arg(
            Arg::new("skew")
                .long("skew")
                .default_value("uniform")
                .help("Key distribution: uniform or zipf:S"),
        )
        .arg(
            Arg::new("engine")
                .long("engine")
                .default_value("heap")
                .value_parser(["heap", "rocksdb"])
                .help("The state engine"),
        )
        .arg(num("parallelism", "2", "Instances"))
        .arg(num("max-parallelism", "128", "Key groups"))
        .arg(num("checkpoint-every", "20000", "Events between checkpoints"))
        .arg(num(
            "crashes",
            "3",
            "Crashes at seeded points: between records, during checkpoints, during restores",
        ))
        .arg(num(
            "storage-faults",
            "2",
            "Transient storage failures at seeded checkpoints (the checkpoint aborts, the job goes on)",
        ))
        .arg(
            Arg::new("no-torn-writes")
                .long("no-torn-writes")
                .action(ArgAction::SetTrue)
                .help("A crash during a write leaves nothing (default: half the file, a torn tail)"),
        )
        .arg(
            Arg::new("rescale-to")
                .long("rescale-to")
                .value_parser(clap::value_parser!(u32))
                .help("Rescale to Q instances at the first checkpoint past half the input"),
        )
        .arg(num(
            "random-rescales",
            "1",
            "Rescales to a seeded number of instances (1..=4) at seeded checkpoints",
        ))
        .arg(num(
            "kill",
            "0",
            "Real-process mode: run the job in a worker child process and SIGKILL it this many \
             times at seeded input positions (in-process faults are off)",
        ))
        .arg(
            Arg::new("dir")
                .long("dir")
                .value_parser(clap::value_parser!(PathBuf))
                .help(
                    "Keep checkpoints and databases here, one seed-<N> directory per seed \
                     (default: a removed temporary directory)",
                ),
        )
        .arg(
            Arg::new("storage")
                .long("storage")
                .help(
                    "Checkpoint storage URL: s3://bucket/prefix (cargo feature s3; credentials \
                     and endpoint from the AWS_* environment and --storage-option) or \
                     file:///path (default: --dir); one seed-<N> prefix per seed",
                ),
        )
        .arg(
            Arg::new("storage-option")
                .long("storage-option")
                .action(ArgAction::Append)
                .help("KEY=VALUE for remote storage, object_store's names (aws_endpoint=http://127.0.0.1:9000, aws_allow_http=true, ...)"),
        )
        .arg(
            Arg::new("json")
                .long("json")
                .action(ArgAction::SetTrue)
                .help("One JSON object per seed on stdout"),
        )
        .arg(
            // The child of --kill: continues the run in --dir, prints progress lines and its
            // report on stdout.
            Arg::new("worker")
                .long("worker")
                .hide(true)
                .action(ArgAction::SetTrue),
        )
}

fn report_json(r: &keyed_state::sim::SimReport) -> serde_json::Value {
    serde_json::json!({
        "seed": r.seed, "engine": r.engine, "events": r.events,
        "processed": r.processed, "checkpoints": r.checkpoints,
        "checkpoints_aborted": r.checkpoints_aborted,
        "crashes": r.crashes, "crashes_in_checkpoint": r.crashes_in_checkpoint,
        "crashes_in_restore": r.crashes_in_restore,
        "restores": r.restores, "rescales": r.rescales,
        "bytes_checkpointed": r.bytes_checkpointed, "outputs": r.outputs,
        "divergences": r.divergences.len(),
        "divergence_details": r.divergences.iter().map(|d| serde_json::json!({
            "step": d.step, "operator": d.operator, "state": d.state, "key": d.key,
            "detail": d.detail, "expected": d.expected, "actual": d.actual,
        })).collect::<Vec<_>>(),
        "state_digest": format!("{:016x}", r.state_digest),
        "output_digest": format!("{:016x}", r.output_digest),
        "elapsed_s": r.elapsed_s,
    })
}

fn simulate(m: &clap::ArgMatches) -> ExitCode {
    use keyed_state::sim::{EngineKind, SimConfig, Skew, run_with_progress};
    let get = |name: &str| m.get_one::<u64>(name).copied().unwrap_or_default();
    let small = |name: &str| u32::try_from(get(name)).unwrap_or(u32::MAX);
    let skew = match m.get_one::<String>("skew").map(String::as_str) {
        Some("uniform") | None => Skew::Uniform,
        Some(other) => match other
            .strip_prefix("zipf:")
            .and_then(|s| s.parse::<f64>().ok())
        {
            Some(s) if s > 0.0 => Skew::Zipf(s),
            _ => {
                eprintln!("error: --skew must be uniform or zipf:S with S > 0, not {other}");
                return ExitCode::from(2);
            }
        },
    };
    let seeds: Vec<u64> = match m.get_one::<String>("seeds") {
        None => vec![get("seed")],
        Some(range) => match range
            .split_once("..")
            .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)))
        {
            Some((a, b)) if a < b => (a..b).collect(),
            _ => {
                eprintln!("error: --seeds must be A..B with A < B, not {range}");
                return ExitCode::from(2);
            }
        },
    };
    let max_parallelism = get("max-parallelism");
    if !(1..=32_768).contains(&max_parallelism) {
        eprintln!("error: --max-parallelism must be 1..=32768, not {max_parallelism}");
        return ExitCode::from(2);
    }
    let engine = match m.get_one::<String>("engine").map(String::as_str) {
        Some("rocksdb") => EngineKind::RocksDb,
        _ => EngineKind::Heap,
    };
    let json = m.get_flag("json");
    let worker = m.get_flag("worker");
    let mut storage_settings = Vec::new();
    for option in m.get_many::<String>("storage-option").into_iter().flatten() {
        match option.split_once('=') {
            Some((k, v)) => storage_settings.push((k.to_owned(), v.to_owned())),
            None => {
                eprintln!("error: --storage-option takes KEY=VALUE, not {option}");
                return ExitCode::from(2);
            }
        }
    }
    let storage = m.get_one::<String>("storage").cloned();
    let kills = small("kill");
    let base = SimConfig {
        events: get("events"),
        keys: get("keys").max(1),
        skew,
        engine,
        parallelism: small("parallelism").clamp(1, max_parallelism as u32),
        max_parallelism: max_parallelism as u32,
        checkpoint_every: get("checkpoint-every").max(1),
        crashes: if kills > 0 { 0 } else { small("crashes") },
        storage_faults: if kills > 0 {
            0
        } else {
            small("storage-faults")
        },
        torn_writes: !m.get_flag("no-torn-writes"),
        rescale_to: m
            .get_one::<u32>("rescale-to")
            .map(|q| (*q).clamp(1, max_parallelism as u32)),
        random_rescales: if kills > 0 {
            0
        } else {
            small("random-rescales")
        },
        resume: worker,
        ..SimConfig::default()
    };
    let dir = m.get_one::<PathBuf>("dir");
    if worker {
        // The parent passes the seed's own storage URL.
        return worker_main(base, seeds[0], dir, storage);
    }
    let mut failed = false;
    let mut totals = (0u64, 0u64, 0u64, 0u64, 0f64);
    // Progress on stderr, drawn only on a terminal (indicatif hides it otherwise).
    let bar = indicatif::ProgressBar::new(base.events.saturating_mul(seeds.len() as u64));
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} seed {msg} [{bar:30}] {pos}/{len} events, {per_sec}, eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    for (n, seed) in seeds.iter().copied().enumerate() {
        bar.set_message(seed.to_string());
        let offset = base.events * n as u64;
        let cfg = SimConfig {
            seed,
            dir: dir.map(|d| d.join(format!("seed-{seed}"))),
            storage: storage
                .as_ref()
                .map(|u| format!("{}/seed-{seed}", u.trim_end_matches('/'))),
            ..base.clone()
        };
        let result = if kills > 0 {
            run_killed(&cfg, kills, &mut |at| bar.set_position(offset + at))
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
        totals.0 += r.processed;
        totals.1 += r.crashes;
        totals.2 += r.checkpoints;
        totals.3 += r.divergences.len() as u64;
        totals.4 += r.elapsed_s;
        let line = if json {
            report_json(&r).to_string()
        } else {
            format!(
                "seed {seed} on {}: {} events ({} processed with replays, {:.0} events/s); \
                 {} checkpoints completed ({} bytes uploaded), {} aborted; {} crashes ({} during \
                 checkpoints, {} during restores{}), {} restores, {} rescales; {} committed \
                 outputs; state {:016x}, output {:016x}: {}",
                r.engine,
                r.events,
                r.processed,
                r.processed as f64 / r.elapsed_s.max(1e-9),
                r.checkpoints,
                r.bytes_checkpointed,
                r.checkpoints_aborted,
                r.crashes,
                r.crashes_in_checkpoint,
                r.crashes_in_restore,
                if kills > 0 {
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
        };
        // Printed with the progress bar out of the way.
        bar.suspend(|| println!("{line}"));
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
    if !json {
        eprintln!(
            "total: {} seeds, {} events processed, {} checkpoints, {} crashes, {} divergences, {:.1} s",
            seeds.len(),
            totals.0,
            totals.2,
            totals.1,
            totals.3,
            totals.4
        );
    }
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// The child process of `--kill`: continues the run in `dir`, printing `progress <position>`
/// lines and finally its report (one JSON line) on stdout.
fn worker_main(
    base: keyed_state::sim::SimConfig,
    seed: u64,
    dir: Option<&PathBuf>,
    storage: Option<String>,
) -> ExitCode {
    use std::io::Write;
    let Some(dir) = dir else {
        eprintln!("error: --worker needs --dir");
        return ExitCode::from(2);
    };
    let cfg = keyed_state::sim::SimConfig {
        seed,
        dir: Some(dir.clone()),
        storage,
        ..base
    };
    let mut out = std::io::stdout();
    let result = keyed_state::sim::run_with_progress(&cfg, &mut |at| {
        let _ = writeln!(out, "progress {at}");
        let _ = out.flush();
    });
    match result {
        Ok(r) => {
            println!("{}", report_json(&r));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("worker: error: {e}");
            ExitCode::from(2)
        }
    }
}

/// `--kill`: runs the job in worker processes on `cfg.dir` (a temporary directory when
/// none), SIGKILLs the worker when it reports reaching each seeded input position, restarts
/// it, and returns the last worker's report with the kills counted as crashes.
fn run_killed(
    cfg: &keyed_state::sim::SimConfig,
    kills: u32,
    progress: &mut dyn FnMut(u64),
) -> keyed_state::Result<keyed_state::sim::SimReport> {
    use std::io::BufRead;
    use std::process::{Command as Process, Stdio};
    let started = std::time::Instant::now();
    let temp = tempfile::Builder::new()
        .prefix("keyed-state-kill-")
        .tempdir()?;
    let dir = cfg.dir.clone().unwrap_or_else(|| temp.path().join("run"));
    std::fs::create_dir_all(&dir)?;
    if std::fs::read_dir(&dir)?.next().is_some() {
        return Err(keyed_state::CheckpointError::Protocol {
            id: 0,
            reason: format!(
                "{} is not empty: a new run needs an empty directory",
                dir.display()
            ),
        }
        .into());
    }
    // Kill points: seeded input positions, in order.
    let mut points: Vec<u64> = {
        let mut x = cfg.seed ^ 0x4b11_4b11;
        let mut next = || {
            // SplitMix64, as the simulator's generator.
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        // In the first 90% of the input, so that the worker reaches every one of them.
        (0..kills)
            .map(|_| next() % (cfg.events - cfg.events / 10).max(1))
            .collect()
    };
    points.sort_unstable();
    points.reverse(); // popped from the back: smallest first
    let exe = std::env::current_exe()?;
    let mut killed = 0u64;
    let mut processed = 0u64;
    let mut restores = 0u64;
    let log = |dir: &Path| {
        keyed_state::sim::job_log(&keyed_state::sim::SimConfig {
            dir: Some(dir.to_path_buf()),
            ..cfg.clone()
        })
    };
    loop {
        if !log(&dir)?.is_empty() {
            restores += 1; // this worker starts from a checkpoint
        }
        let args = cfg.command();
        let mut child = Process::new(&exe)
            .args(args.split_whitespace().skip(1))
            .arg("--worker")
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| std::io::Error::other("the worker's stdout is not a pipe"))?;
        let mut last = None;
        let mut was_killed = false;
        let mut lines = 0u64;
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line?;
            if let Some(at) = line
                .strip_prefix("progress ")
                .and_then(|a| a.parse::<u64>().ok())
            {
                lines += 1;
                progress(at);
                if points.last().is_some_and(|&p| at >= p) {
                    points.pop();
                    child.kill()?; // SIGKILL: no shutdown of any kind
                    was_killed = true;
                    break;
                }
            } else {
                last = Some(line);
            }
        }
        let status = child.wait()?;
        if was_killed {
            killed += 1;
            processed += lines * 1000; // what it reported before dying
            continue;
        }
        if !status.success() {
            return Err(std::io::Error::other(format!("the worker failed: {status}")).into());
        }
        let report: serde_json::Value = last
            .as_deref()
            .and_then(|l| serde_json::from_str(l).ok())
            .ok_or_else(|| std::io::Error::other("the worker printed no report"))?;
        let n = |k: &str| report[k].as_u64().unwrap_or(0);
        let hex = |k: &str| {
            report[k]
                .as_str()
                .and_then(|h| u64::from_str_radix(h, 16).ok())
                .unwrap_or(0)
        };
        let divergences = report["divergence_details"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|d| {
                        let text = |k: &str| d[k].as_str().unwrap_or_default().to_owned();
                        keyed_state::sim::Divergence {
                            step: text("step"),
                            operator: text("operator"),
                            state: text("state"),
                            key: d["key"].as_u64(),
                            detail: text("detail"),
                            expected: d["expected"].as_str().map(str::to_owned),
                            actual: d["actual"].as_str().map(str::to_owned),
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        let log = log(&dir)?;
        return Ok(keyed_state::sim::SimReport {
            seed: cfg.seed,
            engine: cfg.engine.name(),
            events: cfg.events,
            processed: processed + n("processed"),
            checkpoints: log.len() as u64,
            checkpoints_aborted: 0,
            crashes: killed,
            crashes_in_checkpoint: 0,
            crashes_in_restore: 0,
            restores,
            rescales: n("rescales"),
            bytes_checkpointed: n("bytes_checkpointed"),
            outputs: n("outputs"),
            divergences,
            state_digest: hex("state_digest"),
            output_digest: hex("output_digest"),
            elapsed_s: started.elapsed().as_secs_f64(),
        });
    }
}
