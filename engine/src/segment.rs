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
/// Format version written by this build.
pub const FORMAT_VERSION: u16 = 1;

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

/// Decodes and checks a segment header, returning its first position.
///
/// # Errors
/// A static reason when the magic, CRC, version or reserved bytes are wrong.
pub fn decode_header(bytes: &[u8]) -> Result<u64, &'static str> {
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
    if version != FORMAT_VERSION {
        return Err("unsupported segment format version");
    }
    let reserved_clear = header
        .get(FLAGS_OFFSET..FIRST_POSITION_OFFSET)
        .is_some_and(|r| r.iter().all(|b| *b == 0))
        && header
            .get(TAIL_OFFSET..HEADER_CRC_OFFSET)
            .is_some_and(|r| r.iter().all(|b| *b == 0));
    if !reserved_clear {
        return Err("nonzero reserved bytes in segment header");
    }
    let first_position = u64_at(header, FIRST_POSITION_OFFSET);
    if !(1..=crate::limits::POSITION_MAX).contains(&first_position) {
        return Err("segment first position out of range");
    }
    Ok(first_position)
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
        assert_eq!(decode_header(&header), Ok(77));
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
}
