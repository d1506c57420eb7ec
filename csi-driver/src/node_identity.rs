//! The node's proof of identity on each call to the controller.
//!
//! A Kerberos token is made asynchronously: making one can wait on the KDC
//! (for a service ticket, or a new TGT from the keytab), for as long as
//! MIT's timeouts when the KDC takes requests and never answers. The
//! driver runs one async worker, and kubelet's calls must be answered
//! meanwhile, so tokens are made on a blocking thread, one at a time: the
//! calls waiting for theirs wait as tasks, holding no thread, and at most
//! one thread waits on the KDC, whatever the number of calls. (They need
//! the same tickets: the first token that gets them makes the others'
//! quick.)

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use kcred_auth::Initiator;
use prometheus::IntCounterVec;
use tokio::sync::Mutex;
use tonic::Status;
use tonic::metadata::{MetadataMap, MetadataValue};
use tower::{Service, ServiceExt};

use crate::connection_proof::ConnectionProof;

/// Marks, in a failed call's metadata as the client sees it (never sent),
/// a call that never left the node because the node had no proof to give
/// (no Kerberos token, no pod token file). Every controller would need the
/// same proof, so such a failure is not worth another controller, nor
/// another kind of call, right away.
pub const NO_NODE_PROOF: &str = "kcred-no-node-proof";

/// Adds the node's proof of identity to each call: a Kerberos token from
/// its host keytab (only until the connection is proven, see
/// [`crate::connection_proof`]), or its DaemonSet pod's service-account
/// token (psat); passes calls through with none (controllers running with
/// `auth.mode = "none"`, or mTLS, which the connection carries).
#[derive(Clone)]
pub struct NodeIdentity {
    proof: Proof,
    /// The connection this identity's calls go over, once bound to one
    /// controller's channel.
    connection: Option<Arc<ConnectionProof>>,
}

#[derive(Clone)]
enum Proof {
    None,
    Kerberos(Tokens),
    Psat(Arc<crate::psat::TokenFile>),
}

impl NodeIdentity {
    /// No identity: calls carry no token.
    pub fn none() -> Self {
        Self::of(Proof::None)
    }

    /// The node's `host/<fqdn>` identity.
    pub fn kerberos(initiator: Arc<Initiator>) -> Self {
        Self::of(Proof::Kerberos(Tokens::new(initiator)))
    }

    /// The driver pod's projected service-account token, read from its
    /// file (again whenever kubelet rotates it).
    pub fn psat(token_file: Arc<crate::psat::TokenFile>) -> Self {
        Self::of(Proof::Psat(token_file))
    }

    fn of(proof: Proof) -> Self {
        NodeIdentity {
            proof,
            connection: None,
        }
    }

    /// This identity for the calls over one controller's connection.
    pub(crate) fn over(&self, connection: &Arc<ConnectionProof>) -> Self {
        NodeIdentity {
            proof: self.proof.clone(),
            connection: Some(Arc::clone(connection)),
        }
    }

    /// Counts this identity's Kerberos token attempts in `outcomes` (by
    /// `made` and `failed`), for the calls over every connection it was
    /// bound to; the first counter given is kept. No effect for other
    /// identities.
    pub fn count_tokens(&self, outcomes: IntCounterVec) {
        if let Proof::Kerberos(tokens) = &self.proof {
            let _ = tokens.outcomes.set(outcomes);
        }
    }

    /// Puts the proof into a call's metadata; `Unavailable` when there is
    /// none to give (no token from the KDC, no token file).
    async fn prove(&self, request: &mut tonic::Request<()>) -> Result<(), Status> {
        match &self.proof {
            Proof::Kerberos(tokens) => {
                if let Some(connection) = &self.connection {
                    // Decided before any wait: a call marked as carrying a
                    // token carries one, whichever connection it goes on.
                    let sent = connection.sending();
                    request.extensions_mut().insert(sent);
                    if !sent.token() {
                        return Ok(());
                    }
                }
                kcred_auth::grpc::attach_token(request, &tokens.make().await?)
            }
            Proof::Psat(file) => {
                let token = file
                    .current()
                    .map_err(|e| Status::unavailable(format!("no node token to present: {e}")))?;
                token.attach(request).map_err(|e| {
                    Status::unavailable(format!("node token {}: {e}", file.path().display()))
                })
            }
            Proof::None => Ok(()),
        }
    }
}

