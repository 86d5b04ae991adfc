//! Online backups: taken while the collection serves, self-describing
//! SQLite files under the data dir, verified, restored in place or to a new
//! name, deleted.

use collector::proto;
use collector_tests::{Clients, Order, TestNode, order_of};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Takes a backup of `shop/<coll>`; returns it and the progress reports seen.
async fn backup(c: &Clients, coll: &str) -> (proto::BackupInfo, Vec<proto::BackupProgress>) {
    let mut stream = c
        .repo
        .clone()
        .backup_collection(proto::BackupCollectionRequest {
            namespace: "shop".into(),
            name: coll.into(),
            include_files: false,
        })
        .await
        .expect("BackupCollection")
        .into_inner();
    let mut seen = Vec::new();
    while let Some(p) = stream.message().await.expect("progress") {
        seen.push(p);
    }
    let last = seen.last().expect("at least the final report");
    (
        last.backup.clone().expect("the last report has the backup"),
        seen,
    )
}

async fn restore(
    c: &Clients,
    id: &str,
    ns: &str,
    name: &str,
    overwrite: bool,
) -> Result<proto::CollectionInfo, tonic::Status> {
    restore_steps(c, id, ns, name, overwrite)
        .await
        .map(|(info, _)| info)
}

/// Restores a backup; the restored collection and the progress reports seen.
async fn restore_steps(
    c: &Clients,
    id: &str,
    ns: &str,
    name: &str,
    overwrite: bool,
) -> Result<(proto::CollectionInfo, Vec<proto::RestoreProgress>), tonic::Status> {
    let mut stream = c
        .repo
        .clone()
        .restore_backup(proto::RestoreBackupRequest {
            backup_id: id.into(),
            namespace: ns.into(),
            name: name.into(),
            overwrite,
            include_files: false,
        })
        .await?
        .into_inner();
    let mut seen = Vec::new();
    while let Some(p) = stream.message().await? {
        seen.push(p);
    }
    let info = seen
        .last()
        .and_then(|p| p.collection.clone())
        .expect("the last report carries the collection");
    Ok((info, seen))
}

async fn titles(c: &Clients, ns: &str, coll: &str) -> BTreeMap<String, String> {
    let r = c
        .records
        .clone()
        .list(proto::ListRequest {
            namespace: ns.into(),
            collection: coll.into(),
            page_size: 1000,
            ..Default::default()
        })
        .await
        .expect("List")
        .into_inner();
    r.records
        .iter()
        .map(|rec| (rec.id.clone(), order_of(rec).title))
        .collect()
}

fn backup_file(dir: &Path, id: &str) -> PathBuf {
    dir.join("backups").join(format!("{id}.db"))
}

async fn verify(c: &Clients, id: &str) -> proto::VerifyBackupResponse {
    verify_steps(c, id).await.0
}

/// Verifies a backup; the verdict and the progress reports seen.
async fn verify_steps(
    c: &Clients,
    id: &str,
) -> (proto::VerifyBackupResponse, Vec<proto::VerifyProgress>) {
    let mut stream = c
        .repo
        .clone()
        .verify_backup(proto::VerifyBackupRequest {
            backup_id: id.into(),
        })
        .await
        .expect("VerifyBackup")
        .into_inner();
    let mut seen = Vec::new();
    while let Some(p) = stream.message().await.expect("verify progress") {
        seen.push(p);
    }
    let verdict = seen
        .last()
        .and_then(|p| p.verdict.clone())
        .expect("the last report carries the verdict");
    (verdict, seen)
}

/// Checks that a stream of reports went through `order`'s steps in that
/// order, ending with its last (a fast step may be skipped: reports follow
/// the work, and a reader may miss some).
pub(crate) fn assert_steps<'a>(reports: impl IntoIterator<Item = &'a str>, order: &[&str]) {
    let seen: Vec<&str> = reports.into_iter().collect();
    let mut at = 0;
    for s in &seen {
        let i = order
            .iter()
            .position(|o| o == s)
            .unwrap_or_else(|| panic!("step {s:?} is not one of {order:?}: {seen:?}"));
        assert!(i >= at, "steps out of order: {seen:?}");
        at = i;
    }
    assert_eq!(seen.last(), order.last(), "{seen:?}");
}

