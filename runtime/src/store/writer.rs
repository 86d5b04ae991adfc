//! A collection's one writer: a thread that takes queued writes, groups
//! those waiting into one transaction (group commit), and answers each
//! caller only after the commit, so an acknowledged write is durable. The
//! record cache is updated after the commit and before any answer, so reads
//! never see less than what was acknowledged.

use super::cache::{Change, RecordCache};
use super::codec;
use super::file_area::FileArea;
use super::files::{self, Doomed, FileMeta, FileOp};
use super::record::{
    BatchOutcome, Labels, MaskPart, Record, WriteOp, Written, check_labels, check_version,
};
use super::schema::{create_indexes, drop_indexes};
use crate::error::{Error, Result};
use crate::names::RecordId;
use crate::util::now_us;
use prost_reflect::{DynamicMessage, MessageDescriptor};
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use tokio::sync::oneshot;

use crate::limits::GROUP_MAX;

/// What callers queue for the writer.
pub(super) enum Job {
    One(WriteOp, oneshot::Sender<Result<Written>>),
    /// The ops, the file changes applied after them (in the same
    /// transaction), and the handler call they belong to, if it has a
    /// request id.
    Batch(
        Vec<WriteOp>,
        Vec<FileOp>,
        Option<String>,
        oneshot::Sender<Result<BatchOutcome>>,
    ),
    /// Index paths to add and to drop.
    Index(Vec<String>, Vec<String>, oneshot::Sender<Result<()>>),
    /// A file's row put or dropped.
    File(FileOp, oneshot::Sender<Result<FileMeta>>),
}

impl Job {
    /// Answers the job with `e`, unapplied.
    pub(super) fn fail(self, e: Error) {
        match self {
            Job::One(_, tx) => drop(tx.send(Err(e))),
            Job::Batch(_, _, _, tx) => drop(tx.send(Err(e))),
            Job::Index(_, _, tx) => drop(tx.send(Err(e))),
            Job::File(_, tx) => drop(tx.send(Err(e))),
        }
    }

    /// Records it writes, and about how many bytes it may add (what
    /// admission weighs; deletes and index changes add none).
    pub(super) fn weight(&self) -> (usize, u64) {
        match self {
            Job::One(op, _) => (1, op.adds()),
            Job::Batch(ops, files, _, _) => (
                ops.len(),
                ops.iter().map(WriteOp::adds).sum::<u64>()
                    + files.iter().map(FileOp::adds).sum::<u64>(),
            ),
            Job::Index(..) => (0, 0),
            Job::File(f, _) => (0, f.adds()),
        }
    }
}

/// What a writer counts (`telemetry`), labelled with its collection.
pub(super) struct WriterMetrics {
    /// Time of a group's transaction, commit and fsync included.
    pub commit: metrics::Histogram,
    /// Jobs a group carried.
    pub size: metrics::Histogram,
    /// Jobs queued and not yet taken (the collection adds, the writer takes).
    pub queued: metrics::Gauge,
    /// A commit's own write of the WAL and its fsync.
    pub sync: metrics::Histogram,
    /// Records the collection holds: the gauge, and the count behind it
    /// (the collection's, -1 until a writer counted; see `writer_loop`).
    pub records: metrics::Gauge,
    /// See `records`.
    pub held: Arc<std::sync::atomic::AtomicI64>,
}

impl WriterMetrics {
    pub(super) fn of(
        ns: &str,
        name: &str,
        held: Arc<std::sync::atomic::AtomicI64>,
    ) -> WriterMetrics {
        let labels = [
            ("namespace", ns.to_string()),
            ("collection", name.to_string()),
        ];
        WriterMetrics {
            commit: metrics::histogram!(crate::telemetry::COMMIT_DURATION, &labels),
            size: metrics::histogram!(crate::telemetry::COMMIT_SIZE, &labels),
            queued: metrics::gauge!(crate::telemetry::WRITE_QUEUE_DEPTH, &labels),
            sync: metrics::histogram!(crate::telemetry::SYNC_DURATION, &labels),
            records: metrics::gauge!(crate::telemetry::COLLECTION_RECORDS, &labels),
            held,
        }
    }
}

