//! Real `tasklog` processes on loopback: QUIC with mutual TLS between them, HTTP to them.
//!
//! - `three_nodes_survive_a_leader_sigkill`: three `tasklog serve` processes; writes through
//!   every node; the leader is killed with SIGKILL while writes go on; it restarts; every
//!   acknowledged write is then on every node, the nodes stop cleanly on SIGTERM, and their logs
//!   are identical record for record (position, term, kind, bytes).
//! - `bad_requests_get_typed_errors_and_the_node_keeps_serving`: the HTTP error contract.
//! - `cluster_command_runs_and_stops_cleanly`: `tasklog cluster` end to end.
//! - `serve_refuses_bad_configuration_clearly`: what a misconfigured node says.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tasklog_engine::model::{TaskState, TaskStatus};
use tasklog_engine::{Log, Options, Position};
use tasklog_raft::NodeId;
use tasklog_raft::certs::{self, CertsOptions};
use tasklog_server::client::{Client, ClientError};
use tasklog_server::http::{AppendRequest, CreateRequest, EventBody};

const BIN: &str = env!("CARGO_BIN_EXE_tasklog");
/// Upper bound of every wait.
const TIMEOUT: Duration = Duration::from_secs(60);

/// A free loopback port for both UDP (QUIC) and TCP (HTTP) use: bound, then released.
fn free_addr(udp: bool) -> SocketAddr {
    if udp {
        UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    } else {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    }
}

