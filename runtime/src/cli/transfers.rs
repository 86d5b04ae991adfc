//! `collector clone` and `collector fetch`: copy a collection to a new name,
//! here or on another member of the mesh, or from another member to here,
//! with a progress bar on a terminal.

use super::output::{follow_steps, info_json};
use super::{Clients, Outcome};
use clap::Args;
use collector::proto;

/// `collector clone NAME --to NEW`
#[derive(Args, Debug)]
pub struct Clone {
    /// The collection to copy.
    name: String,
    /// The copy's name.
    #[arg(long)]
    to: String,
    /// The copy's namespace (default: the same).
    #[arg(long = "to-namespace", default_value = "")]
    to_namespace: String,
    /// A member of the mesh (node id or address) to put the copy on
    /// (default: the node holding the collection).
    #[arg(long = "to-node", default_value = "")]
    to_node: String,
    /// Copy the records' files too.
    #[arg(long)]
    include_files: bool,
}

/// `collector fetch NAME --from NODE`
#[derive(Args, Debug)]
pub struct Fetch {
    /// The collection to copy here.
    name: String,
    /// The member of the mesh (node id or address) that holds it.
    #[arg(long)]
    from: String,
    /// The name it gets here (default: the same).
    #[arg(long = "as", default_value = "")]
    as_name: String,
    /// Copy the records' files too.
    #[arg(long)]
    include_files: bool,
}

async fn follow(stream: tonic::Streaming<proto::TransferProgress>) -> Outcome {
    let c = follow_steps(
        stream,
        |p| (p.step.as_str(), p.bytes_done, p.bytes_total),
        |p| p.collection,
    )
    .await?;
    Ok(info_json(c))
}

/// Runs `clone`.
pub async fn clone(c: &mut Clients, a: Clone) -> Outcome {
    let req = proto::CloneRequest {
        namespace: c.ns.clone(),
        name: a.name,
        dest_namespace: a.to_namespace,
        dest_name: a.to,
        dest_node: a.to_node,
        include_files: a.include_files,
    };
    // The generated `clone` RPC, not `Clone::clone`.
    let stream = proto::collection_repo_client::CollectionRepoClient::clone(&mut c.repo, req)
        .await?
        .into_inner();
    follow(stream).await
}

/// Runs `fetch`.
pub async fn fetch(c: &mut Clients, a: Fetch) -> Outcome {
    let stream = c
        .repo
        .fetch(proto::FetchRequest {
            source_node: a.from,
            namespace: c.ns.clone(),
            name: a.name,
            dest_namespace: String::new(),
            dest_name: a.as_name,
            include_files: a.include_files,
        })
        .await?
        .into_inner();
    follow(stream).await
}
