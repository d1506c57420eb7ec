//! kcred as it runs in production, in one test: the real
//! `kcred-controller` and `kcred-csi-driver` processes, Kerberos identities
//! for the controller, the nodes and the people (operator, auditor), TLS
//! with the controller's own CA, and `kcredctl` as operators run it.
//! Processes can be killed (`kill -9`), paused and restarted.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use kcred_testrealm::{Realm, RealmOptions};

use crate::kubelet::{Kubelet, TestPod};

/// The controller's TLS name and service principal host.
pub const CONTROLLER_HOST: &str = "controller.kcred.test";
/// Operator and auditor principals.
pub const OPERATOR: &str = "alice";
/// The auditor.
pub const AUDITOR: &str = "bob";

/// A binary of this workspace, built next to the test executable.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    // target/debug/deps/<test> -> target/debug/<name>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` first (scripts/test.sh does)",
        path.display()
    );
    path
}

/// A child process killed (and reaped) on drop.
pub struct Proc {
    child: Option<Child>,
    /// Its combined log.
    pub log: PathBuf,
}

impl Proc {
    /// Starts `cmd` with its stdout and stderr appended to `log`.
    pub fn spawn(mut cmd: Command, log: &Path) -> anyhow::Result<Proc> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        let err = out.try_clone()?;
        let child = cmd
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()?;
        Ok(Proc {
            child: Some(child),
            log: log.to_path_buf(),
        })
    }

    /// Its pid, while it runs. (Never 0: `kill(0, ...)` would signal the
    /// whole process group, every other test's processes included.)
    pub fn pid(&self) -> Option<nix::unistd::Pid> {
        self.child
            .as_ref()
            .and_then(|c| i32::try_from(c.id()).ok())
            .filter(|&p| p > 0)
            .map(nix::unistd::Pid::from_raw)
    }

    /// Sends a signal (SIGSTOP, SIGCONT...) to this process only.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        if let Some(pid) = self.pid() {
            let _ = nix::sys::signal::kill(pid, sig);
        }
    }

    /// `kill -9`, and waits for it to be gone.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.signal(nix::sys::signal::Signal::SIGCONT);
        self.kill9();
    }
}

/// Another controller process of the same deployment.
pub struct PeerController {
    /// The process.
    pub proc: Proc,
    /// Its node and admin API port.
    pub port: u16,
    /// Its `/metrics` port.
    pub metrics_port: u16,
}

/// The whole deployment.
pub struct ProcStack {
    /// The realm.
    pub realm: Realm,
    /// Everything on disk.
    pub dir: tempfile::TempDir,
    /// Controller address.
    pub port: u16,
    /// The controller's `/metrics` port, if it serves one
    /// ([`ProcStack::start_with_metrics`]).
    pub metrics_port: Option<u16>,
    /// The controller process.
    pub controller: Option<Proc>,
    /// The node-a driver process.
    pub driver: Option<Proc>,
    /// Kubelet stand-in on node-a's driver socket.
    pub kubelet: Option<Kubelet>,
    /// Ports of the controllers node-a's driver is given, in order (empty:
    /// the first controller's only); set before [`ProcStack::start_driver`].
    pub driver_controller_ports: Vec<u16>,
    pods: Vec<TestPod>,
    /// The controller's `reload_interval_secs` (1 unless a test sets it
    /// before restarting the controller).
    pub reload_interval_secs: u64,
    /// Extra controller config tables (used at the next controller start).
    pub extra_config: String,
    leases_config: String,
    /// Extra lines of the controller's `[tls]` table (next start).
    pub tls_config: String,
    /// Where node-a's side lives (kubelet directory, driver state): the
    /// stack's directory, or [`ProcStack::start_with_metrics_and_node_dir`]'s.
    node_dir: PathBuf,
}

/// The node-a node name (its host principal's FQDN).
pub const NODE_A: &str = "node-a.kcred.test";
/// Another node.
pub const NODE_B: &str = "node-b.kcred.test";

fn keytab(realm: &Realm, dir: &Path, principal: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join(format!("{}.keytab", principal.replace('/', "_")));
    realm.extract_keytab(principal, &path)?;
    Ok(path)
}

