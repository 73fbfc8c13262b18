//! Test support: a small in-test job source speaking the RunPod worker protocol, and
//! helpers to start real `flash-host` processes on loopback.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use flash_tests::ChildGuard;
use serde_json::{Value, json};
use tokio::sync::Notify;

/// What the job source saw and holds.
#[derive(Default)]
pub struct Inner {
    queues: HashMap<String, VecDeque<Value>>,
    results: HashMap<String, Value>,
    pub takes: usize,
    pub pings: Vec<(String, HashMap<String, String>)>,
    pub take_auth: Vec<Option<String>>,
    /// Chunks posted to `job-stream`, per job, in arrival order.
    pub streams: HashMap<String, Vec<Value>>,
    /// Job ids the next `job-stop` poll hands out.
    pub to_stop: Vec<String>,
    next_id: u64,
}

impl Inner {
    pub fn has_result(&self, job: &str) -> bool {
        self.results.contains_key(job)
    }
}

/// A RunPod-style job source: `/v2/{ep}/job-take/{worker}` (held up to 1 s),
/// `job-take-batch`, `job-done/{worker}/{job}`, `ping/{worker}`, plus `runsync` and
/// `status/{id}` so that hosts can call queue peers through it.
#[derive(Clone)]
pub struct JobSource {
    pub inner: Arc<Mutex<Inner>>,
    notify: Arc<Notify>,
    pub addr: SocketAddr,
}

impl JobSource {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let source = Self {
            inner: Default::default(),
            notify: Arc::new(Notify::new()),
            addr,
        };
        let app = Router::new()
            .route("/v2/{ep}/job-take/{worker}", get(take))
            .route("/v2/{ep}/job-take-batch/{worker}", get(take_batch))
            .route("/v2/{ep}/job-done/{worker}/{job}", post(done))
            .route("/v2/{ep}/job-stream/{worker}/{job}", post(stream))
            .route("/v2/{ep}/ping/{worker}", get(ping))
            .route("/v2/{ep}/job-stop/{worker}", get(job_stop))
            .route("/v2/{ep}/runsync", post(runsync))
            .route("/v2/{ep}/status/{job}", get(status))
            .with_state(source.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        source
    }

    pub fn base(&self) -> String {
        format!("http://{}/v2", self.addr)
    }

    /// Worker environment for endpoint `ep`, as a platform would set it.
    pub fn worker_env(&self, ep: &str) -> Vec<(String, String)> {
        let b = self.base();
        vec![
            (
                "RUNPOD_WEBHOOK_GET_JOB".into(),
                format!("{b}/{ep}/job-take/$ID?gpu=test"),
            ),
            (
                "RUNPOD_WEBHOOK_POST_OUTPUT".into(),
                format!("{b}/{ep}/job-done/$RUNPOD_POD_ID/$ID?gpu=test"),
            ),
            (
                "RUNPOD_WEBHOOK_POST_STREAM".into(),
                format!("{b}/{ep}/job-stream/$RUNPOD_POD_ID/$ID?gpu=test"),
            ),
            (
                "RUNPOD_WEBHOOK_PING".into(),
                format!("{b}/{ep}/ping/$RUNPOD_POD_ID?gpu=test"),
            ),
            ("RUNPOD_POD_ID".into(), format!("worker-{ep}")),
            ("RUNPOD_AI_API_KEY".into(), "worker-key".into()),
            ("RUNPOD_PING_INTERVAL".into(), "200".into()),
        ]
    }

    /// Queues a job for endpoint `ep`; returns its id.
    pub fn submit(&self, ep: &str, input: Value) -> String {
        let mut inner = self.inner.lock().unwrap();
        inner.next_id += 1;
        let id = format!("job-{}", inner.next_id);
        inner
            .queues
            .entry(ep.to_string())
            .or_default()
            .push_back(json!({"id": id, "input": input}));
        drop(inner);
        self.notify.notify_waiters();
        id
    }

    /// Waits (bounded) for the result body a worker posted for `job`.
    pub async fn result(&self, job: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(r) = self.inner.lock().unwrap().results.get(job).cloned() {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "no result for {job} within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Submits and waits.
    pub async fn run(&self, ep: &str, input: Value) -> Value {
        let id = self.submit(ep, input);
        self.result(&id, Duration::from_secs(30)).await
    }

    async fn pop(&self, ep: &str, max: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            let notified = self.notify.notified();
            {
                let mut inner = self.inner.lock().unwrap();
                inner.takes += 1;
                let q = inner.queues.entry(ep.to_string()).or_default();
                let n = q.len().min(max);
                if n > 0 {
                    return q.drain(..n).collect();
                }
            }
            if tokio::time::timeout_at(deadline.into(), notified)
                .await
                .is_err()
            {
                return vec![];
            }
        }
    }
}

async fn take(
    State(s): State<JobSource>,
    UrlPath((ep, _w)): UrlPath<(String, String)>,
    headers: HeaderMap,
) -> Response {
    s.inner.lock().unwrap().take_auth.push(
        headers
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_string()),
    );
    match s.pop(&ep, 1).await.pop() {
        Some(job) => axum::Json(job).into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    }
}

