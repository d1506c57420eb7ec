//! Appending to the log: one line per record, synced before append returns
//! (one sync for many concurrent appends: [`super::durable`]).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use super::durable::{Cut, Durable, Mark, Step, Written};
use super::reader::RawLine;
use super::segments::{self, Rotation};
use super::signer::sync_parent;
use super::sink::Sink;
use super::{
    AuditError, AuditEvent, AuditHead, AuditRecord, AuditSigner, GENESIS_HASH, MAX_LINE_BYTES,
    ProblemKind,
};
use crate::timefmt::now_unix_ms;

/// The append-only audit log. Records are chained under a mutex and the
/// file is locked (`flock`) against a second writer process, so the chain
/// cannot fork. Share it as `Arc<AuditLog>`: concurrent appends share
/// their `fdatasync`s (group commit).
///
/// An append takes the chain lock only to number and hash its records and
/// reserve their place in the file; it signs them (an Ed25519 signature is
/// most of a record's cost) after releasing it, and the lines then land in
/// the file in chain order ([`Landing`]). A signature's length is fixed, so
/// a line's place is known before it is signed.
pub struct AuditLog {
    path: PathBuf,
    signer: AuditSigner,
    rotation: Rotation,
    sink: Option<Sink>,
    tail: Mutex<Tail>,
    landing: Mutex<Landing>,
    /// Notified, when a thread sleeps on it, as lines land or the file is
    /// cut back: a seal waits for every reserved line, a blocking append
    /// for its own.
    landed: Condvar,
    /// How far lines have landed, for async appends to read without the
    /// landing's lock.
    landed_at: LandedAt,
    durable: Durable,
    /// Run once by the next append after it reserved its lines and
    /// released the chain lock, before signing them.
    #[cfg(test)]
    after_reserving: Mutex<Option<Box<dyn FnOnce() + Send>>>,
    #[cfg(test)]
    after_landing: Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

/// Where the chain stands: the last record numbered and hashed, which may
/// not have landed in the file yet.
struct Tail {
    seq: u64,
    hash: String,
    /// Length of the whole log (every segment) after the last reserved
    /// line. Positions are counted across segments so that durable points
    /// stay ordered when one is sealed.
    len: u64,
    /// Where the active segment starts in that count.
    base: u64,
    /// Seq and time of the active segment's first record (`None`: empty).
    first: Option<(u64, i64)>,
    /// After a failed sealing, the next attempt waits until then (Unix ms).
    seal_retry_ms: i64,
    /// The landing's epoch this chain continues; behind it, the file was
    /// cut back and the chain restarts from the landing's head.
    epoch: u64,
}

/// Lines numbered and signed, landing in the file in chain order: whoever
/// deposits the line the file's end waits for writes it and every line
/// after it already deposited, so the file is always whole lines of an
/// unbroken chain (and a partial last line only while one is written).
struct Landing {
    /// The active segment (shared with the group sync, which syncs the file
    /// the records it covers were written to).
    file: Arc<File>,
    /// Bumped each time the file is cut back ([`Mark::epoch`]): lines
    /// reserved in an earlier epoch are refused, their place is gone.
    epoch: u64,
    /// Where the lines written so far end (the count of [`Tail::len`]):
    /// where a failed write is cut back to.
    end: u64,
    /// Where the active segment starts in that count.
    base: u64,
    /// The last record written (`None`: the log is empty).
    head: Option<AuditHead>,
    /// Signed lines waiting for the ones before them, by where they start.
    waiting: BTreeMap<u64, Signed>,
    /// A write failed and could not be undone: refuse everything.
    broken: bool,
    /// Threads waiting on [`AuditLog::landed`] (notified only if any).
    sleepers: usize,
    #[cfg(test)]
    fault: Option<Fault>,
}

/// A line ready to land.
struct Signed {
    /// The whole line, newline included.
    line: Vec<u8>,
    /// Where it ends.
    end: u64,
    /// Its record's place in the chain.
    head: AuditHead,
}

/// Where the lines landed so far end, published outside the landing's
/// lock, which a segment's seal holds across its syncs and renames: an
/// async append waiting for its lines to land reads this on its worker.
/// Written under that lock, the end before the epoch, and read the epoch
/// first: a reader sees at least the end published with the epoch it
/// read. Within an epoch the end only grows; an end read after a cut
/// began belongs to the new epoch, where the old epoch's lines count as
/// reached, as they do under the lock (the durable wait then reports the
/// cut), and a smaller one only makes the reader wait for the cut's
/// notification.
struct LandedAt {
    epoch: AtomicU64,
    end: AtomicU64,
}

impl LandedAt {
    fn publish(&self, landing: &Landing) {
        self.end.store(landing.end, Ordering::Release);
        self.epoch.store(landing.epoch, Ordering::Release);
    }

