//! openraft over the QUIC transport on 127.0.0.1: real nodes (engine store, log store, state
//! machine), mutual TLS with certificates from `certs::create`, transports bound on port 0 first
//! so that their addresses become the members' addresses.
//!
//! Each test states what it proves; together they cover replication and fail-over through the
//! QUIC network, a restarted node catching up, a snapshot crossing the network (to a learner the
//! leader's purged log cannot serve, and through the client directly), what the receiving handler
//! does with cut transfers and bad bytes, and a node from another CA kept out.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use openraft::EntryPayload;
use openraft::ServerState;
use openraft::error::{RPCError, ReplicationClosed, StreamingError};
use openraft::impls::BasicNode;
use openraft::network::RPCOption;
use openraft::network::v2::RaftNetworkV2;
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, VoteRequest};
use tasklog_engine::{NewTask, Position, Write};
use tasklog_raft::certs::{self, CertsOptions, node_server_name};
use tasklog_raft::network::raft_wire::{
    self, KIND_FULL_SNAPSHOT, KIND_TRANSFER_LEADER, KIND_VOTE, SnapshotHeader,
};
use tasklog_raft::network::{
    BoxFuture, ChunkStream, Handler, HandlerResult, QuicNetworkFactory, RaftHandler, RpcError,
    StreamOptions, TlsMaterial, Transport, TransportOptions,
};
use tasklog_raft::types::{Command, Entry, LogId, Vote};
use tasklog_raft::{Node, NodeError, NodeId, Timing};
use tokio::io::{AsyncRead, ReadBuf};

/// Upper bound of every wait in these tests.
const TIMEOUT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(20);

fn timing() -> Timing {
    // Short, with room for a loaded two-core machine: the append deadline is 3/4 of the
    // heartbeat interval.
    Timing {
        heartbeat: Duration::from_millis(100),
        election: (Duration::from_millis(500), Duration::from_millis(1000)),
    }
}

fn transport_options() -> TransportOptions {
    TransportOptions {
        request_read_timeout: Duration::from_secs(2),
        stream_idle_timeout: Duration::from_secs(2),
        connect_timeout: Duration::from_millis(500),
        backoff_initial: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        close_linger: Duration::from_millis(200),
        connection_idle_timeout: Duration::from_secs(2),
        keep_alive_interval: Duration::from_millis(500),
        ..TransportOptions::default()
    }
}

fn localhost() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn new_task(id: &str) -> Write {
    Write::Create(NewTask {
        task_id: Some(id.to_owned()),
        ..NewTask::submitted(None)
    })
}

/// Polls `check` every [`POLL`] until it gives a value, for at most [`TIMEOUT`].
async fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(start.elapsed() < TIMEOUT, "timed out waiting for {what}");
        tokio::time::sleep(POLL).await;
    }
}

/// Binds `addr` (again, after a restart: the old socket goes once its last handle does).
async fn bind(addr: SocketAddr, tls: &TlsMaterial) -> Transport {
    let start = Instant::now();
    loop {
        match Transport::bind(addr, tls, transport_options()) {
            Ok(transport) => return transport,
            Err(error) => {
                assert!(start.elapsed() < TIMEOUT, "bind {addr}: {error}");
                tokio::time::sleep(POLL).await;
            }
        }
    }
}

struct Member {
    node: Node,
    transport: Transport,
    answered: Answered,
}

/// Requests a node's handler answered (with a reply, not an error), by kind.
type Answered = Arc<Mutex<BTreeMap<u8, usize>>>;

fn answered(answered: &Answered, kind: u8) -> usize {
    answered.lock().unwrap().get(&kind).copied().unwrap_or(0)
}

/// A node's [`RaftHandler`], counting what it answers.
struct Counting<H> {
    inner: H,
    answered: Answered,
}

impl<H: Handler> Counting<H> {
    fn count(&self, kind: u8, work: BoxFuture<HandlerResult>) -> BoxFuture<HandlerResult> {
        let answered = self.answered.clone();
        Box::pin(async move {
            let result = work.await;
            if result.is_ok() {
                *answered.lock().unwrap().entry(kind).or_default() += 1;
            }
            result
        })
    }
}

impl<H: Handler> Handler for Counting<H> {
    fn call(&self, kind: u8, payload: Vec<u8>) -> BoxFuture<HandlerResult> {
        self.count(kind, self.inner.call(kind, payload))
    }

