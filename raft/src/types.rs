//! The Raft type configuration and what travels through the log: commands, responses, and how a
//! Raft log index maps to an engine log position.
//!
//! Raft numbers entries from 0 (openraft's initial membership entry has index 0); the engine
//! numbers records from 1. Position = index + 1, everywhere, and only [`position_of`] and
//! [`index_of`] convert.

use std::fmt;

use serde::{Deserialize, Serialize};
use tasklog_engine::event::TASK_BATCH_KIND;
use tasklog_engine::model::TaskState;
use tasklog_engine::{Error, Position};

openraft::declare_raft_types!(
    /// tasklog's Raft types: `u64` node ids and terms, one leader per term (the standard Raft
    /// leader id, so a log id is `(term, index)`, exactly what an engine frame holds), tokio.
    pub TypeConfig:
        D = Command,
        R = Response,
        NodeId = NodeId,
        Node = openraft::impls::BasicNode,
        Term = u64,
        LeaderId = openraft::impls::leader_id_std::LeaderId<u64, NodeId>,
);

/// A node's id in the cluster.
pub type NodeId = u64;
/// A Raft log id: `(term, index)`.
pub type LogId = openraft::alias::LogIdOf<TypeConfig>;
/// A Raft log entry.
pub type Entry = openraft::alias::EntryOf<TypeConfig>;
/// A snapshot as openraft hands it around.
pub type Snapshot = openraft::alias::SnapshotOf<TypeConfig, crate::snapshot::SnapshotFile>;
/// The membership as stored with the state.
pub type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
/// A vote.
pub type Vote = openraft::alias::VoteOf<TypeConfig>;
/// Snapshot metadata.
pub type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;

/// Record kind of a blank entry (a new leader's first entry); its payload is empty.
pub const BLANK_KIND: u8 = 0x10;
/// Record kind of a membership entry; its payload is the membership as JSON.
pub const MEMBERSHIP_KIND: u8 = 0x11;

/// The engine position of Raft log index `index`.
pub fn position_of(index: u64) -> Position {
    // Saturating: an index of u64::MAX (only a peer's bytes can carry one) names a position that
    // never exists, never position 0.
    Position::new(index.saturating_add(1))
}

/// The Raft log index of engine position `position` (`None` for position 0, which holds nothing).
pub fn index_of(position: Position) -> Option<u64> {
    position.get().checked_sub(1)
}

/// The log id of the record at `position`, written in `term`.
pub fn log_id(term: u64, position: Position) -> Option<LogId> {
    index_of(position).map(|index| LogId::new_term_index(term, index))
}

/// An application command: the bytes of one engine log record and its kind. A task write is an
/// event batch ([`TASK_BATCH_KIND`]) exactly as the engine stores it, so the entry *is* the event
/// record: it is written once, and the state machine applies it in place.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// The record kind.
    pub kind: u8,
    /// The record payload (one serde byte string: postcard copies it whole, with the same
    /// bytes on the wire as a sequence of `u8`).
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
}

impl Command {
    /// A task write prepared by [`tasklog_engine::TaskStore::prepare`].
    pub fn task_batch(payload: Vec<u8>) -> Self {
        Command {
            kind: TASK_BATCH_KIND,
            payload,
        }
    }
}

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Command")
            .field("kind", &self.kind)
            .field("payload_len", &self.payload.len())
            .finish()
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "command(kind {}, {} bytes)",
            self.kind,
            self.payload.len()
        )
    }
}

/// What applying a committed command did (the same on every node).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// The task write applied: the task's new version, at this position.
    Written {
        /// The task.
        task_id: String,
        /// Its version after the write.
        version: u64,
        /// The log position of the write.
        position: u64,
    },
    /// The write no longer held when it was applied; it stays in the log as a no-op.
    Rejected(Rejection),
    /// A command of a kind this version does not know; applied as a no-op.
    Ignored {
        /// The log position.
        position: u64,
    },
}

