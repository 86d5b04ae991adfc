//! Client commands of the `collector` binary: thin wrappers over the gRPC
//! API that take and print JSON, so a node can be used with no other tool.

use clap::{Args, Subcommand};
use collector::proto::{
    self, collection_repo_client::CollectionRepoClient,
    collection_service_client::CollectionServiceClient,
    collective_dispatcher_client::CollectiveDispatcherClient,
    collector_registry_client::CollectorRegistryClient, value::Kind,
};
use serde_json::{Value as Json, json};
use std::path::PathBuf;
use tonic::transport::Channel;

/// Which node to talk to, and in which namespace.
#[derive(Args, Debug, Clone)]
pub struct Conn {
    /// The node to talk to (client commands).
    #[arg(
        long,
        global = true,
        env = "COLLECTOR_NODE",
        default_value = "127.0.0.1:50051"
    )]
    pub node: String,
    /// Namespace: for `serve`, the one used when a request names none
    /// (default "default"); for client commands, the one to work in
    /// (default: the node's).
    #[arg(
        long,
        short = 'n',
        global = true,
        env = "COLLECTOR_NAMESPACE",
        default_value = ""
    )]
    pub namespace: String,
}

/// `collector protos …`
#[derive(Subcommand, Debug)]
pub enum ProtosCmd {
    /// Register .proto files (compiled on the node); imports resolve against
    /// files registered earlier in the namespace and google/protobuf/*.
    Register {
        /// .proto files; each is registered under its file name.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// List the registered files.
    List,
}

/// `collector collections …`
#[derive(Subcommand, Debug)]
pub enum CollectionsCmd {
    /// Create a collection of a registered message type.
    Create {
        name: String,
        /// Full message type name, e.g. shop.Order.
        #[arg(long = "type")]
        message_type: String,
        /// Field path to index (repeatable).
        #[arg(long = "index")]
        indexes: Vec<String>,
        /// Label KEY=VALUE (repeatable).
        #[arg(long = "label", value_parser = parse_label)]
        labels: Vec<(String, String)>,
        #[arg(long, default_value = "")]
        description: String,
        /// Let the mesh choose the node (rendezvous hashing over live members).
        #[arg(long)]
        auto: bool,
    },
    /// List the namespace's collections, across the mesh.
    List,
    /// Which node owns a collection.
    Route { name: String },
    /// Describe one collection (record count, size).
    Get { name: String },
    /// Delete a collection and all its records.
    Delete { name: String },
}

/// A client command.
#[derive(Subcommand, Debug)]
pub enum ClientCmd {
    /// Registered proto types.
    Protos {
        #[command(subcommand)]
        cmd: ProtosCmd,
    },
    /// Collections.
    Collections {
        #[command(subcommand)]
        cmd: CollectionsCmd,
    },
    /// Store a record given as JSON (prints it back with its id and version).
    Put {
        collection: String,
        /// The message as proto3 JSON.
        json: String,
        /// Record id (default: a new UUIDv7).
        #[arg(long, default_value = "")]
        id: String,
        /// Label KEY=VALUE (repeatable).
        #[arg(long = "label", value_parser = parse_label)]
        labels: Vec<(String, String)>,
    },
    /// Replace a record's payload with JSON.
    Update {
        collection: String,
        id: String,
        json: String,
        /// Only if the record is at this version.
        #[arg(long)]
        expected_version: Option<i64>,
    },
    /// Read one record.
    Get { collection: String, id: String },
    /// Delete one record.
    Delete { collection: String, id: String },
    /// Register a service: its .proto (compiled on the node) and its Wasm component.
    Register {
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
    },
    /// Call a registered method with JSON input; prints the JSON output.
    Call {
        /// SERVICE/METHOD, e.g. shop.Orders/Create.
        method: String,
        /// The input message as proto3 JSON.
        #[arg(default_value = "{}")]
        json: String,
        /// The collection the call is about: it runs on that collection's
        /// owner (sent as x-collector-collection metadata).
        #[arg(long, default_value = "")]
        collection: String,
    },
    /// Run a registered method where it belongs in the mesh (the owner of
    /// --collection, or --target, or a node that has the service); prints
    /// the output and which node ran it.
    Dispatch {
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
    },
    /// The members of the mesh as the node sees them.
    Peers,
    /// Make the node join the mesh of another node (host:port).
    Connect { address: String },
    /// Search a collection: full text, filters, labels, order.
    Search {
        collection: String,
        /// FTS5 query, e.g. 'lamp AND red' or 'sho*'.
        #[arg(default_value = "")]
        query: String,
        /// Filter "FIELD OP VALUE" with OP one of = != > >= < <= contains prefix in exists !exists
        /// (repeatable; `in` takes comma-separated values; quote a value in "…" to force a string).
        #[arg(long = "filter", short = 'f', value_parser = parse_filter)]
        filters: Vec<proto::Filter>,
        /// Label KEY=VALUE that must match (repeatable).
        #[arg(long = "label", value_parser = parse_label)]
        labels: Vec<(String, String)>,
        /// Sort key FIELD or FIELD:desc (also _id, _created, _updated).
        #[arg(long)]
        order: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: i32,
    },
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))
}

