//! Every GraphQL operation Flash sends, with the operation names, variables and selections
//! of RunPod Flash (reference §1.3), and the methods of [`StateManagerClient`] that send
//! them. [`ALL`] lists the documents, so a test validates each one against `flash server`'s
//! own schema and client and server cannot drift apart.
//!
//! How each mutation may be repeated (see [`crate::retry`]):
//!
//! | mutation | after a lost answer |
//! |---|---|
//! | `createFlashApp`, `createFlashEnvironment`, `saveEndpoint` without `id` | looked up by name (app; environment in its app; endpoint in its environment), created again only when absent |
//! | `FinalizeArtifactUpload` | looked up by object key among the app's builds |
//! | `saveEndpoint` with `id`, `saveTemplate`, `delete*`, the lease mutations | sent again (the same effect) |
//! | `deployBuildToEnvironment`, `updateFlashBuildManifest`, `PrepareArtifactUpload`, `createFlashAuthRequest` | not sent again (the error is reported) |
//!
//! Any mutation is sent again when the failed attempt never reached the server.
//!
//! The environment lease mutations (`acquireFlashEnvironmentLease` and its two companions)
//! are `flash server`'s extension; RunPod's API does not know them, which
//! [`StateManagerClient::acquire_environment_lease`] reports as
//! [`LeaseAnswer::Unsupported`].

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::client::StateManagerClient;
use crate::error::ApiError;
use crate::retry::Created;
use crate::wire::{AuthRequest, Build, BuildRef, Environment, EnvironmentLease};

pub const GET_FLASH_APP_BY_NAME: &str = "query getFlashAppByName($flashAppName: String!) { flashAppByName(flashAppName: $flashAppName) { id name flashEnvironments { id name state activeBuildId createdAt } } }";
pub const GET_FLASH_APPS: &str = "query getFlashApps { myself { flashApps { id name flashEnvironments { id name state activeBuildId createdAt } flashBuilds { id createdAt } } } }";
pub const DELETE_FLASH_APP: &str =
    "mutation deleteFlashApp($flashAppId: String!) { deleteFlashApp(flashAppId: $flashAppId) }";
pub const LIST_FLASH_ENVIRONMENTS: &str = "query listFlashEnvironments($flashAppId: String!) { flashApp(flashAppId: $flashAppId) { flashEnvironments { id name state activeBuildId createdAt } } }";
pub const LIST_FLASH_BUILDS: &str = "query listFlashBuilds($flashAppId: String!) { flashApp(flashAppId: $flashAppId) { flashBuilds { id objectKey createdAt } } }";
pub const CREATE_FLASH_APP: &str = "mutation createFlashApp($input: CreateFlashAppInput!) { createFlashApp(input: $input) { id name } }";
pub const GET_FLASH_ENVIRONMENT_BY_NAME: &str = "query getFlashEnvironmentByName($input: FlashEnvironmentByNameInput!) { flashEnvironmentByName(input: $input) { id name state activeBuildId createdAt endpoints { id name } networkVolumes { id name } } }";
pub const CREATE_FLASH_ENVIRONMENT: &str = "mutation createFlashEnvironment($input: CreateFlashEnvironmentInput!) { createFlashEnvironment(input: $input) { id name } }";
pub const DELETE_FLASH_ENVIRONMENT: &str = "mutation deleteFlashEnvironment($flashEnvironmentId: String!) { deleteFlashEnvironment(flashEnvironmentId: $flashEnvironmentId) }";
/// The environment fields of the derived schema, without `activeArtifact` (only
/// `deployBuildToEnvironment` selects it).
pub const GET_FLASH_ENVIRONMENT: &str = "query getFlashEnvironment($flashEnvironmentId: String!) { flashEnvironment(flashEnvironmentId: $flashEnvironmentId) { id name state activeBuildId createdAt endpoints { id name } networkVolumes { id name } } }";
pub const GET_FLASH_BUILD: &str =
    "query getFlashBuild($input: String!) { flashBuild(flashBuildId: $input) { id manifest } }";
