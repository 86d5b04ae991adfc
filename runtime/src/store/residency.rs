//! Which collections are open. A collection opens on its first read or
//! write (`Collection::enter`) and counts against a bound on open
//! collections (`--max-open-collections`): beyond it the least recently
//! used ones that nothing is using are closed, and one unused for
//! `--collection-idle-close` is closed by the closer thread, so a node's
//! cost follows the collections in use, not those it holds. Closing never
//! blocks the caller: the writer finishes and checkpoints on its own
//! thread, and caches and connections are dropped on the closer thread.

use super::collection::Collection;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

/// Milliseconds on a monotonic clock (since the first call).
pub fn clock() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// The open client collections of a node, and the bound on them.
pub struct Residency {
    max_open: usize,
    idle: Duration,
    open: Mutex<Vec<Weak<Collection>>>,
    /// What closing lets go of, dropped on the closer thread.
    dispose: Mutex<Sender<Box<dyn Send>>>,
}

impl Residency {
    /// At most `max_open` open at once (beyond it only while all are in
    /// use), each closed after `idle` unused; starts the closer thread.
    pub fn start(max_open: usize, idle: Duration) -> Arc<Self> {
        let (tx, rx) = std::sync::mpsc::channel();
        let me = Arc::new(Residency {
            max_open: max_open.max(1),
            idle,
            open: Mutex::new(Vec::new()),
            dispose: Mutex::new(tx),
        });
        let weak = Arc::downgrade(&me);
        let spawned = std::thread::Builder::new()
            .name("collection closer".into())
            .spawn(move || closer(weak, rx, idle));
        if let Err(e) = spawned {
            // Without it idle collections stay open until the bound closes them.
            tracing::warn!(error = %e, "cannot start the collection closer thread");
        }
        me
    }

    /// How many collections are open.
    pub fn open_count(&self) -> usize {
        let mut open = self.open.lock().expect("residency lock");
        open.retain(|w| w.strong_count() > 0);
        open.len()
    }

    fn disposer(&self) -> impl Fn(Box<dyn Send>) + '_ {
        move |b| {
            let _ = self.dispose.lock().expect("dispose lock").send(b);
        }
    }

    /// `c` just opened: counted, and the least recently used closed while
    /// over the bound (down to 15/16 of it, so evictions come in batches).
    pub(super) fn opened(&self, c: &Arc<Collection>) {
        let (victims, excess) = {
            let mut open = self.open.lock().expect("residency lock");
            open.push(Arc::downgrade(c));
            if open.len() <= self.max_open {
                return;
            }
            open.retain(|w| w.strong_count() > 0);
            let target = self.max_open - self.max_open / 16;
            let excess = open.len().saturating_sub(target);
            let mut victims: Vec<Arc<Collection>> = open
                .iter()
                .filter_map(Weak::upgrade)
                .filter(|v| !Arc::ptr_eq(v, c))
                .collect();
            victims.sort_by_key(|v| v.last_used());
            (victims, excess)
        };
        // Outside the lock: evicting takes each victim's own lock.
        let dispose = self.disposer();
        let mut closed = Vec::new();
        for v in victims {
            if closed.len() == excess {
                break;
            }
            if v.evict(&dispose) {
                closed.push(v);
            }
        }
        self.forget(&closed);
    }

    /// `c` closed (for good, or evicted).
    pub(super) fn closed(&self, c: &Collection) {
        self.open
            .lock()
            .expect("residency lock")
            .retain(|w| w.strong_count() > 0 && !std::ptr::eq(w.as_ptr(), c));
    }

    fn forget(&self, closed: &[Arc<Collection>]) {
        if closed.is_empty() {
            return;
        }
        self.open.lock().expect("residency lock").retain(|w| {
            w.strong_count() > 0 && !closed.iter().any(|c| std::ptr::eq(w.as_ptr(), &**c))
        });
    }

    /// Closes those unused for the idle time.
    fn close_idle(&self) {
        let now = clock();
        let idle_ms = self.idle.as_millis() as u64;
        let stale: Vec<Arc<Collection>> = self
            .open
            .lock()
            .expect("residency lock")
            .iter()
            .filter_map(Weak::upgrade)
            .filter(|c| now.saturating_sub(c.last_used()) >= idle_ms)
            .collect();
        let dispose = self.disposer();
        let closed: Vec<_> = stale.into_iter().filter(|c| c.evict(&dispose)).collect();
        if !closed.is_empty() {
            tracing::debug!(closed = closed.len(), "idle collections closed");
        }
        self.forget(&closed);
    }
}

/// Drops what closing let go of, and closes idle collections every tick.
fn closer(residency: Weak<Residency>, rx: Receiver<Box<dyn Send>>, idle: Duration) {
    let tick = (idle / 4).clamp(Duration::from_millis(10), Duration::from_secs(5));
    let mut next = Instant::now() + tick;
    loop {
        match rx.recv_timeout(next.saturating_duration_since(Instant::now())) {
            Ok(item) => drop(item),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        if Instant::now() >= next {
            let Some(r) = residency.upgrade() else { return };
            r.close_idle();
            next = Instant::now() + tick;
        }
    }
}
