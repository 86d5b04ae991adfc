//! One collection: one SQLite file (WAL) with its records, labels and FTS
//! index (`schema`). All writes go through the collection's writer thread
//! (`writer`, group commit); reads run on the reader threads (`readers`)
//! with their own connections (`reads`), behind a write-coherent record
//! cache (`cache`).
//!
//! A collection costs little until it is used: its writer thread and
//! connection, pooled reader connections and record cache (`Live`) exist
//! only while it is open. It opens on its first read or write and closes
//! when `residency` evicts it (idle too long, or least recently used beyond
//! the bound on open collections), never while a read or write is in flight.

use super::cache::RecordCache;
use super::file_area::FileArea;
use super::record::{BatchOutcome, WriteOp, Written};
use super::schema::{create_indexes, open_writer};
use super::writer::{Job, writer_loop};
use crate::error::{Error, Result};
use crate::names::{CollectionName, Namespace, RecordId};
use prost_reflect::MessageDescriptor;
use rusqlite::Connection;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;
use tracing::Instrument;

use crate::limits::{MAX_BATCH_OPS, QUERY_TIMEOUT, WRITE_QUEUE};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};

/// How a collection is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// `synchronous=FULL` (an acknowledged write survives power loss); else NORMAL.
    pub sync_full: bool,
    /// Bytes of recently used records kept in memory (0 turns the cache off).
    pub cache_bytes: u64,
    /// Time a search or count may run inside SQLite.
    pub query_timeout: std::time::Duration,
    /// Largest file attached to a record, in bytes (`--max-file-bytes`).
    pub max_file_bytes: u64,
    /// Client collections open at once (`--max-open-collections`).
    pub max_open_collections: usize,
    /// A client collection unused this long is closed (`--collection-idle-close`).
    pub idle_close: std::time::Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            sync_full: true,
            cache_bytes: crate::limits::RECORD_CACHE_BYTES,
            query_timeout: QUERY_TIMEOUT,
            max_file_bytes: crate::limits::MAX_FILE_BYTES,
            max_open_collections: crate::limits::MAX_OPEN_COLLECTIONS,
            idle_close: crate::limits::COLLECTION_IDLE_CLOSE,
        }
    }
}

/// One collection, open or not.
pub struct Collection {
    /// The namespace it lives in.
    pub namespace: Namespace,
    /// Its name in the namespace.
    pub name: CollectionName,
    pub(super) desc: MessageDescriptor,
    pub(super) path: PathBuf,
    /// Where the files attached to its records live.
    pub(super) files: Arc<FileArea>,
    /// Indexes to make sure of when its writer first opens after start.
    indexes: Vec<String>,
    options: Options,
    state: Mutex<State>,
    pub(super) readers: Mutex<Vec<Connection>>,
    pub(super) query_timeout: std::time::Duration,
    /// Largest file attached to a record, in bytes.
    pub(super) max_file_bytes: u64,
    /// Set when a restore replaced the collection: writes that reach this
    /// (closed) one are told to retry, not that it is gone.
    replaced: AtomicBool,
    /// Asked before each write (the namespace's quotas); unset: none.
    admission: std::sync::OnceLock<Arc<dyn super::Admission>>,
    /// The bound on open collections it counts against; unset: none (the
    /// node's own collections stay open).
    residency: std::sync::OnceLock<Arc<super::residency::Residency>>,
    /// Reads and writes under way (`Use`s alive): while any is, it stays open.
    in_use: AtomicUsize,
    /// Writes sent to the writer and not yet committed.
    pub(super) pending: Arc<AtomicUsize>,
    /// When it was last used (ms on `residency::clock`).
    last_used: AtomicU64,
    /// Its indexes were made sure of since the node started.
    prepared: Arc<AtomicBool>,
    /// `used_bytes` as last measured, until the next write: so measuring a
    /// namespace's storage does not open its idle collections again.
    pub(super) measured: Mutex<Option<u64>>,
    /// Writes sent since start (so a measure knows if one came meanwhile).
    pub(super) writes: AtomicU64,
    /// Records it holds, once a writer has counted them (-1 until then):
    /// kept across its writers, so closing and opening it again does not
    /// count them again.
    records: Arc<AtomicI64>,
}