    fn stream(&self, kind: u8, header: Vec<u8>, chunks: ChunkStream) -> BoxFuture<HandlerResult> {
        self.count(kind, self.inner.stream(kind, header, chunks))
    }
}

/// Nodes sharing one cluster CA, each with its own directory and QUIC endpoint.
struct Cluster {
    root: tempfile::TempDir,
    addrs: BTreeMap<NodeId, SocketAddr>,
    members: BTreeMap<NodeId, Member>,
}

impl Cluster {
    /// Certificates for `ids` (and `spare` ids, started later) from one CA; `ids` bound and
    /// started, not initialized.
    async fn start(ids: &[NodeId], spare: &[NodeId]) -> Cluster {
        let root = tempfile::tempdir().unwrap();
        let nodes = ids.iter().chain(spare).copied().collect();
        certs::create(
            &root.path().join("certs"),
            &CertsOptions {
                nodes,
                ..CertsOptions::default()
            },
        )
        .unwrap();
        let mut cluster = Cluster {
            root,
            addrs: BTreeMap::new(),
            members: BTreeMap::new(),
        };
        for &id in ids {
            cluster.launch(id).await;
        }
        cluster
    }

    fn certs(&self) -> PathBuf {
        self.root.path().join("certs")
    }

    fn dir(&self, id: NodeId) -> PathBuf {
        self.root.path().join(format!("node-{id}"))
    }

    fn node(&self, id: NodeId) -> &Node {
        &self.members[&id].node
    }

    fn members(&self) -> BTreeMap<NodeId, String> {
        self.addrs
            .iter()
            .map(|(id, addr)| (*id, addr.to_string()))
            .collect()
    }

    /// Starts node `id` on its directory; on its known address, or on port 0 the first time.
    async fn launch(&mut self, id: NodeId) {
        let tls = TlsMaterial::load_node(&self.certs(), id).unwrap();
        let addr = self.addrs.get(&id).copied().unwrap_or_else(localhost);
        let transport = bind(addr, &tls).await;
        self.addrs.insert(id, transport.local_addr());
        let (node, answered) = open(id, &self.dir(id), &transport).await;
        self.members.insert(
            id,
            Member {
                node,
                transport,
                answered,
            },
        );
    }

    /// Stops node `id` in order: Raft (and the engine's flush), then its endpoint.
    async fn stop(&mut self, id: NodeId) {
        let member = self.members.remove(&id).unwrap();
        member.node.shutdown().await.unwrap();
        member.transport.shutdown(Duration::from_millis(500)).await;
    }

    /// The leader every running member agrees on (in the highest term).
    async fn leader(&self) -> NodeId {
        eventually("a leader all running members follow", || {
            let metrics: Vec<_> = self.members.values().map(|m| m.node.metrics()).collect();
            let leader = metrics
                .iter()
                .filter(|m| m.state == ServerState::Leader)
                .max_by_key(|m| m.current_term)?;
            let agreed = metrics.iter().all(|m| {
                m.current_leader == Some(leader.id) && m.current_term == leader.current_term
            });
            agreed.then_some(leader.id)
        })
        .await
    }

    /// Creates task `task_id` through the leader (retrying across leader changes); returns the
    /// position it was written at.
    async fn create(&self, task_id: &str) -> Position {
        self.create_through(task_id, None).await
    }

    /// Creates task `task_id` through node `id` (or the leader of the day), retrying; returns the
    /// position it was written at.
    async fn create_through(&self, task_id: &str, through: Option<NodeId>) -> Position {
        let start = Instant::now();
        loop {
            let leader = match through {
                Some(id) => id,
                None => self.leader().await,
            };
            let write = self.node(leader).write(new_task(task_id));
            match tokio::time::timeout(Duration::from_secs(5), write).await {
                Ok(Ok(written)) => return written.position,
                // An earlier attempt whose outcome was unknown did commit.
                Ok(Err(NodeError::Rejected(tasklog_engine::Error::TaskExists { .. }))) => {
                    return self.node(leader).store().log().bounds().1;
                }
                outcome => {
                    assert!(
                        start.elapsed() < TIMEOUT,
                        "write {task_id} never succeeded: {outcome:?}"
                    );
                    tokio::time::sleep(POLL).await;
                }
            }
        }
    }

