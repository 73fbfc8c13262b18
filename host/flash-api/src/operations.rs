//! Every GraphQL operation Flash sends, with the operation names, variables and selections
//! of RunPod Flash (reference §1.3), and the methods of [`StateManagerClient`] that send
//! them. [`ALL`] lists the documents, so a test validates each one against `flash server`'s
//! own schema and client and server cannot drift apart.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::client::StateManagerClient;
use crate::error::ApiError;
use crate::wire::{AuthRequest, Build, BuildRef, Environment};

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
];

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

    /// Creates an app; returns `{id name}`.
    pub async fn create_app(&self, name: &str) -> Result<Value, ApiError> {
        let mut data = self
            .execute(
                "createFlashApp",
                CREATE_FLASH_APP,
                json!({ "input": { "name": name } }),
            )
            .await?;
        Ok(data["createFlashApp"].take())
    }

    /// Deletes an app. The server deletes what is left of it; delete its environments'
    /// endpoints first (reference §1.6). Safe to repeat.
    pub async fn delete_app(&self, id: &str) -> Result<(), ApiError> {
        self.execute_with_attempts(
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

    /// Creates an environment in app `app_id`; returns `{id name}`.
    pub async fn create_environment(&self, app_id: &str, name: &str) -> Result<Value, ApiError> {
        let mut data = self
            .execute(
                "createFlashEnvironment",
                CREATE_FLASH_ENVIRONMENT,
                json!({ "input": { "flashAppId": app_id, "name": name } }),
            )
            .await?;
        Ok(data["createFlashEnvironment"].take())
    }

    /// Deletes an environment.
    pub async fn delete_environment(&self, id: &str) -> Result<(), ApiError> {
        self.execute_with_attempts(
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

    /// Registers the uploaded artifact as a build; returns the build id.
    pub async fn finalize_upload(
        &self,
        app_id: &str,
        object_key: &str,
        manifest: &Value,
    ) -> Result<String, ApiError> {
        let data = self
            .execute(
                "FinalizeArtifactUpload",
                FINALIZE_ARTIFACT_UPLOAD,
                json!({ "input": { "flashAppId": app_id, "objectKey": object_key, "manifest": manifest } }),
            )
            .await?;
        required_str(
            &data["finalizeFlashArtifactUpload"],
            "FinalizeArtifactUpload",
            "id",
        )
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

    /// Creates (no `id`) or updates an endpoint; returns the endpoint object. Sent once; an
    /// update (with `id`) may be repeated with [`Self::save_endpoint_retrying`].
    pub async fn save_endpoint(&self, input: &Value) -> Result<Value, ApiError> {
        self.save_endpoint_attempts(input, 1).await
    }

    /// [`Self::save_endpoint`], retried on transient failures: safe for an update, and for
    /// a create whose caller finds a duplicate afterwards.
    pub async fn save_endpoint_retrying(
        &self,
        input: &Value,
        attempts: u32,
    ) -> Result<Value, ApiError> {
        self.save_endpoint_attempts(input, attempts).await
    }

    async fn save_endpoint_attempts(
        &self,
        input: &Value,
        attempts: u32,
    ) -> Result<Value, ApiError> {
        let mut data = self
            .execute_with_attempts(
                "saveEndpoint",
                SAVE_ENDPOINT,
                json!({ "input": input }),
                attempts,
            )
            .await?;
        Ok(data["saveEndpoint"].take())
    }

    /// Replaces an endpoint's template (update path, reference §1.5); safe to repeat.
    pub async fn save_template(&self, input: &Value, attempts: u32) -> Result<(), ApiError> {
        self.execute_with_attempts(
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
            .execute_with_attempts(
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
