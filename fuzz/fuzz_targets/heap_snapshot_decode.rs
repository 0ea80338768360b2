//! `heap_snapshot_decode`: the body lives in the library (`keyed_state::fuzzing::heap_snapshot_decode`), where
//! `tests/fuzz_corpus.rs` replays the committed corpus through it on a stable toolchain.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    keyed_state::fuzzing::heap_snapshot_decode(data);
});
