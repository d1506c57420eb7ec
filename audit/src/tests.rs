//! Behaviour of the writer and the key, and the shared fixture. Query and
//! export are in `tests_query.rs`, tampering in `tests_tamper.rs`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::log::Fault;
use super::record::rfc3339_ms;
use super::*;
use kcred_proto::kcred::v1::Reason;

/// `err` refuses the records from `seq` on, and the log was cut back
/// cleanly to its last durable record.
pub(super) fn assert_cut_back(err: &AuditError, seq: u64) {
    assert!(
        matches!(err, AuditError::Write { seq: s, rolled_back: true, .. } if *s == seq),
        "{err}"
    );
}

/// An issue event that differs with `i`.
pub(super) fn event(i: usize) -> AuditEvent {
    AuditEvent::new(Actor::Node(format!("node-{}", i % 3)), Action::Issue)
        .with_kind(CredentialKind::Keytab)
        .with_subject(format!("HTTP/svc-{i}@EXAMPLE.COM"))
        .with_kvno(i as u32 + 1)
        .with_place(
            format!("node-{}", i % 3),
            format!("ns-{}", i % 2),
            format!("pod-{i}"),
        )
}

/// A tempdir holding a key file and a log of `n` records (subjects
/// svc-1..svc-n, so record k is about svc-k).
pub(super) struct Fixture {
    pub dir: tempfile::TempDir,
    pub log: PathBuf,
    pub key: PathBuf,
}

impl Fixture {
    /// The log verifies, holding `records` records; its report.
    pub fn assert_intact(&self, records: u64) -> VerifyReport {
        let report = self.verify();
        assert!(report.is_ok(), "{:?}", report.first_problem);
        assert_eq!(report.records, records);
        report
    }

    pub fn new(n: usize) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let fx = Fixture {
            log: dir.path().join("audit.jsonl"),
            key: dir.path().join("audit.key"),
            dir,
        };
        let log = fx.open();
        for i in 1..=n {
            log.append(&event(i)).expect("append");
        }
        fx
    }

    pub fn signer(&self) -> AuditSigner {
        AuditSigner::load_or_generate(&self.key).expect("key")
    }

    pub fn public_key(&self) -> Vec<u8> {
        self.signer().public_key().to_vec()
    }

    pub fn open(&self) -> AuditLog {
        AuditLog::open(&self.log, self.signer()).expect("open log")
    }

    pub fn verify(&self) -> VerifyReport {
        verify(&self.log, &self.public_key()).expect("verify runs")
    }

    pub fn lines(&self) -> Vec<String> {
        read_lines(&self.log)
    }

    pub fn write_lines(&self, lines: &[String]) {
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        std::fs::write(&self.log, text).expect("write log");
    }
}

pub(super) fn read_lines(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).expect("read log");
    text.lines().map(str::to_string).collect()
}

#[test]
fn untouched_log_of_20_records_verifies() {
    let fx = Fixture::new(20);
    let report = fx.assert_intact(20);
    let head = report.head.expect("head");
    assert_eq!(head.seq, 20);
    assert_eq!(fx.open().head(), Some(head));
}

#[test]
fn appended_records_are_numbered_chained_timed_and_signed() {
    let fx = Fixture::new(0);
    let log = fx.open();
    assert_eq!(log.head(), None);
    let before = crate::timefmt::now_unix_ms();
    let r1 = log.append(&event(1)).expect("append 1");
    let r2 = log.append(&event(2)).expect("append 2");
    assert_eq!((r1.seq, r2.seq), (1, 2));
    assert_eq!(r1.prev_hash, GENESIS_HASH);
    assert_eq!(r2.prev_hash, r1.hash);
    assert_eq!(r1.key_id, log.signer().key_id());
    assert!(r1.unix_ms >= before && r1.unix_ms <= crate::timefmt::now_unix_ms());
    assert_eq!(r1.time, rfc3339_ms(r1.unix_ms));
    assert_eq!(r1.verify_alone(log.signer().public_key()), Ok(()));
    assert_eq!(r1.event(), event(1));
    assert_eq!(log.head(), Some(r2.head()));
    let stored: AuditRecord = serde_json::from_str(&fx.lines()[1]).expect("parse");
    assert_eq!(stored, r2);
}

