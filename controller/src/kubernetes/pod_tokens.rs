//! Reviewing the pod token a fetch request carries, for
//! [`crate::admission::pod_token`] to decide on.

use std::sync::Arc;

use kcred_auth::BearerToken;

use super::token_review::{ReviewError, TokenReviewer};
use crate::admission::TokenVerdict;

/// Pod tokens are required (`kubernetes.require_pod_token`): how to
/// review them.
pub struct PodTokens {
    reviewer: Arc<TokenReviewer>,
    audience: String,
}

impl PodTokens {
    /// Reviews with `reviewer` for `audience`.
    pub fn new(reviewer: Arc<TokenReviewer>, audience: String) -> Self {
        PodTokens { reviewer, audience }
    }

    /// What the API server says of the request's token (`raw`: as it came
    /// in, empty when none did).
    pub async fn verdict(&self, raw: &str) -> TokenVerdict {
        if raw.is_empty() {
            return TokenVerdict::Missing;
        }
        let token = match BearerToken::new(raw) {
            Ok(t) => t,
            Err(e) => return TokenVerdict::Rejected(e.to_string()),
        };
        match self.reviewer.review(&token, &self.audience).await {
            Ok(id) => TokenVerdict::Reviewed(id),
            Err(ReviewError::Rejected(m)) => TokenVerdict::Rejected(m),
            Err(ReviewError::Unavailable(m)) => TokenVerdict::Unverifiable(m),
        }
    }
}
