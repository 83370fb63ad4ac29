//! Reads and writes on one QUIC stream with a no-progress bound, and the mapping of quinn's
//! errors to the transport's. Only the transport's modules use this.
#![deny(clippy::indexing_slicing)]

use std::net::SocketAddr;
use std::time::Duration;

use quinn::{ConnectionError, ReadError, RecvStream, SendStream, WriteError};

use super::error::RpcError;
use super::wire::{self, HEADER_LEN, Header, WireError};

/// Application error codes the transport puts in STOP_SENDING / RESET_STREAM / CONNECTION_CLOSE.
pub(crate) mod code {
    use quinn::VarInt;
    /// The receiver stops reading: the request is refused (answered with REFUSED).
    pub(crate) const REFUSED: VarInt = VarInt::from_u32(1);
    /// The sender gives up (deadline, stall, source error).
    pub(crate) const CANCELLED: VarInt = VarInt::from_u32(2);
    /// The endpoint is shutting down.
    pub(crate) const SHUTDOWN: VarInt = VarInt::from_u32(3);
}

/// Why a read from a stream failed.
#[derive(Debug)]
pub(crate) enum ReadFailure {
    /// No byte arrived within the no-progress bound.
    Stalled,
    /// The stream ended after `got` of the bytes wanted.
    Finished { got: usize },
    /// The peer reset the stream with this code.
    Reset(u64),
    /// The connection failed.
    Connection(ConnectionError),
    /// The stream was already closed on this side.
    Closed,
}

impl ReadFailure {
    fn from_read(error: ReadError) -> Self {
        match error {
            ReadError::Reset(code) => ReadFailure::Reset(code.into_inner()),
            ReadError::ConnectionLost(e) => ReadFailure::Connection(e),
            ReadError::ClosedStream
            | ReadError::IllegalOrderedRead
            | ReadError::ZeroRttRejected => ReadFailure::Closed,
        }
    }

    /// The caller-facing error for a response read from `peer`.
    pub(crate) fn into_rpc(self, peer: SocketAddr, idle: Duration, wanted: usize) -> RpcError {
        match self {
            ReadFailure::Stalled => RpcError::Stalled { peer, idle },
            ReadFailure::Finished { got } => RpcError::Decode {
                peer,
                source: WireError::Truncated {
                    needed: wanted as u64,
                    got: got as u64,
                },
            },
            ReadFailure::Reset(code) => RpcError::ConnectionLost {
                peer,
                reason: format!("response stream reset by the peer (code {code})"),
            },
            ReadFailure::Connection(e) => connection_error(peer, &e),
            ReadFailure::Closed => RpcError::ConnectionLost {
                peer,
                reason: "response stream closed".to_owned(),
            },
        }
    }
}

/// Why a write to a stream failed.
#[derive(Debug)]
pub(crate) enum WriteFailure {
    /// No byte could be written within the no-progress bound (the receiver is not reading).
    Stalled,
    /// The receiver stopped reading, with this code.
    Stopped(u64),
    /// The connection failed.
    Connection(ConnectionError),
    /// The stream was already finished or reset on this side.
    Closed,
}

impl WriteFailure {
    pub(crate) fn from_write(error: WriteError) -> Self {
        match error {
            WriteError::Stopped(code) => WriteFailure::Stopped(code.into_inner()),
            WriteError::ConnectionLost(e) => WriteFailure::Connection(e),
            WriteError::ClosedStream | WriteError::ZeroRttRejected => WriteFailure::Closed,
        }
    }
}

/// Fills `buf` from `recv`; each read may wait at most `idle` for a byte (`None`: no bound here,
/// the caller bounds the whole operation).
pub(crate) async fn read_exact(
    recv: &mut RecvStream,
    buf: &mut [u8],
    idle: Option<Duration>,
) -> Result<(), ReadFailure> {
    let mut filled = 0;
    while let Some(rest) = buf.get_mut(filled..).filter(|rest| !rest.is_empty()) {
        let read = recv.read(rest);
        let result = match idle {
            Some(idle) => tokio::time::timeout(idle, read)
                .await
                .map_err(|_| ReadFailure::Stalled)?,
            None => read.await,
        };
        match result.map_err(ReadFailure::from_read)? {
            Some(n) => filled += n,
            None => return Err(ReadFailure::Finished { got: filled }),
        }
    }
    Ok(())
}

