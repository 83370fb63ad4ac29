//! redb as a task store: four tables in one database file, every write one write transaction
//! committed with `Durability::Immediate`.
//!
//! | table | key | value |
//! |---|---|---|
//! | `tasks` | task id | task row (`codec::TaskRow`) |
//! | `events` | position (`u64`, last + 1) | event (`codec::EventRow`) |
//! | `task_events` | (task id, version) | position |
//! | `by_context` | (context id, status ms, task id) | `()` |
//!
//! The compare-and-set reads the task row inside the write transaction; redb runs one write
//! transaction at a time, so the check and the write are atomic, and positions (the last key of
//! `events` plus one) are assigned in commit order: a tail never skips a late commit.

use std::ops::Bound;
use std::path::Path;

use anyhow::{Context as _, Result};
use redb::{Database, Durability, ReadableDatabase as _, ReadableTable as _, TableDefinition};

use super::codec::{EventRow, TaskRow};
use super::{
    Change, Clock, Cursor, EventKind, ListedTask, Outcome, Page, State, Store, TailEvent, TaskView,
    page_of,
};

const TASKS: TableDefinition<&str, &[u8]> = TableDefinition::new("tasks");
const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
const TASK_EVENTS: TableDefinition<(&str, u64), u64> = TableDefinition::new("task_events");
const BY_CONTEXT: TableDefinition<(&str, u64, &str), ()> = TableDefinition::new("by_context");

/// A task store in one redb file.
pub struct RedbStore {
    db: Database,
    clock: Clock,
}

impl RedbStore {
    /// Opens (or creates) `tasks.redb` in `dir` and creates the tables.
    ///
    /// # Errors
    /// redb's error opening the file or creating the tables.
    pub fn open(dir: &Path) -> Result<Self> {
        let path = dir.join("tasks.redb");
        let db = Database::create(&path).with_context(|| format!("open {}", path.display()))?;
        let txn = db.begin_write()?;
        txn.open_table(TASKS)?;
        txn.open_table(EVENTS)?;
        txn.open_table(TASK_EVENTS)?;
        txn.open_table(BY_CONTEXT)?;
        txn.commit()?;
        Ok(RedbStore {
            db,
            clock: Clock::default(),
        })
    }

    /// Runs `f` in a durable write transaction; commits if it returns [`Outcome::Written`],
    /// aborts otherwise.
    fn write(&self, f: impl FnOnce(&redb::WriteTransaction) -> Result<Outcome>) -> Result<Outcome> {
        let mut txn = self.db.begin_write()?;
        // Immediate is redb's default; it is set here so that the promise does not rest on it.
        txn.set_durability(Durability::Immediate)?;
        let outcome = f(&txn)?;
        match outcome {
            Outcome::Written { .. } => txn.commit().context("commit")?,
            Outcome::Conflict { .. } => txn.abort()?,
        }
        Ok(outcome)
    }
}

/// Appends an event at the next position and indexes it under its task.
fn put_event(
    txn: &redb::WriteTransaction,
    task_id: &str,
    version: u64,
    kind: EventKind,
    payload: &str,
) -> Result<()> {
    let mut events = txn.open_table(EVENTS)?;
    let position = events.last()?.map_or(0, |(key, _)| key.value()) + 1;
    events.insert(
        position,
        EventRow::encode(task_id, version, kind as u8, payload).as_slice(),
    )?;
    txn.open_table(TASK_EVENTS)?
        .insert((task_id, version), position)?;
    Ok(())
}

