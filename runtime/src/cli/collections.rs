//! `collector collections …`: create, list, route, describe, update and
//! delete collections.

use super::output::{info_json, parse_label};
use super::{Clients, Outcome};
use clap::Subcommand;
use collector::{limits, proto};
use serde_json::{Value as Json, json};

/// `collector collections …`
#[derive(Subcommand, Debug)]
pub enum CollectionsCmd {
    /// Create a collection of a registered message type.
    Create {
        /// The collection's name (unique in the namespace, across the mesh).
        name: String,
        /// Full message type name, e.g. shop.Order.
        #[arg(long = "type")]
        message_type: String,
        /// Field path to index (repeatable).
        #[arg(long = "index")]
        indexes: Vec<String>,
        /// Label KEY=VALUE (repeatable).
        #[arg(long = "label", value_parser = parse_label)]
        labels: Vec<(String, String)>,
        /// Free text describing the collection.
        #[arg(long, default_value = "")]
        description: String,
        /// Let the mesh choose the node (rendezvous hashing over live members).
        #[arg(long)]
        auto: bool,
        #[command(flatten)]
        policy: PolicyArgs,
    },
    /// List the namespace's collections, across the mesh.
    List,
    /// Which node owns a collection.
    Route {
        /// The collection.
        name: String,
    },
    /// Describe one collection (record count, size).
    Get {
        /// The collection.
        name: String,
    },
    /// Change a collection's description, labels or indexes.
    Update {
        /// The collection.
        name: String,
        /// A new description.
        #[arg(long)]
        description: Option<String>,
        /// Label KEY=VALUE to add or replace (repeatable).
        #[arg(long = "label", value_parser = parse_label)]
        labels: Vec<(String, String)>,
        /// Label key to remove (repeatable).
        #[arg(long = "remove-label")]
        remove_labels: Vec<String>,
        /// Field path to index (repeatable).
        #[arg(long = "add-index")]
        add_indexes: Vec<String>,
        /// Indexed field path to drop (repeatable).
        #[arg(long = "drop-index")]
        drop_indexes: Vec<String>,
        /// Any of these replaces the whole backup policy.
        #[command(flatten)]
        policy: PolicyArgs,
    },
    /// Delete a collection and all its records.
    Delete {
        /// The collection.
        name: String,
    },
}

/// A collection's backup policy on the command line.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct PolicyArgs {
    /// Back the collection up this often (e.g. 1h, 30m).
    #[arg(long = "backup-every", value_parser = humantime::parse_duration)]
    every: Option<std::time::Duration>,
    /// Keep at most this many backups, the newest.
    #[arg(long = "keep-backups")]
    keep: Option<u32>,
    /// Delete backups older than this (e.g. 7d).
    #[arg(long = "keep-backups-for", value_parser = humantime::parse_duration)]
    keep_for: Option<std::time::Duration>,
}

impl PolicyArgs {
    /// The policy, if any flag was given.
    fn policy(&self) -> Option<proto::BackupPolicy> {
        if self.every.is_none() && self.keep.is_none() && self.keep_for.is_none() {
            return None;
        }
        Some(proto::BackupPolicy {
            max_backups: self.keep.unwrap_or(0),
            retention_seconds: self.keep_for.map_or(0, |d| d.as_secs()),
            interval_seconds: self.every.map_or(0, |d| d.as_secs()),
        })
    }
}

/// Runs a `collections` command.
pub async fn run(c: &mut Clients, cmd: CollectionsCmd) -> Outcome {
    let ns = c.ns.clone();
    match cmd {
        CollectionsCmd::Create {
            name,
            message_type,
            indexes,
            labels,
            description,
            auto,
            policy,
        } => {
            let placement = if auto {
                proto::Placement::Auto
            } else {
                proto::Placement::Local
            };
            let r = c
                .repo
                .create_collection(proto::CreateCollectionRequest {
                    namespace: ns,
                    name,
                    message_type,
                    labels: labels.into_iter().collect(),
                    description,
                    indexes,
                    placement: placement as i32,
                    backup_policy: policy.policy(),
                })
                .await?
                .into_inner();
            Ok(info_json(r))
        }
        CollectionsCmd::List => {
            // Discover reads an empty namespace as "every namespace", so name
            // the one the node would use.
            let ns = if ns.is_empty() {
                limits::DEFAULT_NAMESPACE.to_string()
            } else {
                ns
            };
            let mut all = Vec::new();
            let mut token = String::new();
            loop {
                let r = c
                    .repo
                    .discover(proto::DiscoverRequest {
                        namespace: ns.clone(),
                        page_token: token,
                        ..Default::default()
                    })
                    .await?
                    .into_inner();
                all.extend(r.collections.into_iter().map(info_json));
                if r.next_page_token.is_empty() {
                    break;
                }
                token = r.next_page_token;
            }
            Ok(Json::Array(all))
        }
        CollectionsCmd::Get { name } => Ok(info_json(
            c.repo
                .get_collection(proto::GetCollectionRequest {
                    namespace: ns,
                    name,
                })
                .await?
                .into_inner(),
        )),
        CollectionsCmd::Update {
            name,
            description,
            labels,
            remove_labels,
            add_indexes,
            drop_indexes,
            policy,
        } => Ok(info_json(
            c.repo
                .update_collection(proto::UpdateCollectionRequest {
                    namespace: ns,
                    name,
                    description,
                    set_labels: labels.into_iter().collect(),
                    remove_labels,
                    add_indexes,
                    drop_indexes,
                    backup_policy: policy.policy(),
                })
                .await?
                .into_inner(),
        )),
        CollectionsCmd::Route { name } => {
            let r = c
                .repo
                .route(proto::RouteRequest {
                    namespace: ns,
                    name: name.clone(),
                })
                .await?
                .into_inner();
            Ok(
                json!({ "collection": name, "node_id": r.node_id, "address": r.address, "alive": r.alive }),
            )
        }
        CollectionsCmd::Delete { name } => {
            c.repo
                .delete_collection(proto::DeleteCollectionRequest {
                    namespace: ns,
                    name: name.clone(),
                })
                .await?;
            Ok(json!({ "deleted": name }))
        }
    }
}