/// Takes jobs until every sender is gone (the collection closed or was
/// evicted), then checkpoints. `pending` counts jobs sent and not yet
/// answered: it drops only after their commit and the cache's update, so
/// an eviction that sees it at zero leaves nothing behind in flight.
pub(super) fn writer_loop(
    mut conn: Connection,
    desc: MessageDescriptor,
    cache: Arc<RecordCache>,
    area: Arc<FileArea>,
    rx: Receiver<Job>,
    counted: WriterMetrics,
    pending: &std::sync::atomic::AtomicUsize,
) {
    let records = &counted.held;
    // SQLite calls the commit hook as a COMMIT starts writing: from there
    // to the commit's return is the WAL write and its fsync.
    let hooked: Arc<std::sync::Mutex<Option<std::time::Instant>>> = Arc::default();
    let hook = hooked.clone();
    let _ = conn.commit_hook(Some(move || {
        *hook.lock().expect("commit hook lock") = Some(std::time::Instant::now());
        false
    }));
    // Counted by the collection's first writer since start, then kept by
    // each commit's creates and deletes.
    if records.load(Ordering::Acquire) < 0 {
        let n = conn
            .query_row("SELECT count(*) FROM records", [], |r| r.get::<_, i64>(0))
            .unwrap_or(0);
        records.store(n, Ordering::Release);
    }
    counted.records.set(records.load(Ordering::Acquire) as f64);
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while jobs.len() < GROUP_MAX {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        counted.size.record(jobs.len() as f64);
        counted.queued.decrement(jobs.len() as f64);
        let started = std::time::Instant::now();
        let n = jobs.len();
        let done = commit_group(&mut conn, &desc, &cache, &area, jobs);
        counted.commit.record(started.elapsed().as_secs_f64());
        let hook_at = hooked.lock().expect("commit hook lock").take();
        if let (Some(at), Some(hook_at)) = (done.at, hook_at) {
            counted
                .sync
                .record(at.saturating_duration_since(hook_at).as_secs_f64());
        }
        if done.records != 0 {
            let now = records.fetch_add(done.records, Ordering::AcqRel) + done.records;
            counted.records.set(now as f64);
        }
        pending.fetch_sub(n, std::sync::atomic::Ordering::AcqRel);
    }
    // Closing (a clean stop, or the collection going away): move the WAL
    // into the database file, so that the `.db` file is complete on its own
    // (copied alone after a clean stop, it used to hold none of the recent
    // writes). Readers are read-only connections and cannot do it at close.
    checkpoint(&conn);
}

/// `PRAGMA wal_checkpoint(TRUNCATE)`, logged if it cannot finish.
fn checkpoint(conn: &Connection) {
    let done = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
        ))
    });
    match done {
        Ok((0, _, _)) => {}
        Ok((_, log, moved)) => tracing::warn!(
            log_pages = log,
            moved_pages = moved,
            "checkpoint at close was blocked by a reader; the rest stays in the -wal file"
        ),
        Err(e) => tracing::warn!(error = %e, "checkpoint at close failed"),
    }
}

/// Reply slots filled during the transaction, sent only after the commit.
enum Reply {
    One(oneshot::Sender<Result<Written>>, Result<Written>),
    Batch(oneshot::Sender<Result<BatchOutcome>>, BatchOutcome),
    Index(oneshot::Sender<Result<()>>, Result<()>),
    File(oneshot::Sender<Result<FileMeta>>, Result<FileMeta>),
}

/// What a successful write changed, for the record cache.
fn change(op: &WriteOp, w: &Written) -> Change {
    match (w, op) {
        (Written::Stored(r), _) => (r.id.clone(), Some(Arc::new(r.clone()))),
        (Written::Deleted, WriteOp::Delete { id, .. }) => (id.as_str().to_string(), None),
        (Written::Deleted, _) => unreachable!("only deletes delete"),
    }
}

/// What a group's commit did: when it returned (None: it failed), and
/// the records it added less those it deleted.
struct Done {
    at: Option<std::time::Instant>,
    records: i64,
}

