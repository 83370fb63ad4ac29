//! `tasklog-engine`: an embeddable, log-structured event store for A2A tasks.
//!
//! One directory holds a durable task store, its event log and the source of its subscriptions,
//! with no network and no other process:
//! - [`TaskStore`]: A2A tasks ([`model`]) written as event batches ([`event`]): create with
//!   insert-if-absent, append with an expected version (optimistic concurrency), the terminal-state
//!   guard, `get` folded from the log, `list` with filters and a stable cursor, retention by TTL and
//!   count with compaction of the deleted tasks' records ([`TaskStore::apply_retention`],
//!   [`TaskStore::compact`]); [`subscribe`](TaskStore::subscribe) and [`tail`](TaskStore::tail)
//!   replay from a version or position and then follow durable writes ([`subscribe`]).
//! - [`Log`] underneath: an append-only sequence of CRC32-framed records in segment files,
//!   group-committed (concurrent appenders share one write and one `fdatasync`), read by position
//!   with payloads aligned for in-place rkyv access ([`record`]), truncatable at the end (Raft
//!   conflicts), purgeable at the front, compactable ([`Log::compact`]: sealed segments rewritten
//!   without the records a caller no longer needs, positions kept), and recovered on open (torn
//!   tails cut, corruption reported by file and offset). Every byte is described in
//!   `engine/FORMAT.md`.
//!
//! The engine has no async runtime: subscriptions are runtime-agnostic futures
//! ([`subscribe::block_on`] runs one without an executor).
//!
//! ```
//! use std::sync::Arc;
//! use tasklog_engine::event::Event;
//! use tasklog_engine::model::{TaskState, TaskStatus};
//! use tasklog_engine::subscribe::block_on;
//! use tasklog_engine::{Error, NewTask, Options, TaskStore};
//!
//! # fn main() -> Result<(), Error> {
//! let dir = tempfile::tempdir().unwrap();
//! let store = Arc::new(TaskStore::open(dir.path(), Options::default())?);
//! let task = store.create(NewTask::submitted(None))?;
//! let mut updates = store.subscribe(&task.task_id, 1)?;
//!
//! // A write names the version it builds on; a stale one is refused with the actual version.
//! let working = Event::Status(TaskStatus::new(TaskState::Working));
//! store.append(&task.task_id, Some(task.version), vec![working.clone()])?;
//! assert!(matches!(
//!     store.append(&task.task_id, Some(task.version), vec![working]),
//!     Err(Error::VersionConflict { actual: 2, .. })
//! ));
//! store.append(&task.task_id, None, vec![Event::Status(TaskStatus::new(TaskState::Completed))])?;
//!
//! // The subscriber replays everything, in order, and its stream ends with the terminal state.
//! let mut versions = Vec::new();
//! while let Some(delivery) = block_on(updates.next())? {
//!     versions.push(delivery.first_version);
//! }
//! assert_eq!(versions, [1, 2, 3]);
//! assert_eq!(store.get(&task.task_id, None)?.status.state, TaskState::Completed);
//! # Ok(())
//! # }
//! ```
//!
//! The log alone:
//!
//! ```
//! use tasklog_engine::{Log, NewRecord, Options, Position};
//!
//! # fn main() -> Result<(), tasklog_engine::Error> {
//! let dir = tempfile::tempdir().unwrap();
//! let log = Log::open(dir.path(), Options::default())?;
//! let appended = log.append(&[NewRecord::new(7, b"first"), NewRecord::new(7, b"second")])?;
//! assert_eq!(appended.first, Position::new(1));
//! assert_eq!(log.read(Position::new(2))?.payload(), b"second");
//! log.close()?;
//! let log = Log::open(dir.path(), Options::default())?;
//! assert_eq!(log.bounds(), (Position::new(1), Position::new(2)));
//! # Ok(())
//! # }
//! ```
#![deny(clippy::unwrap_used, clippy::expect_used)]
#![cfg_attr(not(test), deny(clippy::panic))]

pub mod checkpoint;
mod compact;
mod config;
mod entry;
mod error;
pub mod event;
pub mod frame;
pub mod id;
pub mod index;
mod le;
pub mod limits;
mod log;
pub mod model;
mod order;
mod recent;
pub mod record;
mod recovery;
pub mod segment;
mod slot_index;
pub mod state;
mod storage;
mod store;
pub mod subscribe;
mod task;
mod verify;
pub mod write_wire;

pub use compact::CompactReport;
pub use config::{Options, RecoveryMode, SyncPolicy};
pub use entry::{Appended, Entry, NewRecord, Position};
pub use error::{Error, ErrorKind, Result};
pub use log::Log;
pub use recovery::{RecoveryReport, Truncation};
#[cfg(feature = "testing")]
pub use storage::Faults;
pub use store::{
    ListPage, ListQuery, NewTask, OpenReport, Prepared, ReplicaApplied, Retention, RetentionReport,
    TaskStore, TaskSummary, Write, Written, check_snapshot,
};
pub use verify::{SegmentInfo, VerifyReport};
