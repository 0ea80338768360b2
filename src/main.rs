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
        .arg(
            num(
                "kill",
                "0",
                "Real-process mode: run the job in a worker child process and SIGKILL it this \
                 many times (3 for a bare --kill) at seeded input positions, restarting it each \
                 time (in-process faults are off)",
            )
            .num_args(0..=1)
            .default_missing_value("3"),
        )
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
        // The child of --kill: the parent passes the seed's own directory and storage URL.
        let cfg = SimConfig {
            seed: seeds[0],
            dir: dir.cloned(),
            storage,
            ..base
        };
        if cfg.dir.is_none() {
            eprintln!("error: --worker needs --dir");
            return ExitCode::from(2);
        }
        return match keyed_state::sim::kill::run_worker(&cfg, &mut std::io::stdout()) {
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
            keyed_state::sim::kill::run_killed(&cfg, kills, &exe, &mut |at| {
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
        totals.0 += r.processed;
        totals.1 += r.crashes;
        totals.2 += r.checkpoints;
        totals.3 += r.divergences.len() as u64;
        totals.4 += r.elapsed_s;
        let line = if json {
            r.to_json().to_string()
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
