//! The embedded comparison (issue 5, item 1): one task-store workload, one [`Store`] trait, and an
//! adapter per store that a Rust A2A server could embed instead of `tasklog-engine`:
//! [`sqlite::SqliteStore`] (rusqlite, bundled SQLite, WAL, `synchronous=FULL`),
//! [`redb_store::RedbStore`] (`Durability::Immediate`), [`fjall_store::FjallStore`] (single-writer
//! transactions committed with `PersistMode::SyncAll`) and [`tasklog::TasklogStore`] (the engine's
//! `TaskStore` with default options: `SyncPolicy::Always`, group commit).
//!
//! Every adapter keeps the same data, the data a task store needs:
//! - a task row per task: context id, state, version, status time and the status message;
//! - an event per write, with a store-wide position (an autoincrement sequence for the peers, the
//!   log position for tasklog) that a tail reads by `position > after`;
//! - an order of each context's tasks by status time, newest first, for `list`.
//!
//! Every write is a compare-and-set on the task's version and is durable when it returns (each
//! adapter's [`Store::durability`] says exactly how). [`check`] verifies those promises on a fresh
//! store: the bench runs it before measuring and the unit tests run it on every adapter.
//!
//! This module must not time anything: measuring is the bench's job (`benches/benches/peers.rs`).

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context as _, Result, bail, ensure};

mod codec;
pub mod fjall_store;
pub mod redb_store;
pub mod sqlite;
pub mod tasklog;

/// The exact crate versions of the peers, as pinned in the workspace `Cargo.toml` (a unit test
/// keeps the two in step). Printed with every result.
pub const PEER_VERSIONS: [(&str, &str); 3] = [
    ("rusqlite", "0.41.1"),
    ("redb", "4.5.0"),
    ("fjall", "3.1.13"),
];

/// Bytes of every event payload (DESIGN.md §6: 300-byte events).
pub const EVENT_PAYLOAD_BYTES: usize = crate::PAYLOAD_BYTES;

/// A deterministic [`EVENT_PAYLOAD_BYTES`]-byte payload of printable ASCII (the text of a message
/// or an artifact part, so it must be UTF-8), derived from `seed`.
pub fn text_payload(seed: u64) -> String {
    let mut rng = crate::XorShift64::new(seed);
    (0..EVENT_PAYLOAD_BYTES)
        .map(|_| char::from(b' ' + (rng.below(95) as u8)))
        .collect()
}

/// A task's state in this workload: tasks are created submitted and status updates make them
/// working, so no write ever meets a terminal task and every compare-and-set can succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Created, not started.
    Submitted,
    /// Being worked on.
    Working,
}

impl State {
    /// The small integer the peers store.
    pub fn code(self) -> u8 {
        match self {
            State::Submitted => 1,
            State::Working => 2,
        }
    }

    /// The state stored as `code`.
    ///
    /// # Errors
    /// A code no adapter writes (damaged or foreign data).
    pub fn from_code(code: i64) -> Result<Self> {
        match code {
            1 => Ok(State::Submitted),
            2 => Ok(State::Working),
            other => bail!("unknown task state code {other}"),
        }
    }
}

/// A write to an existing task (one event).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change<'a> {
    /// A new status, working, whose status message is `payload`.
    Status(&'a str),
    /// An artifact update: `append == false` creates (or replaces) the task's artifact,
    /// `append == true` extends it with one more chunk (A2A's streamed artifact).
    Artifact {
        /// Extend the artifact instead of replacing it.
        append: bool,
        /// The chunk's text.
        payload: &'a str,
    },
}

impl Change<'_> {
    /// The event kind the peers store for this change.
    pub fn kind(self) -> EventKind {
        match self {
            Change::Status(_) => EventKind::Status,
            Change::Artifact { append: false, .. } => EventKind::ArtifactNew,
            Change::Artifact { append: true, .. } => EventKind::ArtifactChunk,
        }
    }

    /// The event's payload text.
    pub fn text(&self) -> &str {
        match self {
            Change::Status(payload) | Change::Artifact { payload, .. } => payload,
        }
    }
}

