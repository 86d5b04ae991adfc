//! The host side of the `collections` and `invoke` imports, over the
//! catalogue: the handler reaches only its own namespace and the collections
//! it is granted (read-only or read-write).
//!
//! Writes are staged for the call and applied by `commit` only if the
//! handler succeeds, as one all-or-nothing batch per collection (so a call
//! is atomic per collection, not across collections). A `get` sees the
//! call's own staged writes; `search` and `count` see only committed data.
//!
//! File changes (the `files` import, in `handlers::files`) are staged the
//! same way and go in the same batch as the collection's record writes.
//!
//! The per-call host state lives here; a new import adds its `HostApi`
//! methods to `CollectionsHost` in a sibling file of this one.

use super::call::{CallOptions, Invocation};
use super::{Grant, Handlers};
use crate::error::{Error, ErrorKind, Result};
use crate::names::{CollectionName, Namespace, RecordId};
use crate::store::{self, Collection, Labels, Record, WriteOp, codec};
use crate::wasm::{FileSpec, HostApi, HostFuture, WriteSpec};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// `HostApi` for one call: the handler's namespace, its grants only.
pub(super) struct CollectionsHost {
    handlers: Arc<Handlers>,
    namespace: Namespace,
    grants: Vec<Grant>,
    /// Collections the guest opened, indexed by handle.
    pub(super) open: Mutex<Vec<OpenState>>,
    options: CallOptions,
    /// Set once the call `invoke`s another method, whose writes may have
    /// committed: the node then never re-runs the call.
    invoked: std::sync::atomic::AtomicBool,
}

/// Why a call's writes were not all applied.
pub(super) struct CommitError {
    /// What the caller sees.
    pub error: Error,
    /// True when nothing was applied and the batch lost a race with
    /// another write: re-running the call is safe and may succeed.
    pub retryable: bool,
}

/// A collection the call opened, with the writes it staged there.
pub(super) struct OpenState {
    pub(super) coll: Arc<Collection>,
    read_only: bool,
    pending: Vec<WriteOp>,
    /// File changes, applied after `pending` in the same batch.
    pub(super) files: Vec<store::FileChange>,
    /// The call's view of records it wrote: None = deleted.
    overlay: HashMap<String, Option<Arc<Record>>>,
    /// The version of each record the call last read from the store (None:
    /// missing). A write to it is based on that read, so its batch fails if
    /// another write came in between, and the node re-runs the call.
    seen: HashMap<String, Option<i64>>,
}

impl CollectionsHost {
    pub(super) fn new(
        handlers: Arc<Handlers>,
        namespace: Namespace,
        grants: Vec<Grant>,
        options: CallOptions,
    ) -> Self {
        CollectionsHost {
            handlers,
            namespace,
            grants,
            open: Mutex::new(Vec::new()),
            options,
            invoked: Default::default(),
        }
    }

    /// True if the call staged any write.
    pub(super) fn has_writes(&self) -> bool {
        self.open
            .lock()
            .expect("open lock")
            .iter()
            .any(|o| !o.pending.is_empty() || !o.files.is_empty())
    }

