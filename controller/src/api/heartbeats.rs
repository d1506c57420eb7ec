//! `Heartbeats`: a node's heartbeats as messages on one long-lived stream.
//!
//! A unary heartbeat pays for a new HTTP/2 stream, its headers and
//! trailers, the service stack and the caller's authentication, every
//! time; at 10,000 nodes beating every 10 s that is most of what
//! heartbeats cost. On the stream each beat is one message each way, read
//! and answered in the task that serves the stream (no task or channel in
//! between), through the same [`super::node::beat`] as the unary call.
//!
//! The caller is authenticated once, when the stream opens, for the node
//! its first message names; every later message must name the same node.
//! That is as safe as the unary call on the same connection: a TLS
//! connection is bound to one peer for its life (see `crate::auth`), and
//! a bearer token's review is what the unary call would reuse from its
//! cache. So that an identity that lapses (a token that expires, a node
//! removed from the policy) cannot beat for ever on an old proof, the
//! stream ends after [`STREAM_MAX_AGE`] and the node opens another,
//! proving itself again.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use kcred_proto::kcred::v1::{HeartbeatRequest, HeartbeatResponse, Reason};
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};
use tonic::{Request, Response, Status, Streaming};

use super::node::{NodeApi, beat};
use crate::names;
use crate::reasons::{Refusal, status_of};
use crate::state::ControllerState;

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
    let Some(first) = request.get_mut().message().await? else {
        return Ok(Response::new(Box::pin(tokio_stream::empty())));
    };
    let node = first.node_name;
    names::validate_dns_name("node_name", &node).map_err(|e| status_of(&e))?;
    api.authenticate(&request, &node).await?;
    let state = Arc::clone(&api.state);
    let answered = beat(&state, &node, first.volume_ids).await?;
    let session = Session {
        _open: Open::count(&state),
        closing: state.closing.subscribe(),
        state,
        node,
        inbound: request.into_inner(),
        ends: Box::pin(tokio::time::sleep_until(Instant::now() + STREAM_MAX_AGE)),
        first: Some(answered),
        over: false,
    };
    Ok(Response::new(Box::pin(futures_util::stream::unfold(
        session,
        Session::next,
    ))))
}

/// One open stream's state between messages.
struct Session {
    state: Arc<ControllerState>,
    node: String,
    inbound: Streaming<HeartbeatRequest>,
    ends: Pin<Box<Sleep>>,
    closing: watch::Receiver<bool>,
    /// The answer to the first message, sent before any other.
    first: Option<HeartbeatResponse>,
    /// An error was sent: the stream ends with it.
    over: bool,
    _open: Open,
}

/// Counts the stream in `kcred_heartbeat_streams` while it lives, however
/// it ends (the connection task drops it).
struct Open(prometheus::IntGauge);

impl Open {
    fn count(state: &ControllerState) -> Open {
        let gauge = state.metrics.heartbeat_streams.clone();
        gauge.inc();
        Open(gauge)
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.dec();
    }
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
            Err(status) => {
                tracing::debug!(node = %self.node, error = %status.message(), "heartbeat stream broke");
                return None;
            }
        };
        let answer = if req.node_name == self.node {
            beat(&self.state, &self.node, req.volume_ids).await
        } else {
            let refusal = Refusal::new(
                Reason::NodeMismatch,
                format!(
                    "this heartbeat stream was opened for node {}; a heartbeat on it names another node",
                    self.node
                ),
            );
            tracing::warn!(node = %self.node, named = %req.node_name.chars().take(253).collect::<String>(),
                "heartbeat stream refused: a message names another node");
            self.state.count_refusal(refusal.reason);
            Err(refusal.into())
        };
        // An error ends the stream (it travels in the trailers); the node
        // opens another.
        self.over = answer.is_err();
        Some((answer, self))
    }
}
