//! The controller's shared state, built once at start from the config.

use std::sync::Arc;

use kcred_audit::{AuditError, AuditEvent, AuditLog};

use crate::auth::Auth;
use crate::issued::Issued;
use crate::issuers::certs::CertIssuer;
use crate::issuers::keys::KeyIssuer;
use crate::issuers::keytab::KeytabIssuer;
use crate::issuers::tickets::TicketIssuer;
use crate::metrics::Metrics;
use crate::nodes::leases::Leases;
use crate::nodes::registry::NodeRegistry;
use crate::nodes::updates::Updates;
use crate::pods::PodIndex;
use crate::policy::Policy;
use crate::reload::Watched;
use crate::store::Store;

/// What every request handler reads.
pub struct ControllerState {
    /// The realms served (the controller's own is the default).
    pub realm: crate::names::Realms,
    /// Pods as the controller knows them.
    pub pods: Arc<PodIndex>,
    /// Nodes the cluster knows (from the node watch).
    pub known_nodes: Arc<crate::nodes::known::KnownNodes>,
    /// The role-account policy in force.
    pub policy: Arc<Watched<Policy>>,
    /// Keytab issuer.
    pub keytabs: Arc<KeytabIssuer>,
    /// Ticket issuer.
    pub tickets: TicketIssuer,
    /// Certificate issuer.
    pub certs: CertIssuer,
    /// Key-ring issuer.
    pub keys: KeyIssuer,
    /// The `krb5.conf` delivered to pods (per the realms of a volume's
    /// credentials).
    pub pod_krb5_conf: crate::realms::krb5_conf::PodKrb5Conf,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The audit log.
    pub audit: Arc<AuditLog>,
    /// The store (for the audit head and listings).
    pub store: Arc<Store>,
    /// Coalesces the audit head's store writes.
    pub audit_heads: Arc<crate::audit_head::HeadWriter>,
    /// What was issued where.
    pub issued: Issued,
    /// Open connections and the accept side's limits.
    pub connections: Arc<crate::listener::Connections>,
    /// Most update streams one node may hold.
    pub update_streams_per_node: usize,
    /// Refusals of anonymous callers, audited in aggregate.
    pub denials: crate::denials::Denials,
    /// Node leases.
    pub leases: Leases,
    /// The other controllers on the store, and who leads.
    pub cluster: Arc<crate::cluster::Cluster>,
    /// Every node ever seen (persisted).
    pub node_registry: NodeRegistry,
    /// Update streams to node drivers.
    pub updates: Updates,
    /// What each node listed at its last heartbeat.
    pub held: crate::nodes::held::Held,
    /// Who may call.
    pub auth: Auth,
    /// Pods' own tokens, when required (`kubernetes.require_pod_token`).
    pub pod_tokens: Option<crate::kubernetes::pod_tokens::PodTokens>,
    /// Nodes authenticated by their driver pod's token (`[auth.psat]`).
    pub psat: Option<crate::kubernetes::psat::Psat>,
    /// Each realm's key administration backend and KDC gate.
    pub backends: Arc<crate::realms::Backends>,
    /// Heartbeat interval asked of nodes.
    pub heartbeat_secs: u64,
    /// Identities and names never issued to pods.
    pub reserved: crate::admission::Reserved,
    /// Rotate a lost node's keytabs, with this grace period.
    pub rotate_on_loss: Option<std::time::Duration>,
    /// Set when the controller starts shutting down: long-lived streams
    /// end, so a graceful shutdown does not wait on them forever.
    pub closing: tokio::sync::watch::Sender<bool>,
}

impl ControllerState {
    /// Refuses a Kerberos token another controller already accepted (a
    /// replay across controllers; see [`crate::cluster::replay`]). Calls
    /// without a token (mTLS) pass.
    pub async fn refuse_replayed<T>(
        &self,
        request: &tonic::Request<T>,
    ) -> Result<(), crate::reasons::Refusal> {
        use kcred_proto::kcred::v1::Reason;
        let Some(token) = request.metadata().get(kcred_auth::METADATA_KEY) else {
            return Ok(());
        };
        match self.cluster.first_use(token.as_bytes()).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(crate::reasons::Refusal::new(
                Reason::Unauthenticated,
                "token refused: another controller already accepted it (replay)",
            )),
            Err(e) => Err(crate::reasons::Refusal::from_error(&e)),
        }
    }

    /// Whether `host` is a node's name (its `host/` key is reserved): a
    /// node ever seen (persisted, so a restart forgets none), on the
    /// cluster's node list, holding a lease, or with pods bound to it.
    pub fn is_node(&self, host: &str) -> bool {
        self.node_registry.contains(host)
            || self.known_nodes.node_known(host)
            || self.leases.state(host).is_some()
            || self.pods.any_on_node(host)
    }

    /// Audits a refused call: individually when the caller proved an
    /// identity, else in aggregate per source (see [`crate::denials`]).
    pub async fn record_refusal(
        &self,
        peer: Option<std::net::SocketAddr>,
        event: AuditEvent,
        reason: kcred_proto::kcred::v1::Reason,
    ) {
        let anonymous = reason == kcred_proto::kcred::v1::Reason::Unauthenticated;
        if anonymous && !self.denials.first_in_window(peer, reason) {
            return;
        }
        if let Err(e) = self.record(vec![event]).await {
            tracing::error!(error = %e, "cannot audit a refused call");
        }
    }

    /// Records the summaries of anonymous refusals (all of them with `all`,
    /// at shutdown).
    pub async fn record_denial_summaries(&self, all: bool) {
        let events = self.denials.summaries(all);
        if let Err(e) = self.record(events).await {
            tracing::error!(error = %e, "cannot audit refusal summaries");
        }
    }

    /// Counts a refusal or failure by its reason.
    pub fn count_refusal(&self, reason: kcred_proto::kcred::v1::Reason) {
        self.metrics
            .refusals
            .with_label_values(&[&reason.label()])
            .inc();
    }

    /// Appends events durably (and has the new head remembered in the
    /// store). Concurrent callers share one sync and wait for it as tasks,
    /// not as blocked threads (see
    /// [`kcred_audit::AuditLog::append_all_durably`]).
    pub async fn record(&self, events: Vec<AuditEvent>) -> Result<(), AuditError> {
        if events.is_empty() {
            return Ok(());
        }
        let records = self.audit.append_all_durably(events).await?;
        // Coalesced: a caller finding a writer at work leaves its head to
        // it; the one that becomes the writer stores off the async workers,
        // lingering first so that the heads of a busy moment share one
        // commit. Nobody waits for it: the records are durable already, and
        // the stored head only has to catch up. It is a store commit, a
        // second sync. A writer holds the store until it is done, and a
        // stopping controller waits for the store to be released
        // (crate::server), so a clean stop stores the last head; a crash
        // may leave it a linger's appends behind the log, which a start
        // accepts (the log may run ahead).
        if let Some(turn) = records
            .last()
            .and_then(|r| self.audit_heads.offer_turn(r.head()))
        {
            let key_id = self.audit.signer().key_id().to_string();
            drop(tokio::spawn(turn.run(Arc::clone(&self.store), key_id)));
        }
        Ok(())
    }
}
