//! Active Directory as the KDC: keytabs the way `msktutil` and `ktpass`
//! make them.
//!
//! AD has no "extract the current keys": its keys are derived from the
//! account's password, which nobody can read back. So kcred owns the
//! password of each account it serves:
//! 1. it finds the account (by `servicePrincipalName` for a service, by
//!    `sAMAccountName` for a role account) over LDAPS;
//! 2. resets its password to a fresh random one and limits it to AES keys
//!    (`msDS-SupportedEncryptionTypes` = 0x18), which moves
//!    `msDS-KeyVersionNumber` on by one;
//! 3. reads the new key version and derives the AES256 and AES128 keys with
//!    the salt the KDC announces ([`derive`]); the password is then dropped
//!    (zeroized): the derived keytab, sealed in the store, is all kcred
//!    keeps.
//!
//! This happens once per account: the keytab issuer serves the stored
//! keytab afterwards and coalesces concurrent first requests, so a storm of
//! pods costs one password reset. A rotation is the same reset; the
//! previous key version stays in the delivered keytab until the grace
//! period ends, when kcred drops it from the keytab (AD itself keeps no old
//! keys a service could still be handed tickets for).
//!
//! A service's keytab holds its keys under the service principal name (to
//! accept tickets) and under the account's own name (to authenticate as
//! itself: AD refuses an SPN as a client name). Each account must hold only
//! the service principal names of one kcred principal: resetting the
//! password for one SPN would silently break keytabs issued for another.

mod create;
mod derive;
mod ldap;
mod password;
pub mod settings;
pub mod sync;

use std::path::PathBuf;
use std::time::Duration;

use crate::kadmin::KadminError;
use crate::keytab::Keytab;
use crate::names::Principal;
use kcred_audit::{Action, Actor, AuditEvent};
use ldap::{Account, Created, Lookup};

/// How to reach the domain and act on its accounts.
#[derive(Debug, Clone)]
pub struct AdConfig {
    /// The realm (the domain's upper-case DNS name).
    pub realm: String,
    /// The URL of a domain controller (`ldaps://dc1.example.com`, or
    /// `ldap://` with a Kerberos bind).
    pub ldap_url: String,
    /// CA certificate(s) that verify the DC's LDAPS certificate.
    pub ca_file: Option<PathBuf>,
    /// How kcred binds, as an account that needs "Reset password" and
    /// write access to `msDS-SupportedEncryptionTypes` on the served
    /// accounts.
    pub bind: Bind,
    /// Where served accounts live (an OU delegated to kcred).
    pub base_dn: String,
    /// Where kcred creates an account for a service principal no account
    /// holds (None: the administrator creates them).
    pub accounts_ou: Option<String>,
    /// The `manager` of the accounts kcred creates.
    pub accounts_manager: Option<String>,
    /// `KRB5_CONFIG` reaching the domain's KDCs, if not the default.
    pub krb5_config: Option<PathBuf>,
    /// Private directory for transient keytab files (ideally tmpfs).
    pub work_dir: PathBuf,
    /// Longest wait for one LDAP or KDC exchange.
    pub timeout: Duration,
    /// The `ldapsearch` binary.
    pub ldapsearch: PathBuf,
    /// The `ldapmodify` binary.
    pub ldapmodify: PathBuf,
    /// MIT's `ktutil` binary.
    pub ktutil: PathBuf,
}

/// How kcred authenticates to the directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bind {
    /// A simple bind over LDAPS: a DN and a file holding its password
    /// (read by `ldapsearch`/`ldapmodify` themselves).
    Simple {
        /// The account's DN.
        dn: String,
        /// File holding its password.
        password_file: PathBuf,
    },
    /// SASL GSSAPI over `ldap://`, signed and sealed: the tools get a
    /// ticket from this keytab's first principal (MIT's client keytab), so
    /// no password exists anywhere.
    Kerberos {
        /// The keytab.
        keytab: PathBuf,
    },
}

