//! At-most-once execution of named calls: a call with a request id runs
//! once on this node; a retry with the same id (a client's, or a forward
//! that was resent) waits for the first run and gets its outcome. Outcomes
//! are kept for `limits::REQUEST_LOG_RETAIN` (bounded in count and bytes), in memory only: a
//! node that restarts forgets them.

use crate::error::{Error, ErrorKind, Result};
use crate::handlers::{Cancel, Canceller};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::watch;
use tracing::Instrument;

use crate::limits::{REQUEST_LOG_BYTES, REQUEST_LOG_ENTRIES, REQUEST_LOG_RETAIN};

type Outcome = Result<Vec<u8>>;

enum Slot {
    Running(u64, watch::Receiver<Option<Outcome>>, Arc<Waiters>),
    Done(u64, Outcome),
}

/// The callers waiting for a running call; when the last one goes away,
/// the call is cancelled (it stops before committing anything).
struct Waiters {
    count: std::sync::atomic::AtomicUsize,
    canceller: Canceller,
}

/// One caller waiting for a running call.
struct Waiting(Arc<Waiters>);

impl Waiting {
    fn join(w: &Arc<Waiters>) -> Self {
        w.count.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Waiting(w.clone())
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if self
            .0
            .count
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel)
            == 1
        {
            self.0.canceller.cancel();
        }
    }
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
    /// (its writes commit or not as a whole, and a retry learns which); once
    /// every caller has gone, the `Cancel` handed to `work` fires, and a work
    /// that stops for it (CANCELLED: nothing applied) is forgotten, so a
    /// retry runs afresh.
    pub async fn run_once<F, W>(self: &Arc<Self>, id: &str, fingerprint: u64, work: W) -> Outcome
    where
        W: FnOnce(Cancel) -> F,
        F: Future<Output = Outcome> + Send + 'static,
    {
        let (mut rx, _waiting) = {
            let mut inner = self.inner.lock().expect("request log lock");
            inner.evict(Instant::now());
            match inner.slots.get(id) {
                Some(Slot::Running(fp, _, _) | Slot::Done(fp, _)) if *fp != fingerprint => {
                    return Err(Error::invalid(format!(
                        "request id {id:?} was already used for a different call; use a new id per call"
                    )));
                }
                Some(Slot::Done(_, outcome)) => return outcome.clone(),
                Some(Slot::Running(_, rx, waiters)) => (rx.clone(), Waiting::join(waiters)),
                None => {
                    let (tx, rx) = watch::channel(None);
                    let (canceller, cancel) = Cancel::new();
                    let waiters = Arc::new(Waiters {
                        count: Default::default(),
                        canceller,
                    });
                    let waiting = Waiting::join(&waiters);
                    inner.slots.insert(
                        id.to_string(),
                        Slot::Running(fingerprint, rx.clone(), waiters),
                    );
                    let work = work(cancel);
                    let (log, id) = (self.clone(), id.to_string());
                    // One task runs the work and records its outcome; if it
                    // panics, the guard records a failure instead, so the id
                    // does not stay "running" forever.
                    // In the caller's trace span: the work is the call's.
                    tokio::spawn(
                        async move {
                            let mut guard =
                                Unfinished(Some((log.clone(), id.clone(), fingerprint)));
                            let outcome = work.await;
                            guard.0 = None;
                            log.finish(&id, fingerprint, &outcome);
                            let _ = tx.send(Some(outcome));
                        }
                        .in_current_span(),
                    );
                    (rx, waiting)
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
        if !matches!(inner.slots.get(id), Some(Slot::Running(..))) {
            return;
        }
        // Forgotten, so a retry runs afresh: a cancelled call (nothing was
        // applied) and an aborted one (its writes lost a race, or only some
        // collections' committed: those skip the re-run's writes, see
        // `store::Collection::batch_of_call`).
        if outcome
            .as_ref()
            .is_err_and(|e| matches!(e.kind, ErrorKind::Cancelled | ErrorKind::Aborted))
        {
            inner.slots.remove(id);
        } else {
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
            log.run_once("r1", 7, |_| work(runs.clone())),
            log.run_once("r1", 7, |_| work(runs.clone()))
        );
        assert_eq!(a.unwrap(), vec![0]);
        assert_eq!(b.unwrap(), vec![0]);
        assert_eq!(
            log.run_once("r1", 7, |_| work(runs.clone())).await.unwrap(),
            vec![0]
        );
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        // Another id runs again; the same id for another call is refused.
        assert_eq!(
            log.run_once("r2", 7, |_| work(runs.clone())).await.unwrap(),
            vec![1]
        );
        let e = log
            .run_once("r1", 8, |_| work(runs.clone()))
            .await
            .unwrap_err();
        assert_eq!(e.kind, crate::error::ErrorKind::InvalidArgument);
        // Errors are outcomes too (but an aborted call may run again).
        let fail = async { Err(Error::not_found("no")) };
        assert!(log.run_once("r3", 1, |_| fail).await.is_err());
        let ok = async { Ok(vec![]) };
        assert!(log.run_once("r3", 1, |_| ok).await.is_err());
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
        let r =
            tokio::time::timeout(Duration::from_millis(10), log.run_once("r", 1, |_| work)).await;
        assert!(r.is_err(), "the caller timed out");
        let again = log
            .run_once("r", 1, |_| async { Ok(b"second run".to_vec()) })
            .await
            .unwrap();
        assert_eq!(again, b"finished");
        assert_eq!(done.load(Ordering::SeqCst), 1);
    }

    /// A work that stops when cancelled is cancelled once its last caller
    /// goes, and forgotten: a retry of the id runs again.
    #[tokio::test]
    async fn a_run_whose_callers_all_left_is_cancelled_and_forgotten() {
        let log = Arc::new(RequestLog::default());
        let work = |cancel: Cancel| async move {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(30)) => Ok(b"slept".to_vec()),
                _ = cancel.cancelled() => Err(Error::cancelled("stopped")),
            }
        };
        let t = Instant::now();
        let first = tokio::time::timeout(Duration::from_millis(20), log.run_once("c", 1, work));
        let second = tokio::time::timeout(Duration::from_millis(60), log.run_once("c", 1, work));
        let (a, b) = tokio::join!(first, second);
        assert!(a.is_err() && b.is_err(), "both callers gave up");
        // The run stops once the second caller leaves; a retry runs afresh
        // (one that joins before the stop lands hears CANCELLED).
        let mut again = Err(Error::internal("not tried"));
        for _ in 0..100 {
            again = log
                .run_once("c", 1, |_| async { Ok(b"again".to_vec()) })
                .await;
            match &again {
                Err(e) if e.kind == ErrorKind::Cancelled => {
                    tokio::time::sleep(Duration::from_millis(10)).await
                }
                _ => break,
            }
        }
        assert_eq!(again.unwrap(), b"again");
        assert!(t.elapsed() < Duration::from_secs(5));
    }
}
