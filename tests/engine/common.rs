//! Helpers shared by the engine tests.

use std::fs;
use std::path::{Path, PathBuf};

use tasklog_engine::{Log, NewRecord, Options, Position, RecoveryMode};

/// Options with small segments so tests roll often.
pub(crate) fn small_segments() -> Options {
    Options {
        segment_bytes_max: 64 * 1024,
        index_interval_bytes: 256,
        ..Options::default()
    }
}

/// A deterministic payload for `(stream, seq)`: a header naming both, then a pattern, so a reader
/// can tell a record is whole and whose it is.
pub(crate) fn payload(stream: u64, seq: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len.max(16));
    out.extend_from_slice(&stream.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    let mut x = stream.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ seq.wrapping_add(1);
    while out.len() < len.max(16) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.push(x as u8);
    }
    out
}

/// Parses a payload made by [`payload`], checking the pattern; `None` if it is not one.
pub(crate) fn parse_payload(bytes: &[u8]) -> Option<(u64, u64)> {
    let stream = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
    let seq = u64::from_le_bytes(bytes.get(8..16)?.try_into().ok()?);
    (payload(stream, seq, bytes.len()) == bytes).then_some((stream, seq))
}

/// Appends `count` records of `len` bytes on stream 0, returning their payloads.
pub(crate) fn fill(log: &Log, count: u64, len: usize) -> Vec<Vec<u8>> {
    let start = log.next_position().get();
    (0..count)
        .map(|i| {
            let bytes = payload(0, start + i, len);
            log.append(&[NewRecord::new((i % 7) as u8, &bytes)])
                .unwrap();
            bytes
        })
        .collect()
}

/// Every payload in the log, in order, checking that positions are dense.
pub(crate) fn all_payloads(log: &Log) -> Vec<Vec<u8>> {
    let (first, last) = log.bounds();
    let mut out = Vec::new();
    let mut next = first.get();
    while next <= last.get() {
        let batch = log
            .read_range(Position::new(next), 1000, usize::MAX)
            .unwrap();
        assert!(!batch.is_empty());
        for entry in batch {
            assert_eq!(entry.position().get(), next, "positions must be dense");
            out.push(entry.payload().to_vec());
            next += 1;
        }
    }
    out
}

/// Segment files in `dir`, sorted.
pub(crate) fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    out.sort();
    out
}

/// The last segment file (the active one).
pub(crate) fn last_segment(dir: &Path) -> PathBuf {
    segments(dir).pop().unwrap()
}

/// Options for reopening with a given recovery mode.
pub(crate) fn with_mode(mut options: Options, recovery: RecoveryMode) -> Options {
    options.recovery = recovery;
    options
}
