//! Files attached to records: streamed in and out, checked, confined to the
//! collection's file area, replaced only whole, deleted with their record.

use collector::proto::{self, get_file_response, put_file_request};
use collector_tests::{Clients, Order, TestNode};
use tonic::Code;

pub(crate) fn file(record: &str, path: &str) -> Option<proto::FileRef> {
    Some(proto::FileRef {
        namespace: "shop".into(),
        collection: "orders".into(),
        record_id: record.into(),
        path: path.into(),
    })
}

pub(crate) fn header(record: &str, path: &str) -> proto::PutFileHeader {
    proto::PutFileHeader {
        file: file(record, path),
        content_type: "application/octet-stream".into(),
        ..Default::default()
    }
}

/// Puts `data` in chunks of `chunk` bytes after `h`.
pub(crate) async fn put_with(
    c: &Clients,
    h: proto::PutFileHeader,
    data: &[u8],
    chunk: usize,
) -> Result<proto::FileInfo, tonic::Status> {
    let mut msgs = vec![proto::PutFileRequest {
        part: Some(put_file_request::Part::Header(h)),
    }];
    for piece in data.chunks(chunk.max(1)) {
        msgs.push(proto::PutFileRequest {
            part: Some(put_file_request::Part::Chunk(piece.to_vec())),
        });
    }
    msgs.push(proto::PutFileRequest {
        part: Some(put_file_request::Part::End(proto::PutFileEnd {})),
    });
    c.records
        .clone()
        .put_file(tokio_stream::iter(msgs))
        .await
        .map(|r| r.into_inner())
}

pub(crate) async fn put(c: &Clients, record: &str, path: &str, data: &[u8]) -> proto::FileInfo {
    put_with(c, header(record, path), data, 1 << 20)
        .await
        .expect("PutFile")
}

/// Reads a file (a range of it with `offset`/`length`): its header and bytes.
pub(crate) async fn get_range(
    c: &Clients,
    record: &str,
    path: &str,
    offset: i64,
    length: i64,
) -> Result<(proto::FileInfo, Vec<u8>), tonic::Status> {
    let mut s = c
        .records
        .clone()
        .get_file(proto::GetFileRequest {
            file: file(record, path),
            offset,
            length,
        })
        .await?
        .into_inner();
    let mut head = None;
    let mut bytes = Vec::new();
    while let Some(m) = s.message().await? {
        match m.part {
            Some(get_file_response::Part::Header(h)) => head = Some(h),
            Some(get_file_response::Part::Chunk(b)) => bytes.extend_from_slice(&b),
            None => panic!("an empty GetFile message"),
        }
    }
    Ok((head.expect("a header first"), bytes))
}

pub(crate) async fn get(c: &Clients, record: &str, path: &str) -> Result<Vec<u8>, tonic::Status> {
    get_range(c, record, path, 0, 0).await.map(|(_, b)| b)
}

pub(crate) async fn stat(
    c: &Clients,
    record: &str,
    path: &str,
) -> Result<proto::FileInfo, tonic::Status> {
    c.records
        .clone()
        .stat_file(proto::StatFileRequest {
            file: file(record, path),
        })
        .await
        .map(|r| r.into_inner())
}

pub(crate) async fn list(
    c: &Clients,
    record: &str,
    prefix: &str,
    page: i32,
    token: &str,
) -> proto::ListFilesResponse {
    c.records
        .clone()
        .list_files(proto::ListFilesRequest {
            namespace: "shop".into(),
            collection: "orders".into(),
            record_id: record.into(),
            prefix: prefix.into(),
            page_size: page,
            page_token: token.into(),
        })
        .await
        .expect("ListFiles")
        .into_inner()
}

/// Bytes that differ at every position (a misplaced chunk shows).
pub(crate) fn bytes(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[1] ^ seed)
        .collect()
}

pub(crate) fn blake3_hex(b: &[u8]) -> String {
    blake3::hash(b).to_hex().to_string()
}

pub(crate) async fn shop_node(tweak: impl FnOnce(&mut collector::Config)) -> TestNode {
    let mut n = TestNode::start_with(tweak).await;
    n.clients.register_shop("shop").await;
    n.clients.create_orders("shop", "orders", &[]).await;
    for id in ["o1", "o2"] {
        n.clients
            .put("shop", "orders", id, &Order::new("lamp", 1))
            .await
            .unwrap();
    }
    n
}

