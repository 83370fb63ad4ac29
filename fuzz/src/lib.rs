//! `tasklog-fuzz`: fuzz targets for every byte `tasklog-engine` reads from disk, as plain
//! functions over `&[u8]`.
//!
//! Each function feeds its input to one reader of the engine (engine/FORMAT.md names every
//! layout) and checks what the reader may promise: it never panics, what it accepts re-encodes to
//! the same bytes, what recovery accepts can be read, verified, appended to and reopened. A
//! function returns `Err` only for a broken promise of the engine (a bug); input the engine
//! rightly refuses is `Ok`. A panic inside the engine is a bug too; the functions themselves
//! never panic.
//!
//! The same functions run under libFuzzer (thin binaries in `fuzz_targets/`, feature
//! `libfuzzer`, driven by `cargo fuzz`) and on the stable toolchain in `tests/replay.rs`, which
//! replays `fuzz/seeds/<target>/` plus a bounded, seeded batch of random and mutated inputs.
//!
//! Input conventions: the first byte of every input is a control byte whose bits select options
//! (documented per function), chiefly "repair the CRCs", so that a mutation behind a CRC still
//! reaches the checks after it; the rest is the file (or frame, or payload) under test. Files go
//! to a fresh temporary directory per call, in `/dev/shm` when it exists (fsync is free there)
//! or in `TASKLOG_FUZZ_TMPDIR`.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use anyhow::{Context, Result, anyhow, bail, ensure};
use tasklog_engine::checkpoint::Checkpoint;
use tasklog_engine::event::{EventBatch, TASK_BATCH_KIND};
use tasklog_engine::index::{self, Entries, IndexEntry};
use tasklog_engine::limits::{PAYLOAD_BYTES_MAX, VERSION_MAX};
use tasklog_engine::model::{TaskState, Timestamp};
use tasklog_engine::subscribe::Next;
use tasklog_engine::{
    Error, ListQuery, Log, NewRecord, NewTask, Options, Position, RecoveryMode, SyncPolicy,
    TaskStore, checkpoint, frame, record, segment, write_wire,
};

mod input;
mod model;
pub mod seeds;

pub use input::Input;

/// A fuzz target: `Err` describes a broken promise of the engine.
pub type Target = fn(&[u8]) -> Result<()>;

/// Every target, by the name of its `fuzz_targets/` binary and its `seeds/` directory.
pub const TARGETS: &[(&str, Target)] = &[
    ("frame_decode", frame_decode),
    ("segment_header", segment_header),
    ("index_file", index_file),
    ("checkpoint_file", checkpoint_file),
    ("event_batch", event_batch),
    ("segment_recover", segment_recover),
    ("log_model", log_model),
    ("forwarded_write", forwarded_write),
];

/// Segment size for every log the targets open: the smallest the engine allows, so logs roll.
pub const SEGMENT_BYTES_MAX: u64 = 64 * 1024;

/// Control bit shared by the file targets: recompute the CRCs (and lengths) before reading.
pub const FIX_CRC: u8 = 0x01;

/// Whether the check for the known finding `name` is switched off: the environment variable
/// `TASKLOG_FUZZ_SKIP_KNOWN` lists names (comma-separated, or `all`), so that a campaign can run
/// past a reported, not yet fixed finding. Names: `frame-padding`, `index-reserved`,
/// `checkpoint-reserved`.
pub fn skip_known(name: &str) -> bool {
    static SKIP: OnceLock<Vec<String>> = OnceLock::new();
    SKIP.get_or_init(|| {
        std::env::var("TASKLOG_FUZZ_SKIP_KNOWN")
            .map(|v| v.split(',').map(|s| s.trim().to_string()).collect())
            .unwrap_or_default()
    })
    .iter()
    .any(|s| s == name || s == "all")
}

/// Prints what a target did when `TASKLOG_FUZZ_TRACE` is set (to check that seeds reach the deep
/// paths; never while fuzzing).
fn trace(what: std::fmt::Arguments<'_>) {
    static ON: OnceLock<bool> = OnceLock::new();
    if *ON.get_or_init(|| std::env::var_os("TASKLOG_FUZZ_TRACE").is_some()) {
        eprintln!("  {what}");
    }
}

fn all_zero(bytes: Option<&[u8]>) -> bool {
    bytes.is_some_and(|b| b.iter().all(|x| *x == 0))
}

/// Runs `target` on `data`, turning a panic into an `Err` carrying the panic message (for the
/// stable replay test; libFuzzer catches panics itself).
///
/// # Errors
/// The target's error or its panic.
pub fn run_catching(target: Target, data: &[u8]) -> Result<()> {
    match std::panic::catch_unwind(|| target(data)) {
        Ok(result) => result,
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic payload".into());
            bail!("panicked: {message}")
        }
    }
}

/// A fresh scratch directory, on tmpfs when there is one.
///
/// # Errors
/// When the directory cannot be created.
pub fn scratch_dir() -> Result<tempfile::TempDir> {
    let base = std::env::var_os("TASKLOG_FUZZ_TMPDIR")
        .map(PathBuf::from)
        .or_else(|| {
            let shm = Path::new("/dev/shm");
            shm.is_dir().then(|| shm.to_path_buf())
        })
        .unwrap_or_else(std::env::temp_dir);
    tempfile::Builder::new()
        .prefix("tasklog-fuzz-")
        .tempdir_in(&base)
        .with_context(|| format!("scratch directory in {}", base.display()))
}

/// Options of every log the targets open.
pub fn options(recovery: RecoveryMode, sync: SyncPolicy, index_interval_bytes: u32) -> Options {
    Options {
        sync,
        segment_bytes_max: SEGMENT_BYTES_MAX,
        index_interval_bytes,
        recovery,
    }
}

fn le_u32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn put(bytes: &mut [u8], at: usize, value: &[u8]) {
    if let Some(slot) = bytes.get_mut(at..at + value.len()) {
        slot.copy_from_slice(value);
    }
}

