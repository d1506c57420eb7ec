//! Issue 10: pods prove who they are, and nodes without a host keytab
//! prove which node they are, with bound service-account tokens the API
//! server (here the test API server, `kcred-testkube`) vouches for in a
//! `TokenReview`.
//!
//! - With `kubernetes.require_pod_token`, a fetch must carry the pod's own
//!   token (kubelet's, from the CSIDriver's tokenRequests): another pod's,
//!   an expired one, one for another audience, or none is refused with
//!   its reason, and audited.
//! - With `[auth.psat]`, a node driver authenticates with its DaemonSet
//!   pod's token: the pod must be the driver's (namespace and service
//!   account), and its `spec.nodeName` is the node.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kcred_csi_driver::controller_client::{ControllerClient, ControllerError, NodeIdentity};
use kcred_csi_driver::psat::TokenFile;
use kcred_csi_driver::volumes::PublishRequest;
use kcred_proto::kcred::v1::{Bundle, Reason};
use kcred_testkube::{KubeApi, TokenClaims, pods};
use kcred_tests::audit::{Decision, audit_records};
use kcred_tests::kube::{delete_pod, run_pod, wait_bound};
use kcred_tests::{Kubelet, Stack, StackOptions, TestPod, wait_until};

const VOL: &str = "kcred";
const AUDIENCE: &str = "kcred";
const CONTROLLER_SERVICE: &str = "kcred/controller.example.com";

fn web_pod(name: &str, node: &str) -> TestPod {
    TestPod::with_keytabs("web", name, node, "HTTP/web.example.com")
}

async fn stack_on(api: &KubeApi, kubernetes: &str) -> Stack {
    let stack = Stack::start(StackOptions {
        kubeconfig: Some(api.kubeconfig()),
        kubernetes_config: kubernetes.into(),
        ..Default::default()
    })
    .await
    .expect("stack");
    let metrics = stack.metrics();
    wait_until("the pod watch to sync", 30, || {
        metrics.kube_watch_synced.with_label_values(&["pods"]).get() == 1
    })
    .await;
    stack
}

/// A token kubelet would get for `pod` (service account `default`).
fn token_of(api: &KubeApi, pod: &TestPod, audiences: &[&str], valid_for: Duration) -> String {
    api.tokens().mint(TokenClaims {
        namespace: pod.namespace.clone(),
        service_account: "default".into(),
        pod_name: pod.name.clone(),
        pod_uid: pod.uid.clone(),
        audiences: audiences.iter().map(|a| a.to_string()).collect(),
        valid_for,
    })
}

fn hour() -> Duration {
    Duration::from_secs(3600)
}

async fn fetch_with(
    client: &ControllerClient,
    pod: &TestPod,
    token: Option<&str>,
) -> Result<Bundle, ControllerError> {
    let token = token.map(|t| kcred_auth::BearerToken::new(t).unwrap());
    client
        .fetch_bundle_with_token(
            pod.pod_ref(),
            &Kubelet::volume_id(pod, VOL),
            false,
            token.as_ref(),
        )
        .await
}

fn has_keytab(b: &Bundle) -> bool {
    b.files
        .iter()
        .any(|f| f.name == "krb5.keytab" && !f.content.is_empty())
}

fn refusals(stack: &Stack, reason: Reason) -> Vec<kcred_tests::audit::AuditRecord> {
    audit_records(&stack.config.audit_log)
        .into_iter()
        .filter(|r| r.decision == Decision::Deny && r.reason == reason.label())
        .collect()
}

