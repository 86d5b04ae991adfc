//! The only module that touches wasmtime. One `Engine` per process, built by
//! `engine_config`; a compiled handler keeps its `InstancePre`; every call
//! gets a fresh `Store` with an epoch deadline, a memory cap, a host-call cap
//! and WASI without ambient authority. Calls run as async wasmtime on the
//! executor: the guest yields at every epoch tick (1 ms), so a busy guest
//! never holds an executor thread for longer than that, and host calls await
//! the store instead of blocking a thread. A call never sees an instance
//! another call used; the next one is instantiated ahead of time and the used
//! one torn down after the reply, so neither sits on a call's latency.
//! `compiled` keeps compiled components on disk (the node's one `unsafe`).
//! Guests reach the node only through `HostApi`, which `handlers` implements.

mod bindings;
mod compiled;
mod files;
pub mod host;
pub mod logs;

pub use bindings::collector::runtime::types::CallContext;
pub use compiled::CompiledCache;
pub use host::{DenyAll, FileSpec, HostApi, HostFuture, WriteSpec};

use crate::error::{Error, Result};
use host::{State, Stop};
use std::sync::Arc;
use std::time::Duration;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};

use crate::limits::{EPOCH_TICK, MAX_INSTANCES, MAX_WARM};

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
    /// `limits::HANDLER_TIMEOUT` (5 s), `HANDLER_MEMORY_BYTES` (64 MiB),
    /// `HANDLER_OUTPUT_BYTES` (8 MiB) and `HANDLER_HOST_CALLS` (100,000).
    fn default() -> Self {
        use crate::limits::*;
        Limits {
            timeout: HANDLER_TIMEOUT,
            memory_bytes: HANDLER_MEMORY_BYTES,
            max_output_bytes: HANDLER_OUTPUT_BYTES,
            max_host_calls: HANDLER_HOST_CALLS,
        }
    }
}

/// The node's bounds on handler calls, whatever a registration asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Maxima {
    /// Longest per-call timeout.
    pub timeout: Duration,
    /// Largest per-call memory cap.
    pub memory_bytes: usize,
    /// Memory all calls may use together.
    pub budget_bytes: usize,
}

impl Default for Maxima {
    /// `limits::MAX_HANDLER_TIMEOUT` (60 s), `MAX_HANDLER_MEMORY_BYTES`
    /// (256 MiB) and `HANDLER_MEMORY_BUDGET_BYTES` (2 GiB).
    fn default() -> Self {
        use crate::limits::*;
        Maxima {
            timeout: MAX_HANDLER_TIMEOUT,
            memory_bytes: MAX_HANDLER_MEMORY_BYTES,
            budget_bytes: HANDLER_MEMORY_BUDGET_BYTES,
        }
    }
}

impl Maxima {
    /// The limits a call gets when its registration asks for none: the
    /// defaults, lowered to the maximums.
    pub fn default_limits(&self) -> Limits {
        let d = Limits::default();
        Limits {
            timeout: d.timeout.min(self.timeout),
            memory_bytes: d.memory_bytes.min(self.memory_bytes),
            ..d
        }
    }
}

/// Memory shared by every call of a sandbox: calls take from it as their
/// linear memory grows or they buffer writes, and give it back when their
/// store is dropped.
#[derive(Debug)]
pub struct Budget {
    used: std::sync::atomic::AtomicUsize,
    total: usize,
}

impl Budget {
    fn new(total: usize) -> Self {
        Budget {
            used: std::sync::atomic::AtomicUsize::new(0),
            total,
        }
    }

    /// Takes `n` bytes if they are free.
    fn take(&self, n: usize) -> bool {
        use std::sync::atomic::Ordering;
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                u.checked_add(n).filter(|t| *t <= self.total)
            })
            .is_ok()
    }

    fn give(&self, n: usize) {
        self.used.fetch_sub(n, std::sync::atomic::Ordering::AcqRel);
    }

    /// Bytes in use now.
    pub fn used(&self) -> usize {
        self.used.load(std::sync::atomic::Ordering::Acquire)
    }
}

