//! `collector keys …`: create, list, revoke and rotate API keys, and show
//! which key the CLI calls with.

use super::{Clients, Outcome};
use clap::Subcommand;
use collector::proto;
use serde_json::{Value as Json, json};

/// `collector keys …`
#[derive(Subcommand, Debug)]
pub enum KeysCmd {
    /// Create a key; its secret is printed this once.
    Create {
        /// A role in a namespace, NAMESPACE:ROLE (read, write, develop or
        /// admin); repeat for more namespaces.
        #[arg(long = "grant", value_name = "NAMESPACE:ROLE")]
        grants: Vec<String>,
        /// Cluster-wide operator (only an operator may create one).
        #[arg(long)]
        operator: bool,
        /// Who or what the key is for.
        #[arg(long, default_value = "")]
        description: String,
        /// The key stops working after this long (e.g. 30d, 12h).
        #[arg(long)]
        ttl: Option<humantime::Duration>,
    },
    /// Keys with a grant in the namespace (-n); an operator giving none
    /// sees all.
    Ls,
    /// Revoke a key for good.
    Revoke {
        /// The key's id (the part after `ck_`).
        id: String,
    },
    /// Give a key a new secret; the old one keeps working for --grace.
    Rotate {
        /// The key's id.
        id: String,
        /// How long the old secret keeps working (default: it stops now).
        #[arg(long)]
        grace: Option<humantime::Duration>,
    },
    /// The key this CLI calls with.
    Whoami,
}

/// A key as the CLI prints it.
fn key_json(k: &proto::KeyInfo) -> Json {
    let time = |us: i64| {
        if us == 0 {
            String::new()
        } else {
            collector::util::timestamp(us).to_string()
        }
    };
    json!({
        "id": k.id,
        "description": k.description,
        "operator": k.operator,
        "grants": k.grants.iter().map(|g| format!("{}:{}", g.namespace, g.role)).collect::<Vec<_>>(),
        "created_at": time(k.created_at_us),
        "expires_at": time(k.expires_at_us),
        "revoked_at": time(k.revoked_at_us),
        "created_by": k.created_by,
    })
}

fn created_json(c: proto::CreatedKey) -> Json {
    json!({
        "key": c.key.as_ref().map(key_json),
        "token": c.token,
        "note": "the token is shown this once: store it now",
    })
}

fn parse_grant(s: &str) -> Result<proto::RoleGrant, tonic::Status> {
    let (ns, role) = s.rsplit_once(':').ok_or_else(|| {
        tonic::Status::invalid_argument(format!(
            "--grant {s:?}: give NAMESPACE:ROLE, e.g. shop:read"
        ))
    })?;
    Ok(proto::RoleGrant {
        namespace: ns.to_string(),
        role: role.to_string(),
    })
}

/// Runs a `keys` command.
pub async fn run(c: &mut Clients, cmd: KeysCmd) -> Outcome {
    match cmd {
        KeysCmd::Create {
            grants,
            operator,
            description,
            ttl,
        } => {
            let grants = grants
                .iter()
                .map(|g| parse_grant(g))
                .collect::<Result<_, _>>()?;
            let r = c
                .registry
                .create_key(proto::CreateKeyRequest {
                    description,
                    grants,
                    operator,
                    ttl_seconds: ttl.map_or(0, |t| t.as_secs().max(1)),
                })
                .await?
                .into_inner();
            Ok(created_json(r))
        }
        KeysCmd::Ls => {
            let r = c
                .registry
                .list_keys(proto::ListKeysRequest {
                    namespace: c.ns.clone(),
                })
                .await?
                .into_inner();
            Ok(Json::Array(r.keys.iter().map(key_json).collect()))
        }
        KeysCmd::Revoke { id } => {
            let k = c
                .registry
                .revoke_key(proto::RevokeKeyRequest { id })
                .await?
                .into_inner();
            Ok(key_json(&k))
        }
        KeysCmd::Rotate { id, grace } => {
            let r = c
                .registry
                .rotate_key(proto::RotateKeyRequest {
                    id,
                    grace_seconds: grace.map_or(0, |g| g.as_secs()),
                })
                .await?
                .into_inner();
            Ok(created_json(r))
        }
        KeysCmd::Whoami => {
            let k = c
                .registry
                .who_am_i(proto::WhoAmIRequest {})
                .await?
                .into_inner();
            Ok(key_json(&k))
        }
    }
}
