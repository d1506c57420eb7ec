//! Every kind of tampering an auditor must see, one test each.

use super::tests::{Fixture, event};
use super::*;

/// The first problem, which the test requires to exist.
fn problem(fx: &Fixture) -> Problem {
    fx.verify()
        .first_problem
        .expect("tampering must be detected")
}

#[test]
fn edited_record_is_reported_as_edited_at_that_record() {
    let fx = Fixture::new(20);
    let mut lines = fx.lines();
    assert!(lines[6].contains("HTTP/svc-7@EXAMPLE.COM"));
    lines[6] = lines[6].replace("HTTP/svc-7@EXAMPLE.COM", "HTTP/evil@EXAMPLE.COM");
    fx.write_lines(&lines);
    let report = fx.verify();
    assert_eq!(report.records, 6, "records before the edit are good");
    let p = report.first_problem.expect("detected");
    assert_eq!(
        (p.kind, p.line, p.seq),
        (ProblemKind::HashMismatch, 7, Some(7))
    );
    assert_eq!(
        p.message,
        "record 7 was edited: its content no longer matches its hash"
    );
}

#[test]
fn edited_record_with_recomputed_hash_fails_its_signature() {
    let fx = Fixture::new(20);
    let mut lines = fx.lines();
    let mut rec: AuditRecord = serde_json::from_str(&lines[6]).expect("parse");
    rec.decision = Decision::Deny;
    rec.reason = "rule x".into();
    rec.hash = hex::encode(rec.content_hash().expect("hash"));
    lines[6] = serde_json::to_string(&rec).expect("json");
    fx.write_lines(&lines);
    let p = problem(&fx);
    assert_eq!((p.kind, p.line), (ProblemKind::BadSignature, 7));
    assert!(
        p.message.contains(
            "record 7 has an invalid signature: it was changed by someone without the audit key"
        ),
        "{}",
        p.message
    );
}

#[test]
fn deleted_record_is_reported_missing_between_its_neighbours() {
    let fx = Fixture::new(20);
    let mut lines = fx.lines();
    lines.remove(11);
    fx.write_lines(&lines);
    let p = problem(&fx);
    assert_eq!(
        (p.kind, p.line, p.seq),
        (ProblemKind::SequenceGap, 12, Some(13))
    );
    assert_eq!(p.message, "record 12 is missing: 11 is followed by 13");
}

#[test]
fn several_deleted_records_and_a_deleted_first_record_are_named() {
    let fx = Fixture::new(20);
    let mut lines = fx.lines();
    lines.drain(11..14);
    fx.write_lines(&lines);
    assert_eq!(
        problem(&fx).message,
        "records 12 to 14 are missing: 11 is followed by 15"
    );
    let fx = Fixture::new(5);
    let mut lines = fx.lines();
    lines.remove(0);
    fx.write_lines(&lines);
    let p = problem(&fx);
    assert_eq!(p.kind, ProblemKind::SequenceGap);
    assert_eq!(
        p.message,
        "record 1 is missing from the start: the log begins with record 2 \
         (if older segments were archived, verify from the head of the last archived record)"
    );
}

#[test]
fn swapped_records_are_reported_out_of_order() {
    let fx = Fixture::new(20);
    let mut lines = fx.lines();
    lines.swap(4, 5);
    fx.write_lines(&lines);
    let p = problem(&fx);
    assert_eq!(
        (p.kind, p.line, p.seq),
        (ProblemKind::SequenceOutOfOrder, 5, Some(6))
    );
    assert_eq!(
        p.message,
        "records 5 and 6 are out of order: line 5 holds record 6 and line 6 holds record 5"
    );
}

#[test]
fn duplicated_record_is_reported() {
    let fx = Fixture::new(10);
    let mut lines = fx.lines();
    let copy = lines[3].clone();
    lines.insert(4, copy);
    fx.write_lines(&lines);
    let p = problem(&fx);
    assert_eq!(p.kind, ProblemKind::SequenceOutOfOrder);
    assert_eq!(p.message, "record 4 appears twice (lines 4 and 5)");
}

