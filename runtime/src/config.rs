//! Node configuration, with defaults that serve a newcomer. Every default
//! is a constant in `limits`, which the `collector serve` flags use too.

use crate::error::{Error, Result};
use crate::limits;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Everything a node needs to start. `Config::default()` is what
/// `collector serve` runs with when given no flags.
#[derive(Debug, Clone)]
pub struct Config {
    /// Root of all stored state. Default: `limits::DEFAULT_DATA_DIR` (`./data`).
    pub data_dir: PathBuf,
    /// Address to listen on; port 0 picks a free port. Default:
    /// `limits::DEFAULT_LISTEN` (`127.0.0.1:50051`).
    pub listen: SocketAddr,
    /// Namespace used when a request names none. Default:
    /// `limits::DEFAULT_NAMESPACE` (`default`).
    pub namespace: String,
    /// Largest gRPC message accepted or sent, in bytes. Default:
    /// `limits::MAX_MESSAGE_BYTES` (16 MiB).
    pub max_message_bytes: usize,
    /// `PRAGMA synchronous=FULL` when true (acknowledged writes survive power
    /// loss); else NORMAL. Default: true.
    pub sync_full: bool,
    /// Bytes of recently used records each collection keeps in memory (0
    /// turns the cache off). Default: `limits::RECORD_CACHE_BYTES` (16 MiB).
    pub record_cache_bytes: u64,
    /// host:port of mesh members to join at start (their gRPC addresses).
    /// Default: none.
    pub join: Vec<String>,
    /// The address peers and clients reach this node at. Default: the
    /// address it listens on (which must then not be 0.0.0.0).
    pub advertise: Option<SocketAddr>,
    /// Nodes only form a mesh with nodes of the same cluster id. Default:
    /// `limits::DEFAULT_CLUSTER` (`collector`).
    pub cluster_id: String,
    /// The cluster's secret: gossip is sealed with a key derived from it
    /// and peer calls prove it (`mesh::seal`, `api::gate`), so only
    /// nodes holding it take part. Default: none
    /// (gossip is not authenticated).
    pub cluster_secret: Option<crate::mesh::seal::ClusterSecret>,
    /// The file of the bootstrap operator key: a key there that the node
    /// does not know is taken in as an operator key; with no file and no
    /// keys at all, the first start writes a new one there. Default:
    /// `operator.key` in the data dir.
    pub operator_key_file: Option<PathBuf>,
    /// Serve TLS on the port with this certificate and key (re-read when
    /// the files change). Default: none, plain HTTP/2.
    pub tls: Option<TlsFiles>,
    /// The roots (PEM) this node trusts for its peers' certificates when it
    /// serves TLS. Default: its own certificate file (one certificate, or
    /// one self-signed, shared by the mesh).
    pub tls_ca: Option<PathBuf>,
    /// With TLS: every client (peers included) must present a certificate
    /// signed by these roots (PEM). A member presents its own `tls`
    /// certificate. Default: none, clients need no certificate.
    pub tls_client_ca: Option<PathBuf>,
    /// What each namespace may use of this node. Default:
    /// `quotas::Limits::default()`.
    pub quotas: crate::quotas::Limits,
    /// Entries `system/audit` keeps (the oldest beyond go). Default:
    /// `limits::AUDIT_MAX_ENTRIES` (1,000,000).
    pub audit_max_entries: u64,
    /// Time between gossip rounds; a silent member is marked dead after
    /// about 8 of them. Default: `limits::GOSSIP_INTERVAL` (200 ms).
    pub gossip_interval: Duration,
    /// Time a search or count may run inside SQLite before it is stopped
    /// (DEADLINE_EXCEEDED). Default: `limits::QUERY_TIMEOUT` (10 s).
    pub query_timeout: Duration,
    /// Most bytes per second this node sends to one clone or fetch, so a
    /// transfer cannot take all of its disk and network. Default: None,
    /// unbounded.
    pub transfer_bytes_per_sec: Option<u64>,
    /// Largest file attached to a record, in bytes. Default:
    /// `limits::MAX_FILE_BYTES` (1 GiB).
    pub max_file_bytes: u64,
    /// Longest timeout a handler registration may ask for. Default:
    /// `limits::MAX_HANDLER_TIMEOUT` (60 s).
    pub max_handler_timeout: Duration,
    /// Largest memory cap a handler registration may ask for, in bytes.
    /// Default: `limits::MAX_HANDLER_MEMORY_BYTES` (256 MiB).
    pub max_handler_memory_bytes: usize,
    /// Memory all handler calls may use together, in bytes. Default:
    /// `limits::HANDLER_MEMORY_BUDGET_BYTES` (2 GiB).
    pub handler_memory_budget_bytes: usize,
    /// Keep metrics and serve them at `GET /metrics` (`telemetry`).
    /// Default: on.
    pub metrics: bool,
    /// Client collections open at once (the least recently used idle ones
    /// close beyond it). Default: `limits::MAX_OPEN_COLLECTIONS` (512).
    pub max_open_collections: usize,
    /// A client collection unused this long closes. Default:
    /// `limits::COLLECTION_IDLE_CLOSE` (60 s).
    pub collection_idle_close: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from(limits::DEFAULT_DATA_DIR),
            listen: limits::DEFAULT_LISTEN
                .parse()
                .expect("DEFAULT_LISTEN is an address"),
            namespace: limits::DEFAULT_NAMESPACE.to_string(),
            max_message_bytes: limits::MAX_MESSAGE_BYTES,
            sync_full: true,
            record_cache_bytes: limits::RECORD_CACHE_BYTES,
            join: Vec::new(),
            advertise: None,
            cluster_id: limits::DEFAULT_CLUSTER.to_string(),
            cluster_secret: None,
            operator_key_file: None,
            tls: None,
            tls_ca: None,
            tls_client_ca: None,
            audit_max_entries: limits::AUDIT_MAX_ENTRIES,
            quotas: crate::quotas::Limits::default(),
            metrics: true,
            gossip_interval: limits::GOSSIP_INTERVAL,
            query_timeout: limits::QUERY_TIMEOUT,
            transfer_bytes_per_sec: None,
            max_file_bytes: limits::MAX_FILE_BYTES,
            max_handler_timeout: limits::MAX_HANDLER_TIMEOUT,
            max_handler_memory_bytes: limits::MAX_HANDLER_MEMORY_BYTES,
            handler_memory_budget_bytes: limits::HANDLER_MEMORY_BUDGET_BYTES,
            max_open_collections: limits::MAX_OPEN_COLLECTIONS,
            collection_idle_close: limits::COLLECTION_IDLE_CLOSE,
        }
    }
}

