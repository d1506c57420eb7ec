//! `kcred.v1.NodeCredentials`: what a node driver calls to fill a volume.
//!
//! The handler only translates: it authenticates the caller, gathers what
//! the controller knows, asks [`crate::admission`] for the decision, audits
//! it, and returns the bundle or the refusal's status. A bundle leaves only
//! after its issue records are on disk (if the audit cannot be written,
//! nothing is issued).

use std::pin::Pin;
use std::sync::Arc;

use kcred_audit::{Action, Actor, AuditEvent};
use kcred_proto::kcred::v1::node_credentials_server::NodeCredentials;
use kcred_proto::kcred::v1::{
    Bundle, FetchBundleRequest, FetchBundlesRequest, FetchBundlesResponse, HeartbeatRequest,
    HeartbeatResponse, PodRef, Reason, VolumeUpdate, WatchUpdatesRequest,
};
use tokio_stream::Stream;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::{Request, Response, Status, Streaming};

use crate::admission::{self, FetchFacts, Grant};
use crate::bundle;
use crate::issued::{PutError, VolumeRecord};
use crate::listener::Proven;
use crate::names;
use crate::nodes::{heartbeat, loss};
use crate::reasons::{Reasoned, Refusal, status_of};
use crate::state::ControllerState;

/// Serves bundles to node drivers.
#[derive(Clone)]
pub struct NodeApi {
    pub(super) state: Arc<ControllerState>,
    pub(super) heartbeat_streams: Arc<super::heartbeats::StreamCounts>,
}

impl NodeApi {
    /// Builds the service over the controller's state.
    pub fn new(state: Arc<ControllerState>) -> Self {
        NodeApi {
            state,
            heartbeat_streams: Default::default(),
        }
    }
}

fn invalid(e: impl std::fmt::Display) -> Refusal {
    Refusal::new(Reason::RequestInvalid, e.to_string())
}

/// One heartbeat of an authenticated `node`, however it came (a unary
/// call or a message on its stream): renews the lease and answers which
/// of the `held` volumes are stale or revoked.
pub(super) async fn beat(
    st: &Arc<ControllerState>,
    node: &str,
    held: Vec<String>,
) -> Result<HeartbeatResponse, Status> {
    if st.cluster.is_shared() {
        // Shared with the other controllers; the leader's sweep takes
        // it in (and audits a return) from there.
        let now = kcred_audit::timefmt::now_unix_ms();
        if let Err(e) = st.cluster.note_heartbeat(node, now).await {
            tracing::warn!(%node, error = %e, "cannot share a heartbeat");
            return Err(status_of(&Refusal::from_error(&e)));
        }
    } else if let Some(t) = st.leases.heartbeat(node) {
        loss::lease_transition(st, t).await;
    }
    // In memory and proportional to what this node holds (see
    // crate::nodes::heartbeat), but it reads the issued-volume view,
    // whose write lock a revocation holds while it sweeps every record:
    // if it is held, wait for it on a blocking thread, not on an async
    // worker every other call needs.
    let answer = match heartbeat::try_answer(st, node, &held) {
        Some(answer) => answer,
        None => {
            let (state, who) = (Arc::clone(st), node.to_string());
            tokio::task::spawn_blocking(move || heartbeat::answer(&state, &who, &held))
                .await
                .map_err(|_| Status::internal("heartbeat verdict task failed"))?
        }
    }
    .map_err(Status::from)?;
    heartbeat::release(st, node, answer.releasable).await;
    st.held.heard(node, answer.listed, answer.word);
    Ok(answer.response)
}

/// The request's own shape (its node name was checked before the caller
/// was authenticated); the pod it names is checked by admission.
fn validate(req: &FetchBundleRequest) -> Result<&PodRef, Refusal> {
    validate_volume(req.pod.as_ref(), &req.volume_id).map_err(invalid)
}

/// One volume's fields, as both fetch calls carry them.
pub(super) fn validate_volume<'a>(
    pod: Option<&'a PodRef>,
    volume_id: &str,
) -> Result<&'a PodRef, String> {
    let pod = pod.ok_or("pod is required")?;
    names::validate_k8s_name("pod.namespace", &pod.namespace).map_err(|e| e.to_string())?;
    names::validate_k8s_name("pod.name", &pod.name).map_err(|e| e.to_string())?;
    // Printable: the uid is quoted in refusals, which are logged.
    if pod.uid.is_empty() || pod.uid.len() > 64 || !pod.uid.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("pod.uid must be 1 to 64 printable ASCII characters".into());
    }
    // Every issue is tracked by volume (rotation pushes, revocation, list).
    if volume_id.is_empty()
        || volume_id.len() > 128
        || !volume_id.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err("volume_id must be 1 to 128 printable ASCII characters".into());
    }
    Ok(pod)
}

