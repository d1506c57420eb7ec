//! Every error the driver answers kubelet with becomes a CSI status here,
//! and only here.
//!
//! - A request that fails validation: INVALID_ARGUMENT, naming the field.
//! - Another operation on the volume: ABORTED (kubelet retries).
//! - The volume published with another `readonly`: ALREADY_EXISTS; any
//!   other refusal of the lifecycle: FAILED_PRECONDITION.
//! - The controller's refusal keeps its code (a transient one stays
//!   retryable, e.g. UNAVAILABLE while the KDC is down); a controller that
//!   cannot be reached is UNAVAILABLE.
//! - Node-side failures: INTERNAL.

use tonic::Status;

use super::request::InvalidRequest;
use crate::controller_client::ControllerError;
use crate::volumes::{Refusal, VolumeError};

impl From<InvalidRequest> for Status {
    fn from(e: InvalidRequest) -> Status {
        Status::invalid_argument(e.0)
    }
}

impl From<VolumeError> for Status {
    fn from(e: VolumeError) -> Status {
        let message = e.to_string();
        match e {
            VolumeError::Busy(_) => Status::aborted(message),
            VolumeError::Refused(Refusal::ReadonlyChanged { .. }) => {
                Status::already_exists(message)
            }
            VolumeError::Refused(_) => Status::failed_precondition(message),
            VolumeError::Controller(ControllerError::Unreachable(_)) => {
                Status::unavailable(message)
            }
            VolumeError::Controller(ControllerError::Refused { status, .. }) => {
                Status::new(status.code(), message)
            }
            VolumeError::Storage(_) | VolumeError::Task(_) => Status::internal(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kcred_proto::kcred::v1::Reason;
    use kcred_proto::reason::status;
    use tonic::Code;

    fn csi(e: VolumeError) -> Code {
        Status::from(e).code()
    }

    #[test]
    fn controller_refusals_keep_their_code_and_transport_failures_are_unavailable() {
        let refused = |s| VolumeError::Controller(ControllerError::from_status(s));
        assert_eq!(
            csi(refused(status(Reason::PrincipalNotOwned, "no"))),
            Code::PermissionDenied
        );
        assert_eq!(
            csi(refused(status(Reason::PodUnknown, "who"))),
            Code::NotFound
        );
        assert_eq!(
            csi(refused(status(Reason::KdcBusy, "later"))),
            Code::ResourceExhausted,
            "a transient refusal stays retryable"
        );
        assert_eq!(
            csi(refused(Status::unknown("transport error"))),
            Code::Unavailable
        );
        assert_eq!(
            csi(refused(Status::cancelled("timeout"))),
            Code::Unavailable
        );
        assert_eq!(
            csi(refused(Status::permission_denied("legacy, no reason"))),
            Code::PermissionDenied
        );
    }

    #[test]
    fn refusals_and_local_failures_get_the_codes_the_spec_names() {
        assert_eq!(csi(VolumeError::Busy("v".into())), Code::Aborted);
        assert_eq!(
            csi(VolumeError::Refused(Refusal::ReadonlyChanged {
                volume_id: "v".into(),
                recorded: false
            })),
            Code::AlreadyExists
        );
        assert_eq!(
            csi(VolumeError::Refused(Refusal::NotOurs {
                target: "/t".into(),
                what: "a mount"
            })),
            Code::FailedPrecondition
        );
        assert_eq!(csi(VolumeError::Task("x".into())), Code::Internal);
        let s = Status::from(InvalidRequest("target_path is required".into()));
        assert_eq!(s.code(), Code::InvalidArgument);
        assert!(s.message().contains("target_path"));
    }
}