fn scalar(s: &str) -> proto::Value {
    let kind = if s.len() >= 2 && s.starts_with('"') && s.ends_with('"') {
        Kind::StringValue(s[1..s.len() - 1].to_string())
    } else if let Ok(i) = s.parse::<i64>() {
        Kind::IntValue(i)
    } else if let Ok(f) = s.parse::<f64>() {
        Kind::DoubleValue(f)
    } else if s == "true" || s == "false" {
        Kind::BoolValue(s == "true")
    } else {
        Kind::StringValue(s.to_string())
    };
    proto::Value { kind: Some(kind) }
}

/// Parses "FIELD OP VALUE".
pub fn parse_filter(s: &str) -> Result<proto::Filter, String> {
    let mut parts = s.trim().splitn(3, char::is_whitespace);
    let field = parts.next().unwrap_or_default().to_string();
    let op_text = parts
        .next()
        .ok_or_else(|| format!("{s:?}: expected \"FIELD OP VALUE\""))?;
    let rest = parts.next().unwrap_or("").trim();
    use proto::FilterOp as F;
    let op = match op_text {
        "=" | "==" => F::Eq,
        "!=" => F::Ne,
        ">" => F::Gt,
        ">=" => F::Ge,
        "<" => F::Lt,
        "<=" => F::Le,
        "contains" => F::Contains,
        "prefix" => F::Prefix,
        "in" => F::In,
        "exists" => F::Exists,
        "!exists" => F::NotExists,
        other => return Err(format!("{s:?}: unknown operator {other:?}")),
    };
    let (value, values) = match op {
        F::Exists | F::NotExists => (None, vec![]),
        F::In => (None, rest.split(',').map(|v| scalar(v.trim())).collect()),
        _ if rest.is_empty() => return Err(format!("{s:?}: {op_text} needs a value")),
        _ => (Some(scalar(rest)), vec![]),
    };
    Ok(proto::Filter {
        field,
        op: op as i32,
        value,
        values,
    })
}

