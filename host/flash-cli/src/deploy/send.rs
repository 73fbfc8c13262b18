//! `flash deploy send`: upload the artifact, provision every endpoint, activate, publish.
//!
//! # The order, and why
//!
//! 1. upload the artifact (prepare → PUT → finalize) as a new build;
//! 2. **provision every resource before activation** (reference §7.3 is the defect this
//!    avoids): [`flash_deploy::provision`] plans each resource config against what is deployed and
//!    saves the endpoints that need it, in parallel, each with retries;
//! 3. `deployBuildToEnvironment` — only once every endpoint exists, so a failure before
//!    this point leaves the previous build active and serving;
//! 4. `updateFlashBuildManifest`: `resources_endpoints` plus per resource `endpoint_id`,
//!    `template_id` and the hashes, so peers (and a deploy from another machine) find the
//!    endpoints;
//! 5. delete the endpoints of resources that are gone (§7.2: the reference only logs them)
//!    — after activation, so the previous build keeps its peers until it is replaced.
//!
//! The environment's mothership then boots with the new build and checks the same things
//! again from inside the platform ([`flash_deploy::mothership`]); after a complete send it finds
//! nothing to do.
//!
//! # Concurrent sends
//!
//! Steps 1–5 (and the planning before them) run under the environment's deploy lease
//! ([`flash_deploy::lease`]): a second `deploy send` to the same environment (or a
//! mothership reconciling it) waits for the first to finish, up to
//! [`SendOptions::lease`]`.wait`, then plans afresh over what the first one deployed, so
//! the environment ends up exactly as the later send wants it. One that waits longer fails
//! with an error that names the holder and says to run it again. RunPod's API has no lease
//! (nor any compare-and-swap): there, concurrent sends to one environment are not
//! serialised, and the last activation wins over whatever endpoint saves interleaved.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use flash_manifest::Manifest;
use serde_json::Value;

use super::resource_manager::{EnvironmentState, ResourceManager};
use super::{require_app, require_environment};
use flash_api::StateManagerClient;
use flash_deploy::DeployedResource;
use flash_deploy::lease::{Lease, LeaseOptions};
use flash_deploy::provision::{self, Action, DeployContext, ResourceReport};
use flash_deploy::{ARTIFACT_FILE, DEPLOY_KEY, MOTHERSHIP, str_field};

/// What `send` did.
#[derive(Debug)]
pub struct SendReport {
    pub build_id: String,
    pub environment_id: String,
    pub artifact_size: u64,
    pub resources: Vec<ResourceReport>,
    /// The artifact is the active build's and no endpoint needed a change: nothing was
    /// uploaded, saved or activated (`build_id` is the active build).
    pub already_active: bool,
}

/// Options of `send`.
#[derive(Debug, Clone)]
pub struct SendOptions {
    /// `saveEndpoint` calls in flight at once.
    pub concurrency: usize,
    /// Attempts per `saveEndpoint`.
    pub attempts: u32,
    /// The worker image the templates name (`--image` / `FLASH_HOST_IMAGE`); `None`: the
    /// published `flash-host` image of this version.
    pub image: Option<String>,
    /// The State Manager app to deploy to (`--app-name`); `None`: the build's project name.
    pub app_name: Option<String>,
    /// The environment's deploy lease: how long to wait for another deploy to finish.
    pub lease: LeaseOptions,
}

