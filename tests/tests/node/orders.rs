//! The `orders` example guest (written with collector-sdk) as a user would
//! run it: its .proto registered, its collections created, then called on
//! its own gRPC paths.

use collector::proto;
use collector_tests::{Clients, TestNode, guest};
use prost::Message;
use tonic::Code;

// The messages of guests/orders/proto/orders.proto, written by hand so the
// test also checks the wire format the guest generated from that file.
#[derive(Clone, PartialEq, prost::Message)]
struct Product {
    #[prost(string, tag = "1")]
    sku: String,
    #[prost(string, tag = "2")]
    name: String,
    #[prost(int64, tag = "3")]
    price_cents: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct LineItem {
    #[prost(string, tag = "1")]
    sku: String,
    #[prost(int64, tag = "2")]
    quantity: i64,
    #[prost(int64, tag = "3")]
    unit_cents: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Order {
    #[prost(string, tag = "1")]
    id: String,
    #[prost(string, tag = "2")]
    customer: String,
    #[prost(message, repeated, tag = "3")]
    items: Vec<LineItem>,
    #[prost(int64, tag = "4")]
    total_cents: i64,
    #[prost(string, tag = "5")]
    status: String,
    #[prost(string, tag = "6")]
    note: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct CreateOrder {
    #[prost(string, tag = "1")]
    customer: String,
    #[prost(message, repeated, tag = "2")]
    items: Vec<LineItem>,
    #[prost(string, tag = "3")]
    note: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Quote {
    #[prost(message, repeated, tag = "1")]
    items: Vec<LineItem>,
    #[prost(int64, tag = "2")]
    total_cents: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct OrderRef {
    #[prost(string, tag = "1")]
    id: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ListOrders {
    #[prost(string, tag = "1")]
    customer: String,
    #[prost(string, tag = "2")]
    status: String,
    #[prost(int64, tag = "3")]
    min_total_cents: i64,
    #[prost(uint32, tag = "4")]
    page_size: u32,
    #[prost(string, tag = "5")]
    page_token: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct OrderPage {
    #[prost(message, repeated, tag = "1")]
    orders: Vec<Order>,
    #[prost(string, tag = "2")]
    next_page_token: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct CustomerRef {
    #[prost(string, tag = "1")]
    customer: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct CustomerSummary {
    #[prost(string, tag = "1")]
    customer: String,
    #[prost(int64, tag = "2")]
    open_orders: i64,
    #[prost(int64, tag = "3")]
    paid_orders: i64,
    #[prost(int64, tag = "4")]
    open_cents: i64,
}

const NS: &str = "shop";

fn item(sku: &str, quantity: i64) -> LineItem {
    LineItem {
        sku: sku.into(),
        quantity,
        unit_cents: 0,
    }
}

fn basket(customer: &str, items: Vec<LineItem>) -> CreateOrder {
    CreateOrder {
        customer: customer.into(),
        items,
        note: String::new(),
    }
}

/// Everything a user does before the first call: the .proto, the two
/// collections, a catalogue, and the component with its grants.
pub(crate) async fn setup(c: &mut Clients) {
    c.register_guest_proto(NS, "orders").await;
    for (name, ty, indexes) in [
        ("products", "orders.Product", vec![]),
        ("orders", "orders.Order", vec!["customer".to_string()]),
    ] {
        c.repo
            .create_collection(proto::CreateCollectionRequest {
                namespace: NS.into(),
                name: name.into(),
                message_type: ty.into(),
                indexes,
                ..Default::default()
            })
            .await
            .unwrap();
    }
    for (sku, price_cents) in [("tea", 450), ("mug", 1200), ("pot", 3500)] {
        let p = Product {
            sku: sku.into(),
            name: format!("a {sku}"),
            price_cents,
        };
        c.records
            .create(proto::CreateRequest {
                namespace: NS.into(),
                collection: "products".into(),
                record: Some(proto::Record {
                    id: sku.into(),
                    data: Some(prost_types::Any {
                        type_url: "type.googleapis.com/orders.Product".into(),
                        value: p.encode_to_vec(),
                    }),
                    ..Default::default()
                }),
            })
            .await
            .unwrap();
    }
    c.registry
        .register_service(proto::RegisterServiceRequest {
            namespace: NS.into(),
            service: "orders.Orders".into(),
            component: guest("orders"),
            grants: vec![
                proto::Grant {
                    collection: "products".into(),
                    read_only: true,
                },
                proto::Grant {
                    collection: "orders".into(),
                    read_only: false,
                },
            ],
            limits: None,
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn the_orders_guest_validates_prices_stores_and_queries() {
    let mut n = TestNode::start().await;
    let c = &mut n.clients;
    setup(c).await;

    // Create: priced from the catalogue through an invoke of Price.
    let mut req = basket("ada", vec![item("tea", 2), item("pot", 1)]);
    req.note = "gift wrap".into();
    let created: Order = c.call(NS, "/orders.Orders/Create", &req).await.unwrap();
    assert_eq!(created.total_cents, 2 * 450 + 3500);
    assert_eq!(created.status, "open");
    assert_eq!(created.items[1].unit_cents, 3500);
    assert_eq!(created.note, "gift wrap");
    assert!(uuid::Uuid::parse_str(&created.id).is_ok(), "{}", created.id);
    let got: Order = c
        .call(
            NS,
            "/orders.Orders/Get",
            &OrderRef {
                id: created.id.clone(),
            },
        )
        .await
        .unwrap();
    assert_eq!(got, created);

    // Validation: each failure names what to fix and writes nothing.
    for (bad, needle) in [
        (basket("", vec![item("tea", 1)]), "customer is required"),
        (basket("ada", vec![]), "1 to 100 items"),
        (basket("ada", vec![item("tea", 0)]), "items[0].quantity"),
        (
            basket("ada", vec![item("mug", 1), item("gold", 1)]),
            "items[1].sku \"gold\"",
        ),
    ] {
        let err = c
            .call::<Order>(NS, "/orders.Orders/Create", &bad)
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(err.message().contains(needle), "{needle}: {err:?}");
    }
    assert_eq!(c.count(NS, "orders").await, 1);
    let quote: Quote = c
        .call(
            NS,
            "/orders.Orders/Price",
            &basket("bob", vec![item("mug", 3)]),
        )
        .await
        .unwrap();
    assert_eq!(quote.total_cents, 3600);
    assert_eq!(c.count(NS, "orders").await, 1, "Price writes nothing");

    // More orders, then queries: filter by customer and status, largest first, paged.
    for (who, sku, q) in [("ada", "mug", 1), ("ada", "tea", 1), ("bob", "pot", 2)] {
        c.call::<Order>(
            NS,
            "/orders.Orders/Create",
            &basket(who, vec![item(sku, q)]),
        )
        .await
        .unwrap();
    }
    let page: OrderPage = c
        .call(
            NS,
            "/orders.Orders/List",
            &ListOrders {
                customer: "ada".into(),
                page_size: 2,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let totals: Vec<i64> = page.orders.iter().map(|o| o.total_cents).collect();
    assert_eq!(totals, vec![4400, 1200]);
    assert!(!page.next_page_token.is_empty());
    let rest: OrderPage = c
        .call(
            NS,
            "/orders.Orders/List",
            &ListOrders {
                customer: "ada".into(),
                page_size: 2,
                page_token: page.next_page_token,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(rest.orders.len(), 1);
    assert_eq!(rest.orders[0].total_cents, 450);
    assert!(rest.next_page_token.is_empty());
    let big: OrderPage = c
        .call(
            NS,
            "/orders.Orders/List",
            &ListOrders {
                customer: "ada".into(),
                min_total_cents: 1000,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(big.orders.len(), 2);

    // Pay: open -> paid once; the second time is a conflict and changes nothing.
    let paid: Order = c
        .call(
            NS,
            "/orders.Orders/Pay",
            &OrderRef {
                id: created.id.clone(),
            },
        )
        .await
        .unwrap();
    assert_eq!(paid.status, "paid");
    let again = c
        .call::<Order>(
            NS,
            "/orders.Orders/Pay",
            &OrderRef {
                id: created.id.clone(),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition, "{again:?}");
    assert!(again.message().contains("only open orders"), "{again:?}");
    let missing = c
        .call::<Order>(NS, "/orders.Orders/Get", &OrderRef { id: "nope".into() })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound, "{missing:?}");

    let open: OrderPage = c
        .call(
            NS,
            "/orders.Orders/List",
            &ListOrders {
                customer: "ada".into(),
                status: "open".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(open.orders.len(), 2);
    let summary: CustomerSummary = c
        .call(
            NS,
            "/orders.Orders/Summary",
            &CustomerRef {
                customer: "ada".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!(
        summary,
        CustomerSummary {
            customer: "ada".into(),
            open_orders: 2,
            paid_orders: 1,
            open_cents: 1200 + 450,
        }
    );

    // A request that is not the method's input message never reaches the guest.
    let garbage = c
        .call_raw(NS, "/orders.Orders/Create", vec![0xff, 0xff, 0xff])
        .await
        .unwrap_err();
    assert_eq!(garbage.code(), Code::InvalidArgument, "{garbage:?}");
}

/// What a handler logs reaches the node's ring for its namespace: read
/// over gRPC (newest first, filtered, paged) and with `collector logs`.
#[tokio::test]
async fn what_the_guest_logs_is_read_back_over_grpc_and_with_the_cli() {
    const BIN: &str = env!("CARGO_BIN_EXE_collector-node");
    let dir = tempfile::tempdir().unwrap();
    let node = collector_tests::ProcessNode::start(BIN, dir.path());
    let mut c = Clients::connect(node.addr).await;
    setup(&mut c).await;
    for who in ["ada", "grace", "linus"] {
        let _: Order = c
            .call(
                NS,
                "/orders.Orders/Create",
                &basket(who, vec![item("tea", 1)]),
            )
            .await
            .unwrap();
    }
    let logs = |service: &str, min_level: &str, limit: u32, before: u64| {
        let mut registry = c.registry.clone();
        let req = proto::ListHandlerLogsRequest {
            namespace: NS.into(),
            service: service.into(),
            min_level: min_level.into(),
            limit,
            before,
        };
        async move { registry.list_handler_logs(req).await }
    };
    let all = logs("", "", 0, 0).await.unwrap().into_inner();
    let said: Vec<&str> = all.lines.iter().map(|l| l.message.as_str()).collect();
    assert_eq!(said.len(), 3, "{said:?}");
    assert!(
        said[0].contains("for linus: 450 cents"),
        "newest first: {said:?}"
    );
    assert!(said[2].contains("for ada"), "{said:?}");
    assert!(all.lines.iter().all(|l| l.level == "info"
        && l.service == "orders.Orders"
        && l.method == "Create"
        && l.time_us > 0));
    assert_eq!(all.next_before, 0, "no more");
    // Paged: two, then the rest.
    let first = logs("", "", 2, 0).await.unwrap().into_inner();
    assert_eq!(first.lines.len(), 2);
    let rest = logs("", "", 2, first.next_before)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rest.lines.len(), 1);
    assert_eq!(rest.lines[0].message, all.lines[2].message);
    // Filters.
    assert!(
        logs("", "warn", 0, 0)
            .await
            .unwrap()
            .into_inner()
            .lines
            .is_empty()
    );
    assert!(
        logs("other.Svc", "", 0, 0)
            .await
            .unwrap()
            .into_inner()
            .lines
            .is_empty()
    );
    let bad = logs("", "loud", 0, 0).await.unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument, "{bad:?}");
    // Another namespace sees none of them.
    let mut registry = c.registry.clone();
    let other = registry
        .list_handler_logs(proto::ListHandlerLogsRequest {
            namespace: "elsewhere".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(other.lines.is_empty());

    // The CLI prints the same lines as JSON.
    let out = std::process::Command::new(BIN)
        .env("COLLECTOR_TOKEN", collector_tests::TOKEN)
        .args(["--node", &node.addr.to_string(), "-n", NS])
        .args([
            "logs",
            "--service",
            "orders.Orders",
            "--level",
            "info",
            "--limit",
            "1",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let line = &json["lines"][0];
    assert_eq!(line["level"], "info");
    assert_eq!(line["method"], "Create");
    assert!(
        line["message"].as_str().unwrap().contains("for linus"),
        "{json}"
    );
    assert!(json["next_before"].as_u64().unwrap() > 0, "{json}");
}
