//! Open-time recovery: find the segments, trust sealed ones that have a valid index, scan the tail
//! after the last checkpoint frame by frame, and truncate or refuse damage per [`RecoveryMode`].
//!
//! Definitions (engine/FORMAT.md §6):
//! - **torn tail**: in the last segment, a frame that is short, zero-filled or fails its CRC, with
//!   no valid later frame anywhere after it. A crash mid-write leaves exactly this. Truncated under
//!   [`RecoveryMode::TolerateTail`] (the default) and reported.
//! - **corruption**: damage with valid frames after it, or any damage in a sealed segment, or a
//!   bad segment header. An error naming the file and byte offset, unless
//!   [`RecoveryMode::TolerateAny`] (cut the log just before it).
//!
//! This module serves no reads; it hands `log.rs` the segments it found.

use std::collections::{BTreeSet, VecDeque};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use crate::config::{Options, RecoveryMode};
use crate::error::{Error, Result};
use crate::frame::{self, Decoded};
use crate::index::{self, Entries, IndexEntry, MappedIndex};
use crate::limits;
use crate::log::{Active, ActiveState, Io, Sealed, index_name};
use crate::segment;
use crate::storage::{self, Dir};

/// What recovery found and did when a log was opened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segment files in the log after recovery.
    pub segments: usize,
    /// First position held.
    pub first_position: u64,
    /// Last position held (`first_position - 1` when empty).
    pub last_position: u64,
    /// Bytes read frame by frame (the tail after the last checkpoint, plus segments whose index
    /// had to be rebuilt).
    pub scanned_bytes: u64,
    /// Damage that was cut off.
    pub truncations: Vec<Truncation>,
    /// Index files rebuilt from their segment because they were missing or invalid.
    pub rebuilt_indexes: Vec<PathBuf>,
    /// Files removed: leftover temporary files, orphan indexes, segments dropped after a cut.
    pub removed_files: Vec<PathBuf>,
}

/// One truncation made by recovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncation {
    /// The segment that was cut.
    pub segment: PathBuf,
    /// The new length of the segment (where the damage began).
    pub offset: u64,
    /// Bytes dropped from that segment.
    pub dropped_bytes: u64,
    /// What was wrong at `offset`.
    pub reason: &'static str,
    /// Whether this was a torn tail (no valid frame after it) rather than corruption.
    pub torn_tail: bool,
}

/// The segments as recovered, ready for `Log::open`.
pub(crate) struct Recovered {
    pub(crate) sealed: VecDeque<Arc<Sealed>>,
    pub(crate) io: Io,
    pub(crate) report: RecoveryReport,
}

