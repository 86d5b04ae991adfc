//! Phase (n): many collections on one node process. Creates
//! BENCH_COLLECTIONS (default 100,000) collections in one namespace and
//! BENCH_NAMESPACES (default 1,000) namespaces of 10, then measures the
//! idle process (RSS, threads, open files), a restart (spawn to serving),
//! CreateCollection p50/p99 against its floor (a file created and fsynced,
//! with its directory), and the first Get of a closed collection against a
//! Get of an open one and the empty call.

use super::{Channel, SHOP, bench_key_file, connect};
use collector::proto::{
    self, collection_repo_client::CollectionRepoClient,
    collection_service_client::CollectionServiceClient,
    collector_registry_client::CollectorRegistryClient,
};
use std::io::BufRead;
use std::time::{Duration, Instant};

/// A node process, killed on drop.
pub(crate) struct Proc {
    child: std::process::Child,
    pub(crate) addr: std::net::SocketAddr,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    /// Spawns `collector serve` on `data` and waits until it prints its
    /// address; also how long that took.
    fn start(data: &std::path::Path) -> (Proc, Duration) {
        Self::start_with(data, &["--collection-idle-close", "3s"])
    }

    /// [`Proc::start`] with these `serve` flags.
    pub(crate) fn start_with(data: &std::path::Path, flags: &[&str]) -> (Proc, Duration) {
        let t = Instant::now();
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_collector"))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(flags)
            .arg("--data-dir")
            .arg(data)
            .arg("--operator-key-file")
            .arg(bench_key_file())
            .arg("--max-collections-per-namespace")
            .arg("1000000")
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .stderr(
                std::fs::File::create(std::env::temp_dir().join("collector-bench-many-node.log"))
                    .map(std::process::Stdio::from)
                    .unwrap_or_else(|_| std::process::Stdio::null()),
            )
            .spawn()
            .expect("spawn the collector binary");
        let out = std::io::BufReader::new(child.stdout.take().unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        // Read to the end: the node keeps printing after its address.
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                if let Some(rest) = line.split(" listening on ").nth(1) {
                    let _ = tx.send(rest.trim().parse::<std::net::SocketAddr>().unwrap());
                }
            }
        });
        let addr = rx.recv_timeout(Duration::from_secs(120)).ok();
        let took = t.elapsed();
        (
            Proc {
                child,
                addr: addr.expect("the node prints its address"),
            },
            took,
        )
    }

    /// (RSS MiB, threads, open files) of the process.
    fn usage(&self) -> (f64, u64, u64) {
        let p = collector::telemetry::process_of(&self.child.id().to_string());
        (p.rss_bytes as f64 / (1 << 20) as f64, p.threads, p.open_fds)
    }

    /// Stops it with SIGTERM and waits (a clean stop).
    pub(crate) fn stop(mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// p50 and p99 of `xs` in µs.
fn p50_p99(mut xs: Vec<f64>) -> (f64, f64) {
    xs.sort_by(f64::total_cmp);
    (pct(&xs, 0.5) * 1e6, pct(&xs, 0.99) * 1e6)
}

async fn register(ch: &Channel, ns: &str) {
    CollectorRegistryClient::new(ch.clone())
        .register_proto(proto::RegisterProtoRequest {
            namespace: ns.into(),
            sources: vec![proto::ProtoSource {
                name: "shop.proto".into(),
                content: SHOP.into(),
            }],
            ..Default::default()
        })
        .await
        .unwrap();
}

async fn create(repo: &mut CollectionRepoClient<Channel>, ns: &str, name: &str) {
    repo.create_collection(proto::CreateCollectionRequest {
        namespace: ns.into(),
        name: name.into(),
        message_type: "shop.Order".into(),
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("create {ns}/{name}: {e:?}"));
}

/// Creates `names` of `ns` with `conc` clients; the time of each create.
async fn create_all(ch: &Channel, ns: &str, names: Vec<String>, conc: usize) -> Vec<f64> {
    let names = std::sync::Arc::new(std::sync::Mutex::new(names));
    let mut tasks = Vec::new();
    for _ in 0..conc {
        let (names, ch, ns) = (names.clone(), ch.clone(), ns.to_string());
        tasks.push(tokio::spawn(async move {
            let mut repo = CollectionRepoClient::new(ch);
            let mut times = Vec::new();
            loop {
                let Some(name) = names.lock().unwrap().pop() else {
                    return times;
                };
                let t = Instant::now();
                create(&mut repo, &ns, &name).await;
                times.push(t.elapsed().as_secs_f64());
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

/// The floor of a create: a new file written, fsynced, and its directory
/// fsynced (what making a collection's file durably costs at least).
fn create_floor(dir: &std::path::Path, n: usize) -> Vec<f64> {
    use std::io::Write;
    let d = dir.join("create-floor");
    std::fs::create_dir_all(&d).unwrap();
    let mut times = Vec::new();
    for i in 0..n {
        let t = Instant::now();
        let mut f = std::fs::File::create(d.join(format!("f{i}"))).unwrap();
        f.write_all(&[0u8; 4096]).unwrap();
        f.sync_all().unwrap();
        std::fs::File::open(&d).unwrap().sync_all().unwrap();
        times.push(t.elapsed().as_secs_f64());
    }
    let _ = std::fs::remove_dir_all(&d);
    times
}

async fn get_once(svc: &mut CollectionServiceClient<Channel>, ns: &str, coll: &str) -> f64 {
    let t = Instant::now();
    svc.get(proto::GetRequest {
        namespace: ns.into(),
        collection: coll.into(),
        id: "r".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    t.elapsed().as_secs_f64()
}

pub async fn many_phase(dir: &std::path::Path, empty_p50_us: f64) {
    let n: usize = std::env::var("BENCH_COLLECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let namespaces: usize = std::env::var("BENCH_NAMESPACES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000);
    let data = dir.join("many");
    let (node, _) = Proc::start(&data);
    let (rss0, threads0, fds0) = node.usage();
    println!("(n) empty node: {rss0:.0} MiB RSS, {threads0} threads, {fds0} open files");
    let ch = connect(node.addr).await;
    register(&ch, "many").await;

    // CreateCollection one at a time (c=1) against its floor.
    let floor = {
        let d = dir.to_path_buf();
        tokio::task::spawn_blocking(move || create_floor(&d, 200))
            .await
            .unwrap()
    };
    let (f50, f99) = p50_p99(floor);
    let first: Vec<String> = (0..1000.min(n)).map(|i| format!("c{i:06}")).collect();
    let (c50, c99) = p50_p99(create_all(&ch, "many", first, 1).await);
    println!(
        "(n) CreateCollection c=1  p50 {c50:>7.0} µs  p99 {c99:>7.0} µs   floor (file + fsync + dir fsync) p50 {f50:.0} µs p99 {f99:.0} µs  = {:.1}x floor (target p50 <= 5 ms)",
        c50 / f50
    );
    // The rest with 16 clients (group commit of the catalogue).
    let t = Instant::now();
    let rest: Vec<String> = (1000.min(n)..n).map(|i| format!("c{i:06}")).collect();
    let (r50, r99) = if rest.is_empty() {
        (0.0, 0.0)
    } else {
        p50_p99(create_all(&ch, "many", rest, 16).await)
    };
    println!(
        "(n) created {n} collections in one namespace in {:.0} s (c=16: p50 {r50:.0} µs p99 {r99:.0} µs)",
        t.elapsed().as_secs_f64()
    );
    // Namespaces of 10.
    let t = Instant::now();
    for k in 0..namespaces {
        let ns = format!("t{k:05}");
        register(&ch, &ns).await;
        create_all(&ch, &ns, (0..10).map(|i| format!("c{i}")).collect(), 10).await;
    }
    println!(
        "(n) created {namespaces} namespaces x 10 collections in {:.0} s",
        t.elapsed().as_secs_f64()
    );
    // One record in each of 200 collections, for the Gets.
    let mut svc = CollectionServiceClient::new(ch.clone());
    let probes: Vec<String> = (0..200.min(n))
        .map(|i| format!("c{:06}", i * (n / 200).max(1)))
        .collect();
    for c in &probes {
        svc.create(proto::CreateRequest {
            namespace: "many".into(),
            collection: c.clone(),
            record: Some(proto::Record {
                id: "r".into(),
                data: Some(prost_types::Any {
                    type_url: "type.googleapis.com/shop.Order".into(),
                    value: vec![],
                }),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    }
    // The node closes collections unused for 3 s; give it a few ticks.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let total = n + namespaces * 10;
    let (rss, threads, fds) = node.usage();
    println!(
        "(n) idle with {total} collections: {rss:.0} MiB RSS (target <= 512), {threads} threads (target <= 64), {fds} open files"
    );
    node.stop();

    // Restart: spawn to serving.
    let (node, took) = Proc::start(&data);
    let (rss, threads, fds) = node.usage();
    println!(
        "(n) restart with {total} collections: serving in {:.2} s (target <= 2 s); then {rss:.0} MiB RSS, {threads} threads, {fds} open files",
        took.as_secs_f64()
    );
    let ch = connect(node.addr).await;
    let mut svc = CollectionServiceClient::new(ch.clone());
    // First Get of each closed collection, then again while it is open.
    // The node's first call warms what every call shares (the connection,
    // the reader threads), so it is left out.
    get_once(&mut svc, "many", &probes[0]).await;
    let probes = &probes[1..];
    let mut cold = Vec::new();
    for c in probes {
        cold.push(get_once(&mut svc, "many", c).await);
    }
    let mut warm = Vec::new();
    for c in probes {
        warm.push(get_once(&mut svc, "many", c).await);
    }
    let mut sorted = cold.clone();
    sorted.sort_by(f64::total_cmp);
    let worst: Vec<String> = sorted
        .iter()
        .rev()
        .take(3)
        .map(|t| format!("{:.1}", t * 1e3))
        .collect();
    println!("(n) the slowest cold Gets: {} ms", worst.join(", "));
    let (c50, c99) = p50_p99(cold);
    let (w50, w99) = p50_p99(warm);
    println!(
        "(n) Get, closed collection  p50 {c50:>6.0} µs  p99 {c99:>6.0} µs (target p99 <= 5 ms)   open: p50 {w50:.0} µs p99 {w99:.0} µs   empty call p50 {empty_p50_us:.0} µs  = {:.1}x open p50",
        c50 / w50
    );
    node.stop();
}
