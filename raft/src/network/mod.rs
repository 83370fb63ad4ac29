//! The RPC transport under the Raft layer: QUIC (quinn) with mutual TLS (rustls, ring) against
//! the cluster CA, one connection per peer, one bidirectional stream per RPC; and openraft's
//! network on top of it.
//!
//! The transport modules know nothing of openraft or of the engine: a request is an application
//! `kind` byte (0..=0x7F) and opaque bytes, answered with bytes or an error message. The openraft
//! network (`RaftNetworkV2`) encodes its messages into payloads, calls [`Peer::call`] with the
//! deadline from openraft's RPC option (votes, appends) or [`Peer::send_stream`] for snapshots,
//! and on the receiving side implements [`Handler`] over its `Raft` handle.
//!
//! - [`Transport`]: the node's endpoint (`bind`, `peer`, `serve`, `shutdown`).
//! - [`Peer`]: calls to one remote node over a cached connection, reconnecting with capped
//!   exponential backoff; [`RpcError`] says what went wrong.
//! - [`Handler`] / [`handler_fn`]: what the server calls; [`ChunkStream`]: the chunks of a
//!   streamed request, each read bounded by a no-progress timeout.
//! - [`wire`]: the envelope on every stream (version, kind, length, payload) with its size cap.
//! - [`tls`]: certificates and keys to rustls configurations; [`crate::certs`] makes them.
//!
//! openraft's network over the transport (knows openraft's messages and snapshot file paths,
//! never the engine):
//! - [`raft_wire`]: the application kinds of the Raft RPCs and their encoding (postcard behind a
//!   version byte), with the [`Reply`](raft_wire::Reply) envelope that carries a remote Raft
//!   error apart from a transport error.
//! - [`QuicNetworkFactory`] / [`QuicNetwork`]: openraft's `RaftNetworkFactory` and
//!   `RaftNetworkV2`: deadlines from openraft's `soft_ttl`, snapshots streamed from their file
//!   with a no-progress timeout and openraft's cancel, the transport's errors mapped to
//!   openraft's.
//! - [`RaftHandler`]: the [`Handler`] over a `Raft` handle; received snapshots go to a file.
//!
//! Using it from an openraft network (`RaftNetworkV2`), as a sketch:
//! - one [`Transport`] per node; `Transport::peer(addr, &certs::node_server_name(target))` in the
//!   network factory (the peer is cached, so asking again is cheap);
//! - `vote` / `append_entries`: encode the request, `peer.call(KIND, bytes, option.soft_ttl())`,
//!   decode the response; `full_snapshot`: `peer.send_stream(KIND, meta, reader, &options)` raced
//!   against openraft's cancel future (dropping the call is safe: the receiver never mistakes a
//!   cut transfer for a complete one, because a whole one ends with an `END` envelope);
//! - errors: [`RpcError::Unreachable`] and [`RpcError::Tls`] → openraft `Unreachable` (it backs
//!   off), [`RpcError::Timeout`] → `Timeout`, the rest → `Network`; Raft-level errors are best
//!   encoded inside the `Ok` payload, leaving handler `Err(String)` for failures to decode;
//! - the receiving side: a [`Handler`] whose `call` decodes by kind and calls the `Raft` handle,
//!   whose `stream` reads the snapshot from its [`ChunkStream`]; `transport.serve(handler)` once
//!   the `Raft` exists.
//!
//! ```no_run
//! use std::time::Duration;
//! use tasklog_raft::certs::node_server_name;
//! use tasklog_raft::network::{TlsMaterial, Transport, TransportOptions, handler_fn};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let tls = TlsMaterial::load_node("certs".as_ref(), 1)?;
//! let transport = Transport::bind("127.0.0.1:7001".parse()?, &tls, TransportOptions::default())?;
//! transport.serve(handler_fn(|_kind, payload| async move { Ok(payload) }))?;
//!
//! let peer = transport.peer("127.0.0.1:7002".parse()?, &node_server_name(2))?;
//! let answer = peer.call(1, b"vote".to_vec(), Duration::from_millis(200)).await?;
//! # drop(answer);
//! transport.shutdown(Duration::from_secs(1)).await;
//! # Ok(())
//! # }
//! ```

mod chunks;
mod client;
mod error;
mod handler;
mod options;
mod raft_client;
mod raft_server;
pub mod raft_wire;
mod server;
mod stream_io;
pub mod tls;
mod transport;
pub mod wire;

pub use chunks::{ChunkError, ChunkStream};
pub use client::Peer;
pub use error::{RpcError, TransportError};
pub use handler::{BoxFuture, Handler, HandlerResult, handler_fn};
pub use options::{
    CHUNK_BYTES_DEFAULT, CHUNK_BYTES_MAX_DEFAULT, MESSAGE_BYTES_MAX_DEFAULT, StreamOptions,
    TransportOptions,
};
pub use raft_client::{QuicNetwork, QuicNetworkFactory, RaftNetworkOptions};
pub use raft_server::{RaftHandler, SNAPSHOT_BYTES_MAX_DEFAULT};
pub use tls::{ALPN, TlsError, TlsMaterial};
pub use transport::Transport;
pub use wire::{Refusal, WireError};
