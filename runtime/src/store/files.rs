//! Files attached to records. A record owns a tree of named files; their
//! names, sizes, hashes and versions are rows of the collection's `files`
//! table, and their bytes are blobs under `data/files/<ns>/<name>/`, in a
//! directory per record named by the hash of its id, under names this node
//! makes (UUIDv7). A client's path is never a path on disk.
//!
//! Every file operation goes through a cap-std `Dir` rooted at the
//! collection's file area, so a symlink planted inside it cannot make the
//! node read or write outside; blobs are only ever created new (never
//! opened for writing), so a planted hard link is never written through.
//!
//! A put streams into a temporary blob in the record's directory, hashing
//! as it goes; only when the stream ends cleanly and the size and hash
//! preconditions hold is it synced and renamed to its final name, and then
//! the row pointing at it is written by the collection's writer (which
//! checks the record exists and the version preconditions, in the same
//! transaction as any other write). The blob a put replaces, or a delete
//! removes, is unlinked after that commit. What a crash leaves between
//! those steps (a temporary, a blob no row points at) is swept when the
//! collection opens, so the rows and the bytes never disagree.

use super::collection::Collection;
use super::file_area::{BlobWriter, FileArea, FilesPin};
use super::readers::Lane;
use super::record::{BatchOutcome, WriteOp};
use super::writer::Job;
use crate::error::{Error, Result};
use crate::limits::MAX_BATCH_OPS;
use crate::names::{FilePath, RecordId};
use rusqlite::{Connection, OptionalExtension, params};
use std::io::{Read, Seek, SeekFrom};
use std::sync::Arc;
use tokio::sync::oneshot;
use tokio_stream::{Stream, StreamExt};

/// A file's metadata, as `StatFile` and `ListFiles` give it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileMeta {
    /// The record it belongs to.
    pub record_id: String,
    /// Its path under the record.
    pub path: String,
    /// Bytes.
    pub size_bytes: i64,
    /// blake3 of its bytes, hex.
    pub blake3: String,
    /// What the client said it is (a MIME type, say).
    pub content_type: String,
    /// 1 when first put, +1 on every put over it.
    pub version: i64,
    /// When it was first put (µs since the epoch).
    pub created_us: i64,
    /// When it was last put (µs since the epoch).
    pub updated_us: i64,
}

/// What a put asks for, besides the bytes.
#[derive(Debug, Clone, Default)]
pub struct PutFile {
    /// Content type to record.
    pub content_type: String,
    /// The bytes must number exactly this many.
    pub expected_size: Option<i64>,
    /// The bytes must hash to this (blake3, hex).
    pub expected_blake3: Option<String>,
    /// Only if no file is at the path yet (else ALREADY_EXISTS).
    pub if_absent: bool,
    /// Only if the file at the path is at this version (else
    /// FAILED_PRECONDITION).
    pub expected_version: Option<i64>,
}

/// A file change made in one batch with record writes (what a handler
/// stages): applied only if the whole batch is.
#[derive(Debug, Clone)]
pub enum FileChange {
    /// Puts `data` at `path` of record `id`.
    Put {
        /// The record.
        id: RecordId,
        /// The file's path under it.
        path: FilePath,
        /// Content type to record.
        content_type: String,
        /// The bytes.
        data: Vec<u8>,
        /// Only if the file is at this version (else FAILED_PRECONDITION).
        expected_version: Option<i64>,
    },
    /// Deletes the file at `path` of record `id`.
    Delete {
        /// The record.
        id: RecordId,
        /// The file's path under it.
        path: FilePath,
        /// Only if the file is at this version.
        expected_version: Option<i64>,
    },
}

impl FileChange {
    /// The record whose file it changes.
    pub fn record_id(&self) -> &RecordId {
        match self {
            FileChange::Put { id, .. } | FileChange::Delete { id, .. } => id,
        }
    }
}

/// A finished blob: synced and under its final name.
#[derive(Debug, Clone)]
pub(super) struct Blob {
    pub name: String,
    pub size: i64,
    pub blake3: String,
}

/// A change to the `files` table, applied by the collection's writer.
pub(super) enum FileOp {
    Put {
        id: RecordId,
        path: FilePath,
        blob: Blob,
        put: PutFile,
    },
    Delete {
        id: RecordId,
        path: FilePath,
        expected_version: Option<i64>,
    },
}

impl FileOp {
    /// Bytes it adds: a put's file (at least 1), a delete none.
    pub(super) fn adds(&self) -> u64 {
        match self {
            FileOp::Put { blob, .. } => blob.size.max(1) as u64,
            FileOp::Delete { .. } => 0,
        }
    }
}

