//! The serverless gateway: RunPod's queue API, its worker job protocol and the LB proxy.
//!
//! Clients submit jobs under `/v2/{endpoint}/` (`run`, `runsync`, `status`, `stream`,
//! `cancel`, `health`, `purge-queue`; reference §2); workers pull them with the runpod-python
//! worker protocol (`job-take`, `job-take-batch`, `job-done`, `job-stream`, `job-stop`,
//! `ping`; reference §3). The queue lives in the store, so a job accepted by `/run` survives
//! a killed server or worker:
//!
//! - a take leases the job to the worker until `now + lease`; heartbeats (`ping` with
//!   `job_id=…`) extend the lease; an expired lease, a worker process that exited, or a
//!   server restart puts the job back in the queue with its retry count incremented (and
//!   fails it past `max_retries`);
//! - an endpoint's `executionTimeoutMs` (or the job's `policy.executionTimeout`) marks an
//!   overrunning job `TIMED_OUT` and asks its worker to stop it;
//! - `job-take` is a long poll held up to `take_hold` (RunPod holds ~60 s; an immediate 204
//!   makes the SDK spin), woken by [`Signals`] when a job arrives.
//!
//! Load-balanced endpoints have no queue: `/lb/{endpoint}/{path}` forwards the request to a
//! ready worker's HTTP listener, starting one first if none runs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderName, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::state::AppState;
use crate::store::{ChunkPush, Endpoint, Job, JobOutcome, JobStatus};
use crate::util::{ApiError, now_ms};

/// The gateway's routes (queue API, worker API, LB proxy).
/// The queue API and the worker protocol (`/v2/{endpoint}/…`).
pub fn queue_router() -> Router<AppState> {
    Router::new()
        .route("/v2/{ep}/run", post(run))
        .route("/v2/{ep}/runsync", post(runsync))
        .route("/v2/{ep}/status/{job}", get(status).post(status))
        .route("/v2/{ep}/stream/{job}", get(stream).post(stream))
        .route("/v2/{ep}/cancel/{job}", post(cancel))
        .route("/v2/{ep}/health", get(health))
        .route("/v2/{ep}/metrics", get(metrics))
        .route("/v2/{ep}/purge-queue", post(purge_queue))
        .route("/v2/{ep}/job-take/{worker}", get(job_take))
        .route("/v2/{ep}/job-take-batch/{worker}", get(job_take_batch))
        .route("/v2/{ep}/job-done/{worker}/{job}", post(job_done))
        .route("/v2/{ep}/job-stream/{worker}/{job}", post(job_stream))
        .route("/v2/{ep}/job-stop/{worker}", get(job_stop))
        .route("/v2/{ep}/ping/{worker}", get(ping))
}

/// The load-balanced proxy (`/lb/{endpoint}/…`).
pub fn lb_router() -> Router<AppState> {
    Router::new()
        .route("/lb/{ep}", any(lb_root))
        .route("/lb/{ep}/{*path}", any(lb_proxy))
}

type Reply = Result<Response, ApiError>;

fn err(status: StatusCode, message: impl Into<String>) -> ApiError {
    ApiError::new(status, message)
}

fn ok(body: Value) -> Reply {
    Ok((StatusCode::OK, axum::Json(body)).into_response())
}

