//! `collector backup …`: take, list, describe, verify, restore and delete
//! backups. Taking one shows a progress bar (on a terminal) while the node
//! copies the collection.

use super::output::{follow_steps, info_json, progress_bar};
use super::{Clients, Outcome};
use clap::Subcommand;
use collector::proto;
use serde_json::{Value as Json, json};

/// `collector backup …`
#[derive(Subcommand, Debug)]
pub enum BackupCmd {
    /// Take an online backup of a collection (it keeps serving meanwhile).
    Create {
        /// The collection.
        collection: String,
        /// Carry the bytes of the records' files too.
        #[arg(long)]
        include_files: bool,
    },
    /// Backups of the namespace, or of one collection, newest first.
    List {
        /// Only this collection's backups.
        collection: Option<String>,
        /// Only backups taken at or after this time (RFC 3339, e.g.
        /// 2026-12-03T00:00:00Z).
        #[arg(long)]
        since: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Describe one backup.
    Get {
        /// The backup's id.
        id: String,
    },
    /// Re-read a backup: hash, SQLite's integrity check, count and type.
    Verify {
        /// The backup's id.
        id: String,
    },
    /// Restore a backup: into the collection it was taken of (with
    /// --overwrite), or into a new one (--to NAME, -n for its namespace).
    Restore {
        /// The backup's id.
        id: String,
        /// The collection to restore into (default: the one backed up).
        #[arg(long)]
        to: Option<String>,
        /// Replace the collection if it exists.
        #[arg(long)]
        overwrite: bool,
        /// Restore the records' files too (the backup must include them).
        #[arg(long)]
        include_files: bool,
    },
    /// Delete a backup and its file.
    Delete {
        /// The backup's id.
        id: String,
    },
}

/// A backup as the CLI prints it.
pub fn backup_json(b: &proto::BackupInfo) -> Json {
    json!({
        "backup_id": b.backup_id,
        "namespace": b.namespace,
        "collection": b.collection,
        "message_type": b.message_type,
        "created_at": b.created_at.map(|t| t.to_string()).unwrap_or_default(),
        "record_count": b.record_count,
        "size_bytes": b.size_bytes,
        "blake3": b.blake3,
        "page_count": b.page_count,
        "page_size": b.page_size,
        "includes_files": b.includes_files,
        "file_count": b.file_count,
        "file_bytes": b.file_bytes,
        "node_id": b.node_id,
    })
}

fn parse_time(s: &str) -> Result<prost_types::Timestamp, tonic::Status> {
    s.parse::<prost_types::Timestamp>().map_err(|e| {
        tonic::Status::invalid_argument(format!(
            "--since {s:?}: {e}; give an RFC 3339 time such as 2026-12-03T00:00:00Z"
        ))
    })
}

/// Runs a `backup` command.
pub async fn run(c: &mut Clients, cmd: BackupCmd) -> Outcome {
    let ns = c.ns.clone();
    match cmd {
        BackupCmd::Create {
            collection,
            include_files,
        } => {
            let mut stream = c
                .repo
                .backup_collection(proto::BackupCollectionRequest {
                    namespace: ns,
                    name: collection,
                    include_files,
                })
                .await?
                .into_inner();
            let bar = progress_bar("backing up");
            let mut done = None;
            while let Some(p) = stream.message().await? {
                bar.set_length(p.bytes_total.max(0) as u64);
                bar.set_position(p.bytes_done.max(0) as u64);
                if let Some(b) = p.backup {
                    done = Some(b);
                }
            }
            bar.finish_and_clear();
            let b = done.ok_or_else(|| {
                tonic::Status::internal("the node ended the backup stream without a result")
            })?;
            Ok(backup_json(&b))
        }
        BackupCmd::List {
            collection,
            since,
            limit,
        } => {
            let since = since.as_deref().map(parse_time).transpose()?;
            let mut out = Vec::new();
            let mut token = String::new();
            loop {
                let r = c
                    .repo
                    .list_backups(proto::ListBackupsRequest {
                        namespace: ns.clone(),
                        collection: collection.clone().unwrap_or_default(),
                        since,
                        page_size: limit.min(collector::limits::MAX_PAGE_SIZE),
                        page_token: token,
                    })
                    .await?
                    .into_inner();
                out.extend(r.backups.iter().map(backup_json));
                token = r.next_page_token;
                if token.is_empty() || out.len() >= limit as usize {
                    break;
                }
            }
            out.truncate(limit as usize);
            Ok(Json::Array(out))
        }
        BackupCmd::Get { id } => {
            let b = c
                .repo
                .get_backup(proto::GetBackupRequest { backup_id: id })
                .await?
                .into_inner();
            Ok(backup_json(&b))
        }
        BackupCmd::Verify { id } => {
            let stream = c
                .repo
                .verify_backup(proto::VerifyBackupRequest { backup_id: id })
                .await?
                .into_inner();
            let v = follow_steps(
                stream,
                |p: &proto::VerifyProgress| (p.step.as_str(), p.bytes_done, p.bytes_total),
                |p| p.verdict,
            )
            .await?;
            Ok(json!({
                "valid": v.valid,
                "problems": v.problems,
                "backup": v.backup.as_ref().map(backup_json),
            }))
        }
        BackupCmd::Restore {
            id,
            to,
            overwrite,
            include_files,
        } => {
            let stream = c
                .repo
                .restore_backup(proto::RestoreBackupRequest {
                    backup_id: id,
                    // A namespace only with a destination: else the backup's own.
                    namespace: if to.is_some() { ns } else { String::new() },
                    name: to.unwrap_or_default(),
                    overwrite,
                    include_files,
                })
                .await?
                .into_inner();
            let info = follow_steps(
                stream,
                |p: &proto::RestoreProgress| (p.step.as_str(), p.bytes_done, p.bytes_total),
                |p| p.collection,
            )
            .await?;
            Ok(info_json(info))
        }
        BackupCmd::Delete { id } => {
            let r = c
                .repo
                .delete_backup(proto::DeleteBackupRequest { backup_id: id })
                .await?
                .into_inner();
            Ok(json!({ "freed_bytes": r.freed_bytes }))
        }
    }
}
