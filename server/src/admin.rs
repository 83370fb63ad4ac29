//! `tasklog status` and `tasklog member …`: a running cluster seen and changed from the command
//! line, over the nodes' HTTP API. Membership changes go to whichever of the given nodes leads.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use tasklog_raft::NodeId;
use tasklog_raft::node::NodeStatus;

use crate::client::Client;
use crate::http::{AddLearnerRequest, VotersRequest};

/// Deadline of one call (adding a learner with `--wait` waits for it to catch up).
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Which nodes to ask.
#[derive(Debug, Clone, Args)]
pub struct NodesArg {
    /// Node HTTP URLs, comma-separated (any of them will do for reads; changes go to the
    /// leader among them).
    #[arg(long, value_delimiter = ',', required = true, num_args = 1..)]
    pub nodes: Vec<String>,
}

/// `tasklog member`'s operations.
#[derive(Debug, Clone, Subcommand)]
pub enum MemberCommand {
    /// Add a node as a learner (it receives the log and does not vote).
    AddLearner {
        /// Which nodes to ask.
        #[command(flatten)]
        nodes: NodesArg,
        /// The new node's id.
        #[arg(long)]
        id: NodeId,
        /// Its QUIC address.
        #[arg(long)]
        addr: String,
        /// Return only once it has caught up.
        #[arg(long)]
        wait: bool,
    },
    /// Make these nodes the voters (new ones must be caught-up learners).
    SetVoters {
        /// Which nodes to ask.
        #[command(flatten)]
        nodes: NodesArg,
        /// The voters, comma-separated.
        #[arg(long, value_delimiter = ',', required = true, num_args = 1..)]
        voters: Vec<NodeId>,
        /// Keep voters left out as learners (else they leave the cluster).
        #[arg(long)]
        keep_as_learners: bool,
    },
    /// Remove a node from the cluster.
    Remove {
        /// Which nodes to ask.
        #[command(flatten)]
        nodes: NodesArg,
        /// The node.
        #[arg(long)]
        id: NodeId,
    },
    /// Hand leadership to another voter.
    TransferLeader {
        /// Which nodes to ask.
        #[command(flatten)]
        nodes: NodesArg,
        /// The voter to lead.
        #[arg(long)]
        to: NodeId,
    },
}

/// A table of every given node's status.
pub fn status(nodes: &NodesArg) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<28} {:>4} {:<9} {:>5} {:>7} {:>10} {:>10} {:>10}  members",
        "node", "id", "role", "term", "leader", "last", "committed", "applied"
    );
    for url in &nodes.nodes {
        match Client::new(url.clone(), CALL_TIMEOUT).status() {
            Ok(s) => {
                let _ = writeln!(
                    out,
                    "{url:<28} {:>4} {:<9} {:>5} {:>7} {:>10} {:>10} {:>10}  voters {:?}, learners {:?}",
                    s.node_id,
                    s.role,
                    s.term,
                    s.leader.map_or_else(|| "-".into(), |l| l.to_string()),
                    s.last_position,
                    s.committed_position,
                    s.applied_position,
                    s.voters,
                    s.learners,
                );
            }
            Err(error) => {
                let _ = writeln!(out, "{url:<28} unreachable: {error}");
            }
        }
    }
    out
}

/// Runs a membership operation on the leader among the given nodes; returns its status after.
///
/// # Errors
/// No leader among the nodes, or the leader's refusal (typed, with its reason).
pub fn member(command: &MemberCommand) -> anyhow::Result<NodeStatus> {
    let nodes = match command {
        MemberCommand::AddLearner { nodes, .. }
        | MemberCommand::SetVoters { nodes, .. }
        | MemberCommand::Remove { nodes, .. }
        | MemberCommand::TransferLeader { nodes, .. } => nodes,
    };
    let leader = leader_of(nodes)?;
    let status = match command {
        MemberCommand::AddLearner { id, addr, wait, .. } => {
            leader.add_learner(&AddLearnerRequest {
                id: *id,
                addr: addr.clone(),
                wait: *wait,
            })
        }
        MemberCommand::SetVoters {
            voters,
            keep_as_learners,
            ..
        } => leader.set_voters(&VotersRequest {
            voters: voters.iter().copied().collect(),
            keep_as_learners: *keep_as_learners,
        }),
        MemberCommand::Remove { id, .. } => leader.remove_node(*id),
        MemberCommand::TransferLeader { to, .. } => leader.transfer_leader(*to),
    };
    status.with_context(|| format!("on the leader at {}", leader.base_url()))
}

fn leader_of(nodes: &NodesArg) -> anyhow::Result<Client> {
    let mut seen = Vec::new();
    for url in &nodes.nodes {
        let client = Client::new(url.clone(), CALL_TIMEOUT);
        match client.status() {
            Ok(status) if status.role == "leader" => return Ok(client),
            Ok(status) => seen.push(format!(
                "{url}: {} (leader {:?})",
                status.role, status.leader
            )),
            Err(error) => seen.push(format!("{url}: {error}")),
        }
    }
    bail!(
        "no leader among the given nodes ({}); give the leader's URL too",
        seen.join("; ")
    )
}
