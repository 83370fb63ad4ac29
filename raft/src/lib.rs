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
//! - [`node`]: one node assembled: write through the leader, read index, wait for a position.
//! - [`forward`]: writes reaching a follower sent to the leader over the transport, and the
//!   node's transport handler ([`forward::NodeHandler`]).
//! - [`network`]: the RPC transport the Raft layer sits on: QUIC (quinn) with mutual TLS (rustls,
//!   ring) against the cluster CA, one connection per peer, one stream per RPC, deadlines, size
//!   caps, and streamed transfers with a no-progress timeout; it knows neither openraft nor the
//!   engine. On top of it, openraft's network: [`network::QuicNetworkFactory`] (the sending
//!   side), [`network::RaftHandler`] (the receiving side) and [`network::raft_wire`] (the Raft
//!   RPCs' kinds and encoding); they know openraft's messages, never the engine.
//! - [`certs`]: the cluster CA and node certificates (`tasklog certs`).
//! - `sim` (feature `testing`): an in-process network with cuts, drops and delays from a seed.
//!
//! openraft is pinned to an exact (alpha) version and its types stay behind this crate.
#![deny(clippy::unwrap_used, clippy::expect_used)]
#![cfg_attr(not(test), deny(clippy::panic))]

pub mod certs;
pub mod forward;
pub mod log_store;
pub mod network;
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
