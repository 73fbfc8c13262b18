//! The deploy lifecycle against a State Manager (RunPod, or `flash server`).
//!
//! - [`client`]: the GraphQL client, server discovery and API key lookup;
//! - [`resource_manager`]: local state of deployed endpoints (`.flash/resources.json`);
//! - this module: what `flash deploy new/send/list/info/delete` and `flash call` do, as
//!   library functions the thin commands in `commands/` wire up.
//!
//! # `send`, and why in this order
//!
//! 1. upload the artifact (prepare → PUT → finalize) as a new build;
//! 2. **provision every resource before activation** (reference §7.3 is the defect this
//!    avoids): `saveEndpoint` per resource config, in parallel, each with retries. An
//!    endpoint is *reused* when its `config_hash` and its source hash are unchanged, *updated
//!    in place* (same id) when either changed, *created* when it has no endpoint yet;
//! 3. `deployBuildToEnvironment` — only once every endpoint exists, so a failure before
//!    this point leaves the previous build active and serving;
//! 4. `updateFlashBuildManifest`: `resources_endpoints` plus per resource `endpoint_id`,
//!    `template_id` and `source_hash`, so peers (and a deploy from another machine) find
//!    the endpoints;
//! 5. delete the endpoints of resources that are gone (§7.2: the reference only logs them)
//!    — after activation, so the previous build keeps its peers until it is replaced.
//!
//! **How code reaches endpoints whose config did not change.** On RunPod a worker loads the
//! artifact when it boots, and it reboots only when its endpoint or template is saved. So
//! each endpoint's template env carries `_FLASH_SOURCE_FINGERPRINT` (the reference's key):
//! the sha256 of the digests of the components serving *that* resource. A code change
//! re-saves exactly the endpoints whose components changed (a rolling release there); an
//! endpoint whose config and code are both unchanged is not touched at all. (`flash server`
//! additionally restarts every worker of an environment whose active build changes.)

pub mod client;
pub mod resource_manager;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use flash_manifest::Manifest;
use futures::StreamExt;
use serde_json::{Value, json};

pub use client::{DEFAULT_SERVER_URL, StateManager};
use resource_manager::{DeployedResource, EnvironmentState, ResourceManager};

/// Name of the artifact under `.flash/`.
pub const ARTIFACT_FILE: &str = "artifact.tar.gz";
/// Template env key that carries a resource's source hash (reference §5.6).
pub const SOURCE_FINGERPRINT_ENV: &str = "_FLASH_SOURCE_FINGERPRINT";
/// Image name of Flash endpoints (the worker entrypoint is `flash-host`).
pub const IMAGE_NAME: &str = "flash-host";
/// Top-level key of the published manifest with deploy settings (`require_auth`), so a
/// deploy without local state keeps them.
pub const DEPLOY_KEY: &str = "flash_deploy";
/// Name reserved for the environment's mothership endpoint.
pub const MOTHERSHIP: &str = "mothership";

/// Connects to the server at `url` with the discovered API key.
pub fn connect(url: &str) -> Result<StateManager> {
    let (key, source) = client::discover_api_key()?;
    StateManager::new(url, key, &source)
}

fn str_field<'a>(v: &'a Value, key: &str) -> Result<&'a str> {
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

// ---------------------------------------------------------------------------------------
// new

/// What `deploy new` did.
#[derive(Debug)]
pub struct NewEnvironment {
    pub app_id: String,
    pub app_created: bool,
    pub environment_id: String,
    pub environment_created: bool,
}

/// Creates the app if needed, then the environment; records `require_auth` locally.
pub async fn new_environment(
    sm: &StateManager,
    state: Option<&ResourceManager>,
    app_name: &str,
    env_name: &str,
    require_auth: bool,
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
    if let Some(state) = state {
        state.update(|s| {
            let entry = s.environments.entry(env_name.to_string()).or_default();
            if entry.environment_id != environment_id {
                *entry = EnvironmentState::default();
            }
            entry.environment_id = environment_id.clone();
            entry.app = app_name.to_string();
            entry.require_auth = require_auth;
        })?;
    }
    Ok(NewEnvironment {
        app_id,
        app_created,
        environment_id,
        environment_created,
    })
}

// ---------------------------------------------------------------------------------------
// send

/// What happened to one resource's endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Created,
    UpdatedConfig,
    UpdatedCode,
    Unchanged,
    Deleted,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Created => "created",
            Action::UpdatedConfig => "updated (config)",
            Action::UpdatedCode => "updated (code)",
            Action::Unchanged => "unchanged",
            Action::Deleted => "deleted",
        }
    }
}

