//! CRC32-framed records over byte slices: encode into a `Vec<u8>`, decode from `&[u8]`.
//!
//! This module does no I/O and knows nothing of rkyv; the payload is opaque bytes. Layout
//! (engine/FORMAT.md §3, all integers little-endian):
//!
//! ```text
//! { u32 crc | u32 payload_len | u64 position | u64 term | u8 kind | u8 flags | [u8; 6] reserved
//!   | payload | zero padding to a multiple of 8 }
//! ```
//!
//! The CRC (CRC-32/ISO-HDLC, as computed by `crc32fast`) covers every byte after it, padding
//! included, so a damaged length is caught as surely as a damaged payload. Frames start at 8-byte
//! aligned offsets and the header is 32 bytes, so the payload is 8-byte aligned in the file and in
//! any 8-aligned buffer holding the frame: rkyv can read it in place.
#![deny(clippy::indexing_slicing)]

use crate::le;
use crate::limits::PAYLOAD_BYTES_MAX;

/// Offset of the CRC field.
pub const CRC_OFFSET: usize = 0;
/// Offset of the payload length field.
pub const LEN_OFFSET: usize = CRC_OFFSET + size_of::<u32>();
/// Offset of the position field.
pub const POSITION_OFFSET: usize = LEN_OFFSET + size_of::<u32>();
/// Offset of the term field.
pub const TERM_OFFSET: usize = POSITION_OFFSET + size_of::<u64>();
/// Offset of the kind byte.
pub const KIND_OFFSET: usize = TERM_OFFSET + size_of::<u64>();
/// Offset of the flags byte (zero for a record; [`FLAG_GAP`] for a gap frame).
pub const FLAGS_OFFSET: usize = KIND_OFFSET + 1;
/// Offset of the reserved bytes (zero in format version 1).
pub const RESERVED_OFFSET: usize = FLAGS_OFFSET + 1;
/// Size of the frame header; the payload starts here.
pub const HEADER_BYTES: usize = RESERVED_OFFSET + 6;
/// Frames start and end on multiples of this.
pub const ALIGN_BYTES: usize = 8;
/// The flags value of a *gap frame*: it stands for a run of positions whose records compaction
/// removed (engine/FORMAT.md §4.1). Its payload is the run's length, a `u64` of at least 1; its
/// kind and term are zero. Gap frames appear only in compacted segments.
pub const FLAG_GAP: u8 = 1;
/// Payload bytes of a gap frame.
pub const GAP_PAYLOAD_BYTES: usize = size_of::<u64>();
/// Total bytes of a gap frame.
pub const GAP_FRAME_BYTES: usize = frame_len(GAP_PAYLOAD_BYTES);

const _: () = assert!(HEADER_BYTES == 32);
const _: () = assert!(HEADER_BYTES.is_multiple_of(ALIGN_BYTES));

/// Total bytes a frame with `payload_len` bytes of payload occupies, padding included.
pub const fn frame_len(payload_len: usize) -> usize {
    (HEADER_BYTES + payload_len).next_multiple_of(ALIGN_BYTES)
}

/// A frame decoded (and CRC-checked) from a byte slice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// Log position of the record.
    pub position: u64,
    /// Raft term that wrote it (0 in embedded mode).
    pub term: u64,
    /// Record kind, opaque to the log.
    pub kind: u8,
    /// The payload, 8-byte aligned relative to the frame start.
    pub payload: &'a [u8],
    /// Total bytes of the frame, padding included.
    pub len: usize,
    /// For a gap frame, the number of positions it stands for (from `position` on); 0 for a
    /// record.
    pub gap: u64,
}

impl Frame<'_> {
    /// Positions the frame covers: 1 for a record, the run's length for a gap frame.
    pub fn covers(&self) -> u64 {
        self.gap.max(1)
    }

    /// Whether this is a gap frame rather than a record.
    pub fn is_gap(&self) -> bool {
        self.gap != 0
    }
}

