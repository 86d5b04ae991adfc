//! The web console at `/console`: server-rendered pages embedded in the
//! binary, so it needs no other server, no build step and no network.
//!
//! It is a client of the node's own API: each page calls the gRPC
//! services' implementations in-process with the signed-in key (as the
//! gate would hand them a call), so it sees exactly what that key may see,
//! its changes are validated as any client's, and a call about a
//! collection another member holds is forwarded there. The key lives in an
//! `HttpOnly`, `SameSite=Strict` cookie (`Secure` on a TLS node); every
//! change is a same-site POST.

// Pages return `Result<Response, Response>` (axum's way to stop early
// with an answer, e.g. the redirect to sign in); the error is built once
// per request, so its size does not matter.
#![allow(clippy::result_large_err)]

mod pages;
mod records;
mod services;
mod view;

use crate::api::{ApiState, NAMESPACE_HEADER, gate::Authorized};
use crate::auth::{Identity, Need};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use metrics_exporter_prometheus::PrometheusHandle;
use prost_reflect::DescriptorPool;
use serde::Deserialize;
use std::sync::Arc;
use tonic::{Request, Status};

/// Where the console is served.
pub const PATH: &str = "/console";
/// The cookie holding the signed-in key.
const COOKIE: &str = "collector_console";

/// What the pages share.
pub struct Console {
    state: Arc<ApiState>,
    metrics: Option<PrometheusHandle>,
    /// The node serves TLS: the cookie is `Secure`.
    tls: bool,
}

/// The signed-in key.
pub struct Session {
    key: String,
    identity: Arc<Identity>,
}

/// The console's routes (under `PATH`).
pub fn router(state: Arc<ApiState>, metrics: Option<PrometheusHandle>, tls: bool) -> axum::Router {
    let console = Arc::new(Console {
        state,
        metrics,
        tls,
    });
    axum::Router::new()
        .route(
            PATH,
            get(|| async { view::redirect("/console/collections") }),
        )
        .route("/console/login", get(pages::login_form).post(pages::login))
        .route("/console/logout", post(pages::logout))
        .route("/console/collections", get(records::collections))
        .route("/console/c/{ns}/{name}", get(records::records))
        .route(
            "/console/c/{ns}/{name}/new",
            get(records::new_record).post(records::create_record),
        )
        .route(
            "/console/c/{ns}/{name}/r/{id}",
            get(records::record).post(records::update_record),
        )
        .route(
            "/console/c/{ns}/{name}/r/{id}/delete",
            post(records::delete_record),
        )
        .route("/console/types", get(pages::types))
        .route("/console/services", get(services::services))
        .route("/console/services/call", post(services::call))
        .route("/console/mesh", get(pages::mesh))
        .route("/console/metrics", get(pages::metrics))
        .route("/console/metrics.json", get(pages::metrics_json))
        .route("/console/logs", get(pages::logs))
        .route(
            "/console/assets/style.css",
            get(|| async { asset("text/css", include_str!("style.css")) }),
        )
        .route(
            "/console/assets/console.js",
            get(|| async { asset("text/javascript", include_str!("console.js")) }),
        )
        .with_state(console)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        body,
    )
        .into_response()
}

impl Console {
    /// The signed-in key, or the answer that sends the browser to sign in.
    fn session(&self, headers: &HeaderMap) -> Result<Session, Response> {
        let key = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|kv| kv.trim().split_once('='))
            .find(|(k, _)| *k == COOKIE)
            .map(|(_, v)| v.to_string());
        let Some(key) = key else {
            return Err(view::redirect("/console/login"));
        };
        match self.state.keys.authenticate(&key, crate::util::now_us()) {
            Ok(identity) => Ok(Session { key, identity }),
            Err(e) => Err(view::redirect(&format!(
                "/console/login?why={}",
                view::enc(&e.message)
            ))),
        }
    }

    /// The cookie that signs `key` in (an empty key signs out).
    fn cookie(&self, key: &str) -> String {
        let max_age = if key.is_empty() { "; Max-Age=0" } else { "" };
        let secure = if self.tls { "; Secure" } else { "" };
        format!("{COOKIE}={key}; Path={PATH}; HttpOnly; SameSite=Strict{max_age}{secure}")
    }

    /// A call of API method `method` (its path, e.g.
    /// `/collector.v1.CollectionService/Search`) by the session's key, in
    /// namespace `ns`, as the gate would pass it on.
    fn request<T>(
        &self,
        s: &Session,
        method: &str,
        ns: &str,
        msg: T,
    ) -> Result<Request<T>, Status> {
        let need = crate::auth::need_of(method);
        if need == Need::Operator {
            s.identity.require_operator()?;
        }
        let mut req = Request::new(msg);
        let m = req.metadata_mut();
        if let Ok(v) = format!("Bearer {}", s.key).parse() {
            m.insert("authorization", v);
        }
        // A deadline, as a client's would be: a handler call or a forward
        // to an unresponsive member ends with DEADLINE_EXCEEDED.
        let secs = crate::limits::CONSOLE_CALL_TIMEOUT.as_secs();
        if let Ok(v) = format!("{secs}S").parse() {
            m.insert("grpc-timeout", v);
        }
        if !ns.is_empty() {
            let v = ns
                .parse()
                .map_err(|_| Status::invalid_argument("the namespace is not ASCII"))?;
            m.insert(NAMESPACE_HEADER, v);
        }
        req.extensions_mut().insert(Authorized {
            identity: Some(s.identity.clone()),
            need,
        });
        Ok(req)
    }
}

/// An HTML page, or a redirect.
type Page = Result<Response, Response>;

/// A failed call, shown to a signed-in user on a page of its own.
fn failure(status: StatusCode, s: &Session, title: &str, e: &Status) -> Response {
    let body = view::problem(e);
    (status, view::page(title, Some(s), "", body)).into_response()
}

/// At most `n` characters of `s`, with … when cut.
pub(super) fn clip(s: &str, n: usize) -> String {
    match s.char_indices().nth(n) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// A failed call shown as a page of its own, with the HTTP status that
/// matches its code.
pub(super) fn shown(s: &Session, title: &str, e: &Status) -> Response {
    failure(http_status(e), s, title, e)
}

/// The HTTP status for a failed call shown as a page.
pub(super) fn http_status(e: &Status) -> StatusCode {
    match e.code() {
        tonic::Code::NotFound => StatusCode::NOT_FOUND,
        tonic::Code::PermissionDenied => StatusCode::FORBIDDEN,
        tonic::Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition => StatusCode::BAD_REQUEST,
        tonic::Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The namespace a screen about one namespace shows: the picked one, else
/// the node's default.
pub(super) fn one_ns(c: &Console, q: &Ns) -> String {
    match q.ns.as_str() {
        "" => c.state.default_namespace.to_string(),
        ns => ns.to_string(),
    }
}

/// The pool of a file and its dependencies as GetProto sends them (the
/// file first, then what it imports).
pub(super) fn pool_of(
    files: Vec<prost_types::FileDescriptorProto>,
) -> Result<DescriptorPool, Status> {
    let mut pool = DescriptorPool::new();
    pool.add_file_descriptor_protos(files.into_iter().rev())
        .map_err(|e| Status::internal(format!("the node's descriptors do not load: {e}")))?;
    Ok(pool)
}

/// The namespace picked in the header (`?ns=`).
#[derive(Deserialize, Default)]
pub struct Ns {
    #[serde(default)]
    pub(super) ns: String,
}
