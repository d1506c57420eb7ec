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
use std::sync::Arc;
use std::task::{Context, Poll};

use kcred_auth::{Initiator, METADATA_KEY, to_metadata_value};
use tokio::sync::Mutex;
use tonic::Status;
use tonic::metadata::{MetadataMap, MetadataValue};
use tower::Service;

use crate::connection_proof::ConnectionProof;

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
        Self::of(Proof::Kerberos(Tokens {
            initiator,
            turn: Arc::new(Mutex::new(())),
        }))
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
                let mut value = MetadataValue::try_from(to_metadata_value(&tokens.make().await?))
                    .map_err(|_| Status::internal("token is not valid metadata"))?;
                // Single-use: never worth a slot in the header table.
                value.set_sensitive(true);
                request.metadata_mut().insert(METADATA_KEY, value);
                Ok(())
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
    /// Held until a token's blocking call has returned, even when the
    /// call that wanted it is dropped meanwhile: calls given up on while
    /// the KDC is silent cannot pile up threads waiting on it.
    turn: Arc<Mutex<()>>,
}

impl Tokens {
    async fn make(&self) -> Result<Vec<u8>, Status> {
        let turn = Arc::clone(&self.turn).lock_owned().await;
        let initiator = Arc::clone(&self.initiator);
        tokio::task::spawn_blocking(move || {
            let token = initiator.token();
            drop(turn);
            token
        })
        .await
        .map_err(|e| Status::internal(format!("making a Kerberos token: {e}")))?
        .map_err(|e| Status::unavailable(format!("cannot get a Kerberos token: {e}")))
    }
}

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

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        // The service made ready is the one that takes the call; the clone
        // stays behind for the next `poll_ready`.
        let ready = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, ready);
        let identity = self.identity.clone();
        Box::pin(async move {
            let (mut parts, body) = request.into_parts();
            let mut proven = tonic::Request::from_parts(
                MetadataMap::from_headers(std::mem::take(&mut parts.headers)),
                std::mem::take(&mut parts.extensions),
                (),
            );
            // A `Status` as the error reaches the caller as that status.
            identity
                .prove(&mut proven)
                .await
                .map_err(|status| -> BoxError { Box::new(status) })?;
            let (metadata, extensions, ()) = proven.into_parts();
            parts.headers = metadata.into_headers();
            parts.extensions = extensions;
            inner
                .call(http::Request::from_parts(parts, body))
                .await
                .map_err(Into::into)
        })
    }
}
