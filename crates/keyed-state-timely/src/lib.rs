//! # keyed-state-timely
//!
//! [keyed-state] as the keyed state of [timely-dataflow] operators, on any number of workers
//! and processes:
//!
//! - records go to the worker that owns their key group; each worker runs the job's
//!   [`KeyedLogic`] on a [`KeyedStateBackend`](keyed_state::KeyedStateBackend) (heap or
//!   RocksDB) with every state kind, TTL and timers;
//! - checkpoints are aligned by timely's progress tracking: when the input frontier passes
//!   a checkpoint epoch, every worker holds exactly the records up to it and checkpoints its
//!   backend; the job's checkpoint counts once worker 0 has every part and publishes a
//!   [`CommitRecord`] with the outputs up to it (the exactly-once sink);
//! - a restarted job, on any number of workers, restores the latest committed checkpoint
//!   ([`Worker::start`]), each worker taking the key groups it owns now from whichever old
//!   workers' parts hold them, and replays the input from [`Worker::resume_epoch`].
//!
//! Epochs are timely's times (`u64`, from 1); the checkpoint id is the last epoch it holds.
//! The input of a job must be replayable from an epoch.
//!
//! ```
//! use keyed_state::state::{ValueState, ValueStateDescriptor};
//! use keyed_state::clock::ManualClock;
//! use keyed_state_timely::{JobConfig, KeyedLogic, KeyedStateStream, Worker};
//! use timely::dataflow::InputHandleVec;
//!
//! /// A running count per word, emitted with every word.
//! struct Count(ValueState<String, u64>);
//!
//! impl KeyedLogic for Count {
//!     type Key = String;
//!     type Record = String;
//!     type Output = (String, u64);
//!     fn key(word: &String) -> String {
//!         word.clone()
//!     }
//!     fn process(&mut self, _epoch: u64, word: String, out: &mut Vec<(String, u64)>) -> keyed_state::Result<()> {
//!         let key = keyed_state::Key::new(word.clone(), 128)?;
//!         let n = self.0.get(&key, &())?.unwrap_or(0) + 1;
//!         self.0.update(&key, &(), n)?;
//!         out.push((word, n));
//!         Ok(())
//!     }
//!     fn on_epoch_end(&mut self, _epoch: u64, _out: &mut Vec<(String, u64)>) -> keyed_state::Result<()> {
//!         Ok(())
//!     }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let config = JobConfig::new(dir.path().to_string_lossy()).with_checkpoint_every(2);
//! let guards = timely::execute(timely::Config::process(2), move |w| -> Result<(), keyed_state_timely::Error> {
//!     let worker = Worker::<String>::start(&config, w.index(), w.peers(), ManualClock::new(0).shared())?;
//!     let count = worker.backend().value_state(&ValueStateDescriptor::new("count"))?;
//!     let mut input = InputHandleVec::new();
//!     let probe = w.dataflow(|scope| {
//!         let (_committed, probe) = input.to_stream(scope).keyed_state(&worker, Count(count));
//!         probe
//!     });
//!     for epoch in worker.resume_epoch()..=4 {
//!         input.advance_to(epoch);
//!         if w.index() == 0 {
//!             for word in ["a", "b", "a"] {
//!                 input.send(word.to_string());
//!             }
//!         }
//!     }
//!     input.close();
//!     while !probe.is_done() {
//!         probe.check()?;
//!         w.step();
//!     }
//!     probe.check()
//! })?;
//! for result in guards.join() {
//!     result??;
//! }
//! let log = JobConfig::new(dir.path().to_string_lossy()).commit_log()?;
//! let last = log.latest().expect("committed");
//! assert_eq!(last.id, 4);
//! let outputs: Vec<(String, u64)> = log.records().flat_map(|r| r.decode_outputs::<(String, u64)>().unwrap()).collect();
//! assert!(outputs.contains(&("a".to_string(), 8)));
//! # Ok(())
//! # }
//! ```
//!
//! [keyed-state]: keyed_state
//! [timely-dataflow]: timely

mod commit;
mod error;
mod job;
mod operator;
mod progress;

pub use commit::{CommitLog, CommitRecord};
pub use error::Error;
pub use job::{EngineChoice, JobConfig, Worker};
pub use operator::{KeyedLogic, KeyedStateStream};
pub use progress::{JobProbe, Progress};
