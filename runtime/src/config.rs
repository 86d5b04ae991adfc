//! Node configuration, with defaults that serve a newcomer.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Everything a node needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    /// Root of all stored state.
    pub data_dir: PathBuf,
    /// Address to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Namespace used when a request names none.
    pub namespace: String,
    /// Largest gRPC message accepted or sent, in bytes.
    pub max_message_bytes: usize,
    /// `PRAGMA synchronous=FULL` when true (acknowledged writes survive power loss).
    pub sync_full: bool,
    /// Bytes of recently used records each collection keeps in memory.
    pub record_cache_bytes: u64,
    /// host:port of mesh members to join at start (their gRPC addresses).
    pub join: Vec<String>,
    /// The address peers and clients reach this node at; default: the
    /// address it listens on (which must then not be 0.0.0.0).
    pub advertise: Option<SocketAddr>,
    /// Nodes only form a mesh with nodes of the same cluster id.
    pub cluster_id: String,
    /// Time between gossip rounds; a silent member is marked dead after
    /// about 8 of them.
    pub gossip_interval: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./data"),
            listen: "127.0.0.1:50051".parse().expect("valid default address"),
            namespace: "default".to_string(),
            max_message_bytes: 16 << 20,
            sync_full: true,
            record_cache_bytes: 16 << 20,
            join: Vec::new(),
            advertise: None,
            cluster_id: "collector".to_string(),
            gossip_interval: Duration::from_millis(200),
        }
    }
}
