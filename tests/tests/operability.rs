//! What an operator relies on, checked against the real daemons: every
//! metric the shipped dashboard and alert rules use is exposed from the
//! start, the controller's `/readyz` names what is missing, and logs are
//! plain text or JSON lines, never ANSI colour codes in a file.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use kcred_testrealm::{DEFAULT_REALM, Realm};
use kcred_tests::procs::binary;
use kcred_tests::wait_until;

/// A controller and a driver, as processes, with their metrics served.
struct Daemons {
    _realm: Realm,
    dir: tempfile::TempDir,
    controller: Child,
    driver: Child,
    controller_ops: SocketAddr,
    driver_ops: SocketAddr,
}

impl Drop for Daemons {
    fn drop(&mut self) {
        for child in [&mut self.controller, &mut self.driver] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], kcred_testports::tcp().expect("a free port")))
}

fn spawn(mut cmd: Command, log: &Path) -> Child {
    let out = std::fs::File::create(log).unwrap();
    let err = out.try_clone().unwrap();
    cmd.stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .spawn()
        .unwrap()
}

impl Daemons {
    /// Starts both daemons; `driver_args` are extra driver flags.
    async fn start(driver_args: &[&str]) -> Daemons {
        let realm = Realm::start().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let status = Command::new(binary("kcred-controller"))
            .arg("generate-master-key")
            .arg(d.join("master.key"))
            .output()
            .unwrap();
        assert!(status.status.success(), "{status:?}");
        std::fs::write(d.join("policy.toml"), kcred_tests::stack::DEFAULT_POLICY).unwrap();
        std::fs::write(d.join("pods.toml"), "").unwrap();
        std::fs::create_dir_all(d.join("kubelet/pods")).unwrap();
        let listen = free_addr();
        let controller_ops = free_addr();
        let driver_ops = free_addr();
        std::fs::write(
            d.join("controller.toml"),
            format!(
                r#"listen = "{listen}"
realm = "{DEFAULT_REALM}"
krb5_config = "{krb5}"
master_key_file = "{d}/master.key"
store_path = "{d}/store.redb"
policy_file = "{d}/policy.toml"
pods_file = "{d}/pods.toml"
audit_log = "{d}/audit.log"
audit_key = "{d}/audit.key"
metrics_listen = "{controller_ops}"

[auth]
mode = "none"

[kadmin]
principal = "{admin}"
keytab = "{admin_keytab}"
work_dir = "{d}/extract"
"#,
                krb5 = realm.krb5_conf_path().display(),
                d = d.display(),
                admin = realm.admin_principal(),
                admin_keytab = realm.admin_keytab().display(),
            ),
        )
        .unwrap();
        let mut cmd = Command::new(binary("kcred-controller"));
        cmd.env("RUST_LOG", "info")
            .env_remove("KCRED_LOG_FORMAT")
            .args(["serve", "--config"])
            .arg(d.join("controller.toml"));
        let controller = spawn(cmd, &d.join("controller.log"));
        let mut cmd = Command::new(binary("kcred-csi-driver"));
        cmd.env("RUST_LOG", "info")
            .env_remove("KCRED_LOG_FORMAT")
            .arg("--endpoint")
            .arg(d.join("csi.sock"))
            .args(["--node-id", "node-a.kcred.test"])
            .args(["--controller", &format!("http://{listen}")])
            .arg("--kubelet-dir")
            .arg(d.join("kubelet"))
            .arg("--state-dir")
            .arg(d.join("driver-state"))
            .args(["--metrics-addr", &driver_ops.to_string()])
            .args(driver_args);
        let driver = spawn(cmd, &d.join("driver.log"));
        let me = Daemons {
            _realm: realm,
            dir,
            controller,
            driver,
            controller_ops,
            driver_ops,
        };
        for addr in [controller_ops, driver_ops] {
            wait_until(&format!("{addr} serving /healthz"), 30, || {
                get(addr, "/healthz").is_ok_and(|(status, _)| status == 200)
            })
            .await;
        }
        me
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }

    fn audit_log(&self) -> PathBuf {
        self.dir.path().join("audit.log")
    }
}

