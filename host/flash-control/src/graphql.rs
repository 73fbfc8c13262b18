//! The State Manager GraphQL API (`POST /graphql`), compatible with RunPod's.
//!
//! Operation, argument, input-type and field names are exactly those the Flash client sends
//! and selects (reference §1.2–1.3); output type names follow the reference SDL. Error texts
//! that clients match on are kept: an unknown `flashAppByName` fails with `app not found`,
//! an unknown `flashEnvironmentByName` is `null`. `manifest` is a JSON object scalar.
//!
//! **Environment leases** (an extension; RunPod's API has none). `acquireFlashEnvironmentLease`
//! gives an environment's deploy lease to the caller's own random token for `ttlSeconds`
//! (1..=3600), or answers `granted: false` with the current holder and when its lease
//! ends; `renewFlashEnvironmentLease` extends it while the token still holds it, and
//! `releaseFlashEnvironmentLease` ends it. While a lease lasts, the mutations that change
//! the environment — `saveEndpoint` and `deleteEndpoint` of its endpoints, `saveTemplate`
//! of their templates, `deployBuildToEnvironment`, `deleteFlashEnvironment`,
//! `deleteFlashApp` — are refused unless the request carries the token in
//! [`flash_api::ENVIRONMENT_LEASE_HEADER`], with an error that names the holder and says
//! to run the command again once it has finished. This fences a holder that lost its
//! lease (it stalled past the expiry and another took it) as well as clients that take
//! none. The check and the write are separate transactions: a lease that expires between
//! them lets that one write through, which matters only at the expiry boundary.
//!
//! `updateFlashBuildManifest` runs as one store transaction (read, compute, write), so
//! concurrent writers never interleave. By default it replaces the manifest (RunPod's
//! semantics; the last writer wins as a whole document). With the extension field
//! `merge: true` the given manifest is applied as an RFC 7386 JSON merge patch to the
//! current one inside that transaction, so concurrent writers that each patch their own keys
//! (e.g. `resources_endpoints.<name>`) all keep their update.

use async_graphql::{
    Context, EmptySubscription, Error, InputObject, Json, Object, Result, Schema, SimpleObject,
};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::auth::Principal;
use crate::endpoints::{self, EndpointError, EndpointPatch, InlineTemplate};
use crate::state::AppState;
use crate::store::{
    App, Build, Endpoint, EnvVar, Environment, EnvironmentLease, StoreError, Template,
};
use crate::util::{now_ms, rfc3339};

/// The schema type served at `/graphql`.
pub type FlashSchema = Schema<Query, Mutation, EmptySubscription>;

/// Builds the schema over the shared state.
pub fn schema(state: AppState) -> FlashSchema {
    Schema::build(Query, Mutation, EmptySubscription)
        .data(state)
        .finish()
}

/// `POST /graphql`: checks the user key, then executes.
pub async fn handler(
    State(state): State<AppState>,
    headers: HeaderMap,
    schema: axum::Extension<FlashSchema>,
    req: async_graphql_axum::GraphQLRequest,
) -> Response {
    let mut req = req.into_inner();
    let lease = headers
        .get(flash_api::ENVIRONMENT_LEASE_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    req = req.data(LeaseToken(lease));
    let operation = req.operation_name.as_deref();
    let admitted = match state.auth.principal(&headers) {
        Some(Principal::User) => true,
        // A worker's key: peer discovery only, in its own environment (checked by the
        // resolvers, which see the scope).
        Some(Principal::Environment(environment)) => {
            let discovery = selects_only(&req.query, operation, ENVIRONMENT_KEY_FIELDS);
            req = req.data(EnvironmentScope(environment));
            discovery
        }
        // Without a key only `flash login`'s two operations are answered (crate::login).
        None => crate::login::anonymous_operation(&req.query, operation),
    };
    if !admitted {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"errors": [{"message": "unauthorized: send `Authorization: Bearer <key>` with the key from <data_dir>/api_key (a worker's environment key only reads its own environment's endpoints and build)"}]})),
        )
            .into_response();
    }
    async_graphql_axum::GraphQLResponse::from(schema.execute(req).await).into_response()
}

/// What an environment key may ask for: what a worker needs to find its peers.
const ENVIRONMENT_KEY_FIELDS: &[&str] = &["flashEnvironment", "flashBuild", "__typename"];

/// Set on requests made with an environment key ([`Principal::Environment`]).
struct EnvironmentScope(String);

/// Refuses what an environment key's scope does not cover.
fn check_scope(ctx: &Context<'_>, environment_id: &str) -> Result<()> {
    match ctx.data_opt::<EnvironmentScope>() {
        Some(EnvironmentScope(own)) if own != environment_id => Err(Error::new(format!(
            "this key belongs to the workers of environment `{own}`: it cannot read \
             environment `{environment_id}`"
        ))),
        _ => Ok(()),
    }
}

