//! What `flash server` counts: Prometheus text at `GET /metrics`, and the recent window of
//! outcomes that the console and `flash deploy info` read.
//!
//! Everything is recorded where it happens (a job submitted or finished, a load-balanced
//! request answered, a worker started or drained); what is a state rather than an event
//! (queue depth, workers by state) is read from the store and the supervisor when the
//! metrics are scraped, so it can never drift from them.
//!
//! | metric | labels | what |
//! |---|---|---|
//! | `flash_server_endpoint_info` | `endpoint`, `name`, `type`, `environment` | 1 per endpoint: joins ids to names (`* on(endpoint) group_left(name)`) |
//! | `flash_server_jobs_submitted_total` | `endpoint` | jobs accepted by `/run` and `/runsync` |
//! | `flash_server_jobs_finished_total` | `endpoint`, `status` | jobs that reached a final status (`COMPLETED`, `FAILED`, `CANCELLED`, `TIMED_OUT`) |
//! | `flash_server_job_queue_seconds` | `endpoint` | histogram: from submission until a worker took the job |
//! | `flash_server_job_latency_seconds` | `endpoint` | histogram: from submission until the final status |
//! | `flash_server_queue_depth` | `endpoint` | jobs waiting now |
//! | `flash_server_queue_oldest_seconds` | `endpoint` | age of the oldest waiting job (0: none) |
//! | `flash_server_jobs_in_progress` | `endpoint` | jobs running now |
//! | `flash_server_lb_requests_total` | `endpoint`, `code` | load-balanced requests, by the HTTP status of the answer |
//! | `flash_server_lb_request_seconds` | `endpoint` | histogram: until the answer's head came back |
//! | `flash_server_workers` | `endpoint`, `state` | worker processes by state (`/health`'s states) |
//! | `flash_server_scale_events_total` | `endpoint`, `direction` | workers started (`up`) and drained (`down`) by the scaler |
//!
//! Labels carry endpoint ids, which stay the same across renames; the names come from the
//! info metric. `/metrics` needs the user key.
//!
//! The recent window keeps the last [`RECENT_OUTCOMES`] outcomes of each endpoint in memory
//! (a restart forgets them; the job store keeps jobs themselves for its retention):
//! throughput and latency over time for the console's chart, and percentiles and the last
//! error for `flash deploy info`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use serde::Serialize;
use serde_json::json;

use crate::state::AppState;
use crate::store::{Job, JobStatus, Store};
use crate::supervisor::Supervisor;
use crate::util::now_ms;

/// Where the metrics are served.
pub const METRICS_PATH: &str = "/metrics";

/// Where each endpoint's recent figures are served as JSON (`flash deploy info`).
pub const STATS_PATH: &str = "/v1/stats";

/// The span `GET /v1/stats` summarises unless asked for another.
pub const DEFAULT_STATS_WINDOW: Duration = Duration::from_secs(5 * 60);

/// The media type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Outcomes kept per endpoint for the recent window.
pub const RECENT_OUTCOMES: usize = 4096;

/// Longest error message kept as an endpoint's last error.
const MAX_ERROR_CHARS: usize = 500;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InfoLabels {
    endpoint: String,
    name: String,
    r#type: String,
    environment: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    endpoint: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    endpoint: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    endpoint: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabels {
    endpoint: String,
    direction: String,
}

type Histograms = Family<EndpointLabels, Histogram, fn() -> Histogram>;

/// 1 ms to ~9 h, quadrupling: from a load-balanced hit to a long queue wait.
fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 4.0, 13))
}

/// Which way the scaler moved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScaleDirection {
    Up,
    Down,
}

/// One finished job or answered request, as the recent window keeps it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Outcome {
    /// The job id, or the load-balanced request's `x-request-id`.
    pub id: String,
    /// A job's final status, or a request's HTTP status code.
    pub status: String,
    pub ok: bool,
    pub finished_at_ms: i64,
    /// From submission to the final status (jobs) or to the answer's head (requests).
    pub duration_ms: u64,
    /// The failure's message, cut to a readable length.
    pub error: Option<String>,
}

/// What an endpoint did in a span of time.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Summary {
    pub count: usize,
    pub failed: usize,
    pub p50_ms: Option<u64>,
    pub p99_ms: Option<u64>,
    /// The last failure kept in the window, however old.
    pub last_error: Option<Outcome>,
}

