//! Host bindings for the `flash:runtime` WIT package (`wit/flash.wit`, world `function`).
//!
//! Imports and exports are async: every call runs on tokio through wasmtime's async
//! support, so a guest blocked in `peer.call` (network I/O) never blocks a thread.

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "function",
    imports: { default: async },
    exports: { default: async },
});

pub use flash::runtime::types;
