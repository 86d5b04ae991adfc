//! The mesh: nodes that know each other (membership by gossip), know who
//! owns which collection and which handler versions each has, and run every
//! call where its data lives. Code moves to the data: a node asked to run a
//! handler it lacks fetches the component (and its descriptors) by sha256
//! from a peer that has it.
//!
//! Consistency: membership and ownership are eventually consistent (gossip).
//! A service's registrations are last-writer-wins by registration time
//! across the mesh; every node holding a copy follows the newest version or
//! unregistration it hears of.

pub mod link;
pub mod membership;
pub mod requests;
pub mod routing;
pub mod seal;
pub mod view;

use crate::error::{Error, Result};
use crate::handlers::{Handlers, Invocation, Invoker, Version};
use crate::names::{CollectionName, Namespace};
use crate::registry::{ProtoInput, Registry};
use crate::store::{Catalog, CollectionMeta, Labels};
use crate::wasm::HostFuture;
use link::{PeerLink, RemoteCall};
use membership::Membership;
use requests::RequestLog;
use routing::{Decision, DispatchTarget};
use sha2::Digest;
use std::sync::{Arc, Mutex, Weak};
use view::{HandlerVersion, Member, MemberState, OwnedCollection, View};

/// A call to run where it belongs.
#[derive(Debug, Clone)]
pub struct DispatchCall {
    /// The method, its input and how the call got here.
    pub invocation: Invocation,
    /// Run where this collection lives.
    pub collection: Option<CollectionName>,
    /// Run on this node id.
    pub target_node: Option<String>,
    /// Runs at most once per id on the node that runs it.
    pub request_id: Option<String>,
}

/// Where a dispatched call ran, and what it returned.
#[derive(Debug, Clone)]
pub struct Dispatched {
    /// The method's response, binary protobuf.
    pub output: Vec<u8>,
    /// Full name of the output message type.
    pub output_type: String,
    /// The node that ran the call.
    pub node_id: String,
    /// Its gRPC address.
    pub node_address: String,
    /// True if this node forwarded the call.
    pub forwarded: bool,
    /// The call's request id (the client's, or one the forward made).
    pub request_id: String,
}

/// A Discover query over the whole mesh.
#[derive(Debug, Clone, Default)]
pub struct DiscoverQuery {
    /// None: every namespace but `system`.
    pub namespace: Option<Namespace>,
    /// Only collections of this message type (empty: any).
    pub message_type: String,
    /// Only collections carrying all these labels.
    pub labels: Labels,
    /// Only collections after this (namespace, name).
    pub after: Option<(Namespace, CollectionName)>,
    /// Most collections to return.
    pub limit: usize,
}

/// A collection and the member that owns it.
#[derive(Debug, Clone)]
pub struct Located {
    /// The collection's description.
    pub meta: CollectionMeta,
    /// The member that owns it.
    pub node_id: String,
    /// That member's gRPC address.
    pub node_address: String,
}