/// The wasmtime configuration: every component the node compiles or caches
/// is built with this (the pool's sizes do not affect compiled code, so
/// cached artifacts stay compatible across `--max-handler-memory`).
fn engine_config(pooling: Option<&Maxima>) -> Config {
    let mut c = Config::new();
    c.wasm_component_model(true);
    c.epoch_interruption(true);
    c.cranelift_opt_level(wasmtime::OptLevel::Speed);
    if let Some(maxima) = pooling {
        let mut p = PoolingAllocationConfig::new();
        // Slots for every running call, every instance made ahead, and the
        // used instance each background task tears down (see `Sandbox::after`).
        let slots = MAX_INSTANCES + 2 * MAX_WARM;
        p.total_component_instances(slots);
        p.total_core_instances(slots * 4);
        p.total_memories(slots * 2);
        p.total_tables(slots * 4);
        p.total_stacks(slots);
        p.max_memory_size(maxima.memory_bytes);
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
    /// The instance made ahead for the next call, if any.
    ahead: Arc<std::sync::Mutex<Ahead>>,
}

/// A handler's instance made ahead of its next call.
#[derive(Default)]
enum Ahead {
    #[default]
    Idle,
    /// A background task is instantiating it.
    Making,
    Ready(Warm),
}

/// An instance no call has touched yet, with the store made for it.
struct Warm {
    store: Store<State>,
    instance: bindings::Handler,
    _ticket: WarmTicket,
}

/// Counts an instance made ahead against `MAX_WARM` while it lives.
struct WarmTicket(Arc<std::sync::atomic::AtomicU32>);

impl WarmTicket {
    fn take(count: &Arc<std::sync::atomic::AtomicU32>) -> Option<WarmTicket> {
        use std::sync::atomic::Ordering;
        count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_WARM).then_some(n + 1)
            })
            .ok()
            .map(|_| WarmTicket(count.clone()))
    }
}

impl Drop for WarmTicket {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

impl std::fmt::Debug for Handler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Handler")
    }
}

/// The engine, the linker, and the epoch ticker.
pub struct Sandbox {
    engine: Engine,
    linker: Linker<State>,
    slots: Arc<tokio::sync::Semaphore>,
    pooling: bool,
    maxima: Maxima,
    budget: Arc<Budget>,
    /// Instances made ahead (or being made), against `MAX_WARM`.
    warm: Arc<std::sync::atomic::AtomicU32>,
    /// What guests logged.
    logs: Arc<logs::GuestLogs>,
}

impl Sandbox {
    /// Builds the engine (pooling allocator when the machine allows, else on
    /// demand) and starts the epoch ticker. Calls are bounded by `maxima`.
    pub fn new(maxima: Maxima) -> Result<Self> {
        let (engine, pooling) = match Engine::new(&engine_config(Some(&maxima))) {
            Ok(e) => (e, true),
            Err(err) => {
                tracing::warn!(error = %err, "pooling allocator unavailable; allocating instances on demand");
                (
                    Engine::new(&engine_config(None))
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
            maxima,
            budget: Arc::new(Budget::new(maxima.budget_bytes)),
            warm: Arc::new(std::sync::atomic::AtomicU32::new(0)),
            logs: Arc::default(),
        })
    }

    /// The node's bounds on handler calls.
    pub fn maxima(&self) -> &Maxima {
        &self.maxima
    }

    /// The memory shared by all calls.
    pub fn budget(&self) -> &Budget {
        &self.budget
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

    /// A hash that changes whenever compiled artifacts become incompatible.
    /// (`DefaultHasher` may change between Rust releases: that only turns
    /// cached entries into misses.)
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
        Ok(Handler {
            pre,
            component,
            ahead: Arc::default(),
        })
    }

    /// What guests logged on this node.
    pub fn logs(&self) -> &Arc<logs::GuestLogs> {
        &self.logs
    }

    /// Runs `handle` in a fresh store, on the calling task: the guest yields
    /// to the executor at every epoch tick, and the whole call (host calls
    /// included) is cut off at `limits.timeout`.
    ///
    /// Every call gets an instance no other call has touched. To keep
    /// instantiation and teardown off the caller's latency, the used store
    /// is dropped after the call in a background task, which also makes the
    /// handler's next instance ahead of time (at most one per handler,
    /// `MAX_WARM` per node).
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
        let origin = host::Origin {
            namespace: ctx.namespace.clone(),
            service: ctx.service.clone(),
            method: ctx.method.clone(),
            logs: self.logs.clone(),
        };
        let warm = {
            let mut ahead = h.ahead.lock().expect("ahead lock");
            match std::mem::take(&mut *ahead) {
                Ahead::Ready(w) => Some(w),
                other => {
                    *ahead = other;
                    None
                }
            }
        }
        .filter(|w| w.store.data().memory_cap() == limits.memory_bytes);
        let (mut store, ready) = match warm {
            Some(w) => (w.store, Some(w.instance)),
            None => (
                new_store(&self.engine, limits.memory_bytes, &self.budget),
                None,
            ),
        };
        store.data_mut().begin(api, limits.max_host_calls, origin);
        let deadline = std::time::Instant::now() + limits.timeout;
        arm(&mut store, deadline);
        let run = async {
            let inst = match ready {
                Some(inst) => inst,
                None => {
                    let started = std::time::Instant::now();
                    let inst = h.pre.instantiate_async(&mut store).await?;
                    metrics::histogram!(crate::telemetry::HANDLER_INSTANTIATION, "made" => "in_call")
                        .record(started.elapsed().as_secs_f64());
                    inst
                }
            };
            inst.call_handle(&mut store, &ctx, input).await
        };
        // The epoch callback stops a guest that computes; this stops one that
        // waits on a slow host call. Dropping the call unwinds its fiber.
        let outcome = tokio::time::timeout_at(deadline.into(), run).await;
        let result = match outcome {
            Err(_) => Err(deadline_exceeded(limits)),
            Ok(Ok(Ok(out))) if out.len() > limits.max_output_bytes => {
                Err(Error::resource_exhausted(format!(
                    "the handler returned {} bytes; the limit is {}",
                    out.len(),
                    limits.max_output_bytes
                )))
            }
            Ok(Ok(Ok(out))) => Ok(out),
            Ok(Ok(Err(guest))) => Err(host::from_guest(guest)),
            Ok(Err(trap)) => Err(self.trap_error(&store, trap, limits)),
        };
        metrics::histogram!(
            crate::telemetry::HANDLER_MEMORY,
            "namespace" => ctx.namespace.clone(),
            "service" => ctx.service.clone(),
            "method" => ctx.method.clone(),
        )
        .record(store.data().memory_used() as f64);
        self.after(store, h, limits);
        result
    }