fn expiry_in_an_hour() -> String {
    let t = time::OffsetDateTime::now_utc() + hour();
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_of_other_pods_expired_tokens_other_audiences_and_none_are_refused_with_their_reason()
 {
    let api = KubeApi::start().await.unwrap();
    let stack = stack_on(&api, "require_pod_token = true").await;
    let pod = run_pod(&api, &web_pod("web-0", "node-a")).unwrap();
    let other = run_pod(&api, &web_pod("web-1", "node-a")).unwrap();
    wait_bound(&stack, &pod).await;
    let client = ControllerClient::new(&stack.controller_endpoint(), "node-a").unwrap();

    let cases = [
        (
            "another pod's token",
            Some(token_of(&api, &other, &[AUDIENCE], hour())),
            Reason::PodTokenMismatch,
        ),
        (
            "an expired token",
            Some(token_of(&api, &pod, &[AUDIENCE], Duration::ZERO)),
            Reason::PodTokenInvalid,
        ),
        (
            "a token for another audience",
            Some(token_of(&api, &pod, &["vault"], hour())),
            Reason::PodTokenInvalid,
        ),
        ("no token", None, Reason::PodTokenMissing),
        (
            "a token the API server never issued",
            Some("eyJhbGciOiJSUzI1NiJ9.e30.forged".to_string()),
            Reason::PodTokenInvalid,
        ),
    ];
    for (what, token, reason) in &cases {
        let err = fetch_with(&client, &pod, token.as_deref())
            .await
            .expect_err(what);
        assert_eq!(err.reason(), Some(*reason), "{what}: {err}");
        if let Some(t) = token {
            assert!(
                !err.status().message().contains(t.as_str()),
                "{what}: the token is never echoed"
            );
        }
    }
    assert_eq!(
        refusals(&stack, Reason::PodTokenMismatch)[0].pod,
        "web-0",
        "refusals are audited with the pod asked for"
    );
    assert_eq!(refusals(&stack, Reason::PodTokenInvalid).len(), 3);
    assert_eq!(refusals(&stack, Reason::PodTokenMissing).len(), 1);
    let metrics = stack.metrics().render();
    assert!(
        metrics.contains("kcred_refusals_total{reason=\"pod_token_mismatch\"} 1"),
        "{metrics}"
    );

    // The pod's own token: served.
    let own = token_of(&api, &pod, &[AUDIENCE, "vault"], hour());
    let bundle = fetch_with(&client, &pod, Some(&own)).await.expect("served");
    assert!(has_keytab(&bundle));
    // The audit log never holds a token.
    let log = std::fs::read_to_string(&stack.config.audit_log).unwrap();
    for (_, token, _) in &cases {
        if let Some(t) = token {
            assert!(!log.contains(t.as_str()));
        }
    }
    assert!(!log.contains(&own));
    stack.shutdown().await.unwrap();
}

/// A review is remembered for up to a minute: kubelet's republishes do not
/// each cost a TokenReview, and they go on while the API server is away;
/// a token never reviewed cannot be checked then and is refused with a
/// reason kubelet retries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reviewed_token_is_remembered_and_an_unreviewable_one_waits_for_the_api_server() {
    let api = KubeApi::start().await.unwrap();
    let stack = stack_on(&api, "require_pod_token = true").await;
    let pod = run_pod(&api, &web_pod("web-0", "node-a")).unwrap();
    let other = run_pod(&api, &web_pod("web-1", "node-a")).unwrap();
    wait_bound(&stack, &pod).await;
    wait_bound(&stack, &other).await;
    let client = ControllerClient::new(&stack.controller_endpoint(), "node-a").unwrap();
    let token = token_of(&api, &pod, &[AUDIENCE], hour());
    fetch_with(&client, &pod, Some(&token))
        .await
        .expect("served");

    api.stop();
    fetch_with(&client, &pod, Some(&token))
        .await
        .expect("the cached review vouches while the API server is away");
    let unreviewed = token_of(&api, &other, &[AUDIENCE], hour());
    let err = fetch_with(&client, &other, Some(&unreviewed))
        .await
        .unwrap_err();
    assert_eq!(err.reason(), Some(Reason::KubeApiUnavailable), "{err}");
    assert!(err.is_transient(), "kubelet retries it");

    api.restart().await.unwrap();
    fetch_with(&client, &other, Some(&unreviewed))
        .await
        .expect("served once the API server answers");
    stack.shutdown().await.unwrap();
}

/// Through kubelet's request and the real driver: the token kubelet puts
/// in volume_context is forwarded, the keytab lands in the pod's volume
/// and `kinit -k -t` accepts it; without the token kubelet's publish fails
/// with the reason's code, and leaves nothing behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn a_pod_with_its_own_token_is_served_end_to_end() {
    let api = KubeApi::start().await.unwrap();
    let stack = stack_on(&api, "require_pod_token = true").await;
    let pod = run_pod(&api, &web_pod("web-0", "node-a")).unwrap();
    wait_bound(&stack, &pod).await;

    let err = stack.kubelet.publish(&pod, VOL).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    assert!(!stack.kubelet.target_path(&pod, VOL).exists());

    let token = token_of(&api, &pod, &[AUDIENCE], hour());
    let target = stack
        .kubelet
        .publish_with_tokens(&pod, VOL, &[(AUDIENCE, &token, &expiry_in_an_hour())])
        .await
        .expect("mounted with the pod's token");
    stack
        .realm
        .kinit_keytab(&target.join("krb5.keytab"), "HTTP/web.example.com")
        .expect("kinit -k -t with the delivered keytab");
    // A republish with a fresh token refreshes in place.
    let fresh = token_of(&api, &pod, &[AUDIENCE], hour());
    stack
        .kubelet
        .publish_with_tokens(&pod, VOL, &[(AUDIENCE, &fresh, &expiry_in_an_hour())])
        .await
        .expect("republished");
    stack.kubelet.unpublish(&pod, VOL).await.expect("unmounted");
    stack.shutdown().await.unwrap();
}

