//! Environments: `flash deploy new` (with the mothership), `list`, `info` and `delete`.

use std::collections::BTreeSet;

use anyhow::{Result, bail};
use serde_json::Value;

use super::resource_manager::{EnvironmentState, ResourceManager};
use super::send::previous_deployment;
use super::{require_app, require_environment};
use flash_api::StateManagerClient;
use flash_deploy::mothership;
use flash_deploy::provision::DeployContext;
use flash_deploy::{MOTHERSHIP, str_field};

/// What `deploy new` did.
#[derive(Debug)]
pub struct NewEnvironment {
    pub app_id: String,
    pub app_created: bool,
    pub environment_id: String,
    pub environment_created: bool,
    /// The environment's mothership endpoint.
    pub mothership_id: String,
}

/// Creates the app if needed, then the environment and its mothership endpoint; records
/// `require_auth` locally. Running it again for an existing environment re-saves the
/// mothership (for a new key, auth setting or image) and creates nothing else. `image`
/// overrides the published `flash-host` image its template names.
pub async fn new_environment(
    sm: &StateManagerClient,
    state: Option<&ResourceManager>,
    app_name: &str,
    env_name: &str,
    require_auth: bool,
    image: Option<&str>,
) -> Result<NewEnvironment> {
    if env_name.trim().is_empty() {
        bail!("the environment name must not be empty");
    }
    let (app, app_created) = match sm.app_by_name(app_name).await? {
        Some(app) => (app, false),
        None => (sm.create_app(app_name).await?, true),
    };
    let app_id = str_field(&app, "id")?.to_string();
    let (env, environment_created) = match sm.environment_by_name(&app_id, env_name).await? {
        Some(env) => (env, false),
        None => (sm.create_environment(&app_id, env_name).await?, true),
    };
    let environment_id = str_field(&env, "id")?.to_string();
    let ctx = DeployContext {
        app: app_name.to_string(),
        env_name: env_name.to_string(),
        env_id: environment_id.clone(),
        api_key: sm.api_key().to_string(),
        require_auth,
        image: image.map(str::to_string),
    };
    let mothership_id = mothership::ensure_endpoint(sm, &env, &ctx).await?;
    if let Some(state) = state {
        state.update(|s| {
            let entry = s.environments.entry(env_name.to_string()).or_default();
            if entry.environment_id != environment_id {
                *entry = EnvironmentState::default();
            }
            entry.environment_id = environment_id.clone();
            entry.app = app_name.to_string();
            entry.require_auth = require_auth;
            entry.mothership = Some(mothership_id.clone());
        })?;
    }
    Ok(NewEnvironment {
        app_id,
        app_created,
        environment_id,
        environment_created,
        mothership_id,
    })
}

/// One environment row of `deploy list`.
#[derive(Debug, Clone)]
pub struct EnvironmentRow {
    pub app: String,
    pub name: String,
    pub id: String,
    pub active_build: Option<String>,
    pub created_at: Option<String>,
}

/// The environments of `app` (or of every app).
pub async fn list(sm: &StateManagerClient, app: Option<&str>) -> Result<Vec<EnvironmentRow>> {
    let apps = match app {
        Some(name) => vec![require_app(sm, name).await?],
        None => sm.apps().await?,
    };
    let mut rows = Vec::new();
    for app in &apps {
        let app_name = app.get("name").and_then(Value::as_str).unwrap_or("");
        for env in app["flashEnvironments"].as_array().into_iter().flatten() {
            let s = |k: &str| env.get(k).and_then(Value::as_str).map(str::to_string);
            rows.push(EnvironmentRow {
                app: app_name.to_string(),
                name: s("name").unwrap_or_default(),
                id: s("id").unwrap_or_default(),
                active_build: s("activeBuildId"),
                created_at: s("createdAt"),
            });
        }
    }
    Ok(rows)
}

