//! The embedded comparison (issue 5, item 1): the same task-store workload on tasklog-engine and on
//! the stores a Rust A2A server would embed instead (SQLite, redb, fjall), in one run, on one disk.
//!
//! 1. Each store passes [`peers::check`] on a fresh store of its own (insert-if-absent,
//!    compare-and-set, `get`, `list` paging, `tail` order); a broken promise stops the run with an
//!    error (exit 1).
//! 2. Each store is opened fresh and gets the read set, written by 16 threads (not timed):
//!    `TASKLOG_PEERS_READ_TASKS` tasks (default 1,000) in 10 contexts (two pages each), each with
//!    4 events (created, status, artifact, artifact chunk).
//! 3. Read cells at every thread count: `get` of random read-set tasks (all 4 events), `list` of
//!    one context page by page (50 tasks a page), `tail` of every event from position 0 in calls
//!    of 100 events.
//! 4. Write cells at every thread count: `create` of new tasks, `status` updates and `artifact`
//!    chunk appends with compare-and-set on the version. Each writer thread writes only its own
//!    tasks, so a compare-and-set never conflicts across writers; any conflict is an error.
//!
//! The stores take turns cell by cell, so that all four numbers of a cell come from the same
//! minute of a shared disk. A raw `pwrite + fdatasync` loop at the start, at the end and for a
//! quarter of a second before each write cell says how fast the disk was.
//!
//! Every cell runs `TASKLOG_PEERS_SECONDS` (default 2) or `TASKLOG_PEERS_CALLS_MAX` calls
//! (default 200,000), whichever ends first, on `TASKLOG_PEERS_THREADS` threads (default
//! `1,16,64`). `TASKLOG_PEERS_STORES` picks stores (default `tasklog,sqlite,redb,fjall`). Every
//! write is durable before it returns (each store's promise is printed). The table is printed and
//! written to `target/peers.json`. Numbers are printed, never asserted. Run with
//! `cargo bench --locked -p tasklog-benches --bench peers`.

use std::path::{Path, PathBuf};
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use tasklog_benches::peers::{
    self, Change, EVENT_PAYLOAD_BYTES, Outcome, PEER_VERSIONS, Store, text_payload,
};
use tasklog_benches::{RawAppender, XorShift64, json_head, json_number, json_string};

/// Stores compared, tasklog first (every ratio is to it). In each cell they take turns, the first
/// one rotating from cell to cell.
const STORES: [&str; 4] = ["tasklog", "sqlite", "redb", "fjall"];
const SECONDS_DEFAULT: f64 = 2.0;
const CALLS_MAX_DEFAULT: u64 = 200_000;
const THREADS_DEFAULT: [usize; 3] = [1, 16, 64];
const READ_TASKS_DEFAULT: usize = 1_000;
/// Contexts of the read set (1,000 tasks: 100 per context, two pages).
const READ_CONTEXTS: usize = 10;
/// Events each read-set task holds (created, status, artifact, artifact chunk).
const READ_TASK_EVENTS: u64 = 4;
/// Threads that write the read set.
const PREPARE_THREADS: usize = 16;
/// How long the disk is probed (raw `pwrite + fdatasync`) before each write cell.
const DISK_PROBE: Duration = Duration::from_millis(250);
/// Tasks per `list` page (A2A's page size is at most 100).
const LIST_PAGE_SIZE: usize = 50;
/// Events per `tail` call.
const TAIL_BATCH: usize = 100;
/// Environment variables that change the run (echoed in the command of the results).
const ENV_VARS: [&str; 5] = [
    "TASKLOG_PEERS_SECONDS",
    "TASKLOG_PEERS_CALLS_MAX",
    "TASKLOG_PEERS_THREADS",
    "TASKLOG_PEERS_STORES",
    "TASKLOG_PEERS_READ_TASKS",
];

/// The run's settings, from the environment.
struct Config {
    run: Duration,
    calls_max: u64,
    threads: Vec<usize>,
    stores: Vec<&'static str>,
    read_tasks: usize,
}

fn env_number<T: std::str::FromStr>(
    name: &str,
    default: T,
    valid: impl Fn(&T) -> bool,
) -> Result<T> {
    match std::env::var(name) {
        Ok(text) => text
            .trim()
            .parse::<T>()
            .ok()
            .filter(valid)
            .with_context(|| format!("{name}={text:?} is not a valid value")),
        Err(_) => Ok(default),
    }
}

