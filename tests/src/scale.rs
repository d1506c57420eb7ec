//! The scale simulation's parts (`tests/benches/scale.rs`): one real
//! controller process (MIT realm, kadmind behind the KDC budget, TLS,
//! audit, the embedded store, a pods file) and thousands of simulated
//! nodes in the calling process.
//!
//! Each simulated node speaks the real node API (`FetchBundle`,
//! `Heartbeat`, through the driver's own [`ControllerClient`]) over its own
//! TLS connection and proves its name with a client certificate (mTLS,
//! `tls.client_ca_file`): ten thousand certificates are cheap to make,
//! where ten thousand Kerberos principals and keytabs are not, and the
//! controller checks a certificate as it checks any node's (its chain to
//! the client CA, its DNS name against the node name). A simulated node
//! mounts nothing: a fetch is the controller's side of a publish.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use kcred_csi_driver::controller_client::{ControllerClient, NodeIdentity};
use kcred_proto::kcred::v1::PodRef;
use kcred_testrealm::{Realm, RealmOptions};

use crate::procs::{CONTROLLER_HOST, Proc, binary};

/// The simulation's shape and the KDC budget.
#[derive(Debug, Clone)]
pub struct ScaleConfig {
    /// Simulated nodes.
    pub nodes: usize,
    /// Pods, spread evenly over the nodes, one volume each.
    pub pods: usize,
    /// Distinct service principals the pods ask for.
    pub credentials: usize,
    /// kadmind budget: operations per second.
    pub rate: u32,
    /// kadmind budget: burst.
    pub burst: u32,
    /// How often each node heartbeats.
    pub heartbeat_every: Duration,
}

/// One pod's volume as its node asks for it.
#[derive(Debug, Clone)]
pub struct SimVolume {
    /// The pod.
    pub pod: PodRef,
    /// Its volume id.
    pub volume_id: String,
}

/// A simulated node: its name, its client, its pods' volumes.
#[derive(Clone)]
pub struct SimNode {
    /// The node name (its certificate's DNS name).
    pub name: String,
    /// The driver's client, over the node's own TLS connection.
    pub client: ControllerClient,
    /// The volumes of the pods bound to it.
    pub volumes: Vec<SimVolume>,
}

/// How long each part of the set-up took.
#[derive(Debug, Clone, Default)]
pub struct SetupTimes {
    /// Realm and its principals.
    pub realm: Duration,
    /// Node certificates.
    pub certificates: Duration,
    /// Controller start (the pods file read included).
    pub controller: Duration,
}

/// The controller, its realm, and the simulated nodes' identities.
pub struct ScaleStack {
    /// The realm.
    pub realm: Realm,
    /// Everything on disk.
    pub dir: tempfile::TempDir,
    /// The controller's port.
    pub port: u16,
    /// The controller process.
    pub controller: Proc,
    /// The service principals, by credential index.
    pub principals: Vec<String>,
    /// What set-up took.
    pub setup: SetupTimes,
    nodes: Vec<SimNode>,
}

const NAMESPACE: &str = "scale";
const UID: u32 = 2100;

/// The name of node `i`.
pub fn node_name(i: usize) -> String {
    format!("n{i}.nodes.kcred.test")
}

fn principal(i: usize) -> String {
    format!("HTTP/svc{i}.scale.kcred.test")
}

fn pod_uid(j: usize) -> String {
    format!("00000000-0000-4000-8000-{j:012}")
}

fn volume_id(j: usize) -> String {
    format!("csi-scale-{j:08}")
}

