//! Per-namespace quotas, so one namespace cannot take the node from the
//! others: handler calls running at once, collections, storage bytes and
//! records written a second. Every namespace gets the node's defaults
//! (`Limits`, from its flags) unless an operator set an override
//! (`overrides`: stored in `system/quotas`, gossiped to every member). Over
//! a quota a call is RESOURCE_EXHAUSTED at once, saying which quota,
//! instead of waiting behind the namespace's own calls.
//!
//! The store asks through `store::Admission` before every write and every
//! create. Storage is measured every `STORAGE_SAMPLE_INTERVAL` (only for
//! namespaces that have a storage quota) and each admitted write's bytes
//! are added in between, so a namespace overshoots its quota by at most
//! the writes in flight when it fills (and the last one admitted).

mod overrides;
mod rate;

use crate::error::{Error, Result};
use crate::names::Namespace;
use crate::proto::{NamespaceQuota, QuotaLimits, QuotaUsage};
use crate::store::{Admission, Catalog, Collection};
pub use overrides::Overrides;
use rate::Bucket;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Instant;

/// What a namespace may use on one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Handler calls of one namespace running at once on this node.
    pub calls: usize,
    /// Collections one namespace may hold on this node.
    pub collections: usize,
    /// Bytes of records and files; 0: no limit.
    pub storage_bytes: u64,
    /// Records created, changed or deleted a second; 0: no limit.
    pub records_per_second: u64,
}

impl Default for Limits {
    /// `limits::MAX_CALLS_PER_NAMESPACE`, `limits::MAX_COLLECTIONS_PER_NAMESPACE`,
    /// no storage or rate limit.
    fn default() -> Self {
        Limits {
            calls: crate::limits::MAX_CALLS_PER_NAMESPACE,
            collections: crate::limits::MAX_COLLECTIONS_PER_NAMESPACE,
            storage_bytes: 0,
            records_per_second: 0,
        }
    }
}

impl Limits {
    /// These limits with an override's set fields over them.
    fn with(self, o: Option<&NamespaceQuota>) -> Limits {
        let Some(o) = o else { return self };
        Limits {
            calls: o.calls.map_or(self.calls, |v| v as usize),
            collections: o.collections.map_or(self.collections, |v| v as usize),
            storage_bytes: o.storage_bytes.unwrap_or(self.storage_bytes),
            records_per_second: o.records_per_second.unwrap_or(self.records_per_second),
        }
    }

    /// As the API shows them.
    pub fn to_proto(self) -> QuotaLimits {
        QuotaLimits {
            calls: self.calls as u64,
            collections: self.collections as u64,
            storage_bytes: self.storage_bytes,
            records_per_second: self.records_per_second,
        }
    }
}

/// See the module doc.
pub struct Quotas {
    defaults: Limits,
    overrides: Arc<Overrides>,
    running: Mutex<HashMap<Namespace, usize>>,
    rates: Mutex<HashMap<Namespace, Bucket>>,
    /// Bytes each namespace with a storage quota held at the last measure.
    stored: RwLock<HashMap<Namespace, u64>>,
}

/// A running handler call, counted against its namespace until dropped.
pub struct CallSlot {
    quotas: Arc<Quotas>,
    ns: Namespace,
}

impl Drop for CallSlot {
    fn drop(&mut self) {
        let mut running = self.quotas.running.lock().expect("quotas lock");
        if let Some(n) = running.get_mut(&self.ns) {
            *n -= 1;
            if *n == 0 {
                running.remove(&self.ns);
            }
        }
    }
}

impl Quotas {
    /// Quotas with these defaults and the overrides stored in `store`
    /// (`system/quotas`).
    pub async fn load(defaults: Limits, store: Arc<Collection>) -> Result<Arc<Quotas>> {
        Ok(Arc::new(Quotas {
            defaults,
            overrides: Overrides::load(store).await?,
            running: Mutex::new(HashMap::new()),
            rates: Mutex::new(HashMap::new()),
            stored: RwLock::new(HashMap::new()),
        }))
    }

    /// The overrides (set, list, merged from members).
    pub fn overrides(&self) -> &Arc<Overrides> {
        &self.overrides
    }

    /// The node's defaults.
    pub fn defaults(&self) -> Limits {
        self.defaults
    }

    /// The limits in force for `ns`.
    pub fn limits(&self, ns: &Namespace) -> Limits {
        self.overrides.read(ns, |o| self.defaults.with(o))
    }

    /// Counts a handler call of `ns`; RESOURCE_EXHAUSTED when the namespace
    /// already runs its quota.
    pub fn enter_call(self: &Arc<Self>, ns: &Namespace) -> Result<CallSlot> {
        let quota = self.limits(ns).calls;
        let mut running = self.running.lock().expect("quotas lock");
        let n = running.entry(ns.clone()).or_default();
        if *n >= quota {
            refused(ns, "calls");
            return Err(Error::resource_exhausted(format!(
                "namespace {ns} already runs {quota} handler calls on this node, its quota of calls (--max-calls-per-namespace or an override); retry when some have finished"
            )));
        }
        *n += 1;
        Ok(CallSlot {
            quotas: self.clone(),
            ns: ns.clone(),
        })
    }

