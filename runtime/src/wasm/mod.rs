//! The only module that touches wasmtime. One `Engine` per process, built by
//! `engine_config`; a compiled handler keeps its `InstancePre`; every call
//! gets a fresh `Store` with an epoch deadline, a memory cap, a host-call cap
//! and WASI without ambient authority. Calls run as async wasmtime on the
//! executor: the guest yields at every epoch tick (1 ms), so a busy guest
//! never holds an executor thread for longer than that, and host calls await
//! the store instead of blocking a thread.

mod bindings;
pub mod host;

pub use bindings::collector::runtime::types::CallContext;
pub use host::{DenyAll, HostApi, HostFuture, WriteSpec};

use crate::error::{Error, Result};
use host::{State, Stop};
use std::sync::Arc;
use std::time::Duration;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};

/// How often the epoch advances: the longest a guest runs between yields.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);
/// Most handler instances alive at once (per node).
pub const MAX_INSTANCES: u32 = 64;

/// Per-call limits of a handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Wall time before the call is stopped (DeadlineExceeded).
    pub timeout: Duration,
    /// Linear memory a call may use (ResourceExhausted beyond).
    pub memory_bytes: usize,
    /// Largest response (ResourceExhausted beyond).
    pub max_output_bytes: usize,
    /// Host calls per invocation (ResourceExhausted beyond).
    pub max_host_calls: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout: Duration::from_secs(5),
            memory_bytes: 64 << 20,
            max_output_bytes: 8 << 20,
            max_host_calls: 100_000,
        }
    }
}

/// The wasmtime configuration: every component the node compiles or caches
/// is built with exactly this, so cached artifacts stay compatible.
pub fn engine_config(pooling: bool) -> Config {
    let mut c = Config::new();
    c.wasm_component_model(true);
    c.epoch_interruption(true);
    c.cranelift_opt_level(wasmtime::OptLevel::Speed);
    if pooling {
        let mut p = PoolingAllocationConfig::new();
        p.total_component_instances(MAX_INSTANCES);
        p.total_core_instances(MAX_INSTANCES * 4);
        p.total_memories(MAX_INSTANCES * 2);
        p.total_tables(MAX_INSTANCES * 4);
        p.total_stacks(MAX_INSTANCES);
        p.max_memory_size(Limits::default().memory_bytes.max(256 << 20));
        // Reset a reused slot by memset (and, on kernels with PAGEMAP_SCAN,
        // only its dirty pages) instead of madvise: per-call madvise caused
        // TLB-shootdown IPIs and page faults that dominated small calls.
        p.linear_memory_keep_resident(2 << 20);
        p.table_keep_resident(64 << 10);
        p.pagemap_scan(wasmtime::Enabled::Auto);
        p.decommit_batch_size(16);
        c.allocation_strategy(InstanceAllocationStrategy::Pooling(p));
    }
    c
}

/// A compiled, validated handler component, ready to instantiate.
#[derive(Clone)]
pub struct Handler {
    pre: bindings::HandlerPre<State>,
    component: Component,
}

impl std::fmt::Debug for Handler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Handler")
    }
}

impl Handler {
    /// The compiled form, for the on-disk cache.
    pub fn serialize(&self) -> Result<Vec<u8>> {
        self.component
            .serialize()
            .map_err(|e| Error::internal(format!("serializing a component: {e}")))
    }
}

/// The engine, the linker, and the epoch ticker.
pub struct Sandbox {
    engine: Engine,
    linker: Linker<State>,
    slots: Arc<tokio::sync::Semaphore>,
    pooling: bool,
}

