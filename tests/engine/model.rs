//! Model test: random sequences of append / read / truncate / purge / sync / reopen / crash run
//! against the log and against a plain `Vec` of records.
//!
//! A crash stops the log without a checkpoint and then damages what a crash may damage: bytes of
//! the last segment after the last sync are kept, cut at a random byte, extended with zeros, or
//! the last frame is garbled. After reopening, every synced record must be there byte-exact, the
//! records after it must be a prefix of what was appended (nothing half-written, nothing
//! reordered), and positions must stay dense.
//!
//! Cases: `TASKLOG_PROPTEST_CASES` (default 16, kept small for CI).

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;

use proptest::prelude::*;
use tasklog_engine::{
    Error, Log, NewRecord, Options, Position, RecoveryMode, SyncPolicy, frame, segment,
};

use crate::common::{last_segment, payload};

#[derive(Debug, Clone)]
enum Op {
    Append { count: u8, len: u16, kind: u8 },
    Read { pick: u16 },
    ReadRange { pick: u16, count: u8 },
    Truncate { pick: u16 },
    Purge { pick: u16 },
    Sync,
    Reopen,
    Crash(CrashDamage),
}

#[derive(Debug, Clone)]
enum CrashDamage {
    /// The OS kept everything (a killed process).
    KeepAll,
    /// Unsynced bytes cut at a point (fraction of the unsynced span, /u16::MAX).
    Cut(u16),
    /// Cut, then zeros appended (a preallocated or partially flushed tail).
    CutThenZeros(u16, u16),
    /// One byte of the last frame garbled (a torn sector).
    GarbleLastFrame(u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (1u8..4, 0u16..1500, any::<u8>()).prop_map(|(count, len, kind)| Op::Append { count, len, kind }),
        2 => any::<u16>().prop_map(|pick| Op::Read { pick }),
        2 => (any::<u16>(), 1u8..40).prop_map(|(pick, count)| Op::ReadRange { pick, count }),
        1 => any::<u16>().prop_map(|pick| Op::Truncate { pick }),
        1 => any::<u16>().prop_map(|pick| Op::Purge { pick }),
        1 => Just(Op::Sync),
        1 => Just(Op::Reopen),
        2 => prop_oneof![
            Just(CrashDamage::KeepAll),
            any::<u16>().prop_map(CrashDamage::Cut),
            (any::<u16>(), 0u16..4096).prop_map(|(cut, zeros)| CrashDamage::CutThenZeros(cut, zeros)),
            any::<u16>().prop_map(CrashDamage::GarbleLastFrame),
        ]
        .prop_map(Op::Crash),
    ]
}

/// What the log must hold.
struct Model {
    first: u64,
    records: Vec<(u8, Vec<u8>)>,
    /// Last position guaranteed to survive a crash.
    durable: u64,
    seq: u64,
}

impl Model {
    fn last(&self) -> u64 {
        self.first + self.records.len() as u64 - 1
    }

    fn record(&self, position: u64) -> &(u8, Vec<u8>) {
        &self.records[(position - self.first) as usize]
    }
}

fn options(sync: SyncPolicy, interval: u32) -> Options {
    Options {
        sync,
        segment_bytes_max: 64 * 1024,
        index_interval_bytes: interval,
        recovery: RecoveryMode::TolerateTail,
    }
}

fn check_bounds(log: &Log, model: &Model) {
    assert_eq!(
        log.bounds(),
        (Position::new(model.first), Position::new(model.last()))
    );
}

fn check_all(log: &Log, model: &Model) {
    check_bounds(log, model);
    let mut position = model.first;
    while position <= model.last() {
        for entry in log
            .read_range(Position::new(position), 500, usize::MAX)
            .unwrap()
        {
            assert_eq!(entry.position().get(), position);
            let (kind, bytes) = model.record(position);
            assert_eq!(
                (entry.kind(), entry.payload()),
                (*kind, &bytes[..]),
                "position {position}"
            );
            position += 1;
        }
    }
}

/// Damages the last segment as a crash may: only bytes after the last synced record.
fn damage(dir: &Path, durable: u64, how: &CrashDamage) {
    let path = last_segment(dir);
    let bytes = fs::read(&path).unwrap();
    let mut offset = segment::HEADER_BYTES;
    let mut unsynced_start = bytes.len();
    let mut last_frame = None;
    while let frame::Decoded::Frame(f) = frame::decode(&bytes[offset..]) {
        if f.position > durable && unsynced_start == bytes.len() {
            unsynced_start = offset;
        }
        last_frame = Some((offset, f.len));
        offset += f.len;
    }
    let span = (bytes.len() - unsynced_start) as u64;
    let file = OpenOptions::new().write(true).open(&path).unwrap();
    match *how {
        CrashDamage::KeepAll => {}
        CrashDamage::Cut(at) => file
            .set_len(unsynced_start as u64 + span * u64::from(at) / u64::from(u16::MAX))
            .unwrap(),
        CrashDamage::CutThenZeros(at, zeros) => {
            file.set_len(unsynced_start as u64 + span * u64::from(at) / u64::from(u16::MAX))
                .unwrap();
            drop(file);
            OpenOptions::new()
                .append(true)
                .open(&path)
                .unwrap()
                .write_all(&vec![0u8; zeros as usize])
                .unwrap();
        }
        CrashDamage::GarbleLastFrame(at) => {
            if let Some((start, len)) = last_frame.filter(|(start, _)| *start >= unsynced_start) {
                let victim = start + at as usize % len;
                file.write_all_at(&[bytes[victim] ^ 0x55], victim as u64)
                    .unwrap();
            }
        }
    }
}

