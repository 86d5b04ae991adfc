//! The catalogue: which collections exist, of which type, where. It is itself
//! the `system/collections` collection (records of collector.v1.CollectionInfo),
//! so it is persisted and queried by the same code as any collection.

use super::admission::Admission;
use super::codec;
use super::collection::{Collection, Options};
use super::meta::{BackupPolicy, CollectionMeta, CollectionUpdate, meta_to_proto};
use super::query::{Filter, Query};
use super::record::{Labels, Page, WriteOp, Written};
use crate::error::{Error, Result};
use crate::names::{CollectionName, Namespace, RecordId};
use prost::Message;
use prost_reflect::{DynamicMessage, MessageDescriptor};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// Resolves the message type of a collection in its namespace. The type
/// registry implements it (wired in `node.rs`), so the store needs no
/// knowledge of how types are registered.
pub trait Types: Send + Sync {
    /// The message type `full_name` as registered in `ns` (or a well-known
    /// type); NOT_FOUND if it is not, INVALID_ARGUMENT if the name is empty.
    fn message(&self, ns: &Namespace, full_name: &str) -> Result<MessageDescriptor>;
}

/// The name of the catalogue collection in `system`.
pub const COLLECTIONS: &str = "collections";
/// The name of the registered-types collection in `system`.
pub const PROTOS: &str = "protos";
/// The name of the registered-services collection in `system`.
pub const SERVICES: &str = "services";
/// The name of the backups collection in `system`.
pub const BACKUPS: &str = "backups";
/// Name of the system collection of API keys (collector.v1.StoredKey).
pub const KEYS: &str = "keys";
/// Name of the append-only audit log (collector.v1.AuditEntry).
pub const AUDIT: &str = "audit";
/// Name of the system collection of quota overrides (collector.v1.NamespaceQuota).
pub const QUOTAS: &str = "quotas";
use crate::limits::MAX_INDEXES;

type Key = (Namespace, CollectionName);

struct Entry {
    meta: CollectionMeta,
    coll: Arc<Collection>,
}

/// Every collection of the node.
pub struct Catalog {
    root: PathBuf,
    options: Options,
    types: Arc<dyn Types>,
    /// The quotas every client collection asks before it takes a write.
    admission: Arc<dyn Admission>,
    /// The bound on open client collections.
    residency: Arc<super::residency::Residency>,
    system: Arc<Collection>,
    entries: RwLock<BTreeMap<Key, Entry>>,
    ddl: tokio::sync::Mutex<()>,
    /// Bumped whenever a collection is created or deleted.
    changes: tokio::sync::watch::Sender<u64>,
}

/// One collection's matches in a cross-collection search.
#[derive(Debug, Clone)]
pub struct CollectionHits {
    /// The collection searched.
    pub collection: CollectionName,
    /// How many of its records match.
    pub total: i64,
    /// The first page of them.
    pub page: Page,
}

fn db_path(root: &Path, ns: &Namespace, name: &CollectionName) -> PathBuf {
    root.join("collections")
        .join(ns.as_str())
        .join(format!("{name}.db"))
}

/// Where the files attached to a collection's records live.
fn files_path(root: &Path, ns: &Namespace, name: &CollectionName) -> PathBuf {
    root.join("files").join(ns.as_str()).join(name.as_str())
}

async fn open_blocking(
    meta: &CollectionMeta,
    desc: prost_reflect::MessageDescriptor,
    root: &Path,
    options: Options,
) -> Result<Arc<Collection>> {
    let (ns, name, indexes) = (
        meta.namespace.clone(),
        meta.name.clone(),
        meta.indexes.clone(),
    );
    let path = db_path(root, &ns, &name);
    let files = files_path(root, &ns, &name);
    tokio::task::spawn_blocking(move || {
        Collection::open(ns, name, desc, path, files, &indexes, options)
    })
    .await
    .map_err(|e| Error::internal(format!("open task failed: {e}")))?
}

