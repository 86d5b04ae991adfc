//! OpenTelemetry traces: two node processes export their spans over OTLP
//! to a receiver served here (the OTLP trace service of opentelemetry-proto);
//! a Dispatch through one node to the owner on the other is one trace, its
//! spans linked parent to child across both nodes.

use crate::mesh::{
    create_counters, msg, n_of, peers, register_counter, wait_for, wait_for_collection,
};
use collector::proto::{self, collective_dispatcher_client::CollectiveDispatcherClient};
use collector_tests::{Clients, ProcessNode};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
    trace_service_server::{TraceService, TraceServiceServer},
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::{Span, span::SpanKind};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_collector-node");

/// Every span any node sent.
#[derive(Clone, Default)]
struct Receiver(Arc<Mutex<Vec<Span>>>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut all = self.0.lock().unwrap();
        for rs in req.into_inner().resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|a| a.key == "service.name")
                .and_then(|a| a.value.as_ref()?.value.clone());
            assert_eq!(service, Some(Value::StringValue("collector".into())));
            for ss in rs.scope_spans {
                all.extend(ss.spans);
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// Serves the OTLP trace service on 127.0.0.1; returns its endpoint.
async fn receive(r: Receiver) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(r))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    format!("http://{addr}")
}

fn attr(s: &Span, key: &str) -> Option<String> {
    s.attributes.iter().find(|a| a.key == key).and_then(|a| {
        match a.value.as_ref()?.value.as_ref()? {
            Value::StringValue(v) => Some(v.clone()),
            Value::IntValue(v) => Some(v.to_string()),
            other => Some(format!("{other:?}")),
        }
    })
}

fn node(bin: &str, dir: &std::path::Path, endpoint: &str, join: &[String]) -> ProcessNode {
    let mut cmd = std::process::Command::new(bin);
    cmd.arg("serve")
        .args(["--otlp-endpoint", endpoint])
        // Export within 100 ms of a span's end, not the SDK's 5 s.
        .env("OTEL_BSP_SCHEDULE_DELAY", "100");
    ProcessNode::start_command(cmd, dir, "127.0.0.1:0", join)
}

fn self_id(ps: &[proto::Peer]) -> String {
    ps.iter()
        .find(|p| p.state == proto::PeerState::Self_ as i32)
        .expect("a node lists itself")
        .node_id
        .clone()
}

