//! The per-segment sparse offset index: relative position → byte offset, one entry every
//! `index_interval_bytes` or so, always one for the first frame.
//!
//! The active segment's index lives in memory; it is written to `{first_position:020}.idx` when the
//! segment is sealed (and, as a checkpoint, when the log closes cleanly) and the sealed file is then
//! memory-mapped for lookups. This module holds the crate's only `unsafe`: mapping files that the
//! log promises never to modify in place (see [`map_immutable`]).
#![deny(clippy::indexing_slicing)]

use std::fs::File;
use std::io;

use memmap2::Mmap;

use crate::le::{put, u16_at, u32_at, u64_at};

/// Index file magic (PNG style, see [`crate::segment::MAGIC`]).
pub const MAGIC: [u8; 8] = *b"\x89TLX\r\n\x1a\n";
/// Index format version written by this build.
pub const FORMAT_VERSION: u16 = 1;
/// File name extension of index files.
pub const EXTENSION: &str = "idx";

/// Offset of the magic.
pub const MAGIC_OFFSET: usize = 0;
/// Offset of the format version.
pub const VERSION_OFFSET: usize = MAGIC_OFFSET + MAGIC.len();
/// Offset of the flags (zero in version 1).
pub const FLAGS_OFFSET: usize = VERSION_OFFSET + size_of::<u16>();
/// Offset of the entry count.
pub const COUNT_OFFSET: usize = FLAGS_OFFSET + size_of::<u16>();
/// Offset of the segment's first position.
pub const FIRST_POSITION_OFFSET: usize = COUNT_OFFSET + size_of::<u32>();
/// Offset of the segment's last position (`first - 1` when it holds no frame).
pub const LAST_POSITION_OFFSET: usize = FIRST_POSITION_OFFSET + size_of::<u64>();
/// Offset of the segment length the index covers.
pub const SEGMENT_BYTES_OFFSET: usize = LAST_POSITION_OFFSET + size_of::<u64>();
/// Offset of the CRC over the entries.
pub const ENTRIES_CRC_OFFSET: usize = SEGMENT_BYTES_OFFSET + size_of::<u64>();
/// Offset of the header CRC, which covers bytes `0..HEADER_CRC_OFFSET`.
pub const HEADER_CRC_OFFSET: usize = 60;
/// Size of the header; entries start here.
pub const HEADER_BYTES: usize = HEADER_CRC_OFFSET + size_of::<u32>();
/// Size of one entry: `{ u32 relative_position | u32 offset }`.
pub const ENTRY_BYTES: usize = 8;

const _: () = assert!(ENTRIES_CRC_OFFSET + size_of::<u32>() <= HEADER_CRC_OFFSET);
const _: () = assert!(HEADER_BYTES == 64);

/// One sparse index entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    /// Position minus the segment's first position.
    pub relative_position: u32,
    /// Byte offset of that frame in the segment file.
    pub offset: u32,
}

/// What an index file says about its segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexSummary {
    /// The segment's first position.
    pub first_position: u64,
    /// The last position in the covered bytes (`first_position - 1` when there is none).
    pub last_position: u64,
    /// Segment bytes covered (from byte 0, header included).
    pub segment_bytes: u64,
    /// Number of entries.
    pub entry_count: u32,
}

/// Read access to a list of entries, in memory or mapped.
pub trait Entries {
    /// Number of entries.
    fn count(&self) -> usize;
    /// The entry at `i < count()`.
    fn entry(&self, i: usize) -> IndexEntry;

    /// The last entry at or before `relative_position`, if any.
    fn floor(&self, relative_position: u32) -> Option<IndexEntry> {
        // Binary search for the number of entries with relative_position <= target.
        let (mut low, mut high) = (0usize, self.count());
        while low < high {
            let mid = low + (high - low) / 2;
            if self.entry(mid).relative_position <= relative_position {
                low = mid + 1;
            } else {
                high = mid;
            }
        }
        low.checked_sub(1).map(|i| self.entry(i))
    }
}