fn system_meta(name: &str, message_type: &str) -> CollectionMeta {
    CollectionMeta {
        namespace: Namespace::system(),
        name: CollectionName::new(name).expect("valid system name"),
        message_type: message_type.to_string(),
        labels: Labels::new(),
        description: String::new(),
        indexes: vec![],
        created_us: 0,
        backup_policy: BackupPolicy::default(),
    }
}

/// The collections of the `system` namespace: the node's own state.
pub struct SystemCollections {
    /// Registered .proto files (collector.v1.ProtoFileRecord).
    pub protos: Arc<Collection>,
    /// The catalogue (collector.v1.CollectionInfo).
    pub collections: Arc<Collection>,
    /// Registered services (collector.v1.ServiceInfo).
    pub services: Arc<Collection>,
    /// Backups taken on this node (collector.v1.BackupInfo).
    pub backups: Arc<Collection>,
    /// API keys, as hashes (collector.v1.StoredKey).
    pub keys: Arc<Collection>,
    /// Who did what (collector.v1.AuditEntry).
    pub audit: Arc<Collection>,
    /// Quota overrides per namespace (collector.v1.NamespaceQuota).
    pub quotas: Arc<Collection>,
}

impl SystemCollections {
    fn all(&self) -> [&Arc<Collection>; 7] {
        [
            &self.protos,
            &self.collections,
            &self.services,
            &self.backups,
            &self.keys,
            &self.audit,
            &self.quotas,
        ]
    }
}

/// Name and message type of each system collection.
const SYSTEM_COLLECTIONS: [(&str, &str); 7] = [
    (PROTOS, "collector.v1.ProtoFileRecord"),
    (COLLECTIONS, "collector.v1.CollectionInfo"),
    (SERVICES, "collector.v1.ServiceInfo"),
    (BACKUPS, "collector.v1.BackupInfo"),
    (KEYS, "collector.v1.StoredKey"),
    (AUDIT, "collector.v1.AuditEntry"),
    (QUOTAS, "collector.v1.NamespaceQuota"),
];

/// Opens the system collections the registry, catalogue and services live in.
pub async fn open_system(root: &Path, options: Options) -> Result<SystemCollections> {
    let api = crate::proto::api_pool();
    let mut opened = Vec::new();
    for (name, ty) in SYSTEM_COLLECTIONS {
        let meta = system_meta(name, ty);
        let desc = api
            .get_message_by_name(ty)
            .expect("the API defines the system types");
        opened.push(open_blocking(&meta, desc, root, options).await?);
    }
    let mut opened = opened.into_iter();
    let mut next = || opened.next().expect("one per system collection");
    Ok(SystemCollections {
        protos: next(),
        collections: next(),
        services: next(),
        backups: next(),
        keys: next(),
        audit: next(),
        quotas: next(),
    })
}

