//! The receiving side of openraft's network: [`RaftHandler`], the transport [`Handler`] that
//! decodes each Raft RPC ([`raft_wire`]), calls the node's `Raft` handle and
//! encodes its answer.
//!
//! A streamed snapshot is written chunk by chunk into a temporary file in the snapshot
//! directory (never held in memory whole), checked against the length its header declared,
//! fsynced, and only then handed to `Raft::install_full_snapshot` as a [`SnapshotFile`]. The state
//! machine renames an installed file to its snapshot name; whatever is still there when openraft
//! answers (a refused snapshot) is deleted then; a transfer that is cut, stalls, or carries bad
//! bytes deletes its file at once. Files left by a crash
//! (`incoming-*.part`) are removed when the handler is made.
//!
//! Bad bytes from a peer are answered with a typed error message, never a panic; a Raft error is
//! answered inside the reply ([`Reply::RaftError`]).
//!
//! This module sees openraft's messages and the `Raft` handle, generic over its state machine,
//! never the engine.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use openraft::raft::{AppendEntriesRequest, TransferLeaderRequest, VoteRequest};
use openraft::storage::RaftStateMachine;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::AsyncWriteExt;

use super::chunks::ChunkStream;
use super::handler::{BoxFuture, Handler, HandlerResult};
use super::raft_wire::{
    self, KIND_APPEND_ENTRIES, KIND_FULL_SNAPSHOT, KIND_PRE_VOTE, KIND_TRANSFER_LEADER, KIND_VOTE,
    Reply, SnapshotHeader,
};
use crate::snapshot::SnapshotFile;
use crate::types::{Snapshot, TypeConfig};

/// Default cap on a received snapshot: 1 TiB, far above any table and log prefix this node can
/// hold, so it only stops a peer that declares nonsense.
pub const SNAPSHOT_BYTES_MAX_DEFAULT: u64 = 1 << 40;

/// Prefix and suffix of a snapshot being received.
const PART_PREFIX: &str = "incoming-";
const PART_SUFFIX: &str = ".part";

/// Serves a node's Raft RPCs from the transport.
pub struct RaftHandler<SM>
where
    SM: RaftStateMachine<TypeConfig, SnapshotData = SnapshotFile>,
{
    raft: openraft::Raft<TypeConfig, SM>,
    snapshot_dir: PathBuf,
    snapshot_bytes_max: u64,
    /// Numbers received files, so concurrent transfers never share one.
    next_part: Arc<AtomicU64>,
}

