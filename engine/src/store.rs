//! The embedded task store: A2A tasks on the segment log, in one directory.
//!
//! A write becomes one log record (an [`EventBatch`]), checked against the task's state first
//! (insert-if-absent, expected version, terminal guard, legal states) and visible only once it is
//! durable. Writes to one task are serialized (a per-task busy flag, waited on without holding any
//! lock across I/O); writes to different tasks run concurrently and share group commits. `get`
//! folds the task's records from the log (those still remembered for subscribers from memory);
//! `list` walks the table's in-memory indexes (by state, by context, newest status first) and
//! folds the tasks of the page the same way.
//!
//! Open replays the whole log into the in-memory table. (Checkpointed, memory-mapped indexes that
//! let a large store open without a replay are the next step; see the README.)

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use base64::Engine as _;
use tokio::sync::Notify;

use crate::checkpoint::{self, ReplicaCheckpoint, TaskView};
use crate::compact::CompactReport;
use crate::config::Options;
use crate::entry::{NewRecord, Position};
use crate::error::{Error, Result};
use crate::event::{Event, EventBatch, TASK_BATCH_KIND};
use crate::limits;
use crate::log::{Log, lock};
use crate::model::{Json, Message, Task, TaskState, TaskStatus, Timestamp};
use crate::recent::Recent;
use crate::record;
use crate::state::{ListFilter, OrderKey, TaskTable, check_listed_batch, fold};
use crate::subscribe::{self, BatchLookup, CaughtUp, Tail, TaskSubscription, Watch};

/// Checks that `bytes` is a snapshot [`TaskStore::install_snapshot`] would accept (it decodes,
/// was made by a replicated store, and its table restores), changing nothing: a replication layer
/// keeps a received snapshot only once it knows it can install it.
///
/// # Errors
/// [`Error::InvalidArgument`] saying what is wrong.
pub fn check_snapshot(bytes: &[u8]) -> Result<()> {
    decode_snapshot(bytes).map(|_| ())
}

/// A snapshot image decoded: its table restored, where it stands, and its rejected positions.
fn decode_snapshot(bytes: &[u8]) -> Result<(TaskTable, ReplicaApplied, BTreeSet<u64>)> {
    let saved = checkpoint::load(bytes)
        .map_err(|reason| Error::InvalidArgument(format!("invalid snapshot: {reason}")))?;
    let Some(replica) = saved.replica else {
        return Err(Error::InvalidArgument(
            "the snapshot was not made by a replicated store".into(),
        ));
    };
    let count = saved.tasks.stated_len();
    let tasks = TaskTable::try_restore(count, saved.tasks, REPEATED_TASK.to_string())
        .map_err(|reason| Error::InvalidArgument(format!("invalid snapshot: {reason}")))?;
    let applied = ReplicaApplied {
        position: Position::new(saved.covered_position),
        term: replica.applied_term,
        state: replica.state,
    };
    Ok((tasks, applied, saved.rejected.into_iter().collect()))
}

/// A write in flight to one task: other writers to the task, and checkpoints, wait for it.
/// Dropped without being forgotten (the writer panicked between marking its task busy and
/// applying its record), it clears the mark and wakes them, and poisons the store's log: whether
/// the record reached the log is unknown, so the table may no longer match it, and only a reopen,
/// which rebuilds from the log, can say. Without it a panic would leave the task, and every
/// checkpoint, waiting for ever.
struct BusyGuard<'a> {
    store: &'a TaskStore,
    task_id: &'a str,
}

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        self.store.log.inner().poison(&Error::Poisoned {
            cause: format!("a write to task {} panicked", self.task_id),
        });
        let mut table = lock(&self.store.table);
        table.busy.remove(self.task_id);
        self.store.wake_idle(table);
    }
}

/// A new task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTask {
    /// The id to create (insert-if-absent); `None` lets the store assign a UUID.
    pub task_id: Option<String>,
    /// The context; `None` lets the store assign a UUID.
    pub context_id: Option<String>,
    /// First state (normally submitted).
    pub state: TaskState,
    /// The message that created the task.
    pub message: Option<Message>,
    /// Free-form metadata.
    pub metadata: Option<Json>,
}

impl NewTask {
    /// A submitted task created by `message`, with store-assigned ids.
    pub fn submitted(message: Option<Message>) -> Self {
        NewTask {
            task_id: None,
            context_id: None,
            state: TaskState::Submitted,
            message,
            metadata: None,
        }
    }
}

/// A write, as [`TaskStore::prepare`] takes it.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    /// Create a task (as [`TaskStore::create`]).
    Create(NewTask),
    /// Append events to a task (as [`TaskStore::append`]).
    Append {
        /// The task.
        task_id: String,
        /// Only if the task is at exactly this version.
        expected_version: Option<u64>,
        /// The events, all or none.
        events: Vec<Event>,
    },
}

/// What a successful write did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// The task written to.
    pub task_id: String,
    /// The task's version after the write.
    pub version: u64,
    /// The log position of the write's record.
    pub position: Position,
}

/// Which terminal tasks retention deletes. Active and interrupted tasks are never deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Retention {
    /// Delete terminal tasks whose final status is older than this many milliseconds.
    pub terminal_ttl_ms: Option<u64>,
    /// Keep at most this many terminal tasks (the oldest go first).
    pub terminal_count_max: Option<usize>,
}

impl Retention {
    /// Whether the policy deletes anything at all (a limit is set).
    pub fn is_set(&self) -> bool {
        self.terminal_ttl_ms.is_some() || self.terminal_count_max.is_some()
    }

    /// Whether `error`, refusing a delete that retention judged due, only says the task is no
    /// longer the one judged (deleted, changed or re-created since): no failure of retention.
    pub fn moved_on(error: &Error) -> bool {
        matches!(
            error,
            Error::TaskNotFound { .. } | Error::VersionConflict { .. } | Error::InvalidEvent { .. }
        )
    }
}

/// What [`TaskStore::apply_retention`] did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RetentionReport {
    /// Tasks deleted.
    pub deleted: Vec<String>,
    /// Segment files removed because no live task needs them.
    pub segments_removed: usize,
    /// First position the log still holds.
    pub first_position: Position,
    /// The compaction that ran because at least half of the records it could reach belonged to
    /// deleted tasks; `None` when there was not that much to reclaim.
    pub compaction: Option<CompactReport>,
}

/// A task's latest state, as kept in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskSummary {
    /// Current version.
    pub version: u64,
    /// Current state.
    pub state: TaskState,
    /// The task's context (prints as the id it was given).
    pub context_id: crate::id::CompactId,
    /// Time of the current status.
    pub status_timestamp: Timestamp,
}

