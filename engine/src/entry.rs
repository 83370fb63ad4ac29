//! What goes into the log ([`NewRecord`]) and what comes out ([`Entry`]), and the [`Position`]
//! newtype that numbers records.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use rkyv::util::AlignedVec;

use crate::log::Sealed;

/// The place of a record in the log: 1, 2, 3 … with no gaps. In a Raft cluster this is the Raft
/// log index; embedded, the engine assigns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Position(u64);

impl Position {
    /// Wraps a raw position.
    pub const fn new(raw: u64) -> Self {
        Position(raw)
    }

    /// The raw number.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A record to append: opaque payload bytes with a kind byte and the Raft term (0 embedded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewRecord<'a> {
    /// Raft term of the entry; 0 when the log is used without Raft.
    pub term: u64,
    /// Kind of record, opaque to the log (the task layer's event kind).
    pub kind: u8,
    /// The payload; at most [`crate::limits::PAYLOAD_BYTES_MAX`] bytes.
    pub payload: &'a [u8],
}

impl<'a> NewRecord<'a> {
    /// A record with term 0.
    pub fn new(kind: u8, payload: &'a [u8]) -> Self {
        NewRecord {
            term: 0,
            kind,
            payload,
        }
    }
}

/// The positions an append was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Position of the first record of the batch.
    pub first: Position,
    /// Position of the last record of the batch.
    pub last: Position,
}

/// A record read back from the log, CRC-checked.
///
/// The payload is read in place from the memory-mapped segment when the segment is sealed, and
/// from one shared aligned buffer per read otherwise; it is 8-byte aligned either way, so rkyv can
/// access it without copying.
#[derive(Clone)]
pub struct Entry {
    pub(crate) position: u64,
    pub(crate) term: u64,
    pub(crate) kind: u8,
    pub(crate) offset: u64,
    pub(crate) bytes: EntryBytes,
    pub(crate) payload: Range<usize>,
}

#[derive(Clone)]
pub(crate) enum EntryBytes {
    Mapped(Arc<Sealed>),
    Buffer(Arc<AlignedVec>),
}

impl Entry {
    /// The record's position.
    pub fn position(&self) -> Position {
        Position(self.position)
    }

    /// The term that wrote it.
    pub fn term(&self) -> u64 {
        self.term
    }

    /// Its kind byte.
    pub fn kind(&self) -> u8 {
        self.kind
    }

    /// Its payload bytes.
    pub fn payload(&self) -> &[u8] {
        let all: &[u8] = match &self.bytes {
            EntryBytes::Mapped(segment) => segment.bytes(),
            EntryBytes::Buffer(buffer) => buffer.as_slice(),
        };
        all.get(self.payload.clone()).unwrap_or_default()
    }
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry")
            .field("position", &self.position)
            .field("term", &self.term)
            .field("kind", &self.kind)
            .field("payload_len", &self.payload.len())
            .finish()
    }
}
