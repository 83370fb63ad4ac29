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
/// Offset of the flags byte (zero in format version 1).
pub const FLAGS_OFFSET: usize = KIND_OFFSET + 1;
/// Offset of the reserved bytes (zero in format version 1).
pub const RESERVED_OFFSET: usize = FLAGS_OFFSET + 1;
/// Size of the frame header; the payload starts here.
pub const HEADER_BYTES: usize = RESERVED_OFFSET + 6;
/// Frames start and end on multiples of this.
pub const ALIGN_BYTES: usize = 8;

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

/// Decodes the frame at the start of `bytes`, checking its CRC and reserved fields.
pub fn decode(bytes: &[u8]) -> Decoded<'_> {
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
    if header
        .get(FLAGS_OFFSET..HEADER_BYTES)
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
    Decoded::Frame(Frame {
        position: le::u64_at(header, POSITION_OFFSET),
        term: le::u64_at(header, TERM_OFFSET),
        kind: header.get(KIND_OFFSET).copied().unwrap_or_default(),
        payload,
        len: total,
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
