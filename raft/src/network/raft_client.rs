//! The sending side of openraft's network over the QUIC transport: [`QuicNetworkFactory`] gives
//! openraft one [`QuicNetwork`] per target node, which encodes each RPC
//! ([`raft_wire`]), sends it on its own stream of the target's cached
//! connection, and maps the transport's errors to openraft's.
//!
//! Deadlines: unary RPCs (appends and heartbeats, votes, pre-votes, leader transfer) use
//! [`RPCOption::soft_ttl`], as openraft asks, so the network reports a timeout before openraft
//! may drop the call at the hard TTL. A snapshot is streamed with no overall deadline: each step
//! (connect, read the file, write to the peer) may make no progress for at most
//! `max(soft_ttl, RaftNetworkOptions::snapshot_idle_timeout)`, then the receiver has
//! `snapshot_response_timeout` to install it and answer; the transfer also ends when openraft's
//! `cancel` future fires.
//!
//! Error mapping (openraft backs off after `Unreachable`, retries a `Network` error a few times
//! at once, and treats `Timeout` as a slow peer):
//!
//! | transport                                                   | openraft                |
//! |-------------------------------------------------------------|-------------------------|
//! | `Unreachable`, `Tls`, `Refused(ShuttingDown)`, `Shutdown`, bad address | `Unreachable` |
//! | `Timeout`, `Stalled`                                        | `Timeout` (action, source, target, bound) |
//! | everything else, and a `Reply::RaftError` from the peer     | `Network`               |
//!
//! A peer that could not read our request answers with a handler error (`RpcError::Remote`),
//! which also becomes `Network`.
//!
//! This module sees openraft's messages and [`SnapshotFile`] paths only, never the engine.

use std::net::SocketAddr;
use std::time::Duration;

