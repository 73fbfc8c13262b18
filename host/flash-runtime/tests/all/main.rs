//! flash-runtime's integration tests on real components, in one binary (wasmtime's layout):
//! the WIT contract on the Rust and Python test guests (`contract`) and what one call may
//! use (`limits`). Hand-written components are in `tests/components`.

mod contract;
mod limits;
