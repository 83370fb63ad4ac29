//! Every size cap and time bound of the transport, with its default and the reason for it.

use std::time::Duration;

use super::error::TransportError;

/// Default cap on one unary request or response payload, and on a streamed request's header:
/// 64 MiB, enough for a large batch of appended entries.
pub const MESSAGE_BYTES_MAX_DEFAULT: u32 = 64 * 1024 * 1024;
/// Default cap on one chunk of a streamed request, as received: 4 MiB.
pub const CHUNK_BYTES_MAX_DEFAULT: u32 = 4 * 1024 * 1024;
/// Default size of the chunks a sender cuts a stream into: 256 KiB.
pub const CHUNK_BYTES_DEFAULT: u32 = 256 * 1024;

/// Caps and time bounds of one [`Transport`](super::Transport), for its client and server sides.
#[derive(Debug, Clone)]
pub struct TransportOptions {
    /// Largest unary request or response payload (and streamed-request header) accepted or sent,
    /// checked from the envelope header before anything is allocated.
    pub message_bytes_max: u32,
    /// Largest chunk of a streamed request the server accepts.
    pub chunk_bytes_max: u32,
    /// The server reads a whole unary request (or a stream's opening envelope) within this, from
    /// the moment the stream is accepted.
    pub request_read_timeout: Duration,
    /// The server's no-progress bound on a streamed request: a read that yields no byte for this
    /// long ends the transfer. Also bounds each step of writing a response.
    pub stream_idle_timeout: Duration,
    /// A connection attempt (QUIC + TLS handshake) gives up after this.
    pub connect_timeout: Duration,
    /// After a failed connection attempt, calls fail fast for this long before the next attempt;
    /// the delay doubles on each further failure up to [`Self::backoff_max`].
    pub backoff_initial: Duration,
    /// The longest delay between connection attempts.
    pub backoff_max: Duration,
    /// A connection that hears nothing from its peer for this long is dead (QUIC idle timeout).
    pub connection_idle_timeout: Duration,
    /// Keep-alive interval, well below [`Self::connection_idle_timeout`], so an idle but healthy
    /// connection stays open.
    pub keep_alive_interval: Duration,
    /// Concurrent streams (RPCs) a peer may open on one connection; more wait for a free slot
    /// (within their deadline).
    pub streams_per_connection_max: u32,
    /// At shutdown, after in-flight handlers finish (or the grace period ends), how long to wait
    /// for peers to acknowledge the close.
    pub close_linger: Duration,
}

impl Default for TransportOptions {
    fn default() -> Self {
        Self {
            message_bytes_max: MESSAGE_BYTES_MAX_DEFAULT,
            chunk_bytes_max: CHUNK_BYTES_MAX_DEFAULT,
            request_read_timeout: Duration::from_secs(10),
            stream_idle_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(3),
            backoff_initial: Duration::from_millis(50),
            backoff_max: Duration::from_secs(2),
            connection_idle_timeout: Duration::from_secs(10),
            keep_alive_interval: Duration::from_secs(1),
            streams_per_connection_max: 256,
            close_linger: Duration::from_secs(1),
        }
    }
}

impl TransportOptions {
    /// Checks the options are usable together.
    ///
    /// # Errors
    /// [`TransportError::Options`] naming the first problem.
    pub fn validate(&self) -> Result<(), TransportError> {
        let problem = if self.message_bytes_max == 0 || self.chunk_bytes_max == 0 {
            Some("message_bytes_max and chunk_bytes_max must be above zero")
        } else if self.request_read_timeout.is_zero()
            || self.stream_idle_timeout.is_zero()
            || self.connect_timeout.is_zero()
        {
            Some("timeouts must be above zero")
        } else if self.backoff_initial.is_zero() || self.backoff_initial > self.backoff_max {
            Some("backoff_initial must be above zero and at most backoff_max")
        } else if self.keep_alive_interval.is_zero()
            || self.keep_alive_interval >= self.connection_idle_timeout
        {
            Some("keep_alive_interval must be above zero and below connection_idle_timeout")
        } else if self.streams_per_connection_max == 0 {
            Some("streams_per_connection_max must be above zero")
        } else {
            None
        };
        match problem {
            Some(reason) => Err(TransportError::Options { reason }),
            None => Ok(()),
        }
    }
}

/// How a client sends one streamed request ([`Peer::send_stream`](super::Peer::send_stream)).
#[derive(Debug, Clone)]
pub struct StreamOptions {
    /// No-progress bound: connecting, reading the source, or writing to the peer may each make no
    /// progress for at most this long. A transfer that keeps moving is never cut, however long.
    pub idle_timeout: Duration,
    /// After the last chunk, how long to wait for the receiver's answer (it may have work to do,
    /// e.g. installing a snapshot).
    pub response_timeout: Duration,
    /// Bytes per chunk; must not exceed the receiver's
    /// [`chunk_bytes_max`](TransportOptions::chunk_bytes_max).
    pub chunk_bytes: u32,
}

impl Default for StreamOptions {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(10),
            response_timeout: Duration::from_secs(60),
            chunk_bytes: CHUNK_BYTES_DEFAULT,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_are_named() {
        TransportOptions::default().validate().unwrap();
        let bad = TransportOptions {
            keep_alive_interval: Duration::from_secs(20),
            ..TransportOptions::default()
        };
        assert!(matches!(
            bad.validate(),
            Err(TransportError::Options { reason }) if reason.contains("keep_alive")
        ));
        let bad = TransportOptions {
            backoff_initial: Duration::ZERO,
            ..TransportOptions::default()
        };
        assert!(bad.validate().is_err());
        const _: () = assert!(CHUNK_BYTES_DEFAULT <= CHUNK_BYTES_MAX_DEFAULT);
    }
}
