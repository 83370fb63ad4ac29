//! The client side: a [`Peer`] is one remote node, with one cached QUIC connection that every RPC
//! to that node shares, one bidirectional stream per RPC.
//!
//! Connection management: the first call (or the first after the connection died) starts one
//! connection attempt in a background task; concurrent calls wait for that same attempt, so there
//! is never more than one connection per peer. A failed attempt makes calls fail fast with
//! [`RpcError::Unreachable`] (or [`RpcError::Tls`]) until the next attempt is due, the delay
//! doubling from `backoff_initial` to `backoff_max`; a success resets it.
//!
//! Streams: a unary call writes its request, finishes its half, and reads one response, all
//! within its deadline. A streamed call runs at a lower stream priority so that unary RPCs on the
//! same connection (votes, heartbeats) are sent first, and is bounded by a no-progress timeout
//! instead of a deadline.
//!
//! No lock is held across an `.await`: the state mutex guards a few field swaps only.
#![deny(clippy::indexing_slicing)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use quinn::{Connection, Endpoint, RecvStream, SendStream};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::watch;
use tokio::time::Instant;

use super::error::RpcError;
use super::options::{StreamOptions, TransportOptions};
use super::stream_io::{self, EnvelopeRead, WriteFailure, code, connection_error, is_tls_failure};
use super::wire::{
    self, HEADER_LEN, Header, KIND_CHUNK, KIND_END, KIND_OK, KIND_REFUSED, KIND_REMOTE_ERROR,
    KIND_STREAM_OPEN, WireError,
};

/// Stream priority of streamed (bulk) transfers; unary RPCs keep quinn's default of 0, and
/// higher priorities are sent first.
const BULK_PRIORITY: i32 = -1;

/// One remote node. Cheap to clone; clones share the connection. Calls fail with
/// [`RpcError::Shutdown`] once the [`Transport`](super::Transport) it came from is shut down or
/// dropped.
#[derive(Clone)]
pub struct Peer {
    inner: Arc<PeerInner>,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("addr", &self.inner.addr)
            .field("server_name", &self.inner.server_name)
            .finish_non_exhaustive()
    }
}

struct PeerInner {
    addr: SocketAddr,
    server_name: String,
    endpoint: Endpoint,
    client_config: quinn::ClientConfig,
    options: TransportOptions,
    shutdown: watch::Receiver<bool>,
    state: Mutex<PeerState>,
}

struct PeerState {
    slot: Slot,
    /// The delay before the next attempt if the coming one fails.
    backoff: Duration,
    /// Connections established so far.
    connects: u64,
}

enum Slot {
    /// No connection; the last attempt's failure, if any, and when the next may start.
    Idle(Option<Failure>),
    /// An attempt is running; the receiver turns `true` when it has finished.
    Connecting(watch::Receiver<bool>),
    /// A connection (possibly closed since: check `close_reason`).
    Ready(Connection),
}

#[derive(Clone)]
struct Failure {
    retry_at: Instant,
    tls: bool,
    reason: String,
}

impl Peer {
    pub(crate) fn new(
        addr: SocketAddr,
        server_name: String,
        endpoint: Endpoint,
        client_config: quinn::ClientConfig,
        options: TransportOptions,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        let backoff = options.backoff_initial;
        Self {
            inner: Arc::new(PeerInner {
                addr,
                server_name,
                endpoint,
                client_config,
                options,
                shutdown,
                state: Mutex::new(PeerState {
                    slot: Slot::Idle(None),
                    backoff,
                    connects: 0,
                }),
            }),
        }
    }

    /// The peer's address.
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// The name its certificate must carry.
    pub fn server_name(&self) -> &str {
        &self.inner.server_name
    }

    /// Connections established to this peer so far (1 while the first one lives; more after
    /// reconnects).
    pub fn connects(&self) -> u64 {
        self.inner.lock().connects
    }

    /// Whether a live connection is cached right now.
    pub fn is_connected(&self) -> bool {
        matches!(&self.inner.lock().slot, Slot::Ready(conn) if conn.close_reason().is_none())
    }

