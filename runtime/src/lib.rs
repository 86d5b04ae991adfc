//! Collector: a node that serves typed protobuf collections over gRPC.
//!
//! Layers, arrows pointing down: `api` (tonic adapters) → domain (`mesh`,
//! `registry`, `wasm`, `store`) → `names`, `error`. Domain modules know
//! nothing of tonic.

pub mod api;
pub mod config;
pub mod error;
pub mod mesh;
pub mod names;
pub mod node;
pub mod registry;
pub mod store;
pub mod wasm;

/// Generated protobuf types and gRPC clients/servers (package collector.v1).
pub mod proto {
    tonic::include_proto!("collector.v1");
}

pub use config::Config;
pub use node::{Node, NodeHandle};
