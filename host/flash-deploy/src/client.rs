//! The State Manager client: RunPod's GraphQL control plane, or `flash server`'s copy of it.
//!
//! Every operation the deploy commands send lives here, with the operation names, variables
//! and selections of RunPod Flash (reference §1.2–1.3), so the same commands work against
//! RunPod and the embedded server. Errors are translated for the user at this edge: a server
//! that is not listening says how to start one, a 401 says which key was rejected, and
//! GraphQL `errors` are joined as RunPod's client joins them.
//!
//! Retries follow the reference (§1.1): queries are retried on transport errors, 5xx and
//! transient GraphQL messages; mutations are sent once here, and the callers that know a
//! mutation is safe to repeat (`saveEndpoint` with an id, deletes) retry it themselves.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::{Value, json};

use crate::data_plane::DataPlane;

/// Default URL of a local `flash server` (its `--listen` default).
pub const DEFAULT_SERVER_URL: &str = "http://127.0.0.1:8765";

/// Where the API key came from, for error messages.
#[derive(Debug, Clone)]
pub enum KeySource {
    Env,
    File(PathBuf),
}

impl std::fmt::Display for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::Env => write!(f, "RUNPOD_API_KEY"),
            KeySource::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// A failure talking to the control plane, classified for retries.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(
        "cannot reach the Flash server at {url}: start it with `flash server` (or point \
         --server / FLASH_SERVER_URL at a running one)"
    )]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error(
        "the server at {url} rejected the API key from {source_of_key}: use the key of that \
         server (`<data dir>/api_key` of `flash server`) or a valid RUNPOD_API_KEY"
    )]
    Unauthorized { url: String, source_of_key: String },
    #[error("{what} failed: HTTP {status}: {body}")]
    Http {
        what: String,
        status: u16,
        body: String,
    },
    #[error("{what} failed: {message}")]
    GraphQl { what: String, message: String },
    #[error("{what} failed")]
    Transport {
        what: String,
        #[source]
        source: reqwest::Error,
    },
}

impl ApiError {
    /// Whether repeating the same request may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            // Nothing listening: say so at once instead of backing off for seconds.
            ApiError::Unreachable { .. } => false,
            ApiError::Transport { .. } => true,
            ApiError::Http { status, .. } => *status >= 500 || *status == 429,
            ApiError::GraphQl { message, .. } => {
                let m = message.to_ascii_lowercase();
                [
                    "try again later",
                    "internal server error",
                    "service unavailable",
                    "too many requests",
                    "temporarily unavailable",
                ]
                .iter()
                .any(|s| m.contains(s))
            }
            ApiError::Unauthorized { .. } => false,
        }
    }
}

/// An authenticated connection to one control plane.
#[derive(Clone)]
pub struct StateManager {
    http: reqwest::Client,
    /// Base URL of the control plane, without a trailing `/` (`{base}/graphql`).
    pub base: String,
    /// Where its endpoints are reached (see [`DataPlane`]).
    data_plane: DataPlane,
    key: String,
    key_source: String,
}

impl StateManager {
    /// A client for the control plane at `base` with `key`; endpoints are reached through
    /// the data plane that `base` and `RUNPOD_ENDPOINT_BASE_URL` imply ([`DataPlane`]).
    pub fn new(base: &str, key: String, key_source: &KeySource) -> Result<Self> {
        let base = base.trim().trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            anyhow::bail!("server URL `{base}` must start with http:// or https://");
        }
        let data_plane = DataPlane::from_env(&base)?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("flash/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("building the HTTP client")?;
        Ok(Self {
            http,
            base,
            data_plane,
            key,
            key_source: key_source.to_string(),
        })
    }

    /// The API key (handed to endpoints that call peers).
    pub fn api_key(&self) -> &str {
        &self.key
    }

    /// The underlying HTTP client.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Queue URL of an endpoint (`flash server`: `{base}/v2/{id}`).
    pub fn queue_url(&self, id: &str) -> String {
        self.data_plane.queue_url(id)
    }

    /// Load-balanced URL of an endpoint (`flash server`: `{base}/lb/{id}`; RunPod:
    /// `https://{id}.api.runpod.ai`).
    pub fn lb_url(&self, id: &str) -> String {
        self.data_plane.lb_url(id)
    }

    /// Whether `url` (an endpoint URL of this control plane) is a load-balanced one.
    pub fn is_lb_url(&self, url: &str) -> bool {
        self.data_plane.is_lb_url(url)
    }

