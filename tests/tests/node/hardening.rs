//! Inputs that once ended or corrupted a node: each is refused with
//! INVALID_ARGUMENT, and the node keeps serving.

use collector::proto;
use collector_tests::{Clients, TestNode};
use prost::Message;
use tonic::Code;

const DEEP_PROTO: &str = r#"
syntax = "proto3";
package deep;
import "google/protobuf/any.proto";
message Box { google.protobuf.Any inner = 1; string name = 2; }
message Node { Node a = 1; string name = 2; }
"#;

/// deep.Box, by hand.
#[derive(Clone, PartialEq, prost::Message)]
struct Box {
    #[prost(message, optional, tag = "1")]
    inner: Option<prost_types::Any>,
    #[prost(string, tag = "2")]
    name: String,
}

const BOX_URL: &str = "type.googleapis.com/deep.Box";

/// Registers one .proto source in namespace `deep`.
async fn register_proto(c: &mut Clients, name: &str, content: String) -> Result<(), tonic::Status> {
    c.registry
        .register_proto(proto::RegisterProtoRequest {
            namespace: "deep".into(),
            sources: vec![proto::ProtoSource {
                name: name.into(),
                content,
            }],
            ..Default::default()
        })
        .await
        .map(|_| ())
}

/// Creates collection `name` of type `ty` in namespace `deep`.
async fn create_collection(c: &mut Clients, name: &str, ty: &str) {
    c.repo
        .create_collection(proto::CreateCollectionRequest {
            namespace: "deep".into(),
            name: name.into(),
            message_type: ty.into(),
            ..Default::default()
        })
        .await
        .unwrap();
}

async fn setup(c: &mut Clients) {
    register_proto(c, "deep.proto", DEEP_PROTO.into())
        .await
        .unwrap();
    create_collection(c, "boxes", "deep.Box").await;
    create_collection(c, "nodes", "deep.Node").await;
}

/// A Box holding Anys of Boxes `levels` deep.
fn nested_any(levels: usize) -> prost_types::Any {
    let mut b = Box {
        inner: None,
        name: "bottom".into(),
    };
    for _ in 0..levels {
        b = Box {
            inner: Some(prost_types::Any {
                type_url: BOX_URL.into(),
                value: b.encode_to_vec(),
            }),
            name: String::new(),
        };
    }
    prost_types::Any {
        type_url: BOX_URL.into(),
        value: b.encode_to_vec(),
    }
}

async fn create(
    c: &mut Clients,
    collection: &str,
    rec: proto::Record,
) -> Result<String, tonic::Status> {
    c.records
        .create(proto::CreateRequest {
            namespace: "deep".into(),
            collection: collection.into(),
            record: Some(rec),
        })
        .await
        .map(|r| r.into_inner().id)
}