/// This node's part in the mesh.
pub struct Mesh {
    me: Weak<Mesh>,
    membership: Arc<Membership>,
    handlers: Arc<Handlers>,
    catalog: Arc<Catalog>,
    registry: Arc<Registry>,
    keys: Arc<crate::auth::Keys>,
    quotas: Arc<crate::quotas::Overrides>,
    link: Arc<dyn PeerLink>,
    requests: Arc<RequestLog>,
    fetch_lock: tokio::sync::Mutex<()>,
    /// Members whose list of collections is being fetched, and when each
    /// was last fetched (see `fetch_catalogs`).
    catalog_fetches: Mutex<std::collections::HashMap<String, CatalogFetch>>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// A member's list of collections, fetched because its digest changed.
#[derive(Default)]
struct CatalogFetch {
    running: bool,
    last: Option<std::time::Instant>,
}

fn fingerprint(inv: &Invocation) -> u64 {
    let mut h = sha2::Sha256::new();
    for part in [
        inv.namespace.as_str().as_bytes(),
        inv.service.as_bytes(),
        inv.method.as_bytes(),
        &inv.input,
    ] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    u64::from_be_bytes(h.finalize()[..8].try_into().expect("32 bytes"))
}

/// Every collection the member at `address` owns, page by page.
async fn list_all(link: &dyn PeerLink, address: &str) -> Result<Vec<OwnedCollection>> {
    let mut all = Vec::new();
    let mut after = String::new();
    loop {
        let (page, next) = link.list_owned(address, after).await?;
        all.extend(page);
        if next.is_empty() {
            return Ok(all);
        }
        after = next;
    }
}

fn handler_version(v: &Version) -> HandlerVersion {
    HandlerVersion {
        namespace: v.namespace.to_string(),
        service: v.service.clone(),
        sha256: v.sha256.clone(),
        registered_at_us: v.registered_at_us,
        removed: v.removed(),
    }
}

/// True when `newest` supersedes what this node has (`local`).
fn supersedes(newest: &HandlerVersion, local: Option<&Version>) -> bool {
    match local {
        Some(v) => newest.rank() > handler_version(v).rank(),
        None => !newest.removed,
    }
}

impl Mesh {
    /// Starts the mesh's background work: publishing what this node owns and
    /// has, and keeping fetched handlers at the newest version.
    pub fn start(
        membership: Arc<Membership>,
        handlers: Arc<Handlers>,
        catalog: Arc<Catalog>,
        registry: Arc<Registry>,
        keys: Arc<crate::auth::Keys>,
        quotas: Arc<crate::quotas::Overrides>,
        link: Arc<dyn PeerLink>,
    ) -> Arc<Self> {
        let mesh = Arc::new_cyclic(|me| Mesh {
            me: me.clone(),
            membership,
            handlers,
            catalog,
            registry,
            keys,
            quotas,
            link,
            requests: Arc::new(RequestLog::default()),
            fetch_lock: tokio::sync::Mutex::new(()),
            catalog_fetches: Default::default(),
            tasks: Mutex::new(Vec::new()),
        });
        let invoker: Weak<dyn Invoker> = Arc::downgrade(&mesh) as Weak<dyn Invoker>;
        mesh.handlers.set_invoker(invoker);
        let publisher = {
            let me = Arc::downgrade(&mesh);
            let mut colls = mesh.catalog.subscribe();
            let mut svcs = mesh.handlers.subscribe();
            let mut keys = mesh.keys.subscribe();
            let mut quotas = mesh.quotas.subscribe();
            tokio::spawn(async move {
                loop {
                    let started = std::time::Instant::now();
                    match me.upgrade() {
                        Some(m) => m.publish().await,
                        None => break,
                    }
                    // Publishing lists every collection: with many, rest a
                    // few times what it took, so a burst of creates is
                    // published together and publishing takes a bounded
                    // share of a core; with few, it is at once.
                    let rest = (started.elapsed() * 4).min(crate::limits::PUBLISH_COALESCE);
                    tokio::time::sleep(rest).await;
                    tokio::select! {
                        r = colls.changed() => if r.is_err() { break },
                        r = svcs.changed() => if r.is_err() { break },
                        r = keys.changed() => if r.is_err() { break },
                        r = quotas.changed() => if r.is_err() { break },
                    }
                }
            })
        };
        let follower = {
            let me = Arc::downgrade(&mesh);
            let mut views = mesh.membership.subscribe();
            tokio::spawn(async move {
                while views.changed().await.is_ok() {
                    let Some(m) = me.upgrade() else { break };
                    m.fetch_catalogs();
                    m.take_from_members().await;
                    m.follow_newest().await;
                }
            })
        };
        mesh.tasks
            .lock()
            .expect("tasks lock")
            .extend([publisher, follower]);
        mesh
    }

    /// The membership (view, connect).
    pub fn membership(&self) -> &Arc<Membership> {
        &self.membership
    }

