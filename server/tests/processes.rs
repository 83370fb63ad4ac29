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
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use tasklog_engine::model::{TaskState, TaskStatus};
use tasklog_engine::{Log, Options, Position};
use tasklog_raft::NodeId;
use tasklog_server::client::{Client, ClientError};
use tasklog_server::http::{AppendRequest, CreateRequest, EventBody};
use tasklog_server::local::LocalCluster;

const BIN: &str = env!("CARGO_BIN_EXE_tasklog");
/// Upper bound of every wait.
const TIMEOUT: Duration = Duration::from_secs(60);

/// A free loopback port for TCP: bound, then released.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Cluster {
    _root: tempfile::TempDir,
    inner: LocalCluster,
}

impl Cluster {
    /// `n` nodes, node 1 bootstrapping, all started and agreeing on a leader.
    fn start(n: u64) -> Cluster {
        Self::start_with(n, &[])
    }

    /// As [`Cluster::start`], with more flags for every node.
    fn start_with(n: u64, extra_args: &[&str]) -> Cluster {
        let root = tempfile::tempdir().unwrap();
        let mut args = vec!["--heartbeat-ms", "100", "--election-timeout-ms", "500"];
        args.extend_from_slice(extra_args);
        let inner = LocalCluster::start(Path::new(BIN), root.path(), n, &args).unwrap();
        let cluster = Cluster { _root: root, inner };
        cluster.leader(&cluster.inner.ids());
        cluster
    }

    fn client(&self, id: NodeId) -> &Client {
        self.inner.client(id)
    }

    /// The leader every node in `among` agrees on, once they do.
    fn leader(&self, among: &[NodeId]) -> NodeId {
        self.inner
            .wait_for_leader(among, TIMEOUT)
            .unwrap_or_else(|e| panic!("{e}\n{}", self.logs()))
    }

    fn sigterm(&mut self, id: NodeId) -> std::process::ExitStatus {
        self.inner
            .stop(id, TIMEOUT)
            .unwrap_or_else(|e| panic!("{e}\n{}", self.inner.logs()))
    }

