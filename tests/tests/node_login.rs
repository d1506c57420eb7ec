//! The node's Kerberos login, as the driver process makes it against a real
//! KDC: with its keytab, by encrypted timestamp, without loading MIT's SPAKE
//! module (nor the libcrypto it links) unless `--kerberos-spake` asks for
//! it, which a realm offering only SPAKE needs. What the driver loaded is
//! read from its `/proc/<pid>/maps`. And the tokens it makes from that
//! login: a KDC that stops answering stalls the calls that wait for one,
//! never kubelet's other calls.

use std::process::Command;
use std::time::{Duration, Instant};

use kcred_proto::csi::v1 as csi;
use kcred_testrealm::{Preauth, Realm, RealmOptions};
use kcred_tests::bench::procstat;
use kcred_tests::ha::{metric, scrape};
use kcred_tests::procs::{NODE_A, Proc, binary};
use kcred_tests::{Kubelet, TestPod};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const LOGGED_IN: &str = "serving CSI";
const LOGIN_FAILED: &str = "cannot get the node's Kerberos identity";

/// A realm whose KDC asks for `preauth`, with node-a's keytab in `dir`.
struct Node {
    realm: Realm,
    dir: tempfile::TempDir,
}

impl Node {
    fn new(preauth: Preauth) -> Node {
        let realm = Realm::start_with(RealmOptions {
            preauth,
            ..RealmOptions::default()
        })
        .expect("start realm");
        let dir = tempfile::tempdir().expect("tempdir");
        let principal = format!("host/{NODE_A}");
        realm.add_principal(&principal).expect("add principal");
        realm
            .extract_keytab(&principal, &dir.path().join("node.keytab"))
            .expect("extract keytab");
        Node { realm, dir }
    }

