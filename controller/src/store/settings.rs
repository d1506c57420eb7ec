//! The `[store]` table: where records live. The embedded file is the
//! default (nothing to install); etcd is for several controllers at once.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::embedded::Embedded;
use super::etcd::{Etcd, EtcdOptions};
use super::{Store, StoreError};
use crate::crypto::MasterKey;

/// Which backend holds the records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// One redb file (`store_path`); one controller.
    #[default]
    Embedded,
    /// An etcd cluster (`[store.etcd]`); several controllers may share it.
    Etcd,
}

/// The `[store]` table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSection {
    /// `embedded` (default) or `etcd`.
    pub backend: BackendKind,
    /// How to reach etcd (with `backend = "etcd"`).
    pub etcd: Option<EtcdSection>,
}

/// The `[store.etcd]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdSection {
    /// Client URLs of the members (`https://etcd-0.example:2379`, ...).
    pub endpoints: Vec<String>,
    /// Every key kcred writes starts with this (several kcred installations
    /// can share one etcd under different prefixes).
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// CA that signed the members' certificates (required with https).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for etcd's `--client-cert-auth`.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// Its key (PEM).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// etcd user (with `password_file`), when etcd has auth enabled.
    #[serde(default)]
    pub username: Option<String>,
    /// File holding that user's password (first line).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Longest wait for one etcd request; past it the request fails and
    /// the controller stops issuing rather than wait or guess.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_prefix() -> String {
    "/kcred/".into()
}

fn default_timeout_ms() -> u64 {
    5000
}

impl StoreSection {
    /// Checks the settings; the message names the offending one.
    pub fn validate(&self, store_path: Option<&Path>) -> Result<(), String> {
        match self.backend {
            BackendKind::Embedded => {
                if store_path.is_none() {
                    return Err("store_path is required with the embedded store".into());
                }
                Ok(())
            }
            BackendKind::Etcd => {
                let Some(e) = &self.etcd else {
                    return Err("[store.etcd] is required with store.backend = \"etcd\"".into());
                };
                e.validate()
            }
        }
    }

    /// Opens the configured backend under the master key.
    pub fn open(&self, store_path: Option<&Path>, master: MasterKey) -> Result<Store, StoreError> {
        self.validate(store_path).map_err(StoreError::Db)?;
        match (self.backend, &self.etcd, store_path) {
            (BackendKind::Etcd, Some(e), _) => {
                let backend = Etcd::connect(e.options()?)?;
                Ok(Store::with_backend(Arc::new(backend), master))
            }
            (_, _, Some(path)) => Ok(Store::with_backend(Arc::new(Embedded::open(path)?), master)),
            _ => Err(StoreError::Db("no store configured".into())),
        }
    }
}

impl EtcdSection {
    fn validate(&self) -> Result<(), String> {
        if self.endpoints.is_empty() {
            return Err("store.etcd.endpoints must list at least one member".into());
        }
        for ep in &self.endpoints {
            let tls = ep.starts_with("https://");
            if !tls && !ep.starts_with("http://") {
                return Err(format!(
                    "store.etcd.endpoints: {ep:?} must start with http:// or https://"
                ));
            }
            if tls && self.ca_file.is_none() {
                return Err(format!("store.etcd.ca_file is required for {ep}"));
            }
        }
        let tls = self.endpoints.iter().any(|e| e.starts_with("https://"));
        if self
            .endpoints
            .iter()
            .any(|e| e.starts_with("https://") != tls)
        {
            return Err("store.etcd.endpoints: all https or all http".into());
        }
        if self.cert_file.is_some() != self.key_file.is_some() {
            return Err("store.etcd.cert_file and store.etcd.key_file go together".into());
        }
        if !tls && (self.cert_file.is_some() || self.ca_file.is_some()) {
            return Err("store.etcd TLS files need https:// endpoints".into());
        }
        if self.username.is_some() != self.password_file.is_some() {
            return Err("store.etcd.username and store.etcd.password_file go together".into());
        }
        if self.prefix.is_empty() || self.prefix.chars().any(char::is_whitespace) {
            return Err("store.etcd.prefix must be non-empty, without spaces".into());
        }
        if self.timeout_ms < 100 {
            return Err("store.etcd.timeout_ms must be at least 100".into());
        }
        Ok(())
    }