/// Whether `query` (its operation `operation_name`) selects only top-level `fields`, with
/// no fragments.
pub(crate) fn selects_only(query: &str, operation_name: Option<&str>, fields: &[&str]) -> bool {
    use async_graphql::parser::types::{DocumentOperations, Selection};
    let Ok(document) = async_graphql::parser::parse_query(query) else {
        return false;
    };
    if !document.fragments.is_empty() {
        return false;
    }
    let operation = match (&document.operations, operation_name) {
        (DocumentOperations::Single(op), _) => &op.node,
        (DocumentOperations::Multiple(ops), Some(name)) => match ops.get(name) {
            Some(op) => &op.node,
            None => return false,
        },
        (DocumentOperations::Multiple(ops), None) if ops.len() == 1 => match ops.values().next() {
            Some(op) => &op.node,
            None => return false,
        },
        _ => return false,
    };
    let items = &operation.selection_set.node.items;
    !items.is_empty()
        && items.iter().all(|item| match &item.node {
            Selection::Field(field) => fields.contains(&field.node.name.node.as_str()),
            _ => false,
        })
}

fn st<'a>(ctx: &Context<'a>) -> &'a AppState {
    ctx.data_unchecked::<AppState>()
}

/// The environment lease token a request carries ([`flash_api::ENVIRONMENT_LEASE_HEADER`]).
struct LeaseToken(Option<String>);

/// Longest lease a holder may ask for; it renews to keep it longer.
const MAX_LEASE_SECONDS: i32 = 3600;
/// Longest token and holder description accepted.
const MAX_LEASE_TEXT: usize = 256;

/// Refuses a change to environment `env_id` while another token holds its lease.
fn check_lease(ctx: &Context<'_>, env_id: &str) -> Result<()> {
    let state = st(ctx);
    let now = now_ms();
    let Some(lease) = state.store.active_lease(env_id, now).map_err(store_err)? else {
        return Ok(());
    };
    let token = ctx.data_opt::<LeaseToken>().and_then(|t| t.0.as_deref());
    if token == Some(lease.token.as_str()) {
        return Ok(());
    }
    let name = state
        .store
        .get_environment(env_id)
        .map_err(store_err)?
        .map_or_else(|| env_id.to_string(), |e| e.name);
    Err(Error::new(format!(
        "environment `{name}` ({env_id}) is being deployed by {} (its lease ends in {} s \
         unless renewed): run this command again once that deploy has finished",
        lease.holder,
        seconds_left(lease.expires_at, now)
    )))
}

/// Whole seconds from `now` until `expires_at` (ms), rounded up.
fn seconds_left(expires_at: i64, now: i64) -> i64 {
    ((expires_at - now).max(0) + 999) / 1000
}

/// [`check_lease`] for every environment whose endpoints use template `template_id`.
fn check_template_lease(ctx: &Context<'_>, template_id: &str) -> Result<()> {
    let endpoints = st(ctx).store.list_endpoints().map_err(store_err)?;
    let mut envs: Vec<String> = endpoints
        .into_iter()
        .filter(|e| e.template_id.as_deref() == Some(template_id))
        .filter_map(|e| e.flash_environment_id)
        .collect();
    envs.sort();
    envs.dedup();
    envs.iter().try_for_each(|env| check_lease(ctx, env))
}

fn store_err(e: StoreError) -> Error {
    Error::new(e.to_string())
}

fn endpoint_err(e: EndpointError) -> Error {
    Error::new(e.to_string())
}

fn manifest_object(v: &Value) -> Result<()> {
    if v.is_object() {
        Ok(())
    } else {
        Err(Error::new("manifest must be a JSON object"))
    }
}

// ---------------------------------------------------------------------------------------
// Output types

/// A Flash app.
pub struct FlashApp(App);

