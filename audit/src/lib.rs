//! The tamper-evident audit log: every credential decision, signed and
//! chained, on disk before the credential leaves the controller.
//!
//! # Model
//!
//! Each issue, renewal, denial (with the rule that refused), rotation,
//! revocation, node loss or return and admin action becomes one
//! [`AuditRecord`]: who ([`AuditEvent::actor`]), what (kind, subject, kvno,
//! serial, key version), where (node, namespace, pod), when (RFC 3339 UTC
//! with milliseconds, and Unix milliseconds) and the decision. Records are
//! JSON lines in append-only files: the active file, and the sealed
//! segments it was rotated into by size or age ([`segments`]), one chain
//! across all of them.
//!
//! * **Fail closed.** [`AuditLog::append`] returns only once the record is
//!   written and `fdatasync`ed; on any error the caller must not issue. A
//!   failed write is rolled back (the file is cut back to its last whole
//!   record, and records chained behind the failed one are refused too);
//!   if even that fails the log refuses every later append until it is
//!   reopened. Concurrent appends share their syncs (group commit:
//!   one `fdatasync` covers every record written before it), and each
//!   still returns only once its own record is durable.
//! * **Chain.** Every record carries `prev_hash`, the `hash` of the record
//!   before it (64 zeros for record 1), and a sequence number `seq` that
//!   grows by one. Removing, reordering or inserting records breaks the
//!   chain. The exact bytes hashed are [`AuditRecord::canonical_bytes`].
//! * **Signature.** Each `hash` is signed with the controller's Ed25519
//!   audit key ([`AuditSigner`]). Without the signature anyone able to
//!   write the file could edit a record and recompute every later hash;
//!   with it, an edit needs the private key.
//!
//! # What [`verify()`] proves, and what it cannot prove alone
//!
//! Given the audit public key, [`verify()`] proves that every record in the
//! file was written by the holder of the key, unchanged, and that none is
//! missing or out of place *between the first and the last line*. It names
//! the first problem in words an auditor can act on ("record 7 was edited",
//! "record 12 is missing: 11 is followed by 13", "records 5 and 6 are out of
//! order").
//!
//! It cannot see records cut from the **end**: a truncated log is a valid
//! shorter log. The controller therefore keeps the head ([`AuditHead`]: the
//! last `seq` and `hash`, returned by every append) in its store, and
//! [`verify_with_head`] checks the file still reaches it unchanged.
//!
//! Someone holding the **private key** could rewrite the whole log and its
//! head consistently. Keep the public key, and periodic copies of the head
//! (or exports, [`export`]), somewhere the controller's host cannot write:
//! the SIEM, a ticket, a separate account. A later head that no longer
//! matches the rewritten file exposes the rewrite.
//!
//! # Crashes and a damaged end
//!
//! A crash in the middle of a write can leave a last line without its
//! newline. [`AuditLog::open`] checks the last record (complete line, hash,
//! signature, key) and refuses to open otherwise, so nothing is issued
//! until an operator looks. The operator's fix: keep a copy of the file as
//! evidence, run `kcredctl audit verify` to see which line is damaged, and
//! if it is only an interrupted last line, remove that line (for example
//! `head -n <N> audit.jsonl > audit.jsonl.new`, where N is the number of
//! the last good line, then move the new file into place with mode 0600).
//! Anything else (an edited or foreign last record) is tampering: keep the
//! file for the investigation and start a new log.
//!
//! # No secrets
//!
//! Records hold names and numbers only. [`AuditEvent`] has no field for key
//! material, keytabs or tickets, so none can reach the log. The signing
//! key's PKCS#8 bytes are held in [`zeroize::Zeroizing`] while loaded and
//! never printed.

#![forbid(unsafe_code)]

mod durable;
mod event;
mod log;
mod query;
mod reader;
mod record;
pub mod segments;
mod signer;
mod sink;
pub mod timefmt;
mod verify;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_fuzz;
#[cfg(test)]
mod tests_group;
#[cfg(test)]
mod tests_query;
#[cfg(test)]
mod tests_segments;
#[cfg(test)]
mod tests_tamper;

use std::io;
use std::path::PathBuf;

