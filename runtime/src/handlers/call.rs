//! The call path of a registered method on this node: the method is looked
//! up once, its input checked, the handler run in the sandbox with a host
//! over the catalogue, its output checked, and its buffered writes applied.

use super::Handlers;
use super::host::CollectionsHost;
use crate::error::{Error, Result};
use crate::limits;
use crate::names::Namespace;
use crate::store::codec;
use crate::wasm::{CallContext, HostApi, HostFuture};
use std::sync::Arc;
use std::time::Instant;

/// How a call reached this node.
#[derive(Debug, Clone, Copy, Default)]
pub struct CallOptions {
    /// Times the call was forwarded between nodes before landing here.
    pub hop: u32,
    /// How many `invoke`s deep the call is.
    pub depth: u32,
    /// The caller's deadline, if it gave one; handler limits still apply.
    pub deadline: Option<Instant>,
}

/// One call of a registered method.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// The namespace the method is registered in.
    pub namespace: Namespace,
    /// Full service name, e.g. `shop.Orders`.
    pub service: String,
    /// Method name, e.g. `Create`.
    pub method: String,
    /// The input message, binary protobuf.
    pub input: Vec<u8>,
    /// The caller's metadata, handed to the handler.
    pub metadata: Vec<(String, String)>,
    /// How the call got here.
    pub options: CallOptions,
}

/// Routes a handler's `invoke` of another method (the mesh implements it,
/// so an invoke goes where a Dispatch would).
pub trait Invoker: Send + Sync {
    /// Runs the call wherever it belongs.
    fn invoke(&self, call: Invocation) -> HostFuture<'static, Vec<u8>>;
}

impl Handlers {
    /// Calls a registered method on this node with binary input; returns
    /// binary output. Runs on the caller's task: the sandbox yields to the
    /// executor, and store work happens on the store's threads.
    pub async fn call(self: &Arc<Self>, call: Invocation) -> Result<Vec<u8>> {
        let Invocation {
            namespace: ns,
            service,
            method,
            input,
            metadata,
            options,
        } = call;
        let (bound, m) = self.method(&ns, &service, &method)?;
        codec::decode(&m.input(), &input)
            .map_err(|e| e.context(format!("input of {service}/{method}")))?;
        let mut limits = bound.limits;
        if let Some(d) = options.deadline {
            let left = d.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::deadline_exceeded(
                    "the caller's deadline passed before the handler started",
                ));
            }
            limits.timeout = limits.timeout.min(left);
        }
        let host = Arc::new(CollectionsHost::new(
            self.clone(),
            ns.clone(),
            bound.spec.grants.clone(),
            options,
        ));
        let api: Arc<dyn HostApi> = host.clone();
        let ctx = CallContext {
            namespace: ns.to_string(),
            service: service.clone(),
            method: method.clone(),
            metadata,
            deadline_ms: limits.timeout.as_millis() as u64,
        };
        let out = self
            .sandbox
            .call(&bound.handler, ctx, &input, api, &limits)
            .await?;
        codec::decode(&m.output(), &out).map_err(|e| {
            Error::internal(format!(
                "the handler's output is not a {}: {}",
                m.output().full_name(),
                e.message
            ))
        })?;
        // Only a successful call's writes are applied: an error or trap above
        // returned early and dropped them with `host`. The commit runs in its
        // own task, so a caller that gives up mid-way cannot stop it between
        // two collections' batches.
        if host.has_writes() {
            tokio::spawn(async move { host.commit().await })
                .await
                .map_err(|e| Error::internal(format!("commit task: {e}")))??;
        }
        Ok(out)
    }

    /// Runs a handler's `invoke` of another method: through the mesh when it
    /// is wired in, else here.
    pub(super) async fn invoke_from(self: &Arc<Self>, call: Invocation) -> Result<Vec<u8>> {
        if call.options.depth >= limits::MAX_INVOKE_DEPTH {
            return Err(Error::resource_exhausted(format!(
                "invoke nested more than {} deep",
                limits::MAX_INVOKE_DEPTH
            )));
        }
        match self.invoker.get().and_then(std::sync::Weak::upgrade) {
            Some(invoker) => invoker.invoke(call).await,
            None => Box::pin(self.call(call)).await,
        }
    }
}
