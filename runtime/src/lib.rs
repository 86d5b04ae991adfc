//! Collector: a node that serves typed protobuf collections over gRPC.
//!
//! # Layers
//! Arrows point down and one way:
//! `node` (wiring) → `console` (web pages) → `api` (tonic adapters) → `mesh` → `handlers` →
//! (`registry`, `wasm`, `store`) → `names`, `limits`, `util`, `error`;
//! `api` also reads `node_info`.
//! `registry` persists through `store`; `store` resolves types through its
//! own `store::Types` trait, which `node` wires to the registry. `wasm`
//! reaches collections only through `wasm::HostApi`, which `handlers`
//! implements. Domain modules know nothing of tonic; `crate::proto` (the
//! generated API types) is also the stored form of the `system` collections,
//! so `store`, `registry` and `handlers` use it for those records.
//! `quotas` answers the store's `store::Admission`; `auth` and `audit` sit
//! under `api`. `telemetry` is a leaf every layer counts into (the
//! `metrics` macros); `api` renders it at `GET /metrics`. `traces` is the
//! leaf that names the spans every layer opens and carries trace context
//! in and out through the callers' metadata (`api` reads and writes it).
//!
//! # Threads, tasks and locks
//! - The tokio runtime runs gRPC, the mesh, and handler calls (async
//!   wasmtime: a guest yields every `limits::EPOCH_TICK`).
//! - One writer thread per open collection (`store::writer`), fed by a
//!   bounded queue; a process-wide pool of `limits::READER_THREADS_PER_CORE`
//!   reader threads per core runs every SQLite read (`store::readers`).
//!   SQLite never runs on an executor thread.
//! - One `wasm-epoch` thread ticks the engine's epoch; one `metrics upkeep`
//!   thread folds histogram samples into buckets every 5 s.
//! - `spawn_blocking` for compiling components, opening and closing
//!   collections and reading component files.
//! - Tasks: chitchat's gossip, the mesh's publisher and version follower,
//!   one task per at-most-once call (`mesh::requests`, so a caller that
//!   gives up cannot cut it short), one per handler commit (so a cancel
//!   cannot split it between collections), and the background task that
//!   makes a handler's next instance (at most `limits::MAX_WARM`).
//! - Async locks, always taken in this order: the mesh's fetch lock → the
//!   registry's register lock → the handlers' register lock; the
//!   catalogue's DDL lock is never held with them.
//! - `std` locks are held only for short, non-async sections, never across
//!   an `.await` and never two at once (except a handlers' `table` read
//!   before its `removed` read). A poisoned lock means an earlier panic, so
//!   `.expect("… lock")` passes that panic on rather than hiding it.
//!
//! # Safety
//! `unsafe` is denied except at one site: loading a compiled component the
//! node cached itself (`wasm::CompiledCache::load`, which says why it is
//! sound).

#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod api;
pub mod audit;
pub mod auth;
pub mod backups;
pub mod config;
pub mod console;
pub mod error;
pub mod filter_text;
pub mod guests;
pub mod handlers;
pub mod limits;
pub mod mesh;
pub mod names;
pub mod node;
pub mod node_info;
pub mod quotas;
pub mod registry;
pub mod store;
pub mod telemetry;
pub mod traces;
pub mod transfers;
pub mod util;
pub mod wasm;

/// Generated protobuf types and gRPC clients/servers (package collector.v1).
pub mod proto {
    #![allow(missing_docs)]
    tonic::include_proto!("collector.v1");

    /// The node's own API descriptors (package collector.v1), as built.
    pub const API_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/collector_descriptor.bin"));

    /// The pool of the node's own API plus the well-known types: the types of
    /// the `system` collections, and what reflection serves for built-ins.
    pub fn api_pool() -> prost_reflect::DescriptorPool {
        prost_reflect::DescriptorPool::decode(API_DESCRIPTOR_SET)
            .expect("the build embeds a valid descriptor set")
    }
}

pub use config::Config;
pub use node::{Node, NodeHandle};
