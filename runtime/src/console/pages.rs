//! The console's screens about the node and its mesh: sign-in, types,
//! mesh, metrics and logs (records: `records`; handlers: `services`). Each
//! one calls the API as the signed-in key (`Console::request`) and renders
//! the answer; a failed call is shown with its status, which says what to fix.

use super::view::{self, collection_url, enc, page, problem_of, time_us};
use super::{Console, Ns, Page, clip, one_ns, pool_of};
use crate::api::dispatcher::DispatcherApi;
use crate::api::registry::RegistryApi;
use crate::proto::{
    self, collective_dispatcher_server::CollectiveDispatcher,
    collector_registry_server::CollectorRegistry,
};
use axum::Form;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde::Deserialize;
use std::sync::Arc;
use tonic::Status;

type C = State<Arc<Console>>;

// ---------------------------------------------------------------- sign in

#[derive(Deserialize, Default)]
pub struct Why {
    #[serde(default)]
    why: String,
}

pub async fn login_form(Query(w): Query<Why>) -> Response {
    let e = (!w.why.is_empty())
        .then(|| Status::unauthenticated(w.why.chars().take(200).collect::<String>()));
    page("Sign in", None, "", sign_in(e.as_ref()))
}

fn sign_in(e: Option<&Status>) -> Markup {
    html! {
        (problem_of(e))
        form.card method="post" action="/console/login" {
            p { "Sign in with an API key. The node's operator key is in "
                code { "operator.key" } " in its data directory; "
                code { "collector keys create" } " makes keys with fewer rights." }
            label { "API key " input type="password" name="key" autocomplete="off" required size="60"; }
            button type="submit" { "Sign in" }
        }
    }
}

#[derive(Deserialize)]
pub struct Key {
    key: String,
}

