//! A Kerberos token once per TLS connection, not once per call.
//!
//! The controller remembers the principal a TLS connection proved and does
//! not check its later calls again (TLS binds every call on the connection
//! to the one peer that completed the handshake, so no one else can speak
//! on it). It says so in each answer ([`kcred_auth::PROVEN_KEY`]). Once a
//! connection is proven, the driver stops building a token (an AP-REQ,
//! encrypted under the session key) for each call, and the controller stops
//! decoding one.
//!
//! The client cannot see connections directly: tonic's channel reconnects
//! by itself. So the connector numbers the connections it opens, and a
//! connection counts as proven only when an answer saying so arrived while
//! no newer connection had been opened since its call was made; its proof
//! is forgotten when it closes. A call made without a token just before its
//! connection closed can still reach the next one: the controller refuses
//! it as unauthenticated (and counts and audits that), the refusal forgets
//! the proof and is marked [`PROOF_LOST`], and the client retries that call
//! once, with a token.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use hyper::rt::{Read, ReadBufCursor, Write};
use kcred_proto::kcred::v1::Reason;
use tower::Service;

/// Marks, in the answer's metadata as the client sees it (never sent), a
/// call refused for want of a token on a connection it took for proven:
/// worth one retry with a token.
pub const PROOF_LOST: &str = "kcred-proof-lost";

/// What one client knows of its current connection to one controller.
#[derive(Debug, Default)]
pub struct ConnectionProof {
    /// Connections opened so far; the newest is number `opened`.
    opened: AtomicU64,
    /// The newest connection that closed; 0: none. (The channel uses one
    /// connection at a time, but an old one may still be draining its
    /// streams when a newer one opens, and close after it.)
    closed: AtomicU64,
    /// The connection (number + 1) an answer said is proven; 0: none.
    proven: AtomicU64,
}

/// Which connection a call was made for, and whether it carries a token
/// (a request extension the node's identity layer sets,
/// [`crate::node_identity`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SentOn {
    connection: u64,
    token: bool,
}

impl SentOn {
    /// Whether the call needs a token.
    pub fn token(self) -> bool {
        self.token
    }
}

impl ConnectionProof {
    /// A new client's: no connection yet.
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// Whether a call made now needs a token, and the mark it carries:
    /// the connection it will go over, the newest if still open, else the
    /// next one (the channel's first call opens connection 1).
    pub fn sending(&self) -> SentOn {
        let closed = self.closed.load(Ordering::Acquire);
        let newest = self.opened.load(Ordering::Acquire);
        let connection = if closed >= newest { newest + 1 } else { newest };
        let proven = self.proven.load(Ordering::Acquire) == connection + 1;
        SentOn {
            connection,
            token: !proven,
        }
    }

    /// The connector is opening a new connection, which proves nothing
    /// yet; its number.
    fn opening(&self) -> u64 {
        self.opened.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Connection `number` closed: what it proved goes with it (calls made
    /// from now on are made for the next connection, see
    /// [`ConnectionProof::sending`]).
    fn closed(&self, number: u64) {
        self.closed.fetch_max(number, Ordering::AcqRel);
    }

    /// Learns from the answer to a call marked `sent`; `lost`: refused for
    /// want of the token it went without.
    fn answered(&self, sent: SentOn, proven: bool, lost: bool) {
        if lost {
            self.proven.store(0, Ordering::Release);
        } else if proven && self.opened.load(Ordering::Acquire) == sent.connection {
            // No connection newer than the one the call was made for was
            // opened: it went over that one, which the answer vouches for.
            self.proven.store(sent.connection + 1, Ordering::Release);
        }
    }
}

/// Wraps the channel's connector to count the connections it opens.
#[derive(Clone)]
pub struct CountingConnector<C> {
    inner: C,
    proof: Arc<ConnectionProof>,
}

impl<C> CountingConnector<C> {
    /// Counts `inner`'s connections in `proof`.
    pub fn new(inner: C, proof: Arc<ConnectionProof>) -> Self {
        CountingConnector { inner, proof }
    }
}

impl<C, Uri> Service<Uri> for CountingConnector<C>
where
    C: Service<Uri>,
    C::Future: Send + 'static,
{
    type Response = Numbered<C::Response>;
    type Error = C::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, C::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let number = self.proof.opening();
        let proof = Arc::clone(&self.proof);
        let connecting = self.inner.call(uri);
        Box::pin(async move {
            Ok(Numbered {
                io: connecting.await?,
                proof,
                number,
            })
        })
    }
}

/// A connection the connector opened; closing it (dropping it, which the
/// HTTP/2 client does once the connection ends) forgets its proof.
pub struct Numbered<Io> {
    io: Io,
    proof: Arc<ConnectionProof>,
    number: u64,
}

impl<Io> Drop for Numbered<Io> {
    fn drop(&mut self) {
        self.proof.closed(self.number);
    }
}

impl<Io: Read + Unpin> Read for Numbered<Io> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<Io: Write + Unpin> Write for Numbered<Io> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
}

