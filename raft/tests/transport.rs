//! The QUIC transport end to end on 127.0.0.1: real endpoints, real TLS, small timeouts.
//!
//! Each test binds its own transports on port 0 and asserts something the transport could get
//! wrong: many RPCs on one connection, deadlines, size caps, garbage, certificates from the wrong
//! CA or none, reconnecting, streamed transfers with a no-progress timeout, and shutdown.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use quinn::crypto::rustls::QuicClientConfig;
use rustls::pki_types::pem::PemObject;
use tasklog_raft::certs::{ClusterCa, node_server_name};
use tasklog_raft::network::wire::{self, KIND_REFUSED};
use tasklog_raft::network::{
    ALPN, BoxFuture, ChunkError, ChunkStream, Handler, HandlerResult, Peer, Refusal, RpcError,
    StreamOptions, TlsMaterial, Transport, TransportError, TransportOptions, handler_fn,
};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};
use tokio::sync::mpsc;

const ECHO: u8 = 1;
const SLEEP: u8 = 2;
const FAIL: u8 = 3;
const STREAM_SUM: u8 = 10;
const STREAM_SLOW: u8 = 11;
const STREAM_WATCH: u8 = 12;

fn material(ca: &ClusterCa, node_id: u64) -> TlsMaterial {
    let node = ca.issue_node(node_id, &[]).unwrap();
    TlsMaterial::from_pem(ca.cert_pem(), &node.cert_pem, &node.key_pem).unwrap()
}

fn options() -> TransportOptions {
    TransportOptions {
        request_read_timeout: Duration::from_millis(500),
        stream_idle_timeout: Duration::from_millis(500),
        connect_timeout: Duration::from_millis(500),
        backoff_initial: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        close_linger: Duration::from_millis(200),
        // A half-open handshake (a client attempt that gave up just as the server came back)
        // lingers on the server until this idle timeout; keep it short so a dropped endpoint
        // frees its port quickly.
        connection_idle_timeout: Duration::from_secs(2),
        keep_alive_interval: Duration::from_millis(500),
        ..TransportOptions::default()
    }
}

fn localhost() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// The test handler: echo, sleep, fail, and three streamed kinds. Counts calls, and sends what
/// `STREAM_WATCH` saw to `watched`.
struct TestHandler {
    calls: AtomicUsize,
    watched: mpsc::UnboundedSender<Result<u64, ChunkError>>,
}

impl TestHandler {
    fn new() -> (Arc<Self>, mpsc::UnboundedReceiver<Result<u64, ChunkError>>) {
        let (watched, receiver) = mpsc::unbounded_channel();
        let handler = Arc::new(Self {
            calls: AtomicUsize::new(0),
            watched,
        });
        (handler, receiver)
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl Handler for TestHandler {
    fn call(&self, kind: u8, payload: Vec<u8>) -> BoxFuture<HandlerResult> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            match kind {
                ECHO => Ok(payload),
                SLEEP => {
                    let millis = u64::from_le_bytes(payload.try_into().unwrap());
                    tokio::time::sleep(Duration::from_millis(millis)).await;
                    Ok(b"slept".to_vec())
                }
                FAIL => Err("it failed on purpose".to_owned()),
                other => Err(format!("unknown kind {other}")),
            }
        })
    }

    fn stream(
        &self,
        kind: u8,
        header: Vec<u8>,
        mut chunks: ChunkStream,
    ) -> BoxFuture<HandlerResult> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let watched = self.watched.clone();
        Box::pin(async move {
            let mut sum = 0u64;
            loop {
                match chunks.next().await {
                    Ok(Some(chunk)) => {
                        sum += chunk.iter().map(|b| u64::from(*b)).sum::<u64>();
                        if kind == STREAM_SLOW {
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                    Ok(None) => break,
                    Err(error) => {
                        let message = error.to_string();
                        if kind == STREAM_WATCH {
                            let _ = watched.send(Err(error));
                        }
                        return Err(message);
                    }
                }
            }
            if kind == STREAM_WATCH {
                let _ = watched.send(Ok(chunks.bytes_received()));
            }
            let mut answer = header;
            answer.extend_from_slice(&chunks.bytes_received().to_le_bytes());
            answer.extend_from_slice(&sum.to_le_bytes());
            Ok(answer)
        })
    }
}

