//! rkyv payloads: serialize a value into an aligned buffer for [`crate::NewRecord`], and read one
//! back from an [`crate::Entry`] with checked (bytecheck-validated) access, in place.
//!
//! The log keeps every payload 8-byte aligned (engine/FORMAT.md §3), so archived types must not
//! need more than 8-byte alignment; [`assert_payload_alignment`] checks that at compile time for
//! each type the engine stores. This module touches no file.

use rkyv::api::high::{HighSerializer, HighValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor;
use rkyv::ser::allocator::ArenaHandle;
use rkyv::util::AlignedVec;
use rkyv::{Archive, Deserialize, Portable, Serialize};

use crate::entry::Entry;
use crate::error::{Error, Result};

/// Largest alignment an archived payload type may need.
pub const PAYLOAD_ALIGN_MAX: usize = crate::frame::ALIGN_BYTES;

/// Compile-time check that `T` can be read in place from a log payload. Use as
/// `const _: () = assert_payload_alignment::<ArchivedMyEvent>();`.
pub const fn assert_payload_alignment<T>() {
    assert!(
        align_of::<T>() <= PAYLOAD_ALIGN_MAX,
        "archived payload types must need at most 8-byte alignment"
    );
}

/// Serializes `value` into a 16-byte aligned buffer ready to append.
///
/// # Errors
/// [`Error::InvalidArgument`] when rkyv refuses the value.
pub fn to_payload<T>(value: &T) -> Result<AlignedVec>
where
    T: for<'a> Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>>,
{
    rkyv::to_bytes::<rancor::Error>(value)
        .map_err(|e| Error::InvalidArgument(format!("cannot serialize payload: {e}")))
}

/// Validates `entry`'s payload as an archived `T` and returns a reference into it (no copy).
///
/// # Errors
/// [`Error::InvalidPayload`] when the bytes are not a valid archived `T`.
pub fn access<T>(entry: &Entry) -> Result<&T::Archived>
where
    T: Archive,
    T::Archived: Portable + for<'a> CheckBytes<HighValidator<'a, rancor::Error>>,
{
    rkyv::access::<T::Archived, rancor::Error>(entry.payload()).map_err(|e| Error::InvalidPayload {
        position: entry.position,
        reason: e.to_string(),
    })
}

/// Validates `entry`'s payload as an archived `T` and deserializes it into an owned `T`.
///
/// # Errors
/// [`Error::InvalidPayload`] when the bytes are not a valid archived `T`.
pub fn decode<T>(entry: &Entry) -> Result<T>
where
    T: Archive,
    T::Archived: Portable
        + for<'a> CheckBytes<HighValidator<'a, rancor::Error>>
        + Deserialize<T, rancor::Strategy<rkyv::de::Pool, rancor::Error>>,
{
    let archived = access::<T>(entry)?;
    rkyv::deserialize::<T, rancor::Error>(archived).map_err(|e| Error::InvalidPayload {
        position: entry.position,
        reason: e.to_string(),
    })
}

/// Like [`decode`], for payload bytes outside the log (a Raft command in memory): copied into an
/// aligned buffer first when they are not 8-byte aligned. `position` names them in errors.
///
/// # Errors
/// [`Error::InvalidPayload`] when the bytes are not a valid archived `T`.
pub fn decode_bytes<T>(position: u64, bytes: &[u8]) -> Result<T>
where
    T: Archive,
    T::Archived: Portable
        + for<'a> CheckBytes<HighValidator<'a, rancor::Error>>
        + Deserialize<T, rancor::Strategy<rkyv::de::Pool, rancor::Error>>,
{
    let invalid = |e: rancor::Error| Error::InvalidPayload {
        position,
        reason: e.to_string(),
    };
    if (bytes.as_ptr() as usize).is_multiple_of(PAYLOAD_ALIGN_MAX) {
        return rkyv::from_bytes::<T, rancor::Error>(bytes).map_err(invalid);
    }
    let mut aligned = AlignedVec::<16>::with_capacity(bytes.len());
    aligned.extend_from_slice(bytes);
    rkyv::from_bytes::<T, rancor::Error>(&aligned).map_err(invalid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Log, NewRecord, Options, Position};

    #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, PartialEq)]
    struct Sample {
        task: String,
        version: u64,
        parts: Vec<u32>,
    }

    const _: () = assert_payload_alignment::<ArchivedSample>();

    fn check(log: &Log) {
        let entry = log.read(Position::new(2)).unwrap();
        assert_eq!(entry.payload().as_ptr() as usize % PAYLOAD_ALIGN_MAX, 0);
        let archived = access::<Sample>(&entry).unwrap();
        assert_eq!(archived.task.as_str(), "t-1");
        assert_eq!(archived.version.to_native(), 7);
        assert_eq!(archived.parts.len(), 3);
        // Bytes that are not a `Sample` are refused, not trusted.
        let bad = log.read(Position::new(1)).unwrap();
        assert!(matches!(
            access::<Sample>(&bad),
            Err(Error::InvalidPayload { position: 1, .. })
        ));
    }

    #[test]
    fn payloads_round_trip_through_the_log_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let options = Options {
            segment_bytes_max: 64 * 1024,
            ..Options::default()
        };
        let log = Log::open(dir.path(), options).unwrap();
        let value = Sample {
            task: "t-1".into(),
            version: 7,
            parts: vec![1, 2, 3],
        };
        let bytes = to_payload(&value).unwrap();
        // An odd-sized record first, so the second payload's alignment depends on the padding.
        log.append(&[NewRecord::new(0, b"x"), NewRecord::new(1, &bytes)])
            .unwrap();
        check(&log); // read from the active segment, through an aligned buffer
        let filler = vec![0u8; 1000];
        while log.segment_count() < 2 {
            log.append(&[NewRecord::new(0, &filler)]).unwrap();
        }
        check(&log); // read in place from the memory-mapped sealed segment
    }
}
