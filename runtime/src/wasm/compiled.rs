//! The on-disk cache of compiled components: `<dir>/<sha256>-<hash>.cwasm`,
//! keyed by the component's sha256 and the engine's compatibility hash.
//!
//! Loading a compiled form is the node's one `unsafe` operation (wasmtime
//! runs the machine code in it as is). It is sound here because this type is
//! the only writer of `.cwasm` files in its directory, it writes only what
//! `Component::serialize` of the same engine produced, and client bytes are
//! never deserialized: they go through `Sandbox::compile`.

use super::{Handler, Sandbox};
use crate::error::{Error, Result};
use std::path::PathBuf;
use wasmtime::component::Component;

/// Compiled forms of components, saved by this node for itself.
pub struct CompiledCache {
    dir: PathBuf,
    /// The engine's compatibility hash, part of every file name: a wasmtime
    /// upgrade or a config change makes old entries misses, never loads.
    key: u64,
}

impl CompiledCache {
    /// A cache in `dir` (which must exist) for the sandbox's engine.
    pub fn new(dir: PathBuf, sandbox: &Sandbox) -> Self {
        CompiledCache {
            dir,
            key: sandbox.compatibility_hash(),
        }
    }

    fn path(&self, sha256: &str) -> PathBuf {
        self.dir.join(format!("{sha256}{}", self.suffix()))
    }

    /// What follows the sha256 in the name of this engine's compiled forms.
    pub fn suffix(&self) -> String {
        format!("-{:016x}.cwasm", self.key)
    }

    /// The cached compiled form of component `sha256`, if there is a usable
    /// one (an unusable entry is logged and treated as a miss). Blocks.
    pub fn load(&self, sandbox: &Sandbox, sha256: &str) -> Option<Handler> {
        let bytes = std::fs::read(self.path(sha256)).ok()?;
        // SAFETY: see the module doc: files of this name are written only by
        // `save` below, from `Component::serialize` of an engine with the
        // same compatibility hash; client bytes are never written here.
        #[allow(unsafe_code)]
        let component = unsafe { Component::deserialize(&sandbox.engine, &bytes) };
        match component
            .map_err(|e| Error::internal(format!("loading a cached component: {e:#}")))
            .and_then(|c| sandbox.prepare(c))
        {
            Ok(h) => Some(h),
            Err(e) => {
                tracing::warn!(error = %e.message, sha256, "compiled cache entry unusable; recompiling");
                None
            }
        }
    }

    /// Saves a handler's compiled form (atomically). Blocks.
    pub fn save(&self, sha256: &str, handler: &Handler) -> Result<()> {
        let bytes = handler
            .component
            .serialize()
            .map_err(|e| Error::internal(format!("serializing a component: {e}")))?;
        crate::util::write_atomic(&self.path(sha256), &bytes)
    }
}