/// One volume asked for: what FetchBundle carries once and FetchBundles
/// per volume.
pub(super) struct Ask<'a> {
    pub node: &'a str,
    pub pod: &'a PodRef,
    pub volume_id: &'a str,
    pub refresh: bool,
}

/// A node call that passed authentication.
#[derive(Debug, Clone, Copy)]
#[must_use]
pub(super) struct Authenticated {
    /// The call's TLS connection holds a proven principal: its later calls
    /// are not checked again, so they need carry no token.
    connection_proven: bool,
}

impl Authenticated {
    /// The answer, telling the client when its connection is proven
    /// ([`kcred_auth::PROVEN_KEY`]): it then stops making a Kerberos token
    /// for every call (one fewer AP-REQ to build, send and decode).
    pub(super) fn respond<T>(self, message: T) -> Response<T> {
        let mut response = Response::new(message);
        if self.connection_proven {
            response.metadata_mut().insert(
                kcred_auth::PROVEN_KEY,
                tonic::metadata::MetadataValue::from_static("1"),
            );
        }
        response
    }
}

/// Records a call's duration under its status code.
fn observe<T>(
    seconds: &prometheus::HistogramVec,
    started: std::time::Instant,
    result: &Result<T, Status>,
) {
    let code = match result {
        Ok(_) => tonic::Code::Ok,
        Err(s) => s.code(),
    };
    seconds
        .with_label_values(&[kcred_proto::code_label(code)])
        .observe(started.elapsed().as_secs_f64());
}

#[tonic::async_trait]
impl NodeCredentials for NodeApi {
    type WatchUpdatesStream = Pin<Box<dyn Stream<Item = Result<VolumeUpdate, Status>> + Send>>;
    type HeartbeatsStream = super::heartbeats::Answers;

    async fn fetch_bundle(
        &self,
        request: Request<FetchBundleRequest>,
    ) -> Result<Response<Bundle>, Status> {
        let started = std::time::Instant::now();
        // Checked before authenticating, as every node call does: a
        // refusal quotes the name, and its audit record with it.
        names::validate_dns_name("node_name", &request.get_ref().node_name)
            .map_err(|e| status_of(&e))?;
        let result = match self
            .authenticate(&request, &request.get_ref().node_name)
            .await
        {
            Ok(auth) => self.fetch(request.into_inner()).await.map(|b| (auth, b)),
            Err(s) => Err(s),
        };
        observe(&self.state.metrics.fetch_seconds, started, &result);
        result.map(|(auth, bundle)| auth.respond(bundle))
    }

    async fn fetch_bundles(
        &self,
        request: Request<FetchBundlesRequest>,
    ) -> Result<Response<FetchBundlesResponse>, Status> {
        let started = std::time::Instant::now();
        names::validate_dns_name("node_name", &request.get_ref().node_name)
            .map_err(|e| status_of(&e))?;
        let result = match self
            .authenticate(&request, &request.get_ref().node_name)
            .await
        {
            Ok(auth) => super::batch::fetch(self, request.into_inner())
                .await
                .map(|r| (auth, r)),
            Err(s) => Err(s),
        };
        observe(&self.state.metrics.fetch_batch_seconds, started, &result);
        result.map(|(auth, answer)| auth.respond(answer))
    }

    async fn heartbeat(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        let node = request.get_ref().node_name.clone();
        names::validate_dns_name("node_name", &node).map_err(|e| status_of(&e))?;
        let auth = self.authenticate(&request, &node).await?;
        beat(&self.state, &node, request.into_inner().volume_ids)
            .await
            .map(|answer| auth.respond(answer))
    }

    async fn heartbeats(
        &self,
        request: Request<Streaming<HeartbeatRequest>>,
    ) -> Result<Response<Self::HeartbeatsStream>, Status> {
        super::heartbeats::open(self, request).await
    }

