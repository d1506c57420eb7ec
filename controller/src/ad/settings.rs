//! The `[active_directory]` config table.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{AdConfig, Bind};
use crate::config::Config;

/// The `[active_directory]` table: the realm is an AD domain.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActiveDirectorySection {
    /// URL of a domain controller: `ldaps://dc1.example.com` with a simple
    /// bind, `ldap://dc1.example.com` with a Kerberos bind (whose SASL
    /// layer encrypts); password resets need an encrypted connection.
    pub ldap_url: String,
    /// CA certificate(s) verifying the DC's LDAPS certificate (ldaps://).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// DN of the account kcred binds as with a simple bind (delegated
    /// "Reset password" on the served accounts' OU).
    #[serde(default)]
    pub bind_dn: Option<String>,
    /// File holding that account's password (mode 0600).
    #[serde(default)]
    pub bind_password_file: Option<PathBuf>,
    /// Instead of a DN and password: a keytab (mode 0600) whose first
    /// principal is kcred's account; kcred binds with Kerberos (SASL
    /// GSSAPI, signed and sealed) over `ldap://`.
    #[serde(default)]
    pub bind_keytab: Option<PathBuf>,
    /// Subtree searched for served accounts.
    pub base_dn: String,
    /// OU (within `base_dn`) where kcred creates an account for a service
    /// principal no account holds; absent, the administrator creates them.
    #[serde(default)]
    pub accounts_ou: Option<String>,
    /// DN written as the `manager` of the accounts kcred creates.
    #[serde(default)]
    pub accounts_manager: Option<String>,
    /// The `ldapsearch` binary.
    #[serde(default = "default_ldapsearch")]
    pub ldapsearch: PathBuf,
    /// The `ldapmodify` binary.
    #[serde(default = "default_ldapmodify")]
    pub ldapmodify: PathBuf,
    /// MIT's `ktutil` binary.
    #[serde(default = "default_ktutil")]
    pub ktutil: PathBuf,
    /// Present when role accounts come from the directory instead of the
    /// policy file (see [`super::sync`]).
    #[serde(default)]
    pub sync: Option<SyncSection>,
}

/// The `[active_directory.sync]` table: where role accounts and the groups
/// granting them entitlements live, and how often they are read.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncSection {
    /// Subtree searched for role accounts (users with a `uidNumber`), the
    /// service accounts they manage and the convention groups.
    pub base_dn: String,
    /// Seconds between reads; an entitlement removed in the directory stops
    /// renewals within this.
    #[serde(default = "default_sync_secs")]
    pub interval_secs: u64,
    /// Seconds between checks of the DC's `highestCommittedUSN`: when it
    /// moved, a sync runs at once (0: only the interval and `SIGHUP`).
    #[serde(default = "default_change_check_secs")]
    pub change_check_secs: u64,
    /// A member of group `<prefix><namespace>` may be run as by pods in
    /// that namespace.
    #[serde(default = "default_namespace_prefix")]
    pub namespace_group_prefix: String,
    /// Members of group `<prefix><login>` may log in as role account
    /// `login`.
    #[serde(default = "default_act_as_prefix")]
    pub act_as_group_prefix: String,
    /// Group (its `sAMAccountName`, under `base_dn`) whose members are
    /// operators, as `<sAMAccountName>@<REALM>`.
    #[serde(default)]
    pub operators_group: Option<String>,
    /// Group (under `base_dn`) whose members are auditors.
    #[serde(default)]
    pub auditors_group: Option<String>,
    /// Subtree searched for the admin groups' members (default: the
    /// domain, the `DC=` part of `base_dn`).
    #[serde(default)]
    pub people_base_dn: Option<String>,
}

impl SyncSection {
    /// Where admin group members are looked up.
    pub fn people_base(&self) -> String {
        if let Some(b) = &self.people_base_dn {
            return b.clone();
        }
        self.base_dn
            .split(',')
            .map(str::trim)
            .filter(|rdn| rdn.len() > 3 && rdn[..3].eq_ignore_ascii_case("dc="))
            .collect::<Vec<_>>()
            .join(",")
    }
}

