//! The task-table checkpoint: the materialized state of every live task as of one log position,
//! in one file (`tasks.checkpoint`), so that opening a store replays only the records after that
//! position. Derived data: missing, damaged or not matching the log, it is ignored and the table
//! is rebuilt from the log (engine/FORMAT.md §9).
//!
//! ```text
//! { magic[8] | u16 version | u16 flags=0 | u32 reserved=0 | u64 covered_position | u64 payload_len
//!   | u32 payload_crc | [u8; 24] reserved=0 | u32 header_crc(0..60) | payload }
//! ```
//!
//! The payload (version 3) is a flat stream of varints and fixed fields, tasks in `ListTasks`
//! rank order: opening reads it in one pass straight into the table's own form (no per-field
//! allocation beyond a task's batch list, no rkyv validation and copy), and the restore's sort
//! finds the tasks already sorted. Version 2 (an rkyv archive) is still read.
#![deny(clippy::indexing_slicing)]

use rkyv::rancor;
use rkyv::util::AlignedVec;

use crate::error::Result;
use crate::id::CompactId;
use crate::le::{put, u16_at, u32_at, u64_at};
use crate::limits::{TASKS_MAX, VERSION_MAX};
use crate::model::{TaskState, Timestamp};
use crate::state::{Batches, TaskMeta};

/// File name of the checkpoint inside the data directory.
pub const FILE_NAME: &str = "tasks.checkpoint";
/// Checkpoint magic (PNG style, see [`crate::segment::MAGIC`]).
pub const MAGIC: [u8; 8] = *b"\x89TLT\r\n\x1a\n";
/// Checkpoint format version written: 3, a flat varint layout read without allocating per
/// field (engine/FORMAT.md §9). Version 2 (rkyv, which added `rejected` and `replica`) is still
/// read; a version 1 file is ignored and the table rebuilt from the log.
pub const FORMAT_VERSION: u16 = 3;
/// The previous format version (an rkyv archive), still read.
const FORMAT_VERSION_RKYV: u16 = 2;

const VERSION_OFFSET: usize = MAGIC.len();
const FLAGS_OFFSET: usize = VERSION_OFFSET + size_of::<u16>();
const COVERED_OFFSET: usize = FLAGS_OFFSET + size_of::<u16>() + size_of::<u32>();
const PAYLOAD_LEN_OFFSET: usize = COVERED_OFFSET + size_of::<u64>();
const PAYLOAD_CRC_OFFSET: usize = PAYLOAD_LEN_OFFSET + size_of::<u64>();
const HEADER_CRC_OFFSET: usize = 60;
/// Size of the header; the payload starts here.
pub const HEADER_BYTES: usize = HEADER_CRC_OFFSET + size_of::<u32>();

const _: () = assert!(PAYLOAD_CRC_OFFSET + size_of::<u32>() <= HEADER_CRC_OFFSET);

/// One task as checkpointed.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct CheckpointTask {
    /// The task id.
    pub id: String,
    /// Its version.
    pub version: u64,
    /// Its state.
    pub state: TaskState,
    /// Its context.
    pub context_id: String,
    /// Its status time.
    pub status_timestamp: Timestamp,
    /// `(position, last version)` of each of its batches.
    pub batches: Vec<(u64, u64)>,
    /// Its artifact ids.
    pub artifact_ids: Vec<String>,
}

/// The checkpoint's payload.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Checkpoint {
    /// Every record up to this position is reflected (and nothing after it).
    pub covered_position: u64,
    /// The live tasks.
    pub tasks: Vec<CheckpointTask>,
    /// Positions up to `covered_position` whose event batch was rejected (a no-op that tails skip),
    /// ascending.
    pub rejected: Vec<u64>,
    /// Set by a store that a replication layer drives (see `TaskStore::open_replica`).
    pub replica: Option<ReplicaCheckpoint>,
}

/// What a replicated store checkpoints besides its tasks.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ReplicaCheckpoint {
    /// Term of the record at `covered_position` (0 when it is 0).
    pub applied_term: u64,
    /// The replication layer's own state as of `covered_position` (its membership), opaque here.
    pub state: Vec<u8>,
}

