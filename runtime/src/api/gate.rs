//! The gate every request passes before it reaches a service: it says who
//! is calling and whether the method lets them in (`auth::METHODS`).
//!
//! - A call with a valid member proof (`PEER_HEADER`, made with the cluster
//!   secret's `PeerKey`) comes from a member of this node's mesh. Only
//!   members call the `Member` methods (the ends of a transfer, component
//!   fetches) and set hops, invoke depth and `CALLER_HEADER`; the gate
//!   strips those from any other call, so a client cannot pose as a forward.
//! - Every other method needs an API key, `authorization: Bearer <key>`
//!   (from a member: the key's id in `CALLER_HEADER`, which the member
//!   authenticated), except health checks and a member's own listings. Missing, unknown, revoked or
//!   expired → UNAUTHENTICATED; an `Operator` method without an operator
//!   key → PERMISSION_DENIED.
//! - A method needing a role in a namespace is checked where the namespace
//!   is known (`ApiState::namespace`), from the `Authorized` the gate puts
//!   in the request's extensions.
//! - Every call of a method needing `develop`, `admin` or `operator`, and
//!   every refused call, goes to the audit log with its outcome (the
//!   status a failed call answers with is in its response headers).

use super::{CALLER_HEADER, DEPTH_HEADER, HOP_HEADER, PEER_HEADER};
use crate::audit::Audit;
use crate::auth::{Identity, Keys, Need, Role};
use crate::error::Error;
use crate::mesh::seal::PeerKey;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tonic::codegen::{Service, http};

/// Who is calling, and what the method needs (in the request's extensions).
#[derive(Debug, Clone)]
pub struct Authorized {
    /// The caller's key; None for `Public` and `Member` methods.
    pub identity: Option<Arc<Identity>>,
    /// What the method needs.
    pub need: Need,
}

/// Where a call records the namespace it works in, for its audit entry.
#[derive(Debug, Default)]
pub struct AuditSlot(std::sync::Mutex<Option<String>>);

impl AuditSlot {
    /// Notes the namespace the call works in.
    pub fn set(&self, ns: &str) {
        *self.0.lock().expect("audit slot lock") = Some(ns.to_string());
    }

    fn take(&self) -> String {
        self.0
            .lock()
            .expect("audit slot lock")
            .take()
            .unwrap_or_default()
    }
}

/// The layer for `tonic::transport::Server::layer`.
pub fn layer<S>(
    peer_key: PeerKey,
    keys: Arc<Keys>,
    audit: Arc<Audit>,
) -> impl tower_layer::Layer<S, Service = Gate<S>> + Clone {
    tower_layer::layer_fn(move |inner| Gate {
        inner,
        peer_key,
        keys: keys.clone(),
        audit: audit.clone(),
    })
}

/// See the module doc.
#[derive(Clone)]
pub struct Gate<S> {
    inner: S,
    peer_key: PeerKey,
    keys: Arc<Keys>,
    audit: Arc<Audit>,
}

/// Whether every call of a method needing this is recorded.
fn administrative(need: Need) -> bool {
    matches!(
        need,
        Need::Operator | Need::Role(Role::Develop) | Need::Role(Role::Admin)
    )
}

fn entry(
    method: &str,
    key_id: String,
    namespace: String,
    code: i32,
    message: String,
) -> crate::proto::AuditEntry {
    crate::proto::AuditEntry {
        key_id,
        namespace,
        method: method.trim_start_matches('/').to_string(),
        outcome: format!("{:?}", tonic::Code::from_i32(code)),
        message,
        ..Default::default()
    }
}

/// The key in an `authorization` header: `Bearer <key>` (any case).
fn bearer(v: &http::HeaderValue) -> Option<&str> {
    let v = v.to_str().ok()?;
    let (scheme, key) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(key.trim())
}

