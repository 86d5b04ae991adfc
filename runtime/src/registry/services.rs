//! Registered services: a service declared in a namespace's .proto files,
//! bound to a Wasm component with grants and limits. Components are stored
//! content-addressed (`data/components/<sha256>.wasm`) with their compiled
//! form cached next to them (keyed by the engine's compatibility hash); the
//! bindings are persisted in `system/services`. Re-registering swaps an
//! `Arc`, so calls in flight finish on the version they started with.

use super::Registry;
use crate::error::{Error, Result};
use crate::names::{CollectionName, Namespace, RecordId};
use crate::store::{self, Catalog, Collection, Labels, WriteOp, codec};
use crate::wasm::{CallContext, Handler, HostApi, HostFuture, Limits, Sandbox, WriteSpec};
use prost::Message;
use prost_reflect::{MethodDescriptor, ServiceDescriptor};
use sha2::Digest;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// A collection a handler may open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub collection: CollectionName,
    pub read_only: bool,
}

/// What a registration binds.
#[derive(Debug, Clone)]
pub struct ServiceSpec {
    pub namespace: Namespace,
    pub service: String,
    pub grants: Vec<Grant>,
    /// 0 = default.
    pub timeout_ms: u32,
    /// 0 = default.
    pub memory_mib: u32,
}

/// A registered service, ready to call.
pub struct Registered {
    pub spec: ServiceSpec,
    pub sha256: String,
    pub desc: ServiceDescriptor,
    handler: Handler,
    limits: Limits,
}

/// Most nested `invoke` calls (a handler calling a handler calling …).
const MAX_DEPTH: u32 = 8;

/// All registered services of the node.
pub struct Services {
    sandbox: Sandbox,
    registry: Arc<Registry>,
    catalog: Arc<Catalog>,
    store: Arc<Collection>,
    dir: PathBuf,
    table: RwLock<HashMap<(Namespace, String), Arc<Registered>>>,
    register_lock: tokio::sync::Mutex<()>,
    /// How many components were compiled from Wasm (not loaded from the cache).
    compiled: std::sync::atomic::AtomicU64,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

fn limits_of(spec: &ServiceSpec) -> Limits {
    let d = Limits::default();
    Limits {
        timeout: if spec.timeout_ms == 0 {
            d.timeout
        } else {
            Duration::from_millis(spec.timeout_ms as u64)
        },
        memory_bytes: if spec.memory_mib == 0 {
            d.memory_bytes
        } else {
            (spec.memory_mib as usize) << 20
        },
        ..d
    }
}

fn to_info(r: &Registered) -> crate::proto::ServiceInfo {
    crate::proto::ServiceInfo {
        namespace: r.spec.namespace.to_string(),
        service: r.spec.service.clone(),
        sha256: r.sha256.clone(),
        grants: r
            .spec
            .grants
            .iter()
            .map(|g| crate::proto::Grant {
                collection: g.collection.to_string(),
                read_only: g.read_only,
            })
            .collect(),
        limits: Some(crate::proto::HandlerLimits {
            timeout_ms: r.spec.timeout_ms,
            memory_mib: r.spec.memory_mib,
        }),
        methods: r.desc.methods().map(|m| m.name().to_string()).collect(),
    }
}

impl Services {
    /// Loads every registered service, from the compiled cache when it can.
    pub async fn load(
        data_dir: PathBuf,
        registry: Arc<Registry>,
        catalog: Arc<Catalog>,
        store: Arc<Collection>,
    ) -> Result<Arc<Self>> {
        let dir = data_dir.join("components");
        std::fs::create_dir_all(&dir)?;
        let sandbox = tokio::task::spawn_blocking(Sandbox::new)
            .await
            .map_err(|e| Error::internal(format!("sandbox: {e}")))??;
        let me = Arc::new(Services {
            sandbox,
            registry,
            catalog,
            store,
            dir,
            table: RwLock::new(HashMap::new()),
            register_lock: tokio::sync::Mutex::new(()),
            compiled: 0.into(),
        });
        let desc = me.store.descriptor().clone();
        let mut token = String::new();
        loop {
            let q = store::Query {
                page_size: 1000,
                page_token: token,
                ..Default::default()
            };
            let (page, _) = me.store.search(q, false).await?;
            for (rec, _) in page.hits {
                let info: crate::proto::ServiceInfo = codec::decode(&desc, &rec.data)?
                    .transcode_to()
                    .map_err(|e| Error::internal(format!("system/services {:?}: {e}", rec.id)))?;
                let spec = ServiceSpec {
                    namespace: Namespace::new(&info.namespace)?,
                    service: info.service.clone(),
                    grants: info
                        .grants
                        .iter()
                        .map(|g| {
                            Ok(Grant {
                                collection: CollectionName::new(&g.collection)?,
                                read_only: g.read_only,
                            })
                        })
                        .collect::<Result<_>>()?,
                    timeout_ms: info.limits.as_ref().map(|l| l.timeout_ms).unwrap_or(0),
                    memory_mib: info.limits.as_ref().map(|l| l.memory_mib).unwrap_or(0),
                };
                let this = me.clone();
                let sha = info.sha256.clone();
                let handler = tokio::task::spawn_blocking(move || this.handler_for(&sha, None))
                    .await
                    .map_err(|e| Error::internal(format!("load task: {e}")))??;
                let sdesc = me.service_desc(&spec.namespace, &spec.service)?;
                let limits = limits_of(&spec);
                let key = (spec.namespace.clone(), spec.service.clone());
                me.table.write().expect("services lock").insert(
                    key,
                    Arc::new(Registered {
                        spec,
                        sha256: info.sha256,
                        desc: sdesc,
                        handler,
                        limits,
                    }),
                );
            }
            if page.next_token.is_empty() {
                break;
            }
            token = page.next_token;
        }
        Ok(me)
    }

