//! The ordered set of segments: append (group commit), read by position and range, roll, truncate
//! a suffix (Raft conflicts), purge a prefix (retention), close.
//!
//! # Concurrency
//! - `write` (a mutex) holds the queue of encoded frames and the positions handed out. Appenders
//!   encode their frames into it under the lock (a memcpy and a CRC), then one of them, the
//!   *leader*, takes the whole queue, releases the lock and does the I/O: one `pwrite` per segment
//!   touched and one `fdatasync`. While it works, new appenders queue the next batch and park.
//! - Parked appenders wait on their own thread, not on the mutex: the leader publishes the
//!   acknowledged position in an atomic and unparks exactly the appenders it covered, plus one
//!   successor to lead what was queued meanwhile. A woken appender returns without taking the lock,
//!   so 64 acknowledgements do not queue up behind one mutex.
//! - `io` (a mutex) is the active segment's writer side; only the leader and maintenance take it.
//! - `view` (a read-write lock, held only for pointer swaps) is what readers see: sealed segments
//!   (memory-mapped) and the active one (read with `pread`). Readers never take `write` or `io`.
//! - Truncate, purge and close first become an exclusive leader: the queue is flushed, appenders
//!   wait on the `wake` condvar, then the maintenance I/O runs.
//!
//! # Invariants
//! - Positions are dense: segment `i + 1` starts at `last(i) + 1`; records within a segment are
//!   consecutive.
//! - A sealed segment and its index file are never modified in place (they are mapped); a sealed
//!   segment that a truncation cuts is rewritten to a new file and renamed over the old one.
//! - `durable <= written <= next_position - 1`; only `durable` is acknowledged under
//!   [`SyncPolicy::Always`].

use std::collections::VecDeque;
use std::fs::File;
use std::mem;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{
    Arc, Condvar, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard,
};
use std::thread::{self, Thread};

use memmap2::Mmap;
use rkyv::util::AlignedVec;

use crate::config::{Options, SyncPolicy};
use crate::entry::{Appended, Entry, EntryBytes, NewRecord, Position};
use crate::error::{Error, Result};
use crate::frame::{self, Decoded};
use crate::index::{self, Entries, IndexEntry, IndexSummary, MappedIndex};
use crate::limits;
use crate::recovery::{self, RecoveryReport};
use crate::segment;
use crate::storage::{self, Dir};
use crate::task::Flusher;

/// An append-only, CRC-framed, segmented log in one directory.
///
/// `Log` is `Send + Sync`: share it with an `Arc` and append from many threads; concurrent appends
/// are group-committed. Dropping it closes it cleanly (a checkpoint lets the next open skip the
/// scan); [`Log::close`] does the same and reports errors.
pub struct Log {
    inner: Arc<Inner>,
    flusher: Option<Flusher>,
    report: RecoveryReport,
}

pub(crate) struct Inner {
    pub(crate) dir: Dir,
    pub(crate) options: Options,
    write: Mutex<WriteState>,
    /// Signals appenders and maintenance: a batch finished, the leader role is free, room in the
    /// queue, the log closed or was poisoned.
    wake: Condvar,
    /// The last acknowledged position (`WriteState::acknowledged`), readable without the lock so
    /// that an unparked appender can return without touching `write`.
    acked: AtomicU64,

    io: Mutex<Io>,
    pub(crate) view: RwLock<View>,
    /// Bumped by every truncation, so a read that raced with one retries instead of reporting the
    /// bytes it saw change as corruption.
    truncations: AtomicU64,
    /// Held while the set of sealed segment files changes other than by a roll: a compaction's
    /// commit, truncate, purge, reset. It is never held while appenders wait on it.
    pub(crate) sealed_files: Mutex<()>,
    /// Held for a whole compaction pass, so that two never run at once.
    pub(crate) compacting: Mutex<()>,
    _lock: File,
}

/// Appender-side state, under `Inner::write`.
struct WriteState {
    next_position: u64,
    pending: Vec<Chunk>,
    pending_bytes: usize,
    /// Length of the active segment once `pending` is written.
    planned_bytes: u64,
    /// Whether the active segment, once `pending` is written, holds a frame.
    planned_frames: bool,
    /// Someone is writing a batch or doing maintenance I/O.
    leader: bool,
    /// Truncate, purge or close is running: appenders must not take positions.
    maintenance: bool,
    /// Last position written to a file (readable).
    written: u64,
    /// Last position covered by an fsync.
    durable: u64,
    poison: Option<String>,
    closed: bool,
    /// Appenders parked until their last record is acknowledged (or until they are needed to
    /// lead the next batch, or the log stops).
    waiters: Vec<Waiter>,
}

/// A parked appender.
struct Waiter {
    /// Its last position: it is done once this is acknowledged.
    target: u64,
    thread: Thread,
}

/// Encoded frames bound for one segment.
struct Chunk {
    /// The segment must be rolled before this chunk: it starts a new one at `first_position`.
    starts_segment: bool,
    first_position: u64,
    last_position: u64,
    bytes: Vec<u8>,
}

/// The active segment's writer side, under `Inner::io`.
pub(crate) struct Io {
    pub(crate) active: Arc<Active>,
    pub(crate) len: u64,
    pub(crate) last_position: u64,
    pub(crate) last_index_offset: u64,
    pub(crate) dirty: bool,
}

/// What readers see, under `Inner::view`.
pub(crate) struct View {
    pub(crate) sealed: VecDeque<Arc<Sealed>>,
    pub(crate) active: Arc<Active>,
    pub(crate) first_position: u64,
    pub(crate) last_position: u64,
}

/// A sealed segment: immutable, memory-mapped, with a mapped offset index.
pub(crate) struct Sealed {
    pub(crate) path: PathBuf,
    pub(crate) first_position: u64,
    pub(crate) last_position: u64,
    pub(crate) data: Mmap,
    pub(crate) index: MappedIndex,
    /// Set for a compacted segment: it may hold gap frames, and holds this many records.
    pub(crate) compacted: Option<segment::Compacted>,
}

/// The segment being appended to. Readers use `pread` up to `state.len`.
pub(crate) struct Active {
    pub(crate) path: PathBuf,
    pub(crate) file: Arc<File>,
    pub(crate) first_position: u64,
    pub(crate) state: RwLock<ActiveState>,
}

