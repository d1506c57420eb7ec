//! The pod's bound service-account token, as kubelet passes it.
//!
//! With `tokenRequests` on the CSIDriver object, kubelet asks the API
//! server for a token bound to the pod, for each listed audience, and puts
//! them in every NodePublishVolume as
//! `csi.storage.k8s.io/serviceAccount.tokens`: a JSON map audience →
//! `{"token", "expirationTimestamp"}` (in `volume_context`, or in
//! `secrets` where the CSIDriver sets `serviceAccountTokenInSecrets`).
//! The driver forwards the one for the controller's audience; it proves
//! to the controller that kubelet mounts the volume for that very pod.

use std::collections::{BTreeMap, HashMap};
use std::time::SystemTime;

use kcred_auth::BearerToken;
use serde::Deserialize;

use super::request::InvalidRequest;

/// The key kubelet puts the tokens under.
pub const TOKENS_KEY: &str = "csi.storage.k8s.io/serviceAccount.tokens";

/// One pod token and when it expires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodToken {
    /// The token (a secret).
    pub token: BearerToken,
    /// When kubelet says it expires (`None`: not said).
    pub expires: Option<SystemTime>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Entry {
    token: String,
    #[serde(default)]
    expiration_timestamp: Option<String>,
}

/// The pod's token for `audience`, if kubelet passed one.
pub fn pod_token(
    secrets: &HashMap<String, String>,
    ctx: &HashMap<String, String>,
    audience: &str,
) -> Result<Option<PodToken>, InvalidRequest> {
    let Some(json) = secrets.get(TOKENS_KEY).or_else(|| ctx.get(TOKENS_KEY)) else {
        return Ok(None);
    };
    // Errors name the key and the audience, never the content.
    let mut map: BTreeMap<String, Entry> = serde_json::from_str(json).map_err(|e| {
        InvalidRequest(format!(
            "{TOKENS_KEY} is not a JSON map of audience to token (line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    let Some(entry) = map.remove(audience) else {
        return Ok(None);
    };
    let token = BearerToken::new(entry.token)
        .map_err(|e| InvalidRequest(format!("{TOKENS_KEY}[{audience:?}].token: {e}")))?;
    let expires = match entry.expiration_timestamp.as_deref() {
        None | Some("") => None,
        Some(t) => Some(
            time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
                .map_err(|_| {
                    InvalidRequest(format!(
                        "{TOKENS_KEY}[{audience:?}].expirationTimestamp {t:?} is not an RFC 3339 time"
                    ))
                })?
                .into(),
        ),
    };
    Ok(Some(PodToken { token, expires }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(
        key_in_secrets: bool,
        json: &str,
    ) -> (HashMap<String, String>, HashMap<String, String>) {
        let entry = HashMap::from([(TOKENS_KEY.to_string(), json.to_string())]);
        if key_in_secrets {
            (entry, HashMap::new())
        } else {
            (HashMap::new(), entry)
        }
    }

    const TOKENS: &str = r#"{"kcred":{"token":"a.b.c","expirationTimestamp":"2030-01-02T03:04:05Z"},"vault":{"token":"x.y.z","expirationTimestamp":"2030-01-02T03:04:05Z"}}"#;

    #[test]
    fn the_token_for_the_controllers_audience_is_taken_from_context_or_secrets() {
        for in_secrets in [false, true] {
            let (secrets, ctx) = with(in_secrets, TOKENS);
            let t = pod_token(&secrets, &ctx, "kcred").unwrap().unwrap();
            assert_eq!(t.token.expose(), "a.b.c");
            let exp = time::macros::datetime!(2030-01-02 03:04:05 UTC);
            assert_eq!(t.expires, Some(exp.into()));
        }
    }

    #[test]
    fn no_token_for_the_audience_or_none_at_all_is_no_token() {
        let (secrets, ctx) = with(false, TOKENS);
        assert_eq!(pod_token(&secrets, &ctx, "other").unwrap(), None);
        assert_eq!(
            pod_token(&HashMap::new(), &HashMap::new(), "kcred").unwrap(),
            None
        );
    }

    #[test]
    fn malformed_tokens_are_refused_without_quoting_them() {
        let (secrets, ctx) = with(false, r#"{"kcred":"secret-value"}"#);
        let err = pod_token(&secrets, &ctx, "kcred").unwrap_err();
        assert!(
            err.0.contains(TOKENS_KEY) && !err.0.contains("secret"),
            "{}",
            err.0
        );
        let (secrets, ctx) = with(
            false,
            r#"{"kcred":{"token":"a.b.c","expirationTimestamp":"soon"}}"#,
        );
        let err = pod_token(&secrets, &ctx, "kcred").unwrap_err();
        assert!(err.0.contains("expirationTimestamp"), "{}", err.0);
    }
}
