//! The task store driven by a replication layer: records appended at their positions and terms,
//! applied in order once committed, rejected batches kept as no-ops that every reader skips,
//! checkpoints that carry the replication layer's state, snapshots, and `Log::reset`.

use std::sync::Arc;

use tasklog_engine::event::{Event, TASK_BATCH_KIND};
use tasklog_engine::model::{TaskState, TaskStatus};
use tasklog_engine::subscribe::Next;
use tasklog_engine::{
    Error, Log, NewRecord, NewTask, Options, Position, Prepared, SyncPolicy, TaskStore, Write,
};

use crate::common::check_listing;

fn options() -> Options {
    Options {
        sync: SyncPolicy::Never,
        ..Options::default()
    }
}

fn create(id: &str) -> Write {
    Write::Create(NewTask {
        task_id: Some(id.into()),
        ..NewTask::submitted(None)
    })
}

fn status(id: &str, expected_version: Option<u64>, state: TaskState) -> Write {
    Write::Append {
        task_id: id.into(),
        expected_version,
        events: vec![Event::Status(TaskStatus::new(state))],
    }
}

/// What a leader does with a prepared write: append it at the next position, as `term`.
fn append(store: &TaskStore, term: u64, prepared: &Prepared) -> Position {
    let at = store.log().next_position();
    store
        .log()
        .append_at(
            at,
            &[NewRecord {
                term,
                kind: TASK_BATCH_KIND,
                payload: &prepared.payload,
            }],
        )
        .unwrap();
    at
}

fn append_other(store: &TaskStore, term: u64) -> Position {
    let at = store.log().next_position();
    store
        .log()
        .append_at(
            at,
            &[NewRecord {
                term,
                kind: 0x11,
                payload: b"membership",
            }],
        )
        .unwrap();
    at
}

#[test]
fn committed_records_apply_in_order_and_a_raced_write_is_a_no_op_every_reader_skips() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(TaskStore::open_replica(dir.path(), options()).unwrap());
    assert_eq!(store.replica_applied().unwrap().position, Position::new(0));

    // Embedded writes are refused: the replication layer writes.
    assert!(matches!(
        store.create(NewTask::submitted(None)),
        Err(Error::InvalidArgument(_))
    ));

    let membership = append_other(&store, 1);
    let created = store.prepare(create("t")).unwrap();
    assert_eq!(created.version, 1);
    let p_create = append(&store, 1, &created);
    // Nothing is visible before it is applied.
    assert!(matches!(
        store.get("t", None),
        Err(Error::TaskNotFound { .. })
    ));
    let mut tail = store.tail(Position::new(1));
    assert!(tail.try_next(10).unwrap().is_empty());

    store
        .apply_other(membership, 1, Some(b"members-1".to_vec()))
        .unwrap();
    let written = store
        .apply_batch(p_create, 1, &created.payload)
        .unwrap()
        .unwrap();
    assert_eq!((written.version, written.position), (1, p_create));
    // Applying a position again (or an earlier one) is refused and changes nothing.
    assert!(matches!(
        store.apply_batch(p_create, 1, &created.payload),
        Err(Error::InvalidArgument(_))
    ));
    assert!(store.apply_other(membership, 1, None).is_err());
    assert_eq!(store.version("t"), Some(1));
    let mut subscription = store.subscribe("t", 1).unwrap();

    // Two leaders' worth of writes prepared against the same version: the second one loses at
    // apply, on every node alike.
    let working = store
        .prepare(status("t", None, TaskState::Working))
        .unwrap();
    let failed = store
        .prepare(status("t", Some(1), TaskState::Failed))
        .unwrap();
    let p_working = append(&store, 2, &working);
    let p_failed = append(&store, 2, &failed);
    store
        .apply_batch(p_working, 2, &working.payload)
        .unwrap()
        .unwrap();
    match store.apply_batch(p_failed, 2, &failed.payload).unwrap() {
        Err(Error::VersionConflict {
            expected, actual, ..
        }) => assert_eq!((expected, actual), (1, 2)),
        other => panic!("expected a conflict, got {other:?}"),
    }
    // Bytes that are no event batch are rejected the same way.
    let garbage = Prepared {
        task_id: "t".into(),
        version: 3,
        payload: vec![7; 24],
    };
    let p_garbage = append(&store, 2, &garbage);
    assert!(matches!(
        store.apply_batch(p_garbage, 2, &garbage.payload),
        Ok(Err(Error::InvalidPayload { .. }))
    ));
    let applied = store.replica_applied().unwrap();
    assert_eq!((applied.position, applied.term), (p_garbage, 2));
    assert_eq!(applied.state, b"members-1");

    let task = store.get("t", None).unwrap();
    assert_eq!(task.status.state, TaskState::Working);
    assert_eq!(store.version("t"), Some(2));
    // The tail delivers the two applied batches, not the membership, rejected or garbage records.
    let delivered: Vec<Position> = tail
        .try_next(10)
        .unwrap()
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    assert_eq!(delivered, vec![p_create, p_working]);
    assert_eq!(tail.next_position(), Position::new(p_garbage.get() + 1));
    let mut versions = Vec::new();
    while let Next::Delivery(delivery) = subscription.try_next().unwrap() {
        versions.push(delivery.first_version);
    }
    assert_eq!(versions, vec![1, 2]);
}

