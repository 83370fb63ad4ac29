//! A failed write or fsync poisons the log: no write is retried or accepted until reopen, because
//! the page cache state is unknown (fsyncgate). Reads keep working.

use tasklog_engine::{Error, ErrorKind, Log, NewRecord, Options, Position};

use crate::common::{all_payloads, fill, payload};

#[test]
fn a_failed_fsync_poisons_until_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), Options::default()).unwrap();
    let written = fill(&log, 5, 50);
    log.faults().fail_sync_after(0);
    let error = log
        .append(&[NewRecord::new(0, &payload(0, 6, 50))])
        .unwrap_err();
    assert!(
        matches!(error, Error::Poisoned { ref cause } if cause.contains("injected fsync failure")),
        "{error}"
    );
    assert_eq!(error.kind(), ErrorKind::Fatal);
    log.faults().clear();
    // No retry: still refused although the disk would work now.
    assert!(matches!(
        log.append(&[NewRecord::new(0, b"later")]),
        Err(Error::Poisoned { .. })
    ));
    assert!(matches!(
        log.truncate_after(Position::new(1)),
        Err(Error::Poisoned { .. })
    ));
    assert_eq!(
        log.read(Position::new(5)).unwrap().payload(),
        &written[4][..]
    );
    assert_eq!(log.durable_position(), Position::new(5));
    drop(log);
    let log = Log::open(dir.path(), Options::default()).unwrap();
    let recovered = all_payloads(&log);
    assert_eq!(
        recovered[..5],
        written[..],
        "every acknowledged record survives"
    );
    assert!(recovered.len() <= 6);
    log.append(&[NewRecord::new(0, b"works again")]).unwrap();
}

#[test]
fn a_failed_write_poisons_every_waiting_appender() {
    let dir = tempfile::tempdir().unwrap();
    let log = std::sync::Arc::new(Log::open(dir.path(), Options::default()).unwrap());
    fill(&log, 3, 50);
    log.faults().fail_write_after(0);
    let handles: Vec<_> = (0..8)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || log.append(&[NewRecord::new(0, &payload(t, 0, 64))]))
        })
        .collect();
    for handle in handles {
        assert!(matches!(
            handle.join().unwrap(),
            Err(Error::Poisoned { .. })
        ));
    }
    assert_eq!(log.durable_position(), Position::new(3));
}