// psat: nodes without a host keytab.

const DRIVER_NS: &str = "kcred";
const DRIVER_SA: &str = "kcred-csi-driver";

/// A driver DaemonSet pod bound to `node`, as the API server would have
/// it; returns its UID.
fn run_driver_pod(api: &KubeApi, name: &str, namespace: &str, sa: &str, node: &str) -> String {
    let mut pod = pods::new_pod(namespace, name);
    if let Some(spec) = pod.spec.as_mut() {
        spec.service_account_name = Some(sa.into());
    }
    let created = pods::create(api.store(), pod).unwrap();
    pods::bind(api.store(), namespace, name, node).unwrap();
    pods::set_phase(api.store(), namespace, name, "Running").unwrap();
    created.metadata.uid.unwrap()
}

/// The projected token of a driver pod, written where the driver reads it.
fn driver_token(
    api: &KubeApi,
    dir: &Path,
    name: &str,
    namespace: &str,
    sa: &str,
    uid: &str,
) -> PathBuf {
    driver_token_for(api, dir, [name, namespace, sa, uid], hour())
}

/// [`driver_token`] valid for `valid_for`: `[name, namespace, sa, uid]`.
fn driver_token_for(api: &KubeApi, dir: &Path, pod: [&str; 4], valid_for: Duration) -> PathBuf {
    let [name, namespace, sa, uid] = pod;
    let token = api.tokens().mint(TokenClaims {
        namespace: namespace.into(),
        service_account: sa.into(),
        pod_name: name.into(),
        pod_uid: uid.into(),
        audiences: vec![AUDIENCE.into()],
        valid_for,
    });
    let path = dir.join(format!("{namespace}-{name}.token"));
    std::fs::write(&path, format!("{token}\n")).unwrap();
    path
}

/// A stack whose controller authenticates nodes (Kerberos mode, so no
/// claim is taken on trust) and accepts driver pod tokens ([auth.psat]).
async fn psat_stack(api: &KubeApi) -> Stack {
    let mut stack = stack_on(api, "").await;
    stack.realm.add_principal(CONTROLLER_SERVICE).unwrap();
    let keytab = stack.dir.path().join("controller.keytab");
    stack
        .realm
        .extract_keytab(CONTROLLER_SERVICE, &keytab)
        .unwrap();
    stack.stop_controller().await.unwrap();
    stack
        .start_controller(
            |cfg| {
                cfg.auth.mode = kcred_controller::config::AuthMode::Kerberos;
                cfg.auth.keytab = Some(keytab);
                cfg.auth.psat = Some(Default::default());
            },
            &[],
        )
        .await
        .unwrap();
    let metrics = stack.metrics();
    wait_until("the pod watch to sync", 30, || {
        metrics.kube_watch_synced.with_label_values(&["pods"]).get() == 1
    })
    .await;
    stack
}

