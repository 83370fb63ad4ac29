//! Compaction of the segment log: records that `live` refuses are removed from sealed segments,
//! survivors keep their bytes and positions, small segments merge, and a crash or failure at any
//! step leaves a log that opens with every live record and every removed one either whole or
//! reported as compacted, removed as a prefix (FORMAT.md §3.1).

use std::collections::BTreeMap;

use tasklog_engine::{Error, Log, NewRecord, Position};

use crate::common::{payload, small_segments};

/// Records of 200 bytes: about 280 to a 64 KiB segment.
const RECORD_BYTES: usize = 200;

/// Appends `count` records, returning each position's payload.
fn write(log: &Log, count: u64) -> BTreeMap<u64, Vec<u8>> {
    let mut out = BTreeMap::new();
    for _ in 0..count {
        let position = log.next_position().get();
        let bytes = payload(1, position, RECORD_BYTES);
        log.append(&[NewRecord::new(3, &bytes)]).unwrap();
        out.insert(position, bytes);
    }
    out
}

/// Every record the log returns from its first position on, in order.
fn scan(log: &Log) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut next = log.bounds().0.get();
    loop {
        let batch = match log.read_range(Position::new(next), 500, usize::MAX) {
            Ok(batch) => batch,
            Err(Error::NotFound { .. }) => break,
            Err(e) => panic!("{e}"),
        };
        let Some(last) = batch.last() else { break };
        next = last.position().get() + 1;
        out.extend(
            batch
                .iter()
                .map(|e| (e.position().get(), e.payload().to_vec())),
        );
    }
    out
}

/// Checks the log against what was written: live records and records at or after `horizon`
/// read back whole; a removed record reads as `Compacted`; the removed ones form a prefix of the
/// dead ones (every dead record before the first dead survivor is removed). Returns how many
/// were removed.
fn check(
    log: &Log,
    written: &BTreeMap<u64, Vec<u8>>,
    live: &dyn Fn(u64) -> bool,
    horizon: u64,
) -> usize {
    let mut removed = 0;
    let mut survivor_seen = false;
    for (&position, bytes) in written {
        match log.read(Position::new(position)) {
            Ok(entry) => {
                assert_eq!(entry.payload(), &bytes[..], "position {position}");
                if !live(position) && position < horizon {
                    survivor_seen = true;
                }
            }
            Err(Error::Compacted { position: p }) => {
                assert_eq!(p, position);
                assert!(!live(position), "live record {position} was removed");
                assert!(
                    position < horizon,
                    "record {position} after the horizon removed"
                );
                assert!(
                    !survivor_seen,
                    "record {position} removed after a dead survivor: not a prefix"
                );
                removed += 1;
            }
            Err(e) => panic!("position {position}: {e}"),
        }
    }
    let expected: Vec<(u64, Vec<u8>)> = written
        .iter()
        .filter(|(p, _)| log.read(Position::new(**p)).is_ok())
        .map(|(p, b)| (*p, b.clone()))
        .collect();
    assert_eq!(
        scan(log),
        expected,
        "read_range skips exactly the removed records"
    );
    let report = log.verify(&mut |_, _| {}).unwrap();
    assert_eq!(report.records, expected.len() as u64);
    removed
}

fn one_in_five(position: u64) -> bool {
    position.is_multiple_of(5)
}

