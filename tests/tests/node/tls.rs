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