/// One step of a series: outcomes that finished in `[t_ms, t_ms + step)`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Point {
    pub t_ms: i64,
    pub count: usize,
    pub failed: usize,
    /// Median latency of the step's outcomes.
    pub p50_ms: Option<u64>,
}

#[derive(Default)]
struct Recent {
    outcomes: VecDeque<Outcome>,
    last_error: Option<Outcome>,
}

/// The metrics of one server. See the module docs.
pub struct ServerMetrics {
    registry: Registry,
    endpoint_info: Family<InfoLabels, Gauge>,
    jobs_submitted: Family<EndpointLabels, Counter>,
    jobs_finished: Family<StatusLabels, Counter>,
    job_queue_seconds: Histograms,
    job_latency_seconds: Histograms,
    queue_depth: Family<EndpointLabels, Gauge>,
    queue_oldest_seconds: Family<EndpointLabels, Gauge>,
    jobs_in_progress: Family<EndpointLabels, Gauge>,
    lb_requests: Family<CodeLabels, Counter>,
    lb_request_seconds: Histograms,
    workers: Family<StateLabels, Gauge>,
    scale_events: Family<DirectionLabels, Counter>,
    recent: Mutex<HashMap<String, Recent>>,
    /// One scrape at a time: each sets the state gauges, then encodes them.
    scrape: tokio::sync::Mutex<()>,
}

impl Default for ServerMetrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        macro_rules! register {
            ($name:literal, $help:literal, $metric:expr) => {{
                let metric = $metric;
                registry.register($name, $help, metric.clone());
                metric
            }};
        }
        Self {
            endpoint_info: register!(
                "flash_server_endpoint_info",
                "1 per endpoint, with its name, type (QB or LB) and environment",
                Family::default()
            ),
            jobs_submitted: register!(
                "flash_server_jobs_submitted",
                "Jobs accepted by /run and /runsync",
                Family::default()
            ),
            jobs_finished: register!(
                "flash_server_jobs_finished",
                "Jobs that reached a final status",
                Family::default()
            ),
            job_queue_seconds: register!(
                "flash_server_job_queue_seconds",
                "Time from submission until a worker took the job",
                Histograms::new_with_constructor(duration_histogram)
            ),
            job_latency_seconds: register!(
                "flash_server_job_latency_seconds",
                "Time from submission until the job's final status",
                Histograms::new_with_constructor(duration_histogram)
            ),
            queue_depth: register!(
                "flash_server_queue_depth",
                "Jobs waiting in the queue",
                Family::default()
            ),
            queue_oldest_seconds: register!(
                "flash_server_queue_oldest_seconds",
                "Age of the oldest waiting job (0 when none waits)",
                Family::default()
            ),
            jobs_in_progress: register!(
                "flash_server_jobs_in_progress",
                "Jobs running on a worker",
                Family::default()
            ),
            lb_requests: register!(
                "flash_server_lb_requests",
                "Load-balanced requests, by the HTTP status of the answer",
                Family::default()
            ),
            lb_request_seconds: register!(
                "flash_server_lb_request_seconds",
                "Time until a load-balanced request's answer head came back",
                Histograms::new_with_constructor(duration_histogram)
            ),
            workers: register!(
                "flash_server_workers",
                "Worker processes by state",
                Family::default()
            ),
            scale_events: register!(
                "flash_server_scale_events",
                "Workers started (up) and drained (down) by the scaler",
                Family::default()
            ),
            registry,
            recent: Mutex::default(),
            scrape: tokio::sync::Mutex::default(),
        }
    }
}

fn endpoint(id: &str) -> EndpointLabels {
    EndpointLabels {
        endpoint: id.to_string(),
    }
}

fn millis(ms: i64) -> u64 {
    u64::try_from(ms).unwrap_or(0)
}

/// A job's error as people read it: a worker's JSON error (`error_type`, `error_message`,
/// as runpod-python and flash-host send it) as `<type>: <message>`, anything else as it is.
fn readable(error: &str) -> String {
    let parsed: Option<serde_json::Map<String, serde_json::Value>> =
        serde_json::from_str(error).ok();
    let field = |key: &str| {
        parsed
            .as_ref()
            .and_then(|m| m.get(key))
            .and_then(serde_json::Value::as_str)
    };
    match (field("error_type"), field("error_message")) {
        (Some(kind), Some(message)) => format!("{kind}: {message}"),
        (None, Some(message)) => message.to_string(),
        _ => error.to_string(),
    }
}

