//! The domain error: a kind that maps 1:1 to a gRPC code, and a message that
//! tells the caller what to fix. Domain modules return this; `api::status`
//! turns it into a `tonic::Status` in one place.

use std::fmt;

/// What went wrong, in terms a client can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The request is malformed or names a bad field: fix it, do not retry.
    InvalidArgument,
    /// A named thing (collection, record, type, …) does not exist.
    NotFound,
    /// What a create names exists already.
    AlreadyExists,
    /// The state is not what the request expects (e.g. a version mismatch).
    FailedPrecondition,
    /// The caller may not do this (e.g. writes to `system`, a read-only grant).
    PermissionDenied,
    /// The call carries no valid credentials (a missing, unknown, revoked or
    /// expired API key).
    Unauthenticated,
    /// A limit was hit (sizes, queues, slots): back off or send less.
    ResourceExhausted,
    /// The method does not exist (a registered method that is not registered).
    Unimplemented,
    /// A concurrent change got there first: retrying the whole call may work.
    Aborted,
    /// Retrying later or elsewhere may help (a dead peer, a busy store).
    Unavailable,
    /// The deadline passed before the work finished.
    DeadlineExceeded,
    /// Every caller went away before the work finished.
    Cancelled,
    /// A bug or an environment failure on the node (logged there).
    Internal,
    /// Stored bytes are lost or damaged (a file's bytes no longer match
    /// its record).
    DataLoss,
}

impl ErrorKind {
    /// The gRPC status code number: the one table from kinds to codes (used
    /// in batch results and by `api::status`).
    pub fn grpc_code(self) -> i32 {
        match self {
            ErrorKind::InvalidArgument => 3,
            ErrorKind::Cancelled => 1,
            ErrorKind::DeadlineExceeded => 4,
            ErrorKind::NotFound => 5,
            ErrorKind::AlreadyExists => 6,
            ErrorKind::PermissionDenied => 7,
            ErrorKind::ResourceExhausted => 8,
            ErrorKind::FailedPrecondition => 9,
            ErrorKind::Aborted => 10,
            ErrorKind::Unimplemented => 12,
            ErrorKind::Internal => 13,
            ErrorKind::DataLoss => 15,
            ErrorKind::Unavailable => 14,
            ErrorKind::Unauthenticated => 16,
        }
    }
}

/// A domain error with an actionable message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// What went wrong.
    pub kind: ErrorKind,
    /// What to fix, for the caller (never more than ~100 bytes of its input).
    pub message: String,
}

/// Result with the domain error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

macro_rules! ctor {
    ($($name:ident => $kind:ident),* $(,)?) => {
        impl Error {
            $(
                #[doc = concat!("An `", stringify!($kind), "` error.")]
                pub fn $name(message: impl Into<String>) -> Self {
                    Error { kind: ErrorKind::$kind, message: message.into() }
                }
            )*
        }
    };
}

ctor! {
    invalid => InvalidArgument,
    not_found => NotFound,
    already_exists => AlreadyExists,
    failed_precondition => FailedPrecondition,
    permission_denied => PermissionDenied,
    unauthenticated => Unauthenticated,
    resource_exhausted => ResourceExhausted,
    unimplemented => Unimplemented,
    aborted => Aborted,
    unavailable => Unavailable,
    deadline_exceeded => DeadlineExceeded,
    cancelled => Cancelled,
    internal => Internal,
    data_loss => DataLoss,
}

impl Error {
    /// True for the caller errors a store write raises before it writes
    /// anything (see `store::writer::apply`).
    pub fn before_writes(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::InvalidArgument
                | ErrorKind::NotFound
                | ErrorKind::AlreadyExists
                | ErrorKind::FailedPrecondition
        )
    }

    /// Prefixes the message with where the error happened (e.g. `filters[2]`).
    pub fn context(mut self, at: impl fmt::Display) -> Self {
        self.message = format!("{at}: {}", self.message);
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.kind, self.message)
    }
}

impl std::error::Error for Error {}

/// Message prefix of errors SQLite raised as SQLITE_ERROR.
pub const SQL_ERROR_PREFIX: &str = "storage (SQL error): ";

/// SQLite's message for an error, without the statement's text (which some
/// errors carry whole, and which can be huge), at most 200 bytes.
fn sqlite_message(e: &rusqlite::Error) -> String {
    let m = match e {
        rusqlite::Error::SqlInputError { msg, .. } => msg.clone(),
        rusqlite::Error::SqliteFailure(_, Some(msg)) => msg.clone(),
        e => e.to_string(),
    };
    if m.len() <= 200 {
        return m;
    }
    let mut end = 200;
    while !m.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &m[..end])
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        let msg = sqlite_message(&e);
        if let rusqlite::Error::SqliteFailure(f, _) = &e {
            match f.code {
                rusqlite::ErrorCode::DiskFull => {
                    return Error::resource_exhausted(format!("disk full: {msg}"));
                }
                // SQLite cannot say why; running out of descriptors is the
                // one cause a client can do anything about (retry later).
                rusqlite::ErrorCode::CannotOpen => {
                    return Error::unavailable(format!(
                        "storage could not open a file ({msg}); if the node is out of file descriptors, retry later"
                    ));
                }
                // Only a query's progress handler interrupts a statement.
                rusqlite::ErrorCode::OperationInterrupted => {
                    return Error::deadline_exceeded("the query was stopped");
                }
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked => {
                    return Error::unavailable(format!("storage busy, retry: {msg}"));
                }
                // SQLITE_ERROR: the statement itself was refused (FTS5 reports
                // query syntax errors this way).
                rusqlite::ErrorCode::Unknown => {
                    return Error::internal(format!("{SQL_ERROR_PREFIX}{msg}"));
                }
                _ => {}
            }
        }
        Error::internal(format!("storage: {msg}"))
    }
}

/// Out of file descriptors (EMFILE: the process's limit; ENFILE: the
/// system's) or disk space: the node's resources, not a bug.
fn exhausted_io(e: &std::io::Error) -> Option<Error> {
    match e.raw_os_error() {
        Some(24) | Some(23) => Some(Error::unavailable(format!(
            "the node ran out of file descriptors ({e}); retry later, or raise its open-files limit"
        ))),
        Some(28) => Some(Error::resource_exhausted(format!("disk full: {e}"))),
        _ => None,
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        exhausted_io(&e).unwrap_or_else(|| Error::internal(format!("i/o: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Running out of descriptors or disk is the node's state, not a bug:
    /// never INTERNAL.
    #[test]
    fn exhausted_resources_are_not_internal_errors() {
        let kind = |errno| Error::from(std::io::Error::from_raw_os_error(errno)).kind;
        assert_eq!(kind(24), ErrorKind::Unavailable);
        assert_eq!(kind(23), ErrorKind::Unavailable);
        assert_eq!(kind(28), ErrorKind::ResourceExhausted);
        assert_eq!(kind(5), ErrorKind::Internal);
        let open = rusqlite::Connection::open("/nonexistent-dir/x/y.db").unwrap_err();
        assert_eq!(Error::from(open).kind, ErrorKind::Unavailable);
    }
}