/// A blob to unlink once the transaction that dropped its row commits.
pub(super) type Doomed = (RecordId, String);

/// Chunks a put's receiver may be ahead of its writer.
const PUT_QUEUE_CHUNKS: usize = 4;

/// Bytes a put writes between asking the kernel to start writing them back,
/// so its final fsync has little left to do.
const WRITEBACK_BYTES: usize = 32 << 20;

/// Writes the bytes of `files`' puts as finished blobs, and turns the
/// changes into the writer's ops; if one fails, those already written are
/// removed.
fn write_blobs(area: &FileArea, files: Vec<FileChange>) -> Result<(Vec<FileOp>, Vec<Doomed>)> {
    let mut ops = Vec::with_capacity(files.len());
    let mut blobs: Vec<Doomed> = Vec::new();
    for f in files {
        let op = match f {
            FileChange::Put {
                id,
                path,
                content_type,
                data,
                expected_version,
            } => {
                let put = PutFile {
                    content_type,
                    expected_version,
                    ..Default::default()
                };
                let written = area.create(&id).and_then(|mut w| {
                    w.write(&data)?;
                    w.finish(&put)
                });
                let blob = match written {
                    Ok(b) => b,
                    Err(e) => {
                        area.remove(&blobs);
                        return Err(e);
                    }
                };
                blobs.push((id.clone(), blob.name.clone()));
                FileOp::Put {
                    id,
                    path,
                    blob,
                    put,
                }
            }
            FileChange::Delete {
                id,
                path,
                expected_version,
            } => FileOp::Delete {
                id,
                path,
                expected_version,
            },
        };
        ops.push(op);
    }
    Ok((ops, blobs))
}

/// Runs blocking file work off the executor.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::internal(format!("file task failed: {e}")))?
}

const COLUMNS: &str = "record, path, size, blake3, content_type, version, created, updated";

fn row_meta(r: &rusqlite::Row) -> rusqlite::Result<FileMeta> {
    Ok(FileMeta {
        record_id: r.get(0)?,
        path: r.get(1)?,
        size_bytes: r.get(2)?,
        blake3: r.get(3)?,
        content_type: r.get(4)?,
        version: r.get(5)?,
        created_us: r.get(6)?,
        updated_us: r.get(7)?,
    })
}

/// Applies a file op inside the writer's transaction; blobs whose rows it
/// drops go to `doomed`.
pub(super) fn apply(tx: &Connection, op: &FileOp, doomed: &mut Vec<Doomed>) -> Result<FileMeta> {
    let (id, path) = match op {
        FileOp::Put { id, path, .. } | FileOp::Delete { id, path, .. } => (id, path),
    };
    let existing: Option<(String, i64, i64)> = tx
        .prepare_cached("SELECT blob, version, created FROM files WHERE record = ? AND path = ?")?
        .query_row(params![id.as_str(), path.as_str()], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()?;
    let not_found = || {
        Error::not_found(format!(
            "record {:?} has no file {:?}",
            crate::names::clip(id.as_str()),
            path.as_str()
        ))
    };
    let check_version = |expected: Option<i64>, actual: Option<i64>| match (expected, actual) {
        (Some(v), Some(a)) if v != a => Err(Error::failed_precondition(format!(
            "file {:?} is at version {a}, not the expected {v}: stat it again and retry",
            path.as_str()
        ))),
        (Some(_), None) => Err(not_found()),
        _ => Ok(()),
    };
    match op {
        FileOp::Put { blob, put, .. } => {
            let has_record = tx
                .prepare_cached("SELECT 1 FROM records WHERE id = ?")?
                .query_row([id.as_str()], |_| Ok(()))
                .optional()?
                .is_some();
            if !has_record {
                return Err(Error::not_found(format!(
                    "record {:?} not found; a file belongs to a record: create it first",
                    crate::names::clip(id.as_str())
                )));
            }
            if put.if_absent && existing.is_some() {
                return Err(Error::already_exists(format!(
                    "record {:?} has a file {:?} already (if_absent)",
                    crate::names::clip(id.as_str()),
                    path.as_str()
                )));
            }
            check_version(put.expected_version, existing.as_ref().map(|e| e.1))?;
            let now = crate::util::now_us();
            let (version, created) = match &existing {
                Some((old, v, c)) => {
                    doomed.push((id.clone(), old.clone()));
                    (v + 1, *c)
                }
                None => (1, now),
            };
            tx.prepare_cached(
                "INSERT OR REPLACE INTO files(record, path, blob, size, blake3, content_type, version, created, updated)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )?
            .execute(params![
                id.as_str(),
                path.as_str(),
                blob.name,
                blob.size,
                blob.blake3,
                put.content_type,
                version,
                created,
                now
            ])?;
            Ok(FileMeta {
                record_id: id.as_str().to_string(),
                path: path.as_str().to_string(),
                size_bytes: blob.size,
                blake3: blob.blake3.clone(),
                content_type: put.content_type.clone(),
                version,
                created_us: created,
                updated_us: now,
            })
        }
        FileOp::Delete {
            expected_version, ..
        } => {
            let Some((old, version, _)) = existing else {
                return Err(not_found());
            };
            check_version(*expected_version, Some(version))?;
            let meta = tx
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM files WHERE record = ? AND path = ?"
                ))?
                .query_row(params![id.as_str(), path.as_str()], row_meta)?;
            tx.prepare_cached("DELETE FROM files WHERE record = ? AND path = ?")?
                .execute(params![id.as_str(), path.as_str()])?;
            doomed.push((id.clone(), old));
            Ok(meta)
        }
    }
}

