//! The controller's configuration file (TOML); see
//! `deploy/controller/controller.example.toml` for a documented example.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::names;

/// Why the configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("config {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML for the config's shape.
    #[error("config {path}: {source}")]
    Parse {
        /// The file.
        path: String,
        /// Where and why.
        #[source]
        source: toml::de::Error,
    },
    /// A setting breaks a rule.
    #[error("config {path}: {source}")]
    Invalid {
        /// The file.
        path: String,
        /// Which setting, and the rule.
        #[source]
        source: InvalidSetting,
    },
}

/// A setting that breaks a rule: the message names the setting.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InvalidSetting(String);

impl From<&str> for InvalidSetting {
    fn from(s: &str) -> Self {
        InvalidSetting(s.to_string())
    }
}

impl From<String> for InvalidSetting {
    fn from(s: String) -> Self {
        InvalidSetting(s)
    }
}

/// Everything the controller needs to start.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address the node API listens on.
    pub listen: SocketAddr,
    /// The controller's own Kerberos realm: the default of principal
    /// names without a realm, administered by `[kadmin]` or
    /// `[active_directory]`; node authentication uses it.
    pub realm: String,
    /// The default realm's KDCs (`host` or `host:port`), named in the
    /// `krb5.conf` of volumes holding credentials of several realms.
    /// Required with `[[realms]]`.
    #[serde(default)]
    pub kdcs: Vec<String>,
    /// Further realms served, each with its own backend and KDCs.
    #[serde(default)]
    pub realms: Vec<crate::realms::settings::RealmSection>,
    /// `KRB5_CONFIG` for Kerberos tools the controller runs (default: system).
    #[serde(default)]
    pub krb5_config: Option<PathBuf>,
    /// The `krb5.conf` delivered to pods (default: `krb5_config`, else
    /// `/etc/krb5.conf`).
    #[serde(default)]
    pub pod_krb5_conf: Option<PathBuf>,
    /// File with the 32-byte master key, hex; mode 0600.
    pub master_key_file: PathBuf,
    /// The embedded store's file (with the default `[store]` backend).
    #[serde(default)]
    pub store_path: Option<PathBuf>,
    /// Where records live: the embedded file (default) or etcd.
    #[serde(default)]
    pub store: crate::store::settings::StoreSection,
    /// The role-account policy (hot-reloaded). Exactly one policy source:
    /// this or `[active_directory.sync]`.
    #[serde(default)]
    pub policy_file: Option<PathBuf>,
    /// A static pod source (hot-reloaded), for running without the
    /// Kubernetes API. Exactly one pod source: this or `[kubernetes]`.
    #[serde(default)]
    pub pods_file: Option<PathBuf>,
    /// The Kubernetes API as the pod and node source.
    #[serde(default)]
    pub kubernetes: Option<KubernetesSection>,
    /// How often hot-reloaded files are checked.
    #[serde(default = "default_reload_secs")]
    pub reload_interval_secs: u64,
    /// How to reach kadmind (with AD: only `work_dir` and `timeout_secs`).
    pub kadmin: KadminSection,
    /// Present when the realm is an Active Directory domain: keys are then
    /// set and derived there instead of extracted from kadmind.
    #[serde(default)]
    pub active_directory: Option<crate::ad::settings::ActiveDirectorySection>,
    /// Where `/metrics` is served (Prometheus text format); off if unset.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    /// The KDC gate's budgets.
    #[serde(default)]
    pub gate: crate::gate::GateConfig,
    /// The audit log (hash-chained, signed JSON lines).
    pub audit_log: PathBuf,
    /// The audit signing key (Ed25519, PKCS#8 hex; created if missing, 0600).
    pub audit_key: PathBuf,
    /// Audit segments and the SIEM copy.
    #[serde(default)]
    pub audit: crate::audit_settings::AuditSection,
    /// Share of a ticket's or certificate's life after which it is renewed.
    #[serde(default = "default_refresh_fraction")]
    pub refresh_fraction: f64,
    /// Prestashed tickets.
    #[serde(default)]
    pub tickets: TicketsSection,
    /// Certificates.
    #[serde(default)]
    pub certs: CertsSection,
    /// Who may call: node and admin authentication.
    #[serde(default)]
    pub auth: AuthSection,
    /// Node leases.
    #[serde(default)]
    pub leases: LeasesSection,
    /// TLS for the node and admin APIs.
    #[serde(default)]
    pub tls: Option<TlsSection>,
    /// Connection and request limits (the defaults are safe).
    #[serde(default)]
    pub limits: LimitsSection,
    /// Identities never issued to pods beyond those kcred knows itself.
    #[serde(default)]
    pub reserved: ReservedSection,
    /// The admission webhook's listener (none: no webhook).
    #[serde(default)]
    pub webhook: Option<crate::webhook::WebhookSection>,
    /// Set from the command line (`--acknowledge-audit-loss`), never from
    /// the file: the operator's reason for starting although the audit log
    /// no longer reaches its stored head. The acknowledgement is recorded.
    #[serde(skip)]
    pub acknowledge_audit_loss: Option<String>,
}

