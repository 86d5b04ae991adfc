//! Every default, limit and timeout of the node, in one place: what it is,
//! why it has its value, and what a client sees when it is hit. `Config`,
//! the `collector` flags and README's tables take their values from here (a
//! test checks that README names each constant).

use std::time::Duration;

// ---- Defaults of `Config` and `collector serve` ----

/// Where a node keeps its data when `--data-dir` is not given.
pub const DEFAULT_DATA_DIR: &str = "./data";
/// The address a node listens on (and a client command talks to) by default:
/// loopback, so a newcomer's node is not exposed.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";
/// The namespace a request that names none works in.
pub const DEFAULT_NAMESPACE: &str = "default";
/// Nodes form a mesh only with nodes of the same cluster id.
pub const DEFAULT_CLUSTER: &str = "collector";

/// Fewest bytes a cluster secret may have (`serve --cluster-secret-file`);
/// a shorter one fails the start with INVALID_ARGUMENT.
pub const MIN_CLUSTER_SECRET_BYTES: usize = 16;
/// How often a node serving TLS looks at its certificate and key files
/// for a change (a change is loaded without a restart).
pub const TLS_RELOAD_INTERVAL: Duration = Duration::from_secs(1);
/// Handler calls one namespace may have running at once on a node
/// (`--max-calls-per-namespace`); more are RESOURCE_EXHAUSTED.
pub const MAX_CALLS_PER_NAMESPACE: usize = 64;
/// Collections one namespace may hold on a node
/// (`--max-collections-per-namespace`); more are RESOURCE_EXHAUSTED.
pub const MAX_COLLECTIONS_PER_NAMESPACE: usize = 10_000;
/// How often a node measures what each namespace with a storage quota
/// holds (between two measures it adds up what it admits).
pub const STORAGE_SAMPLE_INTERVAL: Duration = Duration::from_secs(1);
/// Entries the audit log `system/audit` keeps by default (the oldest
/// beyond it are dropped).
pub const AUDIT_MAX_ENTRIES: u64 = 1_000_000;
/// Most refused calls the audit log records per second (the next entry
/// counts the ones left out), so a flood of bad keys cannot fill the disk.
pub const AUDIT_DENIED_PER_SECOND: u32 = 20;
/// Longest description an API key may carry, in bytes.
pub const MAX_KEY_DESCRIPTION_BYTES: usize = 1024;
/// The file in the data dir holding the bootstrap operator key (written at
/// the first start, readable only by its owner; the CLI reads it).
pub const OPERATOR_KEY_FILE: &str = "operator.key";
/// How far (ms) the time in a member's proof on a peer call may be from
/// this node's clock; outside it the call is treated as a client's.
pub const PEER_PROOF_SKEW_MS: i64 = 60_000;
/// Collections one `ListOwned` page carries (members fetch a member's list
/// page by page when its gossiped digest changes).
pub const MAX_OWNED_PAGE: usize = 5_000;
/// Most time between two publications of what a node owns and holds: after
/// each, the publisher rests four times as long as it took, up to this (so
/// with 100,000 collections a burst of creates is published at once).
pub const PUBLISH_COALESCE: std::time::Duration = std::time::Duration::from_millis(200);
/// Longest a call naming a collection no member lists waits for a
/// member's list that is being fetched, before NOT_FOUND.
pub const CATALOG_CATCH_UP: std::time::Duration = std::time::Duration::from_secs(2);
/// Least time between two fetches of one member's list of collections.
pub const OWNED_REFETCH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);
/// Client collections open at once on a node (writer, connections, cache);
/// beyond it the least recently used idle ones close.
pub const MAX_OPEN_COLLECTIONS: usize = 512;
/// A client collection unused this long closes (it reopens on its next use).
pub const COLLECTION_IDLE_CLOSE: std::time::Duration = std::time::Duration::from_secs(60);
/// How far (ms) the time a gossip datagram was sealed may be from this
/// node's clock; outside it the datagram is dropped as a replay. Members'
/// clocks must agree within it.
pub const GOSSIP_REPLAY_WINDOW_MS: i64 = 60_000;
/// The most nonces of taken gossip datagrams remembered to refuse replays
/// within the window (24 bytes each, a few MiB at most): far above what
/// members send in two windows.
pub const MAX_REMEMBERED_NONCES: usize = 200_000;
/// Largest gRPC message a node accepts or sends. Over it: RESOURCE_EXHAUSTED
/// (tonic's own check, before the request is decoded).
pub const MAX_MESSAGE_BYTES: usize = 16 << 20;
/// Bytes of recently used records each collection keeps in memory (0 turns
/// the cache off). Hot `Get`s then never touch SQLite.
pub const RECORD_CACHE_BYTES: u64 = 16 << 20;
/// Most connections one client address may hold open; more are closed as
/// they arrive.
pub const MAX_CONNECTIONS_PER_CLIENT: usize = 256;
/// Most concurrent calls (HTTP/2 streams) on one connection; more wait.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 256;
/// A connection whose client sends nothing (no call, no ping, no
/// acknowledgement) for this long is closed; longer than any call may run.
pub const CONNECTION_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// A connection that has sent no bytes this long after it was accepted is
/// closed.
pub const CONNECTION_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time between gossip rounds; failure detection scales with it (a silent
/// member is dead after about `PHI_THRESHOLD` rounds).
pub const GOSSIP_INTERVAL: Duration = Duration::from_millis(200);

/// Mesh members a node tracks at most: a digest of that many still fits one
/// datagram with room for a delta. Enforced inside chitchat, vendored with a
/// patch (`runtime/vendor/chitchat/PATCH.md`), because it decodes datagrams
/// before the node sees them.
pub const MAX_MESH_MEMBERS: usize = chitchat::MAX_NODES;
/// New members one gossip digest may add; a larger mesh is learnt over a few
/// rounds.
pub const MAX_NEW_MEMBERS_PER_DIGEST: usize = chitchat::MAX_NEW_NODES_PER_DIGEST;

/// The most one compressed gossip stream may inflate to; a datagram that
/// inflates past it is dropped unread.
pub const MAX_GOSSIP_INFLATED_BYTES: usize = chitchat::MAX_DECOMPRESSED_STREAM_BYTES;

// ---- Names and records ----

/// Most bytes of client input an error message repeats (`names::clip`): a
/// long echo can push a status past clients' 8–16 KiB metadata limits, and
/// they then report the wrong error.
pub const MAX_ECHO: usize = 100;
/// Longest status message the node sends; longer ones are cut (in
/// `api::status`, where every error becomes a status). The message travels
/// percent-encoded in a header, so 2 KiB stays under 8 KiB whatever it holds.
pub const MAX_STATUS_MESSAGE_BYTES: usize = 2048;
/// Most problems one error message lists (compile errors of a .proto, say);
/// it ends with how many more there were.
pub const MAX_LISTED_ERRORS: usize = 20;

/// Deepest nesting accepted anywhere: messages within messages (binary,
/// JSON, and the contents of `google.protobuf.Any`, which JSON rendering
/// expands), update-mask and field paths. The same as prost's decoding
/// limit, so whatever is stored can be read back. Deeper: INVALID_ARGUMENT,
/// checked before the work.
pub const MAX_NESTING: usize = 100;
/// Longest namespace or collection name, in bytes (fits a file name and a
/// DNS label). Over it: INVALID_ARGUMENT.
pub const MAX_NAME_LEN: usize = 63;
/// Longest record id, in bytes. Over it: INVALID_ARGUMENT.
pub const MAX_ID_LEN: usize = 512;
/// Longest path of a file attached to a record, in bytes. Over it:
/// INVALID_ARGUMENT.
pub const MAX_FILE_PATH_LEN: usize = 1024;
/// Longest segment of such a path, in bytes. Over it: INVALID_ARGUMENT.
pub const MAX_FILE_SEGMENT_LEN: usize = 255;
/// Largest attached file unless `--max-file-bytes` says otherwise. Over it:
/// RESOURCE_EXHAUSTED.
pub const MAX_FILE_BYTES: u64 = 1 << 30;
/// Bytes per message of a file streamed out (GetFile).
pub const FILE_CHUNK_BYTES: usize = 1 << 20;
/// Largest chunk a client may stream in (PutFile). Over it: INVALID_ARGUMENT.
pub const MAX_FILE_CHUNK_BYTES: usize = 4 << 20;
/// Largest record payload, in bytes (half the message limit, so a record
/// and its JSON form fit one reply). Over it: INVALID_ARGUMENT.
pub const MAX_RECORD_BYTES: usize = 8 << 20;
/// Most labels on one record. Over it: INVALID_ARGUMENT.
pub const MAX_LABELS: usize = 64;
/// Longest label key or value, in bytes. Over it: INVALID_ARGUMENT.
pub const MAX_LABEL_LEN: usize = 256;
/// Most ops in one `Batch` (one transaction). Over it: INVALID_ARGUMENT.
pub const MAX_BATCH_OPS: usize = 1000;
/// Most indexed field paths one collection may declare (each costs every
/// write an index update). Over it: INVALID_ARGUMENT.
pub const MAX_INDEXES: usize = 32;

// ---- Queries ----

/// Page size when a request names none.
pub const DEFAULT_PAGE_SIZE: u32 = 100;
/// Largest page a query (or `Discover`) returns; larger requests get this.
pub const MAX_PAGE_SIZE: u32 = 1000;
/// Most values an `IN` filter may list. Over it: INVALID_ARGUMENT.
pub const MAX_IN_VALUES: usize = 1000;
/// Longest full-text query, in bytes. Over it: INVALID_ARGUMENT.
pub const MAX_QUERY_TEXT_BYTES: usize = 1024;
/// Most terms (words, phrases, operators) in a full-text query: each is a
/// scan of the index. Over it: INVALID_ARGUMENT.
pub const MAX_QUERY_TERMS: usize = 32;
/// Most values one query binds (filters, `IN` lists, labels); SQLite
/// refuses more than 32,766. Over it: INVALID_ARGUMENT.
pub const MAX_QUERY_VALUES: usize = 4096;
/// Time a search or count may run inside SQLite (it also stops when its
/// caller goes away). Over it: DEADLINE_EXCEEDED.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(10);
/// Most record bytes (payload and JSON) in one page: a page stops early
/// (with a next-page token) rather than outgrow a reply.
pub const MAX_PAGE_BYTES: usize = MAX_MESSAGE_BYTES / 2;
/// Most filters, and most label conditions, in one query (each is a join or
/// a condition in one SQL statement). Over it: INVALID_ARGUMENT.
pub const MAX_CONDITIONS: usize = 64;

// ---- Storage ----

/// Writes queued for one collection's writer beyond this are refused with
/// RESOURCE_EXHAUSTED ("retry with backoff"), so a flood cannot grow memory.
pub const WRITE_QUEUE: usize = 8192;
/// Most queued writes committed in one transaction (group commit): enough to
/// amortise the fsync, few enough that one group's latency stays short.
pub const GROUP_MAX: usize = 512;
/// How long SQLite waits on a lock before the call is UNAVAILABLE ("storage
/// busy, retry"); only a checkpoint or an outside reader can hold one.
pub const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Pages one step of an online backup copies (16 MiB at 4 KiB pages):
/// steps report progress; their size hardly changes the speed (measured
/// from 256 to all pages at once) since the read transaction is pinned.
pub const BACKUP_STEP_PAGES: std::os::raw::c_int = 4096;
/// Backups taken at once, node-wide; more wait their turn (each reads a
/// whole collection file and writes one as large).
pub const MAX_BACKUPS_AT_ONCE: usize = 2;
/// How often the node looks for backups that are due or past their keep.
pub const BACKUP_SCHEDULER_TICK: Duration = Duration::from_secs(1);
/// Bytes per chunk of a collection streamed between nodes (each with its
/// hash; a gRPC message well under the 4 MiB default).
pub const TRANSFER_CHUNK_BYTES: usize = 1 << 20;
/// How long a snapshot made for a transfer is kept for resuming it.
pub const TRANSFER_RETAIN: Duration = Duration::from_secs(600);
/// Resumes of one transfer after dropped connections before it fails.
pub const MAX_TRANSFER_RESUMES: u32 = 8;
/// Reader connections a collection keeps open between reads.
pub const POOLED_READERS: usize = 16;
/// Reader threads per core: enough that a slow query does not hold up
/// point reads.
pub const READER_THREADS_PER_CORE: usize = 2;

// ---- Handlers (per call unless said; a registration may lower or raise
// ---- the time and memory limits, up to the node's maximums) ----

/// Wall time a handler call may take. Over it: DEADLINE_EXCEEDED.
pub const HANDLER_TIMEOUT: Duration = Duration::from_secs(5);
/// Memory a handler call may use: its linear memory plus the writes it has
/// buffered. Over it: RESOURCE_EXHAUSTED naming the cap.
pub const HANDLER_MEMORY_BYTES: usize = 64 << 20;
/// Longest timeout a registration may ask for (`--max-handler-timeout`).
/// Over it: the registration is INVALID_ARGUMENT.
pub const MAX_HANDLER_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest memory cap a registration may ask for (`--max-handler-memory`,
/// in MiB). Over it: the registration is INVALID_ARGUMENT.
pub const MAX_HANDLER_MEMORY_BYTES: usize = 256 << 20;
/// Memory all handler calls of the node may use together, linear memory
/// and buffered writes (`--handler-memory-budget`, in MiB), so concurrent
/// calls cannot exhaust the machine. Over it: the call that needs more is
/// RESOURCE_EXHAUSTED naming the budget ("retry with backoff").
pub const HANDLER_MEMORY_BUDGET_BYTES: usize = 2 << 30;
/// Largest component a registration may upload. Over it: INVALID_ARGUMENT,
/// before anything is compiled.
pub const MAX_COMPONENT_BYTES: usize = 12 << 20;
/// Components compiled at once on a node; other registrations wait.
pub const MAX_COMPILES: usize = 1;
/// How long a registration waits for its component to compile (and for a
/// turn to). Over it: DEADLINE_EXCEEDED; a compile under way still ends
/// and is cached.
pub const COMPILE_TIMEOUT: Duration = Duration::from_secs(120);
/// Most .proto source bytes (or encoded descriptor-set bytes) one
/// RegisterProto may send: compiling costs memory in proportion. Over it:
/// INVALID_ARGUMENT.
pub const MAX_PROTO_BYTES: usize = 1 << 20;
/// Most .proto files one RegisterProto may send. Over it: INVALID_ARGUMENT.
pub const MAX_PROTO_FILES: usize = 256;
/// Times the node re-runs a handler call whose writes lost an
/// optimistic-concurrency race (on a fresh instance, its writes being
/// buffered), before the call is ABORTED.
pub const HANDLER_CONFLICT_RETRIES: u32 = 32;
/// Largest response a handler may return. Over it: RESOURCE_EXHAUSTED.
pub const HANDLER_OUTPUT_BYTES: usize = 8 << 20;
/// Host calls one handler call may make. Over it: the call traps and is
/// RESOURCE_EXHAUSTED (stops a guest that loops on the host).
pub const HANDLER_HOST_CALLS: u64 = 100_000;
/// Most elements in one handler table (guards `table.grow` bombs). Over it:
/// the growth fails inside the guest.
pub const HANDLER_TABLE_ELEMENTS: usize = 100_000;
/// How often the epoch advances: the longest a guest computes between
/// yields to the executor.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);
/// Most handler calls running at once on a node. Over it:
/// RESOURCE_EXHAUSTED ("retry with backoff").
pub const MAX_INSTANCES: u32 = 64;
/// Most instances made ahead of their call, per node (each holds a pooled
/// memory slot).
pub const MAX_WARM: u32 = 16;
/// Most nested `invoke`s (a handler calling a handler calling …). Over it:
/// RESOURCE_EXHAUSTED.
pub const MAX_INVOKE_DEPTH: u32 = 8;

// ---- Mesh ----

/// Phi threshold of the failure detector: a member is dead once it has been
/// silent for this many mean heartbeat intervals.
pub const PHI_THRESHOLD: f64 = 8.0;
/// How long a dead member stays listed (as dead), so a restarted node is
/// recognised and `ListPeers` can show it.
pub const DEAD_MEMBER_RETENTION: Duration = Duration::from_secs(3600);
/// Times a call may be forwarded between nodes: one, so no loop can form
/// whatever the views say.
pub const MAX_HOPS: u32 = 1;
/// How long a collection remembers that a handler call (by request id)
/// applied its writes there, so a retry of the call skips them.
pub const APPLIED_CALLS_RETAIN: Duration = Duration::from_secs(24 * 3600);
/// How long a finished call's outcome answers retries of its request id.
pub const REQUEST_LOG_RETAIN: Duration = Duration::from_secs(600);
/// Most finished outcomes the request log keeps (only named calls and
/// forwards are logged); under heavy load the at-most-once window shortens.
pub const REQUEST_LOG_ENTRIES: usize = 100_000;
/// Most output bytes the request log keeps across finished outcomes.
pub const REQUEST_LOG_BYTES: usize = 64 << 20;
/// How long connecting to a peer may take before the call is UNAVAILABLE.
pub const PEER_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// HTTP/2 keep-alive ping interval on peer channels.
pub const PEER_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// A peer channel whose keep-alive ping is unanswered this long is dropped.
pub const PEER_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);
/// Most of a caller's remaining time a forward keeps for itself (a tenth of
/// it, at most this): the peer gets less, so its own DEADLINE_EXCEEDED
/// arrives before ours.
pub const FORWARD_MARGIN: Duration = Duration::from_millis(200);
/// How long fetching a component from a peer may take. Over it: UNAVAILABLE.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a peer has to answer its part of a `Discover`; a peer that does
/// not is named as unreachable in the reply.
pub const DISCOVER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `Connect` waits to hear from the node it joins. Over it:
/// UNAVAILABLE.
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(5);
/// With port 0, how many ports a node tries before giving up because the
/// UDP twin of each TCP port it got was taken.
pub const BIND_ATTEMPTS: u32 = 8;

/// Bytes of guest log lines a namespace's ring keeps on a node (the oldest
/// lines go first; see `wasm::logs`).
pub const HANDLER_LOG_BYTES: usize = 256 << 10;
/// Longest guest log line kept, in bytes (longer ones are cut).
pub const MAX_HANDLER_LOG_LINE: usize = 4096;
/// Most guest log lines one `ListHandlerLogs` answers with.
pub const MAX_HANDLER_LOG_PAGE: usize = 1000;

/// The deadline of each API call a console page makes (a handler call from
/// the Services screen, a forward to the member that holds a collection).
pub const CONSOLE_CALL_TIMEOUT: Duration = Duration::from_secs(30);