    /// Whether the lines up to `mark` have landed (or were cut: the
    /// durable wait then says so).
    fn reached(&self, mark: Mark) -> bool {
        let epoch = self.epoch.load(Ordering::Acquire);
        epoch != mark.epoch || self.end.load(Ordering::Acquire) >= mark.end
    }
}

/// Lines reserved under the chain lock and not landed yet. Dropped
/// without landing (a panic while signing), it cuts the log back to what
/// landed, so later lines never wait for these.
struct Reserved<'a> {
    log: &'a AuditLog,
    epoch: u64,
    landed: bool,
}

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        if !self.landed {
            self.log.abandon(self.epoch);
        }
    }
}

/// The length of every Ed25519 signature in hex: a line's length is
/// known before it is signed.
const SIGNATURE_HEX_LEN: usize = 128;

/// Failures the tests inject into the next append.
#[cfg(test)]
#[derive(Clone, Copy, Debug)]
pub(super) enum Fault {
    /// Write this many bytes of the line, then fail (like ENOSPC).
    PartialWrite(usize),
    /// The same, and the rollback fails too.
    PartialWriteNoRollback(usize),
}

/// An async caller's turn to lead a group sync, run on a blocking thread.
/// Dropped without having led (never run, or a panic), it gives the
/// leadership back.
struct LeadTurn {
    log: Arc<AuditLog>,
    done: bool,
}

impl LeadTurn {
    fn lead(mut self) {
        let log = &self.log;
        log.durable.lead(|| log.written(), |e| log.cut_back(e));
        self.done = true;
    }
}

impl Drop for LeadTurn {
    fn drop(&mut self) {
        if !self.done {
            self.log.durable.give_up_lead();
        }
    }
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("path", &self.path)
            .field("signer", &self.signer)
            .finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Opens the log, creating it with mode 0600 if missing. An existing log
    /// must end in a complete record, correctly hashed and signed by
    /// `signer`; otherwise opening is refused (see the module docs for the
    /// operator's fix) so that nothing is issued on a log in doubt.
    pub fn open(path: impl AsRef<Path>, signer: AuditSigner) -> Result<Self, AuditError> {
        Self::open_rotating(path, signer, Rotation::default())
    }

