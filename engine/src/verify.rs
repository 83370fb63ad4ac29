//! A full check of a log that trusts nothing: every frame of every segment is decoded and
//! CRC-checked in order, positions must be dense across segments (a compacted segment's gap
//! frames stand for the positions it no longer holds), and every offset-index entry must point at
//! a frame start carrying the position it claims. Reads only.

use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::frame::{self, Decoded};
use crate::index::{Entries, IndexEntry};
use crate::log::{Log, read};
use crate::segment;
use crate::storage;

/// One segment as `verify` found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    /// The segment file.
    pub path: PathBuf,
    /// Its first position.
    pub first_position: u64,
    /// Its last position (`first_position - 1` when empty).
    pub last_position: u64,
    /// Records it holds: every position of its range, except in a compacted segment.
    pub records: u64,
    /// Whether compaction wrote it (it may hold gap frames).
    pub compacted: bool,
    /// Bytes of frames and header checked.
    pub bytes: u64,
    /// Offset-index entries checked.
    pub index_entries: usize,
    /// Whether it is sealed (memory-mapped, with an index file) or the active one.
    pub sealed: bool,
}

/// What [`Log::verify`] checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Every segment, oldest first.
    pub segments: Vec<SegmentInfo>,
    /// Records checked.
    pub records: u64,
    /// Bytes checked.
    pub bytes: u64,
}

impl Log {
    /// The segments as they stand, oldest first, without reading them (cheap).
    pub fn segments(&self) -> Vec<SegmentInfo> {
        let view = read(&self.inner().view);
        let mut out: Vec<SegmentInfo> = view
            .sealed
            .iter()
            .map(|s| SegmentInfo {
                path: s.path.clone(),
                first_position: s.first_position,
                last_position: s.last_position,
                records: s
                    .compacted
                    .map_or(s.last_position + 1 - s.first_position, |c| c.records),
                compacted: s.compacted.is_some(),
                bytes: s.bytes().len() as u64,
                index_entries: s.index.entries().count(),
                sealed: true,
            })
            .collect();
        let state = read(&view.active.state);
        out.push(SegmentInfo {
            path: view.active.path.clone(),
            first_position: view.active.first_position,
            last_position: state.last_position,
            records: state.last_position + 1 - view.active.first_position,
            compacted: false,
            bytes: state.len,
            index_entries: state.index.len(),
            sealed: false,
        });
        out
    }

    /// Checks every byte of the log (see the module documentation). `progress` is called with
    /// (bytes checked so far, total bytes) after each segment.
    ///
    /// # Errors
    /// [`Error::Corrupt`] naming the segment and offset of the first problem; I/O errors.
    pub fn verify(&self, progress: &mut dyn FnMut(u64, u64)) -> Result<VerifyReport> {
        let (sealed, active) = {
            let view = read(&self.inner().view);
            (
                view.sealed.iter().cloned().collect::<Vec<_>>(),
                view.active.clone(),
            )
        };
        let active_state = {
            let state = read(&active.state);
            (state.len, state.last_position, state.index.clone())
        };
        let total = sealed.iter().map(|s| s.bytes().len() as u64).sum::<u64>() + active_state.0;
        let mut report = VerifyReport::default();
        let mut expected = sealed
            .first()
            .map_or(active.first_position, |s| s.first_position);
        for segment in &sealed {
            let entries = segment.index.entries();
            let index: Vec<IndexEntry> = (0..entries.count()).map(|i| entries.entry(i)).collect();
            let info = check_segment(
                &segment.path,
                segment.first_position,
                segment.bytes(),
                &index,
                &mut expected,
                true,
            )?;
            if info.last_position != segment.last_position {
                return Err(Error::corrupt(
                    &segment.path,
                    0,
                    "index and frames disagree on the last position",
                ));
            }
            report.records += info.records;
            report.bytes += info.bytes;
            report.segments.push(info);
            progress(report.bytes, total);
        }
        let mut bytes = vec![0u8; active_state.0 as usize];
        let got = storage::read_at(&active.file, &active.path, &mut bytes, 0)?;
        bytes.truncate(got);
        let info = check_segment(
            &active.path,
            active.first_position,
            &bytes,
            &active_state.2,
            &mut expected,
            false,
        )?;
        if info.last_position < active_state.1 {
            return Err(Error::corrupt(
                &active.path,
                got as u64,
                "the active segment ends before its last record",
            ));
        }
        if info.compacted {
            return Err(Error::corrupt(
                &active.path,
                0,
                "the active segment is a compacted one",
            ));
        }
        report.records += info.records;
        report.bytes += info.bytes;
        report.segments.push(info);
        progress(report.bytes, total);
        Ok(report)
    }
}

/// Walks all frames of one segment's bytes and checks its index against them.
fn check_segment(
    path: &std::path::Path,
    first_position: u64,
    bytes: &[u8],
    index: &[IndexEntry],
    expected: &mut u64,
    sealed: bool,
) -> Result<SegmentInfo> {
    let header = segment::decode_header(bytes).map_err(|reason| Error::corrupt(path, 0, reason))?;
    if header.first_position != first_position || first_position != *expected {
        return Err(Error::corrupt(
            path,
            0,
            "segment does not continue its predecessor",
        ));
    }
    let decode = if header.compacted.is_some() {
        frame::decode_compacted
    } else {
        frame::decode
    };
    let mut offset = segment::HEADER_BYTES;
    let mut starts = Vec::new();
    let mut records = 0u64;
    while offset < bytes.len() {
        match decode(bytes.get(offset..).unwrap_or_default()) {
            Decoded::Frame(f) if f.position == *expected => {
                starts.push((offset as u32, f.position));
                *expected = expected.saturating_add(f.covers());
                records += u64::from(!f.is_gap());
                offset += f.len;
            }
            Decoded::Frame(_) => {
                return Err(Error::corrupt(
                    path,
                    offset as u64,
                    "position out of sequence",
                ));
            }
            Decoded::Incomplete { .. } => {
                return Err(Error::corrupt(
                    path,
                    offset as u64,
                    "segment ends inside a frame",
                ));
            }
            Decoded::Corrupt(reason) => return Err(Error::corrupt(path, offset as u64, reason)),
        }
    }
    for entry in index {
        let found = starts
            .binary_search_by_key(&entry.offset, |(start, _)| *start)
            .ok();
        let matches = found
            .and_then(|i| starts.get(i))
            .is_some_and(|(_, position)| {
                *position == first_position + u64::from(entry.relative_position)
            });
        if !matches {
            return Err(Error::corrupt(
                path,
                u64::from(entry.offset),
                "offset-index entry does not point at its frame",
            ));
        }
    }
    if let Some(compacted) = header.compacted
        && (compacted.last_position != *expected - 1 || compacted.records != records)
    {
        return Err(Error::corrupt(
            path,
            0,
            "compacted segment's frames disagree with its header (last position or record count)",
        ));
    }
    Ok(SegmentInfo {
        path: path.to_path_buf(),
        first_position,
        last_position: *expected - 1,
        records,
        compacted: header.compacted.is_some(),
        bytes: bytes.len() as u64,
        index_entries: index.len(),
        sealed,
    })
}
