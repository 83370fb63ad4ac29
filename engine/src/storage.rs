//! Every file-system call of the engine, each wrapped so its error names the operation and path.
//!
//! With the `testing` feature, [`Faults`] can make the n-th write or fsync fail, which is how the
//! tests prove that a failed fsync poisons the log. Without it, [`Faults`] is empty and free.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Suffix of files being written before their atomic rename into place.
pub(crate) const TEMP_SUFFIX: &str = ".tmp";
/// Name of the lock file held exclusively while a log is open.
pub(crate) const LOCK_FILE: &str = "LOCK";

/// A data directory: the place every engine file lives.
#[derive(Debug)]
pub(crate) struct Dir {
    path: PathBuf,
    faults: Faults,
}

impl Dir {
    /// Creates the directory if needed.
    pub(crate) fn create(path: &Path) -> Result<Self> {
        fs::create_dir_all(path).map_err(|e| Error::io("create directory", path, e))?;
        Ok(Dir {
            path: path.to_path_buf(),
            faults: Faults::default(),
        })
    }

    /// The directory's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Fault injection hooks.
    pub(crate) fn faults(&self) -> &Faults {
        &self.faults
    }

    /// The path of `name` inside the directory.
    pub(crate) fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Takes the exclusive lock that keeps a second process (or a second open) out.
    pub(crate) fn lock(&self) -> Result<File> {
        let path = self.join(LOCK_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io("open lock file", &path, e))?;
        match file.try_lock() {
            Ok(()) => Ok(file),
            Err(fs::TryLockError::WouldBlock) => Err(Error::Locked { path }),
            Err(fs::TryLockError::Error(e)) => Err(Error::io("lock", &path, e)),
        }
    }

    /// File names in the directory.
    pub(crate) fn list(&self) -> Result<Vec<String>> {
        let entries =
            fs::read_dir(&self.path).map_err(|e| Error::io("list directory", &self.path, e))?;
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("list directory", &self.path, e))?;
            if let Ok(name) = entry.file_name().into_string() {
                names.push(name);
            }
        }
        Ok(names)
    }

    /// fsyncs the directory itself, making creations, renames and removals durable.
    pub(crate) fn sync(&self) -> Result<()> {
        let dir = File::open(&self.path).map_err(|e| Error::io("open directory", &self.path, e))?;
        self.faults
            .before_sync()
            .map_err(|e| Error::io("fsync directory", &self.path, e))?;
        dir.sync_all()
            .map_err(|e| Error::io("fsync directory", &self.path, e))
    }

    /// Writes `bytes` to `name` atomically and durably: write a temporary file, fsync it, rename
    /// it over `name`, fsync the directory. Returns the new file opened for reading and writing.
    pub(crate) fn write_atomically(&self, name: &str, bytes: &[u8]) -> Result<File> {
        let (file, temp) = self.create_temp(name)?;
        write_at(&file, &temp, bytes, 0, &self.faults)?;
        sync_data(&file, &temp, &self.faults)?;
        self.rename_temp(name)?;
        self.sync()?;
        Ok(file)
    }

    /// Creates (or empties) `name` + [`TEMP_SUFFIX`] for reading and writing; it becomes `name`
    /// with [`Dir::rename_temp`]. Recovery deletes temporary files left by a crash.
    pub(crate) fn create_temp(&self, name: &str) -> Result<(File, PathBuf)> {
        let temp = self.join(&format!("{name}{TEMP_SUFFIX}"));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temp)
            .map_err(|e| Error::io("create", &temp, e))?;
        Ok((file, temp))
    }

    /// Renames the temporary file of `name` over `name`. Call [`Dir::sync`] after.
    pub(crate) fn rename_temp(&self, name: &str) -> Result<()> {
        self.rename_temp_as(name, name)
    }

    /// Renames the temporary file of `temp_name` (made by [`Dir::create_temp`]) over `name`.
    /// Call [`Dir::sync`] after.
    pub(crate) fn rename_temp_as(&self, temp_name: &str, name: &str) -> Result<()> {
        let temp = self.join(&format!("{temp_name}{TEMP_SUFFIX}"));
        let target = self.join(name);
        fs::rename(&temp, &target).map_err(|e| Error::io("rename", &target, e))
    }

    /// Opens an existing file for reading and writing.
    pub(crate) fn open(&self, name: &str) -> Result<File> {
        let path = self.join(name);
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io("open", &path, e))
    }

    /// Removes `name`; a file that is already gone is not an error. Call [`Dir::sync`] after.
    pub(crate) fn remove(&self, name: &str) -> Result<()> {
        let path = self.join(name);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("remove", &path, e)),
        }
    }
}

/// Writes all of `bytes` at `offset`.
pub(crate) fn write_at(
    file: &File,
    path: &Path,
    bytes: &[u8],
    offset: u64,
    faults: &Faults,
) -> Result<()> {
    faults
        .before_write()
        .map_err(|e| Error::io("write", path, e))?;
    file.write_all_at(bytes, offset)
        .map_err(|e| Error::io("write", path, e))
}

/// `fdatasync`.
pub(crate) fn sync_data(file: &File, path: &Path, faults: &Faults) -> Result<()> {
    faults
        .before_sync()
        .map_err(|e| Error::io("fdatasync", path, e))?;
    file.sync_data()
        .map_err(|e| Error::io("fdatasync", path, e))
}

/// Reads up to `buffer.len()` bytes at `offset`; fewer only at end of file.
pub(crate) fn read_at(file: &File, path: &Path, buffer: &mut [u8], offset: u64) -> Result<usize> {
    let mut done = 0;
    while done < buffer.len() {
        let Some(rest) = buffer.get_mut(done..) else {
            break;
        };
        match file.read_at(rest, offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io("read", path, e)),
        }
    }
    Ok(done)
}