/// What [`decode`] found at the start of a byte slice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A whole, valid frame.
    Frame(Frame<'a>),
    /// The slice ends before the frame does; `needed` is the frame's total length when the header
    /// was readable, else the header length.
    Incomplete {
        /// Bytes the frame needs.
        needed: usize,
    },
    /// The bytes are not a valid frame.
    Corrupt(&'static str),
}

/// Appends one frame to `out`. The caller has checked `payload.len() <= PAYLOAD_BYTES_MAX`.
///
/// Grammar: `{ crc | payload_len | position | term | kind | flags=0 | reserved=0 | payload | pad }`.
pub fn encode(out: &mut Vec<u8>, position: u64, term: u64, kind: u8, payload: &[u8]) {
    assert!(
        payload.len() <= PAYLOAD_BYTES_MAX as usize,
        "payload length checked by the caller"
    );
    let start = out.len();
    let total = frame_len(payload.len());
    out.reserve(total);
    out.extend_from_slice(&[0u8; 4]); // CRC, filled in below.
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&position.to_le_bytes());
    out.extend_from_slice(&term.to_le_bytes());
    out.push(kind);
    out.push(0);
    out.extend_from_slice(&[0u8; 6]);
    out.extend_from_slice(payload);
    out.resize(start + total, 0);
    let crc = crc32fast::hash(out.get(start + LEN_OFFSET..).unwrap_or_default());
    if let Some(slot) = out.get_mut(start..start + LEN_OFFSET) {
        slot.copy_from_slice(&crc.to_le_bytes());
    }
    debug_assert!(
        matches!(decode(out.get(start..).unwrap_or_default()), Decoded::Frame(f) if f.len == total)
    );
}

/// Appends a gap frame standing for the `count` positions from `position` on (`count >= 1`).
///
/// Grammar: `{ crc | payload_len=8 | position | term=0 | kind=0 | flags=FLAG_GAP | reserved=0
/// | u64 count }`.
pub fn encode_gap(out: &mut Vec<u8>, position: u64, count: u64) {
    let start = out.len();
    encode(out, position, 0, 0, &count.to_le_bytes());
    if let Some(flags) = out.get_mut(start + FLAGS_OFFSET) {
        *flags = FLAG_GAP;
    }
    let crc = crc32fast::hash(out.get(start + LEN_OFFSET..).unwrap_or_default());
    if let Some(slot) = out.get_mut(start..start + LEN_OFFSET) {
        slot.copy_from_slice(&crc.to_le_bytes());
    }
}

/// Decodes the record frame at the start of `bytes`, checking its CRC and reserved fields. A gap
/// frame is refused: it is valid only inside a compacted segment (see [`decode_compacted`]).
pub fn decode(bytes: &[u8]) -> Decoded<'_> {
    match decode_compacted(bytes) {
        Decoded::Frame(frame) if frame.is_gap() => {
            Decoded::Corrupt("gap frame outside a compacted segment")
        }
        other => other,
    }
}

/// Decodes a record frame or a gap frame at the start of `bytes` (the frames of a compacted
/// segment), checking its CRC and reserved fields.
pub fn decode_compacted(bytes: &[u8]) -> Decoded<'_> {
    let Some(header) = bytes.get(..HEADER_BYTES) else {
        return Decoded::Incomplete {
            needed: HEADER_BYTES,
        };
    };
    let payload_len = le::u32_at(header, LEN_OFFSET);
    if payload_len > PAYLOAD_BYTES_MAX {
        return Decoded::Corrupt("payload length over the maximum");
    }
    let total = frame_len(payload_len as usize);
    let Some(frame) = bytes.get(..total) else {
        return Decoded::Incomplete { needed: total };
    };
    let stored = le::u32_at(header, CRC_OFFSET);
    let computed = crc32fast::hash(frame.get(LEN_OFFSET..).unwrap_or_default());
    if stored != computed {
        return Decoded::Corrupt("crc mismatch");
    }
    let flags = header.get(FLAGS_OFFSET).copied().unwrap_or_default();
    if flags & !FLAG_GAP != 0
        || header
            .get(RESERVED_OFFSET..HEADER_BYTES)
            .is_none_or(|rest| rest.iter().any(|b| *b != 0))
    {
        return Decoded::Corrupt("nonzero reserved header bytes");
    }
    let Some(payload) = frame.get(HEADER_BYTES..HEADER_BYTES + payload_len as usize) else {
        return Decoded::Corrupt("payload outside the frame");
    };
    if frame
        .get(HEADER_BYTES + payload_len as usize..)
        .is_none_or(|pad| pad.iter().any(|b| *b != 0))
    {
        return Decoded::Corrupt("nonzero padding");
    }
    let position = le::u64_at(header, POSITION_OFFSET);
    let term = le::u64_at(header, TERM_OFFSET);
    let kind = header.get(KIND_OFFSET).copied().unwrap_or_default();
    let gap = if flags == FLAG_GAP {
        let count = match <[u8; GAP_PAYLOAD_BYTES]>::try_from(payload) {
            Ok(count) => u64::from_le_bytes(count),
            Err(_) => return Decoded::Corrupt("gap frame payload is not one u64"),
        };
        if count == 0 || term != 0 || kind != 0 {
            return Decoded::Corrupt("gap frame with a zero count, a term or a kind");
        }
        if position.checked_add(count - 1).is_none() {
            return Decoded::Corrupt("gap frame runs past the position space");
        }
        count
    } else {
        0
    };
    Decoded::Frame(Frame {
        position,
        term,
        kind,
        payload,
        len: total,
        gap,
    })
}

