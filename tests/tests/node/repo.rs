use collector::proto;
use collector_tests::{Order, TestNode};
use tonic::Code;

#[tokio::test]
async fn collections_are_isolated_by_collection_and_namespace() {
    let mut n = TestNode::start().await;
    let c = &mut n.clients;
    c.register_shop("shop").await;
    c.register_shop("other").await;
    c.create_orders("shop", "orders", &[]).await;
    c.create_orders("shop", "archive", &[]).await;
    c.create_orders("other", "orders", &[]).await;
    c.put("shop", "orders", "x", &Order::new("in shop/orders", 1))
        .await
        .unwrap();

    for (ns, coll) in [("shop", "archive"), ("other", "orders")] {
        let e = c
            .records
            .get(proto::GetRequest {
                namespace: ns.into(),
                collection: coll.into(),
                id: "x".into(),
                include_json: false,
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "{ns}/{coll}");
        let r = c
            .search(proto::SearchRequest {
                namespace: ns.into(),
                collection: coll.into(),
                query: "shop".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(r.total_count, 0);
    }
    // Types registered in one namespace are not visible in another.
    let e = c
        .repo
        .create_collection(proto::CreateCollectionRequest {
            namespace: "lonely".into(),
            name: "orders".into(),
            message_type: "shop.Order".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    // Well-known types work anywhere.
    c.repo
        .create_collection(proto::CreateCollectionRequest {
            namespace: "lonely".into(),
            name: "notes".into(),
            message_type: "google.protobuf.Struct".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    c.records
        .create(proto::CreateRequest {
            namespace: "lonely".into(),
            collection: "notes".into(),
            record: Some(proto::Record {
                json: r#"{"any": ["json", 1]}"#.into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();

    // The namespace may come from metadata instead of the field.
    let mut req = tonic::Request::new(proto::GetRequest {
        collection: "orders".into(),
        id: "x".into(),
        ..Default::default()
    });
    req.metadata_mut()
        .insert("x-collector-namespace", "shop".parse().unwrap());
    c.records.get(req).await.unwrap();
}

#[tokio::test]
async fn repo_creates_describes_discovers_routes_and_deletes() {
    let mut n = TestNode::start().await;
    let c = &mut n.clients;
    c.register_shop("shop").await;
    let info = c
        .repo
        .create_collection(proto::CreateCollectionRequest {
            namespace: "shop".into(),
            name: "orders".into(),
            message_type: "shop.Order".into(),
            labels: [("env".to_string(), "prod".to_string())].into(),
            description: "all orders".into(),
            indexes: vec!["customer.address.city".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.message_type, "shop.Order");
    let dup = c
        .repo
        .create_collection(proto::CreateCollectionRequest {
            namespace: "shop".into(),
            name: "orders".into(),
            message_type: "shop.Order".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(dup.code(), Code::AlreadyExists);
    for (name, ty, idx, code) in [
        ("Bad Name", "shop.Order", "", Code::InvalidArgument),
        ("x", "shop.Nope", "", Code::NotFound),
        ("x", "shop.Order", "customer.nope", Code::InvalidArgument),
        ("x", "shop.Order", "tags", Code::InvalidArgument),
    ] {
        let e = c
            .repo
            .create_collection(proto::CreateCollectionRequest {
                namespace: "shop".into(),
                name: name.into(),
                message_type: ty.into(),
                indexes: if idx.is_empty() {
                    vec![]
                } else {
                    vec![idx.into()]
                },
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), code, "{name} {ty} {idx}: {e:?}");
    }
    c.create_orders("shop", "returns", &[]).await;
    for k in 0..3 {
        c.put("shop", "orders", &k.to_string(), &Order::new("lamp", k))
            .await
            .unwrap();
    }
    c.put("shop", "returns", "r", &Order::new("lamp returned", 1))
        .await
        .unwrap();

    let got = c
        .repo
        .get_collection(proto::GetCollectionRequest {
            namespace: "shop".into(),
            name: "orders".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.record_count, 3);
    assert!(got.size_bytes > 0);
    assert_eq!(got.indexes, vec!["customer.address.city"]);

    let d = c
        .repo
        .discover(proto::DiscoverRequest {
            namespace: "shop".into(),
            labels: [("env".to_string(), "prod".to_string())].into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        d.collections
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>(),
        vec!["orders"]
    );
    let p1 = c
        .repo
        .discover(proto::DiscoverRequest {
            message_type: "shop.Order".into(),
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(p1.collections.len(), 1);
    let p2 = c
        .repo
        .discover(proto::DiscoverRequest {
            message_type: "shop.Order".into(),
            page_size: 1,
            page_token: p1.next_page_token,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(p2.collections.len(), 1);
    assert_ne!(p1.collections[0].name, p2.collections[0].name);
    assert!(p2.next_page_token.is_empty());

    let route = c
        .repo
        .route(proto::RouteRequest {
            namespace: "shop".into(),
            name: "orders".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(route.address, n.handle.as_ref().unwrap().addr.to_string());

    let many = c
        .repo
        .search_collections(proto::SearchCollectionsRequest {
            namespace: "shop".into(),
            query: "lamp".into(),
            limit_per_collection: 2,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(many.total_count, 4);
    assert_eq!(
        many.groups
            .iter()
            .map(|g| (g.collection.as_str(), g.total_count, g.hits.len()))
            .collect::<Vec<_>>(),
        vec![("orders", 3, 2), ("returns", 1, 1)]
    );

    c.repo
        .delete_collection(proto::DeleteCollectionRequest {
            namespace: "shop".into(),
            name: "orders".into(),
        })
        .await
        .unwrap();
    let e = c
        .records
        .get(proto::GetRequest {
            namespace: "shop".into(),
            collection: "orders".into(),
            id: "0".into(),
            include_json: false,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    // A new collection with the old name starts empty.
    c.create_orders("shop", "orders", &[]).await;
    let cnt = c
        .records
        .count(proto::CountRequest {
            namespace: "shop".into(),
            collection: "orders".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cnt.count, 0);
}

#[tokio::test]
async fn system_namespace_is_readable_but_not_writable() {
    let mut n = TestNode::start().await;
    let c = &mut n.clients;
    c.register_shop("shop").await;
    c.create_orders("shop", "orders", &[]).await;
    let cat = c
        .records
        .list(proto::ListRequest {
            namespace: "system".into(),
            collection: "collections".into(),
            include_json: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cat.records.len(), 1);
    assert!(
        cat.records[0].json.contains("shop.Order"),
        "{}",
        cat.records[0].json
    );
    let e = c
        .records
        .delete(proto::DeleteRequest {
            namespace: "system".into(),
            collection: "collections".into(),
            id: cat.records[0].id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let e = c
        .repo
        .create_collection(proto::CreateCollectionRequest {
            namespace: "system".into(),
            name: "x".into(),
            message_type: "google.protobuf.Empty".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let e = c
        .repo
        .delete_collection(proto::DeleteCollectionRequest {
            namespace: "system".into(),
            name: "protos".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
}

/// Meta says which node answers, since when, and how much its data dir
/// holds: the size follows what is written.
#[tokio::test]
async fn meta_says_which_node_this_is_and_how_big_its_data_is() {
    let mut n = TestNode::start().await;
    let node_id = n.handle.as_ref().unwrap().node_id.clone();
    let meta = |n: &TestNode| {
        let mut repo = n.clients.repo.clone();
        async move { repo.meta(proto::MetaRequest {}).await.unwrap().into_inner() }
    };
    let first = meta(&n).await;
    assert_eq!(first.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(first.node_id, node_id);
    assert_eq!(first.collections, 0);
    assert!(first.data_dir_bytes > 0, "the catalogue is on disk");
    let started = first.started_at.unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        started.seconds <= now && started.seconds > now - 600,
        "{started:?}"
    );
    assert!(first.uptime_seconds >= 0.0 && first.uptime_seconds < 600.0);

    let c = &mut n.clients;
    c.register_shop("shop").await;
    c.create_orders("shop", "orders", &[]).await;
    let mut big = Order::new("big", 1);
    big.title = "x".repeat(1 << 20);
    for i in 0..4 {
        c.put("shop", "orders", &format!("big-{i}"), &big)
            .await
            .unwrap();
    }
    let later = meta(&n).await;
    assert_eq!(later.collections, 1);
    assert!(
        later.data_dir_bytes >= first.data_dir_bytes + (4 << 20),
        "{} then {}",
        first.data_dir_bytes,
        later.data_dir_bytes
    );
    assert!(later.uptime_seconds >= first.uptime_seconds);
}

/// UpdateCollection changes the description, labels and indexes; the
/// change is stored (it survives a restart), shows in Discover, and the
/// indexes change in the collection's file.
#[tokio::test]
async fn update_collection_changes_description_labels_and_indexes() {
    let mut n = TestNode::start().await;
    n.clients.register_shop("shop").await;
    n.clients
        .create_orders("shop", "orders", &["quantity"])
        .await;
    n.clients
        .put("shop", "orders", "o1", &Order::new("lamp", 2))
        .await
        .unwrap();
    let update = |n: &TestNode, u: proto::UpdateCollectionRequest| {
        let mut repo = n.clients.repo.clone();
        async move {
            repo.update_collection(proto::UpdateCollectionRequest {
                namespace: "shop".into(),
                name: if u.name.is_empty() {
                    "orders".into()
                } else {
                    u.name.clone()
                },
                ..u
            })
            .await
        }
    };
    let info = update(
        &n,
        proto::UpdateCollectionRequest {
            description: Some("orders of the shop".into()),
            set_labels: [("team".to_string(), "blue".to_string())].into(),
            add_indexes: vec!["customer.address.city".into()],
            drop_indexes: vec!["quantity".into()],
            ..Default::default()
        },
    )
    .await
    .unwrap()
    .into_inner();
    assert_eq!(info.description, "orders of the shop");
    assert_eq!(info.labels.get("team").map(String::as_str), Some("blue"));
    assert_eq!(info.indexes, ["customer.address.city"]);

    // The collection's file has the new index and not the old one.
    let db = n.dir.path().join("collections/shop/orders.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    let names: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND name LIKE 'idx_%'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(names, ["idx_customer__address__city"]);
    drop(conn);

    // Discover finds it by its new label; a label can be removed again.
    let found = n
        .clients
        .repo
        .discover(proto::DiscoverRequest {
            namespace: "shop".into(),
            labels: [("team".to_string(), "blue".to_string())].into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .collections;
    assert_eq!(found.len(), 1, "{found:?}");

    // Refusals: a path that is no field, a drop of what is not indexed, a
    // missing collection, the system namespace.
    for (u, code) in [
        (
            proto::UpdateCollectionRequest {
                add_indexes: vec!["nope".into()],
                ..Default::default()
            },
            Code::InvalidArgument,
        ),
        (
            proto::UpdateCollectionRequest {
                drop_indexes: vec!["price".into()],
                ..Default::default()
            },
            Code::InvalidArgument,
        ),
        (
            proto::UpdateCollectionRequest {
                name: "missing".into(),
                ..Default::default()
            },
            Code::NotFound,
        ),
    ] {
        let e = update(&n, u).await.unwrap_err();
        assert_eq!(e.code(), code, "{e:?}");
    }
    let e = n
        .clients
        .repo
        .update_collection(proto::UpdateCollectionRequest {
            namespace: "system".into(),
            name: "collections".into(),
            description: Some("mine".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");

    // Stored: after a restart the change is still there, and queries work.
    n.restart().await;
    let info = n
        .clients
        .repo
        .get_collection(proto::GetCollectionRequest {
            namespace: "shop".into(),
            name: "orders".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.description, "orders of the shop");
    assert_eq!(info.indexes, ["customer.address.city"]);
    assert_eq!(info.record_count, 1);
    let info = update(
        &n,
        proto::UpdateCollectionRequest {
            remove_labels: vec!["team".into()],
            ..Default::default()
        },
    )
    .await
    .unwrap()
    .into_inner();
    assert!(info.labels.is_empty(), "{:?}", info.labels);
    assert_eq!(info.description, "orders of the shop", "unset leaves it");
}
