//! Operating a running controller: `SIGHUP` reloads its files at once (a
//! bad file is reported once, and its repair too); its serving certificate
//! renews itself without a restart (an operator's is read again on
//! `SIGHUP`); its CA is rotated with an overlapping
//! trust bundle while nodes and kcredctl keep working. Real processes:
//! controller, node driver, kcredctl, MIT realm, openssl.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use kcred_tests::procs::{CONTROLLER_HOST, NODE_A, OPERATOR, ProcStack};
use kcred_tests::{TestPod, wait_until};

const VOL: &str = "kcred";

/// The default policy, with the `web` role account also granted to `shop`.
fn policy_granting_shop() -> String {
    kcred_tests::stack::DEFAULT_POLICY
        .replace("namespaces = [\"web\"]", "namespaces = [\"web\", \"shop\"]")
}

/// A pod in namespace `shop` asking for the `web` role account's keytab,
/// running as that role account.
fn shop_pod(name: &str) -> TestPod {
    let mut pod = TestPod::with_keytabs("shop", name, NODE_A, "HTTP/web.example.com");
    pod.run_as = Some((1500, 1500));
    pod
}

/// Log lines containing every one of `words`.
fn lines_with(log: &str, words: &[&str]) -> usize {
    log.lines()
        .filter(|l| words.iter().all(|w| l.contains(w)))
        .count()
}

fn count(log: &str, needle: &str) -> usize {
    lines_with(log, &[needle])
}

