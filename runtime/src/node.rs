//! Node::start wires the store, the registry and the gRPC services onto one
//! port, and returns a handle to stop it.

use crate::api::{self, ApiState};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::handlers::Handlers;
use crate::mesh::Mesh;
use crate::mesh::membership::{Membership, MembershipConfig};
use crate::mesh::seal::ClusterSecret;
use crate::names::Namespace;
use crate::proto::{
    collection_repo_server::CollectionRepoServer,
    collection_service_server::CollectionServiceServer,
    collective_dispatcher_server::CollectiveDispatcherServer,
    collector_registry_server::CollectorRegistryServer,
};
use crate::registry::Registry;
use crate::store::{Catalog, Options, catalog};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::oneshot;
use tonic::transport::server::TcpIncoming;

/// The gRPC services a node serves (full names).
pub const SERVICES: &[&str] = &[
    "collector.v1.CollectorRegistry",
    "collector.v1.CollectionService",
    "collector.v1.CollectionRepo",
    "collector.v1.CollectiveDispatcher",
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// Starts nodes.
pub struct Node;

/// The full gRPC name of a service value.
fn name_of<S: tonic::server::NamedService>(_: &S) -> &'static str {
    S::NAME
}

/// A running node.
pub struct NodeHandle {
    /// The address the node listens on (the real port when 0 was asked).
    pub addr: SocketAddr,
    /// This node's persistent id (UUIDv7).
    pub node_id: String,
    /// The data directory.
    pub data_dir: PathBuf,
    /// The bootstrap operator key's file, when there is one.
    pub operator_key: Option<crate::auth::keys::Bootstrap>,
    /// Whether the node was given a cluster secret (without one it forms
    /// no mesh).
    pub meshed: bool,
    /// Whether the port serves TLS.
    pub tls: bool,
    shutdown: Option<oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<std::result::Result<(), tonic::transport::Error>>,
    catalog: Arc<Catalog>,
    handlers: Arc<Handlers>,
    mesh: Arc<Mesh>,
    _lock: std::fs::File,
}

/// Binds the gRPC port and the gossip socket on the same port number (UDP).
/// With port 0 the UDP twin of the port picked may be taken: pick again.
async fn bind(
    config: &Config,
    secret: &ClusterSecret,
    node_id: &str,
) -> Result<(TcpIncoming, Arc<Membership>)> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let incoming = TcpIncoming::bind(config.listen)
            .map_err(|e| Error::unavailable(format!("cannot listen on {}: {e}", config.listen)))?
            .with_nodelay(Some(true));
        let bound = incoming.local_addr()?;
        let address = match config.advertise {
            Some(a) => a,
            None if bound.ip().is_unspecified() => {
                return Err(Error::invalid(format!(
                    "listening on {bound}: give --advertise HOST:PORT, the address peers and clients reach this node at"
                )));
            }
            None => bound,
        };
        let membership = Membership::start(MembershipConfig {
            node_id: node_id.to_string(),
            address,
            gossip_listen: bound,
            seeds: config.join.clone(),
            cluster_id: config.cluster_id.clone(),
            gossip_key: Some(crate::mesh::seal::gossip_key(secret)),
            gossip_interval: config.gossip_interval,
            started_us: crate::util::now_us(),
        })
        .await;
        match membership {
            Ok(m) => return Ok((incoming, m)),
            Err(e) if config.listen.port() == 0 && attempt < crate::limits::BIND_ATTEMPTS => {
                tracing::debug!(error = %e, "gossip port taken; picking another port");
            }
            Err(e) => return Err(e),
        }
    }
}

fn node_id(dir: &Path) -> Result<String> {
    let path = dir.join("node_id");
    match std::fs::read_to_string(&path) {
        Ok(s) if uuid::Uuid::parse_str(s.trim()).is_ok() => Ok(s.trim().to_string()),
        Ok(_) => Err(Error::failed_precondition(format!(
            "{} is not a UUID; fix or remove it",
            path.display()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = uuid::Uuid::now_v7().to_string();
            let tmp = dir.join("node_id.tmp");
            std::fs::write(&tmp, &id)?;
            std::fs::File::open(&tmp)?.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            Ok(id)
        }
        Err(e) => Err(e.into()),
    }
}

fn lock_dir(dir: &Path) -> Result<std::fs::File> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("LOCK"))?;
    f.try_lock().map_err(|_| {
        Error::failed_precondition(format!(
            "data dir {} is in use by another node; give each node its own --data-dir",
            dir.display()
        ))
    })?;
    Ok(f)
}

