//! `flash-host`: the container entrypoint that serves an app's functions.
//!
//! One process serves one resource config (`FLASH_RESOURCE_NAME`) of one artifact:
//!
//! - [`env`]: the env contract, parsed once into a typed [`env::HostEnv`];
//! - [`boot`]: find/fetch the artifact (RunPod's path, or an explicit one) and unpack it safely;
//! - [`app`]: load this resource's components once ([`app::HostApp`]);
//! - [`models`]: load ONNX Runtime and preload this resource's models for `wasi:nn`;
//! - [`registry`]: route calls locally or to peer endpoints ([`registry::ServiceRegistry`]);
//! - [`manifest_fetcher`]: find peers' URLs through the State Manager (the `flash-api`
//!   client), with a TTL cache and a local-file fallback;
//! - [`queue`]: the RunPod-compatible queue worker;
//! - [`lb`]: the load-balanced HTTP server (routes, `/ping`, `/execute`, `/metrics`);
//! - [`metrics`]: what a host counts, in Prometheus' text format;
//! - [`mothership`]: the environment's mothership (reconciles child endpoints on boot);
//! - [`job_input`]: how job inputs and `/execute` bodies name functions and arguments;
//! - [`role`]: the [`role::Role`] trait the queue worker, load-balanced server and
//!   mothership implement, and the shutdown signal they share;
//! - [`host`]: wiring them from the environment, as the binary does.

pub mod app;
pub mod boot;
pub mod env;
pub mod host;
pub mod job_input;
pub mod lb;
pub mod manifest_fetcher;
pub mod metrics;
pub mod models;
pub mod mothership;
pub mod queue;
pub mod registry;
pub mod role;