    fn logs(&self) -> String {
        self.inner.logs()
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
            cluster.client(via),
            cluster.client(then),
            &mut acks,
        )
        .unwrap_or_else(|e| panic!("write via {via}: {e}\n{}", cluster.logs()));
    }

    let leader = cluster.leader(&ids);
    let survivors: Vec<NodeId> = ids.iter().copied().filter(|&id| id != leader).collect();
    cluster.inner.kill(leader).unwrap();
    let killed_at = Instant::now();
    let mut first_write_after_kill = None;
    let mut failover_errors = 0;
    for round in 0..30 {
        let via = survivors[round % 2];
        let then = survivors[(round + 1) % 2];
        task += 1;
        match lifecycle(
            &format!("t-{task}"),
            cluster.client(via),
            cluster.client(then),
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

    cluster.inner.start_node(leader).unwrap();
    eventually("the restarted node to know the leader", || {
        cluster.client(leader).status().ok()?.leader
    });
    let mut through_restarted = 0;
    for round in 0..15 {
        let via = ids[round % 3];
        let then = ids[(round + 2) % 3];
        task += 1;
        // The restarted node may still be opening for the first rounds.
        let result = lifecycle(
            &format!("t-{task}"),
            cluster.client(via),
            cluster.client(then),
            &mut acks,
        );
        match result {
            Ok(()) if via == leader || then == leader => through_restarted += 1,
            Ok(()) => {}
            // The restarted node is still opening or learning who leads.
            Err(error) if (via == leader || then == leader) && failover_error(&error) => {}
            Err(error) => panic!(
                "write via {via} after the restart: {error}\n{}",
                cluster.logs()
            ),
        }
        assert!(
            through_restarted > 0,
            "no write went through the restarted node"
        );
    }

    // Every node converges on everything acknowledged.
    let last_acked = acks.iter().map(|a| a.position).max().unwrap();
    let positions = eventually("all nodes applied every acknowledged write", || {
        let statuses: Vec<_> = ids
            .iter()
            .map(|id| cluster.client(*id).status().ok())
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
            let read = cluster
                .client(id)
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

    // Linearizable reads on followers (a read index from the leader over the nodes' link): each
    // sees a write the leader acknowledged just before, with no position given.
    let leader = cluster.leader(&ids);
    for id in ids.iter().copied().filter(|&id| id != leader) {
        for n in 0..5 {
            let task = format!("lin-{id}-{n}");
            let written = cluster
                .client(leader)
                .create(&CreateRequest {
                    task_id: Some(task.clone()),
                    ..CreateRequest::default()
                })
                .unwrap();
            let read = cluster
                .client(id)
                .get(&task, "consistency=linearizable")
                .unwrap_or_else(|e| panic!("linearizable read of {task} on node {id}: {e}"));
            assert_eq!(read.version, written.version);
            assert!(read.applied_position >= written.position);
        }
    }

    // Clean stops, then the logs compared record by record.
    for id in ids {
        let status = cluster.sigterm(id);
        assert!(
            status.success(),
            "node {id} exited with {status}\n{}",
            cluster.logs()
        );
    }
    let records: Vec<Vec<Record>> = ids
        .iter()
        .map(|id| read_log(&cluster.inner.data_dir(*id).join("log")))
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

/// A log record: position, term, kind, payload.
type Record = (u64, u64, u8, Vec<u8>);

fn read_log(dir: &Path) -> Vec<Record> {
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

/// A raw HTTP request on loopback: status, body.
fn raw(
    base: &str,
    method: &str,
    path: &str,
    content_type: &str,
    body: &[u8],
) -> (u16, serde_json::Value) {
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .new_agent();
    let url = format!("{base}{path}");
    let response = match method {
        "GET" => agent.get(&url).call(),
        _ => agent
            .post(&url)
            .header("content-type", content_type)
            .send(body),
    };
    let mut response = response.unwrap();
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}

fn reason(body: &serde_json::Value) -> &str {
    body["error"]["details"][0]["reason"].as_str().unwrap_or("")
}

#[test]
fn bad_requests_get_typed_errors_and_the_node_keeps_serving() {
    let cluster = Cluster::start(1);
    let client = cluster.client(1);
    let base = client.base_url().to_owned();
    let created = client
        .create(&CreateRequest {
            task_id: Some("t-1".into()),
            ..CreateRequest::default()
        })
        .unwrap();
    assert_eq!(created.version, 1);

    // Engine refusals, typed.
    let error = client.get("missing", "").unwrap_err();
    assert!(
        matches!(error, ClientError::Api { status: 404, .. }),
        "{error}"
    );
    assert_eq!(error.reason(), Some("TASK_NOT_FOUND"));
    let error = client
        .create(&CreateRequest {
            task_id: Some("t-1".into()),
            ..CreateRequest::default()
        })
        .unwrap_err();
    assert_eq!(
        (error.reason(), status_of(&error)),
        (Some("TASK_EXISTS"), 409)
    );
    let working = |expected| AppendRequest {
        expected_version: expected,
        events: vec![EventBody::Status(TaskStatus::new(TaskState::Working))],
    };
    let error = client.append("t-1", &working(Some(7))).unwrap_err();
    assert_eq!(
        (error.reason(), status_of(&error)),
        (Some("VERSION_CONFLICT"), 409)
    );
    assert!(error.to_string().contains("version 1"), "{error}");
    client.append("t-1", &working(Some(1))).unwrap();
    client
        .append(
            "t-1",
            &AppendRequest {
                expected_version: None,
                events: vec![EventBody::Status(TaskStatus::new(TaskState::Completed))],
            },
        )
        .unwrap();
    let error = client.append("t-1", &working(None)).unwrap_err();
    assert_eq!(
        (error.reason(), status_of(&error)),
        (Some("TASK_TERMINAL"), 400)
    );
    let (status, body) = raw(
        &base,
        "POST",
        "/tasklog/v1/tasks/t-1/events",
        "application/json",
        br#"{"events":[]}"#,
    );
    assert_eq!((status, reason(&body)), (400, "INVALID_ARGUMENT"), "{body}");

    // Bad bodies, routes and queries.
    struct Case {
        method: &'static str,
        path: &'static str,
        content_type: &'static str,
        body: &'static [u8],
        status: u16,
        reason: &'static str,
    }
    let case = |method, path, content_type, body, status, reason| Case {
        method,
        path,
        content_type,
        body,
        status,
        reason,
    };
    let json = "application/json";
    let cases = [
        case(
            "POST",
            "/tasklog/v1/tasks",
            json,
            b"{not json",
            400,
            "INVALID_ARGUMENT",
        ),
        case(
            "POST",
            "/tasklog/v1/tasks",
            json,
            br#"{"colour":"red"}"#,
            400,
            "INVALID_ARGUMENT",
        ),
        case(
            "POST",
            "/tasklog/v1/tasks",
            "text/plain",
            b"{}",
            415,
            "CONTENT_TYPE_NOT_SUPPORTED",
        ),
        case(
            "POST",
            "/tasklog/v1/tasks",
            json,
            br#"{"state":"TASK_STATE_UNSPECIFIED"}"#,
            400,
            "INVALID_ARGUMENT",
        ),
        case(
            "GET",
            "/tasklog/v1/tasks/t-1?historyLength=-3",
            "",
            b"",
            400,
            "INVALID_ARGUMENT",
        ),
        case(
            "GET",
            "/tasklog/v1/tasks/t-1?consistency=eventual",
            "",
            b"",
            400,
            "INVALID_ARGUMENT",
        ),
        case("GET", "/no/such/route", "", b"", 404, "NO_SUCH_ROUTE"),
    ];
    for c in cases {
        let (got, answer) = raw(&base, c.method, c.path, c.content_type, c.body);
        assert_eq!(
            (got, reason(&answer)),
            (c.status, c.reason),
            "{} {}: {answer}",
            c.method,
            c.path
        );
        assert_eq!(answer["error"]["code"], c.status, "{answer}");
    }
    // A body over the limit, and a batch over the engine's limit.
    let mut huge = vec![b' '; tasklog_server::http::BODY_BYTES_MAX + 1];
    huge[0] = b'{';
    let (status, answer) = raw(&base, "POST", "/tasklog/v1/tasks", json, &huge);
    assert_eq!((status, reason(&answer)), (413, "TOO_LARGE"), "{answer}");
    client
        .create(&CreateRequest {
            task_id: Some("t-2".into()),
            ..CreateRequest::default()
        })
        .unwrap();
    let big_text = "x".repeat(1536 * 1024);
    let big_artifact = format!(
        r#"{{"events":[{{"artifact":{{"artifact":{{"artifactId":"a","parts":[{{"text":"{big_text}"}}]}}}}}}]}}"#
    );
    let (status, answer) = raw(
        &base,
        "POST",
        "/tasklog/v1/tasks/t-2/events",
        json,
        big_artifact.as_bytes(),
    );
    assert_eq!((status, reason(&answer)), (413, "TOO_LARGE"), "{answer}");

    // Reads at every consistency, and the node still serves.
    let read = client
        .get("t-1", "consistency=linearizable&historyLength=0")
        .unwrap();
    assert_eq!(
        (read.version, read.task.status.state),
        (3, TaskState::Completed)
    );
    let read = client
        .get("t-1", &format!("atLeastPosition={}", read.applied_position))
        .unwrap();
    assert_eq!(read.version, 3);
    let error = client
        .get("t-1", "atLeastPosition=1000000&waitMs=100")
        .unwrap_err();
    assert_eq!(
        (error.reason(), status_of(&error)),
        (Some("NOT_APPLIED_YET"), 504)
    );
    assert!(client.healthy());
    let (status, body) = raw(&base, "GET", "/readyz", "", b"");
    assert_eq!(status, 200, "{body}");
}

fn status_of(error: &ClientError) -> u16 {
    match error {
        ClientError::Api { status, .. } => *status,
        _ => 0,
    }
}

/// Goal: retention on a cluster is the leader's decision, carried out as replicated deletes:
/// every node drops the same terminal tasks (the oldest beyond the count kept), keeps the others
/// and every active task, and the new leader goes on after the old one stops. Method: three nodes
/// keeping 2 terminal tasks, checked every 100 ms; five tasks completed one after another and
/// one left working; then the leader stopped and one more task completed.
#[test]
fn retention_deletes_the_same_terminal_tasks_on_every_node() {
    let mut cluster = Cluster::start_with(
        3,
        &[
            "--retention-max-terminal-tasks",
            "2",
            "--retention-interval-ms",
            "100",
        ],
    );
    let ids = [1, 2, 3];
    let complete = |client: &Client, task_id: &str| {
        let created = client
            .create(&CreateRequest {
                task_id: Some(task_id.to_owned()),
                ..CreateRequest::default()
            })
            .unwrap();
        client
            .append(
                task_id,
                &AppendRequest {
                    expected_version: Some(created.version),
                    events: vec![EventBody::Status(TaskStatus::new(TaskState::Completed))],
                },
            )
            .unwrap()
            .position
    };
    let active = cluster
        .client(1)
        .create(&CreateRequest {
            task_id: Some("active".to_owned()),
            ..CreateRequest::default()
        })
        .unwrap();
    let mut last = active.position;
    for i in 0..5usize {
        last = complete(cluster.client(ids[i % 3]), &format!("done-{i}"));
        // Distinct status times: the order "oldest first" is the order written.
        std::thread::sleep(Duration::from_millis(5));
    }
    let present = |client: &Client, task_id: &str| match client.get(task_id, "") {
        Ok(_) => true,
        Err(error) if error.reason() == Some("TASK_NOT_FOUND") => false,
        Err(error) => panic!("get {task_id}: {error}"),
    };
    let expect = |cluster: &Cluster, last: u64, among: &[NodeId], gone: &[&str], kept: &[&str]| {
        for &id in among {
            let client = cluster.client(id);
            eventually(&format!("retention on node {id}"), || {
                // Read at least what was written, then look.
                client
                    .get("active", &format!("atLeastPosition={last}&waitMs=5000"))
                    .ok()?;
                gone.iter().all(|task| !present(client, task)).then_some(())
            });
            for task in kept {
                assert!(
                    present(client, task),
                    "node {id} lost {task}\n{}",
                    cluster.logs()
                );
            }
        }
    };
    expect(
        &cluster,
        last,
        &ids,
        &["done-0", "done-1", "done-2"],
        &["done-3", "done-4", "active"],
    );

    let leader = cluster.leader(&ids);
    assert!(cluster.sigterm(leader).success());
    let survivors: Vec<NodeId> = ids.iter().copied().filter(|&id| id != leader).collect();
    cluster.leader(&survivors);
    let last = complete(cluster.client(survivors[0]), "done-5");
    expect(
        &cluster,
        last,
        &survivors,
        &["done-0", "done-1", "done-2", "done-3"],
        &["done-4", "done-5", "active"],
    );
}

#[test]
fn membership_changes_over_http() {
    // Two voters, then node 3 started with no bootstrap joins as a learner, becomes a voter,
    // takes the leadership, and node 1 is removed.
    let mut cluster = Cluster::start(3);
    let ids = [1, 2, 3];
    let leader = cluster.leader(&ids);
    let leader_client = cluster.client(leader).clone();
    let others: Vec<NodeId> = ids.iter().copied().filter(|&id| id != leader).collect();
    let (removed, kept) = (others[0], others[1]);
    let status = leader_client.remove_node(removed).unwrap();
    assert!(!status.members.contains_key(&removed), "{status:?}");
    assert_eq!(status.voters.len(), 2);
    let addr = cluster.inner.raft_addr(removed).unwrap().to_string();
    // A follower refuses membership changes with the leader's id.
    let error = cluster
        .client(kept)
        .add_learner(&tasklog_server::http::AddLearnerRequest {
            id: removed,
            addr: addr.clone(),
            wait: true,
        })
        .unwrap_err();
    assert_eq!(error.reason(), Some("NOT_LEADER"), "{error}");
    // Back as a learner (its data directory still holds its log), then a voter.
    let status = leader_client
        .add_learner(&tasklog_server::http::AddLearnerRequest {
            id: removed,
            addr,
            wait: true,
        })
        .unwrap();
    assert!(status.learners.contains(&removed), "{status:?}");
    let status = leader_client
        .set_voters(&tasklog_server::http::VotersRequest {
            voters: ids.iter().copied().collect(),
            keep_as_learners: false,
        })
        .unwrap();
    assert_eq!(status.voters, ids.to_vec());
    // Leadership handed over, and writes go on through the old leader (now forwarding).
    // Through the CLI: `tasklog member` finds the leader among the nodes given.
    let urls: Vec<String> = ids
        .iter()
        .map(|id| cluster.client(*id).base_url().to_owned())
        .collect();
    let output = Command::new(BIN)
        .args([
            "member",
            "transfer-leader",
            "--nodes",
            &urls.join(","),
            "--to",
        ])
        .arg(kept.to_string())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    eventually(&format!("node {kept} leads"), || {
        ids.iter()
            .all(|id| {
                cluster
                    .client(*id)
                    .status()
                    .is_ok_and(|s| s.leader == Some(kept))
            })
            .then_some(())
    });
    let output = Command::new(BIN)
        .args(["status", "--nodes", &urls.join(",")])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&output.stdout);
    let leaders: Vec<&str> = table
        .lines()
        .skip(1)
        .filter(|l| l.contains(" leader "))
        .collect();
    assert_eq!(leaders.len(), 1, "{table}");
    assert!(leaders[0].contains(&format!(" {kept} leader ")), "{table}");
    assert_eq!(table.lines().count(), 4, "{table}");
    let written = leader_client.create(&CreateRequest::default()).unwrap();
    let read = cluster
        .client(removed)
        .get(
            &written.task_id,
            &format!("atLeastPosition={}", written.position),
        )
        .unwrap();
    assert_eq!(read.version, 1);
    for id in ids {
        assert!(cluster.sigterm(id).success());
    }
}

#[test]
fn cluster_command_runs_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    // Three consecutive ports from each base, in the range other tests' connections take their
    // ports from: the command says at once when one is taken, and then it runs again elsewhere.
    let run = || {
        Command::new(BIN)
            .args(["cluster", "--seconds", "3", "--rate", "30"])
            .arg("--dir")
            .arg(dir.path())
            .args([
                "--raft-port",
                &free_port().to_string(),
                "--http-port",
                &free_port().to_string(),
            ])
            .output()
            .unwrap()
    };
    let mut output = run();
    for _ in 0..5 {
        let stderr = String::from_utf8_lossy(&output.stderr);
        if output.status.success() || !stderr.contains("is in use") {
            break;
        }
        output = run();
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let logs: String = (1..=3)
        .map(|id| {
            std::fs::read_to_string(dir.path().join(format!("node-{id}.log"))).unwrap_or_default()
        })
        .collect();
    assert!(
        output.status.success(),
        "{stdout}\n{}\n{logs}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("leader elected"), "{stdout}");
    for id in 1..=3 {
        assert!(stdout.contains(&format!("node {id} stopped")), "{stdout}");
    }
    // The last table: every node up, the last write seen everywhere, no failures.
    let last_table = stdout.rsplit(" writes (").next().unwrap();
    assert_eq!(last_table.matches("  seen").count(), 3, "{stdout}");
    assert!(stdout.contains(", 0 failed"), "{stdout}");
    let writes: u64 = stdout
        .rsplit(" s  ")
        .next()
        .and_then(|tail| tail.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(writes >= 20, "{writes} writes in 3 s at 30/s\n{stdout}");
    // Each node's data directory now holds the cluster's log.
    for id in 1..=3 {
        assert!(dir.path().join(format!("node-{id}/log")).is_dir());
    }
}

#[test]
fn cluster_command_says_when_its_ports_are_taken() {
    let dir = tempfile::tempdir().unwrap();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let http = taken.local_addr().unwrap().port();
    let output = Command::new(BIN)
        .args(["cluster", "--seconds", "1", "--nodes", "1"])
        .arg("--dir")
        .arg(dir.path())
        .args([
            "--raft-port",
            &free_port().to_string(),
            "--http-port",
            &http.to_string(),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("is in use") && stderr.contains("--http-port"),
        "{stderr}"
    );
}

#[test]
fn serve_refuses_bad_configuration_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let output = Command::new(BIN).arg("serve").args(args).output().unwrap();
        assert!(!output.status.success(), "{args:?} started");
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let stderr = run(&["--data-dir", "x"]);
    assert!(stderr.contains("missing --id"), "{stderr}");
    let data = dir.path().join("data").display().to_string();
    let certs = dir.path().join("certs").display().to_string();
    let stderr = run(&[
        "--id",
        "1",
        "--data-dir",
        &data,
        "--raft-addr",
        "127.0.0.1:0",
        "--http-addr",
        "127.0.0.1:0",
        "--certs-dir",
        &certs,
    ]);
    assert!(stderr.contains("tasklog certs"), "{stderr}");
    let stderr = run(&["--id", "1", "--peer", "2=localhost"]);
    assert!(stderr.contains("ID=HOST:PORT"), "{stderr}");
}
