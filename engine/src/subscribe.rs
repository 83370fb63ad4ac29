//! Subscriptions: replay from the log, report where the replay ended, then follow new writes.
//!
//! A subscription is a cursor, nothing more: it keeps the next version (or position) it owes its
//! reader and reads records from the log when asked. There is no per-subscriber buffer, so a slow
//! reader holds no memory for anyone, never slows a writer, and cannot miss or duplicate an event:
//! it simply reads further back in the log. Writers only wake the subscribers of the task they
//! wrote to (one `Watch` per watched task, dropped with its last subscriber), and
//! tails through one store-wide `Notify`, once per acknowledged position rather than once per
//! write. A write is in the store's memory of recent batches before its position can be
//! acknowledged, so a tail that keeps up never reads the log. Every subscriber reads the same
//! log, so all see the same order.
//!
//! The futures are runtime-agnostic (`tokio::sync` needs no runtime); [`block_on`] drives one on
//! the calling thread for code without an executor.

use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

use tokio::sync::Notify;

use crate::entry::Position;
use crate::error::{Error, Result};
use crate::event::{Event, EventBatch, TASK_BATCH_KIND};
use crate::log::lock;
use crate::model::Timestamp;
use crate::record;
use crate::state::{TaskMeta, check_listed_batch};
use crate::store::TaskStore;

/// Events of one write, delivered to a task subscriber.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Log position of the write (an SSE `id:` that survives reconnects to any node).
    pub position: Position,
    /// Version of the first event in `events`.
    pub first_version: u64,
    /// When the write was made.
    pub timestamp: Timestamp,
    /// The events not yet delivered to this subscriber, in order.
    pub events: Vec<Event>,
}

/// Where a subscription's replay ends: what was committed when it was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaughtUp {
    /// The task's version then (for a tail: 0).
    pub version: u64,
    /// The log position then: the task's last write (for a tail: the last committed record).
    pub position: Position,
}

/// What a non-blocking poll found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// The next events.
    Delivery(Delivery),
    /// Nothing new yet.
    Idle,
    /// Nothing will ever follow: the task is terminal and everything was delivered, or it was
    /// deleted.
    Ended,
}

/// What the subscribers of one task share: the wakeup, and the task's latest write, so that a
/// subscriber that keeps up finds its next batch (or that there is none yet) without the store's
/// table lock, which the writers take twice per write.
///
/// Invariant: `latest` is changed only under the table lock, to what the table says after the
/// change, and before `notify` fires for it; so a subscriber that registered for the wakeup and
/// then read `latest` either sees the write or is woken after it.
pub(crate) struct Watch {
    pub(crate) notify: Notify,
    latest: Mutex<Latest>,
}

/// The latest write to a watched task, as far as a subscriber can use it without the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Latest {
    /// The task's version.
    version: u64,
    /// The position of the batch holding `version`, and the first version of that batch known
    /// to be there (`version` itself when only the last one is known).
    position: u64,
    first_version: u64,
    /// Whether later writes can come (the task is neither terminal nor deleted).
    open: bool,
    /// The position of the task's first batch: which task has the id (see [`created`]).
    created: u64,
}

impl Latest {
    /// Nothing known: every question goes to the table.
    const UNKNOWN: Latest = Latest {
        version: 0,
        position: 0,
        first_version: 1,
        open: false,
        created: 0,
    };
}

impl Watch {
    /// A watch of a task whose table entry is `meta`.
    pub(crate) fn new(meta: Option<&TaskMeta>) -> Self {
        let watch = Watch {
            notify: Notify::new(),
            latest: Mutex::new(Latest::UNKNOWN),
        };
        watch.refresh(meta);
        watch
    }

    /// The task's entry changed to `meta` (`None`: it is gone); only the last version's batch
    /// is known. Call under the table lock.
    pub(crate) fn refresh(&self, meta: Option<&TaskMeta>) {
        self.set(meta, None);
    }

    /// The task's entry changed to `meta` by the batch `batch`. Call under the table lock.
    pub(crate) fn written(&self, meta: Option<&TaskMeta>, batch: &EventBatch) {
        self.set(meta, Some(batch));
    }

