//! The `[active_directory]` config table.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::AdConfig;
use crate::config::Config;

/// The `[active_directory]` table: the realm is an AD domain.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActiveDirectorySection {
    /// LDAPS URL of a domain controller (`ldaps://dc1.example.com`);
    /// password resets need an encrypted connection.
    pub ldap_url: String,
    /// CA certificate(s) verifying the DC's LDAPS certificate.
    pub ca_file: PathBuf,
    /// DN of the account kcred binds as (delegated "Reset password" on the
    /// served accounts' OU).
    pub bind_dn: String,
    /// File holding that account's password (mode 0600).
    pub bind_password_file: PathBuf,
    /// Subtree searched for served accounts.
    pub base_dn: String,
    /// The `ldapsearch` binary.
    #[serde(default = "default_ldapsearch")]
    pub ldapsearch: PathBuf,
    /// The `ldapmodify` binary.
    #[serde(default = "default_ldapmodify")]
    pub ldapmodify: PathBuf,
    /// MIT's `ktutil` binary.
    #[serde(default = "default_ktutil")]
    pub ktutil: PathBuf,
}

fn default_ldapsearch() -> PathBuf {
    PathBuf::from("ldapsearch")
}
fn default_ldapmodify() -> PathBuf {
    PathBuf::from("ldapmodify")
}
fn default_ktutil() -> PathBuf {
    PathBuf::from("ktutil")
}

impl ActiveDirectorySection {
    /// Refuses settings that cannot work, naming the field.
    pub fn validate(&self) -> Result<(), String> {
        if !self.ldap_url.starts_with("ldaps://") || self.ldap_url.contains(char::is_whitespace) {
            return Err(format!(
                "active_directory.ldap_url: {:?} must be an ldaps:// URL (AD resets passwords only over an encrypted connection)",
                self.ldap_url
            ));
        }
        for (field, value) in [("bind_dn", &self.bind_dn), ("base_dn", &self.base_dn)] {
            if value.is_empty() || value.contains(['\n', '\r', '\0']) {
                return Err(format!(
                    "active_directory.{field}: {value:?} must be a one-line DN"
                ));
            }
        }
        Ok(())
    }

    /// The client settings, with the realm, `krb5.conf`, work directory and
    /// timeout shared with the rest of the controller.
    pub fn client_config(&self, cfg: &Config) -> AdConfig {
        AdConfig {
            realm: cfg.realm.clone(),
            ldap_url: self.ldap_url.clone(),
            ca_file: self.ca_file.clone(),
            bind_dn: self.bind_dn.clone(),
            bind_password_file: self.bind_password_file.clone(),
            base_dn: self.base_dn.clone(),
            krb5_config: cfg.krb5_config.clone(),
            work_dir: cfg.kadmin.work_dir.join("ad"),
            timeout: Duration::from_secs(cfg.kadmin.timeout_secs),
            ldapsearch: self.ldapsearch.clone(),
            ldapmodify: self.ldapmodify.clone(),
            ktutil: self.ktutil.clone(),
        }
    }
}
