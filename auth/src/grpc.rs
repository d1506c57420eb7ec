//! Carrying tokens on gRPC calls: a client interceptor that attaches a
//! fresh token to every call, and the server-side check that turns the
//! `authorization` metadata into an authenticated principal.

use std::sync::Arc;

use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::{Request, Status};
use zeroize::Zeroizing;

use crate::{Acceptor, Initiator, METADATA_KEY, from_metadata_value, to_metadata_value};

/// Attaches `authorization: Negotiate <token>` to each call. One token per
/// call: tokens are single-use at the acceptor (its replay cache).
#[derive(Clone)]
pub struct TokenInterceptor {
    initiator: Arc<Initiator>,
}

impl TokenInterceptor {
    /// Uses `initiator` for every call.
    pub fn new(initiator: Arc<Initiator>) -> Self {
        TokenInterceptor { initiator }
    }
}

impl Interceptor for TokenInterceptor {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let token = self
            .initiator
            .token()
            .map_err(|e| Status::unavailable(format!("cannot get a Kerberos token: {e}")))?;
        attach_token(&mut request, &token)?;
        Ok(request)
    }
}

/// Puts `token` into a call's metadata as `authorization: Negotiate
/// <token>`, marked sensitive: it is single-use, never worth a slot in the
/// HTTP/2 header table.
pub fn attach_token<T>(request: &mut Request<T>, token: &[u8]) -> Result<(), Status> {
    let mut value = MetadataValue::try_from(to_metadata_value(token))
        .map_err(|_| Status::internal("token is not valid metadata"))?;
    value.set_sensitive(true);
    request.metadata_mut().insert(METADATA_KEY, value);
    Ok(())
}

/// The principal a call was authenticated as, stored in the request's
/// extensions by the server that verified it ([`verify`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller(pub String);

/// A call's token, taken from its metadata; `Unauthenticated` (with a
/// reason, never the value) when it is missing or malformed.
pub fn token_of<T>(request: &Request<T>) -> Result<Zeroizing<Vec<u8>>, Status> {
    let value = request.metadata().get(METADATA_KEY).ok_or_else(|| {
        Status::unauthenticated("no Kerberos token (authorization: Negotiate ...)")
    })?;
    let text = value
        .to_str()
        .map_err(|_| Status::unauthenticated("authorization metadata is not text"))?;
    from_metadata_value(text)
        .map(Zeroizing::new)
        .map_err(|e| Status::unauthenticated(e.to_string()))
}

/// Verifies a token taken by [`token_of`]; `Unauthenticated` with the
/// reason when it is refused. It blocks: MIT reads the keytab and reads
/// and appends to the replay cache file for every token.
pub fn verify(acceptor: &Acceptor, token: &[u8]) -> Result<Caller, Status> {
    acceptor
        .accept(token)
        .map(Caller)
        .map_err(|e| Status::unauthenticated(format!("Kerberos token refused: {e}")))
}
