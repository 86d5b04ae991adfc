//! gRPC adapters: translate proto ↔ domain types and nothing more.

pub mod bearer;
pub mod call_metrics;
pub mod codec;
pub mod collection;
pub mod connections;
pub mod dispatcher;
pub mod dynamic;
pub mod edge;
pub mod files;
pub mod gate;
pub mod metrics;
pub mod peers;
pub mod reflection;
pub mod registry;
pub mod repo;
pub mod status;
pub mod streams;
pub mod tls;

use crate::error::{Error, Result};
use crate::handlers::CallOptions;
use crate::mesh::Mesh;
use crate::names::{CollectionName, Namespace, RecordId};
use crate::proto;
use crate::registry::Registry;
use crate::store::{self, Catalog, Labels, Record};
use prost_reflect::{DynamicMessage, MessageDescriptor};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Metadata key that names the caller's namespace.
pub const NAMESPACE_HEADER: &str = "x-collector-namespace";
/// Metadata key counting how often a call was forwarded between nodes.
pub const HOP_HEADER: &str = "x-collector-hop";
/// Metadata key naming a call so it runs at most once (Dispatch has a field).
pub const REQUEST_ID_HEADER: &str = "x-collector-request-id";
/// Metadata key naming the collection a call is about (it runs on its owner;
/// handlers called through CollectionService.Invoke see it too).
pub const COLLECTION_HEADER: &str = "x-collector-collection";
/// Metadata key carrying how many `invoke`s deep a forwarded call is.
pub const DEPTH_HEADER: &str = "x-collector-depth";
/// Metadata key carrying a member's proof that it holds the cluster secret
/// (see `gate`).
pub const PEER_HEADER: &str = "x-collector-peer";

/// Metadata key naming the API key a member authenticated a call with
/// (honoured only from members; see `gate`).
pub const CALLER_HEADER: &str = "x-collector-caller";

/// What every adapter needs.
pub struct ApiState {
    /// The node's collections.
    pub catalog: Arc<Catalog>,
    /// The node's registered types.
    pub registry: Arc<Registry>,
    /// The node's registered services and their call path.
    pub handlers: Arc<crate::handlers::Handlers>,
    /// The mesh as this node sees it, and dispatch.
    pub mesh: Arc<Mesh>,
    /// Channels to peers.
    pub peers: Arc<peers::GrpcLink>,
    /// The namespace a request that names none works in.
    pub default_namespace: Namespace,
    /// This node's persistent id.
    pub node_id: String,
    /// host:port clients reach this node at.
    pub address: String,
    /// Version, start time and data dir.
    pub info: crate::node_info::NodeInfo,
    /// The node's backups.
    pub backups: Arc<crate::backups::Backups>,
    /// Clones and fetches.
    pub transfers: Arc<crate::transfers::Transfers>,
    /// API keys.
    pub keys: Arc<crate::auth::Keys>,
    /// Whether the node was given a cluster secret (without one it forms
    /// no mesh, so Connect is refused).
    pub meshed: bool,
    /// Per-namespace quotas.
    pub quotas: Arc<crate::quotas::Quotas>,
}

impl ApiState {
    /// The namespace of a request (its field, else the metadata, else the
    /// node's), once the caller is allowed what the method needs there.
    pub fn namespace<T>(&self, req: &tonic::Request<T>, field: &str) -> Result<Namespace> {
        let ns = if !field.is_empty() {
            Namespace::new(field)?
        } else {
            match req.metadata().get(NAMESPACE_HEADER) {
                Some(v) => Namespace::new(
                    v.to_str()
                        .map_err(|_| Error::invalid(format!("{NAMESPACE_HEADER} is not ASCII")))?,
                )?,
                None => self.default_namespace.clone(),
            }
        };
        authorize_in(req, &ns)?;
        Ok(ns)
    }
}

/// OK when the caller may do what the method needs in `ns` (for calls
/// about a thing whose namespace is known only once it is found, such as
/// a backup).
pub fn authorize_in<T>(req: &tonic::Request<T>, ns: &Namespace) -> Result<()> {
    if let Some(slot) = req.extensions().get::<Arc<gate::AuditSlot>>() {
        slot.set(ns.as_str());
    }
    let a = authorized(req)?;
    match &a.identity {
        Some(id) => id.allows(a.need, ns),
        None => Ok(()),
    }
}

/// Who is calling and what the method needs, as the gate found it.
pub fn authorized<T>(req: &tonic::Request<T>) -> Result<&gate::Authorized> {
    req.extensions()
        .get::<gate::Authorized>()
        .ok_or_else(|| Error::internal("the request did not pass the gate"))
}

/// Whether the caller may see `ns` in a listing (a member's own call sees
/// everything: the member filters for its caller).
pub fn sees<T>(req: &tonic::Request<T>, ns: &Namespace) -> bool {
    identity(req).is_none_or(|id| id.sees(ns))
}

