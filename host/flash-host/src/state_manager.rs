//! `StateManagerClient`: the GraphQL client that reads and writes an environment's deploy state.
//!
//! A deployed host needs two things from RunPod's State Manager: the manifest persisted on the
//! environment's active build (the mothership reconciles against it) and, inside that manifest,
//! `resources_endpoints` (resource name → endpoint URL), which is how a host finds its peers.
//! Both come from the same two queries — `getFlashEnvironment` gives `activeBuildId`,
//! `getFlashBuild` gives the build's `manifest` — and the mothership writes back with the
//! `updateFlashBuildManifest` mutation.
//!
//! The wire behaviour follows RunPod's Flash client exactly (reference §1.1 and §1.3):
//!
//! - `POST {base}/graphql` with `{"query", "variables"}` (`variables` always present), a bearer
//!   key and `Content-Type: application/json`; operation names and field selections as Flash
//!   sends them, so a real State Manager (or our control plane) answers both the same way;
//! - the response is judged in a fixed order: a body or content type that is not JSON is a
//!   transport error, then HTTP ≥ 400 fails, then an `errors` key fails the call *even when
//!   `data` is present* (messages joined with `"; "`), and only then is `data` returned;
//! - queries are retried with exponential backoff and jitter on transport errors, timeouts,
//!   HTTP 5xx and the GraphQL messages that mean "transient"; mutations are sent exactly once,
//!   because a mutation whose answer was lost may still have been applied.
//!
//! Every error says what to check (the URL, the key, the environment id), because the person
//! reading it is usually looking at a container log with no other context.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use rand::Rng;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use serde::Deserialize;
use serde_json::{Value, json};

/// Env var overriding the control-plane base URL.
pub const API_BASE_URL_ENV: &str = "RUNPOD_API_BASE_URL";
/// Env var holding the API key sent as `Authorization: Bearer <key>`.
pub const API_KEY_ENV: &str = "RUNPOD_API_KEY";
/// The control plane RunPod's Flash talks to when nothing overrides it.
pub const DEFAULT_API_BASE_URL: &str = "https://api.runpod.io";

/// Per-request timeout. RunPod's client allows 300 s for every call; a host resolving a peer
/// is on a request path, so it gives up sooner and lets the retry policy take over.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Attempts for a query (the legacy routing path uses 3; mutations always get 1).
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// First backoff; attempt `n` (0-based) waits `base × 2^n`, capped at [`MAX_BACKOFF`].
pub const DEFAULT_BACKOFF_BASE: Duration = Duration::from_secs(1);
/// Upper bound of one backoff wait, before jitter.
pub const MAX_BACKOFF: Duration = Duration::from_secs(15);

/// GraphQL error texts that mean "try again" (matched case-insensitively, as substrings).
const RETRYABLE_MESSAGES: [&str; 5] = [
    "try again later",
    "internal server error",
    "service unavailable",
    "too many requests",
    "temporarily unavailable",
];

/// How much of a response body an error message quotes.
const BODY_SNIPPET_CHARS: usize = 512;

/// `getFlashEnvironment`: the environment fields of the derived schema, without
/// `activeArtifact` (only `deployBuildToEnvironment` selects it).
pub const GET_FLASH_ENVIRONMENT: &str = "query getFlashEnvironment($flashEnvironmentId: String!) {
  flashEnvironment(flashEnvironmentId: $flashEnvironmentId) {
    id
    name
    state
    activeBuildId
    createdAt
    endpoints { id name }
    networkVolumes { id name }
  }
}";

/// `getFlashBuild`: `{id manifest}` of one build.
pub const GET_FLASH_BUILD: &str = "query getFlashBuild($input: String!) {
  flashBuild(flashBuildId: $input) {
    id
    manifest
  }
}";

/// `updateFlashBuildManifest`: replaces a build's manifest, answers `{id manifest}`.
pub const UPDATE_FLASH_BUILD_MANIFEST: &str =
    "mutation updateFlashBuildManifest($input: UpdateFlashBuildManifestInput!) {
  updateFlashBuildManifest(input: $input) {
    id
    manifest
  }
}";

