//! Helpers shared by the engine tests.

use std::cmp::Reverse;
use std::fs;
use std::path::{Path, PathBuf};

use tasklog_engine::id::CompactId;
use tasklog_engine::model::{TaskState, Timestamp};
use tasklog_engine::{ListQuery, Log, NewRecord, Options, Position, RecoveryMode, TaskStore};

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

/// Checks every `list` filter the task indexes serve (none, each context, each state, both, with
/// and without a status time) against a plain filter and sort of `tasks` (id, context, state),
/// paging 3 at a time: each page, each `total_size`, and that paging returns every match once,
/// in order. Status times come from the store's own summaries; then the table checks its own
/// indexes.
pub(crate) fn check_listing(store: &TaskStore, tasks: &[(String, String, TaskState)]) {
    store.check_indexes().unwrap();
    let timed: Vec<(&str, &str, TaskState, Timestamp)> = tasks
        .iter()
        .map(|(id, context, state)| {
            let summary = store.summary(id).unwrap();
            assert_eq!(
                (summary.state, summary.context_id.to_string().as_str()),
                (*state, context.as_str()),
                "task {id}"
            );
            (
                id.as_str(),
                context.as_str(),
                *state,
                summary.status_timestamp,
            )
        })
        .collect();
    assert_eq!(store.len(), tasks.len());
    let mut contexts: Vec<Option<&str>> = vec![None, Some("no-such-context")];
    for (_, context, ..) in &timed {
        if !contexts.contains(&Some(context)) && contexts.len() < 7 {
            contexts.push(Some(context));
        }
    }
    let mut times: Vec<Timestamp> = timed.iter().map(|t| t.3).collect();
    times.sort();
    let middle = times.get(times.len() / 2).copied();
    let states = [
        None,
        Some(TaskState::Submitted),
        Some(TaskState::Working),
        Some(TaskState::Completed),
        Some(TaskState::Canceled),
        Some(TaskState::InputRequired),
    ];
    for context in &contexts {
        for state in states {
            for after in [None, middle] {
                let mut expected: Vec<(Reverse<Timestamp>, CompactId)> = timed
                    .iter()
                    .filter(|(_, c, s, t)| {
                        context.is_none_or(|w| w == *c)
                            && state.is_none_or(|w| w == *s)
                            && after.is_none_or(|w| *t >= w)
                    })
                    .map(|(id, _, _, time)| (Reverse(*time), CompactId::new(id)))
                    .collect();
                expected.sort();
                let expected: Vec<String> = expected.iter().map(|k| k.1.to_string()).collect();
                let mut listed = Vec::new();
                let mut token = None;
                for _ in 0..=expected.len() / 3 + 1 {
                    let page = store
                        .list(&ListQuery {
                            context_id: context.map(str::to_string),
                            state,
                            status_timestamp_after: after,
                            page_size: Some(3),
                            page_token: token.take(),
                            history_length: Some(0),
                            include_artifacts: false,
                        })
                        .unwrap();
                    assert_eq!(
                        page.total_size as usize,
                        expected.len(),
                        "total_size of context {context:?}, state {state:?}, after {after:?}"
                    );
                    listed.extend(page.tasks.iter().map(|t| t.id.clone()));
                    if page.next_page_token.is_empty() {
                        break;
                    }
                    token = Some(page.next_page_token);
                }
                assert_eq!(
                    listed, expected,
                    "pages of context {context:?}, state {state:?}, after {after:?}"
                );
            }
        }
    }
}