/// The certificate chain and key files a node serves TLS with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM: the node's certificate, then its chain.
    pub cert: PathBuf,
    /// PEM: the certificate's private key.
    pub key: PathBuf,
}

/// Shortest gossip interval accepted: below it the failure detector's
/// timings and the UDP traffic stop making sense.
const MIN_GOSSIP_INTERVAL: Duration = Duration::from_millis(10);
/// Smallest message limit accepted: a node must at least carry its own
/// descriptors and one record.
const MIN_MESSAGE_BYTES: usize = 64 << 10;
/// Shortest handler timeout maximum accepted: a handler must get time to start.
const MIN_HANDLER_TIMEOUT: Duration = Duration::from_millis(10);
/// Smallest handler memory maximum accepted: what a small Rust guest needs.
const MIN_HANDLER_MEMORY: usize = 4 << 20;

impl Config {
    /// Checks the values a node cannot run with, naming the setting to fix.
    /// `Node::start` calls it first.
    pub fn validate(&self) -> Result<()> {
        crate::names::Namespace::new(&self.namespace)
            .and_then(|ns| ns.writable().map(|_| ()))
            .map_err(|e| e.context("namespace (--namespace)"))?;
        if self.gossip_interval < MIN_GOSSIP_INTERVAL {
            return Err(Error::invalid(format!(
                "gossip_interval is {:?}; give at least {MIN_GOSSIP_INTERVAL:?}",
                self.gossip_interval
            )));
        }
        if self.max_message_bytes < MIN_MESSAGE_BYTES {
            return Err(Error::invalid(format!(
                "max_message_bytes is {}; give at least {MIN_MESSAGE_BYTES}",
                self.max_message_bytes
            )));
        }
        if self.max_open_collections == 0 {
            return Err(Error::invalid(
                "max_open_collections (--max-open-collections) is 0; at least one collection must be able to open",
            ));
        }
        if self.query_timeout.is_zero() {
            return Err(Error::invalid(
                "query_timeout (--query-timeout) is 0; give the time a query may run, e.g. 10s",
            ));
        }
        if self.max_handler_timeout < MIN_HANDLER_TIMEOUT {
            return Err(Error::invalid(format!(
                "max_handler_timeout (--max-handler-timeout) is {:?}; give at least {MIN_HANDLER_TIMEOUT:?}",
                self.max_handler_timeout
            )));
        }
        if self.max_handler_memory_bytes < MIN_HANDLER_MEMORY {
            return Err(Error::invalid(format!(
                "max_handler_memory_bytes (--max-handler-memory) is {} MiB; give at least {} MiB",
                self.max_handler_memory_bytes >> 20,
                MIN_HANDLER_MEMORY >> 20
            )));
        }
        if self.handler_memory_budget_bytes < self.max_handler_memory_bytes {
            return Err(Error::invalid(format!(
                "handler_memory_budget_bytes (--handler-memory-budget, {} MiB) is below max_handler_memory_bytes (--max-handler-memory, {} MiB): one call could never get its cap",
                self.handler_memory_budget_bytes >> 20,
                self.max_handler_memory_bytes >> 20
            )));
        }
        if let Some(crate::mesh::seal::ClusterSecret(s)) = &self.cluster_secret
            && s.len() < limits::MIN_CLUSTER_SECRET_BYTES
        {
            return Err(Error::invalid(format!(
                "the cluster secret is {} bytes; it needs at least {} (e.g. 32 random bytes)",
                s.len(),
                limits::MIN_CLUSTER_SECRET_BYTES
            )));
        }
        if self.quotas.calls == 0 || self.quotas.collections == 0 {
            return Err(Error::invalid(
                "a namespace quota is 0 (--max-calls-per-namespace, --max-collections-per-namespace); give at least 1",
            ));
        }
        if self.audit_max_entries == 0 {
            return Err(Error::invalid(
                "audit_max_entries (--audit-max-entries) is 0; give how many entries the audit log keeps",
            ));
        }
        if self.cluster_secret.is_none() && !self.join.is_empty() {
            return Err(Error::invalid(
                "joining a mesh (--join) needs the mesh's secret: give every member the same --cluster-secret-file (e.g. 32 bytes from /dev/urandom)",
            ));
        }
        if self.cluster_id.is_empty() {
            return Err(Error::invalid(
                "cluster_id is empty: give the id the mesh's nodes share",
            ));
        }
        if self
            .advertise
            .is_some_and(|a| a.ip().is_unspecified() || a.port() == 0)
        {
            return Err(Error::invalid(
                "advertise must be an address peers can reach: not 0.0.0.0 and not port 0",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn refused(c: Config) -> String {
        let e = c.validate().unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidArgument, "{e}");
        e.message
    }

    #[test]
    fn the_default_config_is_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn values_a_node_cannot_run_with_are_refused_naming_the_setting() {
        let base = Config::default;
        assert!(
            refused(Config {
                gossip_interval: Duration::ZERO,
                ..base()
            })
            .contains("gossip_interval")
        );
        assert!(
            refused(Config {
                max_message_bytes: 1024,
                ..base()
            })
            .contains("max_message_bytes")
        );
        assert!(
            refused(Config {
                cluster_id: String::new(),
                ..base()
            })
            .contains("cluster_id")
        );
        assert!(
            refused(Config {
                advertise: Some("0.0.0.0:5000".parse().unwrap()),
                ..base()
            })
            .contains("advertise")
        );
        assert!(
            refused(Config {
                max_handler_timeout: Duration::ZERO,
                ..base()
            })
            .contains("--max-handler-timeout")
        );
        assert!(
            refused(Config {
                max_handler_memory_bytes: 1 << 20,
                ..base()
            })
            .contains("--max-handler-memory")
        );
        assert!(
            refused(Config {
                handler_memory_budget_bytes: 8 << 20,
                ..base()
            })
            .contains("--handler-memory-budget")
        );
        assert!(
            refused(Config {
                namespace: "Not Valid".into(),
                ..base()
            })
            .contains("--namespace")
        );
        let e = Config {
            namespace: "system".into(),
            ..base()
        }
        .validate()
        .unwrap_err();
        assert_eq!(e.kind, ErrorKind::PermissionDenied);
    }
}