/// The `[tls]` table: the controller serves TLS with a certificate from its
/// own CA (or an operator's certificate), and writes the CA certificate
/// where nodes and kcredctl can get their trust bundle.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// DNS names clients use to reach the controller (its certificate's
    /// SANs). Ignored when `cert_file` is set.
    #[serde(default)]
    pub names: Vec<String>,
    /// Where the CA certificate (the clients' trust bundle) is written.
    pub ca_export_file: Option<PathBuf>,
    /// An operator-supplied serving certificate (PEM) instead.
    pub cert_file: Option<PathBuf>,
    /// Its key (PEM).
    pub key_file: Option<PathBuf>,
    /// CA of client certificates (mTLS), the alternative identity for
    /// nodes without a host keytab (certificate DNS name = node name) and
    /// for admin tools (`cert:<subject CN>` in auth.operators/auditors).
    pub client_ca_file: Option<PathBuf>,
    /// Lifetime of the serving certificate the controller issues itself
    /// (without `cert_file`); renewed after `refresh_fraction` of it,
    /// without a restart.
    #[serde(default = "default_serving_cert_lifetime")]
    pub serving_cert_lifetime_secs: u64,
    /// CA certificates written into the trust bundle (`ca_export_file`,
    /// pods' `ca.crt`) beside the controller's own: during a CA rotation,
    /// the next CA before the switch, the previous one after it (see
    /// docs/ca-rotation.md).
    #[serde(default)]
    pub extra_trusted_ca_files: Vec<PathBuf>,
}

fn default_serving_cert_lifetime() -> u64 {
    90 * 86_400
}

/// The `[kubernetes]` table: where the API server is and how to log in,
/// from a kubeconfig file (the controller runs outside the cluster) or
/// the pod's own service account (`in_cluster = true`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesSection {
    /// The kubeconfig file.
    #[serde(default)]
    pub kubeconfig: Option<PathBuf>,
    /// Its context to use (default: its current context).
    #[serde(default)]
    pub context: Option<String>,
    /// Use the in-cluster service account and `KUBERNETES_SERVICE_HOST`.
    #[serde(default)]
    pub in_cluster: bool,
    /// Also watch nodes (needs `list`/`watch` on nodes), so rules can tell
    /// node names apart and a deleted node counts as lost.
    #[serde(default = "default_true")]
    pub watch_nodes: bool,
    /// Refuse fetches without the pod's own bound service-account token
    /// (reviewed with a TokenReview; needs `create` on tokenreviews).
    #[serde(default)]
    pub require_pod_token: bool,
    /// The audience of pods' tokens (the CSIDriver's tokenRequests).
    #[serde(default = "default_audience")]
    pub token_audience: String,
}

fn default_true() -> bool {
    true
}

fn default_audience() -> String {
    "kcred".into()
}

