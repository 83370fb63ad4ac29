//! One-shot summary of `TaskStore::list` (A2A `ListTasks`) on a large store: how a page's cost
//! grows with the store for each filter. Numbers are printed, never asserted. Run with
//! `cargo bench -p tasklog-benches --bench list_summary`.
//!
//! The store (`SyncPolicy::Never`, one thread, not timed) holds `TASKLOG_LIST_BENCH_TASKS` tasks
//! (default 1,000,000) with UUID-shaped ids: first 50 tasks of the context `rare` (so they are the
//! oldest), then the rest in 10,000 contexts of about 100 tasks; every fourth task gets a status
//! update to working (a second record), every 100,000th is completed. Then, for
//! `TASKLOG_BENCH_SECS` seconds each (default 2), on one thread, pages of 50 tasks with
//! `history_length = 0` and no artifacts, following the page token to the end and starting again:
//!
//! - `context (100 tasks)`: the context of the newest task, as the peers bench lists;
//! - `context rare (oldest 50)`: one context whose tasks are the oldest in the store;
//! - `state working`: a quarter of the store;
//! - `state completed`: ten tasks;
//! - `no filter`: every task;
//! - `status time after`: tasks whose status changed in the last tenth of the build.
//!
//! Each cell prints pages/s and µs per page, and the same again for pages whose tasks are not
//! folded (`page_size` counts only): `total_size` and the walk alone.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use tasklog_benches::{XorShift64, machine_facts};
use tasklog_engine::event::Event;
use tasklog_engine::model::{TaskState, TaskStatus, Timestamp};
use tasklog_engine::{ListQuery, NewTask, Options, SyncPolicy, TaskStore};

const TASKS_DEFAULT: u64 = 1_000_000;
const CONTEXTS: u64 = 10_000;
const RARE_TASKS: u64 = 50;
const PAGE_SIZE: u32 = 50;

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

/// A UUID-shaped (36-character) id, unique per `(space, i)`.
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

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Builds the store; returns the newest task's context and a status time one tenth before the
/// end of the build.
fn build(store: &TaskStore, tasks: u64) -> Result<(String, Timestamp)> {
    let create = |id: String, context: String| {
        store.create(NewTask {
            task_id: Some(id),
            context_id: Some(context),
            ..NewTask::submitted(None)
        })
    };
    for i in 0..RARE_TASKS {
        create(uuid_like(1, i), "rare".into())?;
    }
    let mut late = Timestamp(i64::MAX);
    let mut newest_context = String::new();
    for i in RARE_TASKS..tasks {
        if i == tasks - tasks / 10 {
            late = Timestamp(now_ms());
        }
        let id = uuid_like(2, i);
        newest_context = uuid_like(3, i % CONTEXTS);
        create(id.clone(), newest_context.clone())?;
        if i % 4 == 0 {
            store.append(
                &id,
                Some(1),
                vec![Event::Status(TaskStatus::new(TaskState::Working))],
            )?;
        }
        if i % 100_000 == 1 {
            store.append(
                &id,
                Some(1),
                vec![Event::Status(TaskStatus::new(TaskState::Completed))],
            )?;
        }
    }
    store.log().sync()?;
    Ok((newest_context, late))
}

/// Pages per second for `run`, paging through `query` again and again, and the last total.
fn pages(store: &TaskStore, query: &ListQuery, run: Duration) -> Result<(f64, u64)> {
    let start = Instant::now();
    let mut count = 0u64;
    let mut token = None;
    let mut total = 0;
    while start.elapsed() < run {
        let page = store.list(&ListQuery {
            page_token: token.take(),
            ..query.clone()
        })?;
        total = page.total_size;
        if page.tasks.is_empty() && total > 0 && page.next_page_token.is_empty() && count == 0 {
            bail!("an empty first page with total {total}");
        }
        count += 1;
        if !page.next_page_token.is_empty() {
            token = Some(page.next_page_token);
        }
    }
    Ok((count as f64 / start.elapsed().as_secs_f64(), total))
}

fn main() -> Result<()> {
    let tasks = env_number("TASKLOG_LIST_BENCH_TASKS", TASKS_DEFAULT as f64)? as u64;
    let secs = env_number("TASKLOG_BENCH_SECS", 2.0)?;
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(tmp).with_context(|| format!("create {tmp:?}"))?;
    let dir = tempfile::tempdir_in(tmp).with_context(|| format!("temp dir in {tmp:?}"))?;
    for (name, value) in machine_facts(dir.path()) {
        println!("  {name:<12} {value}");
    }
    let store = TaskStore::open(
        dir.path().join("list"),
        Options {
            sync: SyncPolicy::Never,
            ..Options::default()
        },
    )?;
    let start = Instant::now();
    let (newest_context, late) = build(&store, tasks)?;
    println!(
        "  built {tasks} tasks in {:.1} s; {} records",
        start.elapsed().as_secs_f64(),
        store.log().bounds().1
    );
    let run = Duration::from_secs_f64(secs);
    let base = ListQuery {
        page_size: Some(PAGE_SIZE),
        history_length: Some(0),
        include_artifacts: false,
        ..ListQuery::default()
    };
    let cells: [(&str, ListQuery); 6] = [
        (
            "context (100 tasks)",
            ListQuery {
                context_id: Some(newest_context),
                ..base.clone()
            },
        ),
        (
            "context rare (oldest 50)",
            ListQuery {
                context_id: Some("rare".into()),
                ..base.clone()
            },
        ),
        (
            "state working",
            ListQuery {
                state: Some(TaskState::Working),
                ..base.clone()
            },
        ),
        (
            "state completed",
            ListQuery {
                state: Some(TaskState::Completed),
                ..base.clone()
            },
        ),
        ("no filter", base.clone()),
        (
            "status time after",
            ListQuery {
                status_timestamp_after: Some(late),
                ..base.clone()
            },
        ),
    ];
    println!(
        "\n{:<26} {:>12} {:>10} {:>12} {:>10} {:>9}",
        "list, page of 50", "pages/s", "µs/page", "1-task pgs/s", "µs/page", "total"
    );
    for (name, query) in cells {
        let (rate, total) = pages(&store, &query, run)?;
        // The same filter with one task a page: mostly the index walk and `total_size`.
        let one = ListQuery {
            page_size: Some(1),
            ..query.clone()
        };
        let (one_rate, _) = pages(&store, &one, run)?;
        println!(
            "{name:<26} {rate:>12.0} {:>10.1} {one_rate:>12.0} {:>10.1} {total:>9}",
            1e6 / rate,
            1e6 / one_rate
        );
    }
    store.close()?;
    Ok(())
}
