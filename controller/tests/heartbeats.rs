//! Issue 11, item 4: a node's heartbeat can neither erase the controller's
//! records of volumes still mounted nor learn about other nodes' volumes;
//! records leave only when their pod is gone from the controller's view,
//! and that release is audited.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Files, Running};
use kcred_audit::Action;
use kcred_controller::issued::{RevokedPod, Revoker, VolumeRecord};
use kcred_controller::store::Table;
use kcred_proto::kcred::v1::{HeartbeatRequest, HeartbeatResponse};

const PODS: &str = r#"
[[pods]]
namespace = "web"
name = "web-0"
uid = "u0"
node_name = "node-2"
run_as_user = 1500
run_as_group = 1500
"#;

fn record(volume: &str, node: &str, pod: &str, uid: &str) -> VolumeRecord {
    VolumeRecord {
        volume_id: volume.into(),
        node: node.into(),
        namespace: "web".into(),
        pod: pod.into(),
        pod_uid: uid.into(),
        keytabs: Default::default(),
        ticket: None,
        certs: Default::default(),
        keys: Default::default(),
        versions: Default::default(),
        issued_unix: 0,
        generation: "g1".into(),
        revoked: false,
    }
}

/// node-2 holds vol-run (its pod runs) and vol-gone (its pod is gone);
/// node-3 holds vol-other, whose pod is gone too.
fn files() -> Files {
    let f = Files::new("");
    std::fs::write(f.path("pods.toml"), PODS).unwrap();
    let store = f.store();
    for r in [
        record("vol-run", "node-2", "web-0", "u0"),
        record("vol-gone", "node-2", "old-0", "u9"),
        record("vol-other", "node-3", "web-3", "u3"),
    ] {
        store.put(Table::Volumes, &r.volume_id, &r, b"").unwrap();
    }
    drop(store);
    f
}

async fn heartbeat(c: &Running, node: &str, held: &[&str]) -> HeartbeatResponse {
    c.node_client()
        .await
        .heartbeat(HeartbeatRequest {
            node_name: node.into(),
            volume_ids: held.iter().map(|s| s.to_string()).collect(),
        })
        .await
        .expect("heartbeat")
        .into_inner()
}

/// web-0 (vol-run's pod) as the view shows it once it has finished.
fn web_0_finished() -> kcred_controller::pods::PodInfo {
    kcred_controller::pods::PodInfo {
        namespace: "web".into(),
        name: "web-0".into(),
        uid: "u0".into(),
        node_name: "node-2".into(),
        finished: true,
        ..Default::default()
    }
}

