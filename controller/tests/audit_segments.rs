//! The controller on an audit log in segments: the start check finds the
//! stored head in whichever segment holds it, and the chain goes on.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Files, read_lines, start_and_stop};
use kcred_audit::segments::{sealed_name, segments};
use kcred_audit::{
    Action, Actor, AuditEvent, AuditHead, AuditLog, AuditRecord, AuditSigner, Rotation, verify,
};
use kcred_controller::audit_head;

/// Appends `n` records in small segments, storing each head as a running
/// controller does.
fn write_rotated(f: &Files, n: usize) -> AuditHead {
    let store = f.store();
    let signer = AuditSigner::load_or_generate(&f.config.audit_key).unwrap();
    let rotation = Rotation {
        max_bytes: 2048,
        max_age: None,
    };
    let log = AuditLog::open_rotating(&f.config.audit_log, signer, rotation).unwrap();
    let mut head = None;
    for i in 0..n {
        let e = AuditEvent::new(Actor::Controller, Action::Admin).with_reason(format!("event {i}"));
        let h = log.append(&e).unwrap().head();
        audit_head::store_head(&store, log.signer().key_id(), &h).unwrap();
        head = Some(h);
    }
    head.unwrap()
}

fn public_key(f: &Files) -> Vec<u8> {
    let signer = AuditSigner::load_or_generate(&f.config.audit_key).unwrap();
    signer.public_key().to_vec()
}

const CONFIG: &str = "[audit]\nmax_segment_bytes = 65536\nsink = \"stdout\"\n";

#[tokio::test]
async fn a_controller_starts_on_a_log_in_segments_and_continues_its_chain() {
    let f = Files::new(CONFIG);
    write_rotated(&f, 30);
    assert!(segments(&f.config.audit_log).unwrap().len() > 3);

    start_and_stop(&f.config).await.expect("starts");
    let report = verify(&f.config.audit_log, &public_key(&f)).unwrap();
    assert!(report.is_ok(), "{:?}", report.first_problem);
    assert!(report.records >= 30);
}

#[tokio::test]
async fn an_empty_active_file_takes_the_head_from_the_newest_sealed_segment() {
    let f = Files::new(CONFIG);
    let head = write_rotated(&f, 30);
    // Sealed just before a crash: the active file is new and empty.
    let active = &f.config.audit_log;
    let first: AuditRecord = serde_json::from_str(&read_lines(active)[0]).unwrap();
    std::fs::rename(active, sealed_name(active, first.seq)).unwrap();
    std::fs::write(active, "").unwrap();

    start_and_stop(&f.config)
        .await
        .expect("the stored head is found in the sealed segment");
    let report = verify(active, &public_key(&f)).unwrap();
    assert!(report.is_ok(), "{:?}", report.first_problem);
    assert!(report.head.unwrap().seq >= head.seq);
}

#[tokio::test]
async fn a_cut_active_segment_stops_the_start() {
    let f = Files::new(CONFIG);
    write_rotated(&f, 30);
    let active = &f.config.audit_log;
    let mut lines = read_lines(active);
    lines.pop();
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(active, text).unwrap();

    let err = start_and_stop(&f.config).await.expect_err("cut log");
    let msg = err.to_string();
    assert!(msg.contains("ends at record 29"), "{msg}");
    assert!(msg.contains("up to 30"), "{msg}");
}