impl Sandbox {
    /// Builds the engine (pooling allocator when the machine allows, else on
    /// demand) and starts the epoch ticker.
    pub fn new() -> Result<Self> {
        let (engine, pooling) = match Engine::new(&engine_config(true)) {
            Ok(e) => (e, true),
            Err(err) => {
                tracing::warn!(error = %err, "pooling allocator unavailable; allocating instances on demand");
                (
                    Engine::new(&engine_config(false))
                        .map_err(|e| Error::internal(format!("wasm engine: {e}")))?,
                    false,
                )
            }
        };
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| Error::internal(format!("linking WASI: {e}")))?;
        bindings::Handler::add_to_linker::<State, HasSelf<State>>(&mut linker, |s| s)
            .map_err(|e| Error::internal(format!("linking the handler world: {e}")))?;
        let weak = engine.weak();
        std::thread::Builder::new()
            .name("wasm-epoch".into())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })
            .map_err(|e| Error::internal(format!("epoch thread: {e}")))?;
        Ok(Sandbox {
            engine,
            linker,
            slots: Arc::new(tokio::sync::Semaphore::new(MAX_INSTANCES as usize)),
            pooling,
        })
    }

    /// True when the pooling allocator is in use.
    pub fn pooling(&self) -> bool {
        self.pooling
    }

    /// Compiles and validates component bytes from a client: it must parse as
    /// a component, import only what the node links, and export `handle`.
    pub fn compile(&self, wasm: &[u8]) -> Result<Handler> {
        let component = Component::new(&self.engine, wasm)
            .map_err(|e| Error::invalid(format!("not a valid WebAssembly component: {e:#}")))?;
        self.prepare(component)
    }

    /// Loads a compiled form this node wrote itself (never bytes a client sent).
    ///
    /// # Safety
    /// `bytes` must come from `Handler::serialize` of an engine with the same
    /// configuration (the caller keys its cache by the engine's compatibility hash).
    pub unsafe fn load_compiled(&self, bytes: &[u8]) -> Result<Handler> {
        // SAFETY: the caller guarantees the bytes are our own serialized output.
        let component = unsafe { Component::deserialize(&self.engine, bytes) }
            .map_err(|e| Error::internal(format!("loading a cached component: {e:#}")))?;
        self.prepare(component)
    }

    /// A hash that changes whenever compiled artifacts become incompatible.
    pub fn compatibility_hash(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.engine.precompile_compatibility_hash().hash(&mut h);
        h.finish()
    }

    fn prepare(&self, component: Component) -> Result<Handler> {
        let pre = self.linker.instantiate_pre(&component).map_err(|e| {
            Error::invalid(format!("the component needs an import this node does not provide (handlers may import the collector:runtime handler world and WASI 0.2): {e:#}"))
        })?;
        let pre = bindings::HandlerPre::new(pre).map_err(|e| {
            Error::invalid(format!(
                "the component does not export the handler world's `handle`: {e:#}"
            ))
        })?;
        Ok(Handler { pre, component })
    }

    /// Runs `handle` in a fresh store, on the calling task: the guest yields
    /// to the executor at every epoch tick, and the whole call (host calls
    /// included) is cut off at `limits.timeout`.
    pub async fn call(
        &self,
        h: &Handler,
        ctx: CallContext,
        input: &[u8],
        api: Arc<dyn HostApi>,
        limits: &Limits,
    ) -> Result<Vec<u8>> {
        let _slot = self.slots.clone().try_acquire_owned().map_err(|_| {
            Error::resource_exhausted(format!(
                "{MAX_INSTANCES} handler calls are already running on this node; retry with backoff"
            ))
        })?;
        let tag = format!("{}/{}/{}", ctx.namespace, ctx.service, ctx.method);
        let mut store = Store::new(
            &self.engine,
            State::new(api, limits.memory_bytes, limits.max_host_calls, tag),
        );
        store.limiter(|s| s);
        let deadline = std::time::Instant::now() + limits.timeout;
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            if std::time::Instant::now() >= deadline {
                return Ok(wasmtime::UpdateDeadline::Interrupt);
            }
            Ok(wasmtime::UpdateDeadline::YieldCustom(
                1,
                Box::pin(tokio::task::yield_now()),
            ))
        });
        let run = async {
            let inst = h.pre.instantiate_async(&mut store).await?;
            inst.call_handle(&mut store, &ctx, input).await
        };
        // The epoch callback stops a guest that computes; this stops one that
        // waits on a slow host call. Dropping the call unwinds its fiber.
        let outcome = match tokio::time::timeout_at(deadline.into(), run).await {
            Ok(outcome) => outcome,
            Err(_) => return Err(deadline_exceeded(limits)),
        };
        match outcome {
            Ok(Ok(out)) if out.len() > limits.max_output_bytes => {
                Err(Error::resource_exhausted(format!(
                    "the handler returned {} bytes; the limit is {}",
                    out.len(),
                    limits.max_output_bytes
                )))
            }
            Ok(Ok(out)) => Ok(out),
            Ok(Err(guest)) => Err(host::from_guest(guest)),
            Err(trap) => Err(self.trap_error(&store, trap, limits)),
        }
    }

    fn trap_error(&self, store: &Store<State>, err: wasmtime::Error, limits: &Limits) -> Error {
        match (store.data().stop, err.downcast_ref::<wasmtime::Trap>()) {
            (Some(Stop::MemoryCap), _) => Error::resource_exhausted(format!(
                "the handler needed more than {} MiB of memory",
                limits.memory_bytes >> 20
            )),
            (Some(Stop::HostCallCap), _) => Error::resource_exhausted(format!(
                "the handler made more than {} host calls in one invocation",
                limits.max_host_calls
            )),
            (None, Some(wasmtime::Trap::StackOverflow)) => {
                Error::resource_exhausted("the handler exhausted its stack (recursion too deep)")
            }
            (None, Some(wasmtime::Trap::Interrupt)) => deadline_exceeded(limits),
            (None, Some(trap)) => Error::internal(format!(
                "the handler trapped ({trap}); other calls are unaffected"
            )),
            _ => Error::internal(format!("the handler failed: {}", err.root_cause())),
        }
    }
}

fn deadline_exceeded(limits: &Limits) -> Error {
    Error {
        kind: crate::error::ErrorKind::DeadlineExceeded,
        message: format!(
            "the handler ran longer than {:?} and was stopped",
            limits.timeout
        ),
    }
}