impl<S> Gate<S> {
    /// Who is calling, or the error to answer with.
    fn authorize(
        &self,
        h: &http::HeaderMap,
        need: Need,
        member: bool,
    ) -> Result<Authorized, Error> {
        let identity = match need {
            Need::Public => None,
            Need::Member if member => None,
            Need::Member => {
                return Err(Error::unauthenticated(
                    "only members of this node's mesh may call this method (the call carries no valid proof of the cluster secret)",
                ));
            }
            _ => {
                let now = crate::util::now_us();
                let identity = if let Some(v) = h.get(http::header::AUTHORIZATION) {
                    let key = bearer(v).ok_or_else(|| {
                        Error::unauthenticated("the authorization header is not `Bearer <API key>`")
                    })?;
                    self.keys.authenticate(key, now)?
                } else if let Some(id) = h.get(CALLER_HEADER).filter(|_| member) {
                    self.keys.caller(id.to_str().unwrap_or_default(), now)?
                } else if member && need == Need::Authenticated {
                    // A member's own listing (Discover, ListPeers): it
                    // filters what it shows for its caller.
                    return Ok(Authorized {
                        identity: None,
                        need,
                    });
                } else {
                    return Err(Error::unauthenticated(
                        "this node needs an API key: send `authorization: Bearer <key>` (the CLI reads the operator key from operator.key in the node's data dir, or --token / COLLECTOR_TOKEN)",
                    ));
                };
                if need == Need::Operator {
                    identity.require_operator()?;
                }
                Some(identity)
            }
        };
        Ok(Authorized { identity, need })
    }
}

impl<S, B, R> Service<http::Request<B>> for Gate<S>
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
        let member = req
            .headers()
            .get(PEER_HEADER)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|p| self.peer_key.verify(p, crate::util::now_us() / 1000));
        if !member {
            let h = req.headers_mut();
            h.remove(HOP_HEADER);
            h.remove(DEPTH_HEADER);
            h.remove(CALLER_HEADER);
        }
        let path = req.uri().path().to_string();
        let need = crate::auth::need_of(&path);
        match self.authorize(req.headers(), need, member) {
            Ok(a) => {
                let key_id = a
                    .identity
                    .as_ref()
                    .map(|i| i.key_id.clone())
                    .unwrap_or_default();
                let slot = Arc::new(AuditSlot::default());
                req.extensions_mut().insert(a);
                req.extensions_mut().insert(slot.clone());
                let audit = self.audit.clone();
                let call = self.inner.call(req);
                Box::pin(async move {
                    let resp = call.await?;
                    let h = resp.headers();
                    let status = super::status_code(h);
                    let code = status as i32;
                    let denied = matches!(
                        status,
                        tonic::Code::PermissionDenied | tonic::Code::Unauthenticated
                    );
                    if denied || administrative(need) {
                        let message = h
                            .get("grpc-message")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_string();
                        audit.record(entry(&path, key_id, slot.take(), code, message), denied);
                    }
                    Ok(resp)
                })
            }
            Err(e) => {
                let status = tonic::Status::from(e);
                let grpc = super::is_grpc(req.headers());
                self.audit.record(
                    entry(
                        &path,
                        String::new(),
                        String::new(),
                        status.code() as i32,
                        status.message().to_string(),
                    ),
                    true,
                );
                // A plain HTTP client (a Prometheus scrape) gets an HTTP
                // status it understands; a gRPC client its gRPC status.
                let resp = if grpc {
                    status.into_http()
                } else {
                    let code = match status.code() {
                        tonic::Code::Unauthenticated => http::StatusCode::UNAUTHORIZED,
                        _ => http::StatusCode::FORBIDDEN,
                    };
                    let mut r = http::Response::new(R::default());
                    *r.status_mut() = code;
                    r.headers_mut().insert(
                        http::header::WWW_AUTHENTICATE,
                        http::HeaderValue::from_static("Bearer"),
                    );
                    r
                };
                Box::pin(std::future::ready(Ok(resp)))
            }
        }
    }
}