/// `n` web pods on node-a, the first one's volume published (the others
/// are there to publish later).
async fn web_pods_first_published(stack: &mut ProcStack, n: usize) -> Vec<TestPod> {
    let pods = TestPod::web_replicas(n, NODE_A);
    stack.set_pod_list(&pods).await.expect("pods");
    stack
        .kubelet()
        .publish(&pods[0], VOL)
        .await
        .expect("publish");
    pods
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn sighup_reloads_policy_and_pods_at_once_and_a_bad_policy_is_reported_once() {
    let mut stack = ProcStack::start("").await.expect("stack");
    // Polls so rare that only SIGHUP can explain a change within the test.
    stack.reload_interval_secs = 3600;
    stack.controller = None;
    stack.start_controller().await.expect("restart");
    let hup = |stack: &ProcStack| {
        stack
            .controller
            .as_ref()
            .expect("controller")
            .signal(nix::sys::signal::Signal::SIGHUP)
    };
    let log = |stack: &ProcStack| stack.controller.as_ref().expect("controller").log_text();

    let pod = shop_pod("shop-0");
    stack.set_pods(&[&pod]).await.expect("pods");
    hup(&stack);
    wait_until("pods reloaded", 20, || {
        lines_with(&log(&stack), &["reloaded", "pods.toml"]) == 1
    })
    .await;
    let refused = stack.kubelet().publish(&pod, VOL).await;
    let status = refused.expect_err("shop has no role account yet");
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");

    // The policy now grants the role account to shop: in force at SIGHUP.
    std::fs::write(stack.path().join("policy.toml"), policy_granting_shop()).expect("policy");
    let before = count(&log(&stack), "reloaded");
    hup(&stack);
    wait_until("policy reloaded", 20, || {
        count(&log(&stack), "reloaded") > before
    })
    .await;
    let target = stack.kubelet().publish(&pod, VOL).await.expect("publish");
    assert!(target.join("krb5.keytab").exists());

    // A broken policy: reported once however often it is looked at, and
    // the last good policy stays in force.
    std::fs::write(
        stack.path().join("policy.toml"),
        "[[role_accounts]]\nlogin = ",
    )
    .expect("w");
    hup(&stack);
    wait_until("bad policy reported", 20, || {
        log(&stack).contains("reload failed")
    })
    .await;
    for n in 2..=3 {
        hup(&stack);
        wait_until("SIGHUP seen", 20, || {
            count(&log(&stack), "SIGHUP: reloading") >= n + 2
        })
        .await;
    }
    // Time for those reloads to run (they log nothing new).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let other = shop_pod("shop-1");
    stack.set_pods(&[&pod, &other]).await.expect("pods");
    hup(&stack);
    wait_until("pods reloaded again", 20, || {
        lines_with(&log(&stack), &["reloaded", "pods.toml"]) == 2
    })
    .await;
    stack
        .kubelet()
        .publish(&other, VOL)
        .await
        .expect("the last good policy is in force");

    std::fs::write(stack.path().join("policy.toml"), policy_granting_shop()).expect("policy");
    hup(&stack);
    wait_until("recovery reported", 20, || {
        log(&stack).contains("reload recovered")
    })
    .await;
    let text = log(&stack);
    assert_eq!(count(&text, "reload failed"), 1, "{text}");
    assert_eq!(count(&text, "reload recovered"), 1, "{text}");
}

/// What `openssl s_client` sees on the controller's port, checked against
/// `ca_file`: the served certificate's serial and issuer, and whether it
/// verified.
fn served_certificate(stack: &ProcStack, ca_file: &Path) -> (String, String, bool) {
    served_certificate_at(stack.port, "h2", ca_file)
}

/// [`served_certificate`] on any port, offering `alpn`.
fn served_certificate_at(port: u16, alpn: &str, ca_file: &Path) -> (String, String, bool) {
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .args([
            "-servername",
            CONTROLLER_HOST,
            "-verify_hostname",
            CONTROLLER_HOST,
        ])
        .args(["-alpn", alpn, "-CAfile"])
        .arg(ca_file)
        .stdin(Stdio::null())
        .output()
        .expect("openssl s_client");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut x509 = Command::new("openssl")
        .args(["x509", "-noout", "-serial", "-issuer"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("openssl x509");
    use std::io::Write;
    x509.stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    let fields =
        String::from_utf8_lossy(&x509.wait_with_output().expect("x509").stdout).to_string();
    let field = |name: &str| {
        fields
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    let verified = text.contains("Verify return code: 0 (ok)");
    (field("serial="), field("issuer="), verified)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn the_serving_certificate_renews_itself_while_a_node_keeps_working() {
    let webhook_port = kcred_testports::tcp().expect("a free port");
    let webhook = format!("[webhook]\nlisten = \"127.0.0.1:{webhook_port}\"\n");
    let mut stack = ProcStack::start_with(&webhook, "", "serving_cert_lifetime_secs = 60")
        .await
        .expect("stack");
    let ca = stack.path().join("ca.crt");
    let pods = web_pods_first_published(&mut stack, 2).await;
    let (first, _, verified) = served_certificate(&stack, &ca);
    assert!(verified && !first.is_empty(), "{first}");

    // 60 s certificates are renewed after 2/3 of their life: after 40 s.
    wait_until("a renewed serving certificate", 90, || {
        let (serial, _, verified) = served_certificate(&stack, &ca);
        verified && !serial.is_empty() && serial != first
    })
    .await;
    let log = stack.controller.as_ref().expect("controller").log_text();
    assert!(log.contains("serving certificate renewed"), "{log}");
    // The admission webhook serves the same certificate, renewed with it.
    let (node_api, _, _) = served_certificate(&stack, &ca);
    let (webhook, _, verified) = served_certificate_at(webhook_port, "http/1.1", &ca);
    assert!(
        verified,
        "the webhook's certificate verifies against ca.crt"
    );
    assert_eq!(
        webhook, node_api,
        "the webhook serves the renewed certificate"
    );

    // The node, connected before, and new connections work on.
    stack
        .kubelet()
        .publish(&pods[1], VOL)
        .await
        .expect("publish after renewal");
    let status = stack.kcredctl(OPERATOR, &["status"]);
    assert!(status.status.success(), "{status:?}");
    stack.wait_node_alive(NODE_A).await;
}

/// A CA made with openssl, as an operator would: certificate and PKCS#8 key.
fn openssl_ca(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let (crt, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "3650", "-subj", &format!("/CN={name}")])
        .args(["-addext", "basicConstraints=critical,CA:TRUE"])
        .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&crt)
        .output()
        .expect("openssl req");
    assert!(out.status.success(), "{out:?}");
    (crt, key)
}

fn certificates_in(path: &Path) -> usize {
    count(
        &std::fs::read_to_string(path).expect("bundle"),
        "-----BEGIN CERTIFICATE-----",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn a_ca_rotation_with_an_overlapping_bundle_keeps_nodes_and_kcredctl_working() {
    let mut stack = ProcStack::start("").await.expect("stack");
    let d = stack.path().to_path_buf();
    let bundle = d.join("ca.crt");
    let pods = web_pods_first_published(&mut stack, 3).await;
    std::fs::copy(&bundle, d.join("ca-old.crt")).expect("keep the old CA");
    let (new_crt, new_key) = openssl_ca(&d, "kcred-ca-2");

    // 1. Overlap: the bundle holds the old and the new CA; nodes get it
    //    (a driver restart, as a DaemonSet rollout does).
    stack.tls_config = format!("extra_trusted_ca_files = [\"{}\"]", new_crt.display());
    stack.controller = None;
    stack
        .start_controller()
        .await
        .expect("controller with both CAs trusted");
    assert_eq!(certificates_in(&bundle), 2);
    let (_, issuer, verified) = served_certificate(&stack, &d.join("ca-old.crt"));
    assert!(
        verified && !issuer.contains("kcred-ca-2"),
        "still the old CA: {issuer}"
    );
    stack.driver = None;
    stack.start_driver().await.expect("driver trusting both");
    std::fs::copy(&bundle, d.join("kcredctl-ca.crt")).expect("bundle for kcredctl");

    // 2. Switch: the controller serves and issues from the new CA, the
    //    old one stays in the bundle.
    stack.tls_config = "extra_trusted_ca_files = [\"ca-old.crt\"]"
        .replace("ca-old.crt", &d.join("ca-old.crt").display().to_string());
    stack.extra_config = format!(
        "[certs]\nca_cert_file = \"{}\"\nca_key_file = \"{}\"\n",
        new_crt.display(),
        new_key.display()
    );
    stack.controller = None;
    stack
        .start_controller()
        .await
        .expect("controller on the new CA");
    let (_, issuer, verified) = served_certificate(&stack, &new_crt);
    assert!(verified && issuer.contains("kcred-ca-2"), "{issuer}");
    assert_eq!(certificates_in(&bundle), 2);

    // The driver, not restarted since step 1, reconnects and serves a new
    // pod; kcredctl with the bundle it got in step 1 works too.
    stack.wait_node_alive(NODE_A).await;
    let target = stack
        .kubelet()
        .publish(&pods[1], VOL)
        .await
        .expect("publish on the new CA");
    assert!(target.join("krb5.keytab").exists());
    std::fs::copy(d.join("kcredctl-ca.crt"), &bundle).expect("kcredctl's copy");
    let status = stack.kcredctl(OPERATOR, &["status"]);
    assert!(status.status.success(), "{status:?}");

    // 3. Done: the old CA leaves the bundle.
    stack.tls_config = String::new();
    stack.controller = None;
    stack
        .start_controller()
        .await
        .expect("controller, new CA only");
    assert_eq!(certificates_in(&bundle), 1);
    stack
        .kubelet()
        .publish(&pods[2], VOL)
        .await
        .expect("publish");
}

/// A serving certificate for the controller's name, signed by an openssl CA.
fn openssl_leaf(dir: &Path, ca: &(PathBuf, PathBuf), name: &str) -> (PathBuf, PathBuf) {
    let (crt, key, csr, ext) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
        dir.join(format!("{name}.csr")),
        dir.join(format!("{name}.ext")),
    );
    std::fs::write(
        &ext,
        format!("subjectAltName=DNS:{CONTROLLER_HOST}\nextendedKeyUsage=serverAuth\n"),
    )
    .expect("ext");
    let req = Command::new("openssl")
        .args([
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-subj", &format!("/CN={CONTROLLER_HOST}")])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&csr)
        .output()
        .expect("openssl req");
    assert!(req.status.success(), "{req:?}");
    let sign = Command::new("openssl")
        .args(["x509", "-req", "-days", "30", "-CAcreateserial", "-in"])
        .arg(&csr)
        .arg("-CA")
        .arg(&ca.0)
        .arg("-CAkey")
        .arg(&ca.1)
        .arg("-extfile")
        .arg(&ext)
        .arg("-out")
        .arg(&crt)
        .output()
        .expect("openssl x509");
    assert!(sign.status.success(), "{sign:?}");
    (crt, key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn an_operators_serving_certificate_is_read_again_on_sighup() {
    let ca_dir = tempfile::tempdir().expect("tempdir");
    let ca = openssl_ca(ca_dir.path(), "operator-ca");
    let serving = (ca_dir.path().join("tls.crt"), ca_dir.path().join("tls.key"));
    let first = openssl_leaf(ca_dir.path(), &ca, "leaf-1");
    std::fs::copy(&first.0, &serving.0).expect("cert");
    std::fs::copy(&first.1, &serving.1).expect("key");
    let mut stack = ProcStack::start_with(
        &format!(
            "[certs]\nca_cert_file = \"{}\"\nca_key_file = \"{}\"\n",
            ca.0.display(),
            ca.1.display()
        ),
        "",
        &format!(
            "cert_file = \"{}\"\nkey_file = \"{}\"",
            serving.0.display(),
            serving.1.display()
        ),
    )
    .await
    .expect("stack");
    let bundle = stack.path().join("ca.crt");
    let pods = web_pods_first_published(&mut stack, 2).await;
    let (serial_1, _, verified) = served_certificate(&stack, &bundle);
    assert!(verified && !serial_1.is_empty());
    let log = |stack: &ProcStack| stack.controller.as_ref().expect("controller").log_text();
    let hup = |stack: &ProcStack| {
        stack
            .controller
            .as_ref()
            .expect("controller")
            .signal(nix::sys::signal::Signal::SIGHUP)
    };

    // The operator renews the certificate outside kcred, then SIGHUP.
    let second = openssl_leaf(ca_dir.path(), &ca, "leaf-2");
    std::fs::copy(&second.0, &serving.0).expect("cert");
    std::fs::copy(&second.1, &serving.1).expect("key");
    hup(&stack);
    wait_until("certificate reloaded", 20, || {
        log(&stack).contains("serving certificate reloaded from its files")
    })
    .await;
    let (serial_2, _, verified) = served_certificate(&stack, &bundle);
    assert!(verified && serial_2 != serial_1, "{serial_1} {serial_2}");

    // A half-written key is refused; the certificate in force stays.
    std::fs::write(&serving.1, "-----BEGIN PRIVATE KEY-----\n").expect("key");
    hup(&stack);
    wait_until("bad files reported", 20, || {
        log(&stack).contains("serving certificate files not reloaded")
    })
    .await;
    let (serial_3, _, verified) = served_certificate(&stack, &bundle);
    assert!(verified && serial_3 == serial_2, "{serial_2} {serial_3}");
    stack
        .kubelet()
        .publish(&pods[1], VOL)
        .await
        .expect("publish");
    let status = stack.kcredctl(OPERATOR, &["status"]);
    assert!(status.status.success(), "{status:?}");
}
