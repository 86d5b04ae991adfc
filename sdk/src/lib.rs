//! `collector-sdk`: write Collector handlers in plain Rust over prost types.
//!
//! A handler is a WebAssembly component that serves the methods of one gRPC
//! service. With this crate a method is an ordinary function from a request
//! message to a response message; [`handler!`] maps method names to those
//! functions and produces the component's export, so no wit-bindgen code
//! appears in a guest:
//!
//! ```ignore
//! use collector_sdk::{Collection, Context, Query, Result, handler};
//!
//! fn create(ctx: &Context, req: CreateOrder) -> Result<Order> {
//!     if req.customer.is_empty() {
//!         return Err(collector_sdk::Error::invalid("customer is required"));
//!     }
//!     let orders = Collection::<Order>::open("orders")?;
//!     let doc = orders.create("", &Order { customer: req.customer, ..Default::default() })?;
//!     Ok(doc.value)
//! }
//!
//! handler! { "Create" => create }
//! ```
//!
//! Build with `cargo build --target wasm32-wasip2 --release` and register the
//! `.wasm` with `collector register`; README.md walks through it.

mod collection;
mod context;
mod error;
mod files;
pub mod log;
mod query;

pub use collection::{Collection, Doc, Page};
pub use context::{Context, invoke_service};
pub use error::{Error, Result};
pub use files::{FileInfo, FilePage};
pub use query::{Query, Value};

/// Re-exported so guests name one prost version with the SDK.
pub use prost;

/// The wit-bindgen bindings of `wit/runtime.wit`. Guests never need them;
/// they are public because the code [`handler!`] expands to refers to them.
#[doc(hidden)]
#[allow(clippy::too_many_arguments)] // generated code
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "handler",
        default_bindings_module: "collector_sdk::bindings",
        pub_export_macro: true,
        export_macro_name: "__export_handler",
    });
}

/// Maps method names of the service to functions and exports the handler.
///
/// Each function has the shape `fn(&Context, Request) -> Result<Response>`
/// where `Request` and `Response` are prost messages (the method's input and
/// output types in the registered .proto). A request that does not decode is
/// answered with invalid-argument before the function runs; a method not in
/// the list is answered with invalid-argument naming the known ones. Use the
/// macro once per component.
#[macro_export]
macro_rules! handler {
    ($($method:literal => $func:expr),+ $(,)?) => {
        #[doc(hidden)]
        pub struct __CollectorHandler;

        impl $crate::bindings::Guest for __CollectorHandler {
            fn handle(
                ctx: $crate::bindings::CallContext,
                input: ::std::vec::Vec<u8>,
            ) -> ::std::result::Result<::std::vec::Vec<u8>, $crate::bindings::Error> {
                let ctx = $crate::Context::__from_host(ctx);
                let out = match ctx.method() {
                    $($method => $crate::__run(&ctx, &input, $func),)+
                    _ => ::std::result::Result::Err($crate::Error::__unknown_method(
                        &ctx,
                        &[$($method),+],
                    )),
                };
                out.map_err(::std::convert::Into::into)
            }
        }

        $crate::bindings::__export_handler!(__CollectorHandler);
    };
}

/// Decodes the request, runs the method and encodes its response; used by
/// [`handler!`].
#[doc(hidden)]
pub fn __run<I, O, F>(ctx: &Context, input: &[u8], f: F) -> Result<Vec<u8>>
where
    I: prost::Message + Default,
    O: prost::Message,
    F: FnOnce(&Context, I) -> Result<O>,
{
    let req = I::decode(input).map_err(|e| {
        Error::invalid(format!(
            "the request to {}/{} is not its input message: {e}",
            ctx.service(),
            ctx.method()
        ))
    })?;
    Ok(f(ctx, req)?.encode_to_vec())
}