pub(crate) struct ActiveState {
    pub(crate) len: u64,
    pub(crate) last_position: u64,
    pub(crate) index: Vec<IndexEntry>,
}

impl Sealed {
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.data
    }
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The log keeps its own poison state (see `LeaderGuard`); a panic elsewhere must not make every
    // later caller panic too.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

impl Log {
    /// Opens the log in `path`, creating the directory and a first segment if needed, and recovers
    /// it according to `options.recovery` (see [`RecoveryReport`] for what recovery did).
    ///
    /// # Errors
    /// [`Error::Locked`] if another process has it open, [`Error::Corrupt`] for damage the recovery
    /// mode does not tolerate, [`Error::Io`], [`Error::InvalidArgument`] for bad options.
    pub fn open(path: impl AsRef<Path>, options: Options) -> Result<Log> {
        options.validate()?;
        let dir = Dir::create(path.as_ref())?;
        let lock_file = dir.lock()?;
        match options.sync {
            SyncPolicy::Always | SyncPolicy::External => {}
            SyncPolicy::Interval { ms } => tracing::warn!(
                dir = %dir.path().display(),
                "log opened with SyncPolicy::Interval({ms} ms): a power loss can lose acknowledged appends"
            ),
            SyncPolicy::Never => tracing::warn!(
                dir = %dir.path().display(),
                "log opened with SyncPolicy::Never: appends are not durable until sync() or close()"
            ),
        }
        let recovered = recovery::recover(&dir, &options)?;
        let next_position = recovered.io.last_position + 1;
        let planned_bytes = recovered.io.len;
        let first_position = recovered
            .sealed
            .front()
            .map_or(recovered.io.active.first_position, |s| s.first_position);
        let view = View {
            sealed: recovered.sealed,
            active: recovered.io.active.clone(),
            first_position,
            last_position: recovered.io.last_position,
        };
        let inner = Arc::new(Inner {
            write: Mutex::new(WriteState {
                next_position,
                pending: Vec::new(),
                pending_bytes: 0,
                planned_bytes,
                planned_frames: planned_bytes > segment::HEADER_BYTES as u64,
                leader: false,
                maintenance: false,
                written: next_position - 1,
                durable: next_position - 1,
                poison: None,
                closed: false,
                waiters: Vec::new(),
            }),
            wake: Condvar::new(),
            acked: AtomicU64::new(next_position - 1),

            io: Mutex::new(recovered.io),
            view: RwLock::new(view),
            truncations: AtomicU64::new(0),
            sealed_files: Mutex::new(()),
            compacting: Mutex::new(()),
            dir,
            options,
            _lock: lock_file,
        });
        let flusher = match inner.options.sync {
            SyncPolicy::Interval { ms } => Some(Flusher::start(inner.clone(), ms)?),
            SyncPolicy::Always | SyncPolicy::Never | SyncPolicy::External => None,
        };
        Ok(Log {
            inner,
            flusher,
            report: recovered.report,
        })
    }

    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }

    /// Writes a side file of a layer above the log (such as the task checkpoint) into the data
    /// directory, atomically and durably (temporary file, fsync, rename, fsync directory).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a name the log uses itself or that leaves the directory;
    /// I/O errors.
    pub fn write_side_file(&self, name: &str, bytes: &[u8]) -> Result<()> {
        check_side_name(name)?;
        self.inner.dir.write_atomically(name, bytes).map(drop)
    }

    /// Reads a side file written by [`Log::write_side_file`]; `None` if there is none.
    ///
    /// # Errors
    /// As [`Log::write_side_file`].
    pub fn read_side_file(&self, name: &str) -> Result<Option<Vec<u8>>> {
        check_side_name(name)?;
        let path = self.inner.dir.join(name);
        match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("read side file", path, e)),
        }
    }

    /// What recovery found and did when this log was opened.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.report
    }

    /// The directory this log lives in.
    pub fn path(&self) -> &Path {
        self.inner.dir.path()
    }

    /// Fault injection hooks (feature `testing`).
    #[cfg(feature = "testing")]
    pub fn faults(&self) -> &storage::Faults {
        self.inner.dir.faults()
    }

    /// Appends records at the next positions, returning once they are acknowledged: synced under
    /// [`SyncPolicy::Always`], written to the OS otherwise. Concurrent calls share writes and syncs.
    ///
    /// The records of one call get consecutive positions and reach the file in one write (two if
    /// the segment rolls in between); a crash can still keep a prefix of them.
    ///
    /// # Errors
    /// [`Error::TooLarge`] or [`Error::InvalidArgument`] for a bad batch (nothing is appended),
    /// [`Error::Poisoned`] after a failed write or sync, [`Error::Closed`].
    pub fn append(&self, records: &[NewRecord<'_>]) -> Result<Appended> {
        self.inner.append(None, records, &mut |_| {})
    }

    /// Like [`Log::append`], and calls `assigned` with the records' positions as soon as they are
    /// handed out, under the appenders' lock, so before any reader can see them acknowledged
    /// (the task store keeps the batch in memory there for subscribers, so that none of them
    /// reads a just-acknowledged record back from the file). `assigned` must be short and must
    /// not call into the log. It is not called when the append is refused before positions are
    /// handed out; when the write or sync then fails, the positions are never acknowledged.
    pub(crate) fn append_announced(
        &self,
        records: &[NewRecord<'_>],
        assigned: &mut dyn FnMut(Appended),
    ) -> Result<Appended> {
        self.inner.append(None, records, assigned)
    }

    /// Like [`Log::append`], but only if the first record would get position `first`; Raft uses it
    /// to append entries at their log index.
    ///
    /// # Errors
    /// [`Error::PositionMismatch`] when `first` is not the next position, else as [`Log::append`].
    pub fn append_at(&self, first: Position, records: &[NewRecord<'_>]) -> Result<Appended> {
        self.inner.append(Some(first.get()), records, &mut |_| {})
    }

    /// Forces everything written so far to stable storage (needed only with
    /// [`SyncPolicy::Interval`] or [`SyncPolicy::Never`]). A truncate, purge, reset or close
    /// running at the time is waited for first.
    ///
    /// # Errors
    /// [`Error::Poisoned`] (and the log is poisoned) when the sync fails, or when a maintenance
    /// it waited for failed; [`Error::Closed`] once the log is closed.
    pub fn sync(&self) -> Result<()> {
        self.inner.sync()
    }

    /// The position the next append will get.
    pub fn next_position(&self) -> Position {
        Position::new(lock(&self.inner.write).next_position)
    }

    /// First and last readable positions (`last = first - 1` when the log holds nothing).
    pub fn bounds(&self) -> (Position, Position) {
        let view = read(&self.inner.view);
        (
            Position::new(view.first_position),
            Position::new(view.last_position),
        )
    }

    /// Last position acknowledged to appenders: durable under [`SyncPolicy::Always`], written
    /// to the OS under the other policies. Subscriptions follow this. Lock-free.
    pub fn acknowledged_position(&self) -> Position {
        Position::new(self.inner.acked.load(Ordering::SeqCst))
    }

    /// Whether an earlier failed write or fsync poisoned the log (it refuses writes until reopened).
    pub fn is_poisoned(&self) -> bool {
        lock(&self.inner.write).poison.is_some()
    }

    /// Last position covered by an fsync.
    pub fn durable_position(&self) -> Position {
        Position::new(lock(&self.inner.write).durable)
    }

    /// Number of segment files (sealed plus the active one).
    pub fn segment_count(&self) -> usize {
        read(&self.inner.view).sealed.len() + 1
    }

    /// Reads the record at `position`.
    ///
    /// Records are readable as soon as they are written, before the sync that makes them durable
    /// (Raft replicates entries its leader has not flushed yet), and a record whose sync failed
    /// stays readable until the poisoned log is reopened. What is durable is
    /// [`Log::durable_position`]; the task store and subscriptions only ever expose that.
    ///
    /// # Errors
    /// [`Error::NotFound`] outside [`Log::bounds`], [`Error::Compacted`] for a record that
    /// compaction removed, [`Error::Corrupt`] if its bytes fail the CRC.
    pub fn read(&self, position: Position) -> Result<Entry> {
        let position = position.get();
        let (mut entries, next) = self.inner.read_segment(position, 1, 0)?;
        match entries.pop() {
            Some(entry) if entry.position == position => Ok(entry),
            // The walk passed `position` without a record for it: a gap frame covered it.
            _ if next > position => Err(Error::Compacted { position }),
            _ => Err(self.inner.not_found(position)),
        }
    }

    /// Reads up to `max_count` records in position order starting at `from`, stopping early at
    /// the end of the log or once `max_bytes` of payload are gathered (always at least one
    /// record). Positions that compaction removed are skipped, so the records need not be
    /// consecutive; the result is empty only when every position from `from` to the end was
    /// removed.
    ///
    /// # Errors
    /// [`Error::NotFound`] when `from` is outside [`Log::bounds`], [`Error::Corrupt`].
    pub fn read_range(
        &self,
        from: Position,
        max_count: usize,
        max_bytes: usize,
    ) -> Result<Vec<Entry>> {
        let mut out = Vec::new();
        let mut next = from.get();
        let mut bytes = 0usize;
        while out.len() < max_count {
            let budget = max_bytes.saturating_sub(bytes);
            if !out.is_empty() && (budget == 0 || next > read(&self.inner.view).last_position) {
                break;
            }
            let (batch, resume) =
                match self
                    .inner
                    .read_segment(next, max_count - out.len(), budget.max(1))
                {
                    Ok(read) => read,
                    Err(Error::NotFound { .. }) if !out.is_empty() || next > from.get() => break,
                    Err(e) => return Err(e),
                };
            let Some(last) = batch.last() else {
                if resume > next {
                    // Only gap frames to the end of that segment: go on with the next one.
                    next = resume;
                    continue;
                }
                if out.is_empty() && next == from.get() {
                    return Err(self.inner.not_found(next));
                }
                break;
            };
            next = last.position + 1;
            bytes += batch.iter().map(|e| e.payload.len()).sum::<usize>();
            out.extend(batch);
        }
        Ok(out)
    }

    /// Removes every record after `position` (keeps `position`). Truncating at or past the end does
    /// nothing. Appenders wait while it runs.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `position` is before `first - 1`; I/O errors poison the log.
    pub fn truncate_after(&self, position: Position) -> Result<()> {
        self.inner
            .maintain(|inner| inner.truncate_after(position.get()))
    }

    /// Removes whole segments whose records all come before `position`. The segment holding
    /// `position` and the active segment stay, so [`Log::bounds`] may still start below it.
    ///
    /// # Errors
    /// I/O errors (the log is poisoned).
    pub fn purge_before(&self, position: Position) -> Result<()> {
        self.inner
            .maintain(|inner| inner.purge_before(position.get()))
    }

    /// Removes every record and makes `next` the position of the next append: the log then holds
    /// nothing, with [`Log::bounds`] `(next, next - 1)`. Raft uses it to start over after a
    /// snapshot that ends past (or conflicts with) everything the log holds. Appenders wait while
    /// it runs. Crash-safe: segments are removed oldest first and the new, empty segment is
    /// created last, so a crash leaves a shorter contiguous log or an empty one, never a hole.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for position 0 or beyond the position space; I/O errors poison
    /// the log.
    pub fn reset(&self, next: Position) -> Result<()> {
        let next = next.get();
        if next == 0 || next > limits::POSITION_MAX {
            return Err(Error::InvalidArgument(format!(
                "reset to position {next} is outside 1..={}",
                limits::POSITION_MAX
            )));
        }
        self.inner.maintain(|inner| inner.reset(next))
    }

    /// Flushes, syncs, writes a checkpoint so the next open needs no scan, and closes.
    ///
    /// # Errors
    /// The first failed flush, sync or checkpoint write.
    pub fn close(mut self) -> Result<()> {
        self.shutdown()
    }

    pub(crate) fn shutdown(&mut self) -> Result<()> {
        if let Some(flusher) = self.flusher.take() {
            flusher.stop();
        }
        self.inner.close()
    }

    /// Simulates a crash for tests: stops without the final sync or checkpoint, leaving the files
    /// exactly as a killed process would (what the OS has is kept; nothing more is written).
    #[cfg(feature = "testing")]
    pub fn crash(mut self) {
        self.crash_in_place();
    }

    #[cfg(feature = "testing")]
    pub(crate) fn crash_in_place(&mut self) {
        if let Some(flusher) = self.flusher.take() {
            flusher.stop();
        }
        let mut state = lock(&self.inner.write);
        state.closed = true;
        self.inner.notify(state);
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        if let Err(error) = self.shutdown() {
            tracing::error!(dir = %self.inner.dir.path().display(), %error, "closing the log failed");
        }
    }
}

/// Clears the leader flag and poisons the log if the leader unwinds mid-I/O, so waiters do not
/// wait forever and nobody writes after an I/O of unknown outcome.
struct LeaderGuard<'a> {
    inner: &'a Inner,
    armed: bool,
}

impl Drop for LeaderGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            let mut state = lock(&self.inner.write);
            state.leader = false;
            state.maintenance = false;
            state
                .poison
                .get_or_insert_with(|| "a thread panicked during log I/O".to_string());
            self.inner.notify(state);
        }
    }
}

