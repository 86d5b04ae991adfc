//! Load client for a real node: every figure is reported as a ratio against a
//! floor measured in the same run (an empty gRPC call, raw rusqlite).
//!
//! Run: `cargo bench -p collector --bench node` (BENCH_RECORDS=N sets the
//! size of the query data set, default 1,000,000, 0 to skip it; BENCH_SECS the seconds per
//! throughput phase, default 3; BENCH_PHASES the phases to run, default "kbcdwhlfme";
//! BENCH_LIFECYCLE_MB the size of the collection phase l backs up, restores
//! and clones, default 1024; BENCH_FILE_MB the size of the file phase f
//! puts and gets, default 256; BENCH_METRICS=off runs the nodes without
//! metrics, for the cost of keeping them: compare two runs). Phase n (many
//! collections, `many.rs`) and phase o (the cost of metrics, two node
//! processes, `ops.rs`; BENCH_ROUNDS its rounds, default 9) run only when named: `BENCH_PHASES=n
//! BENCH_RECORDS=0`, with BENCH_COLLECTIONS (default 100,000) and
//! BENCH_NAMESPACES (default 1,000, of 10 collections each).

#[path = "node/many.rs"]
mod many;
#[path = "node/ops.rs"]
mod ops;

use collector::proto::{
    self, collection_repo_client::CollectionRepoClient,
    collection_service_client::CollectionServiceClient,
    collector_registry_client::CollectorRegistryClient,
};
use prost::Message;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
/// Channels whose calls carry the benchmark's operator key.
type Channel = collector::api::bearer::KeyedChannel;

/// The operator key every benchmark node takes in (`bench_key_file`).
const TOKEN: &str =
    "ck_0123456789abcdef_00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

/// A file holding TOKEN, given to every node as its operator key file.
fn bench_key_file() -> std::path::PathBuf {
    static FILE: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    FILE.get_or_init(|| {
        let p = std::env::temp_dir().join(format!("collector-bench-{}.key", std::process::id()));
        std::fs::write(&p, TOKEN).unwrap();
        p
    })
    .clone()
}

/// The secret the benchmark's nodes share, so they form a mesh.
fn bench_secret() -> collector::mesh::seal::ClusterSecret {
    collector::mesh::seal::ClusterSecret(b"the benchmark mesh's secret".to_vec())
}

/// A channel to `addr` with the benchmark's key.
async fn connect(addr: impl std::fmt::Display) -> Channel {
    let ch = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    collector::api::bearer::Bearer::new(TOKEN).unwrap().on(ch)
}

// The same allocator as the `collector` binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SHOP: &str = r#"syntax = "proto3"; package shop;
message Address { string city = 1; string zip = 2; }
message Customer { string name = 1; Address address = 2; }
message Order { string title = 1; int64 quantity = 2; double price = 3; Customer customer = 4; string note = 5; }"#;

const WORDS: &[&str] = &[
    "lamp", "chair", "table", "desk", "shelf", "sofa", "bed", "mirror", "rug", "clock", "vase",
    "stool", "bench", "cabinet", "drawer", "pillow", "blanket", "curtain", "frame", "candle",
    "basket", "bowl", "plate", "cup", "glass", "kettle", "pan", "pot", "knife", "fork", "spoon",
    "towel", "soap", "brush", "comb", "hook", "rack", "box", "bag", "case",
];
const COLORS: &[&str] = &[
    "red", "blue", "green", "black", "white", "grey", "oak", "walnut", "steel", "brass",
];

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[(self.next() % xs.len() as u64) as usize]
    }
}

fn order_json(rng: &mut Rng, i: u64, note_len: usize) -> String {
    // A rare word per 1000 records gives the FTS query a realistic, selective term.
    let rare = format!("sku{}", i % 1000);
    let title = format!(
        "{} {} {} {}",
        rng.pick(COLORS),
        rng.pick(WORDS),
        rng.pick(WORDS),
        rare
    );
    let note: String = (0..note_len)
        .map(|k| (b'a' + (k % 26) as u8) as char)
        .collect();
    serde_json::json!({
        "title": title,
        "quantity": (rng.next() % 10_000) as i64,
        "price": (rng.next() % 100_000) as f64 / 100.0,
        "customer": { "name": format!("customer {}", rng.next() % 50_000), "address": { "city": format!("city{}", rng.next() % 500) } },
        "note": note,
    })
    .to_string()
}

fn any_of(pool: &prost_reflect::DescriptorPool, json: &str) -> prost_types::Any {
    let desc = pool.get_message_by_name("shop.Order").unwrap();
    let mut de = serde_json::Deserializer::from_str(json);
    let msg = prost_reflect::DynamicMessage::deserialize(desc, &mut de).unwrap();
    prost_types::Any {
        type_url: "type.googleapis.com/shop.Order".into(),
        value: msg.encode_to_vec(),
    }
}

/// Runs `conc` concurrent loops of `f` for `secs`; returns (ok calls/s, p50 µs, errors).
async fn load<F, Fut>(conc: usize, secs: f64, f: F) -> (f64, f64, u64)
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), tonic::Status>> + Send,
{
    let (rate, p50, _, errs) = load_tail(conc, secs, f).await;
    (rate, p50, errs)
}

