//! What the gRPC stack keeps for each open connection, measured on the
//! bare TLS echo (`kcred_tests::bench::echo`) under a heap profiler.
//!
//! The scale bench reads the echo's RSS; this splits it by allocation
//! site. The echo serves in one process, run under the profiler; clients
//! in another open connections, make their calls, and, holding them all
//! open, tell the echo to exit, so what the profiler reports as not freed
//! at exit is what those connections hold:
//!
//! ```text
//! cargo build --release -p kcred-tests --example echo_connections
//! mkdir -p /tmp/echo
//! heaptrack -o /tmp/echo/heap target/release/examples/echo_connections serve /tmp/echo &
//! target/release/examples/echo_connections connect /tmp/echo 2000 10
//! heaptrack_print -f /tmp/echo/heap.zst --print-leaks 1
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use kcred_proto::kcred::v1::HeartbeatRequest;
use kcred_tests::bench::echo;

/// Calls in flight at once across all connections.
const CALLS_AT_ONCE: usize = 256;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = tokio::runtime::Runtime::new()?;
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["serve", dir] => rt.block_on(serve(PathBuf::from(dir))),
        ["connect", dir, connections, calls] => rt.block_on(connect(
            Path::new(dir),
            connections.parse().context("connections")?,
            calls.parse().context("calls")?,
        )),
        _ => bail!("usage: echo_connections serve DIR | connect DIR CONNECTIONS CALLS_EACH"),
    }
}

/// Serves the echo until `DIR/stop` appears, then exits at once, with
/// every connection still open.
async fn serve(dir: PathBuf) -> anyhow::Result<()> {
    // What an earlier run left would tell the clients it is serving.
    for stale in ["stop", "echo.addr"] {
        let _ = std::fs::remove_file(dir.join(stale));
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let stop = dir.join("stop");
    tokio::spawn(async move {
        while !stop.exists() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        std::process::exit(0);
    });
    echo::serve_in(&dir, listener).await
}

/// Opens `connections` connections to the echo in `dir`, each making one
/// call and then `calls` more, and tells the echo to exit while holding
/// them.
async fn connect(dir: &Path, connections: usize, calls: usize) -> anyhow::Result<()> {
    let (addr, cert) = echo::served_in(dir, Duration::from_secs(30)).await?;
    let mut clients = Vec::with_capacity(connections);
    for _ in 0..connections {
        let mut c = echo::client(&addr, &cert).await?;
        c.heartbeat(HeartbeatRequest::default()).await?;
        clients.push(c);
    }
    // A connection's calls go together, as a node's pods start together.
    let mut set = tokio::task::JoinSet::new();
    for c in &clients {
        for i in 0..calls {
            if set.len() >= CALLS_AT_ONCE
                && let Some(done) = set.join_next().await
            {
                done??;
            }
            let mut c = c.clone();
            let req = HeartbeatRequest {
                node_name: format!("volume-{i}"),
                volume_ids: vec![],
            };
            set.spawn(async move { c.heartbeat(req).await.map(drop) });
        }
    }
    while let Some(done) = set.join_next().await {
        done??;
    }
    std::fs::write(dir.join("stop"), "")?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    println!("{connections} connections, {calls} calls each: done");
    drop(clients);
    Ok(())
}
