//! `Heartbeats`: a node's heartbeats as messages on one long-lived stream.
//!
//! A unary heartbeat pays for a new HTTP/2 stream, its headers and
//! trailers, the service stack and the caller's authentication, every
//! time; at 10,000 nodes beating every 10 s that is most of what
//! heartbeats cost. On the stream each beat is one message each way, read
//! and answered in the task that serves the stream (no task or channel in
//! between), through the same [`super::node::beat`] as the unary call.
//!
//! Who may beat, and for how long, is what the unary call allows:
//! - A node proven by its pod's token (psat) is checked again at every
//!   message, as every unary call is (a cache lookup until the token's
//!   review must be redone): a driver pod that is deleted ends the stream.
//!   The stream also ends, cleanly, when the token expires, and the node
//!   opens another with its current token.
//! - Otherwise the stream must be on a TLS connection. A TLS connection is
//!   bound to one peer for its life, and a unary call on a connection that
//!   proved a node (its client certificate, or a Kerberos token once) is
//!   accepted on that proof alone (`crate::auth`); the stream holds that
//!   proof for its life, as later calls would. Without TLS nothing binds
//!   one message to the next (a unary call proves itself anew with a
//!   single-use token, or, with `auth.mode = "none"`, not at all), so the
//!   stream is refused as `UNIMPLEMENTED` and the node beats by unary
//!   calls.
//! - Every message must name the node the stream was opened for; one that
//!   names another is refused and audited as a unary call would be.
//! - A stream ends after [`STREAM_MAX_AGE`] in any case, and a node holds
//!   at most `limits.update_streams_per_node` of them at once.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use kcred_proto::kcred::v1::{HeartbeatRequest, HeartbeatResponse, Reason};
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::{Request, Response, Status, Streaming};

use super::node::{NodeApi, beat};
use crate::names;
use crate::reasons::{Refusal, status_of};

/// The longest a heartbeat stream lives on one authentication.
pub const STREAM_MAX_AGE: Duration = Duration::from_secs(600);

/// The answers of one open stream.
pub type Answers =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<HeartbeatResponse, Status>> + Send>>;

/// Opens a stream: reads the first message (it names the node),
/// authenticates the caller for that node, answers it, then answers each
/// message as it comes.
pub async fn open(
    api: &NodeApi,
    mut request: Request<Streaming<HeartbeatRequest>>,
) -> Result<Response<Answers>, Status> {
    // A pod token is checked again at every message (see the module); it
    // is the one credential the stream keeps.
    let pod_token = match (
        &api.state.psat,
        kcred_auth::BearerToken::from_request(&request),
    ) {
        (Some(_), Some(Ok(token))) => Some(token),
        _ => None,
    };
    let tls = request
        .extensions()
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .is_some();
    if !tls && pod_token.is_none() {
        return Err(Status::unimplemented(
            "heartbeat streams need a TLS connection or a pod token: call Heartbeat",
        ));
    }
    let Some(first) = request.get_mut().message().await? else {
        return Ok(Response::new(Box::pin(tokio_stream::empty())));
    };
    let node = first.node_name;
    names::validate_dns_name("node_name", &node).map_err(|e| status_of(&e))?;
    let auth = api.authenticate(&request, &node).await?;
    let cap = api.state.update_streams_per_node;
    let gauge = &api.state.metrics.heartbeat_streams;
    let Some(open) = api.heartbeat_streams.open(&node, cap, gauge) else {
        return Err(api.too_many_streams(&node, "heartbeat"));
    };
    let peer = request.remote_addr();
    // A stream on a pod token ends, cleanly, when the token expires: the
    // next message's check would refuse it (audited), and the driver's
    // current token is a newer one.
    let lifetime = pod_token
        .as_ref()
        .and_then(|t| crate::kubernetes::token_review::expiry(t.expose()))
        .map_or(STREAM_MAX_AGE, |exp| {
            let left = exp
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO);
            left.min(STREAM_MAX_AGE)
        });
    let answered = beat(&api.state, &node, first.volume_ids).await?;
    let session = Session {
        api: api.clone(),
        closing: api.state.closing.subscribe(),
        node,
        peer,
        pod_token,
        inbound: request.into_inner(),
        ends: Box::pin(tokio::time::sleep_until(Instant::now() + lifetime)),
        first: Some(answered),
        over: false,
        _open: open,
    };
    Ok(auth.respond(Box::pin(futures_util::stream::unfold(
        session,
        Session::next,
    ))))
}

/// One open stream's state between messages.
struct Session {
    api: NodeApi,
    node: String,
    peer: Option<std::net::SocketAddr>,
    /// The pod token that opened the stream, checked at every message.
    pod_token: Option<kcred_auth::BearerToken>,
    inbound: Streaming<HeartbeatRequest>,
    ends: Pin<Box<Sleep>>,
    closing: watch::Receiver<bool>,
    /// The answer to the first message, sent before any other.
    first: Option<HeartbeatResponse>,
    /// An error was sent: the stream ends with it.
    over: bool,
    _open: Open,
}

