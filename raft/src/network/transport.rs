//! [`Transport`]: one QUIC endpoint per node, client and server at once.
//!
//! `bind` opens the UDP socket and prepares both TLS sides; `peer` hands out the cached [`Peer`]
//! for a remote address (one connection per peer, shared by every clone); `serve` starts the
//! accept loop with a [`Handler`] (separately from `bind`, because the handler usually needs
//! things built with the transport's client side, such as a Raft handle); `shutdown` stops
//! accepting, waits (bounded) for running exchanges, then closes every connection.
//!
//! The UDP socket is released once the transport and every [`Peer`] taken from it are dropped;
//! dropping the last handle without `shutdown` closes everything at once, with no grace period.
#![deny(clippy::indexing_slicing)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{Endpoint, IdleTimeout, TransportConfig, VarInt};
use rustls::pki_types::ServerName;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::client::Peer;
use super::error::TransportError;
use super::handler::Handler;
use super::options::TransportOptions;
use super::server::{self, InFlight, Server};
use super::stream_io::code;
use super::tls::{TlsError, TlsMaterial};

/// A node's QUIC endpoint: dials peers and serves requests. Cheap to clone.
#[derive(Clone)]
pub struct Transport {
    inner: Arc<TransportInner>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("local_addr", &self.inner.local_addr)
            .finish_non_exhaustive()
    }
}

struct TransportInner {
    endpoint: Endpoint,
    client_config: quinn::ClientConfig,
    options: TransportOptions,
    local_addr: SocketAddr,
    peers: Mutex<HashMap<(SocketAddr, String), Peer>>,
    shutdown: watch::Sender<bool>,
    in_flight: Arc<InFlight>,
    accept_loop: Mutex<Option<JoinHandle<()>>>,
}

impl Transport {
    /// Binds a UDP socket on `addr` (port 0 picks a free one) with `tls` for both sides. Must be
    /// called within a tokio runtime. Incoming connections wait until [`Transport::serve`].
    ///
    /// # Errors
    /// [`TransportError::Options`], [`TransportError::Tls`], [`TransportError::Bind`] (also
    /// when no tokio runtime is running).
    pub fn bind(
        addr: SocketAddr,
        tls: &TlsMaterial,
        options: TransportOptions,
    ) -> Result<Self, TransportError> {
        options.validate()?;
        let transport_config = Arc::new(transport_config(&options)?);
        let server_crypto =
            QuicServerConfig::try_from(tls.server_config()?).map_err(|e| TlsError::Config {
                what: "QUIC server",
                reason: e.to_string(),
            })?;
        let mut server_config = quinn::ServerConfig::with_crypto(Arc::new(server_crypto));
        server_config.transport_config(Arc::clone(&transport_config));
        let client_crypto =
            QuicClientConfig::try_from(tls.client_config()?).map_err(|e| TlsError::Config {
                what: "QUIC client",
                reason: e.to_string(),
            })?;
        let mut client_config = quinn::ClientConfig::new(Arc::new(client_crypto));
        client_config.transport_config(transport_config);
        let endpoint = Endpoint::server(server_config, addr)
            .map_err(|source| TransportError::Bind { addr, source })?;
        let local_addr = endpoint
            .local_addr()
            .map_err(|source| TransportError::Bind { addr, source })?;
        let (shutdown, _) = watch::channel(false);
        tracing::debug!(%local_addr, "transport bound");
        Ok(Self {
            inner: Arc::new(TransportInner {
                endpoint,
                client_config,
                options,
                local_addr,
                peers: Mutex::new(HashMap::new()),
                shutdown,
                in_flight: Arc::new(InFlight::default()),
                accept_loop: Mutex::new(None),
            }),
        })
    }

    /// The bound address (with the port chosen when binding port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// The options in force.
    pub fn options(&self) -> &TransportOptions {
        &self.inner.options
    }