    /// Starts the driver (no controller: the login comes first) and waits
    /// until it logged in or reported that it cannot.
    fn driver(&self, extra: &[&str]) -> (Proc, bool) {
        let d = self.dir.path();
        let r = self.realm.name();
        let port = kcred_testports::tcp().expect("port");
        let mut cmd = Command::new(binary("kcred-csi-driver"));
        cmd.env("KRB5_CONFIG", self.realm.krb5_conf_path())
            .env("RUST_LOG", "info")
            .arg("--endpoint")
            .arg(d.join("csi.sock"))
            .args(["--node-id", NODE_A])
            .args(["--controller", &format!("http://127.0.0.1:{port}")])
            .arg("--keytab")
            .arg(d.join("node.keytab"))
            .args(["--principal", &format!("host/{NODE_A}@{r}")])
            .args(["--controller-service", &format!("kcred/controller@{r}")])
            .arg("--kubelet-dir")
            .arg(d)
            .arg("--state-dir")
            .arg(d.join("state"))
            .args(extra);
        let log = d.join(format!("driver-{}.log", extra.len()));
        let proc = Proc::spawn(cmd, &log).expect("spawn driver");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = proc.log_text();
            if text.contains(LOGGED_IN) {
                return (proc, true);
            }
            if text.contains(LOGIN_FAILED) {
                return (proc, false);
            }
            assert!(
                Instant::now() < deadline,
                "the driver neither logged in nor said why not:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A KDC that takes requests and never answers (`SIGSTOP`), thawed
/// however the test ends so the realm can stop.
struct FrozenKdc(Pid);

impl FrozenKdc {
    /// Freezes the KDC, then waits a moment: a token attempt the KDC
    /// answered just before (the driver's first heartbeat) has ended by
    /// then, so no call made after this takes its answer.
    fn freeze(realm: &Realm) -> FrozenKdc {
        let kdc = Pid::from_raw(realm.kdc_pid().expect("KDC running") as i32);
        kill(kdc, Signal::SIGSTOP).expect("freeze the KDC");
        std::thread::sleep(Duration::from_millis(500));
        FrozenKdc(kdc)
    }
}

impl Drop for FrozenKdc {
    fn drop(&mut self) {
        let _ = kill(self.0, Signal::SIGCONT);
    }
}

/// A publish of its own for each of `n` pods, sent at once; each ends
/// with the driver's answer and when it came.
fn publish_all(
    kubelet: &Kubelet,
    n: usize,
) -> Vec<tokio::task::JoinHandle<(Result<(), tonic::Status>, Instant)>> {
    (0..n)
        .map(|i| {
            let mut node_client = kubelet.node();
            let req =
                kubelet.publish_request(&TestPod::new("ns", &format!("pod-{i}"), NODE_A), "creds");
            tokio::spawn(async move {
                let answer = node_client.node_publish_volume(req).await.map(|_| ());
                (answer, Instant::now())
            })
        })
        .collect()
}

/// The driver's kubelet socket, once it listens.
async fn kubelet_of(node: &Node) -> Kubelet {
    let d = node.dir.path();
    Kubelet::connect_when_ready(&d.join("csi.sock"), d, Duration::from_secs(10))
        .await
        .expect("driver socket")
}

/// The shared objects the process has mapped.
fn mapped(proc: &Proc) -> String {
    let pid = proc.pid().expect("running");
    std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("maps")
}

fn loads_spake(maps: &str) -> bool {
    maps.contains("preauth/spake.so")
}

fn loads_libcrypto(maps: &str) -> bool {
    maps.contains("/libcrypto.so")
}

#[test]
fn a_node_logs_in_with_its_keytab_without_loading_spake_or_libcrypto() {
    let node = Node::new(Preauth::Required);
    let (driver, logged_in) = node.driver(&[]);
    assert!(logged_in, "{}", driver.log_text());
    let maps = mapped(&driver);
    assert!(!loads_spake(&maps), "SPAKE loaded:\n{maps}");
    assert!(!loads_libcrypto(&maps), "libcrypto loaded:\n{maps}");
    let profile = node
        .dir
        .path()
        .join("state")
        .join(kcred_auth::login_profile::FILE_NAME);
    let text = std::fs::read_to_string(&profile).expect("profile written");
    assert!(text.contains("disable = spake"), "{text}");
}

#[test]
fn with_kerberos_spake_the_login_loads_spake_and_libcrypto() {
    let node = Node::new(Preauth::Required);
    let (driver, logged_in) = node.driver(&["--kerberos-spake"]);
    assert!(logged_in, "{}", driver.log_text());
    let maps = mapped(&driver);
    assert!(loads_spake(&maps), "SPAKE not loaded:\n{maps}");
    assert!(loads_libcrypto(&maps), "libcrypto not loaded:\n{maps}");
}

#[test]
fn a_realm_where_spake_is_the_only_way_in_needs_kerberos_spake() {
    // The client told never to use encrypted timestamp; the KDC without it.
    for preauth in [Preauth::SpakeOnly, Preauth::KdcSpakeOnly] {
        let node = Node::new(preauth);
        let (driver, logged_in) = node.driver(&[]);
        let log = driver.log_text();
        assert!(!logged_in, "{preauth:?}: logged in without SPAKE:\n{log}");
        let failure = log
            .lines()
            .find(|l| l.contains(LOGIN_FAILED))
            .expect("the failure is logged");
        assert!(
            failure.contains("--kerberos-spake")
                && failure.to_lowercase().contains("authentication fail"),
            "{preauth:?}: {failure}"
        );
        drop(driver);
        let (driver, logged_in) = node.driver(&["--kerberos-spake"]);
        assert!(logged_in, "{preauth:?}: {}", driver.log_text());
    }
}

/// The KDC frozen (it takes requests and never answers): every call to the
/// controller needs a token, and a token needs the KDC (the controller's
/// service principal is not in the realm, so no ticket is ever cached).
/// Many publishes wait for one at once, more than the driver has threads;
/// kubelet's other calls are still answered meanwhile, and the publishes
/// all end once the KDC answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_kdc_stalls_only_the_calls_that_wait_for_a_token() {
    /// More than the driver's blocking threads (eight) and workers (one).
    const WAITING: usize = 16;
    /// The driver's main thread and its worker, the one thread making a
    /// token, and one spare for file-system work.
    const BUSY_THREADS: u64 = 4;

    let node = Node::new(Preauth::Required);
    let (driver, logged_in) = node.driver(&[]);
    assert!(logged_in, "{}", driver.log_text());
    let frozen = FrozenKdc::freeze(&node.realm);

    let kubelet = kubelet_of(&node).await;
    let publishes = publish_all(&kubelet, WAITING);
    // Each publish is now waiting for its token (or queued behind one),
    // and one thread of the driver's waits on the KDC for them all.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for p in &publishes {
        assert!(!p.is_finished(), "a publish ended while the KDC was frozen");
    }
    let pid = driver.pid().expect("driver running").as_raw();
    let threads = procstat::threads(pid).expect("driver's thread count");
    eprintln!("driver threads while {WAITING} publishes wait: {threads}");
    assert!(
        threads <= BUSY_THREADS,
        "{threads} threads in the driver while {WAITING} publishes wait for a token"
    );
    for _ in 0..5 {
        let asked = Instant::now();
        let answered = tokio::time::timeout(Duration::from_secs(3), async {
            kubelet
                .identity()
                .probe(csi::ProbeRequest {})
                .await
                .expect("probe");
            kubelet
                .node()
                .node_get_capabilities(csi::NodeGetCapabilitiesRequest {})
                .await
                .expect("capabilities");
        })
        .await;
        assert!(
            answered.is_ok(),
            "kubelet's calls not answered within 3 s while {WAITING} publishes wait on the KDC:\n{}",
            driver.log_text()
        );
        assert!(asked.elapsed() < Duration::from_secs(3));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    drop(frozen);
    // The KDC answers again (that the controller's service is unknown):
    // every publish ends, refused, none left hanging.
    for p in publishes {
        let (answer, _) = tokio::time::timeout(Duration::from_secs(60), p)
            .await
            .expect("publish answered once the KDC is back")
            .expect("task");
        let status = answer.expect_err("no controller to fetch from");
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    }
}

/// The KDC frozen for longer than MIT waits for it: the calls queued
/// behind the one attempt that waits on it take that attempt's failure,
/// so they all end about when it does, not one attempt after another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_queued_behind_a_silent_kdc_share_its_failure() {
    const WAITING: usize = 8;

    let node = Node::new(Preauth::Required);
    let metrics_port = kcred_testports::tcp().expect("port");
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let (driver, logged_in) = node.driver(&["--metrics-addr", &metrics_addr]);
    assert!(logged_in, "{}", driver.log_text());
    let _frozen = FrozenKdc::freeze(&node.realm);
    let failed = || async {
        let body = scrape(metrics_port).await;
        metric(
            &body,
            "kcred_csi_node_tokens_total",
            &["outcome=\"failed\""],
        )
        .unwrap_or_else(|| panic!("no token count:\n{body}"))
    };
    let failed_before = failed().await;

    let kubelet = kubelet_of(&node).await;
    let started = Instant::now();
    let publishes = publish_all(&kubelet, WAITING);
    let mut ends = Vec::new();
    for p in publishes {
        let (answer, at) = p.await.expect("task");
        let status = answer.expect_err("no token while the KDC is frozen");
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
        assert!(
            status.message().contains("Cannot contact any KDC"),
            "not the attempt's own failure: {status:?}"
        );
        ends.push(at - started);
    }
    let (first, last) = (ends.iter().min(), ends.iter().max());
    let (Some(first), Some(last)) = (first, last) else {
        panic!("no publish")
    };
    // One attempt (MIT gives up on a silent KDC after about 25 s over
    // TCP) ends them all; one after another, the second would end about
    // one attempt after the first.
    assert!(
        *last - *first < Duration::from_secs(5),
        "publishes ended from {first:?} to {last:?}"
    );
    // Counted once per attempt, not once per call that took its failure
    // (the driver's heartbeats may have made one attempt of their own).
    let attempts = failed().await - failed_before;
    assert!(
        (1.0..3.0).contains(&attempts),
        "{attempts} failed token attempts for {WAITING} publishes"
    );
}

/// A driver started while the KDC is down serves its metrics meanwhile and
/// counts each failed try of its login there (which the node-token alert
/// watches), then logs in once the KDC is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_that_waits_for_the_kdc_is_counted_in_the_metrics() {
    let mut node = Node::new(Preauth::Required);
    node.realm.stop_kdc().expect("stop the KDC");
    let metrics_port = kcred_testports::tcp().expect("port");
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let (driver, logged_in) = node.driver(&["--metrics-addr", &metrics_addr]);
    assert!(
        !logged_in,
        "logged in without a KDC:\n{}",
        driver.log_text()
    );
    let body = scrape(metrics_port).await;
    let count = |outcome: &str| {
        metric(
            &body,
            "kcred_csi_node_tokens_total",
            &[&format!("outcome=\"{outcome}\"")],
        )
    };
    assert!(count("failed").is_some_and(|n| n >= 1.0), "{body}");
    assert_eq!(count("made"), Some(0.0), "{body}");

    node.realm.start_kdc().expect("start the KDC");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !driver.log_text().contains(LOGGED_IN) {
        assert!(
            Instant::now() < deadline,
            "no login once the KDC was back:\n{}",
            driver.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