    /// Every running member applies `position` and holds every task in `tasks`.
    async fn all_hold(&self, position: Position, tasks: &[String]) {
        for (id, member) in &self.members {
            member
                .node
                .wait_applied(position, TIMEOUT)
                .await
                .unwrap_or_else(|e| panic!("node {id} did not apply {position}: {e}"));
            for task in tasks {
                assert!(
                    member.node.store().get(task, None).is_ok(),
                    "node {id} misses {task}"
                );
            }
        }
    }
}

/// Opens a node on `dir` with the QUIC network, then serves its Raft on `transport`. A restart
/// waits (bounded) for the previous incarnation to release the directory.
async fn open(id: NodeId, dir: &Path, transport: &Transport) -> (Node, Answered) {
    let start = Instant::now();
    let node = loop {
        let network = QuicNetworkFactory::new(id, transport.clone());
        match Node::open(id, dir, network, &timing()).await {
            Ok(node) => break node,
            Err(NodeError::Rejected(tasklog_engine::Error::Locked { .. }))
                if start.elapsed() < TIMEOUT =>
            {
                tokio::time::sleep(POLL).await;
            }
            Err(error) => panic!("open node {id}: {error}"),
        }
    };
    let answered = Answered::default();
    let handler = Counting {
        inner: RaftHandler::new(node.raft().clone(), dir.join("snapshots")),
        answered: answered.clone(),
    };
    transport.serve(Arc::new(handler)).unwrap();
    (node, answered)
}

/// (term, kind, payload) of every record from `first` to `last` on `node`.
fn records(node: &Node, first: u64, last: u64) -> Vec<(u64, u8, Vec<u8>)> {
    (first..=last)
        .map(|position| {
            let record = node
                .store()
                .log()
                .read(Position::new(position))
                .unwrap_or_else(|e| panic!("node {}: position {position}: {e}", node.id()));
            (record.term(), record.kind(), record.payload().to_vec())
        })
        .collect()
}

/// `incoming-*.part` files in a node's snapshot directory.
fn parts(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| {
            path.file_name()
                .is_some_and(|name| name.to_string_lossy().ends_with(".part"))
        })
        .collect()
}

/// Goal: the QUIC network carries a three-node cluster through the life of a deployment.
/// Method: write through the leader and check every node applied it; stop the leader and keep
/// writing through the new one; restart the old leader on its directory and address and check
/// that all three logs end up identical, record for record (term, kind, payload); then hand
/// leadership to it with openraft's transfer-leader RPC.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_replicate_fail_over_and_converge_over_quic() {
    let mut cluster = Cluster::start(&[1, 2, 3], &[]).await;
    cluster.node(1).initialize(cluster.members()).await.unwrap();

    let mut tasks = Vec::new();
    let mut last = Position::new(0);
    for i in 0..5 {
        let task = format!("before-{i}");
        last = cluster.create(&task).await;
        tasks.push(task);
    }
    cluster.all_hold(last, &tasks).await;

    let old_leader = cluster.leader().await;
    let old_term = cluster.node(old_leader).metrics().current_term;
    cluster.stop(old_leader).await;
    let new_leader = cluster.leader().await;
    assert_ne!(new_leader, old_leader);
    assert!(cluster.node(new_leader).metrics().current_term > old_term);
    for i in 0..5 {
        let task = format!("after-{i}");
        last = cluster.create(&task).await;
        tasks.push(task);
    }
    cluster.all_hold(last, &tasks).await;

    cluster.launch(old_leader).await;
    last = cluster.create("rejoined").await;
    tasks.push("rejoined".to_owned());
    cluster.all_hold(last, &tasks).await;

    let (first, _) = cluster.node(new_leader).store().log().bounds();
    let reference = records(cluster.node(new_leader), first.get(), last.get());
    assert!(reference.len() >= tasks.len());
    for id in [1, 2, 3] {
        let node = cluster.node(id);
        assert_eq!(node.store().log().bounds().0, first, "node {id}");
        assert!(
            records(node, first.get(), last.get()) == reference,
            "node {id}'s log differs from node {new_leader}'s"
        );
    }

    // Leadership handed over through the transfer-leader RPC, to the restarted node.
    let leader = cluster.leader().await;
    cluster
        .node(leader)
        .raft()
        .trigger()
        .transfer_leader(old_leader)
        .await
        .unwrap();
    eventually("the restarted node to lead after the transfer", || {
        let metrics = cluster.node(old_leader).metrics();
        (metrics.state == ServerState::Leader).then_some(())
    })
    .await;
    assert!(answered(&cluster.members[&old_leader].answered, KIND_TRANSFER_LEADER) >= 1);
    last = cluster.create("after-transfer").await;
    tasks.push("after-transfer".to_owned());
    cluster.all_hold(last, &tasks).await;
    for id in [1, 2, 3] {
        cluster.stop(id).await;
    }
}