    /// Components compiled from Wasm since start (the rest came from the cache).
    pub fn compiled_count(&self) -> u64 {
        self.compiled.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn service_desc(&self, ns: &Namespace, service: &str) -> Result<ServiceDescriptor> {
        self.registry.pool(ns).get_service_by_name(service).ok_or_else(|| {
            Error::not_found(format!("service {service:?} is not declared in namespace {ns}: register its .proto with RegisterProto first"))
        })
    }

    /// The handler for a component: from the compiled cache, else compiled
    /// from `wasm` (or the stored .wasm) and cached. Blocks.
    fn handler_for(&self, sha: &str, wasm: Option<&[u8]>) -> Result<Handler> {
        let cached = self.dir.join(format!(
            "{sha}-{:016x}.cwasm",
            self.sandbox.compatibility_hash()
        ));
        if let Ok(bytes) = std::fs::read(&cached) {
            // SAFETY: files named *.cwasm in this directory are written only by
            // this node (below), from Handler::serialize, and keyed by the
            // engine's compatibility hash; client bytes are never deserialized.
            match unsafe { self.sandbox.load_compiled(&bytes) } {
                Ok(h) => return Ok(h),
                Err(e) => {
                    tracing::warn!(error = %e.message, "compiled cache entry unusable; recompiling")
                }
            }
        }
        let stored;
        let wasm = match wasm {
            Some(w) => w,
            None => {
                stored = std::fs::read(self.dir.join(format!("{sha}.wasm")))?;
                &stored
            }
        };
        let handler = self.sandbox.compile(wasm)?;
        self.compiled
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        write_atomic(&cached, &handler.serialize()?)?;
        Ok(handler)
    }

    /// Validates, stores and binds a component; swaps any previous version.
    pub async fn register(
        self: &Arc<Self>,
        spec: ServiceSpec,
        component: Vec<u8>,
    ) -> Result<crate::proto::ServiceInfo> {
        spec.namespace.writable()?;
        let desc = self.service_desc(&spec.namespace, &spec.service)?;
        if component.is_empty() {
            return Err(Error::invalid(
                "component is empty: send the .wasm bytes of a wasm32-wasip2 component",
            ));
        }
        let _guard = self.register_lock.lock().await;
        let sha = hex(&sha2::Sha256::digest(&component));
        let this = self.clone();
        let sha2_ = sha.clone();
        let handler = tokio::task::spawn_blocking(move || {
            let handler = this.handler_for(&sha2_, Some(&component))?;
            let path = this.dir.join(format!("{sha2_}.wasm"));
            if !path.exists() {
                write_atomic(&path, &component)?;
            }
            Ok::<_, Error>(handler)
        })
        .await
        .map_err(|e| Error::internal(format!("compile task: {e}")))??;
        let limits = limits_of(&spec);
        let reg = Registered {
            spec: spec.clone(),
            sha256: sha,
            desc,
            handler,
            limits,
        };
        let info = to_info(&reg);
        // Persist, then swap: a crash in between finds the new binding on restart.
        let msg = codec::decode(self.store.descriptor(), &info.encode_to_vec())?;
        let payload = codec::encode(&msg)?;
        let id = RecordId::new(&format!("{}/{}", spec.namespace, spec.service))?;
        let op = WriteOp::Update {
            id: id.clone(),
            data: Some(msg),
            labels: Labels::new(),
            mask: store::Mask::full(),
            expected_version: None,
        };
        match self.store.write(op).await {
            Ok(_) => {}
            Err(e) if e.kind == crate::error::ErrorKind::NotFound => {
                self.store
                    .write(WriteOp::Create {
                        id: Some(id),
                        payload,
                        labels: Labels::new(),
                    })
                    .await?;
            }
            Err(e) => return Err(e),
        }
        let key = (spec.namespace.clone(), spec.service.clone());
        self.table
            .write()
            .expect("services lock")
            .insert(key, Arc::new(reg));
        tracing::info!(namespace = %spec.namespace, service = %spec.service, sha256 = %info.sha256, "service registered");
        Ok(info)
    }

    /// A registered service.
    pub fn lookup(&self, ns: &Namespace, service: &str) -> Result<Arc<Registered>> {
        self.table.read().expect("services lock").get(&(ns.clone(), service.to_string())).cloned().ok_or_else(|| {
            Error::unimplemented(format!("service {service:?} has no handler in namespace {ns}: register one with CollectorRegistry.RegisterService"))
        })
    }

    /// Description of a registered service.
    pub fn info(&self, ns: &Namespace, service: &str) -> Result<crate::proto::ServiceInfo> {
        self.lookup(ns, service).map(|r| to_info(&r))
    }

    /// A registered, callable method.
    pub fn method(
        &self,
        ns: &Namespace,
        service: &str,
        method: &str,
    ) -> Result<(Arc<Registered>, MethodDescriptor)> {
        let reg = self.lookup(ns, service)?;
        let m = reg
            .desc
            .methods()
            .find(|m| m.name() == method)
            .ok_or_else(|| Error::unimplemented(format!("{service} has no method {method:?}")))?;
        Ok((reg, m))
    }

    /// The namespace's registered services.
    pub fn list(&self, ns: &Namespace) -> Vec<crate::proto::ServiceInfo> {
        let mut v: Vec<_> = self
            .table
            .read()
            .expect("services lock")
            .iter()
            .filter(|(k, _)| &k.0 == ns)
            .map(|(_, r)| to_info(r))
            .collect();
        v.sort_by(|a, b| a.service.cmp(&b.service));
        v
    }

    /// Removes a service's handler; calls in flight finish.
    pub async fn unregister(&self, ns: &Namespace, service: &str) -> Result<()> {
        ns.writable()?;
        let _guard = self.register_lock.lock().await;
        self.lookup(ns, service)?;
        let id = RecordId::new(&format!("{ns}/{service}"))?;
        self.store
            .write(WriteOp::Delete {
                id,
                expected_version: None,
            })
            .await?;
        self.table
            .write()
            .expect("services lock")
            .remove(&(ns.clone(), service.to_string()));
        Ok(())
    }

    /// Calls a registered method with binary input; returns binary output.
    pub async fn call(
        self: &Arc<Self>,
        ns: &Namespace,
        service: &str,
        method: &str,
        input: Vec<u8>,
        metadata: Vec<(String, String)>,
    ) -> Result<Vec<u8>> {
        self.call_at_depth(ns, service, method, &input, metadata, 0)
            .await
    }

    /// A call, `depth` invokes deep. Runs on the caller's task: the sandbox
    /// yields to the executor, and store work happens on the store's threads.
    async fn call_at_depth(
        self: &Arc<Self>,
        ns: &Namespace,
        service: &str,
        method: &str,
        input: &[u8],
        metadata: Vec<(String, String)>,
        depth: u32,
    ) -> Result<Vec<u8>> {
        let (reg, m) = self.method(ns, service, method)?;
        codec::decode(&m.input(), input)
            .map_err(|e| e.context(format!("input of {service}/{method}")))?;
        let host = Arc::new(CatalogHost {
            services: self.clone(),
            namespace: ns.clone(),
            grants: reg.spec.grants.clone(),
            open: Mutex::new(Vec::new()),
            depth,
        });
        let api: Arc<dyn HostApi> = host.clone();
        let ctx = CallContext {
            namespace: ns.to_string(),
            service: service.to_string(),
            method: method.to_string(),
            metadata,
            deadline_ms: reg.limits.timeout.as_millis() as u64,
        };
        let out = self
            .sandbox
            .call(&reg.handler, ctx, input, api, &reg.limits)
            .await?;
        codec::decode(&m.output(), &out).map_err(|e| {
            Error::internal(format!(
                "the handler's output is not a {}: {}",
                m.output().full_name(),
                e.message
            ))
        })?;
        // Only a successful call's writes are applied: an error or trap above
        // returned early and dropped them with `host`.
        host.commit().await?;
        Ok(out)
    }
}

/// `HostApi` over the catalogue: the handler's namespace, its grants only.
/// Writes are buffered for the call and committed by `commit` only if the
/// handler succeeds, as one all-or-nothing batch per collection; a `get`
/// sees the call's own buffered writes (search and count do not).
struct CatalogHost {
    services: Arc<Services>,
    namespace: Namespace,
    grants: Vec<Grant>,
    open: Mutex<Vec<OpenState>>,
    depth: u32,
}

struct OpenState {
    coll: Arc<Collection>,
    read_only: bool,
    pending: Vec<WriteOp>,
    /// The call's view of records it wrote: None = deleted.
    overlay: HashMap<String, Option<store::Record>>,
}

impl CatalogHost {
    fn coll(&self, handle: u32) -> Result<(Arc<Collection>, bool)> {
        self.open
            .lock()
            .expect("open lock")
            .get(handle as usize)
            .map(|o| (o.coll.clone(), o.read_only))
            .ok_or_else(|| Error::invalid("unknown collection handle"))
    }