/// A `ListTasks` query.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListQuery {
    /// Only tasks of this context.
    pub context_id: Option<String>,
    /// Only tasks in this state.
    pub state: Option<TaskState>,
    /// Only tasks whose status time is at or after this.
    pub status_timestamp_after: Option<Timestamp>,
    /// Tasks per page, 1..=100 (default 50).
    pub page_size: Option<u32>,
    /// The `next_page_token` of the previous page.
    pub page_token: Option<String>,
    /// Most recent messages to keep per task (`None`: all).
    pub history_length: Option<usize>,
    /// Keep artifacts (otherwise they are left out).
    pub include_artifacts: bool,
}

/// One page of `list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListPage {
    /// The tasks, newest status first.
    pub tasks: Vec<Task>,
    /// Token of the next page; empty on the last page.
    pub next_page_token: String,
    /// The page size used.
    pub page_size: u32,
    /// Number of tasks matching the filters, over all pages.
    pub total_size: u64,
}

/// A write checked against the current state and encoded, ready for a replication layer to
/// propose (see [`TaskStore::prepare`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    /// The task written to.
    pub task_id: String,
    /// The version the write gives the task.
    pub version: u64,
    /// The event batch as a log payload (record kind [`TASK_BATCH_KIND`]).
    pub payload: Vec<u8>,
}

/// Where a replicated store's state stands: the last record applied and the replication layer's
/// own state as of it (see [`TaskStore::open_replica`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReplicaApplied {
    /// Position of the last applied record (0: none).
    pub position: Position,
    /// Its term.
    pub term: u64,
    /// The replication layer's state bytes as of that record (empty until it sets them).
    pub state: Vec<u8>,
}

/// A durable A2A task store in one directory.
pub struct TaskStore {
    log: Log,
    /// `true` when a replication layer writes the log and applies committed records.
    replica: bool,
    /// Replica: the last applied position, for tails (lock-free).
    applied: AtomicU64,
    table: Mutex<Table>,
    /// Held from a checkpoint's copy of the table to its file's rename, so that checkpoints reach
    /// the disk one at a time and in the order of the positions they cover: a compaction relies
    /// on the checkpoint it wrote (or a later one) being the one a reopen finds.
    checkpoint_file: Mutex<()>,
    /// Signalled when a task stops being busy.
    idle: Condvar,
    /// The last timestamp handed out, so timestamps never go backwards.
    clock_ms: AtomicI64,
    /// Woken when the visible position moves, for tails.
    tail_notify: Arc<Notify>,
    /// Embedded: the acknowledged position the tails were last woken for (see
    /// [`TaskStore::notify_tails`]).
    tail_notified: AtomicU64,
    /// The most recent records, by position, for subscribers and tails.
    recent: Recent,
    /// Records tails have read back from the log (tests check that live ones never are).
    #[cfg(feature = "testing")]
    tail_log_reads: AtomicU64,
    /// Task subscriptions' lookups in the table (tests check that live ones need none).
    #[cfg(feature = "testing")]
    subscription_table_lookups: AtomicU64,
    open_report: OpenReport,
    closed: bool,
}

/// What [`TaskStore::open`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenReport {
    /// The position the task checkpoint covered, if a valid one was used.
    pub checkpoint_position: Option<Position>,
    /// Log records replayed after it (all of them without a checkpoint).
    pub replayed_records: u64,
}

struct Table {
    tasks: TaskTable,
    /// Tasks with a write in flight: other writers to them wait.
    busy: HashSet<String>,
    /// What the subscribers of each watched task share (their wakeup, the latest write).
    watchers: HashMap<String, Arc<Watch>>,
    /// Writers and checkpoints waiting on `idle` (no wakeup is sent when there are none).
    waiting: usize,
    /// A checkpoint is copying the table: writes do not start.
    checkpointing: bool,
    /// Positions of event batches that failed their checks (no-ops, skipped by tails).
    rejected: BTreeSet<u64>,
    /// Replica: what was applied last.
    replica: ReplicaApplied,
}

impl Drop for TaskStore {
    fn drop(&mut self) {
        if !self.closed
            && let Err(error) = self.checkpoint()
        {
            tracing::warn!(%error, "writing the task checkpoint on drop failed; the next open replays the log");
        }
    }
}

/// Why a checkpoint that names a task twice is refused.
const REPEATED_TASK: &str = "checkpoint names a task twice";

/// A table restored from the checkpoint.
struct Restored {
    tasks: TaskTable,
    rejected: BTreeSet<u64>,
    covered_position: u64,
    replica: Option<ReplicaCheckpoint>,
}

/// Loads the checkpoint if it is valid, fits the log and was written in the same mode (embedded
/// or replica), and restores the table from it; `None` means: rebuild from the log's first
/// position.
fn restore_checkpoint(log: &Log, first: u64, last: u64, replica: bool) -> Option<Restored> {
    let bytes = match log.read_side_file(checkpoint::FILE_NAME) {
        Ok(Some(bytes)) => bytes,
        Ok(None) => return None,
        Err(error) => {
            tracing::warn!(%error, "cannot read the task checkpoint; rebuilding from the log");
            return None;
        }
    };
    let saved = match checkpoint::load(&bytes) {
        Ok(saved) => saved,
        Err(reason) => {
            tracing::warn!(%reason, "invalid task checkpoint; rebuilding from the log");
            return None;
        }
    };
    // `first >= 1` always; `covered <= last` bounds it below POSITION_MAX, so `+ 1` is safe.
    if saved.covered_position < first - 1
        || saved.covered_position > last
        || saved.replica.is_some() != replica
    {
        tracing::warn!(
            covered = saved.covered_position,
            first,
            last,
            replica,
            "the task checkpoint does not fit the log; rebuilding from the log"
        );
        return None;
    }
    let count = saved.tasks.stated_len();
    let tasks = match TaskTable::try_restore(count, saved.tasks, REPEATED_TASK.to_string()) {
        Ok(tasks) => tasks,
        Err(reason) => {
            tracing::warn!(%reason, "invalid task checkpoint; rebuilding from the log");
            return None;
        }
    };
    Some(Restored {
        tasks,
        rejected: saved.rejected.into_iter().collect(),
        covered_position: saved.covered_position,
        replica: saved.replica,
    })
}