/// [`load`], also returning the p99 latency: (ok calls/s, p50 µs, p99 µs, errors).
async fn load_tail<F, Fut>(conc: usize, secs: f64, f: F) -> (f64, f64, f64, u64)
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), tonic::Status>> + Send,
{
    let f = Arc::new(f);
    let ok = Arc::new(AtomicU64::new(0));
    let err = Arc::new(AtomicU64::new(0));
    let seq = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conc {
        let (f, ok, err, seq) = (f.clone(), ok.clone(), err.clone(), seq.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            // Bounded: stops at the deadline or after 10M calls, whichever first.
            for _ in 0..10_000_000u64 {
                if Instant::now() >= deadline {
                    break;
                }
                let t = Instant::now();
                match f(seq.fetch_add(1, Ordering::Relaxed)).await {
                    Ok(()) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                        lat.push(t.elapsed().as_micros() as u64);
                    }
                    Err(_) => {
                        err.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    let elapsed = start.elapsed().as_secs_f64();
    lat.sort_unstable();
    let p50 = lat.get(lat.len() / 2).copied().unwrap_or(0) as f64;
    let p99 = lat.get(lat.len() * 99 / 100).copied().unwrap_or(0) as f64;
    (
        ok.load(Ordering::Relaxed) as f64 / elapsed,
        p50,
        p99,
        err.load(Ordering::Relaxed),
    )
}

/// Registers a .proto in namespace `bench`.
async fn register_proto(ch: &Channel, name: &str, content: &str) {
    CollectorRegistryClient::new(ch.clone())
        .register_proto(proto::RegisterProtoRequest {
            namespace: "bench".into(),
            sources: vec![proto::ProtoSource {
                name: name.into(),
                content: content.into(),
            }],
            ..Default::default()
        })
        .await
        .unwrap();
}

/// Registers the shop type and creates `small` (Get/Create) and `big` (queries, indexed).
async fn setup_node(ch: &Channel) {
    register_proto(ch, "shop.proto", SHOP).await;
    let mut repo = CollectionRepoClient::new(ch.clone());
    for (name, idx) in [("small", vec![]), ("big", vec!["quantity".to_string()])] {
        repo.create_collection(proto::CreateCollectionRequest {
            namespace: "bench".into(),
            name: name.into(),
            message_type: "shop.Order".into(),
            indexes: idx,
            ..Default::default()
        })
        .await
        .unwrap();
    }
}

/// Stores the 1 KB record `one-kb` in `small`; returns its payload size.
async fn prepare_get(ch: &Channel, pool: &prost_reflect::DescriptorPool, rng: &mut Rng) -> usize {
    let rec = CollectionServiceClient::new(ch.clone())
        .create(proto::CreateRequest {
            namespace: "bench".into(),
            collection: "small".into(),
            record: Some(proto::Record {
                id: "one-kb".into(),
                data: Some(any_of(pool, &order_json(rng, 0, 900))),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    rec.data.unwrap().value.len()
}

/// A Get of `one-kb` (`prepare_get`) on one of `chs`, picked by the call's
/// number: the load of the Get phases.
async fn get_one_kb(chs: Arc<Vec<Channel>>, i: u64) -> Result<(), tonic::Status> {
    let mut c = CollectionServiceClient::new(chs[i as usize % chs.len()].clone());
    c.get(proto::GetRequest {
        namespace: "bench".into(),
        collection: "small".into(),
        id: "one-kb".into(),
        include_json: false,
    })
    .await
    .map(|_| ())
}

/// Get of `one-kb` at c=1 and c=64: (calls/s, p50 µs) each.
async fn get_rates(channels: &[Channel], secs: f64) -> [(f64, f64); 2] {
    let mut out = [(0.0, 0.0); 2];
    for (k, conc) in [1usize, 64].into_iter().enumerate() {
        let chs = Arc::new(channels.to_vec());
        let (rate, p50, errs) = load(conc, secs, move |i| get_one_kb(chs.clone(), i)).await;
        assert_eq!(errs, 0);
        out[k] = (rate, p50);
    }
    out
}

/// A native Rust handler behind the same kind of route as registered
/// methods (a fallback service with the bytes codec): the floor for handlers.
#[derive(Clone)]
struct Native<C>(C);

impl<B, C> tonic::codegen::Service<tonic::codegen::http::Request<B>> for Native<C>
where
    B: tonic::codegen::Body<Data = prost::bytes::Bytes> + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
    C: tonic::server::UnaryService<prost::bytes::Bytes, Response = prost::bytes::Bytes>
        + Clone
        + Send
        + 'static,
    C::Future: Send,
{
    type Response = tonic::codegen::http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;
    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn call(&mut self, req: tonic::codegen::http::Request<B>) -> Self::Future {
        let call = self.0.clone();
        Box::pin(async move {
            Ok(
                tonic::server::Grpc::new(collector::api::dynamic::BytesCodec)
                    .unary(call, req)
                    .await,
            )
        })
    }
}

/// Serves `handler` on every path of a server of its own; returns 4 channels to it.
async fn serve_native<C>(handler: C) -> Vec<Channel>
where
    C: tonic::server::UnaryService<prost::bytes::Bytes, Response = prost::bytes::Bytes>
        + Clone
        + Send
        + Sync
        + 'static,
    C::Future: Send,
{
    let incoming = tonic::transport::server::TcpIncoming::bind("127.0.0.1:0".parse().unwrap())
        .unwrap()
        .with_nodelay(Some(true));
    let addr = incoming.local_addr().unwrap();
    let routes = tonic::service::Routes::from(
        tonic::service::Routes::builder()
            .routes()
            .into_axum_router()
            .fallback_service(Native(handler)),
    );
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_routes(routes)
            .serve_with_incoming(incoming),
    );
    let mut channels = Vec::new();
    for _ in 0..4 {
        channels.push(connect(addr).await);
    }
    channels
}

/// The native echo.
#[derive(Clone)]
struct EchoCall;

impl tonic::server::UnaryService<prost::bytes::Bytes> for EchoCall {
    type Response = prost::bytes::Bytes;
    type Future = std::future::Ready<Result<tonic::Response<prost::bytes::Bytes>, tonic::Status>>;
    fn call(&mut self, req: tonic::Request<prost::bytes::Bytes>) -> Self::Future {
        std::future::ready(Ok(tonic::Response::new(req.into_inner())))
    }
}

/// t.Msg of the handler benchmarks.
#[derive(Clone, PartialEq, prost::Message)]
struct Msg {
    #[prost(string, tag = "1")]
    text: String,
    #[prost(int64, tag = "2")]
    n: i64,
}

/// The native equivalent of the counter guest's PeekTen: ten Gets on the
/// node's catalogue, summed.
#[derive(Clone)]
struct TenGetsCall(Arc<collector::store::Catalog>);

impl tonic::server::UnaryService<prost::bytes::Bytes> for TenGetsCall {
    type Response = prost::bytes::Bytes;
    type Future = std::pin::Pin<
        Box<
            dyn std::future::Future<
                    Output = Result<tonic::Response<prost::bytes::Bytes>, tonic::Status>,
                > + Send,
        >,
    >;
    fn call(&mut self, req: tonic::Request<prost::bytes::Bytes>) -> Self::Future {
        let catalog = self.0.clone();
        Box::pin(async move {
            let req = Msg::decode(req.into_inner())
                .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
            let ns = collector::names::Namespace::new("bench").unwrap();
            let name = collector::names::CollectionName::new("counters").unwrap();
            let coll = catalog.get(&ns, &name).map_err(tonic::Status::from)?;
            let mut sum = 0;
            for i in 0..10 {
                let id = collector::names::RecordId::new(&format!("{}{i}", req.text)).unwrap();
                let rec = coll.get(id).await.map_err(tonic::Status::from)?;
                sum += Msg::decode(rec.data.as_slice())
                    .map_err(|e| tonic::Status::internal(e.to_string()))?
                    .n;
            }
            Ok(tonic::Response::new(prost::bytes::Bytes::from(
                Msg {
                    text: req.text,
                    n: sum,
                }
                .encode_to_vec(),
            )))
        })
    }
}

/// Dispatch through a peer vs on the owner; join and registration times.
async fn mesh_phase(
    owner: &collector::NodeHandle,
    dir: &tempfile::TempDir,
    secs: f64,
    rtt_us: f64,
) {
    use collector::proto::collective_dispatcher_client::CollectiveDispatcherClient;
    let connect = |addr: std::net::SocketAddr| async move { connect(addr).await };
    let ch = connect(owner.addr).await;
    let mut registry = CollectorRegistryClient::new(ch.clone());
    registry
        .register_proto(proto::RegisterProtoRequest {
            namespace: "mesh".into(),
            sources: vec![proto::ProtoSource {
                name: "m.proto".into(),
                content: "syntax = \"proto3\"; package m; message Msg { string text = 1; int64 n = 2; } service Echo { rpc Say(Msg) returns (Msg); }".into(),
            }],
            ..Default::default()
        })
        .await
        .unwrap();
    let echo = std::fs::read(
        collector::guests::build_example_guests()
            .unwrap()
            .join("echo.wasm"),
    )
    .unwrap();
    let register = |mut r: CollectorRegistryClient<Channel>, echo: Vec<u8>| async move {
        r.register_service(proto::RegisterServiceRequest {
            namespace: "mesh".into(),
            service: "m.Echo".into(),
            component: echo,
            grants: vec![],
            limits: None,
        })
        .await
        .unwrap()
        .into_inner()
    };
    register(registry.clone(), echo.clone()).await;
    CollectionRepoClient::new(ch.clone())
        .create_collection(proto::CreateCollectionRequest {
            namespace: "mesh".into(),
            name: "data".into(),
            message_type: "m.Msg".into(),
            ..Default::default()
        })
        .await
        .unwrap();

    // A new node joins; time until it sees the owner alive with its data and handler.
    let t = Instant::now();
    let peer = collector::Node::start(collector::Config {
        cluster_secret: Some(bench_secret()),
        operator_key_file: Some(bench_key_file()),
        metrics: metrics_on(),
        data_dir: dir.path().join("peer"),
        listen: "127.0.0.1:0".parse().unwrap(),
        join: vec![owner.addr.to_string()],
        ..Default::default()
    })
    .await
    .unwrap();
    let sees_owner = |v: &collector::mesh::view::View| {
        v.owner("mesh", "data").is_some_and(|m| m.reachable())
            && v.newest("mesh", "m.Echo").is_some()
    };
    for _ in 0..20_000 {
        if sees_owner(&peer.mesh().view()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(sees_owner(&peer.mesh().view()), "the peer never converged");
    let joined = t.elapsed();

    let body = Msg {
        text: "hello".into(),
        n: 42,
    }
    .encode_to_vec();
    let mut direct = Vec::new();
    let mut via = Vec::new();
    for _ in 0..4 {
        direct.push(connect(owner.addr).await);
        via.push(connect(peer.addr).await);
    }
    let rates = |chs: Vec<Channel>, expect_forwarded: bool| {
        let body = body.clone();
        async move {
            let mut out = [(0.0, 0.0); 2];
            for (k, conc) in [1usize, 64].into_iter().enumerate() {
                let (chs, body) = (chs.clone(), body.clone());
                let (rate, p50, errs) = load(conc, secs, move |i| {
                    let mut d =
                        CollectiveDispatcherClient::new(chs[i as usize % chs.len()].clone());
                    let body = body.clone();
                    async move {
                        let r = d
                            .dispatch(proto::DispatchRequest {
                                namespace: "mesh".into(),
                                service: "m.Echo".into(),
                                method: "Say".into(),
                                input: Some(prost_types::Any {
                                    type_url: "type.googleapis.com/m.Msg".into(),
                                    value: body,
                                }),
                                collection: "data".into(),
                                ..Default::default()
                            })
                            .await?
                            .into_inner();
                        assert_eq!(r.forwarded, expect_forwarded);
                        Ok(())
                    }
                })
                .await;
                assert_eq!(errs, 0, "failed dispatches");
                out[k] = (rate, p50);
            }
            out
        }
    };
    let on_owner = rates(direct, false).await;
    let through_peer = rates(via, true).await;
    for (k, conc) in [1usize, 64].into_iter().enumerate() {
        println!(
            "(m) Dispatch on owner   c={conc:<3} {:>9.0} calls/s  p50 {:>6.0} µs",
            on_owner[k].0, on_owner[k].1
        );
        println!(
            "(m) Dispatch via a peer c={conc:<3} {:>9.0} calls/s  p50 {:>6.0} µs  = {:.2}x owner throughput",
            through_peer[k].0,
            through_peer[k].1,
            through_peer[k].0 / on_owner[k].0
        );
    }
    let overhead = through_peer[0].1 - on_owner[0].1;
    println!(
        "(m) forwarding overhead at c=1: {overhead:.0} µs = {:.2}x one loopback round trip ({rtt_us:.0} µs, the empty call) (target <= 1.1x)",
        overhead / rtt_us
    );
    println!(
        "(m) a new node saw the owner's collection and handler {:.0} ms after it started",
        joined.as_secs_f64() * 1e3
    );

    // A fresh registration on the owner: time until the peer's view has it.
    let mut seen = Vec::new();
    for _ in 0..7 {
        let info = register(registry.clone(), echo.clone()).await;
        let t = Instant::now();
        loop {
            let v = peer.mesh().view();
            if v.newest("mesh", "m.Echo")
                .is_some_and(|h| h.registered_at_us == info.registered_at_us)
            {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "registration never propagated"
            );
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        seen.push(t.elapsed().as_secs_f64() * 1e3);
    }
    seen.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "(m) a fresh registration reached the peer in {:.0} ms median, {:.0} ms max (7 registrations; gossip every 200 ms)",
        seen[seen.len() / 2],
        seen[seen.len() - 1]
    );
    peer.shutdown().await.unwrap();
}

/// Raw-bytes unary calls to `path` at c=1 and c=64: (calls/s, p50 µs) each.
async fn raw_rates(
    channels: &[Channel],
    secs: f64,
    path: &'static str,
    body: Vec<u8>,
    ns: &'static str,
    distinct: bool,
) -> [(f64, f64); 2] {
    let mut out = [(0.0, 0.0); 2];
    for (k, conc) in [1usize, 64].into_iter().enumerate() {
        let chs = channels.to_vec();
        let body = body.clone();
        let (rate, p50, errs) = load(conc, secs, move |i| {
            let mut grpc = tonic::client::Grpc::new(chs[i as usize % chs.len()].clone());
            // `distinct`: a body per call (a counter name per call, so calls never conflict).
            let b = if distinct {
                format!("\x0a\x08c{:07}", i % 10_000_000).into_bytes()
            } else {
                body.clone()
            };
            async move {
                grpc.ready()
                    .await
                    .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
                let mut req = tonic::Request::new(prost::bytes::Bytes::from(b));
                req.metadata_mut()
                    .insert("x-collector-namespace", ns.parse().unwrap());
                grpc.unary(
                    req,
                    tonic::codegen::http::uri::PathAndQuery::from_static(path),
                    collector::api::dynamic::BytesCodec,
                )
                .await
                .map(|_| ())
            }
        })
        .await;
        assert_eq!(errs, 0, "{path}: failed calls");
        out[k] = (rate, p50);
    }
    out
}

/// p50 and p95 of `n` sequential calls, in ms.
async fn latency<F, Fut>(n: usize, f: F) -> (f64, f64)
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<(), tonic::Status>>,
{
    let mut v = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        f(i).await.expect("query succeeds");
        v.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (v[n / 2], v[n * 95 / 100])
}

fn raw_sqlite(dir: &std::path::Path, n: u64) -> (f64, f64) {
    let conn = rusqlite::Connection::open(dir.join("raw.db")).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.pragma_update(None, "synchronous", "FULL").unwrap();
    conn.execute_batch("CREATE TABLE t(rid INTEGER PRIMARY KEY, id TEXT UNIQUE, data BLOB)")
        .unwrap();
    let blob = vec![7u8; 1024];
    let t = Instant::now();
    for i in 0..n {
        let tx = conn.unchecked_transaction().unwrap();
        tx.prepare_cached("INSERT INTO t(id, data) VALUES (?, ?)")
            .unwrap()
            .execute(rusqlite::params![format!("id{i}"), blob])
            .unwrap();
        tx.commit().unwrap();
    }
    let insert_per_s = n as f64 / t.elapsed().as_secs_f64();
    let reader = rusqlite::Connection::open(dir.join("raw.db")).unwrap();
    let reads = 200_000u64;
    let t = Instant::now();
    for i in 0..reads {
        let mut st = reader
            .prepare_cached("SELECT data FROM t WHERE id = ?")
            .unwrap();
        let _: Vec<u8> = st
            .query_row([format!("id{}", i % n)], |r| r.get(0))
            .unwrap();
    }
    (insert_per_s, reads as f64 / t.elapsed().as_secs_f64())
}

/// False with BENCH_METRICS=off: the nodes keep no metrics (no recorder is
/// installed, so every metrics macro is a no-op).
fn metrics_on() -> bool {
    std::env::var("BENCH_METRICS").map_or(true, |v| v != "off")
}

#[tokio::main]
async fn main() {
    let records: u64 = std::env::var("BENCH_RECORDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let secs: f64 = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let dir = tempfile::Builder::new()
        .prefix("collector-bench")
        .tempdir()
        .unwrap();
    println!("    work dir: {}", dir.path().display());
    let node = collector::Node::start(collector::Config {
        cluster_secret: Some(bench_secret()),
        operator_key_file: Some(bench_key_file()),
        metrics: metrics_on(),
        data_dir: dir.path().join("node"),
        listen: "127.0.0.1:0".parse().unwrap(),
        ..Default::default()
    })
    .await
    .unwrap();
    let channel = connect(node.addr).await;
    let mut registry = CollectorRegistryClient::new(channel.clone());
    let mut repo = CollectionRepoClient::new(channel.clone());
    setup_node(&channel).await;
    let pool =
        collector::registry::compile_sources(&[("shop.proto".into(), SHOP.into())], &[]).unwrap();
    println!(
        "collector benchmark: {} records for queries, {secs}s per throughput phase, metrics {}",
        records,
        if metrics_on() {
            "on"
        } else {
            "off (BENCH_METRICS=off)"
        }
    );
    println!();

    // Several channels, so the client is not limited by one HTTP/2 connection.
    let mut channels = Vec::new();
    for _ in 0..4 {
        channels.push(connect(node.addr).await);
    }
    let health = |ch: Channel| tonic_health::pb::health_client::HealthClient::new(ch);
    let svc = |ch: Channel| CollectionServiceClient::new(ch);

    // (a) floor: an empty unary call (Health.Check: one map lookup).
    let mut floors = Vec::new();
    let mut floor_p50 = Vec::new();
    for conc in [1usize, 64] {
        let chs = channels.clone();
        let (rate, p50, errs) = load(conc, secs, move |i| {
            let mut h = health(chs[i as usize % chs.len()].clone());
            async move {
                h.check(tonic_health::pb::HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .map(|_| ())
            }
        })
        .await;
        assert_eq!(errs, 0);
        floors.push(rate);
        floor_p50.push(p50);
        println!(
            "(a) empty call         c={conc:<3} {rate:>9.0} calls/s  p50 {p50:>6.0} µs  (floor)"
        );
    }

    let phases = std::env::var("BENCH_PHASES").unwrap_or_else(|_| "kbcdwhlfme".into());
    let phase = |p: char| phases.contains(p);

    // (k) the cost of an API key: WhoAmI does what the empty call does plus
    // the key check (a map lookup, a blake3 and a compare) and a small reply.
    if phase('k') {
        for (k, conc) in [1usize, 64].into_iter().enumerate() {
            let chs = channels.clone();
            let (rate, p50, errs) = load(conc, secs, move |i| {
                let mut r = CollectorRegistryClient::new(chs[i as usize % chs.len()].clone());
                async move { r.who_am_i(proto::WhoAmIRequest {}).await.map(|_| ()) }
            })
            .await;
            assert_eq!(errs, 0);
            println!(
                "(k) call with a key    c={conc:<3} {rate:>9.0} calls/s  p50 {p50:>6.0} µs  = {:.3}x empty call (target >= 0.95)",
                rate / floors[k]
            );
        }
    }
    let mut rng = Rng(0x9E3779B97F4A7C15);

    // (b) Get of a 1 KB record.
    if phase('b') {
        let size = prepare_get(&channel, &pool, &mut rng).await;
        println!("    record size: {size} bytes of proto");
        let hot = get_rates(&channels, secs).await;
        // The same Get on a node with the record cache off: every call reads SQLite.
        let cold_node = collector::Node::start(collector::Config {
            cluster_secret: Some(bench_secret()),
            operator_key_file: Some(bench_key_file()),
            metrics: metrics_on(),
            data_dir: dir.path().join("cold"),
            listen: "127.0.0.1:0".parse().unwrap(),
            record_cache_bytes: 0,
            ..Default::default()
        })
        .await
        .unwrap();
        let mut cold_channels = Vec::new();
        for _ in 0..4 {
            cold_channels.push(connect(cold_node.addr).await);
        }
        setup_node(&cold_channels[0]).await;
        prepare_get(&cold_channels[0], &pool, &mut Rng(0x9E3779B97F4A7C15)).await;
        let cold = get_rates(&cold_channels, secs).await;
        cold_node.shutdown().await.unwrap();
        for (k, conc) in [1usize, 64].into_iter().enumerate() {
            let ((rate, p50), (crate_, cp50)) = (hot[k], cold[k]);
            println!(
                "(b) Get 1 KB, cached   c={conc:<3} {rate:>9.0} calls/s  p50 {p50:>6.0} µs  = {:.2}x empty call (target >= 0.8)",
                rate / floors[k]
            );
            println!(
                "(b) Get 1 KB, no cache c={conc:<3} {crate_:>9.0} calls/s  p50 {cp50:>6.0} µs  = {:.2}x empty call",
                crate_ / floors[k]
            );
        }
    }

    // (c) Create, synchronous=FULL, group commit. One commit costs one
    // fdatasync of the WAL, so 64 clients grouped into each commit can reach
    // at most 64 / (fdatasync p50) calls/s; and no call beats an empty one.
    // The ceiling is the lower of the two.
    let fsync_p50 = if phase('c') {
        let p = dir.path().to_path_buf();
        let p50 = tokio::task::spawn_blocking(move || fdatasync_p50(&p, 200))
            .await
            .unwrap();
        println!(
            "(c) fdatasync (4 KiB append) p50 {:>6.0} µs  (the disk allows at most {:.0} Creates/s at c=64)",
            p50 * 1e6,
            64.0 / p50
        );
        p50
    } else {
        f64::NAN
    };
    for (k, conc) in [1usize, 64].into_iter().enumerate().filter(|_| phase('c')) {
        let chs = channels.clone();
        let body = any_of(&pool, &order_json(&mut rng, 1, 200));
        let (rate, p50, errs) = load(conc, secs, move |i| {
            let mut c = svc(chs[i as usize % chs.len()].clone());
            let body = body.clone();
            async move {
                c.create(proto::CreateRequest {
                    namespace: "bench".into(),
                    collection: "small".into(),
                    record: Some(proto::Record {
                        data: Some(body),
                        ..Default::default()
                    }),
                })
                .await
                .map(|_| ())
            }
        })
        .await;
        assert_eq!(errs, 0);
        // What the node could reach at best: the disk's commits (all `conc`
        // writes grouped in each) or an empty call, whichever is lower.
        let ceiling = (conc as f64 / fsync_p50).min(floors[k]);
        let target = if conc == 64 { " (target >= 0.8)" } else { "" };
        println!(
            "(c) Create             c={conc:<3} {rate:>9.0} calls/s  p50 {p50:>6.0} µs  = {:.2}x empty call, {:.2}x the ceiling{target}",
            rate / floors[k],
            rate / ceiling
        );
    }

    // (d) raw rusqlite floor, in-process, same durability (WAL, synchronous=FULL).
    if phase('d') {
        let (ins, read) = tokio::task::spawn_blocking({
            let p = dir.path().to_path_buf();
            move || raw_sqlite(&p, 5_000)
        })
        .await
        .unwrap();
        println!(
            "(d) raw rusqlite insert (1 per txn)  {ins:>9.0} /s      point read {read:>9.0} /s"
        );
    }

    // (w) Wasm: in-process instantiate + call of the echo guest.
    if phase('w') {
        let guests = collector::guests::build_example_guests().unwrap();
        let wasm = std::fs::read(guests.join("echo.wasm")).unwrap();
        // On a runtime worker, as calls run in the node (the sandbox tears
        // stores down and makes the next instance in background tasks).
        let (per_call, pooling) = tokio::spawn(async move {
            let sb = collector::wasm::Sandbox::new(Default::default()).unwrap();
            let h = sb.compile(&wasm).unwrap();
            let api: Arc<dyn collector::wasm::HostApi> = Arc::new(collector::wasm::DenyAll);
            let limits = collector::wasm::Limits::default();
            let ctx = || collector::wasm::CallContext {
                namespace: "bench".into(),
                service: "bench.Echo".into(),
                method: "Echo".into(),
                metadata: vec![],
                deadline_ms: 5000,
            };
            for _ in 0..1000 {
                sb.call(&h, ctx(), b"hello", api.clone(), &limits)
                    .await
                    .unwrap();
            }
            let n = 20_000;
            let t = Instant::now();
            for _ in 0..n {
                sb.call(&h, ctx(), b"hello", api.clone(), &limits)
                    .await
                    .unwrap();
            }
            (t.elapsed().as_secs_f64() * 1e6 / n as f64, sb.pooling())
        })
        .await
        .unwrap();
        println!(
            "(w) wasm echo: fresh store + instantiate + call  {per_call:.1} µs per call (pooling: {pooling}; target <= 20 µs)"
        );
    }

    // (h) Handlers over gRPC: Wasm echo vs a native Rust echo; counter throughput.
    if phase('h') {
        let root = collector::guests::build_example_guests().unwrap();
        let proto_src = "syntax = \"proto3\"; package t; message Msg { string text = 1; int64 n = 2; }\n\
                         service Echo { rpc Say(Msg) returns (Msg); } service Counter { rpc Incr(Msg) returns (Msg); rpc PeekTen(Msg) returns (Msg); }";
        register_proto(&channel, "t.proto", proto_src).await;
        repo.create_collection(proto::CreateCollectionRequest {
            namespace: "bench".into(),
            name: "counters".into(),
            message_type: "t.Msg".into(),
            ..Default::default()
        })
        .await
        .unwrap();
        for (svc, file, grants) in [
            ("t.Echo", "echo.wasm", vec![]),
            (
                "t.Counter",
                "counter.wasm",
                vec![proto::Grant {
                    collection: "counters".into(),
                    read_only: false,
                }],
            ),
        ] {
            registry
                .register_service(proto::RegisterServiceRequest {
                    namespace: "bench".into(),
                    service: svc.into(),
                    component: std::fs::read(root.join(file))
                        .expect("guests are built (phase w builds them)"),
                    grants,
                    limits: None,
                })
                .await
                .unwrap();
        }
        let native_channels = serve_native(EchoCall).await;
        let body = b"\x0a\x05hello\x10\x2a".to_vec();
        let native = raw_rates(
            &native_channels,
            secs,
            "/t.Echo/Say",
            body.clone(),
            "bench",
            false,
        )
        .await;
        let wasm = raw_rates(&channels, secs, "/t.Echo/Say", body, "bench", false).await;
        let counter = raw_rates(&channels, secs, "/t.Counter/Incr", vec![], "bench", true).await;
        for (k, conc) in [1usize, 64].into_iter().enumerate() {
            println!(
                "(h) native Rust echo    c={conc:<3} {:>9.0} calls/s  p50 {:>6.0} µs  (floor)",
                native[k].0, native[k].1
            );
            println!(
                "(h) Wasm echo          c={conc:<3} {:>9.0} calls/s  p50 {:>6.0} µs  = {:.2}x native (target >= 0.7)",
                wasm[k].0,
                wasm[k].1,
                wasm[k].0 / native[k].0
            );
            println!(
                "(h) Wasm counter Incr  c={conc:<3} {:>9.0} calls/s  p50 {:>6.0} µs  (get + create in a collection, committed per call)",
                counter[k].0, counter[k].1
            );
        }

        // (g) A handler doing 10 collection gets: Wasm vs the same in native Rust
        // (on the node's own catalogue, behind the same kind of route).
        let mut svc_client = svc(channel.clone());
        for i in 0..10i64 {
            svc_client
                .create(proto::CreateRequest {
                    namespace: "bench".into(),
                    collection: "counters".into(),
                    record: Some(proto::Record {
                        id: format!("ten{i}"),
                        data: Some(prost_types::Any {
                            type_url: "type.googleapis.com/t.Msg".into(),
                            value: Msg {
                                text: format!("ten{i}"),
                                n: i,
                            }
                            .encode_to_vec(),
                        }),
                        ..Default::default()
                    }),
                })
                .await
                .unwrap();
        }
        let ten_channels = serve_native(TenGetsCall(node.catalog().clone())).await;
        let ten = Msg {
            text: "ten".into(),
            n: 0,
        }
        .encode_to_vec();
        let native = raw_rates(
            &ten_channels,
            secs,
            "/t.Counter/PeekTen",
            ten.clone(),
            "bench",
            false,
        )
        .await;
        let wasm = raw_rates(&channels, secs, "/t.Counter/PeekTen", ten, "bench", false).await;
        for (k, conc) in [1usize, 64].into_iter().enumerate() {
            println!(
                "(g) native 10 gets     c={conc:<3} {:>9.0} calls/s  p50 {:>6.0} µs  (floor)",
                native[k].0, native[k].1
            );
            println!(
                "(g) Wasm 10 gets       c={conc:<3} {:>9.0} calls/s  p50 {:>6.0} µs  = {:.2}x native latency, {:.2}x native throughput (target latency <= 1.5x)",
                wasm[k].0,
                wasm[k].1,
                wasm[k].1 / native[k].1,
                wasm[k].0 / native[k].0
            );
        }
    }

    // (l) Lifecycle: backup under writes, restore, clone to a peer, each
    // against a plain copy of the same file.
    if phase('l') {
        lifecycle_phase(&node, &dir, &channels, &pool, secs).await;
    }

    // (f) Files: PutFile and GetFile of one big file vs a local write + fsync
    // and a local read of the same bytes.
    if phase('f') {
        files_phase(node.data_dir.clone(), &channels[0]).await;
    }

    // (m) Mesh: a Dispatch through a peer vs the same call on the owner.
    if phase('m') {
        mesh_phase(&node, &dir, secs, floor_p50[0]).await;
    }

    if phase('n') {
        many::many_phase(dir.path(), floor_p50[0]).await;
    }
    if phase('o') {
        ops::ops_phase(dir.path(), &pool).await;
    }
    if records == 0 || !phase('e') {
        node.shutdown().await.unwrap();
        return;
    }
    // (e) queries over `records` records.
    let t = Instant::now();
    let batch = 1000u64;
    let mut loaders = Vec::new();
    for w in 0..2u64 {
        let mut c = svc(channels[w as usize].clone());
        let pool = pool.clone();
        let n = records;
        loaders.push(tokio::spawn(async move {
            let mut rng = Rng(0xDEADBEEF + w);
            let mut start = w * batch;
            while start < n {
                let ops = (start..(start + batch).min(n))
                    .map(|i| proto::BatchOp {
                        op: Some(proto::batch_op::Op::Create(proto::CreateRequest {
                            record: Some(proto::Record {
                                data: Some(any_of(&pool, &order_json(&mut rng, i, 40))),
                                ..Default::default()
                            }),
                            ..Default::default()
                        })),
                    })
                    .collect();
                let r = c
                    .batch(proto::BatchRequest {
                        namespace: "bench".into(),
                        collection: "big".into(),
                        ops,
                    })
                    .await
                    .unwrap()
                    .into_inner();
                assert!(r.committed);
                start += 2 * batch;
            }
        }));
    }
    for l in loaders {
        l.await.unwrap();
    }
    let load_s = t.elapsed().as_secs_f64();
    println!(
        "(e) loaded {records} records with Batch(1000) in {load_s:.1}s = {:.0} records/s",
        records as f64 / load_s
    );
    let c = svc(channel.clone());
    let (p50, p95) = latency(300, |i| {
        let mut c = c.clone();
        async move {
            let r = c
                .search(proto::SearchRequest {
                    namespace: "bench".into(),
                    collection: "big".into(),
                    query: format!("sku{}", i * 7 % 1000),
                    page_size: 20,
                    ..Default::default()
                })
                .await?
                .into_inner();
            assert!(r.total_count > 0);
            Ok(())
        }
    })
    .await;
    println!(
        "    FTS, one term (~{} hits), top 20 by relevance + total: p50 {p50:.2} ms  p95 {p95:.2} ms (target p50 <= 5 ms)",
        records / 1000
    );
    let (p50, p95) = latency(300, |i| {
        let mut c = c.clone();
        async move {
            c.search(proto::SearchRequest {
                namespace: "bench".into(),
                collection: "big".into(),
                query: format!("{} AND sku{}", WORDS[i % WORDS.len()], i * 13 % 1000),
                page_size: 20,
                ..Default::default()
            })
            .await
            .map(|_| ())
        }
    })
    .await;
    println!(
        "    FTS, two terms AND, top 20 + total:                p50 {p50:.2} ms  p95 {p95:.2} ms"
    );
    let (p50, p95) = latency(300, |i| {
        let mut c = c.clone();
        async move {
            let f = proto::Filter {
                field: "quantity".into(),
                op: proto::FilterOp::Eq as i32,
                value: Some(proto::Value {
                    kind: Some(proto::value::Kind::IntValue((i * 31 % 10_000) as i64)),
                }),
                values: vec![],
            };
            c.search(proto::SearchRequest {
                namespace: "bench".into(),
                collection: "big".into(),
                filters: vec![f],
                page_size: 20,
                ..Default::default()
            })
            .await
            .map(|_| ())
        }
    })
    .await;
    println!(
        "    indexed filter EQ (~{} hits), top 20 + total:     p50 {p50:.2} ms  p95 {p95:.2} ms (target p50 <= 1 ms)",
        records / 10_000
    );
    let (p50, _) = latency(50, |_| {
        let mut h = health(channel.clone());
        async move {
            h.check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await
            .map(|_| ())
        }
    })
    .await;
    println!("    (empty call p50 in this phase: {p50:.3} ms)");
    node.shutdown().await.unwrap();
}

/// The p50 of appending 4 KiB to a file in `dir` and `fdatasync`ing it,
/// over `n` rounds, in seconds: what one durable commit costs on that disk.
fn fdatasync_p50(dir: &std::path::Path, n: usize) -> f64 {
    use std::io::Write;
    let path = dir.join("fsync-floor");
    let mut f = std::fs::File::create(&path).unwrap();
    let block = vec![0x5a_u8; 4096];
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        f.write_all(&block).unwrap();
        f.sync_data().unwrap();
        times.push(t.elapsed().as_secs_f64());
    }
    drop(f);
    let _ = std::fs::remove_file(&path);
    times.sort_by(f64::total_cmp);
    times[n / 2]
}

/// Fills `bench/<name>` with about `mb` MiB of 8 KB records, in batches.
async fn fill_mb(ch: &Channel, pool: &prost_reflect::DescriptorPool, name: &str, mb: u64) {
    let per_record = 8 * 1024u64;
    let n = mb * (1 << 20) / per_record / 2; // JSON doubles each record on disk
    let mut tasks = Vec::new();
    for w in 0..2u64 {
        let mut c = CollectionServiceClient::new(ch.clone());
        let pool = pool.clone();
        let name = name.to_string();
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng(0xB4C0 + w);
            let mut i = w * 500;
            while i < n {
                let ops = (i..(i + 500).min(n))
                    .map(|k| proto::BatchOp {
                        op: Some(proto::batch_op::Op::Create(proto::CreateRequest {
                            record: Some(proto::Record {
                                data: Some(any_of(
                                    &pool,
                                    &order_json(&mut rng, k, per_record as usize),
                                )),
                                ..Default::default()
                            }),
                            ..Default::default()
                        })),
                    })
                    .collect();
                let r = c
                    .batch(proto::BatchRequest {
                        namespace: "bench".into(),
                        collection: name.clone(),
                        ops,
                    })
                    .await
                    .unwrap()
                    .into_inner();
                assert!(r.committed);
                i += 1000;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// A plain copy of `from` to `to`, synced: MB/s.
/// Phase f: a file of BENCH_FILE_MB put with PutFile (1 MiB chunks) and read
/// back with GetFile, each against the floor of doing the same on a local
/// file in the data dir (write + fsync; read, page cache warm as for the node).
async fn files_phase(data_dir: std::path::PathBuf, ch: &Channel) {
    let mb: usize = std::env::var("BENCH_FILE_MB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(256);
    let mut repo = CollectionRepoClient::new(ch.clone());
    repo.create_collection(proto::CreateCollectionRequest {
        namespace: "bench".into(),
        name: "docs".into(),
        message_type: "shop.Order".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut svc = CollectionServiceClient::new(ch.clone()).max_decoding_message_size(8 << 20);
    svc.create(proto::CreateRequest {
        namespace: "bench".into(),
        collection: "docs".into(),
        record: Some(proto::Record {
            id: "d1".into(),
            json: r#"{"title": "a record with a file"}"#.into(),
            ..Default::default()
        }),
    })
    .await
    .unwrap();
    let chunk: Vec<u8> = (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let total = (mb as u64) << 20;
    let mbs = |secs: f64| total as f64 / secs / 1e6;
    // Floors, on the data dir's file system.
    let (path, data) = (data_dir.join("floor.bin"), chunk.clone());
    let (write_floor, read_floor) = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let t = Instant::now();
        let mut f = std::fs::File::create(&path).unwrap();
        for _ in 0..mb {
            f.write_all(&data).unwrap();
        }
        f.sync_all().unwrap();
        let w = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let mut f = std::fs::File::open(&path).unwrap();
        let mut buf = vec![0u8; 1 << 20];
        while f.read(&mut buf).unwrap() > 0 {}
        let r = t.elapsed().as_secs_f64();
        std::fs::remove_file(&path).unwrap();
        (w, r)
    })
    .await
    .unwrap();
    println!(
        "(f) local write + fsync of {mb} MiB     {:>7.0} MB/s  (floor)",
        mbs(write_floor)
    );
    println!(
        "(f) local read of {mb} MiB              {:>7.0} MB/s  (floor)",
        mbs(read_floor)
    );
    // A second floor for reads: the same bytes through a plain loopback TCP
    // socket (what any remote read must at least pay), 1 MiB writes.
    let tcp_floor = {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let data = chunk.clone();
        let sender = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            for _ in 0..mb {
                s.write_all(&data).await.unwrap();
            }
        });
        let t = Instant::now();
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut buf = vec![0u8; 1 << 20];
        let mut n = 0u64;
        while n < total {
            n += c.read(&mut buf).await.unwrap() as u64;
        }
        sender.await.unwrap();
        t.elapsed().as_secs_f64()
    };
    println!(
        "(f) loopback TCP of {mb} MiB            {:>7.0} MB/s  (floor)",
        mbs(tcp_floor)
    );
    let file = || {
        Some(proto::FileRef {
            namespace: "bench".into(),
            collection: "docs".into(),
            record_id: "d1".into(),
            path: "big.bin".into(),
        })
    };
    use proto::put_file_request::Part;
    let header = proto::PutFileRequest {
        part: Some(Part::Header(proto::PutFileHeader {
            file: file(),
            ..Default::default()
        })),
    };
    let msgs = std::iter::once(header)
        .chain((0..mb).map(move |_| proto::PutFileRequest {
            part: Some(Part::Chunk(chunk.clone())),
        }))
        .chain(std::iter::once(proto::PutFileRequest {
            part: Some(Part::End(proto::PutFileEnd {})),
        }));
    let t = Instant::now();
    let made = svc
        .put_file(tokio_stream::iter(msgs))
        .await
        .unwrap()
        .into_inner();
    let put = t.elapsed().as_secs_f64();
    assert_eq!(made.size_bytes as u64, total);
    println!(
        "(f) PutFile {mb} MiB                    {:>7.0} MB/s  {:.2}x the local write",
        mbs(put),
        write_floor / put
    );
    let t = Instant::now();
    let mut s = svc
        .get_file(proto::GetFileRequest {
            file: file(),
            offset: 0,
            length: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let mut got = 0u64;
    while let Some(m) = s.message().await.unwrap() {
        if let Some(proto::get_file_response::Part::Chunk(b)) = m.part {
            got += b.len() as u64;
        }
    }
    let get = t.elapsed().as_secs_f64();
    assert_eq!(got, total);
    println!(
        "(f) GetFile {mb} MiB                    {:>7.0} MB/s  {:.2}x the local read, {:.2}x loopback TCP",
        mbs(get),
        read_floor / get,
        tcp_floor / get
    );
}

fn copy_rate(from: &std::path::Path, to: &std::path::Path) -> f64 {
    let t = Instant::now();
    let n = std::fs::copy(from, to).unwrap();
    std::fs::File::open(to).unwrap().sync_all().unwrap();
    let rate = n as f64 / t.elapsed().as_secs_f64() / 1e6;
    std::fs::remove_file(to).unwrap();
    rate
}

async fn lifecycle_phase(
    node: &collector::NodeHandle,
    dir: &tempfile::TempDir,
    channels: &[Channel],
    pool: &prost_reflect::DescriptorPool,
    secs: f64,
) {
    let mb: u64 = std::env::var("BENCH_LIFECYCLE_MB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1024);
    let mut repo = CollectionRepoClient::new(channels[0].clone());
    repo.create_collection(proto::CreateCollectionRequest {
        namespace: "bench".into(),
        name: "life".into(),
        message_type: "shop.Order".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let t = Instant::now();
    fill_mb(&channels[0], pool, "life", mb).await;
    let db = node.data_dir.join("collections/bench/life.db");
    let size = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    let bytes = size(&db) + size(std::path::Path::new(&wal));
    println!(
        "(l) collection of {:.0} MB (file and WAL) loaded in {:.1}s",
        bytes as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );
    // Floor: a plain copy of the same file (page cache warm, as for the node).
    let (src, dst) = (db.clone(), dir.path().join("copy.db"));
    let floor = tokio::task::spawn_blocking(move || copy_rate(&src, &dst))
        .await
        .unwrap();
    println!("(l) plain file copy + fsync          {floor:>7.0} MB/s  (floor)");

    // Writes without a backup, then the same writes during one.
    let writers = |chs: Vec<Channel>, pool: prost_reflect::DescriptorPool| {
        move |i: u64| {
            let mut c = CollectionServiceClient::new(chs[i as usize % chs.len()].clone());
            let body = any_of(&pool, &order_json(&mut Rng(i + 1), i, 200));
            async move {
                c.create(proto::CreateRequest {
                    namespace: "bench".into(),
                    collection: "life".into(),
                    record: Some(proto::Record {
                        data: Some(body),
                        ..Default::default()
                    }),
                })
                .await
                .map(|_| ())
            }
        }
    };
    let (rate0, _, p99_0, errs0) =
        load_tail(16, secs, writers(channels.to_vec(), pool.clone())).await;
    let backup_ch = channels[1].clone();
    let backup = tokio::spawn(async move {
        // Starts after the writers are under way.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let t = Instant::now();
        let mut s = CollectionRepoClient::new(backup_ch)
            .backup_collection(proto::BackupCollectionRequest {
                namespace: "bench".into(),
                name: "life".into(),
                include_files: false,
            })
            .await
            .unwrap()
            .into_inner();
        let mut last = None;
        while let Some(p) = s.message().await.unwrap() {
            last = p.backup.or(last);
        }
        (last.expect("a backup"), t.elapsed().as_secs_f64())
    });
    // The writers run for as long as the backup does, at least `secs`.
    let (rate1, _, p99_1, errs1) =
        load_tail(16, secs.max(1.0), writers(channels.to_vec(), pool.clone())).await;
    let (b, took) = backup.await.unwrap();
    let backup_rate = b.size_bytes as f64 / took / 1e6;
    println!(
        "(l) backup under 16 writers           {backup_rate:>7.0} MB/s  {:.1}s for {:.0} MB = {:.2}x file copy (target >= 0.5)",
        took,
        b.size_bytes as f64 / 1e6,
        backup_rate / floor
    );
    println!(
        "(l) Create c=16 p99 during the backup {p99_1:>7.0} µs vs {p99_0:.0} µs without = {:.2}x (target <= 2), {:.0} vs {:.0} calls/s, {} errors",
        p99_1 / p99_0.max(1.0),
        rate1,
        rate0,
        errs0 + errs1
    );
    if took > secs.max(1.0) {
        println!("    (the backup outlasted the writers' {secs}s: part of it ran without writes)");
    }

    // (b) restore of that backup to a new name.
    let t = Instant::now();
    let mut restoring = repo
        .restore_backup(proto::RestoreBackupRequest {
            backup_id: b.backup_id.clone(),
            namespace: "bench".into(),
            name: "life_restored".into(),
            overwrite: false,
            include_files: false,
        })
        .await
        .unwrap()
        .into_inner();
    while restoring.message().await.unwrap().is_some() {}
    let took = t.elapsed().as_secs_f64();
    let rate = b.size_bytes as f64 / took / 1e6;
    println!(
        "(l) restore (verify, copy, swap in)   {rate:>7.0} MB/s  {took:.1}s = {:.2}x file copy (target >= 0.5)",
        rate / floor
    );

    // (c) clone to a second node over loopback.
    let peer = collector::Node::start(collector::Config {
        cluster_secret: Some(bench_secret()),
        operator_key_file: Some(bench_key_file()),
        metrics: metrics_on(),
        data_dir: dir.path().join("peer"),
        listen: "127.0.0.1:0".parse().unwrap(),
        join: vec![node.addr.to_string()],
        ..Default::default()
    })
    .await
    .unwrap();
    let peer_ch = connect(peer.addr).await;
    for _ in 0..200 {
        let up = collector::proto::collective_dispatcher_client::CollectiveDispatcherClient::new(
            channels[0].clone(),
        )
        .list_peers(proto::ListPeersRequest {})
        .await
        .unwrap()
        .into_inner()
        .peers
        .iter()
        .filter(|p| p.state == proto::PeerState::Alive as i32)
        .count();
        if up == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let t = Instant::now();
    let mut s = CollectionRepoClient::<Channel>::clone(
        &mut repo,
        proto::CloneRequest {
            namespace: "bench".into(),
            name: "life".into(),
            dest_name: "life_cloned".into(),
            dest_node: peer.node_id.clone(),
            ..Default::default()
        },
    )
    .await
    .unwrap()
    .into_inner();
    let mut total = 0;
    // When sending began and when the destination's checks began: the
    // snapshot comes before, the destination's checks and swap after.
    let (mut first, mut sent) = (None, None);
    while let Some(p) = s.message().await.unwrap() {
        if p.step == "sending" {
            total = total.max(p.bytes_total);
        }
        if p.step == "sending" && first.is_none() {
            first = Some(t.elapsed().as_secs_f64());
        }
        if p.step == "checking" && sent.is_none() {
            sent = Some(t.elapsed().as_secs_f64());
        }
    }
    let took = t.elapsed().as_secs_f64();
    let rate = total as f64 / took / 1e6;
    println!(
        "(l) clone to a peer over loopback     {rate:>7.0} MB/s  {took:.1}s for {:.0} MB = {:.2}x file copy (target >= 0.5)",
        total as f64 / 1e6,
        rate / floor
    );
    if let (Some(first), Some(sent)) = (first, sent) {
        println!(
            "    (snapshot {first:.1}s, chunks {:.1}s = {:.0} MB/s, checks and swap-in at the destination {:.1}s)",
            sent - first,
            total as f64 / (sent - first).max(1e-9) / 1e6,
            took - sent
        );
    }
    drop(peer_ch);
    peer.shutdown().await.unwrap();
}
