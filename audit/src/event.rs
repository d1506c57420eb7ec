//! What callers record: who did what, where, and the decision.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::AuditError;

/// What happened. Serialized in snake_case ("issue", "node_lost").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// A credential was issued for the first time.
    Issue,
    /// A volume's credentials were handed out again (a refresh: kubelet's
    /// republish, the driver's schedule, a pushed rotation).
    Refresh,
    /// A request was refused; `reason` names the rule.
    Deny,
    /// A credential's key was rotated (new kvno, serial or key version).
    Rotate,
    /// A credential was revoked.
    Revoke,
    /// A node stopped answering; its credentials are at risk.
    NodeLost,
    /// A lost node came back.
    NodeReturned,
    /// An administrator acted (policy change, manual revoke, audit export...).
    Admin,
    /// The controller forgot a volume's record: its pod is gone from the
    /// controller's own view.
    Release,
    /// A node was seen for the first time; its host key is reserved.
    NodeJoined,
}

impl Action {
    /// Every action, for CLI help and tests.
    pub const ALL: [Action; 10] = [
        Action::Issue,
        Action::Refresh,
        Action::Deny,
        Action::Rotate,
        Action::Revoke,
        Action::NodeLost,
        Action::NodeReturned,
        Action::Admin,
        Action::Release,
        Action::NodeJoined,
    ];

    /// The name used in records and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Issue => "issue",
            Action::Refresh => "refresh",
            Action::Deny => "deny",
            Action::Rotate => "rotate",
            Action::Revoke => "revoke",
            Action::NodeLost => "node_lost",
            Action::NodeReturned => "node_returned",
            Action::Admin => "admin",
            Action::Release => "release",
            Action::NodeJoined => "node_joined",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Action {
    type Err = String;

    /// Parses the record name (`kcredctl audit query --action node_lost`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Action::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| format!("unknown audit action {s:?}"))
    }
}

/// The kinds of credential kcred issues.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CredentialKind {
    /// A service principal's keys (`krb5.keytab`).
    Keytab,
    /// A prestashed TGT (`krb5cc`).
    Ticket,
    /// An X.509 certificate and its key.
    Cert,
    /// A data-encryption key ring.
    Key,
}

impl CredentialKind {
    /// Every kind.
    pub const ALL: [CredentialKind; 4] = [
        CredentialKind::Keytab,
        CredentialKind::Ticket,
        CredentialKind::Cert,
        CredentialKind::Key,
    ];

    /// The name in records, metrics and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialKind::Keytab => "keytab",
            CredentialKind::Ticket => "ticket",
            CredentialKind::Cert => "cert",
            CredentialKind::Key => "key",
        }
    }
}

impl fmt::Display for CredentialKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CredentialKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CredentialKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown credential kind {s:?}"))
    }
}

/// Who acted. Recorded as `node/<name>`, `admin/<principal>`,
/// `controller`, or the identity a refused caller claimed or proved.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Actor {
    /// A node driver, authenticated as that node.
    Node(String),
    /// An operator or auditor, by principal (`cert:<CN>` for certificates).
    Admin(String),
    /// The controller on its own (lease sweeps, rotations on loss).
    Controller,
    /// A caller that was refused before it proved to be a node or an
    /// admin: what it claimed or proved, e.g. `node/x (unauthenticated)`.
    Caller(String),
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::Node(n) => write!(f, "node/{n}"),
            Actor::Admin(a) => write!(f, "admin/{a}"),
            Actor::Controller => f.write_str("controller"),
            Actor::Caller(c) => f.write_str(c),
        }
    }
}

impl Actor {
    /// Reads a recorded actor back.
    pub fn parse(s: &str) -> Actor {
        if s == "controller" {
            Actor::Controller
        } else if let Some(n) = s.strip_prefix("node/").filter(|n| !n.contains(' ')) {
            Actor::Node(n.to_string())
        } else if let Some(a) = s.strip_prefix("admin/") {
            Actor::Admin(a.to_string())
        } else {
            Actor::Caller(s.to_string())
        }
    }
}

