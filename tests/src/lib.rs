//! Helpers for the black-box tests: start real nodes (in-process on
//! 127.0.0.1:0, or the binary as a process) and talk gRPC to them.

use collector::api::bearer::{Bearer, KeyedChannel};
use collector::proto::{
    self, collection_repo_client::CollectionRepoClient,
    collection_service_client::CollectionServiceClient,
    collector_registry_client::CollectorRegistryClient,
};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::transport::Channel;

/// The operator key every test node is given (`prepare_dir` writes it as
/// the node's bootstrap key), so clients and the CLI can call any node.
pub const TOKEN: &str =
    "ck_0123456789abcdef_00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

/// The cluster secret every test node is given, so test meshes form.
pub const CLUSTER_SECRET: &[u8] = b"the test mesh's cluster secret";

/// Gives a data dir the test operator key, before its node first starts.
pub fn prepare_dir(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let key = dir.join(collector::limits::OPERATOR_KEY_FILE);
    if !key.exists() {
        std::fs::write(key, TOKEN).unwrap();
    }
}

/// A file holding CLUSTER_SECRET (for `serve --cluster-secret-file`).
pub fn cluster_secret_file() -> PathBuf {
    static FILE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    FILE.get_or_init(|| {
        let p = std::env::temp_dir().join(format!("collector-tests-{}.secret", std::process::id()));
        std::fs::write(&p, CLUSTER_SECRET).unwrap();
        p
    })
    .clone()
}

/// Marks `req` as a member's call (a proof of CLUSTER_SECRET), so the
/// node honours the metadata only members may set (hops, depth).
pub fn as_member<T>(req: &mut tonic::Request<T>) {
    let key = collector::mesh::seal::PeerKey::of(&collector::mesh::seal::ClusterSecret(
        CLUSTER_SECRET.to_vec(),
    ));
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    req.metadata_mut()
        .insert("x-collector-peer", key.proof(now_ms).parse().unwrap());
}

/// A channel to `addr` whose calls carry `token`.
pub async fn channel_as(addr: std::net::SocketAddr, token: &str) -> KeyedChannel {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .expect("connect");
    keyed(channel, token)
}

/// A TLS channel to `addr` trusting `ca` (PEM), whose calls carry `token`.
pub async fn channel_tls(
    addr: std::net::SocketAddr,
    token: &str,
    ca: &[u8],
) -> Result<KeyedChannel, tonic::transport::Error> {
    let channel = Channel::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(collector::api::tls::client_config(ca))?
        .connect()
        .await?;
    Ok(keyed(channel, token))
}

/// `channel` with `token` on every call.
pub fn keyed(channel: Channel, token: &str) -> KeyedChannel {
    Bearer::new(token).expect("a valid key").on(channel)
}

/// The shop types most tests use.
pub const SHOP_PROTO: &str = r#"
syntax = "proto3";
package shop;

enum Status {
  STATUS_UNSPECIFIED = 0;
  OPEN = 1;
  SHIPPED = 2;
}

message Address {
  string city = 1;
  string zip = 2;
}

message Customer {
  string name = 1;
  Address address = 2;
}

message Order {
  string title = 1;
  int64 quantity = 2;
  double price = 3;
  bool paid = 4;
  Status status = 5;
  Customer customer = 6;
  repeated string tags = 7;
  string note = 8;
  optional int32 priority = 9;
}
"#;

/// shop.Address, hand-written with prost so tests send real binary protobuf.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Address {
    #[prost(string, tag = "1")]
    pub city: String,
    #[prost(string, tag = "2")]
    pub zip: String,
}

/// shop.Customer.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Customer {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub address: Option<Address>,
}

/// shop.Order.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Order {
    #[prost(string, tag = "1")]
    pub title: String,
    #[prost(int64, tag = "2")]
    pub quantity: i64,
    #[prost(double, tag = "3")]
    pub price: f64,
    #[prost(bool, tag = "4")]
    pub paid: bool,
    #[prost(int32, tag = "5")]
    pub status: i32,
    #[prost(message, optional, tag = "6")]
    pub customer: Option<Customer>,
    #[prost(string, repeated, tag = "7")]
    pub tags: Vec<String>,
    #[prost(string, tag = "8")]
    pub note: String,
    #[prost(int32, optional, tag = "9")]
    pub priority: Option<i32>,
}