    /// The record as this call sees it.
    async fn current(
        &self,
        handle: u32,
        c: &Arc<Collection>,
        id: &RecordId,
    ) -> Result<Option<store::Record>> {
        let own = self.open.lock().expect("open lock")[handle as usize]
            .overlay
            .get(id.as_str())
            .cloned();
        if let Some(o) = own {
            return Ok(o);
        }
        match c.get(id.clone()).await {
            Ok(r) => Ok(Some(Arc::unwrap_or_clone(r))),
            Err(e) if e.kind == crate::error::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Applies the call's buffered writes: each collection's in one batch.
    async fn commit(&self) -> Result<()> {
        let open = std::mem::take(&mut *self.open.lock().expect("open lock"));
        for o in open.into_iter().filter(|o| !o.pending.is_empty()) {
            let outcome = o.coll.batch(o.pending).await?;
            if !outcome.committed {
                let why = outcome.results.into_iter().find_map(|r| {
                    r.err()
                        .filter(|e| e.kind != crate::error::ErrorKind::Aborted)
                });
                let why = why.map(|e| e.message).unwrap_or_default();
                return Err(Error::aborted(format!(
                    "the handler's writes to {} were not applied: another write got there first ({why}); retry the call",
                    o.coll.name
                )));
            }
        }
        Ok(())
    }
}

impl CatalogHost {
    /// True if this call already wrote `id` (its version is then the call's own).
    fn pending_has(&self, handle: u32, id: &str) -> bool {
        self.open.lock().expect("open lock")[handle as usize]
            .overlay
            .contains_key(id)
    }
}

impl HostApi for CatalogHost {
    fn open<'a>(&'a self, collection: &'a str) -> HostFuture<'a, u32> {
        Box::pin(async move { self.open_now(collection) })
    }

    fn get<'a>(&'a self, handle: u32, id: &'a str) -> HostFuture<'a, store::Record> {
        Box::pin(async move {
            let (c, _) = self.coll(handle)?;
            let id = RecordId::new(id)?;
            self.current(handle, &c, &id).await?.ok_or_else(|| {
                Error::not_found(format!("record {:?} not found in {}", id.as_str(), c.name))
            })
        })
    }

    fn write(&self, handle: u32, op: WriteSpec) -> HostFuture<'_, Option<store::Record>> {
        Box::pin(self.write_now(handle, op))
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
            if self.depth + 1 >= MAX_DEPTH {
                return Err(Error::resource_exhausted(format!(
                    "invoke nested more than {MAX_DEPTH} deep"
                )));
            }
            self.services
                .call_at_depth(
                    &self.namespace,
                    service,
                    method,
                    input,
                    Vec::new(),
                    self.depth + 1,
                )
                .await
        })
    }
}

impl CatalogHost {
    fn open_now(&self, collection: &str) -> Result<u32> {
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
        let coll = self.services.catalog.get(&self.namespace, &name)?;
        let mut open = self.open.lock().expect("open lock");
        open.push(OpenState {
            coll,
            read_only: grant.read_only,
            pending: Vec::new(),
            overlay: HashMap::new(),
        });
        Ok((open.len() - 1) as u32)
    }

