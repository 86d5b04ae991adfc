//! Limits belong to the node: registrations cannot ask for more than it
//! allows, a call's buffered writes count against its memory, all calls
//! share one memory budget, a call whose callers all went away stops, and
//! calls that lose an optimistic-concurrency race are re-run until they
//! commit, and a retried call applies each collection's writes once.

use collector::proto::{self, collective_dispatcher_client::CollectiveDispatcherClient};
use collector_tests::{Clients, Msg, TestNode, guest};
use prost::Message;
use std::time::Duration;
use tonic::Code;

const COUNTER_PROTO: &str = r#"syntax = "proto3"; package t;
message Msg { string text = 1; int64 n = 2; }
service Counter {
  rpc Incr(Msg) returns (Msg); rpc Peek(Msg) returns (Msg); rpc IncrSlowly(Msg) returns (Msg);
  rpc Bulk(Msg) returns (Msg); rpc Hold(Msg) returns (Msg); rpc Both(Msg) returns (Msg);
}"#;

/// Declares t.Counter in namespace `lim` and creates its `counters` collection.
async fn setup(c: &mut Clients) {
    c.registry
        .register_proto(proto::RegisterProtoRequest {
            namespace: "lim".into(),
            sources: vec![proto::ProtoSource {
                name: "t.proto".into(),
                content: COUNTER_PROTO.into(),
            }],
            ..Default::default()
        })
        .await
        .unwrap();
    for name in ["counters", "other"] {
        create_collection(c, name).await;
    }
}

async fn create_collection(c: &mut Clients, name: &str) {
    c.repo
        .create_collection(proto::CreateCollectionRequest {
            namespace: "lim".into(),
            name: name.into(),
            message_type: "t.Msg".into(),
            ..Default::default()
        })
        .await
        .unwrap();
}

/// Registers the counter guest with these limits (0 = the defaults).
async fn register(
    c: &mut Clients,
    timeout_ms: u32,
    memory_mib: u32,
) -> Result<proto::ServiceInfo, tonic::Status> {
    c.registry
        .register_service(proto::RegisterServiceRequest {
            namespace: "lim".into(),
            service: "t.Counter".into(),
            component: guest("counter"),
            grants: ["counters", "other"]
                .map(|c| proto::Grant {
                    collection: c.into(),
                    read_only: false,
                })
                .into(),
            limits: Some(proto::HandlerLimits {
                timeout_ms,
                memory_mib,
            }),
        })
        .await
        .map(|r| r.into_inner())
}

async fn call(c: &Clients, method: &str, text: &str, n: i64) -> Result<i64, tonic::Status> {
    let out: Msg = c
        .call(
            "lim",
            &format!("/t.Counter/{method}"),
            &Msg {
                text: text.into(),
                n,
            },
        )
        .await?;
    Ok(out.n)
}

#[tokio::test]
async fn registrations_beyond_the_node_maximums_are_refused() {
    let mut n = TestNode::start_with(|c| {
        c.max_handler_timeout = Duration::from_secs(2);
        c.max_handler_memory_bytes = 32 << 20;
        c.handler_memory_budget_bytes = 64 << 20;
    })
    .await;
    let c = &mut n.clients;
    setup(c).await;
    // A 49.7-day timeout and 4 GiB were once accepted.
    let e = register(c, u32::MAX, 0).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("--max-handler-timeout"), "{e:?}");
    let e = register(c, 0, 4096).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("--max-handler-memory"), "{e:?}");
    register(c, 2000, 32).await.unwrap();
    // The defaults (64 MiB) are lowered to the maximum, so calls still run.
    register(c, 0, 0).await.unwrap();
    assert_eq!(call(c, "Incr", "a", 0).await.unwrap(), 1);
}

/// One call once buffered 3.1 GB of writes: they count against its cap.
#[tokio::test]
async fn buffered_writes_count_against_the_memory_cap() {
    let mut n = TestNode::start().await;
    let c = &mut n.clients;
    setup(c).await;
    register(c, 0, 16).await.unwrap();
    let e = call(c, "Bulk", "big", 1000).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("memory cap of 16 MiB"), "{e:?}");
    assert_eq!(
        c.count("lim", "counters").await,
        0,
        "a stopped call applies nothing"
    );
    assert_eq!(call(c, "Bulk", "ok", 2).await.unwrap(), 2);
    assert_eq!(c.count("lim", "counters").await, 2);
}

