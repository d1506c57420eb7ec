//! `admission.k8s.io/v1` `AdmissionReview`: what the API server sends and
//! what it expects back.

use base64::Engine;
use k8s_openapi::api::core::v1::Pod;
use serde::Deserialize;
use serde_json::{Value, json};

/// The only version the webhook speaks (the configurations ask for it).
pub const API_VERSION: &str = "admission.k8s.io/v1";

/// Why a request body is not a review the webhook can answer (400).
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    /// Not JSON, or not shaped like an `AdmissionReview`.
    #[error("request body is not an AdmissionReview: {0}")]
    Malformed(String),
    /// Another `apiVersion` or `kind`.
    #[error("expected apiVersion {API_VERSION} kind AdmissionReview, got {api_version} {kind}")]
    Version {
        /// What was sent.
        api_version: String,
        /// What was sent.
        kind: String,
    },
    /// No `request`.
    #[error("AdmissionReview has no request")]
    NoRequest,
    /// A pod review without a pod, or with one that is not a Pod.
    #[error("request.object is not a Pod: {0}")]
    NotAPod(String),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Review {
    api_version: String,
    kind: String,
    request: Option<Request>,
}

/// The resource kind a review is about.
#[derive(Debug, Deserialize)]
pub struct Kind {
    /// API group (`""` for core).
    #[serde(default)]
    pub group: String,
    /// Kind (`Pod`).
    pub kind: String,
}

/// One admission request (the fields kcred reads).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Request {
    /// Echoed in the response.
    pub uid: String,
    /// The object's kind.
    pub kind: Option<Kind>,
    /// The namespace the object is created in (authoritative: the
    /// object's own `metadata.namespace` may be empty).
    #[serde(default)]
    pub namespace: Option<String>,
    /// The object as it would be stored.
    #[serde(default)]
    pub object: Option<Value>,
}

impl Request {
    /// The pod under review, with its namespace; `Ok(None)` when the
    /// request is about something else (allowed untouched).
    pub fn pod(&self) -> Result<Option<(Pod, String)>, ReviewError> {
        match &self.kind {
            Some(k) if k.group.is_empty() && k.kind == "Pod" => {}
            _ => return Ok(None),
        }
        let object = self
            .object
            .clone()
            .ok_or_else(|| ReviewError::NotAPod("missing".into()))?;
        let pod: Pod =
            serde_json::from_value(object).map_err(|e| ReviewError::NotAPod(e.to_string()))?;
        let namespace = self
            .namespace
            .clone()
            .filter(|n| !n.is_empty())
            .or_else(|| pod.metadata.namespace.clone())
            .unwrap_or_else(|| "default".into());
        Ok(Some((pod, namespace)))
    }
}

/// Reads a request body.
pub fn parse(body: &[u8]) -> Result<Request, ReviewError> {
    let review: Review =
        serde_json::from_slice(body).map_err(|e| ReviewError::Malformed(e.to_string()))?;
    if review.api_version != API_VERSION || review.kind != "AdmissionReview" {
        return Err(ReviewError::Version {
            api_version: review.api_version,
            kind: review.kind,
        });
    }
    review.request.ok_or(ReviewError::NoRequest)
}

/// The webhook's answer to one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Admit unchanged.
    Allow,
    /// Admit with these RFC 6902 operations applied.
    Patch(Vec<Value>),
    /// Refuse; `code` is the HTTP status the client sees (400: the pod is
    /// wrong; 403: the policy refuses it).
    Deny {
        /// HTTP status for the client.
        code: u16,
        /// What `kubectl` prints after "denied the request:".
        message: String,
    },
}

impl Verdict {
    /// A refusal of a malformed pod.
    pub fn invalid(message: impl Into<String>) -> Self {
        Verdict::Deny {
            code: 400,
            message: message.into(),
        }
    }

    /// A refusal by policy.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Verdict::Deny {
            code: 403,
            message: message.into(),
        }
    }

    /// The metric label of this verdict.
    pub fn label(&self) -> &'static str {
        match self {
            Verdict::Allow => "allowed",
            Verdict::Patch(_) => "patched",
            Verdict::Deny { .. } => "denied",
        }
    }

    /// The `AdmissionReview` response for request `uid`.
    pub fn response(&self, uid: &str) -> Value {
        let response = match self {
            Verdict::Allow => json!({"uid": uid, "allowed": true}),
            Verdict::Patch(ops) => json!({
                "uid": uid,
                "allowed": true,
                "patchType": "JSONPatch",
                "patch": base64::engine::general_purpose::STANDARD
                    .encode(Value::Array(ops.clone()).to_string()),
            }),
            Verdict::Deny { code, message } => json!({
                "uid": uid,
                "allowed": false,
                "status": {
                    "code": code,
                    "reason": if *code == 403 { "Forbidden" } else { "BadRequest" },
                    "message": message,
                },
            }),
        };
        json!({"apiVersion": API_VERSION, "kind": "AdmissionReview", "response": response})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn review(request: Value) -> Vec<u8> {
        json!({"apiVersion": API_VERSION, "kind": "AdmissionReview", "request": request})
            .to_string()
            .into_bytes()
    }

    #[test]
    fn a_pod_review_yields_the_pod_and_the_requests_namespace() {
        let body = review(json!({
            "uid": "u-1",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "namespace": "web",
            "operation": "CREATE",
            "object": {"metadata": {"name": "web-0"}, "spec": {"containers": [{"name": "app"}]}},
        }));
        let req = parse(&body).unwrap();
        assert_eq!(req.uid, "u-1");
        let (pod, ns) = req.pod().unwrap().unwrap();
        assert_eq!(ns, "web");
        assert_eq!(pod.metadata.name.as_deref(), Some("web-0"));
    }

    #[test]
    fn other_kinds_pass_and_broken_bodies_say_why() {
        let req = parse(&review(json!({
            "uid": "u", "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
        })))
        .unwrap();
        assert!(req.pod().unwrap().is_none());
        assert!(matches!(
            parse(b"{not json"),
            Err(ReviewError::Malformed(_))
        ));
        let v1beta1 = br#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview"}"#;
        let err = parse(v1beta1).unwrap_err();
        assert!(err.to_string().contains("v1beta1"), "{err}");
        let err = parse(&review(json!({
            "uid": "u", "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "object": {"spec": {"containers": "nope"}},
        })))
        .unwrap()
        .pod()
        .unwrap_err();
        assert!(matches!(err, ReviewError::NotAPod(_)), "{err}");
    }

    #[test]
    fn responses_echo_the_uid_and_carry_a_base64_json_patch() {
        let ops = vec![json!({"op": "add", "path": "/x", "value": 1})];
        let r = Verdict::Patch(ops.clone()).response("abc");
        assert_eq!(r["response"]["uid"], "abc");
        assert_eq!(r["response"]["patchType"], "JSONPatch");
        let raw = base64::engine::general_purpose::STANDARD
            .decode(r["response"]["patch"].as_str().unwrap())
            .unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&raw).unwrap(),
            Value::Array(ops)
        );
        let r = Verdict::forbidden("no").response("abc");
        assert_eq!(r["response"]["allowed"], false);
        assert_eq!(r["response"]["status"]["code"], 403);
        assert_eq!(r["response"]["status"]["message"], "no");
    }
}