    /// After a call: when the handler has no instance made ahead (nor one
    /// in the making), a background task tears the used store down and makes
    /// the next instance; otherwise the call has just torn its store down
    /// itself. So background work is bounded by `MAX_WARM`, and under steady
    /// load most calls add no task.
    fn after(&self, used: Store<State>, h: &Handler, limits: &Limits) {
        // Another call in the sandbox: the node is busy, and a background
        // task would only take CPU from it.
        if MAX_INSTANCES as usize - self.slots.available_permits() > 1 {
            return drop(used);
        }
        let ticket = {
            let mut ahead = h.ahead.lock().expect("ahead lock");
            match *ahead {
                Ahead::Idle => WarmTicket::take(&self.warm).inspect(|_| *ahead = Ahead::Making),
                _ => None,
            }
        };
        let Some(ticket) = ticket else {
            return drop(used);
        };
        let (h, limits, engine) = (h.clone(), *limits, self.engine.clone());
        let budget = self.budget.clone();
        tokio::spawn(async move {
            drop(used);
            let mut store = new_store(&engine, limits.memory_bytes, &budget);
            arm(&mut store, std::time::Instant::now() + limits.timeout);
            let started = std::time::Instant::now();
            let made = h.pre.instantiate_async(&mut store).await;
            metrics::histogram!(crate::telemetry::HANDLER_INSTANTIATION, "made" => "ahead")
                .record(started.elapsed().as_secs_f64());
            let mut ahead = h.ahead.lock().expect("ahead lock");
            *ahead = match made {
                Ok(instance) => Ahead::Ready(Warm {
                    store,
                    instance,
                    _ticket: ticket,
                }),
                // The next call instantiates itself and reports the error.
                Err(e) => {
                    tracing::debug!(error = %e, "making a handler instance ahead failed");
                    Ahead::Idle
                }
            };
        });
    }

