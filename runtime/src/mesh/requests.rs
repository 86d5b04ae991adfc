//! At-most-once execution of named calls: a call with a request id runs
//! once on this node; a retry with the same id (a client's, or a forward
//! that was resent) waits for the first run and gets its outcome. Outcomes
//! are kept for `limits::REQUEST_LOG_RETAIN` (bounded in count and bytes), in memory only: a
//! node that restarts forgets them.

use crate::error::{Error, Result};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::watch;

use crate::limits::{REQUEST_LOG_BYTES, REQUEST_LOG_ENTRIES, REQUEST_LOG_RETAIN};

type Outcome = Result<Vec<u8>>;

enum Slot {
    Running(u64, watch::Receiver<Option<Outcome>>),
    Done(u64, Outcome),
}

#[derive(Default)]
struct Inner {
    slots: HashMap<String, Slot>,
    /// Finished ids, oldest first, with when they finished and their size.
    finished: VecDeque<(Instant, String, usize)>,
    bytes: usize,
}

impl Inner {
    fn evict(&mut self, now: Instant) {
        while let Some((at, _, _)) = self.finished.front() {
            let full = self.finished.len() > REQUEST_LOG_ENTRIES || self.bytes > REQUEST_LOG_BYTES;
            if !full && now.duration_since(*at) < REQUEST_LOG_RETAIN {
                break;
            }
            let (_, id, size) = self.finished.pop_front().expect("front exists");
            self.bytes -= size;
            self.slots.remove(&id);
        }
    }
}

/// Records a failure for a call whose task ended without an outcome.
struct Unfinished(Option<(Arc<RequestLog>, String, u64)>);

impl Drop for Unfinished {
    fn drop(&mut self) {
        if let Some((log, id, fingerprint)) = self.0.take() {
            log.finish(
                &id,
                fingerprint,
                &Err(Error::internal("the call's task failed before it finished")),
            );
        }
    }
}

/// The log of named calls on this node.
#[derive(Default)]
pub struct RequestLog {
    inner: Mutex<Inner>,
}

impl RequestLog {
    /// Runs `work` once for `id`. `fingerprint` identifies the call (method and
    /// input): reusing an id for a different call is refused. The work runs on
    /// its own task, so a caller that gives up does not cut it short half-way
    /// (its writes commit or not as a whole, and a retry learns which).
    pub async fn run_once<F>(self: &Arc<Self>, id: &str, fingerprint: u64, work: F) -> Outcome
    where
        F: Future<Output = Outcome> + Send + 'static,
    {
        let mut rx = {
            let mut inner = self.inner.lock().expect("request log lock");
            inner.evict(Instant::now());
            match inner.slots.get(id) {
                Some(Slot::Running(fp, _) | Slot::Done(fp, _)) if *fp != fingerprint => {
                    return Err(Error::invalid(format!(
                        "request id {id:?} was already used for a different call; use a new id per call"
                    )));
                }
                Some(Slot::Done(_, outcome)) => return outcome.clone(),
                Some(Slot::Running(_, rx)) => rx.clone(),
                None => {
                    let (tx, rx) = watch::channel(None);
                    inner
                        .slots
                        .insert(id.to_string(), Slot::Running(fingerprint, rx.clone()));
                    let (log, id) = (self.clone(), id.to_string());
                    // One task runs the work and records its outcome; if it
                    // panics, the guard records a failure instead, so the id
                    // does not stay "running" forever.
                    tokio::spawn(async move {
                        let mut guard = Unfinished(Some((log.clone(), id.clone(), fingerprint)));
                        let outcome = work.await;
                        guard.0 = None;
                        log.finish(&id, fingerprint, &outcome);
                        let _ = tx.send(Some(outcome));
                    });
                    rx
                }
            }
        };
        match rx.wait_for(|o| o.is_some()).await {
            Ok(o) => o.clone().expect("waited for Some"),
            Err(_) => Err(Error::internal("the call's task ended without an outcome")),
        }
    }

    fn finish(&self, id: &str, fingerprint: u64, outcome: &Outcome) {
        let mut inner = self.inner.lock().expect("request log lock");
        if matches!(inner.slots.get(id), Some(Slot::Running(..))) {
            let size = outcome.as_ref().map(|o| o.len()).unwrap_or(0) + id.len();
            inner
                .slots
                .insert(id.to_string(), Slot::Done(fingerprint, outcome.clone()));
            inner
                .finished
                .push_back((Instant::now(), id.to_string(), size));
            inner.bytes += size;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn a_retried_id_runs_once_and_gets_the_first_outcome() {
        let log = Arc::new(RequestLog::default());
        let runs = Arc::new(AtomicU32::new(0));
        let work = |runs: Arc<AtomicU32>| async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok(vec![runs.fetch_add(1, Ordering::SeqCst) as u8])
        };
        // Concurrent and later retries share the one run.
        let (a, b) = tokio::join!(
            log.run_once("r1", 7, work(runs.clone())),
            log.run_once("r1", 7, work(runs.clone()))
        );
        assert_eq!(a.unwrap(), vec![0]);
        assert_eq!(b.unwrap(), vec![0]);
        assert_eq!(
            log.run_once("r1", 7, work(runs.clone())).await.unwrap(),
            vec![0]
        );
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        // Another id runs again; the same id for another call is refused.
        assert_eq!(
            log.run_once("r2", 7, work(runs.clone())).await.unwrap(),
            vec![1]
        );
        let e = log.run_once("r1", 8, work(runs.clone())).await.unwrap_err();
        assert_eq!(e.kind, crate::error::ErrorKind::InvalidArgument);
        // Errors are outcomes too.
        let fail = async { Err(Error::aborted("no")) };
        assert!(log.run_once("r3", 1, fail).await.is_err());
        let ok = async { Ok(vec![]) };
        assert!(log.run_once("r3", 1, ok).await.is_err());
    }

    #[tokio::test]
    async fn a_caller_that_gives_up_does_not_cut_the_run_short() {
        let log = Arc::new(RequestLog::default());
        let done = Arc::new(AtomicU32::new(0));
        let d = done.clone();
        let work = async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            d.fetch_add(1, Ordering::SeqCst);
            Ok(b"finished".to_vec())
        };
        let r = tokio::time::timeout(Duration::from_millis(10), log.run_once("r", 1, work)).await;
        assert!(r.is_err(), "the caller timed out");
        let again = log
            .run_once("r", 1, async { Ok(b"second run".to_vec()) })
            .await
            .unwrap();
        assert_eq!(again, b"finished");
        assert_eq!(done.load(Ordering::SeqCst), 1);
    }
}
