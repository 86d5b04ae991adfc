//! gRPC to peers: one lazily connected channel per peer address, the mesh's
//! `PeerLink` over CollectiveDispatcher, and `relay`, which forwards a
//! client's request unchanged to the node that should answer it.

use super::{DEPTH_HEADER, HOP_HEADER, NAMESPACE_HEADER, PEER_HEADER, status::from_peer};
use crate::error::{Error, Result};
use crate::mesh::link::{FetchedService, LinkFuture, PeerLink, RemoteCall, RemoteOutcome};
use crate::mesh::seal::PeerKey;
use crate::mesh::view::View;
use crate::mesh::{DiscoverQuery, view::Member};
use crate::proto::{
    self, collection_repo_client::CollectionRepoClient,
    collective_dispatcher_client::CollectiveDispatcherClient,
};
use crate::store::CollectionMeta;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::watch;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::limits::{
    DISCOVER_TIMEOUT, FETCH_TIMEOUT, FORWARD_MARGIN, PEER_CONNECT_TIMEOUT, PEER_KEEPALIVE_INTERVAL,
    PEER_KEEPALIVE_TIMEOUT,
};

/// Channels to peers, and the mesh's link over them.
pub struct GrpcLink {
    channels: Mutex<HashMap<String, Channel>>,
    max_message_bytes: usize,
    /// The mesh view, so a call to a member that is declared dead while the
    /// call is in flight fails at once instead of hanging.
    views: watch::Receiver<Arc<View>>,
    /// Proves this node's calls come from a member (with a cluster secret).
    key: Option<PeerKey>,
    /// How peers are called when the mesh serves TLS (https, these roots).
    tls: Option<tonic::transport::ClientTlsConfig>,
}

/// Transport headers a forward must not copy (tonic sets its own).
fn forwardable(key: &str) -> bool {
    !(key.starts_with("grpc-")
        || key.starts_with(':')
        || matches!(
            key,
            "te" | "content-type" | "user-agent" | "host" | "content-length" | "accept-encoding"
        )
        || key == HOP_HEADER
        || key == DEPTH_HEADER
        || key == PEER_HEADER
        || key == super::CALLER_HEADER)
}

impl GrpcLink {
    /// A link whose calls accept messages up to `max_message_bytes`.
    pub fn new(
        max_message_bytes: usize,
        views: watch::Receiver<Arc<View>>,
        key: Option<PeerKey>,
        tls: Option<tonic::transport::ClientTlsConfig>,
    ) -> Self {
        GrpcLink {
            channels: Mutex::new(HashMap::new()),
            max_message_bytes,
            views,
            key,
            tls,
        }
    }

    /// A fresh proof of membership for a call about to be sent, if the node
    /// has a cluster secret.
    fn proof(&self) -> Option<MetadataValue<tonic::metadata::Ascii>> {
        let key = self.key.as_ref()?;
        key.proof(crate::util::now_us() / 1000).parse().ok()
    }

    /// Marks a call this node makes to a peer on its own behalf: one hop,
    /// and the proof.
    pub fn mark_own_call(&self, m: &mut MetadataMap, caller: Option<&crate::auth::Identity>) {
        mark(m, 1, 0, self.proof());
        if let Some(v) = caller.and_then(|c| c.key_id.parse().ok()) {
            m.insert(super::CALLER_HEADER, v);
        }
    }

