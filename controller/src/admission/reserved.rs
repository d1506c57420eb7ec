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
    /// Host names that are nodes' whether or not kcred saw them yet
    /// (`reserved.host_patterns`, `*` matching any run of characters).
    pub host_patterns: Vec<String>,
    /// `auth.short_node_names`: a `host/<fqdn>` key authenticates as the
    /// node named by its first label, so that is the name to compare.
    pub short_node_names: bool,
}

impl Reserved {
    /// Refuses a principal kcred or a node relies on. `is_node` says
    /// whether a name is a known node's (see
    /// [`crate::nodes::registry::NodeRegistry`]).
    pub fn check_principal(
        &self,
        p: &ServicePrincipal,
        is_node: &dyn Fn(&str) -> bool,
    ) -> Result<(), Refusal> {
        let why = if RESERVED_SERVICES.contains(&p.service()) {
            Some("an identity of the KDC or of kcred itself")
        } else if self.principals.contains(&p.to_string()) {
            Some("a principal the controller itself uses")
        } else if p.service() == "host" && self.is_node_host(p.host(), is_node) {
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

    /// Whether `host/<host>` is (or would authenticate as) a node: the
    /// name a node would be known by (its first label with short node
    /// names, else the whole name; the whole name in any case), or a
    /// configured pattern.
    fn is_node_host(&self, host: &str, is_node: &dyn Fn(&str) -> bool) -> bool {
        let host = host.to_ascii_lowercase();
        if self.host_patterns.iter().any(|g| glob_match(g, &host)) {
            return true;
        }
        let short = host.split('.').next().unwrap_or(&host);
        is_node(&host) || (self.short_node_names && is_node(short))
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

/// `*` matches any run of characters (none included); everything else
/// matches itself, ASCII case-insensitively.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n) = (pattern.as_bytes(), name.as_bytes());
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && p[pi] != b'*' && p[pi].eq_ignore_ascii_case(&n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ni));
            pi += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&b| b == b'*')
}