/// Writes all of `buf`; each write may wait at most `idle` for flow-control credit.
pub(crate) async fn write_all(
    send: &mut SendStream,
    buf: &[u8],
    idle: Option<Duration>,
) -> Result<(), WriteFailure> {
    let mut written = 0;
    while let Some(rest) = buf.get(written..).filter(|rest| !rest.is_empty()) {
        let write = send.write(rest);
        let result = match idle {
            Some(idle) => tokio::time::timeout(idle, write)
                .await
                .map_err(|_| WriteFailure::Stalled)?,
            None => write.await,
        };
        written += result.map_err(WriteFailure::from_write)?;
    }
    Ok(())
}

/// An envelope read from a stream: its header, or why there is none.
pub(crate) enum EnvelopeRead {
    /// A whole envelope.
    Envelope(Header, Vec<u8>),
    /// The bytes are not a valid envelope (or exceed the cap); nothing more was read.
    Invalid(WireError),
    /// The stream failed.
    Failed(ReadFailure),
}

/// Reads one envelope, refusing a payload above `len_max` from the header alone.
pub(crate) async fn read_envelope(
    recv: &mut RecvStream,
    len_max: u32,
    idle: Option<Duration>,
) -> EnvelopeRead {
    let mut header = [0u8; HEADER_LEN];
    match read_exact(recv, &mut header, idle).await {
        Ok(()) => {}
        Err(ReadFailure::Finished { got }) if got > 0 => {
            return EnvelopeRead::Invalid(WireError::Truncated {
                needed: HEADER_LEN as u64,
                got: got as u64,
            });
        }
        Err(failure) => return EnvelopeRead::Failed(failure),
    }
    let header = match Header::decode(&header, len_max) {
        Ok(header) => header,
        Err(error) => return EnvelopeRead::Invalid(error),
    };
    // The length was checked against the cap just above, so this allocation is bounded.
    let mut payload = vec![0u8; header.len as usize];
    match read_exact(recv, &mut payload, idle).await {
        Ok(()) => EnvelopeRead::Envelope(header, payload),
        Err(ReadFailure::Finished { got }) => EnvelopeRead::Invalid(WireError::Truncated {
            needed: (HEADER_LEN + payload.len()) as u64,
            got: (HEADER_LEN + got) as u64,
        }),
        Err(failure) => EnvelopeRead::Failed(failure),
    }
}

/// Writes one envelope: header, then payload.
pub(crate) async fn write_envelope(
    send: &mut SendStream,
    kind: u8,
    payload: &[u8],
    idle: Option<Duration>,
) -> Result<(), WriteFailure> {
    // Callers check payload sizes against their caps first; a payload beyond u32 cannot reach here.
    let len = wire::payload_len(payload.len(), u32::MAX).map_err(|_| WriteFailure::Closed)?;
    write_all(send, &Header::new(kind, len).encode(), idle).await?;
    write_all(send, payload, idle).await
}

/// The caller-facing error for a failed connection to `peer`.
pub(crate) fn connection_error(peer: SocketAddr, error: &ConnectionError) -> RpcError {
    if is_tls_failure(error) {
        return RpcError::Tls {
            peer,
            reason: error.to_string(),
        };
    }
    match error {
        ConnectionError::LocallyClosed => RpcError::Shutdown,
        ConnectionError::Reset => RpcError::ConnectionLost {
            peer,
            reason: "reset by the peer (it restarted or forgot the connection)".to_owned(),
        },
        other => RpcError::ConnectionLost {
            peer,
            reason: other.to_string(),
        },
    }
}

/// Whether a connection failed in the TLS handshake: QUIC carries TLS alerts as transport error
/// codes 0x100..=0x1FF (RFC 9001 §4.8), whether raised here or sent by the peer.
pub(crate) fn is_tls_failure(error: &ConnectionError) -> bool {
    let code = match error {
        ConnectionError::TransportError(e) => u64::from(e.code),
        ConnectionError::ConnectionClosed(close) => u64::from(close.error_code),
        _ => return false,
    };
    (0x100..=0x1FF).contains(&code)
}
