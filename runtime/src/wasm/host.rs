//! The host side of the handler world: per-call state (WASI without ambient
//! authority, limits, counters) and the imports `collections`, `invoke` and
//! `log`, which reach the node only through `HostApi` (`files` is in
//! `wasm::files`).

use super::bindings::collector::runtime::{collections, invoke, log, types};
use super::logs::Level;
use crate::error::{Error, ErrorKind};
use crate::store::{self, Labels};
use std::sync::Arc;
use tracing::Instrument;
use wasmtime::component::{Resource, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// A write a handler asks for, on an open collection.
#[derive(Debug, Clone)]
pub enum WriteSpec {
    /// Create a record.
    Create {
        /// The id; empty gets a UUIDv7.
        id: String,
        /// The payload, binary protobuf.
        data: Vec<u8>,
        /// The record's labels.
        labels: Labels,
    },
    /// Replace a record's payload and labels.
    Update {
        /// The record to replace.
        id: String,
        /// The new payload, binary protobuf.
        data: Vec<u8>,
        /// The new labels.
        labels: Labels,
        /// Only if the record is at this version.
        expected_version: Option<i64>,
    },
    /// Delete a record.
    Delete {
        /// The record to delete.
        id: String,
        /// Only if the record is at this version.
        expected_version: Option<i64>,
    },
}

/// A change to a file of a record that a handler asks for.
#[derive(Debug, Clone)]
pub enum FileSpec {
    /// Put `data` at `path` of record `id` (replacing what is there).
    Put {
        /// The record.
        id: String,
        /// The file's path under it.
        path: String,
        /// Content type to record.
        content_type: String,
        /// The bytes.
        data: Vec<u8>,
        /// Only if the file is at this version.
        expected_version: Option<i64>,
    },
    /// Delete the file at `path` of record `id`.
    Delete {
        /// The record.
        id: String,
        /// The file's path under it.
        path: String,
        /// Only if the file is at this version.
        expected_version: Option<i64>,
    },
}

/// A host operation in flight; boxed so `HostApi` stays object-safe.
pub type HostFuture<'a, T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, Error>> + Send + 'a>>;

/// Everything a handler can reach. The node implements it over the catalogue
/// with the handler's namespace and grants; `DenyAll` grants nothing.
/// Operations are async: they run on the call's task and await the store.
pub trait HostApi: Send + Sync {
    /// Opens a collection by name; returns a handle for the other methods.
    fn open<'a>(&'a self, collection: &'a str) -> HostFuture<'a, u32>;
    /// The record `id` as this call sees it (its own writes included).
    fn get<'a>(&'a self, handle: u32, id: &'a str) -> HostFuture<'a, Arc<store::Record>>;
    /// Returns the stored record (None for a delete).
    fn write(&self, handle: u32, op: WriteSpec) -> HostFuture<'_, Option<Arc<store::Record>>>;
    /// One page of a search.
    fn search(&self, handle: u32, q: store::Query) -> HostFuture<'_, store::Page>;
    /// How many records match.
    fn count(&self, handle: u32, q: store::Query) -> HostFuture<'_, i64>;
    /// Calls another method of the namespace.
    fn invoke<'a>(
        &'a self,
        service: &'a str,
        method: &'a str,
        input: &'a [u8],
    ) -> HostFuture<'a, Vec<u8>>;
    /// The metadata of a (committed) file of a record.
    fn stat_file<'a>(
        &'a self,
        handle: u32,
        id: &'a str,
        path: &'a str,
    ) -> HostFuture<'a, store::FileMeta>;
    /// A page of a record's (committed) files under `prefix`.
    fn list_files<'a>(
        &'a self,
        handle: u32,
        id: &'a str,
        prefix: String,
        page_size: u32,
        page_token: String,
    ) -> HostFuture<'a, store::FilePage>;
    /// `len` bytes of a file from `offset` (0: to the end); at most `max`
    /// of them, else RESOURCE_EXHAUSTED.
    fn read_file<'a>(
        &'a self,
        handle: u32,
        id: &'a str,
        path: &'a str,
        offset: u64,
        len: u64,
        max: usize,
    ) -> HostFuture<'a, Vec<u8>>;
    /// Stages a file change, applied with the call's writes.
    fn change_file(&self, handle: u32, change: FileSpec) -> HostFuture<'_, ()>;
}

