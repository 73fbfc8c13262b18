//! The worker job protocol of runpod-python's worker SDK (reference §3): workers long-poll
//! for jobs (`job-take`, `job-take-batch`), post results and stream chunks (`job-done`,
//! `job-stream`), heartbeat their jobs' leases (`ping`) and learn which jobs to stop
//! (`job-stop`).

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Reply, err, job_finished, ok, store_err};
use crate::admission::CallerOrWorker;
use crate::signals::Signals;
use crate::state::AppState;
use crate::store::{ChunkPush, Job, JobOutcome};
use crate::util::{ApiError, now_ms};

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/v2/{ep}/job-take/{worker}", get(job_take))
        .route("/v2/{ep}/job-take-batch/{worker}", get(job_take_batch))
        .route("/v2/{ep}/job-done/{worker}/{job}", post(job_done))
        .route("/v2/{ep}/job-stream/{worker}/{job}", post(job_stream))
        .route("/v2/{ep}/job-stop/{worker}", get(job_stop))
        .route("/v2/{ep}/ping/{worker}", get(ping))
}

#[derive(Deserialize)]
struct TakeQuery {
    batch_size: Option<usize>,
}

/// A job as its worker receives it: the request with the job's `id` added, spliced into the
/// request's text (a payload of megabytes is copied once, never parsed).
fn worker_job(job: &Job) -> String {
    let request = job.request.get().trim();
    // A job id is ours (`<uuid>-l1`), but quote it properly all the same.
    let id = Value::String(job.id.clone()).to_string();
    match request.strip_prefix('{').and_then(|r| r.strip_suffix('}')) {
        Some(fields) if fields.trim().is_empty() => format!("{{\"id\":{id}}}"),
        Some(fields) => format!("{{{fields},\"id\":{id}}}"),
        // Not an object: never so for a body `/run` accepted (every flash checked that); a
        // store written by other means still gets a job a worker can read.
        None => format!("{{\"input\":{request},\"id\":{id}}}"),
    }
}

/// A JSON answer whose body is already text.
fn json_response(body: String) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
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
    // Whether this taker was woken for a job (one taker is woken per added job).
    let mut woken = false;
    loop {
        if state.supervisor.is_draining(worker) || *shutdown.borrow() {
            if woken {
                Signals::pass_on(&notify);
            }
            return Ok(None);
        }
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let now = now_ms();
        let lease_until = now + state.config.lease.as_millis() as i64;
        let jobs = match state.store.claim_jobs(ep, worker, max, now, lease_until) {
            Ok(jobs) => jobs,
            Err(e) => {
                if woken {
                    Signals::pass_on(&notify);
                }
                return Err(store_err(e));
            }
        };
        if !jobs.is_empty() {
            state.supervisor.assigned(ep, worker);
            return Ok(Some(jobs));
        }
        tokio::select! {
            _ = &mut notified => woken = true,
            _ = tokio::time::sleep_until(deadline) => return Ok(None),
            _ = shutdown.wait_for(|s| *s) => return Ok(None),
        }
    }
}

async fn job_take(
    State(state): State<AppState>,
    CallerOrWorker(ep): CallerOrWorker,
    Path((_, worker)): Path<(String, String)>,
) -> Reply {
    state.supervisor.seen(&ep.id, &worker, true);
    match take(&state, &ep.id, &worker, 1).await? {
        Some(jobs) => Ok(json_response(worker_job(&jobs[0]))),
        None => Ok(StatusCode::NO_CONTENT.into_response()),
    }
}