/// Why a committed write was rejected at apply, typed like the engine's errors so that the
/// server answers a replicated write exactly as an embedded one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Rejection {
    /// See [`Error::TaskNotFound`].
    #[error("task {task_id} not found")]
    TaskNotFound {
        /// The task.
        task_id: String,
    },
    /// See [`Error::TaskExists`].
    #[error("task {task_id} already exists")]
    TaskExists {
        /// The task.
        task_id: String,
    },
    /// See [`Error::VersionConflict`].
    #[error("task {task_id} is at version {actual}, not {expected}")]
    VersionConflict {
        /// The task.
        task_id: String,
        /// The version the write expected.
        expected: u64,
        /// The version the task had.
        actual: u64,
    },
    /// See [`Error::TaskTerminal`].
    #[error("task {task_id} is already {state:?}")]
    TaskTerminal {
        /// The task.
        task_id: String,
        /// Its terminal state.
        state: TaskState,
    },
    /// Any other reason (invalid event, undecodable payload).
    #[error("{0}")]
    Invalid(String),
}

impl From<Error> for Rejection {
    fn from(error: Error) -> Self {
        match error {
            Error::TaskNotFound { task_id } => Rejection::TaskNotFound { task_id },
            Error::TaskExists { task_id } => Rejection::TaskExists { task_id },
            Error::VersionConflict {
                task_id,
                expected,
                actual,
            } => Rejection::VersionConflict {
                task_id,
                expected,
                actual,
            },
            Error::TaskTerminal { task_id, state } => Rejection::TaskTerminal { task_id, state },
            other => Rejection::Invalid(other.to_string()),
        }
    }
}

impl From<Rejection> for Error {
    fn from(rejection: Rejection) -> Self {
        match rejection {
            Rejection::TaskNotFound { task_id } => Error::TaskNotFound { task_id },
            Rejection::TaskExists { task_id } => Error::TaskExists { task_id },
            Rejection::VersionConflict {
                task_id,
                expected,
                actual,
            } => Error::VersionConflict {
                task_id,
                expected,
                actual,
            },
            Rejection::TaskTerminal { task_id, state } => Error::TaskTerminal { task_id, state },
            Rejection::Invalid(reason) => Error::InvalidArgument(reason),
        }
    }
}

/// An engine error as the `io::Error` openraft's storage traits speak.
pub(crate) fn io_error(error: Error) -> std::io::Error {
    std::io::Error::other(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_indexes_plus_one() {
        assert_eq!(position_of(0), Position::new(1));
        assert_eq!(index_of(Position::new(1)), Some(0));
        assert_eq!(index_of(Position::new(0)), None);
        // The largest index a peer could send names no real position, never position 0.
        assert_eq!(position_of(u64::MAX), Position::new(u64::MAX));
        assert_eq!(
            log_id(3, Position::new(8)),
            Some(LogId::new_term_index(3, 7))
        );
    }

    #[test]
    fn a_command_payload_has_the_bytes_of_a_plain_sequence_on_the_wire() {
        #[derive(Serialize)]
        struct Plain {
            kind: u8,
            payload: Vec<u8>,
        }
        let payload: Vec<u8> = (0..=255).chain(0..44).collect();
        let command = Command {
            kind: 1,
            payload: payload.clone(),
        };
        let ours = postcard::to_allocvec(&command).unwrap();
        assert_eq!(
            ours,
            postcard::to_allocvec(&Plain { kind: 1, payload }).unwrap()
        );
        let back: Command = postcard::from_bytes(&ours).unwrap();
        assert!(back == command);
    }

    #[test]
    fn rejections_round_trip_to_engine_errors() {
        let conflict = Rejection::VersionConflict {
            task_id: "t".into(),
            expected: 1,
            actual: 2,
        };
        let error: Error = conflict.clone().into();
        assert!(matches!(error, Error::VersionConflict { actual: 2, .. }));
        assert_eq!(Rejection::from(error), conflict);
        assert!(matches!(
            Rejection::from(Error::Closed),
            Rejection::Invalid(_)
        ));
    }
}
