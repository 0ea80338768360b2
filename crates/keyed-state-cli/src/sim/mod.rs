//! The deterministic simulator behind `keyed-state simulate`: a seeded stream, a job using
//! every kind of state and timers on `p` instances, job-wide checkpoints committed by a
//! coordinator's log, seeded crashes (between records, during checkpoints and restores),
//! storage failures, torn writes and rescales, recovery from the last completed checkpoint
//! with replay of the input, an exactly-once sink that commits a checkpoint's output with
//! it, and an oracle on plain maps that the restored state, the committed output and the
//! final state must equal.
//!
//! ```no_run
//! use keyed_state_cli::sim::{SimConfig, run};
//! let report = run(&SimConfig { seed: 7, events: 50_000, crashes: 2, ..SimConfig::default() })?;
//! assert!(report.divergences.is_empty());
//! # Ok::<(), keyed_state::Error>(())
//! ```

pub mod coordinator;
mod driver;
pub mod generator;
pub mod job;
pub mod kill;
pub mod oracle;
mod report;

pub use driver::{
    DISORDER_MS, EVENT_GAP_MS, EngineKind, MAX_FAULTS, MAX_SEEDS, MAX_ZIPF_KEYS,
    PROCESSING_MS_PER_EVENT, PROGRESS_EVERY, SimConfig, digest, has_run, job_log, run,
    run_with_progress,
};
pub use generator::Skew;
pub use report::{Divergence, SimReport};