    /// `latest` from the table's entry; `last`, the batch that made it, tells where that batch
    /// begins (otherwise only its last version is known to be there).
    fn set(&self, meta: Option<&TaskMeta>, last: Option<&EventBatch>) {
        let latest = meta
            .and_then(|meta| {
                let (position, last_version) = *meta.batches.as_slice().last()?;
                let first_version = last
                    .filter(|batch| batch.last_version() == meta.version)
                    .map_or(meta.version, |batch| batch.first_version);
                (last_version == meta.version).then_some(Latest {
                    version: meta.version,
                    position,
                    first_version,
                    open: !meta.state.is_terminal(),
                    created: created(meta),
                })
            })
            .unwrap_or(Latest::UNKNOWN);
        *lock(&self.latest) = latest;
    }

    /// Where `version` of the task first written at `created` is, if the latest write answers
    /// it; `None`: ask the table.
    fn lookup(&self, version: u64, created: u64) -> Option<BatchLookup> {
        let latest = *lock(&self.latest);
        if latest.created != created {
            None
        } else if version > latest.version && latest.open {
            Some(BatchLookup::NotYet)
        } else if (latest.first_version..=latest.version).contains(&version) && latest.version > 0 {
            Some(BatchLookup::At(latest.position))
        } else {
            None
        }
    }
}

/// Which task has an id: the position of its first batch. A task deleted and another created
/// under its id (insert-if-absent) differ in it, so a subscription of the first ends rather than
/// go on with the second's events.
pub(crate) fn created(meta: &TaskMeta) -> u64 {
    meta.batches
        .as_slice()
        .first()
        .map_or(0, |(position, _)| *position)
}

/// Follows one task from a version on.
pub struct TaskSubscription {
    store: Arc<TaskStore>,
    task_id: String,
    /// The followed task's first position (see [`created`]).
    created: u64,
    next_version: u64,
    watch: Arc<Watch>,
    caught_up: CaughtUp,
}

impl TaskSubscription {
    pub(crate) fn new(
        store: Arc<TaskStore>,
        task_id: String,
        created: u64,
        next_version: u64,
        watch: Arc<Watch>,
        caught_up: CaughtUp,
    ) -> Self {
        TaskSubscription {
            store,
            task_id,
            created,
            next_version,
            watch,
            caught_up,
        }
    }

    /// The task followed.
    pub fn task_id(&self) -> &str {
        &self.task_id
    }

    /// Where the replay ends: deliveries up to this version are history, later ones are live.
    pub fn caught_up(&self) -> CaughtUp {
        self.caught_up
    }

    /// The next version this subscription will deliver.
    pub fn next_version(&self) -> u64 {
        self.next_version
    }

    /// The next events if there are any, without waiting.
    ///
    /// # Errors
    /// Log read errors; [`crate::Error::InvalidPayload`] when the record the task table names
    /// does not hold the next version (a checkpoint that does not match the log).
    pub fn try_next(&mut self) -> Result<Next> {
        let found = match self.watch.lookup(self.next_version, self.created) {
            Some(found) => found,
            None => match self
                .store
                .batch_for(&self.task_id, self.next_version, self.created)
            {
                Some(found) => found,
                None => return Ok(Next::Ended),
            },
        };
        let position = match found {
            BatchLookup::At(position) => position,
            BatchLookup::NotYet => return Ok(Next::Idle),
            BatchLookup::Finished => return Ok(Next::Ended),
        };
        let batch = match self.store.recent_batch(position) {
            Some(batch) => batch,
            None => match self.store.log().read(Position::new(position)) {
                Ok(entry) => Arc::new(record::decode(&entry)?),
                // Deleted, and its records purged or compacted away, since the position was
                // found: nothing more will follow.
                Err(Error::NotFound { .. } | Error::Compacted { .. })
                    if self.store.created(&self.task_id) != Some(self.created) =>
                {
                    return Ok(Next::Ended);
                }
                Err(error) => return Err(error),
            },
        };
        check_listed_batch(&batch, position, &self.task_id, self.next_version)?;
        let skip = self.next_version.saturating_sub(batch.first_version) as usize;
        let first_version = batch.first_version + skip as u64;
        self.next_version = batch.last_version().saturating_add(1);
        Ok(Next::Delivery(Delivery {
            position: Position::new(position),
            first_version,
            timestamp: batch.timestamp,
            events: batch.events.iter().skip(skip).cloned().collect(),
        }))
    }

