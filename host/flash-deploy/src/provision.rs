//! Making a manifest's resource configs real as endpoints: the engine that both
//! `flash deploy send` (on the developer's machine) and the mothership (on every boot, see
//! [`crate::mothership`]) drive.
//!
//! 1. [`plan`]: for each resource config, compare what is deployed (the endpoint recorded for
//!    it, checked live with `getEndpoint`) with what the manifest wants: *create* when there
//!    is no endpoint, *update (config)* when the `config_hash` differs, when the settings
//!    Flash itself writes into the template changed ([`managed_settings_hash`]: image, key,
//!    `--require-auth`) or the live endpoint's settings drifted from the config (someone
//!    edited it out of band), *update (code)* when
//!    only the source hash of the components serving it changed, otherwise *unchanged*.
//! 2. [`provision_all`]: `saveEndpoint` (and `saveTemplate`, reference §1.5) for every plan
//!    that is not unchanged, a few at a time. An update (the endpoint's id is known) is
//!    retried on transient failures; a create never blindly: after a failure that may have
//!    reached the server, the endpoint is looked up by name in the environment first, and
//!    one found there (most likely the one the lost create made) gets this resource's
//!    settings as an update. Records that name no endpoint are completed the same way
//!    before planning ([`adopt_by_name`]), so a deploy whose earlier run died after a create
//!    reuses that endpoint instead of making a second one.
//! 3. [`removed_endpoints`]: what the environment runs that no resource wants any more
//!    (never the mothership), for the caller to delete once the new build is active.
//! 4. [`published_manifest`]: the manifest with `resources_endpoints` and, per resource, the
//!    endpoint, template and hashes, as written back with `updateFlashBuildManifest` so peers
//!    and the next deploy (from any machine) find the endpoints.
//!
//! **How code reaches endpoints whose config did not change.** On RunPod a worker loads the
//! artifact when it boots, and it reboots only when its endpoint or template is saved. So
//! each endpoint's template env carries `_FLASH_SOURCE_FINGERPRINT` (the reference's key):
//! the sha256 of the digests of the components serving *that* resource. A code change
//! re-saves exactly the endpoints whose components changed (a rolling release there); an
//! endpoint whose config and code are both unchanged is not touched at all. (`flash server`
//! additionally restarts every worker of an environment whose active build changes.)

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, Result};
use flash_manifest::{Manifest, ResourceEntry};
use futures::StreamExt;
use serde_json::{Value, json};

use crate::{DEPLOY_KEY, MOTHERSHIP, str_field};
use flash_api::{Created, StateManagerClient};
use serde::{Deserialize, Serialize};

/// Template env key that carries a resource's source hash (reference §5.6).
pub const SOURCE_FINGERPRINT_ENV: &str = "_FLASH_SOURCE_FINGERPRINT";

/// One deployed resource config: the endpoint it is saved as and what it was saved with.
/// `flash deploy send` keeps these in `.flash/resources.json`; the published manifest
/// carries them too, so a deploy without local state (or the mothership) finds them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeployedResource {
    pub endpoint_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_id: Option<String>,
    pub config_hash: String,
    /// sha256 over the digests of the components serving this resource.
    pub source_hash: String,
    /// [`managed_settings_hash`] of the template Flash wrote (empty in records from before
    /// it existed, which a send then treats as changed).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub settings_hash: String,
    pub url: String,
    /// Keys of the resource config's own `env` as deployed (layout 2).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env_keys: Vec<String>,
}

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

/// One row of a deploy or reconciliation report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ResourceReport {
    pub resource: String,
    pub load_balanced: bool,
    pub endpoint_id: String,
    pub url: String,
    #[serde(serialize_with = "action_str")]
    pub action: Action,
}

impl ResourceReport {
    /// The row of `plan`'s resource, deployed as `endpoint`.
    pub fn deployed(plan: &Plan, endpoint: &DeployedResource) -> Self {
        Self {
            resource: plan.resource.clone(),
            load_balanced: plan.load_balanced,
            endpoint_id: endpoint.endpoint_id.clone(),
            url: endpoint.url.clone(),
            action: plan.action,
        }
    }

    /// The row of an endpoint deleted because its resource `name` was removed.
    pub fn deleted(
        sm: &StateManagerClient,
        endpoint_id: String,
        name: String,
        url: String,
    ) -> Self {
        Self {
            resource: name,
            load_balanced: sm.data_plane().is_lb_url(&url),
            endpoint_id,
            url,
            action: Action::Deleted,
        }
    }
}

fn action_str<S: serde::Serializer>(action: &Action, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(action.as_str())
}

/// Who the endpoints are deployed for (goes into every template env).
#[derive(Debug, Clone)]
pub struct DeployContext {
    pub app: String,
    pub env_name: String,
    pub env_id: String,
    /// The key endpoints use to find peers through the State Manager.
    pub api_key: String,
    /// Load-balanced endpoints require `Authorization` (`flash deploy new --require-auth`).
    pub require_auth: bool,
    /// The worker image the templates name; `None` means the published `flash-host`
    /// image of this version ([`host_image`]).
    pub image: Option<String>,
}

