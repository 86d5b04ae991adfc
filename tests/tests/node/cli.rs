use collector_tests::{ProcessNode, SHOP_PROTO};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_collector-node");

/// Runs a client command against `node`; returns (exit code, stdout, stderr).
fn run(node: &ProcessNode, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .env("COLLECTOR_TOKEN", collector_tests::TOKEN)
        .arg("--node")
        .arg(node.addr.to_string())
        .args(args)
        .output()
        .expect("run client");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn ok(node: &ProcessNode, args: &[&str]) -> serde_json::Value {
    let (code, out, err) = run(node, args);
    assert_eq!(code, 0, "{args:?} failed: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?} printed no JSON ({e}): {out}"))
}

#[test]
fn the_readme_tour_works_with_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let node = ProcessNode::start(BIN, &dir.path().join("data"));
    let proto = dir.path().join("shop.proto");
    std::fs::write(&proto, SHOP_PROTO).unwrap();
    let r = ok(
        &node,
        &["-n", "shop", "protos", "register", proto.to_str().unwrap()],
    );
    assert_eq!(r["registered_files"][0], "shop.proto");
    ok(
        &node,
        &[
            "-n",
            "shop",
            "collections",
            "create",
            "orders",
            "--type",
            "shop.Order",
            "--index",
            "customer.address.city",
        ],
    );
    let put = ok(
        &node,
        &[
            "-n",
            "shop",
            "put",
            "orders",
            r#"{"title": "red desk lamp", "quantity": 2, "price": 19.5, "customer": {"address": {"city": "Oslo"}}}"#,
        ],
    );
    assert_eq!(put["version"], 1);
    assert_eq!(put["data"]["title"], "red desk lamp");
    ok(
        &node,
        &[
            "-n",
            "shop",
            "put",
            "orders",
            r#"{"title": "oak desk", "quantity": 1, "price": 250}"#,
            "--id",
            "order-2",
            "--label",
            "team=blue",
        ],
    );

    let s = ok(&node, &["-n", "shop", "search", "orders", "desk"]);
    assert_eq!(s["total_count"], 2);
    let s = ok(
        &node,
        &[
            "-n",
            "shop",
            "search",
            "orders",
            "-f",
            "customer.address.city = Oslo",
            "-f",
            "price < 100",
        ],
    );
    assert_eq!(s["hits"][0]["data"]["title"], "red desk lamp");
    assert_eq!(s["total_count"], 1);
    let s = ok(
        &node,
        &[
            "-n",
            "shop",
            "search",
            "orders",
            "--label",
            "team=blue",
            "--order",
            "price:desc",
        ],
    );
    assert_eq!(s["hits"][0]["id"], "order-2");
    let s = ok(
        &node,
        &[
            "-n",
            "shop",
            "search",
            "orders",
            "-f",
            "title in \"oak desk\",nothing",
        ],
    );
    assert_eq!(s["total_count"], 1);
    let c = ok(&node, &["-n", "shop", "collections", "get", "orders"]);
    assert_eq!(c["record_count"], 2);
    let u = ok(
        &node,
        &[
            "-n",
            "shop",
            "update",
            "orders",
            "order-2",
            r#"{"title": "walnut desk"}"#,
            "--expected-version",
            "1",
        ],
    );
    assert_eq!(u["version"], 2);

    // Failures exit with 64 + the gRPC code and say why on stderr.
    let (code, _, err) = run(&node, &["-n", "shop", "get", "orders", "nope"]);
    assert_eq!(code, 64 + 5, "{err}");
    assert!(err.contains("NotFound"), "{err}");
    let (code, _, err) = run(
        &node,
        &["-n", "shop", "search", "orders", "-f", "colour = red"],
    );
    assert_eq!(code, 64 + 3);
    assert!(err.contains("colour"), "{err}");
    let (code, _, _) = run(
        &node,
        &[
            "-n",
            "shop",
            "update",
            "orders",
            "order-2",
            "{}",
            "--expected-version",
            "1",
        ],
    );
    assert_eq!(code, 64 + 9, "stale version is FailedPrecondition");
}

