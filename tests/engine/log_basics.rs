//! Append, read, roll, truncate, purge and reopen on real files.

use tasklog_engine::{Error, ErrorKind, Log, NewRecord, Options, Position, limits};

use crate::common::{all_payloads, fill, payload, segments, small_segments};

#[test]
fn appended_records_read_back_exactly_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_segments()).unwrap();
    let batch = [
        NewRecord {
            term: 3,
            kind: 9,
            payload: b"first",
        },
        NewRecord::new(1, b""),
        NewRecord::new(2, &[0xAB; 1000]),
    ];
    let appended = log.append(&batch).unwrap();
    assert_eq!((appended.first.get(), appended.last.get()), (1, 3));
    let entry = log.read(Position::new(1)).unwrap();
    assert_eq!(
        (entry.term(), entry.kind(), entry.payload()),
        (3, 9, &b"first"[..])
    );
    assert_eq!(log.read(Position::new(2)).unwrap().payload(), b"");
    log.close().unwrap();

    let log = Log::open(dir.path(), small_segments()).unwrap();
    assert_eq!(log.bounds(), (Position::new(1), Position::new(3)));
    assert_eq!(log.next_position(), Position::new(4));
    let entry = log.read(Position::new(3)).unwrap();
    assert_eq!((entry.kind(), entry.payload()), (2, &[0xAB; 1000][..]));
    assert_eq!(
        entry.payload().as_ptr() as usize % 8,
        0,
        "payloads are 8-byte aligned"
    );
}

#[test]
fn segments_roll_and_reads_cross_them() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_segments()).unwrap();
    let written = fill(&log, 700, 300);
    assert!(
        log.segment_count() >= 3,
        "700 × 336 B frames in 64 KiB segments must roll: {}",
        log.segment_count()
    );
    assert_eq!(all_payloads(&log), written);
    // Sealed segments are read through their mapped index: every position, in any order.
    for position in (1..=700u64).rev().step_by(13) {
        assert_eq!(
            log.read(Position::new(position)).unwrap().payload(),
            &written[position as usize - 1][..]
        );
    }
    let range = log.read_range(Position::new(150), 400, usize::MAX).unwrap();
    assert_eq!(range.len(), 400);
    assert_eq!(range[399].position(), Position::new(549));
    let capped = log.read_range(Position::new(10), 400, 1000).unwrap();
    assert_eq!(
        capped.len(),
        4,
        "stops once 1000 payload bytes are gathered"
    );
    log.close().unwrap();
    let reopened = Log::open(dir.path(), small_segments()).unwrap();
    assert!(
        reopened.recovery_report().scanned_bytes == 0,
        "a clean close needs no scan: {:?}",
        reopened.recovery_report()
    );
    assert_eq!(all_payloads(&reopened), written);
}

#[test]
fn truncate_after_cuts_inside_active_and_sealed_segments() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_segments()).unwrap();
    let mut written = fill(&log, 600, 300);
    // Inside the active segment.
    log.truncate_after(Position::new(590)).unwrap();
    written.truncate(590);
    assert_eq!(log.bounds().1, Position::new(590));
    assert_eq!(all_payloads(&log), written);
    // Inside a sealed segment: it is rewritten and becomes the active one.
    let before = segments(dir.path()).len();
    log.truncate_after(Position::new(100)).unwrap();
    written.truncate(100);
    assert!(segments(dir.path()).len() < before);
    assert_eq!(all_payloads(&log), written);
    assert!(matches!(
        log.read(Position::new(101)),
        Err(Error::NotFound {
            position: 101,
            last: 100,
            ..
        })
    ));
    // Appends continue at the next position, and the result survives reopen.
    written.extend(fill(&log, 300, 300));
    assert_eq!(log.bounds().1, Position::new(400));
    log.close().unwrap();
    let log = Log::open(dir.path(), small_segments()).unwrap();
    assert_eq!(all_payloads(&log), written);
    // At a segment boundary and to nothing at all.
    log.truncate_after(Position::new(0)).unwrap();
    assert_eq!(log.bounds(), (Position::new(1), Position::new(0)));
    assert_eq!(
        log.append(&[NewRecord::new(0, b"again")]).unwrap().first,
        Position::new(1)
    );
    // Past the end does nothing.
    log.truncate_after(Position::new(99)).unwrap();
    assert_eq!(log.bounds().1, Position::new(1));
}

