//! The gate peer-only traffic passes when the node has a cluster secret.
//! A call that carries a valid proof (`PEER_HEADER`, made with the secret's
//! `PeerKey`) comes from a member. Any other call:
//! - to a peer-only method (`PEER_ONLY`: the ends of a transfer, component
//!   fetches) is UNAUTHENTICATED;
//! - loses the metadata only members may set (hops, invoke depth), so a
//!   client cannot pose as a forward.
//!
//! Without a secret the gate lets everything through, as before.

use super::{DEPTH_HEADER, HOP_HEADER, PEER_HEADER};
use crate::mesh::seal::PeerKey;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tonic::codegen::{Service, http};

/// Methods only members call.
pub const PEER_ONLY: [&str; 3] = [
    "/collector.v1.CollectionRepo/PullCollection",
    "/collector.v1.CollectionRepo/PushCollection",
    "/collector.v1.CollectiveDispatcher/FetchComponent",
];

/// The layer for `tonic::transport::Server::layer`.
pub fn layer<S>(key: Option<PeerKey>) -> impl tower_layer::Layer<S, Service = PeerGate<S>> + Clone {
    tower_layer::layer_fn(move |inner| PeerGate { inner, key })
}

/// See the module doc.
#[derive(Debug, Clone)]
pub struct PeerGate<S> {
    inner: S,
    key: Option<PeerKey>,
}

impl<S, B, R> Service<http::Request<B>> for PeerGate<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        if let Some(key) = &self.key {
            let member = req
                .headers()
                .get(PEER_HEADER)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|p| key.verify(p, crate::util::now_us() / 1000));
            if !member {
                if PEER_ONLY.contains(&req.uri().path()) {
                    let status = tonic::Status::unauthenticated(
                        "only members of this node's mesh may call this method (the call carries no valid proof of the cluster secret)",
                    );
                    return Box::pin(std::future::ready(Ok(status.into_http())));
                }
                let h = req.headers_mut();
                h.remove(HOP_HEADER);
                h.remove(DEPTH_HEADER);
            }
        }
        Box::pin(self.inner.call(req))
    }
}
