//! The `log_model` target: bytes decoded into log operations, run against the log and a `Vec`
//! model. It owns the operation encoding and the model; it checks, it never panics.
//!
//! Invariant of the model: `records[i]` is the record at position `first + i`, and every position
//! up to `durable` survives a crash. After a failed write or sync the records of that call stay in
//! the model but not under `durable`: a crash may keep any prefix of them. A record compaction
//! removed stays in the model, marked `removed`: its position still counts (positions stay
//! dense), a read of it is `Error::Compacted`, a range read skips it. After a failed compaction
//! the records it would have removed are either removed or whole, the removed ones a prefix of
//! them (outputs are committed front to back, engine/src/compact.rs).

use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail, ensure};
use tasklog_engine::segment;
use tasklog_engine::{
    Error, Log, NewRecord, Options, Position, RecoveryMode, SegmentInfo, SyncPolicy, frame,
};

use crate::{Input, LOG_MODEL_OPS_MAX, SEGMENT_BYTES_MAX, options, scratch_dir, trace};

/// Bytes one input may append in total, so that a call stays fast.
const APPENDED_BYTES_MAX: usize = 1024 * 1024;

struct Record {
    kind: u8,
    bytes: Vec<u8>,
    /// Compaction removed it.
    removed: bool,
}

struct Model {
    first: u64,
    records: Vec<Record>,
    durable: u64,
    seq: u64,
}

impl Model {
    fn last(&self) -> u64 {
        self.first + self.records.len() as u64 - 1
    }

    fn record(&self, position: u64) -> Option<&Record> {
        self.records
            .get(usize::try_from(position.checked_sub(self.first)?).ok()?)
    }

    fn record_mut(&mut self, position: u64) -> Option<&mut Record> {
        self.records
            .get_mut(usize::try_from(position.checked_sub(self.first)?).ok()?)
    }

    /// Whether `position` holds a record a read must return.
    fn held(&self, position: u64) -> bool {
        self.record(position).is_some_and(|r| !r.removed)
    }

    /// The first `count` positions from `from` on that hold a record.
    fn held_from(&self, from: u64, count: usize) -> Vec<u64> {
        (from..=self.last())
            .filter(|p| self.held(*p))
            .take(count)
            .collect()
    }
}

/// The live predicate of a `Compact` operation: a position is live when bit `position % modulus`
/// of `mask` is set (`mask` 0: every record dead; `0xFF`: none).
fn live_of(mask: u8, modulus: u64) -> impl Fn(u64) -> bool {
    move |position| mask & (1 << (position % modulus.clamp(1, 8))) != 0
}

/// A payload naming its sequence number, then a pattern, so a reader can tell it is whole.
fn payload(seq: u64, len: usize) -> Vec<u8> {
    let mut out = seq.to_le_bytes().to_vec();
    let mut x = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.push(x as u8);
    }
    out.truncate(len);
    out
}

fn engine<T>(what: &str, result: Result<T, Error>) -> Result<T> {
    result.map_err(|e| anyhow!("{what}: {e}"))
}

fn check_bounds(log: &Log, model: &Model) -> Result<()> {
    let want = (Position::new(model.first), Position::new(model.last()));
    ensure!(
        log.bounds() == want,
        "bounds {:?}, model {want:?}",
        log.bounds()
    );
    Ok(())
}

/// The segments tile the model's positions, a compacted one is sealed and holds exactly the
/// records the model has not removed in its range, and no other segment holds a removed one.
fn check_segments(log: &Log, model: &Model) -> Result<Vec<SegmentInfo>> {
    let segments = log.segments();
    let mut next = model.first;
    for s in &segments {
        ensure!(
            s.first_position == next && s.last_position + 1 >= s.first_position,
            "segment {}..={} where {next} comes next: {segments:?}",
            s.first_position,
            s.last_position
        );
        let span = s.last_position + 1 - s.first_position;
        let held = (s.first_position..=s.last_position)
            .filter(|p| model.held(*p))
            .count() as u64;
        if s.compacted {
            ensure!(
                s.sealed && s.records == held,
                "compacted segment {}..={} holds {} records (sealed {}), the model {held}",
                s.first_position,
                s.last_position,
                s.records,
                s.sealed
            );
        } else {
            ensure!(
                held == span && s.records == span,
                "segment {}..={} (not compacted) holds {} records, the model {held} of {span}",
                s.first_position,
                s.last_position,
                s.records
            );
        }
        next = s.last_position + 1;
    }
    ensure!(
        next == model.last() + 1,
        "segments end at {}, the model at {}",
        next - 1,
        model.last()
    );
    Ok(segments)
}