/// A handler with no grants: every collection and every invoke is refused.
pub struct DenyAll;

fn denied<'a, T: Send + 'a>(msg: String) -> HostFuture<'a, T> {
    Box::pin(std::future::ready(Err(Error::permission_denied(msg))))
}

const NO_GRANTS: &str = "no collection is granted to this handler";

impl HostApi for DenyAll {
    fn open<'a>(&'a self, collection: &'a str) -> HostFuture<'a, u32> {
        denied(format!(
            "collection {collection:?} is not granted to this handler"
        ))
    }
    fn get<'a>(&'a self, _: u32, _: &'a str) -> HostFuture<'a, Arc<store::Record>> {
        denied(NO_GRANTS.into())
    }
    fn write(&self, _: u32, _: WriteSpec) -> HostFuture<'_, Option<Arc<store::Record>>> {
        denied(NO_GRANTS.into())
    }
    fn search(&self, _: u32, _: store::Query) -> HostFuture<'_, store::Page> {
        denied(NO_GRANTS.into())
    }
    fn count(&self, _: u32, _: store::Query) -> HostFuture<'_, i64> {
        denied(NO_GRANTS.into())
    }
    fn invoke<'a>(
        &'a self,
        service: &'a str,
        method: &'a str,
        _: &'a [u8],
    ) -> HostFuture<'a, Vec<u8>> {
        denied(format!("this handler may not invoke {service}/{method}"))
    }
    fn stat_file<'a>(&'a self, _: u32, _: &'a str, _: &'a str) -> HostFuture<'a, store::FileMeta> {
        denied(NO_GRANTS.into())
    }
    fn list_files<'a>(
        &'a self,
        _: u32,
        _: &'a str,
        _: String,
        _: u32,
        _: String,
    ) -> HostFuture<'a, store::FilePage> {
        denied(NO_GRANTS.into())
    }
    fn read_file<'a>(
        &'a self,
        _: u32,
        _: &'a str,
        _: &'a str,
        _: u64,
        _: u64,
        _: usize,
    ) -> HostFuture<'a, Vec<u8>> {
        denied(NO_GRANTS.into())
    }
    fn change_file(&self, _: u32, _: FileSpec) -> HostFuture<'_, ()> {
        denied(NO_GRANTS.into())
    }
}

/// The resource behind a guest's `collection` handle.
pub struct OpenCollection {
    handle: u32,
}

/// Why a call was stopped by the host rather than by the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The call grew its memory past its cap.
    MemoryCap,
    /// The call made more host calls than its cap.
    HostCallCap,
    /// The node's memory budget for all calls was taken.
    MemoryBudget,
}

/// Per-call store state.
pub struct State {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(super) api: std::sync::Arc<dyn HostApi>,
    memory_cap: usize,
    /// Bytes this store holds of the budget: its linear memories and the
    /// writes its calls buffered.
    charged: usize,
    budget: Arc<super::Budget>,
    host_calls: u64,
    max_host_calls: u64,
    /// Set when the host refused something that ends the call.
    pub stop: Option<Stop>,
    /// Who is calling and where its log lines go.
    origin: Option<Origin>,
}

impl State {
    /// State for one call: WASI with no env, args, preopens or sockets, and
    /// a memory cap. Until `begin` it reaches nothing (`DenyAll`).
    pub fn new(memory_cap: usize, budget: Arc<super::Budget>) -> Self {
        State {
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
            api: std::sync::Arc::new(DenyAll),
            memory_cap,
            charged: 0,
            budget,
            host_calls: 0,
            max_host_calls: 0,
            stop: None,
            origin: None,
        }
    }

    /// Hands the store to its call (it may have been made ahead of time, see
    /// `Sandbox::call`): the call's host API, host-call cap and origin;
    /// counters start at zero.
    pub fn begin(&mut self, api: std::sync::Arc<dyn HostApi>, max_host_calls: u64, origin: Origin) {
        self.api = api;
        self.max_host_calls = max_host_calls;
        self.host_calls = 0;
        self.stop = None;
        self.origin = Some(origin);
    }

