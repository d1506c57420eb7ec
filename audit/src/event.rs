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
    /// An existing credential was handed out again or renewed.
    Renew,
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
}

impl Action {
    /// Every action, for CLI help and tests.
    pub const ALL: [Action; 8] = [
        Action::Issue,
        Action::Renew,
        Action::Deny,
        Action::Rotate,
        Action::Revoke,
        Action::NodeLost,
        Action::NodeReturned,
        Action::Admin,
    ];

    /// The name used in records and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Issue => "issue",
            Action::Renew => "renew",
            Action::Deny => "deny",
            Action::Rotate => "rotate",
            Action::Revoke => "revoke",
            Action::NodeLost => "node_lost",
            Action::NodeReturned => "node_returned",
            Action::Admin => "admin",
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
    /// Who acted: `node/<name>`, `admin/<principal>` or `controller`.
    pub actor: String,
    /// What happened.
    pub action: Action,
    /// Credential kind ("keytab", "ticket", "cert", "key"), "" for node and
    /// admin events.
    pub kind: String,
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
    /// For a refusal, the rule that refused; optional context otherwise.
    pub reason: String,
}

impl AuditEvent {
    /// Starts an event; the decision is `Deny` for [`Action::Deny`], `Allow`
    /// otherwise. Chain the `with_*` methods for the rest.
    pub fn new(actor: impl Into<String>, action: Action) -> Self {
        AuditEvent {
            actor: actor.into(),
            action,
            kind: String::new(),
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
        }
    }

    /// Sets the credential kind.
    pub fn with_kind(mut self, kind: impl Into<String>) -> Self {
        self.kind = kind.into();
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

    /// Marks the event refused by `rule` (e.g. "rule service_principals: ...").
    pub fn denied(mut self, rule: impl Into<String>) -> Self {
        self.decision = Decision::Deny;
        self.reason = rule.into();
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
        if self.actor.is_empty() {
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
