//! [`StateManagerClient`]: one authenticated connection to a State Manager and its data
//! plane.
//!
//! The wire behaviour follows RunPod's Flash client (reference §1.1):
//!
//! - `POST {base}/graphql` with `{"query", "variables"}` (`variables` always present) and a
//!   bearer key;
//! - the answer is judged in a fixed order: HTTP 401/403 is a rejected key; a body that is
//!   not JSON is a transport error; then HTTP ≥ 400 fails; then an `errors` key fails the
//!   call *even when `data` is present* (messages joined with `"; "`); only then is `data`
//!   returned;
//! - queries are retried ([`crate::retry`]) on transport errors, timeouts, HTTP 5xx and 429,
//!   and the GraphQL messages that mean "transient". A mutation is sent again only when the
//!   failed attempt never reached the server (a connect timeout), since a mutation whose
//!   answer was lost may have been applied; the few that are safe to repeat say so
//!   ([`StateManagerClient::execute_idempotent`]), and creates look for what they may have
//!   made before creating again ([`StateManagerClient::create_or_find`]). A refused
//!   connection is not retried: nothing is listening, and the user should hear so at once;
//! - a client holding an environment lease ([`StateManagerClient::with_environment_lease`])
//!   sends its token in [`ENVIRONMENT_LEASE_HEADER`] with every GraphQL request, so that
//!   `flash server` refuses writes to a leased environment from anyone else (RunPod ignores
//!   the header).

use std::fmt;
use std::time::Duration;

use std::future::Future;

use reqwest::header::{CONTENT_TYPE, HeaderValue};
use serde_json::{Value, json};

use crate::config::{CONNECT_TIMEOUT, ClientConfig};
use crate::data_plane::DataPlane;
use crate::error::ApiError;
use crate::retry::{Created, Repeat, create_or_find, retry};

/// The header that carries an environment lease's token (`flash server`'s extension; see
/// [`crate::operations::ACQUIRE_FLASH_ENVIRONMENT_LEASE`]).
pub const ENVIRONMENT_LEASE_HEADER: &str = "x-flash-environment-lease";

/// How much of a response body an error message quotes.
const BODY_SNIPPET_CHARS: usize = 512;

/// The State Manager client. Cheap to clone (one shared connection pool).
#[derive(Clone)]
pub struct StateManagerClient {
    http: reqwest::Client,
    config: ClientConfig,
    graphql_url: String,
    /// The token of the environment lease this client writes under, if any.
    lease: Option<HeaderValue>,
}