#[test]
fn a_checkpoint_carries_the_replica_state_and_reopen_applies_nothing_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let (p_create, p_conflict, p_late) = {
        let store = TaskStore::open_replica(dir.path(), options()).unwrap();
        let m = append_other(&store, 3);
        store.apply_other(m, 3, Some(b"m".to_vec())).unwrap();
        let created = store.prepare(create("t")).unwrap();
        let p_create = append(&store, 3, &created);
        store
            .apply_batch(p_create, 3, &created.payload)
            .unwrap()
            .unwrap();
        let again = store
            .prepare(status("t", Some(1), TaskState::Working))
            .unwrap();
        let stale = store
            .prepare(status("t", Some(1), TaskState::Canceled))
            .unwrap();
        let p_again = append(&store, 3, &again);
        let p_conflict = append(&store, 3, &stale);
        store
            .apply_batch(p_again, 3, &again.payload)
            .unwrap()
            .unwrap();
        assert!(
            store
                .apply_batch(p_conflict, 3, &stale.payload)
                .unwrap()
                .is_err()
        );
        assert_eq!(store.checkpoint().unwrap(), p_conflict);
        // Appended but not applied (not committed yet): the checkpoint must not cover it.
        let late = store
            .prepare(status("t", Some(2), TaskState::Completed))
            .unwrap();
        let p_late = append(&store, 3, &late);
        store.log().sync().unwrap();
        store.close().unwrap();
        (p_create, p_conflict, p_late)
    };
    let store = Arc::new(TaskStore::open_replica(dir.path(), options()).unwrap());
    let applied = store.replica_applied().unwrap();
    assert_eq!(
        (applied.position, applied.term, applied.state.as_slice()),
        (p_conflict, 3, &b"m"[..])
    );
    assert_eq!(store.open_report().checkpoint_position, Some(p_conflict));
    assert_eq!(store.summary("t").unwrap().state, TaskState::Working);
    assert_eq!(store.log().bounds().1, p_late);
    // The rejected position stays skipped after the reopen (read from the log: nothing is
    // remembered yet).
    let mut tail = store.tail(p_create);
    let delivered: Vec<u64> = tail
        .try_next(10)
        .unwrap()
        .iter()
        .map(|(p, _)| p.get())
        .collect();
    assert_eq!(delivered, vec![p_create.get(), p_create.get() + 1]);
    // The replication layer re-applies what was committed after the checkpoint.
    let late = store.log().read(p_late).unwrap();
    store
        .apply_batch(p_late, late.term(), late.payload())
        .unwrap()
        .unwrap();
    assert_eq!(store.summary("t").unwrap().state, TaskState::Completed);
}

