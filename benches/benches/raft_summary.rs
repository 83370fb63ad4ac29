//! Replicated durable writes, in process: a three-node cluster on the simulated network (no
//! sockets; every node fsyncs its own log on the same disk), against the embedded task store on
//! the same machine in the same run. Writers at 1, 16 and 64; each writer owns one task and
//! appends one ~300-byte message event per write; every acknowledgement is durable on a quorum.
//!
//! `cargo bench -p tasklog-benches --bench raft_summary` (env `TASKLOG_RAFT_BENCH_SECONDS`, default
//! 3, per cell; `TASKLOG_RAFT_BENCH_WRITERS`, default `1,16,64`).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use tasklog_benches::{json_head, json_number, json_string, machine_facts};
use tasklog_engine::event::Event;
use tasklog_engine::model::{Message, Part, Role};
use tasklog_engine::{NewTask, Options, TaskStore, Write};
use tasklog_raft::sim::Router;
use tasklog_raft::{Node, NodeId, Timing};

const NODES: [NodeId; 3] = [1, 2, 3];
/// Writes per writer at most (the time bound usually ends a cell first).
const WRITES_MAX: usize = 200_000;

struct Row {
    system: &'static str,
    writers: usize,
    events: usize,
    seconds: f64,
    p50_ms: f64,
    p99_ms: f64,
}

impl Row {
    fn rate(&self) -> f64 {
        self.events as f64 / self.seconds
    }
}

fn event(writer: usize, seq: usize) -> Event {
    let text = format!("writer {writer} event {seq} ");
    Event::Message(Message {
        message_id: format!("m-{writer}-{seq}"),
        context_id: None,
        task_id: None,
        role: Role::Agent,
        parts: vec![Part::text(text.repeat(300 / text.len().max(1)))],
        metadata: None,
        extensions: vec![],
        reference_task_ids: vec![],
    })
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let at = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted
        .get(at)
        .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
}

fn row(system: &'static str, writers: usize, seconds: f64, mut latencies: Vec<Duration>) -> Row {
    latencies.sort_unstable();
    Row {
        system,
        writers,
        events: latencies.len(),
        seconds,
        p50_ms: percentile(&latencies, 0.50),
        p99_ms: percentile(&latencies, 0.99),
    }
}

async fn cluster(dir: &Path) -> Result<Vec<Node>> {
    let router = Router::new(1);
    let mut nodes = Vec::new();
    for id in NODES {
        let node = Node::open(
            id,
            &dir.join(format!("node-{id}")),
            router.factory(id),
            &Timing::default(),
        )
        .await
        .map_err(|e| anyhow!("open node {id}: {e}"))?;
        router.add(id, node.raft().clone());
        nodes.push(node);
    }
    let members: BTreeMap<NodeId, String> =
        NODES.iter().map(|id| (*id, format!("node-{id}"))).collect();
    nodes[0]
        .initialize(members)
        .await
        .map_err(|e| anyhow!("initialize: {e}"))?;
    nodes[0]
        .raft()
        .wait(Some(Duration::from_secs(10)))
        .current_leader(1, "leader elected")
        .await
        .map_err(|e| anyhow!("no leader: {e}"))?;
    Ok(nodes)
}

async fn replicated(leader: &Node, writers: usize, round: usize, seconds: f64) -> Result<Row> {
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let mut handles = Vec::new();
    for w in 0..writers {
        let node = leader.clone();
        handles.push(tokio::spawn(async move {
            let task_id = format!("r{round}-w{w}");
            node.write(Write::Create(NewTask {
                task_id: Some(task_id.clone()),
                ..NewTask::submitted(None)
            }))
            .await
            .map_err(|e| anyhow!("create: {e}"))?;
            let mut latencies = Vec::new();
            for seq in 0..WRITES_MAX {
                if Instant::now() >= deadline {
                    break;
                }
                let t = Instant::now();
                node.write(Write::Append {
                    task_id: task_id.clone(),
                    expected_version: None,
                    events: vec![event(w, seq)],
                })
                .await
                .map_err(|e| anyhow!("append: {e}"))?;
                latencies.push(t.elapsed());
            }
            Ok::<_, anyhow::Error>(latencies)
        }));
    }
    let mut all = Vec::new();
    for handle in handles {
        all.extend(handle.await??);
    }
    Ok(row(
        "tasklog-raft, 3 nodes in process",
        writers,
        started.elapsed().as_secs_f64(),
        all,
    ))
}

