//! `collector register | call | dispatch`: registered services and calls to
//! their methods, with JSON converted through the descriptors the node
//! serves for the namespace.

use super::output::{proto_source, read_bytes};
use super::{Clients, Outcome};
use clap::Args;
use collector::api::bearer::KeyedChannel;
use collector::proto;
use collector::proto::collector_registry_client::CollectorRegistryClient;
use prost_reflect::{DescriptorPool, DynamicMessage, MethodDescriptor};
use serde_json::{Value as Json, json};
use std::path::PathBuf;
use tonic::Status;

// `collector register`
#[derive(Args, Debug)]
pub struct Register {
    /// The .proto file declaring the service (registered under its file name).
    #[arg(long)]
    proto: PathBuf,
    /// Full service name, e.g. shop.Orders.
    #[arg(long)]
    service: String,
    /// The component (cargo build --target wasm32-wasip2 --release).
    #[arg(long)]
    wasm: PathBuf,
    /// Collection the handler may open: NAME (read-write) or NAME:ro (repeatable).
    #[arg(long = "grant")]
    grants: Vec<String>,
    /// Per-call time limit in ms (default 5000).
    #[arg(long, default_value_t = 0)]
    timeout_ms: u32,
    /// Per-call memory limit in MiB (default 64).
    #[arg(long, default_value_t = 0)]
    memory_mib: u32,
}

// `collector call`
#[derive(Args, Debug)]
pub struct Call {
    /// SERVICE/METHOD, e.g. shop.Orders/Create.
    method: String,
    /// The input message as proto3 JSON.
    #[arg(default_value = "{}")]
    json: String,
    /// The collection the call is about: it runs on that collection's
    /// owner (sent as x-collector-collection metadata).
    #[arg(long, default_value = "")]
    collection: String,
}

// `collector dispatch`
#[derive(Args, Debug)]
pub struct Dispatch {
    /// SERVICE/METHOD, e.g. shop.Orders/Create.
    method: String,
    /// The input message as proto3 JSON.
    #[arg(default_value = "{}")]
    json: String,
    /// Run on the node that owns this collection.
    #[arg(long, default_value = "")]
    collection: String,
    /// Run on this node id (see `collector peers`).
    #[arg(long, default_value = "")]
    target: String,
    /// Names the call: retried with the same id, it runs only once.
    #[arg(long, default_value = "")]
    request_id: String,
}

/// Registers the service's .proto, then the service with its component.
pub async fn register(c: &mut Clients, a: Register) -> Outcome {
    c.registry
        .register_proto(proto::RegisterProtoRequest {
            namespace: c.ns.clone(),
            sources: vec![proto_source(&a.proto)?],
            ..Default::default()
        })
        .await?;
    let grants = a
        .grants
        .into_iter()
        .map(|g| match g.strip_suffix(":ro") {
            Some(c) => proto::Grant {
                collection: c.to_string(),
                read_only: true,
            },
            None => proto::Grant {
                collection: g.trim_end_matches(":rw").to_string(),
                read_only: false,
            },
        })
        .collect();
    let info = c
        .registry
        .register_service(proto::RegisterServiceRequest {
            namespace: c.ns.clone(),
            service: a.service,
            component: read_bytes(&a.wasm)?,
            grants,
            limits: Some(proto::HandlerLimits {
                timeout_ms: a.timeout_ms,
                memory_mib: a.memory_mib,
            }),
        })
        .await?
        .into_inner();
    Ok(json!({
        "service": info.service,
        "namespace": info.namespace,
        "sha256": info.sha256,
        "methods": info.methods,
        "grants": info.grants.iter().map(|g| json!({ "collection": g.collection, "read_only": g.read_only })).collect::<Vec<_>>(),
    }))
}