impl Store for RedbStore {
    fn name(&self) -> &'static str {
        "redb"
    }

    fn durability(&self) -> &'static str {
        "commit returns after an fdatasync of the database file (Durability::Immediate, one-phase \
         commit with checksums); one write transaction at a time, no group commit"
    }

    fn create(&self, task_id: &str, context_id: &str, payload: &str) -> Result<Outcome> {
        let now = self.clock.now_ms();
        self.write(|txn| {
            let mut tasks = txn.open_table(TASKS)?;
            if let Some(existing) = tasks.get(task_id)? {
                let actual = TaskRow::decode(existing.value())?.version;
                return Ok(Outcome::Conflict { actual });
            }
            let row = TaskRow {
                version: 1,
                status_ms: now,
                state: State::Submitted,
                context_id: context_id.to_string(),
                status_message: String::new(),
            };
            tasks.insert(task_id, row.encode().as_slice())?;
            txn.open_table(BY_CONTEXT)?
                .insert((context_id, now, task_id), ())?;
            put_event(txn, task_id, 1, EventKind::Created, payload)?;
            Ok(Outcome::Written { version: 1 })
        })
    }

    fn append(&self, task_id: &str, expected_version: u64, change: Change<'_>) -> Result<Outcome> {
        let now = self.clock.now_ms();
        self.write(|txn| {
            let mut tasks = txn.open_table(TASKS)?;
            let current = match tasks.get(task_id)? {
                Some(bytes) => TaskRow::decode(bytes.value())?,
                None => return Ok(Outcome::Conflict { actual: 0 }),
            };
            if current.version != expected_version {
                return Ok(Outcome::Conflict {
                    actual: current.version,
                });
            }
            let mut row = current.clone();
            row.version += 1;
            if let Change::Status(message) = change {
                row.state = State::Working;
                row.status_ms = now;
                row.status_message = message.to_string();
                let mut by_context = txn.open_table(BY_CONTEXT)?;
                by_context.remove((current.context_id.as_str(), current.status_ms, task_id))?;
                by_context.insert((row.context_id.as_str(), now, task_id), ())?;
            }
            tasks.insert(task_id, row.encode().as_slice())?;
            put_event(txn, task_id, row.version, change.kind(), change.text())?;
            Ok(Outcome::Written {
                version: row.version,
            })
        })
    }

    fn get(&self, task_id: &str) -> Result<Option<TaskView>> {
        let txn = self.db.begin_read()?;
        let Some(bytes) = txn.open_table(TASKS)?.get(task_id)? else {
            return Ok(None);
        };
        let row = TaskRow::decode(bytes.value())?;
        let events = txn.open_table(EVENTS)?;
        let mut payload_bytes = 0;
        for entry in txn
            .open_table(TASK_EVENTS)?
            .range((task_id, 0)..=(task_id, u64::MAX))?
        {
            let position = entry?.1.value();
            let event = events
                .get(position)?
                .with_context(|| format!("task_events names position {position}, not in events"))?;
            payload_bytes += EventRow::decode(event.value())?.payload.len();
        }
        Ok(Some(TaskView {
            id: task_id.to_string(),
            context_id: row.context_id,
            state: row.state,
            version: row.version,
            status_ms: row.status_ms,
            payload_bytes,
        }))
    }

    fn list(&self, context_id: &str, page_size: usize, cursor: Option<&str>) -> Result<Page> {
        let cursor = cursor.map(Cursor::decode).transpose()?;
        let upper = match &cursor {
            Some(cursor) => (context_id, cursor.status_ms, cursor.id.as_str()),
            None => (context_id, u64::MAX, ""),
        };
        let txn = self.db.begin_read()?;
        let tasks = txn.open_table(TASKS)?;
        let by_context = txn.open_table(BY_CONTEXT)?;
        let mut page = Vec::with_capacity(page_size + 1);
        for entry in by_context
            .range::<(&str, u64, &str)>((
                Bound::Included((context_id, 0, "")),
                Bound::Excluded(upper),
            ))?
            .rev()
            .take(page_size + 1)
        {
            let (key, _) = entry?;
            let (_, status_ms, id) = key.value();
            let bytes = tasks
                .get(id)?
                .with_context(|| format!("by_context names {id}, not in tasks"))?;
            let row = TaskRow::decode(bytes.value())?;
            page.push(ListedTask {
                id: id.to_string(),
                state: row.state,
                status_ms,
                status_message: row.status_message,
            });
        }
        Ok(page_of(page, page_size))
    }

    fn tail(&self, after: u64, max: usize) -> Result<Vec<TailEvent>> {
        let txn = self.db.begin_read()?;
        let events = txn.open_table(EVENTS)?;
        let mut out = Vec::with_capacity(max);
        for entry in events.range(after.saturating_add(1)..)?.take(max) {
            let (position, bytes) = entry?;
            let event = EventRow::decode(bytes.value())?;
            out.push(TailEvent {
                position: position.value(),
                task_id: event.task_id,
                version: event.version,
                payload: event.payload,
            });
        }
        Ok(out)
    }

    fn close(self: Box<Self>) -> Result<()> {
        // Every commit was durable already; dropping the database releases its file lock.
        drop(self.db);
        Ok(())
    }
}
