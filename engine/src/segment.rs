//! One segment file: its name, its 64-byte header, and reading frames out of its bytes.
//!
//! A segment is named by the position of its first record, zero-padded to 20 digits
//! (`00000000000000000001.seg`), and starts with a header (engine/FORMAT.md §2). Frames follow,
//! back to back, from byte [`HEADER_BYTES`]. This module knows nothing about other segments or the
//! offset index.
#![deny(clippy::indexing_slicing)]

use std::path::Path;

use crate::le::{put, u16_at, u32_at, u64_at};

/// Segment file magic, PNG style: a high byte, a name, CR LF, SUB, LF, so that text-mode copies and
/// truncated transfers are caught.
pub const MAGIC: [u8; 8] = *b"\x89TLG\r\n\x1a\n";
/// Format version of the segments appended to (and of every segment before compaction).
pub const FORMAT_VERSION: u16 = 1;
/// Format version of a *compacted* segment (FORMAT.md §3.1): written by compaction, it covers a
/// range of positions of which it holds only some records, with gap frames for the rest.
pub const COMPACTED_FORMAT_VERSION: u16 = 2;

/// Offset of the magic.
pub const MAGIC_OFFSET: usize = 0;
/// Offset of the format version.
pub const VERSION_OFFSET: usize = MAGIC_OFFSET + MAGIC.len();
/// Offset of the flags (zero in version 1).
pub const FLAGS_OFFSET: usize = VERSION_OFFSET + size_of::<u16>();
/// Offset of four reserved bytes.
pub const RESERVED_OFFSET: usize = FLAGS_OFFSET + size_of::<u16>();
/// Offset of the first position.
pub const FIRST_POSITION_OFFSET: usize = RESERVED_OFFSET + size_of::<u32>();
/// Offset of the reserved tail of the header.
pub const TAIL_OFFSET: usize = FIRST_POSITION_OFFSET + size_of::<u64>();
/// Compacted segments: offset of the last position the segment covers.
pub const LAST_POSITION_OFFSET: usize = TAIL_OFFSET;
/// Compacted segments: offset of the number of records it holds (gap frames not counted).
pub const RECORD_COUNT_OFFSET: usize = LAST_POSITION_OFFSET + size_of::<u64>();
/// Compacted segments: offset of the reserved tail of the header.
pub const COMPACTED_TAIL_OFFSET: usize = RECORD_COUNT_OFFSET + size_of::<u64>();
/// Offset of the header CRC, which covers bytes `0..HEADER_CRC_OFFSET`.
pub const HEADER_CRC_OFFSET: usize = 60;
/// Size of the header; the first frame starts here.
pub const HEADER_BYTES: usize = HEADER_CRC_OFFSET + size_of::<u32>();

const _: () = assert!(HEADER_BYTES == 64);
const _: () = assert!(TAIL_OFFSET <= HEADER_CRC_OFFSET);
const _: () = assert!(HEADER_BYTES.is_multiple_of(crate::frame::ALIGN_BYTES));

/// File name extension of segments.
pub const EXTENSION: &str = "seg";

/// The file name of the segment whose first record is at `first_position`.
pub fn file_name(first_position: u64) -> String {
    format!("{first_position:020}.{EXTENSION}")
}

/// Parses a file name made by [`file_name`] (or the same with another extension) back into its
/// first position; `None` for any other name.
pub fn parse_file_name(name: &str, extension: &str) -> Option<u64> {
    let stem = name.strip_suffix(extension)?.strip_suffix('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse()
        .ok()
        .filter(|p| (1..=crate::limits::POSITION_MAX).contains(p))
}

/// Encodes the header of a segment starting at `first_position`.
///
/// Grammar: `{ magic[8] | u16 version | u16 flags=0 | u32 reserved=0 | u64 first_position
/// | [u8; 36] reserved=0 | u32 crc(0..60) }`.
pub fn encode_header(first_position: u64) -> [u8; HEADER_BYTES] {
    let mut header = [0u8; HEADER_BYTES];
    put(&mut header, MAGIC_OFFSET, &MAGIC);
    put(&mut header, VERSION_OFFSET, &FORMAT_VERSION.to_le_bytes());
    put(
        &mut header,
        FIRST_POSITION_OFFSET,
        &first_position.to_le_bytes(),
    );
    let crc = crc32fast::hash(header.get(..HEADER_CRC_OFFSET).unwrap_or_default());
    put(&mut header, HEADER_CRC_OFFSET, &crc.to_le_bytes());
    header
}

/// What a segment header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The first position the segment covers (its name).
    pub first_position: u64,
    /// Set for a compacted segment (format version 2).
    pub compacted: Option<Compacted>,
}