fn volumes(f: &Files) -> Vec<String> {
    let store = f.store();
    let mut v: Vec<String> = ["vol-run", "vol-gone", "vol-other"]
        .into_iter()
        .filter(|id| {
            store
                .get::<VolumeRecord>(Table::Volumes, id)
                .unwrap()
                .is_some()
        })
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_heartbeat_keeps_records_of_volumes_whose_pods_still_run() {
    let f = files();
    let c = Running::start(&f.config).await;
    let answer = heartbeat(&c, "node-2", &[]).await;
    assert!(answer.stale_volume_ids.is_empty() && answer.revoked_volume_ids.is_empty());
    c.stop().await;

    // vol-run stays (its pod runs on node-2); vol-gone is released, on the
    // controller's own view; node-3's record is untouched.
    assert_eq!(volumes(&f), ["vol-other", "vol-run"]);
    let records = kcred_audit::query(&f.config.audit_log, &Default::default()).unwrap();
    let released: Vec<_> = records
        .iter()
        .filter(|r| r.action == Action::Release)
        .collect();
    assert_eq!(released.len(), 1, "{records:?}");
    assert_eq!(released[0].subject, "vol-gone");
    assert_eq!(released[0].node, "node-2");
    assert!(
        released[0].reason.contains("gone"),
        "{}",
        released[0].reason
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heartbeat_naming_another_nodes_volume_learns_nothing() {
    let f = files();
    let c = Running::start(&f.config).await;
    // Its owner would be told to wipe it (its pod is gone)...
    let owner = heartbeat(&c, "node-3", &["vol-other"]).await;
    assert_eq!(owner.stale_volume_ids, ["vol-other"]);
    // ...another node naming it hears exactly what an unknown id gets.
    let other = heartbeat(&c, "node-2", &["vol-other", "vol-run"]).await;
    let unknown = heartbeat(&c, "node-2", &["vol-never-issued", "vol-run"]).await;
    assert!(other.stale_volume_ids.is_empty(), "{other:?}");
    assert!(other.revoked_volume_ids.is_empty(), "{other:?}");
    assert_eq!(other, unknown);
    c.stop().await;
    assert!(volumes(&f).contains(&"vol-other".to_string()));
}

/// A heartbeat judges again only what its node lists and what it stopped
/// listing, unless a pod stopped running on the node since all its
/// records were last judged: vol-gone, dropped from the list, is released
/// at once; vol-run, dropped while its pod still ran, is released at the
/// first heartbeat after that pod leaves the view, though the node's
/// list did not change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_dropped_while_its_pod_ran_is_released_once_the_pod_leaves() {
    let f = files();
    let c = Running::start(&f.config).await;
    let first = heartbeat(&c, "node-2", &["vol-run", "vol-gone"]).await;
    assert_eq!(first.stale_volume_ids, ["vol-gone"]);
    heartbeat(&c, "node-2", &[]).await;
    assert_eq!(released(&f), ["node-2 vol-gone"]);
    heartbeat(&c, "node-2", &[]).await;
    assert_eq!(released(&f), ["node-2 vol-gone"], "web-0 still runs");

    // web-0 leaves (the pods file is re-read); its wipe is audited once
    // the view has dropped it.
    std::fs::write(f.path("pods.toml"), "").unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !audited(&f, Action::Revoke, "vol-run") {
        assert!(std::time::Instant::now() < deadline, "web-0 never left");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    heartbeat(&c, "node-2", &[]).await;
    assert_eq!(released(&f), ["node-2 vol-gone", "node-2 vol-run"]);
    c.stop().await;
    assert_eq!(volumes(&f), ["vol-other"]);
}

/// While the pod view is behind its source (a start before the first
/// list, a watch down), a pod it does not show may run: only a pod it
/// shows stopped is called stale, and no record is released. The first
/// heartbeat once it follows again judges every record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_behind_its_source_calls_only_pods_it_shows_stopped_stale() {
    let f = files();
    let c = Running::start(&f.config).await;
    c.pods.set_stale(true);
    let behind = heartbeat(&c, "node-2", &["vol-run", "vol-gone"]).await;
    assert!(behind.stale_volume_ids.is_empty(), "{behind:?}");
    heartbeat(&c, "node-2", &[]).await;
    assert!(released(&f).is_empty());
    // vol-gone's pod is not in the view; web-0, vol-run's, shown finished
    // is known stopped.
    c.pods.upsert(web_0_finished());
    let shown = heartbeat(&c, "node-2", &["vol-run", "vol-gone"]).await;
    assert_eq!(shown.stale_volume_ids, ["vol-run"]);
    heartbeat(&c, "node-2", &["vol-run"]).await;
    assert!(released(&f).is_empty(), "nothing released while behind");

    c.pods.set_stale(false);
    // The node's list did not change: only a sweep finds vol-gone.
    let current = heartbeat(&c, "node-2", &["vol-run"]).await;
    assert_eq!(current.stale_volume_ids, ["vol-run"]);
    assert_eq!(released(&f), ["node-2 vol-gone"]);
    c.stop().await;
}

/// Two heartbeats of a node (a retry beside a stream) that both judged a
/// record releasable release it once: one `release` in the audit log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_two_heartbeats_judged_releasable_is_released_once() {
    use kcred_controller::nodes::heartbeat;
    let f = files();
    let controller = kcred_controller::Controller::start(&f.config).unwrap();
    let st = controller.state();
    let first = heartbeat::answer(&st, "node-2", &[]).unwrap();
    let second = heartbeat::answer(&st, "node-2", &[]).unwrap();
    assert_eq!(first.releasable.len(), 1);
    assert_eq!(second.releasable.len(), 1);
    heartbeat::release(&st, "node-2", first.releasable).await;
    heartbeat::release(&st, "node-2", second.releasable).await;
    assert_eq!(released(&f), ["node-2 vol-gone"]);
}

/// A volume of a revoked pod whose record nobody wrote revoked (it was
/// recorded while another controller revoked the pod, and its controller
/// stopped before taking the revocation in): on the next start it is
/// audited, as the revoker's, written revoked, and not audited again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volume_revoked_with_its_pod_but_never_audited_is_audited_once() {
    let f = files();
    let store = f.store();
    let named = VolumeRecord {
        revoked: true,
        ..record("vol-a", "node-2", "web-5", "u5")
    };
    for r in [named, record("vol-b", "node-2", "web-5", "u5")] {
        store.put(Table::Volumes, &r.volume_id, &r, b"").unwrap();
    }
    let pod = RevokedPod {
        volume_id: "vol-a".into(),
        by: Some(Revoker {
            admin: "ops@R".into(),
            reason: "key leaked".into(),
        }),
    };
    store.put(Table::Revocations, "u5", &pod, b"").unwrap();
    drop(store);

    let c = Running::start(&f.config).await;
    // Until audited and written revoked.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while (!audited(&f, Action::Revoke, "vol-b") || c.state.issued.queued_revocations() > 0)
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let a = heartbeat(&c, "node-2", &["vol-a", "vol-b"]).await;
    assert_eq!(a.revoked_volume_ids, ["vol-a", "vol-b"], "{a:?}");
    c.stop().await;
    let revocations = |f: &Files| -> Vec<kcred_audit::AuditRecord> {
        kcred_audit::query(&f.config.audit_log, &Default::default())
            .unwrap()
            .into_iter()
            .filter(|r| r.action == Action::Revoke)
            .collect()
    };
    let audited = revocations(&f);
    assert_eq!(audited.len(), 1, "{audited:?}");
    let r = &audited[0];
    assert_eq!(
        (r.subject.as_str(), r.actor.as_str(), r.node.as_str()),
        ("vol-b", "admin/ops@R", "node-2")
    );
    assert!(
        r.reason
            .starts_with("key leaked (revoked with its pod's volume vol-a"),
        "{}",
        r.reason
    );
    let stored: VolumeRecord = f
        .store()
        .get(Table::Volumes, "vol-b")
        .unwrap()
        .unwrap()
        .meta;
    assert!(stored.revoked, "written revoked once audited");

    // Started again: nothing more to audit, by the sync's first pass (at
    // start; given time to finish) nor by another.
    let c = Running::start(&f.config).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(kcred_controller::revocation_sync::sync(&c.state).await, 0);
    c.stop().await;
    assert_eq!(revocations(&f).len(), 1);
}

