//! Issue 10: the controller learns pods and nodes from the Kubernetes API
//! (here the test API server, `kcred-testkube`, reached through a
//! kubeconfig), with no pods file anywhere: new pods are served, moved and
//! deleted pods are refused, a deletion hidden by watch expiry is caught by
//! the re-list, and an API outage neither stops what is running nor lets
//! pods the controller has never seen through.

use std::time::Duration;

use kcred_csi_driver::controller_client::{ControllerClient, ControllerError};
use kcred_proto::kcred::v1::{Bundle, PodRef, Reason};
use kcred_testkube::KubeApi;
use kcred_tests::audit::{Action, audit_records};
use kcred_tests::kube::{add_node, delete_pod, run_pod, wait_bound};
use kcred_tests::{Kubelet, Stack, StackOptions, TestPod, wait_until};

const VOL: &str = "kcred";

async fn stack_on(api: &KubeApi) -> Stack {
    stack_with(api, String::new()).await
}

async fn stack_with(api: &KubeApi, extra_config: String) -> Stack {
    let stack = Stack::start(StackOptions {
        kubeconfig: Some(api.kubeconfig()),
        extra_config,
        ..Default::default()
    })
    .await
    .expect("stack");
    assert!(stack.config.pods_file.is_none(), "no pods file anywhere");
    wait_synced(&stack, true).await;
    stack
}

fn synced(stack: &Stack) -> bool {
    stack
        .metrics()
        .kube_watch_synced
        .with_label_values(&["pods"])
        .get()
        == 1
}

async fn wait_synced(stack: &Stack, want: bool) {
    let what = if want {
        "the pod watch to sync"
    } else {
        "the pod watch to notice the outage"
    };
    wait_until(what, 30, || synced(stack) == want).await;
}

fn web_pod(name: &str, node: &str) -> TestPod {
    TestPod::with_keytabs("web", name, node, "HTTP/web.example.com")
}

async fn fetch(
    stack: &Stack,
    node: &str,
    pod: &TestPod,
    refresh: bool,
) -> Result<Bundle, ControllerError> {
    let client = ControllerClient::new(&stack.controller_endpoint(), node).expect("client");
    client
        .fetch_bundle(
            PodRef {
                namespace: pod.namespace.clone(),
                name: pod.name.clone(),
                uid: pod.uid.clone(),
                service_account: "default".into(),
            },
            &Kubelet::volume_id(pod, VOL),
            refresh,
        )
        .await
}

fn has_keytab(b: &Bundle) -> bool {
    b.files
        .iter()
        .any(|f| f.name == "krb5.keytab" && !f.content.is_empty())
}

