//! Counts every gRPC call by method and status code, and times it to its
//! response headers (a unary call's whole run; a stream's start), the
//! outermost layer, so refused calls are counted too. The status is the
//! one in the response headers (a failed call's); a stream that fails
//! after it started counts as OK.
//!
//! A method is its path when the node's API defines it, or when the call
//! got past the gate to a method that exists (a registered one); any other
//! path counts as `other`, so made-up paths cannot grow the label set.
//!
//! It also opens the call's trace span (`traces::server_span`), the parent
//! of everything the call does on this node.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;
use tonic::codegen::{Service, http};
use tracing::Instrument;

/// The layer for `tonic::transport::Server::layer`.
pub fn layer<S>(
    node_id: &str,
) -> impl tower_layer::Layer<S, Service = CallMetrics<S>> + Clone + use<S> {
    let node: std::sync::Arc<str> = node_id.into();
    tower_layer::layer_fn(move |inner| CallMetrics(inner, node.clone()))
}

/// See the module doc.
#[derive(Debug, Clone)]
pub struct CallMetrics<S>(S, std::sync::Arc<str>);

fn label(path: &str, code: tonic::Code) -> String {
    use tonic::Code as C;
    let built_in = crate::auth::table::METHODS.iter().any(|(p, _)| *p == path);
    let reached = !matches!(
        code,
        C::Unimplemented | C::Unauthenticated | C::PermissionDenied
    );
    if built_in || reached {
        path.to_string()
    } else {
        "other".to_string()
    }
}

impl<S, B, R> Service<http::Request<B>> for CallMetrics<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let grpc = super::is_grpc(req.headers());
        let path = req.uri().path().to_string();
        let span = match grpc {
            true => {
                let h = req.headers();
                let get = |k: &str| h.get(k).and_then(|v| v.to_str().ok());
                crate::traces::server_span(get, path.trim_start_matches('/'), &self.1)
            }
            false => tracing::Span::none(),
        };
        let started = Instant::now();
        let call = span.in_scope(|| self.0.call(req));
        Box::pin(
            async move {
                let resp = call.await?;
                if grpc {
                    let code = super::status_code(resp.headers());
                    crate::traces::record_status(&tracing::Span::current(), code as i32);
                    let method = label(&path, code);
                    metrics::histogram!(crate::telemetry::GRPC_DURATION, "method" => method.clone())
                    .record(started.elapsed().as_secs_f64());
                    metrics::counter!(
                        crate::telemetry::GRPC_REQUESTS,
                        "method" => method,
                        "code" => format!("{code:?}"),
                    )
                    .increment(1);
                }
                Ok(resp)
            }
            .instrument(span),
        )
    }
}
