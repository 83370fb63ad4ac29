//! The task store: create / append / cancel / get / list on real files, optimistic concurrency,
//! the terminal guard, stable paging under concurrent inserts, and a model test of its semantics
//! through reopen and crash.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use proptest::prelude::*;
use tasklog_engine::event::Event;
use tasklog_engine::model::{Artifact, Message, Part, Role, TaskState, TaskStatus};
use tasklog_engine::{Error, ListQuery, NewTask, Options, TaskStore};

use crate::common::{check_listing, small_segments};

fn message(id: &str, role: Role) -> Message {
    Message {
        message_id: id.into(),
        context_id: None,
        task_id: None,
        role,
        parts: vec![Part::text(format!("text of {id}"))],
        metadata: None,
        extensions: vec![],
        reference_task_ids: vec![],
    }
}

fn status(state: TaskState) -> Event {
    Event::Status(TaskStatus::new(state))
}

fn with_message(state: TaskState, id: &str) -> Event {
    Event::Status(TaskStatus {
        state,
        message: Some(message(id, Role::Agent)),
        timestamp: None,
    })
}

fn artifact(id: &str, text: &str, append: bool) -> Event {
    Event::Artifact {
        artifact: Artifact {
            artifact_id: id.into(),
            name: None,
            description: None,
            parts: vec![Part::text(text)],
            metadata: None,
            extensions: vec![],
        },
        append,
        last_chunk: false,
    }
}

#[test]
fn a_task_lives_through_its_lifecycle_and_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = TaskStore::open(dir.path(), Options::default()).unwrap();
    let created = store
        .create(NewTask::submitted(Some(message("hello", Role::User))))
        .unwrap();
    assert_eq!(created.version, 1);
    let id = created.task_id.clone();
    store
        .append(
            &id,
            Some(1),
            vec![status(TaskState::Working), artifact("a", "part 1", false)],
        )
        .unwrap();
    store
        .append(
            &id,
            Some(3),
            vec![
                artifact("a", "part 2", true),
                with_message(TaskState::InputRequired, "which?"),
            ],
        )
        .unwrap();
    store
        .append(
            &id,
            None,
            vec![
                Event::Message(message("this one", Role::User)),
                status(TaskState::Working),
            ],
        )
        .unwrap();
    let done = store
        .append(
            &id,
            Some(7),
            vec![with_message(TaskState::Completed, "done")],
        )
        .unwrap();
    assert_eq!(done.version, 8);
    let check = |store: &TaskStore| {
        let task = store.get(&id, None).unwrap();
        assert_eq!(task.status.state, TaskState::Completed);
        assert!(task.status.timestamp.is_some());
        let history: Vec<&str> = task.history.iter().map(|m| m.message_id.as_str()).collect();
        // A2A.md's fold: a status message joins the history when the next status replaces it, so
        // "which?" lands after "this one", which was appended while "which?" was still current.
        assert_eq!(history, ["hello", "this one", "which?"]);
        assert_eq!(task.status.message.as_ref().unwrap().message_id, "done");
        assert_eq!(
            task.artifacts[0].parts,
            vec![Part::text("part 1"), Part::text("part 2")]
        );
        assert_eq!(store.get(&id, Some(1)).unwrap().history.len(), 1);
        assert_eq!(
            store.get(&id, Some(1)).unwrap().history[0].message_id,
            "which?"
        );
        assert!(store.get(&id, Some(0)).unwrap().history.is_empty());
        assert_eq!(store.version(&id), Some(8));
    };
    check(&store);
    store.close().unwrap();
    let store = TaskStore::open(dir.path(), Options::default()).unwrap();
    check(&store);
    // Terminal: nothing more, not even a cancel.
    assert!(matches!(
        store.append(&id, None, vec![status(TaskState::Working)]),
        Err(Error::TaskTerminal {
            state: TaskState::Completed,
            ..
        })
    ));
    assert!(matches!(store.cancel(&id), Err(Error::TaskTerminal { .. })));
    assert_eq!(
        store.version(&id),
        Some(8),
        "rejected writes change nothing"
    );
}

#[test]
fn rejected_writes_say_why_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = TaskStore::open(dir.path(), Options::default()).unwrap();
    let id = store
        .create(NewTask {
            task_id: Some("fixed".into()),
            ..NewTask::submitted(None)
        })
        .unwrap()
        .task_id;
    assert_eq!(id, "fixed");
    assert!(matches!(
        store.create(NewTask {
            task_id: Some("fixed".into()),
            ..NewTask::submitted(None)
        }),
        Err(Error::TaskExists { .. })
    ));
    assert!(matches!(
        store.append("missing", None, vec![status(TaskState::Working)]),
        Err(Error::TaskNotFound { .. })
    ));
    assert!(matches!(
        store.get("missing", None),
        Err(Error::TaskNotFound { .. })
    ));
    assert!(matches!(
        store.append(&id, Some(5), vec![status(TaskState::Working)]),
        Err(Error::VersionConflict {
            expected: 5,
            actual: 1,
            ..
        })
    ));
    assert!(matches!(
        store.append(&id, None, vec![status(TaskState::Unspecified)]),
        Err(Error::InvalidEvent { .. })
    ));
    assert!(matches!(
        store.append(&id, None, vec![artifact("nope", "x", true)]),
        Err(Error::InvalidEvent { .. })
    ));
    assert!(matches!(
        store.append(&id, None, vec![]),
        Err(Error::InvalidEvent { .. })
    ));
    let huge = "x".repeat(2 * 1024 * 1024);
    assert!(matches!(
        store.append(
            &id,
            None,
            vec![Event::Message(Message {
                parts: vec![Part::text(huge)],
                ..message("big", Role::User)
            })]
        ),
        Err(Error::TooLarge { .. })
    ));
    assert!(matches!(
        store.create(NewTask {
            task_id: Some("x".repeat(300)),
            ..NewTask::submitted(None)
        }),
        Err(Error::InvalidArgument(_))
    ));
    assert_eq!(store.version(&id), Some(1));
    assert_eq!(
        store.log().bounds().1.get(),
        1,
        "only the creation reached the log"
    );
    // Cancel works from an interrupted state.
    store
        .append(&id, Some(1), vec![status(TaskState::InputRequired)])
        .unwrap();
    assert_eq!(store.cancel(&id).unwrap().version, 3);
    assert_eq!(
        store.get(&id, None).unwrap().status.state,
        TaskState::Canceled
    );
}