    async fn watch_updates(
        &self,
        request: Request<WatchUpdatesRequest>,
    ) -> Result<Response<Self::WatchUpdatesStream>, Status> {
        let node = request.get_ref().node_name.clone();
        names::validate_dns_name("node_name", &node).map_err(|e| status_of(&e))?;
        let auth = self.authenticate(&request, &node).await?;
        let cap = self.state.update_streams_per_node;
        let Some(mut rx) = self.state.updates.subscribe(&node, cap) else {
            return Err(self.too_many_streams(&node, "update"));
        };
        let mut closing = self.state.closing.subscribe();
        tracing::info!(%node, "node subscribed to updates");
        let (tx, out) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = async { closing.wait_for(|c| *c).await.map(|_| ()) } => return,
                    // The node went away: its subscription ends now, not at
                    // the next update (it counts against the node's cap).
                    _ = tx.closed() => return,
                    update = rx.recv() => match update {
                        Ok(u) => {
                            if tx.send(Ok(u)).await.is_err() {
                                return;
                            }
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                            tracing::warn!(skipped = n, "a node fell behind its updates; its renewals catch up");
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    },
                }
            }
        });
        Ok(auth.respond(Box::pin(tokio_stream::wrappers::ReceiverStream::new(out))))
    }
}

impl NodeApi {
    /// Authenticates a node call; refusals are audited.
    pub(super) async fn authenticate<T>(
        &self,
        request: &Request<T>,
        node: &str,
    ) -> Result<Authenticated, Status> {
        let conns = &self.state.connections;
        let mut connection_proven = false;
        let rejected = match (
            &self.state.psat,
            kcred_auth::BearerToken::from_request(request),
        ) {
            // A driver pod's token (psat): the API server vouches for it
            // (reviews are cached per token, see crate::kubernetes::psat).
            (Some(psat), Some(Ok(token))) => psat.authenticate(&token, node).await.err(),
            (_, Some(Err(e))) => Some(crate::auth::Rejected {
                who: format!("node/{node} (unauthenticated)"),
                refusal: Refusal::new(Reason::Unauthenticated, format!("bearer token: {e}")),
            }),
            _ => {
                // Only a TLS connection binds its calls to one peer (crate::auth).
                let tls = request
                    .extensions()
                    .get::<TlsConnectInfo<TcpConnectInfo>>()
                    .is_some();
                let proven = tls.then(|| conns.proven(request.remote_addr())).flatten();
                match self.state.auth.node(request, node, proven.as_ref()).await {
                    Ok(fresh) => {
                        let on_proven = matches!(proven, Some(Proven::Principal(_)));
                        // A token verified here must not have been accepted
                        // by another controller (shared replay entries);
                        // calls on a connection that proved a principal
                        // carry none that was verified.
                        if !on_proven
                            && let Err(refusal) = self.state.refuse_replayed(request).await
                        {
                            self.state.count_refusal(refusal.reason);
                            return Err(refusal.into());
                        }
                        let used = if matches!(fresh, Some(Proven::Principal(_))) {
                            Some("verified")
                        } else if on_proven && crate::auth::has_token(request) {
                            Some("unneeded")
                        } else {
                            None
                        };
                        if let Some(used) = used {
                            self.state
                                .metrics
                                .node_tokens
                                .with_label_values(&[used])
                                .inc();
                        }
                        // Whether later calls on this connection may come
                        // without a token: it holds a proven principal.
                        connection_proven = match fresh.filter(|_| tls) {
                            Some(p) => {
                                let principal = matches!(p, Proven::Principal(_));
                                conns.prove(request.remote_addr(), p) && principal
                            }
                            None => on_proven,
                        };
                        None
                    }
                    Err(r) => Some(r),
                }
            }
        };
        let Some(rejected) = rejected else {
            self.state
                .connections
                .authenticated_node(request.remote_addr(), node);
            // Its host key stays reserved from now on, restarts included.
            // A first sighting is written to the store (a commit): off the
            // async workers, so a wave of new nodes does not stall calls.
            if names::validate_dns_name("node_name", node).is_ok()
                && !self.state.node_registry.contains(node)
                && self.remember(node).await
            {
                let event = AuditEvent::new(Actor::Node(node.to_string()), Action::NodeJoined)
                    .with_place(node, "", "")
                    .with_reason("first seen: its host key is reserved from now on");
                if let Err(e) = self.state.record(vec![event]).await {
                    tracing::error!(error = %e, "cannot audit a node joining");
                }
            }
            return Ok(Authenticated { connection_proven });
        };
        Err(self.refuse(request.remote_addr(), node, rejected).await)
    }

    /// Refuses (and counts) one more `kind` stream of `node`, which holds
    /// `limits.update_streams_per_node` of them already.
    pub(super) fn too_many_streams(&self, node: &str, kind: &str) -> Status {
        let cap = self.state.update_streams_per_node;
        let refusal = Refusal::new(
            Reason::TooManyStreams,
            format!(
                "node {node} already holds {cap} {kind} streams (limits.update_streams_per_node); one must end first"
            ),
        );
        self.state.count_refusal(refusal.reason);
        refusal.into()
    }

