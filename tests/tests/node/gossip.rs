//! Hostile gossip: datagrams made by hand and sent to a node's UDP port. A
//! malformed delta, a compressed stream that inflates to gigabytes and a
//! flood of made-up members each once stopped a node's gossip, exhausted its
//! memory or cut it off from its peers. Gossip is sealed, so these are sent
//! as a member would (sealed with the test mesh's secret): what a member
//! with a bug, or a stolen secret, could send.

use crate::mesh::{all_up, peers, state_of, wait_for};
use collector::limits::{DEFAULT_CLUSTER, MAX_MESH_MEMBERS};
use collector::mesh::seal::{ClusterSecret, Sealer};
use collector::proto;
use collector_tests::{ProcessNode, TestNode};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_collector-node");

/// A two-node mesh, B joined to A.
async fn pair() -> (TestNode, TestNode) {
    let a = TestNode::start().await;
    let a_addr = a.handle.as_ref().unwrap().addr;
    let b = TestNode::start_with(|c| c.join = vec![a_addr.to_string()]).await;
    wait_for(&a.clients, "B joins", Duration::from_secs(10), |ps| {
        all_up(ps, 2)
    })
    .await;
    (a, b)
}

/// A sees B alive, and B sees A alive, at every look for `span`.
async fn stay_connected(a: &TestNode, b: &TestNode, span: Duration) {
    let (a_id, b_id) = (node_id(a), node_id(b));
    let end = tokio::time::Instant::now() + span;
    while tokio::time::Instant::now() < end {
        let (from_a, from_b) = (peers(&a.clients).await, peers(&b.clients).await);
        assert_eq!(
            state_of(&from_a, &b_id),
            Some(proto::PeerState::Alive),
            "A lost B"
        );
        assert_eq!(
            state_of(&from_b, &a_id),
            Some(proto::PeerState::Alive),
            "B lost A"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn node_id(n: &TestNode) -> String {
    n.handle.as_ref().unwrap().node_id.clone()
}

/// Seals and opens datagrams as a member of the test mesh.
fn member() -> Sealer {
    Sealer::new(
        &ClusterSecret(collector_tests::CLUSTER_SECRET.to_vec()),
        DEFAULT_CLUSTER,
    )
}

/// Sends `plain` to `to`, sealed as a member's.
async fn send(sock: &tokio::net::UdpSocket, plain: &[u8], to: std::net::SocketAddr) {
    sock.send_to(&member().seal(plain), to).await.unwrap();
}

/// The node at `to` still answers a SYN with a SYN-ACK: its gossip runs.
async fn answers_syn(sock: &tokio::net::UdpSocket, to: std::net::SocketAddr) {
    send(sock, &datagram::syn(&["probe"], DEFAULT_CLUSTER), to).await;
    let mut buf = vec![0; 65_536];
    loop {
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), sock.recv_from(&mut buf))
            .await
            .expect("a SYN-ACK within 5 s: gossip still runs")
            .unwrap();
        let Some(plain) = member().open(&buf[..n]) else {
            continue;
        };
        if plain.len() >= 4 && plain[..2] == 45_139u16.to_le_bytes() && plain[3] == 1 {
            return;
        }
    }
}

/// One malformed datagram once killed a node's gossip for good: it kept
/// answering gRPC while its peers marked it dead. Now the delta is rejected
/// before it is applied: gossip never stops, the peers never lose the node.
#[tokio::test]
async fn a_malformed_datagram_cannot_take_a_node_out_of_the_mesh() {
    let (a, b) = pair().await;
    let b_handle = b.handle.as_ref().unwrap();
    let mut up = b_handle.mesh().membership().up();
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for _ in 0..3 {
        send(
            &sock,
            &datagram::syn(&["intruder"], DEFAULT_CLUSTER),
            b_handle.addr,
        )
        .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        send(&sock, &datagram::bad_ack("intruder"), b_handle.addr).await;
    }
    stay_connected(&a, &b, Duration::from_secs(3)).await;
    assert!(*up.borrow_and_update(), "gossip is up");
    assert!(
        !up.has_changed().unwrap(),
        "gossip never stopped (its supervisor did not have to restart it)"
    );
    answers_syn(&sock, b_handle.addr).await;
}

fn secret(s: &str) -> Option<ClusterSecret> {
    Some(ClusterSecret(s.as_bytes().to_vec()))
}

/// The ids of the other nodes `c`'s node knows of, alive or dead.
async fn others(c: &collector_tests::Clients) -> Vec<String> {
    peers(c)
        .await
        .into_iter()
        .filter(|p| p.state != proto::PeerState::Self_ as i32)
        .map(|p| p.node_id)
        .collect()
}

/// With a cluster secret, gossip is sealed: a node holding the same secret
/// joins, one with another secret or none never does (neither side lists
/// the other), and datagrams made by hand (the SYN and the malformed delta
/// above) are dropped unread: no answer, no harm.
#[tokio::test]
async fn sealed_gossip_admits_only_nodes_with_the_cluster_secret() {
    const S: &str = "a cluster secret of some length";
    let a = TestNode::start_with(|c| c.cluster_secret = secret(S)).await;
    let a_addr = a.handle.as_ref().unwrap().addr;
    let b = TestNode::start_with(|c| {
        c.cluster_secret = secret(S);
        c.join = vec![a_addr.to_string()];
    })
    .await;
    wait_for(&a.clients, "B joins", Duration::from_secs(10), |ps| {
        all_up(ps, 2)
    })
    .await;
    let wrong = TestNode::start_with(|c| {
        c.cluster_secret = secret("another secret, just as long");
        c.join = vec![a_addr.to_string()];
    })
    .await;
    // Without a secret a node forms no mesh: it cannot be told to join.
    let none = TestNode::start_with(|c| c.cluster_secret = None).await;
    let refused = collector::proto::collective_dispatcher_client::CollectiveDispatcherClient::new(
        none.clients.channel.clone(),
    )
    .connect(proto::ConnectRequest {
        address: a_addr.to_string(),
    })
    .await
    .unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    let no_secret = collector::Config {
        join: vec![a_addr.to_string()],
        ..Default::default()
    };
    let e = no_secret.validate().unwrap_err();
    assert!(e.message.contains("--cluster-secret-file"), "{e:?}");
    const DROPPED: &str = "collector_gossip_datagrams_dropped_total";
    let dropped_before = crate::metrics::total(a_addr, DROPPED).await;
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for _ in 0..3 {
        sock.send_to(&datagram::syn(&["intruder"], DEFAULT_CLUSTER), a_addr)
            .await
            .unwrap();
        sock.send_to(&datagram::bad_ack("intruder"), a_addr)
            .await
            .unwrap();
    }
    let mut buf = vec![0; 65_536];
    assert!(
        tokio::time::timeout(Duration::from_secs(1), sock.recv_from(&mut buf))
            .await
            .is_err(),
        "a sealed node answered an unsealed SYN"
    );
    // Gossip between A and B is counted, and the forged datagrams were
    // dropped, each counted too.
    assert!(crate::metrics::total(a_addr, "collector_gossip_datagrams_total").await > 0.0);
    let dropped = crate::metrics::total(a_addr, DROPPED).await - dropped_before;
    assert!(dropped >= 6.0, "{dropped} of 6 forged datagrams counted");
    // Ten gossip rounds and more: the outsiders are still outside.
    stay_connected(&a, &b, Duration::from_secs(3)).await;
    assert_eq!(others(&a.clients).await, [node_id(&b)], "A knows of B only");
    for outsider in [&wrong, &none] {
        let seen = others(&outsider.clients).await;
        assert!(seen.is_empty(), "an outsider learnt of {seen:?}");
    }
    // A config with a short secret does not start.
    let dir = tempfile::tempdir().unwrap();
    let short = collector::Config {
        data_dir: dir.path().to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
        cluster_secret: secret("short"),
        ..Default::default()
    };
    let e = collector::Config::validate(&short).unwrap_err();
    assert!(e.message.contains("at least 16"), "{}", e.message);
}

/// A datagram of compressed repeats once inflated to gigabytes inside
/// chitchat. Now a stream stops inflating at its bound and the datagram is
/// dropped: eight of them leave the node's peak memory where it was, and it
/// keeps gossiping.
#[tokio::test]
async fn a_compressed_datagram_cannot_inflate_a_node() {
    let dir = tempfile::tempdir().unwrap();
    let node = ProcessNode::start(BIN, dir.path());
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    answers_syn(&sock, node.addr).await;
    let before = node.peak_rss();
    let bomb = datagram::inflating_ack();
    assert!(bomb.len() <= 65_507 - 64, "{} bytes", bomb.len());
    for _ in 0..8 {
        send(&sock, &bomb, node.addr).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Unbounded, the peak grew by 455 MiB here; each now stops at 4 MiB.
    answers_syn(&sock, node.addr).await;
    let grown = node.peak_rss().saturating_sub(before);
    assert!(grown < 64 << 20, "peak memory grew by {} MiB", grown >> 20);
}

/// 60,000 made-up member ids once grew a node's digest past one datagram and
/// cut it off from its peers for over a minute. Now one digest adds at most
/// `MAX_NEW_MEMBERS_PER_DIGEST` and the table stops at `MAX_MESH_MEMBERS`:
/// the node and its real peer never lose each other.
#[tokio::test]
async fn a_flood_of_made_up_members_cannot_partition_a_node() {
    let (a, b) = pair().await;
    let b_addr = b.handle.as_ref().unwrap().addr;
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for round in 0..60 {
        let names: Vec<String> = (0..1_000).map(|i| format!("fake-{round}-{i}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let syn = datagram::syn(&names, DEFAULT_CLUSTER);
        assert!(syn.len() <= 65_507 - 64, "{} bytes", syn.len());
        send(&sock, &syn, b_addr).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stay_connected(&a, &b, Duration::from_secs(4)).await;
    let known = b
        .handle
        .as_ref()
        .unwrap()
        .mesh()
        .membership()
        .tracked()
        .await;
    assert!(
        known <= MAX_MESH_MEMBERS,
        "B tracks {known} members, more than {MAX_MESH_MEMBERS}"
    );
    assert!(known > 2, "the flood did reach B ({known} members)");
    answers_syn(&sock, b_addr).await;
}

/// Chitchat datagrams by hand (wire format of chitchat 0.13, protocol V0).
mod datagram {
    fn str(b: &mut Vec<u8>, s: &str) {
        b.extend((s.len() as u16).to_le_bytes());
        b.extend(s.as_bytes());
    }
    fn id(b: &mut Vec<u8>, node: &str) {
        str(b, node);
        b.extend(1u64.to_le_bytes()); // generation
        b.push(4); // IPv4
        b.extend([127, 0, 0, 1]);
        b.extend(9u16.to_le_bytes());
    }
    fn header(kind: u8) -> Vec<u8> {
        let mut b = 45_139u16.to_le_bytes().to_vec();
        b.extend([0, kind]);
        b
    }
    /// A SYN whose digest names `nodes`, so the receiver starts tracking them.
    pub fn syn(nodes: &[&str], cluster: &str) -> Vec<u8> {
        let mut b = header(0);
        b.extend((nodes.len() as u16).to_le_bytes());
        for node in nodes {
            id(&mut b, node);
            b.extend(1u64.to_le_bytes()); // heartbeat
            b.extend(0u64.to_le_bytes()); // last gc version
            b.extend(0u64.to_le_bytes()); // max version
        }
        str(&mut b, cluster);
        b
    }
    /// An ACK whose delta for `node` carries a key at version 5 but says its
    /// max version is 1: chitchat 0.13 asserted on it while applying.
    pub fn bad_ack(node: &str) -> Vec<u8> {
        let mut ops = vec![0];
        id(&mut ops, node);
        ops.extend(0u64.to_le_bytes());
        ops.extend(0u64.to_le_bytes());
        ops.push(1);
        str(&mut ops, "k");
        str(&mut ops, "v");
        ops.extend(5u64.to_le_bytes());
        ops.push(0);
        ops.push(2);
        ops.extend(1u64.to_le_bytes());
        let mut b = header(2);
        b.push(2); // an uncompressed block
        b.extend((ops.len() as u16).to_le_bytes());
        b.extend(ops);
        b.push(0); // no more blocks
        b
    }
    /// An ACK whose delta is as many compressed blocks as fit one datagram,
    /// each inflating to 64 KiB of zeros.
    pub fn inflating_ack() -> Vec<u8> {
        let block = zstd::bulk::compress(&[0u8; 65_535], 19).unwrap();
        let mut b = header(2);
        // Each block: a type byte, a u16 length, the frame; then the end byte.
        // What fits in one datagram once sealed.
        while b.len() + 3 + block.len() < 65_507 - 64 {
            b.push(1); // a compressed block
            b.extend((block.len() as u16).to_le_bytes());
            b.extend(&block);
        }
        b.push(0); // no more blocks
        b
    }
}
