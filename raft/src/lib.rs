//! `tasklog-raft`: replication of the tasklog engine with openraft (DESIGN.md §4).
//!
//! - [`types`]: the Raft type configuration, commands (an engine record's kind and bytes) and
//!   responses (the task's new version and position, or the typed rejection).
//! - [`log_store`]: openraft's log storage *on* the engine's segment log: a Raft entry is one
//!   engine record (term in the frame, index = position - 1), written once, made durable by a
//!   group-committing flusher before openraft hears of it; vote, committed log id and purge point
//!   in a small meta file replaced atomically.
//! - [`state_machine`]: the engine's task state; commands are decided at apply, the same way on
//!   every node; snapshots are the log prefix plus the table ([`snapshot`]).
//!
//! openraft is pinned to an exact (alpha) version and its types stay behind this crate.

pub mod log_store;
pub mod node;
#[cfg(feature = "testing")]
pub mod sim;
pub mod snapshot;
pub mod state_machine;
pub mod types;

pub use log_store::LogStore;
pub use node::{Node, NodeError, Timing};
pub use snapshot::SnapshotFile;
pub use state_machine::StateMachine;
pub use types::{Command, NodeId, Rejection, Response, TypeConfig};