/// Drops the rows of every file of record `id` (it is being deleted); their
/// blobs go to `doomed`.
pub(super) fn drop_record(tx: &Connection, id: &RecordId, doomed: &mut Vec<Doomed>) -> Result<()> {
    let mut st = tx.prepare_cached("DELETE FROM files WHERE record = ? RETURNING blob")?;
    let blobs = st.query_map([id.as_str()], |r| r.get::<_, String>(0))?;
    for b in blobs {
        doomed.push((id.clone(), b?));
    }
    Ok(())
}

/// A page of files.
#[derive(Debug, Clone)]
pub struct FilePage {
    /// The files, by path.
    pub files: Vec<FileMeta>,
    /// Token of the next page; empty on the last.
    pub next_token: String,
}

/// A stream of a file's bytes.
pub type Bytes = std::pin::Pin<Box<dyn Stream<Item = Result<Vec<u8>>> + Send>>;

impl Collection {
    /// Holds every blob of the collection on disk until dropped (see
    /// [`FilesPin`]).
    pub fn pin_files(&self) -> FilesPin {
        self.files.pin()
    }

    /// Largest file a record may have, in bytes (`--max-file-bytes`).
    pub fn max_file_bytes(&self) -> u64 {
        self.max_file_bytes
    }

    /// RESOURCE_EXHAUSTED if a file of `n` bytes is over the limit.
    pub fn check_file_size(&self, n: u64) -> Result<()> {
        if n > self.max_file_bytes {
            return Err(Error::resource_exhausted(format!(
                "a file of {n} bytes is over the limit of {} bytes (--max-file-bytes); nothing was changed",
                self.max_file_bytes
            )));
        }
        Ok(())
    }

    /// `batch_of_call` that also makes `files` changes, after the record
    /// ops and in the same transaction (so a file can go on a record the
    /// batch creates). The new bytes are written and synced first, and
    /// removed again unless the batch is applied; once started it runs to
    /// its end even if the caller goes.
    pub async fn batch_with_files(
        self: &Arc<Self>,
        ops: Vec<WriteOp>,
        files: Vec<FileChange>,
        call: Option<String>,
    ) -> Result<BatchOutcome> {
        if files.is_empty() {
            return self.batch_of_call(ops, call).await;
        }
        if ops.len() + files.len() > MAX_BATCH_OPS {
            return Err(Error::invalid(format!(
                "{} record and file changes in one batch; the limit is {MAX_BATCH_OPS}",
                ops.len() + files.len()
            )));
        }
        for f in &files {
            if let FileChange::Put { data, .. } = f {
                self.check_file_size(data.len() as u64)?;
            }
        }
        let this = self.clone();
        let using = self.enter();
        tokio::spawn(async move {
            let area = this.files.clone();
            let (file_ops, blobs) = blocking(move || write_blobs(&area, files)).await?;
            let (tx, rx) = oneshot::channel();
            let out = match this.send(&using, Job::Batch(ops, file_ops, call, tx)) {
                Ok(()) => rx
                    .await
                    .map_err(|_| Error::internal("the writer dropped the request"))
                    .and_then(|r| r),
                Err(e) => Err(e),
            };
            let applied = matches!(&out, Ok(o) if o.committed && !o.replayed);
            if !applied && !blobs.is_empty() {
                let area = this.files.clone();
                let _ = blocking(move || {
                    area.remove(&blobs);
                    Ok(())
                })
                .await;
            }
            out
        })
        .await
        .map_err(|e| Error::internal(format!("batch task failed: {e}")))?
    }

