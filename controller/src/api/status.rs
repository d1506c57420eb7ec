//! How internal errors become gRPC statuses: the code tells the node
//! whether to retry, the message tells a person what to fix.

use tonic::Status;

use crate::annotations::AnnotationError;
use crate::issuers::IssueError;
use crate::kadmin::KadminError;
use crate::policy::Denied;

impl From<AnnotationError> for Status {
    fn from(e: AnnotationError) -> Status {
        Status::invalid_argument(e.to_string())
    }
}

impl From<Denied> for Status {
    fn from(e: Denied) -> Status {
        Status::permission_denied(e.to_string())
    }
}

impl From<IssueError> for Status {
    fn from(e: IssueError) -> Status {
        match &e {
            IssueError::Kadmin(KadminError::Unavailable(_)) | IssueError::Unavailable(_) => {
                Status::unavailable(e.to_string())
            }
            IssueError::Kadmin(KadminError::NoSuchPrincipal(_) | KadminError::Refused { .. }) => {
                Status::failed_precondition(e.to_string())
            }
            IssueError::NotFound(_) => Status::not_found(e.to_string()),
            IssueError::Ticket(t) if t.is_retryable() => Status::unavailable(e.to_string()),
            IssueError::Ticket(_) => Status::failed_precondition(e.to_string()),
            IssueError::Kadmin(KadminError::Failed(_))
            | IssueError::Store(_)
            | IssueError::Task(_) => Status::internal(e.to_string()),
        }
    }
}
