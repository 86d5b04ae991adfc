//! The console's screens. Each one calls the API as the signed-in key
//! (`Console::request`) and renders the answer; a failed call is shown
//! with its status, which says what to fix.

use super::view::{self, enc, labels_text, page, parse_labels, problem_of, time, time_us};
use super::{Console, Page, Session, failure};
use crate::api::collection::CollectionApi;
use crate::api::dispatcher::DispatcherApi;
use crate::api::registry::RegistryApi;
use crate::api::repo::RepoApi;
use crate::proto::{
    self, collection_repo_server::CollectionRepo, collection_service_server::CollectionService,
    collective_dispatcher_server::CollectiveDispatcher,
    collector_registry_server::CollectorRegistry,
};
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use prost_reflect::{DescriptorPool, DynamicMessage, MethodDescriptor};
use serde::Deserialize;
use std::sync::Arc;
use tonic::Status;

type C = State<Arc<Console>>;

/// Records a page of the record table shows.
const PAGE_SIZE: i32 = 20;

/// The namespace picked in the header (`?ns=`).
#[derive(Deserialize, Default)]
pub struct Ns {
    #[serde(default)]
    ns: String,
}

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

// ------------------------------------------------------------ collections

pub async fn collections(State(c): C, h: HeaderMap, Query(q): Query<Ns>) -> Page {
    let s = c.session(&h)?;
    let req = c
        .request(
            &s,
            "/collector.v1.CollectionRepo/Discover",
            "",
            proto::DiscoverRequest {
                namespace: q.ns.clone(),
                page_size: 1000,
                ..Default::default()
            },
        )
        .map_err(|e| failure(StatusCode::BAD_REQUEST, &s, "Collections", &e))?;
    let found = RepoApi(c.state.clone()).discover(req).await;
    let body = match found {
        Err(e) => view::problem(&e),
        Ok(r) => {
            let r = r.into_inner();
            html! {
                @if !r.unreachable_nodes.is_empty() {
                    p.note { "Not reached (their collections are missing): " (r.unreachable_nodes.join(", ")) }
                }
                @if r.collections.is_empty() {
                    p { "No collections" @if !q.ns.is_empty() { " in " code { (q.ns) } } " yet. Create one with "
                        code { "collector collections create NAME --type PKG.Message" } "." }
                } @else {
                    table {
                        thead { tr { th { "namespace" } th { "collection" } th { "type" } th { "indexes" } th { "labels" } th { "created" } th { "held by" } } }
                        tbody {
                            @for ci in &r.collections {
                                tr {
                                    td { (ci.namespace) }
                                    td { a href=(collection_url(&ci.namespace, &ci.name)) { (ci.name) } }
                                    td { code { (ci.message_type) } }
                                    td { (ci.indexes.join(", ")) }
                                    td.labels { (labels_text(&ci.labels)) }
                                    td { (time(&ci.created_at)) }
                                    td { code title=(ci.node_id) { (ci.node_address) } }
                                }
                            }
                        }
                    }
                    @if !r.next_page_token.is_empty() { p.note { "Only the first 1,000 are shown." } }
                }
            }
        }
    };
    Ok(page("Collections", Some(&s), &q.ns, body))
}

/// The record table's query (`GET /console/c/{ns}/{name}`).
#[derive(Deserialize, Default)]
pub struct RecordsQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    filter: String,
    #[serde(default)]
    labels: String,
    #[serde(default)]
    order: String,
    #[serde(default)]
    desc: String,
    #[serde(default)]
    page: String,
}

impl RecordsQuery {
    fn search(&self, ns: &str, name: &str) -> Result<proto::SearchRequest, Status> {
        let filters = self
            .filter
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(|l| crate::filter_text::parse_filter(l).map_err(Status::invalid_argument))
            .collect::<Result<_, _>>()?;
        Ok(proto::SearchRequest {
            namespace: ns.to_string(),
            collection: name.to_string(),
            query: self.q.clone(),
            filters,
            labels: parse_labels(&self.labels)?,
            order_by: (!self.order.trim().is_empty()).then(|| proto::OrderBy {
                field: self.order.trim().to_string(),
                descending: !self.desc.is_empty(),
            }),
            page_size: PAGE_SIZE,
            page_token: self.page.clone(),
            include_json: true,
        })
    }

