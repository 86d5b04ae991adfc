//! What a node says about itself (`CollectionRepo.Meta`, `collector info`).

use std::path::{Path, PathBuf};

/// Facts about the running node fixed at its start.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    /// The node's release (the crate version).
    pub version: &'static str,
    /// When the node started, in µs since the epoch.
    pub started_us: i64,
    /// The data dir, canonical.
    pub data_dir: PathBuf,
}

impl NodeInfo {
    /// A node starting now on `data_dir`.
    pub fn starting(data_dir: PathBuf) -> Self {
        NodeInfo {
            version: env!("CARGO_PKG_VERSION"),
            started_us: crate::util::now_us(),
            data_dir,
        }
    }

    /// Seconds since the start.
    pub fn uptime_seconds(&self) -> f64 {
        (crate::util::now_us() - self.started_us).max(0) as f64 / 1e6
    }
}

/// Bytes of the regular files under `dir`, symlinks not followed (nothing
/// outside the data dir is counted). Blocking: walks the tree. Entries that
/// vanish during the walk (a collection deleted meanwhile) are skipped.
pub fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(t) if t.is_file() => total += e.metadata().map_or(0, |m| m.len()),
                _ => {}
            }
        }
    }
    total
}