impl Order {
    /// An order with a title and a quantity.
    pub fn new(title: &str, quantity: i64) -> Self {
        Order {
            title: title.into(),
            quantity,
            ..Default::default()
        }
    }

    /// Packs the order into an Any.
    pub fn any(&self) -> prost_types::Any {
        prost_types::Any {
            type_url: "type.googleapis.com/shop.Order".into(),
            value: prost::Message::encode_to_vec(self),
        }
    }
}

/// t.Msg, the message of the example handlers (echo, counter, …).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Msg {
    #[prost(string, tag = "1")]
    pub text: String,
    #[prost(int64, tag = "2")]
    pub n: i64,
}

/// Decodes a record's payload as an Order.
pub fn order_of(r: &proto::Record) -> Order {
    let any = r.data.as_ref().expect("record has data");
    assert_eq!(any.type_url, "type.googleapis.com/shop.Order");
    prost::Message::decode(any.value.as_slice()).expect("decodes as shop.Order")
}

/// gRPC clients of one node.
#[derive(Clone)]
pub struct Clients {
    pub registry: CollectorRegistryClient<KeyedChannel>,
    pub records: CollectionServiceClient<KeyedChannel>,
    pub repo: CollectionRepoClient<KeyedChannel>,
    pub channel: KeyedChannel,
}

impl Clients {
    /// Connects to `addr` with the test operator key.
    pub async fn connect(addr: std::net::SocketAddr) -> Self {
        Self::connect_as(addr, TOKEN).await
    }

    /// Connects to `addr` with `token`.
    pub async fn connect_as(addr: std::net::SocketAddr, token: &str) -> Self {
        Self::over(channel_as(addr, token).await)
    }

    /// Connects to `addr` over TLS, trusting `ca` (PEM), with the test key.
    pub async fn connect_tls(addr: std::net::SocketAddr, ca: &[u8]) -> Self {
        Self::over(
            channel_tls(addr, TOKEN, ca)
                .await
                .expect("connect over TLS"),
        )
    }

    /// Clients over `channel`.
    pub fn over(channel: KeyedChannel) -> Self {
        Clients {
            registry: CollectorRegistryClient::new(channel.clone()),
            // Replies may carry records up to the node's 16 MiB message limit.
            records: CollectionServiceClient::new(channel.clone())
                .max_decoding_message_size(32 << 20),
            repo: CollectionRepoClient::new(channel.clone()),
            channel,
        }
    }

    /// Registers SHOP_PROTO in `ns`.
    pub async fn register_shop(&mut self, ns: &str) {
        self.registry
            .register_proto(proto::RegisterProtoRequest {
                namespace: ns.into(),
                sources: vec![proto::ProtoSource {
                    name: "shop.proto".into(),
                    content: SHOP_PROTO.into(),
                }],
                ..Default::default()
            })
            .await
            .expect("register shop.proto");
    }

    /// Registers `guests/<guest>/proto/<guest>.proto` (the file an
    /// example guest generates its types from) in `ns`.
    pub async fn register_guest_proto(&mut self, ns: &str, guest: &str) {
        let file = format!("{guest}.proto");
        let content = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../guests")
                .join(guest)
                .join("proto")
                .join(&file),
        )
        .unwrap_or_else(|e| panic!("{file}: {e}"));
        self.registry
            .register_proto(proto::RegisterProtoRequest {
                namespace: ns.into(),
                sources: vec![proto::ProtoSource {
                    name: file.clone(),
                    content,
                }],
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("register {file}: {e:?}"));
    }

    /// Creates a shop.Order collection.
    pub async fn create_orders(
        &mut self,
        ns: &str,
        name: &str,
        indexes: &[&str],
    ) -> proto::CollectionInfo {
        self.repo
            .create_collection(proto::CreateCollectionRequest {
                namespace: ns.into(),
                name: name.into(),
                message_type: "shop.Order".into(),
                indexes: indexes.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            })
            .await
            .expect("create collection")
            .into_inner()
    }

    /// Stores an order (id "" → generated).
    pub async fn put(
        &mut self,
        ns: &str,
        coll: &str,
        id: &str,
        o: &Order,
    ) -> Result<proto::Record, tonic::Status> {
        self.records
            .create(proto::CreateRequest {
                namespace: ns.into(),
                collection: coll.into(),
                record: Some(proto::Record {
                    id: id.into(),
                    data: Some(o.any()),
                    ..Default::default()
                }),
            })
            .await
            .map(|r| r.into_inner())
    }

