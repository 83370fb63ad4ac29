//! An agent server loop on the embedded task store, with no network and no other process:
//! clients' messages create tasks, a worker thread follows the log's tail and works on each
//! submitted task (working, a streamed artifact, completed), and each client follows its own task
//! with a subscription until the task ends.
//!
//! `cargo run -p tasklog-engine --example agent_server [DATA_DIR]` (a temporary directory if none).
//! Run it twice on one directory: the second run finds the first run's tasks.

use std::sync::Arc;

use tasklog_engine::event::Event;
use tasklog_engine::model::{Artifact, Message, Part, Role, TaskState, TaskStatus, Timestamp};
use tasklog_engine::subscribe::block_on;
use tasklog_engine::{ListQuery, NewTask, Options, Position, Retention, TaskStore};

fn chunk(text: &str, append: bool, last_chunk: bool) -> Event {
    Event::Artifact {
        artifact: Artifact {
            artifact_id: "answer".into(),
            name: Some("answer".into()),
            description: None,
            parts: vec![Part::text(text)],
            metadata: None,
            extensions: vec![],
        },
        append,
        last_chunk,
    }
}

/// The agent: picks up every submitted task from the tail and answers it in three writes.
fn worker(store: Arc<TaskStore>, from: Position, tasks: usize) -> tasklog_engine::Result<()> {
    let mut tail = store.tail(from);
    let mut done = 0;
    while done < tasks {
        for (_, batch) in block_on(tail.next(64))? {
            if !matches!(batch.events.first(), Some(Event::Created { .. })) {
                continue;
            }
            let id = &batch.task_id;
            // Optimistic concurrency: each write names the version it builds on.
            let working = store.append(
                id,
                Some(1),
                vec![Event::Status(TaskStatus::new(TaskState::Working))],
            )?;
            let partial = store.append(
                id,
                Some(working.version),
                vec![chunk("Hello", false, false)],
            )?;
            let answer = TaskStatus {
                state: TaskState::Completed,
                message: Some(Message::text(format!("{id}-done"), Role::Agent, "done")),
                timestamp: None,
            };
            store.append(
                id,
                Some(partial.version),
                vec![chunk(", world", true, true), Event::Status(answer)],
            )?;
            done += 1;
        }
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let temporary = tempfile::tempdir()?;
    let dir = std::env::args()
        .nth(1)
        .map_or_else(|| temporary.path().to_path_buf(), Into::into);
    let store = Arc::new(TaskStore::open(&dir, Options::default())?);
    println!(
        "store in {}: {} task(s) from earlier runs",
        dir.display(),
        store.len()
    );

    let start = store.log().next_position();
    let agent = {
        let store = store.clone();
        std::thread::spawn(move || worker(store, start, 3))
    };

    for n in 1..=3 {
        let message = Message::text(format!("question-{n}"), Role::User, "say hello");
        let task = store.create(NewTask::submitted(Some(message)))?;
        let mut subscription = store.subscribe(&task.task_id, 1)?;
        while let Some(delivery) = block_on(subscription.next())? {
            for (i, event) in delivery.events.iter().enumerate() {
                let version = delivery.first_version + i as u64;
                println!(
                    "  task {} v{version} @{}: {}",
                    &task.task_id[..8],
                    delivery.position,
                    describe(event)
                );
            }
        }
        let finished = store.get(&task.task_id, None)?;
        let answer: Vec<String> = finished.artifacts[0]
            .parts
            .iter()
            .filter_map(|p| match &p.content {
                tasklog_engine::model::PartContent::Text(t) => Some(t.clone()),
                _ => None,
            })
            .collect();
        println!(
            "task {} is {}: {:?}",
            &task.task_id[..8],
            finished.status.state,
            answer.concat()
        );
    }
    agent.join().map_err(|_| "the agent thread panicked")??;

    let completed = store.list(&ListQuery {
        state: Some(TaskState::Completed),
        ..ListQuery::default()
    })?;
    println!("{} completed task(s) in the store", completed.total_size);
    // Retention: keep the five newest finished tasks. Older ones are deleted (as events, which a
    // replicated log would carry), and their records are compacted away once they are most of the
    // log (`TaskStore::compact` does it at once).
    let retention = Retention {
        terminal_count_max: Some(5),
        ..Retention::default()
    };
    let report = store.apply_retention(&retention, Timestamp::now())?;
    println!(
        "retention deleted {} task(s){}",
        report.deleted.len(),
        report.compaction.map_or_else(String::new, |c| format!(
            ", compaction removed {} record(s)",
            c.records_removed
        ))
    );
    Arc::try_unwrap(store)
        .map_err(|_| "store still shared")?
        .close()?;
    Ok(())
}

fn describe(event: &Event) -> String {
    match event {
        Event::Created { status, .. } => format!("created ({})", status.state),
        Event::Status(status) => format!("status {}", status.state),
        Event::Artifact {
            artifact, append, ..
        } => format!(
            "artifact {} ({})",
            artifact.artifact_id,
            if *append { "append" } else { "new" }
        ),
        Event::Message(message) => format!("message {}", message.message_id),
        Event::Metadata(_) => "metadata".into(),
        Event::Deleted => "deleted".into(),
    }
}