/// The header fields of a compacted segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compacted {
    /// The last position the segment covers, whether or not its record is still held: the next
    /// segment starts after it.
    pub last_position: u64,
    /// Records held (the covered positions that are not in a gap frame).
    pub records: u64,
}

/// Encodes the header of a compacted segment covering `first_position..=last_position` and
/// holding `records` records.
///
/// Grammar: `{ magic[8] | u16 version=2 | u16 flags=0 | u32 reserved=0 | u64 first_position
/// | u64 last_position | u64 records | [u8; 20] reserved=0 | u32 crc(0..60) }`.
pub fn encode_compacted_header(
    first_position: u64,
    last_position: u64,
    records: u64,
) -> [u8; HEADER_BYTES] {
    let mut header = encode_header(first_position);
    put(
        &mut header,
        VERSION_OFFSET,
        &COMPACTED_FORMAT_VERSION.to_le_bytes(),
    );
    put(
        &mut header,
        LAST_POSITION_OFFSET,
        &last_position.to_le_bytes(),
    );
    put(&mut header, RECORD_COUNT_OFFSET, &records.to_le_bytes());
    let crc = crc32fast::hash(header.get(..HEADER_CRC_OFFSET).unwrap_or_default());
    put(&mut header, HEADER_CRC_OFFSET, &crc.to_le_bytes());
    header
}

/// Decodes and checks a segment header (version 1, or 2 for a compacted segment).
///
/// # Errors
/// A static reason when the magic, CRC, version, reserved bytes or positions are wrong.
pub fn decode_header(bytes: &[u8]) -> Result<Header, &'static str> {
    let header = bytes
        .get(..HEADER_BYTES)
        .ok_or("file shorter than a segment header")?;
    if header.get(..MAGIC.len()) != Some(&MAGIC[..]) {
        return Err("bad segment magic");
    }
    let crc = crc32fast::hash(header.get(..HEADER_CRC_OFFSET).unwrap_or_default());
    if u32_at(header, HEADER_CRC_OFFSET) != crc {
        return Err("segment header crc mismatch");
    }
    let version = u16_at(header, VERSION_OFFSET);
    let tail = match version {
        FORMAT_VERSION => TAIL_OFFSET,
        COMPACTED_FORMAT_VERSION => COMPACTED_TAIL_OFFSET,
        _ => return Err("unsupported segment format version"),
    };
    let reserved_clear = header
        .get(FLAGS_OFFSET..FIRST_POSITION_OFFSET)
        .is_some_and(|r| r.iter().all(|b| *b == 0))
        && header
            .get(tail..HEADER_CRC_OFFSET)
            .is_some_and(|r| r.iter().all(|b| *b == 0));
    if !reserved_clear {
        return Err("nonzero reserved bytes in segment header");
    }
    let first_position = u64_at(header, FIRST_POSITION_OFFSET);
    if !(1..=crate::limits::POSITION_MAX).contains(&first_position) {
        return Err("segment first position out of range");
    }
    let compacted = if version == COMPACTED_FORMAT_VERSION {
        let last_position = u64_at(header, LAST_POSITION_OFFSET);
        let records = u64_at(header, RECORD_COUNT_OFFSET);
        if last_position < first_position || last_position > crate::limits::POSITION_MAX {
            return Err("compacted segment last position out of range");
        }
        // Index entries hold positions relative to the first as u32 (FORMAT.md §5).
        let span = last_position - first_position;
        if span >= u64::from(u32::MAX) || records > span + 1 {
            return Err("compacted segment covers too many positions or records");
        }
        Some(Compacted {
            last_position,
            records,
        })
    } else {
        None
    };
    Ok(Header {
        first_position,
        compacted,
    })
}

