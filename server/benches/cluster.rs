//! Three `tasklog serve` processes on loopback (QUIC + mutual TLS between them, HTTP to them),
//! measured from the outside as a client sees them, with the raw `pwrite + fdatasync` loop on the
//! same disk measured in the same run as the baseline:
//!
//! - C2: one client, sequential durable replicated writes to the leader: latency percentiles;
//! - C1: 1, 16 and 64 concurrent writers spread over all three nodes (followers forward), and 64
//!   to the leader only: throughput and latency;
//! - C4: the leader killed with SIGKILL under load, `TASKLOG_BENCH_KILLS` times (default 5; the
//!   target is stated for 20): the time from the kill to the first write acknowledged after it
//!   (writers keep writing to the survivors), then the killed node restarted and caught up;
//!   every write acknowledged during the kills is read back from every node at the end;
//! - C5: a fourth node added as a learner catches up with the log written so far: MB/s.
//!
//! `cargo bench -p tasklog-server --bench cluster` (about a minute plus 10 s per kill);
//! `TASKLOG_BENCH_SECONDS` sets the length of each throughput step (default 5).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tasklog_benches::{RawAppender, machine_facts};
use tasklog_engine::model::{Message, Role};
use tasklog_raft::NodeId;
use tasklog_server::client::Client;
use tasklog_server::http::{AddLearnerRequest, AppendRequest, CreateRequest, EventBody};
use tasklog_server::load::{self, LoadArgs, LoadReport};
use tasklog_server::local::LocalCluster;