    /// Reads the files the settings name into connection options.
    fn options(&self) -> Result<EtcdOptions, StoreError> {
        let read = |p: &Path| {
            std::fs::read(p).map_err(|e| StoreError::Db(format!("{}: {e}", p.display())))
        };
        let password = match &self.password_file {
            None => None,
            Some(p) => {
                let text = zeroize::Zeroizing::new(read(p)?);
                let first = String::from_utf8_lossy(&text)
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_string();
                Some(zeroize::Zeroizing::new(first))
            }
        };
        Ok(EtcdOptions {
            endpoints: self.endpoints.clone(),
            prefix: if self.prefix.ends_with('/') {
                self.prefix.clone()
            } else {
                format!("{}/", self.prefix)
            },
            ca_pem: self.ca_file.as_deref().map(read).transpose()?,
            identity_pem: match (&self.cert_file, &self.key_file) {
                (Some(c), Some(k)) => Some((read(c)?, zeroize::Zeroizing::new(read(k)?))),
                _ => None,
            },
            user: self.username.clone().zip(password),
            timeout: Duration::from_millis(self.timeout_ms),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(text: &str) -> StoreSection {
        toml::from_str(text).expect("parses")
    }

    fn refusal(text: &str, store_path: Option<&Path>) -> String {
        section(text)
            .validate(store_path)
            .expect_err("accepted a bad [store]")
    }

    #[test]
    fn the_embedded_store_stays_the_default_and_needs_store_path() {
        let s = section("");
        assert_eq!(s.backend, BackendKind::Embedded);
        assert!(
            s.validate(Some(Path::new("/var/lib/kcred/store.redb")))
                .is_ok()
        );
        assert!(refusal("", None).contains("store_path"));
    }

    #[test]
    fn the_documented_etcd_settings_are_accepted() {
        let s = section(
            r#"
backend = "etcd"
[etcd]
endpoints = ["https://etcd-0:2379", "https://etcd-1:2379", "https://etcd-2:2379"]
prefix = "/kcred/"
ca_file = "/etc/kcred/etcd-ca.crt"
cert_file = "/etc/kcred/etcd-client.crt"
key_file = "/etc/kcred/etcd-client.key"
username = "kcred"
password_file = "/etc/kcred/etcd-password"
timeout_ms = 5000
"#,
        );
        assert_eq!(s.validate(None), Ok(()));
    }

    #[test]
    fn bad_etcd_settings_are_refused_naming_the_setting() {
        for (text, names) in [
            ("backend = \"etcd\"", "[store.etcd]"),
            (
                "backend = \"etcd\"\n[etcd]\nendpoints = []",
                "store.etcd.endpoints",
            ),
            (
                "backend = \"etcd\"\n[etcd]\nendpoints = [\"etcd-0:2379\"]",
                "http://",
            ),
            (
                "backend = \"etcd\"\n[etcd]\nendpoints = [\"https://e:2379\"]",
                "store.etcd.ca_file",
            ),
            (
                "backend = \"etcd\"\n[etcd]\nendpoints = [\"https://e:2379\"]\nca_file = \"/ca\"\ncert_file = \"/c\"",
                "store.etcd.key_file",
            ),
            (
                "backend = \"etcd\"\n[etcd]\nendpoints = [\"http://e:2379\"]\nusername = \"kcred\"",
                "store.etcd.password_file",
            ),
            (
                "backend = \"etcd\"\n[etcd]\nendpoints = [\"http://e:2379\"]\ntimeout_ms = 5",
                "store.etcd.timeout_ms",
            ),
        ] {
            let msg = refusal(text, Some(Path::new("/s")));
            assert!(msg.contains(names), "{text:?}: {msg}");
        }
        assert!(toml::from_str::<StoreSection>("backend = \"zookeeper\"").is_err());
    }
}
