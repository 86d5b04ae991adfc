//! Host bindings generated from wit/ (world `handler`). Imports are async
//! (they await the store on the executor) and may trap (for the host-call
//! cap); guest-visible failures stay WIT variants. Exports are async so a
//! call runs on the executor and yields at every epoch tick.
wasmtime::component::bindgen!({
    path: "../wit",
    world: "handler",
    imports: { default: async | trappable },
    exports: { default: async },
    with: { "collector:runtime/collections.collection": super::host::OpenCollection },
});
