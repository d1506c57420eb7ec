//! A whole kcred deployment in one test: realm, controller, node driver.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use kcred_controller::metrics::Metrics;
use kcred_controller::pods::PodIndex;
use kcred_controller::{Config, Controller};
use kcred_csi_driver::DriverConfig;
use kcred_csi_driver::controller_client::{ControllerClient, NodeIdentity};
use kcred_csi_driver::csi::server;
use kcred_csi_driver::metrics::Metrics as DriverMetrics;
use kcred_csi_driver::volumes::VolumeManager;
use kcred_testrealm::{Realm, RealmOptions};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::kubelet::{Kubelet, TestPod};

/// The default test policy: `web` runs as websvc (owns two HTTP
/// principals), `db` as dbsvc (owns a postgres principal).
pub const DEFAULT_POLICY: &str = r#"
[[role_accounts]]
login = "websvc"
uid = 1500
gid = 1500
namespaces = ["web"]
service_principals = ["HTTP/web.example.com", "HTTP/api.example.com"]
certificates = ["web.example.com", "api.example.com"]
keys = ["orders-db"]
supplemental_gids = [3000]

[[role_accounts]]
login = "dbsvc"
uid = 1600
gid = 1600
namespaces = ["db"]
service_principals = ["postgres/db1.example.com"]
"#;

/// Principals the default stack creates in the realm (services, and the
/// role accounts' own principals for prestashed tickets).
pub const DEFAULT_PRINCIPALS: [&str; 5] = [
    "HTTP/web.example.com",
    "HTTP/api.example.com",
    "postgres/db1.example.com",
    "websvc",
    "dbsvc",
];

/// How to build a stack.
pub struct StackOptions {
    /// The node the driver runs as.
    pub node: String,
    /// Policy file content.
    pub policy: String,
    /// Principals to create in the realm.
    pub principals: Vec<String>,
    /// Extra controller config (TOML tables such as `[gate.kadmin]`).
    pub extra_config: String,
    /// Serve the controller's `/metrics` here.
    pub metrics_listen: Option<SocketAddr>,
    /// Extra top-level controller settings (before any table).
    pub top_config: String,
    /// The `[auth]` table (default: mode = "none", in-process nodes
    /// cannot hold Kerberos identities of their own).
    pub auth_config: String,
    /// Learn pods from the Kubernetes API this kubeconfig reaches. Without
    /// it the controller's pod source is an empty pods file, and tests
    /// feed the pod index directly ([`Stack::add_pod`]).
    pub kubeconfig: Option<PathBuf>,
    /// More settings of the `[kubernetes]` table (with `kubeconfig`).
    pub kubernetes_config: String,
    /// Serve this Active Directory realm instead of the MIT realm (which
    /// still runs, unused).
    pub active_directory: Option<DirectoryRealm>,
    /// Serve the admission webhook (`[webhook]`) on a loopback port, with
    /// a certificate from a CA of its own ([`Stack::webhook`]). (A
    /// `[webhook]` table in `extra_config` instead serves it with the
    /// `[tls]` certificate, whose CA `tls.ca_export_file` exports.)
    pub webhook: bool,
    /// Use a copy of this master key instead of a fresh one (a second
    /// controller on the same etcd store reads the first one's records).
    pub master_key_from: Option<PathBuf>,
    /// Where the nodes' side lives (the kubelet directory and the drivers'
    /// state directories); default: in the stack's own directory, beside
    /// the controller's store and audit log.
    pub node_dir: Option<PathBuf>,
}

/// An AD realm for the controller: its name, a `krb5.conf` reaching its
/// KDC, and the `[active_directory]` table.
#[derive(Debug, Clone)]
pub struct DirectoryRealm {
    /// The realm name.
    pub realm: String,
    /// Client configuration reaching the domain's KDC.
    pub krb5_conf: PathBuf,
    /// The `[active_directory]` table, header included.
    pub section: String,
    /// The policy comes from the directory (`section` has
    /// `[active_directory.sync]`): no `policy_file`.
    pub syncs_policy: bool,
}

impl Default for StackOptions {
    fn default() -> Self {
        StackOptions {
            node: "node-a".into(),
            policy: DEFAULT_POLICY.into(),
            principals: DEFAULT_PRINCIPALS.iter().map(|s| s.to_string()).collect(),
            extra_config: String::new(),
            metrics_listen: None,
            top_config: String::new(),
            auth_config: String::new(),
            kubeconfig: None,
            kubernetes_config: String::new(),
            active_directory: None,
            webhook: false,
            master_key_from: None,
            node_dir: None,
        }
    }
}