/// What exists only while a collection is open.
#[derive(Default)]
struct State {
    live: Option<Live>,
    /// The last writer thread, still finishing: the next one waits for it,
    /// so two writers never share the file.
    previous: Option<std::thread::JoinHandle<()>>,
    /// Closed for good (deleted, replaced, or the node stopping).
    closed: bool,
}

struct Live {
    cache: Arc<RecordCache>,
    /// Its writer, started by the first write.
    writer: Option<Writer>,
}

/// A running writer: its queue, thread, and queue-depth gauge.
type Writer = (SyncSender<Job>, std::thread::JoinHandle<()>, metrics::Gauge);

/// A read or write under way: the collection stays open until it is dropped.
pub(super) struct Use {
    coll: Arc<Collection>,
    /// The open collection's record cache.
    pub(super) cache: Arc<RecordCache>,
}

impl Drop for Use {
    fn drop(&mut self) {
        self.coll.touch();
        self.coll.in_use.fetch_sub(1, Ordering::AcqRel);
    }
}

/// How much a collection holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Records.
    pub records: i64,
    /// Bytes of its SQLite file and WAL.
    pub size_bytes: i64,
    /// Files attached to its records.
    pub files: i64,
    /// Bytes of those files.
    pub file_bytes: i64,
}

/// Bytes of the SQLite file at `path` and its WAL on disk (blocking: two
/// stats).
pub fn disk_bytes(path: &Path) -> u64 {
    ["", "-wal"]
        .iter()
        .map(|suffix| {
            let mut p = path.as_os_str().to_owned();
            p.push(suffix);
            std::fs::metadata(&p).map_or(0, |m| m.len())
        })
        .sum()
}