pub const PREPARE_ARTIFACT_UPLOAD: &str = "mutation PrepareArtifactUpload($input: PrepareFlashArtifactUploadInput!) { prepareFlashArtifactUpload(input: $input) { uploadUrl objectKey expiresAt } }";
pub const FINALIZE_ARTIFACT_UPLOAD: &str = "mutation FinalizeArtifactUpload($input: FinalizeFlashArtifactUploadInput!) { finalizeFlashArtifactUpload(input: $input) { id manifest } }";
pub const DEPLOY_BUILD_TO_ENVIRONMENT: &str = "mutation deployBuildToEnvironment($input: DeployBuildToEnvironmentInput!) { deployBuildToEnvironment(input: $input) { id name activeArtifact { objectKey downloadUrl expiresAt } } }";
pub const UPDATE_FLASH_BUILD_MANIFEST: &str = "mutation updateFlashBuildManifest($input: UpdateFlashBuildManifestInput!) { updateFlashBuildManifest(input: $input) { id manifest } }";
pub const SAVE_ENDPOINT: &str = "mutation saveEndpoint($input: EndpointInput!) { saveEndpoint(input: $input) { id name type templateId aiKey workersMin workersMax flashEnvironmentId } }";
pub const SAVE_TEMPLATE: &str = "mutation saveTemplate($input: SaveTemplateInput) { saveTemplate(input: $input) { id name imageName } }";
pub const GET_ENDPOINT: &str = "query getEndpoint($id: String!) { myself { endpoint(id: $id) { id name type templateId version workersMin workersMax idleTimeout executionTimeoutMs scalerType scalerValue gpuIds gpuCount instanceIds flashEnvironmentId } } }";
pub const GET_TEMPLATE: &str =
    "query getTemplate($id: String!) { podTemplate(id: $id) { id env { key value } } }";
pub const DELETE_ENDPOINT: &str =
    "mutation deleteEndpoint($id: String!) { deleteEndpoint(id: $id) }";
/// `flash login`, step 1: sent without a key.
pub const CREATE_FLASH_AUTH_REQUEST: &str =
    "mutation createFlashAuthRequest { createFlashAuthRequest { id status expiresAt } }";
/// `flash login`, step 2 (polled): sent without a key; `apiKey` once approved.
pub const FLASH_AUTH_REQUEST_STATUS: &str = "query flashAuthRequestStatus($flashAuthRequestId: String!) { flashAuthRequestStatus(flashAuthRequestId: $flashAuthRequestId) { id status expiresAt apiKey } }";

/// `flash server`'s extension: takes (or, with the same token, extends) the environment's
/// deploy lease. `granted: false` names the current holder and when its lease ends.
pub const ACQUIRE_FLASH_ENVIRONMENT_LEASE: &str = "mutation acquireFlashEnvironmentLease($input: FlashEnvironmentLeaseInput!) { acquireFlashEnvironmentLease(input: $input) { flashEnvironmentId granted holder expiresAt expiresInSeconds } }";
/// Extends a lease this token holds; `granted: false` when it was lost to another holder.
pub const RENEW_FLASH_ENVIRONMENT_LEASE: &str = "mutation renewFlashEnvironmentLease($input: FlashEnvironmentLeaseInput!) { renewFlashEnvironmentLease(input: $input) { flashEnvironmentId granted holder expiresAt expiresInSeconds } }";
/// Ends a lease this token holds (true), or does nothing (false).
pub const RELEASE_FLASH_ENVIRONMENT_LEASE: &str = "mutation releaseFlashEnvironmentLease($input: ReleaseFlashEnvironmentLeaseInput!) { releaseFlashEnvironmentLease(input: $input) }";
/// The root field of [`ACQUIRE_FLASH_ENVIRONMENT_LEASE`], which a server without leases
/// names in its refusal.
pub const LEASE_FIELD: &str = "acquireFlashEnvironmentLease";
/// Its input type, which such a server may name instead.
const LEASE_INPUT: &str = "FlashEnvironmentLeaseInput";

