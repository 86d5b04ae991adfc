//! Fixed pools of threads for SQLite reads, one per lane: point reads (a
//! record by id, stats) never queue behind queries, which can take up to
//! their time budget. Unlike tokio's blocking pool, which may wake a new
//! thread per call, a few threads drain each queue and stay busy under
//! load, so a read costs no thread hand-off beyond the queue.

use crate::error::{Error, Result};
use std::sync::OnceLock;

/// A read to run off the async executor.
pub type Job = Box<dyn FnOnce() + Send + 'static>;

/// Which pool a read runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// Short reads by key.
    Point,
    /// Searches and counts, bounded by `limits::QUERY_TIMEOUT`.
    Query,
}

fn start(name: &str, threads: usize) -> crossbeam_channel::Sender<Job> {
    let (tx, rx) = crossbeam_channel::unbounded::<Job>();
    for i in 0..threads {
        let rx = rx.clone();
        std::thread::Builder::new()
            .name(format!("sqlite-{name}-{i}"))
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    job();
                }
            })
            .expect("spawn reader thread");
    }
    tx
}

fn queue(lane: Lane) -> &'static crossbeam_channel::Sender<Job> {
    static POINT: OnceLock<crossbeam_channel::Sender<Job>> = OnceLock::new();
    static QUERY: OnceLock<crossbeam_channel::Sender<Job>> = OnceLock::new();
    let threads = || {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
            .max(2)
            * crate::limits::READER_THREADS_PER_CORE
    };
    match lane {
        Lane::Point => POINT.get_or_init(|| start("get", threads())),
        Lane::Query => QUERY.get_or_init(|| start("query", threads())),
    }
}

/// Queues a read job on a lane.
pub fn submit(lane: Lane, job: Job) -> Result<()> {
    queue(lane)
        .send(job)
        .map_err(|_| Error::internal("reader threads have stopped"))
}