/// What an event did, as the peers store it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// The task was created (the payload is its first message).
    Created = 1,
    /// A status update.
    Status = 2,
    /// An artifact was created.
    ArtifactNew = 3,
    /// An artifact was extended.
    ArtifactChunk = 4,
}

/// The result of a write that did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The write is durable; the task is now at `version`.
    Written {
        /// The task's version after the write (1 after creation).
        version: u64,
    },
    /// Nothing was written: the task exists already (create) or is not at the expected version
    /// (append). `actual` is its version, 0 when it does not exist.
    Conflict {
        /// The task's current version (0: no such task).
        actual: u64,
    },
}

/// A task as `get` returns it: its row plus everything its events hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskView {
    /// The task's id.
    pub id: String,
    /// Its context.
    pub context_id: String,
    /// Current state.
    pub state: State,
    /// Current version (number of events written).
    pub version: u64,
    /// Time of the current status, milliseconds since the Unix epoch.
    pub status_ms: u64,
    /// Total payload bytes of the task's events (first message, status messages, artifact
    /// chunks): proof that `get` read all of them.
    pub payload_bytes: usize,
}

/// One task on a page of `list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedTask {
    /// The task's id.
    pub id: String,
    /// Current state.
    pub state: State,
    /// Time of the current status, milliseconds since the Unix epoch.
    pub status_ms: u64,
    /// The current status message (empty when the task has none yet).
    pub status_message: String,
}

/// One page of `list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// Tasks of the context, newest status first.
    pub tasks: Vec<ListedTask>,
    /// Cursor of the next page; `None` on the last page.
    pub next: Option<String>,
}

/// One event read by `tail`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailEvent {
    /// The event's store-wide position (pass it as `after` to read on).
    pub position: u64,
    /// The task written to.
    pub task_id: String,
    /// The version the event gave the task.
    pub version: u64,
    /// The event's payload.
    pub payload: String,
}

/// The task-store operations of the workload, on one store. Implementations are shared by all
/// the bench's threads (`Send + Sync`); every write is durable when it returns `Ok`.
pub trait Store: Send + Sync {
    /// Short name for tables (`tasklog`, `sqlite`, `redb`, `fjall`).
    fn name(&self) -> &'static str;

    /// What an acknowledged write promises, in one sentence (printed with the results).
    fn durability(&self) -> &'static str;

    /// Creates `task_id` in `context_id`, submitted, at version 1, with a first message of
    /// `payload`; insert-if-absent.
    ///
    /// # Errors
    /// I/O and database errors; an existing task is [`Outcome::Conflict`], not an error.
    fn create(&self, task_id: &str, context_id: &str, payload: &str) -> Result<Outcome>;

    /// Appends one event to `task_id` if it is at exactly `expected_version` (compare-and-set).
    ///
    /// # Errors
    /// I/O and database errors; a version mismatch or a missing task is [`Outcome::Conflict`].
    fn append(&self, task_id: &str, expected_version: u64, change: Change<'_>) -> Result<Outcome>;

    /// The task with all its events, or `None`.
    ///
    /// # Errors
    /// I/O and database errors.
    fn get(&self, task_id: &str) -> Result<Option<TaskView>>;

    /// Up to `page_size` tasks of `context_id`, newest status first, after `cursor` (the `next`
    /// of the previous page; `None` for the first).
    ///
    /// # Errors
    /// I/O and database errors, a malformed cursor.
    fn list(&self, context_id: &str, page_size: usize, cursor: Option<&str>) -> Result<Page>;

    /// Up to `max` events at positions after `after` (0: from the start), in position order.
    ///
    /// # Errors
    /// I/O and database errors.
    fn tail(&self, after: u64, max: usize) -> Result<Vec<TailEvent>>;

    /// Flushes and closes the store.
    ///
    /// # Errors
    /// The store's close error.
    fn close(self: Box<Self>) -> Result<()>;
}

/// Wall-clock milliseconds that never go backwards (status times of the peers; tasklog keeps its
/// own the same way).
#[derive(Debug, Default)]
pub(crate) struct Clock(AtomicU64);

impl Clock {
    /// Now, in milliseconds since the Unix epoch, at least the last value handed out.
    pub(crate) fn now_ms(&self) -> u64 {
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let previous = self.0.fetch_max(wall, Ordering::SeqCst);
        wall.max(previous)
    }
}

/// A keyset cursor of `list` for the peers: the status time and id of the last task returned.
/// Pages are ordered by (status time, id), both descending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cursor {
    pub(crate) status_ms: u64,
    pub(crate) id: String,
}