#[test]
fn compare_and_set_from_many_threads_loses_no_update() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(TaskStore::open(dir.path(), Options::default()).unwrap());
    let id = store.create(NewTask::submitted(None)).unwrap().task_id;
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let (store, id) = (store.clone(), id.clone());
            std::thread::spawn(move || {
                let (mut wins, mut conflicts) = (0u64, 0u64);
                while wins < 20 {
                    let version = store.version(&id).unwrap();
                    match store.append(
                        &id,
                        Some(version),
                        vec![Event::Message(message(&format!("{t}-{wins}"), Role::Agent))],
                    ) {
                        Ok(written) => {
                            assert_eq!(written.version, version + 1);
                            wins += 1;
                        }
                        Err(Error::VersionConflict { actual, .. }) => {
                            assert!(actual > version);
                            conflicts += 1;
                        }
                        Err(other) => panic!("{other}"),
                    }
                }
                conflicts
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    assert_eq!(store.version(&id), Some(1 + 8 * 20));
    let task = store.get(&id, None).unwrap();
    assert_eq!(task.history.len(), 160);
    let unique: HashSet<&str> = task.history.iter().map(|m| m.message_id.as_str()).collect();
    assert_eq!(unique.len(), 160, "every successful write is there once");
}

#[test]
fn list_filters_and_pages_without_duplicates_or_gaps_under_concurrent_inserts() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(TaskStore::open(dir.path(), Options::default()).unwrap());
    let mut originals = Vec::new();
    for i in 0..150 {
        let written = store
            .create(NewTask {
                context_id: Some(format!("ctx-{}", i % 3)),
                ..NewTask::submitted(None)
            })
            .unwrap();
        if i % 5 == 0 {
            store
                .append(
                    &written.task_id,
                    None,
                    vec![status(TaskState::Working), artifact("a", "x", false)],
                )
                .unwrap();
        }
        originals.push(written.task_id);
    }
    let inserter = {
        let store = store.clone();
        std::thread::spawn(move || {
            (0..100)
                .map(|_| store.create(NewTask::submitted(None)).unwrap().task_id)
                .collect::<Vec<_>>()
        })
    };
    let mut seen = Vec::new();
    let mut token = None;
    let mut previous_time = None;
    loop {
        let page = store
            .list(&ListQuery {
                page_size: Some(17),
                page_token: token.clone(),
                ..ListQuery::default()
            })
            .unwrap();
        for task in &page.tasks {
            let time = task.status.timestamp.unwrap();
            assert!(previous_time.is_none_or(|p| time <= p), "newest first");
            previous_time = Some(time);
            assert!(
                task.artifacts.is_empty(),
                "artifacts are left out unless asked for"
            );
            seen.push(task.id.clone());
        }
        if page.next_page_token.is_empty() {
            break;
        }
        token = Some(page.next_page_token);
    }
    let inserted = inserter.join().unwrap();
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no task twice");
    for id in &originals {
        assert!(
            unique.contains(id),
            "task {id} that existed before paging began was skipped"
        );
    }
    assert!(
        seen.iter()
            .all(|id| originals.contains(id) || inserted.contains(id))
    );

    let working = store
        .list(&ListQuery {
            state: Some(TaskState::Working),
            include_artifacts: true,
            ..ListQuery::default()
        })
        .unwrap();
    assert_eq!(working.total_size, 30);
    assert_eq!(working.tasks.len(), 30);
    assert!(
        working
            .tasks
            .iter()
            .all(|t| t.status.state == TaskState::Working && t.artifacts.len() == 1)
    );
    let context = store
        .list(&ListQuery {
            context_id: Some("ctx-1".into()),
            page_size: Some(100),
            ..ListQuery::default()
        })
        .unwrap();
    assert_eq!(
        (
            context.total_size,
            context.tasks.len(),
            context.next_page_token.as_str()
        ),
        (50, 50, "")
    );
    let later = store
        .list(&ListQuery {
            status_timestamp_after: Some(tasklog_engine::model::Timestamp(i64::MAX)),
            ..ListQuery::default()
        })
        .unwrap();
    assert_eq!(later.total_size, 0);
    assert!(matches!(
        store.list(&ListQuery {
            page_size: Some(0),
            ..ListQuery::default()
        }),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        store.list(&ListQuery {
            page_size: Some(101),
            ..ListQuery::default()
        }),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        store.list(&ListQuery {
            page_token: Some("garbage!".into()),
            ..ListQuery::default()
        }),
        Err(Error::InvalidArgument(_))
    ));
}

