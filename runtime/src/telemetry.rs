//! The node's metrics, in Prometheus text format at `GET /metrics`. Code
//! that does the work counts it with the `metrics` crate's macros under
//! the names below; one process-wide recorder (`install`) keeps them, and
//! `render` adds the gauges read at scrape time (process, mesh). Without
//! `install` every macro is a no-op.
//!
//! Latencies are histograms with real buckets (`LATENCY_BUCKETS`, in
//! seconds), sizes with `SIZE_BUCKETS`: a scraper can aggregate them across
//! nodes, which summaries do not allow.

use crate::error::{Error, Result};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::Mutex;
use std::time::Duration;

/// gRPC calls by method and status code (counter).
pub const GRPC_REQUESTS: &str = "collector_grpc_requests_total";
/// Time to a gRPC call's response headers (unary: the whole call), by method.
pub const GRPC_DURATION: &str = "collector_grpc_request_duration_seconds";
/// Handler calls by namespace, service, method and outcome (ok, error,
/// deadline, resources, trap, cancelled).
pub const HANDLER_CALLS: &str = "collector_handler_calls_total";
/// Time of a handler call (re-runs included).
pub const HANDLER_DURATION: &str = "collector_handler_call_duration_seconds";
/// Time to instantiate a handler's component, `made` in the call or
/// ahead of it (a call that finds one made ahead waits for none).
pub const HANDLER_INSTANTIATION: &str = "collector_handler_instantiation_seconds";
/// A handler call's memory high-water mark (its memories and tables).
pub const HANDLER_MEMORY: &str = "collector_handler_memory_bytes";
/// Writes queued for a collection's writer (gauge).
pub const WRITE_QUEUE_DEPTH: &str = "collector_collection_write_queue_depth";
/// Record-cache lookups by `result` (hit, miss).
pub const CACHE_LOOKUPS: &str = "collector_collection_cache_lookups_total";
/// Bytes of a collection's SQLite file and WAL (gauge, at scrape).
pub const COLLECTION_BYTES: &str = "collector_collection_size_bytes";
/// Commits of a collection's writer: one transaction, one fsync.
pub const COMMIT_DURATION: &str = "collector_collection_commit_duration_seconds";
/// A commit's write of the WAL and its fsync: from SQLite's commit hook
/// (the COMMIT starting to write) to the commit's return.
pub const SYNC_DURATION: &str = "collector_collection_sync_duration_seconds";
/// Records a collection holds (gauge; counted at its first write since the
/// node started, then kept by every commit).
pub const COLLECTION_RECORDS: &str = "collector_collection_records";
/// Writes a commit carried (group commit).
pub const COMMIT_SIZE: &str = "collector_collection_group_commit_size";
/// Calls and writes refused by a quota, by namespace and quota.
pub const QUOTA_REFUSALS: &str = "collector_quota_refusals_total";
/// Gossip datagrams dropped before chitchat read them, by reason (they did
/// not open with the cluster secret, did not decode, were too large).
pub const GOSSIP_DROPPED: &str = "collector_gossip_datagrams_dropped_total";
/// Gossip datagrams sent and received (opened), by `direction`: a gossip
/// round sends one to each peer it picks.
pub const GOSSIP_DATAGRAMS: &str = "collector_gossip_datagrams_total";
/// Mesh members by state (gauge, at scrape).
pub const MESH_MEMBERS: &str = "collector_mesh_members";
/// Calls forwarded to a peer, by peer address and status code.
pub const FORWARDS: &str = "collector_forwarded_calls_total";
/// Time of a forward to a peer, by peer address.
pub const FORWARD_DURATION: &str = "collector_forwarded_call_duration_seconds";
/// Client collections this node holds (gauge, at scrape).
pub const COLLECTIONS: &str = "collector_collections";
/// Client collections open now: connections, cache or writer alive
/// (gauge, at scrape; see `store::residency`).
pub const COLLECTIONS_OPEN: &str = "collector_collections_open";
/// Resident memory of the process (gauge, at scrape).
pub const PROCESS_RSS: &str = "collector_process_resident_memory_bytes";
/// Open file descriptors of the process (gauge, at scrape).
pub const PROCESS_FDS: &str = "collector_process_open_fds";
/// Threads of the process (gauge, at scrape).
pub const PROCESS_THREADS: &str = "collector_process_threads";