const TIMEOUT: Duration = Duration::from_secs(60);

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; a filter argument is ignored.
    let seconds = env_u64("TASKLOG_BENCH_SECONDS", 5) as f64;
    let kills = env_u64("TASKLOG_BENCH_KILLS", 5);
    let tmp = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(tmp)?;
    let root = tempfile::tempdir_in(tmp)?;
    println!("tasklog cluster bench: 3 node processes on 127.0.0.1, 300 B events, fsync on");
    for (key, value) in machine_facts(root.path()) {
        println!("  {key}: {value}");
    }

    let raw = raw_fsync_rate(root.path(), Duration::from_secs(2))?;
    println!("\nraw pwrite+fdatasync of 300 B on this disk: {raw:.0}/s (baseline, same run)");

    // Node 4 is a spare: C5 adds it as a learner once the others hold a log.
    let mut cluster = LocalCluster::start_with_spares(
        std::path::Path::new(env!("CARGO_BIN_EXE_tasklog")),
        root.path(),
        3,
        1,
        &[],
    )?;
    let ids = cluster.ids();
    let leader = cluster.wait_for_leader(&ids, TIMEOUT)?;
    let urls: Vec<String> = ids
        .iter()
        .map(|id| cluster.client(*id).base_url().to_owned())
        .collect();
    let leader_url = vec![cluster.client(leader).base_url().to_owned()];
    // Warm up connections, caches and the leader's replication streams.
    load::run(&args(&urls, 8, 1.0))?;

    println!("\nthroughput and latency (each step {seconds} s):");
    println!(
        "{:<22} {:>8} {:>10} {:>8} {:>9} {:>9} {:>9}  errors",
        "step", "writers", "writes/s", "x raw", "p50 ms", "p99 ms", "max ms"
    );
    let steps: [(&str, &[String], u32); 4] = [
        ("C2 leader, 1 writer", &leader_url, 1),
        ("all nodes, 16", &urls, 16),
        ("C1 all nodes, 64", &urls, 64),
        ("leader only, 64", &leader_url, 64),
    ];
    for (name, nodes, writers) in steps {
        let report = load::run(&args(nodes, writers, seconds))?;
        print_row(name, &report, raw);
    }

    catch_up(&mut cluster, &ids, 4)?;

    println!("\nC4: leader killed with SIGKILL under load ({kills} kills):");
    let acked = Arc::new(Mutex::new(Vec::new()));
    let mut resumed = Vec::new();
    for kill in 0..kills {
        let leader = cluster.wait_for_leader(&ids, TIMEOUT)?;
        let survivors: Vec<NodeId> = ids.iter().copied().filter(|&id| id != leader).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let killed_at: Arc<Mutex<Option<Instant>>> = Arc::default();
        let first_after: Arc<Mutex<Option<Duration>>> = Arc::default();
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let client = cluster.client(survivors[w % survivors.len()]).clone();
                let (stop, killed_at, first_after, acked) = (
                    stop.clone(),
                    killed_at.clone(),
                    first_after.clone(),
                    acked.clone(),
                );
                std::thread::spawn(move || {
                    probe(&client, kill, w, &stop, &killed_at, &first_after, &acked)
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(500));
        *lock(&killed_at) = Some(Instant::now());
        cluster.kill(leader)?;
        let start = Instant::now();
        while lock(&first_after).is_none() && start.elapsed() < TIMEOUT {
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::Relaxed);
        for writer in writers {
            let _ = writer.join();
        }
        let took = (*lock(&first_after)).unwrap_or(TIMEOUT);
        println!(
            "  kill {}: leader {leader}, writes acknowledged again after {:.0} ms",
            kill + 1,
            took.as_secs_f64() * 1e3
        );
        resumed.push(took);
        cluster.start_node(leader)?;
        wait_caught_up(&cluster, &ids)?;
    }
    resumed.sort_unstable();
    if let (Some(first), Some(last)) = (resumed.first(), resumed.last()) {
        let p50 = resumed[resumed.len() / 2];
        println!(
            "  fail-over: min {:.0} ms, p50 {:.0} ms, max {:.0} ms (target C4: p99 of 20 kills <= 1500 ms)",
            first.as_secs_f64() * 1e3,
            p50.as_secs_f64() * 1e3,
            last.as_secs_f64() * 1e3
        );
    }
    // Zero acknowledged loss: every write acknowledged during the kills, on every node.
    let acked = lock(&acked).clone();
    let last_position = acked.iter().map(|(_, _, p)| *p).max().unwrap_or(0);
    let mut latest: BTreeMap<String, u64> = BTreeMap::new();
    for (task, version, _) in &acked {
        let v = latest.entry(task.clone()).or_default();
        *v = (*v).max(*version);
    }
    let mut lost = 0;
    for id in &ids {
        for (task, version) in &latest {
            match cluster
                .client(*id)
                .get(task, &format!("atLeastPosition={last_position}"))
            {
                Ok(read) if read.version >= *version => {}
                _ => lost += 1,
            }
        }
    }
    println!(
        "  {} writes acknowledged during the kills, {} tasks checked on {} nodes: {lost} missing",
        acked.len(),
        latest.len(),
        ids.len()
    );
    for id in ids {
        cluster.stop(id, TIMEOUT)?;
    }
    anyhow::ensure!(lost == 0, "{lost} acknowledged writes missing");
    Ok(())
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn args(nodes: &[String], writers: u32, seconds: f64) -> LoadArgs {
    LoadArgs {
        nodes: nodes.to_vec(),
        writers,
        seconds,
        event_bytes: 300,
    }
}

fn print_row(name: &str, report: &LoadReport, raw: f64) {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let errors = if report.errors.is_empty() {
        "none".to_owned()
    } else {
        format!("{:?}", report.errors)
    };
    println!(
        "{name:<22} {:>8} {:>10.0} {:>8.2} {:>9.2} {:>9.2} {:>9.2}  {errors}",
        report.writers,
        report.throughput(),
        report.throughput() / raw,
        ms(report.quantile(0.5)),
        ms(report.quantile(0.99)),
        ms(report.latencies.last().copied().unwrap_or_default()),
    );
}

/// Sequential writes to one node until stopped; records the first acknowledgement of a write
/// sent after the kill.
fn probe(
    client: &Client,
    kill: u64,
    writer: usize,
    stop: &AtomicBool,
    killed_at: &Mutex<Option<Instant>>,
    first_after: &Mutex<Option<Duration>>,
    acked: &Mutex<Vec<(String, u64, u64)>>,
) {
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let sent = Instant::now();
        let result = client.create(&CreateRequest {
            task_id: Some(format!("c4-{}-{kill}-{writer}-{n}", std::process::id())),
            ..CreateRequest::default()
        });
        let Ok(written) = result else {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        };
        lock(acked).push((written.task_id.clone(), written.version, written.position));
        let appended = client.append(
            &written.task_id,
            &AppendRequest {
                expected_version: Some(written.version),
                events: vec![EventBody::Message(Message::text(
                    "m",
                    Role::Agent,
                    "x".repeat(300),
                ))],
            },
        );
        if let Ok(appended) = appended {
            lock(acked).push((appended.task_id, appended.version, appended.position));
        }
        if let Some(at) = *lock(killed_at)
            && sent > at
        {
            let mut first = lock(first_after);
            if first.is_none() {
                *first = Some(at.elapsed());
            }
        }
    }
}