/// sha256 over the settings Flash itself writes into a resource's template, which the
/// resource config does not hold: the worker image, the key endpoints find peers with (its
/// sha256, never the key), and for load-balanced endpoints whether they require
/// `Authorization`. Toggling `--require-auth`, rotating the key or changing `--image` makes
/// a send save the endpoint again instead of answering "already deployed".
pub fn managed_settings_hash(ctx: &DeployContext, entry: &ResourceEntry) -> String {
    let mut lines = format!("image {}\n", host_image(entry, ctx.image.as_deref()));
    if holds_api_key(ctx, entry) {
        lines.push_str(&format!(
            "key {}\n",
            flash_manifest::sha256_hex(ctx.api_key.as_bytes())
        ));
    }
    if entry.is_load_balanced {
        lines.push_str(&format!("require_auth {}\n", ctx.require_auth));
    }
    flash_manifest::sha256_hex(lines.as_bytes())
}

/// sha256 over the digests of the components (and preloaded models) that serve `resource`.
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

/// Whether Flash sets `key` in template envs (so a live value of it is never kept by the
/// §1.5 merge: Flash owns it).
fn flash_managed_key(key: &str) -> bool {
    key.starts_with("FLASH_") || key.starts_with("_FLASH_") || key == "RUNPOD_API_KEY"
}

/// Whether the workers of `entry` are given the deployer's API key (`RUNPOD_API_KEY`):
/// only when they need it, unlike RunPod Flash (reference §7.6). They need it to find and
/// call peers (`makes_remote_calls`, decided at build time; see
/// [`flash_manifest::peer_calls`]) and, on load-balanced endpoints that require
/// `Authorization`, to check the callers' key.
pub fn holds_api_key(ctx: &DeployContext, entry: &ResourceEntry) -> bool {
    entry.makes_remote_calls || (entry.is_load_balanced && ctx.require_auth)
}

