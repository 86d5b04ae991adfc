//! What the store asks before it takes on more: the node's quotas answer
//! (the quotas module implements it, wired in `node.rs`); the store only
//! knows this trait, so the arrow points from quotas to the store.

use crate::error::Result;
use crate::names::Namespace;

/// Asked before a write reaches a collection's writer, and before a
/// collection is created (under the catalogue's DDL lock, so concurrent
/// creates cannot overshoot).
pub trait Admission: Send + Sync {
    /// OK to write `records` records into `ns`, adding about `adds` bytes
    /// (0 for deletes alone, which pass a full namespace).
    fn admit_write(&self, ns: &Namespace, records: usize, adds: u64) -> Result<()>;
    /// OK for `ns`, holding `held` collections, to create another.
    fn admit_collection(&self, ns: &Namespace, held: usize) -> Result<()>;
}

/// Admits everything (system collections, tools, unit tests).
pub struct Unlimited;

impl Admission for Unlimited {
    fn admit_write(&self, _: &Namespace, _: usize, _: u64) -> Result<()> {
        Ok(())
    }
    fn admit_collection(&self, _: &Namespace, _: usize) -> Result<()> {
        Ok(())
    }
}