fn default_sync_secs() -> u64 {
    60
}
fn default_change_check_secs() -> u64 {
    5
}
fn default_namespace_prefix() -> String {
    "kcred-ns-".into()
}
fn default_act_as_prefix() -> String {
    "kcred-act-as-".into()
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

/// Whether `dn` is `base` or below it (RDNs compared case-blind, spaces
/// after commas ignored).
fn within(dn: &str, base: &str) -> bool {
    let rdns = |d: &str| -> Vec<String> {
        d.split(',')
            .map(|r| r.trim().to_ascii_lowercase())
            .collect()
    };
    let (dn, base) = (rdns(dn), rdns(base));
    dn.len() >= base.len() && dn[dn.len() - base.len()..] == base[..]
}

impl ActiveDirectorySection {
    /// Refuses settings that cannot work, naming the field.
    pub fn validate(&self) -> Result<(), String> {
        self.bind()?;
        if self.ldap_url.contains(char::is_whitespace) {
            return Err(format!(
                "active_directory.ldap_url: {:?} may not contain spaces",
                self.ldap_url
            ));
        }
        if self.base_dn.is_empty() || self.base_dn.contains(['\n', '\r', '\0']) {
            return Err(format!(
                "active_directory.base_dn: {:?} must be a one-line DN",
                self.base_dn
            ));
        }
        for (field, value) in [
            ("accounts_ou", &self.accounts_ou),
            ("accounts_manager", &self.accounts_manager),
        ] {
            if let Some(v) = value
                && (v.is_empty() || v.contains(['\n', '\r', '\0']))
            {
                return Err(format!(
                    "active_directory.{field}: {v:?} must be a one-line DN"
                ));
            }
        }
        if let Some(ou) = &self.accounts_ou
            && !within(ou, &self.base_dn)
        {
            return Err(format!(
                "active_directory.accounts_ou: {ou:?} must lie within base_dn {:?} (kcred finds accounts there)",
                self.base_dn
            ));
        }
        if let Some(sync) = &self.sync {
            if sync.base_dn.is_empty() || sync.base_dn.contains(['\n', '\r', '\0']) {
                return Err(format!(
                    "active_directory.sync.base_dn: {:?} must be a one-line DN",
                    sync.base_dn
                ));
            }
            if sync.interval_secs == 0 {
                return Err("active_directory.sync.interval_secs must be at least 1".into());
            }
            if let Some(b) = &sync.people_base_dn
                && (b.is_empty() || b.contains(['\n', '\r', '\0']))
            {
                return Err(format!(
                    "active_directory.sync.people_base_dn: {b:?} must be a one-line DN"
                ));
            }
            if sync.namespace_group_prefix.is_empty() || sync.act_as_group_prefix.is_empty() {
                return Err(
                    "active_directory.sync: namespace_group_prefix and act_as_group_prefix may not be empty"
                        .into(),
                );
            }
        }
        Ok(())
    }

    /// How kcred binds, refusing settings that would not encrypt password
    /// resets or that name both ways (or neither).
    pub fn bind(&self) -> Result<Bind, String> {
        let tls = self.ldap_url.starts_with("ldaps://");
        match (&self.bind_dn, &self.bind_password_file, &self.bind_keytab) {
            (Some(dn), Some(password_file), None) => {
                if !tls {
                    return Err(format!(
                        "active_directory.ldap_url: {:?} must be an ldaps:// URL with bind_dn (AD resets passwords only over an encrypted connection; bind_keytab binds with Kerberos over ldap://)",
                        self.ldap_url
                    ));
                }
                if self.ca_file.is_none() {
                    return Err("active_directory.ca_file is required with an ldaps:// URL".into());
                }
                if dn.is_empty() || dn.contains(['\n', '\r', '\0']) {
                    return Err(format!(
                        "active_directory.bind_dn: {dn:?} must be a one-line DN"
                    ));
                }
                Ok(Bind::Simple {
                    dn: dn.clone(),
                    password_file: password_file.clone(),
                })
            }
            (None, None, Some(keytab)) => {
                if !self.ldap_url.starts_with("ldap://") {
                    return Err(format!(
                        "active_directory.ldap_url: {:?} must be an ldap:// URL with bind_keytab (the Kerberos bind's SASL layer encrypts; AD refuses it inside TLS)",
                        self.ldap_url
                    ));
                }
                Ok(Bind::Kerberos {
                    keytab: keytab.clone(),
                })
            }
            _ => Err(
                "active_directory: give either bind_dn and bind_password_file (simple bind over ldaps://) or bind_keytab (Kerberos over ldap://)"
                    .into(),
            ),
        }
    }

    /// The client settings, with the realm, `krb5.conf`, work directory and
    /// timeout shared with the rest of the controller; an error names the
    /// unusable bind settings (which config validation already refuses).
    pub fn client_config(&self, cfg: &Config) -> Result<AdConfig, String> {
        self.client_config_in(
            &cfg.realm,
            cfg.krb5_config.clone(),
            cfg.kadmin.work_dir.join("ad"),
            Duration::from_secs(cfg.kadmin.timeout_secs),
        )
    }

    /// The client settings of a domain served as `realm` (a `[[realms]]`
    /// entry), its tools configured by `krb5_config`, keytabs written
    /// to `work_dir`.
    pub fn client_config_in(
        &self,
        realm: &str,
        krb5_config: Option<PathBuf>,
        work_dir: PathBuf,
        timeout: Duration,
    ) -> Result<AdConfig, String> {
        let bind = self.bind()?;
        Ok(AdConfig {
            realm: realm.to_string(),
            ldap_url: self.ldap_url.clone(),
            ca_file: self.ca_file.clone(),
            bind,
            base_dn: self.base_dn.clone(),
            accounts_ou: self.accounts_ou.clone(),
            accounts_manager: self.accounts_manager.clone(),
            krb5_config,
            work_dir,
            timeout,
            ldapsearch: self.ldapsearch.clone(),
            ldapmodify: self.ldapmodify.clone(),
            ktutil: self.ktutil.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(extra: &str) -> ActiveDirectorySection {
        toml::from_str(&format!(
            "ldap_url = \"ldaps://dc\"\nca_file = \"/ca\"\nbind_dn = \"CN=k,DC=x\"\n\
             bind_password_file = \"/pw\"\nbase_dn = \"OU=kcred,DC=x\"\n{extra}"
        ))
        .unwrap()
    }

    fn kerberos(url: &str, extra: &str) -> ActiveDirectorySection {
        toml::from_str(&format!(
            "ldap_url = \"{url}\"\nbind_keytab = \"/k.keytab\"\nbase_dn = \"OU=kcred,DC=x\"\n{extra}"
        ))
        .unwrap()
    }

    #[test]
    fn a_kerberos_bind_goes_over_ldap_and_a_simple_bind_over_ldaps_only() {
        assert!(matches!(
            kerberos("ldap://dc", "").bind(),
            Ok(Bind::Kerberos { .. })
        ));
        let err = kerberos("ldaps://dc", "").validate().unwrap_err();
        assert!(
            err.contains("ldap://") && err.contains("bind_keytab"),
            "{err}"
        );
        let mut plain = section("");
        plain.ldap_url = "ldap://dc".into();
        let err = plain.validate().unwrap_err();
        assert!(err.contains("ldaps://") && err.contains("bind_dn"), "{err}");
    }

    #[test]
    fn both_binds_or_neither_is_refused_naming_the_fields() {
        let err = kerberos(
            "ldap://dc",
            "bind_dn = \"CN=k,DC=x\"\nbind_password_file = \"/pw\"",
        )
        .validate()
        .unwrap_err();
        assert!(
            err.contains("bind_keytab") && err.contains("bind_dn"),
            "{err}"
        );
        let mut neither = section("");
        neither.bind_dn = None;
        neither.bind_password_file = None;
        assert!(neither.validate().is_err());
    }

    #[test]
    fn an_accounts_ou_within_base_dn_is_accepted() {
        assert!(
            section("accounts_ou = \"OU=new, ou=Kcred,DC=x\"")
                .validate()
                .is_ok()
        );
        assert!(
            section("accounts_ou = \"OU=kcred,DC=x\"")
                .validate()
                .is_ok()
        );
    }

    #[test]
    fn an_accounts_ou_outside_base_dn_is_refused_naming_the_field() {
        let err = section("accounts_ou = \"OU=elsewhere,DC=x\"")
            .validate()
            .unwrap_err();
        assert!(
            err.contains("accounts_ou") && err.contains("base_dn"),
            "{err}"
        );
        let err = section("accounts_ou = \"OU=xkcred,DC=x\"")
            .validate()
            .unwrap_err();
        assert!(err.contains("accounts_ou"), "{err}");
    }
}
