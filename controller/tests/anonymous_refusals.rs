//! Issue 11, item 3: callers that prove no identity cannot fill the audit
//! log. Their refusals are recorded once per source and reason and window,
//! with a count; the log's growth stays bounded however many calls come.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Files, Running};
use kcred_audit::{Action, AuditRecord, Decision};
use kcred_proto::kcred::v1::admin_client::AdminClient;
use kcred_proto::kcred::v1::{
    FetchBundleRequest, FetchBundlesRequest, HeartbeatRequest, Reason, StatusRequest, VolumeRequest,
};
use kcred_proto::reason::reason_of;
use kcred_testrealm::Realm;

const CALLS: usize = 3000;

fn refused(f: &Files) -> Vec<AuditRecord> {
    kcred_audit::query(&f.config.audit_log, &Default::default())
        .unwrap()
        .into_iter()
        .filter(|r| r.action == Action::Deny && r.decision == Decision::Deny)
        .collect()
}

/// A controller whose callers must prove a Kerberos identity.
fn kerberos_files(realm: &Realm, dir: &std::path::Path) -> Files {
    realm.add_principal("kcred/controller.test").unwrap();
    let keytab = dir.join("kcred.keytab");
    realm
        .extract_keytab("kcred/controller.test", &keytab)
        .unwrap();
    Files::with_auth(
        &format!(
            "[auth]\nmode = \"kerberos\"\nkeytab = \"{}\"\n",
            keytab.display()
        ),
        "",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_anonymous_calls_leave_a_bounded_number_of_records() {
    let realm = Realm::start().expect("realm");
    let dir = tempfile::tempdir().unwrap();
    let f = kerberos_files(&realm, dir.path());
    let c = Running::start(&f.config).await;
    let mut node = c.node_client().await;
    for i in 0..CALLS {
        // Each with an attacker-chosen node name, and no token.
        let err = node
            .heartbeat(HeartbeatRequest {
                node_name: format!("n{i}.attacker.example"),
                volume_ids: vec![],
            })
            .await
            .expect_err("no token");
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
    }
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", c.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut admin = AdminClient::new(channel);
    for _ in 0..CALLS / 3 {
        let err = admin
            .status(StatusRequest::default())
            .await
            .expect_err("no token");
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
    }
    c.stop().await;

    let records = refused(&f);
    // One source, one reason: the first refusal as it was (node API), then
    // one summary for the rest of the window, both APIs together (the
    // window outlasts the test; the summary comes at shutdown).
    assert_eq!(records.len(), 2, "{records:#?}");
    assert!(records.iter().all(|r| r.reason == "unauthenticated"));
    assert_eq!(records[0].node, "n0.attacker.example");
    let (more, _) = records[1]
        .detail
        .split_once(" more refusals from 127.0.0.1 in ")
        .expect("a summary");
    assert_eq!(more.parse::<usize>().unwrap(), CALLS + CALLS / 3 - 1);
}

/// Two bytes an empty entry on the wire, a hundred and more decoded: the
/// entries are counted before the message is decoded, so before the
/// caller is authenticated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_empty_entries_are_refused_before_they_are_decoded() {
    let realm = Realm::start().expect("realm");
    let dir = tempfile::tempdir().unwrap();
    let f = kerberos_files(&realm, dir.path());
    let c = Running::start(&f.config).await;
    let mut node = c.node_client().await;
    // Far more than allowed, far less than the 4 MiB a message may take
    // (the client builds them decoded: 150 bytes each).
    const ENTRIES: usize = 100_000;

    let err = node
        .fetch_bundles(FetchBundlesRequest {
            node_name: "n.attacker.example".into(),
            volumes: vec![VolumeRequest::default(); ENTRIES],
        })
        .await
        .expect_err("refused");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(
        err.message()
            .contains("100000 volumes in one call, at most 256"),
        "{err:?}"
    );
    assert_eq!(reason_of(&err), Some(Reason::RequestInvalid));

    let err = node
        .heartbeat(HeartbeatRequest {
            node_name: "n.attacker.example".into(),
            volume_ids: vec![String::new(); ENTRIES],
        })
        .await
        .expect_err("refused");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("lists 100000 volumes"), "{err:?}");
    c.stop().await;
}

/// A refusal quotes the node name its caller claimed, in the audit record
/// too: a name no node can have is refused before anything else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_name_no_node_can_have_is_refused_before_authentication() {
    let realm = Realm::start().expect("realm");
    let dir = tempfile::tempdir().unwrap();
    let f = kerberos_files(&realm, dir.path());
    let c = Running::start(&f.config).await;
    let mut node = c.node_client().await;
    let long = "n".repeat(60_000);

    let err = node
        .fetch_bundle(FetchBundleRequest {
            node_name: long.clone(),
            ..Default::default()
        })
        .await
        .expect_err("refused");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().starts_with("node_name"), "{err:?}");
    let err = node
        .fetch_bundles(FetchBundlesRequest {
            node_name: long,
            volumes: vec![VolumeRequest::default()],
        })
        .await
        .expect_err("refused");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    c.stop().await;
    assert!(refused(&f).is_empty(), "{:#?}", refused(&f));
}
