//! One replicated node: the engine's task store opened as a replica, openraft on top of it, and
//! the calls the server makes (write through the leader, read at a consistency level, wait for a
//! position, shut down in order).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::impls::BasicNode;
use openraft::{ChangeMembers, Config, RaftNetworkFactory, ServerState, SnapshotPolicy};
use serde::{Deserialize, Serialize};
use tasklog_engine::event::Event;
use tasklog_engine::model::Timestamp;
use tasklog_engine::{Options, Position, Retention, SyncPolicy, TaskStore, Write, Written};

use crate::log_store::LogStore;
use crate::snapshot::SnapshotFile;
use crate::state_machine::StateMachine;
use crate::types::{Command, NodeId, Rejection, Response, TypeConfig, position_of};

/// The openraft handle of a node.
pub type Raft = openraft::Raft<TypeConfig, StateMachine>;

/// How far behind the leader's log a learner may be when it is made a voter.
const VOTER_LAG_MAX: u64 = 1024;

/// Attempts of a write without an expected version that lost a race to its task at apply.
const UNCONDITIONAL_ATTEMPTS: u32 = 8;

/// Why a replicated call failed.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// This node is not the leader; `leader` is the one it knows of (if any). The server forwards.
    #[error("not the leader; the leader is {leader:?}")]
    NotLeader {
        /// The leader's id.
        leader: Option<NodeId>,
        /// Its address.
        address: Option<String>,
    },
    /// The write was decided against at apply (or refused before proposing).
    #[error(transparent)]
    Rejected(#[from] tasklog_engine::Error),
    /// Leadership changed while the write was in flight: it may or may not have committed.
    #[error("leadership changed while the write was in flight; its outcome is unknown")]
    Unknown,
    /// Waiting timed out.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// Raft stopped, or storage failed.
    #[error("raft: {0}")]
    Raft(String),
}

/// A node's view of itself and the cluster, for status pages and tools: positions are log
/// positions (0 = none yet).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    /// This node.
    pub node_id: NodeId,
    /// `leader`, `follower`, `candidate`, `learner` or `shutdown`.
    pub role: String,
    /// Current term.
    pub term: u64,
    /// The leader this node knows of.
    pub leader: Option<NodeId>,
    /// Last position in this node's log (durable or about to be).
    pub last_position: u64,
    /// Last position this node knows to be committed.
    pub committed_position: u64,
    /// Last position applied to this node's task state (what its reads see).
    pub applied_position: u64,
    /// Every member (voters and learners) with its QUIC address.
    pub members: BTreeMap<NodeId, String>,
    /// The voters.
    pub voters: Vec<NodeId>,
    /// The learners.
    pub learners: Vec<NodeId>,
    /// On the leader: the last position each member is known to hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication: Option<BTreeMap<NodeId, u64>>,
}

/// Timing of a node (defaults suit a LAN or loopback).
#[derive(Debug, Clone)]
pub struct Timing {
    /// Heartbeat interval.
    pub heartbeat: Duration,
    /// Election timeout range.
    pub election: (Duration, Duration),
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            heartbeat: Duration::from_millis(100),
            election: (Duration::from_millis(300), Duration::from_millis(600)),
        }
    }
}

/// A running node.
#[derive(Clone)]
pub struct Node {
    id: NodeId,
    raft: Raft,
    store: Arc<TaskStore>,
    log: LogStore,
}