#[test]
fn backups_are_taken_verified_restored_and_deleted_and_collections_cloned_with_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let node = ProcessNode::start(BIN, &dir.path().join("data"));
    let proto = dir.path().join("shop.proto");
    std::fs::write(&proto, SHOP_PROTO).unwrap();
    ok(
        &node,
        &["-n", "shop", "protos", "register", proto.to_str().unwrap()],
    );
    ok(
        &node,
        &[
            "-n",
            "shop",
            "collections",
            "create",
            "orders",
            "--type",
            "shop.Order",
        ],
    );
    ok(
        &node,
        &[
            "-n",
            "shop",
            "put",
            "orders",
            r#"{"title": "lamp"}"#,
            "--id",
            "o1",
        ],
    );
    let b = ok(&node, &["-n", "shop", "backup", "create", "orders"]);
    let id = b["backup_id"].as_str().unwrap().to_string();
    assert_eq!(b["record_count"], 1);
    let v = ok(&node, &["-n", "shop", "backup", "verify", &id]);
    assert_eq!(v["valid"], true, "{v}");
    assert_eq!(v["problems"], serde_json::json!([]));
    assert_eq!(v["backup"]["backup_id"], id.as_str());
    let r = ok(
        &node,
        &[
            "-n",
            "shop",
            "backup",
            "restore",
            &id,
            "--to",
            "orders_then",
        ],
    );
    assert_eq!(r["name"], "orders_then", "{r}");
    assert_eq!(r["record_count"], 1, "{r}");
    let got = ok(&node, &["-n", "shop", "get", "orders_then", "o1"]);
    assert_eq!(got["data"]["title"], "lamp", "{got}");
    // Over the original only with --overwrite: ALREADY_EXISTS (6) without.
    let (code, _, err) = run(&node, &["-n", "shop", "backup", "restore", &id]);
    assert_eq!(code, 64 + 6, "{err}");
    let copy = ok(
        &node,
        &["-n", "shop", "clone", "orders", "--to", "orders_copy"],
    );
    assert_eq!(
        (copy["name"].as_str(), copy["record_count"].as_i64()),
        (Some("orders_copy"), Some(1)),
        "{copy}"
    );
    let got = ok(&node, &["-n", "shop", "get", "orders_copy", "o1"]);
    assert_eq!(got["data"]["title"], "lamp", "{got}");
    // Only members of the mesh are fetched from: NOT_FOUND (5).
    let (code, _, err) = run(
        &node,
        &["-n", "shop", "fetch", "orders", "--from", "127.0.0.1:1"],
    );
    assert_eq!(code, 64 + 5, "{err}");
    assert!(err.contains("not a member"), "{err}");
    let gone = ok(&node, &["-n", "shop", "backup", "delete", &id]);
    assert!(gone["freed_bytes"].as_i64().unwrap() > 0, "{gone}");
    let (code, _, _) = run(&node, &["-n", "shop", "backup", "verify", &id]);
    assert_eq!(code, 64 + 5, "a deleted backup is NOT_FOUND");
}