fn commit_group(
    conn: &mut Connection,
    desc: &MessageDescriptor,
    cache: &RecordCache,
    area: &FileArea,
    jobs: Vec<Job>,
) -> Done {
    let mut changes: Vec<Change> = Vec::new();
    // File bytes whose rows this group drops, unlinked after its commit.
    let mut doomed: Vec<Doomed> = Vec::new();
    let mut replies = Vec::with_capacity(jobs.len());
    let mut jobs = jobs.into_iter();
    let outcome: Result<()> = (|| {
        let mut tx = conn.transaction()?;
        for job in jobs.by_ref() {
            match job {
                Job::One(op, reply) => {
                    // No savepoint per write (it cost ~25% of the writer's time):
                    // `apply` raises caller errors before its first write, and a
                    // failed INSERT is undone by SQLite itself. Any other error may
                    // follow a write, so it fails the whole group.
                    let r = apply(&tx, desc, &op, &mut doomed);
                    if let Ok(w) = &r {
                        changes.push(change(&op, w));
                    }
                    let poisoned = r.as_ref().err().filter(|e| !e.before_writes()).cloned();
                    replies.push(Reply::One(reply, r));
                    if let Some(e) = poisoned {
                        return Err(e);
                    }
                }
                Job::Batch(ops, file_ops, call, reply) => {
                    let mut results: Vec<Result<Written>> = Vec::with_capacity(ops.len());
                    let mut replayed = false;
                    let doomed_before = doomed.len();
                    let r = in_savepoint(&mut tx, |sp| {
                        if let Some(call) = &call
                            && !mark_applied(sp, call)?
                        {
                            replayed = true;
                            return Ok(());
                        }
                        for (i, op) in ops.iter().enumerate() {
                            match apply(sp, desc, op, &mut doomed) {
                                Ok(w) => results.push(Ok(w)),
                                Err(e) => {
                                    results.push(Err(e.clone()));
                                    return Err(e.context(format!("ops[{i}]")));
                                }
                            }
                        }
                        for (i, op) in file_ops.iter().enumerate() {
                            if let Err(e) = files::apply(sp, op, &mut doomed) {
                                results.push(Err(e.clone()));
                                return Err(e.context(format!("files[{i}]")));
                            }
                        }
                        Ok(())
                    });
                    let committed = r.is_ok();
                    if !committed {
                        // Rolled back: those rows stay, and so do their bytes.
                        doomed.truncate(doomed_before);
                    }
                    if replayed {
                        let outcome = BatchOutcome {
                            committed,
                            results: Vec::new(),
                            replayed,
                        };
                        replies.push(Reply::Batch(reply, outcome));
                        continue;
                    }
                    if committed {
                        for (op, w) in ops.iter().zip(&results) {
                            if let Ok(w) = w {
                                changes.push(change(op, w));
                            }
                        }
                    }
                    let failed_at = results.len().saturating_sub(1);
                    let results = if committed {
                        results
                    } else {
                        // One more result than ops if a file change failed.
                        (0..ops.len().max(results.len()))
                            .map(|i| match results.get(i) {
                                Some(Err(e)) if i == failed_at => Err(e.clone()),
                                _ => Err(Error::aborted(format!("not applied: ops[{failed_at}] failed, so the batch was rolled back"))),
                            })
                            .collect()
                    };
                    replies.push(Reply::Batch(
                        reply,
                        BatchOutcome {
                            committed,
                            results,
                            replayed,
                        },
                    ));
                }
                Job::Index(add, drop, reply) => {
                    let r = in_savepoint(&mut tx, |sp| {
                        drop_indexes(sp, &drop)?;
                        create_indexes(sp, desc, &add)
                    });
                    replies.push(Reply::Index(reply, r));
                }
                Job::File(op, reply) => {
                    let before = doomed.len();
                    let r = in_savepoint(&mut tx, |sp| files::apply(sp, &op, &mut doomed));
                    if r.is_err() {
                        doomed.truncate(before);
                    }
                    replies.push(Reply::File(reply, r));
                }
            }
        }
        tx.commit()?;
        Ok(())
    })();
    let mut done = Done {
        at: None,
        records: 0,
    };
    if outcome.is_ok() {
        done.at = Some(std::time::Instant::now());
        // A create stores version 1; a delete leaves None.
        done.records = changes
            .iter()
            .map(|(_, r)| match r {
                Some(r) if r.version == 1 => 1,
                Some(_) => 0,
                None => -1,
            })
            .sum();
        // Before any caller hears of its write, so reads see what was acknowledged.
        cache.apply(changes);
        area.remove(&doomed);
    }
    // A failed commit loses every write of the group: tell each caller so,
    // including those whose jobs were never reached.
    if let Err(e) = &outcome {
        for job in jobs {
            job.fail(e.clone());
        }
    }
    for reply in replies {
        match (reply, &outcome) {
            (Reply::One(tx, r), Ok(())) => drop(tx.send(r)),
            (Reply::Batch(tx, b), Ok(())) => drop(tx.send(Ok(b))),
            (Reply::Index(tx, r), Ok(())) => drop(tx.send(r)),
            (Reply::File(tx, r), Ok(())) => drop(tx.send(r)),
            (Reply::File(tx, _), Err(e)) => drop(tx.send(Err(e.clone()))),
            (Reply::One(tx, _), Err(e)) => drop(tx.send(Err(e.clone()))),
            (Reply::Batch(tx, _), Err(e)) => drop(tx.send(Err(e.clone()))),
            (Reply::Index(tx, _), Err(e)) => drop(tx.send(Err(e.clone()))),
        }
    }
    if let Err(e) = outcome {
        tracing::error!(error = %e, "commit failed; the group's writes were rolled back");
    }
    done
}