    /// Applies the call's staged writes: each collection's in one batch, in
    /// the order they were opened. If one is refused, the ones before it
    /// stay applied, and the error names them.
    pub(super) async fn commit(&self) -> Result<(), CommitError> {
        let open = std::mem::take(&mut *self.open.lock().expect("open lock"));
        let mut applied: Vec<String> = Vec::new();
        let invoked = self.invoked.load(std::sync::atomic::Ordering::Acquire);
        for o in open
            .into_iter()
            .filter(|o| !o.pending.is_empty() || !o.files.is_empty())
        {
            let fail = |error: Error, applied: &[String]| {
                let mut error = error;
                if !applied.is_empty() {
                    // Partly applied: ABORTED, so a retry with the same
                    // request id runs again and skips what was applied.
                    error = Error::aborted(format!(
                        "{}; its writes to {} were applied (a retry with the same request id applies the rest, without them; without one, check them before retrying)",
                        error.message,
                        applied.join(", ")
                    ));
                }
                CommitError {
                    retryable: false,
                    error,
                }
            };
            let call = self.options.request_id.clone();
            let outcome = match o.coll.batch_with_files(o.pending, o.files, call).await {
                Ok(outcome) => outcome,
                Err(e) => return Err(fail(e, &applied)),
            };
            if outcome.replayed {
                // An earlier run of this call (same request id) applied its
                // writes here: this run's are dropped.
                applied.push(o.coll.name.to_string());
                continue;
            }
            if !outcome.committed {
                let why = outcome
                    .results
                    .into_iter()
                    .find_map(|r| r.err().filter(|e| e.kind != ErrorKind::Aborted));
                // A record changed, appeared or went since the call read it.
                let raced = why.as_ref().is_none_or(|e| {
                    matches!(
                        e.kind,
                        ErrorKind::FailedPrecondition
                            | ErrorKind::NotFound
                            | ErrorKind::AlreadyExists
                    )
                });
                let why = why.map(|e| e.message).unwrap_or_default();
                let error = Error::aborted(format!(
                    "the handler's writes to {} were not applied: another write got there first ({why}); retry the call",
                    o.coll.name
                ));
                let retryable = raced && applied.is_empty() && !invoked;
                return Err(CommitError {
                    retryable,
                    ..fail(error, &applied)
                });
            }
            applied.push(o.coll.name.to_string());
        }
        Ok(())
    }

    pub(super) fn coll(&self, handle: u32) -> Result<(Arc<Collection>, bool)> {
        self.open
            .lock()
            .expect("open lock")
            .get(handle as usize)
            .map(|o| (o.coll.clone(), o.read_only))
            .ok_or_else(|| Error::invalid("unknown collection handle"))
    }

