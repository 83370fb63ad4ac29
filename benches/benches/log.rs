//! Criterion micro-benchmarks of the segment log (DESIGN.md §6, E1–E3), 300-byte payloads:
//!
//! - `raw_write_fdatasync`: the E1 baseline, `pwrite` at the end of a plain file + `fdatasync`;
//! - `append/1_writer`, `append/64_writers`: durable appends (`SyncPolicy::Always`);
//! - `bulk_append_one_sync`: `SyncPolicy::Never`, 1,000-record appends, one `sync()` at the end;
//! - `read_sealed`: random single-record reads, mostly from sealed (memory-mapped) segments.
//!
//! Sample counts and times are bounded so the file runs in about two minutes on two cores:
//! `cargo bench -p tasklog-benches --bench log` (add `-- --quick` for a faster, rougher pass).
//! All files live under the target directory, on the same filesystem for raw and engine runs.

use std::hint::black_box;
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use tasklog_benches::{RawAppender, XorShift64, payload};
use tasklog_engine::{Log, NewRecord, Options, Position, SyncPolicy};
use tempfile::TempDir;

/// Record kind used for every appended record (opaque to the log).
const KIND: u8 = 1;
/// Concurrent appenders of `append/64_writers`.
const WRITERS: u64 = 64;
/// Records per `append` call in the bulk and fill loops.
const BATCH: usize = 1_000;
/// Records per iteration of `bulk_append_one_sync` (E3 is about at least a million events: ~336 MB
/// of frames, so the 64 MiB segments roll and seal as they would in a real bulk load).
const BULK_RECORDS: usize = 1_000_000;
/// Records in the log that `read_sealed` reads from.
const READ_RECORDS: usize = 100_000;
/// Segment size for `read_sealed`: ~30 segments, so ~97 % of the records are in sealed ones.
const READ_SEGMENT_BYTES: u64 = 1024 * 1024;

/// A fresh directory under `target/tmp`, on the repository's filesystem.
fn scratch() -> TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("create a temp dir under target/tmp")
}

fn options(sync: SyncPolicy) -> Options {
    Options {
        sync,
        ..Options::default()
    }
}

fn raw_write_fdatasync(c: &mut Criterion) {
    let dir = scratch();
    let bytes = payload(1);
    let mut raw = RawAppender::create(&dir.path().join("raw.dat")).expect("create raw file");
    let mut group = c.benchmark_group("raw_write_fdatasync");
    group.throughput(Throughput::Elements(1));
    group.bench_function("1_writer", |b| {
        b.iter(|| raw.append(black_box(&bytes)).expect("raw append"));
    });
    group.finish();
}

fn append(c: &mut Criterion) {
    let bytes = payload(2);
    let mut group = c.benchmark_group("append");
    group.throughput(Throughput::Elements(1));

    let dir = scratch();
    let log = Log::open(dir.path(), options(SyncPolicy::Always)).expect("open log");
    group.bench_function("1_writer", |b| {
        b.iter(|| {
            log.append(&[NewRecord::new(KIND, black_box(&bytes))])
                .expect("append")
        });
    });
    log.close().expect("close log");

    let dir = scratch();
    let log = Log::open(dir.path(), options(SyncPolicy::Always)).expect("open log");
    group.bench_function("64_writers", |b| {
        // `iters` events spread over the writers; time runs from the barrier to the last join.
        b.iter_custom(|iters| {
            let barrier = Barrier::new(WRITERS as usize + 1);
            let start = thread::scope(|scope| {
                for writer in 0..WRITERS {
                    let count = iters / WRITERS + u64::from(writer < iters % WRITERS);
                    let (log, bytes, barrier) = (&log, &bytes, &barrier);
                    scope.spawn(move || {
                        barrier.wait();
                        for _ in 0..count {
                            log.append(&[NewRecord::new(KIND, bytes)]).expect("append");
                        }
                    });
                }
                barrier.wait();
                Instant::now()
            });
            start.elapsed()
        });
    });
    log.close().expect("close log");
    group.finish();
}

fn bulk_append_one_sync(c: &mut Criterion) {
    let bytes = payload(3);
    let batch = vec![NewRecord::new(KIND, &bytes); BATCH];
    let mut group = c.benchmark_group("bulk_append_one_sync");
    group.throughput(Throughput::Elements(BULK_RECORDS as u64));
    group.sampling_mode(SamplingMode::Flat);
    group.measurement_time(Duration::from_secs(10));
    group.bench_function("1m_records", |b| {
        // A fresh log per iteration keeps the disk footprint bounded; open and close are untimed.
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let dir = scratch();
                let log = Log::open(dir.path(), options(SyncPolicy::Never)).expect("open log");
                let start = Instant::now();
                for _ in 0..BULK_RECORDS / BATCH {
                    log.append(&batch).expect("append");
                }
                log.sync().expect("sync");
                total += start.elapsed();
                log.close().expect("close log");
            }
            total
        });
    });
    group.finish();
}

fn read_sealed(c: &mut Criterion) {
    let bytes = payload(4);
    let batch = vec![NewRecord::new(KIND, &bytes); BATCH];
    let dir = scratch();
    let log = Log::open(
        dir.path(),
        Options {
            sync: SyncPolicy::Never,
            segment_bytes_max: READ_SEGMENT_BYTES,
            ..Options::default()
        },
    )
    .expect("open log");
    for _ in 0..READ_RECORDS / BATCH {
        log.append(&batch).expect("fill");
    }
    log.sync().expect("sync");
    let (first, last) = log.bounds();
    let span = last.get() - first.get() + 1;
    let mut rng = XorShift64::new(4);

    let mut group = c.benchmark_group("read_sealed");
    group.throughput(Throughput::Elements(1));
    println!(
        "read_sealed: {span} records in {} segments ({} sealed)",
        log.segment_count(),
        log.segment_count() - 1
    );
    group.bench_function("random", |b| {
        b.iter(|| {
            let position = Position::new(first.get() + rng.below(span));
            let entry = log.read(position).expect("read");
            black_box(entry.payload().len())
        });
    });
    group.finish();
    log.close().expect("close log");
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
}

criterion_group! {
    name = benches;
    config = config();
    targets = raw_write_fdatasync, append, bulk_append_one_sync, read_sealed
}
criterion_main!(benches);
