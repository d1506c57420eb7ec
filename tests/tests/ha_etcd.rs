//! Issue 14, several controllers on one etcd: two real controller processes
//! share one store on a three-member etcd cluster and serve at once; a
//! credential issued through one is served by the other from the store,
//! with no second extraction from kadmind.

use kcred_proto::kcred::v1::Bundle;
use kcred_testetcd::EtcdCluster;
use kcred_tests::TestPod;
use kcred_tests::ha::fetch_as_node_a;
use kcred_tests::procs::{NODE_A, ProcStack};

/// FetchBundle as node-a (its own Kerberos token) from the controller on
/// `port`.
async fn fetch(stack: &ProcStack, port: u16, pod: &TestPod) -> Bundle {
    let token = stack.node_token(NODE_A).expect("node-a token");
    let channel = stack.channel_to(port).await.expect("tls channel");
    fetch_as_node_a(channel, token, pod)
        .await
        .unwrap_or_else(|e| panic!("fetch {} from :{port}: {e:?}", pod.name))
}

fn keytab(b: &Bundle) -> Vec<u8> {
    b.files
        .iter()
        .find(|f| f.name == "krb5.keytab")
        .map(|f| f.content.clone())
        .expect("a keytab in the bundle")
}

/// `kcred_kdc_operations_total` for keytab extractions, from `/metrics`.
async fn extractions(metrics_port: u16) -> u64 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", metrics_port))
        .await
        .expect("metrics port");
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut body = String::new();
    s.read_to_string(&mut body).await.expect("read");
    body.lines()
        .filter(|l| l.starts_with("kcred_kdc_operations_total") && l.contains("extract_keytab"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Keys kadmind handed out for `principal` (its own log).
fn kadmind_extractions(stack: &ProcStack, principal: &str) -> usize {
    std::fs::read_to_string(stack.realm.dir().join("kadmind.log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("get_principal_keys") && l.contains(principal))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_controllers_on_one_etcd_serve_at_once_and_extract_each_keytab_once() {
    let etcd = EtcdCluster::start(3).expect("etcd");
    let store = format!(
        "[store]\nbackend = \"etcd\"\n\n[store.etcd]\nendpoints = {:?}\n",
        etcd.endpoints()
    );
    let mut stack = ProcStack::start(&store).await.expect("stack");
    let peer = stack.start_peer_controller("-2").await.expect("peer");
    let web0 = TestPod::with_keytabs("web", "web-0", NODE_A, "HTTP/web.example.com");
    let web1 = TestPod::with_keytabs("web", "web-1", NODE_A, "HTTP/web.example.com");
    let api0 = TestPod::with_keytabs("web", "api-0", NODE_A, "HTTP/api.example.com");
    let api1 = TestPod::with_keytabs("web", "api-1", NODE_A, "HTTP/api.example.com");
    stack
        .set_pods(&[&web0, &web1, &api0, &api1])
        .await
        .expect("pods");

    // Issued through the first controller, served by the second.
    let first = fetch(&stack, stack.port, &web0).await;
    let second = fetch(&stack, peer.port, &web1).await;
    assert_eq!(
        keytab(&first),
        keytab(&second),
        "two keytabs for one principal"
    );
    assert_eq!(
        extractions(peer.metrics_port).await,
        0,
        "the second controller extracted what the store held"
    );
    // And the other way round, both serving at once.
    let (a, b) = tokio::join!(
        fetch(&stack, peer.port, &api0),
        fetch(&stack, stack.port, &web0)
    );
    assert_eq!(keytab(&b), keytab(&first));
    assert_eq!(extractions(peer.metrics_port).await, 1);
    let again = fetch(&stack, stack.port, &api1).await;
    assert_eq!(keytab(&again), keytab(&a));
    let r = kcred_testrealm::DEFAULT_REALM;
    for p in ["HTTP/web.example.com", "HTTP/api.example.com"] {
        assert_eq!(
            kadmind_extractions(&stack, &format!("{p}@{r}")),
            1,
            "kadmind handed out {p}'s keys more than once:\n{}",
            std::fs::read_to_string(stack.realm.dir().join("kadmind.log")).unwrap_or_default()
        );
    }
    drop(peer);
}

/// Which member leads, asked of each member with etcd's own client.
async fn etcd_leader(etcd: &EtcdCluster) -> usize {
    for i in 0..etcd.endpoints().len() {
        let Ok(mut c) = etcd_client::Client::connect([etcd.endpoint(i)], None).await else {
            continue;
        };
        let Ok(status) = c.status().await else {
            continue;
        };
        if status.header().map(|h| h.member_id()) == Some(status.leader()) {
            return i;
        }
    }
    panic!("no etcd member leads:\n{}", etcd.log_tail());
}

/// FetchBundle, retried while the controller answers STORE_UNAVAILABLE
/// (etcd electing a new leader, its client finding the members that
/// answer), as a driver would; for at most a minute (elections take longer
/// on a loaded machine).
async fn fetch_retrying(stack: &ProcStack, port: u16, pod: &TestPod) -> Bundle {
    let token = || stack.node_token(NODE_A).expect("node-a token");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        let channel = stack.channel_to(port).await.expect("tls channel");
        match fetch_as_node_a(channel, token(), pod).await {
            Ok(b) => return b,
            Err(e) => {
                assert_eq!(
                    kcred_proto::reason::reason_of(&e),
                    Some(kcred_proto::kcred::v1::Reason::StoreUnavailable),
                    "{e:?}"
                );
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        }
    }
    panic!("{} never served again", pod.name);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_continues_when_the_etcd_leader_is_killed() {
    let mut etcd = EtcdCluster::start(3).expect("etcd");
    let store = format!(
        "[store]\nbackend = \"etcd\"\n\n[store.etcd]\nendpoints = {:?}\ntimeout_ms = 2000\n",
        etcd.endpoints()
    );
    let mut stack = ProcStack::start(&store).await.expect("stack");
    let peer = stack.start_peer_controller("-2").await.expect("peer");
    let web0 = TestPod::with_keytabs("web", "web-0", NODE_A, "HTTP/web.example.com");
    let web1 = TestPod::with_keytabs("web", "web-1", NODE_A, "HTTP/web.example.com");
    stack.set_pods(&[&web0, &web1]).await.expect("pods");
    let issued = keytab(&fetch(&stack, stack.port, &web0).await);

    let leader = etcd_leader(&etcd).await;
    etcd.kill(leader);
    for (port, pod) in [(stack.port, &web0), (peer.port, &web1)] {
        assert_eq!(keytab(&fetch_retrying(&stack, port, pod).await), issued);
    }
    assert_eq!(extractions(peer.metrics_port).await, 0);
    assert_ne!(etcd_leader(&etcd).await, leader, "the killed member leads");
    etcd.restart(leader).expect("member back");
    drop(peer);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_cut_off_from_etcd_stops_issuing_while_the_other_carries_on() {
    let mut etcd = EtcdCluster::start(3).expect("etcd");
    let store = |endpoints: Vec<String>| {
        format!(
            "[store]\nbackend = \"etcd\"\n\n[store.etcd]\nendpoints = {endpoints:?}\ntimeout_ms = 1000\n"
        )
    };
    // The first controller lists every member, the peer member 2 only:
    // losing member 2 cuts the peer off, and the first one carries on with
    // a dead member in its list (it stops sending requests there).
    let mut stack = ProcStack::start(&store(etcd.endpoints()))
        .await
        .expect("stack");
    let peer = stack
        .start_peer_controller_with("-2", &store(vec![etcd.endpoint(2)]))
        .await
        .expect("peer");
    let web0 = TestPod::with_keytabs("web", "web-0", NODE_A, "HTTP/web.example.com");
    let api0 = TestPod::with_keytabs("web", "api-0", NODE_A, "HTTP/api.example.com");
    stack.set_pods(&[&web0, &api0]).await.expect("pods");
    let issued = keytab(&fetch(&stack, peer.port, &web0).await);

    etcd.kill(2);
    let token = stack.node_token(NODE_A).expect("node-a token");
    let channel = stack.channel_to(peer.port).await.expect("channel");
    let err = fetch_as_node_a(channel, token, &api0)
        .await
        .expect_err("a controller without etcd issued");
    assert_eq!(
        kcred_proto::reason::reason_of(&err),
        Some(kcred_proto::kcred::v1::Reason::StoreUnavailable),
        "{err:?}"
    );
    assert_eq!(
        extractions(peer.metrics_port).await,
        1,
        "the cut-off controller went to kadmind"
    );
    // The other controller carries on, for old and new credentials.
    assert_eq!(
        keytab(&fetch_retrying(&stack, stack.port, &web0).await),
        issued
    );
    fetch_retrying(&stack, stack.port, &api0).await;
    drop(peer);
}