/// Calls SERVICE/METHOD on its native path.
pub async fn call(c: &mut Clients, a: Call) -> Outcome {
    let m = method_desc(&mut c.registry, &c.ns, &a.method).await?;
    let input = from_json(&m, &a.json)?;
    let path: tonic::codegen::http::uri::PathAndQuery = format!("/{}", a.method)
        .parse()
        .map_err(|_| Status::invalid_argument(format!("{:?} is not a method path", a.method)))?;
    let mut grpc = tonic::client::Grpc::new(c.channel.clone());
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let mut req = tonic::Request::new(prost::bytes::Bytes::from(input));
    for (key, value) in [
        ("x-collector-namespace", c.ns.as_str()),
        ("x-collector-collection", a.collection.as_str()),
    ] {
        if !value.is_empty() {
            req.metadata_mut().insert(
                key,
                value
                    .parse()
                    .map_err(|_| Status::invalid_argument(format!("{value:?} is not ASCII")))?,
            );
        }
    }
    let out = grpc
        .unary(req, path, collector::api::dynamic::BytesCodec)
        .await?
        .into_inner();
    to_json(&m, &out)
}

/// Runs SERVICE/METHOD where it belongs, through CollectiveDispatcher.Dispatch.
pub async fn dispatch(c: &mut Clients, a: Dispatch) -> Outcome {
    let m = method_desc(&mut c.registry, &c.ns, &a.method).await?;
    let input = from_json(&m, &a.json)?;
    let r = c
        .dispatcher()
        .dispatch(proto::DispatchRequest {
            namespace: c.ns.clone(),
            service: m.parent_service().full_name().to_string(),
            method: m.name().to_string(),
            input: Some(prost_types::Any {
                type_url: format!("type.googleapis.com/{}", m.input().full_name()),
                value: input,
            }),
            collection: a.collection,
            target_node: a.target,
            request_id: a.request_id,
        })
        .await?
        .into_inner();
    Ok(json!({
        "output": to_json(&m, &r.output.unwrap_or_default().value)?,
        "node_id": r.node_id,
        "node_address": r.node_address,
        "forwarded": r.forwarded,
        "request_id": r.request_id,
    }))
}

/// The descriptor of SERVICE/METHOD, from the descriptors the node serves
/// for the namespace (or fetches from the mesh node that has the service).
async fn method_desc(
    registry: &mut CollectorRegistryClient<KeyedChannel>,
    ns: &str,
    target: &str,
) -> Result<MethodDescriptor, Status> {
    let (service, method) = target.split_once('/').ok_or_else(|| {
        Status::invalid_argument(format!(
            "{target:?}: give SERVICE/METHOD, e.g. shop.Orders/Create"
        ))
    })?;
    let files = registry
        .get_proto(proto::GetProtoRequest {
            namespace: ns.to_string(),
            target: Some(proto::get_proto_request::Target::Symbol(
                service.to_string(),
            )),
        })
        .await?
        .into_inner()
        .files;
    let mut pool = DescriptorPool::new();
    pool.add_file_descriptor_protos(files.into_iter().rev())
        .map_err(|e| Status::internal(format!("the node's descriptors do not load: {e}")))?;
    pool.get_service_by_name(service)
        .and_then(|s| s.methods().find(|m| m.name() == method))
        .ok_or_else(|| Status::unimplemented(format!("{service} has no method {method:?}")))
}

fn from_json(m: &MethodDescriptor, json: &str) -> Result<Vec<u8>, Status> {
    let mut de = serde_json::Deserializer::from_str(json);
    let input = DynamicMessage::deserialize(m.input(), &mut de).map_err(|e| {
        Status::invalid_argument(format!(
            "input is not a valid {} in JSON: {e}",
            m.input().full_name()
        ))
    })?;
    Ok(prost::Message::encode_to_vec(&input))
}

fn to_json(m: &MethodDescriptor, out: &[u8]) -> Result<Json, Status> {
    let msg = DynamicMessage::decode(m.output(), out).map_err(|e| {
        Status::internal(format!(
            "the output is not a {}: {e}",
            m.output().full_name()
        ))
    })?;
    serde_json::to_value(&msg).map_err(|e| Status::internal(e.to_string()))
}
