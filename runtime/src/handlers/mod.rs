//! Registered services: a service declared in a namespace's .proto files,
//! bound to a Wasm component with grants and limits, and the path that calls
//! it. Bindings are persisted in `system/services`; components live in the
//! component store (`components`); the host side of the guest's imports is
//! `host`. Re-registering swaps an `Arc`, so calls in flight finish on the
//! version they started with.

mod call;
mod components;
mod files;
mod host;

pub use call::{CallOptions, Cancel, Canceller, Invocation, Invoker};
pub use components::sha256;

use crate::error::{Error, ErrorKind, Result};
use crate::names::{CollectionName, Namespace, RecordId};
use crate::registry::Registry;
use crate::store::{self, Catalog, Collection, Labels, WriteOp, codec};
use crate::util::now_us;
use crate::wasm::{Handler, Limits, Maxima, Sandbox};
use components::Components;
use prost::Message;
use prost_reflect::{MethodDescriptor, ServiceDescriptor};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock, RwLock, Weak};
use std::time::Duration;
use tokio::sync::watch;

/// A collection a handler may open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The collection, in the handler's namespace.
    pub collection: CollectionName,
    /// Reads only: writes are PERMISSION_DENIED.
    pub read_only: bool,
}

/// What a registration binds.
#[derive(Debug, Clone)]
pub struct ServiceSpec {
    /// The namespace the service is registered in.
    pub namespace: Namespace,
    /// Full service name, declared in a .proto of the namespace.
    pub service: String,
    /// The collections the handler may open.
    pub grants: Vec<Grant>,
    /// Per-call time limit; 0 = `wasm::Limits::default()`.
    pub timeout_ms: u32,
    /// Per-call memory limit; 0 = `wasm::Limits::default()`.
    pub memory_mib: u32,
}

/// A service bound to a compiled handler, ready to call.
pub struct BoundService {
    /// What was registered.
    pub spec: ServiceSpec,
    /// The component's sha256 (hex).
    pub sha256: String,
    /// The service as declared in the namespace's types.
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
    /// The service's namespace.
    pub namespace: Namespace,
    /// Full service name.
    pub service: String,
    /// The component's sha256; empty for an unregistration.
    pub sha256: String,
    /// When it was registered or unregistered (µs since the epoch).
    pub registered_at_us: i64,
}

impl Version {
    /// True for an unregistration.
    pub fn removed(&self) -> bool {
        self.sha256.is_empty()
    }
}

type Key = (Namespace, String);

/// Every registered service of the node, and the sandbox they run in.
pub struct Handlers {
    sandbox: Sandbox,
    registry: Arc<Registry>,
    catalog: Arc<Catalog>,
    /// `system/services`: the persisted bindings.
    store: Arc<Collection>,
    components: Components,
    table: RwLock<HashMap<Key, Arc<BoundService>>>,
    /// Unregistrations (time, µs), kept so the mesh can tell a copy is stale.
    removed: RwLock<HashMap<Key, i64>>,
    /// Serialises (un)registrations; taken after the mesh's fetch lock and
    /// the registry's lock, never before (see the lock order in lib.rs).
    register_lock: tokio::sync::Mutex<()>,
    /// Bumped on every (un)registration.
    changes: watch::Sender<u64>,
    invoker: OnceLock<Weak<dyn Invoker>>,
    node_id: String,
    /// Compiles running at once (`limits::MAX_COMPILES`).
    compiles: Arc<tokio::sync::Semaphore>,
    /// Per-namespace quotas (handler calls running at once).
    quotas: Arc<crate::quotas::Quotas>,
}

/// A registration's limits, lowered to the node's maximums (a binding
/// stored before the maximums were lowered runs within them).
fn limits_of(spec: &ServiceSpec, maxima: &Maxima) -> Limits {
    let d = maxima.default_limits();
    Limits {
        timeout: if spec.timeout_ms == 0 {
            d.timeout
        } else {
            Duration::from_millis(spec.timeout_ms as u64).min(maxima.timeout)
        },
        memory_bytes: if spec.memory_mib == 0 {
            d.memory_bytes
        } else {
            ((spec.memory_mib as usize) << 20).min(maxima.memory_bytes)
        },
        ..d
    }
}

/// Refuses a registration that asks for more than the node allows.
fn check_limits(spec: &ServiceSpec, maxima: &Maxima) -> Result<()> {
    let timeout = Duration::from_millis(spec.timeout_ms as u64);
    if timeout > maxima.timeout {
        return Err(Error::invalid(format!(
            "limits.timeout_ms is {}; this node allows at most {} (--max-handler-timeout)",
            spec.timeout_ms,
            maxima.timeout.as_millis()
        )));
    }
    if (spec.memory_mib as usize) << 20 > maxima.memory_bytes {
        return Err(Error::invalid(format!(
            "limits.memory_mib is {}; this node allows at most {} (--max-handler-memory)",
            spec.memory_mib,
            maxima.memory_bytes >> 20
        )));
    }
    Ok(())
}