fn endpoint(state: &AppState, id: &str) -> Result<Endpoint, ApiError> {
    match state.store.get_endpoint(id) {
        Ok(Some(ep)) => Ok(ep),
        Ok(None) => Err(err(
            StatusCode::NOT_FOUND,
            format!("endpoint `{id}` not found"),
        )),
        Err(e) => Err(err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    }
}

/// Loads the endpoint after checking the caller: the user key or the key of the endpoint's
/// environment ([`Auth::may_call`](crate::auth::Auth::may_call)), or (when `ai_key_ok`)
/// the endpoint's own `aiKey`.
fn authorized(
    state: &AppState,
    headers: &HeaderMap,
    id: &str,
    ai_key_ok: bool,
) -> Result<Endpoint, ApiError> {
    let unauthorized = || {
        err(
            StatusCode::UNAUTHORIZED,
            "unauthorized: invalid or missing API key",
        )
    };
    let ep = match endpoint(state, id) {
        Ok(ep) => ep,
        // Do not reveal which endpoints exist to anyone but the user.
        Err(resp) if state.auth.is_user(headers) => return Err(resp),
        Err(_) => return Err(unauthorized()),
    };
    let allowed = if ai_key_ok {
        state.auth.may_call_or_worker(headers, &ep)
    } else {
        state.auth.may_call(headers, &ep)
    };
    if allowed { Ok(ep) } else { Err(unauthorized()) }
}

fn queue_endpoint(ep: &Endpoint) -> Result<(), ApiError> {
    if ep.is_lb() {
        return Err(err(
            StatusCode::BAD_REQUEST,
            format!(
                "endpoint `{}` is load-balanced: call it at /lb/{}/<path>, not the queue API",
                ep.id, ep.id
            ),
        ));
    }
    Ok(())
}

fn store_err(e: impl std::fmt::Display) -> ApiError {
    err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

/// The `/status` body of a job (always with `workerId`, `delayTime`, `executionTime`).
pub fn status_body(job: &Job) -> Value {
    let now = now_ms();
    let delay = job.started_at.unwrap_or(if job.status.is_terminal() {
        job.completed_at.unwrap_or(now)
    } else {
        now
    }) - job.created_at;
    let execution = match job.started_at {
        Some(s) => job.completed_at.unwrap_or(now) - s,
        None => 0,
    };
    let mut body = json!({
        "id": job.id,
        "status": job.status.as_str(),
        "delayTime": delay.max(0),
        "executionTime": execution.max(0),
        "workerId": job.worker_id.clone().unwrap_or_default(),
        "retries": job.retries,
    });
    if let Some(output) = &job.output {
        body["output"] = output.clone();
    }
    if let Some(error) = &job.error {
        body["error"] = Value::String(error.clone());
    }
    body
}

/// Bookkeeping once a job reached a final state: wake `/runsync` waiters, fire its webhook.
pub fn job_finished(state: &AppState, job: &Job) {
    state.signals.notify_job(&job.id);
    state.signals.job_finished();
    let Some(url) = job
        .webhook
        .clone()
        .filter(|u| u.starts_with("http://") || u.starts_with("https://"))
    else {
        return;
    };
    let body = status_body(job);
    let http = state.http.clone();
    tokio::spawn(async move {
        for attempt in 0..3u32 {
            match http
                .post(&url)
                .json(&body)
                .timeout(Duration::from_secs(10))
                .send()
                .await
            {
                Ok(r) if r.status().is_success() => return,
                Ok(r) => tracing::warn!(%url, status = %r.status(), attempt, "webhook rejected"),
                Err(e) => tracing::warn!(%url, error = %e, attempt, "webhook failed"),
            }
            tokio::time::sleep(Duration::from_secs(1 << attempt)).await;
        }
    });
}

// ---------------------------------------------------------------------------------------
// Queue API

async fn submit(state: &AppState, ep: &Endpoint, body: Bytes) -> Result<Job, ApiError> {
    queue_endpoint(ep)?;
    let request: Value = serde_json::from_slice(&body).map_err(|e| {
        err(
            StatusCode::BAD_REQUEST,
            format!("request body is not JSON: {e}"),
        )
    })?;
    let Some(obj) = request.as_object() else {
        return Err(err(
            StatusCode::BAD_REQUEST,
            "request body must be a JSON object with an `input` key",
        ));
    };
    if !obj.contains_key("input") {
        return Err(err(
            StatusCode::BAD_REQUEST,
            "request body needs an `input` key (an empty object is fine)",
        ));
    }
    let queued = state.store.queued_count(&ep.id).map_err(store_err)?;
    if queued >= state.config.max_queue as i64 {
        return Err(err(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "queue of endpoint `{}` is full ({queued} jobs); retry later",
                ep.id
            ),
        ));
    }
    let timeout_ms = obj
        .get("policy")
        .and_then(|p| p.get("executionTimeout"))
        .and_then(Value::as_i64)
        .unwrap_or(ep.execution_timeout_ms)
        .max(0);
    let job = Job {
        // RunPod job ids look like `<uuid>-<region>`; keep the shape for log-reading tools.
        id: format!("{}-l1", uuid::Uuid::new_v4()),
        endpoint_id: ep.id.clone(),
        webhook: obj
            .get("webhook")
            .and_then(Value::as_str)
            .map(str::to_string),
        request,
        status: JobStatus::InQueue,
        worker_id: None,
        output: None,
        error: None,
        retries: 0,
        timeout_ms,
        created_at: now_ms(),
        started_at: None,
        completed_at: None,
        lease_expires_at: None,
    };
    state.store.enqueue_job(&job).map_err(store_err)?;
    state.signals.jobs_available(&ep.id);
    // Scaling from zero should not wait for the next tick; otherwise the tick suffices and
    // a reconcile pass per request would cost more than the request.
    if state.provisioner.worker_counts(&ep.id).ready == 0 {
        state.provisioner.kick();
    }
    Ok(job)
}

async fn run(
    State(state): State<AppState>,
    Path(ep): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Reply {
    let ep = authorized(&state, &headers, &ep, false)?;
    let job = submit(&state, &ep, body).await?;
    ok(json!({ "id": job.id, "status": job.status.as_str() }))
}

#[derive(Deserialize)]
struct WaitQuery {
    /// Milliseconds to wait for a final state (RunPod's `?wait=`).
    wait: Option<u64>,
}

async fn runsync(
    State(state): State<AppState>,
    Path(ep): Path<String>,
    Query(q): Query<WaitQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Reply {
    let ep = authorized(&state, &headers, &ep, false)?;
    let job = submit(&state, &ep, body).await?;
    let wait = q
        .wait
        .map(Duration::from_millis)
        .unwrap_or(state.config.runsync_wait)
        .min(Duration::from_secs(300));
    let deadline = tokio::time::Instant::now() + wait;
    let mut shutdown = state.signals.shutdown();
    let notify = state.signals.job_waiter(&job.id);
    let result = loop {
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let current = match state.store.get_job(&job.id) {
            Ok(j) => j.unwrap_or_else(|| job.clone()),
            Err(e) => break Err(store_err(e)),
        };
        if current.status.is_terminal() {
            break ok(status_body(&current));
        }
        tokio::select! {
            _ = &mut notified => {}
            // Transitions that do not notify (purge, retries exhausted) are seen on this poll.
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = tokio::time::sleep_until(deadline) => break ok(status_body(&current)),
            _ = shutdown.wait_for(|s| *s) => break ok(status_body(&current)),
        }
    };
    state.signals.forget_job(&job.id);
    result
}

async fn status(
    State(state): State<AppState>,
    Path((ep, job)): Path<(String, String)>,
    headers: HeaderMap,
) -> Reply {
    let ep = authorized(&state, &headers, &ep, true)?;
    match state.store.get_job(&job).map_err(store_err)? {
        Some(j) if j.endpoint_id == ep.id => ok(status_body(&j)),
        _ => Err(err(
            StatusCode::NOT_FOUND,
            format!("job `{job}` not found on endpoint `{}`", ep.id),
        )),
    }
}

async fn stream(
    State(state): State<AppState>,
    Path((ep, job)): Path<(String, String)>,
    headers: HeaderMap,
) -> Reply {
    let ep = authorized(&state, &headers, &ep, true)?;
    match state.store.take_chunks(&job).map_err(store_err)? {
        Some((j, chunks)) if j.endpoint_id == ep.id => {
            let mut body = json!({
                "id": j.id,
                "status": j.status.as_str(),
                "stream": chunks.into_iter().map(|c| json!({ "output": c })).collect::<Vec<_>>(),
            });
            if let Some(e) = &j.error {
                body["error"] = Value::String(e.clone());
            }
            ok(body)
        }
        _ => Err(err(
            StatusCode::NOT_FOUND,
            format!("job `{job}` not found on endpoint `{}`", ep.id),
        )),
    }
}

async fn cancel(
    State(state): State<AppState>,
    Path((ep, job)): Path<(String, String)>,
    headers: HeaderMap,
) -> Reply {
    let ep = authorized(&state, &headers, &ep, false)?;
    let before = match state.store.get_job(&job).map_err(store_err)? {
        Some(j) if j.endpoint_id == ep.id => j,
        _ => {
            return Err(err(
                StatusCode::NOT_FOUND,
                format!("job `{job}` not found on endpoint `{}`", ep.id),
            ));
        }
    };
    let after = state
        .store
        .cancel_job(&job, now_ms())
        .map_err(store_err)?
        .unwrap_or(before.clone());
    if !before.status.is_terminal() && after.status == JobStatus::Cancelled {
        if let (JobStatus::InProgress, Some(worker)) = (before.status, &before.worker_id) {
            state.signals.request_stop(worker, &job);
        }
        job_finished(&state, &after);
    }
    ok(json!({ "id": after.id, "status": after.status.as_str() }))
}

async fn health(
    State(state): State<AppState>,
    Path(ep): Path<String>,
    headers: HeaderMap,
) -> Reply {
    let ep = authorized(&state, &headers, &ep, true)?;
    let c = state.store.job_counts(&ep.id).map_err(store_err)?;
    let w = state.provisioner.worker_counts(&ep.id);
    ok(json!({
        "jobs": {
            "completed": c.completed, "failed": c.failed, "inProgress": c.in_progress,
            "inQueue": c.in_queue, "retried": c.retried,
        },
        "workers": {
            "idle": w.idle, "initializing": w.initializing, "ready": w.ready,
            "running": w.running, "throttled": w.throttled, "unhealthy": w.unhealthy,
        },
    }))
}

async fn metrics(
    State(state): State<AppState>,
    Path(ep): Path<String>,
    headers: HeaderMap,
) -> Reply {
    let ep = authorized(&state, &headers, &ep, true)?;
    let w = state.provisioner.worker_counts(&ep.id);
    ok(json!({
        "readyWorkers": state.provisioner.ready_workers(&ep.id),
        "workers": {
            "ready": w.ready, "running": w.running, "idle": w.idle,
            "initializing": w.initializing, "throttled": w.throttled, "unhealthy": w.unhealthy,
        },
    }))
}

async fn purge_queue(
    State(state): State<AppState>,
    Path(ep): Path<String>,
    headers: HeaderMap,
) -> Reply {
    let ep = authorized(&state, &headers, &ep, false)?;
    let removed = state
        .store
        .purge_queue(&ep.id, now_ms())
        .map_err(store_err)?;
    if removed > 0 {
        state.signals.job_finished();
    }
    ok(json!({ "removed": removed, "status": "completed" }))
}

// ---------------------------------------------------------------------------------------
// Worker API

#[derive(Deserialize)]
struct TakeQuery {
    batch_size: Option<usize>,
}

fn worker_job(job: &Job) -> Value {
    let mut body = match &job.request {
        Value::Object(o) => Value::Object(o.clone()),
        other => json!({ "input": other }),
    };
    body["id"] = Value::String(job.id.clone());
    body
}

async fn take(
    state: &AppState,
    ep: &str,
    worker: &str,
    max: usize,
) -> Result<Option<Vec<Job>>, ApiError> {
    let deadline = tokio::time::Instant::now() + state.config.take_hold;
    let notify = state.signals.endpoint(ep);
    let mut shutdown = state.signals.shutdown();
    loop {
        if state.provisioner.is_draining(worker) || *shutdown.borrow() {
            return Ok(None);
        }
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let now = now_ms();
        let lease_until = now + state.config.lease.as_millis() as i64;
        let jobs = state
            .store
            .claim_jobs(ep, worker, max, now, lease_until)
            .map_err(store_err)?;
        if !jobs.is_empty() {
            state.provisioner.assigned(ep, worker);
            return Ok(Some(jobs));
        }
        tokio::select! {
            _ = &mut notified => {}
            _ = tokio::time::sleep_until(deadline) => return Ok(None),
            _ = shutdown.wait_for(|s| *s) => return Ok(None),
        }
    }
}

async fn job_take(
    State(state): State<AppState>,
    Path((ep, worker)): Path<(String, String)>,
    headers: HeaderMap,
) -> Reply {
    let ep = authorized(&state, &headers, &ep, true)?;
    state.provisioner.seen(&ep.id, &worker, true);
    match take(&state, &ep.id, &worker, 1).await? {
        Some(jobs) => ok(worker_job(&jobs[0])),
        None => Ok(StatusCode::NO_CONTENT.into_response()),
    }
}

async fn job_take_batch(
    State(state): State<AppState>,
    Path((ep, worker)): Path<(String, String)>,
    Query(q): Query<TakeQuery>,
    headers: HeaderMap,
) -> Reply {
    let ep = authorized(&state, &headers, &ep, true)?;
    state.provisioner.seen(&ep.id, &worker, true);
    let max = q.batch_size.unwrap_or(1).clamp(1, 100);
    match take(&state, &ep.id, &worker, max).await? {
        Some(jobs) => ok(Value::Array(jobs.iter().map(worker_job).collect())),
        None => Ok(StatusCode::NO_CONTENT.into_response()),
    }
}

/// Parses a result body: JSON text, whatever the content type says (reference §3.3).
fn parse_result(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        err(
            StatusCode::BAD_REQUEST,
            format!("result body is not JSON: {e}"),
        )
    })
}

fn outcome(body: &Value) -> JobOutcome {
    let output = body.get("output").cloned();
    if body.get("status").and_then(Value::as_str) == Some("IN_PROGRESS") {
        return JobOutcome::Progress(output.unwrap_or(Value::Null));
    }
    match body.get("error") {
        Some(Value::Null) | Some(Value::Bool(false)) | None => JobOutcome::Completed(output),
        Some(Value::String(s)) if s.is_empty() => JobOutcome::Completed(output),
        Some(Value::String(s)) => JobOutcome::Failed {
            error: s.clone(),
            output,
        },
        Some(other) => JobOutcome::Failed {
            error: other.to_string(),
            output,
        },
    }
}

async fn job_done(
    State(state): State<AppState>,
    Path((ep, worker, job)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Reply {
    let ep = authorized(&state, &headers, &ep, true)?;
    let body = parse_result(&body)?;
    state.provisioner.seen(&ep.id, &worker, true);
    if body.get("stopPod").and_then(Value::as_bool) == Some(true) {
        state.provisioner.refresh_requested(&worker);
    }
    let outcome = outcome(&body);
    let updated = state
        .store
        .finish_job(&job, &worker, &outcome, now_ms())
        .map_err(store_err)?;
    match &updated {
        Some(j) if j.status.is_terminal() => {
            state.provisioner.job_done(&ep.id, &worker);
            job_finished(&state, j);
        }
        Some(_) => {}
        None => tracing::info!(
            job,
            worker,
            "result for a job no longer running on this worker ignored"
        ),
    }
    ok(json!({ "accepted": updated.is_some() }))
}

async fn job_stream(
    State(state): State<AppState>,
    Path((ep, worker, job)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Reply {
    let ep = authorized(&state, &headers, &ep, true)?;
    let body = parse_result(&body)?;
    let chunk = body.get("output").cloned().unwrap_or(Value::Null);
    let pushed = state
        .store
        .push_chunk(&job, &worker, &chunk, state.config.max_stream_chunks)
        .map_err(store_err)?;
    let _ = ep;
    match pushed {
        ChunkPush::Stored => ok(json!({ "accepted": true })),
        ChunkPush::NotRunning => ok(json!({ "accepted": false })),
        ChunkPush::Full => Err(err(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "job `{job}` has streamed {} chunks, the most one job may; return the rest in \
                 its output",
                state.config.max_stream_chunks
            ),
        )),
    }
}

async fn job_stop(
    State(state): State<AppState>,
    Path((ep, worker)): Path<(String, String)>,
    headers: HeaderMap,
) -> Reply {
    let _ep = authorized(&state, &headers, &ep, true)?;
    let deadline = tokio::time::Instant::now() + state.config.take_hold;
    let mut shutdown = state.signals.shutdown();
    loop {
        let notified = state.signals.stop_notify().notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let stops = state.signals.take_stops(&worker);
        if !stops.is_empty() {
            return ok(json!({ "jobsToStop": stops }));
        }
        if *shutdown.borrow() {
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
        tokio::select! {
            _ = &mut notified => {}
            _ = tokio::time::sleep_until(deadline) => return Ok(StatusCode::NO_CONTENT.into_response()),
            _ = shutdown.wait_for(|s| *s) => return Ok(StatusCode::NO_CONTENT.into_response()),
        }
    }
}

#[derive(Deserialize)]
struct PingQuery {
    job_id: Option<String>,
    status: Option<String>,
}

async fn ping(
    State(state): State<AppState>,
    Path((ep, worker)): Path<(String, String)>,
    Query(q): Query<PingQuery>,
    headers: HeaderMap,
) -> Reply {
    let ep = authorized(&state, &headers, &ep, true)?;
    let healthy = q.status.as_deref() != Some("unhealthy");
    state.provisioner.seen(&ep.id, &worker, healthy);
    let ids: Vec<String> = q
        .job_id
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    if !ids.is_empty() {
        let until = now_ms() + state.config.lease.as_millis() as i64;
        state
            .store
            .extend_leases(&worker, &ids, until)
            .map_err(store_err)?;
    }
    ok(json!({}))
}

// ---------------------------------------------------------------------------------------
// Load-balanced endpoints

async fn lb_root(
    state: State<AppState>,
    Path(ep): Path<String>,
    method: Method,
    headers: HeaderMap,
    query: axum::extract::RawQuery,
    body: Body,
) -> Response {
    lb_forward(state.0, ep, String::new(), method, headers, query.0, body).await
}

async fn lb_proxy(
    state: State<AppState>,
    Path((ep, path)): Path<(String, String)>,
    method: Method,
    headers: HeaderMap,
    query: axum::extract::RawQuery,
    body: Body,
) -> Response {
    lb_forward(state.0, ep, path, method, headers, query.0, body).await
}

/// `FLASH_DISABLE_RP_AUTH=true` in the endpoint's template env opens it without a key (§4).
pub(crate) fn lb_auth_disabled(state: &AppState, ep: &Endpoint) -> bool {
    ep.template_id
        .as_deref()
        .and_then(|t| state.store.get_template(t).ok().flatten())
        .is_some_and(|t| {
            t.env_value("FLASH_DISABLE_RP_AUTH")
                .is_some_and(|v| v.eq_ignore_ascii_case("true"))
        })
}

const HOP_HEADERS: [&str; 6] = [
    "host",
    "connection",
    "transfer-encoding",
    "keep-alive",
    "upgrade",
    "content-length",
];

async fn lb_forward(
    state: AppState,
    ep_id: String,
    path: String,
    method: Method,
    headers: HeaderMap,
    query: Option<String>,
    body: Body,
) -> Response {
    let ep = match endpoint(&state, &ep_id) {
        Ok(ep) => ep,
        Err(resp) => {
            return if state.auth.is_user(&headers) {
                resp.into_response()
            } else {
                err(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized: invalid or missing API key",
                )
                .into_response()
            };
        }
    };
    let open = lb_auth_disabled(&state, &ep);
    if !open && !state.auth.may_call_or_worker(&headers, &ep) {
        return err(
            StatusCode::UNAUTHORIZED,
            "unauthorized: invalid or missing API key",
        )
        .into_response();
    }
    if !ep.is_lb() {
        return err(
            StatusCode::BAD_REQUEST,
            format!("endpoint `{ep_id}` is queue-based: use /v2/{ep_id}/run"),
        )
        .into_response();
    }
    let Some(lease) = state
        .provisioner
        .acquire_lb(&ep.id, state.config.lb_wait)
        .await
    else {
        return err(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "no worker of endpoint `{ep_id}` became ready within {:?}; see its worker logs",
                state.config.lb_wait
            ),
        )
        .into_response();
    };
    let mut url = format!("http://{}/{}", lease.addr, path);
    if let Some(q) = query {
        url.push('?');
        url.push_str(&q);
    }
    // The body streams to the worker as it arrives; `crate::admission` bounds it. When the
    // caller's body goes over the limit mid-stream, the answer is 413, not the failed send.
    let too_large = Arc::new(AtomicBool::new(false));
    let flag = too_large.clone();
    let upload = body.into_data_stream().map(move |chunk| {
        if let Err(e) = &chunk
            && crate::admission::is_length_limit(e)
        {
            flag.store(true, Ordering::Relaxed);
        }
        chunk
    });
    let mut req = state
        .http
        .request(method, &url)
        .timeout(lb_timeout(&ep))
        .body(reqwest::Body::wrap_stream(upload));
    for (name, value) in &headers {
        if !HOP_HEADERS.contains(&name.as_str()) && name != axum::http::header::AUTHORIZATION {
            req = req.header(name, value);
        }
    }
    // The caller's credential was checked above; a worker that enforces auth (no
    // `FLASH_DISABLE_RP_AUTH`) checks the `RUNPOD_API_KEY` it holds, so that is what it is
    // handed: never the user key, which no worker holds (crate::auth).
    if !open
        && let Some(key) = state.auth.worker_api_key(
            ep.template_id
                .as_deref()
                .and_then(|t| state.store.get_template(t).ok().flatten())
                .as_ref(),
            &ep,
        )
    {
        req = req.bearer_auth(key);
    }
    // A length the caller declared travels with the streamed body (workers that cannot read
    // chunked bodies get one); the limit layer has already refused one over the limit.
    if let Some(length) = headers.get(axum::http::header::CONTENT_LENGTH) {
        req = req.header(axum::http::header::CONTENT_LENGTH, length);
    }
    match req.send().await {
        Ok(resp) => {
            let status = resp.status();
            let mut out_headers = HeaderMap::new();
            for (name, value) in resp.headers() {
                if !HOP_HEADERS.contains(&name.as_str())
                    && let Ok(n) = HeaderName::from_bytes(name.as_str().as_bytes())
                {
                    out_headers.append(n, value.clone());
                }
            }
            // The answer streams back as the worker sends it, and the worker stays leased
            // until it is done. A worker that breaks off mid-body makes this response end
            // in an error too (the caller sees a cut connection, never a short 200).
            let download = resp.bytes_stream().map(move |chunk| {
                let _held = &lease;
                chunk
            });
            (status, out_headers, Body::from_stream(download)).into_response()
        }
        Err(_) if too_large.load(Ordering::Relaxed) => err(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the request body is larger than {} bytes, the most a load-balanced endpoint \
                 accepts",
                state.config.max_lb_body
            ),
        )
        .into_response(),
        Err(e) if e.is_timeout() => err(
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "worker of endpoint `{ep_id}` did not answer within {:?}",
                lb_timeout(&ep)
            ),
        )
        .into_response(),
        Err(e) => err(
            StatusCode::BAD_GATEWAY,
            format!("worker of endpoint `{ep_id}` failed: {e}"),
        )
        .into_response(),
    }
}

/// The whole of one proxied request, answer included: the endpoint's execution timeout,
/// else ten minutes.
fn lb_timeout(ep: &Endpoint) -> Duration {
    match u64::try_from(ep.execution_timeout_ms) {
        Ok(ms) if ms > 0 => Duration::from_millis(ms),
        _ => Duration::from_secs(600),
    }
}

// ---------------------------------------------------------------------------------------
// Maintenance

/// Periodic queue upkeep: expired leases back to the queue, execution timeouts.
pub async fn maintenance(state: AppState) {
    let mut shutdown = state.signals.shutdown();
    let mut tick = tokio::time::interval(state.config.maintenance_interval);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        let now = now_ms();
        match state.store.requeue_expired(now, state.config.max_retries) {
            Ok(r) => {
                // A worker that missed its heartbeats may only be slow: should it come back,
                // its stop poll tells it to drop the job now running elsewhere.
                for (worker, job) in &r.lost {
                    state.signals.request_stop(worker, job);
                }
                if !r.requeued.is_empty() {
                    tracing::warn!(jobs = ?r.requeued, "leases expired (missed heartbeats): jobs requeued");
                    state.signals.wake_all();
                    state.provisioner.kick();
                }
                for job in &r.failed {
                    tracing::warn!(job = %job.id, "job out of retries: FAILED");
                    job_finished(&state, job);
                }
            }
            Err(e) => tracing::error!(error = %e, "requeueing expired leases"),
        }
        // Finished jobs are kept for the retention window, then deleted with their stream
        // chunks, a bounded batch per tick.
        let cutoff =
            now - i64::try_from(state.config.job_retention.as_millis()).unwrap_or(i64::MAX);
        match state.store.delete_finished_before(cutoff, 10_000) {
            Ok(0) => {}
            Ok(n) => tracing::debug!(jobs = n, "finished jobs past the retention window deleted"),
            Err(e) => tracing::error!(error = %e, "deleting finished jobs"),
        }
        match state.store.time_out_jobs(now) {
            Ok(jobs) => {
                for job in &jobs {
                    tracing::warn!(job = %job.id, "execution timeout: TIMED_OUT");
                    if let Some(worker) = &job.worker_id {
                        state.signals.request_stop(worker, &job.id);
                        state.provisioner.job_done(&job.endpoint_id, worker);
                    }
                    job_finished(&state, job);
                }
            }
            Err(e) => tracing::error!(error = %e, "timing out jobs"),
        }
    }
}
