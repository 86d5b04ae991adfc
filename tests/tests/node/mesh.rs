//! The mesh with three node processes on 127.0.0.1: joining, dispatch to the
//! owner, code fetched on demand, a peer killed mid-call, a restarted peer, a
//! stopped peer, and no forwarding loops. Every wait is bounded; the nodes
//! are killed when a test ends.

use collector::proto::{self, collective_dispatcher_client::CollectiveDispatcherClient};
use collector_tests::{Clients, Msg, ProcessNode};
use prost::Message;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_collector-node");

const COUNTER_PROTO: &str = "syntax = \"proto3\"; package t;
message Msg { string text = 1; int64 n = 2; }
service Counter { rpc Incr(Msg) returns (Msg); rpc Peek(Msg) returns (Msg); rpc IncrSlowly(Msg) returns (Msg); rpc IncrTwice(Msg) returns (Msg); }";

pub(crate) fn msg(text: &str, n: i64) -> prost_types::Any {
    prost_types::Any {
        type_url: "type.googleapis.com/t.Msg".into(),
        value: Msg {
            text: text.into(),
            n,
        }
        .encode_to_vec(),
    }
}

pub(crate) fn n_of(any: Option<prost_types::Any>) -> i64 {
    Msg::decode(any.expect("an output").value.as_slice())
        .expect("a t.Msg")
        .n
}

/// Three (or more) nodes, the first one the others join.
struct Mesh {
    nodes: Vec<ProcessNode>,
    dirs: Vec<tempfile::TempDir>,
    clients: Vec<Clients>,
    ids: Vec<String>,
}

fn dispatcher(c: &Clients) -> CollectiveDispatcherClient<collector::api::bearer::KeyedChannel> {
    CollectiveDispatcherClient::new(c.channel.clone())
}

pub(crate) async fn peers(c: &Clients) -> Vec<proto::Peer> {
    dispatcher(c)
        .list_peers(proto::ListPeersRequest {})
        .await
        .expect("ListPeers")
        .into_inner()
        .peers
}

