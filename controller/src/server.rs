//! Assembling and running a controller.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use kcred_audit::{Action, Actor, AuditEvent, AuditLog, AuditSigner};
use kcred_proto::kcred::v1::node_credentials_server::NodeCredentialsServer;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::api::admin::AdminApi;
use crate::api::node::NodeApi;
use crate::audit_head;
use crate::auth::Auth;
use crate::cluster::Cluster;
use crate::config::{Config, LimitsSection, TlsSection};
use crate::crypto::MasterKey;
use crate::denials::Denials;
use crate::issued::Issued;
use crate::issuers::certs::CertIssuer;
use crate::issuers::keys::KeyIssuer;
use crate::issuers::keytab::KeytabIssuer;
use crate::issuers::tickets::TicketIssuer;
use crate::kdc::{KdcClient, TicketConfig};
use crate::kubernetes::KubeSource;
use crate::kubernetes::watch as kube_watch;
use crate::listener::{AcceptLimits, Connections, Incoming};
use crate::metrics::Metrics;
use crate::names::Served;
use crate::nodes::known::KnownNodes;
use crate::nodes::kube_source::NodeView;
use crate::nodes::leases::Leases;
use crate::nodes::registry::NodeRegistry;
use crate::nodes::updates::Updates;
use crate::pods::kube_source::PodView;
use crate::pods::{PodIndex, file_source};
use crate::policy::parse_policy;
use crate::reload::{ReloadTrigger, Watched};
use crate::serving_tls::{self, ServingCert, ServingTls};
use crate::state::ControllerState;
use crate::store::{Store, Table};
use kcred_proto::kcred::v1::admin_server::AdminServer;
use zeroize::Zeroizing;

/// Why the controller could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A start-up step failed; the message names it.
    #[error("{step}: {source}")]
    Startup {
        /// What was being done.
        step: &'static str,
        /// Why it failed.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

fn startup<E: Into<Box<dyn std::error::Error + Send + Sync>>>(
    step: &'static str,
) -> impl Fn(E) -> ServeError {
    move |e| ServeError::Startup {
        step,
        source: e.into(),
    }
}

/// The window over which anonymous refusals of one source are counted
/// into one record.
const DENIAL_WINDOW: Duration = Duration::from_secs(60);

/// File descriptors kept free of connections: the store, the audit log,
/// the replay cache, kadmin and kinit children, reloads.
const RESERVED_FDS: u64 = 256;

/// The accept limits, with the connection cap kept below the descriptor
/// limit (raised to its hard maximum first): running out of descriptors is
/// what made a connection flood take the controller down.
fn accept_limits(l: &LimitsSection) -> AcceptLimits {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let mut max = l.max_connections;
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) => {
            let soft = if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
                hard
            } else {
                soft
            };
            let room =
                usize::try_from(soft.saturating_sub(RESERVED_FDS).max(16)).unwrap_or(usize::MAX);
            if room < max {
                tracing::warn!(
                    configured = max,
                    used = room,
                    fd_limit = soft,
                    "limits.max_connections lowered to fit the file descriptor limit (raise LimitNOFILE)"
                );
                max = room;
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot read the file descriptor limit"),
    }
    AcceptLimits {
        max_connections: max,
        max_unauthenticated_per_source: l.max_unauthenticated_per_source,
        max_connections_per_node: l.max_connections_per_node,
        unauthenticated_idle: Duration::from_secs(l.unauthenticated_idle_secs),
    }
}