#[Object]
impl FlashApp {
    async fn id(&self) -> &str {
        &self.0.id
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn flash_environments(&self, ctx: &Context<'_>) -> Result<Vec<FlashEnvironment>> {
        Ok(st(ctx)
            .store
            .list_environments(&self.0.id)
            .map_err(store_err)?
            .into_iter()
            .map(FlashEnvironment)
            .collect())
    }
    async fn flash_builds(&self, ctx: &Context<'_>) -> Result<Vec<FlashBuild>> {
        Ok(st(ctx)
            .store
            .list_builds(&self.0.id)
            .map_err(store_err)?
            .into_iter()
            .map(FlashBuild)
            .collect())
    }
}

/// An `{id name}` reference.
#[derive(SimpleObject)]
pub struct Ref {
    id: Option<String>,
    name: Option<String>,
}

/// An environment's deploy lease as its holder, or a caller that wants it, sees it.
#[derive(SimpleObject)]
pub struct FlashEnvironmentLease {
    flash_environment_id: String,
    /// Whether the caller's token holds the lease now.
    granted: bool,
    /// Who holds it.
    holder: Option<String>,
    expires_at: Option<String>,
    /// Seconds until it ends unless renewed.
    expires_in_seconds: Option<i64>,
}

impl FlashEnvironmentLease {
    fn new(env_id: &str, granted: bool, lease: Option<&EnvironmentLease>, now: i64) -> Self {
        Self {
            flash_environment_id: env_id.to_string(),
            granted,
            holder: lease.map(|l| l.holder.clone()),
            expires_at: lease.map(|l| rfc3339(l.expires_at)),
            expires_in_seconds: lease.map(|l| seconds_left(l.expires_at, now)),
        }
    }
}

/// A presigned download of a build artifact.
#[derive(SimpleObject)]
pub struct Artifact {
    object_key: Option<String>,
    download_url: Option<String>,
    expires_at: Option<String>,
}

/// An environment of an app.
pub struct FlashEnvironment(Environment);

#[Object]
impl FlashEnvironment {
    async fn id(&self) -> &str {
        &self.0.id
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn state(&self) -> &str {
        if self.0.active_build_id.is_some() {
            "HEALTHY"
        } else {
            "PENDING"
        }
    }
    async fn active_build_id(&self) -> Option<&str> {
        self.0.active_build_id.as_deref()
    }
    async fn created_at(&self) -> String {
        rfc3339(self.0.created_at)
    }
    async fn endpoints(&self, ctx: &Context<'_>) -> Result<Vec<Ref>> {
        let endpoints = st(ctx).store.list_endpoints().map_err(store_err)?;
        Ok(endpoints
            .into_iter()
            .filter(|e| e.flash_environment_id.as_deref() == Some(self.0.id.as_str()))
            .map(|e| Ref {
                id: Some(e.id),
                name: Some(e.name),
            })
            .collect())
    }
    async fn network_volumes(&self) -> Vec<Ref> {
        Vec::new()
    }
    async fn active_artifact(&self, ctx: &Context<'_>) -> Result<Option<Artifact>> {
        let state = st(ctx);
        let Some(build_id) = &self.0.active_build_id else {
            return Ok(None);
        };
        let Some(build) = state.store.get_build(build_id).map_err(store_err)? else {
            return Ok(None);
        };
        let (url, expires) = state.artifacts.download_url(&build.object_key);
        Ok(Some(Artifact {
            object_key: Some(build.object_key),
            download_url: Some(url),
            expires_at: Some(rfc3339(expires)),
        }))
    }
}

/// A build.
pub struct FlashBuild(Build);

#[Object]
impl FlashBuild {
    async fn id(&self) -> &str {
        &self.0.id
    }
    async fn object_key(&self) -> &str {
        &self.0.object_key
    }
    async fn created_at(&self) -> String {
        rfc3339(self.0.created_at)
    }
    async fn manifest(&self) -> Json<Value> {
        Json(self.0.manifest.clone())
    }
}

/// Answer of `prepareFlashArtifactUpload`.
#[derive(SimpleObject)]
pub struct UploadTicket {
    upload_url: String,
    object_key: String,
    expires_at: Option<String>,
}

/// A `flash login` request (crate::login).
#[derive(SimpleObject)]
pub struct FlashAuthRequest {
    id: String,
    status: String,
    expires_at: Option<String>,
    api_key: Option<String>,
}

impl From<crate::login::Seen> for FlashAuthRequest {
    fn from(seen: crate::login::Seen) -> Self {
        Self {
            id: seen.id,
            status: seen.status.as_str().to_string(),
            expires_at: Some(seen.expires_at),
            api_key: seen.api_key,
        }
    }
}

/// One environment entry.
#[derive(SimpleObject, InputObject, Clone)]
#[graphql(input_name = "EnvVarInput")]
pub struct EnvVarGql {
    key: String,
    value: String,
}

/// A pod template.
#[derive(SimpleObject)]
#[graphql(name = "PodTemplate")]
pub struct PodTemplate {
    id: String,
    container_disk_in_gb: Option<i32>,
    docker_args: Option<String>,
    env: Vec<EnvVarGql>,
    image_name: Option<String>,
    name: Option<String>,
    readme: Option<String>,
}

impl From<Template> for PodTemplate {
    fn from(t: Template) -> Self {
        PodTemplate {
            id: t.id,
            container_disk_in_gb: t.container_disk_in_gb,
            docker_args: t.docker_args,
            env: t
                .env
                .into_iter()
                .map(|e| EnvVarGql {
                    key: e.key,
                    value: e.value,
                })
                .collect(),
            image_name: t.image_name,
            name: t.name,
            readme: t.readme,
        }
    }
}

/// A network volume reference of an endpoint.
#[derive(SimpleObject)]
pub struct EndpointVolume {
    network_volume_id: Option<String>,
    data_center_id: Option<String>,
}

/// A serverless endpoint.
#[derive(SimpleObject)]
#[graphql(name = "Endpoint")]
pub struct EndpointGql {
    id: String,
    name: Option<String>,
    #[graphql(name = "type")]
    kind: Option<String>,
    ai_key: Option<String>,
    user_id: Option<String>,
    version: Option<i32>,
    template_id: Option<String>,
    gpu_ids: Option<String>,
    gpu_count: Option<i32>,
    allowed_cuda_versions: Option<String>,
    min_cuda_version: Option<String>,
    instance_ids: Option<Vec<String>>,
    locations: Option<String>,
    idle_timeout: Option<i32>,
    execution_timeout_ms: Option<i64>,
    scaler_type: Option<String>,
    scaler_value: Option<i32>,
    workers_min: Option<i32>,
    workers_max: Option<i32>,
    workers_standby: Option<i32>,
    #[graphql(name = "workersPFBTarget")]
    workers_pfb_target: Option<i32>,
    network_volume_id: Option<String>,
    network_volume_ids: Option<Vec<EndpointVolume>>,
    flash_environment_id: Option<String>,
    #[graphql(name = "activeBuildid")]
    active_buildid: Option<String>,
    ide_pod_id: Option<String>,
    flash_boot_type: Option<String>,
}

impl EndpointGql {
    fn new(e: Endpoint, active_build: Option<String>) -> Self {
        EndpointGql {
            id: e.id,
            name: Some(e.name),
            kind: Some(e.kind),
            ai_key: Some(e.ai_key),
            user_id: Some("local".into()),
            version: Some(e.version),
            template_id: e.template_id,
            gpu_ids: e.gpu_ids,
            gpu_count: e.gpu_count,
            allowed_cuda_versions: e.allowed_cuda_versions,
            min_cuda_version: e.min_cuda_version,
            instance_ids: e.instance_ids,
            locations: e.locations,
            idle_timeout: Some(e.idle_timeout),
            execution_timeout_ms: Some(e.execution_timeout_ms),
            scaler_type: Some(e.scaler_type),
            scaler_value: Some(e.scaler_value),
            workers_min: Some(e.workers_min),
            workers_max: Some(e.workers_max),
            workers_standby: Some(0),
            workers_pfb_target: Some(e.workers_pfb_target),
            network_volume_id: e.network_volume_id,
            network_volume_ids: Some(
                e.network_volume_ids
                    .into_iter()
                    .map(|v| EndpointVolume {
                        network_volume_id: Some(v),
                        data_center_id: None,
                    })
                    .collect(),
            ),
            flash_environment_id: e.flash_environment_id,
            active_buildid: active_build,
            ide_pod_id: None,
            flash_boot_type: e.flash_boot_type,
        }
    }
}

fn endpoint_out(state: &AppState, e: Endpoint) -> Result<EndpointGql> {
    let active = match &e.flash_environment_id {
        Some(env) => state
            .store
            .get_environment(env)
            .map_err(store_err)?
            .and_then(|e| e.active_build_id),
        None => None,
    };
    Ok(EndpointGql::new(e, active))
}

/// The caller.
pub struct User;

#[Object]
impl User {
    async fn flash_apps(&self, ctx: &Context<'_>) -> Result<Vec<FlashApp>> {
        Ok(st(ctx)
            .store
            .list_apps()
            .map_err(store_err)?
            .into_iter()
            .map(FlashApp)
            .collect())
    }
    async fn endpoint(&self, ctx: &Context<'_>, id: String) -> Result<Option<EndpointGql>> {
        let state = st(ctx);
        state
            .store
            .get_endpoint(&id)
            .map_err(store_err)?
            .map(|e| endpoint_out(state, e))
            .transpose()
    }
    /// Every endpoint (a local extension; RunPod's client does not list them).
    async fn endpoints(&self, ctx: &Context<'_>) -> Result<Vec<EndpointGql>> {
        let state = st(ctx);
        state
            .store
            .list_endpoints()
            .map_err(store_err)?
            .into_iter()
            .map(|e| endpoint_out(state, e))
            .collect()
    }
}

/// Stock answer for the capacity probes.
#[derive(SimpleObject)]
pub struct Stock {
    stock_status: Option<String>,
}

/// A GPU type (the local server has capacity for every one).
pub struct GpuType;

#[Object]
impl GpuType {
    async fn lowest_price(
        &self,
        #[graphql(name = "input")] _input: Option<GpuLowestPriceInput>,
    ) -> Stock {
        Stock {
            stock_status: Some("High".into()),
        }
    }
}

/// A CPU flavor (always in stock locally).
pub struct CpuFlavor;

#[Object]
impl CpuFlavor {
    async fn specifics(&self, #[graphql(name = "input")] _input: Option<SpecificsInput>) -> Stock {
        Stock {
            stock_status: Some("High".into()),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Inputs

#[derive(InputObject)]
pub struct FlashEnvironmentByNameInput {
    flash_app_id: String,
    name: String,
}
#[derive(InputObject)]
pub struct CreateFlashAppInput {
    name: String,
}
#[derive(InputObject)]
pub struct CreateFlashEnvironmentInput {
    flash_app_id: String,
    name: String,
}
#[derive(InputObject)]
pub struct PrepareFlashArtifactUploadInput {
    flash_app_id: String,
    /// Bytes.
    tarball_size: i64,
}
#[derive(InputObject)]
pub struct FinalizeFlashArtifactUploadInput {
    flash_app_id: String,
    object_key: String,
    manifest: Json<Value>,
}
#[derive(InputObject)]
pub struct DeployBuildToEnvironmentInput {
    flash_environment_id: String,
    flash_build_id: String,
}
#[derive(InputObject)]
pub struct UpdateFlashBuildManifestInput {
    flash_build_id: String,
    manifest: Json<Value>,
    /// Extension: apply `manifest` as a JSON merge patch (RFC 7386) instead of replacing.
    merge: Option<bool>,
}
/// Extension: take or renew an environment's deploy lease.
#[derive(InputObject)]
pub struct FlashEnvironmentLeaseInput {
    flash_environment_id: String,
    /// The caller's own random token; sent again in the lease header with its changes.
    token: String,
    /// Who the caller is, for the messages other callers get.
    holder: Option<String>,
    /// 1..=3600.
    ttl_seconds: i32,
}
/// Extension: end an environment's deploy lease.
#[derive(InputObject)]
pub struct ReleaseFlashEnvironmentLeaseInput {
    flash_environment_id: String,
    token: String,
}

impl FlashEnvironmentLeaseInput {
    /// The token, the holder and the expiry, checked.
    fn parts(&self, now: i64) -> Result<(&str, String, i64)> {
        let token = self.token.as_str();
        if token.is_empty() || token.len() > MAX_LEASE_TEXT {
            return Err(Error::new(format!(
                "a lease token must be 1 to {MAX_LEASE_TEXT} characters"
            )));
        }
        if !(1..=MAX_LEASE_SECONDS).contains(&self.ttl_seconds) {
            return Err(Error::new(format!(
                "ttlSeconds must be 1..={MAX_LEASE_SECONDS}, got {}",
                self.ttl_seconds
            )));
        }
        let mut holder = self
            .holder
            .clone()
            .filter(|h| !h.trim().is_empty())
            .unwrap_or_else(|| "another client".to_string());
        if holder.len() > MAX_LEASE_TEXT {
            let cut = (0..=MAX_LEASE_TEXT)
                .rev()
                .find(|i| holder.is_char_boundary(*i))
                .unwrap_or(0);
            holder.truncate(cut);
        }
        Ok((token, holder, now + i64::from(self.ttl_seconds) * 1000))
    }
}

#[derive(InputObject)]
pub struct SaveTemplateInput {
    id: String,
    name: Option<String>,
    image_name: Option<String>,
    container_disk_in_gb: Option<i32>,
    docker_args: Option<String>,
    env: Vec<EnvVarGql>,
    volume_in_gb: Option<i32>,
    readme: Option<String>,
}
#[derive(InputObject)]
pub struct EndpointVolumeInput {
    network_volume_id: String,
}
#[derive(InputObject)]
pub struct PodTemplateInput {
    name: Option<String>,
    image_name: Option<String>,
    env: Option<Vec<EnvVarGql>>,
    container_disk_in_gb: Option<i32>,
    docker_args: Option<String>,
    start_script: Option<String>,
    advanced_start: Option<bool>,
    container_registry_auth_id: Option<String>,
    ports: Option<String>,
    config: Option<Json<Value>>,
}
#[derive(InputObject)]
pub struct EndpointInput {
    id: Option<String>,
    name: String,
    #[graphql(name = "type")]
    kind: Option<String>,
    workers_min: Option<i32>,
    workers_max: Option<i32>,
    #[graphql(name = "workersPFBTarget")]
    workers_pfb_target: Option<i32>,
    idle_timeout: Option<i32>,
    execution_timeout_ms: Option<i64>,
    scaler_type: Option<String>,
    scaler_value: Option<i32>,
    gpu_ids: Option<String>,
    gpu_count: Option<i32>,
    allowed_cuda_versions: Option<String>,
    min_cuda_version: Option<String>,
    instance_ids: Option<Vec<String>>,
    locations: Option<String>,
    network_volume_id: Option<String>,
    network_volume_ids: Option<Vec<EndpointVolumeInput>>,
    flash_boot_type: Option<String>,
    flash_environment_id: Option<String>,
    template_id: Option<String>,
    template: Option<PodTemplateInput>,
}
impl From<EnvVarGql> for EnvVar {
    fn from(e: EnvVarGql) -> Self {
        EnvVar {
            key: e.key,
            value: e.value,
        }
    }
}

impl From<EndpointInput> for EndpointPatch {
    fn from(input: EndpointInput) -> Self {
        EndpointPatch {
            id: input.id,
            name: input.name,
            kind: input.kind,
            workers_min: input.workers_min,
            workers_max: input.workers_max,
            workers_pfb_target: input.workers_pfb_target,
            idle_timeout: input.idle_timeout,
            execution_timeout_ms: input.execution_timeout_ms,
            scaler_type: input.scaler_type,
            scaler_value: input.scaler_value,
            gpu_ids: input.gpu_ids,
            gpu_count: input.gpu_count,
            allowed_cuda_versions: input.allowed_cuda_versions,
            min_cuda_version: input.min_cuda_version,
            instance_ids: input.instance_ids,
            locations: input.locations,
            network_volume_id: input.network_volume_id,
            network_volume_ids: input
                .network_volume_ids
                .map(|v| v.into_iter().map(|v| v.network_volume_id).collect()),
            flash_boot_type: input.flash_boot_type,
            flash_environment_id: input.flash_environment_id,
            template_id: input.template_id,
            template: input.template.map(|t| InlineTemplate {
                name: t.name,
                image_name: t.image_name,
                container_disk_in_gb: t.container_disk_in_gb,
                docker_args: t.docker_args,
                env: t
                    .env
                    .unwrap_or_default()
                    .into_iter()
                    .map(EnvVar::from)
                    .collect(),
            }),
        }
    }
}

#[derive(InputObject)]
pub struct GpuTypeFilter {
    ids: Option<Vec<String>>,
}
#[derive(InputObject)]
pub struct GpuLowestPriceInput {
    data_center_id: Option<String>,
    gpu_count: Option<i32>,
    secure_cloud: Option<bool>,
    include_ai_api: Option<bool>,
    allowed_cuda_versions: Option<Vec<Option<String>>>,
    compliance: Option<Vec<Option<String>>>,
}
#[derive(InputObject)]
pub struct CpuFlavorInput {
    id: Option<String>,
}
#[derive(InputObject)]
pub struct SpecificsInput {
    data_center_id: Option<String>,
    instance_id: Option<String>,
}

// ---------------------------------------------------------------------------------------
// Roots

pub struct Query;

fn app_or_err(state: &AppState, id: &str) -> Result<App> {
    state
        .store
        .get_app(id)
        .map_err(store_err)?
        .ok_or_else(|| Error::new(format!("flash app not found: `{id}`")))
}

#[Object]
impl Query {
    async fn myself(&self) -> User {
        User
    }

    async fn flash_app(&self, ctx: &Context<'_>, flash_app_id: String) -> Result<FlashApp> {
        app_or_err(st(ctx), &flash_app_id).map(FlashApp)
    }

    async fn flash_app_by_name(
        &self,
        ctx: &Context<'_>,
        flash_app_name: String,
    ) -> Result<FlashApp> {
        st(ctx)
            .store
            .get_app_by_name(&flash_app_name)
            .map_err(store_err)?
            .map(FlashApp)
            .ok_or_else(|| Error::new(format!("flash app not found: `{flash_app_name}`")))
    }

    async fn flash_environment(
        &self,
        ctx: &Context<'_>,
        flash_environment_id: String,
    ) -> Result<FlashEnvironment> {
        check_scope(ctx, &flash_environment_id)?;
        st(ctx)
            .store
            .get_environment(&flash_environment_id)
            .map_err(store_err)?
            .map(FlashEnvironment)
            .ok_or_else(|| {
                Error::new(format!(
                    "flash environment not found: `{flash_environment_id}`"
                ))
            })
    }

    async fn flash_environment_by_name(
        &self,
        ctx: &Context<'_>,
        input: FlashEnvironmentByNameInput,
    ) -> Result<Option<FlashEnvironment>> {
        Ok(st(ctx)
            .store
            .get_environment_by_name(&input.flash_app_id, &input.name)
            .map_err(store_err)?
            .map(FlashEnvironment))
    }

    async fn flash_build(&self, ctx: &Context<'_>, flash_build_id: String) -> Result<FlashBuild> {
        let state = st(ctx);
        let build = state
            .store
            .get_build(&flash_build_id)
            .map_err(store_err)?
            .ok_or_else(|| Error::new(format!("flash build not found: `{flash_build_id}`")))?;
        // An environment key reads the builds of its own app.
        if let Some(EnvironmentScope(own)) = ctx.data_opt::<EnvironmentScope>() {
            let same_app = state
                .store
                .get_environment(own)
                .map_err(store_err)?
                .is_some_and(|env| env.app_id == build.app_id);
            if !same_app {
                return Err(Error::new(format!(
                    "this key belongs to the workers of environment `{own}`: it cannot read \
                     build `{flash_build_id}` of another app"
                )));
            }
        }
        Ok(FlashBuild(build))
    }

    async fn pod_template(&self, ctx: &Context<'_>, id: String) -> Result<Option<PodTemplate>> {
        Ok(st(ctx)
            .store
            .get_template(&id)
            .map_err(store_err)?
            .map(PodTemplate::from))
    }

    async fn flash_auth_request_status(
        &self,
        ctx: &Context<'_>,
        flash_auth_request_id: String,
    ) -> Result<FlashAuthRequest> {
        let state = st(ctx);
        state
            .logins
            .poll(&flash_auth_request_id, state.auth.user_key(), now_ms())
            .map(FlashAuthRequest::from)
            .map_err(|e| Error::new(e.to_string()))
    }

    async fn gpu_types(&self, input: Option<GpuTypeFilter>) -> Vec<Option<GpuType>> {
        let n = input.and_then(|i| i.ids).map_or(1, |ids| ids.len());
        (0..n).map(|_| Some(GpuType)).collect()
    }

    async fn cpu_flavors(
        &self,
        #[graphql(name = "input")] _input: Option<CpuFlavorInput>,
    ) -> Vec<Option<CpuFlavor>> {
        vec![Some(CpuFlavor)]
    }
}

/// RFC 7386 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(Default::default());
            }
            if let Value::Object(t) = target {
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(k);
                    } else {
                        merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
        }
        other => *target = other.clone(),
    }
}

pub struct Mutation;

#[Object]
impl Mutation {
    async fn create_flash_app(
        &self,
        ctx: &Context<'_>,
        input: CreateFlashAppInput,
    ) -> Result<FlashApp> {
        if input.name.trim().is_empty() {
            return Err(Error::new("app name must not be empty"));
        }
        st(ctx)
            .store
            .create_app(&input.name)
            .map(FlashApp)
            .map_err(store_err)
    }

