//! Membership and failure detection on chitchat (scuttlebutt gossip with a
//! phi-accrual failure detector, as run by Quickwit). Each node gossips over
//! UDP on the same port number as its gRPC address and publishes small
//! key/values about itself (`view::keys`); large things (components,
//! descriptors) are fetched over gRPC by content hash.

use super::view::{HandlerVersion, Member, MemberState, Owned, View, keys};
use crate::error::{Error, Result};
use chitchat::transport::UdpTransport;
use chitchat::{ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How a node takes part in the mesh.
#[derive(Debug, Clone)]
pub struct MembershipConfig {
    /// This node's persistent id.
    pub node_id: String,
    /// The node's gRPC address as peers reach it; gossip uses the same
    /// host and port over UDP.
    pub address: SocketAddr,
    /// Where the gossip socket binds (the same port as `address`).
    pub gossip_listen: SocketAddr,
    /// host:port of members to join at start.
    pub seeds: Vec<String>,
    /// Nodes gossip only with nodes of the same cluster id.
    pub cluster_id: String,
    /// Seals gossip with this key (`seal::gossip_key` of the cluster
    /// secret); None gossips in the clear.
    pub gossip_key: Option<super::seal::GossipKey>,
    /// Time between gossip rounds; failure detection scales with it.
    pub gossip_interval: Duration,
    /// Start time of this incarnation (microseconds), its generation.
    pub started_us: i64,
}

use crate::limits::PHI_THRESHOLD;

impl MembershipConfig {
    /// Longest silence before a member is marked dead: the failure detector
    /// ignores heartbeat gaps above `max_interval` (4 gossip intervals), so its
    /// mean interval is bounded by that, and a member is dead after
    /// `PHI_THRESHOLD` mean intervals, noticed at the next gossip round.
    /// Typically a member is marked dead after about PHI_THRESHOLD mean
    /// heartbeat intervals (about 1 s at the 200 ms default, 0.96 s measured
    /// in the SIGSTOP test); never later than this.
    pub fn max_detection_time(&self) -> Duration {
        self.gossip_interval * 4 * PHI_THRESHOLD as u32 + self.gossip_interval
    }
}

/// What a node publishes about itself.
#[derive(Debug, Clone, Copy)]
pub struct Published<'a> {
    /// The collections it owns (only their digest is gossiped).
    pub collections: &'a Arc<Owned>,
    /// The handler versions it has.
    pub handlers: &'a [HandlerVersion],
    /// The API keys it holds (hashes only).
    pub api_keys: &'a [crate::proto::StoredKey],
    /// The quota overrides it holds.
    pub quotas: &'a [crate::proto::NamespaceQuota],
}

/// This node's membership: the gossip server and the view built from it.
/// A supervisor restarts the gossip server if it ever stops (a malformed
/// datagram once tripped an assertion inside chitchat and ended its task,
/// leaving the node answering gRPC but out of the mesh): it logs why,
/// reports `up() == false` (health says NOT_SERVING) until gossip runs
/// again, and republishes what this node had published.
pub struct Membership {
    /// The running gossip server (None once shut down).
    handle: tokio::sync::Mutex<Option<ChitchatHandle>>,
    /// Its state; replaced with the server on a restart.
    chitchat: std::sync::RwLock<Arc<tokio::sync::Mutex<chitchat::Chitchat>>>,
    view: watch::Sender<Arc<View>>,
    up: watch::Sender<bool>,
    /// The key/values last published (republished after a restart).
    published: std::sync::Mutex<BTreeMap<String, String>>,
    /// Each member's collections as last fetched (this node's as last
    /// published), by node id: gossip carries only their digests.
    catalogs: std::sync::Mutex<HashMap<String, Arc<Owned>>>,
    tasks: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
    stopping: std::sync::atomic::AtomicBool,
    config: MembershipConfig,
}

/// Pause before restarting a gossip server that stopped.
const RESTART_BACKOFF: Duration = Duration::from_millis(200);

