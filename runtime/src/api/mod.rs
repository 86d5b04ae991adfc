//! gRPC adapters: translate proto ↔ domain types and nothing more.

pub mod collection;
pub mod dispatcher;
pub mod dynamic;
pub mod reflection;
pub mod registry;
pub mod repo;
pub mod status;

use crate::error::{Error, Result};
use crate::names::{CollectionName, Namespace, RecordId};
use crate::proto;
use crate::registry::Registry;
use crate::store::{self, Catalog, Labels, Record};
use prost_reflect::{DynamicMessage, MessageDescriptor};
use std::sync::Arc;

/// Metadata key that names the caller's namespace.
pub const NAMESPACE_HEADER: &str = "x-collector-namespace";

/// What every adapter needs.
pub struct ApiState {
    pub catalog: Arc<Catalog>,
    pub registry: Arc<Registry>,
    pub services: Arc<crate::registry::services::Services>,
    pub default_namespace: Namespace,
    pub node_id: String,
    /// host:port clients reach this node at.
    pub address: String,
}

impl ApiState {
    /// The namespace of a request: its field, else the metadata, else the node's.
    pub fn namespace<T>(&self, req: &tonic::Request<T>, field: &str) -> Result<Namespace> {
        if !field.is_empty() {
            return Namespace::new(field);
        }
        match req.metadata().get(NAMESPACE_HEADER) {
            Some(v) => Namespace::new(
                v.to_str()
                    .map_err(|_| Error::invalid(format!("{NAMESPACE_HEADER} is not ASCII")))?,
            ),
            None => Ok(self.default_namespace.clone()),
        }
    }
}

/// The caller's metadata as (key, value) pairs (ASCII values only).
pub fn metadata_pairs(m: &tonic::metadata::MetadataMap) -> Vec<(String, String)> {
    m.iter()
        .filter_map(|kv| match kv {
            tonic::metadata::KeyAndValueRef::Ascii(k, v) => {
                Some((k.to_string(), v.to_str().ok()?.to_string()))
            }
            tonic::metadata::KeyAndValueRef::Binary(..) => None,
        })
        .collect()
}

/// Checks that an `Any` given as a method's input holds `want` (an empty
/// type URL is accepted: the bytes are then checked by decoding).
pub fn check_input_type(input: &prost_types::Any, want: &str, method: &str) -> Result<()> {
    if !input.type_url.is_empty() && input.type_url.rsplit('/').next() != Some(want) {
        return Err(Error::invalid(format!(
            "input is a {:?}; {method} takes a {want}",
            input.type_url
        )));
    }
    Ok(())
}

/// A checked collection name.
pub fn collection_name(s: &str) -> Result<CollectionName> {
    CollectionName::new(s)
}

/// Microseconds since the epoch → Timestamp.
pub fn timestamp(us: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: us.div_euclid(1_000_000),
        nanos: (us.rem_euclid(1_000_000) * 1000) as i32,
    }
}

/// A stored record → its proto form (JSON only when asked for).
pub fn record_to_proto(desc: &MessageDescriptor, r: Record, include_json: bool) -> proto::Record {
    proto::Record {
        id: r.id,
        data: Some(prost_types::Any {
            type_url: format!("{}{}", store::codec::TYPE_URL_PREFIX, desc.full_name()),
            value: r.data,
        }),
        json: if include_json { r.json } else { String::new() },
        labels: r.labels.into_iter().collect(),
        version: r.version,
        created_at: Some(timestamp(r.created_us)),
        updated_at: Some(timestamp(r.updated_us)),
    }
}

/// The payload a client sent, as `data` (Any) or `json`; None if neither.
/// The wire bytes of `data` come along so they need not be encoded again.
pub fn payload(
    desc: &MessageDescriptor,
    r: &proto::Record,
) -> Result<Option<(DynamicMessage, Option<Vec<u8>>)>> {
    let has_any = r
        .data
        .as_ref()
        .is_some_and(|a| !a.type_url.is_empty() || !a.value.is_empty());
    match (has_any, r.json.trim().is_empty()) {
        (true, false) => Err(Error::invalid(
            "give the payload as data or as json, not both",
        )),
        (true, true) => {
            let a = r.data.as_ref().expect("checked");
            let msg = store::codec::decode_any(desc, &a.type_url, &a.value)?;
            Ok(Some((msg, Some(a.value.clone()))))
        }
        (false, false) => Ok(Some((store::codec::decode_json(desc, &r.json)?, None))),
        (false, true) => Ok(None),
    }
}

/// Labels from a request map, checked.
pub fn labels(map: &std::collections::HashMap<String, String>) -> Result<Labels> {
    let l: Labels = map.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    store::collection::check_labels(&l)?;
    Ok(l)
}

/// A record id, or None for "assign one".
pub fn optional_id(s: &str) -> Result<Option<RecordId>> {
    if s.is_empty() {
        Ok(None)
    } else {
        RecordId::new(s).map(Some)
    }
}

/// proto filters → domain filters.
pub fn filters(fs: &[proto::Filter]) -> Result<Vec<store::Filter>> {
    fs.iter()
        .enumerate()
        .map(|(i, f)| {
            let op = match proto::FilterOp::try_from(f.op).unwrap_or(proto::FilterOp::Unspecified) {
                proto::FilterOp::Unspecified => {
                    return Err(Error::invalid(format!("filters[{i}]: op is unset or unknown ({}); use EQ, NE, GT, GE, LT, LE, CONTAINS, PREFIX, IN, EXISTS or NOT_EXISTS", f.op)));
                }
                proto::FilterOp::Eq => store::Op::Eq,
                proto::FilterOp::Ne => store::Op::Ne,
                proto::FilterOp::Gt => store::Op::Gt,
                proto::FilterOp::Ge => store::Op::Ge,
                proto::FilterOp::Lt => store::Op::Lt,
                proto::FilterOp::Le => store::Op::Le,
                proto::FilterOp::Contains => store::Op::Contains,
                proto::FilterOp::Prefix => store::Op::Prefix,
                proto::FilterOp::In => store::Op::In,
                proto::FilterOp::Exists => store::Op::Exists,
                proto::FilterOp::NotExists => store::Op::NotExists,
            };
            Ok(store::Filter {
                field: f.field.clone(),
                op,
                value: f.value.as_ref().and_then(scalar),
                values: f.values.iter().filter_map(scalar).collect(),
            })
        })
        .collect()
}

fn scalar(v: &proto::Value) -> Option<store::Scalar> {
    use proto::value::Kind;
    Some(match v.kind.as_ref()? {
        Kind::StringValue(s) => store::Scalar::Str(s.clone()),
        Kind::IntValue(i) => store::Scalar::Int(*i),
        Kind::DoubleValue(d) => store::Scalar::Float(*d),
        Kind::BoolValue(b) => store::Scalar::Bool(*b),
    })
}

/// proto order → domain order.
pub fn order(o: &Option<proto::OrderBy>) -> Option<store::Order> {
    o.as_ref()
        .filter(|o| !o.field.is_empty())
        .map(|o| store::Order {
            field: o.field.clone(),
            descending: o.descending,
        })
}

/// A page size from a request (negative is refused).
pub fn page_size(n: i32) -> Result<u32> {
    u32::try_from(n).map_err(|_| {
        Error::invalid(format!(
            "page_size is {n}; give 0 (default) or a positive number"
        ))
    })
}
