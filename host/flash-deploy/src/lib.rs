//! The provisioning engine of Flash: it makes a manifest's resource configs real as
//! endpoints on a State Manager (RunPod's GraphQL API, or `flash server`'s copy of it).
//!
//! It is a library with no CLI in it, so that both sides of a deploy link the same rules:
//! the `flash` CLI (`flash deploy send`, whose command body, with the developer machine's
//! `.flash/resources.json`, lives in `flash-cli`) and `flash-host` running as an
//! environment's mothership. The State Manager is reached through `flash-api`.
//!
//! - [`provision`]: plan each resource config against what is deployed, save endpoints
//!   with retries, find removed endpoints, build the published manifest;
//! - [`mothership`]: the environment's mothership endpoint, and its reconciliation on boot;
//! - [`lease`]: the environment's deploy lease, which every deploy (send or reconciliation)
//!   holds while it changes the environment, so that two never interleave.

pub mod lease;
pub mod mothership;
pub mod provision;

use anyhow::{Context, Result};
use serde_json::Value;

pub use provision::{
    Action, DeployContext, DeployedResource, ResourceReport, SOURCE_FINGERPRINT_ENV, source_hash,
};

/// Name of the artifact under `.flash/`.
pub const ARTIFACT_FILE: &str = "artifact.tar.gz";
/// Top-level key of the published manifest with deploy settings (`require_auth`), so a
/// deploy without local state keeps them.
pub const DEPLOY_KEY: &str = "flash_deploy";
/// Name reserved for the environment's mothership endpoint.
pub const MOTHERSHIP: &str = "mothership";

/// The string `key` of a State Manager answer, or an error that quotes the answer.
pub fn str_field<'a>(v: &'a Value, key: &str) -> Result<&'a str> {
    v.get(key)
        .and_then(Value::as_str)
        .with_context(|| format!("the server's answer has no `{key}`: {v}"))
}
