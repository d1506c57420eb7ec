//! Bound service-account tokens (JWTs the Kubernetes API server issues) as
//! kcred carries them: a pod's own token in a fetch request, and a node
//! driver's DaemonSet pod token as `authorization: Bearer <jwt>` on each
//! call (the psat node identity).
//!
//! A token is a credential for as long as it is valid: [`BearerToken`]
//! wipes its bytes when dropped and never shows them in `Debug` output.

use tonic::Request;
use tonic::metadata::MetadataValue;
use zeroize::Zeroizing;

use crate::METADATA_KEY;

/// The `authorization` scheme of bearer tokens (RFC 6750).
const SCHEME: &str = "Bearer";

/// Longest token accepted: Kubernetes' bound tokens are about 1 KiB.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// A bearer token: zeroized on drop, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct BearerToken(Zeroizing<String>);

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken(<redacted>)")
    }
}

/// Why a token cannot be used; never quotes the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BearerError {
    /// Empty.
    #[error("the token is empty")]
    Empty,
    /// Longer than [`MAX_TOKEN_LEN`].
    #[error("the token is longer than {MAX_TOKEN_LEN} bytes")]
    TooLong,
    /// Not printable ASCII (JWTs are base64url and dots).
    #[error("the token has characters a JWT cannot have")]
    NotAToken,
}

impl BearerToken {
    /// Takes a token (surrounding white space removed, as files end in a
    /// newline).
    pub fn new(token: impl Into<String>) -> Result<Self, BearerError> {
        let raw = Zeroizing::new(token.into());
        let t = raw.trim();
        if t.is_empty() {
            return Err(BearerError::Empty);
        }
        if t.len() > MAX_TOKEN_LEN {
            return Err(BearerError::TooLong);
        }
        if !t.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(BearerError::NotAToken);
        }
        if t.len() == raw.len() {
            return Ok(BearerToken(raw));
        }
        Ok(BearerToken(Zeroizing::new(t.to_string())))
    }

    /// The token itself, to hand to the API server or the wire; keep it
    /// out of logs.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Attaches the token to a call as `authorization: Bearer <token>`,
    /// marked sensitive (kept out of HTTP/2 header compression tables).
    pub fn attach<T>(&self, request: &mut Request<T>) -> Result<(), BearerError> {
        let mut value = MetadataValue::try_from(format!("{SCHEME} {}", self.expose()).as_str())
            .map_err(|_| BearerError::NotAToken)?;
        value.set_sensitive(true);
        request.metadata_mut().insert(METADATA_KEY, value);
        Ok(())
    }

    /// The bearer token a call carries, if its `authorization` is one
    /// (`None` for a Kerberos token or none at all).
    pub fn from_request<T>(request: &Request<T>) -> Option<Result<Self, BearerError>> {
        let value = request.metadata().get(METADATA_KEY)?.to_str().ok()?;
        let (scheme, rest) = value.trim().split_once(' ')?;
        scheme
            .eq_ignore_ascii_case(SCHEME)
            .then(|| BearerToken::new(rest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_never_shows_in_debug_output() {
        let t = BearerToken::new("eyJhbGciOi.payload.signature\n").unwrap();
        assert_eq!(format!("{t:?}"), "BearerToken(<redacted>)");
        assert_eq!(t.expose(), "eyJhbGciOi.payload.signature");
    }

    #[test]
    fn unusable_tokens_are_refused_without_quoting_them() {
        assert_eq!(BearerToken::new(" \n"), Err(BearerError::Empty));
        assert_eq!(
            BearerToken::new("a".repeat(MAX_TOKEN_LEN + 1)),
            Err(BearerError::TooLong)
        );
        let err = BearerToken::new("secret part\u{7f}").unwrap_err();
        assert!(!err.to_string().contains("secret"));
    }

    #[test]
    fn a_bearer_token_travels_in_authorization_and_a_negotiate_token_is_not_one() {
        let t = BearerToken::new("abc.def.ghi").unwrap();
        let mut req = Request::new(());
        t.attach(&mut req).unwrap();
        assert_eq!(BearerToken::from_request(&req), Some(Ok(t)));
        let mut kerberos = Request::new(());
        kerberos.metadata_mut().insert(
            METADATA_KEY,
            MetadataValue::try_from("Negotiate YWJj").unwrap(),
        );
        assert_eq!(BearerToken::from_request(&kerberos), None);
        assert_eq!(BearerToken::from_request(&Request::new(())), None);
    }
}
