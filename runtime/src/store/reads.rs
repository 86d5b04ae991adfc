//! A collection's reads: `Collection::read` runs each on the reader threads
//! (`readers`), never the executor, within the query budget; and what they
//! do on a reader connection: one record row, a page of a planned query, a
//! count.

use super::collection::{Collection, Stats, disk_bytes};
use super::query::{self, Plan, Query};
use super::readers::Lane;
use super::record::{Page, Record};
use super::schema::open_reader;
use crate::error::{Error, ErrorKind, Result};
use crate::limits::{MAX_PAGE_BYTES, POOLED_READERS};
use crate::names::RecordId;
use prost_reflect::DynamicMessage;
use rusqlite::{Connection, OptionalExtension};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;
use tokio::sync::oneshot;
use tracing::Instrument;

/// FTS5 reports query syntax errors as SQL errors: they are the caller's to fix.
pub(super) fn fts_error(e: Error, has_text: bool) -> Error {
    if has_text
        && e.kind == ErrorKind::Internal
        && e.message.starts_with(crate::error::SQL_ERROR_PREFIX)
    {
        let detail = e.message.trim_start_matches(crate::error::SQL_ERROR_PREFIX);
        return Error::invalid(format!(
            "query is not valid FTS5 syntax ({detail}); quote terms with \"…\" to match them literally"
        ));
    }
    e
}

pub(super) fn row_record(r: &rusqlite::Row<'_>) -> rusqlite::Result<Record> {
    let labels: String = r.get(3)?;
    Ok(Record {
        id: r.get(0)?,
        data: r.get(1)?,
        json: r.get(2)?,
        labels: serde_json::from_str(&labels).unwrap_or_default(),
        version: r.get(4)?,
        created_us: r.get(5)?,
        updated_us: r.get(6)?,
    })
}

pub(super) fn run_page(conn: &Connection, plan: &Plan) -> Result<Page> {
    let mut st = conn.prepare_cached(&plan.select)?;
    let mut rows = st.query(rusqlite::params_from_iter(plan.select_params.iter()))?;
    let mut hits = Vec::new();
    let mut last: Option<(rusqlite::types::Value, i64)> = None;
    let mut more = false;
    let mut bytes = 0;
    while let Some(row) = rows.next()? {
        if hits.len() == plan.page_size as usize || bytes >= MAX_PAGE_BYTES {
            more = true;
            break;
        }
        let rid: i64 = row.get(0)?;
        let rec = Record {
            id: row.get(1)?,
            data: row.get(2)?,
            json: row.get(3)?,
            labels: serde_json::from_str(&row.get::<_, String>(4)?).unwrap_or_default(),
            version: row.get(5)?,
            created_us: row.get(6)?,
            updated_us: row.get(7)?,
        };
        // A page ends once it holds `MAX_PAGE_BYTES`, so the next record
        // would make the reply too big: it starts the next page.
        if !hits.is_empty() && bytes + rec.data.len() + rec.json.len() > MAX_PAGE_BYTES {
            more = true;
            break;
        }
        bytes += rec.data.len() + rec.json.len();
        let score: f64 = row.get(8)?;
        last = Some((row.get(9)?, rid));
        hits.push((rec, score));
    }
    let next_token = match (more, last) {
        (true, Some((k, rid))) => plan.token_after(&k, rid),
        _ => String::new(),
    };
    Ok(Page { hits, next_token })
}

pub(super) fn run_count(conn: &Connection, plan: &Plan) -> Result<i64> {
    let mut st = conn.prepare_cached(&plan.count)?;
    Ok(
        st.query_row(rusqlite::params_from_iter(plan.count_params.iter()), |r| {
            r.get(0)
        })?,
    )
}