fn embedded(store: &Arc<TaskStore>, writers: usize, round: usize, seconds: f64) -> Result<Row> {
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let all = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..writers)
            .map(|w| {
                let store = store.clone();
                scope.spawn(move || {
                    let task_id = format!("e{round}-w{w}");
                    store.create(NewTask {
                        task_id: Some(task_id.clone()),
                        ..NewTask::submitted(None)
                    })?;
                    let mut latencies = Vec::new();
                    for seq in 0..WRITES_MAX {
                        if Instant::now() >= deadline {
                            break;
                        }
                        let t = Instant::now();
                        store.append(&task_id, None, vec![event(w, seq)])?;
                        latencies.push(t.elapsed());
                    }
                    Ok::<_, tasklog_engine::Error>(latencies)
                })
            })
            .collect();
        let mut all = Vec::new();
        for handle in handles {
            all.extend(handle.join().map_err(|_| anyhow!("writer panicked"))??);
        }
        Ok::<_, anyhow::Error>(all)
    })?;
    Ok(row(
        "tasklog-engine embedded, 1 node",
        writers,
        started.elapsed().as_secs_f64(),
        all,
    ))
}

fn main() -> Result<()> {
    let seconds: f64 = std::env::var("TASKLOG_RAFT_BENCH_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3.0);
    let writer_counts: Vec<usize> = std::env::var("TASKLOG_RAFT_BENCH_WRITERS")
        .unwrap_or_else(|_| "1,16,64".into())
        .split(',')
        .filter_map(|w| w.trim().parse().ok())
        .collect();
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    fs::create_dir_all(tmp).with_context(|| format!("create {tmp:?}"))?;
    let dir = tempfile::tempdir_in(tmp)?;
    let mut facts = machine_facts(dir.path());
    facts.push(("seconds_per_cell", format!("{seconds}")));

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut rows = Vec::new();
    let embedded_store = Arc::new(TaskStore::open(
        dir.path().join("embedded"),
        Options::default(),
    )?);
    let nodes = runtime.block_on(cluster(&dir.path().join("cluster")))?;
    for (round, writers) in writer_counts.iter().copied().enumerate() {
        eprintln!("{writers} writers ...");
        rows.push(embedded(&embedded_store, writers, round, seconds)?);
        rows.push(runtime.block_on(replicated(&nodes[0], writers, round, seconds))?);
    }
    runtime.block_on(async {
        for node in nodes {
            let _ = node.shutdown().await;
        }
    });

    println!();
    for (key, value) in &facts {
        println!("{key}: {value}");
    }
    println!(
        "\n| system | writers | events/s | p50 ms | p99 ms | ratio to embedded |\n|---|---|---|---|---|---|"
    );
    for pair in rows.chunks(2) {
        let base = pair.first().map_or(f64::NAN, Row::rate);
        for row in pair {
            println!(
                "| {} | {} | {:.0} | {:.2} | {:.2} | {:.2}x |",
                row.system,
                row.writers,
                row.rate(),
                row.p50_ms,
                row.p99_ms,
                row.rate() / base
            );
        }
    }
    let mut out = json_head(&facts);
    let rows_json: Vec<String> = rows
        .iter()
        .map(|row| {
            format!(
                "    {{\"system\": {}, \"writers\": {}, \"events_per_second\": {}, \"p50_ms\": {}, \
                 \"p99_ms\": {}}}",
                json_string(row.system),
                row.writers,
                json_number(row.rate()),
                json_number(row.p50_ms),
                json_number(row.p99_ms)
            )
        })
        .collect();
    out.push_str(&rows_json.join(",\n"));
    out.push_str("\n  ]\n}\n");
    let json_path: PathBuf = tmp
        .parent()
        .unwrap_or(tmp)
        .join("tasklog-raft-summary.json");
    fs::write(&json_path, out).with_context(|| format!("write {json_path:?}"))?;
    println!("\nwritten to {}", json_path.display());
    Ok(())
}
