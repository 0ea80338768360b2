//! Checkpoint a RocksDB-backed job while it keeps processing, "crash", restore the last
//! completed checkpoint, and rescale it onto two instances.
//!
//! ```sh
//! cargo run --release --locked --example checkpoint -- /tmp/ks-demo
//! cargo run --release --locked -- inspect /tmp/ks-demo/checkpoints/chk-3 --verify
//! ```

use std::sync::Arc;

use keyed_state::backend::rocksdb::{RocksDbEngine, RocksDbOptions};
use keyed_state::checkpoint::{CheckpointStore, LocalStorage, RestoreSource};
use keyed_state::key_group::range_for_operator;
use keyed_state::state::{MapStateDescriptor, ValueStateDescriptor};
use keyed_state::{EngineConfig, KeyedStateBackend};

fn main() -> Result<(), keyed_state::Error> {
    let root = std::env::args()
        .nth(1)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("keyed-state-checkpoint-demo"));
    let _ = std::fs::remove_dir_all(&root);
    let storage = Arc::new(LocalStorage::new(root.join("checkpoints"))?);
    let (store, _) = CheckpointStore::open(storage.clone(), 2)?;
    let store = Arc::new(store);

    let engine = RocksDbEngine::open(
        root.join("db"),
        EngineConfig::default(),
        RocksDbOptions::default(),
    )?;
    let backend = KeyedStateBackend::<u64, _>::new(engine);
    let totals = backend.value_state(&ValueStateDescriptor::<u64>::new("totals"))?;
    let per_kind = backend.map_state(&MapStateDescriptor::<String, u64>::new("per-kind"))?;

    let mut offset = 0u64;
    for checkpoint in 1..=3 {
        for _ in 0..50_000 {
            offset += 1;
            let key = backend.key(offset % 10_000)?;
            totals.update(
                &key,
                &(),
                totals.get(&key, &())?.unwrap_or(0) + offset % 100,
            )?;
            let kind = ["view", "buy", "return"][(offset % 3) as usize].to_string();
            let n = per_kind.get(&key, &(), &kind)?.unwrap_or(0);
            per_kind.put(&key, &(), kind, n + 1)?;
        }
        // The synchronous part (flush, hard links) is done when this returns; the upload
        // runs in the background.
        let pending = backend.checkpoint(&store, checkpoint, &[("input", offset)])?;
        let m = pending.wait()?;
        println!(
            "checkpoint {checkpoint}: input offset {offset}, state {} bytes, uploaded {} bytes",
            m.full_size(),
            m.uploaded_bytes
        );
    }
    let probe = backend.key(42)?;
    let before = totals.get(&probe, &())?;
    drop((totals, per_kind, backend)); // the "crash"

    let source = RestoreSource::latest(&store)?;
    println!(
        "restoring checkpoint {}, replaying input from offset {:?}",
        source.manifest.checkpoint_id,
        source.manifest.offset("input")
    );
    let restored = KeyedStateBackend::<u64, _>::new(RocksDbEngine::restore(
        root.join("db-restored"),
        EngineConfig::default(),
        RocksDbOptions::default(),
        std::slice::from_ref(&source),
    )?);
    let totals = restored.value_state(&ValueStateDescriptor::<u64>::new("totals"))?;
    assert_eq!(totals.get(&restored.key(42)?, &())?, before);
    println!("key 42: total {before:?} after restore");

    for i in 0..2 {
        let config =
            EngineConfig::default().with_key_group_range(range_for_operator(128, 2, i)?)?;
        let part = KeyedStateBackend::<u64, _>::new(RocksDbEngine::restore(
            root.join(format!("db-rescaled-{i}")),
            config,
            RocksDbOptions::default(),
            std::slice::from_ref(&source),
        )?);
        let totals = part.value_state(&ValueStateDescriptor::<u64>::new("totals"))?;
        let keys: usize = part
            .key_group_range()
            .iter()
            .map(|g| totals.keys_in_group(g).map(|k| k.len()))
            .sum::<Result<usize, _>>()?;
        println!(
            "instance {i} of 2 owns key groups {} and {keys} keys",
            part.key_group_range()
        );
    }
    println!(
        "inspect with: keyed-state inspect {}",
        root.join("checkpoints").join("chk-3").display()
    );
    Ok(())
}
