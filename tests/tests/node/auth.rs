//! API keys and roles: every method needs its permission from the one
//! table (`collector::auth::table::METHODS`), keys are created, listed,
//! rotated, revoked and expire, and listings show only what a key may see.

use collector::auth::{Need, Role, table::METHODS};
use collector::proto::{self, collective_dispatcher_client::CollectiveDispatcherClient};
use collector_tests::{Clients, TOKEN, TestNode};
use prost_reflect::{DynamicMessage, Value};
use std::time::Duration;
use tonic::Code;

/// Creates a key with `grants` (NAMESPACE, ROLE) through `c`; its token.
async fn key(c: &mut Clients, grants: &[(&str, &str)]) -> String {
    c.registry
        .create_key(proto::CreateKeyRequest {
            description: format!("test key {grants:?}"),
            grants: grants
                .iter()
                .map(|(ns, role)| proto::RoleGrant {
                    namespace: ns.to_string(),
                    role: role.to_string(),
                })
                .collect(),
            ..Default::default()
        })
        .await
        .expect("create key")
        .into_inner()
        .token
}

async fn whoami(c: &mut Clients) -> Result<proto::KeyInfo, tonic::Status> {
    c.registry
        .who_am_i(proto::WhoAmIRequest {})
        .await
        .map(|r| r.into_inner())
}

/// A node with shop/orders (empty), and its address.
async fn shop_node() -> (TestNode, std::net::SocketAddr) {
    let mut n = TestNode::start().await;
    n.clients.register_shop("shop").await;
    n.clients.create_orders("shop", "orders", &[]).await;
    let addr = n.handle.as_ref().unwrap().addr;
    (n, addr)
}

fn id_of(token: &str) -> String {
    token[3..19].to_string()
}

/// Calls `path` with a request of its input type naming shop/orders (and
/// `key_id` where the method takes a key), as `token` (None: no key).
async fn call(
    addr: std::net::SocketAddr,
    token: Option<&str>,
    path: &str,
    ids: &Ids,
) -> Result<(), tonic::Status> {
    let pool = collector::proto::api_pool();
    // `/metrics` is an HTTP route: no service, no body.
    let (service, method) = path[1..].split_once('/').unwrap_or((&path[1..], ""));
    let body = match pool
        .get_service_by_name(service)
        .and_then(|s| s.methods().find(|m| m.name() == method))
    {
        Some(m) => {
            let mut msg = fill(m.input(), service, ids);
            if method == "CreateKey" {
                let grant = DynamicMessage::decode(
                    pool.get_message_by_name("collector.v1.RoleGrant").unwrap(),
                    prost::Message::encode_to_vec(&proto::RoleGrant {
                        namespace: "shop".into(),
                        role: "read".into(),
                    })
                    .as_slice(),
                )
                .unwrap();
                msg.set_field_by_name("grants", Value::List(vec![Value::Message(grant)]));
            }
            prost::Message::encode_to_vec(&msg)
        }
        None => Vec::new(),
    };
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let channel = match token {
        Some(t) => collector_tests::keyed(channel, t),
        None => collector::api::bearer::Bearer::default().on(channel),
    };
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let mut req = tonic::Request::new(prost::bytes::Bytes::from(body));
    req.metadata_mut()
        .insert("x-collector-namespace", "shop".parse().unwrap());
    // A stream that stays open (Health/Watch) got past the gate.
    let call = grpc.unary(
        req,
        path.parse().unwrap(),
        collector::api::dynamic::BytesCodec,
    );
    match tokio::time::timeout(Duration::from_secs(3), call).await {
        Ok(r) => r.map(|_| ()),
        Err(_) => Ok(()),
    }
}

/// The ids the walk's requests name: a key to revoke and rotate, a backup.
struct Ids {
    key: String,
    backup: String,
}

/// A message of `desc` naming shop/orders, record o1, path a.txt, key
/// `key_id` (nested headers and file references too).
fn fill(desc: prost_reflect::MessageDescriptor, service: &str, ids: &Ids) -> DynamicMessage {
    let mut msg = DynamicMessage::new(desc.clone());
    for f in desc.fields() {
        if let prost_reflect::Kind::Message(inner) = f.kind() {
            if matches!(f.name(), "header" | "file") {
                msg.set_field(&f, Value::Message(fill(inner, service, ids)));
            }
            continue;
        }
        let v = match f.name() {
            "namespace" => "shop",
            "collection" | "name" => "orders",
            "record_id" => "o1",
            "path" => "a.txt",
            "id" if service.ends_with("Registry") => &ids.key,
            "backup_id" => &ids.backup,
            _ => continue,
        };
        if f.kind() == prost_reflect::Kind::String && !f.is_list() {
            msg.set_field(&f, Value::String(v.to_string()));
        }
    }
    msg
}