impl<SM> RaftHandler<SM>
where
    SM: RaftStateMachine<TypeConfig, SnapshotData = SnapshotFile>,
{
    /// Serves `raft`, receiving snapshots into `snapshot_dir` (created on the first transfer).
    /// Removes received files that a crash left there.
    pub fn new(raft: openraft::Raft<TypeConfig, SM>, snapshot_dir: PathBuf) -> Self {
        remove_stale_parts(&snapshot_dir);
        Self {
            raft,
            snapshot_dir,
            snapshot_bytes_max: SNAPSHOT_BYTES_MAX_DEFAULT,
            next_part: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The same handler refusing snapshots above `snapshot_bytes_max` (from their header, before
    /// any byte is written).
    pub fn with_snapshot_bytes_max(mut self, snapshot_bytes_max: u64) -> Self {
        self.snapshot_bytes_max = snapshot_bytes_max;
        self
    }
}

/// Deletes `incoming-*.part` files in `dir` (best effort: a failure is logged, the next transfer
/// uses a new name anyway).
fn remove_stale_parts(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(PART_PREFIX)
            && name.ends_with(PART_SUFFIX)
            && let Err(error) = std::fs::remove_file(entry.path())
        {
            tracing::warn!(path = %entry.path().display(), %error, "stale snapshot part left");
        }
    }
}

impl<SM> Handler for RaftHandler<SM>
where
    SM: RaftStateMachine<TypeConfig, SnapshotData = SnapshotFile>,
{
    fn call(&self, kind: u8, payload: Vec<u8>) -> BoxFuture<HandlerResult> {
        let raft = self.raft.clone();
        Box::pin(async move {
            match kind {
                KIND_APPEND_ENTRIES => {
                    let rpc: AppendEntriesRequest<TypeConfig> = decode(&payload, "append entries")?;
                    reply(raft.append_entries(rpc).await, "append entries")
                }
                KIND_VOTE => {
                    let rpc: VoteRequest<TypeConfig> = decode(&payload, "vote")?;
                    reply(raft.vote(rpc).await, "vote")
                }
                KIND_PRE_VOTE => {
                    let rpc: VoteRequest<TypeConfig> = decode(&payload, "pre-vote")?;
                    reply(raft.pre_vote(rpc).await, "pre-vote")
                }
                KIND_TRANSFER_LEADER => {
                    let rpc: TransferLeaderRequest<TypeConfig> =
                        decode(&payload, "transfer leader")?;
                    reply(raft.handle_transfer_leader(rpc).await, "transfer leader")
                }
                other => Err(format!("no raft rpc of kind {other:#04x}")),
            }
        })
    }

    fn stream(&self, kind: u8, header: Vec<u8>, chunks: ChunkStream) -> BoxFuture<HandlerResult> {
        if kind != KIND_FULL_SNAPSHOT {
            drop(chunks);
            return Box::pin(
                async move { Err(format!("no streamed raft rpc of kind {kind:#04x}")) },
            );
        }
        let part = self.snapshot_dir.join(format!(
            "{PART_PREFIX}{}-{}{PART_SUFFIX}",
            std::process::id(),
            self.next_part.fetch_add(1, Ordering::Relaxed)
        ));
        Box::pin(receive_snapshot(
            self.raft.clone(),
            header,
            chunks,
            part,
            self.snapshot_bytes_max,
        ))
    }
}

fn decode<T: DeserializeOwned>(payload: &[u8], what: &'static str) -> Result<T, String> {
    raft_wire::decode(payload, what).map_err(|e| e.to_string())
}

/// Encodes Raft's answer: the response, or its error as text inside the reply.
fn reply<T: Serialize, E: std::fmt::Display>(
    result: Result<T, E>,
    what: &'static str,
) -> HandlerResult {
    let reply = match result {
        Ok(response) => Reply::Ok(response),
        Err(error) => Reply::RaftError(error.to_string()),
    };
    // The transport caps what it sends; responses are small (a vote, a log id).
    raft_wire::encode(&reply, u32::MAX, what).map_err(|e| e.to_string())
}

/// A received snapshot file that is deleted when dropped: on every error, on cancellation, and
/// after openraft has installed (copied) it.
struct PartFile {
    path: PathBuf,
}

impl Drop for PartFile {
    fn drop(&mut self) {
        match std::fs::remove_file(&self.path) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => {
                tracing::warn!(path = %self.path.display(), %error, "received snapshot not deleted");
            }
        }
    }
}

async fn receive_snapshot<SM>(
    raft: openraft::Raft<TypeConfig, SM>,
    header: Vec<u8>,
    mut chunks: ChunkStream,
    path: PathBuf,
    snapshot_bytes_max: u64,
) -> HandlerResult
where
    SM: RaftStateMachine<TypeConfig, SnapshotData = SnapshotFile>,
{
    let header: SnapshotHeader = decode(&header, "snapshot header")?;
    check_header(&header, snapshot_bytes_max)?;
    let io = |doing: &str, error: std::io::Error| {
        format!(
            "receiving a snapshot into {}: {doing}: {error}",
            path.display()
        )
    };
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| io("create the snapshot directory", e))?;
    }
    let mut file = tokio::fs::File::create(&path)
        .await
        .map_err(|e| io("create", e))?;
    let part = PartFile { path: path.clone() };
    let mut received = 0u64;
    // Bounded: every chunk carries at least one byte and the total may not pass the header's.
    loop {
        let chunk = match chunks.next().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(error) => return Err(format!("snapshot transfer failed: {error}")),
        };
        if chunk.is_empty() {
            return Err("snapshot transfer carries an empty chunk".to_owned());
        }
        received = received.saturating_add(chunk.len() as u64);
        if received > header.snapshot_bytes {
            return Err(format!(
                "snapshot transfer carries more than the {} bytes its header declares",
                header.snapshot_bytes
            ));
        }
        file.write_all(&chunk).await.map_err(|e| io("write", e))?;
    }
    if received != header.snapshot_bytes {
        return Err(format!(
            "snapshot transfer ended after {received} of the {} bytes its header declares",
            header.snapshot_bytes
        ));
    }
    file.flush().await.map_err(|e| io("flush", e))?;
    file.sync_all().await.map_err(|e| io("fsync", e))?;
    drop(file);
    let snapshot = Snapshot {
        meta: header.meta,
        snapshot: SnapshotFile { path },
    };
    // Once openraft has the file, only it decides when the file is done with: install in a task
    // of its own, which outlives this handler if the sender goes away, and deletes the file
    // after openraft answers (an installed one has been renamed away by then).
    let install = tokio::spawn(async move {
        let result = raft.install_full_snapshot(header.vote, snapshot).await;
        drop(part);
        result
    });
    match install.await {
        Ok(result) => reply(result, "snapshot response"),
        Err(error) => Err(format!("installing the snapshot failed: {error}")),
    }
}

