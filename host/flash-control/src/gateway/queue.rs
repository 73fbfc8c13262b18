//! The queue API (reference §2): clients submit jobs to a queue-based endpoint and follow
//! them (`run`, `runsync`, `status`, `stream`, `cancel`), and look at the endpoint
//! (`health`, `metrics`) or empty its queue (`purge-queue`).

use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::{Reply, err, job_finished, ok, status_body, store_err};
use crate::admission::{Caller, CallerOrWorker};
use crate::state::AppState;
use crate::store::{Endpoint, Job, JobStatus};
use crate::util::{ApiError, now_ms};

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/v2/{ep}/run", post(run))
        .route("/v2/{ep}/runsync", post(runsync))
        .route("/v2/{ep}/status/{job}", get(status).post(status))
        .route("/v2/{ep}/stream/{job}", get(stream).post(stream))
        .route("/v2/{ep}/cancel/{job}", post(cancel))
        .route("/v2/{ep}/health", get(health))
        .route("/v2/{ep}/metrics", get(metrics))
        .route("/v2/{ep}/purge-queue", post(purge_queue))
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

/// What the gateway reads of a submitted body. The body itself is stored as sent: a payload
/// of megabytes is checked, never built into a value and written out again.
#[derive(Deserialize)]
struct Fields<'a> {
    #[serde(borrow)]
    input: Option<&'a RawValue>,
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    webhook: Option<Value>,
    policy: Option<Value>,
}

/// A submitted job body, checked: RunPod's rules for `/run` and `/runsync`.
#[derive(Debug)]
struct Submission {
    /// The body as sent (without a top-level `id`, which would be the job's).
    request: Box<RawValue>,
    webhook: Option<String>,
    /// `policy.executionTimeout`, in ms.
    execution_timeout_ms: Option<i64>,
}

impl Submission {
    fn parse(body: &[u8]) -> Result<Self, ApiError> {
        let bad = |message: String| err(StatusCode::BAD_REQUEST, message);
        let request: Box<RawValue> = serde_json::from_slice(body)
            .map_err(|e| bad(format!("request body is not JSON: {e}")))?;
        if !request.get().starts_with('{') {
            return Err(bad(
                "request body must be a JSON object with an `input` key".into(),
            ));
        }
        let fields: Fields =
            serde_json::from_str(request.get()).map_err(|e| bad(format!("request body: {e}")))?;
        if fields.input.is_none() {
            return Err(bad(
                "request body needs an `input` key (an empty object is fine)".into(),
            ));
        }
        let execution_timeout_ms = fields
            .policy
            .as_ref()
            .and_then(|p| p.get("executionTimeout"))
            .and_then(Value::as_i64);
        let webhook = fields
            .webhook
            .as_ref()
            .and_then(Value::as_str)
            .map(str::to_string);
        // A worker gets the job's own id as `id`: the body's is dropped (it always was).
        let request = match fields.id {
            Some(_) => without_id(&request)?,
            None => request,
        };
        Ok(Self {
            request,
            webhook,
            execution_timeout_ms,
        })
    }
}

