//! Logging into the node's tracing output, tagged with the call's
//! namespace, service and method.

use crate::bindings::collector::runtime::log::{Level, log};

/// Logs at trace level.
pub fn trace(msg: impl AsRef<str>) {
    log(Level::Trace, msg.as_ref())
}
/// Logs at debug level.
pub fn debug(msg: impl AsRef<str>) {
    log(Level::Debug, msg.as_ref())
}
/// Logs at info level.
pub fn info(msg: impl AsRef<str>) {
    log(Level::Info, msg.as_ref())
}
/// Logs at warn level.
pub fn warn(msg: impl AsRef<str>) {
    log(Level::Warn, msg.as_ref())
}
/// Logs at error level.
pub fn error(msg: impl AsRef<str>) {
    log(Level::Error, msg.as_ref())
}