#[test]
fn compaction_keeps_live_records_and_merges_segments() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_segments()).unwrap();
    let written = write(&log, 3_000);
    let segments_before = log.segments().len();
    let horizon = 2_500;
    let (stored_before, reachable_end) = log.compactable(horizon);
    assert!(reachable_end < horizon && reachable_end > 0);
    let report = log.compact(horizon, &one_in_five).unwrap();
    let sealed_before: Vec<_> = log.segments();
    assert!(report.segments_written >= 1, "{report:?}");
    assert!(report.segments_read > report.segments_written, "{report:?}");
    assert!(report.bytes_after * 3 < report.bytes_before, "{report:?}");
    assert!(log.segments().len() < segments_before);
    let removed = check(&log, &written, &one_in_five, horizon);
    assert_eq!(removed as u64, report.records_removed);
    assert_eq!(
        log.compactable(horizon),
        (stored_before - report.records_removed, reachable_end)
    );
    assert!(sealed_before.iter().any(|s| s.compacted));

    // Appends go on, and the log reopens as it was.
    let more = write(&log, 200);
    drop(log);
    let log = Log::open(dir.path(), small_segments()).unwrap();
    assert!(log.recovery_report().rebuilt_indexes.is_empty());
    let mut all = written.clone();
    all.extend(more);
    assert_eq!(check(&log, &all, &one_in_five, horizon), removed);

    // A second pass with fewer live records removes more; a third finds nothing to do.
    let fewer = |p: u64| p.is_multiple_of(10);
    let again = log.compact(horizon, &fewer).unwrap();
    assert!(again.records_removed > 0);
    let idle = log.compact(horizon, &fewer).unwrap();
    assert_eq!(idle.records_removed, 0, "{idle:?}");
    check(&log, &all, &fewer, horizon);

    // Truncation may not cut into compacted records.
    assert!(matches!(
        log.truncate_after(Position::new(100)),
        Err(Error::InvalidArgument(_))
    ));
    log.truncate_after(Position::new(3_100)).unwrap();
    assert_eq!(log.bounds().1.get(), 3_100);
}

#[test]
fn everything_dead_leaves_gap_only_segments_that_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_segments()).unwrap();
    let written = write(&log, 2_000);
    let horizon = log.next_position().get();
    let report = log.compact(horizon, &|_| false).unwrap();
    assert!(report.records_removed > 0);
    let sealed_end = log.segments().iter().rev().nth(1).unwrap().last_position;
    // Reading from the first position skips to the first record still held.
    let first = log.read_range(log.bounds().0, 1, usize::MAX).unwrap();
    assert_eq!(first[0].position().get(), sealed_end + 1);
    drop(log);
    let log = Log::open(dir.path(), small_segments()).unwrap();
    check(&log, &written, &|_| false, horizon);
}

/// Fails the n-th sync of a compaction for every n until one succeeds, then crashes and reopens:
/// whatever step failed, the log opens, live records are whole, removed ones are a prefix.
#[test]
fn a_failure_at_any_step_of_a_compaction_leaves_a_sound_log() {
    let mut n = 0;
    loop {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), small_segments()).unwrap();
        let written = write(&log, 1_500);
        let horizon = 1_200;
        log.faults().fail_sync_after(n);
        let outcome = log.compact(horizon, &one_in_five);
        log.faults().clear();
        log.crash();
        let log = Log::open(dir.path(), small_segments()).unwrap();
        check(&log, &written, &one_in_five, horizon);
        log.verify(&mut |_, _| {}).unwrap();
        if outcome.is_ok() {
            // Compaction survived this many failed syncs in turn; the last run committed all.
            assert!(
                n > 4,
                "compaction of several outputs needs more than {n} syncs"
            );
            break;
        }
        n += 1;
        assert!(n < 200, "compaction never succeeded");
    }
}

/// A crash right after an output's commit leaves the inputs it covers; the next open removes
/// them and rebuilds the missing index.
#[test]
fn leftovers_of_an_interrupted_compaction_are_removed_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_segments()).unwrap();
    let written = write(&log, 1_500);
    let before: Vec<_> = log.segments();
    let horizon = 1_200;
    log.compact(horizon, &one_in_five).unwrap();
    let after: Vec<_> = log.segments();
    drop(log);
    // Put back the inputs of the first output (as if the crash came before their unlink) and
    // take its index away (as if before its rename).
    let first_output = &after[0];
    assert!(first_output.compacted);
    let covered: Vec<_> = before
        .iter()
        .filter(|s| {
            s.first_position > first_output.first_position
                && s.last_position <= first_output.last_position
        })
        .collect();
    assert!(
        !covered.is_empty(),
        "the first output merged several segments"
    );
    for segment in &covered {
        std::fs::write(&segment.path, b"leftover bytes that must never be read").unwrap();
    }
    std::fs::remove_file(first_output.path.with_extension("idx")).unwrap();
    let log = Log::open(dir.path(), small_segments()).unwrap();
    let report = log.recovery_report();
    assert_eq!(report.removed_files.len(), covered.len(), "{report:?}");
    assert_eq!(report.rebuilt_indexes.len(), 1);
    check(&log, &written, &one_in_five, horizon);
    for segment in &covered {
        assert!(!segment.path.exists());
    }
}

