//! Replays every committed fuzz input — the seed corpus (`fuzz/corpus/<target>/`) and every past
//! finding kept as a regression case (`fuzz/regressions/<target>/`) — through the fuzz targets'
//! bodies in `keyed_state::fuzzing`, on the stable toolchain. A body panics only on a defect.

use std::path::Path;

use keyed_state::fuzzing::{TARGETS, seed_corpus};

fn inputs(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<(String, Vec<u8>)> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| {
            let bytes = std::fs::read(e.path()).unwrap();
            (e.path().display().to_string(), bytes)
        })
        .collect();
    out.sort();
    out
}

#[test]
fn every_corpus_file_and_past_finding_passes_its_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    for (target, body) in TARGETS {
        let corpus = inputs(&root.join("corpus").join(target));
        assert!(!corpus.is_empty(), "{target}: no committed corpus");
        let regressions = inputs(&root.join("regressions").join(target));
        for (path, bytes) in corpus.iter().chain(&regressions) {
            let outcome = std::panic::catch_unwind(|| body(bytes));
            assert!(outcome.is_ok(), "{target}: {path} fails");
        }
        eprintln!(
            "{target}: {} corpus files, {} regression cases",
            corpus.len(),
            regressions.len()
        );
    }
}

#[test]
fn the_seed_corpus_is_what_the_generator_makes_and_passes() {
    for (target, body) in TARGETS {
        let seeds = seed_corpus(target);
        assert!(!seeds.is_empty(), "{target} has seeds");
        for seed in &seeds {
            body(seed);
        }
    }
}

/// `restore_mutated` with a no-op mutation (xor 0) takes its "restored" branch: each fixture
/// (heap checkpoint, RocksDB checkpoint, savepoint into RocksDB and into the heap) must restore
/// to exactly the state it was taken from, or the body panics.
#[test]
fn an_unmutated_snapshot_restores_exactly_on_every_path() {
    for choice in 0..4u8 {
        for file in 0..6u8 {
            keyed_state::fuzzing::restore_mutated(&[choice, file, 1, 0, 0, 0]);
        }
    }
}