impl Config {
    fn from_env() -> Result<Self> {
        let seconds = env_number("TASKLOG_PEERS_SECONDS", SECONDS_DEFAULT, |s| {
            s.is_finite() && *s > 0.0
        })?;
        let calls_max = env_number("TASKLOG_PEERS_CALLS_MAX", CALLS_MAX_DEFAULT, |n| *n > 0)?;
        let read_tasks = env_number("TASKLOG_PEERS_READ_TASKS", READ_TASKS_DEFAULT, |n| {
            *n >= READ_CONTEXTS
        })?;
        let threads = match std::env::var("TASKLOG_PEERS_THREADS") {
            Ok(text) => text
                .split(',')
                .map(|t| {
                    t.trim()
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=1024).contains(n))
                })
                .collect::<Option<Vec<_>>>()
                .with_context(|| format!("TASKLOG_PEERS_THREADS={text:?}: want e.g. 1,16,64"))?,
            Err(_) => THREADS_DEFAULT.to_vec(),
        };
        let stores = match std::env::var("TASKLOG_PEERS_STORES") {
            Ok(text) => text
                .split(',')
                .map(|name| {
                    STORES
                        .iter()
                        .find(|s| **s == name.trim())
                        .copied()
                        .with_context(|| format!("unknown store {name:?}; known: {STORES:?}"))
                })
                .collect::<Result<Vec<_>>>()?,
            Err(_) => STORES.to_vec(),
        };
        Ok(Config {
            run: Duration::from_secs_f64(seconds),
            calls_max,
            threads,
            stores,
            read_tasks,
        })
    }
}

fn open(name: &str, dir: &Path) -> Result<Box<dyn Store>> {
    Ok(match name {
        "tasklog" => Box::new(peers::tasklog::TasklogStore::open(dir)?),
        "sqlite" => Box::new(peers::sqlite::SqliteStore::open(dir)?),
        "redb" => Box::new(peers::redb_store::RedbStore::open(dir)?),
        "fjall" => Box::new(peers::fjall_store::FjallStore::open(dir)?),
        other => bail!("unknown store {other}"),
    })
}

/// The operations measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Create,
    Status,
    Artifact,
    Get,
    List,
    Tail,
}

impl Op {
    const ALL: [Op; 6] = [
        Op::Create,
        Op::Status,
        Op::Artifact,
        Op::Get,
        Op::List,
        Op::Tail,
    ];

    fn name(self) -> &'static str {
        match self {
            Op::Create => "create",
            Op::Status => "status (CAS)",
            Op::Artifact => "artifact (CAS)",
            Op::Get => "get",
            Op::List => "list page",
            Op::Tail => "tail",
        }
    }

    fn is_write(self) -> bool {
        matches!(self, Op::Create | Op::Status | Op::Artifact)
    }

    /// What one unit of the ops/s column is.
    fn unit(self) -> &'static str {
        match self {
            Op::Create | Op::Status | Op::Artifact => "durable write",
            Op::Get => "task (4 events)",
            Op::List => "page of 50",
            Op::Tail => "event",
        }
    }
}

/// What one cell measured.
struct Cell {
    store: &'static str,
    op: Op,
    threads: usize,
    /// Calls made (one write, get, page or tail call each).
    calls: u64,
    /// Units done (equal to calls, except for tail: events read).
    units: u64,
    seconds: f64,
    /// Per-call latency percentiles in µs.
    p50_us: f64,
    p99_us: f64,
    /// For a write cell: the raw `pwrite + fdatasync` rate of the disk, one thread, measured
    /// for [`DISK_PROBE`] just before the cell (the ceiling of one sync per write at that moment).
    disk_per_sec: Option<f64>,
}

impl Cell {
    fn rate(&self) -> f64 {
        self.units as f64 / self.seconds
    }
}

/// What one thread of a cell measured.
struct ThreadResult {
    start: Instant,
    end: Instant,
    calls: u64,
    units: u64,
    latencies_ns: Vec<u64>,
}

