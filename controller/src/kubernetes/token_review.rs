//! Bound service-account tokens, verified by the API server that issued
//! them.
//!
//! kcred never checks a token's signature itself: it sends the token in a
//! `TokenReview` naming the audience it expects, and the API server answers
//! whether the token is one it issued, unexpired, for that audience, and
//! still bound to a pod that exists (the pod's deletion revokes it). From
//! the answer kcred keeps only who the token names ([`BoundIdentity`]):
//! namespace and service account (the username
//! `system:serviceaccount:<ns>:<sa>`), and the pod's name and UID (the
//! `authentication.kubernetes.io/pod-name` and `pod-uid` extras; a token
//! without them is not bound to a pod and is refused).
//!
//! Successful reviews are cached ([`super::review_cache`]); refusals and
//! failures are not, so a token the API server starts honouring (a pod
//! just created) is honoured at once.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};
use kcred_auth::BearerToken;
use kube::api::{Api, PostParams};

use super::KubeSource;
use super::review_cache::{self, ReviewCache};

const USER_PREFIX: &str = "system:serviceaccount:";
const EXTRA_POD_NAME: &str = "authentication.kubernetes.io/pod-name";
const EXTRA_POD_UID: &str = "authentication.kubernetes.io/pod-uid";
const EXTRA_NODE_NAME: &str = "authentication.kubernetes.io/node-name";

/// Longest wait for the API server's answer.
pub const REVIEW_TIMEOUT: Duration = Duration::from_secs(10);
/// Most reviews cached (each a few hundred bytes).
const CACHE_ENTRIES: usize = 50_000;

/// Who an authenticated, pod-bound token names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundIdentity {
    /// The pod's namespace.
    pub namespace: String,
    /// Its service account.
    pub service_account: String,
    /// The pod the token is bound to.
    pub pod_name: String,
    /// That pod's UID.
    pub pod_uid: String,
    /// The pod's node, where the API server says (newer servers do).
    pub node_name: Option<String>,
}

impl BoundIdentity {
    /// `namespace/pod (uid)`, for messages.
    pub fn describe(&self) -> String {
        format!(
            "{}/{} (uid {})",
            self.namespace, self.pod_name, self.pod_uid
        )
    }
}

/// Why a token was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReviewError {
    /// The API server does not vouch for it (unknown, expired, another
    /// audience, its pod gone) or it is not bound to a pod.
    #[error("{0}")]
    Rejected(String),
    /// The API server could not be asked (down, slow, or the controller
    /// may not create TokenReviews); worth retrying.
    #[error("{0}")]
    Unavailable(String),
}

/// Reads a review's answer: authenticated, for `audience`, a service
/// account's, bound to a pod.
pub fn identity_of(
    status: &TokenReviewStatus,
    audience: &str,
) -> Result<BoundIdentity, ReviewError> {
    let rejected = |why: String| Err(ReviewError::Rejected(why));
    if status.authenticated != Some(true) {
        let why = status.error.as_deref().unwrap_or("not authenticated");
        return rejected(format!("the API server refused the token: {why}"));
    }
    let audiences = status.audiences.as_deref().unwrap_or_default();
    if !audiences.iter().any(|a| a == audience) {
        return rejected(format!(
            "the token is not for audience {audience:?} (the API server accepted it for {audiences:?})"
        ));
    }
    let user = status.user.clone().unwrap_or_default();
    let username = user.username.unwrap_or_default();
    let Some((namespace, service_account)) = username
        .strip_prefix(USER_PREFIX)
        .and_then(|rest| rest.split_once(':'))
        .filter(|(ns, sa)| !ns.is_empty() && !sa.is_empty())
    else {
        return rejected(format!(
            "the token is {username:?}'s, not a service account's"
        ));
    };
    let extra = user.extra.unwrap_or_default();
    let one = |key: &str| {
        extra
            .get(key)
            .and_then(|v| v.first())
            .filter(|v| !v.is_empty())
            .cloned()
    };
    let (Some(pod_name), Some(pod_uid)) = (one(EXTRA_POD_NAME), one(EXTRA_POD_UID)) else {
        return rejected(format!(
            "the token of {username} is not bound to a pod (no {EXTRA_POD_NAME} and {EXTRA_POD_UID})"
        ));
    };
    Ok(BoundIdentity {
        namespace: namespace.to_string(),
        service_account: service_account.to_string(),
        pod_name,
        pod_uid,
        node_name: one(EXTRA_NODE_NAME),
    })
}

/// A JWT's `exp`, read without checking its signature (the API server
/// has just vouched for the token): how long a review of it may be cached.
pub fn expiry(token: &str) -> Option<SystemTime> {
    let exp = claims(token)?.get("exp")?.as_u64()?;
    UNIX_EPOCH.checked_add(Duration::from_secs(exp))
}

