//! Seed inputs made by the engine itself: real frames, segments, index files, checkpoints and
//! event batches, each prefixed with the control byte its target expects (see the target
//! functions in the crate root). `fuzz/seeds/<target>/` holds these as files (regenerate with
//! `cargo test -p tasklog-fuzz --test replay -- --ignored write_seed_files`); the replay test
//! also runs them fresh from this module, so a format change cannot leave the seeds stale.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result, anyhow};
use tasklog_engine::event::{Event, EventBatch, TASK_BATCH_KIND};
use tasklog_engine::model::{
    Artifact, Json, Message, Part, Role, TaskState, TaskStatus, Timestamp,
};
use tasklog_engine::{
    Log, NewRecord, NewTask, RecoveryMode, SyncPolicy, TaskStore, Write, checkpoint,
};
use tasklog_engine::{frame, record, segment, write_wire};

use crate::{CHECKPOINT_EDIT, FIX_CRC, options, scratch_dir};

/// Tasks in the store written by [`write_store`].
pub const STORE_TASKS: usize = 3;
/// A task of that store that is still working (not terminal).
pub const STORE_ACTIVE_TASK: &str = "task-active";
/// Every task id of that store.
pub const STORE_TASK_IDS: [&str; STORE_TASKS] = [STORE_ACTIVE_TASK, "task-done", "task-3"];

