//! One node under every kind of abuse at once: while hostile clients send
//! deep, huge and expensive requests and registrations, run guests that
//! spin and hog, hold silent connections and throw garbage datagrams at the
//! gossip port, a well-behaved client in another namespace keeps getting
//! answers, and the node stays healthy.

use collector::proto;
use collector_tests::{Clients, TestNode, guest};
use std::time::{Duration, Instant};
use tonic::Code;
use tonic_health::pb::health_client::HealthClient;

const PROTO: &str = r#"syntax = "proto3"; package h;
import "google/protobuf/any.proto";
message M { string text = 1; int64 n = 2; google.protobuf.Any inner = 3; }
service Spin { rpc Run(M) returns (M); }
service Hog { rpc Eat(M) returns (M); }"#;

async fn register_proto(c: &mut Clients, ns: &str) {
    c.registry
        .register_proto(proto::RegisterProtoRequest {
            namespace: ns.into(),
            sources: vec![proto::ProtoSource {
                name: "h.proto".into(),
                content: PROTO.into(),
            }],
            ..Default::default()
        })
        .await
        .unwrap();
    c.repo
        .create_collection(proto::CreateCollectionRequest {
            namespace: ns.into(),
            name: "ms".into(),
            message_type: "h.M".into(),
            ..Default::default()
        })
        .await
        .unwrap();
}

/// h.M by hand.
#[derive(Clone, PartialEq, prost::Message)]
struct M {
    #[prost(string, tag = "1")]
    text: String,
    #[prost(int64, tag = "2")]
    n: i64,
    #[prost(message, optional, tag = "3")]
    inner: Option<prost_types::Any>,
}

fn any(m: &M) -> prost_types::Any {
    prost_types::Any {
        type_url: "type.googleapis.com/h.M".into(),
        value: prost::Message::encode_to_vec(m),
    }
}

fn deep(levels: usize) -> prost_types::Any {
    let mut m = M::default();
    for _ in 0..levels {
        m = M {
            inner: Some(any(&m)),
            ..Default::default()
        };
    }
    any(&m)
}

async fn create(
    c: &mut Clients,
    ns: &str,
    id: &str,
    data: prost_types::Any,
) -> Result<(), tonic::Status> {
    c.records
        .create(proto::CreateRequest {
            namespace: ns.into(),
            collection: "ms".into(),
            record: Some(proto::Record {
                id: id.into(),
                data: Some(data),
                ..Default::default()
            }),
        })
        .await
        .map(|_| ())
}