    /// The record as this call sees it.
    pub(super) async fn current(
        &self,
        handle: u32,
        c: &Arc<Collection>,
        id: &RecordId,
    ) -> Result<Option<Arc<Record>>> {
        let own = self.open.lock().expect("open lock")[handle as usize]
            .overlay
            .get(id.as_str())
            .cloned();
        if let Some(o) = own {
            return Ok(o);
        }
        let found = match c.get(id.clone()).await {
            Ok(r) => Some(r),
            Err(e) if e.kind == ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        self.open.lock().expect("open lock")[handle as usize]
            .seen
            .insert(id.as_str().to_string(), found.as_ref().map(|r| r.version));
        Ok(found)
    }

    /// What the call last read of `id` from the store: Some(None) if it
    /// found no record, None if it never read it.
    fn seen(&self, handle: u32, id: &str) -> Option<Option<i64>> {
        self.open.lock().expect("open lock")[handle as usize]
            .seen
            .get(id)
            .copied()
    }

    /// The record an update or delete changes, as this call sees it (else
    /// NOT_FOUND), and the version the change is based on: the call's own
    /// write, else the version the call last read (the guest computed its
    /// change from that read), else the current one. The guest's expected
    /// version is checked against that base, and the batch must find the
    /// base at commit (unless the call wrote the record itself), so a
    /// concurrent write in between makes the commit fail instead of being
    /// lost, and the call is re-run.
    async fn to_change(
        &self,
        handle: u32,
        c: &Arc<Collection>,
        id: &str,
        expected_version: Option<i64>,
    ) -> Result<(RecordId, Arc<Record>, i64, Option<i64>)> {
        let id = RecordId::new(id)?;
        let own = self.pending_has(handle, id.as_str());
        let seen = self.seen(handle, id.as_str()).flatten();
        let cur = self
            .current(handle, c, &id)
            .await?
            .ok_or_else(|| Error::not_found(format!("record {:?} not found", id.as_str())))?;
        let base = if own {
            cur.version
        } else {
            seen.unwrap_or(cur.version)
        };
        store::check_version(&id, expected_version, base)?;
        let at_commit = Some(base).filter(|_| !own);
        Ok((id, cur, base, at_commit))
    }

    /// True if this call already wrote `id` (its version is then the call's own).
    fn pending_has(&self, handle: u32, id: &str) -> bool {
        self.open.lock().expect("open lock")[handle as usize]
            .overlay
            .contains_key(id)
    }

    fn open_granted(&self, collection: &str) -> Result<u32> {
        let name = CollectionName::new(collection)?;
        let grant = self
            .grants
            .iter()
            .find(|g| g.collection == name)
            .ok_or_else(|| {
                Error::permission_denied(format!(
                    "collection {collection:?} is not granted to this handler (namespace {})",
                    self.namespace
                ))
            })?;
        let coll = self.handlers.catalog.get(&self.namespace, &name)?;
        let mut open = self.open.lock().expect("open lock");
        open.push(OpenState {
            coll,
            read_only: grant.read_only,
            pending: Vec::new(),
            overlay: HashMap::new(),
            seen: HashMap::new(),
            files: Vec::new(),
        });
        Ok((open.len() - 1) as u32)
    }

    /// Checks a write against the call's view now, so the guest hears of
    /// mistakes at once (the batch at commit checks again against the
    /// store), and stages it.
    async fn stage_write(&self, handle: u32, op: WriteSpec) -> Result<Option<Arc<Record>>> {
        let c = self.writable(handle)?;
        let (key, op, view) = match op {
            WriteSpec::Create { id, data, labels } => {
                self.stage_create(handle, &c, id, data, labels).await?
            }
            WriteSpec::Update {
                id,
                data,
                labels,
                expected_version,
            } => {
                self.stage_update(handle, &c, id, data, labels, expected_version)
                    .await?
            }
            WriteSpec::Delete {
                id,
                expected_version,
            } => self.stage_delete(handle, &c, id, expected_version).await?,
        };
        let mut open = self.open.lock().expect("open lock");
        let o = &mut open[handle as usize];
        o.pending.push(op);
        if view.is_none() {
            // The record's files go with it: changes staged to them would
            // fail at commit, after the delete.
            o.files.retain(|f| f.record_id().as_str() != key);
        }
        o.overlay.insert(key, view.clone());
        Ok(view)
    }

    /// The open collection `handle`, if the call may write to it.
    pub(super) fn writable(&self, handle: u32) -> Result<Arc<Collection>> {
        let (c, read_only) = self.coll(handle)?;
        if read_only {
            return Err(Error::permission_denied(format!(
                "collection {} is granted read-only",
                c.name
            )));
        }
        Ok(c)
    }

    async fn stage_create(
        &self,
        handle: u32,
        c: &Arc<Collection>,
        id: String,
        data: Vec<u8>,
        labels: Labels,
    ) -> Result<Staged> {
        store::check_labels(&labels)?;
        let msg = codec::decode(c.descriptor(), &data)?;
        let id = if id.is_empty() {
            RecordId::generate()
        } else {
            RecordId::new(&id)?
        };
        // A record the call saw missing is created even if another write
        // made it since: the batch then fails and the call is re-run.
        let saw_missing =
            self.seen(handle, id.as_str()) == Some(None) && !self.pending_has(handle, id.as_str());
        if !saw_missing && self.current(handle, c, &id).await?.is_some() {
            return Err(Error::already_exists(format!(
                "a record with id {:?} already exists",
                id.as_str()
            )));
        }
        let payload = codec::encode_with_wire(&msg, Some(data))?;
        let now = crate::util::now_us();
        let rec = Record::new(
            id.as_str().to_string(),
            (payload.bytes.clone(), payload.json.clone()),
            labels.clone(),
            1,
            now,
            now,
        );
        let op = WriteOp::Create {
            id: Some(id),
            payload,
            labels,
        };
        Ok((rec.id.clone(), op, Some(Arc::new(rec))))
    }

    async fn stage_update(
        &self,
        handle: u32,
        c: &Arc<Collection>,
        id: String,
        data: Vec<u8>,
        labels: Labels,
        expected_version: Option<i64>,
    ) -> Result<Staged> {
        store::check_labels(&labels)?;
        let msg = codec::decode(c.descriptor(), &data)?;
        let (id, cur, base, at_commit) = self.to_change(handle, c, &id, expected_version).await?;
        let payload = codec::encode_with_wire(&msg, Some(data))?;
        let rec = Record::new(
            id.as_str().to_string(),
            (payload.bytes, payload.json),
            labels.clone(),
            base + 1,
            cur.created_us,
            crate::util::now_us(),
        );
        let op = WriteOp::Update {
            expected_version: at_commit,
            id,
            data: Some(msg),
            labels,
            mask: store::Mask::full(),
        };
        Ok((rec.id.clone(), op, Some(Arc::new(rec))))
    }

    async fn stage_delete(
        &self,
        handle: u32,
        c: &Arc<Collection>,
        id: String,
        expected_version: Option<i64>,
    ) -> Result<Staged> {
        let (id, _, _, at_commit) = self.to_change(handle, c, &id, expected_version).await?;
        let key = id.as_str().to_string();
        let op = WriteOp::Delete {
            expected_version: at_commit,
            id,
        };
        Ok((key, op, None))
    }
}

/// A staged write: the record id, the op for the batch, and the record as
/// the call sees it afterwards (None: deleted).
type Staged = (String, WriteOp, Option<Arc<Record>>);

impl HostApi for CollectionsHost {
    fn open<'a>(&'a self, collection: &'a str) -> HostFuture<'a, u32> {
        Box::pin(async move { self.open_granted(collection) })
    }

