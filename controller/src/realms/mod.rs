//! Several realms in one controller: the controller's own (top-level
//! `realm`, `[kadmin]` or `[active_directory]`) and the `[[realms]]`
//! entries, each with its own key administration backend (MIT kadmind or
//! Active Directory), KDCs and KDC gate. A principal's keys come from its
//! realm's backend, through its realm's gate; the issuers, rotation and
//! audit are the same for every realm.

pub mod krb5_conf;
pub mod settings;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kcred_audit::AuditEvent;

use crate::ad::AdClient;
use crate::cluster::Cluster;
use crate::config::Config;
use crate::gate::KdcGate;
use crate::kadmin::{KadminClient, KadminConfig, KadminError, KeyAdmin};
use crate::metrics::Metrics;
use crate::names::{Realms, Served};
use krb5_conf::RealmServers;
use settings::RealmSection;

/// One served realm: where its keys are administered and the gate
/// protecting its servers.
pub struct RealmBackend {
    /// Its key administration backend.
    pub admin: Arc<KeyAdmin>,
    /// Its KDC gate (budgets, breakers, metrics labelled by the realm).
    pub gate: Arc<KdcGate>,
    /// `KRB5_CONFIG` of the controller's tools in this realm (`None`: the
    /// controller's own).
    pub krb5_config: Option<PathBuf>,
    /// Where `kinit` keeps its transient files for this realm.
    pub tickets_dir: PathBuf,
}

/// Every served realm's backend.
pub struct Backends {
    realms: Realms,
    default: RealmBackend,
    others: BTreeMap<String, RealmBackend>,
}

impl Backends {
    /// The controller's own realm's backend and those of further realms,
    /// by realm name (an entry for the default realm is ignored).
    pub fn new(
        default_realm: &str,
        default: RealmBackend,
        mut others: BTreeMap<String, RealmBackend>,
    ) -> Self {
        others.remove(default_realm);
        Backends {
            realms: Realms::new(default_realm, others.keys().cloned()),
            default,
            others,
        }
    }

    /// The served realms.
    pub fn realms(&self) -> &Realms {
        &self.realms
    }

    /// The backend of `realm`; refused (naming the served realms) for a
    /// realm not served, which name parsing already refuses.
    pub fn of(&self, realm: &str) -> Result<&RealmBackend, KadminError> {
        if realm == self.realms.default_realm() {
            return Ok(&self.default);
        }
        self.others.get(realm).ok_or_else(|| KadminError::Refused {
            principal: format!("@{realm}"),
            message: format!(
                "realm {realm:?} is not served (this controller serves {})",
                self.realms.describe()
            ),
        })
    }

    /// The controller's own realm's backend.
    pub fn default_backend(&self) -> &RealmBackend {
        &self.default
    }

    /// Every realm and its backend, the controller's own first.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &RealmBackend)> {
        std::iter::once((self.realms.default_realm(), &self.default))
            .chain(self.others.iter().map(|(r, b)| (r.as_str(), b)))
    }
}

/// Where a further realm's tools work: `<kadmin.work_dir>/realms/<REALM>`.
fn work_dir(cfg: &Config, realm: &str) -> PathBuf {
    cfg.kadmin.work_dir.join("realms").join(realm)
}

/// Every realm's KDCs (and kadmind), for `krb5.conf` files; empty without
/// `[[realms]]`.
pub fn servers(cfg: &Config) -> BTreeMap<String, RealmServers> {
    if cfg.realms.is_empty() {
        return BTreeMap::new();
    }
    let mut all = BTreeMap::from([(
        cfg.realm.clone(),
        RealmServers {
            kdcs: cfg.kdcs.clone(),
            admin_server: None,
        },
    )]);
    for r in &cfg.realms {
        all.insert(
            r.name.clone(),
            RealmServers {
                kdcs: r.kdcs.clone(),
                admin_server: r.kadmin.as_ref().map(|k| k.admin_server.clone()),
            },
        );
    }
    all
}

