//! `tasklog cluster`: a local cluster in one command. Makes the certificates and data
//! directories on the first run (later runs reuse them: the cluster keeps its data), starts one
//! `tasklog serve` process per node on 127.0.0.1 (each in its own process group, logging to
//! `<dir>/node-N.log`), waits for a leader, then runs a demo load: small A2A task lifecycles
//! (created, working, an artifact, completed), each write sent to the next node in turn so that
//! followers forward to the leader. Every second it prints what each node has committed and
//! applied, its lag behind the leader, and whether it already serves the last write. Ctrl-C (or
//! `--seconds`) stops the demo, then each node with SIGTERM, and waits for them to exit cleanly.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use tasklog_engine::model::{Artifact, Message, Part, Role, TaskState, TaskStatus};
use tasklog_raft::NodeId;
use tasklog_raft::certs::{self, CertsOptions};
use tasklog_raft::node::NodeStatus;

use crate::client::Client;
use crate::http::{AppendRequest, CreateRequest, EventBody, WriteResponse};
use crate::local::LocalCluster;
use crate::serve::shutdown_signal;

/// How long the nodes may take to start and elect a leader.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a node may take to stop after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// `tasklog cluster`'s flags.
#[derive(Debug, Clone, Args)]
pub struct ClusterArgs {
    /// Directory for the certificates (`certs/`), each node's data (`node-N/`) and log
    /// (`node-N.log`); created on the first run, reused after.
    #[arg(long, default_value = "tasklog-cluster")]
    pub dir: PathBuf,
    /// Number of nodes.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=9))]
    pub nodes: u64,
    /// QUIC port of node 1 (node N uses this + N - 1).
    #[arg(long, default_value_t = 7001)]
    pub raft_port: u16,
    /// HTTP port of node 1 (node N uses this + N - 1).
    #[arg(long, default_value_t = 8001)]
    pub http_port: u16,
    /// Demo writes per second (0: no demo, the nodes just run).
    #[arg(long, default_value_t = 20)]
    pub rate: u32,
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long)]
    pub seconds: Option<u64>,
}

/// Runs the cluster until Ctrl-C or `--seconds`.
///
/// # Errors
/// Certificates or directories that cannot be made, a node that does not start, a node that
/// does not stop cleanly.
pub async fn run(args: ClusterArgs) -> anyhow::Result<()> {
    let ids: Vec<NodeId> = (1..=args.nodes).collect();
    let addr = |base: u16, id: NodeId| -> anyhow::Result<SocketAddr> {
        let port = u16::try_from(u64::from(base) + id - 1).context("port out of range")?;
        Ok(SocketAddr::from(([127, 0, 0, 1], port)))
    };
    std::fs::create_dir_all(&args.dir).with_context(|| format!("create {}", args.dir.display()))?;
    prepare_certs(&args.dir.join("certs"), &ids)?;
    let exe = std::env::current_exe().context("find the tasklog executable")?;
    let mut layout = BTreeMap::new();
    for &id in &ids {
        let (raft, http) = (addr(args.raft_port, id)?, addr(args.http_port, id)?);
        // Say at once when a port is taken (a cluster already running?) instead of letting the
        // node exit and the wait for a leader time out.
        std::net::UdpSocket::bind(raft).with_context(|| {
            format!("QUIC port {raft} is in use (another cluster running?); pick --raft-port")
        })?;
        std::net::TcpListener::bind(http).with_context(|| {
            format!("HTTP port {http} is in use (another cluster running?); pick --http-port")
        })?;
        layout.insert(id, (raft, http));
    }
    let mut cluster = LocalCluster::launch(&exe, &args.dir, &layout, args.nodes, &[])?;
    println!(
        "tasklog cluster: {} nodes, data and logs in {} (node-N/, node-N.log); Ctrl-C stops it",
        ids.len(),
        args.dir.display()
    );
    for (id, (raft, http)) in &layout {
        println!("  node {id}: http://{http} (QUIC {raft})");
    }

    let clients: Vec<(NodeId, Client)> = ids
        .iter()
        .map(|&id| (id, cluster.client(id).clone()))
        .collect();
    let (started, cluster_back) = tokio::task::spawn_blocking(move || {
        let leader = cluster
            .wait_for_leader(&ids, START_TIMEOUT)
            .context("see the node-N.log files");
        (leader, cluster)
    })
    .await?;
    cluster = cluster_back;
    let outcome = match started {
        Ok(leader) => {
            println!("leader elected: node {leader}");
            let stop = Arc::new(AtomicBool::new(false));
            let demo = {
                let stop = stop.clone();
                let clients = clients.clone();
                let rate = args.rate;
                tokio::task::spawn_blocking(move || demo(&clients, rate, &stop))
            };
            match args.seconds {
                Some(seconds) => {
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(seconds)) => {}
                        () = shutdown_signal() => {}
                    }
                }
                None => shutdown_signal().await,
            }
            stop.store(true, Ordering::Relaxed);
            demo.await?
        }
        Err(error) => Err(error),
    };
    println!("stopping the nodes");
    let stopped = tokio::task::spawn_blocking(move || stop_all(&mut cluster)).await?;
    outcome.and(stopped)
}

