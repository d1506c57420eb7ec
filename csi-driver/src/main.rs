//! `kcred-csi-driver`: the CSI node plugin.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use std::time::Duration;

use backon::Retryable;
use kcred_csi_driver::config::{
    ControllerSettings, DEFAULT_DRIVER_NAME, DEFAULT_POD_TOKEN_AUDIENCE, check_controller_settings,
    validate_driver_name,
};
use kcred_csi_driver::controller_client::{ControllerClient, NodeIdentity};
use kcred_csi_driver::csi::server;
use kcred_csi_driver::metrics::Metrics;
use kcred_csi_driver::volumes::VolumeManager;
use kcred_csi_driver::{DriverConfig, support::retry};

#[derive(Parser)]
#[command(
    version,
    about = "kcred CSI node driver: mounts Kerberos credentials into pods"
)]
struct Cli {
    /// Unix socket kubelet (via node-driver-registrar) connects to.
    #[arg(long, env = "CSI_ENDPOINT", default_value = "/csi/csi.sock")]
    endpoint: PathBuf,
    /// This node's Kubernetes name.
    #[arg(long, env = "NODE_NAME")]
    node_id: String,
    /// The controllers' node API: one URL, or several separated by commas
    /// (or the flag repeated); calls fail over between them by themselves.
    #[arg(
        value_delimiter = ',',
        long,
        env = "KCRED_CONTROLLER",
        default_value = "http://kcred-controller:7420"
    )]
    controller: Vec<String>,
    /// Kubelet's root directory.
    #[arg(long, env = "KUBELET_DIR", default_value = "/var/lib/kubelet")]
    kubelet_dir: PathBuf,
    /// Directory for non-secret per-volume state.
    #[arg(
        long,
        env = "KCRED_STATE_DIR",
        default_value = "/var/lib/kcred-csi/state"
    )]
    state_dir: PathBuf,
    /// Registered driver name.
    #[arg(long, default_value = DEFAULT_DRIVER_NAME)]
    driver_name: String,
    /// Keytab holding this node's `host/<fqdn>` key: calls to the
    /// controller then carry a Kerberos token (required unless the
    /// controller runs with auth.mode = "none").
    #[arg(long, env = "KCRED_NODE_KEYTAB")]
    keytab: Option<PathBuf>,
    /// Let the node's Kerberos login use SPAKE pre-authentication: for a
    /// keytab whose key comes from a password, or a realm where SPAKE is
    /// the only way in (krb5.conf `disable_encrypted_timestamp`, clpreauth
    /// `enable_only = spake`, a KDC without encrypted timestamp). A random
    /// host key gains nothing from it, and its module loads OpenSSL's
    /// libcrypto (about 1.4 MiB resident).
    #[arg(long, env = "KCRED_KERBEROS_SPAKE")]
    kerberos_spake: bool,
    /// This node's principal (default: host/<node-id>).
    #[arg(long, env = "KCRED_NODE_PRINCIPAL")]
    principal: Option<String>,
    /// The controller's service principal, e.g.
    /// kcred/controller.example.com@EXAMPLE.COM.
    #[arg(long, env = "KCRED_CONTROLLER_SERVICE")]
    controller_service: Option<String>,
    /// The controller's CA certificate (PEM): calls then go over TLS
    /// (use an https:// --controller).
    #[arg(long, env = "KCRED_CA_FILE")]
    ca_file: Option<PathBuf>,
    /// The name the controller's certificate carries, if not the
    /// --controller host.
    #[arg(long, env = "KCRED_TLS_SERVER_NAME")]
    tls_server_name: Option<String>,
    /// A client certificate (PEM) from the controller's client CA: the
    /// node's identity for nodes without a host keytab (mTLS).
    #[arg(long, env = "KCRED_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(long, env = "KCRED_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// The driver pod's projected service-account token (audience of the
    /// controller's auth.psat): the node's identity where nodes have no
    /// host keytab. Read again whenever kubelet rotates it.
    #[arg(long, env = "KCRED_PSAT_TOKEN_FILE", conflicts_with = "keytab")]
    psat_token_file: Option<PathBuf>,
    /// The audience of pods' own tokens (the CSIDriver's tokenRequests),
    /// forwarded to the controller with each fetch.
    #[arg(long, env = "KCRED_POD_TOKEN_AUDIENCE", default_value = DEFAULT_POD_TOKEN_AUDIENCE)]
    pod_token_audience: String,
    /// Heartbeat interval until the controller says otherwise, seconds.
    #[arg(long, default_value_t = 10)]
    heartbeat_secs: u64,
    /// Serve Prometheus `/metrics` on this address (off if unset).
    #[arg(long, env = "KCRED_METRICS_ADDR")]
    metrics_addr: Option<std::net::SocketAddr>,
    /// Size limit of each volume's tmpfs, in bytes.
    #[arg(long, default_value_t = 1024 * 1024)]
    tmpfs_size_bytes: u64,
    #[command(flatten)]
    log: kcred_runtime::LogArgs,
}