/// Makes the node's Kerberos tokens, one at a time, off the async worker.
#[derive(Clone)]
struct Tokens {
    initiator: Arc<Initiator>,
    /// Attempts that have ended.
    ended: Arc<AtomicU64>,
    /// The turn to make a token, and the last attempt's failure (its
    /// number in `ended`), none once one succeeded. Held until the
    /// attempt's blocking call has returned, even when the call that
    /// wanted it is dropped meanwhile: calls given up on while the KDC is
    /// silent cannot pile up threads waiting on it.
    turn: Arc<Mutex<Option<(u64, Status)>>>,
    /// Where attempts are counted, once the driver's metrics exist.
    outcomes: Arc<OnceLock<IntCounterVec>>,
}

impl Tokens {
    fn new(initiator: Arc<Initiator>) -> Self {
        Tokens {
            initiator,
            ended: Arc::default(),
            turn: Arc::default(),
            outcomes: Arc::default(),
        }
    }

    /// A token for one call, or why there is none. A call that waited for
    /// its turn while an attempt failed takes that failure rather than
    /// trying again: calls queued behind a silent KDC then end within one
    /// attempt's timeouts, not one after another. Bounded by
    /// [`TOKEN_WAIT`] in any case.
    async fn make(&self) -> Result<Vec<u8>, Status> {
        tokio::time::timeout(TOKEN_WAIT, self.attempt())
            .await
            .unwrap_or_else(|_| {
                Err(Status::unavailable(format!(
                    "no Kerberos token within {TOKEN_WAIT:?} (is the KDC answering?)"
                )))
            })
    }

    async fn attempt(&self) -> Result<Vec<u8>, Status> {
        let seen = self.ended.load(Ordering::Acquire);
        let mut turn = Arc::clone(&self.turn).lock_owned().await;
        if let Some((n, status)) = turn.as_ref()
            && *n > seen
        {
            return Err(status.clone());
        }
        let (initiator, ended) = (Arc::clone(&self.initiator), Arc::clone(&self.ended));
        let outcomes = Arc::clone(&self.outcomes);
        tokio::task::spawn_blocking(move || {
            let token = initiator
                .token()
                .map_err(|e| Status::unavailable(format!("cannot get a Kerberos token: {e}")));
            if let Some(outcomes) = outcomes.get() {
                let outcome = if token.is_ok() { "made" } else { "failed" };
                outcomes.with_label_values(&[outcome]).inc();
            }
            let n = ended.fetch_add(1, Ordering::AcqRel) + 1;
            *turn = token.as_ref().err().map(|status| (n, status.clone()));
            token
        })
        .await
        .map_err(|e| Status::unavailable(format!("making a Kerberos token: {e}")))?
    }
}

/// The longest a call waits for its Kerberos token: as long as it would
/// wait for the controller's answer.
pub const TOKEN_WAIT: std::time::Duration = crate::controller_client::CALL_TIMEOUT;

/// A channel whose calls carry the node's proof of identity: tonic's
/// interceptor, but able to wait.
#[derive(Clone)]
pub struct Proving<S> {
    inner: S,
    identity: NodeIdentity,
}