    async fn delete_flash_app(&self, ctx: &Context<'_>, flash_app_id: String) -> Result<bool> {
        let state = st(ctx);
        app_or_err(state, &flash_app_id)?;
        let envs: Vec<String> = state
            .store
            .list_environments(&flash_app_id)
            .map_err(store_err)?
            .into_iter()
            .map(|e| e.id)
            .collect();
        envs.iter().try_for_each(|env| check_lease(ctx, env))?;
        for ep in state.store.list_endpoints().map_err(store_err)? {
            if ep
                .flash_environment_id
                .as_ref()
                .is_some_and(|e| envs.contains(e))
            {
                state.store.delete_endpoint(&ep.id).map_err(store_err)?;
            }
        }
        state.store.delete_app(&flash_app_id).map_err(store_err)?;
        state.supervisor.kick();
        Ok(true)
    }

    async fn create_flash_environment(
        &self,
        ctx: &Context<'_>,
        input: CreateFlashEnvironmentInput,
    ) -> Result<FlashEnvironment> {
        if input.name.trim().is_empty() {
            return Err(Error::new("environment name must not be empty"));
        }
        st(ctx)
            .store
            .create_environment(&input.flash_app_id, &input.name)
            .map(FlashEnvironment)
            .map_err(store_err)
    }