#[test]
fn options_sized_segments_are_respected_by_merges() {
    let dir = tempfile::tempdir().unwrap();
    let options = small_segments();
    let log = Log::open(dir.path(), options.clone()).unwrap();
    let written = write(&log, 2_000);
    let horizon = 1_900;
    // Most records live: outputs must be cut to stay near the segment size.
    let most = |p: u64| !p.is_multiple_of(7);
    log.compact(horizon, &most).unwrap();
    let segments = log.segments();
    assert!(segments.iter().filter(|s| s.compacted).count() > 1);
    for segment in segments {
        assert!(segment.bytes <= options.segment_bytes_max, "{segment:?}");
    }
    check(&log, &written, &most, horizon);
}

/// Positions `live` is asked about while planning a pass over every sealed segment: one call per
/// record they hold.
fn planned_calls(log: &Log) -> u64 {
    let segments = log.segments();
    segments[..segments.len() - 1]
        .iter()
        .map(|s| s.records)
        .sum()
}

/// A truncation into the first input of an output while that output is being written: the pass
/// must stop without touching the truncated segment (it used the same temporary file name as the
/// truncation's rewrite, so it went on writing its output into the new active segment).
#[test]
fn a_truncation_during_a_pass_keeps_the_truncated_segment_intact() {
    let dir = tempfile::tempdir().unwrap();
    let log = std::sync::Arc::new(Log::open(dir.path(), small_segments()).unwrap());
    let written = write(&log, 700);
    assert!(log.segments().len() >= 3);
    let planned = planned_calls(&log);
    let keep = 50;
    let calls = std::sync::atomic::AtomicU64::new(0);
    let live = |position: u64| {
        // The first call after planning comes from the rewrite, its temporary file open.
        if calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == planned {
            let log = log.clone();
            std::thread::spawn(move || log.truncate_after(Position::new(keep)))
                .join()
                .unwrap()
                .unwrap();
        }
        one_in_five(position)
    };
    let report = log.compact(log.next_position().get(), &live).unwrap();
    assert!(calls.load(std::sync::atomic::Ordering::SeqCst) > planned);
    assert_eq!(report.segments_written, 0, "{report:?}");
    assert_eq!(log.bounds().1.get(), keep);
    let more = write(&log, 100);
    let expected: Vec<(u64, Vec<u8>)> = written
        .range(..=keep)
        .chain(more.iter())
        .map(|(p, b)| (*p, b.clone()))
        .collect();
    assert_eq!(scan(&log), expected);
    let log = std::sync::Arc::into_inner(log).unwrap();
    drop(log);
    let log = Log::open(dir.path(), small_segments()).unwrap();
    assert_eq!(scan(&log), expected);
    log.verify(&mut |_, _| {}).unwrap();
}

/// `truncate_after` removes the segments after its cut newest first (the active one first), so a
/// crash in between can leave a compacted segment last when the cut lies in an uncompacted
/// segment before it. That is a prefix of the log, and the log must open with it.
#[test]
fn a_compacted_segment_left_last_by_an_interrupted_truncation_opens() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_segments()).unwrap();
    let written = write(&log, 1_500);
    let first_end = log.segments()[0].last_position;
    // Nothing dies in the first segment, so it stays as it is and the cut can go there.
    let live = move |p: u64| p <= first_end || one_in_five(p);
    let horizon = 1_200;
    log.compact(horizon, &live).unwrap();
    let segments = log.segments();
    assert!(!segments[0].compacted && segments[1].compacted);
    assert!(segments.len() > 3, "segments after the compacted one");
    let kept_end = segments[1].last_position;
    log.crash();
    // The image of `truncate_after(first_end - 10)` stopped after it removed the active segment
    // and every sealed one after the first compacted one.
    for segment in &segments[2..] {
        std::fs::remove_file(&segment.path).unwrap();
        let _ = std::fs::remove_file(segment.path.with_extension("idx"));
    }
    let log = Log::open(dir.path(), small_segments()).unwrap();
    assert_eq!(log.bounds().1.get(), kept_end);
    let kept: BTreeMap<u64, Vec<u8>> = written
        .range(..=kept_end)
        .map(|(p, b)| (*p, b.clone()))
        .collect();
    check(&log, &kept, &live, horizon);
    // The log goes on after it, and reopens so.
    let more = write(&log, 100);
    assert_eq!(*more.keys().next().unwrap(), kept_end + 1);
    drop(log);
    let log = Log::open(dir.path(), small_segments()).unwrap();
    let mut all = kept;
    all.extend(more);
    check(&log, &all, &live, horizon);
    // The truncation whose crash was imaged is allowed, and removes the compacted segment.
    log.truncate_after(Position::new(first_end - 10)).unwrap();
    drop(log);
    let log = Log::open(dir.path(), small_segments()).unwrap();
    assert_eq!(log.bounds().1.get(), first_end - 10);
    assert!(log.segments().iter().all(|s| !s.compacted));
}

