//! Where this package's files are when a test runs.

use std::path::PathBuf;

/// The package's directory as `cargo test` names it when it runs the test binary
/// (`CARGO_MANIFEST_DIR` in the environment), not as it was when the binary was built: a
/// target directory shared by two checkouts (CI's clone and a working copy) can hand one
/// checkout's unchanged test binary to the other, and a path baked in at build time would then
/// read the other checkout's files, or files that are not there. `env!` is the fallback for a
/// binary run by hand.
pub fn manifest_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
}