async fn job_take_batch(
    State(state): State<AppState>,
    CallerOrWorker(ep): CallerOrWorker,
    Path((_, worker)): Path<(String, String)>,
    Query(q): Query<TakeQuery>,
) -> Reply {
    state.supervisor.seen(&ep.id, &worker, true);
    let max = q.batch_size.unwrap_or(1).clamp(1, 100);
    match take(&state, &ep.id, &worker, max).await? {
        Some(jobs) => Ok(json_response(format!(
            "[{}]",
            jobs.iter().map(worker_job).collect::<Vec<_>>().join(",")
        ))),
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

/// A result body as a job outcome; its output (possibly megabytes) moves, not copied.
fn outcome(mut body: Value) -> JobOutcome {
    let output = body.as_object_mut().and_then(|o| o.shift_remove("output"));
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
    CallerOrWorker(ep): CallerOrWorker,
    Path((_, worker, job)): Path<(String, String, String)>,
    body: Bytes,
) -> Reply {
    let body = parse_result(&body)?;
    state.supervisor.seen(&ep.id, &worker, true);
    if body.get("stopPod").and_then(Value::as_bool) == Some(true) {
        state.supervisor.refresh_requested(&worker);
    }
    let outcome = outcome(body);
    let updated = state
        .store
        .finish_job(&job, &worker, &outcome, now_ms())
        .map_err(store_err)?;
    match &updated {
        Some(j) if j.status.is_terminal() => {
            state.supervisor.job_done(&ep.id, &worker);
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
    CallerOrWorker(_ep): CallerOrWorker,
    Path((_, worker, job)): Path<(String, String, String)>,
    body: Bytes,
) -> Reply {
    let body = parse_result(&body)?;
    let chunk = body.get("output").cloned().unwrap_or(Value::Null);
    let pushed = state
        .store
        .push_chunk(&job, &worker, &chunk, state.config.max_stream_chunks)
        .map_err(store_err)?;
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
    CallerOrWorker(_ep): CallerOrWorker,
    Path((_, worker)): Path<(String, String)>,
) -> Reply {
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
    CallerOrWorker(ep): CallerOrWorker,
    Path((_, worker)): Path<(String, String)>,
    Query(q): Query<PingQuery>,
) -> Reply {
    let healthy = q.status.as_deref() != Some("unhealthy");
    state.supervisor.seen(&ep.id, &worker, healthy);
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

#[cfg(test)]
mod tests {
    use serde_json::value::RawValue;

    use super::*;
    use crate::store::JobStatus;

    fn job(request: &str) -> Job {
        Job {
            id: "j-1".into(),
            endpoint_id: "ep".into(),
            request: RawValue::from_string(request.into()).expect("JSON"),
            webhook: None,
            status: JobStatus::InProgress,
            worker_id: Some("w".into()),
            output: None,
            error: None,
            retries: 0,
            timeout_ms: 0,
            created_at: 0,
            started_at: None,
            completed_at: None,
            lease_expires_at: None,
        }
    }

    fn parsed(text: &str) -> Value {
        serde_json::from_str(text).expect("a worker gets JSON")
    }

    #[test]
    fn a_worker_gets_the_request_as_sent_with_the_jobs_id() {
        let sent = r#"{"input":{"text":"a \"quoted\" }"},"webhook":"http://x/y"}"#;
        assert_eq!(
            parsed(&worker_job(&job(sent))),
            json!({ "input": { "text": "a \"quoted\" }" }, "webhook": "http://x/y", "id": "j-1" })
        );
        assert_eq!(parsed(&worker_job(&job(" { } "))), json!({ "id": "j-1" }));
        // A request that is not an object (no body `/run` accepts).
        assert_eq!(
            parsed(&worker_job(&job("[1]"))),
            json!({ "input": [1], "id": "j-1" })
        );
    }

    #[test]
    fn a_result_is_completed_unless_it_carries_an_error() {
        let done = outcome(json!({ "output": { "n": 1 } }));
        assert_eq!(done, JobOutcome::Completed(Some(json!({ "n": 1 }))));
        assert_eq!(
            outcome(json!({ "output": 1, "error": "" })),
            JobOutcome::Completed(Some(json!(1)))
        );
        assert_eq!(
            outcome(json!({ "error": "boom", "output": 2 })),
            JobOutcome::Failed {
                error: "boom".into(),
                output: Some(json!(2))
            }
        );
        assert_eq!(
            outcome(json!({ "error": { "kind": "x" } })),
            JobOutcome::Failed {
                error: r#"{"kind":"x"}"#.into(),
                output: None
            }
        );
        assert_eq!(
            outcome(json!({ "status": "IN_PROGRESS", "output": "half" })),
            JobOutcome::Progress(json!("half"))
        );
    }
}