impl Node {
    /// Opens the data dir, binds the port and starts serving.
    pub async fn start(config: Config) -> Result<NodeHandle> {
        config.validate()?;
        let metrics = match config.metrics {
            true => Some(crate::telemetry::install()?),
            false => None,
        };
        let default_namespace = Namespace::new(&config.namespace)?;
        std::fs::create_dir_all(&config.data_dir)?;
        let data_dir = config.data_dir.canonicalize()?;
        let lock = lock_dir(&data_dir)?;
        let node_id = node_id(&data_dir)?;

        let options = Options {
            sync_full: config.sync_full,
            cache_bytes: config.record_cache_bytes,
            query_timeout: config.query_timeout,
            max_file_bytes: config.max_file_bytes,
            max_open_collections: config.max_open_collections,
            idle_close: config.collection_idle_close,
        };
        let system = catalog::open_system(&data_dir, options).await?;
        let registry = Arc::new(Registry::load(system.protos.clone()).await?);
        let types: Arc<dyn crate::store::Types> = registry.clone();
        let quotas = crate::quotas::Quotas::load(config.quotas, system.quotas.clone()).await?;
        let catalog = Arc::new(
            Catalog::load(data_dir.clone(), options, types, quotas.clone(), &system).await?,
        );
        // Ends with the catalogue.
        drop(quotas.measure_storage(Arc::downgrade(&catalog)));
        let handlers = Handlers::load(
            crate::wasm::Maxima {
                timeout: config.max_handler_timeout,
                memory_bytes: config.max_handler_memory_bytes,
                budget_bytes: config.handler_memory_budget_bytes,
            },
            data_dir.clone(),
            registry.clone(),
            catalog.clone(),
            system.services.clone(),
            node_id.clone(),
            quotas.clone(),
        )
        .await?;

        let backups = crate::backups::Backups::open(
            &data_dir,
            system.backups.clone(),
            catalog.clone(),
            registry.clone(),
            node_id.clone(),
        )
        .await?;
        backups.start_scheduler();
        let transfers = crate::transfers::Transfers::open(
            &data_dir,
            backups.clone(),
            config.transfer_bytes_per_sec,
        )?;

        let keys = crate::auth::Keys::load(system.keys.clone()).await?;
        let audit = crate::audit::Audit::start(
            system.audit.clone(),
            node_id.clone(),
            config.audit_max_entries,
        );
        let key_file = config
            .operator_key_file
            .clone()
            .unwrap_or_else(|| data_dir.join(crate::limits::OPERATOR_KEY_FILE));
        let bootstrap = keys.bootstrap(&key_file).await?;
        if let Some(b) = &bootstrap {
            tracing::info!(path = %b.path.display(), created = b.created, "operator key");
        }

        // Without a cluster secret the node's own random one: its gossip
        // and peer calls are then sealed with a key no other node holds.
        let secret = config
            .cluster_secret
            .clone()
            .unwrap_or_else(ClusterSecret::random);
        let (incoming, membership) = bind(&config, &secret, &node_id).await?;
        let addr = incoming.local_addr()?;
        let peer_key = crate::mesh::seal::PeerKey::of(&secret);
        let (tls, peer_tls) = match &config.tls {
            None => (None, None),
            Some(files) => {
                let ca_path = config.tls_ca.clone().unwrap_or_else(|| files.cert.clone());
                let read = |p: PathBuf, flag: &'static str| async move {
                    tokio::fs::read(&p)
                        .await
                        .map_err(|e| Error::invalid(format!("{flag} {}: {e}", p.display())))
                };
                let ca = read(ca_path, "--tls-ca").await?;
                let client_ca = match &config.tls_client_ca {
                    Some(p) => Some(read(p.clone(), "--tls-client-ca").await?),
                    None => None,
                };
                // Asked for a certificate, a member shows its own.
                let peer = match client_ca {
                    Some(_) => api::tls::client_config_with_identity(
                        &ca,
                        &read(files.cert.clone(), "--tls-cert").await?,
                        &read(files.key.clone(), "--tls-key").await?,
                    ),
                    None => api::tls::client_config(&ca),
                };
                (
                    Some(api::tls::acceptor(files.clone(), client_ca.as_deref()).await?),
                    Some(peer),
                )
            }
        };
        let peers = Arc::new(api::peers::GrpcLink::new(
            config.max_message_bytes,
            membership.subscribe(),
            Some(peer_key),
            peer_tls,
        ));
        let mesh = Mesh::start(
            membership,
            handlers.clone(),
            catalog.clone(),
            registry.clone(),
            keys.clone(),
            quotas.overrides().clone(),
            peers.clone(),
        );

