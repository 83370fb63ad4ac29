//! Many appenders at once: group commit must hand out dense positions, keep every batch's records
//! together and in order, and lose or mix nothing, while readers read concurrently.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tasklog_engine::{Log, NewRecord, Position};

use crate::common::{parse_payload, payload, small_segments};

#[test]
fn concurrent_appenders_get_dense_positions_and_intact_records() {
    const THREADS: u64 = 8;
    const APPENDS: u64 = 300;
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Log::open(dir.path(), small_segments()).unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (log, stop) = (log.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut reads = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let (first, last) = log.bounds();
                if last >= first {
                    for entry in log
                        .read_range(
                            first.max(Position::new(last.get().saturating_sub(50))),
                            64,
                            usize::MAX,
                        )
                        .unwrap()
                    {
                        assert!(
                            parse_payload(entry.payload()).is_some(),
                            "reader saw a damaged record"
                        );
                        reads += 1;
                    }
                }
            }
            reads
        })
    };
    let writers: Vec<_> = (0..THREADS)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                let mut acks = Vec::new();
                let mut seq = 0;
                for i in 0..APPENDS {
                    // Every fifth append is a batch of three records.
                    let count = if i % 5 == 0 { 3 } else { 1 };
                    let payloads: Vec<Vec<u8>> = (0..count)
                        .map(|k| payload(t, seq + k, 16 + ((t * 31 + seq + k) % 900) as usize))
                        .collect();
                    let records: Vec<NewRecord<'_>> = payloads
                        .iter()
                        .map(|p| NewRecord::new(t as u8, p))
                        .collect();
                    let appended = log.append(&records).unwrap();
                    assert_eq!(appended.last.get() - appended.first.get() + 1, count);
                    for k in 0..count {
                        acks.push((seq + k, appended.first.get() + k));
                    }
                    seq += count;
                }
                acks
            })
        })
        .collect();
    let mut by_position = HashMap::new();
    for (t, writer) in writers.into_iter().enumerate() {
        let acks = writer.join().unwrap();
        assert!(
            acks.windows(2).all(|w| w[0].1 < w[1].1),
            "one writer's records keep their order"
        );
        for (seq, position) in acks {
            assert!(
                by_position.insert(position, (t as u64, seq)).is_none(),
                "position {position} given twice"
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    assert!(reader.join().unwrap() > 0);
    let total = by_position.len() as u64;
    assert_eq!(log.bounds(), (Position::new(1), Position::new(total)));
    for position in 1..=total {
        let entry = log.read(Position::new(position)).unwrap();
        assert_eq!(
            parse_payload(entry.payload()),
            Some(by_position[&position]),
            "position {position}"
        );
    }
}
