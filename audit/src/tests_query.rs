//! Query and export.

use std::time::Duration;

use super::tests::{Fixture, event};
use super::*;

#[test]
fn query_filters_by_namespace_node_subject_action_and_time() {
    let fx = Fixture::new(0);
    let log = fx.open();
    let mut batch_start = Vec::new();
    for batch in 0..3 {
        let first = log.append(&event(batch * 10)).expect("append");
        batch_start.push(first.unix_ms);
        for i in 1..10 {
            log.append(&event(batch * 10 + i)).expect("append");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let lost = AuditEvent::new(Actor::Controller, Action::NodeLost).with_place("node-1", "", "");
    log.append(&lost).expect("append");
    let q = |f: AuditFilter| query(&fx.log, &f).expect("query");
    let ns0 = q(AuditFilter {
        namespace: Some("ns-0".into()),
        ..Default::default()
    });
    assert_eq!(ns0.len(), 15);
    assert!(ns0.iter().all(|r| r.namespace == "ns-0"));
    let node1 = q(AuditFilter {
        node: Some("node-1".into()),
        ..Default::default()
    });
    assert_eq!(node1.len(), 11, "10 issues and the node loss");
    let one = q(AuditFilter {
        subject: Some("HTTP/svc-17@EXAMPLE.COM".into()),
        ..Default::default()
    });
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].seq, 18);
    let lost = q(AuditFilter {
        action: Some(Action::NodeLost),
        node: Some("node-1".into()),
        ..Default::default()
    });
    assert_eq!(lost.len(), 1);
    assert_eq!(lost[0].actor, "controller");
    let middle = q(AuditFilter {
        since_unix_ms: Some(batch_start[1]),
        until_unix_ms: Some(batch_start[2]),
        ..Default::default()
    });
    let seqs: Vec<u64> = middle.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (11..=20).collect::<Vec<_>>());
    let none = q(AuditFilter {
        namespace: Some("ns-0".into()),
        node: Some("nowhere".into()),
        ..Default::default()
    });
    assert!(none.is_empty());
    assert_eq!(q(AuditFilter::default()).len(), 31);
}

#[test]
fn export_writes_stored_lines_that_verify() {
    let fx = Fixture::new(20);
    let pk = fx.public_key();
    let all = fx.dir.path().join("all.jsonl");
    let n = export(
        &fx.log,
        std::fs::File::create(&all).expect("create"),
        &AuditFilter::default(),
    )
    .expect("export");
    assert_eq!(n, 20);
    assert_eq!(
        std::fs::read(&all).expect("read"),
        std::fs::read(&fx.log).expect("read")
    );
    assert!(verify(&all, &pk).expect("verify").is_ok());
    let mut out = Vec::new();
    let f = AuditFilter {
        namespace: Some("ns-1".into()),
        ..Default::default()
    };
    assert_eq!(export(&fx.log, &mut out, &f).expect("export"), 10);
    let text = String::from_utf8(out).expect("utf8");
    for line in text.lines() {
        let rec: AuditRecord = serde_json::from_str(line).expect("json line");
        assert_eq!(rec.namespace, "ns-1");
        assert_eq!(rec.verify_alone(&pk), Ok(()));
        assert!(fx.lines().contains(&line.to_string()), "exported as stored");
    }
}

#[test]
fn query_reports_a_damaged_line_instead_of_skipping_it() {
    let fx = Fixture::new(5);
    let mut lines = fx.lines();
    lines[2] = "garbage".into();
    fx.write_lines(&lines);
    let err = query(&fx.log, &AuditFilter::default()).expect_err("damaged");
    assert!(matches!(err, AuditError::Corrupt { line: 3, .. }), "{err}");
}
