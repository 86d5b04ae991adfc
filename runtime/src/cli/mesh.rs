//! `collector info`, `collector peers` and `collector connect`.

use super::output::peer_json;
use super::{Clients, Outcome};
use collector::proto;
use serde_json::Value as Json;

/// The node the CLI talks to.
pub async fn info(c: &mut Clients) -> Outcome {
    let r = c.repo.meta(proto::MetaRequest {}).await?.into_inner();
    Ok(serde_json::json!({
        "version": r.version,
        "node_id": r.node_id,
        "address": r.address,
        "started_at": r.started_at.map(|t| t.to_string()),
        "uptime_seconds": r.uptime_seconds,
        "data_dir_bytes": r.data_dir_bytes,
        "collections": r.collections,
    }))
}

/// The members of the mesh as the node sees them.
pub async fn peers(c: &Clients) -> Outcome {
    let r = c
        .dispatcher()
        .list_peers(proto::ListPeersRequest {})
        .await?
        .into_inner();
    Ok(Json::Array(r.peers.into_iter().map(peer_json).collect()))
}

/// Makes the node join the mesh of the node at `address`.
pub async fn connect(c: &Clients, address: String) -> Outcome {
    let r = c
        .dispatcher()
        .connect(proto::ConnectRequest { address })
        .await?
        .into_inner();
    Ok(Json::Array(r.peers.into_iter().map(peer_json).collect()))
}