impl Collection {
    /// Runs `f` with a read connection on the reader threads of `lane`. A
    /// query lane read is stopped inside SQLite (progress handler) once it
    /// has run `QUERY_TIMEOUT`, or as soon as its caller stops waiting; one
    /// whose caller left while it queued does not start.
    pub(super) async fn read<T: Send + 'static>(
        self: &Arc<Self>,
        lane: Lane,
        f: impl FnOnce(&Collection, &Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let this = self.clone();
        let (tx, rx) = oneshot::channel();
        let gone = Arc::new(AtomicBool::new(false));
        let _left = CallerGone(gone.clone());
        // Held by the job, so the collection stays open until it is done
        // (its caller may stop waiting sooner).
        let using = self.enter();
        super::readers::submit(
            lane,
            Box::new(move || {
                let _using = using;
                if gone.load(Ordering::Acquire) {
                    return;
                }
                let run = || {
                    let conn = this.readers.lock().expect("readers lock").pop();
                    let mut conn = match conn {
                        Some(c) => c,
                        None => open_reader(&this.path)?,
                    };
                    let timed = lane == Lane::Query;
                    if timed {
                        let until = Instant::now() + this.query_timeout;
                        let gone = gone.clone();
                        conn.progress_handler(
                            PROGRESS_OPS,
                            Some(move || gone.load(Ordering::Acquire) || Instant::now() >= until),
                        )?;
                    }
                    let out = f(&this, &conn);
                    if timed {
                        conn.progress_handler(0, None::<fn() -> bool>)?;
                    }
                    let mut pool = this.readers.lock().expect("readers lock");
                    if pool.len() < POOLED_READERS {
                        pool.push(conn);
                    }
                    out.map_err(|e| interrupted(e, &gone, this.query_timeout))
                };
                let _ = tx.send(run());
            }),
        )?;
        rx.instrument(self.span("sqlite.read"))
            .await
            .map_err(|_| Error::internal("a reader thread dropped the request"))?
    }

    /// Reads one record (from the record cache when it holds it).
    pub async fn get(self: &Arc<Self>, id: RecordId) -> Result<Arc<Record>> {
        let using = self.enter();
        if let Some(r) = using.cache.get(id.as_str()) {
            return Ok(r);
        }
        let token = using.cache.before_read();
        let rec = self
            .read(Lane::Point, move |c, conn| {
                let mut st = conn.prepare_cached(
                    "SELECT id, data, json, labels, version, created, updated FROM records WHERE id = ?",
                )?;
                st.query_row([id.as_str()], row_record).optional()?.ok_or_else(|| {
                    Error::not_found(format!("record {:?} not found in {}/{}", id.as_str(), c.namespace, c.name))
                })
            })
            .await?;
        let rec = Arc::new(rec);
        using.cache.fill(token, rec.clone());
        Ok(rec)
    }

    /// Runs a query: one page, and the total count when asked.
    pub async fn search(
        self: &Arc<Self>,
        q: Query,
        with_total: bool,
    ) -> Result<(Page, Option<i64>)> {
        let plan = query::plan(&self.desc, &q)?;
        let has_text = !q.text.trim().is_empty();
        self.read(Lane::Query, move |_, conn| {
            let page = run_page(conn, &plan).map_err(|e| fts_error(e, has_text))?;
            let total = if with_total {
                Some(run_count(conn, &plan).map_err(|e| fts_error(e, has_text))?)
            } else {
                None
            };
            Ok((page, total))
        })
        .await
    }

    /// Reads every record in insertion order, page by page, handing each to
    /// `f` with its payload decoded (how the node loads its `system`
    /// collections at start).
    pub async fn scan(
        self: &Arc<Self>,
        mut f: impl FnMut(&Record, DynamicMessage) -> Result<()>,
    ) -> Result<()> {
        let mut token = String::new();
        loop {
            let q = Query {
                page_size: crate::limits::MAX_PAGE_SIZE,
                page_token: token,
                ..Default::default()
            };
            let (page, _) = self.search(q, false).await?;
            for (rec, _) in &page.hits {
                f(rec, super::codec::decode(&self.desc, &rec.data)?)?;
            }
            if page.next_token.is_empty() {
                return Ok(());
            }
            token = page.next_token;
        }
    }

