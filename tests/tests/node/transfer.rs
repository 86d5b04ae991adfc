//! Clone and fetch: collections copied to a new name, here or pushed to
//! another member of the mesh, and pulled from a member, in hashed chunks
//! that resume after a dropped connection; only members of the mesh are
//! ever contacted.

use crate::backup::assert_steps;
use crate::mesh::{all_up, wait_for, wait_for_collection};
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
    wait_for_collection(&cb, "orders").await;
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
    proto::collection_repo_client::CollectionRepoClient::<collector::api::bearer::KeyedChannel>::clone(
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
        include_files: false,
    }
}

async fn count(c: &Clients, coll: &str) -> i64 {
    c.clone().count("shop", coll).await
}

#[tokio::test]
async fn clone_copies_a_collection_here_and_to_another_member_with_its_type() {
    let (_nodes, _dirs, c) = pair(300, 200).await;
    let b_id = node_id(&c[1]).await;

    let mut seen = run(clone_on(&c[0], clone_req("orders", "orders_copy", "")).await)
        .await
        .unwrap();
    assert_steps(
        seen.iter().map(|p| p.step.as_str()),
        &["snapshot", "opening"],
    );
    let last = seen.pop().unwrap();
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
    // The destination checks and opens the file as one step, seen from here.
    assert_steps(
        seen.iter().map(|p| p.step.as_str()),
        &["snapshot", "sending", "checking"],
    );
    let info = seen.last().unwrap().collection.clone().unwrap();
    assert_eq!(
        (info.node_id.as_str(), info.record_count),
        (b_id.as_str(), 300)
    );
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
    let s = c[1]
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
        .await;
    cut_with(s, interrupt).await
}

/// Follows a transfer's progress, running `interrupt` once when the first
/// bytes (and not yet all) are across; returns the outcome.
async fn cut_with(
    s: Result<tonic::Response<tonic::Streaming<proto::TransferProgress>>, tonic::Status>,
    interrupt: impl std::future::Future<Output = ()>,
) -> Result<Vec<proto::TransferProgress>, tonic::Status> {
    let mut s = s?.into_inner();
    let mut seen = Vec::new();
    let mut interrupt = Some(Box::pin(interrupt));
    while let Some(p) = s.message().await? {
        if p.step == "sending"
            && p.bytes_done > 0
            && p.bytes_done < p.bytes_total
            && let Some(i) = interrupt.take()
        {
            i.await;
        }
        seen.push(p);
    }
    assert!(
        interrupt.is_none(),
        "the transfer ended before it could be cut"
    );
    Ok(seen)
}

