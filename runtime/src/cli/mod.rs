//! Client commands of the `collector` binary: thin wrappers over the gRPC
//! API that take and print JSON, so a node can be used with no other tool.
//! One file per command group; `output` holds what they share: the JSON
//! shapes, printing, reading input files and the exit code of a failure.

mod backups;
mod collections;
mod files;
mod keys;
mod logs;
mod mesh;
mod output;
mod protos;
mod quotas;
mod records;
mod services;
mod transfers;

pub use output::exit_code;

use clap::{Args, Subcommand};
use collector::api::bearer::{Bearer, KeyedChannel};
use collector::limits;
use collector::proto::{
    collection_repo_client::CollectionRepoClient,
    collection_service_client::CollectionServiceClient,
    collective_dispatcher_client::CollectiveDispatcherClient,
    collector_registry_client::CollectorRegistryClient,
};
use std::path::PathBuf;
use tonic::Status;
use tonic::transport::Channel;

/// What a client command returns: JSON to print, or the status to report.
type Outcome = Result<serde_json::Value, Status>;

/// Which node to talk to, and in which namespace.
#[derive(Args, Debug, Clone)]
pub struct Conn {
    /// The node to talk to (client commands).
    #[arg(long, global = true, env = "COLLECTOR_NODE", default_value = limits::DEFAULT_LISTEN)]
    pub node: String,
    /// Namespace: for `serve`, the one used when a request names none
    /// (default "default"); for client commands, the one to work in
    /// (default: the node's).
    #[arg(
        long,
        short = 'n',
        global = true,
        env = "COLLECTOR_NAMESPACE",
        default_value = ""
    )]
    pub namespace: String,
    /// The API key to call with (client commands). Default: the key in
    /// --token-file.
    #[arg(long, global = true, env = "COLLECTOR_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A file holding the API key, used when no --token is given: by default
    /// the operator key a node started in this directory wrote.
    #[arg(
        long,
        global = true,
        env = "COLLECTOR_TOKEN_FILE",
        default_value = "data/operator.key"
    )]
    pub token_file: PathBuf,
    /// Call the node over TLS, trusting the roots in this PEM file (e.g. the
    /// node's certificate, or the CA that signed it).
    #[arg(long, global = true, env = "COLLECTOR_CACERT")]
    pub cacert: Option<PathBuf>,
    /// With --cacert: the client certificate (PEM) to show a node that asks
    /// for one (needs --key).
    #[arg(long, global = true, env = "COLLECTOR_CERT", requires = "key")]
    pub cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, global = true, env = "COLLECTOR_KEY", requires = "cert")]
    pub key: Option<PathBuf>,
}

impl Conn {
    /// The key to call with: --token, else the file's (None if neither).
    fn bearer(&self) -> Result<Bearer, Status> {
        let key = match &self.token {
            Some(t) => t.clone(),
            None => match std::fs::read_to_string(&self.token_file) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Bearer::default()),
                Err(e) => {
                    return Err(Status::invalid_argument(format!(
                        "--token-file {}: {e}",
                        self.token_file.display()
                    )));
                }
            },
        };
        Bearer::new(&key).ok_or_else(|| {
            Status::invalid_argument(
                "the API key is not valid header text; give the key as created",
            )
        })
    }
}

/// A client command.
#[derive(Subcommand, Debug)]
pub enum ClientCmd {
    /// Registered proto types.
    Protos {
        #[command(subcommand)]
        cmd: protos::ProtosCmd,
    },
    /// Collections.
    Collections {
        #[command(subcommand)]
        cmd: collections::CollectionsCmd,
    },
    /// Backups: take, list, verify, restore, delete.
    Backup {
        #[command(subcommand)]
        cmd: backups::BackupCmd,
    },
    /// API keys: create, list, revoke, rotate, and which key you are.
    Keys {
        #[command(subcommand)]
        cmd: keys::KeysCmd,
    },
    /// What handlers logged on the node (newest first; filter by
    /// --service and --level).
    Logs(logs::LogsArgs),
    /// Quotas: what a namespace may use and uses; operators' overrides.
    Quotas {
        #[command(subcommand)]
        cmd: quotas::QuotasCmd,
    },
    /// Files attached to records: put, get, stat, ls, rm.
    Files {
        #[command(subcommand)]
        cmd: files::FilesCmd,
    },
    /// Copy a collection to a new name, here or on another member of the mesh.
    Clone(transfers::Clone),
    /// Copy a collection from another member of the mesh to this node.
    Fetch(transfers::Fetch),
    /// Store a record given as JSON (prints it back with its id and version).
    Put(records::Put),
    /// Replace a record's payload with JSON.
    Update(records::Update),
    /// Read one record.
    Get(records::RecordRef),
    /// Delete one record.
    Delete(records::RecordRef),
    /// Search a collection: full text, filters, labels, order.
    Search(records::Search),
    /// Register a service: its .proto (compiled on the node) and its Wasm component.
    Register(services::Register),
    /// Call a registered method with JSON input; prints the JSON output.
    Call(services::Call),
    /// Run a registered method where it belongs in the mesh (the owner of
    /// --collection, or --target, or a node that has the service); prints
    /// the output and which node ran it.
    Dispatch(services::Dispatch),
    /// The node: version, id, address, uptime, data dir size, collections.
    Info,
    /// The members of the mesh as the node sees them.
    Peers,
    /// Make the node join the mesh of another node (host:port).
    Connect {
        /// The gRPC address (host:port) of a member of the mesh to join.
        address: String,
    },
}