    /// The memory cap the store was made with.
    pub fn memory_cap(&self) -> usize {
        self.memory_cap
    }

    /// Bytes the store's memories and tables took so far: at a call's end,
    /// its high-water mark (a fresh store per call; memory never shrinks).
    pub fn memory_used(&self) -> usize {
        self.charged
    }

    /// Bytes the call may still take before its memory cap.
    pub(super) fn memory_left(&self) -> usize {
        self.memory_cap.saturating_sub(self.charged)
    }

    /// Counts a host call; past the cap the call traps.
    pub(super) fn tick(&mut self) -> wasmtime::Result<()> {
        self.host_calls += 1;
        if self.host_calls > self.max_host_calls {
            self.stop = Some(Stop::HostCallCap);
            wasmtime::bail!("handler made more than {} host calls", self.max_host_calls);
        }
        Ok(())
    }

    pub(super) fn handle_of(&self, r: &Resource<OpenCollection>) -> wasmtime::Result<u32> {
        Ok(self.table.get(r)?.handle)
    }

    /// Charges `n` more bytes to the call's cap and the node's budget; on
    /// failure records why, charges nothing, and returns false.
    fn charge(&mut self, n: usize) -> bool {
        if self.charged.saturating_add(n) > self.memory_cap {
            self.stop = Some(Stop::MemoryCap);
            return false;
        }
        if !self.budget.take(n) {
            self.stop = Some(Stop::MemoryBudget);
            return false;
        }
        self.charged += n;
        true
    }

    /// Charges a write the call buffers until it ends: its payload is held
    /// as bytes, JSON and a decoded message.
    fn charge_write(
        &mut self,
        id: &str,
        data: &[u8],
        labels: &[(String, String)],
    ) -> wasmtime::Result<()> {
        self.charge_kept(
            WRITE_OVERHEAD
                + id.len()
                + data.len().saturating_mul(3)
                + labels.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>(),
        )
    }

    /// Charges `n` bytes the host keeps for the call until it ends; past a
    /// cap the call traps.
    pub(super) fn charge_kept(&mut self, n: usize) -> wasmtime::Result<()> {
        if !self.charge(n) {
            wasmtime::bail!("the host's state for the call exceeds its memory");
        }
        Ok(())
    }
}

/// Bytes a buffered write costs besides its id, payload and labels.
pub(super) const WRITE_OVERHEAD: usize = 256;
/// Bytes remembering a read record's version costs besides its id.
const READ_OVERHEAD: usize = 64;

impl Drop for State {
    fn drop(&mut self) {
        self.budget.give(self.charged);
    }
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl wasmtime::ResourceLimiter for State {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(self.charge(desired.saturating_sub(current)))
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= crate::limits::HANDLER_TABLE_ELEMENTS)
    }
}

/// Domain error → the guest's error variant.
pub fn to_guest(e: Error) -> types::Error {
    let m = e.message;
    match e.kind {
        ErrorKind::NotFound => types::Error::NotFound(m),
        ErrorKind::AlreadyExists => types::Error::AlreadyExists(m),
        ErrorKind::InvalidArgument => types::Error::InvalidArgument(m),
        ErrorKind::PermissionDenied | ErrorKind::Unauthenticated => {
            types::Error::PermissionDenied(m)
        }
        ErrorKind::FailedPrecondition => types::Error::Conflict(m),
        ErrorKind::Aborted => types::Error::Aborted(m),
        ErrorKind::ResourceExhausted => types::Error::ResourceExhausted(m),
        _ => types::Error::Internal(m),
    }
}

/// The guest's error variant → a domain error.
pub fn from_guest(e: types::Error) -> Error {
    match e {
        types::Error::NotFound(m) => Error::not_found(m),
        types::Error::AlreadyExists(m) => Error::already_exists(m),
        types::Error::InvalidArgument(m) => Error::invalid(m),
        types::Error::PermissionDenied(m) => Error::permission_denied(m),
        types::Error::Conflict(m) => Error::failed_precondition(m),
        types::Error::Aborted(m) => Error::aborted(m),
        types::Error::ResourceExhausted(m) => Error::resource_exhausted(m),
        types::Error::Internal(m) => Error::internal(m),
    }
}