/// Outputs of a compaction stay within `segment_bytes_max` (engine/FORMAT.md §3.1), except a
/// segment rewritten alone, which grows by at most the 8 bytes a gap frame has over an empty
/// record's frame for each empty record it lost: `before` and `after` are the segments around
/// the pass, `doomed` what it removed.
fn check_output_sizes(
    before: &[SegmentInfo],
    after: &[SegmentInfo],
    doomed: &[u64],
    model: &Model,
) -> Result<()> {
    for s in after
        .iter()
        .filter(|s| s.compacted && s.bytes > SEGMENT_BYTES_MAX)
    {
        let range = s.first_position..=s.last_position;
        let alone = before
            .iter()
            .find(|b| b.first_position == s.first_position && b.last_position == s.last_position);
        let empty_removed = doomed
            .iter()
            .filter(|p| range.contains(p))
            .filter(|p| model.record(**p).is_some_and(|r| r.bytes.is_empty()))
            .count() as u64;
        let gap_over_empty = (frame::GAP_FRAME_BYTES - frame::frame_len(0)) as u64;
        ensure!(
            alone.is_some_and(|b| s.bytes <= b.bytes + gap_over_empty * empty_removed),
            "compacted segment {}..={} has {} bytes, over segment_bytes_max {SEGMENT_BYTES_MAX}, \
             and is no rewrite of one segment grown only by gap frames for empty records \
             ({empty_removed} removed; before: {alone:?})",
            s.first_position,
            s.last_position,
            s.bytes
        );
    }
    Ok(())
}

/// Whether `truncate_after(keep)` must be refused: its cut lands inside a compacted segment.
fn cuts_compacted(segments: &[SegmentInfo], keep: u64) -> bool {
    let cut = keep + 1;
    segments
        .iter()
        .any(|s| s.compacted && s.first_position <= cut && cut <= s.last_position)
}

fn check_entry(entry: &tasklog_engine::Entry, position: u64, model: &Model) -> Result<()> {
    let record = model.record(position).context("model")?;
    ensure!(
        entry.position().get() == position
            && !record.removed
            && entry.kind() == record.kind
            && entry.payload() == &record.bytes[..],
        "position {position} (removed {}) holds other bytes, read at {}",
        record.removed,
        entry.position()
    );
    Ok(())
}

fn check_all(log: &Log, model: &Model) -> Result<()> {
    check_bounds(log, model)?;
    check_segments(log, model)?;
    for position in model.first..=model.last() {
        match log.read(Position::new(position)) {
            Ok(entry) => check_entry(&entry, position, model)?,
            Err(Error::Compacted { position: p }) if p == position && !model.held(position) => {}
            Err(e) => bail!(
                "read {position} (removed {:?}): {e}",
                model.record(position).map(|r| r.removed)
            ),
        }
    }
    let expected = model.held_from(model.first, usize::MAX);
    let mut got = Vec::new();
    let mut next = model.first;
    while next <= model.last() {
        let entries = engine(
            "read_range",
            log.read_range(Position::new(next), 500, usize::MAX),
        )?;
        let Some(last) = entries.last() else { break };
        next = last.position().get() + 1;
        for entry in &entries {
            check_entry(entry, entry.position().get(), model)?;
            got.push(entry.position().get());
        }
    }
    ensure!(
        got == expected,
        "read_range returned positions {got:?}, the model holds {expected:?}"
    );
    Ok(())
}

fn last_segment(dir: &Path) -> Result<PathBuf> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .context("list")?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".seg"))
        .collect();
    names.sort();
    Ok(dir.join(names.last().context("no segment")?))
}

