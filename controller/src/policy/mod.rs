//! Who may get what: the role-account policy.
//!
//! Every namespace belongs to exactly one unix role account. A pod may get
//! keytabs only for service principals its namespace's role account owns.
//! Every refusal names the rule that refused it, for the pod's events and
//! the audit.

mod file;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

pub use file::parse_policy;

use crate::names::ServicePrincipal;

/// A unix account that owns a set of credentials and the namespaces that
/// run as it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleAccount {
    /// Unix login.
    pub login: String,
    /// The realm of the account's own principal `login@REALM`, what its
    /// prestashed tickets are for (`None`: the controller's own realm).
    pub realm: Option<String>,
    /// Owner of delivered files.
    pub uid: u32,
    /// Group of delivered files.
    pub gid: u32,
    /// Supplementary groups (informational; used by later identity sync).
    pub groups: Vec<String>,
    /// Namespaces whose pods run as this account.
    pub namespaces: BTreeSet<String>,
    /// Service principals this account owns, with their realm
    /// (`HTTP/web.example.com@EXAMPLE.COM`): one name in two served realms
    /// is two principals.
    pub service_principals: BTreeSet<String>,
    /// DNS names this account may get certificates for.
    pub certificates: BTreeSet<String>,
    /// Encryption key ids granted to this account.
    pub keys: BTreeSet<String>,
    /// Groups besides `gid` its pods may run with (fsGroup,
    /// supplementalGroups).
    pub supplemental_gids: BTreeSet<u32>,
    /// Service accounts whose pods may hold its credentials (empty: any).
    pub service_accounts: BTreeSet<String>,
    /// People who may log in as this account (from the directory sync;
    /// informational).
    pub logged_into_by: BTreeSet<String>,
}

/// The whole policy, indexed by namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// Shared so a grant holds its role account without copying it: an
    /// account may own thousands of principals, and every fetch is granted.
    roles: BTreeMap<String, Arc<RoleAccount>>,
    by_namespace: BTreeMap<String, String>,
}

/// A refusal, naming the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// The namespace is mapped to no role account.
    #[error("rule namespaces: namespace {namespace:?} belongs to no role account in the policy")]
    NoRoleAccount {
        /// The namespace.
        namespace: String,
    },
    /// The pod asks for another role account's tickets.
    #[error(
        "rule tickets: pods in namespace {namespace:?} run as {login:?} and may hold only its tickets, not {asked:?}'s"
    )]
    TicketForOtherAccount {
        /// The namespace's role account.
        login: String,
        /// The namespace.
        namespace: String,
        /// The account asked for.
        asked: String,
    },
    /// The role account is not granted a certificate name.
    #[error(
        "rule certificates: role account {login:?} (namespace {namespace:?}) is not granted certificates for {name:?}"
    )]
    CertificateNotGranted {
        /// The role account.
        login: String,
        /// The namespace.
        namespace: String,
        /// The name asked for.
        name: String,
    },
    /// The role account is not granted a key.
    #[error(
        "rule keys: role account {login:?} (namespace {namespace:?}) is not granted key {key:?}"
    )]
    KeyNotGranted {
        /// The role account.
        login: String,
        /// The namespace.
        namespace: String,
        /// The key id asked for.
        key: String,
    },
    /// The role account does not own the principal.
    #[error(
        "rule service_principals: role account {login:?} (namespace {namespace:?}) does not own {principal}"
    )]
    PrincipalNotOwned {
        /// The role account.
        login: String,
        /// The namespace.
        namespace: String,
        /// The principal asked for.
        principal: String,
    },
}

/// Why a set of role accounts is not a policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// Two role accounts share a login.
    #[error("role account {0:?} is defined twice")]
    RoleTwice(String),
    /// A namespace can run as one role account only.
    #[error("namespace {namespace:?} is claimed by both {first:?} and {second:?}")]
    NamespaceTwice {
        /// The namespace.
        namespace: String,
        /// The account that claimed it first.
        first: String,
        /// The account that claimed it again.
        second: String,
    },
}

impl Policy {
    /// Builds the namespace index; fails on a namespace claimed twice.
    pub fn new(roles: Vec<RoleAccount>) -> Result<Self, PolicyError> {
        let mut policy = Policy::default();
        for role in roles {
            if policy.roles.contains_key(&role.login) {
                return Err(PolicyError::RoleTwice(role.login));
            }
            for ns in &role.namespaces {
                if let Some(other) = policy.by_namespace.insert(ns.clone(), role.login.clone()) {
                    return Err(PolicyError::NamespaceTwice {
                        namespace: ns.clone(),
                        first: other,
                        second: role.login.clone(),
                    });
                }
            }
            policy.roles.insert(role.login.clone(), Arc::new(role));
        }
        Ok(policy)
    }

    /// The role account a namespace runs as.
    pub fn role_for_namespace(&self, namespace: &str) -> Result<&Arc<RoleAccount>, Denied> {
        self.by_namespace
            .get(namespace)
            .and_then(|login| self.roles.get(login))
            .ok_or_else(|| Denied::NoRoleAccount {
                namespace: namespace.to_string(),
            })
    }

    /// Whether a pod in `namespace` may receive a keytab for `principal`.
    pub fn authorize_keytab<'a>(
        &'a self,
        namespace: &str,
        principal: &ServicePrincipal,
    ) -> Result<&'a Arc<RoleAccount>, Denied> {
        let role = self.role_for_namespace(namespace)?;
        if role.service_principals.contains(&principal.to_string()) {
            Ok(role)
        } else {
            Err(Denied::PrincipalNotOwned {
                login: role.login.clone(),
                namespace: namespace.to_string(),
                principal: principal.to_string(),
            })
        }
    }

    /// Checks everything a pod asks for; the first refusal wins. Returns
    /// the role account the credentials are issued to.
    pub fn authorize(
        &self,
        namespace: &str,
        req: &crate::annotations::CredentialRequest,
    ) -> Result<&Arc<RoleAccount>, Denied> {
        let role = self.role_for_namespace(namespace)?;
        for principal in &req.keytabs {
            self.authorize_keytab(namespace, principal)?;
        }
        if let Some(asked) = &req.ticket
            && asked != &role.login
        {
            return Err(Denied::TicketForOtherAccount {
                login: role.login.clone(),
                namespace: namespace.to_string(),
                asked: asked.clone(),
            });
        }
        if let Some(name) = req.certs.iter().find(|n| !role.certificates.contains(*n)) {
            return Err(Denied::CertificateNotGranted {
                login: role.login.clone(),
                namespace: namespace.to_string(),
                name: name.clone(),
            });
        }
        if let Some(key) = req.keys.iter().find(|k| !role.keys.contains(*k)) {
            return Err(Denied::KeyNotGranted {
                login: role.login.clone(),
                namespace: namespace.to_string(),
                key: key.clone(),
            });
        }
        Ok(role)
    }

    /// Every role account, by login.
    pub fn roles(&self) -> impl Iterator<Item = &RoleAccount> {
        self.roles.values().map(|r| &**r)
    }

    /// The role account with this login.
    pub fn role(&self, login: &str) -> Option<&RoleAccount> {
        self.roles.get(login).map(|r| &**r)
    }

    /// Number of role accounts (for status and logs).
    pub fn len(&self) -> usize {
        self.roles.len()
    }

    /// Whether the policy grants nothing.
    pub fn is_empty(&self) -> bool {
        self.roles.is_empty()
    }
}
