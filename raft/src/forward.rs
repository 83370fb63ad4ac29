//! Writes that reach a follower go to the leader (DESIGN.md §5: clients never see "not leader"
//! while the cluster has one).
//!
//! The follower sends the client's [`Write`] itself (not a prepared batch: the leader decides it
//! against its own state) over the node's mutual-TLS transport as one unary RPC of kind
//! [`KIND_FORWARD_WRITE`]; the leader writes it as a local client would and answers with a
//! [`ForwardReply`]. A leader that lost leadership meanwhile answers
//! [`ForwardReply::NotLeader`] without proposing anything, so the follower can safely try the
//! new leader. Only one hop: a node never forwards a forwarded write.
//!
//! [`NodeHandler`] is the transport handler of a node: forwarded writes here, every Raft RPC to
//! its [`RaftHandler`].

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tasklog_engine::write_wire::{decode_write, encode_write};
use tasklog_engine::{Position, Write, Written};

use crate::certs::node_server_name;
use crate::network::{
    BoxFuture, ChunkStream, Handler, HandlerResult, RaftHandler, RpcError, Transport,
};
use crate::node::{Node, NodeError};
use crate::types::{NodeId, Rejection};

/// Application kind of a forwarded write (the Raft RPCs use 0x01..=0x10).
pub const KIND_FORWARD_WRITE: u8 = 0x20;

/// Application kind of a read-index request: the leader confirms its leadership with a quorum
/// and answers with the position a linearizable read must wait for (empty payload).
pub const KIND_READ_INDEX: u8 = 0x21;

/// Version byte in front of every [`ForwardReply`].
const REPLY_VERSION: u8 = 1;

/// How long a write may wait for a leader (an election) before the caller hears that there is
/// none.
pub const LEADER_WAIT_DEFAULT: Duration = Duration::from_secs(5);

/// Deadline of one forwarded write: the leader's commit takes a quorum's fsync.
const FORWARD_DEADLINE: Duration = Duration::from_secs(10);

/// How long a forwarded call may still answer once another leader is known.
const CHANGED_GRACE: Duration = Duration::from_millis(100);

/// Pause between attempts while no leader is known.
const LEADER_POLL: Duration = Duration::from_millis(25);

/// The leader's answer to a forwarded write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ForwardReply {
    /// Committed and applied on the leader.
    Written {
        /// The task.
        task_id: String,
        /// Its version after the write.
        version: u64,
        /// The write's log position.
        position: u64,
    },
    /// Refused, typed.
    Rejected(Rejection),
    /// The receiver is not the leader (any more); nothing was proposed.
    NotLeader {
        /// The leader it knows of.
        leader: Option<NodeId>,
    },
    /// Leadership changed while the write was in flight: it may or may not have committed.
    Unknown,
    /// Raft or storage failed on the leader.
    Failed(String),
    /// The answer to [`KIND_READ_INDEX`]: a read that waits for this position is linearizable.
    ReadPoint {
        /// The position.
        position: u64,
    },
}

impl ForwardReply {
    fn encode(&self) -> HandlerResult {
        let bytes = vec![REPLY_VERSION];
        postcard::to_extend(self, bytes).map_err(|e| format!("encode forward reply: {e}"))
    }

    fn decode(bytes: &[u8]) -> Result<Self, String> {
        match bytes.split_first() {
            Some((&REPLY_VERSION, rest)) => {
                postcard::from_bytes(rest).map_err(|e| format!("bad forward reply: {e}"))
            }
            Some((version, _)) => Err(format!("forward reply version {version}")),
            None => Err("empty forward reply".into()),
        }
    }
}

impl From<Result<Written, NodeError>> for ForwardReply {
    fn from(result: Result<Written, NodeError>) -> Self {
        match result {
            Ok(written) => ForwardReply::Written {
                task_id: written.task_id,
                version: written.version,
                position: written.position.get(),
            },
            Err(NodeError::Rejected(error)) => ForwardReply::Rejected(error.into()),
            Err(NodeError::NotLeader { leader, .. }) => ForwardReply::NotLeader { leader },
            Err(NodeError::Unknown) => ForwardReply::Unknown,
            Err(other) => ForwardReply::Failed(other.to_string()),
        }
    }
}

/// A node's transport handler: forwarded writes and Raft RPCs.
pub struct NodeHandler {
    node: Node,
    raft: RaftHandler<crate::StateMachine>,
}

impl NodeHandler {
    /// Serves `node`: its Raft RPCs through `raft`, forwarded writes through the node.
    pub fn new(node: Node, raft: RaftHandler<crate::StateMachine>) -> Self {
        NodeHandler { node, raft }
    }
}

