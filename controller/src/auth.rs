//! Who is calling: nodes prove their identity with their `host/<fqdn>`
//! keytab, people and tools with their own principal, as GSSAPI tokens on
//! every call ([`kcred_auth`]). A node may only speak for itself; an admin
//! caller has a role (operator: read and change; auditor: read).
//!
//! A node proves itself once per connection: over TLS, the first call's
//! token names the principal for the connection's lifetime
//! ([`crate::listener::Connections::prove`]) and later calls on it are not
//! checked again; a client certificate's names are read from the
//! certificate once per connection too (the TLS handshake verified it, and
//! it cannot change while the connection lasts). That is as safe as a token per call: TLS binds every byte
//! of the connection to the peer that completed the handshake, so a later
//! call on it can only come from whoever sent the verified token, who could
//! equally have minted another token; a token cannot be moved to another
//! connection without being verified (and entered in the replay cache)
//! there. Without TLS nothing binds the calls of a connection together, so
//! every call is checked. Admin calls are rare and stay checked per call.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use kcred_auth::Acceptor;
use kcred_auth::grpc::{Caller, token_of, verify};
use kcred_proto::kcred::v1::Reason;
use tonic::{Request, Status};

use crate::config::{AuthMode, AuthSection};
use crate::listener::Proven;
use crate::reasons::Refusal;

/// An admin caller's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminRole {
    /// May read and change.
    Operator,
    /// May only read.
    Auditor,
}

impl AdminRole {
    /// For status output.
    pub fn as_str(self) -> &'static str {
        match self {
            AdminRole::Operator => "operator",
            AdminRole::Auditor => "auditor",
        }
    }
}

/// A caller turned away; the api layer audits it.
#[derive(Debug)]
pub struct Rejected {
    /// Who the caller claimed or proved to be.
    pub who: String,
    /// Why.
    pub refusal: Refusal,
}

fn rejected(who: impl Into<String>, reason: Reason, message: impl Into<String>) -> Rejected {
    Rejected {
        who: who.into(),
        refusal: Refusal::new(reason, message),
    }
}

/// Why the authentication configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    /// Kerberos mode without the controller's keytab.
    #[error("auth.keytab is required with auth.mode = \"kerberos\"")]
    NoKeytab,
    /// The acceptor could not be built from the keytab.
    #[error("auth.keytab: {0}")]
    Acceptor(#[from] kcred_auth::AuthError),
    /// The keytab is readable by others than the controller.
    #[error("auth.keytab {path}: {reason}")]
    KeytabMode {
        /// The keytab.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

/// Who a verified client certificate names (rustls already checked it
/// chains to auth's client CA).
struct CertIdentity {
    dns_names: Vec<String>,
    common_name: Option<String>,
}

fn peer_certificate<T>(request: &Request<T>) -> Option<CertIdentity> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let certs = request.peer_certs()?;
    let leaf = certs.first()?;
    let (_, cert) = X509Certificate::from_der(leaf.as_ref()).ok()?;
    let dns_names = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::DNSName(d) => Some(d.to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let common_name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_string);
    Some(CertIdentity {
        dns_names,
        common_name,
    })
}

/// Whether the call carries a Kerberos token.
pub(crate) fn has_token<T>(request: &Request<T>) -> bool {
    request.metadata().contains_key(kcred_auth::METADATA_KEY)
}

/// Admin principals by role, as the directory sync reads them from groups.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdminSets {
    /// Operators' principals.
    pub operators: BTreeSet<String>,
    /// Auditors' principals.
    pub auditors: BTreeSet<String>,
}

/// Longest wait for a token's verification, its turn included: a replay
/// cache held up (a stalled disk, another process that keeps its lock)
/// must not hold calls for ever.
const VERIFY_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a token was not verified: refused, or not looked at in time.
fn unverified(status: &Status) -> Reason {
    if status.code() == tonic::Code::Unauthenticated {
        Reason::Unauthenticated
    } else {
        Reason::ControllerUnavailable
    }
}

/// The controller's authentication policy.
pub struct Auth {
    acceptor: Option<Arc<Acceptor>>,
    /// Turns to verify a token on a blocking thread, one per CPU: a flood
    /// of tokens waits here, holding neither a worker nor a thread.
    verifying: crate::blocking::Turns,
    realm: String,
    short: bool,
    operators: BTreeSet<String>,
    auditors: BTreeSet<String>,
    /// Granted by directory groups, replaced on every sync.
    directory: std::sync::RwLock<AdminSets>,
}

impl Auth {
    /// Loads the acceptor keytab (Kerberos mode).
    pub fn new(cfg: &AuthSection, realm: &str) -> Result<Self, AuthConfigError> {
        let acceptor = match cfg.mode {
            AuthMode::None => {
                tracing::warn!(
                    "auth.mode = none: the node API trusts callers' claims and the admin API is closed"
                );
                None
            }
            AuthMode::Kerberos => {
                let keytab = cfg.keytab.as_ref().ok_or(AuthConfigError::NoKeytab)?;
                // Its key lets anyone pose as the controller to every node.
                crate::private_file::check(keytab).map_err(|reason| {
                    AuthConfigError::KeytabMode {
                        path: keytab.display().to_string(),
                        reason,
                    }
                })?;
                let acceptor = match &cfg.replay_cache {
                    Some(rc) => Acceptor::with_replay_cache(keytab, rc),
                    None => Acceptor::new(keytab),
                };
                Some(Arc::new(acceptor?))
            }
        };
        let cpus = std::thread::available_parallelism().map_or(2, usize::from);
        Ok(Auth {
            acceptor,
            verifying: crate::blocking::Turns::new(cpus),
            realm: realm.to_string(),
            short: cfg.short_node_names,
            operators: cfg.operators.iter().cloned().collect(),
            auditors: cfg.auditors.iter().cloned().collect(),
            directory: Default::default(),
        })
    }