/// `path`'s file name, for messages.
pub fn display_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_reject_strangers() {
        assert_eq!(file_name(1), "00000000000000000001.seg");
        assert_eq!(
            parse_file_name(&file_name(123_456), EXTENSION),
            Some(123_456)
        );
        assert_eq!(parse_file_name("00000000000000000001.idx", "idx"), Some(1));
        for bad in [
            "1.seg",
            "0000000000000000000a.seg",
            "00000000000000000001.seg.tmp",
            "LOCK",
            "00000000000000000000.seg",
            "99999999999999999999.seg",
        ] {
            assert_eq!(parse_file_name(bad, EXTENSION), None, "{bad}");
        }
    }

    #[test]
    fn header_round_trips_and_detects_damage() {
        let header = encode_header(77);
        assert_eq!(
            decode_header(&header),
            Ok(Header {
                first_position: 77,
                compacted: None
            })
        );
        for byte in 0..HEADER_BYTES {
            let mut damaged = header;
            damaged[byte] ^= 0x10;
            assert!(decode_header(&damaged).is_err(), "byte {byte}");
        }
        assert!(decode_header(&header[..10]).is_err());
    }

    /// Golden bytes of the version-1 header; a change here is a format change (FORMAT.md).
    #[test]
    fn golden_header_bytes() {
        let header = encode_header(1);
        let mut expected = [0u8; HEADER_BYTES];
        expected[..8].copy_from_slice(b"\x89TLG\r\n\x1a\n");
        expected[8] = 1; // version 1
        expected[16] = 1; // first position 1
        let crc = crc32fast::hash(&expected[..60]);
        expected[60..].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(header, expected);
        assert_eq!(crc, GOLDEN_HEADER_CRC);
    }

    /// Computed independently (Python `zlib.crc32`, the same CRC-32/ISO-HDLC).
    const GOLDEN_HEADER_CRC: u32 = 0xdae2_6b59;

    #[test]
    fn compacted_header_round_trips_and_detects_damage() {
        let header = encode_compacted_header(100, 5_000, 17);
        let compacted = Some(Compacted {
            last_position: 5_000,
            records: 17,
        });
        assert_eq!(
            decode_header(&header),
            Ok(Header {
                first_position: 100,
                compacted
            })
        );
        for byte in 0..HEADER_BYTES {
            let mut damaged = header;
            damaged[byte] ^= 0x10;
            assert!(decode_header(&damaged).is_err(), "byte {byte}");
        }
        for (first, last, records) in [
            (100, 99, 0),
            (100, 100 + u64::from(u32::MAX), 1),
            (100, 110, 12),
            (1, crate::limits::POSITION_MAX + 1, 1),
        ] {
            assert!(
                decode_header(&encode_compacted_header(first, last, records)).is_err(),
                "{first} {last} {records}"
            );
        }
    }

    /// Golden bytes of the version-2 (compacted) header; a change here is a format change.
    #[test]
    fn golden_compacted_header_bytes() {
        let header = encode_compacted_header(1, 9, 2);
        let mut expected = [0u8; HEADER_BYTES];
        expected[..8].copy_from_slice(b"\x89TLG\r\n\x1a\n");
        expected[8] = 2; // version 2
        expected[16] = 1; // first position 1
        expected[24] = 9; // last position 9
        expected[32] = 2; // records 2
        let crc = crc32fast::hash(&expected[..60]);
        expected[60..].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(header, expected);
        assert_eq!(crc, GOLDEN_COMPACTED_HEADER_CRC);
    }

    /// Computed independently (Python `zlib.crc32`).
    const GOLDEN_COMPACTED_HEADER_CRC: u32 = 0x860c_f0cf;
}
