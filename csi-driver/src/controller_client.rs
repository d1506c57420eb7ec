//! The driver's side of the kcred.v1 node API.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use kcred_auth::BearerToken;
use kcred_proto::kcred::v1::node_credentials_client::NodeCredentialsClient;
use kcred_proto::kcred::v1::volume_result::Outcome;
use kcred_proto::kcred::v1::{
    Bundle, FetchBundleRequest, FetchBundlesRequest, HeartbeatRequest, HeartbeatResponse, PodRef,
    Reason, VolumeRequest, VolumeUpdate, WatchUpdatesRequest,
};
use tonic::Code;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use crate::connection_proof::{ConnectionProof, CountingConnector, PROOF_LOST, ProofTracking};
use crate::metrics::Metrics;
pub use crate::node_identity::NodeIdentity;
use crate::node_identity::{NO_NODE_PROOF, Proving};

/// Why a call to the controller failed, as the driver acts on it: by the
/// typed reason the controller sends, never by its message.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ControllerError {
    /// The controller answered with a refusal or a failure of its own.
    #[error("controller: {}", .status.message())]
    Refused {
        /// The reason it gave (`None` from a controller that sends none).
        reason: Option<Reason>,
        /// Its status, code and message kept as sent.
        status: tonic::Status,
    },
    /// The controller could not be reached or did not answer in time.
    #[error("controller unreachable: {}", .0.message())]
    Unreachable(tonic::Status),
}

impl ControllerError {
    /// Classifies a status from a call: a reason means the controller
    /// answered; without one, the codes a broken connection or timeout
    /// produce mean it was not reached.
    pub fn from_status(status: tonic::Status) -> Self {
        match kcred_proto::reason::reason_of(&status) {
            Some(reason) => ControllerError::Refused {
                reason: Some(reason),
                status,
            },
            None if matches!(
                status.code(),
                Code::Unavailable | Code::Unknown | Code::Cancelled | Code::DeadlineExceeded
            ) =>
            {
                ControllerError::Unreachable(status)
            }
            None => ControllerError::Refused {
                reason: None,
                status,
            },
        }
    }

    /// The controller's reason, if it gave one.
    pub fn reason(&self) -> Option<Reason> {
        match self {
            ControllerError::Refused { reason, .. } => *reason,
            ControllerError::Unreachable(_) => None,
        }
    }

    /// Whether the volume (or its pod) was revoked: its files must go.
    pub fn is_revoked(&self) -> bool {
        self.reason() == Some(Reason::VolumeRevoked)
    }

    /// Whether the controller does not know the call (an older one
    /// without `FetchBundles`).
    pub fn is_unimplemented(&self) -> bool {
        matches!(self, ControllerError::Refused { reason: None, status } if status.code() == Code::Unimplemented)
    }

    /// Whether the controller refused the node's proof of identity.
    pub fn is_authentication_refused(&self) -> bool {
        matches!(
            self.reason(),
            Some(Reason::Unauthenticated | Reason::NotANodeIdentity | Reason::NodeMismatch)
        )
    }

    /// Whether the node had no proof of identity to send (see
    /// [`crate::node_identity::NO_NODE_PROOF`]): the call never left the
    /// node, and would not get further with another controller.
    pub fn is_node_proof_missing(&self) -> bool {
        never_left_node(self.status())
    }

    /// Whether the same call may succeed later without anyone acting.
    pub fn is_transient(&self) -> bool {
        match self {
            ControllerError::Unreachable(_) => true,
            ControllerError::Refused { reason, status } => match reason {
                Some(r) => r.is_transient(),
                None => matches!(status.code(), Code::ResourceExhausted | Code::Aborted),
            },
        }
    }

    /// Whether this controller cannot serve while another might: it was
    /// not reached, or it lost its store (etcd) and stopped issuing.
    pub fn controller_cannot_serve(&self) -> bool {
        matches!(self, ControllerError::Unreachable(_))
            || self.reason() == Some(Reason::StoreUnavailable)
    }