impl Handler for NodeHandler {
    fn call(&self, kind: u8, payload: Vec<u8>) -> BoxFuture<HandlerResult> {
        let node = self.node.clone();
        match kind {
            KIND_FORWARD_WRITE => Box::pin(async move {
                let reply = match decode_write(&payload) {
                    Ok(write) => ForwardReply::from(node.write(write).await),
                    Err(error) => ForwardReply::Rejected(error.into()),
                };
                reply.encode()
            }),
            KIND_READ_INDEX => Box::pin(async move {
                let reply = match node.linearizable().await {
                    Ok(position) => ForwardReply::ReadPoint {
                        position: position.get(),
                    },
                    Err(error) => ForwardReply::from(Err(error)),
                };
                reply.encode()
            }),
            _ => self.raft.call(kind, payload),
        }
    }

    fn stream(&self, kind: u8, header: Vec<u8>, chunks: ChunkStream) -> BoxFuture<HandlerResult> {
        self.raft.stream(kind, header, chunks)
    }
}

/// Sends writes that reach a follower to the leader, over the node's transport.
#[derive(Clone)]
pub struct Forwarder {
    node: Node,
    transport: Transport,
    leader_wait: Duration,
}

impl Forwarder {
    /// Forwards `node`'s writes over `transport` (the one its Raft network uses), waiting up to
    /// `leader_wait` for a leader.
    pub fn new(node: Node, transport: Transport, leader_wait: Duration) -> Self {
        Forwarder {
            node,
            transport,
            leader_wait,
        }
    }

    /// The node writes go through.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// Writes on this node if it leads, else on the leader; waits (up to the leader wait) while
    /// there is none or it just changed.
    ///
    /// # Errors
    /// [`NodeError::NotLeader`] with `leader: None` when no leader appeared in time (the server
    /// answers 503 with Retry-After); [`NodeError::Rejected`]; [`NodeError::Unknown`] when the
    /// write may or may not have committed (leadership changed in flight, or the forwarded call
    /// timed out or lost its connection after sending).
    pub async fn write(&self, write: Write) -> Result<Written, NodeError> {
        let give_up = Instant::now() + self.leader_wait;
        let mut encoded = None;
        loop {
            let (leader, address) = match self.node.write(write.clone()).await {
                Err(NodeError::NotLeader { leader, address }) => (leader, address),
                other => return other,
            };
            // A leader naming itself is between terms or handing over: wait, never call itself.
            let leader = leader.filter(|&leader| leader != self.node.id());
            if let (Some(leader), Some(address)) = (leader, address) {
                let bytes = match &encoded {
                    Some(bytes) => bytes,
                    None => encoded.insert(encode_write(&write)?),
                };
                match self.forward(leader, &address, bytes.clone()).await {
                    Ok(ForwardReply::Written {
                        task_id,
                        version,
                        position,
                    }) => {
                        return Ok(Written {
                            task_id,
                            version,
                            position: Position::new(position),
                        });
                    }
                    Ok(ForwardReply::Rejected(rejection)) => {
                        return Err(NodeError::Rejected(rejection.into()));
                    }
                    Ok(ForwardReply::Unknown) => return Err(NodeError::Unknown),
                    Ok(ForwardReply::Failed(reason)) => return Err(NodeError::Raft(reason)),
                    // Nothing was proposed: look for the leader again.
                    Ok(ForwardReply::NotLeader { .. }) | Err(Retry::NotSent) => {}
                    Ok(ForwardReply::ReadPoint { .. }) => {
                        return Err(NodeError::Raft(
                            "the leader answered a write with a read point".into(),
                        ));
                    }
                    Err(Retry::MaybeSent(reason)) => {
                        tracing::warn!(leader, %reason, "forwarded write's outcome unknown");
                        return Err(NodeError::Unknown);
                    }
                    Err(Retry::Broken(reason)) => return Err(NodeError::Raft(reason)),
                }
            }
            if Instant::now() >= give_up {
                return Err(NodeError::NotLeader {
                    leader: None,
                    address: None,
                });
            }
            tokio::time::sleep(LEADER_POLL).await;
        }
    }

