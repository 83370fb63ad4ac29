//! Subscriptions: replay then follow, the same order for every subscriber, where the replay ends,
//! the end of a stream, tails, and bounded memory with 1,000 subscribers that never read.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use tasklog_engine::event::Event;
use tasklog_engine::model::{Message, Part, Role, TaskState, TaskStatus};
use tasklog_engine::subscribe::{Next, block_on};
use tasklog_engine::{Error, NewTask, Options, Position, TaskStore};

fn note(text: &str) -> Event {
    Event::Message(Message {
        message_id: text.into(),
        context_id: None,
        task_id: None,
        role: Role::Agent,
        parts: vec![Part::text(text)],
        metadata: None,
        extensions: vec![],
        reference_task_ids: vec![],
    })
}

fn message_ids(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Message(m) => Some(m.message_id.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_replays_then_follows_live_writes_then_ends() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(TaskStore::open(dir.path(), Options::default()).unwrap());
    let id = store.create(NewTask::submitted(None)).unwrap().task_id;
    store.append(&id, None, vec![note("a"), note("b")]).unwrap();
    let mut subscription = store.subscribe(&id, 1).unwrap();
    assert_eq!(subscription.caught_up().version, 3);
    let replay_first = subscription.next().await.unwrap().unwrap();
    assert_eq!(replay_first.first_version, 1);
    assert!(matches!(replay_first.events[0], Event::Created { .. }));
    let replay_second = subscription.next().await.unwrap().unwrap();
    assert_eq!(message_ids(&replay_second.events), ["a", "b"]);
    assert_eq!(replay_second.position, subscription.caught_up().position);
    assert_eq!(subscription.try_next().unwrap(), Next::Idle);

    let writer = {
        let (store, id) = (store.clone(), id.clone());
        tokio::task::spawn_blocking(move || {
            for i in 0..20 {
                std::thread::sleep(Duration::from_millis(1));
                store
                    .append(&id, None, vec![note(&format!("live-{i}"))])
                    .unwrap();
            }
            store
                .append(
                    &id,
                    None,
                    vec![Event::Status(TaskStatus::new(TaskState::Completed))],
                )
                .unwrap();
        })
    };
    let mut live = Vec::new();
    let mut version = 4;
    while let Some(delivery) = tokio::time::timeout(Duration::from_secs(20), subscription.next())
        .await
        .unwrap()
        .unwrap()
    {
        assert_eq!(delivery.first_version, version, "no gap, no duplicate");
        version += delivery.events.len() as u64;
        live.extend(message_ids(&delivery.events));
    }
    writer.await.unwrap();
    let expected: Vec<String> = (0..20).map(|i| format!("live-{i}")).collect();
    assert_eq!(live, expected);
    assert_eq!(
        version, 25,
        "the terminal status was delivered before the end"
    );
    assert_eq!(subscription.try_next().unwrap(), Next::Ended);
    assert!(matches!(
        store.subscribe("missing", 1),
        Err(Error::TaskNotFound { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_subscribers_see_the_same_order_from_where_they_start() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(TaskStore::open(dir.path(), Options::default()).unwrap());
    let id = store.create(NewTask::submitted(None)).unwrap().task_id;
    let readers: Vec<_> = (0..40u64)
        .map(|r| {
            let mut subscription = store.subscribe(&id, 1 + r % 3).unwrap();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut first = None;
                while let Some(delivery) = subscription.next().await.unwrap() {
                    first.get_or_insert(delivery.first_version);
                    seen.extend(message_ids(&delivery.events));
                }
                (r, first, seen)
            })
        })
        .collect();
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (store, id) = (store.clone(), id.clone());
            tokio::task::spawn_blocking(move || {
                for i in 0..25 {
                    store
                        .append(&id, None, vec![note(&format!("{w}-{i}"))])
                        .unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    store
        .append(
            &id,
            None,
            vec![Event::Status(TaskStatus::new(TaskState::Failed))],
        )
        .unwrap();
    let order: Vec<String> = store
        .get(&id, None)
        .unwrap()
        .history
        .iter()
        .map(|m| m.message_id.clone())
        .collect();
    assert_eq!(order.len(), 100);
    for reader in readers {
        let (r, first, seen) = tokio::time::timeout(Duration::from_secs(20), reader)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(first, Some(1 + r % 3), "reader {r} starts where it asked");
        let skip = (r % 3).saturating_sub(1) as usize;
        assert_eq!(
            seen,
            order[skip..],
            "reader {r} sees the store's order, whole"
        );
    }
}

#[test]
fn a_tail_replays_every_write_then_follows() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(TaskStore::open(dir.path(), Options::default()).unwrap());
    for _ in 0..5 {
        store.create(NewTask::submitted(None)).unwrap();
    }
    let mut tail = store.tail(Position::new(1));
    assert_eq!(tail.caught_up().position, Position::new(5));
    let replayed = tail.try_next(100).unwrap();
    assert_eq!(
        replayed.iter().map(|(p, _)| p.get()).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    assert!(tail.try_next(100).unwrap().is_empty());
    let writer = {
        let store = store.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            store.create(NewTask::submitted(None)).unwrap().task_id
        })
    };
    let live = block_on(tail.next(100)).unwrap();
    let created = writer.join().unwrap();
    assert_eq!(live.len(), 1);
    assert_eq!(
        (live[0].0, live[0].1.task_id.as_str()),
        (Position::new(6), created.as_str())
    );
    // A second tail from the middle sees the same records.
    let mut middle = store.tail(Position::new(4));
    let seen: Vec<u64> = middle
        .try_next(100)
        .unwrap()
        .iter()
        .map(|(p, _)| p.get())
        .collect();
    assert_eq!(seen, [4, 5, 6]);
}

const MEMORY_CHILD_ENV: &str = "TASKLOG_SUBSCRIBER_MEMORY_CHILD";

/// The child of `slow_subscribers_hold_no_memory`: prints the growth of anonymous memory while
/// 1,000 subscribers that never read watch tasks receiving 20,000 events.
#[test]
#[ignore = "run as a child process by slow_subscribers_hold_no_memory"]
fn slow_subscribers_memory_child() {
    if std::env::var_os(MEMORY_CHILD_ENV).is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        sync: tasklog_engine::SyncPolicy::Never,
        ..Options::default()
    };
    let store = Arc::new(TaskStore::open(dir.path(), options).unwrap());
    let ids: Vec<String> = (0..100)
        .map(|_| store.create(NewTask::submitted(None)).unwrap().task_id)
        .collect();
    let subscriptions: Vec<_> = (0..1000)
        .map(|i| store.subscribe(&ids[i % 100], 1).unwrap())
        .collect();
    let before = anonymous_kib();
    let payload = "x".repeat(200);
    for i in 0..20_000 {
        store
            .append(&ids[i % 100], None, vec![note(&payload)])
            .unwrap();
    }
    let after = anonymous_kib();
    println!("growth_kib {}", after.saturating_sub(before));
    // Every subscriber can still read everything, from the log.
    let mut first = subscriptions.into_iter().next().unwrap();
    let mut events = 0;
    while let Next::Delivery(delivery) = first.try_next().unwrap() {
        events += delivery.events.len();
    }
    println!("first_subscriber_events {events}");
}

fn anonymous_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("RssAnon:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn slow_subscribers_hold_no_memory() {
    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "subscriptions::slow_subscribers_memory_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(MEMORY_CHILD_ENV, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let value = |key: &str| -> u64 {
        // libtest may print its own "test … ..." prefix on the same line.
        let line = stdout
            .lines()
            .find_map(|l| l.split_once(key).map(|(_, rest)| rest))
            .unwrap_or_else(|| panic!("no {key} in {stdout}"));
        line.split_whitespace().next().unwrap().parse().unwrap()
    };
    // If each of the 1,000 subscribers buffered its task's 200 events of ~300 bytes, that would be
    // about 60 MB; the store's own table grows by a few MB (an entry per write).
    let growth = value("growth_kib ");
    assert!(
        growth < 16 * 1024,
        "anonymous memory grew by {growth} KiB with 1,000 idle subscribers"
    );
    assert_eq!(
        value("first_subscriber_events "),
        201,
        "the created event plus 200 messages"
    );
}

#[test]
fn a_tail_crosses_from_the_log_into_the_recent_cache_without_gaps() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        sync: tasklog_engine::SyncPolicy::Never,
        segment_bytes_max: 256 * 1024,
        ..Options::default()
    };
    let store = Arc::new(TaskStore::open(dir.path(), options).unwrap());
    // More writes than the store remembers, so the oldest come from the log.
    let ids: Vec<String> = (0..6000)
        .map(|_| store.create(NewTask::submitted(None)).unwrap().task_id)
        .collect();
    let mut tail = store.tail(Position::new(1));
    let mut seen = Vec::new();
    loop {
        let batch = tail.try_next(700).unwrap();
        if batch.is_empty() {
            break;
        }
        seen.extend(
            batch
                .into_iter()
                .map(|(position, batch)| (position.get(), batch.task_id.clone())),
        );
    }
    assert_eq!(seen.len(), 6000);
    for (i, (position, task_id)) in seen.iter().enumerate() {
        assert_eq!((*position, task_id), (i as u64 + 1, &ids[i]));
    }
}

