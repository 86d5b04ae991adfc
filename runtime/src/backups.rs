//! The node's backups: taking them (`store::backup` makes the file), the
//! `system/backups` collection that records them, verifying, deleting and
//! restoring them. Backup files live in `<data dir>/backups/<id>.db`, named
//! by a UUIDv7 the node makes; no client-supplied path is ever used.
//!
//! This sits above `store` and `registry`: a restore may register the
//! backup's type in the destination namespace before the catalogue takes
//! the file.

use crate::error::{Error, ErrorKind, Result};
use crate::names::{CollectionName, Namespace, RecordId};
use crate::proto::{BackupInfo, CollectionInfo};
use crate::registry::{ProtoInput, Registry};
use crate::store::backup::{self, Expected, Manifest, Progress, StepProgress, Take};
use crate::store::{
    BackupPolicy, Catalog, Collection, CollectionMeta, Filter, Labels, Op, Order, Query, Scalar,
    WriteOp,
};
use crate::util::{timestamp, timestamp_us};
use prost::Message;
use prost_reflect::DynamicMessage;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::{Semaphore, watch};

/// Which backups `list` returns.
#[derive(Debug, Clone)]
pub struct BackupQuery {
    /// The namespace.
    pub namespace: Namespace,
    /// Only this collection's; None: the whole namespace's.
    pub collection: Option<CollectionName>,
    /// Only those taken at or after this time (µs since the epoch).
    pub since_us: Option<i64>,
    /// Page size (already bounded by the caller).
    pub page_size: u32,
    /// Where the previous page ended.
    pub page_token: String,
}

/// A verification's outcome.
#[derive(Debug, Clone)]
pub struct Verdict {
    /// What differs from what was recorded; empty when the backup is sound.
    pub problems: Vec<String>,
    /// The backup checked.
    pub backup: BackupInfo,
}

/// The node's backups.
pub struct Backups {
    dir: PathBuf,
    records: Arc<Collection>,
    catalog: Arc<Catalog>,
    registry: Arc<Registry>,
    node_id: String,
    slots: Semaphore,
}

/// A backup id from a request: a UUID, or INVALID_ARGUMENT. Only its
/// canonical form is ever used to name a file.
fn parse_id(id: &str) -> Result<uuid::Uuid> {
    uuid::Uuid::parse_str(id).map_err(|_| {
        Error::invalid(format!(
            "backup_id {:?} is not a backup id (a UUID from BackupCollection or ListBackups)",
            crate::names::clip(id)
        ))
    })
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::internal(format!("backup task failed: {e}")))?
}

fn created_us(info: &BackupInfo) -> i64 {
    info.created_at.as_ref().map(timestamp_us).unwrap_or(0)
}

/// What a backup file found in `backups/` with no record is, if it is a
/// sound backup: its manifest read, its whole file checked by SQLite and its
/// records counted against the manifest (its hash is what it is now: there
/// is no recorded one to compare).
fn adoptable(path: &std::path::Path) -> Result<BackupInfo> {
    let manifest = backup::read_manifest(path)?;
    parse_id(&manifest.backup_id)?;
    let (size_bytes, blake3) = backup::hash_file(path)?;
    let expected = Expected {
        size_bytes,
        blake3: blake3.clone(),
        record_count: manifest.record_count,
        message_type: manifest.message_type.clone(),
    };
    let problems = backup::verify(path, &expected, &mut |_| {})?;
    if !problems.is_empty() {
        return Err(Error::failed_precondition(problems.join("; ")));
    }
    let (page_count, page_size) = backup::pages(path)?;
    Ok(BackupInfo {
        backup_id: manifest.backup_id,
        namespace: manifest.namespace,
        collection: manifest.collection,
        message_type: manifest.message_type,
        created_at: Some(timestamp(manifest.created_us)),
        record_count: manifest.record_count,
        size_bytes,
        blake3,
        page_count,
        page_size: page_size as i32,
        includes_files: manifest.files_included,
        file_count: manifest.file_count,
        file_bytes: manifest.file_bytes,
        node_id: manifest.node_id,
        source: CollectionInfo::decode(manifest.collection_info.as_slice()).ok(),
    })
}

