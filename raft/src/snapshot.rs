//! The snapshot file: what a node needs to stand where another stood at log position P, which,
//! because the log *is* the data, is the log prefix up to P plus the task table as of P.
//!
//! ```text
//! magic[8] | u32 version | u32 reserved=0 | u64 meta_len | meta (JSON SnapshotMeta)
//! | u64 image_len | image (the engine's checkpoint bytes, TaskStore::snapshot)
//! | u64 record_count | record_count × { u64 position | u64 term | u8 kind | u32 len | payload }
//! | u32 crc32 of every byte before it
//! ```
//!
//! All integers little-endian. Written to a temporary file, fsynced and renamed, so a snapshot
//! file is whole or absent; read twice on install (the CRC first, then the contents), so a
//! damaged transfer changes nothing.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use tasklog_engine::{NewRecord, Position, TaskStore, limits};

use crate::types::{SnapshotMeta, io_error};

/// Snapshot file magic (PNG style).
pub const MAGIC: [u8; 8] = *b"\x89TLS\r\n\x1a\n";
/// Snapshot file format version.
pub const VERSION: u32 = 1;
/// Largest meta section accepted.
const META_BYTES_MAX: u64 = 16 * 1024 * 1024;
/// Largest image accepted (a checkpoint of a very large table).
const IMAGE_BYTES_MAX: u64 = 16 * 1024 * 1024 * 1024;
/// Records appended per engine call on install.
const INSTALL_CHUNK: usize = 1024;

/// A snapshot on disk: what openraft hands between the state machine and the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotFile {
    /// Where it is.
    pub path: PathBuf,
}

fn invalid(reason: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, reason.into())
}

/// A writer that keeps the CRC of what passed through it.
struct Crc<W> {
    inner: W,
    hasher: crc32fast::Hasher,
}

impl<W: Write> Write for Crc<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(buf.get(..n).unwrap_or_default());
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<R: Read> Read for Crc<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(buf.get(..n).unwrap_or_default());
        Ok(n)
    }
}

/// Prefix and suffix of snapshot file names: `snapshot-<term>-<index>.snap`, zero-padded, one
/// file per snapshot so that building a new one never touches a file a peer is being sent.
const FILE_PREFIX: &str = "snapshot-";
const FILE_SUFFIX: &str = ".snap";
/// The name of the single snapshot file of earlier versions; still read.
const LEGACY_FILE: &str = "current.snap";
/// Snapshot files kept: the newest and the one before it (it may still be in a transfer).
const FILES_KEPT: usize = 2;

/// The file name of a snapshot standing at `meta`'s last log id.
pub fn file_name(meta: &SnapshotMeta) -> String {
    let (term, index) = meta
        .last_log_id
        .map_or((0, 0), |id| (id.leader_id.term, id.index));
    format!("{FILE_PREFIX}{term:020}-{index:020}{FILE_SUFFIX}")
}

/// The snapshot files in `dir`, newest first (by the term and index in their names; the legacy
/// file last).
pub fn files(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(error),
    };
    let mut named = Vec::new();
    let mut legacy = None;
    for entry in entries {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        if name == LEGACY_FILE {
            legacy = Some(dir.join(name));
        } else if let Some(key) = name
            .strip_prefix(FILE_PREFIX)
            .and_then(|rest| rest.strip_suffix(FILE_SUFFIX))
            .and_then(|key| key.split_once('-'))
            .and_then(|(term, index)| Some((term.parse::<u64>().ok()?, index.parse::<u64>().ok()?)))
        {
            named.push((key, dir.join(name)));
        }
    }
    named.sort_unstable_by_key(|(key, _)| std::cmp::Reverse(*key));
    Ok(named
        .into_iter()
        .map(|(_, path)| path)
        .chain(legacy)
        .collect())
}