/// One endpoint of `deploy info`.
#[derive(Debug, Clone)]
pub struct EndpointInfo {
    pub resource: String,
    pub endpoint_id: String,
    pub url: String,
    pub load_balanced: bool,
    /// `workers` of `/v2/{id}/health`, when it answered.
    pub workers: Option<Value>,
}

/// What `deploy info` shows.
#[derive(Debug)]
pub struct EnvironmentInfo {
    pub app: String,
    pub name: String,
    pub id: String,
    pub state: Option<String>,
    pub active_build: Option<String>,
    pub created_at: Option<String>,
    pub endpoints: Vec<EndpointInfo>,
}

/// Status of environment `env`: active build, endpoints, worker counts.
pub async fn info(
    sm: &StateManagerClient,
    app_name: &str,
    env_name: &str,
) -> Result<EnvironmentInfo> {
    let app = require_app(sm, app_name).await?;
    let env = require_environment(sm, &app, env_name).await?;
    let s = |k: &str| env.get(k).and_then(Value::as_str).map(str::to_string);
    let active_build = s("activeBuildId");
    let manifest = match &active_build {
        Some(b) => sm.build_manifest(b).await?,
        None => Value::Null,
    };
    let mut endpoints = Vec::new();
    let mut seen = BTreeSet::new();
    if let Some(resources) = manifest.get("resources").and_then(Value::as_object) {
        for (name, r) in resources {
            let Some(id) = r.get("endpoint_id").and_then(Value::as_str) else {
                continue;
            };
            let lb = r
                .get("is_load_balanced")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            seen.insert(id.to_string());
            endpoints.push(EndpointInfo {
                resource: name.clone(),
                endpoint_id: id.to_string(),
                url: manifest["resources_endpoints"][name]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| sm.endpoint_url(id, lb)),
                load_balanced: lb,
                workers: None,
            });
        }
    }
    for ep in env["endpoints"].as_array().into_iter().flatten() {
        if let Some(id) = ep.get("id").and_then(Value::as_str)
            && seen.insert(id.to_string())
        {
            let name = ep.get("name").and_then(Value::as_str).unwrap_or("");
            // The mothership is load-balanced; any other endpoint outside the manifest is
            // shown with its queue URL.
            let lb = name == MOTHERSHIP;
            endpoints.push(EndpointInfo {
                resource: name.to_string(),
                endpoint_id: id.to_string(),
                url: sm.endpoint_url(id, lb),
                load_balanced: lb,
                workers: None,
            });
        }
    }
    for ep in &mut endpoints {
        ep.workers = sm.endpoint_workers(&ep.endpoint_id).await;
    }
    Ok(EnvironmentInfo {
        app: app_name.to_string(),
        name: s("name").unwrap_or_else(|| env_name.to_string()),
        id: s("id").unwrap_or_default(),
        state: s("state"),
        active_build,
        created_at: s("createdAt"),
        endpoints,
    })
}

/// Deletes every endpoint of environment `env`, then the environment; returns the
/// endpoint ids deleted.
pub async fn delete(
    sm: &StateManagerClient,
    state: Option<&ResourceManager>,
    app_name: &str,
    env_name: &str,
) -> Result<Vec<String>> {
    let app = require_app(sm, app_name).await?;
    let env = require_environment(sm, &app, env_name).await?;
    let env_id = str_field(&env, "id")?.to_string();
    let local = match state {
        Some(rm) => rm.environment(env_name)?,
        None => None,
    };
    let mut ids: BTreeSet<String> = previous_deployment(sm, &env, local.as_ref())
        .await?
        .resources
        .into_values()
        .map(|d| d.endpoint_id)
        .collect();
    for ep in env["endpoints"].as_array().into_iter().flatten() {
        if let Some(id) = ep.get("id").and_then(Value::as_str) {
            ids.insert(id.to_string());
        }
    }
    for id in &ids {
        sm.delete_endpoint(id).await?;
    }
    sm.delete_environment(&env_id).await?;
    if let Some(rm) = state {
        rm.update(|s| {
            s.environments.remove(env_name);
        })?;
    }
    Ok(ids.into_iter().collect())
}