/// Records that `call`'s writes are applied here (in the batch's own
/// transaction); false if an earlier run of the call did so already. Also
/// forgets a few calls older than `APPLIED_CALLS_RETAIN`, so the table
/// stays small without a sweeper.
fn mark_applied(tx: &Connection, call: &str) -> Result<bool> {
    let now = crate::util::now_us();
    let cutoff = now - crate::limits::APPLIED_CALLS_RETAIN.as_micros() as i64;
    tx.prepare_cached(
        "DELETE FROM applied_calls WHERE call IN (SELECT call FROM applied_calls WHERE at < ? LIMIT 8)",
    )?
    .execute([cutoff])?;
    let added = tx
        .prepare_cached("INSERT OR IGNORE INTO applied_calls(call, at) VALUES (?, ?)")?
        .execute(rusqlite::params![call, now])?;
    Ok(added == 1)
}

fn in_savepoint<T>(
    tx: &mut Transaction<'_>,
    f: impl FnOnce(&Connection) -> Result<T>,
) -> Result<T> {
    let sp = tx.savepoint()?;
    match f(&sp) {
        Ok(v) => {
            sp.commit()?;
            Ok(v)
        }
        Err(e) => {
            drop(sp); // rolls back
            Err(e)
        }
    }
}

fn labels_json(labels: &Labels) -> String {
    serde_json::to_string(labels).expect("labels serialize")
}

fn write_side_tables(
    tx: &Connection,
    rid: i64,
    text: &str,
    labels: &Labels,
    replace: bool,
) -> Result<()> {
    if replace {
        tx.prepare_cached("DELETE FROM records_fts WHERE rowid = ?")?
            .execute([rid])?;
        tx.prepare_cached("DELETE FROM labels WHERE rid = ?")?
            .execute([rid])?;
    }
    tx.prepare_cached("INSERT INTO records_fts(rowid, body) VALUES (?, ?)")?
        .execute(params![rid, text])?;
    let mut st = tx.prepare_cached("INSERT INTO labels(rid, key, value) VALUES (?, ?, ?)")?;
    for (k, v) in labels {
        st.execute(params![rid, k, v])?;
    }
    Ok(())
}

