//! Issue 11, item 1: a flood of idle connections (TCP only, never TLS) from
//! many source addresses neither exhausts the controller nor keeps a node
//! from being served, and never gets a healthy node declared lost. The
//! controller closes every flood connection by itself.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use common::{Files, Running};
use kcred_audit::Action;
use kcred_proto::kcred::v1::node_credentials_client::NodeCredentialsClient;
use kcred_proto::kcred::v1::{FetchBundleRequest, HeartbeatRequest, PodRef};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpSocket, TcpStream};

const SOURCES: u8 = 60;
const PER_SOURCE: usize = 50;
const NODE: &str = "node-1";

const POLICY: &str = r#"
[[role_accounts]]
login = "websvc"
uid = 1500
gid = 1500
namespaces = ["web"]
keys = ["orders-db"]
"#;

const PODS: &str = r#"
[[pods]]
namespace = "web"
name = "web-0"
uid = "u0"
node_name = "node-1"
run_as_user = 1500
run_as_group = 1500
annotations = { "kcred.io/keys" = "orders-db" }
"#;

const LIMITS: &str = r#"
[tls]
names = ["controller.test"]
ca_export_file = "{DIR}/ca.crt"

[leases]
ttl_secs = 3

[limits]
max_connections = 400
max_unauthenticated_per_source = 40
tls_handshake_timeout_secs = 2
unauthenticated_idle_secs = 4
"#;

fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    assert!(
        hard >= 4096,
        "the flood needs about 3,500 file descriptors; the hard limit is {hard}"
    );
}

async fn node_channel(f: &Files, addr: SocketAddr) -> tonic::transport::Channel {
    f.tls_endpoint(addr)
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("node connects")
}

/// One round of what a node does: heartbeat, then fetch its pod's bundle.
async fn serve_node(channel: tonic::transport::Channel) -> Result<(), tonic::Status> {
    let mut c = NodeCredentialsClient::new(channel);
    c.heartbeat(HeartbeatRequest {
        node_name: NODE.into(),
        volume_ids: vec!["vol-0".into()],
    })
    .await?;
    let bundle = c
        .fetch_bundle(FetchBundleRequest {
            node_name: NODE.into(),
            pod: Some(PodRef {
                namespace: "web".into(),
                name: "web-0".into(),
                uid: "u0".into(),
                service_account: "default".into(),
            }),
            volume_id: "vol-0".into(),
            refresh: true,
            ..Default::default()
        })
        .await?
        .into_inner();
    assert!(!bundle.files.is_empty(), "a bundle with the key ring");
    Ok(())
}

/// Opens an idle TCP connection from `source` (never a TLS byte).
async fn idle_connection(source: Ipv4Addr, to: SocketAddr) -> Option<TcpStream> {
    let s = TcpSocket::new_v4().ok()?;
    s.bind(SocketAddr::new(source.into(), 0)).ok()?;
    tokio::time::timeout(Duration::from_secs(5), s.connect(to))
        .await
        .ok()?
        .ok()
}