impl Catalog {
    /// Loads the catalogue and opens every collection in it.
    pub async fn load(
        root: PathBuf,
        options: Options,
        types: Arc<dyn Types>,
        admission: Arc<dyn Admission>,
        sys: &SystemCollections,
    ) -> Result<Self> {
        let mut entries = BTreeMap::new();
        for (coll, (_, msg_type)) in sys.all().into_iter().zip(SYSTEM_COLLECTIONS) {
            let meta = system_meta(coll.name.as_str(), msg_type);
            entries.insert(
                (meta.namespace.clone(), meta.name.clone()),
                Entry {
                    meta,
                    coll: coll.clone(),
                },
            );
        }
        let system = sys.collections.clone();
        let mut metas = Vec::new();
        system
            .scan(|rec, msg| {
                let info: crate::proto::CollectionInfo = msg.transcode_to().map_err(|e| {
                    Error::internal(format!("system/collections {:?}: {e}", rec.id))
                })?;
                metas.push(CollectionMeta::from_info(info, rec.created_us)?);
                Ok(())
            })
            .await?;
        let residency =
            super::residency::Residency::start(options.max_open_collections, options.idle_close);
        // A collection opens on first use; only those with attached files
        // are looked at now, to sweep what a crash left in their area.
        for meta in metas {
            let path = db_path(&root, &meta.namespace, &meta.name);
            // A restore cut short by a crash left its copy: the old file is whole.
            let _ = std::fs::remove_file(with_suffix(&path, ".restoring"));
            let mdesc = types.message(&meta.namespace, &meta.message_type)?;
            let files = files_path(&root, &meta.namespace, &meta.name);
            // An empty area (or none) has nothing to sweep.
            let has_files = std::fs::read_dir(&files).is_ok_and(|mut d| d.next().is_some());
            let coll = if has_files {
                open_blocking(&meta, mdesc, &root, options).await?
            } else {
                Collection::closed(
                    meta.namespace.clone(),
                    meta.name.clone(),
                    mdesc,
                    path,
                    files,
                    &meta.indexes,
                    options,
                )
            };
            coll.admit_through(admission.clone());
            coll.reside_in(residency.clone());
            entries.insert(
                (meta.namespace.clone(), meta.name.clone()),
                Entry { meta, coll },
            );
        }
        tracing::info!(
            collections = entries.len() - SYSTEM_COLLECTIONS.len(),
            "catalogue loaded"
        );
        Ok(Catalog {
            root,
            options,
            types,
            admission,
            residency,
            system,
            entries: RwLock::new(entries),
            ddl: tokio::sync::Mutex::new(()),
            changes: tokio::sync::watch::channel(0).0,
        })
    }

    /// Opens a client collection, asking the quotas before each write.
    async fn open(
        &self,
        meta: &CollectionMeta,
        desc: prost_reflect::MessageDescriptor,
    ) -> Result<Arc<Collection>> {
        let coll = open_blocking(meta, desc, &self.root, self.options).await?;
        coll.admit_through(self.admission.clone());
        coll.reside_in(self.residency.clone());
        Ok(coll)
    }

    /// How many client collections are open (see `residency`).
    pub fn open_count(&self) -> usize {
        self.residency.open_count()
    }

    /// Notified after every create and delete.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// True if the collection is on this node.
    pub fn contains(&self, ns: &Namespace, name: &CollectionName) -> bool {
        self.entries
            .read()
            .expect("catalog lock")
            .contains_key(&(ns.clone(), name.clone()))
    }

    /// Every client collection on this node (`system` left out).
    pub fn owned(&self) -> Vec<CollectionMeta> {
        self.entries
            .read()
            .expect("catalog lock")
            .iter()
            .filter(|(k, _)| !k.0.is_system())
            .map(|(_, e)| e.meta.clone())
            .collect()
    }

    /// How many collections namespace `ns` holds on this node.
    pub fn count_in(&self, ns: &Namespace) -> usize {
        self.entries
            .read()
            .expect("catalog lock")
            .keys()
            .filter(|k| &k.0 == ns)
            .count()
    }

    /// How many client collections this node holds (`system` left out).
    pub fn count(&self) -> usize {
        self.entries
            .read()
            .expect("catalog lock")
            .keys()
            .filter(|k| !k.0.is_system())
            .count()
    }

    /// An open collection, for reading.
    pub fn get(&self, ns: &Namespace, name: &CollectionName) -> Result<Arc<Collection>> {
        self.entries
            .read()
            .expect("catalog lock")
            .get(&(ns.clone(), name.clone()))
            .map(|e| e.coll.clone())
            .ok_or_else(|| Error::not_found(format!("collection {ns}/{name} does not exist; create it with CollectionRepo.CreateCollection")))
    }

    /// An open collection, for writing (refused in `system`).
    pub fn get_writable(&self, ns: &Namespace, name: &CollectionName) -> Result<Arc<Collection>> {
        ns.writable()?;
        self.get(ns, name)
    }

    /// A collection's description.
    pub fn meta(&self, ns: &Namespace, name: &CollectionName) -> Result<CollectionMeta> {
        self.entries
            .read()
            .expect("catalog lock")
            .get(&(ns.clone(), name.clone()))
            .map(|e| e.meta.clone())
            .ok_or_else(|| Error::not_found(format!("collection {ns}/{name} does not exist")))
    }

