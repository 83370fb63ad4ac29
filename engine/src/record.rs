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
use rkyv::{Archive, Portable, Serialize};

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
