//! The reason vocabulary on the wire.
//!
//! Every refusal or failure the controller returns carries one
//! [`Reason`] as a `google.rpc.ErrorInfo` in the gRPC status details
//! (domain [`DOMAIN`], reason = the enum value's name, as AIP-193 asks).
//! Callers act on [`reason_of`], never on the message, which is for people.
//!
//! ```
//! use kcred_proto::kcred::v1::Reason;
//! use kcred_proto::reason::{reason_of, status};
//!
//! let s = status(Reason::VolumeRevoked, "volume v1 of pod web/a was revoked");
//! assert_eq!(s.code(), tonic::Code::PermissionDenied);
//! assert_eq!(reason_of(&s), Some(Reason::VolumeRevoked));
//! ```

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::kcred::v1::Reason;

/// The `ErrorInfo.domain` of kcred's reasons.
pub const DOMAIN: &str = "kcred.io";

impl Reason {
    /// The gRPC code a reason travels with: it tells a caller whether a
    /// retry can help (Unavailable, ResourceExhausted, Aborted) or not.
    pub fn code(self) -> Code {
        use Reason::*;
        match self {
            Unspecified | Internal => Code::Internal,
            RequestInvalid | AnnotationsMissing | AnnotationInvalid => Code::InvalidArgument,
            Unauthenticated | PodTokenInvalid | PodTokenMissing => Code::Unauthenticated,
            NotANodeIdentity
            | NodeMismatch
            | NoAdminRole
            | RoleForbids
            | PodUidMismatch
            | PodNotOnNode
            | RunAsMismatch
            | ServiceAccountNotAllowed
            | NoRoleAccount
            | PrincipalNotOwned
            | TicketNotRoleAccount
            | CertificateNotGranted
            | KeyNotGranted
            | ReservedIdentity
            | ReservedName
            | VolumeConflict
            | VolumeRevoked
            | PodTokenMismatch => Code::PermissionDenied,
            PodUnknown | VolumeUnknown | KeyUnknown => Code::NotFound,
            PodFinished | NodeLost | KdcRefused | PrincipalUnknown | CredentialState => {
                Code::FailedPrecondition
            }
            KdcUnavailable
            | AuditUnavailable
            | StoreUnavailable
            | ControllerUnavailable
            | PodViewBehind
            | KubeApiUnavailable => Code::Unavailable,
            KdcBusy | TooManyStreams => Code::ResourceExhausted,
            RotationInProgress => Code::Aborted,
        }
    }

    /// Whether the same call may succeed later without anyone acting.
    pub fn is_transient(self) -> bool {
        matches!(
            self.code(),
            Code::Unavailable | Code::ResourceExhausted | Code::Aborted
        )
    }

    /// The stable label for metrics and audit records (`volume_revoked`).
    pub fn label(self) -> String {
        self.as_str_name().to_ascii_lowercase()
    }

    /// The reason named by a label ([`Reason::label`]) or its wire name.
    pub fn from_label(label: &str) -> Option<Reason> {
        Reason::from_str_name(&label.to_ascii_uppercase())
    }
}

/// A status with the reason's code, the message, and the reason in its
/// details.
pub fn status(reason: Reason, message: impl Into<String>) -> Status {
    Status::with_error_details(
        reason.code(),
        message,
        ErrorDetails::with_error_info(reason.as_str_name(), DOMAIN, []),
    )
}

/// The kcred reason a status carries, if it carries one.
pub fn reason_of(status: &Status) -> Option<Reason> {
    let info = status.get_error_details().error_info()?.clone();
    if info.domain != DOMAIN {
        return None;
    }
    Reason::from_str_name(&info.reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_survives_the_wire() {
        for n in 0..=100 {
            let Ok(r) = Reason::try_from(n) else { continue };
            let s = status(r, "m");
            // Through the encoded header, as a client receives it.
            let http = s.into_http::<tonic::body::Body>();
            let back = Status::from_header_map(http.headers()).unwrap();
            assert_eq!(reason_of(&back), Some(r), "{r:?}");
            assert_eq!(back.code(), r.code());
            assert_eq!(Reason::from_label(&r.label()), Some(r));
        }
    }

    #[test]
    fn a_status_without_details_has_no_reason() {
        assert_eq!(reason_of(&Status::permission_denied("was revoked")), None);
    }

    #[test]
    fn another_domain_is_not_ours() {
        let s = Status::with_error_details(
            Code::PermissionDenied,
            "x",
            ErrorDetails::with_error_info("VOLUME_REVOKED", "example.com", []),
        );
        assert_eq!(reason_of(&s), None);
    }
}