    /// [`AuditLog::open`], sealing segments by `rotation` (see
    /// [`segments`](crate::segments)). When the active file is empty (just
    /// sealed), the chain continues from the newest sealed segment, whose
    /// last record is checked as the active file's would be.
    pub fn open_rotating(
        path: impl AsRef<Path>,
        signer: AuditSigner,
        rotation: Rotation,
    ) -> Result<Self, AuditError> {
        let path = path.as_ref().to_path_buf();
        let io_err = |op: &'static str| {
            let path = path.clone();
            move |source: io::Error| AuditError::Io { path, op, source }
        };
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&path)
            .map_err(io_err("open"))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(AuditError::Locked { path }),
            Err(TryLockError::Error(e)) => return Err(io_err("lock")(e)),
        }
        segments::undo_interrupted_seal(&path).map_err(io_err("finish sealing a segment of"))?;
        sync_parent(&path).map_err(io_err("sync the directory of"))?;
        let meta = file.metadata().map_err(io_err("stat"))?;
        if !meta.is_file() {
            return Err(io_err("use")(io::Error::other("not a regular file")));
        }
        if meta.permissions().mode() & 0o077 != 0 {
            let mode = format!("{:o}", meta.permissions().mode() & 0o777);
            tracing::warn!(
                path = %path.display(),
                mode,
                "audit log is readable by group or others; chmod 600 recommended"
            );
        }
        let len = meta.len();
        let (seq, hash) = if len > 0 {
            let last = read_last_line(&file, len).map_err(io_err("read the end of"))?;
            let rec = check_tail(&path, &signer, &file, last)?;
            (rec.seq, rec.hash)
        } else if let Some(sealed) = segments::last_sealed(&path).map_err(io_err("list"))? {
            let io_err = |op: &'static str| {
                let path = sealed.clone();
                move |source: io::Error| AuditError::Io { path, op, source }
            };
            let prev = File::open(&sealed).map_err(io_err("open"))?;
            let prev_len = prev.metadata().map_err(io_err("stat"))?.len();
            if prev_len == 0 {
                return Err(io_err("use")(io::Error::other("an empty sealed segment")));
            }
            let last = read_last_line(&prev, prev_len).map_err(io_err("read the end of"))?;
            let rec = check_tail(&sealed, &signer, &prev, last)?;
            (rec.seq, rec.hash)
        } else {
            (0, GENESIS_HASH.to_string())
        };
        let first = segments::first_record(&file);
        tracing::info!(path = %path.display(), seq, key_id = signer.key_id(), "audit log opened");
        file.sync_data().map_err(io_err("sync"))?;
        let head = (seq > 0).then(|| AuditHead {
            seq,
            hash: hash.clone(),
        });
        Ok(AuditLog {
            path,
            signer,
            rotation,
            sink: None,
            tail: Mutex::new(Tail {
                seq,
                hash,
                len,
                base: 0,
                first,
                seal_retry_ms: 0,
                epoch: 0,
            }),
            landing: Mutex::new(Landing {
                file: Arc::new(file),
                epoch: 0,
                end: len,
                base: 0,
                head: head.clone(),
                waiting: BTreeMap::new(),
                broken: false,
                sleepers: 0,
                #[cfg(test)]
                fault: None,
            }),
            landed: Condvar::new(),
            landed_at: LandedAt {
                epoch: AtomicU64::new(0),
                end: AtomicU64::new(len),
            },
            durable: Durable::new(len, head),
            #[cfg(test)]
            after_reserving: Mutex::new(None),
            #[cfg(test)]
            after_landing: Mutex::new(None),
        })
    }

    /// Also sends every record, once durable, to `sink` (best effort: the
    /// file stays the record; see [`Sink`]).
    pub fn with_sink(mut self, sink: Sink) -> Self {
        self.sink = Some(sink);
        self
    }

    /// Records `event` and returns only once it is on disk (written and
    /// `fdatasync`ed). On error nothing was recorded: the caller must not
    /// issue. Store the returned record's [`AuditRecord::head`] so a cut
    /// log end can be detected later.
    pub fn append(&self, event: &AuditEvent) -> Result<AuditRecord, AuditError> {
        let mut records = self.append_all(std::slice::from_ref(event))?;
        records
            .pop()
            .ok_or_else(|| AuditError::InvalidEvent("no event".into()))
    }

    /// Records `events` in order, one after another in the chain, and
    /// returns once all are on disk (one wait for the lot). On error the
    /// caller must not issue; records written before the failing one may
    /// remain in the log (as after a crash between two appends).
    pub fn append_all(&self, events: &[AuditEvent]) -> Result<Vec<AuditRecord>, AuditError> {
        for event in events {
            event.check()?;
        }
        let Wrote {
            records,
            lines,
            mark,
            landed,
        } = self.write_all(events)?;
        let Some(first) = records.first().map(|r| r.seq) else {
            return Ok(records);
        };
        if !landed {
            self.wait_landed(mark)?;
        }
        self.durable
            .wait(mark, || self.written(), |e| self.cut_back(e))
            .map_err(|cut| self.not_durable(first, cut))?;
        self.send_copies(&records, &lines);
        Ok(records)
    }

    /// [`AuditLog::append_all`] for async callers: the records are sealed
    /// and written on the caller's worker (on a blocking thread when that
    /// could seal a segment or the chain lock is busy), then the caller
    /// awaits their sync without holding a thread (one caller leads each
    /// sync, on a blocking thread). Many concurrent appends thus cost a
    /// few threads, not one each, and their wake-ups are task wake-ups.
    /// Needs a Tokio runtime.
    /// Do not also call the blocking [`AuditLog::append_all`] from that
    /// runtime's blocking threads: enough of them waiting there could keep
    /// a leader's sync from ever getting a thread. Nor from its async
    /// workers: a leader yields before its sync starts, and a worker
    /// blocked waiting for that sync may be the one that would resume it.
    pub async fn append_all_durably(
        self: &Arc<Self>,
        events: Vec<AuditEvent>,
    ) -> Result<Vec<AuditRecord>, AuditError> {
        for event in &events {
            event.check()?;
        }
        // Chaining records takes a few microseconds under a short lock, and
        // signing and writing them tens more after it: less than handing
        // them to a blocking thread and back, which was the larger part of
        // an append's cost. A worker never waits for the chain lock, though:
        // it may be held across a segment's seal (syncs and renames), so a
        // held lock, or a write that could seal, goes to a blocking thread.
        // (A write that fails here is cut back, and synced, right here: the
        // disk is failing and the caller is refused.)
        let inline = match self.tail.try_lock() {
            Ok(tail) if !self.may_seal(&tail, events.len()) => {
                Some(self.write_locked(tail, &events))
            }
            Ok(_) | Err(std::sync::TryLockError::WouldBlock) => None,
            // A panic while appending may have left half a line: refuse.
            Err(std::sync::TryLockError::Poisoned(_)) => {
                return Err(self.broken());
            }
        };
        let Wrote {
            records,
            lines,
            mark,
            landed,
        } = match inline {
            Some(written) => written?,
            None => {
                let log = Arc::clone(self);
                tokio::task::spawn_blocking(move || log.write_all(&events))
                    .await
                    .map_err(|e| self.lost_thread("append", e))??
            }
        };
        let Some(first) = records.first().map(|r| r.seq) else {
            return Ok(records);
        };
        // Lines queued behind one still being signed (on another thread)
        // land with it: wait for that rather than lead a sync that cannot
        // cover them. Whoever lands them nudges the waiters. The check
        // never takes the landing's lock: a segment's seal, which may start
        // as soon as the lines land, holds it across its syncs, and this
        // runs on an async worker.
        if !landed {
            loop {
                let mut changed = self.durable.subscribe();
                // A panic under the landing's lock may have left half a
                // line (and lines that will never land): refuse, as a
                // blocking append would.
                if self.landing.is_poisoned() {
                    return Err(self.broken());
                }
                if self.landed_at.reached(mark) {
                    break;
                }
                let _ = changed.changed().await;
            }
        }
        loop {
            match self.durable.step(mark) {
                Step::Settled(settled) => {
                    settled.map_err(|cut| self.not_durable(first, cut))?;
                    break;
                }
                Step::Wait(mut changed) => {
                    // The sender lives as long as the log this holds.
                    let _ = changed.changed().await;
                }
                Step::Lead => {
                    // The turn hands leadership back if the sync never runs
                    // (this caller gives up below, the runtime shutting down
                    // drops a queued task) or panics, so no later append
                    // waits for it.
                    let turn = LeadTurn {
                        log: Arc::clone(self),
                        done: false,
                    };
                    // Appends already runnable on this worker (requests
                    // read in the same wake-up) write theirs first and share
                    // this sync instead of waiting for the next one: under
                    // load, fewer and larger syncs and fewer thread
                    // wake-ups. Alone, it costs one trip through the
                    // scheduler.
                    tokio::task::yield_now().await;
                    let _ = tokio::task::spawn_blocking(move || turn.lead()).await;
                }
            }
        }
        if self.sink.is_some() {
            // A sink may block (a full pipe, a busy syslog socket): off the
            // async workers, and awaited as before, so copies keep their
            // order and a slow sink slows its callers instead of piling up.
            let (log, copies) = (Arc::clone(self), records.clone());
            let _ = tokio::task::spawn_blocking(move || log.send_copies(&copies, &lines)).await;
        }
        Ok(records)
    }

    /// Whether writing `n` more records after `tail` could seal the active
    /// segment: lines of the largest size allowed, a second from now, and
    /// an empty segment counted as started now.
    fn may_seal(&self, tail: &Tail, n: usize) -> bool {
        let soon_ms = now_unix_ms().saturating_add(1_000);
        soon_ms >= tail.seal_retry_ms
            && self.rotation.due(
                tail.len - tail.base,
                Some(tail.first.map_or(soon_ms, |(_, ms)| ms)),
                MAX_LINE_BYTES.saturating_mul(n),
                soon_ms,
            )
    }

    /// Copies durable records to the sink, if one is set.
    fn send_copies(&self, records: &[AuditRecord], lines: &[Vec<u8>]) {
        if let Some(sink) = &self.sink {
            for (record, line) in records.iter().zip(lines) {
                sink.send(record, line);
            }
        }
    }

    /// How far the chain has landed in the file, for the group sync.
    fn written(&self) -> Written {
        let landing = self.landing.lock().unwrap_or_else(|p| p.into_inner());
        Written {
            mark: Mark {
                epoch: landing.epoch,
                end: landing.end,
            },
            head: landing.head.clone(),
            file: Arc::clone(&landing.file),
        }
    }

    /// Cuts the chain back to its durable point after a sync failed with
    /// `e`: the group sync's answer to a failure.
    fn cut_back(&self, e: &io::Error) {
        let mut landing = self.landing.lock().unwrap_or_else(|p| p.into_inner());
        self.cut_back_locked(&mut landing, e);
    }

    /// [`AuditLog::cut_back`] with the landing held. The durable point is
    /// taken here, not where the failed sync began: a seal may have moved
    /// it since (and begun a new segment there); and the new epoch begins
    /// before the file is cut, so no sync publishes what is cut.
    fn cut_back_locked(&self, landing: &mut Landing, e: &io::Error) {
        let (len, head) = self.durable.begin_cut(landing.epoch + 1, e);
        tracing::error!(error = %e, kept = head.as_ref().map_or(0, |h| h.seq),
            "audit log sync failed; cutting it back to its last durable record");
        let clean = landing.cut_back_to(len, head, &self.durable);
        // Published before the waiters are told, so they see the cut.
        self.announce_landed(landing);
        self.durable.finish_cut(clean);
    }

    /// Publishes where the landed lines end now (after lines landed or the
    /// file was cut back) and wakes the threads waiting for them, if any.
    fn announce_landed(&self, landing: &Landing) {
        self.landed_at.publish(landing);
        if landing.sleepers > 0 {
            self.landed.notify_all();
        }
    }

    /// Blocks until the lines up to `mark` have landed or were cut.
    fn wait_landed(&self, mark: Mark) -> Result<(), AuditError> {
        let mut landing = self.landing()?;
        while !landing.reached(mark) {
            landing.sleepers += 1;
            landing = self.landed.wait(landing).map_err(|_| self.broken())?;
            landing.sleepers -= 1;
            if landing.broken {
                return Err(self.broken());
            }
        }
        Ok(())
    }

    /// The error for records from `first` on that a failed sync cut.
    fn not_durable(&self, first: u64, (kind, message, rolled_back): Cut) -> AuditError {
        let error = AuditError::Write {
            path: self.path.clone(),
            seq: first,
            rolled_back,
            source: io::Error::new(kind, message),
        };
        tracing::error!(%error, "audit record not durable; the caller must refuse");
        error
    }

    /// The error for a blocking task that never finished.
    fn lost_thread(&self, op: &'static str, e: tokio::task::JoinError) -> AuditError {
        AuditError::Io {
            path: self.path.clone(),
            op,
            source: io::Error::other(e.to_string()),
        }
    }

    /// Seals and writes `events` under the chain lock (no sync).
    fn write_all(&self, events: &[AuditEvent]) -> Result<Wrote, AuditError> {
        self.write_locked(self.lock()?, events)
    }

    /// [`AuditLog::write_all`] under the chain lock already taken: numbers
    /// and hashes the records and reserves their lines under it, signs them
    /// after releasing it, then lands them.
    fn write_locked(
        &self,
        mut tail: MutexGuard<'_, Tail>,
        events: &[AuditEvent],
    ) -> Result<Wrote, AuditError> {
        {
            let landing = self.landing()?;
            tail.catch_up(&landing);
        }
        let epoch = tail.epoch;
        let mut sealed = Vec::with_capacity(events.len());
        let (mut seq, mut prev_hash) = (tail.seq, tail.hash.clone());
        for event in events {
            // Each record's hash covers its predecessor's, so hashing is
            // serial by nature and stays here (a few microseconds); the
            // signature over that hash does not.
            seq = seq
                .checked_add(1)
                .ok_or_else(|| AuditError::InvalidEvent("sequence numbers exhausted".into()))?;
            let mut record =
                AuditRecord::unsealed(event, seq, now_unix_ms(), &prev_hash, self.signer.key_id());
            let digest = record.content_hash()?;
            record.hash = hex::encode(digest);
            record.signature = "0".repeat(SIGNATURE_HEX_LEN);
            let mut line =
                serde_json::to_vec(&record).map_err(|source| AuditError::Encode { seq, source })?;
            line.push(b'\n');
            if line.len() > MAX_LINE_BYTES {
                return Err(AuditError::TooLarge {
                    seq,
                    len: line.len(),
                    max: MAX_LINE_BYTES,
                });
            }
            prev_hash.clone_from(&record.hash);
            sealed.push((record, digest, line));
        }
        let Some((first, _, _)) = sealed.first() else {
            let mark = Mark {
                epoch,
                end: tail.len,
            };
            return Ok(Wrote {
                records: Vec::new(),
                lines: Vec::new(),
                mark,
                landed: true,
            });
        };
        let (first_seq, first_ms) = (first.seq, first.unix_ms);
        let batch_len = sealed.iter().map(|(_, _, line)| line.len()).sum();
        self.seal_if_due(&mut tail, batch_len, first_ms)?;
        if tail.epoch != epoch {
            // Cut back while the seal waited: these were chained to lines
            // that are gone.
            return Err(self.cut_before_landing(first_seq));
        }
        let mut places = Vec::with_capacity(sealed.len());
        for (record, _, line) in &sealed {
            let start = tail.len;
            tail.len += line.len() as u64;
            places.push((start, tail.len));
            tail.seq = record.seq;
            tail.hash.clone_from(&record.hash);
        }
        tail.first.get_or_insert((first_seq, first_ms));
        let mark = Mark {
            epoch,
            end: tail.len,
        };
        let mut reserved = Reserved {
            log: self,
            epoch,
            landed: false,
        };
        drop(tail);
        #[cfg(test)]
        run_hook(&self.after_reserving);

        let mut records = Vec::with_capacity(sealed.len());
        let mut lines = Vec::with_capacity(if self.sink.is_some() { sealed.len() } else { 0 });
        let mut signed = Vec::with_capacity(sealed.len());
        for ((mut record, digest, line), (start, end)) in sealed.into_iter().zip(places) {
            record.signature = self.signer.sign(&digest);
            let line = signed_line(&record, line)?;
            if self.sink.is_some() {
                lines.push(line[..line.len() - 1].to_vec());
            }
            let head = AuditHead {
                seq: record.seq,
                hash: record.hash.clone(),
            };
            signed.push((start, Signed { line, end, head }));
            records.push(record);
        }
        reserved.landed = true;
        let landed = self.land(mark, first_seq, signed)?;
        #[cfg(test)]
        run_hook(&self.after_landing);
        Ok(Wrote {
            records,
            lines,
            mark,
            landed,
        })
    }

    /// Deposits signed lines, ending at `mark`, and writes every line the
    /// file's end is waiting for, in order. Whether the deposited lines are
    /// in the file now (not if they wait for an earlier line still being
    /// signed).
    fn land(
        &self,
        mark: Mark,
        first_seq: u64,
        signed: Vec<(u64, Signed)>,
    ) -> Result<bool, AuditError> {
        let mut guard = self.landing()?;
        if guard.epoch != mark.epoch {
            drop(guard);
            return Err(self.cut_before_landing(first_seq));
        }
        let landing = &mut *guard;
        let own = signed.len();
        landing.waiting.extend(signed);
        let mut wrote = 0;
        while let Some(next) = landing.waiting.first_entry() {
            if *next.key() != landing.end {
                break;
            }
            let next = next.remove();
            if let Err(source) = landing.write_line(&next.line) {
                let rolled_back = self.cut_to_landed(landing, source.kind(), source.to_string());
                let error = AuditError::Write {
                    path: self.path.clone(),
                    seq: next.head.seq,
                    rolled_back,
                    source,
                };
                tracing::error!(%error, "audit record not written; the caller must refuse");
                return Err(error);
            }
            landing.end = next.end;
            landing.head = Some(next.head);
            wrote += 1;
        }
        if wrote > 0 {
            self.announce_landed(landing);
        }
        if wrote > own {
            // Lines of appends that deposited them before this one's
            // predecessor landed: their callers wait for a nudge.
            self.durable.nudge();
        }
        Ok(landing.reached(mark))
    }

    /// Lines reserved in `epoch` will never land (their reserver panicked):
    /// cut the log back to what landed so later lines do not wait for them.
    fn abandon(&self, epoch: u64) {
        let mut landing = self.landing.lock().unwrap_or_else(|p| p.into_inner());
        if landing.epoch != epoch {
            return;
        }
        let why = "an append was abandoned before its records were written";
        self.cut_to_landed(&mut landing, io::ErrorKind::Other, why.to_string());
    }

    /// Cuts the file back to the lines landed so far (what a failed or
    /// abandoned write left after them goes) and refuses every line not
    /// landed, telling their callers `why`; whether the cut was clean.
    fn cut_to_landed(&self, landing: &mut Landing, kind: io::ErrorKind, why: String) -> bool {
        let (end, head) = (landing.end, landing.head.clone());
        let clean = landing.cut_back_to(end, head, &self.durable);
        // Published before the waiters are told, so they see the cut.
        self.announce_landed(landing);
        self.durable.cut(landing.epoch, end, (kind, why, clean));
        clean
    }

    /// The error for records reserved before a cut-back that removed their
    /// predecessors.
    fn cut_before_landing(&self, seq: u64) -> AuditError {
        let (kind, why, rolled_back) = self.durable.last_cut().unwrap_or((
            io::ErrorKind::Other,
            "an earlier write or sync failed".into(),
            true,
        ));
        let error = AuditError::Write {
            path: self.path.clone(),
            seq,
            rolled_back,
            source: io::Error::new(
                kind,
                format!("the log was cut back before this record was written: {why}"),
            ),
        };
        tracing::error!(%error, "audit record not written; the caller must refuse");
        error
    }

    /// Seals the active segment when `rotation` says the next `line_len`
    /// bytes go into a new one. Every reserved line must have landed first:
    /// the old segment is synced, and that durable point published, so the
    /// group sync only ever needs the active file. A failed sealing is
    /// logged and retried a minute later; meanwhile records go on into the
    /// current segment.
    fn seal_if_due(&self, tail: &mut Tail, line_len: usize, now_ms: i64) -> Result<(), AuditError> {
        let Some((first_seq, first_ms)) = tail.first else {
            return Ok(());
        };
        if now_ms < tail.seal_retry_ms
            || !self
                .rotation
                .due(tail.len - tail.base, Some(first_ms), line_len, now_ms)
        {
            return Ok(());
        }
        // The lines reserved before this are being signed on other threads,
        // none of which needs the chain lock held here to land them.
        // (A broken or poisoned landing is not sealed: the caller refuses.)
        let mut landing = self.landing()?;
        loop {
            tail.catch_up(&landing);
            if landing.end >= tail.len {
                break;
            }
            landing.sleepers += 1;
            landing = self.landed.wait(landing).map_err(|_| self.broken())?;
            landing.sleepers -= 1;
            if landing.broken {
                return Err(self.broken());
            }
        }
        if tail.first.is_none() {
            return Ok(());
        }
        if let Err(e) = self.durable.sync_in_turn(&landing.file) {
            // As a failed group sync: what it covered may be lost (and the
            // file's error is reported once, so the next sync would not say).
            self.cut_back_locked(&mut landing, &e);
            tail.catch_up(&landing);
            return if landing.broken {
                Err(self.broken())
            } else {
                Ok(())
            };
        }
        let head = AuditHead {
            seq: tail.seq,
            hash: tail.hash.clone(),
        };
        self.durable.advance(landing.epoch, landing.end, head);
        let sealed = segments::seal(&self.path, first_seq);
        match sealed {
            Ok(file) => {
                tracing::info!(
                    path = %self.path.display(),
                    sealed = %segments::sealed_name(&self.path, first_seq).display(),
                    last_seq = tail.seq,
                    "audit log segment sealed"
                );
                landing.file = Arc::new(file);
                landing.base = landing.end;
                tail.base = tail.len;
                tail.first = None;
            }
            Err(error) => {
                tracing::error!(path = %self.path.display(), %error, "cannot seal the audit log segment; retrying in a minute");
                tail.seal_retry_ms = now_ms.saturating_add(60_000);
            }
        }
        Ok(())
    }

    /// The last durable record's place, `None` while the log is empty.
    pub fn head(&self) -> Option<AuditHead> {
        self.durable.head()
    }

    /// The log file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The signer, for its public key and key id.
    pub fn signer(&self) -> &AuditSigner {
        &self.signer
    }

    /// Runs `f` holding the chain lock, as a segment's seal holds it.
    #[cfg(test)]
    pub(super) fn with_chain_locked<R>(&self, f: impl FnOnce() -> R) -> R {
        let _tail = self.tail.lock().unwrap_or_else(|p| p.into_inner());
        f()
    }

    /// Runs `hook` in the next append, between reserving its lines
    /// (chain lock released) and signing them.
    #[cfg(test)]
    pub(super) fn after_reserving(&self, hook: impl FnOnce() + Send + 'static) {
        *self
            .after_reserving
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(Box::new(hook));
    }

    /// Runs `hook` in the next append, once its lines have landed.
    #[cfg(test)]
    pub(super) fn after_landing(&self, hook: impl FnOnce() + Send + 'static) {
        *self.after_landing.lock().unwrap_or_else(|p| p.into_inner()) = Some(Box::new(hook));
    }

    /// Runs `f` holding the landing's lock, as a segment's seal holds it
    /// across its syncs.
    #[cfg(test)]
    pub(super) fn with_landing_locked<R>(&self, f: impl FnOnce() -> R) -> R {
        let _landing = self.landing.lock().unwrap_or_else(|p| p.into_inner());
        f()
    }

    /// The last seq numbered (landed or not); 0 while the chain lock is
    /// held.
    #[cfg(test)]
    pub(super) fn chained_seq(&self) -> u64 {
        self.tail.try_lock().map_or(0, |tail| tail.seq)
    }

    #[cfg(test)]
    pub(super) fn inject(&self, fault: Fault) {
        self.landing.lock().unwrap_or_else(|p| p.into_inner()).fault = Some(fault);
    }

    /// Takes the lead of a sync and drops the turn unrun, as a runtime
    /// shutting down drops a queued task; whether the lead was taken.
    #[cfg(test)]
    pub(super) fn take_lead_and_drop_it(self: &Arc<Self>) -> bool {
        let epoch = self.tail.lock().unwrap_or_else(|p| p.into_inner()).epoch;
        match self.durable.step(Mark {
            epoch,
            end: u64::MAX,
        }) {
            Step::Lead => {
                drop(LeadTurn {
                    log: Arc::clone(self),
                    done: false,
                });
                true
            }
            _ => false,
        }
    }

    /// Group syncs run so far.
    #[cfg(test)]
    pub(super) fn syncs(&self) -> u64 {
        self.durable
            .syncs
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Makes the next group sync fail.
    #[cfg(test)]
    pub(super) fn fail_next_sync(&self) {
        self.durable
            .fail_next_sync
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    fn lock(&self) -> Result<MutexGuard<'_, Tail>, AuditError> {
        // A panic while chaining may have left the tail half updated: refuse.
        self.tail.lock().map_err(|_| self.broken())
    }

    /// The landing, unless a write could not be undone (or a panic while
    /// writing may have left half a line).
    fn landing(&self) -> Result<MutexGuard<'_, Landing>, AuditError> {
        match self.landing.lock() {
            Ok(landing) if !landing.broken => Ok(landing),
            _ => Err(self.broken()),
        }
    }

    /// The error of a log that refuses every append until it is reopened.
    fn broken(&self) -> AuditError {
        AuditError::Broken {
            path: self.path.clone(),
        }
    }
}