/// Sits between the node's identity layer and the channel: reads each answer's
/// headers for the controller's word on the connection.
#[derive(Clone)]
pub struct ProofTracking<S> {
    inner: S,
    proof: Arc<ConnectionProof>,
}

impl<S> ProofTracking<S> {
    /// Tracks `inner`'s answers in `proof`.
    pub fn new(inner: S, proof: Arc<ConnectionProof>) -> Self {
        ProofTracking { inner, proof }
    }
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for ProofTracking<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let sent = request.extensions().get::<SentOn>().copied();
        let answer = self.inner.call(request);
        let proof = Arc::clone(&self.proof);
        Box::pin(async move {
            let mut response = answer.await?;
            if let Some(sent) = sent {
                let headers = response.headers();
                let lost = !sent.token && refused_unauthenticated(headers);
                proof.answered(sent, headers.contains_key(kcred_auth::PROVEN_KEY), lost);
                if lost {
                    response
                        .headers_mut()
                        .insert(PROOF_LOST, http::HeaderValue::from_static("1"));
                }
            }
            Ok(response)
        })
    }
}

/// Whether an answer refuses its call as unauthenticated: the node's own
/// proof, not a pod token's (those share the gRPC code). A refusal comes
/// as a trailers-only answer, its status in the headers.
fn refused_unauthenticated(headers: &http::HeaderMap) -> bool {
    headers.contains_key("grpc-status")
        && tonic::Status::from_header_map(headers)
            .is_some_and(|s| kcred_proto::reason::reason_of(&s) == Some(Reason::Unauthenticated))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_is_proven_only_by_an_answer_on_it() {
        let proof = ConnectionProof::new();
        // The first call is made before the channel connects: it opens
        // connection 1, and the answer vouches for that one.
        let first = proof.sending();
        assert!(first.token);
        proof.opening();
        proof.answered(first, true, false);
        assert!(!proof.sending().token);
        // A new connection proves nothing, whatever answers to calls made
        // on the old one say.
        let old = proof.sending();
        proof.opening();
        proof.answered(old, true, false);
        assert!(proof.sending().token);
    }

    #[test]
    fn a_closed_connection_takes_its_proof_along() {
        let proof = ConnectionProof::new();
        let first = proof.opening();
        proof.answered(proof.sending(), true, false);
        assert!(!proof.sending().token);
        // An older connection closing late forgets nothing.
        proof.closed(first - 1);
        assert!(!proof.sending().token);
        proof.closed(first);
        let next = proof.sending();
        assert!(next.token);
        // A call made once it closed goes over the next connection, whose
        // answer proves it.
        proof.opening();
        proof.answered(next, true, false);
        assert!(!proof.sending().token);
    }

    #[test]
    fn a_first_call_answered_after_a_second_connection_opened_proves_nothing() {
        let proof = ConnectionProof::new();
        let first = proof.sending();
        proof.opening();
        proof.opening();
        proof.answered(first, true, false);
        assert!(proof.sending().token);
    }

    #[test]
    fn a_refused_call_without_a_token_forgets_the_proof() {
        let proof = ConnectionProof::new();
        proof.opening();
        let call = proof.sending();
        proof.answered(call, true, false);
        let bare = proof.sending();
        assert!(!bare.token);
        proof.answered(bare, false, true);
        assert!(proof.sending().token);
    }

    #[test]
    fn only_a_refusal_of_the_node_itself_means_its_proof_was_lost() {
        let headers = |reason: Reason| {
            kcred_proto::reason::status(reason, "refused")
                .into_http::<tonic::body::Body>()
                .headers()
                .clone()
        };
        assert!(refused_unauthenticated(&headers(Reason::Unauthenticated)));
        // A pod's token refused has the same gRPC code; the node's proof
        // is not in question, and a retry would be refused the same way.
        assert!(!refused_unauthenticated(&headers(Reason::PodTokenInvalid)));
        assert!(!refused_unauthenticated(&headers(Reason::PodTokenMissing)));
        assert!(!refused_unauthenticated(&headers(Reason::NodeMismatch)));
        assert!(!refused_unauthenticated(&http::HeaderMap::new()));
    }

    #[test]
    fn an_answer_without_the_controllers_word_proves_nothing() {
        // An older controller, a plain-TCP connection, or one whose address
        // the controller could not yet tell apart from a closed one.
        let proof = ConnectionProof::new();
        proof.opening();
        for _ in 0..3 {
            let call = proof.sending();
            assert!(call.token);
            proof.answered(call, false, false);
        }
    }
}