impl Entries for [IndexEntry] {
    fn count(&self) -> usize {
        self.len()
    }
    fn entry(&self, i: usize) -> IndexEntry {
        self.get(i).copied().unwrap_or(IndexEntry {
            relative_position: 0,
            offset: 0,
        })
    }
}

impl Entries for Vec<IndexEntry> {
    fn count(&self) -> usize {
        self.len()
    }
    fn entry(&self, i: usize) -> IndexEntry {
        self.as_slice().entry(i)
    }
}

/// Whether a frame at `offset` gets an index entry, given the offset of the previous entry: the
/// first frame of a segment always does, later ones once `interval_bytes` have passed.
pub fn due(offset: u64, last_entry_offset: u64, interval_bytes: u32) -> bool {
    offset == crate::segment::HEADER_BYTES as u64
        || offset.saturating_sub(last_entry_offset) >= u64::from(interval_bytes)
}

/// Encodes an index file.
///
/// Grammar: `{ magic[8] | u16 version | u16 flags=0 | u32 count | u64 first | u64 last
/// | u64 segment_bytes | u32 entries_crc | [u8; 16] reserved=0 | u32 crc(0..60)
/// | count × { u32 relative_position | u32 offset } }`.
pub fn encode(summary: &IndexSummary, entries: &[IndexEntry]) -> Vec<u8> {
    assert_eq!(
        summary.entry_count as usize,
        entries.len(),
        "summary matches entries"
    );
    let mut out = Vec::with_capacity(HEADER_BYTES + entries.len() * ENTRY_BYTES);
    out.resize(HEADER_BYTES, 0);
    for entry in entries {
        out.extend_from_slice(&entry.relative_position.to_le_bytes());
        out.extend_from_slice(&entry.offset.to_le_bytes());
    }
    let entries_crc = crc32fast::hash(out.get(HEADER_BYTES..).unwrap_or_default());
    put(&mut out, MAGIC_OFFSET, &MAGIC);
    put(&mut out, VERSION_OFFSET, &FORMAT_VERSION.to_le_bytes());
    put(&mut out, COUNT_OFFSET, &summary.entry_count.to_le_bytes());
    put(
        &mut out,
        FIRST_POSITION_OFFSET,
        &summary.first_position.to_le_bytes(),
    );
    put(
        &mut out,
        LAST_POSITION_OFFSET,
        &summary.last_position.to_le_bytes(),
    );
    put(
        &mut out,
        SEGMENT_BYTES_OFFSET,
        &summary.segment_bytes.to_le_bytes(),
    );
    put(&mut out, ENTRIES_CRC_OFFSET, &entries_crc.to_le_bytes());
    let crc = crc32fast::hash(out.get(..HEADER_CRC_OFFSET).unwrap_or_default());
    put(&mut out, HEADER_CRC_OFFSET, &crc.to_le_bytes());
    out
}