pub(crate) fn recover(dir: &Dir, options: &Options) -> Result<Recovered> {
    let mut report = RecoveryReport::default();
    let names = dir.list()?;
    let mut firsts: Vec<u64> = names
        .iter()
        .filter_map(|n| segment::parse_file_name(n, segment::EXTENSION))
        .collect();
    firsts.sort_unstable();
    let segment_set: BTreeSet<u64> = firsts.iter().copied().collect();
    let mut removed_any = false;
    for name in &names {
        let orphan_index = segment::parse_file_name(name, index::EXTENSION)
            .is_some_and(|f| !segment_set.contains(&f));
        if name.ends_with(storage::TEMP_SUFFIX) || orphan_index {
            dir.remove(name)?;
            report.removed_files.push(dir.join(name));
            removed_any = true;
        }
    }
    if removed_any {
        dir.sync()?;
    }
    if firsts.is_empty() {
        dir.write_atomically(&segment::file_name(1), &segment::encode_header(1))?;
        firsts.push(1);
    }

    let mut sealed = VecDeque::new();
    let mut expected_first: Option<u64> = None;
    let mut active_at = firsts.len() - 1;
    // The last position of the latest compacted segment: segments starting at or before it are
    // what an interrupted compaction left behind (FORMAT.md §3.1).
    let mut compacted_to = 0u64;
    // Set when the last segment is a compacted one and a new, empty one is made after it.
    let mut active_first = None;
    for (i, &first) in firsts.iter().enumerate() {
        if first <= compacted_to {
            let path = dir.join(&segment::file_name(first));
            if i == active_at {
                return Err(Error::corrupt(
                    &path,
                    0,
                    "the last segment starts inside a compacted segment",
                ));
            }
            dir.remove(&index_name(first))?;
            dir.remove(&segment::file_name(first))?;
            dir.sync()?;
            tracing::info!(segment = %path.display(), "removed a segment that a compaction had already rewritten");
            report.removed_files.push(path);
            continue;
        }
        let (file, path, len, header) = open_segment(dir, first, expected_first)?;
        let is_last = i == active_at;
        if let Some(compacted) = header.compacted {
            // `truncate_after` removes the segments after its cut newest first, so a crash there
            // can leave a compacted segment last: a prefix of the log. It stays sealed and an
            // empty segment follows it, as a roll would have made (not under `Absolute`, which
            // modifies no segment file).
            let next = compacted.last_position + 1;
            if is_last
                && (options.recovery == RecoveryMode::Absolute || next > limits::POSITION_MAX)
            {
                return Err(Error::corrupt(
                    &path,
                    0,
                    "the last segment is a compacted one; the segment after it is missing",
                ));
            }
            let segment = load_compacted(
                dir,
                &file,
                &path,
                first,
                len,
                compacted,
                options,
                &mut report,
            )?;
            compacted_to = compacted.last_position;
            expected_first = Some(next);
            sealed.push_back(Arc::new(segment));
            if is_last {
                dir.write_atomically(&segment::file_name(next), &segment::encode_header(next))?;
                tracing::info!(segment = %path.display(), "the last segment is a compacted one: an empty segment now follows it");
                active_first = Some(next);
                break;
            }
            continue;
        }
        if is_last {
            break;
        }
        if let Some(segment) = load_sealed(dir, &file, &path, first, len, &mut report)? {
            expected_first = Some(segment.last_position + 1);
            sealed.push_back(Arc::new(segment));
            continue;
        }
        let scan = scan(
            &file,
            &path,
            len,
            segment::HEADER_BYTES as u64,
            first,
            first,
            Vec::new(),
            0,
            options,
            frame::decode,
        )?;
        report.scanned_bytes += len.saturating_sub(segment::HEADER_BYTES as u64);
        let problem = match &scan.damage {
            Some(damage) => Some((damage.offset, damage.reason)),
            None if scan.last_position < first => Some((
                segment::HEADER_BYTES as u64,
                "sealed segment holds no record",
            )),
            None => None,
        };
        if let Some((offset, reason)) = problem {
            if options.recovery != RecoveryMode::TolerateAny {
                return Err(Error::corrupt(&path, offset, reason));
            }
            // Salvage: this segment becomes the last one, cut where the damage starts.
            for later in firsts.iter().skip(i + 1).rev() {
                dir.remove(&index_name(*later))?;
                dir.remove(&segment::file_name(*later))?;
                report
                    .removed_files
                    .push(dir.join(&segment::file_name(*later)));
            }
            dir.remove(&index_name(first))?;
            dir.sync()?;
            storage::set_len_durably(&file, &path, offset, dir.faults())?;
            tracing::warn!(segment = %path.display(), offset, reason, "corrupt sealed segment: cut here, later segments dropped (TolerateAny)");
            report.truncations.push(Truncation {
                segment: path.clone(),
                offset,
                dropped_bytes: len - offset,
                reason,
                torn_tail: false,
            });
            active_at = i;
            break;
        }
        let bytes = index::encode(&scan.summary(first), &scan.entries);
        let index_file = dir.write_atomically(&index_name(first), &bytes)?;
        report.rebuilt_indexes.push(dir.join(&index_name(first)));
        let segment = map_sealed(dir, &file, &path, &index_file, first)?;
        expected_first = Some(segment.last_position + 1);
        sealed.push_back(Arc::new(segment));
    }

    let first = active_first
        .or_else(|| firsts.get(active_at).copied())
        .unwrap_or(1);
    let (file, path, len, _) = open_segment(dir, first, expected_first)?;
    let io = recover_active(dir, options, file, path, first, len, &mut report)?;
    report.segments = sealed.len() + 1;
    report.first_position = sealed
        .front()
        .map_or(first, |s: &Arc<Sealed>| s.first_position);
    report.last_position = io.last_position;
    Ok(Recovered { sealed, io, report })
}