/// Goal: openraft's own snapshot replication works over QUIC. Method: a one-node cluster writes
/// tasks, builds a snapshot and purges its log up to it, so that a new learner can only be
/// brought up to date by a snapshot; the learner is added and must hold every task, with the
/// snapshot installed and no partial file left in its snapshot directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purged_leader_sends_its_snapshot_to_a_new_learner_over_quic() {
    let mut cluster = Cluster::start(&[1], &[2]).await;
    cluster.node(1).initialize(cluster.members()).await.unwrap();
    let tasks: Vec<String> = (0..20).map(|i| format!("task-{i}")).collect();
    let mut last = Position::new(0);
    for task in &tasks {
        last = cluster.create(task).await;
    }
    let leader = cluster.node(1).clone();
    leader.wait_applied(last, TIMEOUT).await.unwrap();
    let applied = leader.metrics().last_applied.unwrap();
    leader.raft().trigger().snapshot().await.unwrap();
    eventually("the leader's snapshot", || {
        (leader.metrics().snapshot == Some(applied)).then_some(())
    })
    .await;
    leader
        .raft()
        .trigger()
        .purge_log(applied.index)
        .await
        .unwrap();
    eventually("the leader's purge", || {
        (leader.metrics().purged == Some(applied)).then_some(())
    })
    .await;

    cluster.launch(2).await;
    let addr = cluster.addrs[&2].to_string();
    tokio::time::timeout(
        TIMEOUT,
        leader.raft().add_learner(2, BasicNode::new(addr), true),
    )
    .await
    .expect("add_learner timed out")
    .unwrap();
    let learner = cluster.node(2).clone();
    learner.wait_applied(last, TIMEOUT).await.unwrap();
    // Counted once the handler has answered, which may be just after openraft's metrics.
    let learner_answered = cluster.members[&2].answered.clone();
    eventually("the learner's handler to answer the snapshot", || {
        (answered(&learner_answered, KIND_FULL_SNAPSHOT) >= 1).then_some(())
    })
    .await;
    assert_eq!(learner.metrics().snapshot, Some(applied));
    for task in &tasks {
        assert!(
            learner.store().get(task, None).is_ok(),
            "learner misses {task}"
        );
    }
    let snapshot_dir = cluster.dir(2).join("snapshots");
    let kept = tasklog_raft::snapshot::files(&snapshot_dir).unwrap();
    assert_eq!(kept.len(), 1, "{kept:?}");
    // Kept under its own name (the received file renamed, not copied).
    let name = format!(
        "snapshot-{:020}-{:020}.snap",
        applied.leader_id.term, applied.index
    );
    assert!(kept[0].ends_with(&name), "{kept:?} is not {name}");
    // The received file goes once openraft has answered, which may be just after its metrics.
    eventually("the received file deleted", || {
        parts(&snapshot_dir).is_empty().then_some(())
    })
    .await;

    // Replication goes on by appends after the snapshot.
    last = cluster.create("after-snapshot").await;
    learner.wait_applied(last, TIMEOUT).await.unwrap();
    assert!(learner.store().get("after-snapshot", None).is_ok());
    for id in [1, 2] {
        cluster.stop(id).await;
    }
}

/// A source that yields `prefix`, then never another byte (until the transfer is dropped).
struct Stalling {
    prefix: Vec<u8>,
    sent: bool,
}

impl AsyncRead for Stalling {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.sent {
            return Poll::Pending;
        }
        let take = buf.remaining().min(self.prefix.len());
        buf.put_slice(&self.prefix[..take]);
        self.prefix.drain(..take);
        self.sent = self.prefix.is_empty();
        Poll::Ready(Ok(()))
    }
}

