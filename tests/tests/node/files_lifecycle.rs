//! Files in backups, restores and clones: carried with their records when
//! asked (`include_files`), checked against their hashes on the way in and
//! out, and never lost to a put or delete that runs while a backup copies.

use crate::files::{blake3_hex, bytes, files_under, put, shop_node};
use collector::proto::{self, get_file_response};
use collector_tests::Clients;
use std::collections::BTreeMap;
use tonic::Code;

/// Every file of records o1 and o2 of `shop/<coll>`: (record, path) → its
/// blake3 as read back byte for byte (and checked against StatFile's).
async fn contents(c: &Clients, coll: &str) -> BTreeMap<(String, String), String> {
    let mut out = BTreeMap::new();
    for record in ["o1", "o2"] {
        let page = c
            .records
            .clone()
            .list_files(proto::ListFilesRequest {
                namespace: "shop".into(),
                collection: coll.into(),
                record_id: record.into(),
                page_size: 1000,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        for f in page.files {
            let mut s = c
                .records
                .clone()
                .get_file(proto::GetFileRequest {
                    file: Some(proto::FileRef {
                        namespace: "shop".into(),
                        collection: coll.into(),
                        record_id: record.into(),
                        path: f.path.clone(),
                    }),
                    offset: 0,
                    length: 0,
                })
                .await
                .unwrap()
                .into_inner();
            let mut data = Vec::new();
            while let Some(m) = s.message().await.unwrap() {
                if let Some(get_file_response::Part::Chunk(b)) = m.part {
                    data.extend_from_slice(&b);
                }
            }
            assert_eq!(blake3_hex(&data), f.blake3, "{coll}/{record}/{}", f.path);
            out.insert((record.to_string(), f.path), f.blake3);
        }
    }
    out
}

async fn backup(
    c: &Clients,
    coll: &str,
    include_files: bool,
) -> Result<proto::BackupInfo, tonic::Status> {
    let mut s = c
        .repo
        .clone()
        .backup_collection(proto::BackupCollectionRequest {
            namespace: "shop".into(),
            name: coll.into(),
            include_files,
        })
        .await?
        .into_inner();
    let mut last = None;
    while let Some(p) = s.message().await? {
        last = p.backup.or(last);
    }
    Ok(last.expect("the last report has the backup"))
}

async fn restore(
    c: &Clients,
    id: &str,
    to: &str,
    overwrite: bool,
    include_files: bool,
) -> Result<proto::CollectionInfo, tonic::Status> {
    let mut s = c
        .repo
        .clone()
        .restore_backup(proto::RestoreBackupRequest {
            backup_id: id.into(),
            namespace: "shop".into(),
            name: to.into(),
            overwrite,
            include_files,
        })
        .await?
        .into_inner();
    let mut last = None;
    while let Some(p) = s.message().await? {
        last = p.collection.or(last);
    }
    Ok(last.expect("the last report has the collection"))
}

async fn valid(c: &Clients, id: &str) -> proto::VerifyBackupResponse {
    let mut s = c
        .repo
        .clone()
        .verify_backup(proto::VerifyBackupRequest {
            backup_id: id.into(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut last = None;
    while let Some(p) = s.message().await.unwrap() {
        last = p.verdict.or(last);
    }
    last.unwrap()
}

async fn info(c: &Clients, coll: &str) -> proto::CollectionInfo {
    c.repo
        .clone()
        .get_collection(proto::GetCollectionRequest {
            namespace: "shop".into(),
            name: coll.into(),
        })
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test]
async fn backups_carry_files_when_asked_and_restores_put_them_back() {
    let n = shop_node(|_| {}).await;
    let c = &n.clients;
    let big = bytes(5 << 20, 4);
    put(c, "o1", "a.txt", b"first").await;
    put(c, "o1", "docs/big.bin", &big).await;
    put(c, "o2", "x", b"x of o2").await;
    let then = contents(c, "orders").await;
    let with = backup(c, "orders", true).await.unwrap();
    assert_eq!(
        (with.includes_files, with.file_count, with.file_bytes),
        (true, 3, big.len() as i64 + 5 + 7),
        "{with:?}"
    );
    let without = backup(c, "orders", false).await.unwrap();
    assert_eq!((without.includes_files, without.file_count), (false, 0));
    assert!(valid(c, &with.backup_id).await.valid);
    // The collection moves on: a file replaced, one deleted, one added.
    put(c, "o1", "a.txt", b"second").await;
    put(c, "o2", "new", b"new").await;
    c.records
        .clone()
        .delete_file(proto::DeleteFileRequest {
            file: crate::files::file("o2", "x"),
            expected_version: None,
        })
        .await
        .unwrap();
    // To a new name: the files as they were.
    let copy = restore(c, &with.backup_id, "orders_then", false, true)
        .await
        .unwrap();
    assert_eq!(
        (copy.file_count, copy.file_bytes),
        (3, with.file_bytes),
        "{copy:?}"
    );
    assert_eq!(contents(c, "orders_then").await, then);
    // In place: back as they were, and the area holds just their blobs.
    restore(c, &with.backup_id, "orders", true, true)
        .await
        .unwrap();
    assert_eq!(contents(c, "orders").await, then);
    let area = n.dir.path().join("files/shop/orders");
    assert_eq!(files_under(&area).len(), 3, "{:?}", files_under(&area));
    // The restored collection's file is not left holding the bytes' pages.
    let db = info(c, "orders_then").await;
    assert!(db.size_bytes < big.len() as i64, "{} bytes", db.size_bytes);
    // Without include_files: the records, no files; with it from a backup
    // that has none: refused, nothing changed.
    let bare = restore(c, &with.backup_id, "orders_bare", false, false)
        .await
        .unwrap();
    assert_eq!((bare.record_count, bare.file_count), (2, 0));
    let e = restore(c, &without.backup_id, "orders", true, true)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("include_files"), "{e:?}");
    assert_eq!(contents(c, "orders").await, then);
    // A local clone with files.
    let mut repo = c.repo.clone();
    let mut s = proto::collection_repo_client::CollectionRepoClient::clone(
        &mut repo,
        proto::CloneRequest {
            namespace: "shop".into(),
            name: "orders".into(),
            dest_name: "orders_clone".into(),
            include_files: true,
            ..Default::default()
        },
    )
    .await
    .unwrap()
    .into_inner();
    while s.message().await.unwrap().is_some() {}
    assert_eq!(contents(c, "orders_clone").await, then);
}

#[tokio::test]
async fn damaged_files_fail_a_backup_and_a_damaged_backup_fails_verify() {
    let n = shop_node(|_| {}).await;
    let c = &n.clients;
    put(c, "o1", "a.bin", &bytes(3 << 20, 1)).await;
    let good = backup(c, "orders", true).await.unwrap();
    // A chunk of the backup changed: verify names the file.
    let file = n.dir.path().join(format!("backups/{}.db", good.backup_id));
    let db = rusqlite::Connection::open(&file).unwrap();
    db.execute(
        "UPDATE collector_file_chunks SET data = zeroblob(length(data)) WHERE seq = 1",
        [],
    )
    .unwrap();
    drop(db);
    let v = valid(c, &good.backup_id).await;
    assert!(!v.valid);
    assert!(
        v.problems
            .iter()
            .any(|p| p.contains("a.bin") && p.contains("do not match")),
        "{:?}",
        v.problems
    );
    let e = restore(c, &good.backup_id, "orders_bad", false, true)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    // The node's own blob changed on disk: a backup with files is DATA_LOSS
    // and leaves nothing; one without files still works.
    let area = n.dir.path().join("files/shop/orders");
    let blob = files_under(&area).pop().unwrap();
    let mut b = std::fs::read(&blob).unwrap();
    b[10] ^= 1;
    std::fs::write(&blob, b).unwrap();
    let e = backup(c, "orders", true).await.unwrap_err();
    assert_eq!(e.code(), Code::DataLoss, "{e:?}");
    assert!(e.message().contains("a.bin"), "{e:?}");
    assert!(backup(c, "orders", false).await.is_ok());
    let left: Vec<_> = std::fs::read_dir(n.dir.path().join("backups"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test]
async fn puts_and_deletes_while_a_backup_copies_files_do_not_break_it() {
    let n = shop_node(|_| {}).await;
    let c = n.clients.clone();
    for i in 0..8 {
        put(&c, "o1", &format!("f{i}"), &bytes(4 << 20, i as u8)).await;
    }
    let taking = tokio::spawn({
        let c = c.clone();
        async move { backup(&c, "orders", true).await }
    });
    // Replace and delete the files while the copy runs (bounded: 40 ops).
    for round in 0..40u8 {
        let path = format!("f{}", round % 8);
        if round % 2 == 0 {
            put(&c, "o1", &path, &bytes(1 << 10, round)).await;
        } else {
            let _ = c
                .records
                .clone()
                .delete_file(proto::DeleteFileRequest {
                    file: crate::files::file("o1", &path),
                    expected_version: None,
                })
                .await;
        }
        if taking.is_finished() {
            break;
        }
    }
    let b = taking
        .await
        .unwrap()
        .expect("the backup copies what its snapshot saw");
    assert!(valid(&c, &b.backup_id).await.valid);
    // Once it is done, the bytes it kept alive are freed.
    let live = contents(&c, "orders").await.len();
    assert_eq!(
        files_under(&n.dir.path().join("files/shop/orders")).len(),
        live
    );
}
