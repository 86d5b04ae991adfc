//! What a method knows about the call it serves, and calls to other methods.

use crate::bindings::{CallContext, collector::runtime::invoke};
use crate::{Error, Result};

/// The call being handled: who called which method, and how long is left.
#[derive(Debug, Clone)]
pub struct Context {
    inner: CallContext,
}

impl Context {
    #[doc(hidden)]
    pub fn __from_host(inner: CallContext) -> Self {
        Context { inner }
    }

    /// The caller's namespace; every collection the handler opens is in it.
    pub fn namespace(&self) -> &str {
        &self.inner.namespace
    }

    /// Full service name, e.g. `shop.Orders`.
    pub fn service(&self) -> &str {
        &self.inner.service
    }

    /// Method name, e.g. `Create`.
    pub fn method(&self) -> &str {
        &self.inner.method
    }

    /// Milliseconds left before the call's deadline.
    pub fn deadline_ms(&self) -> u64 {
        self.inner.deadline_ms
    }

    /// The first value of caller metadata `key` (gRPC keys are lower case).
    pub fn metadata(&self, key: &str) -> Option<&str> {
        self.inner
            .metadata
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }

    /// The collection the call is bound to, when it came through
    /// `CollectionService.Invoke`.
    pub fn collection(&self) -> Option<&str> {
        self.metadata("x-collector-collection")
    }

    /// Calls `method` of this same service, through the same path as a gRPC
    /// call (registry check, limits, transaction of its own).
    pub fn invoke<O: prost::Message + Default>(
        &self,
        method: &str,
        input: &impl prost::Message,
    ) -> Result<O> {
        invoke_service(self.service(), method, input)
    }
}

/// Calls `service`/`method` of the caller's namespace and decodes the reply.
pub fn invoke_service<O: prost::Message + Default>(
    service: &str,
    method: &str,
    input: &impl prost::Message,
) -> Result<O> {
    let out = invoke::call(service, method, &input.encode_to_vec())?;
    O::decode(out.as_slice()).map_err(|e| {
        Error::internal(format!(
            "the reply of {service}/{method} is not the expected message: {e}"
        ))
    })
}