impl Backups {
    /// Opens the backups of the node whose data dir is `data_dir`, sweeping
    /// what a crash left: temporary files, and files no record names.
    pub async fn open(
        data_dir: &std::path::Path,
        records: Arc<Collection>,
        catalog: Arc<Catalog>,
        registry: Arc<Registry>,
        node_id: String,
    ) -> Result<Arc<Self>> {
        let dir = data_dir.join("backups");
        std::fs::create_dir_all(&dir)?;
        let me = Arc::new(Backups {
            dir,
            records,
            catalog,
            registry,
            node_id,
            slots: Semaphore::new(crate::limits::MAX_BACKUPS_AT_ONCE),
        });
        me.sweep().await?;
        Ok(me)
    }

    /// Removes what a crash left half-written (`*.db.tmp`) and adopts every
    /// backup file no record names: one a crash left between its rename
    /// and its record, or one an operator copied in from another node's
    /// `backups/` (how a node that never saw a collection, or a
    /// replacement for a lost one, gets its backups). A file is adopted
    /// under the id its manifest gives, once SQLite's integrity check and
    /// its record count pass; anything else is left where it is, with a
    /// warning, since it may be an operator's.
    async fn sweep(&self) -> Result<()> {
        let mut known = std::collections::HashSet::new();
        self.records
            .scan(|rec, _| {
                known.insert(rec.id.clone());
                Ok(())
            })
            .await?;
        let dir = self.dir.clone();
        let found = blocking(move || {
            let mut found = Vec::new();
            for entry in std::fs::read_dir(&dir)? {
                let entry = entry?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.ends_with(".db.tmp") {
                    tracing::info!(file = %name, "removing a backup file a crash left unfinished");
                    let _ = std::fs::remove_file(entry.path());
                    continue;
                }
                match name.strip_suffix(".db") {
                    Some(stem) if !known.contains(stem) => {}
                    _ => continue,
                }
                match adoptable(&entry.path()) {
                    Ok(info) if known.insert(info.backup_id.clone()) => {
                        found.push((entry.path(), info))
                    }
                    Ok(info) => tracing::warn!(
                        file = %name, backup = %info.backup_id,
                        "a second copy of a backup this node holds; left alone"
                    ),
                    Err(e) => tracing::warn!(
                        file = %name, error = %e,
                        "a file in backups/ that is not a sound backup; left alone"
                    ),
                }
            }
            Ok(found)
        })
        .await?;
        for (path, info) in found {
            let dest = self.file(&parse_id(&info.backup_id)?);
            if path != dest {
                let d = dest.clone();
                blocking(move || Ok(std::fs::rename(&path, &d)?)).await?;
            }
            self.put(&info).await?;
            tracing::info!(
                backup = %info.backup_id, namespace = %info.namespace,
                collection = %info.collection, taken_by = %info.node_id,
                "adopted a backup file no record named"
            );
        }
        Ok(())
    }

    fn file(&self, id: &uuid::Uuid) -> PathBuf {
        self.dir.join(format!("{id}.db"))
    }

    /// Takes a backup of a collection on this node while it keeps serving,
    /// with the bytes of its files if `include_files`; `progress` follows
    /// the copy. At most `MAX_BACKUPS_AT_ONCE` run at once; more wait
    /// their turn.
    pub async fn create(
        &self,
        ns: &Namespace,
        name: &CollectionName,
        include_files: bool,
        progress: watch::Sender<Progress>,
    ) -> Result<BackupInfo> {
        let meta = self.catalog.meta(ns, name)?;
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| Error::unavailable("the node is stopping"))?;
        let id = uuid::Uuid::now_v7();
        let path = self.file(&id);
        let started = std::time::Instant::now();
        let (snap, manifest) = self
            .snapshot_to(ns, name, &id.to_string(), &path, include_files, progress)
            .await?;
        let info = BackupInfo {
            backup_id: id.to_string(),
            namespace: ns.to_string(),
            collection: name.to_string(),
            message_type: meta.message_type.clone(),
            created_at: Some(timestamp(manifest.created_us)),
            record_count: snap.record_count,
            size_bytes: snap.size_bytes,
            blake3: snap.blake3,
            page_count: snap.page_count,
            page_size: snap.page_size as i32,
            includes_files: manifest.files_included,
            file_count: manifest.file_count,
            file_bytes: manifest.file_bytes,
            node_id: self.node_id.clone(),
            source: Some(crate::store::meta::meta_to_proto(&meta)),
        };
        if let Err(e) = self.put(&info).await {
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        tracing::info!(
            backup = %id, namespace = %ns, collection = %name,
            records = info.record_count, bytes = info.size_bytes,
            took_ms = started.elapsed().as_millis() as u64,
            "backup taken"
        );
        drop(_slot);
        if let Ok(meta) = self.catalog.meta(ns, name)
            && let Err(e) = self.prune(ns, name, &meta.backup_policy).await
        {
            tracing::warn!(namespace = %ns, collection = %name, error = %e, "pruning backups failed");
        }
        Ok(info)
    }