/// Paging through one context while another thread creates tasks in it and in other contexts
/// and moves tasks of other contexts: every page comes from that context's own index, newest
/// first, no task twice, none that existed before paging began skipped, and `total_size` never
/// below the context's size when paging began.
#[test]
fn paging_by_context_under_concurrent_inserts_repeats_and_skips_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        sync: tasklog_engine::SyncPolicy::Never,
        ..Options::default()
    };
    let store = Arc::new(TaskStore::open(dir.path(), options).unwrap());
    let create = |store: &TaskStore, context: &str| {
        store
            .create(NewTask {
                context_id: Some(context.into()),
                ..NewTask::submitted(None)
            })
            .unwrap()
            .task_id
    };
    let mut before = HashSet::new();
    let mut others = Vec::new();
    for i in 0..600 {
        match i % 3 {
            0 => {
                before.insert(create(&store, "paged"));
            }
            1 => others.push(create(&store, "other")),
            _ => others.push(create(&store, &format!("own-{i}"))),
        }
    }
    let paged_at_start = before.len() as u64;
    let writer = {
        let store = store.clone();
        std::thread::spawn(move || {
            let mut inserted = Vec::new();
            for (i, other) in others.iter().enumerate() {
                if i % 2 == 0 {
                    inserted.push(create(&store, "paged"));
                }
                create(&store, "other");
                store
                    .append(other, None, vec![status(TaskState::Working)])
                    .unwrap();
            }
            inserted
        })
    };
    for round in 0..3 {
        let mut seen = Vec::new();
        let mut token = None;
        let mut previous: Option<tasklog_engine::model::Timestamp> = None;
        loop {
            let page = store
                .list(&ListQuery {
                    context_id: Some("paged".into()),
                    page_size: Some(7),
                    page_token: token.take(),
                    history_length: Some(0),
                    ..ListQuery::default()
                })
                .unwrap();
            assert!(page.total_size >= paged_at_start, "round {round}");
            for task in &page.tasks {
                assert_eq!(task.context_id, "paged");
                let time = task.status.timestamp.unwrap();
                assert!(previous.is_none_or(|p| time <= p), "newest first");
                previous = Some(time);
                seen.push(task.id.clone());
            }
            if page.next_page_token.is_empty() {
                break;
            }
            token = Some(page.next_page_token);
        }
        let unique: HashSet<&String> = seen.iter().collect();
        assert_eq!(unique.len(), seen.len(), "round {round}: a task twice");
        for id in &before {
            assert!(unique.contains(id), "round {round}: task {id} was skipped");
        }
    }
    let inserted = writer.join().unwrap();
    let total = store
        .list(&ListQuery {
            context_id: Some("paged".into()),
            ..ListQuery::default()
        })
        .unwrap()
        .total_size;
    assert_eq!(total, paged_at_start + inserted.len() as u64);
    store.check_indexes().unwrap();
}

/// Operations of the task model test.
#[derive(Debug, Clone)]
enum TaskOp {
    /// Create a task in context `ctx-{context % 3}`, or (for 3) a context of its own; with
    /// `reuse`, under the id of a task created before (taken if it is live, free again once it
    /// was deleted).
    Create {
        context: u8,
        reuse: Option<u8>,
    },
    Move {
        task: u8,
        state: u8,
        versioned: bool,
        stale: bool,
    },
    Message {
        task: u8,
    },
    Cancel {
        task: u8,
    },
    /// Delete a task (only a terminal one may be).
    Delete {
        task: u8,
    },
    /// Reclaim the records of deleted tasks.
    Compact,
    /// Reopen without the checkpoint: the table is rebuilt from a log that compaction may have
    /// left with remains of deleted tasks.
    Rebuild,
    Reopen,
    Crash,
    Checkpoint,
}

fn task_op() -> impl Strategy<Value = TaskOp> {
    prop_oneof![
        3 => (0u8..4, prop::option::weighted(0.2, any::<u8>())).prop_map(|(context, reuse)| TaskOp::Create { context, reuse }),
        5 => (any::<u8>(), 0u8..9, any::<bool>(), prop::bool::weighted(0.2)).prop_map(|(task, state, versioned, stale)| TaskOp::Move { task, state, versioned, stale }),
        2 => any::<u8>().prop_map(|task| TaskOp::Message { task }),
        1 => any::<u8>().prop_map(|task| TaskOp::Cancel { task }),
        2 => any::<u8>().prop_map(|task| TaskOp::Delete { task }),
        1 => Just(TaskOp::Compact),
        1 => Just(TaskOp::Rebuild),
        1 => Just(TaskOp::Reopen),
        1 => Just(TaskOp::Crash),
        1 => Just(TaskOp::Checkpoint),
    ]
}

const STATES: [TaskState; 9] = [
    TaskState::Unspecified,
    TaskState::Submitted,
    TaskState::Working,
    TaskState::Completed,
    TaskState::Failed,
    TaskState::Canceled,
    TaskState::InputRequired,
    TaskState::Rejected,
    TaskState::AuthRequired,
];

/// The model's tasks as `check_listing` takes them.
fn listed_model(
    model: &BTreeMap<String, (TaskState, u64)>,
    contexts: &BTreeMap<String, String>,
) -> Vec<(String, String, TaskState)> {
    model
        .iter()
        .map(|(id, (state, _))| (id.clone(), contexts[id].clone(), *state))
        .collect()
}