    async fn delete_flash_environment(
        &self,
        ctx: &Context<'_>,
        flash_environment_id: String,
    ) -> Result<bool> {
        let state = st(ctx);
        check_lease(ctx, &flash_environment_id)?;
        for ep in state.store.list_endpoints().map_err(store_err)? {
            if ep.flash_environment_id.as_deref() == Some(flash_environment_id.as_str()) {
                state.store.delete_endpoint(&ep.id).map_err(store_err)?;
            }
        }
        if !state
            .store
            .delete_environment(&flash_environment_id)
            .map_err(store_err)?
        {
            return Err(Error::new(format!(
                "flash environment not found: `{flash_environment_id}`"
            )));
        }
        state.supervisor.kick();
        Ok(true)
    }

    async fn prepare_flash_artifact_upload(
        &self,
        ctx: &Context<'_>,
        input: PrepareFlashArtifactUploadInput,
    ) -> Result<UploadTicket> {
        let state = st(ctx);
        app_or_err(state, &input.flash_app_id)?;
        let t = state
            .artifacts
            .prepare(
                state.store.as_ref(),
                &input.flash_app_id,
                input.tarball_size,
            )
            .map_err(|e| Error::new(e.to_string()))?;
        Ok(UploadTicket {
            upload_url: t.upload_url,
            object_key: t.object_key,
            expires_at: Some(rfc3339(t.expires_at)),
        })
    }

