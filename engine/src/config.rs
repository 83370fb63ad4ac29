//! Options a log is opened with. Every field is explicit; `validate` rejects nonsense before any
//! file is touched.

use crate::error::{Error, Result};
use crate::limits;

/// When appended records are forced to stable storage.
///
/// Anything other than [`SyncPolicy::Always`] trades durability for speed and is logged as a warning
/// when the log opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPolicy {
    /// An append returns only after an `fdatasync` that covers its records (group commit shares one
    /// sync among all concurrent appenders). The default.
    Always,
    /// Appends return once written to the OS; a background thread syncs every `ms` milliseconds.
    /// A process crash loses nothing; a power loss can lose up to `ms` of acknowledged appends.
    Interval {
        /// Milliseconds between two syncs.
        ms: u64,
    },
    /// Appends return once written to the OS; data is synced only when a segment is sealed, on
    /// [`crate::Log::sync`] and on close. For bulk loads and tests.
    Never,
    /// As [`SyncPolicy::Never`] for the log, for an owner that makes appends durable itself with
    /// [`crate::Log::sync`] before it acknowledges them (the Raft log store's group-committing
    /// flusher). Not announced as a risk on open, since the owner holds the promise.
    External,
}

/// How recovery treats damaged bytes when the log is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecoveryMode {
    /// Any damage, even a torn last write, is an error; nothing is truncated.
    Absolute,
    /// A torn tail of the last segment (a short, zero-filled or bad final frame with no valid frame
    /// after it) is truncated and reported; damage anywhere else is an error. The default.
    TolerateTail,
    /// The log is cut just before the first damaged frame wherever it is; everything after it is
    /// dropped and reported. For salvage.
    TolerateAny,
}

/// Options for [`crate::Log::open`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Durability of appends.
    pub sync: SyncPolicy,
    /// A segment is sealed and a new one started once appending a frame would grow it past this
    /// size (a single frame larger than this gets a segment of its own).
    pub segment_bytes_max: u64,
    /// Distance in bytes between two entries of the sparse offset index.
    pub index_interval_bytes: u32,
    /// Treatment of damaged bytes on open.
    pub recovery: RecoveryMode,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            sync: SyncPolicy::Always,
            segment_bytes_max: limits::SEGMENT_BYTES_DEFAULT,
            index_interval_bytes: limits::INDEX_INTERVAL_BYTES_DEFAULT,
            recovery: RecoveryMode::TolerateTail,
        }
    }
}

impl Options {
    /// Checks every field against the limits in [`crate::limits`].
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the first bad field.
    pub fn validate(&self) -> Result<()> {
        if !(limits::SEGMENT_BYTES_MIN..=limits::SEGMENT_BYTES_LIMIT)
            .contains(&self.segment_bytes_max)
        {
            return Err(Error::InvalidArgument(format!(
                "segment_bytes_max {} is outside {}..={}",
                self.segment_bytes_max,
                limits::SEGMENT_BYTES_MIN,
                limits::SEGMENT_BYTES_LIMIT
            )));
        }
        if !(64..=1024 * 1024).contains(&self.index_interval_bytes) {
            return Err(Error::InvalidArgument(format!(
                "index_interval_bytes {} is outside 64..=1048576",
                self.index_interval_bytes
            )));
        }
        if let SyncPolicy::Interval { ms } = self.sync
            && !(1..=60_000).contains(&ms)
        {
            return Err(Error::InvalidArgument(format!(
                "sync interval {ms} ms is outside 1..=60000"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_durable() {
        let options = Options::default();
        options.validate().unwrap();
        assert_eq!(options.sync, SyncPolicy::Always);
        assert_eq!(options.recovery, RecoveryMode::TolerateTail);
    }

    #[test]
    fn out_of_range_fields_are_rejected() {
        let tiny = Options {
            segment_bytes_max: 1024,
            ..Options::default()
        };
        assert!(
            matches!(tiny.validate(), Err(Error::InvalidArgument(m)) if m.contains("segment_bytes_max"))
        );
        let zero = Options {
            sync: SyncPolicy::Interval { ms: 0 },
            ..Options::default()
        };
        assert!(zero.validate().is_err());
        let sparse = Options {
            index_interval_bytes: 1,
            ..Options::default()
        };
        assert!(sparse.validate().is_err());
    }
}