/// The `[auth.psat]` table: node drivers may prove their node with their
/// own DaemonSet pod's bound service-account token (like SPIRE's
/// `k8s_psat`): the API server vouches for the token, the pod must run in
/// this namespace as this service account, and its `spec.nodeName` is the
/// node. Needs `[kubernetes]` (tokenreviews create, pods get).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PsatSection {
    /// The driver DaemonSet's namespace.
    pub namespace: String,
    /// The driver DaemonSet's service account.
    pub service_account: String,
    /// The audience of the driver's projected token.
    pub audience: String,
}

impl Default for PsatSection {
    fn default() -> Self {
        PsatSection {
            namespace: "kcred".into(),
            service_account: "kcred-csi-driver".into(),
            audience: default_audience(),
        }
    }
}

/// The `[limits]` table: what one client, or everyone together, may hold
/// of the controller. Anyone who can reach the port can open connections;
/// these keep the controller serving its nodes while they do.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    /// Most open connections (keep well below the file descriptor limit;
    /// lowered at start if the limit is too low for it).
    pub max_connections: usize,
    /// Most connections from one IP address that have not made an
    /// authenticated call yet. Authenticated connections do not count, so
    /// nodes behind one NAT address are not limited by it.
    pub max_unauthenticated_per_source: usize,
    /// Most authenticated connections speaking for one node; when a node
    /// opens one more, its oldest is closed.
    pub max_connections_per_node: usize,
    /// Longest TLS handshake.
    pub tls_handshake_timeout_secs: u64,
    /// A connection without an authenticated call this long after it was
    /// accepted is closed.
    pub unauthenticated_idle_secs: u64,
    /// Most concurrent HTTP/2 streams (calls) on one connection.
    pub max_concurrent_streams: u32,
    /// Largest HTTP/2 header list (metadata, Kerberos tokens included).
    pub max_header_list_bytes: u32,
    /// Largest request message.
    pub max_message_bytes: usize,
    /// Most update streams (WatchUpdates) one node may hold, and most
    /// heartbeat streams (one in use, the rest a reconnect's overlap).
    pub update_streams_per_node: usize,
}

impl Default for LimitsSection {
    fn default() -> Self {
        LimitsSection {
            max_connections: 4096,
            max_unauthenticated_per_source: 64,
            max_connections_per_node: 16,
            tls_handshake_timeout_secs: 10,
            unauthenticated_idle_secs: 30,
            max_concurrent_streams: 64,
            max_header_list_bytes: 64 * 1024,
            max_message_bytes: 4 * 1024 * 1024,
            update_streams_per_node: 4,
        }
    }
}

/// The `[reserved]` table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReservedSection {
    /// Host names of nodes, whether or not kcred has seen them yet (new
    /// nodes, nodes without pods): their `host/` keys are never issued to
    /// pods, whatever the policy grants. `*` matches any run of
    /// characters, e.g. `"*.nodes.example.com"`.
    pub host_patterns: Vec<String>,
}

/// How callers prove who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// GSSAPI (Kerberos) tokens on every call: nodes with their
    /// `host/<fqdn>` keytab, people and tools with their own principal.
    Kerberos,
    /// No authentication: the node API trusts the node name a caller
    /// claims and the admin API refuses everyone. Development only.
    None,
}

/// The `[auth]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSection {
    /// Kerberos (default) or none.
    pub mode: AuthMode,
    /// Keytab with the controller's service principal
    /// (`kcred/<controller fqdn>@REALM`).
    pub keytab: Option<PathBuf>,
    /// Replay cache file (survives restarts, one per controller).
    pub replay_cache: Option<PathBuf>,
    /// Node name = first label of the host principal's name (else the
    /// whole FQDN).
    pub short_node_names: bool,
    /// Principals that may read and change (rotate, revoke).
    pub operators: Vec<String>,
    /// Principals that may only read (status, list, audit).
    pub auditors: Vec<String>,
    /// Nodes may also authenticate with their driver pod's token.
    pub psat: Option<PsatSection>,
}

impl Default for AuthSection {
    fn default() -> Self {
        AuthSection {
            mode: AuthMode::Kerberos,
            keytab: None,
            replay_cache: None,
            short_node_names: false,
            operators: vec![],
            auditors: vec![],
            psat: None,
        }
    }
}