impl CheckpointTask {
    pub(crate) fn from_meta(id: &CompactId, meta: &TaskMeta) -> Self {
        CheckpointTask {
            id: id.to_string(),
            version: meta.version,
            state: meta.state,
            context_id: meta.context_id.to_string(),
            status_timestamp: meta.status_timestamp,
            batches: meta.batches.as_slice().to_vec(),
            artifact_ids: meta.artifact_ids.as_deref().cloned().unwrap_or_default(),
        }
    }

    /// `(id, metadata)`, as [`crate::state::TaskTable::restore`] takes a task.
    pub(crate) fn into_meta(self) -> (CompactId, TaskMeta) {
        let batches = match self.batches.as_slice() {
            [one] => Batches::One([*one]),
            _ => Batches::Many(self.batches),
        };
        let meta = TaskMeta::new(
            self.version,
            self.state,
            self.status_timestamp,
            CompactId::new(&self.context_id),
            batches,
            (!self.artifact_ids.is_empty()).then(|| Box::new(self.artifact_ids)),
        );
        (CompactId::new(&self.id), meta)
    }
}

/// Encodes a checkpoint file (format version [`FORMAT_VERSION`]), its tasks in the order given.
///
/// # Errors
/// None today; the `Result` is kept for callers that still expect one.
pub fn encode(checkpoint: &Checkpoint) -> Result<Vec<u8>> {
    let ids: Vec<(CompactId, CompactId)> = checkpoint
        .tasks
        .iter()
        .map(|task| (CompactId::new(&task.id), CompactId::new(&task.context_id)))
        .collect();
    let views = checkpoint
        .tasks
        .iter()
        .zip(&ids)
        .map(|(task, (id, context_id))| TaskView {
            id,
            context_id,
            version: task.version,
            state: task.state,
            status_timestamp: task.status_timestamp,
            batches: &task.batches,
            artifact_ids: &task.artifact_ids,
        });
    Ok(encode_parts(
        checkpoint.covered_position,
        checkpoint.tasks.len(),
        views,
        checkpoint.rejected.iter().copied(),
        checkpoint.rejected.len(),
        checkpoint.replica.as_ref(),
    ))
}

/// One task as [`encode_parts`] writes it.
pub(crate) struct TaskView<'a> {
    pub(crate) id: &'a CompactId,
    pub(crate) context_id: &'a CompactId,
    pub(crate) version: u64,
    pub(crate) state: TaskState,
    pub(crate) status_timestamp: Timestamp,
    pub(crate) batches: &'a [(u64, u64)],
    pub(crate) artifact_ids: &'a [String],
}

impl<'a> TaskView<'a> {
    /// The view of a task of the table.
    pub(crate) fn of_meta(id: &'a CompactId, meta: &'a TaskMeta) -> Self {
        TaskView {
            id,
            context_id: &meta.context_id,
            version: meta.version,
            state: meta.state,
            status_timestamp: meta.status_timestamp,
            batches: meta.batches.as_slice(),
            artifact_ids: meta.artifact_ids.as_deref().map_or(&[], Vec::as_slice),
        }
    }
}

/// Appends `value` as an unsigned LEB128 varint (1 to 10 bytes, minimal).
fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_id(out: &mut Vec<u8>, id: &CompactId) {
    match id {
        CompactId::Uuid(bytes) => {
            out.push(ID_UUID);
            out.extend_from_slice(bytes);
        }
        CompactId::Text(text) => {
            out.push(ID_TEXT);
            put_varint(out, text.len() as u64);
            out.extend_from_slice(text.as_bytes());
        }
    }
}

/// Code of a state in the file (engine/FORMAT.md §9); `Unspecified` (0) is never written by the
/// engine and refused on reading.
fn state_code(state: TaskState) -> u8 {
    match state {
        TaskState::Unspecified => 0,
        TaskState::Submitted => 1,
        TaskState::Working => 2,
        TaskState::Completed => 3,
        TaskState::Failed => 4,
        TaskState::Canceled => 5,
        TaskState::InputRequired => 6,
        TaskState::Rejected => 7,
        TaskState::AuthRequired => 8,
    }
}

fn state_of_code(code: u8) -> Option<TaskState> {
    Some(match code {
        1 => TaskState::Submitted,
        2 => TaskState::Working,
        3 => TaskState::Completed,
        4 => TaskState::Failed,
        5 => TaskState::Canceled,
        6 => TaskState::InputRequired,
        7 => TaskState::Rejected,
        8 => TaskState::AuthRequired,
        _ => return None,
    })
}