/// Damages the last segment as a crash may: only bytes after the last synced record. `how`: 0
/// keep all, 1 cut, 2 cut then zeros, 3 garble one byte of the last frame.
fn damage(dir: &Path, durable: u64, how: u8, at: u16, zeros: u16) -> Result<()> {
    let path = last_segment(dir)?;
    let bytes = fs::read(&path).context("read segment")?;
    let mut offset = segment::HEADER_BYTES;
    let mut unsynced_start = bytes.len();
    let mut last_frame = None;
    while let Some(frame::Decoded::Frame(f)) = bytes.get(offset..).map(frame::decode) {
        if f.position > durable && unsynced_start == bytes.len() {
            unsynced_start = offset;
        }
        last_frame = Some((offset, f.len));
        offset += f.len;
    }
    // An index file next to the last segment (a clean-close checkpoint, or the index of a
    // segment sealed just before a failed roll) covers bytes that were synced first.
    let index_path = path.with_extension(tasklog_engine::index::EXTENSION);
    if let Ok(index) = fs::read(&index_path)
        && let Some(covered) = index
            .get(tasklog_engine::index::SEGMENT_BYTES_OFFSET..)
            .and_then(|b| b.get(..8))
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
    {
        let covered = usize::try_from(u64::from_le_bytes(covered)).unwrap_or(usize::MAX);
        unsynced_start = unsynced_start.max(covered.min(bytes.len()));
    }
    let span = (bytes.len() - unsynced_start) as u64;
    let cut = unsynced_start as u64 + span * u64::from(at) / u64::from(u16::MAX);
    let file = OpenOptions::new()
        .write(true)
        .open(&path)
        .context("open segment")?;
    match how % 4 {
        0 => {}
        1 => file.set_len(cut).context("cut")?,
        2 => {
            file.set_len(cut).context("cut")?;
            file.write_all_at(&vec![0u8; usize::from(zeros % 4096)], cut)
                .context("zeros")?;
        }
        _ => {
            if let Some((start, len)) = last_frame.filter(|(start, _)| *start >= unsynced_start) {
                let victim = start + usize::from(at) % len;
                let byte = bytes.get(victim).copied().unwrap_or_default();
                file.write_all_at(&[byte ^ 0x55], victim as u64)
                    .context("garble")?;
            }
        }
    }
    Ok(())
}

/// Crashes the log, damages unsynced bytes, reopens and checks what survived.
fn crash_and_reopen(
    log: Log,
    dir: &Path,
    options: &Options,
    model: &mut Model,
    damage_how: Option<(u8, u16, u16)>,
    maybe_removed: &[u64],
) -> Result<Log> {
    log.crash();
    if let Some((how, at, zeros)) = damage_how {
        damage(dir, model.durable, how, at, zeros)?;
    }
    let log = engine("reopen after a crash", Log::open(dir, options.clone()))?;
    let (first, last) = (log.bounds().0.get(), log.bounds().1.get());
    ensure!(
        first == model.first,
        "first {first} after a crash, model {}",
        model.first
    );
    ensure!(
        last >= model.durable.max(model.first - 1),
        "lost synced records: last {last}, durable {}",
        model.durable
    );
    ensure!(
        last <= model.last(),
        "records appeared from nowhere: last {last}, model {}",
        model.last()
    );
    model.records.truncate((last + 1 - model.first) as usize);
    model.durable = model.durable.min(model.last());
    // A failed compaction: what it committed is a prefix of what it would have removed.
    let mut kept_one = false;
    for &position in maybe_removed {
        if model.record(position).is_none() {
            continue;
        }
        match log.read(Position::new(position)) {
            Ok(entry) => {
                check_entry(&entry, position, model)?;
                kept_one = true;
            }
            Err(Error::Compacted { position: p }) if p == position => {
                ensure!(
                    !kept_one,
                    "a failed compaction removed {position} but kept a dead record before it: \
                     not a prefix"
                );
                if let Some(record) = model.record_mut(position) {
                    record.removed = true;
                }
            }
            Err(e) => bail!("read {position} after a failed compaction: {e}"),
        }
    }
    check_all(&log, model)?;
    Ok(log)
}