impl TaskStore {
    /// Opens (or creates) the store in `path` and replays its log.
    ///
    /// # Errors
    /// As [`Log::open`], or [`Error::InvalidPayload`] for a record that is not an event batch.
    pub fn open(path: impl AsRef<Path>, options: Options) -> Result<Self> {
        let log = Log::open(path, options)?;
        let (first, last) = log.bounds();
        let saved = restore_checkpoint(&log, first.get(), last.get(), false);
        let replay_from = saved
            .as_ref()
            .map_or(first.get(), |c| c.covered_position + 1);
        let (mut tasks, mut rejected) = match saved {
            Some(saved) => (saved.tasks, saved.rejected),
            None => (TaskTable::default(), BTreeSet::new()),
        };
        let mut replayed = 0u64;
        let mut next = replay_from;
        while next <= last.get() {
            let entries = log.read_range(Position::new(next), 4096, 64 * 1024 * 1024)?;
            if entries.is_empty() {
                // Compaction removed every record from `next` to the end.
                break;
            }
            for entry in entries {
                next = entry.position().get() + 1;
                replayed += 1;
                if entry.kind() != TASK_BATCH_KIND {
                    continue;
                }
                let batch: EventBatch = record::decode(&entry)?;
                // A record that fails its checks is a no-op (in a cluster, a command rejected at
                // apply stays in the log); the same rule on replay keeps every node alike.
                match tasks.check(&batch, None) {
                    Ok(()) => tasks.apply(entry.position().get(), &batch),
                    Err(error) => {
                        tracing::debug!(position = next - 1, %error, "skipping a rejected record");
                        rejected.insert(next - 1);
                    }
                }
            }
        }
        let open_report = OpenReport {
            checkpoint_position: (replay_from > first.get())
                .then(|| Position::new(replay_from - 1)),
            replayed_records: replayed,
        };
        Ok(TaskStore::new(
            log,
            false,
            tasks,
            rejected,
            ReplicaApplied::default(),
            open_report,
        ))
    }

    /// Opens the store of a replicated node. A replication layer (`tasklog-raft`) owns the log:
    /// it appends entries at their positions and terms (see [`TaskStore::log`]), then hands each
    /// committed record to [`TaskStore::apply_batch`] or [`TaskStore::apply_other`], in position
    /// order. Opening loads the checkpoint and applies nothing after it: which later records are
    /// committed is the replication layer's knowledge, so it re-applies them.
    /// [`TaskStore::replica_applied`] says where the state stands.
    ///
    /// Reads, subscriptions and tails see applied records only; the embedded write methods
    /// (`create`, `append`, …) refuse, and [`TaskStore::prepare`] encodes writes instead.
    ///
    /// # Errors
    /// As [`Log::open`].
    pub fn open_replica(path: impl AsRef<Path>, options: Options) -> Result<Self> {
        let log = Log::open(path, options)?;
        let (first, last) = log.bounds();
        let (tasks, rejected, applied) =
            match restore_checkpoint(&log, first.get(), last.get(), true) {
                Some(saved) => {
                    let replica = saved.replica.unwrap_or(ReplicaCheckpoint {
                        applied_term: 0,
                        state: Vec::new(),
                    });
                    (
                        saved.tasks,
                        saved.rejected,
                        ReplicaApplied {
                            position: Position::new(saved.covered_position),
                            term: replica.applied_term,
                            state: replica.state,
                        },
                    )
                }
                None => (
                    TaskTable::default(),
                    BTreeSet::new(),
                    ReplicaApplied {
                        position: Position::new(first.get() - 1),
                        term: 0,
                        state: Vec::new(),
                    },
                ),
            };
        let open_report = OpenReport {
            checkpoint_position: (applied.position.get() >= first.get())
                .then_some(applied.position),
            replayed_records: 0,
        };
        Ok(TaskStore::new(
            log,
            true,
            tasks,
            rejected,
            applied,
            open_report,
        ))
    }

    fn new(
        log: Log,
        replica: bool,
        tasks: TaskTable,
        rejected: BTreeSet<u64>,
        applied: ReplicaApplied,
        open_report: OpenReport,
    ) -> Self {
        TaskStore {
            log,
            replica,
            applied: AtomicU64::new(applied.position.get()),
            checkpoint_file: Mutex::new(()),
            table: Mutex::new(Table {
                tasks,
                busy: HashSet::new(),
                watchers: HashMap::new(),
                waiting: 0,
                checkpointing: false,
                rejected,
                replica: applied,
            }),
            idle: Condvar::new(),
            clock_ms: AtomicI64::new(0),
            tail_notify: Arc::new(Notify::new()),
            tail_notified: AtomicU64::new(0),
            recent: Recent::new(),
            #[cfg(feature = "testing")]
            tail_log_reads: AtomicU64::new(0),
            #[cfg(feature = "testing")]
            subscription_table_lookups: AtomicU64::new(0),
            open_report,
            closed: false,
        }
    }

    /// What opening found: the checkpoint used (if any) and how many records were replayed.
    pub fn open_report(&self) -> OpenReport {
        self.open_report
    }

    /// Writes the task-table checkpoint, so that the next open replays only later records.
    /// Writes wait while the table is copied (new ones do not start until it is).
    ///
    /// # Errors
    /// I/O errors writing the file.
    pub fn checkpoint(&self) -> Result<Position> {
        // After a failed write the log may hold a record the table never applied; a checkpoint
        // would claim to cover it. The next open replays from the last good checkpoint instead.
        if self.log.is_poisoned() {
            return Err(Error::Poisoned {
                cause: "no checkpoint of a poisoned store".into(),
            });
        }
        let _file = lock(&self.checkpoint_file);
        let (covered, _, bytes) = self.snapshot_table();
        self.log.write_side_file(checkpoint::FILE_NAME, &bytes)?;
        Ok(Position::new(covered))
    }

    /// The table encoded as a checkpoint file, as of the log's end (embedded; writes wait while
    /// it is encoded) or of the last applied record (replica), with that position and the
    /// replica part.
    fn snapshot_table(&self) -> (u64, Option<ReplicaCheckpoint>, Vec<u8>) {
        let mut table = lock(&self.table);
        table.checkpointing = true;
        // Only with no write in flight is every record up to the log's end applied.
        while !table.busy.is_empty() {
            table = self.wait_idle(table);
        }
        let (covered, replica) = if self.replica {
            (
                table.replica.position.get(),
                Some(ReplicaCheckpoint {
                    applied_term: table.replica.term,
                    state: table.replica.state.clone(),
                }),
            )
        } else {
            (self.log.bounds().1.get(), None)
        };
        let bytes = checkpoint::encode_parts(
            covered,
            table.tasks.len(),
            table
                .tasks
                .iter_ranked()
                .map(|(id, meta)| TaskView::of_meta(id, meta)),
            table.rejected.range(..=covered).copied(),
            table.rejected.range(..=covered).count(),
            replica.as_ref(),
        );
        table.checkpointing = false;
        self.wake_idle(table);
        (covered, replica, bytes)
    }

    /// The underlying log (read positions, bounds, sync).
    pub fn log(&self) -> &Log {
        &self.log
    }

    /// Number of live tasks.
    pub fn len(&self) -> usize {
        lock(&self.table).tasks.len()
    }

    /// Whether the store holds no task.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The task's current version, if it exists.
    pub fn version(&self, task_id: &str) -> Option<u64> {
        lock(&self.table)
            .tasks
            .get(task_id)
            .map(|meta| meta.version)
    }

