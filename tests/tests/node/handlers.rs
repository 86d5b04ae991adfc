use collector::proto;
use collector_tests::{Clients, Msg, TestNode, guest};
use prost::Message;
use tonic::Code;

const T_PROTO: &str = r#"syntax = "proto3"; package t;
message Msg { string text = 1; int64 n = 2; }
service Echo { rpc Say(Msg) returns (Msg); rpc Shout(Msg) returns (Msg); }
service Spin { rpc Run(Msg) returns (Msg); }
service Hog { rpc Eat(Msg) returns (Msg); }
service Nobody { rpc Call(Msg) returns (Msg); }
service Deep { rpc Run(Msg) returns (Msg); }
service BigOut { rpc Run(Msg) returns (Msg); }
service Snoop { rpc Run(Msg) returns (Msg); rpc Who(Msg) returns (Msg); }
service Chatty { rpc Run(Msg) returns (Msg); }"#;

async fn setup(c: &mut Clients, ns: &str) {
    c.registry
        .register_proto(proto::RegisterProtoRequest {
            namespace: ns.into(),
            sources: vec![proto::ProtoSource {
                name: "t.proto".into(),
                content: T_PROTO.into(),
            }],
            ..Default::default()
        })
        .await
        .unwrap();
}

async fn register(
    c: &mut Clients,
    ns: &str,
    service: &str,
    wasm: &str,
    timeout_ms: u32,
    memory_mib: u32,
) -> Result<proto::ServiceInfo, tonic::Status> {
    c.registry
        .register_service(proto::RegisterServiceRequest {
            namespace: ns.into(),
            service: service.into(),
            component: guest(wasm),
            grants: vec![],
            limits: Some(proto::HandlerLimits {
                timeout_ms,
                memory_mib,
            }),
        })
        .await
        .map(|r| r.into_inner())
}

/// Calls /service/method natively with raw bytes, in namespace `ns`.
async fn native(
    c: &Clients,
    ns: &str,
    path: &'static str,
    body: Vec<u8>,
) -> Result<Vec<u8>, tonic::Status> {
    c.call_raw(ns, path, body).await
}

