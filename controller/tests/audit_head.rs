//! Issue 11, item 2: an audit log cut, deleted or replaced while the
//! controller is stopped stops the next start, and the stored head is never
//! replaced by a shorter chain unless an operator acknowledges the loss.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Files, Running, start_and_stop};
use kcred_audit::{Action, Actor, AuditEvent, AuditHead};
use kcred_controller::audit_head::{self, LOST_HEAD_PREFIX};
use kcred_controller::store::Table;
use kcred_proto::kcred::v1::{FetchBundleRequest, PodRef};

/// Appends `n` records as a running controller does: the log, then its
/// head in the store.
fn write_records(f: &Files, n: usize) -> AuditHead {
    let store = f.store();
    let log = f.audit();
    let mut head = None;
    for i in 0..n {
        let e = AuditEvent::new(Actor::Controller, Action::Admin).with_reason(format!("event {i}"));
        let h = log.append(&e).unwrap().head();
        audit_head::store_head(&store, log.signer().key_id(), &h).unwrap();
        head = Some(h);
    }
    head.unwrap()
}

fn stored(f: &Files) -> Option<AuditHead> {
    let key_id = f.audit().signer().key_id().to_string();
    audit_head::stored_head(&f.store(), &key_id).unwrap()
}

fn keep_lines(f: &Files, n: usize) {
    let lines = f.audit_lines();
    let mut text = lines[..n].join("\n");
    text.push('\n');
    std::fs::write(&f.config.audit_log, text).unwrap();
}

#[tokio::test]
async fn a_log_cut_while_stopped_stops_the_start_and_keeps_the_stored_head() {
    let f = Files::new("");
    let head = write_records(&f, 5);
    keep_lines(&f, 3);

    let err = start_and_stop(&f.config).await.expect_err("cut log");
    let msg = err.to_string();
    assert!(msg.contains("ends at record 3"), "{msg}");
    assert!(msg.contains("up to 5"), "{msg}");
    assert!(msg.contains("docs/operations-audit.md"), "{msg}");
    assert!(msg.contains("--acknowledge-audit-loss"), "{msg}");
    assert_eq!(f.audit_lines().len(), 3, "nothing appended");
    assert_eq!(stored(&f), Some(head), "stored head kept");
}

#[tokio::test]
async fn a_deleted_log_stops_the_start_and_is_not_recreated() {
    let f = Files::new("");
    write_records(&f, 2);
    std::fs::remove_file(&f.config.audit_log).unwrap();

    let err = start_and_stop(&f.config).await.expect_err("deleted log");
    assert!(err.to_string().contains("is missing"), "{err}");
    assert!(!f.config.audit_log.exists(), "no fresh log from record 1");
}

#[tokio::test]
async fn a_log_replaced_by_another_chain_stops_the_start() {
    let f = Files::new("");
    let head = write_records(&f, 3);
    // A new chain of the same length, signed by the same key, while the
    // store still remembers the first one.
    std::fs::remove_file(&f.config.audit_log).unwrap();
    {
        let log = f.audit();
        for i in 0..4 {
            let e = AuditEvent::new(Actor::Controller, Action::Admin)
                .with_reason(format!("forged {i}"));
            log.append(&e).unwrap();
        }
    }
    let err = start_and_stop(&f.config).await.expect_err("replaced log");
    let msg = err.to_string();
    assert!(msg.contains("does not reach the stored head"), "{msg}");
    assert!(msg.contains("rewritten"), "{msg}");
    assert_eq!(stored(&f), Some(head));
}

#[tokio::test]
async fn a_log_ahead_of_its_stored_head_on_the_same_chain_starts() {
    let f = Files::new("");
    let head = write_records(&f, 3);
    // A crash between the append and the store's update.
    f.audit()
        .append(&AuditEvent::new(Actor::Controller, Action::Admin))
        .unwrap();
    start_and_stop(&f.config)
        .await
        .expect("same chain, further along");
    assert_eq!(stored(&f), Some(head), "start alone writes nothing");
}

#[tokio::test]
async fn an_acknowledged_loss_is_recorded_and_the_lost_head_kept() {
    let f = Files::new("");
    let lost = write_records(&f, 5);
    keep_lines(&f, 2);
    let mut cfg = f.config.clone();
    cfg.acknowledge_audit_loss = Some("INC-42: disk replaced".into());

    start_and_stop(&cfg).await.expect("acknowledged");

    let records = kcred_audit::query(&f.config.audit_log, &Default::default()).unwrap();
    assert_eq!(records.len(), 3);
    let ack = &records[2];
    assert_eq!(ack.action, Action::Admin);
    assert!(ack.reason.contains("loss acknowledged"), "{}", ack.reason);
    assert!(
        ack.reason.contains("INC-42: disk replaced"),
        "{}",
        ack.reason
    );
    assert!(ack.reason.contains(&lost.hash), "{}", ack.reason);
    let store = f.store();
    let kept: Vec<(String, audit_head::LostHead, i64)> = store
        .list::<serde_json::Value>(Table::Authority)
        .unwrap()
        .into_iter()
        .filter(|(n, _, _)| n.starts_with(LOST_HEAD_PREFIX))
        .map(|(n, v, t)| (n, serde_json::from_value(v).unwrap(), t))
        .collect();
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].1.stored, lost);
    assert_eq!(kept[0].1.reason, "INC-42: disk replaced");
    drop(store);

    // The acknowledged chain is the one remembered now: a plain restart works.
    start_and_stop(&f.config)
        .await
        .expect("restart after acknowledgement");
}

/// The head is stored after the request that appended returns (nothing
/// waits for that store commit), and a clean stop still leaves it stored:
/// the stopping controller waits for the writer to let go of the store.
#[tokio::test]
async fn a_clean_stop_leaves_the_last_head_stored() {
    let f = Files::new("");
    for round in 0..3u64 {
        let running = Running::start(&f.config).await;
        let refused = running
            .node_client()
            .await
            .fetch_bundle(FetchBundleRequest {
                node_name: "node-1".into(),
                pod: Some(PodRef {
                    namespace: "web".into(),
                    name: "nobody".into(),
                    uid: "u1".into(),
                    service_account: "default".into(),
                }),
                volume_id: format!("vol-{round}"),
                ..Default::default()
            })
            .await;
        assert!(refused.is_err(), "no such pod: refused, and audited");
        running.stop().await;
        let log_head = f.audit().head();
        assert!(
            log_head.as_ref().is_some_and(|h| h.seq > round),
            "{log_head:?}"
        );
        assert_eq!(stored(&f), log_head, "the stored head is the log's last");
    }
}