/// One seed: the target it is for, a file name, and the bytes.
pub type Seed = (&'static str, String, Vec<u8>);

fn engine<T>(what: &str, result: tasklog_engine::Result<T>) -> Result<T> {
    result.map_err(|e| anyhow!("{what}: {e}"))
}

fn message(text: &str) -> Message {
    Message {
        message_id: format!("m-{text}"),
        context_id: Some("ctx-1".into()),
        task_id: None,
        role: Role::User,
        parts: vec![Part::text(text)],
        metadata: json(),
        extensions: Vec::new(),
        reference_task_ids: Vec::new(),
    }
}

/// `{"k":1}` as JSON metadata.
fn json() -> Option<Json> {
    Json::from_text(r#"{"k":1}"#).ok()
}

/// The batch creating `task_id` (version 1).
pub fn created_batch(task_id: &str, timestamp: i64) -> EventBatch {
    EventBatch {
        task_id: task_id.into(),
        first_version: 1,
        timestamp: Timestamp(timestamp),
        events: vec![Event::Created {
            context_id: "ctx-1".into(),
            status: TaskStatus {
                state: TaskState::Submitted,
                message: None,
                timestamp: Some(Timestamp(timestamp)),
            },
            message: None,
            metadata: None,
        }],
    }
}

/// Event batches of every event kind, for [`STORE_ACTIVE_TASK`] after its creation.
pub fn batches() -> Vec<EventBatch> {
    let working = TaskStatus {
        state: TaskState::Working,
        message: None,
        timestamp: Some(Timestamp(5)),
    };
    let artifact = Artifact {
        artifact_id: "a-1".into(),
        name: Some("result".into()),
        description: None,
        parts: vec![Part::text("chunk")],
        metadata: json(),
        extensions: vec!["ext".into()],
    };
    let batch = |first_version: u64, events: Vec<Event>| EventBatch {
        task_id: STORE_ACTIVE_TASK.into(),
        first_version,
        timestamp: Timestamp(10),
        events,
    };
    vec![
        created_batch("task-other", 3),
        batch(2, vec![Event::Status(working.clone())]),
        batch(
            2,
            vec![
                Event::Status(working),
                Event::Artifact {
                    artifact,
                    append: false,
                    last_chunk: true,
                },
                Event::Message(message("hello")),
            ]
            .into_iter()
            .chain(json().map(Event::Metadata))
            .collect(),
        ),
        batch(
            2,
            vec![Event::Status(TaskStatus {
                state: TaskState::Completed,
                message: Some(message("done")),
                timestamp: None,
            })],
        ),
        batch(2, vec![Event::Deleted]),
    ]
}

/// Writes a small task store into `dir` and closes it (so it has a checkpoint): three tasks in
/// two contexts, one of them ([`STORE_ACTIVE_TASK`]) working with an artifact and a message.
///
/// # Errors
/// The engine's errors.
pub fn write_store(dir: &Path) -> Result<()> {
    let store = engine(
        "open store",
        TaskStore::open(
            dir,
            options(RecoveryMode::TolerateTail, SyncPolicy::Never, 256),
        ),
    )?;
    let new = |id: &str, context: &str, message: Option<Message>| NewTask {
        task_id: Some(id.into()),
        context_id: Some(context.into()),
        state: TaskState::Submitted,
        message,
        metadata: json(),
    };
    engine(
        "create",
        store.create(new(STORE_ACTIVE_TASK, "ctx-1", Some(message("start")))),
    )?;
    engine("create", store.create(new("task-done", "ctx-1", None)))?;
    engine("create", store.create(new("task-3", "ctx-2", None)))?;
    let working = Event::Status(TaskStatus::new(TaskState::Working));
    engine(
        "append",
        store.append(STORE_ACTIVE_TASK, Some(1), vec![working]),
    )?;
    if let Some(batch) = batches().get(2) {
        engine(
            "append",
            store.append(
                STORE_ACTIVE_TASK,
                None,
                batch.events.iter().skip(1).cloned().collect(),
            ),
        )?;
    }
    engine("cancel", store.cancel("task-done"))?;
    engine("close", store.close())?;
    Ok(())
}

fn with_control(control: u8, bytes: &[u8]) -> Vec<u8> {
    [&[control][..], bytes].concat()
}

fn frame_bytes(position: u64, term: u64, kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    frame::encode(&mut out, position, term, kind, payload);
    out
}

/// Every seed for every target.
///
/// # Errors
/// The engine's errors while writing the logs the seeds are cut from.
pub fn generate() -> Result<Vec<Seed>> {
    let mut seeds: Vec<Seed> = Vec::new();
    let mut add = |target: &'static str, name: &str, bytes: Vec<u8>| {
        seeds.push((target, name.to_string(), bytes));
    };
    let batch_payloads: Vec<Vec<u8>> = batches()
        .iter()
        .map(|b| record::to_payload(b).map(|p| p.to_vec()))
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow!("serialize: {e}"))?;

    // Frames.
    add(
        "frame_decode",
        "empty_payload",
        with_control(0, &frame_bytes(1, 0, 0, b"")),
    );
    add(
        "frame_decode",
        "odd_payload_with_term",
        with_control(0, &frame_bytes(42, 7, 3, &[0xAB; 13])),
    );
    if let Some(payload) = batch_payloads.get(2) {
        add(
            "frame_decode",
            "event_batch",
            with_control(0, &frame_bytes(2, 0, TASK_BATCH_KIND, payload)),
        );
    }
    let mut flagged = frame_bytes(5, 0, 1, b"flags");
    if let Some(flags) = flagged.get_mut(frame::FLAGS_OFFSET) {
        *flags = 1;
    }
    add(
        "frame_decode",
        "nonzero_flags_fix_crc",
        with_control(FIX_CRC, &flagged),
    );
    let whole = frame_bytes(9, 0, 1, &[7; 40]);
    add(
        "frame_decode",
        "short",
        with_control(0, whole.get(..whole.len() - 3).unwrap_or_default()),
    );

    // Segment headers and file names.
    add(
        "segment_header",
        "first_1",
        with_control(0, &segment::encode_header(1)),
    );
    add(
        "segment_header",
        "first_large",
        with_control(0, &segment::encode_header(1 << 40)),
    );
    let mut version_2 = segment::encode_header(3);
    if let Some(version) = version_2.get_mut(segment::VERSION_OFFSET) {
        *version = 2;
    }
    add(
        "segment_header",
        "version_2_fix_crc",
        with_control(FIX_CRC, &version_2),
    );
    add(
        "segment_header",
        "file_name",
        with_control(0, segment::file_name(77).as_bytes()),
    );

    // A log with small records in two segments, cleanly closed: segments and index files.
    let dir = scratch_dir()?;
    let log_options = options(RecoveryMode::TolerateTail, SyncPolicy::Never, 64);
    let log = engine("open", Log::open(dir.path(), log_options.clone()))?;
    for i in 0..6u8 {
        let payload = vec![i; usize::from(i) * 5];
        engine("append", log.append(&[NewRecord::new(i, &payload)]))?;
    }
    // A frame over the segment limit gets a segment of its own, which rolls the log.
    engine(
        "append",
        log.append(&[NewRecord::new(1, &[0x5A; 64 * 1024])]),
    )?;
    for i in 0..3u8 {
        engine("append", log.append(&[NewRecord::new(i, &[i; 100])]))?;
    }
    engine("close", log.close())?;
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    for entry in fs::read_dir(dir.path()).context("list")? {
        let entry = entry.context("list")?;
        let name = entry.file_name().to_string_lossy().into_owned();
        files.push((name, fs::read(entry.path()).context("read")?));
    }
    files.sort();
    let segments: Vec<&Vec<u8>> = files
        .iter()
        .filter(|(n, _)| n.ends_with(".seg"))
        .map(|(_, b)| b)
        .collect();
    let indexes: Vec<&Vec<u8>> = files
        .iter()
        .filter(|(n, _)| n.ends_with(".idx"))
        .map(|(_, b)| b)
        .collect();
    for (i, index) in indexes.iter().enumerate() {
        add("index_file", &format!("real_{i}"), with_control(0, index));
    }
    if let Some(index) = indexes.first() {
        let mut extra = index.to_vec();
        extra.extend_from_slice(&[0, 0, 0, 0, 0x40, 0, 0, 0]);
        add(
            "index_file",
            "extra_entry_fix",
            with_control(FIX_CRC | 0x02, &extra),
        );
    }
    let first_segment = segments.first().map(|s| s.as_slice()).unwrap_or_default();
    let last_segment = segments.last().map(|s| s.as_slice()).unwrap_or_default();
    add(
        "segment_recover",
        "one_segment",
        with_control(0, first_segment),
    );
    let torn = first_segment
        .get(..first_segment.len().saturating_sub(11))
        .unwrap_or_default();
    add("segment_recover", "torn_tail", with_control(0, torn));
    let mut zero_tail = first_segment.to_vec();
    zero_tail.extend_from_slice(&[0; 96]);
    add("segment_recover", "zero_tail", with_control(0, &zero_tail));
    let mut middle = first_segment.to_vec();
    if let Some(byte) = middle.get_mut(segment::HEADER_BYTES + 40) {
        *byte ^= 0x10;
    }
    add(
        "segment_recover",
        "corrupt_middle",
        with_control(0, &middle),
    );
    add(
        "segment_recover",
        "corrupt_middle_fix_crc",
        with_control(0x04, &middle),
    );
    // Two segments cut from the first one (frames 1..=3 sealed, 4..=6 last); the control byte
    // asks for valid headers, so the second is named 4.
    let (part_a, part_b) = first_segment.split_at(first_segment.len().min(184));
    let mut two = vec![0x01 | 0x02];
    two.extend_from_slice(
        &u16::try_from(part_a.len())
            .unwrap_or(u16::MAX)
            .to_le_bytes(),
    );
    two.extend_from_slice(part_a);
    two.extend_from_slice(&[0; segment::HEADER_BYTES]);
    two.extend_from_slice(part_b.get(..).unwrap_or_default());
    add("segment_recover", "two_segments", two.clone());
    // The same, with the first segment's real index file (covering more than the cut file).
    if let Some(index) = indexes.first() {
        let index_len = u16::try_from(index.len()).unwrap_or(u16::MAX);
        let mut sealed_index = vec![0x01 | 0x02 | 0x08 | 0x10];
        sealed_index.extend_from_slice(
            &u16::try_from(part_a.len())
                .unwrap_or(u16::MAX)
                .to_le_bytes(),
        );
        sealed_index.extend_from_slice(&index_len.to_le_bytes());
        sealed_index.extend_from_slice(part_a);
        sealed_index.extend_from_slice(index);
        sealed_index.extend_from_slice(&[0; segment::HEADER_BYTES]);
        sealed_index.extend_from_slice(part_b);
        add("segment_recover", "sealed_index_mismatch", sealed_index);
    }
    // The log's last segment (first position 8) with its clean-close checkpoint index.
    if let Some(index) = indexes.last() {
        let index_len = u16::try_from(index.len()).unwrap_or(u16::MAX);
        let mut with_index = vec![0x08];
        with_index.extend_from_slice(&index_len.to_le_bytes());
        with_index.extend_from_slice(index);
        with_index.extend_from_slice(last_segment);
        add("segment_recover", "last_segment_checkpoint", with_index);
    }
    // Two real segments that do not continue each other (6 records, then one starting at 8).
    let mut gap = vec![0x01];
    gap.extend_from_slice(
        &u16::try_from(first_segment.len())
            .unwrap_or(u16::MAX)
            .to_le_bytes(),
    );
    gap.extend_from_slice(first_segment);
    gap.extend_from_slice(last_segment);
    add("segment_recover", "gap_between_segments", gap);
    // Frames without a header, for the header repair option.
    let mut headerless = vec![0x02 | 0x04];
    headerless.extend_from_slice(&[0; segment::HEADER_BYTES]);
    for position in 1..4 {
        headerless.extend_from_slice(&frame_bytes(position, 0, 1, b"abc"));
    }
    add("segment_recover", "fix_header_and_crcs", headerless);

    compacted_segment_seeds(&mut add)?;

    // Event batches (as payloads of one record), with and without a store replaying them.
    for (i, payload) in batch_payloads.iter().enumerate() {
        add(
            "event_batch",
            &format!("batch_{i}"),
            with_control(0, payload),
        );
        add(
            "event_batch",
            &format!("batch_{i}_store"),
            with_control(0x02, payload),
        );
    }
    if let Some(payload) = batch_payloads.get(2) {
        add(
            "event_batch",
            "sealed_store",
            with_control(0x02 | 0x04, payload),
        );
        add(
            "event_batch",
            "other_kind",
            with_control(0x01 | 0x02, payload),
        );
    }
    add(
        "event_batch",
        "not_a_batch_store",
        with_control(0x02, b"\x01\x02\x03"),
    );

    // Forwarded writes: a creation with a message, and each seed batch as an append.
    let creation = Write::Create(NewTask {
        task_id: Some("forwarded".into()),
        context_id: Some("ctx".into()),
        state: TaskState::Submitted,
        message: None,
        metadata: None,
    });
    let mut writes = vec![("create", creation)];
    for (i, batch) in batches().into_iter().enumerate() {
        let name: &'static str = ["append_0", "append_1", "append_2", "append_3"]
            .get(i)
            .copied()
            .unwrap_or("append_n");
        writes.push((
            name,
            Write::Append {
                task_id: STORE_ACTIVE_TASK.into(),
                expected_version: batch.first_version.checked_sub(1),
                events: batch.events,
            },
        ));
    }
    for (name, write) in writes {
        let bytes = write_wire::encode_write(&write).map_err(|e| anyhow!("encode: {e}"))?;
        add("forwarded_write", name, bytes);
    }

    // Checkpoints: the real one of the template store, an empty one, and a truncated one.
    let store_dir = scratch_dir()?;
    write_store(store_dir.path())?;
    let real = fs::read(store_dir.path().join(checkpoint::FILE_NAME)).context("read checkpoint")?;
    add("checkpoint_file", "real", with_control(0, &real));
    let empty = engine(
        "encode",
        checkpoint::encode(&checkpoint::Checkpoint {
            covered_position: 0,
            tasks: Vec::new(),
            rejected: Vec::new(),
            replica: None,
        }),
    )?;
    add("checkpoint_file", "empty", with_control(0, &empty));
    let mut covered_far = real.clone();
    if let Some(field) = covered_far.get_mut(16..24) {
        field.copy_from_slice(&1_000_000u64.to_le_bytes());
    }
    add(
        "checkpoint_file",
        "covered_mismatch_fix",
        with_control(FIX_CRC, &covered_far),
    );
    add(
        "checkpoint_file",
        "truncated_store",
        with_control(0x02, real.get(..real.len() / 2).unwrap_or_default()),
    );
    // Format 3 (engine/FORMAT.md §9) near misses, CRCs repaired (FIX_CRC), opened anyway (0x02):
    // a byte after the last task, a count in a longer-than-needed varint; and the same checkpoint
    // as version 2 (rkyv), which is still read.
    let header = checkpoint::HEADER_BYTES;
    let trailing = [&real[..], &[0]].concat();
    add(
        "checkpoint_file",
        "v3_trailing_byte",
        with_control(FIX_CRC | 0x02, &trailing),
    );
    if let Some(&count) = real.get(header)
        && count < 0x80
    {
        let long_count = [
            real.get(..header).unwrap_or_default(),
            &[count | 0x80, 0x00],
            real.get(header + 1..).unwrap_or_default(),
        ]
        .concat();
        add(
            "checkpoint_file",
            "v3_nonminimal_varint",
            with_control(FIX_CRC | 0x02, &long_count),
        );
    }
    let decoded =
        checkpoint::decode(&real).map_err(|e| anyhow!("decode the real checkpoint: {e}"))?;
    let checkpoint_v2 = engine("encode version 2", checkpoint::encode_version_2(&decoded))?;
    add(
        "checkpoint_file",
        "v2_real",
        with_control(0, &checkpoint_v2),
    );
    // Edits of the template's checkpoint (`CHECKPOINT_EDIT`), tasks sorted by id: 0 `task-3`
    // (batch (3, 1)), 1 `task-active` (batches (1, 1), (4, 2), (5, 5)), 2 `task-done` (batches
    // (2, 1), (6, 2)). Value bytes: `4 * n` is n, `4 * n + 2` is `VERSION_MAX - 32 + n`, `4 * n + 3`
    // is `u64::MAX - n`.
    let edits: &[(&str, &[u8])] = &[
        ("edit_none", &[]),
        // Regressions (the fuzz campaign of 2026-11-21): a task at version u64::MAX made the next
        // write overflow; one at VERSION_MAX past its last batch made a subscription repeat a
        // delivery forever; a task listed twice was listed twice; a batch of another task made
        // `get` return that task.
        ("task_version_overflow", &[0, 1, 0, 3, 1, 1, 2, 20, 3]),
        ("task_version_at_maximum", &[0, 1, 0, 130, 1, 1, 2, 20, 130]),
        ("task_listed_twice", &[7, 0, 0]),
        ("batch_of_another_task", &[1, 0, 0, 8, 4]),
        // One edit of each other kind.
        ("edit_push_pop_batch", &[2, 2, 0, 48, 12, 2, 2, 1]),
        ("edit_state_time", &[5, 1, 3, 4, 0, 0, 2]),
        (
            "edit_covered_rejected",
            &[6, 0, 0, 24, 6, 0, 1, 12, 7, 1, 1],
        ),
    ];
    for (name, edits) in edits {
        // 0x02: open the store even when the edited checkpoint is refused.
        add(
            "checkpoint_file",
            name,
            [&[CHECKPOINT_EDIT | 0x02][..], edits].concat(),
        );
    }

    // Operation sequences: appends that roll segments, reads, syncs, crashes, faults, reopen,
    // compactions (see `log_model_compact_seeds`).
    let ops: &[(&str, &[u8])] = &[
        (
            "append_read_reopen",
            &[0x01, 0, 2, 100, 0, 1, 7, 3, 0, 8, 0, 0, 5, 12, 7, 1, 0],
        ),
        (
            "roll_truncate_purge",
            &[
                0x00, 1, 3, 0x30, 0x5D, 2, 2, 3, 0x30, 0x5D, 2, 11, 9, 4, 0, 10, 3, 0, 12, 8, 0, 0,
                9,
            ],
        ),
        (
            "crash_cut_and_zeros",
            &[
                0x00, 0, 1, 200, 0, 1, 11, 0, 2, 50, 0, 1, 13, 2, 0x00, 0x80, 0x20, 0x00, 0, 0, 9,
                0, 1,
            ],
        ),
        (
            "crash_garble",
            &[
                0x02, 0, 0, 64, 0, 1, 11, 0, 0, 64, 0, 1, 14, 3, 7, 0, 0, 0, 7, 0, 0,
            ],
        ),
        (
            "failed_sync",
            &[
                0x01, 0, 0, 10, 0, 1, 15, 0x80, 0, 0, 20, 0, 1, 0, 0, 30, 0, 1, 7, 0, 0,
            ],
        ),
        (
            "failed_write_never",
            &[
                0x00, 0, 0, 10, 0, 1, 15, 0x01, 0, 1, 20, 0, 1, 0, 1, 30, 0, 1, 11, 12,
            ],
        ),
    ];
    for (name, bytes) in ops {
        add("log_model", name, bytes.to_vec());
    }
    for (name, bytes) in log_model_compact_seeds() {
        add("log_model", name, bytes);
    }
    Ok(seeds)
}

