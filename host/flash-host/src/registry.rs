//! [`ServiceRegistry`]: where each function runs, and the host side of `peer.call`.
//!
//! The manifest maps every function to its resource config. A call to a function of
//! this host's resource config runs here, in a fresh instance; any other goes over HTTP to
//! the endpoint serving it, whose URL comes from an [`EndpointDirectory`] (the State
//! Manager's `resources_endpoints` in deployments):
//!
//! - queue endpoints: `POST {url}/runsync` with a job input naming the function, then
//!   `GET {url}/status/{id}` until the job is final;
//! - load-balanced endpoints: `POST {url}/execute` naming the function.
//!
//! Every failure becomes a typed [`CallError`] — `unavailable` (no URL, connection
//! refused), `timeout`, or the remote function's own error kind — never a hang: each
//! request has a deadline, and so does the whole call.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use flash_runtime::peer::BoxFuture;
use flash_runtime::{CallError, ErrorKind, PeerRouter};
use serde_json::{Value, json};

use crate::app::CallTag;
use crate::app::HostApp;
use crate::job_input::{CALL_DEPTH_KEY, TRACE_KEY};

/// Finds the endpoint URL of a resource config.
pub trait EndpointDirectory: Send + Sync + 'static {
    /// The URL of `resource`'s endpoint: `{queue base}/{endpoint id}` for queue endpoints,
    /// the base URL of a load-balanced endpoint. `Ok(None)` when it is not deployed.
    fn endpoint_url<'a>(
        &'a self,
        resource: &'a str,
    ) -> BoxFuture<'a, anyhow::Result<Option<String>>>;

    /// Forgets cached URLs (after a failed call, the endpoint may have moved).
    fn invalidate(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// In deployments: the State Manager's `resources_endpoints`, through the TTL-cached
/// [`ManifestFetcher`] (local manifest as fallback).
impl EndpointDirectory for crate::manifest_fetcher::ManifestFetcher {
    fn endpoint_url<'a>(
        &'a self,
        resource: &'a str,
    ) -> BoxFuture<'a, anyhow::Result<Option<String>>> {
        Box::pin(async move { Ok(self.resources_endpoints().await?.get(resource).cloned()) })
    }

    fn invalidate(&self) -> BoxFuture<'_, ()> {
        Box::pin(crate::manifest_fetcher::ManifestFetcher::invalidate(self))
    }
}

/// A fixed resource → URL table (tests, `FLASH_PEER_ENDPOINTS`, a manifest's
/// `resources_endpoints`).
#[derive(Debug, Default, Clone)]
pub struct StaticDirectory(pub std::collections::BTreeMap<String, String>);

impl EndpointDirectory for StaticDirectory {
    fn endpoint_url<'a>(
        &'a self,
        resource: &'a str,
    ) -> BoxFuture<'a, anyhow::Result<Option<String>>> {
        Box::pin(async move { Ok(self.0.get(resource).cloned()) })
    }
}

/// Settings of remote calls.
#[derive(Debug, Clone)]
pub struct PeerOptions {
    /// Bound of one remote call, polling included.
    pub timeout: Duration,
    /// API key sent as `Authorization: Bearer` to peers (`RUNPOD_API_KEY`).
    pub api_key: Option<String>,
}

impl Default for PeerOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(300),
            api_key: None,
        }
    }
}

/// Routes calls locally or to peers.
pub struct ServiceRegistry {
    app: Arc<HostApp>,
    directory: Arc<dyn EndpointDirectory>,
    http: reqwest::Client,
    options: PeerOptions,
    this: Weak<ServiceRegistry>,
}

