//! One-shot summary of the task store's figures (DESIGN.md §6, E4–E7), each workload bounded in
//! time and size, printed as a table and written to `target/tasklog-store-summary.json`. Numbers
//! are printed, never asserted. Run with `cargo bench -p tasklog-benches --bench store_summary`.
//!
//! 1. **E7, memory per idle task**: `RssAnon` (from `/proc/self/status`) right after
//!    `TaskStore::open` of an empty store and again after creating `TASKLOG_STORE_BENCH_TASKS`
//!    tasks (default 1,000,000; `SyncPolicy::Never`, one thread, UUID-shaped ids, no subscriber),
//!    divided by the number of tasks (target ≤ 200 B). Each task has a context of its own unless
//!    `TASKLOG_STORE_BENCH_CONTEXT_TASKS` = n puts n consecutive tasks in one context.
//! 2. **E4, get latest task state**: on that store, `summary(id)` for random ids on one thread for
//!    `TASKLOG_BENCH_SECS` seconds (default 3; target ≥ 1,000,000 gets/s), with `version(id)`, a
//!    bare `HashMap<String, u64>` over the same ids and `get(id, Some(0))` (a fold from the log)
//!    for comparison.
//! 3. **E5, open time**: a store of `TASKLOG_STORE_BENCH_OPEN_EVENTS` events (default 2,000,000;
//!    DESIGN.md's figure is for 10,000,000, about 3.3 GB at 300 B, set the variable for it) is
//!    built (1,000 tasks at a time, 10 events each, 300-byte records written by bulk `Log::append`
//!    exactly as the store encodes them). The first `TaskStore::open` finds no task checkpoint
//!    and replays everything (timed: the cost of a kill before any checkpoint); its close writes
//!    the checkpoint. Then `Log::open` and `TaskStore::open` are timed after that clean close, and
//!    after a SIGKILL: this binary re-executes itself as a child that builds the store with
//!    `SyncPolicy::Always` (then `Never`), opens it as a `TaskStore`, writes a checkpoint, keeps
//!    creating tasks from 4 threads and is killed with `Child::kill` 0.5 s later; `Log::open` is
//!    timed on a copy of the killed directory, `TaskStore::open` on the original. Targets (≤ 0.5 s
//!    clean, ≤ 3 s after kill) are judged on times scaled to 10 M events: the clean open linearly;
//!    after a kill, the clean open scaled plus what the kill added (the replay after the
//!    checkpoint, which does not grow with the store). Page cache is warm.
//! 4. **E6, subscribers under load**: `TASKLOG_STORE_BENCH_SUBSCRIBERS` tasks (default 10,000),
//!    one subscriber each (`subscribe(id, version + 1)`) plus `TASKLOG_STORE_BENCH_TAILS` tails
//!    (default 100), all tokio tasks on a multi-thread runtime (tokio's default worker count;
//!    `TASKLOG_STORE_BENCH_RUNTIME_THREADS` sets it), while `TASKLOG_STORE_BENCH_WRITERS`
//!    threads (default 16) append one 300-byte message per call with `SyncPolicy::Always` at
//!    `TASKLOG_STORE_BENCH_RATE` events/s in all (default 20,000; paced in 1 ms ticks) for
//!    `TASKLOG_STORE_BENCH_WRITE_SECS` seconds (default 5). The same paced load runs with no
//!    subscriber before and after; the faster of the two is the baseline, and when the verdict
//!    against one differs from the verdict against the other (the machine's background load
//!    moved), the slowdown gets none ("noisy").
//!    Writer slowdown is the larger of the drop in achieved rate and the rise of the append p50
//!    against the baseline (target ≤ 10 %); delivery latency runs from the append's return to
//!    the subscriber's receipt (a delivery seen before the append returned counts as 0; target
//!    p99 ≤ 10 ms), and is also given from the append's call; loss is every event of its task
//!    that a subscriber, and every record that a tail, did not receive (target 0). The CPU the
//!    process, and its tokio workers, used during each run is reported in cores.
//!
//! `TASKLOG_STORE_BENCH_ONLY=E4,E5,E6,E7` runs a subset (E4 and E7 share their store).

use std::collections::HashMap;
use std::fs;
use std::hint::black_box;
use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use tasklog_benches::{
    PAYLOAD_BYTES, XorShift64, json_head, json_number, json_string, machine_facts,
};
use tasklog_engine::event::{Event, EventBatch, TASK_BATCH_KIND};
use tasklog_engine::id::CompactId;
use tasklog_engine::model::{Message, Role, TaskState, TaskStatus, Timestamp};
use tasklog_engine::state::TaskMeta;
use tasklog_engine::subscribe::{Tail, TaskSubscription};
use tasklog_engine::{Log, NewRecord, NewTask, Options, Position, SyncPolicy, TaskStore, record};
use tokio::sync::watch;

/// Set (to the sync policy, `always` or `never`) when this binary runs as the E5 child to kill.
const CHILD_ENV: &str = "TASKLOG_STORE_BENCH_CHILD";
/// The child's store directory.
const CHILD_DIR_ENV: &str = "TASKLOG_STORE_BENCH_CHILD_DIR";
/// Events the child writes before it reports `ready`.
const CHILD_EVENTS_ENV: &str = "TASKLOG_STORE_BENCH_CHILD_EVENTS";
/// Threads the child keeps appending from until it is killed.
const CHILD_APPENDERS: usize = 4;
/// How long the child keeps appending after `ready` before the SIGKILL.
const KILL_AFTER: Duration = Duration::from_millis(500);
/// The E5 store: tasks written round-robin at a time, and events per task.
const OPEN_GROUP_TASKS: u64 = 1_000;
/// Events per task in the E5 store (one created + messages).
const OPEN_EVENTS_PER_TASK: u64 = 10;
/// Records per `Log::append` call while building the E5 store.
const BUILD_BATCH: usize = 1_000;
/// DESIGN.md's E5 store size; targets are judged on times scaled to it.
const E5_DESIGN_EVENTS: f64 = 10_000_000.0;
/// Most records a tail takes per `next`.
const TAIL_MAX: usize = 256;
/// How long E6 waits for subscribers to catch up after the writers stop.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(20);

/// A figure from DESIGN.md §6.
#[derive(Clone, Copy)]
enum Target {
    AtLeast(f64),
    AtMost(f64),
}

/// One line of the table: a measured value, with the target it is held to, if any.
struct Row {
    id: &'static str,
    workload: String,
    value: f64,
    unit: &'static str,
    target: Option<Target>,
    /// The reference it is compared with moved too much during the run for a verdict.
    noisy: bool,
}

impl Row {
    fn info(id: &'static str, workload: impl Into<String>, value: f64, unit: &'static str) -> Self {
        Row {
            id,
            workload: workload.into(),
            value,
            unit,
            target: None,
            noisy: false,
        }
    }

