//! The host side of the handler world: per-call state (WASI without ambient
//! authority, limits, counters) and the imports `collections`, `invoke` and
//! `log`, which reach the node only through `HostApi`.

use super::bindings::collector::runtime::{collections, invoke, log, types};
use crate::error::{Error, ErrorKind};
use crate::store::{self, Labels};
use std::sync::Arc;
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
}

/// Per-call store state.
pub struct State {
    wasi: WasiCtx,
    table: ResourceTable,
    api: std::sync::Arc<dyn HostApi>,
    memory_cap: usize,
    host_calls: u64,
    max_host_calls: u64,
    /// Set when the host refused something that ends the call.
    pub stop: Option<Stop>,
    tag: String,
}

impl State {
    /// State for one call: WASI with no env, args, preopens or sockets, and
    /// a memory cap. Until `begin` it reaches nothing (`DenyAll`).
    pub fn new(memory_cap: usize) -> Self {
        State {
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
            api: std::sync::Arc::new(DenyAll),
            memory_cap,
            host_calls: 0,
            max_host_calls: 0,
            stop: None,
            tag: String::new(),
        }
    }

    /// Hands the store to its call (it may have been made ahead of time, see
    /// `Sandbox::call`): the call's host API, host-call cap and log tag;
    /// counters start at zero.
    pub fn begin(&mut self, api: std::sync::Arc<dyn HostApi>, max_host_calls: u64, tag: String) {
        self.api = api;
        self.max_host_calls = max_host_calls;
        self.host_calls = 0;
        self.stop = None;
        self.tag = tag;
    }

    /// The memory cap the store was made with.
    pub fn memory_cap(&self) -> usize {
        self.memory_cap
    }

    /// Counts a host call; past the cap the call traps.
    fn tick(&mut self) -> wasmtime::Result<()> {
        self.host_calls += 1;
        if self.host_calls > self.max_host_calls {
            self.stop = Some(Stop::HostCallCap);
            wasmtime::bail!("handler made more than {} host calls", self.max_host_calls);
        }
        Ok(())
    }

    fn handle_of(&self, r: &Resource<OpenCollection>) -> wasmtime::Result<u32> {
        Ok(self.table.get(r)?.handle)
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
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_cap {
            self.stop = Some(Stop::MemoryCap);
            return Ok(false);
        }
        Ok(true)
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
        ErrorKind::PermissionDenied => types::Error::PermissionDenied(m),
        ErrorKind::FailedPrecondition | ErrorKind::Aborted => types::Error::Conflict(m),
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

type GuestResult<T> = wasmtime::Result<Result<T, types::Error>>;

impl types::Host for State {}

impl collections::Host for State {}

impl collections::HostCollection for State {
    async fn open(&mut self, name: String) -> GuestResult<Resource<OpenCollection>> {
        self.tick()?;
        match self.api.open(&name).await {
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
        let h = self.handle_of(&c)?;
        Ok(self
            .api
            .get(h, &id)
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
        Ok(self.api.count(h, query(q)).await.map_err(to_guest))
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
            .await
            .map_err(to_guest))
    }
}

impl log::Host for State {
    async fn log(&mut self, level: log::Level, message: String) -> wasmtime::Result<()> {
        self.tick()?;
        let tag = self.tag.as_str();
        match level {
            log::Level::Trace => tracing::trace!(handler = tag, "{message}"),
            log::Level::Debug => tracing::debug!(handler = tag, "{message}"),
            log::Level::Info => tracing::info!(handler = tag, "{message}"),
            log::Level::Warn => tracing::warn!(handler = tag, "{message}"),
            log::Level::Error => tracing::error!(handler = tag, "{message}"),
        }
        Ok(())
    }
}
