//! The web console: signing in and what a key may see and do, over plain
//! HTTP; then the whole console of a two-node mesh driven in headless
//! Chromium (`tests/browser/console.mjs`, playwright-core), with
//! screenshots under `target/console-screenshots/`.

use crate::mesh::{wait_for, wait_for_collection};
use collector::proto;
use collector_tests::{Clients, ProcessNode, TOKEN, TestNode};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BIN: &str = env!("CARGO_BIN_EXE_collector-node");

/// An HTTP/1.0 answer: status, headers (lower-case names), body.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One request as a browser would make it: `key` signed in (as the
/// console's cookie), `form` as a urlencoded POST body.
async fn http(
    addr: std::net::SocketAddr,
    path: &str,
    key: Option<&str>,
    form: Option<&[(&str, &str)]>,
) -> Answer {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let cookie = key.map_or(String::new(), |k| {
        format!("cookie: collector_console={k}\r\n")
    });
    let req = match form {
        None => format!("GET {path} HTTP/1.0\r\nhost: node\r\n{cookie}\r\n"),
        Some(fields) => {
            let body = fields
                .iter()
                .map(|(k, v)| format!("{k}={}", urlencoded(v)))
                .collect::<Vec<_>>()
                .join("&");
            format!(
                "POST {path} HTTP/1.0\r\nhost: node\r\n{cookie}content-type: application/x-www-form-urlencoded\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            )
        }
    };
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_string(&mut out))
        .await
        .expect("the console answers")
        .unwrap();
    let (head, body) = out.split_once("\r\n\r\n").expect("an HTTP response");
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Answer {
        status,
        headers,
        body: body.to_string(),
    }
}

/// `v` as a form field value: every byte but letters and digits as %XX.
fn urlencoded(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' => (b as char).to_string(),
            b => format!("%{b:02X}"),
        })
        .collect()
}

async fn key(c: &mut Clients, ns: &str, role: &str) -> String {
    c.registry
        .create_key(proto::CreateKeyRequest {
            description: format!("console test {role} in {ns}"),
            grants: vec![proto::RoleGrant {
                namespace: ns.into(),
                role: role.into(),
            }],
            ..Default::default()
        })
        .await
        .expect("create key")
        .into_inner()
        .token
}

async fn create(c: &mut Clients, ns: &str, name: &str) {
    c.register_shop(ns).await;
    c.repo
        .create_collection(proto::CreateCollectionRequest {
            namespace: ns.into(),
            name: name.into(),
            message_type: "shop.Order".into(),
            ..Default::default()
        })
        .await
        .expect("create collection");
}

