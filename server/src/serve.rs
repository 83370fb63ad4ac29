//! `tasklog serve`: one node. Binds the QUIC transport (mutual TLS with the cluster CA), opens
//! the data directory as a Raft member, makes the cluster if asked to and never made, serves HTTP,
//! and on SIGINT / SIGTERM stops in order: HTTP first (requests in flight finish), then Raft, then
//! the log is made durable and checkpointed, then the transport closes.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tasklog_engine::model::Timestamp;
use tasklog_raft::Node;
use tasklog_raft::forward::{Forwarder, LEADER_WAIT_DEFAULT, NodeHandler};
use tasklog_raft::network::{
    QuicNetworkFactory, RaftHandler, TlsMaterial, Transport, TransportOptions,
};

use crate::config::NodeConfig;
use crate::http::{AppState, router};

/// Grace for RPCs in flight when the transport closes.
const TRANSPORT_GRACE: Duration = Duration::from_secs(2);

/// Deletes one retention round proposes at most; the rest waits for the next round.
const RETENTION_DELETES_MAX: usize = 1000;

/// Runs the node until `stop` completes, then shuts it down in order.
///
/// # Errors
/// Set-up failures (certificates, addresses in use, an unusable data directory) with what to
/// fix; a failed shutdown step.
pub async fn run(
    config: NodeConfig,
    stop: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("create data directory {}", config.data_dir.display()))?;
    let tls = TlsMaterial::load_node(&config.certs_dir, config.id).with_context(|| {
        format!(
            "load node {}'s certificate from {} (make them with `tasklog certs --dir {} --nodes …`)",
            config.id,
            config.certs_dir.display(),
            config.certs_dir.display()
        )
    })?;
    let transport = Transport::bind(config.raft_addr, &tls, TransportOptions::default())
        .with_context(|| format!("bind QUIC on {}", config.raft_addr))?;
    let http = tokio::net::TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("bind HTTP on {}", config.http_addr))?;
    let network = QuicNetworkFactory::new(config.id, transport.clone());
    let node = Node::open(config.id, &config.data_dir, network, &config.timing())
        .await
        .with_context(|| format!("open node {} in {}", config.id, config.data_dir.display()))?;
    let handler = NodeHandler::new(
        node.clone(),
        RaftHandler::new(node.raft().clone(), config.data_dir.join("snapshots")),
    );
    transport.serve(Arc::new(handler)).context("serve QUIC")?;

    if config.bootstrap {
        bootstrap(&node, &config).await?;
    }

    let forwarder = Forwarder::new(node.clone(), transport.clone(), LEADER_WAIT_DEFAULT);
    tracing::info!(
        id = config.id,
        http = %config.http_addr,
        quic = %config.raft_addr,
        data = %config.data_dir.display(),
        "node serving"
    );
    println!(
        "tasklog node {} serving http://{} (QUIC {}, data {})",
        config.id,
        config.http_addr,
        config.raft_addr,
        config.data_dir.display()
    );
    let sweeper = retention_sweeper(&node, &config).map(tokio::spawn);
    let served = axum::serve(http, router(AppState::new(forwarder)))
        .with_graceful_shutdown(stop)
        .await
        .context("serve HTTP");
    tracing::info!(id = config.id, "stopping");
    if let Some(sweeper) = sweeper {
        // A delete in flight is dropped with it; proposed or not, Raft stays consistent.
        sweeper.abort();
    }
    let stopped = node.shutdown().await.context("stop Raft and checkpoint");
    transport.shutdown(TRANSPORT_GRACE).await;
    served.and(stopped)?;
    println!("tasklog node {} stopped", config.id);
    Ok(())
}

/// Makes the cluster from this node and its peers, unless this node already belongs to one.
async fn bootstrap(node: &Node, config: &NodeConfig) -> anyhow::Result<()> {
    let initialized = node
        .raft()
        .is_initialized()
        .await
        .context("ask Raft whether this node is initialized")?;
    if initialized {
        tracing::info!(
            id = config.id,
            "already a cluster member; --bootstrap ignored"
        );
        return Ok(());
    }
    node.initialize(config.members())
        .await
        .context("make the cluster")?;
    tracing::info!(id = config.id, members = ?config.members(), "cluster made");
    Ok(())
}

/// The leader's retention loop, when the configuration asks for one: every interval, if this
/// node leads, it proposes the deletes of the terminal tasks the policy says are too old or too
/// many, at most [`RETENTION_DELETES_MAX`] a round so that one round never floods the log.
fn retention_sweeper(
    node: &Node,
    config: &NodeConfig,
) -> Option<impl Future<Output = ()> + Send + 'static> {
    let policy = config.retention;
    if !policy.is_set() {
        return None;
    }
    let (node, interval) = (node.clone(), config.retention_interval);
    Some(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            match node
                .sweep_retention(&policy, Timestamp::now(), RETENTION_DELETES_MAX)
                .await
            {
                Ok(0) => {}
                Ok(deleted) => tracing::info!(deleted, "retention deleted terminal tasks"),
                Err(error) => tracing::warn!(%error, "retention round failed; next round retries"),
            }
        }
    })
}

/// Completes on the first SIGINT or SIGTERM (Ctrl-C or a service manager's stop).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) {
            (Ok(mut interrupt), Ok(mut terminate)) => {
                tokio::select! {
                    _ = interrupt.recv() => {}
                    _ = terminate.recv() => {}
                }
            }
            _ => {
                if let Err(error) = tokio::signal::ctrl_c().await {
                    tracing::error!(%error, "no signal handler; the node runs until killed");
                    std::future::pending::<()>().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "no signal handler; the node runs until killed");
            std::future::pending::<()>().await;
        }
    }
}