    /// The peer at `addr` whose certificate must name `server_name` (a DNS name or IP address
    /// in its SANs; use [`certs::node_server_name`](crate::certs::node_server_name) to insist on
    /// a node id). The same (address, name) always gives the same peer and so the same
    /// connection. Connecting happens at the first call.
    ///
    /// # Errors
    /// [`TransportError::ServerName`] when `server_name` is neither a DNS name nor an IP address.
    pub fn peer(&self, addr: SocketAddr, server_name: &str) -> Result<Peer, TransportError> {
        if ServerName::try_from(server_name).is_err() {
            return Err(TransportError::ServerName {
                name: server_name.to_owned(),
            });
        }
        let mut peers = lock(&self.inner.peers);
        let peer = peers
            .entry((addr, server_name.to_owned()))
            .or_insert_with(|| {
                Peer::new(
                    addr,
                    server_name.to_owned(),
                    self.inner.endpoint.clone(),
                    self.inner.client_config.clone(),
                    self.inner.options.clone(),
                    self.inner.shutdown.subscribe(),
                )
            });
        Ok(peer.clone())
    }

    /// Starts serving requests with `handler`, in a background task, until shutdown.
    ///
    /// # Errors
    /// [`TransportError::AlreadyServing`] when called twice or after shutdown.
    pub fn serve(&self, handler: Arc<dyn Handler>) -> Result<(), TransportError> {
        let mut accept_loop = lock(&self.inner.accept_loop);
        if accept_loop.is_some() || self.is_shut_down() {
            return Err(TransportError::AlreadyServing);
        }
        let server = Arc::new(Server {
            handler,
            options: self.inner.options.clone(),
            shutdown: self.inner.shutdown.subscribe(),
            in_flight: Arc::clone(&self.inner.in_flight),
        });
        *accept_loop = Some(tokio::spawn(server::accept_loop(
            self.inner.endpoint.clone(),
            server,
        )));
        Ok(())
    }

    /// Connections open on this endpoint, in both directions.
    pub fn open_connections(&self) -> usize {
        self.inner.endpoint.open_connections()
    }

    /// Requests being handled right now.
    pub fn requests_in_flight(&self) -> usize {
        self.inner.in_flight.count()
    }

    /// Whether [`Transport::shutdown`] has begun.
    pub fn is_shut_down(&self) -> bool {
        *self.inner.shutdown.borrow()
    }

    /// Stops the transport: no new connections or requests (new requests are refused with
    /// `ShuttingDown`, calls from this node fail with `Shutdown`), running handlers get up to
    /// `grace` to finish and answer, then every connection is closed and peers are given up to
    /// `close_linger` to acknowledge. Idempotent.
    pub async fn shutdown(&self, grace: Duration) {
        self.inner.shutdown.send_replace(true);
        if tokio::time::timeout(grace, self.inner.in_flight.wait_idle())
            .await
            .is_err()
        {
            tracing::warn!(
                running = self.inner.in_flight.count(),
                ?grace,
                "shutdown grace period over; closing with requests still running"
            );
        }
        self.inner.endpoint.close(code::SHUTDOWN, b"shutdown");
        let _ = tokio::time::timeout(
            self.inner.options.close_linger,
            self.inner.endpoint.wait_idle(),
        )
        .await;
        if let Some(accept_loop) = lock(&self.inner.accept_loop).take() {
            accept_loop.abort();
        }
        lock(&self.inner.peers).clear();
        tracing::debug!(local_addr = %self.inner.local_addr, "transport shut down");
    }
}

impl Drop for TransportInner {
    /// Dropping the last handle without [`Transport::shutdown`] stops at once: no grace period,
    /// connections closed, the accept loop ended (so the socket is released once the [`Peer`]s
    /// taken from this transport are gone too).
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
        self.endpoint.close(code::SHUTDOWN, b"dropped");
        if let Some(accept_loop) = lock(&self.accept_loop).take() {
            accept_loop.abort();
        }
    }
}

/// QUIC transport parameters shared by both sides.
fn transport_config(options: &TransportOptions) -> Result<TransportConfig, TransportError> {
    let idle = IdleTimeout::try_from(options.connection_idle_timeout).map_err(|_| {
        TransportError::Options {
            reason: "connection_idle_timeout is too large for QUIC",
        }
    })?;
    let mut config = TransportConfig::default();
    config
        .max_idle_timeout(Some(idle))
        .keep_alive_interval(Some(options.keep_alive_interval))
        .max_concurrent_bidi_streams(VarInt::from_u32(options.streams_per_connection_max))
        .max_concurrent_uni_streams(VarInt::from_u32(0));
    Ok(config)
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // No code panics while holding these locks; a poisoned one still holds a valid value.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