/// One row of the `send` report.
#[derive(Debug, Clone)]
pub struct ResourceReport {
    pub resource: String,
    pub load_balanced: bool,
    pub endpoint_id: String,
    pub url: String,
    pub action: Action,
}

/// What `send` did.
#[derive(Debug)]
pub struct SendReport {
    pub build_id: String,
    pub environment_id: String,
    pub artifact_size: u64,
    pub resources: Vec<ResourceReport>,
}

/// Options of `send`.
#[derive(Debug, Clone)]
pub struct SendOptions {
    /// `saveEndpoint` calls in flight at once.
    pub concurrency: usize,
    /// Attempts per `saveEndpoint`.
    pub attempts: u32,
}

impl Default for SendOptions {
    fn default() -> Self {
        Self {
            concurrency: 3,
            attempts: 3,
        }
    }
}

/// Progress callbacks of `send` (the CLI draws them; tests ignore them).
pub trait SendProgress: Sync {
    fn upload_started(&self, _bytes: u64) {}
    fn uploaded(&self, _bytes: u64) {}
    fn upload_finished(&self) {}
    fn step(&self, _message: &str) {}
}

/// No progress output.
pub struct Quiet;
impl SendProgress for Quiet {}

/// sha256 over the digests of the components that serve `resource`.
pub fn source_hash(manifest: &Manifest, resource: &str) -> String {
    let mut lines = String::new();
    if let Some(entry) = manifest.resources.get(resource) {
        for file in entry.component_files() {
            let sha = manifest
                .components
                .get(file)
                .map(|c| c.sha256.as_str())
                .or_else(|| {
                    entry
                        .functions
                        .iter()
                        .find(|f| f.component == file)
                        .map(|f| f.component_sha256.as_str())
                })
                .unwrap_or("");
            lines.push_str(&format!("{file} {sha}\n"));
        }
        // Models the resource's hosts preload are part of what it serves.
        for (_, model) in manifest.models_for(Some(resource)) {
            lines.push_str(&format!("{} {}\n", model.file, model.sha256));
        }
    }
    flash_manifest::sha256_hex(lines.as_bytes())
}

/// Who the endpoints are deployed for (goes into every template env).
struct DeployContext<'a> {
    app: &'a str,
    env_name: &'a str,
    env_id: &'a str,
    api_key: &'a str,
    require_auth: bool,
}

/// The template env of a resource's endpoint (reference §5.6).
fn template_env(
    ctx: &DeployContext<'_>,
    resource: &str,
    load_balanced: bool,
    source: &str,
) -> Vec<Value> {
    let mut env: Vec<(&str, &str)> = vec![
        (SOURCE_FINGERPRINT_ENV, source),
        ("FLASH_RESOURCE_NAME", resource),
        ("FLASH_APP", ctx.app),
        ("FLASH_ENV", ctx.env_name),
        ("FLASH_ENVIRONMENT_ID", ctx.env_id),
        // Peers are discovered through the State Manager with the deployer's key.
        ("RUNPOD_API_KEY", ctx.api_key),
    ];
    if load_balanced {
        env.push(("FLASH_ENDPOINT_TYPE", "lb"));
        if !ctx.require_auth {
            env.push(("FLASH_DISABLE_RP_AUTH", "true"));
        }
    }
    env.into_iter()
        .map(|(k, v)| json!({ "key": k, "value": v }))
        .collect()
}

/// The `EndpointInput` fields a resource config determines (reference §1.4).
fn endpoint_fields(
    entry: &flash_manifest::ResourceEntry,
) -> Result<serde_json::Map<String, Value>> {
    let config = serde_json::to_value(entry).context("serialising a resource config")?;
    let mut out = serde_json::Map::new();
    for key in [
        "workersMin",
        "workersMax",
        "idleTimeout",
        "executionTimeoutMs",
        "scalerType",
        "scalerValue",
        "gpuIds",
        "gpuCount",
        "instanceIds",
    ] {
        if let Some(v) = config.get(key).filter(|v| !v.is_null()) {
            out.insert(key.to_string(), v.clone());
        }
    }
    out.insert(
        "type".into(),
        json!(if entry.is_load_balanced { "LB" } else { "QB" }),
    );
    out.insert("flashBootType".into(), json!("FLASHBOOT"));
    Ok(out)
}

