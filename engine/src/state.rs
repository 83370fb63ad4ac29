//! Materialized task state: what the engine knows about every task without reading the log
//! (version, state, context, status time, the log positions of its events), the rules a write must
//! pass ([`TaskTable::check`]), and how events fold into an A2A [`Task`] ([`fold`]).
//!
//! Pure logic: no I/O, no clock. The same `check` and `apply` run in the embedded store and, in a
//! cluster, at Raft apply on every node, so every node decides alike.

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap};

use crate::error::{Error, Result};
use crate::event::{Event, EventBatch};
use crate::id::CompactId;
use crate::limits::VERSION_MAX;
use crate::model::{Task, TaskState, Timestamp};

/// What the engine keeps in memory per task: 80 bytes and, for a task written once with a UUID id
/// and context, no heap allocation (DESIGN.md §6, E7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskMeta {
    /// Number of events applied (the version of the last one), at most
    /// [`VERSION_MAX`].
    pub version: u64,
    /// Time of the current status (the `ListTasks` order).
    pub status_timestamp: Timestamp,
    /// The task's context.
    pub context_id: CompactId,
    /// The task's event batches, oldest first.
    pub batches: Batches,
    /// Ids of its artifacts (an `append` must name one of them); most tasks have none.
    pub artifact_ids: Option<Box<Vec<String>>>,
    /// Current state.
    pub state: TaskState,
}

const _: () = assert!(size_of::<TaskMeta>() <= 80);

/// A task's batches as `(log position, version of its last event)`, oldest first; one batch (the
/// common case for an idle task) is kept inline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Batches {
    /// Exactly one batch.
    One([(u64, u64); 1]),
    /// Any number.
    Many(Vec<(u64, u64)>),
}

impl Batches {
    /// The batches as a slice.
    pub fn as_slice(&self) -> &[(u64, u64)] {
        match self {
            Batches::One(one) => one,
            Batches::Many(many) => many,
        }
    }

    fn push(&mut self, batch: (u64, u64)) {
        match self {
            Batches::Many(many) if many.is_empty() => *self = Batches::One([batch]),
            Batches::Many(many) => many.push(batch),
            Batches::One([first]) => *self = Batches::Many(vec![*first, batch]),
        }
    }
}

impl TaskMeta {
    /// Whether the task has an artifact with this id.
    pub fn has_artifact(&self, artifact_id: &str) -> bool {
        self.artifact_ids
            .as_ref()
            .is_some_and(|ids| ids.iter().any(|id| id == artifact_id))
    }
}

/// Key of the `ListTasks` order: newest status first, then by id.
pub type OrderKey = (Reverse<Timestamp>, CompactId);

/// Every live task, and the `ListTasks` order over them.
#[derive(Debug, Default)]
pub struct TaskTable {
    /// foldhash: several times faster than SipHash on these short keys, and seeded per process,
    /// so client-chosen ids cannot be precomputed to collide.
    tasks: HashMap<CompactId, TaskMeta, foldhash::fast::RandomState>,
    order: BTreeSet<OrderKey>,
}

impl TaskTable {
    /// The task's metadata.
    pub fn get(&self, task_id: &str) -> Option<&TaskMeta> {
        self.tasks.get(&CompactId::new(task_id))
    }

    /// Number of live tasks.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Whether no task is live.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Rebuilds a table from checkpointed tasks: the map sized once, the order set built in bulk
    /// from sorted keys (a million random inserts into a B-tree cost several times more).
    pub fn restore(tasks: impl ExactSizeIterator<Item = (CompactId, TaskMeta)>) -> Self {
        let mut map =
            HashMap::with_capacity_and_hasher(tasks.len(), foldhash::fast::RandomState::default());
        let mut keys = Vec::with_capacity(tasks.len());
        for (id, meta) in tasks {
            keys.push((Reverse(meta.status_timestamp), id.clone()));
            map.insert(id, meta);
        }
        keys.sort_unstable();
        TaskTable {
            tasks: map,
            order: keys.into_iter().collect(),
        }
    }

    /// Every live task, for a checkpoint.
    pub fn iter(&self) -> impl Iterator<Item = (&CompactId, &TaskMeta)> {
        self.tasks.iter()
    }

