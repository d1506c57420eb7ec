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
    /// Time to live of each controller's etcd lease: a controller that dies
    /// holds leadership and its per-credential locks at most this long.
    #[serde(default = "default_leader_lease_secs")]
    pub leader_lease_secs: u64,
}

const DEFAULT_LEADER_LEASE_SECS: u64 = 10;

fn default_leader_lease_secs() -> u64 {
    DEFAULT_LEADER_LEASE_SECS
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
        self.open_shared(store_path, master).map(|(store, _)| store)
    }

    /// Opens the configured backend, and with etcd also hands back the
    /// connection, which the controllers sharing it coordinate through
    /// (leader election, locks, the cluster-wide budget).
    pub fn open_shared(
        &self,
        store_path: Option<&Path>,
        master: MasterKey,
    ) -> Result<(Store, Option<Arc<Etcd>>), StoreError> {
        self.validate(store_path).map_err(StoreError::Db)?;
        match (self.backend, &self.etcd, store_path) {
            (BackendKind::Etcd, Some(e), _) => {
                let backend = Arc::new(Etcd::connect(e.options()?)?);
                let shared: Arc<dyn super::StoreBackend> = backend.clone();
                Ok((Store::with_backend(shared, master), Some(backend)))
            }
            (_, _, Some(path)) => Ok((
                Store::with_backend(Arc::new(Embedded::open(path)?), master),
                None,
            )),
            _ => Err(StoreError::Db("no store configured".into())),
        }
    }

    /// How long a controller's etcd lease (its leadership and its locks)
    /// outlives its last keep-alive.
    pub fn leader_lease(&self) -> Duration {
        Duration::from_secs(
            self.etcd
                .as_ref()
                .map_or(DEFAULT_LEADER_LEASE_SECS, |e| e.leader_lease_secs),
        )
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
        if !(2..=300).contains(&self.leader_lease_secs) {
            return Err("store.etcd.leader_lease_secs must be between 2 and 300".into());
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

    /// A CA, a serving certificate for 127.0.0.1, and a client certificate,
    /// as PEM files in `dir`.
    fn tls_files(dir: &Path) -> kcred_testetcd::ClientTls {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate().expect("key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).expect("ca");
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf = |names: Vec<String>, cn: &str| {
            let key = KeyPair::generate().expect("key");
            let mut params = CertificateParams::new(names).expect("params");
            params.distinguished_name.push(DnType::CommonName, cn);
            let cert = params.signed_by(&key, &issuer).expect("sign");
            (cert.pem(), key.serialize_pem())
        };
        let (server, server_key) = leaf(vec!["127.0.0.1".into()], "etcd");
        let (client, client_key) = leaf(vec![], "kcred-client");
        for (name, pem) in [
            ("ca.crt", ca.pem()),
            ("server.crt", server),
            ("server.key", server_key),
            ("client.crt", client),
            ("client.key", client_key),
            ("password", "s3cret\n".to_string()),
        ] {
            std::fs::write(dir.join(name), pem).expect("write");
        }
        kcred_testetcd::ClientTls {
            ca: dir.join("ca.crt"),
            cert: dir.join("server.crt"),
            key: dir.join("server.key"),
        }
    }

    #[test]
    fn etcd_is_reached_over_tls_with_a_client_certificate_and_a_password() {
        use crate::store::Table;
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let tls = tls_files(d);
        let cluster = kcred_testetcd::EtcdCluster::start_with(1, Some(tls)).expect("etcd");
        let endpoint = cluster.endpoint(0);
        assert!(endpoint.starts_with("https://"));
        let settings = |user: bool| {
            let auth = if user {
                format!(
                    "username = \"root\"\npassword_file = \"{}/password\"\n",
                    d.display()
                )
            } else {
                String::new()
            };
            section(&format!(
                "backend = \"etcd\"\n[etcd]\nendpoints = [\"{endpoint}\"]\nca_file = \"{d}/ca.crt\"\ncert_file = \"{d}/client.crt\"\nkey_file = \"{d}/client.key\"\ntimeout_ms = 2000\n{auth}",
                d = d.display()
            ))
        };
        let master = || MasterKey::from_bytes([8; 32]);
        let store = settings(false)
            .open(None, master())
            .expect("TLS with a client certificate");
        store
            .put(Table::Keytabs, "HTTP/a@R", &(), b"k")
            .expect("put");
        drop(store);

        // Without a client certificate, etcd refuses the connection.
        let mut no_cert = settings(false);
        if let Some(e) = no_cert.etcd.as_mut() {
            e.cert_file = None;
            e.key_file = None;
        }
        assert!(
            no_cert.open(None, master()).is_err(),
            "etcd let in a client without a certificate"
        );

        // With etcd's auth on, kcred logs in with its user and password.
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(async {
            let pem = |n: &str| std::fs::read(d.join(n)).expect("read");
            let tls = etcd_client::TlsOptions::new()
                .ca_certificate(etcd_client::Certificate::from_pem(pem("ca.crt")))
                .identity(etcd_client::Identity::from_pem(
                    pem("client.crt"),
                    pem("client.key"),
                ));
            let mut c = etcd_client::Client::connect(
                [endpoint.clone()],
                Some(etcd_client::ConnectOptions::new().with_tls(tls)),
            )
            .await
            .expect("admin client");
            c.user_add("root", "s3cret", None).await.expect("user");
            c.user_grant_role("root", "root").await.expect("role");
            c.auth_enable().await.expect("auth on");
        });
        let store = settings(true).open(None, master()).expect("log in");
        assert!(
            store
                .get::<()>(Table::Keytabs, "HTTP/a@R")
                .expect("get")
                .is_some()
        );
        drop(store);
        // The certificate's name is no etcd user: without the password, no access.
        assert!(
            settings(false).open(None, master()).is_err(),
            "etcd served a client that did not log in"
        );
    }
}
