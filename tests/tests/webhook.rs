//! Issue 10: the controller's admission webhook, reached the way a cluster
//! reaches it. The webhook configurations are applied with `kubectl`;
//! pod manifests applied with `kubectl` to the test API server go through
//! the controller's `/mutate-pods` and `/validate-pods`; the stored pod
//! carries the kcred volume, its read-only mount and the Kerberos
//! environment, is valid for Kubernetes, and is then served end to end
//! (the kubelet stand-in publishes, `kinit` proves the keytab). Every
//! refusal is checked as `kubectl` prints it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use k8s_openapi::api::core::v1::Pod;
use kcred_testkube::{KubeApi, pods};
use kcred_tests::kube::{kubectl, kubectl_apply};
use kcred_tests::stack::WebhookEndpoint;
use kcred_tests::{Stack, StackOptions, TestPod, wait_until};

const MUTATE: &str = "mutate.pods.kcred.io";
const VALIDATE: &str = "validate.pods.kcred.io";

/// The webhook configurations an operator applies (as the Helm chart
/// renders them, without the selectors the test server does not model).
fn webhook_configurations(hook: &WebhookEndpoint) -> String {
    let ca = base64::engine::general_purpose::STANDARD.encode(&hook.ca_pem);
    let one = |kind: &str, name: &str, path: &str| {
        format!(
            r#"apiVersion: admissionregistration.k8s.io/v1
kind: {kind}WebhookConfiguration
metadata:
  name: kcred-{name}
webhooks:
  - name: {name}.pods.kcred.io
    admissionReviewVersions: ["v1"]
    sideEffects: None
    failurePolicy: Fail
    timeoutSeconds: 5
    clientConfig:
      url: "{url}{path}"
      caBundle: "{ca}"
    rules:
      - operations: ["CREATE"]
        apiGroups: [""]
        apiVersions: ["v1"]
        resources: ["pods"]
"#,
            url = hook.url
        )
    };
    one("Mutating", "mutate", "/mutate-pods")
        + "---\n"
        + &one("Validating", "validate", "/validate-pods")
}

async fn cluster() -> (KubeApi, Stack) {
    let api = KubeApi::start().await.unwrap();
    let stack = Stack::start(StackOptions {
        kubeconfig: Some(api.kubeconfig()),
        webhook: true,
        ..Default::default()
    })
    .await
    .expect("stack");
    let hook = stack
        .webhook()
        .expect("the controller serves its webhook")
        .clone();
    let (ok, out) = kubectl_apply(&api, &webhook_configurations(&hook)).unwrap();
    assert!(ok, "{out}");
    (api, stack)
}

/// A pod manifest as an application team writes it: annotations, the
/// role account's ids, nothing about volumes.
fn manifest(namespace: &str, name: &str, annotations: &[(&str, &str)], run_as: u32) -> String {
    let annotations: String = annotations
        .iter()
        .map(|(k, v)| format!("    {k}: \"{v}\"\n"))
        .collect();
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: {namespace}
  annotations:
{annotations}spec:
  securityContext:
    runAsUser: {run_as}
    runAsGroup: 1500
    runAsNonRoot: true
  initContainers:
    - name: init
      image: registry.example/init:1
  containers:
    - name: app
      image: registry.example/app:1
      env:
        - name: APP_MODE
          value: production
    - name: sidecar
      image: registry.example/sidecar:1
"#
    )
}

fn keytab_pod(name: &str) -> String {
    manifest(
        "web",
        name,
        &[("kcred.io/keytabs", "HTTP/web.example.com")],
        1500,
    )
}

fn stored(api: &KubeApi, namespace: &str, name: &str) -> Option<Pod> {
    api.store().get::<Pod>(namespace, name)
}

fn env(c: &k8s_openapi::api::core::v1::Container) -> HashMap<String, String> {
    c.env
        .iter()
        .flatten()
        .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
        .collect()
}

