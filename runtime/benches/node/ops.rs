//! Phase o: what operations cost. Two node processes of this build, one
//! keeping metrics and one started with `--no-metrics` (neither exports
//! traces: without `--otlp-endpoint` a span site is one cached check),
//! take the same load in alternating one-second rounds, so drift of this
//! noisy machine falls on both alike; the median of the rounds' ratios is
//! the cost of keeping metrics.

use super::many::Proc;
use super::{Channel, Rng, connect, load, prepare_get, setup_node};
use collector::proto::{self, collection_service_client::CollectionServiceClient};

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
            load(conc, 1.0, move |i| {
                let mut c = CollectionServiceClient::new(chs[i as usize % chs.len()].clone());
                async move {
                    c.get(proto::GetRequest {
                        namespace: "bench".into(),
                        collection: "small".into(),
                        id: "one-kb".into(),
                        include_json: false,
                    })
                    .await
                    .map(|_| ())
                }
            })
            .await
        }
    };
    assert_eq!(errs, 0);
    rate
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

pub async fn ops_phase(dir: &std::path::Path, pool: &prost_reflect::DescriptorPool) {
    let (on, _) = Proc::start_with(&dir.join("ops-on"), &[]);
    let (off, _) = Proc::start_with(&dir.join("ops-off"), &["--no-metrics"]);
    let mut channels: [Vec<Channel>; 2] = [Vec::new(), Vec::new()];
    for (k, p) in [&on, &off].into_iter().enumerate() {
        for _ in 0..4 {
            channels[k].push(connect(p.addr).await);
        }
        setup_node(&channels[k][0]).await;
        prepare_get(&channels[k][0], pool, &mut Rng(7)).await;
    }
    for what in ["empty", "get"] {
        for conc in [1usize, 64] {
            let (mut ratios, mut rates) = (Vec::new(), [Vec::new(), Vec::new()]);
            for round in 0..rounds() {
                // Alternate which goes first, so warm-up and drift even out.
                let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
                let mut r = [0.0; 2];
                for k in order {
                    r[k] = second(what, conc, &channels[k]).await;
                }
                ratios.push(r[0] / r[1]);
                rates[0].push(r[0]);
                rates[1].push(r[1]);
            }
            let name = if what == "empty" {
                "empty call  "
            } else {
                "Get 1 KB    "
            };
            println!(
                "(o) {name} c={conc:<3} metrics on {:>8.0} calls/s, off {:>8.0} (medians of {} alternating 1 s rounds)  on/off = {:.3} (target >= 0.97; rounds {:.2}–{:.2})",
                median(rates[0].clone()),
                median(rates[1].clone()),
                ratios.len(),
                median(ratios.clone()),
                ratios.iter().cloned().fold(f64::INFINITY, f64::min),
                ratios.iter().cloned().fold(0.0, f64::max),
            );
        }
    }
    on.stop();
    off.stop();
}
