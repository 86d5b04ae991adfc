//! Files with node processes: a 100 MiB round trip through a node that does
//! not own the collection, a relayed put whose client goes away, and kill -9
//! during a put.

use crate::files::{
    blake3_hex, bytes, cuttable_relay, files_under, get, get_range, header, list, put_with, stat,
};
use crate::mesh::{all_up, wait_for, wait_for_collection};
use collector::proto::{self, put_file_request};
use collector_tests::{Clients, Order, ProcessNode};
use std::path::Path;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_collector-node");

/// shop/orders with records o1 and o2, on a node at `dir`.
async fn shop_on(c: &mut Clients) {
    c.register_shop("shop").await;
    c.create_orders("shop", "orders", &[]).await;
    for id in ["o1", "o2"] {
        c.put("shop", "orders", id, &Order::new("lamp", 1))
            .await
            .unwrap();
    }
}

/// Polls until `ok` holds, for at most 20 s.
async fn until(what: &str, ok: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ok() {
        assert!(Instant::now() < deadline, "{what}: not within 20 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Starts a put of `header` and `first` over a connection through a relay
/// that can be cut; the call's task, the sender for more messages and the cut.
async fn cuttable_put(
    to: std::net::SocketAddr,
    h: proto::PutFileHeader,
    first: Vec<u8>,
) -> (
    tokio::task::JoinHandle<Result<tonic::Response<proto::FileInfo>, tonic::Status>>,
    tokio::sync::mpsc::Sender<proto::PutFileRequest>,
    tokio::sync::watch::Sender<bool>,
) {
    let (relay, cut) = cuttable_relay(to).await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{relay}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    for part in [
        put_file_request::Part::Header(h),
        put_file_request::Part::Chunk(first),
    ] {
        tx.send(proto::PutFileRequest { part: Some(part) })
            .await
            .unwrap();
    }
    let mut records = proto::collection_service_client::CollectionServiceClient::new(
        collector_tests::keyed(channel, collector_tests::TOKEN),
    );
    let call = tokio::spawn(async move {
        records
            .put_file(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
    });
    (call, tx, cut)
}

async fn peer_id(c: &Clients) -> String {
    c.repo
        .clone()
        .meta(proto::MetaRequest {})
        .await
        .unwrap()
        .into_inner()
        .node_id
}

/// The collection a clone or fetch made (its last report).
async fn last_collection(
    mut s: tonic::Streaming<proto::TransferProgress>,
) -> proto::CollectionInfo {
    let mut last = None;
    while let Some(p) = s.message().await.unwrap() {
        last = p.collection.or(last);
    }
    last.expect("the last report has the collection")
}

fn area(data: &Path) -> std::path::PathBuf {
    data.join("files/shop/orders")
}

#[tokio::test]
async fn files_round_trip_through_a_node_that_does_not_own_them() {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let a = ProcessNode::start(BIN, dirs[0].path());
    let b = ProcessNode::start_with(BIN, dirs[1].path(), "127.0.0.1:0", &[a.addr.to_string()]);
    let mut ca = Clients::connect(a.addr).await;
    let cb = Clients::connect(b.addr).await;
    for c in [&ca, &cb] {
        wait_for(c, "both alive", Duration::from_secs(20), |ps| all_up(ps, 2)).await;
    }
    shop_on(&mut ca).await;
    wait_for_collection(&cb, "orders").await;
    // 100 MiB through B, in 4 MiB chunks; B pipes them to A as they come.
    let big = bytes(100 << 20, 9);
    let made = put_with(&cb, header("o1", "video.bin"), &big, 4 << 20)
        .await
        .expect("a put through B");
    assert_eq!(
        (made.size_bytes, made.blake3.as_str()),
        (big.len() as i64, blake3_hex(&big).as_str())
    );
    assert_eq!(
        files_under(&area(dirs[1].path())),
        Vec::<std::path::PathBuf>::new()
    );
    assert_eq!(
        files_under(&area(dirs[0].path())).len(),
        1,
        "the bytes are on A"
    );
    let back = get(&cb, "o1", "video.bin").await.unwrap();
    assert!(back == big, "100 MiB came back different");
    let (h, tail) = get_range(&cb, "o1", "video.bin", (100 << 20) - 10, 0)
        .await
        .unwrap();
    assert_eq!(
        (h.size_bytes, tail.as_slice()),
        (big.len() as i64, &big[big.len() - 10..])
    );
    assert_eq!(
        stat(&cb, "o1", "video.bin").await.unwrap().blake3,
        made.blake3
    );
    assert_eq!(list(&cb, "o1", "", 10, "").await.files.len(), 1);
    // A relayed put whose client goes away mid-stream changes nothing on
    // the owner (B ends its stream to A with the abort marker, not cleanly).
    let (call, tx, cut) = cuttable_put(b.addr, header("o1", "video.bin"), bytes(1 << 20, 1)).await;
    until("a temporary on A", || {
        files_under(&area(dirs[0].path())).len() >= 2
    })
    .await;
    cut.send_replace(true);
    assert!(call.await.unwrap().is_err());
    drop(tx);
    until("A drops the temporary", || {
        files_under(&area(dirs[0].path())).len() == 1
    })
    .await;
    let now = stat(&ca, "o1", "video.bin").await.unwrap();
    assert_eq!((now.version, now.blake3), (1, made.blake3.clone()));
    // Pushed to B with its files (clone), and pulled to B (fetch): the
    // 100 MiB arrive whole, hashes checked, in B's own file area.
    let b_id = peer_id(&cb).await;
    let mut repo = ca.repo.clone();
    let s = proto::collection_repo_client::CollectionRepoClient::clone(
        &mut repo,
        proto::CloneRequest {
            namespace: "shop".into(),
            name: "orders".into(),
            dest_name: "pushed".into(),
            dest_node: b_id,
            include_files: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let pushed = last_collection(s.into_inner()).await;
    assert_eq!(
        (pushed.file_count, pushed.file_bytes),
        (1, big.len() as i64)
    );
    let a_id = peer_id(&ca).await;
    let s = cb
        .repo
        .clone()
        .fetch(proto::FetchRequest {
            source_node: a_id,
            namespace: "shop".into(),
            name: "orders".into(),
            dest_name: "pulled".into(),
            include_files: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let pulled = last_collection(s.into_inner()).await;
    assert_eq!(
        (pulled.file_count, pulled.file_bytes),
        (1, big.len() as i64)
    );
    for coll in ["pushed", "pulled"] {
        let blobs = files_under(&dirs[1].path().join("files/shop").join(coll));
        assert_eq!(blobs.len(), 1, "{coll}: {blobs:?}");
        assert!(
            std::fs::read(&blobs[0]).unwrap() == big,
            "{coll}: the bytes differ"
        );
    }
    // A delete through B frees A's bytes.
    cb.records
        .clone()
        .delete_file(proto::DeleteFileRequest {
            file: crate::files::file("o1", "video.bin"),
            expected_version: Some(1),
        })
        .await
        .unwrap();
    assert!(files_under(&area(dirs[0].path())).is_empty());
    assert_eq!(
        stat(&cb, "o1", "video.bin").await.unwrap_err().code(),
        tonic::Code::NotFound
    );
}

/// A put's file area after a restart: exactly one blob (no temporary, no
/// orphan) and what StatFile says it is matches GetFile's bytes.
async fn settled(c: &Clients, data: &Path) -> proto::FileInfo {
    let blobs = files_under(&area(data));
    assert_eq!(blobs.len(), 1, "one blob, no leftovers: {blobs:?}");
    let info = stat(c, "o1", "doc.bin").await.unwrap();
    let got = get(c, "o1", "doc.bin").await.unwrap();
    assert_eq!(
        (got.len() as i64, blake3_hex(&got)),
        (info.size_bytes, info.blake3.clone())
    );
    info
}

#[tokio::test]
async fn kill_9_during_a_put_leaves_the_old_or_the_new_file_whole_and_no_leftovers() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = ProcessNode::start(BIN, dir.path());
    let mut c = Clients::connect(node.addr).await;
    shop_on(&mut c).await;
    let v1 = bytes(3 << 20, 1);
    put_with(&c, header("o1", "doc.bin"), &v1, 1 << 20)
        .await
        .unwrap();
    // Killed mid-stream: the old version, whole.
    let (call, tx, _cut) =
        cuttable_put(node.addr, header("o1", "doc.bin"), bytes(1 << 20, 2)).await;
    until("a temporary", || files_under(&area(dir.path())).len() >= 2).await;
    node.kill9();
    assert!(call.await.unwrap().is_err());
    drop(tx);
    node = ProcessNode::start_with(BIN, dir.path(), &node.addr.to_string(), &[]);
    let c = Clients::connect(node.addr).await;
    let info = settled(&c, dir.path()).await;
    assert_eq!((info.version, info.blake3), (1, blake3_hex(&v1)));
    // Killed a little later each round (bounded: 8 rounds): before, during
    // or after the commit. Either version, whole, nothing left over, and an
    // acknowledged put is never lost.
    let mut now = blake3_hex(&v1);
    let mut seen = [0, 0];
    for round in 0..8u64 {
        let next = bytes(3 << 20, round as u8 + 2);
        let put = tokio::spawn({
            let c = Clients::connect(node.addr).await;
            let next = next.clone();
            async move { put_with(&c, header("o1", "doc.bin"), &next, 1 << 20).await }
        });
        tokio::time::sleep(Duration::from_millis(2 + round * 3)).await;
        node.kill9();
        let answered = put.await.unwrap();
        node = ProcessNode::start_with(BIN, dir.path(), &node.addr.to_string(), &[]);
        let c = Clients::connect(node.addr).await;
        let info = settled(&c, dir.path()).await;
        let new = blake3_hex(&next);
        assert!(
            info.blake3 == now || info.blake3 == new,
            "round {round}: neither version: {info:?}"
        );
        if answered.is_ok() {
            assert_eq!(
                info.blake3, new,
                "round {round}: an acknowledged put was lost"
            );
        }
        seen[(info.blake3 == new) as usize] += 1;
        now = info.blake3;
    }
    eprintln!(
        "kept the old version {} times, the new {} times",
        seen[0], seen[1]
    );
}
