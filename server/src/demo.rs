//! `tasklog demo`: write N events into a data directory with W concurrent writers, close, reopen,
//! read everything back (every frame CRC-checked) and print what was found and how fast.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tasklog_engine::{Log, NewRecord, Options, Position};

/// Record kind of demo events: not a task event batch (kind 1), so the task store ignores them
/// and `tasklog inspect` / `verify` check them as plain frames.
pub const DEMO_KIND: u8 = 0xD0;

/// What `tasklog demo` should do.
#[derive(Debug, Clone)]
pub struct DemoArgs {
    /// Data directory (created if missing; appended to if it holds a log already).
    pub data_dir: PathBuf,
    /// Events to write.
    pub events: u64,
    /// Concurrent writer threads.
    pub writers: u64,
    /// Payload bytes per event.
    pub payload_bytes: usize,
}

/// What the demo measured.
#[derive(Debug, Clone)]
pub struct DemoReport {
    /// Events written by this run.
    pub written: u64,
    /// Time the writes took.
    pub write_time: Duration,
    /// Time to reopen the log.
    pub open_time: Duration,
    /// Time to read the whole log back.
    pub read_time: Duration,
    /// Records found after reopening.
    pub records: u64,
    /// First and last positions after reopening.
    pub bounds: (Position, Position),
    /// Segment files after reopening.
    pub segments: usize,
    /// Bytes the recovery scanned.
    pub scanned_bytes: u64,
}

/// Runs the demo.
///
/// # Errors
/// Any engine error, or a record that reads back differently from what was written.
pub fn run(args: &DemoArgs) -> anyhow::Result<DemoReport> {
    if args.writers == 0 || args.events == 0 {
        bail!("--events and --writers must be at least 1");
    }
    let log = Arc::new(
        Log::open(&args.data_dir, Options::default())
            .with_context(|| format!("opening {}", args.data_dir.display()))?,
    );
    let before = log.bounds().1.get();
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let threads: Vec<_> = (0..args.writers)
        .map(|_| {
            let (log, next, events, size) =
                (log.clone(), next.clone(), args.events, args.payload_bytes);
            std::thread::spawn(move || -> anyhow::Result<()> {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= events {
                        return Ok(());
                    }
                    log.append(&[NewRecord::new(DEMO_KIND, &event_payload(i, size))])?;
                }
            })
        })
        .collect();
    for thread in threads {
        thread
            .join()
            .map_err(|_| anyhow::anyhow!("a writer thread panicked"))??;
    }
    let write_time = started.elapsed();
    let log = Arc::try_unwrap(log).map_err(|_| anyhow::anyhow!("writers still hold the log"))?;
    log.close()?;

    let started = Instant::now();
    let log = Log::open(&args.data_dir, Options::default())?;
    let open_time = started.elapsed();
    let bounds = log.bounds();
    let started = Instant::now();
    let mut records = 0u64;
    let mut position = bounds.0.get();
    while position <= bounds.1.get() {
        for entry in log.read_range(Position::new(position), 4096, usize::MAX)? {
            if entry.position().get() != position {
                bail!("expected position {position}, read {}", entry.position());
            }
            position += 1;
            records += 1;
        }
    }
    let read_time = started.elapsed();
    if bounds.1.get() < before + args.events {
        bail!(
            "wrote {} events after position {before} but the log ends at {}",
            args.events,
            bounds.1
        );
    }
    let report = DemoReport {
        written: args.events,
        write_time,
        open_time,
        read_time,
        records,
        bounds,
        segments: log.segment_count(),
        scanned_bytes: log.recovery_report().scanned_bytes,
    };
    log.close()?;
    Ok(report)
}

/// The payload of event `i`: its number, then filler.
fn event_payload(i: u64, size: usize) -> Vec<u8> {
    let mut bytes = vec![b'.'; size.max(8)];
    if let Some(head) = bytes.get_mut(..8) {
        head.copy_from_slice(&i.to_le_bytes());
    }
    bytes
}

/// Formats the report for a terminal.
pub fn render(args: &DemoArgs, report: &DemoReport) -> String {
    let rate = |count: u64, time: Duration| count as f64 / time.as_secs_f64().max(1e-9);
    format!(
        "tasklog demo: {dir}\n\
         wrote     {written} events × {size} B with {writers} writers in {wt:.3} s  ({wr:.0} durable events/s, fsync on)\n\
         reopened  in {ot:.1} ms: positions {first}..={last} in {segments} segment(s), {scanned} bytes scanned\n\
         read back {records} events in {rt:.3} s  ({rr:.0} events/s, every frame CRC-checked)\n",
        dir = args.data_dir.display(),
        written = report.written,
        size = args.payload_bytes,
        writers = args.writers,
        wt = report.write_time.as_secs_f64(),
        wr = rate(report.written, report.write_time),
        ot = report.open_time.as_secs_f64() * 1000.0,
        first = report.bounds.0,
        last = report.bounds.1,
        segments = report.segments,
        scanned = report.scanned_bytes,
        records = report.records,
        rt = report.read_time.as_secs_f64(),
        rr = rate(report.records, report.read_time),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_writes_reopens_and_reads_everything_twice() {
        let dir = tempfile::tempdir().unwrap();
        let args = DemoArgs {
            data_dir: dir.path().join("data"),
            events: 500,
            writers: 4,
            payload_bytes: 300,
        };
        let first = run(&args).unwrap();
        assert_eq!((first.records, first.bounds.1), (500, Position::new(500)));
        assert_eq!(first.scanned_bytes, 0, "a clean close leaves a checkpoint");
        let second = run(&args).unwrap();
        assert_eq!(
            (second.records, second.bounds.1),
            (1000, Position::new(1000))
        );
        assert!(render(&args, &second).contains("positions 1..=1000"));
    }
}
