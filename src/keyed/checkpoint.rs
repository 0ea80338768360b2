//! Taking a checkpoint: the assembly of one from an engine's upload, the timers and the
//! manifest, run on a background thread after the synchronous part ([`PendingCheckpoint`]).

use std::fmt;
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::backend::SnapshotJob;
use crate::checkpoint::format::timers::{TIMERS_FILE, TimersSnapshot};
use crate::checkpoint::{CheckpointStore, FileRole, Manifest};
use crate::error::{CheckpointError, Result};

/// A checkpoint whose synchronous part is done and whose upload runs in the background.
#[must_use = "a checkpoint completes in the background; wait() reports whether it did"]
pub struct PendingCheckpoint {
    id: u64,
    handle: JoinHandle<Result<Manifest>>,
}

impl PendingCheckpoint {
    /// Starts the background part: upload, then commit (or abort on any error).
    pub(crate) fn spawn(
        store: Arc<CheckpointStore>,
        id: u64,
        job: SnapshotJob,
        timers: TimersSnapshot,
        offsets: Vec<(String, u64)>,
    ) -> Result<Self> {
        let handle = std::thread::Builder::new()
            .name(format!("checkpoint-{id}"))
            .spawn(move || {
                let result = run(&store, id, job, timers, offsets);
                if let Err(e) = &result {
                    tracing::warn!(checkpoint = id, error = %e, "checkpoint aborted");
                    if let Err(cleanup) = store.abort(id) {
                        tracing::warn!(checkpoint = id, error = %cleanup, "cleanup after abort failed; the next open retries");
                    }
                }
                result
            })?;
        Ok(PendingCheckpoint { id, handle })
    }

    /// The checkpoint id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Whether the background part has finished (successfully or not).
    pub fn is_finished(&self) -> bool {
        self.handle.is_finished()
    }

    /// Waits for the background part: the completed checkpoint's manifest, or why it aborted.
    ///
    /// # Errors
    ///
    /// Why the checkpoint aborted (an upload, an encoding or the commit failed; the attempt's
    /// files were removed), or [`CheckpointError::Lost`](crate::CheckpointError::Lost) if its
    /// thread panicked.
    pub fn wait(self) -> Result<Manifest> {
        self.handle
            .join()
            .unwrap_or_else(|_| Err(CheckpointError::Lost(self.id).into()))
    }
}

impl fmt::Debug for PendingCheckpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingCheckpoint")
            .field("id", &self.id)
            .field("finished", &self.is_finished())
            .finish()
    }
}

fn run(
    store: &CheckpointStore,
    id: u64,
    job: SnapshotJob,
    timers: TimersSnapshot,
    offsets: Vec<(String, u64)>,
) -> Result<Manifest> {
    let mut out = job.upload.upload(store, id)?;
    if let Some(file) = timers.encode()? {
        let entry = store.put_data_file(id, TIMERS_FILE, FileRole::Timers, file)?;
        out.uploaded_bytes += entry.size;
        out.files.push(entry);
    }
    let manifest = Manifest {
        checkpoint_id: id,
        kind: out.kind,
        engine: job.engine.to_owned(),
        max_parallelism: job.max_parallelism,
        range: job.range,
        created_at_millis: job.created_at_millis,
        states: out.states,
        offsets,
        timers: timers.metas(),
        files: out.files,
        uploaded_bytes: out.uploaded_bytes,
    };
    store.complete(manifest.clone())?;
    tracing::info!(
        checkpoint = id,
        full_size = manifest.full_size(),
        uploaded = manifest.uploaded_bytes,
        "checkpoint completed"
    );
    Ok(manifest)
}
