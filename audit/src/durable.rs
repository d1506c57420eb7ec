//! Group commit: one `fdatasync` makes every record written before it
//! durable, so concurrent appends share syncs instead of queueing for one
//! each. A caller still returns only once its own record is on disk.
//!
//! Appenders chain their records under the chain lock, sign and write
//! them after releasing it, then wait here for durability. Whoever finds no
//! sync running becomes the leader: it notes how far the file was written,
//! syncs the file (a shared handle) without holding the chain
//! lock, and publishes the new durable point. Appends that arrive during
//! the sync are covered by the next one.
//!
//! Waiting comes in two forms: a thread blocks on a condition variable
//! ([`Durable::wait`]), or a task awaits a change of the durable point
//! ([`Durable::step`]) and, when it must lead, runs the sync on a blocking
//! thread, so hundreds of concurrent appends from async callers hold no
//! thread while they wait.
//!
//! If a sync fails, the records past the last durable point are in doubt:
//! the leader cuts the file back to that point (the chain restarts from the
//! durable head) and every caller still waiting on a cut record gets an
//! error, so nothing is issued on a record that may not survive a crash.

use std::fs::File;
use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use super::AuditHead;

/// Where a written record ends: it is durable once the durable point of
/// the same epoch reaches `end`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Mark {
    /// Bumped each time the file is cut back after a failed write or sync.
    pub epoch: u64,
    /// File length just after the record.
    pub end: u64,
}

/// The last durable point of the log.
struct Synced {
    epoch: u64,
    len: u64,
    /// The head at `len` (`None`: the log is empty there).
    head: Option<AuditHead>,
    syncing: bool,
    /// Why the last epoch ended, for the callers it cut.
    cut: Option<Cut>,
    /// Where the last epoch was cut: its records that end there or before
    /// are still in the log and settle as this epoch's do.
    kept: u64,
}

/// Why a record was not made durable: the error kind, its message, and
/// whether the file was cut back cleanly.
pub(super) type Cut = (io::ErrorKind, String, bool);

/// What an async waiter does next ([`Durable::step`]).
pub(super) enum Step {
    /// The record is durable, or was cut.
    Settled(Result<(), Cut>),
    /// A sync is running: await this for the next change.
    Wait(tokio::sync::watch::Receiver<()>),
    /// No sync is running: the caller leads one ([`Durable::lead`]).
    Lead,
}

/// The durable point of the log.
pub(super) struct Durable {
    state: Mutex<Synced>,
    wake: Condvar,
    /// Bumped with every change of the durable point, for async waiters.
    changed: tokio::sync::watch::Sender<()>,
    /// Held across every sync of the log's file; whether one failed since
    /// the last cut-back. A file's write-back error is reported to one
    /// `fsync` of its open file only: two at once could both miss it, so
    /// they take turns, and a failure stays known until the log is cut.
    sync_failed: Mutex<bool>,
    #[cfg(test)]
    pub fail_next_sync: std::sync::atomic::AtomicBool,
    /// Group syncs run.
    #[cfg(test)]
    pub syncs: std::sync::atomic::AtomicU64,
}

/// What the leader saw written before it synced.
pub(super) struct Written {
    pub mark: Mark,
    pub head: Option<AuditHead>,
    /// The file the records up to `mark` went to last (earlier segments
    /// were synced when they were sealed).
    pub file: Arc<File>,
}