/// Writers racing in group commits while a tail follows live, then one writer waiting for the
/// tail after each write: the tail gets every record once, in position order, never stalls after
/// a write (each acknowledgement wakes it, though only the first writer of a group commit sends
/// the wakeup), and reads none of them back from the log, because a write is remembered before
/// its position can be acknowledged.
#[test]
fn a_live_tail_gets_every_racing_write_from_memory_and_never_stalls() {
    const WRITERS: usize = 8;
    const APPENDS: usize = 400;
    const ONE_BY_ONE: usize = 50;
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        sync: tasklog_engine::SyncPolicy::Never,
        ..Options::default()
    };
    let store = Arc::new(TaskStore::open(dir.path(), options).unwrap());
    let ids: Vec<String> = (0..WRITERS)
        .map(|_| store.create(NewTask::submitted(None)).unwrap().task_id)
        .collect();
    let first = store.log().acknowledged_position().get() + 1;
    let total = WRITERS * APPENDS + ONE_BY_ONE;
    // All of it fits in what the store remembers (4,096 records), so any log read is a live one.
    assert!(WRITERS + total < 4096);
    let (seen_tx, seen_rx) = std::sync::mpsc::channel();
    let follower = {
        let mut tail = store.tail(Position::new(first));
        std::thread::spawn(move || {
            let mut received = 0;
            while received < total {
                for (position, _) in block_on(tail.next(64)).unwrap() {
                    received += 1;
                    seen_tx.send(position.get()).unwrap();
                }
            }
        })
    };
    let writers: Vec<_> = ids
        .iter()
        .map(|id| {
            let (store, id) = (store.clone(), id.clone());
            std::thread::spawn(move || {
                for i in 0..APPENDS {
                    store
                        .append(&id, None, vec![note(&format!("{i}"))])
                        .unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().unwrap();
    }
    let stalled = "the tail stalled after a write: a wakeup was lost";
    let mut positions = Vec::with_capacity(total);
    while positions.len() < WRITERS * APPENDS {
        positions.push(
            seen_rx
                .recv_timeout(Duration::from_secs(30))
                .expect(stalled),
        );
    }
    for i in 0..ONE_BY_ONE {
        let written = store
            .append(&ids[0], None, vec![note(&format!("one-{i}"))])
            .unwrap();
        let seen = seen_rx
            .recv_timeout(Duration::from_secs(30))
            .expect(stalled);
        assert_eq!(seen, written.position.get());
        positions.push(seen);
    }
    follower.join().unwrap();
    let expected: Vec<u64> = (first..first + total as u64).collect();
    assert_eq!(positions, expected, "every record once, in position order");
    assert_eq!(
        store.tail_log_reads(),
        0,
        "a live tail read just-acknowledged records back from the log"
    );
}

/// Goal: a subscriber that keeps up finds each new write (and that there is none yet) in its
/// task's watch, without the table lock the writers take, and still sees every write once, in
/// order, and the end. Method: writes from two threads to one task while a subscriber follows;
/// then writes one at a time, each read at once, counting the table lookups; then a terminal
/// write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_keeps_up_follows_without_the_table() {
    const WRITES: usize = 400;
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        sync: tasklog_engine::SyncPolicy::Never,
        ..Options::default()
    };
    let store = Arc::new(TaskStore::open(dir.path(), options).unwrap());
    let id = store.create(NewTask::submitted(None)).unwrap().task_id;
    let mut subscription = store.subscribe(&id, 2).unwrap();
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let (store, id) = (store.clone(), id.clone());
            std::thread::spawn(move || {
                for i in 0..WRITES / 2 {
                    store
                        .append(&id, None, vec![note(&format!("{w}-{i}"))])
                        .unwrap();
                    std::thread::yield_now();
                }
            })
        })
        .collect();
    let mut versions = Vec::new();
    while versions.len() < WRITES {
        let delivery = tokio::time::timeout(Duration::from_secs(30), subscription.next())
            .await
            .expect("the subscriber stalled: a wakeup was lost")
            .unwrap()
            .expect("the task is not terminal");
        for offset in 0..delivery.events.len() as u64 {
            versions.push(delivery.first_version + offset);
        }
    }
    for writer in writers {
        writer.join().unwrap();
    }
    let expected: Vec<u64> = (2..2 + WRITES as u64).collect();
    assert_eq!(versions, expected, "every version once, in order");
    // How often a subscriber racing two writers falls behind (and asks the table) depends on
    // the scheduler, so only the one-at-a-time phase below counts lookups.

    // One at a time, the subscriber never needs the table.
    let lookups_before = store.subscription_table_lookups();
    for i in 0..50 {
        let written = store
            .append(&id, None, vec![note(&format!("one-{i}"))])
            .unwrap();
        let Next::Delivery(delivery) = subscription.try_next().unwrap() else {
            panic!("write {i} not delivered");
        };
        assert_eq!(delivery.position, written.position);
        assert_eq!(delivery.first_version, written.version);
        assert_eq!(subscription.try_next().unwrap(), Next::Idle);
    }
    assert_eq!(store.subscription_table_lookups(), lookups_before);

    // The end: the terminal write is delivered from the watch, then the table says it ended.
    let status = Event::Status(TaskStatus::new(TaskState::Completed));
    store.append(&id, None, vec![status]).unwrap();
    assert!(matches!(
        subscription.try_next().unwrap(),
        Next::Delivery(_)
    ));
    assert_eq!(subscription.try_next().unwrap(), Next::Ended);
}