/// An id held as its 16 UUID bytes.
const ID_UUID: u8 = 0;
/// An id held as text (a varint length, then UTF-8 bytes).
const ID_TEXT: u8 = 1;

/// Encodes a checkpoint file from parts (engine/FORMAT.md §9, version 3): `task_count` tasks,
/// `rejected_count` rejected positions. The store writes its tasks in `ListTasks` rank order
/// (oldest status first), which lets the restore's sort find them already sorted.
pub(crate) fn encode_parts<'a>(
    covered_position: u64,
    task_count: usize,
    tasks: impl Iterator<Item = TaskView<'a>>,
    rejected: impl Iterator<Item = u64>,
    rejected_count: usize,
    replica: Option<&ReplicaCheckpoint>,
) -> Vec<u8> {
    let mut out = vec![0u8; HEADER_BYTES];
    put_varint(&mut out, task_count as u64);
    put_varint(&mut out, rejected_count as u64);
    match replica {
        Some(replica) => {
            out.push(1);
            put_varint(&mut out, replica.applied_term);
            put_varint(&mut out, replica.state.len() as u64);
            out.extend_from_slice(&replica.state);
        }
        None => out.push(0),
    }
    // Deltas: the engine's lists are strictly ascending, so every delta it writes is at least 1;
    // anything else (wrapped here, as the encoder does not judge) is refused on reading.
    let mut previous = 0u64;
    for position in rejected.take(rejected_count) {
        put_varint(&mut out, position.wrapping_sub(previous));
        previous = position;
    }
    for task in tasks.take(task_count) {
        out.push(state_code(task.state));
        put_id(&mut out, task.id);
        put_id(&mut out, task.context_id);
        out.extend_from_slice(&task.status_timestamp.0.to_le_bytes());
        put_varint(&mut out, task.version);
        put_varint(&mut out, task.batches.len() as u64);
        let mut previous = (0u64, 0u64);
        for &(position, version) in task.batches {
            put_varint(&mut out, position.wrapping_sub(previous.0));
            put_varint(&mut out, version.wrapping_sub(previous.1));
            previous = (position, version);
        }
        put_varint(&mut out, task.artifact_ids.len() as u64);
        for artifact in task.artifact_ids {
            put_varint(&mut out, artifact.len() as u64);
            out.extend_from_slice(artifact.as_bytes());
        }
    }
    let payload_len = (out.len() - HEADER_BYTES) as u64;
    let payload_crc = crc32fast::hash(out.get(HEADER_BYTES..).unwrap_or_default());
    put(&mut out, 0, &MAGIC);
    put(&mut out, VERSION_OFFSET, &FORMAT_VERSION.to_le_bytes());
    put(&mut out, COVERED_OFFSET, &covered_position.to_le_bytes());
    put(&mut out, PAYLOAD_LEN_OFFSET, &payload_len.to_le_bytes());
    put(&mut out, PAYLOAD_CRC_OFFSET, &payload_crc.to_le_bytes());
    let crc = crc32fast::hash(out.get(..HEADER_CRC_OFFSET).unwrap_or_default());
    put(&mut out, HEADER_CRC_OFFSET, &crc.to_le_bytes());
    out
}

/// Encodes a version 2 (rkyv) checkpoint file, as engines before version 3 wrote; for tests
/// that check such files are still read.
///
/// # Errors
/// [`crate::Error::InvalidArgument`] if rkyv refuses the value (it does not for these types).
#[cfg(any(test, feature = "testing"))]
pub fn encode_version_2(checkpoint: &Checkpoint) -> Result<Vec<u8>> {
    let payload = rkyv::to_bytes::<rancor::Error>(checkpoint).map_err(|e| {
        crate::error::Error::InvalidArgument(format!("cannot serialize the checkpoint: {e}"))
    })?;
    let mut out = vec![0u8; HEADER_BYTES];
    put(&mut out, 0, &MAGIC);
    put(&mut out, VERSION_OFFSET, &FORMAT_VERSION_RKYV.to_le_bytes());
    put(
        &mut out,
        COVERED_OFFSET,
        &checkpoint.covered_position.to_le_bytes(),
    );
    put(
        &mut out,
        PAYLOAD_LEN_OFFSET,
        &(payload.len() as u64).to_le_bytes(),
    );
    put(
        &mut out,
        PAYLOAD_CRC_OFFSET,
        &crc32fast::hash(&payload).to_le_bytes(),
    );
    let crc = crc32fast::hash(out.get(..HEADER_CRC_OFFSET).unwrap_or_default());
    put(&mut out, HEADER_CRC_OFFSET, &crc.to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(out)
}

/// A checkpoint as the table restores it: its tasks read one by one into the table's form.
#[derive(Debug)]
pub(crate) struct Loaded<'a> {
    /// Every record up to this position is reflected.
    pub(crate) covered_position: u64,
    /// The live tasks, in file order, read as they are taken (a damaged task is an error item;
    /// the iterator must be drained to see all errors). Ids are not checked for repeats here:
    /// [`crate::state::TaskTable::try_restore`] refuses a repeated id as it indexes them.
    pub(crate) tasks: Tasks<'a>,
    /// Rejected positions, ascending.
    pub(crate) rejected: Vec<u64>,
    /// The replica part, if any.
    pub(crate) replica: Option<ReplicaCheckpoint>,
}