    /// Calls a registered method on its own gRPC path (`/pkg.Svc/Method`)
    /// with raw protobuf bytes, in namespace `ns`.
    pub async fn call_raw(
        &self,
        ns: &str,
        path: &str,
        body: Vec<u8>,
    ) -> Result<Vec<u8>, tonic::Status> {
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        grpc.ready().await.expect("channel ready");
        let mut req = tonic::Request::new(prost::bytes::Bytes::from(body));
        req.metadata_mut().insert(
            "x-collector-namespace",
            ns.parse().expect("ascii namespace"),
        );
        let path = tonic::codegen::http::uri::PathAndQuery::try_from(path).expect("method path");
        grpc.unary(req, path, collector::api::dynamic::BytesCodec)
            .await
            .map(|r| r.into_inner().to_vec())
    }

    /// [`Clients::call_raw`] with prost messages.
    pub async fn call<O: prost::Message + Default>(
        &self,
        ns: &str,
        path: &str,
        input: &impl prost::Message,
    ) -> Result<O, tonic::Status> {
        let out = self.call_raw(ns, path, input.encode_to_vec()).await?;
        Ok(O::decode(out.as_slice()).expect("reply decodes as the output message"))
    }

    /// How many records collection `coll` of namespace `ns` holds.
    pub async fn count(&mut self, ns: &str, coll: &str) -> i64 {
        self.try_count(ns, coll).await.expect("Count")
    }

    /// [`Clients::count`], or the status the node answered with.
    pub async fn try_count(&mut self, ns: &str, coll: &str) -> Result<i64, tonic::Status> {
        self.records
            .count(proto::CountRequest {
                namespace: ns.into(),
                collection: coll.into(),
                ..Default::default()
            })
            .await
            .map(|r| r.into_inner().count)
    }

    /// Runs a search.
    pub async fn search(
        &mut self,
        req: proto::SearchRequest,
    ) -> Result<proto::SearchResponse, tonic::Status> {
        self.records.search(req).await.map(|r| r.into_inner())
    }
}

/// An in-process node on 127.0.0.1:0 with its own data dir.
pub struct TestNode {
    pub handle: Option<collector::NodeHandle>,
    pub dir: tempfile::TempDir,
    pub clients: Clients,
    config: collector::Config,
}

impl TestNode {
    /// Starts a node on a fresh data dir.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts a node on a fresh data dir with a changed configuration (kept
    /// across `restart`).
    pub async fn start_with(tweak: impl FnOnce(&mut collector::Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = collector::Config {
            data_dir: dir.path().to_path_buf(),
            listen: "127.0.0.1:0".parse().unwrap(),
            sync_full: false,
            cluster_secret: Some(collector::mesh::seal::ClusterSecret(
                CLUSTER_SECRET.to_vec(),
            )),
            ..Default::default()
        };
        tweak(&mut config);
        prepare_dir(&config.data_dir);
        let (handle, clients) = Self::boot(config.clone()).await;
        TestNode {
            handle: Some(handle),
            dir,
            clients,
            config,
        }
    }

    async fn boot(config: collector::Config) -> (collector::NodeHandle, Clients) {
        let handle = collector::Node::start(config.clone())
            .await
            .expect("node starts");
        let clients = match &config.tls {
            None => Clients::connect(handle.addr).await,
            Some(files) => {
                let ca = std::fs::read(config.tls_ca.as_ref().unwrap_or(&files.cert)).unwrap();
                Clients::connect_tls(handle.addr, &ca).await
            }
        };
        (handle, clients)
    }

    /// Stops the node cleanly and starts it again on the same data dir.
    pub async fn restart(&mut self) {
        self.handle
            .take()
            .unwrap()
            .shutdown()
            .await
            .expect("clean shutdown");
        let (handle, clients) = Self::boot(self.config.clone()).await;
        self.handle = Some(handle);
        self.clients = clients;
    }
}

/// A node running as its own process; killed on drop.
pub struct ProcessNode {
    pub child: std::process::Child,
    pub addr: std::net::SocketAddr,
}

impl ProcessNode {
    /// Runs `BIN serve` (the `collector` binary; integration tests pass
    /// `env!("CARGO_BIN_EXE_collector-node")`) on `dir` with a free port and
    /// waits for its banner.
    pub fn start(bin: &str, dir: &Path) -> Self {
        Self::start_with(bin, dir, "127.0.0.1:0", &[])
    }