/// Checks an index file completely: header, CRCs, that entries strictly increase, start with the
/// first frame and stay inside the covered bytes.
///
/// # Errors
/// A static reason for the first failed check.
pub fn validate(bytes: &[u8], expected_first_position: u64) -> Result<IndexSummary, &'static str> {
    let header = bytes
        .get(..HEADER_BYTES)
        .ok_or("index shorter than its header")?;
    if header.get(..MAGIC.len()) != Some(&MAGIC[..]) {
        return Err("bad index magic");
    }
    if u32_at(header, HEADER_CRC_OFFSET)
        != crc32fast::hash(header.get(..HEADER_CRC_OFFSET).unwrap_or_default())
    {
        return Err("index header crc mismatch");
    }
    let reserved = header.get(ENTRIES_CRC_OFFSET + size_of::<u32>()..HEADER_CRC_OFFSET);
    if reserved.is_none_or(|bytes| bytes.iter().any(|b| *b != 0)) {
        return Err("nonzero reserved bytes in index header");
    }
    if u16_at(header, VERSION_OFFSET) != FORMAT_VERSION || u16_at(header, FLAGS_OFFSET) != 0 {
        return Err("unsupported index format version");
    }
    let summary = IndexSummary {
        first_position: u64_at(header, FIRST_POSITION_OFFSET),
        last_position: u64_at(header, LAST_POSITION_OFFSET),
        segment_bytes: u64_at(header, SEGMENT_BYTES_OFFSET),
        entry_count: u32_at(header, COUNT_OFFSET),
    };
    if summary.first_position != expected_first_position {
        return Err("index names another segment");
    }
    if summary.first_position == 0 || summary.last_position >= crate::limits::POSITION_MAX {
        return Err("index positions out of range");
    }
    // Found by the `segment_recover` fuzz target: an index covering less than the segment header
    // made recovery scan from inside the header (and TolerateAny cut the segment below it).
    if summary.segment_bytes < crate::segment::HEADER_BYTES as u64 {
        return Err("index covers less than the segment header");
    }
    let entries = bytes.get(HEADER_BYTES..).unwrap_or_default();
    if entries.len() != summary.entry_count as usize * ENTRY_BYTES {
        return Err("index length does not match its entry count");
    }
    if crc32fast::hash(entries) != u32_at(header, ENTRIES_CRC_OFFSET) {
        return Err("index entries crc mismatch");
    }
    let mapped = EntryBytes(entries);
    let frames = summary
        .last_position
        .wrapping_add(1)
        .wrapping_sub(summary.first_position);
    if summary.last_position.wrapping_add(1) < summary.first_position
        || (frames == 0) != (summary.entry_count == 0)
    {
        return Err("index positions are inconsistent");
    }
    let mut previous: Option<IndexEntry> = None;
    for i in 0..mapped.count() {
        let entry = mapped.entry(i);
        let in_order = match previous {
            None => {
                entry.relative_position == 0
                    && entry.offset as usize == crate::segment::HEADER_BYTES
            }
            Some(p) => entry.relative_position > p.relative_position && entry.offset > p.offset,
        };
        if !in_order
            || u64::from(entry.relative_position) >= frames
            || u64::from(entry.offset) >= summary.segment_bytes
            || !(entry.offset as usize).is_multiple_of(crate::frame::ALIGN_BYTES)
        {
            return Err("index entries out of order or out of range");
        }
        previous = Some(entry);
    }
    Ok(summary)
}

/// Entries read in place from encoded bytes.
#[derive(Debug, Clone, Copy)]
pub struct EntryBytes<'a>(pub &'a [u8]);

impl Entries for EntryBytes<'_> {
    fn count(&self) -> usize {
        self.0.len() / ENTRY_BYTES
    }
    fn entry(&self, i: usize) -> IndexEntry {
        IndexEntry {
            relative_position: u32_at(self.0, i * ENTRY_BYTES),
            offset: u32_at(self.0, i * ENTRY_BYTES + 4),
        }
    }
}

/// A validated, memory-mapped index file of a sealed segment.
#[derive(Debug)]
pub struct MappedIndex {
    map: Mmap,
    summary: IndexSummary,
}

impl MappedIndex {
    /// Maps and fully validates an index file.
    ///
    /// # Errors
    /// `Err(Ok(reason))` when the content is invalid, `Err(Err(io))` when mapping failed.
    pub fn load(
        file: &File,
        expected_first_position: u64,
    ) -> Result<Self, Result<&'static str, io::Error>> {
        let map = map_immutable(file).map_err(Err)?;
        let summary = validate(&map, expected_first_position).map_err(Ok)?;
        Ok(MappedIndex { map, summary })
    }

    /// What the index says about its segment.
    pub fn summary(&self) -> IndexSummary {
        self.summary
    }

    /// The entries, read in place.
    pub fn entries(&self) -> EntryBytes<'_> {
        EntryBytes(self.map.get(HEADER_BYTES..).unwrap_or_default())
    }
}