fn denied(r: &Result<(), tonic::Status>) -> bool {
    matches!(r, Err(s) if matches!(s.code(), Code::PermissionDenied | Code::Unauthenticated))
}

/// Every built-in method (and a registered one): without a key →
/// UNAUTHENTICATED; with the role just below the one it needs →
/// PERMISSION_DENIED; with that role → neither.
#[tokio::test]
async fn every_method_needs_exactly_the_permission_the_table_gives_it() {
    let (mut n, addr) = shop_node().await;
    let c = &mut n.clients;
    let mut tokens = std::collections::HashMap::new();
    tokens.insert(None, key(c, &[("other", "admin")]).await);
    for r in Role::ALL {
        tokens.insert(Some(r), key(c, &[("shop", r.as_str())]).await);
    }
    // The key the key methods revoke and rotate, the backup the backup
    // methods read, verify, delete and restore.
    let mut backup = c
        .repo
        .backup_collection(proto::BackupCollectionRequest {
            namespace: "shop".into(),
            name: "orders".into(),
            include_files: false,
        })
        .await
        .unwrap()
        .into_inner();
    let mut backup_id = String::new();
    while let Some(p) = backup.message().await.unwrap() {
        if let Some(b) = p.backup {
            backup_id = b.backup_id;
        }
    }
    let victim = Ids {
        key: id_of(&key(c, &[("shop", "read")]).await),
        backup: backup_id,
    };
    let below = |r: Role| match r {
        Role::Read => None,
        Role::Write => Some(Role::Read),
        Role::Develop => Some(Role::Write),
        Role::Admin => Some(Role::Develop),
    };
    let mut walked = 0;
    let registered = ("/shop.Nope/Call", Need::Role(Role::Write));
    for &(path, need) in METHODS.iter().chain([&registered]) {
        let anonymous = call(addr, None, path, &victim).await;
        let weakest = &tokens[&None];
        match need {
            Need::Public => assert!(!denied(&anonymous), "{path}: {anonymous:?}"),
            Need::Member => {
                let r = call(addr, Some(TOKEN), path, &victim).await;
                assert_eq!(r.unwrap_err().code(), Code::Unauthenticated, "{path}");
            }
            Need::Authenticated => {
                assert_eq!(
                    anonymous.unwrap_err().code(),
                    Code::Unauthenticated,
                    "{path}"
                );
                let r = call(addr, Some(weakest), path, &victim).await;
                assert!(!denied(&r), "{path} with any key: {r:?}");
            }
            Need::Operator => {
                assert_eq!(
                    anonymous.unwrap_err().code(),
                    Code::Unauthenticated,
                    "{path}"
                );
                let admin = &tokens[&Some(Role::Admin)];
                let r = call(addr, Some(admin), path, &victim).await;
                assert_eq!(r.unwrap_err().code(), Code::PermissionDenied, "{path}");
                let r = call(addr, Some(TOKEN), path, &victim).await;
                assert!(!denied(&r), "{path} as operator: {r:?}");
            }
            Need::Role(role) => {
                assert_eq!(
                    anonymous.as_ref().unwrap_err().code(),
                    Code::Unauthenticated,
                    "{path}: {anonymous:?}"
                );
                let short = &tokens[&below(role)];
                let r = call(addr, Some(short), path, &victim).await;
                assert_eq!(
                    r.as_ref().unwrap_err().code(),
                    Code::PermissionDenied,
                    "{path} below {role}: {r:?}"
                );
                let r = call(addr, Some(&tokens[&Some(role)]), path, &victim).await;
                assert!(!denied(&r), "{path} with {role}: {r:?}");
            }
        }
        walked += 1;
    }
    assert_eq!(walked, METHODS.len() + 1);
}