/// Every document above, by operation name.
pub const ALL: &[(&str, &str)] = &[
    ("getFlashAppByName", GET_FLASH_APP_BY_NAME),
    ("getFlashApps", GET_FLASH_APPS),
    ("createFlashApp", CREATE_FLASH_APP),
    ("deleteFlashApp", DELETE_FLASH_APP),
    ("listFlashEnvironments", LIST_FLASH_ENVIRONMENTS),
    ("listFlashBuilds", LIST_FLASH_BUILDS),
    ("getFlashEnvironmentByName", GET_FLASH_ENVIRONMENT_BY_NAME),
    ("createFlashEnvironment", CREATE_FLASH_ENVIRONMENT),
    ("deleteFlashEnvironment", DELETE_FLASH_ENVIRONMENT),
    ("getFlashEnvironment", GET_FLASH_ENVIRONMENT),
    ("getFlashBuild", GET_FLASH_BUILD),
    ("PrepareArtifactUpload", PREPARE_ARTIFACT_UPLOAD),
    ("FinalizeArtifactUpload", FINALIZE_ARTIFACT_UPLOAD),
    ("deployBuildToEnvironment", DEPLOY_BUILD_TO_ENVIRONMENT),
    ("updateFlashBuildManifest", UPDATE_FLASH_BUILD_MANIFEST),
    ("saveEndpoint", SAVE_ENDPOINT),
    ("saveTemplate", SAVE_TEMPLATE),
    ("getEndpoint", GET_ENDPOINT),
    ("getTemplate", GET_TEMPLATE),
    ("deleteEndpoint", DELETE_ENDPOINT),
    ("createFlashAuthRequest", CREATE_FLASH_AUTH_REQUEST),
    ("flashAuthRequestStatus", FLASH_AUTH_REQUEST_STATUS),
    (
        "acquireFlashEnvironmentLease",
        ACQUIRE_FLASH_ENVIRONMENT_LEASE,
    ),
    ("renewFlashEnvironmentLease", RENEW_FLASH_ENVIRONMENT_LEASE),
    (
        "releaseFlashEnvironmentLease",
        RELEASE_FLASH_ENVIRONMENT_LEASE,
    ),
];

/// The answer to [`StateManagerClient::acquire_environment_lease`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseAnswer {
    /// The lease is this token's until `expires_at`.
    Granted(EnvironmentLease),
    /// Another holder has it.
    Held(EnvironmentLease),
    /// The server has no environment leases (RunPod's API).
    Unsupported,
}

/// Attempts for the mutations that are safe to repeat (`saveEndpoint` with an id,
/// `saveTemplate` of an existing template, deletes).
pub const IDEMPOTENT_MUTATION_ATTEMPTS: u32 = 3;

