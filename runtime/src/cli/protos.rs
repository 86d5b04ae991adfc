//! `collector protos …`: registered .proto files.

use super::output::proto_source;
use super::{Clients, Outcome};
use clap::Subcommand;
use collector::proto;
use serde_json::{Value as Json, json};
use std::path::PathBuf;

/// `collector protos …`
#[derive(Subcommand, Debug)]
pub enum ProtosCmd {
    /// Register .proto files (compiled on the node); imports resolve against
    /// files registered earlier in the namespace and google/protobuf/*.
    Register {
        /// .proto files; each is registered under its file name.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// List the registered files.
    List,
}

/// Runs a `protos` command.
pub async fn run(c: &mut Clients, cmd: ProtosCmd) -> Outcome {
    match cmd {
        ProtosCmd::Register { files } => {
            let sources = files
                .iter()
                .map(|f| proto_source(f))
                .collect::<Result<_, _>>()?;
            let r = c
                .registry
                .register_proto(proto::RegisterProtoRequest {
                    namespace: c.ns.clone(),
                    sources,
                    ..Default::default()
                })
                .await?
                .into_inner();
            Ok(
                json!({ "registered_files": r.registered_files, "message_types": r.message_types, "services": r.services }),
            )
        }
        ProtosCmd::List => {
            let r = c
                .registry
                .list_protos(proto::ListProtosRequest {
                    namespace: c.ns.clone(),
                })
                .await?
                .into_inner();
            Ok(Json::Array(r.files.into_iter().map(|f| json!({ "name": f.name, "package": f.package, "message_types": f.message_types, "services": f.services })).collect()))
        }
    }
}
