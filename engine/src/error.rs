//! The engine's one error type, with a classification for callers.
//!
//! Every variant says what happened and where: the operation and path for I/O, the segment and byte
//! offset for corruption. There is deliberately no blanket `From<io::Error>`: it would lose both.

use std::io;
use std::path::PathBuf;

/// Result alias for engine operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How a caller should react to an [`Error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Transient: the same request may succeed later (backpressure, shutdown in progress).
    Retryable,
    /// The caller's fault: bad argument, out of range, too large. Nothing was changed.
    Rejected,
    /// The store cannot continue safely: corruption, a failed fsync, a poisoned engine.
    Fatal,
}

/// Everything that can go wrong in the engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system call failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What the engine was doing, e.g. "fdatasync segment".
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Bytes on disk are not what the engine wrote.
    #[error("corrupt data in {segment} at byte {offset}: {reason}")]
    Corrupt {
        /// The file holding the bad bytes.
        segment: PathBuf,
        /// Byte offset of the bad frame or header within that file.
        offset: u64,
        /// What check failed.
        reason: &'static str,
    },
    /// An earlier write or fsync failed; the page cache state is unknown, so the log refuses all
    /// further writes until it is reopened (and recovered from what is really on disk).
    #[error("the log is poisoned by an earlier failure ({cause}); reopen it")]
    Poisoned {
        /// The failure that poisoned the log.
        cause: String,
    },
    /// Another process (or another `Log` in this process) holds the directory's lock.
    #[error("{path} is locked by another process")]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// A payload or batch is larger than the log accepts.
    #[error("{what} of {len} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// Its size.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// A read asked for a position the log does not hold (purged, truncated or not yet written).
    #[error("position {position} is not in the log (it holds {first}..={last})")]
    NotFound {
        /// The requested position.
        position: u64,
        /// First position held (a log holding nothing has `last = first - 1`).
        first: u64,
        /// Last position held.
        last: u64,
    },
    /// A read asked for a record that compaction removed: it belonged to a deleted task.
    #[error("the record at position {position} was removed by compaction (its task was deleted)")]
    Compacted {
        /// The requested position.
        position: u64,
    },
    /// A conditional append named a position other than the next one.
    #[error("append at position {requested} refused: the next position is {next}")]
    PositionMismatch {
        /// Position the caller expected to write.
        requested: u64,
        /// Position the log would assign.
        next: u64,
    },
    /// No task has this id (or it was deleted).
    #[error("task {task_id:?} not found")]
    TaskNotFound {
        /// The id asked for.
        task_id: String,
    },
    /// Insert-if-absent found the id taken.
    #[error("task {task_id:?} already exists")]
    TaskExists {
        /// The id.
        task_id: String,
    },
    /// An append named a version other than the task's current one; nothing was written.
    #[error("task {task_id:?} is at version {actual}, not {expected}")]
    VersionConflict {
        /// The task.
        task_id: String,
        /// The version the caller expected.
        expected: u64,
        /// The task's actual version.
        actual: u64,
    },
    /// The task reached a terminal state; nothing may follow (A2A task immutability).
    #[error("task {task_id:?} is {state} and accepts no more events")]
    TaskTerminal {
        /// The task.
        task_id: String,
        /// Its terminal state.
        state: crate::model::TaskState,
    },
    /// An event is not valid for the task as it stands (unspecified state, append to an unknown
    /// artifact, a second creation, an event after deletion …).
    #[error("invalid event for task {task_id:?}: {reason}")]
    InvalidEvent {
        /// The task.
        task_id: String,
        /// What is wrong.
        reason: String,
    },
    /// An argument is invalid (empty batch, truncate before the first position, bad options).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A record's payload passed its CRC but is not a valid archived value of the expected type
    /// (a format mismatch or a bug, never caller input).
    #[error("payload at position {position} is not a valid archived value: {reason}")]
    InvalidPayload {
        /// Position of the record.
        position: u64,
        /// What validation said.
        reason: String,
    },
    /// The log is closing or closed.
    #[error("the log is closed")]
    Closed,
}

impl Error {
    /// Classifies the error for retry and status-code decisions.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Closed => ErrorKind::Retryable,
            Error::TooLarge { .. }
            | Error::NotFound { .. }
            | Error::Compacted { .. }
            | Error::PositionMismatch { .. }
            | Error::InvalidArgument(_)
            | Error::TaskNotFound { .. }
            | Error::TaskExists { .. }
            | Error::VersionConflict { .. }
            | Error::TaskTerminal { .. }
            | Error::InvalidEvent { .. }
            | Error::Locked { .. } => ErrorKind::Rejected,
            Error::Io { .. }
            | Error::Corrupt { .. }
            | Error::Poisoned { .. }
            | Error::InvalidPayload { .. } => ErrorKind::Fatal,
        }
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn corrupt(segment: impl Into<PathBuf>, offset: u64, reason: &'static str) -> Self {
        Error::Corrupt {
            segment: segment.into(),
            offset,
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_split_caller_faults_from_fatal_ones() {
        assert_eq!(Error::Closed.kind(), ErrorKind::Retryable);
        assert_eq!(
            Error::InvalidArgument("x".into()).kind(),
            ErrorKind::Rejected
        );
        assert_eq!(
            Error::NotFound {
                position: 9,
                first: 1,
                last: 3
            }
            .kind(),
            ErrorKind::Rejected
        );
        assert_eq!(
            Error::corrupt("a.seg", 64, "crc mismatch").kind(),
            ErrorKind::Fatal
        );
        assert_eq!(
            Error::Poisoned {
                cause: "fsync".into()
            }
            .kind(),
            ErrorKind::Fatal
        );
    }

    #[test]
    fn messages_name_the_place() {
        let message =
            Error::corrupt("/d/00000000000000000001.seg", 4160, "crc mismatch").to_string();
        assert!(message.contains("00000000000000000001.seg"), "{message}");
        assert!(message.contains("4160"), "{message}");
    }
}