    /// The status as received.
    pub fn status(&self) -> &tonic::Status {
        match self {
            ControllerError::Refused { status, .. } | ControllerError::Unreachable(status) => {
                status
            }
        }
    }
}

/// Whether a call's status says it never left the node: it had no proof
/// of identity to send ([`crate::node_identity::NO_NODE_PROOF`]).
fn never_left_node(status: &tonic::Status) -> bool {
    status.metadata().contains_key(NO_NODE_PROOF)
}

type Client = NodeCredentialsClient<Proving<ProofTracking<Channel>>>;

/// A lazily connecting client: the driver starts (and answers kubelet's
/// Probe) even while the controller is unreachable, and reconnects by
/// itself when it returns.
///
/// With several controllers (a comma-separated endpoint list) each call
/// goes to the one that answered last; when it cannot be reached, or
/// answers that it cannot issue (its store is lost), the call moves on to
/// the next, and after a round over all of them waits (doubling, from
/// [`FIRST_BACKOFF`] to [`MAX_BACKOFF`]) before the next round, at most
/// [`ROUNDS`] rounds.
#[derive(Clone)]
pub struct ControllerClient {
    inner: Arc<[Client]>,
    current: Arc<AtomicUsize>,
    node_name: String,
    metrics: Option<Arc<Metrics>>,
}

/// How long a call (or a heartbeat on its stream) waits for its answer,
/// once sent; a call waits as long again, at most, for the node's Kerberos
/// token before it is sent ([`crate::node_identity::TOKEN_WAIT`]).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Rounds over every controller before a call fails.
pub const ROUNDS: u32 = 4;
/// Wait after the first round in which no controller could answer.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// Longest wait between rounds.
pub const MAX_BACKOFF: Duration = Duration::from_secs(2);

impl ControllerClient {
    /// Builds a client for `endpoint`; fails only on a malformed address.
    pub fn new(endpoint: &str, node_name: &str) -> Result<Self, tonic::transport::Error> {
        Self::with_identity(endpoint, node_name, NodeIdentity::none())
    }

    /// Builds a client whose calls carry `identity`.
    pub fn with_identity(
        endpoint: &str,
        node_name: &str,
        identity: NodeIdentity,
    ) -> Result<Self, tonic::transport::Error> {
        Self::connect(endpoint, node_name, identity, None)
    }