impl WriteState {
    fn acknowledged(&self, sync: SyncPolicy) -> u64 {
        match sync {
            SyncPolicy::Always => self.durable,
            SyncPolicy::Interval { .. } | SyncPolicy::Never | SyncPolicy::External => self.written,
        }
    }

    /// Whether an appender finding this state should lead the next batch: records are queued and
    /// no one is writing.
    fn may_lead(&self) -> bool {
        !self.leader && !self.pending.is_empty()
    }

    fn check_open(&self) -> Result<()> {
        if let Some(cause) = &self.poison {
            return Err(Error::Poisoned {
                cause: cause.clone(),
            });
        }
        if self.closed {
            return Err(Error::Closed);
        }
        Ok(())
    }

    fn push_frame(&mut self, record: &NewRecord<'_>, segment_bytes_max: u64) {
        let len = frame::frame_len(record.payload.len()) as u64;
        let position = self.next_position;
        let roll = self.planned_frames && self.planned_bytes + len > segment_bytes_max;
        if roll || self.pending.is_empty() {
            self.pending.push(Chunk {
                starts_segment: roll,
                first_position: position,
                last_position: position,
                bytes: Vec::new(),
            });
        }
        if roll {
            self.planned_bytes = segment::HEADER_BYTES as u64;
        }
        if let Some(chunk) = self.pending.last_mut() {
            frame::encode(
                &mut chunk.bytes,
                position,
                record.term,
                record.kind,
                record.payload,
            );
            chunk.last_position = position;
        }
        self.planned_bytes += len;
        self.planned_frames = true;
        self.pending_bytes += len as usize;
        self.next_position += 1;
    }
}

