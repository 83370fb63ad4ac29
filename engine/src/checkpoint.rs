//! The task-table checkpoint: the materialized state of every live task as of one log position,
//! in one file (`tasks.checkpoint`), so that opening a store replays only the records after that
//! position. Derived data: missing, damaged or not matching the log, it is ignored and the table
//! is rebuilt from the log (engine/FORMAT.md §9).
//!
//! ```text
//! { magic[8] | u16 version | u16 flags=0 | u32 reserved=0 | u64 covered_position | u64 payload_len
//!   | u32 payload_crc | [u8; 24] reserved=0 | u32 header_crc(0..60) | payload (rkyv, 8-aligned) }
//! ```
#![deny(clippy::indexing_slicing)]

use rkyv::rancor;
use rkyv::util::AlignedVec;

use crate::error::{Error, Result};
use crate::id::CompactId;
use crate::le::{put, u16_at, u32_at, u64_at};
use crate::limits::VERSION_MAX;
use crate::model::{TaskState, Timestamp};
use crate::state::{Batches, TaskMeta};

/// File name of the checkpoint inside the data directory.
pub const FILE_NAME: &str = "tasks.checkpoint";
/// Checkpoint magic (PNG style, see [`crate::segment::MAGIC`]).
pub const MAGIC: [u8; 8] = *b"\x89TLT\r\n\x1a\n";
/// Checkpoint format version (2 added `rejected` and `replica`; a version 1 file is ignored and
/// the table rebuilt from the log).
pub const FORMAT_VERSION: u16 = 2;

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

/// Encodes a checkpoint file.
///
/// # Errors
/// [`Error::InvalidArgument`] if rkyv refuses the value (it does not for these types).
pub fn encode(checkpoint: &Checkpoint) -> Result<Vec<u8>> {
    let payload = rkyv::to_bytes::<rancor::Error>(checkpoint)
        .map_err(|e| Error::InvalidArgument(format!("cannot serialize the checkpoint: {e}")))?;
    let mut out = vec![0u8; HEADER_BYTES];
    put(&mut out, 0, &MAGIC);
    put(&mut out, VERSION_OFFSET, &FORMAT_VERSION.to_le_bytes());
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

/// Decodes and fully validates a checkpoint file.
///
/// # Errors
/// A static reason for the first failed check.
pub fn decode(bytes: &[u8]) -> Result<Checkpoint, String> {
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
    if u16_at(header, VERSION_OFFSET) != FORMAT_VERSION || u16_at(header, FLAGS_OFFSET) != 0 {
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
    // rkyv reads in place only from aligned memory; the file was read into an unaligned buffer.
    let mut aligned = AlignedVec::<16>::with_capacity(payload.len());
    aligned.extend_from_slice(payload);
    let archived =
        rkyv::access::<ArchivedCheckpoint, rancor::Error>(&aligned).map_err(|e| e.to_string())?;
    let checkpoint: Checkpoint =
        rkyv::deserialize::<Checkpoint, rancor::Error>(archived).map_err(|e| e.to_string())?;
    if checkpoint.covered_position != u64_at(header, COVERED_OFFSET) {
        return Err("checkpoint header and payload disagree".into());
    }
    check_content(&checkpoint)?;
    Ok(checkpoint)
}

/// Refuses what the engine never writes into a checkpoint, so that a damaged file (or a
/// snapshot from a faulty peer) is ignored instead of restored into a table that answers
/// wrongly: a task id listed twice (listings would name it twice), a version over
/// [`VERSION_MAX`] (the store computes `version + 1`), batches that are not ascending in position
/// and version within `1..=covered_position` or do not end at the task's version (a subscription
/// finds the batch holding a version by binary search), rejected positions that are not
/// ascending within the covered range. Whether the records at those positions hold what the
/// checkpoint says is checked where they are read ([`crate::state::check_listed_batch`]).
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
        let edits: [(&str, Edit); 9] = [
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