/// Opens a segment and checks its header against its name and its predecessor.
fn open_segment(
    dir: &Dir,
    first: u64,
    expected_first: Option<u64>,
) -> Result<(File, PathBuf, u64, segment::Header)> {
    let name = segment::file_name(first);
    let path = dir.join(&name);
    let file = dir.open(&name)?;
    let len = storage::file_len(&file, &path)?;
    let mut header = [0u8; segment::HEADER_BYTES];
    let got = storage::read_at(&file, &path, &mut header, 0)?;
    let decoded = segment::decode_header(header.get(..got).unwrap_or_default())
        .map_err(|reason| Error::corrupt(&path, 0, reason))?;
    if decoded.first_position != first {
        return Err(Error::corrupt(
            &path,
            0,
            "segment header names another first position",
        ));
    }
    if expected_first.is_some_and(|expected| expected != first) {
        return Err(Error::corrupt(
            &path,
            0,
            "segment does not continue its predecessor",
        ));
    }
    Ok((file, path, len, decoded))
}

/// A sealed segment whose index file is valid and covers the whole file, or `None`.
fn load_sealed(
    dir: &Dir,
    file: &File,
    path: &Path,
    first: u64,
    len: u64,
    report: &mut RecoveryReport,
) -> Result<Option<Sealed>> {
    let Some(index) = load_index(dir, first, report)? else {
        return Ok(None);
    };
    let summary = index.summary();
    if summary.segment_bytes != len || summary.last_position < first {
        return Ok(None);
    }
    let data = index::map_immutable(file).map_err(|e| Error::io("mmap segment", path, e))?;
    Ok(Some(Sealed {
        path: path.to_path_buf(),
        first_position: first,
        last_position: summary.last_position,
        data,
        index,
        compacted: None,
    }))
}

/// A compacted segment, with its index loaded or rebuilt. Any damage is an error in every
/// recovery mode: a compacted segment is never the log's tail, so nothing may be cut from it.
#[allow(
    clippy::too_many_arguments,
    reason = "a private helper with the loop's state"
)]
fn load_compacted(
    dir: &Dir,
    file: &File,
    path: &Path,
    first: u64,
    len: u64,
    compacted: segment::Compacted,
    options: &Options,
    report: &mut RecoveryReport,
) -> Result<Sealed> {
    if let Some(mut segment) = load_sealed(dir, file, path, first, len, report)? {
        if segment.last_position == compacted.last_position {
            segment.compacted = Some(compacted);
            return Ok(segment);
        }
        tracing::warn!(segment = %path.display(), "index of a compacted segment disagrees with its header; rebuilding it");
    }
    dir.remove(&index_name(first))?;
    dir.sync()?;
    let scan = scan(
        file,
        path,
        len,
        segment::HEADER_BYTES as u64,
        first,
        first,
        Vec::new(),
        0,
        options,
        frame::decode_compacted,
    )?;
    report.scanned_bytes += len.saturating_sub(segment::HEADER_BYTES as u64);
    if let Some(damage) = &scan.damage {
        return Err(Error::corrupt(path, damage.offset, damage.reason));
    }
    if scan.last_position != compacted.last_position || scan.records != compacted.records {
        return Err(Error::corrupt(
            path,
            scan.end,
            "compacted segment's frames disagree with its header (last position or record count)",
        ));
    }
    let bytes = index::encode(&scan.summary(first), &scan.entries);
    let index_file = dir.write_atomically(&index_name(first), &bytes)?;
    report.rebuilt_indexes.push(dir.join(&index_name(first)));
    let mut segment = map_sealed(dir, file, path, &index_file, first)?;
    segment.compacted = Some(compacted);
    Ok(segment)
}

