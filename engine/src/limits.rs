//! Every size and count cap of the engine, with its unit in the name, and the relations between
//! them checked at compile time.

/// Largest log position. Positions start at 1; bounding them far below `u64::MAX` means no
/// `position + 1` or `first - 1` computed from bytes on disk can overflow.
pub const POSITION_MAX: u64 = 1 << 62;

/// Largest task version. Versions count a task's events from 1; bounding them as positions are
/// bounded means no `version + 1` computed from a checkpoint or a record can overflow. A write
/// that would pass it is refused ([`crate::state::TaskTable::check`]); a checkpoint naming a
/// larger one is ignored.
pub const VERSION_MAX: u64 = 1 << 62;

/// Largest payload one record may carry.
pub const PAYLOAD_BYTES_MAX: u32 = 8 * 1024 * 1024;

/// Smallest segment size [`crate::Options::segment_bytes_max`] accepts.
pub const SEGMENT_BYTES_MIN: u64 = 64 * 1024;

/// Largest segment size [`crate::Options::segment_bytes_max`] accepts. Offsets inside a segment are
/// stored as `u32` in the offset index, so a segment plus one oversized frame must stay below 4 GiB.
pub const SEGMENT_BYTES_LIMIT: u64 = 1024 * 1024 * 1024;

/// Default segment size.
pub const SEGMENT_BYTES_DEFAULT: u64 = 64 * 1024 * 1024;

/// Default distance between two offset-index entries.
pub const INDEX_INTERVAL_BYTES_DEFAULT: u32 = 4096;

/// Bytes of encoded frames waiting for the next group commit before new appends wait
/// (backpressure), unless nothing is waiting at all.
pub const PENDING_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Records one `append` call may carry.
pub const BATCH_RECORDS_MAX: usize = 65_536;

/// Largest read window when scanning a segment file during recovery or a read of the active
/// segment; a frame never exceeds it.
pub const SCAN_WINDOW_BYTES: usize = 16 * 1024 * 1024;

const _: () = assert!(SEGMENT_BYTES_MIN < SEGMENT_BYTES_DEFAULT);
const _: () = assert!(SEGMENT_BYTES_DEFAULT <= SEGMENT_BYTES_LIMIT);
const _: () = assert!(SEGMENT_BYTES_LIMIT + 2 * (PAYLOAD_BYTES_MAX as u64) < u32::MAX as u64);
const _: () = assert!((PAYLOAD_BYTES_MAX as usize) * 2 <= SCAN_WINDOW_BYTES);
const _: () = assert!((PAYLOAD_BYTES_MAX as usize) < PENDING_BYTES_MAX);

/// Most live tasks one store holds: the task table addresses tasks by `u32` slots. A create
/// past it is refused ([`crate::state::TaskTable::check`]); it is far beyond what memory holds.
pub const TASKS_MAX: usize = u32::MAX as usize;

/// Longest task or context id.
pub const TASK_ID_BYTES_MAX: usize = 256;

/// Largest serialized event batch (one write to one task).
pub const EVENT_BATCH_BYTES_MAX: usize = 1024 * 1024;

/// Most tasks one `list` page may hold (A2A `pageSize` 1..=100).
pub const LIST_PAGE_SIZE_MAX: u32 = 100;

/// `list` page size when the caller gives none.
pub const LIST_PAGE_SIZE_DEFAULT: u32 = 50;

const _: () = assert!(EVENT_BATCH_BYTES_MAX <= PAYLOAD_BYTES_MAX as usize);
const _: () = assert!(LIST_PAGE_SIZE_DEFAULT <= LIST_PAGE_SIZE_MAX);
