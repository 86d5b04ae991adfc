//! The cluster secret's two uses, each with its own derived key. Peer
//! calls carry a proof made with `PeerKey` (checked by `api::gate`).
//!
//! Sealed gossip: every chitchat datagram travels in an XChaCha20-Poly1305
//! box keyed from the cluster secret (`--cluster-secret-file`), so a node
//! without the secret can neither read the mesh's gossip nor inject
//! members, ownership claims or registrations: what does not open is
//! dropped before chitchat decodes a byte of it, with a warning at most
//! every `WARN_EVERY`.
//!
//! A datagram is `MAGIC` ‖ a random 24-byte nonce ‖ the sealed (time it
//! was sealed ‖ envelope); the cluster id is the associated data, so a box
//! sealed for another cluster does not open either. A recorded datagram
//! cannot be replayed: one sealed more than `GOSSIP_REPLAY_WINDOW_MS` from
//! the receiver's clock is dropped, and so is a nonce already seen within
//! that window (`Replays`). Peer calls over plain gRPC (no `--tls-cert`)
//! can be read, and their proof replayed within `PEER_PROOF_SKEW_MS`, by
//! whoever sees the traffic: serve TLS where the network is not trusted.

use async_trait::async_trait;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use chitchat::ChitchatEnvelope;
use chitchat::transport::{RecvOutcome, SendOutcome, Socket, Transport};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Marks a sealed datagram (and its format's version).
const MAGIC: &[u8; 4] = b"CGS2";
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// The sealing time (ms since the epoch, little-endian) before the envelope.
const TIME_LEN: usize = 8;
/// The largest datagram a peer sends.
const MAX_DATAGRAM: usize = 65_507;
/// Least time between two warnings about datagrams that did not open.
const WARN_EVERY: Duration = Duration::from_secs(10);

const _: () = assert!(MAGIC.len() + NONCE_LEN + TAG_LEN + TIME_LEN <= chitchat::SEAL_OVERHEAD);

/// A cluster's secret; its `Debug` form does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterSecret(pub Vec<u8>);

impl ClusterSecret {
    /// A secret no other node holds: a node given none forms no mesh, since
    /// its gossip and peer calls are then sealed with a key nobody shares.
    pub fn random() -> Self {
        use chacha20poly1305::aead::rand_core::RngCore;
        let mut b = vec![0u8; 32];
        chacha20poly1305::aead::OsRng.fill_bytes(&mut b);
        ClusterSecret(b)
    }
}

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClusterSecret({} bytes)", self.0.len())
    }
}

/// The key gossip is sealed with; its `Debug` form does not show it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct GossipKey([u8; 32]);

impl std::fmt::Debug for GossipKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GossipKey(..)")
    }
}

/// The gossip key of a cluster secret (blake3's key derivation, so the
/// secret itself is never a key of anything else).
pub fn gossip_key(secret: &ClusterSecret) -> GossipKey {
    GossipKey(blake3::derive_key(
        "collector 2026-12 gossip seal v1",
        &secret.0,
    ))
}

/// The key a node proves with that a gRPC call comes from a member (see
/// `api::gate`); its `Debug` form does not show it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PeerKey([u8; 32]);

impl std::fmt::Debug for PeerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerKey(..)")
    }
}

use crate::limits::{GOSSIP_REPLAY_WINDOW_MS, MAX_REMEMBERED_NONCES, PEER_PROOF_SKEW_MS};

impl PeerKey {
    /// The peer-call key of a cluster secret.
    pub fn of(secret: &ClusterSecret) -> Self {
        PeerKey(blake3::derive_key(
            "collector 2026-12 peer calls v1",
            &secret.0,
        ))
    }

    /// A proof for a call made at `now_ms`: `<ms>.<keyed blake3 of it, hex>`.
    pub fn proof(&self, now_ms: i64) -> String {
        let t = now_ms.to_string();
        format!("{t}.{}", blake3::keyed_hash(&self.0, t.as_bytes()).to_hex())
    }

    /// True if `proof` was made with this key within `PEER_PROOF_SKEW_MS`
    /// of `now_ms` (compared in constant time).
    pub fn verify(&self, proof: &str, now_ms: i64) -> bool {
        let Some((t, mac)) = proof.split_once('.') else {
            return false;
        };
        let (Ok(at), Ok(mac)) = (t.parse::<i64>(), blake3::Hash::from_hex(mac)) else {
            return false;
        };
        // blake3::Hash's equality is constant-time.
        (now_ms - at).abs() <= PEER_PROOF_SKEW_MS
            && blake3::keyed_hash(&self.0, t.as_bytes()) == mac
    }
}