/// Checks a snapshot header before anything is written: its size against the cap, and that its
/// last log id is not from a term after the sender's vote (openraft asserts on that; a header
/// breaking it is refused here instead).
fn check_header(header: &SnapshotHeader, snapshot_bytes_max: u64) -> Result<(), String> {
    if header.snapshot_bytes > snapshot_bytes_max {
        return Err(format!(
            "snapshot of {} bytes exceeds the cap of {snapshot_bytes_max} bytes",
            header.snapshot_bytes
        ));
    }
    if let Some(last) = &header.meta.last_log_id
        && last.leader_id.term > header.vote.leader_id.term
    {
        return Err(format!(
            "snapshot ends at term {} after the sender's vote term {}",
            last.leader_id.term, header.vote.leader_id.term
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{LogId, SnapshotMeta, Vote};

    fn header(last_term: u64, vote_term: u64, bytes: u64) -> SnapshotHeader {
        SnapshotHeader {
            vote: Vote::new_committed(vote_term, 1),
            meta: SnapshotMeta {
                last_log_id: Some(LogId::new_term_index(last_term, 10)),
                last_membership: Default::default(),
            },
            snapshot_bytes: bytes,
        }
    }

    #[test]
    fn headers_are_checked_before_anything_is_written() {
        assert!(check_header(&header(2, 2, 10), 10).is_ok());
        assert!(
            check_header(&header(2, 2, 11), 10)
                .unwrap_err()
                .contains("cap")
        );
        assert!(
            check_header(&header(3, 2, 10), 10)
                .unwrap_err()
                .contains("term 3")
        );
    }

    #[test]
    fn stale_parts_are_removed_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let stale = dir.path().join(format!("{PART_PREFIX}1-0{PART_SUFFIX}"));
        let kept = dir.path().join("current.snap");
        std::fs::write(&stale, b"half").unwrap();
        std::fs::write(&kept, b"whole").unwrap();
        remove_stale_parts(dir.path());
        assert!(!stale.exists());
        assert!(kept.exists());
        remove_stale_parts(&dir.path().join("missing"));
    }

    #[test]
    fn raft_errors_travel_inside_the_reply() {
        let bytes = reply::<(), _>(Err("stopped"), "vote").unwrap();
        let back: Reply<()> = raft_wire::decode(&bytes, "vote").unwrap();
        assert_eq!(back, Reply::RaftError("stopped".into()));
        let error = decode::<VoteRequest<TypeConfig>>(&[1, 0xFF], "vote").unwrap_err();
        assert!(error.starts_with("vote: invalid encoding"), "{error}");
    }
}
