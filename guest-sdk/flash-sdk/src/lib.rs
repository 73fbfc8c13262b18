//! # flash-sdk: Flash functions in plain Rust
//!
//! Write ordinary functions, mark them `#[remote(CONFIG)]`, and build the crate as a
//! `wasm32-wasip2` component: `flash build` asks it what it provides (`describe`) and
//! `flash-host` runs its functions (`invoke`) on the endpoint of each resource config.
//!
//! ```no_run
//! use flash_sdk::{remote, ResourceConfig, Result};
//!
//! const GPU: ResourceConfig = ResourceConfig::queue("gpu_config").gpu(&["AMPERE_48"]).workers(0, 3);
//! const API: ResourceConfig = ResourceConfig::load_balanced("api").cpu(&["cpu3c-1-2"]).workers(1, 3);
//!
//! #[remote(GPU)]
//! fn embed(text: String, dims: u32) -> Result<Vec<f32>> {
//!     Ok(vec![text.len() as f32; dims as usize])
//! }
//!
//! #[remote(API, method = "POST", path = "/predict")]
//! async fn predict(text: String) -> Result<f32> {
//!     let v = embed(text, 8)?; // a peer call when `api` and `gpu_config` are different endpoints
//!     Ok(v[0])
//! }
//!
//! flash_sdk::export_app!(); // once per component crate (crate-type = ["cdylib"])
//! ```
//!
//! Calls between `#[remote]` functions are transparent: the callee's body runs in place
//! when it belongs to the config this instance serves, and otherwise goes to its endpoint
//! through the host (see [`peer_call`]). Arguments and results travel as JSON, so they
//! must be `serde` types. For batches of numbers take a [`Matrix`]: callers may send it
//! as JSON rows or in a binary form that the guest decodes without parsing numbers.
//!
//! Mistakes are compile errors: a return type other than `Result<T>`, borrowed or
//! `impl Trait` parameters, generics, non-serde types, an inverted worker range, and a
//! route that does not fit the config (load-balanced configs need `method` and `path`,
//! queue configs take neither):
//!
//! ```compile_fail
//! use flash_sdk::{remote, ResourceConfig, Result};
//! const API: ResourceConfig = ResourceConfig::load_balanced("api");
//!
//! #[remote(API)] // error: a load-balanced config needs a route
//! fn stats() -> Result<u32> { Ok(1) }
//! ```
//!
//! ```compile_fail
//! use flash_sdk::{remote, ResourceConfig};
//! const GPU: ResourceConfig = ResourceConfig::queue("gpu_config");
//!
//! #[remote(GPU)] // error: must return `flash_sdk::Result<T>`
//! fn embed(text: String) -> Vec<f32> { vec![] }
//! ```
//!
//! Modules: [`config`](ResourceConfig) (endpoints), `error` ([`Error`]), `args` (the JSON
//! calling convention), `registry` (what `describe`/`invoke` see), `peer` (local or
//! remote), `executor` (drives `async fn`s), `exports` (the WIT glue).

// Lets `#[remote]` expansions (which name `::flash_sdk`) work inside this crate's tests.
extern crate self as flash_sdk;

mod args;
mod config;
mod error;
mod executor;
mod exports;
pub mod matrix;
#[cfg(feature = "nn")]
pub mod nn;
mod peer;
mod progress;
mod registry;

/// Bindings generated from `wit/flash.wit` (world `function`).
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "function",
        pub_export_macro: true,
        default_bindings_module: "flash_sdk::bindings",
        additional_derives: [PartialEq],
    });
}

pub use config::{Compute, EndpointKind, ResourceConfig, ScalerType};
pub use error::{Context, Error, ErrorKind, Origin, Result};
pub use executor::block_on;
pub use flash_sdk_macros::remote;
pub use matrix::Matrix;
pub use peer::{RESOURCE_NAME_VAR, current_resource, peer_call};
pub use progress::emit;

/// Exports this crate's `#[remote]` functions as the component's `describe` and
/// `invoke`. Invoke it exactly once, at the root of a `cdylib` crate.
#[macro_export]
macro_rules! export_app {
    () => {
        const _: () = {
            use $crate::__private::FlashApp;
    $crate::bindings::export!(FlashApp with_types_in $crate::bindings);
        };
    };
}

/// What macro expansions need. Not public API: may change in any release.
#[doc(hidden)]
pub mod __private {
    pub use crate::args::{ArgSlots, ArgsBuilder, decode_args, encode_output};
    pub use crate::exports::FlashApp;
    pub use crate::peer::{call_remote, runs_locally};
    pub use crate::registry::{FunctionEntry, check_route};
    pub use inventory;
}
