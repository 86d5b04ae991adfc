//! `collector peers` and `collector connect`.

use super::output::peer_json;
use super::{Clients, Outcome};
use collector::proto;
use serde_json::Value as Json;

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