    /// The task's latest state, version, context and status time, from memory (no log read).
    pub fn summary(&self, task_id: &str) -> Option<TaskSummary> {
        let table = lock(&self.table);
        table.tasks.get(task_id).map(|meta| TaskSummary {
            version: meta.version,
            state: meta.state,
            context_id: meta.context_id.clone(),
            status_timestamp: meta.status_timestamp,
        })
    }

    /// Creates a task; with `task_id` set, only if no task has that id.
    ///
    /// # Errors
    /// [`Error::TaskExists`], [`Error::InvalidEvent`] (unspecified state), [`Error::InvalidArgument`]
    /// (ids too long), [`Error::TooLarge`], and log errors.
    pub fn create(&self, new: NewTask) -> Result<Written> {
        let (task_id, expected_version, events) = self.write_parts(Write::Create(new))?;
        self.write(task_id, expected_version, events)
    }

    /// Appends events to an existing task, atomically: all of them or none. With
    /// `expected_version`, only if the task is at exactly that version (optimistic concurrency).
    ///
    /// # Errors
    /// [`Error::TaskNotFound`], [`Error::VersionConflict`] (with the actual version),
    /// [`Error::TaskTerminal`], [`Error::InvalidEvent`], [`Error::TooLarge`], and log errors.
    /// A rejected write changes nothing.
    pub fn append(
        &self,
        task_id: &str,
        expected_version: Option<u64>,
        events: Vec<Event>,
    ) -> Result<Written> {
        self.write(task_id.to_string(), expected_version, events)
    }

    /// Cancels a task that is not terminal (interrupted states included).
    ///
    /// # Errors
    /// [`Error::TaskTerminal`] when it already ended, [`Error::TaskNotFound`].
    pub fn cancel(&self, task_id: &str) -> Result<Written> {
        self.append(
            task_id,
            None,
            vec![Event::Status(TaskStatus::new(TaskState::Canceled))],
        )
    }

    /// The task as A2A's `GetTask` returns it, folded from its events; `history_length` keeps the
    /// most recent messages (`Some(0)`: none).
    ///
    /// # Errors
    /// [`Error::TaskNotFound`], log read errors, and [`Error::InvalidPayload`] when a record the
    /// task table names is not the task's next batch (a checkpoint that does not match the log).
    pub fn get(&self, task_id: &str, history_length: Option<usize>) -> Result<Task> {
        let positions = |store: &Self| {
            lock(&store.table)
                .tasks
                .get(task_id)
                .map(|meta| {
                    meta.batches
                        .as_slice()
                        .iter()
                        .map(|(position, _)| *position)
                        .collect::<Vec<_>>()
                })
                .ok_or_else(|| Error::TaskNotFound {
                    task_id: task_id.to_string(),
                })
        };
        let first = positions(self)?;
        match self.fold_task(task_id, &first, history_length) {
            // Deleted, and its records purged or compacted away, since its positions were read:
            // the task is gone (or its id was taken again, and its new records are read).
            Err(error @ (Error::NotFound { .. } | Error::Compacted { .. })) => {
                let again = positions(self)?;
                if again == first {
                    return Err(error);
                }
                self.fold_task(task_id, &again, history_length)
            }
            folded => folded,
        }
    }

    /// The task folded from its batches at `positions` (oldest first, as the table lists them):
    /// each taken from the batches remembered for subscribers if it is still there (no read, no
    /// decode), else read from the log.
    fn fold_task(
        &self,
        task_id: &str,
        positions: &[u64],
        history_length: Option<usize>,
    ) -> Result<Task> {
        let mut task = None;
        let mut version = 0u64;
        for &position in positions {
            let batch = match self.recent_batch(position) {
                Some(batch) => batch,
                None => Arc::new(record::decode(&self.log.read(Position::new(position))?)?),
            };
            check_listed_batch(&batch, position, task_id, version.saturating_add(1))?;
            version = batch.last_version();
            fold(&mut task, &batch);
        }
        let mut task = task.ok_or_else(|| Error::TaskNotFound {
            task_id: task_id.to_string(),
        })?;
        if let Some(keep) = history_length {
            let drop = task.history.len().saturating_sub(keep);
            task.history.drain(..drop);
        }
        Ok(task)
    }

    /// A page of tasks, newest status first, filtered. The page token stays valid while tasks
    /// change: it names the last task returned by its status time and id, not by an offset.
    /// The page is chosen from the table's indexes (see [`TaskTable::list`]) under one lock, and
    /// each task on it is folded, as of that moment, from its records in the log.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a page size outside 1..=100 or a bad token; as
    /// [`TaskStore::get`] for reading a listed task.
    pub fn list(&self, query: &ListQuery) -> Result<ListPage> {
        let page_size = query.page_size.unwrap_or(limits::LIST_PAGE_SIZE_DEFAULT);
        if !(1..=limits::LIST_PAGE_SIZE_MAX).contains(&page_size) {
            return Err(Error::InvalidArgument(format!(
                "page size {page_size} is outside 1..={}",
                limits::LIST_PAGE_SIZE_MAX
            )));
        }
        let cursor = match query.page_token.as_deref() {
            None | Some("") => None,
            Some(token) => Some(decode_token(token)?),
        };
        let filter = ListFilter {
            context_id: query.context_id.as_deref(),
            state: query.state,
            status_timestamp_after: query.status_timestamp_after,
        };
        let (listed, total_size, more) = {
            let table = lock(&self.table);
            let slice = table
                .tasks
                .list(&filter, cursor.as_ref(), page_size as usize);
            let listed: Vec<(OrderKey, Vec<u64>)> = slice
                .tasks
                .iter()
                .map(|(id, meta)| {
                    let positions = meta.batches.as_slice().iter().map(|(p, _)| *p);
                    (
                        (std::cmp::Reverse(meta.status_timestamp), (*id).clone()),
                        positions.collect(),
                    )
                })
                .collect();
            (listed, slice.total, slice.more)
        };
        let mut tasks = Vec::with_capacity(listed.len());
        for ((_, task_id), positions) in &listed {
            let task_id = task_id.to_string();
            match self.fold_task(&task_id, positions, query.history_length) {
                Ok(mut task) => {
                    if !query.include_artifacts {
                        task.artifacts.clear();
                    }
                    tasks.push(task);
                }
                // Deleted, and its records purged or compacted away, since the page was chosen
                // (perhaps with another task created under its id since): not on this page.
                Err(Error::NotFound { .. } | Error::Compacted { .. })
                    if self.created(&task_id) != positions.first().copied() => {}
                Err(error) => return Err(error),
            }
        }
        let next_page_token = match listed.last() {
            Some((last, _)) if more => encode_token(last),
            _ => String::new(),
        };
        Ok(ListPage {
            tasks,
            next_page_token,
            page_size,
            total_size,
        })
    }