/// Goal: `full_snapshot` through the QUIC client installs a snapshot on a receiver, an already
/// cancelled transfer reports `Closed`, a cut transfer leaves no file behind, and bad bytes get
/// typed errors without harming the receiver. Method: node 1 (a one-node cluster) builds a
/// snapshot; node 2 (a fresh, uninitialized node behind a `RaftHandler`) receives it from node
/// 1's client; then raw transport calls send a stalled transfer, garbage and an unknown kind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_snapshot_through_the_client_and_what_the_handler_refuses() {
    let mut cluster = Cluster::start(&[1, 2], &[]).await;
    cluster
        .node(1)
        .initialize(BTreeMap::from([(1, cluster.addrs[&1].to_string())]))
        .await
        .unwrap();
    let tasks: Vec<String> = (0..10).map(|i| format!("direct-{i}")).collect();
    let mut last = Position::new(0);
    for task in &tasks {
        last = cluster.create_through(task, Some(1)).await;
    }
    let source = cluster.node(1).clone();
    source.wait_applied(last, TIMEOUT).await.unwrap();
    let applied = source.metrics().last_applied.unwrap();
    source.raft().trigger().snapshot().await.unwrap();
    eventually("node 1's snapshot", || {
        (source.metrics().snapshot == Some(applied)).then_some(())
    })
    .await;
    let snapshot = source.raft().get_snapshot().await.unwrap().unwrap();
    let vote = source.metrics().vote;

    let factory = QuicNetworkFactory::new(1, cluster.members[&1].transport.clone());
    let mut client = factory.client(2, &cluster.addrs[&2].to_string());
    let option = RPCOption::new(Duration::from_secs(2));

    // Cancelled before it starts: openraft's cancel wins.
    let cancelled = client
        .full_snapshot(
            vote,
            snapshot.clone(),
            std::future::ready(ReplicationClosed::new("test cancel")),
            option.clone(),
        )
        .await;
    assert!(
        matches!(cancelled, Err(StreamingError::Closed(_))),
        "{cancelled:?}"
    );

    let response = client
        .full_snapshot(
            vote,
            snapshot.clone(),
            std::future::pending(),
            option.clone(),
        )
        .await
        .unwrap();
    assert_eq!(response.vote, vote);
    let receiver = cluster.node(2).clone();
    receiver.wait_applied(last, TIMEOUT).await.unwrap();
    assert_eq!(receiver.metrics().snapshot, Some(applied));
    for task in &tasks {
        assert!(
            receiver.store().get(task, None).is_ok(),
            "receiver misses {task}"
        );
    }
    let snapshot_dir = cluster.dir(2).join("snapshots");
    assert_eq!(parts(&snapshot_dir), Vec::<PathBuf>::new());

    // A transfer that stalls halfway: its part file exists while it runs and is gone once the
    // sender drops it.
    let peer = cluster.members[&1]
        .transport
        .peer(cluster.addrs[&2], &node_server_name(2))
        .unwrap();
    let header = SnapshotHeader {
        vote,
        meta: snapshot.meta.clone(),
        snapshot_bytes: 1 << 20,
    };
    let header = raft_wire::encode(&header, u32::MAX, "snapshot header").unwrap();
    let stalling = Stalling {
        prefix: vec![7; 64 * 1024],
        sent: false,
    };
    let options = StreamOptions {
        idle_timeout: Duration::from_secs(30),
        ..StreamOptions::default()
    };
    let transfer = peer.send_stream(KIND_FULL_SNAPSHOT, header.clone(), stalling, &options);
    let watched = snapshot_dir.clone();
    tokio::select! {
        result = transfer => panic!("a stalled transfer ended: {result:?}"),
        _ = eventually("a part file of the stalled transfer", move || {
            (!parts(&watched).is_empty()).then_some(())
        }) => {}
    }
    eventually("the part file deleted after the sender went away", || {
        parts(&snapshot_dir).is_empty().then_some(())
    })
    .await;

    // A transfer longer than its header says is refused, and leaves nothing.
    let short_header = SnapshotHeader {
        vote,
        meta: snapshot.meta.clone(),
        snapshot_bytes: 10,
    };
    let short_header = raft_wire::encode(&short_header, u32::MAX, "snapshot header").unwrap();
    let error = peer
        .send_stream(KIND_FULL_SNAPSHOT, short_header, &[1u8; 100][..], &options)
        .await
        .unwrap_err();
    assert!(
        matches!(&error, RpcError::Remote { message, .. } if message.contains("more than the 10 bytes")),
        "{error}"
    );
    // A snapshot from a term after the sender's vote is refused before anything is written.
    let mut future_meta = snapshot.meta.clone();
    future_meta.last_log_id = Some(LogId::new_term_index(vote.leader_id.term + 5, 1_000));
    let future = SnapshotHeader {
        vote,
        meta: future_meta,
        snapshot_bytes: 1,
    };
    let future = raft_wire::encode(&future, u32::MAX, "snapshot header").unwrap();
    let error = peer
        .send_stream(KIND_FULL_SNAPSHOT, future, &[1u8][..], &options)
        .await
        .unwrap_err();
    assert!(
        matches!(&error, RpcError::Remote { message, .. } if message.contains("after the sender's vote")),
        "{error}"
    );
    // Garbage header, garbage request, unknown kind: typed messages.
    let error = peer
        .send_stream(
            KIND_FULL_SNAPSHOT,
            vec![1, 0xFF, 0xFF],
            &[0u8; 4][..],
            &options,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&error, RpcError::Remote { message, .. } if message.starts_with("snapshot header: invalid encoding")),
        "{error}"
    );
    let error = peer
        .call(
            KIND_VOTE,
            vec![raft_wire::FORMAT_VERSION, 0xFF],
            Duration::from_secs(2),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&error, RpcError::Remote { message, .. } if message.starts_with("vote: invalid encoding")),
        "{error}"
    );
    let error = peer
        .call(
            0x7F,
            vec![raft_wire::FORMAT_VERSION],
            Duration::from_secs(2),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&error, RpcError::Remote { message, .. } if message.contains("no raft rpc of kind 0x7f")),
        "{error}"
    );
    assert_eq!(parts(&snapshot_dir), Vec::<PathBuf>::new());

    // The receiver still answers well-formed RPCs.
    let request = VoteRequest::new(Vote::new(0, 9), None);
    let answer = client.vote(request, option.clone()).await.unwrap();
    assert!(!answer.vote_granted);
    for id in [1, 2] {
        cluster.stop(id).await;
    }
}