#[tokio::test]
async fn a_registered_component_is_called_natively_and_via_serve() {
    let mut n = TestNode::start().await;
    let c = &mut n.clients;
    setup(c, "shop").await;
    // Not registered yet: Unimplemented everywhere.
    let msg = Msg {
        text: "hi".into(),
        n: 41,
    };
    assert_eq!(
        native(c, "shop", "/t.Echo/Say", msg.encode_to_vec())
            .await
            .unwrap_err()
            .code(),
        Code::Unimplemented
    );
    let info = register(c, "shop", "t.Echo", "echo", 0, 0).await.unwrap();
    assert_eq!(info.sha256.len(), 64);
    assert_eq!(info.methods, vec!["Say", "Shout"]);

    let out = native(c, "shop", "/t.Echo/Say", msg.encode_to_vec())
        .await
        .unwrap();
    assert_eq!(Msg::decode(out.as_slice()).unwrap(), msg);
    let mut d = collector::proto::collective_dispatcher_client::CollectiveDispatcherClient::new(
        c.channel.clone(),
    );
    let served = d
        .serve(proto::ServeRequest {
            namespace: "shop".into(),
            service: "t.Echo".into(),
            method: "Shout".into(),
            input: Some(prost_types::Any {
                type_url: "type.googleapis.com/t.Msg".into(),
                value: msg.encode_to_vec(),
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        served.output.as_ref().unwrap().type_url,
        "type.googleapis.com/t.Msg"
    );
    assert_eq!(
        Msg::decode(served.output.unwrap().value.as_slice()).unwrap(),
        msg
    );
    assert_eq!(served.node_id, n.handle.as_ref().unwrap().node_id);

    // Unknown methods and services, other namespaces, bad input.
    for path in ["/t.Echo/Nope", "/t.Nobody/Call", "/nope.X/Y"] {
        assert_eq!(
            native(c, "shop", path, vec![]).await.unwrap_err().code(),
            Code::Unimplemented,
            "{path}"
        );
    }
    assert_eq!(
        native(c, "default", "/t.Echo/Say", vec![])
            .await
            .unwrap_err()
            .code(),
        Code::Unimplemented,
        "other namespace"
    );
    let bad = native(c, "shop", "/t.Echo/Say", vec![0x0a, 0xff])
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument, "{bad:?}");
    let wrong_type = d
        .serve(proto::ServeRequest {
            namespace: "shop".into(),
            service: "t.Echo".into(),
            method: "Say".into(),
            input: Some(prost_types::Any {
                type_url: "type.googleapis.com/t.Other".into(),
                value: vec![],
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(wrong_type.code(), Code::InvalidArgument);

    // Registry views.
    let listed = c
        .registry
        .list_services(proto::ListServicesRequest {
            namespace: "shop".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        listed
            .services
            .iter()
            .map(|s| s.service.as_str())
            .collect::<Vec<_>>(),
        vec!["t.Echo"]
    );
    let v = c
        .registry
        .validate_method(proto::ValidateMethodRequest {
            namespace: "shop".into(),
            service: "t.Echo".into(),
            method: "Say".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v.input_type, "t.Msg");
    let e = c
        .registry
        .validate_method(proto::ValidateMethodRequest {
            namespace: "shop".into(),
            service: "t.Echo".into(),
            method: "No".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unimplemented);
    c.registry
        .unregister_service(proto::UnregisterServiceRequest {
            namespace: "shop".into(),
            service: "t.Echo".into(),
        })
        .await
        .unwrap();
    assert_eq!(
        native(c, "shop", "/t.Echo/Say", msg.encode_to_vec())
            .await
            .unwrap_err()
            .code(),
        Code::Unimplemented
    );
}

#[tokio::test]
async fn bad_uploads_are_refused_and_leave_the_old_version_serving() {
    let mut n = TestNode::start().await;
    let c = &mut n.clients;
    setup(c, "shop").await;
    register(c, "shop", "t.Echo", "echo", 0, 0).await.unwrap();
    let garbage = c
        .registry
        .register_service(proto::RegisterServiceRequest {
            namespace: "shop".into(),
            service: "t.Echo".into(),
            component: b"\0asm garbage".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(garbage.code(), Code::InvalidArgument, "{garbage:?}");
    let out = native(
        c,
        "shop",
        "/t.Echo/Say",
        Msg {
            text: "still".into(),
            n: 1,
        }
        .encode_to_vec(),
    )
    .await
    .unwrap();
    assert_eq!(Msg::decode(out.as_slice()).unwrap().text, "still");
    // A service no .proto declares; the read-only system namespace.
    assert_eq!(
        register(c, "shop", "t.Undeclared", "echo", 0, 0)
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    assert_eq!(
        register(c, "system", "t.Echo", "echo", 0, 0)
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );
}

#[tokio::test]
async fn hostile_guests_are_stopped_while_the_node_keeps_serving() {
    let mut n = TestNode::start().await;
    let c = &mut n.clients;
    setup(c, "shop").await;
    register(c, "shop", "t.Echo", "echo", 0, 0).await.unwrap();
    register(c, "shop", "t.Spin", "spin", 300, 0).await.unwrap();
    register(c, "shop", "t.Hog", "hog", 0, 16).await.unwrap();
    let (spin, hog, echo) = tokio::join!(
        native(c, "shop", "/t.Spin/Run", vec![]),
        native(c, "shop", "/t.Hog/Eat", vec![]),
        native(
            c,
            "shop",
            "/t.Echo/Say",
            Msg {
                text: "alive".into(),
                n: 0
            }
            .encode_to_vec()
        ),
    );
    assert_eq!(spin.unwrap_err().code(), Code::DeadlineExceeded);
    assert_eq!(hog.unwrap_err().code(), Code::ResourceExhausted);
    assert_eq!(Msg::decode(echo.unwrap().as_slice()).unwrap().text, "alive");

    register(c, "shop", "t.Deep", "deep", 0, 0).await.unwrap();
    register(c, "shop", "t.BigOut", "bigout", 0, 0)
        .await
        .unwrap();
    register(c, "shop", "t.Snoop", "snoop", 0, 0).await.unwrap();
    register(c, "shop", "t.Chatty", "chatty", 0, 0)
        .await
        .unwrap();
    let (deep, big, snoop, chatty, echo) = tokio::join!(
        native(c, "shop", "/t.Deep/Run", vec![]),
        native(c, "shop", "/t.BigOut/Run", vec![]),
        native(c, "shop", "/t.Snoop/Run", vec![]),
        native(c, "shop", "/t.Chatty/Run", vec![]),
        native(
            c,
            "shop",
            "/t.Echo/Say",
            Msg {
                text: "still alive".into(),
                n: 0
            }
            .encode_to_vec()
        ),
    );
    // A Rust guest's stack lives in its linear memory: runaway recursion
    // ends in an out-of-bounds trap, reported as the handler's crash.
    let deep = deep.unwrap_err();
    assert_eq!(deep.code(), Code::Internal, "deep recursion: {deep:?}");
    assert!(
        deep.message().contains("trapped") && deep.message().len() < 200,
        "{}",
        deep.message()
    );
    let big = big.unwrap_err();
    assert_eq!(big.code(), Code::ResourceExhausted, "huge output: {big:?}");
    let chatty = chatty.unwrap_err();
    assert_eq!(
        chatty.code(),
        Code::ResourceExhausted,
        "host-call loop: {chatty:?}"
    );
    assert!(
        chatty.message().contains("host calls"),
        "{}",
        chatty.message()
    );
    let found = Msg::decode(snoop.unwrap().as_slice()).unwrap().text;
    assert_eq!(
        found, "",
        "no env, args, files or writable dirs are reachable; found {found:?}"
    );
    assert_eq!(
        Msg::decode(echo.unwrap().as_slice()).unwrap().text,
        "still alive"
    );
}

#[tokio::test]
async fn handlers_survive_a_restart_without_recompiling() {
    let mut n = TestNode::start().await;
    setup(&mut n.clients, "shop").await;
    register(&mut n.clients, "shop", "t.Echo", "echo", 0, 0)
        .await
        .unwrap();
    assert_eq!(n.handle.as_ref().unwrap().components_compiled(), 1);
    n.restart().await;
    assert_eq!(
        n.handle.as_ref().unwrap().components_compiled(),
        0,
        "loaded from the compiled cache"
    );
    let out = native(
        &n.clients,
        "shop",
        "/t.Echo/Say",
        Msg {
            text: "back".into(),
            n: 2,
        }
        .encode_to_vec(),
    )
    .await
    .unwrap();
    assert_eq!(Msg::decode(out.as_slice()).unwrap().text, "back");
    // Re-registering the same bytes reuses the cache too.
    register(&mut n.clients, "shop", "t.Echo", "echo", 0, 0)
        .await
        .unwrap();
    assert_eq!(n.handle.as_ref().unwrap().components_compiled(), 0);
}

async fn register_counter(
    c: &mut Clients,
    grants: Vec<proto::Grant>,
) -> Result<proto::ServiceInfo, tonic::Status> {
    c.registry
        .register_service(proto::RegisterServiceRequest {
            namespace: "shop".into(),
            service: "t.Counter".into(),
            component: guest("counter"),
            grants,
            limits: None,
        })
        .await
        .map(|r| r.into_inner())
}

/// Registers T_PROTO plus a Counter service with `methods`, and creates the
/// t.Msg collections `counters` and `secret` in namespace shop.
async fn setup_counter(c: &mut Clients, methods: &[&str]) {
    let rpcs: String = methods
        .iter()
        .map(|m| format!("rpc {m}(Msg) returns (Msg); "))
        .collect();
    c.registry
        .register_proto(proto::RegisterProtoRequest {
            namespace: "shop".into(),
            sources: vec![proto::ProtoSource {
                name: "t.proto".into(),
                content: format!("{T_PROTO}\nservice Counter {{ {rpcs}}}"),
            }],
            ..Default::default()
        })
        .await
        .unwrap();
    for name in ["counters", "secret"] {
        c.repo
            .create_collection(proto::CreateCollectionRequest {
                namespace: "shop".into(),
                name: name.into(),
                message_type: "t.Msg".into(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn handlers_reach_granted_collections_only() {
    let mut n = TestNode::start().await;
    let c = &mut n.clients;
    setup_counter(
        c,
        &[
            "Incr",
            "Peek",
            "Sneak",
            "IncrThenFail",
            "IncrThenTrap",
            "IncrTwice",
        ],
    )
    .await;
    let rw = proto::Grant {
        collection: "counters".into(),
        read_only: false,
    };
    register_counter(c, vec![rw]).await.unwrap();
    let key = || {
        Msg {
            text: "visits".into(),
            n: 0,
        }
        .encode_to_vec()
    };
    for want in 1..=3 {
        let out = native(c, "shop", "/t.Counter/Incr", key()).await.unwrap();
        assert_eq!(Msg::decode(out.as_slice()).unwrap().n, want);
    }
    // The handler's writes are ordinary records, visible through the API.
    let rec = c
        .records
        .get(proto::GetRequest {
            namespace: "shop".into(),
            collection: "counters".into(),
            id: "visits".into(),
            include_json: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rec.version, 3);
    assert!(rec.json.contains(r#""n":3"#), "{}", rec.json);
    // invoke: a handler calls another method of its namespace.
    let twice = Msg {
        text: "twice".into(),
        n: 0,
    }
    .encode_to_vec();
    let out = native(c, "shop", "/t.Counter/IncrTwice", twice)
        .await
        .unwrap();
    assert_eq!(
        Msg::decode(out.as_slice()).unwrap().n,
        2,
        "two nested Incr calls"
    );
    // A call that fails or traps after writing leaves nothing behind.
    let e = native(c, "shop", "/t.Counter/IncrThenFail", key())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Internal);
    let e = native(c, "shop", "/t.Counter/IncrThenTrap", key())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Internal);
    let fresh = Msg {
        text: "never".into(),
        n: 0,
    }
    .encode_to_vec();
    native(c, "shop", "/t.Counter/IncrThenFail", fresh.clone())
        .await
        .unwrap_err();
    let peek = native(c, "shop", "/t.Counter/Peek", key()).await.unwrap();
    assert_eq!(
        Msg::decode(peek.as_slice()).unwrap().n,
        3,
        "the failed calls' updates were rolled back"
    );
    let e = c
        .records
        .get(proto::GetRequest {
            namespace: "shop".into(),
            collection: "counters".into(),
            id: "never".into(),
            include_json: false,
        })
        .await
        .unwrap_err();
    assert_eq!(
        e.code(),
        Code::NotFound,
        "the failed call's create was rolled back"
    );
    // Not granted → PermissionDenied, through the guest's error variant.
    let e = native(c, "shop", "/t.Counter/Sneak", key())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("secret"), "{}", e.message());
    // The guest's own validation errors map to their codes.
    let e = native(c, "shop", "/t.Counter/Incr", Msg::default().encode_to_vec())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);

    // Read-only grant: reads work, writes are refused.
    register_counter(
        c,
        vec![proto::Grant {
            collection: "counters".into(),
            read_only: true,
        }],
    )
    .await
    .unwrap();
    let out = native(c, "shop", "/t.Counter/Peek", key()).await.unwrap();
    assert_eq!(Msg::decode(out.as_slice()).unwrap().n, 3);
    let e = native(c, "shop", "/t.Counter/Incr", key())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");

    // The same handler in another namespace cannot see shop's collections.
    setup(c, "other").await;
    c.registry
        .register_proto(proto::RegisterProtoRequest {
            namespace: "other".into(),
            sources: vec![proto::ProtoSource { name: "c.proto".into(), content: "syntax = \"proto3\"; package t; import \"t.proto\"; service Counter { rpc Incr(Msg) returns (Msg); }".into() }],
            ..Default::default()
        })
        .await
        .unwrap();
    c.registry
        .register_service(proto::RegisterServiceRequest {
            namespace: "other".into(),
            service: "t.Counter".into(),
            component: guest("counter"),
            grants: vec![proto::Grant {
                collection: "counters".into(),
                read_only: false,
            }],
            limits: None,
        })
        .await
        .unwrap();
    let e = native(c, "other", "/t.Counter/Incr", key())
        .await
        .unwrap_err();
    assert_eq!(
        e.code(),
        Code::NotFound,
        "other/counters does not exist: {e:?}"
    );
}

#[tokio::test]
async fn hot_swap_under_concurrent_load_fails_no_call() {
    let mut n = TestNode::start().await;
    setup(&mut n.clients, "shop").await;
    register(&mut n.clients, "shop", "t.Echo", "echo", 0, 0)
        .await
        .unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut callers = Vec::new();
    for w in 0..8 {
        let (c, stop) = (n.clients.clone(), stop.clone());
        callers.push(tokio::spawn(async move {
            let mut calls = 0u32;
            // Bounded: stops when told, or after 100k calls.
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && calls < 100_000 {
                let msg = Msg {
                    text: format!("w{w}"),
                    n: calls as i64,
                };
                let out = native(&c, "shop", "/t.Echo/Say", msg.encode_to_vec())
                    .await
                    .expect("no call fails during a swap");
                assert_eq!(Msg::decode(out.as_slice()).unwrap(), msg);
                calls += 1;
            }
            calls
        }));
    }
    let mut c = n.clients.clone();
    for round in 0..6 {
        register(&mut c, "shop", "t.Echo", "echo", 1000 + round, 0)
            .await
            .unwrap();
        let bad = c
            .registry
            .register_service(proto::RegisterServiceRequest {
                namespace: "shop".into(),
                service: "t.Echo".into(),
                component: b"not wasm".to_vec(),
                ..Default::default()
            })
            .await;
        assert!(bad.is_err());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    for t in callers {
        total += t.await.unwrap();
    }
    assert!(total > 50, "the callers made progress ({total})");
    let info = c
        .registry
        .lookup_service(proto::LookupServiceRequest {
            namespace: "shop".into(),
            service: "t.Echo".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        info.limits.unwrap().timeout_ms,
        1005,
        "the last good registration serves"
    );
}

#[tokio::test]
async fn invoke_runs_methods_bound_to_a_collection() {
    let mut n = TestNode::start().await;
    let c = &mut n.clients;
    setup_counter(c, &["Incr"]).await;
    register_counter(
        c,
        vec![proto::Grant {
            collection: "counters".into(),
            read_only: false,
        }],
    )
    .await
    .unwrap();
    let input = || {
        Some(prost_types::Any {
            type_url: "type.googleapis.com/t.Msg".into(),
            value: Msg {
                text: "k".into(),
                n: 0,
            }
            .encode_to_vec(),
        })
    };
    let req = |coll: &str, method: &str| proto::InvokeRequest {
        namespace: "shop".into(),
        collection: coll.into(),
        method: method.into(),
        input: input(),
    };
    let out = c
        .records
        .invoke(req("counters", "t.Counter/Incr"))
        .await
        .unwrap()
        .into_inner();
    let out = out.output.unwrap();
    assert_eq!(out.type_url, "type.googleapis.com/t.Msg");
    assert_eq!(Msg::decode(out.value.as_slice()).unwrap().n, 1);
    for (coll, method, code) in [
        ("secret", "t.Counter/Incr", Code::FailedPrecondition),
        ("missing", "t.Counter/Incr", Code::NotFound),
        ("counters", "t.Counter/Nope", Code::Unimplemented),
        ("counters", "no-slash", Code::InvalidArgument),
    ] {
        let e = c.records.invoke(req(coll, method)).await.unwrap_err();
        assert_eq!(e.code(), code, "{coll} {method}: {e:?}");
    }
}

/// `x-collector-depth` comes from the wire (from a member): however large, adding the
/// next `invoke` saturates, and the call is RESOURCE_EXHAUSTED, not a panic
/// or a wrapped-around depth that escapes the limit.
#[tokio::test]
async fn an_absurd_invoke_depth_in_metadata_is_refused_not_wrapped() {
    let mut n = TestNode::start().await;
    let c = &mut n.clients;
    setup_counter(c, &["Incr", "IncrTwice"]).await;
    let rw = proto::Grant {
        collection: "counters".into(),
        read_only: false,
    };
    register_counter(c, vec![rw]).await.unwrap();
    let input = Msg {
        text: "deep".into(),
        n: 0,
    }
    .encode_to_vec();
    let mut grpc = tonic::client::Grpc::new(c.channel.clone());
    grpc.ready().await.unwrap();
    let mut req = tonic::Request::new(prost::bytes::Bytes::from(input));
    req.metadata_mut()
        .insert("x-collector-namespace", "shop".parse().unwrap());
    req.metadata_mut()
        .insert("x-collector-depth", u32::MAX.to_string().parse().unwrap());
    // Only a member's depth counts (a client's is stripped).
    collector_tests::as_member(&mut req);
    let e = grpc
        .unary(
            req,
            "/t.Counter/IncrTwice".parse().unwrap(),
            collector::api::dynamic::BytesCodec,
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    // The node is fine.
    let ok = Msg {
        text: "ok".into(),
        n: 0,
    };
    native(c, "shop", "/t.Counter/Incr", ok.encode_to_vec())
        .await
        .unwrap();
}

/// A handler learns who is calling (the key's id and roles, set by the
/// node and not by the client) but never sees the key.
#[tokio::test]
async fn a_handler_sees_its_callers_key_id_and_roles_never_the_key() {
    let mut n = TestNode::start().await;
    let addr = n.handle.as_ref().unwrap().addr;
    let c = &mut n.clients;
    setup(c, "shop").await;
    register(c, "shop", "t.Snoop", "snoop", 0, 0).await.unwrap();
    let writer = c
        .registry
        .create_key(proto::CreateKeyRequest {
            grants: vec![proto::RoleGrant {
                namespace: "shop".into(),
                role: "write".into(),
            }],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let as_writer = Clients::connect_as(addr, &writer.token).await;
    let who = |c: &Clients| {
        let c = c.clone();
        async move {
            let mut grpc = tonic::client::Grpc::new(c.channel.clone());
            grpc.ready().await.unwrap();
            let mut req = tonic::Request::new(prost::bytes::Bytes::new());
            req.metadata_mut()
                .insert("x-collector-namespace", "shop".parse().unwrap());
            // A client's claim to be someone else is dropped.
            req.metadata_mut()
                .insert("x-collector-key-id", "0000000000000000".parse().unwrap());
            req.metadata_mut()
                .insert("x-collector-key-roles", "operator".parse().unwrap());
            // Both callers name their call the same: each runs its own.
            req.metadata_mut()
                .insert("x-collector-request-id", "same-id".parse().unwrap());
            let out = grpc
                .unary(
                    req,
                    "/t.Snoop/Who".parse().unwrap(),
                    collector::api::dynamic::BytesCodec,
                )
                .await
                .unwrap()
                .into_inner();
            Msg::decode(out.as_ref()).unwrap().text
        }
    };
    let key = writer.key.unwrap();
    assert_eq!(who(&as_writer).await, format!("{}|shop:write", key.id));
    let operator = who(&n.clients).await;
    assert!(
        operator.ends_with("|operator"),
        "another caller's answer: {operator}"
    );
    let found = Msg::decode(
        native(&as_writer, "shop", "/t.Snoop/Run", vec![])
            .await
            .unwrap()
            .as_slice(),
    )
    .unwrap()
    .text;
    assert_eq!(found, "", "the handler saw {found:?}");
}

fn median(mut v: Vec<std::time::Duration>) -> std::time::Duration {
    v.sort();
    v[v.len() / 2]
}

/// 20 echo calls in `ns`, one after another: their median latency (each
/// must succeed).
async fn echo_latency(c: &Clients, ns: &str) -> std::time::Duration {
    let mut took = Vec::new();
    for i in 0..20 {
        let t = std::time::Instant::now();
        let body = Msg {
            text: format!("calm {i}"),
            n: 0,
        }
        .encode_to_vec();
        native(c, ns, "/t.Echo/Say", body).await.unwrap();
        took.push(t.elapsed());
    }
    median(took)
}

/// A namespace flooding the node with slow handler calls gets
/// RESOURCE_EXHAUSTED, at once, beyond its quota of calls running; another
/// namespace's calls keep running meanwhile.
#[tokio::test]
async fn a_namespace_over_its_call_quota_cannot_starve_another() {
    let mut n = TestNode::start_with(|c| c.quotas.calls = 4).await;
    let c = &mut n.clients;
    for ns in ["flood", "calm"] {
        setup(c, ns).await;
    }
    // Spin burns its whole 1 s timeout.
    register(c, "flood", "t.Spin", "spin", 1000, 0)
        .await
        .unwrap();
    register(c, "calm", "t.Echo", "echo", 0, 0).await.unwrap();
    let alone = echo_latency(c, "calm").await;
    let spins: Vec<_> = (0..4)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move { native(&c, "flood", "/t.Spin/Run", vec![]).await })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    let t = std::time::Instant::now();
    let e = native(c, "flood", "/t.Spin/Run", vec![]).await.unwrap_err();
    let refused_in = t.elapsed();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("--max-calls-per-namespace"), "{e:?}");
    assert!(
        refused_in < std::time::Duration::from_millis(500),
        "{refused_in:?}"
    );
    let flooded = echo_latency(c, "calm").await;
    eprintln!(
        "calm echo p50 alone {alone:?}, while flood runs 4 spinning calls {flooded:?}; flood's 5th call refused in {refused_in:?}"
    );
    // Starved, calm would wait behind the spins (1 s each).
    assert!(
        flooded < std::time::Duration::from_millis(500),
        "{flooded:?}"
    );
    for s in spins {
        let e = s.await.unwrap().unwrap_err();
        assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");
    }
    // The quota is given back: flood can call again.
    let e = native(c, "flood", "/t.Spin/Run", vec![]).await.unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");
}
