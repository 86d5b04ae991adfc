//! Per-namespace quotas, so one namespace cannot take the node from the
//! others: at most so many handler calls running at once, and so many
//! collections. Over a quota a call is RESOURCE_EXHAUSTED at once, saying
//! which quota, instead of waiting behind the namespace's own calls.

use crate::error::{Error, Result};
use crate::names::Namespace;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The quotas every namespace gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Handler calls of one namespace running at once on this node.
    pub calls: usize,
    /// Collections one namespace may hold on this node.
    pub collections: usize,
}

impl Default for Limits {
    /// `limits::MAX_CALLS_PER_NAMESPACE`, `limits::MAX_COLLECTIONS_PER_NAMESPACE`.
    fn default() -> Self {
        Limits {
            calls: crate::limits::MAX_CALLS_PER_NAMESPACE,
            collections: crate::limits::MAX_COLLECTIONS_PER_NAMESPACE,
        }
    }
}

/// See the module doc.
#[derive(Debug)]
pub struct Quotas {
    limits: Limits,
    running: Mutex<HashMap<Namespace, usize>>,
}

/// A running handler call, counted against its namespace until dropped.
#[derive(Debug)]
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
    /// Quotas with these limits.
    pub fn new(limits: Limits) -> Arc<Quotas> {
        Arc::new(Quotas {
            limits,
            running: Mutex::new(HashMap::new()),
        })
    }

    /// The limits.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Counts a handler call of `ns`; RESOURCE_EXHAUSTED when the namespace
    /// already runs its quota.
    pub fn enter_call(self: &Arc<Self>, ns: &Namespace) -> Result<CallSlot> {
        let mut running = self.running.lock().expect("quotas lock");
        let n = running.entry(ns.clone()).or_default();
        if *n >= self.limits.calls {
            return Err(Error::resource_exhausted(format!(
                "namespace {ns} already runs {} handler calls on this node, its quota (--max-calls-per-namespace); retry when some have finished",
                self.limits.calls
            )));
        }
        *n += 1;
        Ok(CallSlot {
            quotas: self.clone(),
            ns: ns.clone(),
        })
    }

    /// OK while a namespace holding `held` collections may make another.
    pub fn check_collections(&self, ns: &Namespace, held: usize) -> Result<()> {
        if held >= self.limits.collections {
            return Err(Error::resource_exhausted(format!(
                "namespace {ns} holds {held} collections on this node, its quota (--max-collections-per-namespace); delete one first"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_slots_are_counted_per_namespace_and_given_back() {
        let q = Quotas::new(Limits {
            calls: 2,
            collections: 1,
        });
        let (a, b) = (Namespace::new("a").unwrap(), Namespace::new("b").unwrap());
        let s1 = q.enter_call(&a).unwrap();
        let _s2 = q.enter_call(&a).unwrap();
        let e = q.enter_call(&a).unwrap_err();
        assert_eq!(e.kind, crate::error::ErrorKind::ResourceExhausted);
        assert!(e.message.contains("--max-calls-per-namespace"), "{e:?}");
        let _other = q.enter_call(&b).unwrap();
        drop(s1);
        let _s3 = q.enter_call(&a).unwrap();
        assert!(q.check_collections(&a, 0).is_ok());
        assert!(q.check_collections(&a, 1).is_err());
    }
}