/// Bug (review of the task watch, 2026-12-02): a subscription followed a task id, not a task.
/// Its task deleted and another created under the same id (insert-if-absent) before it looked
/// again, it went on with the new task's events as if they were its own (here: the new task's
/// version 3 in place of the deleted task's cancellation), where a subscription whose task was
/// deleted ends. Method: a subscriber keeping up (its task's watch in the map), then cancel,
/// delete, create again and write the same id past the subscriber's next version.
#[test]
fn a_subscription_ends_when_its_task_is_deleted_and_its_id_taken_again() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(TaskStore::open(dir.path(), Options::default()).unwrap());
    let new_task = || NewTask {
        task_id: Some("reused".into()),
        ..NewTask::submitted(None)
    };
    store.create(new_task()).unwrap();
    store.append("reused", None, vec![note("old")]).unwrap();
    let mut subscription = store.subscribe("reused", 1).unwrap();
    for _ in 0..2 {
        assert!(matches!(
            subscription.try_next().unwrap(),
            Next::Delivery(_)
        ));
    }
    assert_eq!(subscription.try_next().unwrap(), Next::Idle);

    store.cancel("reused").unwrap();
    store.delete("reused").unwrap();
    store.create(new_task()).unwrap();
    for text in ["new-2", "new-3", "new-4"] {
        store.append("reused", None, vec![note(text)]).unwrap();
    }
    // A second subscriber, of the new task, shares the same watch and sees the new task.
    let mut newer = store.subscribe("reused", 1).unwrap();
    assert!(matches!(newer.try_next().unwrap(), Next::Delivery(d) if d.first_version == 1));

    match subscription.try_next().unwrap() {
        Next::Ended => {}
        other => panic!("the deleted task's subscription went on with another task: {other:?}"),
    }
    assert!(
        matches!(newer.try_next().unwrap(), Next::Delivery(d) if message_ids(&d.events) == ["new-2"])
    );
}