#[tokio::test]
async fn all_calls_share_the_nodes_memory_budget() {
    let mut n = TestNode::start_with(|c| {
        c.max_handler_memory_bytes = 32 << 20;
        c.handler_memory_budget_bytes = 40 << 20;
    })
    .await;
    setup(&mut n.clients).await;
    register(&mut n.clients, 0, 32).await.unwrap();
    let c = n.clients.clone();
    let first = tokio::spawn(async move { call(&c, "Hold", "a", 24).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let e = call(&n.clients, "Hold", "b", 24).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("--handler-memory-budget"), "{e:?}");
    assert_eq!(first.await.unwrap().unwrap(), 24 << 20);
    // The first call gave its memory back.
    assert_eq!(call(&n.clients, "Hold", "c", 24).await.unwrap(), 24 << 20);
}

fn dispatch_req(method: &str, text: &str, n: i64, request_id: &str) -> proto::DispatchRequest {
    proto::DispatchRequest {
        namespace: "lim".into(),
        service: "t.Counter".into(),
        method: method.into(),
        input: Some(prost_types::Any {
            type_url: "type.googleapis.com/t.Msg".into(),
            value: Msg {
                text: text.into(),
                n,
            }
            .encode_to_vec(),
        }),
        request_id: request_id.into(),
        ..Default::default()
    }
}

/// A Dispatch with a request id runs on its own task (so a retry can join
/// it); it once kept running after its client went away.
#[tokio::test]
async fn a_named_dispatch_stops_when_its_client_goes_away() {
    let mut n = TestNode::start().await;
    setup(&mut n.clients).await;
    register(&mut n.clients, 0, 0).await.unwrap();
    let mut d = CollectiveDispatcherClient::new(n.clients.channel.clone());
    let req = dispatch_req("IncrSlowly", "slow", 1500, "walk-away");
    // No deadline: the client just stops waiting.
    let gone = tokio::time::timeout(Duration::from_millis(300), d.dispatch(req.clone())).await;
    assert!(gone.is_err(), "the client gave up first");
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(
        call(&n.clients, "Peek", "slow", 0).await.unwrap(),
        0,
        "the abandoned call was stopped before it wrote"
    );
    // Its id is free again: a retry runs it.
    let req = dispatch_req("IncrSlowly", "slow", 1, "walk-away");
    let out = d.dispatch(req).await.unwrap().into_inner();
    assert_eq!(
        Msg::decode(out.output.unwrap().value.as_slice()).unwrap().n,
        1
    );
}

/// 16 clients each incrementing one counter 10 times once got ~26 of 160
/// calls through; the node now re-runs the losers.
#[tokio::test]
async fn contending_calls_are_re_run_until_they_commit() {
    let mut n = TestNode::start().await;
    setup(&mut n.clients).await;
    register(&mut n.clients, 0, 0).await.unwrap();
    let mut all = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let c = n.clients.clone();
        all.spawn(async move {
            let mut ok = 0;
            for _ in 0..10 {
                match call(&c, "Incr", "hits", 0).await {
                    Ok(_) => ok += 1,
                    Err(e) => panic!("an Incr failed: {e:?}"),
                }
            }
            ok
        });
    }
    let mut ok = 0;
    while let Some(n) = all.join_next().await {
        ok += n.unwrap();
    }
    assert_eq!(ok, 160);
    assert_eq!(call(&n.clients, "Peek", "hits", 0).await.unwrap(), 160);
}

/// Past its deadline a call is DEADLINE_EXCEEDED on every path (tonic's own
/// check once answered CANCELLED), and a stopped handler writes nothing.
#[tokio::test]
async fn a_call_past_its_deadline_is_deadline_exceeded() {
    let mut n = TestNode::start().await;
    setup(&mut n.clients).await;
    register(&mut n.clients, 0, 0).await.unwrap();
    let mut d = CollectiveDispatcherClient::new(n.clients.channel.clone());
    for ms in [100, 300, 1000] {
        let mut req = tonic::Request::new(dispatch_req("IncrSlowly", "late", 2000, ""));
        // tonic's client enforces the deadline too (reporting CANCELLED):
        // the node answers a little before it, so its code arrives first.
        req.set_timeout(Duration::from_millis(ms));
        let e = d.dispatch(req).await.unwrap_err();
        assert_eq!(e.code(), Code::DeadlineExceeded, "{ms} ms: {e:?}");
    }
    let mut req = tonic::Request::new(proto::CountRequest {
        namespace: "lim".into(),
        collection: "counters".into(),
        ..Default::default()
    });
    req.set_timeout(Duration::from_secs(5));
    n.clients.records.count(req).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert_eq!(call(&n.clients, "Peek", "late", 0).await.unwrap(), 0);
}

/// A call whose writes to its first collection committed and to its
/// second did not once said "retry", and the retry applied the first
/// collection's writes twice. Now the error is ABORTED naming what was
/// applied, and a retry with the same request id applies only the rest.
#[tokio::test]
async fn a_retried_call_applies_each_collections_writes_once() {
    let mut n = TestNode::start().await;
    setup(&mut n.clients).await;
    register(&mut n.clients, 0, 0).await.unwrap();
    let mut d = CollectiveDispatcherClient::new(n.clients.channel.clone());
    let req = dispatch_req("Both", "x", 800, "both-1");
    let mut d2 = d.clone();
    let first = tokio::spawn({
        let req = req.clone();
        async move { d2.dispatch(req).await }
    });
    // While the handler waits, its second collection is replaced: that
    // batch fails after the first one committed.
    tokio::time::sleep(Duration::from_millis(300)).await;
    n.clients
        .repo
        .delete_collection(proto::DeleteCollectionRequest {
            namespace: "lim".into(),
            name: "other".into(),
        })
        .await
        .unwrap();
    create_collection(&mut n.clients, "other").await;
    let e = first.await.unwrap().unwrap_err();
    assert_eq!(e.code(), Code::Aborted, "{e:?}");
    assert!(
        e.message().contains("writes to counters were applied"),
        "{e:?}"
    );
    assert_eq!(call(&n.clients, "Peek", "x", 0).await.unwrap(), 1);

    d.dispatch(req).await.unwrap();
    assert_eq!(
        call(&n.clients, "Peek", "x", 0).await.unwrap(),
        1,
        "the retry did not apply the first collection's writes again"
    );
    let other = n
        .clients
        .records
        .get(proto::GetRequest {
            namespace: "lim".into(),
            collection: "other".into(),
            id: "x".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        Msg::decode(other.data.unwrap().value.as_slice()).unwrap().n,
        1
    );
    // Without a request id nothing is remembered: each call applies anew.
    call(&n.clients, "Incr", "x", 0).await.unwrap();
    assert_eq!(call(&n.clients, "Peek", "x", 0).await.unwrap(), 2);
}
