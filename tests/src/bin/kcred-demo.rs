//! The kcred demo: a throwaway MIT realm, a Kubernetes API server
//! (`kcred-testkube`), the real `kcred-controller` and `kcred-csi-driver`
//! processes. A pod manifest annotated `kcred.io/keytabs:
//! "HTTP/web.example.com"` is applied with `kubectl`, goes through the
//! controller's admission webhook (which adds the volume, its mount and
//! `KRB5_KTNAME`), is bound to a node, the kubelet stand-in publishes its
//! volume, and `kinit` proves the keytab `KRB5_KTNAME` names. Run it
//! through `scripts/demo.sh`.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use base64::Engine;
use k8s_openapi::api::core::v1::{Node, Pod};
use kcred_testkube::{KubeApi, pods};
use kcred_tests::{Kubelet, Realm, TestPod};

const NODE: &str = "demo-node";
const PRINCIPAL: &str = "HTTP/web.example.com";
/// The name in the controller's certificate (node API and webhook).
const HOST: &str = "localhost";
/// Where the webhook mounts the volume in the pod's containers.
const MOUNT: &str = "/var/run/kcred";

/// Kills a child process when the demo ends, however it ends.
struct Proc(Child, &'static str);

impl Drop for Proc {
    fn drop(&mut self) {
        if self.0.kill().is_ok() {
            let _ = self.0.wait();
            println!("stopped {}", self.1);
        }
    }
}

fn sibling_binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let path = exe.with_file_name(name);
    if !path.exists() {
        bail!(
            "{} not found: build the workspace first (cargo build --workspace --bins)",
            path.display()
        );
    }
    Ok(path)
}

fn step(title: &str) {
    println!("\n\x1b[1m==> {title}\x1b[0m");
}

fn show(realm: &Realm, program: &str, args: &[&str]) -> anyhow::Result<bool> {
    println!("$ {program} {}", args.join(" "));
    let out = realm
        .command(program)
        .args(args)
        .output()
        .with_context(|| program.to_string())?;
    print!("{}", String::from_utf8_lossy(&out.stdout));
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    Ok(out.status.success())
}

