//! One-shot summary of retention's compaction (`TaskStore::compact`): how fast the space of deleted
//! tasks comes back, against the raw I/O it cannot avoid, and what it costs the writers that keep
//! running meanwhile. Numbers are printed, never asserted. Run with
//! `cargo bench -p tasklog-benches --bench compaction`.
//!
//! Build (not timed, `SyncPolicy::Never`, then synced): `TASKLOG_COMPACT_BENCH_TASKS` tasks (default
//! 200,000), each created with a 1 KiB message; all but one in `TASKLOG_COMPACT_BENCH_KEEP`
//! (default 10) are completed and deleted, so about 90 % of the log belongs to deleted tasks, spread
//! evenly (every 64 MiB segment holds live records: purging whole segments frees nothing). The store
//! is then reopened with `SyncPolicy::Always`.
//!
//! Then, for `TASKLOG_BENCH_SECS` (default 3), four writer threads append a message event to a
//! random live task, one durable write each (the writers alone); then the same writers run while
//! one `compact()` pass runs. Printed: the pass's time, bytes in and out, records removed, read and
//! write rates; writer throughput and p50/p99 latency alone and during the pass. The baseline,
//! measured in the same run right after: reading as many bytes as the pass read from a file in the
//! page cache (the inputs are there too, after the build) and writing the pass's output bytes to a
//! fresh file, in 1 MiB calls, with one `fdatasync`: the I/O any compaction must do.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use tasklog_benches::{XorShift64, machine_facts};
use tasklog_engine::event::Event;
use tasklog_engine::model::{Message, Part, Role, TaskState, TaskStatus};
use tasklog_engine::{NewTask, Options, SyncPolicy, TaskStore};

const WRITERS: usize = 4;
const MESSAGE_BYTES: usize = 1024;

fn env_number(name: &str, default: f64) -> Result<f64> {
    match std::env::var(name) {
        Ok(text) => text
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v > 0.0)
            .with_context(|| format!("{name}={text:?} is not a positive number")),
        Err(_) => Ok(default),
    }
}

fn message(text: &str) -> Message {
    Message {
        parts: vec![Part::text(text.repeat(MESSAGE_BYTES))],
        ..Message::text("m", Role::User, "")
    }
}