/// Runs `step` on `threads` threads until `config.run` has passed or `config.calls_max` calls
/// (split between the threads) were made. `setup` prepares each thread's state before the clock
/// starts; `step` makes one call and returns the units it did.
fn run_cell<S>(
    config: &Config,
    threads: usize,
    setup: impl Fn(usize) -> Result<S> + Sync,
    step: impl Fn(&mut S) -> Result<u64> + Sync,
) -> Result<(u64, u64, f64, f64, f64)> {
    let barrier = Barrier::new(threads);
    let calls_cap = (config.calls_max / threads as u64).max(1);
    let results: Vec<Result<ThreadResult>> = thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (barrier, setup, step) = (&barrier, &setup, &step);
                scope.spawn(move || {
                    let state = setup(t);
                    // Every thread reaches the barrier, even one whose setup failed, so none
                    // waits forever.
                    barrier.wait();
                    let mut state = state?;
                    let capacity = usize::try_from(calls_cap.min(1 << 20)).unwrap_or(1 << 20);
                    let mut latencies_ns = Vec::with_capacity(capacity);
                    let (mut calls, mut units) = (0u64, 0u64);
                    let start = Instant::now();
                    while calls < calls_cap && start.elapsed() < config.run {
                        let call = Instant::now();
                        units += step(&mut state)?;
                        latencies_ns
                            .push(u64::try_from(call.elapsed().as_nanos()).unwrap_or(u64::MAX));
                        calls += 1;
                    }
                    Ok(ThreadResult {
                        start,
                        end: Instant::now(),
                        calls,
                        units,
                        latencies_ns,
                    })
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a bench thread panicked")))
            })
            .collect()
    });
    let results = results.into_iter().collect::<Result<Vec<_>>>()?;
    let start = results.iter().map(|r| r.start).min().context("no thread")?;
    let end = results.iter().map(|r| r.end).max().context("no thread")?;
    let mut latencies: Vec<u64> = results
        .iter()
        .flat_map(|r| r.latencies_ns.iter().copied())
        .collect();
    latencies.sort_unstable();
    let percentile = |q: f64| {
        if latencies.is_empty() {
            return f64::NAN;
        }
        let rank = ((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len());
        latencies.get(rank - 1).copied().unwrap_or_default() as f64 / 1_000.0
    };
    Ok((
        results.iter().map(|r| r.calls).sum(),
        results.iter().map(|r| r.units).sum(),
        (end - start).as_secs_f64(),
        percentile(0.50),
        percentile(0.99),
    ))
}

fn expect_written(outcome: Outcome, version: u64, what: &str) -> Result<()> {
    ensure!(
        outcome == Outcome::Written { version },
        "{what}: expected version {version} written, got {outcome:?} (each writer owns its tasks)"
    );
    Ok(())
}

fn read_task_id(i: usize) -> String {
    format!("read-{i:06}")
}

fn read_context_id(i: usize) -> String {
    format!("read-ctx-{:02}", i % READ_CONTEXTS)
}

/// Writes the read set (not timed): every task created, one status, one artifact, one chunk.
fn prepare_read_set(store: &dyn Store, tasks: usize) -> Result<()> {
    let payload = text_payload(7);
    thread::scope(|scope| {
        let handles: Vec<_> = (0..PREPARE_THREADS)
            .map(|t| {
                let payload = payload.as_str();
                scope.spawn(move || -> Result<()> {
                    for i in (t..tasks).step_by(PREPARE_THREADS) {
                        let id = read_task_id(i);
                        expect_written(store.create(&id, &read_context_id(i), payload)?, 1, &id)?;
                        expect_written(store.append(&id, 1, Change::Status(payload))?, 2, &id)?;
                        let artifact = |append| Change::Artifact { append, payload };
                        expect_written(store.append(&id, 2, artifact(false))?, 3, &id)?;
                        expect_written(store.append(&id, 3, artifact(true))?, 4, &id)?;
                    }
                    Ok(())
                })
            })
            .collect();
        handles.into_iter().try_for_each(|h| {
            h.join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("a prepare thread panicked")))
        })
    })
}

/// A writer's own task and the version it last wrote.
struct OwnTask {
    id: String,
    version: u64,
    payload: String,
}

