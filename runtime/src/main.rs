//! The `collector` command: run a node (`serve`), or talk to one.

mod cli;

use clap::{Parser, Subcommand};
use collector::{Config, Node, limits};
use std::net::SocketAddr;
use std::path::PathBuf;

// glibc malloc's arena locks showed up as the top user-space cost under load;
// mimalloc roughly doubled empty-call throughput on the benchmark.

/// `println!` that does not panic when stdout is closed: a node whose
/// output pipe went away (`collector serve | head`) keeps serving.
macro_rules! say {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

/// `eprintln!` that does not panic when stderr is closed.
macro_rules! say_err {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($t)*);
    }};
}

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "collector",
    version,
    about = "Collector: typed protobuf collections over gRPC"
)]
struct Cli {
    #[command(flatten)]
    conn: cli::Conn,
    #[command(subcommand)]
    command: Command,
}

// Parsed once at start: the size of the serve variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run a node.
    Serve {
        /// Where the node keeps its data.
        #[arg(long, env = "COLLECTOR_DATA_DIR", default_value = limits::DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
        /// Address to listen on; port 0 picks a free port. The mesh gossips
        /// over UDP on the same port.
        #[arg(long, env = "COLLECTOR_LISTEN", default_value = limits::DEFAULT_LISTEN)]
        listen: SocketAddr,
        /// Join the mesh of these nodes (host:port of their gRPC addresses).
        #[arg(long, env = "COLLECTOR_JOIN", value_delimiter = ',')]
        join: Vec<String>,
        /// Address peers and clients reach this node at (default: --listen).
        #[arg(long, env = "COLLECTOR_ADVERTISE")]
        advertise: Option<SocketAddr>,
        /// Nodes form a mesh only with nodes of the same cluster id.
        #[arg(long, env = "COLLECTOR_CLUSTER", default_value = limits::DEFAULT_CLUSTER)]
        cluster: String,
        /// A file holding the cluster's secret (at least 16 bytes; every
        /// member needs the same one): gossip is then sealed with a key
        /// derived from it and peer calls carry a proof of it, so a node
        /// without it cannot join, read or forge gossip, nor call the
        /// peer-only methods. Make one with e.g. `head -c 32 /dev/urandom >
        /// secret` and keep it readable only by the node's user.
        #[arg(long = "cluster-secret-file", env = "COLLECTOR_CLUSTER_SECRET_FILE")]
        cluster_secret_file: Option<PathBuf>,
        /// The bootstrap operator key's file [default: operator.key in the
        /// data dir]. A key there that the node does not know is taken in
        /// as an operator key (give every member the same one); with no
        /// file and no keys, the first start writes a new key there,
        /// readable only by its owner.
        #[arg(long = "operator-key-file", env = "COLLECTOR_OPERATOR_KEY_FILE")]
        operator_key_file: Option<PathBuf>,
        /// Serve TLS with this certificate (PEM, then its chain); needs
        /// --tls-key. Both files are re-read when they change.
        #[arg(long = "tls-cert", env = "COLLECTOR_TLS_CERT", requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The private key (PEM) of --tls-cert.
        #[arg(long = "tls-key", env = "COLLECTOR_TLS_KEY", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// The roots (PEM) this node trusts for its peers' certificates
        /// [default: the --tls-cert file].
        #[arg(long = "tls-ca", env = "COLLECTOR_TLS_CA", requires = "tls_cert")]
        tls_ca: Option<PathBuf>,
        /// With TLS, every client (peers included) must present a
        /// certificate signed by these roots (PEM); members present their
        /// --tls-cert.
        #[arg(
            long = "tls-client-ca",
            env = "COLLECTOR_TLS_CLIENT_CA",
            requires = "tls_cert"
        )]
        tls_client_ca: Option<PathBuf>,
        /// Entries the audit log system/audit keeps; the oldest beyond go.
        #[arg(long = "audit-max-entries", env = "COLLECTOR_AUDIT_MAX_ENTRIES", default_value_t = limits::AUDIT_MAX_ENTRIES)]
        audit_max_entries: u64,
        /// Handler calls one namespace may have running at once here.
        #[arg(long = "max-calls-per-namespace", env = "COLLECTOR_MAX_CALLS_PER_NAMESPACE", default_value_t = limits::MAX_CALLS_PER_NAMESPACE)]
        max_calls_per_namespace: usize,
        /// Collections one namespace may hold here.
        #[arg(long = "max-collections-per-namespace", env = "COLLECTOR_MAX_COLLECTIONS_PER_NAMESPACE", default_value_t = limits::MAX_COLLECTIONS_PER_NAMESPACE)]
        max_collections_per_namespace: usize,
        /// Bytes of records and files one namespace may hold here (0: no
        /// limit); operators override it per namespace (`quotas set`).
        #[arg(
            long = "max-storage-bytes-per-namespace",
            env = "COLLECTOR_MAX_STORAGE_BYTES_PER_NAMESPACE",
            default_value_t = 0
        )]
        max_storage_bytes_per_namespace: u64,
        /// Records one namespace may write a second here (0: no limit).
        #[arg(
            long = "max-records-per-second-per-namespace",
            env = "COLLECTOR_MAX_RECORDS_PER_SECOND_PER_NAMESPACE",
            default_value_t = 0
        )]
        max_records_per_second_per_namespace: u64,
        /// Keep no metrics (GET /metrics answers 404).
        #[arg(long = "no-metrics", env = "COLLECTOR_NO_METRICS")]
        no_metrics: bool,
        /// Export OpenTelemetry traces over OTLP/gRPC to this collector,
        /// e.g. http://127.0.0.1:4317 (Jaeger, Tempo, an OpenTelemetry
        /// Collector). Without it no span is exported.
        #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
        otlp_endpoint: Option<String>,
        /// Time a search or count may run before it is stopped, e.g. 10s
        /// [default: limits::QUERY_TIMEOUT, 10s].
        #[arg(long, env = "COLLECTOR_QUERY_TIMEOUT", value_parser = humantime::parse_duration)]
        query_timeout: Option<std::time::Duration>,
        /// Most MiB per second sent to one clone or fetch (default: unbounded).
        #[arg(long = "transfer-rate-mib", env = "COLLECTOR_TRANSFER_RATE_MIB")]
        transfer_rate_mib: Option<u64>,
        /// Largest file attached to a record, in bytes.
        #[arg(long = "max-file-bytes", env = "COLLECTOR_MAX_FILE_BYTES",
              default_value_t = limits::MAX_FILE_BYTES)]
        max_file_bytes: u64,
        /// Client collections open at once; beyond it the least recently
        /// used idle ones close (and reopen on their next use).
        #[arg(long = "max-open-collections", env = "COLLECTOR_MAX_OPEN_COLLECTIONS",
              default_value_t = limits::MAX_OPEN_COLLECTIONS)]
        max_open_collections: usize,
        /// A client collection unused this long closes, e.g. 60s
        /// [default: limits::COLLECTION_IDLE_CLOSE, 60s].
        #[arg(long = "collection-idle-close", env = "COLLECTOR_COLLECTION_IDLE_CLOSE",
              value_parser = humantime::parse_duration)]
        collection_idle_close: Option<std::time::Duration>,
        #[command(flatten)]
        handlers: HandlerMaxima,
    },
    #[command(flatten)]
    Client(cli::ClientCmd),
}

