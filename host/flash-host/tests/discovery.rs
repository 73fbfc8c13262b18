//! Discovery against a State Manager stand-in: `StateManagerClient` (wire shape, error order,
//! retry policy) and `ManifestFetcher` (TTL cache, single fetch under concurrency, local
//! fallback, write-back).
//!
//! The stand-in is a small axum app on 127.0.0.1 that recognises operations by name, answers
//! canned JSON from in-memory environments and builds, counts requests, records what it saw,
//! and can be told to misbehave for the next N requests.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use flash_host::manifest_fetcher::{ManifestFetcher, ManifestSource};
use flash_host::state_manager::{StateManagerClient, StateManagerConfig, StateManagerError};
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------------
// The stand-in
// ---------------------------------------------------------------------------------------------

/// How the stand-in misbehaves for one request.
#[derive(Debug, Clone)]
enum Fault {
    /// HTTP 503 with a JSON body.
    Http503,
    /// HTTP 401 with a JSON body.
    Http401,
    /// HTTP 200 with `{"errors":[{"message": …}]}`.
    GraphQl(&'static str),
    /// HTTP 200, `text/html` body.
    NonJson,
    /// The normal answer plus an `errors` key with two messages.
    ErrorsWithData,
    /// Sleeps this long, then answers normally.
    Slow(Duration),
}

#[derive(Debug, Clone)]
struct Seen {
    operation: String,
    body: Value,
    authorization: Option<String>,
    content_type: Option<String>,
}

#[derive(Default)]
struct Stub {
    requests: AtomicUsize,
    /// One fault is consumed per request, front first.
    faults: Mutex<VecDeque<Fault>>,
    /// Added to every answer (to make concurrent callers overlap).
    delay: Mutex<Duration>,
    /// environment id → `flashEnvironment` object.
    environments: Mutex<HashMap<String, Value>>,
    /// build id → manifest.
    builds: Mutex<HashMap<String, Value>>,
    seen: Mutex<Vec<Seen>>,
}

impl Stub {
    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    fn fail_next(&self, n: usize, fault: Fault) {
        let mut faults = self.faults.lock().expect("faults lock");
        faults.extend(std::iter::repeat_n(fault, n));
    }

    fn set_delay(&self, delay: Duration) {
        *self.delay.lock().expect("delay lock") = delay;
    }

    fn add_environment(&self, id: &str, active_build: Option<&str>) {
        self.environments.lock().expect("env lock").insert(
            id.to_owned(),
            json!({
                "id": id,
                "name": "production",
                "state": "HEALTHY",
                "activeBuildId": active_build,
                "createdAt": "2026-11-28T00:00:00Z",
                "endpoints": [{"id": "ep-1", "name": "gpu_worker"}],
                "networkVolumes": null,
            }),
        );
    }

    fn set_build(&self, id: &str, manifest: Value) {
        self.builds
            .lock()
            .expect("builds lock")
            .insert(id.to_owned(), manifest);
    }

    fn build(&self, id: &str) -> Option<Value> {
        self.builds.lock().expect("builds lock").get(id).cloned()
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("seen lock").clone()
    }