    /// Every backup of a collection, newest first.
    async fn all_of(&self, ns: &Namespace, name: &CollectionName) -> Result<Vec<BackupInfo>> {
        let mut out = Vec::new();
        let mut page_token = String::new();
        loop {
            let (page, next) = self
                .list(BackupQuery {
                    namespace: ns.clone(),
                    collection: Some(name.clone()),
                    since_us: None,
                    page_size: crate::limits::MAX_PAGE_SIZE,
                    page_token,
                })
                .await?;
            out.extend(page);
            if next.is_empty() {
                return Ok(out);
            }
            page_token = next;
        }
    }

    /// Deletes the backups of a collection that its policy no longer keeps
    /// (past `max_backups`, or older than `retention`); how many.
    pub async fn prune(
        &self,
        ns: &Namespace,
        name: &CollectionName,
        policy: &BackupPolicy,
    ) -> Result<usize> {
        if policy.max_backups == 0 && policy.retention.is_none() {
            return Ok(0);
        }
        let cutoff = policy
            .retention
            .map(|r| crate::util::now_us() - r.as_micros() as i64);
        let mut pruned = 0;
        for (i, b) in self.all_of(ns, name).await?.iter().enumerate() {
            let surplus = policy.max_backups > 0 && i >= policy.max_backups as usize;
            let expired = cutoff.is_some_and(|c| created_us(b) < c);
            if surplus || expired {
                self.delete(&b.backup_id).await?;
                pruned += 1;
            }
        }
        if pruned > 0 {
            tracing::info!(namespace = %ns, collection = %name, pruned, "pruned backups past the collection's policy");
        }
        Ok(pruned)
    }

