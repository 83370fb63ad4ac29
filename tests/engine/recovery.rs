//! Recovery on open: torn tails are cut and reported, corruption is an error naming the file and
//! offset (or cut under `TolerateAny`), indexes are rebuilt, checkpoints skip the scan.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;

use tasklog_engine::{Error, Log, Options, Position, RecoveryMode, frame};

use crate::common::{all_payloads, fill, last_segment, segments, small_segments, with_mode};

/// Writes `count` records of `len` bytes and stops as a killed process would (no checkpoint).
fn crashed_log(count: u64, len: usize) -> (tempfile::TempDir, Vec<Vec<u8>>) {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_segments()).unwrap();
    let written = fill(&log, count, len);
    log.crash();
    (dir, written)
}

/// Byte offset of the frame holding `position` in the last segment.
fn frame_offset(path: &std::path::Path, position: u64) -> u64 {
    let bytes = fs::read(path).unwrap();
    let mut offset = tasklog_engine::segment::HEADER_BYTES;
    loop {
        match frame::decode(&bytes[offset..]) {
            frame::Decoded::Frame(f) if f.position == position => return offset as u64,
            frame::Decoded::Frame(f) => offset += f.len,
            other => panic!("no frame for {position}: {other:?}"),
        }
    }
}

#[test]
fn a_torn_last_frame_is_cut_at_every_byte() {
    let (dir, written) = crashed_log(40, 200);
    let path = last_segment(dir.path());
    let original = fs::read(&path).unwrap();
    let start = frame_offset(&path, 40) as usize;
    for cut in start..original.len() {
        fs::write(&path, &original[..cut]).unwrap();
        let log = Log::open(dir.path(), small_segments()).unwrap();
        let report = log.recovery_report().clone();
        assert_eq!(all_payloads(&log), written[..39].to_vec(), "cut at {cut}");
        if cut > start {
            assert_eq!(report.truncations.len(), 1, "cut at {cut}: {report:?}");
            assert!(report.truncations[0].torn_tail);
            assert_eq!(report.truncations[0].offset, start as u64);
        }
        log.crash();
    }
}

#[test]
fn zero_filled_and_garbage_tails_are_torn_tails() {
    for tail in [
        vec![0u8; 4096],
        vec![0xFFu8; 100],
        b"not a frame at all, just words".to_vec(),
    ] {
        let (dir, written) = crashed_log(30, 100);
        let path = last_segment(dir.path());
        let len = fs::metadata(&path).unwrap().len();
        OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(&tail)
            .unwrap();
        let log = Log::open(dir.path(), small_segments()).unwrap();
        assert_eq!(all_payloads(&log), written);
        let truncation = &log.recovery_report().truncations[0];
        assert!(truncation.torn_tail);
        assert_eq!(
            (truncation.offset, truncation.dropped_bytes),
            (len, tail.len() as u64)
        );
        assert_eq!(
            fs::metadata(&path).unwrap().len(),
            len,
            "the tail is gone from the file"
        );
    }
}

#[test]
fn damage_before_valid_frames_is_corruption_unless_tolerate_any() {
    let (dir, written) = crashed_log(30, 100);
    let path = last_segment(dir.path());
    let offset = frame_offset(&path, 10);
    let file = OpenOptions::new().write(true).open(&path).unwrap();
    file.write_all_at(&[0x5A], offset + 40).unwrap();
    drop(file);
    for mode in [RecoveryMode::Absolute, RecoveryMode::TolerateTail] {
        match Log::open(dir.path(), with_mode(small_segments(), mode)) {
            Err(Error::Corrupt {
                segment,
                offset: at,
                reason,
            }) => {
                assert_eq!(segment, path);
                assert_eq!(at, offset);
                assert_eq!(reason, "crc mismatch");
            }
            other => panic!("{mode:?}: expected corruption, got {:?}", other.map(|_| ())),
        }
    }
    let log = Log::open(
        dir.path(),
        with_mode(small_segments(), RecoveryMode::TolerateAny),
    )
    .unwrap();
    assert_eq!(all_payloads(&log), written[..9].to_vec());
    assert!(!log.recovery_report().truncations[0].torn_tail);
}

#[test]
fn absolute_mode_refuses_even_a_torn_tail() {
    let (dir, _) = crashed_log(5, 100);
    let path = last_segment(dir.path());
    let len = fs::metadata(&path).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len - 3)
        .unwrap();
    let error = Log::open(
        dir.path(),
        with_mode(small_segments(), RecoveryMode::Absolute),
    )
    .err()
    .unwrap();
    assert!(
        matches!(error, Error::Corrupt { reason, .. } if reason.contains("torn tail")),
        "{error}"
    );
    assert_eq!(
        fs::metadata(&path).unwrap().len(),
        len - 3,
        "absolute mode changes nothing"
    );
}

#[test]
fn missing_or_damaged_indexes_are_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_segments()).unwrap();
    let written = fill(&log, 700, 300);
    log.close().unwrap();
    let first_index = segments(dir.path())[0].with_extension("idx");
    let second_index = segments(dir.path())[1].with_extension("idx");
    fs::remove_file(&first_index).unwrap();
    let mut damaged = fs::read(&second_index).unwrap();
    let last = damaged.len() - 1;
    damaged[last] ^= 0xFF;
    fs::write(&second_index, damaged).unwrap();
    let log = Log::open(dir.path(), small_segments()).unwrap();
    let rebuilt = &log.recovery_report().rebuilt_indexes;
    assert!(
        rebuilt.contains(&first_index) && rebuilt.contains(&second_index),
        "{rebuilt:?}"
    );
    assert_eq!(all_payloads(&log), written);
    assert!(first_index.exists());
}

