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
//!   makes the SDK spin), woken by [`Signals`](crate::signals::Signals) when a job arrives.
//!
//! Load-balanced endpoints have no queue: `/lb/{endpoint}/{path}` forwards the request to a
//! ready worker's HTTP listener, starting one first if none runs.
//!
//! One module per part, each with its routes:
//!
//! - `queue`: the client's queue API (`run`, `runsync`, `status`, `stream`, `cancel`,
//!   `health`, `metrics`, `purge-queue`);
//! - `worker`: the worker job protocol (`job-take`, `job-take-batch`, `job-done`,
//!   `job-stream`, `job-stop`, `ping`);
//! - `lb`: the load-balanced proxy, streaming both ways;
//! - `maintenance`: the periodic upkeep of the queue (expired leases, execution timeouts,
//!   retention).
//!
//! What they share lives here: the answers' shape, a job's `/status` body and the
//! bookkeeping once a job is final ([`job_finished`]).

mod lb;
mod maintenance;
mod queue;
mod worker;

use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::state::AppState;
use crate::store::Job;
use crate::util::{ApiError, now_ms};

pub(crate) use lb::lb_auth_disabled;
pub use maintenance::maintenance;

/// The queue API and the worker protocol (`/v2/{endpoint}/…`).
pub fn queue_router() -> Router<AppState> {
    queue::router().merge(worker::router())
}

/// The load-balanced proxy (`/lb/{endpoint}/…`).
pub fn lb_router() -> Router<AppState> {
    lb::router()
}

type Reply = Result<Response, ApiError>;

fn err(status: StatusCode, message: impl Into<String>) -> ApiError {
    ApiError::new(status, message)
}

fn ok(body: Value) -> Reply {
    Ok((StatusCode::OK, axum::Json(body)).into_response())
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

/// Bookkeeping once a job reached a final state: count it, wake `/runsync` waiters, fire its
/// webhook.
pub fn job_finished(state: &AppState, job: &Job) {
    state.metrics.job_finished(job);
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