    fn noisy_if(mut self, noisy: bool) -> Self {
        self.noisy = noisy;
        self
    }

    fn with(mut self, target: Target) -> Self {
        self.target = Some(target);
        self
    }

    fn met(&self) -> Option<bool> {
        if self.noisy {
            return None;
        }
        match self.target? {
            Target::AtLeast(x) => Some(self.value >= x),
            Target::AtMost(x) => Some(self.value <= x),
        }
    }

    fn value_text(&self) -> String {
        format_value(self.value, self.unit)
    }

    fn target_text(&self) -> String {
        match self.target {
            None => String::new(),
            Some(Target::AtLeast(x)) => format!(">= {}", format_value(x, self.unit)),
            Some(Target::AtMost(x)) => format!("<= {}", format_value(x, self.unit)),
        }
    }
}

fn format_value(value: f64, unit: &str) -> String {
    let digits = match unit {
        "s" => 3,
        "ms" | "MB" | "%" | "µs" | "cores" => 2,
        _ => 0,
    };
    let number = format!("{value:.digits$}");
    // Thousands separators on the integer part keep rates and counts readable.
    let (int, frac) = number.split_once('.').unwrap_or((&number, ""));
    let (sign, digits_only) = int.strip_prefix('-').map_or(("", int), |d| ("-", d));
    let mut grouped = String::new();
    for (i, c) in digits_only.chars().enumerate() {
        if i > 0 && (digits_only.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    let frac = if frac.is_empty() {
        String::new()
    } else {
        format!(".{frac}")
    };
    format!("{sign}{grouped}{frac} {unit}")
}

/// Sizes and durations, from the environment.
struct Config {
    secs: f64,
    tasks: u64,
    context_tasks: u64,
    open_events: u64,
    subscribers: usize,
    tails: usize,
    writers: usize,
    rate: f64,
    write_secs: f64,
    only: Option<String>,
}

fn env_number(name: &str, default: f64) -> Result<f64> {
    match std::env::var(name) {
        Ok(text) => text
            .trim()
            .replace('_', "")
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v >= 0.0)
            .with_context(|| format!("{name}={text:?} is not a number >= 0")),
        Err(_) => Ok(default),
    }
}

impl Config {
    fn from_env() -> Result<Self> {
        Ok(Config {
            secs: env_number("TASKLOG_BENCH_SECS", 3.0)?,
            tasks: (env_number("TASKLOG_STORE_BENCH_TASKS", 1_000_000.0)? as u64).max(1),
            context_tasks: (env_number("TASKLOG_STORE_BENCH_CONTEXT_TASKS", 1.0)? as u64).max(1),
            open_events: (env_number("TASKLOG_STORE_BENCH_OPEN_EVENTS", 2_000_000.0)? as u64)
                .max(1),
            subscribers: env_number("TASKLOG_STORE_BENCH_SUBSCRIBERS", 10_000.0)? as usize,
            tails: env_number("TASKLOG_STORE_BENCH_TAILS", 100.0)? as usize,
            writers: (env_number("TASKLOG_STORE_BENCH_WRITERS", 16.0)? as usize).max(1),
            rate: env_number("TASKLOG_STORE_BENCH_RATE", 20_000.0)?,
            write_secs: env_number("TASKLOG_STORE_BENCH_WRITE_SECS", 5.0)?,
            only: std::env::var("TASKLOG_STORE_BENCH_ONLY").ok(),
        })
    }

    fn runs(&self, id: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|only| only.to_uppercase().contains(id))
    }

    fn facts(&self) -> Vec<(&'static str, String)> {
        vec![
            ("payload_bytes", PAYLOAD_BYTES.to_string()),
            ("e7_tasks_per_context", self.context_tasks.to_string()),
            ("get_seconds", format!("{}", self.secs)),
            ("e4_e7_tasks", self.tasks.to_string()),
            ("e5_events", self.open_events.to_string()),
            ("e6_subscribers", self.subscribers.to_string()),
            ("e6_tails", self.tails.to_string()),
            ("e6_writers", self.writers.to_string()),
            ("e6_target_rate", format!("{}", self.rate)),
            ("e6_seconds", format!("{}", self.write_secs)),
        ]
    }
}

fn options(sync: SyncPolicy) -> Options {
    Options {
        sync,
        ..Options::default()
    }
}

/// A UUID-shaped (36-character) id, unique per `(space, i)` for `i < 2^48`.
fn uuid_like(space: u64, i: u64) -> String {
    let h = XorShift64::new(space.wrapping_mul(0x1000_0000_01B3) ^ i).next_u64();
    format!(
        "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
        h >> 32,
        (h >> 16) & 0xffff,
        h & 0xfff,
        space & 0xfff,
        i & 0xffff_ffff_ffff
    )
}

/// Milliseconds since the Unix epoch.
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn message(text_len: usize) -> Message {
    Message::text("m", Role::Agent, "x".repeat(text_len))
}

/// Text lengths that make a created batch and a message batch of a 36-byte task id encode to
/// about [`PAYLOAD_BYTES`].
fn padding() -> Result<(usize, usize)> {
    let id = uuid_like(0, 0);
    let encoded = |event: Event| -> Result<usize> {
        let batch = EventBatch {
            task_id: id.clone(),
            first_version: 2,
            timestamp: Timestamp(now_ms()),
            events: vec![event],
        };
        Ok(record::to_payload(&batch)?.len())
    };
    let created = |len| Event::Created {
        context_id: id.clone(),
        status: TaskStatus {
            state: TaskState::Submitted,
            message: None,
            timestamp: Some(Timestamp(now_ms())),
        },
        message: Some(message(len)),
        metadata: None,
    };
    let fit = |make: &dyn Fn(usize) -> Event| -> Result<usize> {
        let mut len = PAYLOAD_BYTES.saturating_sub(encoded(make(0))?);
        while len > 0 && encoded(make(len))? > PAYLOAD_BYTES {
            len -= 1;
        }
        Ok(len)
    };
    Ok((fit(&created)?, fit(&|len| Event::Message(message(len)))?))
}

/// `RssAnon` of this process in bytes.
fn rss_anon() -> Result<u64> {
    let status = fs::read_to_string("/proc/self/status").context("read /proc/self/status")?;
    let line = status
        .lines()
        .find(|l| l.starts_with("RssAnon:"))
        .context("no RssAnon in /proc/self/status")?;
    let kb: u64 = line
        .trim_start_matches("RssAnon:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .with_context(|| format!("parse {line:?}"))?;
    Ok(kb * 1024)
}

/// (thread name, user + system clock ticks) from a `/proc/.../stat` text.
fn stat_ticks(stat: &str) -> Option<(&str, u64)> {
    // `pid (comm) state ...`: the name may hold spaces, so split at the last ')'.
    let (open, close) = (stat.find('(')?, stat.rfind(')')?);
    let fields: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    // Counting from the state (field 3 of proc_pid_stat(5)): utime is field 14, stime 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((stat.get(open + 1..close)?, utime + stime))
}

/// CPU seconds used so far by the whole process, exited threads included.
fn process_cpu_secs(ticks_per_sec: f64) -> f64 {
    fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| stat_ticks(&stat).map(|(_, ticks)| ticks as f64 / ticks_per_sec))
        .unwrap_or(f64::NAN)
}