/// A plain HTTP/1.0 GET: status code and body.
fn get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// Sample names in a text exposition (`name{labels} value` or `name value`).
fn exposed_names(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

/// Metric names a dashboard or rule file mentions: kcred's own and the
/// standard process metrics.
fn referenced_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let is_name = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_';
    let mut i = 0;
    while i < bytes.len() {
        if is_name(bytes[i])
            && (i == 0 || !(is_name(bytes[i - 1]) || bytes[i - 1].is_ascii_uppercase()))
        {
            let start = i;
            while i < bytes.len() && is_name(bytes[i]) {
                i += 1;
            }
            let word = &text[start..i];
            if word.starts_with("kcred_") || word.starts_with("process_") {
                names.insert(word.to_string());
            }
        } else {
            i += 1;
        }
    }
    names
}

fn monitoring_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/monitoring")
}

#[tokio::test]
async fn every_metric_the_dashboard_and_alerts_use_is_exposed_from_start() {
    let daemons = Daemons::start(&[]).await;
    let (status, controller) = get(daemons.controller_ops, "/metrics").unwrap();
    assert_eq!(status, 200, "{controller}");
    let (status, driver) = get(daemons.driver_ops, "/metrics").unwrap();
    assert_eq!(status, 200, "{driver}");
    let exposed: BTreeSet<String> = exposed_names(&controller)
        .union(&exposed_names(&driver))
        .cloned()
        .collect();

    let mut files = 0;
    for file in ["kcred-dashboard.json", "kcred-alerts.yaml"] {
        let text = std::fs::read_to_string(monitoring_dir().join(file)).unwrap();
        let referenced = referenced_names(&text);
        assert!(
            referenced.iter().any(|n| n.starts_with("kcred_csi_"))
                && referenced.iter().any(|n| n.starts_with("kcred_gate_")),
            "{file} watches neither daemon: {referenced:?}"
        );
        let missing: Vec<_> = referenced.difference(&exposed).collect();
        assert!(
            missing.is_empty(),
            "{file} uses metrics no daemon exposes at start: {missing:?}\n\
             controller:\n{controller}\ndriver:\n{driver}"
        );
        files += 1;
    }
    assert_eq!(files, 2);
    // Each daemon says what it is.
    assert!(
        controller.contains("kcred_build_info{component=\"controller\""),
        "{controller}"
    );
    assert!(
        driver.contains("kcred_build_info{component=\"csi-driver\""),
        "{driver}"
    );
}

#[tokio::test]
async fn controller_readyz_names_each_check_and_fails_while_the_audit_log_is_gone() {
    let daemons = Daemons::start(&[]).await;
    let (status, body) = get(daemons.controller_ops, "/readyz").unwrap();
    assert_eq!(status, 200, "{body}");
    for check in ["[+]store ok", "[+]pods ok", "[+]audit ok"] {
        assert!(body.contains(check), "{check} missing: {body}");
    }

    let moved = daemons.audit_log().with_extension("moved");
    std::fs::rename(daemons.audit_log(), &moved).unwrap();
    let (status, body) = get(daemons.controller_ops, "/readyz").unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("[-]audit failed: "), "{body}");
    assert!(
        body.contains("audit.log"),
        "the failure names the file: {body}"
    );
    // Liveness is not readiness: the process still answers.
    assert_eq!(get(daemons.controller_ops, "/healthz").unwrap().0, 200);

    std::fs::rename(&moved, daemons.audit_log()).unwrap();
    let (status, body) = get(daemons.controller_ops, "/readyz").unwrap();
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn logs_are_json_lines_on_request_and_never_carry_colour_codes() {
    let daemons = Daemons::start(&["--log-format", "json"]).await;
    // The driver has logged its start and its first heartbeat attempt.
    wait_until("driver log lines", 30, || {
        daemons.log("driver.log").lines().count() >= 2
    })
    .await;
    let driver = daemons.log("driver.log");
    for line in driver.lines() {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line:?}"));
        assert!(
            v.get("timestamp").is_some() && v.get("level").is_some() && v.get("message").is_some(),
            "{line}"
        );
    }
    assert!(driver.contains("\"message\":\"serving CSI\""), "{driver}");

    let controller = daemons.log("controller.log");
    assert!(controller.contains("serving node API"), "{controller}");
    for (name, log) in [("controller", &controller), ("driver", &driver)] {
        assert!(
            !log.contains('\u{1b}'),
            "{name} log written to a file has escape codes: {log:?}"
        );
    }
}