async fn wait_forgotten(stack: &Stack, pod: &TestPod) {
    let pods = stack.pods();
    wait_until("the controller to forget the pod", 30, || {
        pods.get(&pod.namespace, &pod.name).is_none()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_pod_is_served_from_the_watch_with_no_pods_file() {
    let api = KubeApi::start().await.unwrap();
    let stack = stack_on(&api).await;
    let pod = run_pod(&api, &web_pod("web-0", "node-a")).unwrap();
    wait_bound(&stack, &pod).await;

    let bundle = fetch(&stack, "node-a", &pod, false).await.expect("served");
    assert!(has_keytab(&bundle));
    let text = stack.metrics().render();
    assert!(
        text.contains("kcred_kube_watch_synced{resource=\"pods\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("kcred_kube_watch_last_event_timestamp_seconds{resource=\"pods\"}"),
        "{text}"
    );
    stack.shutdown().await.unwrap();
}

/// A volume id names one volume of one pod (kubelet derives it from the
/// pod's UID and the volume's name): a node cannot make ids up for its own
/// pods, nor take the id of another pod's volume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volume_id_that_is_none_of_the_pods_volumes_is_refused() {
    let api = KubeApi::start().await.unwrap();
    let stack = stack_on(&api).await;
    let pod = run_pod(&api, &web_pod("web-0", "node-a")).unwrap();
    let other = run_pod(&api, &web_pod("web-1", "node-b")).unwrap();
    wait_bound(&stack, &pod).await;
    let client = ControllerClient::new(&stack.controller_endpoint(), "node-a").expect("client");
    for id in ["csi-made-up".to_string(), Kubelet::volume_id(&other, VOL)] {
        let err = client
            .fetch_bundle(pod.pod_ref(), &id, false)
            .await
            .unwrap_err();
        assert_eq!(err.reason(), Some(Reason::VolumeConflict), "{id}: {err}");
    }
    fetch(&stack, "node-a", &pod, false)
        .await
        .expect("the id of its own volume");
    stack.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rescheduled_pod_is_refused_on_the_old_node_and_served_on_the_new() {
    let api = KubeApi::start().await.unwrap();
    let stack = stack_on(&api).await;
    let old = run_pod(&api, &web_pod("web-0", "node-a")).unwrap();
    wait_bound(&stack, &old).await;
    fetch(&stack, "node-a", &old, false)
        .await
        .expect("served on node-a");

    // Deleted and recreated under the same name on another node: a new UID.
    delete_pod(&api, &old).unwrap();
    let new = run_pod(&api, &web_pod("web-0", "node-b")).unwrap();
    assert_ne!(old.uid, new.uid);
    wait_bound(&stack, &new).await;

    // Told the pod was replaced, not the new pod's UID.
    let err = fetch(&stack, "node-a", &old, true).await.unwrap_err();
    assert_eq!(err.reason(), Some(Reason::PodUidMismatch), "old UID: {err}");
    assert!(!err.status().message().contains(&new.uid), "{err}");
    let err = fetch(&stack, "node-a", &new, false).await.unwrap_err();
    assert_eq!(
        err.reason(),
        Some(Reason::PodNotOnNode),
        "not bound to node-a: {err}"
    );
    let bundle = fetch(&stack, "node-b", &new, false)
        .await
        .expect("served on node-b");
    assert!(has_keytab(&bundle));
    stack.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_pod_is_announced_gone_and_refused_on_its_next_refresh() {
    let api = KubeApi::start().await.unwrap();
    let stack = stack_on(&api).await;
    let pod = run_pod(&api, &web_pod("web-0", "node-a")).unwrap();
    wait_bound(&stack, &pod).await;
    fetch(&stack, "node-a", &pod, false).await.expect("served");
    let mut gone = stack.pods().subscribe_gone();

    delete_pod(&api, &pod).unwrap();
    let g = tokio::time::timeout(Duration::from_secs(30), gone.recv())
        .await
        .expect("announced within 30 s")
        .unwrap();
    assert_eq!(
        (g.name.as_str(), g.uid.as_str()),
        ("web-0", pod.uid.as_str())
    );
    let err = fetch(&stack, "node-a", &pod, true).await.unwrap_err();
    assert_eq!(err.reason(), Some(Reason::PodUnknown), "{err}");
    stack.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_expiry_with_a_deletion_in_the_gap_is_caught_by_the_relist() {
    let api = KubeApi::start().await.unwrap();
    let stack = stack_on(&api).await;
    let gone_pod = run_pod(&api, &web_pod("web-0", "node-a")).unwrap();
    let kept = run_pod(&api, &web_pod("web-1", "node-a")).unwrap();
    wait_bound(&stack, &gone_pod).await;
    wait_bound(&stack, &kept).await;
    let mut gone = stack.pods().subscribe_gone();

    // The API server goes away; meanwhile a pod is deleted and the history
    // compacted, so the resumed watch is answered 410 Gone.
    api.stop();
    wait_synced(&stack, false).await;
    delete_pod(&api, &gone_pod).unwrap();
    api.store().compact();
    api.restart().await.unwrap();

    wait_forgotten(&stack, &gone_pod).await;
    let g = gone.try_recv().expect("the re-list announced the deletion");
    assert_eq!(g.uid, gone_pod.uid);
    assert!(
        stack.pods().get("web", "web-1").is_some(),
        "the other pod stays"
    );
    let expired = stack
        .metrics()
        .kube_watch_restarts
        .with_label_values(&["pods", "expired"])
        .get();
    assert!(expired >= 1, "the watch expired and was re-listed");
    let err = fetch(&stack, "node-a", &gone_pod, true).await.unwrap_err();
    assert_eq!(err.reason(), Some(Reason::PodUnknown), "{err}");
    fetch(&stack, "node-a", &kept, false)
        .await
        .expect("the other pod is served");
    stack.shutdown().await.unwrap();
}

/// During an outage the controller serves from the view it holds: known
/// pods keep renewing; a pod it has never seen is refused as a retry
/// (`POD_VIEW_BEHIND`, UNAVAILABLE: kubelet retries the mount), and is
/// served once the watch catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_outage_keeps_known_pods_renewing_and_asks_unseen_pods_to_retry() {
    let api = KubeApi::start().await.unwrap();
    let stack = stack_on(&api).await;
    let known = run_pod(&api, &web_pod("web-0", "node-a")).unwrap();
    wait_bound(&stack, &known).await;
    fetch(&stack, "node-a", &known, false)
        .await
        .expect("served");

    api.stop();
    wait_synced(&stack, false).await;
    assert!(stack.pods().is_stale(), "the view knows it may be behind");
    let renewed = fetch(&stack, "node-a", &known, true)
        .await
        .expect("renewed during the outage");
    assert!(has_keytab(&renewed));
    let unseen = run_pod(&api, &web_pod("web-1", "node-a")).unwrap();
    let err = fetch(&stack, "node-a", &unseen, false).await.unwrap_err();
    assert_eq!(err.reason(), Some(Reason::PodViewBehind), "{err}");
    assert!(err.to_string().contains("retry"), "{err}");

    api.restart().await.unwrap();
    wait_synced(&stack, true).await;
    wait_bound(&stack, &unseen).await;
    fetch(&stack, "node-a", &unseen, false)
        .await
        .expect("served once seen");
    stack.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_come_from_the_node_watch_and_deleted_nodes_are_announced() {
    let api = KubeApi::start().await.unwrap();
    add_node(&api, "node-a").unwrap();
    let stack = stack_on(&api).await;
    let nodes = stack.known_nodes();
    wait_until("node-a to be known", 30, || nodes.node_known("node-a")).await;
    assert!(!nodes.node_known("web.example.com"));
    let mut gone = nodes.subscribe_gone();

    api.store()
        .delete::<k8s_openapi::api::core::v1::Node>("", "node-a")
        .unwrap();
    let g = tokio::time::timeout(Duration::from_secs(30), gone.recv())
        .await
        .expect("announced within 30 s")
        .unwrap();
    assert_eq!(g.name, "node-a");
    assert!(!nodes.node_known("node-a"));
    stack.shutdown().await.unwrap();
}

/// Autoscaling down: the node is lost the moment the API deletes it, not
/// a lease later (the lease here would last an hour), audited, and its
/// renewals stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_deleted_from_the_cluster_is_lost_at_once_and_its_renewals_stop() {
    let api = KubeApi::start().await.unwrap();
    add_node(&api, "node-a").unwrap();
    let stack = stack_with(&api, "[leases]\nttl_secs = 3600\n".into()).await;
    let nodes = stack.known_nodes();
    wait_until("node-a to be known", 30, || nodes.node_known("node-a")).await;
    let pod = run_pod(&api, &web_pod("web-0", "node-a")).unwrap();
    wait_bound(&stack, &pod).await;
    fetch(&stack, "node-a", &pod, false).await.expect("served");

    api.store()
        .delete::<k8s_openapi::api::core::v1::Node>("", "node-a")
        .unwrap();
    let audit = stack.config.audit_log.clone();
    let lost = || {
        audit_records(&audit)
            .into_iter()
            .find(|r| r.action == Action::NodeLost && r.node == "node-a")
    };
    wait_until("the node's loss to be audited", 30, || lost().is_some()).await;
    let record = lost().unwrap();
    assert!(
        record.reason.contains("deleted from the cluster"),
        "{record:?}"
    );
    let err = fetch(&stack, "node-a", &pod, true).await.unwrap_err();
    assert_eq!(err.reason(), Some(Reason::NodeLost), "{err}");
    stack.shutdown().await.unwrap();
}

/// A pod that finishes (a Job's pod) is refused from then on, like a
/// deleted one, though it stays in the API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_pod_is_refused_though_it_stays_in_the_api() {
    let api = KubeApi::start().await.unwrap();
    let stack = stack_on(&api).await;
    let pod = run_pod(&api, &web_pod("job-0", "node-a")).unwrap();
    wait_bound(&stack, &pod).await;
    fetch(&stack, "node-a", &pod, false).await.expect("served");

    kcred_testkube::pods::set_phase(api.store(), "web", "job-0", "Succeeded").unwrap();
    let pods = stack.pods();
    wait_until("the controller to see the pod finished", 30, || {
        pods.get("web", "job-0").is_some_and(|p| p.finished)
    })
    .await;
    let err = fetch(&stack, "node-a", &pod, true).await.unwrap_err();
    assert_eq!(err.reason(), Some(Reason::PodFinished), "{err}");
    stack.shutdown().await.unwrap();
}

/// A deleted pod's files are wiped on its node at once, pushed by the
/// controller (heartbeats here come once every twenty minutes), and the
/// wipe is audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn a_deleted_pods_files_are_wiped_at_once_and_the_wipe_audited() {
    let api = KubeApi::start().await.unwrap();
    let stack = stack_with(&api, "[leases]\nttl_secs = 3600\n".into()).await;
    let pod = run_pod(&api, &web_pod("web-0", "node-a")).unwrap();
    wait_bound(&stack, &pod).await;
    let target = stack.kubelet.publish(&pod, VOL).await.expect("mounted");
    let keytab = target.join("krb5.keytab");
    assert!(keytab.exists());

    delete_pod(&api, &pod).unwrap();
    wait_until("the keytab to be wiped", 30, || !keytab.exists()).await;
    let volume = Kubelet::volume_id(&pod, VOL);
    let wiped = audit_records(&stack.config.audit_log)
        .into_iter()
        .find(|r| r.action == Action::Revoke && r.subject == volume)
        .expect("the wipe is audited");
    assert_eq!(wiped.actor, "controller");
    assert!(
        wiped.reason.contains("deleted from the cluster"),
        "{wiped:?}"
    );
    let err = fetch(&stack, "node-a", &pod, true).await.unwrap_err();
    assert_eq!(err.reason(), Some(Reason::PodUnknown), "{err}");
    stack.kubelet.unpublish(&pod, VOL).await.expect("unmounted");
    stack.shutdown().await.unwrap();
}

/// Through the real driver and kubelet's requests: a pod only the API
/// server knows gets its volume mounted, and kubelet's republish keeps
/// working through an API outage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn a_watched_pod_is_mounted_and_republished_through_an_outage() {
    let api = KubeApi::start().await.unwrap();
    let stack = stack_on(&api).await;
    let pod = run_pod(&api, &web_pod("web-0", "node-a")).unwrap();
    wait_bound(&stack, &pod).await;
    let target = stack.kubelet.publish(&pod, VOL).await.expect("mounted");
    assert!(target.join("krb5.keytab").exists());

    api.stop();
    wait_synced(&stack, false).await;
    stack
        .kubelet
        .publish(&pod, VOL)
        .await
        .expect("republished during the outage");
    assert!(target.join("krb5.keytab").exists());
    stack.kubelet.unpublish(&pod, VOL).await.expect("unmounted");
    stack.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_controller_learns_its_pods_from_the_api_again() {
    let api = KubeApi::start().await.unwrap();
    let mut stack = stack_on(&api).await;
    let pod = run_pod(&api, &web_pod("web-0", "node-a")).unwrap();
    wait_bound(&stack, &pod).await;
    fetch(&stack, "node-a", &pod, false).await.expect("served");

    stack.stop_controller().await.unwrap();
    let moved = {
        delete_pod(&api, &pod).unwrap();
        run_pod(&api, &web_pod("web-0", "node-b")).unwrap()
    };
    stack.start_controller(|_| {}, &[]).await.unwrap();
    wait_synced(&stack, true).await;
    wait_bound(&stack, &moved).await;
    let err = fetch(&stack, "node-a", &pod, true).await.unwrap_err();
    assert!(
        matches!(
            err.reason(),
            Some(Reason::PodUidMismatch | Reason::PodNotOnNode)
        ),
        "{err}"
    );
    fetch(&stack, "node-b", &moved, false)
        .await
        .expect("served on node-b");
    stack.shutdown().await.unwrap();
}
