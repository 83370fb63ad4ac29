//! Task events as they are stored in the log: one [`EventBatch`] per log record (kind
//! [`TASK_BATCH_KIND`]), so the events of one write are atomic: a frame is whole or absent.
//!
//! Every event of a batch belongs to one task; event `i` gives the task version
//! `first_version + i`. Timestamps are concrete in the log (the store fills in missing status
//! timestamps before writing), so folding the log is deterministic on every node.
#![expect(
    missing_docs,
    reason = "rkyv's derive generates undocumented structs for the variants of Event; all else here is documented"
)]

use crate::model::{Artifact, Json, Message, TaskStatus, Timestamp};

/// Record kind of an [`EventBatch`] in the log.
pub const TASK_BATCH_KIND: u8 = 1;

/// One change to a task.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[expect(
    clippy::large_enum_variant,
    reason = "an event lives only while one write is made or folded; boxing would add an allocation to each"
)]
pub enum Event {
    /// The task exists from now on: its context, first status, first message and metadata.
    Created {
        /// The conversation.
        context_id: String,
        /// First status (normally submitted).
        status: TaskStatus,
        /// The message that created it.
        message: Option<Message>,
        /// Free-form metadata.
        metadata: Option<Json>,
    },
    /// A new status; the previous status message moves into the history.
    Status(TaskStatus),
    /// An artifact is added or replaced by id (`append = false`) or extended (`append = true`).
    Artifact {
        /// The artifact (or the parts to append).
        artifact: Artifact,
        /// Extend the artifact with the same id instead of replacing it.
        append: bool,
        /// The last chunk of a streamed artifact.
        last_chunk: bool,
    },
    /// A message joins the history.
    Message(Message),
    /// The task's metadata is replaced.
    Metadata(Json),
    /// The task is deleted (retention). Allowed on terminal tasks; must come last.
    Deleted,
}

impl Event {
    /// A short name for errors and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Event::Created { .. } => "created",
            Event::Status(_) => "status",
            Event::Artifact { .. } => "artifact",
            Event::Message(_) => "message",
            Event::Metadata(_) => "metadata",
            Event::Deleted => "deleted",
        }
    }
}

/// The events of one write to one task: the payload of one log record.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct EventBatch {
    /// The task.
    pub task_id: String,
    /// Version the first event gives the task (1 for creation).
    pub first_version: u64,
    /// When the write was made.
    pub timestamp: Timestamp,
    /// The events, at least one.
    pub events: Vec<Event>,
}

const _: () = crate::record::assert_payload_alignment::<ArchivedEventBatch>();

impl EventBatch {
    /// Version of the task after this batch: `first_version + events - 1`, exact for a batch
    /// that passed [`crate::state::TaskTable::check`] and clamped to `0..=u64::MAX` for any other
    /// (a batch read from disk must not make a reader panic).
    pub fn last_version(&self) -> u64 {
        match (self.events.len() as u64).checked_sub(1) {
            Some(later_events) => self.first_version.saturating_add(later_events),
            None => self.first_version.saturating_sub(1),
        }
    }
}
