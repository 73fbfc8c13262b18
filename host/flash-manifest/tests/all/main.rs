//! flash-manifest's integration tests, in one binary (wasmtime's layout): artifact packing
//! and unpacking (`artifact`), property tests of the parsers that read untrusted input
//! (`props`, with its regressions in `props.proptest-regressions` beside it) and the
//! validation rules' exact errors (`validation_ui`, cases in `tests/ui`).

mod artifact;
mod props;
mod validation_ui;