    /// Logs, counts and audits a caller refused for `node`; its status.
    pub(super) async fn refuse(
        &self,
        peer: Option<std::net::SocketAddr>,
        node: &str,
        rejected: crate::auth::Rejected,
    ) -> Status {
        let refusal = rejected.refusal;
        tracing::debug!(who = %rejected.who, claimed = %node, reason = %refusal.reason.label(),
            error = %refusal.message, "node call refused");
        self.state.count_refusal(refusal.reason);
        // The claimed name is the caller's choice: bounded in the record.
        let claimed: String = node.chars().take(253).collect();
        let who: String = rejected.who.chars().take(300).collect();
        let event = AuditEvent::new(Actor::Caller(who), Action::Deny)
            .with_place(claimed, "", "")
            .denied(
                refusal.reason,
                format!("authentication: {}", refusal.message),
            );
        self.state.record_refusal(peer, event, refusal.reason).await;
        refusal.into()
    }

    /// Records `node` in the registry; whether it was new.
    async fn remember(&self, node: &str) -> bool {
        let (state, name) = (Arc::clone(&self.state), node.to_string());
        tokio::task::spawn_blocking(move || state.node_registry.remember(&name))
            .await
            .unwrap_or(false)
    }

    /// Records a refusal, then returns its status.
    async fn deny(&self, node: &str, pod: &PodRef, refusal: Refusal) -> Status {
        let event = self.denial(node, pod, &refusal);
        if let Err(e) = self.state.record(vec![event]).await {
            tracing::error!(error = %e, "cannot audit a denial");
        }
        refusal.into()
    }

    /// Logs and counts a refusal of `pod`'s volume; the event to record.
    pub(super) fn denial(&self, node: &str, pod: &PodRef, refusal: &Refusal) -> AuditEvent {
        tracing::warn!(node, pod = %format!("{}/{}", pod.namespace, pod.name),
            reason = %refusal.reason.label(), error = %refusal.message, "denied");
        self.state.count_refusal(refusal.reason);
        AuditEvent::new(Actor::Node(node.to_string()), Action::Deny)
            .with_place(node, &pod.namespace, &pod.name)
            .denied(refusal.reason, refusal.message.clone())
    }

    /// What the controller decides for one volume from its own view: a
    /// grant, or a refusal to audit. `Err`: it could not decide (its
    /// store failed), nothing to audit.
    pub(super) async fn admit(
        &self,
        ask: &Ask<'_>,
        pod_token: &str,
    ) -> Result<Result<Grant, Refusal>, Refusal> {
        let st = &self.state;
        // The review may wait: the view and the record are read after it.
        let pod_token = match &st.pod_tokens {
            Some(reviews) => Some(reviews.verdict(ask.node, pod_token).await),
            None => None,
        };
        let pod = st.pods.get(&ask.pod.namespace, &ask.pod.name);
        // With a shared store, two reads through to etcd: a batch's volumes
        // make theirs at once, and a slow etcd holds no worker.
        let (state, id, uid) = (
            Arc::clone(st),
            ask.volume_id.to_string(),
            ask.pod.uid.clone(),
        );
        let (previous, pod_revoked) = st
            .store
            .reading(move || (state.issued.get(&id), state.issued.pod_revoked(&uid)))
            .await
            .map_err(|e| {
                Refusal::new(
                    Reason::StoreUnavailable,
                    format!("reading the volume's records failed: {e}"),
                )
            })?;
        let previous = previous.map_err(|e| Refusal::from_error(&e))?;
        let pod_revoked = pod_revoked.map_err(|e| Refusal::from_error(&e))?;
        let policy = st.policy.get();
        let is_node = |h: &str| st.is_node(h);
        Ok(admission::fetch(&FetchFacts {
            node: ask.node,
            pod_ref: ask.pod,
            volume_id: ask.volume_id,
            refresh: ask.refresh,
            pod: pod.as_ref(),
            realm: &st.realm,
            policy: &policy,
            reserved: &st.reserved,
            is_node: &is_node,
            lease: st.leases.state(ask.node),
            volume: previous.as_ref(),
            pod_revoked,
            pods_behind: st.pods.is_stale(),
            pod_token: pod_token.as_ref(),
        }))
    }