/// The node's bounds on handler calls.
#[derive(clap::Args)]
struct HandlerMaxima {
    /// Longest timeout a handler registration may ask for, e.g. 30s or 2m
    /// [default: limits::MAX_HANDLER_TIMEOUT, 60s].
    #[arg(long, env = "COLLECTOR_MAX_HANDLER_TIMEOUT", value_parser = humantime::parse_duration)]
    max_handler_timeout: Option<std::time::Duration>,
    /// Largest memory cap a handler registration may ask for, in MiB.
    #[arg(long, env = "COLLECTOR_MAX_HANDLER_MEMORY",
          default_value_t = limits::MAX_HANDLER_MEMORY_BYTES >> 20)]
    max_handler_memory: usize,
    /// Memory all handler calls may use together, in MiB.
    #[arg(long, env = "COLLECTOR_HANDLER_MEMORY_BUDGET",
          default_value_t = limits::HANDLER_MEMORY_BUDGET_BYTES >> 20)]
    handler_memory_budget: usize,
}

/// Logs to stderr (filtered by `COLLECTOR_LOG`, default `warn`) and, with
/// an OTLP endpoint, the node's trace spans to it.
fn init_logs_and_traces(
    otlp: Option<&str>,
) -> collector::error::Result<Option<collector::traces::Exporting>> {
    use tracing_subscriber::prelude::*;
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(
            tracing_subscriber::EnvFilter::try_from_env("COLLECTOR_LOG")
                .unwrap_or_else(|_| "warn".into()),
        );
    let registry = tracing_subscriber::registry().with(logs);
    match otlp {
        Some(endpoint) => {
            let (layer, exporting) = collector::traces::install(endpoint)?;
            registry.with(layer).init();
            Ok(Some(exporting))
        }
        None => {
            registry.init();
            Ok(None)
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let otlp = match &cli.command {
        Command::Serve { otlp_endpoint, .. } => otlp_endpoint.clone(),
        Command::Client(_) => None,
    };
    let exporting = match init_logs_and_traces(otlp.as_deref()) {
        Ok(e) => e,
        Err(e) => {
            say_err!("collector: cannot start: {}", e.message);
            return std::process::ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Serve {
            data_dir,
            listen,
            join,
            advertise,
            cluster,
            cluster_secret_file,
            operator_key_file,
            tls_cert,
            tls_key,
            tls_ca,
            tls_client_ca,
            audit_max_entries,
            max_calls_per_namespace,
            max_collections_per_namespace,
            max_storage_bytes_per_namespace,
            max_records_per_second_per_namespace,
            no_metrics,
            otlp_endpoint: _,
            query_timeout,
            transfer_rate_mib,
            max_file_bytes,
            max_open_collections,
            collection_idle_close,
            handlers,
        } => {
            let namespace = if cli.conn.namespace.is_empty() {
                limits::DEFAULT_NAMESPACE.to_string()
            } else {
                cli.conn.namespace
            };
            let cluster_secret = match cluster_secret_file.as_deref().map(std::fs::read) {
                None => None,
                Some(Ok(s)) => Some(collector::mesh::seal::ClusterSecret(s)),
                Some(Err(e)) => {
                    eprintln!("collector: cannot read --cluster-secret-file: {e}");
                    return std::process::ExitCode::FAILURE;
                }
            };
            let config = Config {
                data_dir,
                listen,
                namespace: namespace.clone(),
                join: join.clone(),
                advertise,
                cluster_id: cluster,
                cluster_secret,
                operator_key_file,
                tls: tls_cert
                    .zip(tls_key)
                    .map(|(cert, key)| collector::config::TlsFiles { cert, key }),
                tls_ca,
                tls_client_ca,
                audit_max_entries,
                quotas: collector::quotas::Limits {
                    calls: max_calls_per_namespace,
                    collections: max_collections_per_namespace,
                    storage_bytes: max_storage_bytes_per_namespace,
                    records_per_second: max_records_per_second_per_namespace,
                },
                metrics: !no_metrics,
                query_timeout: query_timeout.unwrap_or(limits::QUERY_TIMEOUT),
                transfer_bytes_per_sec: transfer_rate_mib
                    .filter(|&m| m > 0)
                    .map(|m| m.saturating_mul(1 << 20)),
                max_file_bytes,
                max_open_collections,
                collection_idle_close: collection_idle_close
                    .unwrap_or(limits::COLLECTION_IDLE_CLOSE),
                max_handler_timeout: handlers
                    .max_handler_timeout
                    .unwrap_or(limits::MAX_HANDLER_TIMEOUT),
                max_handler_memory_bytes: handlers.max_handler_memory.saturating_mul(1 << 20),
                handler_memory_budget_bytes: handlers.handler_memory_budget.saturating_mul(1 << 20),
                ..Config::default()
            };
            // Each connection, collection and reader holds descriptors: a
            // node gets as many as the system lets it have.
            let open_files = rlimit::increase_nofile_limit(u64::MAX);
            let node = match Node::start(config).await {
                Ok(n) => n,
                Err(e) => {
                    say_err!("collector: cannot start: {}", e.message);
                    return std::process::ExitCode::FAILURE;
                }
            };
            say!(
                "collector {} listening on {}",
                env!("CARGO_PKG_VERSION"),
                node.addr
            );
            say!("  node id    {}", node.node_id);
            if node.tls {
                say!(
                    "  tls        on (clients use https and trust its certificate, e.g. --cacert)"
                );
            }
            say!("  data dir   {}", node.data_dir.display());
            say!("  namespace  {namespace}");
            match open_files {
                Ok(n) => say!("  open files {n} (soft limit raised to the hard limit)"),
                Err(e) => say!("  open files limit unchanged: {e}"),
            }
            let mesh = node.mesh().membership().config();
            say!(
                "  mesh       gossip on {}/udp, cluster {:?}; a silent member is marked dead within {:?}",
                mesh.gossip_listen,
                mesh.cluster_id,
                mesh.max_detection_time()
            );
            if node.meshed {
                say!("  gossip     sealed with the cluster secret");
            } else {
                say!(
                    "  gossip     no cluster secret: this node forms no mesh (give every member the same --cluster-secret-file)"
                );
            }
            match &node.operator_key {
                Some(k) if k.created => say!(
                    "  keys       every call needs an API key; an operator key was written to {} (the CLI run here reads it)",
                    k.path.display()
                ),
                Some(k) => say!(
                    "  keys       every call needs an API key; the operator key is in {}",
                    k.path.display()
                ),
                None => say!("  keys       every call needs an API key"),
            }
            if !join.is_empty() {
                say!("  joining    {}", join.join(", "));
            }
            say!("  services   {}", collector::node::SERVICES.join(", "));
            say!("Ctrl-C to stop.");
            shutdown_signal().await;
            say_err!("collector: shutting down");
            let stopped = node.shutdown().await;
            if let Some(e) = exporting {
                let _ = tokio::task::spawn_blocking(move || e.shutdown()).await;
            }
            if let Err(e) = stopped {
                say_err!("collector: shutdown: {}", e.message);
                return std::process::ExitCode::FAILURE;
            }
            std::process::ExitCode::SUCCESS
        }
        Command::Client(cmd) => match cli::run(cli.conn, cmd).await {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(status) => {
                eprintln!("collector: {:?}: {}", status.code(), status.message());
                std::process::ExitCode::from(cli::exit_code(&status))
            }
        },
    }
}