    /// One unary RPC: sends `payload` as a request of application `kind` (0..=0x7F) on a new
    /// stream and returns the response, all within `deadline` (connecting included).
    ///
    /// Cancel-safe: dropping the future abandons the stream (the receiver sees a truncated
    /// request or a caller gone away, and drops its handler); the connection stays.
    ///
    /// # Errors
    /// [`RpcError::Invalid`] for a reserved kind and [`RpcError::TooLarge`] for a payload above
    /// `message_bytes_max` (nothing sent); [`RpcError::Unreachable`] / [`RpcError::Tls`] when no
    /// connection could be had; [`RpcError::Timeout`] when the deadline passed;
    /// [`RpcError::Remote`] for the handler's error, [`RpcError::Refused`] when the peer's
    /// transport refused the request, [`RpcError::ConnectionLost`], [`RpcError::Decode`],
    /// [`RpcError::Shutdown`].
    pub async fn call(
        &self,
        kind: u8,
        payload: impl Into<Bytes>,
        deadline: Duration,
    ) -> Result<Vec<u8>, RpcError> {
        let payload = payload.into();
        check_kind(kind)?;
        let max = self.inner.options.message_bytes_max;
        let len = wire::payload_len(payload.len(), max).map_err(|_| RpcError::TooLarge {
            len: payload.len() as u64,
            max,
        })?;
        let until = Instant::now() + deadline;
        let conn = self.inner.connection(until).await?;
        let peer = self.inner.addr;
        let exchange = async {
            let (mut send, mut recv) = conn
                .open_bi()
                .await
                .map_err(|e| connection_error(peer, &e))?;
            let written = async {
                stream_io::write_all(&mut send, &Header::new(kind, len).encode(), None).await?;
                send.write_chunk(payload)
                    .await
                    .map_err(WriteFailure::from_write)?;
                send.finish().map_err(|_| WriteFailure::Closed)
            }
            .await;
            match written {
                // A peer that stops reading refuses the request; its answer says why.
                Ok(()) | Err(WriteFailure::Stopped(_)) => {}
                Err(failure) => return Err(write_error(peer, failure, deadline)),
            }
            read_response(&mut recv, peer, max).await
        };
        let result = match tokio::time::timeout_at(until, exchange).await {
            Ok(result) => result,
            Err(_) => Err(RpcError::Timeout {
                peer,
                after: deadline,
            }),
        };
        if let Err(RpcError::Tls { reason, .. }) = &result {
            // The peer refused our certificate after our side of the handshake had completed
            // (TLS 1.3 verifies the client last): back off as for a failed connection attempt.
            self.inner.failed_after_connect(&conn, reason.clone());
        }
        result
    }

    /// One streamed RPC: sends a request of application `kind` made of `header` and then all of
    /// `source`, cut into chunks, and returns the receiver's response. There is no overall
    /// deadline: the transfer may take as long as it keeps moving, but connecting, each read from
    /// `source` and each write to the peer may make no progress for at most
    /// `options.idle_timeout`, and the response must come within `options.response_timeout` of
    /// the last chunk. The receiver may answer early (refusing the transfer); the transfer then
    /// stops and that answer is returned.
    ///
    /// Cancel-safe: dropping the future ends the transfer without its `END` envelope, which the
    /// receiver reports as [`ChunkError::Truncated`](super::ChunkError::Truncated) (or its
    /// handler is dropped), never as a complete transfer.
    ///
    /// # Errors
    /// As [`Peer::call`], plus [`RpcError::Stalled`] for a transfer that made no progress and
    /// [`RpcError::Source`] when reading `source` failed (the receiver sees the transfer
    /// abandoned).
    pub async fn send_stream<R>(
        &self,
        kind: u8,
        header: impl Into<Bytes>,
        mut source: R,
        options: &StreamOptions,
    ) -> Result<Vec<u8>, RpcError>
    where
        R: AsyncRead + Unpin + Send,
    {
        let header = header.into();
        check_kind(kind)?;
        let max = self.inner.options.message_bytes_max;
        if header.len() >= max as usize {
            return Err(RpcError::TooLarge {
                len: header.len() as u64 + 1,
                max,
            });
        }
        if options.chunk_bytes == 0 || options.idle_timeout.is_zero() {
            return Err(RpcError::Invalid {
                reason: "chunk_bytes and idle_timeout must be above zero".to_owned(),
            });
        }
        let peer = self.inner.addr;
        let idle = options.idle_timeout;
        let conn = self.inner.connection(Instant::now() + idle).await?;
        let (mut send, mut recv) = match tokio::time::timeout(idle, conn.open_bi()).await {
            Ok(streams) => streams.map_err(|e| connection_error(peer, &e))?,
            Err(_) => return Err(RpcError::Stalled { peer, idle }),
        };
        // Lower priority than unary RPCs: a vote never waits behind a snapshot's bytes.
        let _ = send.set_priority(BULK_PRIORITY);
        let response = read_response(&mut recv, peer, max);
        tokio::pin!(response);
        let sent = tokio::select! {
            sent = send_all(&mut send, kind, &header, &mut source, options, peer) => sent,
            early = &mut response => {
                // The receiver answered before the end (a refusal, usually): stop sending.
                let _ = send.reset(code::CANCELLED);
                return early;
            }
        };
        match sent {
            Ok(()) | Err(SendFailure::Stopped) => {}
            Err(SendFailure::Rpc(error)) => {
                let _ = send.reset(code::CANCELLED);
                return Err(error);
            }
        }
        match tokio::time::timeout(options.response_timeout, response).await {
            Ok(result) => result,
            Err(_) => Err(RpcError::Timeout {
                peer,
                after: options.response_timeout,
            }),
        }
    }
}

