//! Writes the seed corpus of every fuzz target to `fuzz/corpus/<target>/`, made from small real
//! checkpoints and savepoints of both engines and from encoded values
//! (`keyed_state::fuzzing::seed_corpus`). Run from the repository root:
//!
//! ```sh
//! cargo run --release --locked --example fuzz_corpus
//! ```
//!
//! File names are the crc32 of the contents, so running it again changes nothing unless the
//! formats changed.

use std::path::Path;

fn main() -> std::io::Result<()> {
    let root = Path::new("fuzz/corpus");
    for (target, _) in keyed_state::fuzzing::TARGETS {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir)?;
        let seeds = keyed_state::fuzzing::seed_corpus(target);
        for seed in &seeds {
            let name = format!("seed-{:08x}", crc32fast::hash(seed));
            std::fs::write(dir.join(name), seed)?;
        }
        println!("{target}: {} seeds in {}", seeds.len(), dir.display());
    }
    Ok(())
}