    /// A linearizable read point from any node: this node's read index if it leads, else the
    /// leader's; then waits until this node has applied up to it. Reads after it see every write
    /// acknowledged before the call.
    ///
    /// # Errors
    /// [`NodeError::NotLeader`] with `leader: None` when no leader appeared in time,
    /// [`NodeError::Timeout`] when this node did not apply up to the point in time, Raft errors.
    pub async fn read_point(&self) -> Result<Position, NodeError> {
        let give_up = Instant::now() + self.leader_wait;
        loop {
            let (leader, address) = match self.node.linearizable().await {
                Err(NodeError::NotLeader { leader, address }) => (leader, address),
                other => return other,
            };
            // A leader naming itself is between terms or handing over: wait, never call itself.
            let leader = leader.filter(|&leader| leader != self.node.id());
            if let (Some(leader), Some(address)) = (leader, address) {
                match self
                    .call(leader, &address, KIND_READ_INDEX, Vec::new())
                    .await
                {
                    Ok(ForwardReply::ReadPoint { position }) => {
                        let position = Position::new(position);
                        let left = give_up.saturating_duration_since(Instant::now());
                        self.node
                            .wait_applied(position, left.max(LEADER_WAIT_DEFAULT))
                            .await?;
                        return Ok(position);
                    }
                    Ok(ForwardReply::Failed(reason)) => return Err(NodeError::Raft(reason)),
                    Err(Retry::Broken(reason)) => return Err(NodeError::Raft(reason)),
                    // Not the leader any more, or unreachable, or slow: a read point is safe to
                    // ask again.
                    Ok(_) | Err(Retry::NotSent | Retry::MaybeSent(_)) => {}
                }
            }
            if Instant::now() >= give_up {
                return Err(NodeError::NotLeader {
                    leader: None,
                    address: None,
                });
            }
            tokio::time::sleep(LEADER_POLL).await;
        }
    }

    async fn forward(
        &self,
        leader: NodeId,
        address: &str,
        bytes: Vec<u8>,
    ) -> Result<ForwardReply, Retry> {
        self.call(leader, address, KIND_FORWARD_WRITE, bytes).await
    }

    async fn call(
        &self,
        leader: NodeId,
        address: &str,
        kind: u8,
        bytes: Vec<u8>,
    ) -> Result<ForwardReply, Retry> {
        let addr = address
            .parse()
            .map_err(|e| Retry::Broken(format!("leader {leader}'s address {address:?}: {e}")))?;
        let peer = self
            .transport
            .peer(addr, &node_server_name(leader))
            .map_err(|e| Retry::Broken(e.to_string()))?;
        // A leader that dies with the call in flight never answers; this node learns of its
        // successor within an election timeout, and the call's outcome is then unknown (it may
        // have committed before the leader died), so there is no point waiting longer.
        let raft = self.node.raft().clone();
        let term = self.node.metrics().current_term;
        let leader_changed = async move {
            // Another leader known, or a newer term: not a leader view that merely blinks
            // (a restarted node forgets and relearns its leader).
            let changed = raft
                .wait(None)
                .metrics(
                    move |m| m.current_term > term || m.current_leader.is_some_and(|l| l != leader),
                    "leader changed",
                )
                .await;
            if changed.is_err() {
                // Raft stopped: let the call's own deadline decide.
                std::future::pending::<()>().await;
            }
        };
        let call = peer.call(kind, bytes, FORWARD_DEADLINE);
        tokio::pin!(call);
        let answer = tokio::select! {
            answer = &mut call => answer,
            () = leader_changed => {
                // A leader that is still alive (the change was seen here first) answers at once.
                match tokio::time::timeout(CHANGED_GRACE, &mut call).await {
                    Ok(answer) => answer,
                    Err(_) => {
                        return Err(Retry::MaybeSent(format!(
                            "leader {leader} was replaced while the request was in flight"
                        )));
                    }
                }
            }
        };
        match answer {
            Ok(reply) => ForwardReply::decode(&reply).map_err(Retry::MaybeSent),
            Err(RpcError::Unreachable { .. } | RpcError::Tls { .. } | RpcError::Refused { .. }) => {
                Err(Retry::NotSent)
            }
            Err(other) => Err(Retry::MaybeSent(other.to_string())),
        }
    }
}

/// What a failed forward means for a retry.
enum Retry {
    /// The leader never handled it: try again.
    NotSent,
    /// It may have been handled.
    MaybeSent(String),
    /// It cannot be sent (the transport is shut down, the leader's address is not one).
    Broken(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_round_trip_and_bad_bytes_are_errors() {
        let replies = [
            ForwardReply::Written {
                task_id: "t".into(),
                version: 3,
                position: 9,
            },
            ForwardReply::Rejected(Rejection::TaskNotFound {
                task_id: "t".into(),
            }),
            ForwardReply::NotLeader { leader: Some(2) },
            ForwardReply::Unknown,
            ForwardReply::Failed("disk".into()),
            ForwardReply::ReadPoint { position: 12 },
        ];
        for reply in replies {
            let bytes = reply.encode().unwrap();
            assert_eq!(ForwardReply::decode(&bytes).unwrap(), reply);
        }
        assert!(ForwardReply::decode(&[]).is_err());
        assert!(ForwardReply::decode(&[9, 0]).is_err());
        assert!(ForwardReply::decode(&[REPLY_VERSION, 0xff, 0xff]).is_err());
    }
}