impl Session {
    /// The next answer, or `None` when the stream ends: the node closed
    /// its side, its connection broke, the stream reached its age, or the
    /// controller is shutting down (the node opens another, here or at
    /// another controller).
    async fn next(mut self) -> Option<(Result<HeartbeatResponse, Status>, Session)> {
        if let Some(first) = self.first.take() {
            return Some((Ok(first), self));
        }
        if self.over {
            return None;
        }
        let message = tokio::select! {
            m = self.inbound.message() => m,
            _ = &mut self.ends => return None,
            _ = self.closing.wait_for(|c| *c) => return None,
        };
        let req = match message {
            Ok(Some(req)) => req,
            Ok(None) => return None,
            // Refused as it was decoded (too many volume ids): the node
            // learns why, as from a refusal of the message itself.
            Err(status) if kcred_proto::reason::reason_of(&status).is_some() => {
                self.over = true;
                return Some((Err(status), self));
            }
            Err(status) => {
                tracing::debug!(node = %self.node, error = %status.message(), "heartbeat stream broke");
                return None;
            }
        };
        // Boxed: this future is what an open stream keeps between its
        // messages, and answering (a heartbeat's verdict, a release's
        // audit) is deep: inline it made every idle stream hold 9 KiB.
        let answer = Box::pin(self.answer(req)).await;
        // An error ends the stream (it travels in the trailers); the node
        // opens another.
        self.over = answer.is_err();
        Some((answer, self))
    }

    async fn answer(&self, req: HeartbeatRequest) -> Result<HeartbeatResponse, Status> {
        if req.node_name != self.node {
            return Err(self.refuse_other_node(&req.node_name).await);
        }
        if let (Some(psat), Some(token)) = (&self.api.state.psat, &self.pod_token)
            && let Err(rejected) = psat.authenticate(token, &self.node).await
        {
            return Err(self.api.refuse(self.peer, &self.node, rejected).await);
        }
        beat(&self.api.state, &self.node, req.volume_ids).await
    }

    /// Refuses a message naming another node than the stream's: logged,
    /// counted and audited by the unary call's authentication refusal.
    async fn refuse_other_node(&self, named: &str) -> Status {
        let rejected = crate::auth::Rejected {
            who: format!("node/{}", self.node),
            refusal: Refusal::new(
                Reason::NodeMismatch,
                format!(
                    "this heartbeat stream was opened for node {}; a heartbeat on it names another node",
                    self.node
                ),
            ),
        };
        self.api.refuse(self.peer, named, rejected).await
    }
}

/// The heartbeat streams each node holds open on this controller.
#[derive(Default)]
pub struct StreamCounts(Mutex<HashMap<String, usize>>);

impl StreamCounts {
    /// Counts one more stream of `node`, unless it holds `cap` already.
    fn open(
        self: &Arc<Self>,
        node: &str,
        cap: usize,
        gauge: &prometheus::IntGauge,
    ) -> Option<Open> {
        let mut counts = crate::locks::lock(&self.0);
        let held = counts.entry(node.to_string()).or_default();
        if *held >= cap {
            return None;
        }
        *held += 1;
        drop(counts);
        gauge.inc();
        Some(Open {
            counts: Arc::clone(self),
            node: node.to_string(),
            gauge: gauge.clone(),
        })
    }

    /// The streams `node` holds open.
    #[cfg(test)]
    fn held(&self, node: &str) -> usize {
        crate::locks::lock(&self.0).get(node).copied().unwrap_or(0)
    }
}

/// One open stream, counted for its node and in `kcred_heartbeat_streams`
/// while it lives, however it ends (the connection's task drops it).
struct Open {
    counts: Arc<StreamCounts>,
    node: String,
    gauge: prometheus::IntGauge,
}

impl Drop for Open {
    fn drop(&mut self) {
        self.gauge.dec();
        let mut counts = crate::locks::lock(&self.counts.0);
        if let Some(held) = counts.get_mut(&self.node) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                counts.remove(&self.node);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of what `f` returns, without calling it.
    fn returned_size<A, R>(_: impl Fn(A) -> R) -> usize {
        std::mem::size_of::<R>()
    }

    /// What every open stream keeps between its messages: 10,000 nodes
    /// hold one each. With the answer's future inline it was 9,120 bytes.
    #[test]
    fn an_idle_stream_keeps_little() {
        let waiting = returned_size(Session::next);
        assert!(waiting <= 2048, "{waiting} bytes");
    }

    #[test]
    fn a_node_holds_at_most_cap_streams_and_each_ending_frees_its_place() {
        let counts = Arc::new(StreamCounts::default());
        let gauge = prometheus::IntGauge::new("streams", "test").expect("gauge");
        let a1 = counts.open("a", 2, &gauge).expect("first");
        let a2 = counts.open("a", 2, &gauge).expect("second");
        assert!(counts.open("a", 2, &gauge).is_none(), "a third for a");
        let b = counts.open("b", 2, &gauge).expect("b has its own cap");
        assert_eq!((counts.held("a"), gauge.get()), (2, 3));

        drop(a1);
        assert_eq!((counts.held("a"), gauge.get()), (1, 2));
        let a3 = counts.open("a", 2, &gauge).expect("a place was freed");
        drop((a2, a3, b));
        assert_eq!((counts.held("a"), counts.held("b"), gauge.get()), (0, 0, 0));
        assert!(
            crate::locks::lock(&counts.0).is_empty(),
            "no entry left behind"
        );
    }
}