/// The model: per task, its state and version, and its context; `list` with every filter is
/// checked against it after each reopen, crash, checkpoint and compaction and at the end.
/// Segments are small and messages large, so that segments seal and compaction has work.
fn run_task_model(ops: Vec<TaskOp>) {
    let dir = tempfile::tempdir().unwrap();
    let options = small_segments();
    let mut store = TaskStore::open(dir.path(), options.clone()).unwrap();
    let large = |id: &str| Message {
        parts: vec![Part::text("y".repeat(16 * 1024))],
        ..message(id, Role::User)
    };
    let mut model: BTreeMap<String, (TaskState, u64)> = BTreeMap::new();
    let mut contexts: BTreeMap<String, String> = BTreeMap::new();
    let mut ids: Vec<String> = Vec::new();
    let pick = |ids: &Vec<String>, i: u8| {
        ids.get(i as usize % ids.len().max(1))
            .cloned()
            .unwrap_or_else(|| "none".into())
    };
    for op in ops {
        match op {
            TaskOp::Create { context, reuse } => {
                let task_id = reuse.map(|i| pick(&ids, i)).filter(|id| id != "none");
                let result = store.create(NewTask {
                    task_id: task_id.clone(),
                    context_id: (context < 3).then(|| format!("ctx-{context}")),
                    ..NewTask::submitted(Some(large("first")))
                });
                match (task_id, result) {
                    (Some(id), Err(Error::TaskExists { .. })) => {
                        assert!(model.contains_key(&id), "{id} exists only in the store");
                    }
                    (reused, Ok(written)) => {
                        assert!(reused.is_none_or(|id| !model.contains_key(&id)));
                        let context_id = store.summary(&written.task_id).unwrap().context_id;
                        model.insert(written.task_id.clone(), (TaskState::Submitted, 1));
                        contexts.insert(written.task_id.clone(), context_id.to_string());
                        if !ids.contains(&written.task_id) {
                            ids.push(written.task_id);
                        }
                    }
                    (id, other) => panic!("create {id:?}: {other:?}"),
                }
            }
            TaskOp::Move {
                task,
                state,
                versioned,
                stale,
            } => {
                let id = pick(&ids, task);
                let target = STATES[state as usize];
                let expected = model
                    .get(&id)
                    .map(|m| if stale { m.1.saturating_sub(1) } else { m.1 });
                let result =
                    store.append(&id, expected.filter(|_| versioned), vec![status(target)]);
                match (model.get_mut(&id), result) {
                    (None, Err(Error::TaskNotFound { .. })) => {}
                    (Some((current, version)), result) => {
                        let stale_hit = versioned && stale;
                        match result {
                            Ok(written) => {
                                assert!(
                                    !current.is_terminal()
                                        && target != TaskState::Unspecified
                                        && !stale_hit
                                );
                                *current = target;
                                *version += 1;
                                assert_eq!(written.version, *version);
                            }
                            Err(Error::VersionConflict { actual, .. }) => {
                                assert!(stale_hit && actual == *version)
                            }
                            Err(Error::TaskTerminal { state, .. }) => {
                                assert!(current.is_terminal() && state == *current && !stale_hit)
                            }
                            Err(Error::InvalidEvent { .. }) => {
                                assert!(target == TaskState::Unspecified && !current.is_terminal())
                            }
                            Err(other) => panic!("unexpected {other}"),
                        }
                    }
                    (None, other) => panic!("write to a missing task gave {other:?}"),
                }
            }
            TaskOp::Message { task } => {
                let id = pick(&ids, task);
                let result = store.append(&id, None, vec![Event::Message(large("m"))]);
                match (model.get_mut(&id), result) {
                    (Some((state, version)), Ok(_)) if !state.is_terminal() => *version += 1,
                    (Some((state, _)), Err(Error::TaskTerminal { .. })) if state.is_terminal() => {}
                    (None, Err(Error::TaskNotFound { .. })) => {}
                    (entry, result) => panic!("message: model {entry:?}, store {result:?}"),
                }
            }
            TaskOp::Cancel { task } => {
                let id = pick(&ids, task);
                match (model.get_mut(&id), store.cancel(&id)) {
                    (Some((state, version)), Ok(_)) if !state.is_terminal() => {
                        *state = TaskState::Canceled;
                        *version += 1;
                    }
                    (Some((state, _)), Err(Error::TaskTerminal { .. })) if state.is_terminal() => {}
                    (None, Err(Error::TaskNotFound { .. })) => {}
                    (entry, result) => panic!("cancel: model {entry:?}, store {result:?}"),
                }
            }
            TaskOp::Delete { task } => {
                let id = pick(&ids, task);
                match (model.get(&id), store.delete(&id)) {
                    (Some((state, _)), Ok(_)) if state.is_terminal() => {
                        model.remove(&id);
                    }
                    (Some((state, _)), Err(Error::InvalidEvent { .. })) if !state.is_terminal() => {
                    }
                    (None, Err(Error::TaskNotFound { .. })) => {}
                    (entry, result) => panic!("delete: model {entry:?}, store {result:?}"),
                }
            }
            TaskOp::Compact => {
                store.compact().unwrap();
                check_listing(&store, &listed_model(&model, &contexts));
            }
            TaskOp::Rebuild => {
                store.close().unwrap();
                std::fs::remove_file(dir.path().join(tasklog_engine::checkpoint::FILE_NAME))
                    .unwrap();
                store = TaskStore::open(dir.path(), options.clone()).unwrap();
                assert_eq!(store.open_report().checkpoint_position, None);
                check_listing(&store, &listed_model(&model, &contexts));
            }
            TaskOp::Reopen => {
                store.close().unwrap();
                store = TaskStore::open(dir.path(), options.clone()).unwrap();
                check_listing(&store, &listed_model(&model, &contexts));
            }
            TaskOp::Crash => {
                // Every write was acknowledged durable (SyncPolicy::Always), so a crash loses none,
                // whatever the checkpoint covers.
                store.crash();
                store = TaskStore::open(dir.path(), options.clone()).unwrap();
                check_listing(&store, &listed_model(&model, &contexts));
            }
            TaskOp::Checkpoint => {
                store.checkpoint().unwrap();
                check_listing(&store, &listed_model(&model, &contexts));
            }
        }
    }
    assert_eq!(store.len(), model.len());
    for (id, (state, version)) in &model {
        let task = store.get(id, Some(0)).unwrap();
        assert_eq!(
            (task.status.state, store.version(id)),
            (*state, Some(*version)),
            "task {id}"
        );
    }
    let listed = store
        .list(&ListQuery {
            page_size: Some(100),
            ..ListQuery::default()
        })
        .unwrap();
    assert_eq!(listed.total_size as usize, model.len());
    check_listing(&store, &listed_model(&model, &contexts));
    // Every subscriber replays every event of its task, densely and in order, and its stream
    // ends exactly when the task is terminal.
    let store = Arc::new(store);
    for (id, (state, version)) in &model {
        let mut subscription = store.subscribe(id, 1).unwrap();
        let mut next = 1;
        loop {
            match subscription.try_next().unwrap() {
                tasklog_engine::subscribe::Next::Delivery(delivery) => {
                    assert_eq!(delivery.first_version, next, "task {id}");
                    next += delivery.events.len() as u64;
                }
                tasklog_engine::subscribe::Next::Idle => {
                    assert!(
                        !state.is_terminal(),
                        "task {id}: a terminal task's stream must end"
                    );
                    break;
                }
                tasklog_engine::subscribe::Next::Ended => {
                    assert!(
                        state.is_terminal(),
                        "task {id}: only a terminal task's stream ends"
                    );
                    break;
                }
            }
        }
        assert_eq!(next, version + 1, "task {id}: delivered versions");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: std::env::var("TASKLOG_PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(16), ..ProptestConfig::default() })]

    #[test]
    fn task_store_matches_model(ops in prop::collection::vec(task_op(), 1..80)) {
        run_task_model(ops);
    }
}

#[test]
fn retention_deletes_old_terminal_tasks_and_reclaims_whole_segments() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        segment_bytes_max: 64 * 1024,
        ..Options::default()
    };
    let store = TaskStore::open(dir.path(), options.clone()).unwrap();
    let big = Message {
        parts: vec![Part::text("x".repeat(1000))],
        ..message("first", Role::User)
    };
    let ids: Vec<String> = (0..300)
        .map(|_| {
            store
                .create(NewTask::submitted(Some(big.clone())))
                .unwrap()
                .task_id
        })
        .collect();
    for (i, id) in ids[..250].iter().enumerate() {
        if i == 240 {
            // Status times have millisecond resolution: keep the last ten clearly newest.
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        store
            .append(id, None, vec![status(TaskState::Completed)])
            .unwrap();
    }
    assert!(
        matches!(store.delete(&ids[299]), Err(Error::InvalidEvent { .. })),
        "active tasks are never deleted"
    );
    let segments_before = store.log().segment_count();

    let policy = tasklog_engine::Retention {
        terminal_count_max: Some(10),
        ..Default::default()
    };
    let now = tasklog_engine::model::Timestamp(i64::MAX / 2);
    // What a replicated leader would propose: the oldest first, at most as many as asked, each
    // with the version judged; nothing without a policy.
    let all_due = store.retention_due(&policy, now, usize::MAX);
    let mut due_ids: Vec<&String> = all_due.iter().map(|(id, _)| id).collect();
    due_ids.sort();
    let mut oldest: Vec<&String> = ids[..240].iter().collect();
    oldest.sort();
    assert_eq!(due_ids, oldest, "the 240 oldest terminal tasks");
    assert!(all_due.iter().all(|(_, version)| *version == 2));
    let times: Vec<_> = all_due
        .iter()
        .map(|(id, _)| store.get(id, Some(0)).unwrap().status.timestamp)
        .collect();
    assert!(times.is_sorted(), "oldest status first");
    assert_eq!(store.retention_due(&policy, now, 5), all_due[..5]);
    assert!(
        store
            .retention_due(&tasklog_engine::Retention::default(), now, usize::MAX)
            .is_empty()
    );
    let by_age = tasklog_engine::Retention {
        terminal_ttl_ms: Some(1),
        ..Default::default()
    };
    assert_eq!(store.retention_due(&by_age, now, usize::MAX).len(), 250);
    let report = store.apply_retention(&policy, now).unwrap();
    assert_eq!(report.deleted.len(), 240);
    let deleted: HashSet<&String> = report.deleted.iter().collect();
    let oldest: HashSet<&String> = ids[..240].iter().collect();
    assert!(deleted == oldest, "the oldest terminal tasks go first");
    assert!(
        report.segments_removed > 0 && report.first_position.get() > 1,
        "{report:?} of {segments_before} segments"
    );
    assert!(
        report.first_position.get() <= 241,
        "nothing a live task needs is removed: {report:?}"
    );
    assert!(matches!(
        store.get(&ids[0], None),
        Err(Error::TaskNotFound { .. })
    ));
    assert_eq!(
        store.get(&ids[245], None).unwrap().status.state,
        TaskState::Completed
    );
    assert_eq!(store.len(), 60);
    store.close().unwrap();

    // Reopen replays from the purge point: deletes of tasks whose creation was purged are no-ops.
    let store = TaskStore::open(dir.path(), options).unwrap();
    assert_eq!(store.len(), 60);
    assert_eq!(
        store.get(&ids[299], None).unwrap().history[0].parts[0],
        Part::text("x".repeat(1000))
    );
    let ttl = tasklog_engine::Retention {
        terminal_ttl_ms: Some(0),
        ..Default::default()
    };
    assert_eq!(store.apply_retention(&ttl, now).unwrap().deleted.len(), 10);
    assert_eq!(store.len(), 50);
    let listed = store
        .list(&ListQuery {
            page_size: Some(100),
            ..ListQuery::default()
        })
        .unwrap();
    assert_eq!(listed.total_size, 50);
}

/// A long-lived task written first pins the log's first segment, so purging whole segments frees
/// nothing; compaction must reclaim the deleted tasks' space around it, and the store must reopen
/// the same with or without its checkpoint.
#[test]
fn retention_compacts_around_a_long_lived_task() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        segment_bytes_max: 64 * 1024,
        ..Options::default()
    };
    let disk_bytes =
        |store: &TaskStore| -> u64 { store.log().segments().iter().map(|s| s.bytes).sum() };
    let store = TaskStore::open(dir.path(), options.clone()).unwrap();
    let big = |text: &str| Message {
        parts: vec![Part::text(text.repeat(1000))],
        ..message("first", Role::User)
    };
    let pinned = store
        .create(NewTask::submitted(Some(big("p"))))
        .unwrap()
        .task_id;
    let mut survivors = Vec::new();
    for i in 0..600 {
        let id = store
            .create(NewTask::submitted(Some(big("x"))))
            .unwrap()
            .task_id;
        if i % 50 == 0 {
            survivors.push(id);
        } else {
            store
                .append(&id, None, vec![status(TaskState::Completed)])
                .unwrap();
        }
        if i % 100 == 0 {
            store
                .append(&pinned, None, vec![Event::Message(big("q"))])
                .unwrap();
        }
    }
    let before = disk_bytes(&store);
    let report = store
        .apply_retention(
            &tasklog_engine::Retention {
                terminal_ttl_ms: Some(0),
                ..Default::default()
            },
            tasklog_engine::model::Timestamp(i64::MAX / 2),
        )
        .unwrap();
    assert_eq!(report.deleted.len(), 588);
    assert_eq!(
        report.segments_removed, 0,
        "the pinned task holds the first segment"
    );
    let compaction = report
        .compaction
        .expect("most records belong to deleted tasks");
    assert!(compaction.records_removed >= 2 * 588, "{compaction:?}");
    let after = disk_bytes(&store);
    assert!(after * 5 < before, "{before} -> {after} bytes");
    let expect = |store: &TaskStore| {
        assert_eq!(store.len(), 13);
        let task = store.get(&pinned, None).unwrap();
        assert_eq!(task.history.len(), 7);
        assert_eq!(task.history[6].parts[0], Part::text("q".repeat(1000)));
        for id in &survivors {
            assert_eq!(
                store.get(id, None).unwrap().status.state,
                TaskState::Submitted
            );
        }
        store.check_indexes().unwrap();
        store.log().verify(&mut |_, _| {}).unwrap();
    };
    expect(&store);
    // A second pass has nothing left to reclaim.
    assert_eq!(store.compact().unwrap().records_removed, 0);
    store.close().unwrap();
    let store = TaskStore::open(dir.path(), options.clone()).unwrap();
    expect(&store);
    store.close().unwrap();
    std::fs::remove_file(dir.path().join(tasklog_engine::checkpoint::FILE_NAME)).unwrap();
    let store = TaskStore::open(dir.path(), options).unwrap();
    assert_eq!(store.open_report().checkpoint_position, None);
    expect(&store);
    // The pinned task goes on after all of it.
    store
        .append(&pinned, None, vec![status(TaskState::Completed)])
        .unwrap();
}

