//! The deterministic simulator behind `keyed-state simulate`: a seeded stream, a job using
//! every kind of state and timers on `p` instances, periodic checkpoints, crashes at seeded
//! points with recovery from the last completed checkpoint and replay of the input, an
//! exactly-once sink that commits a checkpoint's output when it completes, and an oracle on
//! plain maps that the committed output and the final state must equal.
//!
//! ```no_run
//! use keyed_state::sim::{SimConfig, run};
//! let report = run(&SimConfig { seed: 7, events: 50_000, crashes: 2, ..SimConfig::default() })?;
//! assert!(report.divergences.is_empty());
//! # Ok::<(), keyed_state::Error>(())
//! ```

mod driver;
pub mod generator;
pub mod job;
pub mod oracle;

pub use driver::{EngineKind, SimConfig, SimReport, run, run_with_progress};
pub use generator::Skew;