#[test]
fn truncated_tail_passes_alone_but_fails_the_head_check() {
    let fx = Fixture::new(20);
    let head = fx.open().head().expect("head");
    let mut lines = fx.lines();
    lines.truncate(18);
    fx.write_lines(&lines);
    // The limitation the stored head exists for: a shorter log is valid.
    assert!(fx.verify().is_ok());
    let report = verify_with_head(&fx.log, &fx.public_key(), &head).expect("verify");
    let p = report.first_problem.expect("truncation detected");
    assert_eq!((p.kind, p.line), (ProblemKind::Truncated, 19));
    assert_eq!(
        p.message,
        "the log ends at record 18, but the controller wrote records up to 20: \
         records 19 to 20 were removed from the end"
    );
    fx.write_lines(&[]);
    let report = verify_with_head(&fx.log, &fx.public_key(), &head).expect("verify");
    assert!(
        report
            .first_problem
            .expect("empty")
            .message
            .contains("all were removed")
    );
}

#[test]
fn head_check_passes_on_an_intact_log_that_grew_since() {
    let fx = Fixture::new(10);
    let head = fx.open().head().expect("head");
    fx.open().append(&event(11)).expect("append");
    let report = verify_with_head(&fx.log, &fx.public_key(), &head).expect("verify");
    assert!(report.is_ok(), "{:?}", report.first_problem);
    assert_eq!(report.records, 11);
}

#[test]
fn log_rewritten_with_the_key_fails_the_head_check() {
    let fx = Fixture::new(10);
    let head = fx.open().head().expect("head");
    std::fs::remove_file(&fx.log).expect("rm");
    let log = fx.open();
    for i in 1..=10 {
        log.append(&event(i).with_reason("rewritten"))
            .expect("append");
    }
    drop(log);
    assert!(fx.verify().is_ok(), "a consistent rewrite verifies alone");
    let report = verify_with_head(&fx.log, &fx.public_key(), &head).expect("verify");
    let p = report.first_problem.expect("rewrite detected");
    assert_eq!((p.kind, p.seq), (ProblemKind::HeadMismatch, Some(10)));
    assert!(p.message.contains("the log was rewritten"), "{}", p.message);
}

#[test]
fn signature_by_another_key_fails_verification() {
    let fx = Fixture::new(5);
    let other = AuditSigner::generate().expect("key");
    let report = verify(&fx.log, other.public_key()).expect("verify");
    assert_eq!(report.records, 0);
    let p = report.first_problem.expect("wrong key");
    assert_eq!((p.kind, p.line), (ProblemKind::BadSignature, 1));
    assert!(
        p.message.contains("not by the audit key given"),
        "{}",
        p.message
    );
    assert!(matches!(
        verify(&fx.log, &[0u8; 31]),
        Err(AuditError::PublicKey { len: 31 })
    ));
}

#[test]
fn record_spliced_from_another_log_breaks_the_chain() {
    let fx = Fixture::new(10);
    let other = fx.dir.path().join("other.jsonl");
    let log = AuditLog::open(&other, fx.signer()).expect("open");
    for i in 1..=10 {
        log.append(&event(i + 100)).expect("append");
    }
    drop(log);
    let mut lines = fx.lines();
    lines[6] = super::tests::read_lines(&other)[6].clone();
    fx.write_lines(&lines);
    let p = problem(&fx);
    assert_eq!((p.kind, p.seq), (ProblemKind::ChainBroken, Some(7)));
    assert!(
        p.message.starts_with("record 7 does not follow record 6"),
        "{}",
        p.message
    );
}

#[test]
fn unparseable_lines_are_reported_with_their_number() {
    let fx = Fixture::new(5);
    let mut lines = fx.lines();
    lines[2] = lines[2].replacen('{', r#"{"extra":"unhashed","#, 1);
    fx.write_lines(&lines);
    let p = problem(&fx);
    assert_eq!((p.kind, p.line, p.seq), (ProblemKind::Unparseable, 3, None));
    assert!(p.message.contains("unknown field"), "{}", p.message);

    let fx = Fixture::new(5);
    let mut text = std::fs::read_to_string(&fx.log).expect("read");
    text.truncate(text.len() - 10);
    std::fs::write(&fx.log, text).expect("write");
    let p = problem(&fx);
    assert_eq!((p.kind, p.line), (ProblemKind::Unparseable, 5));
    assert!(
        p.message.starts_with("line 5 is incomplete"),
        "{}",
        p.message
    );
}