#[test]
fn a_checkpoint_bounds_the_replay_and_a_bad_one_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let store = TaskStore::open(dir.path(), Options::default()).unwrap();
    let ids: Vec<String> = (0..100)
        .map(|_| store.create(NewTask::submitted(None)).unwrap().task_id)
        .collect();
    store.close().unwrap();
    let store = TaskStore::open(dir.path(), Options::default()).unwrap();
    assert_eq!(
        store.open_report().checkpoint_position.map(|p| p.get()),
        Some(100)
    );
    assert_eq!(
        store.open_report().replayed_records,
        0,
        "a clean close needs no replay"
    );
    assert_eq!(store.len(), 100);

    // Writes after the checkpoint, then a crash: only those are replayed, and none is lost.
    for id in &ids[..50] {
        store
            .append(id, Some(1), vec![status(TaskState::Working)])
            .unwrap();
    }
    store.crash();
    let store = TaskStore::open(dir.path(), Options::default()).unwrap();
    assert_eq!(store.open_report().replayed_records, 50);
    assert!(
        ids[..50]
            .iter()
            .all(|id| store.summary(id).unwrap().state == TaskState::Working)
    );
    assert!(
        ids[50..]
            .iter()
            .all(|id| store.summary(id).unwrap().state == TaskState::Submitted)
    );
    store.close().unwrap();

    // A damaged checkpoint is ignored: the table is rebuilt from the whole log.
    let path = dir.path().join(tasklog_engine::checkpoint::FILE_NAME);
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    let store = TaskStore::open(dir.path(), Options::default()).unwrap();
    assert_eq!(store.open_report().checkpoint_position, None);
    assert_eq!(store.open_report().replayed_records, 150);
    assert_eq!(store.version(&ids[0]), Some(2));
    store.close().unwrap();

    // A checkpoint that claims more than the log holds (copied from elsewhere) is ignored too.
    let other = tempfile::tempdir().unwrap();
    let small = TaskStore::open(other.path(), Options::default()).unwrap();
    small.create(NewTask::submitted(None)).unwrap();
    small.crash();
    std::fs::copy(
        &path,
        other.path().join(tasklog_engine::checkpoint::FILE_NAME),
    )
    .unwrap();
    let small = TaskStore::open(other.path(), Options::default()).unwrap();
    assert_eq!(
        (small.open_report().checkpoint_position, small.len()),
        (None, 1)
    );
}

