//! openraft's log storage on the engine's segment log: a Raft entry is one engine record (its term
//! in the frame, its index = position - 1), so every event is written once. Appends are written
//! to the OS at once and made durable by a flusher thread that runs one `fdatasync` for whatever
//! has queued (group commit) before it fires openraft's `IOFlushed` callbacks. The vote, the
//! committed log id and the purge point live in a small meta file replaced atomically (temp,
//! fsync, rename, fsync directory).
//!
//! Purge is logical (DESIGN.md §4): the log *is* the data, so openraft's purge only moves the
//! point below which entries are no longer served; segments are deleted by retention alone.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{EntryPayload, OptionalSend, RaftLogReader};
use serde::{Deserialize, Serialize};
use tasklog_engine::{Error, NewRecord, Position, TaskStore, limits};

use crate::types::{
    BLANK_KIND, Command, Entry, LogId, MEMBERSHIP_KIND, TypeConfig, Vote, io_error, log_id,
    position_of,
};

/// File name of the Raft meta file inside the data directory.
pub const META_FILE: &str = "raft.meta";
/// Format version of the meta file.
const META_VERSION: u32 = 1;
/// The committed log id is persisted at most this often (it is an optimisation: a node that
/// restarts re-applies up to it at once instead of waiting for the leader's next heartbeat).
const COMMITTED_PERSIST_INTERVAL: Duration = Duration::from_millis(500);
/// Records read per engine call when serving entries.
const READ_CHUNK: usize = 4096;

/// What the meta file holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Meta {
    version: u32,
    vote: Option<Vote>,
    committed: Option<LogId>,
    purged: Option<LogId>,
}

/// The Raft log storage (and, cloned, its log reader) over a replicated [`TaskStore`]'s log.
#[derive(Clone)]
pub struct LogStore {
    store: Arc<TaskStore>,
    meta: Arc<Mutex<MetaState>>,
    /// Held (on a blocking thread) across a meta file write, so writes reach the file in order;
    /// `meta` itself is only ever held briefly, never across I/O.
    meta_writes: Arc<Mutex<()>>,
    flusher: mpsc::Sender<Flush>,
}

struct MetaState {
    meta: Meta,
    /// When `committed` was last written to the file.
    committed_written: Instant,
}

enum Flush {
    /// Sync, then report to openraft.
    Appended(IOFlushed<TypeConfig>),
    /// Sync, then report to a waiting caller (truncate, shutdown).
    Barrier(tokio::sync::oneshot::Sender<io::Result<()>>),
}