impl Durable {
    /// Starts at an existing (already durable) end of the log.
    pub fn new(len: u64, head: Option<AuditHead>) -> Self {
        Durable {
            state: Mutex::new(Synced {
                epoch: 0,
                len,
                head,
                syncing: false,
                cut: None,
                kept: 0,
            }),
            wake: Condvar::new(),
            changed: tokio::sync::watch::Sender::new(()),
            sync_failed: Mutex::new(false),
            #[cfg(test)]
            fail_next_sync: std::sync::atomic::AtomicBool::new(false),
            #[cfg(test)]
            syncs: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Synced> {
        // Only plain fields live here; a panicking holder left them whole.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Publishes a durable point reached outside the group sync (a
    /// segment synced as it is sealed).
    pub fn advance(&self, epoch: u64, len: u64, head: AuditHead) {
        let mut s = self.lock();
        if s.epoch == epoch && len > s.len {
            s.len = len;
            s.head = Some(head);
            self.notify();
        }
    }

    /// The file was cut back to `kept` and epoch `epoch` began: records
    /// of the epoch before that end past `kept` are refused with `cut`
    /// (and any of an older epoch still waiting).
    pub fn cut(&self, epoch: u64, kept: u64, cut: Cut) {
        if self.lock().begin_epoch(epoch, kept, cut) {
            self.notify();
        }
    }

    /// Starts cutting the file back to the durable point after a failed
    /// sync: epoch `epoch` begins now, before the file is cut, so a sync
    /// that succeeds meanwhile publishes nothing of the epoch being cut.
    /// Returns the point to cut back to; [`Durable::finish_cut`] follows.
    pub fn begin_cut(&self, epoch: u64, error: &io::Error) -> (u64, Option<AuditHead>) {
        let mut s = self.lock();
        let kept = s.len;
        s.begin_epoch(epoch, kept, (error.kind(), error.to_string(), true));
        let point = (s.len, s.head.clone());
        drop(s);
        // What the failed sync lost lies past the durable point, and is
        // cut now: the cut's own sync, and later ones, judge what follows.
        *self.sync_failed.lock().unwrap_or_else(|p| p.into_inner()) = false;
        point
    }

    /// The cut begun by [`Durable::begin_cut`] is done (`clean`: the file
    /// was cut back): the callers it refused are told.
    pub fn finish_cut(&self, clean: bool) {
        let mut s = self.lock();
        if let Some(cut) = s.cut.as_mut() {
            cut.2 = clean;
        }
        drop(s);
        self.notify();
    }

    /// As if another sync of the file had just failed.
    #[cfg(test)]
    pub fn sync_failed_elsewhere(&self) {
        *self.sync_failed.lock().unwrap_or_else(|p| p.into_inner()) = true;
    }

    /// Syncs the log's file, in turn with every other sync of it; fails
    /// while an earlier sync's failure has not been cut back.
    pub fn sync_in_turn(&self, file: &File) -> io::Result<()> {
        let mut failed = self.sync_failed.lock().unwrap_or_else(|p| p.into_inner());
        let result = file.sync_data();
        if result.is_err() {
            *failed = true;
        } else if *failed {
            return Err(io::Error::other(
                "an earlier sync of the audit log failed and the log is not cut back yet",
            ));
        }
        result
    }

    /// Why the last epoch ended, if one did.
    pub fn last_cut(&self) -> Option<Cut> {
        self.lock().cut.clone()
    }

    /// Wakes every waiter to look again (a record landed for them).
    pub fn nudge(&self) {
        self.notify();
    }

    /// A receiver that sees every change of the durable point from now on.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<()> {
        self.changed.subscribe()
    }

    /// Wakes every waiter, threads and tasks.
    fn notify(&self) {
        self.wake.notify_all();
        self.changed.send_replace(());
    }

    /// The head of the last durable record.
    pub fn head(&self) -> Option<AuditHead> {
        self.lock().head.clone()
    }

    /// Blocks until `mark` is durable (`Ok`) or was cut after a failed sync
    /// (`Err` with the error kind, message and whether the cut succeeded).
    /// `written` reads how far the chain has been written (under the chain
    /// lock); `cut` cuts the chain back to the durable point after a
    /// failed sync ([`Durable::begin_cut`], [`Durable::finish_cut`]).
    pub fn wait(
        &self,
        mark: Mark,
        written: impl Fn() -> Written,
        cut: impl Fn(&io::Error),
    ) -> Result<(), Cut> {
        let mut s = self.lock();
        loop {
            if let Some(settled) = settled(&s, mark) {
                return settled;
            }
            if s.syncing {
                s = self.wake.wait(s).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            s.syncing = true;
            drop(s);
            self.lead(&written, &cut);
            s = self.lock();
        }
    }

    /// [`Durable::wait`] for a task: settled, wait for a change, or lead.
    /// The receiver is taken under the lock, so a change made after the
    /// check is never missed.
    pub fn step(&self, mark: Mark) -> Step {
        let mut s = self.lock();
        if let Some(settled) = settled(&s, mark) {
            return Step::Settled(settled);
        }
        if s.syncing {
            return Step::Wait(self.changed.subscribe());
        }
        s.syncing = true;
        Step::Lead
    }

    /// Syncs what was written and publishes the new durable point (or cuts
    /// the chain back after a failed sync): the leader's work, run by the
    /// caller that found no sync running.
    pub fn lead(&self, written: impl Fn() -> Written, cut: impl Fn(&io::Error)) {
        let w = written();
        let result = self.sync(&w.file);
        let mut s = match result {
            Ok(()) => {
                let mut s = self.lock();
                if s.epoch == w.mark.epoch && w.mark.end > s.len {
                    s.len = w.mark.end;
                    s.head = w.head;
                }
                s
            }
            Err(e) => {
                // `cut` takes the landing's lock, then ours: the order of
                // every path that takes both.
                cut(&e);
                self.lock()
            }
        };
        s.syncing = false;
        self.notify();
    }

    /// A leader that could not run ([`Step::Lead`] taken, its thread lost):
    /// the next waiter leads instead.
    pub fn give_up_lead(&self) {
        self.lock().syncing = false;
        self.notify();
    }

    fn sync(&self, file: &File) -> io::Result<()> {
        #[cfg(test)]
        self.syncs
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        #[cfg(test)]
        if self
            .fail_next_sync
            .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            *self.sync_failed.lock().unwrap_or_else(|p| p.into_inner()) = true;
            return Err(io::Error::other("injected sync failure"));
        }
        self.sync_in_turn(file)
    }
}

impl Synced {
    /// Epoch `epoch` begins, if it is newer: records of the one before
    /// that end at or before `kept` remain; `cut` says why the rest went.
    /// Whether it began.
    fn begin_epoch(&mut self, epoch: u64, kept: u64, cut: Cut) -> bool {
        let newer = epoch > self.epoch;
        if newer {
            self.epoch = epoch;
            self.kept = kept;
            self.cut = Some(cut);
        }
        newer
    }
}

/// Whether `mark` is durable (`Ok`), cut (`Err`), or still pending (`None`).
fn settled(s: &Synced, mark: Mark) -> Option<Result<(), Cut>> {
    match mark.epoch.cmp(&s.epoch) {
        // Kept by the last cut: settles as this epoch's records do.
        std::cmp::Ordering::Less if s.epoch - 1 == mark.epoch && mark.end <= s.kept => {
            (s.len >= mark.end).then_some(Ok(()))
        }
        std::cmp::Ordering::Less => Some(Err(s.cut.clone().unwrap_or((
            io::ErrorKind::Other,
            "the log was cut back after a failed sync".into(),
            true,
        )))),
        // Not reached (a cut's epoch begins here before any append can
        // reserve in it); pending is the safe answer.
        std::cmp::Ordering::Greater => None,
        std::cmp::Ordering::Equal => (s.len >= mark.end).then_some(Ok(())),
    }
}
