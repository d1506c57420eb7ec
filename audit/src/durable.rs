//! Group commit: one `fdatasync` makes every record written before it
//! durable, so concurrent appends share syncs instead of queueing for one
//! each. A caller still returns only once its own record is on disk.
//!
//! Appenders write their line under the chain lock (short: seal and
//! `write`), release it, then wait here for durability. Whoever finds no
//! sync running becomes the leader: it notes how far the file was written,
//! syncs a duplicate of the file descriptor without holding the chain
//! lock, and publishes the new durable point. Appends that arrive during
//! the sync are covered by the next one.
//!
//! If a sync fails, the records past the last durable point are in doubt:
//! the leader cuts the file back to that point (the chain restarts from the
//! durable head) and every caller still waiting on a cut record gets an
//! error, so nothing is issued on a record that may not survive a crash.

use std::fs::File;
use std::io;
use std::sync::{Condvar, Mutex, MutexGuard};

use super::AuditHead;

/// Where a written record ends: it is durable once the durable point of
/// the same epoch reaches `end`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Mark {
    /// Bumped each time the file is cut back after a failed sync.
    pub epoch: u64,
    /// File length just after the record.
    pub end: u64,
}

/// The last durable point of the log.
pub(super) struct Synced {
    pub epoch: u64,
    pub len: u64,
    /// The head at `len` (`None`: the log is empty there).
    pub head: Option<AuditHead>,
    syncing: bool,
    /// Why the last epoch ended, for the callers it cut.
    pub cut: Option<(io::ErrorKind, String, bool)>,
}

/// The durable point, and a file descriptor to sync with.
pub(super) struct Durable {
    file: File,
    state: Mutex<Synced>,
    wake: Condvar,
    #[cfg(test)]
    pub fail_next_sync: std::sync::atomic::AtomicBool,
}

/// What the leader saw written before it synced.
pub(super) struct Written {
    pub mark: Mark,
    pub head: Option<AuditHead>,
}

impl Durable {
    /// Starts at an existing (already durable) end of the log.
    pub fn new(file: File, len: u64, head: Option<AuditHead>) -> Self {
        Durable {
            file,
            state: Mutex::new(Synced {
                epoch: 0,
                len,
                head,
                syncing: false,
                cut: None,
            }),
            wake: Condvar::new(),
            #[cfg(test)]
            fail_next_sync: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Synced> {
        // Only plain fields live here; a panicking holder left them whole.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The head of the last durable record.
    pub fn head(&self) -> Option<AuditHead> {
        self.lock().head.clone()
    }

    /// Blocks until `mark` is durable (`Ok`) or was cut after a failed sync
    /// (`Err` with the error kind, message and whether the cut succeeded).
    /// `written` reads how far the chain has been written (under the chain
    /// lock); `cut` cuts the chain back to the given durable point and
    /// returns the new epoch and whether the file was cut cleanly.
    pub fn wait(
        &self,
        mark: Mark,
        written: impl Fn() -> Written,
        cut: impl Fn(&Synced, &io::Error) -> (u64, bool),
    ) -> Result<(), (io::ErrorKind, String, bool)> {
        let mut s = self.lock();
        loop {
            if s.epoch != mark.epoch {
                return Err(s.cut.clone().unwrap_or((
                    io::ErrorKind::Other,
                    "the log was cut back after a failed sync".into(),
                    true,
                )));
            }
            if s.len >= mark.end {
                return Ok(());
            }
            if s.syncing {
                s = self.wake.wait(s).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            s.syncing = true;
            drop(s);
            let w = written();
            let result = self.sync();
            s = match result {
                Ok(()) => {
                    let mut s = self.lock();
                    if s.epoch == w.mark.epoch && w.mark.end > s.len {
                        s.len = w.mark.end;
                        s.head = w.head;
                    }
                    s
                }
                Err(e) => {
                    // `cut` takes the chain lock, then ours: the same order
                    // as appenders (chain, released, then ours).
                    let snapshot = {
                        let s = self.lock();
                        Synced {
                            epoch: s.epoch,
                            len: s.len,
                            head: s.head.clone(),
                            syncing: true,
                            cut: None,
                        }
                    };
                    let (epoch, clean) = cut(&snapshot, &e);
                    let mut s = self.lock();
                    s.epoch = epoch;
                    s.cut = Some((e.kind(), e.to_string(), clean));
                    s
                }
            };
            s.syncing = false;
            self.wake.notify_all();
        }
    }

    fn sync(&self) -> io::Result<()> {
        #[cfg(test)]
        if self
            .fail_next_sync
            .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            return Err(io::Error::other("injected sync failure"));
        }
        self.file.sync_data()
    }
}