/// Decodes and fully validates a checkpoint file.
///
/// # Errors
/// A static reason for the first failed check.
pub fn decode(bytes: &[u8]) -> Result<Checkpoint, String> {
    let loaded = load(bytes)?;
    let tasks = loaded
        .tasks
        .collect::<Result<Vec<(CompactId, TaskMeta)>, String>>()?;
    let mut ids = std::collections::HashSet::with_capacity_and_hasher(
        tasks.len(),
        foldhash::fast::RandomState::default(),
    );
    if !tasks.iter().all(|(id, _)| ids.insert(id)) {
        return Err("checkpoint names a task twice".into());
    }
    Ok(Checkpoint {
        covered_position: loaded.covered_position,
        tasks: tasks
            .iter()
            .map(|(id, meta)| CheckpointTask::from_meta(id, meta))
            .collect(),
        rejected: loaded.rejected,
        replica: loaded.replica,
    })
}

/// Checks the header and the payload CRC, then reads the payload (version 3, or version 2 as
/// older engines wrote) into the table's form, refusing what the engine never writes (see
/// [`check_content`]) except repeated task ids.
///
/// # Errors
/// A static reason for the first failed check.
pub(crate) fn load(bytes: &[u8]) -> Result<Loaded<'_>, String> {
    let header = bytes
        .get(..HEADER_BYTES)
        .ok_or("checkpoint shorter than its header")?;
    if header.get(..MAGIC.len()) != Some(&MAGIC[..]) {
        return Err("bad checkpoint magic".into());
    }
    if u32_at(header, HEADER_CRC_OFFSET)
        != crc32fast::hash(header.get(..HEADER_CRC_OFFSET).unwrap_or_default())
    {
        return Err("checkpoint header crc mismatch".into());
    }
    let version = u16_at(header, VERSION_OFFSET);
    if (version != FORMAT_VERSION && version != FORMAT_VERSION_RKYV)
        || u16_at(header, FLAGS_OFFSET) != 0
    {
        return Err("unsupported checkpoint format version".into());
    }
    let reserved_clear = header
        .get(FLAGS_OFFSET + 2..COVERED_OFFSET)
        .is_some_and(|r| r.iter().all(|b| *b == 0))
        && header
            .get(PAYLOAD_CRC_OFFSET + 4..HEADER_CRC_OFFSET)
            .is_some_and(|r| r.iter().all(|b| *b == 0));
    if !reserved_clear {
        return Err("nonzero reserved bytes in checkpoint header".into());
    }
    let payload = bytes.get(HEADER_BYTES..).unwrap_or_default();
    if payload.len() as u64 != u64_at(header, PAYLOAD_LEN_OFFSET) {
        return Err("checkpoint length does not match its header".into());
    }
    if crc32fast::hash(payload) != u32_at(header, PAYLOAD_CRC_OFFSET) {
        return Err("checkpoint payload crc mismatch".into());
    }
    let covered_position = u64_at(header, COVERED_OFFSET);
    if version == FORMAT_VERSION {
        return load_payload(payload, covered_position).map_err(String::from);
    }
    // Version 2: rkyv reads in place only from aligned memory; the file was read into an
    // unaligned buffer.
    let mut aligned = AlignedVec::<16>::with_capacity(payload.len());
    aligned.extend_from_slice(payload);
    let archived =
        rkyv::access::<ArchivedCheckpoint, rancor::Error>(&aligned).map_err(|e| e.to_string())?;
    let checkpoint: Checkpoint =
        rkyv::deserialize::<Checkpoint, rancor::Error>(archived).map_err(|e| e.to_string())?;
    if checkpoint.covered_position != covered_position {
        return Err("checkpoint header and payload disagree".into());
    }
    check_content(&checkpoint)?;
    Ok(Loaded {
        covered_position,
        tasks: Tasks::Version2(checkpoint.tasks.into_iter()),
        rejected: checkpoint.rejected,
        replica: checkpoint.replica,
    })
}