/// Removes snapshot files older than the two newest (a transfer that has one open
/// keeps reading it: the name goes, the file stays until closed).
pub fn remove_old(dir: &Path) -> io::Result<()> {
    for old in files(dir)?.into_iter().skip(FILES_KEPT) {
        match fs::remove_file(&old) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// Makes `file` (a checked snapshot standing at `meta`) the newest snapshot in `dir`: renamed
/// when it is already in `dir` (a received transfer), copied otherwise; durable either way.
///
/// # Errors
/// I/O errors.
pub fn keep(file: &Path, meta: &SnapshotMeta, dir: &Path) -> io::Result<PathBuf> {
    fs::create_dir_all(dir)?;
    let target = dir.join(file_name(meta));
    if file == target {
        return Ok(target);
    }
    if file.parent() == Some(dir) {
        fs::rename(file, &target)?;
    } else {
        let temp = dir.join(format!("{}.tmp", file_name(meta)));
        fs::copy(file, &temp)?;
        File::open(&temp)?.sync_all()?;
        fs::rename(&temp, &target)?;
    }
    File::open(dir)?.sync_all()?;
    remove_old(dir)?;
    Ok(target)
}

/// Writes the snapshot of `store` (image and log prefix up to the image's position) into `dir`
/// under its own name ([`file_name`]), durably; returns its meta (from `meta_for`, given where
/// the image stands) and file. Older snapshot files beyond the newest two are removed.
///
/// # Errors
/// I/O and engine errors.
pub fn build(
    store: &TaskStore,
    dir: &Path,
    meta_for: impl FnOnce(&tasklog_engine::ReplicaApplied) -> io::Result<SnapshotMeta>,
) -> io::Result<(SnapshotMeta, SnapshotFile)> {
    fs::create_dir_all(dir)?;
    let (applied, image) = store.snapshot().map_err(io_error)?;
    let meta = meta_for(&applied)?;
    let name = file_name(&meta);
    let temp = dir.join(format!("{name}.tmp"));
    let file = File::create(&temp)?;
    let mut out = Crc {
        inner: BufWriter::new(&file),
        hasher: crc32fast::Hasher::new(),
    };
    out.write_all(&MAGIC)?;
    out.write_all(&VERSION.to_le_bytes())?;
    out.write_all(&0u32.to_le_bytes())?;
    let meta_bytes = serde_json::to_vec(&meta).map_err(io::Error::other)?;
    out.write_all(&(meta_bytes.len() as u64).to_le_bytes())?;
    out.write_all(&meta_bytes)?;
    out.write_all(&(image.len() as u64).to_le_bytes())?;
    out.write_all(&image)?;
    // The prefix the image's tasks refer to: everything the log still holds up to P.
    let log = store.log();
    let (first, last) = log.bounds();
    let to = applied.position.min(last);
    let count = (to.get() + 1).saturating_sub(first.get());
    out.write_all(&count.to_le_bytes())?;
    let mut next = first.get();
    while next <= to.get() {
        let records = log
            .read_range(Position::new(next), INSTALL_CHUNK, 64 * 1024 * 1024)
            .map_err(io_error)?;
        let Some(last_read) = records.last() else {
            break;
        };
        next = last_read.position().get() + 1;
        for record in records.iter().filter(|r| r.position() <= to) {
            out.write_all(&record.position().get().to_le_bytes())?;
            out.write_all(&record.term().to_le_bytes())?;
            out.write_all(&[record.kind()])?;
            out.write_all(&(record.payload().len() as u32).to_le_bytes())?;
            out.write_all(record.payload())?;
        }
    }
    let crc = out.hasher.clone().finalize();
    let mut inner = out.inner;
    inner.write_all(&crc.to_le_bytes())?;
    inner.flush()?;
    drop(inner);
    file.sync_all()?;
    let path = dir.join(name);
    fs::rename(&temp, &path)?;
    File::open(dir)?.sync_all()?;
    remove_old(dir)?;
    Ok((meta, SnapshotFile { path }))
}

/// Reads a snapshot's meta (checking the CRC of the whole file first).
///
/// # Errors
/// [`io::ErrorKind::InvalidData`] for a damaged or foreign file; I/O errors.
pub fn read_meta(path: &Path) -> io::Result<SnapshotMeta> {
    verify(path)?;
    let mut input = BufReader::new(File::open(path)?);
    header(&mut input)
}

/// Reads a snapshot's meta once the whole file holds: magic, version and CRC, and a task image
/// the engine would install (checked without installing anything), so that a file is kept only
/// if it can be installed.
///
/// # Errors
/// [`io::ErrorKind::InvalidData`] for a damaged or foreign file or an image the engine refuses;
/// I/O errors.
pub fn check(path: &Path) -> io::Result<SnapshotMeta> {
    verify(path)?;
    let mut input = BufReader::new(File::open(path)?);
    let meta = header(&mut input)?;
    let image = read_bytes(&mut input, IMAGE_BYTES_MAX, "image")?;
    tasklog_engine::check_snapshot(&image)
        .map_err(|error| invalid(format!("snapshot image: {error}")))?;
    Ok(meta)
}

/// Checks the magic, version and CRC of the whole file.
fn verify(path: &Path) -> io::Result<()> {
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    let body = len
        .checked_sub(4)
        .ok_or_else(|| invalid("snapshot shorter than its CRC"))?;
    let mut input = Crc {
        inner: BufReader::new(file).take(body),
        hasher: crc32fast::Hasher::new(),
    };
    io::copy(&mut input, &mut io::sink())?;
    let computed = input.hasher.clone().finalize();
    let mut stored = [0u8; 4];
    input.inner.into_inner().read_exact(&mut stored)?;
    if u32::from_le_bytes(stored) != computed {
        return Err(invalid("snapshot CRC mismatch"));
    }
    Ok(())
}

fn read_u64(input: &mut impl Read) -> io::Result<u64> {
    let mut bytes = [0u8; 8];
    input.read_exact(&mut bytes)?;
    Ok(u64::from_le_bytes(bytes))
}

fn read_bytes(input: &mut impl Read, max: u64, what: &str) -> io::Result<Vec<u8>> {
    let len = read_u64(input)?;
    if len > max {
        return Err(invalid(format!(
            "snapshot {what} of {len} bytes is over {max}"
        )));
    }
    let mut bytes = Vec::new();
    input.take(len).read_to_end(&mut bytes)?;
    if bytes.len() as u64 != len {
        return Err(invalid(format!("snapshot {what} is cut short")));
    }
    Ok(bytes)
}

fn header(input: &mut impl Read) -> io::Result<SnapshotMeta> {
    let mut magic = [0u8; 8];
    input.read_exact(&mut magic)?;
    if magic != MAGIC {
        return Err(invalid("not a tasklog snapshot (bad magic)"));
    }
    let mut words = [0u8; 8];
    input.read_exact(&mut words)?;
    let version = u32::from_le_bytes([words[0], words[1], words[2], words[3]]);
    if version != VERSION || words[4..] != [0, 0, 0, 0] {
        return Err(invalid(format!("unsupported snapshot version {version}")));
    }
    let meta = read_bytes(input, META_BYTES_MAX, "meta")?;
    serde_json::from_slice(&meta).map_err(|e| invalid(format!("snapshot meta: {e}")))
}

/// Makes `store` stand where the snapshot stands: its log prefix (unless the log already holds
/// the snapshot's last record with the same term, which by Raft's log matching means the same
/// prefix) and its task table. Returns the snapshot's meta.
///
/// # Errors
/// [`io::ErrorKind::InvalidData`] for a damaged or foreign file (nothing changed); I/O and engine
/// errors.
pub fn install(store: &TaskStore, path: &Path) -> io::Result<SnapshotMeta> {
    verify(path)?;
    let mut input = BufReader::new(File::open(path)?);
    let meta = header(&mut input)?;
    let image = read_bytes(&mut input, IMAGE_BYTES_MAX, "image")?;
    let count = read_u64(&mut input)?;
    let last = meta
        .last_log_id
        .map(|id| (crate::types::position_of(id.index), id.leader_id.term));
    let log = store.log();
    let holds_last = last.is_some_and(|(position, term)| {
        log.read(position).is_ok_and(|record| record.term() == term)
    });
    if !holds_last {
        let mut started = false;
        let mut chunk: Vec<(u64, u64, u8, Vec<u8>)> = Vec::with_capacity(INSTALL_CHUNK);
        for _ in 0..count {
            let position = read_u64(&mut input)?;
            let term = read_u64(&mut input)?;
            let mut kind = [0u8; 1];
            input.read_exact(&mut kind)?;
            let mut len = [0u8; 4];
            input.read_exact(&mut len)?;
            let len = u32::from_le_bytes(len);
            if len > limits::PAYLOAD_BYTES_MAX {
                return Err(invalid("snapshot record over the payload limit"));
            }
            let mut payload = vec![0u8; len as usize];
            input.read_exact(&mut payload)?;
            if !started {
                log.reset(Position::new(position)).map_err(io_error)?;
                started = true;
            }
            chunk.push((position, term, kind[0], payload));
            if chunk.len() == INSTALL_CHUNK {
                append_chunk(store, &mut chunk)?;
            }
        }
        append_chunk(store, &mut chunk)?;
        let next = last.map_or(1, |(position, _)| position.get() + 1);
        if !started || log.next_position().get() != next {
            // The snapshot carries no records (or fewer than its end): the log starts after it.
            log.reset(Position::new(next)).map_err(io_error)?;
        }
        log.sync().map_err(io_error)?;
    }
    store.install_snapshot(&image).map_err(io_error)?;
    Ok(meta)
}

fn append_chunk(store: &TaskStore, chunk: &mut Vec<(u64, u64, u8, Vec<u8>)>) -> io::Result<()> {
    let Some((first, ..)) = chunk.first() else {
        return Ok(());
    };
    let records: Vec<NewRecord<'_>> = chunk
        .iter()
        .map(|(_, term, kind, payload)| NewRecord {
            term: *term,
            kind: *kind,
            payload,
        })
        .collect();
    store
        .log()
        .append_at(Position::new(*first), &records)
        .map_err(io_error)?;
    chunk.clear();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{LogId, StoredMembership};

    fn meta(term: u64, index: u64) -> SnapshotMeta {
        SnapshotMeta {
            last_log_id: Some(LogId::new_term_index(term, index)),
            last_membership: StoredMembership::default(),
        }
    }

    /// A snapshot file holding `image` and no records, with a valid CRC.
    fn write_file(path: &Path, meta: &SnapshotMeta, image: &[u8]) {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&MAGIC);
        bytes.extend_from_slice(&VERSION.to_le_bytes());
        bytes.extend_from_slice(&0u32.to_le_bytes());
        let meta_bytes = serde_json::to_vec(meta).unwrap();
        bytes.extend_from_slice(&(meta_bytes.len() as u64).to_le_bytes());
        bytes.extend_from_slice(&meta_bytes);
        bytes.extend_from_slice(&(image.len() as u64).to_le_bytes());
        bytes.extend_from_slice(image);
        bytes.extend_from_slice(&0u64.to_le_bytes());
        let crc = crc32fast::hash(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        fs::write(path, bytes).unwrap();
    }

    /// Goal: a snapshot whose bytes hold together (CRC, header) but whose task image the engine
    /// refuses is refused before it is kept, so a node never keeps a snapshot it cannot install
    /// (it would fail at every restart). Method: files around a real image and around garbage.
    #[test]
    fn check_refuses_an_image_the_engine_would_not_install() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            TaskStore::open_replica(dir.path().join("store"), tasklog_engine::Options::default())
                .unwrap();
        let (_, image) = store.snapshot().unwrap();
        let good = dir.path().join("good.snap");
        write_file(&good, &meta(1, 0), &image);
        assert_eq!(check(&good).unwrap(), meta(1, 0));
        let bad = dir.path().join("bad.snap");
        write_file(&bad, &meta(1, 0), b"not a task image");
        let error = check(&bad).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        assert!(error.to_string().contains("snapshot image"), "{error}");
        assert_eq!(
            read_meta(&bad).unwrap(),
            meta(1, 0),
            "the frame itself holds"
        );
    }

    #[test]
    fn files_are_named_per_snapshot_and_listed_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str| fs::write(dir.path().join(name), b"x").unwrap();
        write(LEGACY_FILE);
        write(&file_name(&meta(2, 9)));
        write(&file_name(&meta(10, 3)));
        write(&file_name(&meta(2, 100)));
        write("snapshot-x-y.snap");
        write("incoming-1-0.part");
        let names: Vec<String> = files(dir.path())
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                file_name(&meta(10, 3)),
                file_name(&meta(2, 100)),
                file_name(&meta(2, 9)),
                LEGACY_FILE.to_owned(),
            ]
        );
        remove_old(dir.path()).unwrap();
        assert_eq!(files(dir.path()).unwrap().len(), FILES_KEPT);
        assert!(dir.path().join("incoming-1-0.part").exists());
        assert!(files(&dir.path().join("missing")).unwrap().is_empty());
    }

    #[test]
    fn keep_renames_a_file_from_the_directory_and_copies_one_from_elsewhere() {
        let dir = tempfile::tempdir().unwrap();
        let snapshots = dir.path().join("snapshots");
        fs::create_dir_all(&snapshots).unwrap();
        let received = snapshots.join("incoming-7-0.part");
        fs::write(&received, b"received").unwrap();
        let kept = keep(&received, &meta(3, 40), &snapshots).unwrap();
        assert!(!received.exists());
        assert_eq!(fs::read(&kept).unwrap(), b"received");
        let outside = dir.path().join("elsewhere.snap");
        fs::write(&outside, b"outside").unwrap();
        let kept = keep(&outside, &meta(3, 50), &snapshots).unwrap();
        assert!(outside.exists());
        assert_eq!(fs::read(&kept).unwrap(), b"outside");
        assert_eq!(files(&snapshots).unwrap()[0], kept);
        // Keeping the newest file again changes nothing.
        assert_eq!(keep(&kept, &meta(3, 50), &snapshots).unwrap(), kept);
    }
}