/// CPU seconds used so far by the live threads whose name starts with `prefix`.
fn threads_cpu_secs(prefix: &str, ticks_per_sec: f64) -> f64 {
    let Ok(tasks) = fs::read_dir("/proc/self/task") else {
        return f64::NAN;
    };
    let mut total = 0u64;
    for task in tasks.flatten() {
        if let Ok(stat) = fs::read_to_string(task.path().join("stat"))
            && let Some((name, ticks)) = stat_ticks(&stat)
            && name.starts_with(prefix)
        {
            total += ticks;
        }
    }
    total as f64 / ticks_per_sec
}

/// Clock ticks per second of `/proc` CPU times.
fn clock_ticks() -> f64 {
    tasklog_benches::command_output("getconf", &["CLK_TCK"])
        .and_then(|t| t.parse().ok())
        .unwrap_or(100.0)
}

/// Runs `op` on one thread until `run` has passed (checking the clock every 1,024 calls); returns
/// calls per second.
fn rate_of(run: Duration, mut op: impl FnMut()) -> f64 {
    let start = Instant::now();
    let mut calls = 0u64;
    while start.elapsed() < run {
        for _ in 0..1_024 {
            op();
        }
        calls += 1_024;
    }
    calls as f64 / start.elapsed().as_secs_f64()
}

/// E7 then E4 on one store of `cfg.tasks` idle tasks.
fn gets_and_memory(dir: &Path, cfg: &Config) -> Result<Vec<Row>> {
    let n = cfg.tasks;
    let store = TaskStore::open(dir.join("e4"), options(SyncPolicy::Never))?;
    let before = rss_anon()?;
    let start = Instant::now();
    for i in 0..n {
        store.create(NewTask {
            task_id: Some(uuid_like(4, i)),
            context_id: Some(uuid_like(5, i / cfg.context_tasks)),
            ..NewTask::submitted(None)
        })?;
    }
    store.log().sync()?;
    let create_secs = start.elapsed().as_secs_f64();
    let after = rss_anon()?;
    eprintln!(
        "  created {n} tasks in {create_secs:.2} s; RssAnon {:.1} -> {:.1} MB",
        before as f64 / 1e6,
        after as f64 / 1e6
    );
    let per_task = after.saturating_sub(before) as f64 / n as f64;
    let mut rows = vec![
        Row::info(
            "E7",
            format!("RssAnon growth, {n} idle tasks"),
            after.saturating_sub(before) as f64 / 1e6,
            "MB",
        ),
        Row::info("E7", "resident memory per idle task", per_task, "B").with(Target::AtMost(200.0)),
        Row::info(
            "E7",
            "  size_of (CompactId, TaskMeta) slab entry",
            size_of::<(CompactId, TaskMeta)>() as f64,
            "B",
        ),
        Row::info(
            "E4",
            format!("create {n} tasks, Never, 1 thread"),
            n as f64 / create_secs,
            "/s",
        ),
    ];

    let ids: Vec<String> = (0..n).map(|i| uuid_like(4, i)).collect();
    let run = Duration::from_secs_f64(cfg.secs);
    let mut rng = XorShift64::new(44);
    let mut misses = 0u64;
    let summary_rate = rate_of(run, || {
        let id = &ids[rng.below(n) as usize];
        if black_box(store.summary(black_box(id))).is_none() {
            misses += 1;
        }
    });
    eprintln!("  summary: {summary_rate:.0}/s ({misses} misses)");
    rows.push(
        Row::info("E4", "summary(id), random id, 1 thread", summary_rate, "/s")
            .with(Target::AtLeast(1_000_000.0)),
    );
    let short = Duration::from_secs_f64((cfg.secs / 2.0).max(0.5));
    let version_rate = rate_of(short, || {
        let id = &ids[rng.below(n) as usize];
        black_box(store.version(black_box(id)));
    });
    rows.push(Row::info(
        "E4",
        "  version(id) (same lock+lookup, no clone)",
        version_rate,
        "/s",
    ));
    let map: HashMap<String, u64> = ids.iter().cloned().zip(0..).collect();
    let map_rate = rate_of(short, || {
        let id = &ids[rng.below(n) as usize];
        black_box(map.get(black_box(id.as_str())));
    });
    drop(map);
    rows.push(Row::info(
        "E4",
        "  bare HashMap<String,u64>::get, same ids",
        map_rate,
        "/s",
    ));
    let index_rate = rate_of(short, || {
        black_box(&ids[rng.below(n) as usize]);
    });
    rows.push(Row::info(
        "E4",
        "  random id pick alone (loop overhead)",
        index_rate,
        "/s",
    ));
    let get_rate = rate_of(short, || {
        let id = &ids[rng.below(n) as usize];
        let _ = black_box(store.get(black_box(id), Some(0)));
    });
    eprintln!("  get(id, Some(0)): {get_rate:.0}/s");
    rows.push(Row::info(
        "E4",
        "get(id, Some(0)), fold from the log",
        get_rate,
        "/s",
    ));
    store.close()?;
    fs::remove_dir_all(dir.join("e4")).context("remove the E4 store")?;
    Ok(rows)
}

/// Appends `events` records of the E5 shape (tasks `space`-numbered, [`OPEN_GROUP_TASKS`] at a
/// time, [`OPEN_EVENTS_PER_TASK`] each) in calls of [`BUILD_BATCH`].
fn build_open_store(log: &Log, events: u64, space: u64) -> Result<()> {
    let (created_pad, message_pad) = padding()?;
    let mut written = 0u64;
    let mut group = 0u64;
    let base_ms = now_ms();
    while written < events {
        let ids: Vec<(String, String)> = (0..OPEN_GROUP_TASKS)
            .map(|t| {
                let i = group * OPEN_GROUP_TASKS + t;
                (uuid_like(space, i), uuid_like(space + 1, i))
            })
            .collect();
        for round in 0..OPEN_EVENTS_PER_TASK {
            let mut payloads = Vec::with_capacity(ids.len());
            for (task_id, context_id) in &ids {
                if written + payloads.len() as u64 >= events {
                    break;
                }
                let timestamp = Timestamp(base_ms + (written / 1_000) as i64);
                let event = if round == 0 {
                    Event::Created {
                        context_id: context_id.clone(),
                        status: TaskStatus {
                            state: TaskState::Submitted,
                            message: None,
                            timestamp: Some(timestamp),
                        },
                        message: Some(message(created_pad)),
                        metadata: None,
                    }
                } else {
                    Event::Message(message(message_pad))
                };
                let batch = EventBatch {
                    task_id: task_id.clone(),
                    first_version: round + 1,
                    timestamp,
                    events: vec![event],
                };
                payloads.push(record::to_payload(&batch)?);
            }
            for chunk in payloads.chunks(BUILD_BATCH) {
                let records: Vec<NewRecord<'_>> = chunk
                    .iter()
                    .map(|p| NewRecord::new(TASK_BATCH_KIND, &p[..]))
                    .collect();
                log.append(&records)?;
            }
            written += payloads.len() as u64;
        }
        group += 1;
    }
    Ok(())
}