#[test]
fn truncate_after_leaves_the_log_reopenable_at_every_cut() {
    for cut in [1u64, 63, 64, 65, 190, 197, 198, 199, 250] {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), small_segments()).unwrap();
        let mut written = fill(&log, 260, 300);
        log.truncate_after(Position::new(cut)).unwrap();
        written.truncate(cut as usize);
        drop(log);
        let log = Log::open(dir.path(), small_segments()).unwrap();
        assert_eq!(all_payloads(&log), written, "cut {cut}");
        assert!(
            log.recovery_report().truncations.is_empty(),
            "cut {cut}: {:?}",
            log.recovery_report()
        );
    }
}

#[test]
fn purge_before_drops_only_whole_older_segments() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small_segments()).unwrap();
    let written = fill(&log, 800, 300);
    let count = log.segment_count();
    log.purge_before(Position::new(400)).unwrap();
    let (first, last) = log.bounds();
    assert!(
        first.get() > 1 && first.get() <= 400,
        "first after purge: {first}"
    );
    assert_eq!(last, Position::new(800));
    assert!(log.segment_count() < count);
    assert!(matches!(
        log.read(Position::new(1)),
        Err(Error::NotFound { .. })
    ));
    assert_eq!(
        all_payloads(&log),
        written[first.get() as usize - 1..].to_vec()
    );
    // Purging past the end keeps the active segment.
    log.purge_before(Position::new(10_000)).unwrap();
    assert_eq!(log.segment_count(), 1);
    assert_eq!(log.bounds().1, Position::new(800));
    drop(log);
    let log = Log::open(dir.path(), small_segments()).unwrap();
    assert_eq!(log.segment_count(), 1);
    assert_eq!(log.bounds().1, Position::new(800));
    assert_eq!(
        log.read(Position::new(800)).unwrap().payload(),
        &written[799][..]
    );
}

#[test]
fn bad_requests_are_rejected_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), Options::default()).unwrap();
    fill(&log, 3, 10);
    let too_big = vec![0u8; limits::PAYLOAD_BYTES_MAX as usize + 1];
    let error = log
        .append(&[NewRecord::new(0, b"ok"), NewRecord::new(0, &too_big)])
        .unwrap_err();
    assert!(matches!(error, Error::TooLarge { .. }));
    assert_eq!(error.kind(), ErrorKind::Rejected);
    assert!(matches!(log.append(&[]), Err(Error::InvalidArgument(_))));
    assert!(matches!(
        log.append_at(Position::new(7), &[NewRecord::new(0, b"x")]),
        Err(Error::PositionMismatch {
            requested: 7,
            next: 4
        })
    ));
    assert_eq!(
        log.append_at(Position::new(4), &[NewRecord::new(0, b"x")])
            .unwrap()
            .first,
        Position::new(4)
    );
    assert!(matches!(
        log.read(Position::new(0)),
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        log.read(Position::new(5)),
        Err(Error::NotFound {
            first: 1,
            last: 4,
            ..
        })
    ));
    assert_eq!(log.bounds(), (Position::new(1), Position::new(4)));
}

#[test]
fn a_second_open_of_one_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), Options::default()).unwrap();
    assert!(matches!(
        Log::open(dir.path(), Options::default()),
        Err(Error::Locked { .. })
    ));
    drop(log);
    Log::open(dir.path(), Options::default()).unwrap();
}

#[test]
fn interval_sync_makes_appends_durable_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        sync: tasklog_engine::SyncPolicy::Interval { ms: 5 },
        ..Options::default()
    };
    let log = Log::open(dir.path(), options).unwrap();
    let bytes = payload(1, 1, 50);
    let appended = log.append(&[NewRecord::new(0, &bytes)]).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while log.durable_position() < appended.last {
        assert!(
            std::time::Instant::now() < deadline,
            "the flusher never synced"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    log.close().unwrap();
}
