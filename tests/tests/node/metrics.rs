//! `GET /metrics`: Prometheus text over plain HTTP/1.1 on the node's port,
//! for operator keys only, parsed here with a Prometheus text parser.
//! Several in-process nodes share one recorder, so every figure checked is
//! one only this test's namespaces make (or a gauge set at the scrape).

use collector::proto;
use collector_tests::{Order, TOKEN, TestNode};
use prometheus_parse::{Sample, Scrape, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// GETs `/metrics` over HTTP/1.0 (no chunking) as `token`: status and body.
pub(crate) async fn get_metrics(addr: std::net::SocketAddr, token: Option<&str>) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = token.map_or(String::new(), |t| format!("authorization: Bearer {t}\r\n"));
    s.write_all(format!("GET /metrics HTTP/1.0\r\nhost: node\r\n{auth}\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        s.read_to_string(&mut out),
    )
    .await
    .expect("the scrape answers")
    .unwrap();
    let (head, body) = out.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, body.to_string())
}

pub(crate) fn parse(body: &str) -> Scrape {
    Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).expect("Prometheus text")
}

/// The sum of every sample of counter or gauge `name` a node shows now.
pub(crate) async fn total(addr: std::net::SocketAddr, name: &str) -> f64 {
    let (status, body) = get_metrics(addr, Some(TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    find(&parse(&body), name, &[])
        .iter()
        .map(|x| match x.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

/// Samples of `name` whose labels include every one of `labels`.
fn find<'a>(s: &'a Scrape, name: &str, labels: &[(&str, &str)]) -> Vec<&'a Sample> {
    s.samples
        .iter()
        .filter(|x| x.metric == name)
        .filter(|x| labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .collect()
}

fn value(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    match find(s, name, labels).as_slice() {
        [x] => match &x.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            other => panic!("{name} {labels:?} is not a number: {other:?}"),
        },
        found => panic!("{name} {labels:?}: {} samples", found.len()),
    }
}

/// The count of a histogram (its +Inf bucket), and that it has buckets.
fn histogram_count(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let found = find(s, name, labels);
    let x = found
        .first()
        .unwrap_or_else(|| panic!("no {name} {labels:?}"));
    match &x.value {
        Value::Histogram(buckets) => {
            assert!(buckets.len() >= 10, "{name} has real buckets: {buckets:?}");
            buckets.last().unwrap().count
        }
        other => panic!("{name} is not a histogram: {other:?}"),
    }
}

const ECHO_PROTO: &str = r#"syntax = "proto3"; package mt;
message Msg { string text = 1; }
service Echo { rpc Say(Msg) returns (Msg); }"#;

/// Calls, statuses, latencies, writer commits, handler calls, quota
/// refusals, the mesh and the process, as Prometheus reads them; and only
/// operators may read them.
#[tokio::test]
async fn operators_scrape_calls_commits_handlers_quotas_and_the_process() {
    let mut n = TestNode::start().await;
    let addr = n.handle.as_ref().unwrap().addr;
    let c = &mut n.clients;
    c.register_shop("metered").await;
    c.create_orders("metered", "orders", &[]).await;
    for i in 0..3 {
        c.put("metered", "orders", &format!("o{i}"), &Order::new("x", 1))
            .await
            .unwrap();
    }
    let missing = c
        .records
        .get(proto::GetRequest {
            namespace: "metered".into(),
            collection: "orders".into(),
            id: "nope".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    c.records
        .get(proto::GetRequest {
            namespace: "metered".into(),
            collection: "orders".into(),
            id: "o0".into(),
            ..Default::default()
        })
        .await
        .expect("a record the create left in the cache");
    // A made-up path is counted, but not under its own name.
    let _ = c.call_raw("metered", "/metered.Made/Up", vec![]).await;
    // A handler call.
    c.registry
        .register_proto(proto::RegisterProtoRequest {
            namespace: "metered".into(),
            sources: vec![proto::ProtoSource {
                name: "mt.proto".into(),
                content: ECHO_PROTO.into(),
            }],
            ..Default::default()
        })
        .await
        .unwrap();
    c.registry
        .register_service(proto::RegisterServiceRequest {
            namespace: "metered".into(),
            service: "mt.Echo".into(),
            component: collector_tests::guest("echo"),
            grants: vec![],
            limits: None,
        })
        .await
        .unwrap();
    c.call_raw("metered", "/mt.Echo/Say", vec![]).await.unwrap();
    // A quota refusal.
    c.registry
        .set_quota(proto::SetQuotaRequest {
            quota: Some(proto::NamespaceQuota {
                namespace: "metered".into(),
                records_per_second: Some(1),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let mut refused = false;
    for i in 0..5 {
        refused |= c
            .put("metered", "orders", &format!("q{i}"), &Order::new("x", 1))
            .await
            .is_err();
    }
    assert!(refused);

    // A delete counts down the records gauge (a refused put above may
    // have left q0 unwritten: then this is NotFound and counts nothing).
    let _ = c
        .records
        .delete(proto::DeleteRequest {
            namespace: "metered".into(),
            collection: "orders".into(),
            id: "q0".into(),
            expected_version: None,
        })
        .await;

    // Only operators.
    assert_eq!(get_metrics(addr, None).await.0, 401);
    let reader = c
        .registry
        .create_key(proto::CreateKeyRequest {
            grants: vec![proto::RoleGrant {
                namespace: "metered".into(),
                role: "admin".into(),
            }],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .token;
    assert_eq!(get_metrics(addr, Some(&reader)).await.0, 403);
    let (status, body) = get_metrics(addr, Some(TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    let s = parse(&body);

    let create = "/collector.v1.CollectionService/Create";
    assert!(
        value(
            &s,
            "collector_grpc_requests_total",
            &[("method", create), ("code", "Ok")]
        ) >= 3.0
    );
    let get = "/collector.v1.CollectionService/Get";
    assert!(
        value(
            &s,
            "collector_grpc_requests_total",
            &[("method", get), ("code", "NotFound")]
        ) >= 1.0
    );
    assert!(
        histogram_count(
            &s,
            "collector_grpc_request_duration_seconds",
            &[("method", create)]
        ) >= 3.0
    );
    assert!(
        find(
            &s,
            "collector_grpc_requests_total",
            &[("method", "/metered.Made/Up")]
        )
        .is_empty()
    );
    assert!(
        value(
            &s,
            "collector_grpc_requests_total",
            &[("method", "/mt.Echo/Say"), ("code", "Ok")]
        ) >= 1.0
    );
    let orders = [("namespace", "metered"), ("collection", "orders")];
    assert!(histogram_count(&s, "collector_collection_commit_duration_seconds", &orders) >= 3.0);
    assert!(histogram_count(&s, "collector_collection_group_commit_size", &orders) >= 3.0);
    assert!(histogram_count(&s, "collector_collection_sync_duration_seconds", &orders) >= 3.0);
    let records = c.count("metered", "orders").await;
    assert!(records >= 3);
    assert_eq!(
        value(&s, "collector_collection_records", &orders),
        records as f64,
        "the records gauge follows creates and deletes"
    );
    let say = [
        ("namespace", "metered"),
        ("service", "mt.Echo"),
        ("method", "Say"),
    ];
    assert_eq!(
        value(
            &s,
            "collector_handler_calls_total",
            &[say[0], say[1], say[2], ("outcome", "ok")]
        ),
        1.0
    );
    assert_eq!(
        histogram_count(&s, "collector_handler_call_duration_seconds", &say),
        1.0
    );
    assert!(
        value(
            &s,
            "collector_quota_refusals_total",
            &[("namespace", "metered"), ("quota", "records_per_second")]
        ) >= 1.0
    );
    assert_eq!(
        value(&s, "collector_mesh_members", &[("state", "myself")]),
        1.0
    );
    assert!(value(&s, "collector_collections", &[]) >= 1.0);
    for g in [
        "collector_process_resident_memory_bytes",
        "collector_process_open_fds",
        "collector_process_threads",
    ] {
        assert!(value(&s, g, &[]) > 0.0, "{g}");
    }
}