struct Running {
    stop: oneshot::Sender<()>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        self.task.await.context("server task")?
    }
}

/// A running realm, controller and driver.
pub struct Stack {
    /// The MIT realm.
    pub realm: Realm,
    /// Where everything lives (config, store, kubelet dir, sockets).
    pub dir: tempfile::TempDir,
    /// The nodes' side: `dir`, or [`StackOptions::node_dir`].
    node_dir: PathBuf,
    /// The kubelet stand-in connected to the driver.
    pub kubelet: Kubelet,
    /// The controller's config as written to disk.
    pub config: Config,
    controller_addr: SocketAddr,
    pods: Arc<PodIndex>,
    known_nodes: Arc<kcred_controller::nodes::known::KnownNodes>,
    metrics: Arc<Metrics>,
    // Weak: a stopped controller must release its store.
    state: std::sync::Weak<kcred_controller::state::ControllerState>,
    reload: kcred_controller::reload::ReloadTrigger,
    driver_metrics: Arc<kcred_csi_driver::metrics::Metrics>,
    webhook: Option<WebhookEndpoint>,
    controller: Option<Running>,
    driver: Option<Running>,
    background: Vec<JoinHandle<()>>,
}

/// Where the controller's admission webhook answers, and the CA its
/// certificate comes from (the webhook configurations' `caBundle`).
#[derive(Debug, Clone)]
pub struct WebhookEndpoint {
    /// `https://localhost:<port>`.
    pub url: String,
    /// The CA certificate (PEM).
    pub ca_pem: String,
}

/// Writes a CA-signed serving certificate for localhost into `dir`
/// (`webhook.crt`, `webhook.key`); returns the CA certificate.
fn webhook_certificate(dir: &Path) -> anyhow::Result<String> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "kcred test webhook CA");
    let ca = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate()?;
    let cert = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])?
        .signed_by(&key, &issuer)?;
    write(&dir.join("webhook.crt"), &cert.pem())?;
    write(&dir.join("webhook.key"), &key.serialize_pem())?;
    Ok(ca.pem())
}

fn write(path: &Path, content: &str) -> anyhow::Result<()> {
    std::fs::write(path, content).with_context(|| format!("write {}", path.display()))
}