#[tokio::test]
async fn an_any_nested_past_the_limit_is_refused_and_the_node_keeps_serving() {
    let mut n = TestNode::start().await;
    let c = &mut n.clients;
    setup(c).await;
    // ~7,000 levels overflowed the stack while rendering JSON.
    for levels in [7_000, 200] {
        let e = create(
            c,
            "boxes",
            proto::Record {
                data: Some(nested_any(levels)),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{levels} levels: {e:?}");
        assert!(e.message().contains("nested"), "{e:?}");
    }
    // Within the limit it is stored and reads back, JSON included.
    let id = create(
        c,
        "boxes",
        proto::Record {
            data: Some(nested_any(40)),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let got = c
        .records
        .get(proto::GetRequest {
            namespace: "deep".into(),
            collection: "boxes".into(),
            id,
            include_json: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(got.json.contains("bottom"), "{}", got.json);
}

#[tokio::test]
async fn an_update_mask_path_past_the_limit_is_refused_and_one_within_reads_back() {
    let mut n = TestNode::start().await;
    let c = &mut n.clients;
    setup(c).await;
    let id = create(
        c,
        "nodes",
        proto::Record {
            json: r#"{"name": "root"}"#.into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let update = |parts: usize| proto::UpdateRequest {
        namespace: "deep".into(),
        collection: "nodes".into(),
        record: Some(proto::Record {
            id: id.clone(),
            json: "{}".into(),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec![format!("data{}", ".a".repeat(parts))],
        }),
        expected_version: None,
    };
    // 3,000 levels overflowed the writer thread; 1,000 stored a record
    // that could not be decoded again.
    for parts in [3_000, 1_000, 150] {
        let e = c.records.update(update(parts)).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{parts}: {e:?}");
        assert!(e.message().len() < 400, "the path is not echoed whole");
    }
    c.records.update(update(90)).await.unwrap();
    let got = c
        .records
        .get(proto::GetRequest {
            namespace: "deep".into(),
            collection: "nodes".into(),
            id: id.clone(),
            include_json: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.version, 2);
}

#[tokio::test]
async fn a_proto_nested_past_the_limit_is_refused_before_it_is_compiled() {
    let mut n = TestNode::start().await;
    let c = &mut n.clients;
    let deep_option = format!(
        "syntax = \"proto3\"; package opt;\n\
         import \"google/protobuf/descriptor.proto\";\n\
         message Tree {{ Tree t = 1; }}\n\
         extend google.protobuf.MessageOptions {{ Tree tree = 50000; }}\n\
         message M {{ option (tree) = {}{}; }}\n",
        "{ t: ".repeat(1000),
        "}".repeat(1000)
    );
    let deep_messages = format!(
        "syntax = \"proto3\"; package nest;\n{} string s = 1; {}",
        "message A { ".repeat(1000),
        "}".repeat(1000)
    );
    for (name, src) in [("opt.proto", deep_option), ("nest.proto", deep_messages)] {
        let e = register_proto(c, name, src).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{name}: {e:?}");
        assert!(e.message().contains("nested more than"), "{e:?}");
    }
    // Braces in strings and comments do not count, and the node still compiles.
    let fine = format!(
        "syntax = \"proto3\"; package fine;\n// {}\nmessage M {{ string s = 1 [json_name = \"{}\"]; }}\n",
        "{".repeat(500),
        "(".repeat(500)
    );
    register_proto(c, "fine.proto", fine).await.unwrap();
}

/// guestbook.Entry, by hand.
#[derive(Clone, PartialEq, prost::Message)]
struct Entry {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(string, tag = "2")]
    text: String,
}

/// A handler's writes obey the record size limit like any client's: a
/// 20 MiB record written by a handler was stored and could never be read.
#[tokio::test]
async fn a_handler_cannot_store_a_record_over_the_size_limit() {
    let mut n = TestNode::start().await;
    let c = &mut n.clients;
    c.register_guest_proto("deep", "guestbook").await;
    create_collection(c, "entries", "guestbook.Entry").await;
    c.registry
        .register_service(proto::RegisterServiceRequest {
            namespace: "deep".into(),
            service: "guestbook.Guestbook".into(),
            component: collector_tests::guest("guestbook"),
            grants: vec![proto::Grant {
                collection: "entries".into(),
                read_only: false,
            }],
            limits: None,
        })
        .await
        .unwrap();
    let big = Entry {
        name: "ada".into(),
        text: "x".repeat(9 << 20),
    };
    let e = c
        .call::<Entry>("deep", "/guestbook.Guestbook/Sign", &big)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("the limit is"), "{e:?}");
    let small = Entry {
        name: "ada".into(),
        text: "hi".into(),
    };
    let out = c
        .call::<Entry>("deep", "/guestbook.Guestbook/Sign", &small)
        .await
        .unwrap();
    assert_eq!(out, small);
}

/// 400 silent connections were once held open for 91 s, none closed. Now a
/// client address gets at most 256, and a connection that sends nothing is
/// closed after the handshake timeout, after which clients get in again.
#[tokio::test]
async fn silent_and_excess_connections_are_closed() {
    use tokio::io::AsyncReadExt;
    let n = TestNode::start().await;
    let addr = n.handle.as_ref().unwrap().addr;
    let max = collector::limits::MAX_CONNECTIONS_PER_CLIENT;
    // The test's own client holds one connection already.
    let mut held = Vec::new();
    for _ in 0..max + 8 {
        held.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    // Reads what the server sends (its HTTP/2 settings) until it closes.
    async fn closed_within(s: &mut tokio::net::TcpStream, wait: std::time::Duration) -> bool {
        let mut b = [0u8; 256];
        tokio::time::timeout(wait, async {
            loop {
                match s.read(&mut b).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await
        .is_ok()
    }
    // The excess ones are closed at once.
    let mut closed = 0;
    for s in held.iter_mut().rev().take(8) {
        if closed_within(s, std::time::Duration::from_secs(5)).await {
            closed += 1;
        }
    }
    assert!(
        closed >= 7,
        "only {closed} of the excess connections were closed"
    );
    // The silent ones are closed after the handshake timeout.
    let wait = collector::limits::CONNECTION_HANDSHAKE_TIMEOUT + std::time::Duration::from_secs(5);
    assert!(
        closed_within(&mut held[0], wait).await,
        "a silent connection stayed open"
    );
    drop(held);
    // A new client gets answers.
    let mut c = collector_tests::Clients::connect(addr).await;
    c.repo
        .search_collections(proto::SearchCollectionsRequest {
            namespace: "deep".into(),
            ..Default::default()
        })
        .await
        .unwrap();
}

/// A request over the message limit is RESOURCE_EXHAUSTED on built-in and
/// registered methods alike (tonic says OUT_OF_RANGE).
#[tokio::test]
async fn a_request_over_the_message_limit_is_resource_exhausted() {
    let mut n = TestNode::start().await;
    let c = &mut n.clients;
    setup(c).await;
    let big = Box {
        inner: None,
        name: "x".repeat(collector::limits::MAX_MESSAGE_BYTES + 1024),
    };
    let rec = |b: &Box| proto::Record {
        data: Some(prost_types::Any {
            type_url: BOX_URL.into(),
            value: b.encode_to_vec(),
        }),
        ..Default::default()
    };
    let e = create(c, "boxes", rec(&big)).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("message limit"), "{e:?}");
    let e = c
        .call_raw("deep", "/deep.Nobody/Call", big.encode_to_vec())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    // Under the limit, the node answers as usual.
    let small = Box {
        inner: None,
        name: "ok".into(),
    };
    create(c, "boxes", rec(&small)).await.unwrap();
}

/// RegisterProto of a 6.5 MiB source once peaked at 4.8 GB: sources and
/// descriptor sets are bounded in bytes and files, and a set whose files
/// import themselves is refused.
#[tokio::test]
async fn registrations_are_bounded_before_they_are_compiled() {
    let mut n = TestNode::start().await;
    let c = &mut n.clients;
    let big = format!(
        "syntax = \"proto3\"; package big; message M {{ string a = 1; }}\n// {}",
        "x".repeat(collector::limits::MAX_PROTO_BYTES)
    );
    let e = register_proto(c, "big.proto", big).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("MAX_PROTO_BYTES"), "{e:?}");
    let many = (0..=collector::limits::MAX_PROTO_FILES)
        .map(|i| proto::ProtoSource {
            name: format!("f{i}.proto"),
            content: format!("syntax = \"proto3\"; package p{i};"),
        })
        .collect();
    let e = c
        .registry
        .register_proto(proto::RegisterProtoRequest {
            namespace: "deep".into(),
            sources: many,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    // a.proto imports b.proto, which imports a.proto.
    let file = |name: &str, dep: &str| prost_types::FileDescriptorProto {
        name: Some(name.into()),
        package: Some("cyc".into()),
        dependency: vec![dep.into()],
        syntax: Some("proto3".into()),
        ..Default::default()
    };
    let e = c
        .registry
        .register_proto(proto::RegisterProtoRequest {
            namespace: "deep".into(),
            file_set: Some(prost_types::FileDescriptorSet {
                file: vec![file("a.proto", "b.proto"), file("b.proto", "a.proto")],
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("depends on itself"), "{e:?}");
    let e = c
        .registry
        .register_proto(proto::RegisterProtoRequest {
            namespace: "deep".into(),
            file_set: Some(prost_types::FileDescriptorSet {
                file: vec![file("self.proto", "self.proto")],
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    // The node still registers ordinary files.
    setup(c).await;
}

const ECHO_PROTO: &str = r#"syntax = "proto3"; package gc;
message Msg { string text = 1; int64 n = 2; }
service Echo { rpc Say(Msg) returns (Msg); }"#;

async fn register_echo(c: &mut Clients, component: Vec<u8>) -> Result<(), tonic::Status> {
    c.registry
        .register_service(proto::RegisterServiceRequest {
            namespace: "deep".into(),
            service: "gc.Echo".into(),
            component,
            grants: vec![],
            limits: None,
        })
        .await
        .map(|_| ())
}

/// Components are checked before they are compiled, and components no
/// version uses any more are deleted (20 re-registrations of a 15 MiB
/// component once left 300 MB behind).
#[tokio::test]
async fn components_are_checked_before_compiling_and_unused_ones_deleted() {
    let mut n = TestNode::start().await;
    register_proto(&mut n.clients, "gc.proto", ECHO_PROTO.into())
        .await
        .unwrap();
    let c = &mut n.clients;
    // An empty but valid component (header only): no `handle`.
    let empty = vec![0, b'a', b's', b'm', 0x0d, 0, 0x01, 0];
    let core = vec![0, b'a', b's', b'm', 1, 0, 0, 0];
    let huge = {
        let mut v = empty.clone();
        v.resize(collector::limits::MAX_COMPONENT_BYTES + 1, 0);
        v
    };
    for (bad, says) in [
        (empty, "handle"),
        (core, "core WebAssembly module"),
        (huge, "MAX_COMPONENT_BYTES"),
    ] {
        let e = register_echo(c, bad).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains(says), "{e:?}");
    }
    assert_eq!(
        n.handle.as_ref().unwrap().components_compiled(),
        0,
        "nothing was compiled for them"
    );
    let stored = |n: &TestNode| {
        let mut names: Vec<String> = std::fs::read_dir(n.dir.path().join("components"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let echo = collector_tests::guest("echo");
    let other = collector_tests::guest("chatty");
    register_echo(&mut n.clients, echo.clone()).await.unwrap();
    let first = stored(&n);
    assert_eq!(
        first.len(),
        2,
        "the component and its compiled form: {first:?}"
    );
    for _ in 0..3 {
        register_echo(&mut n.clients, other.clone()).await.unwrap();
        register_echo(&mut n.clients, echo.clone()).await.unwrap();
    }
    assert_eq!(stored(&n), first, "only the version in use is kept");
    n.clients
        .registry
        .unregister_service(proto::UnregisterServiceRequest {
            namespace: "deep".into(),
            service: "gc.Echo".into(),
        })
        .await
        .unwrap();
    assert!(stored(&n).is_empty(), "{:?}", stored(&n));
}

/// A node out of file descriptors says so (UNAVAILABLE, naming what ran
/// out), never INTERNAL, keeps its accepted clients, and recovers once
/// descriptors are free again.
#[tokio::test]
async fn a_node_out_of_file_descriptors_answers_unavailable_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let node = collector_tests::ProcessNode::start_with_max_files(
        env!("CARGO_BIN_EXE_collector-node"),
        dir.path(),
        96,
    );
    let mut c = Clients::connect(node.addr).await;
    register_proto(&mut c, "deep.proto", DEEP_PROTO.into())
        .await
        .unwrap();
    // Connections take the descriptors that are left (the kernel queues the
    // rest until the node can accept them again).
    let mut held = Vec::new();
    for _ in 0..150 {
        held.push(tokio::net::TcpStream::connect(node.addr).await.unwrap());
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let mut refused = None;
    for i in 0..20 {
        match c
            .repo
            .create_collection(proto::CreateCollectionRequest {
                namespace: "deep".into(),
                name: format!("starved{i}"),
                message_type: "deep.Box".into(),
                ..Default::default()
            })
            .await
        {
            Ok(_) => continue,
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    let e = refused.expect("a node with 96 descriptors ran out");
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(
        e.message().contains("file descriptors"),
        "says what ran out: {e:?}"
    );
    drop(held);
    // Descriptors free again: the node creates collections and accepts new
    // clients.
    let mut ok = false;
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        if c.repo
            .create_collection(proto::CreateCollectionRequest {
                namespace: "deep".into(),
                name: "fed".into(),
                message_type: "deep.Box".into(),
                ..Default::default()
            })
            .await
            .is_ok()
        {
            ok = true;
            break;
        }
    }
    assert!(ok, "the node recovered");
    let mut fresh = Clients::connect(node.addr).await;
    create_collection(&mut fresh, "after", "deep.Box").await;
}

/// A node whose standard output and error are closed before it prints a
/// line (`collector serve | head -1` after head exits, a supervisor that
/// closes the pipe) keeps serving: its banner and logs fail quietly, not
/// the process.
#[tokio::test]
async fn a_node_whose_output_pipes_are_closed_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    collector_tests::prepare_dir(&data);
    // A free port (taken back just before the node binds it).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_collector-node"))
        .args(["serve", "--listen", &addr.to_string(), "--data-dir"])
        .arg(&data)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Closed before the node has written anything: every print fails.
    drop(child.stdout.take());
    drop(child.stderr.take());
    let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut c = loop {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the node exited when its output closed"
        );
        match tonic::transport::Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
        {
            Ok(ch) => break Clients::over(collector_tests::keyed(ch, collector_tests::TOKEN)),
            Err(_) => {
                assert!(std::time::Instant::now() < until, "the node never served");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    };
    c.register_shop("shop").await;
    c.create_orders("shop", "orders", &[]).await;
    assert_eq!(c.count("shop", "orders").await, 0);
    assert!(child.try_wait().unwrap().is_none(), "the node died");
    child.kill().unwrap();
    child.wait().unwrap();
}