/// What `send` will do for one resource.
struct Plan {
    resource: String,
    load_balanced: bool,
    config_hash: String,
    source_hash: String,
    previous: Option<DeployedResource>,
    action: Action,
}

/// The previous deployment of each resource: local state first, then the active build's
/// manifest on the server (so state survives a lost `.flash/` or a deploy from CI).
async fn previous_deployment(
    sm: &StateManager,
    env: &Value,
    local: Option<&EnvironmentState>,
) -> Result<Previous> {
    let env_id = str_field(env, "id")?;
    let mut prev: BTreeMap<String, DeployedResource> = BTreeMap::new();
    let mut require_auth = None;
    if let Some(build) = env.get("activeBuildId").and_then(Value::as_str) {
        let manifest = sm.build_manifest(build).await?;
        require_auth = manifest[DEPLOY_KEY]["require_auth"].as_bool();
        if let Some(resources) = manifest.get("resources").and_then(Value::as_object) {
            for (name, r) in resources {
                let Some(id) = r.get("endpoint_id").and_then(Value::as_str) else {
                    continue;
                };
                let s = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or("").to_string();
                let url = manifest["resources_endpoints"][name]
                    .as_str()
                    .unwrap_or("")
                    .to_string();
                prev.insert(
                    name.clone(),
                    DeployedResource {
                        endpoint_id: id.to_string(),
                        template_id: r
                            .get("template_id")
                            .and_then(Value::as_str)
                            .map(str::to_string),
                        config_hash: s("config_hash"),
                        source_hash: s("source_hash"),
                        url,
                    },
                );
            }
        }
    }
    if let Some(local) = local.filter(|l| l.environment_id == env_id) {
        for (name, r) in &local.resources {
            prev.insert(name.clone(), r.clone());
        }
        require_auth = Some(local.require_auth);
    }
    Ok(Previous {
        resources: prev,
        require_auth: require_auth.unwrap_or(false),
    })
}

/// What was deployed to an environment before this send.
struct Previous {
    resources: BTreeMap<String, DeployedResource>,
    /// `deploy new --require-auth`, from local state or the active build's manifest.
    require_auth: bool,
}

/// Uploads the artifact with progress; returns its object key.
async fn upload(
    sm: &StateManager,
    app_id: &str,
    bytes: Vec<u8>,
    progress: &dyn SendProgress,
) -> Result<String> {
    let size = bytes.len() as u64;
    let (url, object_key) = sm.prepare_upload(app_id, size).await?;
    progress.upload_started(size);
    const CHUNK: usize = 64 * 1024;
    let chunks: Vec<Vec<u8>> = bytes.chunks(CHUNK).map(<[u8]>::to_vec).collect();
    // The stream reports each chunk as reqwest takes it.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
    let body =
        reqwest::Body::wrap_stream(futures::stream::iter(chunks.into_iter().map(move |c| {
            let _ = tx.send(c.len() as u64);
            Ok::<_, std::io::Error>(c)
        })));
    // No Authorization on the presigned PUT (reference §1.6).
    let put = sm
        .http()
        .put(&url)
        .header(reqwest::header::CONTENT_TYPE, "application/gzip")
        .header(reqwest::header::CONTENT_LENGTH, size)
        .timeout(Duration::from_secs(600))
        .body(body)
        .send();
    tokio::pin!(put);
    let resp = loop {
        tokio::select! {
            resp = &mut put => break resp,
            Some(n) = rx.recv() => progress.uploaded(n),
        }
    };
    progress.upload_finished();
    let resp = resp.map_err(|e| sm.send_error("uploading the artifact", e))?;
    if !resp.status().is_success() {
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        bail!("uploading the artifact failed: HTTP {status}: {text}");
    }
    Ok(object_key)
}