impl Tail {
    /// Restarts the chain from what landed if the file was cut back since.
    fn catch_up(&mut self, landing: &Landing) {
        if self.epoch == landing.epoch {
            return;
        }
        self.epoch = landing.epoch;
        self.len = landing.end;
        (self.seq, self.hash) = landing.head.as_ref().map_or_else(
            || (0, GENESIS_HASH.to_string()),
            |head| (head.seq, head.hash.clone()),
        );
        if self.len == self.base {
            self.first = None;
        }
    }
}

/// Runs and clears a test's hook, if one is set.
#[cfg(test)]
fn run_hook(hook: &Mutex<Option<Box<dyn FnOnce() + Send>>>) {
    let hook = hook.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(hook) = hook {
        hook();
    }
}

/// What [`AuditLog::write_all`] wrote.
pub(super) struct Wrote {
    pub records: Vec<AuditRecord>,
    /// Their lines without the newline, for the sink (empty without one).
    pub lines: Vec<Vec<u8>>,
    /// Where the last of them ends.
    pub mark: Mark,
    /// Whether they were in the file on return (else they land with an
    /// earlier line still being signed on another thread).
    pub landed: bool,
}

impl Landing {
    /// Whether the lines up to `mark` have landed, or were cut (the
    /// durable wait then says so).
    fn reached(&self, mark: Mark) -> bool {
        self.epoch != mark.epoch || self.end >= mark.end
    }

