//! One-shot summary of the log's write figures (DESIGN.md §6, E1–E3) against the raw
//! `pwrite + fdatasync` baseline, all measured in the same run on the same filesystem:
//!
//! 1. raw write + fdatasync loop, 1 thread (the baseline);
//! 2. durable append (`SyncPolicy::Always`), 1 writer (E1: ≥ 0.90 × raw);
//! 3. durable append, 64 concurrent writers (E2: ≥ 250,000 events/s);
//! 4. bulk append (`SyncPolicy::Never`, 1,000 records per call) with one `sync()` at the end, at
//!    least 1,000,000 events (E3: ≥ 1,000,000 events/s).
//!
//! Each workload runs for `TASKLOG_BENCH_SECS` seconds (default 3). The table is printed and the
//! same numbers are written to `target/tasklog-bench-summary.json`. Numbers are printed, never
//! asserted. Run with `cargo bench -p tasklog-benches --bench log_summary`.

use std::path::{Path, PathBuf};
use std::sync::{Barrier, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tasklog_benches::{PAYLOAD_BYTES, RawAppender, json_head, json_number, json_string, payload};
use tasklog_engine::{Log, NewRecord, Options, SyncPolicy};

/// Record kind used for every appended record (opaque to the log).
const KIND: u8 = 1;
/// Concurrent appenders of the E2 workload.
const WRITERS: usize = 64;
/// Records per `append` call in the bulk workload.
const BULK_BATCH: usize = 1_000;
/// The bulk workload appends exactly this many records (E3: a bulk load with one sync at the end;
/// running longer would measure the kernel's dirty-page throttling instead).
const BULK_EVENTS: u64 = 1_000_000;
/// Default seconds per workload.
const DEFAULT_SECS: f64 = 3.0;

/// A figure from DESIGN.md §6 that a row is compared against.
#[derive(Clone, Copy)]
enum Target {
    /// At least this fraction of the raw baseline's events/s.
    RatioOfRaw(&'static str, f64),
    /// At least this many events/s.
    EventsPerSec(&'static str, f64),
}

/// One measured workload.
struct Row {
    workload: &'static str,
    events: u64,
    seconds: f64,
    /// Per-call latency percentiles in µs (p50, p99), where a call is one `append` (or one raw
    /// write + fdatasync).
    latency_us: Option<(f64, f64)>,
    target: Option<Target>,
}

impl Row {
    fn rate(&self) -> f64 {
        self.events as f64 / self.seconds
    }
}

/// Per-call latencies in nanoseconds.
#[derive(Default)]
struct Latencies(Vec<u64>);

impl Latencies {
    fn record(&mut self, elapsed: Duration) {
        self.0
            .push(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX));
    }

    /// (p50, p99) in µs; `None` when nothing was recorded.
    fn percentiles_us(mut self) -> Option<(f64, f64)> {
        if self.0.is_empty() {
            return None;
        }
        self.0.sort_unstable();
        let at = |q: f64| {
            let rank = ((self.0.len() as f64 * q).ceil() as usize).clamp(1, self.0.len());
            self.0.get(rank - 1).copied().unwrap_or_default() as f64 / 1_000.0
        };
        Some((at(0.50), at(0.99)))
    }
}

fn options(sync: SyncPolicy) -> Options {
    Options {
        sync,
        ..Options::default()
    }
}

/// Raw `pwrite` at the growing end of a plain file + `fdatasync`, one thread.
fn raw_loop(dir: &Path, run: Duration) -> Result<Row> {
    let path = dir.join("raw.dat");
    let bytes = payload(1);
    let mut raw = RawAppender::create(&path).with_context(|| format!("create {path:?}"))?;
    let mut latencies = Latencies::default();
    let mut events = 0u64;
    let start = Instant::now();
    while start.elapsed() < run {
        let call = Instant::now();
        raw.append(&bytes)
            .with_context(|| format!("raw append to {path:?}"))?;
        latencies.record(call.elapsed());
        events += 1;
    }
    let seconds = start.elapsed().as_secs_f64();
    debug_assert_eq!(raw.bytes_written(), events * PAYLOAD_BYTES as u64);
    Ok(Row {
        workload: "raw pwrite+fdatasync, 1 thread",
        events,
        seconds,
        latency_us: latencies.percentiles_us(),
        target: None,
    })
}

/// Durable appends of one record at a time from one thread.
fn append_one_writer(dir: &Path, run: Duration) -> Result<Row> {
    let bytes = payload(2);
    let log = Log::open(dir.join("append-1"), options(SyncPolicy::Always))?;
    let mut latencies = Latencies::default();
    let mut events = 0u64;
    let start = Instant::now();
    while start.elapsed() < run {
        let call = Instant::now();
        log.append(&[NewRecord::new(KIND, &bytes)])?;
        latencies.record(call.elapsed());
        events += 1;
    }
    let seconds = start.elapsed().as_secs_f64();
    log.close()?;
    Ok(Row {
        workload: "append Always, 1 writer",
        events,
        seconds,
        latency_us: latencies.percentiles_us(),
        target: Some(Target::RatioOfRaw("E1", 0.90)),
    })
}

/// Durable appends of one record at a time from [`WRITERS`] threads until a shared deadline.
fn append_many_writers(dir: &Path, run: Duration) -> Result<Row> {
    let bytes = payload(3);
    let log = Log::open(dir.join("append-64"), options(SyncPolicy::Always))?;
    let barrier = Barrier::new(WRITERS + 1);
    let deadline = OnceLock::<Instant>::new();
    let (start, results) = thread::scope(|scope| {
        let handles: Vec<_> = (0..WRITERS)
            .map(|_| {
                let (log, bytes, barrier, deadline) = (&log, &bytes, &barrier, &deadline);
                scope.spawn(move || -> Result<(u64, Latencies)> {
                    barrier.wait();
                    let deadline = *deadline.get().context("deadline set before the barrier")?;
                    let mut latencies = Latencies::default();
                    let mut events = 0u64;
                    while Instant::now() < deadline {
                        let call = Instant::now();
                        log.append(&[NewRecord::new(KIND, bytes)])?;
                        latencies.record(call.elapsed());
                        events += 1;
                    }
                    Ok((events, latencies))
                })
            })
            .collect();
        // All writers are spawned; the clock starts as the barrier releases them.
        let start = Instant::now();
        let _ = deadline.set(start + run);
        barrier.wait();
        let results: Vec<_> = handles.into_iter().map(|h| h.join()).collect();
        (start, results)
    });
    let seconds = start.elapsed().as_secs_f64();
    let mut events = 0u64;
    let mut latencies = Latencies::default();
    for result in results {
        let (count, mut thread_latencies) = result
            .map_err(|_| anyhow::anyhow!("an appender thread panicked"))?
            .context("appender thread")?;
        events += count;
        latencies.0.append(&mut thread_latencies.0);
    }
    log.close()?;
    Ok(Row {
        workload: "append Always, 64 writers",
        events,
        seconds,
        latency_us: latencies.percentiles_us(),
        target: Some(Target::EventsPerSec("E2", 250_000.0)),
    })
}

/// `SyncPolicy::Never`, [`BULK_BATCH`] records per call, [`BULK_EVENTS`] in all, into a fresh log,
/// then one `sync()`; the time includes the sync.
fn bulk_append(dir: &Path, _run: Duration) -> Result<Row> {
    let bytes = payload(4);
    let batch = vec![NewRecord::new(KIND, &bytes); BULK_BATCH];
    let log = Log::open(dir.join("bulk"), options(SyncPolicy::Never))?;
    let mut latencies = Latencies::default();
    let mut events = 0u64;
    let start = Instant::now();
    while events < BULK_EVENTS {
        let call = Instant::now();
        log.append(&batch)?;
        latencies.record(call.elapsed());
        events += BULK_BATCH as u64;
    }
    log.sync()?;
    let seconds = start.elapsed().as_secs_f64();
    log.close()?;
    Ok(Row {
        workload: "bulk Never, 1000/call, 1 sync",
        events,
        seconds,
        latency_us: latencies.percentiles_us(),
        target: Some(Target::EventsPerSec("E3", 1_000_000.0)),
    })
}

/// Facts about the machine and the run, as (key, value) pairs.
fn machine_facts(dir: &Path, run: Duration) -> Vec<(&'static str, String)> {
    let mut facts = tasklog_benches::machine_facts(dir);
    facts.push(("payload_bytes", PAYLOAD_BYTES.to_string()));
    facts.push(("seconds_per_workload", format!("{}", run.as_secs_f64())));
    facts
}

fn target_text(target: Option<Target>) -> (String, String) {
    match target {
        None => ("baseline".into(), String::new()),
        Some(Target::RatioOfRaw(id, ratio)) => (id.into(), format!(">= {ratio:.2} x raw")),
        Some(Target::EventsPerSec(id, rate)) => (id.into(), format!(">= {rate:.0}/s")),
    }
}

fn met(row: &Row, raw_rate: f64) -> Option<bool> {
    match row.target? {
        Target::RatioOfRaw(_, ratio) => Some(row.rate() >= ratio * raw_rate),
        Target::EventsPerSec(_, rate) => Some(row.rate() >= rate),
    }
}

fn print_table(facts: &[(&str, String)], rows: &[Row], raw_rate: f64) {
    println!();
    println!("tasklog log summary (DESIGN.md §6; {PAYLOAD_BYTES}-byte events)");
    for (key, value) in facts {
        println!("  {key:<21} {value}");
    }
    println!();
    println!(
        "{:<32} {:>10} {:>8} {:>12} {:>10} {:>10} {:>7}  {:<22} met",
        "workload", "events", "seconds", "events/s", "p50 µs", "p99 µs", "x raw", "target"
    );
    println!("{}", "-".repeat(124));
    for row in rows {
        let (p50, p99) = row
            .latency_us
            .map_or((String::from("-"), String::from("-")), |l| {
                (format!("{:.1}", l.0), format!("{:.1}", l.1))
            });
        let (id, figure) = target_text(row.target);
        let verdict = match met(row, raw_rate) {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "-",
        };
        println!(
            "{:<32} {:>10} {:>8.2} {:>12.0} {:>10} {:>10} {:>7.2}  {:<22} {}",
            row.workload,
            row.events,
            row.seconds,
            row.rate(),
            p50,
            p99,
            row.rate() / raw_rate,
            format!("{id} {figure}"),
            verdict
        );
    }
    println!("(latency is per call: one record, except the bulk row: one 1,000-record call)");
}

fn to_json(facts: &[(&str, String)], rows: &[Row], raw_rate: f64) -> String {
    let mut out = json_head(facts);
    let rows_json: Vec<String> = rows
        .iter()
        .map(|row| {
            let (p50, p99) = row.latency_us.map_or(("null".into(), "null".into()), |l| {
                (json_number(l.0), json_number(l.1))
            });
            let (id, figure) = target_text(row.target);
            let met = met(row, raw_rate).map_or("null", |m| if m { "true" } else { "false" });
            format!(
                "    {{\"workload\": {}, \"events\": {}, \"seconds\": {}, \"events_per_sec\": {}, \
                 \"p50_us\": {p50}, \"p99_us\": {p99}, \"ratio_to_raw\": {}, \"target_id\": {}, \
                 \"target\": {}, \"met\": {met}}}",
                json_string(row.workload),
                row.events,
                json_number(row.seconds),
                json_number(row.rate()),
                json_number(row.rate() / raw_rate),
                json_string(&id),
                json_string(&figure),
            )
        })
        .collect();
    out.push_str(&rows_json.join(",\n"));
    out.push_str("\n  ]\n}\n");
    out
}

fn main() -> Result<()> {
    let secs = match std::env::var("TASKLOG_BENCH_SECS") {
        Ok(text) => text
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s > 0.0)
            .with_context(|| format!("TASKLOG_BENCH_SECS={text:?} is not a positive number"))?,
        Err(_) => DEFAULT_SECS,
    };
    let run = Duration::from_secs_f64(secs);
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(tmp).with_context(|| format!("create {tmp:?}"))?;
    let dir = tempfile::tempdir_in(tmp).with_context(|| format!("temp dir in {tmp:?}"))?;
    let facts = machine_facts(dir.path(), run);

    let mut rows = Vec::new();
    type Workload = fn(&Path, Duration) -> Result<Row>;
    let workloads: [(&str, Workload); 4] = [
        ("raw", raw_loop),
        ("append-1", append_one_writer),
        ("append-64", append_many_writers),
        ("bulk", bulk_append),
    ];
    for (name, workload) in workloads {
        eprintln!("running {name} for {secs} s ...");
        let row = workload(dir.path(), run).with_context(|| format!("workload {name}"))?;
        eprintln!(
            "  {} events in {:.2} s = {:.0}/s",
            row.events,
            row.seconds,
            row.rate()
        );
        rows.push(row);
    }
    let raw_rate = rows.first().map_or(f64::NAN, Row::rate);
    print_table(&facts, &rows, raw_rate);

    let json_path: PathBuf = tmp
        .parent()
        .unwrap_or(tmp)
        .join("tasklog-bench-summary.json");
    std::fs::write(&json_path, to_json(&facts, &rows, raw_rate))
        .with_context(|| format!("write {json_path:?}"))?;
    println!("written to {}", json_path.display());
    Ok(())
}