fn wait_for(what: &str, mut ready: impl FnMut() -> bool, log: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if ready() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let tail = std::fs::read_to_string(log).unwrap_or_default();
    bail!("{what} did not come up; its log:\n{tail}")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("the demo mounts tmpfs: run it as root");
    }
    let controller_bin = sibling_binary("kcred-controller")?;
    let driver_bin = sibling_binary("kcred-csi-driver")?;

    step("Starting a throwaway MIT Kerberos realm on loopback");
    let realm = Realm::start()?;
    realm.add_principal(PRINCIPAL)?;
    println!(
        "realm {} (KDC {}, kadmind {}), principal {PRINCIPAL}@{} created with a random key (kvno {})",
        realm.name(),
        realm.kdc_addr(),
        realm.kadmind_addr(),
        realm.name(),
        realm.kvno(PRINCIPAL)?
    );

    let dir = tempfile::tempdir()?;
    let d = dir.path();

    step("Starting a Kubernetes API server for the demo (kcred-testkube: HTTPS, kubeconfig)");
    let api = KubeApi::start().await?;
    println!(
        "API server {}; kubeconfig {}",
        api.url(),
        api.kubeconfig().display()
    );
    let mut node = Node::default();
    node.metadata.name = Some(NODE.into());
    api.store().create(node)?;
    println!("node {NODE} registered");

    step("Configuring the controller (master key, policy, Kubernetes API, TLS, webhook)");
    let status = Command::new(&controller_bin)
        .arg("generate-master-key")
        .arg(d.join("master.key"))
        .status()?;
    if !status.success() {
        bail!("generate-master-key failed");
    }
    let (port, webhook_port) = (kcred_testports::tcp()?, kcred_testports::tcp()?);
    std::fs::write(
        d.join("policy.toml"),
        "[[role_accounts]]\nlogin = \"websvc\"\nuid = 1500\ngid = 1500\nnamespaces = [\"web\"]\nservice_principals = [\"HTTP/web.example.com\"]\n",
    )?;
    std::fs::write(
        d.join("controller.toml"),
        format!(
            "listen = \"127.0.0.1:{port}\"\nrealm = \"{}\"\nkrb5_config = \"{}\"\nmaster_key_file = \"{d}/master.key\"\nstore_path = \"{d}/store.redb\"\npolicy_file = \"{d}/policy.toml\"\naudit_log = \"{d}/audit.log\"\naudit_key = \"{d}/audit.key\"\n\n[kadmin]\nprincipal = \"{}\"\nkeytab = \"{}\"\nwork_dir = \"{d}/extract\"\n\n[auth]\nmode = \"none\"\n\n[kubernetes]\nkubeconfig = \"{}\"\n\n[tls]\nnames = [\"{HOST}\"]\nca_export_file = \"{d}/ca.crt\"\n\n[webhook]\nlisten = \"127.0.0.1:{webhook_port}\"\n",
            realm.name(),
            realm.krb5_conf_path().display(),
            realm.admin_principal(),
            realm.admin_keytab().display(),
            api.kubeconfig().display(),
            d = d.display()
        ),
    )?;
    for f in ["policy.toml", "controller.toml"] {
        println!(
            "--- {f}\n{}",
            std::fs::read_to_string(d.join(f))?.trim_end()
        );
    }

    step("Starting kcred-controller (node API and admission webhook over TLS)");
    let clog = d.join("controller.log");
    let _controller = Proc(
        Command::new(&controller_bin)
            .args(["serve", "--config"])
            .arg(d.join("controller.toml"))
            .stdout(Stdio::from(std::fs::File::create(&clog)?))
            .stderr(Stdio::from(std::fs::File::create(&clog)?.try_clone()?))
            .spawn()?,
        "controller",
    );
    wait_for(
        "kcred-controller",
        || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
                && TcpStream::connect(("127.0.0.1", webhook_port)).is_ok()
                && d.join("ca.crt").exists()
        },
        &clog,
    )?;
    println!(
        "node API https://{HOST}:{port}, webhook https://{HOST}:{webhook_port}, CA {d}/ca.crt",
        d = d.display()
    );

    step("Registering the webhook with the API server (kubectl apply)");
    let ca = base64::engine::general_purpose::STANDARD.encode(std::fs::read(d.join("ca.crt"))?);
    let webhooks = d.join("webhooks.yaml");
    std::fs::write(
        &webhooks,
        webhook_configurations(&format!("https://{HOST}:{webhook_port}"), &ca),
    )?;
    if !kubectl(
        &api,
        &[
            "apply",
            "--validate=false",
            "-f",
            &webhooks.to_string_lossy(),
        ],
    )? {
        bail!("kubectl apply of the webhook configurations failed");
    }

    step("A typo is refused at kubectl apply time");
    let typo = d.join("typo.yaml");
    std::fs::write(&typo, pod_manifest("kcred.io/keytab"))?;
    println!("--- typo.yaml (kcred.io/keytab)");
    if kubectl(
        &api,
        &["apply", "--validate=false", "-f", &typo.to_string_lossy()],
    )? {
        bail!("the webhook let a misspelt annotation through");
    }

    step("The pod, as the application team writes it: one annotation, no volume");
    let manifest = d.join("web-0.yaml");
    std::fs::write(&manifest, pod_manifest("kcred.io/keytabs"))?;
    println!("{}", std::fs::read_to_string(&manifest)?.trim_end());
    if !kubectl(
        &api,
        &[
            "apply",
            "--validate=false",
            "-f",
            &manifest.to_string_lossy(),
        ],
    )? {
        bail!("kubectl apply of the pod failed");
    }
    println!("what the webhook added:");
    kubectl(
        &api,
        &[
            "get",
            "pod",
            "-n",
            "web",
            "web-0",
            "-o",
            "jsonpath=  volumes: {.spec.volumes}{\"\\n\"}  mounts:  {.spec.containers[0].volumeMounts}{\"\\n\"}  env:     {.spec.containers[0].env}{\"\\n\"}",
        ],
    )?;
    let stored: Pod = api
        .store()
        .get("web", "web-0")
        .context("the pod was not stored")?;
    let spec = stored.spec.clone().unwrap_or_default();
    let volume = spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.csi.as_ref().is_some_and(|c| c.driver == "csi.kcred.io"))
        .context("the webhook added no kcred volume")?
        .clone();
    let env = |name: &str| {
        spec.containers[0]
            .env
            .iter()
            .flatten()
            .find(|e| e.name == name)
            .and_then(|e| e.value.clone())
    };
    let ktname = env("KRB5_KTNAME").context("the webhook set no KRB5_KTNAME")?;

    step("The scheduler binds the pod to a node");
    pods::bind(api.store(), "web", "web-0", NODE)?;
    pods::set_phase(api.store(), "web", "web-0", "Running")?;
    println!(
        "pod web/web-0 (uid {}) -> node {NODE}",
        stored.metadata.uid.clone().unwrap_or_default()
    );

    step("Starting kcred-csi-driver on that node (CSI on a unix socket)");
    let kubelet_dir = d.join("kubelet");
    std::fs::create_dir_all(kubelet_dir.join("pods"))?;
    let socket = d.join("csi/csi.sock");
    let dlog = d.join("driver.log");
    let _driver = Proc(
        Command::new(&driver_bin)
            .arg("--endpoint")
            .arg(&socket)
            .args([
                "--node-id",
                NODE,
                "--controller",
                &format!("https://127.0.0.1:{port}"),
                "--tls-server-name",
                HOST,
            ])
            .arg("--ca-file")
            .arg(d.join("ca.crt"))
            .arg("--kubelet-dir")
            .arg(&kubelet_dir)
            .arg("--state-dir")
            .arg(d.join("driver-state"))
            .stdout(Stdio::from(std::fs::File::create(&dlog)?))
            .stderr(Stdio::from(std::fs::File::create(&dlog)?.try_clone()?))
            .spawn()?,
        "driver",
    );
    wait_for("kcred-csi-driver", || socket.exists(), &dlog)?;
    println!("serving CSI on {}", socket.display());

    step("Kubelet publishes the pod's inline CSI volume (NodePublishVolume)");
    let kubelet =
        Kubelet::connect_when_ready(&socket, &kubelet_dir, std::time::Duration::from_secs(20))
            .await?;
    let mut pod = TestPod::new("web", "web-0", NODE);
    pod.uid = stored.metadata.uid.clone().unwrap_or_default();
    let readonly = volume.csi.as_ref().and_then(|c| c.read_only) == Some(true);
    // Like kubelet, retry until the controller's watch has seen the binding.
    let deadline = Instant::now() + Duration::from_secs(30);
    let target = loop {
        let mut req = kubelet.publish_request(&pod, &volume.name);
        req.readonly = readonly;
        let target = PathBuf::from(&req.target_path);
        match kubelet.node().node_publish_volume(req).await {
            Ok(_) => break target,
            Err(e) if Instant::now() < deadline => {
                println!("  not yet: {}", e.message());
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e).context("NodePublishVolume"),
        }
    };
    println!(
        "volume {:?} of pod web/web-0 mounted at\n  {} (the container sees {})",
        volume.name,
        target.display(),
        MOUNT
    );
    let mounts = std::fs::read_to_string("/proc/self/mounts")?;
    for line in mounts
        .lines()
        .filter(|l| l.contains(&*target.to_string_lossy()))
    {
        println!("  mount: {line}");
    }
    println!("$ ls -la {}", target.display());
    let _ = Command::new("ls").arg("-la").arg(&target).status();

    step("Proving the keytab KRB5_KTNAME names with the real MIT tools");
    let keytab = target.join(
        ktname
            .strip_prefix(&format!("{MOUNT}/"))
            .context("KRB5_KTNAME outside the mount")?,
    );
    println!("KRB5_KTNAME={ktname} -> {}", keytab.display());
    show(&realm, "klist", &["-k", "-e", &keytab.to_string_lossy()])?;
    let ok = show(
        &realm,
        "kinit",
        &["-k", "-t", &keytab.to_string_lossy(), PRINCIPAL],
    )?;
    show(&realm, "klist", &[])?;
    println!(
        "KDC kvno of {PRINCIPAL} is still {} (keys were extracted, not randomized)",
        realm.kvno(PRINCIPAL)?
    );

    step("Kubelet unpublishes the volume (NodeUnpublishVolume)");
    kubelet
        .unpublish(&pod, &volume.name)
        .await
        .context("NodeUnpublishVolume")?;
    println!(
        "{} exists afterwards: {}",
        target.display(),
        target.exists()
    );

    if ok {
        println!(
            "\n\x1b[1;32mDEMO OK: a pod applied with kubectl went through kcred's webhook, got its volume on its node, and kinit accepted the delivered keytab.\x1b[0m"
        );
        Ok(())
    } else {
        bail!("kinit with the delivered keytab failed")
    }
}

