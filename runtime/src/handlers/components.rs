//! The component store: uploaded components kept content-addressed
//! (`data/components/<sha256>.wasm`), with their compiled forms in the
//! sandbox's compiled cache next to them, so a restart does not recompile.

use crate::error::Result;
use crate::util::{hex, write_atomic};
use crate::wasm::{CompiledCache, Handler, Sandbox};
use sha2::Digest;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

/// Stored components and their compiled forms.
pub struct Components {
    dir: PathBuf,
    compiled_cache: CompiledCache,
    /// How many components were compiled from Wasm (not loaded from the cache).
    compiled: AtomicU64,
}

/// The sha256 of component bytes, in hex: the name a component is stored and
/// gossiped under.
pub fn sha256(bytes: &[u8]) -> String {
    hex(&sha2::Sha256::digest(bytes))
}

impl Components {
    /// The store in `dir` (created if missing). Blocks.
    pub fn open(dir: PathBuf, sandbox: &Sandbox) -> Result<Self> {
        std::fs::create_dir_all(&dir)?;
        Ok(Components {
            compiled_cache: CompiledCache::new(dir.clone(), sandbox),
            dir,
            compiled: AtomicU64::new(0),
        })
    }

    /// Where component `sha256` is stored.
    pub fn path(&self, sha256: &str) -> PathBuf {
        self.dir.join(format!("{sha256}.wasm"))
    }

    /// Keeps a component's bytes (a no-op when they are already here). Blocks.
    pub fn keep(&self, sha256: &str, wasm: &[u8]) -> Result<()> {
        let path = self.path(sha256);
        if !path.exists() {
            write_atomic(&path, wasm)?;
        }
        Ok(())
    }

    /// The handler for component `sha256`: from the compiled cache, else
    /// compiled from `wasm` (or the stored bytes) and cached. Blocks.
    pub fn handler(&self, sandbox: &Sandbox, sha256: &str, wasm: Option<&[u8]>) -> Result<Handler> {
        if let Some(h) = self.compiled_cache.load(sandbox, sha256) {
            return Ok(h);
        }
        let stored;
        let wasm = match wasm {
            Some(w) => w,
            None => {
                stored = std::fs::read(self.path(sha256))?;
                &stored
            }
        };
        let handler = sandbox.compile(wasm)?;
        self.compiled.fetch_add(1, Ordering::Relaxed);
        self.compiled_cache.save(sha256, &handler)?;
        Ok(handler)
    }

    /// Components compiled from Wasm since start (the rest came from the cache).
    pub fn compiled_count(&self) -> u64 {
        self.compiled.load(Ordering::Relaxed)
    }

    /// The directory components and their compiled forms live in.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// The suffix compiled forms of this engine carry.
    pub fn cache_key(&self) -> String {
        self.compiled_cache.suffix()
    }
}

/// Deletes from `dir` every component and compiled form whose sha256 is not
/// in `keep`, and compiled forms of other engines (`suffix` is this one's).
/// Returns how many files it deleted. Blocks.
pub fn sweep(
    dir: &std::path::Path,
    keep: &std::collections::HashSet<String>,
    suffix: &str,
) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut deleted = 0;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let used = if let Some(sha) = name.strip_suffix(".wasm") {
            keep.contains(sha)
        } else if let Some(rest) = name.strip_suffix(suffix) {
            keep.contains(rest)
        } else {
            // Compiled forms of another engine, and temporary files left by a
            // crash mid-write; anything else is not ours to touch.
            !(name.ends_with(".cwasm") || name.contains(".tmp"))
        };
        if !used && std::fs::remove_file(entry.path()).is_ok() {
            deleted += 1;
        }
    }
    deleted
}