/// Builds the example guests in `guests/` (wasm32-wasip2, release) with the
/// running cargo and returns the directory holding the `.wasm` files. Used by
/// tests and benchmarks, which compile guests once per run.
pub fn build_example_guests() -> Result<std::path::PathBuf> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../guests");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = std::process::Command::new(cargo)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--manifest-path",
        ])
        .arg(root.join("Cargo.toml"))
        .status()
        .map_err(|e| Error::internal(format!("running cargo for guests/: {e}")))?;
    if !status.success() {
        return Err(Error::internal(
            "building guests/ failed (is the wasm32-wasip2 target installed?)",
        ));
    }
    Ok(root.join("target/wasm32-wasip2/release"))
}

/// The guests' directory, built once per test process.
#[cfg(test)]
pub(crate) fn test_guests() -> &'static std::path::Path {
    static DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| build_example_guests().expect("guests build"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn ctx() -> CallContext {
        CallContext {
            namespace: "t".into(),
            service: "t.Svc".into(),
            method: "M".into(),
            metadata: vec![],
            deadline_ms: 5000,
        }
    }

    fn sandbox_with(names: &[&str]) -> (Sandbox, Vec<Handler>) {
        let sb = Sandbox::new().unwrap();
        let hs = names
            .iter()
            .map(|n| {
                sb.compile(&std::fs::read(test_guests().join(format!("{n}.wasm"))).unwrap())
                    .unwrap()
            })
            .collect();
        (sb, hs)
    }

    #[tokio::test]
    async fn echo_and_hostile_guests_are_stopped_with_the_right_errors() {
        let (sb, hs) = sandbox_with(&["echo", "spin", "hog"]);
        let (echo, spin, hog) = (&hs[0], &hs[1], &hs[2]);
        let api: Arc<dyn HostApi> = Arc::new(DenyAll);
        assert_eq!(
            sb.call(echo, ctx(), b"hello", api.clone(), &Limits::default())
                .await
                .unwrap(),
            b"hello"
        );

        let limits = Limits {
            timeout: Duration::from_millis(200),
            ..Limits::default()
        };
        let t = Instant::now();
        let e = sb
            .call(spin, ctx(), b"", api.clone(), &limits)
            .await
            .unwrap_err();
        assert_eq!(e.kind, crate::error::ErrorKind::DeadlineExceeded, "{e}");
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "stopped near its deadline: {:?}",
            t.elapsed()
        );

        let limits = Limits {
            memory_bytes: 16 << 20,
            ..Limits::default()
        };
        let e = sb
            .call(hog, ctx(), b"", api.clone(), &limits)
            .await
            .unwrap_err();
        assert_eq!(e.kind, crate::error::ErrorKind::ResourceExhausted, "{e}");

        let limits = Limits {
            max_output_bytes: 4,
            ..Limits::default()
        };
        let e = sb
            .call(echo, ctx(), b"too long", api.clone(), &limits)
            .await
            .unwrap_err();
        assert_eq!(e.kind, crate::error::ErrorKind::ResourceExhausted, "{e}");

        // A trap never poisons later calls: each call has its own store.
        assert_eq!(
            sb.call(echo, ctx(), b"still fine", api, &Limits::default())
                .await
                .unwrap(),
            b"still fine"
        );
    }

    #[tokio::test]
    async fn bad_components_are_refused_and_compiled_forms_reload() {
        let (sb, hs) = sandbox_with(&["echo"]);
        let e = sb.compile(b"\0asm not really").unwrap_err();
        assert_eq!(e.kind, crate::error::ErrorKind::InvalidArgument);
        // A core module is not a component.
        let e = sb.compile(&[0, 0x61, 0x73, 0x6d, 1, 0, 0, 0]).unwrap_err();
        assert_eq!(e.kind, crate::error::ErrorKind::InvalidArgument, "{e}");

        let bytes = hs[0].serialize().unwrap();
        let t = Instant::now();
        // SAFETY: the bytes were just serialized by this sandbox's engine.
        let reloaded = unsafe { sb.load_compiled(&bytes) }.unwrap();
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "loading a compiled form does not recompile"
        );
        let api: Arc<dyn HostApi> = Arc::new(DenyAll);
        assert_eq!(
            sb.call(&reloaded, ctx(), b"x", api, &Limits::default())
                .await
                .unwrap(),
            b"x"
        );
        assert_eq!(
            sb.compatibility_hash(),
            Sandbox::new().unwrap().compatibility_hash()
        );
    }

    /// A guest that computes forever must not hold the executor: on a
    /// single-threaded runtime another task keeps running while it spins.
    #[tokio::test(flavor = "current_thread")]
    async fn a_spinning_guest_yields_to_other_tasks() {
        let (sb, hs) = sandbox_with(&["spin"]);
        let ticks = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let counter = ticks.clone();
        let ticker = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(5)).await;
                counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        });
        let limits = Limits {
            timeout: Duration::from_millis(300),
            ..Limits::default()
        };
        let e = sb
            .call(&hs[0], ctx(), b"", Arc::new(DenyAll), &limits)
            .await
            .unwrap_err();
        ticker.abort();
        assert_eq!(e.kind, crate::error::ErrorKind::DeadlineExceeded, "{e}");
        let n = ticks.load(std::sync::atomic::Ordering::Relaxed);
        assert!(n >= 20, "the other task ran only {n} times in 300 ms");
    }
}