fn cut(message: &str) -> String {
    match message.char_indices().nth(MAX_ERROR_CHARS) {
        Some((at, _)) => format!("{}…", &message[..at]),
        None => message.to_string(),
    }
}

/// The `p`-quantile (0..=1) of sorted values, nearest rank.
fn quantile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

impl ServerMetrics {
    fn recent(&self) -> MutexGuard<'_, HashMap<String, Recent>> {
        self.recent.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn remember(&self, endpoint_id: &str, outcome: Outcome) {
        let mut recent = self.recent();
        let recent = recent.entry(endpoint_id.to_string()).or_default();
        if !outcome.ok {
            recent.last_error = Some(outcome.clone());
        }
        if recent.outcomes.len() == RECENT_OUTCOMES {
            recent.outcomes.pop_front();
        }
        recent.outcomes.push_back(outcome);
    }

    /// Counts a job accepted by `/run` or `/runsync`.
    pub fn job_submitted(&self, endpoint_id: &str) {
        self.jobs_submitted
            .get_or_create(&endpoint(endpoint_id))
            .inc();
    }

    /// Counts a job that reached its final status (a job that is not final is ignored).
    pub fn job_finished(&self, job: &Job) {
        if !job.status.is_terminal() {
            return;
        }
        let labels = endpoint(&job.endpoint_id);
        self.jobs_finished
            .get_or_create(&StatusLabels {
                endpoint: job.endpoint_id.clone(),
                status: job.status.as_str().to_string(),
            })
            .inc();
        let finished = job.completed_at.unwrap_or_else(now_ms);
        if let Some(started) = job.started_at {
            self.job_queue_seconds
                .get_or_create(&labels)
                .observe(millis(started - job.created_at) as f64 / 1000.0);
        }
        let latency = millis(finished - job.created_at);
        self.job_latency_seconds
            .get_or_create(&labels)
            .observe(latency as f64 / 1000.0);
        let ok = job.status == JobStatus::Completed;
        self.remember(
            &job.endpoint_id,
            Outcome {
                id: job.id.clone(),
                status: job.status.as_str().to_string(),
                ok,
                finished_at_ms: finished,
                duration_ms: latency,
                error: (!ok).then(|| {
                    cut(&readable(
                        job.error.as_deref().unwrap_or(job.status.as_str()),
                    ))
                }),
            },
        );
    }

    /// Counts `n` queued jobs cancelled at once by `purge-queue`.
    pub fn jobs_purged(&self, endpoint_id: &str, n: usize) {
        self.jobs_finished
            .get_or_create(&StatusLabels {
                endpoint: endpoint_id.to_string(),
                status: JobStatus::Cancelled.as_str().to_string(),
            })
            .inc_by(n as u64);
    }

    /// Counts a load-balanced request answered with `status` after `elapsed`; `error` is the
    /// gateway's own message when it answered instead of a worker.
    pub fn lb_request(
        &self,
        endpoint_id: &str,
        request_id: Option<&str>,
        status: StatusCode,
        elapsed: Duration,
        error: Option<&str>,
    ) {
        self.lb_requests
            .get_or_create(&CodeLabels {
                endpoint: endpoint_id.to_string(),
                code: status.as_u16().to_string(),
            })
            .inc();
        self.lb_request_seconds
            .get_or_create(&endpoint(endpoint_id))
            .observe(elapsed.as_secs_f64());
        let ok = !status.is_server_error();
        self.remember(
            endpoint_id,
            Outcome {
                id: request_id.unwrap_or_default().to_string(),
                status: status.as_u16().to_string(),
                ok,
                finished_at_ms: now_ms(),
                duration_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
                error: (!ok).then(|| cut(error.unwrap_or(status.as_str()))),
            },
        );
    }