/// Threads answering kubelet and the controller: one. A node agent waits
/// on sockets almost all the time, and its file-system work runs on the
/// blocking threads below. With one worker its tasks hand each other on
/// without waking a second thread, which cost a warm publish about 0.1 ms
/// of CPU with four, and each idle worker kept about a quarter MiB.
///
/// A Kerberos token, which can wait on the KDC for as long as MIT's
/// timeouts, is made on one blocking thread at a time while the calls
/// that need one wait as tasks (`node_identity`), so kubelet's calls go on
/// being answered however many wait on a silent KDC, and those calls end
/// together when the attempt they waited for fails. What a publish looks
/// at on kubelet's own disk (its target's `lstat`, `statfs`) stays on the
/// worker: a disk that hangs there hangs kubelet too.
const WORKER_THREADS: usize = 1;
/// Threads for file-system work (mounts, tmpfs writes, state records). A
/// rotation refreshes many volumes at once; each write is short, so they
/// queue for a few threads rather than start one each. One of them may be
/// making the node's Kerberos token, for as long as MIT waits on a silent
/// KDC (about 25 s over TCP).
const BLOCKING_THREADS: usize = 8;
/// How long an idle blocking thread is kept (tokio's default is 10 s).
const BLOCKING_KEEP_ALIVE: Duration = Duration::from_secs(2);

/// glibc's malloc arenas (`kcred_runtime::malloc`): one. A rotation
/// rewrites volumes on up to [`BLOCKING_THREADS`] threads; with glibc's
/// arena per thread the driver holding 100 volumes stayed at 15.0-15.3 MiB
/// of RSS after a rotation, with one arena at 13.8-13.9 MiB.
const MALLOC_ARENAS: i32 = 1;

fn main() -> anyhow::Result<()> {
    kcred_runtime::malloc::limit_arenas(MALLOC_ARENAS);
    let cli = Cli::parse();
    choose_kerberos_profile(&cli)?;
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKER_THREADS)
        .max_blocking_threads(BLOCKING_THREADS)
        .thread_keep_alive(BLOCKING_KEEP_ALIVE)
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(run(cli))
}

/// A node that logs in with its keytab does so without SPAKE
/// (`kcred_auth::login_profile`) unless `--kerberos-spake`: MIT reads the
/// profile from `KRB5_CONFIG`, set here before the runtime starts threads.
fn choose_kerberos_profile(cli: &Cli) -> anyhow::Result<()> {
    if cli.keytab.is_none() || cli.kerberos_spake {
        return Ok(());
    }
    let inherited = std::env::var_os("KRB5_CONFIG");
    let value = kcred_auth::login_profile::without_spake(&cli.state_dir, inherited.as_deref())
        .context("--state-dir")?;
    // SAFETY: `main` calls this before the async runtime or anything else
    // has started a thread, so nothing reads the environment meanwhile.
    #[allow(unsafe_code)]
    unsafe {
        std::env::set_var("KRB5_CONFIG", value);
    }
    Ok(())
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    kcred_runtime::set_build_info(kcred_runtime::BuildInfo {
        component: "csi-driver",
        version: env!("CARGO_PKG_VERSION"),
    });
    kcred_runtime::logging::init(&cli.log);
    validate_driver_name(&cli.driver_name)?;
    // Settings that can never work end the driver now, naming the flag;
    // only what the network may fix is retried.
    for endpoint in &cli.controller {
        check_controller_settings(&ControllerSettings {
            endpoint,
            ca_file: cli.ca_file.as_deref(),
            client_cert: cli.tls_cert.as_deref().zip(cli.tls_key.as_deref()),
            keytab: cli.keytab.as_deref(),
        })?;
    }
    let cfg = DriverConfig {
        driver_name: cli.driver_name,
        node_id: cli.node_id,
        kubelet_dir: cli.kubelet_dir,
        state_dir: cli.state_dir,
        controller_endpoint: cli.controller.join(","),
        tmpfs_size_bytes: cli.tmpfs_size_bytes,
        pod_token_audience: cli.pod_token_audience.clone(),
    };
    // Served before the node's login, which retries until the KDC answers:
    // a node that cannot log in shows it in its metrics too.
    let metrics = Metrics::new();
    start_series_at_zero(&metrics);
    if let Some(addr) = cli.metrics_addr {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("metrics address {addr}"))?;
        let metrics = Arc::clone(&metrics);
        tokio::spawn(async move {
            if let Err(e) = metrics.serve(listener).await {
                tracing::error!(error = %e, "metrics server stopped");
            }
        });
    }
    let identity = match (&cli.keytab, &cli.psat_token_file) {
        (None, Some(path)) => NodeIdentity::psat(Arc::new(
            kcred_csi_driver::psat::TokenFile::open(path).context("--psat-token-file")?,
        )),
        (None, None) => NodeIdentity::none(),
        (Some(keytab), _) => {
            let principal = cli
                .principal
                .clone()
                .unwrap_or_else(|| format!("host/{}", cfg.node_id));
            let service = cli
                .controller_service
                .clone()
                .context("--controller-service is required with --keytab")?;
            tracing::info!(
                krb5_config = ?std::env::var_os("KRB5_CONFIG"),
                kerberos_spake = cli.kerberos_spake,
                "node's Kerberos login"
            );
            let login = node_initiator(
                keytab.clone(),
                principal,
                service,
                cli.kerberos_spake,
                metrics.node_tokens.with_label_values(&["failed"]),
            );
            let identity = NodeIdentity::kerberos(Arc::new(login.await?));
            identity.count_tokens(metrics.node_tokens.clone());
            identity
        }
    };
    let tls = match &cli.ca_file {
        None => None,
        Some(path) => {
            let ca = std::fs::read(path).with_context(|| format!("CA file {}", path.display()))?;
            let mut tls = tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(ca));
            if let Some(name) = &cli.tls_server_name {
                tls = tls.domain_name(name.clone());
            }
            if let (Some(cert), Some(key)) = (&cli.tls_cert, &cli.tls_key) {
                let cert = std::fs::read(cert).with_context(|| format!("{}", cert.display()))?;
                let key = zeroize::Zeroizing::new(
                    std::fs::read(key).with_context(|| format!("{}", key.display()))?,
                );
                tls = tls.identity(tonic::transport::Identity::from_pem(cert, key.as_slice()));
            }
            Some(tls)
        }
    };
    let client = ControllerClient::connect(&cfg.controller_endpoint, &cfg.node_id, identity, tls)
        .with_context(|| format!("controller endpoint {:?}", cfg.controller_endpoint))?;
    let volumes = Arc::new(
        VolumeManager::for_node(&cfg, client, metrics)
            .with_context(|| format!("state directory {}", cfg.state_dir.display()))?,
    );
    tokio::spawn(
        Arc::clone(&volumes).run_background(Duration::from_secs(cli.heartbeat_secs.max(1))),
    );
    let listener = server::bind(&cli.endpoint)?;
    tracing::info!(endpoint = %cli.endpoint.display(), node = %cfg.node_id, "serving CSI");
    server::serve(cfg, volumes, listener, kcred_runtime::shutdown_signal()).await?;
    Ok(())
}

