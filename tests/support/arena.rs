//! What a heap engine's table memory holds, read from its `Debug` (the arena's figures are not
//! public API): shared by `tests/heap_engine.rs` and `tests/memory.rs`.

use keyed_state::HeapEngine;

/// The arena figure `name` (`mapped`, `touched`, `in_use`, `free`) in bytes; 0 for an engine
/// without huge pages, whose `Debug` shows no arena.
pub fn arena_bytes(engine: &HeapEngine, name: &str) -> u64 {
    format!("{engine:?}")
        .split_once(&format!("{name}: "))
        .and_then(|(_, rest)| rest.split(|c: char| !c.is_ascii_digit()).next())
        .map_or(0, |n| n.parse().unwrap())
}
