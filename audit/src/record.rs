//! What is recorded, and the exact bytes a record's hash covers.

use ring::signature::{ED25519, UnparsedPublicKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Action, Actor, AuditError, AuditEvent, Decision, ProblemKind, key_id_of};

/// Version of the record format and canonical form; part of every hash.
pub const RECORD_VERSION: u32 = 2;

/// `prev_hash` of record 1: there is no predecessor.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Longest line (newline included) writers produce and readers accept, so a
/// damaged file without newlines cannot exhaust memory.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// The last record of a log: what the controller keeps in its store so
/// that cutting records from the end is detected ([`super::verify_with_head`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditHead {
    /// Sequence number of the last record.
    pub seq: u64,
    /// Its hash (hex).
    pub hash: String,
}

/// One line of the log: the event, its place in the chain, and its seal.
/// Unknown fields are refused when reading, so nothing unhashed can be
/// smuggled into a line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditRecord {
    /// Format version ([`RECORD_VERSION`]).
    pub v: u32,
    /// Position in the log: 1, 2, 3... without gaps.
    pub seq: u64,
    /// When, RFC 3339 UTC with milliseconds ("2026-05-01T12:00:00.123Z").
    pub time: String,
    /// The same instant in Unix milliseconds (for range queries).
    pub unix_ms: i64,
    /// `hash` of the previous record, [`GENESIS_HASH`] for record 1.
    pub prev_hash: String,
    /// Signing key: [`key_id_of`] its public key.
    pub key_id: String,
    /// See [`AuditEvent::actor`].
    pub actor: String,
    /// See [`AuditEvent::action`].
    pub action: Action,
    /// See [`AuditEvent::kind`].
    pub kind: String,
    /// See [`AuditEvent::subject`].
    pub subject: String,
    /// See [`AuditEvent::kvno`].
    pub kvno: Option<u32>,
    /// See [`AuditEvent::serial`].
    pub serial: Option<String>,
    /// See [`AuditEvent::key_version`].
    pub key_version: Option<u32>,
    /// See [`AuditEvent::node`].
    pub node: String,
    /// See [`AuditEvent::namespace`].
    pub namespace: String,
    /// See [`AuditEvent::pod`].
    pub pod: String,
    /// See [`AuditEvent::decision`].
    pub decision: Decision,
    /// See [`AuditEvent::reason`].
    pub reason: String,
    /// See [`AuditEvent::detail`]; absent in version 1 records.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
    /// Hex SHA-256 of [`AuditRecord::canonical_bytes`].
    pub hash: String,
    /// Hex Ed25519 signature over the 32 raw bytes of `hash`.
    pub signature: String,
}

/// The canonical form: every field but `hash` and `signature`, in this
/// order. Do not reorder, rename or add fields without bumping
/// [`RECORD_VERSION`]: old hashes would stop matching.
#[derive(Serialize)]
struct Canonical<'a> {
    v: u32,
    seq: u64,
    time: &'a str,
    unix_ms: i64,
    prev_hash: &'a str,
    key_id: &'a str,
    actor: &'a str,
    action: Action,
    kind: &'a str,
    subject: &'a str,
    kvno: Option<u32>,
    serial: Option<&'a str>,
    key_version: Option<u32>,
    node: &'a str,
    namespace: &'a str,
    pod: &'a str,
    decision: Decision,
    reason: &'a str,
    /// Version 2 on; absent from version 1's canonical form.
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'a str>,
}

impl AuditRecord {
    /// Builds an unsealed record (empty `hash` and `signature`).
    pub(super) fn unsealed(
        event: &AuditEvent,
        seq: u64,
        unix_ms: i64,
        prev_hash: &str,
        key_id: &str,
    ) -> Self {
        AuditRecord {
            v: RECORD_VERSION,
            seq,
            time: rfc3339_ms(unix_ms),
            unix_ms,
            prev_hash: prev_hash.to_string(),
            key_id: key_id.to_string(),
            actor: event.actor.to_string(),
            action: event.action,
            kind: event
                .kind
                .map(|k| k.as_str().to_string())
                .unwrap_or_default(),
            subject: event.subject.clone(),
            kvno: event.kvno,
            serial: event.serial.clone(),
            key_version: event.key_version,
            node: event.node.clone(),
            namespace: event.namespace.clone(),
            pod: event.pod.clone(),
            decision: event.decision,
            reason: event.reason.clone(),
            detail: event.detail.clone(),
            hash: String::new(),
            signature: String::new(),
        }
    }

