//! The tools around the `keyed-state` library, behind the `keyed-state` command:
//!
//! - [`sim`]: the deterministic simulator (`keyed-state simulate`): a seeded stream through a
//!   stateful job on several instances with checkpoints, crashes, storage faults and
//!   rescales, checked against an oracle;
//! - [`inspect`]: a checkpoint's manifest for people and tools (`keyed-state inspect`).
//!
//! Both use only the library's public API; they live in this crate so that a user of the
//! library builds none of their dependencies (clap, indicatif, serde_json).

pub mod inspect;
pub mod sim;