impl Node {
    /// Opens the node's data directory (`<dir>/log` for the engine, `<dir>/snapshots`) and
    /// starts Raft with `network`.
    ///
    /// # Errors
    /// Engine errors opening the store, an invalid meta file, Raft's start-up errors.
    pub async fn open<N>(
        id: NodeId,
        dir: &Path,
        network: N,
        timing: &Timing,
    ) -> Result<Self, NodeError>
    where
        N: RaftNetworkFactory<TypeConfig>,
        N::Network: openraft::network::NetSnapshot<TypeConfig, SnapshotData = SnapshotFile>,
    {
        let options = Options {
            // The log store syncs (group commit in its flusher) before openraft hears of it.
            sync: SyncPolicy::External,
            ..Options::default()
        };
        let log_dir = dir.join("log");
        let store = Arc::new(
            tokio::task::spawn_blocking(move || TaskStore::open_replica(log_dir, options))
                .await
                .map_err(|e| NodeError::Raft(e.to_string()))??,
        );
        let log = LogStore::open(store.clone()).map_err(|e| NodeError::Raft(e.to_string()))?;
        let sm = StateMachine::new(store.clone(), dir.join("snapshots"));
        let config = Config {
            cluster_name: "tasklog".into(),
            heartbeat_interval: millis(timing.heartbeat),
            election_timeout_min: millis(timing.election.0),
            election_timeout_max: millis(timing.election.1),
            // The log is the data: snapshots are made when a follower needs one, never on a
            // schedule, and nothing is purged because a snapshot exists (DESIGN.md §4).
            snapshot_policy: SnapshotPolicy::Never,
            max_in_snapshot_log_to_keep: u64::MAX,
            enable_pre_vote: Some(true),
            ..Config::default()
        };
        let config = Arc::new(
            config
                .validate()
                .map_err(|e| NodeError::Raft(e.to_string()))?,
        );
        let raft = Raft::new(id, config, network, log.clone(), sm)
            .await
            .map_err(|e| NodeError::Raft(e.to_string()))?;
        Ok(Node {
            id,
            raft,
            store,
            log,
        })
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The openraft handle (membership changes, metrics, the network server's calls).
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// What this node knows now: its state (leader, follower, …), term, leader, log, commit and
    /// apply positions.
    pub fn metrics(&self) -> openraft::RaftMetrics<TypeConfig> {
        use openraft::type_config::async_runtime::WatchReceiver;
        self.raft.metrics().borrow_watched().clone()
    }

    /// The last position applied to this node's task state (what its reads see); cheaper than
    /// [`Node::status`].
    pub fn applied_position(&self) -> u64 {
        use openraft::type_config::async_runtime::WatchReceiver;
        self.raft
            .metrics()
            .borrow_watched()
            .last_applied
            .map_or(0, |id| position_of(id.index()).get())
    }

    /// This node's view of itself and the cluster.
    pub fn status(&self) -> NodeStatus {
        let metrics = self.metrics();
        let position = |log_id: Option<&crate::types::LogId>| {
            log_id.map_or(0, |id| position_of(id.index()).get())
        };
        let role = match metrics.state {
            ServerState::Leader => "leader",
            ServerState::Follower => "follower",
            ServerState::Candidate => "candidate",
            ServerState::Learner => "learner",
            ServerState::Shutdown => "shutdown",
        };
        let membership = metrics.membership_config.membership();
        NodeStatus {
            node_id: self.id,
            role: role.into(),
            term: metrics.current_term,
            leader: metrics.current_leader,
            last_position: metrics
                .last_log_index
                .map_or(0, |index| position_of(index).get()),
            committed_position: position(metrics.local_committed.as_ref()),
            applied_position: position(metrics.last_applied.as_ref()),
            members: membership
                .nodes()
                .map(|(id, node)| (*id, node.addr.clone()))
                .collect(),
            voters: membership.voter_ids().collect(),
            learners: membership.learner_ids().collect(),
            replication: metrics.replication.as_ref().map(|replication| {
                replication
                    .iter()
                    .map(|(id, matched)| (*id, position(matched.as_ref())))
                    .collect()
            }),
        }
    }

    /// Adds `id` at `address` as a learner (it receives the log, does not vote) and, when
    /// `wait`, returns once it has caught up with the leader. Leader only.
    ///
    /// # Errors
    /// [`NodeError::NotLeader`] on a follower, Raft's refusal.
    pub async fn add_learner(
        &self,
        id: NodeId,
        address: String,
        wait: bool,
    ) -> Result<(), NodeError> {
        self.raft
            .add_learner(id, BasicNode::new(address), wait)
            .await
            .map(drop)
            .map_err(write_error)
    }

    /// Makes `voters` the voting members (each must already be a member; a new one joins as a
    /// learner first). Voters removed stay as learners when `keep_as_learners`, else leave the
    /// cluster. Leader only; returns once the change is committed.
    ///
    /// # Errors
    /// [`NodeError::NotLeader`] on a follower, Raft's refusal (an unknown node, an empty set).
    pub async fn change_voters(
        &self,
        voters: BTreeSet<NodeId>,
        keep_as_learners: bool,
    ) -> Result<(), NodeError> {
        // A new voter that has not caught up (or cannot be reached) could leave the cluster
        // without a quorum that holds the log: refuse, and say how to add it safely.
        let status = self.status();
        if let Some(replication) = &status.replication {
            for id in voters.iter().filter(|id| !status.voters.contains(id)) {
                let holds = replication.get(id).copied().unwrap_or(0);
                if holds.saturating_add(VOTER_LAG_MAX) < status.last_position {
                    return Err(NodeError::Rejected(tasklog_engine::Error::InvalidArgument(
                        format!(
                            "node {id} holds the log up to {holds} of {}: add it as a learner \
                             and wait for it to catch up before making it a voter",
                            status.last_position
                        ),
                    )));
                }
            }
        }
        self.raft
            .change_membership(ChangeMembers::ReplaceAllVoters(voters), keep_as_learners)
            .await
            .map(drop)
            .map_err(write_error)
    }

    /// Removes `ids` from the cluster (voters and learners alike). Leader only.
    ///
    /// # Errors
    /// [`NodeError::NotLeader`] on a follower, Raft's refusal.
    pub async fn remove_nodes(&self, ids: BTreeSet<NodeId>) -> Result<(), NodeError> {
        let status = self.status();
        if !status.members.keys().any(|id| ids.contains(id)) {
            return Err(NodeError::Rejected(tasklog_engine::Error::InvalidArgument(
                format!(
                    "no node {ids:?} in the cluster (members: {:?})",
                    status.members.keys().collect::<Vec<_>>()
                ),
            )));
        }
        if status.voters.iter().all(|id| ids.contains(id)) {
            return Err(NodeError::Rejected(tasklog_engine::Error::InvalidArgument(
                "removing every voter would leave no cluster".into(),
            )));
        }
        if status.voters.iter().any(|id| ids.contains(id)) {
            let voters = status.voters.into_iter().filter(|id| !ids.contains(id));
            self.change_voters(voters.collect(), false).await?;
        }
        let learners: BTreeSet<NodeId> = self
            .status()
            .learners
            .into_iter()
            .filter(|id| ids.contains(id))
            .collect();
        if !learners.is_empty() {
            self.raft
                .change_membership(ChangeMembers::RemoveNodes(learners), false)
                .await
                .map_err(write_error)?;
        }
        Ok(())
    }

    /// Asks the leader to hand leadership to `to` (which then campaigns at once). Returns when
    /// the request is queued; watch [`Node::status`] for the outcome.
    ///
    /// # Errors
    /// [`NodeError::NotLeader`] when this node does not lead; Raft stopped.
    pub async fn transfer_leader(&self, to: NodeId) -> Result<(), NodeError> {
        let status = self.status();
        if to == self.id && status.leader == Some(self.id) {
            // Already there. (openraft would hold writes back waiting for a hand-over to itself
            // that never comes: found by the HTTP input test.)
            return Ok(());
        }
        if status.leader != Some(self.id) {
            return Err(NodeError::NotLeader {
                leader: status.leader,
                address: status
                    .leader
                    .and_then(|leader| status.members.get(&leader).cloned()),
            });
        }
        self.raft
            .trigger()
            .transfer_leader(to)
            .await
            .map_err(|e| NodeError::Raft(e.to_string()))
    }

    /// The local task store: reads answer from its applied state.
    pub fn store(&self) -> &Arc<TaskStore> {
        &self.store
    }

    /// Makes this node the first member of a new cluster of `members` (id → QUIC address).
    ///
    /// # Errors
    /// Raft's refusal (already initialized, …).
    pub async fn initialize(&self, members: BTreeMap<NodeId, String>) -> Result<(), NodeError> {
        let nodes: BTreeMap<NodeId, BasicNode> = members
            .into_iter()
            .map(|(id, addr)| (id, BasicNode::new(addr)))
            .collect();
        self.raft
            .initialize(nodes)
            .await
            .map_err(|e| NodeError::Raft(e.to_string()))
    }

    /// Writes through Raft: checks against this node's state, proposes, and returns once the
    /// write is committed and applied here. A write without an expected version that lost a race
    /// to its task at apply is prepared again (a few times); one with an expected version gets the
    /// conflict.
    ///
    /// # Errors
    /// [`NodeError::NotLeader`] on a follower, [`NodeError::Rejected`] with the engine's typed
    /// error, [`NodeError::Unknown`] when leadership changed mid-flight.
    pub async fn write(&self, write: Write) -> Result<Written, NodeError> {
        let retry = matches!(
            &write,
            Write::Append {
                expected_version: None,
                ..
            }
        );
        let mut attempt = 0;
        loop {
            attempt += 1;
            let prepared = match self.store.prepare(write.clone()) {
                Ok(prepared) => prepared,
                // A new leader may not have applied everything committed before its term yet:
                // before refusing on its state, catch up to a read index and look again.
                Err(error) if state_dependent(&error) && attempt == 1 => {
                    self.linearizable().await?;
                    continue;
                }
                Err(error) => return Err(error.into()),
            };
            let result = self
                .raft
                .client_write(Command::task_batch(prepared.payload))
                .await;
            match result {
                Ok(response) => match response.data {
                    Response::Written {
                        task_id,
                        version,
                        position,
                    } => {
                        return Ok(Written {
                            task_id,
                            version,
                            position: Position::new(position),
                        });
                    }
                    Response::Rejected(Rejection::VersionConflict { .. })
                        if retry && attempt < UNCONDITIONAL_ATTEMPTS =>
                    {
                        continue;
                    }
                    Response::Rejected(rejection) => {
                        return Err(NodeError::Rejected(rejection.into()));
                    }
                    Response::Ignored { position } => {
                        return Err(NodeError::Raft(format!(
                            "a task write at position {position} was applied as no task write"
                        )));
                    }
                },
                Err(error) => return Err(write_error(error)),
            }
        }
    }

    /// Leader only: proposes the deletes of up to `max` terminal tasks that `policy` says are too
    /// old or too many as of `now` (the leader's clock decides; the deletes are ordinary
    /// replicated writes, so every node applies the same decision). Each delete names the version
    /// that was judged, so a task that changed meanwhile is left alone. Returns how many were
    /// deleted; 0 on a node that is not the leader.
    ///
    /// # Errors
    /// [`NodeError::Raft`] when Raft stopped or storage failed. Losing leadership midway is no
    /// error: the sweep stops and the next leader's sweep goes on.
    pub async fn sweep_retention(
        &self,
        policy: &Retention,
        now: Timestamp,
        max: usize,
    ) -> Result<usize, NodeError> {
        if self.metrics().state != ServerState::Leader {
            return Ok(0);
        }
        let mut deleted = 0;
        for (task_id, version) in self.store.retention_due(policy, now, max) {
            let delete = Write::Append {
                task_id,
                expected_version: Some(version),
                events: vec![Event::Deleted],
            };
            match self.write(delete).await {
                Ok(_) => deleted += 1,
                Err(NodeError::Rejected(error)) if Retention::moved_on(&error) => {}
                Err(NodeError::NotLeader { .. } | NodeError::Unknown) => break,
                Err(error) => return Err(error),
            }
        }
        Ok(deleted)
    }

    /// Waits until this node has applied at least `position` (read-your-writes on any node: pass
    /// the position of the client's last write).
    ///
    /// # Errors
    /// [`NodeError::Timeout`].
    pub async fn wait_applied(
        &self,
        position: Position,
        timeout: Duration,
    ) -> Result<(), NodeError> {
        let Some(index) = position.get().checked_sub(1) else {
            return Ok(());
        };
        self.raft
            .wait(Some(timeout))
            .applied_index_at_least(Some(index), "wait applied")
            .await
            .map(drop)
            .map_err(|_| NodeError::Timeout(timeout))
    }

    /// A linearizable read point: confirms leadership with a quorum (read index) and waits until
    /// this node applied up to it. Reads after it see every write acknowledged before the call.
    ///
    /// # Errors
    /// [`NodeError::NotLeader`] on a follower, Raft errors.
    pub async fn linearizable(&self) -> Result<Position, NodeError> {
        let read = self
            .raft
            .ensure_linearizable(openraft::raft::ReadPolicy::ReadIndex)
            .await
            .map_err(|e| match e.forward_to_leader() {
                Some(forward) => NodeError::NotLeader {
                    leader: forward.leader_id,
                    address: forward.leader_node.as_ref().map(|n| n.addr.clone()),
                },
                None => NodeError::Raft(e.to_string()),
            })?;
        Ok(position_of(read.index()))
    }

    /// Stops Raft, makes the log durable and writes the engine's checkpoint.
    ///
    /// # Errors
    /// The first failure.
    pub async fn shutdown(self) -> Result<(), NodeError> {
        self.raft
            .shutdown()
            .await
            .map_err(|e| NodeError::Raft(e.to_string()))?;
        self.log
            .flush()
            .await
            .map_err(|e| NodeError::Raft(e.to_string()))?;
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.checkpoint().map(drop))
            .await
            .map_err(|e| NodeError::Raft(e.to_string()))??;
        Ok(())
    }
}

/// Whether a write refused before proposing was refused on state a lagging node may not have
/// caught up with yet.
fn state_dependent(error: &tasklog_engine::Error) -> bool {
    use tasklog_engine::Error;
    matches!(
        error,
        Error::TaskNotFound { .. }
            | Error::TaskExists { .. }
            | Error::VersionConflict { .. }
            | Error::TaskTerminal { .. }
            | Error::InvalidEvent { .. }
    )
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn write_error(error: RaftError<TypeConfig, ClientWriteError<TypeConfig>>) -> NodeError {
    match error {
        RaftError::APIError(ClientWriteError::ForwardToLeader(forward)) => NodeError::NotLeader {
            leader: forward.leader_id,
            address: forward.leader_node.map(|n| n.addr),
        },
        RaftError::APIError(ClientWriteError::LogEntryDiscarded(_)) => NodeError::Unknown,
        // A membership change that cannot be made (an unknown node, no voter left, a change in
        // progress): the request's fault, said as such.
        RaftError::APIError(ClientWriteError::ChangeMembershipError(error)) => {
            NodeError::Rejected(tasklog_engine::Error::InvalidArgument(error.to_string()))
        }
        other => NodeError::Raft(other.to_string()),
    }
}