/// Applies one write inside the group's transaction. Invariant the writer
/// relies on: every error for which `Error::before_writes` holds is raised
/// before the op's first write (or by the INSERT that SQLite undoes itself).
fn apply(
    tx: &Connection,
    desc: &MessageDescriptor,
    op: &WriteOp,
    doomed: &mut Vec<Doomed>,
) -> Result<Written> {
    match op {
        WriteOp::Create {
            id,
            payload,
            labels,
        } => {
            let id = id.clone().unwrap_or_else(RecordId::generate);
            let now = now_us();
            let lj = labels_json(labels);
            let res = tx
                .prepare_cached(
                    "INSERT INTO records(id, data, json, labels, version, created, updated) VALUES (?, ?, ?, ?, 1, ?, ?)",
                )?
                .execute(params![id.as_str(), payload.bytes, payload.json, lj, now, now]);
            match res {
                Err(rusqlite::Error::SqliteFailure(f, _))
                    if f.code == rusqlite::ErrorCode::ConstraintViolation =>
                {
                    return Err(Error::already_exists(format!(
                        "a record with id {:?} already exists; use Update, or another id",
                        id.as_str()
                    )));
                }
                r => r?,
            };
            let rid = tx.last_insert_rowid();
            write_side_tables(tx, rid, &payload.text, labels, false)?;
            Ok(Written::Stored(Record::new(
                id.into_string(),
                (payload.bytes.clone(), payload.json.clone()),
                labels.clone(),
                1,
                now,
                now,
            )))
        }
        WriteOp::Update {
            id,
            data,
            labels,
            mask,
            expected_version,
        } => {
            let existing = tx
                .prepare_cached(
                    "SELECT rid, data, labels, version, created FROM records WHERE id = ?",
                )?
                .query_row([id.as_str()], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, Vec<u8>>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, i64>(4)?,
                    ))
                })
                .optional()?;
            let Some((rid, old_bytes, old_labels, version, created)) = existing else {
                return Err(Error::not_found(format!(
                    "record {:?} not found",
                    id.as_str()
                )));
            };
            check_version(id, *expected_version, version)?;
            let msg = match &mask.data {
                MaskPart::All => data.clone().ok_or_else(|| {
                    Error::invalid("update replaces the payload but gives no data or json")
                })?,
                MaskPart::Keep => codec::decode(desc, &old_bytes)?,
                MaskPart::Paths(paths) => {
                    let mut m = codec::decode(desc, &old_bytes)?;
                    let empty = DynamicMessage::new(desc.clone());
                    let src = data.as_ref().unwrap_or(&empty);
                    for p in paths {
                        codec::apply_mask_path(&mut m, src, p)?;
                    }
                    m
                }
            };
            let payload = codec::encode(&msg)?;
            let mut new_labels: Labels = serde_json::from_str(&old_labels).unwrap_or_default();
            match &mask.labels {
                MaskPart::Keep => {}
                MaskPart::All => new_labels = labels.clone(),
                MaskPart::Paths(keys) => {
                    for k in keys {
                        match labels.get(k) {
                            Some(v) => new_labels.insert(k.clone(), v.clone()),
                            None => new_labels.remove(k),
                        };
                    }
                }
            }
            check_labels(&new_labels)?;
            let now = now_us().max(created);
            tx.prepare_cached("UPDATE records SET data = ?, json = ?, labels = ?, version = ?, updated = ? WHERE rid = ?")?
                .execute(params![payload.bytes, payload.json, labels_json(&new_labels), version + 1, now, rid])?;
            write_side_tables(tx, rid, &payload.text, &new_labels, true)?;
            Ok(Written::Stored(Record::new(
                id.as_str().to_string(),
                (payload.bytes, payload.json),
                new_labels,
                version + 1,
                created,
                now,
            )))
        }
        WriteOp::Delete {
            id,
            expected_version,
        } => {
            let existing = tx
                .prepare_cached("SELECT rid, version FROM records WHERE id = ?")?
                .query_row([id.as_str()], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
                })
                .optional()?;
            let Some((rid, version)) = existing else {
                return Err(Error::not_found(format!(
                    "record {:?} not found",
                    id.as_str()
                )));
            };
            check_version(id, *expected_version, version)?;
            tx.prepare_cached("DELETE FROM records WHERE rid = ?")?
                .execute([rid])?;
            tx.prepare_cached("DELETE FROM records_fts WHERE rowid = ?")?
                .execute([rid])?;
            tx.prepare_cached("DELETE FROM labels WHERE rid = ?")?
                .execute([rid])?;
            files::drop_record(tx, id, doomed)?;
            Ok(Written::Deleted)
        }
    }
}