    /// The mesh as this node sees it.
    pub fn view(&self) -> Arc<View> {
        self.membership.view()
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.membership.config().node_id
    }

    /// This node's gRPC address as peers reach it.
    pub fn address(&self) -> String {
        self.membership.config().address.to_string()
    }

    async fn publish(&self) {
        let colls = Arc::new(view::Owned::new(self.catalog.owned().into_iter().map(
            |m| OwnedCollection {
                namespace: m.namespace.to_string(),
                name: m.name.to_string(),
                message_type: m.message_type,
                created_us: m.created_us,
            },
        )));
        let handlers: Vec<HandlerVersion> = self
            .handlers
            .versions()
            .iter()
            .map(handler_version)
            .collect();
        self.membership
            .publish(membership::Published {
                collections: &colls,
                handlers: &handlers,
                api_keys: &self.keys.stored(),
                quotas: &self.quotas.list(),
            })
            .await;
    }

    /// Fetches the list of collections of each member whose gossiped digest
    /// differs from the list held (at most one fetch per member at a time,
    /// and one per `OWNED_REFETCH_INTERVAL`), page by page over gRPC; the
    /// view is rebuilt with it. A list that changed while it was fetched
    /// is taken anyway (closer than the old one) and fetched again once
    /// the gossip shows the newer digest.
    fn fetch_catalogs(&self) {
        let view = self.view();
        for m in view.members.values() {
            if m.state != MemberState::Alive || m.collections_digest.is_empty() {
                continue;
            }
            if m.collections.digest() == m.collections_digest {
                continue;
            }
            {
                let mut fetches = self.catalog_fetches.lock().expect("fetches lock");
                let f = fetches.entry(m.node_id.clone()).or_default();
                if f.running
                    || f.last
                        .is_some_and(|t| t.elapsed() < crate::limits::OWNED_REFETCH_INTERVAL)
                {
                    continue;
                }
                f.running = true;
                f.last = Some(std::time::Instant::now());
            }
            let (me, node_id, address) = (self.me.clone(), m.node_id.clone(), m.address.clone());
            let link = self.link.clone();
            tokio::spawn(async move {
                let got = list_all(&*link, &address).await;
                let Some(mesh) = me.upgrade() else { return };
                match got {
                    Ok(colls) => {
                        let owned = Arc::new(view::Owned::new(colls));
                        tracing::debug!(node = %node_id, collections = owned.len(), "member's collections fetched");
                        mesh.membership.learn(&node_id, owned).await;
                    }
                    Err(e) => {
                        tracing::warn!(node = %node_id, error = %e, "cannot fetch a member's collections; retrying")
                    }
                }
                mesh.catalog_fetches
                    .lock()
                    .expect("fetches lock")
                    .entry(node_id)
                    .or_default()
                    .running = false;
                drop(mesh);
                // A retry, or a digest that moved on meanwhile: the view may
                // not change again to ask for it.
                tokio::time::sleep(crate::limits::OWNED_REFETCH_INTERVAL).await;
                if let Some(mesh) = me.upgrade() {
                    mesh.fetch_catalogs();
                }
            });
        }
    }

    /// Takes in the keys and quota overrides members hold that are newer
    /// than this node's (a new key, a rotation, a revocation; an override
    /// an operator set on any node). Members are trusted for this: only
    /// nodes holding the cluster secret gossip with this one.
    async fn take_from_members(&self) {
        let view = self.view();
        for m in view
            .members
            .values()
            .filter(|m| m.state != MemberState::Myself)
        {
            for k in &m.api_keys {
                if let Err(e) = self.keys.merge(k).await {
                    tracing::warn!(peer = %m.node_id, error = %e.message, "a member's key was not taken in");
                }
            }
            for q in &m.quotas {
                if let Err(e) = self.quotas.merge(q).await {
                    tracing::warn!(peer = %m.node_id, error = %e.message, "a member's quota override was not taken in");
                }
            }
        }
    }

