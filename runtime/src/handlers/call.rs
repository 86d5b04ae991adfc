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
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tracing::Instrument;

/// Tells a call that everyone waiting for its outcome went away, so it
/// stops before it commits anything. The default is never cancelled (a
/// call on a client's own task is stopped by dropping it instead).
#[derive(Debug, Clone, Default)]
pub struct Cancel(Option<watch::Receiver<bool>>);

/// Cancels the calls holding the matching `Cancel`s.
#[derive(Debug)]
pub struct Canceller(watch::Sender<bool>);

impl Cancel {
    /// A `Cancel` and the handle that triggers it.
    pub fn new() -> (Canceller, Cancel) {
        let (tx, rx) = watch::channel(false);
        (Canceller(tx), Cancel(Some(rx)))
    }

    /// Resolves once cancelled; never if the `Canceller` is dropped first.
    pub async fn cancelled(&self) {
        if let Some(rx) = &self.0
            && rx.clone().wait_for(|c| *c).await.is_ok()
        {
            return;
        }
        std::future::pending().await
    }
}

impl Canceller {
    /// Cancels the call.
    pub fn cancel(&self) {
        let _ = self.0.send(true);
    }
}

/// How a call reached this node.
#[derive(Debug, Clone, Default)]
pub struct CallOptions {
    /// Times the call was forwarded between nodes before landing here.
    pub hop: u32,
    /// How many `invoke`s deep the call is.
    pub depth: u32,
    /// The caller's deadline, if it gave one; handler limits still apply.
    pub deadline: Option<Instant>,
    /// Stops the call when its callers go away.
    pub cancel: Cancel,
    /// The client's request id, if it gave one: each collection records it
    /// with the call's writes, so a retry of the call applies them once.
    pub request_id: Option<String>,
    /// The key the call was made with (None for a member's own call). An
    /// `invoke` carries it on, so a handler can call only what its caller
    /// could.
    pub caller: Option<std::sync::Arc<crate::auth::Identity>>,
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
        // Counted only once the method is known: names of methods that do
        // not exist never become labels.
        let found = self.method(&call.namespace, &call.service, &call.method)?;
        let labels = [
            ("namespace", call.namespace.to_string()),
            ("service", call.service.clone()),
            ("method", call.method.clone()),
        ];
        let started = Instant::now();
        let span =
            crate::traces::handler_span(call.namespace.as_str(), &call.service, &call.method);
        let r = self.run(call, found).instrument(span.clone()).await;
        if let Err(e) = &r {
            crate::traces::record_error(&span, &e.to_string());
        }
        metrics::histogram!(crate::telemetry::HANDLER_DURATION, &labels)
            .record(started.elapsed().as_secs_f64());
        let mut labels = labels.to_vec();
        labels.push(("outcome", crate::telemetry::outcome_of(&r).to_string()));
        metrics::counter!(crate::telemetry::HANDLER_CALLS, &labels).increment(1);
        r
    }

    /// Runs a call of a method `call` found.
    async fn run(
        self: &Arc<Self>,
        call: Invocation,
        (bound, m): (Arc<super::BoundService>, prost_reflect::MethodDescriptor),
    ) -> Result<Vec<u8>> {
        let Invocation {
            namespace: ns,
            service,
            method,
            input,
            metadata,
            options,
        } = call;
        // A call counts against its namespace's quota; the `invoke`s it
        // makes run inside it.
        let _slot = match options.depth {
            0 => Some(self.quotas.enter_call(&ns)?),
            _ => None,
        };
        codec::decode(&m.input(), &input)
            .map_err(|e| e.context(format!("input of {service}/{method}")))?;
        let limits = bound.limits;
        // The whole call, re-runs included, ends at the handler's timeout
        // or the caller's deadline, whichever comes first.
        let mut end = Instant::now() + limits.timeout;
        if let Some(d) = options.deadline {
            if d <= Instant::now() {
                return Err(Error::deadline_exceeded(
                    "the caller's deadline passed before the handler started",
                ));
            }
            end = end.min(d);
        }
        let mut attempt = 0;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::deadline_exceeded(format!(
                    "the handler's writes lost {attempt} races with other writes, and its time ran out"
                )));
            }
            let host = Arc::new(CollectionsHost::new(
                self.clone(),
                ns.clone(),
                bound.spec.grants.clone(),
                options.clone(),
            ));
            let api: Arc<dyn HostApi> = host.clone();
            let ctx = CallContext {
                namespace: ns.to_string(),
                service: service.clone(),
                method: method.clone(),
                metadata: metadata.clone(),
                deadline_ms: left.as_millis() as u64,
            };
            let limits = crate::wasm::Limits {
                timeout: left,
                ..limits
            };
            let run = self.sandbox.call(&bound.handler, ctx, &input, api, &limits);
            let out = tokio::select! {
                out = run => out?,
                _ = options.cancel.cancelled() => return Err(Error::cancelled(
                    "every caller went away, so the handler was stopped; none of its writes were applied",
                )),
            };
            codec::decode(&m.output(), &out).map_err(|e| {
                Error::internal(format!(
                    "the handler's output is not a {}: {}",
                    m.output().full_name(),
                    e.message
                ))
            })?;
            // Only a successful call's writes are applied: an error or trap
            // above returned early and dropped them with `host`. The commit
            // runs in its own task, so a caller that gives up mid-way cannot
            // stop it between two collections' batches.
            if !host.has_writes() {
                return Ok(out);
            }
            let committed = tokio::spawn(async move { host.commit().await }.in_current_span())
                .await
                .map_err(|e| Error::internal(format!("commit task: {e}")))?;
            match committed {
                Ok(()) => return Ok(out),
                Err(e) if e.retryable && attempt < limits::HANDLER_CONFLICT_RETRIES => {
                    attempt += 1;
                    tracing::debug!(%ns, %service, %method, attempt, "handler writes lost a race; re-running the call");
                    tokio::time::sleep(backoff(attempt)).await;
                }
                Err(e) => return Err(e.error),
            }
        }
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

/// How long to wait before re-running a call whose writes lost a race: a
/// random time up to a cap that doubles with each attempt (1 ms, 2 ms, …
/// 64 ms), so the racers spread out instead of colliding again.
fn backoff(attempt: u32) -> Duration {
    let cap_us = 1000u64 << attempt.min(6);
    Duration::from_micros(fastrand::u64(cap_us / 2..=cap_us))
}
