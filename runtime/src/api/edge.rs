//! The server's edge, where two statuses tonic gets wrong are put right,
//! the same on every method:
//! - A call still running when its deadline passes ends with
//!   DEADLINE_EXCEEDED. tonic enforces `grpc-timeout` itself but answers
//!   CANCELLED ("Timeout expired"), against gRPC's guide; this layer sits
//!   inside tonic's check and ends the call a little earlier with the right
//!   code. Dropping the call's future stops its work (a handler call, a
//!   query inside SQLite, a forward).
//! - A request over the message limit is RESOURCE_EXHAUSTED, not tonic's
//!   OUT_OF_RANGE (its check reads the length prefix, so the message is
//!   never buffered).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tonic::codegen::{Service, http};

/// The layer for `tonic::transport::Server::layer`.
pub fn layer<S>() -> impl tower_layer::Layer<S, Service = Edge<S>> + Clone {
    tower_layer::layer_fn(Edge)
}

/// A service whose calls end with DEADLINE_EXCEEDED at their deadline, and
/// whose over-size requests are RESOURCE_EXHAUSTED.
#[derive(Debug, Clone)]
pub struct Edge<S>(S);

/// How much sooner than tonic this layer ends a call: enough that its timer
/// (1 ms resolution) always fires first.
fn margin(timeout: Duration) -> Duration {
    (timeout / 20).clamp(Duration::from_millis(2), Duration::from_millis(50))
}

impl<S, B, R> Service<http::Request<B>> for Edge<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    R: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let timeout = req
            .headers()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(super::parse_grpc_timeout);
        let call = self.0.call(req);
        Box::pin(async move {
            let Some(t) = timeout else {
                return call.await.map(over_size);
            };
            match tokio::time::timeout(t.saturating_sub(margin(t)), call).await {
                Ok(answer) => answer.map(over_size),
                Err(_) => Ok(tonic::Status::deadline_exceeded(format!(
                    "the call's deadline ({t:?}) passed before it finished; it was stopped (writes already acknowledged stay)"
                ))
                .into_http()),
            }
        })
    }
}

/// tonic's status for a request over `max_decoding_message_size`, whose
/// message starts with this (percent-encoded on the wire).
const TOO_LARGE: &str = "Error,%20decoded%20message%20length%20too%20large";

/// OUT_OF_RANGE for an over-size request → RESOURCE_EXHAUSTED.
fn over_size<R>(mut resp: http::Response<R>) -> http::Response<R> {
    let h = resp.headers();
    let too_large = h.get("grpc-status").is_some_and(|v| v == "11")
        && h.get("grpc-message")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|m| {
                m.starts_with(TOO_LARGE) || m.starts_with(&TOO_LARGE.replace("%20", " "))
            });
    if too_large {
        let h = resp.headers_mut();
        h.insert("grpc-status", http::HeaderValue::from_static("8"));
        h.insert(
            "grpc-message",
            http::HeaderValue::from_static(
                "the request is larger than the node's message limit (MAX_MESSAGE_BYTES): send less per call",
            ),
        );
    }
    resp
}
