//! What the client commands share: the JSON shape of records, collections
//! and peers, printing, reading the files a command names, and the exit code
//! of a failed command.

use collector::proto;
use serde_json::{Value as Json, json};
use std::path::Path;
use tonic::Status;

/// Prints a command's result as pretty JSON on stdout (nothing for null:
/// the command's output was something else, e.g. a file's bytes).
pub fn print(out: &Json) {
    if out.is_null() {
        return;
    }
    println!(
        "{}",
        serde_json::to_string_pretty(out).expect("JSON prints")
    );
}

/// Like grpcurl: a failed command exits with 64 + the gRPC status code.
pub fn exit_code(status: &Status) -> u8 {
    64 + status.code() as u8
}

/// A file's text, or INVALID_ARGUMENT naming the file.
pub fn read_text(path: &Path) -> Result<String, Status> {
    std::fs::read_to_string(path)
        .map_err(|e| Status::invalid_argument(format!("{}: {e}", path.display())))
}

/// A file's bytes, or INVALID_ARGUMENT naming the file.
pub fn read_bytes(path: &Path) -> Result<Vec<u8>, Status> {
    std::fs::read(path).map_err(|e| Status::invalid_argument(format!("{}: {e}", path.display())))
}

/// A .proto file as a source to register under its file name.
pub fn proto_source(path: &Path) -> Result<proto::ProtoSource, Status> {
    Ok(proto::ProtoSource {
        name: path
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default(),
        content: read_text(path)?,
    })
}

/// Parses KEY=VALUE (labels).
pub fn parse_label(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))
}

/// A record, its payload as JSON.
pub fn record_json(r: proto::Record) -> Json {
    let data: Json = serde_json::from_str(&r.json).unwrap_or(Json::Null);
    let ts = |t: Option<prost_types::Timestamp>| t.map(|t| t.to_string()).unwrap_or_default();
    json!({
        "id": r.id,
        "version": r.version,
        "labels": r.labels,
        "created_at": ts(r.created_at),
        "updated_at": ts(r.updated_at),
        "data": data,
    })
}

/// A collection's description.
pub fn info_json(c: proto::CollectionInfo) -> Json {
    json!({
        "namespace": c.namespace,
        "name": c.name,
        "message_type": c.message_type,
        "labels": c.labels,
        "description": c.description,
        "indexes": c.indexes,
        "record_count": c.record_count,
        "size_bytes": c.size_bytes,
        "file_count": c.file_count,
        "file_bytes": c.file_bytes,
        "node_id": c.node_id,
        "node_address": c.node_address,
        "backup_policy": c.backup_policy.map(|p| json!({
            "max_backups": p.max_backups,
            "retention_seconds": p.retention_seconds,
            "interval_seconds": p.interval_seconds,
        })),
    })
}

/// A file attached to a record.
pub fn file_json(f: proto::FileInfo) -> Json {
    let ts = |t: Option<prost_types::Timestamp>| t.map(|t| t.to_string()).unwrap_or_default();
    json!({
        "record_id": f.record_id,
        "path": f.path,
        "size_bytes": f.size_bytes,
        "blake3": f.blake3,
        "content_type": f.content_type,
        "version": f.version,
        "created_at": ts(f.created_at),
        "updated_at": ts(f.updated_at),
    })
}

/// A mesh member as the node sees it.
pub fn peer_json(p: proto::Peer) -> Json {
    let state = proto::PeerState::try_from(p.state)
        .map(|s| s.as_str_name().to_lowercase())
        .unwrap_or_default();
    json!({
        "node_id": p.node_id,
        "address": p.address,
        "state": state,
        "collections": p.collections.iter().map(|c| format!("{}/{}", c.namespace, c.name)).collect::<Vec<_>>(),
        "handlers": p.handlers.iter().filter(|h| !h.removed).map(|h| json!({
            "service": format!("{}/{}", h.namespace, h.service),
            "sha256": h.sha256,
        })).collect::<Vec<_>>(),
    })
}

/// A progress bar on stderr for a long operation (drawn only on a terminal).
pub fn progress_bar(what: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(&format!(
            "{{spinner}} {what} [{{bar:30}}] {{bytes}}/{{total_bytes}} ({{bytes_per_sec}}, {{eta}})"
        ))
        .expect("a valid template")
        .progress_chars("=> "),
    );
    bar
}

/// Follows a stream of reports on a progress bar (a verify, restore, clone
/// or fetch: the step as its message); the outcome the last report carries.
pub async fn follow_steps<M, R>(
    mut stream: tonic::Streaming<M>,
    parts: impl Fn(&M) -> (&str, i64, i64),
    outcome: impl Fn(M) -> Option<R>,
) -> Result<R, tonic::Status> {
    let bar = progress_bar("{msg}");
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    let mut done = None;
    while let Some(p) = stream.message().await? {
        let (step, at, total) = parts(&p);
        bar.set_message(step.to_string());
        bar.set_length(total.max(0) as u64);
        bar.set_position(at.max(0) as u64);
        if let Some(r) = outcome(p) {
            done = Some(r);
        }
    }
    bar.finish_and_clear();
    done.ok_or_else(|| tonic::Status::internal("the node ended the stream without a result"))
}