/// Keys are shown once, work until revoked, expired or rotated away, and
/// survive a restart; no key hands out more than it holds.
#[tokio::test]
async fn keys_are_created_rotated_revoked_and_expire() {
    let (mut n, addr) = shop_node().await;
    let admin = key(&mut n.clients, &[("shop", "admin")]).await;
    let mut as_admin = Clients::connect_as(addr, &admin).await;
    // An admin of shop creates keys for shop only, never an operator key.
    let reader = key(&mut as_admin, &[("shop", "read")]).await;
    for (grants, operator) in [(vec![("other", "read")], false), (vec![], true)] {
        let e = as_admin
            .registry
            .create_key(proto::CreateKeyRequest {
                grants: grants
                    .iter()
                    .map(|(ns, r): &(&str, &str)| proto::RoleGrant {
                        namespace: ns.to_string(),
                        role: r.to_string(),
                    })
                    .collect(),
                operator,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    }
    let mut as_reader = Clients::connect_as(addr, &reader).await;
    assert_eq!(as_reader.count("shop", "orders").await, 0);
    let me = whoami(&mut as_reader).await.unwrap();
    assert_eq!(me.id, id_of(&reader));
    assert_eq!(me.created_by, id_of(&admin));
    // The list shows no secrets.
    let listed = as_admin
        .registry
        .list_keys(proto::ListKeysRequest {
            namespace: "shop".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .keys;
    assert!(listed.iter().any(|k| k.id == id_of(&reader)));
    assert!(!format!("{listed:?}").contains(&reader[20..]));
    // A reader cannot write, nor list keys.
    let e = as_reader
        .records
        .create(proto::CreateRequest {
            namespace: "shop".into(),
            collection: "orders".into(),
            record: Some(proto::Record {
                json: r#"{"title": "x"}"#.into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(e.message().contains("needs write"), "{e:?}");

    // Rotation with grace: both secrets work, then only the new one.
    let rotated = as_admin
        .registry
        .rotate_key(proto::RotateKeyRequest {
            id: id_of(&reader),
            grace_seconds: 2,
        })
        .await
        .unwrap()
        .into_inner()
        .token;
    assert_eq!(id_of(&rotated), id_of(&reader));
    let mut as_new = Clients::connect_as(addr, &rotated).await;
    assert_eq!(as_reader.count("shop", "orders").await, 0);
    assert_eq!(as_new.count("shop", "orders").await, 0);
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let e = as_reader.try_count("shop", "orders").await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    assert_eq!(as_new.count("shop", "orders").await, 0);

    // An expiring key stops at its time.
    let short = as_admin
        .registry
        .create_key(proto::CreateKeyRequest {
            grants: vec![proto::RoleGrant {
                namespace: "shop".into(),
                role: "read".into(),
            }],
            ttl_seconds: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .token;
    let mut as_short = Clients::connect_as(addr, &short).await;
    assert_eq!(as_short.count("shop", "orders").await, 0);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let e = whoami(&mut as_short).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert!(e.message().contains("expired"), "{e:?}");

    // Revocation is at once, and lasts across a restart.
    as_admin
        .registry
        .revoke_key(proto::RevokeKeyRequest {
            id: id_of(&rotated),
        })
        .await
        .unwrap();
    let e = whoami(&mut as_new).await.unwrap_err();
    assert!(e.message().contains("revoked"), "{e:?}");
    n.restart().await;
    let addr = n.handle.as_ref().unwrap().addr;
    let mut as_admin = Clients::connect_as(addr, &admin).await;
    assert_eq!(as_admin.count("shop", "orders").await, 0);
    let mut as_new = Clients::connect_as(addr, &rotated).await;
    let e = whoami(&mut as_new).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);

    // Malformed and made-up keys, and a bad scheme, are UNAUTHENTICATED
    // without echoing the key.
    let made_up = format!("ck_{}_{}", "f".repeat(16), "0".repeat(64));
    for bad in [
        "nonsense",
        &made_up,
        &format!("{}x", &admin[..admin.len() - 1]),
    ] {
        let mut c = Clients::connect_as(addr, bad).await;
        let e = whoami(&mut c).await.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "{bad}: {e:?}");
        assert!(
            !e.message().contains(&bad[3.min(bad.len())..]) || bad.len() < 20,
            "{e:?}"
        );
    }
}

/// Listings across namespaces show only what the key may see: Discover,
/// ListPeers and reflection.
#[tokio::test]
async fn listings_show_only_the_namespaces_a_key_sees() {
    let mut n = TestNode::start().await;
    let addr = n.handle.as_ref().unwrap().addr;
    let c = &mut n.clients;
    for ns in ["shop", "other"] {
        c.register_shop(ns).await;
        c.create_orders(ns, "orders", &[]).await;
    }
    let other = key(c, &[("other", "read")]).await;
    let mut as_other = Clients::connect_as(addr, &other).await;
    let found = as_other
        .repo
        .discover(proto::DiscoverRequest::default())
        .await
        .unwrap()
        .into_inner()
        .collections;
    let names: Vec<_> = found
        .iter()
        .map(|c| format!("{}/{}", c.namespace, c.name))
        .collect();
    assert_eq!(names, ["other/orders"]);
    let all = c
        .repo
        .discover(proto::DiscoverRequest::default())
        .await
        .unwrap()
        .into_inner()
        .collections;
    assert!(all.len() >= 2, "the operator sees every namespace: {all:?}");
    let peers = CollectiveDispatcherClient::new(as_other.channel.clone())
        .list_peers(proto::ListPeersRequest {})
        .await
        .unwrap()
        .into_inner()
        .peers;
    let owned: Vec<_> = peers
        .iter()
        .flat_map(|p| p.collections.iter().map(|c| c.namespace.clone()))
        .collect();
    assert!(
        !owned.is_empty() && owned.iter().all(|ns| ns == "other"),
        "{owned:?}"
    );
    // Reflection: shop's types resolve only for a key that sees shop.
    for (token, sees) in [(TOKEN, true), (other.as_str(), false)] {
        let channel = collector_tests::channel_as(addr, token).await;
        let mut r = tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient::new(
            channel,
        );
        let mut req = tonic::Request::new(tokio_stream::iter([
            tonic_reflection::pb::v1::ServerReflectionRequest {
                host: String::new(),
                message_request: Some(
                    tonic_reflection::pb::v1::server_reflection_request::MessageRequest::FileContainingSymbol(
                        "shop.Order".into(),
                    ),
                ),
            },
        ]));
        req.metadata_mut()
            .insert("x-collector-namespace", "shop".parse().unwrap());
        let mut s = r.server_reflection_info(req).await.unwrap().into_inner();
        let answer = s.message().await.unwrap().unwrap();
        let found = matches!(
            answer.message_response,
            Some(tonic_reflection::pb::v1::server_reflection_response::MessageResponse::FileDescriptorResponse(_))
        );
        assert_eq!(found, sees, "{token:.10}: {answer:?}");
    }
}

/// Polls `call` until it gives `want` (true: works) or `within` passes;
/// how long it took.
async fn until<F, Fut>(within: Duration, want: bool, what: &str, call: F) -> Duration
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(), tonic::Status>>,
{
    let t = std::time::Instant::now();
    loop {
        let r = call().await;
        if r.is_ok() == want {
            if !want {
                assert_eq!(r.unwrap_err().code(), Code::Unauthenticated, "{what}");
            }
            return t.elapsed();
        }
        assert!(t.elapsed() < within, "{what} within {within:?}: {r:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A key made on one member works on every member, and a revocation on
/// another stops it everywhere within a few gossip rounds; a forwarded call
/// is checked again where it lands.
#[tokio::test]
async fn keys_reach_every_member_and_so_do_revocations() {
    let a = TestNode::start().await;
    let a_addr = a.handle.as_ref().unwrap().addr;
    let b = TestNode::start_with(|c| c.join = vec![a_addr.to_string()]).await;
    let c = TestNode::start_with(|c| c.join = vec![a_addr.to_string()]).await;
    for n in [&a, &b, &c] {
        crate::mesh::wait_for(&n.clients, "three alive", Duration::from_secs(10), |ps| {
            crate::mesh::all_up(ps, 3)
        })
        .await;
    }
    let mut ca = a.clients.clone();
    ca.register_shop("shop").await;
    ca.create_orders("shop", "orders", &[]).await;
    let reader = key(&mut ca, &[("shop", "read")]).await;
    let on = |n: &TestNode| n.handle.as_ref().unwrap().addr;
    let (b_addr, c_addr) = (on(&b), on(&c));
    let who = |addr: std::net::SocketAddr| {
        let reader = reader.clone();
        async move {
            Clients::connect_as(addr, &reader)
                .await
                .registry
                .who_am_i(proto::WhoAmIRequest {})
                .await
                .map(|_| ())
        }
    };
    let reached = until(Duration::from_secs(5), true, "the key reaches C", || {
        who(c_addr)
    })
    .await;
    // Through C, which does not own shop/orders: forwarded to A, where the
    // key is checked again.
    let mut via_c = Clients::connect_as(c_addr, &reader).await;
    assert_eq!(via_c.count("shop", "orders").await, 0);
    // Revoked on B: A and C refuse it soon after.
    let mut cb = b.clients.clone();
    until(Duration::from_secs(5), true, "the key reaches B", || {
        who(b_addr)
    })
    .await;
    cb.registry
        .revoke_key(proto::RevokeKeyRequest { id: id_of(&reader) })
        .await
        .unwrap();
    let gone_c = until(Duration::from_secs(5), false, "C refuses the key", || {
        who(c_addr)
    })
    .await;
    let gone_a = until(Duration::from_secs(5), false, "A refuses the key", || {
        who(a_addr)
    })
    .await;
    eprintln!("key reached C in {reached:?}; revocation reached C in {gone_c:?}, A in {gone_a:?}");
}

/// The audit entries of `system/audit`, oldest first.
async fn audit(c: &mut Clients) -> Vec<proto::AuditEntry> {
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let page = c
            .records
            .list(proto::ListRequest {
                namespace: "system".into(),
                collection: "audit".into(),
                page_size: 1000,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        out.extend(page.records.iter().map(|r| {
            <proto::AuditEntry as prost::Message>::decode(r.data.as_ref().unwrap().value.as_slice())
                .unwrap()
        }));
        if page.next_page_token.is_empty() {
            return out;
        }
        token = page.next_page_token;
    }
}

/// Administrative calls and refused ones are in `system/audit`, with who,
/// where and how it ended; only operators read it, nobody writes it, and a
/// flood of refused calls is recorded at a bounded rate.
#[tokio::test]
async fn administrative_and_refused_calls_are_audited() {
    let (mut n, addr) = shop_node().await;
    let c = &mut n.clients;
    let writer = key(c, &[("shop", "write")]).await;
    let mut as_writer = Clients::connect_as(addr, &writer).await;
    let e = as_writer
        .repo
        .delete_collection(proto::DeleteCollectionRequest {
            namespace: "shop".into(),
            name: "orders".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    // Plain reads and writes are not administrative: not recorded.
    assert_eq!(as_writer.count("shop", "orders").await, 0);
    // Only an operator reads the log; nobody writes it.
    let e = as_writer
        .records
        .list(proto::ListRequest {
            namespace: "system".into(),
            collection: "audit".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let e = c
        .records
        .delete(proto::DeleteRequest {
            namespace: "system".into(),
            collection: "audit".into(),
            id: "x".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let operator = id_of(TOKEN);
    let want = [
        (
            "collector.v1.CollectorRegistry/RegisterProto",
            operator.as_str(),
            "shop",
            "Ok",
        ),
        (
            "collector.v1.CollectionRepo/CreateCollection",
            &operator,
            "shop",
            "Ok",
        ),
        (
            "collector.v1.CollectorRegistry/CreateKey",
            &operator,
            "",
            "Ok",
        ),
        (
            "collector.v1.CollectionRepo/DeleteCollection",
            &id_of(&writer),
            "shop",
            "PermissionDenied",
        ),
        (
            "collector.v1.CollectionService/List",
            &id_of(&writer),
            "system",
            "PermissionDenied",
        ),
    ];
    let mut entries = Vec::new();
    for _ in 0..100 {
        entries = audit(c).await;
        if entries.len() >= want.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let got: Vec<_> = entries
        .iter()
        .take(want.len())
        .map(|e| {
            (
                e.method.as_str(),
                e.key_id.as_str(),
                e.namespace.as_str(),
                e.outcome.as_str(),
            )
        })
        .collect();
    assert_eq!(got, want);
    assert!(entries.iter().all(|e| e.at_us > 0 && !e.node_id.is_empty()));
    // A flood of bad keys: at most AUDIT_DENIED_PER_SECOND a second are
    // recorded, and the next entry counts the rest.
    let before = audit(c).await.len();
    let bad = format!("ck_{}_{}", "e".repeat(16), "0".repeat(64));
    let mut as_bad = Clients::connect_as(addr, &bad).await;
    for _ in 0..200 {
        assert!(whoami(&mut as_bad).await.is_err());
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let _ = whoami(&mut as_bad).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = audit(c).await;
    let new = &after[before..];
    let limit = collector::limits::AUDIT_DENIED_PER_SECOND as usize;
    assert!(new.len() <= 3 * limit, "{} entries", new.len());
    let counted: u64 = new.iter().map(|e| e.unrecorded_denials).sum();
    assert_eq!(
        new.len() as u64 + counted,
        201,
        "every refusal is recorded or counted"
    );
    assert!(
        new.iter()
            .all(|e| e.outcome == "Unauthenticated" && e.key_id.is_empty())
    );
}

/// The audit log keeps its newest `audit_max_entries`.
#[tokio::test]
async fn the_audit_log_keeps_its_newest_entries() {
    let mut n = TestNode::start_with(|c| c.audit_max_entries = 20).await;
    let c = &mut n.clients;
    for i in 0..50 {
        key(c, &[("shop", "read")]).await;
        if i % 10 == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let mut entries = Vec::new();
    for _ in 0..100 {
        entries = audit(c).await;
        if entries.len() <= 22
            && entries
                .last()
                .is_some_and(|e| e.method.ends_with("CreateKey"))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(entries.len() <= 22, "{} entries kept", entries.len());
    assert!(entries.len() >= 10, "{} entries kept", entries.len());
}