    /// Runs `BIN serve` listening on `listen`, joining the mesh of `join`.
    pub fn start_with(bin: &str, dir: &Path, listen: &str, join: &[String]) -> Self {
        Self::spawn(std::process::Command::new(bin), dir, listen, join)
    }

    /// [`ProcessNode::start_with`] with more `serve` flags.
    pub fn start_with_flags(
        bin: &str,
        dir: &Path,
        listen: &str,
        join: &[String],
        flags: &[&str],
    ) -> Self {
        let mut cmd = std::process::Command::new(bin);
        cmd.arg("serve").args(flags);
        Self::spawn_serving(cmd, dir, listen, join)
    }

    /// [`ProcessNode::start`] with the process's open-files limit (soft and
    /// hard, so the node cannot raise it) set to `max_files`.
    pub fn start_with_max_files(bin: &str, dir: &Path, max_files: u32) -> Self {
        let mut sh = std::process::Command::new("sh");
        sh.args([
            "-c",
            &format!("ulimit -n {max_files} && exec \"$0\" \"$@\""),
            bin,
        ]);
        Self::spawn(sh, dir, "127.0.0.1:0", &[])
    }

    /// Runs `cmd` (a `BIN serve …` command, with its own flags and
    /// environment) on `dir`, listening on `listen` and joining `join`.
    pub fn start_command(
        cmd: std::process::Command,
        dir: &Path,
        listen: &str,
        join: &[String],
    ) -> Self {
        Self::spawn_serving(cmd, dir, listen, join)
    }

    fn spawn(mut cmd: std::process::Command, dir: &Path, listen: &str, join: &[String]) -> Self {
        cmd.arg("serve");
        Self::spawn_serving(cmd, dir, listen, join)
    }

    /// [`ProcessNode::start`] without the test operator key: the node makes
    /// its own on first start, as for a newcomer.
    pub fn start_fresh(bin: &str, dir: &Path) -> Self {
        let mut cmd = std::process::Command::new(bin);
        cmd.arg("serve");
        Self::spawn_with_key(cmd, dir, "127.0.0.1:0", &[], false)
    }

    fn spawn_serving(
        cmd: std::process::Command,
        dir: &Path,
        listen: &str,
        join: &[String],
    ) -> Self {
        Self::spawn_with_key(cmd, dir, listen, join, true)
    }

    fn spawn_with_key(
        mut cmd: std::process::Command,
        dir: &Path,
        listen: &str,
        join: &[String],
        test_key: bool,
    ) -> Self {
        use std::io::BufRead;
        if test_key {
            prepare_dir(dir);
        }
        // An env default: a test's own --cluster-secret-file wins.
        cmd.env("COLLECTOR_CLUSTER_SECRET_FILE", cluster_secret_file());
        cmd.args(["--listen", listen, "--data-dir"]).arg(dir);
        if !join.is_empty() {
            cmd.arg("--join").arg(join.join(","));
        }
        let mut child = cmd
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("spawn node");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if let Some(rest) = line.split(" listening on ").nth(1) {
                    let _ = tx.send(rest.trim().to_string());
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("node prints its address");
        ProcessNode {
            child,
            addr: addr.parse().unwrap(),
        }
    }

    /// SIGKILL, no chance to flush anything.
    pub fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// The process's peak resident memory so far (VmHWM), in bytes.
    pub fn peak_rss(&self) -> u64 {
        let pid = self.child.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc/PID/status");
        kb * 1024
    }

    /// Sends a signal by name (`STOP`, `CONT`, `TERM`, …).
    pub fn signal(&self, name: &str) {
        let ok = std::process::Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -{name} failed");
    }
}

impl Drop for ProcessNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The directory of the example guests' `.wasm` files (guests/ is built
/// once per test run).
pub fn guests_dir() -> &'static Path {
    static DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| collector::guests::build_example_guests().expect("guests build"))
}

/// The bytes of an example guest component.
pub fn guest(name: &str) -> Vec<u8> {
    std::fs::read(guests_dir().join(format!("{name}.wasm")))
        .unwrap_or_else(|e| panic!("guest {name}: {e}"))
}
