//! The transport's errors: [`RpcError`] for one call, [`TransportError`] for setting up.
//!
//! Every variant says what happened and to whom; none carries a quinn type, so callers (the
//! openraft adapter) map them without knowing QUIC.

use std::net::SocketAddr;
use std::time::Duration;

use thiserror::Error;

use super::tls::TlsError;
use super::wire::{Refusal, WireError};

/// Why one RPC (unary or streamed) failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum RpcError {
    /// The deadline passed before the response arrived; the request may or may not have been
    /// handled.
    #[error("rpc to {peer} timed out after {after:?}")]
    Timeout {
        /// The peer.
        peer: SocketAddr,
        /// The deadline that passed.
        after: Duration,
    },
    /// A streamed transfer made no progress (source, network or receiver) for `idle`.
    #[error("streamed transfer to {peer} made no progress for {idle:?}")]
    Stalled {
        /// The peer.
        peer: SocketAddr,
        /// The no-progress bound that passed.
        idle: Duration,
    },
    /// No connection to the peer could be had: it is down, not listening, or the last attempt
    /// failed and the next is not due yet (capped exponential backoff). The request was not sent.
    #[error("peer {peer} unreachable: {reason}")]
    Unreachable {
        /// The peer.
        peer: SocketAddr,
        /// What failed.
        reason: String,
    },
    /// The connection failed while the call was under way; the request may or may not have been
    /// handled.
    #[error("connection to {peer} lost: {reason}")]
    ConnectionLost {
        /// The peer.
        peer: SocketAddr,
        /// What the connection reported.
        reason: String,
    },
    /// The TLS handshake failed: the peer's certificate does not chain to the cluster CA or does
    /// not name the expected server, or the peer refused ours.
    #[error("TLS with {peer} failed: {reason}")]
    Tls {
        /// The peer.
        peer: SocketAddr,
        /// The TLS alert or local verification error.
        reason: String,
    },
    /// The peer's handler returned an error.
    #[error("handler on {peer} failed: {message}")]
    Remote {
        /// The peer.
        peer: SocketAddr,
        /// The handler's message.
        message: String,
    },
    /// The peer's transport refused the request without handling it.
    #[error("{peer} refused the request ({refusal:?}): {message}")]
    Refused {
        /// The peer.
        peer: SocketAddr,
        /// Why, as a code.
        refusal: Refusal,
        /// Why, for people.
        message: String,
    },
    /// The request is larger than this side's cap; nothing was sent.
    #[error("message of {len} bytes exceeds the cap of {max} bytes")]
    TooLarge {
        /// The payload length.
        len: u64,
        /// The cap.
        max: u32,
    },
    /// The response is not a valid envelope (or larger than the cap).
    #[error("bad response from {peer}: {source}")]
    Decode {
        /// The peer.
        peer: SocketAddr,
        /// What is wrong with it.
        source: WireError,
    },
    /// A request kind above [`KIND_APP_MAX`](super::wire::KIND_APP_MAX) (reserved for the
    /// transport), or chunk options the receiver cannot take.
    #[error("invalid request: {reason}")]
    Invalid {
        /// What is wrong.
        reason: String,
    },
    /// Reading the source of a streamed transfer failed.
    #[error("reading the stream source failed: {source}")]
    Source {
        /// The I/O error.
        source: std::io::Error,
    },
    /// This transport is shut down.
    #[error("transport is shut down")]
    Shutdown,
}

impl RpcError {
    /// Whether trying again later may succeed (timeouts, unreachable or lost peers, stalls, a
    /// peer shutting down). TLS failures, refusals other than timeouts and shutdown, oversized
    /// and invalid requests, decode errors and handler errors will not go away by themselves.
    pub fn is_retryable(&self) -> bool {
        match self {
            RpcError::Timeout { .. }
            | RpcError::Stalled { .. }
            | RpcError::Unreachable { .. }
            | RpcError::ConnectionLost { .. } => true,
            RpcError::Refused { refusal, .. } => {
                matches!(refusal, Refusal::Timeout | Refusal::ShuttingDown)
            }
            RpcError::Tls { .. }
            | RpcError::Remote { .. }
            | RpcError::TooLarge { .. }
            | RpcError::Decode { .. }
            | RpcError::Invalid { .. }
            | RpcError::Source { .. }
            | RpcError::Shutdown => false,
        }
    }
}

/// Why a transport could not be set up or started.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The options are inconsistent.
    #[error("bad transport options: {reason}")]
    Options {
        /// The first problem found.
        reason: &'static str,
    },
    /// The TLS material is unusable.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The UDP socket could not be bound (or no tokio runtime is running).
    #[error("could not bind {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A server name that is neither a DNS name nor an IP address.
    #[error("{name:?} is not a valid server name")]
    ServerName {
        /// The name.
        name: String,
    },
    /// [`Transport::serve`](super::Transport::serve) was called twice, or after shutdown.
    #[error("the transport is already serving or shut down")]
    AlreadyServing,
}