    /// Builds a client whose calls carry `identity` over TLS when `tls` is
    /// set (the controller's CA as trust bundle; `https://` endpoint).
    pub fn connect(
        endpoint: &str,
        node_name: &str,
        identity: NodeIdentity,
        tls: Option<ClientTlsConfig>,
    ) -> Result<Self, tonic::transport::Error> {
        let mut clients = Vec::new();
        for one in endpoint.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let mut ep = Endpoint::from_shared(one.to_string())?
                .connect_timeout(Duration::from_secs(5))
                .timeout(CALL_TIMEOUT);
            if let Some(tls) = &tls {
                ep = ep.tls_config(tls.clone())?;
            }
            let connection = ConnectionProof::new();
            let channel = if one.starts_with("unix:") {
                // No TLS there: the controller vouches for no connection.
                ep.connect_lazy()
            } else {
                // tonic's own TCP connector, as `connect_lazy` sets it up
                // with `Endpoint`'s defaults (no Nagle, no TCP keepalive;
                // `Endpoint`'s TCP options would not reach it), counting
                // the connections it opens. The connect timeout still
                // applies: tonic wraps any connector in it.
                let mut tcp = hyper_util::client::legacy::connect::HttpConnector::new();
                tcp.enforce_http(false);
                tcp.set_nodelay(true);
                ep.connect_with_connector_lazy(CountingConnector::new(tcp, Arc::clone(&connection)))
            };
            clients.push(NodeCredentialsClient::new(Proving::new(
                ProofTracking::new(channel, Arc::clone(&connection)),
                identity.over(&connection),
            )));
        }
        if clients.is_empty() {
            // The same error a malformed address gives.
            Endpoint::from_shared(String::new())?;
        }
        Ok(ControllerClient {
            inner: clients.into(),
            current: Arc::new(AtomicUsize::new(0)),
            node_name: node_name.to_string(),
            metrics: None,
        })
    }

    /// Times every call into `metrics` (`controller_call_seconds`) and
    /// counts failovers (`controller_failovers_total`).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// One attempt of `method` at one controller, timed.
    async fn attempt<T>(
        &self,
        method: &str,
        call: impl std::future::Future<Output = Result<T, tonic::Status>>,
    ) -> Result<T, tonic::Status> {
        let started = Instant::now();
        let answer = call.await;
        if let Some(m) = &self.metrics
            && !answer.as_ref().is_err_and(never_left_node)
        {
            m.controller_call(method, &answer, started.elapsed());
        }
        answer
    }

    /// How many controllers this client knows.
    pub fn endpoints(&self) -> usize {
        self.inner.len()
    }

    /// Runs `call` (the node API's `method`) against the controller that
    /// answered last, failing over to the others (see the type's
    /// documentation).
    async fn failover<T, F, Fut>(&self, method: &str, call: F) -> Result<T, ControllerError>
    where
        F: Fn(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        let n = self.inner.len().max(1);
        let mut backoff = FIRST_BACKOFF;
        let mut last = None;
        let mut tried: Option<usize> = None;
        for round in 0..ROUNDS {
            if round > 0 {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            for _ in 0..n {
                let at = self.current.load(Ordering::Relaxed) % n;
                let Some(client) = self.inner.get(at) else {
                    break;
                };
                if tried.is_some_and(|t| t != at)
                    && let Some(m) = &self.metrics
                {
                    m.controller_failovers.inc();
                }
                tried = Some(at);
                let mut answer = self.attempt(method, call(client.clone())).await;
                // Sent without a token, the call reached a connection opened
                // since the last was proven: once more, with a token.
                if answer
                    .as_ref()
                    .is_err_and(|s| s.metadata().contains_key(PROOF_LOST))
                {
                    answer = self.attempt(method, call(client.clone())).await;
                }
                match answer.map_err(ControllerError::from_status) {
                    Ok(v) => return Ok(v),
                    // Every controller needs the same proof: none is tried
                    // for it, and the one that answered last stays current.
                    Err(e) if e.is_node_proof_missing() => return Err(e),
                    Err(e) if e.controller_cannot_serve() => {
                        tracing::warn!(controller = at, error = %e, "controller cannot serve; trying the next one");
                        // Another call may have moved on already.
                        let _ = self.current.compare_exchange(
                            at,
                            (at + 1) % n,
                            Ordering::Relaxed,
                            Ordering::Relaxed,
                        );
                        last = Some(e);
                    }
                    Err(e) => return Err(e),
                }
            }
            // With one controller, its own retries are the caller's.
            if n == 1 {
                break;
            }
        }
        Err(last.unwrap_or_else(|| {
            ControllerError::Unreachable(tonic::Status::unavailable("no controller endpoint"))
        }))
    }

    /// This node's name.
    pub fn node_name(&self) -> &str {
        &self.node_name
    }

    /// Asks for a pod volume's bundle.
    pub async fn fetch_bundle(
        &self,
        pod: PodRef,
        volume_id: &str,
        refresh: bool,
    ) -> Result<Bundle, ControllerError> {
        self.fetch_bundle_with_token(pod, volume_id, refresh, None)
            .await
    }

    /// Asks for a pod volume's bundle, with the pod's own bound token
    /// (kubelet's, for the controller's audience) when there is one.
    pub async fn fetch_bundle_with_token(
        &self,
        pod: PodRef,
        volume_id: &str,
        refresh: bool,
        pod_token: Option<&BearerToken>,
    ) -> Result<Bundle, ControllerError> {
        let req = FetchBundleRequest {
            node_name: self.node_name.clone(),
            pod: Some(pod),
            volume_id: volume_id.to_string(),
            refresh,
            pod_token: pod_token
                .map(|t| t.expose().to_string())
                .unwrap_or_default(),
        };
        self.failover("FetchBundle", |mut client| {
            let req = req.clone();
            async move { Ok(client.fetch_bundle(req).await?.into_inner()) }
        })
        .await
    }

    /// Asks for many volumes' bundles in one call (see `FetchBundles`).
    /// Each volume's answer, in `volumes`' order, is what `FetchBundle`
    /// would have answered: its bundle, or its refusal as the same error.
    /// `Err`: the call as a whole failed; [`ControllerError::is_unimplemented`]
    /// says the controller is too old for it.
    pub async fn fetch_bundles(
        &self,
        volumes: Vec<VolumeRequest>,
    ) -> Result<Vec<Result<Bundle, ControllerError>>, ControllerError> {
        let ids: Vec<String> = volumes.iter().map(|v| v.volume_id.clone()).collect();
        let req = FetchBundlesRequest {
            node_name: self.node_name.clone(),
            volumes,
        };
        let mut resp = self
            .failover("FetchBundles", |mut client| {
                let req = req.clone();
                async move { Ok(client.fetch_bundles(req).await?.into_inner()) }
            })
            .await?;
        let malformed = |what: &str| {
            ControllerError::from_status(tonic::Status::internal(format!(
                "malformed FetchBundles answer: {what}"
            )))
        };
        if resp.volumes.len() != ids.len() {
            return Err(malformed("not one answer per volume"));
        }
        let mut answers = Vec::with_capacity(ids.len());
        for (id, result) in ids.iter().zip(&resp.volumes) {
            if &result.volume_id != id {
                return Err(malformed("answers out of order"));
            }
            answers.push(match &result.outcome {
                Some(Outcome::Bundle(i)) => match resp.bundles.get(*i as usize) {
                    Some(b) => Ok(b.clone()),
                    None => return Err(malformed("a bundle index out of range")),
                },
                Some(Outcome::Refused(r)) => {
                    let reason = Reason::try_from(r.reason).unwrap_or(Reason::Internal);
                    Err(ControllerError::from_status(kcred_proto::reason::status(
                        reason,
                        r.message.clone(),
                    )))
                }
                None => return Err(malformed("a volume without an answer")),
            });
        }
        // The shared copies held credentials: gone once handed out.
        for b in &mut resp.bundles {
            for f in &mut b.files {
                zeroize::Zeroize::zeroize(&mut f.content);
            }
        }
        Ok(answers)
    }

    /// Keeps the node's lease alive and learns which volumes are stale
    /// or revoked.
    pub async fn heartbeat(
        &self,
        volume_ids: Vec<String>,
    ) -> Result<HeartbeatResponse, ControllerError> {
        let req = HeartbeatRequest {
            node_name: self.node_name.clone(),
            volume_ids,
        };
        self.failover("Heartbeat", |mut client| {
            let req = req.clone();
            async move { Ok(client.heartbeat(req).await?.into_inner()) }
        })
        .await
    }

    /// Opens a heartbeat stream: sends the first heartbeat on it and
    /// returns the stream with that heartbeat's answer (the controller
    /// authenticates the node on the first message).
    /// [`ControllerError::is_unimplemented`]: the controller is too old
    /// for it; heartbeat with [`Self::heartbeat`].
    pub async fn open_heartbeats(
        &self,
        volume_ids: Vec<String>,
    ) -> Result<(HeartbeatStream, HeartbeatResponse), ControllerError> {
        let first = HeartbeatRequest {
            node_name: self.node_name.clone(),
            volume_ids,
        };
        self.failover(HEARTBEATS, |mut client| {
            let first = first.clone();
            async move {
                let (out, rx) = tokio::sync::mpsc::channel(2);
                let node_name = first.node_name.clone();
                // Queued before the call: the controller answers the
                // call only once it has read the first message.
                let _ = out.send(first).await;
                let mut answers = client
                    .heartbeats(tokio_stream::wrappers::ReceiverStream::new(rx))
                    .await?
                    .into_inner();
                let answer = answers.message().await?.ok_or_else(|| {
                    tonic::Status::unavailable("the heartbeat stream ended before its first answer")
                })?;
                let stream = HeartbeatStream {
                    node_name,
                    out,
                    answers,
                    metrics: self.metrics.clone(),
                };
                Ok((stream, answer))
            }
        })
        .await
    }

    /// Subscribes to pushed updates.
    pub async fn watch_updates(&self) -> Result<tonic::Streaming<VolumeUpdate>, ControllerError> {
        let req = WatchUpdatesRequest {
            node_name: self.node_name.clone(),
        };
        self.failover("WatchUpdates", |mut client| {
            let req = req.clone();
            async move { Ok(client.watch_updates(req).await?.into_inner()) }
        })
        .await
    }
}