/// A server with [`TestHandler`] and a client transport, both from one CA.
struct Pair {
    server: Transport,
    client: Transport,
    handler: Arc<TestHandler>,
    watched: mpsc::UnboundedReceiver<Result<u64, ChunkError>>,
    peer: Peer,
}

fn pair_with(server_options: TransportOptions, client_options: TransportOptions) -> Pair {
    let ca = ClusterCa::generate().unwrap();
    let server = Transport::bind(localhost(), &material(&ca, 1), server_options).unwrap();
    let (handler, watched) = TestHandler::new();
    server.serve(handler.clone()).unwrap();
    let client = Transport::bind(localhost(), &material(&ca, 2), client_options).unwrap();
    let peer = client
        .peer(server.local_addr(), &node_server_name(1))
        .unwrap();
    Pair {
        server,
        client,
        handler,
        watched,
        peer,
    }
}

fn pair() -> Pair {
    pair_with(options(), options())
}

fn sleep_for(millis: u64) -> Vec<u8> {
    millis.to_le_bytes().to_vec()
}

/// A quinn client outside the transport, for bytes the transport would never send.
async fn raw_connection(tls: Arc<rustls::ClientConfig>, server: SocketAddr) -> quinn::Connection {
    let mut endpoint = quinn::Endpoint::client(localhost()).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(
        QuicClientConfig::try_from(tls).unwrap(),
    )));
    endpoint
        .connect(server, "localhost")
        .unwrap()
        .await
        .unwrap()
}

/// Sends `bytes` on a new stream (finishing it unless `finish` is false) and returns the raw
/// answer.
async fn raw_exchange(conn: &quinn::Connection, bytes: &[u8], finish: bool) -> Vec<u8> {
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(bytes).await.unwrap();
    if finish {
        send.finish().unwrap();
    }
    tokio::time::timeout(Duration::from_secs(5), recv.read_to_end(1 << 20))
        .await
        .unwrap()
        .unwrap()
}

fn refusal_of(answer: &[u8]) -> (Refusal, String) {
    let (header, payload) = wire::decode(answer, u32::MAX).unwrap();
    assert_eq!(header.kind, KIND_REFUSED, "{answer:?}");
    wire::decode_refusal(payload).unwrap()
}