    /// The smallest log position any live task still needs (its first record), if any task lives.
    pub fn first_live_position(&self) -> Option<u64> {
        self.tasks
            .values()
            .filter_map(|meta| {
                meta.batches
                    .as_slice()
                    .first()
                    .map(|(position, _)| *position)
            })
            .min()
    }

    /// Terminal tasks, oldest status first.
    pub fn terminal_oldest_first(&self) -> Vec<(Timestamp, CompactId)> {
        let mut out: Vec<(Timestamp, CompactId)> = self
            .tasks
            .iter()
            .filter(|(_, meta)| meta.state.is_terminal())
            .map(|(id, meta)| (meta.status_timestamp, id.clone()))
            .collect();
        out.sort();
        out
    }

    /// Tasks in `ListTasks` order (newest status first), starting strictly after `after`.
    pub fn ordered_after<'a>(
        &'a self,
        after: Option<&'a OrderKey>,
    ) -> impl Iterator<Item = (&'a OrderKey, &'a TaskMeta)> + 'a {
        let range = match after {
            Some(key) => self.order.range((
                std::ops::Bound::Excluded(key.clone()),
                std::ops::Bound::Unbounded,
            )),
            None => self.order.range::<OrderKey, _>(..),
        };
        range.filter_map(|key| self.tasks.get(&key.1).map(|meta| (key, meta)))
    }

    /// Checks a batch against the task's current state; `expected_version` (if any) must be the
    /// task's version (0 for a task that must not exist yet).
    ///
    /// # Errors
    /// [`Error::TaskNotFound`], [`Error::TaskExists`], [`Error::VersionConflict`],
    /// [`Error::TaskTerminal`], [`Error::InvalidEvent`]. Nothing is changed either way.
    pub fn check(&self, batch: &EventBatch, expected_version: Option<u64>) -> Result<()> {
        let task_id = &batch.task_id;
        let invalid = |reason: String| Error::InvalidEvent {
            task_id: task_id.clone(),
            reason,
        };
        let Some(first) = batch.events.first() else {
            return Err(invalid("a write needs at least one event".into()));
        };
        let existing = self.get(task_id);
        let actual = existing.map_or(0, |meta| meta.version);
        match (first, existing) {
            (Event::Created { .. }, Some(_)) => {
                return Err(Error::TaskExists {
                    task_id: task_id.clone(),
                });
            }
            (Event::Created { .. }, None) => {}
            (_, None) => {
                return Err(Error::TaskNotFound {
                    task_id: task_id.clone(),
                });
            }
            (_, Some(_)) => {}
        }
        if let Some(expected) = expected_version
            && expected != actual
        {
            return Err(Error::VersionConflict {
                task_id: task_id.clone(),
                expected,
                actual,
            });
        }
        if batch.first_version != actual.saturating_add(1) {
            return Err(invalid(format!(
                "batch starts at version {} but the task is at {actual}",
                batch.first_version
            )));
        }
        // So that `last_version()` of a checked batch, and every `version + 1` taken from the
        // table afterwards, cannot overflow (`events` is not empty here).
        if batch.first_version > VERSION_MAX
            || batch.events.len() as u64 - 1 > VERSION_MAX - batch.first_version
        {
            return Err(invalid(format!(
                "the batch would take the task past version {VERSION_MAX}"
            )));
        }
        let mut state = existing.map(|meta| meta.state);
        let mut artifact_ids: Vec<&str> = existing
            .and_then(|meta| meta.artifact_ids.as_ref())
            .map(|ids| ids.iter().map(String::as_str).collect())
            .unwrap_or_default();
        for (i, event) in batch.events.iter().enumerate() {
            if let Some(current) = state
                && current.is_terminal()
                && !matches!(event, Event::Deleted)
            {
                return Err(Error::TaskTerminal {
                    task_id: task_id.clone(),
                    state: current,
                });
            }
            match event {
                Event::Created { status, .. } => {
                    if i != 0 {
                        return Err(invalid(
                            "created must be the first event of a new task".into(),
                        ));
                    }
                    state = Some(checked_state(status.state, &invalid)?);
                }
                Event::Status(status) => state = Some(checked_state(status.state, &invalid)?),
                Event::Artifact {
                    artifact, append, ..
                } => {
                    let known = artifact_ids.contains(&artifact.artifact_id.as_str());
                    if *append && !known {
                        return Err(invalid(format!(
                            "append to unknown artifact {:?}",
                            artifact.artifact_id
                        )));
                    }
                    if !known {
                        artifact_ids.push(&artifact.artifact_id);
                    }
                }
                Event::Message(_) | Event::Metadata(_) => {}
                Event::Deleted => {
                    if i + 1 != batch.events.len() {
                        return Err(invalid("deleted must be the last event".into()));
                    }
                    if !state.is_some_and(TaskState::is_terminal) {
                        return Err(invalid("only a terminal task can be deleted".into()));
                    }
                }
            }
        }
        Ok(())
    }

    /// Applies a checked batch written at log `position`.
    pub fn apply(&mut self, position: u64, batch: &EventBatch) {
        let task_id = CompactId::new(&batch.task_id);
        if matches!(batch.events.last(), Some(Event::Deleted)) {
            if let Some(meta) = self.tasks.remove(&task_id) {
                self.order
                    .remove(&(Reverse(meta.status_timestamp), task_id));
            }
            return;
        }
        let previous_time = self.tasks.get(&task_id).map(|meta| meta.status_timestamp);
        let meta = self
            .tasks
            .entry(task_id.clone())
            .or_insert_with(|| TaskMeta {
                version: 0,
                status_timestamp: batch.timestamp,
                context_id: CompactId::Text("".into()),
                batches: Batches::Many(Vec::new()),
                artifact_ids: None,
                state: TaskState::Submitted,
            });
        for event in &batch.events {
            match event {
                Event::Created {
                    context_id, status, ..
                } => {
                    meta.context_id = CompactId::new(context_id);
                    meta.state = status.state;
                    meta.status_timestamp = status.timestamp.unwrap_or(batch.timestamp);
                }
                Event::Status(status) => {
                    meta.state = status.state;
                    meta.status_timestamp = status.timestamp.unwrap_or(batch.timestamp);
                }
                Event::Artifact { artifact, .. } => {
                    if !meta.has_artifact(&artifact.artifact_id) {
                        meta.artifact_ids
                            .get_or_insert_with(Box::default)
                            .push(artifact.artifact_id.clone());
                    }
                }
                Event::Message(_) | Event::Metadata(_) | Event::Deleted => {}
            }
        }
        meta.version = batch.last_version();
        meta.batches.push((position, meta.version));
        let time = meta.status_timestamp;
        if previous_time != Some(time) {
            if let Some(previous) = previous_time {
                self.order.remove(&(Reverse(previous), task_id.clone()));
            }
            self.order.insert((Reverse(time), task_id));
        }
    }
}