/// An open heartbeat stream ([`ControllerClient::open_heartbeats`]): one
/// message each way per heartbeat.
pub struct HeartbeatStream {
    node_name: String,
    out: tokio::sync::mpsc::Sender<HeartbeatRequest>,
    answers: tonic::Streaming<HeartbeatResponse>,
    metrics: Option<Arc<Metrics>>,
}

/// The stream's method: its opening (with the first heartbeat) and each
/// heartbeat on it are timed under this name.
const HEARTBEATS: &str = "Heartbeats";

impl HeartbeatStream {
    /// Sends one heartbeat and waits at most [`CALL_TIMEOUT`] for its
    /// answer, as a unary call does (no answer: the stream counts as
    /// broken). `Ok(None)`: the controller ended the stream (it does after
    /// a while, so that the node proves itself again); open another.
    pub async fn beat(
        &mut self,
        volume_ids: Vec<String>,
    ) -> Result<Option<HeartbeatResponse>, ControllerError> {
        let req = HeartbeatRequest {
            node_name: self.node_name.clone(),
            volume_ids,
        };
        let started = Instant::now();
        let next = async {
            if self.out.send(req).await.is_err() {
                // The call's request side is gone: the stream is over.
                return Ok(None);
            }
            self.answers.message().await
        };
        let answer = match tokio::time::timeout(CALL_TIMEOUT, next).await {
            Ok(answer) => answer,
            Err(_) => Err(tonic::Status::deadline_exceeded(format!(
                "no heartbeat answer within {CALL_TIMEOUT:?}"
            ))),
        };
        // A stream the controller ended answered no heartbeat.
        if let Some(m) = &self.metrics
            && !matches!(answer, Ok(None))
        {
            m.controller_call(HEARTBEATS, &answer, started.elapsed());
        }
        answer.map_err(ControllerError::from_status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kcred_proto::reason::status;

    #[test]
    fn revocation_is_read_from_the_reason_not_the_message() {
        let revoked = ControllerError::from_status(status(Reason::VolumeRevoked, "gone"));
        assert!(revoked.is_revoked());
        assert!(!revoked.is_transient());
        let worded = ControllerError::from_status(tonic::Status::permission_denied(
            "volume v of pod web/a was revoked",
        ));
        assert!(!worded.is_revoked(), "message text decides nothing");
        assert_eq!(worded.reason(), None);
    }

    #[test]
    fn transient_reasons_and_broken_connections_are_retryable() {
        for r in [
            Reason::KdcUnavailable,
            Reason::KdcBusy,
            Reason::RotationInProgress,
        ] {
            assert!(
                ControllerError::from_status(status(r, "later")).is_transient(),
                "{r:?}"
            );
        }
        let down = ControllerError::from_status(tonic::Status::unavailable("connection refused"));
        assert!(matches!(down, ControllerError::Unreachable(_)));
        assert!(down.is_transient());
        let refused = ControllerError::from_status(status(Reason::PodNotOnNode, "elsewhere"));
        assert!(!refused.is_transient());
        assert_eq!(refused.status().code(), tonic::Code::PermissionDenied);
    }
}
