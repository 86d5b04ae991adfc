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
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};
use std::time::{Duration, Instant};
use tokio::sync::watch;

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
    /// When this version was registered (µs since the epoch), on `origin`.
    pub registered_at_us: i64,
    /// The node the component was uploaded to.
    pub origin: String,
    handler: Handler,
    limits: Limits,
}

/// A version of a service this node has, or an unregistration it knows of
/// (`sha256` empty), as the mesh compares them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    pub namespace: Namespace,
    pub service: String,
    pub sha256: String,
    pub registered_at_us: i64,
}

impl Version {
    /// True for an unregistration.
    pub fn removed(&self) -> bool {
        self.sha256.is_empty()
    }
}

/// How a call reached this node.
#[derive(Debug, Clone, Copy, Default)]
pub struct CallOptions {
    /// Times the call was forwarded between nodes before landing here.
    pub hop: u32,
    /// How many `invoke`s deep the call is.
    pub depth: u32,
    /// The caller's deadline, if it gave one; handler limits still apply.
    pub deadline: Option<Instant>,
}

/// One call of a registered method.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub namespace: Namespace,
    pub service: String,
    pub method: String,
    pub input: Vec<u8>,
    /// The caller's metadata, handed to the handler.
    pub metadata: Vec<(String, String)>,
    pub options: CallOptions,
}

/// Routes a handler's `invoke` of another method (the mesh implements it,
/// so an invoke goes where a Dispatch would).
pub trait Invoker: Send + Sync {
    /// Runs the call wherever it belongs.
    fn invoke(&self, call: Invocation) -> HostFuture<'static, Vec<u8>>;
}

/// Most nested `invoke` calls (a handler calling a handler calling …).
pub const MAX_DEPTH: u32 = 8;

/// All registered services of the node.
pub struct Services {
    sandbox: Sandbox,
    registry: Arc<Registry>,
    catalog: Arc<Catalog>,
    store: Arc<Collection>,
    dir: PathBuf,
    table: RwLock<HashMap<(Namespace, String), Arc<Registered>>>,
    /// Unregistrations (time, µs), kept so the mesh can tell a copy is stale.
    removed: RwLock<HashMap<(Namespace, String), i64>>,
    register_lock: tokio::sync::Mutex<()>,
    /// How many components were compiled from Wasm (not loaded from the cache).
    compiled: std::sync::atomic::AtomicU64,
    /// Bumped on every (un)registration.
    changes: watch::Sender<u64>,
    invoker: OnceLock<Weak<dyn Invoker>>,
    node_id: String,
}

/// Microseconds since the epoch.
pub fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// Lowercase hex of bytes (how component hashes are written).
pub fn hex(bytes: &[u8]) -> String {
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
        registered_at_us: r.registered_at_us,
        origin_node_id: r.origin.clone(),
    }
}

fn spec_of(info: &crate::proto::ServiceInfo) -> Result<ServiceSpec> {
    Ok(ServiceSpec {
        namespace: Namespace::new(&info.namespace)?,
        service: info.service.clone(),
        grants: grants(
            info.grants
                .iter()
                .map(|g| (g.collection.clone(), g.read_only)),
        )?,
        timeout_ms: info.limits.as_ref().map(|l| l.timeout_ms).unwrap_or(0),
        memory_mib: info.limits.as_ref().map(|l| l.memory_mib).unwrap_or(0),
    })
}

