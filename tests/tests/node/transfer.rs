//! Clone and fetch: collections copied to a new name, here or to another
//! member of the mesh, and pulled from a member in hashed chunks that resume
//! after a dropped connection; only members of the mesh are ever contacted.

use crate::mesh::{all_up, wait_for};
use collector::proto;
use collector_tests::{Clients, Order, ProcessNode};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_collector-node");

async fn node_id(c: &Clients) -> String {
    c.repo
        .clone()
        .meta(proto::MetaRequest {})
        .await
        .unwrap()
        .into_inner()
        .node_id
}

/// Two nodes in one mesh; A holds shop/orders with `n` records of `bytes`.
/// A sends at most `A_RATE_MIB` MiB/s to a fetch, so a test can cut one.
const A_RATE_MIB: &str = "8";

async fn pair(n: usize, bytes: usize) -> (Vec<ProcessNode>, Vec<tempfile::TempDir>, Vec<Clients>) {
    let dirs = vec![tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let a = ProcessNode::start_with_flags(
        BIN,
        dirs[0].path(),
        "127.0.0.1:0",
        &[],
        &["--transfer-rate-mib", A_RATE_MIB],
    );
    let b = ProcessNode::start_with(BIN, dirs[1].path(), "127.0.0.1:0", &[a.addr.to_string()]);
    let mut ca = Clients::connect(a.addr).await;
    let cb = Clients::connect(b.addr).await;
    for c in [&ca, &cb] {
        wait_for(c, "both nodes alive", Duration::from_secs(20), |ps| {
            all_up(ps, 2)
        })
        .await;
    }
    ca.register_shop("shop").await;
    ca.create_orders("shop", "orders", &["quantity"]).await;
    let title = "t".repeat(bytes);
    for chunk in (0..n).collect::<Vec<_>>().chunks(200) {
        let ops = chunk
            .iter()
            .map(|i| proto::BatchOp {
                op: Some(proto::batch_op::Op::Create(proto::CreateRequest {
                    record: Some(proto::Record {
                        id: format!("o{i}"),
                        data: Some(Order::new(&format!("{title} lamp{i}"), *i as i64).any()),
                        ..Default::default()
                    }),
                    ..Default::default()
                })),
            })
            .collect();
        assert!(
            ca.records
                .batch(proto::BatchRequest {
                    namespace: "shop".into(),
                    collection: "orders".into(),
                    ops,
                })
                .await
                .unwrap()
                .into_inner()
                .committed
        );
    }
    wait_for(
        &cb,
        "B sees A's collection",
        Duration::from_secs(20),
        |ps| {
            ps.iter()
                .any(|p| p.collections.iter().any(|c| c.name == "orders"))
        },
    )
    .await;
    (vec![a, b], dirs, vec![ca, cb])
}

/// Runs a clone or fetch stream to its end: the reports, or the status.
async fn run(
    s: Result<tonic::Response<tonic::Streaming<proto::TransferProgress>>, tonic::Status>,
) -> Result<Vec<proto::TransferProgress>, tonic::Status> {
    let mut s = s?.into_inner();
    let mut seen = Vec::new();
    while let Some(p) = s.message().await? {
        seen.push(p);
    }
    Ok(seen)
}

/// Calls the `Clone` RPC (the generated method, not `Clone::clone`).
async fn clone_on(
    c: &Clients,
    req: proto::CloneRequest,
) -> Result<tonic::Response<tonic::Streaming<proto::TransferProgress>>, tonic::Status> {
    let mut repo = c.repo.clone();
    proto::collection_repo_client::CollectionRepoClient::<tonic::transport::Channel>::clone(
        &mut repo, req,
    )
    .await
}

fn clone_req(name: &str, dest: &str, node: &str) -> proto::CloneRequest {
    proto::CloneRequest {
        namespace: "shop".into(),
        name: name.into(),
        dest_namespace: String::new(),
        dest_name: dest.into(),
        dest_node: node.into(),
    }
}

async fn count(c: &Clients, coll: &str) -> i64 {
    c.clone().count("shop", coll).await
}

#[tokio::test]
async fn clone_copies_a_collection_here_and_to_another_member_with_its_type() {
    let (_nodes, _dirs, c) = pair(300, 200).await;
    let b_id = node_id(&c[1]).await;

    let seen = run(clone_on(&c[0], clone_req("orders", "orders_copy", "")).await).await;
    let last = seen.unwrap().pop().unwrap();
    let info = last.collection.expect("the new collection");
    assert_eq!(
        (info.name.as_str(), info.indexes.as_slice()),
        ("orders_copy", &["quantity".to_string()][..])
    );
    assert_eq!(count(&c[0], "orders_copy").await, 300);

    // To B, named by node id, through B's client even (it relays to the owner).
    let seen = run(clone_on(&c[1], clone_req("orders", "orders_b", &b_id)).await)
        .await
        .unwrap();
    let info = seen.last().unwrap().collection.clone().unwrap();
    assert_eq!(info.node_id, b_id);
    assert_eq!(count(&c[1], "orders_b").await, 300);
    // B never had shop.proto: it came with the snapshot.
    let protos = c[1]
        .registry
        .clone()
        .list_protos(proto::ListProtosRequest {
            namespace: "shop".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(protos.files.iter().any(|f| f.name == "shop.proto"));
    let hits = c[1]
        .clone()
        .search(proto::SearchRequest {
            namespace: "shop".into(),
            collection: "orders_b".into(),
            query: "lamp7".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(hits.hits.len(), 1);

    // Taken names, and ends that are no members, are refused (once A's
    // view has B's new collection: names are unique across the mesh).
    wait_for(&c[0], "A sees orders_b", Duration::from_secs(20), |ps| {
        ps.iter()
            .any(|p| p.collections.iter().any(|c| c.name == "orders_b"))
    })
    .await;
    let e = run(clone_on(&c[0], clone_req("orders", "orders_b", "")).await)
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::AlreadyExists, "{e:?}");
    for who in ["127.0.0.1:1", "not-a-node", &"x".repeat(3000)] {
        let e = run(clone_on(&c[0], clone_req("orders", "elsewhere", who)).await)
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound, "{who:?}: {e:?}");
        assert!(e.message().len() < 400);
    }
    for bad in ["../x", "a/b", "x\0"] {
        let e = run(clone_on(&c[0], clone_req("orders", bad, "")).await)
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{bad:?}: {e:?}");
    }
}

/// Fetches shop/orders from A into B while `interrupt` runs once the first
/// bytes have arrived; returns the outcome.
async fn fetch_with(
    c: &[Clients],
    a_id: &str,
    interrupt: impl std::future::Future<Output = ()>,
) -> Result<Vec<proto::TransferProgress>, tonic::Status> {
    let mut s = c[1]
        .repo
        .clone()
        .fetch(proto::FetchRequest {
            source_node: a_id.into(),
            namespace: "shop".into(),
            name: "orders".into(),
            // Names are unique across the mesh: A keeps its "orders".
            dest_name: "fetched".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut seen = Vec::new();
    let mut interrupt = Some(Box::pin(interrupt));
    while let Some(p) = s.message().await? {
        if p.bytes_done > 0
            && p.bytes_done < p.bytes_total
            && let Some(i) = interrupt.take()
        {
            i.await;
        }
        seen.push(p);
    }
    assert!(
        interrupt.is_none(),
        "the fetch ended before it could be cut"
    );
    Ok(seen)
}

#[tokio::test]
async fn a_fetch_resumes_after_the_source_is_killed_and_restarted_mid_stream() {
    let (mut nodes, dirs, c) = pair(3000, 4000).await;
    let a_id = node_id(&c[0]).await;
    let a_addr = nodes[0].addr.to_string();
    let a_dir = dirs[0].path().to_path_buf();
    let mut a = Some(nodes.remove(0));
    let seen = fetch_with(&c, &a_id, async {
        a.take().unwrap().kill9();
        a = Some(ProcessNode::start_with_flags(
            BIN,
            &a_dir,
            &a_addr,
            &[],
            &["--transfer-rate-mib", A_RATE_MIB],
        ));
    })
    .await
    .expect("the fetch completes");
    let last = seen.last().unwrap();
    assert!(last.resumed >= 1, "{last:?}");
    let info = last.collection.clone().unwrap();
    assert_eq!(info.node_id, node_id(&c[1]).await);
    assert_eq!(count(&c[1], "fetched").await, 3000);
    // Nothing of the transfer is left on the receiver.
    let left: Vec<_> = std::fs::read_dir(dirs[1].path().join("transfers"))
        .unwrap()
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test]
async fn a_fetch_whose_source_never_comes_back_fails_and_leaves_nothing() {
    let (mut nodes, dirs, c) = pair(3000, 4000).await;
    let a_id = node_id(&c[0]).await;
    let mut a = Some(nodes.remove(0));
    let e = fetch_with(&c, &a_id, async {
        a.take().unwrap().kill9();
    })
    .await
    .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
    let e = c[1]
        .repo
        .clone()
        .get_collection(proto::GetCollectionRequest {
            namespace: "shop".into(),
            name: "fetched".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    assert!(!dirs[1].path().join("collections/shop/fetched.db").exists());
    let left: Vec<_> = std::fs::read_dir(dirs[1].path().join("transfers"))
        .unwrap()
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