/// Opens the audit log only if it still reaches the head kept in the store
/// (or the operator acknowledged the loss: recorded, and the lost head kept).
fn open_audit(cfg: &Config, store: &Store, signer: AuditSigner) -> Result<AuditLog, ServeError> {
    let key_id = signer.key_id().to_string();
    let found = audit_head::find_stored_head(store, &key_id).map_err(startup("audit head"))?;
    let (stored, legacy) = match found {
        Some((h, record)) => (Some(h), record == audit_head::HeadRecord::Legacy),
        None => (None, false),
    };
    let ack = cfg.acknowledge_audit_loss.as_deref();
    let missing = audit_head::check_present(&cfg.audit_log, stored.as_ref()).err();
    if let (Some(loss), None) = (&missing, ack) {
        return Err(startup("audit log")(loss.to_string()));
    }
    let public_key = signer.public_key().to_vec();
    let mut audit = AuditLog::open_rotating(&cfg.audit_log, signer, cfg.audit.rotation())
        .map_err(startup("audit log"))?;
    match cfg.audit.sink() {
        Ok(Some(sink)) => audit = audit.with_sink(sink),
        Ok(None) => {}
        // Best effort by design: the file is the record.
        Err(e) => tracing::warn!(error = %e, "audit sink unavailable; records go to the file only"),
    }
    let loss = missing.or_else(|| {
        audit_head::check_reaches(
            &cfg.audit_log,
            &public_key,
            audit.head().as_ref(),
            stored.as_ref(),
        )
        .err()
    });
    let Some(loss) = loss else {
        if ack.is_some() {
            tracing::info!(
                "--acknowledge-audit-loss given, but the audit log reaches its stored head: nothing to acknowledge"
            );
        }
        // A head kept before heads were per chain is this chain's (checked
        // above): it moves to the chain's own record.
        if let (true, Some(h)) = (legacy, &stored) {
            audit_head::adopt_legacy(store, &key_id, h).map_err(startup("audit head"))?;
        }
        return Ok(audit);
    };
    let Some(reason) = ack else {
        return Err(startup("audit log")(loss.to_string()));
    };
    tracing::warn!(%loss, reason, "audit log loss acknowledged by the operator");
    let lost = audit_head::LostHead {
        stored: loss
            .stored()
            .cloned()
            .unwrap_or_else(|| kcred_audit::AuditHead {
                seq: 0,
                hash: kcred_audit::GENESIS_HASH.into(),
            }),
        log_ended: audit.head(),
        finding: loss.to_string(),
        reason: reason.to_string(),
    };
    let at = kcred_audit::timefmt::now_unix_ms();
    audit_head::archive_lost(store, &lost, at).map_err(startup("audit head"))?;
    let event = AuditEvent::new(Actor::Controller, Action::Admin)
        .with_subject("audit-log")
        .with_reason(format!(
            "audit log loss acknowledged at start (--acknowledge-audit-loss): the log ended at \
             record {}, the stored head was record {} (hash {}), kept as {}{at}; reason: {reason}",
            lost.log_ended.as_ref().map_or(0, |h| h.seq),
            lost.stored.seq,
            lost.stored.hash,
            audit_head::LOST_HEAD_PREFIX,
        ));
    let head = audit.append(&event).map_err(startup("audit log"))?.head();
    // Deliberately shorter than the lost head: the loss is on record.
    store
        .put(
            Table::Authority,
            &audit_head::head_record(&key_id),
            &head,
            b"",
        )
        .map_err(startup("audit head"))?;
    Ok(audit)
}