fn build_view(
    cc: &chitchat::Chitchat,
    self_id: &str,
    catalogs: &std::sync::Mutex<HashMap<String, Arc<Owned>>>,
) -> View {
    let catalogs = catalogs.lock().expect("catalogs lock");
    let live: HashSet<&ChitchatId> = cc.live_nodes().collect();
    let me = cc.self_chitchat_id();
    let mut incarnations = Vec::new();
    for (id, state) in cc.node_states() {
        let Some(address) = state.get(keys::ADDRESS) else {
            // Known from a digest only: its key/values have not arrived yet.
            continue;
        };
        let mut m = Member {
            node_id: id.node_id.to_string(),
            address: address.to_string(),
            state: if id == me {
                MemberState::Myself
            } else if live.contains(id) {
                MemberState::Alive
            } else {
                MemberState::Dead
            },
            started_us: state
                .get(keys::STARTED)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
            collections: catalogs.get(&*id.node_id).cloned().unwrap_or_default(),
            collections_digest: state.get(keys::COLLECTIONS).unwrap_or_default().to_string(),
            handlers: Vec::new(),
            api_keys: Vec::new(),
            quotas: Vec::new(),
        };
        for (k, v) in state.key_values() {
            if let Some(rest) = k.strip_prefix(keys::SERVICE) {
                m.handlers.extend(keys::parse_handler(rest, v));
            } else if k.starts_with(keys::API_KEY) {
                m.api_keys.extend(keys::decoded(v));
            } else if k.starts_with(keys::QUOTA) {
                m.quotas.extend(keys::decoded(v));
            }
        }
        incarnations.push((id.generation_id, m));
    }
    View {
        members: speaking(incarnations),
        self_id: self_id.to_string(),
    }
}

/// One member per node id, out of all the incarnations (generations) the
/// gossip state holds: the newest one confirmed alive speaks; if none is,
/// the newest, as dead.
///
/// A restarted node's new incarnation is known a round or two before the
/// failure detector has the two heartbeats it needs to call it alive, while
/// the old one is still alive until it has been silent long enough. Letting
/// the newest speak regardless showed a node that had just come back as
/// dead for that moment (calls for its data failed UNAVAILABLE right after
/// every view had shown it alive).
fn speaking(incarnations: Vec<(u64, Member)>) -> BTreeMap<String, Member> {
    let mut chosen: BTreeMap<String, (u64, Member)> = BTreeMap::new();
    for (generation, m) in incarnations {
        let better = match chosen.get(&m.node_id) {
            None => true,
            Some((g, cur)) => (m.reachable(), generation) > (cur.reachable(), *g),
        };
        if better {
            chosen.insert(m.node_id.clone(), (generation, m));
        }
    }
    chosen.into_iter().map(|(k, (_, m))| (k, m)).collect()
}

/// Starts a gossip server for `config` as incarnation `generation`,
/// publishing `published` besides the node's address and start time.
async fn launch(
    config: &MembershipConfig,
    generation: u64,
    published: &BTreeMap<String, String>,
) -> Result<ChitchatHandle> {
    let interval = config.gossip_interval;
    let cc_config = ChitchatConfig {
        chitchat_id: ChitchatId::new(config.node_id.clone(), generation, config.address),
        cluster_id: config.cluster_id.clone(),
        gossip_interval: interval,
        listen_addr: config.gossip_listen,
        seed_nodes: config.seeds.clone(),
        failure_detector_config: FailureDetectorConfig {
            phi_threshold: PHI_THRESHOLD,
            sampling_window_size: 100,
            max_interval: interval * 4,
            initial_interval: interval,
            dead_node_grace_period: crate::limits::DEAD_MEMBER_RETENTION,
        },
        marked_for_deletion_grace_period: crate::limits::DEAD_MEMBER_RETENTION,
        catchup_callback: None,
        extra_liveness_predicate: None,
        protocol_version: chitchat::ProtocolVersion::V1,
    };
    let mut initial = vec![
        (keys::ADDRESS.to_string(), config.address.to_string()),
        (keys::STARTED.to_string(), config.started_us.to_string()),
    ];
    initial.extend(published.iter().map(|(k, v)| (k.clone(), v.clone())));
    let spawned = match config.gossip_key {
        Some(key) => {
            let sealed = super::seal::SealedUdp::new(key, config.cluster_id.clone());
            chitchat::spawn_chitchat(cc_config, initial, &sealed).await
        }
        None => chitchat::spawn_chitchat(cc_config, initial, &UdpTransport).await,
    };
    spawned
        .map_err(|e| {
            Error::unavailable(format!(
                "cannot gossip on {}/udp: {e:#}; the mesh uses the gRPC port number over UDP, so it must be free too",
                config.gossip_listen
            ))
        })
}

impl Membership {
    /// Binds the gossip socket and starts gossiping with the seeds.
    pub async fn start(config: MembershipConfig) -> Result<Arc<Self>> {
        let handle = launch(&config, config.started_us.max(0) as u64, &BTreeMap::new()).await?;
        let chitchat = handle.chitchat();
        let catalogs = Default::default();
        let first = build_view(&*chitchat.lock().await, &config.node_id, &catalogs);
        let me = Arc::new(Membership {
            handle: tokio::sync::Mutex::new(Some(handle)),
            chitchat: std::sync::RwLock::new(chitchat),
            view: watch::channel(Arc::new(first)).0,
            up: watch::channel(true).0,
            published: Default::default(),
            catalogs,
            tasks: Default::default(),
            stopping: Default::default(),
            config,
        });
        let refresher = tokio::spawn(Self::refresh(Arc::downgrade(&me)));
        let supervisor = tokio::spawn(Self::supervise(Arc::downgrade(&me)));
        me.tasks
            .lock()
            .expect("tasks lock")
            .extend([refresher, supervisor]);
        tracing::info!(node_id = %me.config.node_id, gossip = %me.config.gossip_listen, seeds = ?me.config.seeds, "mesh membership started");
        Ok(me)
    }

