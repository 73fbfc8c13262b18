//! The mothership: one endpoint per environment that, on every boot, reconciles the
//! environment's child endpoints with the manifest of the build it booted with.
//!
//! `flash deploy new` creates it ([`ensure_endpoint`]); the platform (RunPod, or `flash
//! server`'s provisioner) boots it with the environment's active build whenever that build
//! changes, and `flash-host` with `FLASH_IS_MOTHERSHIP=true` then runs [`reconcile`]:
//!
//! 1. **desired**: the manifest inside the artifact; **current**: the active build's
//!    manifest as published through the State Manager (the endpoints, templates and hashes
//!    of the last deploy), plus the environment's endpoint list and each endpoint's live
//!    settings. A mothership whose build is no longer the active one stops there: the newer
//!    build's mothership owns the environment.
//! 2. **diff**: new (no endpoint, or its endpoint is gone), changed (`config_hash` or source
//!    hash differs, or the live settings drifted), removed (an endpoint of the environment
//!    that no resource wants any more — deleted for real; the reference tool only logs it).
//! 3. **act** with the same engine as `flash deploy send` ([`crate::provision`]), a few at a
//!    time with retries, then **verify** that every child answers `/health`, and that
//!    children with `workersMin > 0` have a ready worker (bounded wait).
//! 4. **persist** the result with `updateFlashBuildManifest` — only when it differs from what
//!    is there, so a second boot with no change sends no mutation at all (idempotent).
//!
//! Because `deploy send` provisions everything before it activates a build, a mothership
//! that boots after a complete send finds nothing to do: it is the safety net for sends that
//! died half-way, endpoints deleted or edited out of band, and deploys by older clients.
//! Steps 1–4 run under the environment's deploy lease ([`crate::lease`]): the mothership
//! waits for a send in progress to finish (and a send waits for it), so the two never
//! interleave their saves. Where the State Manager has no leases (RunPod's API) it waits,
//! bounded, for a send that is still publishing its endpoints instead.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use flash_manifest::Manifest;
use serde::Serialize;
use serde_json::{Value, json};

use crate::lease::{Lease, LeaseOptions};
use crate::provision::DeployedResource;
use crate::provision::{self, Action, DeployContext, ResourceReport};
use crate::{DEPLOY_KEY, MOTHERSHIP, str_field};
use flash_api::{Created, StateManagerClient};

/// Top-level key of the published manifest that the mothership writes (which mothership
/// endpoint reconciled it).
pub const RECONCILED_KEY: &str = "flash_mothership";

/// Env var that turns `flash-host` into the mothership.
pub const MOTHERSHIP_ENV: &str = "FLASH_IS_MOTHERSHIP";

/// The mothership's template env.
fn template_env(ctx: &DeployContext) -> Value {
    let mut env = vec![
        (MOTHERSHIP_ENV, "true".to_string()),
        ("FLASH_APP", ctx.app.clone()),
        ("FLASH_ENV", ctx.env_name.clone()),
        ("FLASH_ENVIRONMENT_ID", ctx.env_id.clone()),
        ("RUNPOD_API_KEY", ctx.api_key.clone()),
        ("FLASH_ENDPOINT_TYPE", "lb".to_string()),
    ];
    if !ctx.require_auth {
        env.push(("FLASH_DISABLE_RP_AUTH", "true".to_string()));
    }
    Value::Array(
        env.into_iter()
            .map(|(k, v)| json!({ "key": k, "value": v }))
            .collect(),
    )
}

/// Container disk of the mothership (its `cpu3c-1-2` instance's limit, reference §1.4).
const MOTHERSHIP_CONTAINER_DISK_GB: u32 = 10;

fn new_template(name: &str, image: &str, disk: u32, ctx: &DeployContext) -> Value {
    json!({
        "name": name, "imageName": image, "env": template_env(ctx), "containerDiskInGb": disk,
        "dockerArgs": "", "startScript": "", "containerRegistryAuthId": "", "ports": "",
        "advancedStart": false, "config": {},
    })
}

