//! Admission webhooks, called as the API server calls them: an
//! `AdmissionReview` over HTTPS to `clientConfig.url` trusting `caBundle`;
//! a JSON Patch from a mutating webhook is applied, a refusal from a
//! validating one fails the create with the webhook's message.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::routing::post;
use base64::Engine;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations, ValidatingWebhook,
    ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::api::core::v1::Pod;
use kcred_testkube::tls::ServerIdentity;
use kcred_testkube::{KubeApi, pods, serve_tls};
use kube::api::{Api, PostParams};
use serde_json::{Value, json};

type Seen = Arc<Mutex<Vec<Value>>>;

fn answer(review: &Value, response: Value) -> String {
    let mut r = response;
    r["uid"] = review["request"]["uid"].clone();
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": r})
        .to_string()
}

/// Adds `kcred.io/admitted: "true"`.
fn mutate(review: &Value) -> String {
    let has = review["request"]["object"]["metadata"]["annotations"].is_object();
    let patch = if has {
        json!([{"op": "add", "path": "/metadata/annotations/kcred.io~1admitted", "value": "true"}])
    } else {
        json!([{"op": "add", "path": "/metadata/annotations", "value": {"kcred.io/admitted": "true"}}])
    };
    let patch = base64::engine::general_purpose::STANDARD.encode(patch.to_string());
    answer(
        review,
        json!({"allowed": true, "patchType": "JSONPatch", "patch": patch}),
    )
}

/// Refuses pods asking for a `krbtgt` keytab.
fn validate(review: &Value) -> String {
    let asks = review["request"]["object"]["metadata"]["annotations"]["kcred.io/keytabs"]
        .as_str()
        .unwrap_or("");
    if asks.contains("krbtgt") {
        answer(
            review,
            json!({"allowed": false, "status": {"code": 403, "reason": "Forbidden", "message": "krbtgt is never issued to pods"}}),
        )
    } else {
        answer(review, json!({"allowed": true}))
    }
}

/// A webhook server on loopback; returns its URL base and CA.
async fn webhooks(seen: Seen) -> (String, String, tokio::task::JoinHandle<()>) {
    let id = ServerIdentity::generate().expect("test setup");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("test setup");
    let addr = listener.local_addr().expect("test setup");
    let record = |f: fn(&Value) -> String, seen: Seen| {
        move |body: Bytes| async move {
            let review: Value = serde_json::from_slice(&body).expect("test setup");
            seen.lock().expect("test setup").push(review.clone());
            f(&review)
        }
    };
    let router = Router::new()
        .route("/mutate", post(record(mutate, Arc::clone(&seen))))
        .route("/validate", post(record(validate, seen)));
    let task = serve_tls(listener, id.acceptor(), router);
    (format!("https://{addr}"), id.ca_pem.clone(), task)
}

fn client_config(url: String, ca_pem: &str) -> WebhookClientConfig {
    WebhookClientConfig {
        url: Some(url),
        ca_bundle: Some(ByteString(ca_pem.as_bytes().to_vec())),
        service: None,
    }
}

fn pod_rules() -> Option<Vec<RuleWithOperations>> {
    Some(vec![RuleWithOperations {
        api_groups: Some(vec!["".into()]),
        api_versions: Some(vec!["v1".into()]),
        operations: Some(vec!["CREATE".into()]),
        resources: Some(vec!["pods".into()]),
        scope: None,
    }])
}

