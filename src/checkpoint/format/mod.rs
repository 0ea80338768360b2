//! What checkpoint files contain, as pure encoders and decoders (bytes in, bytes out; no
//! storage access): the manifest, the canonical key-group data files (heap checkpoints,
//! savepoints) and the timers file built on them, and the storage paths every name must
//! follow. DESIGN.md §7c has each byte by byte.

pub(crate) mod blocks;
pub(crate) mod canonical;
pub(crate) mod manifest;
pub(crate) mod path;
pub(crate) mod timers;

pub(crate) use manifest::TimerMeta;
