//! `flash server`: the local control plane.
//!
//! One process that speaks the same APIs as RunPod's cloud, so the `flash` CLI, `flash-host`
//! workers and RunPod's own Python client and worker SDK work against it unchanged. Requests
//! flow one way through the modules:
//!
//! - [`auth`]: the API key (created on first start) and the checks every route applies.
//! - [`graphql`]: the State Manager (`POST /graphql`): apps, environments, builds, endpoints.
//! - [`artifacts`]: signed, expiring upload and download URLs for build tarballs.
//! - [`gateway`]: the queue API (`/v2/{endpoint}/run` …), the worker job protocol
//!   (`job-take`, `job-done` …) and the load-balanced proxy (`/lb/{endpoint}/…`).
//! - [`supervisor`]: turns saved endpoints into worker processes and scales them.
//! - [`store`]: the durable state behind all of the above (SQLite now, PostgreSQL later).
//! - [`server`]: assembles the HTTP app, binds it and shuts everything down cleanly.
//! - [`cli`]: the `flash server` flags and entry point.
//! - `testing` (feature `testing`): a real server on loopback for other crates' tests.

pub mod admission;
pub mod artifacts;
pub mod auth;
pub mod cli;
pub mod endpoints;
pub mod gateway;
pub mod graphql;
pub mod login;
pub mod server;
pub mod signals;
mod state;
pub mod store;
pub mod supervisor;
#[cfg(feature = "testing")]
pub mod testing;
mod util;

pub use server::{Config, Server};