async fn get(c: &mut Clients) -> Duration {
    let t = Instant::now();
    c.records
        .get(proto::GetRequest {
            namespace: "calm".into(),
            collection: "ms".into(),
            id: "r".into(),
            ..Default::default()
        })
        .await
        .expect("the calm client always gets its answer");
    t.elapsed()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// A hostile task: runs `f` until `until`, at most 200 times; every answer
/// must be one of the refusals `ok` lists (never INTERNAL, UNKNOWN or a
/// broken connection).
async fn abuse<F, Fut>(until: Instant, ok: &'static [Code], mut f: F) -> u32
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), tonic::Status>>,
{
    let mut n = 0;
    while Instant::now() < until && n < 200 {
        if let Err(e) = f().await {
            assert!(ok.contains(&e.code()), "unexpected answer to abuse: {e:?}");
        }
        n += 1;
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_under_every_kind_of_abuse_keeps_serving_a_calm_client() {
    let mut n = TestNode::start().await;
    let addr = n.handle.as_ref().unwrap().addr;
    register_proto(&mut n.clients, "calm").await;
    register_proto(&mut n.clients, "evil").await;
    for (service, wasm, memory_mib) in [("h.Spin", "spin", 0), ("h.Hog", "hog", 16)] {
        n.clients
            .registry
            .register_service(proto::RegisterServiceRequest {
                namespace: "evil".into(),
                service: service.into(),
                component: guest(wasm),
                grants: vec![],
                limits: Some(proto::HandlerLimits {
                    timeout_ms: 500,
                    memory_mib,
                }),
            })
            .await
            .unwrap();
    }
    let mut calm = Clients::connect(addr).await;
    create(
        &mut calm,
        "calm",
        "r",
        any(&M {
            text: "hi".into(),
            ..Default::default()
        }),
    )
    .await
    .unwrap();
    let mut baseline = Vec::new();
    for _ in 0..50 {
        baseline.push(get(&mut calm).await);
    }
    let usual = median(baseline);

    let until = Instant::now() + Duration::from_secs(4);
    let mut hostile = tokio::task::JoinSet::new();
    // Deep nesting, over-size messages, expensive searches.
    {
        let mut c = Clients::connect(addr).await;
        hostile.spawn(async move {
            abuse(until, &[Code::InvalidArgument], || {
                let mut c = c.clone();
                async move { create(&mut c, "evil", "", deep(300)).await }
            })
            .await
        });
        let mut c2 = Clients::connect(addr).await;
        let big = M {
            text: "x".repeat(17 << 20),
            ..Default::default()
        };
        hostile.spawn(async move {
            let mut sent = 0;
            while Instant::now() < until && sent < 5 {
                let e = create(&mut c2, "evil", "", any(&big)).await.unwrap_err();
                assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
                sent += 1;
            }
            sent
        });
        let terms = vec!["w"; 20_000].join(" ");
        c = Clients::connect(addr).await;
        hostile.spawn(async move {
            abuse(until, &[Code::InvalidArgument], || {
                let mut c = c.clone();
                let q = terms.clone();
                async move {
                    c.records
                        .search(proto::SearchRequest {
                            namespace: "evil".into(),
                            collection: "ms".into(),
                            query: q,
                            ..Default::default()
                        })
                        .await
                        .map(|_| ())
                }
            })
            .await
        });
    }
    // Registrations at and over the size limit, dense with errors.
    {
        let c = Clients::connect(addr).await;
        let mut dense = String::from("syntax = \"proto3\"; package e;\n");
        let mut i = 0;
        while dense.len() < collector::limits::MAX_PROTO_BYTES - 100 {
            dense.push_str(&format!("message U{i} {{ Nope a = 1; }}\n"));
            i += 1;
        }
        let over = dense.repeat(2);
        hostile.spawn(async move {
            let mut k = 0;
            abuse(until, &[Code::InvalidArgument], || {
                let mut c = c.clone();
                k += 1;
                let content = if k % 2 == 0 { &dense } else { &over }.clone();
                async move {
                    c.registry
                        .register_proto(proto::RegisterProtoRequest {
                            namespace: "evil".into(),
                            sources: vec![proto::ProtoSource {
                                name: "dense.proto".into(),
                                content,
                            }],
                            ..Default::default()
                        })
                        .await
                        .map(|_| ())
                }
            })
            .await
        });
    }
    // Guests that spin to their deadline and hog to their cap, from many
    // clients at once.
    for i in 0..12 {
        let c = Clients::connect(addr).await;
        let path = if i % 3 == 0 {
            "/h.Hog/Eat"
        } else {
            "/h.Spin/Run"
        };
        hostile.spawn(async move {
            abuse(
                until,
                &[Code::DeadlineExceeded, Code::ResourceExhausted],
                || {
                    let c = c.clone();
                    async move { c.call_raw("evil", path, vec![]).await.map(|_| ()) }
                },
            )
            .await
        });
    }
    // Silent connections and garbage datagrams.
    let mut silent = Vec::new();
    for _ in 0..100 {
        silent.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    hostile.spawn(async move {
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut sent = 0;
        while Instant::now() < until && sent < 2000 {
            let junk: Vec<u8> = (0..(sent % 1400) + 1)
                .map(|i| (i * 31 + sent) as u8)
                .collect();
            let _ = sock.send_to(&junk, addr).await;
            sent += 1;
            if sent % 100 == 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        sent
    });

    // Meanwhile the calm client's reads keep their usual latency.
    let mut during = Vec::new();
    while Instant::now() < until {
        during.push(get(&mut calm).await);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    while let Some(r) = hostile.join_next().await {
        assert!(r.unwrap() > 0, "every hostile task ran");
    }
    drop(silent);
    let under_attack = median(during.clone());
    let worst = *during.iter().max().unwrap();
    assert!(
        under_attack < usual * 20 + Duration::from_millis(20),
        "calm reads took {under_attack:?} (median) under attack, {usual:?} before"
    );
    assert!(worst < Duration::from_secs(1), "a calm read took {worst:?}");
    // Healthy, and still serving both namespaces.
    let health = HealthClient::new(calm.channel.clone())
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        health.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    create(&mut calm, "evil", "after", any(&M::default()))
        .await
        .unwrap();
    get(&mut calm).await;
}