    /// Puts a file at `path` of record `id` from `chunks`: streamed to a
    /// temporary, checked, renamed into place and recorded, or nothing
    /// changes. At most `max_file_bytes` are taken (RESOURCE_EXHAUSTED).
    pub async fn put_file(
        self: &Arc<Self>,
        id: RecordId,
        path: FilePath,
        put: PutFile,
        mut chunks: impl Stream<Item = Result<Vec<u8>>> + Unpin,
    ) -> Result<FileMeta> {
        // Asked before a byte is taken (and again when it is recorded).
        self.admit(0, put.expected_size.unwrap_or(0).max(1) as u64)?;
        // Open for the whole put.
        let using = self.enter();
        let max_bytes = self.max_file_bytes;
        if let Some(n) = put.expected_size
            && (n < 0 || n as u64 > max_bytes)
        {
            return Err(Error::resource_exhausted(format!(
                "expected_size {n} is over the file limit of {max_bytes} bytes (--max-file-bytes)"
            )));
        }
        let area = self.files.clone();
        let rid = id.clone();
        // One blocking task hashes and writes while the next chunks arrive:
        // receiving and writing overlap, a few chunks apart.
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(PUT_QUEUE_CHUNKS);
        let writing = tokio::task::spawn_blocking(move || -> Result<BlobWriter> {
            let mut w = area.create(&rid)?;
            let mut unsynced = 0usize;
            for chunk in rx {
                w.write(&chunk)?;
                unsynced += chunk.len();
                if unsynced >= WRITEBACK_BYTES {
                    w.start_writeback();
                    unsynced = 0;
                }
            }
            Ok(w)
        });
        let mut size = 0u64;
        let received: Result<()> = async {
            while let Some(chunk) = chunks.next().await {
                let chunk = chunk?;
                size = size.saturating_add(chunk.len() as u64);
                if size > max_bytes {
                    return Err(Error::resource_exhausted(format!(
                        "the file is over the limit of {max_bytes} bytes (--max-file-bytes); nothing was changed"
                    )));
                }
                // Blocks only while the writer is PUT_QUEUE_CHUNKS behind.
                let mut pending = Some(chunk);
                while let Some(c) = pending.take() {
                    match tx.try_send(c) {
                        Ok(()) => {}
                        Err(std::sync::mpsc::TrySendError::Full(c)) => {
                            pending = Some(c);
                            tokio::time::sleep(std::time::Duration::from_micros(200)).await;
                        }
                        // The writer failed: its error is reported below.
                        Err(std::sync::mpsc::TrySendError::Disconnected(_)) => return Ok(()),
                    }
                }
            }
            Ok(())
        }
        .await;
        drop(tx);
        let written = writing
            .await
            .map_err(|e| Error::internal(format!("file task failed: {e}")))?;
        // A failed receive drops the writer, which removes its temporary.
        received?;
        let w = written?;
        // From here on the put runs to its end even if the caller goes: a
        // renamed blob is either recorded or removed.
        let this = self.clone();
        tokio::spawn(async move {
            let finished = {
                let put = put.clone();
                blocking(move || w.finish(&put)).await?
            };
            let name = finished.name.clone();
            let (tx, rx) = oneshot::channel();
            let sent = this.send(
                &using,
                Job::File(
                    FileOp::Put {
                        id: id.clone(),
                        path,
                        blob: finished,
                        put,
                    },
                    tx,
                ),
            );
            let out = match sent {
                Ok(()) => rx
                    .await
                    .map_err(|_| Error::internal("the writer dropped the request"))
                    .and_then(|r| r),
                Err(e) => Err(e),
            };
            if out.is_err() {
                let area = this.files.clone();
                let _ = blocking(move || {
                    area.remove(&[(id, name)]);
                    Ok(())
                })
                .await;
            }
            out
        })
        .await
        .map_err(|e| Error::internal(format!("put task failed: {e}")))?
    }

    /// The metadata of the file at `path` of record `id`.
    pub async fn stat_file(self: &Arc<Self>, id: RecordId, path: FilePath) -> Result<FileMeta> {
        self.read(Lane::Point, move |_, conn| {
            stat(conn, &id, &path).map(|(m, _)| m)
        })
        .await
    }