/// Writers' latencies (µs) and count, from `WRITERS` threads appending to `live` tasks until
/// `stop` is set.
fn run_writers(
    store: &Arc<TaskStore>,
    live: &Arc<Vec<String>>,
    stop: &Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<Result<Vec<u32>>>> {
    (0..WRITERS)
        .map(|w| {
            let (store, live, stop) = (store.clone(), live.clone(), stop.clone());
            std::thread::spawn(move || -> Result<Vec<u32>> {
                let mut rng = XorShift64::new(0xC0FF_EE00 + w as u64);
                let mut latencies = Vec::new();
                let small = Message::text("w", Role::Agent, "progress");
                while !stop.load(Ordering::Relaxed) {
                    let id = &live[rng.below(live.len() as u64) as usize];
                    let started = Instant::now();
                    store.append(id, None, vec![Event::Message(small.clone())])?;
                    latencies.push(started.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                }
                Ok(latencies)
            })
        })
        .collect()
}

fn collect(handles: Vec<std::thread::JoinHandle<Result<Vec<u32>>>>) -> Result<Vec<u32>> {
    let mut all = Vec::new();
    for handle in handles {
        all.extend(
            handle
                .join()
                .map_err(|_| anyhow!("a writer thread panicked"))??,
        );
    }
    all.sort_unstable();
    Ok(all)
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let at = ((sorted.len() - 1) as f64 * p).round() as usize;
    f64::from(sorted[at.min(sorted.len() - 1)]) / 1000.0
}

fn main() -> Result<()> {
    let tasks = env_number("TASKLOG_COMPACT_BENCH_TASKS", 200_000.0)? as u64;
    let keep = env_number("TASKLOG_COMPACT_BENCH_KEEP", 10.0)? as u64;
    let secs = env_number("TASKLOG_BENCH_SECS", 3.0)?;
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(tmp).with_context(|| format!("create {tmp:?}"))?;
    let dir = tempfile::tempdir_in(tmp).with_context(|| format!("temp dir in {tmp:?}"))?;
    for (name, value) in machine_facts(dir.path()) {
        println!("  {name:<12} {value}");
    }

    let started = Instant::now();
    let mut live = Vec::new();
    {
        let store = TaskStore::open(
            dir.path(),
            Options {
                sync: SyncPolicy::Never,
                ..Options::default()
            },
        )?;
        let body = message("x");
        for i in 0..tasks {
            let id = store
                .create(NewTask::submitted(Some(body.clone())))?
                .task_id;
            if i % keep == 0 {
                live.push(id);
                continue;
            }
            let done = Event::Status(TaskStatus::new(TaskState::Completed));
            store.append(&id, None, vec![done])?;
            store.delete(&id)?;
        }
        store.log().sync()?;
        store.close()?;
    }
    let store = Arc::new(TaskStore::open(dir.path(), Options::default())?);
    let disk = |store: &TaskStore| -> u64 { store.log().segments().iter().map(|s| s.bytes).sum() };
    println!(
        "  build        {tasks} tasks, {} live, {:.1} MB of log in {} segments, {:.1} s",
        live.len(),
        disk(&store) as f64 / 1e6,
        store.log().segment_count(),
        started.elapsed().as_secs_f64()
    );
    let live = Arc::new(live);

    // The writers alone.
    let stop = Arc::new(AtomicBool::new(false));
    let handles = run_writers(&store, &live, &stop);
    let window = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::Relaxed);
    let alone = collect(handles)?;
    let alone_secs = window.elapsed().as_secs_f64();

    // The same writers while one pass runs.
    let stop = Arc::new(AtomicBool::new(false));
    let handles = run_writers(&store, &live, &stop);
    std::thread::sleep(Duration::from_millis(200));
    let before_bytes = disk(&store);
    let window = Instant::now();
    let report = store.compact()?;
    let pass_secs = window.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let during = collect(handles)?;
    let during_secs = window.elapsed().as_secs_f64();
    let after_bytes = disk(&store);

    // Baseline: the pass's input bytes read from the page cache (as its inputs were) and its
    // output bytes written once, synced once.
    let source_path = dir.path().join("baseline-in.bin");
    let source = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&source_path)?;
    let mut chunk = vec![0x5au8; 1024 * 1024];
    let mut at = 0u64;
    while at < report.bytes_before {
        let n = (report.bytes_before - at).min(chunk.len() as u64) as usize;
        source.write_all_at(&chunk[..n], at)?;
        at += n as u64;
    }
    let target = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(dir.path().join("baseline-out.bin"))?;
    let baseline = Instant::now();
    let mut read = 0u64;
    while read < report.bytes_before {
        let n = (report.bytes_before - read).min(chunk.len() as u64) as usize;
        source.read_exact_at(&mut chunk[..n], read)?;
        read += n as u64;
    }
    let mut written = 0u64;
    while written < report.bytes_after {
        let n = (report.bytes_after - written).min(chunk.len() as u64) as usize;
        target.write_all_at(&chunk[..n], written)?;
        written += n as u64;
    }
    target.sync_data()?;
    let baseline_secs = baseline.elapsed().as_secs_f64();

    println!(
        "  compaction   {:.3} s: {} segments read ({:.1} MB), {} written ({:.1} MB), {} records removed",
        pass_secs,
        report.segments_read,
        report.bytes_before as f64 / 1e6,
        report.segments_written,
        report.bytes_after as f64 / 1e6,
        report.records_removed
    );
    println!(
        "               log {:.1} MB -> {:.1} MB; reads {:.0} MB/s, writes {:.0} MB/s",
        before_bytes as f64 / 1e6,
        after_bytes as f64 / 1e6,
        report.bytes_before as f64 / 1e6 / pass_secs,
        report.bytes_after as f64 / 1e6 / pass_secs
    );
    println!(
        "  baseline     read {:.1} MB (page cache) + write {:.1} MB + one fdatasync: {:.3} s; compaction / baseline = {:.2}",
        report.bytes_before as f64 / 1e6,
        report.bytes_after as f64 / 1e6,
        baseline_secs,
        pass_secs / baseline_secs
    );
    let rate = |count: usize, secs: f64| count as f64 / secs;
    println!(
        "  writers      alone: {:.0} writes/s, p50 {:.2} ms, p99 {:.2} ms",
        rate(alone.len(), alone_secs),
        percentile(&alone, 0.5),
        percentile(&alone, 0.99)
    );
    println!(
        "               during the pass: {:.0} writes/s, p50 {:.2} ms, p99 {:.2} ms ({:.2} s window)",
        rate(during.len(), during_secs),
        percentile(&during, 0.5),
        percentile(&during, 0.99),
        during_secs
    );
    Ok(())
}