#[test]
fn a_snapshot_installs_on_another_node_and_an_embedded_checkpoint_is_not_trusted() {
    let leader_dir = tempfile::tempdir().unwrap();
    let follower_dir = tempfile::tempdir().unwrap();
    let leader = TaskStore::open_replica(leader_dir.path(), options()).unwrap();
    let follower = TaskStore::open_replica(follower_dir.path(), options()).unwrap();
    let mut records = Vec::new();
    for id in ["a", "b", "c"] {
        let prepared = leader.prepare(create(id)).unwrap();
        let at = append(&leader, 5, &prepared);
        leader
            .apply_batch(at, 5, &prepared.payload)
            .unwrap()
            .unwrap();
        records.push(prepared);
    }
    let (at, image) = leader.snapshot().unwrap();
    assert_eq!((at.position.get(), at.term), (3, 5));
    // The follower gets the log prefix the snapshot's tasks refer to, then the image.
    for prepared in &records {
        append(&follower, 5, prepared);
    }
    let applied = follower.install_snapshot(&image).unwrap();
    assert_eq!((applied.position.get(), applied.term), (3, 5));
    assert_eq!(follower.len(), 3);
    assert_eq!(follower.get("b", None).unwrap().id, "b");
    assert!(follower.install_snapshot(b"not a snapshot").is_err());
    follower.close().unwrap();
    let reopened = TaskStore::open_replica(follower_dir.path(), options()).unwrap();
    assert_eq!(reopened.replica_applied().unwrap().position.get(), 3);
    assert_eq!(reopened.len(), 3);
    drop(reopened);

    // A checkpoint written by an embedded store is ignored by a replica (and vice versa).
    let embedded_dir = tempfile::tempdir().unwrap();
    let embedded = TaskStore::open(embedded_dir.path(), Options::default()).unwrap();
    embedded.create(NewTask::submitted(None)).unwrap();
    embedded.close().unwrap();
    let as_replica = TaskStore::open_replica(embedded_dir.path(), options()).unwrap();
    assert_eq!(as_replica.open_report().checkpoint_position, None);
    assert!(as_replica.is_empty());
}

#[test]
fn reset_empties_the_log_and_moves_its_next_position_durably() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        segment_bytes_max: 64 * 1024,
        ..Options::default()
    };
    let log = Log::open(dir.path(), options.clone()).unwrap();
    let filler = vec![3u8; 1000];
    while log.segment_count() < 3 {
        log.append(&[NewRecord::new(1, &filler)]).unwrap();
    }
    log.reset(Position::new(1000)).unwrap();
    assert_eq!(log.bounds(), (Position::new(1000), Position::new(999)));
    assert_eq!(log.segment_count(), 1);
    assert!(matches!(
        log.read(Position::new(5)),
        Err(Error::NotFound { .. })
    ));
    assert!(
        log.append_at(Position::new(5), &[NewRecord::new(1, b"x")])
            .is_err()
    );
    log.append_at(Position::new(1000), &[NewRecord::new(1, b"first")])
        .unwrap();
    assert_eq!(log.durable_position(), Position::new(1000));
    assert!(log.reset(Position::new(0)).is_err());
    log.crash();
    let log = Log::open(dir.path(), options.clone()).unwrap();
    assert_eq!(log.bounds(), (Position::new(1000), Position::new(1000)));
    assert_eq!(log.read(Position::new(1000)).unwrap().payload(), b"first");
    // An empty reset log reopens empty at its new position.
    log.reset(Position::new(7)).unwrap();
    log.close().unwrap();
    let log = Log::open(dir.path(), options.clone()).unwrap();
    assert_eq!(log.bounds(), (Position::new(7), Position::new(6)));
}

