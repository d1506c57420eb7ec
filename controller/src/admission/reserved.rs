//! Identities kcred and the cluster rely on: never issued to a pod and
//! never rotated by an operator's command, whatever the policy says.
//!
//! - the KDC's own principals (`krbtgt`, `kadmin`, `K/M`, `kiprop`);
//! - kcred's services (`kcred/...`) and the principals the controller
//!   itself uses (its kadmin and acceptor principals): rotating them would
//!   lock every node and operator out;
//! - a node's `host/` key: a pod holding it could act as that node;
//! - the controller's own TLS names: its CA signs both, so a pod holding
//!   such a certificate could pose as the controller.

use std::collections::BTreeSet;

use kcred_proto::kcred::v1::Reason;

use crate::names::ServicePrincipal;
use crate::reasons::Refusal;

/// Services of the KDC and of kcred, reserved in every realm.
const RESERVED_SERVICES: [&str; 5] = ["krbtgt", "kadmin", "K", "kiprop", "kcred"];

/// What is reserved in this deployment.
#[derive(Debug, Clone, Default)]
pub struct Reserved {
    /// Principals (with realm) the controller itself uses.
    pub principals: BTreeSet<String>,
    /// The controller's TLS names.
    pub tls_names: BTreeSet<String>,
}

impl Reserved {
    /// Refuses a principal kcred or a node relies on. `is_node` says
    /// whether a host name is a node's; the host is checked both whole and
    /// by its first label (nodes may be known by short names).
    pub fn check_principal(
        &self,
        p: &ServicePrincipal,
        is_node: &dyn Fn(&str) -> bool,
    ) -> Result<(), Refusal> {
        let host = p.host();
        let short = host.split('.').next().unwrap_or(host);
        let why = if RESERVED_SERVICES.contains(&p.service()) {
            Some("an identity of the KDC or of kcred itself")
        } else if self.principals.contains(&p.to_string()) {
            Some("a principal the controller itself uses")
        } else if p.service() == "host" && (is_node(host) || is_node(short)) {
            Some("a node's host key")
        } else {
            None
        };
        match why {
            Some(why) => Err(Refusal::new(
                Reason::ReservedIdentity,
                format!(
                    "rule reserved: {p} is {why}; it is never issued to pods nor rotated by hand"
                ),
            )),
            None => Ok(()),
        }
    }

    /// Refuses a certificate name the controller serves TLS under.
    pub fn check_cert_name(&self, name: &str) -> Result<(), Refusal> {
        if self.tls_names.contains(name) {
            return Err(Refusal::new(
                Reason::ReservedName,
                format!(
                    "rule reserved: {name:?} is the controller's own TLS name and is never issued to pods"
                ),
            ));
        }
        Ok(())
    }
}
