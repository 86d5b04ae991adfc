//! `collector-sdk`: the Rust crate for writing Collector handlers as Wasm
//! components.
//!
//! The handler contract (`wit/`) and this crate's API arrive with the Wasm
//! handler work; until then the crate only reserves its place in the
//! workspace so the layout is stable for guests and tools.
