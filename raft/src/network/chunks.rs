//! The receiving end of a streamed request: the chunks a [`Handler`](super::Handler) reads.
//!
//! Each chunk is one `CHUNK` envelope, capped at the server's `chunk_bytes_max`; the transfer ends
//! with an `END` envelope whose byte count must match what arrived. Every read waits at most the
//! server's `stream_idle_timeout` for a byte: a sender that stops making progress ends the
//! transfer with [`ChunkError::Stalled`], whatever its total length.
#![deny(clippy::indexing_slicing)]

use std::time::Duration;

use quinn::RecvStream;
use thiserror::Error;

use super::stream_io::{self, EnvelopeRead, ReadFailure};
use super::wire::{self, KIND_CHUNK, KIND_END, WireError};

/// The chunks of one streamed request, in order.
#[derive(Debug)]
pub struct ChunkStream {
    recv: RecvStream,
    idle: Duration,
    chunk_bytes_max: u32,
    received: u64,
    state: State,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// More chunks or the end may come.
    Open,
    /// `END` arrived and matched; every later call returns `Ok(None)`.
    Ended,
    /// An error was returned; every later call returns [`ChunkError::Failed`].
    Failed,
}

impl ChunkStream {
    pub(crate) fn new(recv: RecvStream, idle: Duration, chunk_bytes_max: u32) -> Self {
        Self {
            recv,
            idle,
            chunk_bytes_max,
            received: 0,
            state: State::Open,
        }
    }

    /// The next chunk; `Ok(None)` once the sender's `END` arrived and its byte count matched.
    ///
    /// # Errors
    /// [`ChunkError::Stalled`] when no byte arrived within the no-progress bound, and the other
    /// [`ChunkError`] variants for a sender that went away or sent bad bytes. After an error the
    /// stream is finished: further calls return [`ChunkError::Failed`].
    pub async fn next(&mut self) -> Result<Option<Vec<u8>>, ChunkError> {
        match self.state {
            State::Ended => return Ok(None),
            State::Failed => return Err(ChunkError::Failed),
            State::Open => {}
        }
        let result = self.read_one().await;
        self.state = match &result {
            Ok(Some(_)) => State::Open,
            Ok(None) => State::Ended,
            Err(_) => State::Failed,
        };
        result
    }

    /// Chunk bytes received so far.
    pub fn bytes_received(&self) -> u64 {
        self.received
    }

    async fn read_one(&mut self) -> Result<Option<Vec<u8>>, ChunkError> {
        let len_max = self.chunk_bytes_max.max(wire::END_PAYLOAD_LEN as u32);
        match stream_io::read_envelope(&mut self.recv, len_max, Some(self.idle)).await {
            EnvelopeRead::Envelope(header, payload) => match header.kind {
                KIND_CHUNK => {
                    if header.len > self.chunk_bytes_max {
                        return Err(ChunkError::Decode(WireError::TooLarge {
                            len: u64::from(header.len),
                            max: self.chunk_bytes_max,
                        }));
                    }
                    self.received += u64::from(header.len);
                    Ok(Some(payload))
                }
                KIND_END => {
                    let declared = wire::decode_end(&payload).map_err(ChunkError::Decode)?;
                    if declared == self.received {
                        Ok(None)
                    } else {
                        Err(ChunkError::LengthMismatch {
                            declared,
                            received: self.received,
                        })
                    }
                }
                kind => Err(ChunkError::Decode(WireError::UnexpectedKind {
                    kind,
                    expected: "CHUNK or END",
                })),
            },
            EnvelopeRead::Invalid(error) => Err(ChunkError::Decode(error)),
            EnvelopeRead::Failed(failure) => Err(match failure {
                ReadFailure::Stalled => ChunkError::Stalled { idle: self.idle },
                ReadFailure::Finished { .. } => ChunkError::Truncated {
                    received: self.received,
                },
                ReadFailure::Reset(code) => ChunkError::Reset { code },
                ReadFailure::Connection(e) => ChunkError::ConnectionLost {
                    reason: e.to_string(),
                },
                ReadFailure::Closed => ChunkError::Failed,
            }),
        }
    }
}

/// Why a streamed request could not be read to its end.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ChunkError {
    /// No byte arrived for `idle`: the sender stalled.
    #[error("no progress for {idle:?}: the sender stalled")]
    Stalled {
        /// The no-progress bound.
        idle: Duration,
    },
    /// The sender finished its stream without an `END` envelope.
    #[error("stream ended without END after {received} bytes")]
    Truncated {
        /// Chunk bytes received.
        received: u64,
    },
    /// `END` declared a total that differs from what arrived.
    #[error("END declares {declared} bytes but {received} arrived")]
    LengthMismatch {
        /// What the sender declared.
        declared: u64,
        /// What arrived.
        received: u64,
    },
    /// The sender reset the stream (it gave up).
    #[error("the sender abandoned the transfer (code {code})")]
    Reset {
        /// The sender's error code.
        code: u64,
    },
    /// The connection failed.
    #[error("connection lost: {reason}")]
    ConnectionLost {
        /// What the connection reported.
        reason: String,
    },
    /// Bytes that are not a valid chunk envelope (or a chunk above the cap).
    #[error("bad chunk: {0}")]
    Decode(WireError),
    /// An earlier call already failed; the transfer is over.
    #[error("the transfer already failed")]
    Failed,
}