    async fn write_now(&self, handle: u32, op: WriteSpec) -> Result<Option<store::Record>> {
        let (c, read_only) = self.coll(handle)?;
        if read_only {
            return Err(Error::permission_denied(format!(
                "collection {} is granted read-only",
                c.name
            )));
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as i64)
            .unwrap_or(0);
        // Check against the call's view now, so the guest hears of mistakes at
        // once; the batch at commit checks again against the store.
        let (op, view) = match op {
            WriteSpec::Create { id, data, labels } => {
                store::collection::check_labels(&labels)?;
                let msg = codec::decode(c.descriptor(), &data)?;
                let id = if id.is_empty() {
                    RecordId::generate()
                } else {
                    RecordId::new(&id)?
                };
                if self.current(handle, &c, &id).await?.is_some() {
                    return Err(Error::already_exists(format!(
                        "a record with id {:?} already exists",
                        id.as_str()
                    )));
                }
                let payload = codec::encode_with_wire(&msg, Some(data))?;
                let rec = store::Record {
                    id: id.as_str().to_string(),
                    data: payload.bytes.clone(),
                    json: payload.json.clone(),
                    labels: labels.clone(),
                    version: 1,
                    created_us: now,
                    updated_us: now,
                };
                (
                    WriteOp::Create {
                        id: Some(id),
                        payload,
                        labels,
                    },
                    Some(rec),
                )
            }
            WriteSpec::Update {
                id,
                data,
                labels,
                expected_version,
            } => {
                store::collection::check_labels(&labels)?;
                let msg = codec::decode(c.descriptor(), &data)?;
                let id = RecordId::new(&id)?;
                let cur = self.current(handle, &c, &id).await?.ok_or_else(|| {
                    Error::not_found(format!("record {:?} not found", id.as_str()))
                })?;
                store::collection::check_version(&id, expected_version, cur.version)?;
                let payload = codec::encode_with_wire(&msg, Some(data))?;
                let rec = store::Record {
                    id: id.as_str().to_string(),
                    data: payload.bytes,
                    json: payload.json,
                    labels: labels.clone(),
                    version: cur.version + 1,
                    created_us: cur.created_us,
                    updated_us: now,
                };
                // The batch re-checks the version the call saw, so a concurrent
                // write in between makes the commit fail instead of being lost.
                let op = WriteOp::Update {
                    id,
                    data: Some(msg),
                    labels,
                    mask: store::Mask::full(),
                    expected_version: Some(cur.version)
                        .filter(|_| !self.pending_has(handle, &rec.id)),
                };
                (op, Some(rec))
            }
            WriteSpec::Delete {
                id,
                expected_version,
            } => {
                let id = RecordId::new(&id)?;
                let cur = self.current(handle, &c, &id).await?.ok_or_else(|| {
                    Error::not_found(format!("record {:?} not found", id.as_str()))
                })?;
                store::collection::check_version(&id, expected_version, cur.version)?;
                let expected = Some(cur.version).filter(|_| !self.pending_has(handle, id.as_str()));
                (
                    WriteOp::Delete {
                        id,
                        expected_version: expected,
                    },
                    None,
                )
            }
        };
        let key = match &op {
            WriteOp::Create { id, .. } => id
                .as_ref()
                .map(|i| i.as_str().to_string())
                .unwrap_or_default(),
            WriteOp::Update { id, .. } | WriteOp::Delete { id, .. } => id.as_str().to_string(),
        };
        let mut open = self.open.lock().expect("open lock");
        let o = &mut open[handle as usize];
        o.pending.push(op);
        o.overlay.insert(key, view.clone());
        Ok(view)
    }
}

/// Parses grants given as (collection, read_only) pairs.
pub fn grants(list: impl IntoIterator<Item = (String, bool)>) -> Result<Vec<Grant>> {
    let mut seen = BTreeMap::new();
    for (c, ro) in list {
        let name = CollectionName::new(&c).map_err(|e| e.context("grants"))?;
        if seen.insert(name.clone(), ro).is_some() {
            return Err(Error::invalid(format!(
                "grants name collection {c:?} twice"
            )));
        }
    }
    Ok(seen
        .into_iter()
        .map(|(collection, read_only)| Grant {
            collection,
            read_only,
        })
        .collect())
}
