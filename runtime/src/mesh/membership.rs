//! Membership and failure detection on chitchat (scuttlebutt gossip with a
//! phi-accrual failure detector, as run by Quickwit). Each node gossips over
//! UDP on the same port number as its gRPC address and publishes small
//! key/values about itself (`view::keys`); large things (components,
//! descriptors) are fetched over gRPC by content hash.

use super::view::{HandlerVersion, Member, MemberState, OwnedCollection, View, keys};
use crate::error::{Error, Result};
use chitchat::transport::UdpTransport;
use chitchat::{ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig};
use std::collections::{BTreeMap, HashSet};
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

/// This node's membership: the gossip server and the view built from it.
pub struct Membership {
    handle: tokio::sync::Mutex<Option<ChitchatHandle>>,
    chitchat: Arc<tokio::sync::Mutex<chitchat::Chitchat>>,
    view: watch::Sender<Arc<View>>,
    refresher: tokio::task::JoinHandle<()>,
    config: MembershipConfig,
}

fn build_view(cc: &chitchat::Chitchat, self_id: &str) -> View {
    let live: HashSet<&ChitchatId> = cc.live_nodes().collect();
    let me = cc.self_chitchat_id();
    let mut members: BTreeMap<String, (u64, Member)> = BTreeMap::new();
    for (id, state) in cc.node_states() {
        // A restarted node has a new generation; older ones linger as dead
        // until the grace period ends, and the newest incarnation speaks.
        if members
            .get(&*id.node_id)
            .is_some_and(|(g, _)| *g > id.generation_id)
        {
            continue;
        }
        let Some(address) = state.get(keys::ADDRESS) else {
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
            collections: Vec::new(),
            handlers: Vec::new(),
        };
        for (k, v) in state.key_values() {
            if let Some(rest) = k.strip_prefix(keys::COLLECTION) {
                m.collections.extend(keys::parse_collection(rest, v));
            } else if let Some(rest) = k.strip_prefix(keys::SERVICE) {
                m.handlers.extend(keys::parse_handler(rest, v));
            }
        }
        members.insert(m.node_id.clone(), (id.generation_id, m));
    }
    View {
        members: members.into_iter().map(|(k, (_, m))| (k, m)).collect(),
        self_id: self_id.to_string(),
    }
}

impl Membership {
    /// Binds the gossip socket and starts gossiping with the seeds.
    pub async fn start(config: MembershipConfig) -> Result<Arc<Self>> {
        let chitchat_id = ChitchatId::new(
            config.node_id.clone(),
            config.started_us.max(0) as u64,
            config.address,
        );
        let interval = config.gossip_interval;
        let cc_config = ChitchatConfig {
            chitchat_id,
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
        let initial = vec![
            (keys::ADDRESS.to_string(), config.address.to_string()),
            (keys::STARTED.to_string(), config.started_us.to_string()),
        ];
        let handle = chitchat::spawn_chitchat(cc_config, initial, &UdpTransport)
            .await
            .map_err(|e| {
                Error::unavailable(format!(
                    "cannot gossip on {}/udp: {e:#}; the mesh uses the gRPC port number over UDP, so it must be free too",
                    config.gossip_listen
                ))
            })?;
        let chitchat = handle.chitchat();
        let first = build_view(&*chitchat.lock().await, &config.node_id);
        let (view, _) = watch::channel(Arc::new(first));
        let refresher = {
            let (chitchat, view, self_id) =
                (chitchat.clone(), view.clone(), config.node_id.clone());
            let mut live = chitchat.lock().await.live_nodes_watcher();
            tokio::spawn(async move {
                loop {
                    // Live-set and key changes wake us at once; the timer
                    // catches members turning dead quietly.
                    tokio::select! {
                        r = live.changed() => if r.is_err() { break },
                        _ = tokio::time::sleep(interval) => {}
                    }
                    let next = build_view(&*chitchat.lock().await, &self_id);
                    view.send_if_modified(|cur| {
                        if cur.members != next.members {
                            *cur = Arc::new(next);
                            true
                        } else {
                            false
                        }
                    });
                }
            })
        };
        tracing::info!(node_id = %config.node_id, gossip = %config.gossip_listen, seeds = ?config.seeds, "mesh membership started");
        Ok(Arc::new(Membership {
            handle: tokio::sync::Mutex::new(Some(handle)),
            chitchat,
            view,
            refresher,
            config,
        }))
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
    /// owns and the handler versions it has.
    pub async fn publish(&self, collections: &[OwnedCollection], handlers: &[HandlerVersion]) {
        let wanted: BTreeMap<String, String> = collections
            .iter()
            .map(keys::collection)
            .chain(handlers.iter().map(keys::handler))
            .collect();
        let next = {
            let mut cc = self.chitchat.lock().await;
            let state = cc.self_node_state();
            let stale: Vec<String> = state
                .key_values()
                .map(|(k, _)| k)
                .filter(|k| {
                    (k.starts_with(keys::COLLECTION) || k.starts_with(keys::SERVICE))
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
            build_view(&cc, &self.config.node_id)
        };
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
        self.refresher.abort();
        if let Some(h) = self.handle.lock().await.take() {
            let _ = h.shutdown().await;
        }
    }
}