impl ServiceRegistry {
    pub fn new(
        app: Arc<HostApp>,
        directory: Arc<dyn EndpointDirectory>,
        options: PeerOptions,
    ) -> Arc<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .expect("building an HTTP client");
        Arc::new_cyclic(|this| Self {
            app,
            directory,
            http,
            options,
            this: this.clone(),
        })
    }

    pub fn app(&self) -> &Arc<HostApp> {
        &self.app
    }

    /// This registry as the router handed to guests.
    pub fn router(&self) -> Arc<dyn PeerRouter> {
        self.this
            .upgrade()
            .expect("the registry is alive while it routes")
    }

    /// Runs `function` at call depth `depth`, its log lines tagged by `call`: here if
    /// local, else on its endpoint, which is told the job the call works for (`call`'s
    /// trace, else its job).
    pub async fn call(
        &self,
        function: &str,
        input: String,
        depth: u32,
        call: CallTag,
    ) -> Result<String, CallError> {
        if self.app.is_local(function) {
            return self
                .app
                .invoke(function, &input, depth, self.router(), None, call)
                .await;
        }
        let trace = call.trace.or(call.job);
        let trace = trace.as_deref();
        let Some(resource) = self.app.manifest.resource_of(function).map(str::to_string) else {
            return Err(self.app.unknown(function));
        };
        self.check_may_call_peers(function, &resource)?;
        let started = Instant::now();
        let result = tokio::time::timeout(
            self.options.timeout,
            self.call_remote(&resource, function, &input, depth, trace),
        )
        .await;
        let result = match result {
            Ok(Ok(output)) => Ok(output),
            Ok(Err(err)) => {
                if err.kind == ErrorKind::Unavailable {
                    self.directory.invalidate().await;
                }
                Err(err.through_peer(function, &resource))
            }
            Err(_) => Err(CallError::new(
                ErrorKind::Timeout,
                format!(
                    "peer call to `{function}` on resource `{resource}` did not finish within {:.1} s",
                    started.elapsed().as_secs_f64()
                ),
            )
            .through_peer(function, &resource)),
        };
        self.app
            .metrics
            .record_peer_call(function, &resource, &result, started.elapsed());
        result
    }

    /// Refuses a peer call from a resource that its build found to call no peers: it was
    /// deployed without the API key such calls need (see `flash_manifest::peer_calls`),
    /// and this says why instead of failing on a missing key.
    fn check_may_call_peers(&self, function: &str, resource: &str) -> Result<(), CallError> {
        let Some(own) = self.app.resource.as_deref() else {
            return Ok(());
        };
        if self
            .app
            .manifest
            .resources
            .get(own)
            .is_none_or(|entry| entry.makes_remote_calls)
        {
            return Ok(());
        }
        Err(CallError::new(
            ErrorKind::Internal,
            format!(
                "`{function}` runs on resource `{resource}`, but resource `{own}` was built as one \
                 that calls no other resource: `flash build` found no mention of another \
                 resource's function in the code of `{own}`'s functions, so its workers hold no \
                 API key for peer calls. Name the function in the caller's code (`{function}(…)`, \
                 or `peer_call(\"{function}\", …)` with the name as a string literal), then build \
                 and deploy again"
            ),
        ))
    }

    async fn call_remote(
        &self,
        resource: &str,
        function: &str,
        input: &str,
        depth: u32,
        trace: Option<&str>,
    ) -> Result<String, CallError> {
        let unavailable = |msg: String| CallError::new(ErrorKind::Unavailable, msg);
        let url = self
            .directory
            .endpoint_url(resource)
            .await
            .map_err(|e| unavailable(format!("cannot look up the endpoint of resource `{resource}` for `{function}`: {e:#}")))?
            .ok_or_else(|| {
                unavailable(format!(
                    "resource `{resource}` (serving `{function}`) has no endpoint URL: is it deployed? \
                     (no entry in the environment's resources_endpoints)"
                ))
            })?;
        let url = url.trim_end_matches('/').to_string();
        check_peer_url(&url).map_err(|why| {
            unavailable(format!(
                "refusing to call `{function}` at {url}: {why} (the API key goes with every peer \
                 call)"
            ))
        })?;
        let payload: Value = serde_json::from_str(input).map_err(|e| {
            CallError::new(
                ErrorKind::InvalidInput,
                format!("peer input for `{function}` is not JSON: {e}"),
            )
        })?;
        let load_balanced = self
            .app
            .manifest
            .resources
            .get(resource)
            .is_some_and(|r| r.is_load_balanced);
        tracing::debug!(%function, %resource, %url, depth, "peer call");
        if load_balanced {
            let body = json!({ "function_name": function, "input": payload, CALL_DEPTH_KEY: depth, TRACE_KEY: trace });
            let response = self
                .post(&format!("{url}/execute"), &body, function)
                .await?;
            match response.get("success").and_then(Value::as_bool) {
                Some(true) => Ok(response
                    .get("result")
                    .cloned()
                    .unwrap_or(Value::Null)
                    .to_string()),
                _ => Err(CallError {
                    origin: flash_runtime::ErrorOrigin::from_wire(response.get("origin"))
                        .map(Box::new),
                    ..remote_error(function, response.get("error"), response.get("kind"))
                        .with_traceback(response.get("traceback").and_then(string_of))
                }),
            }
        } else {
            let body = json!({ "input": { "function_name": function, "input": payload, CALL_DEPTH_KEY: depth, TRACE_KEY: trace } });
            let mut status = self
                .post(&format!("{url}/runsync"), &body, function)
                .await?;
            // `/runsync` answers with a non-final status when the job outlives its wait.
            let mut delay = Duration::from_millis(100);
            loop {
                match status.get("status").and_then(Value::as_str) {
                    Some("COMPLETED") => {
                        return Ok(status
                            .get("output")
                            .cloned()
                            .unwrap_or(Value::Null)
                            .to_string());
                    }
                    Some("FAILED") => {
                        return Err(remote_error(function, status.get("error"), None));
                    }
                    Some("TIMED_OUT") => {
                        return Err(CallError::new(
                            ErrorKind::Timeout,
                            format!("peer job for `{function}` timed out on resource `{resource}`"),
                        ));
                    }
                    Some("CANCELLED") => {
                        return Err(CallError::new(
                            ErrorKind::RemoteFailure,
                            format!("peer job for `{function}` was cancelled"),
                        ));
                    }
                    Some("IN_QUEUE" | "IN_PROGRESS") => {}
                    other => {
                        return Err(CallError::new(
                            ErrorKind::RemoteFailure,
                            format!(
                                "peer endpoint of `{function}` answered an unknown job status {other:?}"
                            ),
                        ));
                    }
                }
                let id = status.get("id").and_then(Value::as_str).ok_or_else(|| {
                    CallError::new(
                        ErrorKind::RemoteFailure,
                        format!(
                            "peer endpoint of `{function}` returned a pending job without an id"
                        ),
                    )
                })?;
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
                status = self.get(&status_url(&url, id), function).await?;
            }
        }
    }

    async fn post(&self, url: &str, body: &Value, function: &str) -> Result<Value, CallError> {
        let mut request = self.http.post(url).json(body).timeout(self.options.timeout);
        if let Some(key) = &self.options.api_key {
            request = request.bearer_auth(key);
        }
        self.send(request, url, function).await
    }

    async fn get(&self, url: &str, function: &str) -> Result<Value, CallError> {
        let mut request = self.http.get(url).timeout(Duration::from_secs(30));
        if let Some(key) = &self.options.api_key {
            request = request.bearer_auth(key);
        }
        self.send(request, url, function).await
    }

    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        url: &str,
        function: &str,
    ) -> Result<Value, CallError> {
        let response = request.send().await.map_err(|e| {
            let kind = if e.is_timeout() {
                ErrorKind::Timeout
            } else {
                ErrorKind::Unavailable
            };
            CallError::new(
                kind,
                format!("peer call to `{function}` at {url} failed: {e}"),
            )
        })?;
        let status = response.status();
        let body: Value = response.json().await.map_err(|e| {
            CallError::new(
                ErrorKind::RemoteFailure,
                format!("peer endpoint {url} answered {status} with a non-JSON body: {e}"),
            )
        })?;
        if status.is_success() {
            return Ok(body);
        }
        // Load-balanced hosts answer errors with a typed body; keep its kind.
        if body.get("success").is_some() {
            return Ok(body);
        }
        let kind = match status.as_u16() {
            401 | 403 => ErrorKind::Unavailable,
            404 => ErrorKind::Unavailable,
            _ => ErrorKind::RemoteFailure,
        };
        Err(CallError::new(
            kind,
            format!("peer endpoint {url} answered {status} for `{function}`: {body}"),
        ))
    }
}