    /// One `write_all` (O_APPEND puts it at the end); the group sync
    /// ([`Durable::wait`]) makes it durable.
    fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        #[cfg(test)]
        if let Some(fault) = self.fault {
            let (Fault::PartialWrite(n) | Fault::PartialWriteNoRollback(n)) = fault;
            (&*self.file).write_all(&line[..n.min(line.len())])?;
            return Err(io::Error::other("injected write failure"));
        }
        (&*self.file).write_all(line)
    }

    /// Cuts the file back to `end` (no earlier than the active segment's
    /// start), where `head` is the last record, and starts a new epoch:
    /// every line still waiting, or reserved and not yet deposited, is
    /// refused. Whether the file was cut cleanly; if not, the log refuses
    /// everything from now on.
    fn cut_back_to(&mut self, end: u64, head: Option<AuditHead>, durable: &Durable) -> bool {
        self.end = end.max(self.base);
        self.head = head;
        self.epoch += 1;
        self.waiting.clear();
        let clean = self.roll_back(durable).is_ok();
        self.broken |= !clean;
        clean
    }

    /// Cuts off whatever a failed write left, so the log ends in a whole record.
    fn roll_back(&mut self, durable: &Durable) -> io::Result<()> {
        #[cfg(test)]
        if let Some(fault) = self.fault.take()
            && matches!(fault, Fault::PartialWriteNoRollback(_))
        {
            return Err(io::Error::other("injected rollback failure"));
        }
        self.file.set_len(self.end - self.base)?;
        durable.sync_in_turn(&self.file)
    }
}