    async fn finalize_flash_artifact_upload(
        &self,
        ctx: &Context<'_>,
        input: FinalizeFlashArtifactUploadInput,
    ) -> Result<FlashBuild> {
        let state = st(ctx);
        manifest_object(&input.manifest)?;
        let artifact = state
            .store
            .get_artifact(&input.object_key)
            .map_err(store_err)?
            .filter(|a| a.app_id == input.flash_app_id)
            .ok_or_else(|| {
                Error::new(format!(
                    "artifact `{}` not found for this app",
                    input.object_key
                ))
            })?;
        let Some(sha) = artifact.sha256 else {
            return Err(Error::new(format!(
                "artifact `{}` was not uploaded yet: PUT the tarball to the uploadUrl first",
                input.object_key
            )));
        };
        match state.artifacts.file_sha256(&input.object_key).await {
            Ok(actual) if actual == sha => {}
            Ok(actual) => {
                return Err(Error::new(format!(
                    "artifact `{}` sha256 mismatch: recorded {sha}, stored file hashes to {actual}; upload again",
                    input.object_key
                )));
            }
            Err(e) => {
                return Err(Error::new(format!(
                    "artifact `{}` unreadable: {e}",
                    input.object_key
                )));
            }
        }
        state
            .store
            .create_build(&input.flash_app_id, &input.object_key, &input.manifest)
            .map(FlashBuild)
            .map_err(store_err)
    }