/// `segment_recover` seeds cut from a compacted log (engine/FORMAT.md §3.1, §4.1): an oversized
/// record alone in segment 1, small records 2..=13 (some with empty payloads), another oversized
/// record that seals them; a compaction up to position 13 merges segments 1 and 2 into one
/// compacted segment with gap frames; a truncation after 13 and three small appends leave a
/// small last segment 14..=16.
fn compacted_segment_seeds(add: &mut impl FnMut(&'static str, &str, Vec<u8>)) -> Result<()> {
    let dir = scratch_dir()?;
    let log_options = options(RecoveryMode::TolerateTail, SyncPolicy::Never, 64);
    let log = engine("open", Log::open(dir.path(), log_options.clone()))?;
    engine(
        "append",
        log.append(&[NewRecord::new(1, &[0x5A; 64 * 1024])]),
    )?;
    for i in 2..=13u8 {
        let payload = vec![i; usize::from(i % 4) * 7];
        engine("append", log.append(&[NewRecord::new(i, &payload)]))?;
    }
    engine(
        "append",
        log.append(&[NewRecord::new(1, &[0xA5; 64 * 1024])]),
    )?;
    // Dead: 1, 3..=5, 7, 12, 13 (runs at the start, inside, and at the end).
    let live = |p: u64| matches!(p, 2 | 6 | 8..=11);
    engine("compact", log.compact(14, &live))?;
    engine(
        "truncate_after",
        log.truncate_after(tasklog_engine::Position::new(13)),
    )?;
    for i in 14..=16u8 {
        engine("append", log.append(&[NewRecord::new(i, &[i; 20])]))?;
    }
    engine("close", log.close())?;
    let read = |name: String| fs::read(dir.path().join(&name)).context(name);
    let compacted = read(segment::file_name(1))?;
    let compacted_index = read(format!("{:020}.idx", 1))?;
    let last = read(segment::file_name(14))?;
    let len = |bytes: &[u8]| u16::try_from(bytes.len()).unwrap_or(u16::MAX).to_le_bytes();

    // The compacted segment, then the last one (names from their headers).
    let two = [&[0x01][..], &len(&compacted), &compacted, &last].concat();
    add("segment_recover", "compacted_then_last", two.clone());
    // The same with the compacted segment's own index file.
    add(
        "segment_recover",
        "compacted_then_last_with_index",
        [
            &[0x01 | 0x08 | 0x10][..],
            &len(&compacted),
            &len(&compacted_index),
            &compacted,
            &compacted_index,
            &last,
        ]
        .concat(),
    );
    // The compacted segment alone: last, as an interrupted truncation leaves it.
    add(
        "segment_recover",
        "compacted_last",
        with_control(0, &compacted),
    );
    // Headers rewritten from the frames as compacted ones (`0x80`), CRCs repaired: a mutated gap
    // frame reaches the frame checks.
    let body = compacted.get(segment::HEADER_BYTES..).unwrap_or_default();
    add(
        "segment_recover",
        "compacted_fix_headers",
        [
            &[0x80 | 0x04 | 0x02][..],
            &[0; segment::HEADER_BYTES][..],
            body,
        ]
        .concat(),
    );
    // A gap frame's count off by one behind a valid CRC: the frames disagree with the header.
    let mut miscounted = compacted.clone();
    if let Some(count) = miscounted.get_mut(segment::HEADER_BYTES + frame::HEADER_BYTES) {
        *count = count.wrapping_add(1);
    }
    add(
        "segment_recover",
        "compacted_gap_count_fix_crc",
        [&[0x01 | 0x04][..], &len(&miscounted), &miscounted, &last].concat(),
    );

    // Everything before 14 dead: one gap frame, no record.
    let log = engine("reopen", Log::open(dir.path(), log_options))?;
    engine("compact", log.compact(14, &|_| false))?;
    engine("close", log.close())?;
    let gap_only = read(segment::file_name(1))?;
    add(
        "segment_recover",
        "compacted_gap_only_then_last",
        [&[0x01][..], &len(&gap_only), &gap_only, &last].concat(),
    );
    Ok(())
}

/// `log_model` operation sequences with compactions (op 16: `u16` horizon pick, mask, modulus).
fn log_model_compact_seeds() -> Vec<(&'static str, Vec<u8>)> {
    /// Append `count` records of `len` bytes (op 0).
    fn append(ops: &mut Vec<u8>, count: u8, len: u16) {
        let [lo, hi] = len.to_le_bytes();
        ops.extend_from_slice(&[0, count - 1, lo, hi, 1]);
    }
    /// Compact with the horizon pick, mask and modulus byte given.
    fn compact(ops: &mut Vec<u8>, pick: u16, mask: u8, modulus: u8) {
        let [lo, hi] = pick.to_le_bytes();
        ops.extend_from_slice(&[16, lo, hi, mask, modulus]);
    }
    // Two sealed segments (1..=4; 5..=12), the active one from 13: odd positions dead. The
    // horizon pick 17 is past the end of the 16 records.
    let mut sealed = vec![0x00];
    append(&mut sealed, 4, 15_000);
    append(&mut sealed, 4, 15_000);
    append(&mut sealed, 4, 100);
    append(&mut sealed, 4, 15_000);
    let base = sealed.clone();
    compact(&mut sealed, 17, 0x55, 1);

    // Then reads, a range read over a gap, a refused truncation into the compacted segment, a
    // reopen, a second pass with everything dead, a crash, an allowed truncation and a purge.
    let mut reopen = sealed.clone();
    reopen.extend_from_slice(&[7, 0, 0, 7, 4, 0, 8, 0, 0, 9, 9, 2, 0, 12]);
    compact(&mut reopen, 17, 0x00, 0);
    reopen.extend_from_slice(&[13, 1, 0, 0x80, 0, 0, 9, 14, 0, 10, 5, 0, 12]);

    // Failures in a pass: the first write, the third sync (before the commit) and the fourth
    // (after it, which poisons the log).
    let mut failures = Vec::new();
    for (name, arg) in [
        ("compact_failed_write", 0x00),
        ("compact_failed_sync_before_commit", 0x82),
        ("compact_failed_sync_after_commit", 0x83),
    ] {
        let mut ops = base.clone();
        ops.extend_from_slice(&[15, arg]);
        compact(&mut ops, 17, 0x55, 1);
        ops.extend_from_slice(&[12]);
        failures.push((name, ops));
    }

    // A horizon inside the second sealed segment: only the first is reached. Then a second pass
    // that merges the small compacted output with the next segment.
    let mut partial = base.clone();
    compact(&mut partial, 7, 0x01, 2);
    append(&mut partial, 4, 15_000);
    compact(&mut partial, 21, 0xFE, 7);

    // A segment of isolated dead empty records between live large ones: its rewrite outgrows
    // segment_bytes_max by the gap frames (engine/FORMAT.md §3.1).
    let mut lone = vec![0x00];
    for _ in 0..4 {
        append(&mut lone, 1, 0);
        append(&mut lone, 1, 15_000);
    }
    for _ in 0..42 {
        append(&mut lone, 4, 0);
    }
    append(&mut lone, 1, 15_000);
    compact(&mut lone, 178, 0x55, 1);
    lone.push(12);

    let mut out = vec![
        ("compact_sealed", sealed),
        ("compact_reopen_truncate_crash", reopen),
        ("compact_partial_then_merge", partial),
        ("compact_lone_segment_grows", lone),
    ];
    out.extend(failures);
    out
}

/// Writes [`generate`]'s seeds into `root/<target>/<name>`.
///
/// # Errors
/// I/O errors.
pub fn write_all(root: &Path) -> Result<usize> {
    let seeds = generate()?;
    for (target, name, bytes) in &seeds {
        let dir = root.join(target);
        fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        fs::write(dir.join(name), bytes).with_context(|| format!("write seed {target}/{name}"))?;
    }
    Ok(seeds.len())
}
