//! Compaction: sealed segments rewritten without the records of deleted tasks (DESIGN.md §3,
//! retention), consecutive small ones merged, whole files unlinked.
//!
//! The log stays the log: a compacted segment keeps every surviving record byte for byte (its CRC,
//! position and term unchanged) and stands for each run of removed positions with one gap frame,
//! so positions stay dense across segments and a record is found where it always was
//! (engine/FORMAT.md §3.1, §4.1).
//!
//! # Crash safety
//! An output is written to a temporary file and synced, with its index, before anything changes.
//! Then, under [`Inner::sealed_files`]: the old index of the output's name is removed (and the
//! directory synced), the output renamed over the first input (the commit point), its index
//! renamed into place, the directory synced, the readers' view swapped, and the other inputs
//! unlinked. A crash before the commit leaves the old files (temporaries are deleted at open); a
//! crash after it leaves inputs that the compacted segment covers, which recovery removes, and
//! maybe no index, which recovery rebuilds. Readers that hold an input keep reading its mapping.
//!
//! # What callers must guarantee
//! `live` says which records to keep. Compaction never decides liveness: the task store does,
//! below a position its checkpoint covers, so that a reopen never needs a removed record. Outputs
//! are committed front to back and each drops every dead record it covers, so the records removed
//! of any task are always a prefix of that task's records: a rebuild from the log sees a deleted
//! task's remains as records for an unknown task, which it skips as rejected.

use std::fs::File;
use std::ops::Range;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::frame::{self, Decoded};
use crate::index::{self, IndexEntry, IndexSummary, MappedIndex};
use crate::le;
use crate::log::{Inner, Log, Sealed, index_name, lock, read, write};
use crate::segment;
use crate::storage;

/// What [`Log::compact`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactReport {
    /// Sealed segments read as inputs of a rewrite.
    pub segments_read: usize,
    /// Compacted segments written.
    pub segments_written: usize,
    /// Records removed.
    pub records_removed: u64,
    /// Bytes of the segments rewritten.
    pub bytes_before: u64,
    /// Bytes of the segments written in their place.
    pub bytes_after: u64,
}

/// Inserted before [`storage::TEMP_SUFFIX`] in the names of an output's temporary files
/// (`NAME.seg.compacting.tmp`, `NAME.idx.compacting.tmp`); recovery deletes them like any `.tmp`.
const COMPACTING_INFIX: &str = ".compacting";

/// Buffered bytes of an output before they are written to its file.
const WRITE_CHUNK_BYTES: usize = 1024 * 1024;

/// One sealed segment as the planner sees it.
struct Input {
    segment: Arc<Sealed>,
    /// Bytes of the frames that stay.
    live_bytes: u64,
    /// Runs of removed positions (records that go, gap frames already there): each becomes at
    /// most one gap frame of the output.
    gap_runs: u64,
    /// Records that go.
    dead: u64,
}

impl Input {
    fn worth_merging(&self, segment_bytes_max: u64) -> bool {
        self.dead > 0
            || (self.segment.compacted.is_some()
                && (self.segment.bytes().len() as u64) < segment_bytes_max / 4)
    }
}

impl Log {
    /// Rewrites the sealed segments that end before `horizon`, keeping only the records whose
    /// position `live` accepts; consecutive segments are merged while the result stays within
    /// `Options::segment_bytes_max`. Every record `live` refuses in those segments is removed;
    /// segments with nothing to remove are left alone unless they are small compacted ones that
    /// can be merged. Appends, reads and syncs go on meanwhile; a concurrent truncate, purge or
    /// reset that changes a segment being rewritten stops the pass (what was committed stays).
    ///
    /// The caller decides liveness and must not need a removed record again (see the module
    /// documentation of `compact.rs`): [`crate::TaskStore::compact`] is the safe entry point.
    ///
    /// # Errors
    /// [`Error::Corrupt`] if an input fails its CRCs (nothing of that output is committed), I/O
    /// errors, [`Error::Closed`] or [`Error::Poisoned`].
    pub fn compact(&self, horizon: u64, live: &dyn Fn(u64) -> bool) -> Result<CompactReport> {
        let inner = self.inner();
        let _pass = lock(&inner.compacting);
        inner.ensure_open()?;
        let sealed: Vec<Arc<Sealed>> = read(&inner.view)
            .sealed
            .iter()
            .take_while(|s| s.last_position < horizon)
            .cloned()
            .collect();
        let inputs: Vec<Input> = sealed
            .into_iter()
            .map(|segment| plan_input(segment, live))
            .collect::<Result<_>>()?;
        let mut report = CompactReport::default();
        for range in groups(&inputs, inner.options.segment_bytes_max) {
            let Some(group) = inputs.get(range) else {
                break;
            };
            inner.ensure_open()?;
            let Some(written) = write_output(inner, group, live)? else {
                break;
            };
            report.segments_read += group.len();
            report.segments_written += 1;
            report.records_removed += written.removed;
            report.bytes_before += group
                .iter()
                .map(|i| i.segment.bytes().len() as u64)
                .sum::<u64>();
            report.bytes_after += written.bytes;
        }
        Ok(report)
    }

