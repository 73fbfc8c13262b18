//! flash-control's integration tests, in one binary (wasmtime's layout: the harness and the
//! server are compiled and linked once, not once per file): request admission
//! (`admission`), queue durability across killed workers and servers (`durability`), the
//! State Manager GraphQL API and artifact store (`graphql`), RunPod's own client and worker
//! against the gateway (`runpod_compat`) and the supervisor with real worker processes
//! (`scaling`). `common` holds the shared loopback server and helpers; worker scripts are
//! in `tests/fixtures`.

mod admission;
mod common;
mod durability;
mod graphql;
mod runpod_compat;
mod scaling;
