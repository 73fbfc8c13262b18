//! `flash-api`: the one client of the remote APIs a Flash deploy talks to.
//!
//! Both the `flash` CLI (deploy commands, `flash call`) and `flash-host` (the mothership's
//! reconciliation, peer discovery) reach the same State Manager: RunPod's GraphQL API, or
//! `flash server`'s copy of it. They share this crate so that one rule decides how a
//! request is sent, how its answer is judged, when it is retried and what the error tells
//! the user.
//!
//! - [`config`]: where the State Manager is and which key to send (`RUNPOD_API_BASE_URL`,
//!   `RUNPOD_API_KEY`), with the retry and timeout settings;
//! - [`client`]: [`StateManagerClient`], the transport and the retry policy (reference
//!   §1.1, with what may be repeated decided in `retry`: mutations only when they never
//!   reached the server, creates after looking up what they may have made);
//! - [`operations`]: every GraphQL document the client sends, with RunPod Flash's
//!   operation names and selections, and the typed methods that send them;
//! - [`wire`]: the typed answers;
//! - [`error`]: [`ApiError`], classified for retries, each with a hint;
//! - [`credential`]: how a request presents its key, and how servers check it (constant
//!   time, `Bearer` in any case or a raw key), shared by every Flash server;
//! - [`data_plane`]: where endpoints are reached (`flash server`'s own host or RunPod's
//!   `api.runpod.ai`).
//! - [`log_time`]: the timestamp format of workers' JSON log lines, which `flash server`
//!   filters on;
//! - [`serve`]: how every Flash server serves HTTP: `axum::serve` plus a header-read timeout
//!   (slowloris) and keep-alive pings, with graceful shutdown;
//! - `stub` (feature `stub`): a State Manager stand-in on loopback for tests.

pub mod client;
pub mod config;
pub mod credential;
pub mod data_plane;
pub mod error;
pub mod log_time;
pub mod logging;
pub mod operations;
mod retry;
pub mod serve;
#[cfg(feature = "stub")]
pub mod stub;
pub mod wire;

pub use client::{ENVIRONMENT_LEASE_HEADER, StateManagerClient};
pub use config::{
    API_BASE_URL_ENV, API_KEY_ENV, ClientConfig, DEFAULT_API_BASE_URL, DEFAULT_SERVER_URL,
    KeySource,
};
pub use data_plane::DataPlane;
pub use error::ApiError;
pub use operations::LeaseAnswer;
pub use retry::Created;
pub use wire::{AuthRequest, Build, BuildRef, Environment, EnvironmentLease, Ref};
