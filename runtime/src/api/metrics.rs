//! `GET /metrics`: the node's metrics (`telemetry`) in Prometheus text
//! format, on the node's own port, behind the same gate as every call (an
//! operator key: `authorization: Bearer …`, which Prometheus sends with
//! `authorization: { credentials_file: … }`), and over the same TLS.

use super::ApiState;
use crate::mesh::view::MemberState;
use crate::store::collection::disk_bytes;
use crate::telemetry::{self, Gauges};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::PrometheusHandle;
use std::sync::Arc;

/// The path the metrics are served on.
pub const PATH: &str = "/metrics";

/// Renders the metrics (on a blocking thread: it reads /proc and may
/// format many series).
pub async fn scrape(state: Arc<ApiState>, handle: Option<PrometheusHandle>) -> Response {
    let Some(handle) = handle else {
        return (
            StatusCode::NOT_FOUND,
            "metrics are off on this node (started with --no-metrics)\n",
        )
            .into_response();
    };
    let view = state.mesh.view();
    let count = |s: MemberState| view.members.values().filter(|m| m.state == s).count() as u64;
    let paths: Vec<_> = state
        .catalog
        .owned()
        .into_iter()
        .filter_map(|m| {
            let c = state.catalog.get(&m.namespace, &m.name).ok()?;
            Some((
                m.namespace.to_string(),
                m.name.to_string(),
                c.path().to_path_buf(),
            ))
        })
        .collect();
    let mut gauges = Gauges {
        members: vec![
            ("myself", count(MemberState::Myself)),
            ("alive", count(MemberState::Alive)),
            ("dead", count(MemberState::Dead)),
        ],
        collections: paths.len() as u64,
        open_collections: state.catalog.open_count() as u64,
        files: Vec::new(),
    };
    let rendered = tokio::task::spawn_blocking(move || {
        gauges.files = paths
            .into_iter()
            .map(|(ns, name, path)| (ns, name, disk_bytes(&path)))
            .collect();
        telemetry::render(&handle, &gauges)
    });
    match rendered.await {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("rendering the metrics failed: {e}\n"),
        )
            .into_response(),
    }
}
