//! fjall as a task store: a database with four keyspaces, every write one single-writer
//! transaction committed with `PersistMode::SyncAll` (fsync of the journal before `commit`
//! returns).
//!
//! | keyspace | key | value |
//! |---|---|---|
//! | `tasks` | task id | task row (`codec::TaskRow`) |
//! | `events` | position, big-endian `u64` (last + 1) | event (`codec::EventRow`) |
//! | `task_events` | task id, `0`, version (big-endian `u64`) | position (little-endian `u64`) |
//! | `by_context` | context id, `0`, status ms (big-endian `u64`), task id | empty |
//!
//! Keys that must sort numerically are big-endian, since an LSM tree compares keys bytewise. Ids
//! hold no `0` byte (checked), so `id, 0` is an unambiguous prefix. The single-writer transaction
//! (fjall's `SingleWriterTxDatabase`) makes the compare-and-set atomic and assigns positions in
//! commit order, so a tail never skips a late commit. fjall writes and syncs its journal under one
//! lock, so commits do not share an fsync.

use std::path::Path;

use anyhow::{Context as _, Result, ensure};
use fjall::{
    KeyspaceCreateOptions, PersistMode, Readable as _, SingleWriterTxDatabase,
    SingleWriterTxKeyspace, SingleWriterWriteTx,
};

use super::codec::{EventRow, TaskRow};
use super::{
    Change, Clock, Cursor, EventKind, ListedTask, Outcome, Page, State, Store, TailEvent, TaskView,
    page_of,
};

/// A task store in one fjall database directory.
pub struct FjallStore {
    db: SingleWriterTxDatabase,
    tasks: SingleWriterTxKeyspace,
    events: SingleWriterTxKeyspace,
    task_events: SingleWriterTxKeyspace,
    by_context: SingleWriterTxKeyspace,
    clock: Clock,
}

#[expect(
    clippy::big_endian_bytes,
    reason = "LSM keys compare bytewise: big-endian integers sort numerically"
)]
fn be(value: u64) -> [u8; 8] {
    value.to_be_bytes()
}

#[expect(
    clippy::big_endian_bytes,
    reason = "LSM keys compare bytewise: big-endian integers sort numerically"
)]
fn from_be(bytes: &[u8]) -> Result<u64> {
    let bytes: [u8; 8] = bytes
        .try_into()
        .with_context(|| format!("a {}-byte key where 8 were expected", bytes.len()))?;
    Ok(u64::from_be_bytes(bytes))
}

/// `id, 0`: the prefix of an id's keys.
fn prefix(id: &str) -> Result<Vec<u8>> {
    ensure!(!id.contains('\0'), "id {id:?} holds a 0 byte");
    let mut key = Vec::with_capacity(id.len() + 17);
    key.extend_from_slice(id.as_bytes());
    key.push(0);
    Ok(key)
}

fn task_event_key(task_id: &str, version: u64) -> Result<Vec<u8>> {
    let mut key = prefix(task_id)?;
    key.extend_from_slice(&be(version));
    Ok(key)
}

fn context_key(context_id: &str, status_ms: u64, task_id: &str) -> Result<Vec<u8>> {
    let mut key = prefix(context_id)?;
    key.extend_from_slice(&be(status_ms));
    key.extend_from_slice(task_id.as_bytes());
    Ok(key)
}

impl FjallStore {
    /// Opens (or creates) the database in `dir/fjall` with its keyspaces.
    ///
    /// # Errors
    /// fjall's error opening the database or a keyspace.
    pub fn open(dir: &Path) -> Result<Self> {
        let path = dir.join("fjall");
        let db = SingleWriterTxDatabase::builder(&path)
            .open()
            .with_context(|| format!("open {}", path.display()))?;
        let keyspace = |name: &str| {
            db.keyspace(name, KeyspaceCreateOptions::default)
                .with_context(|| format!("open keyspace {name}"))
        };
        Ok(FjallStore {
            tasks: keyspace("tasks")?,
            events: keyspace("events")?,
            task_events: keyspace("task_events")?,
            by_context: keyspace("by_context")?,
            db,
            clock: Clock::default(),
        })
    }

    /// Runs `f` in a single-writer transaction committed with `SyncAll` if it returns
    /// [`Outcome::Written`], rolled back otherwise.
    fn write(
        &self,
        f: impl FnOnce(&mut SingleWriterWriteTx<'_>) -> Result<Outcome>,
    ) -> Result<Outcome> {
        let mut tx = self.db.write_tx().durability(Some(PersistMode::SyncAll));
        let outcome = f(&mut tx)?;
        match outcome {
            Outcome::Written { .. } => tx.commit().context("commit")?,
            Outcome::Conflict { .. } => tx.rollback(),
        }
        Ok(outcome)
    }

    /// Appends an event at the next position and indexes it under its task.
    fn put_event(
        &self,
        tx: &mut SingleWriterWriteTx<'_>,
        task_id: &str,
        version: u64,
        kind: EventKind,
        payload: &str,
    ) -> Result<()> {
        let last = match tx.last_key_value(self.events.inner()) {
            Some(guard) => from_be(&guard.key()?)?,
            None => 0,
        };
        let position = last + 1;
        tx.insert(
            &self.events,
            be(position),
            EventRow::encode(task_id, version, kind as u8, payload),
        );
        tx.insert(
            &self.task_events,
            task_event_key(task_id, version)?,
            position.to_le_bytes(),
        );
        Ok(())
    }

    fn task_row(&self, tx: &SingleWriterWriteTx<'_>, task_id: &str) -> Result<Option<TaskRow>> {
        tx.get(self.tasks.inner(), task_id)?
            .map(|bytes| TaskRow::decode(&bytes))
            .transpose()
    }
}

impl Store for FjallStore {
    fn name(&self) -> &'static str {
        "fjall"
    }