/// A cursor over a version 3 payload; every read is bounds-checked.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

const TRUNCATED: &str = "checkpoint payload ends inside a field";

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len().saturating_sub(self.at)
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], &'static str> {
        let end = self.at.checked_add(len).ok_or(TRUNCATED)?;
        let slice = self.bytes.get(self.at..end).ok_or(TRUNCATED)?;
        self.at = end;
        Ok(slice)
    }

    fn byte(&mut self) -> Result<u8, &'static str> {
        let byte = *self.bytes.get(self.at).ok_or(TRUNCATED)?;
        self.at += 1;
        Ok(byte)
    }

    /// A minimal unsigned LEB128 varint of at most 64 bits.
    fn varint(&mut self) -> Result<u64, &'static str> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.byte()?;
            let bits = u64::from(byte & 0x7f);
            if shift == 63 && byte > 1 {
                return Err("checkpoint varint over 64 bits");
            }
            value |= bits << shift;
            if byte & 0x80 == 0 {
                if byte == 0 && shift > 0 {
                    return Err("checkpoint varint not minimal");
                }
                return Ok(value);
            }
        }
        Err("checkpoint varint over 64 bits")
    }

    /// A count of items that take at least `min_bytes` each, bounded by the bytes left (so that
    /// no damaged count allocates more than the file's size).
    fn count(&mut self, min_bytes: usize) -> Result<usize, &'static str> {
        let count = self.varint()?;
        if count > (self.remaining() / min_bytes.max(1)) as u64 {
            return Err("checkpoint count larger than its payload");
        }
        Ok(count as usize)
    }

    fn text(&mut self) -> Result<&'a str, &'static str> {
        let len = self.count(1)?;
        std::str::from_utf8(self.take(len)?).map_err(|_| "checkpoint text is not UTF-8")
    }

    fn id(&mut self) -> Result<CompactId, &'static str> {
        match self.byte()? {
            ID_UUID => {
                let mut bytes = [0u8; 16];
                bytes.copy_from_slice(self.take(16)?);
                Ok(CompactId::Uuid(bytes))
            }
            ID_TEXT => match CompactId::new(self.text()?) {
                // The engine writes a canonical UUID as its bytes, never as text.
                CompactId::Uuid(_) => Err("checkpoint holds a UUID as text"),
                text => Ok(text),
            },
            _ => Err("checkpoint id of an unknown kind"),
        }
    }
}

/// Smallest encoded task: state, two UUID-less one-byte ids, the time, the version, one batch
/// of two one-byte deltas, and the artifact count.
const TASK_BYTES_MIN: usize = 1 + 2 + 2 + 8 + 1 + 1 + 2 + 1;

/// Reads the start of a version 3 payload (engine/FORMAT.md §9): counts, replica part and
/// rejected positions; the tasks are read as [`Tasks`] is iterated.
fn load_payload(payload: &[u8], covered_position: u64) -> Result<Loaded<'_>, &'static str> {
    let mut reader = Reader {
        bytes: payload,
        at: 0,
    };
    let task_count = reader.varint()?;
    let rejected_count = reader.count(1)?;
    if task_count > (payload.len() / TASK_BYTES_MIN) as u64 || task_count > TASKS_MAX as u64 {
        return Err("checkpoint count larger than its payload");
    }
    let replica = match reader.byte()? {
        0 => None,
        1 => {
            let applied_term = reader.varint()?;
            let len = reader.count(1)?;
            Some(ReplicaCheckpoint {
                applied_term,
                state: reader.take(len)?.to_vec(),
            })
        }
        _ => return Err("checkpoint replica flag is neither 0 nor 1"),
    };
    let mut rejected = Vec::with_capacity(rejected_count);
    let mut previous = 0u64;
    for _ in 0..rejected_count {
        let delta = reader.varint()?;
        previous = previous
            .checked_add(delta)
            .filter(|p| delta > 0 && *p <= covered_position)
            .ok_or("checkpoint lists rejected positions out of order or past its position")?;
        rejected.push(previous);
    }
    Ok(Loaded {
        covered_position,
        tasks: Tasks::Version3 {
            reader,
            left: task_count as usize,
            covered_position,
            ended: false,
        },
        rejected,
        replica,
    })
}