/// Keys of AD accounts, owned by kcred.
pub struct AdClient {
    cfg: AdConfig,
    /// Where the audit records of created accounts go (the controller
    /// appends them to its audit log).
    audit: tokio::sync::mpsc::UnboundedSender<AuditEvent>,
}

impl AdClient {
    /// Prepares the private work directory (leftover keytabs wiped);
    /// records of accounts it creates are sent to `audit`.
    pub fn new(
        cfg: AdConfig,
        audit: tokio::sync::mpsc::UnboundedSender<AuditEvent>,
    ) -> Result<Self, KadminError> {
        let io = |e: std::io::Error| {
            KadminError::Failed(format!("work dir {}: {e}", cfg.work_dir.display()))
        };
        if let Bind::Kerberos { keytab } = &cfg.bind {
            // Its keys let anyone reset the served accounts' passwords.
            crate::private_file::check(keytab).map_err(|reason| {
                KadminError::Failed(format!(
                    "active_directory.bind_keytab {}: {reason}",
                    keytab.display()
                ))
            })?;
        }
        for path in crate::private_dir::prepare(&cfg.work_dir).map_err(io)? {
            if path.extension().is_some_and(|e| e == "keytab") {
                std::fs::remove_file(&path).map_err(io)?;
            }
        }
        Ok(AdClient { cfg, audit })
    }

    /// The account behind `principal`, refusing an account shared with
    /// other service principal names.
    async fn account(&self, principal: &Principal) -> Result<Account, KadminError> {
        match principal {
            Principal::Service(sp) => {
                let spn = sp.without_realm();
                let account = ldap::find(&self.cfg, Lookup::Spn(&spn)).await?;
                let foreign: Vec<&String> = account
                    .spns
                    .iter()
                    .filter(|s| !s.eq_ignore_ascii_case(&spn))
                    .collect();
                if !foreign.is_empty() {
                    return Err(KadminError::Refused {
                        principal: principal.to_string(),
                        message: format!(
                            "account {} also holds {foreign:?}; kcred serves accounts holding one service principal name",
                            account.dn
                        ),
                    });
                }
                Ok(account)
            }
            Principal::User(up) => ldap::find(&self.cfg, Lookup::SamAccountName(up.login())).await,
        }
    }

    /// Gives the account a new password and returns the keytab of its new
    /// key version: the first issue of a principal, or a rotation. A
    /// service principal no account holds gets an account of its own when
    /// `accounts_ou` is configured.
    pub async fn new_keys(&self, principal: &Principal) -> Result<Keytab, KadminError> {
        let about = |e| naming(e, principal);
        let password = password::generate()?;
        let account = match self.account(principal).await {
            Ok(account) => {
                ldap::set_password(&self.cfg, &account, &password)
                    .await
                    .map_err(about)?;
                account
            }
            Err(KadminError::NoSuchPrincipal(why)) => match principal {
                Principal::Service(sp) if self.cfg.accounts_ou.is_some() => self
                    .create_account(principal, &sp.without_realm(), &password)
                    .await
                    .map_err(about)?,
                Principal::Service(_) => {
                    return Err(KadminError::NoSuchPrincipal(format!(
                        "{why} (kcred creates service accounts only with [active_directory] accounts_ou)"
                    )));
                }
                Principal::User(_) => return Err(KadminError::NoSuchPrincipal(why)),
            },
            Err(e) => return Err(about(e)),
        };
        let kvno = ldap::find(&self.cfg, Lookup::SamAccountName(&account.sam_account_name))
            .await
            .map_err(about)?
            .kvno;
        let client = format!("{}@{}", account.sam_account_name, self.cfg.realm);
        let derived = derive::keytab(&self.cfg, &client, kvno, &password).await?;
        drop(password);
        tracing::info!(%principal, account = %account.dn, kvno, "set a new password in Active Directory");
        let keytab = match principal {
            Principal::Service(sp) => {
                let named = derived
                    .renamed(&self.cfg.realm, &[sp.service(), sp.host()])
                    .map_err(|e| KadminError::Failed(format!("keytab for {principal}: {e}")))?;
                Keytab::merge([&named, &derived])
            }
            Principal::User(_) => Ok(derived),
        };
        keytab.map_err(|e| KadminError::Failed(format!("keytab for {principal}: {e}")))
    }

