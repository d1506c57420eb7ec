//! `audit verify` on real logs written by the controller's audit module.

use std::fs;
use std::path::PathBuf;

use kcred_audit::{Action, Actor, AuditEvent, AuditLog, AuditSigner, CredentialKind};

use super::*;

/// A temp dir with a log of `n` records; returns (dir, log, public key, head).
fn log_with(n: usize) -> (tempfile::TempDir, PathBuf, [u8; 32], AuditHead) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.jsonl");
    let signer = AuditSigner::generate().expect("key");
    let key: [u8; 32] = signer.public_key().try_into().expect("32 bytes");
    let log = AuditLog::open(&path, signer).expect("open");
    for i in 1..=n {
        let event = AuditEvent::new(Actor::Node("node-a".into()), Action::Issue)
            .with_kind(CredentialKind::Keytab)
            .with_subject(format!("HTTP/svc-{i}@EXAMPLE.COM"))
            .with_kvno(2)
            .with_place("node-a", "prod", format!("pod-{i}"));
        log.append(&event).expect("append");
    }
    let head = log.head().unwrap_or(AuditHead {
        seq: 0,
        hash: String::new(),
    });
    (dir, path, key, head)
}

fn run(path: &Path, key: &[u8; 32], expected: Option<AuditHead>) -> Verdict {
    let report = verify_path(path, key, &Start::Genesis, expected.as_ref()).expect("verifies");
    verdict(&report, key, expected, None)
}

fn edit_line(path: &Path, index: usize, from: &str, to: &str) {
    let text = fs::read_to_string(path).expect("read");
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    assert!(lines[index].contains(from));
    lines[index] = lines[index].replace(from, to);
    fs::write(path, lines.join("\n") + "\n").expect("write");
}

#[test]
fn an_intact_log_passes() {
    let (_dir, path, key, head) = log_with(5);
    let v = run(&path, &key, Some(head.clone()));
    assert!(v.ok);
    assert_eq!((v.records, v.head.as_ref()), (5, Some(&head)));
    assert_eq!(
        render(&v),
        format!(
            "OK: 5 records, chain intact, head seq 5\nhead hash {}, audit key {}\npublic key {} (pin it with --public-key)\n",
            head.hash,
            key_id_of(&key),
            hex::encode(key)
        )
    );
    assert!(run(&path, &key, None).ok, "also without a head");
}

#[test]
fn an_edited_line_is_reported_as_edited() {
    let (_dir, path, key, head) = log_with(5);
    edit_line(&path, 2, "HTTP/svc-3@", "HTTP/evil@");
    let v = run(&path, &key, Some(head));
    assert!(!v.ok);
    let p = v.problem.as_ref().expect("problem");
    assert_eq!(
        (p.line, p.seq, p.kind.as_str()),
        (3, Some(3), "hash_mismatch")
    );
    assert_eq!(
        render(&v),
        "FAILED: line 3: record 3 was edited: its content no longer matches its hash\n\
         2 records before it are intact (up to seq 2)\n"
    );
}

#[test]
fn a_cut_end_is_caught_only_with_the_head() {
    let (_dir, path, key, head) = log_with(5);
    let text = fs::read_to_string(&path).expect("read");
    let kept: Vec<&str> = text.lines().take(3).collect();
    fs::write(&path, kept.join("\n") + "\n").expect("write");
    assert!(run(&path, &key, None).ok, "a shorter log is valid alone");
    let v = run(&path, &key, Some(head));
    let p = v.problem.expect("truncation detected");
    assert_eq!(p.kind, "truncated");
    assert!(
        p.message
            .contains("records 4 to 5 were removed from the end"),
        "{}",
        p.message
    );
}

#[test]
fn another_key_fails_and_the_json_shape_is_stable() {
    let (_dir, path, _key, head) = log_with(2);
    let other: [u8; 32] = AuditSigner::generate()
        .expect("key")
        .public_key()
        .try_into()
        .expect("32 bytes");
    let v = run(&path, &other, Some(head));
    assert!(!v.ok);
    let json = serde_json::to_value(&v).expect("encodes");
    assert_eq!(json["ok"], false);
    assert_eq!(json["records"], 0);
    assert_eq!(json["problem"]["kind"], "bad_signature");
    assert_eq!(json["problem"]["line"], 1);
    assert_eq!(json["expected_head"]["seq"], 2);
    assert_eq!(json["key_id"], key_id_of(&other));
    assert!(json["head"].is_null() && json["key_mismatch"].is_null());
}

#[test]
fn a_pinned_key_wins_and_a_different_reported_key_is_a_failure() {
    let (_dir, path, key, head) = log_with(3);
    let reported = hex::encode(key);
    assert_eq!(choose_key(&reported, None).expect("valid").0, key.to_vec());
    let (used, mismatch) = choose_key(&reported, Some(key)).expect("valid");
    assert_eq!((used, mismatch), (key.to_vec(), None));

    let other = AuditSigner::generate().expect("key");
    let (used, mismatch) = choose_key(&other.public_key_hex(), Some(key)).expect("valid");
    assert_eq!(used, key.to_vec(), "the pinned key is used");
    let mismatch = mismatch.expect("reported");
    assert!(mismatch.contains(other.key_id()), "{mismatch}");
    let report = verify_path(&path, &used, &Start::Genesis, Some(&head)).expect("verifies");
    let v = verdict(&report, &used, Some(head), Some(mismatch));
    assert!(!v.ok, "the log verifies, but the controller's key changed");
    assert!(render(&v).starts_with("FAILED: the controller reports audit key"));

    assert!(choose_key("abcd", Some(key)).is_err());
}

#[test]
fn a_missing_file_is_an_error_not_a_verdict() {
    let (_dir, path, key, _) = log_with(0);
    let err = verify_path(&path.with_extension("gone"), &key, &Start::Genesis, None)
        .expect_err("missing");
    assert!(
        err.to_string().starts_with("cannot verify: audit log"),
        "{err}"
    );
    assert_eq!(run(&path, &key, None).records, 0);
}