        let state = Arc::new(ApiState {
            catalog: catalog.clone(),
            registry,
            handlers: handlers.clone(),
            mesh: mesh.clone(),
            peers,
            default_namespace,
            node_id: node_id.clone(),
            address: mesh.address(),
            info: crate::node_info::NodeInfo::starting(data_dir.clone()),
            backups,
            transfers,
            keys: keys.clone(),
            meshed: config.cluster_secret.is_some(),
            quotas,
        });
        let max = config.max_message_bytes;
        let (health_reporter, health) = tonic_health::server::health_reporter();
        let reflection = api::reflection::Reflection::new(state.clone());
        let mut routes = tonic::service::Routes::builder();
        let mut served: Vec<&'static str> = Vec::new();
        // Adds a service and records its name, so health (and the banner)
        // cannot miss one; the API services get the message limit both ways.
        macro_rules! add {
            (limited $svc:expr) => {
                add!(
                    $svc.max_decoding_message_size(max)
                        .max_encoding_message_size(max)
                )
            };
            ($svc:expr) => {{
                let svc = $svc;
                served.push(name_of(&svc));
                routes.add_service(svc);
            }};
        }
        add!(limited CollectorRegistryServer::new(api::registry::RegistryApi(state.clone())));
        add!(limited CollectionServiceServer::new(api::collection::CollectionApi(state.clone())));
        add!(limited CollectionRepoServer::new(api::repo::RepoApi(state.clone())));
        add!(limited CollectiveDispatcherServer::new(api::dispatcher::DispatcherApi(state.clone())));
        add!(health);
        add!(api::reflection::v1::server(reflection.clone()));
        add!(api::reflection::v1alpha::server(reflection));
        assert_eq!(served, SERVICES, "node::SERVICES names every service added");
        for name in SERVICES {
            health_reporter
                .set_service_status(*name, tonic_health::ServingStatus::Serving)
                .await;
        }
        // While gossip is stopped the node is out of the mesh: health says
        // so (overall and per service) until the membership restarts it.
        {
            let mut up = mesh.membership().up();
            let reporter = health_reporter.clone();
            tokio::spawn(async move {
                while up.changed().await.is_ok() {
                    let status = if *up.borrow_and_update() {
                        tonic_health::ServingStatus::Serving
                    } else {
                        tonic_health::ServingStatus::NotServing
                    };
                    for name in std::iter::once(&"").chain(SERVICES) {
                        reporter.set_service_status(*name, status).await;
                    }
                }
            });
        }
        // Registered methods are served on their own paths by the fallback;
        // the metrics and the console on theirs (HTTP/1.1 too, as Prometheus
        // and browsers call).
        let scraped = state.clone();
        let routes = tonic::service::Routes::from(
            routes
                .routes()
                .into_axum_router()
                .route(
                    api::metrics::PATH,
                    axum::routing::get({
                        let metrics = metrics.clone();
                        move || api::metrics::scrape(scraped.clone(), metrics.clone())
                    }),
                )
                .merge(crate::console::router(
                    state.clone(),
                    metrics.clone(),
                    config.tls.is_some(),
                ))
                .fallback_service(api::dynamic::RegisteredMethods::new(state.clone(), max)),
        );

        let (tx, rx) = oneshot::channel::<()>();
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .max_concurrent_streams(crate::limits::MAX_STREAMS_PER_CONNECTION)
                // Windows that grow with the connection's bandwidth-delay
                // product: a streamed file is not held to a fixed 1 MiB.
                .http2_adaptive_window(Some(true))
                // A 1 MiB file chunk in one frame (HTTP/2's default is 16 KiB).
                .max_frame_size(Some(1 << 20))
                .accept_http1(true)
                .layer(api::call_metrics::layer(&node_id))
                .layer(api::edge::layer())
                .layer(api::gate::layer(peer_key, keys, audit))
                .add_routes(routes)
                .serve_with_incoming_shutdown(
                    api::tls::incoming(api::connections::Connections::new(incoming), tls),
                    async {
                        let _ = rx.await;
                    },
                ),
        );
        tracing::info!(%addr, %node_id, data_dir = %data_dir.display(), "node serving");
        Ok(NodeHandle {
            addr,
            node_id,
            data_dir,
            operator_key: bootstrap,
            meshed: config.cluster_secret.is_some(),
            tls: config.tls.is_some(),
            shutdown: Some(tx),
            server,
            catalog,
            handlers,
            mesh,
            _lock: lock,
        })
    }
}

impl NodeHandle {
    /// The node's collections (for embedding and benchmarks).
    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    /// The mesh as this node sees it.
    pub fn mesh(&self) -> &Arc<Mesh> {
        &self.mesh
    }

    /// Handler components compiled from Wasm since start (the others were
    /// loaded from the compiled cache).
    pub fn components_compiled(&self) -> u64 {
        self.handlers.compiled_count()
    }

    /// Stops accepting calls, lets in-flight calls and queued writes finish,
    /// and closes every collection.
    pub async fn shutdown(mut self) -> Result<()> {
        self.mesh.shutdown().await;
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let served = (&mut self.server).await;
        let catalog = self.catalog.clone();
        tokio::task::spawn_blocking(move || catalog.close_all())
            .await
            .map_err(|e| Error::internal(format!("close task failed: {e}")))?;
        match served {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Error::internal(format!("server: {e}"))),
            Err(e) => Err(Error::internal(format!("server task: {e}"))),
        }
    }
}