impl Default for SendOptions {
    fn default() -> Self {
        Self {
            concurrency: 3,
            attempts: 3,
            image: None,
            app_name: None,
            lease: LeaseOptions::default(),
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

/// What was deployed to an environment before this send.
pub(crate) struct Previous {
    pub resources: BTreeMap<String, DeployedResource>,
    /// `deploy new --require-auth`, from local state or the active build's manifest.
    pub require_auth: bool,
    /// sha256 of the active build's artifact, as its send published it.
    pub artifact_sha256: Option<String>,
}

/// The previous deployment of each resource: the active build's manifest on the server (so
/// state survives a lost `.flash/`, a deploy from CI, or a mothership that healed an
/// endpoint), then local state for what the server does not know.
pub(crate) async fn previous_deployment(
    sm: &StateManagerClient,
    env: &Value,
    local: Option<&EnvironmentState>,
) -> Result<Previous> {
    let env_id = str_field(env, "id")?;
    let mut resources = BTreeMap::new();
    let mut require_auth = None;
    let mut artifact_sha256 = None;
    if let Some(build) = env.get("activeBuildId").and_then(Value::as_str) {
        let manifest = sm.build_manifest(build).await?;
        require_auth = manifest[DEPLOY_KEY]["require_auth"].as_bool();
        artifact_sha256 = manifest[DEPLOY_KEY]["artifact_sha256"]
            .as_str()
            .map(str::to_string);
        resources = provision::deployed_in(&manifest);
    }
    if let Some(local) = local.filter(|l| l.environment_id == env_id) {
        // The server wins where it knows the resource (the mothership may have replaced an
        // endpoint since); local state fills the gaps (endpoints of a send that failed
        // before it published them).
        for (name, r) in &local.resources {
            resources.entry(name.clone()).or_insert_with(|| r.clone());
        }
        require_auth = Some(local.require_auth);
    }
    Ok(Previous {
        resources,
        require_auth: require_auth.unwrap_or(false),
        artifact_sha256,
    })
}

/// Uploads the artifact with progress; returns its object key.
async fn upload(
    sm: &StateManagerClient,
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
    let resp = resp
        .map_err(|e| sm.request_failed(&url, e))
        .context("uploading the artifact")?;
    if !resp.status().is_success() {
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        bail!("uploading the artifact failed: HTTP {status}: {text}");
    }
    Ok(object_key)
}

/// Reads and checks `.flash/flash_manifest.json` and `.flash/artifact.tar.gz`.
fn read_build(flash_dir: &Path) -> Result<(Value, Manifest, Vec<u8>)> {
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
    Ok((manifest_json, manifest, artifact))
}

/// Who a send is, in the messages of others that wait for its lease.
pub(crate) fn lease_holder(command: &str) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty());
    match host {
        Some(host) => format!("`{command}` on {host} (pid {})", std::process::id()),
        None => format!("`{command}` (pid {})", std::process::id()),
    }
}

/// `flash deploy send`: uploads `.flash/artifact.tar.gz`, provisions, activates, publishes,
/// holding the environment's deploy lease throughout (see the module docs).
pub async fn send(
    sm: &StateManagerClient,
    flash_dir: &Path,
    env_name: &str,
    options: &SendOptions,
    progress: &dyn SendProgress,
) -> Result<SendReport> {
    let build = read_build(flash_dir)?;
    let app_name = options
        .app_name
        .clone()
        .unwrap_or_else(|| build.1.project_name.clone());
    let app = require_app(sm, &app_name).await?;
    let env = require_environment(sm, &app, env_name).await?;
    let env_id = str_field(&env, "id")?.to_string();

    let lease = Lease::acquire(
        sm,
        &env_id,
        env_name,
        &lease_holder("flash deploy send"),
        &options.lease,
        |holder| {
            progress.step(&format!(
                "waiting for {holder} to finish deploying to `{env_name}`"
            ))
        },
    )
    .await?;
    let report = send_leased(
        &lease, flash_dir, build, &app, &app_name, env_name, options, progress,
    )
    .await;
    lease.release().await;
    report
}

/// [`send`] once the lease is held.
#[allow(clippy::too_many_arguments)]
async fn send_leased(
    lease: &Lease,
    flash_dir: &Path,
    (manifest_json, manifest, artifact): (Value, Manifest, Vec<u8>),
    app: &Value,
    app_name: &str,
    env_name: &str,
    options: &SendOptions,
    progress: &dyn SendProgress,
) -> Result<SendReport> {
    let sm = lease.client();
    let artifact_size = artifact.len() as u64;
    let artifact_sha256 = flash_manifest::sha256_hex(&artifact);
    let app_id = str_field(app, "id")?.to_string();
    // Read again under the lease: a send that held it before may have changed everything.
    let env = require_environment(sm, app, env_name).await?;
    let env_id = str_field(&env, "id")?.to_string();
    let app_name = app_name.to_string();

    let rm = ResourceManager::new(flash_dir);
    let local = rm
        .environment(env_name)?
        .filter(|l| l.environment_id == env_id);
    let Previous {
        resources: previous,
        require_auth,
        artifact_sha256: active_sha256,
    } = previous_deployment(sm, &env, local.as_ref()).await?;
    // Endpoints of this environment named after a resource that no record names (a send
    // that died before publishing them): saved again rather than made a second time.
    let mut previous = previous;
    for (name, adopted) in provision::adopt_by_name(&env, &manifest) {
        previous.entry(name).or_insert(adopted);
    }

    let ctx = DeployContext {
        // The build's name, as the mothership (which reads it from the artifact) names it:
        // `--app-name` chooses the State Manager app, not the endpoints' FLASH_APP.
        app: manifest.project_name.clone(),
        env_name: env_name.to_string(),
        env_id: env_id.clone(),
        api_key: sm.api_key().to_string(),
        require_auth,
        image: options.image.clone(),
    };
    let plans = provision::plan(sm, &manifest, &previous, &ctx).await?;

    // The same artifact is already active and every endpoint is as it should be: a new
    // build would only restart workers for nothing. (Builds are reproducible, so an
    // unchanged project gives the same sha256.)
    let current: BTreeMap<String, DeployedResource> = plans
        .iter()
        .filter_map(|p| Some((p.resource.clone(), p.previous.clone()?)))
        .collect();
    let no_strays = provision::removed_endpoints(&previous, &env, &current).is_empty();
    if active_sha256.as_deref() == Some(artifact_sha256.as_str())
        && plans.iter().all(|p| p.action == Action::Unchanged)
        && no_strays
        && let Some(build_id) = env.get("activeBuildId").and_then(Value::as_str)
    {
        progress.step("already deployed");
        return Ok(SendReport {
            build_id: build_id.to_string(),
            environment_id: env_id,
            artifact_size,
            resources: plans
                .iter()
                .filter_map(|p| {
                    let d = p.previous.as_ref()?;
                    Some(ResourceReport {
                        resource: p.resource.clone(),
                        load_balanced: p.load_balanced,
                        endpoint_id: d.endpoint_id.clone(),
                        url: sm.endpoint_url(&d.endpoint_id, p.load_balanced),
                        action: Action::Unchanged,
                    })
                })
                .collect(),
            already_active: true,
        });
    }

    progress.step("uploading the artifact");
    let object_key = upload(sm, &app_id, artifact, progress).await?;
    let build_id = sm
        .finalize_upload(&app_id, &object_key, &manifest_json)
        .await?;

    // Provision every resource before activation, in parallel.
    progress.step("provisioning endpoints");
    let (deployed, failures) = provision::provision_all(
        sm,
        &ctx,
        &manifest,
        &plans,
        options.concurrency,
        options.attempts,
    )
    .await;
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
        bail!(
            "provisioning failed, so the new build was not activated (the previous one keeps \
             serving); fix the cause and run `flash deploy send {env_name}` again:\n  {}",
            failures.join("\n  ")
        );
    }

    // The point of no return: activate only while the lease is still this send's.
    lease.ensure_held()?;
    progress.step("activating the build");
    sm.activate(&env_id, &build_id).await?;

    progress.step("publishing endpoints");
    let mut published = provision::published_manifest(&manifest_json, &deployed, &ctx);
    published[DEPLOY_KEY]["artifact_sha256"] = Value::String(artifact_sha256);
    sm.update_build_manifest(&build_id, &published).await?;

    rm.update(|s| {
        let e = s.environments.entry(env_name.to_string()).or_default();
        e.environment_id = env_id.clone();
        e.app = app_name.clone();
        e.resources = deployed.clone();
    })?;

    let removed = provision::removed_endpoints(&previous, &env, &deployed);
    let mut reports: Vec<ResourceReport> = plans
        .iter()
        .map(|p| ResourceReport::deployed(p, &deployed[&p.resource]))
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
        reports.push(ResourceReport::deleted(sm, id, name, url));
    }
    Ok(SendReport {
        build_id,
        environment_id: env_id,
        artifact_size,
        resources: reports,
        already_active: false,
    })
}
