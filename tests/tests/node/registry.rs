use collector::proto;
use collector_tests::{SHOP_PROTO, TestNode};
use prost::Message;
use tonic::Code;

fn src(name: &str, content: &str) -> proto::ProtoSource {
    proto::ProtoSource {
        name: name.into(),
        content: content.into(),
    }
}

#[tokio::test]
async fn register_is_idempotent_and_conflicts_are_refused() {
    let mut n = TestNode::start().await;
    let r = &mut n.clients.registry;
    let first = r
        .register_proto(proto::RegisterProtoRequest {
            namespace: "shop".into(),
            sources: vec![src("shop.proto", SHOP_PROTO)],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.registered_files, vec!["shop.proto"]);
    assert!(first.message_types.contains(&"shop.Order".to_string()));
    let again = r
        .register_proto(proto::RegisterProtoRequest {
            namespace: "shop".into(),
            sources: vec![src("shop.proto", SHOP_PROTO)],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        again.registered_files.is_empty(),
        "identical file is a no-op"
    );

    let changed = SHOP_PROTO.replace("string note = 8;", "string note = 8; string extra = 10;");
    let e = r
        .register_proto(proto::RegisterProtoRequest {
            namespace: "shop".into(),
            sources: vec![src("shop.proto", &changed)],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists);
    let e = r
        .register_proto(proto::RegisterProtoRequest {
            namespace: "shop".into(),
            sources: vec![src(
                "other.proto",
                "syntax = \"proto3\"; package shop; message Order {}",
            )],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");

    // The same file compiled elsewhere (a FileDescriptorSet) is identical too.
    let got = r
        .get_proto(proto::GetProtoRequest {
            namespace: "shop".into(),
            target: Some(proto::get_proto_request::Target::Symbol(
                "shop.Order".into(),
            )),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.files[0].name(), "shop.proto");
    let set = prost_types::FileDescriptorSet {
        file: got.files.clone(),
    };
    let same = r
        .register_proto(proto::RegisterProtoRequest {
            namespace: "shop".into(),
            file_set: Some(set),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(same.registered_files.is_empty());

    // Imports of registered files and well-known types work.
    let importer = "syntax = \"proto3\"; package shop; import \"shop.proto\"; import \"google/protobuf/timestamp.proto\";\
                    message Invoice { Order order = 1; google.protobuf.Timestamp at = 2; }";
    r.register_proto(proto::RegisterProtoRequest {
        namespace: "shop".into(),
        sources: vec![src("invoice.proto", importer)],
        ..Default::default()
    })
    .await
    .unwrap();
    let list = r
        .list_protos(proto::ListProtosRequest {
            namespace: "shop".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let names: Vec<_> = list.files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    let inv = list
        .files
        .iter()
        .find(|f| f.name == "invoice.proto")
        .unwrap();
    assert_eq!(
        inv.dependencies,
        vec!["shop.proto", "google/protobuf/timestamp.proto"]
    );
    let with_deps = r
        .get_proto(proto::GetProtoRequest {
            namespace: "shop".into(),
            target: Some(proto::get_proto_request::Target::FileName(
                "invoice.proto".into(),
            )),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(with_deps.files.len(), 3);
}

#[tokio::test]
async fn every_error_is_reported_at_once() {
    let mut n = TestNode::start().await;
    let r = &mut n.clients.registry;
    let e = r
        .register_proto(proto::RegisterProtoRequest {
            namespace: "shop".into(),
            sources: vec![
                src(
                    "a.proto",
                    "syntax = \"proto3\"; package a; message A { strin x = 1; }",
                ),
                src(
                    "b.proto",
                    "syntax = \"proto3\"; package b; message B { int32 x = 1 }",
                ),
                src(
                    "ok.proto",
                    "syntax = \"proto3\"; package ok; message Fine {}",
                ),
            ],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().contains("a.proto") && e.message().contains("b.proto"),
        "{}",
        e.message()
    );
    assert!(
        e.message().contains("b.proto:1:"),
        "positions are given: {}",
        e.message()
    );
    let list = r
        .list_protos(proto::ListProtosRequest {
            namespace: "shop".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(list.files.is_empty(), "nothing was registered");

    // A broken descriptor set: a field of an unknown type.
    let mut bad = prost_types::FileDescriptorProto {
        name: Some("x.proto".into()),
        package: Some("x".into()),
        syntax: Some("proto3".into()),
        ..Default::default()
    };
    bad.message_type.push(prost_types::DescriptorProto {
        name: Some("X".into()),
        field: vec![prost_types::FieldDescriptorProto {
            name: Some("y".into()),
            number: Some(1),
            type_name: Some(".x.Missing".into()),
            r#type: Some(11),
            label: Some(1),
            ..Default::default()
        }],
        ..Default::default()
    });
    let e = r
        .register_proto(proto::RegisterProtoRequest {
            namespace: "shop".into(),
            file_set: Some(prost_types::FileDescriptorSet { file: vec![bad] }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("x.Missing"), "{}", e.message());

    // The system namespace is read-only; reserved and malformed namespaces are refused.
    let e = r
        .register_proto(proto::RegisterProtoRequest {
            namespace: "system".into(),
            sources: vec![src("s.proto", "syntax = \"proto3\"; package s;")],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    for ns in ["files", "Bad", "a/b"] {
        let e = r
            .register_proto(proto::RegisterProtoRequest {
                namespace: ns.into(),
                sources: vec![src("s.proto", "syntax = \"proto3\";")],
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{ns}");
    }
    let _ = prost_types::FileDescriptorSet::default().encode_to_vec();
}

#[tokio::test]
async fn a_service_that_is_not_registered_is_not_found_and_an_empty_name_is_invalid() {
    let n = TestNode::start().await;
    let mut r = n.clients.registry.clone();
    let lookup = |service: &str| proto::LookupServiceRequest {
        namespace: "shop".into(),
        service: service.into(),
    };
    let e = r.lookup_service(lookup("t.Nope")).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let e = r
        .unregister_service(proto::UnregisterServiceRequest {
            namespace: "shop".into(),
            service: "t.Nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let e = r.lookup_service(lookup("")).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    // A long name is not echoed whole.
    let e = r
        .lookup_service(lookup(&"x".repeat(100_000)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert!(e.message().len() < 400, "{} bytes", e.message().len());
}

/// A .proto of about `MAX_PROTO_BYTES`, `line(i)` repeated.
fn dense_proto(head: &str, line: impl Fn(usize) -> String) -> String {
    let mut s = format!("syntax = \"proto3\"; package p;\n{head}");
    let mut i = 0;
    while s.len() < collector::limits::MAX_PROTO_BYTES - 200 {
        s.push_str(&line(i));
        i += 1;
    }
    s
}

/// A descriptor set of about `MAX_PROTO_BYTES`: messages whose options are
/// still uninterpreted, with a source location for each.
fn dense_file_set() -> prost_types::FileDescriptorSet {
    use prost_types::{source_code_info::Location, uninterpreted_option::NamePart};
    let mut f = prost_types::FileDescriptorProto {
        name: Some("dense_set.proto".into()),
        package: Some("q".into()),
        syntax: Some("proto3".into()),
        source_code_info: Some(Default::default()),
        ..Default::default()
    };
    // Sizes summed as they grow: encoding the whole file each time is quadratic.
    let (mut i, mut size) = (0, 0);
    while size < collector::limits::MAX_PROTO_BYTES - 4096 {
        let m = prost_types::DescriptorProto {
            name: Some(format!("M{i}")),
            options: Some(prost_types::MessageOptions {
                uninterpreted_option: vec![prost_types::UninterpretedOption {
                    name: vec![NamePart {
                        name_part: "deprecated".into(),
                        is_extension: false,
                    }],
                    identifier_value: Some("true".into()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        size += m.encoded_len() + 4;
        f.message_type.push(m);
        for path in [vec![4, i], vec![4, i, 7, 999, 0]] {
            let l = Location {
                path,
                span: vec![i, 0, 10],
                ..Default::default()
            };
            size += l.encoded_len() + 4;
            f.source_code_info.as_mut().unwrap().location.push(l);
        }
        i += 1;
    }
    assert!(f.encoded_len() <= collector::limits::MAX_PROTO_BYTES);
    prost_types::FileDescriptorSet { file: vec![f] }
}

/// Registrations at the size limit, in the shapes that cost most: many tiny
/// definitions (memory), many options (compiling them was quadratic: 12 s),
/// many errors (reporting them was quadratic: minutes, and the message
/// outgrew clients' header limits, so they reported INTERNAL). Each must be
/// answered well inside a deadline, with a short message, and together they
/// must not take more than a few hundred MB (the first alone took 650 MB).
#[tokio::test]
async fn registrations_at_the_size_limit_compile_in_bounded_time_and_memory() {
    let dir = tempfile::tempdir().unwrap();
    let node =
        collector_tests::ProcessNode::start(env!("CARGO_BIN_EXE_collector-node"), dir.path());
    let mut r = collector_tests::Clients::connect(node.addr).await.registry;
    let before = node.peak_rss();
    let shapes = [
        (
            "messages",
            dense_proto("", |i| format!("message M{i} {{ int32 a = 1; }}\n")),
            Code::Ok,
        ),
        (
            "options",
            dense_proto("", |i| {
                format!(
                    "message O{i} {{ option deprecated = true; int32 a = 1 [deprecated = true]; }}\n"
                )
            }),
            Code::Ok,
        ),
        (
            "enum values",
            dense_proto("enum E { E0 = 0;\n", |i| {
                format!("E{} = {};\n", i + 1, i + 1)
            }) + "}\n",
            Code::Ok,
        ),
        (
            "undefined names",
            dense_proto("", |i| format!("message U{i} {{ Nope a = 1; }}\n")),
            Code::InvalidArgument,
        ),
        (
            "syntax errors",
            dense_proto("", |i| format!("message S{i} {{ int32 = ; }}\n")),
            Code::InvalidArgument,
        ),
    ];
    for (k, (shape, source, want)) in shapes.into_iter().enumerate() {
        let mut req = tonic::Request::new(proto::RegisterProtoRequest {
            namespace: format!("dense{k}"),
            sources: vec![src("dense.proto", &source)],
            ..Default::default()
        });
        req.set_timeout(std::time::Duration::from_secs(10));
        let got = r.register_proto(req).await;
        let code = got.as_ref().map_or_else(|e| e.code(), |_| Code::Ok);
        assert_eq!(code, want, "{shape}: {got:?}");
        if let Err(e) = got {
            let m = e.message();
            assert!(
                m.len() <= collector::limits::MAX_STATUS_MESSAGE_BYTES,
                "{shape}: {} bytes",
                m.len()
            );
            assert!(
                m.contains("more"),
                "{shape}: says how many it left out: {m}"
            );
        }
    }
    let set = dense_file_set();
    let mut req = tonic::Request::new(proto::RegisterProtoRequest {
        namespace: "denseset".into(),
        file_set: Some(set),
        ..Default::default()
    });
    req.set_timeout(std::time::Duration::from_secs(10));
    r.register_proto(req)
        .await
        .expect("the descriptor set registers");
    let grown = node.peak_rss().saturating_sub(before);
    assert!(
        // The registered types stay in memory (~40 MB each here), and one
        // compile at a time takes up to ~220 MB more.
        grown < 512 << 20,
        "registrations grew the node by {} MiB",
        grown >> 20
    );

    // What was registered is all there, and the options were applied.
    let files = r
        .get_proto(proto::GetProtoRequest {
            namespace: "dense1".into(),
            target: Some(proto::get_proto_request::Target::FileName(
                "dense.proto".into(),
            )),
        })
        .await
        .unwrap()
        .into_inner()
        .files;
    let options = files[0].message_type[7].options.clone().unwrap_or_default();
    assert_eq!(options.deprecated, Some(true), "{options:?}");
}

/// A namespace's type pool holds its own files and only the well-known
/// files they import; the other well-known types are still found there,
/// for collections and records, and all of it comes back after a restart.
#[tokio::test]
async fn well_known_types_work_beside_registered_ones_across_a_restart() {
    let mut n = TestNode::start().await;
    n.clients.register_shop("shop").await;
    n.clients
        .registry
        .register_proto(proto::RegisterProtoRequest {
            namespace: "shop".into(),
            sources: vec![proto::ProtoSource {
                name: "ev.proto".into(),
                content: r#"syntax = "proto3"; package ev;
import "google/protobuf/timestamp.proto";
message Event { string name = 1; google.protobuf.Timestamp at = 2; }"#
                    .into(),
            }],
            ..Default::default()
        })
        .await
        .unwrap();
    let made = [
        (
            "events",
            "ev.Event",
            r#"{"name": "launch", "at": "2026-12-07T10:00:00Z"}"#,
        ),
        (
            "notes",
            "google.protobuf.Struct",
            r#"{"tags": ["a", 1.5], "ok": true}"#,
        ),
    ];
    for (coll, ty, json) in made {
        n.clients
            .repo
            .create_collection(proto::CreateCollectionRequest {
                namespace: "shop".into(),
                name: coll.into(),
                message_type: ty.into(),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("{coll} of {ty}: {e:?}"));
        n.clients
            .records
            .create(proto::CreateRequest {
                namespace: "shop".into(),
                collection: coll.into(),
                record: Some(proto::Record {
                    id: "r".into(),
                    json: json.into(),
                    ..Default::default()
                }),
            })
            .await
            .unwrap_or_else(|e| panic!("a record of {ty}: {e:?}"));
    }
    for round in 0..2 {
        for (coll, _, json) in made {
            let r = n
                .clients
                .records
                .get(proto::GetRequest {
                    namespace: "shop".into(),
                    collection: coll.into(),
                    id: "r".into(),
                    include_json: true,
                })
                .await
                .unwrap()
                .into_inner();
            let got: serde_json::Value = serde_json::from_str(&r.json).unwrap();
            let want: serde_json::Value = serde_json::from_str(json).unwrap();
            assert_eq!(got, want, "{coll}, round {round}");
        }
        n.restart().await;
    }
}
