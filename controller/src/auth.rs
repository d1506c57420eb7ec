//! Who is calling: nodes prove their identity with their `host/<fqdn>`
//! keytab, people and tools with their own principal, as GSSAPI tokens on
//! every call ([`kcred_auth`]). A node may only speak for itself; an admin
//! caller has a role (operator: read and change; auditor: read).

use std::collections::BTreeSet;

use kcred_auth::Acceptor;
use kcred_auth::grpc::authenticate;
use tonic::{Request, Status};

use crate::config::{AuthMode, AuthSection};

/// An admin caller's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// May read and change.
    Operator,
    /// May only read.
    Auditor,
}

impl Role {
    /// For status output.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Operator => "operator",
            Role::Auditor => "auditor",
        }
    }
}

/// Why a caller was refused; the api layer audits it.
#[derive(Debug)]
pub struct Refusal {
    /// Who the caller claimed or proved to be.
    pub who: String,
    /// The status to return.
    pub status: Status,
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

fn has_token<T>(request: &Request<T>) -> bool {
    request.metadata().contains_key(kcred_auth::METADATA_KEY)
}

/// The controller's authentication policy.
pub struct Auth {
    acceptor: Option<Acceptor>,
    realm: String,
    short: bool,
    operators: BTreeSet<String>,
    auditors: BTreeSet<String>,
}

impl Auth {
    /// Loads the acceptor keytab (Kerberos mode).
    pub fn new(cfg: &AuthSection, realm: &str) -> Result<Self, String> {
        let acceptor = match cfg.mode {
            AuthMode::None => {
                tracing::warn!(
                    "auth.mode = none: the node API trusts callers' claims and the admin API is closed"
                );
                None
            }
            AuthMode::Kerberos => {
                let keytab = cfg.keytab.as_ref().ok_or("auth.keytab is required")?;
                let acceptor = match &cfg.replay_cache {
                    Some(rc) => Acceptor::with_replay_cache(keytab, rc),
                    None => Acceptor::new(keytab),
                };
                Some(acceptor.map_err(|e| e.to_string())?)
            }
        };
        Ok(Auth {
            acceptor,
            realm: realm.to_string(),
            short: cfg.short_node_names,
            operators: cfg.operators.iter().cloned().collect(),
            auditors: cfg.auditors.iter().cloned().collect(),
        })
    }

    /// Checks that the caller is the node it claims to be.
    pub fn node<T>(&self, request: &Request<T>, claimed: &str) -> Result<(), Refusal> {
        let Some(acceptor) = &self.acceptor else {
            return Ok(());
        };
        if !has_token(request)
            && let Some(cert) = peer_certificate(request)
        {
            // mTLS: the certificate's DNS name is the node's name.
            let named =
                |n: &String| n == claimed || (self.short && n.split('.').next() == Some(claimed));
            return if cert.dns_names.iter().any(named) {
                Ok(())
            } else {
                Err(Refusal {
                    who: format!("cert:{}", cert.dns_names.join(",")),
                    status: Status::permission_denied(format!(
                        "client certificate for {:?} may not speak for node {claimed:?}",
                        cert.dns_names
                    )),
                })
            };
        }
        let caller = authenticate(acceptor, request).map_err(|status| Refusal {
            who: format!("node/{claimed} (unauthenticated)"),
            status,
        })?;
        let node = kcred_auth::node_name_from_principal(&caller.0, &self.realm, self.short)
            .map_err(|e| Refusal {
                who: caller.0.clone(),
                status: Status::permission_denied(format!(
                    "{} is not a node identity: {e}",
                    caller.0
                )),
            })?;
        if node != claimed {
            return Err(Refusal {
                who: caller.0.clone(),
                status: Status::permission_denied(format!(
                    "{} is node {node:?} and may not speak for node {claimed:?}",
                    caller.0
                )),
            });
        }
        Ok(())
    }

    /// Authenticates an admin caller and returns their principal and role.
    pub fn admin<T>(&self, request: &Request<T>) -> Result<(String, Role), Refusal> {
        let Some(acceptor) = &self.acceptor else {
            return Err(Refusal {
                who: "anonymous".into(),
                status: Status::unauthenticated("the admin API needs auth.mode = \"kerberos\""),
            });
        };
        let caller = match (has_token(request), peer_certificate(request)) {
            (false, Some(cert)) => {
                let cn = cert.common_name.ok_or_else(|| Refusal {
                    who: "cert:?".into(),
                    status: Status::unauthenticated("client certificate has no subject CN"),
                })?;
                kcred_auth::grpc::Caller(format!("cert:{cn}"))
            }
            _ => authenticate(acceptor, request).map_err(|status| Refusal {
                who: "unauthenticated".into(),
                status,
            })?,
        };
        let role = if self.operators.contains(&caller.0) {
            Role::Operator
        } else if self.auditors.contains(&caller.0) {
            Role::Auditor
        } else {
            return Err(Refusal {
                who: caller.0.clone(),
                status: Status::permission_denied(format!(
                    "{} has no admin role (auth.operators / auth.auditors)",
                    caller.0
                )),
            });
        };
        Ok((caller.0, role))
    }
}