fn labels(l: Vec<(String, String)>) -> Labels {
    l.into_iter().collect()
}

/// The guest's copy of a record (its JSON form stays on the host).
fn record(r: &store::Record) -> collections::Record {
    collections::Record {
        id: r.id.clone(),
        data: r.data.clone(),
        labels: r
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        version: r.version,
        created_us: r.created_us,
        updated_us: r.updated_us,
    }
}

fn scalar(v: collections::Value) -> store::Scalar {
    match v {
        collections::Value::Text(s) => store::Scalar::Str(s),
        collections::Value::Integer(i) => store::Scalar::Int(i),
        collections::Value::Float(f) => store::Scalar::Float(f),
        collections::Value::Boolean(b) => store::Scalar::Bool(b),
    }
}

fn query(q: collections::Query) -> store::Query {
    use collections::FilterOp as F;
    store::Query {
        text: q.text,
        filters: q
            .filters
            .into_iter()
            .map(|f| store::Filter {
                field: f.field,
                op: match f.op {
                    F::Eq => store::Op::Eq,
                    F::Ne => store::Op::Ne,
                    F::Gt => store::Op::Gt,
                    F::Ge => store::Op::Ge,
                    F::Lt => store::Op::Lt,
                    F::Le => store::Op::Le,
                    F::Contains => store::Op::Contains,
                    F::Prefix => store::Op::Prefix,
                    F::OneOf => store::Op::In,
                    F::Exists => store::Op::Exists,
                    F::NotExists => store::Op::NotExists,
                },
                value: f.value.map(scalar),
                values: f.values.into_iter().map(scalar).collect(),
            })
            .collect(),
        labels: labels(q.labels),
        order: q.order.map(|o| store::Order {
            field: o.field,
            descending: o.descending,
        }),
        page_size: q.page_size,
        page_token: q.page_token,
    }
}

pub(super) type GuestResult<T> = wasmtime::Result<Result<T, types::Error>>;

impl types::Host for State {}

impl collections::Host for State {}

impl collections::HostCollection for State {
    async fn open(&mut self, name: String) -> GuestResult<Resource<OpenCollection>> {
        self.tick()?;
        match self
            .api
            .open(&name)
            .instrument(crate::traces::host_span("collection.open"))
            .await
        {
            Ok(handle) => Ok(Ok(self.table.push(OpenCollection { handle })?)),
            Err(e) => Ok(Err(to_guest(e))),
        }
    }

    async fn get(
        &mut self,
        c: Resource<OpenCollection>,
        id: String,
    ) -> GuestResult<collections::Record> {
        self.tick()?;
        // The host remembers the version of every record the call reads.
        self.charge_kept(id.len() + READ_OVERHEAD)?;
        let h = self.handle_of(&c)?;
        Ok(self
            .api
            .get(h, &id)
            .instrument(crate::traces::host_span("collection.get"))
            .await
            .map(|r| record(&r))
            .map_err(to_guest))
    }

    async fn create(
        &mut self,
        c: Resource<OpenCollection>,
        id: String,
        data: Vec<u8>,
        l: Vec<(String, String)>,
    ) -> GuestResult<collections::Record> {
        self.tick()?;
        self.charge_write(&id, &data, &l)?;
        let h = self.handle_of(&c)?;
        let r = self
            .api
            .write(
                h,
                WriteSpec::Create {
                    id,
                    data,
                    labels: labels(l),
                },
            )
            .instrument(crate::traces::host_span("collection.write"))
            .await;
        Ok(
            r.and_then(|r| r.ok_or_else(|| Error::internal("create stored nothing")))
                .map(|r| record(&r))
                .map_err(to_guest),
        )
    }