    fn durability(&self) -> &'static str {
        "commit returns after an fsync of the journal (PersistMode::SyncAll); transactions are \
         serialized and each syncs under the journal lock: no group commit"
    }

    fn create(&self, task_id: &str, context_id: &str, payload: &str) -> Result<Outcome> {
        let now = self.clock.now_ms();
        self.write(|tx| {
            if let Some(existing) = self.task_row(tx, task_id)? {
                return Ok(Outcome::Conflict {
                    actual: existing.version,
                });
            }
            let row = TaskRow {
                version: 1,
                status_ms: now,
                state: State::Submitted,
                context_id: context_id.to_string(),
                status_message: String::new(),
            };
            tx.insert(&self.tasks, task_id, row.encode());
            tx.insert(&self.by_context, context_key(context_id, now, task_id)?, []);
            self.put_event(tx, task_id, 1, EventKind::Created, payload)?;
            Ok(Outcome::Written { version: 1 })
        })
    }

    fn append(&self, task_id: &str, expected_version: u64, change: Change<'_>) -> Result<Outcome> {
        let now = self.clock.now_ms();
        self.write(|tx| {
            let Some(current) = self.task_row(tx, task_id)? else {
                return Ok(Outcome::Conflict { actual: 0 });
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
                tx.remove(
                    &self.by_context,
                    context_key(&current.context_id, current.status_ms, task_id)?,
                );
                tx.insert(
                    &self.by_context,
                    context_key(&row.context_id, now, task_id)?,
                    [],
                );
            }
            tx.insert(&self.tasks, task_id, row.encode());
            self.put_event(tx, task_id, row.version, change.kind(), change.text())?;
            Ok(Outcome::Written {
                version: row.version,
            })
        })
    }

    fn get(&self, task_id: &str) -> Result<Option<TaskView>> {
        let snapshot = self.db.read_tx();
        let Some(bytes) = snapshot.get(self.tasks.inner(), task_id)? else {
            return Ok(None);
        };
        let row = TaskRow::decode(&bytes)?;
        let mut payload_bytes = 0;
        for guard in snapshot.prefix(self.task_events.inner(), prefix(task_id)?) {
            let position_bytes = guard.value()?;
            let position = u64::from_le_bytes(
                position_bytes
                    .as_ref()
                    .try_into()
                    .context("a task_events value is not 8 bytes")?,
            );
            let event = snapshot
                .get(self.events.inner(), be(position))?
                .with_context(|| format!("task_events names position {position}, not in events"))?;
            payload_bytes += EventRow::decode(&event)?.payload.len();
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
        let lower = prefix(context_id)?;
        let upper = match cursor {
            Some(text) => {
                let cursor = Cursor::decode(text)?;
                context_key(context_id, cursor.status_ms, &cursor.id)?
            }
            // Just past every key of the context: `context, 1`.
            None => {
                let mut key = lower.clone();
                key.pop();
                key.push(1);
                key
            }
        };
        let snapshot = self.db.read_tx();
        let mut page = Vec::with_capacity(page_size + 1);
        for guard in snapshot
            .range(self.by_context.inner(), lower.as_slice()..upper.as_slice())
            .rev()
            .take(page_size + 1)
        {
            let key = guard.key()?;
            let rest = key
                .get(lower.len()..)
                .context("a by_context key shorter than its prefix")?;
            let (ms, id) = rest.split_at_checked(8).context("a short by_context key")?;
            let id = std::str::from_utf8(id).context("a task id that is not UTF-8")?;
            let bytes = snapshot
                .get(self.tasks.inner(), id)?
                .with_context(|| format!("by_context names {id}, not in tasks"))?;
            let row = TaskRow::decode(&bytes)?;
            page.push(ListedTask {
                id: id.to_string(),
                state: row.state,
                status_ms: from_be(ms)?,
                status_message: row.status_message,
            });
        }
        Ok(page_of(page, page_size))
    }

    fn tail(&self, after: u64, max: usize) -> Result<Vec<TailEvent>> {
        let snapshot = self.db.read_tx();
        let mut out = Vec::with_capacity(max);
        for guard in snapshot
            .range(self.events.inner(), be(after.saturating_add(1))..)
            .take(max)
        {
            let (key, value) = guard.into_inner()?;
            let event = EventRow::decode(&value)?;
            out.push(TailEvent {
                position: from_be(&key)?,
                task_id: event.task_id,
                version: event.version,
                payload: event.payload,
            });
        }
        Ok(out)
    }

    fn close(self: Box<Self>) -> Result<()> {
        self.db
            .persist(PersistMode::SyncAll)
            .context("persist on close")?;
        Ok(())
    }
}
