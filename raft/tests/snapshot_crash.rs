//! A follower killed while it installs a snapshot must open again and stand where it stood or
//! where the snapshot stands, with a log that holds what its table refers to.
//!
//! Method: a one-node cluster writes tasks (its committed position reaching `raft.meta`) and is
//! stopped; its directory is copied as the follower. The cluster writes more and builds a
//! snapshot. The follower then installs that snapshot with its disk failing after the n-th write
//! or fsync (what a kill at that point leaves: every earlier write is kept, nothing later is
//! written, no checkpoint on the way out), for every n until the install goes through; each time
//! the follower must open as a node, and every task its table holds must read back from its log.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use openraft::storage::RaftStateMachine;
use tasklog_engine::{NewTask, Options, SyncPolicy, TaskStore, Write};
use tasklog_raft::sim::Router;
use tasklog_raft::{Node, NodeId, SnapshotFile, StateMachine, Timing, snapshot};

const TIMEOUT: Duration = Duration::from_secs(10);

fn timing() -> Timing {
    Timing {
        heartbeat: Duration::from_millis(50),
        election: (Duration::from_millis(200), Duration::from_millis(400)),
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

async fn open(id: NodeId, dir: &Path) -> Result<Node, String> {
    let router = Router::new(1);
    let node = Node::open(id, dir, router.factory(id), &timing())
        .await
        .map_err(|e| e.to_string())?;
    router.add(id, node.raft().clone());
    Ok(node)
}

async fn create(node: &Node, task: &str) {
    let write = Write::Create(NewTask {
        task_id: Some(task.to_owned()),
        ..NewTask::submitted(None)
    });
    for _ in 0..200 {
        match node.write(write.clone()).await {
            Ok(_) => return,
            Err(tasklog_raft::NodeError::NotLeader { .. }) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(error) => panic!("create {task}: {error}"),
        }
    }
    panic!("create {task}: no leader");
}

/// The tasks `node` holds; each must read back (with its history) from the node's log.
fn tasks_held(node: &Node, tasks: &[String]) -> usize {
    tasks
        .iter()
        .filter(|task| match node.store().get(task, Some(100)) {
            Ok(_) => true,
            Err(tasklog_engine::Error::TaskNotFound { .. }) => false,
            Err(error) => panic!("task {task} held but unreadable: {error}"),
        })
        .count()
}

enum Fault {
    Write(u64),
    Sync(u64),
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_killed_while_installing_a_snapshot_opens_again() {
    let root = tempfile::tempdir().unwrap();
    let source = root.path().join("source");
    let pristine = root.path().join("follower");
    let tasks: Vec<String> = (0..30).map(|i| format!("task-{i}")).collect();

    // The follower's past: the first tasks, with the committed position in raft.meta.
    let node = open(1, &source).await.unwrap();
    node.initialize(BTreeMap::from([(1, "node-1".to_owned())]))
        .await
        .unwrap();
    for task in &tasks[..10] {
        create(&node, task).await;
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    create(&node, &tasks[10]).await;
    node.shutdown().await.unwrap();
    copy_dir(&source, &pristine);

    // The cluster goes on and builds a snapshot past everything the follower holds.
    let node = loop {
        match open(1, &source).await {
            Ok(node) => break node,
            Err(error) if error.contains("lock") => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(error) => panic!("reopen the source: {error}"),
        }
    };
    for task in &tasks[11..] {
        create(&node, task).await;
    }
    node.raft().trigger().snapshot().await.unwrap();
    node.raft()
        .wait(Some(TIMEOUT))
        .metrics(|m| m.snapshot.is_some(), "snapshot")
        .await
        .unwrap();
    let snap: PathBuf = snapshot::files(&source.join("snapshots")).unwrap()[0].clone();
    let meta = snapshot::read_meta(&snap).unwrap();
    assert_eq!(meta.last_log_id, node.metrics().last_applied);
    node.shutdown().await.unwrap();

    let mut done = [false, false];
    for (kind, n) in [0u8, 1]
        .into_iter()
        .flat_map(|kind| (0..20).map(move |n| (kind, n)))
    {
        let (label, fault) = match kind {
            0 => ("write", Fault::Write(n)),
            _ => ("fsync", Fault::Sync(n)),
        };
        if done[usize::from(kind)] {
            continue;
        }
        let dir = root.path().join(format!("follower-{label}-{n}"));
        copy_dir(&pristine, &dir);
        let options = Options {
            sync: SyncPolicy::External,
            ..Options::default()
        };
        let store = Arc::new(TaskStore::open_replica(dir.join("log"), options).unwrap());
        std::fs::create_dir_all(dir.join("snapshots")).unwrap();
        let received = dir.join("snapshots").join("incoming-1-0.part");
        std::fs::copy(&snap, &received).unwrap();
        match fault {
            Fault::Write(n) => store.log().faults().fail_write_after(n),
            Fault::Sync(n) => store.log().faults().fail_sync_after(n),
        }
        let mut sm = StateMachine::new(store.clone(), dir.join("snapshots"));
        let installed = sm
            .install_snapshot(&meta, SnapshotFile { path: received })
            .await;
        // Killed here: the armed faults keep anything more from reaching the disk.
        drop(sm);
        drop(store);

        let node = open(1, &dir)
            .await
            .unwrap_or_else(|e| panic!("{label} {n} failing ({installed:?}): reopen: {e}"));
        let held = tasks_held(&node, &tasks);
        assert!(
            held == 11 || held == tasks.len(),
            "{label} {n} failing: {held} tasks held"
        );
        if installed.is_ok() {
            assert_eq!(
                held,
                tasks.len(),
                "{label} {n}: installed, yet {held} tasks"
            );
        }
        node.shutdown().await.unwrap();
        if installed.is_ok() {
            done[usize::from(kind)] = true;
        }
    }
    assert_eq!(done, [true, true], "the install never went through");
}