/// Measures `op` on `store` at `threads` threads. `cell` numbers the write cells so that their
/// task ids never collide.
fn measure(
    config: &Config,
    store: &dyn Store,
    op: Op,
    threads: usize,
    cell: usize,
) -> Result<Cell> {
    let read_ids: Vec<String> = (0..config.read_tasks).map(read_task_id).collect();
    let (calls, units, seconds, p50_us, p99_us) = match op {
        Op::Create => run_cell(
            config,
            threads,
            |t| Ok((t, 0u64, text_payload(t as u64))),
            |(t, n, payload)| {
                let id = format!("w{cell}-{t}-{n}");
                *n += 1;
                expect_written(
                    store.create(&id, &format!("write-ctx-{t}"), payload)?,
                    1,
                    &id,
                )?;
                Ok(1)
            },
        )?,
        Op::Status | Op::Artifact => run_cell(
            config,
            threads,
            |t| {
                let id = format!("w{cell}-{t}");
                let payload = text_payload(t as u64);
                expect_written(
                    store.create(&id, &format!("write-ctx-{t}"), &payload)?,
                    1,
                    &id,
                )?;
                let mut version = 1;
                if op == Op::Artifact {
                    let start = Change::Artifact {
                        append: false,
                        payload: &payload,
                    };
                    expect_written(store.append(&id, 1, start)?, 2, &id)?;
                    version = 2;
                }
                Ok(OwnTask {
                    id,
                    version,
                    payload,
                })
            },
            |task| {
                let change = if op == Op::Status {
                    Change::Status(&task.payload)
                } else {
                    Change::Artifact {
                        append: true,
                        payload: &task.payload,
                    }
                };
                let outcome = store.append(&task.id, task.version, change)?;
                task.version += 1;
                expect_written(outcome, task.version, &task.id)?;
                Ok(1)
            },
        )?,
        Op::Get => run_cell(
            config,
            threads,
            |t| Ok(XorShift64::new(t as u64 + 1)),
            |rng| {
                let i = rng.below(read_ids.len() as u64) as usize;
                let id = read_ids.get(i).context("read id")?;
                let view = store
                    .get(id)?
                    .with_context(|| format!("get {id}: not found"))?;
                ensure!(
                    view.version == READ_TASK_EVENTS
                        && view.payload_bytes == READ_TASK_EVENTS as usize * EVENT_PAYLOAD_BYTES,
                    "get {id}: {view:?}"
                );
                Ok(1)
            },
        )?,
        Op::List => run_cell(
            config,
            threads,
            |t| Ok((t % READ_CONTEXTS, None::<String>)),
            |(context, cursor)| {
                let page = store.list(
                    &read_context_id(*context),
                    LIST_PAGE_SIZE,
                    cursor.as_deref(),
                )?;
                ensure!(
                    !page.tasks.is_empty(),
                    "list of context {context}: an empty page"
                );
                *cursor = page.next;
                if cursor.is_none() {
                    *context = (*context + 1) % READ_CONTEXTS;
                }
                Ok(1)
            },
        )?,
        Op::Tail => run_cell(
            config,
            threads,
            |_| Ok(0u64),
            |after| {
                let events = store.tail(*after, TAIL_BATCH)?;
                // A short call reached the end: the next one starts over from the beginning.
                *after = match events.last() {
                    Some(last) if events.len() == TAIL_BATCH => last.position,
                    _ => 0,
                };
                Ok(events.len() as u64)
            },
        )?,
    };
    Ok(Cell {
        store: store.name(),
        op,
        threads,
        calls,
        units,
        seconds,
        p50_us,
        p99_us,
        disk_per_sec: None,
    })
}

/// Checks `name` on a fresh store of its own, then opens the store to measure and writes its read
/// set.
fn check_and_load(config: &Config, name: &'static str, root: &Path) -> Result<Box<dyn Store>> {
    let check_dir = tempfile::tempdir_in(root).context("temp dir")?;
    let store = open(name, check_dir.path())?;
    peers::check(store.as_ref()).with_context(|| format!("{name} failed its correctness check"))?;
    store.close()?;
    drop(check_dir);
    eprintln!("{name}: correctness check passed");

    // The directory lives under `root`, which is removed at the end of the run.
    let dir = tempfile::tempdir_in(root).context("temp dir")?.keep();
    let store = open(name, &dir)?;
    let started = Instant::now();
    prepare_read_set(store.as_ref(), config.read_tasks)
        .with_context(|| format!("{name}: read set"))?;
    eprintln!(
        "{name}: read set of {} tasks x {READ_TASK_EVENTS} events written in {:.2} s",
        config.read_tasks,
        started.elapsed().as_secs_f64()
    );
    Ok(store)
}