/// Files left in a node's transfers directory.
fn left_in(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir.join("transfers"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect()
}

#[tokio::test]
async fn a_clone_pushed_to_a_member_resumes_after_the_destination_is_killed_and_restarted() {
    let (mut nodes, dirs, c) = pair(3000, 4000).await;
    let b_id = node_id(&c[1]).await;
    let a_addr = nodes[0].addr.to_string();
    let b_addr = nodes[1].addr.to_string();
    let b_dir = dirs[1].path().to_path_buf();
    let mut b = Some(nodes.remove(1));
    let seen = cut_with(
        clone_on(&c[0], clone_req("orders", "pushed", &b_id)).await,
        async {
            b.take().unwrap().kill9();
            b = Some(ProcessNode::start_with(
                BIN,
                &b_dir,
                &b_addr,
                std::slice::from_ref(&a_addr),
            ));
        },
    )
    .await
    .expect("the clone completes");
    assert_steps(
        seen.iter().map(|p| p.step.as_str()),
        &["snapshot", "sending", "checking"],
    );
    let last = seen.last().unwrap();
    assert!(last.resumed >= 1, "{last:?}");
    let info = last.collection.clone().unwrap();
    assert_eq!(
        (info.node_id.as_str(), info.name.as_str()),
        (b_id.as_str(), "pushed")
    );
    let cb = Clients::connect(b.as_ref().unwrap().addr).await;
    assert_eq!(count(&cb, "pushed").await, 3000);
    // Nothing of the transfer is left on either end.
    assert!(
        left_in(dirs[0].path()).is_empty(),
        "{:?}",
        left_in(dirs[0].path())
    );
    assert!(left_in(&b_dir).is_empty(), "{:?}", left_in(&b_dir));
}

/// The pieces of a snapshot of shop/orders, pulled from `c`.
async fn pulled(c: &Clients) -> Vec<proto::CollectionChunk> {
    let mut s = c
        .repo
        .clone()
        .pull_collection({
            // The test plays the puller, a member.
            let mut req = tonic::Request::new(proto::PullCollectionRequest {
                namespace: "shop".into(),
                name: "orders".into(),
                ..Default::default()
            });
            collector_tests::as_member(&mut req);
            req
        })
        .await
        .unwrap()
        .into_inner();
    let mut pieces = Vec::new();
    while let Some(p) = s.message().await.unwrap() {
        pieces.push(p);
    }
    pieces
}

/// Pushes `pieces` to `c` as one stream that ends cleanly.
async fn push(
    c: &Clients,
    pieces: Vec<proto::CollectionChunk>,
) -> Result<proto::PushCollectionResponse, tonic::Status> {
    c.repo
        .clone()
        .push_collection({
            let mut req = tonic::Request::new(tokio_stream::iter(pieces));
            collector_tests::as_member(&mut req);
            req
        })
        .await
        .map(|r| r.into_inner())
}

fn chunk_len(p: &proto::CollectionChunk) -> i64 {
    match &p.part {
        Some(proto::collection_chunk::Part::Chunk(c)) => c.data.len() as i64,
        _ => 0,
    }
}

#[tokio::test]
async fn a_push_goes_on_from_the_bytes_the_destination_holds_and_checks_every_piece() {
    use proto::collection_chunk::Part;
    let (_nodes, dirs, c) = pair(3000, 4000).await;
    let mut pieces = pulled(&c[0]).await;
    let Some(Part::Header(h)) = &mut pieces[0].part else {
        panic!("a header first: {:?}", pieces[0]);
    };
    h.dest_namespace = "shop".into();
    h.dest_name = "pushed".into();
    let n = pieces.len();
    assert!(n > 8, "{n} pieces");
    let (header, chunks, manifest) = (
        pieces[0].clone(),
        pieces[1..n - 1].to_vec(),
        pieces[n - 1].clone(),
    );
    let with = |rest: &[proto::CollectionChunk]| {
        let mut v = vec![header.clone()];
        v.extend_from_slice(rest);
        v
    };

    // A header alone asks where to go on: nothing yet.
    let r = push(&c[1], with(&[])).await.unwrap();
    assert_eq!((r.received_bytes, r.collection), (0, None));
    // Three chunks, then the stream ends: they are kept.
    let three: i64 = chunks[..3].iter().map(chunk_len).sum();
    let r = push(&c[1], with(&chunks[..3])).await.unwrap();
    assert_eq!((r.received_bytes, r.collection), (three, None));
    // Two more, and the connection is dropped mid-stream: kept too.
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    for p in with(&chunks[3..5]) {
        tx.send(p).await.unwrap();
    }
    let mut repo = c[1].repo.clone();
    let call = tokio::spawn(async move {
        let mut req = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        collector_tests::as_member(&mut req);
        repo.push_collection(req).await
    });
    // Give them time to arrive, then cut the stream without ending it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    call.abort();
    let _ = call.await;
    drop(tx);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let held = loop {
        // UNAVAILABLE while the cut stream is still seen as arriving.
        match push(&c[1], with(&[])).await {
            Ok(r) => break r.received_bytes,
            Err(e) => assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}"),
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the cut push never ended"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // What arrived whole is kept: three chunks and those of the cut stream
    // that arrived, up to a chunk's end.
    let k = (3..=5)
        .find(|&k| chunks[..k].iter().map(chunk_len).sum::<i64>() == held)
        .unwrap_or_else(|| panic!("{held} bytes held, not a chunk's end past {three}"));
    // A chunk at the wrong place, or damaged on the way, is refused and
    // changes nothing.
    let e = push(&c[1], with(&chunks[..1])).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains(&held.to_string()), "{e:?}");
    let mut damaged = chunks[k].clone();
    if let Some(Part::Chunk(ch)) = &mut damaged.part {
        ch.data[7] ^= 1;
    }
    let e = push(&c[1], with(&[damaged])).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
    assert_eq!(push(&c[1], with(&[])).await.unwrap().received_bytes, held);
    // The rest with a manifest that does not match: refused, nothing left.
    let mut wrong = manifest.clone();
    if let Some(Part::Manifest(m)) = &mut wrong.part {
        m.record_count += 1;
    }
    let mut rest = chunks[k..].to_vec();
    rest.push(wrong);
    let e = push(&c[1], with(&rest)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    assert!(
        left_in(dirs[1].path()).is_empty(),
        "{:?}",
        left_in(dirs[1].path())
    );
    let e = c[1]
        .repo
        .clone()
        .get_collection(proto::GetCollectionRequest {
            namespace: "shop".into(),
            name: "pushed".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    // From the start, whole: the collection appears.
    let mut all = chunks.clone();
    all.push(manifest.clone());
    let r = push(&c[1], with(&all)).await.unwrap();
    let made = r.collection.expect("the collection");
    assert_eq!(made.node_id, node_id(&c[1]).await);
    assert_eq!(count(&c[1], "pushed").await, 3000);
    assert!(left_in(dirs[1].path()).is_empty());
    // A retry whose answer was lost learns it worked.
    let again = push(&c[1], with(&[])).await.unwrap();
    assert_eq!(again.collection.map(|c| c.name), Some("pushed".to_string()));

    // Pushes that do not start with a sound header are refused.
    let header_with = |f: &dyn Fn(&mut proto::TransferHeader)| {
        let mut h = header.clone();
        if let Some(Part::Header(x)) = &mut h.part {
            x.dest_name = "fresh".into();
            f(x);
        }
        vec![h]
    };
    let cases: Vec<(Vec<proto::CollectionChunk>, tonic::Code)> = vec![
        (chunks[..1].to_vec(), tonic::Code::InvalidArgument),
        (
            header_with(&|h| h.transfer_id = "../x".into()),
            tonic::Code::InvalidArgument,
        ),
        (
            header_with(&|h| h.dest_name = "a/b".into()),
            tonic::Code::InvalidArgument,
        ),
        (
            header_with(&|h| h.dest_namespace = "system".into()),
            tonic::Code::PermissionDenied,
        ),
        (
            header_with(&|h| {
                h.transfer_id = "0190f000-0000-7000-8000-000000000000".into();
                h.dest_name = "orders".into();
            }),
            tonic::Code::AlreadyExists,
        ),
    ];
    for (bad, code) in cases {
        let e = push(&c[1], bad.clone()).await.unwrap_err();
        assert_eq!(e.code(), code, "{bad:?}: {e:?}");
    }
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
    assert_steps(
        seen.iter().map(|p| p.step.as_str()),
        &["snapshot", "sending", "checking", "opening"],
    );
    let last = seen.last().unwrap();
    assert!(last.resumed >= 1, "{last:?}");
    let info = last.collection.clone().unwrap();
    assert_eq!(info.node_id, node_id(&c[1]).await);
    assert_eq!(info.record_count, 3000);
    assert_eq!(count(&c[1], "fetched").await, 3000);
    // Nothing of the transfer is left on the receiver.
    assert!(
        left_in(dirs[1].path()).is_empty(),
        "{:?}",
        left_in(dirs[1].path())
    );
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
    assert!(
        left_in(dirs[1].path()).is_empty(),
        "{:?}",
        left_in(dirs[1].path())
    );
}
