use collector::proto;
use collector_tests::{Clients, Order, ProcessNode, TestNode};

#[tokio::test]
async fn everything_survives_a_restart() {
    let mut n = TestNode::start().await;
    n.clients.register_shop("shop").await;
    n.clients
        .create_orders("shop", "orders", &["quantity"])
        .await;
    n.clients
        .put("shop", "orders", "keep", &Order::new("persistent lamp", 4))
        .await
        .unwrap();
    let id_before = n.handle.as_ref().unwrap().node_id.clone();
    n.restart().await;
    assert_eq!(
        n.handle.as_ref().unwrap().node_id,
        id_before,
        "node id is persisted"
    );
    let c = &mut n.clients;
    let got = c
        .records
        .get(proto::GetRequest {
            namespace: "shop".into(),
            collection: "orders".into(),
            id: "keep".into(),
            include_json: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(collector_tests::order_of(&got).quantity, 4);
    let r = c
        .search(proto::SearchRequest {
            namespace: "shop".into(),
            collection: "orders".into(),
            query: "persistent".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(r.total_count, 1);
    let info = c
        .repo
        .get_collection(proto::GetCollectionRequest {
            namespace: "shop".into(),
            name: "orders".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.indexes, vec!["quantity"]);
    let protos = c
        .registry
        .list_protos(proto::ListProtosRequest {
            namespace: "shop".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(protos.files.len(), 1);
    c.put("shop", "orders", "", &Order::new("after restart", 1))
        .await
        .unwrap();
}

#[tokio::test]
async fn acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = ProcessNode::start(env!("CARGO_BIN_EXE_collector-node"), dir.path());
    let mut c = Clients::connect(node.addr).await;
    c.register_shop("shop").await;
    c.create_orders("shop", "orders", &[]).await;
    // Concurrent writers; the node is killed while they are still writing.
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for w in 0..8 {
        let mut c = c.clone();
        let acked = acked.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..10_000 {
                let id = format!("w{w}-{i}");
                match c
                    .put("shop", "orders", &id, &Order::new("durable", i))
                    .await
                {
                    Ok(_) => acked.lock().unwrap().push(id),
                    Err(_) => return,
                }
            }
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    node.kill9();
    for t in tasks {
        t.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 50,
        "the writers made progress before the kill ({})",
        acked.len()
    );

    let node = ProcessNode::start(env!("CARGO_BIN_EXE_collector-node"), dir.path());
    let mut c = Clients::connect(node.addr).await;
    let count = c
        .records
        .count(proto::CountRequest {
            namespace: "shop".into(),
            collection: "orders".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .count;
    assert!(
        count as usize >= acked.len(),
        "{count} stored < {} acknowledged",
        acked.len()
    );
    for id in acked.iter().step_by(7) {
        c.records
            .get(proto::GetRequest {
                namespace: "shop".into(),
                collection: "orders".into(),
                id: id.clone(),
                include_json: false,
            })
            .await
            .unwrap();
    }
}