fn to_info(r: &BoundService) -> crate::proto::ServiceInfo {
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

/// Runs blocking work (compiling, file reads) off the executor.
async fn blocking<T: Send + 'static>(
    what: &str,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::internal(format!("{what} task: {e}")))?
}

impl Handlers {
    /// What guests logged on this node (`wasm::logs`).
    pub fn logs(&self) -> &Arc<crate::wasm::logs::GuestLogs> {
        self.sandbox.logs()
    }

    /// Loads every registered service, from the compiled cache when it can;
    /// calls are bounded by `maxima`.
    pub async fn load(
        maxima: Maxima,
        data_dir: PathBuf,
        registry: Arc<Registry>,
        catalog: Arc<Catalog>,
        store: Arc<Collection>,
        node_id: String,
        quotas: Arc<crate::quotas::Quotas>,
    ) -> Result<Arc<Self>> {
        let (sandbox, components) = blocking("sandbox", move || {
            let sandbox = Sandbox::new(maxima)?;
            let components = Components::open(data_dir.join("components"), &sandbox)?;
            Ok((sandbox, components))
        })
        .await?;
        let me = Arc::new(Handlers {
            sandbox,
            registry,
            catalog,
            store,
            components,
            table: RwLock::new(HashMap::new()),
            removed: RwLock::new(HashMap::new()),
            register_lock: tokio::sync::Mutex::new(()),
            changes: watch::channel(0).0,
            invoker: OnceLock::new(),
            node_id,
            compiles: Arc::new(tokio::sync::Semaphore::new(crate::limits::MAX_COMPILES)),
            quotas,
        });
        let mut infos = Vec::new();
        me.store
            .scan(|rec, msg| {
                let info: crate::proto::ServiceInfo = msg
                    .transcode_to()
                    .map_err(|e| Error::internal(format!("system/services {:?}: {e}", rec.id)))?;
                infos.push(info);
                Ok(())
            })
            .await?;
        for info in infos {
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
            let handler = blocking("load", move || {
                this.components.handler(&this.sandbox, &sha, None)
            })
            .await?;
            let desc = me.service_desc(&spec.namespace, &spec.service)?;
            let limits = limits_of(&spec, me.sandbox.maxima());
            me.table.write().expect("services lock").insert(
                key,
                Arc::new(BoundService {
                    spec,
                    sha256: info.sha256,
                    desc,
                    registered_at_us: info.registered_at_us,
                    origin: info.origin_node_id,
                    handler,
                    limits,
                }),
            );
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
        self.components.compiled_count()
    }

    fn service_desc(&self, ns: &Namespace, service: &str) -> Result<ServiceDescriptor> {
        self.registry.pool(ns).get_service_by_name(service).ok_or_else(|| {
            Error::not_found(format!("service {service:?} is not declared in namespace {ns}: register its .proto with RegisterProto first"))
        })
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
        check_limits(&spec, self.sandbox.maxima())?;
        let desc = self.service_desc(&spec.namespace, &spec.service)?;
        if component.is_empty() {
            return Err(Error::invalid(
                "component is empty: send the .wasm bytes of a wasm32-wasip2 component",
            ));
        }
        if component.len() > crate::limits::MAX_COMPONENT_BYTES {
            return Err(Error::invalid(format!(
                "the component is {} bytes; the limit is {} (MAX_COMPONENT_BYTES): build it with --release and strip debug info",
                component.len(),
                crate::limits::MAX_COMPONENT_BYTES
            )));
        }
        crate::wasm::precheck(&component)?;
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
        let sha = sha256(&component);
        let this = self.clone();
        let sha_ = sha.clone();
        // The permit goes with the compile: one that outlives the caller's
        // wait still counts against the bound until it ends.
        let compile = async move {
            let permit = this
                .compiles
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| Error::internal("the compile pool closed"))?;
            blocking("compile", move || {
                let _permit = permit;
                let handler = this
                    .components
                    .handler(&this.sandbox, &sha_, Some(&component))?;
                this.components.keep(&sha_, &component)?;
                Ok(handler)
            })
            .await
        };
        let handler = tokio::time::timeout(crate::limits::COMPILE_TIMEOUT, compile)
            .await
            .map_err(|_| {
                Error::deadline_exceeded(format!(
                    "compiling the component (or waiting for other compiles) took longer than {:?}",
                    crate::limits::COMPILE_TIMEOUT
                ))
            })??;
        let bound = BoundService {
            limits: limits_of(&spec, self.sandbox.maxima()),
            spec: spec.clone(),
            sha256: sha,
            desc,
            registered_at_us,
            origin,
            handler,
        };
        let info = to_info(&bound);
        // Persist, then swap: a crash in between finds the new binding on restart.
        self.persist(&spec.namespace, &spec.service, &info).await?;
        self.removed.write().expect("services lock").remove(&key);
        self.table
            .write()
            .expect("services lock")
            .insert(key, Arc::new(bound));
        self.changes.send_modify(|n| *n += 1);
        tracing::info!(namespace = %spec.namespace, service = %spec.service, sha256 = %info.sha256, "service registered");
        self.collect_garbage().await;
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
            Err(e) if e.kind == ErrorKind::NotFound => self
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

    /// A registered service, for a call: UNIMPLEMENTED when it has no
    /// handler here (the method does not exist for the caller).
    pub fn lookup(&self, ns: &Namespace, service: &str) -> Result<Arc<BoundService>> {
        if service.is_empty() {
            return Err(Error::invalid(
                "the service name is empty: name one, e.g. shop.Orders",
            ));
        }
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
        let version = |sha256: String, registered_at_us| Version {
            namespace: ns.clone(),
            service: service.to_string(),
            sha256,
            registered_at_us,
        };
        if let Some(r) = self.table.read().expect("services lock").get(&key) {
            return Some(version(r.sha256.clone(), r.registered_at_us));
        }
        self.removed
            .read()
            .expect("services lock")
            .get(&key)
            .map(|at| version(String::new(), *at))
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

    /// A registered service, as a thing asked about: NOT_FOUND when it has
    /// no handler here.
    fn registered(&self, ns: &Namespace, service: &str) -> Result<Arc<BoundService>> {
        self.lookup(ns, service).map_err(|e| match e.kind {
            ErrorKind::Unimplemented => Error::not_found(format!(
                "service {:?} is not registered in namespace {ns}",
                crate::names::clip(service)
            )),
            _ => e,
        })
    }

    /// Description of a registered service.
    pub fn info(&self, ns: &Namespace, service: &str) -> Result<crate::proto::ServiceInfo> {
        self.registered(ns, service).map(|r| to_info(&r))
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
        let bound = self.registered(ns, service)?;
        if bound.sha256 != sha256 {
            return Err(Error::not_found(format!(
                "this node has version {} of {service}, not {}",
                bound.sha256,
                crate::names::clip(sha256)
            )));
        }
        if !with_component {
            return Ok((to_info(&bound), Vec::new()));
        }
        let path = self.components.path(sha256);
        let bytes = blocking("read", move || Ok(std::fs::read(path)?)).await?;
        Ok((to_info(&bound), bytes))
    }

    /// A registered, callable method.
    pub fn method(
        &self,
        ns: &Namespace,
        service: &str,
        method: &str,
    ) -> Result<(Arc<BoundService>, MethodDescriptor)> {
        let bound = self.lookup(ns, service)?;
        let m = bound
            .desc
            .methods()
            .find(|m| m.name() == method)
            .ok_or_else(|| Error::unimplemented(format!("{service} has no method {method:?}")))?;
        Ok((bound, m))
    }

    /// A method bound to a collection: its service is granted the collection.
    pub fn bound_method(
        &self,
        ns: &Namespace,
        service: &str,
        method: &str,
        collection: &CollectionName,
    ) -> Result<MethodDescriptor> {
        let (bound, m) = self.method(ns, service, method)?;
        if !bound
            .spec
            .grants
            .iter()
            .any(|g| &g.collection == collection)
        {
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
        let cur = self.registered(ns, service)?;
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
        self.collect_garbage().await;
        Ok(())
    }

    /// Deletes stored components (and compiled forms) no binding refers to
    /// any more. Called with `register_lock` held, so no registration can
    /// be between storing a component and binding it.
    async fn collect_garbage(&self) {
        let keep: std::collections::HashSet<String> = self
            .table
            .read()
            .expect("services lock")
            .values()
            .map(|b| b.sha256.clone())
            .collect();
        let components = self.components.dir().to_path_buf();
        let cache = self.components.cache_key();
        let swept = blocking("garbage", move || {
            Ok(components::sweep(&components, &keep, &cache))
        })
        .await;
        match swept {
            Ok(0) => {}
            Ok(n) => tracing::info!(files = n, "deleted components no service uses"),
            Err(e) => tracing::warn!(error = %e.message, "deleting unused components failed"),
        }
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
