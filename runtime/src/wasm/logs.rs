//! What guests log (the WIT `log` interface): each line goes to `tracing`
//! with its namespace, service and method, and into a bounded ring per
//! namespace that the console and `collector logs` read, newest first.
//!
//! A ring holds at most `limits::HANDLER_LOG_BYTES` of messages (the oldest
//! lines go first) and a line at most `limits::MAX_HANDLER_LOG_LINE` bytes
//! (cut at a character boundary), so a chatty guest costs bounded memory.

use crate::limits::{HANDLER_LOG_BYTES, MAX_HANDLER_LOG_LINE};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

/// How serious a line is, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Fine detail.
    Trace,
    /// For whoever debugs the handler.
    Debug,
    /// Normal operation.
    Info,
    /// Something looks wrong.
    Warn,
    /// Something failed.
    Error,
}

impl Level {
    /// Every level, lowest first.
    pub const ALL: [Level; 5] = [
        Level::Trace,
        Level::Debug,
        Level::Info,
        Level::Warn,
        Level::Error,
    ];

    /// Its lower-case name (`info`, …).
    pub fn name(self) -> &'static str {
        match self {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }

    /// The level named `s` (any case).
    pub fn parse(s: &str) -> Option<Level> {
        Level::ALL
            .into_iter()
            .find(|l| l.name().eq_ignore_ascii_case(s))
    }
}

/// One line a guest logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// Its place in the namespace's ring (grows by one a line): the cursor
    /// for the next page.
    pub seq: u64,
    /// When, in microseconds since the Unix epoch.
    pub time_us: i64,
    /// How serious.
    pub level: Level,
    /// The handler's service and method.
    pub service: String,
    /// The method that was called.
    pub method: String,
    /// What it said (cut to `MAX_HANDLER_LOG_LINE` bytes).
    pub message: String,
}

impl LogLine {
    fn cost(&self) -> usize {
        self.message.len() + self.service.len() + self.method.len() + 64
    }
}

/// Which lines to read.
#[derive(Debug, Clone)]
pub struct LogQuery {
    /// Only this service's ("" for every service).
    pub service: String,
    /// Only lines at least this serious.
    pub min_level: Level,
    /// Only lines before this one (a `seq`; 0 for the newest): the next page.
    pub before: u64,
    /// At most this many.
    pub limit: usize,
}

#[derive(Default)]
struct Ring {
    lines: VecDeque<Arc<LogLine>>,
    bytes: usize,
    next: u64,
}

/// Every namespace's ring.
#[derive(Default)]
pub struct GuestLogs {
    rings: Mutex<HashMap<String, Ring>>,
}

impl GuestLogs {
    /// Logs `message` to `tracing` and keeps it in `namespace`'s ring.
    pub fn record(
        &self,
        namespace: &str,
        service: &str,
        method: &str,
        level: Level,
        message: &str,
    ) {
        match level {
            Level::Trace => tracing::trace!(namespace, service, method, "{message}"),
            Level::Debug => tracing::debug!(namespace, service, method, "{message}"),
            Level::Info => tracing::info!(namespace, service, method, "{message}"),
            Level::Warn => tracing::warn!(namespace, service, method, "{message}"),
            Level::Error => tracing::error!(namespace, service, method, "{message}"),
        }
        let mut cut = message.len().min(MAX_HANDLER_LOG_LINE);
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        let mut line = LogLine {
            seq: 0,
            time_us: crate::util::now_us(),
            level,
            service: service.to_string(),
            method: method.to_string(),
            message: message[..cut].to_string(),
        };
        let mut rings = self.rings.lock().expect("guest logs lock");
        let ring = match rings.get_mut(namespace) {
            Some(r) => r,
            None => rings.entry(namespace.to_string()).or_default(),
        };
        ring.next += 1;
        line.seq = ring.next;
        let line = Arc::new(line);
        ring.bytes += line.cost();
        ring.lines.push_back(line);
        while ring.bytes > HANDLER_LOG_BYTES {
            match ring.lines.pop_front() {
                Some(old) => ring.bytes -= old.cost(),
                None => break,
            }
        }
    }

    /// `namespace`'s lines that `q` asks for, newest first.
    pub fn read(&self, namespace: &str, q: &LogQuery) -> Vec<Arc<LogLine>> {
        let rings = self.rings.lock().expect("guest logs lock");
        let Some(ring) = rings.get(namespace) else {
            return Vec::new();
        };
        ring.lines
            .iter()
            .rev()
            .filter(|l| q.before == 0 || l.seq < q.before)
            .filter(|l| l.level >= q.min_level)
            .filter(|l| q.service.is_empty() || l.service == q.service)
            .take(q.limit)
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(limit: usize) -> LogQuery {
        LogQuery {
            service: String::new(),
            min_level: Level::Trace,
            before: 0,
            limit,
        }
    }

    #[test]
    fn a_ring_keeps_the_newest_lines_within_its_bytes() {
        let logs = GuestLogs::default();
        let big = "x".repeat(MAX_HANDLER_LOG_LINE * 2);
        let n = 2 * HANDLER_LOG_BYTES / MAX_HANDLER_LOG_LINE;
        for i in 0..n {
            logs.record("ns", "s.S", "M", Level::Info, &format!("{i} {big}"));
        }
        let kept = logs.read("ns", &all(usize::MAX));
        assert!(kept.len() < n && !kept.is_empty());
        let bytes: usize = kept.iter().map(|l| l.cost()).sum();
        assert!(bytes <= HANDLER_LOG_BYTES, "{bytes}");
        assert!(kept.iter().all(|l| l.message.len() == MAX_HANDLER_LOG_LINE));
        assert!(
            kept[0].message.starts_with(&format!("{} ", n - 1)),
            "newest first"
        );
        assert!(logs.read("other", &all(10)).is_empty(), "namespaces apart");
    }

    #[test]
    fn lines_are_cut_at_a_character_boundary_and_filtered() {
        let logs = GuestLogs::default();
        logs.record(
            "ns",
            "a.A",
            "M",
            Level::Debug,
            &"é".repeat(MAX_HANDLER_LOG_LINE),
        );
        logs.record("ns", "b.B", "M", Level::Warn, "careful");
        logs.record("ns", "a.A", "N", Level::Error, "broken");
        let kept = logs.read("ns", &all(10));
        assert!(kept[2].message.len() <= MAX_HANDLER_LOG_LINE);
        assert!(kept[2].message.chars().all(|c| c == 'é'));
        let q = LogQuery {
            service: "a.A".into(),
            min_level: Level::Warn,
            ..all(10)
        };
        let got: Vec<_> = logs
            .read("ns", &q)
            .iter()
            .map(|l| l.message.clone())
            .collect();
        assert_eq!(got, ["broken"]);
        let q = LogQuery {
            before: kept[0].seq,
            ..all(1)
        };
        assert_eq!(logs.read("ns", &q)[0].message, "careful", "the next page");
        assert_eq!(Level::parse("WARN"), Some(Level::Warn));
    }
}