/// `plain` sealed at `at_ms` as a datagram: `MAGIC` ‖ nonce ‖ ciphertext
/// of (`at_ms` ‖ `plain`) and tag.
fn seal(cipher: &XChaCha20Poly1305, aad: &[u8], at_ms: i64, plain: &[u8]) -> Option<Vec<u8>> {
    let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
    let mut msg = Vec::with_capacity(TIME_LEN + plain.len());
    msg.extend_from_slice(&at_ms.to_le_bytes());
    msg.extend_from_slice(plain);
    let sealed = cipher.encrypt(&nonce, Payload { msg: &msg, aad }).ok()?;
    let mut datagram = Vec::with_capacity(MAGIC.len() + NONCE_LEN + sealed.len());
    datagram.extend_from_slice(MAGIC);
    datagram.extend_from_slice(&nonce);
    datagram.extend_from_slice(&sealed);
    Some(datagram)
}

/// What a sealed datagram holds: its nonce, when it was sealed, and the
/// plain envelope; or why it does not open.
fn open(
    cipher: &XChaCha20Poly1305,
    aad: &[u8],
    datagram: &[u8],
) -> Result<([u8; NONCE_LEN], i64, Vec<u8>), &'static str> {
    let rest = datagram
        .strip_prefix(MAGIC)
        .ok_or("not sealed (an unauthenticated node, or a forgery)")?;
    if rest.len() < NONCE_LEN + TAG_LEN + TIME_LEN {
        return Err("too short to be sealed");
    }
    let (nonce, sealed) = rest.split_at(NONCE_LEN);
    let mut plain = cipher
        .decrypt(XNonce::from_slice(nonce), Payload { msg: sealed, aad })
        .map_err(|_| "does not open with this cluster's secret")?;
    let at = i64::from_le_bytes(plain[..TIME_LEN].try_into().expect("TIME_LEN bytes"));
    plain.drain(..TIME_LEN);
    Ok((nonce.try_into().expect("NONCE_LEN bytes"), at, plain))
}

fn now_ms() -> i64 {
    crate::util::now_us() / 1000
}

/// The nonces of datagrams taken within the replay window, so that a
/// recorded datagram is taken once at most.
#[derive(Default)]
struct Replays {
    seen: std::collections::HashSet<[u8; NONCE_LEN]>,
    /// In the order they arrived, with when.
    order: std::collections::VecDeque<(Instant, [u8; NONCE_LEN])>,
}

impl Replays {
    /// Takes a datagram sealed at `at_ms` with `nonce`, or says why not.
    fn admit(
        &mut self,
        nonce: [u8; NONCE_LEN],
        at_ms: i64,
        now_ms: i64,
    ) -> Result<(), &'static str> {
        if (now_ms - at_ms).abs() > GOSSIP_REPLAY_WINDOW_MS {
            return Err("sealed too long ago or ahead (a replay, or clocks too far apart)");
        }
        // A datagram sealed within the window of its arrival can be
        // replayed up to two windows after it arrived; then its time alone
        // refuses it.
        let keep = Duration::from_millis(2 * GOSSIP_REPLAY_WINDOW_MS as u64);
        while let Some((t, n)) = self.order.front() {
            if t.elapsed() <= keep && self.order.len() < MAX_REMEMBERED_NONCES {
                break;
            }
            self.seen.remove(n);
            self.order.pop_front();
        }
        if !self.seen.insert(nonce) {
            return Err("a replay of a datagram already taken");
        }
        self.order.push_back((Instant::now(), nonce));
        Ok(())
    }
}

/// Seals and opens datagrams the way members do: for tools and tests that
/// speak gossip as a member (e.g. to check what a malformed one does).
pub struct Sealer {
    cipher: XChaCha20Poly1305,
    aad: Vec<u8>,
}

impl Sealer {
    /// Seals with the key of `secret` for cluster `cluster_id`.
    pub fn new(secret: &ClusterSecret, cluster_id: &str) -> Self {
        Sealer {
            cipher: XChaCha20Poly1305::new(&gossip_key(secret).0.into()),
            aad: cluster_id.as_bytes().to_vec(),
        }
    }

    /// `plain` (a serialised chitchat envelope) as a datagram sealed now.
    pub fn seal(&self, plain: &[u8]) -> Vec<u8> {
        self.seal_at(now_ms(), plain)
    }

    /// `plain` as a datagram sealed at `at_ms` (ms since the epoch).
    pub fn seal_at(&self, at_ms: i64, plain: &[u8]) -> Vec<u8> {
        seal(&self.cipher, &self.aad, at_ms, plain).expect("a datagram-sized payload seals")
    }

    /// What a sealed datagram holds; None if it does not open.
    pub fn open(&self, datagram: &[u8]) -> Option<Vec<u8>> {
        open(&self.cipher, &self.aad, datagram)
            .ok()
            .map(|(_, _, p)| p)
    }
}

/// A chitchat transport over UDP that seals what it sends and drops what
/// does not open.
pub struct SealedUdp {
    key: GossipKey,
    cluster_id: String,
}