impl Services {
    /// Loads every registered service, from the compiled cache when it can.
    pub async fn load(
        data_dir: PathBuf,
        registry: Arc<Registry>,
        catalog: Arc<Catalog>,
        store: Arc<Collection>,
        node_id: String,
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
            removed: RwLock::new(HashMap::new()),
            register_lock: tokio::sync::Mutex::new(()),
            compiled: 0.into(),
            changes: watch::channel(0).0,
            invoker: OnceLock::new(),
            node_id,
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
                let spec = spec_of(&info)?;
                let key = (spec.namespace.clone(), spec.service.clone());
                if info.sha256.is_empty() {
                    me.removed
                        .write()
                        .expect("services lock")
                        .insert(key, info.registered_at_us);
                    continue;
                }
                let this = me.clone();
                let sha = info.sha256.clone();
                let handler = tokio::task::spawn_blocking(move || this.handler_for(&sha, None))
                    .await
                    .map_err(|e| Error::internal(format!("load task: {e}")))??;
                let sdesc = me.service_desc(&spec.namespace, &spec.service)?;
                let limits = limits_of(&spec);
                me.table.write().expect("services lock").insert(
                    key,
                    Arc::new(Registered {
                        spec,
                        sha256: info.sha256,
                        desc: sdesc,
                        registered_at_us: info.registered_at_us,
                        origin: info.origin_node_id,
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

    /// Sets who routes handlers' `invoke`s (the mesh); until then they run here.
    pub fn set_invoker(&self, invoker: Weak<dyn Invoker>) {
        let _ = self.invoker.set(invoker);
    }

    /// Notified after every registration or unregistration.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
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
                stored = std::fs::read(self.component_path(sha))?;
                &stored
            }
        };
        let handler = self.sandbox.compile(wasm)?;
        self.compiled
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        write_atomic(&cached, &handler.serialize()?)?;
        Ok(handler)
    }

    fn component_path(&self, sha: &str) -> PathBuf {
        self.dir.join(format!("{sha}.wasm"))
    }

    /// Validates, stores and binds a component uploaded by a client; swaps
    /// any previous version.
    pub async fn register(
        self: &Arc<Self>,
        spec: ServiceSpec,
        component: Vec<u8>,
    ) -> Result<crate::proto::ServiceInfo> {
        let origin = self.node_id.clone();
        self.bind(spec, component, None, origin).await
    }

    /// Binds a version fetched from a peer, keeping its registration time and
    /// origin. A version older than the one held is refused.
    pub async fn install(
        self: &Arc<Self>,
        info: &crate::proto::ServiceInfo,
        component: Vec<u8>,
    ) -> Result<crate::proto::ServiceInfo> {
        let spec = spec_of(info)?;
        self.bind(
            spec,
            component,
            Some(info.registered_at_us),
            info.origin_node_id.clone(),
        )
        .await
    }

    async fn bind(
        self: &Arc<Self>,
        spec: ServiceSpec,
        component: Vec<u8>,
        stamp: Option<i64>,
        origin: String,
    ) -> Result<crate::proto::ServiceInfo> {
        spec.namespace.writable()?;
        let desc = self.service_desc(&spec.namespace, &spec.service)?;
        if component.is_empty() {
            return Err(Error::invalid(
                "component is empty: send the .wasm bytes of a wasm32-wasip2 component",
            ));
        }
        let _guard = self.register_lock.lock().await;
        let key = (spec.namespace.clone(), spec.service.clone());
        // A registration here supersedes everything this node knows of.
        let registered_at_us = match stamp {
            Some(at) => {
                if self
                    .version(&spec.namespace, &spec.service)
                    .is_some_and(|v| v.registered_at_us > at)
                {
                    return Err(Error::failed_precondition(format!(
                        "a newer version of {} is already here",
                        spec.service
                    )));
                }
                at
            }
            None => now_us().max(
                self.version(&spec.namespace, &spec.service)
                    .map(|v| v.registered_at_us + 1)
                    .unwrap_or(0),
            ),
        };
        let sha = hex(&sha2::Sha256::digest(&component));
        let this = self.clone();
        let sha2_ = sha.clone();
        let handler = tokio::task::spawn_blocking(move || {
            let handler = this.handler_for(&sha2_, Some(&component))?;
            let path = this.component_path(&sha2_);
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
            registered_at_us,
            origin,
            handler,
            limits,
        };
        let info = to_info(&reg);
        // Persist, then swap: a crash in between finds the new binding on restart.
        self.persist(&spec.namespace, &spec.service, &info).await?;
        self.removed.write().expect("services lock").remove(&key);
        self.table
            .write()
            .expect("services lock")
            .insert(key, Arc::new(reg));
        self.changes.send_modify(|n| *n += 1);
        tracing::info!(namespace = %spec.namespace, service = %spec.service, sha256 = %info.sha256, "service registered");
        Ok(info)
    }

    /// Writes a service's record in `system/services` (create or replace).
    async fn persist(
        &self,
        ns: &Namespace,
        service: &str,
        info: &crate::proto::ServiceInfo,
    ) -> Result<()> {
        let msg = codec::decode(self.store.descriptor(), &info.encode_to_vec())?;
        let payload = codec::encode(&msg)?;
        let id = RecordId::new(&format!("{ns}/{service}"))?;
        let op = WriteOp::Update {
            id: id.clone(),
            data: Some(msg),
            labels: Labels::new(),
            mask: store::Mask::full(),
            expected_version: None,
        };
        match self.store.write(op).await {
            Ok(_) => Ok(()),
            Err(e) if e.kind == crate::error::ErrorKind::NotFound => self
                .store
                .write(WriteOp::Create {
                    id: Some(id),
                    payload,
                    labels: Labels::new(),
                })
                .await
                .map(|_| ()),
            Err(e) => Err(e),
        }
    }

    /// A registered service.
    pub fn lookup(&self, ns: &Namespace, service: &str) -> Result<Arc<Registered>> {
        self.table.read().expect("services lock").get(&(ns.clone(), service.to_string())).cloned().ok_or_else(|| {
            Error::unimplemented(format!("service {service:?} has no handler in namespace {ns}: register one with CollectorRegistry.RegisterService"))
        })
    }

    /// True if the service has a handler on this node.
    pub fn has(&self, ns: &Namespace, service: &str) -> bool {
        self.table
            .read()
            .expect("services lock")
            .contains_key(&(ns.clone(), service.to_string()))
    }

    /// The version of a service this node has, or its unregistration.
    pub fn version(&self, ns: &Namespace, service: &str) -> Option<Version> {
        let key = (ns.clone(), service.to_string());
        if let Some(r) = self.table.read().expect("services lock").get(&key) {
            return Some(Version {
                namespace: ns.clone(),
                service: service.to_string(),
                sha256: r.sha256.clone(),
                registered_at_us: r.registered_at_us,
            });
        }
        self.removed
            .read()
            .expect("services lock")
            .get(&key)
            .map(|at| Version {
                namespace: ns.clone(),
                service: service.to_string(),
                sha256: String::new(),
                registered_at_us: *at,
            })
    }

    /// Every version and unregistration this node knows of.
    pub fn versions(&self) -> Vec<Version> {
        let table = self.table.read().expect("services lock");
        let removed = self.removed.read().expect("services lock");
        table
            .iter()
            .map(|((ns, svc), r)| Version {
                namespace: ns.clone(),
                service: svc.clone(),
                sha256: r.sha256.clone(),
                registered_at_us: r.registered_at_us,
            })
            .chain(removed.iter().map(|((ns, svc), at)| Version {
                namespace: ns.clone(),
                service: svc.clone(),
                sha256: String::new(),
                registered_at_us: *at,
            }))
            .collect()
    }

    /// Description of a registered service.
    pub fn info(&self, ns: &Namespace, service: &str) -> Result<crate::proto::ServiceInfo> {
        self.lookup(ns, service).map(|r| to_info(&r))
    }

    /// A service's description and (with `with_component`) component bytes,
    /// if this node has exactly version `sha256` (for a peer that fetches it).
    pub async fn export(
        &self,
        ns: &Namespace,
        service: &str,
        sha256: &str,
        with_component: bool,
    ) -> Result<(crate::proto::ServiceInfo, Vec<u8>)> {
        let reg = self.lookup(ns, service).map_err(|_| {
            Error::not_found(format!(
                "service {service} of namespace {ns} is not on this node"
            ))
        })?;
        if reg.sha256 != sha256 {
            return Err(Error::not_found(format!(
                "this node has version {} of {service}, not {sha256}",
                reg.sha256
            )));
        }
        if !with_component {
            return Ok((to_info(&reg), Vec::new()));
        }
        let path = self.component_path(sha256);
        let bytes = tokio::task::spawn_blocking(move || std::fs::read(path))
            .await
            .map_err(|e| Error::internal(format!("read task: {e}")))??;
        Ok((to_info(&reg), bytes))
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

    /// A method bound to a collection: its service is granted the collection.
    pub fn bound_method(
        &self,
        ns: &Namespace,
        service: &str,
        method: &str,
        collection: &CollectionName,
    ) -> Result<MethodDescriptor> {
        let (reg, m) = self.method(ns, service, method)?;
        if !reg.spec.grants.iter().any(|g| &g.collection == collection) {
            return Err(Error::failed_precondition(format!(
                "{service} is not bound to collection {collection}: grant it the collection when registering the service"
            )));
        }
        Ok(m)
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

    /// Removes a service's handler (calls in flight finish) and remembers
    /// when, so copies elsewhere in the mesh follow. `at`: the time of an
    /// unregistration learnt from a peer; None: now.
    pub async fn unregister(&self, ns: &Namespace, service: &str, at: Option<i64>) -> Result<()> {
        ns.writable()?;
        let _guard = self.register_lock.lock().await;
        let cur = self.lookup(ns, service)?;
        let at = at.unwrap_or_else(|| now_us().max(cur.registered_at_us + 1));
        let tombstone = crate::proto::ServiceInfo {
            namespace: ns.to_string(),
            service: service.to_string(),
            registered_at_us: at,
            origin_node_id: self.node_id.clone(),
            ..Default::default()
        };
        self.persist(ns, service, &tombstone).await?;
        let key = (ns.clone(), service.to_string());
        self.table.write().expect("services lock").remove(&key);
        self.removed.write().expect("services lock").insert(key, at);
        self.changes.send_modify(|n| *n += 1);
        tracing::info!(namespace = %ns, service, "service unregistered");
        Ok(())
    }

    /// Calls a registered method on this node with binary input; returns
    /// binary output. Runs on the caller's task: the sandbox yields to the
    /// executor, and store work happens on the store's threads.
    pub async fn call(self: &Arc<Self>, call: Invocation) -> Result<Vec<u8>> {
        let Invocation {
            namespace: ns,
            service,
            method,
            input,
            metadata,
            options,
        } = call;
        let (reg, m) = self.method(&ns, &service, &method)?;
        codec::decode(&m.input(), &input)
            .map_err(|e| e.context(format!("input of {service}/{method}")))?;
        let mut limits = reg.limits;
        if let Some(d) = options.deadline {
            let left = d.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error {
                    kind: crate::error::ErrorKind::DeadlineExceeded,
                    message: "the caller's deadline passed before the handler started".into(),
                });
            }
            limits.timeout = limits.timeout.min(left);
        }
        let host = Arc::new(CatalogHost {
            services: self.clone(),
            namespace: ns.clone(),
            grants: reg.spec.grants.clone(),
            open: Mutex::new(Vec::new()),
            options,
        });
        let api: Arc<dyn HostApi> = host.clone();
        let ctx = CallContext {
            namespace: ns.to_string(),
            service: service.clone(),
            method: method.clone(),
            metadata,
            deadline_ms: limits.timeout.as_millis() as u64,
        };
        let out = self
            .sandbox
            .call(&reg.handler, ctx, &input, api, &limits)
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
    options: CallOptions,
}

struct OpenState {
    coll: Arc<Collection>,
    read_only: bool,
    pending: Vec<WriteOp>,
    /// The call's view of records it wrote: None = deleted.
    overlay: HashMap<String, Option<Arc<store::Record>>>,
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
    ) -> Result<Option<Arc<store::Record>>> {
        let own = self.open.lock().expect("open lock")[handle as usize]
            .overlay
            .get(id.as_str())
            .cloned();
        if let Some(o) = own {
            return Ok(o);
        }
        match c.get(id.clone()).await {
            Ok(r) => Ok(Some(r)),
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

    fn get<'a>(&'a self, handle: u32, id: &'a str) -> HostFuture<'a, Arc<store::Record>> {
        Box::pin(async move {
            let (c, _) = self.coll(handle)?;
            let id = RecordId::new(id)?;
            self.current(handle, &c, &id).await?.ok_or_else(|| {
                Error::not_found(format!("record {:?} not found in {}", id.as_str(), c.name))
            })
        })
    }

    fn write(&self, handle: u32, op: WriteSpec) -> HostFuture<'_, Option<Arc<store::Record>>> {
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
            if self.options.depth + 1 >= MAX_DEPTH {
                return Err(Error::resource_exhausted(format!(
                    "invoke nested more than {MAX_DEPTH} deep"
                )));
            }
            let call = Invocation {
                namespace: self.namespace.clone(),
                service: service.to_string(),
                method: method.to_string(),
                input: input.to_vec(),
                metadata: Vec::new(),
                options: CallOptions {
                    depth: self.options.depth + 1,
                    ..self.options
                },
            };
            match self.services.invoker.get().and_then(Weak::upgrade) {
                Some(invoker) => invoker.invoke(call).await,
                None => Box::pin(self.services.call(call)).await,
            }
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

    async fn write_now(&self, handle: u32, op: WriteSpec) -> Result<Option<Arc<store::Record>>> {
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
                    Some(Arc::new(rec)),
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
                (op, Some(Arc::new(rec)))
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
