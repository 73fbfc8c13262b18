//! Host bindings for the `flash:runtime` WIT package (`wit/flash.wit`, world `function`).
//!
//! Imports and exports are async: every call runs on tokio through wasmtime's async
//! support, so a guest blocked in `peer.call` (network I/O) never blocks a thread.
//! `progress.emit` may also trap: a chunk past the call's host memory budget ends the call
//! (the WIT function has no error result, and dropping chunks silently would lose output).

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "function",
    imports: {
        "flash:runtime/progress.emit": async | trappable,
        default: async,
    },
    exports: { default: async },
});

pub use flash::runtime::types;