impl Cursor {
    /// `<status ms>:<id>`.
    pub(crate) fn encode(&self) -> String {
        format!("{}:{}", self.status_ms, self.id)
    }

    /// Parses [`Cursor::encode`]'s form.
    pub(crate) fn decode(text: &str) -> Result<Self> {
        let (ms, id) = text
            .split_once(':')
            .with_context(|| format!("malformed list cursor {text:?}"))?;
        let status_ms = ms
            .parse()
            .with_context(|| format!("malformed list cursor {text:?}"))?;
        Ok(Cursor {
            status_ms,
            id: id.to_string(),
        })
    }
}

/// The first `page_size` of up to `page_size + 1` rows fetched, with a cursor if there were more.
pub(crate) fn page_of(mut tasks: Vec<ListedTask>, page_size: usize) -> Page {
    let more = tasks.len() > page_size;
    tasks.truncate(page_size);
    let next = more.then(|| tasks.last()).flatten().map(|last| {
        Cursor {
            status_ms: last.status_ms,
            id: last.id.clone(),
        }
        .encode()
    });
    Page { tasks, next }
}

/// Checks the promises of the workload on a fresh, empty store, with small sequential writes:
/// insert-if-absent, compare-and-set (a stale version and a missing task are refused and write
/// nothing), `get` returns every event, `list` pages through exactly one context's tasks newest
/// first with no duplicate, and `tail` returns exactly the events written, in order, from any
/// position.
///
/// # Errors
/// The first broken promise, or the store's own error.
pub fn check(store: &dyn Store) -> Result<()> {
    let name = store.name();
    let body = text_payload;
    // (task id, version) of every accepted write, in the order written.
    let mut written: Vec<(String, u64, String)> = Vec::new();

    let first = body(1);
    let outcome = store.create("check-t0", "check-c1", &first)?;
    ensure!(
        outcome == Outcome::Written { version: 1 },
        "{name}: create gave {outcome:?}"
    );
    written.push(("check-t0".into(), 1, first));
    let outcome = store.create("check-t0", "check-c1", &body(2))?;
    ensure!(
        outcome == Outcome::Conflict { actual: 1 },
        "{name}: a second create of one id gave {outcome:?}, not a conflict at version 1"
    );

    let payloads = [body(3), body(4), body(5)];
    let changes = [
        Change::Status(&payloads[0]),
        Change::Artifact {
            append: false,
            payload: &payloads[1],
        },
        Change::Artifact {
            append: true,
            payload: &payloads[2],
        },
    ];
    for (expected, change) in (1u64..).zip(changes) {
        let outcome = store.append("check-t0", expected, change)?;
        ensure!(
            outcome
                == Outcome::Written {
                    version: expected + 1
                },
            "{name}: append of {:?} at version {expected} gave {outcome:?}",
            change.kind()
        );
        written.push(("check-t0".into(), expected + 1, change.text().to_string()));
    }
    let outcome = store.append("check-t0", 2, Change::Status(&body(6)))?;
    ensure!(
        outcome == Outcome::Conflict { actual: 4 },
        "{name}: append with the stale version 2 gave {outcome:?}, not a conflict at 4"
    );
    let outcome = store.append("check-missing", 0, Change::Status(&body(7)))?;
    ensure!(
        outcome == Outcome::Conflict { actual: 0 },
        "{name}: append to a missing task gave {outcome:?}, not a conflict at 0"
    );

    let view = store
        .get("check-t0")?
        .with_context(|| format!("{name}: get found no check-t0"))?;
    let expected_view = TaskView {
        id: "check-t0".into(),
        context_id: "check-c1".into(),
        state: State::Working,
        version: 4,
        status_ms: view.status_ms,
        payload_bytes: 4 * EVENT_PAYLOAD_BYTES,
    };
    ensure!(
        view == expected_view,
        "{name}: get gave {view:?}, expected {expected_view:?}"
    );
    ensure!(
        store.get("check-missing")?.is_none(),
        "{name}: get found a task never created"
    );

    // Seven more tasks in context c1 and three in c2; some get a status update, which moves them
    // to the front of their context.
    let mut in_c1: HashSet<String> = HashSet::from(["check-t0".to_string()]);
    for i in 1..=10u64 {
        let (id, context) = (
            format!("check-t{i}"),
            if i <= 7 { "check-c1" } else { "check-c2" },
        );
        let payload = body(100 + i);
        ensure!(
            store.create(&id, context, &payload)? == Outcome::Written { version: 1 },
            "{name}: create {id} failed"
        );
        written.push((id.clone(), 1, payload));
        if i % 3 == 0 {
            let payload = body(200 + i);
            ensure!(
                store.append(&id, 1, Change::Status(&payload))? == Outcome::Written { version: 2 },
                "{name}: status of {id} failed"
            );
            written.push((id.clone(), 2, payload));
        }
        if context == "check-c1" {
            in_c1.insert(id);
        }
    }
    let mut seen = HashSet::new();
    let mut previous_ms = u64::MAX;
    let mut cursor: Option<String> = None;
    for page_number in 0.. {
        ensure!(page_number <= in_c1.len(), "{name}: list never ends");
        let page = store.list("check-c1", 3, cursor.as_deref())?;
        ensure!(
            page.tasks.len() <= 3,
            "{name}: a page of 3 held {}",
            page.tasks.len()
        );
        for task in &page.tasks {
            ensure!(
                in_c1.contains(&task.id),
                "{name}: list of check-c1 returned {}",
                task.id
            );
            ensure!(
                seen.insert(task.id.clone()),
                "{name}: list returned {} twice",
                task.id
            );
            ensure!(
                task.status_ms <= previous_ms,
                "{name}: list is not newest first at {}",
                task.id
            );
            previous_ms = task.status_ms;
        }
        cursor = page.next;
        if cursor.is_none() {
            break;
        }
    }
    ensure!(
        seen == in_c1,
        "{name}: list of check-c1 returned {} of its {} tasks",
        seen.len(),
        in_c1.len()
    );

    let all = store.tail(0, 1000)?;
    let got: Vec<(String, u64, String)> = all
        .iter()
        .map(|e| (e.task_id.clone(), e.version, e.payload.clone()))
        .collect();
    ensure!(
        got == written,
        "{name}: tail from the start returned {} events, not the {} written in order",
        got.len(),
        written.len()
    );
    ensure!(
        all.windows(2).all(|w| w[0].position < w[1].position),
        "{name}: tail positions do not increase"
    );
    // From the middle, in small steps: the same events, none skipped or repeated.
    let middle = all.len() / 2;
    let mut after = all
        .get(middle - 1)
        .map(|e| e.position)
        .context("tail too short")?;
    let mut rest = Vec::new();
    // Bounded: a store whose tail does not advance fails here instead of looping.
    for _ in 0..=all.len() {
        let step = store.tail(after, 2)?;
        ensure!(step.len() <= 2, "{name}: tail returned more than asked");
        ensure!(
            step.iter().all(|e| e.position > after),
            "{name}: tail after {after} returned an event at or before it"
        );
        let Some(last) = step.last() else { break };
        after = last.position;
        rest.extend(step);
    }
    ensure!(
        rest == all[middle..],
        "{name}: tail from position {} did not return the rest in order",
        all[middle - 1].position
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_fresh(open: impl FnOnce(&std::path::Path) -> Result<Box<dyn Store>>) {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path()).unwrap();
        check(store.as_ref()).unwrap();
        store.close().unwrap();
    }

    #[test]
    fn sqlite_keeps_the_promises() {
        check_fresh(|dir| Ok(Box::new(sqlite::SqliteStore::open(dir)?)));
    }

    #[test]
    fn redb_keeps_the_promises() {
        check_fresh(|dir| Ok(Box::new(redb_store::RedbStore::open(dir)?)));
    }

    #[test]
    fn fjall_keeps_the_promises() {
        check_fresh(|dir| Ok(Box::new(fjall_store::FjallStore::open(dir)?)));
    }

    #[test]
    fn tasklog_keeps_the_promises() {
        check_fresh(|dir| Ok(Box::new(tasklog::TasklogStore::open(dir)?)));
    }

    /// The peers' writes survive a close and reopen: the durable state is what `get` and `tail`
    /// read, not a cache.
    #[test]
    fn every_adapter_reads_its_writes_after_reopen() {
        type Open = fn(&std::path::Path) -> Result<Box<dyn Store>>;
        let opens: [Open; 4] = [
            |d| Ok(Box::new(sqlite::SqliteStore::open(d)?)),
            |d| Ok(Box::new(redb_store::RedbStore::open(d)?)),
            |d| Ok(Box::new(fjall_store::FjallStore::open(d)?)),
            |d| Ok(Box::new(tasklog::TasklogStore::open(d)?)),
        ];
        for open in opens {
            let dir = tempfile::tempdir().unwrap();
            let store = open(dir.path()).unwrap();
            let name = store.name();
            assert_eq!(
                store.create("t", "c", &text_payload(1)).unwrap(),
                Outcome::Written { version: 1 }
            );
            assert_eq!(
                store
                    .append("t", 1, Change::Status(&text_payload(2)))
                    .unwrap(),
                Outcome::Written { version: 2 }
            );
            store.close().unwrap();
            let store = open(dir.path()).unwrap();
            let view = store.get("t").unwrap().unwrap();
            assert_eq!((view.version, view.state), (2, State::Working), "{name}");
            assert_eq!(store.tail(0, 10).unwrap().len(), 2, "{name}");
            assert_eq!(
                store
                    .append("t", 1, Change::Status(&text_payload(3)))
                    .unwrap(),
                Outcome::Conflict { actual: 2 },
                "{name}"
            );
            store.close().unwrap();
        }
    }

    #[test]
    fn peer_versions_match_the_workspace_pins() {
        let manifest = include_str!("../../../Cargo.toml");
        for (krate, version) in PEER_VERSIONS {
            let pinned = manifest
                .lines()
                .find(|line| line.starts_with(&format!("{krate} = ")))
                .unwrap_or_else(|| panic!("{krate} is not in [workspace.dependencies]"));
            assert!(
                pinned.contains(&format!("\"={version}\"")),
                "{krate}: PEER_VERSIONS says {version}, the workspace pins {pinned}"
            );
        }
    }

    #[test]
    fn payloads_are_printable_and_sized() {
        let text = text_payload(9);
        assert_eq!(text.len(), EVENT_PAYLOAD_BYTES);
        assert!(text.bytes().all(|b| (b' '..=b'~').contains(&b)));
        assert_ne!(text, text_payload(10));
    }

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let cursor = Cursor {
            status_ms: 17,
            id: "a:b".into(),
        };
        assert_eq!(Cursor::decode(&cursor.encode()).unwrap(), cursor);
        assert!(Cursor::decode("no-colon").is_err());
        assert!(Cursor::decode("x:id").is_err());
    }
}
