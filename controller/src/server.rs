//! Assembling and running a controller.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use kcred_proto::kcred::v1::node_credentials_server::NodeCredentialsServer;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;

use crate::api::node::NodeApi;
use crate::config::Config;
use crate::crypto::MasterKey;
use crate::gate::KdcGate;
use crate::issuers::keytab::KeytabIssuer;
use crate::kadmin::{KadminClient, KadminConfig};
use crate::metrics::Metrics;
use crate::pods::{PodIndex, file_source};
use crate::policy::parse_policy;
use crate::reload::Watched;
use crate::state::ControllerState;
use crate::store::Store;

/// Why the controller could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A start-up step failed; the message names it.
    #[error("{step}: {reason}")]
    Startup {
        /// What was being done.
        step: &'static str,
        /// Why it failed.
        reason: String,
    },
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

fn startup(step: &'static str) -> impl Fn(String) -> ServeError {
    move |reason| ServeError::Startup { step, reason }
}

/// A controller ready to serve.
pub struct Controller {
    state: Arc<ControllerState>,
    background: Vec<JoinHandle<()>>,
    metrics_listen: Option<std::net::SocketAddr>,
}

impl Controller {
    /// Opens the store, loads policy and pods, and starts the reloaders.
    /// Must run inside a Tokio runtime.
    pub fn start(cfg: &Config) -> Result<Controller, ServeError> {
        let master = MasterKey::load(&cfg.master_key_file)
            .map_err(|e| startup("master key")(e.to_string()))?;
        let store =
            Store::open(&cfg.store_path, master).map_err(|e| startup("store")(e.to_string()))?;
        let kadmin = KadminClient::new(KadminConfig {
            program: cfg.kadmin.program.clone(),
            principal: cfg.kadmin.principal.clone(),
            keytab: cfg.kadmin.keytab.clone(),
            krb5_config: cfg.krb5_config.clone(),
            work_dir: cfg.kadmin.work_dir.clone(),
            timeout: Duration::from_secs(cfg.kadmin.timeout_secs),
        })
        .map_err(|e| startup("kadmin")(e.to_string()))?;
        let realm = cfg.realm.clone();
        let policy = Watched::load(&cfg.policy_file, move |p, t| parse_policy(p, t, &realm))
            .map_err(|e| startup("policy")(e.to_string()))?;
        let pod_krb5_conf = std::fs::read(cfg.pod_krb5_conf_path()).map_err(|e| {
            startup("pod krb5.conf")(format!("{}: {e}", cfg.pod_krb5_conf_path().display()))
        })?;

        let metrics = Metrics::new();
        let gate = Arc::new(KdcGate::new(&cfg.gate, Arc::clone(&metrics)));
        let pods = Arc::new(PodIndex::default());
        let mut background = vec![policy.spawn_poller(cfg.reload_interval(), |_| {})];
        if let Some(path) = &cfg.pods_file {
            let source = Watched::load(path, file_source::parse_pods)
                .map_err(|e| startup("pods file")(e.to_string()))?;
            pods.replace_all(source.get().iter().cloned());
            let index = Arc::clone(&pods);
            background.push(source.spawn_poller(cfg.reload_interval(), move |fresh| {
                index.replace_all(fresh.iter().cloned())
            }));
        }
        tracing::info!(
            realm = %cfg.realm,
            role_accounts = policy.get().len(),
            pods = pods.len(),
            "controller started"
        );
        let state = Arc::new(ControllerState {
            realm: cfg.realm.clone(),
            pods,
            policy,
            keytabs: KeytabIssuer::new(
                Arc::new(store),
                Arc::new(kadmin),
                gate,
                Arc::clone(&metrics),
            ),
            pod_krb5_conf,
            metrics,
        });
        Ok(Controller {
            state,
            background,
            metrics_listen: cfg.metrics_listen,
        })
    }

    /// The controller's metrics.
    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.state.metrics)
    }

    /// The pod index, for pod sources that feed it directly.
    pub fn pods(&self) -> Arc<PodIndex> {
        Arc::clone(&self.state.pods)
    }

    /// Serves the node API on `listener` until `shutdown` completes.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ServeError> {
        let mut background = self.background;
        if let Some(addr) = self.metrics_listen {
            let listener = crate::metrics::bind(addr)
                .await
                .map_err(|e| startup("metrics listener")(format!("{addr}: {e}")))?;
            let metrics = Arc::clone(&self.state.metrics);
            background.push(tokio::spawn(async move {
                if let Err(e) = metrics.serve(listener).await {
                    tracing::error!(error = %e, "metrics server stopped");
                }
            }));
        }
        let api = NodeApi::new(Arc::clone(&self.state));
        let result = tonic::transport::Server::builder()
            .add_service(NodeCredentialsServer::new(api))
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
            .await;
        for task in &background {
            task.abort();
        }
        result.map_err(ServeError::from)
    }
}