/// The tasks of a checkpoint, read one at a time.
#[derive(Debug)]
pub(crate) enum Tasks<'a> {
    /// A version 3 payload, read in place.
    Version3 {
        /// At the next task.
        reader: Reader<'a>,
        /// Tasks not read yet.
        left: usize,
        /// The checkpoint's position (no batch may be past it).
        covered_position: u64,
        /// Whether the end (no trailing bytes) was checked.
        ended: bool,
    },
    /// A version 2 payload, decoded (and checked) before.
    Version2(std::vec::IntoIter<CheckpointTask>),
}

impl Tasks<'_> {
    /// Number of tasks the file says it holds (not yet read ones included).
    pub(crate) fn stated_len(&self) -> usize {
        match self {
            Tasks::Version3 { left, .. } => *left,
            Tasks::Version2(tasks) => tasks.len(),
        }
    }
}

impl Iterator for Tasks<'_> {
    type Item = Result<(CompactId, TaskMeta), String>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Tasks::Version2(tasks) => tasks.next().map(|task| Ok(task.into_meta())),
            Tasks::Version3 {
                reader,
                left,
                covered_position,
                ended,
            } => {
                if *left == 0 {
                    if *ended {
                        return None;
                    }
                    *ended = true;
                    return (reader.remaining() != 0).then(|| {
                        Err("checkpoint payload has bytes after its last task".to_string())
                    });
                }
                *left -= 1;
                let task = read_task(reader, *covered_position).map_err(String::from);
                if task.is_err() {
                    // Nothing more is read after an error.
                    *left = 0;
                    *ended = true;
                }
                Some(task)
            }
        }
    }
}

/// Reads one task of a version 3 payload.
fn read_task(
    reader: &mut Reader<'_>,
    covered_position: u64,
) -> Result<(CompactId, TaskMeta), &'static str> {
    let state = state_of_code(reader.byte()?).ok_or("checkpoint task state unknown")?;
    let id = reader.id()?;
    let context_id = reader.id()?;
    let mut time = [0u8; 8];
    time.copy_from_slice(reader.take(8)?);
    let status_timestamp = Timestamp(i64::from_le_bytes(time));
    let version = reader.varint()?;
    if version > VERSION_MAX {
        return Err("checkpoint names a task version over the maximum");
    }
    let batch_count = reader.count(2)?;
    let mut previous = (0u64, 0u64);
    let mut next_batch = |reader: &mut Reader<'_>| -> Result<(u64, u64), &'static str> {
        let (position_delta, version_delta) = (reader.varint()?, reader.varint()?);
        match (
            previous.0.checked_add(position_delta),
            previous.1.checked_add(version_delta),
        ) {
            (Some(position), Some(batch_version))
                if position_delta > 0 && version_delta > 0 && position <= covered_position =>
            {
                previous = (position, batch_version);
                Ok(previous)
            }
            _ => Err("checkpoint lists a task's batches out of order or past its position"),
        }
    };
    let batches = if batch_count == 1 {
        Batches::One([next_batch(reader)?])
    } else {
        let mut batches = Vec::with_capacity(batch_count);
        for _ in 0..batch_count {
            batches.push(next_batch(reader)?);
        }
        Batches::Many(batches)
    };
    let last_version = batches.as_slice().last().map_or(0, |batch| batch.1);
    if last_version != version || version == 0 {
        return Err("checkpoint names a task version its batches do not end at");
    }
    let artifact_count = reader.count(1)?;
    let artifact_ids = if artifact_count == 0 {
        None
    } else {
        let mut ids = Vec::with_capacity(artifact_count);
        for _ in 0..artifact_count {
            ids.push(reader.text()?.to_owned());
        }
        Some(Box::new(ids))
    };
    Ok((
        id,
        TaskMeta::new(
            version,
            state,
            status_timestamp,
            context_id,
            batches,
            artifact_ids,
        ),
    ))
}