impl PeerInner {
    fn lock(&self) -> MutexGuard<'_, PeerState> {
        // Nothing panics while holding this lock; if something did, the state is still a valid
        // value of its type.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A live connection, made (or waited for) before `until`.
    async fn connection(self: &Arc<Self>, until: Instant) -> Result<Connection, RpcError> {
        loop {
            if *self.shutdown.borrow() {
                return Err(RpcError::Shutdown);
            }
            let mut done = {
                let mut state = self.lock();
                match &state.slot {
                    Slot::Ready(conn) if conn.close_reason().is_none() => return Ok(conn.clone()),
                    Slot::Connecting(done) => done.clone(),
                    Slot::Idle(Some(failure)) if Instant::now() < failure.retry_at => {
                        return Err(self.failure_error(failure));
                    }
                    _ => self.start_connect(&mut state),
                }
            };
            let finished = tokio::time::timeout_at(until, async {
                done.wait_for(|finished| *finished).await.map(|_| ())
            })
            .await;
            match finished {
                Ok(Ok(())) => {}
                Ok(Err(_)) => {
                    // The attempt's task ended without reporting (runtime shutting down): do not
                    // leave the slot waiting for it forever.
                    let mut state = self.lock();
                    if matches!(&state.slot, Slot::Connecting(rx) if rx.same_channel(&done)) {
                        state.slot = Slot::Idle(None);
                    }
                }
                Err(_) => {
                    return Err(RpcError::Unreachable {
                        peer: self.addr,
                        reason: "no connection before the deadline (still connecting)".to_owned(),
                    });
                }
            }
        }
    }

    /// Starts one connection attempt in its own task (so a caller giving up does not abandon
    /// it) and returns the receiver that turns `true` when it has finished.
    fn start_connect(self: &Arc<Self>, state: &mut PeerState) -> watch::Receiver<bool> {
        let (finished, done) = watch::channel(false);
        state.slot = Slot::Connecting(done.clone());
        let inner = Arc::clone(self);
        tokio::spawn(async move {
            let result = inner.connect().await;
            {
                let mut state = inner.lock();
                match result {
                    Ok(conn) => {
                        tracing::debug!(peer = %inner.addr, "connected");
                        state.slot = Slot::Ready(conn);
                        state.backoff = inner.options.backoff_initial;
                        state.connects += 1;
                    }
                    Err(failure) => {
                        tracing::debug!(peer = %inner.addr, reason = %failure.1, "connect failed");
                        let failure = inner.record_failure(&mut state, failure.0, failure.1);
                        state.slot = Slot::Idle(Some(failure));
                    }
                }
            }
            let _ = finished.send(true);
        });
        done
    }

    /// One attempt: QUIC and TLS handshake within `connect_timeout`. The error says whether TLS
    /// failed, and why.
    async fn connect(&self) -> Result<Connection, (bool, String)> {
        let connecting = self
            .endpoint
            .connect_with(self.client_config.clone(), self.addr, &self.server_name)
            .map_err(|e| (false, e.to_string()))?;
        match tokio::time::timeout(self.options.connect_timeout, connecting).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err((is_tls_failure(&e), e.to_string())),
            Err(_) => Err((
                false,
                format!("no handshake within {:?}", self.options.connect_timeout),
            )),
        }
    }

    fn record_failure(&self, state: &mut PeerState, tls: bool, reason: String) -> Failure {
        let delay = state.backoff;
        state.backoff = delay.saturating_mul(2).min(self.options.backoff_max);
        Failure {
            retry_at: Instant::now() + delay,
            tls,
            reason,
        }
    }

    /// A TLS failure seen on `conn` after it was cached: drop it and back off.
    fn failed_after_connect(&self, conn: &Connection, reason: String) {
        let mut state = self.lock();
        if matches!(&state.slot, Slot::Ready(cached) if cached.stable_id() == conn.stable_id()) {
            let failure = self.record_failure(&mut state, true, reason);
            state.slot = Slot::Idle(Some(failure));
        }
    }

    fn failure_error(&self, failure: &Failure) -> RpcError {
        let wait = failure.retry_at.saturating_duration_since(Instant::now());
        let reason = format!("{} (next attempt in {wait:?})", failure.reason);
        if failure.tls {
            RpcError::Tls {
                peer: self.addr,
                reason,
            }
        } else {
            RpcError::Unreachable {
                peer: self.addr,
                reason,
            }
        }
    }
}