    /// Counts `n` workers started or drained by the scaler.
    pub fn scaled(&self, endpoint_id: &str, direction: ScaleDirection, n: usize) {
        self.scale_events
            .get_or_create(&DirectionLabels {
                endpoint: endpoint_id.to_string(),
                direction: match direction {
                    ScaleDirection::Up => "up",
                    ScaleDirection::Down => "down",
                }
                .to_string(),
            })
            .inc_by(n as u64);
    }

    /// What `endpoint_id` did since `since_ms`.
    pub fn summary(&self, endpoint_id: &str, since_ms: i64) -> Summary {
        let recent = self.recent();
        let Some(recent) = recent.get(endpoint_id) else {
            return Summary::default();
        };
        let mut durations = Vec::new();
        let mut failed = 0;
        for o in recent
            .outcomes
            .iter()
            .filter(|o| o.finished_at_ms >= since_ms)
        {
            durations.push(o.duration_ms);
            failed += usize::from(!o.ok);
        }
        durations.sort_unstable();
        Summary {
            count: durations.len(),
            failed,
            p50_ms: quantile(&durations, 0.5),
            p99_ms: quantile(&durations, 0.99),
            last_error: recent.last_error.clone(),
        }
    }

    /// `endpoint_id`'s outcomes in steps of `step` over the `span` that ends at `now_ms`,
    /// oldest first, steps without outcomes included.
    pub fn series(
        &self,
        endpoint_id: &str,
        now_ms: i64,
        span: Duration,
        step: Duration,
    ) -> Vec<Point> {
        let step_ms = i64::try_from(step.as_millis()).unwrap_or(1).max(1);
        let steps = (i64::try_from(span.as_millis()).unwrap_or(0) / step_ms).max(1);
        let end = now_ms - now_ms.rem_euclid(step_ms) + step_ms;
        let start = end - steps * step_ms;
        let mut buckets: Vec<Vec<&Outcome>> = vec![Vec::new(); steps as usize];
        let recent = self.recent();
        if let Some(recent) = recent.get(endpoint_id) {
            for o in &recent.outcomes {
                if o.finished_at_ms >= start && o.finished_at_ms < end {
                    buckets[((o.finished_at_ms - start) / step_ms) as usize].push(o);
                }
            }
        }
        buckets
            .into_iter()
            .enumerate()
            .map(|(i, outcomes)| {
                let mut durations: Vec<u64> = outcomes.iter().map(|o| o.duration_ms).collect();
                durations.sort_unstable();
                Point {
                    t_ms: start + i as i64 * step_ms,
                    count: outcomes.len(),
                    failed: outcomes.iter().filter(|o| !o.ok).count(),
                    p50_ms: quantile(&durations, 0.5),
                }
            })
            .collect()
    }

    /// The newest outcome of `endpoint_id` with this job or request id.
    pub fn find(&self, endpoint_id: &str, id: &str) -> Option<Outcome> {
        self.recent()
            .get(endpoint_id)
            .and_then(|r| r.outcomes.iter().rev().find(|o| o.id == id).cloned())
    }

    /// The last `n` outcomes of `endpoint_id`, newest first.
    pub fn latest(&self, endpoint_id: &str, n: usize) -> Vec<Outcome> {
        self.recent()
            .get(endpoint_id)
            .map(|r| r.outcomes.iter().rev().take(n).cloned().collect())
            .unwrap_or_default()
    }