/// The caller's key (None for health checks and members' own calls).
pub fn identity<T>(req: &tonic::Request<T>) -> Option<Arc<crate::auth::Identity>> {
    authorized(req).ok().and_then(|a| a.identity.clone())
}

/// True for a gRPC request (by its content type), not a plain HTTP one.
pub fn is_grpc(h: &tonic::codegen::http::HeaderMap) -> bool {
    h.get(tonic::codegen::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The gRPC status a response's headers carry (a failed call's; OK when
/// there is none, as for a call whose status comes in trailers).
pub fn status_code(h: &tonic::codegen::http::HeaderMap) -> tonic::Code {
    h.get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map_or(tonic::Code::Ok, tonic::Code::from_i32)
}

/// Parses a `grpc-timeout` value ("100m", "5S", …; at most 8 digits).
pub fn parse_grpc_timeout(v: &str) -> Option<Duration> {
    if v.len() < 2 || v.len() > 9 {
        return None;
    }
    let (digits, unit) = v.split_at(v.len() - 1);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// How a call reached this node: hops and invoke depth from our own
/// metadata, the deadline from the caller's `grpc-timeout`.
pub fn call_options(m: &tonic::metadata::MetadataMap) -> CallOptions {
    let num = |k: &str| {
        m.get(k)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    };
    CallOptions {
        hop: num(HOP_HEADER),
        depth: num(DEPTH_HEADER),
        deadline: m
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_grpc_timeout)
            .map(|d| Instant::now() + d),
        cancel: Default::default(),
        request_id: None,
        caller: None,
    }
}

/// What a call's metadata says about the caller, parsed once: what the
/// handler sees, how the call got here, and the request id it named.
pub struct Caller {
    /// The caller's metadata as (key, value) pairs (ASCII values only).
    pub metadata: Vec<(String, String)>,
    /// Hops, invoke depth and deadline.
    pub options: CallOptions,
    /// The request id given in metadata, if any.
    pub request_id: Option<String>,
}

/// Metadata the node sets for a handler: the caller's key id …
pub const KEY_ID_META: &str = "x-collector-key-id";
/// … and its roles (`operator`, or `namespace:role` joined by commas).
pub const KEY_ROLES_META: &str = "x-collector-key-roles";

impl Caller {
    /// Parses a request's metadata; the handler also sees who is calling.
    pub fn of<T>(req: &tonic::Request<T>) -> Self {
        let m = req.metadata();
        let caller = identity(req);
        let mut metadata = metadata_pairs(m);
        if let Some(id) = &caller {
            let roles = if id.operator {
                "operator".to_string()
            } else {
                id.grants
                    .iter()
                    .map(|(ns, r)| format!("{ns}:{r}"))
                    .collect::<Vec<_>>()
                    .join(",")
            };
            metadata.push((KEY_ID_META.to_string(), id.key_id.clone()));
            metadata.push((KEY_ROLES_META.to_string(), roles));
        }
        Caller {
            metadata,
            options: CallOptions {
                caller,
                ..call_options(m)
            },
            request_id: request_id(m),
        }
    }
}

/// The request id a caller gave in metadata, if any.
pub fn request_id(m: &tonic::metadata::MetadataMap) -> Option<String> {
    m.get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

/// The caller's metadata as (key, value) pairs (ASCII values only),
/// without credentials: a handler never sees its caller's key.
pub fn metadata_pairs(m: &tonic::metadata::MetadataMap) -> Vec<(String, String)> {
    m.iter()
        .filter_map(|kv| match kv {
            tonic::metadata::KeyAndValueRef::Ascii(k, _)
                if matches!(
                    k.as_str(),
                    "authorization" | PEER_HEADER | CALLER_HEADER | KEY_ID_META | KEY_ROLES_META
                ) =>
            {
                None
            }
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
pub use crate::util::timestamp;

/// A stored record → its proto form (JSON only when asked for).
pub fn record_to_proto(desc: &MessageDescriptor, r: &Record, include_json: bool) -> proto::Record {
    proto::Record {
        id: r.id.clone(),
        data: Some(prost_types::Any {
            type_url: format!("{}{}", store::codec::TYPE_URL_PREFIX, desc.full_name()),
            value: r.data.clone(),
        }),
        // Copied only when asked for: it is often larger than the data.
        json: if include_json {
            r.json.clone()
        } else {
            String::new()
        },
        labels: r
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
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
    store::check_labels(&l)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse() {
        assert_eq!(parse_grpc_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_grpc_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_grpc_timeout("2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("7u"), Some(Duration::from_micros(7)));
        assert_eq!(
            parse_grpc_timeout("99999999n"),
            Some(Duration::from_nanos(99_999_999))
        );
        for bad in ["", "m", "5", "5x", "-5m", "123456789S", "1.5S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad}");
        }
    }
}