/// TLS for the node and admin APIs: the operator's certificate, read again
/// on `SIGHUP`, or one from the controller's CA, renewed before it expires
/// (the task).
fn serving_tls(
    cfg: &Config,
    t: &TlsSection,
    state: &Arc<ControllerState>,
    reload: &ReloadTrigger,
) -> Result<(ServingTls, Arc<ServingCert>, JoinHandle<()>), ServeError> {
    let issue = {
        let (state, names) = (Arc::clone(state), t.names.clone());
        let lifetime = Duration::from_secs(t.serving_cert_lifetime_secs);
        move || state.certs.serving_cert(&names, lifetime)
    };
    let operator_files = t.cert_file.clone().zip(t.key_file.clone());
    let read_files = operator_files.map(|(c, k)| {
        move || -> Result<serving_tls::PemPair, String> {
            let read = |p: &std::path::Path| {
                std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))
            };
            Ok((read(&c)?, Zeroizing::new(read(&k)?)))
        }
    });
    let pair = match &read_files {
        Some(read) => read().map_err(startup("tls"))?,
        None => issue().map_err(startup("tls"))?,
    };
    let cert = ServingCert::new(&pair).map_err(startup("tls"))?;
    if let Some(path) = &t.ca_export_file {
        std::fs::write(path, state.certs.trust_bundle())
            .map_err(|e| startup("tls")(format!("{}: {e}", path.display())))?;
    }
    let client_ca = match &t.client_ca_file {
        None => None,
        Some(ca) => {
            let pem =
                std::fs::read(ca).map_err(|e| startup("tls")(format!("{}: {e}", ca.display())))?;
            // Pods hold certificates from kcred's own CA: trusting it
            // for clients would let a pod pose as a node.
            if String::from_utf8_lossy(&pem).contains(state.certs.ca_pem().trim()) {
                return Err(startup("tls")(
                    "tls.client_ca_file must not be kcred's own CA (pods hold its certificates)",
                ));
            }
            Some(pem)
        }
    };
    let tls = ServingTls::new(
        Arc::clone(&cert),
        client_ca.as_deref(),
        Duration::from_secs(cfg.limits.tls_handshake_timeout_secs),
    )
    .map_err(startup("tls"))?;
    let expiry = state.metrics.serving_cert_expiry.clone();
    expiry.set(cert.validity().1);
    let task = match read_files {
        Some(read) => {
            serving_tls::spawn_reload_on_signal(Arc::clone(&cert), reload.subscribe(), expiry, read)
        }
        None => serving_tls::spawn_renewal(Arc::clone(&cert), cfg.refresh_fraction, expiry, issue),
    };
    Ok((tls, cert, task))
}

/// Who the Kubernetes API vouches for: pods' own tokens (when required)
/// and node drivers' pod tokens (`[auth.psat]`).
fn kube_identities(
    cfg: &Config,
) -> Result<
    (
        Option<crate::kubernetes::pod_tokens::PodTokens>,
        Option<crate::kubernetes::psat::Psat>,
    ),
    ServeError,
> {
    let Some(k) = &cfg.kubernetes else {
        return Ok((None, None));
    };
    let source = KubeSource::new(k).map_err(|e| startup("kubernetes")(e.to_string()))?;
    let reviewer = crate::kubernetes::token_review::TokenReviewer::new(source);
    let pod_tokens = k.require_pod_token.then(|| {
        crate::kubernetes::pod_tokens::PodTokens::new(
            Arc::clone(&reviewer),
            k.token_audience.clone(),
        )
    });
    let psat = cfg
        .auth
        .psat
        .clone()
        .map(|p| crate::kubernetes::psat::Psat::new(reviewer, p));
    Ok((pod_tokens, psat))
}

/// A controller ready to serve.
pub struct Controller {
    tls: Option<ServingTls>,
    reload: ReloadTrigger,
    webhook: Option<(
        crate::webhook::serve::Listener,
        Arc<crate::webhook::serve::Webhook>,
    )>,
    state: Arc<ControllerState>,
    background: Vec<JoinHandle<()>>,
    metrics_listen: Option<std::net::SocketAddr>,
    limits: LimitsSection,
}