/// Everything a failed State Manager call can tell its caller.
#[derive(Debug, thiserror::Error)]
pub enum StateManagerError {
    /// The client cannot be built from the given settings.
    #[error("State Manager client is not configured: {0}")]
    Config(String),

    /// The request did not produce a JSON answer: connection refused, DNS, TLS, a reset, or a
    /// body / content type that is not JSON (a proxy's HTML page, for instance).
    #[error(
        "could not talk to the State Manager at {url}: {detail}; check {API_BASE_URL_ENV} and that the host can reach it"
    )]
    Transport { url: String, detail: String },

    /// No answer within the configured timeout.
    #[error(
        "State Manager at {url} did not answer within {timeout:?}; check {API_BASE_URL_ENV} and the network, or raise the timeout"
    )]
    Timeout { url: String, timeout: Duration },

    /// HTTP status ≥ 400 with a JSON body.
    #[error("State Manager at {url} answered HTTP {status}: {body}{}", http_hint(*.status))]
    Http {
        url: String,
        status: u16,
        body: String,
    },

    /// The response carried an `errors` key (even alongside `data`).
    #[error("State Manager rejected `{operation}`: {message}")]
    GraphQl { operation: String, message: String },

    /// The object asked for does not exist (a `null` root field or a "not found" error).
    #[error(
        "{kind} `{id}` not found in the State Manager; check the id (FLASH_ENVIRONMENT_ID for environments) and that {API_KEY_ENV} belongs to the account that deployed it"
    )]
    NotFound { kind: &'static str, id: String },

    /// The answer is JSON but not the shape the operation selects.
    #[error("unexpected State Manager answer to `{operation}`: {detail}")]
    Malformed { operation: String, detail: String },

    /// A query failed on every attempt; `last` is the final failure.
    #[error("`{operation}` failed after {attempts} attempts; last error: {last}")]
    RetriesExhausted {
        operation: String,
        attempts: u32,
        #[source]
        last: Box<StateManagerError>,
    },
}

fn http_hint(status: u16) -> &'static str {
    match status {
        401 | 403 => "; check RUNPOD_API_KEY (missing, revoked, or for another account)",
        404 => "; check RUNPOD_API_BASE_URL (the State Manager serves POST {base}/graphql)",
        429 => "; the State Manager is rate limiting this key",
        _ => "",
    }
}

impl StateManagerError {
    /// Whether another attempt of the same query may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Transport { .. } | Self::Timeout { .. } => true,
            Self::Http { status, .. } => *status >= 500,
            Self::GraphQl { message, .. } => {
                let message = message.to_ascii_lowercase();
                RETRYABLE_MESSAGES.iter().any(|m| message.contains(m))
            }
            Self::Config(_)
            | Self::NotFound { .. }
            | Self::Malformed { .. }
            | Self::RetriesExhausted { .. } => false,
        }
    }

    /// The underlying failure: for [`StateManagerError::RetriesExhausted`] the last attempt's
    /// error, otherwise `self`.
    pub fn root(&self) -> &StateManagerError {
        match self {
            Self::RetriesExhausted { last, .. } => last.root(),
            other => other,
        }
    }
}

/// Where and how to reach the State Manager.
#[derive(Clone)]
pub struct StateManagerConfig {
    /// Base URL without a trailing `/`; requests go to `{base_url}/graphql`.
    pub base_url: String,
    /// Sent as `Authorization: Bearer <api_key>`.
    pub api_key: String,
    /// Timeout of one HTTP request (connect + answer).
    pub timeout: Duration,
    /// Attempts for a query; mutations are always sent once. At least 1.
    pub max_attempts: u32,
    /// First backoff wait; later ones double (see [`DEFAULT_BACKOFF_BASE`]).
    pub backoff_base: Duration,
}

impl fmt::Debug for StateManagerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateManagerConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &"<redacted>")
            .field("timeout", &self.timeout)
            .field("max_attempts", &self.max_attempts)
            .field("backoff_base", &self.backoff_base)
            .finish()
    }
}

impl StateManagerConfig {
    /// A config with the default timeout and retry policy.
    pub fn new(base_url: &str, api_key: impl Into<String>) -> Result<Self, StateManagerError> {
        Ok(Self {
            base_url: normalize_base_url(base_url)?,
            api_key: api_key.into(),
            timeout: DEFAULT_TIMEOUT,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            backoff_base: DEFAULT_BACKOFF_BASE,
        })
    }

