//! The queue-based handler: a RunPod-compatible serverless worker.
//!
//! It speaks exactly the protocol of the `runpod` Python worker SDK (1.12), so it works
//! against RunPod itself and against `flash server`'s gateway:
//!
//! - **take**: `GET {RUNPOD_WEBHOOK_GET_JOB with $ID = worker id}&job_in_progress=0|1`
//!   (`/job-take-batch/…&batch_size=N` when several slots are free); `200` = job(s),
//!   `204`/`400` = none, `429` = back off; the server holds the request (long poll);
//! - **result**: `POST {RUNPOD_WEBHOOK_POST_OUTPUT with $RUNPOD_POD_ID, $ID}&isStream=false`
//!   with `{"output": …}` or `{"error": "<JSON: error_type, error_message, …>"}`, retried
//!   on 5xx and connection errors (a lost result is logged as an error, never silently);
//! - **stop**: `GET …/job-stop/{worker}` (long poll) → `{"jobsToStop": [ids]}` aborts
//!   those jobs without posting a result;
//! - **stream**: each `progress.emit` chunk of the running function is posted to
//!   `{RUNPOD_WEBHOOK_POST_STREAM}&isStream=false` as `{"output": chunk}`, in order, before
//!   the result;
//! - **heartbeat**: `GET {RUNPOD_WEBHOOK_PING}&job_id=<csv>&runpod_version=…` every
//!   `RUNPOD_PING_INTERVAL` ms, plus `&inference=<model>:<device>,…` when the host
//!   preloads models (the device that actually serves each one);
//! - `Authorization: <RUNPOD_AI_API_KEY>` (raw, as the SDK sends it).
//!
//! Up to `concurrency` jobs run at once, each in its own task; a guest trap, timeout or
//! bad input fails that job only.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures::future::{AbortHandle, Abortable};
use serde_json::{Value, json};
use tokio::sync::{Semaphore, watch};

use crate::env::Vars;
use crate::job_input;
use crate::registry::ServiceRegistry;
use crate::role::Role;

/// The runpod SDK version whose protocol this worker speaks.
pub const RUNPOD_PROTOCOL_VERSION: &str = "1.12.0";

/// Where and how to take jobs (from the `RUNPOD_*` environment).
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub get_job: String,
    pub post_output: String,
    pub post_stream: Option<String>,
    pub ping: Option<String>,
    pub worker_id: String,
    pub ai_key: Option<String>,
    pub ping_interval: Duration,
    pub concurrency: usize,
}

impl WorkerConfig {
    /// Reads the worker environment; `None` when `RUNPOD_WEBHOOK_GET_JOB` is unset.
    pub fn from_vars(vars: &Vars) -> Result<Option<Self>> {
        let var = |k: &str| vars.get(k);
        let Some(get_job) = var("RUNPOD_WEBHOOK_GET_JOB") else {
            return Ok(None);
        };
        let post_output = var("RUNPOD_WEBHOOK_POST_OUTPUT")
            .context("RUNPOD_WEBHOOK_GET_JOB is set but RUNPOD_WEBHOOK_POST_OUTPUT is not")?;
        for (name, template) in [
            ("RUNPOD_WEBHOOK_GET_JOB", &get_job),
            ("RUNPOD_WEBHOOK_POST_OUTPUT", &post_output),
        ] {
            if !template.contains('?') {
                bail!("{name} must contain `?` (parameters are appended with `&`): {template}");
            }
        }
        let ping_ms: u64 = vars.parse("RUNPOD_PING_INTERVAL")?.unwrap_or(10_000);
        let concurrency: usize = vars.parse("FLASH_CONCURRENCY")?.unwrap_or(1);
        Ok(Some(Self {
            get_job,
            post_output,
            post_stream: var("RUNPOD_WEBHOOK_POST_STREAM"),
            ping: var("RUNPOD_WEBHOOK_PING"),
            worker_id: var("RUNPOD_POD_ID").unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
            ai_key: var("RUNPOD_AI_API_KEY"),
            ping_interval: Duration::from_millis(ping_ms.max(100)),
            concurrency: concurrency.max(1),
        }))
    }
}

/// The queue worker role: `config`'s job source, served by `registry`.
pub struct QueueWorker {
    pub registry: Arc<ServiceRegistry>,
    pub config: WorkerConfig,
}

impl Role for QueueWorker {
    fn name(&self) -> &'static str {
        "queue worker"
    }

    async fn serve(self, stop: watch::Receiver<bool>) -> Result<()> {
        run(self.registry, self.config, stop).await
    }
}