/// The saves that make an environment's mothership: a small CPU load-balanced endpoint
/// with exactly one worker, so it boots (and reconciles) once per active build. Returns the
/// `saveEndpoint` input and, when the endpoint already has a template, the `saveTemplate`
/// input (RunPod rejects `template` together with `templateId`, reference §1.4–1.5).
fn saves(ctx: &DeployContext, existing: Option<(&str, Option<&str>)>) -> (Value, Option<Value>) {
    let template_name = format!("{}-{}-{MOTHERSHIP}", ctx.app, ctx.env_name);
    let image = ctx.image.clone().unwrap_or_else(|| {
        format!(
            "{}:{}-cpu",
            provision::HOST_IMAGE_REPOSITORY,
            env!("CARGO_PKG_VERSION")
        )
    });
    // cpu3c-1-2's limit (reference §1.4).
    let disk = MOTHERSHIP_CONTAINER_DISK_GB;
    let mut endpoint = json!({
        "name": MOTHERSHIP, "type": "LB", "workersMin": 1, "workersMax": 1, "idleTimeout": 60,
        "scalerType": "REQUEST_COUNT", "scalerValue": 1, "instanceIds": ["cpu3c-1-2"],
        "flashBootType": "FLASHBOOT", "flashEnvironmentId": ctx.env_id,
    });
    let template = match existing {
        Some((id, Some(template_id))) => {
            endpoint["id"] = json!(id);
            endpoint["templateId"] = json!(template_id);
            return (
                endpoint,
                Some(json!({
                    "id": template_id, "name": template_name, "imageName": image,
                    "containerDiskInGb": disk, "dockerArgs": "", "env": template_env(ctx),
                    "volumeInGb": 0,
                })),
            );
        }
        Some((id, None)) => {
            endpoint["id"] = json!(id);
            new_template(&template_name, &image, disk, ctx)
        }
        None => new_template(&template_name, &image, disk, ctx),
    };
    endpoint["template"] = template;
    (endpoint, None)
}

/// Creates the environment's mothership endpoint, or updates the existing one (for a new
/// key or `--require-auth` setting). Returns its endpoint id.
pub async fn ensure_endpoint(
    sm: &StateManagerClient,
    env: &Value,
    ctx: &DeployContext,
) -> Result<String> {
    let existing = env["endpoints"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e.get("name").and_then(Value::as_str) == Some(MOTHERSHIP))
        .and_then(|e| e.get("id").and_then(Value::as_str))
        .map(str::to_string);
    let live = match &existing {
        Some(id) => sm.endpoint(id).await?,
        None => None,
    };
    let template_id = live
        .as_ref()
        .and_then(|l| l.get("templateId").and_then(Value::as_str))
        .map(str::to_string);
    let existing = existing.filter(|_| live.is_some());
    let (endpoint, template) = saves(
        ctx,
        existing.as_deref().map(|id| (id, template_id.as_deref())),
    );
    let saving = "saving the mothership endpoint";
    let (saved, template) = if existing.is_some() {
        (
            sm.update_endpoint(&endpoint, 3).await.context(saving)?,
            template,
        )
    } else {
        match sm.create_endpoint(&endpoint, 3).await.context(saving)? {
            Created::New(saved) => (saved, template),
            Created::Found(live) => {
                // The answer to the create was lost and the environment has a mothership
                // (most likely the one it made): it gets these settings as an update.
                let id = str_field(&live, "id")?.to_string();
                let template_id = live.get("templateId").and_then(Value::as_str);
                let (endpoint, template) = saves(ctx, Some((&id, template_id)));
                (
                    sm.update_endpoint(&endpoint, 3).await.context(saving)?,
                    template,
                )
            }
        }
    };
    if let Some(t) = template {
        sm.save_template(&t, 3)
            .await
            .context("saving the mothership's template")?;
    }
    Ok(str_field(&saved, "id")?.to_string())
}