    fn current(&self) -> Arc<tokio::sync::Mutex<chitchat::Chitchat>> {
        self.chitchat.read().expect("chitchat lock").clone()
    }

    /// Keeps the view current: live-set and key changes wake it at once; a
    /// timer catches members turning dead quietly.
    async fn refresh(me: std::sync::Weak<Self>) {
        let mut watching: Option<(Arc<tokio::sync::Mutex<chitchat::Chitchat>>, _)> = None;
        loop {
            let Some(this) = me.upgrade() else { return };
            let cc = this.current();
            let interval = this.config.gossip_interval;
            if !watching.as_ref().is_some_and(|(w, _)| Arc::ptr_eq(w, &cc)) {
                let live = cc.lock().await.live_nodes_watcher();
                watching = Some((cc.clone(), live));
            }
            let next = build_view(&*cc.lock().await, &this.config.node_id, &this.catalogs);
            this.view.send_if_modified(|cur| {
                if cur.members != next.members {
                    *cur = Arc::new(next);
                    true
                } else {
                    false
                }
            });
            drop(this);
            let live = &mut watching.as_mut().expect("set above").1;
            tokio::select! {
                r = live.changed() => if r.is_err() {
                    tokio::time::sleep(interval).await;
                },
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }

    /// Restarts the gossip server whenever it stops, until shutdown.
    async fn supervise(me: std::sync::Weak<Self>) {
        loop {
            let watcher = {
                let Some(this) = me.upgrade() else { return };
                let guard = this.handle.lock().await;
                match guard.as_ref() {
                    Some(h) => h.termination_watcher(),
                    None => return,
                }
            };
            let ended = watcher.await;
            let Some(this) = me.upgrade() else { return };
            if this.stopping.load(std::sync::atomic::Ordering::Acquire) {
                return;
            }
            let why = match ended {
                Ok(()) => "it exited".to_string(),
                Err(e) => format!("{e:#}"),
            };
            tracing::error!(reason = %why, "gossip stopped: this node is out of the mesh (health NOT_SERVING) until it restarts");
            this.up.send_replace(false);
            loop {
                tokio::time::sleep(RESTART_BACKOFF).await;
                if this.stopping.load(std::sync::atomic::Ordering::Acquire) {
                    return;
                }
                let published = this.published.lock().expect("published lock").clone();
                // A new incarnation: peers drop the old one's state, which
                // may be what the bad datagram corrupted.
                let generation = crate::util::now_us().max(0) as u64;
                match launch(&this.config, generation, &published).await {
                    Ok(h) => {
                        *this.chitchat.write().expect("chitchat lock") = h.chitchat();
                        *this.handle.lock().await = Some(h);
                        this.up.send_replace(true);
                        tracing::warn!("gossip restarted");
                        break;
                    }
                    Err(e) => {
                        tracing::error!(error = %e.message, "restarting gossip failed; retrying")
                    }
                }
            }
        }
    }

    /// False while gossip is stopped (the node is then out of the mesh).
    pub fn up(&self) -> watch::Receiver<bool> {
        self.up.subscribe()
    }

    /// How many members gossip tracks, this node and dead or unnamed ones
    /// included (at most `MAX_MESH_MEMBERS`).
    pub async fn tracked(&self) -> usize {
        self.current().lock().await.node_states().len()
    }

    /// The mesh as this node sees it now.
    pub fn view(&self) -> Arc<View> {
        self.view.borrow().clone()
    }

    /// Notified whenever the view changes.
    pub fn subscribe(&self) -> watch::Receiver<Arc<View>> {
        self.view.subscribe()
    }

    /// The membership settings.
    pub fn config(&self) -> &MembershipConfig {
        &self.config
    }

    /// Replaces what this node publishes about itself: the collections it
    /// owns, the handler versions, API keys and quota overrides it has.
    pub async fn publish(&self, about: Published<'_>) {
        self.catalogs
            .lock()
            .expect("catalogs lock")
            .insert(self.config.node_id.clone(), about.collections.clone());
        let wanted: BTreeMap<String, String> = std::iter::once((
            keys::COLLECTIONS.to_string(),
            about.collections.digest().to_string(),
        ))
        .chain(about.handlers.iter().map(keys::handler))
        .chain(about.api_keys.iter().map(keys::api_key))
        .chain(about.quotas.iter().map(keys::quota))
        .collect();
        *self.published.lock().expect("published lock") = wanted.clone();
        let chitchat = self.current();
        let next = {
            let mut cc = chitchat.lock().await;
            let state = cc.self_node_state();
            let stale: Vec<String> = state
                .key_values()
                .map(|(k, _)| k)
                .filter(|k| {
                    (k.starts_with(keys::SERVICE) || k.starts_with(keys::API_KEY))
                        && !wanted.contains_key(*k)
                })
                .map(str::to_string)
                .collect();
            for k in stale {
                state.delete(&k);
            }
            for (k, v) in &wanted {
                state.set(k, v);
            }
            build_view(&cc, &self.config.node_id, &self.catalogs)
        };
        self.view.send_replace(Arc::new(next));
    }

    /// Takes in the collections member `node_id` owns (fetched because its
    /// gossiped digest changed), and rebuilds the view with them.
    pub async fn learn(&self, node_id: &str, owned: Arc<Owned>) {
        self.catalogs
            .lock()
            .expect("catalogs lock")
            .insert(node_id.to_string(), owned);
        let chitchat = self.current();
        let next = build_view(
            &*chitchat.lock().await,
            &self.config.node_id,
            &self.catalogs,
        );
        self.view.send_replace(Arc::new(next));
    }

    /// Joins the mesh of the node at `address`: gossips with it until it is
    /// seen alive, or fails after `timeout`.
    pub async fn connect(&self, address: &str, timeout: Duration) -> Result<()> {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host(address)
            .await
            .map_err(|e| Error::invalid(format!("address {address:?}: {e}; give host:port")))?
            .collect();
        let target = *addrs
            .first()
            .ok_or_else(|| Error::invalid(format!("address {address:?} resolves to nothing")))?;
        if target == self.config.address {
            return Ok(());
        }
        let mut rx = self.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        let seen = |v: &View| {
            v.members.values().any(|m| {
                m.state == MemberState::Alive
                    && m.address.parse::<SocketAddr>().ok() == Some(target)
            })
        };
        loop {
            if seen(&rx.borrow_and_update()) {
                return Ok(());
            }
            if let Some(h) = self.handle.lock().await.as_ref() {
                h.gossip(target)
                    .map_err(|e| Error::internal(format!("gossip: {e}")))?;
            }
            let wait = tokio::time::sleep(self.config.gossip_interval);
            tokio::select! {
                _ = rx.changed() => {}
                _ = wait => {}
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(Error::unavailable(format!(
                        "no gossip answer from {address} within {timeout:?}: is a collector node listening there, with the same cluster id, and is its port open to UDP?"
                    )));
                }
            }
        }
    }

    /// Leaves the mesh (peers then see this node go dead).
    pub async fn shutdown(&self) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::Release);
        for t in self.tasks.lock().expect("tasks lock").drain(..) {
            t.abort();
        }
        if let Some(h) = self.handle.lock().await.take() {
            let _ = h.shutdown().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn incarnation(generation: u64, state: MemberState, address: &str) -> (u64, Member) {
        (
            generation,
            Member {
                node_id: "c".into(),
                address: address.into(),
                state,
                started_us: generation as i64,
                collections: Default::default(),
                collections_digest: String::new(),
                handlers: Vec::new(),
                api_keys: Vec::new(),
                quotas: Vec::new(),
            },
        )
    }

    fn speaker(incarnations: Vec<(u64, Member)>) -> (MemberState, String) {
        let m = speaking(incarnations).remove("c").expect("c is listed");
        (m.state, m.address)
    }

    #[test]
    fn the_newest_live_incarnation_speaks() {
        use MemberState::{Alive, Dead};
        // Back after a restart, both confirmed: the new one.
        assert_eq!(
            speaker(vec![
                incarnation(1, Alive, "old"),
                incarnation(2, Alive, "new")
            ]),
            (Alive, "new".into())
        );
        // The old one declared dead, the new one alive, in either order.
        assert_eq!(
            speaker(vec![
                incarnation(2, Alive, "new"),
                incarnation(1, Dead, "old")
            ]),
            (Alive, "new".into())
        );
        // Just restarted: the new one is not confirmed yet while the old is
        // still alive; the node must not look dead meanwhile.
        assert_eq!(
            speaker(vec![
                incarnation(1, Alive, "old"),
                incarnation(2, Dead, "new")
            ]),
            (Alive, "old".into())
        );
        // None alive: the newest, as dead.
        assert_eq!(
            speaker(vec![
                incarnation(2, Dead, "new"),
                incarnation(1, Dead, "old")
            ]),
            (Dead, "new".into())
        );
        assert_eq!(
            speaker(vec![incarnation(1, MemberState::Myself, "me")]),
            (MemberState::Myself, "me".into())
        );
    }
}
