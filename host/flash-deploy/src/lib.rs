//! The deploy lifecycle of a Flash app against a State Manager (RunPod's GraphQL API, or
//! `flash server`'s copy of it), shared by the `flash` CLI and by `flash-host` running as
//! an environment's mothership.
//!
//! - [`client`]: the GraphQL client (operations as RunPod Flash sends them, retries, errors
//!   that say what to do);
//! - [`data_plane`]: endpoint URLs (`flash server`'s on its own host, RunPod's on
//!   `api.runpod.ai` and `{id}.api.runpod.ai`);
//! - [`provision`]: the engine that makes a manifest's resource configs real as endpoints
//!   (plan, save with retries, removed endpoints, the published manifest);
//! - [`send`]: `flash deploy send` (upload, provision before activation, activate, publish);
//! - [`mothership`]: the environment's mothership endpoint and its reconciliation on boot;
//! - [`environment`]: `flash deploy new/list/info/delete`;
//! - [`call`]: `flash call`;
//! - [`resource_manager`]: local state of deployed endpoints (`.flash/resources.json`).

pub mod call;
pub mod client;
pub mod data_plane;
pub mod environment;
pub mod mothership;
pub mod provision;
pub mod resource_manager;
pub mod send;

use anyhow::{Context, Result};
use serde_json::Value;

pub use call::{call, default_environment};
pub use client::{DEFAULT_SERVER_URL, StateManager};
pub use environment::{
    EndpointInfo, EnvironmentInfo, EnvironmentRow, NewEnvironment, delete, info, list,
    new_environment,
};
pub use provision::{Action, ResourceReport, SOURCE_FINGERPRINT_ENV, source_hash};
pub use send::{Quiet, SendOptions, SendProgress, SendReport, send};

/// Name of the artifact under `.flash/`.
pub const ARTIFACT_FILE: &str = "artifact.tar.gz";
/// Image name of Flash endpoints (the worker entrypoint is `flash-host`).
pub const IMAGE_NAME: &str = "flash-host";
/// Top-level key of the published manifest with deploy settings (`require_auth`), so a
/// deploy without local state keeps them.
pub const DEPLOY_KEY: &str = "flash_deploy";
/// Name reserved for the environment's mothership endpoint.
pub const MOTHERSHIP: &str = "mothership";

pub(crate) fn str_field<'a>(v: &'a Value, key: &str) -> Result<&'a str> {
    v.get(key)
        .and_then(Value::as_str)
        .with_context(|| format!("the server's answer has no `{key}`: {v}"))
}

/// The app named `name`; an error that says how to create it when missing.
pub async fn require_app(sm: &StateManager, name: &str) -> Result<Value> {
    sm.app_by_name(name).await?.with_context(|| {
        format!(
            "app `{name}` not found on {}: create it with `flash deploy new <env>`",
            sm.base
        )
    })
}

/// The environment `env` of app `app`; an error that says how to create it when missing.
pub async fn require_environment(sm: &StateManager, app: &Value, env: &str) -> Result<Value> {
    let app_id = str_field(app, "id")?;
    let app_name = app.get("name").and_then(Value::as_str).unwrap_or(app_id);
    sm.environment_by_name(app_id, env).await?.with_context(|| {
        format!(
            "environment `{env}` not found in app `{app_name}`: create it with `flash deploy \
             new {env}` (`flash deploy list` shows the existing ones)"
        )
    })
}
