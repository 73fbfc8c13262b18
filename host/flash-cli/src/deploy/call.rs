//! `flash call`: invoke a deployed function through its endpoint.
//!
//! A call that reaches the function and fails there is a [`CallFailed`]: its kind (the WIT
//! `error-kind` the worker reported, or one read from the job status or HTTP status), the
//! message and the traceback, read out of RunPod's job error (`error_type`,
//! `error_message`, `error_traceback`) or a load-balanced route's error body, plus the raw
//! answer for `--json`. [`CallFailed::exit_code`] sorts failures into the classes a script
//! tells apart.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use flash_manifest::Manifest;
use serde_json::{Value, json};

use super::environment::list;
use super::{require_app, require_environment};
use flash_api::StateManagerClient;

/// Picks the environment for `flash call` without `--env`: the only one of the app.
pub async fn default_environment(sm: &StateManagerClient, app_name: &str) -> Result<String> {
    let rows = list(sm, Some(app_name)).await?;
    match rows.as_slice() {
        [one] => Ok(one.name.clone()),
        [] => {
            bail!("app `{app_name}` has no environment: create one with `flash deploy new <env>`")
        }
        many => bail!(
            "app `{app_name}` has several environments ({}): pick one with --env",
            many.iter()
                .map(|r| r.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// What a call answered: the function's result, and the answer it came in (the final job
/// of a queue endpoint, the body of a load-balanced route).
#[derive(Debug, Clone, PartialEq)]
pub struct CallOutput {
    pub output: Value,
    pub raw: Value,
}

/// A call that reached the endpoint and failed: in the function, or refused on its way.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("`{function}` failed: {kind}{}: {message}", origin.as_ref().map(|o| format!(" in {o}")).unwrap_or_default())]
pub struct CallFailed {
    pub function: String,
    /// The WIT `error-kind` (`user-error`, `invalid-input`, `timeout`, …), or `unavailable`,
    /// `timeout`, `cancelled`, `unauthorized` read from the job or HTTP status.
    pub kind: String,
    pub message: String,
    /// The guest's traceback (Python's, a demangled Rust backtrace), if it sent one.
    pub traceback: Option<String>,
    /// Where the failure began when it came back through peer calls (`hop_three (resource
    /// web, via stage_two)`).
    pub origin: Option<flash_runtime::ErrorOrigin>,
    /// The job id, or the load-balanced request's `x-request-id`: what `flash logs --job`
    /// takes.
    pub id: Option<String>,
    /// The environment called, for the `flash logs` hint.
    pub env: Option<String>,
    /// The answer as received (`flash call --json` prints it).
    pub raw: Value,
}

/// Exit codes of `flash call`, by class of failure (documented in its `--help`).
pub mod exit {
    /// The function failed while it ran: an exception in its code, an internal error, a
    /// peer that failed.
    pub const FAILED: u8 = 1;
    /// The call was refused as asked: bad arguments, no such function, a call cycle, no
    /// permission.
    pub const REFUSED: u8 = 2;
    /// Nothing could serve it: no worker, a worker that is gone.
    pub const UNAVAILABLE: u8 = 3;
    /// It ran out of time (the endpoint's execution timeout, or `--timeout`).
    pub const TIMEOUT: u8 = 4;
}

impl CallFailed {
    /// The class of this failure, as an exit code ([`exit`]).
    pub fn exit_code(&self) -> u8 {
        match self.kind.as_str() {
            "invalid-input" | "unknown-function" | "call-depth-exceeded" | "unauthorized" => {
                exit::REFUSED
            }
            "unavailable" => exit::UNAVAILABLE,
            "timeout" => exit::TIMEOUT,
            _ => exit::FAILED,
        }
    }

    /// From a queue job that ended `status` (`FAILED`, `CANCELLED`, `TIMED_OUT`): Flash and
    /// RunPod workers post `error` as JSON text with `error_type`, `error_message` and
    /// `error_traceback`; other workers post any text.
    fn from_job(function: &str, status: &str, job: &Value) -> Self {
        let error = job.get("error").cloned().unwrap_or(Value::Null);
        let parsed = match &error {
            Value::String(text) => serde_json::from_str::<Value>(text).ok(),
            Value::Object(_) => Some(error.clone()),
            _ => None,
        }
        .filter(|v| v.get("error_message").is_some() || v.get("error_type").is_some());
        let text = |v: &Value, key: &str| {
            v.get(key)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        let status_kind = match status {
            "TIMED_OUT" => "timeout",
            "CANCELLED" => "cancelled",
            _ => "user-error",
        };
        let origin = parsed
            .as_ref()
            .and_then(|p| flash_runtime::ErrorOrigin::from_wire(p.get("error_origin")));
        let (kind, message, traceback) = match &parsed {
            Some(p) => (
                text(p, "error_type").unwrap_or_else(|| status_kind.to_string()),
                text(p, "error_message").unwrap_or_else(|| status.to_string()),
                text(p, "error_traceback"),
            ),
            None => (
                status_kind.to_string(),
                match error {
                    Value::String(s) if !s.is_empty() => s,
                    Value::Null => format!("the job ended {status}"),
                    other => other.to_string(),
                },
                None,
            ),
        };
        Self {
            function: function.to_string(),
            kind,
            message,
            traceback,
            origin,
            id: job.get("id").and_then(Value::as_str).map(str::to_string),
            env: None,
            raw: job.clone(),
        }
    }

    /// From a load-balanced answer with HTTP `status`: flash-host answers
    /// `{"error", "kind", "traceback"}`; a gateway or another server may answer anything.
    fn from_http(
        function: &str,
        status: reqwest::StatusCode,
        body: &Value,
        request_id: Option<String>,
    ) -> Self {
        let by_status = match status.as_u16() {
            401 | 403 => "unauthorized",
            400 | 404 | 405 | 413 | 422 => "invalid-input",
            408 | 504 => "timeout",
            502 | 503 => "unavailable",
            _ => "internal",
        };
        let field = |key: &str| {
            body.get(key)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        Self {
            function: function.to_string(),
            kind: field("kind").unwrap_or_else(|| by_status.to_string()),
            message: field("error").unwrap_or_else(|| match body {
                Value::String(s) if !s.is_empty() => format!("HTTP {status}: {s}"),
                other => format!("HTTP {status}: {other}"),
            }),
            traceback: field("traceback"),
            origin: flash_runtime::ErrorOrigin::from_wire(body.get("origin")),
            id: request_id,
            env: None,
            raw: body.clone(),
        }
    }
}

/// Calls `function` of the environment's active build with keyword arguments `kwargs`;
/// returns the function's result, or a [`CallFailed`] when the function (or its endpoint)
/// failed.
pub async fn call(
    sm: &StateManagerClient,
    app_name: &str,
    env_name: &str,
    function: &str,
    kwargs: &Value,
    timeout: Duration,
) -> Result<CallOutput> {
    call_in(sm, app_name, env_name, function, kwargs, timeout)
        .await
        .map_err(|e| match e.downcast::<CallFailed>() {
            Ok(failed) => CallFailed {
                env: Some(env_name.to_string()),
                ..failed
            }
            .into(),
            Err(e) => e,
        })
}

async fn call_in(
    sm: &StateManagerClient,
    app_name: &str,
    env_name: &str,
    function: &str,
    kwargs: &Value,
    timeout: Duration,
) -> Result<CallOutput> {
    if !kwargs.is_object() {
        bail!(
            "the arguments must be a JSON object of keyword arguments, e.g. '{{\"text\": \"hi\"}}'"
        );
    }
    let app = require_app(sm, app_name).await?;
    let env = require_environment(sm, &app, env_name).await?;
    let build = env
        .get("activeBuildId")
        .and_then(Value::as_str)
        .with_context(|| {
            format!(
                "environment `{env_name}` has no active build: deploy one with `flash deploy \
                 send {env_name}`"
            )
        })?;
    let manifest_json = sm.build_manifest(build).await?;
    let manifest: Manifest = serde_json::from_value(manifest_json)
        .context("the active build's manifest is not a Flash manifest")?;
    let Some((resource, entry)) = manifest.function(function) else {
        let known: Vec<&str> = manifest
            .function_registry
            .keys()
            .map(String::as_str)
            .collect();
        bail!(
            "function `{function}` is not in the active build of `{env_name}` (it has: {})",
            known.join(", ")
        );
    };
    let url = manifest
        .resources_endpoints
        .as_ref()
        .and_then(|m| m.get(resource))
        .with_context(|| {
            format!(
                "resource `{resource}` has no endpoint in the active build: run `flash deploy \
                 send {env_name}`"
            )
        })?
        .trim_end_matches('/')
        .to_string();
    let deadline = Instant::now() + timeout;
    if entry.is_load_balanced {
        call_lb(sm, &url, function, entry, kwargs, deadline).await
    } else {
        call_queue(sm, &url, function, kwargs, deadline).await
    }
}

async fn call_lb(
    sm: &StateManagerClient,
    url: &str,
    function: &str,
    entry: &flash_manifest::FunctionEntry,
    kwargs: &Value,
    deadline: Instant,
) -> Result<CallOutput> {
    let (method, target, body) = match (&entry.http_method, &entry.http_path) {
        (Some(m), Some(p)) => {
            let method = reqwest::Method::from_bytes(m.to_ascii_uppercase().as_bytes())
                .with_context(|| format!("bad HTTP method `{m}` in the manifest"))?;
            let body = (method != reqwest::Method::GET).then(|| kwargs.clone());
            (method, format!("{url}{p}"), body)
        }
        _ => (
            reqwest::Method::POST,
            format!("{url}/execute"),
            Some(json!({ "function_name": entry.name, "kwargs": kwargs })),
        ),
    };
    let remaining = deadline.saturating_duration_since(Instant::now());
    let mut req = sm.request(method.clone(), &target).timeout(remaining);
    if let Some(body) = &body {
        req = req.json(body);
    } else if method == reqwest::Method::GET {
        req = req.query(&query_pairs(&entry.name, kwargs)?);
    }
    let resp = match req.send().await {
        Ok(resp) => resp,
        Err(e) if e.is_timeout() => {
            return Err(CallFailed {
                function: function.to_string(),
                kind: "timeout".into(),
                message: format!("{method} {target} did not answer in time; raise --timeout"),
                traceback: None,
                origin: None,
                id: None,
                env: None,
                raw: Value::Null,
            }
            .into());
        }
        Err(e) => return Err(sm.request_failed(&target, e).into()),
    };
    let status = resp.status();
    let request_id = resp
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let text = resp.text().await.unwrap_or_default();
    let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    if !status.is_success() {
        return Err(CallFailed::from_http(function, status, &value, request_id).into());
    }
    Ok(CallOutput {
        output: value.clone(),
        raw: value,
    })
}

/// The arguments of a call to a `GET` route, as the query string the route decodes: each
/// value as JSON text, except a string that is not itself JSON, which goes as is (so
/// `{"q": "cats", "n": 2, "id": "7"}` → `?q=cats&n=2&id=%227%22`).
fn query_pairs(function: &str, kwargs: &Value) -> Result<Vec<(String, String)>> {
    let args = match kwargs {
        Value::Null => return Ok(Vec::new()),
        Value::Object(args) => args,
        _ => bail!(
            "`{function}` is a GET route, which takes named arguments: pass a JSON object \
             such as '{{\"name\": \"value\"}}'"
        ),
    };
    Ok(args
        .iter()
        .map(|(name, value)| {
            let text = match value {
                Value::String(s) if serde_json::from_str::<Value>(s).is_err() => s.clone(),
                other => other.to_string(),
            };
            (name.clone(), text)
        })
        .collect())
}

async fn call_queue(
    sm: &StateManagerClient,
    url: &str,
    function: &str,
    kwargs: &Value,
    deadline: Instant,
) -> Result<CallOutput> {
    let body = json!({ "input": { "function_name": function, "kwargs": kwargs } });
    let remaining = deadline.saturating_duration_since(Instant::now());
    let resp = sm
        .request(reqwest::Method::POST, &format!("{url}/runsync"))
        .timeout(remaining)
        .json(&body)
        .send()
        .await
        .map_err(|e| sm.request_failed(&format!("{url}/runsync"), e))?;
    let mut job = job_body(resp, "runsync").await?;
    loop {
        let status = job.get("status").and_then(Value::as_str).unwrap_or("");
        match status {
            "COMPLETED" => {
                return Ok(CallOutput {
                    output: job.get("output").cloned().unwrap_or(Value::Null),
                    raw: job,
                });
            }
            "FAILED" | "CANCELLED" | "TIMED_OUT" => {
                return Err(CallFailed::from_job(function, status, &job).into());
            }
            _ => {}
        }
        let id = job
            .get("id")
            .and_then(Value::as_str)
            .with_context(|| format!("runsync answered without a job id: {job}"))?
            .to_string();
        if Instant::now() >= deadline {
            return Err(CallFailed {
                function: function.to_string(),
                kind: "timeout".into(),
                message: format!("did not finish in time (job {id} is {status}); raise --timeout"),
                traceback: None,
                origin: None,
                id: Some(id.clone()),
                env: None,
                raw: job,
            }
            .into());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let remaining = deadline.saturating_duration_since(Instant::now());
        let resp = sm
            .request(reqwest::Method::GET, &format!("{url}/status/{id}"))
            .timeout(remaining.max(Duration::from_secs(1)))
            .send()
            .await
            .map_err(|e| sm.request_failed(&format!("{url}/status/{id}"), e))?;
        job = job_body(resp, "status").await?;
    }
}

async fn job_body(resp: reqwest::Response, what: &str) -> Result<Value> {
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    if !status.is_success() {
        bail!("{what} answered HTTP {status}: {text}");
    }
    serde_json::from_str(&text).with_context(|| format!("{what} answered non-JSON: {text}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_job_is_read_out_of_runpods_error_json() {
        let job = json!({
            "id": "j1",
            "status": "FAILED",
            "error": json!({
                "error_type": "user-error",
                "error_message": "ValueError: dims must be positive",
                "error_traceback": "Traceback (most recent call last):\n  ...",
                "hostname": "h",
            })
            .to_string(),
        });
        let failed = CallFailed::from_job("embed", "FAILED", &job);
        assert_eq!(
            failed.to_string(),
            "`embed` failed: user-error: ValueError: dims must be positive"
        );
        assert_eq!(
            failed.traceback.as_deref(),
            Some("Traceback (most recent call last):\n  ...")
        );
        assert_eq!(failed.exit_code(), exit::FAILED);
        assert_eq!(failed.raw, job);

        // Another worker's plain text, and the statuses that carry the class.
        let plain = CallFailed::from_job("f", "FAILED", &json!({"error": "boom"}));
        assert_eq!(plain.to_string(), "`f` failed: user-error: boom");
        let timed_out = CallFailed::from_job("f", "TIMED_OUT", &json!({}));
        assert_eq!(timed_out.kind, "timeout");
        assert_eq!(timed_out.exit_code(), exit::TIMEOUT);
        let refused = CallFailed::from_job(
            "f",
            "FAILED",
            &json!({"error": json!({"error_type": "invalid-input", "error_message": "missing argument `a`"}).to_string()}),
        );
        assert_eq!(refused.exit_code(), exit::REFUSED);
    }

    #[test]
    fn a_failed_route_is_read_out_of_its_error_body() {
        let body = json!({"success": false, "error": "no ready worker", "kind": "unavailable", "traceback": null});
        let failed = CallFailed::from_http(
            "stats",
            reqwest::StatusCode::SERVICE_UNAVAILABLE,
            &body,
            None,
        );
        assert_eq!(
            failed.to_string(),
            "`stats` failed: unavailable: no ready worker"
        );
        assert_eq!(failed.traceback, None);
        assert_eq!(failed.exit_code(), exit::UNAVAILABLE);
        let gateway = CallFailed::from_http(
            "stats",
            reqwest::StatusCode::GATEWAY_TIMEOUT,
            &json!("upstream timed out"),
            None,
        );
        assert_eq!(gateway.kind, "timeout");
        assert_eq!(
            gateway.message,
            "HTTP 504 Gateway Timeout: upstream timed out"
        );
        let denied =
            CallFailed::from_http("stats", reqwest::StatusCode::UNAUTHORIZED, &json!({}), None);
        assert_eq!(denied.exit_code(), exit::REFUSED);
    }

    #[test]
    fn a_failure_that_came_through_peers_says_where_it_began() {
        let origin = json!({"function": "hop_three", "resource": "web", "via": ["stage_two"]});
        let error = json!({
            "error_type": "invalid-input",
            "error_message": "text is empty",
            "error_origin": origin,
        });
        let job = json!({"id": "job-9", "status": "FAILED", "error": error.to_string()});
        let failed = CallFailed::from_job("hop_one", "FAILED", &job);
        assert_eq!(
            failed.to_string(),
            "`hop_one` failed: invalid-input in hop_three (resource web, via stage_two): text is empty"
        );
        assert_eq!(failed.id.as_deref(), Some("job-9"));
        assert_eq!(failed.exit_code(), exit::REFUSED);
        let body = json!({"success": false, "error": "boom", "kind": "user-error", "origin": {"function": "rank", "resource": "ranker", "via": []}});
        let failed = CallFailed::from_http(
            "top",
            reqwest::StatusCode::INTERNAL_SERVER_ERROR,
            &body,
            Some("req-1".into()),
        );
        assert_eq!(
            failed.to_string(),
            "`top` failed: user-error in rank (resource ranker): boom"
        );
        assert_eq!(failed.id.as_deref(), Some("req-1"));
    }

    #[test]
    fn get_arguments_are_json_text_except_plain_strings() {
        let pairs = query_pairs(
            "f",
            &json!({"q": "cats & dogs", "n": 2, "id": "7", "tags": ["a"]}),
        );
        let expected = [
            ("q", "cats & dogs"),
            ("n", "2"),
            ("id", "\"7\""),
            ("tags", "[\"a\"]"),
        ];
        assert_eq!(
            pairs.unwrap(),
            expected.map(|(k, v)| (k.to_string(), v.to_string()))
        );
        assert_eq!(query_pairs("f", &json!({})).unwrap(), vec![]);
        let err = query_pairs("f", &json!([1])).unwrap_err().to_string();
        assert!(err.contains("named arguments"), "{err}");
    }
}
