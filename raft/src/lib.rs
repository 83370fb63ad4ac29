//! `tasklog-raft`: replication of the tasklog engine (DESIGN.md §4).
//!
//! Built so far:
//! - [`network`]: the RPC transport the Raft layer sits on: QUIC (quinn) with mutual TLS (rustls,
//!   ring) against the cluster CA, one connection per peer, one stream per RPC, deadlines, size
//!   caps, and streamed transfers with a no-progress timeout. It knows neither openraft nor the
//!   engine.
//! - [`certs`]: the cluster CA and node certificates (`tasklog certs`).
//!
//! Still to come: openraft pinned to an exact version behind a thin adapter; Raft log storage on
//! the engine's segment log (the term is in every frame, so each event is written once); vote and
//! committed position in a small meta file replaced atomically; a state machine that applies
//! commands to the engine's task state, deterministically; snapshots made of sealed segments plus
//! an index checkpoint, sent with [`network::Peer::send_stream`].
#![deny(clippy::unwrap_used, clippy::expect_used)]
#![cfg_attr(not(test), deny(clippy::panic))]

pub mod certs;
pub mod network;