    async fn deploy_build_to_environment(
        &self,
        ctx: &Context<'_>,
        input: DeployBuildToEnvironmentInput,
    ) -> Result<FlashEnvironment> {
        let state = st(ctx);
        check_lease(ctx, &input.flash_environment_id)?;
        let env = state
            .store
            .set_active_build(&input.flash_environment_id, &input.flash_build_id)
            .map_err(store_err)?;
        state.supervisor.kick();
        Ok(FlashEnvironment(env))
    }

    async fn update_flash_build_manifest(
        &self,
        ctx: &Context<'_>,
        input: UpdateFlashBuildManifestInput,
    ) -> Result<FlashBuild> {
        manifest_object(&input.manifest)?;
        let merge = input.merge.unwrap_or(false);
        let new = input.manifest.0;
        st(ctx)
            .store
            .update_manifest(&input.flash_build_id, &mut |current| {
                if merge {
                    let mut next = current.clone();
                    merge_patch(&mut next, &new);
                    Ok(next)
                } else {
                    Ok(new.clone())
                }
            })
            .map(FlashBuild)
            .map_err(store_err)
    }

    async fn save_template(
        &self,
        ctx: &Context<'_>,
        input: Option<SaveTemplateInput>,
    ) -> Result<PodTemplate> {
        let input = input.ok_or_else(|| Error::new("saveTemplate needs an input"))?;
        let state = st(ctx);
        check_template_lease(ctx, &input.id)?;
        let existing = state.store.get_template(&input.id).map_err(store_err)?;
        let base = existing.unwrap_or_else(|| Template {
            id: input.id.clone(),
            ..Default::default()
        });
        let template = Template {
            id: input.id,
            name: input.name.or(base.name),
            image_name: input.image_name.or(base.image_name),
            container_disk_in_gb: input.container_disk_in_gb.or(base.container_disk_in_gb),
            docker_args: input.docker_args.or(base.docker_args),
            env: input.env.into_iter().map(EnvVar::from).collect(),
            readme: input.readme.or(base.readme),
        };
        state.store.save_template(&template).map_err(store_err)?;
        state.supervisor.kick();
        Ok(template.into())
    }