/// Maps a sealed segment and the index file just written for it.
fn map_sealed(
    dir: &Dir,
    file: &File,
    path: &Path,
    index_file: &File,
    first: u64,
) -> Result<Sealed> {
    let index_path = dir.join(&index_name(first));
    let index = MappedIndex::load(index_file, first).map_err(|e| match e {
        Ok(reason) => Error::corrupt(&index_path, 0, reason),
        Err(source) => Error::io("mmap index", &index_path, source),
    })?;
    let data = index::map_immutable(file).map_err(|e| Error::io("mmap segment", path, e))?;
    let last_position = index.summary().last_position;
    Ok(Sealed {
        path: path.to_path_buf(),
        first_position: first,
        last_position,
        data,
        index,
        compacted: None,
    })
}

/// Loads and validates `{first}.idx`; an invalid one is removed (it will be rebuilt).
fn load_index(dir: &Dir, first: u64, report: &mut RecoveryReport) -> Result<Option<MappedIndex>> {
    let name = index_name(first);
    let path = dir.join(&name);
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("open index", &path, e)),
    };
    match MappedIndex::load(&file, first) {
        Ok(index) => Ok(Some(index)),
        Err(Ok(reason)) => {
            tracing::warn!(index = %path.display(), reason, "invalid index file; rebuilding it from its segment");
            dir.remove(&name)?;
            dir.sync()?;
            report.removed_files.push(path);
            Ok(None)
        }
        Err(Err(source)) => Err(Error::io("mmap index", &path, source)),
    }
}

/// Recovers the last segment: resume from its checkpoint if one is valid, scan the rest, cut a
/// torn tail (or any damage under `TolerateAny`).
fn recover_active(
    dir: &Dir,
    options: &Options,
    file: File,
    path: PathBuf,
    first: u64,
    len: u64,
    report: &mut RecoveryReport,
) -> Result<Io> {
    let checkpoint = match load_index(dir, first, report)? {
        Some(index) if checkpoint_fits(&file, &path, &index, first, len)? => Some(index),
        Some(_) => {
            // It claims bytes the file no longer has, or bytes that do not end where it says: never
            // trust it, now or later when the file has grown past that length again.
            dir.remove(&index_name(first))?;
            dir.sync()?;
            report.removed_files.push(dir.join(&index_name(first)));
            None
        }
        None => None,
    };
    let (start, next_position, entries) = match &checkpoint {
        Some(index) => {
            let view = index.entries();
            let entries: Vec<IndexEntry> = (0..view.count()).map(|i| view.entry(i)).collect();
            (
                index.summary().segment_bytes,
                index.summary().last_position + 1,
                entries,
            )
        }
        None => (segment::HEADER_BYTES as u64, first, Vec::new()),
    };
    let last_index_offset = entries.last().map_or(0, |e| u64::from(e.offset));
    let scan = scan(
        &file,
        &path,
        len,
        start,
        first,
        next_position,
        entries,
        last_index_offset,
        options,
        frame::decode,
    )?;
    report.scanned_bytes += len.saturating_sub(start);
    if let Some(damage) = &scan.damage {
        let torn = !damage.valid_frame_after;
        let tolerated = match options.recovery {
            RecoveryMode::Absolute => false,
            RecoveryMode::TolerateTail => torn,
            RecoveryMode::TolerateAny => true,
        };
        if !tolerated {
            let reason = if torn {
                "torn tail (not tolerated in RecoveryMode::Absolute)"
            } else {
                damage.reason
            };
            return Err(Error::corrupt(&path, damage.offset, reason));
        }
        if checkpoint.is_some() && damage.offset < start {
            return Err(Error::corrupt(
                &path,
                damage.offset,
                "damage inside the checkpointed prefix",
            ));
        }
        storage::set_len_durably(&file, &path, damage.offset, dir.faults())?;
        tracing::warn!(segment = %path.display(), offset = damage.offset, dropped_bytes = len - damage.offset, reason = damage.reason, torn, "truncated the log during recovery");
        report.truncations.push(Truncation {
            segment: path.clone(),
            offset: damage.offset,
            dropped_bytes: len - damage.offset,
            reason: damage.reason,
            torn_tail: torn,
        });
    }
    // What recovery accepted may have been in the page cache only (written, never synced, before
    // a process crash); make it durable before the log reports it as such.
    storage::sync_data(&file, &path, dir.faults())?;
    let active = Arc::new(Active {
        path,
        file: Arc::new(file),
        first_position: first,
        state: RwLock::new(ActiveState {
            len: scan.end,
            last_position: scan.last_position,
            index: scan.entries,
        }),
    });
    Ok(Io {
        active,
        len: scan.end,
        last_position: scan.last_position,
        last_index_offset: scan.last_index_offset,
        dirty: false,
    })
}