/// How a reconciliation is run.
#[derive(Debug, Clone)]
pub struct ReconcileOptions {
    /// `saveEndpoint` calls in flight at once.
    pub concurrency: usize,
    pub attempts: u32,
    /// How long to wait for a `deploy send` that is still publishing the active build's
    /// endpoints.
    pub publish_wait: Duration,
    /// How long to wait for children with `workersMin > 0` to have a ready worker.
    pub health_wait: Duration,
    /// This mothership's endpoint id (`RUNPOD_ENDPOINT_ID`), recorded in the manifest.
    pub endpoint_id: Option<String>,
    /// How the environment's deploy lease is taken (how long to wait for a send).
    pub lease: LeaseOptions,
}

impl Default for ReconcileOptions {
    fn default() -> Self {
        Self {
            concurrency: 3,
            attempts: 3,
            publish_wait: Duration::from_secs(60),
            health_wait: Duration::from_secs(60),
            endpoint_id: None,
            lease: LeaseOptions::default(),
        }
    }
}

/// Health of one child endpoint after reconciliation.
#[derive(Debug, Clone, Serialize)]
pub struct ChildHealth {
    pub resource: String,
    pub endpoint_id: String,
    /// `/health` answered, and a child with `workersMin > 0` has a ready worker.
    pub healthy: bool,
    /// `workers` of the endpoint's `/health`.
    pub workers: Value,
}

/// What one reconciliation found and did.
#[derive(Debug, Clone, Serialize)]
pub struct Reconciliation {
    pub environment_id: String,
    pub build_id: Option<String>,
    /// `false` when this mothership's build is not the active one (it did nothing).
    pub active: bool,
    pub resources: Vec<ResourceReport>,
    pub health: Vec<ChildHealth>,
    /// Whether `updateFlashBuildManifest` was sent.
    pub persisted: bool,
    /// The manifest as published after reconciliation (served at `GET /manifest`).
    #[serde(skip)]
    pub manifest: Value,
}

impl Reconciliation {
    /// Resources whose endpoint was created, updated or deleted.
    pub fn changes(&self) -> impl Iterator<Item = &ResourceReport> {
        self.resources
            .iter()
            .filter(|r| r.action != Action::Unchanged)
    }
}

/// Whether `persisted` (the active build's manifest) is the build described by `desired`.
fn same_build(desired: &Value, persisted: &Value) -> bool {
    let names = |v: &Value| -> Vec<String> {
        v["resources"]
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default()
    };
    desired["components"] == persisted["components"]
        && desired["function_registry"] == persisted["function_registry"]
        && names(desired) == names(persisted)
}

/// Whether `deploy send` has published the active build's endpoints.
fn published(persisted: &Value) -> bool {
    persisted.get(DEPLOY_KEY).is_some()
}

/// Reconciles environment `env_id` with `desired` (the booted artifact's manifest). See the
/// module docs. The changes are made under the environment's deploy lease
/// ([`crate::lease`]), taken first (waiting for a `deploy send` in progress to finish) and
/// released before the children's health is checked.
pub async fn reconcile(
    sm: &StateManagerClient,
    desired_json: &Value,
    env_id: &str,
    options: &ReconcileOptions,
) -> Result<Reconciliation> {
    let desired: Manifest = serde_json::from_value(desired_json.clone())
        .context("the artifact's manifest is not a Flash manifest")?;
    if desired.resources.contains_key(MOTHERSHIP) {
        bail!("the resource name `{MOTHERSHIP}` is reserved: rename that resource config");
    }
    let holder = match &options.endpoint_id {
        Some(id) => format!("the mothership ({id})"),
        None => "the mothership".to_string(),
    };
    let lease = Lease::acquire(sm, env_id, env_id, &holder, &options.lease, |other| {
        tracing::info!(environment = %env_id, holder = %other, "waiting for the deploy in progress to finish before reconciling");
    })
    .await?;
    let outcome = reconcile_leased(&lease, desired_json, &desired, env_id, options).await;
    lease.release().await;
    let (mut reconciliation, deployed) = outcome?;
    if reconciliation.active {
        reconciliation.health = verify_health(sm, &desired, &deployed, options.health_wait).await;
    }
    Ok(reconciliation)
}

