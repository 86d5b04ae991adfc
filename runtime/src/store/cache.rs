//! Recently read or written records of one collection, so a hot Get needs
//! no SQLite read and no thread hop. The writer thread keeps it coherent:
//! after each commit, and before answering, it stores or removes every record
//! the group wrote. A read that missed fills the cache only if no write was
//! applied since the read began, so a stale row can never overwrite a newer one.

use super::record::Record;
use std::sync::{Arc, Mutex};

#[derive(Clone)]
struct ByBytes;

impl quick_cache::Weighter<String, Arc<Record>> for ByBytes {
    fn weight(&self, key: &String, r: &Arc<Record>) -> u64 {
        (key.len() + r.id.len() + r.data.len() + r.json.len() + 128) as u64
    }
}

/// A bounded, write-coherent record cache (disabled at 0 bytes).
pub struct RecordCache {
    items: Option<quick_cache::sync::Cache<String, Arc<Record>, ByBytes>>,
    /// Lookups that hit and missed (`telemetry::CACHE_LOOKUPS`).
    hits: metrics::Counter,
    misses: metrics::Counter,
    /// Count of applied write groups; the lock orders fills against writes.
    writes: Mutex<u64>,
}

/// A change the writer committed: the record now stored, or None if deleted.
pub type Change = (String, Option<Arc<Record>>);

impl RecordCache {
    /// A cache holding about `bytes` of records of collection `ns`/`name`.
    pub fn new(bytes: u64, ns: &str, name: &str) -> Self {
        let lookups = |result: &'static str| {
            metrics::counter!(
                crate::telemetry::CACHE_LOOKUPS,
                "namespace" => ns.to_string(),
                "collection" => name.to_string(),
                "result" => result,
            )
        };
        let items = (bytes > 0).then(|| {
            quick_cache::sync::Cache::with_weighter((bytes / 2048).max(16) as usize, bytes, ByBytes)
        });
        RecordCache {
            items,
            hits: lookups("hit"),
            misses: lookups("miss"),
            writes: Mutex::new(0),
        }
    }

    /// The cached record, if any.
    pub fn get(&self, id: &str) -> Option<Arc<Record>> {
        let found = self.items.as_ref()?.get(id);
        match found {
            Some(_) => self.hits.increment(1),
            None => self.misses.increment(1),
        }
        found
    }

    /// A token to pass to `fill` after reading from SQLite.
    pub fn before_read(&self) -> u64 {
        *self.writes.lock().expect("cache lock")
    }

    /// Caches a record read from SQLite, unless a write was applied since `token`.
    pub fn fill(&self, token: u64, rec: Arc<Record>) {
        let Some(items) = &self.items else { return };
        let writes = self.writes.lock().expect("cache lock");
        if *writes == token {
            items.insert(rec.id.clone(), rec);
        }
    }

    /// Applies committed changes (called by the writer before it answers).
    pub fn apply(&self, changes: Vec<Change>) {
        let mut writes = self.writes.lock().expect("cache lock");
        *writes += 1;
        let Some(items) = &self.items else { return };
        for (id, rec) in changes {
            match rec {
                Some(r) => items.insert(id, r),
                None => {
                    items.remove(&id);
                }
            }
        }
    }
}
