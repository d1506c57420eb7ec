//! A controller built from a config in a temporary directory, without a
//! realm: enough to start, stop and inspect what it keeps on disk.

// Test support: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use kcred_audit::{AuditLog, AuditSigner};
use kcred_controller::crypto::MasterKey;
use kcred_controller::store::Store;
use kcred_controller::{Config, Controller, ServeError};

/// A controller's files.
pub struct Files {
    /// Everything lives here.
    pub dir: tempfile::TempDir,
    /// The config as loaded.
    pub config: Config,
}

impl Files {
    /// Writes a config (auth off, no realm needed) with `extra` appended.
    pub fn new(extra: &str) -> Files {
        Self::with_auth("[auth]\nmode = \"none\"\n", extra)
    }

    /// An endpoint for the controller at `addr` over TLS, trusting the CA
    /// its config exports to `ca.crt` and naming it `controller.test` (the
    /// `[tls]` table such tests write).
    pub fn tls_endpoint(&self, addr: std::net::SocketAddr) -> tonic::transport::Endpoint {
        let ca = std::fs::read(self.path("ca.crt")).unwrap();
        let tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(ca))
            .domain_name("controller.test");
        tonic::transport::Endpoint::from_shared(format!("https://{addr}"))
            .unwrap()
            .tls_config(tls)
            .unwrap()
    }

    /// Writes a config with this `[auth]` table and `extra` appended.
    pub fn with_auth(auth: &str, extra: &str) -> Files {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // `{DIR}` in `extra` is this directory.
        let extra = extra.replace("{DIR}", &d.display().to_string());
        MasterKey::generate_file(&d.join("master.key")).unwrap();
        std::fs::write(d.join("policy.toml"), "").unwrap();
        std::fs::write(d.join("krb5.conf"), "[libdefaults]\n").unwrap();
        std::fs::write(d.join("pods.toml"), "").unwrap();
        let text = format!(
            r#"listen = "127.0.0.1:0"
realm = "EXAMPLE.TEST"
krb5_config = "{d}/krb5.conf"
master_key_file = "{d}/master.key"
store_path = "{d}/store.redb"
policy_file = "{d}/policy.toml"
pods_file = "{d}/pods.toml"
audit_log = "{d}/audit.log"
audit_key = "{d}/audit.key"

[kadmin]
principal = "kcred/admin@EXAMPLE.TEST"
keytab = "{d}/admin.keytab"
work_dir = "{d}/work"

{auth}

{extra}
"#,
            d = d.display()
        );
        std::fs::write(d.join("controller.toml"), text).unwrap();
        let config = Config::load(&d.join("controller.toml")).unwrap();
        Files { dir, config }
    }

    /// A file in the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The store, opened while no controller runs.
    pub fn store(&self) -> Store {
        let master = MasterKey::load(&self.config.master_key_file).unwrap();
        Store::open(self.config.store_path.as_deref().unwrap(), master).unwrap()
    }

    /// The audit log, opened while no controller runs.
    pub fn audit(&self) -> AuditLog {
        let signer = AuditSigner::load_or_generate(&self.config.audit_key).unwrap();
        AuditLog::open(&self.config.audit_log, signer).unwrap()
    }

    /// The audit log's lines.
    pub fn audit_lines(&self) -> Vec<String> {
        read_lines(&self.config.audit_log)
    }
}

/// A file's lines (none if it is missing).
pub fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Starts a controller on `cfg` and stops it at once: what a restart does
/// before serving.
pub async fn start_and_stop(cfg: &Config) -> Result<(), ServeError> {
    let controller = Controller::start(cfg)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    controller.serve(listener, async {}).await
}

/// A controller serving on a loopback port until stopped.
pub struct Running {
    /// Where it listens.
    pub addr: std::net::SocketAddr,
    /// Its pod view.
    pub pods: std::sync::Arc<kcred_controller::pods::PodIndex>,
    /// Its state (the issued-volume index, for revocations).
    pub state: std::sync::Arc<kcred_controller::state::ControllerState>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), ServeError>>,
}

impl Running {
    /// Starts a controller on `cfg`.
    pub async fn start(cfg: &Config) -> Running {
        let controller = Controller::start(cfg).expect("controller starts");
        let pods = controller.pods();
        let state = controller.state();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(controller.serve(listener, async move {
            let _ = stopped.await;
        }));
        Running {
            addr,
            pods,
            state,
            stop,
            task,
        }
    }

    /// A node API client (clear text: these controllers have no TLS).
    pub async fn node_client(
        &self,
    ) -> kcred_proto::kcred::v1::node_credentials_client::NodeCredentialsClient<
        tonic::transport::Channel,
    > {
        kcred_proto::kcred::v1::node_credentials_client::NodeCredentialsClient::connect(format!(
            "http://{}",
            self.addr
        ))
        .await
        .expect("connect")
    }

    /// Stops it and waits until its store is released.
    pub async fn stop(self) {
        drop(self.state);
        let _ = self.stop.send(());
        self.task.await.unwrap().expect("served");
    }
}