fn prepare_certs(certs_dir: &Path, ids: &[NodeId]) -> anyhow::Result<()> {
    let missing: Vec<NodeId> = ids
        .iter()
        .copied()
        .filter(|id| !certs_dir.join(certs::node_cert_file(*id)).exists())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let report = certs::create(
        certs_dir,
        &CertsOptions {
            nodes: missing,
            ..CertsOptions::default()
        },
    )
    .with_context(|| format!("make certificates in {}", certs_dir.display()))?;
    println!(
        "{} {} certificate files in {}",
        if report.ca_created {
            "made a cluster CA and"
        } else {
            "made"
        },
        report.written.len(),
        certs_dir.display()
    );
    Ok(())
}

/// One demo write and where it went.
struct Sent {
    written: WriteResponse,
    via: NodeId,
}

fn demo(clients: &[(NodeId, Client)], rate: u32, stop: &AtomicBool) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut next_report = started + Duration::from_secs(1);
    let mut last: Option<Sent> = None;
    let mut writes = 0u64;
    let mut failures = 0u64;
    let mut latencies: Vec<Duration> = Vec::new();
    let interval = (rate > 0).then(|| Duration::from_secs(1) / rate);
    let mut next_write = Instant::now();
    let mut task = 0u64;
    let mut step = 0u64;
    let mut task_id = String::new();
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= next_report {
            print!(
                "{}",
                report(
                    clients,
                    started,
                    writes,
                    failures,
                    &latencies,
                    last.as_ref()
                )
            );
            latencies.clear();
            next_report += Duration::from_secs(1);
        }
        let Some(interval) = interval else {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        if now < next_write {
            std::thread::sleep((next_write - now).min(Duration::from_millis(50)));
            continue;
        }
        next_write += interval;
        let (via, client) = &clients[(writes as usize) % clients.len()];
        let sent_at = Instant::now();
        let result = if step == 0 {
            task += 1;
            task_id = format!("demo-{}-{task:05}", std::process::id());
            client.create(&CreateRequest {
                task_id: Some(task_id.clone()),
                message: Some(message(task)),
                ..CreateRequest::default()
            })
        } else {
            client.append(
                &task_id,
                &AppendRequest {
                    expected_version: last.as_ref().map(|sent| sent.written.version),
                    events: vec![demo_event(step)],
                },
            )
        };
        match result {
            Ok(written) => {
                latencies.push(sent_at.elapsed());
                writes += 1;
                step = (step + 1) % 4;
                last = Some(Sent { written, via: *via });
            }
            Err(error) => {
                failures += 1;
                // Start a fresh task: the failed write's outcome may be unknown.
                step = 0;
                last = None;
                eprintln!("write via node {via} failed: {error}");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
    // Followers learn that the last write committed with the leader's next message: give them a
    // moment, so the final table shows where the cluster settled.
    if let Some(sent) = &last {
        let settle = Instant::now();
        while settle.elapsed() < Duration::from_secs(2)
            && !clients.iter().all(|(_, client)| {
                client
                    .status()
                    .is_ok_and(|s| s.applied_position >= sent.written.position)
            })
        {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    print!(
        "{}",
        report(
            clients,
            started,
            writes,
            failures,
            &latencies,
            last.as_ref()
        )
    );
    Ok(())
}

fn message(task: u64) -> Message {
    Message::text(
        format!("demo-message-{task}"),
        Role::User,
        format!("demo task {task}: summarize the release notes"),
    )
}

fn demo_event(step: u64) -> EventBody {
    match step {
        1 => EventBody::Status(TaskStatus::new(TaskState::Working)),
        2 => EventBody::Artifact {
            artifact: Artifact {
                artifact_id: "summary".into(),
                name: Some("summary".into()),
                description: None,
                parts: vec![Part::text("three fixes, one new flag, no breaking change")],
                metadata: None,
                extensions: Vec::new(),
            },
            append: false,
            last_chunk: true,
        },
        _ => EventBody::Status(TaskStatus::new(TaskState::Completed)),
    }
}

fn report(
    clients: &[(NodeId, Client)],
    started: Instant,
    writes: u64,
    failures: u64,
    latencies: &[Duration],
    last: Option<&Sent>,
) -> String {
    let mut out = String::new();
    let mut sorted = latencies.to_vec();
    sorted.sort_unstable();
    let p50 = sorted.get(sorted.len() / 2).map_or_else(
        || "-".to_owned(),
        |d| format!("{:.1} ms", d.as_secs_f64() * 1e3),
    );
    let _ = write!(
        out,
        "\n{:6.1} s  {writes} writes ({} in the last second, p50 {p50}), {failures} failed",
        started.elapsed().as_secs_f64(),
        latencies.len()
    );
    if let Some(sent) = last {
        let _ = write!(
            out,
            "; last: {} v{} at position {} via node {}",
            sent.written.task_id, sent.written.version, sent.written.position, sent.via
        );
    }
    out.push('\n');
    let statuses: Vec<Option<NodeStatus>> = clients.iter().map(|(_, c)| c.status().ok()).collect();
    let leader_commit = statuses
        .iter()
        .flatten()
        .find(|s| s.role == "leader")
        .map(|s| s.committed_position);
    let _ = writeln!(
        out,
        "  {:<5} {:<9} {:>5} {:>7} {:>10} {:>10} {:>5}  last write",
        "node", "role", "term", "leader", "committed", "applied", "lag"
    );
    for ((id, client), status) in clients.iter().zip(&statuses) {
        let Some(status) = status else {
            let _ = writeln!(out, "  {id:<5} {:<9}", "down");
            continue;
        };
        let lag = leader_commit.map_or_else(
            || "-".into(),
            |c| c.saturating_sub(status.applied_position).to_string(),
        );
        let seen = match last {
            None => "-".to_owned(),
            Some(sent) => match client.get(&sent.written.task_id, "") {
                Ok(read) if read.version >= sent.written.version => "seen".to_owned(),
                Ok(read) => format!("at v{}", read.version),
                Err(error) if error.reason() == Some("TASK_NOT_FOUND") => "not yet".to_owned(),
                Err(error) => format!("error: {error}"),
            },
        };
        let _ = writeln!(
            out,
            "  {id:<5} {:<9} {:>5} {:>7} {:>10} {:>10} {lag:>5}  {seen}",
            status.role,
            status.term,
            status.leader.map_or_else(|| "-".into(), |l| l.to_string()),
            status.committed_position,
            status.applied_position,
        );
    }
    out
}

/// Stops every running node with SIGTERM, each given [`STOP_TIMEOUT`] to exit cleanly.
fn stop_all(cluster: &mut LocalCluster) -> anyhow::Result<()> {
    let mut failed = Vec::new();
    for id in cluster.ids() {
        match cluster.stop(id, STOP_TIMEOUT) {
            Ok(status) if status.success() => println!("node {id} stopped"),
            Ok(status) => failed.push(format!("node {id} exited with {status}")),
            Err(error) => failed.push(format!("node {id}: {error}")),
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        bail!("{}", failed.join("; "))
    }
}