impl LogStore {
    /// The log storage of `store` (opened with [`TaskStore::open_replica`]); reads the meta file.
    ///
    /// # Errors
    /// An unreadable or invalid meta file: the vote it holds must never be forgotten, so the node
    /// refuses to start rather than guess.
    pub fn open(store: Arc<TaskStore>) -> io::Result<Self> {
        let meta = match store.log().read_side_file(META_FILE).map_err(io_error)? {
            None => Meta {
                version: META_VERSION,
                ..Meta::default()
            },
            Some(bytes) => {
                let meta: Meta = serde_json::from_slice(&bytes).map_err(|e| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("invalid {META_FILE}: {e}"),
                    )
                })?;
                if meta.version != META_VERSION {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "{META_FILE} has format {}, expected {META_VERSION}",
                            meta.version
                        ),
                    ));
                }
                meta
            }
        };
        let (flusher, requests) = mpsc::channel();
        let synced = store.clone();
        std::thread::Builder::new()
            .name("tasklog-raft-flush".into())
            .spawn(move || flush_loop(&synced, &requests))?;
        Ok(LogStore {
            store,
            meta: Arc::new(Mutex::new(MetaState {
                meta,
                committed_written: Instant::now(),
            })),
            meta_writes: Arc::new(Mutex::new(())),
            flusher,
        })
    }

    /// The task store whose log this is.
    pub fn store(&self) -> &Arc<TaskStore> {
        &self.store
    }

    /// Makes everything appended so far durable.
    ///
    /// # Errors
    /// The sync's error.
    pub async fn flush(&self) -> io::Result<()> {
        let (done, wait) = tokio::sync::oneshot::channel();
        self.flusher
            .send(Flush::Barrier(done))
            .map_err(|_| io::Error::other("the log flusher stopped"))?;
        wait.await
            .map_err(|_| io::Error::other("the log flusher stopped"))?
    }

    fn meta(&self) -> Meta {
        self.meta
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .meta
            .clone()
    }

    /// Changes the meta and writes the file (durably) before returning.
    async fn write_meta(&self, change: impl FnOnce(&mut Meta) + Send + 'static) -> io::Result<()> {
        let meta = self.meta.clone();
        let writes = self.meta_writes.clone();
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            let _ordered = writes.lock().unwrap_or_else(PoisonError::into_inner);
            let bytes = {
                let mut state = meta.lock().unwrap_or_else(PoisonError::into_inner);
                change(&mut state.meta);
                serde_json::to_vec(&state.meta).map_err(io::Error::other)?
            };
            store
                .log()
                .write_side_file(META_FILE, &bytes)
                .map_err(io_error)?;
            meta.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .committed_written = Instant::now();
            Ok(())
        })
        .await
        .map_err(io::Error::other)?
    }

    /// Reads the entries at positions `from..=to`, as openraft entries.
    fn read_entries(&self, from: u64, to: u64) -> io::Result<Vec<Entry>> {
        let log = self.store.log();
        let mut out = Vec::new();
        let mut next = from;
        while next <= to {
            let want = usize::try_from(to - next + 1)
                .unwrap_or(usize::MAX)
                .min(READ_CHUNK);
            let records = log
                .read_range(Position::new(next), want, usize::MAX)
                .map_err(io_error)?;
            let Some(last) = records.last() else { break };
            next = last.position().get() + 1;
            for record in records {
                if record.position().get() > to {
                    break;
                }
                out.push(to_entry(&record)?);
            }
        }
        Ok(out)
    }
}

/// An engine record as an openraft entry.
fn to_entry(record: &tasklog_engine::Entry) -> io::Result<Entry> {
    let log_id = log_id(record.term(), record.position())
        .ok_or_else(|| io::Error::other("a record at position 0"))?;
    let payload = match record.kind() {
        BLANK_KIND => EntryPayload::Blank,
        MEMBERSHIP_KIND => {
            EntryPayload::Membership(serde_json::from_slice(record.payload()).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("membership entry at position {}: {e}", record.position()),
                )
            })?)
        }
        kind => EntryPayload::Normal(Command {
            kind,
            payload: record.payload().to_vec(),
        }),
    };
    Ok(Entry { log_id, payload })
}

/// The record kind and payload bytes of an openraft entry.
fn to_record(entry: &Entry) -> io::Result<(u8, std::borrow::Cow<'_, [u8]>)> {
    Ok(match &entry.payload {
        EntryPayload::Blank => (BLANK_KIND, std::borrow::Cow::Borrowed(&[][..])),
        EntryPayload::Membership(membership) => (
            MEMBERSHIP_KIND,
            std::borrow::Cow::Owned(serde_json::to_vec(membership).map_err(io::Error::other)?),
        ),
        EntryPayload::Normal(command) => {
            if matches!(command.kind, BLANK_KIND | MEMBERSHIP_KIND) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("command kind {} is reserved for Raft", command.kind),
                ));
            }
            (
                command.kind,
                std::borrow::Cow::Borrowed(command.payload.as_slice()),
            )
        }
    })
}

/// The flusher thread: waits for requests, syncs once for all that queued, reports to each.
fn flush_loop(store: &TaskStore, requests: &mpsc::Receiver<Flush>) {
    while let Ok(first) = requests.recv() {
        let mut batch = vec![first];
        batch.extend(requests.try_iter());
        let synced = store.log().sync();
        for request in batch {
            let result = synced
                .as_ref()
                .map(|_| ())
                .map_err(|e| io::Error::other(e.to_string()));
            match request {
                Flush::Appended(callback) => callback.io_completed(result),
                Flush::Barrier(done) => {
                    let _ = done.send(result);
                }
            }
        }
    }
}