    /// The normal answer to one operation.
    fn answer(&self, operation: &str, variables: &Value) -> Value {
        match operation {
            "getFlashEnvironment" => {
                let id = variables["flashEnvironmentId"].as_str().unwrap_or_default();
                let env = self.environments.lock().expect("env lock").get(id).cloned();
                json!({ "data": { "flashEnvironment": env } })
            }
            "getFlashBuild" => {
                let id = variables["input"].as_str().unwrap_or_default();
                let build = self
                    .build(id)
                    .map(|manifest| json!({ "id": id, "manifest": manifest }));
                json!({ "data": { "flashBuild": build } })
            }
            "updateFlashBuildManifest" => {
                let id = variables["input"]["flashBuildId"]
                    .as_str()
                    .unwrap_or_default();
                let manifest = variables["input"]["manifest"].clone();
                if self.build(id).is_none() {
                    return json!({ "data": { "updateFlashBuildManifest": null } });
                }
                self.set_build(id, manifest.clone());
                json!({ "data": { "updateFlashBuildManifest": { "id": id, "manifest": manifest } } })
            }
            other => json!({ "errors": [{ "message": format!("unknown operation `{other}`") }] }),
        }
    }
}

/// `query getFlashBuild(...)` → `getFlashBuild`.
fn operation_name(query: &str) -> String {
    let rest = query.trim_start();
    let rest = rest
        .strip_prefix("query")
        .or_else(|| rest.strip_prefix("mutation"))
        .unwrap_or(rest)
        .trim_start();
    rest.chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect()
}

fn json_response(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

async fn graphql(State(stub): State<Arc<Stub>>, headers: HeaderMap, body: Bytes) -> Response {
    stub.requests.fetch_add(1, Ordering::SeqCst);
    let delay = *stub.delay.lock().expect("delay lock");
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return json_response(
            StatusCode::BAD_REQUEST,
            json!({ "errors": [{ "message": "body is not JSON" }] }),
        );
    };
    let operation = operation_name(body["query"].as_str().unwrap_or_default());
    let header_text = |name| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    stub.seen.lock().expect("seen lock").push(Seen {
        operation: operation.clone(),
        body: body.clone(),
        authorization: header_text(header::AUTHORIZATION),
        content_type: header_text(header::CONTENT_TYPE),
    });
    let fault = stub.faults.lock().expect("faults lock").pop_front();
    let normal = || json_response(StatusCode::OK, stub.answer(&operation, &body["variables"]));
    match fault {
        None => normal(),
        Some(Fault::Http503) => json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({ "errors": [{ "message": "Service Unavailable" }] }),
        ),
        Some(Fault::Http401) => json_response(
            StatusCode::UNAUTHORIZED,
            json!({ "errors": [{ "message": "Unauthorized" }] }),
        ),
        Some(Fault::GraphQl(message)) => json_response(
            StatusCode::OK,
            json!({ "errors": [{ "message": message }] }),
        ),
        Some(Fault::NonJson) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/html")],
            "<html><body>upstream is warming up</body></html>",
        )
            .into_response(),
        Some(Fault::ErrorsWithData) => {
            let mut answer = stub.answer(&operation, &body["variables"]);
            answer["errors"] =
                json!([{ "message": "partial failure" }, { "message": "second problem" }]);
            json_response(StatusCode::OK, answer)
        }
        Some(Fault::Slow(wait)) => {
            tokio::time::sleep(wait).await;
            normal()
        }
    }
}

/// Starts the stand-in; returns its base URL (no trailing `/graphql`).
async fn start(stub: Arc<Stub>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the stand-in");
    let addr = listener.local_addr().expect("stand-in address");
    let app = Router::new()
        .route("/graphql", post(graphql))
        .with_state(stub);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

/// A base URL on which nothing listens (bound, then released).
async fn dead_base_url() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a port");
    let addr = listener.local_addr().expect("address");
    drop(listener);
    format!("http://{addr}")
}

fn manifest(project: &str) -> Value {
    json!({
        "version": "1.0",
        "generated_at": "2026-11-28T00:00:00Z",
        "project_name": project,
        "flash_contract": "flash:runtime@0.2.0",
        "resources": {},
        "function_registry": {},
        "resources_endpoints": {
            "gpu_worker": "https://ep-gpu.api.runpod.ai",
            "api": "https://ep-api.api.runpod.ai"
        },
        "deploy_state": { "kept": true }
    })
}

/// A stand-in with `env-1` → `build-1` (manifest `demo`) and `env-new` without a build.
async fn seeded() -> (Arc<Stub>, String) {
    let stub = Arc::new(Stub::default());
    stub.add_environment("env-1", Some("build-1"));
    stub.add_environment("env-new", None);
    stub.set_build("build-1", manifest("demo"));
    let base = start(stub.clone()).await;
    (stub, base)
}

fn client(base: &str) -> StateManagerClient {
    let config = StateManagerConfig::new(base, "test-key")
        .expect("config")
        .with_timeout(Duration::from_secs(5))
        .with_backoff_base(Duration::from_millis(1));
    StateManagerClient::new(config).expect("client")
}

/// Every test runs under this bound, so a hang fails instead of stalling the suite.
async fn bounded<F: Future>(test: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(30), test)
        .await
        .expect("test exceeded 30 s")
}

fn write_json(path: &Path, value: &Value) {
    std::fs::write(path, serde_json::to_vec_pretty(value).expect("json")).expect("write file");
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).expect("read file")).expect("file is JSON")
}