struct Proc {
    id: NodeId,
    args: Vec<String>,
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(BIN)
            .args(&self.args)
            .env("RUST_LOG", "info,openraft=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    fn sigkill(&mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// SIGTERM, then the exit status (killed after the timeout).
    fn sigterm(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        let pid = rustix::process::Pid::from_raw(i32::try_from(child.id()).unwrap()).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if start.elapsed() > TIMEOUT {
                child.kill().unwrap();
                panic!(
                    "node {} did not stop on SIGTERM; log {}",
                    self.id,
                    self.log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

struct Cluster {
    _root: tempfile::TempDir,
    root: PathBuf,
    procs: Vec<Proc>,
    clients: BTreeMap<NodeId, Client>,
}

impl Cluster {
    /// `n` nodes, node 1 bootstrapping, all started.
    fn start(n: u64) -> Cluster {
        let root_dir = tempfile::tempdir().unwrap();
        let root = root_dir.path().to_owned();
        let ids: Vec<NodeId> = (1..=n).collect();
        certs::create(
            &root.join("certs"),
            &CertsOptions {
                nodes: ids.clone(),
                ..CertsOptions::default()
            },
        )
        .unwrap();
        let raft: BTreeMap<NodeId, SocketAddr> =
            ids.iter().map(|&id| (id, free_addr(true))).collect();
        let mut procs = Vec::new();
        let mut clients = BTreeMap::new();
        for &id in &ids {
            let http = free_addr(false);
            let mut args = vec![
                "serve".to_owned(),
                "--id".into(),
                id.to_string(),
                "--data-dir".into(),
                root.join(format!("node-{id}")).display().to_string(),
                "--raft-addr".into(),
                raft[&id].to_string(),
                "--http-addr".into(),
                http.to_string(),
                "--certs-dir".into(),
                root.join("certs").display().to_string(),
                "--heartbeat-ms".into(),
                "100".into(),
                "--election-timeout-ms".into(),
                "500".into(),
            ];
            for (&peer, addr) in &raft {
                if peer != id {
                    args.push("--peer".into());
                    args.push(format!("{peer}={addr}"));
                }
            }
            if id == 1 {
                args.push("--bootstrap".into());
            }
            let mut proc = Proc {
                id,
                args,
                child: None,
                log: root.join(format!("node-{id}.log")),
            };
            proc.start();
            procs.push(proc);
            clients.insert(
                id,
                Client::new(format!("http://{http}"), Duration::from_secs(20)),
            );
        }
        let cluster = Cluster {
            _root: root_dir,
            root,
            procs,
            clients,
        };
        cluster.leader(&ids);
        cluster
    }

    fn proc(&mut self, id: NodeId) -> &mut Proc {
        self.procs.iter_mut().find(|p| p.id == id).unwrap()
    }

    /// The leader, as every node in `among` agrees, once they do.
    fn leader(&self, among: &[NodeId]) -> NodeId {
        eventually("a leader all nodes agree on", || {
            let statuses: Vec<_> = among
                .iter()
                .map(|id| self.clients[id].status().ok())
                .collect::<Option<Vec<_>>>()?;
            let leader = statuses.iter().find(|s| s.role == "leader")?.node_id;
            statuses
                .iter()
                .all(|s| s.leader == Some(leader))
                .then_some(leader)
        })
    }

    fn logs(&self) -> String {
        let mut out = String::new();
        for proc in &self.procs {
            out.push_str(&format!(
                "--- node {} ---\n{}\n",
                proc.id,
                std::fs::read_to_string(&proc.log).unwrap_or_default()
            ));
        }
        out
    }
}

fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(start.elapsed() < TIMEOUT, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An acknowledged write.
#[derive(Debug, Clone)]
struct Ack {
    task_id: String,
    version: u64,
    position: u64,
}

/// Writes one task (create + working) through `via` and `then`; returns what was acknowledged
/// and the errors seen.
fn lifecycle(
    task_id: &str,
    via: &Client,
    then: &Client,
    acks: &mut Vec<Ack>,
) -> Result<(), ClientError> {
    let created = via.create(&CreateRequest {
        task_id: Some(task_id.to_owned()),
        ..CreateRequest::default()
    })?;
    acks.push(Ack {
        task_id: created.task_id.clone(),
        version: created.version,
        position: created.position,
    });
    let working = then.append(
        task_id,
        &AppendRequest {
            expected_version: Some(created.version),
            events: vec![EventBody::Status(TaskStatus::new(TaskState::Working))],
        },
    )?;
    acks.push(Ack {
        task_id: working.task_id,
        version: working.version,
        position: working.position,
    });
    Ok(())
}

/// Errors a write may get while the leader is being replaced: no leader yet, or a write whose
/// outcome is unknown because the leader died with it in flight. Anything else fails the test.
fn failover_error(error: &ClientError) -> bool {
    matches!(error.reason(), Some("NO_LEADER" | "OUTCOME_UNKNOWN"))
        || matches!(error, ClientError::Transport(_))
}

#[test]
fn three_nodes_survive_a_leader_sigkill() {
    let mut cluster = Cluster::start(3);
    let ids = [1, 2, 3];
    let mut acks = Vec::new();
    let mut task = 0;
    // Through every node, each write's second half through the next one.
    for round in 0..30 {
        let via = ids[round % 3];
        let then = ids[(round + 1) % 3];
        task += 1;
        lifecycle(
            &format!("t-{task}"),
            &cluster.clients[&via],
            &cluster.clients[&then],
            &mut acks,
        )
        .unwrap_or_else(|e| panic!("write via {via}: {e}\n{}", cluster.logs()));
    }

    let leader = cluster.leader(&ids);
    let survivors: Vec<NodeId> = ids.iter().copied().filter(|&id| id != leader).collect();
    cluster.proc(leader).sigkill();
    let killed_at = Instant::now();
    let mut first_write_after_kill = None;
    let mut failover_errors = 0;
    for round in 0..30 {
        let via = survivors[round % 2];
        let then = survivors[(round + 1) % 2];
        task += 1;
        match lifecycle(
            &format!("t-{task}"),
            &cluster.clients[&via],
            &cluster.clients[&then],
            &mut acks,
        ) {
            Ok(()) => {
                first_write_after_kill.get_or_insert_with(|| killed_at.elapsed());
            }
            Err(error) if failover_error(&error) => failover_errors += 1,
            Err(error) => panic!(
                "write via {via} after the kill: {error}\n{}",
                cluster.logs()
            ),
        }
        assert!(killed_at.elapsed() < TIMEOUT, "writes did not resume");
    }
    let resumed = first_write_after_kill.expect("no write succeeded after the leader was killed");
    eprintln!(
        "leader {leader} killed: first acknowledged write after {resumed:?} ({failover_errors} writes failed during fail-over)"
    );
    let new_leader = cluster.leader(&survivors);
    assert_ne!(new_leader, leader);

    cluster.proc(leader).start();
    for round in 0..15 {
        let via = ids[round % 3];
        let then = ids[(round + 2) % 3];
        task += 1;
        // The restarted node may still be opening for the first rounds.
        let result = lifecycle(
            &format!("t-{task}"),
            &cluster.clients[&via],
            &cluster.clients[&then],
            &mut acks,
        );
        match result {
            Ok(()) => {}
            Err(ClientError::Transport(_)) if via == leader || then == leader => {}
            Err(error) => panic!(
                "write via {via} after the restart: {error}\n{}",
                cluster.logs()
            ),
        }
    }

    // Every node converges on everything acknowledged.
    let last_acked = acks.iter().map(|a| a.position).max().unwrap();
    let positions = eventually("all nodes applied every acknowledged write", || {
        let statuses: Vec<_> = ids
            .iter()
            .map(|id| cluster.clients[id].status().ok())
            .collect::<Option<Vec<_>>>()?;
        let applied: Vec<u64> = statuses.iter().map(|s| s.applied_position).collect();
        (applied.iter().all(|&a| a >= last_acked && a == applied[0])).then_some(applied)
    });
    let mut latest: BTreeMap<&str, u64> = BTreeMap::new();
    for ack in &acks {
        let version = latest.entry(&ack.task_id).or_default();
        *version = (*version).max(ack.version);
    }
    for id in ids {
        for (task_id, version) in &latest {
            let read = cluster.clients[&id]
                .get(task_id, &format!("atLeastPosition={last_acked}"))
                .unwrap_or_else(|e| panic!("node {id} lost {task_id}: {e}"));
            assert_eq!(read.version, *version, "node {id}, task {task_id}");
        }
    }
    eprintln!(
        "{} acknowledged writes, {} tasks, every node applied up to {positions:?}",
        acks.len(),
        latest.len()
    );

    // Clean stops, then the logs compared record by record.
    for id in ids {
        let status = cluster.proc(id).sigterm();
        assert!(
            status.success(),
            "node {id} exited with {status}\n{}",
            cluster.logs()
        );
    }
    let records: Vec<Vec<(u64, u64, u8, Vec<u8>)>> = ids
        .iter()
        .map(|id| read_log(&cluster.root.join(format!("node-{id}/log"))))
        .collect();
    assert!(records[0].len() as u64 >= last_acked);
    for (i, other) in records.iter().enumerate().skip(1) {
        assert_eq!(records[0].len(), other.len(), "node {} log length", ids[i]);
        for (a, b) in records[0].iter().zip(other) {
            assert_eq!(
                a, b,
                "node {} differs from node 1 at position {}",
                ids[i], a.0
            );
        }
    }
}

fn read_log(dir: &Path) -> Vec<(u64, u64, u8, Vec<u8>)> {
    let log = Log::open(dir, Options::default()).unwrap();
    let (first, last) = log.bounds();
    let mut out = Vec::new();
    let mut position = first.get();
    while position <= last.get() && position > 0 {
        let entry = log.read(Position::new(position)).unwrap();
        out.push((
            entry.position().get(),
            entry.term(),
            entry.kind(),
            entry.payload().to_vec(),
        ));
        position += 1;
    }
    log.close().unwrap();
    out
}