/// A cheap test, without the CRC, of whether `bytes` could start a frame whose position lies in
/// `after_position + 1..=position_max`: zero flags and reserved bytes, a length within the limit.
pub fn plausible(bytes: &[u8], after_position: u64, position_max: u64) -> bool {
    let Some(header) = bytes.get(..HEADER_BYTES) else {
        return false;
    };
    let position = le::u64_at(header, POSITION_OFFSET);
    le::u32_at(header, LEN_OFFSET) <= PAYLOAD_BYTES_MAX
        && header
            .get(FLAGS_OFFSET..HEADER_BYTES)
            .is_some_and(|rest| rest.iter().all(|b| *b == 0))
        && position > after_position
        && position <= position_max
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CRC of `encode_gap(7, 3)`, computed independently with Python `zlib.crc32`.
    const GAP_GOLDEN_CRC: u32 = 0x95f7_cd65;

    #[test]
    fn round_trip_keeps_every_field_and_aligns() {
        for len in [0usize, 1, 7, 8, 9, 300, 4096] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut out = Vec::new();
            encode(&mut out, 42, 7, 3, &payload);
            assert_eq!(out.len(), frame_len(len));
            assert_eq!(out.len() % ALIGN_BYTES, 0);
            let Decoded::Frame(frame) = decode(&out) else {
                panic!("not a frame")
            };
            assert_eq!((frame.position, frame.term, frame.kind), (42, 7, 3));
            assert_eq!(frame.payload, &payload[..]);
            assert_eq!(frame.len, out.len());
        }
    }

    /// Golden bytes: this test fails when the encoding changes. A change must bump the format
    /// version and extend the history table in engine/FORMAT.md.
    #[test]
    fn golden_bytes_of_format_version_1() {
        let mut out = Vec::new();
        encode(&mut out, 1, 2, 5, b"hello");
        // The CRC was computed independently (Python `zlib.crc32`, the same CRC-32/ISO-HDLC).
        let expected: [u8; 40] = [
            0x10, 0x40, 0x1f, 0x0f, // crc = 0x0f1f4010
            0x05, 0x00, 0x00, 0x00, // payload_len = 5
            0x01, 0, 0, 0, 0, 0, 0, 0, // position = 1
            0x02, 0, 0, 0, 0, 0, 0, 0,    // term = 2
            0x05, // kind = 5
            0x00, // flags
            0, 0, 0, 0, 0, 0, // reserved
            b'h', b'e', b'l', b'l', b'o', 0, 0, 0, // payload + pad
        ];
        assert_eq!(out, expected);
    }

    /// Golden bytes of a gap frame (FORMAT.md §4.1); the CRC was checked with Python `zlib.crc32`.
    #[test]
    fn golden_bytes_of_a_gap_frame() {
        let mut out = Vec::new();
        encode_gap(&mut out, 7, 3);
        let expected: [u8; 40] = [
            0x00, 0x00, 0x00, 0x00, // crc, checked below
            0x08, 0x00, 0x00, 0x00, // payload_len = 8
            0x07, 0, 0, 0, 0, 0, 0, 0, // position = 7
            0, 0, 0, 0, 0, 0, 0, 0,    // term = 0
            0x00, // kind = 0
            0x01, // flags = FLAG_GAP
            0, 0, 0, 0, 0, 0, // reserved
            0x03, 0, 0, 0, 0, 0, 0, 0, // count = 3
        ];
        assert_eq!(out[4..], expected[4..]);
        assert_eq!(
            u32::from_le_bytes(out[..4].try_into().unwrap()),
            GAP_GOLDEN_CRC
        );
        assert_eq!(out.len(), GAP_FRAME_BYTES);
        let Decoded::Frame(frame) = decode_compacted(&out) else {
            panic!("not a frame")
        };
        assert_eq!((frame.position, frame.gap, frame.covers()), (7, 3, 3));
        assert!(frame.is_gap());
        assert_eq!(
            decode(&out),
            Decoded::Corrupt("gap frame outside a compacted segment")
        );
    }

    #[test]
    fn malformed_gap_frames_are_refused() {
        let forge = |position: u64, term: u64, kind: u8, payload: &[u8]| {
            let mut out = Vec::new();
            encode(&mut out, position, term, kind, payload);
            out[FLAGS_OFFSET] = FLAG_GAP;
            let crc = crc32fast::hash(&out[LEN_OFFSET..]);
            out[..4].copy_from_slice(&crc.to_le_bytes());
            out
        };
        for bad in [
            forge(1, 0, 0, &0u64.to_le_bytes()),
            forge(1, 1, 0, &1u64.to_le_bytes()),
            forge(1, 0, 2, &1u64.to_le_bytes()),
            forge(1, 0, 0, &[1, 0, 0, 0]),
            forge(u64::MAX, 0, 0, &2u64.to_le_bytes()),
        ] {
            assert!(matches!(decode_compacted(&bad), Decoded::Corrupt(_)));
        }
        let mut other_flag = Vec::new();
        encode(&mut other_flag, 1, 0, 0, &1u64.to_le_bytes());
        other_flag[FLAGS_OFFSET] = 2;
        let crc = crc32fast::hash(&other_flag[LEN_OFFSET..]);
        other_flag[..4].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(
            decode_compacted(&other_flag),
            Decoded::Corrupt("nonzero reserved header bytes")
        );
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let mut frame = Vec::new();
        encode(&mut frame, 9, 1, 1, b"some payload bytes");
        for byte in 0..frame.len() {
            for bit in 0..8 {
                let mut damaged = frame.clone();
                damaged[byte] ^= 1 << bit;
                assert!(
                    !matches!(decode(&damaged), Decoded::Frame(_)),
                    "flip of bit {bit} in byte {byte} went unnoticed"
                );
            }
        }
    }

    /// Found by the `frame_decode` fuzz target: padding must be zero (FORMAT.md §4), even under a
    /// valid CRC.
    #[test]
    fn nonzero_padding_is_refused_even_with_a_valid_crc() {
        let mut out = Vec::new();
        encode(&mut out, 1, 0, 0, b"x");
        let last = out.len() - 1;
        out[last] = 1;
        let crc = crc32fast::hash(&out[LEN_OFFSET..]);
        out[..4].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(decode(&out), Decoded::Corrupt("nonzero padding"));
    }

    #[test]
    fn short_and_zeroed_input_is_not_a_frame() {
        let mut frame = Vec::new();
        encode(&mut frame, 1, 0, 0, &[7u8; 100]);
        for cut in 0..frame.len() {
            assert!(
                matches!(decode(&frame[..cut]), Decoded::Incomplete { .. }),
                "cut at {cut}"
            );
        }
        assert!(matches!(decode(&[0u8; 64]), Decoded::Corrupt(_)));
        let mut huge = vec![0u8; 64];
        huge[LEN_OFFSET..LEN_OFFSET + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            decode(&huge),
            Decoded::Corrupt("payload length over the maximum")
        );
    }
}