    /// Reads `RUNPOD_API_BASE_URL` (blank means unset) and `RUNPOD_API_KEY` from the process env.
    pub fn from_env() -> Result<Self, StateManagerError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// [`Self::from_env`] over any variable source (tests pass a map).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, StateManagerError> {
        let non_blank = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let base = non_blank(API_BASE_URL_ENV).unwrap_or_else(|| DEFAULT_API_BASE_URL.to_owned());
        let Some(key) = non_blank(API_KEY_ENV) else {
            return Err(StateManagerError::Config(format!(
                "{API_KEY_ENV} is not set; the State Manager needs the deployer's API key"
            )));
        };
        Self::new(&base, key.trim())
    }

    /// Sets the per-request timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the number of attempts for queries (clamped to at least 1).
    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// Sets the first backoff wait (tests use milliseconds).
    pub fn with_backoff_base(mut self, base: Duration) -> Self {
        self.backoff_base = base;
        self
    }

    /// `{base_url}/graphql`.
    pub fn graphql_url(&self) -> String {
        format!("{}/graphql", self.base_url)
    }
}

/// Trims, strips trailing `/`, and insists on an http(s) URL (RunPod treats anything else as fatal).
fn normalize_base_url(raw: &str) -> Result<String, StateManagerError> {
    let trimmed = raw.trim().trim_end_matches('/');
    let parsed = reqwest::Url::parse(trimmed).map_err(|e| {
        StateManagerError::Config(format!(
            "{API_BASE_URL_ENV} `{raw}` is not a valid URL ({e}); expected e.g. {DEFAULT_API_BASE_URL}"
        ))
    })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(StateManagerError::Config(format!(
            "{API_BASE_URL_ENV} `{raw}` must be an http:// or https:// URL"
        )));
    }
    Ok(trimmed.to_owned())
}

/// An id/name pair (`endpoints`, `networkVolumes` of an environment).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Ref {
    pub id: Option<String>,
    pub name: Option<String>,
}

/// A Flash environment as `getFlashEnvironment` selects it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Environment {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub state: Option<String>,
    /// The build currently deployed to the environment; `None` before the first deploy.
    #[serde(default)]
    pub active_build_id: Option<String>,
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub endpoints: Vec<Ref>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub network_volumes: Vec<Ref>,
}

/// A build as `getFlashBuild` / `updateFlashBuildManifest` select it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Build {
    pub id: String,
    /// The opaque manifest object (`null` when the build has none).
    #[serde(default)]
    pub manifest: Value,
}

fn null_as_empty<'de, D, T>(de: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(de)?.unwrap_or_default())
}

/// The GraphQL client. Cheap to clone (one shared connection pool).
#[derive(Clone)]
pub struct StateManagerClient {
    http: reqwest::Client,
    config: StateManagerConfig,
    url: String,
}