    /// Files of record `id` whose paths start with `prefix`, by path, after
    /// the page token.
    pub async fn list_files(
        self: &Arc<Self>,
        id: RecordId,
        prefix: String,
        page_size: usize,
        page_token: String,
    ) -> Result<FilePage> {
        self.read(Lane::Query, move |_, conn| {
            let limit = match page_size {
                0 => crate::limits::DEFAULT_PAGE_SIZE as usize,
                n => n.min(crate::limits::MAX_PAGE_SIZE as usize),
            };
            let mut st = conn.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM files WHERE record = ?1 AND path > ?2
                   AND substr(path, 1, length(?3)) = ?3 ORDER BY path LIMIT ?4"
            ))?;
            let rows = st.query_map(
                params![id.as_str(), page_token, prefix, limit as i64 + 1],
                row_meta,
            )?;
            let mut files = rows.collect::<rusqlite::Result<Vec<_>>>()?;
            let next_token = if files.len() > limit {
                files.truncate(limit);
                files.last().map(|f| f.path.clone()).unwrap_or_default()
            } else {
                String::new()
            };
            Ok(FilePage { files, next_token })
        })
        .await
    }

    /// Reads the file at `path` of record `id`: its metadata, and its bytes
    /// from `offset`, at most `len` of them (0: to the end), in chunks of
    /// `FILE_CHUNK_BYTES` read as the caller takes them.
    pub async fn get_file(
        self: &Arc<Self>,
        id: RecordId,
        path: FilePath,
        offset: i64,
        len: i64,
    ) -> Result<(FileMeta, Bytes)> {
        let (meta, blob) = self
            .read(Lane::Point, {
                let (id, path) = (id.clone(), path.clone());
                move |_, conn| stat(conn, &id, &path)
            })
            .await?;
        if offset < 0 || offset > meta.size_bytes || len < 0 {
            return Err(Error::invalid(format!(
                "range at byte {offset} of length {len} is outside the file's {} bytes",
                meta.size_bytes
            )));
        }
        let end = if len == 0 {
            meta.size_bytes
        } else {
            offset.saturating_add(len).min(meta.size_bytes)
        };
        let area = self.files.clone();
        let size = meta.size_bytes;
        let file = blocking(move || {
            let f = area.open(&id, &blob)?;
            let m = f.metadata()?;
            if !m.is_file() || m.len() as i64 != size {
                return Err(Error::data_loss(format!(
                    "the bytes of file {:?} on disk do not match its record ({} bytes recorded)",
                    path.as_str(),
                    size
                )));
            }
            Ok(f.into_std())
        })
        .await?;
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        tokio::spawn(async move {
            let mut file = Some(file);
            let mut at = offset;
            while at < end {
                let f = file.take().expect("the file");
                let n = (end - at).min(crate::limits::FILE_CHUNK_BYTES as i64);
                let read = blocking(move || {
                    let mut f = f;
                    f.seek(SeekFrom::Start(at as u64))?;
                    let mut buf = Vec::with_capacity(n as usize);
                    (&mut f).take(n as u64).read_to_end(&mut buf)?;
                    Ok((f, buf))
                })
                .await;
                let chunk = match read {
                    Ok((f, buf)) if buf.len() as i64 == n => {
                        file = Some(f);
                        Ok(buf)
                    }
                    Ok(_) => Err(Error::data_loss("the file ended early on disk")),
                    Err(e) => Err(e),
                };
                let failed = chunk.is_err();
                at += n;
                if tx.send(chunk).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok((
            meta,
            Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)),
        ))
    }

    /// Deletes the file at `path` of record `id` (and frees its bytes).
    pub async fn delete_file(
        self: &Arc<Self>,
        id: RecordId,
        path: FilePath,
        expected_version: Option<i64>,
    ) -> Result<FileMeta> {
        let (tx, rx) = oneshot::channel();
        let using = self.enter();
        self.send(
            &using,
            Job::File(
                FileOp::Delete {
                    id,
                    path,
                    expected_version,
                },
                tx,
            ),
        )?;
        rx.await
            .map_err(|_| Error::internal("the writer dropped the request"))?
    }
}

fn stat(conn: &Connection, id: &RecordId, path: &FilePath) -> Result<(FileMeta, String)> {
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS}, blob FROM files WHERE record = ? AND path = ?"
    ))?
    .query_row(params![id.as_str(), path.as_str()], |r| {
        Ok((row_meta(r)?, r.get::<_, String>(8)?))
    })
    .optional()?
    .ok_or_else(|| {
        Error::not_found(format!(
            "record {:?} has no file {:?}",
            crate::names::clip(id.as_str()),
            path.as_str()
        ))
    })
}