/// Adds principals through one `kadmin.local` reading its requests from
/// stdin (one process, not one per principal).
fn add_principals(realm: &Realm, principals: &[String]) -> anyhow::Result<()> {
    let mut child = realm
        .command("kadmin.local")
        .args(["-r", realm.name()])
        .env("LC_ALL", "C")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("kadmin.local")?;
    {
        let mut stdin = child.stdin.take().context("kadmin.local stdin")?;
        for p in principals {
            writeln!(stdin, "addprinc -randkey -maxrenewlife 7d {p}")?;
        }
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "kadmin.local: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The client CA (certificate PEM) and every node's certificate, all for
/// one key (a simulation's shortcut: the controller checks each
/// certificate's chain and DNS name, which are each node's own).
fn node_certificates(nodes: usize) -> anyhow::Result<(String, String, Vec<String>)> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "kcred scale simulation nodes");
    let ca = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate()?;
    let mut certs = Vec::with_capacity(nodes);
    for i in 0..nodes {
        let name = node_name(i);
        let mut params = CertificateParams::new(vec![name.clone()])?;
        params.distinguished_name.push(DnType::CommonName, name);
        certs.push(params.signed_by(&key, &issuer)?.pem());
    }
    Ok((ca.pem(), key.serialize_pem(), certs))
}

