//! `flash call`: invoke a deployed function through its endpoint.

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

/// Calls `function` of the environment's active build with keyword arguments `kwargs`;
/// returns the function's result.
pub async fn call(
    sm: &StateManagerClient,
    app_name: &str,
    env_name: &str,
    function: &str,
    kwargs: &Value,
    timeout: Duration,
) -> Result<Value> {
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
        call_lb(sm, &url, entry, kwargs, deadline).await
    } else {
        call_queue(sm, &url, function, kwargs, deadline).await
    }
}

async fn call_lb(
    sm: &StateManagerClient,
    url: &str,
    entry: &flash_manifest::FunctionEntry,
    kwargs: &Value,
    deadline: Instant,
) -> Result<Value> {
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
    let resp = req
        .send()
        .await
        .map_err(|e| sm.request_failed(&target, e))?;
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    if !status.is_success() {
        bail!("{method} {target} answered HTTP {status}: {value}");
    }
    Ok(value)
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
) -> Result<Value> {
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
            "COMPLETED" => return Ok(job.get("output").cloned().unwrap_or(Value::Null)),
            "FAILED" | "CANCELLED" | "TIMED_OUT" => {
                let error = job.get("error").cloned().unwrap_or(Value::Null);
                let error = match error {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                bail!("`{function}` {status}: {error}");
            }
            _ => {}
        }
        let id = job
            .get("id")
            .and_then(Value::as_str)
            .with_context(|| format!("runsync answered without a job id: {job}"))?
            .to_string();
        if Instant::now() >= deadline {
            bail!("`{function}` did not finish in time (job {id} is {status}); raise --timeout");
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