/// The E5 child: builds the store, reports `ready`, then appends from [`CHILD_APPENDERS`] threads
/// until it is killed.
fn child_main(sync_name: &str) -> Result<()> {
    let dir = PathBuf::from(std::env::var(CHILD_DIR_ENV).context(CHILD_DIR_ENV)?);
    let events: u64 = std::env::var(CHILD_EVENTS_ENV)
        .context(CHILD_EVENTS_ENV)?
        .parse()
        .context("child events")?;
    let sync = match sync_name {
        "always" => SyncPolicy::Always,
        "never" => SyncPolicy::Never,
        other => bail!("unknown child sync policy {other:?}"),
    };
    let log = Log::open(&dir, options(sync))?;
    build_open_store(&log, events, 50)?;
    log.close()?;
    // The store has run before and written a task checkpoint (as close and drop do); what the
    // kill leaves after it must be replayed.
    let store = TaskStore::open(&dir, options(sync))?;
    store.checkpoint()?;
    let (created_pad, _) = padding()?;
    let appended = AtomicU64::new(0);
    thread::scope(|scope| -> Result<()> {
        let mut handles = Vec::new();
        for t in 0..CHILD_APPENDERS as u64 {
            let (store, appended) = (&store, &appended);
            handles.push(scope.spawn(move || -> Result<()> {
                for i in 0.. {
                    store.create(NewTask {
                        task_id: Some(uuid_like(60 + t, i)),
                        ..NewTask::submitted(Some(message(created_pad)))
                    })?;
                    appended.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            }));
        }
        // Report ready once the appenders are running, so the kill lands mid-write.
        while appended.load(Ordering::Relaxed) < 100 {
            thread::sleep(Duration::from_millis(1));
        }
        let mut stdout = std::io::stdout();
        writeln!(stdout, "ready {}", store.log().next_position())?;
        stdout.flush()?;
        for handle in handles {
            handle
                .join()
                .map_err(|_| anyhow::anyhow!("child appender panicked"))??;
        }
        Ok(())
    })
}

/// Copies the files of `from` into a new directory `to`.
fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to).with_context(|| format!("create {to:?}"))?;
    for entry in fs::read_dir(from).with_context(|| format!("list {from:?}"))? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            fs::copy(entry.path(), to.join(entry.file_name()))
                .with_context(|| format!("copy {:?}", entry.path()))?;
        }
    }
    Ok(())
}

/// What one timed `TaskStore::open` found.
struct Opened {
    secs: f64,
    tasks: usize,
    records: u64,
    replayed: u64,
    checkpoint: bool,
}

/// Times `TaskStore::open` of `path`, then closes it (which writes a task checkpoint).
fn time_store_open(path: &Path) -> Result<Opened> {
    let start = Instant::now();
    let store = TaskStore::open(path, options(SyncPolicy::Always))?;
    let secs = start.elapsed().as_secs_f64();
    let report = store.open_report();
    let (first, last) = store.log().bounds();
    let opened = Opened {
        secs,
        tasks: store.len(),
        records: last.get() + 1 - first.get(),
        replayed: report.replayed_records,
        checkpoint: report.checkpoint_position.is_some(),
    };
    store.close()?;
    eprintln!(
        "    TaskStore::open {:.3} s: {} tasks, {} records, {} replayed, checkpoint {}",
        opened.secs, opened.tasks, opened.records, opened.replayed, opened.checkpoint
    );
    Ok(opened)
}

/// E5: open after a clean close and after SIGKILL of a writer (sync Always, then Never).
fn open_times(dir: &Path, cfg: &Config) -> Result<Vec<Row>> {
    let n = cfg.open_events;
    let scale = E5_DESIGN_EVENTS / n as f64;
    let mut rows = Vec::new();

    let clean = dir.join("e5-clean");
    let start = Instant::now();
    let log = Log::open(&clean, options(SyncPolicy::Never))?;
    build_open_store(&log, n, 50)?;
    log.close()?;
    let build_secs = start.elapsed().as_secs_f64();
    eprintln!("  built {n} events in {build_secs:.2} s");
    rows.push(Row::info(
        "E5",
        format!("build {n} events (bulk, Never, 1 sync)"),
        n as f64 / build_secs,
        "/s",
    ));
    // The first open finds no task checkpoint (the log was written directly): a full replay, as
    // after a kill of a store that never checkpointed. Its close writes the checkpoint.
    eprintln!("  first open (no task checkpoint):");
    let first = time_store_open(&clean)?;
    rows.push(Row::info(
        "E5",
        format!("TaskStore::open, no checkpoint, {} ev", first.records),
        first.secs,
        "s",
    ));
    rows.push(Row::info(
        "E5",
        "  full replay rate",
        first.replayed as f64 / first.secs,
        "/s",
    ));
    let start = Instant::now();
    let log = Log::open(&clean, options(SyncPolicy::Always))?;
    let log_secs = start.elapsed().as_secs_f64();
    log.close()?;
    eprintln!("  clean: Log::open {log_secs:.3} s");
    let opened = time_store_open(&clean)?;
    let clean_secs = opened.secs;
    rows.push(Row::info("E5", "Log::open, clean", log_secs, "s"));
    rows.push(Row::info(
        "E5",
        format!(
            "TaskStore::open, clean, {} replayed{}",
            opened.replayed,
            if opened.checkpoint { "" } else { " (no ckpt!)" }
        ),
        opened.secs,
        "s",
    ));
    rows.push(
        Row::info(
            "E5",
            "TaskStore::open, clean, scaled to 10 M",
            opened.secs * scale,
            "s",
        )
        .with(Target::AtMost(0.5)),
    );
    fs::remove_dir_all(&clean).context("remove the clean E5 store")?;

    let exe = std::env::current_exe().context("current_exe")?;
    for sync_name in ["always", "never"] {
        let killed = dir.join(format!("e5-kill-{sync_name}"));
        let start = Instant::now();
        let mut child = Command::new(&exe)
            .env(CHILD_ENV, sync_name)
            .env(CHILD_DIR_ENV, &killed)
            .env(CHILD_EVENTS_ENV, n.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("spawn {exe:?}"))?;
        let mut line = String::new();
        let stdout = child.stdout.take().context("child stdout")?;
        BufReader::new(stdout).read_line(&mut line)?;
        if !line.starts_with("ready") {
            let _ = child.kill();
            let status = child.wait()?;
            bail!("the E5 child did not get ready ({status}): {line:?}");
        }
        thread::sleep(KILL_AFTER);
        child.kill().context("kill the E5 child")?;
        let status = child.wait()?;
        eprintln!(
            "  child ({sync_name}) built, checkpointed and appended for {:.2} s, {}, killed: {status}",
            start.elapsed().as_secs_f64(),
            line.trim()
        );
        let copy = dir.join(format!("e5-kill-{sync_name}-copy"));
        copy_dir(&killed, &copy)?;
        let start = Instant::now();
        let log = Log::open(&copy, options(SyncPolicy::Always))?;
        let log_secs = start.elapsed().as_secs_f64();
        let report = log.recovery_report().clone();
        log.close()?;
        fs::remove_dir_all(&copy).context("remove the copy")?;
        eprintln!(
            "  kill ({sync_name}): Log::open {log_secs:.3} s (scanned {} B, {} truncations)",
            report.scanned_bytes,
            report.truncations.len()
        );
        let opened = time_store_open(&killed)?;
        let what = format!("kill -9 ({sync_name})");
        rows.push(Row::info("E5", format!("Log::open, {what}"), log_secs, "s"));
        rows.push(Row::info(
            "E5",
            format!("  recovery scanned, {what}"),
            report.scanned_bytes as f64 / 1e6,
            "MB",
        ));
        rows.push(Row::info(
            "E5",
            format!("TaskStore::open, {what}, {} replayed", opened.replayed),
            opened.secs,
            "s",
        ));
        rows.push(
            Row::info(
                "E5",
                format!("TaskStore::open, {what}, scaled to 10 M"),
                opened.secs + clean_secs * (scale - 1.0),
                "s",
            )
            .with(Target::AtMost(3.0)),
        );
        fs::remove_dir_all(&killed).context("remove the killed E5 store")?;
    }
    Ok(rows)
}

