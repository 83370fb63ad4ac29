//! `tasklog-benches`: criterion benchmarks (`cargo bench -p tasklog-benches`). Numbers are printed,
//! never asserted; see README.md for the figures and how they were measured.
//!
//! This library holds what the bench targets share: the 300-byte payload of DESIGN.md §6, a tiny
//! deterministic generator for random positions, and the raw `pwrite + fdatasync` baseline that the
//! engine's durable append is compared against (E1).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Size of every benchmark payload (DESIGN.md §6: 300-byte events).
pub const PAYLOAD_BYTES: usize = 300;

/// A deterministic [`PAYLOAD_BYTES`]-byte payload derived from `seed`.
pub fn payload(seed: u64) -> Vec<u8> {
    let mut rng = XorShift64::new(seed);
    (0..PAYLOAD_BYTES).map(|_| rng.next_u64() as u8).collect()
}

/// Marsaglia's xorshift64: deterministic, dependency-free, good enough to pick read positions.
#[derive(Debug, Clone)]
pub struct XorShift64(u64);

impl XorShift64 {
    /// A generator seeded with `seed` (any value; zero is remapped, xorshift must not start at 0).
    pub fn new(seed: u64) -> Self {
        XorShift64((seed ^ 0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next pseudo-random value.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A value in `0..bound` (`bound > 0`; the modulo bias is irrelevant here).
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound.max(1)
    }
}

/// The raw baseline for E1: a plain file that grows by one `pwrite` at its end followed by one
/// `fdatasync` (`File::sync_data`) per record, as the log's active segment does.
#[derive(Debug)]
pub struct RawAppender {
    file: File,
    end: u64,
}

impl RawAppender {
    /// Creates (or truncates) the file at `path`.
    ///
    /// # Errors
    /// The `open` failure.
    pub fn create(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        Ok(RawAppender { file, end: 0 })
    }

    /// Writes `bytes` at the end of the file and `fdatasync`s it.
    ///
    /// # Errors
    /// The failed write or sync.
    pub fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all_at(bytes, self.end)?;
        self.end += bytes.len() as u64;
        self.file.sync_data()
    }

    /// Bytes written so far.
    pub fn bytes_written(&self) -> u64 {
        self.end
    }
}