    /// What `ns` uses on this node; its storage measured now.
    pub async fn usage(&self, catalog: &Catalog, ns: &Namespace) -> Result<QuotaUsage> {
        let storage = storage_of(catalog, ns).await?;
        if self.limits(ns).storage_bytes > 0 {
            self.stored
                .write()
                .expect("quotas lock")
                .insert(ns.clone(), storage);
        }
        let calls = self
            .running
            .lock()
            .expect("quotas lock")
            .get(ns)
            .copied()
            .unwrap_or(0);
        Ok(QuotaUsage {
            calls: calls as u64,
            collections: catalog.count_in(ns) as u64,
            storage_bytes: storage,
        })
    }

    /// Measures, every `STORAGE_SAMPLE_INTERVAL` (and at once after an
    /// override changed), what each namespace with a storage quota holds.
    /// Stops with the catalogue.
    pub fn measure_storage(
        self: &Arc<Self>,
        catalog: Weak<Catalog>,
    ) -> tokio::task::JoinHandle<()> {
        let me = Arc::downgrade(self);
        let mut changes = self.overrides.subscribe();
        tokio::spawn(async move {
            loop {
                let (Some(q), Some(c)) = (me.upgrade(), catalog.upgrade()) else {
                    break;
                };
                if let Err(e) = q.measure_once(&c).await {
                    tracing::warn!(error = %e.message, "measuring storage for quotas failed");
                }
                drop((q, c));
                tokio::select! {
                    _ = tokio::time::sleep(crate::limits::STORAGE_SAMPLE_INTERVAL) => {}
                    r = changes.changed() => if r.is_err() { break },
                }
            }
        })
    }

    async fn measure_once(&self, catalog: &Catalog) -> Result<()> {
        // One pass over the catalogue, whatever the number of namespaces.
        let mut measured: HashMap<Namespace, u64> = HashMap::new();
        for meta in catalog.owned() {
            if self.limits(&meta.namespace).storage_bytes == 0 {
                continue;
            }
            let bytes = bytes_of(catalog, &meta.namespace, &meta.name).await?;
            *measured.entry(meta.namespace).or_default() += bytes;
        }
        *self.stored.write().expect("quotas lock") = measured;
        Ok(())
    }
}

/// Counts a refusal by `quota` (`telemetry::QUOTA_REFUSALS`).
fn refused(ns: &Namespace, quota: &'static str) {
    metrics::counter!(crate::telemetry::QUOTA_REFUSALS, "namespace" => ns.to_string(), "quota" => quota)
        .increment(1);
}

/// Bytes the collections of `ns` hold on this node.
async fn storage_of(catalog: &Catalog, ns: &Namespace) -> Result<u64> {
    let mut total = 0u64;
    for meta in catalog.owned().into_iter().filter(|m| &m.namespace == ns) {
        total += bytes_of(catalog, ns, &meta.name).await?;
    }
    Ok(total)
}

/// Bytes one collection holds (0 if it was deleted since it was listed).
async fn bytes_of(
    catalog: &Catalog,
    ns: &Namespace,
    name: &crate::names::CollectionName,
) -> Result<u64> {
    match catalog.get(ns, name) {
        Ok(c) => c.used_bytes().await,
        Err(e) if e.kind == crate::error::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e),
    }
}

impl Admission for Quotas {
    fn admit_write(&self, ns: &Namespace, records: usize, adds: u64) -> Result<()> {
        let limits = self.limits(ns);
        if adds > 0 && limits.storage_bytes > 0 {
            let mut stored = self.stored.write().expect("quotas lock");
            let used = stored.entry(ns.clone()).or_default();
            if *used >= limits.storage_bytes {
                refused(ns, "storage_bytes");
                return Err(Error::resource_exhausted(format!(
                    "namespace {ns} holds {used} bytes on this node, its storage quota of {} bytes; delete records or files, or ask an operator for a larger quota",
                    limits.storage_bytes
                )));
            }
            // Counted until the next measure says what it really holds.
            *used += adds;
        }
        if records > 0 && limits.records_per_second > 0 {
            let mut rates = self.rates.lock().expect("quotas lock");
            let bucket = rates
                .entry(ns.clone())
                .or_insert_with(|| Bucket::full(limits.records_per_second));
            if let Err(wait) = bucket.take(limits.records_per_second, records, Instant::now()) {
                refused(ns, "records_per_second");
                return Err(Error::resource_exhausted(format!(
                    "namespace {ns} writes more than its quota of {} records a second; retry in {} ms",
                    limits.records_per_second,
                    wait.as_millis().max(1)
                )));
            }
        }
        Ok(())
    }

    fn admit_collection(&self, ns: &Namespace, held: usize) -> Result<()> {
        let quota = self.limits(ns).collections;
        if held >= quota {
            refused(ns, "collections");
            return Err(Error::resource_exhausted(format!(
                "namespace {ns} holds {held} collections on this node, its quota of collections (--max-collections-per-namespace or an override); delete one first"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_take_the_fields_they_set() {
        let d = Limits::default();
        let o = NamespaceQuota {
            calls: Some(3),
            storage_bytes: Some(1000),
            ..Default::default()
        };
        let l = d.with(Some(&o));
        assert_eq!((l.calls, l.storage_bytes), (3, 1000));
        assert_eq!(
            (l.collections, l.records_per_second),
            (d.collections, d.records_per_second)
        );
        assert_eq!(d.with(None), d);
    }
}