/// The node's services, over one channel, in the chosen namespace.
pub struct Clients {
    /// The namespace to work in ("" = the node's default).
    ns: String,
    channel: KeyedChannel,
    registry: CollectorRegistryClient<KeyedChannel>,
    repo: CollectionRepoClient<KeyedChannel>,
    records: CollectionServiceClient<KeyedChannel>,
}

impl Clients {
    async fn connect(conn: &Conn) -> Result<Self, Status> {
        let bearer = conn.bearer()?;
        let scheme = if conn.cacert.is_some() {
            "https"
        } else {
            "http"
        };
        let mut endpoint = Channel::from_shared(format!("{scheme}://{}", conn.node))
            .map_err(|e| Status::invalid_argument(format!("--node {}: {e}", conn.node)))?;
        if let Some(ca) = &conn.cacert {
            let pem = std::fs::read(ca)
                .map_err(|e| Status::invalid_argument(format!("--cacert {}: {e}", ca.display())))?;
            let read = |p: &PathBuf, flag: &str| {
                std::fs::read(p)
                    .map_err(|e| Status::invalid_argument(format!("{flag} {}: {e}", p.display())))
            };
            let tls = match (&conn.cert, &conn.key) {
                (Some(c), Some(k)) => collector::api::tls::client_config_with_identity(
                    &pem,
                    &read(c, "--cert")?,
                    &read(k, "--key")?,
                ),
                _ => collector::api::tls::client_config(&pem),
            };
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| Status::invalid_argument(format!("--cacert: {e}")))?;
        }
        let channel = endpoint.connect().await.map_err(|e| {
            Status::unavailable(format!(
                "cannot reach a node at {}: {e}; start one with `collector serve`",
                conn.node
            ))
        })?;
        let channel = bearer.on(channel);
        Ok(Clients {
            ns: conn.namespace.clone(),
            registry: CollectorRegistryClient::new(channel.clone()),
            repo: CollectionRepoClient::new(channel.clone()),
            records: CollectionServiceClient::new(channel.clone()),
            channel,
        })
    }

    fn dispatcher(&self) -> CollectiveDispatcherClient<KeyedChannel> {
        CollectiveDispatcherClient::new(self.channel.clone())
    }
}

/// Runs a client command and prints its JSON result.
pub async fn run(conn: Conn, cmd: ClientCmd) -> Result<(), Status> {
    let mut c = Clients::connect(&conn).await?;
    let out = match cmd {
        ClientCmd::Protos { cmd } => protos::run(&mut c, cmd).await,
        ClientCmd::Collections { cmd } => collections::run(&mut c, cmd).await,
        ClientCmd::Backup { cmd } => backups::run(&mut c, cmd).await,
        ClientCmd::Files { cmd } => files::run(&mut c, cmd).await,
        ClientCmd::Keys { cmd } => keys::run(&mut c, cmd).await,
        ClientCmd::Quotas { cmd } => quotas::run(&mut c, cmd).await,
        ClientCmd::Logs(a) => logs::run(&mut c, a).await,
        ClientCmd::Clone(a) => transfers::clone(&mut c, a).await,
        ClientCmd::Fetch(a) => transfers::fetch(&mut c, a).await,
        ClientCmd::Put(a) => records::put(&mut c, a).await,
        ClientCmd::Update(a) => records::update(&mut c, a).await,
        ClientCmd::Get(a) => records::get(&mut c, a).await,
        ClientCmd::Delete(a) => records::delete(&mut c, a).await,
        ClientCmd::Search(a) => records::search(&mut c, a).await,
        ClientCmd::Register(a) => services::register(&mut c, a).await,
        ClientCmd::Call(a) => services::call(&mut c, a).await,
        ClientCmd::Dispatch(a) => services::dispatch(&mut c, a).await,
        ClientCmd::Info => mesh::info(&mut c).await,
        ClientCmd::Peers => mesh::peers(&c).await,
        ClientCmd::Connect { address } => mesh::connect(&c, address).await,
    }?;
    output::print(&out);
    Ok(())
}