#[test]
fn reopening_continues_the_chain_and_verifies_across_the_reopen() {
    let fx = Fixture::new(5);
    let last = fx.open().head().expect("head");
    let log = fx.open();
    let r6 = log.append(&event(6)).expect("append after reopen");
    assert_eq!(r6.seq, 6);
    assert_eq!(r6.prev_hash, last.hash);
    drop(log);
    fx.assert_intact(6);
}

#[test]
fn reopening_after_a_record_longer_than_the_read_chunk_continues() {
    let fx = Fixture::new(2);
    let long = event(3).with_reason("r".repeat(10_000));
    let r3 = fx.open().append(&long).expect("long record");
    let r4 = fx.open().append(&event(4)).expect("after reopen");
    assert_eq!((r4.seq, r4.prev_hash), (4, r3.hash));
    assert!(fx.verify().is_ok());
}

#[test]
fn half_written_last_line_refuses_to_open_with_a_clear_error() {
    let fx = Fixture::new(3);
    let mut text = std::fs::read_to_string(&fx.log).expect("read");
    text.push_str(r#"{"v":1,"seq":4,"time":"2026-"#);
    std::fs::write(&fx.log, text).expect("write");
    let err = AuditLog::open(&fx.log, fx.signer()).expect_err("must refuse");
    assert!(
        matches!(err, AuditError::DamagedTail { line: 4, .. }),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("line 4") && msg.contains("incomplete"),
        "{msg}"
    );
    assert!(msg.contains("nothing can be recorded"), "{msg}");
}

#[test]
fn edited_last_record_refuses_to_open() {
    let fx = Fixture::new(3);
    let mut lines = fx.lines();
    lines[2] = lines[2].replace("svc-3", "svc-X");
    fx.write_lines(&lines);
    let err = AuditLog::open(&fx.log, fx.signer()).expect_err("must refuse");
    assert!(err.to_string().contains("record 3 was edited"), "{err}");
}

#[test]
fn log_of_another_key_refuses_to_open() {
    let fx = Fixture::new(2);
    let other = AuditSigner::generate().expect("key");
    let err = AuditLog::open(&fx.log, other).expect_err("must refuse");
    assert!(matches!(err, AuditError::ForeignKey { .. }), "{err}");
}

#[test]
fn second_writer_is_locked_out_and_new_log_is_private() {
    let fx = Fixture::new(1);
    let log = fx.open();
    let err = AuditLog::open(&fx.log, fx.signer()).expect_err("second writer");
    assert!(matches!(err, AuditError::Locked { .. }), "{err}");
    drop(log);
    fx.open();
    let mode = std::fs::metadata(&fx.log)
        .expect("stat")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn failed_write_is_rolled_back_refused_and_the_log_stays_usable() {
    let fx = Fixture::new(3);
    let log = fx.open();
    let size = std::fs::metadata(&fx.log).expect("stat").len();
    log.inject(Fault::PartialWrite(40));
    let err = log.append(&event(4)).expect_err("must fail closed");
    assert_cut_back(&err, 4);
    assert_eq!(std::fs::metadata(&fx.log).expect("stat").len(), size);
    assert_eq!(log.append(&event(4)).expect("next append").seq, 4);
    drop(log);
    assert_eq!(fx.verify().records, 4);
}

#[test]
fn unrecoverable_write_failure_refuses_every_later_append() {
    let fx = Fixture::new(3);
    let log = fx.open();
    log.inject(Fault::PartialWriteNoRollback(40));
    let err = log.append(&event(4)).expect_err("must fail");
    assert!(matches!(
        err,
        AuditError::Write {
            rolled_back: false,
            ..
        }
    ));
    let err = log.append(&event(5)).expect_err("must stay closed");
    assert!(matches!(err, AuditError::Broken { .. }), "{err}");
    drop(log);
    let err = AuditLog::open(&fx.log, fx.signer()).expect_err("partial line");
    assert!(matches!(err, AuditError::DamagedTail { .. }), "{err}");
}

#[test]
fn misleading_events_are_refused_and_not_written() {
    let fx = Fixture::new(0);
    let log = fx.open();
    let no_rule = AuditEvent::new(Actor::Controller, Action::Deny).with_subject("x@R");
    let allowed_deny = AuditEvent {
        decision: Decision::Allow,
        ..AuditEvent::new(Actor::Controller, Action::Deny).with_reason("rule r")
    };
    let no_actor = AuditEvent::new(Actor::Node(String::new()), Action::Issue);
    for bad in [no_rule, allowed_deny, no_actor] {
        let err = log.append(&bad).expect_err("refused");
        assert!(matches!(err, AuditError::InvalidEvent(_)), "{err}");
    }
    let huge = event(1).with_reason("x".repeat(MAX_LINE_BYTES));
    assert!(matches!(
        log.append(&huge),
        Err(AuditError::TooLarge { .. })
    ));
    assert_eq!(std::fs::metadata(&fx.log).expect("stat").len(), 0);
    let denial = AuditEvent::new(Actor::Node("n1".into()), Action::Deny)
        .with_kind(CredentialKind::Keytab)
        .with_subject("HTTP/web@EXAMPLE.COM")
        .denied(
            Reason::PrincipalNotOwned,
            "HTTP/web is not owned by the role account of namespace dev",
        );
    let rec = log.append(&denial).expect("a denial with its rule");
    assert_eq!(rec.decision, Decision::Deny);
    assert_eq!(rec.reason, "principal_not_owned");
    assert_eq!(rec.event(), denial, "the record gives the event back");
}

#[test]
fn key_file_is_private_reloads_and_is_never_printed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.key");
    let k1 = AuditSigner::load_or_generate(&path).expect("generate");
    let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let k2 = AuditSigner::load_or_generate(&path).expect("reload");
    assert_eq!(k1.public_key(), k2.public_key());
    assert_eq!(k1.key_id(), key_id_of(k1.public_key()));
    assert_eq!(k1.public_key_hex().len(), 64);
    let secret_hex = std::fs::read_to_string(&path).expect("read");
    let printed = format!("{k1:?}");
    assert!(!printed.contains(secret_hex.trim()) && !printed.contains(&secret_hex[32..96]));
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    let err = AuditSigner::load_or_generate(&path).expect_err("loose mode");
    assert!(err.to_string().contains("chmod 600"), "{err}");
}

#[test]
fn binary_der_key_is_accepted_and_garbage_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hex_path = dir.path().join("hex.key");
    let k = AuditSigner::load_or_generate(&hex_path).expect("generate");
    let der = hex::decode(std::fs::read_to_string(&hex_path).expect("read").trim()).expect("hex");
    let der_path = dir.path().join("der.key");
    std::fs::write(&der_path, &der).expect("write");
    std::fs::set_permissions(&der_path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    assert_eq!(
        AuditSigner::load(&der_path).expect("der").public_key(),
        k.public_key()
    );
    assert!(AuditSigner::from_pkcs8(b"not a key").is_err());
    assert!(AuditSigner::from_pkcs8(b"abcdef").is_err());
}

#[test]
fn concurrent_appends_from_8_threads_form_one_valid_chain() {
    let fx = Fixture::new(0);
    let log = Arc::new(fx.open());
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for i in 0..50 {
                    let ev = AuditEvent::new(Actor::Node(format!("t{t}")), Action::Refresh)
                        .with_subject(format!("t{t}-{i}"));
                    log.append(&ev).expect("append");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
    assert_eq!(log.head().map(|h| h.seq), Some(400));
    drop(log);
    fx.assert_intact(400);
    for t in 0..8 {
        let f = AuditFilter {
            subject: Some(format!("t{t}-")),
            ..AuditFilter::default()
        };
        assert_eq!(query(&fx.log, &f).expect("query").len(), 50);
    }
}

#[test]
fn timestamps_are_rfc3339_utc_with_milliseconds() {
    assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
    assert_eq!(rfc3339_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
    assert_eq!(rfc3339_ms(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    assert_eq!(rfc3339_ms(4_107_542_399_999), "2100-02-28T23:59:59.999Z");
    assert_eq!(rfc3339_ms(-1), "1969-12-31T23:59:59.999Z");
}

#[test]
fn action_names_round_trip_and_log_is_shareable() {
    fn shareable<T: Send + Sync>() {}
    shareable::<AuditLog>();
    for a in Action::ALL {
        assert_eq!(a.as_str().parse::<Action>(), Ok(a));
        assert_eq!(serde_json::to_string(&a).expect("json"), format!("\"{a}\""));
    }
    assert!("nodelost".parse::<Action>().is_err());
}

#[test]
fn keys_of_earlier_releases_and_openssl_sign_as_ring_did() {
    use ring::signature::{Ed25519KeyPair, KeyPair};
    // A key as earlier releases wrote it (ring's PKCS#8 v2).
    let doc = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).expect("ring key");
    let ring_key = Ed25519KeyPair::from_pkcs8(doc.as_ref()).expect("ring parse");
    let signer = AuditSigner::from_pkcs8(doc.as_ref()).expect("v2 key");
    assert_eq!(signer.public_key(), ring_key.public_key().as_ref());
    let digest = [0x5au8; 32];
    assert_eq!(
        signer.sign(&digest),
        hex::encode(ring_key.sign(&digest).as_ref()),
        "Ed25519 is deterministic: the same key signs the same bytes"
    );

    // The same key as `openssl genpkey -algorithm ed25519` writes it (v1:
    // RFC 8410's fixed prefix, then the 32-byte seed).
    let fresh = AuditSigner::generate().expect("generate");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("new.key");
    let written = AuditSigner::load_or_generate(&path).expect("new key");
    let der = hex::decode(std::fs::read_to_string(&path).expect("read").trim()).expect("hex");
    // What this release writes, ring (the verifiers' library) reads.
    let reread = Ed25519KeyPair::from_pkcs8(&der).expect("ring reads a new key file");
    assert_eq!(reread.public_key().as_ref(), written.public_key());
    let seed = &der[16..48];
    let v1 = [
        &hex::decode("302e020100300506032b657004220420").expect("prefix")[..],
        seed,
    ]
    .concat();
    let from_v1 = AuditSigner::from_pkcs8(&v1).expect("v1 key");
    assert_eq!(from_v1.public_key(), written.public_key());
    assert_ne!(fresh.public_key(), written.public_key());

    // A v2 document whose public key is not the private key's is refused.
    let mut mismatched = doc.as_ref().to_vec();
    let last = mismatched.len() - 1;
    mismatched[last] ^= 1;
    assert!(AuditSigner::from_pkcs8(&mismatched).is_err());
}

#[test]
fn a_key_in_ring_0_16s_v2_form_still_loads() {
    use ring::signature::{Ed25519KeyPair, KeyPair};
    let doc = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).expect("ring key");
    let standard = doc.as_ref();
    // ring 0.17: `30 51 ... 81 21 00 <public key>`; ring 0.16 wrote the
    // public key as `a1 23 03 21 00 <public key>`.
    assert_eq!(&standard[..2], &[0x30, 0x51]);
    let at = standard.len() - 35;
    assert_eq!(&standard[at..at + 3], &[0x81, 0x21, 0x00]);
    let mut legacy = vec![0x30, 0x53];
    legacy.extend_from_slice(&standard[2..at]);
    legacy.extend_from_slice(&[0xa1, 0x23, 0x03, 0x21, 0x00]);
    legacy.extend_from_slice(&standard[at + 3..]);
    let ring_key = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&legacy).expect("ring reads it");
    let signer = AuditSigner::from_pkcs8(&legacy).expect("the older form loads");
    assert_eq!(signer.public_key(), ring_key.public_key().as_ref());
    let digest = [3u8; 32];
    assert_eq!(
        signer.sign(&digest),
        hex::encode(ring_key.sign(&digest).as_ref())
    );
    // Its public key swapped for another key's: refused.
    let other = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).expect("key");
    let other_public = &other.as_ref()[other.as_ref().len() - 32..];
    let mut mismatched = legacy.clone();
    let n = mismatched.len();
    mismatched[n - 32..].copy_from_slice(other_public);
    assert!(AuditSigner::from_pkcs8(&mismatched).is_err());
}