/// `line`, sealed with a placeholder signature of the same length, with
/// `record`'s signature in its place (the signature is the last field).
fn signed_line(record: &AuditRecord, mut line: Vec<u8>) -> Result<Vec<u8>, AuditError> {
    let signature = record.signature.as_bytes();
    // `..."signature":"<hex>"}` and the newline.
    let at = line.len().checked_sub(signature.len() + 3);
    match at {
        Some(at)
            if signature.len() == SIGNATURE_HEX_LEN
                && line[at..at + SIGNATURE_HEX_LEN].iter().all(|&b| b == b'0')
                && line[at + SIGNATURE_HEX_LEN..] == *b"\"}\n" =>
        {
            line[at..at + SIGNATURE_HEX_LEN].copy_from_slice(signature);
            Ok(line)
        }
        // Not the shape reserved (never, while the signature is the last
        // field): its place in the file would be wrong. The reservation is
        // then abandoned and the log cut back.
        _ => Err(AuditError::InvalidEvent(format!(
            "record {} did not encode to the line reserved for it",
            record.seq
        ))),
    }
}

/// Reads the last line of a non-empty file and where it starts, scanning
/// backwards in bounded chunks.
fn read_last_line(file: &File, len: u64) -> io::Result<(RawLine, u64)> {
    let mut last = [0u8; 1];
    file.read_exact_at(&mut last, len - 1)?;
    let complete = last[0] == b'\n';
    let end = if complete { len - 1 } else { len };
    let max = MAX_LINE_BYTES as u64;
    let mut start = end;
    let mut chunk = [0u8; 4096];
    while start > 0 && end - start < max {
        let take = (start.min(chunk.len() as u64)) as usize;
        let from = start - take as u64;
        file.read_exact_at(&mut chunk[..take], from)?;
        match chunk[..take].iter().rposition(|&b| b == b'\n') {
            Some(i) => {
                start = from + i as u64 + 1;
                break;
            }
            None => start = from,
        }
    }
    let start = start.max(end.saturating_sub(max));
    let mut bytes = vec![0u8; (end - start) as usize];
    file.read_exact_at(&mut bytes, start)?;
    // The line number is only for error messages: counted when needed.
    let line = RawLine {
        no: 0,
        bytes,
        complete,
    };
    Ok((line, start))
}

