//! Black-box tests: real nodes, real gRPC clients.

mod auth;
mod backup;
mod cli;
mod crud;
mod docs;
mod durability;
mod files;
mod files_handlers;
mod files_lifecycle;
mod files_nodes;
mod gossip;
mod handler_limits;
mod handlers;
mod hardening;
mod hostile;
mod mesh;
mod metrics;
mod orders;
mod query;
mod quotas;
mod registry;
mod repo;
mod surface;
mod tls;
mod transfer;
mod trust;
