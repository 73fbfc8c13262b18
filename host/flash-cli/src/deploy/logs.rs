//! `flash logs`: the log lines of an environment's workers, read through the control plane.
//!
//! A `flash server` keeps each worker's log and serves it filtered at `GET /v1/logs`
//! (`flash_control::logs`); this resolves the environment's endpoints (by resource name),
//! asks for their lines and prints them, following when asked. RunPod keeps worker logs in
//! its own console and offers no such API: there this says so.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use serde_json::{Map, Value};

use super::{require_app, require_environment};
use flash_api::StateManagerClient;

/// What to show.
#[derive(Debug, Clone, Default)]
pub struct LogRequest {
    pub app: String,
    pub env: String,
    /// Only these resources' workers; empty: every endpoint of the environment.
    pub resources: Vec<String>,
    pub job: Option<String>,
    /// Only lines newer than this.
    pub since: Option<Duration>,
    /// The last this many lines (then new ones, when following).
    pub tail: Option<usize>,
    pub follow: bool,
}

/// Writes the lines `request` selects to `out`, one per line: as received (`json`) or for
/// people (`time resource worker [job] LEVEL message`). Returns how many it wrote.
pub async fn logs(
    sm: &StateManagerClient,
    request: &LogRequest,
    json: bool,
    out: &mut (dyn Write + Send),
) -> Result<usize> {
    let app = require_app(sm, &request.app).await?;
    let env = require_environment(sm, &app, &request.env).await?;
    let endpoints: BTreeMap<String, String> = env
        .get("endpoints")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|e| {
            Some((
                e.get("id")?.as_str()?.to_string(),
                e.get("name")?.as_str()?.to_string(),
            ))
        })
        .collect();
    for resource in &request.resources {
        if !endpoints.values().any(|name| name == resource) {
            bail!(
                "environment `{}` has no endpoint for resource `{resource}` (it has: {})",
                request.env,
                endpoints.values().cloned().collect::<Vec<_>>().join(", ")
            );
        }
    }
    let chosen: Vec<&str> = endpoints
        .iter()
        .filter(|(_, name)| request.resources.is_empty() || request.resources.contains(name))
        .map(|(id, _)| id.as_str())
        .collect();
    if chosen.is_empty() {
        bail!(
            "environment `{}` has no endpoints yet: deploy with `flash deploy send {}`",
            request.env,
            request.env
        );
    }
    let mut query: Vec<(&str, String)> = vec![("endpoint", chosen.join(","))];
    if let Some(job) = &request.job {
        query.push(("job", job.clone()));
    }
    if let Some(since) = request.since {
        let from = SystemTime::now()
            .checked_sub(since)
            .unwrap_or(SystemTime::UNIX_EPOCH)
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        query.push(("since_ms", from.as_millis().to_string()));
    }
    if let Some(tail) = request.tail {
        query.push(("tail", tail.to_string()));
    }
    if request.follow {
        query.push(("follow", "true".into()));
    }
    let url = format!("{}/v1/logs", sm.base_url().trim_end_matches('/'));
    let response = sm
        .http()
        .get(&url)
        .bearer_auth(sm.api_key())
        .query(&query)
        .send()
        .await
        .with_context(|| format!("asking {url} for logs"))?;
    let status = response.status();
    if status == reqwest::StatusCode::NOT_FOUND
        && response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .is_none_or(|t| !t.as_bytes().starts_with(b"application/json"))
    {
        bail!(
            "the control plane at {} serves no logs: `flash logs` reads a `flash server`'s \
             workers (RunPod shows worker logs in its console)",
            sm.base_url()
        );
    }
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        bail!("reading logs failed: HTTP {status}: {body}");
    }
    let mut written = 0;
    let mut pending = Vec::new();
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        pending.extend_from_slice(&chunk.context("reading the log stream")?);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let text = String::from_utf8_lossy(&line);
            let text = text.trim_end();
            if text.is_empty() {
                continue;
            }
            if json {
                writeln!(out, "{text}")?;
            } else {
                let parsed = match serde_json::from_str::<Value>(text) {
                    Ok(Value::Object(map)) => map,
                    _ => Map::new(),
                };
                writeln!(out, "{}", human_line(&parsed, &endpoints))?;
            }
            out.flush()?;
            written += 1;
        }
    }
    Ok(written)
}

/// `14:30:00.123 api w-1a2b [job-7] INFO message`, the resource named by `endpoints`.
pub fn human_line(line: &Map<String, Value>, endpoints: &BTreeMap<String, String>) -> String {
    let field = |key: &str| line.get(key).and_then(Value::as_str).unwrap_or("");
    let time = field("timestamp")
        .split_once('T')
        .map(|(_, t)| t.trim_end_matches('Z'))
        .map(|t| t.get(..12).unwrap_or(t))
        .unwrap_or("-");
    let resource = line
        .get("resource")
        .and_then(Value::as_str)
        .or_else(|| endpoints.get(field("endpoint")).map(String::as_str))
        .unwrap_or("-");
    let job = match field("job") {
        "" => String::new(),
        job => format!(" [{job}]"),
    };
    let level = match field("level") {
        "" => "-",
        level => level,
    };
    let message = field("message");
    let source = if field("target") == "guest" {
        let function = field("function");
        format!(" {function}:")
    } else {
        String::new()
    };
    format!(
        "{time} {resource} {}{job} {level:<5}{source} {message}",
        field("worker")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lines_for_people_name_time_resource_worker_job_and_source() {
        let endpoints = BTreeMap::from([("ep-1".to_string(), "api".to_string())]);
        let line = |v: Value| human_line(v.as_object().unwrap(), &endpoints);
        assert_eq!(
            line(
                json!({"timestamp": "2026-12-04T14:30:00.123456Z", "level": "INFO",
                "target": "guest", "function": "embed", "job": "job-7", "endpoint": "ep-1",
                "worker": "w-1", "message": "hello"})
            ),
            "14:30:00.123 api w-1 [job-7] INFO  embed: hello"
        );
        assert_eq!(
            line(json!({"message": "thread 'main' panicked", "endpoint": "ep-1", "worker": "w-2"})),
            "- api w-2 -     thread 'main' panicked"
        );
    }
}