    /// What [`Log::compact`] with this `horizon` could reach: the records held by the sealed
    /// segments that end before `horizon` (a compacted segment counts the records it still
    /// holds), and the last position they cover (0 if none). Cheap: no segment is read.
    pub fn compactable(&self, horizon: u64) -> (u64, u64) {
        let view = read(&self.inner().view);
        let reachable = view.sealed.iter().take_while(|s| s.last_position < horizon);
        let records = reachable
            .clone()
            .map(|s| {
                s.compacted
                    .map_or(s.last_position + 1 - s.first_position, |c| c.records)
            })
            .sum();
        let end = reachable.last().map_or(0, |s| s.last_position);
        (records, end)
    }
}

/// Walks a segment's frame headers (no CRC: the rewrite checks every frame it copies) to count
/// what would stay.
fn plan_input(segment: Arc<Sealed>, live: &dyn Fn(u64) -> bool) -> Result<Input> {
    let bytes = segment.bytes();
    let mut offset = segment::HEADER_BYTES;
    let mut live_bytes = 0u64;
    let mut gap_runs = 0u64;
    let mut in_gap = false;
    let mut dead = 0u64;
    while offset < bytes.len() {
        let Some(header) = bytes.get(offset..offset + frame::HEADER_BYTES) else {
            return Err(Error::corrupt(
                &segment.path,
                offset as u64,
                "sealed segment ends inside a frame header",
            ));
        };
        let len = frame::frame_len(le::u32_at(header, frame::LEN_OFFSET) as usize);
        let position = le::u64_at(header, frame::POSITION_OFFSET);
        let gap = header.get(frame::FLAGS_OFFSET).copied() == Some(frame::FLAG_GAP);
        let kept = !gap && live(position);
        if kept {
            live_bytes += len as u64;
        } else if !gap {
            dead += 1;
        }
        if !kept && !in_gap {
            gap_runs += 1;
        }
        in_gap = !kept;
        offset += len;
    }
    Ok(Input {
        segment,
        live_bytes,
        gap_runs,
        dead,
    })
}

/// Splits the inputs into outputs (index ranges): runs of consecutive segments worth rewriting,
/// each run cut so that an output stays within `segment_bytes_max` and its positions fit the
/// index's `u32` offsets. A lone segment with nothing to remove is no output; one with records to
/// remove is rewritten whatever its output's size, which can exceed `segment_bytes_max` by 8 bytes
/// per removed empty record (its gap frame is longer than its frame, FORMAT.md §3.1).
fn groups(inputs: &[Input], segment_bytes_max: u64) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let keep = |range: Range<usize>, out: &mut Vec<Range<usize>>| {
        if let Some(group) = inputs.get(range.clone())
            && (group.len() > 1 || group.iter().any(|i| i.dead > 0))
        {
            out.push(range);
        }
    };
    let header_bytes = segment::HEADER_BYTES as u64;
    let mut start = 0usize;
    let mut bytes = header_bytes;
    for (i, input) in inputs.iter().enumerate() {
        if !input.worth_merging(segment_bytes_max) {
            keep(start..i, &mut out);
            start = i + 1;
            bytes = header_bytes;
            continue;
        }
        // Its survivors and at most one gap frame per run of removed positions.
        let adds = input.live_bytes + input.gap_runs * frame::GAP_FRAME_BYTES as u64;
        let span_fits = inputs.get(start).is_none_or(|first| {
            input.segment.last_position - first.segment.first_position < u64::from(u32::MAX)
        });
        if i > start && (bytes + adds > segment_bytes_max || !span_fits) {
            keep(start..i, &mut out);
            start = i;
            bytes = header_bytes;
        }
        bytes += adds;
    }
    keep(start..inputs.len(), &mut out);
    out
}

