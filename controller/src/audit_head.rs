//! The audit log's end against the head kept in the store, checked before
//! the controller appends anything.
//!
//! The log alone cannot show records cut from its end (a cut log is a valid
//! shorter log), and a deleted log would simply start again from record 1.
//! Every append therefore stores the new head in the store; at start the
//! log must still reach that head with the same hash. If it does not, the
//! controller refuses to start: continuing would chain new records onto the
//! cut and overwrite the stored head, erasing the evidence. The operator
//! restores the log from backup, or acknowledges the loss explicitly
//! (`--acknowledge-audit-loss`), which is itself recorded; see
//! `docs/operations-audit.md`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use kcred_audit::{AuditHead, Start, verify_from};
use serde::{Deserialize, Serialize};

use crate::store::{Store, StoreError, Table};

/// Where heads were kept before each chain had its own record (read once
/// when upgrading, then removed).
pub const LEGACY_HEAD_RECORD: &str = "audit-head";

/// Where the head of the chain signed by `key_id` is kept. Every
/// controller signs its own chain with its own key, so controllers sharing
/// a store (etcd) each keep their own head and never check their log
/// against another's.
pub fn head_record(key_id: &str) -> String {
    format!("audit-head/{key_id}")
}

/// The head of every chain kept in the store, by key id (every controller
/// sharing the store has one), ordered by key id.
pub fn stored_heads(store: &Store) -> Result<Vec<(String, AuditHead)>, StoreError> {
    let prefix = head_record("");
    let mut heads: Vec<(String, AuditHead)> = store
        .list::<serde_json::Value>(Table::Authority)?
        .into_iter()
        .filter_map(|(name, meta, _)| {
            let key_id = name.strip_prefix(&prefix)?.to_string();
            let head = serde_json::from_value(meta).ok()?;
            Some((key_id, head))
        })
        .collect();
    heads.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(heads)
}

/// Prefix of the records keeping heads whose loss an operator acknowledged.
pub const LOST_HEAD_PREFIX: &str = "audit-head-lost-";

/// The operator's procedure, named in every refusal.
const PROCEDURE: &str = "restore the audit log from backup, or acknowledge the loss with \
     `kcred-controller serve --acknowledge-audit-loss \"<reason>\"` \
     (see docs/operations-audit.md, \"The audit log does not reach its stored head\")";

/// Why the log no longer reaches the head the controller stored.
#[derive(Debug, thiserror::Error)]
pub enum AuditLoss {
    /// The log file is gone, but records were written.
    #[error(
        "audit log {} is missing, but the controller wrote records up to {} (hash {}): {PROCEDURE}",
        path.display(), stored.seq, short(&stored.hash)
    )]
    Missing {
        /// The log file.
        path: PathBuf,
        /// The head the store remembers.
        stored: AuditHead,
    },
    /// The log ends before the stored head.
    #[error(
        "audit log {} ends at record {ends}, but the controller wrote records up to {} (hash {}): \
         records were cut from its end; {PROCEDURE}",
        path.display(), stored.seq, short(&stored.hash)
    )]
    Truncated {
        /// The log file.
        path: PathBuf,
        /// Its last record's seq (0: empty).
        ends: u64,
        /// The head the store remembers.
        stored: AuditHead,
    },
    /// The log reaches the stored head's seq with another record there, or
    /// is broken before it.
    #[error(
        "audit log {} does not reach the stored head (record {}, hash {}): {problem}; {PROCEDURE}",
        path.display(), stored.seq, short(&stored.hash)
    )]
    Rewritten {
        /// The log file.
        path: PathBuf,
        /// The head the store remembers.
        stored: AuditHead,
        /// What verification found.
        problem: String,
    },
    /// The store or the log could not be read.
    #[error("cannot compare the audit log with its stored head: {0}")]
    Unreadable(String),
}

impl AuditLoss {
    /// The head the store remembered.
    pub fn stored(&self) -> Option<&AuditHead> {
        match self {
            AuditLoss::Missing { stored, .. }
            | AuditLoss::Truncated { stored, .. }
            | AuditLoss::Rewritten { stored, .. } => Some(stored),
            AuditLoss::Unreadable(_) => None,
        }
    }
}