fn audited(f: &Files, action: Action, subject: &str) -> bool {
    kcred_audit::query(&f.config.audit_log, &Default::default())
        .unwrap()
        .iter()
        .any(|r| r.action == action && r.subject == subject)
}

/// "node volume" of every release audited so far, sorted.
fn released(f: &Files) -> Vec<String> {
    let mut released: Vec<_> = kcred_audit::query(&f.config.audit_log, &Default::default())
        .unwrap()
        .into_iter()
        .filter(|r| r.action == Action::Release)
        .map(|r| format!("{} {}", r.node, r.subject))
        .collect();
    released.sort();
    released
}

/// The issue's scale: node-2's heartbeat among 100,000 records of 10,000
/// other nodes (some revoked, one naming node-2's own pod) is answered
/// and released exactly as it is alone: a heartbeat reads its node's own
/// entries of the index, and nothing of the others leaks or leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heartbeat_among_a_hundred_thousand_other_records_weighs_only_its_own() {
    const OTHERS: usize = 100_000;
    let f = files();
    let store = f.store();
    let others: Vec<(String, VolumeRecord)> = (0..OTHERS)
        .map(|i| {
            let mut r = record(
                &format!("vol-{i}"),
                &format!("node-{}", 10 + i % 10_000),
                "web-0",
                &format!("uo{i}"),
            );
            r.revoked = i % 20_000 == 1;
            (r.volume_id.clone(), r)
        })
        .collect();
    store.put_many(Table::Volumes, &others).unwrap();
    drop(store);
    let c = Running::start(&f.config).await;

    let answer = heartbeat(&c, "node-2", &["vol-run", "vol-gone", "vol-0", "vol-1"]).await;
    assert_eq!(answer.stale_volume_ids, ["vol-gone"], "{answer:?}");
    assert!(answer.revoked_volume_ids.is_empty(), "{answer:?}");
    // Another node's revoked volume is its own business; that node's
    // heartbeat releases its own unlisted records of gone pods, and those
    // only.
    let owner = heartbeat(&c, "node-11", &["vol-1", "vol-10001"]).await;
    assert_eq!(owner.revoked_volume_ids, ["vol-1"], "{owner:?}");
    assert_eq!(owner.stale_volume_ids, ["vol-10001"], "{owner:?}");
    // Nothing held: only node-2's own record of a gone pod is released.
    heartbeat(&c, "node-2", &[]).await;
    c.stop().await;

    let store = f.store();
    assert_eq!(
        store.count(Table::Volumes).unwrap(),
        (OTHERS + 3 - 5) as u64,
        "node-11's four and vol-gone leave"
    );
    assert!(
        store
            .get::<VolumeRecord>(Table::Volumes, "vol-gone")
            .unwrap()
            .is_none()
    );
    let records = kcred_audit::query(&f.config.audit_log, &Default::default()).unwrap();
    let mut released: Vec<_> = records
        .iter()
        .filter(|r| r.action == Action::Release)
        .map(|r| (r.node.as_str(), r.subject.as_str()))
        .collect();
    released.sort();
    assert_eq!(
        released,
        [
            ("node-11", "vol-30001"),
            ("node-11", "vol-50001"),
            ("node-11", "vol-70001"),
            ("node-11", "vol-90001"),
            ("node-2", "vol-gone"),
        ]
    );
}