// ---------------------------------------------------------------------------------------------
// StateManagerClient
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn get_flash_environment_sends_flash_wire_shape() {
    bounded(async {
        let (stub, base) = seeded().await;
        let env = client(&base)
            .get_flash_environment("env-1")
            .await
            .expect("environment");
        assert_eq!(env.id, "env-1");
        assert_eq!(env.name, "production");
        assert_eq!(env.active_build_id.as_deref(), Some("build-1"));
        assert_eq!(env.endpoints.len(), 1);
        assert!(env.network_volumes.is_empty(), "null list reads as empty");

        let seen = stub.seen();
        assert_eq!(seen.len(), 1);
        let request = &seen[0];
        assert_eq!(request.operation, "getFlashEnvironment");
        assert_eq!(request.authorization.as_deref(), Some("Bearer test-key"));
        assert_eq!(request.content_type.as_deref(), Some("application/json"));
        assert_eq!(
            request.body["variables"],
            json!({ "flashEnvironmentId": "env-1" })
        );
        let query = request.body["query"].as_str().expect("query text");
        assert!(query.contains("flashEnvironment(flashEnvironmentId: $flashEnvironmentId)"));
        assert!(query.contains("activeBuildId"));
        assert!(!query.contains("activeArtifact"));
    })
    .await;
}

#[tokio::test]
async fn get_flash_build_returns_the_manifest_object() {
    bounded(async {
        let (stub, base) = seeded().await;
        let build = client(&base)
            .get_flash_build("build-1")
            .await
            .expect("build");
        assert_eq!(build.id, "build-1");
        assert_eq!(build.manifest, manifest("demo"));
        let seen = stub.seen();
        assert_eq!(seen[0].operation, "getFlashBuild");
        assert_eq!(seen[0].body["variables"], json!({ "input": "build-1" }));
    })
    .await;
}

#[tokio::test]
async fn resources_endpoints_follow_environment_to_active_build() {
    bounded(async {
        let (stub, base) = seeded().await;
        let endpoints = client(&base)
            .resources_endpoints("env-1")
            .await
            .expect("endpoints");
        assert_eq!(
            endpoints.get("gpu_worker").map(String::as_str),
            Some("https://ep-gpu.api.runpod.ai")
        );
        assert_eq!(endpoints.len(), 2);
        let operations: Vec<String> = stub.seen().into_iter().map(|s| s.operation).collect();
        assert_eq!(operations, ["getFlashEnvironment", "getFlashBuild"]);
    })
    .await;
}

#[tokio::test]
async fn environment_without_active_build_has_no_persisted_manifest() {
    bounded(async {
        let (stub, base) = seeded().await;
        let client = client(&base);
        assert_eq!(
            client.persisted_manifest("env-new").await.expect("ok"),
            None
        );
        assert!(
            client
                .resources_endpoints("env-new")
                .await
                .expect("ok")
                .is_empty()
        );
        assert!(
            stub.seen()
                .iter()
                .all(|s| s.operation == "getFlashEnvironment")
        );
        let (build_id, value) = client
            .persisted_manifest("env-1")
            .await
            .expect("ok")
            .expect("persisted");
        assert_eq!(build_id, "build-1");
        assert_eq!(value, manifest("demo"));
    })
    .await;
}