    /// Resolves when the member at `address` is declared dead (or gone).
    fn until_dead(&self, address: &str) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.views.clone();
        let address = address.to_string();
        async move {
            loop {
                let dead = {
                    let v = rx.borrow_and_update();
                    !v.members
                        .values()
                        .any(|m| m.address == address && m.reachable())
                };
                if dead {
                    return;
                }
                if rx.changed().await.is_err() {
                    return std::future::pending().await;
                }
            }
        }
    }

    /// The largest message forwarded calls accept.
    pub fn max_message_bytes(&self) -> usize {
        self.max_message_bytes
    }

    /// The channel to a peer (connected on first use, reconnected as needed).
    pub fn channel(&self, address: &str) -> Result<Channel> {
        let mut map = self.channels.lock().expect("channels lock");
        if let Some(c) = map.get(address) {
            return Ok(c.clone());
        }
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{address}"))
            .map_err(|e| Error::internal(format!("peer address {address:?}: {e}")))?;
        if let Some(tls) = &self.tls {
            endpoint = endpoint
                .tls_config(tls.clone())
                .map_err(|e| Error::internal(format!("peer TLS for {address:?}: {e}")))?;
        }
        let ch = endpoint
            .connect_timeout(PEER_CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(PEER_KEEPALIVE_INTERVAL)
            .keep_alive_timeout(PEER_KEEPALIVE_TIMEOUT)
            .connect_lazy();
        map.insert(address.to_string(), ch.clone());
        Ok(ch)
    }

    fn dispatcher(&self, address: &str) -> Result<CollectiveDispatcherClient<Channel>> {
        Ok(CollectiveDispatcherClient::new(self.channel(address)?)
            .max_decoding_message_size(self.max_message_bytes)
            .max_encoding_message_size(self.max_message_bytes))
    }

    /// Forwards a client's request to `peer` as is (metadata included, one
    /// more hop, the caller's deadline) and hands back the peer's answer.
    pub async fn relay<Req, Resp, F, Fut>(
        &self,
        peer: &Member,
        req: Request<Req>,
        call: F,
    ) -> std::result::Result<Response<Resp>, Status>
    where
        F: FnOnce(Channel, Request<Req>) -> Fut,
        Fut: Future<Output = std::result::Result<Response<Resp>, Status>>,
    {
        let span = crate::traces::peer_span("forward", &peer.address);
        async {
            let opts = super::call_options(req.metadata());
            let (meta, _, msg) = req.into_parts();
            let mut out = Request::new(msg);
            copy_metadata(&meta, out.metadata_mut());
            mark(
                out.metadata_mut(),
                opts.hop.saturating_add(1),
                opts.depth,
                self.proof(),
            );
            let out = with_timeout(out, opts.deadline);
            let fut = call(self.channel(&peer.address)?, out);
            run(
                self.until_dead(&peer.address),
                &peer.address,
                opts.deadline,
                fut,
            )
            .await
            .map_err(Status::from)
        }
        .instrument(span)
        .await
    }
}

fn copy_metadata(from: &MetadataMap, to: &mut MetadataMap) {
    for kv in from.iter() {
        match kv {
            tonic::metadata::KeyAndValueRef::Ascii(k, v) if forwardable(k.as_str()) => {
                to.insert(k.clone(), v.clone());
            }
            tonic::metadata::KeyAndValueRef::Binary(k, v) if forwardable(k.as_str()) => {
                to.insert_bin(k.clone(), v.clone());
            }
            _ => {}
        }
    }
}

/// Marks a call to a peer: hops, invoke depth, the member proof, and the
/// current span's trace context (the peer's span is its child).
fn mark(
    m: &mut MetadataMap,
    hop: u32,
    depth: u32,
    proof: Option<MetadataValue<tonic::metadata::Ascii>>,
) {
    crate::traces::propagate(&tracing::Span::current(), |k, v| {
        if let (Ok(k), Ok(v)) = (
            tonic::metadata::MetadataKey::from_bytes(k.as_bytes()),
            v.parse(),
        ) {
            m.insert(k, v);
        }
    });
    m.insert(HOP_HEADER, MetadataValue::from(hop));
    if depth > 0 {
        m.insert(DEPTH_HEADER, MetadataValue::from(depth));
    }
    if let Some(p) = proof {
        m.insert(PEER_HEADER, p);
    }
}

