//! Shared helpers of the flash-control integration tests: a real server on loopback with a
//! real SQLite file in a temp dir, GraphQL and HTTP helpers, and Python (runpod) endpoints.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flash_control::supervisor::Supervisor;
use flash_control::{Config, Server};
use serde_json::{Value, json};

pub struct TestServer {
    pub url: String,
    pub key: String,
    pub dir: tempfile::TempDir,
    pub supervisor: Arc<Supervisor>,
    pub http: reqwest::Client,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// This package's directory, read at run time: a test binary cargo reused from another
/// checkout sharing the target dir would carry that checkout's path.
pub fn package_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
}

/// Short timeouts so tests run in seconds.
pub fn test_config(dir: PathBuf) -> Config {
    let mut c = Config::new(dir, "127.0.0.1:0".parse().expect("addr"));
    c.take_hold = Duration::from_secs(2);
    c.runsync_wait = Duration::from_secs(20);
    c.lease = Duration::from_secs(3);
    c.ping_interval_ms = 1000;
    c.allow_worker_command_override = true;
    c.reconcile_interval = Duration::from_millis(100);
    c.maintenance_interval = Duration::from_millis(100);
    c.stop_grace = Duration::from_secs(2);
    c.max_restart_backoff = Duration::from_secs(2);
    c.lb_wait = Duration::from_secs(30);
    c
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = test_config(dir.path().to_path_buf());
        tweak(&mut config);
        let server = Server::bind(config).await.expect("bind server");
        let url = server.url();
        let key = server.api_key().to_string();
        let supervisor = server.supervisor();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let handle = tokio::spawn(server.run(async move {
            let _ = rx.await;
        }));
        Self {
            url,
            key,
            dir,
            supervisor,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("client"),
            shutdown: Some(tx),
            handle: Some(handle),
        }
    }

    /// Graceful shutdown; returns once every worker is gone.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            tokio::time::timeout(Duration::from_secs(30), h)
                .await
                .expect("server stops within 30 s")
                .expect("server task")
                .expect("server result");
        }
    }

    /// POST /graphql with the key; the whole response body.
    pub async fn gql_raw(&self, query: &str, variables: Value) -> Value {
        self.http
            .post(format!("{}/graphql", self.url))
            .bearer_auth(&self.key)
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await
            .expect("graphql request")
            .json()
            .await
            .expect("graphql JSON")
    }

    /// `data` of a GraphQL call that must succeed.
    pub async fn gql(&self, query: &str, variables: Value) -> Value {
        let resp = self.gql_raw(query, variables).await;
        assert!(resp.get("errors").is_none(), "GraphQL errors: {resp}");
        resp["data"].clone()
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.url))
            .bearer_auth(&self.key)
            .send()
            .await
            .expect("GET");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.url))
            .bearer_auth(&self.key)
            .json(&body)
            .send()
            .await
            .expect("POST");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Saves an endpoint whose workers run `tests/fixtures/worker.py` with the real runpod SDK.
    pub async fn python_endpoint(&self, name: &str, mode: &str, extra: Value) -> Value {
        let python = flash_tests::python().expect("test venv");
        let worker = package_dir().join("tests/fixtures/worker.py");
        let command = json!([python, worker]).to_string();
        let mut input = json!({
            "name": name,
            "workersMin": 0,
            "workersMax": 1,
            "template": { "env": [
                { "key": "FLASH_WORKER_COMMAND", "value": command },
                { "key": "HANDLER_MODE", "value": mode },
                { "key": "RUNPOD_SKIP_GPU_CHECK", "value": "true" },
                { "key": "RUNPOD_SKIP_AUTO_SYSTEM_CHECKS", "value": "true" },
                { "key": "PYTHONUNBUFFERED", "value": "1" },
            ]},
        });
        if let (Some(obj), Some(extra)) = (input.as_object_mut(), extra.as_object()) {
            for (k, v) in extra {
                obj.insert(k.clone(), v.clone());
            }
        }
        let data = self.gql(SAVE_ENDPOINT, json!({ "input": input })).await;
        data["saveEndpoint"].clone()
    }

    /// Polls `/status` until the job is final (bounded).
    pub async fn wait_final(&self, ep: &str, job: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let (code, body) = self.get(&format!("/v2/{ep}/status/{job}")).await;
            assert_eq!(code, 200, "status: {body}");
            if matches!(
                body["status"].as_str(),
                Some("COMPLETED" | "FAILED" | "CANCELLED" | "TIMED_OUT")
            ) {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "job {job} not final within {timeout:?}: {body}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Polls a condition on `/health` (bounded).
    pub async fn wait_health(
        &self,
        ep: &str,
        timeout: Duration,
        what: &str,
        cond: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let (_, body) = self.get(&format!("/v2/{ep}/health")).await;
            if cond(&body) {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "{what} not reached within {timeout:?}: {body}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

pub const SAVE_ENDPOINT: &str = "mutation saveEndpoint($input: EndpointInput!) { saveEndpoint(input: $input) { \
    id name type aiKey userId version templateId gpuIds gpuCount allowedCudaVersions minCudaVersion instanceIds \
    locations idleTimeout executionTimeoutMs scalerType scalerValue workersMin workersMax workersStandby \
    workersPFBTarget networkVolumeId networkVolumeIds { networkVolumeId dataCenterId } flashEnvironmentId \
    activeBuildid idePodId flashBootType } }";

/// Runs a Python script with the test venv; returns the JSON printed on its last stdout line.
pub async fn run_python(script: &str, envs: &[(&str, String)], timeout: Duration) -> Value {
    let python = flash_tests::python().expect("test venv");
    let mut cmd = tokio::process::Command::new(python);
    cmd.arg("-c").arg(script).kill_on_drop(true);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(timeout, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("python script did not finish within {timeout:?}"))
        .expect("running python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "python failed: {}\nstdout: {stdout}\nstderr: {stderr}",
        out.status
    );
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("python printed no JSON ({e}): {stdout}\n{stderr}"))
}