#[tokio::test]
async fn unknown_environment_is_not_found_with_a_hint() {
    bounded(async {
        let (stub, base) = seeded().await;
        let err = client(&base)
            .get_flash_environment("nope")
            .await
            .expect_err("must fail");
        assert!(
            matches!(
                err,
                StateManagerError::NotFound {
                    kind: "environment",
                    ..
                }
            ),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(
            text.contains("`nope`") && text.contains("FLASH_ENVIRONMENT_ID"),
            "{text}"
        );
        assert_eq!(stub.requests(), 1, "not found is not retried");
    })
    .await;
}

#[tokio::test]
async fn update_manifest_sends_the_mutation_input() {
    bounded(async {
        let (stub, base) = seeded().await;
        let mut updated = manifest("demo");
        updated["resources_endpoints"]["cpu_worker"] = json!("https://ep-cpu.api.runpod.ai");
        let build = client(&base)
            .update_flash_build_manifest("build-1", &updated)
            .await
            .expect("update");
        assert_eq!(build.id, "build-1");
        assert_eq!(build.manifest, updated);
        assert_eq!(stub.build("build-1"), Some(updated.clone()));

        let seen = stub.seen();
        let query = seen[0].body["query"].as_str().expect("query");
        assert!(
            query.starts_with("mutation updateFlashBuildManifest("),
            "{query}"
        );
        assert_eq!(
            seen[0].body["variables"],
            json!({ "input": { "flashBuildId": "build-1", "manifest": updated } })
        );
    })
    .await;
}

#[tokio::test]
async fn update_manifest_rejects_a_non_object_before_sending() {
    bounded(async {
        let (stub, base) = seeded().await;
        let err = client(&base)
            .update_flash_build_manifest("build-1", &json!("{\"version\":\"1.0\"}"))
            .await
            .expect_err("a string manifest is refused");
        assert!(err.to_string().contains("JSON object"), "{err}");
        assert_eq!(stub.requests(), 0);
    })
    .await;
}

#[tokio::test]
async fn query_retries_after_503_then_succeeds() {
    bounded(async {
        let (stub, base) = seeded().await;
        stub.fail_next(2, Fault::Http503);
        let env = client(&base)
            .get_flash_environment("env-1")
            .await
            .expect("third attempt succeeds");
        assert_eq!(env.id, "env-1");
        assert_eq!(stub.requests(), 3);
    })
    .await;
}

#[tokio::test]
async fn query_retries_transient_graphql_error_then_succeeds() {
    bounded(async {
        let (stub, base) = seeded().await;
        stub.fail_next(1, Fault::GraphQl("Service temporarily unavailable"));
        stub.fail_next(1, Fault::GraphQl("Too Many Requests"));
        client(&base)
            .get_flash_build("build-1")
            .await
            .expect("third attempt succeeds");
        assert_eq!(stub.requests(), 3);
    })
    .await;
}

#[tokio::test]
async fn query_retries_non_json_answer_as_transport_error() {
    bounded(async {
        let (stub, base) = seeded().await;
        stub.fail_next(1, Fault::NonJson);
        client(&base)
            .get_flash_build("build-1")
            .await
            .expect("second attempt succeeds");
        assert_eq!(stub.requests(), 2);

        stub.fail_next(3, Fault::NonJson);
        let err = client(&base)
            .get_flash_build("build-1")
            .await
            .expect_err("every attempt is HTML");
        assert!(
            matches!(err.root(), StateManagerError::Transport { .. }),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(
            text.contains("not JSON") && text.contains("text/html"),
            "{text}"
        );
        assert!(text.contains("RUNPOD_API_BASE_URL"), "{text}");
    })
    .await;
}

#[tokio::test]
async fn query_retries_after_timeout() {
    bounded(async {
        let (stub, base) = seeded().await;
        stub.fail_next(1, Fault::Slow(Duration::from_secs(3)));
        let config = StateManagerConfig::new(&base, "test-key")
            .expect("config")
            .with_timeout(Duration::from_millis(300))
            .with_backoff_base(Duration::from_millis(1));
        let client = StateManagerClient::new(config).expect("client");
        client
            .get_flash_environment("env-1")
            .await
            .expect("second attempt is fast");
        assert_eq!(stub.requests(), 2);

        stub.fail_next(1, Fault::Slow(Duration::from_secs(3)));
        let once =
            StateManagerClient::new(client.config().clone().with_max_attempts(1)).expect("client");
        let err = once
            .get_flash_environment("env-1")
            .await
            .expect_err("times out");
        assert!(matches!(err, StateManagerError::Timeout { .. }), "{err:?}");
        assert!(err.to_string().contains("did not answer within"), "{err}");
    })
    .await;
}

#[tokio::test]
async fn retry_exhaustion_names_operation_attempts_and_last_error() {
    bounded(async {
        let (stub, base) = seeded().await;
        stub.fail_next(10, Fault::Http503);
        let err = client(&base)
            .get_flash_environment("env-1")
            .await
            .expect_err("always 503");
        assert_eq!(stub.requests(), 3, "3 attempts, no more");
        let text = err.to_string();
        assert!(
            text.contains("`getFlashEnvironment` failed after 3 attempts"),
            "{text}"
        );
        assert!(text.contains("HTTP 503"), "{text}");
        assert!(
            matches!(err.root(), StateManagerError::Http { status: 503, .. }),
            "{err:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn mutation_is_sent_exactly_once() {
    bounded(async {
        let (stub, base) = seeded().await;
        stub.fail_next(1, Fault::Http503);
        let err = client(&base)
            .update_flash_build_manifest("build-1", &manifest("changed"))
            .await
            .expect_err("503 is final for a mutation");
        assert!(
            matches!(err, StateManagerError::Http { status: 503, .. }),
            "{err:?}"
        );
        assert_eq!(stub.requests(), 1);
        assert_eq!(stub.build("build-1"), Some(manifest("demo")));
    })
    .await;
}

#[tokio::test]
async fn errors_fail_the_call_even_with_data() {
    bounded(async {
        let (stub, base) = seeded().await;
        stub.fail_next(1, Fault::ErrorsWithData);
        let err = client(&base)
            .get_flash_environment("env-1")
            .await
            .expect_err("errors wins over data");
        match &err {
            StateManagerError::GraphQl { operation, message } => {
                assert_eq!(operation, "getFlashEnvironment");
                assert_eq!(message, "partial failure; second problem");
            }
            other => panic!("expected a GraphQL error, got {other:?}"),
        }
        assert_eq!(stub.requests(), 1, "a non-transient message is not retried");
    })
    .await;
}

#[tokio::test]
async fn unauthorized_is_final_and_points_at_the_key() {
    bounded(async {
        let (stub, base) = seeded().await;
        stub.fail_next(1, Fault::Http401);
        let err = client(&base)
            .get_flash_environment("env-1")
            .await
            .expect_err("401");
        assert!(
            matches!(err, StateManagerError::Http { status: 401, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("RUNPOD_API_KEY"), "{err}");
        assert_eq!(stub.requests(), 1);
    })
    .await;
}

#[tokio::test]
async fn unreachable_server_is_a_transport_error_with_the_url() {
    bounded(async {
        let base = dead_base_url().await;
        let err = client(&base)
            .get_flash_environment("env-1")
            .await
            .expect_err("nothing listens");
        assert!(
            matches!(err.root(), StateManagerError::Transport { .. }),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(text.contains(&format!("{base}/graphql")), "{text}");
        assert!(text.contains("failed after 3 attempts"), "{text}");
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// ManifestFetcher
// ---------------------------------------------------------------------------------------------

fn fetcher(base: &str, local: &Path) -> ManifestFetcher {
    ManifestFetcher::new()
        .with_state_manager(client(base), "env-1")
        .with_local_path(local)
}

#[tokio::test]
async fn fetcher_prefers_the_state_manager() {
    bounded(async {
        let (_stub, base) = seeded().await;
        let dir = tempfile::tempdir().expect("tempdir");
        let local = dir.path().join("flash_manifest.json");
        write_json(&local, &manifest("local"));
        let (manifest, source) = fetcher(&base, &local)
            .get_with_source()
            .await
            .expect("manifest");
        assert_eq!(manifest.project_name, "demo");
        assert_eq!(
            source,
            ManifestSource::StateManager {
                build_id: "build-1".into()
            }
        );
    })
    .await;
}

#[tokio::test]
async fn fetcher_caches_for_the_ttl() {
    bounded(async {
        let (stub, base) = seeded().await;
        let dir = tempfile::tempdir().expect("tempdir");
        let fetcher = fetcher(&base, &dir.path().join("flash_manifest.json"));
        for _ in 0..20 {
            let manifest = fetcher.get().await.expect("manifest");
            assert_eq!(manifest.project_name, "demo");
        }
        assert_eq!(stub.requests(), 2, "one fetch = environment + build");
        let endpoints = fetcher.resources_endpoints().await.expect("endpoints");
        assert_eq!(endpoints.len(), 2);
        assert_eq!(stub.requests(), 2);
    })
    .await;
}

#[tokio::test]
async fn concurrent_callers_after_expiry_share_one_fetch() {
    bounded(async {
        let (stub, base) = seeded().await;
        let dir = tempfile::tempdir().expect("tempdir");
        let fetcher = Arc::new(
            fetcher(&base, &dir.path().join("flash_manifest.json"))
                .with_ttl(Duration::from_millis(400)),
        );
        fetcher.get().await.expect("first fetch");
        assert_eq!(stub.requests(), 2);

        tokio::time::sleep(Duration::from_millis(500)).await;
        stub.set_delay(Duration::from_millis(50));
        stub.set_build("build-1", manifest("after-expiry"));
        let callers: Vec<_> = (0..32)
            .map(|_| {
                let fetcher = fetcher.clone();
                tokio::spawn(async move { fetcher.get().await })
            })
            .collect();
        for caller in callers {
            let manifest = caller.await.expect("task").expect("manifest");
            assert_eq!(manifest.project_name, "after-expiry");
        }
        assert_eq!(
            stub.requests(),
            4,
            "32 callers after expiry cause one fetch"
        );
    })
    .await;
}

#[tokio::test]
async fn invalidate_forces_a_refetch() {
    bounded(async {
        let (stub, base) = seeded().await;
        let dir = tempfile::tempdir().expect("tempdir");
        let fetcher = fetcher(&base, &dir.path().join("flash_manifest.json"));
        assert_eq!(fetcher.get().await.expect("get").project_name, "demo");
        stub.set_build("build-1", manifest("redeployed"));
        assert_eq!(
            fetcher.get().await.expect("get").project_name,
            "demo",
            "still cached"
        );
        fetcher.invalidate().await;
        assert_eq!(fetcher.get().await.expect("get").project_name, "redeployed");
        assert_eq!(stub.requests(), 4);
    })
    .await;
}

#[tokio::test]
async fn fetched_manifest_is_written_back_atomically() {
    bounded(async {
        let (_stub, base) = seeded().await;
        let dir = tempfile::tempdir().expect("tempdir");
        let local = dir.path().join("flash_manifest.json");
        write_json(&local, &manifest("stale-local"));
        fetcher(&base, &local).get().await.expect("manifest");

        assert_eq!(read_json(&local), manifest("demo"), "unknown keys kept too");
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .expect("read dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["flash_manifest.json"], "no temp files left behind");
    })
    .await;
}

#[tokio::test]
async fn falls_back_to_local_file_when_server_is_down() {
    bounded(async {
        let base = dead_base_url().await;
        let dir = tempfile::tempdir().expect("tempdir");
        let local = dir.path().join("flash_manifest.json");
        write_json(&local, &manifest("local"));
        let (manifest, source) = fetcher(&base, &local)
            .get_with_source()
            .await
            .expect("local fallback");
        assert_eq!(manifest.project_name, "local");
        assert_eq!(source, ManifestSource::LocalFile(local.clone()));
        assert_eq!(
            manifest
                .resources_endpoints
                .as_ref()
                .and_then(|e| e.get("api"))
                .map(String::as_str),
            Some("https://ep-api.api.runpod.ai")
        );
    })
    .await;
}

#[tokio::test]
async fn falls_back_to_local_file_when_nothing_is_persisted() {
    bounded(async {
        let (_stub, base) = seeded().await;
        let dir = tempfile::tempdir().expect("tempdir");
        let local = dir.path().join("flash_manifest.json");
        write_json(&local, &manifest("local"));
        let fetcher = ManifestFetcher::new()
            .with_state_manager(client(&base), "env-new")
            .with_local_path(&local);
        let (_, source) = fetcher.get_with_source().await.expect("local fallback");
        assert_eq!(source, ManifestSource::LocalFile(local));
    })
    .await;
}

#[tokio::test]
async fn reports_both_causes_when_no_source_works() {
    bounded(async {
        let base = dead_base_url().await;
        let dir = tempfile::tempdir().expect("tempdir");
        let local = dir.path().join("missing.json");
        let err = fetcher(&base, &local)
            .get()
            .await
            .expect_err("nothing works");
        let text = err.to_string();
        assert!(text.contains("State Manager failed"), "{text}");
        assert!(text.contains("missing.json"), "{text}");
    })
    .await;
}

#[tokio::test]
async fn from_lookup_wires_env_vars() {
    bounded(async {
        let (_stub, base) = seeded().await;
        let dir = tempfile::tempdir().expect("tempdir");
        let local = dir.path().join("flash_manifest.json");
        write_json(&local, &manifest("local"));
        let local_text = local.to_string_lossy().into_owned();

        let only_file = {
            let local_text = local_text.clone();
            move |name: &str| (name == "FLASH_MANIFEST_PATH").then(|| local_text.clone())
        };
        let (_, source) = ManifestFetcher::from_lookup(only_file)
            .get_with_source()
            .await
            .expect("local only");
        assert_eq!(source, ManifestSource::LocalFile(local.clone()));

        let vars: HashMap<&str, String> = HashMap::from([
            ("FLASH_MANIFEST_PATH", local_text),
            ("FLASH_ENVIRONMENT_ID", "env-1".to_owned()),
            ("RUNPOD_API_KEY", "test-key".to_owned()),
            ("RUNPOD_API_BASE_URL", format!("{base}/")),
        ]);
        let fetcher = ManifestFetcher::from_lookup(|name| vars.get(name).cloned());
        let (manifest, source) = fetcher.get_with_source().await.expect("remote");
        assert_eq!(manifest.project_name, "demo");
        assert!(matches!(source, ManifestSource::StateManager { .. }));
    })
    .await;
}
