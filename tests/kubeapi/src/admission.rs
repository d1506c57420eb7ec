//! Admission on pod creation, the way the API server runs it: every
//! matching webhook of the stored `MutatingWebhookConfiguration`s in name
//! order, applying each returned JSON Patch, then every matching webhook
//! of the `ValidatingWebhookConfiguration`s. Each gets an
//! `admission.k8s.io/v1` `AdmissionReview` and must echo its `uid`.
//!
//! A refusal (`allowed: false`) fails the request with the webhook's code
//! (at least 400) and `admission webhook "<name>" denied the request:
//! <message>`; a webhook that cannot be called fails the request with 500
//! under `failurePolicy: Fail` (the default) and is skipped under
//! `Ignore`.
//!
//! Not modelled: namespace and object selectors, match conditions,
//! reinvocation, service references (only `clientConfig.url`).

use std::time::Duration;

use base64::Engine;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, RuleWithOperations, ValidatingWebhookConfiguration,
    WebhookClientConfig,
};
use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

use crate::status::ApiError;
use crate::store::{Store, new_uid};
use crate::{json_patch, webhook_call};

/// What admission needs of one webhook, mutating or validating.
struct Hook {
    name: String,
    client: WebhookClientConfig,
    fail_closed: bool,
    rules: Vec<RuleWithOperations>,
    timeout: Duration,
}

impl Hook {
    fn new(
        name: String,
        client: WebhookClientConfig,
        failure_policy: Option<String>,
        rules: Option<Vec<RuleWithOperations>>,
        timeout_seconds: Option<i32>,
    ) -> Self {
        Hook {
            name,
            client,
            fail_closed: failure_policy.as_deref() != Some("Ignore"),
            rules: rules.unwrap_or_default(),
            timeout: Duration::from_secs(timeout_seconds.map_or(10, |t| t.clamp(1, 30) as u64)),
        }
    }

    /// Whether a rule covers creating pods.
    fn matches_pod_create(&self) -> bool {
        let has = |list: &Option<Vec<String>>, want: &str| {
            list.iter().flatten().any(|v| v == want || v == "*")
        };
        self.rules.iter().any(|r| {
            has(&r.operations, "CREATE")
                && has(&r.resources, "pods")
                && has(&r.api_groups, "")
                && has(&r.api_versions, "v1")
        })
    }
}

fn mutating(store: &Store) -> Vec<Hook> {
    let (configs, _) = store.list::<MutatingWebhookConfiguration>(None);
    configs
        .into_iter()
        .flat_map(|c| c.webhooks.unwrap_or_default())
        .map(|w| {
            Hook::new(
                w.name,
                w.client_config,
                w.failure_policy,
                w.rules,
                w.timeout_seconds,
            )
        })
        .filter(Hook::matches_pod_create)
        .collect()
}

fn validating(store: &Store) -> Vec<Hook> {
    let (configs, _) = store.list::<ValidatingWebhookConfiguration>(None);
    configs
        .into_iter()
        .flat_map(|c| c.webhooks.unwrap_or_default())
        .map(|w| {
            Hook::new(
                w.name,
                w.client_config,
                w.failure_policy,
                w.rules,
                w.timeout_seconds,
            )
        })
        .filter(Hook::matches_pod_create)
        .collect()
}

/// Runs `pod` through the webhooks; returns it as mutated, or the
/// refusal the client sees.
pub async fn admit(store: &Store, mut pod: Pod) -> Result<Pod, ApiError> {
    for hook in mutating(store) {
        if let Some(patched) = review(&hook, &pod, true).await? {
            pod = patched;
        }
    }
    for hook in validating(store) {
        review(&hook, &pod, false).await?;
    }
    Ok(pod)
}

/// The request body the API server sends.
fn admission_review(uid: &str, pod: &Pod) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "name": pod.metadata.name,
            "namespace": pod.metadata.namespace,
            "operation": "CREATE",
            "userInfo": {
                "username": "kubernetes-admin",
                "groups": ["system:masters", "system:authenticated"],
            },
            "object": pod,
            "oldObject": null,
            "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
        },
    })
}

/// Calls one webhook. `Ok(Some(pod))`: the mutated pod; `Ok(None)`:
/// allowed unchanged (or skipped under `Ignore`).
async fn review(hook: &Hook, pod: &Pod, may_patch: bool) -> Result<Option<Pod>, ApiError> {
    let failed = |why: String| {
        let msg = format!(
            "Internal error occurred: failed calling webhook \"{}\": {why}",
            hook.name
        );
        if hook.fail_closed {
            Err(ApiError::internal(msg))
        } else {
            tracing::warn!(webhook = %hook.name, "{msg}; ignored (failurePolicy Ignore)");
            Ok(None)
        }
    };
    let Some(url) = &hook.client.url else {
        return failed("the test server calls only clientConfig.url webhooks".into());
    };
    let uid = new_uid();
    let body = admission_review(&uid, pod).to_string().into_bytes();
    let ca = hook
        .client
        .ca_bundle
        .as_ref()
        .map_or(&[][..], |b| b.0.as_slice());
    let answer = match webhook_call::post_json(url, ca, hook.timeout, body).await {
        Ok(a) => a,
        Err(e) => return failed(format!("failed to call webhook: {e}")),
    };
    let answer: Value = match serde_json::from_slice(&answer) {
        Ok(v) => v,
        Err(e) => return failed(format!("received invalid webhook response: {e}")),
    };
    let resp = &answer["response"];
    if resp["uid"].as_str() != Some(uid.as_str()) {
        return failed(format!(
            "expected response.uid={uid:?}, got {}",
            resp["uid"]
        ));
    }
    if resp["allowed"].as_bool() != Some(true) {
        let status = &resp["status"];
        let code = status["code"]
            .as_u64()
            .and_then(|c| u16::try_from(c).ok())
            .unwrap_or(400);
        return Err(ApiError::denied_by_webhook(
            &hook.name,
            code,
            status["reason"].as_str().unwrap_or(""),
            status["message"].as_str().unwrap_or(""),
        ));
    }
    let Some(patch) = resp["patch"].as_str() else {
        return Ok(None);
    };
    if !may_patch {
        return failed("a validating webhook returned a patch".into());
    }
    if resp["patchType"].as_str() != Some("JSONPatch") {
        return failed(format!("unsupported patchType {}", resp["patchType"]));
    }
    let patch: Value = match base64::engine::general_purpose::STANDARD
        .decode(patch)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(p) => p,
        Err(e) => return failed(format!("invalid patch: {e}")),
    };
    let mut doc = serde_json::to_value(pod).map_err(|e| ApiError::internal(e.to_string()))?;
    if let Err(e) = json_patch::apply(&mut doc, &patch) {
        return failed(e.to_string());
    }
    match serde_json::from_value(doc) {
        Ok(p) => Ok(Some(p)),
        Err(e) => failed(format!("the patched pod is invalid: {e}")),
    }
}