async fn take_batch(
    State(s): State<JobSource>,
    UrlPath((ep, _w)): UrlPath<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let n = q
        .get("batch_size")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let jobs = s.pop(&ep, n).await;
    if jobs.is_empty() {
        StatusCode::NO_CONTENT.into_response()
    } else {
        axum::Json(jobs).into_response()
    }
}

async fn done(
    State(s): State<JobSource>,
    UrlPath((_ep, _w, job)): UrlPath<(String, String, String)>,
    body: String,
) -> StatusCode {
    let value: Value = serde_json::from_str(&body).unwrap_or(Value::String(body));
    s.inner.lock().unwrap().results.insert(job, value);
    StatusCode::OK
}

async fn stream(
    State(s): State<JobSource>,
    UrlPath((_ep, _w, job)): UrlPath<(String, String, String)>,
    body: String,
) -> StatusCode {
    let value: Value = serde_json::from_str(&body).unwrap_or(Value::String(body));
    let mut inner = s.inner.lock().unwrap();
    assert!(
        !inner.results.contains_key(&job),
        "a chunk arrived after the result of {job}"
    );
    inner.streams.entry(job).or_default().push(value);
    StatusCode::OK
}

async fn job_stop(State(s): State<JobSource>) -> Response {
    for _ in 0..20 {
        let ids: Vec<String> = std::mem::take(&mut s.inner.lock().unwrap().to_stop);
        if !ids.is_empty() {
            return axum::Json(json!({"jobsToStop": ids})).into_response();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn ping(
    State(s): State<JobSource>,
    UrlPath((_ep, w)): UrlPath<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> StatusCode {
    s.inner.lock().unwrap().pings.push((w, q));
    StatusCode::NO_CONTENT
}

fn status_body(id: &str, result: Option<&Value>) -> Value {
    match result {
        None => json!({"id": id, "status": "IN_PROGRESS"}),
        Some(r) if r.get("error").is_some() => {
            json!({"id": id, "status": "FAILED", "error": r["error"]})
        }
        Some(r) => {
            json!({"id": id, "status": "COMPLETED", "output": r.get("output").cloned().unwrap_or(Value::Null)})
        }
    }
}

async fn runsync(
    State(s): State<JobSource>,
    UrlPath(ep): UrlPath<String>,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    let id = s.submit(&ep, body.get("input").cloned().unwrap_or(Value::Null));
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        if let Some(r) = s.inner.lock().unwrap().results.get(&id) {
            return axum::Json(status_body(&id, Some(r))).into_response();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    axum::Json(status_body(&id, None)).into_response()
}

async fn status(
    State(s): State<JobSource>,
    UrlPath((_ep, id)): UrlPath<(String, String)>,
) -> Response {
    let r = s.inner.lock().unwrap().results.get(&id).cloned();
    axum::Json(status_body(&id, r.as_ref())).into_response()
}

/// Starts `flash-host` with exactly `env` (plus PATH/HOME); stderr goes to a log file
/// in `dir` that [`log`] reads.
pub fn spawn_host(dir: &Path, name: &str, env: &[(String, String)]) -> ChildGuard {
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_flash-host"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", std::env::var("HOME").unwrap_or_default())
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log);
    for (k, v) in env {
        cmd.env(k, v);
    }
    ChildGuard::spawn(&mut cmd).unwrap()
}

pub fn log(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default()
}

pub fn envs(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The rust test guest, packed as an artifact in `dir` after `tweak`.
pub async fn rust_guest_artifact(
    dir: &Path,
    tweak: impl FnOnce(&mut flash_manifest::Manifest),
) -> std::path::PathBuf {
    let wasm = tokio::task::spawn_blocking(|| flash_tests::build_guest("tests/guests/rust-guest"))
        .await
        .unwrap()
        .unwrap();
    flash_tests::guest_artifact(&wasm, "testapp", dir, tweak)
        .await
        .unwrap()
}

pub fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The `(error_type, error_message)` of a failed job's result body (the runpod SDK's
/// JSON error string).
pub fn error_of(result: &Value) -> (String, String) {
    let text = result["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error string in {result}"));
    let err: Value =
        serde_json::from_str(text).unwrap_or_else(|e| panic!("error is not JSON ({e}): {text}"));
    (
        err["error_type"].as_str().unwrap().to_string(),
        err["error_message"].as_str().unwrap().to_string(),
    )
}

/// The JSON a finished process printed, after checking that it succeeded (stderr otherwise).
pub fn stdout_json(out: std::process::Output) -> Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}