/// `kubernetes-validate` (the deployment tests' venv, made by
/// scripts/install-deps.sh) on `pod` as JSON, strictly.
fn validate_with_kubernetes_schemas(pod: &Pod, dir: &Path) {
    let venv = std::env::var_os("KCRED_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/kcred-test/venv"));
    let file = dir.join("stored-pod.json");
    std::fs::write(&file, serde_json::to_vec_pretty(pod).unwrap()).unwrap();
    let out = std::process::Command::new(venv.join("bin/kubernetes-validate"))
        .args(["--strict", "-k", "1.33.0"])
        .arg(&file)
        .output()
        .expect("kubernetes-validate in the test venv (scripts/install-deps.sh)");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && text.contains("passed"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root"]
async fn a_pod_applied_with_kubectl_is_mutated_valid_and_served_end_to_end() {
    let (api, stack) = cluster().await;
    let (ok, out) = kubectl_apply(&api, &keytab_pod("web-0")).unwrap();
    assert!(ok, "{out}");
    assert!(out.contains("pod/web-0 created"), "{out}");

    // The stored pod: the inline volume of the kcred driver, mounted
    // read-only at /var/run/kcred in every container, with the env.
    let pod = stored(&api, "web", "web-0").expect("created");
    let spec = pod.spec.clone().unwrap();
    let volume = spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "kcred")
        .expect("kcred volume added");
    let csi = volume.csi.as_ref().expect("inline CSI volume");
    assert_eq!(csi.driver, "csi.kcred.io");
    assert_eq!(csi.read_only, Some(true));
    let containers: Vec<_> = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .collect();
    assert_eq!(containers.len(), 3);
    for c in &containers {
        let m = c
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.name == "kcred")
            .unwrap_or_else(|| panic!("container {} has no kcred mount", c.name));
        assert_eq!(
            (m.mount_path.as_str(), m.read_only),
            ("/var/run/kcred", Some(true))
        );
        let e = env(c);
        assert_eq!(e["KRB5_CONFIG"], "/var/run/kcred/krb5.conf");
        assert_eq!(e["KRB5_KTNAME"], "/var/run/kcred/krb5.keytab");
        assert!(!e.contains_key("KRB5CCNAME"), "no tickets asked for");
    }
    assert_eq!(
        env(&spec.containers[0])["APP_MODE"],
        "production",
        "own env kept"
    );
    validate_with_kubernetes_schemas(&pod, stack.dir.path());

    // Scheduled and started: the kubelet stand-in publishes the pod's
    // volume as kubelet would (read-only, as its spec says), and the files
    // the env names are there.
    pods::bind(api.store(), "web", "web-0", "node-a").unwrap();
    pods::set_phase(api.store(), "web", "web-0", "Running").unwrap();
    let mut test_pod = TestPod::new("web", "web-0", "node-a");
    test_pod.uid = pod.metadata.uid.clone().unwrap();
    let index = stack.pods();
    wait_until("the controller to see the bound pod", 30, || {
        index
            .get("web", "web-0")
            .is_some_and(|p| p.uid == test_pod.uid && p.node_name == "node-a")
    })
    .await;
    let mut req = stack.kubelet.publish_request(&test_pod, &volume.name);
    req.readonly = csi.read_only == Some(true);
    let target = PathBuf::from(&req.target_path);
    stack
        .kubelet
        .node()
        .node_publish_volume(req)
        .await
        .expect("publish");
    let in_pod = |var: &str| {
        let path = env(&spec.containers[1])[var].clone();
        target.join(
            path.strip_prefix("/var/run/kcred/")
                .expect("inside the mount"),
        )
    };
    assert!(in_pod("KRB5_CONFIG").is_file());
    stack
        .realm
        .kinit_keytab(&in_pod("KRB5_KTNAME"), "HTTP/web.example.com")
        .expect("kinit -k -t with the keytab KRB5_KTNAME names");
    stack
        .kubelet
        .unpublish(&test_pod, &volume.name)
        .await
        .unwrap();

    let text = stack.metrics().render();
    assert!(
        text.contains("kcred_webhook_admissions_total{verdict=\"patched\",webhook=\"mutate\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("kcred_webhook_admissions_total{verdict=\"allowed\",webhook=\"validate\"} 1"),
        "{text}"
    );
    stack.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applying_twice_or_applying_a_mutated_pod_changes_nothing() {
    let (api, stack) = cluster().await;
    let (ok, out) = kubectl_apply(&api, &keytab_pod("web-0")).unwrap();
    assert!(ok, "{out}");
    let first = stored(&api, "web", "web-0").unwrap();

    // kubectl sends only `$setElementOrder` directives (the live lists
    // are longer than the manifest's) and says "configured"; nothing moves.
    let (ok, out) = kubectl_apply(&api, &keytab_pod("web-0")).unwrap();
    assert!(ok, "{out}");
    assert!(out.contains("pod/web-0"), "{out}");
    assert_eq!(stored(&api, "web", "web-0").unwrap().spec, first.spec);

    // The mutated pod itself, created again (what a reinvocation, or a
    // manifest exported from the cluster, sends): no second volume, mount
    // or variable.
    let (ok, out) = kubectl(&api, &["get", "pod", "-n", "web", "web-0", "-o", "json"]).unwrap();
    assert!(ok, "{out}");
    let mut exported: serde_json::Value = serde_json::from_str(&out).unwrap();
    let meta = exported["metadata"].as_object_mut().unwrap();
    meta.retain(|k, _| ["name", "namespace", "annotations"].contains(&k.as_str()));
    meta.insert("name".into(), "web-1".into());
    exported.as_object_mut().unwrap().remove("status");
    let (ok, out) = kubectl_apply(&api, &exported.to_string()).unwrap();
    assert!(ok, "{out}");
    let again = stored(&api, "web", "web-1").unwrap();
    assert_eq!(again.spec, first.spec);
    let vols = again.spec.unwrap().volumes.unwrap();
    assert_eq!(vols.iter().filter(|v| v.name == "kcred").count(), 1);

    let text = stack.metrics().render();
    assert!(
        text.contains("kcred_webhook_admissions_total{verdict=\"allowed\",webhook=\"mutate\"} 1"),
        "the second create was allowed without a patch: {text}"
    );
    stack.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_reaches_kubectl_with_its_reason_and_no_pod_is_stored() {
    let (api, stack) = cluster().await;
    let keytabs = ("kcred.io/keytabs", "HTTP/web.example.com");
    // (pod, manifest, the webhook that refuses it, its reason)
    let cases: [(&str, String, &str, &str); 6] = [
        (
            "typo",
            manifest(
                "web",
                "typo",
                &[("kcred.io/keytab", "HTTP/web.example.com")],
                1500,
            ),
            VALIDATE,
            "annotation kcred.io/keytab is not a kcred annotation: did you mean kcred.io/keytabs?",
        ),
        (
            "malformed",
            manifest(
                "web",
                "malformed",
                &[("kcred.io/keytabs", "HTTP/web.example.com, evil name")],
                1500,
            ),
            VALIDATE,
            "annotation kcred.io/keytabs: ",
        ),
        (
            "bad-mount",
            manifest(
                "web",
                "bad-mount",
                &[keytabs, ("kcred.io/mount-path", "relative/dir")],
                1500,
            ),
            // The mutating webhook cannot mount there, so it refuses first.
            MUTATE,
            "annotation kcred.io/mount-path: \"relative/dir\" is not an absolute path",
        ),
        (
            "no-role",
            manifest("elsewhere", "no-role", &[keytabs], 1500),
            VALIDATE,
            "rule namespaces: namespace \"elsewhere\" belongs to no role account in the policy",
        ),
        (
            "root",
            manifest("web", "root", &[keytabs], 0),
            VALIDATE,
            "pod web/root runs container \"app\" as uid 0; pods in namespace web must run as role account websvc (runAsUser 1500, runAsGroup 1500)",
        ),
        (
            "not-owned",
            manifest(
                "web",
                "not-owned",
                &[("kcred.io/keytabs", "postgres/db1.example.com")],
                1500,
            ),
            VALIDATE,
            "rule service_principals: role account \"websvc\" (namespace \"web\") does not own postgres/db1.example.com",
        ),
    ];
    for (name, manifest, webhook, reason) in cases {
        let (ok, out) = kubectl_apply(&api, &manifest).unwrap();
        assert!(!ok, "{name} was created: {out}");
        assert!(
            out.contains(&format!(
                "admission webhook \"{webhook}\" denied the request: {reason}"
            )),
            "{name}: {out}"
        );
        assert!(out.contains("Error from server"), "{name}: {out}");
        let ns = if name == "no-role" {
            "elsewhere"
        } else {
            "web"
        };
        assert!(stored(&api, ns, name).is_none(), "{name} stored");
    }
    let text = stack.metrics().render();
    assert!(
        text.contains("kcred_webhook_admissions_total{verdict=\"denied\",webhook=\"validate\"} 5")
            && text.contains(
                "kcred_webhook_admissions_total{verdict=\"denied\",webhook=\"mutate\"} 1"
            ),
        "{text}"
    );
    stack.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_answers_garbage_with_400_and_oversized_bodies_with_413() {
    let stack = Stack::start(StackOptions {
        webhook: true,
        ..Default::default()
    })
    .await
    .expect("stack");
    let hook = stack.webhook().unwrap().clone();
    let post = |path: &str, body: Vec<u8>| {
        let url = format!("{}{path}", hook.url);
        let ca = hook.ca_pem.clone();
        async move {
            kcred_testkube::webhook_call::post_json(
                &url,
                ca.as_bytes(),
                Duration::from_secs(10),
                body,
            )
            .await
        }
    };
    let err = post("/validate-pods", b"{not json".to_vec())
        .await
        .unwrap_err();
    assert!(err.contains("400"), "{err}");
    let err = post(
        "/mutate-pods",
        br#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview"}"#.to_vec(),
    )
    .await
    .unwrap_err();
    assert!(err.contains("400"), "{err}");
    let err = post("/mutate-pods", vec![b' '; 4 * 1024 * 1024])
        .await
        .unwrap_err();
    assert!(err.contains("413"), "{err}");
    // Still serving after all that.
    let ok = post(
        "/validate-pods",
        serde_json::json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "u-1", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                        "namespace": "web", "object": {"metadata": {"name": "x"}, "spec": {"containers": []}}},
        })
        .to_string()
        .into_bytes(),
    )
    .await
    .unwrap();
    let answer: serde_json::Value = serde_json::from_slice(&ok).unwrap();
    assert_eq!(answer["response"]["uid"], "u-1");
    assert_eq!(answer["response"]["allowed"], true);
    let text = stack.metrics().render();
    assert!(
        text.contains(
            "kcred_webhook_admissions_total{verdict=\"bad_request\",webhook=\"validate\"} 1"
        ),
        "{text}"
    );
    stack.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_the_webhook_presents_the_controllers_serving_certificate() {
    // No certificate of its own: the webhook borrows the [tls] one, so the
    // caBundle is the CA the controller exports for its nodes.
    let ca_dir = tempfile::tempdir().unwrap();
    let ca_file = ca_dir.path().join("ca.crt");
    let stack = Stack::start(StackOptions {
        extra_config: format!(
            "[tls]\nnames = [\"localhost\"]\nca_export_file = \"{}\"\n\n[webhook]\nlisten = \"127.0.0.1:0\"\n",
            ca_file.display()
        ),
        ..Default::default()
    })
    .await
    .expect("stack");
    let hook = stack.webhook().expect("webhook served").clone();
    assert!(hook.ca_pem.contains("BEGIN CERTIFICATE"), "{hook:?}");
    let review = serde_json::json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "u-2", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                    "namespace": "web",
                    "object": {"metadata": {"name": "x", "annotations": {"kcred.io/keys": "orders-db"}},
                               "spec": {"containers": [{"name": "app"}]}}},
    });
    let answer = kcred_testkube::webhook_call::post_json(
        &format!("{}/mutate-pods", hook.url),
        hook.ca_pem.as_bytes(),
        Duration::from_secs(10),
        review.to_string().into_bytes(),
    )
    .await
    .expect("TLS with the controller's CA");
    let answer: serde_json::Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(answer["response"]["uid"], "u-2");
    assert_eq!(answer["response"]["patchType"], "JSONPatch");
    // Another CA is not trusted for it.
    let other = Stack::start(StackOptions {
        webhook: true,
        ..Default::default()
    })
    .await
    .expect("stack");
    let err = kcred_testkube::webhook_call::post_json(
        &format!("{}/mutate-pods", hook.url),
        other.webhook().unwrap().ca_pem.as_bytes(),
        Duration::from_secs(10),
        review.to_string().into_bytes(),
    )
    .await
    .unwrap_err();
    assert!(err.contains("tls"), "{err}");
    other.shutdown().await.unwrap();
    stack.shutdown().await.unwrap();
}