    /// This query's URL with another page token.
    fn with_page(&self, base: &str, token: &str) -> String {
        format!(
            "{base}?q={}&filter={}&labels={}&order={}&desc={}&page={}",
            enc(&self.q),
            enc(&self.filter),
            enc(&self.labels),
            enc(&self.order),
            enc(&self.desc),
            enc(token)
        )
    }
}

/// The collection's description, for the headings of its pages.
async fn describe(
    c: &Console,
    s: &Session,
    ns: &str,
    name: &str,
) -> Result<proto::CollectionInfo, Status> {
    let req = c.request(
        s,
        "/collector.v1.CollectionRepo/GetCollection",
        ns,
        proto::GetCollectionRequest {
            namespace: ns.to_string(),
            name: name.to_string(),
        },
    )?;
    Ok(RepoApi(c.state.clone())
        .get_collection(req)
        .await?
        .into_inner())
}

fn collection_header(ci: &proto::CollectionInfo) -> Markup {
    html! {
        p.meta {
            "type " code { (ci.message_type) }
            " · " (ci.record_count) " records · " (ci.size_bytes) " bytes"
            @if ci.file_count > 0 { " · " (ci.file_count) " files" }
            @if !ci.indexes.is_empty() { " · indexes " (ci.indexes.join(", ")) }
            " · held by " code { (ci.node_address) }
        }
    }
}

