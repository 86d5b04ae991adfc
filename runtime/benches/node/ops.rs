//! Phase o: what operations cost. Three node processes of this build —
//! one keeping metrics, one started with `--no-metrics`, one keeping
//! metrics and exporting every span to an OTLP receiver served here — take
//! the same load in rotating one-second rounds, so drift of this noisy
//! machine falls on all alike; the median of the rounds' ratios is the
//! cost of keeping metrics (on ÷ off) and of exporting traces (traced ÷
//! on). Without `--otlp-endpoint` a span site is a disabled `tracing`
//! callsite: timed here on its own, against the empty call.

use super::many::Proc;
use super::{Channel, Rng, connect, get_one_kb, load, prepare_get, setup_node};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
    trace_service_server::{TraceService, TraceServiceServer},
};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Rounds per figure (each runs both nodes once); BENCH_ROUNDS overrides.
fn rounds() -> usize {
    std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(9)
}

/// One loaded second of `what` at `conc` against `chs`: calls/s.
async fn second(what: &str, conc: usize, chs: &[Channel]) -> f64 {
    let chs = chs.to_vec();
    let (rate, _, errs) = match what {
        "empty" => {
            load(conc, 1.0, move |i| {
                let mut h = tonic_health::pb::health_client::HealthClient::new(
                    chs[i as usize % chs.len()].clone(),
                );
                async move {
                    h.check(tonic_health::pb::HealthCheckRequest::default())
                        .await
                        .map(|_| ())
                }
            })
            .await
        }
        _ => {
            let chs = std::sync::Arc::new(chs);
            load(conc, 1.0, move |i| get_one_kb(chs.clone(), i)).await
        }
    };
    assert_eq!(errs, 0);
    rate
}

/// An OTLP receiver that counts the spans it gets.
#[derive(Clone, Default)]
struct Sink(Arc<AtomicU64>);

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let n: usize = req
            .get_ref()
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        self.0.fetch_add(n as u64, Ordering::Relaxed);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// Time of one call's disabled span sites (a gRPC call's span with its
/// status, a store read's span, the trace context a forward would write),
/// under the subscriber a node without `--otlp-endpoint` runs (logs at
/// `warn`): ns a call.
fn disabled_spans_ns() -> f64 {
    use tracing_subscriber::prelude::*;
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::sink)
        .with_filter(tracing_subscriber::EnvFilter::new("warn"));
    let subscriber = tracing_subscriber::registry().with(logs);
    tracing::subscriber::with_default(subscriber, || {
        let n = 2_000_000u32;
        let t = std::time::Instant::now();
        for i in 0..n {
            let call = collector::traces::server_span(|_| None, "/a.B/C", "node");
            let _in = call.enter();
            let read = collector::traces::store_span("sqlite.read", "ns", "coll");
            std::hint::black_box(&read);
            collector::traces::propagate(&read, |_, _| {});
            collector::traces::record_status(&call, (i & 1) as i32);
        }
        t.elapsed().as_nanos() as f64 / f64::from(n)
    })
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

pub async fn ops_phase(dir: &std::path::Path, pool: &prost_reflect::DescriptorPool) {
    let sink = Sink::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(sink.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let (on, _) = Proc::start_with(&dir.join("ops-on"), &[]);
    let (off, _) = Proc::start_with(&dir.join("ops-off"), &["--no-metrics"]);
    let (traced, _) = Proc::start_with(&dir.join("ops-traced"), &["--otlp-endpoint", &endpoint]);
    let nodes = [&on, &off, &traced];
    let mut channels: [Vec<Channel>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    for (k, p) in nodes.into_iter().enumerate() {
        for _ in 0..4 {
            channels[k].push(connect(p.addr).await);
        }
        setup_node(&channels[k][0]).await;
        prepare_get(&channels[k][0], pool, &mut Rng(7)).await;
    }
    let mut empty_c1 = 0.0;
    for what in ["empty", "get"] {
        for conc in [1usize, 64] {
            let (mut metered, mut traced_r) = (Vec::new(), Vec::new());
            let mut rates = [Vec::new(), Vec::new(), Vec::new()];
            for round in 0..rounds() {
                // Rotate which goes first, so warm-up and drift even out.
                let mut r = [0.0; 3];
                for j in 0..3 {
                    let k = (round + j) % 3;
                    r[k] = second(what, conc, &channels[k]).await;
                }
                metered.push(r[0] / r[1]);
                traced_r.push(r[2] / r[0]);
                for k in 0..3 {
                    rates[k].push(r[k]);
                }
            }
            let m = |k: usize| median(rates[k].clone());
            if what == "empty" && conc == 1 {
                empty_c1 = m(1);
            }
            let name = if what == "empty" {
                "empty call  "
            } else {
                "Get 1 KB    "
            };
            let range = |xs: &[f64]| {
                (
                    xs.iter().cloned().fold(f64::INFINITY, f64::min),
                    xs.iter().cloned().fold(0.0, f64::max),
                )
            };
            let ((mlo, mhi), (tlo, thi)) = (range(&metered), range(&traced_r));
            println!(
                "(o) {name} c={conc:<3} metrics on {:>8.0}, off {:>8.0}, on + traces {:>8.0} calls/s (medians of {} rotating 1 s rounds)",
                m(0),
                m(1),
                m(2),
                metered.len()
            );
            println!(
                "(o)                       metrics on/off = {:.3} (target >= 0.97; rounds {mlo:.2}–{mhi:.2}); exporting traces (on + traces)/on = {:.3} (rounds {tlo:.2}–{thi:.2})",
                median(metered.clone()),
                median(traced_r.clone()),
            );
        }
    }
    let ns = tokio::task::spawn_blocking(disabled_spans_ns)
        .await
        .unwrap();
    println!(
        "(o) traces off: one call's disabled span sites {ns:.1} ns = {:.4}% of an empty call at c=1 ({:.0} µs)",
        100.0 * ns / (1e9 / empty_c1),
        1e6 / empty_c1
    );
    println!(
        "(o) the traced node exported {} spans",
        sink.0.load(Ordering::Relaxed)
    );
    on.stop();
    off.stop();
    traced.stop();
}