#[tokio::test]
async fn the_console_signs_in_with_a_key_and_shows_only_what_it_may() {
    let mut n = TestNode::start().await;
    let addr = n.handle.as_ref().unwrap().addr;
    let c = &mut n.clients;
    create(c, "shop", "orders").await;
    create(c, "secret", "plans").await;
    c.records
        .create(proto::CreateRequest {
            namespace: "shop".into(),
            collection: "orders".into(),
            record: Some(proto::Record {
                id: "o-1".into(),
                json: r#"{"title": "<script>alert(1)</script>", "quantity": 1}"#.into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let reader = key(c, "shop", "read").await;

    // Signed out: every screen sends the browser to sign in.
    for path in [
        "/console",
        "/console/collections",
        "/console/c/shop/orders",
        "/console/mesh",
    ] {
        let a = http(addr, path, None, None).await;
        assert_eq!(a.status, 303, "{path}");
        assert!(
            a.header("location").unwrap().starts_with("/console"),
            "{path}"
        );
    }
    let a = http(addr, "/console/collections", Some("ck_bad"), None).await;
    assert_eq!(
        a.header("location")
            .map(|l| l.starts_with("/console/login?why=")),
        Some(true)
    );
    let a = http(
        addr,
        "/console/login",
        None,
        Some(&[("key", "ck_0000000000000000_nope")]),
    )
    .await;
    assert_eq!(a.status, 401);
    assert!(a.body.contains("Unauthenticated"), "{}", a.body);

    // Signing in sets a cookie scripts cannot read, sent only to the console.
    let a = http(addr, "/console/login", None, Some(&[("key", &reader)])).await;
    assert_eq!(a.status, 303);
    let cookie = a.header("set-cookie").unwrap();
    for part in ["HttpOnly", "SameSite=Strict", "Path=/console"] {
        assert!(cookie.contains(part), "{cookie}");
    }

    // A reader sees its namespace only, and records escaped as text.
    let a = http(addr, "/console/collections", Some(&reader), None).await;
    assert_eq!(a.status, 200);
    assert!(
        a.body.contains("orders") && !a.body.contains("plans"),
        "{}",
        a.body
    );
    let a = http(addr, "/console/c/shop/orders/r/o-1", Some(&reader), None).await;
    assert_eq!(a.status, 200);
    assert!(a.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(!a.body.contains("<script>alert"), "record data is escaped");
    let a = http(addr, "/console/c/secret/plans", Some(&reader), None).await;
    assert_eq!(a.status, 403);
    assert!(a.body.contains("PermissionDenied"), "{}", a.body);
    // It may not write, nor read the node's metrics.
    let form: &[(&str, &str)] = &[("json", r#"{"title": "x"}"#), ("labels", "")];
    let a = http(
        addr,
        "/console/c/shop/orders/new",
        Some(&reader),
        Some(form),
    )
    .await;
    assert_eq!(a.status, 400);
    assert!(a.body.contains("PermissionDenied"), "{}", a.body);
    assert_eq!(
        http(addr, "/console/metrics.json", Some(&reader), None)
            .await
            .status,
        403
    );

    // A writer creates; a bad field is shown with what to fix; labels too.
    let writer = key(c, "shop", "write").await;
    let bad: &[(&str, &str)] = &[("json", r#"{"quantity": "many"}"#), ("labels", "")];
    let a = http(addr, "/console/c/shop/orders/new", Some(&writer), Some(bad)).await;
    assert_eq!(a.status, 400);
    assert!(
        a.body.contains("InvalidArgument") && a.body.contains("shop.Order"),
        "{}",
        a.body
    );
    assert!(a.body.contains("many"), "the form keeps what was typed");
    let good: &[(&str, &str)] = &[
        ("id", "o-2"),
        ("json", r#"{"title": "oak desk", "quantity": 2}"#),
        ("labels", "team=web"),
    ];
    let a = http(
        addr,
        "/console/c/shop/orders/new",
        Some(&writer),
        Some(good),
    )
    .await;
    assert_eq!(
        (a.status, a.header("location")),
        (303, Some("/console/c/shop/orders/r/o-2"))
    );
    let got = c
        .records
        .get(proto::GetRequest {
            namespace: "shop".into(),
            collection: "orders".into(),
            id: "o-2".into(),
            include_json: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.labels.get("team").map(String::as_str), Some("web"));
    // A stale version is refused, and says so.
    let stale: &[(&str, &str)] = &[
        ("json", r#"{"title": "oak desk", "quantity": 3}"#),
        ("labels", ""),
        ("version", "7"),
    ];
    let a = http(
        addr,
        "/console/c/shop/orders/r/o-2",
        Some(&writer),
        Some(stale),
    )
    .await;
    assert_eq!(a.status, 400);
    assert!(a.body.contains("FailedPrecondition"), "{}", a.body);
    // Ordering and paging: 25 more records, 20 a page, highest first.
    for i in 0..25 {
        c.put(
            "shop",
            "orders",
            &format!("p-{i:02}"),
            &collector_tests::Order::new("paged", 100 + i),
        )
        .await
        .unwrap();
    }
    let a = http(
        addr,
        "/console/c/shop/orders?q=paged&order=quantity&desc=1",
        Some(&writer),
        None,
    )
    .await;
    assert_eq!(a.status, 200);
    let rows = |body: &str| -> Vec<String> {
        body.split("/console/c/shop/orders/r/")
            .skip(1)
            .map(|r| r.split('"').next().unwrap().to_string())
            .collect()
    };
    let first = rows(&a.body);
    assert_eq!(first.len(), 20, "a page of 20");
    assert_eq!(
        (first[0].as_str(), first[19].as_str()),
        ("p-24", "p-05"),
        "highest first"
    );
    assert!(a.body.contains("25 found"));
    let next = a
        .body
        .split("rel=\"next\" href=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("a next page link")
        .replace("&amp;", "&");
    let b = http(addr, &next, Some(&writer), None).await;
    assert_eq!(rows(&b.body), ["p-04", "p-03", "p-02", "p-01", "p-00"]);

    // The operator's metrics, as JSON for the charts.
    let a = http(addr, "/console/metrics.json", Some(TOKEN), None).await;
    assert_eq!(a.status, 200);
    let j: serde_json::Value = serde_json::from_str(&a.body).unwrap();
    assert!(
        j["requests"].as_u64().unwrap() > 0 && j["buckets"].as_array().unwrap().len() > 10,
        "{j}"
    );
}

/// Node, playwright-core and Chromium, when this machine has them (with
/// COLLECTOR_TEST_BROWSER set, as `.ci/run` sets it, a missing one fails).
fn browser() -> Option<(PathBuf, PathBuf)> {
    let required = std::env::var_os("COLLECTOR_TEST_BROWSER").is_some();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("browser");
    let chromium = std::env::var_os("CHROMIUM")
        .map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from);
    let node = std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let missing: Vec<&str> = [
        (!node).then_some("node"),
        (!dir.join("node_modules/playwright-core").exists())
            .then_some("tests/browser/node_modules (npm ci --prefix tests/browser)"),
        (!chromium.exists()).then_some("chromium"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if missing.is_empty() {
        return Some((chromium, dir.join("console.mjs")));
    }
    assert!(
        !required,
        "COLLECTOR_TEST_BROWSER is set but this machine lacks {missing:?}"
    );
    eprintln!("skipped: the browser test needs {missing:?} (.ci/run installs them)");
    None
}

#[tokio::test]
async fn the_console_in_a_browser_shows_data_handlers_and_peers_of_a_mesh() {
    let Some((chromium, script)) = browser() else {
        return;
    };
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = ProcessNode::start(BIN, da.path());
    let b = ProcessNode::start_with(BIN, db.path(), "127.0.0.1:0", &[a.addr.to_string()]);
    let (mut ca, mut cb) = (
        Clients::connect(a.addr).await,
        Clients::connect(b.addr).await,
    );
    crate::orders::setup(&mut ca).await;
    cb.register_guest_proto("shop", "orders").await;
    cb.repo
        .create_collection(proto::CreateCollectionRequest {
            namespace: "shop".into(),
            name: "archive".into(),
            message_type: "orders.Order".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    wait_for_collection(&ca, "archive").await;
    wait_for(&ca, "B alive", Duration::from_secs(20), |ps| {
        crate::mesh::all_up(ps, 2)
    })
    .await;

    // Calls for the metrics screen to chart (some fail: NotFound), at most
    // 50 a second for at most 3 minutes.
    let load = {
        let mut records = ca.records.clone();
        tokio::spawn(async move {
            for i in 0..9000u32 {
                let id = if i % 10 == 0 { "nope" } else { "tea" };
                let _ = records
                    .get(proto::GetRequest {
                        namespace: "shop".into(),
                        collection: "products".into(),
                        id: id.into(),
                        include_json: false,
                    })
                    .await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/console-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let child = std::process::Command::new("node")
        .arg(&script)
        .env("NODE_A", format!("http://{}", a.addr))
        .env("NODE_B", format!("http://{}", b.addr))
        .env("KEY", TOKEN)
        .env("SHOTS", &shots)
        .env("CHROMIUM", &chromium)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run node");
    let pid = child.id();
    let waited = tokio::time::timeout(
        Duration::from_secs(180),
        tokio::task::spawn_blocking(move || child.wait_with_output()),
    )
    .await;
    let Ok(out) = waited else {
        let _ = std::process::Command::new("kill")
            .arg(pid.to_string())
            .status();
        panic!("the browser test did not end within 3 minutes");
    };
    let out = out.unwrap().unwrap();
    load.abort();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "the console failed in the browser (screenshots in {}):\n{stdout}\n{stderr}",
        shots.display()
    );
    assert!(stdout.contains("every step passed"), "{stdout}");
    eprintln!("{stdout}screenshots: {}", shots.display());
}