/// Measures every op at every thread count on every store. The stores take turns cell by cell
/// (the first one rotating), so that the stores' numbers for one cell come from the same minute:
/// on a shared virtual disk the cost of an fsync can change tenfold within a run.
fn measure_all(config: &Config, stores: &[Box<dyn Store>], root: &Path) -> Result<Vec<Cell>> {
    let mut cells = Vec::new();
    let mut cell_number = 0;
    // Reads first, while every store holds exactly the read set, so that all read the same.
    for op in [
        Op::Get,
        Op::List,
        Op::Tail,
        Op::Create,
        Op::Status,
        Op::Artifact,
    ] {
        for &threads in &config.threads {
            cell_number += 1;
            for turn in 0..stores.len() {
                let Some(store) = stores.get((cell_number + turn) % stores.len()) else {
                    continue;
                };
                let name = store.name();
                let disk_per_sec = if op.is_write() {
                    Some(raw_fdatasync_rate(root, DISK_PROBE)?)
                } else {
                    None
                };
                let mut cell = measure(config, store.as_ref(), op, threads, cell_number)
                    .with_context(|| format!("{name}: {} at {threads} threads", op.name()))?;
                cell.disk_per_sec = disk_per_sec;
                eprintln!(
                    "  {:<15} {threads:>3} threads {name:<8} {:>10.0}/s  p50 {:>9.1} µs  p99 {:>9.1} µs  disk {}",
                    op.name(),
                    cell.rate(),
                    cell.p50_us,
                    cell.p99_us,
                    disk_text(cell.disk_per_sec)
                );
                cells.push(cell);
            }
        }
    }
    Ok(cells)
}

fn disk_text(disk_per_sec: Option<f64>) -> String {
    disk_per_sec.map_or_else(|| "-".into(), |rate| format!("{rate:.0}/s"))
}

/// A raw `pwrite + fdatasync` loop on the same disk, 1 thread: the ceiling of a writer that
/// syncs every write alone.
fn raw_fdatasync_rate(root: &Path, run: Duration) -> Result<f64> {
    let dir = tempfile::tempdir_in(root)?;
    let path = dir.path().join("raw.dat");
    let mut raw = RawAppender::create(&path).with_context(|| format!("create {path:?}"))?;
    let bytes = tasklog_benches::payload(1);
    let (start, mut writes) = (Instant::now(), 0u64);
    while start.elapsed() < run && writes < 1_000_000 {
        raw.append(&bytes)
            .with_context(|| format!("append to {path:?}"))?;
        writes += 1;
    }
    Ok(writes as f64 / start.elapsed().as_secs_f64())
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|| "unknown".into())
}

fn memory() -> String {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
            let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(format!("{:.1} GiB", kib / 1024.0 / 1024.0))
        })
        .unwrap_or_else(|| "unknown".into())
}

fn command() -> String {
    let mut parts: Vec<String> = ENV_VARS
        .iter()
        .filter_map(|name| {
            std::env::var(name)
                .ok()
                .map(|value| format!("{name}={value}"))
        })
        .collect();
    parts.push("cargo bench --locked -p tasklog-benches --bench peers".into());
    parts.join(" ")
}

/// The tasklog cell of the same op and thread count, if measured.
fn tasklog_rate(cells: &[Cell], cell: &Cell) -> Option<f64> {
    cells
        .iter()
        .find(|c| c.store == "tasklog" && c.op == cell.op && c.threads == cell.threads)
        .map(Cell::rate)
}

