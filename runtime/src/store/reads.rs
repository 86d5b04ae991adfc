//! Reads on a reader connection: one record row, a page of a planned query,
//! a count. They run on the reader threads (`readers`), never the executor.

use super::query::Plan;
use super::record::{Page, Record};
use crate::error::{Error, ErrorKind, Result};
use crate::limits::MAX_PAGE_BYTES;
use rusqlite::Connection;

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