/// Whether a checkpoint index of the last segment agrees with the segment's bytes: it covers no
/// more than the file, and the frames from its last entry on end exactly at `segment_bytes` with
/// its `last_position` (with no entry, it covers exactly the header). Found by the
/// `segment_recover` fuzz target: an index ending inside a frame was trusted, and recovery then
/// cut valid frames or left a log that could not be reopened.
fn checkpoint_fits(
    file: &File,
    path: &Path,
    index: &MappedIndex,
    first: u64,
    len: u64,
) -> Result<bool> {
    let summary = index.summary();
    if summary.segment_bytes > len {
        return Ok(false);
    }
    let entries = index.entries();
    let Some(last_entry) = entries.count().checked_sub(1).map(|i| entries.entry(i)) else {
        return Ok(summary.segment_bytes == segment::HEADER_BYTES as u64
            && summary.last_position + 1 == first);
    };
    let start = u64::from(last_entry.offset);
    let span = summary.segment_bytes.saturating_sub(start);
    // Entries are at most one interval plus one frame apart; anything longer is not ours.
    if start >= summary.segment_bytes || span > limits::SCAN_WINDOW_BYTES as u64 {
        return Ok(false);
    }
    let mut bytes = vec![0u8; span as usize];
    if storage::read_at(file, path, &mut bytes, start)? != bytes.len() {
        return Ok(false);
    }
    let mut at = 0usize;
    let mut position = first + u64::from(last_entry.relative_position);
    while at < bytes.len() {
        match frame::decode(bytes.get(at..).unwrap_or_default()) {
            Decoded::Frame(frame) if frame.position == position => {
                at += frame.len;
                position += 1;
            }
            _ => return Ok(false),
        }
    }
    Ok(at == bytes.len() && position - 1 == summary.last_position)
}

/// Result of scanning frames.
struct Scan {
    /// Offset just after the last good frame.
    end: u64,
    last_position: u64,
    /// Records seen (gap frames not counted).
    records: u64,
    entries: Vec<IndexEntry>,
    last_index_offset: u64,
    damage: Option<Damage>,
}

struct Damage {
    offset: u64,
    reason: &'static str,
    valid_frame_after: bool,
}

impl Scan {
    fn summary(&self, first: u64) -> index::IndexSummary {
        index::IndexSummary {
            first_position: first,
            last_position: self.last_position,
            segment_bytes: self.end,
            entry_count: self.entries.len() as u32,
        }
    }
}

