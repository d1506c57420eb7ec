//! Pod-bound service-account tokens and `TokenReview`.
//!
//! The test mints tokens as kubelet's TokenRequest would (a JWT naming the
//! namespace, service account, pod and audiences). A review authenticates
//! a token only if it was minted here, has not expired, its pod still
//! exists with the same UID, and its audiences meet the ones asked for:
//! the answer's `status.audiences` is that intersection, as the real
//! server computes it.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewStatus, UserInfo};
use k8s_openapi::api::core::v1::Pod;

use crate::server::Shared;
use crate::status::{ApiError, json_response};

/// The audience of tokens when a review names none.
pub const API_AUDIENCE: &str = "https://kubernetes.default.svc.cluster.local";

/// What a token is bound to.
#[derive(Debug, Clone)]
pub struct TokenClaims {
    /// The pod's namespace.
    pub namespace: String,
    /// The service account.
    pub service_account: String,
    /// The pod the token is bound to.
    pub pod_name: String,
    /// That pod's UID.
    pub pod_uid: String,
    /// Audiences (`aud`).
    pub audiences: Vec<String>,
    /// How long the token is valid from now.
    pub valid_for: Duration,
}

struct Minted {
    claims: TokenClaims,
    expires: SystemTime,
}

/// Tokens minted by this server.
#[derive(Default)]
pub struct Tokens {
    minted: Mutex<HashMap<String, Minted>>,
    /// TokenReviews asked for.
    reviews: AtomicUsize,
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl Tokens {
    /// Mints a token (a JWT as kubelet receives it; its signature is
    /// random, the server recognises tokens it minted).
    pub fn mint(&self, claims: TokenClaims) -> String {
        let now = SystemTime::now();
        let expires = now + claims.valid_for;
        let secs = |t: SystemTime| t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let payload = serde_json::json!({
            "aud": claims.audiences,
            "exp": secs(expires),
            "iat": secs(now),
            "iss": API_AUDIENCE,
            "sub": format!("system:serviceaccount:{}:{}", claims.namespace, claims.service_account),
            "kubernetes.io": {
                "namespace": claims.namespace,
                "pod": { "name": claims.pod_name, "uid": claims.pod_uid },
                "serviceaccount": { "name": claims.service_account },
            },
        });
        let sig: [u8; 32] = rand::random();
        let token = format!(
            "{}.{}.{}",
            b64(br#"{"alg":"RS256","kid":"kcred-test"}"#),
            b64(payload.to_string().as_bytes()),
            b64(&sig)
        );
        let mut minted = match self.minted.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        minted.insert(token.clone(), Minted { claims, expires });
        token
    }

    /// How many TokenReviews were asked for.
    pub fn reviews(&self) -> usize {
        self.reviews.load(Ordering::SeqCst)
    }

    fn lookup(&self, token: &str) -> Option<(TokenClaims, SystemTime)> {
        let minted = match self.minted.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        minted.get(token).map(|m| (m.claims.clone(), m.expires))
    }
}

fn refused(error: &str) -> TokenReviewStatus {
    TokenReviewStatus {
        authenticated: Some(false),
        error: Some(error.into()),
        ..Default::default()
    }
}

fn review(shared: &Shared, token: &str, asked: &[String]) -> TokenReviewStatus {
    let Some((claims, expires)) = shared.tokens.lookup(token) else {
        return refused("[invalid bearer token, token lookup failed]");
    };
    if SystemTime::now() >= expires {
        return refused("[invalid bearer token, service account token has expired]");
    }
    let wanted: Vec<String> = if asked.is_empty() {
        vec![API_AUDIENCE.to_string()]
    } else {
        asked.to_vec()
    };
    let audiences: Vec<String> = wanted
        .into_iter()
        .filter(|a| claims.audiences.contains(a))
        .collect();
    if audiences.is_empty() {
        return refused(
            "[invalid bearer token, token audiences is invalid for the target audiences]",
        );
    }
    match shared.store.get::<Pod>(&claims.namespace, &claims.pod_name) {
        Some(p) if p.metadata.uid.as_deref() == Some(claims.pod_uid.as_str()) => {}
        Some(_) => {
            return refused("[invalid bearer token, pod UID does not match the bound object]");
        }
        None => {
            return refused(&format!(
                "[invalid bearer token, pods \"{}\" not found]",
                claims.pod_name
            ));
        }
    }
    let extra = BTreeMap::from([
        (
            "authentication.kubernetes.io/pod-name".to_string(),
            vec![claims.pod_name.clone()],
        ),
        (
            "authentication.kubernetes.io/pod-uid".to_string(),
            vec![claims.pod_uid.clone()],
        ),
    ]);
    TokenReviewStatus {
        authenticated: Some(true),
        audiences: Some(audiences),
        user: Some(UserInfo {
            username: Some(format!(
                "system:serviceaccount:{}:{}",
                claims.namespace, claims.service_account
            )),
            groups: Some(vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{}", claims.namespace),
                "system:authenticated".into(),
            ]),
            extra: Some(extra),
            ..Default::default()
        }),
        error: None,
    }
}

/// `POST /apis/authentication.k8s.io/v1/tokenreviews`.
pub async fn create_review(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let mut tr: TokenReview = match serde_json::from_slice(&body) {
        Ok(t) => t,
        Err(e) => {
            return ApiError::bad_request(format!("cannot decode TokenReview body: {e}"))
                .into_response();
        }
    };
    shared.tokens.reviews.fetch_add(1, Ordering::SeqCst);
    let token = tr.spec.token.clone().unwrap_or_default();
    if token.is_empty() {
        return ApiError::bad_request(
            "TokenReview.authentication.k8s.io \"\" is invalid: spec.token: Required value",
        )
        .into_response();
    }
    let asked = tr.spec.audiences.clone().unwrap_or_default();
    tr.status = Some(review(&shared, &token, &asked));
    json_response(StatusCode::CREATED, &tr)
}
