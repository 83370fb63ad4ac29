//! Little-endian fixed-width fields in byte buffers, for the on-disk layouts of `frame.rs`,
//! `segment.rs` and `index.rs`. Out-of-range offsets read as zero and write nothing: the callers
//! check lengths first, and a bad offset must never become a panic on bytes read from disk.
#![deny(clippy::indexing_slicing)]

/// The `u16` at `offset`.
pub(crate) fn u16_at(bytes: &[u8], offset: usize) -> u16 {
    let mut word = [0u8; 2];
    if let Some(slice) = bytes.get(offset..offset + 2) {
        word.copy_from_slice(slice);
    }
    u16::from_le_bytes(word)
}

/// The `u32` at `offset`.
pub(crate) fn u32_at(bytes: &[u8], offset: usize) -> u32 {
    let mut word = [0u8; 4];
    if let Some(slice) = bytes.get(offset..offset + 4) {
        word.copy_from_slice(slice);
    }
    u32::from_le_bytes(word)
}

/// The `u64` at `offset`.
pub(crate) fn u64_at(bytes: &[u8], offset: usize) -> u64 {
    let mut word = [0u8; 8];
    if let Some(slice) = bytes.get(offset..offset + 8) {
        word.copy_from_slice(slice);
    }
    u64::from_le_bytes(word)
}

/// Copies `field` into `buffer` at `offset`.
pub(crate) fn put(buffer: &mut [u8], offset: usize, field: &[u8]) {
    if let Some(slot) = buffer.get_mut(offset..offset + field.len()) {
        slot.copy_from_slice(field);
    }
}