#[tokio::test]
async fn a_dispatch_through_a_peer_is_one_trace_across_both_nodes() {
    let spans = Receiver::default();
    let endpoint = receive(spans.clone()).await;
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = node(BIN, da.path(), &endpoint, &[]);
    let b = node(BIN, db.path(), &endpoint, &[a.addr.to_string()]);
    let (mut ca, mut cb) = (
        Clients::connect(a.addr).await,
        Clients::connect(b.addr).await,
    );
    let (ida, idb) = (self_id(&peers(&ca).await), self_id(&peers(&cb).await));

    // The handler is registered on A; its collection lives on B.
    register_counter(&mut ca).await;
    create_counters(&mut cb).await;
    wait_for_collection(&ca, "counters").await;
    wait_for(&cb, "B sees A's handler", Duration::from_secs(20), |ps| {
        ps.iter()
            .any(|p| p.node_id == ida && p.handlers.iter().any(|h| h.service == "t.Counter"))
    })
    .await;

    // The client's own span: the trace and the parent it names.
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client_span = "00f067aa0ba902b7";
    let mut req = tonic::Request::new(proto::DispatchRequest {
        namespace: "shop".into(),
        service: "t.Counter".into(),
        method: "IncrTwice".into(),
        input: Some(msg("visits", 0)),
        collection: "counters".into(),
        ..Default::default()
    });
    req.metadata_mut().insert(
        "traceparent",
        format!("00-{trace}-{client_span}-01").parse().unwrap(),
    );
    let r = CollectiveDispatcherClient::new(ca.channel.clone())
        .dispatch(req)
        .await
        .expect("IncrTwice through A")
        .into_inner();
    assert_eq!(r.node_id, idb, "ran on the owner");
    assert_eq!(n_of(r.output), 2);

    // Waits for the spans of the trace: both nodes' Dispatch, the handler
    // calls and their host calls, a store read and write.
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let t = Instant::now();
    let got: Vec<Span> = loop {
        let got: Vec<Span> = spans
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|s| hex(&s.trace_id) == trace)
            .cloned()
            .collect();
        let named = |n: &str| got.iter().filter(|s| s.name == n).count();
        if named("collector.v1.CollectiveDispatcher/Dispatch") >= 2
            && named("handler t.Counter/Incr") >= 2
            && named("sqlite.write") >= 1
        {
            break got;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the trace's spans did not all arrive within 20 s: {:#?}",
            got.iter().map(|s| &s.name).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let by_id = |id: &[u8]| got.iter().find(|s| s.span_id == id);
    let one = |name: &str, pick: &dyn Fn(&Span) -> bool| -> &Span {
        let found: Vec<&Span> = got.iter().filter(|s| s.name == name && pick(s)).collect();
        assert_eq!(found.len(), 1, "one {name} span: {found:#?}");
        found[0]
    };
    let descends = |s: &Span, ancestor: &Span| {
        let mut cur = s;
        while let Some(p) = by_id(&cur.parent_span_id) {
            if p.span_id == ancestor.span_id {
                return true;
            }
            cur = p;
        }
        false
    };

    // A's span is the child of the client's.
    let on_a = one("collector.v1.CollectiveDispatcher/Dispatch", &|s| {
        attr(s, "collector.node").as_deref() == Some(ida.as_str())
    });
    assert_eq!(hex(&on_a.parent_span_id), client_span);
    assert_eq!(on_a.kind, SpanKind::Server as i32);
    assert_eq!(attr(on_a, "rpc.grpc.status_code").as_deref(), Some("0"));
    // A's call to B is its child, and B's span the child of that call.
    let call = got
        .iter()
        .find(|s| s.parent_span_id == on_a.span_id && s.kind == SpanKind::Client as i32)
        .unwrap_or_else(|| panic!("A's call to B is a child of A's span: {got:#?}"));
    assert_eq!(attr(call, "server.address"), Some(b.addr.to_string()));
    let on_b = one("collector.v1.CollectiveDispatcher/Dispatch", &|s| {
        attr(s, "collector.node").as_deref() == Some(idb.as_str())
    });
    assert_eq!(
        on_b.parent_span_id, call.span_id,
        "B's span is the child of A's call"
    );

    // On B: the handler, its invoke of Incr (twice), their host calls and
    // the store underneath, all in B's span.
    let outer = one("handler t.Counter/IncrTwice", &|_| true);
    assert!(descends(outer, on_b));
    assert_eq!(attr(outer, "collector.namespace").as_deref(), Some("shop"));
    let invokes: Vec<&Span> = got.iter().filter(|s| s.name == "invoke").collect();
    assert_eq!(invokes.len(), 2, "two invokes");
    for inner in got.iter().filter(|s| s.name == "handler t.Counter/Incr") {
        assert!(
            invokes.iter().any(|i| descends(inner, i)),
            "each Incr runs inside an invoke: {got:#?}"
        );
        assert!(
            got.iter()
                .any(|g| g.name == "collection.get" && descends(g, inner)),
            "Incr's get is its child"
        );
    }
    // (B also stores the handler it fetched, in its `services` collection.)
    for s in got.iter().filter(|s| s.name.starts_with("sqlite.")) {
        assert!(descends(s, on_b), "{} runs inside B's call", s.name);
    }
    let write = got
        .iter()
        .find(|s| {
            s.name == "sqlite.write"
                && attr(s, "collector.collection").as_deref() == Some("counters")
        })
        .expect("the counters' write");
    assert!(
        descends(write, outer),
        "the handler's commit is in its span"
    );
    assert!(invokes.iter().all(|i| descends(i, outer)));
    eprintln!(
        "one trace, {} spans across two nodes: {:?}",
        got.len(),
        got.iter().map(|s| s.name.as_str()).collect::<Vec<_>>()
    );
}