    /// Checks the task table's indexes against its tasks (O(n)); for tests.
    ///
    /// # Errors
    /// What is inconsistent.
    #[cfg(feature = "testing")]
    pub fn check_indexes(&self) -> std::result::Result<(), String> {
        lock(&self.table).tasks.check_indexes()
    }

    /// Simulates a crash for tests: no checkpoint, no final sync (see [`Log::crash`]).
    #[cfg(feature = "testing")]
    pub fn crash(mut self) {
        self.closed = true;
        self.log.crash_in_place();
    }

    /// Writes a checkpoint, then flushes and closes the log.
    ///
    /// # Errors
    /// The checkpoint's or the log's close error.
    pub fn close(mut self) -> Result<()> {
        self.closed = true;
        let checkpointed = self.checkpoint().map(drop);
        let closed = self.log.shutdown();
        checkpointed.and(closed)
    }

    /// Checks a write against the current state and encodes it, without writing: a replicated
    /// node's leader proposes the payload, and every node decides at apply
    /// ([`TaskStore::apply_batch`]) whether it still holds, so a write that raced another one to
    /// the same task is rejected there. `new_task` creates (insert-if-absent when it names an id);
    /// otherwise `events` go to `task_id`.
    ///
    /// # Errors
    /// As [`TaskStore::create`] and [`TaskStore::append`], decided on the current (applied) state.
    pub fn prepare(&self, write: Write) -> Result<Prepared> {
        let (task_id, expected_version, events) = self.write_parts(write)?;
        let table = lock(&self.table);
        let batch = self.build(&table, task_id, expected_version, events)?;
        drop(table);
        let payload = encode_batch(&batch)?;
        Ok(Prepared {
            task_id: batch.task_id.clone(),
            version: batch.last_version(),
            payload: payload.to_vec(),
        })
    }

    fn write_parts(&self, write: Write) -> Result<(String, Option<u64>, Vec<Event>)> {
        Ok(match write {
            Write::Create(new) => {
                let task_id = new
                    .task_id
                    .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
                let context_id = new
                    .context_id
                    .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
                check_id("context id", &context_id)?;
                let created = Event::Created {
                    context_id,
                    status: TaskStatus::new(new.state),
                    message: new.message,
                    metadata: new.metadata,
                };
                (task_id, Some(0), vec![created])
            }
            Write::Append {
                task_id,
                expected_version,
                events,
            } => (task_id, expected_version, events),
        })
    }

    /// The stamped batch a write makes, checked against the table.
    fn build(
        &self,
        table: &Table,
        task_id: String,
        expected_version: Option<u64>,
        events: Vec<Event>,
    ) -> Result<EventBatch> {
        check_id("task id", &task_id)?;
        let actual = table.tasks.get(&task_id).map_or(0, |meta| meta.version);
        let mut batch = EventBatch {
            task_id,
            first_version: actual + 1,
            timestamp: Timestamp(self.now()),
            events,
        };
        stamp(&mut batch);
        table.tasks.check(&batch, expected_version)?;
        Ok(batch)
    }

    fn write(
        &self,
        task_id: String,
        expected_version: Option<u64>,
        events: Vec<Event>,
    ) -> Result<Written> {
        if self.replica {
            return Err(Error::InvalidArgument(
                "a replicated store is written through its replication layer".into(),
            ));
        }
        check_id("task id", &task_id)?;
        let mut table = lock(&self.table);
        // A checkpoint waits for the writes in flight; new ones wait for it, or a steady stream
        // of writers would keep it waiting for ever.
        while table.checkpointing || table.busy.contains(&task_id) {
            table = self.wait_idle(table);
        }
        let batch = Arc::new(self.build(&table, task_id, expected_version, events)?);
        table.busy.insert(batch.task_id.clone());
        drop(table);
        let busy = BusyGuard {
            store: self,
            task_id: &batch.task_id,
        };

        // The batch is remembered as its position is handed out, before it can be acknowledged:
        // a tail that sees the position committed finds it in memory, never in the file. The
        // batch it displaces is freed after the append, not under the log's queue lock.
        let mut displaced = None;
        let appended = encode_batch(&batch).and_then(|bytes| {
            self.log.append_announced(
                &[NewRecord::new(TASK_BATCH_KIND, &bytes)],
                &mut |appended| {
                    displaced = self.remember(appended.first.get(), Some(batch.clone()));
                },
            )
        });
        drop(displaced);
        if appended.is_ok() {
            self.notify_tails();
        }

        let mut table = lock(&self.table);
        table.busy.remove(&batch.task_id);
        std::mem::forget(busy);
        let mut watch = None;
        let result = appended.map(|appended| {
            watch = Self::apply_watched(&mut table, appended.first.get(), &batch);
            Written {
                task_id: batch.task_id.clone(),
                version: batch.last_version(),
                position: appended.first,
            }
        });
        self.wake_idle(table);
        if let Some(watch) = watch {
            watch.notify.notify_waiters();
        }
        result
    }

    /// Replica: applies the committed event batch at `position` (written by `term`), deciding
    /// exactly as every other node does. A batch that no longer holds (another write got to its
    /// task first, the task ended, …) or does not decode is rejected: it stays in the log as a
    /// no-op that reads, subscriptions and tails skip, and the error says why.
    ///
    /// Returns `Ok(Ok(written))`, or `Ok(Err(rejection))` with the rejection typed as for
    /// embedded writes ([`Error::VersionConflict`] with the actual version,
    /// [`Error::TaskExists`], …) after the position was applied as a no-op.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the store is not a replica or `position` is not after the
    /// last applied one (nothing changes).
    pub fn apply_batch(
        &self,
        position: Position,
        term: u64,
        payload: &[u8],
    ) -> Result<std::result::Result<Written, Error>> {
        let decoded = record::decode_bytes::<EventBatch>(position.get(), payload);
        let mut table = lock(&self.table);
        self.check_next(&table, position)?;
        let checked = decoded.and_then(|batch| {
            let expected = batch.first_version.checked_sub(1);
            table.tasks.check(&batch, expected).map(|()| batch)
        });
        table.replica.position = position;
        table.replica.term = term;
        let result = match checked {
            Ok(batch) => {
                let watch = Self::apply_watched(&mut table, position.get(), &batch);
                let written = Written {
                    task_id: batch.task_id.clone(),
                    version: batch.last_version(),
                    position,
                };
                drop(table);
                drop(self.remember(position.get(), Some(Arc::new(batch))));
                if let Some(watch) = watch {
                    watch.notify.notify_waiters();
                }
                Ok(written)
            }
            Err(error) => {
                table.rejected.insert(position.get());
                drop(table);
                drop(self.remember(position.get(), None));
                Err(error)
            }
        };
        self.applied.store(position.get(), Ordering::SeqCst);
        self.tail_notify.notify_waiters();
        Ok(result)
    }