/// When each record of the subscribed run was appended: the start of its writer's `append` call
/// and the call's return, in ns since `epoch` (+ 1; 0: not stamped), indexed by log position.
struct Stamps {
    epoch: Instant,
    first: u64,
    called: Vec<AtomicU64>,
    returned: Vec<AtomicU64>,
}

impl Stamps {
    fn new(epoch: Instant, first: u64, len: usize) -> Self {
        Stamps {
            epoch,
            first,
            called: (0..len).map(|_| AtomicU64::new(0)).collect(),
            returned: (0..len).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn ns(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX - 1)
            + 1
    }

    fn index(&self, position: Position) -> Option<usize> {
        let i = usize::try_from(position.get().checked_sub(self.first)?).ok()?;
        (i < self.called.len()).then_some(i)
    }

    fn stamp(&self, position: Position, called: Instant, returned: Instant) {
        if let Some(i) = self.index(position) {
            self.called[i].store(self.ns(called), Ordering::Relaxed);
            self.returned[i].store(self.ns(returned), Ordering::Relaxed);
        }
    }

    /// Latencies in µs of every position received: (from the append's return, 0 if received
    /// before it; from the append's call); and how many were received before the return.
    /// Positions never stamped are skipped.
    fn latencies(&self, receipts: &[Receipt]) -> (Vec<u32>, Vec<u32>, u64) {
        let us = |ns: u64| u32::try_from(ns / 1_000).unwrap_or(u32::MAX);
        let mut from_return = Vec::with_capacity(receipts.len());
        let mut from_call = Vec::with_capacity(receipts.len());
        let mut early = 0;
        let positions = receipts.iter().flat_map(|receipt| {
            (receipt.first..=receipt.last).map(|position| (Position::new(position), receipt.at_ns))
        });
        for (position, received) in positions {
            let Some(i) = self.index(position) else {
                continue;
            };
            let (called, returned) = (
                self.called[i].load(Ordering::Relaxed),
                self.returned[i].load(Ordering::Relaxed),
            );
            if called == 0 {
                continue;
            }
            if received < returned {
                early += 1;
            }
            from_return.push(us(received.saturating_sub(returned)));
            from_call.push(us(received.saturating_sub(called)));
        }
        (from_return, from_call, early)
    }
}

/// What one paced write run did.
struct WriteRun {
    events: u64,
    seconds: f64,
    latencies_ns: Vec<u64>,
}

impl WriteRun {
    fn rate(&self) -> f64 {
        self.events as f64 / self.seconds
    }
}

/// A latency sample: nanoseconds (writers) or microseconds (deliveries).
trait Sample: Copy {
    fn as_f64(self) -> f64;
}

impl Sample for u64 {
    fn as_f64(self) -> f64 {
        self as f64
    }
}

impl Sample for u32 {
    fn as_f64(self) -> f64 {
        f64::from(self)
    }
}

/// `q`-quantile of sorted values.
fn quantile<T: Sample>(sorted: &[T], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len());
    sorted.get(rank - 1).map_or(f64::NAN, |v| v.as_f64())
}