/// The list indexes are derived state: a snapshot installed on another node, the batches
/// applied after it, and a reopen from the checkpoint all list exactly what the plain model
/// says, for every filter.
#[test]
fn a_snapshot_carries_what_list_serves_and_later_applies_keep_it() {
    let leader_dir = tempfile::tempdir().unwrap();
    let follower_dir = tempfile::tempdir().unwrap();
    let leader = TaskStore::open_replica(leader_dir.path(), options()).unwrap();
    let follower = TaskStore::open_replica(follower_dir.path(), options()).unwrap();
    let mut records = Vec::new();
    let mut model: Vec<(String, String, TaskState)> = Vec::new();
    let write = |store: &TaskStore, records: &mut Vec<Prepared>, command: Write| {
        let prepared = store.prepare(command).unwrap();
        let at = append(store, 2, &prepared);
        store
            .apply_batch(at, 2, &prepared.payload)
            .unwrap()
            .unwrap();
        records.push(prepared);
    };
    let states = [
        TaskState::Working,
        TaskState::Completed,
        TaskState::InputRequired,
        TaskState::Canceled,
    ];
    for i in 0..40 {
        let id = format!("t{i:02}");
        let context = match i % 4 {
            0 | 1 => "ctx-a".to_string(),
            2 => "ctx-b".to_string(),
            _ => format!("ctx-{i}"),
        };
        write(
            &leader,
            &mut records,
            Write::Create(NewTask {
                task_id: Some(id.clone()),
                context_id: Some(context.clone()),
                ..NewTask::submitted(None)
            }),
        );
        let mut state = TaskState::Submitted;
        if i % 3 != 0 {
            state = states[i % states.len()];
            write(&leader, &mut records, status(&id, Some(1), state));
        }
        model.push((id, context, state));
    }
    // Delete two terminal tasks: one from a shared context, one that was alone in its own.
    for id in ["t05", "t07"] {
        let at = model.iter().position(|t| t.0 == id).unwrap();
        assert!(model[at].2.is_terminal(), "{id}");
        write(
            &leader,
            &mut records,
            Write::Append {
                task_id: id.into(),
                expected_version: Some(2),
                events: vec![Event::Deleted],
            },
        );
        model.remove(at);
    }
    check_listing(&leader, &model);

    let (_, image) = leader.snapshot().unwrap();
    for prepared in &records {
        append(&follower, 2, prepared);
    }
    follower.install_snapshot(&image).unwrap();
    check_listing(&follower, &model);

    // Applies after the snapshot move tasks between states and contexts' orders.
    let next = follower.replica_applied().unwrap().position.get();
    let on_follower = |command: Write| {
        let prepared = follower.prepare(command).unwrap();
        let at = append(&follower, 3, &prepared);
        assert!(at.get() > next);
        follower
            .apply_batch(at, 3, &prepared.payload)
            .unwrap()
            .unwrap();
    };
    for (id, _, state) in model.iter_mut() {
        if *state == TaskState::Submitted {
            on_follower(status(id, None, TaskState::Working));
            *state = TaskState::Working;
        }
    }
    on_follower(Write::Create(NewTask {
        task_id: Some("late".into()),
        context_id: Some("ctx-b".into()),
        ..NewTask::submitted(None)
    }));
    model.push(("late".into(), "ctx-b".into(), TaskState::Submitted));
    check_listing(&follower, &model);
    follower.checkpoint().unwrap();
    follower.close().unwrap();
    let reopened = TaskStore::open_replica(follower_dir.path(), options()).unwrap();
    check_listing(&reopened, &model);
}

/// Goal: a subscriber on a follower that installs a snapshot moving its task ahead gets the
/// versions the snapshot skipped, in order, and then follows applies again; its task's watch
/// must not keep answering from before the snapshot. Method: subscribe at version 1 on the
/// follower, install a leader snapshot where the task is at version 3, then apply version 4.
#[test]
fn a_subscription_follows_its_task_across_a_snapshot_install() {
    let leader_dir = tempfile::tempdir().unwrap();
    let follower_dir = tempfile::tempdir().unwrap();
    let leader = TaskStore::open_replica(leader_dir.path(), options()).unwrap();
    let follower = Arc::new(TaskStore::open_replica(follower_dir.path(), options()).unwrap());
    let apply = |store: &TaskStore, write: Write| {
        let prepared = store.prepare(write).unwrap();
        let at = append(store, 1, &prepared);
        store
            .apply_batch(at, 1, &prepared.payload)
            .unwrap()
            .unwrap();
        prepared
    };
    let mut records = vec![apply(&leader, create("t"))];
    let created = records[0].clone();
    let at = append(&follower, 1, &created);
    follower
        .apply_batch(at, 1, &created.payload)
        .unwrap()
        .unwrap();
    let mut subscription = follower.subscribe("t", 1).unwrap();
    assert!(matches!(subscription.try_next().unwrap(), Next::Delivery(d) if d.first_version == 1));
    assert_eq!(subscription.try_next().unwrap(), Next::Idle);

    records.push(apply(&leader, status("t", Some(1), TaskState::Working)));
    records.push(apply(
        &leader,
        status("t", Some(2), TaskState::InputRequired),
    ));
    let (_, image) = leader.snapshot().unwrap();
    for prepared in &records[1..] {
        append(&follower, 1, prepared);
    }
    follower.install_snapshot(&image).unwrap();
    let mut versions = Vec::new();
    while let Next::Delivery(delivery) = subscription.try_next().unwrap() {
        versions.push(delivery.first_version);
    }
    assert_eq!(
        versions,
        [2, 3],
        "the versions the snapshot brought, in order"
    );

    let working = follower
        .prepare(status("t", Some(3), TaskState::Working))
        .unwrap();
    let at = append(&follower, 1, &working);
    follower
        .apply_batch(at, 1, &working.payload)
        .unwrap()
        .unwrap();
    assert!(matches!(
        subscription.try_next().unwrap(),
        Next::Delivery(d) if d.first_version == 4 && d.position == at
    ));
    assert_eq!(subscription.try_next().unwrap(), Next::Idle);
}
