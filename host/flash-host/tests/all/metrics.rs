//! `/metrics`: names, labels and counts that match the traffic a real `flash-host` served.

use std::time::Duration;

use crate::support::*;
use serde_json::json;

/// The value of the sample `series` (name and labels, exactly as exposed), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|value| value.trim().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_balanced_metrics_count_calls_by_function_and_result_behind_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let artifact = rust_guest_artifact(tmp.path(), |_| {}).await;
    let (port, metrics_port) = (flash_tests::free_port(), flash_tests::free_port());
    let env = envs(&[
        ("FLASH_RESOURCE_NAME", "test_lb"),
        ("RUNPOD_API_KEY", "k"),
        ("FLASH_LISTEN_ADDR", &format!("127.0.0.1:{port}")),
        ("FLASH_METRICS_ADDR", &format!("127.0.0.1:{metrics_port}")),
        ("FLASH_ARTIFACT_URL", &artifact.display().to_string()),
    ]);
    let _host = spawn_host(tmp.path(), "lb", &env);
    let base = format!("http://127.0.0.1:{port}");
    let url = format!("{base}/ping");
    tokio::task::spawn_blocking(move || flash_tests::wait_for_http(&url, Duration::from_secs(30)))
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{e}\n{}", log(tmp.path(), "lb")));
    let http = reqwest::Client::new();

    for value in [1, 2, 3] {
        let r = http
            .post(format!("{base}/lb/echo"))
            .bearer_auth("k")
            .json(&json!({ "value": value }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let r = http
        .post(format!("{base}/lb/echo"))
        .bearer_auth("k")
        .json(&json!({"wrong": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = http
        .get(format!("{base}/lb/hello?name=Ada"))
        .bearer_auth("k")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // On the host's port, behind its key.
    let r = http.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .get(format!("{base}/metrics"))
        .bearer_auth("k")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = r.text().await.unwrap();
    let calls = |labels: &str| sample(&text, &format!("flash_host_calls_total{{{labels}}}"));
    assert_eq!(
        calls(r#"function="lb_echo",result="ok""#),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        calls(r#"function="lb_echo",result="invalid-input""#),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        calls(r#"function="lb_hello",result="ok""#),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"flash_host_call_duration_seconds_count{function="lb_echo"}"#
        ),
        Some(4.0),
        "{text}"
    );
    assert!(
        text.contains("# TYPE flash_host_call_duration_seconds histogram"),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"flash_host_calls_in_flight{component="rust-guest"}"#
        ),
        Some(0.0),
        "{text}"
    );
    assert!(
        sample(
            &text,
            r#"flash_host_ready_instances{component="rust-guest"}"#
        )
        .is_some(),
        "{text}"
    );

    // And on FLASH_METRICS_ADDR, the same counts without a key.
    let r = http
        .get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert_eq!(
        sample(
            &text,
            r#"flash_host_calls_total{function="lb_echo",result="ok"}"#
        ),
        Some(3.0),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_worker_counts_its_jobs_and_its_peer_calls_on_the_metrics_address() {
    let tmp = tempfile::tempdir().unwrap();
    let artifact = rust_guest_artifact(tmp.path(), |_| {}).await;
    let source = JobSource::start().await;
    let metrics_port = flash_tests::free_port();
    let mut env = source.worker_env("ep-queue");
    env.extend(envs(&[
        ("FLASH_RESOURCE_NAME", "test_queue"),
        ("FLASH_METRICS_ADDR", &format!("127.0.0.1:{metrics_port}")),
        // Nothing listens there: the peer call fails `unavailable` at once.
        (
            "FLASH_PEER_ENDPOINTS",
            &json!({"test_other": format!("http://127.0.0.1:{}", flash_tests::free_port())})
                .to_string(),
        ),
        ("FLASH_ARTIFACT_URL", &artifact.display().to_string()),
    ]));
    let _host = spawn_host(tmp.path(), "queue", &env);

    for _ in 0..2 {
        let r = source
            .run(
                "ep-queue",
                json!({"function_name": "add", "kwargs": {"a": 1, "b": 2}}),
            )
            .await;
        assert_eq!(r, json!({"output": 3}), "{}", log(tmp.path(), "queue"));
    }
    let r = source
        .run(
            "ep-queue",
            json!({"function_name": "remote_add", "kwargs": {"a": 1, "b": 2}}),
        )
        .await;
    assert_eq!(error_of(&r).0, "unavailable", "{r}");

    let text = reqwest::get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let at = |series: &str| sample(&text, series);
    assert_eq!(
        at(r#"flash_host_calls_total{function="add",result="ok"}"#),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        at(r#"flash_host_calls_total{function="remote_add",result="unavailable"}"#),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        at(
            r#"flash_host_peer_calls_total{function="other_add",resource="test_other",result="unavailable"}"#
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        at(
            r#"flash_host_peer_call_duration_seconds_count{function="other_add",resource="test_other"}"#
        ),
        Some(1.0),
        "{text}"
    );
}
