//! A collection's SQLite file: its tables, how its writer and reader
//! connections are opened, and its expression indexes. The on-disk format
//! lives here and nowhere else.
//!
//! A record row holds the id, the proto bytes, the canonical JSON (for
//! filters and indexes), the labels as JSON, the version and the created and
//! updated times; `labels` repeats the labels for label filters, and
//! `records_fts` is a contentless FTS5 index over the JSON's text values.
//! `applied_calls` names the handler calls (by request id) whose writes a
//! batch applied, in that batch's transaction, so a re-run of the call
//! skips this collection (kept `APPLIED_CALLS_RETAIN`). `files` describes
//! the files attached to records (`files`: path, size, hash, version, and
//! the blob holding the bytes).

use super::query;
use crate::error::Result;
use crate::limits::SQLITE_BUSY_TIMEOUT;
use prost_reflect::MessageDescriptor;
use rusqlite::{Connection, OpenFlags};
use std::path::Path;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS records(
  rid INTEGER PRIMARY KEY,
  id TEXT NOT NULL UNIQUE,
  data BLOB NOT NULL,
  json TEXT NOT NULL,
  labels TEXT NOT NULL,
  version INTEGER NOT NULL,
  created INTEGER NOT NULL,
  updated INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS records_created ON records(created, rid);
CREATE INDEX IF NOT EXISTS records_updated ON records(updated, rid);
CREATE TABLE IF NOT EXISTS labels(
  rid INTEGER NOT NULL,
  key TEXT NOT NULL,
  value TEXT NOT NULL,
  PRIMARY KEY(rid, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS labels_kv ON labels(key, value, rid);
CREATE VIRTUAL TABLE IF NOT EXISTS records_fts USING fts5(body, content='', contentless_delete=1);
CREATE TABLE IF NOT EXISTS applied_calls(
  call TEXT PRIMARY KEY,
  at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS applied_calls_at ON applied_calls(at);
CREATE TABLE IF NOT EXISTS files(
  record TEXT NOT NULL,
  path TEXT NOT NULL,
  blob TEXT NOT NULL,
  size INTEGER NOT NULL,
  blake3 TEXT NOT NULL,
  content_type TEXT NOT NULL,
  version INTEGER NOT NULL,
  created INTEGER NOT NULL,
  updated INTEGER NOT NULL,
  PRIMARY KEY(record, path)
) WITHOUT ROWID;
";

pub(super) fn open_writer(path: &Path, sync_full: bool) -> Result<Connection> {
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(
        None,
        "synchronous",
        if sync_full { "FULL" } else { "NORMAL" },
    )?;
    conn.busy_timeout(SQLITE_BUSY_TIMEOUT)?;
    // One transaction: a new file's tables cost one sync, not one each.
    conn.execute_batch(&format!("BEGIN;{SCHEMA}COMMIT;"))?;
    Ok(conn)
}

pub(super) fn open_reader(path: &Path) -> Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI,
    )?;
    conn.busy_timeout(SQLITE_BUSY_TIMEOUT)?;
    Ok(conn)
}

/// Index name for a field path (paths are checked identifiers joined by dots).
fn index_name(path: &str) -> String {
    format!("idx_{}", path.replace('.', "__"))
}

/// Drops the indexes on `paths` (those that exist).
pub(super) fn drop_indexes(conn: &Connection, paths: &[String]) -> Result<()> {
    for p in paths {
        conn.execute_batch(&format!("DROP INDEX IF EXISTS {}", index_name(p)))?;
    }
    Ok(())
}

pub(super) fn create_indexes(
    conn: &Connection,
    desc: &MessageDescriptor,
    paths: &[String],
) -> Result<()> {
    for p in paths {
        let expr = query::order_expr(desc, p).map_err(|e| e.context("indexes"))?;
        let expr = expr.replace("r.json", "json");
        conn.execute_batch(&format!(
            "CREATE INDEX IF NOT EXISTS {} ON records({expr}, rid)",
            index_name(p)
        ))?;
    }
    Ok(())
}