    /// Reads the state gauges from the store and the supervisor, then encodes everything.
    pub async fn encode(
        &self,
        store: &dyn Store,
        supervisor: &Supervisor,
    ) -> anyhow::Result<String> {
        let _one = self.scrape.lock().await;
        for family in [
            &self.queue_depth,
            &self.queue_oldest_seconds,
            &self.jobs_in_progress,
        ] {
            family.clear();
        }
        self.endpoint_info.clear();
        self.workers.clear();
        let now = now_ms();
        for ep in store.list_endpoints()? {
            let labels = endpoint(&ep.id);
            self.endpoint_info
                .get_or_create(&InfoLabels {
                    endpoint: ep.id.clone(),
                    name: ep.name.clone(),
                    r#type: if ep.is_lb() { "LB" } else { "QB" }.to_string(),
                    environment: ep.flash_environment_id.clone().unwrap_or_default(),
                })
                .set(1);
            if !ep.is_lb() {
                let counts = store.queue_depth(&ep.id)?;
                self.queue_depth.get_or_create(&labels).set(counts.in_queue);
                self.jobs_in_progress
                    .get_or_create(&labels)
                    .set(counts.in_progress);
                self.queue_oldest_seconds.get_or_create(&labels).set(
                    counts
                        .oldest_queued_at
                        .map_or(0, |t| (now - t).max(0) / 1000),
                );
            }
            let w = supervisor.worker_counts(&ep.id);
            for (state, n) in [
                ("idle", w.idle),
                ("initializing", w.initializing),
                ("ready", w.ready),
                ("running", w.running),
                ("throttled", w.throttled),
                ("unhealthy", w.unhealthy),
            ] {
                self.workers
                    .get_or_create(&StateLabels {
                        endpoint: ep.id.clone(),
                        state: state.to_string(),
                    })
                    .set(i64::try_from(n).unwrap_or(i64::MAX));
            }
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// `GET /metrics`, for the user key.
pub async fn handler(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if !state.auth.is_user(&headers) {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({
                "error": "metrics need the server's API key: send `Authorization: Bearer <key>` \
                          (in Prometheus: `authorization: { credentials_file: <data dir>/api_key }`)"
            })),
        )
            .into_response();
    }
    match state
        .metrics
        .encode(state.store.as_ref(), &state.supervisor)
        .await
    {
        Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(json!({ "error": format!("reading metrics: {e:#}") })),
        )
            .into_response(),
    }
}

/// The query of `GET /v1/stats`.
#[derive(Debug, serde::Deserialize)]
pub struct StatsQuery {
    /// `<id>[,<id>…]`.
    pub endpoint: String,
    /// The span summarised, in seconds (default 300).
    pub window_s: Option<u64>,
}

