//! Host-provided inference: the `wasi:nn` interface for Flash components, served by
//! ONNX Runtime.
//!
//! A component imports `wasi:nn@0.2.0-rc-2024-10-28` (the WIT `wasmtime-wasi-nn` 48 ships,
//! copied to `wit/deps/wasi-nn/`); the host owns the model and the accelerator:
//!
//! - [`runtime`]: loads ONNX Runtime from `ORT_DYLIB_PATH` once per process, at start-up,
//!   and turns a missing or wrong library into an error that says so (the `ort` crate
//!   would panic on first use instead);
//! - [`placement`]: the execution target a graph asks for (`cpu`, `gpu`, `tpu`) and the
//!   device that actually serves it (CUDA when the library offers it, else CPU with a
//!   reason), so hosts can report it;
//! - [`graph`]: one model with a small pool of ONNX Runtime sessions, each on its own
//!   thread; `compute` never runs on an async worker thread, and honours the call's
//!   deadline;
//! - [`tensor`]: wasi-nn tensors (dimensions, element type, little-endian bytes) to and
//!   from ONNX Runtime values;
//! - [`registry`]: [`Inference`], the process-wide set of named graphs preloaded from the
//!   artifact (`load-by-name`), shared by every call;
//! - [`host`]: the `wasi:nn` host bindings, linked for every component;
//! - [`budget`]: [`HostBudget`], the host memory one call may make the host spend on it
//!   (tensors, guest-loaded models; the runtime charges progress and outputs to it too).
//!
//! Why not `wasmtime-wasi-nn`'s own host implementation: its bindings are synchronous (a
//! `compute` would block the tokio worker running the call), its ONNX backend serialises
//! all calls to a graph on one `Mutex<Session>`, and it silently runs `gpu`/`tpu` graphs on
//! the CPU. The WIT, the error codes and the behaviour of each function are the same.

pub mod budget;
pub mod error;
pub mod graph;
pub mod host;
pub mod placement;
pub mod registry;
pub mod runtime;
pub mod tensor;

pub use budget::{BudgetExceeded, HostBudget};
pub use error::NnError;
pub use graph::{Graph, GraphOptions};
pub use host::{NnCtx, NnView, add_to_linker};
pub use placement::{Device, Placement, Target};
pub use registry::{GraphStatus, Inference};
pub use runtime::{ORT_DYLIB_PATH, OnnxRuntime, RuntimeError};
pub use tensor::{Tensor, TensorType};