/// The descriptor of SERVICE/METHOD, from the descriptors the node serves
/// for the namespace (or fetches from the mesh node that has the service).
async fn method_desc(
    registry: &mut CollectorRegistryClient<Channel>,
    ns: &str,
    target: &str,
) -> Result<prost_reflect::MethodDescriptor, tonic::Status> {
    let (service, method) = target.split_once('/').ok_or_else(|| {
        tonic::Status::invalid_argument(format!(
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
    let mut pool = prost_reflect::DescriptorPool::new();
    pool.add_file_descriptor_protos(files.into_iter().rev())
        .map_err(|e| tonic::Status::internal(format!("the node's descriptors do not load: {e}")))?;
    pool.get_service_by_name(service)
        .and_then(|s| s.methods().find(|m| m.name() == method))
        .ok_or_else(|| tonic::Status::unimplemented(format!("{service} has no method {method:?}")))
}

fn from_json(m: &prost_reflect::MethodDescriptor, json: &str) -> Result<Vec<u8>, tonic::Status> {
    let mut de = serde_json::Deserializer::from_str(json);
    let input = prost_reflect::DynamicMessage::deserialize(m.input(), &mut de).map_err(|e| {
        tonic::Status::invalid_argument(format!(
            "input is not a valid {} in JSON: {e}",
            m.input().full_name()
        ))
    })?;
    Ok(prost::Message::encode_to_vec(&input))
}

fn to_json(m: &prost_reflect::MethodDescriptor, out: &[u8]) -> Result<Json, tonic::Status> {
    let msg = prost_reflect::DynamicMessage::decode(m.output(), out).map_err(|e| {
        tonic::Status::internal(format!(
            "the output is not a {}: {e}",
            m.output().full_name()
        ))
    })?;
    serde_json::to_value(&msg).map_err(|e| tonic::Status::internal(e.to_string()))
}

/// Calls SERVICE/METHOD on its native path, converting JSON with the
/// descriptors the node serves for the namespace.
async fn call(
    mut registry: CollectorRegistryClient<Channel>,
    channel: Channel,
    ns: &str,
    target: &str,
    json: &str,
    collection: &str,
) -> Result<Json, tonic::Status> {
    let m = method_desc(&mut registry, ns, target).await?;
    let input = from_json(&m, json)?;
    let path: tonic::codegen::http::uri::PathAndQuery = format!("/{target}")
        .parse()
        .map_err(|_| tonic::Status::invalid_argument(format!("{target:?} is not a method path")))?;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let mut req = tonic::Request::new(prost::bytes::Bytes::from(input));
    for (key, value) in [
        ("x-collector-namespace", ns),
        ("x-collector-collection", collection),
    ] {
        if !value.is_empty() {
            req.metadata_mut().insert(
                key,
                value.parse().map_err(|_| {
                    tonic::Status::invalid_argument(format!("{value:?} is not ASCII"))
                })?,
            );
        }
    }
    let out = grpc
        .unary(req, path, collector::api::dynamic::BytesCodec)
        .await?
        .into_inner();
    to_json(&m, &out)
}

fn peer_json(p: proto::Peer) -> Json {
    let state = proto::PeerState::try_from(p.state)
        .map(|s| s.as_str_name().to_lowercase())
        .unwrap_or_default();
    json!({
        "node_id": p.node_id,
        "address": p.address,
        "state": state,
        "collections": p.collections.iter().map(|c| format!("{}/{}", c.namespace, c.name)).collect::<Vec<_>>(),
        "handlers": p.handlers.iter().filter(|h| !h.removed).map(|h| json!({
            "service": format!("{}/{}", h.namespace, h.service),
            "sha256": h.sha256,
        })).collect::<Vec<_>>(),
    })
}

fn record_json(r: proto::Record) -> Json {
    let data: Json = serde_json::from_str(&r.json).unwrap_or(Json::Null);
    let ts = |t: Option<prost_types::Timestamp>| t.map(|t| t.to_string()).unwrap_or_default();
    json!({
        "id": r.id,
        "version": r.version,
        "labels": r.labels,
        "created_at": ts(r.created_at),
        "updated_at": ts(r.updated_at),
        "data": data,
    })
}

fn info_json(c: proto::CollectionInfo) -> Json {
    json!({
        "namespace": c.namespace,
        "name": c.name,
        "message_type": c.message_type,
        "labels": c.labels,
        "description": c.description,
        "indexes": c.indexes,
        "record_count": c.record_count,
        "size_bytes": c.size_bytes,
        "node_id": c.node_id,
        "node_address": c.node_address,
    })
}

/// Runs a client command and prints its JSON result.
pub async fn run(conn: Conn, cmd: ClientCmd) -> Result<(), tonic::Status> {
    let endpoint = format!("http://{}", conn.node);
    let channel = Channel::from_shared(endpoint.clone())
        .map_err(|e| tonic::Status::invalid_argument(format!("--node {}: {e}", conn.node)))?
        .connect()
        .await
        .map_err(|e| {
            tonic::Status::unavailable(format!(
                "cannot reach a node at {}: {e}; start one with `collector serve`",
                conn.node
            ))
        })?;
    let ns = conn.namespace.clone();
    let mut registry = CollectorRegistryClient::new(channel.clone());
    let mut repo = CollectionRepoClient::new(channel.clone());
    let mut records = CollectionServiceClient::new(channel.clone());
    let out: Json = match cmd {
        ClientCmd::Protos {
            cmd: ProtosCmd::Register { files },
        } => {
            let mut sources = Vec::new();
            for f in files {
                let content = std::fs::read_to_string(&f).map_err(|e| {
                    tonic::Status::invalid_argument(format!("{}: {e}", f.display()))
                })?;
                let name = f
                    .file_name()
                    .map(|n| n.to_string_lossy().to_string())
                    .unwrap_or_default();
                sources.push(proto::ProtoSource { name, content });
            }
            let r = registry
                .register_proto(proto::RegisterProtoRequest {
                    namespace: ns,
                    sources,
                    ..Default::default()
                })
                .await?
                .into_inner();
            json!({ "registered_files": r.registered_files, "message_types": r.message_types, "services": r.services })
        }
        ClientCmd::Protos {
            cmd: ProtosCmd::List,
        } => {
            let r = registry
                .list_protos(proto::ListProtosRequest { namespace: ns })
                .await?
                .into_inner();
            Json::Array(r.files.into_iter().map(|f| json!({ "name": f.name, "package": f.package, "message_types": f.message_types, "services": f.services })).collect())
        }
        ClientCmd::Collections { cmd } => match cmd {
            CollectionsCmd::Create {
                name,
                message_type,
                indexes,
                labels,
                description,
                auto,
            } => {
                let placement = if auto {
                    proto::Placement::Auto
                } else {
                    proto::Placement::Local
                };
                let r = repo
                    .create_collection(proto::CreateCollectionRequest {
                        namespace: ns,
                        name,
                        message_type,
                        labels: labels.into_iter().collect(),
                        description,
                        indexes,
                        placement: placement as i32,
                    })
                    .await?
                    .into_inner();
                info_json(r)
            }
            CollectionsCmd::List => {
                let mut all = Vec::new();
                let mut token = String::new();
                let ns = if ns.is_empty() {
                    "default".to_string()
                } else {
                    ns
                };
                loop {
                    let r = repo
                        .discover(proto::DiscoverRequest {
                            namespace: ns.clone(),
                            page_token: token,
                            ..Default::default()
                        })
                        .await?
                        .into_inner();
                    all.extend(r.collections.into_iter().map(info_json));
                    if r.next_page_token.is_empty() {
                        break;
                    }
                    token = r.next_page_token;
                }
                Json::Array(all)
            }
            CollectionsCmd::Get { name } => info_json(
                repo.get_collection(proto::GetCollectionRequest {
                    namespace: ns,
                    name,
                })
                .await?
                .into_inner(),
            ),
            CollectionsCmd::Route { name } => {
                let r = repo
                    .route(proto::RouteRequest {
                        namespace: ns,
                        name: name.clone(),
                    })
                    .await?
                    .into_inner();
                json!({ "collection": name, "node_id": r.node_id, "address": r.address, "alive": r.alive })
            }
            CollectionsCmd::Delete { name } => {
                repo.delete_collection(proto::DeleteCollectionRequest {
                    namespace: ns,
                    name: name.clone(),
                })
                .await?;
                json!({ "deleted": name })
            }
        },
        ClientCmd::Put {
            collection,
            json,
            id,
            labels,
        } => {
            let rec = proto::Record {
                id,
                json,
                labels: labels.into_iter().collect(),
                ..Default::default()
            };
            let r = records
                .create(proto::CreateRequest {
                    namespace: ns.clone(),
                    collection: collection.clone(),
                    record: Some(rec),
                })
                .await?
                .into_inner();
            let got = records
                .get(proto::GetRequest {
                    namespace: ns,
                    collection,
                    id: r.id,
                    include_json: true,
                })
                .await?
                .into_inner();
            record_json(got)
        }
        ClientCmd::Update {
            collection,
            id,
            json,
            expected_version,
        } => {
            let rec = proto::Record {
                id: id.clone(),
                json,
                ..Default::default()
            };
            records
                .update(proto::UpdateRequest {
                    namespace: ns.clone(),
                    collection: collection.clone(),
                    record: Some(rec),
                    update_mask: Some(prost_types::FieldMask {
                        paths: vec!["data".into()],
                    }),
                    expected_version,
                })
                .await?;
            record_json(
                records
                    .get(proto::GetRequest {
                        namespace: ns,
                        collection,
                        id,
                        include_json: true,
                    })
                    .await?
                    .into_inner(),
            )
        }
        ClientCmd::Get { collection, id } => record_json(
            records
                .get(proto::GetRequest {
                    namespace: ns,
                    collection,
                    id,
                    include_json: true,
                })
                .await?
                .into_inner(),
        ),
        ClientCmd::Delete { collection, id } => {
            records
                .delete(proto::DeleteRequest {
                    namespace: ns,
                    collection,
                    id: id.clone(),
                    expected_version: None,
                })
                .await?;
            json!({ "deleted": id })
        }
        ClientCmd::Register {
            proto: proto_path,
            service,
            wasm,
            grants,
            timeout_ms,
            memory_mib,
        } => {
            let content = std::fs::read_to_string(&proto_path).map_err(|e| {
                tonic::Status::invalid_argument(format!("{}: {e}", proto_path.display()))
            })?;
            let name = proto_path
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default();
            registry
                .register_proto(proto::RegisterProtoRequest {
                    namespace: ns.clone(),
                    sources: vec![proto::ProtoSource { name, content }],
                    ..Default::default()
                })
                .await?;
            let component = std::fs::read(&wasm)
                .map_err(|e| tonic::Status::invalid_argument(format!("{}: {e}", wasm.display())))?;
            let grants = grants
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
            let info = registry
                .register_service(proto::RegisterServiceRequest {
                    namespace: ns,
                    service,
                    component,
                    grants,
                    limits: Some(proto::HandlerLimits {
                        timeout_ms,
                        memory_mib,
                    }),
                })
                .await?
                .into_inner();
            json!({
                "service": info.service,
                "namespace": info.namespace,
                "sha256": info.sha256,
                "methods": info.methods,
                "grants": info.grants.iter().map(|g| json!({ "collection": g.collection, "read_only": g.read_only })).collect::<Vec<_>>(),
            })
        }
        ClientCmd::Call {
            method,
            json,
            collection,
        } => call(registry, channel, &ns, &method, &json, &collection).await?,
        ClientCmd::Dispatch {
            method,
            json,
            collection,
            target,
            request_id,
        } => {
            let m = method_desc(&mut registry, &ns, &method).await?;
            let input = from_json(&m, &json)?;
            let r = CollectiveDispatcherClient::new(channel)
                .dispatch(proto::DispatchRequest {
                    namespace: ns,
                    service: m.parent_service().full_name().to_string(),
                    method: m.name().to_string(),
                    input: Some(prost_types::Any {
                        type_url: format!("type.googleapis.com/{}", m.input().full_name()),
                        value: input,
                    }),
                    collection,
                    target_node: target,
                    request_id,
                })
                .await?
                .into_inner();
            json!({
                "output": to_json(&m, &r.output.unwrap_or_default().value)?,
                "node_id": r.node_id,
                "node_address": r.node_address,
                "forwarded": r.forwarded,
                "request_id": r.request_id,
            })
        }
        ClientCmd::Peers => {
            let r = CollectiveDispatcherClient::new(channel)
                .list_peers(proto::ListPeersRequest {})
                .await?
                .into_inner();
            Json::Array(r.peers.into_iter().map(peer_json).collect())
        }
        ClientCmd::Connect { address } => {
            let r = CollectiveDispatcherClient::new(channel)
                .connect(proto::ConnectRequest { address })
                .await?
                .into_inner();
            Json::Array(r.peers.into_iter().map(peer_json).collect())
        }
        ClientCmd::Search {
            collection,
            query,
            filters,
            labels,
            order,
            limit,
        } => {
            let order_by = order.map(|o| match o.strip_suffix(":desc") {
                Some(f) => proto::OrderBy {
                    field: f.to_string(),
                    descending: true,
                },
                None => proto::OrderBy {
                    field: o.trim_end_matches(":asc").to_string(),
                    descending: false,
                },
            });
            let r = records
                .search(proto::SearchRequest {
                    namespace: ns,
                    collection,
                    query,
                    filters,
                    labels: labels.into_iter().collect(),
                    order_by,
                    page_size: limit,
                    include_json: true,
                    ..Default::default()
                })
                .await?
                .into_inner();
            json!({
                "total_count": r.total_count,
                "hits": r.hits.into_iter().map(|h| {
                    let mut j = record_json(h.record.unwrap_or_default());
                    j["score"] = json!(h.score);
                    j
                }).collect::<Vec<_>>(),
            })
        }
    };
    println!(
        "{}",
        serde_json::to_string_pretty(&out).expect("JSON prints")
    );
    Ok(())
}