/// Polls ListPeers on `c` until `ok` holds, for at most `within`.
pub(crate) async fn wait_for(
    c: &Clients,
    what: &str,
    within: Duration,
    ok: impl Fn(&[proto::Peer]) -> bool,
) -> Duration {
    let t = Instant::now();
    loop {
        let ps = peers(c).await;
        if ok(&ps) {
            return t.elapsed();
        }
        assert!(
            t.elapsed() < within,
            "{what}: not within {within:?}; peers: {ps:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `c`'s node sees a peer's collection `name` (20 s at most).
pub(crate) async fn wait_for_collection(c: &Clients, name: &str) {
    let what = format!("a peer's collection {name} seen");
    wait_for(c, &what, Duration::from_secs(20), |ps| {
        ps.iter()
            .any(|p| p.collections.iter().any(|c| c.name == name))
    })
    .await;
}

pub(crate) fn state_of(ps: &[proto::Peer], id: &str) -> Option<proto::PeerState> {
    ps.iter()
        .find(|p| p.node_id == id)
        .and_then(|p| proto::PeerState::try_from(p.state).ok())
}

pub(crate) fn all_up(ps: &[proto::Peer], n: usize) -> bool {
    ps.len() == n
        && ps.iter().all(|p| {
            matches!(
                proto::PeerState::try_from(p.state),
                Ok(proto::PeerState::Alive | proto::PeerState::Self_)
            )
        })
}

impl Mesh {
    async fn start(n: usize) -> Mesh {
        let mut m = Mesh {
            nodes: vec![],
            dirs: vec![],
            clients: vec![],
            ids: vec![],
        };
        for i in 0..n {
            let dir = tempfile::tempdir().unwrap();
            let join: Vec<String> = m
                .nodes
                .first()
                .map(|a| vec![a.addr.to_string()])
                .unwrap_or_default();
            let node = ProcessNode::start_with(BIN, dir.path(), "127.0.0.1:0", &join);
            let clients = Clients::connect(node.addr).await;
            let me = peers(&clients).await;
            m.ids.push(
                me.iter()
                    .find(|p| p.state == proto::PeerState::Self_ as i32)
                    .expect("a node lists itself")
                    .node_id
                    .clone(),
            );
            m.nodes.push(node);
            m.dirs.push(dir);
            m.clients.push(clients);
            let _ = i;
        }
        for c in &m.clients {
            wait_for(
                c,
                "all nodes see each other alive",
                Duration::from_secs(20),
                |ps| all_up(ps, n),
            )
            .await;
        }
        m
    }

    /// Registers the counter service on node `i`, granted `counters`.
    async fn register_counter(&mut self, i: usize) -> String {
        register_counter(&mut self.clients[i]).await
    }

    /// Creates `counters` (t.Msg) on node `i`.
    async fn create_counters(&mut self, i: usize) {
        create_counters(&mut self.clients[i]).await
    }

    /// Waits until every node sees `counters` on node `owner` and the
    /// service on node `holder`.
    async fn converge(&self, owner: usize, holder: usize) {
        let (oid, hid) = (self.ids[owner].clone(), self.ids[holder].clone());
        for c in &self.clients {
            wait_for(
                c,
                "ownership and handler gossiped",
                Duration::from_secs(20),
                |ps| {
                    ps.iter().any(|p| {
                        p.node_id == oid && p.collections.iter().any(|c| c.name == "counters")
                    }) && ps.iter().any(|p| {
                        p.node_id == hid
                            && p.handlers
                                .iter()
                                .any(|h| h.service == "t.Counter" && !h.removed)
                    })
                },
            )
            .await;
        }
    }

    /// A node, restarted on its address and data dir.
    async fn restart(&mut self, i: usize) {
        let addr = self.nodes[i].addr.to_string();
        let join = vec![self.nodes[0].addr.to_string()];
        let join = if i == 0 { vec![] } else { join };
        self.nodes[i] = ProcessNode::start_with(BIN, self.dirs[i].path(), &addr, &join);
        self.clients[i] = Clients::connect(self.nodes[i].addr).await;
    }
}

/// Registers counter.proto and the counter service (granted `counters`)
/// in namespace `shop` on `c`'s node; returns the component's sha256.
pub(crate) async fn register_counter(c: &mut Clients) -> String {
    register_proto(c).await;
    c.registry
        .register_service(proto::RegisterServiceRequest {
            namespace: "shop".into(),
            service: "t.Counter".into(),
            component: collector_tests::guest("counter"),
            grants: vec![proto::Grant {
                collection: "counters".into(),
                read_only: false,
            }],
            limits: None,
        })
        .await
        .expect("register the counter")
        .into_inner()
        .sha256
}

/// Creates `counters` (t.Msg, namespace `shop`) on `c`'s node.
pub(crate) async fn create_counters(c: &mut Clients) {
    register_proto(c).await;
    c.repo
        .create_collection(proto::CreateCollectionRequest {
            namespace: "shop".into(),
            name: "counters".into(),
            message_type: "t.Msg".into(),
            ..Default::default()
        })
        .await
        .expect("create counters");
}

/// Registers counter.proto in namespace `shop`.
pub(crate) async fn register_proto(c: &mut Clients) {
    c.registry
        .register_proto(proto::RegisterProtoRequest {
            namespace: "shop".into(),
            sources: vec![proto::ProtoSource {
                name: "counter.proto".into(),
                content: COUNTER_PROTO.into(),
            }],
            ..Default::default()
        })
        .await
        .expect("register counter.proto");
}

fn dispatch_req(method: &str, text: &str, n: i64, collection: &str) -> proto::DispatchRequest {
    proto::DispatchRequest {
        namespace: "shop".into(),
        service: "t.Counter".into(),
        method: method.into(),
        input: Some(msg(text, n)),
        collection: collection.into(),
        ..Default::default()
    }
}

async fn peek(c: &Clients, text: &str) -> i64 {
    let r = dispatcher(c)
        .dispatch(dispatch_req("Peek", text, 0, "counters"))
        .await
        .expect("Peek")
        .into_inner();
    n_of(r.output)
}

#[tokio::test]
async fn nodes_join_at_start_and_at_run_time_and_converge() {
    let m = Mesh::start(3).await;
    // A fourth node, started alone, joins through Connect.
    let dir = tempfile::tempdir().unwrap();
    let d = ProcessNode::start(BIN, dir.path());
    let dc = Clients::connect(d.addr).await;
    assert_eq!(peers(&dc).await.len(), 1, "alone before Connect");
    let t = Instant::now();
    let r = dispatcher(&dc)
        .connect(proto::ConnectRequest {
            address: m.nodes[1].addr.to_string(),
        })
        .await
        .expect("Connect")
        .into_inner();
    assert!(
        r.peers
            .iter()
            .any(|p| p.address == m.nodes[1].addr.to_string()
                && p.state == proto::PeerState::Alive as i32),
        "{r:#?}"
    );
    for c in m.clients.iter().chain([&dc]) {
        wait_for(c, "four nodes converge", Duration::from_secs(20), |ps| {
            all_up(ps, 4)
        })
        .await;
    }
    eprintln!(
        "a node joined through Connect and converged in {:?}",
        t.elapsed()
    );

    // Connect to something that is not a node: UNAVAILABLE, bounded.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let e = dispatcher(&dc)
        .connect(proto::ConnectRequest {
            address: silent.local_addr().unwrap().to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
    let e = dispatcher(&dc)
        .connect(proto::ConnectRequest {
            address: "not an address".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
}

#[tokio::test]
async fn dispatch_runs_on_the_owner_and_the_code_travels_there() {
    let mut m = Mesh::start(3).await;
    let sha = m.register_counter(0).await;
    m.create_counters(2).await;
    let services_on_c = |m: &Mesh| {
        let mut r = m.clients[2].registry.clone();
        async move {
            r.list_services(proto::ListServicesRequest {
                namespace: "shop".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .services
        }
    };
    assert!(services_on_c(&m).await.is_empty(), "C has no handler yet");
    m.converge(2, 0).await;

    // B has neither the .proto nor the handler, yet reflection on B lists the
    // service and resolves its types (fetched from A), as grpcurl needs.
    {
        use tokio_stream::StreamExt;
        use tonic_reflection::pb::v1::{
            ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
            server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        };
        let ask = |m: MessageRequest| ServerReflectionRequest {
            host: String::new(),
            message_request: Some(m),
        };
        let mut req = tonic::Request::new(tokio_stream::iter(vec![
            ask(MessageRequest::ListServices(String::new())),
            ask(MessageRequest::FileContainingSymbol("t.Msg".into())),
            ask(MessageRequest::FileContainingSymbol("t.Nope".into())),
        ]));
        req.metadata_mut()
            .insert("x-collector-namespace", "shop".parse().unwrap());
        let mut stream = ServerReflectionClient::new(m.clients[1].channel.clone())
            .server_reflection_info(req)
            .await
            .unwrap()
            .into_inner();
        let mut answers = Vec::new();
        while let Some(r) = stream.next().await {
            answers.push(r.unwrap().message_response.unwrap());
        }
        let MessageResponse::ListServicesResponse(list) = &answers[0] else {
            panic!("{:?}", answers[0])
        };
        assert!(
            list.service.iter().any(|s| s.name == "t.Counter"),
            "{list:?}"
        );
        let MessageResponse::FileDescriptorResponse(f) = &answers[1] else {
            panic!("{:?}", answers[1])
        };
        let file = prost_types::FileDescriptorProto::decode(f.file_descriptor_proto[0].as_slice())
            .unwrap();
        assert_eq!(file.name(), "counter.proto");
        assert!(matches!(&answers[2], MessageResponse::ErrorResponse(e) if e.error_code == 5));
        let got = m.clients[1]
            .registry
            .get_proto(proto::GetProtoRequest {
                namespace: "shop".into(),
                target: Some(proto::get_proto_request::Target::Symbol("t.Counter".into())),
            })
            .await
            .expect("GetProto through B")
            .into_inner();
        assert_eq!(got.files[0].name(), "counter.proto");
    }

    // Dispatched through B: runs on C, the owner, which fetches the handler from A.
    let r = dispatcher(&m.clients[1])
        .dispatch(dispatch_req("Incr", "visits", 0, "counters"))
        .await
        .expect("dispatch through B")
        .into_inner();
    assert_eq!(r.node_id, m.ids[2], "ran on the owner");
    assert_eq!(r.node_address, m.nodes[2].addr.to_string());
    assert!(r.forwarded);
    assert_eq!(n_of(r.output.clone()), 1);
    assert_eq!(r.output.unwrap().type_url, "type.googleapis.com/t.Msg");
    let on_c = services_on_c(&m).await;
    assert_eq!(on_c.len(), 1);
    assert_eq!(on_c[0].sha256, sha, "C runs the very component A was given");
    assert_eq!(on_c[0].origin_node_id, m.ids[0]);

    // CollectionService calls through any node reach the owner.
    let got = m.clients[0]
        .records
        .get(proto::GetRequest {
            namespace: "shop".into(),
            collection: "counters".into(),
            id: "visits".into(),
            include_json: true,
        })
        .await
        .expect("Get through A")
        .into_inner();
    assert_eq!(got.json, r#"{"text":"visits","n":1}"#);
    let route = m.clients[1]
        .repo
        .route(proto::RouteRequest {
            namespace: "shop".into(),
            name: "counters".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (route.node_id.as_str(), route.alive),
        (m.ids[2].as_str(), true)
    );
    assert_eq!(route.address, m.nodes[2].addr.to_string());
    let found = m.clients[0]
        .repo
        .discover(proto::DiscoverRequest {
            namespace: "shop".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(found.collections.len(), 1, "{found:?}");
    assert_eq!(found.collections[0].node_id, m.ids[2]);
    assert!(found.unreachable_nodes.is_empty());

    // The native path through A, naming the collection: runs on C.
    let mut grpc = tonic::client::Grpc::new(m.clients[0].channel.clone());
    grpc.ready().await.unwrap();
    let mut req = tonic::Request::new(prost::bytes::Bytes::from(msg("visits", 0).value));
    req.metadata_mut()
        .insert("x-collector-namespace", "shop".parse().unwrap());
    req.metadata_mut()
        .insert("x-collector-collection", "counters".parse().unwrap());
    let out = grpc
        .unary(
            req,
            "/t.Counter/Incr".parse().unwrap(),
            collector::api::dynamic::BytesCodec,
        )
        .await
        .expect("native call through A")
        .into_inner();
    assert_eq!(Msg::decode(out).unwrap().n, 2);

    // Invoke through B (a method bound to the collection): runs on C.
    let inv = m.clients[1]
        .records
        .invoke(proto::InvokeRequest {
            namespace: "shop".into(),
            collection: "counters".into(),
            method: "t.Counter/IncrTwice".into(),
            input: Some(msg("visits", 0)),
        })
        .await
        .expect("Invoke through B")
        .into_inner();
    assert_eq!(inv.node_id, m.ids[2]);
    assert_eq!(n_of(inv.output), 4);

    // A request id makes a retried Dispatch run once.
    let mut req = dispatch_req("Incr", "visits", 0, "counters");
    req.request_id = "retry-me".into();
    let first = dispatcher(&m.clients[1])
        .dispatch(req.clone())
        .await
        .unwrap()
        .into_inner();
    let again = dispatcher(&m.clients[0])
        .dispatch(req.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(n_of(first.output), 5);
    assert_eq!(n_of(again.output), 5, "the retry got the first outcome");
    let on_owner = dispatcher(&m.clients[2])
        .dispatch(req.clone())
        .await
        .unwrap()
        .into_inner();
    assert!(!on_owner.forwarded);
    assert_eq!(on_owner.request_id, "retry-me");
    assert_eq!(n_of(on_owner.output), 5, "a retry sent to the owner itself");
    // Unnamed calls: a forward gets an id from the forwarding node; a call
    // run where it was received is not logged and has none.
    let forwarded = dispatcher(&m.clients[1])
        .dispatch(dispatch_req("Peek", "visits", 0, "counters"))
        .await
        .unwrap()
        .into_inner();
    assert!(forwarded.forwarded && !forwarded.request_id.is_empty());
    let local = dispatcher(&m.clients[2])
        .dispatch(dispatch_req("Peek", "visits", 0, "counters"))
        .await
        .unwrap()
        .into_inner();
    assert!(!local.forwarded && local.request_id.is_empty());
    assert_eq!(
        peek(&m.clients[1], "visits").await,
        5,
        "and did not run again"
    );
    req.input = Some(msg("other", 0));
    let e = dispatcher(&m.clients[1]).dispatch(req).await.unwrap_err();
    assert_eq!(
        e.code(),
        tonic::Code::InvalidArgument,
        "an id reused for another call"
    );

    // A service registered only on A is callable through C (no collection).
    let r = dispatcher(&m.clients[2])
        .dispatch(proto::DispatchRequest {
            target_node: m.ids[1].clone(),
            ..dispatch_req("Peek", "visits", 0, "")
        })
        .await
        .unwrap_err();
    // B has the handler fetched now, but not the collection: the handler says so.
    assert_eq!(r.code(), tonic::Code::NotFound, "{r:?}");
}

#[tokio::test]
async fn a_new_registration_reaches_the_copies() {
    let mut m = Mesh::start(3).await;
    let first = m.register_counter(0).await;
    m.create_counters(2).await;
    m.converge(2, 0).await;
    dispatcher(&m.clients[1])
        .dispatch(dispatch_req("Incr", "v", 0, "counters"))
        .await
        .unwrap();
    // Re-register on B with another component for the same service (echo
    // answers Peek with its input, so the new version is recognisable).
    register_proto(&mut m.clients[1]).await;
    let second = m.clients[1]
        .registry
        .register_service(proto::RegisterServiceRequest {
            namespace: "shop".into(),
            service: "t.Counter".into(),
            component: collector_tests::guest("echo"),
            grants: vec![],
            limits: None,
        })
        .await
        .unwrap()
        .into_inner()
        .sha256;
    assert_ne!(first, second);
    // Every holder (A, where it was first registered, and C, which fetched it)
    // follows the newest version.
    for c in &m.clients {
        let mut r = c.registry.clone();
        let t = Instant::now();
        loop {
            let info = r
                .lookup_service(proto::LookupServiceRequest {
                    namespace: "shop".into(),
                    service: "t.Counter".into(),
                })
                .await
                .unwrap()
                .into_inner();
            if info.sha256 == second {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "the copy never followed"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let r = dispatcher(&m.clients[0])
        .dispatch(dispatch_req("Peek", "absent", 42, "counters"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        n_of(r.output),
        42,
        "echo returns its input (the counter would say 0)"
    );
    // Unregistering on A removes it everywhere.
    m.clients[0]
        .registry
        .unregister_service(proto::UnregisterServiceRequest {
            namespace: "shop".into(),
            service: "t.Counter".into(),
        })
        .await
        .unwrap();
    for c in &m.clients {
        let mut r = c.registry.clone();
        let t = Instant::now();
        while r
            .lookup_service(proto::LookupServiceRequest {
                namespace: "shop".into(),
                service: "t.Counter".into(),
            })
            .await
            .is_ok()
        {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "the copy was never removed"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let e = dispatcher(&m.clients[1])
        .dispatch(dispatch_req("Peek", "v", 0, "counters"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unimplemented, "{e:?}");
}

#[tokio::test]
async fn a_peer_killed_mid_call_fails_fast_runs_nothing_twice_and_rejoins() {
    let mut m = Mesh::start(3).await;
    m.register_counter(0).await;
    m.create_counters(2).await;
    m.converge(2, 0).await;
    assert_eq!(
        n_of(
            dispatcher(&m.clients[1])
                .dispatch(dispatch_req("Incr", "slow", 0, "counters"))
                .await
                .unwrap()
                .into_inner()
                .output
        ),
        1
    );

    // A forwarded call still running at its deadline is DEADLINE_EXCEEDED
    // (it once came back UNAVAILABLE), and leaves nothing.
    let mut req = tonic::Request::new(dispatch_req("IncrSlowly", "late", 2000, "counters"));
    req.set_timeout(Duration::from_millis(400));
    let e = dispatcher(&m.clients[1]).dispatch(req).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::DeadlineExceeded, "{e:?}");
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(peek(&m.clients[2], "late").await, 0);

    // A 3 s call on C, through B, with a 30 s deadline; C dies after 0.7 s.
    let mut d = dispatcher(&m.clients[1]);
    let call = tokio::spawn(async move {
        let mut req = tonic::Request::new(dispatch_req("IncrSlowly", "slow", 3000, "counters"));
        req.set_timeout(Duration::from_secs(30));
        let t = Instant::now();
        (d.dispatch(req).await, t.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    m.nodes[2].kill9();
    let (r, took) = call.await.unwrap();
    let e = r.expect_err("the node running the call died");
    assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
    assert!(
        took < Duration::from_secs(5),
        "failed fast, not at the deadline: {took:?}"
    );

    // While C is down, calls for its data are UNAVAILABLE (never run elsewhere).
    let e = dispatcher(&m.clients[0])
        .dispatch(dispatch_req("Incr", "slow", 0, "counters"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");

    // C restarts on its address and data dir: it rejoins with its collection.
    m.restart(2).await;
    let cid = m.ids[2].clone();
    for c in &m.clients {
        wait_for(
            c,
            "C is back with its collection",
            Duration::from_secs(20),
            |ps| {
                all_up(ps, 3)
                    && ps.iter().any(|p| {
                        p.node_id == cid && p.collections.iter().any(|c| c.name == "counters")
                    })
            },
        )
        .await;
    }
    // The interrupted call left nothing and was not run again.
    assert_eq!(peek(&m.clients[0], "slow").await, 1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(peek(&m.clients[1], "slow").await, 1);
}

#[tokio::test]
async fn a_stopped_peer_is_marked_dead_and_calls_fail_fast() {
    let mut m = Mesh::start(3).await;
    m.register_counter(0).await;
    m.create_counters(2).await;
    m.converge(2, 0).await;
    dispatcher(&m.clients[1])
        .dispatch(dispatch_req("Incr", "warm", 0, "counters"))
        .await
        .expect("C has the handler");
    // A call in flight, without a deadline, when C stops: it fails once C is
    // declared dead instead of hanging.
    let mut d = dispatcher(&m.clients[1]);
    let hung = tokio::spawn(async move {
        let t = Instant::now();
        let r = d
            .dispatch(dispatch_req("IncrSlowly", "hung", 1000, "counters"))
            .await;
        (r, t.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    m.nodes[2].signal("STOP");
    let cid = m.ids[2].clone();
    let took = wait_for(
        &m.clients[1],
        "C is marked dead",
        Duration::from_secs(20),
        |ps| state_of(ps, &cid) == Some(proto::PeerState::Dead),
    )
    .await;
    eprintln!("a stopped node was marked dead after {took:?}");
    let (r, hung_for) = tokio::time::timeout(Duration::from_secs(20), hung)
        .await
        .expect("the call in flight ends")
        .unwrap();
    let e = r.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
    eprintln!("the call in flight failed after {hung_for:?}");
    let t = Instant::now();
    let mut req = tonic::Request::new(dispatch_req("Incr", "x", 0, "counters"));
    req.set_timeout(Duration::from_secs(20));
    let e = dispatcher(&m.clients[1]).dispatch(req).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "fails fast: {:?}",
        t.elapsed()
    );
    let e = m.clients[1]
        .records
        .get(proto::GetRequest {
            namespace: "shop".into(),
            collection: "counters".into(),
            id: "x".into(),
            include_json: false,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");

    m.nodes[2].signal("CONT");
    wait_for(
        &m.clients[1],
        "C is alive again",
        Duration::from_secs(20),
        |ps| state_of(ps, &cid) == Some(proto::PeerState::Alive),
    )
    .await;
    let r = dispatcher(&m.clients[1])
        .dispatch(dispatch_req("Incr", "x", 0, "counters"))
        .await
        .expect("C serves again")
        .into_inner();
    assert_eq!(r.node_id, cid);
}

#[tokio::test]
async fn a_forwarded_call_is_never_forwarded_again() {
    let mut m = Mesh::start(3).await;
    m.register_counter(0).await;
    m.create_counters(2).await;
    m.converge(2, 0).await;
    // As if another node had forwarded these to B, which does not own counters.
    let mut req = tonic::Request::new(dispatch_req("Incr", "loop", 0, "counters"));
    req.metadata_mut()
        .insert("x-collector-hop", "1".parse().unwrap());
    collector_tests::as_member(&mut req);
    let e = dispatcher(&m.clients[1]).dispatch(req).await.unwrap_err();
    // B ran it itself (after fetching the handler): the collection is not there.
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    let mut req = tonic::Request::new(proto::GetRequest {
        namespace: "shop".into(),
        collection: "counters".into(),
        id: "loop".into(),
        include_json: false,
    });
    req.metadata_mut()
        .insert("x-collector-hop", "1".parse().unwrap());
    collector_tests::as_member(&mut req);
    let e = m.clients[1].records.get(req).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    // Nothing ran on C.
    assert_eq!(peek(&m.clients[2], "loop").await, 0);

    // Auto placement puts a new collection on the node rendezvous hashing
    // picks, with its type; every node agrees on the owner.
    let info = m.clients[0]
        .repo
        .create_collection(proto::CreateCollectionRequest {
            namespace: "shop".into(),
            name: "placed".into(),
            message_type: "t.Msg".into(),
            placement: proto::Placement::Auto as i32,
            ..Default::default()
        })
        .await
        .expect("auto placement")
        .into_inner();
    assert!(m.ids.contains(&info.node_id));
    for c in &m.clients {
        let mut r = c.repo.clone();
        let t = Instant::now();
        loop {
            match r
                .route(proto::RouteRequest {
                    namespace: "shop".into(),
                    name: "placed".into(),
                })
                .await
            {
                Ok(route) if route.get_ref().node_id == info.node_id => break,
                _ if t.elapsed() < Duration::from_secs(20) => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                other => panic!("route never converged: {other:?}"),
            }
        }
    }
    // The name is taken mesh-wide.
    let other = m.ids.iter().position(|id| *id != info.node_id).unwrap();
    let e = m.clients[other]
        .repo
        .create_collection(proto::CreateCollectionRequest {
            namespace: "shop".into(),
            name: "placed".into(),
            message_type: "t.Msg".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::AlreadyExists, "{e:?}");
}