/// The `[leases]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LeasesSection {
    /// A node that has not heartbeated for this long is lost.
    pub ttl_secs: u64,
    /// Heartbeat interval the controller asks nodes for (ttl / 3 if 0).
    pub heartbeat_secs: u64,
    /// Rotate the keytabs a lost node held: its disk may be in someone
    /// else's hands. Every other holder gets the new kvno at once.
    pub rotate_keytabs_on_loss: bool,
    /// Grace period of those rotations, seconds.
    pub rotation_grace_secs: u64,
}

impl Default for LeasesSection {
    fn default() -> Self {
        LeasesSection {
            ttl_secs: 30,
            heartbeat_secs: 0,
            rotate_keytabs_on_loss: false,
            rotation_grace_secs: 3600,
        }
    }
}

/// The `[tickets]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TicketsSection {
    /// Requested ticket lifetime, seconds.
    pub lifetime_secs: u64,
    /// Requested renewable lifetime, seconds.
    pub renew_lifetime_secs: u64,
    /// The `kinit` binary.
    pub kinit: PathBuf,
}

impl Default for TicketsSection {
    fn default() -> Self {
        TicketsSection {
            lifetime_secs: 86_400,
            renew_lifetime_secs: 7 * 86_400,
            kinit: PathBuf::from("kinit"),
        }
    }
}

/// The `[certs]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CertsSection {
    /// Leaf lifetime, seconds.
    pub lifetime_secs: u64,
    /// Operator-supplied CA certificate (PEM); with `ca_key_file`.
    pub ca_cert_file: Option<PathBuf>,
    /// Operator-supplied CA key (PKCS#8 PEM).
    pub ca_key_file: Option<PathBuf>,
    /// Common name of a CA the controller generates itself.
    pub ca_common_name: String,
}

impl Default for CertsSection {
    fn default() -> Self {
        CertsSection {
            lifetime_secs: 86_400,
            ca_cert_file: None,
            ca_key_file: None,
            ca_common_name: "kcred CA".into(),
        }
    }
}

fn default_refresh_fraction() -> f64 {
    2.0 / 3.0
}

/// The `[kadmin]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KadminSection {
    /// The `kadmin` client binary.
    #[serde(default = "default_kadmin_program")]
    pub program: PathBuf,
    /// Admin principal holding the `e` privilege on served principals
    /// (required unless the realm is AD).
    #[serde(default)]
    pub principal: String,
    /// Keytab of the admin principal (required unless the realm is AD).
    #[serde(default)]
    pub keytab: PathBuf,
    /// Private directory for transient keytab files (put it on tmpfs).
    pub work_dir: PathBuf,
    /// Longest wait for one kadmin command.
    #[serde(default = "default_kadmin_timeout")]
    pub timeout_secs: u64,
}