/// Runs a client command with `stdin` as its standard input.
fn run_with_stdin(node: &ProcessNode, args: &[&str], stdin: &[u8]) -> (i32, Vec<u8>, String) {
    use std::io::Write;
    let mut child = Command::new(BIN)
        .env("COLLECTOR_TOKEN", collector_tests::TOKEN)
        .arg("--node")
        .arg(node.addr.to_string())
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run client");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn files_are_put_read_listed_and_removed_with_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let node = ProcessNode::start(BIN, &dir.path().join("data"));
    let proto = dir.path().join("shop.proto");
    std::fs::write(&proto, SHOP_PROTO).unwrap();
    fn ns<'a>(rest: &[&'a str]) -> Vec<&'a str> {
        [&["-n", "shop"][..], rest].concat()
    }
    ok(&node, &ns(&["protos", "register", proto.to_str().unwrap()]));
    ok(
        &node,
        &ns(&["collections", "create", "orders", "--type", "shop.Order"]),
    );
    ok(
        &node,
        &ns(&["put", "orders", r#"{"title": "lamp"}"#, "--id", "o1"]),
    );
    // From a local file (3 MiB: several chunks), with a content type.
    let big: Vec<u8> = (0..3 << 20).map(|i: u32| (i * 7 % 251) as u8).collect();
    let src = dir.path().join("manual.pdf");
    std::fs::write(&src, &big).unwrap();
    let src = src.to_str().unwrap().to_string();
    let put = ok(
        &node,
        &[
            "-n",
            "shop",
            "files",
            "put",
            "orders",
            "o1",
            "docs/manual.pdf",
            &src,
            "--content-type",
            "application/pdf",
        ],
    );
    assert_eq!(put["size_bytes"], big.len(), "{put}");
    assert_eq!(put["blake3"], blake3::hash(&big).to_hex().as_str(), "{put}");
    assert_eq!(put["version"], 1, "{put}");
    assert_eq!(put["content_type"], "application/pdf", "{put}");
    // From stdin.
    let (code, out, err) = run_with_stdin(
        &node,
        &ns(&["files", "put", "orders", "o1", "notes.txt"]),
        b"hello, files",
    );
    assert_eq!(code, 0, "{err}");
    let notes: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(notes["size_bytes"], 12, "{notes}");
    // To a local file, replaced whole; and to stdout, whole or a range.
    let dest = dir.path().join("copy.pdf");
    let got = ok(
        &node,
        &ns(&[
            "files",
            "get",
            "orders",
            "o1",
            "docs/manual.pdf",
            dest.to_str().unwrap(),
        ]),
    );
    assert_eq!(got["blake3"], put["blake3"]);
    assert!(std::fs::read(&dest).unwrap() == big, "the copy differs");
    let (code, out, err) = run_with_stdin(
        &node,
        &ns(&["files", "get", "orders", "o1", "notes.txt"]),
        b"",
    );
    assert_eq!((code, out.as_slice()), (0, &b"hello, files"[..]), "{err}");
    let (code, out, err) = run_with_stdin(
        &node,
        &ns(&[
            "files",
            "get",
            "orders",
            "o1",
            "notes.txt",
            "--offset",
            "7",
            "--length",
            "5",
        ]),
        b"",
    );
    assert_eq!((code, out.as_slice()), (0, &b"files"[..]), "{err}");
    // Listings, stat, and the collection's totals.
    let all = ok(&node, &ns(&["files", "ls", "orders", "o1"]));
    let paths: Vec<_> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["docs/manual.pdf", "notes.txt"]);
    let docs = ok(
        &node,
        &ns(&["files", "ls", "orders", "o1", "--prefix", "docs/"]),
    );
    assert_eq!(docs.as_array().unwrap().len(), 1, "{docs}");
    let st = ok(&node, &ns(&["files", "stat", "orders", "o1", "notes.txt"]));
    assert_eq!(
        st["blake3"],
        blake3::hash(b"hello, files").to_hex().as_str()
    );
    let info = ok(&node, &ns(&["collections", "get", "orders"]));
    assert_eq!(info["file_count"], 2, "{info}");
    assert_eq!(info["file_bytes"], big.len() + 12, "{info}");
    // Preconditions and failures exit with 64 + the status code.
    let (code, _, err) = run_with_stdin(
        &node,
        &ns(&["files", "put", "orders", "o1", "notes.txt", "--if-absent"]),
        b"again",
    );
    assert_eq!(code, 64 + 6, "ALREADY_EXISTS: {err}");
    let (code, _, err) = run(
        &node,
        &ns(&["files", "put", "orders", "o1", "x/../y", &src]),
    );
    assert_eq!(code, 64 + 3, "INVALID_ARGUMENT: {err}");
    let (code, _, err) = run(
        &node,
        &ns(&["files", "put", "orders", "o1", "y", "/no/such/file"]),
    );
    assert_eq!(code, 64 + 3, "a missing local file: {err}");
    let gone = ok(&node, &ns(&["files", "rm", "orders", "o1", "notes.txt"]));
    assert_eq!(gone["path"], "notes.txt");
    let (code, _, err) = run(&node, &ns(&["files", "stat", "orders", "o1", "notes.txt"]));
    assert_eq!(code, 64 + 5, "NOT_FOUND: {err}");
    // A missing file leaves no partial copy behind.
    let (code, _, _) = run(
        &node,
        &ns(&[
            "files",
            "get",
            "orders",
            "o1",
            "notes.txt",
            dest.to_str().unwrap(),
        ]),
    );
    assert_eq!(code, 64 + 5);
    assert!(std::fs::read(&dest).unwrap() == big, "the old copy stays");
    // Backups carry them with --include-files, restores bring them back.
    let b = ok(
        &node,
        &ns(&["backup", "create", "orders", "--include-files"]),
    );
    assert_eq!(
        (b["includes_files"].as_bool(), b["file_count"].as_i64()),
        (Some(true), Some(1)),
        "{b}"
    );
    let id = b["backup_id"].as_str().unwrap();
    let r = ok(
        &node,
        &ns(&[
            "backup",
            "restore",
            id,
            "--to",
            "orders_f",
            "--include-files",
        ]),
    );
    assert_eq!(r["file_bytes"], big.len(), "{r}");
    let c = ok(
        &node,
        &ns(&["clone", "orders", "--to", "orders_c", "--include-files"]),
    );
    assert_eq!(c["file_count"], 1, "{c}");
}

