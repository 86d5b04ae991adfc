//! Quotas per namespace: the defaults, an operator's overrides (on every
//! member, across restarts), and each quota refusing what goes over it —
//! collections, records a second, storage — while other namespaces go on.

use crate::files::{header, put_with};
use collector::proto;
use collector_tests::{Clients, Order, TestNode};
use std::time::{Duration, Instant};
use tonic::Code;

fn quota(ns: &str) -> proto::NamespaceQuota {
    proto::NamespaceQuota {
        namespace: ns.into(),
        ..Default::default()
    }
}

async fn set(c: &Clients, q: proto::NamespaceQuota) -> Result<proto::QuotaInfo, tonic::Status> {
    c.registry
        .clone()
        .set_quota(proto::SetQuotaRequest { quota: Some(q) })
        .await
        .map(|r| r.into_inner())
}

async fn get(c: &Clients, ns: &str) -> proto::QuotaInfo {
    c.registry
        .clone()
        .get_quota(proto::GetQuotaRequest {
            namespace: ns.into(),
        })
        .await
        .expect("GetQuota")
        .into_inner()
}

fn limits(i: &proto::QuotaInfo) -> proto::QuotaLimits {
    i.limits.expect("limits")
}

/// An override set on one member is in force on the others within a few
/// gossip rounds, survives a restart, and clearing it brings the defaults
/// back; bad overrides are refused.
#[tokio::test]
async fn an_override_reaches_every_member_and_survives_a_restart() {
    let mut a = TestNode::start().await;
    let a_addr = a.handle.as_ref().unwrap().addr;
    let b = TestNode::start_with(|c| c.join = vec![a_addr.to_string()]).await;
    for n in [&a, &b] {
        crate::mesh::wait_for(&n.clients, "two alive", Duration::from_secs(10), |ps| {
            crate::mesh::all_up(ps, 2)
        })
        .await;
    }
    let defaults = limits(&get(&b.clients, "shop").await);
    assert_eq!(
        defaults.calls,
        collector::limits::MAX_CALLS_PER_NAMESPACE as u64
    );
    assert_eq!(
        (defaults.storage_bytes, defaults.records_per_second),
        (0, 0)
    );

    let info = set(
        &a.clients,
        proto::NamespaceQuota {
            collections: Some(7),
            records_per_second: Some(500),
            ..quota("shop")
        },
    )
    .await
    .unwrap();
    assert_eq!(limits(&info).collections, 7);
    assert_eq!(limits(&info).calls, defaults.calls, "unset: the default");
    let o = info.overrides.expect("the override");
    assert!(!o.updated_by.is_empty() && o.updated_at_us > 0, "{o:?}");

    let t = Instant::now();
    while limits(&get(&b.clients, "shop").await).collections != 7 {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "the override never reached B"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("override reached B in {:?}", t.elapsed());
    let listed = b
        .clients
        .registry
        .clone()
        .list_quotas(proto::ListQuotasRequest {})
        .await
        .unwrap()
        .into_inner()
        .quotas;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].records_per_second, Some(500));
    // Other namespaces keep the defaults.
    assert_eq!(limits(&get(&b.clients, "other").await), defaults);

    for (bad, what) in [
        (
            proto::NamespaceQuota {
                calls: Some(0),
                ..quota("shop")
            },
            "quota.calls",
        ),
        (quota("system"), "system"),
        (quota("Bad Name"), "quota.namespace"),
    ] {
        let e = set(&a.clients, bad).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains(what), "{e:?}");
    }
    let e = a
        .clients
        .registry
        .clone()
        .set_quota(proto::SetQuotaRequest { quota: None })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");

    // Cleared on B: the defaults again, on A too.
    set(&b.clients, quota("shop")).await.unwrap();
    let t = Instant::now();
    while limits(&get(&a.clients, "shop").await) != defaults {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "the clearing never reached A"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Alone (no member to learn it from again), A keeps an override
    // across a restart.
    drop(b);
    set(
        &a.clients,
        proto::NamespaceQuota {
            calls: Some(9),
            ..quota("shop")
        },
    )
    .await
    .unwrap();
    a.restart().await;
    assert_eq!(limits(&get(&a.clients, "shop").await).calls, 9);
}

