//! The tools around the `keyed-state` library, behind the `keyed-state` command:
//!
//! - [`sim`]: the deterministic simulator (`keyed-state simulate`): a seeded stream through a
//!   stateful job on several instances with checkpoints, crashes, storage faults and
//!   rescales, checked against an oracle;
//! - [`inspect`]: a checkpoint's manifest for people and tools (`keyed-state inspect`);
//! - `cluster` (cargo feature `timely`): the simulator's job on timely-dataflow, several
//!   processes over TCP, with crashes and rescaling restarts (`keyed-state timely`).
//!
//! Both use only the library's public API; they live in this crate so that a user of the
//! library builds none of their dependencies (clap, indicatif, serde_json).

#[cfg(feature = "timely")]
pub mod cluster;
pub mod inspect;
pub mod sim;