/// The webhook configurations, calling the controller by URL.
fn webhook_configurations(url: &str, ca: &str) -> String {
    let one = |kind: &str, name: &str| {
        format!(
            "apiVersion: admissionregistration.k8s.io/v1\nkind: {kind}WebhookConfiguration\nmetadata:\n  name: kcred-{name}\nwebhooks:\n  - name: {name}.pods.kcred.io\n    admissionReviewVersions: [\"v1\"]\n    sideEffects: None\n    failurePolicy: Fail\n    clientConfig:\n      url: \"{url}/{name}-pods\"\n      caBundle: \"{ca}\"\n    rules:\n      - operations: [\"CREATE\"]\n        apiGroups: [\"\"]\n        apiVersions: [\"v1\"]\n        resources: [\"pods\"]\n"
        )
    };
    one("Mutating", "mutate") + "---\n" + &one("Validating", "validate")
}

/// The demo pod, asking for the keytab under `key`.
fn pod_manifest(key: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web-0\n  namespace: web\n  annotations:\n    {key}: \"{PRINCIPAL}\"\nspec:\n  securityContext:\n    runAsUser: 1500\n    runAsGroup: 1500\n  containers:\n    - name: web\n      image: registry.example/web:1\n"
    )
}

/// Runs kubectl against the demo's API server, showing the command and
/// its output; returns whether it succeeded.
fn kubectl(api: &KubeApi, args: &[&str]) -> anyhow::Result<bool> {
    println!("$ kubectl {}", args.join(" "));
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(api.kubeconfig())
        .args(args)
        .output()
        .context("kubectl (scripts/install-deps.sh installs it)")?;
    print!("{}", String::from_utf8_lossy(&out.stdout));
    print!("{}", String::from_utf8_lossy(&out.stderr));
    Ok(out.status.success())
}