impl Controller {
    /// Opens the store, loads policy and pods, and starts the reloaders.
    /// Must run inside a Tokio runtime.
    pub fn start(cfg: &Config) -> Result<Controller, ServeError> {
        let master = MasterKey::load(&cfg.master_key_file).map_err(startup("master key"))?;
        let (store, etcd) = cfg
            .store
            .open_shared(cfg.store_path.as_deref(), master)
            .map_err(startup("store"))?;
        tracing::info!(store = %store.describe(), "store open");
        // Records of AD accounts kcred creates, appended once the audit log
        // is open.
        let (account_audit, account_events) = tokio::sync::mpsc::unbounded_channel();
        let served = crate::realms::served(cfg);
        let realm = served.clone();
        let directory_sync = cfg
            .active_directory
            .as_ref()
            .and_then(|ad| Some((ad.client_config(cfg), ad.sync.clone()?)))
            .map(|(client, sync)| client.map(|c| (c, sync)))
            .transpose()
            .map_err(startup("active directory"))?;
        let policy = match &cfg.policy_file {
            Some(path) => Watched::load(path, move |p, t| parse_policy(p, t, &realm))
                .map_err(startup("policy"))?,
            // Empty (everything refused) until the first sync lands.
            None => Watched::fed(crate::policy::Policy::default()),
        };
        let pod_krb5_conf = std::fs::read(cfg.pod_krb5_conf_path()).map_err(|e| {
            startup("pod krb5.conf")(format!("{}: {e}", cfg.pod_krb5_conf_path().display()))
        })?;
        let pod_krb5_conf = crate::realms::krb5_conf::PodKrb5Conf::new(
            &cfg.realm,
            pod_krb5_conf,
            crate::realms::servers(cfg),
        );
        let signer = AuditSigner::load_or_generate(&cfg.audit_key).map_err(startup("audit key"))?;
        // Named after its listener and its audit chain, both its own.
        let controller_id = format!("{} {}", cfg.listen, signer.key_id());
        let audit = Arc::new(open_audit(cfg, &store, signer)?);

        let store = Arc::new(store);
        let cluster = match etcd {
            Some(etcd) => Cluster::on_etcd(etcd, &controller_id, cfg.store.leader_lease()),
            None => Cluster::solo(),
        };
        let metrics = Metrics::new();
        let backends = Arc::new(
            crate::realms::start(cfg, &metrics, &cluster, &account_audit)
                .map_err(startup("key administration"))?,
        );
        let auth = Auth::new(&cfg.auth, &cfg.realm).map_err(startup("authentication"))?;
        let keytabs = Arc::new(KeytabIssuer::new(
            Arc::clone(&store),
            Arc::clone(&backends),
            Arc::clone(&metrics),
            Arc::clone(&cluster),
        ));
        let mut kdcs = std::collections::BTreeMap::new();
        for (realm, backend) in backends.iter() {
            let mut kdc_cfg = TicketConfig::new(backend.tickets_dir.clone());
            kdc_cfg.kinit = cfg.tickets.kinit.clone();
            kdc_cfg.krb5_config = backend.krb5_config.clone();
            kdc_cfg.lifetime = Duration::from_secs(cfg.tickets.lifetime_secs);
            kdc_cfg.renew_lifetime = Duration::from_secs(cfg.tickets.renew_lifetime_secs);
            kdc_cfg.timeout = Duration::from_secs(cfg.kadmin.timeout_secs);
            let kdc = KdcClient::new(kdc_cfg).map_err(startup("kdc client"))?;
            kdcs.insert(realm.to_string(), kdc);
        }
        let tickets = TicketIssuer::new(
            cfg.refresh_fraction,
            kdcs,
            Arc::clone(&keytabs),
            Arc::clone(&store),
            Arc::clone(&backends),
            Arc::clone(&metrics),
        )
        .with_cluster(Arc::clone(&cluster));
        let operator_ca = match (&cfg.certs.ca_cert_file, &cfg.certs.ca_key_file) {
            (Some(c), Some(k)) => {
                let read = |p: &std::path::Path| {
                    std::fs::read_to_string(p).map_err(|e| {
                        startup("certificate authority")(format!("{}: {e}", p.display()))
                    })
                };
                Some((read(c)?, Zeroizing::new(read(k)?)))
            }
            _ => None,
        };
        let mut certs = CertIssuer::load(
            operator_ca,
            &cfg.certs.ca_common_name,
            Duration::from_secs(cfg.certs.lifetime_secs),
            cfg.refresh_fraction,
            Arc::clone(&store),
            Arc::clone(&metrics),
        )
        .map_err(startup("certificate authority"))?;
        for path in cfg.tls.iter().flat_map(|t| &t.extra_trusted_ca_files) {
            let pem = std::fs::read_to_string(path)
                .map_err(|e| startup("tls")(format!("{}: {e}", path.display())))?;
            if !pem.contains("-----BEGIN CERTIFICATE-----") {
                return Err(startup("tls")(format!(
                    "tls.extra_trusted_ca_files: {} holds no PEM certificate",
                    path.display()
                )));
            }
            certs.trust_also(&pem);
        }
        let keys = KeyIssuer::new(Arc::clone(&store), Arc::clone(&metrics))
            .with_cluster(Arc::clone(&cluster));

        let (pod_tokens, psat) = kube_identities(cfg)?;
        let pods = Arc::new(PodIndex::default());
        let known_nodes = Arc::new(KnownNodes::default());
        // Subscribed before any source feeds them: no departure is missed.
        let pods_gone = pods.subscribe_gone();
        let nodes_gone = known_nodes.subscribe_gone();
        let reload = ReloadTrigger::default();
        let mut background = Vec::new();
        if cfg.policy_file.is_some() {
            background.push(policy.spawn_poller(
                cfg.reload_interval(),
                &reload,
                "policy",
                Arc::clone(&metrics),
                |_| {},
            ));
        }
        if let Some(k) = &cfg.kubernetes {
            let source = KubeSource::new(k).map_err(|e| startup("kubernetes")(e.to_string()))?;
            // Behind until the first list lands.
            pods.set_stale(true);
            if k.watch_nodes {
                background.push(tokio::spawn(kube_watch::run(
                    source.clone(),
                    NodeView(Arc::clone(&known_nodes)),
                    Arc::clone(&metrics),
                )));
            }
            background.push(tokio::spawn(kube_watch::run(
                source,
                PodView(Arc::clone(&pods)),
                Arc::clone(&metrics),
            )));
        }
        if let Some(path) = &cfg.pods_file {
            let source = Watched::load(path, file_source::parse_handed_over)
                .map_err(startup("pods file"))?;
            pods.replace_all(source.get().take());
            let index = Arc::clone(&pods);
            background.push(source.spawn_poller(
                cfg.reload_interval(),
                &reload,
                "pods",
                Arc::clone(&metrics),
                move |fresh| index.replace_all(fresh.take()),
            ));
        }
        tracing::info!(
            realm = %cfg.realm,
            realms = %served.describe(),
            role_accounts = policy.get().len(),
            pods = pods.len(),
            "controller started"
        );
        let reserved = crate::admission::Reserved {
            // Every realm's admin principal (a further realm's named with
            // its realm, or taken to be of it).
            principals: std::iter::once((&cfg.kadmin.principal, cfg.realm.as_str()))
                .chain(
                    cfg.realms
                        .iter()
                        .filter_map(|r| r.kadmin.as_ref().map(|k| (&k.principal, r.name.as_str()))),
                )
                .filter_map(|(p, realm)| crate::names::ServicePrincipal::parse(p, realm).ok())
                .map(|p| p.to_string())
                .collect(),
            tls_names: cfg
                .tls
                .as_ref()
                .map(|t| t.names.iter().cloned().collect())
                .unwrap_or_default(),
            host_patterns: cfg.reserved.host_patterns.clone(),
            short_node_names: cfg.auth.short_node_names,
        };
        let issued = Issued::new(Arc::clone(&store), cluster.is_shared())
            .map_err(startup("volume records"))?;
        let node_registry =
            NodeRegistry::load(Arc::clone(&store)).map_err(startup("node registry"))?;
        let connections = Connections::new(accept_limits(&cfg.limits));
        let state = Arc::new(ControllerState {
            realm: served,
            connections,
            denials: Denials::new(DENIAL_WINDOW, 10_000),
            update_streams_per_node: cfg.limits.update_streams_per_node,
            pods,
            known_nodes,
            policy,
            keytabs,
            tickets,
            certs,
            keys,
            pod_krb5_conf,
            metrics,
            audit,
            issued,
            store,
            audit_heads: Arc::default(),
            node_registry,
            leases: Leases::new(Duration::from_secs(cfg.leases.ttl_secs)),
            cluster: Arc::clone(&cluster),
            updates: Updates::default(),
            held: Default::default(),
            auth,
            pod_tokens,
            psat,
            backends,
            closing: tokio::sync::watch::channel(false).0,
            reserved,
            rotate_on_loss: cfg
                .leases
                .rotate_keytabs_on_loss
                .then(|| Duration::from_secs(cfg.leases.rotation_grace_secs)),
            heartbeat_secs: if cfg.leases.heartbeat_secs > 0 {
                cfg.leases.heartbeat_secs
            } else {
                (cfg.leases.ttl_secs / 3).max(1)
            },
        });
        for (realm, backend) in state.backends.iter() {
            let (admin, realm) = (Arc::clone(&backend.admin), realm.to_string());
            background.push(tokio::spawn(async move {
                if let Err(e) = admin.warm_up().await {
                    tracing::warn!(%realm, error = %e, "kadmin session not opened ahead of use; the first extraction opens it");
                }
            }));
        }
        background.extend(cluster.spawn_election());
        background.push(tokio::spawn({
            let (mut leadership, gauge) = (cluster.leadership(), state.metrics.leader.clone());
            async move {
                loop {
                    gauge.set(i64::from(*leadership.borrow_and_update()));
                    if leadership.changed().await.is_err() {
                        break;
                    }
                }
            }
        }));
        background.push(tokio::spawn(crate::rotation::run_purges(
            Arc::clone(&state),
            Duration::from_secs(1),
        )));
        background.push(crate::store::health::spawn_probe(
            Arc::clone(&state.store),
            state.metrics.store_up.clone(),
            Duration::from_secs(2),
        ));
        background.push(tokio::spawn({
            let state = Arc::clone(&state);
            async move {
                let mut tick = tokio::time::interval(Duration::from_secs(5));
                loop {
                    tick.tick().await;
                    state.record_denial_summaries(false).await;
                }
            }
        }));
        // Leases lapse on their own; deletions in the cluster act at once.
        background.push(crate::nodes::loss::spawn_sweeper(Arc::clone(&state)));
        background.push(crate::nodes::loss::spawn_deleted_nodes(
            Arc::clone(&state),
            nodes_gone,
        ));
        background.push(crate::pods::retire::spawn(Arc::clone(&state), pods_gone));
        background.push(crate::revocation_sync::spawn(Arc::clone(&state)));
        background.push(tokio::spawn({
            let state = Arc::clone(&state);
            let mut account_events = account_events;
            async move {
                while let Some(event) = account_events.recv().await {
                    if let Err(e) = state.record(vec![event]).await {
                        tracing::error!(error = %e, "cannot audit a created Active Directory account");
                    }
                }
            }
        }));
        if let Some((client, sync)) = directory_sync {
            background.push(crate::ad::sync::spawn(
                Arc::clone(&state),
                client,
                sync,
                reload.subscribe(),
            ));
        }
        let (tls, serving_cert) = match &cfg.tls {
            None => {
                tracing::warn!("no [tls]: node and admin APIs are served in clear text");
                (None, None)
            }
            Some(t) => {
                let (tls, cert, task) = serving_tls(cfg, t, &state, &reload)?;
                background.push(task);
                (Some(tls), Some(cert))
            }
        };
        let webhook = crate::webhook::start::prepare(cfg, &state, serving_cert)
            .map_err(startup("webhook"))?;
        Ok(Controller {
            tls,
            reload,
            webhook,
            state,
            background,
            metrics_listen: cfg.metrics_listen,
            limits: cfg.limits.clone(),
        })
    }

