//! What a worker's driver loop watches: progress, failures, the end of the job.

use std::cell::RefCell;
use std::rc::Rc;

use timely::dataflow::ProbeHandle;

use crate::error::Error;
use crate::job::{FailureSlot, failure};

/// Counters of one worker's share of the job.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Progress {
    /// Epochs with data this worker processed (with or without records of its own).
    pub epochs_processed: u64,
    /// Checkpoint parts this worker completed.
    pub checkpoints: u64,
    /// The latest checkpoint this worker committed (worker 0 only).
    pub committed: Option<u64>,
    /// Outputs this worker committed (worker 0 only).
    pub outputs_committed: u64,
}

/// A worker's view of its job: how far it got, whether it failed, whether it finished.
#[derive(Debug)]
pub struct JobProbe {
    processed: ProbeHandle<u64>,
    done: ProbeHandle<u64>,
    progress: Rc<RefCell<Progress>>,
    failure: FailureSlot,
    index: usize,
}

impl JobProbe {
    pub(crate) fn new(
        processed: ProbeHandle<u64>,
        done: ProbeHandle<u64>,
        progress: Rc<RefCell<Progress>>,
        failure: FailureSlot,
        index: usize,
    ) -> Self {
        JobProbe {
            processed,
            done,
            progress,
            failure,
            index,
        }
    }

    /// Whether the stateful operator may still produce something before `epoch` (use it to
    /// keep the input from running too far ahead). A checkpoint whose upload runs holds this
    /// at its epoch until the upload completes: keep the input's lead over it at least a
    /// checkpoint interval, or every upload stops the input.
    pub fn processing_before(&self, epoch: u64) -> bool {
        self.processed.less_than(&epoch)
    }

    /// Whether the job finished: the input ended and the last checkpoint is committed.
    pub fn is_done(&self) -> bool {
        self.done.done()
    }

    /// The first failure of any worker of this process, as an error.
    ///
    /// # Errors
    ///
    /// [`Error::Peer`] naming the worker that failed and why.
    pub fn check(&self) -> Result<(), Error> {
        match failure(&self.failure) {
            None => Ok(()),
            Some((worker, reason)) => Err(Error::Peer { worker, reason }),
        }
    }

    /// This worker's counters.
    pub fn progress(&self) -> Progress {
        self.progress.borrow().clone()
    }

    /// This worker's index.
    pub fn index(&self) -> usize {
        self.index
    }
}
