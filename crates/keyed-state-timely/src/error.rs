//! The crate's error type.

/// Why a job could not start or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The state layer failed: a restore, a checkpoint, a state access, the storage.
    #[error(transparent)]
    State(#[from] keyed_state::Error),
    /// The job's configuration does not fit (workers, indices, engine), or timely could not
    /// start or lost a worker thread.
    #[error("configuration: {0}")]
    Config(String),
    /// The job's logic, a checkpoint part or a commit failed on a worker of this process
    /// (this one or another), which stopped every worker of the process.
    #[error("worker {worker} failed: {reason}")]
    Peer {
        /// The worker that failed.
        worker: usize,
        /// What it reported.
        reason: String,
    },
}

impl From<keyed_state::ConfigError> for Error {
    fn from(e: keyed_state::ConfigError) -> Self {
        Error::State(e.into())
    }
}