/// A head whose loss an operator acknowledged, kept in the store.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LostHead {
    /// The head the store remembered.
    pub stored: AuditHead,
    /// Where the log ended when the loss was acknowledged.
    pub log_ended: Option<AuditHead>,
    /// What was found.
    pub finding: String,
    /// The operator's reason.
    pub reason: String,
}

/// Which record a stored head was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadRecord {
    /// The chain's own record.
    Chain,
    /// The record kept before heads were per chain.
    Legacy,
}

/// The head the store remembers for the chain signed by `key_id`, if any
/// (a head kept before heads were per chain counts as this chain's).
pub fn stored_head(store: &Store, key_id: &str) -> Result<Option<AuditHead>, StoreError> {
    Ok(find_stored_head(store, key_id)?.map(|(h, _)| h))
}

/// [`stored_head`], and which record held it.
pub fn find_stored_head(
    store: &Store,
    key_id: &str,
) -> Result<Option<(AuditHead, HeadRecord)>, StoreError> {
    if let Some(r) = store.get::<AuditHead>(Table::Authority, &head_record(key_id))? {
        return Ok(Some((r.meta, HeadRecord::Chain)));
    }
    Ok(store
        .get::<AuditHead>(Table::Authority, LEGACY_HEAD_RECORD)?
        .map(|r| (r.meta, HeadRecord::Legacy)))
}

/// Moves a legacy head (checked to be this chain's) to the chain's own
/// record.
pub fn adopt_legacy(store: &Store, key_id: &str, head: &AuditHead) -> Result<(), StoreError> {
    store.put(Table::Authority, &head_record(key_id), head, b"")?;
    store.delete(Table::Authority, LEGACY_HEAD_RECORD)
}

/// Before the log is opened: a stored head with no log file is a loss.
pub fn check_present(path: &Path, stored: Option<&AuditHead>) -> Result<(), AuditLoss> {
    match stored {
        Some(h) if !path.exists() => Err(AuditLoss::Missing {
            path: path.to_path_buf(),
            stored: h.clone(),
        }),
        _ => Ok(()),
    }
}

/// After the log is opened: its end (`log_head`) must be the stored head,
/// or lie beyond it on the same chain (the store lags the log by at most
/// the append a crash interrupted).
pub fn check_reaches(
    path: &Path,
    public_key: &[u8],
    log_head: Option<&AuditHead>,
    stored: Option<&AuditHead>,
) -> Result<(), AuditLoss> {
    let Some(stored) = stored else {
        return Ok(());
    };
    let ends = log_head.map_or(0, |h| h.seq);
    if ends < stored.seq {
        return Err(AuditLoss::Truncated {
            path: path.to_path_buf(),
            ends,
            stored: stored.clone(),
        });
    }
    if log_head == Some(stored) {
        return Ok(());
    }
    // From the first record present: sealed segments may have been archived
    // (their integrity is the auditor's `kcredctl audit verify`); what
    // matters here is that the chain, across segments, reaches the head.
    let report = verify_from(path, public_key, &Start::FirstPresent, Some(stored))
        .map_err(|e| AuditLoss::Unreadable(e.to_string()))?;
    match report.first_problem {
        None => Ok(()),
        Some(p) => Err(AuditLoss::Rewritten {
            path: path.to_path_buf(),
            stored: stored.clone(),
            problem: p.to_string(),
        }),
    }
}

/// Keeps the lost head under its own name, so acknowledging a loss never
/// erases what was lost.
pub fn archive_lost(store: &Store, lost: &LostHead, at_unix_ms: i64) -> Result<(), StoreError> {
    store.put(
        Table::Authority,
        &format!("{LOST_HEAD_PREFIX}{at_unix_ms}"),
        lost,
        b"",
    )
}