fn string_of(value: &Value) -> Option<String> {
    value.as_str().map(str::to_string)
}

/// Decodes a remote error: the worker's JSON error string (`error_type`,
/// `error_message`, `error_traceback`), an `/execute` error body, or any other text.
fn remote_error(function: &str, error: Option<&Value>, kind: Option<&Value>) -> CallError {
    let parse_kind =
        |v: Option<&Value>| v.and_then(|k| serde_json::from_value::<ErrorKind>(k.clone()).ok());
    if let Some(kind) = parse_kind(kind) {
        let message = error
            .and_then(Value::as_str)
            .unwrap_or("remote call failed")
            .to_string();
        return CallError::new(kind, message);
    }
    let text = match error {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => format!("peer call to `{function}` failed without an error message"),
    };
    if let Ok(Value::Object(map)) = serde_json::from_str::<Value>(&text)
        && let Some(kind) = parse_kind(map.get("error_type"))
    {
        let message = map
            .get("error_message")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        return CallError {
            origin: flash_runtime::ErrorOrigin::from_wire(map.get("error_origin")).map(Box::new),
            ..CallError::new(kind, message)
                .with_traceback(map.get("error_traceback").and_then(string_of))
        };
    }
    CallError::new(ErrorKind::RemoteFailure, text)
}

