//! `flash server`: the local control plane.
//!
//! One process that speaks the same APIs as RunPod's cloud, so the `flash` CLI, `flash-host`
//! workers and RunPod's own Python client and worker SDK work against it unchanged. Requests
//! flow one way through the modules: transports first, then the rules they apply, then the
//! processes and the state below them.
//!
//! - [`server`]: assembles the HTTP app, binds it and shuts everything down cleanly; [`cli`]
//!   holds the `flash server` flags and entry point.
//! - [`admission`]: what a request may cost before its key is known: keys checked before any
//!   body is read, bodies bounded as they stream, and the extractors that hand the gateway's
//!   handlers the endpoint their key may use ([`admission::Caller`],
//!   [`admission::CallerOrWorker`], [`admission::LbCaller`]).
//! - [`auth`]: the user key (created on first start), the environment keys workers hold
//!   instead, endpoints' `aiKey`s, and who each one speaks for.
//! - [`graphql`]: the State Manager (`POST /graphql`): apps, environments and their deploy
//!   leases, builds, templates, endpoints. Its resolvers translate and delegate.
//! - [`endpoints`]: what `saveEndpoint` means: an [`endpoints::EndpointSpec`] merged from
//!   the input over the saved endpoint or the defaults, and validated, with flash-manifest's
//!   types, defaults and bounds.
//! - [`console`]: the web console at `/console` (apps, endpoints, live throughput and
//!   latency, recent jobs and their log lines), behind a sign-in with the API key.
//! - [`login`]: `flash login`'s auth requests and their approval page.
//! - [`artifacts`]: signed, expiring upload and download URLs for build tarballs.
//! - [`gateway`]: the queue API (`/v2/{endpoint}/run` …), the worker job protocol
//!   (`job-take`, `job-done` …), the load-balanced proxy (`/lb/{endpoint}/…`) and the
//!   queue's upkeep, one submodule each.
//! - [`supervisor`]: turns saved endpoints into worker processes: starts and stops them
//!   (`process`), scales them by the pure rules of [`supervisor::scaling`], and leases
//!   load-balanced workers to proxied requests (`lease`).
//! - [`logs`]: the workers' log lines, filtered and followed (`GET /v1/logs`, `flash logs`).
//! - [`metrics`]: what the server counts (`GET /metrics`, Prometheus text) and the recent
//!   window of outcomes the console and `flash deploy info` read.
//! - [`signals`]: in-process wake-ups between handlers, the upkeep and the supervisor.
//! - [`store`]: the durable state behind all of the above, by concern
//!   ([`store::DeployStore`], [`store::JobQueue`]): SQLite now, its schema versioned, and
//!   PostgreSQL later.
//! - `testing` (feature `testing`): a real server on loopback for other crates' tests.

pub mod admission;
pub mod artifacts;
pub mod auth;
pub mod cli;
pub mod console;
pub mod endpoints;
pub mod gateway;
pub mod graphql;
pub mod login;
pub mod logs;
pub mod metrics;
pub mod server;
pub mod signals;
mod state;
pub mod store;
pub mod supervisor;
#[cfg(feature = "testing")]
pub mod testing;
mod util;

pub use server::{Config, Server};