/// Stores `head` unless the stored head is further along: a shorter chain
/// never replaces a longer one.
pub fn store_head(store: &Store, key_id: &str, head: &AuditHead) -> Result<(), StoreError> {
    if let Some(stored) = stored_head(store, key_id)?
        && stored.seq > head.seq
    {
        tracing::error!(
            stored = stored.seq,
            log = head.seq,
            "the stored audit head is ahead of the log; it is kept"
        );
        return Ok(());
    }
    store.put(Table::Authority, &head_record(key_id), head, b"")
}

/// Stores the audit head after appends, one store commit for many: a
/// caller that finds a writer at work leaves its (newer) head for that
/// writer and returns, so concurrent fetches do not queue for a durable
/// store commit each. The writer waits [`HEAD_LINGER`] before each commit,
/// so under load the heads of that time share one commit (back to back,
/// the commits cost a busy controller a fourteenth of its CPU). The stored
/// head may trail the log by the records of that time and one commit; the
/// start-up check only needs the log to reach it, and records already in
/// the log are durable on their own.
#[derive(Debug, Default)]
pub struct HeadWriter {
    state: std::sync::Mutex<Heads>,
}

#[derive(Debug, Default)]
struct Heads {
    /// The newest head not yet stored.
    pending: Option<AuditHead>,
    /// Whether a writer is storing.
    writing: bool,
    /// The newest head this writer stored: concurrent appends reach here
    /// out of order, and an older head is no news (storing it would only
    /// find the store ahead and cry wolf).
    stored_seq: u64,
}

/// How long the head writer gathers heads before a store commit.
pub const HEAD_LINGER: std::time::Duration = std::time::Duration::from_millis(10);

impl HeadWriter {
    /// Leaves `head` to be stored; `Some` when the caller became the
    /// writer: it must run [`WriterTurn::run`]. Never blocks on the store.
    pub fn offer_turn(self: &Arc<Self>, head: AuditHead) -> Option<WriterTurn> {
        let mut s = self.lock();
        if head.seq <= s.stored_seq {
            return None;
        }
        if s.pending.as_ref().is_none_or(|p| p.seq < head.seq) {
            s.pending = Some(head);
        }
        (!std::mem::replace(&mut s.writing, true)).then(|| WriterTurn {
            heads: Arc::clone(self),
            done: false,
        })
    }

