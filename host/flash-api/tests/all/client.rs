//! `StateManagerClient` against the stand-in: wire shape, the order in which an answer is
//! judged, and the retry policy.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use flash_api::stub::{Fault, Stub, dead_base_url, start};
use flash_api::{ApiError, ClientConfig, KeySource, StateManagerClient};
use serde_json::{Value, json};

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
    let config = ClientConfig::new(base, "test-key", KeySource::Env)
        .expect("config")
        .with_timeout(Duration::from_secs(5))
        .with_backoff_base(Duration::from_millis(1))
        .with_max_attempts(3);
    StateManagerClient::new(config).expect("client")
}

/// Every test runs under this bound, so a hang fails instead of stalling the suite.
pub(crate) async fn bounded<F: Future>(test: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(30), test)
        .await
        .expect("test exceeded 30 s")
}

// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn flash_environment_sends_flash_wire_shape() {
    bounded(async {
        let (stub, base) = seeded().await;
        let env = client(&base)
            .flash_environment("env-1")
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
async fn flash_build_returns_the_manifest_object() {
    bounded(async {
        let (stub, base) = seeded().await;
        let build = client(&base).flash_build("build-1").await.expect("build");
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
            .flash_environment("nope")
            .await
            .expect_err("must fail");
        assert!(
            matches!(
                err,
                ApiError::NotFound {
                    kind: "environment",
                    ..
                }
            ),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(text.contains("environment `nope` not found"), "{text}");
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
            .update_build_manifest("build-1", &updated)
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
            .update_build_manifest("build-1", &json!("{\"version\":\"1.0\"}"))
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
            .flash_environment("env-1")
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
            .flash_build("build-1")
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
            .flash_build("build-1")
            .await
            .expect("second attempt succeeds");
        assert_eq!(stub.requests(), 2);

        stub.fail_next(3, Fault::NonJson);
        let err = client(&base)
            .flash_build("build-1")
            .await
            .expect_err("every attempt is HTML");
        assert!(matches!(err.root(), ApiError::Transport { .. }), "{err:?}");
        let text = err.to_string();
        assert!(
            text.contains("not JSON") && text.contains("text/html"),
            "{text}"
        );
        assert!(
            text.contains("could not talk to the State Manager"),
            "{text}"
        );
    })
    .await;
}

#[tokio::test]
async fn query_retries_after_timeout() {
    bounded(async {
        let (stub, base) = seeded().await;
        stub.fail_next(1, Fault::Slow(Duration::from_secs(3)));
        let config = ClientConfig::new(&base, "test-key", KeySource::Env)
            .expect("config")
            .with_timeout(Duration::from_millis(300))
            .with_backoff_base(Duration::from_millis(1));
        let client = StateManagerClient::new(config).expect("client");
        client
            .flash_environment("env-1")
            .await
            .expect("second attempt is fast");
        assert_eq!(stub.requests(), 2);

        stub.fail_next(1, Fault::Slow(Duration::from_secs(3)));
        let once =
            StateManagerClient::new(client.config().clone().with_max_attempts(1)).expect("client");
        let err = once
            .flash_environment("env-1")
            .await
            .expect_err("times out");
        assert!(matches!(err, ApiError::Timeout { .. }), "{err:?}");
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
            .flash_environment("env-1")
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
            matches!(err.root(), ApiError::Http { status: 503, .. }),
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
            .update_build_manifest("build-1", &manifest("changed"))
            .await
            .expect_err("503 is final for a mutation");
        assert!(matches!(err, ApiError::Http { status: 503, .. }), "{err:?}");
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
            .flash_environment("env-1")
            .await
            .expect_err("errors wins over data");
        match &err {
            ApiError::GraphQl { operation, message } => {
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
            .flash_environment("env-1")
            .await
            .expect_err("401");
        assert!(matches!(err, ApiError::Unauthorized { .. }), "{err:?}");
        assert!(
            err.to_string()
                .contains("rejected the API key from RUNPOD_API_KEY"),
            "{err}"
        );
        assert_eq!(stub.requests(), 1);
    })
    .await;
}

#[tokio::test]
async fn unreachable_server_fails_at_once_and_says_what_to_start() {
    bounded(async {
        let base = dead_base_url().await;
        let started = std::time::Instant::now();
        let err = client(&base)
            .flash_environment("env-1")
            .await
            .expect_err("nothing listens");
        assert!(matches!(err, ApiError::Unreachable { .. }), "{err:?}");
        let text = err.to_string();
        assert!(
            text.contains(&format!("cannot reach the server at {base}"))
                && text.contains("flash server"),
            "{text}"
        );
        // Not retried: no backoff waits before the answer (the backoff base is 1 ms, so
        // this bounds the attempts, not the machine's speed).
        assert!(started.elapsed() < Duration::from_secs(10));
    })
    .await;
}

#[tokio::test]
async fn login_operations_go_without_a_key() {
    bounded(async {
        let (stub, base) = seeded().await;
        stub.script_auth(
            Some("2026-11-28T00:10:00Z"),
            &[("PENDING", None), ("APPROVED", Some("rp_new"))],
        );
        let anonymous =
            StateManagerClient::new(ClientConfig::anonymous(&base).expect("config")).unwrap();
        let request = anonymous.create_auth_request().await.expect("create");
        assert_eq!(
            (request.id.as_str(), request.status.as_str()),
            ("auth-1", "PENDING")
        );
        assert_eq!(request.expires_at.as_deref(), Some("2026-11-28T00:10:00Z"));
        let pending = anonymous.auth_request_status("auth-1").await.unwrap();
        assert_eq!(
            (pending.status.as_str(), pending.api_key),
            ("PENDING", None)
        );
        let approved = anonymous.auth_request_status("auth-1").await.unwrap();
        assert_eq!(approved.api_key.as_deref(), Some("rp_new"));
        assert!(
            !format!("{approved:?}").contains("rp_new"),
            "Debug redacts the key"
        );
        let err = anonymous.auth_request_status("nope").await.unwrap_err();
        assert!(matches!(err, ApiError::NotFound { .. }), "{err:?}");

        let seen = stub.seen();
        assert_eq!(seen[0].operation, "createFlashAuthRequest");
        assert_eq!(seen[0].body["variables"], json!({}));
        assert_eq!(
            seen[1].body["variables"],
            json!({ "flashAuthRequestId": "auth-1" })
        );
        assert!(
            seen.iter().all(|s| s.authorization.is_none()),
            "an anonymous client sends no Authorization: {seen:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_server_that_wants_a_key_for_login_says_so() {
    bounded(async {
        let (stub, base) = seeded().await;
        stub.fail_next(1, Fault::Http401);
        let anonymous =
            StateManagerClient::new(ClientConfig::anonymous(&base).expect("config")).unwrap();
        let err = anonymous.create_auth_request().await.unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("refused a request sent without an API key")
                && text.contains("does not offer `flash login`"),
            "{text}"
        );
    })
    .await;
}