pub(crate) fn run(data: &[u8]) -> Result<()> {
    let mut input = Input::new(data);
    let control = input.u8();
    let always = control & 0x01 != 0;
    let interval = [64, 512, 4096, 256][usize::from((control >> 1) & 0x03)];
    let sync = if always {
        SyncPolicy::Always
    } else {
        SyncPolicy::Never
    };
    let options = options(RecoveryMode::TolerateTail, sync, interval);
    let dir = scratch_dir()?;
    let mut log = engine("open", Log::open(dir.path(), options.clone()))?;
    let mut model = Model {
        first: 1,
        records: Vec::new(),
        durable: 0,
        seq: 0,
    };
    let mut appended_bytes = 0usize;
    let mut faults_armed = false;
    for _ in 0..LOG_MODEL_OPS_MAX {
        if input.is_empty() {
            break;
        }
        let op = input.u8() % 17;
        trace(format_args!(
            "log_model: op {op}, model {}..={} durable {}, log {:?}",
            model.first,
            model.last(),
            model.durable,
            log.bounds()
        ));
        match op {
            0..=6 => {
                let count = 1 + usize::from(input.u8() % 4);
                let len = usize::from(input.u16()) % 24_000;
                let kind = input.u8();
                if appended_bytes + count * len > APPENDED_BYTES_MAX {
                    continue;
                }
                appended_bytes += count * len;
                let payloads: Vec<Vec<u8>> = (0..count)
                    .map(|i| payload(model.seq + i as u64, len))
                    .collect();
                model.seq += count as u64;
                let records: Vec<NewRecord<'_>> =
                    payloads.iter().map(|p| NewRecord::new(kind, p)).collect();
                let result = log.append(&records);
                model
                    .records
                    .extend(payloads.into_iter().map(|bytes| Record {
                        kind,
                        bytes,
                        removed: false,
                    }));
                match result {
                    Ok(appended) => {
                        ensure!(
                            appended.first.get() + count as u64 - 1 == model.last()
                                && appended.last.get() == model.last(),
                            "append gave {appended:?}, model last {}",
                            model.last()
                        );
                        if always {
                            model.durable = model.last();
                        }
                    }
                    Err(e) if faults_armed => {
                        ensure!(
                            matches!(e, Error::Poisoned { .. } | Error::Io { .. }),
                            "a failed write gave {e}"
                        );
                        // A poisoned log refuses writes; the next step is a restart.
                        faults_armed = false;
                        log = crash_and_reopen(log, dir.path(), &options, &mut model, None, &[])?;
                    }
                    Err(e) => bail!("append: {e}"),
                }
            }
            7 => {
                let pick = input.u16();
                if model.records.is_empty() {
                    ensure!(
                        matches!(
                            log.read(Position::new(model.first)),
                            Err(Error::NotFound { .. })
                        ),
                        "read from an empty log"
                    );
                } else {
                    let position = model.first + u64::from(pick) % model.records.len() as u64;
                    match log.read(Position::new(position)) {
                        Ok(entry) => check_entry(&entry, position, &model)?,
                        Err(Error::Compacted { position: p })
                            if p == position && !model.held(position) => {}
                        Err(e) => bail!("read {position}: {e}"),
                    }
                }
                ensure!(
                    matches!(
                        log.read(Position::new(model.last() + 1)),
                        Err(Error::NotFound { .. })
                    ),
                    "read after the end"
                );
            }
            8 => {
                let pick = input.u16();
                let count = 1 + usize::from(input.u8() % 40);
                if !model.records.is_empty() {
                    let from = model.first + u64::from(pick) % model.records.len() as u64;
                    let entries = engine(
                        "read_range",
                        log.read_range(Position::new(from), count, usize::MAX),
                    )?;
                    let got: Vec<u64> = entries.iter().map(|e| e.position().get()).collect();
                    let expected = model.held_from(from, count);
                    ensure!(
                        got == expected,
                        "read_range({from}, {count}) gave positions {got:?}, the model {expected:?}"
                    );
                    for entry in &entries {
                        check_entry(entry, entry.position().get(), &model)?;
                    }
                }
            }
            9 => {
                let pick = input.u16();
                log.faults().clear();
                faults_armed = false;
                let keep = model.first - 1 + u64::from(pick) % (model.records.len() as u64 + 1);
                let segments = check_segments(&log, &model)?;
                if keep < model.last() && cuts_compacted(&segments, keep) {
                    let refused = log.truncate_after(Position::new(keep));
                    ensure!(
                        matches!(refused, Err(Error::InvalidArgument(_))),
                        "truncate_after({keep}) into a compacted segment gave {refused:?}"
                    );
                } else {
                    engine("truncate_after", log.truncate_after(Position::new(keep)))?;
                    model.records.truncate((keep + 1 - model.first) as usize);
                    model.durable = model.durable.min(keep);
                }
            }
            10 => {
                let pick = input.u16();
                log.faults().clear();
                faults_armed = false;
                let before = u64::from(pick) % (model.records.len() as u64 + 2) + model.first;
                engine("purge_before", log.purge_before(Position::new(before)))?;
                let first = log.bounds().0.get();
                ensure!(
                    first >= model.first && first <= before.max(model.first),
                    "purge to {before} left {first}"
                );
                model.records.drain(..(first - model.first) as usize);
                model.first = first;
            }
            11 => match log.sync() {
                Ok(()) => model.durable = model.last(),
                Err(e) if faults_armed => {
                    ensure!(
                        matches!(e, Error::Poisoned { .. } | Error::Io { .. }),
                        "a failed sync gave {e}"
                    );
                    faults_armed = false;
                    log = crash_and_reopen(log, dir.path(), &options, &mut model, None, &[])?;
                }
                Err(e) => bail!("sync: {e}"),
            },
            12 => {
                log.faults().clear();
                faults_armed = false;
                engine("close", log.close())?;
                model.durable = model.last();
                log = engine("reopen", Log::open(dir.path(), options.clone()))?;
                ensure!(
                    log.recovery_report().truncations.is_empty(),
                    "reopen after a clean close cut the log: {:?}",
                    log.recovery_report()
                );
                check_all(&log, &model)?;
            }
            13 | 14 => {
                let how = (input.u8(), input.u16(), input.u16());
                faults_armed = false;
                log = crash_and_reopen(log, dir.path(), &options, &mut model, Some(how), &[])?;
            }
            15 => {
                let arg = input.u8();
                if arg & 0x80 == 0 {
                    log.faults().fail_write_after(u64::from(arg % 4));
                } else {
                    log.faults().fail_sync_after(u64::from(arg % 4));
                }
                faults_armed = true;
            }
            _ => {
                let pick = input.u16();
                let mask = input.u8();
                let modulus = 1 + u64::from(input.u8() % 8);
                let horizon = model.first + u64::from(pick) % (model.records.len() as u64 + 2);
                let live = live_of(mask, modulus);
                // The pass reaches the sealed segments that end before the horizon; every record
                // there that `live` refuses goes, every other record stays.
                let segments = check_segments(&log, &model)?;
                let reach_end = segments
                    .iter()
                    .take_while(|s| s.sealed && s.last_position < horizon)
                    .last()
                    .map_or(0, |s| s.last_position);
                let doomed: Vec<u64> = (model.first..=reach_end)
                    .filter(|p| model.held(*p) && !live(*p))
                    .collect();
                trace(format_args!(
                    "log_model: compact({horizon}, mask {mask:#04x} % {modulus}) reaches \
                     ..={reach_end}, removes {}",
                    doomed.len()
                ));
                match log.compact(horizon, &live) {
                    Ok(report) => {
                        ensure!(
                            report.records_removed == doomed.len() as u64,
                            "compact({horizon}) removed {} records, the model {}: {report:?}",
                            report.records_removed,
                            doomed.len()
                        );
                        for &position in &doomed {
                            if let Some(record) = model.record_mut(position) {
                                record.removed = true;
                            }
                        }
                        check_all(&log, &model)?;
                        check_output_sizes(&segments, &log.segments(), &doomed, &model)?;
                    }
                    Err(e) if faults_armed => {
                        ensure!(
                            matches!(e, Error::Poisoned { .. } | Error::Io { .. }),
                            "a failed compaction gave {e}"
                        );
                        trace(format_args!("log_model: compaction failed: {e}"));
                        faults_armed = false;
                        log =
                            crash_and_reopen(log, dir.path(), &options, &mut model, None, &doomed)?;
                    }
                    Err(e) => bail!("compact({horizon}): {e}"),
                }
            }
        }
        check_bounds(&log, &model)?;
    }
    log.faults().clear();
    check_all(&log, &model)?;
    let verified = engine("verify", log.verify(&mut |_, _| {}))?;
    let held = model.held_from(model.first, usize::MAX).len() as u64;
    ensure!(
        verified.records == held,
        "verify checked {} records, the model holds {held}",
        verified.records
    );
    engine("close", log.close())?;
    Ok(())
}