    /// Replica: applies a committed record that is not an event batch (the replication layer's
    /// own, such as a membership change). `state`, if given, replaces the replication layer's
    /// state bytes kept with the checkpoint ([`ReplicaApplied::state`]).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the store is not a replica or `position` is not after the
    /// last applied one.
    pub fn apply_other(&self, position: Position, term: u64, state: Option<Vec<u8>>) -> Result<()> {
        let mut table = lock(&self.table);
        self.check_next(&table, position)?;
        table.replica.position = position;
        table.replica.term = term;
        if let Some(state) = state {
            table.replica.state = state;
        }
        drop(table);
        drop(self.remember(position.get(), None));
        self.applied.store(position.get(), Ordering::SeqCst);
        self.tail_notify.notify_waiters();
        Ok(())
    }

    fn check_next(&self, table: &Table, position: Position) -> Result<()> {
        if !self.replica {
            return Err(Error::InvalidArgument(
                "only a replicated store applies committed records".into(),
            ));
        }
        // Positions only grow; a gap is allowed (openraft's storage suite applies entries with
        // gaps to a bare state machine), a repeat or a step back is not.
        let applied = table.replica.position;
        if position <= applied {
            return Err(Error::InvalidArgument(format!(
                "apply at position {position}, but position {applied} is applied already"
            )));
        }
        Ok(())
    }

    /// Replica: the last applied record and the replication layer's state as of it; `None` for an
    /// embedded store.
    pub fn replica_applied(&self) -> Option<ReplicaApplied> {
        self.replica.then(|| lock(&self.table).replica.clone())
    }

    /// Replica: the state as a checkpoint image (the task table as of the last applied record),
    /// for a snapshot, and where it stands; [`TaskStore::install_snapshot`] restores it on another
    /// node.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an embedded store.
    pub fn snapshot(&self) -> Result<(ReplicaApplied, Vec<u8>)> {
        if !self.replica {
            return Err(Error::InvalidArgument(
                "only a replicated store makes snapshots".into(),
            ));
        }
        let (covered, replica, bytes) = self.snapshot_table();
        let replica = replica.unwrap_or(ReplicaCheckpoint {
            applied_term: 0,
            state: Vec::new(),
        });
        let applied = ReplicaApplied {
            position: Position::new(covered),
            term: replica.applied_term,
            state: replica.state,
        };
        Ok((applied, bytes))
    }

    /// Replica: replaces the state with a snapshot made by [`TaskStore::snapshot`] (on any node)
    /// and makes it the checkpoint. The caller has made the log hold the records the snapshot's
    /// tasks refer to. Subscriptions and tails continue from the snapshot's position.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an embedded store or a snapshot that does not decode or
    /// was not made by a replica; I/O errors writing the checkpoint.
    pub fn install_snapshot(&self, bytes: &[u8]) -> Result<ReplicaApplied> {
        if !self.replica {
            return Err(Error::InvalidArgument(
                "only a replicated store installs snapshots".into(),
            ));
        }
        let (tasks, applied, rejected) = decode_snapshot(bytes)?;
        let _file = lock(&self.checkpoint_file);
        self.log.write_side_file(checkpoint::FILE_NAME, bytes)?;
        let mut table = lock(&self.table);
        table.tasks = tasks;
        table.rejected = rejected;
        table.replica = applied.clone();
        let Table {
            tasks, watchers, ..
        } = &*table;
        let watchers: Vec<Arc<Watch>> = watchers
            .iter()
            .map(|(task_id, watch)| {
                watch.refresh(tasks.get(task_id));
                watch.clone()
            })
            .collect();
        drop(table);
        self.recent.clear();
        self.applied.store(applied.position.get(), Ordering::SeqCst);
        for watch in watchers {
            watch.notify.notify_waiters();
        }
        self.tail_notify.notify_waiters();
        Ok(applied)
    }

    /// The last position readers may see: durable (embedded) or applied (replica).
    pub(crate) fn visible_position(&self) -> Position {
        if self.replica {
            Position::new(self.applied.load(Ordering::SeqCst))
        } else {
            self.log.acknowledged_position()
        }
    }

    /// Wakes the tails once per acknowledged position, not once per write: the writers of one
    /// group commit return together, and the first of them wakes the tails for all.
    ///
    /// No tail misses a wakeup: a tail registers, then reads the acknowledged position `c`. Once
    /// the log acknowledges more, some writer covered by that acknowledgement reads a larger
    /// position after its append returns (every embedded record is a writer's), so either its
    /// `fetch_max` raises `tail_notified` and it wakes the tails, or an earlier `fetch_max`
    /// already raised it past `c`, by a writer that read the acknowledged position after the
    /// tail read `c` and wakes the tails after that read, so after the tail registered.
    fn notify_tails(&self) {
        let acknowledged = self.log.acknowledged_position().get();
        if self.tail_notified.fetch_max(acknowledged, Ordering::SeqCst) < acknowledged {
            self.tail_notify.notify_waiters();
        }
    }

    /// Whether the batch at `position` was rejected (a no-op).
    pub(crate) fn is_rejected(&self, position: u64) -> bool {
        lock(&self.table).rejected.contains(&position)
    }

    /// Keeps a just-written batch for subscribers and tails, so that each of them does not read
    /// and decode it from the log again. Embedded writes call it as the log hands out their
    /// position (under the log's appenders' lock, which is why it takes only one slot's lock,
    /// held for a pointer copy), replicas as they apply.
    /// Returns the batch it displaced from memory, to be dropped outside any lock.
    fn remember(&self, position: u64, batch: Option<Arc<EventBatch>>) -> Option<Arc<EventBatch>> {
        self.recent.insert(position, batch)
    }

    /// The remembered records at consecutive positions `from`, `from + 1`, … up to `to`, at most
    /// `max` of them, under one lock (empty if `from` is not remembered); `None` for a record that
    /// is no batch to deliver.
    pub(crate) fn recent_run(
        &self,
        from: u64,
        to: u64,
        max: usize,
    ) -> Vec<(Position, Option<Arc<EventBatch>>)> {
        self.recent.run(from, to, max)
    }

    /// A recently written batch, if it is still remembered.
    pub(crate) fn recent_batch(&self, position: u64) -> Option<Arc<EventBatch>> {
        self.recent.get(position).flatten()
    }

    /// Counts a record a tail read back from the log (see [`TaskStore::tail_log_reads`]).
    pub(crate) fn count_tail_log_read(&self) {
        #[cfg(feature = "testing")]
        self.tail_log_reads.fetch_add(1, Ordering::Relaxed);
    }

    /// Records tails have read from the log rather than from memory, since open; for tests.
    #[cfg(feature = "testing")]
    pub fn tail_log_reads(&self) -> u64 {
        self.tail_log_reads.load(Ordering::Relaxed)
    }