impl ProcStack {
    /// Starts the realm, the controller process and node-a's driver.
    /// `extra_config` is appended to the controller's config (tables).
    pub async fn start(extra_config: &str) -> anyhow::Result<ProcStack> {
        Self::start_with(extra_config, "", "").await
    }

    /// Like [`ProcStack::start`], with extra lines in `[leases]` and `[tls]`.
    pub async fn start_with(
        extra_config: &str,
        leases_config: &str,
        tls_config: &str,
    ) -> anyhow::Result<ProcStack> {
        Self::start_opts(extra_config, leases_config, tls_config, false, None).await
    }

    /// Like [`ProcStack::start`], with the controller's `/metrics` served
    /// on [`ProcStack::metrics_port`].
    pub async fn start_with_metrics(extra_config: &str) -> anyhow::Result<ProcStack> {
        Self::start_opts(extra_config, "", "", true, None).await
    }

    /// Like [`ProcStack::start_with_metrics`], with node-a's side (kubelet
    /// directory, driver state) under `node_dir` instead of the stack's
    /// directory (where the controller's store and audit log stay).
    pub async fn start_with_metrics_and_node_dir(
        extra_config: &str,
        node_dir: &Path,
    ) -> anyhow::Result<ProcStack> {
        Self::start_opts(extra_config, "", "", true, Some(node_dir.to_path_buf())).await
    }

    async fn start_opts(
        extra_config: &str,
        leases_config: &str,
        tls_config: &str,
        metrics: bool,
        node_dir: Option<PathBuf>,
    ) -> anyhow::Result<ProcStack> {
        let r = kcred_testrealm::DEFAULT_REALM;
        let realm = Realm::start_with(RealmOptions {
            acl: vec![
                // Rotation: extract, change (cpw -randkey -keepold), modify (purgekeys).
                format!("kcred/admin@{r} ecm */*@{r}"),
                format!("kcred/admin@{r} e *@{r}"),
            ],
            ..RealmOptions::default()
        })?;
        for p in [
            "HTTP/web.example.com",
            "HTTP/api.example.com",
            "websvc",
            OPERATOR,
            AUDITOR,
            "mallory",
            &format!("host/{NODE_A}"),
            &format!("host/{NODE_B}"),
            &format!("kcred/{CONTROLLER_HOST}"),
        ] {
            realm.add_principal(p)?;
        }
        let dir = tempfile::tempdir()?;
        let d = dir.path().to_path_buf();
        for p in [
            OPERATOR,
            AUDITOR,
            "mallory",
            &format!("host/{NODE_A}"),
            &format!("host/{NODE_B}"),
            &format!("kcred/{CONTROLLER_HOST}"),
        ] {
            keytab(&realm, &d, p)?;
        }
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
        std::fs::write(d.join("policy.toml"), crate::stack::DEFAULT_POLICY)?;
        let node_dir = node_dir.unwrap_or_else(|| d.to_path_buf());
        std::fs::create_dir_all(node_dir.join("kubelet/pods"))?;
        let port = kcred_testports::tcp()?;
        let metrics_port = if metrics {
            Some(kcred_testports::tcp()?)
        } else {
            None
        };
        let mut me = ProcStack {
            realm,
            dir,
            port,
            metrics_port,
            controller: None,
            driver: None,
            kubelet: None,
            driver_controller_ports: vec![],
            pods: vec![],
            reload_interval_secs: 1,
            extra_config: extra_config.to_string(),
            leases_config: leases_config.to_string(),
            tls_config: tls_config.to_string(),
            node_dir,
        };
        me.write_pods()?;
        me.start_controller().await?;
        me.start_driver().await?;
        Ok(me)
    }

