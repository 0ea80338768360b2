//! The simulator against a real S3 server on loopback (`s3s-fs`, started by the test): the
//! job's checkpoints and its log on object storage, with crashes, storage faults and a
//! rescale, end in the same state and output as the same run on a local directory.

#[path = "../../../tests/support/s3_server.rs"]
mod s3_server;
use s3_server::{BUCKET, options, server};

#[test]
fn the_simulator_runs_against_s3() {
    let port = server().port;
    let dir = tempfile::tempdir().unwrap();
    let cfg = keyed_state_cli::sim::SimConfig {
        seed: 3,
        events: 6_000,
        keys: 200,
        checkpoint_every: 1_000,
        crashes: 3,
        storage_faults: 2,
        random_rescales: 1,
        engine: keyed_state_cli::sim::EngineKind::RocksDb,
        dir: Some(dir.path().join("run")),
        storage: Some(format!("s3://{BUCKET}/sim-{}", std::process::id())),
        storage_settings: options(port).settings,
        ..keyed_state_cli::sim::SimConfig::default()
    };
    let r = keyed_state_cli::sim::run(&cfg).unwrap();
    assert!(r.divergences.is_empty(), "{:?}", r.divergences);
    assert!(r.crashes >= 3 && r.restores >= 3 && r.checkpoints > 3);
    let local = keyed_state_cli::sim::run(&keyed_state_cli::sim::SimConfig {
        storage: None,
        storage_settings: Vec::new(),
        dir: None,
        ..cfg
    })
    .unwrap();
    assert_eq!(
        (r.state_digest, r.output_digest),
        (local.state_digest, local.output_digest)
    );
}
