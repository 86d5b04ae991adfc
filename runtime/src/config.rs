//! Node configuration, with defaults that serve a newcomer.

use std::net::SocketAddr;
use std::path::PathBuf;

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
        }
    }
}