/// `flash deploy send`: uploads `.flash/artifact.tar.gz`, provisions, activates, publishes.
pub async fn send(
    sm: &StateManager,
    flash_dir: &Path,
    env_name: &str,
    options: &SendOptions,
    progress: &dyn SendProgress,
) -> Result<SendReport> {
    let artifact_path = flash_dir.join(ARTIFACT_FILE);
    let manifest_path = flash_dir.join(flash_manifest::MANIFEST_FILE_NAME);
    if !artifact_path.is_file() {
        bail!(
            "no artifact at {}: run `flash build` first",
            artifact_path.display()
        );
    }
    if !manifest_path.is_file() {
        bail!(
            "no manifest at {}: run `flash build` first",
            manifest_path.display()
        );
    }
    let manifest_json: Value = serde_json::from_slice(
        &std::fs::read(&manifest_path)
            .with_context(|| format!("reading {}", manifest_path.display()))?,
    )
    .with_context(|| {
        format!(
            "{} is not JSON: run `flash build` again",
            manifest_path.display()
        )
    })?;
    let manifest: Manifest = serde_json::from_value(manifest_json.clone()).with_context(|| {
        format!(
            "{} is not a Flash manifest: run `flash build` again",
            manifest_path.display()
        )
    })?;
    if manifest.resources.contains_key(MOTHERSHIP) {
        bail!("the resource name `{MOTHERSHIP}` is reserved: rename that resource config");
    }
    let artifact = std::fs::read(&artifact_path)
        .with_context(|| format!("reading {}", artifact_path.display()))?;
    if artifact.len() < 2 || artifact[..2] != [0x1f, 0x8b] {
        bail!(
            "{} is not a gzip file: run `flash build` again",
            artifact_path.display()
        );
    }
    let artifact_size = artifact.len() as u64;

    let app_name = manifest.project_name.clone();
    let app = require_app(sm, &app_name).await?;
    let app_id = str_field(&app, "id")?.to_string();
    let env = require_environment(sm, &app, env_name).await?;
    let env_id = str_field(&env, "id")?.to_string();

    let rm = ResourceManager::new(flash_dir);
    let local = rm
        .environment(env_name)?
        .filter(|l| l.environment_id == env_id);
    let Previous {
        resources: previous,
        require_auth,
    } = previous_deployment(sm, &env, local.as_ref()).await?;

    // Plan: reuse, update or create each resource's endpoint.
    let mut plans = Vec::new();
    for (name, entry) in &manifest.resources {
        let config_hash = flash_manifest::config_hash::config_hash(entry);
        let source = source_hash(&manifest, name);
        let mut prev = previous.get(name).cloned();
        if let Some(p) = &prev {
            match sm.endpoint(&p.endpoint_id).await? {
                Some(ep) => {
                    if let Some(p) = prev.as_mut()
                        && p.template_id.is_none()
                    {
                        p.template_id = ep
                            .get("templateId")
                            .and_then(Value::as_str)
                            .map(str::to_string);
                    }
                }
                None => {
                    tracing::warn!(
                        resource = %name,
                        endpoint = %p.endpoint_id,
                        "the endpoint recorded for this resource no longer exists; creating a new one"
                    );
                    prev = None;
                }
            }
        }
        let action = match &prev {
            None => Action::Created,
            Some(p) if p.config_hash != config_hash => Action::UpdatedConfig,
            Some(p) if p.source_hash != source => Action::UpdatedCode,
            Some(_) => Action::Unchanged,
        };
        plans.push(Plan {
            resource: name.clone(),
            load_balanced: entry.is_load_balanced,
            config_hash,
            source_hash: source,
            previous: prev,
            action,
        });
    }

    progress.step("uploading the artifact");
    let object_key = upload(sm, &app_id, artifact, progress).await?;
    let build_id = sm
        .finalize_upload(&app_id, &object_key, &manifest_json)
        .await?;

    // Provision every resource before activation, in parallel.
    progress.step("provisioning endpoints");
    let ctx = DeployContext {
        app: &app_name,
        env_name,
        env_id: &env_id,
        api_key: sm.api_key(),
        require_auth,
    };
    let results: Vec<(usize, Result<DeployedResource>)> =
        futures::stream::iter(plans.iter().enumerate().map(|(i, plan)| {
            let ctx = &ctx;
            let manifest = &manifest;
            async move {
                (
                    i,
                    provision(sm, ctx, manifest, plan, options.attempts).await,
                )
            }
        }))
        .buffer_unordered(options.concurrency.max(1))
        .collect()
        .await;

    let mut deployed: BTreeMap<String, DeployedResource> = BTreeMap::new();
    let mut failures = Vec::new();
    for (i, result) in results {
        match result {
            Ok(d) => {
                deployed.insert(plans[i].resource.clone(), d);
            }
            Err(e) => failures.push(format!("{}: {e:#}", plans[i].resource)),
        }
    }
    if !failures.is_empty() {
        // Remember the endpoints that exist now (so the next send reuses them) but not their
        // hashes (so it saves them again); the previous build stays active.
        rm.update(|s| {
            let e = s.environments.entry(env_name.to_string()).or_default();
            e.environment_id = env_id.clone();
            e.app = app_name.clone();
            for (name, d) in &deployed {
                let mut d = d.clone();
                d.config_hash.clear();
                d.source_hash.clear();
                e.resources.insert(name.clone(), d);
            }
        })?;
        failures.sort();
        bail!(
            "provisioning failed, so the new build was not activated (the previous one keeps \
             serving); fix the cause and run `flash deploy send {env_name}` again:\n  {}",
            failures.join("\n  ")
        );
    }

    progress.step("activating the build");
    sm.activate(&env_id, &build_id).await?;

    progress.step("publishing endpoints");
    let mut published = manifest_json.clone();
    let mut endpoints = serde_json::Map::new();
    for (name, d) in &deployed {
        endpoints.insert(name.clone(), json!(d.url));
        if let Some(r) = published["resources"][name.as_str()].as_object_mut() {
            r.insert("endpoint_id".into(), json!(d.endpoint_id));
            r.insert("source_hash".into(), json!(d.source_hash));
            r.insert("config_hash".into(), json!(d.config_hash));
            if let Some(t) = &d.template_id {
                r.insert("template_id".into(), json!(t));
            }
        }
    }
    published["resources_endpoints"] = Value::Object(endpoints);
    published[DEPLOY_KEY] = json!({ "environment": env_name, "require_auth": require_auth });
    sm.update_manifest(&build_id, &published).await?;

    rm.update(|s| {
        let e = s.environments.entry(env_name.to_string()).or_default();
        e.environment_id = env_id.clone();
        e.app = app_name.clone();
        e.resources = deployed.clone();
    })?;

    // Endpoints of resources that are gone: everything the environment, the previous
    // build or local state knew that is not deployed now (never the mothership).
    let keep: BTreeSet<&str> = deployed.values().map(|d| d.endpoint_id.as_str()).collect();
    let mut removed: BTreeMap<String, (String, String)> = BTreeMap::new();
    for (name, p) in &previous {
        if !keep.contains(p.endpoint_id.as_str()) {
            removed.insert(p.endpoint_id.clone(), (name.clone(), p.url.clone()));
        }
    }
    if let Some(eps) = env.get("endpoints").and_then(Value::as_array) {
        for ep in eps {
            let (Some(id), name) = (
                ep.get("id").and_then(Value::as_str),
                ep.get("name").and_then(Value::as_str).unwrap_or(""),
            ) else {
                continue;
            };
            if name != MOTHERSHIP && !keep.contains(id) && !removed.contains_key(id) {
                removed.insert(id.to_string(), (name.to_string(), String::new()));
            }
        }
    }
    let mut reports: Vec<ResourceReport> = plans
        .iter()
        .map(|p| {
            let d = &deployed[&p.resource];
            ResourceReport {
                resource: p.resource.clone(),
                load_balanced: p.load_balanced,
                endpoint_id: d.endpoint_id.clone(),
                url: d.url.clone(),
                action: p.action,
            }
        })
        .collect();
    if !removed.is_empty() {
        progress.step("deleting endpoints of removed resources");
    }
    for (id, (name, url)) in removed {
        sm.delete_endpoint(&id).await.with_context(|| {
            format!(
                "the new build is active, but deleting endpoint `{id}` of the removed \
                 resource `{name}` failed: delete it with `flash deploy send {env_name}` again"
            )
        })?;
        reports.push(ResourceReport {
            resource: name,
            load_balanced: url.contains("/lb/"),
            endpoint_id: id,
            url,
            action: Action::Deleted,
        });
    }
    Ok(SendReport {
        build_id,
        environment_id: env_id,
        artifact_size,
        resources: reports,
    })
}