/// The controller's decision. Serialized as "allow" / "deny".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// The action was carried out.
    Allow,
    /// The action was refused.
    Deny,
}

/// What a caller records. Holds names and numbers only: there is no field
/// for secret bytes, so none can reach the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEvent {
    /// Who acted.
    pub actor: Actor,
    /// What happened.
    pub action: Action,
    /// Credential kind; none for node and admin events.
    pub kind: Option<CredentialKind>,
    /// What it concerns: principal, certificate names, key id.
    pub subject: String,
    /// Kerberos key version number, for keytabs and tickets.
    pub kvno: Option<u32>,
    /// Certificate serial number (hex), for certificates.
    pub serial: Option<String>,
    /// Version of a symmetric or signing key.
    pub key_version: Option<u32>,
    /// Node the credential goes to or the event concerns.
    pub node: String,
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub pod: String,
    /// Allowed or refused.
    pub decision: Decision,
    /// For a refusal, the reason of the vocabulary (`kcred.v1.Reason` as a
    /// label, e.g. `pod_not_on_node`); optional context otherwise.
    pub reason: String,
    /// For a refusal, what a person reads about it.
    pub detail: String,
}

impl AuditEvent {
    /// Starts an event; the decision is `Deny` for [`Action::Deny`], `Allow`
    /// otherwise. Chain the `with_*` methods for the rest.
    pub fn new(actor: Actor, action: Action) -> Self {
        AuditEvent {
            actor,
            action,
            kind: None,
            subject: String::new(),
            kvno: None,
            serial: None,
            key_version: None,
            node: String::new(),
            namespace: String::new(),
            pod: String::new(),
            decision: if action == Action::Deny {
                Decision::Deny
            } else {
                Decision::Allow
            },
            reason: String::new(),
            detail: String::new(),
        }
    }

    /// Sets the credential kind.
    pub fn with_kind(mut self, kind: CredentialKind) -> Self {
        self.kind = Some(kind);
        self
    }

    /// Sets the subject (principal, certificate names, key id).
    pub fn with_subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = subject.into();
        self
    }

    /// Sets the Kerberos kvno.
    pub fn with_kvno(mut self, kvno: u32) -> Self {
        self.kvno = Some(kvno);
        self
    }

    /// Sets the certificate serial.
    pub fn with_serial(mut self, serial: impl Into<String>) -> Self {
        self.serial = Some(serial.into());
        self
    }

    /// Sets the key version.
    pub fn with_key_version(mut self, version: u32) -> Self {
        self.key_version = Some(version);
        self
    }

    /// Sets where: node, namespace and pod.
    pub fn with_place(
        mut self,
        node: impl Into<String>,
        namespace: impl Into<String>,
        pod: impl Into<String>,
    ) -> Self {
        self.node = node.into();
        self.namespace = namespace.into();
        self.pod = pod.into();
        self
    }

    /// Marks the event refused for `reason`, with what a person reads.
    pub fn denied(
        mut self,
        reason: kcred_proto::kcred::v1::Reason,
        detail: impl Into<String>,
    ) -> Self {
        self.decision = Decision::Deny;
        self.reason = reason.label();
        self.detail = detail.into();
        self
    }

    /// Sets a reason without changing the decision.
    pub fn with_reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = reason.into();
        self
    }

    /// Refuses events that would make a misleading record: no actor, a
    /// denial without its rule, or a `deny` action marked allowed.
    pub(super) fn check(&self) -> Result<(), AuditError> {
        let bad = |m: &str| Err(AuditError::InvalidEvent(m.to_string()));
        if matches!(&self.actor, Actor::Node(s) | Actor::Admin(s) | Actor::Caller(s) if s.is_empty())
        {
            return bad("the actor is empty");
        }
        if self.action == Action::Deny && self.decision != Decision::Deny {
            return bad("a deny action must carry decision deny");
        }
        if self.decision == Decision::Deny && self.reason.is_empty() {
            return bad("a denial must name the rule that refused (reason is empty)");
        }
        Ok(())
    }
}