#[tokio::test]
async fn many_concurrent_rpcs_share_one_connection() {
    let pair = pair();
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..300u32 {
        let peer = pair.peer.clone();
        calls.spawn(async move {
            let payload = format!("request {i}").repeat(1 + (i as usize % 50));
            let answer = peer
                .call(ECHO, payload.clone().into_bytes(), Duration::from_secs(10))
                .await
                .unwrap();
            assert_eq!(answer, payload.into_bytes());
        });
    }
    while let Some(done) = calls.join_next().await {
        done.unwrap();
    }
    assert_eq!(pair.handler.calls(), 300);
    assert_eq!(pair.peer.connects(), 1);
    assert_eq!(pair.server.open_connections(), 1);
    assert_eq!(pair.client.open_connections(), 1);
    // The same (address, name) gives the same peer, so the same connection.
    let again = pair
        .client
        .peer(pair.server.local_addr(), &node_server_name(1))
        .unwrap();
    again
        .call(ECHO, &b"x"[..], Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(again.connects(), 1);
}

#[tokio::test]
async fn the_deadline_fires_against_a_sleeping_handler_and_cancels_it() {
    let pair = pair();
    let start = Instant::now();
    let error = pair
        .peer
        .call(SLEEP, sleep_for(30_000), Duration::from_millis(200))
        .await
        .unwrap_err();
    assert!(
        matches!(error, RpcError::Timeout { after, .. } if after == Duration::from_millis(200)),
        "{error}"
    );
    assert!(error.is_retryable());
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    // The caller went away, so the server drops the handler's future instead of sleeping on.
    let wait = Instant::now();
    while pair.server.requests_in_flight() > 0 {
        assert!(
            wait.elapsed() < Duration::from_secs(3),
            "handler still running"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // And the connection still serves.
    let answer = pair
        .peer
        .call(ECHO, &b"after"[..], Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(answer, b"after");
    assert_eq!(pair.peer.connects(), 1);
}

#[tokio::test]
async fn handler_errors_and_reserved_kinds_are_typed() {
    let pair = pair();
    let error = pair
        .peer
        .call(FAIL, Vec::new(), Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, RpcError::Remote { message, .. } if message == "it failed on purpose"),
        "{error}"
    );
    let error = pair
        .peer
        .call(0x80, Vec::new(), Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(matches!(error, RpcError::Invalid { .. }), "{error}");
    let error = pair
        .peer
        .send_stream(ECHO, Vec::new(), &b"abc"[..], &StreamOptions::default())
        .await;
    // TestHandler streams every kind; a plain handler_fn refuses streamed requests.
    assert!(error.is_ok());
    let ca = ClusterCa::generate().unwrap();
    let server = Transport::bind(localhost(), &material(&ca, 1), options()).unwrap();
    server
        .serve(handler_fn(|_, payload| async move { Ok(payload) }))
        .unwrap();
    let client = Transport::bind(localhost(), &material(&ca, 2), options()).unwrap();
    let peer = client.peer(server.local_addr(), "localhost").unwrap();
    let error = peer
        .send_stream(ECHO, Vec::new(), &b"abc"[..], &StreamOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&error, RpcError::Remote { message, .. } if message.contains("no streamed")),
        "{error}"
    );
    assert!(matches!(
        client.peer(server.local_addr(), "not a name!"),
        Err(TransportError::ServerName { .. })
    ));
    assert!(matches!(
        server.serve(handler_fn(|_, p| async move { Ok(p) })),
        Err(TransportError::AlreadyServing)
    ));
}

#[tokio::test]
async fn oversized_requests_are_refused_and_the_server_keeps_serving() {
    let small = TransportOptions {
        message_bytes_max: 64 * 1024,
        ..options()
    };
    let pair = pair_with(small.clone(), options());
    // Larger than the server's cap: refused from the header, before the server allocates. The
    // second size is beyond the stream's flow-control window, so the client sees its write stopped.
    for len in [64 * 1024 + 1, 4 * 1024 * 1024] {
        let error = pair
            .peer
            .call(ECHO, vec![7u8; len], Duration::from_secs(10))
            .await
            .unwrap_err();
        assert!(
            matches!(
                &error,
                RpcError::Refused {
                    refusal: Refusal::TooLarge,
                    ..
                }
            ),
            "{len}: {error}"
        );
        let answer = pair
            .peer
            .call(ECHO, vec![1u8; 64 * 1024], Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(answer.len(), 64 * 1024);
    }
    assert_eq!(
        pair.handler.calls(),
        2,
        "the handler never saw an oversized request"
    );
    assert_eq!(pair.peer.connects(), 1);

    // Larger than the client's own cap: refused locally, nothing sent.
    let local = pair_with(options(), small);
    let error = local
        .peer
        .call(ECHO, vec![0u8; 64 * 1024 + 1], Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            RpcError::TooLarge {
                len: 65537,
                max: 65536
            }
        ),
        "{error}"
    );
    assert_eq!(local.peer.connects(), 0);
}

#[tokio::test]
async fn garbage_on_a_stream_gets_a_typed_refusal_and_the_server_keeps_serving() {
    let ca = ClusterCa::generate().unwrap();
    let server = Transport::bind(localhost(), &material(&ca, 1), options()).unwrap();
    let (handler, _watched) = TestHandler::new();
    server.serve(handler.clone()).unwrap();
    let client_tls = material(&ca, 2).client_config().unwrap();
    let conn = raw_connection(client_tls, server.local_addr()).await;

    let (refusal, message) =
        refusal_of(&raw_exchange(&conn, b"GET / HTTP/1.1\r\n\r\n", true).await);
    assert_eq!(refusal, Refusal::Malformed);
    assert!(message.contains("version"), "{message}");

    // A response kind sent as a request.
    let bytes = wire::encode(wire::KIND_OK, b"hi").unwrap();
    assert_eq!(
        refusal_of(&raw_exchange(&conn, &bytes, true).await).0,
        Refusal::Malformed
    );
    // A header promising more than arrives.
    let mut bytes = wire::Header::new(ECHO, 100).encode().to_vec();
    bytes.extend_from_slice(b"short");
    assert_eq!(
        refusal_of(&raw_exchange(&conn, &bytes, true).await).0,
        Refusal::Malformed
    );
    // Half a header.
    assert_eq!(
        refusal_of(&raw_exchange(&conn, &[1, 1, 0], true).await).0,
        Refusal::Malformed
    );
    // A header claiming 4 GiB.
    let bytes = wire::Header::new(ECHO, u32::MAX).encode();
    assert_eq!(
        refusal_of(&raw_exchange(&conn, &bytes, true).await).0,
        Refusal::TooLarge
    );
    // Bytes that stop arriving: the read deadline answers.
    let (refusal, _) = refusal_of(&raw_exchange(&conn, &[1, ECHO, 9, 0], false).await);
    assert_eq!(refusal, Refusal::Timeout);
    // A streamed request whose chunks are garbage: the handler sees a typed error.
    let mut bytes = wire::encode(
        wire::KIND_STREAM_OPEN,
        &wire::encode_stream_open(STREAM_SUM, b""),
    )
    .unwrap();
    bytes.extend_from_slice(b"\x01\xE1\xff\xff\xff\x7f");
    let answer = raw_exchange(&conn, &bytes, true).await;
    let (header, payload) = wire::decode(&answer, u32::MAX).unwrap();
    assert_eq!(header.kind, wire::KIND_REMOTE_ERROR);
    assert!(
        String::from_utf8_lossy(payload).contains("bad chunk"),
        "{answer:?}"
    );
    // An END that lies about the length.
    let mut bytes = wire::encode(
        wire::KIND_STREAM_OPEN,
        &wire::encode_stream_open(STREAM_SUM, b""),
    )
    .unwrap();
    bytes.extend(wire::encode(wire::KIND_CHUNK, b"abc").unwrap());
    bytes.extend(wire::encode(wire::KIND_END, &wire::encode_end(4)).unwrap());
    let answer = raw_exchange(&conn, &bytes, true).await;
    assert!(
        String::from_utf8_lossy(&answer).contains("END declares 4 bytes but 3"),
        "{answer:?}"
    );

    // The same connection, and the server, still serve a well-formed request.
    let answer = raw_exchange(&conn, &wire::encode(ECHO, b"fine").unwrap(), true).await;
    assert_eq!(wire::decode(&answer, u32::MAX).unwrap().1, b"fine");
    assert_eq!(
        handler.calls(),
        3,
        "only the two streams and the good request reached the handler"
    );
    let client = Transport::bind(localhost(), &material(&ca, 3), options()).unwrap();
    let peer = client.peer(server.local_addr(), "127.0.0.1").unwrap();
    assert_eq!(
        peer.call(ECHO, &b"ok"[..], Duration::from_secs(5))
            .await
            .unwrap(),
        b"ok"
    );
}

#[tokio::test]
async fn a_client_certificate_from_another_ca_is_refused() {
    let cluster = ClusterCa::generate().unwrap();
    let foreign = ClusterCa::generate().unwrap();
    let server = Transport::bind(localhost(), &material(&cluster, 1), options()).unwrap();
    let (handler, _watched) = TestHandler::new();
    server.serve(handler.clone()).unwrap();
    // The intruder trusts the cluster CA (so it accepts the server) but its own certificate was
    // signed by another CA.
    let intruder_cert = foreign.issue_node(2, &[]).unwrap();
    let intruder_tls = TlsMaterial::from_pem(
        cluster.cert_pem(),
        &intruder_cert.cert_pem,
        &intruder_cert.key_pem,
    )
    .unwrap();
    let intruder = Transport::bind(localhost(), &intruder_tls, options()).unwrap();
    let peer = intruder
        .peer(server.local_addr(), &node_server_name(1))
        .unwrap();
    for _ in 0..2 {
        let error = peer
            .call(ECHO, &b"let me in"[..], Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(error, RpcError::Tls { .. }), "{error}");
        assert!(!error.is_retryable());
    }
    assert_eq!(handler.calls(), 0);
    // A member of the cluster is served by the same server.
    let member = Transport::bind(localhost(), &material(&cluster, 3), options()).unwrap();
    let peer = member
        .peer(server.local_addr(), &node_server_name(1))
        .unwrap();
    assert_eq!(
        peer.call(ECHO, &b"hi"[..], Duration::from_secs(5))
            .await
            .unwrap(),
        b"hi"
    );
}

#[tokio::test]
async fn a_client_without_a_certificate_is_refused() {
    let cluster = ClusterCa::generate().unwrap();
    let server = Transport::bind(localhost(), &material(&cluster, 1), options()).unwrap();
    let (handler, _watched) = TestHandler::new();
    server.serve(handler.clone()).unwrap();

    let mut roots = rustls::RootCertStore::empty();
    let ca_der =
        rustls::pki_types::CertificateDer::from_pem_slice(cluster.cert_pem().as_bytes()).unwrap();
    roots.add(ca_der).unwrap();
    let mut anonymous = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    anonymous.alpn_protocols = vec![ALPN.to_vec()];

    let mut endpoint = quinn::Endpoint::client(localhost()).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(
        QuicClientConfig::try_from(Arc::new(anonymous)).unwrap(),
    )));
    // TLS 1.3 lets the client finish its side before the server has checked it, so the refusal
    // may arrive at the handshake or at the first stream.
    let result = async {
        let conn = endpoint
            .connect(server.local_addr(), "localhost")
            .unwrap()
            .await?;
        let (mut send, mut recv) = conn.open_bi().await?;
        let _ = send.write_all(&wire::encode(ECHO, b"hello").unwrap()).await;
        let _ = send.finish();
        match recv.read_to_end(1024).await {
            Ok(bytes) => panic!("an anonymous client got an answer: {bytes:?}"),
            Err(quinn::ReadToEndError::Read(quinn::ReadError::ConnectionLost(e))) => {
                Err::<(), _>(e)
            }
            Err(other) => panic!("unexpected error {other}"),
        }
    };
    let error: quinn::ConnectionError = tokio::time::timeout(Duration::from_secs(5), result)
        .await
        .unwrap()
        .unwrap_err();
    let code = match &error {
        quinn::ConnectionError::ConnectionClosed(close) => u64::from(close.error_code),
        other => panic!("expected the server to close the connection, got {other}"),
    };
    assert!((0x100..=0x1FF).contains(&code), "a TLS alert, got {error}");
    assert!(error.to_string().contains("certificate"), "{error}");
    assert_eq!(handler.calls(), 0);
}

#[tokio::test]
async fn a_server_with_a_foreign_certificate_is_refused_by_the_client() {
    let cluster = ClusterCa::generate().unwrap();
    let foreign = ClusterCa::generate().unwrap();
    let impostor = Transport::bind(localhost(), &material(&foreign, 1), options()).unwrap();
    let (handler, _watched) = TestHandler::new();
    impostor.serve(handler.clone()).unwrap();
    let client = Transport::bind(localhost(), &material(&cluster, 2), options()).unwrap();
    let peer = client
        .peer(impostor.local_addr(), &node_server_name(1))
        .unwrap();
    let error = peer
        .call(ECHO, &b"secret"[..], Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, RpcError::Tls { reason, .. } if reason.contains("invalid peer certificate: UnknownIssuer")),
        "{error}"
    );
    assert_eq!(handler.calls(), 0);
    assert_eq!(peer.connects(), 0);

    // A genuine member dialled under another node's name is refused too.
    let member = Transport::bind(localhost(), &material(&cluster, 1), options()).unwrap();
    member.serve(handler.clone()).unwrap();
    let wrong = client
        .peer(member.local_addr(), &node_server_name(3))
        .unwrap();
    let error = wrong
        .call(ECHO, &b"x"[..], Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, RpcError::Tls { reason, .. } if reason.contains("not valid for name")),
        "{error}"
    );
    assert_eq!(handler.calls(), 0);
}