fn print_table(facts: &[(&str, String)], cells: &[Cell]) {
    println!();
    println!(
        "tasklog vs embedded peers (same workload, same disk, one run; {EVENT_PAYLOAD_BYTES}-byte events, fsync on)"
    );
    for (key, value) in facts {
        println!("  {key:<22} {value}");
    }
    println!();
    println!(
        "{:<15} {:<16} {:>7} {:<8} {:>12} {:>10} {:>10} {:>10} {:>10}",
        "op", "unit", "threads", "store", "ops/s", "p50 µs", "p99 µs", "x tasklog", "disk"
    );
    println!("{}", "-".repeat(107));
    for op in Op::ALL {
        let mut threads: Vec<usize> = cells
            .iter()
            .filter(|c| c.op == op)
            .map(|c| c.threads)
            .collect();
        threads.dedup();
        for t in threads {
            for cell in cells.iter().filter(|c| c.op == op && c.threads == t) {
                let ratio = tasklog_rate(cells, cell)
                    .map_or("-".into(), |r| format!("{:.3}", cell.rate() / r));
                println!(
                    "{:<15} {:<16} {:>7} {:<8} {:>12.0} {:>10.1} {:>10.1} {:>10} {:>10}",
                    op.name(),
                    op.unit(),
                    t,
                    cell.store,
                    cell.rate(),
                    cell.p50_us,
                    cell.p99_us,
                    ratio,
                    disk_text(cell.disk_per_sec)
                );
            }
        }
        println!();
    }
    println!(
        "(x tasklog = this store's ops/s / tasklog's at the same op and threads; latency is per \
         call; disk = raw pwrite+fdatasync/s of one thread just before a write cell)"
    );
}

/// DESIGN.md E2's comparison for one write op and one peer: tasklog at its largest writer count
/// against the peer at its best writer count.
struct Headline<'a> {
    tasklog: &'a Cell,
    peer: &'a Cell,
}

impl Headline<'_> {
    fn ratio(&self) -> f64 {
        self.tasklog.rate() / self.peer.rate()
    }
}

fn headlines(cells: &[Cell]) -> Vec<Headline<'_>> {
    let mut out = Vec::new();
    for op in [Op::Create, Op::Status, Op::Artifact] {
        let of_op = || cells.iter().filter(move |c| c.op == op);
        let Some(tasklog) = of_op()
            .filter(|c| c.store == "tasklog")
            .max_by_key(|c| c.threads)
        else {
            continue;
        };
        for store in STORES.iter().filter(|s| **s != "tasklog") {
            let best = of_op()
                .filter(|c| c.store == *store)
                .max_by(|a, b| a.rate().total_cmp(&b.rate()));
            if let Some(peer) = best {
                out.push(Headline { tasklog, peer });
            }
        }
    }
    out
}

fn print_headlines(cells: &[Cell]) {
    println!(
        "Durable writes, tasklog at its most writers / each peer at its best writer count \
         (DESIGN.md E2: >= 250,000/s at 64 writers, about 40x SQLite and 90x redb):"
    );
    for h in headlines(cells) {
        println!(
            "  {:<15} tasklog {:>8.0}/s ({} threads) = {:>6.1} x {:<7} {:>6.0}/s ({} threads)",
            h.tasklog.op.name(),
            h.tasklog.rate(),
            h.tasklog.threads,
            h.ratio(),
            h.peer.store,
            h.peer.rate(),
            h.peer.threads
        );
    }
}

fn to_json(facts: &[(&str, String)], cells: &[Cell]) -> String {
    let mut out = json_head(facts);
    let rows: Vec<String> = cells
        .iter()
        .map(|cell| {
            let ratio = tasklog_rate(cells, cell).map_or(f64::NAN, |r| cell.rate() / r);
            format!(
                "    {{\"store\": {}, \"op\": {}, \"unit\": {}, \"threads\": {}, \"calls\": {}, \
                 \"units\": {}, \"seconds\": {}, \"ops_per_sec\": {}, \"p50_us\": {}, \
                 \"p99_us\": {}, \"ratio_to_tasklog\": {}, \"tasklog_over_store\": {}, \
                 \"disk_fdatasync_per_sec_before\": {}}}",
                json_string(cell.store),
                json_string(cell.op.name()),
                json_string(cell.op.unit()),
                cell.threads,
                cell.calls,
                cell.units,
                json_number(cell.seconds),
                json_number(cell.rate()),
                json_number(cell.p50_us),
                json_number(cell.p99_us),
                json_number(ratio),
                json_number(1.0 / ratio),
                cell.disk_per_sec.map_or("null".into(), json_number),
            )
        })
        .collect();
    out.push_str(&rows.join(",\n"));
    out.push_str("\n  ],\n  \"headlines\": [\n");
    let headlines: Vec<String> = headlines(cells)
        .iter()
        .map(|h| {
            format!(
                "    {{\"op\": {}, \"tasklog_threads\": {}, \"tasklog_ops_per_sec\": {}, \
                 \"peer\": {}, \"peer_best_threads\": {}, \"peer_best_ops_per_sec\": {}, \
                 \"tasklog_over_peer\": {}}}",
                json_string(h.tasklog.op.name()),
                h.tasklog.threads,
                json_number(h.tasklog.rate()),
                json_string(h.peer.store),
                h.peer.threads,
                json_number(h.peer.rate()),
                json_number(h.ratio()),
            )
        })
        .collect();
    out.push_str(&headlines.join(",\n"));
    out.push_str("\n  ]\n}\n");
    out
}

