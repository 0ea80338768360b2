//! The real-process mode (`keyed-state simulate --kill N`): the job runs in a worker child
//! process on a real directory, which the parent SIGKILLs at seeded input positions and
//! restarts, until a worker finishes the input. Nothing survives a kill but the files in the
//! directory: each new worker resumes from the job log there ([`SimConfig::resume`]) and checks
//! the restored state, the committed output and the final state against its own oracle.
//!
//! The protocol on the worker's stdout: `progress <position>` lines (every
//! [`PROGRESS_EVERY`] events processed), then one line with the report's JSON
//! ([`SimReport::to_json`]). [`run_worker`] is the worker's side, [`run_killed`] the parent's.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use keyed_state::Result;
use keyed_state::error::IoAt;

use super::driver::{PROGRESS_EVERY, SimConfig, job_log, run_with_progress};
use super::generator::SplitMix64;
use super::report::SimReport;

/// The worker's side: continues (or starts) the run in `cfg.dir`, writing `progress` lines and
/// finally the report's JSON line to `out`. `cfg.resume` must be set.
///
/// # Errors
///
/// A storage or engine failure that is not a planned fault (a planned crash is recovered from
/// and counted); a directory that is not empty for a new run. Writing to `out` failed.
pub fn run_worker(cfg: &SimConfig, out: &mut dyn Write) -> Result<SimReport> {
    assert!(cfg.resume, "a worker resumes whatever its directory holds");
    let report = run_with_progress(cfg, &mut |at| {
        // A parent that stopped reading is about to kill us: nothing to do about it here.
        let _ = writeln!(out, "progress {at}").and_then(|()| out.flush());
    })?;
    writeln!(out, "{}", report.to_json())?;
    out.flush()?;
    Ok(report)
}

/// The input positions at which the parent kills its worker: `kills` seeded positions in the
/// first 90% of the input (so that a worker reaches every one of them), in increasing order.
pub fn kill_points(cfg: &SimConfig, kills: u32) -> Vec<u64> {
    let mut rng = SplitMix64::new(cfg.seed ^ 0x4b11_4b11);
    let span = (cfg.events - cfg.events / 10).max(1);
    let mut points: Vec<u64> = (0..kills).map(|_| rng.below(span)).collect();
    points.sort_unstable();
    points
}

/// The parent's side: runs `cfg` in worker processes started as `worker simulate <args>
/// --worker --dir D` (`worker` is this program: `std::env::current_exe()`), on `cfg.dir` (a
/// temporary directory when `None`, which must be empty), SIGKILLs the worker when it reports
/// reaching each of [`kill_points`], restarts it, and returns the last worker's report with
/// the kills counted as crashes and the checkpoints counted from the job log. `progress`
/// gets every position a worker reports.
///
/// # Errors
///
/// A worker that could not be started, failed, or printed no report; a directory that is not
/// empty.
pub fn run_killed(
    cfg: &SimConfig,
    kills: u32,
    worker: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<SimReport> {
    let started = Instant::now();
    let temp = tempfile::Builder::new()
        .prefix("keyed-state-kill-")
        .tempdir()?;
    let dir = cfg.dir.clone().unwrap_or_else(|| temp.path().join("run"));
    std::fs::create_dir_all(&dir).at(&dir)?;
    if std::fs::read_dir(&dir).at(&dir)?.next().is_some() {
        return Err(keyed_state::Error::NotEmpty {
            path: dir,
            reason: "a new run needs an empty directory",
        });
    }
    let in_dir = SimConfig {
        dir: Some(dir.clone()),
        ..cfg.clone()
    };
    let mut points = kill_points(cfg, kills).into_iter().peekable();
    let (mut killed, mut processed, mut restores) = (0u64, 0u64, 0u64);
    loop {
        if !job_log(&in_dir)?.is_empty() {
            restores += 1; // this worker starts from a checkpoint
        }
        let mut child = Command::new(worker)
            .arg("simulate")
            .args(cfg.args())
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
        let (mut last, mut reports, mut was_killed) = (None, 0u64, false);
        for line in BufReader::new(stdout).lines() {
            let line = line?;
            let Some(at) = line
                .strip_prefix("progress ")
                .and_then(|a| a.parse::<u64>().ok())
            else {
                last = Some(line);
                continue;
            };
            reports += 1;
            progress(at);
            if points.next_if(|&p| at >= p).is_some() {
                child.kill()?; // SIGKILL: no shutdown of any kind
                was_killed = true;
                break;
            }
        }
        let status = child.wait()?;
        if was_killed {
            killed += 1;
            processed += reports * PROGRESS_EVERY; // what it reported before dying
            continue;
        }
        if !status.success() {
            return Err(std::io::Error::other(format!("the worker failed: {status}")).into());
        }
        let mut report = last
            .as_deref()
            .and_then(|l| serde_json::from_str(l).ok())
            .and_then(|v| SimReport::from_json(&v))
            .ok_or_else(|| std::io::Error::other("the worker printed no report"))?;
        report.processed += processed;
        report.checkpoints = u64::try_from(job_log(&in_dir)?.len()).unwrap_or(u64::MAX);
        report.crashes = killed;
        report.restores = restores;
        report.elapsed_s = started.elapsed().as_secs_f64();
        return Ok(report);
    }
}
