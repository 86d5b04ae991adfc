//! `collector quotas …`: a namespace's quotas and use, and operators'
//! overrides of the defaults.

use super::{Clients, Outcome};
use clap::Subcommand;
use collector::proto;
use serde_json::{Value as Json, json};

/// `collector quotas …`
#[derive(Subcommand, Debug)]
pub enum QuotasCmd {
    /// The namespace's (-n) quotas in force and what it uses of them here.
    Get,
    /// Override the defaults for the namespace (-n); operators only. A
    /// limit not given goes back to the node's default.
    Set {
        /// Handler calls running at once.
        #[arg(long)]
        calls: Option<u64>,
        /// Collections held.
        #[arg(long)]
        collections: Option<u64>,
        /// Bytes of records and files (0: no limit).
        #[arg(long)]
        storage_bytes: Option<u64>,
        /// Records written a second (0: no limit).
        #[arg(long)]
        records_per_second: Option<u64>,
    },
    /// Every override; operators only.
    Ls,
}

fn override_json(q: &proto::NamespaceQuota) -> Json {
    json!({
        "namespace": q.namespace,
        "calls": q.calls,
        "collections": q.collections,
        "storage_bytes": q.storage_bytes,
        "records_per_second": q.records_per_second,
        "updated_at": collector::util::timestamp(q.updated_at_us).to_string(),
        "updated_by": q.updated_by,
    })
}

fn info_json(i: proto::QuotaInfo) -> Json {
    let l = i.limits.unwrap_or_default();
    let u = i.usage.unwrap_or_default();
    json!({
        "namespace": i.namespace,
        "limits": {
            "calls": l.calls,
            "collections": l.collections,
            "storage_bytes": l.storage_bytes,
            "records_per_second": l.records_per_second,
        },
        "usage": {
            "calls": u.calls,
            "collections": u.collections,
            "storage_bytes": u.storage_bytes,
        },
        "override": i.overrides.as_ref().map(override_json),
    })
}

/// Runs a `quotas` command.
pub async fn run(c: &mut Clients, cmd: QuotasCmd) -> Outcome {
    match cmd {
        QuotasCmd::Get => {
            let r = c
                .registry
                .get_quota(proto::GetQuotaRequest {
                    namespace: c.ns.clone(),
                })
                .await?;
            Ok(info_json(r.into_inner()))
        }
        QuotasCmd::Set {
            calls,
            collections,
            storage_bytes,
            records_per_second,
        } => {
            let quota = proto::NamespaceQuota {
                namespace: c.ns.clone(),
                calls,
                collections,
                storage_bytes,
                records_per_second,
                ..Default::default()
            };
            let r = c
                .registry
                .set_quota(proto::SetQuotaRequest { quota: Some(quota) })
                .await?;
            Ok(info_json(r.into_inner()))
        }
        QuotasCmd::Ls => {
            let r = c
                .registry
                .list_quotas(proto::ListQuotasRequest {})
                .await?
                .into_inner();
            Ok(Json::Array(r.quotas.iter().map(override_json).collect()))
        }
    }
}
