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

#[tokio::test]
async fn sigterm_stops_cleanly_leaving_whole_db_files_and_a_second_node_cannot_share_the_data_dir()
{
    let bin = env!("CARGO_BIN_EXE_collector-node");
    let dir = tempfile::tempdir().unwrap();
    let mut node = ProcessNode::start(bin, dir.path());
    let mut c = Clients::connect(node.addr).await;
    c.register_shop("shop").await;
    c.create_orders("shop", "orders", &[]).await;
    c.put("shop", "orders", "before-term", &Order::new("kept", 1))
        .await
        .unwrap();
    // Reads open reader connections, which stay pooled until the stop.
    for _ in 0..4 {
        c.records
            .get(proto::GetRequest {
                namespace: "shop".into(),
                collection: "orders".into(),
                id: "missing".into(),
                include_json: false,
            })
            .await
            .unwrap_err();
    }

    // A second node on the same data dir refuses to start, saying why.
    let mut second = std::process::Command::new(bin)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(s) = second.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = second.kill();
            panic!("a second node on a locked data dir kept running");
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(!status.success());
    let mut err = String::new();
    std::io::Read::read_to_string(&mut second.stderr.take().unwrap(), &mut err).unwrap();
    assert!(err.contains("in use"), "{err}");

    // SIGTERM: exit 0 after a clean shutdown; a restart finds the data.
    let term = std::process::Command::new("kill")
        .args(["-TERM", &node.child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(s) = node.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "node did not stop on SIGTERM"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status:?}");
    // After a clean stop each collection's .db file is complete on its own:
    // copied without its -wal file, it holds the records.
    let copy = tempfile::tempdir().unwrap();
    let db = copy.path().join("orders.db");
    std::fs::copy(dir.path().join("collections/shop/orders.db"), &db).unwrap();
    let conn = rusqlite::Connection::open(&db).unwrap();
    let ids: Vec<String> = conn
        .prepare("SELECT id FROM records")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(ids, ["before-term"]);
    drop(conn);
    let node = ProcessNode::start(bin, dir.path());
    let mut c = Clients::connect(node.addr).await;
    c.records
        .get(proto::GetRequest {
            namespace: "shop".into(),
            collection: "orders".into(),
            id: "before-term".into(),
            include_json: false,
        })
        .await
        .unwrap();
}
