//! `tasklog load`: a load generator against running nodes. W writer threads, each with its own
//! HTTP connection to one node (writers spread over the nodes given), each writing task events
//! with optimistic concurrency: create a task, then append message events of the given size with
//! the version it last saw, a new task every [`EVENTS_PER_TASK`] events. Every write is durable and
//! replicated when acknowledged. Prints a summary table: writes, throughput, latency percentiles,
//! errors by reason.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Args;
use tasklog_engine::model::{Message, Role};

use crate::client::Client;
use crate::http::{AppendRequest, CreateRequest, EventBody};

/// Events written to one task before a writer starts the next.
pub const EVENTS_PER_TASK: u64 = 100;

/// `tasklog load`'s flags.
#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    /// Node HTTP URLs, comma-separated (writers are spread over them).
    #[arg(long, value_delimiter = ',', required = true, num_args = 1..)]
    pub nodes: Vec<String>,
    /// Concurrent writers.
    #[arg(long, default_value_t = 64)]
    pub writers: u32,
    /// Seconds to run.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Text bytes per event.
    #[arg(long, default_value_t = 300)]
    pub event_bytes: usize,
}

/// What a run measured.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    /// Writers.
    pub writers: u32,
    /// Acknowledged writes.
    pub writes: u64,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Every acknowledged write's latency, sorted.
    pub latencies: Vec<Duration>,
    /// Failed writes by reason.
    pub errors: BTreeMap<String, u64>,
}

impl LoadReport {
    /// Acknowledged writes per second.
    pub fn throughput(&self) -> f64 {
        self.writes as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The `q` quantile (0..=1) of the latencies.
    pub fn quantile(&self, q: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let at = ((self.latencies.len() - 1) as f64 * q).round() as usize;
        self.latencies[at.min(self.latencies.len() - 1)]
    }
}

/// Runs the load.
///
/// # Errors
/// No node given, no writer.
pub fn run(args: &LoadArgs) -> anyhow::Result<LoadReport> {
    if args.nodes.is_empty() || args.writers == 0 {
        bail!("give at least one node and one writer");
    }
    let duration = Duration::from_secs_f64(args.seconds.max(0.0));
    let stop = Arc::new(AtomicBool::new(false));
    let text: String = "x".repeat(args.event_bytes);
    // Task ids unique to this run, so that runs against one cluster never collide.
    let run_id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let started = Instant::now();
    let handles: Vec<_> = (0..args.writers)
        .map(|writer| {
            let url = args.nodes[writer as usize % args.nodes.len()].clone();
            let stop = stop.clone();
            let text = text.clone();
            let prefix = format!("load-{run_id:x}-{writer}");
            std::thread::spawn(move || write_loop(&prefix, &url, &text, &stop))
        })
        .collect();
    std::thread::sleep(duration);
    stop.store(true, Ordering::Relaxed);
    let mut report = LoadReport {
        writers: args.writers,
        ..LoadReport::default()
    };
    for handle in handles {
        match handle.join() {
            Ok(one) => {
                report.writes += one.writes;
                report.latencies.extend(one.latencies);
                for (reason, count) in one.errors {
                    *report.errors.entry(reason).or_default() += count;
                }
            }
            Err(_) => *report.errors.entry("writer panicked".into()).or_default() += 1,
        }
    }
    report.elapsed = started.elapsed();
    report.latencies.sort_unstable();
    Ok(report)
}

fn write_loop(prefix: &str, url: &str, text: &str, stop: &AtomicBool) -> LoadReport {
    let client = Client::new(url, Duration::from_secs(30));
    let mut report = LoadReport::default();
    let mut task = 0u64;
    let mut current: Option<(String, u64, u64)> = None; // (task, version, events)
    while !stop.load(Ordering::Relaxed) {
        let sent = Instant::now();
        match current.take() {
            Some((task_id, version, events)) if events < EVENTS_PER_TASK => {
                let result = client.append(
                    &task_id,
                    &AppendRequest {
                        expected_version: Some(version),
                        events: vec![EventBody::Message(message(text, events))],
                    },
                );
                if let Some(written) = record(result, sent.elapsed(), &mut report) {
                    current = Some((task_id, written.version, events + 1));
                }
            }
            _ => {
                task += 1;
                let result = client.create(&CreateRequest {
                    task_id: Some(format!("{prefix}-{task}")),
                    message: Some(message(text, 0)),
                    ..CreateRequest::default()
                });
                if let Some(written) = record(result, sent.elapsed(), &mut report) {
                    current = Some((written.task_id, written.version, 1));
                }
            }
        }
    }
    report
}

/// Counts one write's outcome; gives what was written.
fn record<T>(
    result: Result<T, crate::client::ClientError>,
    took: Duration,
    report: &mut LoadReport,
) -> Option<T> {
    match result {
        Ok(written) => {
            report.writes += 1;
            report.latencies.push(took);
            Some(written)
        }
        Err(error) => {
            let reason = error.reason().unwrap_or("transport").to_owned();
            *report.errors.entry(reason).or_default() += 1;
            None
        }
    }
}

fn message(text: &str, n: u64) -> Message {
    Message::text(format!("m-{n}"), Role::Agent, text)
}

/// The summary table.
pub fn render(report: &LoadReport) -> String {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>8} {:>10} {:>10} {:>9} {:>9} {:>9} {:>9}  errors",
        "writers", "writes", "writes/s", "p50 ms", "p90 ms", "p99 ms", "max ms"
    );
    let errors = if report.errors.is_empty() {
        "none".to_owned()
    } else {
        report
            .errors
            .iter()
            .map(|(reason, count)| format!("{reason} {count}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = writeln!(
        out,
        "{:>8} {:>10} {:>10.0} {:>9.2} {:>9.2} {:>9.2} {:>9.2}  {errors}",
        report.writers,
        report.writes,
        report.throughput(),
        ms(report.quantile(0.5)),
        ms(report.quantile(0.9)),
        ms(report.quantile(0.99)),
        ms(report.latencies.last().copied().unwrap_or_default()),
    );
    out
}