use openraft::StorageError;
use openraft::error::{
    NetworkError, RPCError, ReplicationClosed, StreamingError, Timeout, Unreachable,
};
use openraft::network::{RPCOption, RPCTypes, RaftNetworkFactory, v2::RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::type_config::TypeConfigExt;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::client::Peer;
use super::error::RpcError;
use super::options::{CHUNK_BYTES_DEFAULT, StreamOptions};
use super::raft_wire::{
    self, CodecError, KIND_APPEND_ENTRIES, KIND_FULL_SNAPSHOT, KIND_PRE_VOTE, KIND_TRANSFER_LEADER,
    KIND_VOTE, Reply, SnapshotHeader,
};
use super::transport::Transport;
use super::wire::Refusal;
use crate::certs::node_server_name;
use crate::snapshot::SnapshotFile;
use crate::types::{NodeId, Snapshot, TypeConfig, Vote};

/// How snapshots are streamed (unary RPCs take their deadline from openraft).
#[derive(Debug, Clone)]
pub struct RaftNetworkOptions {
    /// The least no-progress bound of a snapshot transfer; openraft's `soft_ttl` raises it.
    /// openraft's `install_snapshot_timeout` (200 ms by default) is tuned for one in-memory
    /// chunk, too tight for a disk read on a busy machine, so this floor keeps a slow but moving
    /// transfer alive.
    pub snapshot_idle_timeout: Duration,
    /// After the last byte, how long the receiver may take to install the snapshot and answer.
    pub snapshot_response_timeout: Duration,
    /// Bytes per chunk of a snapshot (at most the receiver's `chunk_bytes_max`).
    pub snapshot_chunk_bytes: u32,
}

impl Default for RaftNetworkOptions {
    fn default() -> Self {
        Self {
            snapshot_idle_timeout: Duration::from_secs(10),
            snapshot_response_timeout: Duration::from_secs(120),
            snapshot_chunk_bytes: CHUNK_BYTES_DEFAULT,
        }
    }
}

/// openraft's network factory over a [`Transport`]: one [`QuicNetwork`] per target, all sharing
/// the transport's cached connection to that target.
#[derive(Debug, Clone)]
pub struct QuicNetworkFactory {
    id: NodeId,
    transport: Transport,
    options: RaftNetworkOptions,
}

impl QuicNetworkFactory {
    /// The factory of node `id` (named as the source in openraft's timeout errors), sending
    /// through `transport`.
    pub fn new(id: NodeId, transport: Transport) -> Self {
        Self {
            id,
            transport,
            options: RaftNetworkOptions::default(),
        }
    }

    /// The same factory with these snapshot options.
    pub fn with_options(mut self, options: RaftNetworkOptions) -> Self {
        self.options = options;
        self
    }

    /// A client to `target` at `addr` (a `SocketAddr`, e.g. `"127.0.0.1:7001"`), whose
    /// certificate must name `target` ([`node_server_name`]). A bad address gives a client whose
    /// every call fails with `Unreachable`.
    pub fn client(&self, target: NodeId, addr: &str) -> QuicNetwork {
        let peer = addr
            .parse::<SocketAddr>()
            .map_err(|e| format!("node {target}: address {addr:?} is not a socket address: {e}"))
            .and_then(|addr| {
                self.transport
                    .peer(addr, &node_server_name(target))
                    .map_err(|e| format!("node {target}: {e}"))
            });
        if let Err(reason) = &peer {
            tracing::warn!(target, %reason, "no client for this member");
        }
        QuicNetwork {
            id: self.id,
            target,
            peer,
            message_bytes_max: self.transport.options().message_bytes_max,
            options: self.options.clone(),
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for QuicNetworkFactory {
    type Network = QuicNetwork;

    async fn new_client(
        &mut self,
        target: NodeId,
        node: &openraft::impls::BasicNode,
    ) -> QuicNetwork {
        self.client(target, &node.addr)
    }
}

/// One node's client to another over QUIC: openraft's `RaftNetworkV2`.
#[derive(Debug)]
pub struct QuicNetwork {
    id: NodeId,
    target: NodeId,
    /// The target's peer, or why there is none (bad address or server name).
    peer: Result<Peer, String>,
    message_bytes_max: u32,
    options: RaftNetworkOptions,
}

impl QuicNetwork {
    /// The node this client talks to.
    pub fn target(&self) -> NodeId {
        self.target
    }

    fn peer(&self) -> Result<&Peer, RPCError<TypeConfig>> {
        self.peer
            .as_ref()
            .map_err(|reason| RPCError::Unreachable(Unreachable::from_string(reason)))
    }

    /// One unary RPC: encode, call within `soft_ttl`, decode the reply.
    async fn call<Req, Resp>(
        &self,
        kind: u8,
        action: RPCTypes,
        request: &Req,
        option: &RPCOption,
        what: &'static str,
    ) -> Result<Resp, RPCError<TypeConfig>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
    {
        let peer = self.peer()?;
        let bytes = raft_wire::encode(request, self.message_bytes_max, what)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let deadline = option.soft_ttl();
        let answer = peer
            .call(kind, bytes, deadline)
            .await
            .map_err(|e| self.rpc_error(action, &e))?;
        self.reply(&answer, what)
    }

    fn reply<Resp: DeserializeOwned>(
        &self,
        answer: &[u8],
        what: &'static str,
    ) -> Result<Resp, RPCError<TypeConfig>> {
        match raft_wire::decode::<Reply<Resp>>(answer, what) {
            Ok(Reply::Ok(response)) => Ok(response),
            Ok(Reply::RaftError(message)) => Err(RPCError::Network(NetworkError::from_string(
                format!("node {}: raft failed: {message}", self.target),
            ))),
            Err(error) => Err(RPCError::Network(NetworkError::new(&error))),
        }
    }

    /// openraft's view of a transport failure (table in the module docs).
    fn rpc_error(&self, action: RPCTypes, error: &RpcError) -> RPCError<TypeConfig> {
        let timeout = |after: Duration| {
            RPCError::Timeout(Timeout {
                action,
                id: self.id,
                target: self.target,
                timeout: after,
            })
        };
        match error {
            RpcError::Unreachable { .. } | RpcError::Tls { .. } | RpcError::Shutdown => {
                RPCError::Unreachable(Unreachable::new(error))
            }
            RpcError::Refused {
                refusal: Refusal::ShuttingDown,
                ..
            } => RPCError::Unreachable(Unreachable::new(error)),
            RpcError::Timeout { after, .. } => timeout(*after),
            RpcError::Stalled { idle, .. } => timeout(*idle),
            RpcError::ConnectionLost { .. }
            | RpcError::Remote { .. }
            | RpcError::Refused { .. }
            | RpcError::TooLarge { .. }
            | RpcError::Decode { .. }
            | RpcError::Invalid { .. }
            | RpcError::Source { .. } => RPCError::Network(NetworkError::new(error)),
        }
    }

    /// Streams `snapshot` with `vote` as the header; no cancellation here (the caller races it).
    async fn send_snapshot(
        &self,
        vote: Vote,
        snapshot: Snapshot,
        option: &RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let peer = self.peer()?;
        let signature = snapshot.meta.signature();
        let storage = |e: std::io::Error| {
            StreamingError::StorageError(StorageError::read_snapshot(
                Some(signature.clone()),
                TypeConfig::err_from_error(&e),
            ))
        };
        let file = tokio::fs::File::open(&snapshot.snapshot.path)
            .await
            .map_err(storage)?;
        let snapshot_bytes = file.metadata().await.map_err(storage)?.len();
        let header = SnapshotHeader {
            vote,
            meta: snapshot.meta,
            snapshot_bytes,
        };
        let header = raft_wire::encode(&header, self.message_bytes_max, "snapshot header")
            .map_err(|e| StreamingError::Network(NetworkError::new(&e)))?;
        let stream_options = StreamOptions {
            idle_timeout: option.soft_ttl().max(self.options.snapshot_idle_timeout),
            response_timeout: self.options.snapshot_response_timeout,
            chunk_bytes: self.options.snapshot_chunk_bytes,
        };
        let answer = peer
            .send_stream(KIND_FULL_SNAPSHOT, header, file, &stream_options)
            .await
            .map_err(|e| self.rpc_error(RPCTypes::InstallSnapshot, &e))?;
        Ok(self.reply(&answer, "snapshot response")?)
    }
}

impl RaftNetworkV2<TypeConfig> for QuicNetwork {
    type SnapshotData = SnapshotFile;

    async fn append_entries(
        &mut self,
        mut rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let peer = self.peer()?;
        let what = "append entries";
        // A batch over the message cap is cut in halves until its first part fits (at most
        // 64 halvings of a `usize` count), sent, and reported as the partial success openraft
        // allows; openraft then sends the rest. A single entry over the cap cannot be sent.
        let mut partial = false;
        let mut bytes = None;
        for _ in 0..=usize::BITS {
            match raft_wire::encode(&rpc, self.message_bytes_max, what) {
                Ok(encoded) => {
                    bytes = Some(encoded);
                    break;
                }
                Err(CodecError::TooLarge { .. }) if rpc.entries.len() > 1 => {
                    let keep = rpc.entries.len() / 2;
                    rpc.entries.truncate(keep);
                    partial = true;
                }
                Err(error) => return Err(RPCError::Network(NetworkError::new(&error))),
            }
        }
        let bytes = bytes.ok_or_else(|| {
            RPCError::Network(NetworkError::from_string("append entries: no batch fits"))
        })?;
        let deadline = option.soft_ttl();
        let answer = peer
            .call(KIND_APPEND_ENTRIES, bytes, deadline)
            .await
            .map_err(|e| self.rpc_error(RPCTypes::AppendEntries, &e))?;
        let response = self.reply(&answer, what)?;
        Ok(match response {
            AppendEntriesResponse::Success if partial => {
                AppendEntriesResponse::PartialSuccess(rpc.entries.last().map(|entry| entry.log_id))
            }
            other => other,
        })
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(KIND_VOTE, RPCTypes::Vote, &rpc, &option, "vote")
            .await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(KIND_PRE_VOTE, RPCTypes::Vote, &rpc, &option, "pre-vote")
            .await
    }

    async fn transfer_leader(
        &mut self,
        rpc: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(
            KIND_TRANSFER_LEADER,
            RPCTypes::TransferLeader,
            &rpc,
            &option,
            "transfer leader",
        )
        .await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + openraft::OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        // Dropping the transfer is safe: the receiver sees it end without its END envelope and
        // deletes what it had received.
        tokio::select! {
            result = self.send_snapshot(vote, snapshot, &option) => result,
            closed = cancel => Err(StreamingError::Closed(closed)),
        }
    }
}

#[cfg(test)]
mod tests {
    use openraft::impls::BasicNode;

    use super::*;
    use crate::certs::ClusterCa;
    use crate::network::{TlsMaterial, TransportOptions};
    use crate::types::LogId;

    fn transport() -> Transport {
        let ca = ClusterCa::generate().unwrap();
        let node = ca.issue_node(1, &[]).unwrap();
        let tls = TlsMaterial::from_pem(ca.cert_pem(), &node.cert_pem, &node.key_pem).unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], 0));
        Transport::bind(addr, &tls, TransportOptions::default()).unwrap()
    }

    #[tokio::test]
    async fn a_bad_address_gives_a_client_whose_calls_are_unreachable() {
        let mut factory = QuicNetworkFactory::new(1, transport());
        let option = RPCOption::new(Duration::from_secs(1));
        for addr in ["", "node-2", "127.0.0.1", "127.0.0.1:port", "[::1]"] {
            let mut client = factory.new_client(2, &BasicNode::new(addr)).await;
            assert_eq!(client.target(), 2);
            let request = VoteRequest::new(Vote::new(1, 1), None);
            let error = client.vote(request, option.clone()).await.unwrap_err();
            assert!(matches!(error, RPCError::Unreachable(_)), "{addr}: {error}");
            let request = AppendEntriesRequest {
                vote: Vote::new_committed(1, 1),
                prev_log_id: None,
                entries: Vec::new(),
                leader_commit: None,
            };
            let error = client
                .append_entries(request, option.clone())
                .await
                .unwrap_err();
            assert!(matches!(error, RPCError::Unreachable(_)), "{addr}: {error}");
            let snapshot = Snapshot {
                meta: Default::default(),
                snapshot: SnapshotFile {
                    path: "/nonexistent".into(),
                },
            };
            let error = client
                .full_snapshot(
                    Vote::new_committed(1, 1),
                    snapshot,
                    std::future::pending(),
                    option.clone(),
                )
                .await
                .unwrap_err();
            assert!(
                matches!(error, StreamingError::Unreachable(_)),
                "{addr}: {error}"
            );
        }
    }

    #[tokio::test]
    async fn transport_errors_map_to_openraft_errors_by_the_table() {
        let client = QuicNetworkFactory::new(1, transport()).client(2, "bad");
        let peer = SocketAddr::from(([127, 0, 0, 1], 7002));
        let reason = String::new;
        let unreachable = [
            RpcError::Unreachable {
                peer,
                reason: reason(),
            },
            RpcError::Tls {
                peer,
                reason: reason(),
            },
            RpcError::Shutdown,
            RpcError::Refused {
                peer,
                refusal: Refusal::ShuttingDown,
                message: reason(),
            },
        ];
        for error in &unreachable {
            let mapped = client.rpc_error(RPCTypes::Vote, error);
            assert!(matches!(mapped, RPCError::Unreachable(_)), "{error}");
        }
        let after = Duration::from_millis(75);
        for error in [
            RpcError::Timeout { peer, after },
            RpcError::Stalled { peer, idle: after },
        ] {
            let mapped = client.rpc_error(RPCTypes::AppendEntries, &error);
            assert!(
                matches!(
                    &mapped,
                    RPCError::Timeout(Timeout { action: RPCTypes::AppendEntries, id: 1, target: 2, timeout })
                        if *timeout == after
                ),
                "{error} -> {mapped}"
            );
        }
        let network = [
            RpcError::ConnectionLost {
                peer,
                reason: reason(),
            },
            RpcError::Remote {
                peer,
                message: reason(),
            },
            RpcError::Refused {
                peer,
                refusal: Refusal::Malformed,
                message: reason(),
            },
            RpcError::TooLarge { len: 2, max: 1 },
        ];
        for error in &network {
            let mapped = client.rpc_error(RPCTypes::Vote, error);
            assert!(matches!(mapped, RPCError::Network(_)), "{error}");
        }
    }

    #[tokio::test]
    async fn a_remote_raft_error_is_a_network_error_and_garbage_too() {
        let client = QuicNetworkFactory::new(1, transport()).client(2, "bad");
        let what = "vote";
        let failed = raft_wire::encode(
            &Reply::<VoteResponse<TypeConfig>>::RaftError("stopped".into()),
            u32::MAX,
            what,
        )
        .unwrap();
        let error = client
            .reply::<VoteResponse<TypeConfig>>(&failed, what)
            .unwrap_err();
        assert!(
            matches!(&error, RPCError::Network(_)) && error.to_string().contains("stopped"),
            "{error}"
        );
        let error = client
            .reply::<VoteResponse<TypeConfig>>(&[raft_wire::FORMAT_VERSION, 9], what)
            .unwrap_err();
        assert!(matches!(error, RPCError::Network(_)), "{error}");
        let ok = raft_wire::encode(
            &Reply::Ok(VoteResponse::<TypeConfig>::new(
                Vote::new(2, 2),
                Some(LogId::new_term_index(1, 3)),
                true,
            )),
            u32::MAX,
            what,
        )
        .unwrap();
        let response = client.reply::<VoteResponse<TypeConfig>>(&ok, what).unwrap();
        assert!(response.vote_granted);
    }
}