    /// Times task subscriptions looked their next batch up in the table rather than in their
    /// task's watch, since open; for tests.
    #[cfg(feature = "testing")]
    pub fn subscription_table_lookups(&self) -> u64 {
        self.subscription_table_lookups.load(Ordering::Relaxed)
    }

    /// Whether the record at `position` is remembered (as a batch or not).
    pub(crate) fn remembers(&self, position: u64) -> bool {
        self.recent.get(position).is_some()
    }

    /// Deletes a terminal task: a `Deleted` event, so a replicated log carries the same decision.
    ///
    /// # Errors
    /// [`Error::InvalidEvent`] when the task is not terminal, [`Error::TaskNotFound`].
    pub fn delete(&self, task_id: &str) -> Result<Written> {
        self.append(task_id, None, vec![Event::Deleted])
    }

    /// The terminal tasks that `policy` says are too old or too many as of `now`, oldest status
    /// first, at most `max` of them, each with its version (a delete made with it as the
    /// expected version removes exactly the task that was judged). A replication layer's leader
    /// proposes their deletes; [`TaskStore::apply_retention`] makes them itself.
    pub fn retention_due(
        &self,
        policy: &Retention,
        now: Timestamp,
        max: usize,
    ) -> Vec<(String, u64)> {
        if !policy.is_set() {
            return Vec::new();
        }
        let table = lock(&self.table);
        let over_count = policy
            .terminal_count_max
            .map_or(0, |keep| table.tasks.terminal_count().saturating_sub(keep));
        let ttl_ms = policy
            .terminal_ttl_ms
            .map(|ttl| i64::try_from(ttl).unwrap_or(i64::MAX));
        // Oldest first: once a task is neither over the count nor expired, no later one is.
        table
            .tasks
            .terminal_oldest()
            .enumerate()
            .take_while(|(i, (_, meta))| {
                *i < over_count
                    || ttl_ms
                        .is_some_and(|ttl| meta.status_timestamp.0.saturating_add(ttl) <= now.0)
            })
            .take(max)
            .map(|(_, (task_id, meta))| (task_id.to_string(), meta.version))
            .collect()
    }

    /// Deletes the terminal tasks that `policy` says are too old or too many, as of `now`, then
    /// removes the whole segments that no live task needs any more.
    ///
    /// # Errors
    /// Log errors. A task that changed meanwhile is skipped, not an error.
    pub fn apply_retention(&self, policy: &Retention, now: Timestamp) -> Result<RetentionReport> {
        let mut report = RetentionReport::default();
        for (task_id, version) in self.retention_due(policy, now, usize::MAX) {
            match self.append(&task_id, Some(version), vec![Event::Deleted]) {
                Ok(_) => report.deleted.push(task_id),
                Err(error) if Retention::moved_on(&error) => {}
                Err(error) => return Err(error),
            }
        }
        // The next open must not need records the purge removes: checkpoint first.
        let covered = self.checkpoint()?.get();
        let before = self.log.segment_count();
        let keep_from = lock(&self.table).tasks.first_live_position();
        let purge_to = keep_from.unwrap_or(self.log.next_position().get());
        self.log.purge_before(Position::new(purge_to))?;
        report.segments_removed = before.saturating_sub(self.log.segment_count());
        let horizon = covered + 1;
        let live = self.live_positions(horizon);
        // Only records in segments a pass can reach count, live ones included.
        let (reachable, end) = self.log.compactable(horizon);
        let live_reachable = live.partition_point(|p| *p <= end) as u64;
        let garbage = reachable.saturating_sub(live_reachable);
        if garbage > 0 && garbage >= live_reachable {
            report.compaction = Some(
                self.log
                    .compact(horizon, &|p| live.binary_search(&p).is_ok())?,
            );
        }
        report.first_position = self.log.bounds().0;
        Ok(report)
    }