/// `GET /v1/stats?endpoint=a,b[&window_s=300]`, for the user key: for each endpoint, its
/// queue now and what it did in the window (count, failures, p50 and p99 latency in ms)
/// with its last error however old. Unknown endpoints are left out.
pub async fn stats_handler(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<axum::extract::Query<StatsQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let refuse = |status: StatusCode, message: String| {
        (status, axum::Json(json!({ "error": message }))).into_response()
    };
    if !state.auth.is_user(&headers) {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "stats need the server's API key: send `Authorization: Bearer <key>`".into(),
        );
    }
    let query = match query {
        Ok(axum::extract::Query(query)) => query,
        Err(e) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                format!("{e}: expected endpoint=<id>[,<id>…] and optionally window_s=<seconds>"),
            );
        }
    };
    let window = query
        .window_s
        .map_or(DEFAULT_STATS_WINDOW, Duration::from_secs);
    let since = now_ms() - i64::try_from(window.as_millis()).unwrap_or(i64::MAX / 2);
    let mut endpoints = serde_json::Map::new();
    for id in query
        .endpoint
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let ep = match state.store.get_endpoint(id) {
            Ok(Some(ep)) => ep,
            Ok(None) => continue,
            Err(e) => return refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        };
        let queue = if ep.is_lb() {
            serde_json::Value::Null
        } else {
            match state.store.queue_depth(&ep.id) {
                Ok(c) => json!({
                    "waiting": c.in_queue,
                    "running": c.in_progress,
                    "oldestSeconds": c.oldest_queued_at.map_or(0, |t| (now_ms() - t).max(0) / 1000),
                }),
                Err(e) => return refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
            }
        };
        let s = state.metrics.summary(&ep.id, since);
        endpoints.insert(
            ep.id.clone(),
            json!({
                "queue": queue,
                "count": s.count,
                "failed": s.failed,
                "p50Ms": s.p50_ms,
                "p99Ms": s.p99_ms,
                "lastError": s.last_error.map(|o| json!({
                    "id": o.id,
                    "status": o.status,
                    "at": crate::util::rfc3339(o.finished_at_ms),
                    "error": o.error,
                })),
            }),
        );
    }
    axum::Json(json!({ "windowSeconds": window.as_secs(), "endpoints": endpoints })).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: &str, status: JobStatus, created: i64, started: Option<i64>, done: i64) -> Job {
        Job {
            id: id.into(),
            endpoint_id: "ep".into(),
            request: serde_json::value::RawValue::NULL.to_owned(),
            webhook: None,
            status,
            worker_id: None,
            output: None,
            error: (status != JobStatus::Completed).then(|| format!("{id} broke")),
            retries: 0,
            timeout_ms: 0,
            created_at: created,
            started_at: started,
            completed_at: Some(done),
            lease_expires_at: None,
        }
    }

    #[test]
    fn worker_errors_read_as_their_kind_and_message() {
        let worker =
            r#"{"error_type":"user-error","error_message":"ValueError: no","error_traceback":"…"}"#;
        assert_eq!(readable(worker), "user-error: ValueError: no");
        assert_eq!(readable(r#"{"error_message":"plain"}"#), "plain");
        assert_eq!(readable("job timed out"), "job timed out");
        assert_eq!(readable(r#"{"other":1}"#), r#"{"other":1}"#);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let values: Vec<u64> = (1..=100).collect();
        assert_eq!(quantile(&values, 0.5), Some(50));
        assert_eq!(quantile(&values, 0.99), Some(99));
        assert_eq!(quantile(&[7], 0.99), Some(7));
        assert_eq!(quantile(&[], 0.5), None);
    }

    #[test]
    fn a_summary_counts_the_window_and_keeps_the_last_error() {
        let m = ServerMetrics::default();
        let now = now_ms();
        m.job_finished(&job(
            "old-fail",
            JobStatus::Failed,
            now - 100_000,
            None,
            now - 90_000,
        ));
        for i in 0..10 {
            m.job_finished(&job(
                &format!("j{i}"),
                JobStatus::Completed,
                now - 1000,
                Some(now - 990),
                now - 1000 + (i + 1) * 10,
            ));
        }
        let s = m.summary("ep", now - 60_000);
        assert_eq!((s.count, s.failed), (10, 0));
        assert_eq!((s.p50_ms, s.p99_ms), (Some(50), Some(100)));
        let last = s
            .last_error
            .expect("the failure outside the window is still the last");
        assert_eq!(
            (last.id.as_str(), last.error.as_deref()),
            ("old-fail", Some("old-fail broke"))
        );
        assert_eq!(m.summary("other", 0), Summary::default());
        // Jobs that are not final are not outcomes.
        m.job_finished(&Job {
            status: JobStatus::InProgress,
            ..job("running", JobStatus::Completed, now, None, now)
        });
        assert_eq!(m.summary("ep", 0).count, 11);
    }

    #[test]
    fn series_put_outcomes_in_their_steps() {
        let m = ServerMetrics::default();
        let step = Duration::from_secs(1);
        let now = 1_000_000_500;
        for (id, done, status) in [
            ("a", 1_000_000_100, JobStatus::Completed),
            ("b", 1_000_000_200, JobStatus::TimedOut),
            ("c", 999_998_000, JobStatus::Completed),
        ] {
            m.job_finished(&job(id, status, done - 20, Some(done - 10), done));
        }
        let series = m.series("ep", now, Duration::from_secs(5), step);
        assert_eq!(series.len(), 5);
        assert_eq!(series[4].t_ms, 1_000_000_000);
        assert_eq!(
            (series[4].count, series[4].failed, series[4].p50_ms),
            (2, 1, Some(20))
        );
        assert_eq!((series[2].count, series[2].t_ms), (1, 999_998_000));
        assert_eq!(series.iter().map(|p| p.count).sum::<usize>(), 3);
    }

    #[test]
    fn the_window_is_bounded_and_long_errors_are_cut() {
        let m = ServerMetrics::default();
        let now = now_ms();
        for i in 0..RECENT_OUTCOMES + 10 {
            m.lb_request(
                "lb",
                Some(&format!("req-{i}")),
                StatusCode::OK,
                Duration::from_millis(3),
                None,
            );
        }
        assert_eq!(m.summary("lb", 0).count, RECENT_OUTCOMES);
        assert_eq!(
            m.latest("lb", 1)[0].id,
            format!("req-{}", RECENT_OUTCOMES + 9)
        );
        let long = "x".repeat(2000);
        m.lb_request(
            "lb",
            None,
            StatusCode::BAD_GATEWAY,
            Duration::ZERO,
            Some(&long),
        );
        let error = m.summary("lb", now).last_error.unwrap().error.unwrap();
        assert_eq!(error.chars().count(), MAX_ERROR_CHARS + 1);
    }
}