/// Every other record dead: each survivor is followed by a gap frame, which the planner must
/// count, or merged outputs outgrow `segment_bytes_max` (FORMAT.md §3.1 says they stay within).
#[test]
fn outputs_with_many_gap_frames_stay_within_the_segment_size() {
    let dir = tempfile::tempdir().unwrap();
    let options = small_segments();
    let log = Log::open(dir.path(), options.clone()).unwrap();
    let written = write(&log, 3_000);
    let horizon = 2_900;
    let even = |p: u64| p.is_multiple_of(2);
    log.compact(horizon, &even).unwrap();
    let segments = log.segments();
    assert!(segments.iter().filter(|s| s.compacted).count() > 1);
    for segment in segments {
        assert!(segment.bytes <= options.segment_bytes_max, "{segment:?}");
    }
    check(&log, &written, &even, horizon);
}

/// Found by the `log_model` fuzz target (2026-12-02): a removed record with an empty payload
/// between two survivors becomes a gap frame 8 bytes longer than its own frame, so a segment
/// rewritten alone (nothing to merge it with) can outgrow `segment_bytes_max`; FORMAT.md §3.1
/// promised every output stays within it. The promise now holds for merges and bounds the rest:
/// every dead record is still removed, the output grows by at most 8 bytes per removed empty
/// record, and the log reopens.
#[test]
fn a_segment_rewritten_alone_grows_by_at_most_a_gap_frame_per_empty_record() {
    let dir = tempfile::tempdir().unwrap();
    let options = small_segments();
    let log = Log::open(dir.path(), options.clone()).unwrap();
    // Four large records at even positions, empty ones around them, until the first segment
    // rolls (within one empty frame of segment_bytes_max).
    let mut written = BTreeMap::new();
    while log.segment_count() == 1 {
        let position = log.next_position().get();
        let bytes = if position.is_multiple_of(2) && position < 10 {
            payload(1, position, 15_000)
        } else {
            Vec::new()
        };
        log.append(&[NewRecord::new(3, &bytes)]).unwrap();
        written.insert(position, bytes);
    }
    let before = log.segments()[0].clone();
    let even = |p: u64| p.is_multiple_of(2);
    let horizon = log.next_position().get();
    let report = log.compact(horizon, &even).unwrap();
    let after = log.segments()[0].clone();
    assert!(after.compacted, "{after:?}");
    assert_eq!(
        (after.first_position, after.last_position),
        (before.first_position, before.last_position)
    );
    let dead = (before.first_position..=before.last_position).filter(|p| !even(*p));
    assert_eq!(report.records_removed, dead.clone().count() as u64);
    let removed_empty = dead.filter(|p| written[p].is_empty()).count() as u64;
    // The case at hand: every removed record was empty and alone between survivors.
    assert!(after.bytes > before.bytes, "{before:?} -> {after:?}");
    assert!(
        after.bytes <= before.bytes + 8 * removed_empty,
        "{before:?} -> {after:?}, {removed_empty} empty records removed"
    );
    check(&log, &written, &even, horizon);
    drop(log);
    let log = Log::open(dir.path(), options).unwrap();
    check(&log, &written, &even, horizon);
}