/// [`reconcile`] once the lease is held: everything but the health check. Returns the
/// endpoints deployed too.
async fn reconcile_leased(
    lease: &Lease,
    desired_json: &Value,
    desired: &Manifest,
    env_id: &str,
    options: &ReconcileOptions,
) -> Result<(Reconciliation, BTreeMap<String, DeployedResource>)> {
    let sm = lease.client();

    // Current state: the active build's published manifest, once its send has finished.
    let deadline = Instant::now() + options.publish_wait;
    let (env, build_id, persisted) = loop {
        let env = sm.environment(env_id).await?.with_context(|| {
            format!("environment `{env_id}` does not exist (FLASH_ENVIRONMENT_ID)")
        })?;
        let build_id = env
            .get("activeBuildId")
            .and_then(Value::as_str)
            .map(str::to_string);
        let persisted = match &build_id {
            Some(b) => sm.build_manifest(b).await?,
            None => Value::Null,
        };
        if published(&persisted) || Instant::now() >= deadline {
            break (env, build_id, persisted);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let env_name = env
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let Some(build) = build_id
        .clone()
        .filter(|_| same_build(desired_json, &persisted))
    else {
        tracing::warn!(
            environment = %env_id,
            active_build = ?build_id,
            "this mothership's build is not the environment's active build; leaving the \
             environment to the active build's mothership"
        );
        return Ok((
            Reconciliation {
                environment_id: env_id.to_string(),
                build_id,
                active: false,
                resources: Vec::new(),
                health: Vec::new(),
                persisted: false,
                manifest: persisted,
            },
            BTreeMap::new(),
        ));
    };

    let mut previous = provision::deployed_in(&persisted);
    for (name, adopted) in provision::adopt_by_name(&env, desired) {
        previous.entry(name).or_insert(adopted);
    }
    let require_auth = persisted[DEPLOY_KEY]["require_auth"]
        .as_bool()
        .unwrap_or(false);
    // The worker image the deployer chose (`flash deploy send --image`), published with
    // the build so that this reconciliation names the same one.
    let image = persisted[DEPLOY_KEY]["image"].as_str().map(str::to_string);
    let ctx = DeployContext {
        app: desired.project_name.clone(),
        env_name: env_name.clone(),
        env_id: env_id.to_string(),
        api_key: sm.api_key().to_string(),
        require_auth,
        image,
    };

    let plans = provision::plan(sm, desired, &previous, &ctx).await?;
    for p in plans.iter().filter(|p| p.action != Action::Unchanged) {
        tracing::info!(resource = %p.resource, action = p.action.as_str(), "reconciling");
    }
    let (deployed, failures) = provision::provision_all(
        sm,
        &ctx,
        desired,
        &plans,
        options.concurrency,
        options.attempts,
    )
    .await;
    let mut resources: Vec<ResourceReport> = plans
        .iter()
        .filter_map(|p| Some(ResourceReport::deployed(p, deployed.get(&p.resource)?)))
        .collect();

    // Persist what exists now, even after a partial failure, so the next boot builds on it;
    // nothing at all when it is what the State Manager already has.
    let mut manifest = provision::published_manifest(desired_json, &deployed, &ctx);
    // Keep what this mothership does not manage (keys other tools merged in, the last
    // reconciler's mark).
    if let (Some(out), Some(prev)) = (manifest.as_object_mut(), persisted.as_object()) {
        for (k, v) in prev {
            out.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    // The deploy settings the send recorded beyond these (the artifact's sha256) stay.
    if let (Some(out), Some(prev)) = (
        manifest[DEPLOY_KEY].as_object_mut(),
        persisted[DEPLOY_KEY].as_object(),
    ) {
        for (k, v) in prev {
            out.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    let persisted_now = manifest != persisted;
    lease.ensure_held()?;
    if persisted_now {
        if let Some(me) = &options.endpoint_id {
            manifest[RECONCILED_KEY] = json!({ "endpoint_id": me });
        }
        sm.update_build_manifest(&build, &manifest)
            .await
            .context("persisting the reconciled manifest")?;
    }
    if !failures.is_empty() {
        bail!(
            "reconciling environment `{env_name}` failed for some resources (the others are \
             reconciled and persisted; the next boot retries):\n  {}",
            failures.join("\n  ")
        );
    }

    // Removed resources: delete their endpoints for real.
    for (id, (name, url)) in provision::removed_endpoints(&previous, &env, &deployed) {
        tracing::info!(resource = %name, endpoint = %id, "deleting the endpoint of a removed resource");
        sm.delete_endpoint(&id).await?;
        resources.push(ResourceReport::deleted(sm, id, name, url));
    }

    Ok((
        Reconciliation {
            environment_id: env_id.to_string(),
            build_id: Some(build),
            active: true,
            resources,
            health: Vec::new(),
            persisted: persisted_now,
            manifest,
        },
        deployed,
    ))
}

/// Polls each child's `/health` until the ones with `workersMin > 0` have a ready worker, or
/// `wait` passes.
async fn verify_health(
    sm: &StateManagerClient,
    manifest: &Manifest,
    deployed: &BTreeMap<String, DeployedResource>,
    wait: Duration,
) -> Vec<ChildHealth> {
    let deadline = Instant::now() + wait;
    loop {
        let mut report = Vec::new();
        for (name, d) in deployed {
            let needs_worker = manifest
                .resources
                .get(name)
                .is_some_and(|r| r.workers_min > 0);
            let workers = sm.endpoint_workers(&d.endpoint_id).await;
            let ready = workers.as_ref().is_some_and(|w| {
                let n = |k: &str| w.get(k).and_then(Value::as_u64).unwrap_or(0);
                n("idle") + n("running") > 0
            });
            report.push(ChildHealth {
                resource: name.clone(),
                endpoint_id: d.endpoint_id.clone(),
                healthy: workers.is_some() && (ready || !needs_worker),
                workers: workers.unwrap_or(Value::Null),
            });
        }
        if report.iter().all(|h| h.healthy) || Instant::now() >= deadline {
            for h in report.iter().filter(|h| !h.healthy) {
                tracing::warn!(resource = %h.resource, endpoint = %h.endpoint_id, workers = %h.workers, "child endpoint is not healthy");
            }
            return report;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::provision::tests::ctx;

    #[test]
    fn mothership_endpoint_is_one_lb_worker_marked_as_mothership() {
        let (input, template) = saves(&ctx(false), None);
        assert!(template.is_none());
        assert_eq!(input["name"], MOTHERSHIP);
        assert_eq!(input["type"], "LB");
        assert_eq!(input["workersMin"], 1);
        assert_eq!(input["workersMax"], 1);
        let env = input["template"]["env"].as_array().unwrap();
        let has = |k: &str, v: &str| env.iter().any(|e| e["key"] == k && e["value"] == v);
        assert!(has(MOTHERSHIP_ENV, "true"));
        assert!(has("FLASH_ENVIRONMENT_ID", "env-1"));
        assert!(has("FLASH_DISABLE_RP_AUTH", "true"));

        let (closed, template) = saves(&ctx(true), Some(("ep-1", Some("t-1"))));
        assert_eq!(closed["id"], "ep-1");
        assert_eq!(closed["templateId"], "t-1");
        assert!(
            closed.get("template").is_none(),
            "never template with templateId"
        );
        let t = template.unwrap();
        assert_eq!(t["id"], "t-1");
        assert!(
            !t["env"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["key"] == "FLASH_DISABLE_RP_AUTH")
        );
    }

    #[test]
    fn same_build_compares_content_not_published_keys() {
        let desired = json!({ "components": { "a": { "sha256": "1" } },
            "function_registry": { "f": "r" }, "resources": { "r": {} } });
        let mut persisted = desired.clone();
        persisted["resources_endpoints"] = json!({ "r": "http://x" });
        persisted["resources"]["r"]["endpoint_id"] = json!("ep");
        assert!(same_build(&desired, &persisted));
        persisted["components"]["a"]["sha256"] = json!("2");
        assert!(!same_build(&desired, &persisted));
    }
}
