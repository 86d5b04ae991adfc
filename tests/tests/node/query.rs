use collector::proto::{self, FilterOp, value::Kind};
use collector_tests::{Address, Clients, Customer, Order, TestNode};
use std::collections::BTreeSet;
use tonic::Code;

fn v(k: Kind) -> Option<proto::Value> {
    Some(proto::Value { kind: Some(k) })
}
fn s(x: &str) -> Option<proto::Value> {
    v(Kind::StringValue(x.into()))
}
fn i(x: i64) -> Option<proto::Value> {
    v(Kind::IntValue(x))
}
fn filter(field: &str, op: FilterOp, value: Option<proto::Value>) -> proto::Filter {
    proto::Filter {
        field: field.into(),
        op: op as i32,
        value,
        values: vec![],
    }
}

async fn ids(c: &mut Clients, filters: Vec<proto::Filter>) -> BTreeSet<String> {
    let r = c
        .search(proto::SearchRequest {
            namespace: "shop".into(),
            collection: "orders".into(),
            filters,
            page_size: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(r.total_count as usize, r.hits.len());
    r.hits.into_iter().map(|h| h.record.unwrap().id).collect()
}

fn set(xs: &[&str]) -> BTreeSet<String> {
    xs.iter().map(|s| s.to_string()).collect()
}

async fn seeded() -> TestNode {
    let mut n = TestNode::start().await;
    let c = &mut n.clients;
    c.register_shop("shop").await;
    c.create_orders("shop", "orders", &["quantity", "customer.address.city"])
        .await;
    let city = |name: &str, city: &str| {
        Some(Customer {
            name: name.into(),
            address: Some(Address {
                city: city.into(),
                zip: String::new(),
            }),
        })
    };
    let rows = [
        (
            "a",
            Order {
                title: "100% cotton shirt".into(),
                quantity: 1,
                price: 9.5,
                paid: true,
                status: 1,
                customer: city("Ann", "Oslo"),
                tags: vec!["red".into(), "sale".into()],
                ..Default::default()
            },
        ),
        (
            "b",
            Order {
                title: "100 cotton socks".into(),
                quantity: 5,
                price: 2.0,
                status: 2,
                customer: city("Bob", "Bergen"),
                tags: vec!["blue".into()],
                ..Default::default()
            },
        ),
        (
            "c",
            Order {
                title: "wool_hat".into(),
                quantity: 10,
                price: 20.0,
                paid: true,
                customer: city("Cid", "Oslo"),
                priority: Some(0),
                ..Default::default()
            },
        ),
        (
            "d",
            Order {
                title: "woolhat".into(),
                quantity: 0,
                ..Default::default()
            },
        ),
    ];
    for (id, o) in rows {
        c.put("shop", "orders", id, &o).await.unwrap();
    }
    n
}

#[tokio::test]
async fn every_filter_operator() {
    let mut n = seeded().await;
    let c = &mut n.clients;
    use FilterOp::*;
    assert_eq!(
        ids(c, vec![filter("quantity", Eq, i(5))]).await,
        set(&["b"])
    );
    assert_eq!(
        ids(c, vec![filter("quantity", Eq, i(0))]).await,
        set(&["d"]),
        "unset number equals its default"
    );
    assert_eq!(
        ids(c, vec![filter("quantity", Ne, i(5))]).await,
        set(&["a", "c", "d"])
    );
    assert_eq!(
        ids(c, vec![filter("quantity", Gt, i(1))]).await,
        set(&["b", "c"])
    );
    assert_eq!(
        ids(c, vec![filter("quantity", Ge, i(1))]).await,
        set(&["a", "b", "c"])
    );
    assert_eq!(
        ids(c, vec![filter("quantity", Lt, i(5))]).await,
        set(&["a", "d"])
    );
    assert_eq!(
        ids(c, vec![filter("quantity", Le, i(5))]).await,
        set(&["a", "b", "d"])
    );
    assert_eq!(
        ids(c, vec![filter("price", Gt, v(Kind::DoubleValue(9.0)))]).await,
        set(&["a", "c"])
    );
    assert_eq!(
        ids(c, vec![filter("paid", Eq, v(Kind::BoolValue(true)))]).await,
        set(&["a", "c"])
    );
    assert_eq!(
        ids(c, vec![filter("status", Eq, s("SHIPPED"))]).await,
        set(&["b"])
    );
    assert_eq!(ids(c, vec![filter("status", Eq, i(1))]).await, set(&["a"]));
    // Nested paths.
    assert_eq!(
        ids(c, vec![filter("customer.address.city", Eq, s("Oslo"))]).await,
        set(&["a", "c"])
    );
    assert_eq!(
        ids(c, vec![filter("customer.name", Prefix, s("B"))]).await,
        set(&["b"])
    );
    // CONTAINS and PREFIX are literal: % and _ match only themselves.
    assert_eq!(
        ids(c, vec![filter("title", Contains, s("100%"))]).await,
        set(&["a"])
    );
    assert_eq!(
        ids(c, vec![filter("title", Contains, s("%"))]).await,
        set(&["a"])
    );
    assert_eq!(
        ids(c, vec![filter("title", Contains, s("l_h"))]).await,
        set(&["c"])
    );
    assert_eq!(
        ids(c, vec![filter("title", Prefix, s("wool_"))]).await,
        set(&["c"])
    );
    assert_eq!(
        ids(c, vec![filter("title", Prefix, s("100"))]).await,
        set(&["a", "b"])
    );
    // IN.
    let inf = proto::Filter {
        field: "quantity".into(),
        op: In as i32,
        value: None,
        values: vec![i(1).unwrap(), i(10).unwrap()],
    };
    assert_eq!(ids(c, vec![inf]).await, set(&["a", "c"]));
    // EXISTS / NOT_EXISTS on scalars, messages, lists and explicit-presence fields.
    assert_eq!(
        ids(c, vec![filter("paid", Exists, None)]).await,
        set(&["a", "c"])
    );
    assert_eq!(
        ids(c, vec![filter("customer", NotExists, None)]).await,
        set(&["d"])
    );
    assert_eq!(
        ids(c, vec![filter("tags", Exists, None)]).await,
        set(&["a", "b"])
    );
    assert_eq!(
        ids(c, vec![filter("priority", Exists, None)]).await,
        set(&["c"]),
        "optional set to 0 is present"
    );
    // Repeated leaf: any element.
    assert_eq!(
        ids(c, vec![filter("tags", Eq, s("sale"))]).await,
        set(&["a"])
    );
    assert_eq!(
        ids(c, vec![filter("tags", Ne, s("sale"))]).await,
        set(&["b", "c", "d"])
    );
    // Several filters AND together; labels too.
    assert_eq!(
        ids(
            c,
            vec![
                filter("customer.address.city", Eq, s("Oslo")),
                filter("quantity", Gt, i(1))
            ]
        )
        .await,
        set(&["c"])
    );
}

#[tokio::test]
async fn bad_filters_and_injection_attempts_are_invalid_argument() {
    let mut n = seeded().await;
    let c = &mut n.clients;
    use FilterOp::*;
    let attempts = [
        filter("title') OR 1=1 --", Eq, s("x")),
        filter("title = title OR 1", Eq, s("x")),
        filter("customer.address.nope", Eq, s("x")),
        filter("quantity", Eq, s("five")),
        filter("quantity", Contains, i(1)),
        filter("status", Eq, s("LOST")),
        filter("customer", Eq, s("x")),
        filter("title", Eq, None),
        filter("title", Unspecified, s("x")),
        proto::Filter {
            field: "quantity".into(),
            op: In as i32,
            value: None,
            values: vec![],
        },
    ];
    for f in attempts {
        let e = c
            .search(proto::SearchRequest {
                namespace: "shop".into(),
                collection: "orders".into(),
                filters: vec![f.clone()],
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{f:?} → {e:?}");
    }
    let unknown = c
        .search(proto::SearchRequest {
            namespace: "shop".into(),
            collection: "orders".into(),
            filters: vec![filter("colour", Eq, s("x"))],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        unknown.message().contains("colour"),
        "the message names the field: {}",
        unknown.message()
    );
    for field in ["title; DROP TABLE records", "tags", "customer", "_rowid"] {
        let e = c
            .search(proto::SearchRequest {
                namespace: "shop".into(),
                collection: "orders".into(),
                order_by: Some(proto::OrderBy {
                    field: field.into(),
                    descending: false,
                }),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "order_by {field}");
    }
    for q in ["\"unbalanced", "AND OR", "nope:col"] {
        let e = c
            .search(proto::SearchRequest {
                namespace: "shop".into(),
                collection: "orders".into(),
                query: q.into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "query {q:?}: {e:?}");
    }
    let e = c
        .search(proto::SearchRequest {
            namespace: "shop".into(),
            collection: "orders".into(),
            page_token: "garbage".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    // Still all there.
    assert_eq!(ids(c, vec![]).await.len(), 4);
}

#[tokio::test]
async fn paging_is_complete_with_ties_in_both_directions() {
    let mut n = TestNode::start().await;
    let c = &mut n.clients;
    c.register_shop("shop").await;
    c.create_orders("shop", "orders", &["quantity"]).await;
    for k in 0..53 {
        c.put(
            "shop",
            "orders",
            &format!("r{k:02}"),
            &Order::new("x", k % 4),
        )
        .await
        .unwrap();
    }
    for (field, descending) in [
        ("quantity", false),
        ("quantity", true),
        ("_id", true),
        ("title", false),
        ("_created", false),
    ] {
        let mut seen = Vec::new();
        let mut token = String::new();
        let mut last_q: Option<i64> = None;
        loop {
            let r = c
                .search(proto::SearchRequest {
                    namespace: "shop".into(),
                    collection: "orders".into(),
                    order_by: Some(proto::OrderBy {
                        field: field.into(),
                        descending,
                    }),
                    page_size: 7,
                    page_token: token.clone(),
                    ..Default::default()
                })
                .await
                .unwrap();
            assert_eq!(r.total_count, 53);
            for h in &r.hits {
                let rec = h.record.as_ref().unwrap();
                if field == "quantity" {
                    let q = collector_tests::order_of(rec).quantity;
                    if let Some(prev) = last_q {
                        assert!(
                            if descending { q <= prev } else { q >= prev },
                            "order broken"
                        );
                    }
                    last_q = Some(q);
                }
                seen.push(rec.id.clone());
            }
            if r.next_page_token.is_empty() {
                break;
            }
            token = r.next_page_token;
        }
        let unique: BTreeSet<_> = seen.iter().cloned().collect();
        assert_eq!(
            (seen.len(), unique.len()),
            (53, 53),
            "{field} desc={descending}: every record exactly once"
        );
    }
    // List pages the same way.
    let mut token = String::new();
    let mut n_seen = 0;
    loop {
        let r = c
            .records
            .list(proto::ListRequest {
                namespace: "shop".into(),
                collection: "orders".into(),
                page_size: 10,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        n_seen += r.records.len();
        if r.next_page_token.is_empty() {
            break;
        }
        token = r.next_page_token;
    }
    assert_eq!(n_seen, 53);
}

#[tokio::test]
async fn full_text_follows_writes_and_ranks() {
    let mut n = TestNode::start().await;
    let c = &mut n.clients;
    c.register_shop("shop").await;
    c.create_orders("shop", "orders", &[]).await;
    let mut once = Order::new("lamp", 1);
    once.note = "a lamp with a shade and a long cable for the desk".into();
    let mut thrice = Order::new("lamp lamp", 1);
    thrice.note = "lamp".into();
    c.put("shop", "orders", "once", &once).await.unwrap();
    c.put("shop", "orders", "thrice", &thrice).await.unwrap();
    c.put("shop", "orders", "other", &Order::new("chair", 1))
        .await
        .unwrap();

    let q = |c: &mut Clients, text: &str| {
        let mut c = c.clone();
        let text = text.to_string();
        async move {
            c.search(proto::SearchRequest {
                namespace: "shop".into(),
                collection: "orders".into(),
                query: text,
                ..Default::default()
            })
            .await
            .unwrap()
        }
    };
    let r = q(c, "lamp").await;
    assert_eq!(r.total_count, 2);
    let order: Vec<_> = r
        .hits
        .iter()
        .map(|h| h.record.as_ref().unwrap().id.clone())
        .collect();
    assert_eq!(
        order,
        vec!["thrice", "once"],
        "more occurrences in a shorter text rank first"
    );
    assert!(r.hits[0].score > r.hits[1].score && r.hits[1].score > 0.0);
    // Nested and enum text is indexed too; prefix queries work.
    assert_eq!(q(c, "cab*").await.total_count, 1);

    // Update moves the record in the index, delete removes it.
    c.records
        .update(proto::UpdateRequest {
            namespace: "shop".into(),
            collection: "orders".into(),
            record: Some(proto::Record {
                id: "other".into(),
                data: Some(Order::new("lamp stand", 1).any()),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(q(c, "chair").await.total_count, 0);
    assert_eq!(q(c, "lamp").await.total_count, 3);
    c.records
        .delete(proto::DeleteRequest {
            namespace: "shop".into(),
            collection: "orders".into(),
            id: "once".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(q(c, "lamp").await.total_count, 2);
    assert_eq!(q(c, "cable").await.total_count, 0);

    // Text, filters and labels combine; Count agrees with Search.
    c.records
        .create(proto::CreateRequest {
            namespace: "shop".into(),
            collection: "orders".into(),
            record: Some(proto::Record {
                id: "lab".into(),
                data: Some(Order::new("lamp", 7).any()),
                labels: [("team".to_string(), "blue".to_string())].into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let labelled = c
        .search(proto::SearchRequest {
            namespace: "shop".into(),
            collection: "orders".into(),
            query: "lamp".into(),
            labels: [("team".to_string(), "blue".to_string())].into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        labelled
            .hits
            .iter()
            .map(|h| h.record.as_ref().unwrap().id.as_str())
            .collect::<Vec<_>>(),
        vec!["lab"]
    );
    let counted = c
        .records
        .count(proto::CountRequest {
            namespace: "shop".into(),
            collection: "orders".into(),
            query: "lamp".into(),
            filters: vec![filter("quantity", FilterOp::Eq, i(7))],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(counted.count, 1);
}

fn search_req(text: &str, filters: Vec<proto::Filter>) -> proto::SearchRequest {
    proto::SearchRequest {
        namespace: "shop".into(),
        collection: "orders".into(),
        query: text.into(),
        filters,
        ..Default::default()
    }
}

/// A 20,000-term search once ran for minutes; 64 filters of 1,000 values
/// once came back with 347 KB of SQL text. Both are refused at once, with
/// a short message.
#[tokio::test]
async fn oversized_queries_are_refused_with_a_short_message() {
    let mut n = seeded().await;
    let c = &mut n.clients;
    let terms = vec!["word"; 20_000].join(" ");
    for text in [terms, "x".repeat(5000)] {
        let e = c.search(search_req(&text, vec![])).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(e.message().len() < 300, "{}", e.message().len());
    }
    let many = |k: usize| proto::Filter {
        field: "title".into(),
        op: FilterOp::In as i32,
        value: None,
        values: (0..1000)
            .map(|j| proto::Value {
                kind: Some(Kind::StringValue(format!("t{k}-{j}"))),
            })
            .collect(),
    };
    let e = c
        .search(search_req("", (0..64).map(many).collect()))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().len() < 300, "{}", e.message().len());
    assert!(e.message().contains("binds"), "{e:?}");
    // The node still answers.
    assert!(!ids(c, vec![]).await.is_empty());
}

/// Three records of several MiB once made the default page too big to send.
#[tokio::test]
async fn pages_are_bounded_in_bytes_as_well_as_rows() {
    let mut n = TestNode::start().await;
    let c = &mut n.clients;
    c.register_shop("shop").await;
    c.create_orders("shop", "orders", &[]).await;
    for id in ["a", "b", "c"] {
        let mut o = Order::new(id, 1);
        o.note = id.repeat(5 << 20);
        c.put("shop", "orders", id, &o).await.unwrap();
    }
    let mut token = String::new();
    let mut seen = Vec::new();
    for _ in 0..10 {
        let r = c
            .search(proto::SearchRequest {
                page_token: token,
                ..search_req("", vec![])
            })
            .await
            .unwrap();
        assert!(!r.hits.is_empty() && r.hits.len() < 3, "{}", r.hits.len());
        seen.extend(r.hits.into_iter().map(|h| h.record.unwrap().id));
        token = r.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(seen, ["a", "b", "c"]);
}

/// A query that runs past its budget is stopped inside SQLite with
/// DEADLINE_EXCEEDED, and point reads keep working.
#[tokio::test]
async fn a_query_past_its_time_budget_is_stopped() {
    let mut n =
        TestNode::start_with(|c| c.query_timeout = std::time::Duration::from_millis(1)).await;
    let c = &mut n.clients;
    c.register_shop("shop").await;
    c.create_orders("shop", "orders", &[]).await;
    for b in 0..20 {
        let ops = (0..1000)
            .map(|i| {
                let mut o = Order::new(&format!("order {b}-{i}"), i);
                o.note = "n".repeat(200);
                proto::BatchOp {
                    op: Some(proto::batch_op::Op::Create(proto::CreateRequest {
                        record: Some(proto::Record {
                            id: format!("{b}-{i}"),
                            data: Some(o.any()),
                            ..Default::default()
                        }),
                        ..Default::default()
                    })),
                }
            })
            .collect();
        let r = c
            .records
            .batch(proto::BatchRequest {
                namespace: "shop".into(),
                collection: "orders".into(),
                ops,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(r.committed);
    }
    // An unindexed filter scans all 20,000 records' JSON.
    let e = c
        .records
        .count(proto::CountRequest {
            namespace: "shop".into(),
            collection: "orders".into(),
            filters: vec![filter("note", FilterOp::Contains, s("zzz"))],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");
    assert!(e.message().contains("--query-timeout"), "{e:?}");
    let got = c
        .records
        .get(proto::GetRequest {
            namespace: "shop".into(),
            collection: "orders".into(),
            id: "3-7".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.id, "3-7");
}