/// A written and committed output.
struct Written {
    bytes: u64,
    removed: u64,
}

/// An output file being written.
struct Output<'a> {
    file: File,
    path: std::path::PathBuf,
    faults: &'a storage::Faults,
    buffer: Vec<u8>,
    /// Bytes already in the file.
    flushed: u64,
    entries: Vec<IndexEntry>,
    last_index_offset: u64,
    interval: u32,
    first: u64,
    /// A run of removed positions not yet written: (first position, count).
    gap: Option<(u64, u64)>,
    records: u64,
}

impl Output<'_> {
    fn offset(&self) -> u64 {
        self.flushed + self.buffer.len() as u64
    }

    fn index_frame(&mut self, position: u64) {
        let offset = self.offset();
        if index::due(offset, self.last_index_offset, self.interval) {
            self.entries.push(IndexEntry {
                relative_position: (position - self.first) as u32,
                offset: offset as u32,
            });
            self.last_index_offset = offset;
        }
    }

    fn skip(&mut self, position: u64, count: u64) {
        self.gap = Some(match self.gap {
            Some((start, run)) => (start, run + count),
            None => (position, count),
        });
    }

    fn close_gap(&mut self) {
        if let Some((start, count)) = self.gap.take() {
            self.index_frame(start);
            frame::encode_gap(&mut self.buffer, start, count);
        }
    }

    fn copy(&mut self, position: u64, bytes: &[u8]) -> Result<()> {
        self.close_gap();
        self.index_frame(position);
        self.buffer.extend_from_slice(bytes);
        self.records += 1;
        if self.buffer.len() >= WRITE_CHUNK_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        storage::write_at(
            &self.file,
            &self.path,
            &self.buffer,
            self.flushed,
            self.faults,
        )?;
        self.flushed += self.buffer.len() as u64;
        self.buffer.clear();
        Ok(())
    }
}

