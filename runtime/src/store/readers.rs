//! A fixed pool of threads for SQLite reads. Unlike tokio's blocking pool,
//! which may wake a new thread per call, a few threads drain one queue and
//! stay busy under load, so a read costs no thread hand-off beyond the queue.

use crate::error::{Error, Result};
use std::sync::OnceLock;

/// A read to run off the async executor.
pub type Job = Box<dyn FnOnce() + Send + 'static>;

fn queue() -> &'static crossbeam_channel::Sender<Job> {
    static QUEUE: OnceLock<crossbeam_channel::Sender<Job>> = OnceLock::new();
    QUEUE.get_or_init(|| {
        let (tx, rx) = crossbeam_channel::unbounded::<Job>();
        // Enough threads that a slow query does not hold up point reads.
        let n = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
            .max(2)
            * crate::limits::READER_THREADS_PER_CORE;
        for i in 0..n {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("sqlite-reader-{i}"))
                .spawn(move || {
                    while let Ok(job) = rx.recv() {
                        job();
                    }
                })
                .expect("spawn reader thread");
        }
        tx
    })
}

/// Queues a read job.
pub fn submit(job: Job) -> Result<()> {
    queue()
        .send(job)
        .map_err(|_| Error::internal("reader threads have stopped"))
}