    /// Creates the account for `spn` with `password`; if another
    /// controller (or an earlier life of this one) created it first, resets
    /// that account's password instead. Either way one account holds `spn`.
    async fn create_account(
        &self,
        principal: &Principal,
        spn: &str,
        password: &str,
    ) -> Result<Account, KadminError> {
        let Some(ou) = &self.cfg.accounts_ou else {
            return Err(KadminError::Failed("no accounts_ou configured".into()));
        };
        let new = create::new_account(
            spn,
            ou,
            &self.cfg.realm,
            self.cfg.accounts_manager.as_deref(),
        );
        match ldap::create(&self.cfg, &new, password).await? {
            Created::Created => {
                tracing::info!(%principal, account = %new.dn, "created a service account in Active Directory");
                let event = AuditEvent::new(Actor::Controller, Action::Admin)
                    .with_subject(format!("ad-account/{}", new.sam_account_name))
                    .with_reason(format!(
                        "created Active Directory account {} for {principal}",
                        new.dn
                    ));
                if self.audit.send(event).is_err() {
                    tracing::error!(account = %new.dn, "cannot audit a created account: the audit writer is gone");
                }
                ldap::find(&self.cfg, Lookup::SamAccountName(&new.sam_account_name)).await
            }
            Created::AlreadyExists => {
                let account = self.account(principal).await.map_err(|e| match e {
                    KadminError::NoSuchPrincipal(_) => KadminError::Refused {
                        principal: principal.to_string(),
                        message: format!(
                            "cannot create {}: an entry of that name exists and does not hold {spn}",
                            new.dn
                        ),
                    },
                    other => other,
                })?;
                ldap::set_password(&self.cfg, &account, password).await?;
                Ok(account)
            }
        }
    }

    /// A rotation: new keys, plus the entries of `current` (the previous
    /// key version) for the grace period.
    pub async fn rotate(
        &self,
        principal: &Principal,
        current: Option<&Keytab>,
    ) -> Result<Keytab, KadminError> {
        let fresh = self.new_keys(principal).await?;
        let Some(current) = current else {
            return Ok(fresh);
        };
        let newest = fresh.kvnos().iter().max().copied().unwrap_or(0);
        let previous = current
            .retain_kvnos(|v| v < newest)
            .map_err(|e| KadminError::Failed(format!("previous keys of {principal}: {e}")));
        match previous {
            Ok(previous) => Keytab::merge([&fresh, &previous])
                .map_err(|e| KadminError::Failed(format!("keytab for {principal}: {e}"))),
            // Nothing older to keep (e.g. the stored keytab was already newer).
            Err(_) => Ok(fresh),
        }
    }

    /// Ends a grace period: only the entries of `keep_kvno` and newer.
    pub fn purge(
        &self,
        principal: &Principal,
        keep_kvno: u32,
        current: Option<&Keytab>,
    ) -> Result<Keytab, KadminError> {
        let current = current.ok_or_else(|| {
            KadminError::Failed(format!("no stored keytab of {principal} to purge"))
        })?;
        current
            .retain_kvnos(|v| v >= keep_kvno)
            .map_err(|e| KadminError::Failed(format!("purging {principal}: {e}")))
    }
}

/// A refusal names the principal asked for, not the LDAP tool.
fn naming(e: KadminError, principal: &Principal) -> KadminError {
    match e {
        KadminError::Refused { message, .. } => KadminError::Refused {
            principal: principal.to_string(),
            message,
        },
        other => other,
    }
}
