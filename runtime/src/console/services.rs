//! The console's handlers: each registered service with its version,
//! grants and limits, and a form per method that calls it with JSON.

use super::view::{self, page, time_us};
use super::{Console, Ns, Page, Session, clip, one_ns, pool_of, shown};
use crate::api::dispatcher::DispatcherApi;
use crate::api::registry::RegistryApi;
use crate::proto::{
    self, collective_dispatcher_server::CollectiveDispatcher,
    collector_registry_server::CollectorRegistry,
};
use axum::Form;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use maud::{Markup, html};
use prost_reflect::{DynamicMessage, MethodDescriptor};
use serde::Deserialize;
use std::sync::Arc;
use tonic::Status;

type C = State<Arc<Console>>;

// --------------------------------------------------------------- services

pub async fn services(State(c): C, h: HeaderMap, Query(q): Query<Ns>) -> Page {
    let s = c.session(&h)?;
    let ns = one_ns(&c, &q);
    let body = match list_services(&c, &s, &ns).await {
        Err(e) => view::problem(&e),
        Ok(list) => services_body(&ns, &list, None),
    };
    Ok(page("Services", Some(&s), &ns, body))
}

async fn list_services(
    c: &Console,
    s: &Session,
    ns: &str,
) -> Result<Vec<proto::ServiceInfo>, Status> {
    let req = c.request(
        s,
        "/collector.v1.CollectorRegistry/ListServices",
        ns,
        proto::ListServicesRequest {
            namespace: ns.to_string(),
        },
    )?;
    Ok(RegistryApi(c.state.clone())
        .list_services(req)
        .await?
        .into_inner()
        .services)
}

/// What a call form sent, and what came back.
struct Called<'a> {
    form: &'a CallForm,
    outcome: Result<(String, String), Status>,
}

fn services_body(ns: &str, list: &[proto::ServiceInfo], called: Option<Called>) -> Markup {
    html! {
        @if list.is_empty() {
            p { "No handlers in " code { (ns) } " yet: " code { "collector services register …" } "." }
        }
        @for sv in list {
            section.card.service {
                h2 { code { (sv.service) } }
                dl.meta {
                    dt { "version (sha256)" } dd { code title=(sv.sha256) { (clip(&sv.sha256, 12)) } }
                    dt { "registered" } dd { (time_us(sv.registered_at_us)) " on " code { (sv.origin_node_id) } }
                    dt { "grants" } dd {
                        @if sv.grants.is_empty() { "none" }
                        @for g in &sv.grants { code { (g.collection) } @if g.read_only { " (read only)" } " " }
                    }
                    @if let Some(l) = &sv.limits {
                        dt { "limits" } dd {
                            @if l.timeout_ms == 0 { "the node's default timeout" } @else { (l.timeout_ms) " ms" }
                            " · "
                            @if l.memory_mib == 0 { "the node's default memory cap" } @else { (l.memory_mib) " MiB" }
                        }
                    }
                }
                @for m in &sv.methods {
                    @let this = called.as_ref().filter(|k| k.form.service == sv.service && k.form.method == *m);
                    form.call method="post" action="/console/services/call" data-service=(sv.service) data-method=(m) {
                        input type="hidden" name="ns" value=(ns);
                        input type="hidden" name="service" value=(sv.service);
                        input type="hidden" name="method" value=(m);
                        h3 { code { (m) } }
                        label { "input (JSON) "
                            textarea name="json" rows="3" spellcheck="false" {
                                (this.map_or("{}", |k| k.form.json.as_str()))
                            }
                        }
                        label { "run where collection " input name="collection" size="14" value=(this.map_or("", |k| k.form.collection.as_str())) placeholder="(optional)"; " is held" }
                        button type="submit" { "Call" }
                        @if let Some(k) = this {
                            @match &k.outcome {
                                Ok((out, node)) => div.output {
                                    p.meta { "OK · ran on " code { (node) } }
                                    pre.json { (out) }
                                },
                                Err(e) => (view::problem(e)),
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A call form's fields.
#[derive(Deserialize)]
pub struct CallForm {
    ns: String,
    service: String,
    method: String,
    #[serde(default)]
    json: String,
    #[serde(default)]
    collection: String,
}

pub async fn call(State(c): C, h: HeaderMap, Form(f): Form<CallForm>) -> Page {
    let s = c.session(&h)?;
    let outcome = dispatch(&c, &s, &f).await;
    let list = list_services(&c, &s, &f.ns)
        .await
        .map_err(|e| shown(&s, "Services", &e))?;
    let body = services_body(&f.ns, &list, Some(Called { form: &f, outcome }));
    Ok(page("Services", Some(&s), &f.ns, body))
}

/// Runs the form's method where it belongs (Dispatch); its output as
/// JSON, and the node that ran it.
async fn dispatch(c: &Console, s: &Session, f: &CallForm) -> Result<(String, String), Status> {
    let m = method_of(c, s, &f.ns, &f.service, &f.method).await?;
    let mut de = serde_json::Deserializer::from_str(&f.json);
    let input = DynamicMessage::deserialize(m.input(), &mut de).map_err(|e| {
        Status::invalid_argument(format!(
            "the input is not a {} in JSON: {e}",
            m.input().full_name()
        ))
    })?;
    let req = c.request(
        s,
        "/collector.v1.CollectiveDispatcher/Dispatch",
        &f.ns,
        proto::DispatchRequest {
            namespace: f.ns.clone(),
            service: f.service.clone(),
            method: f.method.clone(),
            input: Some(prost_types::Any {
                type_url: format!("type.googleapis.com/{}", m.input().full_name()),
                value: prost::Message::encode_to_vec(&input),
            }),
            collection: f.collection.trim().to_string(),
            ..Default::default()
        },
    )?;
    let r = DispatcherApi(c.state.clone())
        .dispatch(req)
        .await?
        .into_inner();
    let out = DynamicMessage::decode(m.output(), r.output.unwrap_or_default().value.as_slice())
        .map_err(|e| {
            Status::internal(format!(
                "the output is not a {}: {e}",
                m.output().full_name()
            ))
        })?;
    let json = serde_json::to_string_pretty(&out).map_err(|e| Status::internal(e.to_string()))?;
    Ok((json, r.node_address))
}

async fn method_of(
    c: &Console,
    s: &Session,
    ns: &str,
    service: &str,
    method: &str,
) -> Result<MethodDescriptor, Status> {
    let req = c.request(
        s,
        "/collector.v1.CollectorRegistry/GetProto",
        ns,
        proto::GetProtoRequest {
            namespace: ns.to_string(),
            target: Some(proto::get_proto_request::Target::Symbol(
                service.to_string(),
            )),
        },
    )?;
    let files = RegistryApi(c.state.clone())
        .get_proto(req)
        .await?
        .into_inner()
        .files;
    pool_of(files)?
        .get_service_by_name(service)
        .and_then(|sv| sv.methods().find(|m| m.name() == method))
        .ok_or_else(|| Status::not_found(format!("{service:.100} has no method {method:.60?}")))
}