fn psat_client(stack: &Stack, node: &str, token_file: &Path) -> ControllerClient {
    let identity = NodeIdentity::psat(Arc::new(TokenFile::open(token_file).unwrap()));
    ControllerClient::with_identity(&stack.controller_endpoint(), node, identity).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driver_authenticates_as_its_node_with_its_daemonset_pod_token() {
    let api = KubeApi::start().await.unwrap();
    let stack = psat_stack(&api).await;
    let pod = run_pod(&api, &web_pod("web-0", "node-a")).unwrap();
    wait_bound(&stack, &pod).await;
    let dir = stack.dir.path();

    // Without any identity the controller refuses the node.
    let anonymous = ControllerClient::new(&stack.controller_endpoint(), "node-a").unwrap();
    let err = anonymous.heartbeat(vec![]).await.unwrap_err();
    assert_eq!(err.reason(), Some(Reason::Unauthenticated), "{err}");

    let uid = run_driver_pod(&api, "kcred-csi-driver-a1", DRIVER_NS, DRIVER_SA, "node-a");
    let file = driver_token(&api, dir, "kcred-csi-driver-a1", DRIVER_NS, DRIVER_SA, &uid);
    let node_a = psat_client(&stack, "node-a", &file);
    node_a
        .heartbeat(vec![])
        .await
        .expect("node-a by its driver pod");
    let bundle = node_a
        .fetch_bundle(pod.pod_ref(), &Kubelet::volume_id(&pod, VOL), false)
        .await
        .expect("served to node-a");
    assert!(has_keytab(&bundle));

    // kubelet rotates the token (here: the driver pod was replaced): the
    // driver reads the file again and stays authenticated.
    api.store()
        .delete::<Pod>(DRIVER_NS, "kcred-csi-driver-a1")
        .unwrap();
    let uid2 = run_driver_pod(&api, "kcred-csi-driver-a2", DRIVER_NS, DRIVER_SA, "node-a");
    let rotated = driver_token(
        &api,
        dir,
        "kcred-csi-driver-a2",
        DRIVER_NS,
        DRIVER_SA,
        &uid2,
    );
    std::fs::rename(&rotated, &file).unwrap();
    node_a
        .heartbeat(vec![])
        .await
        .expect("with the rotated token");
    stack.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heartbeat_stream_opened_with_a_pod_token_ends_when_the_token_expires() {
    let api = KubeApi::start().await.unwrap();
    let stack = psat_stack(&api).await;
    let dir = stack.dir.path();
    let name = "kcred-csi-driver-a1";
    let uid = run_driver_pod(&api, name, DRIVER_NS, DRIVER_SA, "node-a");
    let pod = [name, DRIVER_NS, DRIVER_SA, uid.as_str()];
    let valid_for = Duration::from_secs(3);
    let file = driver_token_for(&api, dir, pod, valid_for);
    let minted = std::time::Instant::now();
    let node_a = psat_client(&stack, "node-a", &file);

    let (mut stream, first) = node_a
        .open_heartbeats(vec![])
        .await
        .expect("a stream opened with the driver pod's token");
    assert!(first.lease_ttl_secs > 0, "{first:?}");
    let beat = stream
        .beat(vec![])
        .await
        .expect("a beat while the token is valid");
    assert!(beat.is_some(), "answered");

    // Refusals of pod tokens (the stack's own token-less callers are
    // refused too, as `node/...`).
    let token_refusals = |stack: &Stack| {
        refusals(stack, Reason::Unauthenticated)
            .iter()
            .filter(|r| r.actor.starts_with("psat:"))
            .count()
    };
    let refused_before = token_refusals(&stack);
    // Past the token's expiry the stream is over: the controller ended it
    // cleanly rather than let it outlive the proof it opened with (no
    // refusal to audit).
    tokio::time::sleep((valid_for + Duration::from_secs(1)).saturating_sub(minted.elapsed())).await;
    let ended = stream
        .beat(vec![])
        .await
        .expect("a stream ended, not refused");
    assert!(ended.is_none(), "the stream outlived its token: {ended:?}");
    assert_eq!(
        token_refusals(&stack),
        refused_before,
        "an ending is not a refusal"
    );
    // kubelet's rotated token opens the next one.
    driver_token_for(&api, dir, pod, hour());
    node_a
        .open_heartbeats(vec![])
        .await
        .expect("a new stream with the current token");
    stack.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_token_outside_the_drivers_daemonset_or_for_another_node_is_refused() {
    let api = KubeApi::start().await.unwrap();
    let stack = psat_stack(&api).await;
    let dir = stack.dir.path();

    // Any pod can get a token for audience kcred: a workload pod's is no
    // node's, nor is a pod's in the driver's namespace under another
    // service account.
    let web_uid = run_driver_pod(&api, "web-x", "web", "default", "node-a");
    let web = driver_token(&api, dir, "web-x", "web", "default", &web_uid);
    let err = psat_client(&stack, "node-a", &web)
        .heartbeat(vec![])
        .await
        .unwrap_err();
    assert_eq!(err.reason(), Some(Reason::NotANodeIdentity), "{err}");
    let other_uid = run_driver_pod(&api, "debug", DRIVER_NS, "default", "node-a");
    let other = driver_token(&api, dir, "debug", DRIVER_NS, "default", &other_uid);
    let err = psat_client(&stack, "node-a", &other)
        .heartbeat(vec![])
        .await
        .unwrap_err();
    assert_eq!(err.reason(), Some(Reason::NotANodeIdentity), "{err}");

    // The driver pod of node-b speaks for node-b only.
    let b_uid = run_driver_pod(&api, "kcred-csi-driver-b", DRIVER_NS, DRIVER_SA, "node-b");
    let b = driver_token(
        &api,
        dir,
        "kcred-csi-driver-b",
        DRIVER_NS,
        DRIVER_SA,
        &b_uid,
    );
    let err = psat_client(&stack, "node-a", &b)
        .heartbeat(vec![])
        .await
        .unwrap_err();
    assert_eq!(err.reason(), Some(Reason::NodeMismatch), "{err}");
    psat_client(&stack, "node-b", &b)
        .heartbeat(vec![])
        .await
        .expect("node-b");

    // A deleted driver pod's token is worthless once its review lapses
    // (at once here: it was never reviewed before the deletion).
    let c_uid = run_driver_pod(&api, "kcred-csi-driver-c", DRIVER_NS, DRIVER_SA, "node-c");
    let c = driver_token(
        &api,
        dir,
        "kcred-csi-driver-c",
        DRIVER_NS,
        DRIVER_SA,
        &c_uid,
    );
    delete_pod(
        &api,
        &TestPod::new(DRIVER_NS, "kcred-csi-driver-c", "node-c"),
    )
    .unwrap();
    let err = psat_client(&stack, "node-c", &c)
        .heartbeat(vec![])
        .await
        .unwrap_err();
    assert_eq!(err.reason(), Some(Reason::Unauthenticated), "{err}");

    let denied: Vec<_> = audit_records(&stack.config.audit_log)
        .into_iter()
        .filter(|r| r.decision == Decision::Deny)
        .map(|r| r.reason)
        .collect();
    assert!(
        denied.contains(&Reason::NotANodeIdentity.label()),
        "{denied:?}"
    );
    assert!(denied.contains(&Reason::NodeMismatch.label()), "{denied:?}");
    stack.shutdown().await.unwrap();
}

/// The whole path on a node with no host keytab: the driver's volume
/// manager, authenticated by its DaemonSet pod token, mounts the pod's
/// volume and `kinit -k -t` accepts the keytab.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn a_driver_with_only_its_pod_token_publishes_end_to_end() {
    let api = KubeApi::start().await.unwrap();
    let stack = psat_stack(&api).await;
    let pod = run_pod(&api, &web_pod("web-0", "node-a")).unwrap();
    wait_bound(&stack, &pod).await;
    let uid = run_driver_pod(&api, "kcred-csi-driver-a1", DRIVER_NS, DRIVER_SA, "node-a");
    let file = driver_token(
        &api,
        stack.dir.path(),
        "kcred-csi-driver-a1",
        DRIVER_NS,
        DRIVER_SA,
        &uid,
    );
    let identity = NodeIdentity::psat(Arc::new(TokenFile::open(&file).unwrap()));
    let node = stack.simulated_node_with("node-a", identity).unwrap();

    let target = stack.kubelet.target_path(&pod, VOL);
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    node.publish(PublishRequest {
        volume_id: Kubelet::volume_id(&pod, VOL),
        target: target.clone(),
        pod: pod.pod_ref(),
        readonly: false,
    })
    .await
    .expect("published by a node with no host keytab");
    stack
        .realm
        .kinit_keytab(&target.join("krb5.keytab"), "HTTP/web.example.com")
        .expect("kinit -k -t with the delivered keytab");
    node.unpublish(&Kubelet::volume_id(&pod, VOL), target)
        .await
        .expect("unpublished");
    stack.shutdown().await.unwrap();
}

/// Anyone may send a node token; one the API server would refuse on its
/// face costs no TokenReview, and is refused as unauthenticated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_tokens_refused_on_their_face_cost_no_review() {
    let api = KubeApi::start().await.unwrap();
    let stack = psat_stack(&api).await;
    let dir = stack.dir.path();
    let uid = run_driver_pod(&api, "kcred-csi-driver-a1", DRIVER_NS, DRIVER_SA, "node-a");
    let other_audience = api.tokens().mint(TokenClaims {
        namespace: DRIVER_NS.into(),
        service_account: DRIVER_SA.into(),
        pod_name: "kcred-csi-driver-a1".into(),
        pod_uid: uid,
        audiences: vec!["someone-else".into()],
        valid_for: hour(),
    });
    let reviews = api.tokens().reviews();
    for (i, token) in ["junk".to_string(), other_audience].iter().enumerate() {
        let file = dir.join(format!("face-{i}.token"));
        std::fs::write(&file, format!("{token}\n")).unwrap();
        let err = psat_client(&stack, "node-a", &file)
            .heartbeat(vec![])
            .await
            .unwrap_err();
        assert_eq!(err.reason(), Some(Reason::Unauthenticated), "{err}");
    }
    assert_eq!(api.tokens().reviews(), reviews, "no TokenReview asked for");
    stack.shutdown().await.unwrap();
}
