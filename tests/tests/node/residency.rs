//! Many collections: a collection is open (writer thread, connections,
//! cache) only while it is used, within `--max-open-collections`; idle ones
//! close, and reopening is transparent: nothing written is lost, and reads
//! return what was written, under concurrent reads and writes, across
//! evictions and restarts.

use crate::metrics::total;
use collector::proto;
use collector_tests::{Clients, Order, ProcessNode, TestNode, order_of};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_collector-node");

fn name(i: usize) -> String {
    format!("c{i}")
}

async fn get(c: &mut Clients, coll: &str, id: &str) -> Order {
    let r = c
        .records
        .get(proto::GetRequest {
            namespace: "shop".into(),
            collection: coll.into(),
            id: id.into(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("get {coll}/{id}: {e:?}"))
        .into_inner();
    order_of(&r)
}

/// Writes round `round` to every collection of `colls` and reads back an
/// earlier round's record, one collection after another.
async fn rounds(mut c: Clients, colls: Vec<usize>, rounds: usize) {
    for round in 0..rounds {
        for &i in &colls {
            let coll = name(i);
            let o = Order::new(&format!("{coll} round {round}"), (i * 100 + round) as i64);
            c.put("shop", &coll, &format!("r{round}"), &o)
                .await
                .unwrap();
            let back = get(&mut c, &coll, &format!("r{}", round / 2)).await;
            assert_eq!(back.title, format!("{coll} round {}", round / 2));
        }
    }
}

/// Every collection holds its `n` rounds, each as written.
async fn all_there(c: &mut Clients, colls: usize, n: usize) {
    for i in 0..colls {
        assert_eq!(c.count("shop", &name(i)).await, n as i64, "{}", name(i));
        for round in 0..n {
            let o = get(c, &name(i), &format!("r{round}")).await;
            assert_eq!(o.title, format!("{} round {round}", name(i)));
            assert_eq!(o.quantity, (i * 100 + round) as i64);
        }
    }
}

/// 16 collections used by 4 concurrent clients against a bound of 4 open:
/// collections are evicted and reopened all along, and no write is lost or
/// read wrong; the bound holds (give or take those in use at the moment
/// one opens), also after a restart, where nothing is open until used.
#[tokio::test]
async fn collections_beyond_the_open_bound_close_and_reopen_losing_nothing() {
    const COLLS: usize = 16;
    const BOUND: usize = 4;
    let mut n = TestNode::start_with(|c| {
        c.max_open_collections = BOUND;
        c.collection_idle_close = Duration::from_secs(600);
    })
    .await;
    let addr = n.handle.as_ref().unwrap().addr;
    n.clients.register_shop("shop").await;
    for i in 0..COLLS {
        n.clients.create_orders("shop", &name(i), &[]).await;
    }
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let c = n.clients.clone();
            // Each worker its own four, so sixteen are in use in turn.
            let colls = (0..COLLS).filter(|k| k % 4 == w).collect();
            tokio::spawn(rounds(c, colls, 6))
        })
        .collect();
    let mut peak = 0.0f64;
    while workers.iter().any(|w| !w.is_finished()) {
        peak = peak.max(total(addr, "collector_collections_open").await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for w in workers {
        w.await.unwrap();
    }
    // Four clients hold at most four open while a fifth opens.
    assert!(
        peak <= (BOUND + 4) as f64,
        "{peak} open at the peak, bound {BOUND}"
    );
    let after = total(addr, "collector_collections_open").await;
    assert!(after <= BOUND as f64, "{after} open after the load");
    all_there(&mut n.clients, COLLS, 6).await;

    n.restart().await;
    let addr = n.handle.as_ref().unwrap().addr;
    assert_eq!(total(addr, "collector_collections_open").await, 0.0);
    assert_eq!(total(addr, "collector_collections").await, COLLS as f64);
    all_there(&mut n.clients, COLLS, 6).await;
    let open = total(addr, "collector_collections_open").await;
    assert!(open <= BOUND as f64, "{open} open after reading all");
}

/// A node process with 40 collections: each closes when idle, and its
/// writer thread goes with it; the next call reopens it transparently. A
/// restart opens none of them.
#[tokio::test]
async fn idle_collections_close_their_threads_and_a_restart_opens_none() {
    const COLLS: usize = 40;
    let dir = tempfile::tempdir().unwrap();
    let flags = [
        "--collection-idle-close",
        "2s",
        "--max-open-collections",
        "64",
    ];
    let node =
        ProcessNode::start_with_flags(BIN, &dir.path().join("data"), "127.0.0.1:0", &[], &flags);
    let mut c = Clients::connect(node.addr).await;
    c.register_shop("shop").await;
    let threads = || total(node.addr, "collector_process_threads");
    let open = || total(node.addr, "collector_collections_open");
    for i in 0..COLLS {
        c.create_orders("shop", &name(i), &[]).await;
    }
    // Wait for what creating opened to close, then open all at once.
    wait_until_none_open(node.addr).await;
    let idle = threads().await;
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let colls = (w * 10..(w + 1) * 10).collect();
            tokio::spawn(rounds(c.clone(), colls, 2))
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    let busy_open = open().await;
    let busy = threads().await;
    assert!(busy_open >= 30.0, "{busy_open} open right after use");
    assert!(
        busy >= idle + 30.0,
        "a writer thread for each open collection: {busy} threads busy, {idle} idle"
    );
    wait_until_none_open(node.addr).await;
    let after = threads().await;
    assert!(
        after <= idle + 2.0,
        "the writers' threads went: {after} threads, {idle} before the load"
    );
    all_there(&mut c, COLLS, 2).await;
    drop(node);

    // A restart reads the catalogue and opens nothing.
    let node =
        ProcessNode::start_with_flags(BIN, &dir.path().join("data"), "127.0.0.1:0", &[], &flags);
    assert_eq!(total(node.addr, "collector_collections_open").await, 0.0);
    assert_eq!(
        total(node.addr, "collector_collections").await,
        COLLS as f64
    );
    let mut c = Clients::connect(node.addr).await;
    all_there(&mut c, COLLS, 2).await;
}

async fn wait_until_none_open(addr: std::net::SocketAddr) {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let open = total(addr, "collector_collections_open").await;
        if open == 0.0 {
            return;
        }
        assert!(
            Instant::now() < until,
            "{open} collections still open after 20 s idle"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A member holding a thousand collections: gossip carries a digest of its
/// list, and another member fetches the list when the digest changes, so
/// calls through it reach any of them at once (no wait for gossip to carry
/// each name), a deleted one is gone, and a new one is found.
#[tokio::test]
async fn a_member_holding_a_thousand_collections_is_routed_to() {
    const COLLS: usize = 1000;
    let a = TestNode::start().await;
    let a_addr = a.handle.as_ref().unwrap().addr;
    let b = TestNode::start_with(|c| c.join = vec![a_addr.to_string()]).await;
    crate::mesh::wait_for(&b.clients, "both alive", Duration::from_secs(10), |ps| {
        crate::mesh::all_up(ps, 2)
    })
    .await;
    let mut ca = a.clients.clone();
    ca.register_shop("shop").await;
    let names: Vec<String> = (0..COLLS).map(name).collect();
    let queue = std::sync::Arc::new(std::sync::Mutex::new(names));
    let creators: Vec<_> = (0..8)
        .map(|_| {
            let (mut c, q) = (ca.clone(), queue.clone());
            tokio::spawn(async move {
                loop {
                    let Some(n) = q.lock().unwrap().pop() else {
                        return;
                    };
                    c.create_orders("shop", &n, &[]).await;
                }
            })
        })
        .collect();
    for c in creators {
        c.await.unwrap();
    }
    let t = Instant::now();
    let mut cb = b.clients.clone();
    // Through B, which owns none of them: each call goes to A.
    for i in [0, COLLS / 2, COLLS - 1] {
        cb.put(
            "shop",
            &name(i),
            "r0",
            &Order::new(&format!("{} round 0", name(i)), (i * 100) as i64),
        )
        .await
        .unwrap();
        assert_eq!(cb.count("shop", &name(i)).await, 1);
    }
    let reached = t.elapsed();
    let route = cb
        .repo
        .route(proto::RouteRequest {
            namespace: "shop".into(),
            name: name(7),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(route.address, a_addr.to_string());
    let peers = crate::mesh::peers(&cb).await;
    let listed = peers
        .iter()
        .find(|p| p.address == a_addr.to_string())
        .map(|p| p.collections.len());
    assert_eq!(listed, Some(COLLS), "B lists A's collections");
    // A deleted one is gone through B; a new one is found through B.
    ca.repo
        .delete_collection(proto::DeleteCollectionRequest {
            namespace: "shop".into(),
            name: name(3),
        })
        .await
        .unwrap();
    ca.create_orders("shop", "newest", &[]).await;
    let t = Instant::now();
    let until = t + Duration::from_secs(10);
    // Within a gossip round or two (the digest travels, then the list).
    while cb.try_count("shop", "newest").await.is_err() {
        assert!(Instant::now() < until, "newest not found through B");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let found = t.elapsed();
    loop {
        match cb.try_count("shop", &name(3)).await {
            Err(e) if e.code() == tonic::Code::NotFound => break,
            _ => assert!(Instant::now() < until, "{} still found through B", name(3)),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "{COLLS} collections on A reached through B {reached:?} after the last create; a new one in {found:?}"
    );
}