/// Writes one output from `group`, commits it, and swaps it into the readers' view. `None`: the
/// inputs changed meanwhile (a truncate, purge or reset), nothing was committed.
fn write_output(
    inner: &Inner,
    group: &[Input],
    live: &dyn Fn(u64) -> bool,
) -> Result<Option<Written>> {
    let (Some(first_input), Some(last_input)) = (group.first(), group.last()) else {
        return Ok(None);
    };
    let first = first_input.segment.first_position;
    let last = last_input.segment.last_position;
    let name = segment::file_name(first);
    // Temporaries of their own: a truncation or close running meanwhile writes `name` and its
    // index through `NAME.tmp` (`Dir::write_atomically`), and must not empty or take over ours.
    let temp_name = format!("{name}{COMPACTING_INFIX}");
    let (file, temp_path) = inner.dir.create_temp(&temp_name)?;
    let mut out = Output {
        file,
        path: temp_path,
        faults: inner.dir.faults(),
        buffer: Vec::with_capacity(WRITE_CHUNK_BYTES + frame::GAP_FRAME_BYTES),
        flushed: 0,
        entries: Vec::new(),
        last_index_offset: 0,
        interval: inner.options.index_interval_bytes,
        first,
        gap: None,
        records: 0,
    };
    // The header's record count is known at the end: leave room, write it last.
    out.buffer.extend_from_slice(&[0u8; segment::HEADER_BYTES]);
    let mut removed = 0u64;
    for input in group {
        let segment = &input.segment;
        let decode = if segment.compacted.is_some() {
            frame::decode_compacted
        } else {
            frame::decode
        };
        let bytes = segment.bytes();
        let mut offset = segment::HEADER_BYTES;
        let mut expected = segment.first_position;
        while offset < bytes.len() {
            let rest = bytes.get(offset..).unwrap_or_default();
            let frame = match decode(rest) {
                Decoded::Frame(frame) if frame.position == expected => frame,
                Decoded::Frame(_) => {
                    return Err(Error::corrupt(
                        &segment.path,
                        offset as u64,
                        "position out of sequence",
                    ));
                }
                Decoded::Incomplete { .. } => {
                    return Err(Error::corrupt(
                        &segment.path,
                        offset as u64,
                        "sealed segment ends inside a frame",
                    ));
                }
                Decoded::Corrupt(reason) => {
                    return Err(Error::corrupt(&segment.path, offset as u64, reason));
                }
            };
            if frame.is_gap() {
                out.skip(frame.position, frame.gap);
            } else if live(frame.position) {
                out.copy(frame.position, rest.get(..frame.len).unwrap_or_default())?;
            } else {
                out.skip(frame.position, 1);
                removed += 1;
            }
            expected = expected.saturating_add(frame.covers());
            offset += frame.len;
        }
        if expected != segment.last_position + 1 {
            return Err(Error::corrupt(
                &segment.path,
                offset as u64,
                "sealed segment ends before its last position",
            ));
        }
    }
    out.close_gap();
    out.flush()?;
    let header = segment::encode_compacted_header(first, last, out.records);
    storage::write_at(&out.file, &out.path, &header, 0, out.faults)?;
    storage::sync_data(&out.file, &out.path, out.faults)?;
    let summary = IndexSummary {
        first_position: first,
        last_position: last,
        segment_bytes: out.flushed,
        entry_count: out.entries.len() as u32,
    };
    let index_file_name = index_name(first);
    let index_temp_name = format!("{index_file_name}{COMPACTING_INFIX}");
    let (index_file, index_temp) = inner.dir.create_temp(&index_temp_name)?;
    storage::write_at(
        &index_file,
        &index_temp,
        &index::encode(&summary, &out.entries),
        0,
        out.faults,
    )?;
    storage::sync_data(&index_file, &index_temp, out.faults)?;

    // Mapped before the commit: the renames keep the inodes.
    let path = inner.dir.join(&name);
    let index_path = inner.dir.join(&index_file_name);
    let index = MappedIndex::load(&index_file, first).map_err(|e| match e {
        Ok(reason) => Error::corrupt(&index_path, 0, reason),
        Err(source) => Error::io("mmap index", &index_path, source),
    })?;
    let data = index::map_immutable(&out.file).map_err(|e| Error::io("mmap segment", &path, e))?;
    let compacted = Arc::new(Sealed {
        path,
        first_position: first,
        last_position: last,
        data,
        index,
        compacted: Some(segment::Compacted {
            last_position: last,
            records: out.records,
        }),
    });

    let _files = lock(&inner.sealed_files);
    let Some(at) = inputs_in_view(inner, group) else {
        inner
            .dir
            .remove(&format!("{temp_name}{}", storage::TEMP_SUFFIX))?;
        inner
            .dir
            .remove(&format!("{index_temp_name}{}", storage::TEMP_SUFFIX))?;
        return Ok(None);
    };
    // The old index must not outlive the bytes it describes (recovery would pair it with the
    // new segment), so it goes, durably, before the commit. Readers keep its mapping.
    inner.dir.remove(&index_file_name)?;
    inner.dir.sync()?;
    inner.dir.rename_temp_as(&temp_name, &name)?;
    // Committed: from here on the files and the view must agree, or the log stops.
    {
        let mut view = write(&inner.view);
        view.sealed.drain(at..at + group.len());
        view.sealed.insert(at, compacted);
    }
    let finish = || -> Result<()> {
        inner
            .dir
            .rename_temp_as(&index_temp_name, &index_file_name)?;
        inner.dir.sync()?;
        for input in group.iter().skip(1) {
            let first_position = input.segment.first_position;
            inner.dir.remove(&index_name(first_position))?;
            inner.dir.remove(&segment::file_name(first_position))?;
        }
        inner.dir.sync()
    };
    if let Err(error) = finish() {
        inner.poison(&error);
        return Err(error);
    }
    Ok(Some(Written {
        bytes: out.flushed,
        removed,
    }))
}

/// Where the group's segments are, in order, in the readers' view; `None` if they are not all
/// there any more.
fn inputs_in_view(inner: &Inner, group: &[Input]) -> Option<usize> {
    let view = read(&inner.view);
    let first = group.first()?;
    let at = view
        .sealed
        .iter()
        .position(|s| Arc::ptr_eq(s, &first.segment))?;
    let all = group
        .iter()
        .zip(view.sealed.iter().skip(at))
        .filter(|(input, held)| Arc::ptr_eq(&input.segment, held))
        .count()
        == group.len();
    all.then_some(at)
}