/// Goal: a node whose certificate comes from another CA can neither join nor disturb the
/// cluster. Method: a three-node cluster runs; node 4, with certificates from a second CA,
/// starts believing it is a voter of {1, 2, 3, 4} and campaigns, and the leader adds it as a
/// learner; its RPCs and the leader's RPCs to it fail as `Unreachable` (TLS), nothing of the
/// cluster reaches its log, no member votes for it, and the cluster keeps committing writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_from_another_ca_cannot_join() {
    let mut cluster = Cluster::start(&[1, 2, 3], &[]).await;
    cluster.node(1).initialize(cluster.members()).await.unwrap();
    let first = cluster.create("before-intruder").await;
    cluster
        .all_hold(first, &["before-intruder".to_owned()])
        .await;

    let foreign_certs = cluster.root.path().join("foreign-certs");
    certs::create(
        &foreign_certs,
        &CertsOptions {
            nodes: vec![4],
            ..CertsOptions::default()
        },
    )
    .unwrap();
    let tls = TlsMaterial::load_node(&foreign_certs, 4).unwrap();
    let intruder_transport = bind(localhost(), &tls).await;
    let intruder_addr = intruder_transport.local_addr();
    let intruder_dir = cluster.root.path().join("node-4");
    let (intruder, intruder_answered) = open(4, &intruder_dir, &intruder_transport).await;
    let mut members = cluster.members();
    members.insert(4, intruder_addr.to_string());
    intruder.initialize(members).await.unwrap();

    let factory = QuicNetworkFactory::new(4, intruder_transport.clone());
    let mut client = factory.client(1, &cluster.addrs[&1].to_string());
    let request = VoteRequest::new(Vote::new(1_000, 4), None);
    let option = RPCOption::new(Duration::from_secs(2));
    let error = client.vote(request, option.clone()).await.unwrap_err();
    assert!(matches!(error, RPCError::Unreachable(_)), "{error}");

    let leader = cluster.leader().await;
    let term = cluster.node(leader).metrics().current_term;
    cluster
        .node(leader)
        .raft()
        .add_learner(4, BasicNode::new(intruder_addr.to_string()), false)
        .await
        .unwrap();
    let leader_factory =
        QuicNetworkFactory::new(leader, cluster.members[&leader].transport.clone());
    let mut to_intruder = leader_factory.client(4, &intruder_addr.to_string());
    let request = VoteRequest::new(Vote::new(term, leader), None);
    let error = to_intruder.vote(request, option).await.unwrap_err();
    assert!(matches!(error, RPCError::Unreachable(_)), "{error}");

    let mut tasks = vec!["before-intruder".to_owned()];
    let mut last = first;
    let campaign_until = Instant::now() + Duration::from_secs(3);
    let mut i = 0;
    while Instant::now() < campaign_until || i < 5 {
        let task = format!("with-intruder-{i}");
        last = cluster.create(&task).await;
        tasks.push(task);
        i += 1;
        assert!(i < 1_000, "bounded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cluster.all_hold(last, &tasks).await;
    for (id, member) in &cluster.members {
        let metrics = member.node.metrics();
        assert_ne!(metrics.current_leader, Some(4), "node {id}");
        assert_ne!(metrics.vote.leader_id.voted_for, 4, "node {id}");
    }
    let metrics = intruder.metrics();
    assert_ne!(metrics.state, ServerState::Leader);
    for task in &tasks {
        assert!(
            intruder.store().get(task, None).is_err(),
            "the intruder holds {task}"
        );
    }
    assert!(
        intruder
            .metrics()
            .last_applied
            .is_none_or(|id| id.index == 0)
    );

    // Nothing from the cluster got through to the intruder's handler.
    assert_eq!(*intruder_answered.lock().unwrap(), BTreeMap::new());
    intruder.shutdown().await.unwrap();
    intruder_transport
        .shutdown(Duration::from_millis(500))
        .await;
    for id in [1, 2, 3] {
        cluster.stop(id).await;
    }
}

/// Goal: a batch of entries larger than the message cap is not retried forever but sent in part,
/// as openraft allows. Method: a client whose transport caps messages at 8 KiB sends 40 entries
/// of 1 KiB to a fresh node; the answer is a partial success ending at the last entry sent, the
/// receiver's log ends exactly there, and one entry above the cap is a network error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_batch_over_the_message_cap_is_sent_in_part() {
    let mut cluster = Cluster::start(&[2], &[1]).await;
    let tls = TlsMaterial::load_node(&cluster.certs(), 1).unwrap();
    let small = Transport::bind(
        localhost(),
        &tls,
        TransportOptions {
            message_bytes_max: 8 * 1024,
            ..transport_options()
        },
    )
    .unwrap();
    let mut client =
        QuicNetworkFactory::new(1, small.clone()).client(2, &cluster.addrs[&2].to_string());
    let entry = |index: u64, len: usize| Entry {
        log_id: LogId::new_term_index(1, index),
        payload: EntryPayload::Normal(Command {
            kind: 0x7E,
            payload: vec![index as u8; len],
        }),
    };
    let request = AppendEntriesRequest {
        vote: Vote::new_committed(1, 1),
        prev_log_id: None,
        entries: (0..40).map(|index| entry(index, 1024)).collect(),
        leader_commit: None,
    };
    let option = RPCOption::new(Duration::from_secs(2));
    let response = client
        .append_entries(request, option.clone())
        .await
        .unwrap();
    let AppendEntriesResponse::PartialSuccess(Some(last)) = response else {
        panic!("expected a partial success, got {response:?}");
    };
    assert!(last.index < 39 && last.index >= 3, "{last}");
    let receiver = cluster.node(2);
    assert_eq!(
        receiver.store().log().bounds().1,
        Position::new(last.index + 1),
        "the receiver holds exactly what was sent"
    );
    let request = AppendEntriesRequest {
        vote: Vote::new_committed(1, 1),
        prev_log_id: Some(last),
        entries: vec![entry(last.index + 1, 16 * 1024)],
        leader_commit: None,
    };
    let error = client.append_entries(request, option).await.unwrap_err();
    assert!(matches!(error, RPCError::Network(_)), "{error}");
    small.shutdown(Duration::from_millis(200)).await;
    cluster.stop(2).await;
}
