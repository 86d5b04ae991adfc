//! Host bindings generated from wit/ (world `handler`). Every import may
//! trap (for the host-call cap); guest-visible failures stay WIT variants.
wasmtime::component::bindgen!({
    path: "../wit",
    world: "handler",
    imports: { default: trappable },
    with: { "collector:runtime/collections.collection": super::host::OpenCollection },
});
