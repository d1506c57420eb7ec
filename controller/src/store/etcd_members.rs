//! Keeping requests off etcd members that do not answer.
//!
//! The etcd client spreads requests over every listed member and keeps
//! choosing a dead one for some of them: with one of three members down, a
//! quarter of the requests failed at once, and a new credential (several
//! etcd round trips) rarely got through. Two remedies, one for each way a
//! member can be gone:
//! - a member that refuses connections fails a request before it is sent,
//!   so that request is simply sent again ([`never_sent`]): the balancer
//!   then picks another member;
//! - a member that answers nothing (a host down, a partition) would cost
//!   every request routed to it the whole timeout, so a watcher probes each
//!   member and takes the silent ones out of the client's rotation until
//!   they answer again ([`watch_members`]).

use std::collections::BTreeSet;
use std::time::Duration;

use etcd_client::{Client, ConnectOptions};

/// How often each member is asked whether it answers.
pub(crate) const PROBE_EVERY: Duration = Duration::from_secs(1);

/// Whether a failed request never reached etcd (its connection could not
/// be made), so sending it again cannot apply it twice. A request that
/// failed any other way (a timeout, a connection lost mid-call) may have
/// been applied and is not repeated.
pub(crate) fn never_sent(e: &etcd_client::Error) -> bool {
    // etcd's error does not chain to the gRPC status it wraps.
    let mut cause: Option<&(dyn std::error::Error + 'static)> = match e {
        etcd_client::Error::GRpcStatus(status) => Some(status),
        etcd_client::Error::TransportError(t) => Some(t),
        other => Some(other),
    };
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::HostUnreachable
                    | std::io::ErrorKind::NetworkUnreachable
                    | std::io::ErrorKind::AddrNotAvailable
            );
        }
        cause = c.source();
    }
    false
}

/// Probes every member of `endpoints` each [`PROBE_EVERY`], at most
/// `timeout` each, and keeps `client`'s rotation to those that answer
/// (never emptier than one member: with none answering, requests fail and
/// say so). Runs until the client's runtime stops.
pub(crate) async fn watch_members(
    client: Client,
    endpoints: Vec<String>,
    options: ConnectOptions,
    timeout: Duration,
) {
    let mut probes: Vec<Option<Client>> = vec![None; endpoints.len()];
    let mut out: BTreeSet<usize> = BTreeSet::new();
    let mut tick = tokio::time::interval(PROBE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for (i, endpoint) in endpoints.iter().enumerate() {
            let answers = probe(&mut probes[i], endpoint, &options, timeout).await;
            let taken_out = out.contains(&i);
            if answers && taken_out && client.add_endpoint(endpoint).await.is_ok() {
                out.remove(&i);
                tracing::info!(member = %endpoint, "etcd member answers again; requests go to it");
            } else if !answers
                && !taken_out
                && out.len() + 1 < endpoints.len()
                && client.remove_endpoint(endpoint).await.is_ok()
            {
                out.insert(i);
                tracing::warn!(member = %endpoint, "etcd member does not answer; requests avoid it until it does");
            }
        }
    }
}

/// Whether the member at `endpoint` reports its status, with a leader,
/// within `timeout`, through a client of its own (kept between probes).
async fn probe(
    slot: &mut Option<Client>,
    endpoint: &str,
    options: &ConnectOptions,
    timeout: Duration,
) -> bool {
    let asked = tokio::time::timeout(timeout, async {
        if slot.is_none() {
            *slot = Some(Client::connect([endpoint], Some(options.clone())).await?);
        }
        match slot {
            Some(c) => c.status().await.map(|s| s.leader() != 0),
            None => Ok(false),
        }
    })
    .await;
    // A member cut off from its peers answers, but without a leader: the
    // requests sent there (which require one) would fail, so it counts as
    // silent.
    match asked {
        Ok(Ok(true)) => true,
        Ok(Ok(false)) => false,
        Ok(Err(_)) | Err(_) => {
            *slot = None;
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{never_sent, probe};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_member_without_a_leader_counts_as_silent() {
        let mut cluster = kcred_testetcd::EtcdCluster::start(3).expect("etcd");
        let (options, timeout) = (
            etcd_client::ConnectOptions::new(),
            std::time::Duration::from_secs(1),
        );
        let mut slot = None;
        let last = cluster.endpoint(2);
        assert!(probe(&mut slot, &last, &options, timeout).await);
        // Its two peers gone, member 2 still answers, but leads nothing
        // and follows no one.
        cluster.kill(0);
        cluster.kill(1);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while probe(&mut slot, &last, &options, timeout).await {
            assert!(
                std::time::Instant::now() < deadline,
                "a member without a quorum still counts as answering"
            );
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }

    #[tokio::test]
    async fn a_refused_connection_means_the_request_never_left() {
        let port = {
            let free = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            free.local_addr().expect("addr").port()
        };
        let mut client = etcd_client::Client::connect([format!("http://127.0.0.1:{port}")], None)
            .await
            .expect("the client connects lazily");
        let refused = client.get("k", None).await.expect_err("nothing listens");
        assert!(never_sent(&refused), "{refused:?}");
        let answered = etcd_client::Error::GRpcStatus(tonic::Status::unavailable("no leader"));
        assert!(!never_sent(&answered));
    }
}
