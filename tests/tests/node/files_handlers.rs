//! Handlers and files: the `attach` guest (collector-sdk's file methods over
//! the `files` import) reads, writes, lists and deletes files of records in
//! the collections it is granted; its writes land only if the call succeeds,
//! together with its record writes, and sizes are bounded by its limits.

use super::files::{blake3_hex, bytes, files_under, put_with};
use collector::proto;
use collector_tests::{Clients, TestNode, guest};
use prost::Message;
use tonic::Code;

const NS: &str = "shop";

// The messages of guests/attach/proto/attach.proto, by hand.
#[derive(Clone, PartialEq, prost::Message)]
struct Doc {
    #[prost(string, tag = "1")]
    title: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct PutRequest {
    #[prost(string, tag = "1")]
    collection: String,
    #[prost(string, tag = "2")]
    id: String,
    #[prost(string, tag = "3")]
    path: String,
    #[prost(bytes = "vec", tag = "4")]
    content: Vec<u8>,
    #[prost(string, tag = "5")]
    content_type: String,
    #[prost(int64, optional, tag = "6")]
    expected_version: Option<i64>,
    #[prost(string, tag = "7")]
    create_title: String,
    #[prost(bool, tag = "8")]
    then_delete_record: bool,
    #[prost(bool, tag = "9")]
    fail_after: bool,
    #[prost(uint32, tag = "10")]
    linger_ms: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
struct FileRef {
    #[prost(string, tag = "1")]
    collection: String,
    #[prost(string, tag = "2")]
    id: String,
    #[prost(string, tag = "3")]
    path: String,
    #[prost(uint64, tag = "4")]
    offset: u64,
    #[prost(uint64, tag = "5")]
    length: u64,
    #[prost(int64, optional, tag = "6")]
    expected_version: Option<i64>,
    #[prost(string, tag = "7")]
    to_path: String,
    #[prost(bool, tag = "8")]
    fail_after: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
struct FileReply {
    #[prost(bytes = "vec", tag = "1")]
    content: Vec<u8>,
    #[prost(int64, tag = "2")]
    size: i64,
    #[prost(string, tag = "3")]
    blake3: String,
    #[prost(string, tag = "4")]
    content_type: String,
    #[prost(int64, tag = "5")]
    version: i64,
    #[prost(string, repeated, tag = "6")]
    paths: Vec<String>,
}

fn put_req(id: &str, path: &str, content: &[u8]) -> PutRequest {
    PutRequest {
        id: id.into(),
        path: path.into(),
        content: content.to_vec(),
        content_type: "text/plain".into(),
        ..Default::default()
    }
}

fn at(collection: &str, id: &str, path: &str) -> FileRef {
    FileRef {
        collection: collection.into(),
        id: id.into(),
        path: path.into(),
        ..Default::default()
    }
}

async fn call(c: &Clients, method: &str, req: &impl Message) -> Result<FileReply, tonic::Status> {
    c.call(NS, &format!("/attach.Attach/{method}"), req).await
}

/// The .proto, collections `docs`, `archive` and `secret` (attach.Doc), and
/// the guest granted `docs` read-write and `archive` read-only.
async fn setup(c: &mut Clients, memory_mib: u32) {
    c.register_guest_proto(NS, "attach").await;
    for name in ["docs", "archive", "secret"] {
        c.repo
            .create_collection(proto::CreateCollectionRequest {
                namespace: NS.into(),
                name: name.into(),
                message_type: "attach.Doc".into(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    c.registry
        .register_service(proto::RegisterServiceRequest {
            namespace: NS.into(),
            service: "attach.Attach".into(),
            component: guest("attach"),
            grants: vec![
                proto::Grant {
                    collection: "docs".into(),
                    read_only: false,
                },
                proto::Grant {
                    collection: "archive".into(),
                    read_only: true,
                },
            ],
            limits: Some(proto::HandlerLimits {
                timeout_ms: 0,
                memory_mib,
            }),
        })
        .await
        .unwrap();
}

async fn create_doc(c: &Clients, coll: &str, id: &str) {
    c.records
        .clone()
        .create(proto::CreateRequest {
            namespace: NS.into(),
            collection: coll.into(),
            record: Some(proto::Record {
                id: id.into(),
                data: Some(prost_types::Any {
                    type_url: "type.googleapis.com/attach.Doc".into(),
                    value: Doc { title: id.into() }.encode_to_vec(),
                }),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
}

fn file_ref(coll: &str, id: &str, path: &str) -> Option<proto::FileRef> {
    Some(proto::FileRef {
        namespace: NS.into(),
        collection: coll.into(),
        record_id: id.into(),
        path: path.into(),
    })
}

/// Puts a file over gRPC.
async fn grpc_put(c: &Clients, coll: &str, id: &str, path: &str, data: &[u8]) -> proto::FileInfo {
    let h = proto::PutFileHeader {
        file: file_ref(coll, id, path),
        content_type: "text/plain".into(),
        ..Default::default()
    };
    put_with(c, h, data, 1 << 20).await.expect("PutFile")
}

/// A file's metadata and bytes over gRPC.
async fn grpc_get(
    c: &Clients,
    coll: &str,
    id: &str,
    path: &str,
) -> Result<(proto::FileInfo, Vec<u8>), tonic::Status> {
    let info = c
        .records
        .clone()
        .stat_file(proto::StatFileRequest {
            file: file_ref(coll, id, path),
        })
        .await?
        .into_inner();
    let mut s = c
        .records
        .clone()
        .get_file(proto::GetFileRequest {
            file: file_ref(coll, id, path),
            offset: 0,
            length: 0,
        })
        .await?
        .into_inner();
    let mut data = Vec::new();
    while let Some(m) = s.message().await? {
        if let Some(proto::get_file_response::Part::Chunk(b)) = m.part {
            data.extend_from_slice(&b);
        }
    }
    Ok((info, data))
}

async fn record_exists(c: &Clients, coll: &str, id: &str) -> bool {
    match c
        .records
        .clone()
        .get(proto::GetRequest {
            namespace: NS.into(),
            collection: coll.into(),
            id: id.into(),
            include_json: false,
        })
        .await
    {
        Ok(_) => true,
        Err(e) if e.code() == Code::NotFound => false,
        Err(e) => panic!("Get: {e:?}"),
    }
}

#[tokio::test]
async fn handlers_read_write_list_and_delete_files_of_granted_collections() {
    let mut n = TestNode::start().await;
    setup(&mut n.clients, 0).await;
    let c = &n.clients;

    // A record and its file made in one call, seen over gRPC.
    let body = b"hello, attached world".to_vec();
    let mut req = put_req("d1", "notes/one.txt", &body);
    req.create_title = "first".into();
    call(c, "Put", &req).await.unwrap();
    assert!(record_exists(c, "docs", "d1").await);
    let (info, got) = grpc_get(c, "docs", "d1", "notes/one.txt").await.unwrap();
    assert_eq!(got, body);
    assert_eq!(info.blake3, blake3_hex(&body));
    assert_eq!(
        (info.version, info.content_type.as_str()),
        (1, "text/plain")
    );

    // Read back through the handler, whole and a range.
    let r = call(c, "Read", &at("", "d1", "notes/one.txt"))
        .await
        .unwrap();
    assert_eq!(r.content, body);
    assert_eq!((r.size, r.version), (body.len() as i64, 1));
    assert_eq!(r.blake3, blake3_hex(&body));
    let mut range = at("", "d1", "notes/one.txt");
    (range.offset, range.length) = (7, 8);
    let r = call(c, "Read", &range).await.unwrap();
    assert_eq!(r.content, &body[7..15]);

    // A file put over gRPC is read by the handler, and the other way round.
    let big = bytes(3 << 20, 7);
    grpc_put(c, "docs", "d1", "notes/big.bin", &big).await;
    let r = call(c, "Read", &at("", "d1", "notes/big.bin"))
        .await
        .unwrap();
    assert_eq!(r.content.len(), big.len());
    assert!(r.content == big, "the handler read other bytes");

    // Versions: a put over it with the right version, then a stale one.
    let mut over = put_req("d1", "notes/one.txt", b"second");
    over.expected_version = Some(1);
    call(c, "Put", &over).await.unwrap();
    let e = call(c, "Put", &over).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    let (info, got) = grpc_get(c, "docs", "d1", "notes/one.txt").await.unwrap();
    assert_eq!((info.version, got.as_slice()), (2, b"second".as_slice()));

    // Listing under a prefix, by path.
    call(c, "Put", &put_req("d1", "other.txt", b"x"))
        .await
        .unwrap();
    let r = call(c, "List", &at("", "d1", "notes/")).await.unwrap();
    assert_eq!(r.paths, ["notes/big.bin", "notes/one.txt"]);
    let r = call(c, "List", &at("", "d1", "")).await.unwrap();
    assert_eq!(r.paths.len(), 3);

    // Mistakes name what is wrong and change nothing.
    let e = call(c, "Put", &put_req("nobody", "a.txt", b"x"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    assert!(e.message().contains("create it first"), "{}", e.message());
    for bad in ["../etc/passwd", "a//b", "/abs", "a\\b"] {
        let e = call(c, "Put", &put_req("d1", bad, b"x")).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{bad}: {e:?}");
    }
    let e = call(c, "Read", &at("", "d1", "missing.txt"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let e = call(c, "Remove", &at("", "d1", "missing.txt"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");

    // Read-only grant: reads and copies out work, writes are refused.
    create_doc(c, "archive", "d1").await;
    let old = bytes(70_000, 3);
    grpc_put(c, "archive", "d1", "scan.pdf", &old).await;
    let r = call(c, "Read", &at("archive", "d1", "scan.pdf"))
        .await
        .unwrap();
    assert!(r.content == old);
    let mut p = put_req("d1", "scan.pdf", b"forged");
    p.collection = "archive".into();
    let e = call(c, "Put", &p).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let e = call(c, "Remove", &at("archive", "d1", "scan.pdf"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let mut copy = at("archive", "d1", "scan.pdf");
    copy.to_path = "copies/scan.pdf".into();
    let r = call(c, "Copy", &copy).await.unwrap();
    assert_eq!(r.blake3, blake3_hex(&old));
    let (_, got) = grpc_get(c, "docs", "d1", "copies/scan.pdf").await.unwrap();
    assert!(got == old);
    let (_, still) = grpc_get(c, "archive", "d1", "scan.pdf").await.unwrap();
    assert!(still == old);

    // Not granted at all.
    create_doc(c, "secret", "d1").await;
    grpc_put(c, "secret", "d1", "key.txt", b"hunter2").await;
    let e = call(c, "Read", &at("secret", "d1", "key.txt"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(!e.message().contains("hunter2"));

    // Deletes: with a stale version refused, then done; the bytes go.
    let mut stale = at("", "d1", "notes/big.bin");
    stale.expected_version = Some(7);
    let e = call(c, "Remove", &stale).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    let on_disk = files_under(&n.dir.path().join("files")).len();
    call(c, "Remove", &at("", "d1", "notes/big.bin"))
        .await
        .unwrap();
    let e = grpc_get(c, "docs", "d1", "notes/big.bin")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert_eq!(
        files_under(&n.dir.path().join("files")).len(),
        on_disk - 1,
        "the deleted file's bytes are gone"
    );
}

#[tokio::test]
async fn a_failed_handler_call_changes_no_file_and_a_deleted_record_takes_its_staged_files() {
    let mut n = TestNode::start().await;
    setup(&mut n.clients, 0).await;
    let c = &n.clients;
    create_doc(c, "docs", "d1").await;
    let v1 = bytes(200_000, 1);
    grpc_put(c, "docs", "d1", "f.bin", &v1).await;
    let files_dir = n.dir.path().join("files");
    let before = files_under(&files_dir);

    // A put over the file, then a failure: the old version stays whole.
    let mut p = put_req("d1", "f.bin", &bytes(150_000, 2));
    p.fail_after = true;
    let e = call(c, "Put", &p).await.unwrap_err();
    assert_eq!(e.code(), Code::Internal, "{e:?}");
    assert!(e.message().contains("as asked"), "{}", e.message());
    let (info, got) = grpc_get(c, "docs", "d1", "f.bin").await.unwrap();
    assert!(got == v1, "the old bytes are untouched");
    assert_eq!(info.version, 1);

    // A record and its file made by a failing call: neither exists.
    let mut p = put_req("d2", "g.bin", b"never");
    (p.create_title, p.fail_after) = ("never".into(), true);
    call(c, "Put", &p).await.unwrap_err();
    assert!(!record_exists(c, "docs", "d2").await);

    // A failing delete and a failing copy leave things as they were.
    let mut r = at("", "d1", "f.bin");
    r.fail_after = true;
    call(c, "Remove", &r).await.unwrap_err();
    assert!(grpc_get(c, "docs", "d1", "f.bin").await.is_ok());
    r.to_path = "copy.bin".into();
    call(c, "Copy", &r).await.unwrap_err();
    let e = grpc_get(c, "docs", "d1", "copy.bin").await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);

    // No bytes of the failed calls are left on disk.
    assert_eq!(
        files_under(&files_dir),
        before,
        "failed calls left blobs behind"
    );

    // A file put on a record the same call then deletes goes with it, and
    // the call succeeds.
    let mut p = put_req("d3", "h.bin", b"short-lived");
    (p.create_title, p.then_delete_record) = ("brief".into(), true);
    call(c, "Put", &p).await.unwrap();
    assert!(!record_exists(c, "docs", "d3").await);
    assert_eq!(files_under(&files_dir), before);

    // The node restarts with the files as they were.
    n.restart().await;
    let c = &n.clients;
    let (_, got) = grpc_get(c, "docs", "d1", "f.bin").await.unwrap();
    assert!(got == v1);
}

#[tokio::test]
async fn handler_file_reads_and_writes_are_bounded_by_its_limits() {
    // A 4 MiB memory cap: a 6 MiB file cannot be read whole, but in ranges.
    let mut n = TestNode::start().await;
    setup(&mut n.clients, 4).await;
    let c = &n.clients;
    create_doc(c, "docs", "d1").await;
    let big = bytes(6 << 20, 9);
    grpc_put(c, "docs", "d1", "big.bin", &big).await;
    let e = call(c, "Read", &at("", "d1", "big.bin")).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("in ranges"), "{}", e.message());
    let mut range = at("", "d1", "big.bin");
    (range.offset, range.length) = (5 << 20, 1 << 20);
    let r = call(c, "Read", &range).await.unwrap();
    assert!(r.content == big[5 << 20..], "the last MiB");
    drop(n);

    // The node's --max-file-bytes holds for handlers too.
    let mut n = TestNode::start_with(|cfg| cfg.max_file_bytes = 64 << 10).await;
    setup(&mut n.clients, 0).await;
    let c = &n.clients;
    create_doc(c, "docs", "d1").await;
    let e = call(c, "Put", &put_req("d1", "f.bin", &bytes(100 << 10, 1)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("--max-file-bytes"), "{}", e.message());
    call(c, "Put", &put_req("d1", "f.bin", &bytes(60 << 10, 1)))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_handler_whose_record_goes_before_its_commit_leaves_no_file_bytes() {
    let mut n = TestNode::start().await;
    setup(&mut n.clients, 0).await;
    let c = n.clients.clone();
    create_doc(&c, "docs", "d1").await;
    let files_dir = n.dir.path().join("files");

    // The call stages a file on d1, then lingers; d1 is deleted meanwhile,
    // so its batch fails at commit, the node re-runs the call, and the
    // re-run finds no record.
    let mut p = put_req("d1", "late.bin", &bytes(300_000, 4));
    p.linger_ms = 1500;
    let caller = {
        let c = c.clone();
        tokio::spawn(async move { call(&c, "Put", &p).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    c.records
        .clone()
        .delete(proto::DeleteRequest {
            namespace: NS.into(),
            collection: "docs".into(),
            id: "d1".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let e = caller.await.unwrap().unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    assert!(e.message().contains("create it first"), "{}", e.message());
    assert!(!record_exists(&c, "docs", "d1").await);
    assert_eq!(
        files_under(&files_dir),
        Vec::<std::path::PathBuf>::new(),
        "the bytes the failed batch wrote are removed"
    );
}