impl Stack {
    /// Starts a realm with the default principals, a controller and a driver.
    pub async fn start(opts: StackOptions) -> anyhow::Result<Stack> {
        // The admin may also extract role accounts' keys (`login@REALM`),
        // which prestashed tickets are acquired with.
        let realm = Realm::start_with(RealmOptions {
            acl: vec![format!(
                "kcred/admin@{r} e *@{r}",
                r = kcred_testrealm::DEFAULT_REALM
            )],
            ..RealmOptions::default()
        })?;
        for p in &opts.principals {
            realm.add_principal(p)?;
        }
        let dir = tempfile::tempdir()?;
        let d = dir.path();
        match &opts.master_key_from {
            Some(key) => {
                std::fs::copy(key, d.join("master.key"))?;
            }
            None => {
                kcred_controller::crypto::MasterKey::generate_file(&d.join("master.key"))?;
            }
        }
        write(&d.join("policy.toml"), &opts.policy)?;
        let listener = kcred_controller::listener::bind(([127, 0, 0, 1], 0).into())?;
        let controller_addr = listener.local_addr()?;
        let (pods_file, kubernetes) = match &opts.kubeconfig {
            Some(k) => (
                String::new(),
                format!(
                    "[kubernetes]\nkubeconfig = \"{}\"\n{}",
                    k.display(),
                    opts.kubernetes_config
                ),
            ),
            None => {
                write(&d.join("pods.toml"), "")?;
                (
                    format!("pods_file = \"{}/pods.toml\"", d.display()),
                    String::new(),
                )
            }
        };
        let (webhook_config, webhook_ca) = if opts.webhook {
            let ca = webhook_certificate(d)?;
            (
                format!(
                    "[webhook]\nlisten = \"127.0.0.1:0\"\ncert_file = \"{d}/webhook.crt\"\nkey_file = \"{d}/webhook.key\"",
                    d = d.display()
                ),
                Some(ca),
            )
        } else {
            (String::new(), None)
        };
        let config_text = format!(
            r#"
listen = "{controller_addr}"
realm = "{realm_name}"
{kdcs}
krb5_config = "{krb5}"
master_key_file = "{d}/master.key"
store_path = "{d}/store.redb"
{policy_file}
audit_log = "{d}/audit.log"
audit_key = "{d}/audit.key"
reload_interval_secs = 1
{pods_file}
{metrics}
{top}

[kadmin]
principal = "{admin}"
keytab = "{admin_keytab}"
work_dir = "{d}/extract"
timeout_secs = 10

# Every simulated node connects from 127.0.0.1 and all start at once: like
# nodes behind one NAT address, they need more than the default allowance
# of unauthenticated connections per source.
[limits]
max_unauthenticated_per_source = 4096
# Load tests connect as one node many times at once.
max_connections_per_node = 1024

{auth}

{kubernetes}

{directory}
{webhook_config}

{extra}
"#,
            policy_file = if opts
                .active_directory
                .as_ref()
                .is_some_and(|ad| ad.syncs_policy)
            {
                String::new()
            } else {
                format!("policy_file = \"{}/policy.toml\"", d.display())
            },
            directory = opts
                .active_directory
                .as_ref()
                .map(|ad| ad.section.clone())
                .unwrap_or_default(),
            extra = opts.extra_config,
            auth = if opts.auth_config.is_empty() {
                "[auth]\nmode = \"none\"".to_string()
            } else {
                opts.auth_config.clone()
            },
            top = opts.top_config,
            // The served realm's KDCs (named in the krb5.conf of volumes
            // with credentials of several realms, `[[realms]]` in
            // `extra_config`).
            kdcs = match &opts.active_directory {
                Some(_) => String::new(),
                None => format!("kdcs = [\"{}\"]", realm.kdc_addr()),
            },
            metrics = opts
                .metrics_listen
                .map(|a| format!("metrics_listen = \"{a}\""))
                .unwrap_or_default(),
            realm_name = opts
                .active_directory
                .as_ref()
                .map_or(realm.name(), |ad| ad.realm.as_str()),
            krb5 = opts
                .active_directory
                .as_ref()
                .map_or(realm.krb5_conf_path(), |ad| ad.krb5_conf.clone())
                .display(),
            d = d.display(),
            admin = realm.admin_principal(),
            admin_keytab = realm.admin_keytab().display(),
        );
        write(&d.join("controller.toml"), &config_text)?;
        let config = Config::load(&d.join("controller.toml"))?;

        let node_dir = opts.node_dir.clone().unwrap_or_else(|| d.to_path_buf());
        let kubelet_dir = node_dir.join("kubelet");
        std::fs::create_dir_all(kubelet_dir.join("pods"))?;
        let socket = d.join("csi/csi.sock");
        let driver_cfg = DriverConfig {
            driver_name: kcred_csi_driver::config::DEFAULT_DRIVER_NAME.into(),
            node_id: opts.node.clone(),
            kubelet_dir: kubelet_dir.clone(),
            state_dir: node_dir.join("driver-state"),
            controller_endpoint: format!("http://{controller_addr}"),
            tmpfs_size_bytes: 1024 * 1024,
            pod_token_audience: kcred_csi_driver::config::DEFAULT_POD_TOKEN_AUDIENCE.into(),
        };
        let client = ControllerClient::new(&driver_cfg.controller_endpoint, &driver_cfg.node_id)?;
        let volumes = Arc::new(VolumeManager::for_node(
            &driver_cfg,
            client,
            DriverMetrics::new(),
        )?);
        let driver_metrics = volumes.metrics();
        let background = vec![tokio::spawn(
            Arc::clone(&volumes).run_background(std::time::Duration::from_secs(1)),
        )];
        let unix = server::bind(&socket)?;
        let (stop, rx) = oneshot::channel();
        let task = tokio::spawn(async move {
            server::serve(driver_cfg, volumes, unix, async {
                let _ = rx.await;
            })
            .await
            .map_err(anyhow::Error::from)
        });
        let driver = Running { stop, task };

        let controller = Controller::start(&config)?;
        let exported_ca = || {
            let path = config.tls.as_ref()?.ca_export_file.as_ref()?;
            std::fs::read_to_string(path).ok()
        };
        let webhook = controller.webhook_addr().map(|addr| WebhookEndpoint {
            url: format!("https://localhost:{}", addr.port()),
            ca_pem: webhook_ca.or_else(exported_ca).unwrap_or_default(),
        });
        let pods = controller.pods();
        let known_nodes = controller.known_nodes();
        let metrics = controller.metrics();
        let state = Arc::downgrade(&controller.state());
        let reload = controller.reload_trigger();
        let controller = Self::spawn_controller(controller, listener);
        let kubelet = Kubelet::connect(&socket, &kubelet_dir).await?;
        Ok(Stack {
            realm,
            dir,
            node_dir,
            kubelet,
            config,
            controller_addr,
            pods,
            known_nodes,
            metrics,
            state,
            reload,
            driver_metrics,
            webhook,
            controller: Some(controller),
            driver: Some(driver),
            background,
        })
    }

