//! Apps: `flash app list/get/create/delete` (runpod-flash's `flash app`).

use anyhow::{Result, bail};
use flash_api::{BuildRef, StateManagerClient};
use serde_json::Value;

use super::environment::{
    EnvironmentEndpoint, EnvironmentRow, environment_endpoints, local_environment,
};
use super::require_app;
use super::resource_manager::ResourceManager;
use flash_deploy::str_field;

/// One row of `flash app list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppSummary {
    pub name: String,
    pub environments: usize,
    pub builds: usize,
}

/// Every app of the account, with how many environments and builds each has.
pub async fn list_apps(sm: &StateManagerClient) -> Result<Vec<AppSummary>> {
    let count = |app: &Value, field: &str| app[field].as_array().map_or(0, Vec::len);
    Ok(sm
        .apps()
        .await?
        .iter()
        .map(|app| AppSummary {
            name: app["name"].as_str().unwrap_or("(unnamed)").to_string(),
            environments: count(app, "flashEnvironments"),
            builds: count(app, "flashBuilds"),
        })
        .collect())
}

/// What `flash app get` shows.
#[derive(Debug, Clone)]
pub struct AppDetail {
    pub name: String,
    pub environments: Vec<EnvironmentRow>,
    /// Newest first.
    pub builds: Vec<BuildRef>,
}

/// App `name` with its environments and builds.
pub async fn get_app(sm: &StateManagerClient, name: &str) -> Result<AppDetail> {
    let app = require_app(sm, name).await?;
    let app_id = str_field(&app, "id")?;
    let (environments, mut builds) =
        futures::try_join!(sm.app_environments(app_id), sm.app_builds(app_id))?;
    // RFC 3339 in one offset sorts as text; builds without a date go last.
    builds.sort_by(|a, b| b.created_at.cmp(&a.created_at));
    Ok(AppDetail {
        name: name.to_string(),
        environments: environments
            .into_iter()
            .map(|e| EnvironmentRow {
                app: name.to_string(),
                name: e.name,
                id: e.id,
                active_build: e.active_build_id,
                created_at: e.created_at,
            })
            .collect(),
        builds,
    })
}

/// Creates app `name`; returns its id.
pub async fn create_app(sm: &StateManagerClient, name: &str) -> Result<String> {
    if name.trim().is_empty() {
        bail!("the app name must not be empty");
    }
    if sm.app_by_name(name).await?.is_some() {
        bail!(
            "app `{name}` already exists on {}: `flash app get {name}` shows it",
            sm.base_url()
        );
    }
    let app = sm.create_app(name).await?;
    Ok(str_field(&app, "id")?.to_string())
}

/// An endpoint `flash app delete` went through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppEndpoint {
    pub environment: String,
    pub endpoint: EnvironmentEndpoint,
}

/// What `flash app delete` did.
#[derive(Debug, Default)]
pub struct AppDeletion {
    pub removed: Vec<AppEndpoint>,
    /// Endpoints that could not be deleted, with why; the app was then kept.
    pub failed: Vec<(AppEndpoint, String)>,
    /// The app is gone (every endpoint was deleted first).
    pub app_deleted: bool,
}

/// Deletes app `name` as reference §1.6 does: every endpoint of every environment
/// (`getFlashEnvironment`, then `deleteEndpoint`; one already gone counts as deleted),
/// then `deleteFlashApp`, and only when no endpoint is left. Endpoints are found as
/// [`environment_endpoints`] finds them, so endpoints the server does not list (a send
/// that failed before publishing) go too. Local state of the deleted environments is
/// dropped.
pub async fn delete_app(
    sm: &StateManagerClient,
    state: Option<&ResourceManager>,
    name: &str,
) -> Result<AppDeletion> {
    let app = require_app(sm, name).await?;
    let app_id = str_field(&app, "id")?.to_string();
    let mut deletion = AppDeletion::default();
    let mut environments = Vec::new();
    for summary in sm.app_environments(&app_id).await? {
        let Some(env) = sm.environment(&summary.id).await? else {
            continue; // deleted meanwhile
        };
        let local = local_environment(state, &summary.name, &summary.id)?;
        for endpoint in environment_endpoints(sm, &env, local.as_ref()).await? {
            let entry = AppEndpoint {
                environment: summary.name.clone(),
                endpoint,
            };
            match sm.delete_endpoint(&entry.endpoint.id).await {
                Ok(()) => deletion.removed.push(entry),
                Err(e) => deletion.failed.push((entry, e.to_string())),
            }
        }
        environments.push((summary.name, summary.id));
    }
    if !deletion.failed.is_empty() {
        return Ok(deletion);
    }
    sm.delete_app(&app_id).await?;
    deletion.app_deleted = true;
    if let Some(rm) = state {
        rm.update(|s| {
            for (name, id) in &environments {
                if s.environments
                    .get(name)
                    .is_some_and(|e| &e.environment_id == id)
                {
                    s.environments.remove(name);
                }
            }
        })?;
    }
    Ok(deletion)
}
