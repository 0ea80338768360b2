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
///
/// Dropping it without [`wait`](Self::wait) still waits for the background part (the
/// checkpoint completes or aborts, and a failure is logged), so that once a backend and its
/// pending checkpoints are dropped, nothing holds the checkpoint directory any more: a new
/// backend (a restart in the same process) can open it at once.
#[must_use = "a checkpoint completes in the background; wait() reports whether it did"]
pub struct PendingCheckpoint {
    id: u64,
    /// `None` only once `wait` or `drop` has joined the thread.
    handle: Option<JoinHandle<Result<Manifest>>>,
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
        Ok(PendingCheckpoint {
            id,
            handle: Some(handle),
        })
    }

    /// The checkpoint id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Whether the background part has finished (successfully or not).
    pub fn is_finished(&self) -> bool {
        self.handle.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Waits for the background part: the completed checkpoint's manifest, or why it aborted.
    ///
    /// # Errors
    ///
    /// Why the checkpoint aborted (an upload, an encoding or the commit failed; the attempt's
    /// files were removed), or [`CheckpointError::Lost`](crate::CheckpointError::Lost) if its
    /// thread panicked.
    pub fn wait(mut self) -> Result<Manifest> {
        let lost = || Err(CheckpointError::Lost(self.id).into());
        match self.handle.take() {
            Some(handle) => handle.join().unwrap_or_else(|_| lost()),
            None => lost(),
        }
    }
}

impl Drop for PendingCheckpoint {
    fn drop(&mut self) {
        // Detached, the thread would keep the checkpoint store (and its directory lock) alive
        // past the backend: a restart in the same process then found the root locked. Its
        // outcome is logged by the thread itself.
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
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