#[test]
fn a_checkpoint_taken_under_concurrent_writes_loses_none_of_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(TaskStore::open(dir.path(), Options::default()).unwrap());
    let writers: Vec<_> = (0..6)
        .map(|_| {
            let store = store.clone();
            std::thread::spawn(move || {
                let id = store.create(NewTask::submitted(None)).unwrap().task_id;
                let mut version = 1;
                for i in 0..60 {
                    version = store
                        .append(
                            &id,
                            Some(version),
                            vec![Event::Message(message(&i.to_string(), Role::Agent))],
                        )
                        .unwrap()
                        .version;
                }
                (id, version)
            })
        })
        .collect();
    let checkpointer = {
        let store = store.clone();
        std::thread::spawn(move || {
            (0..20)
                .map(|_| store.checkpoint().unwrap().get())
                .max()
                .unwrap()
        })
    };
    let acked: Vec<(String, u64)> = writers.into_iter().map(|w| w.join().unwrap()).collect();
    assert!(checkpointer.join().unwrap() > 0);
    store.checkpoint().unwrap();
    let extra = store
        .append(&acked[0].0, None, vec![status(TaskState::Completed)])
        .unwrap();
    Arc::try_unwrap(store).ok().unwrap().crash();
    let store = TaskStore::open(dir.path(), Options::default()).unwrap();
    assert!(store.open_report().checkpoint_position.is_some());
    for (id, version) in &acked {
        assert!(
            store.version(id).unwrap() >= *version,
            "task {id} lost acknowledged writes"
        );
        assert_eq!(store.get(id, None).unwrap().history.len(), 60);
    }
    assert_eq!(store.version(&acked[0].0), Some(extra.version));
}

