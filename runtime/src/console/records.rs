//! The console's collections and records: the list, the record table
//! (search, filters, labels, order, pages), a record's JSON, and its
//! create, edit and delete forms.

use super::view::{
    self, collection_url, enc, labels_text, page, parse_labels, problem_of, record_url, time,
};
use super::{Console, Ns, Page, Session, clip, failure, http_status, shown};
use crate::api::collection::CollectionApi;
use crate::api::repo::RepoApi;
use crate::proto::{
    self, collection_repo_server::CollectionRepo, collection_service_server::CollectionService,
};
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use maud::{Markup, html};
use serde::Deserialize;
use std::sync::Arc;
use tonic::Status;

type C = State<Arc<Console>>;

/// Records a page of the record table shows.
const PAGE_SIZE: i32 = 20;

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