fn run(ops: Vec<Op>, always: bool, interval: u32) {
    let dir = tempfile::tempdir().unwrap();
    let sync = if always {
        SyncPolicy::Always
    } else {
        SyncPolicy::Never
    };
    let options = options(sync, interval);
    let mut log = Log::open(dir.path(), options.clone()).unwrap();
    let mut model = Model {
        first: 1,
        records: Vec::new(),
        durable: 0,
        seq: 0,
    };
    for op in ops {
        match op {
            Op::Append { count, len, kind } => {
                let payloads: Vec<Vec<u8>> = (0..count)
                    .map(|i| payload(7, model.seq + u64::from(i), len as usize))
                    .collect();
                model.seq += u64::from(count);
                let records: Vec<NewRecord<'_>> =
                    payloads.iter().map(|p| NewRecord::new(kind, p)).collect();
                let appended = log.append(&records).unwrap();
                assert_eq!(appended.first.get(), model.last() + 1);
                model
                    .records
                    .extend(payloads.into_iter().map(|p| (kind, p)));
                if always {
                    model.durable = model.last();
                }
            }
            Op::Read { pick } => {
                if model.records.is_empty() {
                    assert!(matches!(
                        log.read(Position::new(model.first)),
                        Err(Error::NotFound { .. })
                    ));
                } else {
                    let position = model.first + u64::from(pick) % model.records.len() as u64;
                    let entry = log.read(Position::new(position)).unwrap();
                    assert_eq!(
                        (entry.kind(), entry.payload()),
                        (model.record(position).0, &model.record(position).1[..])
                    );
                }
                assert!(matches!(
                    log.read(Position::new(model.last() + 1)),
                    Err(Error::NotFound { .. })
                ));
            }
            Op::ReadRange { pick, count } => {
                if !model.records.is_empty() {
                    let from = model.first + u64::from(pick) % model.records.len() as u64;
                    let entries = log
                        .read_range(Position::new(from), count as usize, usize::MAX)
                        .unwrap();
                    assert_eq!(
                        entries.len() as u64,
                        u64::from(count).min(model.last() - from + 1)
                    );
                    for entry in entries {
                        assert_eq!(entry.payload(), &model.record(entry.position().get()).1[..]);
                    }
                }
            }
            Op::Truncate { pick } => {
                let keep = model.first - 1 + u64::from(pick) % (model.records.len() as u64 + 1);
                log.truncate_after(Position::new(keep)).unwrap();
                model.records.truncate((keep + 1 - model.first) as usize);
                model.durable = model.durable.min(keep);
            }
            Op::Purge { pick } => {
                let before = u64::from(pick) % (model.records.len() as u64 + 2) + model.first;
                log.purge_before(Position::new(before)).unwrap();
                let first = log.bounds().0.get();
                assert!(
                    first >= model.first && first <= before.max(model.first),
                    "purge to {before} left {first}"
                );
                model.records.drain(..(first - model.first) as usize);
                model.first = first;
            }
            Op::Sync => {
                log.sync().unwrap();
                model.durable = model.last();
            }
            Op::Reopen => {
                log.close().unwrap();
                model.durable = model.last();
                log = Log::open(dir.path(), options.clone()).unwrap();
                assert!(log.recovery_report().truncations.is_empty());
                check_all(&log, &model);
            }
            Op::Crash(how) => {
                log.crash();
                damage(dir.path(), model.durable, &how);
                log = Log::open(dir.path(), options.clone()).unwrap();
                let (first, last) = log.bounds();
                assert_eq!(first.get(), model.first);
                assert!(
                    last.get() >= model.durable.max(model.first - 1),
                    "lost synced records: last {last}, durable {}",
                    model.durable
                );
                assert!(last.get() <= model.last(), "records appeared from nowhere");
                model
                    .records
                    .truncate((last.get() + 1 - model.first) as usize);
                check_all(&log, &model);
            }
        }
        check_bounds(&log, &model);
    }
    check_all(&log, &model);
}

fn cases() -> u32 {
    std::env::var("TASKLOG_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn log_matches_model_through_crashes(
        ops in prop::collection::vec(op(), 1..80),
        always in prop::bool::weighted(0.3),
        interval in prop_oneof![Just(64u32), Just(512), Just(4096)],
    ) {
        run(ops, always, interval);
    }
}