#[test]
fn a_poisoned_store_writes_no_checkpoint_and_reopens_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let store = TaskStore::open(dir.path(), Options::default()).unwrap();
    let id = store.create(NewTask::submitted(None)).unwrap().task_id;
    store.close().unwrap();
    let store = TaskStore::open(dir.path(), Options::default()).unwrap();
    store.log().faults().fail_sync_after(0);
    assert!(matches!(
        store.append(&id, Some(1), vec![status(TaskState::Working)]),
        Err(Error::Poisoned { .. })
    ));
    assert!(matches!(store.checkpoint(), Err(Error::Poisoned { .. })));
    drop(store); // the drop-time checkpoint is refused too
    let store = TaskStore::open(dir.path(), Options::default()).unwrap();
    assert_eq!(
        store.open_report().checkpoint_position.map(|p| p.get()),
        Some(1),
        "the last good checkpoint"
    );
    // The unacknowledged record survived in the page cache and is replayed like any other:
    // table and log agree, and the next version follows it.
    let version = store.version(&id).unwrap();
    assert!(version == 1 || version == 2);
    assert_eq!(
        store
            .append(&id, Some(version), vec![status(TaskState::Completed)])
            .unwrap()
            .version,
        version + 1
    );
}

/// A store of varied tasks for the checkpoint tests: UUID and text ids, contexts of one task,
/// of a few (kept in an array) and of many (an order list), every listed state, artifacts, and
/// tasks with one batch and with several. Returns the `check_listing` model.
fn varied_store(store: &TaskStore) -> Vec<(String, String, TaskState)> {
    let mut model = Vec::new();
    let states = [
        TaskState::Submitted,
        TaskState::Working,
        TaskState::Completed,
        TaskState::Canceled,
        TaskState::InputRequired,
    ];
    for i in 0..60usize {
        let context = match i % 4 {
            0 => format!("ctx-alone-{i}"),
            1 => format!("ctx-few-{}", i % 3),
            _ => "ctx-many".to_string(),
        };
        let task_id = (i % 2 == 0).then(|| format!("task-{i:03}"));
        let created = store
            .create(NewTask {
                task_id,
                context_id: Some(context.clone()),
                ..NewTask::submitted(Some(message(&format!("m{i}"), Role::User)))
            })
            .unwrap();
        let id = created.task_id;
        let state = states[i % states.len()];
        if i % 3 == 0 {
            store
                .append(&id, None, vec![artifact(&format!("a{i}"), "x", false)])
                .unwrap();
        }
        if state != TaskState::Submitted {
            store.append(&id, None, vec![status(state)]).unwrap();
        }
        model.push((id, context, state));
    }
    model
}