/// 1-based number of the line starting at byte `start`.
fn line_number(file: &File, start: u64) -> u64 {
    let mut buf = vec![0u8; 64 * 1024];
    let (mut pos, mut n) = (0u64, 1u64);
    while pos < start {
        let take = (start - pos).min(buf.len() as u64) as usize;
        if file.read_exact_at(&mut buf[..take], pos).is_err() {
            return 0;
        }
        n += buf[..take].iter().filter(|&&b| b == b'\n').count() as u64;
        pos += take as u64;
    }
    n
}

/// The last record must be whole, unedited and signed by this signer.
fn check_tail(
    path: &Path,
    signer: &AuditSigner,
    file: &File,
    (last, start): (RawLine, u64),
) -> Result<AuditRecord, AuditError> {
    let damaged = |reason: String| AuditError::DamagedTail {
        path: path.to_path_buf(),
        line: line_number(file, start),
        reason,
    };
    let rec = last
        .parse()
        .map_err(|reason| damaged(format!("the last line is {reason}")))?;
    match rec.verify_alone(signer.public_key()) {
        Ok(()) => Ok(rec),
        Err(ProblemKind::HashMismatch) => Err(damaged(format!(
            "record {} was edited: its content no longer matches its hash",
            rec.seq
        ))),
        Err(_) if rec.key_id != signer.key_id() => Err(AuditError::ForeignKey {
            path: path.to_path_buf(),
            log_key_id: rec.key_id,
            signer_key_id: signer.key_id().to_string(),
        }),
        Err(_) => Err(damaged(format!(
            "record {} does not carry a valid signature of the audit key",
            rec.seq
        ))),
    }
}

#[cfg(test)]
#[path = "tests_landing.rs"]
mod tests_landing;