    /// The bytes the hash covers: compact JSON (serde_json, no whitespace,
    /// its standard string escaping, absent options as `null`) of the object
    /// `{"v","seq","time","unix_ms","prev_hash","key_id","actor","action",
    /// "kind","subject","kvno","serial","key_version","node","namespace",
    /// "pod","decision","reason","detail"}` with keys in exactly that order
    /// (`detail` from version 2 on).
    pub fn canonical_bytes(&self) -> Result<Vec<u8>, AuditError> {
        // A field the hash would not cover must not be there at all.
        if self.v == 0 || self.v > RECORD_VERSION || (self.v == 1 && !self.detail.is_empty()) {
            return Err(AuditError::InvalidEvent(format!(
                "record {} has format version {} with fields it does not define",
                self.seq, self.v
            )));
        }
        serde_json::to_vec(&Canonical {
            v: self.v,
            seq: self.seq,
            time: &self.time,
            unix_ms: self.unix_ms,
            prev_hash: &self.prev_hash,
            key_id: &self.key_id,
            actor: &self.actor,
            action: self.action,
            kind: &self.kind,
            subject: &self.subject,
            kvno: self.kvno,
            serial: self.serial.as_deref(),
            key_version: self.key_version,
            node: &self.node,
            namespace: &self.namespace,
            pod: &self.pod,
            decision: self.decision,
            reason: &self.reason,
            detail: (self.v >= 2).then_some(self.detail.as_str()),
        })
        .map_err(|source| AuditError::Encode {
            seq: self.seq,
            source,
        })
    }

    /// SHA-256 of the canonical bytes: what `hash` must hold (hex).
    pub fn content_hash(&self) -> Result<[u8; 32], AuditError> {
        Ok(Sha256::digest(self.canonical_bytes()?).into())
    }

    /// Checks this record on its own (content against hash, signature and
    /// key id against `public_key`), e.g. for one exported line in a SIEM.
    /// Chain position is [`verify()`](super::verify())'s business.
    pub fn verify_alone(&self, public_key: &[u8]) -> Result<(), ProblemKind> {
        let digest = self.content_hash().map_err(|_| ProblemKind::Unparseable)?;
        if hex::encode(digest) != self.hash {
            return Err(ProblemKind::HashMismatch);
        }
        let signature = hex::decode(&self.signature).map_err(|_| ProblemKind::BadSignature)?;
        if self.key_id != key_id_of(public_key)
            || UnparsedPublicKey::new(&ED25519, public_key)
                .verify(&digest, &signature)
                .is_err()
        {
            return Err(ProblemKind::BadSignature);
        }
        Ok(())
    }

    /// The record's place in the chain.
    pub fn head(&self) -> AuditHead {
        AuditHead {
            seq: self.seq,
            hash: self.hash.clone(),
        }
    }

    /// The event this record holds.
    pub fn event(&self) -> AuditEvent {
        AuditEvent {
            actor: Actor::parse(&self.actor),
            action: self.action,
            kind: self.kind.parse().ok(),
            subject: self.subject.clone(),
            kvno: self.kvno,
            serial: self.serial.clone(),
            key_version: self.key_version,
            node: self.node.clone(),
            namespace: self.namespace.clone(),
            pod: self.pod.clone(),
            decision: self.decision,
            reason: self.reason.clone(),
            detail: self.detail.clone(),
        }
    }
}

/// Unix milliseconds as RFC 3339 UTC ("1970-01-01T00:00:00.000Z").
pub(super) fn rfc3339_ms(unix_ms: i64) -> String {
    crate::timefmt::rfc3339_millis(unix_ms)
}
