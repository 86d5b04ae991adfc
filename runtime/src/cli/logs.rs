//! `collector logs`: what handlers logged on the node, newest first.

use super::{Clients, Outcome};
use collector::proto;
use serde_json::json;

/// `collector logs`
#[derive(clap::Args, Debug)]
pub struct LogsArgs {
    /// Only this service's lines (e.g. shop.Orders).
    #[arg(long, default_value = "")]
    service: String,
    /// Only lines at least this serious: trace, debug, info, warn, error.
    #[arg(long, default_value = "")]
    level: String,
    /// At most this many lines (at most 1000).
    #[arg(long, default_value_t = 100)]
    limit: u32,
    /// Older lines: the `next_before` of the previous answer.
    #[arg(long, default_value_t = 0)]
    before: u64,
}

/// Runs `logs`.
pub async fn run(c: &mut Clients, a: LogsArgs) -> Outcome {
    let r = c
        .registry
        .list_handler_logs(proto::ListHandlerLogsRequest {
            namespace: c.ns.clone(),
            service: a.service,
            min_level: a.level,
            limit: a.limit,
            before: a.before,
        })
        .await?
        .into_inner();
    Ok(json!({
        "lines": r.lines.into_iter().map(|l| json!({
            "time": collector::util::timestamp(l.time_us).to_string(),
            "level": l.level,
            "service": l.service,
            "method": l.method,
            "message": l.message,
            "seq": l.seq,
        })).collect::<Vec<_>>(),
        "next_before": r.next_before,
    }))
}