    /// Records the volume as issued `bundle` (after its audit records are
    /// written). `Err`: it was revoked meanwhile, nothing may leave (a
    /// refusal to audit); a store failure is only logged, the credential
    /// is already audited.
    pub(super) fn remember_issue(
        &self,
        ask: &Ask<'_>,
        grant: &Grant,
        bundle: &Bundle,
        versions: std::collections::BTreeMap<String, u32>,
    ) -> Result<(), Refusal> {
        let (pod, wants) = (&grant.pod, &grant.wants);
        let record = VolumeRecord {
            volume_id: ask.volume_id.to_string(),
            node: ask.node.to_string(),
            namespace: pod.namespace.clone(),
            pod: pod.name.clone(),
            pod_uid: pod.uid.clone(),
            keytabs: wants.keytabs.iter().map(|p| p.to_string()).collect(),
            ticket: wants.ticket.clone(),
            certs: wants.certs.clone(),
            keys: wants.keys.clone(),
            versions,
            issued_unix: kcred_audit::timefmt::now_unix(),
            generation: bundle.generation.clone(),
            revoked: false,
        };
        match self.state.issued.put(&record) {
            Ok(()) => {
                let pods = &self.state.pods;
                pods.recount_unless_running(&pod.namespace, &pod.name, &pod.uid, ask.node);
                Ok(())
            }
            // Revoked while this fetch was in flight: nothing leaves.
            Err(PutError::Revoked(_)) => Err(admission::revoked(
                ask.volume_id,
                &format!("{}/{}", pod.namespace, pod.name),
            )),
            Err(e) => {
                tracing::error!(error = %e, volume = %ask.volume_id, "cannot record the issued volume");
                Ok(())
            }
        }
    }

    async fn fetch(&self, mut req: FetchBundleRequest) -> Result<Bundle, Status> {
        // A credential: out of the request (which is logged on errors) at
        // once, wiped when done.
        let pod_token = zeroize::Zeroizing::new(std::mem::take(&mut req.pod_token));
        let pod_ref = validate(&req)?;
        let st = &self.state;
        let node = req.node_name.as_str();
        let ask = Ask {
            node,
            pod: pod_ref,
            volume_id: &req.volume_id,
            refresh: req.refresh,
        };
        let grant = match self.admit(&ask, &pod_token).await {
            Ok(Ok(g)) => g,
            Ok(Err(refusal)) => return Err(self.deny(node, pod_ref, refusal).await),
            Err(failed) => return Err(status_of(&failed)),
        };
        let Grant {
            pod,
            role,
            wants,
            priority,
        } = &grant;
        let who = format!("{}/{}", pod.namespace, pod.name);
        let issued = match bundle::assemble(st, node, pod, role, wants, *priority).await {
            Ok(i) => i,
            Err(e) => {
                st.count_refusal(e.reason());
                return Err(status_of(&e));
            }
        };
        // Fail closed: no record, no credential.
        let versions = bundle::versions(&issued.events);
        if let Err(e) = st.record(issued.events).await {
            tracing::error!(error = %e, "audit log unavailable; nothing issued");
            st.count_refusal(e.reason());
            return Err(status_of(&Refusal::new(
                e.reason(),
                format!("audit log unavailable, nothing issued: {e}"),
            )));
        }
        if let Err(refusal) = self.remember_issue(&ask, &grant, &issued.bundle, versions) {
            return Err(self.deny(node, pod_ref, refusal).await);
        }
        // Every issue is in the audit log; this line is for debugging.
        tracing::debug!(
            pod = %who, node, role = %role.login, generation = %issued.bundle.generation,
            refresh_after = issued.bundle.refresh_after_unix, refresh = req.refresh, "issued bundle"
        );
        Ok(issued.bundle)
    }
}

#[cfg(test)]
mod tests {
    use kcred_proto::kcred::v1::PodRef;

    use super::validate_volume;

    #[test]
    fn a_pod_uid_that_could_forge_a_log_line_is_refused() {
        let pod = |uid: &str| PodRef {
            namespace: "web".into(),
            name: "web-0".into(),
            uid: uid.into(),
            service_account: "default".into(),
        };
        let ok = pod("8c3b1f7e-2a4d-4c9b-9e1f-000000000001");
        assert!(validate_volume(Some(&ok), "csi-0a1b").is_ok());
        for uid in ["u\nkcred: forged", "u\r", "u v", "u\u{1b}[2J", "é"] {
            let err = validate_volume(Some(&pod(uid)), "csi-0a1b").expect_err(uid);
            assert!(err.contains("pod.uid"), "{err}");
        }
    }
}
