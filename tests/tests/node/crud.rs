use collector::proto;
use collector_tests::{Order, TestNode, order_of};
use tonic::Code;

#[tokio::test]
async fn crud_round_trip_with_binary_proto() {
    let mut n = TestNode::start().await;
    let c = &mut n.clients;
    c.register_shop("shop").await;
    c.create_orders("shop", "orders", &[]).await;

    let mut o = Order::new("red shoes", 2);
    o.customer = Some(collector_tests::Customer {
        name: "Ann".into(),
        address: None,
    });
    o.priority = Some(0);
    let created = c.put("shop", "orders", "", &o).await.unwrap();
    assert_eq!(
        uuid::Uuid::parse_str(&created.id)
            .unwrap()
            .get_version_num(),
        7,
        "generated id is UUIDv7"
    );
    assert_eq!(created.version, 1);
    assert_eq!(order_of(&created), o);
    assert!(created.json.is_empty(), "JSON only when asked for");

    let got = c
        .records
        .get(proto::GetRequest {
            namespace: "shop".into(),
            collection: "orders".into(),
            id: created.id.clone(),
            include_json: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(order_of(&got), o);
    assert!(got.json.contains(r#""title":"red shoes""#), "{}", got.json);
    assert_eq!(got.created_at, created.created_at);

    // Full replace, with the right version.
    let o2 = Order::new("blue shoes", 3);
    let updated = c
        .records
        .update(proto::UpdateRequest {
            namespace: "shop".into(),
            collection: "orders".into(),
            record: Some(proto::Record {
                id: created.id.clone(),
                data: Some(o2.any()),
                labels: [("k".to_string(), "v".to_string())].into(),
                ..Default::default()
            }),
            expected_version: Some(1),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.version, 2);
    assert_eq!(order_of(&updated), o2);
    assert_eq!(updated.labels.get("k").map(String::as_str), Some("v"));

    // A stale version is refused and changes nothing.
    let stale = c
        .records
        .update(proto::UpdateRequest {
            namespace: "shop".into(),
            collection: "orders".into(),
            record: Some(proto::Record {
                id: created.id.clone(),
                data: Some(Order::new("x", 1).any()),
                ..Default::default()
            }),
            expected_version: Some(1),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::FailedPrecondition, "{stale:?}");

    // Field mask: only quantity and one label change.
    let masked = c
        .records
        .update(proto::UpdateRequest {
            namespace: "shop".into(),
            collection: "orders".into(),
            record: Some(proto::Record {
                id: created.id.clone(),
                json: r#"{"quantity": 9, "title": "ignored"}"#.into(),
                labels: [("n".to_string(), "1".to_string())].into(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["data.quantity".into(), "labels.n".into()],
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let m = order_of(&masked);
    assert_eq!((m.title.as_str(), m.quantity), ("blue shoes", 9));
    assert_eq!(masked.labels.len(), 2);

    let bad_mask = c
        .records
        .update(proto::UpdateRequest {
            namespace: "shop".into(),
            collection: "orders".into(),
            record: Some(proto::Record {
                id: created.id.clone(),
                json: "{}".into(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["data.nope".into()],
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad_mask.code(), Code::InvalidArgument);

    // Delete, then it is gone.
    c.records
        .delete(proto::DeleteRequest {
            namespace: "shop".into(),
            collection: "orders".into(),
            id: created.id.clone(),
            expected_version: None,
        })
        .await
        .unwrap();
    let gone = c
        .records
        .get(proto::GetRequest {
            namespace: "shop".into(),
            collection: "orders".into(),
            id: created.id.clone(),
            include_json: false,
        })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
    let again = c
        .records
        .delete(proto::DeleteRequest {
            namespace: "shop".into(),
            collection: "orders".into(),
            id: created.id,
            expected_version: None,
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::NotFound);
}

#[tokio::test]
async fn ids_payloads_and_types_are_checked() {
    let mut n = TestNode::start().await;
    let c = &mut n.clients;
    c.register_shop("shop").await;
    c.create_orders("shop", "orders", &[]).await;

    let weird = "ünïcode / id with 'quotes' and spaces";
    c.put("shop", "orders", weird, &Order::new("a", 1))
        .await
        .unwrap();
    let dup = c
        .put("shop", "orders", weird, &Order::new("b", 1))
        .await
        .unwrap_err();
    assert_eq!(dup.code(), Code::AlreadyExists);

    for bad in ["a\0b", &"x".repeat(513)] {
        let e = c
            .put("shop", "orders", bad, &Order::new("a", 1))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{bad:?}");
    }

    // An Any of another type.
    let wrong = prost_types::Any {
        type_url: "type.googleapis.com/shop.Address".into(),
        value: vec![],
    };
    let e = c
        .records
        .create(proto::CreateRequest {
            namespace: "shop".into(),
            collection: "orders".into(),
            record: Some(proto::Record {
                data: Some(wrong),
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("shop.Order"), "{}", e.message());

    // Bytes that do not decode.
    let garbage = prost_types::Any {
        type_url: "type.googleapis.com/shop.Order".into(),
        value: vec![0x0a, 0xff, 0xff, 0xff],
    };
    let e = c
        .records
        .create(proto::CreateRequest {
            namespace: "shop".into(),
            collection: "orders".into(),
            record: Some(proto::Record {
                data: Some(garbage),
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);

    // JSON with an unknown field; no payload at all.
    for rec in [
        proto::Record {
            json: r#"{"nope": 1}"#.into(),
            ..Default::default()
        },
        proto::Record::default(),
    ] {
        let e = c
            .records
            .create(proto::CreateRequest {
                namespace: "shop".into(),
                collection: "orders".into(),
                record: Some(rec),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    }
}

#[tokio::test]
async fn batch_is_all_or_nothing_with_per_op_codes() {
    let mut n = TestNode::start().await;
    let c = &mut n.clients;
    c.register_shop("shop").await;
    c.create_orders("shop", "orders", &[]).await;
    c.put("shop", "orders", "taken", &Order::new("t", 1))
        .await
        .unwrap();

    let create = |id: &str| proto::BatchOp {
        op: Some(proto::batch_op::Op::Create(proto::CreateRequest {
            record: Some(proto::Record {
                id: id.into(),
                data: Some(Order::new(id, 1).any()),
                ..Default::default()
            }),
            ..Default::default()
        })),
    };
    let failed = c
        .records
        .batch(proto::BatchRequest {
            namespace: "shop".into(),
            collection: "orders".into(),
            ops: vec![create("a"), create("b"), create("taken"), create("c")],
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!failed.committed);
    let codes: Vec<i32> = failed.results.iter().map(|r| r.code).collect();
    assert_eq!(codes, vec![10, 10, 6, 10], "{failed:?}");
    let count = c
        .records
        .count(proto::CountRequest {
            namespace: "shop".into(),
            collection: "orders".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(count.count, 1, "nothing of the failed batch stayed");

    let delete = proto::BatchOp {
        op: Some(proto::batch_op::Op::Delete(proto::DeleteRequest {
            id: "taken".into(),
            ..Default::default()
        })),
    };
    let ok = c
        .records
        .batch(proto::BatchRequest {
            namespace: "shop".into(),
            collection: "orders".into(),
            ops: vec![create("a"), create("b"), delete],
        })
        .await
        .unwrap()
        .into_inner();
    assert!(ok.committed);
    assert_eq!(
        ok.results.iter().map(|r| r.code).collect::<Vec<_>>(),
        vec![0, 0, 0]
    );
    assert_eq!(ok.results[0].record.as_ref().unwrap().id, "a");
    let count = c
        .records
        .count(proto::CountRequest {
            namespace: "shop".into(),
            collection: "orders".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(count.count, 2);

    // An op naming another collection is refused before anything runs.
    let foreign = proto::BatchOp {
        op: Some(proto::batch_op::Op::Delete(proto::DeleteRequest {
            collection: "other".into(),
            id: "a".into(),
            ..Default::default()
        })),
    };
    let e = c
        .records
        .batch(proto::BatchRequest {
            namespace: "shop".into(),
            collection: "orders".into(),
            ops: vec![foreign],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn concurrent_writers_lose_nothing() {
    let mut n = TestNode::start().await;
    n.clients.register_shop("shop").await;
    n.clients.create_orders("shop", "orders", &[]).await;
    let mut tasks = Vec::new();
    for w in 0..16 {
        let mut c = n.clients.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..25 {
                c.put("shop", "orders", &format!("w{w}-{i}"), &Order::new("x", i))
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let count = n
        .clients
        .records
        .count(proto::CountRequest {
            namespace: "shop".into(),
            collection: "orders".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(count.count, 16 * 25);
    for w in 0..16 {
        for i in [0, 24] {
            let id = format!("w{w}-{i}");
            n.clients
                .records
                .get(proto::GetRequest {
                    namespace: "shop".into(),
                    collection: "orders".into(),
                    id,
                    include_json: false,
                })
                .await
                .unwrap();
        }
    }
}