pub async fn login(State(c): C, Form(f): Form<Key>) -> Response {
    let key = f.key.trim();
    match c.state.keys.authenticate(key, crate::util::now_us()) {
        Ok(_) => {
            let mut r = view::redirect("/console/collections");
            if let Ok(v) = c.cookie(key).parse() {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            r
        }
        Err(e) => {
            let e = Status::from(e);
            (
                StatusCode::UNAUTHORIZED,
                page("Sign in", None, "", sign_in(Some(&e))),
            )
                .into_response()
        }
    }
}

pub async fn logout(State(c): C) -> Response {
    let mut r = view::redirect("/console/login");
    if let Ok(v) = c.cookie("").parse() {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

// ------------------------------------------------------------------ types

pub async fn types(State(c): C, h: HeaderMap, Query(q): Query<Ns>) -> Page {
    let s = c.session(&h)?;
    let ns = one_ns(&c, &q);
    let listed = async {
        let req = c.request(
            &s,
            "/collector.v1.CollectorRegistry/ListProtos",
            &ns,
            proto::ListProtosRequest {
                namespace: ns.clone(),
            },
        )?;
        let files = RegistryApi(c.state.clone())
            .list_protos(req)
            .await?
            .into_inner()
            .files;
        let mut out = Vec::new();
        for f in files {
            let req = c.request(
                &s,
                "/collector.v1.CollectorRegistry/GetProto",
                &ns,
                proto::GetProtoRequest {
                    namespace: ns.clone(),
                    target: Some(proto::get_proto_request::Target::FileName(f.name.clone())),
                },
            )?;
            let set = RegistryApi(c.state.clone())
                .get_proto(req)
                .await?
                .into_inner()
                .files;
            out.push((f, pool_of(set)?));
        }
        Ok::<_, Status>(out)
    }
    .await;
    let body = match listed {
        Err(e) => view::problem(&e),
        Ok(files) if files.is_empty() => html! {
            p { "No .proto files in " code { (ns) } " yet: " code { "collector protos register FILE.proto" } "." }
        },
        Ok(files) => html! {
            @for (f, pool) in &files {
                section.card {
                    h2 { code { (f.name) } }
                    p.meta { "package " code { (f.package) }
                        @if !f.dependencies.is_empty() { " · imports " (f.dependencies.join(", ")) } }
                    @for m in f.message_types.iter().filter_map(|t| pool.get_message_by_name(t)) {
                        h3 { code { (m.full_name()) } }
                        table.fields {
                            thead { tr { th { "#" } th { "field" } th { "type" } } }
                            tbody {
                                @for fd in m.fields() {
                                    tr {
                                        td { (fd.number()) }
                                        td { code { (fd.name()) } }
                                        td { (type_name(&fd)) }
                                    }
                                }
                            }
                        }
                    }
                    @if !f.services.is_empty() {
                        p { "services: " @for sv in &f.services { code { (sv) } " " } }
                    }
                }
            }
        },
    };
    Ok(page("Types", Some(&s), &ns, body))
}

fn type_name(f: &prost_reflect::FieldDescriptor) -> String {
    use prost_reflect::Kind;
    let base = match f.kind() {
        Kind::Message(m) => m.full_name().to_string(),
        Kind::Enum(e) => e.full_name().to_string(),
        k => format!("{k:?}").to_lowercase(),
    };
    if f.is_map() {
        let entry = match f.kind() {
            Kind::Message(m) => m,
            _ => return base,
        };
        let (k, v) = (entry.map_entry_key_field(), entry.map_entry_value_field());
        format!("map<{}, {}>", type_name(&k), type_name(&v))
    } else if f.is_list() {
        format!("repeated {base}")
    } else {
        base
    }
}

// ------------------------------------------------------------------- mesh

pub async fn mesh(State(c): C, h: HeaderMap, Query(q): Query<Ns>) -> Page {
    let s = c.session(&h)?;
    let listed = async {
        let req = c.request(
            &s,
            "/collector.v1.CollectiveDispatcher/ListPeers",
            "",
            proto::ListPeersRequest {},
        )?;
        Ok::<_, Status>(
            DispatcherApi(c.state.clone())
                .list_peers(req)
                .await?
                .into_inner()
                .peers,
        )
    }
    .await;
    let body = match listed {
        Err(e) => view::problem(&e),
        Ok(peers) => html! {
            table.mesh {
                thead { tr { th { "node" } th { "address" } th { "state" } th { "started" } th { "collections" } th { "handlers" } } }
                tbody {
                    @for p in &peers {
                        @let state = proto::PeerState::try_from(p.state).map_or("unknown", |s| match s {
                            proto::PeerState::Self_ => "this node",
                            proto::PeerState::Alive => "alive",
                            proto::PeerState::Dead => "dead",
                            proto::PeerState::Unspecified => "unknown",
                        });
                        tr.peer data-state=(state) {
                            td { code { (p.node_id) } }
                            td { code { (p.address) } }
                            td { span.state { (state) } }
                            td { (time_us(p.started_at_us)) }
                            td {
                                (p.collections.len())
                                @if !p.collections.is_empty() {
                                    ul.owned { @for oc in p.collections.iter().take(50) {
                                        li { a href=(collection_url(&oc.namespace, &oc.name)) { (oc.namespace) "/" (oc.name) } }
                                    } }
                                    @if p.collections.len() > 50 { p.note { "and " (p.collections.len() - 50) " more" } }
                                }
                            }
                            td {
                                ul.handlers { @for hv in p.handlers.iter().filter(|h| !h.removed) {
                                    li { (hv.namespace) "/" code { (hv.service) } " " code title=(hv.sha256) { (clip(&hv.sha256, 12)) } }
                                } }
                            }
                        }
                    }
                }
            }
        },
    };
    Ok(page("Mesh", Some(&s), &q.ns, body))
}

// ---------------------------------------------------------------- metrics

pub async fn metrics(State(c): C, h: HeaderMap, Query(q): Query<Ns>) -> Page {
    let s = c.session(&h)?;
    let body = if c.metrics.is_none() {
        html! { p { "Metrics are off on this node (started with " code { "--no-metrics" } ")." } }
    } else if let Err(e) = s.identity.require_operator() {
        view::problem(&Status::from(e))
    } else {
        html! {
            p.meta { "From this node's own metrics (" a href="/metrics" { "/metrics" } "), sampled every 2 s while this page is open." }
            div #charts data-source="/console/metrics.json" {
                figure { figcaption { "Requests a second" } span.legend id="rate-legend" {} svg #rate viewBox="0 0 600 160" preserveAspectRatio="none" {} }
                figure { figcaption { "Errors a second (any status but OK)" } span.legend id="errors-legend" {} svg #errors viewBox="0 0 600 160" preserveAspectRatio="none" {} }
                figure { figcaption { "Latency, ms (p50 and p99 over each interval)" } span.legend id="latency-legend" {} svg #latency viewBox="0 0 600 160" preserveAspectRatio="none" {} }
            }
            p #sampled.meta {}
        }
    };
    Ok(page("Metrics", Some(&s), &q.ns, body))
}

/// The totals the charts are drawn from: gRPC calls, failed ones, and the
/// latency histogram summed over every method.
pub async fn metrics_json(State(c): C, h: HeaderMap) -> Page {
    let s = c.session(&h)?;
    let Some(handle) = c.metrics.clone() else {
        return Err((StatusCode::NOT_FOUND, "metrics are off on this node\n").into_response());
    };
    s.identity
        .require_operator()
        .map_err(|e| (StatusCode::FORBIDDEN, e.message).into_response())?;
    let text = tokio::task::spawn_blocking(move || handle.render())
        .await
        .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response())?;
    let t = crate::telemetry::grpc_totals(&text);
    let body = serde_json::json!({
        "at_ms": crate::util::now_us() / 1000,
        "requests": t.requests,
        "errors": t.errors,
        "buckets": t.buckets,
    });
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response())
}

// ------------------------------------------------------------------- logs

#[derive(Deserialize, Default)]
pub struct LogsQuery {
    #[serde(default)]
    ns: String,
    #[serde(default)]
    service: String,
    #[serde(default)]
    level: String,
    #[serde(default)]
    before: u64,
}

pub async fn logs(State(c): C, h: HeaderMap, Query(q): Query<LogsQuery>) -> Page {
    let s = c.session(&h)?;
    let ns = one_ns(&c, &Ns { ns: q.ns.clone() });
    let listed = async {
        let req = c.request(
            &s,
            "/collector.v1.CollectorRegistry/ListHandlerLogs",
            &ns,
            proto::ListHandlerLogsRequest {
                namespace: ns.clone(),
                service: q.service.clone(),
                min_level: q.level.clone(),
                limit: 200,
                before: q.before,
            },
        )?;
        Ok::<_, Status>(
            RegistryApi(c.state.clone())
                .list_handler_logs(req)
                .await?
                .into_inner(),
        )
    }
    .await;
    let body = html! {
        form.search method="get" action="/console/logs" {
            input type="hidden" name="ns" value=(ns);
            label { "service " input name="service" value=(q.service) placeholder="all"; }
            label { "at least "
                select name="level" {
                    @for l in ["", "trace", "debug", "info", "warn", "error"] {
                        option value=(l) selected[q.level == l] { (if l.is_empty() { "any level" } else { l }) }
                    }
                }
            }
            button type="submit" { "Show" }
        }
        @match &listed {
            Err(e) => (view::problem(e)),
            Ok(r) if r.lines.is_empty() => p { "No handler has logged anything in " code { (ns) } " on this node (that matches)." },
            Ok(r) => {
                table.logs {
                    thead { tr { th { "time" } th { "level" } th { "service/method" } th { "message" } } }
                    tbody {
                        @for l in &r.lines {
                            tr class=(format!("level-{}", l.level)) {
                                td { (time_us(l.time_us)) }
                                td { (l.level) }
                                td { code { (l.service) "/" (l.method) } }
                                td { pre { (l.message) } }
                            }
                        }
                    }
                }
                @if r.next_before > 0 {
                    a rel="next" href=(format!("/console/logs?ns={}&service={}&level={}&before={}", enc(&ns), enc(&q.service), enc(&q.level), r.next_before)) { "older »" }
                }
            }
        }
    };
    Ok(page("Logs", Some(&s), &ns, body))
}