/// Waits until the controller closes `c` (EOF or reset), at most `secs`.
async fn closed_by_server(mut c: TcpStream, secs: u64) -> bool {
    let mut buf = [0u8; 16];
    matches!(
        tokio::time::timeout(Duration::from_secs(secs), c.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_idle_connections_neither_stops_a_node_nor_gets_it_lost() {
    raise_fd_limit();
    let f = Files::new(LIMITS);
    std::fs::write(f.path("policy.toml"), POLICY).unwrap();
    std::fs::write(f.path("pods.toml"), PODS).unwrap();
    let c = Running::start(&f.config).await;
    let node = node_channel(&f, c.addr).await;
    serve_node(node.clone()).await.expect("before the flood");

    // The flood: 3,000 connections from 60 addresses, all at once.
    let mut opening = tokio::task::JoinSet::new();
    for s in 0..SOURCES {
        for _ in 0..PER_SOURCE {
            let to = c.addr;
            opening.spawn(idle_connection(Ipv4Addr::new(127, 0, 1, s + 1), to));
        }
    }
    // The node keeps being served while the flood arrives and sits, for
    // longer than its lease's ttl.
    let mut held: Vec<TcpStream> = Vec::new();
    let mut rounds = 0;
    loop {
        serve_node(node.clone())
            .await
            .expect("served during the flood");
        rounds += 1;
        while let Some(r) = opening.try_join_next() {
            held.extend(r.unwrap());
        }
        if opening.is_empty() && rounds >= 20 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(held.len() > 2000, "the flood connected ({})", held.len());
    // A new connection in the middle of the flood gets in too.
    let fresh = node_channel(&f, c.addr).await;
    serve_node(fresh).await.expect("a new connection is served");
    c.stop().await;
    let records = kcred_audit::query(&f.config.audit_log, &Default::default()).unwrap();
    assert!(
        !records.iter().any(|r| r.action == Action::NodeLost),
        "the node stayed alive: {records:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_closes_every_flood_connection_by_itself() {
    raise_fd_limit();
    let f = Files::new(LIMITS);
    let c = Running::start(&f.config).await;
    // In waves the kernel's accept queue can take: a connection the
    // kernel dropped from a full queue (SYN cookies) is open only on the
    // client's side, and no server can close what it never saw.
    let mut opening = tokio::task::JoinSet::new();
    for s in 0..SOURCES {
        let mut wave = tokio::task::JoinSet::new();
        for _ in 0..PER_SOURCE {
            let to = c.addr;
            wave.spawn(idle_connection(Ipv4Addr::new(127, 0, 2, s + 1), to));
        }
        while let Some(conn) = wave.join_next().await {
            if let Some(conn) = conn.unwrap() {
                opening.spawn(async move { Some(closed_by_server(conn, 30).await) });
            }
        }
    }
    let (mut opened, mut closed) = (0, 0);
    while let Some(r) = opening.join_next().await {
        if let Some(was_closed) = r.unwrap() {
            opened += 1;
            closed += usize::from(was_closed);
        }
    }
    assert!(opened > 2000, "the flood connected ({opened})");
    assert_eq!(
        closed, opened,
        "every idle connection was closed by the controller"
    );
    c.stop().await;
}

/// One node with stolen keys opening connection after connection takes
/// at most `max_connections_per_node` of the controller's slots: each
/// new one closes its own oldest, and other nodes keep theirs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_holds_at_most_its_share_of_connections_its_oldest_closed_first() {
    let f = Files::new(&LIMITS.replace("[limits]\n", "[limits]\nmax_connections_per_node = 2\n"));
    std::fs::write(f.path("policy.toml"), POLICY).unwrap();
    std::fs::write(f.path("pods.toml"), PODS).unwrap();
    let c = Running::start(&f.config).await;
    let other = node_channel(&f, c.addr).await;
    NodeCredentialsClient::new(other.clone())
        .heartbeat(HeartbeatRequest {
            node_name: "node-2".into(),
            volume_ids: vec![],
        })
        .await
        .expect("another node");

    let mut channels = Vec::new();
    for _ in 0..5 {
        let ch = node_channel(&f, c.addr).await;
        serve_node(ch.clone()).await.expect("served");
        channels.push(ch);
    }

    let conns = &c.state.connections;
    assert_eq!(conns.refused_and_evicted().1, 3, "the node's three oldest");
    assert_eq!(conns.open(), 3, "two of the node's and the other node's");
    serve_node(channels.pop().unwrap())
        .await
        .expect("the newest still served");
    NodeCredentialsClient::new(other)
        .heartbeat(HeartbeatRequest {
            node_name: "node-2".into(),
            volume_ids: vec![],
        })
        .await
        .expect("the other node's connection kept");
    assert_eq!(conns.refused_and_evicted().1, 3);
    c.stop().await;
}
