//! Issue 4: every Kerberos call passes one budgeted, coalescing gate.
//! Counts are taken at kadmind's own log, not from the controller.

use std::time::Duration;

use kcred_tests::storm::{StormConfig, run_storm, unmount_all};
use kcred_tests::{Stack, StackOptions, TestPod};
use tonic::Code;

/// The tests of this file run one at a time: the storm's budget is read
/// from kadmind's own log by the second, and a single-threaded kadmind
/// starved of CPU by a neighbouring test logs late, bunching operations the
/// gate admitted over more than a second into one.
static ALONE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs root"]
async fn a_storm_of_2000_publishes_costs_one_extraction_per_principal_within_budget() {
    let _alone = ALONE.lock().await;
    let cfg = StormConfig {
        pods: 2000,
        nodes: 200,
        principals: 20,
        rate: 10,
        burst: 5,
        node_dir: None,
    };
    let (report, stack) = run_storm(cfg).await.expect("storm");
    unmount_all(&stack);

    assert_eq!(
        report.failures, 0,
        "every publish succeeds; the first that failed: {:?}",
        report.first_failure
    );
    assert_eq!(
        report.extractions.len(),
        20,
        "every principal extracted: {:?}",
        report.extractions
    );
    assert!(
        report.extractions.values().all(|&n| n == 1),
        "exactly one extraction per principal at kadmind: {:?}",
        report.extractions
    );
    assert!(
        report.budget_violations.is_empty(),
        "{:?}",
        report.budget_violations
    );
    // (20 - burst 5) / 10 per s: the last extraction cannot come before 1.5 s.
    assert!(
        report.all_mounted >= Duration::from_millis(1400),
        "{:?}",
        report.all_mounted
    );

    let metrics = stack.metrics().render();
    assert!(
        metrics.contains(
            "kcred_kdc_operations_total{lane=\"kadmind\",op=\"extract_keytab\",realm=\"KCRED.TEST\",result=\"ok\"} 20"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("kcred_cache_misses_total{kind=\"keytab\"} 20"),
        "{metrics}"
    );
    let coalesced: u64 = metrics
        .lines()
        .find(|l| l.starts_with("kcred_coalesced_requests_total{kind=\"keytab\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let hits: u64 = metrics
        .lines()
        .find(|l| l.starts_with("kcred_cache_hits_total{kind=\"keytab\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert_eq!(
        coalesced + hits + 20,
        2000,
        "every request is an extraction, a coalesced wait or a cache hit"
    );
    stack.shutdown().await.expect("shutdown");
}

const FAST_BREAKER: &str = "[gate.kadmin]\nretries = 1\nbackoff_min_ms = 20\nbackoff_max_ms = 50\nbreaker_threshold = 2\nbreaker_cooldown_secs = 1\n";

#[tokio::test]
#[ignore = "needs root"]
async fn during_a_kdc_outage_cached_credentials_are_served_and_new_ones_are_unavailable() {
    let _alone = ALONE.lock().await;
    let mut stack = Stack::start(StackOptions {
        extra_config: FAST_BREAKER.into(),
        ..StackOptions::default()
    })
    .await
    .expect("stack");
    let first = TestPod::with_keytabs("web", "web-0", "node-a", "HTTP/web.example.com");
    stack.add_pod(&first);
    let t0 = stack
        .kubelet
        .publish(&first, "kcred")
        .await
        .expect("publish before outage");

    // The whole master goes down: KDC and kadmind.
    stack.realm.stop_kdc().expect("stop kdc");
    stack.realm.stop_kadmind().expect("stop kadmind");

    let cached = TestPod::with_keytabs("web", "web-1", "node-a", "HTTP/web.example.com");
    stack.add_pod(&cached);
    let t1 = stack
        .kubelet
        .publish(&cached, "kcred")
        .await
        .expect("cached credential still served");
    assert_eq!(
        std::fs::read(t1.join("krb5.keytab")).expect("read"),
        std::fs::read(t0.join("krb5.keytab")).expect("read")
    );

    let fresh = TestPod::with_keytabs("web", "web-2", "node-a", "HTTP/api.example.com");
    stack.add_pod(&fresh);
    for _ in 0..3 {
        let err = stack
            .kubelet
            .publish(&fresh, "kcred")
            .await
            .expect_err("not cached: unavailable");
        assert_eq!(err.code(), Code::Unavailable, "{err:?}");
        assert!(err.message().contains("kadmin"), "{}", err.message());
        assert!(
            !stack.kubelet.target_path(&fresh, "kcred").exists(),
            "no mount left behind"
        );
    }
    let metrics = stack.metrics().render();
    assert!(
        metrics.contains("kcred_gate_refused_total{lane=\"kadmind\",realm=\"KCRED.TEST\",reason=\"breaker_open\"}"),
        "breaker opened: {metrics}"
    );

    stack.realm.start_kdc().expect("start kdc");
    stack.realm.start_kadmind().expect("start kadmind");
    tokio::time::sleep(Duration::from_millis(1200)).await; // the breaker's cooldown

    let t2 = stack
        .kubelet
        .publish(&fresh, "kcred")
        .await
        .expect("recovers by itself");
    stack
        .realm
        .kinit_keytab(&t2.join("krb5.keytab"), "HTTP/api.example.com")
        .expect("kinit with the keytab issued after recovery");
    stack.shutdown().await.expect("shutdown");
}

/// A stack serving `/metrics` on a free loopback port.
async fn stack_with_metrics() -> (Stack, std::net::SocketAddr) {
    let port = kcred_testports::tcp().expect("a free port");
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let stack = Stack::start(StackOptions {
        metrics_listen: Some(addr),
        ..StackOptions::default()
    })
    .await
    .expect("stack");
    (stack, addr)
}

/// `GET /metrics` over plain HTTP: the whole response, headers included.
async fn scrape(addr: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut body = String::new();
    for _ in 0..50 {
        if let Ok(mut s) = tokio::net::TcpStream::connect(addr).await {
            s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
                .await
                .expect("write");
            s.read_to_string(&mut body).await.expect("read");
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    body
}

#[tokio::test]
async fn metrics_are_served_over_http() {
    let _alone = ALONE.lock().await;
    let (stack, addr) = stack_with_metrics().await;
    // A refused publish (the pod is unknown) still goes through FetchBundle,
    // and needs no mount.
    let ghost = TestPod::with_keytabs("web", "ghost", "node-a", "HTTP/web.example.com");
    let _ = stack.kubelet.publish(&ghost, "kcred").await;
    let body = scrape(addr).await;
    assert!(
        body.starts_with("HTTP/1.0 200") || body.starts_with("HTTP/1.1 200"),
        "{body}"
    );
    assert!(
        body.contains("# TYPE kcred_fetch_bundle_seconds histogram"),
        "{body}"
    );
    stack.shutdown().await.expect("shutdown");
}

#[tokio::test]
#[ignore = "needs root"]
async fn a_publish_is_counted_in_the_served_metrics() {
    let _alone = ALONE.lock().await;
    let (stack, addr) = stack_with_metrics().await;
    let pod = TestPod::with_keytabs("web", "web-0", "node-a", "HTTP/web.example.com");
    stack.add_pod(&pod);
    stack.kubelet.publish(&pod, "kcred").await.expect("publish");
    let body = scrape(addr).await;
    assert!(
        body.contains(
            "kcred_kdc_operations_total{lane=\"kadmind\",op=\"extract_keytab\",realm=\"KCRED.TEST\",result=\"ok\"} 1"
        ),
        "{body}"
    );
    assert!(
        body.contains("kcred_fetch_bundle_seconds_count{code=\"Ok\"} 1"),
        "{body}"
    );
    stack.shutdown().await.expect("shutdown");
}