    fn trap_error(&self, store: &Store<State>, err: wasmtime::Error, limits: &Limits) -> Error {
        match (store.data().stop, err.downcast_ref::<wasmtime::Trap>()) {
            (Some(Stop::MemoryCap), _) => Error::resource_exhausted(format!(
                "the handler needed more than its memory cap of {} MiB (linear memory plus buffered writes); register it with a larger memory_mib, at most --max-handler-memory ({} MiB)",
                limits.memory_bytes >> 20,
                self.maxima.memory_bytes >> 20
            )),
            (Some(Stop::MemoryBudget), _) => Error::resource_exhausted(format!(
                "the node's handler memory budget (--handler-memory-budget, {} MiB) is taken by other calls; retry with backoff",
                self.maxima.budget_bytes >> 20
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

/// Reads a component's outline without compiling it (registrations call
/// it before they wait for a compile slot), and refuses what could never
/// run here: not a component, an import from outside the
/// handler world and WASI, or no `handle` export. Linear in the size and
/// far cheaper than compiling, so junk costs the node no compile.
pub fn precheck(wasm: &[u8]) -> Result<()> {
    use wasmparser::{Parser, Payload};
    if !Parser::is_component(wasm) {
        return Err(Error::invalid(if Parser::is_core_wasm(wasm) {
            "this is a core WebAssembly module, not a component: build for wasm32-wasip2 (or run `wasm-tools component new`)"
        } else {
            "not a WebAssembly component: send the .wasm bytes of a wasm32-wasip2 component"
        }));
    }
    let bad = |e: wasmparser::BinaryReaderError| {
        Error::invalid(format!("not a valid WebAssembly component: {e}"))
    };
    // Nested modules and components each start with a header and end with
    // `End`; only the outermost component's imports and exports count.
    let mut depth = 0usize;
    let mut handle = false;
    for payload in Parser::new(0).parse_all(wasm) {
        match payload.map_err(bad)? {
            Payload::Version { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(imports) if depth == 1 => {
                for import in imports {
                    let import = import.map_err(bad)?;
                    let name = import.name.name;
                    // A type import (`use types.{error}`) names a type of an
                    // imported interface; everything else must be provided.
                    let provided = name.starts_with("wasi:")
                        || name.starts_with("collector:runtime/")
                        || matches!(import.ty, wasmparser::ComponentTypeRef::Type(_));
                    if !provided {
                        return Err(Error::invalid(format!(
                            "the component imports {:?}, which this node does not provide (handlers may import the collector:runtime handler world and WASI 0.2)",
                            crate::names::clip(name)
                        )));
                    }
                }
            }
            Payload::ComponentExportSection(exports) if depth == 1 => {
                for export in exports {
                    handle |= export.map_err(bad)?.name.name == "handle";
                }
            }
            _ => {}
        }
    }
    if !handle {
        return Err(Error::invalid(
            "the component does not export the handler world's `handle`",
        ));
    }
    Ok(())
}

/// A store for one call with a memory cap, not yet armed nor begun.
fn new_store(engine: &Engine, memory_bytes: usize, budget: &Arc<Budget>) -> Store<State> {
    let mut store = Store::new(engine, State::new(memory_bytes, budget.clone()));
    store.limiter(|s| s);
    store
}

/// Sets the epoch deadline of a store: the guest yields at every tick and
/// is interrupted once `deadline` has passed.
fn arm(store: &mut Store<State>, deadline: std::time::Instant) {
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
}

fn deadline_exceeded(limits: &Limits) -> Error {
    Error::deadline_exceeded(format!(
        "the handler ran longer than {:?} and was stopped",
        limits.timeout
    ))
}

/// The guests' directory, built once per test process.
#[cfg(test)]
pub(crate) fn test_guests() -> &'static std::path::Path {
    static DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| crate::guests::build_example_guests().expect("guests build"))
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
        let sb = Sandbox::new(Maxima::default()).unwrap();
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

        let dir = tempfile::tempdir().unwrap();
        let cache = CompiledCache::new(dir.path().to_path_buf(), &sb);
        assert!(cache.load(&sb, "abc").is_none(), "an empty cache misses");
        cache.save("abc", &hs[0]).unwrap();
        let t = Instant::now();
        let reloaded = cache.load(&sb, "abc").unwrap();
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
            Sandbox::new(Maxima::default())
                .unwrap()
                .compatibility_hash()
        );
    }

    /// Instances made ahead are used by the next call, and no call ever
    /// sees another call's instance: the guest's static counts its calls.
    #[tokio::test]
    async fn every_call_gets_an_untouched_instance_made_ahead_when_possible() {
        use prost::Message;
        #[derive(Clone, PartialEq, prost::Message)]
        struct Msg {
            #[prost(string, tag = "1")]
            text: String,
            #[prost(int64, tag = "2")]
            n: i64,
        }
        let (sb, hs) = sandbox_with(&["counter"]);
        let counter = Arc::new(hs.into_iter().next().unwrap());
        let sb = Arc::new(sb);
        let calls = |sb: Arc<Sandbox>, h: Arc<Handler>, limits: Limits| async move {
            let ctx = CallContext {
                method: "Calls".into(),
                ..ctx()
            };
            let input = Msg {
                text: "x".into(),
                n: 0,
            }
            .encode_to_vec();
            let out = sb
                .call(&h, ctx, &input, Arc::new(DenyAll), &limits)
                .await
                .unwrap();
            Msg::decode(out.as_slice()).unwrap().n
        };
        let ready = |h: &Handler| matches!(*h.ahead.lock().unwrap(), Ahead::Ready(_));
        assert!(!ready(&counter));
        for _ in 0..5 {
            assert_eq!(
                calls(sb.clone(), counter.clone(), Limits::default()).await,
                1
            );
            // Let the background task make the next instance.
            for _ in 0..200 {
                if ready(&counter) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            assert!(ready(&counter), "an instance is made ahead after a call");
        }
        // Concurrent calls: one may take the instance made ahead, the others
        // instantiate; each still sees an instance of its own.
        let mut all = tokio::task::JoinSet::new();
        for _ in 0..16 {
            all.spawn(calls(sb.clone(), counter.clone(), Limits::default()));
        }
        while let Some(n) = all.join_next().await {
            assert_eq!(n.unwrap(), 1);
        }
        // A different memory cap never uses an instance made for another.
        let limits = Limits {
            memory_bytes: 32 << 20,
            ..Limits::default()
        };
        assert_eq!(calls(sb.clone(), counter.clone(), limits).await, 1);
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
