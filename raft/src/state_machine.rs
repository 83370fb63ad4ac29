//! openraft's state machine = the engine's task state. Committed entries are applied in order:
//! a task write is decided by the same checks on every node (expected version, terminal guard),
//! a write that no longer holds stays in the log as a no-op, and the response carries the
//! position and the task's new version or the typed rejection. The membership is kept with the
//! engine's checkpoint, so the state machine restarts from its last checkpoint and openraft
//! re-applies what was committed after it.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use futures_util::{Stream, StreamExt};
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend};
use tasklog_engine::event::TASK_BATCH_KIND;
use tasklog_engine::{ReplicaApplied, TaskStore};

use crate::snapshot::{self, SnapshotFile};
use crate::types::{
    LogId, Response, Snapshot, SnapshotMeta, StoredMembership, TypeConfig, io_error, log_id,
    position_of,
};

/// The state machine over a replicated [`TaskStore`].
pub struct StateMachine {
    store: Arc<TaskStore>,
    snapshot_dir: PathBuf,
}

impl StateMachine {
    /// The state machine of `store` (opened with [`TaskStore::open_replica`]); snapshots are
    /// kept in `snapshot_dir`.
    pub fn new(store: Arc<TaskStore>, snapshot_dir: PathBuf) -> Self {
        StateMachine {
            store,
            snapshot_dir,
        }
    }

    /// The task store.
    pub fn store(&self) -> &Arc<TaskStore> {
        &self.store
    }
}

/// The applied log id and membership of an applied state.
fn applied_of(applied: &ReplicaApplied) -> io::Result<(Option<LogId>, StoredMembership)> {
    let membership = if applied.state.is_empty() {
        StoredMembership::default()
    } else {
        serde_json::from_slice(&applied.state).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("membership kept with the checkpoint: {e}"),
            )
        })?
    };
    Ok((log_id(applied.term, applied.position), membership))
}

fn replica_applied(store: &TaskStore) -> io::Result<ReplicaApplied> {
    store
        .replica_applied()
        .ok_or_else(|| io::Error::other("the task store is not a replica"))
}

/// Builds a snapshot from the sealed log and the table as of the last applied record, off the
/// apply path.
pub struct SnapshotBuilder {
    store: Arc<TaskStore>,
    snapshot_dir: PathBuf,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = SnapshotFile;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let store = self.store.clone();
        let dir = self.snapshot_dir.clone();
        let (meta, file) = tokio::task::spawn_blocking(move || {
            snapshot::build(&store, &dir, |applied| {
                let (last_log_id, last_membership) = applied_of(applied)?;
                Ok(SnapshotMeta {
                    last_log_id,
                    last_membership,
                })
            })
        })
        .await
        .map_err(io::Error::other)??;
        Ok(Snapshot {
            meta,
            snapshot: file,
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotFile;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        applied_of(&replica_applied(&self.store)?)
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            let position = position_of(entry.log_id.index);
            let term = entry.log_id.leader_id.term;
            let response = match entry.payload {
                EntryPayload::Blank => {
                    self.store
                        .apply_other(position, term, None)
                        .map_err(io_error)?;
                    Response::Ignored {
                        position: position.get(),
                    }
                }
                EntryPayload::Membership(membership) => {
                    let stored = StoredMembership::new(Some(entry.log_id), membership);
                    let state = serde_json::to_vec(&stored).map_err(io::Error::other)?;
                    self.store
                        .apply_other(position, term, Some(state))
                        .map_err(io_error)?;
                    Response::Ignored {
                        position: position.get(),
                    }
                }
                EntryPayload::Normal(command) if command.kind == TASK_BATCH_KIND => {
                    match self
                        .store
                        .apply_batch(position, term, &command.payload)
                        .map_err(io_error)?
                    {
                        Ok(written) => Response::Written {
                            task_id: written.task_id,
                            version: written.version,
                            position: written.position.get(),
                        },
                        Err(rejection) => Response::Rejected(rejection.into()),
                    }
                }
                EntryPayload::Normal(_) => {
                    self.store
                        .apply_other(position, term, None)
                        .map_err(io_error)?;
                    Response::Ignored {
                        position: position.get(),
                    }
                }
            };
            if let Some(responder) = responder {
                responder.send(response);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder {
            store: self.store.clone(),
            snapshot_dir: self.snapshot_dir.clone(),
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotFile,
    ) -> Result<(), io::Error> {
        let store = self.store.clone();
        let dir = self.snapshot_dir.clone();
        let expected = meta.clone();
        tokio::task::spawn_blocking(move || {
            let held = snapshot::check(&snapshot.path)?;
            if held.last_log_id != expected.last_log_id {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "snapshot file holds {:?}, openraft installs {:?}",
                        held.last_log_id, expected.last_log_id
                    ),
                ));
            }
            // Checked whole (its task image too: a file kept but not installable would fail the
            // node at every restart) and kept (durably) before the log is touched: installing may empty the log before it
            // writes the snapshot's records and checkpoint, and a node killed meanwhile must find
            // the snapshot on restart (openraft installs it again, as its state machine stands
            // before it) rather than a committed position its log no longer reaches. A received
            // file (in the snapshot directory) is renamed, not copied; the network handler's
            // clean-up then finds nothing to delete.
            let kept = snapshot::keep(&snapshot.path, &expected, &dir)?;
            snapshot::install(&store, &kept)?;
            Ok(())
        })
        .await
        .map_err(io::Error::other)?
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        let dir = self.snapshot_dir.clone();
        tokio::task::spawn_blocking(move || {
            // The newest file that checks out; a damaged one is reported and skipped.
            for path in snapshot::files(&dir)? {
                match snapshot::read_meta(&path) {
                    Ok(meta) => {
                        return Ok(Some(Snapshot {
                            meta,
                            snapshot: SnapshotFile { path },
                        }));
                    }
                    Err(error) => {
                        tracing::error!(path = %path.display(), %error, "damaged snapshot file skipped");
                    }
                }
            }
            Ok(None)
        })
        .await
        .map_err(io::Error::other)?
    }
}