fn checked_state(state: TaskState, invalid: &impl Fn(String) -> Error) -> Result<TaskState> {
    if state == TaskState::Unspecified {
        return Err(invalid(
            "TASK_STATE_UNSPECIFIED is not a state a task can be in".into(),
        ));
    }
    Ok(state)
}

/// Checks a batch read at a log position the table lists for `task_id`: it must be that task's
/// and hold `version`. The table (restored from a checkpoint or a snapshot) only points at
/// records, so a table that does not match the log would otherwise make `get` fold another
/// task's events and a subscription deliver the same batch forever.
///
/// # Errors
/// [`Error::InvalidPayload`] naming `position`.
pub fn check_listed_batch(
    batch: &EventBatch,
    position: u64,
    task_id: &str,
    version: u64,
) -> Result<()> {
    if batch.task_id != task_id
        || batch.events.is_empty()
        || !(batch.first_version..=batch.last_version()).contains(&version)
    {
        return Err(Error::InvalidPayload {
            position,
            reason: format!(
                "the task table lists this record for version {version} of task {task_id:?}, \
                 but it holds versions {}..={} of task {:?}",
                batch.first_version,
                batch.last_version(),
                batch.task_id
            ),
        });
    }
    Ok(())
}

/// Folds one batch into the task (A2A.md, "How events fold into a task"): created makes it;
/// a status replaces the status and moves the previous status message into the history; an
/// artifact is added, replaced by id, or extended; a message joins the history; metadata is
/// replaced; deleted removes it.
pub fn fold(task: &mut Option<Task>, batch: &EventBatch) {
    for event in &batch.events {
        match (event, task.as_mut()) {
            (
                Event::Created {
                    context_id,
                    status,
                    message,
                    metadata,
                },
                _,
            ) => {
                let mut status = status.clone();
                status.timestamp.get_or_insert(batch.timestamp);
                *task = Some(Task {
                    id: batch.task_id.clone(),
                    context_id: context_id.clone(),
                    status,
                    artifacts: Vec::new(),
                    history: message.iter().cloned().collect(),
                    metadata: metadata.clone(),
                });
            }
            (Event::Status(status), Some(task)) => {
                let mut status = status.clone();
                status.timestamp.get_or_insert(batch.timestamp);
                if let Some(previous) = std::mem::replace(&mut task.status, status).message {
                    task.history.push(previous);
                }
            }
            (
                Event::Artifact {
                    artifact, append, ..
                },
                Some(task),
            ) => {
                match task
                    .artifacts
                    .iter_mut()
                    .find(|a| a.artifact_id == artifact.artifact_id)
                {
                    Some(existing) if *append => {
                        existing.parts.extend(artifact.parts.iter().cloned())
                    }
                    Some(existing) => *existing = artifact.clone(),
                    None => task.artifacts.push(artifact.clone()),
                }
            }
            (Event::Message(message), Some(task)) => task.history.push(message.clone()),
            (Event::Metadata(metadata), Some(task)) => task.metadata = Some(metadata.clone()),
            (Event::Deleted, _) => *task = None,
            (_, None) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Artifact, Message, Part, Role, TaskStatus};

    fn batch(task_id: &str, first_version: u64, events: Vec<Event>) -> EventBatch {
        EventBatch {
            task_id: task_id.into(),
            first_version,
            timestamp: Timestamp(1000 + first_version as i64),
            events,
        }
    }

    fn created() -> Event {
        Event::Created {
            context_id: "c".into(),
            status: TaskStatus::new(TaskState::Submitted),
            message: None,
            metadata: None,
        }
    }

    fn message(id: &str) -> Message {
        Message {
            message_id: id.into(),
            context_id: None,
            task_id: None,
            role: Role::Agent,
            parts: vec![Part::text(id)],
            metadata: None,
            extensions: vec![],
            reference_task_ids: vec![],
        }
    }

    fn artifact(id: &str, text: &str) -> Artifact {
        Artifact {
            artifact_id: id.into(),
            name: None,
            description: None,
            parts: vec![Part::text(text)],
            metadata: None,
            extensions: vec![],
        }
    }

    #[test]
    fn guards_reject_and_change_nothing() {
        let mut table = TaskTable::default();
        let create = batch("t", 1, vec![created()]);
        table.check(&create, Some(0)).unwrap();
        table.apply(10, &create);
        assert!(matches!(
            table.check(&create, None),
            Err(Error::TaskExists { .. })
        ));
        assert!(matches!(
            table.check(&batch("u", 1, vec![Event::Message(message("m"))]), None),
            Err(Error::TaskNotFound { .. })
        ));
        let work = batch(
            "t",
            2,
            vec![Event::Status(TaskStatus::new(TaskState::Working))],
        );
        assert!(matches!(
            table.check(&work, Some(3)),
            Err(Error::VersionConflict {
                expected: 3,
                actual: 1,
                ..
            })
        ));
        let unspecified = batch(
            "t",
            2,
            vec![Event::Status(TaskStatus::new(TaskState::Unspecified))],
        );
        assert!(matches!(
            table.check(&unspecified, None),
            Err(Error::InvalidEvent { .. })
        ));
        let append_unknown = batch(
            "t",
            2,
            vec![Event::Artifact {
                artifact: artifact("a", "x"),
                append: true,
                last_chunk: false,
            }],
        );
        assert!(matches!(
            table.check(&append_unknown, None),
            Err(Error::InvalidEvent { .. })
        ));
        // Terminal in the middle of a batch: nothing may follow it, in the same batch or later.
        let done_then_more = batch(
            "t",
            2,
            vec![
                Event::Status(TaskStatus::new(TaskState::Completed)),
                Event::Message(message("late")),
            ],
        );
        assert!(matches!(
            table.check(&done_then_more, None),
            Err(Error::TaskTerminal {
                state: TaskState::Completed,
                ..
            })
        ));
        assert_eq!(table.get("t").unwrap().version, 1);
        assert!(
            matches!(
                table.check(&batch("t", 2, vec![Event::Deleted]), None),
                Err(Error::InvalidEvent { .. })
            ),
            "only terminal tasks are deleted"
        );
        let done = batch(
            "t",
            2,
            vec![Event::Status(TaskStatus::new(TaskState::Failed))],
        );
        table.check(&done, Some(1)).unwrap();
        table.apply(11, &done);
        assert!(matches!(
            table.check(
                &batch(
                    "t",
                    3,
                    vec![Event::Status(TaskStatus::new(TaskState::Working))]
                ),
                None
            ),
            Err(Error::TaskTerminal { .. })
        ));
        // Only deletion follows a terminal state.
        let delete = batch("t", 3, vec![Event::Deleted]);
        table.check(&delete, None).unwrap();
        table.apply(12, &delete);
        assert!(table.get("t").is_none() && table.is_empty());
    }

    /// Found while fuzzing `checkpoint_file`: a task version near `u64::MAX` (from a crafted
    /// checkpoint) overflowed in `check` and `last_version`.
    #[test]
    fn versions_stop_at_the_maximum_without_overflow() {
        let meta = |version| TaskMeta {
            version,
            status_timestamp: Timestamp(1),
            context_id: CompactId::new("c"),
            batches: Batches::One([(1, version)]),
            artifact_ids: None,
            state: TaskState::Working,
        };
        let message_at = |first_version, count| {
            batch(
                "t",
                first_version,
                (0..count)
                    .map(|i| Event::Message(message(&i.to_string())))
                    .collect(),
            )
        };
        let mut table =
            TaskTable::restore([(CompactId::new("t"), meta(VERSION_MAX - 1))].into_iter());
        assert!(matches!(
            table.check(&message_at(VERSION_MAX, 2), None),
            Err(Error::InvalidEvent { .. })
        ));
        table.check(&message_at(VERSION_MAX, 1), None).unwrap();
        table.apply(2, &message_at(VERSION_MAX, 1));
        assert_eq!(table.get("t").unwrap().version, VERSION_MAX);
        assert!(matches!(
            table.check(&message_at(VERSION_MAX + 1, 1), None),
            Err(Error::InvalidEvent { .. })
        ));
        // A table can only get here through a bug, but `check` still refuses instead of panicking.
        let table = TaskTable::restore([(CompactId::new("t"), meta(u64::MAX))].into_iter());
        for first_version in [0, u64::MAX] {
            assert!(matches!(
                table.check(&message_at(first_version, 2), None),
                Err(Error::InvalidEvent { .. })
            ));
        }
        assert_eq!(message_at(u64::MAX, 2).last_version(), u64::MAX);
        assert_eq!(message_at(0, 0).last_version(), 0);
    }

    #[test]
    fn fold_follows_the_sdk_rules() {
        let mut task = None;
        let first = Event::Created {
            context_id: "c".into(),
            status: TaskStatus::new(TaskState::Submitted),
            message: Some(message("hello")),
            metadata: None,
        };
        fold(&mut task, &batch("t", 1, vec![first]));
        let mut asking = TaskStatus::new(TaskState::InputRequired);
        asking.message = Some(message("which one?"));
        fold(
            &mut task,
            &batch(
                "t",
                2,
                vec![
                    Event::Status(asking),
                    Event::Artifact {
                        artifact: artifact("a", "one"),
                        append: false,
                        last_chunk: false,
                    },
                    Event::Artifact {
                        artifact: artifact("a", "two"),
                        append: true,
                        last_chunk: true,
                    },
                    Event::Artifact {
                        artifact: artifact("b", "x"),
                        append: false,
                        last_chunk: true,
                    },
                    Event::Artifact {
                        artifact: artifact("b", "y"),
                        append: false,
                        last_chunk: true,
                    },
                    Event::Status(TaskStatus::new(TaskState::Completed)),
                ],
            ),
        );
        let task = task.unwrap();
        assert_eq!(task.status.state, TaskState::Completed);
        assert_eq!(
            task.status.timestamp,
            Some(Timestamp(1002)),
            "missing timestamps come from the batch"
        );
        let history: Vec<&str> = task.history.iter().map(|m| m.message_id.as_str()).collect();
        assert_eq!(
            history,
            ["hello", "which one?"],
            "the previous status message moves into the history"
        );
        assert_eq!(task.artifacts.len(), 2);
        assert_eq!(
            task.artifacts[0].parts,
            vec![Part::text("one"), Part::text("two")],
            "append extends"
        );
        assert_eq!(
            task.artifacts[1].parts,
            vec![Part::text("y")],
            "same id without append replaces"
        );
    }
}