/// `cfg.writers` threads append one message each call to their share of `ids`, paced to
/// `cfg.rate` events/s in all, for `cfg.write_secs`.
fn paced_writes(
    store: &TaskStore,
    ids: &[String],
    cfg: &Config,
    stamps: Option<&Stamps>,
) -> Result<WriteRun> {
    let (_, message_pad) = padding()?;
    let event = Event::Message(message(message_pad));
    let per_writer = cfg.rate / cfg.writers as f64;
    let run = Duration::from_secs_f64(cfg.write_secs);
    let tick = Duration::from_millis(1);
    let start = Instant::now() + Duration::from_millis(20);
    let deadline = start + run;
    let results: Vec<_> = thread::scope(|scope| {
        let handles: Vec<_> = (0..cfg.writers)
            .map(|w| {
                let mine: Vec<&String> = ids.iter().skip(w).step_by(cfg.writers).collect();
                let event = &event;
                scope.spawn(move || -> Result<(u64, Vec<u64>)> {
                    let mut latencies = Vec::with_capacity((per_writer * cfg.write_secs) as usize);
                    let mut sent = 0u64;
                    thread::sleep(start.saturating_duration_since(Instant::now()));
                    loop {
                        let now = Instant::now();
                        if now >= deadline || mine.is_empty() {
                            break;
                        }
                        let elapsed = now.duration_since(start);
                        let due = (elapsed.as_secs_f64() * per_writer).ceil() as u64;
                        while sent < due && Instant::now() < deadline {
                            let id = mine[(sent % mine.len() as u64) as usize];
                            let call = Instant::now();
                            let written = store.append(id, None, vec![event.clone()])?;
                            let returned = Instant::now();
                            latencies.push(
                                u64::try_from(returned.duration_since(call).as_nanos())
                                    .unwrap_or(u64::MAX),
                            );
                            if let Some(stamps) = stamps {
                                stamps.stamp(written.position, call, returned);
                            }
                            sent += 1;
                        }
                        let ticks = Instant::now().duration_since(start).as_micros() / 1_000 + 1;
                        let next = start + tick * u32::try_from(ticks).unwrap_or(u32::MAX);
                        thread::sleep(next.saturating_duration_since(Instant::now()));
                    }
                    Ok((sent, latencies))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join()).collect()
    });
    let seconds = start.elapsed().as_secs_f64();
    let mut events = 0;
    let mut latencies_ns = Vec::new();
    for result in results {
        let (sent, mut latencies) = result
            .map_err(|_| anyhow::anyhow!("a writer thread panicked"))?
            .context("writer thread")?;
        events += sent;
        latencies_ns.append(&mut latencies);
    }
    latencies_ns.sort_unstable();
    Ok(WriteRun {
        events,
        seconds,
        latencies_ns,
    })
}

/// Consecutive log positions received at one moment.
#[derive(Clone, Copy)]
struct Receipt {
    first: u64,
    last: u64,
    /// When, in ns since the stamps' epoch.
    at_ns: u64,
}

/// What one subscriber or tail received.
#[derive(Default)]
struct Followed {
    events: u64,
    /// Deliveries out of order, duplicated or with a gap, and read errors.
    errors: u64,
    /// Every record received, consecutive positions received together as one receipt. Sized up
    /// front by the caller: grown by doubling, the 100 tails' lists used to be copied all at once
    /// (they grow in step), and those copies and their page faults held up the runtime's workers
    /// for tens of milliseconds, which the run then reported as delivery latency.
    receipts: Vec<Receipt>,
}

impl Followed {
    fn with_capacity(receipts: usize) -> Self {
        Followed {
            receipts: Vec::with_capacity(receipts),
            ..Followed::default()
        }
    }

    /// Notes `position` as received at `at_ns`, extending the last receipt if it can.
    fn receive(&mut self, position: Position, at_ns: u64) {
        let position = position.get();
        match self.receipts.last_mut() {
            Some(last) if last.at_ns == at_ns && last.last + 1 == position => last.last = position,
            _ => self.receipts.push(Receipt {
                first: position,
                last: position,
                at_ns,
            }),
        }
    }
}

async fn follow_task(
    mut subscription: TaskSubscription,
    mut stop: watch::Receiver<bool>,
    stamps: Arc<Stamps>,
    delivered: Arc<AtomicU64>,
    receipts_max: usize,
) -> Followed {
    let mut out = Followed::with_capacity(receipts_max);
    let mut expected = subscription.next_version();
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            next = subscription.next() => match next {
                Ok(Some(delivery)) => {
                    let now = stamps.ns(Instant::now());
                    if delivery.first_version != expected {
                        out.errors += 1;
                    }
                    let count = delivery.events.len() as u64;
                    expected = delivery.first_version + count;
                    out.events += count;
                    out.receive(delivery.position, now);
                    delivered.fetch_add(count, Ordering::Relaxed);
                }
                Ok(None) => break,
                Err(_) => {
                    out.errors += 1;
                    break;
                }
            },
        }
    }
    out
}

async fn follow_tail(
    mut tail: Tail,
    mut stop: watch::Receiver<bool>,
    stamps: Arc<Stamps>,
    delivered: Arc<AtomicU64>,
    receipts_max: usize,
) -> Followed {
    let mut out = Followed::with_capacity(receipts_max);
    let mut expected = tail.next_position().get();
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            next = tail.next(TAIL_MAX) => match next {
                Ok(batches) => {
                    let now = stamps.ns(Instant::now());
                    let mut count = 0;
                    for (position, batch) in batches {
                        if position.get() != expected {
                            out.errors += 1;
                        }
                        expected = position.get() + 1;
                        count += batch.events.len() as u64;
                        out.receive(position, now);
                    }
                    out.events += count;
                    delivered.fetch_add(count, Ordering::Relaxed);
                }
                Err(_) => {
                    out.errors += 1;
                    break;
                }
            },
        }
    }
    out
}

