//! Domain errors → gRPC statuses, in one place.

use crate::error::{Error, ErrorKind};
use tonic::{Code, Status};

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        let code = match e.kind {
            ErrorKind::InvalidArgument => Code::InvalidArgument,
            ErrorKind::NotFound => Code::NotFound,
            ErrorKind::AlreadyExists => Code::AlreadyExists,
            ErrorKind::FailedPrecondition => Code::FailedPrecondition,
            ErrorKind::PermissionDenied => Code::PermissionDenied,
            ErrorKind::ResourceExhausted => Code::ResourceExhausted,
            ErrorKind::Unimplemented => Code::Unimplemented,
            ErrorKind::Aborted => Code::Aborted,
            ErrorKind::Unavailable => Code::Unavailable,
            ErrorKind::DeadlineExceeded => Code::DeadlineExceeded,
            ErrorKind::Internal => Code::Internal,
        };
        if code == Code::Internal {
            tracing::error!(error = %e.message, "internal error");
        }
        Status::new(code, e.message)
    }
}