impl StateManagerClient {
    /// Sends a query and returns `data.<field>`, or `None` when it is null or the server
    /// answers "not found" (RunPod reports a missing object as a GraphQL error).
    async fn optional(
        &self,
        operation: &str,
        query: &str,
        variables: Value,
        field: &str,
    ) -> Result<Option<Value>, ApiError> {
        match self.execute(operation, query, variables).await {
            Ok(mut data) => Ok(data
                .get_mut(field)
                .map(Value::take)
                .filter(|v| !v.is_null())),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The app named `name` (`{id name flashEnvironments}`), or `None`.
    pub async fn app_by_name(&self, name: &str) -> Result<Option<Value>, ApiError> {
        self.optional(
            "getFlashAppByName",
            GET_FLASH_APP_BY_NAME,
            json!({ "flashAppName": name }),
            "flashAppByName",
        )
        .await
    }

    /// Every app of the caller, with environments and builds (`{id createdAt}`).
    pub async fn apps(&self) -> Result<Vec<Value>, ApiError> {
        let data = self
            .execute("getFlashApps", GET_FLASH_APPS, json!({}))
            .await?;
        Ok(data["myself"]["flashApps"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// Creates an app; returns `{id name}`. After a lost answer the app is looked up by
    /// name before it is created again.
    pub async fn create_app(&self, name: &str) -> Result<Value, ApiError> {
        let created = self
            .create_or_find(
                "createFlashApp",
                CREATE_FLASH_APP,
                json!({ "input": { "name": name } }),
                "createFlashApp",
                self.config().max_attempts,
                || self.app_by_name(name),
            )
            .await?;
        Ok(created.into_inner())
    }

    /// Deletes an app. The server deletes what is left of it; delete its environments'
    /// endpoints first (reference §1.6). Safe to repeat.
    pub async fn delete_app(&self, id: &str) -> Result<(), ApiError> {
        self.execute_idempotent(
            "deleteFlashApp",
            DELETE_FLASH_APP,
            json!({ "flashAppId": id }),
            IDEMPOTENT_MUTATION_ATTEMPTS,
        )
        .await
        .map_err(|e| e.not_found_as("app", id))?;
        Ok(())
    }

    /// The environments of app `app_id` (without endpoints); [`ApiError::NotFound`] when
    /// the app does not exist.
    pub async fn app_environments(&self, app_id: &str) -> Result<Vec<Environment>, ApiError> {
        let value = self
            .app_field(
                "listFlashEnvironments",
                LIST_FLASH_ENVIRONMENTS,
                app_id,
                "flashEnvironments",
            )
            .await?;
        typed(value, "listFlashEnvironments", "flashApp.flashEnvironments")
    }

    /// The builds of app `app_id`; [`ApiError::NotFound`] when the app does not exist.
    pub async fn app_builds(&self, app_id: &str) -> Result<Vec<BuildRef>, ApiError> {
        let value = self
            .app_field("listFlashBuilds", LIST_FLASH_BUILDS, app_id, "flashBuilds")
            .await?;
        typed(value, "listFlashBuilds", "flashApp.flashBuilds")
    }

    /// `flashApp(flashAppId).<field>`, `[]` when null.
    async fn app_field(
        &self,
        operation: &str,
        query: &str,
        app_id: &str,
        field: &str,
    ) -> Result<Value, ApiError> {
        let mut app = self
            .optional(
                operation,
                query,
                json!({ "flashAppId": app_id }),
                "flashApp",
            )
            .await?
            .ok_or_else(|| ApiError::NotFound {
                kind: "app",
                id: app_id.to_owned(),
            })?;
        Ok(match app[field].take() {
            Value::Null => Value::Array(Vec::new()),
            value => value,
        })
    }

    /// `flash login`, step 1: asks for an authorization request. Meant for an anonymous
    /// client ([`crate::ClientConfig::anonymous`]); sent once.
    pub async fn create_auth_request(&self) -> Result<AuthRequest, ApiError> {
        let mut data = self
            .execute(
                "createFlashAuthRequest",
                CREATE_FLASH_AUTH_REQUEST,
                json!({}),
            )
            .await?;
        match data["createFlashAuthRequest"].take() {
            Value::Null => Err(ApiError::Malformed {
                operation: "createFlashAuthRequest".into(),
                detail: "the server returned no auth request".into(),
            }),
            value => typed(value, "createFlashAuthRequest", "createFlashAuthRequest"),
        }
    }

    /// `flash login`, step 2: the state of authorization request `id` (with `apiKey` once
    /// approved). [`ApiError::NotFound`] when the server does not know the request.
    pub async fn auth_request_status(&self, id: &str) -> Result<AuthRequest, ApiError> {
        let value = self
            .optional(
                "flashAuthRequestStatus",
                FLASH_AUTH_REQUEST_STATUS,
                json!({ "flashAuthRequestId": id }),
                "flashAuthRequestStatus",
            )
            .await?
            .ok_or_else(|| ApiError::NotFound {
                kind: "auth request",
                id: id.to_owned(),
            })?;
        typed(value, "flashAuthRequestStatus", "flashAuthRequestStatus")
    }

    /// The environment `name` of app `app_id` (with its endpoints), or `None`.
    pub async fn environment_by_name(
        &self,
        app_id: &str,
        name: &str,
    ) -> Result<Option<Value>, ApiError> {
        self.optional(
            "getFlashEnvironmentByName",
            GET_FLASH_ENVIRONMENT_BY_NAME,
            json!({ "input": { "flashAppId": app_id, "name": name } }),
            "flashEnvironmentByName",
        )
        .await
    }

    /// Creates an environment in app `app_id`; returns `{id name}`. After a lost answer
    /// the environment is looked up by name in the app before it is created again.
    pub async fn create_environment(&self, app_id: &str, name: &str) -> Result<Value, ApiError> {
        let created = self
            .create_or_find(
                "createFlashEnvironment",
                CREATE_FLASH_ENVIRONMENT,
                json!({ "input": { "flashAppId": app_id, "name": name } }),
                "createFlashEnvironment",
                self.config().max_attempts,
                || self.environment_by_name(app_id, name),
            )
            .await?;
        Ok(created.into_inner())
    }

    /// Deletes an environment.
    pub async fn delete_environment(&self, id: &str) -> Result<(), ApiError> {
        self.execute_idempotent(
            "deleteFlashEnvironment",
            DELETE_FLASH_ENVIRONMENT,
            json!({ "flashEnvironmentId": id }),
            IDEMPOTENT_MUTATION_ATTEMPTS,
        )
        .await?;
        Ok(())
    }

    /// The environment `id` as JSON (with its endpoints and active build), or `None`.
    pub async fn environment(&self, id: &str) -> Result<Option<Value>, ApiError> {
        self.optional(
            "getFlashEnvironment",
            GET_FLASH_ENVIRONMENT,
            json!({ "flashEnvironmentId": id }),
            "flashEnvironment",
        )
        .await
    }

    /// The environment `id`, typed; [`ApiError::NotFound`] when it does not exist.
    pub async fn flash_environment(&self, id: &str) -> Result<Environment, ApiError> {
        let value = self
            .environment(id)
            .await?
            .ok_or_else(|| ApiError::NotFound {
                kind: "environment",
                id: id.to_owned(),
            })?;
        typed(value, "getFlashEnvironment", "flashEnvironment")
    }

    /// The build `id` with its manifest; [`ApiError::NotFound`] when it does not exist.
    pub async fn flash_build(&self, id: &str) -> Result<Build, ApiError> {
        let value = self
            .optional(
                "getFlashBuild",
                GET_FLASH_BUILD,
                json!({ "input": id }),
                "flashBuild",
            )
            .await?
            .ok_or_else(|| ApiError::NotFound {
                kind: "build",
                id: id.to_owned(),
            })?;
        typed(value, "getFlashBuild", "flashBuild")
    }

    /// The manifest of build `id` (`null` when it has none).
    pub async fn build_manifest(&self, id: &str) -> Result<Value, ApiError> {
        Ok(self.flash_build(id).await?.manifest)
    }

    /// Asks for an upload URL for `size` bytes: `(uploadUrl, objectKey)`.
    pub async fn prepare_upload(
        &self,
        app_id: &str,
        size: u64,
    ) -> Result<(String, String), ApiError> {
        let data = self
            .execute(
                "PrepareArtifactUpload",
                PREPARE_ARTIFACT_UPLOAD,
                json!({ "input": { "flashAppId": app_id, "tarballSize": size } }),
            )
            .await?;
        let upload = &data["prepareFlashArtifactUpload"];
        Ok((
            required_str(upload, "PrepareArtifactUpload", "uploadUrl")?,
            required_str(upload, "PrepareArtifactUpload", "objectKey")?,
        ))
    }

    /// Registers the uploaded artifact as a build; returns the build id. After a lost
    /// answer the build is looked up by its object key among the app's builds before it is
    /// registered again.
    pub async fn finalize_upload(
        &self,
        app_id: &str,
        object_key: &str,
        manifest: &Value,
    ) -> Result<String, ApiError> {
        let created = self
            .create_or_find(
                "FinalizeArtifactUpload",
                FINALIZE_ARTIFACT_UPLOAD,
                json!({ "input": { "flashAppId": app_id, "objectKey": object_key, "manifest": manifest } }),
                "finalizeFlashArtifactUpload",
                self.config().max_attempts,
                || async {
                    let builds = match self.app_builds(app_id).await {
                        Ok(builds) => builds,
                        Err(e) if e.is_not_found() => return Ok(None),
                        Err(e) => return Err(e),
                    };
                    Ok(builds
                        .into_iter()
                        .find(|b| b.object_key.as_deref() == Some(object_key))
                        .map(|b| json!({ "id": b.id })))
                },
            )
            .await?;
        required_str(&created.into_inner(), "FinalizeArtifactUpload", "id")
    }

    /// Makes `build_id` the environment's active build.
    pub async fn activate(&self, env_id: &str, build_id: &str) -> Result<(), ApiError> {
        self.execute(
            "deployBuildToEnvironment",
            DEPLOY_BUILD_TO_ENVIRONMENT,
            json!({ "input": { "flashEnvironmentId": env_id, "flashBuildId": build_id } }),
        )
        .await?;
        Ok(())
    }

    /// Replaces a build's manifest (a JSON object, never a string). Sent exactly once; the
    /// returned build is what the server stored.
    pub async fn update_build_manifest(
        &self,
        build_id: &str,
        manifest: &Value,
    ) -> Result<Build, ApiError> {
        if !manifest.is_object() {
            return Err(ApiError::Config(format!(
                "the manifest for build `{build_id}` must be a JSON object, got {}",
                json_kind(manifest)
            )));
        }
        let mut data = self
            .execute(
                "updateFlashBuildManifest",
                UPDATE_FLASH_BUILD_MANIFEST,
                json!({ "input": { "flashBuildId": build_id, "manifest": manifest } }),
            )
            .await
            .map_err(|e| e.not_found_as("build", build_id))?;
        match data["updateFlashBuildManifest"].take() {
            Value::Null => Err(ApiError::NotFound {
                kind: "build",
                id: build_id.to_owned(),
            }),
            value => typed(
                value,
                "updateFlashBuildManifest",
                "updateFlashBuildManifest",
            ),
        }
    }

    /// Creates an endpoint (`input` without `id`); returns the saved endpoint
    /// (`saveEndpoint`'s selection), or [`Created::Found`] with the endpoint as `getEndpoint`
    /// selects it when the answer was lost and an endpoint of that name was found in the
    /// input's environment (`flashEnvironmentId`). Without an environment there is nothing
    /// to look in, and the create is only sent again when it never reached the server.
    pub async fn create_endpoint(
        &self,
        input: &Value,
        attempts: u32,
    ) -> Result<Created<Value>, ApiError> {
        if input.get("id").is_some_and(|id| !id.is_null()) {
            return Err(ApiError::Config(
                "create_endpoint got an input with an `id`: that is an update \
                 (update_endpoint)"
                    .into(),
            ));
        }
        let variables = json!({ "input": input });
        let environment = input.get("flashEnvironmentId").and_then(Value::as_str);
        let name = input.get("name").and_then(Value::as_str).unwrap_or("");
        let Some(environment) = environment.filter(|_| !name.is_empty()) else {
            let mut data = self
                .execute("saveEndpoint", SAVE_ENDPOINT, variables)
                .await?;
            return Ok(Created::New(data["saveEndpoint"].take()));
        };
        self.create_or_find(
            "saveEndpoint",
            SAVE_ENDPOINT,
            variables,
            "saveEndpoint",
            attempts,
            || self.endpoint_by_name(environment, name),
        )
        .await
    }

    /// Updates the endpoint `input.id`; returns the endpoint object. Retried on transient
    /// failures (saving the same settings twice has the effect of once).
    pub async fn update_endpoint(&self, input: &Value, attempts: u32) -> Result<Value, ApiError> {
        if !input.get("id").is_some_and(Value::is_string) {
            return Err(ApiError::Config(
                "update_endpoint needs the endpoint's `id`; a create goes through \
                 create_endpoint, which is never repeated blindly"
                    .into(),
            ));
        }
        let mut data = self
            .execute_idempotent(
                "saveEndpoint",
                SAVE_ENDPOINT,
                json!({ "input": input }),
                attempts,
            )
            .await?;
        Ok(data["saveEndpoint"].take())
    }

    /// The endpoint named `name` in environment `environment_id` (as `getEndpoint` selects
    /// it), or `None`. The server stores names without a trailing `-fb` (reference §1.4).
    pub async fn endpoint_by_name(
        &self,
        environment_id: &str,
        name: &str,
    ) -> Result<Option<Value>, ApiError> {
        let Some(environment) = self.environment(environment_id).await? else {
            return Ok(None);
        };
        let wanted = name.trim_end_matches("-fb");
        let id = environment["endpoints"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e.get("name").and_then(Value::as_str) == Some(wanted))
            .and_then(|e| e.get("id").and_then(Value::as_str))
            .map(str::to_string);
        match id {
            Some(id) => self.endpoint(&id).await,
            None => Ok(None),
        }
    }

    /// Replaces an endpoint's template (update path, reference §1.5); safe to repeat.
    pub async fn save_template(&self, input: &Value, attempts: u32) -> Result<(), ApiError> {
        self.execute_idempotent(
            "saveTemplate",
            SAVE_TEMPLATE,
            json!({ "input": input }),
            attempts,
        )
        .await?;
        Ok(())
    }

    /// The endpoint `id` (with its template id) if it exists.
    pub async fn endpoint(&self, id: &str) -> Result<Option<Value>, ApiError> {
        let mut data = match self
            .execute("getEndpoint", GET_ENDPOINT, json!({ "id": id }))
            .await
        {
            Ok(data) => data,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(Some(data["myself"]["endpoint"].take()).filter(Value::is_object))
    }

    /// The env of template `id` as `(key, value)` pairs, or `None` if it does not exist.
    pub async fn template_env(&self, id: &str) -> Result<Option<Vec<(String, String)>>, ApiError> {
        let Some(template) = self
            .optional(
                "getTemplate",
                GET_TEMPLATE,
                json!({ "id": id }),
                "podTemplate",
            )
            .await?
        else {
            return Ok(None);
        };
        Ok(Some(
            template["env"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|e| {
                    Some((
                        e.get("key")?.as_str()?.to_string(),
                        e.get("value")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_string(),
                    ))
                })
                .collect(),
        ))
    }

    /// Deletes an endpoint; one that is already gone counts as deleted (§1.1).
    pub async fn delete_endpoint(&self, id: &str) -> Result<(), ApiError> {
        let result = self
            .execute_idempotent(
                "deleteEndpoint",
                DELETE_ENDPOINT,
                json!({ "id": id }),
                IDEMPOTENT_MUTATION_ATTEMPTS,
            )
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) => match self.endpoint(id).await {
                Ok(None) => Ok(()),
                _ => Err(e),
            },
        }
    }

    /// Takes the deploy lease of environment `environment_id` for `ttl` under `token` (the
    /// caller's own random token, so that a repetition after a lost answer extends the same
    /// lease); `holder` says who holds it in other callers' messages. A server without
    /// leases (RunPod's API) answers [`LeaseAnswer::Unsupported`].
    pub async fn acquire_environment_lease(
        &self,
        environment_id: &str,
        token: &str,
        holder: &str,
        ttl: std::time::Duration,
    ) -> Result<LeaseAnswer, ApiError> {
        let result = self
            .execute_idempotent(
                "acquireFlashEnvironmentLease",
                ACQUIRE_FLASH_ENVIRONMENT_LEASE,
                lease_input(environment_id, token, holder, ttl),
                IDEMPOTENT_MUTATION_ATTEMPTS,
            )
            .await;
        let mut data = match result {
            Ok(data) => data,
            Err(e) if e.is_unknown_field(LEASE_FIELD) || e.is_unknown_field(LEASE_INPUT) => {
                return Ok(LeaseAnswer::Unsupported);
            }
            Err(e) => return Err(e.not_found_as("environment", environment_id)),
        };
        let lease: EnvironmentLease = typed(
            data["acquireFlashEnvironmentLease"].take(),
            "acquireFlashEnvironmentLease",
            "acquireFlashEnvironmentLease",
        )?;
        Ok(if lease.granted {
            LeaseAnswer::Granted(lease)
        } else {
            LeaseAnswer::Held(lease)
        })
    }

    /// Extends the lease `token` holds on the environment; `granted: false` when it was
    /// lost (it expired and another holder took it).
    pub async fn renew_environment_lease(
        &self,
        environment_id: &str,
        token: &str,
        holder: &str,
        ttl: std::time::Duration,
    ) -> Result<EnvironmentLease, ApiError> {
        let mut data = self
            .execute_idempotent(
                "renewFlashEnvironmentLease",
                RENEW_FLASH_ENVIRONMENT_LEASE,
                lease_input(environment_id, token, holder, ttl),
                IDEMPOTENT_MUTATION_ATTEMPTS,
            )
            .await
            .map_err(|e| e.not_found_as("environment", environment_id))?;
        typed(
            data["renewFlashEnvironmentLease"].take(),
            "renewFlashEnvironmentLease",
            "renewFlashEnvironmentLease",
        )
    }

    /// Ends the lease `token` holds on the environment; `false` when it held none.
    pub async fn release_environment_lease(
        &self,
        environment_id: &str,
        token: &str,
    ) -> Result<bool, ApiError> {
        let data = self
            .execute_idempotent(
                "releaseFlashEnvironmentLease",
                RELEASE_FLASH_ENVIRONMENT_LEASE,
                json!({ "input": { "flashEnvironmentId": environment_id, "token": token } }),
                IDEMPOTENT_MUTATION_ATTEMPTS,
            )
            .await?;
        Ok(data["releaseFlashEnvironmentLease"]
            .as_bool()
            .unwrap_or(false))
    }

    /// The manifest persisted on the environment's active build, with that build's id.
    /// `None` when the environment has no active build yet or the build has no manifest.
    pub async fn persisted_manifest(
        &self,
        environment_id: &str,
    ) -> Result<Option<(String, Value)>, ApiError> {
        let environment = self.flash_environment(environment_id).await?;
        let Some(build_id) = environment.active_build_id.filter(|id| !id.is_empty()) else {
            tracing::debug!(environment_id, "environment has no active build yet");
            return Ok(None);
        };
        let build = self.flash_build(&build_id).await?;
        match build.manifest {
            Value::Null => Ok(None),
            Value::Object(_) => Ok(Some((build_id, build.manifest))),
            other => Err(ApiError::Malformed {
                operation: "getFlashBuild".into(),
                detail: format!(
                    "build `{build_id}` has a manifest that is {}, expected a JSON object",
                    json_kind(&other)
                ),
            }),
        }
    }

    /// Peer discovery: environment → active build → manifest `resources_endpoints`
    /// (resource config name → endpoint URL). Empty when nothing is deployed yet.
    pub async fn resources_endpoints(
        &self,
        environment_id: &str,
    ) -> Result<BTreeMap<String, String>, ApiError> {
        let Some((build_id, manifest)) = self.persisted_manifest(environment_id).await? else {
            return Ok(BTreeMap::new());
        };
        match manifest.get("resources_endpoints") {
            None | Some(Value::Null) => Ok(BTreeMap::new()),
            Some(value) => serde_json::from_value(value.clone()).map_err(|e| ApiError::Malformed {
                operation: "getFlashBuild".into(),
                detail: format!(
                    "`resources_endpoints` of build `{build_id}` is not a map of resource name \
                     to URL: {e}"
                ),
            }),
        }
    }
}

fn lease_input(environment_id: &str, token: &str, holder: &str, ttl: std::time::Duration) -> Value {
    let ttl_seconds = i32::try_from(ttl.as_secs().max(1)).unwrap_or(i32::MAX);
    json!({ "input": {
        "flashEnvironmentId": environment_id,
        "token": token,
        "holder": holder,
        "ttlSeconds": ttl_seconds,
    } })
}

fn typed<T: serde::de::DeserializeOwned>(
    value: Value,
    operation: &str,
    field: &str,
) -> Result<T, ApiError> {
    serde_json::from_value(value).map_err(|e| ApiError::Malformed {
        operation: operation.to_owned(),
        detail: format!("`data.{field}`: {e}"),
    })
}

fn required_str(object: &Value, operation: &str, field: &str) -> Result<String, ApiError> {
    object
        .get(field)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| ApiError::Malformed {
            operation: operation.to_owned(),
            detail: format!("the answer has no `{field}`: {object}"),
        })
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
