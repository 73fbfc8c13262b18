//! flash-host's integration tests, in one binary (wasmtime's layout: each module once
//! compiled and linked, instead of one wasmtime-sized binary per file).

mod boot;
mod discovery;
mod guest_output;
mod live_instance;
mod load_balanced;
mod metrics;
mod nn;
mod peer;
mod queue_worker;
mod support;