    fn spawn_controller(controller: Controller, listener: tokio::net::TcpListener) -> Running {
        let (stop, rx) = oneshot::channel();
        let task = tokio::spawn(async move {
            controller
                .serve(listener, async {
                    let _ = rx.await;
                })
                .await
                .map_err(anyhow::Error::from)
        });
        Running { stop, task }
    }

    /// The nodes the running controller knows from the node watch.
    pub fn known_nodes(&self) -> Arc<kcred_controller::nodes::known::KnownNodes> {
        Arc::clone(&self.known_nodes)
    }

    /// The running controller's pod view.
    pub fn pods(&self) -> Arc<PodIndex> {
        Arc::clone(&self.pods)
    }

    /// Tells the controller about a pod (what the Kubernetes watch does).
    pub fn add_pod(&self, pod: &TestPod) {
        self.pods.upsert(pod.info());
    }

    /// Stops the controller; its store stays on disk.
    pub async fn stop_controller(&mut self) -> anyhow::Result<()> {
        if let Some(c) = self.controller.take() {
            c.stop().await?;
        }
        Ok(())
    }

    /// Starts a fresh controller on the same address, store and config
    /// (after `edit`), and feeds it `pods`.
    pub async fn start_controller(
        &mut self,
        edit: impl FnOnce(&mut Config),
        pods: &[&TestPod],
    ) -> anyhow::Result<()> {
        let mut cfg = self.config.clone();
        edit(&mut cfg);
        let controller = Controller::start(&cfg)?;
        self.pods = controller.pods();
        self.known_nodes = controller.known_nodes();
        self.metrics = controller.metrics();
        self.state = Arc::downgrade(&controller.state());
        self.reload = controller.reload_trigger();
        for p in pods {
            self.add_pod(p);
        }
        let listener = kcred_controller::listener::bind(self.controller_addr)?;
        self.controller = Some(Self::spawn_controller(controller, listener));
        Ok(())
    }

    /// What `SIGHUP` does to a controller process: reload its files and
    /// sync the directory now.
    pub fn reload(&self) {
        self.reload.fire();
    }

    /// The running controller's state (to call what the admin API
    /// calls); `None` once it has stopped.
    pub fn state(&self) -> Option<Arc<kcred_controller::state::ControllerState>> {
        self.state.upgrade()
    }

    /// The controller's admission webhook (with [`StackOptions::webhook`]).
    pub fn webhook(&self) -> Option<&WebhookEndpoint> {
        self.webhook.as_ref()
    }

    /// The running controller's metrics.
    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.metrics)
    }

    /// The node driver's metrics, rendered.
    pub fn driver_metrics(&self) -> String {
        self.driver_metrics.render()
    }

    /// The controller's node API endpoint.
    pub fn controller_endpoint(&self) -> String {
        format!("http://{}", self.controller_addr)
    }

    /// A volume manager acting as another node (its own node id and state
    /// directory, the same kubelet directory): a simulated node.
    pub fn simulated_node(&self, node: &str) -> anyhow::Result<VolumeManager> {
        self.simulated_node_with(node, NodeIdentity::none())
    }

    /// A simulated node whose calls carry `identity`.
    pub fn simulated_node_with(
        &self,
        node: &str,
        identity: NodeIdentity,
    ) -> anyhow::Result<VolumeManager> {
        let cfg = DriverConfig {
            driver_name: kcred_csi_driver::config::DEFAULT_DRIVER_NAME.into(),
            node_id: node.to_string(),
            kubelet_dir: self.kubelet_dir(),
            state_dir: self.node_dir.join("nodes").join(node),
            controller_endpoint: self.controller_endpoint(),
            tmpfs_size_bytes: 64 * 1024,
            pod_token_audience: kcred_csi_driver::config::DEFAULT_POD_TOKEN_AUDIENCE.into(),
        };
        let client = ControllerClient::with_identity(&cfg.controller_endpoint, node, identity)?;
        Ok(VolumeManager::for_node(&cfg, client, DriverMetrics::new())?)
    }

    /// The kubelet root directory.
    pub fn kubelet_dir(&self) -> PathBuf {
        self.node_dir.join("kubelet")
    }

    /// Stops the driver and the controller.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        if let Some(d) = self.driver.take() {
            d.stop().await?;
        }
        self.stop_controller().await
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        for task in &self.background {
            task.abort();
        }
        // A failed test must not leave tmpfs mounts under the temp dir.
        crate::unmount_volumes(&self.kubelet_dir());
    }
}
