//! A collection's description (`CollectionMeta`), its backup policy and
//! changes to it, and their stored form (collector.v1.CollectionInfo, in
//! `system/collections` and in backups).

use super::record::Labels;
use crate::error::Result;
use crate::names::{CollectionName, Namespace};

/// A collection's description.
#[derive(Debug, Clone, PartialEq)]
pub struct CollectionMeta {
    /// The namespace it lives in.
    pub namespace: Namespace,
    /// Its name in the namespace.
    pub name: CollectionName,
    /// Full name of its records' message type.
    pub message_type: String,
    /// The collection's own labels (for Discover).
    pub labels: Labels,
    /// Free text for people.
    pub description: String,
    /// Indexed field paths.
    pub indexes: Vec<String>,
    /// When it was created (µs since the epoch).
    pub created_us: i64,
    /// When it is backed up by itself, and how long backups are kept.
    pub backup_policy: BackupPolicy,
}

/// When a collection is backed up without being asked, and which of its
/// backups are kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BackupPolicy {
    /// Keep at most this many, the newest (0: no limit).
    pub max_backups: u32,
    /// Delete backups older than this.
    pub retention: Option<std::time::Duration>,
    /// Take a backup this often (counted from the newest).
    pub interval: Option<std::time::Duration>,
}

impl BackupPolicy {
    /// A policy as sent or stored (every value is valid: 0 means none).
    pub fn from_proto(p: Option<&crate::proto::BackupPolicy>) -> Self {
        let Some(p) = p else {
            return Self::default();
        };
        let secs = |n: u64| (n > 0).then(|| std::time::Duration::from_secs(n));
        BackupPolicy {
            max_backups: p.max_backups,
            retention: secs(p.retention_seconds),
            interval: secs(p.interval_seconds),
        }
    }

    /// The stored and sent form (None for the default: nothing scheduled,
    /// nothing pruned).
    pub fn to_proto(&self) -> Option<crate::proto::BackupPolicy> {
        (*self != Self::default()).then(|| crate::proto::BackupPolicy {
            max_backups: self.max_backups,
            retention_seconds: self.retention.map_or(0, |d| d.as_secs()),
            interval_seconds: self.interval.map_or(0, |d| d.as_secs()),
        })
    }
}

impl CollectionMeta {
    /// A description as stored or sent (`CollectionInfo`), checked.
    pub fn from_info(info: crate::proto::CollectionInfo, created_us: i64) -> Result<Self> {
        Ok(CollectionMeta {
            namespace: Namespace::new(&info.namespace)?,
            name: CollectionName::new(&info.name)?,
            message_type: info.message_type,
            labels: info.labels.into_iter().collect(),
            description: info.description,
            indexes: info.indexes,
            created_us,
            backup_policy: BackupPolicy::from_proto(info.backup_policy.as_ref()),
        })
    }
}

/// A change to a collection's description (`UpdateCollection`); what is
/// None or empty is left as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CollectionUpdate {
    /// A new description.
    pub description: Option<String>,
    /// Labels to set (added or replaced).
    pub set_labels: Labels,
    /// Label keys to remove.
    pub remove_labels: Vec<String>,
    /// Field paths to index.
    pub add_indexes: Vec<String>,
    /// Indexed field paths to stop indexing.
    pub drop_indexes: Vec<String>,
    /// A new backup policy.
    pub backup_policy: Option<BackupPolicy>,
}

/// A description as stored in `system/collections` (and in backups).
pub fn meta_to_proto(m: &CollectionMeta) -> crate::proto::CollectionInfo {
    crate::proto::CollectionInfo {
        namespace: m.namespace.to_string(),
        name: m.name.to_string(),
        message_type: m.message_type.clone(),
        labels: m.labels.clone().into_iter().collect(),
        description: m.description.clone(),
        indexes: m.indexes.clone(),
        created_at: Some(crate::util::timestamp(m.created_us)),
        backup_policy: m.backup_policy.to_proto(),
        ..Default::default()
    }
}