impl fmt::Debug for StateManagerClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateManagerClient")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl StateManagerClient {
    /// A client for `config`.
    pub fn new(config: ClientConfig) -> Result<Self, ApiError> {
        if HeaderValue::from_str(&format!("Bearer {}", config.api_key)).is_err() {
            return Err(ApiError::Config(format!(
                "the API key from {} contains characters that cannot go in an HTTP header",
                config.key_source
            )));
        }
        let user_agent = format!(
            "Runpod Flash/{} (Rust; {}; {})",
            env!("CARGO_PKG_VERSION"),
            std::env::consts::OS,
            std::env::consts::ARCH
        );
        let http = reqwest::Client::builder()
            .connect_timeout(connect_timeout(&config))
            .user_agent(user_agent)
            .build()
            .map_err(|e| ApiError::Config(format!("building the HTTP client: {e}")))?;
        let graphql_url = config.graphql_url();
        Ok(Self {
            http,
            config,
            graphql_url,
            lease: None,
        })
    }

    /// This client, sending `token` in [`ENVIRONMENT_LEASE_HEADER`] with every GraphQL
    /// request (same connection pool).
    pub fn with_environment_lease(&self, token: &str) -> Result<Self, ApiError> {
        let value = HeaderValue::from_str(token).map_err(|_| {
            ApiError::Config(format!(
                "the environment lease token `{token}` cannot go in an HTTP header"
            ))
        })?;
        Ok(Self {
            lease: Some(value),
            ..self.clone()
        })
    }

    /// A worker's client, configured from `RUNPOD_API_BASE_URL` and `RUNPOD_API_KEY`.
    pub fn from_env() -> Result<Self, ApiError> {
        Self::new(ClientConfig::from_env()?)
    }

    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// Base URL of the control plane, without a trailing `/`.
    pub fn base_url(&self) -> &str {
        &self.config.base_url
    }

    /// The API key (handed to endpoints that call peers).
    pub fn api_key(&self) -> &str {
        &self.config.api_key
    }

    /// The underlying HTTP client (for uploads to presigned URLs).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Where endpoints are reached.
    pub fn data_plane(&self) -> &DataPlane {
        &self.config.data_plane
    }

    /// URL of an endpoint of either kind.
    pub fn endpoint_url(&self, id: &str, load_balanced: bool) -> String {
        if load_balanced {
            self.config.data_plane.lb_url(id)
        } else {
            self.config.data_plane.queue_url(id)
        }
    }

    /// An authenticated request to a data-plane URL (queue, load-balanced, health).
    pub fn request(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        self.authorize(self.http.request(method, url))
    }

    /// Adds `Authorization: Bearer <key>`, unless the client is anonymous.
    fn authorize(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        if self.config.is_anonymous() {
            request
        } else {
            request.bearer_auth(&self.config.api_key)
        }
    }

    /// `workers` of the endpoint's `GET {queue url}/health`, or `None` when it does not
    /// answer with it.
    pub async fn endpoint_workers(&self, id: &str) -> Option<Value> {
        self.endpoint_health(id).await?.get("workers").cloned()
    }

    /// `/v2/{id}/health` of an endpoint: `jobs` (`inQueue`, `inProgress`, …) and `workers`;
    /// `None` when it does not answer.
    pub async fn endpoint_health(&self, id: &str) -> Option<Value> {
        let url = format!("{}/health", self.config.data_plane.queue_url(id));
        let resp = self
            .request(reqwest::Method::GET, &url)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .ok()
            .filter(|r| r.status().is_success())?;
        resp.json::<Value>().await.ok()
    }

    /// A `flash server`'s recent figures of these endpoints (`GET /v1/stats`: count,
    /// failures, p50/p99 latency over `window`, last error), by endpoint id; `None` where
    /// the control plane has no such API (RunPod) or does not answer.
    pub async fn endpoint_stats(&self, ids: &[String], window: Duration) -> Option<Value> {
        let url = format!("{}/v1/stats", self.base_url().trim_end_matches('/'));
        let resp = self
            .request(reqwest::Method::GET, &url)
            .query(&[
                ("endpoint", ids.join(",")),
                ("window_s", window.as_secs().to_string()),
            ])
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .ok()
            .filter(|r| r.status().is_success())?;
        resp.json::<Value>().await.ok()?.get("endpoints").cloned()
    }

    /// Sends one GraphQL operation and returns its `data`. Queries are retried on
    /// transient failures; mutations only when the failed attempt never reached the server.
    /// `operation` names the call in errors and logs.
    pub async fn execute(
        &self,
        operation: &str,
        query: &str,
        variables: Value,
    ) -> Result<Value, ApiError> {
        let repeat = if is_mutation(query) {
            Repeat::Unsent
        } else {
            Repeat::Transient
        };
        let body = json!({ "query": query, "variables": variables });
        retry(
            operation,
            self.config.max_attempts,
            self.config.backoff_base,
            repeat,
            || self.send_once(operation, &body),
        )
        .await
    }

    /// [`Self::execute`] for a mutation whose repetition has the effect of one (an update
    /// that names its object's id, a delete, a lease with the caller's token): retried on
    /// every transient failure, up to `attempts` tries.
    pub async fn execute_idempotent(
        &self,
        operation: &str,
        query: &str,
        variables: Value,
        attempts: u32,
    ) -> Result<Value, ApiError> {
        let body = json!({ "query": query, "variables": variables });
        retry(
            operation,
            attempts,
            self.config.backoff_base,
            Repeat::Transient,
            || self.send_once(operation, &body),
        )
        .await
    }

    /// Sends the create mutation `query` so that it makes its object at most once in
    /// effect (see [`crate::retry::create_or_find`]): after a failure that may have reached
    /// the server, `find` looks the object up (by its name) before the create is sent again.
    /// Returns `data.<field>` of the create, or what `find` found.
    pub async fn create_or_find<F, Fut>(
        &self,
        operation: &str,
        query: &str,
        variables: Value,
        field: &str,
        attempts: u32,
        find: F,
    ) -> Result<Created<Value>, ApiError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Option<Value>, ApiError>>,
    {
        let body = json!({ "query": query, "variables": variables });
        let created = create_or_find(
            operation,
            attempts,
            self.config.backoff_base,
            || async {
                let mut data = self.send_once(operation, &body).await?;
                match data.get_mut(field).map(Value::take) {
                    Some(object) if !object.is_null() => Ok(object),
                    _ => Err(ApiError::Malformed {
                        operation: operation.to_owned(),
                        detail: format!("the answer has no `{field}`: {data}"),
                    }),
                }
            },
            find,
        )
        .await?;
        Ok(created)
    }

    /// One HTTP exchange, judged in the order of the module docs.
    async fn send_once(&self, operation: &str, body: &Value) -> Result<Value, ApiError> {
        let mut request = self
            .authorize(self.http.post(&self.graphql_url))
            .timeout(self.config.timeout)
            .json(body);
        if let Some(token) = &self.lease {
            request = request.header(ENVIRONMENT_LEASE_HEADER, token.clone());
        }
        let response = request.send().await.map_err(|e| self.request_error(e))?;

        let status = response.status();
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            return Err(ApiError::Unauthorized {
                url: self.config.base_url.clone(),
                key_source: self.config.key_source.clone(),
            });
        }
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let bytes = response.bytes().await.map_err(|e| self.request_error(e))?;
        let transport = |detail: String| ApiError::Transport {
            url: self.graphql_url.clone(),
            detail,
        };

        // 1. JSON, or it is a transport problem (whatever the status says).
        if !content_type.to_ascii_lowercase().contains("json") {
            return Err(transport(format!(
                "the answer is not JSON (HTTP {}, content type `{content_type}`): {}",
                status.as_u16(),
                snippet(&bytes)
            )));
        }
        let parsed: Value = serde_json::from_slice(&bytes).map_err(|e| {
            transport(format!(
                "the answer is not valid JSON (HTTP {}): {e}: {}",
                status.as_u16(),
                snippet(&bytes)
            ))
        })?;

        // 2. HTTP failure.
        if status.as_u16() >= 400 {
            return Err(ApiError::Http {
                url: self.graphql_url.clone(),
                status: status.as_u16(),
                body: snippet(&bytes),
            });
        }

        // 3. `errors` fails the call, even with `data`.
        if let Some(errors) = parsed.get("errors").filter(|e| !e.is_null()) {
            return Err(ApiError::GraphQl {
                operation: operation.to_owned(),
                message: join_error_messages(errors),
            });
        }

        // 4. `data`.
        match parsed.get("data") {
            Some(data) if !data.is_null() => Ok(data.clone()),
            _ => Err(ApiError::Malformed {
                operation: operation.to_owned(),
                detail: format!("no `data` and no `errors` in {}", snippet(&bytes)),
            }),
        }
    }

    fn request_error(&self, e: reqwest::Error) -> ApiError {
        if e.is_connect() && e.is_timeout() {
            // Not connected in time: not a byte of the request was written.
            ApiError::ConnectTimeout {
                url: self.config.base_url.clone(),
                timeout: connect_timeout(&self.config),
            }
        } else if e.is_timeout() {
            ApiError::Timeout {
                url: self.graphql_url.clone(),
                timeout: self.config.timeout,
            }
        } else if e.is_connect() {
            // The server as the user configured it.
            ApiError::Unreachable {
                url: self.config.base_url.clone(),
                detail: innermost(&e),
            }
        } else {
            self.request_failed(&self.graphql_url, e)
        }
    }

    /// A failed request to `url` (a data-plane call, an artifact upload) as an [`ApiError`]:
    /// a refused connection says what to start; anything else keeps its whole cause chain.
    pub fn request_failed(&self, url: &str, e: reqwest::Error) -> ApiError {
        if e.is_connect() && !e.is_timeout() {
            ApiError::Unreachable {
                url: url.to_owned(),
                detail: innermost(&e),
            }
        } else {
            ApiError::Transport {
                url: url.to_owned(),
                detail: error_chain(&e),
            }
        }
    }
}