fn main() -> Result<()> {
    let began = Instant::now();
    let config = Config::from_env()?;
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(tmp).with_context(|| format!("create {tmp:?}"))?;
    let root = tempfile::tempdir_in(tmp).with_context(|| format!("temp dir in {tmp:?}"))?;

    let mut facts = tasklog_benches::machine_facts(root.path());
    facts.push(("memory", memory()));
    facts.push(("load_average_start", load_average()));
    facts.push(("command", command()));
    facts.push(("seconds_per_cell", format!("{}", config.run.as_secs_f64())));
    facts.push(("calls_max_per_cell", config.calls_max.to_string()));
    facts.push((
        "read_set",
        format!(
            "{} tasks x {READ_TASK_EVENTS} events in {READ_CONTEXTS} contexts",
            config.read_tasks
        ),
    ));
    facts.push(("payload_bytes", EVENT_PAYLOAD_BYTES.to_string()));
    for (krate, version) in PEER_VERSIONS {
        facts.push((krate, version.to_string()));
    }
    facts.push((
        "sqlite_library",
        peers::sqlite::library_version().to_string(),
    ));

    let raw = raw_fdatasync_rate(root.path(), config.run)?;
    eprintln!("raw pwrite+fdatasync, 1 thread, at the start: {raw:.0}/s");
    facts.push(("raw_fdatasync_per_sec_start", format!("{raw:.0}")));

    let stores = config
        .stores
        .iter()
        .map(|name| check_and_load(&config, name, root.path()))
        .collect::<Result<Vec<_>>>()?;
    let mut cells = measure_all(&config, &stores, root.path())?;
    let promises: Vec<(&str, &str)> = stores.iter().map(|s| (s.name(), s.durability())).collect();
    for store in stores {
        let name = store.name();
        store.close().with_context(|| format!("close {name}"))?;
    }
    let raw_end = raw_fdatasync_rate(root.path(), config.run)?;
    eprintln!("raw pwrite+fdatasync, 1 thread, at the end: {raw_end:.0}/s");
    facts.push(("raw_fdatasync_per_sec_end", format!("{raw_end:.0}")));
    facts.push(("load_average_end", load_average()));
    facts.push((
        "run_seconds",
        format!("{:.0}", began.elapsed().as_secs_f64()),
    ));
    for (name, durability) in promises {
        let key: &'static str = match name {
            "tasklog" => "ack_tasklog",
            "sqlite" => "ack_sqlite",
            "redb" => "ack_redb",
            "fjall" => "ack_fjall",
            other => bail!("no fact key for store {other}"),
        };
        facts.push((key, durability.to_string()));
    }
    // Cells grouped by op, then threads, then store (tasklog first).
    cells.sort_by_key(|c| {
        (
            Op::ALL.iter().position(|op| *op == c.op),
            c.threads,
            STORES.iter().position(|s| *s == c.store),
        )
    });
    print_table(&facts, &cells);
    print_headlines(&cells);

    let json_path: PathBuf = tmp.parent().unwrap_or(tmp).join("peers.json");
    std::fs::write(&json_path, to_json(&facts, &cells))
        .with_context(|| format!("write {json_path:?}"))?;
    println!("written to {}", json_path.display());
    Ok(())
}
