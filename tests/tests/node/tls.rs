//! TLS on the node's port: clients call over https and trust the node's
//! certificate; plain HTTP/2 gets nothing; a certificate rotates without a
//! restart; members call each other over TLS; the CLI takes --cacert.

use collector::config::TlsFiles;
use collector_tests::{Clients, ProcessNode, TestNode};
use std::path::Path;
use std::time::Duration;

/// A self-signed certificate for 127.0.0.1 and its key, as PEM.
fn self_signed() -> (String, String) {
    let c = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    (c.cert.pem(), c.signing_key.serialize_pem())
}

/// Writes a pair into `dir`; the files.
fn write(dir: &Path, (cert, key): &(String, String)) -> TlsFiles {
    let files = TlsFiles {
        cert: dir.join("node.crt"),
        key: dir.join("node.key"),
    };
    // The key first: a reload that catches the pair half-written keeps the
    // old one and tries again.
    std::fs::write(&files.key, key).unwrap();
    std::fs::write(&files.cert, cert).unwrap();
    files
}

#[tokio::test]
async fn clients_call_over_tls_and_a_new_certificate_is_served_without_a_restart() {
    let certs = tempfile::tempdir().unwrap();
    let first = self_signed();
    let files = write(certs.path(), &first);
    let mut n = TestNode::start_with(|c| c.tls = Some(files.clone())).await;
    let addr = n.handle.as_ref().unwrap().addr;
    // Over TLS (the harness's clients trust the certificate): the API works.
    n.clients.register_shop("shop").await;
    n.clients.create_orders("shop", "orders", &[]).await;
    assert_eq!(n.clients.count("shop", "orders").await, 0);
    // Plain HTTP/2 to a TLS port gets no answer.
    let mut plain = Clients::connect(addr).await;
    let e = tokio::time::timeout(Duration::from_secs(10), plain.try_count("shop", "orders"))
        .await
        .expect("a plain call fails at once")
        .unwrap_err();
    // (How the client names it: the connection broke.)
    assert!(
        matches!(e.code(), tonic::Code::Unavailable | tonic::Code::Unknown),
        "{e:?}"
    );
    // A client that trusts only another certificate is refused …
    let second = self_signed();
    assert!(
        collector_tests::channel_tls(addr, collector_tests::TOKEN, second.0.as_bytes())
            .await
            .is_err()
    );
    // … until the node serves it: new files, no restart.
    write(certs.path(), &second);
    let t = std::time::Instant::now();
    let ch = loop {
        if let Ok(ch) =
            collector_tests::channel_tls(addr, collector_tests::TOKEN, second.0.as_bytes()).await
        {
            break ch;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the new certificate is never served"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut c = Clients::over(ch);
    assert_eq!(c.count("shop", "orders").await, 0);
    // A broken pair leaves the served one in place.
    std::fs::write(&files.cert, "not a certificate").unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        collector_tests::channel_tls(addr, collector_tests::TOKEN, second.0.as_bytes())
            .await
            .is_ok()
    );
    // A node given files it cannot load does not start.
    let e = collector::Node::start(collector::Config {
        data_dir: certs.path().join("other"),
        listen: "127.0.0.1:0".parse().unwrap(),
        tls: Some(files.clone()),
        ..Default::default()
    })
    .await
    .err()
    .expect("a bad certificate stops the start");
    assert!(e.message.contains("node.crt"), "{e:?}");
    // Fixed, the node restarts on the pair as it is now.
    write(certs.path(), &second);
    n.restart().await;
    assert_eq!(n.clients.count("shop", "orders").await, 0);
}

#[tokio::test]
async fn members_call_each_other_over_tls() {
    let certs = tempfile::tempdir().unwrap();
    let files = write(certs.path(), &self_signed());
    let a = TestNode::start_with(|c| c.tls = Some(files.clone())).await;
    let a_addr = a.handle.as_ref().unwrap().addr;
    let b = TestNode::start_with(|c| {
        c.tls = Some(files.clone());
        c.join = vec![a_addr.to_string()];
    })
    .await;
    for n in [&a, &b] {
        crate::mesh::wait_for(&n.clients, "both alive", Duration::from_secs(10), |ps| {
            crate::mesh::all_up(ps, 2)
        })
        .await;
    }
    let mut ca = a.clients.clone();
    ca.register_shop("shop").await;
    ca.create_orders("shop", "orders", &[]).await;
    ca.put(
        "shop",
        "orders",
        "o1",
        &collector_tests::Order::new("lamp", 1),
    )
    .await
    .unwrap();
    let ids = ["o1".to_string()];
    let mut cb = b.clients.clone();
    crate::mesh::wait_for_collection(&cb, "orders").await;
    // B forwards to A, its owner, over TLS.
    let r = cb
        .records
        .get(collector::proto::GetRequest {
            namespace: "shop".into(),
            collection: "orders".into(),
            id: ids[0].clone(),
            include_json: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.id, ids[0]);
    assert_eq!(cb.count("shop", "orders").await, 1);
}

#[test]
fn the_cli_calls_a_tls_node_with_cacert() {
    const BIN: &str = env!("CARGO_BIN_EXE_collector-node");
    let dir = tempfile::tempdir().unwrap();
    let files = write(dir.path(), &self_signed());
    let node = ProcessNode::start_with_flags(
        BIN,
        &dir.path().join("data"),
        "127.0.0.1:0",
        &[],
        &[
            "--tls-cert",
            files.cert.to_str().unwrap(),
            "--tls-key",
            files.key.to_str().unwrap(),
        ],
    );
    let run = |extra: &[&str]| {
        std::process::Command::new(BIN)
            .env("COLLECTOR_TOKEN", collector_tests::TOKEN)
            .args(["--node", &node.addr.to_string()])
            .args(extra)
            .args(["keys", "whoami"])
            .output()
            .unwrap()
    };
    let out = run(&["--cacert", files.cert.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"operator\": true"));
    let out = run(&[]);
    assert!(
        !out.status.success(),
        "plain HTTP/2 to a TLS port must fail"
    );
}

/// Clients over TLS, trusting `server` and showing `client` (cert, key).
async fn clients_with_identity(
    addr: std::net::SocketAddr,
    server: &str,
    client: &(String, String),
) -> Result<Clients, tonic::transport::Error> {
    let tls = collector::api::tls::client_config_with_identity(
        server.as_bytes(),
        client.0.as_bytes(),
        client.1.as_bytes(),
    );
    let ch = tonic::transport::Channel::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)?
        .connect()
        .await?;
    Ok(Clients::over(collector_tests::keyed(
        ch,
        collector_tests::TOKEN,
    )))
}

/// With --tls-client-ca only clients showing a certificate it signed get
/// in; members show their own certificate, so a mesh still works.
#[tokio::test]
async fn with_a_client_ca_only_clients_with_a_signed_certificate_get_in() {
    let certs = tempfile::tempdir().unwrap();
    let server = self_signed();
    let files = write(certs.path(), &server);
    let client = self_signed();
    let stranger = self_signed();
    let roots = certs.path().join("clients.pem");
    // The clients' roots: the client's certificate, and the members' own.
    std::fs::write(&roots, format!("{}{}", client.0, server.0)).unwrap();
    let start = |join: Vec<String>| {
        let (files, roots) = (files.clone(), roots.clone());
        TestNode::start_with(move |c| {
            c.tls = Some(files);
            c.tls_client_ca = Some(roots);
            c.join = join;
        })
    };
    let a = start(vec![]).await;
    let a_addr = a.handle.as_ref().unwrap().addr;
    let mut ca = clients_with_identity(a_addr, &server.0, &client)
        .await
        .unwrap();
    ca.register_shop("shop").await;
    ca.create_orders("shop", "orders", &[]).await;
    assert_eq!(ca.count("shop", "orders").await, 0);
    // Without a certificate, or with one the roots did not sign: no call.
    for who in [None, Some(&stranger)] {
        let c = match who {
            None => Ok(Clients::over(
                collector_tests::channel_tls(a_addr, collector_tests::TOKEN, server.0.as_bytes())
                    .await
                    .unwrap(),
            )),
            Some(id) => clients_with_identity(a_addr, &server.0, id).await,
        };
        if let Ok(mut c) = c {
            let r = c.try_count("shop", "orders").await;
            assert!(r.is_err(), "a client without a signed certificate got in");
        }
    }
    // A member joins, and forwards to A with its own certificate.
    let b = start(vec![a_addr.to_string()]).await;
    let b_addr = b.handle.as_ref().unwrap().addr;
    let mut cb = clients_with_identity(b_addr, &server.0, &client)
        .await
        .unwrap();
    crate::mesh::wait_for(&cb, "both alive", Duration::from_secs(10), |ps| {
        crate::mesh::all_up(ps, 2)
    })
    .await;
    crate::mesh::wait_for_collection(&cb, "orders").await;
    assert_eq!(cb.count("shop", "orders").await, 0);
}

/// The grpcurl to run: `COLLECTOR_TEST_GRPCURL` (`.ci/run` installs one and
/// sets it, which makes its absence a failure), else `grpcurl` on PATH.
fn grpcurl() -> Option<std::path::PathBuf> {
    if let Some(p) = std::env::var_os("COLLECTOR_TEST_GRPCURL") {
        let p = std::path::PathBuf::from(p);
        assert!(
            p.is_file(),
            "COLLECTOR_TEST_GRPCURL={} is not a file",
            p.display()
        );
        return Some(p);
    }
    let on_path = std::process::Command::new("grpcurl")
        .arg("-version")
        .output();
    on_path.is_ok().then(|| "grpcurl".into())
}

/// grpcurl, the tool users reach for first, against a TLS node: with
/// -cacert and the key, reflection lists the built-in and the registered
/// services and both are called (the registered one natively, its JSON
/// encoded from the reflected types); without the key it is refused as
/// Unauthenticated, without trusting the certificate it does not connect,
/// and with a client CA it gets in only with -cert/-key.
#[tokio::test]
async fn grpcurl_calls_a_tls_node_with_cacert_and_a_key() {
    let Some(grpcurl) = grpcurl() else {
        eprintln!("skipped: no grpcurl (set COLLECTOR_TEST_GRPCURL to require it)");
        return;
    };
    let certs = tempfile::tempdir().unwrap();
    let server = self_signed();
    let files = write(certs.path(), &server);
    let client = self_signed();
    let client_crt = certs.path().join("me.crt");
    let client_key = certs.path().join("me.key");
    std::fs::write(&client_crt, &client.0).unwrap();
    std::fs::write(&client_key, &client.1).unwrap();
    let roots = certs.path().join("clients.pem");
    std::fs::write(&roots, format!("{}{}", client.0, server.0)).unwrap();
    for with_client_ca in [false, true] {
        let (f, r) = (files.clone(), roots.clone());
        let n = TestNode::start_with(move |c| {
            c.tls = Some(f);
            c.tls_client_ca = with_client_ca.then_some(r);
        })
        .await;
        let addr = n.handle.as_ref().unwrap().addr.to_string();
        let mut c = if with_client_ca {
            clients_with_identity(n.handle.as_ref().unwrap().addr, &server.0, &client)
                .await
                .unwrap()
        } else {
            Clients::connect_tls(n.handle.as_ref().unwrap().addr, server.0.as_bytes()).await
        };
        c.registry
            .register_proto(collector::proto::RegisterProtoRequest {
                namespace: "shop".into(),
                sources: vec![collector::proto::ProtoSource {
                    name: "t.proto".into(),
                    content: "syntax = \"proto3\"; package t; message Msg { string text = 1; int64 n = 2; } service Echo { rpc Say(Msg) returns (Msg); rpc Shout(Msg) returns (Msg); }".into(),
                }],
                ..Default::default()
            })
            .await
            .unwrap();
        c.registry
            .register_service(collector::proto::RegisterServiceRequest {
                namespace: "shop".into(),
                service: "t.Echo".into(),
                component: collector_tests::guest("echo"),
                ..Default::default()
            })
            .await
            .unwrap();
        let cacert_path = files.cert.to_str().unwrap().to_string();
        let auth = format!("authorization: Bearer {}", collector_tests::TOKEN);
        let identity: Vec<String> = if with_client_ca {
            vec![
                "-cert".into(),
                client_crt.to_str().unwrap().into(),
                "-key".into(),
                client_key.to_str().unwrap().into(),
            ]
        } else {
            vec![]
        };
        // grpcurl [flags] address [list | method]; answers (ok, stdout, stderr).
        let run = |flags: Vec<String>, after: Vec<&str>| {
            let (g, addr) = (grpcurl.clone(), addr.clone());
            let after: Vec<String> = after.into_iter().map(String::from).collect();
            tokio::task::spawn_blocking(move || {
                let out = std::process::Command::new(g)
                    .args(["-max-time", "20"])
                    .args(&flags)
                    .arg(addr)
                    .args(&after)
                    .output()
                    .unwrap();
                (
                    out.status.success(),
                    String::from_utf8_lossy(&out.stdout).into_owned(),
                    String::from_utf8_lossy(&out.stderr).into_owned(),
                )
            })
        };
        let flags = |cacert: bool, key: bool, more: &[&str]| {
            let mut a: Vec<String> = Vec::new();
            if cacert {
                a.extend(["-cacert".to_string(), cacert_path.clone()]);
            }
            a.extend(identity.iter().cloned());
            if key {
                a.extend(["-H".to_string(), auth.clone()]);
            }
            a.extend(["-H".to_string(), "x-collector-namespace: shop".to_string()]);
            a.extend(more.iter().map(|s| s.to_string()));
            a
        };
        // Reflection lists the built-in services and the namespace's own.
        let (ok, out, err) = run(flags(true, true, &[]), vec!["list"]).await.unwrap();
        assert!(ok, "grpcurl list: {err}");
        for s in [
            "collector.v1.CollectionService",
            "collector.v1.CollectorRegistry",
            "t.Echo",
        ] {
            assert!(out.lines().any(|l| l == s), "{s} not listed: {out}");
        }
        let (ok, out, err) = run(
            flags(true, true, &["-d", "{}"]),
            vec!["collector.v1.CollectorRegistry/WhoAmI"],
        )
        .await
        .unwrap();
        assert!(
            ok && out.contains("\"operator\": true"),
            "WhoAmI: {out} {err}"
        );
        // The registered method, called natively with JSON.
        let (ok, out, err) = run(
            flags(true, true, &["-d", r#"{"text": "over tls", "n": 7}"#]),
            vec!["t.Echo/Say"],
        )
        .await
        .unwrap();
        assert!(ok, "t.Echo/Say: {err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["text"], "over tls", "{out}");
        // No key: Unauthenticated, for reflection and for a call alike.
        for after in [vec!["list"], vec!["collector.v1.CollectorRegistry/WhoAmI"]] {
            let (ok, _, err) = run(flags(true, false, &["-d", "{}"]), after).await.unwrap();
            assert!(!ok && err.contains("Unauthenticated"), "no key: {err}");
        }
        // Not trusting the node's certificate: no connection at all.
        let (ok, _, err) = run(flags(false, true, &[]), vec!["list"]).await.unwrap();
        assert!(
            !ok && err.contains("certificate"),
            "untrusted certificate: {err}"
        );
        // With a client CA, no client certificate: no call.
        if with_client_ca {
            let no_identity = vec![
                "-cacert".to_string(),
                cacert_path.clone(),
                "-H".to_string(),
                auth.clone(),
            ];
            let (ok, _, err) = run(no_identity, vec!["list"]).await.unwrap();
            assert!(!ok, "a client without a certificate got in: {err}");
        }
    }
}