    fn get<'a>(&'a self, handle: u32, id: &'a str) -> HostFuture<'a, Arc<Record>> {
        Box::pin(async move {
            let (c, _) = self.coll(handle)?;
            let id = RecordId::new(id)?;
            self.current(handle, &c, &id).await?.ok_or_else(|| {
                Error::not_found(format!("record {:?} not found in {}", id.as_str(), c.name))
            })
        })
    }

    fn write(&self, handle: u32, op: WriteSpec) -> HostFuture<'_, Option<Arc<Record>>> {
        Box::pin(self.stage_write(handle, op))
    }

    fn search(&self, handle: u32, q: store::Query) -> HostFuture<'_, store::Page> {
        Box::pin(async move {
            let (c, _) = self.coll(handle)?;
            c.search(q, false).await.map(|(p, _)| p)
        })
    }

    fn count(&self, handle: u32, q: store::Query) -> HostFuture<'_, i64> {
        Box::pin(async move {
            let (c, _) = self.coll(handle)?;
            c.count(q).await
        })
    }

    fn invoke<'a>(
        &'a self,
        service: &'a str,
        method: &'a str,
        input: &'a [u8],
    ) -> HostFuture<'a, Vec<u8>> {
        Box::pin(async move {
            let call = Invocation {
                namespace: self.namespace.clone(),
                service: service.to_string(),
                method: method.to_string(),
                input: input.to_vec(),
                metadata: Vec::new(),
                options: CallOptions {
                    depth: self.options.depth.saturating_add(1),
                    // The invoked call's writes are its own, not this call's.
                    request_id: None,
                    ..self.options.clone()
                },
            };
            self.invoked
                .store(true, std::sync::atomic::Ordering::Release);
            self.handlers.invoke_from(call).await
        })
    }

    fn stat_file<'a>(
        &'a self,
        handle: u32,
        id: &'a str,
        path: &'a str,
    ) -> HostFuture<'a, store::FileMeta> {
        Box::pin(self.file_stat(handle, id, path))
    }

    fn list_files<'a>(
        &'a self,
        handle: u32,
        id: &'a str,
        prefix: String,
        page_size: u32,
        page_token: String,
    ) -> HostFuture<'a, store::FilePage> {
        Box::pin(self.file_list(handle, id, prefix, page_size, page_token))
    }

    fn read_file<'a>(
        &'a self,
        handle: u32,
        id: &'a str,
        path: &'a str,
        offset: u64,
        len: u64,
        max: usize,
    ) -> HostFuture<'a, Vec<u8>> {
        Box::pin(self.file_read(handle, id, path, offset, len, max))
    }

    fn change_file(&self, handle: u32, change: FileSpec) -> HostFuture<'_, ()> {
        Box::pin(self.stage_file(handle, change))
    }
}
