//! tasklog-engine's `TaskStore` with default options (`SyncPolicy::Always`: an append returns after
//! the group commit's `fdatasync` that covers it), mapped onto the workload: the payload is the
//! text of the first message, of a status message, or of an artifact part; `list` is `ListTasks`
//! with `history_length = 0` and no artifacts; `tail` is [`TaskStore::tail`] read once.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context as _, Result, bail};
use tasklog_engine::event::Event;
use tasklog_engine::model::{
    Artifact, Message, Part, PartContent, Role, Task, TaskState, TaskStatus,
};
use tasklog_engine::{Error, ListQuery, NewTask, Options, Position, TaskStore};

use super::{Change, ListedTask, Outcome, Page, State, Store, TailEvent, TaskView};

/// The id of the one artifact each task of the workload streams.
const ARTIFACT_ID: &str = "a1";

/// The engine's task store, shared by the bench's threads.
pub struct TasklogStore {
    store: Arc<TaskStore>,
}

impl TasklogStore {
    /// Opens (or creates) a task store in `dir/tasklog` with `Options::default()`.
    ///
    /// # Errors
    /// The engine's open error.
    pub fn open(dir: &Path) -> Result<Self> {
        let path = dir.join("tasklog");
        let store = TaskStore::open(&path, Options::default())
            .with_context(|| format!("open {}", path.display()))?;
        Ok(TasklogStore {
            store: Arc::new(store),
        })
    }

    /// The outcome of a write the engine refused for its version or existence.
    fn refused(&self, task_id: &str, error: Error) -> Result<Outcome> {
        match error {
            Error::VersionConflict { actual, .. } => Ok(Outcome::Conflict { actual }),
            Error::TaskExists { .. } | Error::TaskNotFound { .. } => Ok(Outcome::Conflict {
                actual: self.store.version(task_id).unwrap_or(0),
            }),
            other => Err(other.into()),
        }
    }
}

fn text_message(message_id: String, text: &str) -> Message {
    Message::text(message_id, Role::Agent, text)
}

fn text_len(parts: &[Part]) -> usize {
    parts
        .iter()
        .map(|part| match &part.content {
            PartContent::Text(text) => text.len(),
            _ => 0,
        })
        .sum()
}

fn first_text(parts: &[Part]) -> String {
    parts
        .iter()
        .find_map(|part| match &part.content {
            PartContent::Text(text) => Some(text.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

/// The payload text an event of the workload carries.
fn event_text(event: &Event) -> String {
    match event {
        Event::Created { message, .. } => message
            .as_ref()
            .map(|m| first_text(&m.parts))
            .unwrap_or_default(),
        Event::Status(status) => status
            .message
            .as_ref()
            .map(|m| first_text(&m.parts))
            .unwrap_or_default(),
        Event::Artifact { artifact, .. } => first_text(&artifact.parts),
        Event::Message(message) => first_text(&message.parts),
        Event::Metadata(_) | Event::Deleted => String::new(),
    }
}

fn state_of(state: TaskState) -> Result<State> {
    match state {
        TaskState::Submitted => Ok(State::Submitted),
        TaskState::Working => Ok(State::Working),
        other => bail!("the workload never sets {other}"),
    }
}

fn status_ms(task: &Task) -> u64 {
    task.status
        .timestamp
        .map_or(0, |t| u64::try_from(t.0).unwrap_or(0))
}

impl Store for TasklogStore {
    fn name(&self) -> &'static str {
        "tasklog"
    }

    fn durability(&self) -> &'static str {
        "append returns after an fdatasync that covers its record (SyncPolicy::Always); \
         concurrent appends share one write and one fdatasync (group commit)"
    }

    fn create(&self, task_id: &str, context_id: &str, payload: &str) -> Result<Outcome> {
        let new = NewTask {
            task_id: Some(task_id.to_string()),
            context_id: Some(context_id.to_string()),
            state: TaskState::Submitted,
            message: Some(text_message(format!("{task_id}/1"), payload)),
            metadata: None,
        };
        match self.store.create(new) {
            Ok(written) => Ok(Outcome::Written {
                version: written.version,
            }),
            Err(error) => self.refused(task_id, error),
        }
    }

    fn append(&self, task_id: &str, expected_version: u64, change: Change<'_>) -> Result<Outcome> {
        let event = match change {
            Change::Status(text) => Event::Status(TaskStatus {
                state: TaskState::Working,
                message: Some(text_message(
                    format!("{task_id}/{}", expected_version + 1),
                    text,
                )),
                timestamp: None,
            }),
            Change::Artifact { append, payload } => Event::Artifact {
                artifact: Artifact {
                    artifact_id: ARTIFACT_ID.to_string(),
                    name: None,
                    description: None,
                    parts: vec![Part::text(payload)],
                    metadata: None,
                    extensions: Vec::new(),
                },
                append,
                last_chunk: false,
            },
        };
        match self
            .store
            .append(task_id, Some(expected_version), vec![event])
        {
            Ok(written) => Ok(Outcome::Written {
                version: written.version,
            }),
            Err(error) => self.refused(task_id, error),
        }
    }

    fn get(&self, task_id: &str) -> Result<Option<TaskView>> {
        let task = match self.store.get(task_id, None) {
            Ok(task) => task,
            Err(Error::TaskNotFound { .. }) => return Ok(None),
            Err(error) => return Err(error.into()),
        };
        // The A2A task carries no version; the store's table has it (a lookup in memory).
        let version = self.store.version(task_id).unwrap_or(0);
        let payload_bytes = task
            .history
            .iter()
            .map(|m| text_len(&m.parts))
            .chain(task.status.message.iter().map(|m| text_len(&m.parts)))
            .chain(task.artifacts.iter().map(|a| text_len(&a.parts)))
            .sum();
        Ok(Some(TaskView {
            id: task.id.clone(),
            context_id: task.context_id.clone(),
            state: state_of(task.status.state)?,
            version,
            status_ms: status_ms(&task),
            payload_bytes,
        }))
    }

    fn list(&self, context_id: &str, page_size: usize, cursor: Option<&str>) -> Result<Page> {
        let page = self.store.list(&ListQuery {
            context_id: Some(context_id.to_string()),
            page_size: Some(u32::try_from(page_size).context("page size")?),
            page_token: cursor.map(str::to_string),
            history_length: Some(0),
            include_artifacts: false,
            ..ListQuery::default()
        })?;
        let tasks = page
            .tasks
            .iter()
            .map(|task| {
                Ok(ListedTask {
                    id: task.id.clone(),
                    state: state_of(task.status.state)?,
                    status_ms: status_ms(task),
                    status_message: task
                        .status
                        .message
                        .as_ref()
                        .map(|m| first_text(&m.parts))
                        .unwrap_or_default(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Page {
            tasks,
            next: (!page.next_page_token.is_empty()).then_some(page.next_page_token),
        })
    }

    fn tail(&self, after: u64, max: usize) -> Result<Vec<TailEvent>> {
        let mut tail = self.store.tail(Position::new(after.saturating_add(1)));
        let mut out = Vec::with_capacity(max);
        for (position, batch) in tail.try_next(max)? {
            for (version, event) in (batch.first_version..).zip(&batch.events) {
                out.push(TailEvent {
                    position: position.get(),
                    task_id: batch.task_id.clone(),
                    version,
                    payload: event_text(event),
                });
            }
        }
        Ok(out)
    }

    fn close(self: Box<Self>) -> Result<()> {
        let store = Arc::into_inner(self.store)
            .context("the task store is still shared (a tail or subscription is open)")?;
        store.close()?;
        Ok(())
    }
}
