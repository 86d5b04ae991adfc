//! SQLite collections: one collection per file (`collection`), the catalogue
//! of collections (`catalog`), queries (`query`) and payload encoding (`codec`).

pub mod cache;
pub mod catalog;
pub mod codec;
pub mod collection;
pub mod query;
pub mod readers;

pub use catalog::{Catalog, CollectionMeta};
pub use collection::{
    BatchOutcome, Collection, Labels, Mask, MaskPart, Options, Page, Record, WriteOp, Written,
};
pub use query::{Filter, Op, Order, Query, Scalar};