    /// Creates a collection of a type registered in its namespace.
    pub async fn create(&self, mut meta: CollectionMeta) -> Result<CollectionMeta> {
        meta.namespace.writable()?;
        let desc = self.types.message(&meta.namespace, &meta.message_type)?;
        meta.message_type = desc.full_name().to_string();
        super::record::check_labels(&meta.labels)?;
        if meta.indexes.len() > MAX_INDEXES {
            return Err(Error::invalid(format!(
                "{} indexes; the limit is {MAX_INDEXES}",
                meta.indexes.len()
            )));
        }
        for p in &meta.indexes {
            super::query::order_expr(&desc, p).map_err(|e| e.context(format!("indexes {p:?}")))?;
        }
        meta.indexes.sort();
        meta.indexes.dedup();
        let _ddl = self.ddl.lock().await;
        let key = (meta.namespace.clone(), meta.name.clone());
        if self
            .entries
            .read()
            .expect("catalog lock")
            .contains_key(&key)
        {
            return Err(Error::already_exists(format!(
                "collection {}/{} already exists",
                meta.namespace, meta.name
            )));
        }
        // Under the DDL lock: concurrent creates cannot overshoot a quota.
        self.admission
            .admit_collection(&meta.namespace, self.count_in(&meta.namespace))?;
        // A file left by a delete that crashed half-way is stale: start clean.
        remove_files(&db_path(&self.root, &meta.namespace, &meta.name));
        let coll = self.open(&meta, desc).await?;
        let info = meta_to_proto(&meta);
        let msg = DynamicMessage::decode(
            self.system.descriptor().clone(),
            info.encode_to_vec().as_slice(),
        )
        .map_err(|e| Error::internal(format!("encoding collection info: {e}")))?;
        let id = RecordId::new(&format!("{}/{}", meta.namespace, meta.name))?;
        let written = self
            .system
            .write(WriteOp::Create {
                id: Some(id),
                payload: codec::encode(&msg)?,
                labels: Labels::new(),
            })
            .await;
        let created_us = match written {
            Ok(Written::Stored(r)) => r.created_us,
            Ok(Written::Deleted) => unreachable!("create stores"),
            Err(e) => {
                // Closing joins the writer thread: not on the executor.
                let _ = tokio::task::spawn_blocking(move || {
                    coll.close();
                    remove_files(coll.path());
                })
                .await;
                return Err(e);
            }
        };
        meta.created_us = created_us;
        self.entries.write().expect("catalog lock").insert(
            key,
            Entry {
                meta: meta.clone(),
                coll,
            },
        );
        self.changes.send_modify(|n| *n += 1);
        tracing::info!(namespace = %meta.namespace, collection = %meta.name, r#type = %meta.message_type, "collection created");
        Ok(meta)
    }

    /// Changes a collection's description, labels and indexes. Indexes are
    /// changed first, in one writer transaction; the description is stored
    /// after (a crash between the two leaves the new indexes with the old
    /// list, and the list is what the node opens with).
    pub async fn update(
        &self,
        ns: &Namespace,
        name: &CollectionName,
        change: CollectionUpdate,
    ) -> Result<CollectionMeta> {
        ns.writable()?;
        let _ddl = self.ddl.lock().await;
        let mut meta = self.meta(ns, name)?;
        let coll = self.get(ns, name)?;
        if let Some(d) = change.description {
            meta.description = d;
        }
        if let Some(p) = change.backup_policy {
            meta.backup_policy = p;
        }
        for k in &change.remove_labels {
            meta.labels.remove(k);
        }
        meta.labels.extend(change.set_labels);
        super::record::check_labels(&meta.labels)?;
        for p in &change.drop_indexes {
            if !meta.indexes.contains(p) {
                return Err(Error::invalid(format!(
                    "drop_indexes: {:?} is not indexed (indexes: {})",
                    crate::names::clip(p),
                    meta.indexes.join(", ")
                )));
            }
        }
        meta.indexes.retain(|p| !change.drop_indexes.contains(p));
        let desc = coll.descriptor().clone();
        let mut add = Vec::new();
        for p in change.add_indexes {
            super::query::order_expr(&desc, &p)
                .map_err(|e| e.context(format!("add_indexes {:?}", crate::names::clip(&p))))?;
            if !meta.indexes.contains(&p) {
                meta.indexes.push(p.clone());
                add.push(p);
            }
        }
        if meta.indexes.len() > MAX_INDEXES {
            return Err(Error::invalid(format!(
                "{} indexes; the limit is {MAX_INDEXES}",
                meta.indexes.len()
            )));
        }
        meta.indexes.sort();
        if !add.is_empty() || !change.drop_indexes.is_empty() {
            coll.change_indexes(add, change.drop_indexes).await?;
        }
        let info = meta_to_proto(&meta);
        let msg = DynamicMessage::decode(
            self.system.descriptor().clone(),
            info.encode_to_vec().as_slice(),
        )
        .map_err(|e| Error::internal(format!("encoding collection info: {e}")))?;
        self.system
            .write(WriteOp::Update {
                id: RecordId::new(&format!("{ns}/{name}"))?,
                data: Some(msg),
                labels: Labels::new(),
                mask: super::record::Mask::full(),
                expected_version: None,
            })
            .await?;
        if let Some(e) = self
            .entries
            .write()
            .expect("catalog lock")
            .get_mut(&(ns.clone(), name.clone()))
        {
            e.meta = meta.clone();
        }
        self.changes.send_modify(|n| *n += 1);
        tracing::info!(namespace = %ns, collection = %name, "collection updated");
        Ok(meta)
    }

    /// Makes the collection `meta` names hold the records of the backup file
    /// `backup` (already verified by the caller): a new collection, or, with
    /// `overwrite`, the existing one replaced. The file is copied next to
    /// the collection's and renamed into place, so a crash leaves the old
    /// file whole or the new one complete; writes queued before the swap
    /// land in the old one first, later ones are told to retry.
    pub async fn restore(
        &self,
        mut meta: CollectionMeta,
        backup: PathBuf,
        take: super::backup::Take,
        include_files: bool,
        overwrite: bool,
        mut report: impl FnMut(super::backup::StepProgress) + Send + 'static,
    ) -> Result<CollectionMeta> {
        meta.namespace.writable()?;
        let desc = self.types.message(&meta.namespace, &meta.message_type)?;
        let _ddl = self.ddl.lock().await;
        let key = (meta.namespace.clone(), meta.name.clone());
        let old = self
            .entries
            .read()
            .expect("catalog lock")
            .get(&key)
            .map(|e| (e.meta.clone(), e.coll.clone()));
        if let Some((old_meta, _)) = &old {
            if !overwrite {
                return Err(Error::already_exists(format!(
                    "collection {}/{} exists; set overwrite to replace it, or restore to another name",
                    meta.namespace, meta.name
                )));
            }
            if old_meta.message_type != meta.message_type {
                return Err(Error::failed_precondition(format!(
                    "collection {}/{} holds {}, the backup {}; restore it to another name",
                    meta.namespace, meta.name, old_meta.message_type, meta.message_type
                )));
            }
            meta.created_us = old_meta.created_us;
            meta.backup_policy = old_meta.backup_policy;
        } else {
            self.admission
                .admit_collection(&meta.namespace, self.count_in(&meta.namespace))?;
        }
        // A restore brings bytes in: a namespace over its storage may not.
        self.admission.admit_write(&meta.namespace, 0, 1)?;
        let path = db_path(&self.root, &meta.namespace, &meta.name);
        let staging = with_suffix(&path, ".restoring");
        let (b, st) = (backup.clone(), staging.clone());
        // The snapshot's files go into the collection's area under new
        // names before the swap: until then they are orphans the old
        // collection never touches (and a crash leaves them to its sweep);
        // after it, the old collection's blobs are, swept at the open below.
        let area = include_files
            .then(|| super::FileArea::new(files_path(&self.root, &meta.namespace, &meta.name)));
        blocking(move || {
            if let Some(dir) = st.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let _ = std::fs::remove_file(&st);
            super::backup::prepare_for_restore(&b, &st, take, area.as_ref(), &mut report)
        })
        .await
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&staging);
        })?;
        if let Some((_, coll)) = &old {
            let coll = coll.clone();
            blocking(move || {
                coll.retire();
                Ok(())
            })
            .await?;
        }
        let (p, st) = (path.clone(), staging.clone());
        let swapped = blocking(move || swap_in(&st, &p)).await;
        if let Err(e) = swapped {
            let _ = std::fs::remove_file(&staging);
            if let Some((old_meta, _)) = old {
                // The old file is untouched: serve it again.
                let mdesc = self
                    .types
                    .message(&old_meta.namespace, &old_meta.message_type)?;
                let coll = self.open(&old_meta, mdesc).await?;
                self.entries.write().expect("catalog lock").insert(
                    key,
                    Entry {
                        meta: old_meta,
                        coll,
                    },
                );
            }
            return Err(e);
        }
        let coll = self.open(&meta, desc).await?;
        let info = meta_to_proto(&meta);
        let msg = DynamicMessage::decode(
            self.system.descriptor().clone(),
            info.encode_to_vec().as_slice(),
        )
        .map_err(|e| Error::internal(format!("encoding collection info: {e}")))?;
        let id = RecordId::new(&format!("{}/{}", meta.namespace, meta.name))?;
        let op = if old.is_some() {
            WriteOp::Update {
                id,
                data: Some(msg),
                labels: Labels::new(),
                mask: super::record::Mask::full(),
                expected_version: None,
            }
        } else {
            WriteOp::Create {
                id: Some(id),
                payload: codec::encode(&msg)?,
                labels: Labels::new(),
            }
        };
        match self.system.write(op).await {
            Ok(Written::Stored(r)) if old.is_none() => meta.created_us = r.created_us,
            Ok(_) => {}
            Err(e) if old.is_none() => {
                let _ = blocking(move || {
                    coll.close();
                    remove_files(coll.path());
                    Ok(())
                })
                .await;
                return Err(e);
            }
            // The records are restored; only the stored description is old.
            Err(e) => {
                tracing::warn!(error = %e, "restored, but the collection's description was not updated")
            }
        }
        self.entries.write().expect("catalog lock").insert(
            key,
            Entry {
                meta: meta.clone(),
                coll,
            },
        );
        self.changes.send_modify(|n| *n += 1);
        tracing::info!(namespace = %meta.namespace, collection = %meta.name, overwrite, "collection restored");
        Ok(meta)
    }

    /// Deletes a collection and its records.
    pub async fn delete(&self, ns: &Namespace, name: &CollectionName) -> Result<()> {
        ns.writable()?;
        let _ddl = self.ddl.lock().await;
        self.get(ns, name)?;
        let id = RecordId::new(&format!("{ns}/{name}"))?;
        self.system
            .write(WriteOp::Delete {
                id,
                expected_version: None,
            })
            .await?;
        let entry = self
            .entries
            .write()
            .expect("catalog lock")
            .remove(&(ns.clone(), name.clone()));
        if let Some(e) = entry {
            tokio::task::spawn_blocking(move || {
                e.coll.close();
                remove_files(e.coll.path());
                // The bytes of its records' files go with it.
                let _ = std::fs::remove_dir_all(e.coll.files_root());
            })
            .await
            .map_err(|e| Error::internal(format!("delete task failed: {e}")))?;
        }
        self.changes.send_modify(|n| *n += 1);
        tracing::info!(namespace = %ns, collection = %name, "collection deleted");
        Ok(())
    }

    /// Collections matching a namespace (None: all but `system`), a type and labels,
    /// in (namespace, name) order after `after`.
    pub fn discover(
        &self,
        ns: Option<&Namespace>,
        message_type: &str,
        labels: &Labels,
        after: Option<&(Namespace, CollectionName)>,
        limit: usize,
    ) -> Vec<CollectionMeta> {
        let entries = self.entries.read().expect("catalog lock");
        entries
            .iter()
            .filter(|(k, _)| after.is_none_or(|a| *k > a))
            .filter(|(k, _)| match ns {
                Some(n) => &k.0 == n,
                None => !k.0.is_system(),
            })
            .filter(|(_, e)| message_type.is_empty() || e.meta.message_type == message_type)
            .filter(|(_, e)| labels.iter().all(|(k, v)| e.meta.labels.get(k) == Some(v)))
            .take(limit)
            .map(|(_, e)| e.meta.clone())
            .collect()
    }

    /// Runs one query over several collections of a namespace. Named
    /// collections must accept every filter; unnamed ones that do not are skipped.
    pub async fn search_many(
        &self,
        ns: &Namespace,
        names: &[CollectionName],
        text: &str,
        filters: &[Filter],
        labels: &Labels,
        limit: u32,
    ) -> Result<Vec<CollectionHits>> {
        let explicit = !names.is_empty();
        let targets: Vec<Arc<Collection>> = if explicit {
            names
                .iter()
                .map(|n| self.get(ns, n))
                .collect::<Result<_>>()?
        } else {
            let entries = self.entries.read().expect("catalog lock");
            entries
                .iter()
                .filter(|(k, _)| &k.0 == ns)
                .map(|(_, e)| e.coll.clone())
                .collect()
        };
        let mut out = Vec::new();
        for coll in targets {
            let q = Query {
                text: text.to_string(),
                filters: filters.to_vec(),
                labels: labels.clone(),
                page_size: limit,
                ..Default::default()
            };
            match coll.search(q, true).await {
                Ok((page, total)) => {
                    let total = total.unwrap_or(0);
                    if total > 0 {
                        out.push(CollectionHits {
                            collection: coll.name.clone(),
                            total,
                            page,
                        });
                    }
                }
                Err(e)
                    if !explicit
                        && e.kind == crate::error::ErrorKind::InvalidArgument
                        && !filters.is_empty()
                        && e.message.contains("field path") =>
                {
                    continue;
                }
                Err(e) => return Err(e.context(format!("collection {}", coll.name))),
            }
        }
        out.sort_by(|a, b| b.total.cmp(&a.total).then(a.collection.cmp(&b.collection)));
        Ok(out)
    }

    /// Closes every collection (at shutdown), letting queued writes finish.
    pub fn close_all(&self) {
        for e in self.entries.read().expect("catalog lock").values() {
            e.coll.close();
        }
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

fn remove_files(db: &Path) {
    for suffix in ["", "-wal", "-shm", ".restoring"] {
        let _ = std::fs::remove_file(with_suffix(db, suffix));
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::internal(format!("file task failed: {e}")))?
}

/// Renames the restored file `staging` over the collection file `db`. The
/// old file's WAL must not outlive it (SQLite would replay it into the new
/// file), so it is checkpointed completely first and then removed; if it
/// cannot be, nothing is swapped.
fn swap_in(staging: &Path, db: &Path) -> Result<()> {
    if db.exists() {
        let conn = rusqlite::Connection::open(db)?;
        conn.busy_timeout(crate::limits::SQLITE_BUSY_TIMEOUT)?;
        let (busy, log, moved): (i64, i64, i64) =
            conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?;
        if busy != 0 || log != moved {
            return Err(Error::unavailable(
                "a reader still holds the collection's old file; retry the restore",
            ));
        }
        conn.close().map_err(|(_, e)| Error::from(e))?;
    }
    for suffix in ["-wal", "-shm"] {
        match std::fs::remove_file(with_suffix(db, suffix)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
    }
    std::fs::rename(staging, db)?;
    if let Some(dir) = db.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}
