//! Domain errors → gRPC statuses, in one place.

use crate::error::{Error, ErrorKind};
use tonic::{Code, Status};

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        let code = Code::from_i32(e.kind.grpc_code());
        if code == Code::Internal {
            tracing::error!(error = %e.message, "internal error");
        }
        Status::new(code, clip_message(e.message))
    }
}

/// Cuts a message to `limits::MAX_STATUS_MESSAGE_BYTES`, on a character
/// boundary, saying how much was left out.
fn clip_message(mut m: String) -> String {
    let max = crate::limits::MAX_STATUS_MESSAGE_BYTES;
    if m.len() <= max {
        return m;
    }
    let total = m.len();
    let mut end = max - 40;
    while !m.is_char_boundary(end) {
        end -= 1;
    }
    m.truncate(end);
    m.push_str(&format!("… ({} more bytes)", total - end));
    m
}

/// A peer's answer → a domain error, so a forwarded call fails with the code
/// the peer gave. A failure of the connection itself (the status carries a
/// transport error as its source) is UNAVAILABLE: the peer may or may not
/// have run the call, and nothing retries it.
pub fn from_peer(s: &Status, peer: &str) -> Error {
    if std::error::Error::source(s).is_some() && s.code() != Code::DeadlineExceeded {
        return Error::unavailable(format!(
            "node {peer} could not be reached or went away during the call ({}); the call may or may not have run there and was not retried",
            s.message()
        ));
    }
    let kind = match s.code() {
        Code::InvalidArgument | Code::OutOfRange => ErrorKind::InvalidArgument,
        Code::NotFound => ErrorKind::NotFound,
        Code::AlreadyExists => ErrorKind::AlreadyExists,
        Code::FailedPrecondition => ErrorKind::FailedPrecondition,
        Code::PermissionDenied => ErrorKind::PermissionDenied,
        Code::Unauthenticated => ErrorKind::Unauthenticated,
        Code::ResourceExhausted => ErrorKind::ResourceExhausted,
        Code::Unimplemented => ErrorKind::Unimplemented,
        Code::Aborted => ErrorKind::Aborted,
        Code::Cancelled => ErrorKind::Cancelled,
        Code::Unavailable => ErrorKind::Unavailable,
        Code::DeadlineExceeded => ErrorKind::DeadlineExceeded,
        Code::Ok | Code::Unknown | Code::Internal | Code::DataLoss => ErrorKind::Internal,
    };
    Error {
        kind,
        message: s.message().to_string(),
    }
}
