//! `collector put | update | get | delete | search`: records of a collection.

use super::output::{parse_label, record_json};
use super::{Clients, Outcome};
use clap::Args;
use collector::proto;
use serde_json::json;

// `collector put`
#[derive(Args, Debug)]
pub struct Put {
    /// The collection.
    collection: String,
    /// The message as proto3 JSON.
    json: String,
    /// Record id (default: a new UUIDv7).
    #[arg(long, default_value = "")]
    id: String,
    /// Label KEY=VALUE (repeatable).
    #[arg(long = "label", value_parser = parse_label)]
    labels: Vec<(String, String)>,
}

// `collector update`
#[derive(Args, Debug)]
pub struct Update {
    /// The collection.
    collection: String,
    /// The record's id.
    id: String,
    /// The new payload as proto3 JSON.
    json: String,
    /// Only if the record is at this version.
    #[arg(long)]
    expected_version: Option<i64>,
}

// `collector get` and `collector delete`
#[derive(Args, Debug)]
pub struct RecordRef {
    /// The collection.
    collection: String,
    /// The record's id.
    id: String,
}

// `collector search`
#[derive(Args, Debug)]
pub struct Search {
    /// The collection.
    collection: String,
    /// FTS5 query, e.g. 'lamp AND red' or 'sho*'.
    #[arg(default_value = "")]
    query: String,
    /// Filter "FIELD OP VALUE" with OP one of = != > >= < <= contains prefix in exists !exists
    /// (repeatable; `in` takes comma-separated values; quote a value in "…" to force a string).
    #[arg(long = "filter", short = 'f', value_parser = collector::filter_text::parse_filter)]
    filters: Vec<proto::Filter>,
    /// Label KEY=VALUE that must match (repeatable).
    #[arg(long = "label", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// Sort key FIELD or FIELD:desc (also _id, _created, _updated).
    #[arg(long)]
    order: Option<String>,
    /// Most hits to print.
    #[arg(long, default_value_t = 20)]
    limit: i32,
}

/// Reads a record back, its JSON included.
async fn fetch(c: &mut Clients, collection: String, id: String) -> Outcome {
    let r = c
        .records
        .get(proto::GetRequest {
            namespace: c.ns.clone(),
            collection,
            id,
            include_json: true,
        })
        .await?
        .into_inner();
    Ok(record_json(r))
}

/// Creates a record and prints it as stored.
pub async fn put(c: &mut Clients, a: Put) -> Outcome {
    let rec = proto::Record {
        id: a.id,
        json: a.json,
        labels: a.labels.into_iter().collect(),
        ..Default::default()
    };
    let r = c
        .records
        .create(proto::CreateRequest {
            namespace: c.ns.clone(),
            collection: a.collection.clone(),
            record: Some(rec),
        })
        .await?
        .into_inner();
    fetch(c, a.collection, r.id).await
}

/// Replaces a record's payload and prints it as stored.
pub async fn update(c: &mut Clients, a: Update) -> Outcome {
    let rec = proto::Record {
        id: a.id.clone(),
        json: a.json,
        ..Default::default()
    };
    c.records
        .update(proto::UpdateRequest {
            namespace: c.ns.clone(),
            collection: a.collection.clone(),
            record: Some(rec),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["data".into()],
            }),
            expected_version: a.expected_version,
        })
        .await?;
    fetch(c, a.collection, a.id).await
}

/// Prints one record.
pub async fn get(c: &mut Clients, a: RecordRef) -> Outcome {
    fetch(c, a.collection, a.id).await
}

/// Deletes one record.
pub async fn delete(c: &mut Clients, a: RecordRef) -> Outcome {
    c.records
        .delete(proto::DeleteRequest {
            namespace: c.ns.clone(),
            collection: a.collection,
            id: a.id.clone(),
            expected_version: None,
        })
        .await?;
    Ok(json!({ "deleted": a.id }))
}

/// Searches and prints the hits with the total count.
pub async fn search(c: &mut Clients, a: Search) -> Outcome {
    let order_by = a.order.map(|o| match o.strip_suffix(":desc") {
        Some(f) => proto::OrderBy {
            field: f.to_string(),
            descending: true,
        },
        None => proto::OrderBy {
            field: o.trim_end_matches(":asc").to_string(),
            descending: false,
        },
    });
    let r = c
        .records
        .search(proto::SearchRequest {
            namespace: c.ns.clone(),
            collection: a.collection,
            query: a.query,
            filters: a.filters,
            labels: a.labels.into_iter().collect(),
            order_by,
            page_size: a.limit,
            include_json: true,
            ..Default::default()
        })
        .await?
        .into_inner();
    Ok(json!({
        "total_count": r.total_count,
        "hits": r.hits.into_iter().map(|h| {
            let mut j = record_json(h.record.unwrap_or_default());
            j["score"] = json!(h.score);
            j
        }).collect::<Vec<_>>(),
    }))
}