/// Awaits a call to the peer at `address`, bounded by the caller's deadline
/// and by the peer's death (`dead`); maps the peer's answer to a domain error
/// and counts it (`telemetry::FORWARDS`, `telemetry::FORWARD_DURATION`).
async fn run<T, Fut>(
    dead: impl Future<Output = ()>,
    address: &str,
    deadline: Option<Instant>,
    fut: Fut,
) -> Result<Response<T>>
where
    Fut: Future<Output = std::result::Result<Response<T>, Status>>,
{
    let started = Instant::now();
    let answer = await_answer(dead, address, deadline, fut).await;
    let code = match &answer {
        Ok(_) => "Ok".to_string(),
        Err(e) => format!("{:?}", tonic::Code::from_i32(e.kind.grpc_code())),
    };
    metrics::histogram!(crate::telemetry::FORWARD_DURATION, "peer" => address.to_string())
        .record(started.elapsed().as_secs_f64());
    metrics::counter!(crate::telemetry::FORWARDS, "peer" => address.to_string(), "code" => code)
        .increment(1);
    answer
}

/// The peer's answer, or why there is none (dead, past the deadline).
async fn await_answer<T, Fut>(
    dead: impl Future<Output = ()>,
    address: &str,
    deadline: Option<Instant>,
    fut: Fut,
) -> Result<Response<T>>
where
    Fut: Future<Output = std::result::Result<Response<T>, Status>>,
{
    let answer = tokio::select! {
        a = fut => a,
        _ = dead => return Err(Error::unavailable(format!(
            "node {address} was declared dead while the call was in flight; the call may or may not have run there and was not retried"
        ))),
        _ = wait_until(deadline.map(|d| d - margin(d) / 2)) => return Err(Error::deadline_exceeded(format!(
            "node {address} did not answer within the caller's deadline (stopped or overloaded?); the call may or may not have run there"
        ))),
    };
    answer.map_err(|s| from_peer(&s, address))
}

/// What a forward keeps of the caller's remaining time for itself: the
/// peer gets less, so its own DEADLINE_EXCEEDED arrives before ours.
fn margin(deadline: Instant) -> std::time::Duration {
    (deadline.saturating_duration_since(Instant::now()) / 10).min(FORWARD_MARGIN)
}

async fn wait_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

/// Sets `grpc-timeout` from the caller's deadline, so the peer enforces it.
fn with_timeout<T>(mut req: Request<T>, deadline: Option<Instant>) -> Request<T> {
    if let Some(d) = deadline {
        req.set_timeout(
            d.saturating_duration_since(Instant::now())
                .saturating_sub(margin(d)),
        );
    }
    req
}

impl PeerLink for GrpcLink {
    fn dispatch(&self, address: &str, call: RemoteCall) -> LinkFuture<RemoteOutcome> {
        let client = self.dispatcher(address);
        let (dead, peer) = (self.until_dead(address), address.to_string());
        let proof = self.proof();
        let span = crate::traces::peer_span("dispatch", address);
        Box::pin(
            async move {
                let mut client = client?;
                let mut req = Request::new(proto::DispatchRequest {
                    namespace: call.namespace.clone(),
                    service: call.service,
                    method: call.method,
                    input: Some(prost_types::Any {
                        type_url: String::new(),
                        value: call.input,
                    }),
                    collection: call.collection.unwrap_or_default(),
                    target_node: call.target_node.clone(),
                    request_id: call.request_id,
                });
                for (k, v) in call.metadata.iter().filter(|(k, _)| forwardable(k)) {
                    if let (Ok(k), Ok(v)) = (
                        k.parse::<tonic::metadata::MetadataKey<tonic::metadata::Ascii>>(),
                        v.parse::<MetadataValue<tonic::metadata::Ascii>>(),
                    ) {
                        req.metadata_mut().insert(k, v);
                    }
                }
                if let Ok(ns) = call.namespace.parse() {
                    req.metadata_mut().insert(NAMESPACE_HEADER, ns);
                }
                mark(req.metadata_mut(), 1, call.depth, proof);
                if let Some(v) = call.caller.and_then(|c| c.parse().ok()) {
                    req.metadata_mut().insert(super::CALLER_HEADER, v);
                }
                let req = with_timeout(req, call.deadline);
                let r = run(dead, &peer, call.deadline, client.dispatch(req))
                    .await?
                    .into_inner();
                let output = r.output.unwrap_or_default();
                Ok(RemoteOutcome {
                    output_type: output
                        .type_url
                        .rsplit('/')
                        .next()
                        .unwrap_or_default()
                        .to_string(),
                    output: output.value,
                    node_id: r.node_id,
                    node_address: r.node_address,
                })
            }
            .instrument(span),
        )
    }

