//! Issue 6: operators rotate and revoke with kcredctl, auditors read and
//! verify the audit, and rotation reaches running pods without an outage.
//! Real processes: controller, node driver, kcredctl, MIT realm.

use kcred_tests::{keytab_kvnos, output_text};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kcred_controller::keytab::Keytab;
use kcred_keys::parse_pod_file;
use kcred_tests::audit::{Action, Decision};
use kcred_tests::procs::{CONTROLLER_HOST, NODE_A, OPERATOR, ProcStack, binary};
use kcred_tests::{Kubelet, TestPod, wait_until};
use zeroize::Zeroizing;

const VOL: &str = "kcred";
/// A second volume of the same pod.
const OTHER_VOL: &str = "kcred-other";

/// Accepts a token with a keytab, as a service would (own replay cache).
fn accepts(stack: &ProcStack, keytab: &Path, token: &str, tag: &str) -> bool {
    let mut child = Command::new(binary("kcred-auth-probe"))
        .arg("accept")
        .arg(keytab)
        .arg(stack.path().join(format!("rc-{tag}")))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("probe");
    if let Some(mut stdin) = child.stdin.take() {
        let _ = writeln!(stdin, "{token}");
    }
    let out = child.wait_with_output().expect("probe output");
    out.status.success() && String::from_utf8_lossy(&out.stdout).starts_with("ok ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn a_keytab_rotation_reaches_every_volume_atomically_with_a_grace_period() {
    let mut stack = ProcStack::start("").await.expect("stack");
    let pods = TestPod::web_replicas(2, NODE_A);
    stack.set_pod_list(&pods).await.expect("pods");
    let mut targets = Vec::new();
    for p in &pods {
        targets.push(stack.kubelet().publish(p, VOL).await.expect("publish"));
    }
    assert_eq!(keytab_kvnos(&targets[0].join("krb5.keytab")), vec![1]);
    let r = kcred_testrealm::DEFAULT_REALM;
    // A client's ticket for the service, issued under kvno 1.
    let old_token = stack
        .token(
            "alice.keytab",
            &format!("alice@{r}"),
            &format!("HTTP/web.example.com@{r}"),
        )
        .expect("token");

    // A reader loops over the keytab through the whole rotation.
    let reader_target = targets[0].clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop_reader = std::sync::Arc::clone(&stop);
    let reader = std::thread::spawn(move || {
        let mut reads = 0u64;
        let mut seen = std::collections::BTreeSet::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !stop_reader.load(std::sync::atomic::Ordering::Relaxed)
            && Instant::now() < deadline
            && reads < 1_000_000
        {
            let Ok(generation) = std::fs::read_link(reader_target.join("..data")) else {
                continue;
            };
            let Ok(bytes) = std::fs::read(reader_target.join(generation).join("krb5.keytab"))
            else {
                continue;
            };
            let k = Keytab::parse(Zeroizing::new(bytes)).expect("a reader saw a partial keytab");
            seen.insert(k.kvnos().iter().copied().collect::<Vec<_>>());
            reads += 1;
        }
        (reads, seen)
    });

    let out = stack.kcredctl(
        "alice",
        &[
            "rotate",
            "keytab",
            "HTTP/web.example.com",
            "--grace",
            "6s",
            "--wait",
            "30s",
        ],
    );
    let report = output_text(&out);
    assert!(out.status.success(), "{report}");
    assert!(
        report.contains("2 of 2") || report.contains("all 2"),
        "progress shown: {report}"
    );
    assert_eq!(stack.realm.kvno("HTTP/web.example.com").expect("kvno"), 2);
    for t in &targets {
        assert_eq!(
            keytab_kvnos(&t.join("krb5.keytab")),
            vec![1, 2],
            "new and previous kvno during the grace period"
        );
    }
    let keytab = stack.path().join("delivered.keytab");
    std::fs::copy(targets[1].join("krb5.keytab"), &keytab).expect("copy");
    stack
        .realm
        .kinit_keytab(&keytab, "HTTP/web.example.com")
        .expect("kinit with the new kvno");
    assert!(
        accepts(&stack, &keytab, &old_token, "old"),
        "a ticket issued under the old kvno is still accepted"
    );
    let new_token = stack
        .token(
            "alice.keytab",
            &format!("alice@{r}"),
            &format!("HTTP/web.example.com@{r}"),
        )
        .expect("token");
    assert!(
        accepts(&stack, &keytab, &new_token, "new"),
        "a ticket under the new kvno is accepted"
    );

    // The grace period ends: the old kvno is purged and dropped from every volume.
    wait_until("old kvno dropped", 30, || {
        targets.iter().all(|t| {
            std::fs::read(t.join("krb5.keytab")).is_ok_and(|b| {
                Keytab::parse(Zeroizing::new(b))
                    .is_ok_and(|k| k.kvnos().iter().copied().collect::<Vec<_>>() == vec![2])
            })
        })
    })
    .await;
    std::fs::copy(targets[1].join("krb5.keytab"), &keytab).expect("copy");
    assert!(
        !accepts(&stack, &keytab, &old_token, "old-after"),
        "after the grace period the old kvno is gone"
    );
    stack
        .realm
        .kinit_keytab(&keytab, "HTTP/web.example.com")
        .expect("kinit after the grace period");

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (reads, seen) = reader.join().expect("reader");
    assert!(reads > 100, "the reader read ({reads})");
    assert!(
        seen.contains(&vec![1, 2]),
        "the reader saw the grace-period keytab: {seen:?}"
    );
    let records = stack.audit_records();
    assert!(
        records.iter().any(|r| {
            r.action == Action::Rotate
                && r.decision == Decision::Allow
                && r.actor.starts_with("admin/alice@")
                && r.kind == "keytab"
                && r.subject.starts_with("HTTP/web.example.com@")
                && r.kvno == Some(2)
        }),
        "rotation audited: {records:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn a_key_rotation_makes_a_new_primary_and_keeps_old_versions() {
    let mut stack = ProcStack::start("").await.expect("stack");
    let pod = TestPod::new("web", "web-0", NODE_A).annotate("kcred.io/keys", "orders-db");
    stack.set_pods(&[&pod]).await.expect("pods");
    let target = stack.kubelet().publish(&pod, VOL).await.expect("publish");
    let file = target.join("orders-db.keys.json");
    let before = parse_pod_file(&std::fs::read(&file).expect("read")).expect("parse");
    let sealed = kcred_keys::seal_with_primary(&before, b"secret row", b"").expect("seal");

    let out = stack.kcredctl("alice", &["rotate", "key", "orders-db", "--wait", "20s"]);
    assert!(out.status.success(), "{}", output_text(&out));
    let after = parse_pod_file(&std::fs::read(&file).expect("read")).expect("parse");
    assert_eq!(after.primary, before.primary + 1);
    assert_eq!(after.keys.len(), 2, "old version kept for decryption");
    let opened = kcred_keys::open_with_any(&after, &sealed, b"").expect("old data opens");
    assert_eq!(opened.as_slice(), b"secret row");

    // Retiring the primary is refused; retiring the old version removes it
    // from the volume.
    let out = stack.kcredctl(
        "alice",
        &["retire", "orders-db", &after.primary.to_string()],
    );
    assert!(!out.status.success(), "the primary cannot be retired");
    let out = stack.kcredctl(
        "alice",
        &["retire", "orders-db", &before.primary.to_string()],
    );
    assert!(out.status.success(), "{}", output_text(&out));
    wait_until("old version dropped from the volume", 15, || {
        std::fs::read(&file)
            .ok()
            .and_then(|b| parse_pod_file(&b).ok())
            .is_some_and(|f| f.keys.len() == 1 && f.primary == after.primary)
    })
    .await;
    let now = parse_pod_file(&std::fs::read(&file).expect("read")).expect("parse");
    assert!(
        kcred_keys::open_with_any(&now, &sealed, b"").is_err(),
        "retired data no longer opens"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn an_auditor_may_read_but_not_rotate_or_revoke() {
    let mut stack = ProcStack::start("").await.expect("stack");
    let pod = TestPod::with_keytabs("web", "web-0", NODE_A, "HTTP/web.example.com");
    stack.set_pods(&[&pod]).await.expect("pods");
    stack.kubelet().publish(&pod, VOL).await.expect("publish");

    let out = stack.kcredctl(
        "bob",
        &["rotate", "keytab", "HTTP/web.example.com", "--wait", "0"],
    );
    assert!(!out.status.success(), "an auditor must not rotate");
    assert!(
        output_text(&out).contains("auditor"),
        "{}",
        output_text(&out)
    );
    assert_eq!(
        stack.realm.kvno("HTTP/web.example.com").expect("kvno"),
        1,
        "nothing rotated"
    );
    let out = stack.kcredctl(
        "bob",
        &["revoke", &Kubelet::volume_id(&pod, VOL), "--reason", "test"],
    );
    assert!(!out.status.success(), "an auditor must not revoke");
    let out = stack.kcredctl("mallory", &["status"]);
    assert!(!out.status.success(), "no role, no access");

    let status = stack.kcredctl("bob", &["status", "--output", "json"]);
    assert!(status.status.success(), "{}", output_text(&status));
    assert!(String::from_utf8_lossy(&status.stdout).contains("auditor"));
    let list = stack.kcredctl(
        "bob",
        &[
            "list",
            "--principal",
            "HTTP/web.example.com",
            "--output",
            "json",
        ],
    );
    assert!(list.status.success(), "{}", output_text(&list));
    let listing = String::from_utf8_lossy(&list.stdout);
    assert!(
        listing.contains(NODE_A) && listing.contains("web-0"),
        "{listing}"
    );
    let records = stack.audit_records();
    assert!(
        records.iter().any(|r| {
            r.action == Action::Deny
                && r.decision == Decision::Deny
                && r.actor.starts_with("admin/bob@")
                && r.reason == "role_forbids"
                && r.detail.contains("may not rotate")
        }),
        "refusal audited: {records:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn revoke_wipes_the_volume_and_stops_issuing() {
    let mut stack = ProcStack::start("").await.expect("stack");
    let pod = TestPod::with_keytabs("web", "web-0", NODE_A, "HTTP/web.example.com");
    stack.set_pods(&[&pod]).await.expect("pods");
    let target = stack.kubelet().publish(&pod, VOL).await.expect("publish");
    // The pod's other volume goes with it.
    let other = stack
        .kubelet()
        .publish(&pod, OTHER_VOL)
        .await
        .expect("publish the other volume");
    assert!(other.join("krb5.keytab").exists());
    let out = stack.kcredctl(
        "alice",
        &[
            "revoke",
            &Kubelet::volume_id(&pod, VOL),
            "--reason",
            "key leaked in a log",
        ],
    );
    assert!(out.status.success(), "{}", output_text(&out));
    let other_id = Kubelet::volume_id(&pod, OTHER_VOL);
    assert!(
        output_text(&out).contains(&format!("and its pod's other volumes ({other_id})")),
        "{}",
        output_text(&out)
    );
    wait_until("files wiped", 15, || {
        !target.join("krb5.keytab").exists() && !other.join("krb5.keytab").exists()
    })
    .await;
    // kubelet's republish answers OK (never tear the mount down) but brings
    // nothing back. (ABORTED while another operation holds the volume is
    // retried, as kubelet does.)
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match stack.kubelet().publish(&pod, VOL).await {
            Ok(_) => break,
            Err(e) if e.code() == tonic::Code::Aborted && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("republish of a revoked volume: {e:?}"),
        }
    }
    assert!(target.exists(), "the mount stays while the pod runs");
    assert!(
        !target.join("krb5.keytab").exists(),
        "revoked stays revoked"
    );
    let records = stack.audit_records();
    assert!(
        records.iter().any(|r| {
            r.action == Action::Revoke
                && r.actor.starts_with("admin/alice@")
                && r.subject == Kubelet::volume_id(&pod, VOL)
                && (r.node.as_str(), r.namespace.as_str(), r.pod.as_str())
                    == (NODE_A, "web", "web-0")
                && r.reason == "key leaked in a log"
        }),
        "revocation audited: {records:#?}"
    );
    assert!(
        records.iter().any(|r| {
            r.action == Action::Revoke
                && r.subject == other_id
                && r.reason
                    .starts_with("key leaked in a log (revoked with its pod's volume")
        }),
        "the other volume's revocation audited: {records:#?}"
    );
    // Naming another volume id for the same pod does not get around it.
    let r = kcred_testrealm::DEFAULT_REALM;
    let token = stack
        .token(
            &format!("host_{NODE_A}.keytab"),
            &format!("host/{NODE_A}@{r}"),
            &format!("kcred/{}@{r}", kcred_tests::procs::CONTROLLER_HOST),
        )
        .expect("token");
    let mut req = tonic::Request::new(kcred_proto::kcred::v1::FetchBundleRequest {
        node_name: NODE_A.into(),
        pod: Some(kcred_proto::kcred::v1::PodRef {
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
            uid: pod.uid.clone(),
            service_account: "default".into(),
        }),
        volume_id: "csi-another-volume-of-the-same-pod".into(),
        refresh: false,
        ..Default::default()
    });
    req.metadata_mut()
        .insert("authorization", token.parse().expect("metadata"));
    let err = kcred_proto::kcred::v1::node_credentials_client::NodeCredentialsClient::new(
        stack.channel().await.expect("channel"),
    )
    .fetch_bundle(req)
    .await
    .expect_err("revoked pod");
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("revoked"), "{}", err.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn audit_verify_passes_untouched_and_catches_edits_deletions_and_swaps() {
    let mut stack = ProcStack::start("").await.expect("stack");
    let pods = TestPod::web_replicas(4, NODE_A);
    stack.set_pod_list(&pods).await.expect("pods");
    for p in &pods {
        stack.kubelet().publish(p, VOL).await.expect("publish");
    }
    let denied = TestPod::with_keytabs("db", "db-0", NODE_A, "HTTP/web.example.com");
    let mut all: Vec<&TestPod> = pods.iter().collect();
    all.push(&denied);
    stack.set_pods(&all).await.expect("pods");
    let _ = stack.kubelet().publish(&denied, VOL).await;

    let out = stack.kcredctl("bob", &["audit", "verify"]);
    assert!(
        out.status.success(),
        "untouched log verifies: {}",
        output_text(&out)
    );
    let query = stack.kcredctl(
        "bob",
        &["audit", "query", "--action", "deny", "--output", "json"],
    );
    assert!(
        String::from_utf8_lossy(&query.stdout).contains("rule service_principals"),
        "{}",
        output_text(&query)
    );

    let export = stack.path().join("export.jsonl");
    let out = stack.kcredctl("bob", &["audit", "export", "-o", &export.to_string_lossy()]);
    assert!(out.status.success(), "{}", output_text(&out));
    let lines: Vec<String> = std::fs::read_to_string(&export)
        .expect("export")
        .lines()
        .map(str::to_string)
        .collect();
    assert!(
        lines.len() >= 5,
        "4 issues and a denial, got {} records",
        lines.len()
    );
    let public_key = kcred_audit::AuditSigner::load(&stack.path().join("audit.key"))
        .expect("audit key")
        .public_key_hex();
    let verify = |name: &str, lines: &[String]| {
        let path = stack.path().join(name);
        std::fs::write(&path, lines.join("\n") + "\n").expect("write");
        stack.kcredctl(
            "bob",
            &[
                "audit",
                "verify",
                "--file",
                &path.to_string_lossy(),
                "--public-key",
                &public_key,
            ],
        )
    };
    let ok = verify("intact.jsonl", &lines);
    assert!(ok.status.success(), "{}", output_text(&ok));

    let mut edited = lines.clone();
    edited[2] = edited[2].replace("web-", "wxb-");
    let out = verify("edited.jsonl", &edited);
    assert!(
        !out.status.success() && output_text(&out).contains("edited"),
        "{}",
        output_text(&out)
    );

    let mut deleted = lines.clone();
    deleted.remove(3);
    let out = verify("deleted.jsonl", &deleted);
    assert!(
        !out.status.success() && output_text(&out).contains("missing"),
        "{}",
        output_text(&out)
    );

    let mut swapped = lines.clone();
    swapped.swap(1, 2);
    let out = verify("swapped.jsonl", &swapped);
    assert!(
        !out.status.success() && output_text(&out).contains("out of order"),
        "{}",
        output_text(&out)
    );
}

/// `kinit` as a person does it: the password on the terminal (here, stdin).
fn kinit_password(stack: &ProcStack, ccache: &Path, principal: &str, password: &str) {
    let mut child = stack
        .realm
        .command("kinit")
        .env("KRB5CCNAME", format!("FILE:{}", ccache.display()))
        .arg(principal)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kinit");
    if let Some(mut stdin) = child.stdin.take() {
        writeln!(stdin, "{password}").expect("password");
    }
    let out = child.wait_with_output().expect("kinit output");
    assert!(out.status.success(), "kinit: {}", output_text(&out));
}

fn caller_and_role(out: &std::process::Output) -> (String, String) {
    assert!(out.status.success(), "{}", output_text(out));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    let field = |k: &str| status[k].as_str().unwrap_or_default().to_string();
    (field("caller"), field("role"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn an_operator_uses_the_tickets_from_kinit_without_a_keytab() {
    let stack = ProcStack::start("").await.expect("stack");
    let r = kcred_testrealm::DEFAULT_REALM;
    let operator = format!("{OPERATOR}@{r}");
    stack
        .realm
        .kadmin_local(&format!("cpw -pw operator-secret {operator}"))
        .expect("the operator gets a password");
    let ccache = stack.path().join("alice.ccache");
    kinit_password(&stack, &ccache, &operator, "operator-secret");

    let out = stack
        .kcredctl_command()
        .env("KRB5CCNAME", format!("FILE:{}", ccache.display()))
        .args(["status", "--output", "json"])
        .output()
        .expect("kcredctl");
    assert_eq!(
        caller_and_role(&out),
        (operator.clone(), "operator".to_string()),
        "authenticated as the kinit principal"
    );
    let klist = stack
        .realm
        .command("klist")
        .env("KRB5CCNAME", format!("FILE:{}", ccache.display()))
        .output()
        .expect("klist");
    assert!(
        String::from_utf8_lossy(&klist.stdout).contains(&format!("kcred/{CONTROLLER_HOST}@{r}")),
        "the service ticket went into the operator's cache, as MIT tools do: {}",
        output_text(&klist)
    );

    // After kdestroy there are no tickets, and kcredctl says what to do.
    let kdestroy = stack
        .realm
        .command("kdestroy")
        .env("KRB5CCNAME", format!("FILE:{}", ccache.display()))
        .output()
        .expect("kdestroy");
    assert!(kdestroy.status.success(), "{}", output_text(&kdestroy));
    let out = stack
        .kcredctl_command()
        .env("KRB5CCNAME", format!("FILE:{}", ccache.display()))
        .arg("status")
        .output()
        .expect("kcredctl");
    let said = output_text(&out);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("no usable Kerberos tickets in the default credential cache")
            && said.contains("run kinit"),
        "{said}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn a_certificate_admin_uses_tls_cert_and_key_instead_of_kerberos() {
    use kcred_controller::issuers::ca::CertificateAuthority;
    let day = Duration::from_secs(86_400);
    let client_ca = CertificateAuthority::generate("kcred client CA", day).expect("client CA");
    let ca_dir = tempfile::tempdir().expect("tempdir");
    let ca_file = ca_dir.path().join("client-ca.crt");
    std::fs::write(&ca_file, client_ca.cert_pem()).expect("write");
    let stack = ProcStack::start_with(
        "",
        "",
        &format!("client_ca_file = \"{}\"", ca_file.display()),
    )
    .await
    .expect("stack");
    let run_as = |cn: &str| {
        let cert = client_ca
            .issue(&[cn.to_string()], Duration::from_secs(3600))
            .expect("client cert");
        let (cert_file, key_file) = (
            ca_dir.path().join(format!("{cn}.crt")),
            ca_dir.path().join(format!("{cn}.key")),
        );
        std::fs::write(&cert_file, &cert.cert_pem).expect("write");
        std::fs::write(&key_file, cert.key_pem.as_bytes()).expect("write");
        stack
            .kcredctl_command()
            // No Kerberos identity at all.
            .env(
                "KRB5CCNAME",
                format!("FILE:{}/none", ca_dir.path().display()),
            )
            .arg("--tls-cert")
            .arg(&cert_file)
            .arg("--tls-key")
            .arg(&key_file)
            .args(["status", "--output", "json"])
            .output()
            .expect("kcredctl")
    };
    assert_eq!(
        caller_and_role(&run_as("ops-robot")),
        ("cert:ops-robot".to_string(), "operator".to_string())
    );
    let out = run_as("nobody");
    assert!(!out.status.success());
    assert!(
        output_text(&out).contains("you have no admin role"),
        "{}",
        output_text(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn a_url_with_the_wrong_scheme_says_which_scheme_the_controller_speaks() {
    let stack = ProcStack::start("").await.expect("stack");
    let plain_http = format!("http://127.0.0.1:{}", stack.port());
    let out = stack
        .kcredctl_command()
        .args(["--controller", &plain_http, "status"])
        .output()
        .expect("kcredctl");
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    assert!(
        output_text(&out).contains(&format!(
            "the controller at {plain_http} speaks TLS: use https://127.0.0.1:{}",
            stack.port()
        )),
        "{}",
        output_text(&out)
    );

    // A controller without [tls] (the in-process stack's) behind https://.
    let plain = kcred_tests::stack::Stack::start(Default::default())
        .await
        .expect("plain controller");
    let endpoint = plain.controller_endpoint();
    let tls_url = endpoint.replacen("http://", "https://", 1);
    let out = stack
        .kcredctl_command()
        .args(["--controller", &tls_url, "status"])
        .output()
        .expect("kcredctl");
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    assert!(
        output_text(&out).contains(&format!(
            "the controller at {tls_url} speaks plain HTTP, without TLS: use {endpoint}"
        )),
        "{}",
        output_text(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn a_stdout_sink_copies_every_audit_record_as_stored() {
    let mut stack = ProcStack::start("[audit]\nsink = \"stdout\"\n")
        .await
        .expect("stack");
    let pod = TestPod::with_keytabs("web", "web-0", NODE_A, "HTTP/web.example.com");
    stack.set_pods(&[&pod]).await.expect("pods");
    stack.kubelet().publish(&pod, VOL).await.expect("publish");

    let stored = stack.audit_records();
    let issued = stored
        .iter()
        .find(|r| r.action == Action::Issue && r.pod == "web-0")
        .expect("the issue is recorded");
    // The controller's stdout and stderr both go to controller.log; its
    // own logs are not JSON records.
    let log = std::fs::read_to_string(stack.path().join("controller.log")).expect("log");
    let copies: Vec<kcred_tests::audit::AuditRecord> = log
        .lines()
        .filter(|l| l.starts_with("{\"v\":"))
        .map(|l| serde_json::from_str(l).expect("a whole record per line"))
        .collect();
    assert!(
        copies.contains(issued),
        "the issue record appears on stdout as stored: {log}"
    );
    for r in &stored {
        assert!(copies.contains(r), "record {} has its copy", r.seq);
    }
}