async fn register(client: &kube::Client, base: &str, ca_pem: &str, failure_policy: &str) {
    let mut m = MutatingWebhookConfiguration::default();
    m.metadata.name = Some("kcred".into());
    m.webhooks = Some(vec![MutatingWebhook {
        name: "mutate.kcred.io".into(),
        admission_review_versions: vec!["v1".into()],
        client_config: client_config(format!("{base}/mutate"), ca_pem),
        failure_policy: Some(failure_policy.into()),
        rules: pod_rules(),
        side_effects: "None".into(),
        ..Default::default()
    }]);
    let mut v = ValidatingWebhookConfiguration::default();
    v.metadata.name = Some("kcred".into());
    v.webhooks = Some(vec![ValidatingWebhook {
        name: "validate.kcred.io".into(),
        admission_review_versions: vec!["v1".into()],
        client_config: client_config(format!("{base}/validate"), ca_pem),
        failure_policy: Some(failure_policy.into()),
        rules: pod_rules(),
        side_effects: "None".into(),
        ..Default::default()
    }]);
    Api::<MutatingWebhookConfiguration>::all(client.clone())
        .create(&PostParams::default(), &m)
        .await
        .expect("test setup");
    Api::<ValidatingWebhookConfiguration>::all(client.clone())
        .create(&PostParams::default(), &v)
        .await
        .expect("test setup");
}

async fn client(api: &KubeApi) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(api.kubeconfig()).expect("test setup");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("test setup");
    kube::Client::try_from(cfg).expect("test setup")
}

async fn kubectl_apply(api: &KubeApi, manifest: &str) -> (bool, String) {
    let file = api.dir().join("pod.yaml");
    std::fs::write(&file, manifest).expect("test setup");
    let out = tokio::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(api.kubeconfig())
        .args(["apply", "--validate=false", "-f"])
        .arg(&file)
        .output()
        .await
        .expect("kubectl is installed (scripts/install-deps.sh)");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn manifest(name: &str, keytabs: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: web\n  annotations:\n    kcred.io/keytabs: {keytabs}\nspec:\n  containers:\n  - name: app\n    image: registry.example/app:1\n"
    )
}

#[tokio::test]
async fn webhooks_mutate_then_validate_pods_as_kubectl_sees_it() {
    let api = KubeApi::start().await.unwrap();
    let seen: Seen = Arc::default();
    let (base, ca, _server) = webhooks(Arc::clone(&seen)).await;
    register(&client(&api).await, &base, &ca, "Fail").await;

    let (ok, out) = kubectl_apply(&api, &manifest("web-0", "HTTP/web.example.com")).await;
    assert!(ok, "{out}");
    let pod: Pod = api.store().get("web", "web-0").unwrap();
    assert_eq!(
        pod.metadata.annotations.unwrap()["kcred.io/admitted"],
        "true",
        "mutated"
    );

    let (ok, out) = kubectl_apply(&api, &manifest("web-1", "krbtgt/EXAMPLE.COM")).await;
    assert!(!ok);
    assert!(
        out.contains("admission webhook \"validate.kcred.io\" denied the request: krbtgt is never issued to pods"),
        "{out}"
    );
    assert!(api.store().get::<Pod>("web", "web-1").is_none());

    // Each pod went to the mutating webhook, then (mutated) to the
    // validating one, as AdmissionReview v1 requests.
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 4);
    let req = &seen[1]["request"];
    assert_eq!(seen[1]["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(req["operation"], "CREATE");
    assert_eq!(req["kind"]["kind"], "Pod");
    assert_eq!(req["namespace"], "web");
    assert_eq!(
        req["object"]["metadata"]["annotations"]["kcred.io/admitted"],
        "true"
    );
    assert_ne!(seen[0]["request"]["uid"], seen[1]["request"]["uid"]);
}

#[tokio::test]
async fn an_unreachable_webhook_fails_creates_closed_unless_its_policy_ignores_it() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let id = ServerIdentity::generate().unwrap();
    for (policy, created) in [("Fail", false), ("Ignore", true)] {
        let api = KubeApi::start().await.unwrap();
        let client = client(&api).await;
        register(&client, &format!("https://{closed}"), &id.ca_pem, policy).await;
        let r = Api::<Pod>::namespaced(client, "web")
            .create(&PostParams::default(), &pods::new_pod("web", "web-0"))
            .await;
        assert_eq!(r.is_ok(), created, "{policy}: {r:?}");
        if let Err(kube::Error::Api(e)) = r {
            assert_eq!(e.code, 500);
            assert!(
                e.message
                    .contains("failed calling webhook \"mutate.kcred.io\""),
                "{}",
                e.message
            );
        }
    }
}