impl SealedUdp {
    /// Seals with `key` (see `gossip_key`) for cluster `cluster_id`.
    pub fn new(key: GossipKey, cluster_id: String) -> Self {
        SealedUdp { key, cluster_id }
    }
}

#[async_trait]
impl Transport for SealedUdp {
    async fn open(&self, listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let socket = tokio::net::UdpSocket::bind(listen_addr).await?;
        Ok(Box::new(SealedSocket {
            socket,
            cipher: XChaCha20Poly1305::new(&self.key.0.into()),
            aad: self.cluster_id.clone().into_bytes(),
            plain: Vec::with_capacity(MAX_DATAGRAM),
            buf: vec![0; MAX_DATAGRAM + 1].into_boxed_slice(),
            replays: Replays::default(),
            dropped: 0,
            last_warn: None,
        }))
    }
}

struct SealedSocket {
    socket: tokio::net::UdpSocket,
    cipher: XChaCha20Poly1305,
    aad: Vec<u8>,
    plain: Vec<u8>,
    buf: Box<[u8]>,
    replays: Replays,
    /// Datagrams dropped since the last warning.
    dropped: u64,
    last_warn: Option<Instant>,
}

impl SealedSocket {
    /// The envelope in the first `n` bytes of the buffer, if they open, are
    /// not a replay, and decode.
    fn open_datagram(&mut self, n: usize) -> Result<ChitchatEnvelope, &'static str> {
        let (nonce, at, plain) = open(&self.cipher, &self.aad, &self.buf[..n])?;
        let envelope = ChitchatEnvelope::deserialize(&mut plain.as_slice())
            .map_err(|_| "opens but does not decode")?;
        self.replays.admit(nonce, at, now_ms())?;
        Ok(envelope)
    }

    fn note_dropped(&mut self, from: SocketAddr, why: &'static str) {
        metrics::counter!(crate::telemetry::GOSSIP_DROPPED, "reason" => why).increment(1);
        self.dropped += 1;
        if self.last_warn.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
            tracing::warn!(%from, why, dropped = self.dropped, "gossip datagram dropped");
            self.dropped = 0;
            self.last_warn = Some(Instant::now());
        }
    }
}