    /// Counts the records a query selects.
    pub async fn count(self: &Arc<Self>, q: Query) -> Result<i64> {
        let plan = query::plan(&self.desc, &q)?;
        let has_text = !q.text.trim().is_empty();
        self.read(Lane::Query, move |_, conn| {
            run_count(conn, &plan).map_err(|e| fts_error(e, has_text))
        })
        .await
    }

    /// Records, bytes on disk (database and WAL) and attached files.
    pub async fn stats(self: &Arc<Self>) -> Result<Stats> {
        self.read(Lane::Point, |c, conn| {
            let records: i64 = conn.query_row("SELECT count(*) FROM records", [], |r| r.get(0))?;
            let (files, file_bytes) = conn.query_row(
                "SELECT count(*), coalesce(sum(size), 0) FROM files",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            let size_bytes = disk_bytes(&c.path) as i64;
            Ok(Stats {
                records,
                size_bytes,
                files,
                file_bytes,
            })
        })
        .await
    }

    /// Bytes the collection holds for its storage quota: the SQLite pages
    /// in use (free pages left by deletes do not count, so deleting frees
    /// quota) and its attached files. The WAL is transient and left out.
    pub async fn used_bytes(self: &Arc<Self>) -> Result<u64> {
        if let Some(n) = *self.measured.lock().expect("measured lock") {
            return Ok(n);
        }
        let this = self.clone();
        // Kept only if no write was in flight when the read began and none
        // was sent before it ended.
        let writes = self.writes.load(Ordering::Acquire);
        let settled = self.pending.load(Ordering::Acquire) == 0;
        self.read(Lane::Point, move |_, conn| {
            let pragma = |name: &str| -> rusqlite::Result<i64> {
                conn.query_row(&format!("PRAGMA {name}"), [], |r| r.get(0))
            };
            let pages = pragma("page_count")? - pragma("freelist_count")?;
            let page_size = pragma("page_size")?;
            let files: i64 =
                conn.query_row("SELECT coalesce(sum(size), 0) FROM files", [], |r| r.get(0))?;
            let n = (pages.max(0) * page_size + files.max(0)) as u64;
            let mut m = this.measured.lock().expect("measured lock");
            if settled && this.writes.load(Ordering::Acquire) == writes {
                *m = Some(n);
            }
            Ok(n)
        })
        .await
    }

    /// The query plan SQLite picks for a query (for tests and diagnostics).
    pub async fn explain(self: &Arc<Self>, q: Query) -> Result<String> {
        let plan = query::plan(&self.desc, &q)?;
        self.read(Lane::Query, move |_, conn| {
            let mut st = conn.prepare(&format!("EXPLAIN QUERY PLAN {}", plan.select))?;
            let rows = st
                .query_map(rusqlite::params_from_iter(plan.select_params.iter()), |r| {
                    r.get::<_, String>(3)
                })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?.join("\n"))
        })
        .await
    }
}

/// SQLite VM steps between checks of a query's budget: a check costs a
/// clock read; this many steps take well under a millisecond.
const PROGRESS_OPS: i32 = 10_000;

/// Tells a queued or running read that its caller stopped waiting.
struct CallerGone(Arc<AtomicBool>);

impl Drop for CallerGone {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// A read the progress handler stopped, as the caller should see it.
fn interrupted(e: Error, gone: &AtomicBool, budget: std::time::Duration) -> Error {
    if e.kind != ErrorKind::DeadlineExceeded {
        return e;
    }
    if gone.load(Ordering::Acquire) {
        return Error::cancelled("the caller went away; the query was stopped");
    }
    Error::deadline_exceeded(format!(
        "the query ran longer than its budget of {budget:?} (--query-timeout) and was stopped: narrow it (filters on indexed fields, fewer or more selective search terms)"
    ))
}