impl fmt::Debug for StateManagerClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateManagerClient")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl StateManagerClient {
    /// Builds a client for `config`.
    pub fn new(config: StateManagerConfig) -> Result<Self, StateManagerError> {
        let user_agent = format!(
            "Runpod Flash/{} (Rust; {}; {})",
            env!("CARGO_PKG_VERSION"),
            std::env::consts::OS,
            std::env::consts::ARCH
        );
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(10)))
            .user_agent(user_agent)
            .build()
            .map_err(|e| StateManagerError::Config(format!("building the HTTP client: {e}")))?;
        let url = config.graphql_url();
        Ok(Self { http, config, url })
    }

    /// A client configured from `RUNPOD_API_BASE_URL` and `RUNPOD_API_KEY`.
    pub fn from_env() -> Result<Self, StateManagerError> {
        Self::new(StateManagerConfig::from_env()?)
    }

    pub fn config(&self) -> &StateManagerConfig {
        &self.config
    }

    /// `getFlashEnvironment`: the environment, or [`StateManagerError::NotFound`].
    pub async fn get_flash_environment(
        &self,
        environment_id: &str,
    ) -> Result<Environment, StateManagerError> {
        let data = self
            .execute(
                "getFlashEnvironment",
                GET_FLASH_ENVIRONMENT,
                json!({ "flashEnvironmentId": environment_id }),
            )
            .await
            .map_err(|e| not_found_from_message(e, "environment", environment_id))?;
        root_object(
            data,
            "getFlashEnvironment",
            "flashEnvironment",
            "environment",
            environment_id,
        )
    }

    /// `getFlashBuild`: the build with its manifest, or [`StateManagerError::NotFound`].
    pub async fn get_flash_build(&self, build_id: &str) -> Result<Build, StateManagerError> {
        let data = self
            .execute(
                "getFlashBuild",
                GET_FLASH_BUILD,
                json!({ "input": build_id }),
            )
            .await
            .map_err(|e| not_found_from_message(e, "build", build_id))?;
        root_object(data, "getFlashBuild", "flashBuild", "build", build_id)
    }

    /// `updateFlashBuildManifest`: replaces the build's manifest (a JSON object, never a
    /// string). Sent exactly once; the returned build is what the server stored.
    pub async fn update_flash_build_manifest(
        &self,
        build_id: &str,
        manifest: &Value,
    ) -> Result<Build, StateManagerError> {
        if !manifest.is_object() {
            return Err(StateManagerError::Config(format!(
                "the manifest for build `{build_id}` must be a JSON object, got {}",
                json_kind(manifest)
            )));
        }
        let data = self
            .execute(
                "updateFlashBuildManifest",
                UPDATE_FLASH_BUILD_MANIFEST,
                json!({ "input": { "flashBuildId": build_id, "manifest": manifest } }),
            )
            .await
            .map_err(|e| not_found_from_message(e, "build", build_id))?;
        root_object(
            data,
            "updateFlashBuildManifest",
            "updateFlashBuildManifest",
            "build",
            build_id,
        )
    }

    /// The manifest persisted on the environment's active build, with that build's id.
    /// `None` when the environment has no active build yet or the build has no manifest.
    pub async fn persisted_manifest(
        &self,
        environment_id: &str,
    ) -> Result<Option<(String, Value)>, StateManagerError> {
        let environment = self.get_flash_environment(environment_id).await?;
        let Some(build_id) = environment.active_build_id.filter(|id| !id.is_empty()) else {
            tracing::debug!(environment_id, "environment has no active build yet");
            return Ok(None);
        };
        let build = self.get_flash_build(&build_id).await?;
        match build.manifest {
            Value::Null => Ok(None),
            Value::Object(_) => Ok(Some((build_id, build.manifest))),
            other => Err(StateManagerError::Malformed {
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
    ) -> Result<BTreeMap<String, String>, StateManagerError> {
        let Some((build_id, manifest)) = self.persisted_manifest(environment_id).await? else {
            return Ok(BTreeMap::new());
        };
        match manifest.get("resources_endpoints") {
            None | Some(Value::Null) => Ok(BTreeMap::new()),
            Some(value) => serde_json::from_value(value.clone()).map_err(|e| {
                StateManagerError::Malformed {
                    operation: "getFlashBuild".into(),
                    detail: format!(
                        "`resources_endpoints` of build `{build_id}` is not a map of resource name to URL: {e}"
                    ),
                }
            }),
        }
    }

    /// Sends one GraphQL operation and returns its `data`, retrying queries (never
    /// mutations) on retryable failures. `operation` names the call in errors and logs.
    pub async fn execute(
        &self,
        operation: &str,
        query: &str,
        variables: Value,
    ) -> Result<Value, StateManagerError> {
        let body = json!({ "query": query, "variables": variables });
        let attempts = if is_mutation(query) {
            1
        } else {
            self.config.max_attempts.max(1)
        };
        let mut attempt = 0;
        loop {
            match self.send_once(operation, &body).await {
                Ok(data) => return Ok(data),
                Err(e) if !e.is_retryable() || attempts == 1 => return Err(e),
                Err(e) if attempt + 1 >= attempts => {
                    return Err(StateManagerError::RetriesExhausted {
                        operation: operation.to_owned(),
                        attempts,
                        last: Box::new(e),
                    });
                }
                Err(e) => {
                    let wait = backoff(self.config.backoff_base, attempt);
                    tracing::warn!(
                        operation,
                        attempt = attempt + 1,
                        attempts,
                        wait_ms = wait.as_millis() as u64,
                        error = %e,
                        "State Manager call failed; retrying"
                    );
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
            }
        }
    }

    /// One HTTP exchange, judged in §1.1's order.
    async fn send_once(&self, operation: &str, body: &Value) -> Result<Value, StateManagerError> {
        let transport = |detail: String| StateManagerError::Transport {
            url: self.url.clone(),
            detail,
        };
        let auth =
            HeaderValue::from_str(&format!("Bearer {}", self.config.api_key)).map_err(|_| {
                StateManagerError::Config(format!(
                    "{API_KEY_ENV} contains characters that cannot go in an HTTP header"
                ))
            })?;
        let response = self
            .http
            .post(&self.url)
            .header(AUTHORIZATION, auth)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .json(body)
            .send()
            .await
            .map_err(|e| self.request_error(e))?;

        let status = response.status();
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let bytes = response.bytes().await.map_err(|e| self.request_error(e))?;

        // 1. JSON or it is a transport problem (whatever the status says).
        if !content_type.to_ascii_lowercase().contains("json") {
            return Err(transport(format!(
                "answer is not JSON (HTTP {}, content type `{}`): {}",
                status.as_u16(),
                content_type,
                snippet(&bytes)
            )));
        }
        let parsed: Value = serde_json::from_slice(&bytes).map_err(|e| {
            transport(format!(
                "answer is not valid JSON (HTTP {}): {e}: {}",
                status.as_u16(),
                snippet(&bytes)
            ))
        })?;

        // 2. HTTP failure.
        if status.as_u16() >= 400 {
            return Err(StateManagerError::Http {
                url: self.url.clone(),
                status: status.as_u16(),
                body: snippet(&bytes),
            });
        }

        // 3. `errors` fails the call, even with `data`.
        if let Some(errors) = parsed.get("errors") {
            return Err(StateManagerError::GraphQl {
                operation: operation.to_owned(),
                message: join_error_messages(errors),
            });
        }

        // 4. `data`.
        match parsed.get("data") {
            Some(data) if !data.is_null() => Ok(data.clone()),
            _ => Err(StateManagerError::Malformed {
                operation: operation.to_owned(),
                detail: format!("no `data` and no `errors` in {}", snippet(&bytes)),
            }),
        }
    }

    fn request_error(&self, e: reqwest::Error) -> StateManagerError {
        if e.is_timeout() {
            StateManagerError::Timeout {
                url: self.url.clone(),
                timeout: self.config.timeout,
            }
        } else {
            StateManagerError::Transport {
                url: self.url.clone(),
                detail: error_chain(&e),
            }
        }
    }
}

/// True when the document is a mutation (RunPod's rule: trimmed text starts with `mutation`).
pub fn is_mutation(query: &str) -> bool {
    query
        .trim_start()
        .get(..8)
        .is_some_and(|head| head.eq_ignore_ascii_case("mutation"))
}

/// The wait before attempt `attempt + 2`: `base × 2^attempt`, capped, times U(0.8, 1.2).
fn backoff(base: Duration, attempt: u32) -> Duration {
    let exp = base
        .saturating_mul(1u32 << attempt.min(16))
        .min(MAX_BACKOFF);
    exp.mul_f64(rand::rng().random_range(0.8..1.2))
}

/// `errors[].message` joined with `"; "`; tolerant of odd shapes so the text is never lost.
fn join_error_messages(errors: &Value) -> String {
    let messages: Vec<String> = match errors {
        Value::Array(items) => items
            .iter()
            .map(|item| match item.get("message") {
                Some(Value::String(m)) => m.clone(),
                _ => item.to_string(),
            })
            .collect(),
        Value::String(m) => vec![m.clone()],
        other => vec![other.to_string()],
    };
    if messages.is_empty() {
        "the server reported errors without messages".to_owned()
    } else {
        messages.join("; ")
    }
}

/// Maps a GraphQL "not found" error to [`StateManagerError::NotFound`].
fn not_found_from_message(e: StateManagerError, kind: &'static str, id: &str) -> StateManagerError {
    match &e {
        StateManagerError::GraphQl { message, .. }
            if message.to_ascii_lowercase().contains("not found") =>
        {
            StateManagerError::NotFound {
                kind,
                id: id.to_owned(),
            }
        }
        _ => e,
    }
}

/// Deserialises `data[field]`; `null` means the object does not exist.
fn root_object<T: serde::de::DeserializeOwned>(
    mut data: Value,
    operation: &str,
    field: &str,
    kind: &'static str,
    id: &str,
) -> Result<T, StateManagerError> {
    match data.get_mut(field).map(Value::take) {
        None => Err(StateManagerError::Malformed {
            operation: operation.to_owned(),
            detail: format!("`data.{field}` is missing"),
        }),
        Some(Value::Null) => Err(StateManagerError::NotFound {
            kind,
            id: id.to_owned(),
        }),
        Some(value) => serde_json::from_value(value).map_err(|e| StateManagerError::Malformed {
            operation: operation.to_owned(),
            detail: format!("`data.{field}`: {e}"),
        }),
    }
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

/// The first [`BODY_SNIPPET_CHARS`] characters of a body, lossily decoded.
fn snippet(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    match text.char_indices().nth(BODY_SNIPPET_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None if text.is_empty() => "<empty body>".to_owned(),
        None => text.to_owned(),
    }
}

/// `e: cause: cause…`, since reqwest's top-level message alone ("error sending request") hides
/// the actionable part (connection refused, DNS failure, certificate).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutation_detection_follows_the_trimmed_prefix_rule() {
        assert!(is_mutation("mutation x { y }"));
        assert!(is_mutation("  \n MUTATION x { y }"));
        assert!(!is_mutation("query getFlashBuild { x }"));
        assert!(!is_mutation("{ mutation }"));
        assert!(!is_mutation("mut"));
    }

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let base = Duration::from_secs(1);
        for attempt in 0..3 {
            let wait = backoff(base, attempt).as_secs_f64();
            let nominal = f64::from(1u32 << attempt);
            assert!(
                wait >= nominal * 0.8 - 1e-9 && wait <= nominal * 1.2 + 1e-9,
                "{wait}"
            );
        }
        assert!(backoff(base, 30) <= MAX_BACKOFF.mul_f64(1.2));
    }

    #[test]
    fn error_messages_are_joined_with_semicolons() {
        let errors = json!([{"message": "a"}, {"message": "b"}, {"code": 1}]);
        assert_eq!(join_error_messages(&errors), r#"a; b; {"code":1}"#);
    }

    #[test]
    fn retryable_classification() {
        let gql = |m: &str| StateManagerError::GraphQl {
            operation: "op".into(),
            message: m.into(),
        };
        assert!(gql("Service Unavailable, try again").is_retryable());
        assert!(gql("Too Many Requests").is_retryable());
        assert!(!gql("environment not found").is_retryable());
        let http = |status| StateManagerError::Http {
            url: "u".into(),
            status,
            body: String::new(),
        };
        assert!(http(503).is_retryable());
        assert!(!http(401).is_retryable());
        assert!(http(401).to_string().contains("RUNPOD_API_KEY"));
    }

    #[test]
    fn config_from_lookup_defaults_strips_and_validates() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        let config = StateManagerConfig::from_lookup(env(&[(API_KEY_ENV, "k")])).unwrap();
        assert_eq!(config.graphql_url(), "https://api.runpod.io/graphql");
        let config = StateManagerConfig::from_lookup(env(&[
            (API_KEY_ENV, "k"),
            (API_BASE_URL_ENV, "http://127.0.0.1:9/"),
        ]))
        .unwrap();
        assert_eq!(config.base_url, "http://127.0.0.1:9");
        let config =
            StateManagerConfig::from_lookup(env(&[(API_KEY_ENV, "k"), (API_BASE_URL_ENV, "  ")]))
                .unwrap();
        assert_eq!(config.base_url, DEFAULT_API_BASE_URL);
        let err = StateManagerConfig::from_lookup(env(&[])).unwrap_err();
        assert!(err.to_string().contains("RUNPOD_API_KEY"), "{err}");
        let err = StateManagerConfig::from_lookup(env(&[
            (API_KEY_ENV, "k"),
            (API_BASE_URL_ENV, "ftp://x"),
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("http"), "{err}");
        assert!(!format!("{config:?}").contains("\"k\""));
    }
}