/// Upper bounds of latency buckets, in seconds: 50 µs to 10 s.
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 10.0,
];
/// Upper bounds of memory buckets, in bytes: 64 KiB to 4 GiB.
pub const MEMORY_BUCKETS: [f64; 10] = [
    65_536.0,
    262_144.0,
    1_048_576.0,
    4_194_304.0,
    16_777_216.0,
    67_108_864.0,
    134_217_728.0,
    268_435_456.0,
    1_073_741_824.0,
    4_294_967_296.0,
];
/// Upper bounds of size buckets (writes per commit).
pub const SIZE_BUCKETS: [f64; 10] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0];

/// How often recorded histogram samples are folded into their buckets
/// (the exporter keeps raw samples until then).
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// The installed recorder's handle; a mutex, not a once-cell, so a node
/// starting beside another waits for its install instead of racing it.
static HANDLE: Mutex<Option<PrometheusHandle>> = Mutex::new(None);

/// Installs the process-wide recorder (once; later calls return the same
/// handle). Several nodes in one process (tests) share it.
pub fn install() -> Result<PrometheusHandle> {
    let mut installed = HANDLE.lock().expect("metrics lock");
    if let Some(h) = installed.as_ref() {
        return Ok(h.clone());
    }
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &LATENCY_BUCKETS)
        .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_size".into()), &SIZE_BUCKETS))
        .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_bytes".into()), &MEMORY_BUCKETS))
        .map_err(|e| Error::internal(format!("metrics buckets: {e}")))?
        .build_recorder();
    let handle = recorder.handle();
    if metrics::set_global_recorder(recorder).is_err() {
        // The embedding program installed its own: ours sees only the
        // gauges set at scrape.
        tracing::warn!(
            "a metrics recorder is already installed; /metrics shows only this node's gauges"
        );
    }
    let h = handle.clone();
    std::thread::Builder::new()
        .name("metrics upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_EVERY);
                h.run_upkeep();
            }
        })
        .map_err(|e| Error::internal(format!("metrics upkeep thread: {e}")))?;
    *installed = Some(handle.clone());
    Ok(handle)
}

/// What a scrape reads from the node itself.
#[derive(Debug, Default, Clone)]
pub struct Gauges {
    /// Members by state name ("alive", "dead", "myself").
    pub members: Vec<(&'static str, u64)>,
    /// Client collections held.
    pub collections: u64,
    /// Client collections open.
    pub open_collections: u64,
    /// Each client collection's namespace, name and bytes on disk.
    pub files: Vec<(String, String, u64)>,
}

/// The metrics in Prometheus text format, with `gauges` and the process's
/// own figures set just before.
pub fn render(handle: &PrometheusHandle, gauges: &Gauges) -> String {
    for (state, n) in &gauges.members {
        metrics::gauge!(MESH_MEMBERS, "state" => *state).set(*n as f64);
    }
    metrics::gauge!(COLLECTIONS).set(gauges.collections as f64);
    metrics::gauge!(COLLECTIONS_OPEN).set(gauges.open_collections as f64);
    for (ns, name, bytes) in &gauges.files {
        metrics::gauge!(COLLECTION_BYTES, "namespace" => ns.clone(), "collection" => name.clone())
            .set(*bytes as f64);
    }
    let p = process();
    metrics::gauge!(PROCESS_RSS).set(p.rss_bytes as f64);
    metrics::gauge!(PROCESS_FDS).set(p.open_fds as f64);
    metrics::gauge!(PROCESS_THREADS).set(p.threads as f64);
    handle.render()
}

/// The process's resident memory, open files and threads.
#[derive(Debug, Default, Clone, Copy)]
pub struct Process {
    /// Resident set size, bytes.
    pub rss_bytes: u64,
    /// Open file descriptors.
    pub open_fds: u64,
    /// Threads.
    pub threads: u64,
}

/// Reads `Process` from /proc (zeros where there is none).
pub fn process() -> Process {
    process_of("self")
}

/// `Process` of process `pid` (a number, or "self").
pub fn process_of(pid: &str) -> Process {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Process {
        rss_bytes: field("VmRSS:") * 1024,
        threads: field("Threads:"),
        open_fds: std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|d| d.count() as u64)
            .unwrap_or(0),
    }
}