    /// Reclaims the space of deleted tasks now: writes a checkpoint, then has the log rewrite its
    /// sealed segments without their records ([`Log::compact`]). [`TaskStore::apply_retention`]
    /// does the same on its own once deleted tasks hold at least half of the records it could
    /// reach. Reads, writes and subscriptions go on meanwhile; a subscription still replaying a
    /// task deleted before the pass may meet [`Error::Compacted`].
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] on a replicated store (its log is the replication layer's);
    /// checkpoint and log errors.
    pub fn compact(&self) -> Result<CompactReport> {
        if self.replica {
            return Err(Error::InvalidArgument(
                "a replicated store's log is compacted by its replication layer".into(),
            ));
        }
        let horizon = self.checkpoint()?.get() + 1;
        let live = self.live_positions(horizon);
        self.log
            .compact(horizon, &|p| live.binary_search(&p).is_ok())
    }

    /// The positions, sorted, of the live tasks' records before `horizon`. A checkpoint covering
    /// `horizon - 1` must exist: then a reopen needs no record outside this set before `horizon`
    /// (a task deleted after the checkpoint is replayed from it up to its deletion, which lies
    /// after the horizon, without reading its earlier records).
    fn live_positions(&self, horizon: u64) -> Vec<u64> {
        let table = lock(&self.table);
        let mut live: Vec<u64> = table
            .tasks
            .iter()
            .flat_map(|(_, meta)| meta.batches.as_slice().iter().map(|(p, _)| *p))
            .filter(|p| *p < horizon)
            .collect();
        drop(table);
        live.sort_unstable();
        live
    }

    /// Follows a task: first its events from `from_version` on (1: all of them), then each new
    /// write as it becomes durable. [`TaskSubscription::caught_up`] says where the replay ends.
    ///
    /// # Errors
    /// [`Error::TaskNotFound`].
    pub fn subscribe(
        self: &Arc<Self>,
        task_id: &str,
        from_version: u64,
    ) -> Result<TaskSubscription> {
        let mut table = lock(&self.table);
        let (version, position, created) = table
            .tasks
            .get(task_id)
            .map(|meta| {
                (
                    meta.version,
                    meta.batches
                        .as_slice()
                        .last()
                        .map_or(0, |(position, _)| *position),
                    subscribe::created(meta),
                )
            })
            .ok_or_else(|| Error::TaskNotFound {
                task_id: task_id.to_string(),
            })?;
        let Table {
            tasks, watchers, ..
        } = &mut *table;
        let watch = watchers
            .entry(task_id.to_string())
            .or_insert_with(|| Arc::new(Watch::new(tasks.get(task_id))))
            .clone();
        drop(table);
        let caught_up = CaughtUp {
            version,
            position: Position::new(position),
        };
        Ok(TaskSubscription::new(
            self.clone(),
            task_id.to_string(),
            created,
            from_version.max(1),
            watch,
            caught_up,
        ))
    }

    /// Follows every write to the store from log position `from` on.
    /// [`Tail::caught_up`] names the last record committed when the tail began.
    pub fn tail(self: &Arc<Self>, from: Position) -> Tail {
        let caught_up = CaughtUp {
            version: 0,
            position: self.visible_position(),
        };
        Tail::new(
            self.clone(),
            from.get().max(1),
            self.tail_notify.clone(),
            caught_up,
        )
    }

    /// Where the batch holding `version` of a task first written at `created` is; `None` if the
    /// task does not exist (or another one has its id).
    pub(crate) fn batch_for(
        &self,
        task_id: &str,
        version: u64,
        created: u64,
    ) -> Option<BatchLookup> {
        #[cfg(feature = "testing")]
        self.subscription_table_lookups
            .fetch_add(1, Ordering::Relaxed);
        let table = lock(&self.table);
        let meta = table
            .tasks
            .get(task_id)
            .filter(|meta| subscribe::created(meta) == created)?;
        if version > meta.version {
            return Some(if meta.state.is_terminal() {
                BatchLookup::Finished
            } else {
                BatchLookup::NotYet
            });
        }
        let batches = meta.batches.as_slice();
        let at = batches.partition_point(|(_, last_version)| *last_version < version);
        batches
            .get(at)
            .map(|(position, _)| BatchLookup::At(*position))
    }

    /// The position of the task's first batch, if it exists (see [`subscribe::created`]).
    pub(crate) fn created(&self, task_id: &str) -> Option<u64> {
        lock(&self.table).tasks.get(task_id).map(subscribe::created)
    }

    /// Drops a task's wakeup once its last subscriber goes.
    pub(crate) fn unwatch(&self, task_id: &str, watch: &Arc<Watch>) {
        let mut table = lock(&self.table);
        // The map holds one reference and the departing subscription another.
        if table
            .watchers
            .get(task_id)
            .is_some_and(|w| Arc::ptr_eq(w, watch) && Arc::strong_count(w) <= 2)
        {
            table.watchers.remove(task_id);
        }
    }

    /// Applies a durable batch to the table and brings the task's watch, if it has one, up to
    /// date under the same lock; returns the watch, to be woken once the lock is released.
    fn apply_watched(table: &mut Table, position: u64, batch: &EventBatch) -> Option<Arc<Watch>> {
        table.tasks.apply(position, batch);
        let watch = table.watchers.get(&batch.task_id)?;
        watch.written(table.tasks.get(&batch.task_id), batch);
        Some(watch.clone())
    }

    /// Waits on `idle`, counted so that [`TaskStore::wake_idle`] knows someone does.
    fn wait_idle<'a>(&self, mut table: MutexGuard<'a, Table>) -> MutexGuard<'a, Table> {
        table.waiting += 1;
        let mut table = self
            .idle
            .wait(table)
            .unwrap_or_else(PoisonError::into_inner);
        table.waiting -= 1;
        table
    }

    /// Releases the table and wakes whoever waits on `idle` (no system call when no one does).
    fn wake_idle(&self, table: MutexGuard<'_, Table>) {
        let waiting = table.waiting > 0;
        drop(table);
        if waiting {
            self.idle.notify_all();
        }
    }

    /// Wall-clock milliseconds, never below the last value handed out.
    fn now(&self) -> i64 {
        let wall = Timestamp::now().0;
        let previous = self.clock_ms.fetch_max(wall, Ordering::SeqCst);
        wall.max(previous)
    }
}

/// Gives every status without a timestamp the batch's, so the log holds concrete times.
fn stamp(batch: &mut EventBatch) {
    for event in &mut batch.events {
        match event {
            Event::Created { status, .. } | Event::Status(status) => {
                status.timestamp.get_or_insert(batch.timestamp);
            }
            _ => {}
        }
    }
}

/// A batch as a log payload, within the size limit.
fn encode_batch(batch: &EventBatch) -> Result<rkyv::util::AlignedVec> {
    let bytes = record::to_payload(batch)?;
    if bytes.len() > limits::EVENT_BATCH_BYTES_MAX {
        return Err(Error::TooLarge {
            what: "event batch",
            len: bytes.len() as u64,
            max: limits::EVENT_BATCH_BYTES_MAX as u64,
        });
    }
    Ok(bytes)
}

fn check_id(what: &str, id: &str) -> Result<()> {
    if id.is_empty() || id.len() > limits::TASK_ID_BYTES_MAX {
        return Err(Error::InvalidArgument(format!(
            "{what} must be 1..={} bytes, got {}",
            limits::TASK_ID_BYTES_MAX,
            id.len()
        )));
    }
    Ok(())
}

/// `v1:<status ms>:<task id>`, base64url without padding: opaque to clients.
fn encode_token(key: &OrderKey) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("v1:{}:{}", key.0.0.0, key.1))
}

fn decode_token(token: &str) -> Result<OrderKey> {
    let bad = || Error::InvalidArgument(format!("invalid page token {token:?}"));
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let rest = text.strip_prefix("v1:").ok_or_else(bad)?;
    let (millis, task_id) = rest.split_once(':').ok_or_else(bad)?;
    let millis: i64 = millis.parse().map_err(|_| bad())?;
    Ok((
        std::cmp::Reverse(Timestamp(millis)),
        crate::id::CompactId::new(task_id),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    /// Goal: a writer that panics between marking its task busy and applying its record neither
    /// leaves the task's other writers nor checkpoints waiting for ever, and the store refuses
    /// further writes (what reached the log is unknown). Method: the write path's guard dropped
    /// by an injected panic; then a write and a checkpoint from another thread, with a deadline.
    #[test]
    fn a_write_that_panics_frees_its_task_and_poisons_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(TaskStore::open(dir.path(), Options::default()).unwrap());
        let id = store.create(NewTask::submitted(None)).unwrap().task_id;
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            lock(&store.table).busy.insert(id.clone());
            let _busy = BusyGuard {
                store: &store,
                task_id: &id,
            };
            panic!("a bug inside a write");
        }));
        assert!(panicked.is_err());

        let (done_tx, done_rx) = mpsc::channel();
        let other = {
            let (store, id) = (store.clone(), id.clone());
            std::thread::spawn(move || {
                let write = store.append(
                    &id,
                    None,
                    vec![Event::Message(Message::text(
                        "m",
                        crate::model::Role::Agent,
                        "after",
                    ))],
                );
                let checkpoint = store.checkpoint();
                let _ = done_tx.send((write, checkpoint));
            })
        };
        let (write, checkpoint) = done_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("a write or a checkpoint waited for the panicked write");
        other.join().unwrap();
        assert!(matches!(write, Err(Error::Poisoned { .. })), "{write:?}");
        assert!(
            matches!(checkpoint, Err(Error::Poisoned { .. })),
            "{checkpoint:?}"
        );
        assert_eq!(store.version(&id), Some(1), "reads go on");
    }
}
