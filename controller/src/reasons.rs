//! One place where failures become reasons and statuses.
//!
//! Every refusal and failure the controller returns names one
//! [`Reason`] from the closed vocabulary in `kcred.proto`. The same reason
//! is the audit record's `reason`, the `reason` label of
//! `kcred_refusals_total`, and travels in the gRPC status details, so
//! drivers and kcredctl act on it instead of on message text.
//!
//! Messages are for people. A failure inside the controller (a store or
//! task error) is logged here in full and answered with a short message:
//! its internals are the operator's, not the caller's.

use kcred_audit::AuditError;
use kcred_proto::kcred::v1::Reason;
use tonic::Status;

use crate::annotations::AnnotationError;
use crate::issuers::IssueError;
use crate::kadmin::KadminError;
use crate::kdc::TicketError;
use crate::names::NameError;
use crate::policy::Denied;
use crate::store::StoreError;

/// An error that knows which reason of the vocabulary it is.
pub trait Reasoned: std::fmt::Display {
    /// The reason a caller, the audit and the metrics see.
    fn reason(&self) -> Reason;
}

/// A decision or failure ready to leave: its reason and a message for
/// people.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    /// The typed reason.
    pub reason: Reason,
    /// What a person reads.
    pub message: String,
}

impl Refusal {
    /// A refusal for `reason`.
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Refusal {
            reason,
            message: message.into(),
        }
    }

    /// Any reasoned error, with its message.
    pub fn from_error(e: &(impl Reasoned + ?Sized)) -> Self {
        Refusal::new(e.reason(), e.to_string())
    }
}

impl Reasoned for Refusal {
    fn reason(&self) -> Reason {
        self.reason
    }
}

/// The status for an error: its reason's code, and a message that does not
/// leak the controller's internals.
pub fn status_of(e: &(impl Reasoned + ?Sized)) -> Status {
    let reason = e.reason();
    match reason {
        Reason::Internal | Reason::StoreUnavailable | Reason::Unspecified => {
            tracing::error!(reason = %reason.label(), error = %e, "internal failure");
            kcred_proto::reason::status(
                reason,
                format!(
                    "the controller failed ({}); its log has the details",
                    reason.label()
                ),
            )
        }
        _ => kcred_proto::reason::status(reason, e.to_string()),
    }
}

impl From<Refusal> for Status {
    fn from(r: Refusal) -> Status {
        status_of(&r)
    }
}

impl Reasoned for AnnotationError {
    fn reason(&self) -> Reason {
        match self {
            AnnotationError::Nothing => Reason::AnnotationsMissing,
            AnnotationError::Malformed { .. } | AnnotationError::BadName { .. } => {
                Reason::AnnotationInvalid
            }
        }
    }
}

impl Reasoned for Denied {
    fn reason(&self) -> Reason {
        match self {
            Denied::NoRoleAccount { .. } => Reason::NoRoleAccount,
            Denied::TicketForOtherAccount { .. } => Reason::TicketNotRoleAccount,
            Denied::CertificateNotGranted { .. } => Reason::CertificateNotGranted,
            Denied::KeyNotGranted { .. } => Reason::KeyNotGranted,
            Denied::PrincipalNotOwned { .. } => Reason::PrincipalNotOwned,
        }
    }
}

impl Reasoned for NameError {
    fn reason(&self) -> Reason {
        Reason::RequestInvalid
    }
}

impl Reasoned for StoreError {
    fn reason(&self) -> Reason {
        Reason::StoreUnavailable
    }
}

impl Reasoned for AuditError {
    fn reason(&self) -> Reason {
        Reason::AuditUnavailable
    }
}

impl Reasoned for KadminError {
    fn reason(&self) -> Reason {
        match self {
            KadminError::NoSuchPrincipal(_) => Reason::PrincipalUnknown,
            KadminError::Refused { .. } => Reason::KdcRefused,
            KadminError::Unavailable(_) => Reason::KdcUnavailable,
            KadminError::Failed(_) => Reason::Internal,
        }
    }
}

impl Reasoned for TicketError {
    fn reason(&self) -> Reason {
        match self {
            TicketError::KdcUnavailable(_) => Reason::KdcUnavailable,
            TicketError::Refused { .. } | TicketError::InvalidPrincipal(_) => Reason::KdcRefused,
            TicketError::NotRenewable(_) => Reason::CredentialState,
            TicketError::Malformed(_) | TicketError::Failed(_) => Reason::Internal,
        }
    }
}

impl Reasoned for IssueError {
    fn reason(&self) -> Reason {
        match self {
            IssueError::Kadmin(e) => e.reason(),
            IssueError::Ticket(e) => e.reason(),
            IssueError::Store(e) => e.reason(),
            IssueError::Busy(_) => Reason::KdcBusy,
            IssueError::Unavailable(_) => Reason::KdcUnavailable,
            IssueError::KeyUnknown(_) => Reason::KeyUnknown,
            IssueError::KeyState(_) => Reason::CredentialState,
            IssueError::Keytab(_) | IssueError::Task(_) => Reason::Internal,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kcred_proto::reason::reason_of;

    #[test]
    fn store_failures_do_not_leak_their_internals() {
        let e = StoreError::Db("redb: table volumes_v1 at /var/lib/kcred/store.redb".into());
        let s = status_of(&e);
        assert_eq!(s.code(), tonic::Code::Unavailable);
        assert_eq!(reason_of(&s), Some(Reason::StoreUnavailable));
        assert!(!s.message().contains("/var/lib"), "{}", s.message());
    }

    #[test]
    fn a_refusal_keeps_its_message_and_reason() {
        let s = status_of(&Refusal::new(
            Reason::PodNotOnNode,
            "pod web/a is on node-b",
        ));
        assert_eq!(s.code(), tonic::Code::PermissionDenied);
        assert_eq!(s.message(), "pod web/a is on node-b");
        assert_eq!(reason_of(&s), Some(Reason::PodNotOnNode));
    }

    #[test]
    fn an_invalid_role_account_login_is_not_retried() {
        let e = IssueError::Ticket(TicketError::InvalidPrincipal("-x".into()));
        assert!(!e.reason().is_transient());
        assert_eq!(status_of(&e).code(), tonic::Code::FailedPrecondition);
    }

    #[test]
    fn key_ring_user_errors_are_not_store_corruption() {
        let unknown = IssueError::KeyUnknown("key ring \"x\" does not exist".into());
        assert_eq!(unknown.reason(), Reason::KeyUnknown);
        let primary = IssueError::KeyState("version 2 is the primary".into());
        assert_eq!(status_of(&primary).code(), tonic::Code::FailedPrecondition);
    }
}