fn default_reload_secs() -> u64 {
    2
}
fn default_kadmin_program() -> PathBuf {
    PathBuf::from("kadmin")
}
fn default_kadmin_timeout() -> u64 {
    30
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let path_text = || path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path_text(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Parses and validates a config file's content (`path` names it in
    /// errors).
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let path_text = || path.display().to_string();
        let cfg: Config = toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: path_text(),
            source,
        })?;
        cfg.validate().map_err(|source| ConfigError::Invalid {
            path: path_text(),
            source,
        })?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), InvalidSetting> {
        names::validate_realm(&self.realm).map_err(|e| InvalidSetting(e.to_string()))?;
        self.store
            .validate(self.store_path.as_deref())
            .map_err(InvalidSetting)?;
        if self.reload_interval_secs == 0 {
            return Err("reload_interval_secs must be at least 1".into());
        }
        if let Err(e) = self.audit.check() {
            return Err(InvalidSetting(e));
        }
        crate::realms::settings::validate_gate("gate", &self.gate).map_err(InvalidSetting)?;
        crate::realms::settings::validate(&self.realm, &self.kdcs, &self.realms)
            .map_err(InvalidSetting)?;
        if !(0.1..=0.95).contains(&self.refresh_fraction) {
            return Err("refresh_fraction must be between 0.1 and 0.95".into());
        }
        if self.certs.ca_cert_file.is_some() != self.certs.ca_key_file.is_some() {
            return Err("certs.ca_cert_file and certs.ca_key_file go together".into());
        }
        if self.tickets.lifetime_secs == 0 || self.certs.lifetime_secs < 60 {
            return Err(
                "tickets.lifetime_secs must be positive and certs.lifetime_secs at least 60".into(),
            );
        }
        if self.auth.mode == AuthMode::Kerberos && self.auth.keytab.is_none() {
            return Err("auth.keytab is required with auth.mode = \"kerberos\" (or set mode = \"none\" for development)".into());
        }
        if let Some(tls) = &self.tls {
            if tls.cert_file.is_some() != tls.key_file.is_some() {
                return Err("tls.cert_file and tls.key_file go together".into());
            }
            if tls.cert_file.is_none() && tls.names.is_empty() {
                return Err("tls.names (or tls.cert_file) is required".into());
            }
            if tls.serving_cert_lifetime_secs < 60 {
                return Err("tls.serving_cert_lifetime_secs must be at least 60".into());
            }
        }
        match (&self.pods_file, &self.kubernetes) {
            (None, None) => {
                return Err("no pod source: set pods_file or a [kubernetes] table (kubeconfig or in_cluster = true); without one the controller cannot tell which pods exist".into());
            }
            (Some(_), Some(_)) => {
                return Err(
                    "pods_file and [kubernetes] are both pod sources: configure one".into(),
                );
            }
            (None, Some(k)) => {
                if k.in_cluster == k.kubeconfig.is_some() {
                    return Err(
                        "kubernetes: set exactly one of kubeconfig or in_cluster = true".into(),
                    );
                }
                if k.in_cluster && k.context.is_some() {
                    return Err("kubernetes.context goes with kubeconfig, not in_cluster".into());
                }
            }
            (Some(_), None) => {}
        }
        if let Some(k) = &self.kubernetes
            && k.token_audience.is_empty()
        {
            return Err("kubernetes.token_audience must not be empty".into());
        }
        if let Some(p) = &self.auth.psat {
            if self.kubernetes.is_none() {
                return Err(
                    "auth.psat needs a [kubernetes] table: tokens are reviewed by the API server"
                        .into(),
                );
            }
            if p.namespace.is_empty() || p.service_account.is_empty() || p.audience.is_empty() {
                return Err(
                    "auth.psat: namespace, service_account and audience must not be empty".into(),
                );
            }
        }
        let l = &self.limits;
        if l.max_connections == 0
            || l.max_unauthenticated_per_source == 0
            || l.max_connections_per_node == 0
            || l.tls_handshake_timeout_secs == 0
            || l.unauthenticated_idle_secs == 0
            || l.max_concurrent_streams == 0
            || l.update_streams_per_node == 0
        {
            return Err("limits: every limit must be at least 1".into());
        }
        if l.max_header_list_bytes < 8 * 1024 || l.max_message_bytes < 64 * 1024 {
            return Err(
                "limits: max_header_list_bytes must be at least 8192 (Kerberos tokens) and max_message_bytes at least 65536"
                    .into(),
            );
        }
        for p in &self.reserved.host_patterns {
            let ok = !p.is_empty()
                && p.len() <= 253
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.*".contains(&b));
            if !ok || p.bytes().all(|b| b == b'*' || b == b'.') {
                return Err(InvalidSetting(format!(
                    "reserved.host_patterns: {p:?} must be a host name pattern of letters, digits, '-', '.' and '*' naming more than everything"
                )));
            }
        }
        if self.leases.ttl_secs == 0 {
            return Err("leases.ttl_secs must be at least 1".into());
        }
        if self.kadmin.timeout_secs == 0 {
            return Err("kadmin.timeout_secs must be at least 1".into());
        }
        let synced = self
            .active_directory
            .as_ref()
            .is_some_and(|ad| ad.sync.is_some());
        match (&self.policy_file, synced) {
            (Some(_), true) => return Err("policy_file and [active_directory.sync] are both set: the policy comes from one source, remove one".into()),
            (None, false) => return Err("policy_file is required (unless [active_directory.sync] is set)".into()),
            _ => {}
        }
        match &self.active_directory {
            Some(ad) => ad.validate().map_err(InvalidSetting)?,
            None if self.kadmin.principal.is_empty()
                || self.kadmin.keytab.as_os_str().is_empty() =>
            {
                return Err("kadmin.principal and kadmin.keytab are required (unless [active_directory] is set)".into());
            }
            None => {}
        }
        if let Some(w) = &self.webhook {
            w.validate(self.tls.is_some()).map_err(InvalidSetting)?;
        }
        Ok(())
    }

    /// How often to poll hot-reloaded files.
    pub fn reload_interval(&self) -> Duration {
        Duration::from_secs(self.reload_interval_secs)
    }

    /// The file delivered to pods as `krb5.conf`.
    pub fn pod_krb5_conf_path(&self) -> PathBuf {
        self.pod_krb5_conf
            .clone()
            .or_else(|| self.krb5_config.clone())
            .unwrap_or_else(|| PathBuf::from("/etc/krb5.conf"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
listen = "127.0.0.1:0"
realm = "EXAMPLE.COM"
master_key_file = "/k"
store_path = "/s"
policy_file = "/p"
audit_log = "/a"
audit_key = "/ak"
"#;
    const TAIL: &str = "[kadmin]\nprincipal = \"kcred/admin\"\nkeytab = \"/kt\"\nwork_dir = \"/w\"\n[auth]\nmode = \"none\"\n";

    fn load(top: &str, tables: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("controller.toml");
        std::fs::write(&path, format!("{BASE}{top}\n{TAIL}{tables}")).unwrap();
        Config::load(&path)
    }

    #[test]
    fn the_documented_example_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../deploy/controller/controller.example.toml");
        let cfg = Config::load(&path).unwrap();
        assert!(cfg.kubernetes.is_some() && cfg.pods_file.is_none());
    }

    #[test]
    fn a_controller_without_a_pod_source_refuses_to_start_and_says_so() {
        let err = load("", "").unwrap_err().to_string();
        assert!(err.contains("no pod source"), "{err}");
        assert!(
            err.contains("pods_file") && err.contains("[kubernetes]"),
            "{err}"
        );
    }

    fn parse_text(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("controller.toml"), text)
    }

    const AD: &str = "[active_directory]\nldap_url = \"ldaps://dc1.example.com\"\nca_file = \"/ca\"\n\
                      bind_dn = \"CN=kcred,DC=example,DC=com\"\nbind_password_file = \"/pw\"\n\
                      base_dn = \"OU=kcred,DC=example,DC=com\"\n";

    #[test]
    fn an_active_directory_realm_needs_no_kadmin_principal_but_an_ldaps_url() {
        let kadmin = "[kadmin]\nwork_dir = \"/w\"\n[auth]\nmode = \"none\"\n";
        let top = format!("{BASE}pods_file = \"/pods\"\n{kadmin}");
        let cfg = parse_text(&format!("{top}{AD}")).unwrap();
        assert!(cfg.active_directory.is_some());

        let plain = parse_text(&format!("{top}{}", AD.replace("ldaps://", "ldap://")))
            .unwrap_err()
            .to_string();
        assert!(plain.contains("active_directory.ldap_url"), "{plain}");
        let mit = parse_text(&top).unwrap_err().to_string();
        assert!(mit.contains("kadmin.principal"), "{mit}");
    }

    #[test]
    fn a_directory_synced_policy_and_a_policy_file_are_not_both_allowed() {
        let kadmin = "[kadmin]\nwork_dir = \"/w\"\n[auth]\nmode = \"none\"\n";
        let sync = "[active_directory.sync]\nbase_dn = \"OU=kcred,DC=example,DC=com\"\n";
        let top = format!("{BASE}pods_file = \"/pods\"\n{kadmin}");
        let both = parse_text(&format!("{top}{AD}{sync}"))
            .unwrap_err()
            .to_string();
        assert!(
            both.contains("policy_file and [active_directory.sync]"),
            "{both}"
        );
        let synced = parse_text(&format!(
            "{}{AD}{sync}",
            top.replace("policy_file = \"/p\"", "")
        ))
        .unwrap();
        let sync = synced.active_directory.and_then(|ad| ad.sync).unwrap();
        assert_eq!(
            (sync.interval_secs, sync.namespace_group_prefix.as_str()),
            (60, "kcred-ns-")
        );
        let neither = parse_text(&top.replace("policy_file = \"/p\"", ""))
            .unwrap_err()
            .to_string();
        assert!(neither.contains("policy_file is required"), "{neither}");
    }

    const MIT_REALM: &str = "[[realms]]\nname = \"OTHER.COM\"\nkdcs = [\"kdc1.other.com\", \"kdc2.other.com:88\"]\n\
                             [realms.kadmin]\nprincipal = \"kcred/admin@OTHER.COM\"\nkeytab = \"/okt\"\nadmin_server = \"kdc1.other.com:749\"\n";

    fn ad_realm(name: &str) -> String {
        format!(
            "[[realms]]\nname = \"{name}\"\nkdcs = [\"dc1.ad.example.com\"]\n{}",
            AD.replace("[active_directory]", "[realms.active_directory]")
        )
    }

    fn realms(tables: &str) -> Result<Config, ConfigError> {
        load(
            "pods_file = \"/pods\"\nkdcs = [\"kdc.example.com\"]",
            tables,
        )
    }

    fn refused(tables: &str) -> String {
        realms(tables).unwrap_err().to_string()
    }

    #[test]
    fn further_realms_each_name_their_backend_and_kdcs() {
        let cfg = realms(&format!("{MIT_REALM}{}", ad_realm("AD.EXAMPLE.COM"))).unwrap();
        assert_eq!(cfg.kdcs, ["kdc.example.com"]);
        let names: Vec<_> = cfg.realms.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["OTHER.COM", "AD.EXAMPLE.COM"]);
        assert!(cfg.realms[0].kadmin.is_some() && cfg.realms[0].active_directory.is_none());
        assert!(cfg.realms[1].active_directory.is_some() && cfg.realms[1].kadmin.is_none());
        use crate::names::Served;
        let served = crate::realms::served(&cfg);
        assert!(served.serves("EXAMPLE.COM") && served.serves("AD.EXAMPLE.COM"));
        assert!(!served.serves("ELSEWHERE.COM"));
        // The single-realm form needs no kdcs.
        assert!(load("pods_file = \"/pods\"", "").unwrap().realms.is_empty());
    }

    #[test]
    fn a_realm_listed_twice_or_the_controllers_own_realm_listed_is_refused() {
        let twice = refused(&format!(
            "{}{}",
            ad_realm("AD.EXAMPLE.COM"),
            ad_realm("AD.EXAMPLE.COM")
        ));
        assert!(
            twice.contains("realms[\"AD.EXAMPLE.COM\"] is listed twice"),
            "{twice}"
        );
        let own = refused(&ad_realm("EXAMPLE.COM"));
        assert!(own.contains("controller's own realm"), "{own}");
    }

    #[test]
    fn a_realm_with_both_backends_or_neither_is_refused_naming_it() {
        let both = refused(&format!(
            "{MIT_REALM}{}",
            AD.replace("[active_directory]", "[realms.active_directory]")
        ));
        assert!(
            both.contains(
                "realms[\"OTHER.COM\"]: both [realms.kadmin] and [realms.active_directory]"
            ),
            "{both}"
        );
        let neither = refused("[[realms]]\nname = \"OTHER.COM\"\nkdcs = [\"kdc1.other.com\"]\n");
        assert!(
            neither.contains("realms[\"OTHER.COM\"]: no backend"),
            "{neither}"
        );
    }

    #[test]
    fn further_realms_need_kdcs_a_valid_name_and_no_directory_sync() {
        let no_kdcs = load("pods_file = \"/pods\"", MIT_REALM)
            .unwrap_err()
            .to_string();
        assert!(
            no_kdcs.contains("kdcs (the default realm's KDCs)"),
            "{no_kdcs}"
        );
        let bad_kdc = refused(&MIT_REALM.replace("kdc2.other.com:88", "kdc2 other"));
        assert!(
            bad_kdc.contains("realms[\"OTHER.COM\"].kdcs") && bad_kdc.contains("kdc2 other"),
            "{bad_kdc}"
        );
        let empty = refused(&MIT_REALM.replace(
            "kdcs = [\"kdc1.other.com\", \"kdc2.other.com:88\"]",
            "kdcs = []",
        ));
        assert!(empty.contains("at least one KDC"), "{empty}");
        let lower = refused(&MIT_REALM.replace("name = \"OTHER.COM\"", "name = \"other.com\""));
        assert!(lower.contains("realms[\"other.com\"].name"), "{lower}");
        let admin = refused(&MIT_REALM.replace("kdc1.other.com:749", "kdc1.other.com:x"));
        assert!(admin.contains("admin_server"), "{admin}");
        let sync = refused(&format!(
            "{}[realms.active_directory.sync]\nbase_dn = \"OU=kcred,DC=example,DC=com\"\n",
            ad_realm("AD.EXAMPLE.COM")
        ));
        assert!(sync.contains("active_directory.sync"), "{sync}");
        let ldap = refused(&ad_realm("AD.EXAMPLE.COM").replace("ldaps://", "ldap://"));
        assert!(
            ldap.contains("realms[\"AD.EXAMPLE.COM\"]: active_directory.ldap_url"),
            "{ldap}"
        );
        let budget = refused(&format!("{MIT_REALM}[realms.gate.kdc]\nburst = 0\n"));
        assert!(
            budget.contains("realms[\"OTHER.COM\"].gate.kdc"),
            "{budget}"
        );
    }

    #[test]
    fn the_kubernetes_table_is_a_pod_source() {
        let cfg = load(
            "",
            "[kubernetes]\nkubeconfig = \"/kc\"\ncontext = \"prod\"\n",
        )
        .unwrap();
        let k = cfg.kubernetes.unwrap();
        assert_eq!(k.context.as_deref(), Some("prod"));
        assert!(k.watch_nodes, "nodes are watched by default");
        assert!(load("", "[kubernetes]\nin_cluster = true\n").is_ok());
    }

    #[test]
    fn pod_tokens_are_optional_and_their_audience_defaults_to_kcred() {
        let k = load("", "[kubernetes]\nin_cluster = true\n")
            .unwrap()
            .kubernetes
            .unwrap();
        assert!(!k.require_pod_token);
        assert_eq!(k.token_audience, "kcred");
        let k = load(
            "",
            "[kubernetes]\nin_cluster = true\nrequire_pod_token = true\ntoken_audience = \"kcred.example.com\"\n",
        )
        .unwrap()
        .kubernetes
        .unwrap();
        assert!(k.require_pod_token);
        assert_eq!(k.token_audience, "kcred.example.com");
    }

    #[test]
    fn psat_defaults_to_the_charts_daemonset_and_needs_the_kubernetes_api() {
        let cfg = load("", "[kubernetes]\nin_cluster = true\n[auth.psat]\n").unwrap();
        let p = cfg.auth.psat.unwrap();
        assert_eq!(
            (
                p.namespace.as_str(),
                p.service_account.as_str(),
                p.audience.as_str()
            ),
            ("kcred", "kcred-csi-driver", "kcred")
        );
        let err = load("pods_file = \"/pods\"", "[auth.psat]\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("auth.psat needs a [kubernetes] table"),
            "{err}"
        );
    }

    #[test]
    fn two_pod_sources_or_an_ambiguous_kubernetes_table_are_refused() {
        let both = load("pods_file = \"/pods\"", "[kubernetes]\nin_cluster = true\n");
        assert!(both.unwrap_err().to_string().contains("both pod sources"));
        let neither = load("", "[kubernetes]\n").unwrap_err().to_string();
        assert!(
            neither.contains("exactly one of kubeconfig or in_cluster"),
            "{neither}"
        );
        let both_ways = load(
            "",
            "[kubernetes]\nin_cluster = true\nkubeconfig = \"/kc\"\n",
        );
        assert!(both_ways.is_err());
    }
}