/// Saves one resource's endpoint (create, or update with its id), with retries.
async fn provision(
    sm: &StateManager,
    ctx: &DeployContext<'_>,
    manifest: &Manifest,
    plan: &Plan,
    attempts: u32,
) -> Result<DeployedResource> {
    let url_of = |id: &str| {
        if plan.load_balanced {
            sm.lb_url(id)
        } else {
            sm.queue_url(id)
        }
    };
    if plan.action == Action::Unchanged
        && let Some(prev) = &plan.previous
    {
        return Ok(DeployedResource {
            url: url_of(&prev.endpoint_id),
            ..prev.clone()
        });
    }
    let entry = manifest
        .resources
        .get(&plan.resource)
        .context("resource vanished from the manifest")?;
    let mut input = endpoint_fields(entry)?;
    input.insert("name".into(), json!(plan.resource));
    input.insert("flashEnvironmentId".into(), json!(ctx.env_id));
    let env = template_env(ctx, &plan.resource, plan.load_balanced, &plan.source_hash);
    let template_name = format!("{}-{}-{}", ctx.app, ctx.env_name, plan.resource);
    let template = json!({ "name": template_name, "imageName": IMAGE_NAME, "env": env });
    let existing_template = plan.previous.as_ref().and_then(|p| p.template_id.clone());
    match (&plan.previous, &existing_template) {
        // Update with a known template: endpoint by id, then the template (reference §1.5).
        (Some(prev), Some(_)) => {
            input.insert("id".into(), json!(prev.endpoint_id));
            input.insert("templateId".into(), json!(existing_template));
        }
        (Some(prev), None) => {
            input.insert("id".into(), json!(prev.endpoint_id));
            input.insert("template".into(), template.clone());
        }
        (None, _) => {
            input.insert("template".into(), template.clone());
        }
    }
    let input = Value::Object(input);
    let saved = client::retry(attempts, || sm.save_endpoint(&input))
        .await
        .with_context(|| format!("saving the endpoint of `{}`", plan.resource))?;
    if let Some(template_id) = &existing_template {
        let t = json!({
            "id": template_id, "name": template_name, "imageName": IMAGE_NAME,
            "env": env, "volumeInGb": 0,
        });
        client::retry(attempts, || sm.save_template(&t))
            .await
            .with_context(|| format!("saving the template of `{}`", plan.resource))?;
    }
    let id = str_field(&saved, "id")?.to_string();
    Ok(DeployedResource {
        url: url_of(&id),
        template_id: saved
            .get("templateId")
            .and_then(Value::as_str)
            .map(str::to_string)
            .or(existing_template),
        endpoint_id: id,
        config_hash: plan.config_hash.clone(),
        source_hash: plan.source_hash.clone(),
    })
}