impl PeerRouter for ServiceRegistry {
    fn call<'a>(
        &'a self,
        function: &'a str,
        input: String,
        depth: u32,
        trace: Option<&'a str>,
    ) -> BoxFuture<'a, Result<String, CallError>> {
        let call = CallTag {
            job: None,
            trace: trace.map(str::to_string),
        };
        Box::pin(ServiceRegistry::call(self, function, input, depth, call))
    }
}

/// Peer URLs get the API key, so they must be https, or plain http on loopback (a local
/// `flash server`).
fn check_peer_url(url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("not a URL ({e})"))?;
    match parsed.scheme() {
        "https" => Ok(()),
        "http" => {
            let host = parsed.host_str().unwrap_or("");
            let loopback = host == "localhost"
                || host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            if loopback {
                Ok(())
            } else {
                Err("plain http is allowed only on loopback; use https".into())
            }
        }
        other => Err(format!("scheme `{other}` is not http(s)")),
    }
}

/// `{url}/status/{id}`, with the job id percent-encoded as one path segment.
fn status_url(url: &str, id: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) => {
            if let Ok(mut segments) = parsed.path_segments_mut() {
                segments.pop_if_empty().push("status").push(id);
            }
            parsed.to_string()
        }
        Err(_) => format!("{url}/status/{id}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_goes_only_to_https_or_loopback_peers() {
        for ok in [
            "https://abc.api.runpod.ai",
            "http://127.0.0.1:8765/v2/ep",
            "http://[::1]:9/lb/x",
            "http://localhost:1",
        ] {
            assert!(check_peer_url(ok).is_ok(), "{ok}");
        }
        for refused in [
            "http://10.0.0.5:80/v2/ep",
            "http://evil.example",
            "ftp://x",
            "nope",
        ] {
            assert!(check_peer_url(refused).is_err(), "{refused}");
        }
    }

    #[test]
    fn job_ids_are_one_encoded_path_segment() {
        assert_eq!(
            status_url("http://127.0.0.1:1/v2/ep", "a/../b?c"),
            "http://127.0.0.1:1/v2/ep/status/a%2F..%2Fb%3Fc"
        );
        assert_eq!(
            status_url("http://127.0.0.1:1/v2/ep", "job-1"),
            "http://127.0.0.1:1/v2/ep/status/job-1"
        );
    }
}