/// The connect timeout: [`CONNECT_TIMEOUT`], at most half the total timeout, so that a
/// connection that cannot be made fails as a connect timeout (nothing sent, safe to send
/// again) rather than as the total timeout (which cannot tell).
fn connect_timeout(config: &ClientConfig) -> Duration {
    (config.timeout / 2).min(CONNECT_TIMEOUT)
}

/// True when the document is a mutation (RunPod's rule: trimmed text starts with `mutation`).
pub fn is_mutation(query: &str) -> bool {
    query
        .trim_start()
        .get(..8)
        .is_some_and(|head| head.eq_ignore_ascii_case("mutation"))
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

/// The first [`BODY_SNIPPET_CHARS`] characters of a body, lossily decoded.
pub(crate) fn snippet(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    match text.char_indices().nth(BODY_SNIPPET_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None if text.is_empty() => "<empty body>".to_owned(),
        None => text.to_owned(),
    }
}

/// `e: cause: cause…`, since reqwest's top-level message alone ("error sending request")
/// hides the actionable part (connection refused, DNS failure, certificate).
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

/// The last cause in the chain ("Connection refused (os error 111)").
fn innermost(e: &dyn std::error::Error) -> String {
    let mut last = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        last = cause.to_string();
        source = cause.source();
    }
    last
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
    fn error_messages_are_joined_with_semicolons() {
        let errors = json!([{"message": "a"}, {"message": "b"}, {"code": 1}]);
        assert_eq!(join_error_messages(&errors), r#"a; b; {"code":1}"#);
    }

    #[test]
    fn an_api_key_that_cannot_be_a_header_is_a_config_error() {
        let config =
            ClientConfig::new("http://127.0.0.1:9", "bad\nkey", crate::KeySource::Env).unwrap();
        let err = StateManagerClient::new(config).unwrap_err();
        assert!(err.to_string().contains(crate::API_KEY_ENV), "{err}");
    }
}
