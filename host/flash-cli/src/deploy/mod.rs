//! The bodies of the deploy commands: what `flash deploy new/list/info/delete/send` and
//! `flash call` do on the developer's machine. The rules they share with the mothership
//! (planning, saving endpoints, reconciling) are the `flash-deploy` engine, and the State
//! Manager is reached through `flash-api`; this module adds what only a developer machine
//! has: the artifact to upload, the local state in `.flash/resources.json`, and the output.
//!
//! - [`send`]: `flash deploy send` (upload, provision before activation, activate, publish);
//! - [`environment`]: `flash deploy new/list/info/delete` and `flash env`;
//! - [`app`]: `flash app`;
//! - [`call`]: `flash call`;
//! - [`logs`]: `flash logs`;
//! - [`resource_manager`]: the local state, `.flash/resources.json`.

pub mod app;
pub mod call;
pub mod environment;
pub mod logs;
pub mod resource_manager;
pub mod send;

use anyhow::{Context, Result};
use flash_api::StateManagerClient;
use serde_json::Value;

pub use app::{
    AppDeletion, AppDetail, AppEndpoint, AppSummary, create_app, delete_app, get_app, list_apps,
};
pub use call::{CallFailed, CallOutput, call, default_environment};
pub use environment::{
    EndpointInfo, EnvironmentEndpoint, EnvironmentInfo, EnvironmentRow, NewEnvironment, delete,
    environment_endpoints, environment_rows, info, list, new_environment,
};
pub use flash_api::{DEFAULT_SERVER_URL, KeySource};
pub use flash_deploy::{
    ARTIFACT_FILE, Action, DEPLOY_KEY, MOTHERSHIP, ResourceReport, SOURCE_FINGERPRINT_ENV,
    mothership, provision, source_hash, str_field,
};
pub use logs::{LogRequest, logs};
pub use send::{Quiet, SendOptions, SendProgress, SendReport, send};

/// The app named `name`; an error that says how to create it when missing.
pub async fn require_app(sm: &StateManagerClient, name: &str) -> Result<Value> {
    sm.app_by_name(name).await?.with_context(|| {
        format!(
            "app `{name}` not found on {}: create it with `flash deploy new <env>` (`flash app \
             list` shows the existing ones)",
            sm.base_url()
        )
    })
}

/// Environment `env` of app `app_name` (a `flashEnvironment` object with its endpoints and
/// network volumes); errors that say how to create either when missing.
pub async fn find_environment(sm: &StateManagerClient, app_name: &str, env: &str) -> Result<Value> {
    let app = require_app(sm, app_name).await?;
    require_environment(sm, &app, env).await
}

/// The environment `env` of app `app`; an error that says how to create it when missing.
pub async fn require_environment(sm: &StateManagerClient, app: &Value, env: &str) -> Result<Value> {
    let app_id = str_field(app, "id")?;
    let app_name = app.get("name").and_then(Value::as_str).unwrap_or(app_id);
    sm.environment_by_name(app_id, env).await?.with_context(|| {
        format!(
            "environment `{env}` not found in app `{app_name}`: create it with `flash deploy \
             new {env}` (`flash deploy list` shows the existing ones)"
        )
    })
}