async fn submit(state: &AppState, ep: &Endpoint, body: Bytes) -> Result<Job, ApiError> {
    queue_endpoint(ep)?;
    let submission = Submission::parse(&body)?;
    let timeout_ms = submission
        .execution_timeout_ms
        .unwrap_or(ep.execution_timeout_ms)
        .max(0);
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
    let job = Job {
        // RunPod job ids look like `<uuid>-<region>`; keep the shape for log-reading tools.
        id: format!("{}-l1", uuid::Uuid::new_v4()),
        endpoint_id: ep.id.clone(),
        webhook: submission.webhook,
        request: submission.request,
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
    state.metrics.job_submitted(&ep.id);
    state.signals.job_added(&ep.id);
    // Scaling from zero should not wait for the next tick; otherwise the tick suffices and
    // a reconcile pass per request would cost more than the request. An endpoint that may
    // run no worker (`workersMax` and `workersMin` 0: its workers come from elsewhere) has
    // nothing to scale.
    if ep.workers_max.max(ep.workers_min) > 0 && state.supervisor.worker_counts(&ep.id).ready == 0 {
        state.supervisor.kick();
    }
    Ok(job)
}

/// The request without its top-level `id` key.
fn without_id(request: &RawValue) -> Result<Box<RawValue>, ApiError> {
    let mut object: serde_json::Map<String, Value> = serde_json::from_str(request.get())
        .map_err(|e| err(StatusCode::BAD_REQUEST, format!("request body: {e}")))?;
    object.shift_remove("id");
    serde_json::value::to_raw_value(&object).map_err(store_err)
}

async fn run(State(state): State<AppState>, Caller(ep): Caller, body: Bytes) -> Reply {
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
    Caller(ep): Caller,
    Query(q): Query<WaitQuery>,
    body: Bytes,
) -> Reply {
    let job = submit(&state, &ep, body).await?;
    let wait = q
        .wait
        .map(Duration::from_millis)
        .unwrap_or(state.config.runsync_wait)
        .min(Duration::from_secs(300));
    let deadline = tokio::time::Instant::now() + wait;
    let mut shutdown = state.signals.shutdown();
    let notify = state.signals.job_waiter(&job.id);
    // Polls the status alone; the job's output (possibly megabytes) is read once, for the
    // answer, and its input not at all.
    let answer = |state: &AppState| match state.store.job_result(&job.id) {
        Ok(current) => ok(status_body(current.as_ref().unwrap_or(&job))),
        Err(e) => Err(store_err(e)),
    };
    let result = loop {
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        match state.store.job_status(&job.id) {
            Ok(Some(status)) if status.is_terminal() => break answer(&state),
            Ok(_) => {}
            Err(e) => break Err(store_err(e)),
        }
        tokio::select! {
            _ = &mut notified => {}
            // Transitions that do not notify (purge, retries exhausted) are seen on this poll.
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = tokio::time::sleep_until(deadline) => break answer(&state),
            _ = shutdown.wait_for(|s| *s) => break answer(&state),
        }
    };
    state.signals.forget_job(&job.id);
    result
}

async fn status(
    State(state): State<AppState>,
    CallerOrWorker(ep): CallerOrWorker,
    Path((_, job)): Path<(String, String)>,
) -> Reply {
    match state.store.job_result(&job).map_err(store_err)? {
        Some(j) if j.endpoint_id == ep.id => ok(status_body(&j)),
        _ => Err(err(
            StatusCode::NOT_FOUND,
            format!("job `{job}` not found on endpoint `{}`", ep.id),
        )),
    }
}

async fn stream(
    State(state): State<AppState>,
    CallerOrWorker(ep): CallerOrWorker,
    Path((_, job)): Path<(String, String)>,
) -> Reply {
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
    Caller(ep): Caller,
    Path((_, job)): Path<(String, String)>,
) -> Reply {
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

async fn health(State(state): State<AppState>, CallerOrWorker(ep): CallerOrWorker) -> Reply {
    let c = state.store.job_counts(&ep.id).map_err(store_err)?;
    let w = state.supervisor.worker_counts(&ep.id);
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

async fn metrics(State(state): State<AppState>, CallerOrWorker(ep): CallerOrWorker) -> Reply {
    let w = state.supervisor.worker_counts(&ep.id);
    ok(json!({
        "readyWorkers": state.supervisor.ready_workers(&ep.id),
        "workers": {
            "ready": w.ready, "running": w.running, "idle": w.idle,
            "initializing": w.initializing, "throttled": w.throttled, "unhealthy": w.unhealthy,
        },
    }))
}

async fn purge_queue(State(state): State<AppState>, Caller(ep): Caller) -> Reply {
    let removed = state
        .store
        .purge_queue(&ep.id, now_ms())
        .map_err(store_err)?;
    if removed > 0 {
        state.metrics.jobs_purged(&ep.id, removed);
        state.signals.job_finished();
    }
    ok(json!({ "removed": removed, "status": "completed" }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(body: &str) -> String {
        let refusal = Submission::parse(body.as_bytes()).expect_err("refused");
        assert_eq!(refusal.status, StatusCode::BAD_REQUEST);
        refusal.message
    }

    #[test]
    fn a_body_is_kept_as_sent_around_its_whitespace() {
        let s = Submission::parse(
            b" \n{ \"input\" : {\"b\": 1, \"a\": [1.50, \"\\u00e9\"]}, \"webhook\": \"http://h/w\",
               \"policy\": {\"executionTimeout\": 5000} }\n ",
        )
        .expect("accepted");
        assert_eq!(
            s.request.get(),
            "{ \"input\" : {\"b\": 1, \"a\": [1.50, \"\\u00e9\"]}, \"webhook\": \"http://h/w\",\n               \"policy\": {\"executionTimeout\": 5000} }"
        );
        assert_eq!(s.webhook.as_deref(), Some("http://h/w"));
        assert_eq!(s.execution_timeout_ms, Some(5000));
    }

    #[test]
    fn a_bodys_own_id_is_dropped_and_the_rest_kept_in_order() {
        let s = Submission::parse(br#"{"input":{"b":1,"a":2},"id":"mine","webhook":7}"#)
            .expect("accepted");
        assert_eq!(s.request.get(), r#"{"input":{"b":1,"a":2},"webhook":7}"#);
        assert_eq!(s.webhook, None, "a webhook that is not a string is ignored");
    }

    #[test]
    fn bodies_that_are_not_jobs_are_refused_with_what_to_send() {
        assert!(refused("{\"input\": ").contains("request body is not JSON"));
        assert!(refused("[1]").contains("must be a JSON object with an `input` key"));
        assert!(refused("{\"inputs\": {}}").contains("needs an `input` key"));
        assert!(
            refused(r#"{"input": 1, "input": 2}"#).contains("duplicate field `input`"),
            "{}",
            refused(r#"{"input": 1, "input": 2}"#)
        );
    }
}