/// The outcome label of a handler call's result.
pub fn outcome_of<T>(r: &Result<T>) -> &'static str {
    use crate::error::ErrorKind as K;
    match r {
        Ok(_) => "ok",
        Err(e) => match e.kind {
            K::DeadlineExceeded => "deadline",
            K::ResourceExhausted => "resources",
            K::Internal => "trap",
            K::Cancelled => "cancelled",
            _ => "error",
        },
    }
}

/// Every gRPC call counted so far, summed over methods: what the console's
/// charts are drawn from (rates come from two of these).
#[derive(Debug, Default, PartialEq)]
pub struct GrpcTotals {
    /// Calls answered.
    pub requests: u64,
    /// Calls answered with any status but OK.
    pub errors: u64,
    /// The latency histogram: (upper bound in seconds, calls at or under it).
    pub buckets: Vec<(f64, u64)>,
}

/// Sums `GRPC_REQUESTS` and `GRPC_DURATION`'s buckets in `text` (the
/// Prometheus text `render` makes).
pub fn grpc_totals(text: &str) -> GrpcTotals {
    let mut t = GrpcTotals::default();
    let bucket = format!("{GRPC_DURATION}_bucket");
    let mut buckets: Vec<(f64, u64)> = Vec::new();
    for line in text.lines().filter(|l| l.starts_with("collector_grpc_")) {
        let (series, value) = match line.rsplit_once(' ') {
            Some(sv) => sv,
            None => continue,
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (name, labels) = series.split_once('{').unwrap_or((series, ""));
        let label = |key: &str| {
            labels
                .split(',')
                .filter_map(|kv| kv.split_once('='))
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v.trim_end_matches('}').trim_matches('"'))
        };
        if name == GRPC_REQUESTS {
            t.requests += value as u64;
            if label("code").is_some_and(|c| c != "Ok") {
                t.errors += value as u64;
            }
        } else if name == bucket {
            let le = match label("le") {
                Some("+Inf") => f64::INFINITY,
                Some(le) => match le.parse() {
                    Ok(le) => le,
                    Err(_) => continue,
                },
                None => continue,
            };
            match buckets.iter_mut().find(|(b, _)| *b == le) {
                Some((_, n)) => *n += value as u64,
                None => buckets.push((le, value as u64)),
            }
        }
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    // JSON has no infinity: the last bucket's bound is the largest finite one's double.
    if let Some(last) = buckets.last_mut().filter(|b| b.0.is_infinite()) {
        last.0 = LATENCY_BUCKETS[LATENCY_BUCKETS.len() - 1] * 2.0;
    }
    t.buckets = buckets;
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_totals_sum_calls_errors_and_buckets_over_methods() {
        let text = r#"# TYPE collector_grpc_requests_total counter
collector_grpc_requests_total{method="/a/B",code="Ok"} 7
collector_grpc_requests_total{method="/a/C",code="NotFound"} 2
collector_grpc_requests_total{code="Ok",method="/a/C"} 1
collector_grpc_request_duration_seconds_bucket{method="/a/B",le="0.001"} 5
collector_grpc_request_duration_seconds_bucket{method="/a/B",le="+Inf"} 7
collector_grpc_request_duration_seconds_bucket{method="/a/C",le="0.001"} 1
collector_grpc_request_duration_seconds_bucket{method="/a/C",le="+Inf"} 3
collector_grpc_request_duration_seconds_sum{method="/a/B"} 0.02
collector_handler_calls_total{namespace="x"} 9
"#;
        let t = grpc_totals(text);
        assert_eq!((t.requests, t.errors), (10, 2));
        assert_eq!(t.buckets, vec![(0.001, 6), (20.0, 10)]);
    }
}