    /// The temp dir.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    fn config(&self) -> String {
        self.config_for(self.port, "", self.metrics_port, &self.extra_config)
    }

    /// The config of a controller on `port` whose own files (audit log and
    /// key, replay cache, exported CA, kadmin work dir) carry `suffix`;
    /// everything else (realm, store, policy, pods) is shared.
    fn config_for(
        &self,
        port: u16,
        suffix: &str,
        metrics_port: Option<u16>,
        extra: &str,
    ) -> String {
        let r = kcred_testrealm::DEFAULT_REALM;
        format!(
            r#"listen = "127.0.0.1:{port}"
realm = "{r}"
krb5_config = "{krb5}"
master_key_file = "{d}/master.key"
store_path = "{d}/store.redb"
policy_file = "{d}/policy.toml"
pods_file = "{d}/pods.toml"
audit_log = "{d}/audit{suffix}.log"
audit_key = "{d}/audit{suffix}.key"
reload_interval_secs = {reload}
{metrics}

[kadmin]
principal = "kcred/admin@{r}"
keytab = "{admin}"
work_dir = "{d}/extract{suffix}"
timeout_secs = 10

[auth]
mode = "kerberos"
keytab = "{d}/kcred_{host}.keytab"
replay_cache = "{d}/replay{suffix}.rcache2"
operators = ["{op}@{r}", "cert:ops-robot"]
auditors = ["{au}@{r}"]

[tls]
names = ["{host}"]
ca_export_file = "{d}/ca{suffix}.crt"
{tls}

[leases]
ttl_secs = 3
{leases}

# The benches' load generators connect as one node many times (64
# clients at once): more connections than a node's driver ever holds.
[limits]
max_connections_per_node = 1024

{extra}
"#,
            metrics = metrics_port
                .map(|p| format!("metrics_listen = \"127.0.0.1:{p}\""))
                .unwrap_or_default(),
            krb5 = self.realm.krb5_conf_path().display(),
            d = self.path().display(),
            admin = self.realm.admin_keytab().display(),
            host = CONTROLLER_HOST,
            op = OPERATOR,
            au = AUDITOR,
            leases = self.leases_config,
            tls = self.tls_config,
            reload = self.reload_interval_secs,
        )
    }

    /// Starts (or restarts) the controller process and waits for its port.
    pub async fn start_controller(&mut self) -> anyhow::Result<()> {
        let cfg = self.path().join("controller.toml");
        std::fs::write(&cfg, self.config())?;
        let mut cmd = Command::new(binary("kcred-controller"));
        cmd.args(["serve", "--config"])
            .arg(&cfg)
            .env("RUST_LOG", "info");
        let proc = Proc::spawn(cmd, &self.path().join("controller.log"))?;
        let deadline = Instant::now() + Duration::from_secs(20);
        // Its own word that it serves, not only an open port: the port was
        // free when chosen, and another test's daemon may have taken it since.
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err()
            || !self.path().join("ca.crt").exists()
            || !proc.log_text().contains("serving node API")
        {
            if Instant::now() > deadline {
                bail!("controller did not start: {}", proc.log_text());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.controller = Some(proc);
        Ok(())
    }

    /// Starts another controller process on the same store, realm, policy
    /// and pods (its config names a shared store: etcd), on its own port,
    /// with its own audit log and `/metrics`. `suffix` names its files.
    pub async fn start_peer_controller(&self, suffix: &str) -> anyhow::Result<PeerController> {
        self.start_peer_controller_with(suffix, &self.extra_config)
            .await
    }

    /// Like [`ProcStack::start_peer_controller`], with its own extra config
    /// tables instead of the first controller's (another view of etcd).
    pub async fn start_peer_controller_with(
        &self,
        suffix: &str,
        extra_config: &str,
    ) -> anyhow::Result<PeerController> {
        let (port, metrics_port) = (kcred_testports::tcp()?, kcred_testports::tcp()?);
        let cfg = self.path().join(format!("controller{suffix}.toml"));
        std::fs::write(
            &cfg,
            self.config_for(port, suffix, Some(metrics_port), extra_config),
        )?;
        let mut cmd = Command::new(binary("kcred-controller"));
        cmd.args(["serve", "--config"])
            .arg(&cfg)
            .env("RUST_LOG", "info");
        let proc = Proc::spawn(cmd, &self.path().join(format!("controller{suffix}.log")))?;
        let ca = self.path().join(format!("ca{suffix}.crt"));
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() || !ca.exists() {
            if Instant::now() > deadline {
                bail!("peer controller did not start: {}", proc.log_text());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(PeerController {
            proc,
            port,
            metrics_port,
        })
    }

    /// Starts (or restarts) node-a's driver process.
    pub async fn start_driver(&mut self) -> anyhow::Result<()> {
        let r = kcred_testrealm::DEFAULT_REALM;
        let d = self.path().to_path_buf();
        let socket = d.join("csi/csi.sock");
        let _ = std::fs::remove_file(&socket);
        let mut cmd = Command::new(binary("kcred-csi-driver"));
        cmd.env("KRB5_CONFIG", self.realm.krb5_conf_path())
            .env("RUST_LOG", "info")
            .arg("--endpoint")
            .arg(&socket)
            .args(["--node-id", NODE_A])
            .args(["--controller", &self.driver_controllers()])
            .arg("--ca-file")
            .arg(d.join("ca.crt"))
            .args(["--tls-server-name", CONTROLLER_HOST])
            .arg("--keytab")
            .arg(d.join(format!("host_{NODE_A}.keytab")))
            .args(["--principal", &format!("host/{NODE_A}@{r}")])
            .args([
                "--controller-service",
                &format!("kcred/{CONTROLLER_HOST}@{r}"),
            ])
            .arg("--kubelet-dir")
            .arg(self.node_dir.join("kubelet"))
            .arg("--state-dir")
            .arg(self.node_dir.join("driver-state"))
            .args(["--heartbeat-secs", "1"]);
        let proc = Proc::spawn(cmd, &d.join("driver.log"))?;
        let kubelet = Kubelet::connect_when_ready(
            &socket,
            &self.node_dir.join("kubelet"),
            Duration::from_secs(20),
        )
        .await
        .map_err(|e| anyhow::anyhow!("driver did not start: {e:#}\n{}", proc.log_text()))?;
        self.kubelet = Some(kubelet);
        self.driver = Some(proc);
        Ok(())
    }

    /// The `--controller` list node-a's driver is given.
    fn driver_controllers(&self) -> String {
        let ports = if self.driver_controller_ports.is_empty() {
            vec![self.port]
        } else {
            self.driver_controller_ports.clone()
        };
        ports
            .iter()
            .map(|p| format!("https://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The kubelet stand-in.
    pub fn kubelet(&self) -> &Kubelet {
        self.kubelet.as_ref().expect("driver started")
    }

    fn write_pods(&self) -> anyhow::Result<()> {
        let mut text = String::new();
        for p in &self.pods {
            text.push_str(&format!(
                "[[pods]]\nnamespace = {:?}\nname = {:?}\nuid = {:?}\nnode_name = {:?}\n",
                p.namespace, p.name, p.uid, p.node
            ));
            if let Some(g) = p.fs_group {
                text.push_str(&format!("fs_group = {g}\n"));
            }
            if let Some((u, g)) = p.run_as {
                text.push_str(&format!("run_as_user = {u}\nrun_as_group = {g}\n"));
            }
            text.push_str("[pods.annotations]\n");
            for (k, v) in &p.annotations {
                text.push_str(&format!("{k:?} = {v:?}\n"));
            }
        }
        let tmp = self.path().join("pods.toml.tmp");
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, self.path().join("pods.toml"))?;
        Ok(())
    }

    /// Sets the pods the controller knows (what the API would list) and
    /// waits for the controller to reload them.
    pub async fn set_pods(&mut self, pods: &[&TestPod]) -> anyhow::Result<()> {
        self.pods = pods.iter().map(|p| (*p).clone()).collect();
        self.write_pods()?;
        tokio::time::sleep(Duration::from_millis(2200)).await;
        Ok(())
    }

    /// [`Self::set_pods`] for a list the caller owns.
    pub async fn set_pod_list(&mut self, pods: &[TestPod]) -> anyhow::Result<()> {
        self.set_pods(&pods.iter().collect::<Vec<_>>()).await
    }

    /// Runs `kcredctl` as `who` (a principal of this realm) with `args`,
    /// from `who`'s keytab (scripts' way).
    pub fn kcredctl(&self, who: &str, args: &[&str]) -> Output {
        let r = kcred_testrealm::DEFAULT_REALM;
        self.kcredctl_command()
            .env(
                "KRB5CCNAME",
                format!("FILE:{}/cc-{who}", self.path().display()),
            )
            .arg("--keytab")
            .arg(self.path().join(format!("{who}.keytab")))
            .args(["--principal", &format!("{who}@{r}")])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("kcredctl: {e}"))
    }

    /// `kcredctl` aimed at this controller (URL in `KCRED_CONTROLLER`, so
    /// `--controller` can override it; CA, service) with no identity yet:
    /// the test adds one (a ticket cache through `KRB5CCNAME`, a keytab,
    /// or a client certificate).
    pub fn kcredctl_command(&self) -> Command {
        let r = kcred_testrealm::DEFAULT_REALM;
        let mut cmd = Command::new(binary("kcredctl"));
        cmd.env("KRB5_CONFIG", self.realm.krb5_conf_path())
            .env(
                "KCRED_CONTROLLER",
                format!("https://127.0.0.1:{}", self.port),
            )
            .arg("--ca-cert")
            .arg(self.path().join("ca.crt"))
            .args(["--tls-server-name", CONTROLLER_HOST])
            .args(["--service", &format!("kcred/{CONTROLLER_HOST}@{r}")]);
        cmd
    }

    /// The controller's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A Kerberos token (`Negotiate ...`) for the controller from `keytab`
    /// as `principal`, made by the auth probe in its own process.
    pub fn token(
        &self,
        keytab_name: &str,
        principal: &str,
        service: &str,
    ) -> anyhow::Result<String> {
        let out = Command::new(binary("kcred-auth-probe"))
            .env("KRB5_CONFIG", self.realm.krb5_conf_path())
            .arg("token")
            .arg(self.path().join(keytab_name))
            .arg(principal)
            .arg(service)
            .output()
            .context("kcred-auth-probe")?;
        if !out.status.success() {
            bail!("probe: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .to_string())
    }

    /// A node's token for the controller, from its host keytab.
    pub fn node_token(&self, node: &str) -> anyhow::Result<String> {
        let r = kcred_testrealm::DEFAULT_REALM;
        self.token(
            &format!("host_{node}.keytab"),
            &format!("host/{node}@{r}"),
            &format!("kcred/{CONTROLLER_HOST}@{r}"),
        )
    }

    /// A TLS channel to the controller, as a node or tool would open it.
    pub async fn channel(&self) -> anyhow::Result<tonic::transport::Channel> {
        self.channel_to(self.port).await
    }

    /// A TLS channel to the controller on `port` (a peer controller).
    pub async fn channel_to(&self, port: u16) -> anyhow::Result<tonic::transport::Channel> {
        let ca = std::fs::read(self.path().join("ca.crt"))?;
        let tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(ca))
            .domain_name(CONTROLLER_HOST);
        Ok(
            tonic::transport::Endpoint::from_shared(format!("https://127.0.0.1:{port}"))?
                .tls_config(tls)?
                .connect()
                .await?,
        )
    }

    /// A TLS channel presenting a client certificate (mTLS).
    pub async fn channel_with_identity(
        &self,
        cert_pem: &str,
        key_pem: &str,
    ) -> anyhow::Result<tonic::transport::Channel> {
        let ca = std::fs::read(self.path().join("ca.crt"))?;
        let tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(ca))
            .domain_name(CONTROLLER_HOST)
            .identity(tonic::transport::Identity::from_pem(cert_pem, key_pem));
        Ok(
            tonic::transport::Endpoint::from_shared(format!("https://127.0.0.1:{}", self.port))?
                .tls_config(tls)?
                .connect()
                .await?,
        )
    }

    /// Waits until the controller has seen `node` heartbeat (its lease
    /// exists and is alive).
    pub async fn wait_node_alive(&self, node: &str) {
        crate::wait_until(&format!("{node} alive"), 30, || {
            let out = self.kcredctl(OPERATOR, &["status", "--output", "json"]);
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            text.contains(node) && text.contains("\"alive\"")
        })
        .await
    }

    /// The audit log's records.
    pub fn audit_records(&self) -> Vec<crate::audit::AuditRecord> {
        crate::audit::audit_records(&self.path().join("audit.log"))
    }
}

impl Drop for ProcStack {
    fn drop(&mut self) {
        self.kubelet = None;
        self.driver = None;
        self.controller = None;
        crate::unmount_volumes(&self.node_dir.join("kubelet"));
    }
}
