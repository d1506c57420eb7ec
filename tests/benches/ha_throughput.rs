//! Fetch throughput with two controllers on one etcd against one, and
//! what the cluster coordination adds to an issue: every fetch is served
//! from the store (the keytab was issued first), as renewals and pod
//! restarts are. Then one `FetchBundles` call refreshing many volumes of
//! a node (a rotation's push), whose volumes each read their records
//! through to etcd. Prints tables; asserts nothing about time.
//!
//! `cargo bench -p kcred-tests --bench ha_throughput`

use std::time::{Duration, Instant};

use kcred_proto::kcred::v1::node_credentials_client::NodeCredentialsClient;
use kcred_proto::kcred::v1::volume_result::Outcome;
use kcred_proto::kcred::v1::{FetchBundleRequest, FetchBundlesRequest, PodRef, VolumeRequest};
use kcred_testetcd::EtcdCluster;
use kcred_tests::TestPod;
use kcred_tests::procs::{NODE_A, ProcStack};

/// Fetches per measurement (each needs its own single-use token).
const FETCHES: usize = 120;
/// Fetches in flight at once.
const CONCURRENCY: usize = 12;
/// Volumes in one `FetchBundles` call (a call takes at most 256).
const BATCH: usize = 200;
/// Timed `FetchBundles` calls.
const BATCH_CALLS: usize = 5;

/// One `FetchBundles` call for every pod's volume, as node-a; how long it
/// took. Every volume must get its bundle.
async fn batch(
    stack: &ProcStack,
    channel: &tonic::transport::Channel,
    pods: &[TestPod],
) -> Duration {
    let mut req = tonic::Request::new(FetchBundlesRequest {
        node_name: NODE_A.into(),
        volumes: pods
            .iter()
            .map(|p| VolumeRequest {
                pod: Some(p.pod_ref()),
                volume_id: kcred_tests::Kubelet::volume_id(p, "kcred"),
                refresh: true,
                ..Default::default()
            })
            .collect(),
    });
    let token = stack.node_token(NODE_A).expect("token");
    req.metadata_mut()
        .insert("authorization", token.parse().expect("metadata"));
    let start = Instant::now();
    let resp = NodeCredentialsClient::new(channel.clone())
        .fetch_bundles(req)
        .await
        .expect("batch")
        .into_inner();
    let took = start.elapsed();
    assert_eq!(resp.volumes.len(), pods.len());
    let refused: Vec<_> = resp
        .volumes
        .iter()
        .filter(|v| !matches!(v.outcome, Some(Outcome::Bundle(_))))
        .collect();
    assert!(refused.is_empty(), "every volume served: {refused:?}");
    took
}

async fn storm(
    channels: &[tonic::transport::Channel],
    tokens: Vec<String>,
    pod: &TestPod,
) -> Duration {
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    let queue = std::sync::Arc::new(tokio::sync::Mutex::new(tokens));
    for w in 0..CONCURRENCY {
        let (channel, queue, pod) = (
            channels[w % channels.len()].clone(),
            queue.clone(),
            pod.clone(),
        );
        set.spawn(async move {
            loop {
                let Some(token) = queue.lock().await.pop() else {
                    return;
                };
                let mut req = tonic::Request::new(FetchBundleRequest {
                    node_name: NODE_A.into(),
                    pod: Some(PodRef {
                        namespace: pod.namespace.clone(),
                        name: pod.name.clone(),
                        uid: pod.uid.clone(),
                        service_account: "default".into(),
                    }),
                    volume_id: kcred_tests::Kubelet::volume_id(&pod, "kcred"),
                    refresh: true,
                    ..Default::default()
                });
                req.metadata_mut()
                    .insert("authorization", token.parse().expect("metadata"));
                NodeCredentialsClient::new(channel.clone())
                    .fetch_bundle(req)
                    .await
                    .expect("fetch");
            }
        });
    }
    while let Some(done) = set.join_next().await {
        done.expect("worker");
    }
    start.elapsed()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() {
    let etcd = EtcdCluster::start(3).expect("etcd");
    let store = format!(
        "[store]\nbackend = \"etcd\"\n\n[store.etcd]\nendpoints = {:?}\n",
        etcd.endpoints()
    );
    let mut stack = ProcStack::start(&store).await.expect("stack");
    let peer = stack.start_peer_controller("-2").await.expect("peer");
    let pod = TestPod::with_keytabs("web", "web-0", NODE_A, "HTTP/web.example.com");
    stack.set_pods(&[&pod]).await.expect("pods");
    let one = stack.channel_to(stack.port).await.expect("channel");
    let two = stack.channel_to(peer.port).await.expect("channel");
    let tokens = |n: usize| -> Vec<String> {
        (0..n)
            .map(|_| stack.node_token(NODE_A).expect("token"))
            .collect()
    };
    // Issue first: what follows is served from the store.
    storm(std::slice::from_ref(&one), tokens(1), &pod).await;

    let alone = storm(std::slice::from_ref(&one), tokens(FETCHES), &pod).await;
    let both = storm(&[one, two], tokens(FETCHES), &pod).await;
    let rate = |d: Duration| FETCHES as f64 / d.as_secs_f64();
    println!("fetches served from the store, {FETCHES} fetches, {CONCURRENCY} in flight:");
    println!(
        "{:<22} {:>12} {:>12}",
        "controllers", "fetches/s", "ms/fetch"
    );
    for (label, d) in [("1", alone), ("2 (same etcd)", both)] {
        println!(
            "{label:<22} {:>12.1} {:>12.2}",
            rate(d),
            d.as_secs_f64() * 1000.0 / FETCHES as f64 * CONCURRENCY as f64
        );
    }
    println!(
        "every fetch adds one etcd transaction (the token's replay entry) and two reads \
         (revocations); the cost of one etcd write per issue: \
         `cargo bench -p kcred-tests --bench store_backends`"
    );

    // A rotation's push: one call refreshing many volumes of the node.
    let mut pods: Vec<TestPod> = (0..BATCH)
        .map(|i| TestPod::with_keytabs("web", &format!("web-b{i}"), NODE_A, "HTTP/web.example.com"))
        .collect();
    pods.push(pod.clone());
    stack.set_pod_list(&pods).await.expect("pods");
    pods.pop();
    let one = stack.channel_to(stack.port).await.expect("channel");
    // Issue first: the timed calls refresh volumes the store holds.
    batch(&stack, &one, &pods).await;
    let mut times: Vec<Duration> = Vec::with_capacity(BATCH_CALLS);
    for _ in 0..BATCH_CALLS {
        times.push(batch(&stack, &one, &pods).await);
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!();
    println!("one FetchBundles call refreshing {BATCH} volumes, {BATCH_CALLS} calls:");
    println!("{:<22} {:>12} {:>12}", "", "p50 ms", "max ms");
    println!(
        "{:<22} {:>12.1} {:>12.1}",
        "1 controller",
        ms(times[BATCH_CALLS / 2]),
        ms(times[BATCH_CALLS - 1])
    );
    println!(
        "each volume reads its record and its pod's revocation through to etcd \
         ({} reads a call)",
        2 * BATCH
    );
    drop(peer);
}