#[test]
fn damage_in_a_sealed_segment_is_found_on_read_or_on_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_segments()).unwrap();
    fill(&log, 700, 300);
    log.close().unwrap();
    let sealed = segments(dir.path())[0].clone();
    // Byte offset of the sixth frame: the header, then five frames of 300 B payload.
    const SIXTH: u64 = 64 + 5 * frame::frame_len(300) as u64;
    let file = OpenOptions::new().write(true).open(&sealed).unwrap();
    file.write_all_at(&[0xEE], SIXTH + 40).unwrap();
    drop(file);
    // With its index the segment is trusted at open; the CRC check on read finds the damage.
    let log = Log::open(dir.path(), small_segments()).unwrap();
    assert!(
        matches!(log.read(Position::new(6)), Err(Error::Corrupt { ref segment, offset, .. }) if *segment == sealed && offset == SIXTH)
    );
    assert_eq!(
        log.read(Position::new(5)).unwrap().position(),
        Position::new(5)
    );
    drop(log);
    // Without it the segment is scanned, and damage in a sealed segment is corruption.
    fs::remove_file(sealed.with_extension("idx")).unwrap();
    let error = Log::open(dir.path(), small_segments()).err().unwrap();
    assert!(
        matches!(error, Error::Corrupt { ref segment, offset, .. } if *segment == sealed && offset == SIXTH),
        "{error}"
    );
    // TolerateAny salvages what comes before.
    let log = Log::open(
        dir.path(),
        with_mode(small_segments(), RecoveryMode::TolerateAny),
    )
    .unwrap();
    assert_eq!(log.bounds().1, Position::new(5));
    assert_eq!(log.segment_count(), 1);
}

#[test]
fn a_damaged_segment_header_is_an_error_naming_it() {
    let (dir, _) = crashed_log(5, 10);
    let path = last_segment(dir.path());
    let file = OpenOptions::new().write(true).open(&path).unwrap();
    file.write_all_at(b"X", 1).unwrap();
    drop(file);
    let error = Log::open(dir.path(), small_segments()).err().unwrap();
    assert!(
        matches!(error, Error::Corrupt { ref segment, offset: 0, .. } if *segment == path),
        "{error}"
    );
}

#[test]
fn leftover_temporary_files_are_removed() {
    let (dir, written) = crashed_log(5, 10);
    fs::write(dir.path().join("00000000000000000099.seg.tmp"), b"half").unwrap();
    let log = Log::open(dir.path(), Options::default()).unwrap();
    assert_eq!(log.recovery_report().removed_files.len(), 1);
    assert_eq!(all_payloads(&log), written);
    assert!(!dir.path().join("00000000000000000099.seg.tmp").exists());
}

#[test]
fn a_clean_close_checkpoints_and_a_crash_scans_only_the_tail() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_segments()).unwrap();
    fill(&log, 150, 300);
    log.close().unwrap();
    let log = Log::open(dir.path(), small_segments()).unwrap();
    assert_eq!(log.recovery_report().scanned_bytes, 0);
    fill(&log, 10, 300);
    log.crash();
    let log = Log::open(dir.path(), small_segments()).unwrap();
    let report = log.recovery_report();
    assert_eq!(
        report.scanned_bytes,
        10 * frame::frame_len(300) as u64,
        "only frames after the checkpoint are scanned: {report:?}"
    );
    assert_eq!(log.bounds().1, Position::new(160));
}

#[test]
fn verify_checks_every_frame_and_every_index_entry() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_segments()).unwrap();
    fill(&log, 700, 300);
    let mut calls = 0;
    let report = log
        .verify(&mut |done, total| {
            calls += 1;
            assert!(done <= total);
        })
        .unwrap();
    assert_eq!(report.records, 700);
    assert_eq!(report.segments.len(), log.segment_count());
    assert_eq!(calls, report.segments.len());
    assert!(
        report
            .segments
            .iter()
            .rev()
            .skip(1)
            .all(|s| s.sealed && s.index_entries > 1)
    );
    log.close().unwrap();

    // A damaged frame inside a sealed segment that open trusts (its index is valid).
    let sealed = segments(dir.path())[1].clone();
    let original = fs::read(&sealed).unwrap();
    let mut damaged = original.clone();
    damaged[64 + 3 * frame::frame_len(300) + 50] ^= 0x40;
    fs::write(&sealed, &damaged).unwrap();
    let log = Log::open(dir.path(), small_segments()).unwrap();
    let error = log.verify(&mut |_, _| {}).unwrap_err();
    assert!(
        matches!(error, Error::Corrupt { ref segment, offset, .. } if *segment == sealed && offset == 64 + 3 * frame::frame_len(300) as u64),
        "{error}"
    );
    drop(log);
    fs::write(&sealed, &original).unwrap();

    // An index entry that passes the index file's own checks but points into the middle of a frame.
    let index_path = sealed.with_extension("idx");
    let bytes = fs::read(&index_path).unwrap();
    let summary = tasklog_engine::index::validate(
        &bytes,
        u64::from_le_bytes(bytes[16..24].try_into().unwrap()),
    )
    .unwrap();
    let view = tasklog_engine::index::EntryBytes(&bytes[64..]);
    use tasklog_engine::index::Entries;
    let mut entries: Vec<_> = (0..view.count()).map(|i| view.entry(i)).collect();
    entries[1].offset += 8;
    fs::write(
        &index_path,
        tasklog_engine::index::encode(&summary, &entries),
    )
    .unwrap();
    let log = Log::open(dir.path(), small_segments()).unwrap();
    let error = log.verify(&mut |_, _| {}).unwrap_err();
    assert!(
        matches!(error, Error::Corrupt { reason, .. } if reason.contains("offset-index entry")),
        "{error}"
    );
}
