//! Environments: `flash deploy new` (with the mothership), `list`, `info` and `delete`.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use super::resource_manager::{EnvironmentState, ResourceManager};
use super::send::{lease_holder, previous_deployment};
use super::{require_app, require_environment};
use flash_api::StateManagerClient;
use flash_deploy::lease::{Lease, LeaseOptions};
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
    // Saving the mothership changes the environment: wait for a deploy in progress (the
    // mothership itself reconciling after the last send, say) instead of being refused.
    let lease = Lease::acquire(
        sm,
        &environment_id,
        env_name,
        &lease_holder("flash deploy new"),
        &LeaseOptions::default(),
        |holder| tracing::info!("waiting for {holder} to finish with `{env_name}`"),
    )
    .await?;
    let saved = mothership::ensure_endpoint(lease.client(), &env, &ctx).await;
    lease.release().await;
    let mothership_id = saved?;
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
    Ok(apps.iter().flat_map(environment_rows).collect())
}

/// The rows of an app's `flashEnvironments` (as `getFlashAppByName` and `getFlashApps`
/// select them).
pub fn environment_rows(app: &Value) -> Vec<EnvironmentRow> {
    let app_name = app.get("name").and_then(Value::as_str).unwrap_or("");
    app["flashEnvironments"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|env| {
            let s = |k: &str| env.get(k).and_then(Value::as_str).map(str::to_string);
            EnvironmentRow {
                app: app_name.to_string(),
                name: s("name").unwrap_or_default(),
                id: s("id").unwrap_or_default(),
                active_build: s("activeBuildId"),
                created_at: s("createdAt"),
            }
        })
        .collect()
}

/// One endpoint of `deploy info`.
#[derive(Debug, Clone)]
pub struct EndpointInfo {
    pub resource: String,
    pub endpoint_id: String,
    pub url: String,
    pub load_balanced: bool,
    /// `/v2/{id}/health` (`jobs` and `workers`), when it answered.
    pub health: Option<Value>,
    /// A `flash server`'s figures of the last [`STATS_WINDOW`] (`count`, `failed`,
    /// `p50Ms`, `p99Ms`, `lastError`); `None` on RunPod, which has no such API.
    pub stats: Option<Value>,
}

/// The span `deploy info`'s latency figures cover.
pub const STATS_WINDOW: std::time::Duration = std::time::Duration::from_secs(5 * 60);

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
                health: None,
                stats: None,
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
                health: None,
                stats: None,
            });
        }
    }
    let ids: Vec<String> = endpoints.iter().map(|e| e.endpoint_id.clone()).collect();
    let stats = if ids.is_empty() {
        None
    } else {
        sm.endpoint_stats(&ids, STATS_WINDOW).await
    };
    for ep in &mut endpoints {
        ep.health = sm.endpoint_health(&ep.endpoint_id).await;
        ep.stats = stats.as_ref().and_then(|s| s.get(&ep.endpoint_id)).cloned();
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

/// One endpoint of an environment, as deletion sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvironmentEndpoint {
    pub id: String,
    /// The resource config (or `mothership`); empty when unknown.
    pub name: String,
}

/// Every endpoint of environment `env` (a `flashEnvironment` object): those the server lists,
/// those the active build's manifest publishes and those local state remembers (a send that
/// failed before publishing), the mothership first, so that it cannot bring back what is
/// being deleted.
pub async fn environment_endpoints(
    sm: &StateManagerClient,
    env: &Value,
    local: Option<&EnvironmentState>,
) -> Result<Vec<EnvironmentEndpoint>> {
    let mut endpoints: BTreeMap<String, String> = previous_deployment(sm, env, local)
        .await?
        .resources
        .into_iter()
        .map(|(name, d)| (d.endpoint_id, name))
        .collect();
    for ep in env["endpoints"].as_array().into_iter().flatten() {
        if let Some(id) = ep.get("id").and_then(Value::as_str) {
            let name = ep.get("name").and_then(Value::as_str).unwrap_or("");
            let entry = endpoints.entry(id.to_string()).or_default();
            if entry.is_empty() {
                *entry = name.to_string();
            }
        }
    }
    let mut endpoints: Vec<EnvironmentEndpoint> = endpoints
        .into_iter()
        .map(|(id, name)| EnvironmentEndpoint { id, name })
        .collect();
    endpoints.sort_by_key(|e| e.name != MOTHERSHIP);
    Ok(endpoints)
}

/// The local state of environment `env_name`, if it is the environment `env_id`.
pub(crate) fn local_environment(
    state: Option<&ResourceManager>,
    env_name: &str,
    env_id: &str,
) -> Result<Option<EnvironmentState>> {
    Ok(match state {
        Some(rm) => rm
            .environment(env_name)?
            .filter(|l| l.environment_id == env_id),
        None => None,
    })
}

/// Deletes every endpoint of environment `env` ([`environment_endpoints`]), then the
/// environment; returns the endpoints deleted.
pub async fn delete(
    sm: &StateManagerClient,
    state: Option<&ResourceManager>,
    app_name: &str,
    env_name: &str,
) -> Result<Vec<EnvironmentEndpoint>> {
    let app = require_app(sm, app_name).await?;
    let env = require_environment(sm, &app, env_name).await?;
    let env_id = str_field(&env, "id")?.to_string();
    let local = local_environment(state, env_name, &env_id)?;
    let endpoints = environment_endpoints(sm, &env, local.as_ref()).await?;
    for ep in &endpoints {
        sm.delete_endpoint(&ep.id).await.with_context(|| {
            format!(
                "deleting endpoint `{}` of `{env_name}` failed, so the environment was kept: run \
                 the command again",
                ep.id
            )
        })?;
    }
    sm.delete_environment(&env_id).await?;
    if let Some(rm) = state {
        rm.update(|s| {
            if s.environments
                .get(env_name)
                .is_some_and(|e| e.environment_id == env_id || e.environment_id.is_empty())
            {
                s.environments.remove(env_name);
            }
        })?;
    }
    Ok(endpoints)
}