/// Over its collection quota a namespace gets RESOURCE_EXHAUSTED naming
/// it, others go on, and a burst of concurrent creates cannot overshoot.
#[tokio::test]
async fn a_namespace_holds_at_most_its_quota_of_collections() {
    let mut n = TestNode::start_with(|c| c.quotas.collections = 2).await;
    let c = &mut n.clients;
    for ns in ["shop", "other", "burst"] {
        c.register_shop(ns).await;
    }
    let create = |name: &str, ns: &str| proto::CreateCollectionRequest {
        namespace: ns.into(),
        name: name.into(),
        message_type: "shop.Order".into(),
        ..Default::default()
    };
    for name in ["a", "b"] {
        c.repo
            .create_collection(create(name, "shop"))
            .await
            .unwrap();
    }
    let e = c
        .repo
        .create_collection(create("c", "shop"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(
        e.message().contains("--max-collections-per-namespace"),
        "{e:?}"
    );
    c.repo
        .create_collection(create("c", "other"))
        .await
        .unwrap();
    c.repo
        .delete_collection(proto::DeleteCollectionRequest {
            namespace: "shop".into(),
            name: "a".into(),
        })
        .await
        .unwrap();
    c.repo.create_collection(create("c", "shop")).await.unwrap();

    // An override, and eight creates at once against it.
    set(
        c,
        proto::NamespaceQuota {
            collections: Some(3),
            ..quota("burst")
        },
    )
    .await
    .unwrap();
    let mut creates = tokio::task::JoinSet::new();
    for i in 0..8 {
        let mut repo = c.repo.clone();
        let req = create(&format!("c{i}"), "burst");
        creates.spawn(async move { repo.create_collection(req).await.map(|_| ()) });
    }
    let mut made = 0;
    while let Some(r) = creates.join_next().await {
        match r.unwrap() {
            Ok(()) => made += 1,
            Err(e) => assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}"),
        }
    }
    assert_eq!(made, 3, "the quota is checked under the catalogue's lock");
    assert_eq!(get(c, "burst").await.usage.unwrap().collections, 3);
}

/// Writes beyond a namespace's records a second are refused at once with
/// when to retry; another namespace's writes all go; a batch larger than a
/// second's worth goes from a full bucket and the next write waits.
#[tokio::test]
async fn writes_over_a_namespaces_rate_are_refused_and_others_go_on() {
    let mut n = TestNode::start().await;
    let c = &mut n.clients;
    for ns in ["shop", "other"] {
        c.register_shop(ns).await;
        c.create_orders(ns, "orders", &[]).await;
    }
    set(
        c,
        proto::NamespaceQuota {
            records_per_second: Some(20),
            ..quota("shop")
        },
    )
    .await
    .unwrap();
    let t = Instant::now();
    let (mut ok, mut refused) = (0u32, 0u32);
    for i in 0..60 {
        match c
            .put("shop", "orders", "", &Order::new(&format!("o{i}"), 1))
            .await
        {
            Ok(_) => ok += 1,
            Err(e) => {
                assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
                assert!(e.message().contains("20 records a second"), "{e:?}");
                assert!(e.message().contains("retry in"), "{e:?}");
                refused += 1;
            }
        }
        c.put("other", "orders", "", &Order::new("free", 1))
            .await
            .expect("another namespace is not limited");
    }
    let took = t.elapsed().as_secs_f64();
    eprintln!("60 writes in {took:.2} s: {ok} taken, {refused} refused");
    assert!(ok >= 20, "a second's worth goes at once: {ok}");
    assert!(
        f64::from(ok) <= 20.0 + took * 20.0 + 1.0,
        "{ok} taken in {took:.2} s at 20 a second"
    );
    assert!(refused > 0);

    tokio::time::sleep(Duration::from_millis(1100)).await;
    let ops = (0..50)
        .map(|i| proto::BatchOp {
            op: Some(proto::batch_op::Op::Create(proto::CreateRequest {
                record: Some(proto::Record {
                    id: format!("b{i}"),
                    data: Some(Order::new("batch", 1).any()),
                    ..Default::default()
                }),
                ..Default::default()
            })),
        })
        .collect();
    c.records
        .batch(proto::BatchRequest {
            namespace: "shop".into(),
            collection: "orders".into(),
            ops,
        })
        .await
        .expect("a full bucket takes a batch over the rate");
    let e = c
        .put("shop", "orders", "", &Order::new("after", 1))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
}

/// Over its storage quota a namespace cannot add records or files, can
/// still delete, and deleting brings it back under; others are untouched.
#[tokio::test]
async fn a_namespace_over_its_storage_quota_may_delete_but_not_grow() {
    let mut n = TestNode::start().await;
    let c = &mut n.clients;
    for ns in ["shop", "other"] {
        c.register_shop(ns).await;
        c.create_orders(ns, "orders", &[]).await;
    }
    c.put("shop", "orders", "o1", &Order::new("holder", 1))
        .await
        .unwrap();
    const QUOTA: u64 = 600_000;
    set(
        c,
        proto::NamespaceQuota {
            storage_bytes: Some(QUOTA),
            ..quota("shop")
        },
    )
    .await
    .unwrap();
    let blob = vec![7u8; 100_000];
    let mut put = 0;
    let refusal = loop {
        assert!(
            put < 60,
            "60 files of 100 kB against a 600 kB quota all went"
        );
        match put_with(c, header("o1", &format!("f{put}")), &blob, 1 << 16).await {
            Ok(_) => put += 1,
            Err(e) => break e,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!("refused after {put} files: {}", refusal.message());
    assert_eq!(refusal.code(), Code::ResourceExhausted, "{refusal:?}");
    assert!(refusal.message().contains("storage quota"), "{refusal:?}");
    assert!(put >= 5, "{put} files of 100 kB fill a 600 kB quota");
    assert!(
        put <= 7,
        "{put} files: the quota lets at most one write past it"
    );
    let used = get(c, "shop").await.usage.unwrap().storage_bytes;
    assert!(used >= QUOTA, "{used}");
    let e = c
        .put("shop", "orders", "", &Order::new("more", 1))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    c.put("other", "orders", "", &Order::new("free", 1))
        .await
        .expect("another namespace is not limited");

    // Deletes go while over the quota, and free it.
    for i in 0..put {
        c.records
            .delete_file(proto::DeleteFileRequest {
                file: crate::files::file("o1", &format!("f{i}")),
                ..Default::default()
            })
            .await
            .expect("a delete over the quota");
    }
    let t = Instant::now();
    while c
        .put("shop", "orders", "", &Order::new("again", 1))
        .await
        .is_err()
    {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "deleting never freed the quota"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(get(c, "shop").await.usage.unwrap().storage_bytes < QUOTA);
}