/// Scans frames from `start` (a frame boundary holding `next_position`) to `len`, checking CRCs
/// and positions, and extends the sparse index. `decode` says which frames are valid here
/// ([`frame::decode_compacted`] lets gap frames through).
#[allow(
    clippy::too_many_arguments,
    reason = "a private helper called from two places"
)]
fn scan(
    file: &File,
    path: &Path,
    len: u64,
    start: u64,
    first: u64,
    mut next_position: u64,
    mut entries: Vec<IndexEntry>,
    mut last_index_offset: u64,
    options: &Options,
    decode: fn(&[u8]) -> Decoded<'_>,
) -> Result<Scan> {
    let mut offset = start;
    let mut records = 0u64;
    let mut buffer = Vec::new();
    let mut damage: Option<(u64, &'static str)> = None;
    'windows: while offset < len {
        let want = (len - offset).min(limits::SCAN_WINDOW_BYTES as u64) as usize;
        buffer.resize(want, 0);
        let got = storage::read_at(file, path, &mut buffer, offset)?;
        buffer.truncate(got);
        let mut at = 0usize;
        while at < buffer.len() {
            let here = offset + at as u64;
            match decode(buffer.get(at..).unwrap_or_default()) {
                Decoded::Frame(frame) if frame.position == next_position => {
                    if index::due(here, last_index_offset, options.index_interval_bytes) {
                        entries.push(IndexEntry {
                            relative_position: (next_position - first) as u32,
                            offset: here as u32,
                        });
                        last_index_offset = here;
                    }
                    next_position = next_position.saturating_add(frame.covers());
                    records += u64::from(!frame.is_gap());
                    at += frame.len;
                }
                Decoded::Frame(_) => {
                    damage = Some((here, "position out of sequence"));
                    break 'windows;
                }
                Decoded::Incomplete { needed } if here + needed as u64 <= len && at > 0 => break,
                Decoded::Incomplete { .. } => {
                    damage = Some((here, "incomplete frame at the end of the segment"));
                    break 'windows;
                }
                Decoded::Corrupt(reason) => {
                    damage = Some((here, reason));
                    break 'windows;
                }
            }
        }
        if got == 0 {
            break;
        }
        offset += at as u64;
    }
    let end = damage.map_or(offset.min(len), |(at, _)| at);
    let damage = match damage {
        Some((at, reason)) => Some(Damage {
            offset: at,
            reason,
            valid_frame_after: valid_frame_after(
                file,
                path,
                len,
                at + frame::ALIGN_BYTES as u64,
                next_position - 1,
            )?,
        }),
        None => None,
    };
    Ok(Scan {
        end,
        last_position: next_position - 1,
        records,
        entries,
        last_index_offset,
        damage,
    })
}

/// Whether any 8-aligned offset in `from..len` starts a valid frame with a position after
/// `after_position`: the difference between a torn tail and corruption.
fn valid_frame_after(
    file: &File,
    path: &Path,
    len: u64,
    from: u64,
    after_position: u64,
) -> Result<bool> {
    let mut offset = from;
    let mut buffer = Vec::new();
    while offset + (frame::HEADER_BYTES as u64) <= len {
        let want = (len - offset).min(limits::SCAN_WINDOW_BYTES as u64) as usize;
        buffer.resize(want, 0);
        let got = storage::read_at(file, path, &mut buffer, offset)?;
        buffer.truncate(got);
        let mut at = 0usize;
        while at + frame::HEADER_BYTES <= buffer.len() {
            let rest = buffer.get(at..).unwrap_or_default();
            // A frame here could hold at most one position per header-sized slot left in the file;
            // checking that (and the zero bytes) before the CRC keeps this search linear in practice.
            let remaining = len - (offset + at as u64);
            let position_max = after_position + remaining / frame::HEADER_BYTES as u64 + 1;
            if !frame::plausible(rest, after_position, position_max) {
                at += frame::ALIGN_BYTES;
                continue;
            }
            match frame::decode(rest) {
                Decoded::Frame(frame) if frame.position > after_position => return Ok(true),
                Decoded::Incomplete { needed }
                    if offset + (at + needed) as u64 <= len && at > 0 =>
                {
                    break;
                }
                _ => at += frame::ALIGN_BYTES,
            }
        }
        if got == 0 || at == 0 {
            break;
        }
        offset += at as u64;
    }
    Ok(false)
}