/// A table restored from the checkpoint answers exactly as one rebuilt from the log: every
/// `list` filter, page and total (`check_listing`), and every task's state and version.
#[test]
fn a_restored_table_lists_like_one_rebuilt_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let store = TaskStore::open(dir.path(), Options::default()).unwrap();
    let model = varied_store(&store);
    store.close().unwrap();
    let rebuilt_dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if name != tasklog_engine::checkpoint::FILE_NAME && name != "LOCK" {
            std::fs::copy(entry.path(), rebuilt_dir.path().join(&name)).unwrap();
        }
    }
    let restored = TaskStore::open(dir.path(), Options::default()).unwrap();
    let rebuilt = TaskStore::open(rebuilt_dir.path(), Options::default()).unwrap();
    assert!(restored.open_report().checkpoint_position.is_some());
    assert_eq!(restored.open_report().replayed_records, 0);
    assert_eq!(rebuilt.open_report().checkpoint_position, None);
    check_listing(&restored, &model);
    check_listing(&rebuilt, &model);
    for (id, ..) in &model {
        assert_eq!(
            restored.get(id, None).unwrap(),
            rebuilt.get(id, None).unwrap()
        );
        assert_eq!(restored.version(id), rebuilt.version(id));
    }
    // Writes on the restored table keep its indexes right; then a crash replays only them.
    let (first, ..) = &model[1];
    restored
        .append(first, None, vec![status(TaskState::Working)])
        .unwrap();
    let mut model = model;
    model[1].2 = TaskState::Working;
    check_listing(&restored, &model);
    restored.crash();
    let reopened = TaskStore::open(dir.path(), Options::default()).unwrap();
    assert_eq!(reopened.open_report().replayed_records, 1);
    check_listing(&reopened, &model);
}

/// A truncated or damaged checkpoint (any cut, a flipped byte in the header or the tasks) is
/// ignored and the table rebuilt from the log; a version 2 checkpoint, as older engines wrote,
/// is still used.
#[test]
fn a_truncated_or_damaged_checkpoint_is_rebuilt_and_version_2_is_read() {
    use tasklog_engine::checkpoint;
    let dir = tempfile::tempdir().unwrap();
    let store = TaskStore::open(dir.path(), Options::default()).unwrap();
    let model = varied_store(&store);
    store.close().unwrap();
    let path = dir.path().join(checkpoint::FILE_NAME);
    let good = std::fs::read(&path).unwrap();
    assert_eq!(&good[8..10], &checkpoint::FORMAT_VERSION.to_le_bytes());
    let mut damaged: Vec<Vec<u8>> = [
        0,
        1,
        checkpoint::HEADER_BYTES,
        good.len() / 2,
        good.len() - 1,
    ]
    .iter()
    .map(|&cut| good[..cut].to_vec())
    .collect();
    for at in [
        9,
        20,
        checkpoint::HEADER_BYTES + 2,
        good.len() / 2,
        good.len() - 1,
    ] {
        let mut flipped = good.clone();
        flipped[at] ^= 0x10;
        damaged.push(flipped);
    }
    for bytes in damaged {
        std::fs::write(&path, &bytes).unwrap();
        let store = TaskStore::open(dir.path(), Options::default()).unwrap();
        assert_eq!(
            store.open_report().checkpoint_position,
            None,
            "{} bytes",
            bytes.len()
        );
        check_listing(&store, &model);
        store.crash();
    }
    let saved = checkpoint::decode(&good).unwrap();
    std::fs::write(&path, checkpoint::encode_version_2(&saved).unwrap()).unwrap();
    let store = TaskStore::open(dir.path(), Options::default()).unwrap();
    assert!(store.open_report().checkpoint_position.is_some());
    assert_eq!(store.open_report().replayed_records, 0);
    check_listing(&store, &model);
    store.close().unwrap();
    // Its close wrote version 3 again.
    assert_eq!(std::fs::read(&path).unwrap(), good);
}

/// Goal: retention judges terminal tasks oldest first across the four terminal states (their
/// order lists are merged, not read one after another). Method: tasks ended in turn as
/// completed, failed, canceled and rejected, a few milliseconds apart; everything is due.
#[test]
fn retention_due_merges_the_terminal_states_oldest_first() {
    let dir = tempfile::tempdir().unwrap();
    let store = TaskStore::open(dir.path(), Options::default()).unwrap();
    let states = [
        TaskState::Completed,
        TaskState::Failed,
        TaskState::Canceled,
        TaskState::Rejected,
    ];
    let mut ended = Vec::new();
    for i in 0..12 {
        let id = store.create(NewTask::submitted(None)).unwrap().task_id;
        store
            .append(&id, None, vec![status(states[i % 4])])
            .unwrap();
        ended.push((id, 2));
        std::thread::sleep(std::time::Duration::from_millis(3));
    }
    store.create(NewTask::submitted(None)).unwrap();
    let policy = tasklog_engine::Retention {
        terminal_count_max: Some(0),
        ..Default::default()
    };
    let now = tasklog_engine::model::Timestamp::now();
    assert_eq!(store.retention_due(&policy, now, usize::MAX), ended);
    assert_eq!(store.retention_due(&policy, now, 3), ended[..3]);
    let keep_five = tasklog_engine::Retention {
        terminal_count_max: Some(5),
        ..Default::default()
    };
    assert_eq!(store.retention_due(&keep_five, now, usize::MAX), ended[..7]);
}