impl<S> Proving<S> {
    /// Calls on `inner` proven as `identity`.
    pub fn new(inner: S, identity: NodeIdentity) -> Self {
        Proving { inner, identity }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<S, B> Service<http::Request<B>> for Proving<S>
where
    S: Service<http::Request<B>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxError>> + Send>>;

    /// Always ready: the channel is made ready once the call has its
    /// proof, so a call waiting for a token holds no slot of the channel's
    /// buffer (the channel's own readiness is waited for in the call).
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let mut inner = self.inner.clone();
        let identity = self.identity.clone();
        Box::pin(async move {
            let (mut parts, body) = request.into_parts();
            let mut proven = tonic::Request::from_parts(
                MetadataMap::from_headers(std::mem::take(&mut parts.headers)),
                std::mem::take(&mut parts.extensions),
                (),
            );
            // A `Status` as the error reaches the caller as that status.
            identity.prove(&mut proven).await.map_err(|mut status| {
                status
                    .metadata_mut()
                    .insert(NO_NODE_PROOF, MetadataValue::from_static("1"));
                let error: BoxError = Box::new(status);
                error
            })?;
            let (metadata, extensions, ()) = proven.into_parts();
            parts.headers = metadata.into_headers();
            parts.extensions = extensions;
            inner
                .ready()
                .await
                .map_err(Into::into)?
                .call(http::Request::from_parts(parts, body))
                .await
                .map_err(Into::into)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex as StdMutex;

    use kcred_proto::kcred::v1::HeartbeatRequest;
    use kcred_proto::kcred::v1::node_credentials_client::NodeCredentialsClient;
    use tonic::Code;
    use tonic::body::Body;

    use super::*;

    /// What reached the channel: each call's path and headers.
    type Seen = Arc<StdMutex<Vec<(String, http::HeaderMap)>>>;

    /// A channel that records each call's path and headers and answers
    /// `NOT_FOUND`, as a controller's refusal comes (trailers only).
    #[derive(Clone, Default)]
    struct Recorder(Seen);

    impl Service<http::Request<Body>> for Recorder {
        type Response = http::Response<Body>;
        type Error = std::convert::Infallible;
        type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: http::Request<Body>) -> Self::Future {
            self.0
                .lock()
                .expect("seen")
                .push((request.uri().path().to_string(), request.headers().clone()));
            std::future::ready(Ok(Status::not_found("no such volume").into_http()))
        }
    }

    fn client(identity: NodeIdentity) -> (NodeCredentialsClient<Proving<Recorder>>, Seen) {
        let channel = Recorder::default();
        let seen = Arc::clone(&channel.0);
        (
            NodeCredentialsClient::new(Proving::new(channel, identity)),
            seen,
        )
    }

    fn beat() -> HeartbeatRequest {
        HeartbeatRequest {
            node_name: "node-a".into(),
            volume_ids: vec![],
        }
    }

    #[tokio::test]
    async fn calls_reach_the_channel_with_every_header_tonic_set() {
        let (mut client, seen) = client(NodeIdentity::none());
        let status = client.heartbeat(beat()).await.expect_err("refused");
        assert_eq!(status.code(), Code::NotFound, "{status:?}");
        assert_eq!(status.message(), "no such volume");
        let seen = seen.lock().expect("seen");
        let (path, headers) = &seen[0];
        assert_eq!(path, "/kcred.v1.NodeCredentials/Heartbeat");
        assert_eq!(headers["content-type"], "application/grpc");
        assert_eq!(headers["te"], "trailers");
        assert!(!headers.contains_key("authorization"), "{headers:?}");
    }

    #[tokio::test]
    async fn a_pod_token_is_presented_and_its_failure_comes_back_as_the_status() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("token");
        std::fs::write(&path, "header.payload.signature").expect("write token");
        let file = Arc::new(crate::psat::TokenFile::open(&path).expect("token file"));
        let (mut client, seen) = client(NodeIdentity::psat(file));
        client.heartbeat(beat()).await.expect_err("refused");
        let authorization = seen.lock().expect("seen")[0].1["authorization"].clone();
        assert_eq!(authorization, "Bearer header.payload.signature");
        assert!(authorization.is_sensitive());

        // No token to present: the call ends here, with why, exactly as
        // the identity said it (the caller fails over on `UNAVAILABLE`).
        std::fs::remove_file(&path).expect("remove token");
        let status = client.heartbeat(beat()).await.expect_err("no token");
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert!(
            status.message().starts_with("no node token to present:"),
            "{status:?}"
        );
        // Marked as the node's own failure: no other controller is tried.
        assert!(status.metadata().contains_key(NO_NODE_PROOF), "{status:?}");
        let error = crate::controller_client::ControllerError::from_status(status);
        assert!(error.is_node_proof_missing() && error.is_transient());
        assert_eq!(seen.lock().expect("seen").len(), 1, "the call went out");
    }
}