    /// Takes the backups that are due and prunes, every
    /// `BACKUP_SCHEDULER_TICK`, until the node stops. A schedule counts from
    /// the newest backup, which is stored, so it carries across restarts.
    pub fn start_scheduler(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(crate::limits::BACKUP_SCHEDULER_TICK).await;
                let Some(this) = me.upgrade() else { return };
                this.tick().await;
            }
        })
    }

    async fn tick(&self) {
        let now = crate::util::now_us();
        for meta in self.catalog.owned() {
            let policy = meta.backup_policy;
            if policy == BackupPolicy::default() {
                continue;
            }
            let (ns, name) = (&meta.namespace, &meta.name);
            if let Some(every) = policy.interval {
                let newest = self
                    .list(BackupQuery {
                        namespace: ns.clone(),
                        collection: Some(name.clone()),
                        since_us: None,
                        page_size: 1,
                        page_token: String::new(),
                    })
                    .await;
                let due = match &newest {
                    Ok((b, _)) => b
                        .first()
                        .is_none_or(|b| created_us(b) + every.as_micros() as i64 <= now),
                    Err(_) => false,
                };
                if due {
                    // Prunes after it. Scheduled backups are for recovery,
                    // so they carry the files too.
                    let (progress, _) = watch::channel(Progress::default());
                    if let Err(e) = self.create(ns, name, true, progress).await {
                        tracing::warn!(namespace = %ns, collection = %name, error = %e, "scheduled backup failed");
                    }
                    continue;
                }
            }
            if let Err(e) = self.prune(ns, name, &policy).await {
                tracing::warn!(namespace = %ns, collection = %name, error = %e, "pruning backups failed");
            }
        }
    }

    /// Writes a snapshot of `ns`/`name` to `path` (through `<path>.tmp`,
    /// renamed when whole and synced), its manifest carrying `id`.
    pub(crate) async fn snapshot_to(
        &self,
        ns: &Namespace,
        name: &CollectionName,
        id: &str,
        path: &std::path::Path,
        include_files: bool,
        progress: watch::Sender<Progress>,
    ) -> Result<(backup::Snapshot, Manifest)> {
        if ns.is_system() {
            return Err(Error::permission_denied(
                "the system namespace is the node's own state and is not copied this way",
            ));
        }
        let coll = self.catalog.get(ns, name)?;
        let meta = self.catalog.meta(ns, name)?;
        let files = self
            .registry
            .file_with_deps(ns, None, Some(&meta.message_type))?;
        let mut manifest = Manifest {
            backup_id: id.to_string(),
            namespace: ns.to_string(),
            collection: name.to_string(),
            message_type: meta.message_type.clone(),
            collection_info: crate::store::meta::meta_to_proto(&meta).encode_to_vec(),
            descriptor_set: prost_types::FileDescriptorSet { file: files }.encode_to_vec(),
            record_count: 0,
            created_us: crate::util::now_us(),
            node_id: self.node_id.clone(),
            ..Default::default()
        };
        // Pinned before the snapshot's read transaction, so no blob its
        // rows name is unlinked while the bytes are copied.
        let pin = include_files.then(|| coll.pin_files());
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let source = coll.path().to_path_buf();
        let (t, p) = (tmp.clone(), path.to_path_buf());
        let made = blocking(move || {
            let snap = backup::snapshot(&source, &t, &mut manifest, pin.as_ref(), &mut |pr| {
                progress.send_replace(pr);
            })?;
            drop(pin);
            std::fs::rename(&t, &p)?;
            if let Some(dir) = p.parent() {
                std::fs::File::open(dir)?.sync_all()?;
            }
            Ok((snap, manifest))
        })
        .await;
        made.inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
        .map_err(|e| e.context(format!("snapshot of {ns}/{name}")))
    }

    async fn put(&self, info: &BackupInfo) -> Result<()> {
        let msg = DynamicMessage::decode(
            self.records.descriptor().clone(),
            info.encode_to_vec().as_slice(),
        )
        .map_err(|e| Error::internal(format!("encoding backup info: {e}")))?;
        self.records
            .write(WriteOp::Create {
                id: Some(RecordId::new(&info.backup_id)?),
                payload: crate::store::codec::encode(&msg)?,
                labels: Labels::new(),
            })
            .await?;
        Ok(())
    }

    /// A backup by id.
    pub async fn get(&self, id: &str) -> Result<BackupInfo> {
        let id = parse_id(id)?;
        let rec = self
            .records
            .get(RecordId::new(&id.to_string())?)
            .await
            .map_err(|e| match e.kind {
                ErrorKind::NotFound => Error::not_found(format!(
                    "backup {id} does not exist on this node (see ListBackups)"
                )),
                _ => e,
            })?;
        BackupInfo::decode(rec.data.as_slice())
            .map_err(|e| Error::internal(format!("system/backups {id}: {e}")))
    }

    /// Backups, newest first; with the token of the next page (empty on the last).
    pub async fn list(&self, q: BackupQuery) -> Result<(Vec<BackupInfo>, String)> {
        let mut filters = vec![Filter {
            field: "namespace".into(),
            op: Op::Eq,
            value: Some(Scalar::Str(q.namespace.to_string())),
            values: vec![],
        }];
        if let Some(c) = &q.collection {
            filters.push(Filter {
                field: "collection".into(),
                op: Op::Eq,
                value: Some(Scalar::Str(c.to_string())),
                values: vec![],
            });
        }
        let query = Query {
            filters,
            order: Some(Order {
                field: "_created".into(),
                descending: true,
            }),
            page_size: q.page_size,
            page_token: q.page_token,
            ..Default::default()
        };
        let (page, _) = self.records.search(query, false).await?;
        let mut out = Vec::with_capacity(page.hits.len());
        for (rec, _) in page.hits {
            let info = BackupInfo::decode(rec.data.as_slice())
                .map_err(|e| Error::internal(format!("system/backups {}: {e}", rec.id)))?;
            if q.since_us.is_some_and(|s| created_us(&info) < s) {
                // Newest first: the rest are older still.
                return Ok((out, String::new()));
            }
            out.push(info);
        }
        Ok((out, page.next_token))
    }

    /// Re-reads a backup's file and says what differs from its record;
    /// `progress` follows it.
    pub async fn verify(&self, id: &str, progress: watch::Sender<StepProgress>) -> Result<Verdict> {
        self.verify_with(id, move |p| {
            progress.send_replace(p);
        })
        .await
    }

    async fn verify_with(
        &self,
        id: &str,
        mut report: impl FnMut(StepProgress) + Send + 'static,
    ) -> Result<Verdict> {
        let info = self.get(id).await?;
        let path = self.file(&parse_id(id)?);
        let expected = Expected {
            size_bytes: info.size_bytes,
            blake3: info.blake3.clone(),
            record_count: info.record_count,
            message_type: info.message_type.clone(),
        };
        let problems = blocking(move || {
            if !path.exists() {
                return Ok(vec!["the backup's file is missing".to_string()]);
            }
            backup::verify(&path, &expected, &mut report)
        })
        .await?;
        if !problems.is_empty() {
            tracing::warn!(backup = %info.backup_id, ?problems, "backup failed verification");
        }
        Ok(Verdict {
            problems,
            backup: info,
        })
    }

    /// Deletes a backup (its record, then its file); the bytes freed.
    pub async fn delete(&self, id: &str) -> Result<i64> {
        let info = self.get(id).await?;
        let path = self.file(&parse_id(id)?);
        self.records
            .write(WriteOp::Delete {
                id: RecordId::new(&info.backup_id)?,
                expected_version: None,
            })
            .await?;
        let freed = blocking(move || {
            let size = std::fs::metadata(&path)
                .map(|m| m.len() as i64)
                .unwrap_or(0);
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
                _ => Ok(size),
            }
        })
        .await?;
        tracing::info!(backup = %info.backup_id, freed_bytes = freed, "backup deleted");
        Ok(freed)
    }

    /// Restores a backup into `ns`/`name` (default: where it was taken
    /// from), registering its type there if the namespace lacks it, with
    /// its files if `include_files` (FAILED_PRECONDITION if it has none);
    /// an existing collection is replaced only with `overwrite`. The file
    /// is verified first: a damaged backup is never restored.
    pub async fn restore(
        &self,
        id: &str,
        ns: Option<Namespace>,
        name: Option<CollectionName>,
        include_files: bool,
        overwrite: bool,
        progress: watch::Sender<StepProgress>,
    ) -> Result<CollectionMeta> {
        let progress = Arc::new(progress);
        let seen = progress.clone();
        let verdict = self
            .verify_with(id, move |p| {
                seen.send_replace(p);
            })
            .await?;
        if !verdict.problems.is_empty() {
            return Err(Error::failed_precondition(format!(
                "backup {} is damaged, so it is not restored: {}",
                verdict.backup.backup_id,
                verdict.problems.join("; ")
            )));
        }
        let info = verdict.backup;
        let path = self.file(&parse_id(id)?);
        let ns = match ns {
            Some(n) => n,
            None => Namespace::new(&info.namespace)?,
        };
        let name = match name {
            Some(n) => n,
            None => CollectionName::new(&info.collection)?,
        };
        let meta = self
            .restore_file(
                path,
                ns,
                name,
                Take::Copy,
                Some(include_files),
                overwrite,
                move |p| {
                    progress.send_replace(p);
                },
            )
            .await?;
        tracing::info!(backup = %info.backup_id, namespace = %meta.namespace, collection = %meta.name, "backup restored");
        Ok(meta)
    }

    /// Makes `ns`/`name` hold the records of a checked snapshot file (a
    /// backup, or a clone or fetch): its type registered in `ns` if missing
    /// (a different type under the same names is refused), then the file
    /// copied or moved in (as `take` says) by the catalogue, with its files
    /// as `include_files` says (None: if the snapshot carries them).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn restore_file(
        &self,
        path: PathBuf,
        ns: Namespace,
        name: CollectionName,
        take: Take,
        include_files: Option<bool>,
        overwrite: bool,
        report: impl FnMut(StepProgress) + Send + 'static,
    ) -> Result<CollectionMeta> {
        let p = path.clone();
        let manifest = blocking(move || backup::read_manifest(&p)).await?;
        ns.writable()?;
        let set = prost_types::FileDescriptorSet::decode(manifest.descriptor_set.as_slice())
            .map_err(|e| {
                Error::failed_precondition(format!("the snapshot's descriptor set: {e}"))
            })?;
        // Identical files are no-ops; a different type under the same names
        // is refused by the registry.
        self.registry
            .register(&ns, ProtoInput::FileSet(set))
            .await
            .map_err(|e| {
                e.context(format!(
                    "the backup's type {} does not fit namespace {ns}",
                    manifest.message_type
                ))
            })?;
        let source = CollectionInfo::decode(manifest.collection_info.as_slice())
            .map_err(|e| Error::failed_precondition(format!("the snapshot's description: {e}")))?;
        let meta = CollectionMeta {
            namespace: ns,
            name,
            message_type: manifest.message_type,
            labels: source.labels.into_iter().collect(),
            description: source.description,
            indexes: source.indexes,
            created_us: 0,
            // A new collection schedules nothing until asked; one restored
            // over keeps its own policy (the catalogue sees to that).
            backup_policy: Default::default(),
        };
        self.catalog
            .restore(
                meta,
                path,
                take,
                include_files.unwrap_or(manifest.files_included),
                overwrite,
                report,
            )
            .await
    }
}