    fn fetch(
        &self,
        address: &str,
        namespace: &str,
        service: &str,
        sha256: &str,
        with_component: bool,
    ) -> LinkFuture<FetchedService> {
        let client = self.dispatcher(address);
        let req = proto::FetchComponentRequest {
            namespace: namespace.to_string(),
            service: service.to_string(),
            sha256: sha256.to_string(),
            descriptors_only: !with_component,
        };
        let (dead, peer) = (self.until_dead(address), address.to_string());
        let proof = self.proof();
        let span = crate::traces::peer_span("fetch component", address);
        Box::pin(
            async move {
                let deadline = Some(Instant::now() + FETCH_TIMEOUT);
                let mut req = Request::new(req);
                mark(req.metadata_mut(), 1, 0, proof);
                let req = with_timeout(req, deadline);
                let r = run(dead, &peer, deadline, client?.fetch_component(req))
                    .await?
                    .into_inner();
                Ok(FetchedService {
                    info: r.service.ok_or_else(|| {
                        Error::internal(format!(
                            "node {peer} sent a component without its description"
                        ))
                    })?,
                    files: r.files,
                    component: r.component,
                })
            }
            .instrument(span),
        )
    }

    fn list_owned(
        &self,
        address: &str,
        after: String,
    ) -> LinkFuture<(Vec<crate::mesh::view::OwnedCollection>, String)> {
        let client = self.dispatcher(address);
        let proof = self.proof();
        let (dead, peer) = (self.until_dead(address), address.to_string());
        let max = self.max_message_bytes;
        Box::pin(async move {
            let mut req = Request::new(proto::ListOwnedRequest {
                after,
                limit: crate::limits::MAX_OWNED_PAGE as u32,
            });
            mark(req.metadata_mut(), 1, 0, proof);
            let deadline = Some(Instant::now() + DISCOVER_TIMEOUT);
            let req = with_timeout(req, deadline);
            let r = run(
                dead,
                &peer,
                deadline,
                client?.max_decoding_message_size(max).list_owned(req),
            )
            .await?
            .into_inner();
            let colls = r
                .collections
                .into_iter()
                .map(|c| crate::mesh::view::OwnedCollection {
                    namespace: c.namespace,
                    name: c.name,
                    message_type: c.message_type,
                    created_us: c.created_at_us,
                })
                .collect();
            Ok((colls, r.next_after))
        })
    }

    fn discover(&self, address: &str, q: DiscoverQuery) -> LinkFuture<Vec<CollectionMeta>> {
        let channel = self.channel(address);
        let proof = self.proof();
        let (dead, peer) = (self.until_dead(address), address.to_string());
        let max = self.max_message_bytes;
        Box::pin(async move {
            let mut client = CollectionRepoClient::new(channel?).max_decoding_message_size(max);
            let mut req = Request::new(proto::DiscoverRequest {
                namespace: q.namespace.map(|n| n.to_string()).unwrap_or_default(),
                message_type: q.message_type,
                labels: q.labels.into_iter().collect(),
                page_size: q.limit.min(crate::limits::MAX_PAGE_SIZE as usize) as i32,
                page_token: q
                    .after
                    .map(|(ns, name)| format!("{ns}/{name}"))
                    .unwrap_or_default(),
            });
            // One hop: the peer answers with its own collections only.
            mark(req.metadata_mut(), 1, 0, proof);
            let deadline = Some(Instant::now() + DISCOVER_TIMEOUT);
            let req = with_timeout(req, deadline);
            let r = run(dead, &peer, deadline, client.discover(req))
                .await?
                .into_inner();
            r.collections
                .into_iter()
                .map(|c| {
                    let created = c
                        .created_at
                        .map(|t| t.seconds * 1_000_000 + t.nanos as i64 / 1000)
                        .unwrap_or(0);
                    CollectionMeta::from_info(c, created)
                })
                .collect()
        })
    }
}

