//! The controller's configuration file (TOML); see
//! `deploy/controller/controller.example.toml` for a documented example.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::names;

/// Why the configuration is unusable.
#[derive(Debug, thiserror::Error)]
#[error("config {path}: {reason}")]
pub struct ConfigError {
    path: String,
    reason: String,
}

/// Everything the controller needs to start.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address the node API listens on.
    pub listen: SocketAddr,
    /// The Kerberos realm this controller serves.
    pub realm: String,
    /// `KRB5_CONFIG` for Kerberos tools the controller runs (default: system).
    #[serde(default)]
    pub krb5_config: Option<PathBuf>,
    /// The `krb5.conf` delivered to pods (default: `krb5_config`, else
    /// `/etc/krb5.conf`).
    #[serde(default)]
    pub pod_krb5_conf: Option<PathBuf>,
    /// File with the 32-byte master key, hex; mode 0600.
    pub master_key_file: PathBuf,
    /// The embedded store's file.
    pub store_path: PathBuf,
    /// The role-account policy (hot-reloaded).
    pub policy_file: PathBuf,
    /// A static pod source (hot-reloaded), for running without the
    /// Kubernetes API.
    #[serde(default)]
    pub pods_file: Option<PathBuf>,
    /// How often hot-reloaded files are checked.
    #[serde(default = "default_reload_secs")]
    pub reload_interval_secs: u64,
    /// How to reach kadmind.
    pub kadmin: KadminSection,
    /// Where `/metrics` is served (Prometheus text format); off if unset.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    /// The KDC gate's budgets.
    #[serde(default)]
    pub gate: crate::gate::GateConfig,
}

/// The `[kadmin]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KadminSection {
    /// The `kadmin` client binary.
    #[serde(default = "default_kadmin_program")]
    pub program: PathBuf,
    /// Admin principal holding the `e` privilege on served principals.
    pub principal: String,
    /// Keytab of the admin principal.
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
        let err = |reason: String| ConfigError {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let cfg: Config = toml::from_str(&text).map_err(|e| err(e.to_string()))?;
        cfg.validate().map_err(err)?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), String> {
        names::validate_realm(&self.realm).map_err(|e| e.to_string())?;
        if self.reload_interval_secs == 0 {
            return Err("reload_interval_secs must be at least 1".into());
        }
        for (lane, l) in [("kadmin", &self.gate.kadmin), ("kdc", &self.gate.kdc)] {
            if l.rate_per_sec == 0 || l.burst == 0 {
                return Err(format!(
                    "gate.{lane}: rate_per_sec and burst must be at least 1"
                ));
            }
            if l.backoff_min_ms > l.backoff_max_ms {
                return Err(format!(
                    "gate.{lane}: backoff_min_ms exceeds backoff_max_ms"
                ));
            }
        }
        if self.kadmin.timeout_secs == 0 {
            return Err("kadmin.timeout_secs must be at least 1".into());
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