#[tokio::test]
async fn reconnects_after_the_server_restarts_on_the_same_address() {
    let ca = ClusterCa::generate().unwrap();
    let server_tls = material(&ca, 1);
    let first = Transport::bind(localhost(), &server_tls, options()).unwrap();
    let addr = first.local_addr();
    first
        .serve(handler_fn(|_, _| async { Ok(b"first".to_vec()) }))
        .unwrap();
    let client = Transport::bind(localhost(), &material(&ca, 2), options()).unwrap();
    let peer = client.peer(addr, &node_server_name(1)).unwrap();
    assert_eq!(
        peer.call(ECHO, Vec::new(), Duration::from_secs(5))
            .await
            .unwrap(),
        b"first"
    );

    first.shutdown(Duration::from_secs(1)).await;
    drop(first);
    let error = peer
        .call(ECHO, Vec::new(), Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(error.is_retryable(), "{error}");
    assert!(!peer.is_connected());

    let second = rebind(addr, &server_tls).await;
    second
        .serve(handler_fn(|_, _| async { Ok(b"second".to_vec()) }))
        .unwrap();
    let answer = call_until_ok(&peer).await;
    assert_eq!(answer, b"second");
    assert_eq!(peer.connects(), 2);

    // Dropping a transport without shutdown also closes its connections and frees the address.
    drop(second);
    let third = rebind(addr, &server_tls).await;
    third
        .serve(handler_fn(|_, _| async { Ok(b"third".to_vec()) }))
        .unwrap();
    assert_eq!(call_until_ok(&peer).await, b"third");
    assert_eq!(peer.connects(), 3);
}

/// Binds `addr` again once the previous endpoint's socket is released (its driver stops soon
/// after the last handle goes).
async fn rebind(addr: SocketAddr, tls: &TlsMaterial) -> Transport {
    let start = Instant::now();
    loop {
        match Transport::bind(addr, tls, options()) {
            Ok(transport) => return transport,
            Err(error) => {
                assert!(start.elapsed() < Duration::from_secs(5), "{error}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// Calls until a call succeeds (each failure retryable), for at most 10 s.
async fn call_until_ok(peer: &Peer) -> Vec<u8> {
    let start = Instant::now();
    loop {
        match peer
            .call(ECHO, Vec::new(), Duration::from_millis(500))
            .await
        {
            Ok(answer) => return answer,
            Err(error) => {
                assert!(error.is_retryable(), "{error}");
                assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "never reconnected: {error}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

#[tokio::test]
async fn an_unreachable_peer_fails_fast_with_backoff() {
    let ca = ClusterCa::generate().unwrap();
    let client = Transport::bind(localhost(), &material(&ca, 2), options()).unwrap();
    // A bound UDP socket that never answers: the handshake times out.
    let silent = std::net::UdpSocket::bind(localhost()).unwrap();
    let peer = client
        .peer(silent.local_addr().unwrap(), "localhost")
        .unwrap();
    let start = Instant::now();
    let error = peer
        .call(ECHO, Vec::new(), Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, RpcError::Unreachable { reason, .. } if reason.contains("handshake")),
        "{error}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "bounded by connect_timeout"
    );
    // Within the backoff delay the next call does not even try.
    let start = Instant::now();
    let error = peer
        .call(ECHO, Vec::new(), Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, RpcError::Unreachable { reason, .. } if reason.contains("next attempt")),
        "{error}"
    );
    assert!(start.elapsed() < Duration::from_millis(100));
    // A deadline shorter than the handshake bound is a deadline, reported as unreachable.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let error = peer
        .call(ECHO, Vec::new(), Duration::from_millis(100))
        .await
        .unwrap_err();
    assert!(matches!(error, RpcError::Unreachable { .. }), "{error}");
}

#[tokio::test]
async fn a_streamed_transfer_arrives_whole() {
    let pair = pair();
    let data: Vec<u8> = (0..3 * 1024 * 1024 + 17)
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    let sum: u64 = data.iter().map(|b| u64::from(*b)).sum();
    let options = StreamOptions {
        chunk_bytes: 64 * 1024,
        ..StreamOptions::default()
    };
    let answer = pair
        .peer
        .send_stream(STREAM_SUM, &b"snap"[..], &data[..], &options)
        .await
        .unwrap();
    let mut expected = b"snap".to_vec();
    expected.extend_from_slice(&(data.len() as u64).to_le_bytes());
    expected.extend_from_slice(&sum.to_le_bytes());
    assert_eq!(answer, expected);
    // An empty transfer is a transfer too.
    let answer = pair
        .peer
        .send_stream(STREAM_SUM, Vec::new(), &b""[..], &options)
        .await
        .unwrap();
    assert_eq!(answer, [0u8; 16]);
}

/// A source that yields `ready` bytes and then never anything again.
struct Stalling {
    ready: usize,
}

impl AsyncRead for Stalling {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.ready == 0 {
            return Poll::Pending;
        }
        let n = self.ready.min(buf.remaining());
        buf.put_slice(&vec![1u8; n]);
        self.ready -= n;
        Poll::Ready(Ok(()))
    }
}

#[tokio::test]
async fn the_no_progress_timeout_fires_when_the_sender_stalls() {
    let server_options = TransportOptions {
        stream_idle_timeout: Duration::from_millis(300),
        ..options()
    };
    let mut pair = pair_with(server_options, options());
    // The client itself would wait much longer: the receiver's bound is what fires.
    let options = StreamOptions {
        idle_timeout: Duration::from_secs(30),
        chunk_bytes: 16 * 1024,
        ..StreamOptions::default()
    };
    let start = Instant::now();
    let error = pair
        .peer
        .send_stream(
            STREAM_WATCH,
            Vec::new(),
            Stalling { ready: 100_000 },
            &options,
        )
        .await
        .unwrap_err();
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert!(
        matches!(&error, RpcError::Remote { message, .. } if message.contains("no progress")),
        "{error}"
    );
    let seen = pair.watched.recv().await.unwrap();
    assert!(
        matches!(seen, Err(ChunkError::Stalled { idle }) if idle == Duration::from_millis(300)),
        "{seen:?}"
    );

    // The sender's own bound: a stalled source ends the transfer on the client side.
    let options = StreamOptions {
        idle_timeout: Duration::from_millis(200),
        ..options
    };
    let error = pair
        .peer
        .send_stream(STREAM_WATCH, Vec::new(), Stalling { ready: 10 }, &options)
        .await
        .unwrap_err();
    assert!(matches!(error, RpcError::Stalled { .. }), "{error}");
    // The receiver learns the transfer was abandoned: its handler either sees the reset or is
    // dropped because the caller went away (whichever of the two reaches it first); either way
    // nothing is left running.
    let start = Instant::now();
    while pair.server.requests_in_flight() > 0 {
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "handler still running"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if let Ok(seen) = pair.watched.try_recv() {
        assert!(matches!(seen, Err(ChunkError::Reset { .. })), "{seen:?}");
    }
}

#[tokio::test]
async fn a_transfer_that_keeps_moving_is_not_cut_and_unary_rpcs_pass_it() {
    let pair = pair();
    // 8 MiB in 64 KiB chunks with 10 ms of work per chunk: about 1.3 s in total, far longer than
    // the 500 ms no-progress bound on either side, and still never idle.
    let options = StreamOptions {
        idle_timeout: Duration::from_millis(500),
        chunk_bytes: 64 * 1024,
        ..StreamOptions::default()
    };
    let peer = pair.peer.clone();
    let transfer = tokio::spawn(async move {
        let source = tokio::io::repeat(3).take(8 * 1024 * 1024);
        let start = Instant::now();
        let answer = peer
            .send_stream(STREAM_SLOW, Vec::new(), source, &options)
            .await;
        (answer, start.elapsed())
    });
    // Meanwhile, votes and heartbeats on the same connection are answered within tight deadlines.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut answered = 0;
    while !transfer.is_finished() {
        let start = Instant::now();
        pair.peer
            .call(ECHO, &b"heartbeat"[..], Duration::from_millis(300))
            .await
            .unwrap();
        assert!(start.elapsed() < Duration::from_millis(300));
        answered += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (answer, took) = transfer.await.unwrap();
    let answer = answer.unwrap();
    assert_eq!(&answer[..8], &(8u64 * 1024 * 1024).to_le_bytes());
    assert!(took > Duration::from_millis(500), "{took:?}");
    assert!(answered >= 5, "{answered}");
    assert_eq!(pair.peer.connects(), 1);
}

#[tokio::test]
async fn shutdown_lets_running_requests_finish_then_refuses() {
    let pair = pair();
    let peer = pair.peer.clone();
    let running = tokio::spawn(async move {
        peer.call(SLEEP, sleep_for(300), Duration::from_secs(5))
            .await
    });
    let start = Instant::now();
    while pair.server.requests_in_flight() == 0 {
        assert!(start.elapsed() < Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    pair.server.shutdown(Duration::from_secs(5)).await;
    assert_eq!(running.await.unwrap().unwrap(), b"slept");
    assert!(pair.server.is_shut_down());
    let error = pair
        .peer
        .call(ECHO, Vec::new(), Duration::from_millis(500))
        .await
        .unwrap_err();
    assert!(error.is_retryable(), "{error}");
    // The shut-down transport's own calls fail at once.
    let own = pair
        .server
        .peer(pair.client.local_addr(), "localhost")
        .unwrap();
    assert!(matches!(
        own.call(ECHO, Vec::new(), Duration::from_secs(1)).await,
        Err(RpcError::Shutdown)
    ));
    assert!(matches!(
        pair.server.serve(handler_fn(|_, p| async move { Ok(p) })),
        Err(TransportError::AlreadyServing)
    ));
}