    /// The next events, waiting for a write if there is none yet; `None` once nothing can follow.
    ///
    /// # Errors
    /// Log read errors.
    pub async fn next(&mut self) -> Result<Option<Delivery>> {
        loop {
            // Register for the wakeup before looking, so a write in between is not missed.
            let watch = self.watch.clone();
            let mut notified = pin!(watch.notify.notified());
            notified.as_mut().enable();
            match self.try_next()? {
                Next::Delivery(delivery) => return Ok(Some(delivery)),
                Next::Ended => return Ok(None),
                Next::Idle => notified.await,
            }
        }
    }
}

impl Drop for TaskSubscription {
    fn drop(&mut self) {
        self.store.unwatch(&self.task_id, &self.watch);
    }
}

/// What the store found for a subscription's next version.
pub(crate) enum BatchLookup {
    /// The batch holding it is at this position.
    At(u64),
    /// Not written yet.
    NotYet,
    /// The task is terminal and everything was delivered.
    Finished,
}

/// Follows every write to the store, from a log position on.
pub struct Tail {
    store: Arc<TaskStore>,
    next: u64,
    notify: Arc<Notify>,
    caught_up: CaughtUp,
}

impl Tail {
    pub(crate) fn new(
        store: Arc<TaskStore>,
        next: u64,
        notify: Arc<Notify>,
        caught_up: CaughtUp,
    ) -> Self {
        Tail {
            store,
            next,
            notify,
            caught_up,
        }
    }

    /// Where the replay ends: records up to this position were committed when the tail began.
    pub fn caught_up(&self) -> CaughtUp {
        self.caught_up
    }

    /// The position of the next record this tail will read.
    pub fn next_position(&self) -> Position {
        Position::new(self.next)
    }

    /// Up to `max` committed writes from the cursor on, without waiting (empty: none yet).
    /// Recent writes come from memory, shared by every tail; older ones are read from the log.
    ///
    /// # Errors
    /// Log read errors; [`crate::Error::NotFound`] if the cursor was purged by retention.
    pub fn try_next(&mut self, max: usize) -> Result<Vec<(Position, Arc<EventBatch>)>> {
        let committed = self.store.visible_position().get();
        let mut out = Vec::new();
        while self.next <= committed && out.len() < max.max(1) {
            let run = self
                .store
                .recent_run(self.next, committed, max.max(1) - out.len());
            if let Some((last, _)) = run.last() {
                self.next = last.get() + 1;
                out.extend(
                    run.into_iter()
                        .filter_map(|(position, batch)| batch.map(|b| (position, b))),
                );
                continue;
            }
            let want = (max.max(1) - out.len()).min((committed - self.next + 1) as usize);
            let mut read_any = false;
            for entry in self
                .store
                .log()
                .read_range(Position::new(self.next), want, usize::MAX)?
            {
                if entry.position().get() > committed {
                    break;
                }
                read_any = true;
                self.store.count_tail_log_read();
                self.next = entry.position().get() + 1;
                if entry.kind() == TASK_BATCH_KIND
                    && !self.store.is_rejected(entry.position().get())
                {
                    out.push((entry.position(), Arc::new(record::decode(&entry)?)));
                }
                // Back to memory as soon as the remembered range begins.
                if self.store.remembers(self.next) {
                    break;
                }
            }
            if !read_any {
                break;
            }
        }
        Ok(out)
    }

    /// Up to `max` committed writes, waiting for one if there is none yet.
    ///
    /// # Errors
    /// As [`Tail::try_next`].
    pub async fn next(&mut self, max: usize) -> Result<Vec<(Position, Arc<EventBatch>)>> {
        loop {
            let notify = self.notify.clone();
            let mut notified = pin!(notify.notified());
            notified.as_mut().enable();
            let batch = self.try_next(max)?;
            if !batch.is_empty() {
                return Ok(batch);
            }
            notified.await;
        }
    }
}

/// Runs a future to completion on the calling thread (for callers without an async runtime).
pub fn block_on<F: Future>(future: F) -> F::Output {
    struct ThreadWaker(std::thread::Thread);
    impl Wake for ThreadWaker {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut context = Context::from_waker(&waker);
    let mut future = pin!(future);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return output;
        }
        std::thread::park();
    }
}