/// Every file (not directory) under `dir`.
pub(crate) fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test]
async fn files_round_trip_with_hashes_ranges_versions_and_listings() {
    let n = shop_node(|_| {}).await;
    let c = &n.clients;
    let small = b"hello, file".to_vec();
    let made = put(c, "o1", "notes/hello.txt", &small).await;
    assert_eq!(
        (made.size_bytes, made.version, made.blake3.as_str()),
        (small.len() as i64, 1, blake3_hex(&small).as_str())
    );
    assert_eq!(get(c, "o1", "notes/hello.txt").await.unwrap(), small);

    // Several chunks in, 1 MiB chunks out, ranges anywhere.
    let big = bytes(5 << 20 | 12345, 7);
    let made = put_with(c, header("o1", "data/big.bin"), &big, 300_001)
        .await
        .unwrap();
    assert_eq!(made.blake3, blake3_hex(&big));
    let (head, got) = get_range(c, "o1", "data/big.bin", 0, 0).await.unwrap();
    assert_eq!(head.size_bytes, big.len() as i64);
    assert!(got == big, "the bytes came back different");
    for (off, len) in [
        (0, 1),
        (1 << 20, 10),
        ((1 << 20) - 3, 7),
        (big.len() as i64 - 5, 0),
        (big.len() as i64, 0),
    ] {
        let (_, part) = get_range(c, "o1", "data/big.bin", off, len).await.unwrap();
        let end = if len == 0 {
            big.len()
        } else {
            off as usize + len as usize
        };
        assert_eq!(part, big[off as usize..end], "range {off}+{len}");
    }
    let e = get_range(c, "o1", "data/big.bin", big.len() as i64 + 1, 0)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");

    // Over it: version 2; with if_absent or an old version: refused, unchanged.
    let v2 = put(c, "o1", "notes/hello.txt", b"second").await;
    assert_eq!(
        (v2.version, v2.created_at),
        (
            2,
            stat(c, "o1", "notes/hello.txt").await.unwrap().created_at
        )
    );
    let e = put_with(
        c,
        proto::PutFileHeader {
            if_absent: true,
            ..header("o1", "notes/hello.txt")
        },
        b"third",
        10,
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");
    let e = put_with(
        c,
        proto::PutFileHeader {
            expected_version: Some(1),
            ..header("o1", "notes/hello.txt")
        },
        b"third",
        10,
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    for h in [
        proto::PutFileHeader {
            expected_size: Some(4),
            ..header("o1", "notes/hello.txt")
        },
        proto::PutFileHeader {
            expected_blake3: blake3_hex(b"other"),
            ..header("o1", "notes/hello.txt")
        },
    ] {
        let e = put_with(c, h, b"third", 10).await.unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    }
    let ok = put_with(
        c,
        proto::PutFileHeader {
            expected_size: Some(5),
            expected_blake3: blake3_hex(b"third"),
            expected_version: Some(2),
            ..header("o1", "notes/hello.txt")
        },
        b"third",
        2,
    )
    .await
    .unwrap();
    assert_eq!(ok.version, 3);
    assert_eq!(get(c, "o1", "notes/hello.txt").await.unwrap(), b"third");

    // Listing: by path, a prefix, paged.
    for i in 0..5 {
        put(c, "o1", &format!("pics/{i}.jpg"), &[i]).await;
    }
    let all = list(c, "o1", "", 0, "").await;
    let paths: Vec<_> = all.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "data/big.bin",
            "notes/hello.txt",
            "pics/0.jpg",
            "pics/1.jpg",
            "pics/2.jpg",
            "pics/3.jpg",
            "pics/4.jpg"
        ]
    );
    let mut token = String::new();
    let mut paged = Vec::new();
    loop {
        let p = list(c, "o1", "pics/", 2, &token).await;
        assert!(p.files.len() <= 2);
        paged.extend(p.files.into_iter().map(|f| f.path));
        if p.next_page_token.is_empty() {
            break;
        }
        token = p.next_page_token;
    }
    assert_eq!(
        paged,
        [
            "pics/0.jpg",
            "pics/1.jpg",
            "pics/2.jpg",
            "pics/3.jpg",
            "pics/4.jpg"
        ]
    );
    assert!(list(c, "o2", "", 0, "").await.files.is_empty());

    // Delete: gone, its bytes freed; again: NOT_FOUND.
    let gone = c
        .records
        .clone()
        .delete_file(proto::DeleteFileRequest {
            file: file("o1", "data/big.bin"),
            expected_version: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(gone.size_bytes, big.len() as i64);
    assert_eq!(
        stat(c, "o1", "data/big.bin").await.unwrap_err().code(),
        Code::NotFound
    );
    let area = n.dir.path().join("files/shop/orders");
    let left: u64 = files_under(&area)
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert!(left < 1000, "{left} bytes left after the big file went");
}

#[tokio::test]
async fn bad_paths_missing_records_and_oversized_files_are_refused_and_change_nothing() {
    let n = shop_node(|c| c.max_file_bytes = 1 << 20).await;
    let c = &n.clients;
    let long = ["y"; 600].join("/");
    let seg = "s".repeat(256);
    for (bad, rule) in [
        ("", "empty"),
        ("/etc/passwd", "relative"),
        ("../escape", ".."),
        ("a/../../b", ".."),
        ("a/./b", "\".\""),
        ("a//b", "empty segment"),
        ("a/", "empty segment"),
        ("a\0b", "NUL"),
        ("a\\b", "backslash"),
        (long.as_str(), "1024"),
        (seg.as_str(), "255"),
    ] {
        let e = put_with(c, header("o1", bad), b"x", 1).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{bad:?}: {e:?}");
        assert!(e.message().contains(rule), "{bad:?}: {}", e.message());
        assert!(e.message().len() < 400, "{}", e.message().len());
        let e = stat(c, "o1", bad).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{bad:?}: {e:?}");
    }
    let e = put_with(c, header("nobody", "a.txt"), b"x", 1)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    // A header first, and one only.
    let e = c
        .records
        .clone()
        .put_file(tokio_stream::iter([proto::PutFileRequest {
            part: Some(put_file_request::Part::Chunk(b"x".to_vec())),
        }]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    // A stream that stops before its end (as a cancelled call looks to the
    // node) changes nothing.
    put(c, "o1", "ended.txt", b"old").await;
    let e = c
        .records
        .clone()
        .put_file(tokio_stream::iter([
            proto::PutFileRequest {
                part: Some(put_file_request::Part::Header(header("o1", "ended.txt"))),
            },
            proto::PutFileRequest {
                part: Some(put_file_request::Part::Chunk(b"new".to_vec())),
            },
        ]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("end"), "{e:?}");
    assert_eq!(get(c, "o1", "ended.txt").await.unwrap(), b"old");
    // Over --max-file-bytes, streamed or announced.
    put(c, "o1", "keep.bin", b"old").await;
    let e = put_with(
        c,
        header("o1", "keep.bin"),
        &bytes((1 << 20) + 1, 1),
        1 << 18,
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    let e = put_with(
        c,
        proto::PutFileHeader {
            expected_size: Some(2 << 20),
            ..header("o1", "keep.bin")
        },
        b"",
        1,
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert_eq!(get(c, "o1", "keep.bin").await.unwrap(), b"old");
    // Nothing but the two files' bytes is on disk: no temporaries.
    let left = files_under(&n.dir.path().join("files/shop/orders"));
    assert_eq!(left.len(), 2, "{left:?}");
}

/// A TCP relay to `to` for one connection at a time; dropping the handle's
/// sender cuts every connection it carries (as a crashed client or a broken
/// network would).
pub(crate) async fn cuttable_relay(
    to: std::net::SocketAddr,
) -> (std::net::SocketAddr, tokio::sync::watch::Sender<bool>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (cut, seen) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        while let Ok((mut down, _)) = listener.accept().await {
            let mut seen = seen.clone();
            tokio::spawn(async move {
                let Ok(mut up) = tokio::net::TcpStream::connect(to).await else {
                    return;
                };
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut down, &mut up) => {}
                    _ = seen.wait_for(|c| *c) => {}
                }
            });
        }
    });
    (addr, cut)
}

#[tokio::test]
async fn a_put_whose_stream_breaks_leaves_the_old_version_and_no_temporary() {
    let n = shop_node(|_| {}).await;
    let c = &n.clients;
    put(c, "o1", "doc.txt", b"version one").await;
    let (relay, cut) = cuttable_relay(n.handle.as_ref().unwrap().addr).await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{relay}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(proto::PutFileRequest {
        part: Some(put_file_request::Part::Header(header("o1", "doc.txt"))),
    })
    .await
    .unwrap();
    tx.send(proto::PutFileRequest {
        part: Some(put_file_request::Part::Chunk(bytes(1 << 20, 3))),
    })
    .await
    .unwrap();
    let mut records = proto::collection_service_client::CollectionServiceClient::new(
        collector_tests::keyed(channel, collector_tests::TOKEN),
    );
    let call = tokio::spawn(async move {
        records
            .put_file(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
    });
    // Once the temporary is on disk, the connection breaks mid-stream.
    let area = n.dir.path().join("files/shop/orders");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while files_under(&area).len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "no temporary appeared"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    cut.send_replace(true);
    // The client sees its transport fail (tonic's own status).
    assert!(call.await.unwrap().is_err());
    drop(tx);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while files_under(&area).len() > 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the temporary stayed: {:?}",
            files_under(&area)
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(get(c, "o1", "doc.txt").await.unwrap(), b"version one");
    assert_eq!(stat(c, "o1", "doc.txt").await.unwrap().version, 1);
}

#[tokio::test]
async fn deleting_a_record_or_its_collection_deletes_its_files() {
    let mut n = shop_node(|_| {}).await;
    put(&n.clients, "o1", "a.txt", b"a").await;
    put(&n.clients, "o1", "b/c.txt", b"c").await;
    put(&n.clients, "o2", "a.txt", b"other").await;
    n.clients
        .records
        .delete(proto::DeleteRequest {
            namespace: "shop".into(),
            collection: "orders".into(),
            id: "o1".into(),
            expected_version: None,
        })
        .await
        .unwrap();
    assert_eq!(
        stat(&n.clients, "o1", "a.txt").await.unwrap_err().code(),
        Code::NotFound
    );
    let area = n.dir.path().join("files/shop/orders");
    assert_eq!(files_under(&area).len(), 1, "{:?}", files_under(&area));
    // A record made again under the same id starts with no files.
    n.clients
        .put("shop", "orders", "o1", &Order::new("again", 2))
        .await
        .unwrap();
    assert!(list(&n.clients, "o1", "", 0, "").await.files.is_empty());
    assert_eq!(get(&n.clients, "o2", "a.txt").await.unwrap(), b"other");
    // Files survive a restart; the collection's delete takes them all.
    n.restart().await;
    assert_eq!(get(&n.clients, "o2", "a.txt").await.unwrap(), b"other");
    n.clients
        .repo
        .delete_collection(proto::DeleteCollectionRequest {
            namespace: "shop".into(),
            name: "orders".into(),
        })
        .await
        .unwrap();
    assert!(!area.exists(), "{:?}", files_under(&area));
}

#[cfg(unix)]
#[tokio::test]
async fn symlinks_planted_in_the_file_area_are_not_followed_out_of_it() {
    let mut n = shop_node(|_| {}).await;
    n.clients.create_orders("shop", "secrets", &[]).await;
    n.clients
        .put("shop", "secrets", "s1", &Order::new("x", 1))
        .await
        .unwrap();
    let secret = b"another collection's secret";
    let mut s = n.clients.records.clone();
    let msgs = [
        proto::PutFileRequest {
            part: Some(put_file_request::Part::Header(proto::PutFileHeader {
                file: Some(proto::FileRef {
                    namespace: "shop".into(),
                    collection: "secrets".into(),
                    record_id: "s1".into(),
                    path: "key".into(),
                }),
                ..Default::default()
            })),
        },
        proto::PutFileRequest {
            part: Some(put_file_request::Part::Chunk(secret.to_vec())),
        },
        proto::PutFileRequest {
            part: Some(put_file_request::Part::End(proto::PutFileEnd {})),
        },
    ];
    s.put_file(tokio_stream::iter(msgs)).await.unwrap();
    put(&n.clients, "o1", "etc", b"mine").await;
    put(&n.clients, "o1", "other", b"mine too").await;
    let root = n.dir.path().join("files/shop");
    let blobs = files_under(&root.join("orders"));
    let secret_blob = files_under(&root.join("secrets")).pop().unwrap();
    // Someone with shell access swaps the two blobs for symlinks out.
    let mut by_size: Vec<_> = blobs.clone();
    by_size.sort_by_key(|p| std::fs::metadata(p).unwrap().len());
    std::fs::remove_file(&by_size[0]).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", &by_size[0]).unwrap();
    std::fs::remove_file(&by_size[1]).unwrap();
    std::os::unix::fs::symlink(&secret_blob, &by_size[1]).unwrap();
    for path in ["etc", "other"] {
        match get(&n.clients, "o1", path).await {
            Ok(b) => panic!("{path}: read {} bytes through a symlink", b.len()),
            Err(e) => assert!(
                !e.message().contains("secret") && !e.message().contains("root:"),
                "{e:?}"
            ),
        }
    }
    // A planted symlink is never written through either: a put makes a new
    // blob, and the target is untouched.
    put(&n.clients, "o1", "other", b"overwritten").await;
    assert_eq!(std::fs::read(&secret_blob).unwrap(), secret);
    assert_eq!(
        get(&n.clients, "o1", "other").await.unwrap(),
        b"overwritten"
    );
    // The node still serves, and a restart sweeps what no row points at.
    n.restart().await;
    assert_eq!(
        get(&n.clients, "o1", "other").await.unwrap(),
        b"overwritten"
    );
    assert!(std::fs::read(&secret_blob).is_ok());
}
