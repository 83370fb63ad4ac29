//! `tasklog inspect DIR` and `tasklog verify DIR`: what a data directory holds, and a full check
//! of every byte in it.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use tasklog_engine::event::{EventBatch, TASK_BATCH_KIND};
use tasklog_engine::model::TaskState;
use tasklog_engine::{ListQuery, Log, Options, Position, RecoveryMode, TaskStore, record};

const STATES: [TaskState; 8] = [
    TaskState::Submitted,
    TaskState::Working,
    TaskState::InputRequired,
    TaskState::AuthRequired,
    TaskState::Completed,
    TaskState::Failed,
    TaskState::Canceled,
    TaskState::Rejected,
];

/// Refuses a directory that holds no log, so that neither command creates one by accident.
fn existing_log(dir: &Path) -> anyhow::Result<()> {
    let entries = std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    let has_segment = entries
        .filter_map(Result::ok)
        .any(|e| e.path().extension().is_some_and(|x| x == "seg"));
    if !has_segment {
        bail!("{} holds no tasklog segments", dir.display());
    }
    Ok(())
}

/// Describes the segments, positions, tasks by state, and what recovery did on open.
///
/// # Errors
/// The directory holds no log, or the log cannot be opened.
pub fn inspect(dir: &Path) -> anyhow::Result<String> {
    existing_log(dir)?;
    let store = TaskStore::open(dir, Options::default())?;
    let log = store.log();
    let (first, last) = log.bounds();
    let mut out = String::new();
    writeln!(out, "data directory  {}", dir.display())?;
    writeln!(
        out,
        "positions       {first}..={last} (durable through {})",
        log.durable_position()
    )?;
    let report = log.recovery_report();
    writeln!(
        out,
        "recovery        scanned {} bytes, {} truncation(s), {} index(es) rebuilt, {} file(s) removed",
        report.scanned_bytes,
        report.truncations.len(),
        report.rebuilt_indexes.len(),
        report.removed_files.len()
    )?;
    writeln!(out, "segments        {}", log.segment_count())?;
    for segment in log.segments() {
        let name = segment
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        writeln!(
            out,
            "  {name}  positions {}..={}  {} records  {} bytes  {}, {} index entries",
            segment.first_position,
            segment.last_position,
            segment.records,
            segment.bytes,
            match (segment.sealed, segment.compacted) {
                (_, true) => "compacted",
                (true, false) => "sealed",
                (false, false) => "active",
            },
            segment.index_entries
        )?;
    }
    writeln!(out, "tasks           {}", store.len())?;
    for state in STATES {
        let page = store.list(&ListQuery {
            state: Some(state),
            page_size: Some(1),
            ..ListQuery::default()
        })?;
        if page.total_size > 0 {
            writeln!(out, "  {:<26} {}", state.as_str(), page.total_size)?;
        }
    }
    store.close()?;
    Ok(out)
}

/// Opens the log without repairing anything, checks every frame and index entry and decodes every
/// task record; returns a summary or the first problem.
///
/// # Errors
/// The first corruption found (with file and offset), or I/O errors.
pub fn verify(dir: &Path, show_progress: bool) -> anyhow::Result<String> {
    existing_log(dir)?;
    let options = Options {
        recovery: RecoveryMode::Absolute,
        ..Options::default()
    };
    let log = Log::open(dir, options)
        .with_context(|| format!("opening {} without repairs", dir.display()))?;
    let bar = if show_progress {
        ProgressBar::new(0)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{msg:>9} [{bar:40}] {bytes}/{total_bytes} ({eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message("frames");
    let report = log.verify(&mut |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    })?;
    bar.set_message("records");
    bar.set_position(0);
    let (first, last) = log.bounds();
    let mut batches = 0u64;
    let mut position = first.get();
    while position <= last.get() {
        let entries = log.read_range(Position::new(position), 4096, 64 * 1024 * 1024)?;
        if entries.is_empty() {
            // Compaction removed every record from `position` to the end.
            break;
        }
        for entry in entries {
            position = entry.position().get() + 1;
            bar.inc(entry.payload().len() as u64);
            if entry.kind() == TASK_BATCH_KIND {
                record::decode::<EventBatch>(&entry)?;
                batches += 1;
            }
        }
    }
    bar.finish_and_clear();
    log.close()?;
    Ok(format!(
        "ok: {} records ({} task event batches), {} bytes in {} segments, positions {first}..={last}\n",
        report.records,
        batches,
        report.bytes,
        report.segments.len()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tasklog_engine::NewTask;

    #[test]
    fn inspect_and_verify_describe_a_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = TaskStore::open(dir.path(), Options::default()).unwrap();
        for _ in 0..3 {
            store.create(NewTask::submitted(None)).unwrap();
        }
        store.close().unwrap();
        let text = inspect(dir.path()).unwrap();
        assert!(text.contains("positions       1..=3"), "{text}");
        assert!(text.contains("TASK_STATE_SUBMITTED       3"), "{text}");
        let text = verify(dir.path(), false).unwrap();
        assert!(
            text.starts_with("ok: 3 records (3 task event batches)"),
            "{text}"
        );
    }

    #[test]
    fn inspect_and_verify_read_a_compacted_store() {
        use tasklog_engine::event::Event;
        use tasklog_engine::model::{Message, Part, Role, TaskState, TaskStatus};
        let dir = tempfile::tempdir().unwrap();
        let options = Options {
            segment_bytes_max: 64 * 1024,
            ..Options::default()
        };
        let store = TaskStore::open(dir.path(), options).unwrap();
        let mut kept = 0;
        for i in 0..200 {
            let message = Message {
                parts: vec![Part::text("z".repeat(2000))],
                ..Message::text("m", Role::User, "")
            };
            let id = store
                .create(NewTask::submitted(Some(message)))
                .unwrap()
                .task_id;
            if i % 4 == 0 {
                kept += 1;
                continue;
            }
            let done = Event::Status(TaskStatus::new(TaskState::Completed));
            store.append(&id, None, vec![done]).unwrap();
            store.delete(&id).unwrap();
        }
        let compaction = store.compact().unwrap();
        assert!(compaction.records_removed > 0, "{compaction:?}");
        store.close().unwrap();
        let text = inspect(dir.path()).unwrap();
        assert!(text.contains("compacted, "), "{text}");
        assert!(text.contains(&format!("tasks           {kept}")), "{text}");
        let text = verify(dir.path(), false).unwrap();
        let records = 200 + 2 * 150 - compaction.records_removed;
        assert!(
            text.starts_with(&format!(
                "ok: {records} records ({records} task event batches)"
            )),
            "{text}"
        );
    }

    #[test]
    fn neither_command_creates_a_log_where_there_is_none() {
        let dir = tempfile::tempdir().unwrap();
        assert!(inspect(dir.path()).is_err());
        assert!(verify(dir.path(), false).is_err());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