fn wait_caught_up(cluster: &LocalCluster, ids: &[NodeId]) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        let applied: Option<Vec<u64>> = ids
            .iter()
            .map(|id| {
                cluster
                    .client(*id)
                    .status()
                    .ok()
                    .map(|s| s.applied_position)
            })
            .collect();
        if let Some(applied) = applied
            && applied.iter().all(|a| *a == applied[0])
            && cluster
                .wait_for_leader(ids, Duration::from_millis(10))
                .is_ok()
        {
            return Ok(());
        }
        anyhow::ensure!(
            start.elapsed() < TIMEOUT,
            "nodes did not catch up: {}",
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// C5: a new node catching up. The log is the data here, so a new member receives the leader's
/// log (streamed appends; a snapshot only once retention has purged what it needs): measured as
/// the leader's log bytes over the time from `add learner` to the learner having applied it all.
fn catch_up(cluster: &mut LocalCluster, ids: &[NodeId], learner: NodeId) -> anyhow::Result<()> {
    let leader = cluster.wait_for_leader(ids, TIMEOUT)?;
    let target = cluster.client(leader).status()?.last_position;
    let bytes = dir_bytes(&cluster.data_dir(leader).join("log"))?;
    cluster.start_node(learner)?;
    let start = Instant::now();
    while !cluster.client(learner).healthy() {
        anyhow::ensure!(start.elapsed() < TIMEOUT, "node {learner} did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
    let addr = cluster
        .raft_addr(learner)
        .ok_or_else(|| anyhow::anyhow!("no address for node {learner}"))?;
    let start = Instant::now();
    cluster.client(leader).add_learner(&AddLearnerRequest {
        id: learner,
        addr: addr.to_string(),
        wait: false,
    })?;
    loop {
        let applied = cluster
            .client(learner)
            .status()
            .map_or(0, |s| s.applied_position);
        if applied >= target {
            break;
        }
        anyhow::ensure!(
            start.elapsed() < TIMEOUT,
            "node {learner} stuck at {applied} of {target}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let took = start.elapsed();
    println!(
        "\nC5: a new node caught up with {target} records ({:.1} MB of log) in {:.2} s: {:.0} MB/s",
        bytes as f64 / 1e6,
        took.as_secs_f64(),
        bytes as f64 / 1e6 / took.as_secs_f64()
    );
    cluster.client(leader).remove_node(learner)?;
    cluster.stop(learner, TIMEOUT)?;
    Ok(())
}

fn dir_bytes(dir: &std::path::Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let meta = entry?.metadata()?;
        if meta.is_file() {
            total += meta.len();
        }
    }
    Ok(total)
}

fn raw_fsync_rate(dir: &std::path::Path, run: Duration) -> anyhow::Result<f64> {
    let mut raw = RawAppender::create(&dir.join("raw.bin"))?;
    let record = [7u8; 300];
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < run {
        raw.append(&record)?;
        n += 1;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}