/// The worker loop; returns after `shutdown` flips to true and running jobs finish.
pub async fn run(
    registry: Arc<ServiceRegistry>,
    config: WorkerConfig,
    mut shutdown: watch::Receiver<bool>,
) -> Result<()> {
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .build()
        .context("building the HTTP client")?;
    let config = Arc::new(config);
    let slots = Arc::new(Semaphore::new(config.concurrency));
    let in_flight: InFlight = Default::default();

    // Which device serves each preloaded model, e.g. `classifier:cpu` (a `gpu` config on a
    // machine without CUDA reports `cpu`).
    let devices: Vec<String> = registry
        .app()
        .inference
        .status()
        .iter()
        .map(|g| format!("{}:{}", g.name, g.device))
        .collect();
    let pinger = config.ping.clone().map(|url| {
        let url = if devices.is_empty() {
            url
        } else {
            format!("{url}&inference={}", devices.join(","))
        };
        tokio::spawn(heartbeat(
            http.clone(),
            Arc::clone(&config),
            url,
            Arc::clone(&in_flight),
        ))
    });

    let stopper = config.get_job.contains("/job-take/").then(|| {
        tokio::spawn(stop_channel(
            http.clone(),
            Arc::clone(&config),
            Arc::clone(&in_flight),
        ))
    });

    tracing::info!(worker = %config.worker_id, concurrency = config.concurrency, "queue worker started");
    let mut backoff = Duration::from_millis(250);
    loop {
        if *shutdown.borrow() {
            break;
        }
        // Wait for a free slot (or shutdown).
        let first = tokio::select! {
            permit = Arc::clone(&slots).acquire_owned() => permit.context("slots closed")?,
            _ = shutdown.changed() => break,
        };
        let mut permits = vec![first];
        while let Ok(p) = Arc::clone(&slots).try_acquire_owned() {
            permits.push(p);
        }
        let busy = !in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty();
        let url = take_url(&config, permits.len(), busy);
        let taken = tokio::select! {
            r = take(&http, &config, &url) => r,
            _ = shutdown.changed() => break,
        };
        match taken {
            Ok(Take::Jobs(jobs)) => {
                backoff = Duration::from_millis(250);
                for job in jobs {
                    let Some(permit) = permits.pop() else {
                        tracing::error!(
                            "server sent more jobs than free slots; dropping the extra job"
                        );
                        break;
                    };
                    let id = job
                        .get("id")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string();
                    let (abort, registration) = AbortHandle::new_pair();
                    in_flight
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(id.clone(), abort);
                    let (registry, http, config) =
                        (Arc::clone(&registry), http.clone(), Arc::clone(&config));
                    let done = InFlightGuard {
                        in_flight: Arc::clone(&in_flight),
                        id,
                    };
                    tokio::spawn(async move {
                        // A stop request aborts the job: its instance is dropped and, as
                        // the runpod SDK does, no result is posted.
                        let job = Abortable::new(
                            handle_job(&registry, &http, &config, job),
                            registration,
                        );
                        if job.await.is_err() {
                            tracing::info!(job = %done.id, "job stopped by the job source");
                        }
                        drop(done);
                        drop(permit);
                    });
                }
            }
            Ok(Take::None) => backoff = Duration::from_millis(250),
            Ok(Take::BackOff) => tokio::time::sleep(Duration::from_secs(5)).await,
            Err(err) => {
                tracing::warn!("job take failed: {err:#}; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
    tracing::info!("queue worker stopping: waiting for running jobs");
    let _all = slots.acquire_many(config.concurrency as u32).await;
    for task in [pinger, stopper].into_iter().flatten() {
        task.abort();
    }
    Ok(())
}

/// Jobs running now, with the handle that stops each.
type InFlight = Arc<Mutex<BTreeMap<String, AbortHandle>>>;

/// Removes a job from [`InFlight`] when its task ends, however it ends.
struct InFlightGuard {
    in_flight: InFlight,
    id: String,
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
    }
}

/// The stop channel: `GET …/job-stop/{worker}` (long poll); `200 {"jobsToStop": [ids]}`
/// aborts those jobs, `204` means none.
async fn stop_channel(http: reqwest::Client, config: Arc<WorkerConfig>, in_flight: InFlight) {
    let url = config
        .get_job
        .replace("/job-take/", "/job-stop/")
        .replace("$ID", &config.worker_id);
    loop {
        let mut request = http.get(&url).timeout(Duration::from_secs(90));
        if let Some(key) = &config.ai_key {
            request = request.header("Authorization", key);
        }
        let pause = match request.send().await {
            Ok(r) if r.status().as_u16() == 200 => {
                let ids: Vec<String> = r
                    .json::<Value>()
                    .await
                    .ok()
                    .and_then(|v| serde_json::from_value(v.get("jobsToStop")?.clone()).ok())
                    .unwrap_or_default();
                let running = in_flight.lock().unwrap_or_else(|e| e.into_inner());
                for id in ids {
                    if let Some(handle) = running.get(&id) {
                        handle.abort();
                    }
                }
                Duration::ZERO
            }
            Ok(r) if r.status().as_u16() == 429 => Duration::from_secs(5),
            Ok(_) => Duration::from_secs(1),
            Err(e) => {
                tracing::debug!("stop channel: {e}");
                Duration::from_secs(1)
            }
        };
        tokio::time::sleep(pause).await;
    }
}

fn take_url(config: &WorkerConfig, free: usize, busy: bool) -> String {
    let mut url = config.get_job.replace("$ID", &config.worker_id);
    if free > 1 {
        url = url.replace("/job-take/", "/job-take-batch/");
        url.push_str(&format!("&batch_size={free}"));
    }
    url.push_str(if busy {
        "&job_in_progress=1"
    } else {
        "&job_in_progress=0"
    });
    url
}

enum Take {
    Jobs(Vec<Value>),
    None,
    BackOff,
}

async fn take(http: &reqwest::Client, config: &WorkerConfig, url: &str) -> Result<Take> {
    let mut request = http.get(url).timeout(Duration::from_secs(90));
    if let Some(key) = &config.ai_key {
        request = request.header("Authorization", key);
    }
    let response = request.send().await.with_context(|| format!("GET {url}"))?;
    match response.status().as_u16() {
        200 => {
            let bytes = response.bytes().await.context("reading the job")?;
            if bytes.iter().all(u8::is_ascii_whitespace) {
                return Ok(Take::None);
            }
            let value: Value = serde_json::from_slice(&bytes).context("the job is not JSON")?;
            let jobs = match value {
                Value::Array(jobs) => jobs,
                Value::Null => vec![],
                job => vec![job],
            };
            Ok(if jobs.is_empty() {
                Take::None
            } else {
                Take::Jobs(jobs)
            })
        }
        204 | 400 => Ok(Take::None),
        429 => Ok(Take::BackOff),
        status => bail!("job take answered HTTP {status}"),
    }
}

/// Runs one job and posts its result.
async fn handle_job(
    registry: &ServiceRegistry,
    http: &reqwest::Client,
    config: &WorkerConfig,
    job: Value,
) {
    let Some(id) = job.get("id").and_then(Value::as_str).map(str::to_string) else {
        tracing::error!("job without an id: {job}");
        return;
    };
    // Partial output goes to the job's stream as it is emitted, in order; the result is
    // posted only after every chunk has been. The queue is bounded: a guest that emits
    // faster than chunks are posted waits (see `flash_runtime::PROGRESS_QUEUE`).
    let (sink, mut chunks) = flash_runtime::progress_channel();
    let streamer = config.post_stream.clone().map(|template| {
        let url = template
            .replace("$RUNPOD_POD_ID", &config.worker_id)
            .replace("$ID", &id)
            + "&isStream=false";
        let (http, config, id) = (http.clone(), config.clone(), id.clone());
        tokio::spawn(async move {
            while let Some(chunk) = chunks.recv().await {
                let output = serde_json::from_str::<Value>(&chunk).unwrap_or(Value::String(chunk));
                post_result(&http, &config, &url, &id, &json!({ "output": output })).await;
            }
        })
    });
    let result = run_job(registry, &job, streamer.is_some().then_some(sink)).await;
    if let Some(streamer) = streamer {
        let _ = streamer.await;
    }
    let body = match result {
        Ok(output) => json!({ "output": output }),
        Err(err) => {
            tracing::warn!(job = %id, kind = err.kind.as_str(), "job failed: {}", err.message);
            json!({ "error": error_string(&err, &config.worker_id) })
        }
    };
    let url = config
        .post_output
        .replace("$RUNPOD_POD_ID", &config.worker_id)
        .replace("$ID", &id)
        + "&isStream=false";
    post_result(http, config, &url, &id, &body).await;
}

async fn run_job(
    registry: &ServiceRegistry,
    job: &Value,
    progress: Option<flash_runtime::ProgressSink>,
) -> Result<Value, flash_runtime::CallError> {
    let id = job.get("id").and_then(Value::as_str);
    let input = job.get("input").cloned().unwrap_or(Value::Null);
    let app = registry.app();
    let served: Vec<&str> = app.local_functions().collect();
    let single = if served.len() == 1 {
        Some(served[0])
    } else {
        None
    };
    let call = job_input::resolve(&input, single, &served)?;
    if !app.is_local(&call.function) {
        return Err(app.unknown(&call.function));
    }
    let output = app
        .invoke(
            &call.function,
            &call.payload,
            call.depth,
            registry.router(),
            progress,
            crate::app::CallTag {
                job: id.map(str::to_string),
                trace: call.trace,
            },
        )
        .await?;
    crate::app::decode_output(&call.function, &output)
}

/// The error string the runpod SDK posts: JSON with `error_type`, `error_message`, …,
/// and Flash's `error_origin` when the failure came back through peer calls.
pub fn error_string(err: &flash_runtime::CallError, worker_id: &str) -> String {
    let mut error = json!({
        "error_type": err.kind.as_str(),
        "error_message": err.message,
        "error_traceback": err.traceback.as_deref().unwrap_or_default(),
        "hostname": hostname(),
        "worker_id": worker_id,
        "runpod_version": RUNPOD_PROTOCOL_VERSION,
    });
    if let Some(origin) = &err.origin {
        error["error_origin"] = json!(origin);
    }
    error.to_string()
}

fn hostname() -> String {
    std::env::var("RUNPOD_POD_HOSTNAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "flash-host".into())
}

async fn post_result(
    http: &reqwest::Client,
    config: &WorkerConfig,
    url: &str,
    id: &str,
    body: &Value,
) {
    let mut delay = Duration::from_millis(500);
    for attempt in 1..=5 {
        let mut request = http
            .post(url)
            .header("Content-Type", "application/json")
            .header("X-Request-ID", id)
            .body(body.to_string())
            .timeout(Duration::from_secs(30));
        if let Some(key) = &config.ai_key {
            request = request.header("Authorization", key);
        }
        match request.send().await {
            Ok(r) if r.status().is_success() => return,
            Ok(r) if r.status().is_client_error() => {
                // The job is gone (cancelled, timed out, taken over); nothing to retry.
                tracing::warn!(job = %id, status = %r.status(), "result rejected by the job source");
                return;
            }
            Ok(r) => {
                tracing::warn!(job = %id, attempt, status = %r.status(), "posting the result failed")
            }
            Err(e) => tracing::warn!(job = %id, attempt, "posting the result failed: {e}"),
        }
        tokio::time::sleep(delay).await;
        delay *= 2;
    }
    tracing::error!(job = %id, "result LOST after 5 attempts: the job source will time the job out");
}

async fn heartbeat(
    http: reqwest::Client,
    config: Arc<WorkerConfig>,
    template: String,
    in_flight: InFlight,
) {
    let base = template.replace("$RUNPOD_POD_ID", &config.worker_id);
    let mut ticker = tokio::time::interval(config.ping_interval);
    loop {
        ticker.tick().await;
        let jobs: Vec<String> = in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect();
        let mut url = base.clone();
        if !jobs.is_empty() {
            url.push_str(&format!("&job_id={}", jobs.join(",")));
        }
        url.push_str(&format!("&runpod_version={RUNPOD_PROTOCOL_VERSION}"));
        let mut request = http.get(&url).timeout(config.ping_interval * 2);
        if let Some(key) = &config.ai_key {
            request = request.header("Authorization", key);
        }
        if let Err(e) = request.send().await {
            tracing::debug!("heartbeat failed: {e}");
        }
    }
}

/// Runs one job given on the command line (`--test-input`) and returns its result body.
pub async fn run_once(registry: &ServiceRegistry, input: Value) -> (bool, Value) {
    let job = json!({ "id": "test-input", "input": input });
    let (sink, mut chunks) = flash_runtime::progress_channel();
    // The queue is bounded: take chunks while the job runs, or a job that emits more than
    // it holds would wait for its deadline.
    let collect = async {
        let mut stream = Vec::new();
        while let Some(chunk) = chunks.recv().await {
            stream.push(serde_json::from_str::<Value>(&chunk).unwrap_or(Value::String(chunk)));
        }
        stream
    };
    let (result, stream) = tokio::join!(run_job(registry, &job, Some(sink)), collect);
    let mut body = match result {
        Ok(output) => json!({ "output": output }),
        Err(err) => {
            json!({ "error": { "kind": err.kind, "message": err.message, "origin": err.origin } })
        }
    };
    if !stream.is_empty() {
        body["stream"] = Value::Array(stream);
    }
    (body.get("output").is_some(), body)
}