/// Length of an open file.
pub(crate) fn file_len(file: &File, path: &Path) -> Result<u64> {
    Ok(file
        .metadata()
        .map_err(|e| Error::io("stat", path, e))?
        .len())
}

/// Truncates (or extends with zeros) an open file to `len` bytes and syncs it.
pub(crate) fn set_len_durably(file: &File, path: &Path, len: u64, faults: &Faults) -> Result<()> {
    file.set_len(len)
        .map_err(|e| Error::io("truncate", path, e))?;
    sync_data(file, path, faults)
}

/// Fault injection: with the `testing` feature, a countdown after which writes or syncs fail.
#[derive(Debug, Default)]
#[cfg_attr(
    not(feature = "testing"),
    allow(unreachable_pub, reason = "exported only with the testing feature")
)]
pub struct Faults {
    #[cfg(feature = "testing")]
    syncs_left: std::sync::atomic::AtomicU64,
    #[cfg(feature = "testing")]
    writes_left: std::sync::atomic::AtomicU64,
    #[cfg(feature = "testing")]
    armed: std::sync::atomic::AtomicU8,
    /// Whether maintenances stop at [`Faults::maintenance_started`], and how many wait there.
    #[cfg(feature = "testing")]
    gate: std::sync::Mutex<(bool, usize)>,
    #[cfg(feature = "testing")]
    gate_changed: std::sync::Condvar,
}

#[cfg(feature = "testing")]
impl Faults {
    const SYNC: u8 = 1;
    const WRITE: u8 = 2;

    /// Makes the sync after the next `n` succeed fail (`n = 0`: the very next one), and every
    /// sync after it.
    pub fn fail_sync_after(&self, n: u64) {
        use std::sync::atomic::Ordering::SeqCst;
        self.syncs_left.store(n, SeqCst);
        self.armed.fetch_or(Self::SYNC, SeqCst);
    }

    /// Makes the write after the next `n` fail, and every write after it.
    pub fn fail_write_after(&self, n: u64) {
        use std::sync::atomic::Ordering::SeqCst;
        self.writes_left.store(n, SeqCst);
        self.armed.fetch_or(Self::WRITE, SeqCst);
    }

    /// Disarms every fault.
    pub fn clear(&self) {
        self.armed.store(0, std::sync::atomic::Ordering::SeqCst);
    }

    fn countdown(
        &self,
        bit: u8,
        left: &std::sync::atomic::AtomicU64,
        what: &str,
    ) -> std::io::Result<()> {
        use std::sync::atomic::Ordering::SeqCst;
        if self.armed.load(SeqCst) & bit == 0 {
            return Ok(());
        }
        match left.fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1)) {
            Ok(_) => Ok(()),
            Err(_) => Err(std::io::Error::other(format!("injected {what} failure"))),
        }
    }

    fn before_sync(&self) -> std::io::Result<()> {
        self.countdown(Self::SYNC, &self.syncs_left, "fsync")
    }

    fn gate(&self) -> std::sync::MutexGuard<'_, (bool, usize)> {
        self.gate
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Makes every truncate, purge, reset or close, once it holds the log exclusively (appenders
    /// held off, maintenance flag set) and before its I/O, wait until
    /// [`Faults::release_maintenance`].
    pub fn hold_maintenance(&self) {
        self.gate().0 = true;
    }

    /// Waits until a maintenance is held by [`Faults::hold_maintenance`].
    pub fn wait_maintenance_held(&self) {
        let mut gate = self.gate();
        while gate.1 == 0 {
            gate = self
                .gate_changed
                .wait(gate)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    /// Lets held maintenances (and later ones) run.
    pub fn release_maintenance(&self) {
        self.gate().0 = false;
        self.gate_changed.notify_all();
    }

    /// Called by a maintenance once it holds the log: waits while [`Faults::hold_maintenance`].
    pub(crate) fn maintenance_started(&self) {
        let mut gate = self.gate();
        gate.1 += 1;
        self.gate_changed.notify_all();
        while gate.0 {
            gate = self
                .gate_changed
                .wait(gate)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        gate.1 -= 1;
    }

    fn before_write(&self) -> std::io::Result<()> {
        self.countdown(Self::WRITE, &self.writes_left, "write")
    }
}

#[cfg(not(feature = "testing"))]
impl Faults {
    #[inline(always)]
    fn before_sync(&self) -> std::io::Result<()> {
        Ok(())
    }

    #[inline(always)]
    pub(crate) fn maintenance_started(&self) {}

    #[inline(always)]
    fn before_write(&self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_on_one_directory_is_refused() {
        let temp = tempfile::tempdir().unwrap();
        let dir = Dir::create(temp.path()).unwrap();
        let _held = dir.lock().unwrap();
        assert!(matches!(dir.lock(), Err(Error::Locked { .. })));
    }

    #[test]
    fn atomic_write_replaces_content_and_leaves_no_temp() {
        let temp = tempfile::tempdir().unwrap();
        let dir = Dir::create(temp.path()).unwrap();
        dir.write_atomically("a", b"one").unwrap();
        dir.write_atomically("a", b"two!").unwrap();
        assert_eq!(fs::read(dir.join("a")).unwrap(), b"two!");
        assert_eq!(dir.list().unwrap(), vec!["a".to_string()]);
        dir.remove("a").unwrap();
        dir.remove("a").unwrap();
        assert!(dir.list().unwrap().is_empty());
    }
}