#[async_trait]
impl Socket for SealedSocket {
    fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.socket.local_addr()?)
    }

    async fn send(
        &mut self,
        to: SocketAddr,
        envelope: ChitchatEnvelope,
    ) -> anyhow::Result<SendOutcome> {
        self.plain.clear();
        envelope.serialize(&mut self.plain);
        let datagram = seal(&self.cipher, &self.aad, now_ms(), &self.plain)
            .ok_or_else(|| anyhow::anyhow!("cannot seal a gossip datagram"))?;
        // A peer that is gone is not a broken transport: chitchat retries.
        let num_bytes_sent = match self.socket.send_to(&datagram, to).await {
            Ok(n) => {
                metrics::counter!(crate::telemetry::GOSSIP_DATAGRAMS, "direction" => "sent")
                    .increment(1);
                n
            }
            Err(e) => {
                tracing::debug!(%to, error = %e, "gossip send failed");
                0
            }
        };
        Ok(SendOutcome { num_bytes_sent })
    }

    async fn recv(&mut self) -> anyhow::Result<RecvOutcome> {
        loop {
            let (n, from_addr) = match self.socket.recv_from(&mut self.buf).await {
                Ok(r) => r,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::ConnectionReset
                            | std::io::ErrorKind::ConnectionRefused
                            | std::io::ErrorKind::OutOfMemory
                    ) =>
                {
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            if n > MAX_DATAGRAM {
                self.note_dropped(from_addr, "larger than a datagram");
                continue;
            }
            match self.open_datagram(n) {
                Ok(envelope) => {
                    metrics::counter!(crate::telemetry::GOSSIP_DATAGRAMS, "direction" => "received")
                        .increment(1);
                    return Ok(RecvOutcome {
                        from_addr,
                        envelope,
                        num_bytes_received: n,
                    });
                }
                Err(why) => self.note_dropped(from_addr, why),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chitchat::{ChitchatMessage, ProtocolVersion};

    fn envelope() -> ChitchatEnvelope {
        ChitchatEnvelope {
            version: ProtocolVersion::V1,
            message: ChitchatMessage::BadCluster,
        }
    }

    async fn socket(key: GossipKey, cluster: &str) -> (Box<dyn Socket>, SocketAddr) {
        let s = SealedUdp::new(key, cluster.into())
            .open("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let addr = s.local_addr().unwrap();
        (s, addr)
    }

    /// Only a socket with the same secret and cluster id opens a datagram;
    /// the rest are dropped, and the next good one still arrives.
    #[test]
    fn a_peer_proof_holds_only_with_the_same_key_and_near_its_time() {
        let key = PeerKey::of(&ClusterSecret(b"s1 s1 s1 s1 s1 s1".to_vec()));
        let other = PeerKey::of(&ClusterSecret(b"s2 s2 s2 s2 s2 s2".to_vec()));
        let now = 1_780_000_000_000;
        let p = key.proof(now);
        assert!(key.verify(&p, now + PEER_PROOF_SKEW_MS));
        assert!(!key.verify(&p, now + PEER_PROOF_SKEW_MS + 1), "too old");
        assert!(!other.verify(&p, now), "another key");
        let (t, mac) = p.split_once('.').unwrap();
        let later = format!("{}.{mac}", t.parse::<i64>().unwrap() + 1);
        assert!(!key.verify(&later, now), "a changed time");
        for junk in ["", ".", "1.zz", "x.00", &format!("{t}.{}", &mac[..10])] {
            assert!(!key.verify(junk, now), "{junk:?}");
        }
    }

    #[tokio::test]
    async fn only_the_same_secret_and_cluster_open_a_datagram() {
        let key = gossip_key(&ClusterSecret(b"the cluster's secret".to_vec()));
        let (mut rx, at) = socket(key, "c1").await;
        let (mut good, _) = socket(key, "c1").await;
        let (mut other_secret, _) =
            socket(gossip_key(&ClusterSecret(b"another secret".to_vec())), "c1").await;
        let (mut other_cluster, _) = socket(key, "c2").await;
        other_secret.send(at, envelope()).await.unwrap();
        other_cluster.send(at, envelope()).await.unwrap();
        let plain = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut forged = envelope().serialize_to_plain();
        plain.send_to(&forged, at).await.unwrap();
        forged.splice(0..0, MAGIC.iter().copied().chain([0; NONCE_LEN + TAG_LEN]));
        plain.send_to(&forged, at).await.unwrap();
        good.send(at, envelope()).await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("the good datagram arrives")
            .unwrap();
        assert_eq!(got.envelope, envelope());
        nothing_more(&mut rx, "nothing else opened").await;
    }

    /// Nothing more arrives at `rx` for a while.
    async fn nothing_more(rx: &mut Box<dyn Socket>, why: &str) {
        let more = tokio::time::timeout(Duration::from_millis(300), rx.recv()).await;
        assert!(more.is_err(), "{why}");
    }

    /// A recorded datagram is taken once: sent again, or sealed outside the
    /// replay window (too old or ahead), it is dropped.
    #[tokio::test]
    async fn a_recorded_datagram_is_taken_once_and_an_old_one_never() {
        let secret = ClusterSecret(b"the cluster's secret".to_vec());
        let (mut rx, at) = socket(gossip_key(&secret), "c1").await;
        let member = Sealer::new(&secret, "c1");
        let plain = envelope().serialize_to_plain();
        let recorded = member.seal(&plain);
        let now = now_ms();
        let old = member.seal_at(now - GOSSIP_REPLAY_WINDOW_MS - 1_000, &plain);
        let ahead = member.seal_at(now + GOSSIP_REPLAY_WINDOW_MS + 1_000, &plain);
        let fresh = member.seal(&plain);
        let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        for d in [&recorded, &recorded, &old, &ahead, &recorded, &fresh] {
            udp.send_to(d, at).await.unwrap();
        }
        for _ in 0..2 {
            let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .expect("the recorded datagram once, then the fresh one")
                .unwrap();
            assert_eq!(got.envelope, envelope());
        }
        nothing_more(&mut rx, "a replay, an old and an early datagram were taken").await;
    }

    /// The remembered nonces are bounded, and a nonce forgotten for room is
    /// still refused by its time once the window has passed.
    #[test]
    fn remembered_nonces_stay_within_their_bound() {
        let mut r = Replays::default();
        let now = 1_780_000_000_000;
        for i in 0..(MAX_REMEMBERED_NONCES + 10) {
            let mut n = [0u8; NONCE_LEN];
            n[..8].copy_from_slice(&(i as u64).to_le_bytes());
            r.admit(n, now, now).unwrap();
        }
        assert!(r.seen.len() <= MAX_REMEMBERED_NONCES);
        assert_eq!(r.seen.len(), r.order.len());
        let last = r.order.back().unwrap().1;
        assert!(r.admit(last, now, now).is_err(), "the newest is remembered");
        assert!(
            r.admit([9; NONCE_LEN], now - GOSSIP_REPLAY_WINDOW_MS - 1, now)
                .is_err()
        );
    }

    trait Plain {
        fn serialize_to_plain(&self) -> Vec<u8>;
    }
    impl Plain for ChitchatEnvelope {
        fn serialize_to_plain(&self) -> Vec<u8> {
            let mut b = Vec::new();
            self.serialize(&mut b);
            b
        }
    }
}
