//! `tasklog-engine`: an embeddable, log-structured event store for A2A tasks.
//!
//! This layer is the segment log at the bottom of it: an append-only sequence of CRC32-framed
//! records in segment files, group-committed (concurrent appenders share one write and one
//! `fdatasync`), readable by position and range with payloads aligned for in-place rkyv access,
//! truncatable at the end (Raft conflicts), purgeable at the front (retention), and recovered on
//! open (torn tails cut, corruption reported by file and offset). The byte layout is in
//! `engine/FORMAT.md`. The engine has no async runtime and no network.
//!
//! ```
//! use tasklog_engine::{Log, NewRecord, Options, Position};
//!
//! # fn main() -> Result<(), tasklog_engine::Error> {
//! let dir = tempfile::tempdir().unwrap();
//! let log = Log::open(dir.path(), Options::default())?;
//! let appended = log.append(&[NewRecord::new(1, b"task created"), NewRecord::new(2, b"working")])?;
//! assert_eq!(appended.first, Position::new(1));
//! assert_eq!(log.read(Position::new(2))?.payload(), b"working");
//! log.close()?;
//!
//! // Reopening finds everything that was acknowledged.
//! let log = Log::open(dir.path(), Options::default())?;
//! assert_eq!(log.bounds(), (Position::new(1), Position::new(2)));
//! # Ok(())
//! # }
//! ```
#![deny(clippy::unwrap_used, clippy::expect_used)]
#![cfg_attr(not(test), deny(clippy::panic))]

mod config;
mod entry;
mod error;
pub mod event;
pub mod frame;
pub mod index;
mod le;
pub mod limits;
mod log;
pub mod model;
pub mod record;
mod recovery;
pub mod segment;
pub mod state;
mod storage;
mod store;
pub mod subscribe;
mod task;
mod verify;

pub use config::{Options, RecoveryMode, SyncPolicy};
pub use entry::{Appended, Entry, NewRecord, Position};
pub use error::{Error, ErrorKind, Result};
pub use log::Log;
pub use recovery::{RecoveryReport, Truncation};
#[cfg(feature = "testing")]
pub use storage::Faults;
pub use store::{
    ListPage, ListQuery, NewTask, Retention, RetentionReport, TaskStore, TaskSummary, Written,
};
pub use verify::{SegmentInfo, VerifyReport};