/// A JWT's claims (its payload, a JSON object), read without checking
/// its signature.
fn claims(token: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
    let mut parts = token.split('.');
    let (Some(_), Some(payload), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// How long past its `exp` a token is still sent for review (the API
/// server's own leeway, and clocks apart).
const EXPIRED_LEEWAY: Duration = Duration::from_secs(300);

/// Why the API server would refuse `token` for `audience`, if that shows
/// without asking it: not a JWT, none of its audiences (`aud`) is
/// `audience`, or expired. Anyone may send a token, and a review is a call
/// to the API server, so a junk token is refused here. Its claims are read
/// unverified: one that passes is still reviewed, and a token without an
/// `aud` or `exp` is left to the API server.
fn refused_unasked(token: &str, audience: &str, now: SystemTime) -> Option<String> {
    let Some(claims) = claims(token) else {
        return Some("not a service-account token (a JWT)".into());
    };
    let names = |aud: &serde_json::Value| match aud {
        serde_json::Value::String(a) => a == audience,
        serde_json::Value::Array(all) => all.iter().any(|a| a.as_str() == Some(audience)),
        _ => false,
    };
    if let Some(aud) = claims.get("aud")
        && !names(aud)
    {
        return Some(format!("its audiences do not include {audience:?}"));
    }
    // Unverified: an `exp` past what a time can hold is not expired.
    let lapsed = claims
        .get("exp")
        .and_then(serde_json::Value::as_u64)
        .and_then(|exp| UNIX_EPOCH.checked_add(Duration::from_secs(exp)))
        .and_then(|exp| exp.checked_add(EXPIRED_LEEWAY));
    if lapsed.is_some_and(|lapsed| lapsed < now) {
        return Some("it has expired".into());
    }
    None
}

/// Sends tokens to the API server for review, caching what it vouches for.
pub struct TokenReviewer {
    source: KubeSource,
    client: tokio::sync::OnceCell<kube::Client>,
    cache: ReviewCache<BoundIdentity>,
}

impl TokenReviewer {
    /// A reviewer talking to the API server `source` reaches (the client
    /// is made on first use).
    pub fn new(source: KubeSource) -> Arc<Self> {
        Arc::new(TokenReviewer {
            source,
            client: tokio::sync::OnceCell::new(),
            cache: ReviewCache::new(CACHE_ENTRIES),
        })
    }

    /// The API client (made once).
    pub async fn client(&self) -> Result<kube::Client, ReviewError> {
        self.client
            .get_or_try_init(|| self.source.client())
            .await
            .cloned()
            .map_err(|e| ReviewError::Unavailable(format!("Kubernetes API: {e}")))
    }

    /// A review of `token` for `audience` still cached, without asking.
    pub fn cached(&self, token: &BearerToken, audience: &str) -> Option<BoundIdentity> {
        self.cache
            .get(&review_cache::key(audience, token.expose()), Instant::now())
    }

    /// Who `token` names, as the API server says for `audience`.
    pub async fn review(
        &self,
        token: &BearerToken,
        audience: &str,
    ) -> Result<BoundIdentity, ReviewError> {
        let key = review_cache::key(audience, token.expose());
        if let Some(id) = self.cache.get(&key, Instant::now()) {
            return Ok(id);
        }
        if let Some(why) = refused_unasked(token.expose(), audience, SystemTime::now()) {
            return Err(ReviewError::Rejected(why));
        }
        let request = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.expose().to_string()),
                audiences: Some(vec![audience.to_string()]),
            },
            ..Default::default()
        };
        let api: Api<TokenReview> = Api::all(self.client().await?);
        let answer =
            tokio::time::timeout(REVIEW_TIMEOUT, api.create(&PostParams::default(), &request))
                .await
                .map_err(|_| {
                    ReviewError::Unavailable(format!(
                        "the API server did not answer a TokenReview within {} s",
                        REVIEW_TIMEOUT.as_secs()
                    ))
                })?
                .map_err(|e| ReviewError::Unavailable(format!("TokenReview failed: {e}")))?;
        let id = identity_of(&answer.status.unwrap_or_default(), audience)?;
        let ttl = review_cache::ttl(expiry(token.expose()), SystemTime::now());
        self.cache.put(key, id.clone(), ttl, Instant::now());
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::authentication::v1::UserInfo;

    use super::*;

    fn jwt(claims: serde_json::Value) -> String {
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        format!(
            "{}.{}.{}",
            b64(br#"{"alg":"RS256"}"#),
            b64(claims.to_string().as_bytes()),
            b64(b"signature")
        )
    }

    #[test]
    fn tokens_the_api_server_would_refuse_are_refused_without_asking() {
        let now = SystemTime::now();
        let secs = |t: SystemTime| t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let in_an_hour = secs(now) + 3600;
        for (token, why) in [
            ("junk".to_string(), "not a service-account token"),
            ("a.b.c".to_string(), "not a service-account token"),
            (
                jwt(serde_json::json!(["aud"])),
                "not a service-account token",
            ),
            (
                jwt(serde_json::json!({"aud": ["other"], "exp": in_an_hour})),
                "do not include \"kcred\"",
            ),
            (
                jwt(serde_json::json!({"aud": "other", "exp": in_an_hour})),
                "do not include",
            ),
            (
                jwt(serde_json::json!({"aud": ["kcred"], "exp": secs(now) - 3600})),
                "expired",
            ),
        ] {
            let refused = refused_unasked(&token, "kcred", now);
            assert!(
                refused.as_deref().is_some_and(|r| r.contains(why)),
                "{token}: {refused:?}"
            );
        }
        for token in [
            jwt(serde_json::json!({"aud": ["x", "kcred"], "exp": in_an_hour})),
            jwt(serde_json::json!({"aud": "kcred", "exp": secs(now) - 60})),
            // Without the claims (a legacy token): the API server decides.
            jwt(serde_json::json!({"sub": "system:serviceaccount:ns:sa"})),
            // A time no clock holds: not taken as expired, and no panic.
            jwt(serde_json::json!({"exp": u64::MAX})),
            jwt(serde_json::json!({"exp": 9_223_372_036_854_775_000_u64})),
        ] {
            assert_eq!(refused_unasked(&token, "kcred", now), None, "{token}");
        }
    }

    fn answer(username: &str, audiences: &[&str], extra: &[(&str, &str)]) -> TokenReviewStatus {
        TokenReviewStatus {
            authenticated: Some(true),
            audiences: Some(audiences.iter().map(|a| a.to_string()).collect()),
            user: Some(UserInfo {
                username: Some(username.into()),
                extra: Some(
                    extra
                        .iter()
                        .map(|(k, v)| (k.to_string(), vec![v.to_string()]))
                        .collect::<BTreeMap<_, _>>(),
                ),
                ..Default::default()
            }),
            error: None,
        }
    }

    const BOUND: [(&str, &str); 2] = [(EXTRA_POD_NAME, "web-0"), (EXTRA_POD_UID, "uid-1")];

    #[test]
    fn a_pod_bound_token_names_its_namespace_account_and_pod() {
        let id = identity_of(
            &answer("system:serviceaccount:web:app", &["kcred"], &BOUND),
            "kcred",
        )
        .unwrap();
        assert_eq!(
            id,
            BoundIdentity {
                namespace: "web".into(),
                service_account: "app".into(),
                pod_name: "web-0".into(),
                pod_uid: "uid-1".into(),
                node_name: None,
            }
        );
    }

    #[test]
    fn an_unauthenticated_token_is_rejected_with_the_servers_reason() {
        let status = TokenReviewStatus {
            authenticated: Some(false),
            error: Some("service account token has expired".into()),
            ..Default::default()
        };
        let err = identity_of(&status, "kcred").unwrap_err();
        assert!(
            matches!(&err, ReviewError::Rejected(m) if m.contains("expired")),
            "{err}"
        );
    }

    #[test]
    fn a_token_for_another_audience_is_rejected() {
        // An API server that ignores spec.audiences answers with its own.
        let status = answer(
            "system:serviceaccount:web:app",
            &["https://kubernetes.default.svc"],
            &BOUND,
        );
        let err = identity_of(&status, "kcred").unwrap_err();
        assert!(
            matches!(&err, ReviewError::Rejected(m) if m.contains("audience")),
            "{err}"
        );
    }

    #[test]
    fn a_token_not_bound_to_a_pod_or_not_a_service_accounts_is_rejected() {
        let unbound = identity_of(
            &answer("system:serviceaccount:web:app", &["kcred"], &[]),
            "kcred",
        );
        assert!(
            matches!(unbound, Err(ReviewError::Rejected(m)) if m.contains("not bound to a pod"))
        );
        let person = identity_of(&answer("alice", &["kcred"], &BOUND), "kcred");
        assert!(
            matches!(person, Err(ReviewError::Rejected(m)) if m.contains("not a service account"))
        );
    }

    #[test]
    fn the_expiry_is_read_from_the_jwt_payload() {
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let token = format!(
            "{}.{}.sig",
            b64("{}"),
            b64(r#"{"exp":1900000000,"aud":["kcred"]}"#)
        );
        assert_eq!(
            expiry(&token),
            Some(UNIX_EPOCH + Duration::from_secs(1_900_000_000))
        );
        assert_eq!(expiry("not-a-jwt"), None);
        assert_eq!(expiry(&format!("h.{}.s", b64("{}"))), None);
    }
}
