//! Issue 5: nodes are authenticated (GSSAPI over TLS), leased, handled when
//! they vanish, and survive `kill -9` of the driver and of the controller.
//! Real processes, real realm, real mounts.

use std::time::{Duration, Instant};

use kcred_proto::kcred::v1::FetchBundleRequest;
use kcred_proto::kcred::v1::node_credentials_client::NodeCredentialsClient;
use kcred_tests::audit::{Action, AuditRecord, Decision};
use kcred_tests::procs::{CONTROLLER_HOST, NODE_A, NODE_B, ProcStack};
use kcred_tests::{TestPod, wait_until};
use nix::sys::signal::Signal;
use tonic::Code;

const VOL: &str = "kcred";

fn web_pod(name: &str, node: &str) -> TestPod {
    TestPod::with_keytabs("web", name, node, "HTTP/web.example.com")
}

async fn fetch_as(
    stack: &ProcStack,
    token: Option<&str>,
    node: &str,
    pod: &TestPod,
    refresh: bool,
) -> Result<(), tonic::Status> {
    let channel = stack.channel().await.expect("tls channel");
    let mut client = NodeCredentialsClient::new(channel);
    let mut req = tonic::Request::new(FetchBundleRequest {
        node_name: node.into(),
        pod: Some(pod.pod_ref()),
        volume_id: kcred_tests::Kubelet::volume_id(pod, VOL),
        refresh,
        ..Default::default()
    });
    if let Some(t) = token {
        req.metadata_mut()
            .insert("authorization", t.parse().expect("metadata"));
    }
    client.fetch_bundle(req).await.map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn calls_without_a_valid_node_identity_are_refused_and_audited() {
    let mut stack = ProcStack::start("").await.expect("stack");
    let pod = web_pod("web-0", NODE_A);
    stack.set_pods(&[&pod]).await.expect("pods");
    let r = kcred_testrealm::DEFAULT_REALM;
    let service = format!("kcred/{CONTROLLER_HOST}@{r}");

    let err = fetch_as(&stack, None, NODE_A, &pod, false)
        .await
        .expect_err("no token");
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");

    let node_b = stack.node_token(NODE_B).expect("node-b token");
    let err = fetch_as(&stack, Some(&node_b), NODE_A, &pod, false)
        .await
        .expect_err("node-b speaking for node-a");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(
        err.message().contains("may not speak for"),
        "{}",
        err.message()
    );

    let user = stack
        .token("mallory.keytab", &format!("mallory@{r}"), &service)
        .expect("user token");
    let err = fetch_as(&stack, Some(&user), NODE_A, &pod, false)
        .await
        .expect_err("a user is not a node");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");

    // node-b, authenticated as itself, asks for a pod bound to node-a.
    let node_b = stack.node_token(NODE_B).expect("node-b token");
    let err = fetch_as(&stack, Some(&node_b), NODE_B, &pod, false)
        .await
        .expect_err("pod on another node");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");

    // node-a publishes the pod; node-b, as itself, cannot take over its
    // volume id for a pod of its own.
    let b_pod = web_pod("web-b", NODE_B);
    stack.set_pods(&[&pod, &b_pod]).await.expect("pods");
    let a_token = stack.node_token(NODE_A).expect("node-a token");
    fetch_as(&stack, Some(&a_token), NODE_A, &pod, false)
        .await
        .expect("node-a as itself");
    let b_token = stack.node_token(NODE_B).expect("node-b token");
    let channel = stack.channel().await.expect("tls channel");
    let mut req = tonic::Request::new(FetchBundleRequest {
        node_name: NODE_B.into(),
        pod: Some(b_pod.pod_ref()),
        volume_id: kcred_tests::Kubelet::volume_id(&pod, VOL),
        refresh: false,
        ..Default::default()
    });
    req.metadata_mut()
        .insert("authorization", b_token.parse().expect("metadata"));
    let err = NodeCredentialsClient::new(channel)
        .fetch_bundle(req)
        .await
        .expect_err("hijack");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(
        err.message().contains("belongs to pod"),
        "{}",
        err.message()
    );

    // Whatever the policy grants, a node's host key, the controller's own
    // principal and its TLS name are never issued to pods.
    let policy = stack.path().join("policy.toml");
    let text = std::fs::read_to_string(&policy)
        .expect("policy")
        .replace(
            "service_principals = [\"HTTP/web.example.com\", \"HTTP/api.example.com\"]",
            &format!(
                "service_principals = [\"HTTP/web.example.com\", \"host/{NODE_B}\", \"kcred/{CONTROLLER_HOST}\"]"
            ),
        )
        .replace(
            "certificates = [\"web.example.com\", \"api.example.com\"]",
            &format!("certificates = [\"web.example.com\", \"{CONTROLLER_HOST}\"]"),
        );
    std::fs::write(&policy, text).expect("policy");
    let thieves = [
        TestPod::with_keytabs("web", "web-7", NODE_A, &format!("host/{NODE_B}")),
        TestPod::with_keytabs("web", "web-8", NODE_A, &format!("kcred/{CONTROLLER_HOST}")),
        TestPod::new("web", "web-9", NODE_A).annotate("kcred.io/certs", CONTROLLER_HOST),
    ];
    let mut known: Vec<&TestPod> = vec![&pod, &b_pod];
    known.extend(thieves.iter());
    stack.set_pods(&known).await.expect("pods");
    for thief in &thieves {
        let token = stack.node_token(NODE_A).expect("node-a token");
        let err = fetch_as(&stack, Some(&token), NODE_A, thief, false)
            .await
            .expect_err("reserved identity");
        assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
        assert!(
            err.message().contains("never issued to pods"),
            "{}",
            err.message()
        );
    }

    // A token is good once: a replay is refused.
    let once = stack.node_token(NODE_A).expect("node-a token");
    fetch_as(&stack, Some(&once), NODE_A, &pod, false)
        .await
        .expect("node-a as itself");
    let err = fetch_as(&stack, Some(&once), NODE_A, &pod, false)
        .await
        .expect_err("replay");
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");

    let denials: Vec<AuditRecord> = stack
        .audit_records()
        .into_iter()
        .filter(|r| r.action == Action::Deny && r.decision == Decision::Deny)
        .collect();
    let audited = |what: &str, found: &dyn Fn(&AuditRecord) -> bool| {
        assert!(denials.iter().any(found), "{what} audited: {denials:#?}");
    };
    audited("unauthenticated call", &|r| {
        r.node == NODE_A
            && r.reason == "unauthenticated"
            && r.detail.starts_with("authentication: no Kerberos token")
    });
    audited("impersonation", &|r| {
        r.node == NODE_A
            && r.actor.contains(NODE_B)
            && r.reason == "node_mismatch"
            && r.detail.contains("may not speak for node")
    });
    audited("wrong-node request", &|r| {
        (
            r.actor.as_str(),
            r.node.as_str(),
            r.namespace.as_str(),
            r.pod.as_str(),
        ) == (&format!("node/{NODE_B}"), NODE_B, "web", "web-0")
            && r.reason == "pod_not_on_node"
            && r.detail.contains("is bound to node")
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn a_real_driver_publishes_over_tls_with_its_host_keytab() {
    let mut stack = ProcStack::start("").await.expect("stack");
    let pod = web_pod("web-0", NODE_A);
    let elsewhere = web_pod("web-1", NODE_B);
    stack.set_pods(&[&pod, &elsewhere]).await.expect("pods");

    let target = stack.kubelet().publish(&pod, VOL).await.expect("publish");
    stack
        .realm
        .kinit_keytab(&target.join("krb5.keytab"), "HTTP/web.example.com")
        .expect("kinit");
    let err = stack
        .kubelet()
        .publish(&elsewhere, VOL)
        .await
        .expect_err("pod bound to node-b");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(!stack.kubelet().target_path(&elsewhere, VOL).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn a_node_whose_lease_lapses_is_lost_and_reconciles_when_it_returns() {
    let mut stack = ProcStack::start("").await.expect("stack");
    let stays = web_pod("web-0", NODE_A);
    let moves = web_pod("web-1", NODE_A);
    stack.set_pods(&[&stays, &moves]).await.expect("pods");
    let t_stays = stack.kubelet().publish(&stays, VOL).await.expect("publish");
    let t_moves = stack.kubelet().publish(&moves, VOL).await.expect("publish");
    stack.wait_node_alive(NODE_A).await;

    // The node stops answering (its driver frozen): the lease lapses.
    stack
        .driver
        .as_ref()
        .expect("driver")
        .signal(Signal::SIGSTOP);
    let status = |s: &ProcStack| {
        let out = s.kcredctl("alice", &["status", "--output", "json"]);
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    wait_until("node-a lost", 15, || status(&stack).contains("\"lost\"")).await;
    wait_until("node loss audited", 20, || {
        stack
            .audit_records()
            .iter()
            .any(|r| r.action == Action::NodeLost && r.node == NODE_A)
    })
    .await;

    // Renewals for the lost node stop.
    let token = stack.node_token(NODE_A).expect("token");
    let err = fetch_as(&stack, Some(&token), NODE_A, &stays, true)
        .await
        .expect_err("no renewals");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");

    // Meanwhile one pod was rescheduled to node-b: it gets credentials there at once.
    // Rescheduling makes a new pod object: same name, new UID.
    let moved = TestPod {
        node: NODE_B.into(),
        uid: format!("{}-rescheduled", &moves.uid[..20]),
        ..moves.clone()
    };
    stack.set_pods(&[&stays, &moved]).await.expect("pods");
    let token_b = stack.node_token(NODE_B).expect("token");
    fetch_as(&stack, Some(&token_b), NODE_B, &moved, false)
        .await
        .expect("served on node-b");

    // The node returns: audited, and the moved pod's volume is wiped here.
    stack
        .driver
        .as_ref()
        .expect("driver")
        .signal(Signal::SIGCONT);
    wait_until("node-a back", 15, || !status(&stack).contains("\"lost\"")).await;
    wait_until("stale volume removed", 15, || !t_moves.exists()).await;
    let records = stack.audit_records();
    assert!(
        records
            .iter()
            .any(|r| r.action == Action::NodeReturned && r.node == NODE_A),
        "node return audited: {records:#?}"
    );
    assert!(
        t_stays.join("krb5.keytab").exists(),
        "the pod still bound here keeps its volume"
    );
    stack
        .realm
        .kinit_keytab(&t_stays.join("krb5.keytab"), "HTTP/web.example.com")
        .expect("kinit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn mounts_survive_kill_9_of_the_driver_and_the_restarted_driver_resumes() {
    let mut stack = ProcStack::start("[tickets]\nlifetime_secs = 8\nrenew_lifetime_secs = 3600\n")
        .await
        .expect("stack");
    let pod = TestPod::new("web", "web-0", NODE_A)
        .annotate("kcred.io/keytabs", "HTTP/web.example.com")
        .annotate("kcred.io/tickets", "websvc");
    let racer = web_pod("web-1", NODE_A);
    stack.set_pods(&[&pod, &racer]).await.expect("pods");
    let target = stack.kubelet().publish(&pod, VOL).await.expect("publish");
    let first_cc = std::fs::read(target.join("krb5cc")).expect("krb5cc");

    // kill -9 during a publish: either complete or absent after kubelet retries.
    let req = stack.kubelet().publish_request(&racer, VOL);
    let mut node = stack.kubelet().node();
    let racing = tokio::spawn(async move { node.node_publish_volume(req).await });
    tokio::time::sleep(Duration::from_millis(5)).await;
    stack.driver.as_mut().expect("driver").kill9();
    let _ = racing.await;

    // The mount survives the driver.
    stack
        .realm
        .kinit_keytab(&target.join("krb5.keytab"), "HTTP/web.example.com")
        .expect("files survive kill -9");

    stack.start_driver().await.expect("restart driver");
    let racer_target = stack
        .kubelet()
        .publish(&racer, VOL)
        .await
        .expect("kubelet retries the publish");
    stack
        .realm
        .kinit_keytab(&racer_target.join("krb5.keytab"), "HTTP/web.example.com")
        .expect("complete volume");
    stack
        .kubelet()
        .publish(&pod, VOL)
        .await
        .expect("republish after restart is a refresh");

    // Renewals resume on their own (ticket lives 8 s: renewed at about 5 s).
    wait_until("ticket renewed by the restarted driver", 20, || {
        std::fs::read(target.join("krb5cc")).is_ok_and(|b| b != first_cc)
    })
    .await;

    // kill -9 during a renewal: the files stay whole.
    stack.driver.as_mut().expect("driver").kill9();
    let cc = target.join("krb5cc");
    kcred_controller::kdc::Ticket::parse(zeroize::Zeroizing::new(
        std::fs::read(&cc).expect("read"),
    ))
    .expect("whole ccache");
    stack.start_driver().await.expect("restart driver");
    stack
        .kubelet()
        .unpublish(&pod, VOL)
        .await
        .expect("unpublish");
    assert!(!target.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn kill_9_of_the_controller_during_issue_loses_nothing() {
    let mut stack = ProcStack::start("").await.expect("stack");
    let a = web_pod("web-0", NODE_A);
    let b = TestPod::with_keytabs("web", "web-1", NODE_A, "HTTP/api.example.com");
    stack.set_pods(&[&a, &b]).await.expect("pods");
    let ta = stack.kubelet().publish(&a, VOL).await.expect("publish a");
    let before = std::fs::read(ta.join("krb5.keytab")).expect("read");

    // kill -9 while b's first issue (an extraction) is in flight.
    let req = stack.kubelet().publish_request(&b, VOL);
    let mut node = stack.kubelet().node();
    let racing = tokio::spawn(async move { node.node_publish_volume(req).await });
    tokio::time::sleep(Duration::from_millis(5)).await;
    stack.controller.as_mut().expect("controller").kill9();
    let _ = racing.await;

    stack.start_controller().await.expect("restart controller");
    // The driver reconnects by itself; b's publish is retried by kubelet.
    let deadline = Instant::now() + Duration::from_secs(20);
    let tb = loop {
        match stack.kubelet().publish(&b, VOL).await {
            Ok(t) => break t,
            Err(e) if Instant::now() < deadline => {
                assert!(
                    matches!(e.code(), Code::Unavailable | Code::Internal | Code::Unknown),
                    "{e:?}"
                );
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            Err(e) => panic!("never recovered: {e:?}"),
        }
    };
    stack
        .realm
        .kinit_keytab(&tb.join("krb5.keytab"), "HTTP/api.example.com")
        .expect("kinit b");
    // a's keytab came from the store after the restart: the same bytes.
    let a2 = web_pod("web-2", NODE_A);
    stack.set_pods(&[&a, &b, &a2]).await.expect("pods");
    let t2 = stack.kubelet().publish(&a2, VOL).await.expect("publish a2");
    assert_eq!(std::fs::read(t2.join("krb5.keytab")).expect("read"), before);
    // The node is back in the controller's view, and the audit verifies.
    let status = stack.kcredctl("alice", &["status", "--output", "json"]);
    assert!(String::from_utf8_lossy(&status.stdout).contains(NODE_A));
    let verify = stack.kcredctl("bob", &["audit", "verify"]);
    assert!(
        verify.status.success(),
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn policy_can_rotate_the_keytabs_a_lost_node_held() {
    let mut stack = ProcStack::start_with(
        "",
        "rotate_keytabs_on_loss = true\nrotation_grace_secs = 3600",
        "",
    )
    .await
    .expect("stack");
    let pod = web_pod("web-0", NODE_A);
    let other = TestPod::with_keytabs("web", "web-1", NODE_A, "HTTP/api.example.com");
    stack.set_pods(&[&pod, &other]).await.expect("pods");
    stack.kubelet().publish(&pod, VOL).await.expect("publish");
    assert_eq!(stack.realm.kvno("HTTP/web.example.com").expect("kvno"), 1);
    stack.wait_node_alive(NODE_A).await;

    stack
        .driver
        .as_ref()
        .expect("driver")
        .signal(Signal::SIGSTOP);
    let deadline = Instant::now() + Duration::from_secs(40);
    while stack.realm.kvno("HTTP/web.example.com").ok() != Some(2) {
        assert!(
            Instant::now() < deadline,
            "keytab not rotated after node loss; controller log:\n{}",
            stack
                .controller
                .as_ref()
                .map(|c| c.log_text())
                .unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        stack.realm.kvno("HTTP/api.example.com").expect("kvno"),
        1,
        "only what the node held"
    );
    // The KDC's kvno moves at `cpw`; the audit record follows once the
    // rotation (re-extraction, store) is done.
    wait_until("rotation audited", 20, || {
        stack.audit_records().iter().any(|r| {
            r.action == Action::Rotate
                && r.decision == Decision::Allow
                && r.kind == "keytab"
                && r.subject.starts_with("HTTP/web.example.com@")
                && r.kvno == Some(2)
                && r.node == NODE_A
                && r.reason.contains("policy rotates the keytabs it held")
        })
    })
    .await;
    stack
        .driver
        .as_ref()
        .expect("driver")
        .signal(Signal::SIGCONT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn nodes_and_tools_without_a_keytab_can_use_client_certificates() {
    use kcred_controller::issuers::ca::CertificateAuthority;
    use kcred_proto::kcred::v1::StatusRequest;
    use kcred_proto::kcred::v1::admin_client::AdminClient;
    let day = Duration::from_secs(86_400);
    let client_ca = CertificateAuthority::generate("kcred client CA", day).expect("client CA");
    let rogue_ca = CertificateAuthority::generate("rogue CA", day).expect("rogue CA");
    let ca_dir = tempfile::tempdir().expect("tempdir");
    let ca_file = ca_dir.path().join("client-ca.crt");
    std::fs::write(&ca_file, client_ca.cert_pem()).expect("write");
    let node_b = client_ca
        .issue(&[NODE_B.to_string()], Duration::from_secs(3600))
        .expect("node cert");
    let robot = client_ca
        .issue(&["ops-robot".to_string()], Duration::from_secs(3600))
        .expect("admin cert");
    let nobody = client_ca
        .issue(&["nobody".to_string()], Duration::from_secs(3600))
        .expect("cert");
    let rogue = rogue_ca
        .issue(&[NODE_B.to_string()], Duration::from_secs(3600))
        .expect("rogue cert");

    let mut stack = ProcStack::start_with(
        "",
        "",
        &format!("client_ca_file = \"{}\"", ca_file.display()),
    )
    .await
    .expect("stack");
    let on_b = web_pod("web-0", NODE_B);
    let on_a = web_pod("web-1", NODE_A);
    stack.set_pods(&[&on_b, &on_a]).await.expect("pods");

    let fetch = |channel: tonic::transport::Channel, pod: TestPod, node: &'static str| async move {
        NodeCredentialsClient::new(channel)
            .fetch_bundle(FetchBundleRequest {
                node_name: node.into(),
                pod: Some(pod.pod_ref()),
                volume_id: kcred_tests::Kubelet::volume_id(&pod, VOL),
                refresh: false,
                ..Default::default()
            })
            .await
    };
    let ch = stack
        .channel_with_identity(&node_b.cert_pem, &node_b.key_pem)
        .await
        .expect("mTLS");
    let bundle = fetch(ch.clone(), on_b.clone(), NODE_B)
        .await
        .expect("node-b by certificate");
    assert!(
        bundle
            .get_ref()
            .files
            .iter()
            .any(|f| f.name == "krb5.keytab")
    );
    let err = fetch(ch.clone(), on_a.clone(), NODE_A)
        .await
        .expect_err("speaking for node-a");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let err = fetch(ch.clone(), on_a.clone(), NODE_B)
        .await
        .expect_err("pod on node-a");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    // The connection's certificate is read once and remembered: later
    // calls on it are still node-b's, and only node-b's.
    fetch(ch.clone(), on_b.clone(), NODE_B)
        .await
        .expect("node-b again on the same connection");
    let err = fetch(ch, on_a.clone(), NODE_A)
        .await
        .expect_err("speaking for node-a later");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");

    // A certificate from another CA does not even get a TLS session.
    assert!(
        stack
            .channel_with_identity(&rogue.cert_pem, &rogue.key_pem)
            .await
            .is_err()
            || fetch(
                stack
                    .channel_with_identity(&rogue.cert_pem, &rogue.key_pem)
                    .await
                    .expect("channel"),
                on_b.clone(),
                NODE_B
            )
            .await
            .is_err()
    );

    // An admin certificate maps to a role by its CN (`cert:<CN>`).
    let ch = stack
        .channel_with_identity(&robot.cert_pem, &robot.key_pem)
        .await
        .expect("mTLS");
    let status = AdminClient::new(ch)
        .status(StatusRequest {})
        .await
        .expect("cert:ops-robot is an operator");
    assert_eq!(
        (
            status.get_ref().caller.as_str(),
            status.get_ref().role.as_str()
        ),
        ("cert:ops-robot", "operator")
    );
    let ch = stack
        .channel_with_identity(&nobody.cert_pem, &nobody.key_pem)
        .await
        .expect("mTLS");
    let err = AdminClient::new(ch)
        .status(StatusRequest {})
        .await
        .expect_err("cert:nobody has no role");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
}