/// Maps a whole file read-only.
///
/// The log maps only files it never modifies in place again: sealed segments and their index
/// files. They are replaced by write-new-then-rename and removed by unlink, both of which leave an
/// existing mapping intact, so no mapped page can vanish under a reader (which would be SIGBUS).
/// The directory lock keeps other `tasklog` processes out; other programs writing into the data
/// directory are outside the contract.
///
/// # Errors
/// The `mmap` call's error.
pub fn map_immutable(file: &File) -> io::Result<Mmap> {
    // SAFETY: see the function documentation: the file is never truncated or written in place
    // while mapped; replacement is by rename and removal by unlink.
    unsafe { Mmap::map(file) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (IndexSummary, Vec<IndexEntry>) {
        let entries = vec![
            IndexEntry {
                relative_position: 0,
                offset: 64,
            },
            IndexEntry {
                relative_position: 12,
                offset: 4160,
            },
            IndexEntry {
                relative_position: 30,
                offset: 8256,
            },
        ];
        let summary = IndexSummary {
            first_position: 100,
            last_position: 140,
            segment_bytes: 12_000,
            entry_count: 3,
        };
        (summary, entries)
    }

    #[test]
    fn encode_validate_round_trip_and_floor() {
        let (summary, entries) = sample();
        let bytes = encode(&summary, &entries);
        assert_eq!(validate(&bytes, 100), Ok(summary));
        let view = EntryBytes(&bytes[HEADER_BYTES..]);
        assert_eq!(view.floor(0).unwrap().offset, 64);
        assert_eq!(view.floor(11).unwrap().offset, 64);
        assert_eq!(view.floor(12).unwrap().offset, 4160);
        assert_eq!(view.floor(40).unwrap().offset, 8256);
        assert_eq!(entries.floor(29).unwrap().offset, 4160);
        assert_eq!(Vec::<IndexEntry>::new().floor(3), None);
    }

    /// Golden bytes of a version-1 index file; a change here is a format change (FORMAT.md). The
    /// CRCs were computed independently (Python `zlib.crc32`).
    #[test]
    fn golden_index_bytes() {
        let entries = [
            IndexEntry {
                relative_position: 0,
                offset: 64,
            },
            IndexEntry {
                relative_position: 12,
                offset: 4160,
            },
        ];
        let summary = IndexSummary {
            first_position: 100,
            last_position: 140,
            segment_bytes: 12_000,
            entry_count: 2,
        };
        let mut expected = Vec::new();
        expected.extend_from_slice(b"\x89TLX\r\n\x1a\n");
        expected.extend_from_slice(&[1, 0, 0, 0]); // version 1, flags 0
        expected.extend_from_slice(&[2, 0, 0, 0]); // entry count
        expected.extend_from_slice(&[100, 0, 0, 0, 0, 0, 0, 0]); // first position
        expected.extend_from_slice(&[140, 0, 0, 0, 0, 0, 0, 0]); // last position
        expected.extend_from_slice(&[0xe0, 0x2e, 0, 0, 0, 0, 0, 0]); // segment bytes = 12000
        expected.extend_from_slice(&[0xa7, 0x12, 0x45, 0x0c]); // entries crc = 0x0c4512a7
        expected.extend_from_slice(&[0u8; 16]); // reserved
        expected.extend_from_slice(&[0xdc, 0x60, 0xc4, 0x63]); // header crc = 0x63c460dc
        expected.extend_from_slice(&[0, 0, 0, 0, 64, 0, 0, 0, 12, 0, 0, 0, 0x40, 0x10, 0, 0]);
        assert_eq!(encode(&summary, &entries), expected);
    }

    #[test]
    fn any_damage_or_mismatch_is_refused() {
        let (summary, entries) = sample();
        let bytes = encode(&summary, &entries);
        assert_eq!(validate(&bytes, 101), Err("index names another segment"));
        for byte in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[byte] ^= 0x01;
            assert!(validate(&damaged, 100).is_err(), "byte {byte}");
        }
        assert!(validate(&bytes[..bytes.len() - 1], 100).is_err());
        let unordered = vec![entries[0], entries[2], entries[1]];
        assert!(validate(&encode(&summary, &unordered), 100).is_err());
    }
}