/// The template env of a resource's endpoint (reference §5.6): Flash's keys, then the
/// resource config's own `env`, copied verbatim.
pub fn template_env(
    ctx: &DeployContext,
    resource: &str,
    entry: &ResourceEntry,
    source: &str,
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = [
        (SOURCE_FINGERPRINT_ENV, source),
        ("FLASH_RESOURCE_NAME", resource),
        ("FLASH_APP", &ctx.app),
        ("FLASH_ENV", &ctx.env_name),
        ("FLASH_ENVIRONMENT_ID", &ctx.env_id),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    if holds_api_key(ctx, entry) {
        // Peers are discovered through the State Manager with the deployer's key.
        env.push(("RUNPOD_API_KEY".into(), ctx.api_key.clone()));
    }
    if entry.is_load_balanced {
        env.push(("FLASH_ENDPOINT_TYPE".into(), "lb".into()));
        if !ctx.require_auth {
            env.push(("FLASH_DISABLE_RP_AUTH".into(), "true".into()));
        }
    }
    for (k, v) in &entry.env {
        if !env.iter().any(|(key, _)| key == k) {
            env.push((k.clone(), v.clone()));
        }
    }
    env
}

/// The env to save on an existing template (reference §1.5): when the env Flash wants equals
/// what the template already has, the live env verbatim; otherwise the new env plus the live
/// keys that neither Flash nor the user's previous env ever set (platform-injected ones such
/// as `PORT` and `PORT_HEALTH` on load-balanced endpoints).
pub fn merge_template_env(
    wanted: &[(String, String)],
    live: &[(String, String)],
    previous_user_keys: &[String],
) -> Vec<(String, String)> {
    let injected = |k: &str| {
        !flash_managed_key(k)
            && !previous_user_keys.iter().any(|p| p == k)
            && !wanted.iter().any(|(w, _)| w == k)
    };
    let live_ours: BTreeMap<&str, &str> = live
        .iter()
        .filter(|(k, _)| !injected(k))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let wanted_map: BTreeMap<&str, &str> = wanted
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    if live_ours == wanted_map {
        return live.to_vec();
    }
    let mut merged = wanted.to_vec();
    merged.extend(live.iter().filter(|(k, _)| injected(k)).cloned());
    merged
}

fn env_json(env: &[(String, String)]) -> Value {
    Value::Array(
        env.iter()
            .map(|(k, v)| json!({ "key": k, "value": v }))
            .collect(),
    )
}

/// RunPod's GPU pools: what an endpoint that takes any GPU names (reference §6.5).
pub const ALL_GPU_POOLS: &str = "ADA_24,ADA_32_PRO,ADA_48_PRO,ADA_80_PRO,AMPERE_16,AMPERE_24,\
AMPERE_48,AMPERE_80,BLACKWELL_180,BLACKWELL_96,HOPPER_141";
/// RunPod's default lowest CUDA version of GPU workers.
pub const DEFAULT_MIN_CUDA_VERSION: &str = "12.8";
/// RunPod's default container disk of GPU workers, in GB.
pub const GPU_CONTAINER_DISK_GB: u32 = 64;
/// Where the published `flash-host` images live (see `image/` and the README).
pub const HOST_IMAGE_REPOSITORY: &str = "ghcr.io/flash-rs/flash-host";

/// The worker image of `entry`: `override_image` when set, else the published image of
/// this version for the resource's compute (`…:<version>-gpu` carries ONNX Runtime and
/// CUDA for `wasi:nn`, `…:<version>-cpu` is a static binary alone).
pub fn host_image(entry: &ResourceEntry, override_image: Option<&str>) -> String {
    match override_image {
        Some(image) => image.to_string(),
        None => {
            let variant = if is_gpu(entry) { "gpu" } else { "cpu" };
            format!(
                "{HOST_IMAGE_REPOSITORY}:{}-{variant}",
                env!("CARGO_PKG_VERSION")
            )
        }
    }
}

fn is_gpu(entry: &ResourceEntry) -> bool {
    entry.instance_ids.is_none()
}

/// The container disk of `entry`'s workers: the config's, else 64 GB for GPU workers and
/// the smallest instance's limit for CPU ones (reference §1.4).
pub fn container_disk_gb(entry: &ResourceEntry) -> u32 {
    entry.container_disk_gb.unwrap_or_else(|| {
        entry
            .instance_ids
            .iter()
            .flatten()
            .filter_map(|id| flash_manifest::builder::cpu_disk_limit_gb(id))
            .min()
            .unwrap_or(GPU_CONTAINER_DISK_GB)
    })
}

/// The `EndpointInput` fields a resource config determines, with RunPod's defaults for
/// what the config leaves unset (reference §1.4).
pub fn endpoint_fields(entry: &ResourceEntry) -> Result<serde_json::Map<String, Value>> {
    let config = serde_json::to_value(entry).context("serialising a resource config")?;
    let mut out = serde_json::Map::new();
    for key in [
        "workersMin",
        "workersMax",
        "idleTimeout",
        "scalerType",
        "scalerValue",
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
    out.insert(
        "executionTimeoutMs".into(),
        json!(entry.execution_timeout_ms.unwrap_or(0)),
    );
    out.insert("workersPFBTarget".into(), json!(0));
    if is_gpu(entry) {
        let pools = entry
            .gpu_ids
            .as_deref()
            .filter(|ids| !ids.is_empty() && !ids.eq_ignore_ascii_case("any"))
            .unwrap_or(ALL_GPU_POOLS);
        out.insert("gpuIds".into(), json!(pools));
        out.insert("gpuCount".into(), json!(entry.gpu_count.unwrap_or(1)));
        out.insert("allowedCudaVersions".into(), json!(""));
        out.insert(
            "minCudaVersion".into(),
            json!(
                entry
                    .min_cuda_version
                    .as_deref()
                    .unwrap_or(DEFAULT_MIN_CUDA_VERSION)
            ),
        );
        let locations = entry
            .locations
            .clone()
            .unwrap_or_else(|| flash_manifest::validate::DATA_CENTERS.join(","));
        out.insert("locations".into(), json!(locations));
    } else if let Some(locations) = &entry.locations {
        out.insert("locations".into(), json!(locations));
    }
    if entry.flashboot != Some(false) {
        out.insert("flashBootType".into(), json!("FLASHBOOT"));
    }
    Ok(out)
}

/// The `template` input of a new endpoint (reference §1.4's defaults).
fn template_json(
    name: &str,
    image: &str,
    container_disk_gb: u32,
    env: &[(String, String)],
) -> Value {
    json!({
        "name": name, "imageName": image, "env": env_json(env),
        "containerDiskInGb": container_disk_gb, "dockerArgs": "", "startScript": "",
        "containerRegistryAuthId": "", "ports": "", "advancedStart": false, "config": {},
    })
}

/// The fields of `wanted` whose live value differs (names only); `flashBootType` is not
/// echoed by every server and is left out.
pub fn drifted_fields(wanted: &serde_json::Map<String, Value>, live: &Value) -> Vec<String> {
    wanted
        .iter()
        .filter(|(k, _)| k.as_str() != "flashBootType")
        .filter(|(k, v)| live.get(k.as_str()).is_some_and(|l| l != *v))
        .map(|(k, _)| k.clone())
        .collect()
}

/// What to do for one resource.
#[derive(Debug, Clone)]
pub struct Plan {
    pub resource: String,
    pub load_balanced: bool,
    pub config_hash: String,
    pub source_hash: String,
    pub settings_hash: String,
    pub previous: Option<DeployedResource>,
    pub action: Action,
}

/// The previous deployment of each resource of an environment, read from a published
/// manifest (`resources.<name>.endpoint_id`, …; see [`published_manifest`]).
pub fn deployed_in(manifest: &Value) -> BTreeMap<String, DeployedResource> {
    let mut out = BTreeMap::new();
    let Some(resources) = manifest.get("resources").and_then(Value::as_object) else {
        return out;
    };
    for (name, r) in resources {
        let Some(id) = r.get("endpoint_id").and_then(Value::as_str) else {
            continue;
        };
        let s = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        out.insert(
            name.clone(),
            DeployedResource {
                endpoint_id: id.to_string(),
                template_id: r
                    .get("template_id")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                config_hash: s("config_hash"),
                source_hash: s("source_hash"),
                settings_hash: s("settings_hash"),
                url: manifest["resources_endpoints"][name]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
                env_keys: r
                    .get("env")
                    .and_then(Value::as_object)
                    .map(|e| e.keys().cloned().collect())
                    .unwrap_or_default(),
            },
        );
    }
    out
}

/// Endpoints of the environment (`env.endpoints`) named after a resource of `manifest`, as
/// records with no hashes (so the plan saves them again): what a deploy that died before
/// publishing, or whose answer to a create was lost, left there. Never the mothership.
pub fn adopt_by_name(env: &Value, manifest: &Manifest) -> BTreeMap<String, DeployedResource> {
    let mut adopted = BTreeMap::new();
    for e in env["endpoints"].as_array().into_iter().flatten() {
        let (Some(name), Some(id)) = (
            e.get("name").and_then(Value::as_str),
            e.get("id").and_then(Value::as_str),
        ) else {
            continue;
        };
        if name != MOTHERSHIP && manifest.resources.contains_key(name) {
            // The first of several with one name; the others are deleted as strays.
            adopted
                .entry(name.to_string())
                .or_insert_with(|| DeployedResource {
                    endpoint_id: id.to_string(),
                    ..Default::default()
                });
        }
    }
    adopted
}

/// Plans the deployment of every resource of `manifest` over `previous`. Each recorded
/// endpoint is looked up live: one that is gone is created again, one whose settings differ
/// from its config is updated.
pub async fn plan(
    sm: &StateManagerClient,
    manifest: &Manifest,
    previous: &BTreeMap<String, DeployedResource>,
    ctx: &DeployContext,
) -> Result<Vec<Plan>> {
    let mut plans = Vec::new();
    for (name, entry) in &manifest.resources {
        let config_hash = flash_manifest::config_hash::config_hash(entry);
        let settings_hash = managed_settings_hash(ctx, entry);
        let source = source_hash(manifest, name);
        let mut prev = previous.get(name).cloned();
        let mut drift = Vec::new();
        if let Some(p) = prev.as_mut() {
            match sm.endpoint(&p.endpoint_id).await? {
                Some(live) => {
                    if p.template_id.is_none() {
                        p.template_id = live
                            .get("templateId")
                            .and_then(Value::as_str)
                            .map(str::to_string);
                    }
                    drift = drifted_fields(&endpoint_fields(entry)?, &live);
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
            Some(p) if p.settings_hash != settings_hash => {
                tracing::info!(
                    resource = %name,
                    "settings Flash writes into the template changed (auth, key or image); saving it again"
                );
                Action::UpdatedConfig
            }
            Some(_) if !drift.is_empty() => {
                tracing::warn!(
                    resource = %name,
                    fields = ?drift,
                    "the endpoint's settings differ from its resource config; saving them again"
                );
                Action::UpdatedConfig
            }
            Some(p) if p.source_hash != source => Action::UpdatedCode,
            Some(_) => Action::Unchanged,
        };
        plans.push(Plan {
            resource: name.clone(),
            load_balanced: entry.is_load_balanced,
            config_hash,
            source_hash: source,
            settings_hash,
            previous: prev,
            action,
        });
    }
    Ok(plans)
}

/// Carries out `plans`, `concurrency` at a time. Returns the endpoints deployed, and one
/// message per resource that failed.
pub async fn provision_all(
    sm: &StateManagerClient,
    ctx: &DeployContext,
    manifest: &Manifest,
    plans: &[Plan],
    concurrency: usize,
    attempts: u32,
) -> (BTreeMap<String, DeployedResource>, Vec<String>) {
    let results: Vec<(usize, Result<DeployedResource>)> =
        futures::stream::iter(plans.iter().enumerate().map(|(i, plan)| async move {
            (i, provision(sm, ctx, manifest, plan, attempts).await)
        }))
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let mut deployed = BTreeMap::new();
    let mut failures = Vec::new();
    for (i, result) in results {
        match result {
            Ok(d) => {
                deployed.insert(plans[i].resource.clone(), d);
            }
            Err(e) => failures.push(format!("{}: {e:#}", plans[i].resource)),
        }
    }
    failures.sort();
    (deployed, failures)
}

fn template_name(ctx: &DeployContext, resource: &str) -> String {
    format!("{}-{}-{resource}", ctx.app, ctx.env_name)
}

/// The `saveEndpoint` input of one resource (reference §1.4): its fields with RunPod's
/// defaults, and either a new `template` or, for an endpoint that has one, its `templateId`
/// (RunPod rejects both together; the template is then saved separately, §1.5).
pub fn save_endpoint_input(
    ctx: &DeployContext,
    resource: &str,
    entry: &ResourceEntry,
    source_hash: &str,
    previous: Option<&DeployedResource>,
) -> Result<Value> {
    let mut input = endpoint_fields(entry)?;
    input.insert("name".into(), json!(resource));
    input.insert("flashEnvironmentId".into(), json!(ctx.env_id));
    let new_template = || {
        template_json(
            &template_name(ctx, resource),
            &host_image(entry, ctx.image.as_deref()),
            container_disk_gb(entry),
            &template_env(ctx, resource, entry, source_hash),
        )
    };
    match previous {
        Some(prev) => {
            input.insert("id".into(), json!(prev.endpoint_id));
            match &prev.template_id {
                Some(template_id) => input.insert("templateId".into(), json!(template_id)),
                None => input.insert("template".into(), new_template()),
            };
        }
        None => {
            input.insert("template".into(), new_template());
        }
    }
    Ok(Value::Object(input))
}

/// Saves one resource's endpoint: an update with its id (retried), or a create (never sent
/// twice blindly; see the module docs).
async fn provision(
    sm: &StateManagerClient,
    ctx: &DeployContext,
    manifest: &Manifest,
    plan: &Plan,
    attempts: u32,
) -> Result<DeployedResource> {
    let url_of = |id: &str| sm.endpoint_url(id, plan.load_balanced);
    let entry = manifest
        .resources
        .get(&plan.resource)
        .context("resource vanished from the manifest")?;
    let env_keys: Vec<String> = entry.env.keys().cloned().collect();
    if plan.action == Action::Unchanged
        && let Some(prev) = &plan.previous
    {
        return Ok(DeployedResource {
            url: url_of(&prev.endpoint_id),
            env_keys,
            ..prev.clone()
        });
    }
    let input = save_endpoint_input(
        ctx,
        &plan.resource,
        entry,
        &plan.source_hash,
        plan.previous.as_ref(),
    )?;
    let saving = || format!("saving the endpoint of `{}`", plan.resource);
    let (saved, previous) = match &plan.previous {
        Some(prev) => (
            sm.update_endpoint(&input, attempts)
                .await
                .with_context(saving)?,
            Some(prev.clone()),
        ),
        None => match sm
            .create_endpoint(&input, attempts)
            .await
            .with_context(saving)?
        {
            Created::New(saved) => (saved, None),
            Created::Found(live) => {
                // The answer to the create was lost, and the environment has an endpoint
                // of this name: most likely the one that create made. It gets this
                // resource's settings as an update, and no second endpoint is made.
                let found = DeployedResource {
                    endpoint_id: str_field(&live, "id")?.to_string(),
                    template_id: live
                        .get("templateId")
                        .and_then(Value::as_str)
                        .map(str::to_string),
                    ..Default::default()
                };
                tracing::warn!(
                    resource = %plan.resource,
                    endpoint = %found.endpoint_id,
                    "the answer to creating this endpoint was lost; using the endpoint of \
                     that name found in the environment"
                );
                let input = save_endpoint_input(
                    ctx,
                    &plan.resource,
                    entry,
                    &plan.source_hash,
                    Some(&found),
                )?;
                (
                    sm.update_endpoint(&input, attempts)
                        .await
                        .with_context(saving)?,
                    Some(found),
                )
            }
        },
    };
    let env = template_env(ctx, &plan.resource, entry, &plan.source_hash);
    let template_name = template_name(ctx, &plan.resource);
    let image = host_image(entry, ctx.image.as_deref());
    let disk = container_disk_gb(entry);
    let existing_template = previous.as_ref().and_then(|p| p.template_id.clone());
    if let Some(template_id) = &existing_template {
        let live = sm
            .template_env(template_id)
            .await
            .with_context(|| format!("reading the template of `{}`", plan.resource))?
            .unwrap_or_default();
        let previous_user_keys = previous
            .as_ref()
            .map(|p| p.env_keys.clone())
            .unwrap_or_default();
        let env = merge_template_env(&env, &live, &previous_user_keys);
        let t = json!({
            "id": template_id, "name": template_name, "imageName": image,
            "containerDiskInGb": disk, "dockerArgs": "", "env": env_json(&env), "volumeInGb": 0,
        });
        sm.save_template(&t, attempts)
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
        settings_hash: plan.settings_hash.clone(),
        env_keys,
    })
}

/// Endpoints to delete once `deployed` is active: everything `previous` or the environment
/// (`env.endpoints`) knew that is not deployed now, never the mothership. Maps endpoint id
/// → (resource name, url).
pub fn removed_endpoints(
    previous: &BTreeMap<String, DeployedResource>,
    env: &Value,
    deployed: &BTreeMap<String, DeployedResource>,
) -> BTreeMap<String, (String, String)> {
    let keep: BTreeSet<&str> = deployed.values().map(|d| d.endpoint_id.as_str()).collect();
    let mut removed = BTreeMap::new();
    for (name, p) in previous {
        // A resource deployed now whose recorded endpoint differs had lost that endpoint
        // (plan found it gone): nothing to delete.
        if !keep.contains(p.endpoint_id.as_str()) && !deployed.contains_key(name) {
            removed.insert(p.endpoint_id.clone(), (name.clone(), p.url.clone()));
        }
    }
    for ep in env["endpoints"].as_array().into_iter().flatten() {
        let Some(id) = ep.get("id").and_then(Value::as_str) else {
            continue;
        };
        let name = ep.get("name").and_then(Value::as_str).unwrap_or("");
        if name != MOTHERSHIP && !keep.contains(id) && !removed.contains_key(id) {
            removed.insert(id.to_string(), (name.to_string(), String::new()));
        }
    }
    removed
}

/// The manifest as published for peers and later deploys: `resources_endpoints`, and per
/// resource the endpoint, template and hashes it was saved with.
pub fn published_manifest(
    manifest: &Value,
    deployed: &BTreeMap<String, DeployedResource>,
    ctx: &DeployContext,
) -> Value {
    let (env_name, require_auth, image) = (&ctx.env_name, ctx.require_auth, &ctx.image);
    let mut published = manifest.clone();
    let mut endpoints = serde_json::Map::new();
    for (name, d) in deployed {
        endpoints.insert(name.clone(), json!(d.url));
        if let Some(r) = published["resources"][name.as_str()].as_object_mut() {
            r.insert("endpoint_id".into(), json!(d.endpoint_id));
            r.insert("source_hash".into(), json!(d.source_hash));
            r.insert("config_hash".into(), json!(d.config_hash));
            r.insert("settings_hash".into(), json!(d.settings_hash));
            if let Some(t) = &d.template_id {
                r.insert("template_id".into(), json!(t));
            }
        }
    }
    published["resources_endpoints"] = Value::Object(endpoints);
    published[DEPLOY_KEY] = json!({ "environment": env_name, "require_auth": require_auth });
    if let Some(image) = image {
        published[DEPLOY_KEY]["image"] = json!(image);
    }
    published
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn manifest() -> Manifest {
        serde_json::from_value(json!({
            "version": "1.0", "generated_at": "x", "project_name": "app",
            "resources": {
                "api": { "resource_type": "CpuLiveLoadBalancer", "is_load_balanced": true,
                    "config_hash": "h1", "instanceIds": ["cpu3c-1-2"], "workersMin": 1,
                    "workersMax": 3, "idleTimeout": 60, "scalerType": "REQUEST_COUNT",
                    "scalerValue": 4, "env": { "MODEL": "small" },
                    "functions": [{ "name": "p", "module": "m",
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

    /// The deploy context of the unit tests here and in `mothership`.
    pub(crate) fn ctx(require_auth: bool) -> DeployContext {
        DeployContext {
            app: "app".into(),
            env_name: "dev".into(),
            env_id: "env-1".into(),
            api_key: "k".into(),
            require_auth,
            image: None,
        }
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn managed_settings_hash_follows_auth_key_and_image() {
        let m = manifest();
        let (lb, queue) = (&m.resources["api"], &m.resources["gpu"]);
        let base = ctx(false);
        let hash = |c: &DeployContext, e| managed_settings_hash(c, e);
        assert_eq!(hash(&base, lb), hash(&ctx(false), lb), "deterministic");
        // --require-auth matters to load-balanced endpoints only.
        assert_ne!(hash(&ctx(true), lb), hash(&base, lb));
        assert_eq!(hash(&ctx(true), queue), hash(&base, queue));
        // A rotated key and another image change every endpoint.
        let rotated = DeployContext {
            api_key: "k2".into(),
            ..ctx(false)
        };
        let image = DeployContext {
            image: Some("registry.example/flash-host:dev".into()),
            ..ctx(false)
        };
        for entry in [lb, queue] {
            assert_ne!(hash(&rotated, entry), hash(&base, entry));
            assert_ne!(hash(&image, entry), hash(&base, entry));
        }
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
        assert!(!lb.contains_key("locations") && qb.contains_key("locations"));
        assert_eq!(qb["type"], "QB");
        assert_eq!(qb["gpuIds"], "ADA_24");
        assert_eq!(qb["idleTimeout"], 5);
    }

    /// The reference's `saveEndpoint` payload for a GPU queue config (§1.4, "Deploy payload
    /// for the demo `gpu_worker`"), keys sorted, with its placeholders.
    fn reference_gpu_payload() -> Value {
        json!({"allowedCudaVersions":"","executionTimeoutMs":0,"flashBootType":"FLASHBOOT","flashEnvironmentId":"<env>","gpuCount":1,
         "gpuIds":"ADA_24,ADA_32_PRO,ADA_48_PRO,ADA_80_PRO,AMPERE_16,AMPERE_24,AMPERE_48,AMPERE_80,BLACKWELL_180,BLACKWELL_96,HOPPER_141",
         "idleTimeout":60,"locations":"US-CA-2,US-IL-1,US-KS-2,US-MO-1,US-MO-2,US-NC-2,US-NE-1,US-WA-1,EU-CZ-1,EU-RO-1,EUR-NO-1","minCudaVersion":"12.8",
         "name":"gpu_worker","scalerType":"QUEUE_DELAY","scalerValue":4,"type":"QB","workersMax":1,"workersMin":0,"workersPFBTarget":0,
         "template":{"advancedStart":false,"config":{},"containerDiskInGb":64,"containerRegistryAuthId":"","dockerArgs":"",
          "env":"<env list>", "imageName":"<image>","name":"<name>","ports":"","startScript":""}})
    }

    /// The quickstart's configs as `flash build` writes them (examples/quickstart): a GPU
    /// queue config on two pools, and a CPU load-balanced one.
    fn quickstart_entry(name: &str) -> ResourceEntry {
        let entry = match name {
            "gpu_config" => json!({ "resource_type": "LiveServerless", "is_load_balanced": false,
                "config_hash": "h", "gpuIds": "AMPERE_48,ADA_24", "gpuCount": 1, "workersMin": 0,
                "workersMax": 3, "idleTimeout": 60, "scalerType": "QUEUE_DELAY", "scalerValue": 4,
                "functions": [] }),
            _ => json!({ "resource_type": "CpuLiveLoadBalancer", "is_load_balanced": true,
                "config_hash": "h", "instanceIds": ["cpu3c-1-2"], "workersMin": 1,
                "workersMax": 3, "idleTimeout": 60, "scalerType": "REQUEST_COUNT",
                "scalerValue": 4, "functions": [] }),
        };
        serde_json::from_value(entry).unwrap()
    }

    fn shape(value: &Value) -> BTreeSet<String> {
        let mut keys = BTreeSet::new();
        for (k, v) in value.as_object().unwrap() {
            keys.insert(k.clone());
            if let Some(inner) = v.as_object().filter(|_| k == "template") {
                keys.extend(inner.keys().map(|i| format!("template.{i}")));
            }
        }
        keys
    }

    #[test]
    fn the_quickstarts_save_endpoint_input_has_the_references_shape() {
        let ctx = ctx(false);
        let gpu = save_endpoint_input(
            &ctx,
            "gpu_config",
            &quickstart_entry("gpu_config"),
            "s",
            None,
        )
        .unwrap();
        let reference = reference_gpu_payload();
        assert_eq!(shape(&gpu), shape(&reference));
        // RunPod's defaults, where the quickstart leaves them to the platform.
        for key in [
            "allowedCudaVersions",
            "executionTimeoutMs",
            "flashBootType",
            "gpuCount",
            "idleTimeout",
            "locations",
            "minCudaVersion",
            "scalerType",
            "scalerValue",
            "type",
            "workersMin",
            "workersPFBTarget",
        ] {
            assert_eq!(gpu[key], reference[key], "{key}");
        }
        for key in [
            "advancedStart",
            "config",
            "containerDiskInGb",
            "containerRegistryAuthId",
            "dockerArgs",
            "ports",
            "startScript",
        ] {
            assert_eq!(
                gpu["template"][key], reference["template"][key],
                "template.{key}"
            );
        }
        // What the quickstart sets.
        assert_eq!(gpu["gpuIds"], "AMPERE_48,ADA_24");
        assert_eq!(gpu["workersMax"], 3);
        assert_eq!(gpu["flashEnvironmentId"], "env-1");
        assert_eq!(
            gpu["template"]["imageName"],
            format!("{HOST_IMAGE_REPOSITORY}:{}-gpu", env!("CARGO_PKG_VERSION"))
        );

        // §1.4's differences for a CPU endpoint and a load-balanced one: no GPU fields and
        // no locations, the instance ids, a disk within the instance's limit, `LB` with
        // `REQUEST_COUNT`, and `FLASH_ENDPOINT_TYPE=lb` in the env.
        let api = save_endpoint_input(&ctx, "api", &quickstart_entry("api"), "s", None).unwrap();
        let mut expected = shape(&reference);
        for gpu_only in [
            "allowedCudaVersions",
            "gpuCount",
            "gpuIds",
            "minCudaVersion",
            "locations",
        ] {
            expected.remove(gpu_only);
        }
        expected.insert("instanceIds".into());
        assert_eq!(shape(&api), expected);
        assert_eq!(api["instanceIds"], json!(["cpu3c-1-2"]));
        assert_eq!(api["template"]["containerDiskInGb"], 10);
        assert_eq!(
            (&api["type"], &api["scalerType"]),
            (&json!("LB"), &json!("REQUEST_COUNT"))
        );
        assert!(
            api["template"]["env"]
                .as_array()
                .unwrap()
                .contains(&json!({"key": "FLASH_ENDPOINT_TYPE", "value": "lb"}))
        );
        assert!(
            api["template"]["imageName"]
                .as_str()
                .unwrap()
                .ends_with("-cpu")
        );
    }

    #[test]
    fn placement_and_the_image_setting_reach_the_input() {
        let mut entry = quickstart_entry("gpu_config");
        entry.locations = Some("EU-RO-1".into());
        entry.min_cuda_version = Some("12.4".into());
        entry.container_disk_gb = Some(100);
        entry.flashboot = Some(false);
        entry.gpu_count = Some(2);
        let ctx = DeployContext {
            image: Some("registry.example/flash-host:dev".into()),
            ..ctx(false)
        };
        let input = save_endpoint_input(&ctx, "gpu_config", &entry, "s", None).unwrap();
        assert_eq!(input["locations"], "EU-RO-1");
        assert_eq!(input["minCudaVersion"], "12.4");
        assert_eq!(input["gpuCount"], 2);
        assert_eq!(input["template"]["containerDiskInGb"], 100);
        assert!(input.get("flashBootType").is_none());
        assert_eq!(
            input["template"]["imageName"],
            "registry.example/flash-host:dev"
        );
        // An update names the existing template instead of sending one (§1.4).
        let previous = DeployedResource {
            endpoint_id: "ep-1".into(),
            template_id: Some("tpl-1".into()),
            ..Default::default()
        };
        let update = save_endpoint_input(&ctx, "gpu_config", &entry, "s", Some(&previous)).unwrap();
        assert_eq!(
            (&update["id"], &update["templateId"]),
            (&json!("ep-1"), &json!("tpl-1"))
        );
        assert!(update.get("template").is_none());
    }

    #[test]
    fn drift_is_a_live_value_that_differs_from_the_config() {
        let m = manifest();
        let wanted = endpoint_fields(&m.resources["gpu"]).unwrap();
        let live = json!({ "type": "QB", "gpuIds": "ADA_24", "workersMin": 0, "workersMax": 2,
            "idleTimeout": 5, "scalerType": "QUEUE_DELAY", "scalerValue": 4 });
        assert!(drifted_fields(&wanted, &live).is_empty());
        let mut edited = live.clone();
        edited["workersMax"] = json!(9);
        assert_eq!(drifted_fields(&wanted, &edited), vec!["workersMax"]);
    }

    #[test]
    fn template_env_marks_lb_opens_it_unless_auth_is_required_and_copies_user_env() {
        let m = manifest();
        let keys =
            |env: Vec<(String, String)>| -> BTreeMap<String, String> { env.into_iter().collect() };
        let open = keys(template_env(&ctx(false), "api", &m.resources["api"], "src"));
        assert_eq!(open["FLASH_ENDPOINT_TYPE"], "lb");
        assert_eq!(open["FLASH_DISABLE_RP_AUTH"], "true");
        assert_eq!(open["FLASH_RESOURCE_NAME"], "api");
        assert_eq!(open["FLASH_ENVIRONMENT_ID"], "env-1");
        assert_eq!(open["RUNPOD_API_KEY"], "k");
        assert_eq!(open[SOURCE_FINGERPRINT_ENV], "src");
        assert_eq!(open["MODEL"], "small");
        let closed = keys(template_env(&ctx(true), "api", &m.resources["api"], "src"));
        assert!(!closed.contains_key("FLASH_DISABLE_RP_AUTH"));
        let qb = keys(template_env(&ctx(false), "gpu", &m.resources["gpu"], "src"));
        assert!(!qb.contains_key("FLASH_ENDPOINT_TYPE"));
        assert!(!qb.contains_key("FLASH_DISABLE_RP_AUTH"));
    }

    #[test]
    fn only_resources_that_call_peers_or_check_callers_hold_the_key() {
        let mut m = manifest();
        for entry in m.resources.values_mut() {
            entry.makes_remote_calls = false;
        }
        let env = |ctx: &DeployContext, r: &str| -> BTreeMap<String, String> {
            template_env(ctx, r, &m.resources[r], "src")
                .into_iter()
                .collect()
        };
        // A queue resource that calls no one: no key, whatever `--require-auth` says.
        assert!(!env(&ctx(false), "gpu").contains_key("RUNPOD_API_KEY"));
        assert!(!env(&ctx(true), "gpu").contains_key("RUNPOD_API_KEY"));
        // An open load-balanced one neither; one that checks its callers needs it.
        assert!(!env(&ctx(false), "api").contains_key("RUNPOD_API_KEY"));
        assert_eq!(env(&ctx(true), "api")["RUNPOD_API_KEY"], "k");
        // Its environment is still named (logs, the routing manifest).
        assert_eq!(env(&ctx(false), "gpu")["FLASH_ENVIRONMENT_ID"], "env-1");

        // The key is a managed setting only where it is given: rotating it re-saves the
        // resources that hold it, and a resource that starts calling peers is re-saved.
        let quiet = m.resources["gpu"].clone();
        let mut rotated = ctx(false);
        rotated.api_key = "k-rotated".into();
        assert_eq!(
            managed_settings_hash(&ctx(false), &quiet),
            managed_settings_hash(&rotated, &quiet)
        );
        let mut calling = quiet.clone();
        calling.makes_remote_calls = true;
        assert_ne!(
            managed_settings_hash(&ctx(false), &quiet),
            managed_settings_hash(&ctx(false), &calling)
        );
        assert_ne!(
            managed_settings_hash(&ctx(false), &calling),
            managed_settings_hash(&rotated, &calling)
        );
    }

    #[test]
    fn template_merge_keeps_platform_keys_and_drops_what_flash_or_the_user_no_longer_sets() {
        // The live template: Flash's keys of the last deploy, a user key since removed, and
        // two keys the platform injected.
        let live = pairs(&[
            ("FLASH_RESOURCE_NAME", "api"),
            ("FLASH_DISABLE_RP_AUTH", "true"),
            ("OLD_USER_KEY", "1"),
            ("PORT", "8080"),
            ("PORT_HEALTH", "8081"),
        ]);
        let wanted = pairs(&[("FLASH_RESOURCE_NAME", "api"), ("NEW_USER_KEY", "2")]);
        let merged = merge_template_env(&wanted, &live, &["OLD_USER_KEY".to_string()]);
        assert_eq!(
            merged,
            pairs(&[
                ("FLASH_RESOURCE_NAME", "api"),
                ("NEW_USER_KEY", "2"),
                ("PORT", "8080"),
                ("PORT_HEALTH", "8081"),
            ])
        );
    }

    #[test]
    fn unchanged_env_saves_the_live_template_verbatim() {
        let live = pairs(&[("PORT", "8080"), ("FLASH_RESOURCE_NAME", "api")]);
        let wanted = pairs(&[("FLASH_RESOURCE_NAME", "api")]);
        assert_eq!(merge_template_env(&wanted, &live, &[]), live);
    }

    #[test]
    fn removed_endpoints_never_include_the_mothership() {
        let prev: BTreeMap<String, DeployedResource> = [(
            "old".to_string(),
            DeployedResource {
                endpoint_id: "ep-old".into(),
                ..Default::default()
            },
        )]
        .into();
        let env = json!({ "endpoints": [
            { "id": "ep-m", "name": MOTHERSHIP }, { "id": "ep-stray", "name": "stray" },
            { "id": "ep-api", "name": "api" } ] });
        let deployed: BTreeMap<String, DeployedResource> = [(
            "api".to_string(),
            DeployedResource {
                endpoint_id: "ep-api".into(),
                ..Default::default()
            },
        )]
        .into();
        let removed = removed_endpoints(&prev, &env, &deployed);
        assert_eq!(
            removed.keys().cloned().collect::<Vec<_>>(),
            vec!["ep-old", "ep-stray"]
        );
    }

    #[test]
    fn published_manifest_round_trips_through_deployed_in() {
        let m = manifest();
        let json = serde_json::to_value(&m).unwrap();
        let deployed: BTreeMap<String, DeployedResource> = [(
            "gpu".to_string(),
            DeployedResource {
                endpoint_id: "ep-1".into(),
                template_id: Some("t-1".into()),
                config_hash: "h2".into(),
                source_hash: "s".into(),
                settings_hash: "m".into(),
                url: "http://x/v2/ep-1".into(),
                env_keys: vec![],
            },
        )]
        .into();
        let published = published_manifest(&json, &deployed, &ctx(true));
        assert_eq!(published[DEPLOY_KEY]["require_auth"], true);
        assert_eq!(deployed_in(&published), deployed);
    }
}
