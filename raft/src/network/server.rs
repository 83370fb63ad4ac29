//! The server side: accept connections, accept streams, one exchange per stream.
//!
//! Every stream runs in its own task: read one envelope (size-capped from its header, within
//! `request_read_timeout`), call the [`Handler`], write the response envelope, finish. A bad
//! stream is answered with `REFUSED` (too large, malformed, too slow) and only that stream ends; a
//! failed handshake or connection ends only that connection; nothing a peer sends stops the
//! accept loop. If the caller goes away (STOP_SENDING, connection lost) the handler's future is
//! dropped.
//!
//! Shutdown: the accept loop stops, streams that arrive afterwards are refused with
//! `ShuttingDown`, and [`InFlight`] lets the transport wait (bounded) for the running exchanges.
#![deny(clippy::indexing_slicing)]

use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use quinn::{Endpoint, Incoming, RecvStream, SendStream};
use tokio::sync::{Notify, watch};

use super::chunks::ChunkStream;
use super::handler::{Handler, HandlerResult};
use super::options::TransportOptions;
use super::stream_io::{self, EnvelopeRead, code, is_tls_failure};
use super::wire::{
    self, KIND_OK, KIND_REFUSED, KIND_REMOTE_ERROR, KIND_STREAM_OPEN, Refusal, WireError,
};

/// Longest handler error message sent back; longer ones are cut (on a character boundary).
const REMOTE_ERROR_BYTES_MAX: usize = 64 * 1024;

/// What every connection and stream task of one server shares.
pub(crate) struct Server {
    pub(crate) handler: Arc<dyn Handler>,
    pub(crate) options: TransportOptions,
    pub(crate) shutdown: watch::Receiver<bool>,
    pub(crate) in_flight: Arc<InFlight>,
}

impl Server {
    fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }
}

/// Accepts connections until shutdown or until the endpoint closes.
pub(crate) async fn accept_loop(endpoint: Endpoint, server: Arc<Server>) {
    let mut shutdown = server.shutdown.clone();
    loop {
        let incoming = tokio::select! {
            incoming = endpoint.accept() => incoming,
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        let Some(incoming) = incoming else {
            break;
        };
        tokio::spawn(serve_connection(incoming, Arc::clone(&server)));
    }
    tracing::debug!("accept loop stopped");
}

async fn serve_connection(incoming: Incoming, server: Arc<Server>) {
    let remote = incoming.remote_address();
    let connecting = match incoming.accept() {
        Ok(connecting) => connecting,
        Err(error) => {
            tracing::debug!(%remote, %error, "incoming connection failed");
            return;
        }
    };
    let conn = match tokio::time::timeout(server.options.connect_timeout, connecting).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(error)) if is_tls_failure(&error) => {
            tracing::warn!(%remote, %error, "refused a peer: TLS handshake failed");
            return;
        }
        Ok(Err(error)) => {
            tracing::debug!(%remote, %error, "handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%remote, "handshake timed out");
            return;
        }
    };
    tracing::debug!(%remote, "peer connected");
    loop {
        let (send, recv) = match conn.accept_bi().await {
            Ok(streams) => streams,
            Err(error) => {
                tracing::debug!(%remote, %error, "connection ended");
                return;
            }
        };
        if server.is_shutting_down() {
            let idle = server.options.stream_idle_timeout;
            tokio::spawn(refuse(
                send,
                recv,
                Refusal::ShuttingDown,
                "the node is shutting down".to_owned(),
                idle,
            ));
            continue;
        }
        let guard = server.in_flight.enter();
        tokio::spawn(serve_stream(send, recv, Arc::clone(&server), remote, guard));
    }
}