/// How a maintenance task changed the log's end.
enum Changed {
    /// Records after this position are gone.
    Truncated(u64),
    /// Every record is gone; the next append gets this position + 1.
    Reset(u64),
}

impl Inner {
    fn append(
        &self,
        at: Option<u64>,
        records: &[NewRecord<'_>],
        assigned: &mut dyn FnMut(Appended),
    ) -> Result<Appended> {
        if records.is_empty() {
            return Err(Error::InvalidArgument(
                "an append needs at least one record".into(),
            ));
        }
        if records.len() > limits::BATCH_RECORDS_MAX {
            return Err(Error::TooLarge {
                what: "batch record count",
                len: records.len() as u64,
                max: limits::BATCH_RECORDS_MAX as u64,
            });
        }
        let mut batch_bytes = 0usize;
        for record in records {
            if record.payload.len() > limits::PAYLOAD_BYTES_MAX as usize {
                return Err(Error::TooLarge {
                    what: "record payload",
                    len: record.payload.len() as u64,
                    max: u64::from(limits::PAYLOAD_BYTES_MAX),
                });
            }
            batch_bytes += frame::frame_len(record.payload.len());
        }
        self.append_queued(at, records, batch_bytes, assigned)
    }

    fn append_queued(
        &self,
        at: Option<u64>,
        records: &[NewRecord<'_>],
        batch_bytes: usize,
        assigned: &mut dyn FnMut(Appended),
    ) -> Result<Appended> {
        let mut state = lock(&self.write);
        loop {
            state.check_open()?;
            let has_room = state.pending_bytes == 0
                || state.pending_bytes + batch_bytes <= limits::PENDING_BYTES_MAX;
            if !state.maintenance && has_room {
                break;
            }
            state = self
                .wake
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        if let Some(requested) = at
            && requested != state.next_position
        {
            return Err(Error::PositionMismatch {
                requested,
                next: state.next_position,
            });
        }
        if state.next_position + records.len() as u64 > limits::POSITION_MAX {
            return Err(Error::InvalidArgument(
                "the log's position space is exhausted".into(),
            ));
        }
        let first = state.next_position;
        for record in records {
            state.push_frame(record, self.options.segment_bytes_max);
        }
        let last = state.next_position - 1;
        let done = Appended {
            first: Position::new(first),
            last: Position::new(last),
        };
        assigned(done);
        let me = thread::current();
        loop {
            if state.acknowledged(self.options.sync) >= last {
                return Ok(done);
            }
            if let Some(cause) = &state.poison {
                return Err(Error::Poisoned {
                    cause: cause.clone(),
                });
            }
            if state.may_lead() {
                state = self.lead(state);
                continue;
            }
            if state.closed {
                return Err(Error::Closed);
            }
            // Park until a leader acknowledges `last`, hands us the next batch, or the log stops.
            // The common wakeup needs no lock at all: the acked position is an atomic.
            state.waiters.push(Waiter {
                target: last,
                thread: me.clone(),
            });
            drop(state);
            thread::park();
            if self.acked.load(Ordering::SeqCst) >= last {
                return Ok(done);
            }
            state = lock(&self.write);
            // A spurious wakeup leaves our entry behind; never keep two.
            state.waiters.retain(|w| w.thread.id() != me.id());
        }
    }

    /// Publishes the acknowledged position and wakes whoever must act, after releasing the lock:
    /// every parked appender whose records are now acknowledged; one more to lead the next
    /// batch if records are queued and no one leads; everyone if the log stopped. Condvar
    /// waiters (backpressure, maintenance) are woken too.
    fn notify(&self, mut state: MutexGuard<'_, WriteState>) {
        let acked = state.acknowledged(self.options.sync);
        self.acked.store(acked, Ordering::SeqCst);
        let stopped = state.poison.is_some() || state.closed;
        let mut successor_needed = state.may_lead();
        let mut wake = Vec::new();
        state.waiters.retain(|waiter| {
            let go = stopped || waiter.target <= acked || mem::take(&mut successor_needed);
            if go {
                wake.push(waiter.thread.clone());
            }
            !go
        });
        drop(state);
        self.wake.notify_all();
        for thread in wake {
            thread.unpark();
        }
    }

    /// Takes the queued batch, writes and syncs it without holding `write`, then acknowledges
    /// its appenders and wakes a successor for whatever was queued meanwhile.
    ///
    /// Pipelining (handing the writer role on before the sync, so two syncs overlap) was measured
    /// and dropped: fdatasyncs on one ext4 file serialize, and it lowered 64-writer throughput.
    fn lead<'a>(&'a self, mut state: MutexGuard<'a, WriteState>) -> MutexGuard<'a, WriteState> {
        state.leader = true;
        let batch = mem::take(&mut state.pending);
        state.pending_bytes = 0;
        drop(state);
        let mut guard = LeaderGuard {
            inner: self,
            armed: true,
        };
        let result = self.write_batch(&batch);
        let mut state = lock(&self.write);
        guard.armed = false;
        state.leader = false;
        match result {
            Ok(synced) => {
                let last = batch.last().map_or(state.written, |c| c.last_position);
                state.written = last;
                if synced {
                    state.durable = last;
                }
            }
            Err(error) => {
                tracing::error!(%error, "log write failed; the log is poisoned");
                state.poison.get_or_insert_with(|| error.to_string());
            }
        }
        self.notify(state);
        lock(&self.write)
    }

    /// Writes the chunks (rolling segments where a chunk says so) and syncs if the policy says so.
    /// Returns whether everything written is now durable.
    fn write_batch(&self, batch: &[Chunk]) -> Result<bool> {
        let mut io = lock(&self.io);
        for chunk in batch {
            if chunk.starts_segment {
                self.roll(&mut io, chunk.first_position)?;
            }
            let active = io.active.clone();
            storage::write_at(
                &active.file,
                &active.path,
                &chunk.bytes,
                io.len,
                self.dir.faults(),
            )?;
            let mut entries = Vec::new();
            let mut offset = 0usize;
            let mut position = chunk.first_position;
            while let Some(header) = chunk.bytes.get(offset..offset + frame::HEADER_BYTES) {
                let file_offset = io.len + offset as u64;
                if index::due(
                    file_offset,
                    io.last_index_offset,
                    self.options.index_interval_bytes,
                ) {
                    entries.push(IndexEntry {
                        relative_position: (position - active.first_position) as u32,
                        offset: file_offset as u32,
                    });
                    io.last_index_offset = file_offset;
                }
                offset += frame::frame_len(crate::le::u32_at(header, frame::LEN_OFFSET) as usize);
                position += 1;
            }
            io.len += chunk.bytes.len() as u64;
            io.last_position = chunk.last_position;
            io.dirty = true;
            {
                let mut published = write(&active.state);
                published.len = io.len;
                published.last_position = io.last_position;
                published.index.extend(entries);
            }
            write(&self.view).last_position = io.last_position;
        }
        if self.options.sync == SyncPolicy::Always && io.dirty {
            storage::sync_data(&io.active.file, &io.active.path, self.dir.faults())?;
            io.dirty = false;
        }
        Ok(self.options.sync == SyncPolicy::Always)
    }

    /// Seals the active segment and starts a new one whose first record is `first_position`.
    fn roll(&self, io: &mut Io, first_position: u64) -> Result<()> {
        let sealed = self.seal(io)?;
        let name = segment::file_name(first_position);
        let file = self
            .dir
            .write_atomically(&name, &segment::encode_header(first_position))?;
        let active = Arc::new(Active {
            path: self.dir.join(&name),
            file: Arc::new(file),
            first_position,
            state: RwLock::new(ActiveState {
                len: segment::HEADER_BYTES as u64,
                last_position: first_position - 1,
                index: Vec::new(),
            }),
        });
        io.active = active.clone();
        io.len = segment::HEADER_BYTES as u64;
        io.last_index_offset = 0;
        io.dirty = false;
        let mut view = write(&self.view);
        view.sealed.push_back(Arc::new(sealed));
        view.active = active;
        Ok(())
    }

    /// Syncs the active segment, writes its index file and maps both.
    fn seal(&self, io: &mut Io) -> Result<Sealed> {
        let active = io.active.clone();
        if io.dirty {
            storage::sync_data(&active.file, &active.path, self.dir.faults())?;
            io.dirty = false;
        }
        let index_file = self.write_index(io)?;
        let index_path = self.dir.join(&index_name(active.first_position));
        let index = MappedIndex::load(&index_file, active.first_position).map_err(|e| match e {
            Ok(reason) => Error::corrupt(&index_path, 0, reason),
            Err(source) => Error::io("mmap index", &index_path, source),
        })?;
        let data = index::map_immutable(&active.file)
            .map_err(|e| Error::io("mmap segment", &active.path, e))?;
        Ok(Sealed {
            path: active.path.clone(),
            first_position: active.first_position,
            last_position: io.last_position,
            data,
            index,
            compacted: None,
        })
    }

    /// Writes the active segment's index file (on seal, and as a checkpoint on close).
    fn write_index(&self, io: &Io) -> Result<File> {
        let active = &io.active;
        let entries = read(&active.state).index.clone();
        let summary = IndexSummary {
            first_position: active.first_position,
            last_position: io.last_position,
            segment_bytes: io.len,
            entry_count: entries.len() as u32,
        };
        self.dir.write_atomically(
            &index_name(active.first_position),
            &index::encode(&summary, &entries),
        )
    }

    /// Never called from inside a maintenance (`maintain`'s work): it waits for the maintenance.
    pub(crate) fn sync(&self) -> Result<()> {
        let (target, generation) = {
            let mut state = lock(&self.write);
            // A truncate, purge, reset or close may not sync what was written before this call
            // (purge syncs only the directory) and may fail after it: `Ok` here must mean an
            // fsync covered it, so wait for the maintenance to end (`notify` wakes us), then sync.
            loop {
                state.check_open()?;
                if !state.maintenance {
                    break;
                }
                state = self
                    .wake
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            (state.written, self.truncations.load(Ordering::SeqCst))
        };
        let active = read(&self.view).active.clone();
        if let Err(error) = storage::sync_data(&active.file, &active.path, self.dir.faults()) {
            let mut state = lock(&self.write);
            state.poison.get_or_insert_with(|| error.to_string());
            self.notify(state);
            return Err(error);
        }
        let mut state = lock(&self.write);
        // A truncation that ran during the sync may have removed records up to `target`: then
        // this sync proves nothing about the log as it is now, and must not raise `durable`.
        if generation == self.truncations.load(Ordering::SeqCst) {
            state.durable = state.durable.max(target).min(state.written);
        }
        self.notify(state);
        Ok(())
    }

    /// Flushes the queue, makes the caller the only writer, runs `work`, and releases.
    fn maintain(&self, work: impl FnOnce(&Inner) -> Result<Option<Changed>>) -> Result<()> {
        let mut state = lock(&self.write);
        loop {
            state.check_open()?;
            if state.leader || state.maintenance {
                state = self
                    .wake
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            } else if state.may_lead() {
                state = self.lead(state);
            } else {
                break;
            }
        }
        state.leader = true;
        state.maintenance = true;
        drop(state);
        let mut guard = LeaderGuard {
            inner: self,
            armed: true,
        };
        self.dir.faults().maintenance_started();
        let result = {
            let _files = lock(&self.sealed_files);
            work(self)
        };
        let mut state = lock(&self.write);
        guard.armed = false;
        state.leader = false;
        state.maintenance = false;
        let outcome = match result {
            Ok(Some(Changed::Reset(new_last))) => {
                // Nothing is left to write or sync: the new segment was created durably.
                state.next_position = new_last + 1;
                state.written = new_last;
                state.durable = new_last;
                let io = lock(&self.io);
                state.planned_bytes = io.len;
                state.planned_frames = false;
                Ok(())
            }
            Ok(Some(Changed::Truncated(new_last))) => {
                state.next_position = new_last + 1;
                state.written = state.written.min(new_last);
                state.durable = state.durable.min(new_last);
                let io = lock(&self.io);
                state.planned_bytes = io.len;
                state.planned_frames = io.len > segment::HEADER_BYTES as u64;
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(error) => {
                if error.kind() == crate::ErrorKind::Fatal {
                    state.poison.get_or_insert_with(|| error.to_string());
                }
                Err(error)
            }
        };
        self.notify(state);
        outcome
    }

    /// Returns the new last position when the log changed.
    fn truncate_after(&self, keep: u64) -> Result<Option<Changed>> {
        let (first, last) = {
            let view = read(&self.view);
            (view.first_position, view.last_position)
        };
        if keep >= last {
            return Ok(None);
        }
        if keep < first - 1 {
            return Err(Error::InvalidArgument(format!(
                "truncate_after({keep}) is before the first position {first}"
            )));
        }
        let cut = keep + 1;
        let compacted_through = read(&self.view)
            .sealed
            .iter()
            .take_while(|s| s.first_position <= cut)
            .filter(|s| s.compacted.is_some())
            .last()
            .map(|s| s.last_position);
        if let Some(compacted_through) = compacted_through.filter(|last| *last >= cut) {
            return Err(Error::InvalidArgument(format!(
                "truncate_after({keep}) would cut into records that compaction rewrote (through \
                 position {compacted_through}); truncate after them only"
            )));
        }
        self.truncations.fetch_add(1, Ordering::SeqCst);
        let cut_entry = self
            .read_segment(cut, 1, 0)?
            .0
            .pop()
            .filter(|entry| entry.position == cut)
            .ok_or_else(|| self.not_found(cut))?;
        let cut_offset = cut_entry.offset;
        let mut io = lock(&self.io);
        let (doomed, holder) = {
            let view = read(&self.view);
            let keep_sealed = view
                .sealed
                .iter()
                .take_while(|s| s.last_position < cut)
                .count();
            let holder = view.sealed.get(keep_sealed).cloned();
            let mut doomed: Vec<u64> = view
                .sealed
                .iter()
                .skip(keep_sealed + 1)
                .map(|s| s.first_position)
                .collect();
            if holder.is_some() {
                doomed.push(view.active.first_position);
            }
            (doomed, holder)
        };
        // Newest first, so that a crash leaves a shorter log that is still a prefix.
        for first_position in doomed.iter().rev() {
            self.dir.remove(&index_name(*first_position))?;
            self.dir.remove(&segment::file_name(*first_position))?;
        }
        self.dir.sync()?;
        let active = match holder {
            Some(sealed) => {
                let name = segment::file_name(sealed.first_position);
                let prefix = sealed.data.get(..cut_offset as usize).ok_or_else(|| {
                    Error::corrupt(&sealed.path, cut_offset, "cut offset beyond the segment")
                })?;
                // The index goes first (durably): an index must never outlive the bytes it
                // describes, or recovery would trust it for a file that has since changed.
                self.dir.remove(&index_name(sealed.first_position))?;
                self.dir.sync()?;
                let file = self.dir.write_atomically(&name, prefix)?;
                let entries = sealed.index.entries();
                let kept: Vec<IndexEntry> = (0..entries.count())
                    .map(|i| entries.entry(i))
                    .filter(|e| u64::from(e.offset) < cut_offset)
                    .collect();
                Arc::new(Active {
                    path: sealed.path.clone(),
                    file: Arc::new(file),
                    first_position: sealed.first_position,
                    state: RwLock::new(ActiveState {
                        len: cut_offset,
                        last_position: keep,
                        index: kept,
                    }),
                })
            }
            None => {
                let active = io.active.clone();
                self.dir.remove(&index_name(active.first_position))?;
                self.dir.sync()?;
                storage::set_len_durably(
                    &active.file,
                    &active.path,
                    cut_offset,
                    self.dir.faults(),
                )?;
                let mut published = write(&active.state);
                published.len = cut_offset;
                published.last_position = keep;
                published.index.retain(|e| u64::from(e.offset) < cut_offset);
                drop(published);
                active
            }
        };
        io.last_index_offset = read(&active.state)
            .index
            .last()
            .map_or(0, |e| u64::from(e.offset));
        io.active = active.clone();
        io.len = cut_offset;
        io.last_position = keep;
        io.dirty = false;
        let mut view = write(&self.view);
        while view.sealed.back().is_some_and(|s| s.last_position >= cut) {
            view.sealed.pop_back();
        }
        view.active = active;
        view.last_position = keep;
        drop(view);
        self.truncations.fetch_add(1, Ordering::SeqCst);
        Ok(Some(Changed::Truncated(keep)))
    }

    fn reset(&self, next: u64) -> Result<Option<Changed>> {
        self.truncations.fetch_add(1, Ordering::SeqCst);
        let mut io = lock(&self.io);
        let doomed: Vec<u64> = {
            let view = read(&self.view);
            view.sealed
                .iter()
                .map(|s| s.first_position)
                .chain([view.active.first_position])
                .collect()
        };
        // Oldest first: a crash in between leaves a contiguous suffix.
        for first_position in &doomed {
            self.dir.remove(&index_name(*first_position))?;
            self.dir.remove(&segment::file_name(*first_position))?;
        }
        self.dir.sync()?;
        let name = segment::file_name(next);
        let file = self
            .dir
            .write_atomically(&name, &segment::encode_header(next))?;
        let active = Arc::new(Active {
            path: self.dir.join(&name),
            file: Arc::new(file),
            first_position: next,
            state: RwLock::new(ActiveState {
                len: segment::HEADER_BYTES as u64,
                last_position: next - 1,
                index: Vec::new(),
            }),
        });
        io.active = active.clone();
        io.len = segment::HEADER_BYTES as u64;
        io.last_position = next - 1;
        io.last_index_offset = 0;
        io.dirty = false;
        let mut view = write(&self.view);
        view.sealed.clear();
        view.active = active;
        view.first_position = next;
        view.last_position = next - 1;
        drop(view);
        self.truncations.fetch_add(1, Ordering::SeqCst);
        Ok(Some(Changed::Reset(next - 1)))
    }

    fn purge_before(&self, position: u64) -> Result<Option<Changed>> {
        loop {
            let victim = {
                let mut view = write(&self.view);
                match view.sealed.front() {
                    Some(front) if front.last_position < position => {
                        let victim = view.sealed.pop_front();
                        view.first_position = view
                            .sealed
                            .front()
                            .map_or(view.active.first_position, |s| s.first_position);
                        victim
                    }
                    _ => None,
                }
            };
            let Some(victim) = victim else { break };
            // Oldest first, so that a crash leaves a log that is still contiguous.
            self.dir
                .remove(&segment::file_name(victim.first_position))?;
            self.dir.remove(&index_name(victim.first_position))?;
        }
        self.dir.sync()?;
        Ok(None)
    }

    fn close(&self) -> Result<()> {
        if lock(&self.write).closed {
            return Ok(());
        }
        let result = self.maintain(|inner| {
            let io = lock(&inner.io);
            storage::sync_data(&io.active.file, &io.active.path, inner.dir.faults())?;
            inner.write_index(&io)?;
            Ok(None)
        });
        let mut state = lock(&self.write);
        state.closed = true;
        self.notify(state);
        match result {
            Err(Error::Closed) => Ok(()),
            other => other,
        }
    }

    /// `Ok` while the log is open and not poisoned.
    pub(crate) fn ensure_open(&self) -> Result<()> {
        lock(&self.write).check_open()
    }

    /// Stops all writes until the log is reopened: the files no longer match what this process
    /// holds in memory, and recovery is what reconciles them.
    pub(crate) fn poison(&self, error: &Error) {
        let mut state = lock(&self.write);
        state.poison.get_or_insert_with(|| error.to_string());
        self.notify(state);
    }

    pub(crate) fn not_found(&self, position: u64) -> Error {
        let view = read(&self.view);
        Error::NotFound {
            position,
            first: view.first_position,
            last: view.last_position,
        }
    }

    /// Reads entries from `position` on within the one segment that holds it, with the position
    /// after the last frame walked (past `position` even when gap frames covered everything).
    fn read_segment(
        &self,
        position: u64,
        max_count: usize,
        max_bytes: usize,
    ) -> Result<(Vec<Entry>, u64)> {
        const ATTEMPTS_MAX: usize = 4;
        let mut attempt = 0;
        loop {
            let generation = self.truncations.load(Ordering::SeqCst);
            let result = self.read_segment_once(position, max_count, max_bytes);
            attempt += 1;
            let raced = generation != self.truncations.load(Ordering::SeqCst);
            match result {
                Err(Error::Corrupt { .. }) if raced && attempt < ATTEMPTS_MAX => continue,
                Ok((entries, next)) if entries.is_empty() && next <= position => {
                    return Err(self.not_found(position));
                }
                other => return other,
            }
        }
    }

    fn read_segment_once(
        &self,
        position: u64,
        max_count: usize,
        max_bytes: usize,
    ) -> Result<(Vec<Entry>, u64)> {
        enum Holder {
            Sealed(Arc<Sealed>),
            Active(Arc<Active>),
        }
        let holder = {
            let view = read(&self.view);
            if position < view.first_position || position > view.last_position {
                return Err(Error::NotFound {
                    position,
                    first: view.first_position,
                    last: view.last_position,
                });
            }
            let at = view.sealed.partition_point(|s| s.last_position < position);
            match view.sealed.get(at) {
                Some(sealed) => Holder::Sealed(sealed.clone()),
                None => Holder::Active(view.active.clone()),
            }
        };
        match &holder {
            Holder::Sealed(sealed) => read_sealed(sealed, position, max_count, max_bytes),
            Holder::Active(active) => read_active(active, position, max_count, max_bytes),
        }
    }
}

/// Side files must be plain names the log does not use itself.
fn check_side_name(name: &str) -> Result<()> {
    let ours = name.ends_with(".seg")
        || name.ends_with(".idx")
        || name.ends_with(storage::TEMP_SUFFIX)
        || name == storage::LOCK_FILE;
    if name.is_empty() || ours || name.contains('/') || name.starts_with('.') {
        return Err(Error::InvalidArgument(format!(
            "{name:?} cannot be a side file"
        )));
    }
    Ok(())
}

pub(crate) fn index_name(first_position: u64) -> String {
    format!("{first_position:020}.{}", index::EXTENSION)
}

fn read_sealed(
    sealed: &Arc<Sealed>,
    position: u64,
    max_count: usize,
    max_bytes: usize,
) -> Result<(Vec<Entry>, u64)> {
    let relative = position
        .checked_sub(sealed.first_position)
        .ok_or(Error::NotFound {
            position,
            first: sealed.first_position,
            last: sealed.last_position,
        })?;
    let start = sealed
        .index
        .entries()
        .floor(relative as u32)
        .ok_or_else(|| {
            Error::corrupt(
                &sealed.path,
                0,
                "offset index has no entry for the first frame",
            )
        })?;
    let bytes = sealed.bytes();
    let mut walk = Walk {
        path: &sealed.path,
        position: sealed.first_position + u64::from(start.relative_position),
        target: position,
        max_count,
        max_bytes,
        out: Vec::new(),
        payload_bytes: 0,
    };
    let mut offset = start.offset as usize;
    let decode = if sealed.compacted.is_some() {
        frame::decode_compacted
    } else {
        frame::decode
    };
    while !walk.done() && walk.position <= sealed.last_position {
        let rest = bytes.get(offset..).unwrap_or_default();
        let frame = match decode(rest) {
            Decoded::Frame(frame) => frame,
            Decoded::Incomplete { .. } => {
                return Err(Error::corrupt(
                    &sealed.path,
                    offset as u64,
                    "sealed segment ends inside a frame",
                ));
            }
            Decoded::Corrupt(reason) => {
                return Err(Error::corrupt(&sealed.path, offset as u64, reason));
            }
        };
        walk.visit(
            &frame,
            offset as u64,
            || EntryBytes::Mapped(sealed.clone()),
            offset,
        )?;
        offset += frame.len;
    }
    Ok((walk.out, walk.position))
}

fn read_active(
    active: &Active,
    position: u64,
    max_count: usize,
    max_bytes: usize,
) -> Result<(Vec<Entry>, u64)> {
    let (len, last, start) = {
        let state = read(&active.state);
        let relative = position.saturating_sub(active.first_position);
        let start = state.index.floor(relative as u32).ok_or_else(|| {
            Error::corrupt(
                &active.path,
                0,
                "offset index has no entry for the first frame",
            )
        })?;
        (state.len, state.last_position, start)
    };
    let mut walk = Walk {
        path: &active.path,
        position: active.first_position + u64::from(start.relative_position),
        target: position,
        max_count,
        max_bytes,
        out: Vec::new(),
        payload_bytes: 0,
    };
    let mut offset = u64::from(start.offset);
    // A single record is at most one index interval past its entry: read a small window first
    // (the buffer is zero-filled before the read, so its size is paid for even if unused).
    let mut window = if max_count == 1 {
        8 * 1024
    } else {
        64 * 1024usize
    };
    while !walk.done() && walk.position <= last && offset < len {
        let want = window.min((len - offset) as usize);
        let mut buffer = AlignedVec::<16>::with_capacity(want);
        buffer.resize(want, 0);
        let got = storage::read_at(&active.file, &active.path, buffer.as_mut_slice(), offset)?;
        buffer.resize(got, 0);
        let buffer = Arc::new(buffer);
        let mut at = 0usize;
        while !walk.done() && walk.position <= last {
            match frame::decode(buffer.get(at..).unwrap_or_default()) {
                Decoded::Frame(frame) => {
                    walk.visit(
                        &frame,
                        offset + at as u64,
                        || EntryBytes::Buffer(buffer.clone()),
                        at,
                    )?;
                    at += frame.len;
                }
                Decoded::Incomplete { needed } => {
                    if got < want {
                        // The file shrank under us: a truncation raced with this read.
                        return Ok((walk.out, walk.position));
                    }
                    if offset + (at + needed) as u64 > len {
                        return Err(Error::corrupt(
                            &active.path,
                            offset + at as u64,
                            "frame extends past the written end",
                        ));
                    }
                    window = window.max(needed);
                    break;
                }
                Decoded::Corrupt(reason) => {
                    return Err(Error::corrupt(&active.path, offset + at as u64, reason));
                }
            }
        }
        offset += at as u64;
    }
    Ok((walk.out, walk.position))
}

/// Walks frames from an index entry to the target position, then collects entries; a gap frame
/// moves the walk past the positions it stands for.
struct Walk<'a> {
    path: &'a Path,
    /// Position the next visited frame must carry.
    position: u64,
    target: u64,
    max_count: usize,
    max_bytes: usize,
    out: Vec<Entry>,
    payload_bytes: usize,
}

impl Walk<'_> {
    fn done(&self) -> bool {
        self.out.len() >= self.max_count
            || (!self.out.is_empty() && self.payload_bytes >= self.max_bytes)
    }

    /// `base` is the frame's offset within the buffer that `bytes` will hold.
    fn visit(
        &mut self,
        frame: &frame::Frame<'_>,
        file_offset: u64,
        bytes: impl FnOnce() -> EntryBytes,
        base: usize,
    ) -> Result<()> {
        if frame.position != self.position {
            return Err(Error::corrupt(
                self.path,
                file_offset,
                "position out of sequence",
            ));
        }
        if frame.is_gap() {
            self.position = self.position.saturating_add(frame.gap);
            return Ok(());
        }
        if frame.position >= self.target {
            let start = base + frame::HEADER_BYTES;
            self.out.push(Entry {
                position: frame.position,
                term: frame.term,
                kind: frame.kind,
                offset: file_offset,
                bytes: bytes(),
                payload: start..start + frame.payload.len(),
            });
            self.payload_bytes += frame.payload.len();
        }
        self.position += 1;
        Ok(())
    }
}