/// A node's first call reserves its name in the store and is audited as a
/// join, once: later calls find it in the registry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_first_seen_is_recorded_and_audited_once() {
    let f = files();
    let c = Running::start(&f.config).await;
    heartbeat(&c, "node-7", &[]).await;
    heartbeat(&c, "node-7", &["vol-run"]).await;
    c.stop().await;
    let joins = kcred_audit::query(&f.config.audit_log, &Default::default())
        .unwrap()
        .into_iter()
        .filter(|r| r.action == Action::NodeJoined && r.node == "node-7")
        .count();
    assert_eq!(joins, 1);
    let store = f.store();
    let nodes: Vec<(String, serde_json::Value, i64)> = store.list(Table::Nodes).unwrap();
    assert!(nodes.iter().any(|(n, _, _)| n == "node-7"), "{nodes:?}");
}

/// A node repeating the same list takes its last verdicts while nothing
/// they rest on moved, and still hears each change at its next
/// heartbeat: a revocation, a record moved to another node, a pod that
/// finished. Every step is a repeat of a list already judged kept, the
/// case that skips the pod lookups.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_steady_nodes_repeated_heartbeat_still_hears_each_change() {
    let f = files();
    // web-0 and, beside it, web-1.
    let two_pods = format!(
        "{PODS}{}",
        PODS.replace("web-0", "web-1").replace("u0", "u1")
    );
    std::fs::write(f.path("pods.toml"), two_pods).unwrap();
    let store = f.store();
    for r in [
        record("vol-b", "node-2", "web-1", "u1"),
        record("vol-c", "node-2", "web-1", "u1x"),
    ] {
        store.put(Table::Volumes, &r.volume_id, &r, b"").unwrap();
    }
    drop(store);
    let c = Running::start(&f.config).await;
    let kept =
        |a: &HeartbeatResponse| a.stale_volume_ids.is_empty() && a.revoked_volume_ids.is_empty();
    for _ in 0..3 {
        let a = heartbeat(&c, "node-2", &["vol-run", "vol-b"]).await;
        assert!(kept(&a), "{a:?}");
    }

    // A revocation: the record changes.
    let b = c.state.issued.known("vol-b").unwrap();
    c.state
        .issued
        .revoke(
            &b,
            &[],
            &Revoker {
                admin: "ops@R".into(),
                reason: "test".into(),
            },
        )
        .1
        .unwrap();
    let a = heartbeat(&c, "node-2", &["vol-run", "vol-b"]).await;
    assert_eq!(a.revoked_volume_ids, ["vol-b"], "{a:?}");

    // A record moved to another node: unknown to node-2 from then on,
    // so no longer held there.
    for _ in 0..2 {
        let a = heartbeat(&c, "node-2", &["vol-run"]).await;
        assert!(kept(&a), "{a:?}");
    }
    let mut run = c.state.issued.known("vol-run").unwrap();
    run.node = "node-3".into();
    c.state.issued.put(&run).unwrap();
    let a = heartbeat(&c, "node-2", &["vol-run"]).await;
    assert!(kept(&a), "{a:?}");
    assert!(
        !c.state.held.is_live("node-2", "vol-run", 0),
        "node-2 no longer holds a volume recorded on node-3"
    );
    run.node = "node-2".into();
    c.state.issued.put(&run).unwrap();

    // A pod that finished: no record changed, the departures count moved.
    for _ in 0..2 {
        let a = heartbeat(&c, "node-2", &["vol-run"]).await;
        assert!(kept(&a), "{a:?}");
    }
    c.pods.upsert(web_0_finished());
    let a = heartbeat(&c, "node-2", &["vol-run"]).await;
    assert_eq!(a.stale_volume_ids, ["vol-run"], "{a:?}");
    c.stop().await;
}