fn start_position<R: RangeBounds<u64>>(range: &R) -> u64 {
    match range.start_bound() {
        Bound::Included(i) => i.saturating_add(1),
        Bound::Excluded(i) => i.saturating_add(2),
        Bound::Unbounded => 1,
    }
}

fn end_position<R: RangeBounds<u64>>(range: &R) -> u64 {
    match range.end_bound() {
        Bound::Included(i) => i.saturating_add(1),
        Bound::Excluded(i) => *i,
        Bound::Unbounded => u64::MAX,
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let purged_to = self.meta().purged.map_or(0, |p| position_of(p.index).get());
        let (first, last) = self.store.log().bounds();
        let from = start_position(&range).max(purged_to + 1).max(first.get());
        let to = end_position(&range).min(last.get());
        if from > to {
            return Ok(Vec::new());
        }
        self.read_entries(from, to)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(self.meta().vote)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let purged = self.meta().purged;
        let (first, last) = self.store.log().bounds();
        let purged_to = purged.map_or(0, |p| position_of(p.index).get());
        let last_log_id = if last >= first && last.get() > purged_to {
            let record = self.store.log().read(last).map_err(io_error)?;
            log_id(record.term(), last)
        } else {
            purged
        };
        Ok(LogState {
            last_purged_log_id: purged,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        let vote = *vote;
        self.write_meta(move |meta| meta.vote = Some(vote)).await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        let due = {
            let mut state = self.meta.lock().unwrap_or_else(PoisonError::into_inner);
            state.meta.committed = committed;
            state.committed_written.elapsed() >= COMMITTED_PERSIST_INTERVAL
        };
        if due {
            self.write_meta(|_| {}).await?;
        }
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(self.meta().committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let log = self.store.log();
        if let Some(first) = entries.first() {
            let at = position_of(first.log_id.index);
            let next = log.next_position();
            if at != next {
                // A log that holds nothing (new, or purged past its end by a snapshot) starts at
                // the entry's place; anything else would leave a hole.
                let purged_to = self.meta().purged.map_or(0, |p| position_of(p.index).get());
                let (first, last) = log.bounds();
                let holds_nothing = last < first || last.get() <= purged_to;
                if holds_nothing && at.get() > purged_to {
                    self.flush().await?;
                    log.reset(at).map_err(io_error)?;
                } else {
                    return Err(io_error(Error::PositionMismatch {
                        requested: at.get(),
                        next: next.get(),
                    }));
                }
            }
        }
        for chunk in entries.chunks(limits::BATCH_RECORDS_MAX) {
            let Some(first) = chunk.first() else { continue };
            let records = chunk
                .iter()
                .map(|entry| {
                    to_record(entry)
                        .map(|(kind, payload)| (entry.log_id.leader_id.term, kind, payload))
                })
                .collect::<io::Result<Vec<_>>>()?;
            let records: Vec<NewRecord<'_>> = records
                .iter()
                .map(|(term, kind, payload)| NewRecord {
                    term: *term,
                    kind: *kind,
                    payload,
                })
                .collect();
            log.append_at(position_of(first.log_id.index), &records)
                .map_err(io_error)?;
        }
        self.flusher
            .send(Flush::Appended(callback))
            .map_err(|_| io::Error::other("the log flusher stopped"))?;
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        // Every earlier append is reported before the records it wrote can disappear.
        self.flush().await?;
        let log = self.store.log();
        let keep = match last_log_id {
            Some(id) => position_of(id.index),
            None => Position::new(log.bounds().0.get() - 1),
        };
        let keep = keep.max(Position::new(log.bounds().0.get() - 1));
        log.truncate_after(keep).map_err(io_error)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        let current = self.meta().purged;
        if current.is_some_and(|p| p.index >= log_id.index) {
            return Ok(());
        }
        self.write_meta(move |meta| meta.purged = Some(log_id))
            .await
    }
}