pub use event::{Action, Actor, AuditEvent, CredentialKind, Decision};
pub use log::AuditLog;
pub use query::{AuditFilter, export, export_each, query};
pub use record::{AuditHead, AuditRecord, GENESIS_HASH, MAX_LINE_BYTES, RECORD_VERSION};
pub use segments::Rotation;
pub use signer::{AuditSigner, key_id_of};
pub use sink::Sink;
pub use verify::{
    Problem, ProblemKind, Start, VerifyReport, verify, verify_from, verify_stream, verify_with_head,
};

/// Why an audit operation failed. A failed append means: do not issue.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The file system refused an operation on the log.
    #[error("audit log {}: cannot {op}: {source}", path.display())]
    Io {
        /// The log file.
        path: PathBuf,
        /// What was being done ("open", "read", "lock"...).
        op: &'static str,
        /// The operating system's error.
        source: io::Error,
    },
    /// Another process (a second controller) holds the log open for writing.
    #[error(
        "audit log {} is locked by another process: only one controller may write it",
        path.display()
    )]
    Locked {
        /// The log file.
        path: PathBuf,
    },
    /// The last record is incomplete, edited or unsigned: see the module
    /// docs for the operator's fix.
    #[error(
        "audit log {} ends in a damaged record at line {line}: {reason}; \
         nothing can be recorded (or issued) until an operator repairs it",
        path.display()
    )]
    DamagedTail {
        /// The log file.
        path: PathBuf,
        /// Line number of the last line.
        line: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// The log was signed by a different key than the one loaded.
    #[error(
        "audit log {} is signed by key {log_key_id}, but the loaded audit key is {signer_key_id}: \
         restore the original key, or start a new log for a new key",
        path.display()
    )]
    ForeignKey {
        /// The log file.
        path: PathBuf,
        /// Key id found in the log's last record.
        log_key_id: String,
        /// Key id of the loaded signer.
        signer_key_id: String,
    },
    /// A record could not be written and synced. Nothing may be issued.
    #[error(
        "audit log {}: record {seq} could not be written: {source}; {}",
        path.display(),
        if *rolled_back {
            "the partial write was removed and the log is intact"
        } else {
            "the log may end in a partial record and refuses further records until reopened"
        }
    )]
    Write {
        /// The log file.
        path: PathBuf,
        /// Sequence number the record would have had.
        seq: u64,
        /// Whether the file was cut back to its previous length.
        rolled_back: bool,
        /// The operating system's error.
        source: io::Error,
    },
    /// An earlier write failed and could not be rolled back.
    #[error(
        "audit log {} refuses records after an unrecoverable write failure; \
         restart the controller (reopening checks the log's end)",
        path.display()
    )]
    Broken {
        /// The log file.
        path: PathBuf,
    },
    /// The caller passed an event that would make a misleading record.
    #[error("audit event refused: {0}")]
    InvalidEvent(String),
    /// The record would exceed the line limit readers enforce.
    #[error("audit record {seq} would be {len} bytes, over the {max}-byte limit")]
    TooLarge {
        /// Sequence number the record would have had.
        seq: u64,
        /// Its encoded length.
        len: usize,
        /// The limit ([`MAX_LINE_BYTES`]).
        max: usize,
    },
    /// The record could not be encoded as JSON.
    #[error("audit record {seq} could not be encoded: {source}")]
    Encode {
        /// Sequence number of the record.
        seq: u64,
        /// The encoder's error.
        source: serde_json::Error,
    },
    /// The audit signing key is missing, unreadable, too open or malformed.
    #[error("audit signing key {what}: {reason}")]
    Key {
        /// The key file, or what the key came from.
        what: String,
        /// What is wrong.
        reason: String,
    },
    /// A public key given for verification is not an Ed25519 public key.
    #[error("audit public key must be 32 bytes (Ed25519), got {len}")]
    PublicKey {
        /// Length given.
        len: usize,
    },
    /// A line could not be read while querying or exporting.
    #[error(
        "audit log {}: line {line} is damaged: {reason}; run `kcredctl audit verify`",
        path.display()
    )]
    Corrupt {
        /// The log file.
        path: PathBuf,
        /// Line number.
        line: u64,
        /// What is wrong.
        reason: String,
    },
}