/// The `krb5.conf` the controller's tools use in a further realm: the
/// operator's, or one written from the entry into its work directory.
fn tools_krb5_conf(cfg: &Config, r: &RealmSection) -> Result<PathBuf, String> {
    if let Some(path) = &r.krb5_config {
        return Ok(path.clone());
    }
    let dir = work_dir(cfg, &r.name);
    crate::private_dir::prepare(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let path = dir.join("krb5.conf");
    let text = krb5_conf::for_tools(
        &r.name,
        &RealmServers {
            kdcs: r.kdcs.clone(),
            admin_server: r.kadmin.as_ref().map(|k| k.admin_server.clone()),
        },
    );
    std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

/// The backend of the controller's own realm (as before `[[realms]]`).
fn default_admin(
    cfg: &Config,
    audit: &tokio::sync::mpsc::UnboundedSender<AuditEvent>,
) -> Result<KeyAdmin, String> {
    Ok(match &cfg.active_directory {
        Some(ad) => KeyAdmin::Ad(Box::new(
            AdClient::new(ad.client_config(cfg)?, audit.clone()).map_err(|e| e.to_string())?,
        )),
        None => KeyAdmin::Mit(Box::new(
            KadminClient::new(KadminConfig {
                program: cfg.kadmin.program.clone(),
                principal: cfg.kadmin.principal.clone(),
                keytab: cfg.kadmin.keytab.clone(),
                krb5_config: cfg.krb5_config.clone(),
                work_dir: cfg.kadmin.work_dir.clone(),
                timeout: Duration::from_secs(cfg.kadmin.timeout_secs),
            })
            .map_err(|e| e.to_string())?,
        )),
    })
}

/// The backend of a `[[realms]]` entry.
fn further_admin(
    cfg: &Config,
    r: &RealmSection,
    krb5: PathBuf,
    audit: &tokio::sync::mpsc::UnboundedSender<AuditEvent>,
) -> Result<KeyAdmin, String> {
    let timeout = Duration::from_secs(cfg.kadmin.timeout_secs);
    let at = |e: String| format!("realms[{:?}]: {e}", r.name);
    match (&r.kadmin, &r.active_directory) {
        (None, Some(ad)) => {
            let client = ad
                .client_config_in(
                    &r.name,
                    Some(krb5),
                    work_dir(cfg, &r.name).join("ad"),
                    timeout,
                )
                .map_err(at)?;
            Ok(KeyAdmin::Ad(Box::new(
                AdClient::new(client, audit.clone()).map_err(|e| at(e.to_string()))?,
            )))
        }
        (Some(k), None) => Ok(KeyAdmin::Mit(Box::new(
            KadminClient::new(KadminConfig {
                program: cfg.kadmin.program.clone(),
                principal: k.principal.clone(),
                keytab: k.keytab.clone(),
                krb5_config: Some(krb5),
                work_dir: work_dir(cfg, &r.name),
                timeout,
            })
            .map_err(|e| at(e.to_string()))?,
        ))),
        // Config validation refuses both and neither.
        _ => Err(at("give one backend: kadmin or active_directory".into())),
    }
}

/// Opens every realm's backend and gate. AD account creations are audited
/// through `audit`.
pub fn start(
    cfg: &Config,
    metrics: &Arc<Metrics>,
    cluster: &Arc<Cluster>,
    audit: &tokio::sync::mpsc::UnboundedSender<AuditEvent>,
) -> Result<Backends, String> {
    let default = RealmBackend {
        admin: Arc::new(default_admin(cfg, audit)?),
        gate: Arc::new(
            KdcGate::new(&cfg.gate, Arc::clone(metrics), &cfg.realm)
                .with_cluster(Arc::clone(cluster)),
        ),
        krb5_config: cfg.krb5_config.clone(),
        tickets_dir: cfg.kadmin.work_dir.join("tickets"),
    };
    let mut others = BTreeMap::new();
    for r in &cfg.realms {
        let gate = KdcGate::for_further_realm(
            r.gate.as_ref().unwrap_or(&cfg.gate),
            Arc::clone(metrics),
            &r.name,
        )
        .with_cluster(Arc::clone(cluster));
        let krb5 = tools_krb5_conf(cfg, r)?;
        others.insert(
            r.name.clone(),
            RealmBackend {
                admin: Arc::new(further_admin(cfg, r, krb5.clone(), audit)?),
                gate: Arc::new(gate),
                krb5_config: Some(krb5),
                tickets_dir: work_dir(cfg, &r.name).join("tickets"),
            },
        );
    }
    Ok(Backends::new(&cfg.realm, default, others))
}

/// The served realms a config names (for name parsing before the
/// backends open).
pub fn served(cfg: &Config) -> Realms {
    Realms::new(&cfg.realm, cfg.realms.iter().map(|r| r.name.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(dir: &std::path::Path, realm: &str) -> RealmBackend {
        let admin = KadminClient::new(KadminConfig {
            program: PathBuf::from("kadmin"),
            principal: format!("kcred/admin@{realm}"),
            keytab: dir.join("admin.keytab"),
            krb5_config: None,
            work_dir: dir.join(realm),
            timeout: Duration::from_secs(1),
        })
        .unwrap();
        RealmBackend {
            admin: Arc::new(KeyAdmin::Mit(Box::new(admin))),
            gate: Arc::new(KdcGate::new(
                &crate::gate::GateConfig::default(),
                Metrics::new(),
                realm,
            )),
            krb5_config: None,
            tickets_dir: dir.join("tickets"),
        }
    }

    #[tokio::test]
    async fn each_realm_has_its_own_backend_and_an_unserved_realm_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let backends = Backends::new(
            "MIT.TEST",
            backend(d, "MIT.TEST"),
            BTreeMap::from([("AD.TEST".to_string(), backend(d, "AD.TEST"))]),
        );
        assert_eq!(backends.of("MIT.TEST").unwrap().gate.realm(), "MIT.TEST");
        assert_eq!(backends.of("AD.TEST").unwrap().gate.realm(), "AD.TEST");
        assert_eq!(backends.default_backend().gate.realm(), "MIT.TEST");
        let order: Vec<&str> = backends.iter().map(|(r, _)| r).collect();
        assert_eq!(order, ["MIT.TEST", "AD.TEST"]);
        let err = backends.of("ELSEWHERE.TEST").err().unwrap().to_string();
        assert!(
            err.contains("\"ELSEWHERE.TEST\" is not served")
                && err.contains("\"MIT.TEST\", \"AD.TEST\""),
            "{err}"
        );
    }
}