// ---------------------------------------------------------------------------------------
// list, info, delete

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
pub async fn list(sm: &StateManager, app: Option<&str>) -> Result<Vec<EnvironmentRow>> {
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
pub async fn info(sm: &StateManager, app_name: &str, env_name: &str) -> Result<EnvironmentInfo> {
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
                    .unwrap_or_else(|| if lb { sm.lb_url(id) } else { sm.queue_url(id) }),
                load_balanced: lb,
                workers: None,
            });
        }
    }
    for ep in env["endpoints"].as_array().into_iter().flatten() {
        if let Some(id) = ep.get("id").and_then(Value::as_str)
            && seen.insert(id.to_string())
        {
            endpoints.push(EndpointInfo {
                resource: ep
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                endpoint_id: id.to_string(),
                url: sm.queue_url(id),
                load_balanced: false,
                workers: None,
            });
        }
    }
    for ep in &mut endpoints {
        let url = format!("{}/health", sm.queue_url(&ep.endpoint_id));
        if let Ok(resp) = sm
            .request(reqwest::Method::GET, &url)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            && resp.status().is_success()
            && let Ok(body) = resp.json::<Value>().await
        {
            ep.workers = body.get("workers").cloned();
        }
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
    sm: &StateManager,
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

// ---------------------------------------------------------------------------------------
// call

/// Picks the environment for `flash call` without `--env`: the only one of the app.
pub async fn default_environment(sm: &StateManager, app_name: &str) -> Result<String> {
    let rows = list(sm, Some(app_name)).await?;
    match rows.as_slice() {
        [one] => Ok(one.name.clone()),
        [] => {
            bail!("app `{app_name}` has no environment: create one with `flash deploy new <env>`")
        }
        many => bail!(
            "app `{app_name}` has several environments ({}): pick one with --env",
            many.iter()
                .map(|r| r.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Calls `function` of the environment's active build with keyword arguments `kwargs`;
/// returns the function's result.
pub async fn call(
    sm: &StateManager,
    app_name: &str,
    env_name: &str,
    function: &str,
    kwargs: &Value,
    timeout: Duration,
) -> Result<Value> {
    if !kwargs.is_object() {
        bail!(
            "the arguments must be a JSON object of keyword arguments, e.g. '{{\"text\": \"hi\"}}'"
        );
    }
    let app = require_app(sm, app_name).await?;
    let env = require_environment(sm, &app, env_name).await?;
    let build = env
        .get("activeBuildId")
        .and_then(Value::as_str)
        .with_context(|| {
            format!(
                "environment `{env_name}` has no active build: deploy one with `flash deploy \
                 send {env_name}`"
            )
        })?;
    let manifest_json = sm.build_manifest(build).await?;
    let manifest: Manifest = serde_json::from_value(manifest_json)
        .context("the active build's manifest is not a Flash manifest")?;
    let Some((resource, entry)) = manifest.function(function) else {
        let known: Vec<&str> = manifest
            .function_registry
            .keys()
            .map(String::as_str)
            .collect();
        bail!(
            "function `{function}` is not in the active build of `{env_name}` (it has: {})",
            known.join(", ")
        );
    };
    let url = manifest
        .resources_endpoints
        .as_ref()
        .and_then(|m| m.get(resource))
        .with_context(|| {
            format!(
                "resource `{resource}` has no endpoint in the active build: run `flash deploy \
                 send {env_name}`"
            )
        })?
        .trim_end_matches('/')
        .to_string();
    let deadline = Instant::now() + timeout;
    if entry.is_load_balanced {
        call_lb(sm, &url, entry, kwargs, deadline).await
    } else {
        call_queue(sm, &url, function, kwargs, deadline).await
    }
}

async fn call_lb(
    sm: &StateManager,
    url: &str,
    entry: &flash_manifest::FunctionEntry,
    kwargs: &Value,
    deadline: Instant,
) -> Result<Value> {
    let (method, target, body) = match (&entry.http_method, &entry.http_path) {
        (Some(m), Some(p)) => {
            let method = reqwest::Method::from_bytes(m.to_ascii_uppercase().as_bytes())
                .with_context(|| format!("bad HTTP method `{m}` in the manifest"))?;
            let body = (method != reqwest::Method::GET).then(|| kwargs.clone());
            (method, format!("{url}{p}"), body)
        }
        _ => (
            reqwest::Method::POST,
            format!("{url}/execute"),
            Some(json!({ "function_name": entry.name, "kwargs": kwargs })),
        ),
    };
    let remaining = deadline.saturating_duration_since(Instant::now());
    let mut req = sm.request(method.clone(), &target).timeout(remaining);
    if let Some(body) = &body {
        req = req.json(body);
    }
    let resp = req
        .send()
        .await
        .map_err(|e| sm.send_error(&format!("{method} {target}"), e))?;
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    if !status.is_success() {
        bail!("{method} {target} answered HTTP {status}: {value}");
    }
    Ok(value)
}

async fn call_queue(
    sm: &StateManager,
    url: &str,
    function: &str,
    kwargs: &Value,
    deadline: Instant,
) -> Result<Value> {
    let body = json!({ "input": { "function_name": function, "kwargs": kwargs } });
    let remaining = deadline.saturating_duration_since(Instant::now());
    let resp = sm
        .request(reqwest::Method::POST, &format!("{url}/runsync"))
        .timeout(remaining)
        .json(&body)
        .send()
        .await
        .map_err(|e| sm.send_error("runsync", e))?;
    let mut job = job_body(resp, "runsync").await?;
    loop {
        let status = job.get("status").and_then(Value::as_str).unwrap_or("");
        match status {
            "COMPLETED" => return Ok(job.get("output").cloned().unwrap_or(Value::Null)),
            "FAILED" | "CANCELLED" | "TIMED_OUT" => {
                let error = job.get("error").cloned().unwrap_or(Value::Null);
                let error = match error {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                bail!("`{function}` {status}: {error}");
            }
            _ => {}
        }
        let id = job
            .get("id")
            .and_then(Value::as_str)
            .with_context(|| format!("runsync answered without a job id: {job}"))?
            .to_string();
        if Instant::now() >= deadline {
            bail!("`{function}` did not finish in time (job {id} is {status}); raise --timeout");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let remaining = deadline.saturating_duration_since(Instant::now());
        let resp = sm
            .request(reqwest::Method::GET, &format!("{url}/status/{id}"))
            .timeout(remaining.max(Duration::from_secs(1)))
            .send()
            .await
            .map_err(|e| sm.send_error("status", e))?;
        job = job_body(resp, "status").await?;
    }
}

async fn job_body(resp: reqwest::Response, what: &str) -> Result<Value> {
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    if !status.is_success() {
        bail!("{what} answered HTTP {status}: {text}");
    }
    serde_json::from_str(&text).with_context(|| format!("{what} answered non-JSON: {text}"))
}

/// The project's `.flash` directory, if `start` is inside a project.
pub fn project_flash_dir(start: &Path) -> Option<(PathBuf, String)> {
    let project = crate::project::Project::discover(start).ok()?;
    Some((project.flash_dir(), project.name().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        serde_json::from_value(json!({
            "version": "1.0", "generated_at": "x", "project_name": "app",
            "resources": {
                "api": { "resource_type": "CpuLiveLoadBalancer", "is_load_balanced": true,
                    "config_hash": "h1", "instanceIds": ["cpu3c-1-2"], "workersMin": 1,
                    "workersMax": 3, "idleTimeout": 60, "scalerType": "REQUEST_COUNT",
                    "scalerValue": 4, "functions": [{ "name": "p", "module": "m",
                    "is_async": false, "is_class": false, "is_load_balanced": true,
                    "http_method": "POST", "http_path": "/p", "component": "components/a.wasm",
                    "component_sha256": "aa" }] },
                "gpu": { "resource_type": "LiveServerless", "is_load_balanced": false,
                    "config_hash": "h2", "gpuIds": "ADA_24", "workersMin": 0, "workersMax": 2,
                    "idleTimeout": 5, "scalerType": "QUEUE_DELAY", "scalerValue": 4,
                    "functions": [{ "name": "e", "module": "m", "is_async": false,
                    "is_class": false, "is_load_balanced": false,
                    "component": "components/b.wasm", "component_sha256": "bb" }] }
            },
            "function_registry": { "p": "api", "e": "gpu" },
            "components": {
                "components/a.wasm": { "sha256": "aa", "size": 1 },
                "components/b.wasm": { "sha256": "bb", "size": 1 }
            }
        }))
        .unwrap()
    }

    #[test]
    fn source_hash_follows_only_the_resources_own_components() {
        let m = manifest();
        let (api, gpu) = (source_hash(&m, "api"), source_hash(&m, "gpu"));
        assert_ne!(api, gpu);
        let mut changed = m.clone();
        changed
            .components
            .get_mut("components/b.wasm")
            .unwrap()
            .sha256 = "cc".into();
        assert_eq!(
            source_hash(&changed, "api"),
            api,
            "api's code did not change"
        );
        assert_ne!(source_hash(&changed, "gpu"), gpu);
    }

    #[test]
    fn endpoint_input_carries_the_config_and_the_type() {
        let m = manifest();
        let lb = endpoint_fields(&m.resources["api"]).unwrap();
        assert_eq!(lb["type"], "LB");
        assert_eq!(lb["instanceIds"], json!(["cpu3c-1-2"]));
        assert_eq!(lb["workersMin"], 1);
        assert_eq!(lb["scalerType"], "REQUEST_COUNT");
        assert!(!lb.contains_key("gpuIds"));
        let qb = endpoint_fields(&m.resources["gpu"]).unwrap();
        assert_eq!(qb["type"], "QB");
        assert_eq!(qb["gpuIds"], "ADA_24");
        assert_eq!(qb["idleTimeout"], 5);
    }

    #[test]
    fn template_env_marks_lb_and_opens_it_unless_auth_is_required() {
        let ctx = |require_auth| DeployContext {
            app: "app",
            env_name: "dev",
            env_id: "env-1",
            api_key: "k",
            require_auth,
        };
        let keys = |env: Vec<Value>| -> BTreeMap<String, String> {
            env.into_iter()
                .map(|e| {
                    (
                        e["key"].as_str().unwrap().to_string(),
                        e["value"].as_str().unwrap().to_string(),
                    )
                })
                .collect()
        };
        let open = keys(template_env(&ctx(false), "api", true, "src"));
        assert_eq!(open["FLASH_ENDPOINT_TYPE"], "lb");
        assert_eq!(open["FLASH_DISABLE_RP_AUTH"], "true");
        assert_eq!(open["FLASH_RESOURCE_NAME"], "api");
        assert_eq!(open["FLASH_ENVIRONMENT_ID"], "env-1");
        assert_eq!(open["RUNPOD_API_KEY"], "k");
        assert_eq!(open[SOURCE_FINGERPRINT_ENV], "src");
        let closed = keys(template_env(&ctx(true), "api", true, "src"));
        assert!(!closed.contains_key("FLASH_DISABLE_RP_AUTH"));
        let qb = keys(template_env(&ctx(false), "gpu", false, "src"));
        assert!(!qb.contains_key("FLASH_ENDPOINT_TYPE"));
        assert!(!qb.contains_key("FLASH_DISABLE_RP_AUTH"));
    }
}
