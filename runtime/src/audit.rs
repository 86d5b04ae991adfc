//! The audit log, `system/audit`: who (key id) did what to which
//! namespace, and how it ended. Entries are written by one task fed by a
//! bounded queue, so recording never waits on SQLite and a flood of calls
//! cannot grow memory; refused calls are recorded at most
//! `limits::AUDIT_DENIED_PER_SECOND` a second, and the next entry written
//! counts the ones left out. The log keeps its newest `max_entries`: the
//! writer drops the oldest beyond that after every tenth of it written.

use crate::error::Result;
use crate::names::RecordId;
use crate::proto::AuditEntry;
use crate::store::{Collection, Labels, Query, WriteOp, codec};
use prost::Message;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use tokio::sync::mpsc;

/// Entries waiting to be written; beyond it they are counted, not kept.
const QUEUE: usize = 1024;

/// See the module doc.
pub struct Audit {
    tx: mpsc::Sender<AuditEntry>,
    node_id: String,
    /// Refusals recorded in the current second: (second start, count).
    window: Mutex<(Instant, u32)>,
    /// Entries left out (rate limit or a full queue) since the last written.
    unrecorded: AtomicU64,
}

impl Audit {
    /// Starts the writer task over `store` (`system/audit`), which keeps
    /// the newest `max_entries`.
    pub fn start(store: Arc<Collection>, node_id: String, max_entries: u64) -> Arc<Audit> {
        let (tx, mut rx) = mpsc::channel::<AuditEntry>(QUEUE);
        tokio::spawn(async move {
            let every = (max_entries / 10).max(1);
            let mut since_trim = every; // trim once at start
            loop {
                if since_trim >= every {
                    since_trim = 0;
                    match trim(&store, max_entries).await {
                        Ok(0) => {}
                        Ok(n) => tracing::debug!(removed = n, "oldest audit entries dropped"),
                        Err(e) => tracing::warn!(error = %e.message, "audit log not trimmed"),
                    }
                }
                let Some(entry) = rx.recv().await else { break };
                since_trim += 1;
                let written = match codec::decode(store.descriptor(), &entry.encode_to_vec())
                    .and_then(|m| codec::encode(&m))
                {
                    Ok(payload) => {
                        store
                            .write(WriteOp::Create {
                                id: None,
                                payload,
                                labels: Labels::new(),
                            })
                            .await
                    }
                    Err(e) => Err(e),
                };
                if let Err(e) = written {
                    tracing::warn!(error = %e.message, method = %entry.method, "audit entry not written");
                }
            }
        });
        Arc::new(Audit {
            tx,
            node_id,
            window: Mutex::new((Instant::now(), 0)),
            unrecorded: AtomicU64::new(0),
        })
    }

    /// Records an entry (never waits). `denied` entries are rate-limited.
    pub fn record(&self, mut entry: AuditEntry, denied: bool) {
        if denied {
            let mut w = self.window.lock().expect("audit lock");
            if w.0.elapsed().as_secs() >= 1 {
                *w = (Instant::now(), 0);
            }
            if w.1 >= crate::limits::AUDIT_DENIED_PER_SECOND {
                self.unrecorded.fetch_add(1, Ordering::Relaxed);
                return;
            }
            w.1 += 1;
        }
        entry.at_us = crate::util::now_us();
        entry.node_id = self.node_id.clone();
        entry.message = crate::names::clip(&entry.message).into_owned();
        entry.unrecorded_denials = self.unrecorded.swap(0, Ordering::Relaxed);
        if let Err(mpsc::error::TrySendError::Full(e) | mpsc::error::TrySendError::Closed(e)) =
            self.tx.try_send(entry)
        {
            self.unrecorded
                .fetch_add(1 + e.unrecorded_denials, Ordering::Relaxed);
        }
    }
}

/// Drops the oldest entries beyond `max`; how many went.
async fn trim(store: &Arc<Collection>, max: u64) -> Result<u64> {
    let total = u64::try_from(store.count(Query::default()).await?).unwrap_or(0);
    let mut left = total.saturating_sub(max);
    let mut removed = 0;
    while left > 0 {
        let page_size = left.min(u64::from(crate::limits::MAX_PAGE_SIZE)) as u32;
        // Insertion order: the oldest first.
        let (page, _) = store
            .search(
                Query {
                    page_size,
                    ..Default::default()
                },
                false,
            )
            .await?;
        if page.hits.is_empty() {
            break;
        }
        let ops = page
            .hits
            .iter()
            .map(|(r, _)| {
                Ok(WriteOp::Delete {
                    id: RecordId::new(&r.id)?,
                    expected_version: None,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let n = ops.len() as u64;
        store.batch(ops).await?;
        removed += n;
        left = left.saturating_sub(n);
    }
    Ok(removed)
}