    /// URL of an endpoint of either kind.
    pub fn endpoint_url(&self, id: &str, load_balanced: bool) -> String {
        if load_balanced {
            self.lb_url(id)
        } else {
            self.queue_url(id)
        }
    }

    /// `workers` of the endpoint's `GET {queue url}/health`, or `None` when it does not
    /// answer with it.
    pub async fn endpoint_workers(&self, id: &str) -> Option<Value> {
        let resp = self
            .request(
                reqwest::Method::GET,
                &format!("{}/health", self.queue_url(id)),
            )
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .ok()
            .filter(|r| r.status().is_success())?;
        resp.json::<Value>().await.ok()?.get("workers").cloned()
    }

    /// Maps a send error: connection failures name the server.
    pub fn send_error(&self, what: &str, e: reqwest::Error) -> ApiError {
        if e.is_connect() {
            ApiError::Unreachable {
                url: self.base.clone(),
                source: e,
            }
        } else {
            ApiError::Transport {
                what: what.to_string(),
                source: e,
            }
        }
    }

    /// An authenticated request to a data-plane URL (queue, LB, health).
    pub fn request(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        self.http.request(method, url).bearer_auth(&self.key)
    }

    /// Sends one GraphQL operation once; returns `data`.
    pub async fn graphql_once(
        &self,
        what: &str,
        query: &str,
        variables: Value,
    ) -> Result<Value, ApiError> {
        let url = format!("{}/graphql", self.base);
        let resp = self
            .http
            .post(&url)
            .bearer_auth(&self.key)
            .timeout(Duration::from_secs(300))
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await
            .map_err(|e| self.send_error(what, e))?;
        let status = resp.status();
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            return Err(ApiError::Unauthorized {
                url: self.base.clone(),
                source_of_key: self.key_source.clone(),
            });
        }
        let text = resp.text().await.map_err(|e| self.send_error(what, e))?;
        let body: Value = match serde_json::from_str(&text) {
            Ok(v) => v,
            Err(_) => {
                return Err(ApiError::Http {
                    what: what.to_string(),
                    status: status.as_u16(),
                    body: truncate(&text),
                });
            }
        };
        if let Some(errors) = body.get("errors").and_then(Value::as_array)
            && !errors.is_empty()
        {
            let message = errors
                .iter()
                .map(|e| {
                    e.get("message")
                        .and_then(Value::as_str)
                        .map_or_else(|| e.to_string(), str::to_string)
                })
                .collect::<Vec<_>>()
                .join("; ");
            return Err(ApiError::GraphQl {
                what: what.to_string(),
                message,
            });
        }
        if !status.is_success() {
            return Err(ApiError::Http {
                what: what.to_string(),
                status: status.as_u16(),
                body: truncate(&text),
            });
        }
        Ok(body.get("data").cloned().unwrap_or(Value::Null))
    }

    /// Sends a GraphQL operation; queries are retried on transient failures (§1.1).
    pub async fn graphql(&self, what: &str, query: &str, variables: Value) -> Result<Value> {
        let is_mutation = query
            .trim_start()
            .to_ascii_lowercase()
            .starts_with("mutation");
        let attempts = if is_mutation { 1 } else { 4 };
        retry(attempts, || {
            self.graphql_once(what, query, variables.clone())
        })
        .await
    }

    /// Sends a query once and returns `data.<field>`, or `None` when it is null or the
    /// server answers "not found" (RunPod reports a missing object as a GraphQL error).
    async fn query_optional(
        &self,
        what: &str,
        query: &str,
        variables: Value,
        field: &str,
    ) -> Result<Option<Value>> {
        match self.graphql_once(what, query, variables).await {
            Ok(data) => Ok(data.get(field).filter(|v| !v.is_null()).cloned()),
            Err(ApiError::GraphQl { message, .. })
                if message.to_ascii_lowercase().contains("not found") =>
            {
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    // ------------------------------------------------------------------------------------
    // Operations (names and selections as RunPod Flash sends them)

    /// The app named `name`, or `None` (the server answers `app not found`).
    pub async fn app_by_name(&self, name: &str) -> Result<Option<Value>> {
        let q = "query getFlashAppByName($flashAppName: String!) { flashAppByName(flashAppName: $flashAppName) { id name flashEnvironments { id name state activeBuildId createdAt } } }";
        self.query_optional(
            "looking up the app",
            q,
            json!({ "flashAppName": name }),
            "flashAppByName",
        )
        .await
    }

    /// Every app of the caller, with environments.
    pub async fn apps(&self) -> Result<Vec<Value>> {
        let q = "query getFlashApps { myself { flashApps { id name flashEnvironments { id name state activeBuildId createdAt } } } }";
        let data = self.graphql("listing apps", q, json!({})).await?;
        Ok(data["myself"]["flashApps"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    pub async fn create_app(&self, name: &str) -> Result<Value> {
        let q = "mutation createFlashApp($input: CreateFlashAppInput!) { createFlashApp(input: $input) { id name } }";
        let data = self
            .graphql("creating the app", q, json!({ "input": { "name": name } }))
            .await?;
        Ok(data["createFlashApp"].clone())
    }

    /// The environment `name` of app `app_id`, or `None`.
    pub async fn environment_by_name(&self, app_id: &str, name: &str) -> Result<Option<Value>> {
        let q = "query getFlashEnvironmentByName($input: FlashEnvironmentByNameInput!) { flashEnvironmentByName(input: $input) { id name state activeBuildId createdAt endpoints { id name } } }";
        self.query_optional(
            "looking up the environment",
            q,
            json!({ "input": { "flashAppId": app_id, "name": name } }),
            "flashEnvironmentByName",
        )
        .await
    }

    pub async fn create_environment(&self, app_id: &str, name: &str) -> Result<Value> {
        let q = "mutation createFlashEnvironment($input: CreateFlashEnvironmentInput!) { createFlashEnvironment(input: $input) { id name } }";
        let data = self
            .graphql(
                "creating the environment",
                q,
                json!({ "input": { "flashAppId": app_id, "name": name } }),
            )
            .await?;
        Ok(data["createFlashEnvironment"].clone())
    }

    pub async fn delete_environment(&self, id: &str) -> Result<()> {
        let q = "mutation deleteFlashEnvironment($flashEnvironmentId: String!) { deleteFlashEnvironment(flashEnvironmentId: $flashEnvironmentId) }";
        self.graphql(
            "deleting the environment",
            q,
            json!({ "flashEnvironmentId": id }),
        )
        .await?;
        Ok(())
    }

    /// The manifest of a build.
    pub async fn build_manifest(&self, build_id: &str) -> Result<Value> {
        let q = "query getFlashBuild($input: String!) { flashBuild(flashBuildId: $input) { id manifest } }";
        let data = self
            .graphql("reading the build", q, json!({ "input": build_id }))
            .await?;
        Ok(data["flashBuild"]["manifest"].clone())
    }

    /// Asks for an upload URL for `size` bytes: `(uploadUrl, objectKey)`.
    pub async fn prepare_upload(&self, app_id: &str, size: u64) -> Result<(String, String)> {
        let q = "mutation PrepareArtifactUpload($input: PrepareFlashArtifactUploadInput!) { prepareFlashArtifactUpload(input: $input) { uploadUrl objectKey expiresAt } }";
        let data = self
            .graphql(
                "preparing the artifact upload",
                q,
                json!({ "input": { "flashAppId": app_id, "tarballSize": size } }),
            )
            .await?;
        let t = &data["prepareFlashArtifactUpload"];
        let url = t["uploadUrl"]
            .as_str()
            .context("prepareFlashArtifactUpload returned no uploadUrl")?;
        let key = t["objectKey"]
            .as_str()
            .context("prepareFlashArtifactUpload returned no objectKey")?;
        Ok((url.to_string(), key.to_string()))
    }

    /// Registers the uploaded artifact as a build; returns the build id.
    pub async fn finalize_upload(
        &self,
        app_id: &str,
        object_key: &str,
        manifest: &Value,
    ) -> Result<String> {
        let q = "mutation FinalizeArtifactUpload($input: FinalizeFlashArtifactUploadInput!) { finalizeFlashArtifactUpload(input: $input) { id manifest } }";
        let data = self
            .graphql(
                "finalizing the artifact upload",
                q,
                json!({ "input": { "flashAppId": app_id, "objectKey": object_key, "manifest": manifest } }),
            )
            .await?;
        data["finalizeFlashArtifactUpload"]["id"]
            .as_str()
            .map(str::to_string)
            .context("finalizeFlashArtifactUpload returned no build id")
    }

    /// Makes `build_id` the environment's active build.
    pub async fn activate(&self, env_id: &str, build_id: &str) -> Result<()> {
        let q = "mutation deployBuildToEnvironment($input: DeployBuildToEnvironmentInput!) { deployBuildToEnvironment(input: $input) { id name activeArtifact { objectKey downloadUrl expiresAt } } }";
        self.graphql(
            "activating the build",
            q,
            json!({ "input": { "flashEnvironmentId": env_id, "flashBuildId": build_id } }),
        )
        .await?;
        Ok(())
    }

    /// Replaces a build's manifest.
    pub async fn update_manifest(&self, build_id: &str, manifest: &Value) -> Result<()> {
        let q = "mutation updateFlashBuildManifest($input: UpdateFlashBuildManifestInput!) { updateFlashBuildManifest(input: $input) { id manifest } }";
        self.graphql(
            "publishing the build manifest",
            q,
            json!({ "input": { "flashBuildId": build_id, "manifest": manifest } }),
        )
        .await?;
        Ok(())
    }

    /// Creates (no `id`) or updates an endpoint; returns the endpoint object.
    pub async fn save_endpoint(&self, input: &Value) -> Result<Value, ApiError> {
        let q = "mutation saveEndpoint($input: EndpointInput!) { saveEndpoint(input: $input) { id name type templateId aiKey workersMin workersMax flashEnvironmentId } }";
        let data = self
            .graphql_once("saving the endpoint", q, json!({ "input": input }))
            .await?;
        Ok(data["saveEndpoint"].clone())
    }

    /// Replaces an endpoint's template (update path, reference §1.5).
    pub async fn save_template(&self, input: &Value) -> Result<(), ApiError> {
        let q = "mutation saveTemplate($input: SaveTemplateInput) { saveTemplate(input: $input) { id name imageName } }";
        self.graphql_once("saving the template", q, json!({ "input": input }))
            .await?;
        Ok(())
    }

    /// The endpoint `id` (with its template id) if it exists.
    pub async fn endpoint(&self, id: &str) -> Result<Option<Value>> {
        let q = "query getEndpoint($id: String!) { myself { endpoint(id: $id) { id name type templateId version workersMin workersMax idleTimeout executionTimeoutMs scalerType scalerValue gpuIds gpuCount instanceIds flashEnvironmentId } } }";
        let data = self
            .graphql("looking up the endpoint", q, json!({ "id": id }))
            .await?;
        Ok(data["myself"]["endpoint"]
            .as_object()
            .map(|o| Value::Object(o.clone())))
    }

    /// The env of template `id` as `(key, value)` pairs, or `None` if it does not exist.
    pub async fn template_env(&self, id: &str) -> Result<Option<Vec<(String, String)>>> {
        let q = "query getTemplate($id: String!) { podTemplate(id: $id) { id env { key value } } }";
        let data = self
            .graphql("reading the template", q, json!({ "id": id }))
            .await?;
        let Some(template) = data.get("podTemplate").filter(|t| !t.is_null()) else {
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

    /// The environment `id` (with its endpoints and active build), or `None`.
    pub async fn environment(&self, id: &str) -> Result<Option<Value>> {
        let q = "query getFlashEnvironment($flashEnvironmentId: String!) { flashEnvironment(flashEnvironmentId: $flashEnvironmentId) { id name state activeBuildId createdAt endpoints { id name } } }";
        self.query_optional(
            "reading the environment",
            q,
            json!({ "flashEnvironmentId": id }),
            "flashEnvironment",
        )
        .await
    }

    /// Deletes an endpoint; one that is already gone counts as deleted (§1.1).
    pub async fn delete_endpoint(&self, id: &str) -> Result<()> {
        let q = "mutation deleteEndpoint($id: String!) { deleteEndpoint(id: $id) }";
        let result = retry(3, || {
            self.graphql_once("deleting the endpoint", q, json!({ "id": id }))
        })
        .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) => match self.endpoint(id).await {
                Ok(None) => Ok(()),
                _ => Err(e.context(format!("deleting endpoint `{id}`"))),
            },
        }
    }
}

/// Runs `op` up to `attempts` times, backing off 1 s, 2 s, 4 s … between transient failures.
pub async fn retry<T, F, Fut>(attempts: u32, mut op: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ApiError>>,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) if attempt < attempts && e.is_transient() => {
                let wait = Duration::from_secs(1 << (attempt - 1).min(4));
                tracing::warn!("{e}; retrying in {}s", wait.as_secs());
                tokio::time::sleep(wait).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn truncate(text: &str) -> String {
    const MAX: usize = 500;
    if text.len() <= MAX {
        return text.to_string();
    }
    let mut end = MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}
