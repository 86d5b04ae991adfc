//! Operators' overrides of the default quotas, one per namespace: stored in
//! `system/quotas`, held in memory for every check, passed on to members
//! by gossip (the newest change wins, so setting one on any node sets it
//! on all).

use crate::error::{Error, Result};
use crate::names::{Namespace, RecordId};
use crate::proto::NamespaceQuota;
use crate::store::Collection;
use prost::Message as _;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// See the module doc.
pub struct Overrides {
    store: Arc<Collection>,
    held: RwLock<HashMap<Namespace, NamespaceQuota>>,
    /// Serialises changes (a set against a merge of the same namespace).
    change: tokio::sync::Mutex<()>,
    changes: tokio::sync::watch::Sender<u64>,
}

/// The namespace an override is for, if it may have one.
fn namespace_of(q: &NamespaceQuota) -> Result<Namespace> {
    let ns = Namespace::new(&q.namespace).map_err(|e| e.context("quota.namespace"))?;
    if ns.is_system() {
        return Err(Error::invalid(
            "the system namespace has no quotas; give a client namespace",
        ));
    }
    for (name, v) in [("calls", q.calls), ("collections", q.collections)] {
        if v == Some(0) {
            return Err(Error::invalid(format!(
                "quota.{name} is 0; give at least 1, or leave it unset for the node's default"
            )));
        }
    }
    Ok(ns)
}

impl Overrides {
    /// Loads every override from `system/quotas`.
    pub async fn load(store: Arc<Collection>) -> Result<Arc<Overrides>> {
        let mut held = HashMap::new();
        store
            .scan(|rec, msg| {
                let q: NamespaceQuota = msg
                    .transcode_to()
                    .map_err(|e| Error::internal(format!("system/quotas {:?}: {e}", rec.id)))?;
                held.insert(namespace_of(&q)?, q);
                Ok(())
            })
            .await?;
        Ok(Arc::new(Overrides {
            store,
            held: RwLock::new(held),
            change: tokio::sync::Mutex::new(()),
            changes: tokio::sync::watch::channel(0).0,
        }))
    }

    /// Ticks on every change (the mesh passes them on).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// `ns`'s override, if any.
    pub fn get(&self, ns: &Namespace) -> Option<NamespaceQuota> {
        self.held.read().expect("quotas lock").get(ns).cloned()
    }

    /// `f` of `ns`'s override, if any, without copying it (every write
    /// and handler call asks).
    pub fn read<R>(&self, ns: &Namespace, f: impl FnOnce(Option<&NamespaceQuota>) -> R) -> R {
        f(self.held.read().expect("quotas lock").get(ns))
    }

    /// Every override, by namespace.
    pub fn list(&self) -> Vec<NamespaceQuota> {
        let mut all: Vec<_> = self
            .held
            .read()
            .expect("quotas lock")
            .values()
            .cloned()
            .collect();
        all.sort_by(|a, b| a.namespace.cmp(&b.namespace));
        all
    }

    /// Sets an override (fields left unset take the defaults), as changed
    /// by key `by`.
    pub async fn set(&self, by: &str, mut q: NamespaceQuota) -> Result<NamespaceQuota> {
        let ns = namespace_of(&q)?;
        let _g = self.change.lock().await;
        let prev = self.get(&ns);
        // Later than anything held, even with a clock that went back.
        q.updated_at_us =
            crate::util::now_us().max(prev.as_ref().map_or(0, |p| p.updated_at_us + 1));
        q.updated_by = by.to_string();
        q.namespace = ns.to_string();
        self.put(ns, q.clone(), prev.is_none()).await?;
        tracing::info!(namespace = %q.namespace, by, "quota override set");
        Ok(q)
    }

    /// Takes a member's override when it is newer than ours. True when it
    /// changed anything.
    pub async fn merge(&self, q: &NamespaceQuota) -> Result<bool> {
        let newer = |held: &HashMap<Namespace, NamespaceQuota>, ns: &Namespace| {
            held.get(ns)
                .is_none_or(|h| q.updated_at_us > h.updated_at_us)
        };
        let ns = namespace_of(q)?;
        // Most views bring nothing new: no lock, no write.
        if !newer(&self.held.read().expect("quotas lock"), &ns) {
            return Ok(false);
        }
        let _g = self.change.lock().await;
        let held = self.held.read().expect("quotas lock").get(&ns).cloned();
        if held
            .as_ref()
            .is_some_and(|h| q.updated_at_us <= h.updated_at_us)
        {
            return Ok(false);
        }
        self.put(ns, q.clone(), held.is_none()).await?;
        tracing::debug!(namespace = %q.namespace, "quota override taken from a member");
        Ok(true)
    }

    async fn put(&self, ns: Namespace, q: NamespaceQuota, create: bool) -> Result<()> {
        self.store
            .put_encoded(RecordId::new(ns.as_str())?, &q.encode_to_vec(), create)
            .await?;
        self.held.write().expect("quotas lock").insert(ns, q);
        self.changes.send_modify(|n| *n += 1);
        Ok(())
    }
}