/// E6: the paced write load without, then with, task subscribers and tails.
fn subscribers(dir: &Path, cfg: &Config) -> Result<Vec<Row>> {
    let path = dir.join("e6");
    let ids: Vec<String> = (0..cfg.subscribers as u64)
        .map(|i| uuid_like(6, i))
        .collect();
    {
        let store = TaskStore::open(&path, options(SyncPolicy::Never))?;
        for id in &ids {
            store.create(NewTask {
                task_id: Some(id.clone()),
                ..NewTask::submitted(None)
            })?;
        }
        store.close()?;
    }
    let store = Arc::new(TaskStore::open(&path, options(SyncPolicy::Always))?);

    eprintln!("  baseline: no subscriber ...");
    let ticks = clock_ticks();
    let cpu_before = process_cpu_secs(ticks);
    let base = paced_writes(&store, &ids, cfg, None)?;
    let base_cores = (process_cpu_secs(ticks) - cpu_before) / base.seconds;
    eprintln!(
        "  baseline: {} events in {:.2} s = {:.0}/s, p50 {:.0} µs, p99 {:.0} µs",
        base.events,
        base.seconds,
        base.rate(),
        quantile(&base.latencies_ns, 0.5) / 1e3,
        quantile(&base.latencies_ns, 0.99) / 1e3
    );

    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Ok(threads) = std::env::var("TASKLOG_STORE_BENCH_RUNTIME_THREADS") {
        builder.worker_threads(
            threads
                .parse()
                .context("TASKLOG_STORE_BENCH_RUNTIME_THREADS")?,
        );
    }
    let runtime = builder.enable_all().build().context("tokio runtime")?;
    let epoch = Instant::now();
    let first = store.log().acknowledged_position().get() + 1;
    let capacity = (cfg.rate * cfg.write_secs * 1.5) as usize + 10_000;
    let stamps = Arc::new(Stamps::new(epoch, first, capacity));
    let delivered = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut versions_before = Vec::with_capacity(ids.len());
    let mut task_handles = Vec::with_capacity(ids.len());
    // Receipts each follower may need: a task's share of the writes (with room for an uneven
    // share), a tail's one per record at most.
    let task_receipts_max = capacity / ids.len().max(1) * 2 + 16;
    for id in &ids {
        let version = store.version(id).context("a created task")?;
        versions_before.push(version);
        let subscription = store.subscribe(id, version + 1)?;
        task_handles.push(runtime.spawn(follow_task(
            subscription,
            stop_rx.clone(),
            stamps.clone(),
            delivered.clone(),
            task_receipts_max,
        )));
    }
    let tail_handles: Vec<_> = (0..cfg.tails)
        .map(|_| {
            let tail = store.tail(Position::new(first));
            runtime.spawn(follow_tail(
                tail,
                stop_rx.clone(),
                stamps.clone(),
                delivered.clone(),
                capacity,
            ))
        })
        .collect();
    // Let every subscriber park on its first wait before the load starts.
    thread::sleep(Duration::from_millis(200));

    eprintln!(
        "  with {} subscribers and {} tails ...",
        ids.len(),
        cfg.tails
    );
    let cpu_before = process_cpu_secs(ticks);
    let runtime_before = threads_cpu_secs("tokio-rt", ticks);
    let loaded = paced_writes(&store, &ids, cfg, Some(&stamps))?;
    let loaded_cores = (process_cpu_secs(ticks) - cpu_before) / loaded.seconds;
    let runtime_cores = (threads_cpu_secs("tokio-rt", ticks) - runtime_before) / loaded.seconds;
    let last = store.log().acknowledged_position().get();
    let records = (last + 1).saturating_sub(first);
    // Events each subscriber is owed: what its task gained during the subscribed run.
    let owed: Vec<u64> = ids
        .iter()
        .zip(&versions_before)
        .map(|(id, before)| store.version(id).unwrap_or(*before) - before)
        .collect();
    let task_expected: u64 = owed.iter().sum();
    let expected_total = task_expected + records * cfg.tails as u64;
    let drain_start = Instant::now();
    while delivered.load(Ordering::Relaxed) < expected_total
        && drain_start.elapsed() < DRAIN_TIMEOUT
    {
        thread::sleep(Duration::from_millis(5));
    }
    let drain_secs = drain_start.elapsed().as_secs_f64();
    let _ = stop_tx.send(true);
    let (task_results, tail_results) = runtime.block_on(async {
        let mut tasks = Vec::with_capacity(task_handles.len());
        for handle in task_handles {
            tasks.push(handle.await);
        }
        let mut tails = Vec::with_capacity(tail_handles.len());
        for handle in tail_handles {
            tails.push(handle.await);
        }
        (tasks, tails)
    });
    runtime.shutdown_timeout(Duration::from_secs(1));
    eprintln!(
        "  loaded: {} events in {:.2} s = {:.0}/s, p50 {:.0} µs, p99 {:.0} µs; drained in {drain_secs:.3} s",
        loaded.events,
        loaded.seconds,
        loaded.rate(),
        quantile(&loaded.latencies_ns, 0.5) / 1e3,
        quantile(&loaded.latencies_ns, 0.99) / 1e3
    );
    // The machine is shared: a second baseline after the loaded run, and the mean of the two as
    // the reference, keeps a drift in the background load from reading as a slowdown.
    eprintln!("  baseline again: no subscriber ...");
    let cpu_before = process_cpu_secs(ticks);
    let base_after = paced_writes(&store, &ids, cfg, None)?;
    let base_after_cores = (process_cpu_secs(ticks) - cpu_before) / base_after.seconds;
    eprintln!(
        "  baseline again: {} events in {:.2} s = {:.0}/s, p50 {:.0} µs, p99 {:.0} µs",
        base_after.events,
        base_after.seconds,
        base_after.rate(),
        quantile(&base_after.latencies_ns, 0.5) / 1e3,
        quantile(&base_after.latencies_ns, 0.99) / 1e3
    );

    let mut lost = 0u64;
    let mut errors = 0u64;
    let mut early = 0u64;
    let (mut task_latencies, mut task_from_call) = (Vec::new(), Vec::new());
    for (result, &expected) in task_results.into_iter().zip(&owed) {
        let followed = result.context("a task subscriber panicked")?;
        lost += expected.saturating_sub(followed.events);
        errors += followed.errors + followed.events.saturating_sub(expected);
        let (mut from_return, mut from_call, before_return) = stamps.latencies(&followed.receipts);
        early += before_return;
        task_latencies.append(&mut from_return);
        task_from_call.append(&mut from_call);
    }
    let (mut tail_latencies, mut tail_from_call) = (Vec::new(), Vec::new());
    for result in tail_results {
        let followed = result.context("a tail panicked")?;
        lost += records.saturating_sub(followed.events);
        errors += followed.errors + followed.events.saturating_sub(records);
        let (mut from_return, mut from_call, before_return) = stamps.latencies(&followed.receipts);
        early += before_return;
        tail_latencies.append(&mut from_return);
        tail_from_call.append(&mut from_call);
    }
    for sorted in [
        &mut task_latencies,
        &mut task_from_call,
        &mut tail_latencies,
        &mut tail_from_call,
    ] {
        sorted.sort_unstable();
    }
    let ms = |sorted: &[u32], q| quantile(sorted, q) / 1e3;

    let us = |run: &WriteRun, q| quantile(&run.latencies_ns, q) / 1e3;
    // The reference is the faster of the two baselines (the one the background disturbed less);
    // when they differ by more than the 10 % the target allows, no verdict is given.
    let best = if base.rate() >= base_after.rate() {
        &base
    } else {
        &base_after
    };
    let (base_rate, base_p50, base_p99) = (best.rate(), us(best, 0.5), us(best, 0.99));
    let spread = (base.rate() - base_after.rate()).abs() / base_rate * 100.0;
    let slowdown_vs = |reference: &WriteRun| {
        let rate_drop = (1.0 - loaded.rate() / reference.rate()) * 100.0;
        let p50_rise = (us(&loaded, 0.5) / us(reference, 0.5) - 1.0) * 100.0;
        rate_drop.max(p50_rise)
    };
    // No verdict when the two baselines lead to different ones.
    let noisy = (slowdown_vs(&base) <= 10.0) != (slowdown_vs(&base_after) <= 10.0);
    let rate_drop = (1.0 - loaded.rate() / base_rate) * 100.0;
    let p50_rise = (us(&loaded, 0.5) / base_p50 - 1.0) * 100.0;
    let p99_rise = (us(&loaded, 0.99) / base_p99 - 1.0) * 100.0;
    let rows = vec![
        Row::info(
            "E6",
            "writes, no subscriber (before): rate",
            base.rate(),
            "/s",
        ),
        Row::info(
            "E6",
            "  append p50, no subscriber (before)",
            us(&base, 0.5),
            "µs",
        ),
        Row::info(
            "E6",
            "  append p99, no subscriber (before)",
            us(&base, 0.99),
            "µs",
        ),
        Row::info(
            "E6",
            "writes, no subscriber (after): rate",
            base_after.rate(),
            "/s",
        ),
        Row::info(
            "E6",
            "  append p50, no subscriber (after)",
            us(&base_after, 0.5),
            "µs",
        ),
        Row::info(
            "E6",
            "  append p99, no subscriber (after)",
            us(&base_after, 0.99),
            "µs",
        ),
        Row::info("E6", "writes, with subscribers: rate", loaded.rate(), "/s"),
        Row::info(
            "E6",
            "  append p50, with subscribers",
            us(&loaded, 0.5),
            "µs",
        ),
        Row::info(
            "E6",
            "  append p99, with subscribers",
            us(&loaded, 0.99),
            "µs",
        ),
        Row::info(
            "E6",
            "  process CPU, no subscriber (before/after)",
            f64::midpoint(base_cores, base_after_cores),
            "cores",
        ),
        Row::info(
            "E6",
            "  process CPU, with subscribers",
            loaded_cores,
            "cores",
        ),
        Row::info("E6", "    of which tokio workers", runtime_cores, "cores"),
        Row::info("E6", "  baselines differ by (rate)", spread, "%"),
        Row::info("E6", "  rate drop vs faster baseline", rate_drop, "%"),
        Row::info("E6", "  append p50 rise vs faster baseline", p50_rise, "%"),
        Row::info("E6", "  append p99 rise vs faster baseline", p99_rise, "%"),
        Row::info(
            "E6",
            "writer slowdown (max of rate drop, p50 rise)",
            rate_drop.max(p50_rise),
            "%",
        )
        .with(Target::AtMost(10.0))
        .noisy_if(noisy),
        Row::info("E6", "task delivery p50", ms(&task_latencies, 0.5), "ms"),
        Row::info("E6", "task delivery p99", ms(&task_latencies, 0.99), "ms")
            .with(Target::AtMost(10.0)),
        Row::info("E6", "tail delivery p50", ms(&tail_latencies, 0.5), "ms"),
        Row::info("E6", "tail delivery p99", ms(&tail_latencies, 0.99), "ms")
            .with(Target::AtMost(10.0)),
        Row::info("E6", "  tail delivery max", ms(&tail_latencies, 1.0), "ms"),
        Row::info(
            "E6",
            "  task delivery p50 from append call",
            ms(&task_from_call, 0.5),
            "ms",
        ),
        Row::info(
            "E6",
            "  task delivery p99 from append call",
            ms(&task_from_call, 0.99),
            "ms",
        ),
        Row::info(
            "E6",
            "  tail delivery p50 from append call",
            ms(&tail_from_call, 0.5),
            "ms",
        ),
        Row::info(
            "E6",
            "  tail delivery p99 from append call",
            ms(&tail_from_call, 0.99),
            "ms",
        ),
        Row::info(
            "E6",
            "  events expected (tasks + tails)",
            expected_total as f64,
            "ev",
        ),
        Row::info(
            "E6",
            "  events delivered",
            delivered.load(Ordering::Relaxed) as f64,
            "ev",
        ),
        Row::info("E6", "  drain after writers stopped", drain_secs, "s"),
        Row::info(
            "E6",
            "  delivered before append returned",
            early as f64,
            "ev",
        ),
        Row::info("E6", "events lost", lost as f64, "ev").with(Target::AtMost(0.0)),
        Row::info("E6", "order errors / duplicates", errors as f64, "ev").with(Target::AtMost(0.0)),
    ];
    drop(store);
    fs::remove_dir_all(&path).context("remove the E6 store")?;
    Ok(rows)
}