/// Rewrites the CRC of the frame at the start of `bytes` if its length field fits the slice;
/// returns the frame's length then.
pub fn fix_frame_crc(bytes: &mut [u8]) -> Option<usize> {
    let payload_len = le_u32(bytes, frame::LEN_OFFSET)?;
    if payload_len > PAYLOAD_BYTES_MAX {
        return None;
    }
    let total = frame::frame_len(payload_len as usize);
    let crc = crc(bytes.get(frame::LEN_OFFSET..total)?);
    put(bytes, frame::CRC_OFFSET, &crc.to_le_bytes());
    Some(total)
}

/// Rewrites the CRC of every whole frame of a segment, from its header to the first frame that
/// does not fit.
pub fn fix_segment_crcs(segment_bytes: &mut [u8]) {
    let mut at = segment::HEADER_BYTES;
    while let Some(len) = segment_bytes.get_mut(at..).and_then(fix_frame_crc) {
        at += len;
    }
}

fn crc(bytes: &[u8]) -> u32 {
    // The engine's CRC (engine/FORMAT.md §1): CRC-32/ISO-HDLC, bitwise, so this crate needs no
    // CRC dependency of its own. Inputs are small.
    let mut crc = !0u32;
    for byte in bytes {
        crc ^= u32::from(*byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Writes a valid header CRC into bytes 60..64 of a 64-byte header (segment, index or checkpoint).
fn fix_header_crc(bytes: &mut [u8]) {
    if let Some(head) = bytes.get(..60) {
        let crc = crc(head);
        put(bytes, 60, &crc.to_le_bytes());
    }
}

/// Target `frame_decode`: `frame::decode` on arbitrary bytes.
///
/// Control byte: [`FIX_CRC`] repairs the CRC of the frame its length field describes. Checks: a
/// decoded frame re-encodes to exactly its bytes, every proper prefix of it is `Incomplete`, it
/// passes `frame::plausible` for its own position; `Incomplete` asks for more bytes than given.
///
/// # Errors
/// A broken promise.
pub fn frame_decode(data: &[u8]) -> Result<()> {
    let mut input = Input::new(data);
    let control = input.u8();
    let mut bytes = input.rest().to_vec();
    if control & FIX_CRC != 0 {
        fix_frame_crc(&mut bytes);
    }
    match frame::decode(&bytes) {
        frame::Decoded::Frame(f) => {
            ensure!(
                f.len == frame::frame_len(f.payload.len()) && f.len <= bytes.len(),
                "frame length {} for payload {} in {} bytes",
                f.len,
                f.payload.len(),
                bytes.len()
            );
            ensure!(
                skip_known("frame-padding")
                    || all_zero(bytes.get(frame::HEADER_BYTES + f.payload.len()..f.len)),
                "frame::decode accepted a frame whose padding is not zero (engine/FORMAT.md §4: \
                 `pad` is zeros; §1: reserved bytes must read as zero)"
            );
            let mut encoded = Vec::new();
            frame::encode(&mut encoded, f.position, f.term, f.kind, f.payload);
            let mut decoded_bytes = bytes.get(..f.len).unwrap_or_default().to_vec();
            if skip_known("frame-padding") {
                // Compare all but the padding (and its share of the CRC).
                let payload_end = frame::HEADER_BYTES + f.payload.len();
                for (i, byte) in decoded_bytes.iter_mut().enumerate() {
                    if i < frame::LEN_OFFSET || i >= payload_end {
                        *byte = encoded.get(i).copied().unwrap_or_default();
                    }
                }
            }
            ensure!(
                decoded_bytes == encoded,
                "a decoded frame does not re-encode to its bytes"
            );
            if let Some(after) = f.position.checked_sub(1) {
                ensure!(
                    frame::plausible(&bytes, after, f.position),
                    "a valid frame is not plausible"
                );
            }
            for cut in [0, frame::HEADER_BYTES - 1, frame::HEADER_BYTES, f.len - 1] {
                if cut < f.len {
                    let short = bytes.get(..cut).unwrap_or_default();
                    ensure!(
                        matches!(frame::decode(short), frame::Decoded::Incomplete { needed } if needed > cut),
                        "a {cut}-byte prefix of a valid frame is not Incomplete"
                    );
                }
            }
        }
        frame::Decoded::Incomplete { needed } => {
            ensure!(
                needed > bytes.len(),
                "Incomplete asks for {needed} bytes but has {}",
                bytes.len()
            );
        }
        frame::Decoded::Corrupt(_) => {}
    }
    Ok(())
}

/// Target `segment_header`: `segment::decode_header` and `segment::parse_file_name`.
///
/// Control byte: [`FIX_CRC`] repairs the header CRC. Checks: an accepted header re-encodes to
/// the same 64 bytes and its file name parses back; bytes that parse as a segment or index
/// file name are exactly the name the engine would give that position.
///
/// # Errors
/// A broken promise.
pub fn segment_header(data: &[u8]) -> Result<()> {
    let mut input = Input::new(data);
    let control = input.u8();
    let mut bytes = input.rest().to_vec();
    if control & FIX_CRC != 0 {
        fix_header_crc(&mut bytes);
    }
    if let Ok(header) = segment::decode_header(&bytes) {
        let first_position = header.first_position;
        let encoded = match header.compacted {
            None => segment::encode_header(first_position),
            Some(c) => segment::encode_compacted_header(first_position, c.last_position, c.records),
        };
        ensure!(
            bytes.get(..segment::HEADER_BYTES) == Some(&encoded[..]),
            "an accepted header does not re-encode to its bytes"
        );
        let name = segment::file_name(first_position);
        ensure!(
            segment::parse_file_name(&name, segment::EXTENSION) == Some(first_position),
            "file name {name} does not parse back"
        );
    }
    if let Ok(name) = std::str::from_utf8(&bytes) {
        for extension in [segment::EXTENSION, index::EXTENSION] {
            if let Some(position) = segment::parse_file_name(name, extension) {
                ensure!(
                    format!("{position:020}.{extension}") == name,
                    "{name:?} parses as position {position}"
                );
            }
        }
    }
    Ok(())
}

/// Target `index_file`: `index::validate` and `index::MappedIndex::load` on one index file.
///
/// Control byte: [`FIX_CRC`] repairs both CRCs; `0x02` sets the entry count from the length;
/// `0x04` expects first position 1 instead of the one in the header. Checks: `validate` and
/// `MappedIndex::load` (of the same bytes in a file) agree; an accepted index re-encodes to
/// the same bytes.
///
/// # Errors
/// A broken promise.
pub fn index_file(data: &[u8]) -> Result<()> {
    let mut input = Input::new(data);
    let control = input.u8();
    let mut bytes = input.rest().to_vec();
    if control & 0x02 != 0 && bytes.len() >= index::HEADER_BYTES {
        let count = (bytes.len() - index::HEADER_BYTES) / index::ENTRY_BYTES;
        bytes.truncate(index::HEADER_BYTES + count * index::ENTRY_BYTES);
        put(
            &mut bytes,
            index::COUNT_OFFSET,
            &(count as u32).to_le_bytes(),
        );
    }
    if control & FIX_CRC != 0 && bytes.len() >= index::HEADER_BYTES {
        let entries_crc = crc(bytes.get(index::HEADER_BYTES..).unwrap_or_default());
        put(
            &mut bytes,
            index::ENTRIES_CRC_OFFSET,
            &entries_crc.to_le_bytes(),
        );
        fix_header_crc(&mut bytes);
    }
    let expected_first = match bytes.get(index::FIRST_POSITION_OFFSET..index::LAST_POSITION_OFFSET)
    {
        Some(field) if control & 0x04 == 0 => {
            u64::from_le_bytes(field.try_into().context("8 bytes")?)
        }
        _ => 1,
    };
    let validated = index::validate(&bytes, expected_first);
    if let Ok(summary) = &validated {
        ensure!(
            skip_known("index-reserved")
                || all_zero(bytes.get(index::ENTRIES_CRC_OFFSET + 4..index::HEADER_CRC_OFFSET)),
            "index::validate accepted nonzero reserved bytes 44..60 (engine/FORMAT.md §1, §5)"
        );
        let entries = index::EntryBytes(bytes.get(index::HEADER_BYTES..).unwrap_or_default());
        let entries: Vec<IndexEntry> = (0..entries.count()).map(|i| entries.entry(i)).collect();
        ensure!(
            summary.first_position == expected_first
                && summary.entry_count as usize == entries.len(),
            "summary {summary:?} for {} entries",
            entries.len()
        );
        let mut encoded = index::encode(summary, &entries);
        if skip_known("index-reserved") {
            // Compare all but the reserved bytes (and the header CRC over them).
            let (start, end) = (index::ENTRIES_CRC_OFFSET + 4, index::HEADER_BYTES);
            if let (Some(slot), Some(original)) =
                (encoded.get_mut(start..end), bytes.get(start..end))
            {
                slot.copy_from_slice(original);
            }
        }
        ensure!(
            encoded == bytes,
            "an accepted index does not re-encode to its bytes"
        );
    }
    let dir = scratch_dir()?;
    let path = dir.path().join(index_file_name(expected_first));
    fs::write(&path, &bytes).context("write index file")?;
    let file = fs::File::open(&path).context("open index file")?;
    match (MappedLoad::of(&file, expected_first), validated) {
        (MappedLoad::Valid(mapped), Ok(summary)) => {
            ensure!(
                mapped == summary,
                "mmap load {mapped:?} vs validate {summary:?}"
            )
        }
        (MappedLoad::Invalid(a), Err(b)) => ensure!(a == b, "mmap load {a:?} vs validate {b:?}"),
        (MappedLoad::Io(e), _) => {
            bail!(
                "MappedIndex::load of a {}-byte file failed with an I/O error ({e}); recovery would \
                 refuse to open the log instead of rebuilding the index",
                bytes.len()
            )
        }
        (a, b) => bail!("MappedIndex::load {a:?} disagrees with validate {b:?}"),
    }
    Ok(())
}

#[derive(Debug)]
enum MappedLoad {
    Valid(index::IndexSummary),
    Invalid(&'static str),
    Io(std::io::Error),
}

impl MappedLoad {
    fn of(file: &fs::File, expected_first: u64) -> Self {
        match index::MappedIndex::load(file, expected_first) {
            Ok(mapped) => {
                // Touch every entry through the mapping, as a reader would.
                let entries = mapped.entries();
                let mut sum = 0u64;
                for i in 0..entries.count() {
                    sum = sum.wrapping_add(u64::from(entries.entry(i).offset));
                }
                std::hint::black_box(sum);
                MappedLoad::Valid(mapped.summary())
            }
            Err(Ok(reason)) => MappedLoad::Invalid(reason),
            Err(Err(e)) => MappedLoad::Io(e),
        }
    }
}

/// A small task store (three tasks, one finished) whose files every `checkpoint_file` call
/// starts from: `(file name, bytes)`, built once per process.
fn store_template() -> Result<&'static [(String, Vec<u8>)]> {
    static TEMPLATE: OnceLock<Vec<(String, Vec<u8>)>> = OnceLock::new();
    if let Some(files) = TEMPLATE.get() {
        return Ok(files);
    }
    let dir = scratch_dir()?;
    seeds::write_store(dir.path())?;
    let mut files = Vec::new();
    for entry in fs::read_dir(dir.path()).context("list template")? {
        let entry = entry.context("list template")?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name != "LOCK" {
            files.push((name, fs::read(entry.path()).context("read template")?));
        }
    }
    files.sort();
    Ok(TEMPLATE.get_or_init(|| files))
}

fn store_options() -> Options {
    options(RecoveryMode::TolerateTail, SyncPolicy::Never, 256)
}

/// Every task of a store, page by page (bounded), then each one by id.
fn walk_store(store: &TaskStore) -> Result<usize, Error> {
    let mut query = ListQuery {
        page_size: Some(2),
        include_artifacts: true,
        ..ListQuery::default()
    };
    let mut listed = 0;
    for _ in 0..1000 {
        let page = store.list(&query)?;
        listed += page.tasks.len();
        for task in &page.tasks {
            store.get(&task.id, Some(1))?;
        }
        if page.next_page_token.is_empty() {
            return Ok(listed);
        }
        query.page_token = Some(page.next_page_token);
    }
    Ok(listed)
}

/// Control bit of `checkpoint_file`: the rest of the input is not the file but edits to the
/// template store's own checkpoint (see [`edit_checkpoint`]), encoded with valid CRCs.
pub const CHECKPOINT_EDIT: u8 = 0x04;

/// Target `checkpoint_file`: `checkpoint::decode`, then a task store opened with the bytes as
/// its `tasks.checkpoint`.
///
/// Control byte: [`FIX_CRC`] repairs the payload length, the payload CRC and the header CRC;
/// `0x02` opens the store even when `decode` refuses the bytes; [`CHECKPOINT_EDIT`] builds the
/// file from edits (so that mutations reach checkpoints that pass every check of the decoder but
/// do not match the log). Checks: an accepted checkpoint survives encode and decode unchanged;
/// the store opens (a refused checkpoint is ignored and the log replayed, so then it must hold
/// exactly the template's tasks); whatever the checkpoint says, the store keeps the promises of
/// its API (see [`check_store_answers`]); writing, checkpointing and reopening do not panic, and
/// the reopen succeeds.
///
/// # Errors
/// A broken promise.
pub fn checkpoint_file(data: &[u8]) -> Result<()> {
    let mut input = Input::new(data);
    let control = input.u8();
    let template = store_template()?;
    let mut bytes = if control & CHECKPOINT_EDIT != 0 {
        let (_, original) = template
            .iter()
            .find(|(name, _)| name == checkpoint::FILE_NAME)
            .context("the template has a checkpoint")?;
        let mut saved =
            checkpoint::decode(original).map_err(|e| anyhow!("template checkpoint: {e}"))?;
        // The store writes tasks in rank order (status time, then id), which moves with the
        // clock; edits name tasks by index, so sort them by id.
        saved.tasks.sort_by(|a, b| a.id.cmp(&b.id));
        edit_checkpoint(&mut saved, &mut input);
        checkpoint::encode(&saved).context("encode the edited checkpoint")?
    } else {
        input.rest().to_vec()
    };
    if control & FIX_CRC != 0 && bytes.len() >= checkpoint::HEADER_BYTES {
        let payload = bytes.get(checkpoint::HEADER_BYTES..).unwrap_or_default();
        let (len, payload_crc) = (payload.len() as u64, crc(payload));
        put(&mut bytes, 24, &len.to_le_bytes());
        put(&mut bytes, 32, &payload_crc.to_le_bytes());
        fix_header_crc(&mut bytes);
    }
    let decoded = checkpoint::decode(&bytes);
    if let Ok(saved) = &decoded {
        ensure!(
            skip_known("checkpoint-reserved")
                || (all_zero(bytes.get(12..16)) && all_zero(bytes.get(36..60))),
            "checkpoint::decode accepted nonzero reserved bytes 12..16 or 36..60 (engine/FORMAT.md \
             §1, §9)"
        );
        let again = checkpoint::encode(saved).context("encode an accepted checkpoint")?;
        ensure!(
            checkpoint::decode(&again).as_ref() == Ok(saved),
            "an accepted checkpoint changes through encode and decode"
        );
    }
    if decoded.is_err() && control & 0x02 == 0 {
        return Ok(());
    }
    let dir = scratch_dir()?;
    for (name, file) in template {
        fs::write(dir.path().join(name), file).context("copy template")?;
    }
    fs::write(dir.path().join(checkpoint::FILE_NAME), &bytes).context("write checkpoint")?;
    let store = TaskStore::open(dir.path(), store_options())
        .map_err(|e| anyhow::anyhow!("the store does not open with a bad checkpoint: {e}"))?;
    let used = store.open_report().checkpoint_position.is_some();
    trace(format_args!(
        "checkpoint_file: decode {:?}, store used it: {used}",
        decoded.as_ref().map(|c| c.tasks.len())
    ));
    let walked = walk_store(&store);
    if !used {
        ensure!(
            matches!(walked, Ok(n) if n == seeds::STORE_TASKS) && store.len() == seeds::STORE_TASKS,
            "an ignored checkpoint left {walked:?} tasks listed, {} in the table",
            store.len()
        );
    }
    let mut ids: Vec<String> = seeds::STORE_TASK_IDS
        .iter()
        .map(|id| id.to_string())
        .collect();
    if let Ok(saved) = &decoded {
        ids.extend(saved.tasks.iter().map(|task| task.id.clone()));
    }
    let store = Arc::new(store);
    check_store_answers(&store, &ids)?;
    let store = Arc::try_unwrap(store).map_err(|_| anyhow!("a subscription outlived its check"))?;
    // Writes may be refused (the checkpoint may name tasks the log does not hold); they must not
    // panic, and whatever the store writes must open again.
    let _ = store.create(NewTask {
        task_id: Some("fuzz-new".into()),
        ..NewTask::submitted(None)
    });
    let _ = store.cancel(seeds::STORE_ACTIVE_TASK);
    let _ = store.checkpoint();
    store
        .close()
        .map_err(|e| anyhow::anyhow!("close after a bad checkpoint: {e}"))?;
    let store = TaskStore::open(dir.path(), store_options())
        .map_err(|e| anyhow::anyhow!("reopen after a bad checkpoint: {e}"))?;
    let _ = walk_store(&store);
    store.close().map_err(|e| anyhow::anyhow!("close: {e}"))?;
    Ok(())
}

/// What a task store must answer whatever its files say (its reads may fail with an error):
/// a listing names each task once and counts [`TaskStore::len`] tasks; `get(id)` returns the
/// task `id`; a subscription's every delivery carries events and advances its version, so that
/// following a task ends instead of repeating a delivery forever.
///
/// # Errors
/// A broken promise.
pub fn check_store_answers(store: &Arc<TaskStore>, ids: &[String]) -> Result<()> {
    let mut query = ListQuery {
        page_size: Some(2),
        ..ListQuery::default()
    };
    let mut listed = HashSet::new();
    for _ in 0..1000 {
        let Ok(page) = store.list(&query) else { break };
        ensure!(
            page.total_size == store.len() as u64,
            "list counts {} tasks, the store holds {}",
            page.total_size,
            store.len()
        );
        for task in &page.tasks {
            ensure!(
                listed.insert(task.id.clone()),
                "list names {:?} twice",
                task.id
            );
        }
        if page.next_page_token.is_empty() {
            break;
        }
        query.page_token = Some(page.next_page_token);
    }
    for id in ids {
        if let Ok(task) = store.get(id, None) {
            ensure!(task.id == *id, "get({id:?}) returned task {:?}", task.id);
        }
        let Ok(mut subscription) = store.subscribe(id, 1) else {
            continue;
        };
        for _ in 0..64 {
            let before = subscription.next_version();
            match subscription.try_next() {
                Ok(Next::Delivery(delivery)) => ensure!(
                    !delivery.events.is_empty() && subscription.next_version() > before,
                    "a subscription to {id:?} delivered {} events at version {} and moved from \
                     version {before} to {}",
                    delivery.events.len(),
                    delivery.first_version,
                    subscription.next_version()
                ),
                Ok(_) | Err(_) => break,
            }
        }
    }
    Ok(())
}

/// A value for an edited checkpoint field: small, arbitrary, or near [`VERSION_MAX`] or
/// `u64::MAX`, chosen by one byte.
fn edit_value(input: &mut Input<'_>) -> u64 {
    let selector = input.u8();
    let small = u64::from(selector >> 2);
    match selector & 0x03 {
        0 => small,
        1 => u64::from_le_bytes(std::array::from_fn(|_| input.u8())),
        2 => (VERSION_MAX - 32).wrapping_add(small),
        _ => u64::MAX - small,
    }
}

const TASK_STATES: [TaskState; 9] = [
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

/// Applies up to 16 edits to a checkpoint: per edit, three bytes `op % 8`, `pick`, `arg`, then
/// values (see `edit_value`). `pick` modulo the task count names a task, `arg` a batch, another
/// task, a state or a variant: 0 the task's version; 1 one of its batches' position and last
/// version; 2 push a batch (even `arg`) or pop one; 3 give the task another task's id; 4 its
/// status time; 5 its state; 6 the covered position (even `arg`) or push a rejected position;
/// 7 copy the task to the end (even `arg`) or remove it.
pub fn edit_checkpoint(saved: &mut Checkpoint, input: &mut Input<'_>) {
    for _ in 0..16 {
        if input.is_empty() {
            break;
        }
        let op = input.u8();
        let count = saved.tasks.len().max(1);
        let pick = usize::from(input.u8()) % count;
        let arg = input.u8();
        if op % 8 == 6 && arg & 1 == 0 {
            saved.covered_position = edit_value(input);
            continue;
        }
        if op % 8 == 6 {
            saved.rejected.push(edit_value(input));
            continue;
        }
        if op % 8 == 7 && arg & 1 == 0 {
            if let Some(task) = saved.tasks.get(pick).cloned() {
                saved.tasks.push(task);
            }
            continue;
        }
        if op % 8 == 7 {
            if pick < saved.tasks.len() {
                saved.tasks.remove(pick);
            }
            continue;
        }
        let other_id = saved
            .tasks
            .get(usize::from(arg) % count)
            .map(|task| task.id.clone());
        let Some(task) = saved.tasks.get_mut(pick) else {
            continue;
        };
        match op % 8 {
            0 => task.version = edit_value(input),
            1 => {
                let at = usize::from(arg) % task.batches.len().max(1);
                let edited = (edit_value(input), edit_value(input));
                if let Some(batch) = task.batches.get_mut(at) {
                    *batch = edited;
                }
            }
            2 if arg & 1 == 0 => {
                let edited = (edit_value(input), edit_value(input));
                task.batches.push(edited);
            }
            2 => {
                task.batches.pop();
            }
            3 => task.id = other_id.unwrap_or_default(),
            4 => task.status_timestamp = Timestamp(edit_value(input) as i64),
            _ => task.state = TASK_STATES[usize::from(arg) % TASK_STATES.len()],
        }
    }
}

/// Target `event_batch`: an arbitrary payload appended to a real log as one record after a
/// real task creation, read back and decoded with `record::access` / `record::decode` as
/// `EventBatch`, then (optionally) replayed by a task store.
///
/// Control byte: `0x01` writes the record with kind `0xD0` instead of the task batch kind;
/// `0x02` opens a task store on the log; `0x04` moves the record into a sealed, memory-mapped
/// segment before reading it. Checks: the payload reads back byte-exact; `access` and `decode`
/// agree; an accepted batch survives serialize and decode unchanged; the store refuses to open
/// only for a task record that is not an `EventBatch`; listing and getting succeed, and the
/// store keeps the promises of [`check_store_answers`].
///
/// # Errors
/// A broken promise.
pub fn event_batch(data: &[u8]) -> Result<()> {
    let mut input = Input::new(data);
    let control = input.u8();
    let payload = input.rest();
    let kind = if control & 0x01 == 0 {
        TASK_BATCH_KIND
    } else {
        0xD0
    };
    let dir = scratch_dir()?;
    let log = Log::open(dir.path(), store_options()).context("open log")?;
    let created = record::to_payload(&seeds::created_batch(seeds::STORE_ACTIVE_TASK, 0))
        .context("serialize")?;
    log.append(&[NewRecord::new(TASK_BATCH_KIND, &created)])
        .context("append the creation")?;
    let position = log
        .append(&[NewRecord::new(kind, payload)])
        .context("append the fuzz record")?
        .first;
    if control & 0x04 != 0 {
        let filler = vec![0u8; 16 * 1024];
        while log.segment_count() < 2 {
            log.append(&[NewRecord::new(0xD0, &filler)])
                .context("append filler")?;
        }
    }
    let entry = log.read(position).context("read the fuzz record back")?;
    ensure!(
        entry.payload() == payload && entry.kind() == kind,
        "record read back differs"
    );
    let accessed = record::access::<EventBatch>(&entry).is_ok();
    trace(format_args!(
        "event_batch: access ok {accessed}, kind {kind}"
    ));
    let decoded = record::decode::<EventBatch>(&entry);
    ensure!(
        accessed == decoded.is_ok(),
        "access {accessed} but decode {:?}",
        decoded.as_ref().map(drop)
    );
    if let Ok(batch) = &decoded {
        let again = record::to_payload(batch).context("serialize an accepted batch")?;
        let at = log
            .append(&[NewRecord::new(0xD0, &again)])
            .context("append")?
            .first;
        let entry = log.read(at).context("read back")?;
        ensure!(
            record::decode::<EventBatch>(&entry).ok().as_ref() == Some(batch),
            "an accepted batch changes through serialize and decode"
        );
    }
    log.close().context("close log")?;
    if control & 0x02 == 0 {
        return Ok(());
    }
    let store = TaskStore::open(dir.path(), store_options());
    trace(format_args!(
        "event_batch: store open {:?}",
        store.as_ref().map(|s| s.len())
    ));
    match store {
        Ok(store) => {
            // Folding a batch that passed the store's checks must work: get and list succeed.
            let walked = walk_store(&store);
            ensure!(walked.is_ok(), "listing after replay failed: {walked:?}");
            let mut ids = vec![seeds::STORE_ACTIVE_TASK.to_string()];
            ids.extend(decoded.as_ref().ok().map(|batch| batch.task_id.clone()));
            let store = Arc::new(store);
            check_store_answers(&store, &ids)?;
            let store =
                Arc::try_unwrap(store).map_err(|_| anyhow!("a subscription outlived its check"))?;
            store.close().map_err(|e| anyhow::anyhow!("close: {e}"))?;
        }
        Err(Error::InvalidPayload { .. }) if kind == TASK_BATCH_KIND && decoded.is_err() => {}
        Err(e) => bail!("the store does not open: {e}"),
    }
    Ok(())
}

/// What one recovery mode made of the files.
#[derive(Debug, PartialEq, Eq)]
struct Opened {
    bounds: (u64, u64),
    truncated: bool,
}

/// Target `segment_recover`: `Log::open` (recovery) of a directory holding one or two segment
/// files (and optionally one index file) cut from the input, in each [`RecoveryMode`].
///
/// Layout: control byte, then `u16` length of the first segment if `0x01`, then `u16` length of
/// the index file if `0x08`, then the first segment, the index file, and the last segment (the
/// rest). Control: `0x01` two segments; `0x02` write valid segment headers (for the positions
/// the frames before them imply); `0x04` repair frame and index CRCs; `0x08` add an index file;
/// `0x10` give it to the first (sealed) segment instead of the last; bits 5..6 the index
/// interval (64, 256, 4096 bytes); `0x80` with `0x02`: write compacted (version 2) headers
/// instead, with the last position and record count the frames imply (engine/FORMAT.md §3.1),
/// so that mutated gap frames (§4.1) reach the checks behind the header.
///
/// Checks, in every mode: no panic; `Absolute` modifies no segment file, even on error;
/// `TolerateTail` modifies none on error; `Absolute` accepting implies `TolerateTail` accepts
/// the same positions without a cut, `TolerateTail` accepting implies `TolerateAny` accepts the
/// same positions; `TolerateTail` cuts only torn tails. Without a fuzzed index file (which the
/// engine trusts without a scan, by design), a log recovery accepts must read at every position
/// in its bounds (or report it `Compacted`, only inside a compacted segment), return exactly the
/// readable records from a range read, pass `Log::verify` counting them, take an append, close,
/// and reopen unchanged.
///
/// # Errors
/// A broken promise.
pub fn segment_recover(data: &[u8]) -> Result<()> {
    let mut input = Input::new(data);
    let control = input.u8();
    let split = control & 0x01 != 0;
    let fix_headers = control & 0x02 != 0;
    let fix_crcs = control & 0x04 != 0;
    let with_index = control & 0x08 != 0;
    let index_on_first = control & 0x10 != 0;
    let interval = [64, 256, 4096, 64][usize::from((control >> 5) & 0x03)];
    let compacted_headers = control & 0x80 != 0;
    let first_len = if split { usize::from(input.u16()) } else { 0 };
    let index_len = if with_index {
        usize::from(input.u16())
    } else {
        0
    };
    let mut segments = Vec::new();
    if split {
        segments.push(input.take(first_len).to_vec());
    }
    let mut index_bytes = input.take(index_len).to_vec();
    segments.push(input.rest().to_vec());

    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    let mut next_first = 1u64;
    let mut firsts = Vec::new();
    for bytes in &mut segments {
        let mut first = next_first;
        if !fix_headers
            && let Ok(named) = segment::decode_header(bytes)
            && firsts
                .last()
                .is_none_or(|previous| named.first_position > *previous)
        {
            first = named.first_position;
        }
        if fix_crcs {
            fix_segment_crcs(bytes);
        }
        if fix_headers {
            let body = bytes.get(segment::HEADER_BYTES..).unwrap_or_default();
            let (covered, records) = frames_covered(body, first, frame::decode_compacted);
            let header = if compacted_headers && covered > 0 {
                segment::encode_compacted_header(first, first + covered - 1, records)
            } else {
                segment::encode_header(first)
            };
            *bytes = [&header[..], body].concat();
        }
        next_first = first + frames_in_sequence(bytes, first);
        firsts.push(first);
        files.push((segment::file_name(first), bytes.clone()));
    }
    if with_index {
        let owner = if index_on_first {
            firsts.first()
        } else {
            firsts.last()
        };
        let owner = owner.copied().unwrap_or(1);
        if fix_crcs && index_bytes.len() >= index::HEADER_BYTES {
            put(
                &mut index_bytes,
                index::FIRST_POSITION_OFFSET,
                &owner.to_le_bytes(),
            );
            let entries_crc = crc(index_bytes.get(index::HEADER_BYTES..).unwrap_or_default());
            put(
                &mut index_bytes,
                index::ENTRIES_CRC_OFFSET,
                &entries_crc.to_le_bytes(),
            );
            fix_header_crc(&mut index_bytes);
        }
        files.push((index_file_name(owner), index_bytes));
    }
    let strict = !with_index;

    let mut results = Vec::new();
    for mode in [
        RecoveryMode::Absolute,
        RecoveryMode::TolerateTail,
        RecoveryMode::TolerateAny,
    ] {
        results.push(
            recover_once(&files, mode, interval, strict).with_context(|| {
                format!(
                    "{mode:?}, files {:?}",
                    files.iter().map(|f| &f.0).collect::<Vec<_>>()
                )
            })?,
        );
    }
    if let [absolute, tail, any] = &results[..] {
        if let Some(absolute) = absolute {
            ensure!(!absolute.truncated, "Absolute cut the log");
            ensure!(
                tail.as_ref() == Some(absolute),
                "Absolute accepted {absolute:?}, TolerateTail gave {tail:?}"
            );
        }
        if let Some(tail) = tail {
            ensure!(
                any.as_ref().map(|a| a.bounds) == Some(tail.bounds),
                "TolerateTail accepted {tail:?}, TolerateAny gave {any:?}"
            );
        }
    }
    Ok(())
}

/// Number of positions that the frames at the start of a segment's body cover, with dense
/// positions from `first` (gap frames count their run when the header is a compacted one).
fn frames_in_sequence(segment_bytes: &[u8], first: u64) -> u64 {
    let decode = match segment::decode_header(segment_bytes) {
        Ok(header) if header.compacted.is_some() => frame::decode_compacted,
        _ => frame::decode,
    };
    let body = segment_bytes
        .get(segment::HEADER_BYTES..)
        .unwrap_or_default();
    frames_covered(body, first, decode).0
}

/// Positions covered and records held by the frames at the start of `body` that `decode`
/// accepts with dense positions from `first`.
fn frames_covered(body: &[u8], first: u64, decode: fn(&[u8]) -> frame::Decoded<'_>) -> (u64, u64) {
    let mut at = 0;
    let (mut covered, mut records) = (0u64, 0u64);
    while let Some(frame::Decoded::Frame(f)) = body.get(at..).map(decode) {
        if Some(f.position) != first.checked_add(covered)
            || f.position.checked_add(f.covers()).is_none()
        {
            break;
        }
        covered += f.covers();
        records += u64::from(!f.is_gap());
        at += f.len;
    }
    (covered, records)
}

fn segment_files(dir: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).context("list")? {
        let entry = entry.context("list")?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".seg") {
            out.push((name, fs::read(entry.path()).context("read segment")?));
        }
    }
    out.sort();
    Ok(out)
}

/// Opens a fresh copy of `files` in `mode` and checks what recovery promises; `None` if the
/// open failed (allowed), `Err` for a broken promise.
fn recover_once(
    files: &[(String, Vec<u8>)],
    mode: RecoveryMode,
    interval: u32,
    strict: bool,
) -> Result<Option<Opened>> {
    let dir = scratch_dir()?;
    for (name, bytes) in files {
        fs::write(dir.path().join(name), bytes).context("write input file")?;
    }
    let before = segment_files(dir.path())?;
    let options = options(mode, SyncPolicy::Never, interval);
    let opened = Log::open(dir.path(), options.clone());
    let unchanged = segment_files(dir.path())? == before;
    trace(format_args!(
        "segment_recover {mode:?}: {:?}",
        opened
            .as_ref()
            .map(|l| (l.bounds(), l.recovery_report().truncations.len()))
    ));
    let log = match opened {
        Ok(log) => log,
        Err(Error::Io { op, path, source }) => {
            bail!("recovery failed with an I/O error on input files: {op} {path:?}: {source}")
        }
        Err(_) => {
            ensure!(
                mode == RecoveryMode::TolerateAny || unchanged,
                "{mode:?} refused the log but modified a segment file"
            );
            return Ok(None);
        }
    };
    ensure!(
        mode != RecoveryMode::Absolute || unchanged,
        "Absolute modified a segment file"
    );
    let report = log.recovery_report().clone();
    ensure!(
        mode != RecoveryMode::TolerateTail || report.truncations.iter().all(|t| t.torn_tail),
        "TolerateTail cut corruption: {report:?}"
    );
    let (first, last) = (log.bounds().0.get(), log.bounds().1.get());
    let opened = Opened {
        bounds: (first, last),
        truncated: !report.truncations.is_empty(),
    };
    ensure!(
        first >= 1 && last + 1 >= first && last + 1 - first < 1 << 20,
        "bounds {first}..={last}"
    );
    ensure!(
        log.read(Position::new(last + 1)).is_err(),
        "a read after the last position succeeded"
    );
    let segments = log.segments();
    let in_compacted = |position: u64| {
        segments
            .iter()
            .any(|s| s.compacted && s.first_position <= position && position <= s.last_position)
    };
    let mut readable = true;
    let mut held = Vec::new();
    for position in first..=last {
        match log.read(Position::new(position)) {
            Ok(entry) => {
                ensure!(
                    entry.position().get() == position,
                    "read {position} returned {}",
                    entry.position()
                );
                held.push(position);
            }
            Err(Error::Compacted { position: p }) if p == position && in_compacted(position) => {}
            Err(e) if strict => bail!("position {position} in bounds {first}..={last}: {e}"),
            Err(_) => readable = false,
        }
    }
    if last >= first {
        match log.read_range(Position::new(first), usize::MAX, usize::MAX) {
            Ok(entries) => {
                let got: Vec<u64> = entries.iter().map(|e| e.position().get()).collect();
                ensure!(
                    got == held || !readable,
                    "read_range returned positions {got:?}, single reads {held:?}"
                );
            }
            Err(e) if strict => bail!("read_range: {e}"),
            Err(_) => {}
        }
    }
    let verified = log.verify(&mut |_, _| {});
    match &verified {
        Ok(report) => ensure!(
            report.records == held.len() as u64 || !readable,
            "verify counted {} records, single reads {}",
            report.records,
            held.len()
        ),
        Err(e) if strict => bail!("verify after a successful recovery: {e}"),
        Err(_) => {}
    }
    let appended = log.append(&[NewRecord::new(9, b"fuzz")]);
    match &appended {
        Ok(a) => ensure!(a.first.get() == last + 1, "append got {}", a.first),
        Err(e) if strict => bail!("append after recovery: {e}"),
        Err(_) => {}
    }
    match log.close() {
        Ok(()) => {}
        Err(e) if strict => bail!("close after recovery: {e}"),
        Err(_) => return Ok(Some(opened)),
    }
    match Log::open(dir.path(), options) {
        Ok(log) => {
            // Whatever the input, an append acknowledged before a clean close must survive it.
            if appended.is_ok() {
                let entry = log.read(Position::new(last + 1));
                ensure!(
                    entry.as_ref().is_ok_and(|e| e.payload() == b"fuzz"),
                    "an acknowledged append did not survive a clean close and reopen: bounds {:?}, \
                     read {:?}, report {:?}",
                    log.bounds(),
                    entry.map(drop),
                    log.recovery_report()
                );
            }
            if strict {
                ensure!(
                    log.bounds() == (Position::new(first), Position::new(last + 1)),
                    "reopen after append: bounds {:?}, expected {first}..={}",
                    log.bounds(),
                    last + 1
                );
                ensure!(
                    log.recovery_report().truncations.is_empty(),
                    "reopen after a clean close cut the log"
                );
                let entry = log
                    .read(Position::new(last + 1))
                    .map_err(|e| anyhow::anyhow!("read the appended record: {e}"))?;
                ensure!(entry.payload() == b"fuzz", "appended record changed");
            }
            let _ = log.close();
        }
        Err(e) if strict || appended.is_ok() => bail!("reopen after a clean close: {e}"),
        Err(_) => {}
    }
    Ok(Some(opened))
}

/// Target `log_model`: the input as a sequence of log operations, run against the log and a
/// `Vec` model (as tests/engine/model.rs, driven by bytes instead of proptest).
///
/// Byte 0: bit 0 `SyncPolicy::Always` (else `Never`), bits 1..2 the index interval. Then per
/// operation one byte `op % 17` and its arguments: 0..=6 append, 7 read, 8 read range,
/// 9 truncate, 10 purge, 11 sync, 12 reopen, 13..=14 crash with damage to unsynced bytes,
/// 15 arm a write or sync failure, 16 compact (`u16` horizon pick, then a mask byte and a
/// modulus byte: position `p` is live when bit `p % (1 + modulus % 8)` of the mask is set). At
/// most [`LOG_MODEL_OPS_MAX`] operations.
///
/// Checks: every read returns what the model holds, and a record compaction removed reads as
/// `Error::Compacted` and is skipped by range reads; bounds follow the model; compaction removes
/// exactly the dead records of the sealed segments before its horizon, and the segments agree
/// with the model (a compacted one is sealed, within `segment_bytes_max`, and holds the records
/// the model has); a truncation into a compacted segment is refused; after a crash (or a failed
/// write, sync or compaction, which is followed by one) every synced record is kept, nothing
/// else appears, positions stay dense, and a failed compaction removed a prefix of its dead
/// records; `Log::verify` passes at the end and counts the records the model holds.
///
/// # Errors
/// A broken promise.
pub fn log_model(data: &[u8]) -> Result<()> {
    model::run(data)
}

/// Most operations one `log_model` input runs.
pub const LOG_MODEL_OPS_MAX: usize = 64;

/// `{first:020}.idx`: the index file name of the segment starting at `first`.
fn index_file_name(first: u64) -> String {
    format!("{first:020}.{}", index::EXTENSION)
}

/// A write as a follower forwards it to the leader (`write_wire`: network bytes from a peer):
/// decoding never panics and refuses with [`Error::InvalidArgument`] only; a write that decodes
/// encodes back to bytes that decode to the same write; and the leader's check of it
/// ([`TaskStore::prepare`], on a store holding the seed tasks) answers with a prepared batch or a
/// typed refusal, never a panic.
///
/// # Errors
/// A broken promise.
pub fn forwarded_write(data: &[u8]) -> Result<()> {
    static STORE: OnceLock<Option<(tempfile::TempDir, TaskStore)>> = OnceLock::new();
    let write = match write_wire::decode_write(data) {
        Ok(write) => write,
        Err(Error::InvalidArgument(_)) => return Ok(()),
        Err(other) => bail!("a bad forwarded write gave {other:?}, not InvalidArgument"),
    };
    let again = write_wire::encode_write(&write).context("re-encode")?;
    let back = write_wire::decode_write(&again).context("decode the re-encoded write")?;
    ensure!(
        back == write,
        "a forwarded write changed through encode and decode"
    );
    let store = STORE.get_or_init(|| {
        let dir = scratch_dir().ok()?;
        seeds::write_store(dir.path()).ok()?;
        let store = TaskStore::open(dir.path(), store_options()).ok()?;
        Some((dir, store))
    });
    let (_, store) = store.as_ref().context("open the seed store")?;
    match store.prepare(write) {
        Ok(prepared) => {
            let batch: EventBatch = record::decode_bytes(0, &prepared.payload)
                .context("a prepared batch that does not decode")?;
            ensure!(
                batch.task_id == prepared.task_id && batch.last_version() == prepared.version,
                "prepared {} v{} but encoded {} v{}",
                prepared.task_id,
                prepared.version,
                batch.task_id,
                batch.last_version()
            );
            Ok(())
        }
        Err(error) if error.kind() == tasklog_engine::ErrorKind::Rejected => Ok(()),
        Err(error) => bail!("prepare gave a non-rejection error: {error:?}"),
    }
}
