//! The test server as `kubectl --kubeconfig` sees it: the real client
//! gets pods and applies a manifest.
//!
//! The server publishes no OpenAPI schema, so `kubectl apply` runs with
//! `--validate=false` (client-side validation needs the schema; the
//! server still decodes the body into a `Pod` and refuses what does not
//! fit).

use k8s_openapi::api::core::v1::Pod;
use kcred_testkube::{KubeApi, pods};

async fn kubectl(api: &KubeApi, args: &[&str]) -> (bool, String, String) {
    // Async: the server runs on this test's runtime.
    let out = tokio::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(api.kubeconfig())
        .args(args)
        .output()
        .await
        .expect("kubectl is installed (scripts/install-deps.sh)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn kubectl_gets_pods() {
    let api = KubeApi::start().await.unwrap();
    pods::create(api.store(), pods::new_pod("web", "web-0")).unwrap();
    pods::create(api.store(), pods::new_pod("db", "db-0")).unwrap();
    let (ok, out, err) = kubectl(&api, &["get", "pods", "-n", "web"]).await;
    assert!(ok, "{err}");
    assert!(out.contains("web-0") && !out.contains("db-0"), "{out}");
    let (ok, out, err) = kubectl(&api, &["get", "pods", "-A", "-o", "name"]).await;
    assert!(ok, "{err}");
    assert_eq!(out, "pod/db-0\npod/web-0\n");
}

const MANIFEST: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: web-1
  namespace: web
  annotations:
    kcred.io/keytabs: HTTP/web.example.com
spec:
  securityContext:
    runAsUser: 1500
    runAsGroup: 1500
  containers:
  - name: app
    image: registry.example/app:1
"#;

#[tokio::test]
async fn kubectl_applies_a_pod_manifest() {
    let api = KubeApi::start().await.unwrap();
    let file = api.dir().join("pod.yaml");
    std::fs::write(&file, MANIFEST).unwrap();
    let apply = ["apply", "--validate=false", "-f", file.to_str().unwrap()];
    let (ok, out, err) = kubectl(&api, &apply).await;
    assert!(ok, "{err}");
    assert!(out.contains("pod/web-1 created"), "{out}");
    let pod: Pod = api.store().get("web", "web-1").expect("created");
    assert_eq!(
        pod.metadata.annotations.unwrap()["kcred.io/keytabs"],
        "HTTP/web.example.com"
    );
    let sc = pod.spec.unwrap().security_context.unwrap();
    assert_eq!(sc.run_as_user, Some(1500));

    // Applying a changed manifest patches the pod.
    std::fs::write(
        &file,
        MANIFEST.replace("HTTP/web.example.com", "HTTP/api.example.com"),
    )
    .unwrap();
    let (ok, out, err) = kubectl(&api, &apply).await;
    assert!(ok, "{err}");
    assert!(out.contains("pod/web-1 configured"), "{out}");
    let pod: Pod = api.store().get("web", "web-1").unwrap();
    assert_eq!(
        pod.metadata.annotations.unwrap()["kcred.io/keytabs"],
        "HTTP/api.example.com"
    );
}