    /// Brings every handler this node holds to the newest version the mesh
    /// knows (or removes it if it was unregistered since).
    async fn follow_newest(&self) {
        let view = self.view();
        for v in self
            .handlers
            .versions()
            .into_iter()
            .filter(|v| !v.removed())
        {
            let stale = view
                .newest(v.namespace.as_str(), &v.service)
                .is_some_and(|n| supersedes(n, Some(&v)));
            if stale && let Err(e) = self.ensure_service(&v.namespace, &v.service).await {
                tracing::warn!(namespace = %v.namespace, service = %v.service, error = %e, "could not follow the newest version");
            }
        }
    }

    /// Makes sure this node runs the newest version of a service the mesh
    /// knows of: fetches it from a peer if it is missing or stale here,
    /// removes it if it was unregistered. With no peer reachable, an older
    /// local version keeps serving.
    pub async fn ensure_service(&self, ns: &Namespace, service: &str) -> Result<()> {
        let needed = |view: &View| {
            view.newest(ns.as_str(), service)
                .filter(|n| supersedes(n, self.handlers.version(ns, service).as_ref()))
                .cloned()
        };
        if needed(&self.view()).is_none() {
            return Ok(());
        }
        let _one_at_a_time = self.fetch_lock.lock().await;
        let view = self.view();
        let Some(newest) = needed(&view) else {
            return Ok(());
        };
        if newest.removed {
            return match self
                .handlers
                .unregister(ns, service, Some(newest.registered_at_us))
                .await
            {
                Err(e) if e.kind == crate::error::ErrorKind::NotFound => Ok(()),
                other => other,
            };
        }
        let mut last = None;
        for peer in view.holders(&newest) {
            match self.fetch_from(peer, &newest).await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    tracing::warn!(peer = %peer.node_id, service, error = %e, "fetching a handler failed");
                    last = Some(e);
                }
            }
        }
        if self.handlers.has(ns, service) {
            tracing::warn!(service, sha256 = %newest.sha256, "newest version unreachable; serving the older one");
            return Ok(());
        }
        Err(last.unwrap_or_else(|| {
            Error::unavailable(format!(
                "service {service} of namespace {ns} is registered only on nodes the mesh considers dead; retry when one is back"
            ))
        }))
    }

    async fn fetch_from(&self, peer: &Member, want: &HandlerVersion) -> Result<()> {
        let f = self
            .link
            .fetch(
                &peer.address,
                &want.namespace,
                &want.service,
                &want.sha256,
                true,
            )
            .await?;
        let got = crate::handlers::sha256(&f.component);
        if got != want.sha256 || f.info.sha256 != want.sha256 {
            return Err(Error::internal(format!(
                "node {} sent a component hashing to {got}, not the {} asked for; not installed",
                peer.node_id, want.sha256
            )));
        }
        // Its registration changed since the view was gossiped: not the
        // version wanted (a later round names the new one).
        if f.info.registered_at_us != want.registered_at_us {
            return Err(Error::unavailable(format!(
                "node {} now has the registration of {} from {} µs, not {}; retry",
                peer.node_id, want.service, f.info.registered_at_us, want.registered_at_us
            )));
        }
        let ns = Namespace::new(&want.namespace)?;
        self.registry
            .register(
                &ns,
                ProtoInput::FileSet(prost_types::FileDescriptorSet { file: f.files }),
            )
            .await
            .map_err(|e| {
                Error::failed_precondition(format!(
                    "cannot take {} from node {}: its .proto files clash with those registered here ({})",
                    want.service, peer.node_id, e.message
                ))
            })?;
        self.handlers.install(&f.info, f.component).await?;
        tracing::info!(service = %want.service, sha256 = %want.sha256, from = %peer.node_id, "handler fetched from a peer");
        Ok(())
    }

    /// Runs a call on this node (fetching its handler first if needed). With
    /// a request id it runs at most once per id.
    pub async fn run_here(&self, inv: Invocation, request_id: Option<&str>) -> Result<Vec<u8>> {
        self.ensure_service(&inv.namespace, &inv.service).await?;
        match request_id {
            None => self.handlers.call(inv).await,
            Some(id) => {
                // Ids are the caller's own: another key naming its call the
                // same runs its own call, never gets this one's answer, and
                // its writes are not taken for a re-run's.
                let id = match &inv.options.caller {
                    Some(c) => format!("{}:{id}", c.key_id),
                    None => id.to_string(),
                };
                let fp = fingerprint(&inv);
                let services = self.handlers.clone();
                let key = id.clone();
                self.requests
                    .run_once(&key, fp, move |cancel| {
                        let mut inv = inv;
                        inv.options.cancel = cancel;
                        inv.options.request_id = Some(id);
                        async move { services.call(inv).await }
                    })
                    .await
            }
        }
    }

    /// Runs a call where it belongs (see `routing::for_dispatch`), forwarding
    /// it at most once.
    pub async fn dispatch(&self, call: DispatchCall) -> Result<Dispatched> {
        let inv = &call.invocation;
        let view = self.view();
        let collection_here = call
            .collection
            .as_ref()
            .is_some_and(|c| self.catalog.contains(&inv.namespace, c));
        let target = DispatchTarget {
            namespace: inv.namespace.as_str(),
            service: &inv.service,
            collection: call.collection.as_ref().map(|c| c.as_str()),
            node: call.target_node.as_deref(),
        };
        let decision = routing::for_dispatch(
            &view,
            &target,
            collection_here,
            self.handlers.has(&inv.namespace, &inv.service),
            inv.options.hop,
        )?;
        match decision {
            Decision::Here => {
                let request_id = call.request_id.unwrap_or_default();
                let rid = Some(request_id.as_str()).filter(|s| !s.is_empty());
                let (ns, service, method) = (
                    call.invocation.namespace.clone(),
                    call.invocation.service.clone(),
                    call.invocation.method.clone(),
                );
                let output = self.run_here(call.invocation, rid).await?;
                let output_type = self
                    .handlers
                    .method(&ns, &service, &method)
                    .map(|(_, m)| m.output().full_name().to_string())
                    .unwrap_or_default();
                Ok(Dispatched {
                    output,
                    output_type,
                    node_id: self.node_id().to_string(),
                    node_address: self.address(),
                    forwarded: false,
                    request_id,
                })
            }
            Decision::Forward(peer) => {
                let request_id = call
                    .request_id
                    .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
                let inv = call.invocation;
                let remote = RemoteCall {
                    namespace: inv.namespace.to_string(),
                    service: inv.service,
                    method: inv.method,
                    input: inv.input,
                    collection: call.collection.map(|c| c.to_string()),
                    target_node: peer.node_id.clone(),
                    request_id: request_id.clone(),
                    metadata: inv.metadata,
                    depth: inv.options.depth,
                    caller: inv.options.caller.as_ref().map(|c| c.key_id.clone()),
                    deadline: inv.options.deadline,
                };
                let out = self.link.dispatch(&peer.address, remote).await?;
                Ok(Dispatched {
                    output: out.output,
                    output_type: out.output_type,
                    node_id: out.node_id,
                    node_address: out.node_address,
                    forwarded: true,
                    request_id,
                })
            }
        }
    }

    /// Where a call on a collection goes: here, or its owner (once). A
    /// collection no list names while a member's list is being fetched
    /// (its gossiped digest is newer) waits for the fetch, at most
    /// `CATALOG_CATCH_UP`, before it is NOT_FOUND: it may have just been
    /// made there.
    pub async fn locate(
        &self,
        ns: &Namespace,
        name: &CollectionName,
        hop: u32,
    ) -> Result<Decision> {
        let first = self.locate_now(ns, name, hop);
        let missing = |d: &Result<Decision>| matches!(d, Err(e) if e.kind == crate::error::ErrorKind::NotFound);
        if !missing(&first) || !self.view().catching_up() {
            return first;
        }
        let mut views = self.membership.subscribe();
        let until = tokio::time::Instant::now() + crate::limits::CATALOG_CATCH_UP;
        loop {
            tokio::select! {
                r = views.changed() => if r.is_err() { break },
                _ = tokio::time::sleep_until(until) => break,
            }
            let d = self.locate_now(ns, name, hop);
            if !missing(&d) || !self.view().catching_up() {
                return d;
            }
        }
        self.locate_now(ns, name, hop)
    }

    fn locate_now(&self, ns: &Namespace, name: &CollectionName, hop: u32) -> Result<Decision> {
        routing::for_collection(
            &self.view(),
            ns.as_str(),
            name.as_str(),
            self.catalog.contains(ns, name),
            hop,
        )
    }

    /// Where a new collection goes. `auto`: by rendezvous hashing over the
    /// live members; else here. Either way the name must be free in the mesh.
    pub fn place(
        &self,
        ns: &Namespace,
        name: &CollectionName,
        auto: bool,
        hop: u32,
    ) -> Result<Decision> {
        let view = self.view();
        if let Some(owner) = view.owner(ns.as_str(), name.as_str())
            && owner.node_id != view.self_id
        {
            return Err(Error::already_exists(format!(
                "collection {ns}/{name} already exists on node {} ({})",
                owner.node_id, owner.address
            )));
        }
        if !auto || hop >= crate::limits::MAX_HOPS {
            return Ok(Decision::Here);
        }
        match routing::place_collection(&view, ns.as_str(), name.as_str()) {
            Some(m) if m.node_id != view.self_id => Ok(Decision::Forward(m.clone())),
            _ => Ok(Decision::Here),
        }
    }

    /// Services of a namespace registered somewhere in the mesh (newest
    /// version not an unregistration), by name.
    pub fn mesh_services(&self, ns: &Namespace) -> Vec<String> {
        let view = self.view();
        let mut names: Vec<String> = view
            .members
            .values()
            .flat_map(|m| m.handlers.iter())
            .filter(|h| h.namespace == ns.as_str())
            .map(|h| h.service.clone())
            .filter(|s| view.newest(ns.as_str(), s).is_some_and(|v| !v.removed))
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// The .proto file `name`, with its dependencies, as a service
    /// registered elsewhere in the mesh brings it.
    pub async fn remote_file(
        &self,
        ns: &Namespace,
        name: &str,
    ) -> Option<Vec<prost_types::FileDescriptorProto>> {
        self.remote_files(ns, "", |p| p.get_file_by_name(name))
            .await
    }

    /// The .proto file declaring `symbol` (a type, service or method; a
    /// leading `.` is ignored), with its dependencies, from elsewhere in the mesh.
    pub async fn remote_symbol_file(
        &self,
        ns: &Namespace,
        symbol: &str,
    ) -> Option<Vec<prost_types::FileDescriptorProto>> {
        let s = symbol.strip_prefix('.').unwrap_or(symbol);
        self.remote_files(ns, s, |p| crate::registry::symbol_file(p, s))
            .await
    }

    /// A .proto file, with its dependencies, that some service registered
    /// elsewhere in the mesh brings along: the first one `pick` finds in a
    /// service's descriptors (for clients that ask this node about types it
    /// does not have: reflection, GetProto). The service named `hint`, or
    /// whose method it names, is asked first.
    async fn remote_files(
        &self,
        ns: &Namespace,
        hint: &str,
        pick: impl Fn(&prost_reflect::DescriptorPool) -> Option<prost_reflect::FileDescriptor>,
    ) -> Option<Vec<prost_types::FileDescriptorProto>> {
        let view = self.view();
        let mut services = self.mesh_services(ns);
        // The hinted service first: a symbol is often the service or a method.
        services.sort_by_key(|s| {
            !(hint == s
                || hint
                    .strip_prefix(s.as_str())
                    .is_some_and(|r| r.starts_with('.')))
        });
        for service in services {
            let Some(newest) = view.newest(ns.as_str(), &service) else {
                continue;
            };
            let Some(peer) = view.holders(newest).next() else {
                continue;
            };
            let fetched = self
                .link
                .fetch(
                    &peer.address,
                    &newest.namespace,
                    &newest.service,
                    &newest.sha256,
                    false,
                )
                .await;
            let Ok(f) = fetched else { continue };
            let mut pool = prost_reflect::DescriptorPool::new();
            if pool.add_file_descriptor_protos(f.files).is_err() {
                continue;
            }
            if let Some(file) = pick(&pool) {
                return Some(crate::registry::with_deps(&file));
            }
        }
        None
    }

    /// Collections across the mesh matching `q`, in (namespace, name) order,
    /// with their owners; and the members that could not be asked.
    pub async fn discover(&self, q: DiscoverQuery) -> (Vec<Located>, Vec<String>) {
        let view = self.view();
        let mut found: Vec<Located> = self
            .catalog
            .discover(
                q.namespace.as_ref(),
                &q.message_type,
                &q.labels,
                q.after.as_ref(),
                q.limit,
            )
            .into_iter()
            .map(|meta| Located {
                meta,
                node_id: self.node_id().to_string(),
                node_address: self.address(),
            })
            .collect();
        let wanted = |c: &OwnedCollection| match &q.namespace {
            Some(ns) => c.namespace == ns.as_str(),
            None => c.namespace != crate::names::SYSTEM,
        };
        let mut asks = tokio::task::JoinSet::new();
        let mut unreachable = Vec::new();
        for m in view.members.values() {
            if m.node_id == view.self_id || !m.collections.iter().any(wanted) {
                continue;
            }
            if !m.reachable() {
                unreachable.push(m.node_id.clone());
                continue;
            }
            let (link, addr, id, q) = (
                self.link.clone(),
                m.address.clone(),
                m.node_id.clone(),
                q.clone(),
            );
            asks.spawn(async move { (id.clone(), addr.clone(), link.discover(&addr, q).await) });
        }
        while let Some(joined) = asks.join_next().await {
            match joined {
                Ok((id, addr, Ok(metas))) => found.extend(metas.into_iter().map(|meta| Located {
                    meta,
                    node_id: id.clone(),
                    node_address: addr.clone(),
                })),
                Ok((id, _, Err(e))) => {
                    tracing::warn!(peer = %id, error = %e, "discover: a member did not answer");
                    unreachable.push(id);
                }
                Err(e) => tracing::warn!(error = %e, "discover task failed"),
            }
        }
        found.sort_by(|a, b| {
            (&a.meta.namespace, &a.meta.name, &a.node_id).cmp(&(
                &b.meta.namespace,
                &b.meta.name,
                &b.node_id,
            ))
        });
        found.truncate(q.limit);
        unreachable.sort();
        (found, unreachable)
    }

    /// Joins the mesh of the node at `address`.
    pub async fn connect(&self, address: &str) -> Result<()> {
        self.membership
            .connect(address, crate::limits::JOIN_TIMEOUT)
            .await
    }

    /// Stops gossiping and background work.
    pub async fn shutdown(&self) {
        for t in self.tasks.lock().expect("tasks lock").drain(..) {
            t.abort();
        }
        self.membership.shutdown().await;
    }
}

impl Invoker for Mesh {
    fn invoke(&self, call: Invocation) -> HostFuture<'static, Vec<u8>> {
        let me = self.me.upgrade();
        Box::pin(async move {
            let me = me.ok_or_else(|| Error::unavailable("the node is shutting down"))?;
            let d = me
                .dispatch(DispatchCall {
                    invocation: call,
                    collection: None,
                    target_node: None,
                    request_id: None,
                })
                .await?;
            Ok(d.output)
        })
    }
}