fn write_policy(dir: &Path, principals: &[String]) -> anyhow::Result<()> {
    let owned = principals
        .iter()
        .map(|p| format!("{p:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    std::fs::write(
        dir.join("policy.toml"),
        format!(
            "[[role_accounts]]\nlogin = \"scale\"\nuid = {UID}\ngid = {UID}\nnamespaces = [\"{NAMESPACE}\"]\nservice_principals = [{owned}]\n"
        ),
    )?;
    Ok(())
}

fn write_pods(dir: &Path, cfg: &ScaleConfig, principals: &[String]) -> anyhow::Result<()> {
    let mut text = String::with_capacity(cfg.pods * 200);
    for j in 0..cfg.pods {
        text.push_str(&format!(
            "[[pods]]\nnamespace = \"{NAMESPACE}\"\nname = \"p{j}\"\nuid = \"{}\"\nnode_name = \"{}\"\nrun_as_user = {UID}\nrun_as_group = {UID}\n[pods.annotations]\n\"kcred.io/keytabs\" = \"{}\"\n",
            pod_uid(j),
            node_name(j % cfg.nodes),
            principals[j % principals.len()],
        ));
    }
    std::fs::write(dir.join("pods.toml"), text)?;
    Ok(())
}

fn config(dir: &Path, realm: &Realm, port: u16, cfg: &ScaleConfig) -> String {
    let r = realm.name();
    format!(
        r#"listen = "127.0.0.1:{port}"
realm = "{r}"
krb5_config = "{krb5}"
master_key_file = "{d}/master.key"
store_path = "{d}/store.redb"
policy_file = "{d}/policy.toml"
pods_file = "{d}/pods.toml"
audit_log = "{d}/audit.log"
audit_key = "{d}/audit.key"
# The pods file is written once: no periodic re-read during the run.
reload_interval_secs = 3600

[kadmin]
principal = "kcred/admin@{r}"
keytab = "{admin}"
work_dir = "{d}/extract"
timeout_secs = 30

[auth]
mode = "kerberos"
keytab = "{d}/kcred_{host}.keytab"
replay_cache = "{d}/replay.rcache2"

[tls]
names = ["{host}"]
ca_export_file = "{d}/ca.crt"
client_ca_file = "{d}/nodes-ca.crt"

[leases]
ttl_secs = {ttl}
heartbeat_secs = {hb}

[limits]
max_connections = {conns}

[gate.kadmin]
rate_per_sec = {rate}
burst = {burst}
"#,
        krb5 = realm.krb5_conf_path().display(),
        d = dir.display(),
        admin = realm.admin_keytab().display(),
        host = CONTROLLER_HOST,
        ttl = cfg.heartbeat_every.as_secs().max(1) * 6,
        hb = cfg.heartbeat_every.as_secs().max(1),
        conns = cfg.nodes + 1024,
        rate = cfg.rate,
        burst = cfg.burst,
    )
}

impl ScaleStack {
    /// Starts the realm (with `cfg.credentials` service principals), writes
    /// the policy and `cfg.pods` pods, makes the nodes' certificates and
    /// starts the controller.
    pub async fn start(cfg: &ScaleConfig) -> anyhow::Result<ScaleStack> {
        let t = Instant::now();
        let r = kcred_testrealm::DEFAULT_REALM;
        let realm = Realm::start_with(RealmOptions {
            acl: vec![format!("kcred/admin@{r} e *@{r}")],
            ..RealmOptions::default()
        })?;
        let principals: Vec<String> = (0..cfg.credentials).map(principal).collect();
        let mut all = principals.clone();
        all.push(format!("kcred/{CONTROLLER_HOST}"));
        add_principals(&realm, &all)?;
        let dir = tempfile::tempdir()?;
        let d = dir.path().to_path_buf();
        realm.extract_keytab(
            &format!("kcred/{CONTROLLER_HOST}"),
            &d.join(format!("kcred_{CONTROLLER_HOST}.keytab")),
        )?;
        let realm_time = t.elapsed();

        let t = Instant::now();
        let (ca, key, certs) = node_certificates(cfg.nodes)?;
        std::fs::write(d.join("nodes-ca.crt"), &ca)?;
        let certificates = t.elapsed();

        let status = Command::new(binary("kcred-controller"))
            .arg("generate-master-key")
            .arg(d.join("master.key"))
            .output()?;
        if !status.status.success() {
            bail!(
                "generate-master-key: {}",
                String::from_utf8_lossy(&status.stderr)
            );
        }
        write_policy(&d, &principals)?;
        write_pods(&d, cfg, &principals)?;
        let port = kcred_testports::tcp()?;
        std::fs::write(d.join("controller.toml"), config(&d, &realm, port, cfg))?;

        let t = Instant::now();
        let mut cmd = Command::new(binary("kcred-controller"));
        cmd.args(["serve", "--config"])
            .arg(d.join("controller.toml"))
            .env("RUST_LOG", "info");
        let controller = Proc::spawn(cmd, &d.join("controller.log"))?;
        let deadline = Instant::now() + Duration::from_secs(600);
        while !d.join("ca.crt").exists() || !controller.log_text().contains("serving node API") {
            if Instant::now() > deadline {
                bail!("controller did not start: {}", controller.log_text());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let controller_time = t.elapsed();

        let server_ca = std::fs::read(d.join("ca.crt"))?;
        let endpoint = format!("https://127.0.0.1:{port}");
        let mut nodes: Vec<SimNode> = Vec::with_capacity(cfg.nodes);
        for (i, cert) in certs.iter().enumerate() {
            let tls = tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(&server_ca))
                .domain_name(CONTROLLER_HOST)
                .identity(tonic::transport::Identity::from_pem(cert, &key));
            let name = node_name(i);
            let client =
                ControllerClient::connect(&endpoint, &name, NodeIdentity::none(), Some(tls))?;
            nodes.push(SimNode {
                name,
                client,
                volumes: Vec::new(),
            });
        }
        for j in 0..cfg.pods {
            nodes[j % cfg.nodes].volumes.push(SimVolume {
                pod: PodRef {
                    namespace: NAMESPACE.into(),
                    name: format!("p{j}"),
                    uid: pod_uid(j),
                    service_account: "default".into(),
                },
                volume_id: volume_id(j),
            });
        }
        Ok(ScaleStack {
            realm,
            dir,
            port,
            controller,
            principals,
            setup: SetupTimes {
                realm: realm_time,
                certificates,
                controller: controller_time,
            },
            nodes,
        })
    }

    /// The simulated nodes.
    pub fn nodes(&self) -> &[SimNode] {
        &self.nodes
    }

    /// The controller's pid.
    pub fn controller_pid(&self) -> anyhow::Result<i32> {
        self.controller
            .pid()
            .map(|p| p.as_raw())
            .context("controller not running")
    }
}