    /// Replaces the roles granted by directory groups; returns the previous.
    pub fn set_directory_admins(&self, sets: AdminSets) -> AdminSets {
        std::mem::replace(&mut *crate::locks::write(&self.directory), sets)
    }

    /// Checks that the caller is the node it claims to be. `proven` is what
    /// the caller's TLS connection already proved (a principal from a
    /// token, or its client certificate's names), if anything (see the
    /// module docs). Returns what this call proved afresh, for the
    /// connection to remember.
    pub async fn node<T>(
        &self,
        request: &Request<T>,
        claimed: &str,
        proven: Option<&Proven>,
    ) -> Result<Option<Proven>, Rejected> {
        let Some(acceptor) = &self.acceptor else {
            return Ok(None);
        };
        if !has_token(request) {
            // mTLS: the certificate's DNS name is the node's name. The
            // certificate is the connection's for its lifetime: read once.
            if let Some(Proven::Certificate(names)) = proven {
                return self.certificate_speaks_for(names, claimed).map(|()| None);
            }
            if let Some(cert) = peer_certificate(request) {
                self.certificate_speaks_for(&cert.dns_names, claimed)?;
                return Ok(Some(Proven::Certificate(cert.dns_names.into())));
            }
        }
        let principal = match proven {
            Some(Proven::Principal(p)) => Some(p),
            _ => None,
        };
        let caller = match principal {
            Some(p) => Caller(p.to_string()),
            None => self
                .verify_token(acceptor, request)
                .await
                .map_err(|status| {
                    rejected(
                        format!("node/{claimed} (unauthenticated)"),
                        unverified(&status),
                        status.message(),
                    )
                })?,
        };
        let node = kcred_auth::node_name_from_principal(&caller.0, &self.realm, self.short)
            .map_err(|e| {
                rejected(
                    caller.0.clone(),
                    Reason::NotANodeIdentity,
                    format!("{} is not a node identity: {e}", caller.0),
                )
            })?;
        if node != claimed {
            return Err(rejected(
                caller.0.clone(),
                Reason::NodeMismatch,
                format!(
                    "{} is node {node:?} and may not speak for node {claimed:?}",
                    caller.0
                ),
            ));
        }
        Ok(principal.is_none().then_some(Proven::Principal(caller.0)))
    }

    /// Verifies the call's token off the async workers: MIT reads the
    /// keytab and reads and appends to the replay cache file for every
    /// token, and a slow disk there must not stall the calls the workers
    /// serve meanwhile (a connection's later calls skip this, see the
    /// module docs). Gives up after [`VERIFY_TIMEOUT`], its turn included,
    /// with `Unavailable` (the verification itself keeps its turn until it
    /// returns: see [`crate::blocking::Turns`]).
    async fn verify_token<T>(
        &self,
        acceptor: &Arc<Acceptor>,
        request: &Request<T>,
    ) -> Result<Caller, Status> {
        let token = token_of(request)?;
        let acceptor = Arc::clone(acceptor);
        let verified = self.verifying.run(move || verify(&acceptor, &token));
        tokio::time::timeout(VERIFY_TIMEOUT, verified)
            .await
            .map_err(|_| {
                Status::unavailable(format!(
                    "the token could not be verified within {} s (the replay cache is held up); try again",
                    VERIFY_TIMEOUT.as_secs()
                ))
            })?
            .map_err(|e| Status::unavailable(format!("token verification failed: {e}")))?
    }

    /// Whether a client certificate naming `names` may speak for `claimed`.
    fn certificate_speaks_for(&self, names: &[String], claimed: &str) -> Result<(), Rejected> {
        let named =
            |n: &String| n == claimed || (self.short && n.split('.').next() == Some(claimed));
        if names.iter().any(named) {
            Ok(())
        } else {
            Err(rejected(
                format!("cert:{}", names.join(",")),
                Reason::NodeMismatch,
                format!("client certificate for {names:?} may not speak for node {claimed:?}"),
            ))
        }
    }

    /// Authenticates an admin caller and returns their principal and role.
    pub async fn admin<T>(&self, request: &Request<T>) -> Result<(String, AdminRole), Rejected> {
        let Some(acceptor) = &self.acceptor else {
            return Err(rejected(
                "anonymous",
                Reason::Unauthenticated,
                "the admin API needs auth.mode = \"kerberos\"",
            ));
        };
        let caller = match (has_token(request), peer_certificate(request)) {
            (false, Some(cert)) => {
                let cn = cert.common_name.ok_or_else(|| {
                    rejected(
                        "cert:?",
                        Reason::Unauthenticated,
                        "client certificate has no subject CN",
                    )
                })?;
                Caller(format!("cert:{cn}"))
            }
            _ => self
                .verify_token(acceptor, request)
                .await
                .map_err(|status| {
                    rejected("unauthenticated", unverified(&status), status.message())
                })?,
        };
        let directory = crate::locks::read(&self.directory);
        let role = if self.operators.contains(&caller.0) || directory.operators.contains(&caller.0)
        {
            AdminRole::Operator
        } else if self.auditors.contains(&caller.0) || directory.auditors.contains(&caller.0) {
            AdminRole::Auditor
        } else {
            return Err(rejected(
                caller.0.clone(),
                Reason::NoAdminRole,
                format!(
                    "{} has no admin role (auth.operators / auth.auditors, or the directory's admin groups)",
                    caller.0
                ),
            ));
        };
        Ok((caller.0, role))
    }
}