    /// Fires to reload every hot-reloaded file at once (`SIGHUP`).
    pub fn reload_trigger(&self) -> ReloadTrigger {
        self.reload.clone()
    }

    /// The controller's metrics.
    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.state.metrics)
    }

    /// Whether this controller can issue: false while its store (etcd)
    /// does not answer. For `/readyz`: a load balancer then sends nodes to
    /// another controller instead.
    pub fn readiness(&self) -> impl Fn() -> bool + Send + Sync + 'static {
        let store = Arc::clone(&self.state.store);
        move || store.healthy()
    }

    /// Where the admission webhook listens (with `[webhook]`).
    pub fn webhook_addr(&self) -> Option<std::net::SocketAddr> {
        self.webhook.as_ref().and_then(|(l, _)| l.local_addr())
    }

    /// The pod index, for pod sources that feed it directly.
    pub fn pods(&self) -> Arc<PodIndex> {
        Arc::clone(&self.state.pods)
    }

    /// The shared state, for in-process callers of the operations behind
    /// the admin API (e.g. [`crate::rotation::rotate_keytab`]).
    pub fn state(&self) -> Arc<ControllerState> {
        Arc::clone(&self.state)
    }

    /// The nodes the cluster knows (empty without a node watch).
    pub fn known_nodes(&self) -> Arc<KnownNodes> {
        Arc::clone(&self.state.known_nodes)
    }

    /// Serves the node API on `listener` until `shutdown` completes.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ServeError> {
        let mut background = self.background;
        if let Some(addr) = self.metrics_listen {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| startup("metrics listener")(format!("{addr}: {e}")))?;
            let metrics = Arc::clone(&self.state.metrics);
            background.push(tokio::spawn(async move {
                if let Err(e) = metrics.serve(listener).await {
                    tracing::error!(error = %e, "metrics server stopped");
                }
            }));
        }
        if let Some((listener, webhook)) = self.webhook {
            background.push(tokio::spawn(listener.serve(webhook)));
        }
        let api = NodeApi::new(Arc::clone(&self.state));
        let admin = AdminApi::new(Arc::clone(&self.state));
        let l = &self.limits;
        let mut builder = tonic::transport::Server::builder()
            .max_concurrent_streams(l.max_concurrent_streams)
            .concurrency_limit_per_connection(l.max_concurrent_streams as usize)
            .http2_max_header_list_size(l.max_header_list_bytes)
            .http2_max_pending_accept_reset_streams(Some(l.max_concurrent_streams as usize))
            // Dead peers are found and their connections closed.
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)))
            .layer(crate::api::date_header::layer());
        let incoming = Incoming::new(listener, Arc::clone(&self.state.connections));
        let router = builder
            .add_service(
                NodeCredentialsServer::new(api).max_decoding_message_size(l.max_message_bytes),
            )
            .add_service(AdminServer::new(admin).max_decoding_message_size(l.max_message_bytes));
        let shutdown = {
            let state = Arc::clone(&self.state);
            async move {
                shutdown.await;
                state.closing.send_replace(true);
            }
        };
        let result = match &self.tls {
            Some(tls) => {
                router
                    .serve_with_incoming_shutdown(tls.incoming(incoming), shutdown)
                    .await
            }
            None => {
                router
                    .serve_with_incoming_shutdown(incoming, shutdown)
                    .await
            }
        };
        for task in &background {
            task.abort();
        }
        for task in background {
            let _ = task.await;
        }
        self.state.record_denial_summaries(true).await;
        // Stopped means stopped: the store file is released before this
        // returns, so a new controller (a restart) can open it at once.
        let store = Arc::clone(&self.state.store);
        drop(self.state);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while Arc::strong_count(&store) > 1 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if Arc::strong_count(&store) > 1 {
            tracing::warn!("store still in use 10 s after shutdown");
        }
        result.map_err(ServeError::from)
    }
}