    async fn save_endpoint(&self, ctx: &Context<'_>, input: EndpointInput) -> Result<EndpointGql> {
        let state = st(ctx);
        let store = state.store.as_ref();
        let save = endpoints::prepare(store, input.into()).map_err(endpoint_err)?;
        // The environment it is saved in, and the one it leaves.
        save.environments()
            .try_for_each(|env| check_lease(ctx, env))?;
        let ep = save.commit(store).map_err(endpoint_err)?;
        tracing::info!(endpoint = %ep.id, name = %ep.name, version = ep.version, "endpoint saved");
        state.supervisor.kick();
        endpoint_out(state, ep)
    }

    async fn delete_endpoint(&self, ctx: &Context<'_>, id: String) -> Result<bool> {
        let state = st(ctx);
        if let Some(env) = state
            .store
            .get_endpoint(&id)
            .map_err(store_err)?
            .and_then(|e| e.flash_environment_id)
        {
            check_lease(ctx, &env)?;
        }
        if !state.store.delete_endpoint(&id).map_err(store_err)? {
            return Err(Error::new(format!("endpoint not found: `{id}`")));
        }
        tracing::info!(endpoint = %id, "endpoint deleted");
        state.supervisor.kick();
        Ok(true)
    }

    /// Extension: takes the environment's deploy lease (see the module docs).
    async fn acquire_flash_environment_lease(
        &self,
        ctx: &Context<'_>,
        input: FlashEnvironmentLeaseInput,
    ) -> Result<FlashEnvironmentLease> {
        let now = now_ms();
        let (token, holder, expires_at) = input.parts(now)?;
        let env = &input.flash_environment_id;
        let (granted, lease) = st(ctx)
            .store
            .acquire_lease(env, token, &holder, now, expires_at)
            .map_err(|e| match e {
                StoreError::NotFound(_) => {
                    Error::new(format!("flash environment not found: `{env}`"))
                }
                other => store_err(other),
            })?;
        if granted {
            tracing::info!(environment = %env, holder = %lease.holder, "environment lease taken");
        }
        Ok(FlashEnvironmentLease::new(env, granted, Some(&lease), now))
    }

    /// Extension: extends a lease the token holds; `granted: false` when it lost it.
    async fn renew_flash_environment_lease(
        &self,
        ctx: &Context<'_>,
        input: FlashEnvironmentLeaseInput,
    ) -> Result<FlashEnvironmentLease> {
        let now = now_ms();
        let (token, _, expires_at) = input.parts(now)?;
        let env = &input.flash_environment_id;
        let (renewed, lease) = st(ctx)
            .store
            .renew_lease(env, token, expires_at)
            .map_err(store_err)?;
        Ok(FlashEnvironmentLease::new(
            env,
            renewed,
            lease.as_ref().filter(|l| renewed || l.expires_at > now),
            now,
        ))
    }

    /// Extension: ends a lease the token holds.
    async fn release_flash_environment_lease(
        &self,
        ctx: &Context<'_>,
        input: ReleaseFlashEnvironmentLeaseInput,
    ) -> Result<bool> {
        let released = st(ctx)
            .store
            .release_lease(&input.flash_environment_id, &input.token)
            .map_err(store_err)?;
        if released {
            tracing::info!(environment = %input.flash_environment_id, "environment lease released");
        }
        Ok(released)
    }

    async fn create_flash_auth_request(&self, ctx: &Context<'_>) -> Result<FlashAuthRequest> {
        let request = st(ctx)
            .logins
            .create(now_ms())
            .map_err(|e| Error::new(e.to_string()))?;
        tracing::info!(request = %request.id, "login requested: approve it at /flash/login");
        Ok(FlashAuthRequest::from(request))
    }
}

#[cfg(test)]
mod tests {
    use super::merge_patch;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let mut doc = json!({ "a": "b", "c": { "d": "e", "f": "g" }, "keep": [1] });
        merge_patch(
            &mut doc,
            &json!({ "a": "z", "c": { "f": null, "n": 1 }, "new": [2] }),
        );
        assert_eq!(
            doc,
            json!({ "a": "z", "c": { "d": "e", "n": 1 }, "keep": [1], "new": [2] })
        );
        let mut scalar = json!("x");
        merge_patch(&mut scalar, &json!({ "k": 1 }));
        assert_eq!(scalar, json!({ "k": 1 }));
    }
}
