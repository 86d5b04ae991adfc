//! SQLite collections. One collection per file (`collection`): its on-disk
//! layout (`schema`), its one writer with group commit (`writer`), reads on
//! reader threads (`reads`, `readers`) behind a record cache (`cache`), the
//! record and write types (`record`), queries (`query`: filters, order and
//! paging → SQL), payload encoding (`codec`) and the files attached to
//! records (`files`). Quotas come in through `admission`. A collection is
//! open only while it is used, within a bound (`residency`). The catalogue of
//! collections (`catalog`) is itself a collection.
//!
//! The store knows nothing of the type registry: it resolves a collection's
//! message type through `Types`, which `node.rs` wires to the registry.

pub mod admission;
pub mod backup;
pub mod cache;
pub mod catalog;
pub mod codec;
pub mod collection;
pub mod file_area;
pub mod files;
pub mod meta;
pub mod query;
pub mod readers;
mod reads;
pub mod record;
mod residency;
mod schema;
mod writer;

pub use admission::Admission;
pub use catalog::{Catalog, Types};
pub use collection::{Collection, Options};
pub use file_area::FileArea;
pub use files::{FileChange, FileMeta, FilePage, PutFile};
pub use meta::{BackupPolicy, CollectionMeta, CollectionUpdate};
pub use query::{Filter, Op, Order, Query, Scalar};
pub use record::{
    BatchOutcome, Labels, Mask, MaskPart, Page, Record, WriteOp, Written, check_labels,
    check_version,
};

/// A descriptor pool compiled from one `.proto` source (for unit tests).
#[cfg(test)]
pub(crate) fn test_pool(src: &str) -> prost_reflect::DescriptorPool {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("t.proto"), src).expect("write t.proto");
    let set = protox::compile(["t.proto"], [dir.path()]).expect("t.proto compiles");
    prost_reflect::DescriptorPool::from_file_descriptor_set(set).expect("t.proto loads")
}