    async fn update(
        &mut self,
        c: Resource<OpenCollection>,
        id: String,
        data: Vec<u8>,
        l: Vec<(String, String)>,
        expected_version: Option<i64>,
    ) -> GuestResult<collections::Record> {
        self.tick()?;
        self.charge_write(&id, &data, &l)?;
        let h = self.handle_of(&c)?;
        let r = self
            .api
            .write(
                h,
                WriteSpec::Update {
                    id,
                    data,
                    labels: labels(l),
                    expected_version,
                },
            )
            .instrument(crate::traces::host_span("collection.write"))
            .await;
        Ok(
            r.and_then(|r| r.ok_or_else(|| Error::internal("update stored nothing")))
                .map(|r| record(&r))
                .map_err(to_guest),
        )
    }

    async fn delete(
        &mut self,
        c: Resource<OpenCollection>,
        id: String,
        expected_version: Option<i64>,
    ) -> GuestResult<()> {
        self.tick()?;
        self.charge_write(&id, &[], &[])?;
        let h = self.handle_of(&c)?;
        Ok(self
            .api
            .write(
                h,
                WriteSpec::Delete {
                    id,
                    expected_version,
                },
            )
            .instrument(crate::traces::host_span("collection.write"))
            .await
            .map(|_| ())
            .map_err(to_guest))
    }

    async fn search(
        &mut self,
        c: Resource<OpenCollection>,
        q: collections::Query,
    ) -> GuestResult<collections::Page> {
        self.tick()?;
        let h = self.handle_of(&c)?;
        Ok(self
            .api
            .search(h, query(q))
            .instrument(crate::traces::host_span("collection.search"))
            .await
            .map(|p| collections::Page {
                records: p.hits.iter().map(|(r, _)| record(r)).collect(),
                next_page_token: p.next_token,
            })
            .map_err(to_guest))
    }

    async fn count(
        &mut self,
        c: Resource<OpenCollection>,
        q: collections::Query,
    ) -> GuestResult<i64> {
        self.tick()?;
        let h = self.handle_of(&c)?;
        Ok(self
            .api
            .count(h, query(q))
            .instrument(crate::traces::host_span("collection.count"))
            .await
            .map_err(to_guest))
    }

    async fn drop(&mut self, c: Resource<OpenCollection>) -> wasmtime::Result<()> {
        self.table.delete(c)?;
        Ok(())
    }
}

impl invoke::Host for State {
    async fn call(
        &mut self,
        service: String,
        method: String,
        input: Vec<u8>,
    ) -> GuestResult<Vec<u8>> {
        self.tick()?;
        Ok(self
            .api
            .invoke(&service, &method, &input)
            .instrument(crate::traces::host_span("invoke"))
            .await
            .map_err(to_guest))
    }
}

impl log::Host for State {
    async fn log(&mut self, level: log::Level, message: String) -> wasmtime::Result<()> {
        self.tick()?;
        if let Some(o) = &self.origin {
            let level = match level {
                log::Level::Trace => Level::Trace,
                log::Level::Debug => Level::Debug,
                log::Level::Info => Level::Info,
                log::Level::Warn => Level::Warn,
                log::Level::Error => Level::Error,
            };
            o.logs
                .record(&o.namespace, &o.service, &o.method, level, &message);
        }
        Ok(())
    }
}

/// The call a store serves: its names, and where its log lines go.
pub struct Origin {
    /// The namespace of the call.
    pub namespace: String,
    /// The service called.
    pub service: String,
    /// The method called.
    pub method: String,
    /// The node's guest logs.
    pub logs: Arc<super::logs::GuestLogs>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A version mismatch and a lost race stay apart through `invoke`: a
    /// guest that passes its callee's error on gives its caller the same code.
    #[test]
    fn every_error_kind_a_guest_can_see_comes_back_as_itself() {
        for e in [
            Error::not_found("a"),
            Error::already_exists("b"),
            Error::invalid("c"),
            Error::permission_denied("d"),
            Error::failed_precondition("e"),
            Error::aborted("f"),
            Error::resource_exhausted("g"),
            Error::internal("h"),
        ] {
            assert_eq!(from_guest(to_guest(e.clone())), e);
        }
    }
}