    /// The writer's work: stores the newest pending head; whether a newer
    /// one is pending after that (the writer stays the writer).
    fn store_newest(&self, store: &Store, key_id: &str) -> bool {
        let next = {
            let mut s = self.lock();
            s.pending.take().filter(|h| h.seq > s.stored_seq)
        };
        if let Some(next) = next {
            match store_head(store, key_id, &next) {
                Ok(()) => {
                    let mut s = self.lock();
                    s.stored_seq = s.stored_seq.max(next.seq);
                }
                Err(e) => tracing::error!(error = %e, "cannot store the audit head"),
            }
        }
        let mut s = self.lock();
        let more = s.pending.as_ref().is_some_and(|p| p.seq > s.stored_seq);
        s.writing = more;
        more
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Heads> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A caller's turn as the head writer. Dropped without draining (its
/// blocking task never ran, or panicked), it lets the next caller write.
pub struct WriterTurn {
    heads: Arc<HeadWriter>,
    done: bool,
}

impl WriterTurn {
    /// Stores the newest pending head. Blocking. The turn again when a
    /// newer head came meanwhile: its holder lingers and stores again.
    fn store_newest(mut self, store: &Store, key_id: &str) -> Option<WriterTurn> {
        if self.heads.store_newest(store, key_id) {
            return Some(self);
        }
        self.done = true;
        None
    }

    /// Stores pending heads until none is newer, lingering
    /// [`HEAD_LINGER`] before each commit. Holds `store` until done: a
    /// stopping controller waits for that (crate::server).
    pub async fn run(self, store: std::sync::Arc<Store>, key_id: String) {
        let mut turn = Some(self);
        while let Some(t) = turn.take() {
            tokio::time::sleep(HEAD_LINGER).await;
            let (store, key_id) = (std::sync::Arc::clone(&store), key_id.clone());
            // A panic drops the turn: the next caller becomes the writer.
            turn = tokio::task::spawn_blocking(move || t.store_newest(&store, &key_id))
                .await
                .ok()
                .flatten();
        }
    }
}

impl Drop for WriterTurn {
    fn drop(&mut self) {
        if !self.done {
            self.heads.lock().writing = false;
        }
    }
}

fn short(hash: &str) -> &str {
    hash.get(..16).unwrap_or(hash)
}

#[cfg(test)]
mod stored_heads_tests {
    use super::*;
    use crate::crypto::MasterKey;

    /// An empty embedded store (and the directory it lives in).
    fn fresh_store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(
            &dir.path().join("store.redb"),
            MasterKey::from_bytes([7; 32]),
        )
        .unwrap();
        (dir, store)
    }

    /// A head at `seq` (its hash made up).
    fn head(seq: u64) -> AuditHead {
        AuditHead {
            seq,
            hash: format!("{seq:064x}"),
        }
    }

    /// Log lines written while `f` runs.
    fn logs_of(f: impl FnOnce()) -> String {
        #[derive(Clone, Default)]
        struct Lines(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Lines {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let lines = Lines::default();
        let sink = lines.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || sink.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let bytes = lines.0.lock().unwrap().clone();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    #[test]
    fn a_head_older_than_the_one_stored_is_no_news() {
        let (_dir, store) = fresh_store();
        let writer = Arc::new(HeadWriter::default());
        // Two appends finish as 10 then 9 reach the writer (concurrent
        // appends do).
        let logs = logs_of(|| {
            for seq in [10, 9] {
                if let Some(turn) = writer.offer_turn(head(seq)) {
                    assert!(turn.store_newest(&store, "k").is_none());
                }
            }
        });
        assert_eq!(stored_head(&store, "k").unwrap(), Some(head(10)));
        assert!(!logs.contains("ahead of the log"), "{logs}");
    }

    #[test]
    fn a_writer_turn_dropped_undrained_lets_the_next_caller_write() {
        let (_dir, store) = fresh_store();
        let writer = Arc::new(HeadWriter::default());
        let turn = writer.offer_turn(head(5)).expect("first caller writes");
        assert!(writer.offer_turn(head(6)).is_none(), "one writer at a time");
        drop(turn);
        let turn = writer
            .offer_turn(head(7))
            .expect("the dropped turn gave the writer's place back");
        assert!(turn.store_newest(&store, "k").is_none());
        assert_eq!(stored_head(&store, "k").unwrap(), Some(head(7)));
    }

    #[test]
    fn heads_left_to_the_writer_share_its_one_commit() {
        let (_dir, store) = fresh_store();
        let writer = Arc::new(HeadWriter::default());
        let turn = writer.offer_turn(head(1)).expect("first caller writes");
        // While the writer lingers, later appends leave their heads to it.
        for seq in 2..=5 {
            assert!(writer.offer_turn(head(seq)).is_none(), "left to the writer");
        }
        assert!(
            turn.store_newest(&store, "k").is_none(),
            "nothing newer than 5 was pending after its commit"
        );
        assert_eq!(stored_head(&store, "k").unwrap(), Some(head(5)));
        // The turn ended: the next append makes a new writer.
        assert!(writer.offer_turn(head(6)).is_some());
    }

    #[test]
    fn stored_heads_lists_every_chains_head_and_nothing_else() {
        let (_dir, store) = fresh_store();
        store
            .put(Table::Authority, &head_record("bbbb"), &head(7), b"")
            .unwrap();
        store
            .put(Table::Authority, &head_record("aaaa"), &head(3), b"")
            .unwrap();
        store
            .put(
                Table::Authority,
                &format!("{LOST_HEAD_PREFIX}x"),
                &head(9),
                b"",
            )
            .unwrap();
        store
            .put(Table::Authority, "ca", &1u32, b"not a head")
            .unwrap();
        assert_eq!(
            stored_heads(&store).unwrap(),
            vec![("aaaa".to_string(), head(3)), ("bbbb".to_string(), head(7))]
        );
    }
}
