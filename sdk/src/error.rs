//! The one error type of a handler; each variant becomes the gRPC status of
//! the same name for the caller.

use crate::bindings::collector::runtime::types::Error as Wire;
use std::fmt;

/// What a handler or a host call failed with. Return it with `?`: host calls
/// already produce it, and prost decode errors convert to `InvalidArgument`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// A record or method does not exist → NOT_FOUND.
    NotFound(String),
    /// A record with that id exists → ALREADY_EXISTS.
    AlreadyExists(String),
    /// The request is wrong; the message says what to fix → INVALID_ARGUMENT.
    InvalidArgument(String),
    /// Outside the handler's grants → PERMISSION_DENIED.
    PermissionDenied(String),
    /// A version check or a state rule failed → FAILED_PRECONDITION.
    Conflict(String),
    /// A limit was reached → RESOURCE_EXHAUSTED.
    ResourceExhausted(String),
    /// Anything else → INTERNAL.
    Internal(String),
    /// A concurrent change got there first (e.g. an invoked call's writes
    /// lost a race); retrying the whole call may work → ABORTED.
    Aborted(String),
}

/// `Result` with [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An invalid-argument error: the caller must change the request.
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidArgument(msg.into())
    }

    /// A not-found error.
    pub fn not_found(msg: impl Into<String>) -> Self {
        Error::NotFound(msg.into())
    }

    /// A conflict: the request is valid but the stored state forbids it now.
    pub fn conflict(msg: impl Into<String>) -> Self {
        Error::Conflict(msg.into())
    }

    /// An internal error: a bug or broken data, not the caller's fault.
    pub fn internal(msg: impl Into<String>) -> Self {
        Error::Internal(msg.into())
    }

    /// The message without the kind.
    pub fn message(&self) -> &str {
        match self {
            Error::NotFound(m)
            | Error::AlreadyExists(m)
            | Error::InvalidArgument(m)
            | Error::PermissionDenied(m)
            | Error::Conflict(m)
            | Error::ResourceExhausted(m)
            | Error::Internal(m)
            | Error::Aborted(m) => m,
        }
    }

    /// Whether this is a not-found error (handy before creating a record).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound(_))
    }

    #[doc(hidden)]
    pub fn __unknown_method(ctx: &crate::Context, known: &[&str]) -> Self {
        Error::invalid(format!(
            "{} has no method {} in this handler (it serves: {})",
            ctx.service(),
            ctx.method(),
            known.join(", ")
        ))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self {
            Error::NotFound(_) => "not found",
            Error::AlreadyExists(_) => "already exists",
            Error::InvalidArgument(_) => "invalid argument",
            Error::PermissionDenied(_) => "permission denied",
            Error::Conflict(_) => "conflict",
            Error::ResourceExhausted(_) => "resource exhausted",
            Error::Internal(_) => "internal",
            Error::Aborted(_) => "aborted",
        };
        write!(f, "{kind}: {}", self.message())
    }
}

impl std::error::Error for Error {}

impl From<prost::DecodeError> for Error {
    fn from(e: prost::DecodeError) -> Self {
        Error::invalid(format!("message does not decode: {e}"))
    }
}

impl From<Wire> for Error {
    fn from(e: Wire) -> Self {
        match e {
            Wire::NotFound(m) => Error::NotFound(m),
            Wire::AlreadyExists(m) => Error::AlreadyExists(m),
            Wire::InvalidArgument(m) => Error::InvalidArgument(m),
            Wire::PermissionDenied(m) => Error::PermissionDenied(m),
            Wire::Conflict(m) => Error::Conflict(m),
            Wire::ResourceExhausted(m) => Error::ResourceExhausted(m),
            Wire::Internal(m) => Error::Internal(m),
            Wire::Aborted(m) => Error::Aborted(m),
        }
    }
}

impl From<Error> for Wire {
    fn from(e: Error) -> Self {
        match e {
            Error::NotFound(m) => Wire::NotFound(m),
            Error::AlreadyExists(m) => Wire::AlreadyExists(m),
            Error::InvalidArgument(m) => Wire::InvalidArgument(m),
            Error::PermissionDenied(m) => Wire::PermissionDenied(m),
            Error::Conflict(m) => Wire::Conflict(m),
            Error::ResourceExhausted(m) => Wire::ResourceExhausted(m),
            Error::Internal(m) => Wire::Internal(m),
            Error::Aborted(m) => Wire::Aborted(m),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_survives_the_trip_to_the_host_and_back() {
        let all = [
            Error::NotFound("a".into()),
            Error::AlreadyExists("b".into()),
            Error::InvalidArgument("c".into()),
            Error::PermissionDenied("d".into()),
            Error::Conflict("e".into()),
            Error::ResourceExhausted("f".into()),
            Error::Internal("g".into()),
            Error::Aborted("h".into()),
        ];
        for e in all {
            let back = Error::from(Wire::from(e.clone()));
            assert_eq!(back, e);
        }
    }

    #[test]
    fn decode_errors_are_the_callers_fault() {
        let e: Error = <prost_types_free::Msg as prost::Message>::decode(&[0xff][..])
            .unwrap_err()
            .into();
        assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
        assert!(e.to_string().starts_with("invalid argument: "));
    }

    mod prost_types_free {
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct Msg {
            #[prost(string, tag = "1")]
            pub s: String,
        }
    }
}
