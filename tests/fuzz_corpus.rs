//! Replays every committed fuzz input — the seed corpus (`fuzz/corpus/<target>/`) and every past
//! finding kept as a regression case (`fuzz/regressions/<target>/`) — through the fuzz targets'
//! bodies in `keyed_state::fuzzing`, on the stable toolchain. A body panics only on a defect.

use std::path::Path;

use std::collections::BTreeSet;

use keyed_state::checkpoint::{Manifest, SnapshotKind};
use keyed_state::fuzzing::{TARGETS, seed_corpus};

#[path = "support/package.rs"]
mod package;

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
    let root = package::manifest_dir().join("fuzz");
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

/// The committed seeds are what the generator makes today (`cargo run --release --features
/// fuzzing --example fuzz_corpus` writes them), wherever the generator is deterministic: every
/// target but the native RocksDB checkpoint's manifest, whose SST names carry a random
/// database id. A format change thus shows up here too, until the corpus is regenerated.
#[test]
fn the_committed_seeds_are_what_the_generator_makes() {
    let root = package::manifest_dir().join("fuzz/corpus");
    for (target, _) in TARGETS {
        let committed: BTreeSet<String> = inputs(&root.join(target))
            .into_iter()
            .filter_map(|(path, _)| {
                let name = Path::new(&path).file_name()?.to_string_lossy().into_owned();
                name.starts_with("seed-").then_some(name)
            })
            .collect();
        let deterministic = |seed: &Vec<u8>| {
            *target != "manifest_decode"
                || Manifest::decode("seed", seed)
                    .is_ok_and(|m| m.engine == "heap" || m.kind == SnapshotKind::Savepoint)
        };
        let generated: BTreeSet<String> = seed_corpus(target)
            .iter()
            .filter(|s| deterministic(s))
            .map(|s| format!("seed-{:08x}", crc32fast::hash(s)))
            .collect();
        let missing: Vec<_> = generated.difference(&committed).collect();
        assert!(
            missing.is_empty(),
            "{target}: generated seeds not committed (a format change? regenerate the corpus): {missing:?}"
        );
        if *target != "manifest_decode" {
            let stale: Vec<_> = committed.difference(&generated).collect();
            assert!(
                stale.is_empty(),
                "{target}: committed seeds the generator no longer makes: {stale:?}"
            );
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
