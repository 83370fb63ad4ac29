//! An in-process network for simulation tests (feature `testing`): nodes call each other's Raft
//! handles directly, through a router that can cut links, drop messages and delay them, driven by
//! a seeded RNG so that a failing schedule replays from its seed.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use openraft::error::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, v2::RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};

use crate::node::Raft;
use crate::types::{NodeId, Snapshot, TypeConfig, Vote};

/// A small deterministic RNG (xorshift64*), enough for schedules and fault choices.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded (a zero seed is replaced, xorshift needs a nonzero state).
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    /// True with probability `per_mille / 1000`.
    pub fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
}

struct State {
    nodes: BTreeMap<NodeId, Raft>,
    /// Directed links that deliver nothing.
    cut: HashSet<(NodeId, NodeId)>,
    /// Messages dropped, per thousand.
    drop_per_mille: u64,
    /// Largest delay added to a message.
    delay_max: Duration,
    rng: Rng,
}

/// The in-process network all simulated nodes share.
#[derive(Clone)]
pub struct Router {
    state: Arc<Mutex<State>>,
}

impl Router {
    /// A router whose faults draw from `seed`.
    pub fn new(seed: u64) -> Self {
        Router {
            state: Arc::new(Mutex::new(State {
                nodes: BTreeMap::new(),
                cut: HashSet::new(),
                drop_per_mille: 0,
                delay_max: Duration::ZERO,
                rng: Rng::new(seed),
            })),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The network factory for node `id`.
    pub fn factory(&self, id: NodeId) -> RouterFactory {
        RouterFactory {
            source: id,
            router: self.clone(),
        }
    }

    /// Makes node `id` reachable through `raft`.
    pub fn add(&self, id: NodeId, raft: Raft) {
        self.state().nodes.insert(id, raft);
    }

    /// Makes node `id` unreachable (it stopped).
    pub fn remove(&self, id: NodeId) {
        self.state().nodes.remove(&id);
    }

    /// Cuts every link between `id` and the others, both ways.
    pub fn isolate(&self, id: NodeId, all: &[NodeId]) {
        let mut state = self.state();
        for other in all.iter().copied().filter(|o| *o != id) {
            state.cut.insert((id, other));
            state.cut.insert((other, id));
        }
    }

    /// Restores every link.
    pub fn heal(&self) {
        self.state().cut.clear();
    }

    /// Drops this many messages per thousand and delays each by up to `delay_max`.
    pub fn set_faults(&self, drop_per_mille: u64, delay_max: Duration) {
        let mut state = self.state();
        state.drop_per_mille = drop_per_mille;
        state.delay_max = delay_max;
    }

    /// Where a message from `source` to `target` goes: the target's handle after the delay, or
    /// `Unreachable` (cut link, dropped message, stopped node).
    async fn route(&self, source: NodeId, target: NodeId) -> Result<Raft, Unreachable<TypeConfig>> {
        let (raft, delay) = {
            let mut state = self.state();
            let dropped = state.cut.contains(&(source, target)) || {
                let per_mille = state.drop_per_mille;
                state.rng.chance(per_mille)
            };
            let delay_max = u64::try_from(state.delay_max.as_micros()).unwrap_or(u64::MAX);
            let delay = Duration::from_micros(state.rng.below(delay_max.saturating_add(1)));
            let raft = state.nodes.get(&target).cloned().filter(|_| !dropped);
            (raft, delay)
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        raft.ok_or_else(|| Unreachable::from_string(format!("{source} -> {target}: unreachable")))
    }
}

/// Creates clients from one node to the others.
pub struct RouterFactory {
    source: NodeId,
    router: Router,
}

impl RaftNetworkFactory<TypeConfig> for RouterFactory {
    type Network = RouterClient;

    async fn new_client(
        &mut self,
        target: NodeId,
        _node: &openraft::impls::BasicNode,
    ) -> RouterClient {
        RouterClient {
            source: self.source,
            target,
            router: self.router.clone(),
        }
    }
}

/// One node's client to another, over the router.
pub struct RouterClient {
    source: NodeId,
    target: NodeId,
    router: Router,
}

fn remote<E: std::error::Error + 'static>(error: &E) -> RPCError<TypeConfig> {
    RPCError::Network(NetworkError::new(error))
}

impl RaftNetworkV2<TypeConfig> for RouterClient {
    type SnapshotData = crate::snapshot::SnapshotFile;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let raft = self.router.route(self.source, self.target).await?;
        let response = raft.append_entries(rpc).await.map_err(|e| remote(&e))?;
        // The reply crosses the network too.
        self.router.route(self.target, self.source).await?;
        Ok(response)
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        let raft = self.router.route(self.source, self.target).await?;
        let response = raft.vote(rpc).await.map_err(|e| remote(&e))?;
        self.router.route(self.target, self.source).await?;
        Ok(response)
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        let raft = self.router.route(self.source, self.target).await?;
        let response = raft.pre_vote(rpc).await.map_err(|e| remote(&e))?;
        self.router.route(self.target, self.source).await?;
        Ok(response)
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        _cancel: impl Future<Output = ReplicationClosed> + openraft::OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let raft = self.router.route(self.source, self.target).await?;
        let response = raft
            .install_full_snapshot(vote, snapshot)
            .await
            .map_err(|e| StreamingError::Network(NetworkError::new(&e)))?;
        self.router.route(self.target, self.source).await?;
        Ok(response)
    }
}