/// Refuses what the engine never writes into a (version 2) checkpoint, so that a damaged file
/// (or a snapshot from a faulty peer) is ignored instead of restored into a table that answers
/// wrongly: a task id listed twice (listings would name it twice), a version over
/// [`VERSION_MAX`] (the store computes `version + 1`), batches that are not ascending in position
/// and version within `1..=covered_position` or do not end at the task's version (a subscription
/// finds the batch holding a version by binary search), rejected positions that are not
/// ascending within the covered range. Version 3 files get the same checks as they are read
/// ([`load`]; repeated ids in [`crate::state::TaskTable::restore`]). Whether the records at
/// those positions hold what the checkpoint says is checked where they are read
/// ([`crate::state::check_listed_batch`]).
fn check_content(checkpoint: &Checkpoint) -> Result<(), &'static str> {
    let mut ids = std::collections::HashSet::with_capacity_and_hasher(
        checkpoint.tasks.len(),
        foldhash::fast::RandomState::default(),
    );
    for task in &checkpoint.tasks {
        if task.version > VERSION_MAX {
            return Err("checkpoint names a task version over the maximum");
        }
        let mut previous = (0, 0);
        for &(position, version) in &task.batches {
            if position <= previous.0
                || version <= previous.1
                || position > checkpoint.covered_position
            {
                return Err("checkpoint lists a task's batches out of order or past its position");
            }
            previous = (position, version);
        }
        if previous.1 != task.version || task.version == 0 {
            return Err("checkpoint names a task version its batches do not end at");
        }
        if task.state == TaskState::Unspecified {
            return Err("checkpoint task state unknown");
        }
        if !ids.insert(task.id.as_str()) {
            return Err("checkpoint names a task twice");
        }
    }
    let mut previous = 0;
    for &position in &checkpoint.rejected {
        if position <= previous || position > checkpoint.covered_position {
            return Err("checkpoint lists rejected positions out of order or past its position");
        }
        previous = position;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Checkpoint {
        Checkpoint {
            covered_position: 42,
            tasks: vec![CheckpointTask {
                id: "t".into(),
                version: 3,
                state: TaskState::Working,
                context_id: "c".into(),
                status_timestamp: Timestamp(7),
                batches: vec![(1, 1), (40, 3)],
                artifact_ids: vec!["a".into()],
            }],
            rejected: vec![17],
            replica: Some(ReplicaCheckpoint {
                applied_term: 4,
                state: b"members".to_vec(),
            }),
        }
    }

    /// Found by the `checkpoint_file` fuzz target (edit mode): checkpoints with valid CRCs that
    /// the engine could not have written were restored (a task listed twice, a version past the
    /// maximum, batches out of order).
    #[test]
    fn content_the_engine_never_writes_is_refused() {
        type Edit = fn(&mut Checkpoint);
        let edits: [(&str, Edit); 10] = [
            ("unspecified state", |c| {
                c.tasks[0].state = TaskState::Unspecified
            }),
            ("task twice", |c| c.tasks.push(c.tasks[0].clone())),
            ("version over the maximum", |c| {
                c.tasks[0].version = VERSION_MAX + 1;
                c.tasks[0].batches[1].1 = VERSION_MAX + 1;
            }),
            ("version past the batches", |c| c.tasks[0].version = 4),
            ("no batch", |c| {
                c.tasks[0].version = 0;
                c.tasks[0].batches.clear();
            }),
            ("positions out of order", |c| c.tasks[0].batches[1].0 = 1),
            ("versions out of order", |c| c.tasks[0].batches[0].1 = 3),
            ("batch past the covered position", |c| {
                c.tasks[0].batches[1].0 = 43
            }),
            ("rejected out of order", |c| c.rejected = vec![17, 17]),
            ("rejected past the covered position", |c| {
                c.rejected = vec![43]
            }),
        ];
        for (what, edit) in edits {
            let mut checkpoint = sample();
            edit(&mut checkpoint);
            assert!(decode(&encode(&checkpoint).unwrap()).is_err(), "{what}");
        }
        let mut at_the_maximum = sample();
        at_the_maximum.tasks[0].version = VERSION_MAX;
        at_the_maximum.tasks[0].batches[1].1 = VERSION_MAX;
        assert!(decode(&encode(&at_the_maximum).unwrap()).is_ok());
    }

    /// engine/FORMAT.md §9's example, byte for byte.
    #[test]
    fn golden_bytes_of_format_version_3() {
        let bytes = encode(&sample()).unwrap();
        let payload: &[u8] = &[
            0x01, 0x01, 0x01, 0x04, 0x07, b'm', b'e', b'm', b'b', b'e', b'r', b's', 0x11, 0x02,
            0x01, 0x01, b't', 0x01, 0x01, b'c', 0x07, 0, 0, 0, 0, 0, 0, 0, 0x03, 0x02, 0x01, 0x01,
            0x27, 0x02, 0x01, 0x01, b'a',
        ];
        assert_eq!(&bytes[HEADER_BYTES..], payload);
        assert_eq!(&bytes[..8], b"\x89TLT\r\n\x1a\n");
        assert_eq!(&bytes[8..16], &[3, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&bytes[16..24], &42u64.to_le_bytes());
        assert_eq!(&bytes[24..32], &(payload.len() as u64).to_le_bytes());
        assert_eq!(&bytes[32..36], &crc32fast::hash(payload).to_le_bytes());
        assert!(bytes[36..60].iter().all(|b| *b == 0));
        assert_eq!(&bytes[60..64], &crc32fast::hash(&bytes[..60]).to_le_bytes());
    }

    #[test]
    fn version_2_files_are_still_read() {
        let bytes = encode_version_2(&sample()).unwrap();
        assert_eq!(u16_at(&bytes, VERSION_OFFSET), 2);
        assert_eq!(decode(&bytes).unwrap(), sample());
        let mut twice = sample();
        twice.tasks.push(twice.tasks[0].clone());
        assert!(decode(&encode_version_2(&twice).unwrap()).is_err());
    }

    /// Varints: every value round-trips in its shortest form; longer forms, more than 64 bits
    /// and truncation are refused.
    #[test]
    fn varints_are_minimal_and_bounded() {
        for value in [
            0,
            1,
            127,
            128,
            300,
            u64::from(u32::MAX),
            u64::MAX - 1,
            u64::MAX,
        ] {
            let mut out = Vec::new();
            put_varint(&mut out, value);
            let mut reader = Reader { bytes: &out, at: 0 };
            assert_eq!(reader.varint(), Ok(value));
            assert_eq!(reader.remaining(), 0);
            let mut short = Reader {
                bytes: &out[..out.len() - 1],
                at: 0,
            };
            assert!(short.varint().is_err());
        }
        for bad in [
            &[0x80, 0x00][..],
            &[0xff, 0x80, 0x00],
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02],
            &[
                0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x81, 0x00,
            ],
        ] {
            assert!(Reader { bytes: bad, at: 0 }.varint().is_err(), "{bad:?}");
        }
    }

    /// A count larger than the bytes left is refused before anything is allocated for it.
    #[test]
    fn huge_counts_are_refused() {
        let mut bytes = encode(&sample()).unwrap();
        bytes.truncate(HEADER_BYTES);
        bytes.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f, 0x00, 0x00]);
        let payload_len = (bytes.len() - HEADER_BYTES) as u64;
        put(&mut bytes, PAYLOAD_LEN_OFFSET, &payload_len.to_le_bytes());
        let crc = crc32fast::hash(&bytes[HEADER_BYTES..]);
        put(&mut bytes, PAYLOAD_CRC_OFFSET, &crc.to_le_bytes());
        let crc = crc32fast::hash(&bytes[..HEADER_CRC_OFFSET]);
        put(&mut bytes, HEADER_CRC_OFFSET, &crc.to_le_bytes());
        assert_eq!(
            decode(&bytes),
            Err("checkpoint count larger than its payload".to_string())
        );
    }

    #[test]
    fn round_trip_and_every_damage_is_refused() {
        let bytes = encode(&sample()).unwrap();
        assert_eq!(decode(&bytes).unwrap(), sample());
        for i in (0..bytes.len()).step_by(3) {
            let mut damaged = bytes.clone();
            damaged[i] ^= 0x08;
            assert!(decode(&damaged).is_err(), "byte {i}");
        }
        assert!(decode(&bytes[..bytes.len() - 1]).is_err());
        assert!(decode(&[]).is_err());
    }
}