/// Fetches pull from a peer's `PullCollection`.
impl crate::transfers::Source for GrpcLink {
    fn pull(
        &self,
        from: &Member,
        ns: &crate::names::Namespace,
        name: &crate::names::CollectionName,
        transfer_id: &str,
        offset: i64,
        include_files: bool,
    ) -> crate::transfers::PieceStream {
        use tokio_stream::StreamExt;
        let peer = from.node_id.clone();
        let channel = self.channel(&from.address);
        let max = self.max_message_bytes;
        let mut req = Request::new(proto::PullCollectionRequest {
            namespace: ns.to_string(),
            name: name.to_string(),
            transfer_id: transfer_id.to_string(),
            offset,
            include_files,
        });
        self.mark_own_call(req.metadata_mut(), None);
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        tokio::spawn(async move {
            let opened = match channel {
                Ok(ch) => proto::collection_repo_client::CollectionRepoClient::new(ch)
                    .max_decoding_message_size(max)
                    .pull_collection(req)
                    .await
                    .map_err(|s| from_peer(&s, &peer)),
                Err(e) => Err(e),
            };
            let mut stream = match opened {
                Ok(r) => r.into_inner(),
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            };
            while let Some(m) = stream.next().await {
                let piece = m
                    .map_err(|s| from_peer(&s, &peer))
                    .and_then(super::streams::piece_from_proto);
                let failed = piece.is_err();
                if tx.send(piece).await.is_err() || failed {
                    return;
                }
            }
        });
        Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
    }
}

/// Clones push to a peer's `PushCollection`; it answers with the new
/// collection as it describes it (its own node id and address).
impl crate::transfers::Sink<proto::CollectionInfo> for GrpcLink {
    fn push(
        &self,
        to: &Member,
        dest_ns: &crate::names::Namespace,
        dest_name: &crate::names::CollectionName,
        pieces: std::pin::Pin<Box<dyn tokio_stream::Stream<Item = crate::transfers::Piece> + Send>>,
    ) -> std::pin::Pin<
        Box<dyn Future<Output = Result<crate::transfers::Pushed<proto::CollectionInfo>>> + Send>,
    > {
        use proto::collection_chunk::Part;
        use tokio_stream::StreamExt;
        let peer = to.node_id.clone();
        let channel = self.channel(&to.address);
        let max = self.max_message_bytes;
        let (ns, name) = (dest_ns.to_string(), dest_name.to_string());
        // A concrete stream type: a boxed one trips a higher-ranked Send
        // bound in tonic's client-streaming future.
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        let mut pieces = pieces;
        tokio::spawn(async move {
            while let Some(p) = pieces.next().await {
                let mut m = super::streams::piece_to_proto(p);
                if let Some(Part::Header(h)) = &mut m.part {
                    h.dest_namespace = ns.clone();
                    h.dest_name = name.clone();
                }
                if tx.send(m).await.is_err() {
                    return;
                }
            }
        });
        let messages = tokio_stream::wrappers::ReceiverStream::new(rx);
        let proof = self.proof();
        Box::pin(async move {
            let mut req = Request::new(messages);
            mark(req.metadata_mut(), 1, 0, proof);
            let answer = CollectionRepoClient::new(channel?)
                .max_encoding_message_size(max)
                .push_collection(req)
                .await
                .map_err(|s| from_peer(&s, &peer))?
                .into_inner();
            Ok(crate::transfers::Pushed {
                received_bytes: answer.received_bytes,
                made: answer.collection,
            })
        })
    }
}