/// Every series whose labels are known in advance starts at zero, so each
/// metric family is on `/metrics` from the start (dashboards and alerts see
/// it, and `rate()` counts the first event). Error codes are those the
/// driver's own failures map to.
fn start_series_at_zero(m: &Metrics) {
    for method in ["NodePublishVolume", "NodeUnpublishVolume"] {
        m.call_seconds.with_label_values(&[method, "Ok"]);
        for code in [
            "InvalidArgument",
            "PermissionDenied",
            "FailedPrecondition",
            "Aborted",
            "Unavailable",
            "Internal",
        ] {
            m.errors.with_label_values(&[method, code]);
        }
    }
    // The calls every node makes (a series per method and code, at every
    // node: the others appear once made).
    for method in ["FetchBundle", "Heartbeats"] {
        m.controller_call_seconds.with_label_values(&[method, "Ok"]);
    }
    for reason in ["controller", "write"] {
        m.refresh_failures.with_label_values(&[reason]);
    }
    for outcome in ["made", "failed"] {
        m.node_tokens.with_label_values(&[outcome]);
    }
}

/// The node's Kerberos identity. Getting it talks to the KDC: retried with
/// backoff, so a driver that starts during a KDC outage comes up when the
/// KDC does (mounts already made keep working meanwhile). Each failure
/// counts in `failed` (the token attempts' failures: both mean the node
/// cannot get tickets). While SPAKE is off, each failure names the flag
/// that turns it on: a realm where it is the only way in fails every
/// login without it.
async fn node_initiator(
    keytab: PathBuf,
    principal: String,
    service: String,
    kerberos_spake: bool,
    failed: prometheus::IntCounter,
) -> anyhow::Result<kcred_auth::Initiator> {
    let attempt = || {
        let (k, p, s) = (keytab.clone(), principal.clone(), service.clone());
        async move {
            tokio::task::spawn_blocking(move || kcred_auth::Initiator::new(&k, &p, &s))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())
        }
    };
    attempt
        .retry(retry::identity())
        .notify(|e: &String, wait| {
            failed.inc();
            let hint = if kerberos_spake {
                ""
            } else {
                " (SPAKE off: where it is the only way in, or the key comes from a password, start with --kerberos-spake)"
            };
            tracing::warn!(
                error = %e,
                kerberos_spake,
                retry_in = ?wait,
                "cannot get the node's Kerberos identity{hint}"
            )
        })
        .await
        .map_err(|e| anyhow::anyhow!("node identity: {e}"))
}