pub async fn records(
    State(c): C,
    h: HeaderMap,
    Path((ns, name)): Path<(String, String)>,
    Query(q): Query<RecordsQuery>,
) -> Page {
    let s = c.session(&h)?;
    let title = format!("{ns}/{name}");
    let info = describe(&c, &s, &ns, &name)
        .await
        .map_err(|e| shown(&s, &title, &e))?;
    let base = collection_url(&ns, &name);
    let found = match q.search(&ns, &name) {
        Ok(r) => match c.request(&s, "/collector.v1.CollectionService/Search", &ns, r) {
            Ok(req) => CollectionApi(c.state.clone())
                .search(req)
                .await
                .map(|r| r.into_inner()),
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    let body = html! {
        (collection_header(&info))
        form.search method="get" action=(base) {
            label { "Search " input type="search" name="q" value=(q.q) placeholder="full-text: words, \"a phrase\", pre*"; }
            label { "Filters " textarea name="filter" rows="2" placeholder="quantity >= 2\ncustomer.address.city = Oslo" { (q.filter) } }
            label { "Labels " input name="labels" value=(q.labels) placeholder="env=prod, team=web"; }
            label { "Order by " input name="order" value=(q.order) placeholder="a field path" size="16"; }
            label.check { input type="checkbox" name="desc" value="1" checked[!q.desc.is_empty()]; " descending" }
            button type="submit" { "Search" }
            a.button href=(format!("{base}/new")) { "New record" }
        }
        @match &found {
            Err(e) => (view::problem(e)),
            Ok(r) => {
                p.meta { (r.total_count) " found" }
                table.records {
                    thead { tr { th { "id" } th { "version" } th { "updated" } th { "labels" } th { "data" } } }
                    tbody {
                        @for hit in &r.hits {
                            @let rec = hit.record.clone().unwrap_or_default();
                            tr {
                                td { a href=(format!("{base}/r/{}", enc(&rec.id))) { (rec.id) } }
                                td { (rec.version) }
                                td { (time(&rec.updated_at)) }
                                td.labels { (labels_text(&rec.labels)) }
                                td { code.json { (clip(&rec.json, 160)) } }
                            }
                        }
                    }
                }
                nav.pages {
                    @if !q.page.is_empty() { a href=(q.with_page(&base, "")) { "« first page" } }
                    @if !r.next_page_token.is_empty() { a rel="next" href=(q.with_page(&base, &r.next_page_token)) { "next page »" } }
                }
            }
        }
    };
    Ok(page(&title, Some(&s), &ns, body))
}

/// The page of collection `ns`/`name`.
fn collection_url(ns: &str, name: &str) -> String {
    format!("/console/c/{}/{}", enc(ns), enc(name))
}

/// The page of record `id` of `ns`/`name`.
fn record_url(ns: &str, name: &str, id: &str) -> String {
    format!("{}/r/{}", collection_url(ns, name), enc(id))
}

/// At most `n` characters of `s`, with … when cut.
fn clip(s: &str, n: usize) -> String {
    match s.char_indices().nth(n) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// A failed call shown as a page of its own, with the HTTP status that
/// matches its code.
fn shown(s: &Session, title: &str, e: &Status) -> Response {
    failure(http_status(e), s, title, e)
}

/// The HTTP status for a failed call shown as a page.
fn http_status(e: &Status) -> StatusCode {
    match e.code() {
        tonic::Code::NotFound => StatusCode::NOT_FOUND,
        tonic::Code::PermissionDenied => StatusCode::FORBIDDEN,
        tonic::Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition => StatusCode::BAD_REQUEST,
        tonic::Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

// ---------------------------------------------------------------- records

/// A record's form: its JSON and labels.
#[derive(Deserialize, Default)]
pub struct RecordForm {
    #[serde(default)]
    id: String,
    #[serde(default)]
    json: String,
    #[serde(default)]
    labels: String,
    #[serde(default)]
    version: Option<i64>,
}

fn record_form(action: &str, f: &RecordForm, new: bool, ci: &proto::CollectionInfo) -> Markup {
    html! {
        form.card.record method="post" action=(action) {
            @if new {
                label { "id " input name="id" value=(f.id) placeholder="empty: the node makes one"; }
            }
            label { "data (JSON of " code { (ci.message_type) } ")"
                textarea name="json" rows="14" spellcheck="false" required { (f.json) } }
            label { "labels (key=value, one a line)" textarea name="labels" rows="3" { (f.labels) } }
            @if let Some(v) = f.version { input type="hidden" name="version" value=(v); }
            button type="submit" { @if new { "Create" } @else { "Save" } }
        }
    }
}

pub async fn new_record(
    State(c): C,
    h: HeaderMap,
    Path((ns, name)): Path<(String, String)>,
) -> Page {
    let s = c.session(&h)?;
    let title = format!("New record in {ns}/{name}");
    let info = describe(&c, &s, &ns, &name)
        .await
        .map_err(|e| shown(&s, &title, &e))?;
    let action = format!("{}/new", collection_url(&ns, &name));
    let f = RecordForm {
        json: "{}".into(),
        ..Default::default()
    };
    Ok(page(
        &title,
        Some(&s),
        &ns,
        record_form(&action, &f, true, &info),
    ))
}

pub async fn create_record(
    State(c): C,
    h: HeaderMap,
    Path((ns, name)): Path<(String, String)>,
    Form(f): Form<RecordForm>,
) -> Page {
    let s = c.session(&h)?;
    let title = format!("New record in {ns}/{name}");
    let info = describe(&c, &s, &ns, &name)
        .await
        .map_err(|e| shown(&s, &title, &e))?;
    let created = async {
        let req = c.request(
            &s,
            "/collector.v1.CollectionService/Create",
            &ns,
            proto::CreateRequest {
                namespace: ns.clone(),
                collection: name.clone(),
                record: Some(proto::Record {
                    id: f.id.trim().to_string(),
                    json: f.json.clone(),
                    labels: parse_labels(&f.labels)?,
                    ..Default::default()
                }),
            },
        )?;
        Ok::<_, Status>(
            CollectionApi(c.state.clone())
                .create(req)
                .await?
                .into_inner(),
        )
    }
    .await;
    match created {
        Ok(rec) => Ok(view::redirect(&record_url(&ns, &name, &rec.id))),
        Err(e) => {
            let action = format!("{}/new", collection_url(&ns, &name));
            let body = html! { (view::problem(&e)) (record_form(&action, &f, true, &info)) };
            Ok((StatusCode::BAD_REQUEST, page(&title, Some(&s), &ns, body)).into_response())
        }
    }
}

async fn get_record(
    c: &Console,
    s: &Session,
    ns: &str,
    name: &str,
    id: &str,
) -> Result<proto::Record, Status> {
    let req = c.request(
        s,
        "/collector.v1.CollectionService/Get",
        ns,
        proto::GetRequest {
            namespace: ns.to_string(),
            collection: name.to_string(),
            id: id.to_string(),
            include_json: true,
        },
    )?;
    Ok(CollectionApi(c.state.clone()).get(req).await?.into_inner())
}

fn pretty(json: &str) -> String {
    serde_json::from_str::<serde_json::Value>(json)
        .and_then(|v| serde_json::to_string_pretty(&v))
        .unwrap_or_else(|_| json.to_string())
}

fn record_page(
    ns: &str,
    name: &str,
    rec: &proto::Record,
    f: &RecordForm,
    ci: &proto::CollectionInfo,
    e: Option<&Status>,
) -> Markup {
    let base = record_url(ns, name, &rec.id);
    html! {
        p.meta { a href=(collection_url(ns, name)) { "« " (ns) "/" (name) } }
        dl.meta {
            dt { "version" } dd { (rec.version) }
            dt { "created" } dd { (time(&rec.created_at)) }
            dt { "updated" } dd { (time(&rec.updated_at)) }
        }
        pre.json { (pretty(&rec.json)) }
        (problem_of(e))
        h2 { "Edit" }
        (record_form(&base, f, false, ci))
        form.danger method="post" action=(format!("{base}/delete")) {
            input type="hidden" name="version" value=(rec.version);
            button.danger type="submit" { "Delete this record" }
        }
    }
}

pub async fn record(
    State(c): C,
    h: HeaderMap,
    Path((ns, name, id)): Path<(String, String, String)>,
) -> Page {
    let s = c.session(&h)?;
    let title = format!("Record {id}");
    let (info, rec) = tokio::join!(
        describe(&c, &s, &ns, &name),
        get_record(&c, &s, &ns, &name, &id)
    );
    let info = info.map_err(|e| shown(&s, &title, &e))?;
    let rec = rec.map_err(|e| shown(&s, &title, &e))?;
    let f = RecordForm {
        id: rec.id.clone(),
        json: pretty(&rec.json),
        labels: labels_text(&rec.labels),
        version: Some(rec.version),
    };
    Ok(page(
        &title,
        Some(&s),
        &ns,
        record_page(&ns, &name, &rec, &f, &info, None),
    ))
}

pub async fn update_record(
    State(c): C,
    h: HeaderMap,
    Path((ns, name, id)): Path<(String, String, String)>,
    Form(f): Form<RecordForm>,
) -> Page {
    let s = c.session(&h)?;
    let title = format!("Record {id}");
    let updated = async {
        let req = c.request(
            &s,
            "/collector.v1.CollectionService/Update",
            &ns,
            proto::UpdateRequest {
                namespace: ns.clone(),
                collection: name.clone(),
                record: Some(proto::Record {
                    id: id.clone(),
                    json: f.json.clone(),
                    labels: parse_labels(&f.labels)?,
                    ..Default::default()
                }),
                update_mask: None,
                expected_version: f.version,
            },
        )?;
        Ok::<_, Status>(
            CollectionApi(c.state.clone())
                .update(req)
                .await?
                .into_inner(),
        )
    }
    .await;
    match updated {
        Ok(_) => Ok(view::redirect(&record_url(&ns, &name, &id))),
        Err(e) => {
            let (info, rec) = tokio::join!(
                describe(&c, &s, &ns, &name),
                get_record(&c, &s, &ns, &name, &id)
            );
            let info = info.map_err(|e| shown(&s, &title, &e))?;
            let rec = rec.map_err(|e| shown(&s, &title, &e))?;
            let body = record_page(&ns, &name, &rec, &f, &info, Some(&e));
            Ok((http_status(&e), page(&title, Some(&s), &ns, body)).into_response())
        }
    }
}

#[derive(Deserialize)]
pub struct Version {
    version: Option<i64>,
}

pub async fn delete_record(
    State(c): C,
    h: HeaderMap,
    Path((ns, name, id)): Path<(String, String, String)>,
    Form(f): Form<Version>,
) -> Page {
    let s = c.session(&h)?;
    let title = format!("Record {id}");
    let req = c
        .request(
            &s,
            "/collector.v1.CollectionService/Delete",
            &ns,
            proto::DeleteRequest {
                namespace: ns.clone(),
                collection: name.clone(),
                id: id.clone(),
                expected_version: f.version,
            },
        )
        .map_err(|e| shown(&s, &title, &e))?;
    CollectionApi(c.state.clone())
        .delete(req)
        .await
        .map_err(|e| shown(&s, &title, &e))?;
    Ok(view::redirect(&collection_url(&ns, &name)))
}

// ------------------------------------------------------------------ types

/// The namespace a screen about one namespace shows: the picked one, else
/// the node's default.
fn one_ns(c: &Console, q: &Ns) -> String {
    match q.ns.as_str() {
        "" => c.state.default_namespace.to_string(),
        ns => ns.to_string(),
    }
}

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

/// The pool of a file and its dependencies as GetProto sends them (the
/// file first, then what it imports).
fn pool_of(files: Vec<prost_types::FileDescriptorProto>) -> Result<DescriptorPool, Status> {
    let mut pool = DescriptorPool::new();
    pool.add_file_descriptor_protos(files.into_iter().rev())
        .map_err(|e| Status::internal(format!("the node's descriptors do not load: {e}")))?;
    Ok(pool)
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