#[test]
fn client_commands_report_an_unreachable_node() {
    let out = Command::new(BIN)
        .args(["--node", "127.0.0.1:1", "protos", "list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64 + 14), "Unavailable");
    assert!(String::from_utf8_lossy(&out.stderr).contains("collector serve"));
}

#[test]
fn register_and_call_a_wasm_handler_with_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let node = ProcessNode::start(BIN, &dir.path().join("data"));
    let proto = dir.path().join("counter.proto");
    std::fs::write(
        &proto,
        "syntax = \"proto3\"; package t; message Msg { string text = 1; int64 n = 2; }\n\
         service Counter { rpc Incr(Msg) returns (Msg); rpc Peek(Msg) returns (Msg); rpc Sneak(Msg) returns (Msg); }",
    )
    .unwrap();
    let wasm = dir.path().join("counter.wasm");
    std::fs::write(&wasm, collector_tests::guest("counter")).unwrap();
    let info = ok(
        &node,
        &[
            "-n",
            "shop",
            "register",
            "--proto",
            proto.to_str().unwrap(),
            "--service",
            "t.Counter",
            "--wasm",
            wasm.to_str().unwrap(),
            "--grant",
            "counters",
        ],
    );
    assert_eq!(
        info["methods"],
        serde_json::json!(["Incr", "Peek", "Sneak"])
    );
    ok(
        &node,
        &[
            "-n",
            "shop",
            "collections",
            "create",
            "counters",
            "--type",
            "t.Msg",
        ],
    );
    let out = ok(
        &node,
        &[
            "-n",
            "shop",
            "call",
            "t.Counter/Incr",
            r#"{"text": "hits"}"#,
        ],
    );
    assert_eq!(out["text"], "hits");
    let out = ok(
        &node,
        &[
            "-n",
            "shop",
            "call",
            "t.Counter/Incr",
            r#"{"text": "hits"}"#,
        ],
    );
    assert_eq!(out["n"], "2", "int64 prints as a JSON string (proto3 JSON)");
    let (code, _, err) = run(
        &node,
        &["-n", "shop", "call", "t.Counter/Sneak", r#"{"text": "x"}"#],
    );
    assert_eq!(code, 64 + 7, "PermissionDenied: {err}");
    let (code, _, err) = run(
        &node,
        &["-n", "shop", "call", "t.Counter/Incr", r#"{"nope": 1}"#],
    );
    assert_eq!(code, 64 + 3, "InvalidArgument: {err}");
    let (code, _, _) = run(&node, &["-n", "shop", "call", "t.Counter/Missing", "{}"]);
    assert_eq!(code, 64 + 12, "Unimplemented");
}

/// `collector keys …`: a key made with the CLI works with --token, lists
/// without its secret, and stops working once revoked.
#[test]
fn keys_are_created_used_listed_and_revoked_with_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let node = ProcessNode::start(BIN, &dir.path().join("data"));
    let made = ok(
        &node,
        &[
            "keys",
            "create",
            "--grant",
            "shop:read",
            "--description",
            "dashboard",
            "--ttl",
            "1h",
        ],
    );
    let token = made["token"].as_str().unwrap().to_string();
    let id = made["key"]["id"].as_str().unwrap().to_string();
    assert!(
        made["key"]["expires_at"].as_str().unwrap().len() > 10,
        "{made}"
    );
    let as_key = |args: &[&str]| {
        let mut all = vec!["--token", token.as_str()];
        all.extend_from_slice(args);
        run(&node, &all)
    };
    let (code, out, err) = as_key(&["keys", "whoami"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("shop:read") && out.contains(&id), "{out}");
    // A reader cannot create a collection: PERMISSION_DENIED is 64 + 7.
    let (code, _, err) = as_key(&["-n", "shop", "collections", "create", "x", "--type", "t.M"]);
    assert_eq!(code, 64 + 7, "{err}");
    let listed = ok(&node, &["-n", "shop", "keys", "ls"]);
    assert!(listed.to_string().contains(&id), "{listed}");
    assert!(!listed.to_string().contains(&token[20..]), "{listed}");
    // Quotas: the operator overrides shop's, its reader reads them and
    // may not change them (PERMISSION_DENIED).
    let set = ok(
        &node,
        &[
            "-n",
            "shop",
            "quotas",
            "set",
            "--records-per-second",
            "50",
            "--storage-bytes",
            "1000000",
        ],
    );
    assert_eq!(set["limits"]["records_per_second"], 50, "{set}");
    let (code, out, err) = as_key(&["-n", "shop", "quotas", "get"]);
    assert_eq!(code, 0, "{err}");
    let got: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(got["limits"]["storage_bytes"], 1_000_000, "{got}");
    assert_eq!(got["override"]["records_per_second"], 50, "{got}");
    let (code, _, err) = as_key(&["-n", "shop", "quotas", "set", "--calls", "1"]);
    assert_eq!(code, 64 + 7, "{err}");
    let all = ok(&node, &["quotas", "ls"]);
    assert_eq!(all.as_array().map(Vec::len), Some(1), "{all}");
    ok(&node, &["keys", "revoke", &id]);
    let (code, _, err) = as_key(&["keys", "whoami"]);
    assert_eq!(code, 64 + 16, "UNAUTHENTICATED: {err}");
    assert!(err.contains("revoked"), "{err}");
    // Without a key at all (no --token, no key file) the node says what to do.
    let out = Command::new(BIN)
        .env_remove("COLLECTOR_TOKEN")
        .env("COLLECTOR_TOKEN_FILE", dir.path().join("none"))
        .args(["--node", &node.addr.to_string(), "keys", "whoami"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64 + 16));
    assert!(String::from_utf8_lossy(&out.stderr).contains("authorization: Bearer"));
}