fn check_kind(kind: u8) -> Result<(), RpcError> {
    if wire::is_app_kind(kind) {
        Ok(())
    } else {
        Err(RpcError::Invalid {
            reason: format!(
                "request kind {kind:#04x} is reserved for the transport (use 0..={:#04x})",
                wire::KIND_APP_MAX
            ),
        })
    }
}

/// Reads the response envelope of an exchange.
async fn read_response(
    recv: &mut RecvStream,
    peer: SocketAddr,
    max: u32,
) -> Result<Vec<u8>, RpcError> {
    match stream_io::read_envelope(recv, max, None).await {
        EnvelopeRead::Envelope(header, payload) => match header.kind {
            KIND_OK => Ok(payload),
            KIND_REMOTE_ERROR => Err(RpcError::Remote {
                peer,
                message: String::from_utf8_lossy(&payload).into_owned(),
            }),
            KIND_REFUSED => {
                let (refusal, message) = wire::decode_refusal(&payload)
                    .map_err(|source| RpcError::Decode { peer, source })?;
                Err(RpcError::Refused {
                    peer,
                    refusal,
                    message,
                })
            }
            kind => Err(RpcError::Decode {
                peer,
                source: WireError::UnexpectedKind {
                    kind,
                    expected: "OK, REMOTE_ERROR or REFUSED",
                },
            }),
        },
        EnvelopeRead::Invalid(source) => Err(RpcError::Decode { peer, source }),
        EnvelopeRead::Failed(failure) => Err(failure.into_rpc(peer, Duration::ZERO, HEADER_LEN)),
    }
}

fn write_error(peer: SocketAddr, failure: WriteFailure, idle: Duration) -> RpcError {
    match failure {
        WriteFailure::Stalled => RpcError::Stalled { peer, idle },
        WriteFailure::Connection(e) => connection_error(peer, &e),
        WriteFailure::Stopped(code) => RpcError::ConnectionLost {
            peer,
            reason: format!("the peer stopped reading (code {code})"),
        },
        WriteFailure::Closed => RpcError::ConnectionLost {
            peer,
            reason: "request stream closed".to_owned(),
        },
    }
}

enum SendFailure {
    /// The receiver stopped reading; its answer follows on the response half.
    Stopped,
    /// Anything else: the transfer is over.
    Rpc(RpcError),
}

/// `STREAM_OPEN CHUNK* END`, then finish: the sending half of a streamed request.
async fn send_all<R>(
    send: &mut SendStream,
    kind: u8,
    header: &[u8],
    source: &mut R,
    options: &StreamOptions,
    peer: SocketAddr,
) -> Result<(), SendFailure>
where
    R: AsyncRead + Unpin + Send,
{
    let idle = options.idle_timeout;
    let fail = |failure: WriteFailure| match failure {
        WriteFailure::Stopped(_) => SendFailure::Stopped,
        other => SendFailure::Rpc(write_error(peer, other, idle)),
    };
    let open = wire::encode_stream_open(kind, header);
    stream_io::write_envelope(send, KIND_STREAM_OPEN, &open, Some(idle))
        .await
        .map_err(fail)?;
    let mut buf = vec![0u8; options.chunk_bytes as usize];
    let mut total = 0u64;
    loop {
        let n = match tokio::time::timeout(idle, source.read(&mut buf)).await {
            Ok(Ok(n)) => n,
            Ok(Err(source)) => return Err(SendFailure::Rpc(RpcError::Source { source })),
            Err(_) => return Err(SendFailure::Rpc(RpcError::Stalled { peer, idle })),
        };
        let Some(chunk) = buf.get(..n).filter(|chunk| !chunk.is_empty()) else {
            break;
        };
        stream_io::write_envelope(send, KIND_CHUNK, chunk, Some(idle))
            .await
            .map_err(fail)?;
        total += n as u64;
    }
    stream_io::write_envelope(send, KIND_END, &wire::encode_end(total), Some(idle))
        .await
        .map_err(fail)?;
    send.finish()
        .map_err(|_| SendFailure::Rpc(write_error(peer, WriteFailure::Closed, idle)))
}