/// One exchange on one stream.
async fn serve_stream(
    mut send: SendStream,
    mut recv: RecvStream,
    server: Arc<Server>,
    remote: SocketAddr,
    _in_flight: InFlightGuard,
) {
    let options = &server.options;
    let idle = options.stream_idle_timeout;
    let read = stream_io::read_envelope(&mut recv, options.message_bytes_max, None);
    let (header, payload) = match tokio::time::timeout(options.request_read_timeout, read).await {
        Ok(EnvelopeRead::Envelope(header, payload)) => (header, payload),
        Ok(EnvelopeRead::Invalid(error)) => {
            tracing::debug!(%remote, %error, "refused a malformed request");
            let refusal = match error {
                WireError::TooLarge { .. } => Refusal::TooLarge,
                _ => Refusal::Malformed,
            };
            return refuse(send, recv, refusal, error.to_string(), idle).await;
        }
        Ok(EnvelopeRead::Failed(failure)) => {
            // The caller went away before sending a whole request: nobody to answer.
            tracing::debug!(%remote, ?failure, "request stream failed");
            return;
        }
        Err(_) => {
            let message = format!("no whole request within {:?}", options.request_read_timeout);
            return refuse(send, recv, Refusal::Timeout, message, idle).await;
        }
    };
    // A unary request's receive half stays open until the answer is written, so no
    // STOP_SENDING races the caller's FIN; a streamed one belongs to the handler's chunks.
    let (work, _request) = if wire::is_app_kind(header.kind) {
        (server.handler.call(header.kind, payload), Some(recv))
    } else if header.kind == KIND_STREAM_OPEN {
        match wire::decode_stream_open(&payload) {
            Ok((kind, stream_header)) => {
                let chunks = ChunkStream::new(recv, idle, options.chunk_bytes_max);
                let work = server.handler.stream(kind, stream_header.to_vec(), chunks);
                (work, None)
            }
            Err(error) => {
                return refuse(send, recv, Refusal::Malformed, error.to_string(), idle).await;
            }
        }
    } else {
        let error = WireError::UnexpectedKind {
            kind: header.kind,
            expected: "a request kind (0x00..=0x7F) or STREAM_OPEN",
        };
        return refuse(send, recv, Refusal::Malformed, error.to_string(), idle).await;
    };
    let stopped = send.stopped();
    let result = tokio::select! {
        result = work => result,
        _ = stopped => {
            tracing::debug!(%remote, kind = header.kind, "caller went away; handler dropped");
            return;
        }
    };
    let (kind, body) = response(result, options.message_bytes_max);
    match stream_io::write_envelope(&mut send, kind, &body, Some(idle)).await {
        Ok(()) => finish(send, idle).await,
        Err(failure) => tracing::debug!(%remote, ?failure, "response not delivered"),
    }
}

/// The response envelope for a handler's result.
fn response(result: HandlerResult, max: u32) -> (u8, Vec<u8>) {
    match result {
        Ok(bytes) if bytes.len() <= max as usize => (KIND_OK, bytes),
        Ok(bytes) => (
            KIND_REMOTE_ERROR,
            format!(
                "response of {} bytes exceeds the cap of {max} bytes",
                bytes.len()
            )
            .into_bytes(),
        ),
        Err(message) => (KIND_REMOTE_ERROR, truncate(message).into_bytes()),
    }
}

fn truncate(mut message: String) -> String {
    if message.len() > REMOTE_ERROR_BYTES_MAX {
        let mut cut = REMOTE_ERROR_BYTES_MAX;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
    }
    message
}

/// Answers `REFUSED` and stops reading the request.
async fn refuse(
    mut send: SendStream,
    mut recv: RecvStream,
    refusal: Refusal,
    message: String,
    idle: Duration,
) {
    let _ = recv.stop(code::REFUSED);
    let payload = wire::encode_refusal(refusal, &truncate(message));
    if stream_io::write_envelope(&mut send, KIND_REFUSED, &payload, Some(idle))
        .await
        .is_ok()
    {
        finish(send, idle).await;
    }
}

/// Finishes the response half and waits (bounded) until the peer has it, so a shutdown that
/// closes the endpoint right after does not discard an answer already given.
async fn finish(mut send: SendStream, idle: Duration) {
    if send.finish().is_ok() {
        let _ = tokio::time::timeout(idle, send.stopped()).await;
    }
}

/// Counts running exchanges, so shutdown can wait for them.
#[derive(Default)]
pub(crate) struct InFlight {
    count: AtomicUsize,
    idle: Notify,
}

impl InFlight {
    fn enter(self: &Arc<Self>) -> InFlightGuard {
        self.count.fetch_add(1, Ordering::SeqCst);
        InFlightGuard(Arc::clone(self))
    }

    /// Returns once no exchange is running.
    pub(crate) async fn wait_idle(&self) {
        loop {
            let mut notified = pin!(self.idle.notified());
            notified.as_mut().enable();
            if self.count.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Exchanges running now.
    pub(crate) fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }
}

/// One running exchange; dropping it ends the exchange's count.
pub(crate) struct InFlightGuard(Arc<InFlight>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_responses_and_long_messages_become_bounded_errors() {
        assert_eq!(response(Ok(vec![1, 2]), 2), (KIND_OK, vec![1, 2]));
        let (kind, body) = response(Ok(vec![0; 3]), 2);
        assert_eq!(kind, KIND_REMOTE_ERROR);
        assert!(String::from_utf8(body).unwrap().contains("exceeds the cap"));
        let long = "é".repeat(REMOTE_ERROR_BYTES_MAX);
        let (kind, body) = response(Err(long), u32::MAX);
        assert_eq!(kind, KIND_REMOTE_ERROR);
        assert!(body.len() <= REMOTE_ERROR_BYTES_MAX);
        assert!(String::from_utf8(body).is_ok());
    }

    #[tokio::test]
    async fn in_flight_waits_for_every_guard() {
        let in_flight = Arc::new(InFlight::default());
        in_flight.wait_idle().await;
        let one = in_flight.enter();
        let two = in_flight.enter();
        assert_eq!(in_flight.count(), 2);
        let waiter = tokio::spawn({
            let in_flight = Arc::clone(&in_flight);
            async move { in_flight.wait_idle().await }
        });
        drop(one);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(two);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
    }
}
