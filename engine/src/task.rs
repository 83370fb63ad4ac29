//! Background work: the interval flusher of [`crate::SyncPolicy::Interval`].
//!
//! Group commit itself needs no thread: the first waiting appender leads each batch (see
//! `log.rs`). Only the interval policy needs a clock, and it gets one thread that syncs on a
//! fixed period and stops promptly when the log closes.

use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::log::{Inner, lock};

/// The thread behind [`crate::SyncPolicy::Interval`].
pub(crate) struct Flusher {
    stop: Arc<(Mutex<bool>, Condvar)>,
    handle: Option<JoinHandle<()>>,
}

impl Flusher {
    pub(crate) fn start(inner: Arc<Inner>, interval_ms: u64) -> Result<Self> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let signal = stop.clone();
        let dir = inner.dir.path().to_path_buf();
        let handle = std::thread::Builder::new()
            .name("tasklog-flusher".into())
            .spawn(move || {
                let (flag, wake) = &*signal;
                let mut stopped = lock(flag);
                loop {
                    let (guard, _) = wake
                        .wait_timeout(stopped, Duration::from_millis(interval_ms))
                        .unwrap_or_else(PoisonError::into_inner);
                    stopped = guard;
                    if *stopped {
                        return;
                    }
                    drop(stopped);
                    match inner.sync() {
                        Ok(()) | Err(Error::Closed) => {}
                        Err(error) => {
                            tracing::error!(%error, "interval sync failed; the log is poisoned");
                            return;
                        }
                    }
                    stopped = lock(flag);
                }
            })
            .map_err(|e| Error::io("spawn flusher thread", dir, e))?;
        Ok(Flusher {
            stop,
            handle: Some(handle),
        })
    }

    /// Stops the thread and waits for it.
    pub(crate) fn stop(mut self) {
        let (flag, wake) = &*self.stop;
        *lock(flag) = true;
        wake.notify_all();
        if let Some(handle) = self.handle.take()
            && handle.join().is_err()
        {
            tracing::error!("the flusher thread panicked");
        }
    }
}