fn print_table(facts: &[(&str, String)], rows: &[Row]) {
    println!();
    println!("tasklog store summary (DESIGN.md §6, E4-E7)");
    for (key, value) in facts {
        println!("  {key:<21} {value}");
    }
    println!();
    println!(
        "{:<4} {:<48} {:>18} {:>18}  met",
        "id", "workload", "value", "target"
    );
    println!("{}", "-".repeat(96));
    for row in rows {
        let verdict = match row.met() {
            Some(true) => "yes",
            Some(false) => "NO",
            None if row.noisy => "noisy",
            None => "",
        };
        println!(
            "{:<4} {:<48} {:>18} {:>18}  {}",
            row.id,
            row.workload,
            row.value_text(),
            row.target_text(),
            verdict
        );
    }
}

fn to_json(facts: &[(&str, String)], rows: &[Row]) -> String {
    let mut out = json_head(facts);
    let rows_json: Vec<String> = rows
        .iter()
        .map(|row| {
            let met = row
                .met()
                .map_or("null", |m| if m { "true" } else { "false" });
            format!(
                "    {{\"id\": {}, \"workload\": {}, \"value\": {}, \"unit\": {}, \"target\": {}, \
                 \"met\": {met}, \"noisy\": {}}}",
                json_string(row.id),
                json_string(row.workload.trim()),
                json_number(row.value),
                json_string(row.unit),
                json_string(&row.target_text()),
                row.noisy,
            )
        })
        .collect();
    out.push_str(&rows_json.join(",\n"));
    out.push_str("\n  ]\n}\n");
    out
}

fn main() -> Result<()> {
    if let Ok(sync_name) = std::env::var(CHILD_ENV) {
        return child_main(&sync_name);
    }
    let cfg = Config::from_env()?;
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    fs::create_dir_all(tmp).with_context(|| format!("create {tmp:?}"))?;
    let dir = tempfile::tempdir_in(tmp).with_context(|| format!("temp dir in {tmp:?}"))?;
    let mut facts = machine_facts(dir.path());
    facts.extend(cfg.facts());

    let mut rows = Vec::new();
    type Workload = fn(&Path, &Config) -> Result<Vec<Row>>;
    let workloads: [(&str, bool, Workload); 3] = [
        (
            "E7+E4 (memory, gets)",
            cfg.runs("E4") || cfg.runs("E7"),
            gets_and_memory,
        ),
        ("E5 (open)", cfg.runs("E5"), open_times),
        ("E6 (subscribers)", cfg.runs("E6"), subscribers),
    ];
    let total = Instant::now();
    for (name, run, workload) in workloads {
        if !run {
            continue;
        }
        eprintln!("running {name} ...");
        let start = Instant::now();
        rows.extend(workload(dir.path(), &cfg).with_context(|| format!("workload {name}"))?);
        eprintln!("  {name} took {:.1} s", start.elapsed().as_secs_f64());
    }
    facts.push((
        "total_seconds",
        format!("{:.1}", total.elapsed().as_secs_f64()),
    ));
    print_table(&facts, &rows);

    let json_path: PathBuf = tmp
        .parent()
        .unwrap_or(tmp)
        .join("tasklog-store-summary.json");
    fs::write(&json_path, to_json(&facts, &rows))
        .with_context(|| format!("write {json_path:?}"))?;
    println!("written to {}", json_path.display());
    Ok(())
}