/// A node with `shop/orders` (indexed on quantity) holding o1 "red lamp"
/// and o2 "blue chair".
async fn node_with_two_orders() -> TestNode {
    let mut n = TestNode::start().await;
    n.clients.register_shop("shop").await;
    n.clients
        .create_orders("shop", "orders", &["quantity"])
        .await;
    for (id, t) in [("o1", "red lamp"), ("o2", "blue chair")] {
        n.clients
            .put("shop", "orders", id, &Order::new(t, 1))
            .await
            .unwrap();
    }
    n
}

#[tokio::test]
async fn a_backup_restores_the_old_state_in_place_and_to_a_new_name() {
    let mut n = node_with_two_orders().await;
    let (b, progress) = backup(&n.clients, "orders").await;
    assert_eq!(b.record_count, 2);
    assert_eq!(b.namespace, "shop");
    assert_eq!(b.message_type, "shop.Order");
    assert_eq!(b.blake3.len(), 64, "{b:?}");
    assert!(b.size_bytes > 0 && b.size_bytes == b.page_count * b.page_size as i64);
    let last = progress.last().unwrap();
    assert_eq!(last.bytes_done, last.bytes_total);

    // The file is a plain SQLite database: stock SQLite reads its records
    // and what it describes itself as, with no -wal beside it.
    let file = backup_file(n.dir.path(), &b.backup_id);
    {
        let conn = rusqlite::Connection::open_with_flags(
            &file,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap();
        let count: i64 = conn
            .query_row("SELECT count(*) FROM records", [], |r| r.get(0))
            .unwrap();
        assert_eq!(count, 2);
        let meta: BTreeMap<String, rusqlite::types::Value> = conn
            .prepare("SELECT key, value FROM collector_backup")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        use rusqlite::types::Value;
        assert_eq!(meta["message_type"], Value::Text("shop.Order".into()));
        assert_eq!(meta["collection"], Value::Text("orders".into()));
        assert_eq!(meta["record_count"], Value::Integer(2));
        assert!(matches!(&meta["descriptor_set"], Value::Blob(b) if !b.is_empty()));
        let json: String = conn
            .query_row("SELECT json FROM records WHERE id = 'o1'", [], |r| r.get(0))
            .unwrap();
        assert!(json.contains("red lamp"), "{json}");
    }
    assert!(!file.with_extension("db-wal").exists());

    // Recorded in system/backups, readable with the ordinary API.
    let listed = n
        .clients
        .records
        .clone()
        .get(proto::GetRequest {
            namespace: "system".into(),
            collection: "backups".into(),
            id: b.backup_id.clone(),
            ..Default::default()
        })
        .await
        .expect("system/backups holds the backup")
        .into_inner();
    let recorded = <proto::BackupInfo as prost::Message>::decode(
        listed.data.expect("a payload").value.as_slice(),
    )
    .unwrap();
    assert_eq!(recorded.blake3, b.blake3);
    assert_eq!(
        n.clients
            .repo
            .clone()
            .get_backup(proto::GetBackupRequest {
                backup_id: b.backup_id.clone()
            })
            .await
            .unwrap()
            .into_inner(),
        b
    );

    // Change everything.
    let mut u = n.clients.records.clone();
    u.update(proto::UpdateRequest {
        namespace: "shop".into(),
        collection: "orders".into(),
        record: Some(proto::Record {
            id: "o1".into(),
            data: Some(Order::new("green lamp", 5).any()),
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    u.delete(proto::DeleteRequest {
        namespace: "shop".into(),
        collection: "orders".into(),
        id: "o2".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    n.clients
        .put("shop", "orders", "o3", &Order::new("new desk", 1))
        .await
        .unwrap();

    let old: BTreeMap<String, String> = [
        ("o1".to_string(), "red lamp".to_string()),
        ("o2".to_string(), "blue chair".to_string()),
    ]
    .into();

    // To a new name: the old state, next to the current one.
    let (info, reports) = restore_steps(&n.clients, &b.backup_id, "shop", "orders_then", false)
        .await
        .unwrap();
    assert_eq!(info.name, "orders_then");
    // Reported step by step: verified (hashed, checked), then copied in.
    assert_steps(
        reports.iter().map(|p| p.step.as_str()),
        &["hashing", "checking", "copying"],
    );
    let end = reports.last().unwrap();
    assert_eq!(
        (end.bytes_done, end.bytes_total),
        (b.size_bytes, b.size_bytes)
    );
    assert!(reports.iter().all(|p| p.bytes_done <= p.bytes_total));
    assert_eq!(info.indexes, ["quantity"]);
    assert_eq!(titles(&n.clients, "shop", "orders_then").await, old);
    assert_eq!(titles(&n.clients, "shop", "orders").await.len(), 2);

    // Over the collection: only with overwrite.
    let e = restore(&n.clients, &b.backup_id, "", "", false)
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::AlreadyExists, "{e:?}");
    restore(&n.clients, &b.backup_id, "", "", true)
        .await
        .unwrap();
    assert_eq!(titles(&n.clients, "shop", "orders").await, old);
    // Reads by id (the cache), search (the FTS index) and writes follow.
    let got = n
        .clients
        .records
        .clone()
        .get(proto::GetRequest {
            namespace: "shop".into(),
            collection: "orders".into(),
            id: "o1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(order_of(&got).title, "red lamp");
    let hits = n
        .clients
        .search(proto::SearchRequest {
            namespace: "shop".into(),
            collection: "orders".into(),
            query: "chair".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(hits.hits.len(), 1, "{hits:?}");
    let e = n
        .clients
        .records
        .clone()
        .get(proto::GetRequest {
            namespace: "shop".into(),
            collection: "orders".into(),
            id: "o3".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    n.clients
        .put("shop", "orders", "o4", &Order::new("after", 1))
        .await
        .unwrap();

    // All of it survives a restart.
    n.restart().await;
    let mut after = old.clone();
    after.insert("o4".into(), "after".into());
    assert_eq!(titles(&n.clients, "shop", "orders").await, after);
    assert_eq!(titles(&n.clients, "shop", "orders_then").await, old);
}

#[tokio::test]
async fn a_restore_brings_its_type_into_a_namespace_that_never_had_it() {
    let mut n = TestNode::start().await;
    n.clients.register_shop("shop").await;
    n.clients.create_orders("shop", "orders", &[]).await;
    n.clients
        .put("shop", "orders", "o1", &Order::new("lamp", 1))
        .await
        .unwrap();
    let (b, _) = backup(&n.clients, "orders").await;
    let info = restore(&n.clients, &b.backup_id, "archive", "orders", false)
        .await
        .unwrap();
    assert_eq!(info.namespace, "archive");
    assert_eq!(info.message_type, "shop.Order");
    assert_eq!(titles(&n.clients, "archive", "orders").await.len(), 1);
    let protos = n
        .clients
        .registry
        .list_protos(proto::ListProtosRequest {
            namespace: "archive".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        protos.files.iter().any(|f| f.name == "shop.proto"),
        "{protos:?}"
    );

    // A namespace whose shop.proto says something else refuses the backup.
    n.clients
        .registry
        .register_proto(proto::RegisterProtoRequest {
            namespace: "other".into(),
            sources: vec![proto::ProtoSource {
                name: "shop.proto".into(),
                content: "syntax = \"proto3\"; package shop; message Order { string name = 1; }"
                    .into(),
            }],
            ..Default::default()
        })
        .await
        .unwrap();
    let e = restore(&n.clients, &b.backup_id, "other", "orders", false)
        .await
        .unwrap_err();
    assert!(
        matches!(
            e.code(),
            tonic::Code::FailedPrecondition | tonic::Code::AlreadyExists
        ),
        "{e:?}"
    );
    assert!(e.message().contains("does not fit"), "{e:?}");
}

#[tokio::test]
async fn a_backup_under_sixteen_writers_holds_a_prefix_of_each_writers_acknowledged_writes() {
    let n = TestNode::start().await;
    let mut c = n.clients.clone();
    c.register_shop("shop").await;
    c.create_orders("shop", "orders", &[]).await;
    const WRITERS: usize = 16;
    const EACH: usize = 150;
    let acked: std::sync::Arc<Vec<std::sync::atomic::AtomicUsize>> = std::sync::Arc::new(
        (0..WRITERS)
            .map(|_| std::sync::atomic::AtomicUsize::new(0))
            .collect(),
    );
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let mut c = n.clients.clone();
        let acked = acked.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..EACH {
                c.put(
                    "shop",
                    "orders",
                    &format!("w{w:02}-{i:04}"),
                    &Order::new("x", i as i64),
                )
                .await
                .expect("write during the backup");
                acked[w].store(i + 1, std::sync::atomic::Ordering::Release);
            }
        }));
    }
    // Once every writer is under way.
    while acked
        .iter()
        .any(|a| a.load(std::sync::atomic::Ordering::Acquire) < 10)
    {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let before: Vec<usize> = acked
        .iter()
        .map(|a| a.load(std::sync::atomic::Ordering::Acquire))
        .collect();
    let (b, _) = backup(&n.clients, "orders").await;
    eprintln!(
        "backup under writes: {} of {} records",
        b.record_count,
        WRITERS * EACH
    );
    for t in tasks {
        t.await.unwrap();
    }
    let conn = rusqlite::Connection::open_with_flags(
        backup_file(n.dir.path(), &b.backup_id),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let ids: Vec<String> = conn
        .prepare("SELECT id FROM records")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(ids.len() as i64, b.record_count);
    for (w, &acked_before) in before.iter().enumerate() {
        let mut mine: Vec<usize> = ids
            .iter()
            .filter_map(|id| id.strip_prefix(&format!("w{w:02}-")))
            .map(|i| i.parse().unwrap())
            .collect();
        mine.sort();
        // A prefix: writes 0..k, none missing in between…
        assert_eq!(mine, (0..mine.len()).collect::<Vec<_>>(), "writer {w}");
        // …holding at least what was acknowledged before the backup began.
        assert!(
            mine.len() >= acked_before,
            "writer {w}: {} in the backup, {acked_before} acknowledged before it",
            mine.len()
        );
    }
    let (verdict, reports) = verify_steps(&n.clients, &b.backup_id).await;
    assert!(verdict.valid, "{verdict:?}");
    assert_steps(
        reports.iter().map(|p| p.step.as_str()),
        &["hashing", "checking"],
    );
    assert_eq!(c.count("shop", "orders").await, (WRITERS * EACH) as i64);
}

#[tokio::test]
async fn verify_finds_a_flipped_byte_and_a_damaged_backup_is_never_restored() {
    let n = TestNode::start().await;
    let mut c = n.clients.clone();
    c.register_shop("shop").await;
    c.create_orders("shop", "orders", &[]).await;
    for i in 0..200 {
        c.put(
            "shop",
            "orders",
            &format!("o{i}"),
            &Order::new("some title", i),
        )
        .await
        .unwrap();
    }
    let (b, _) = backup(&c, "orders").await;
    let ok = verify(&c, &b.backup_id).await;
    assert!(ok.valid && ok.problems.is_empty(), "{ok:?}");

    let file = backup_file(n.dir.path(), &b.backup_id);
    let mut bytes = std::fs::read(&file).unwrap();
    let at = bytes.len() / 2 + 100;
    bytes[at] ^= 0x5a;
    std::fs::write(&file, &bytes).unwrap();
    let bad = verify(&c, &b.backup_id).await;
    assert!(!bad.valid, "{bad:?}");
    assert!(bad.problems.iter().any(|p| p.contains("blake3")), "{bad:?}");
    let e = restore(&c, &b.backup_id, "shop", "copy", false)
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("damaged"), "{e:?}");
    assert_eq!(
        c.repo
            .get_collection(proto::GetCollectionRequest {
                namespace: "shop".into(),
                name: "copy".into(),
            })
            .await
            .unwrap_err()
            .code(),
        tonic::Code::NotFound
    );
}

#[tokio::test]
async fn backups_are_listed_newest_first_and_deleting_one_frees_its_file() {
    let n = TestNode::start().await;
    let mut c = n.clients.clone();
    c.register_shop("shop").await;
    c.create_orders("shop", "orders", &[]).await;
    c.create_orders("shop", "returns", &[]).await;
    let (b1, _) = backup(&c, "orders").await;
    let (b2, _) = backup(&c, "returns").await;
    let (b3, _) = backup(&c, "orders").await;
    let list = |collection: &str, since: Option<prost_types::Timestamp>, page_size: u32| {
        let mut repo = c.repo.clone();
        let req = proto::ListBackupsRequest {
            namespace: "shop".into(),
            collection: collection.into(),
            since,
            page_size,
            ..Default::default()
        };
        async move { repo.list_backups(req).await.unwrap().into_inner() }
    };
    let ids = |r: &proto::ListBackupsResponse| {
        r.backups
            .iter()
            .map(|b| b.backup_id.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        ids(&list("", None, 0).await),
        [
            b3.backup_id.clone(),
            b2.backup_id.clone(),
            b1.backup_id.clone()
        ]
    );
    assert_eq!(
        ids(&list("orders", None, 0).await),
        [b3.backup_id.clone(), b1.backup_id.clone()]
    );
    assert_eq!(
        ids(&list("", b2.created_at, 0).await),
        [b3.backup_id.clone(), b2.backup_id.clone()]
    );
    let first = list("", None, 2).await;
    assert_eq!(first.backups.len(), 2);
    assert!(!first.next_page_token.is_empty());
    let rest = c
        .repo
        .list_backups(proto::ListBackupsRequest {
            namespace: "shop".into(),
            page_size: 2,
            page_token: first.next_page_token,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ids(&rest), std::slice::from_ref(&b1.backup_id));

    let file = backup_file(n.dir.path(), &b1.backup_id);
    assert!(file.exists());
    let freed = c
        .repo
        .delete_backup(proto::DeleteBackupRequest {
            backup_id: b1.backup_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .freed_bytes;
    assert_eq!(freed, b1.size_bytes);
    assert!(!file.exists());
    let e = c
        .repo
        .get_backup(proto::GetBackupRequest {
            backup_id: b1.backup_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn backup_ids_and_names_cannot_reach_outside_the_data_dir() {
    let n = TestNode::start().await;
    let mut c = n.clients.clone();
    c.register_shop("shop").await;
    c.create_orders("shop", "orders", &[]).await;
    let (b, _) = backup(&c, "orders").await;
    for id in ["../../etc/passwd", "", "a/b", "x\0y", &"9".repeat(5000)] {
        let e = c
            .repo
            .get_backup(proto::GetBackupRequest {
                backup_id: id.to_string(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{id:?}: {e:?}");
        assert!(e.message().len() < 400, "{}", e.message().len());
        let e = c
            .repo
            .delete_backup(proto::DeleteBackupRequest {
                backup_id: id.to_string(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{id:?}: {e:?}");
    }
    let unknown = "01890a5d-ac96-774b-bcce-b302099a8057";
    let e = c
        .repo
        .verify_backup(proto::VerifyBackupRequest {
            backup_id: unknown.into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    for (ns, name) in [
        ("shop", "../x"),
        ("shop", "a/b"),
        ("..", "x"),
        ("shop", "x\0"),
    ] {
        let e = restore(&c, &b.backup_id, ns, name, false)
            .await
            .unwrap_err();
        assert_eq!(
            e.code(),
            tonic::Code::InvalidArgument,
            "{ns:?}/{name:?}: {e:?}"
        );
    }
    let e = restore(&c, &b.backup_id, "system", "x", false)
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    let Err(e) = c
        .repo
        .backup_collection(proto::BackupCollectionRequest {
            namespace: "shop".into(),
            name: "missing".into(),
            include_files: false,
        })
        .await
    else {
        panic!("a missing collection is refused before the stream");
    };
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    // Nothing was written beside the data dir.
    let parent = n.dir.path().parent().unwrap();
    assert!(!parent.join("x").exists() && !parent.join("etc").exists());
}

/// What the stock `sqlite3` CLI prints for `sql` on `file`, opened
/// read-only; None on a machine without the CLI (CI installs it and sets
/// `COLLECTOR_TEST_SQLITE3=1`, which makes its absence a failure).
fn sqlite3_cli(file: &Path, sql: &str) -> Option<String> {
    match std::process::Command::new("sqlite3")
        .arg("-readonly")
        .arg(file)
        .arg(sql)
        .output()
    {
        Ok(out) => {
            assert!(
                out.status.success(),
                "sqlite3 {sql:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            Some(String::from_utf8(out.stdout).unwrap())
        }
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound
                && std::env::var_os("COLLECTOR_TEST_SQLITE3").is_none() =>
        {
            eprintln!("no sqlite3 CLI on this machine: the check with it is left to CI");
            None
        }
        Err(e) => panic!("running sqlite3: {e}"),
    }
}

#[tokio::test]
async fn a_node_that_never_saw_the_type_restores_a_backup_file_copied_into_its_data_dir() {
    let a = node_with_two_orders().await;
    let (b, _) = backup(&a.clients, "orders").await;
    let file = backup_file(a.dir.path(), &b.backup_id);

    // The stock sqlite3 CLI reads it: records, their JSON, the full-text
    // index and what the file says it is.
    if let Some(out) = sqlite3_cli(&file, "SELECT id, json FROM records ORDER BY id") {
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "{out}");
        assert!(
            lines[0].starts_with("o1|") && lines[0].contains("red lamp"),
            "{out}"
        );
        assert!(
            lines[1].starts_with("o2|") && lines[1].contains("blue chair"),
            "{out}"
        );
        let meta = sqlite3_cli(
            &file,
            "SELECT value FROM collector_backup WHERE key IN ('message_type', 'record_count') ORDER BY key",
        )
        .unwrap();
        assert_eq!(meta, "shop.Order\n2\n");
        // The full-text index is a contentless-delete FTS5 table, which
        // SQLite reads from 3.43 on (Debian 12's CLI is 3.40).
        let version = sqlite3_cli(&file, "SELECT sqlite_version()").unwrap();
        let v: Vec<u32> = version
            .trim()
            .split('.')
            .map(|p| p.parse().unwrap())
            .collect();
        if (v[0], v[1]) >= (3, 43) {
            let hits = sqlite3_cli(
                &file,
                "SELECT count(*) FROM records_fts WHERE records_fts MATCH 'lamp'",
            )
            .unwrap();
            assert_eq!(hits.trim(), "1");
        }
    }

    // A fresh node, which never registered shop.Order, is given the file
    // under another name beside something that is not a backup.
    let mut fresh = TestNode::start().await;
    let backups = fresh.dir.path().join("backups");
    std::fs::copy(&file, backups.join("orders-offsite.db")).unwrap();
    std::fs::write(backups.join("notes.db"), b"not a database").unwrap();
    fresh.restart().await;
    let listed = backups_of(&fresh.clients, "orders").await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    let adopted = &listed[0];
    assert_eq!(adopted.backup_id, b.backup_id);
    assert_eq!(adopted.blake3, b.blake3);
    assert_eq!(adopted.record_count, 2);
    assert_eq!(adopted.node_id, a.handle.as_ref().unwrap().node_id);
    assert!(backup_file(fresh.dir.path(), &b.backup_id).exists());
    assert!(
        backups.join("notes.db").exists(),
        "an operator's file is left alone"
    );
    assert!(verify(&fresh.clients, &b.backup_id).await.valid);

    let info = restore(&fresh.clients, &b.backup_id, "", "", false)
        .await
        .unwrap();
    assert_eq!(
        (info.namespace.as_str(), info.name.as_str()),
        ("shop", "orders")
    );
    assert_eq!(info.indexes, vec!["quantity".to_string()]);
    let got = titles(&fresh.clients, "shop", "orders").await;
    assert_eq!(got["o1"], "red lamp");
    assert_eq!(got["o2"], "blue chair");
    // Adopted once: a restart finds it recorded.
    fresh.restart().await;
    assert_eq!(backups_of(&fresh.clients, "orders").await.len(), 1);
}

async fn backups_of(c: &Clients, coll: &str) -> Vec<proto::BackupInfo> {
    c.repo
        .clone()
        .list_backups(proto::ListBackupsRequest {
            namespace: "shop".into(),
            collection: coll.into(),
            ..Default::default()
        })
        .await
        .expect("ListBackups")
        .into_inner()
        .backups
}

async fn set_policy(c: &Clients, coll: &str, p: proto::BackupPolicy) -> proto::CollectionInfo {
    c.repo
        .clone()
        .update_collection(proto::UpdateCollectionRequest {
            namespace: "shop".into(),
            name: coll.into(),
            backup_policy: Some(p),
            ..Default::default()
        })
        .await
        .expect("UpdateCollection")
        .into_inner()
}

/// Polls `ok` on the collection's backups for up to 15 s.
async fn wait_for_backups(
    c: &Clients,
    coll: &str,
    what: &str,
    ok: impl Fn(&[proto::BackupInfo]) -> bool,
) -> Vec<proto::BackupInfo> {
    let t = std::time::Instant::now();
    loop {
        let b = backups_of(c, coll).await;
        if ok(&b) {
            return b;
        }
        assert!(
            t.elapsed() < std::time::Duration::from_secs(15),
            "{what}: not within 15 s; backups: {b:#?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_backup_policy_keeps_the_newest_drops_the_old_and_schedules_across_restarts() {
    let mut n = TestNode::start().await;
    n.clients.register_shop("shop").await;
    let info = n
        .clients
        .repo
        .create_collection(proto::CreateCollectionRequest {
            namespace: "shop".into(),
            name: "orders".into(),
            message_type: "shop.Order".into(),
            backup_policy: Some(proto::BackupPolicy {
                max_backups: 2,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.backup_policy.unwrap().max_backups, 2);

    // By count: each backup prunes past the newest two, files included.
    let mut taken = Vec::new();
    for _ in 0..3 {
        taken.push(backup(&n.clients, "orders").await.0);
    }
    let kept = backups_of(&n.clients, "orders").await;
    let ids: Vec<_> = kept.iter().map(|b| b.backup_id.as_str()).collect();
    assert_eq!(ids, [&taken[2].backup_id, &taken[1].backup_id]);
    assert!(!backup_file(n.dir.path(), &taken[0].backup_id).exists());

    // By age, on the node's timer (no backup needed to trigger it).
    set_policy(
        &n.clients,
        "orders",
        proto::BackupPolicy {
            retention_seconds: 1,
            ..Default::default()
        },
    )
    .await;
    wait_for_backups(&n.clients, "orders", "backups past 1 s pruned", |b| {
        b.is_empty()
    })
    .await;

    // Scheduled: every second, keeping three.
    let info = set_policy(
        &n.clients,
        "orders",
        proto::BackupPolicy {
            interval_seconds: 1,
            max_backups: 3,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(info.backup_policy.unwrap().interval_seconds, 1);
    wait_for_backups(&n.clients, "orders", "two scheduled backups", |b| {
        b.len() >= 2
    })
    .await;

    // The schedule is stored: after a restart it goes on.
    n.restart().await;
    let restarted = collector::util::now_us();
    let after = wait_for_backups(&n.clients, "orders", "a backup after the restart", |b| {
        b.first().is_some_and(|b| {
            collector::util::timestamp_us(b.created_at.as_ref().unwrap()) > restarted
        })
    })
    .await;
    assert!(after.len() <= 3, "{after:#?}");
    let info = n
        .clients
        .repo
        .get_collection(proto::GetCollectionRequest {
            namespace: "shop".into(),
            name: "orders".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.backup_policy.unwrap().max_backups, 3);
}

/// Fills `shop/orders` with `n` records of ~1 KB in batches.
async fn fill(c: &mut Clients, prefix: &str, n: usize) {
    let title = "x".repeat(1000);
    for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
        let ops = chunk
            .iter()
            .map(|i| proto::BatchOp {
                op: Some(proto::batch_op::Op::Create(proto::CreateRequest {
                    record: Some(proto::Record {
                        id: format!("{prefix}{i}"),
                        data: Some(Order::new(&title, *i as i64).any()),
                        ..Default::default()
                    }),
                    ..Default::default()
                })),
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
}

async fn marker(c: &Clients) -> String {
    let r = c
        .records
        .clone()
        .get(proto::GetRequest {
            namespace: "shop".into(),
            collection: "orders".into(),
            id: "marker".into(),
            ..Default::default()
        })
        .await
        .expect("the marker record")
        .into_inner();
    order_of(&r).title
}

/// Makes the collection state B: the marker says "B", 300 more records.
async fn to_state_b(c: &mut Clients) {
    c.records
        .update(proto::UpdateRequest {
            namespace: "shop".into(),
            collection: "orders".into(),
            record: Some(proto::Record {
                id: "marker".into(),
                data: Some(Order::new("B", 0).any()),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    fill(c, "b-", 300).await;
}

#[tokio::test]
async fn kill_9_during_a_backup_or_a_restore_leaves_the_old_state_or_the_new_one_whole() {
    const BIN: &str = env!("CARGO_BIN_EXE_collector-node");
    const RECORDS: usize = 20_000;
    let dir = tempfile::tempdir().unwrap();
    let mut node = collector_tests::ProcessNode::start(BIN, dir.path());
    let mut c = Clients::connect(node.addr).await;
    c.register_shop("shop").await;
    c.create_orders("shop", "orders", &["quantity"]).await;
    fill(&mut c, "a-", RECORDS).await;
    c.put("shop", "orders", "marker", &Order::new("A", 0))
        .await
        .unwrap();
    let count_a = (RECORDS + 1) as i64;
    let (b, _) = backup(&c, "orders").await;
    assert_eq!(b.record_count, count_a);
    to_state_b(&mut c).await;
    let count_b = count_a + 300;

    let mut seen = BTreeMap::<String, usize>::new();
    let restores = [0u64, 10, 40, 100, 200, 400, 800, 5000].map(|d| (true, d));
    let backups = [0u64, 10, 40, 150].map(|d| (false, d));
    for (cycle, (restoring, delay_ms)) in restores.into_iter().chain(backups).enumerate() {
        let c2 = c.clone();
        let id = b.backup_id.clone();
        let call = tokio::spawn(async move {
            if restoring {
                let _ = restore(&c2, &id, "", "", true).await;
            } else {
                let mut repo = c2.repo.clone();
                if let Ok(s) = repo
                    .backup_collection(proto::BackupCollectionRequest {
                        namespace: "shop".into(),
                        name: "orders".into(),
                        include_files: false,
                    })
                    .await
                {
                    let mut s = s.into_inner();
                    while let Ok(Some(_)) = s.message().await {}
                }
            }
        });
        tokio::time::sleep(std::time::Duration::from_millis(delay_ms)).await;
        node.kill9();
        let _ = call.await;
        node = collector_tests::ProcessNode::start(BIN, dir.path());
        c = Clients::connect(node.addr).await;

        let state = marker(&c).await;
        let count = c.count("shop", "orders").await;
        match state.as_str() {
            "A" => assert_eq!(count, count_a, "cycle {cycle}: state A, whole"),
            "B" => assert_eq!(count, count_b, "cycle {cycle}: state B, whole"),
            other => panic!("cycle {cycle}: marker says {other:?}"),
        }
        assert!(restoring || state == "B", "a backup changed the collection");
        *seen
            .entry(format!(
                "{}:{state}",
                if restoring { "restore" } else { "backup" }
            ))
            .or_default() += 1;
        // Nothing half-made is left, and every listed backup is sound.
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("backups"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.ends_with(".db"))
            .collect();
        assert!(leftovers.is_empty(), "cycle {cycle}: {leftovers:?}");
        assert!(
            !dir.path()
                .join("collections/shop/orders.db.restoring")
                .exists()
        );
        for listed in backups_of(&c, "orders").await {
            let v = verify(&c, &listed.backup_id).await;
            assert!(v.valid, "cycle {cycle}: {v:?}");
        }
        if state == "A" {
            to_state_b(&mut c).await;
        }
    }
    eprintln!("kill -9 outcomes: {seen:?}");
    // Killed before it began (0 ms) and long after it ended (5 s): both
    // outcomes were checked.
    assert!(
        seen.contains_key("restore:A") && seen.contains_key("restore:B"),
        "{seen:?}"
    );
}