impl Collection {
    /// Opens (creating if needed) the collection stored at `path`, with the
    /// files of its records under `files`: the file, its tables and indexes
    /// are made now and its file area swept of blobs no row names
    /// (blocking); connections, writer and cache come on first use.
    pub fn open(
        namespace: Namespace,
        name: CollectionName,
        desc: MessageDescriptor,
        path: PathBuf,
        files: PathBuf,
        indexes: &[String],
        options: Options,
    ) -> Result<Arc<Self>> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let conn = open_writer(&path, options.sync_full)?;
        create_indexes(&conn, &desc, indexes)?;
        let coll = Self::closed(namespace, name, desc, path, files, indexes, options);
        // Only here, before any use: a put writes its blob before its row.
        coll.files.sweep(&conn).map_err(|e| {
            e.context(format!(
                "sweeping the files of {}/{}",
                coll.namespace, coll.name
            ))
        })?;
        coll.prepared.store(true, Ordering::Release);
        Ok(coll)
    }

    /// The collection stored at `path`, touching nothing on disk until it is
    /// used (how the catalogue loads those without files at start; their
    /// indexes are made sure of when the writer first opens).
    pub fn closed(
        namespace: Namespace,
        name: CollectionName,
        desc: MessageDescriptor,
        path: PathBuf,
        files: PathBuf,
        indexes: &[String],
        options: Options,
    ) -> Arc<Self> {
        Arc::new(Collection {
            namespace,
            name,
            desc,
            path,
            files: Arc::new(FileArea::new(files)),
            indexes: indexes.to_vec(),
            options,
            state: Mutex::new(State::default()),
            readers: Mutex::new(Vec::new()),
            query_timeout: options.query_timeout,
            max_file_bytes: options.max_file_bytes,
            replaced: AtomicBool::new(false),
            admission: std::sync::OnceLock::new(),
            residency: std::sync::OnceLock::new(),
            in_use: AtomicUsize::new(0),
            pending: Arc::new(AtomicUsize::new(0)),
            last_used: AtomicU64::new(super::residency::clock()),
            prepared: Arc::new(AtomicBool::new(false)),
            measured: Mutex::new(None),
            writes: AtomicU64::new(0),
            records: Arc::new(AtomicI64::new(-1)),
        })
    }

    /// Counts it against `residency`'s bound on open collections (set once,
    /// by the catalogue, for client collections).
    pub fn reside_in(&self, residency: Arc<super::residency::Residency>) {
        let _ = self.residency.set(residency);
    }

    /// When it was last used (ms on `residency::clock`).
    pub(super) fn last_used(&self) -> u64 {
        self.last_used.load(Ordering::Relaxed)
    }

    fn touch(&self) {
        self.last_used
            .store(super::residency::clock(), Ordering::Relaxed);
    }

    /// Opens it if it is closed, and keeps it open until the `Use` is dropped.
    pub(super) fn enter(self: &Arc<Self>) -> Use {
        let mut st = self.state.lock().expect("state lock");
        self.in_use.fetch_add(1, Ordering::AcqRel);
        self.touch();
        if st.closed {
            // Reads of a closed collection go on (on its file), uncached.
            drop(st);
            let cache = Arc::new(RecordCache::new(
                0,
                self.namespace.as_str(),
                self.name.as_str(),
            ));
            return Use {
                coll: self.clone(),
                cache,
            };
        }
        let opened = st.live.is_none();
        let live = st.live.get_or_insert_with(|| Live {
            cache: Arc::new(RecordCache::new(
                self.options.cache_bytes,
                self.namespace.as_str(),
                self.name.as_str(),
            )),
            writer: None,
        });
        let cache = live.cache.clone();
        drop(st);
        if opened && let Some(r) = self.residency.get() {
            // After the state lock: eviction takes other collections' locks.
            r.opened(self);
        }
        Use {
            coll: self.clone(),
            cache,
        }
    }

    /// Closes it if nothing is in flight: the writer finishes (nothing is
    /// queued) and checkpoints on its own thread, the cache and pooled
    /// connections go to `dispose` (so nothing here blocks). False if it
    /// was closed already or is in use.
    pub(super) fn evict(&self, dispose: &dyn Fn(Box<dyn Send>)) -> bool {
        let mut st = self.state.lock().expect("state lock");
        if st.live.is_none()
            || self.in_use.load(Ordering::Acquire) > 0
            || self.pending.load(Ordering::Acquire) > 0
        {
            return false;
        }
        let live = st.live.take().expect("checked above");
        if let Some((tx, thread, _)) = live.writer {
            drop(tx);
            // Finishing already: the next writer joins it; drop the older.
            if let Some(old) = st.previous.replace(thread) {
                dispose(Box::new(old));
            }
        }
        drop(st);
        let readers = std::mem::take(&mut *self.readers.lock().expect("readers lock"));
        dispose(Box::new((live.cache, readers)));
        true
    }

    /// Starts the writer thread (after the last one has finished): it opens
    /// its connection, the first time since start making sure of the
    /// indexes (a crash may have come between an index change and the
    /// catalogue's record of it).
    fn start_writer<'s>(&self, st: &'s mut State) -> Result<&'s mut Writer> {
        let live = st.live.as_mut().expect("entered");
        if live.writer.is_none() {
            let (tx, rx) = std::sync::mpsc::sync_channel(WRITE_QUEUE);
            let counted = super::writer::WriterMetrics::of(
                self.namespace.as_str(),
                self.name.as_str(),
                self.records.clone(),
            );
            let queued = counted.queued.clone();
            let previous = st.previous.take();
            let (path, desc, indexes) =
                (self.path.clone(), self.desc.clone(), self.indexes.clone());
            let (cache, area) = (live.cache.clone(), self.files.clone());
            let (pending, prepared) = (self.pending.clone(), self.prepared.clone());
            let sync_full = self.options.sync_full;
            let label = format!("{}/{}", self.namespace, self.name);
            let thread = std::thread::Builder::new()
                .name(format!("writer {label}"))
                .spawn(move || {
                    if let Some(p) = previous {
                        let _ = p.join();
                    }
                    let opened = (|| {
                        let conn = open_writer(&path, sync_full)?;
                        if !prepared.load(Ordering::Acquire) {
                            create_indexes(&conn, &desc, &indexes)?;
                            prepared.store(true, Ordering::Release);
                        }
                        Ok::<_, Error>(conn)
                    })();
                    match opened {
                        Ok(conn) => writer_loop(conn, desc, cache, area, rx, counted, &pending),
                        Err(e) => {
                            tracing::error!(collection = %label, error = %e, "cannot open the collection's writer");
                            // Until the collection is evicted and opened again.
                            while let Ok(job) = rx.recv() {
                                counted.queued.decrement(1.0);
                                job.fail(e.clone());
                                pending.fetch_sub(1, Ordering::AcqRel);
                            }
                        }
                    }
                })
                .map_err(|e| Error::unavailable(format!("cannot start the writer of {}/{}: {e}; retry", self.namespace, self.name)))?;
            live.writer = Some((tx, thread, queued));
        }
        Ok(live.writer.as_mut().expect("started above"))
    }

    /// The records' message type.
    pub fn descriptor(&self) -> &MessageDescriptor {
        &self.desc
    }

    /// Path of the SQLite file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the files attached to its records live.
    pub fn files_root(&self) -> &Path {
        self.files.root()
    }

    /// Has every later write asked `admission` first (set once, when the
    /// catalogue opens a collection of a namespace that has quotas).
    pub fn admit_through(&self, admission: Arc<dyn super::Admission>) {
        let _ = self.admission.set(admission);
    }

    /// Asks the admission, if any, for `records` writes adding about
    /// `adds` bytes.
    pub(super) fn admit(&self, records: usize, adds: u64) -> Result<()> {
        match self.admission.get() {
            Some(a) => a.admit_write(&self.namespace, records, adds),
            None => Ok(()),
        }
    }

    /// Queues a job for the writer (starting it if need be), once the
    /// quotas admit it; the caller holds a `Use` until it is answered.
    pub(super) fn send(&self, _in_use: &Use, job: Job) -> Result<()> {
        let (records, adds) = job.weight();
        if records > 0 || adds > 0 {
            self.admit(records, adds)?;
        }
        let mut st = self.state.lock().expect("state lock");
        if st.closed {
            if self.replaced.load(Ordering::Acquire) {
                return Err(Error::unavailable(format!(
                    "collection {}/{} was just replaced by a restore; retry to reach the restored one",
                    self.namespace, self.name
                )));
            }
            return Err(Error::not_found(format!(
                "collection {}/{} was deleted",
                self.namespace, self.name
            )));
        }
        self.writes.fetch_add(1, Ordering::AcqRel);
        *self.measured.lock().expect("measured lock") = None;
        let (tx, _, queued) = self.start_writer(&mut st)?;
        match tx.try_send(job) {
            Ok(()) => {
                queued.increment(1.0);
                self.pending.fetch_add(1, Ordering::AcqRel);
                Ok(())
            }
            Err(TrySendError::Full(_)) => Err(Error::resource_exhausted(format!(
                "collection {}/{}: {WRITE_QUEUE} writes are already queued; retry with backoff",
                self.namespace, self.name
            ))),
            Err(TrySendError::Disconnected(_)) => {
                Err(Error::unavailable("the collection's writer has stopped"))
            }
        }
    }

    /// Applies one write; answered after its transaction commits.
    pub async fn write(self: &Arc<Self>, op: WriteOp) -> Result<Written> {
        let (tx, rx) = oneshot::channel();
        let using = self.enter();
        self.send(&using, Job::One(op, tx))?;
        rx.instrument(self.span("sqlite.write"))
            .await
            .map_err(|_| Error::internal("the writer dropped the request"))?
    }

    /// A trace span for a store operation on this collection.
    pub(super) fn span(&self, op: &'static str) -> tracing::Span {
        crate::traces::store_span(op, self.namespace.as_str(), self.name.as_str())
    }

    /// Stores `bytes`, a message of the collection's type, as record `id`:
    /// created when `create`, else replaced whole (for the node's own
    /// collections, which keep one record per thing they hold).
    pub async fn put_encoded(
        self: &Arc<Self>,
        id: RecordId,
        bytes: &[u8],
        create: bool,
    ) -> Result<Written> {
        let msg = super::codec::decode(&self.desc, bytes)?;
        let op = if create {
            WriteOp::Create {
                id: Some(id),
                payload: super::codec::encode(&msg)?,
                labels: super::Labels::new(),
            }
        } else {
            WriteOp::Update {
                id,
                data: Some(msg),
                labels: super::Labels::new(),
                mask: super::Mask::full(),
                expected_version: None,
            }
        };
        self.write(op).await
    }

    /// Applies every op in one transaction, or none of them.
    pub async fn batch(self: &Arc<Self>, ops: Vec<WriteOp>) -> Result<BatchOutcome> {
        self.batch_of_call(ops, None).await
    }

    /// `batch` for a handler call with request id `call`: recorded in the
    /// same transaction, so a re-run of the call applies its batch here at
    /// most once (the outcome says `replayed`).
    pub async fn batch_of_call(
        self: &Arc<Self>,
        ops: Vec<WriteOp>,
        call: Option<String>,
    ) -> Result<BatchOutcome> {
        if ops.len() > MAX_BATCH_OPS {
            return Err(Error::invalid(format!(
                "{} ops in one batch; the limit is {MAX_BATCH_OPS}",
                ops.len()
            )));
        }
        let (tx, rx) = oneshot::channel();
        let using = self.enter();
        self.send(&using, Job::Batch(ops, Vec::new(), call, tx))?;
        rx.instrument(self.span("sqlite.write"))
            .await
            .map_err(|_| Error::internal("the writer dropped the request"))?
    }

    /// Drops the expression indexes on `drop` and adds them on `add` (field
    /// paths), in one transaction of the writer.
    pub async fn change_indexes(
        self: &Arc<Self>,
        add: Vec<String>,
        drop: Vec<String>,
    ) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        let using = self.enter();
        self.send(&using, Job::Index(add, drop, tx))?;
        rx.await
            .map_err(|_| Error::internal("the writer dropped the request"))??;
        // Pooled readers keep the schema they planned with; new ones see the index.
        self.readers.lock().expect("readers lock").clear();
        Ok(())
    }

    /// Closes it for good: the writer finishes the queued writes and
    /// checkpoints, and this waits for it (blocking).
    pub fn close(&self) {
        let (live, previous) = {
            let mut st = self.state.lock().expect("state lock");
            st.closed = true;
            (st.live.take(), st.previous.take())
        };
        if let Some((tx, thread, _)) = live.and_then(|l| l.writer) {
            drop(tx);
            let _ = thread.join();
        }
        if let Some(p) = previous {
            let _ = p.join();
        }
        self.readers.lock().expect("readers lock").clear();
        if let Some(r) = self.residency.get() {
            r.closed(self);
        }
    }

    /// Closes the collection for a restore that replaces its file: queued
    /// writes land first, later ones are told to retry.
    pub fn retire(&self) {
        self.replaced.store(true, Ordering::Release);
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use crate::store::codec;
    use crate::store::query::{Filter, Op, Order, Query, Scalar};
    use crate::store::record::{Labels, Mask};

    fn open(dir: &Path, indexes: &[String]) -> Arc<Collection> {
        let src = r#"syntax = "proto3"; package t;
            message Inner { string city = 1; }
            message M { string name = 1; int64 n = 2; Inner inner = 3; }"#;
        let desc = crate::store::test_pool(src)
            .get_message_by_name("t.M")
            .unwrap();
        Collection::open(
            Namespace::new("t").unwrap(),
            CollectionName::new("m").unwrap(),
            desc,
            dir.join("m.db"),
            dir.join("m-files"),
            indexes,
            Options {
                sync_full: false,
                cache_bytes: 1 << 20,
                ..Default::default()
            },
        )
        .unwrap()
    }

    fn eq(field: &str, v: Scalar) -> Filter {
        Filter {
            field: field.into(),
            op: Op::Eq,
            value: Some(v),
            values: vec![],
        }
    }

    #[tokio::test]
    async fn indexed_paths_do_not_scan() {
        let dir = tempfile::tempdir().unwrap();
        let c = open(dir.path(), &["n".into(), "inner.city".into()]);
        let plan = |filters: Vec<Filter>, order: Option<Order>| Query {
            filters,
            order,
            ..Default::default()
        };
        let p = c
            .explain(plan(vec![eq("n", Scalar::Int(5))], None))
            .await
            .unwrap();
        assert!(p.contains("USING COVERING INDEX idx_n"), "{p}");
        assert!(
            !p.contains("TEMP B-TREE"),
            "an equality filter pages in the default order from its index: {p}"
        );
        let p = c
            .explain(plan(
                vec![eq("inner.city", Scalar::Str("Oslo".into()))],
                None,
            ))
            .await
            .unwrap();
        assert!(p.contains("USING COVERING INDEX idx_inner__city"), "{p}");
        let p = c
            .explain(plan(
                vec![],
                Some(Order {
                    field: "n".into(),
                    descending: true,
                }),
            ))
            .await
            .unwrap();
        assert!(
            p.contains("idx_n") && !p.contains("TEMP B-TREE"),
            "ordered by the index: {p}"
        );
        let p = c
            .explain(plan(vec![eq("name", Scalar::Str("x".into()))], None))
            .await
            .unwrap();
        assert!(p.contains("SCAN"), "an unindexed path scans: {p}");
        // Indexes can be added later too.
        c.change_indexes(vec!["name".into()], vec![]).await.unwrap();
        let p = c
            .explain(plan(vec![eq("name", Scalar::Str("x".into()))], None))
            .await
            .unwrap();
        assert!(p.contains("USING COVERING INDEX idx_name"), "{p}");
        c.close();
    }

    #[tokio::test]
    async fn group_commit_answers_each_caller_with_its_own_result() {
        let dir = tempfile::tempdir().unwrap();
        let c = open(dir.path(), &[]);
        let desc = c.descriptor().clone();
        let mut tasks = Vec::new();
        for i in 0..200 {
            let c = c.clone();
            let msg = crate::store::codec::decode_json(&desc, &format!(r#"{{"n": {i}}}"#)).unwrap();
            // Every 10th write reuses an id, so some writes in a group fail.
            let id = RecordId::new(&format!("id{}", if i % 10 == 9 { i - 1 } else { i })).unwrap();
            tasks.push(tokio::spawn(async move {
                c.write(WriteOp::Create {
                    id: Some(id),
                    payload: codec::encode(&msg).unwrap(),
                    labels: Labels::new(),
                })
                .await
            }));
        }
        let mut ok = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(_) => ok += 1,
                Err(e) => assert_eq!(e.kind, ErrorKind::AlreadyExists),
            }
        }
        assert_eq!(ok, 180);
        assert_eq!(c.count(Query::default()).await.unwrap(), 180);
        c.close();
    }

    #[tokio::test]
    async fn cached_reads_never_go_back_in_time() {
        let dir = tempfile::tempdir().unwrap();
        let c = open(dir.path(), &[]);
        let desc = c.descriptor().clone();
        let id = RecordId::new("k").unwrap();
        let msg = |n: i64| codec::decode_json(&desc, &format!(r#"{{"n": {n}}}"#)).unwrap();
        c.write(WriteOp::Create {
            id: Some(id.clone()),
            payload: codec::encode(&msg(0)).unwrap(),
            labels: Labels::new(),
        })
        .await
        .unwrap();
        let acked = Arc::new(std::sync::atomic::AtomicI64::new(1));
        let mut readers = Vec::new();
        for _ in 0..4 {
            let (c, id, acked) = (c.clone(), id.clone(), acked.clone());
            readers.push(tokio::spawn(async move {
                for _ in 0..300 {
                    let floor = acked.load(std::sync::atomic::Ordering::SeqCst);
                    let r = c.get(id.clone()).await.unwrap();
                    assert!(
                        r.version >= floor,
                        "read version {} after version {floor} was acknowledged",
                        r.version
                    );
                }
            }));
        }
        for n in 1..=150 {
            let w = c
                .write(WriteOp::Update {
                    id: id.clone(),
                    data: Some(msg(n)),
                    labels: Labels::new(),
                    mask: Mask::full(),
                    expected_version: None,
                })
                .await
                .unwrap();
            let Written::Stored(r) = w else {
                panic!("update stores")
            };
            acked.store(r.version, std::sync::atomic::Ordering::SeqCst);
        }
        for r in readers {
            r.await.unwrap();
        }
        assert_eq!(c.get(id.clone()).await.unwrap().version, 151);
        c.write(WriteOp::Delete {
            id: id.clone(),
            expected_version: None,
        })
        .await
        .unwrap();
        assert_eq!(
            c.get(id).await.unwrap_err().kind,
            ErrorKind::NotFound,
            "a delete evicts"
        );
        c.close();
    }
}
