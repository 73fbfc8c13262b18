//! Compatibility with RunPod's own software: the pinned `runpod` Python package's client
//! (`runpod.Endpoint`) against our queue API, and its worker (`runpod.serverless.start`),
//! spawned by our supervisor, taking and completing jobs from our gateway.

use crate::common;

use std::time::Duration;

use crate::common::{TestServer, run_python};
use serde_json::json;

const CLIENT: &str = r#"
import json, os
import runpod  # reads RUNPOD_ENDPOINT_BASE_URL at import
runpod.api_key = os.environ["KEY"]
out = {}
ep = runpod.Endpoint(os.environ["EP"])
out["run_sync"] = ep.run_sync({"x": 1}, timeout=60)
job = ep.run({"x": 2})
out["run_output"] = job.output(timeout=60)
out["run_status"] = job.status()
out["health"] = ep.health()

sep = runpod.Endpoint(os.environ["SEP"])
sjob = sep.run({"n": 4})
out["stream"] = list(sjob.stream())
out["stream_status"] = sjob.status()

qep = runpod.Endpoint(os.environ["QEP"])
j1, j2, j3 = qep.run({"a": 1}), qep.run({"a": 2}), qep.run({"a": 3})
out["cancel"] = j1.cancel()
out["cancel_status"] = j1.status()
out["purge"] = qep.purge_queue()
out["after_purge"] = [j2.status(), j3.status()]
out["qhealth"] = qep.health()
print(json.dumps(out))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn runpod_client_against_runpod_worker() {
    let s = TestServer::start().await;
    let ep = s.python_endpoint("echo", "echo", json!({})).await;
    let sep = s.python_endpoint("streamer", "stream", json!({})).await;
    // No workers at all: jobs stay queued for cancel and purge.
    let qep = s
        .python_endpoint("parked", "echo", json!({ "workersMax": 0 }))
        .await;
    let envs = [
        ("RUNPOD_ENDPOINT_BASE_URL", format!("{}/v2", s.url)),
        ("KEY", s.key.clone()),
        ("EP", ep["id"].as_str().expect("id").to_string()),
        ("SEP", sep["id"].as_str().expect("id").to_string()),
        ("QEP", qep["id"].as_str().expect("id").to_string()),
    ];
    let out = run_python(CLIENT, &envs, Duration::from_secs(180)).await;

    assert_eq!(out["run_sync"]["echo"], json!({ "x": 1 }), "{out}");
    assert!(
        out["run_sync"]["worker"]
            .as_str()
            .is_some_and(|w| w.starts_with("w-")),
        "{out}"
    );
    assert_eq!(out["run_output"]["echo"], json!({ "x": 2 }), "{out}");
    assert_eq!(out["run_status"], "COMPLETED");
    assert_eq!(out["health"]["jobs"]["completed"], 2, "{out}");
    assert_eq!(out["health"]["workers"]["ready"], 1, "{out}");
    // Each chunk exactly once, in order.
    assert_eq!(
        out["stream"],
        json!([{ "part": 0 }, { "part": 1 }, { "part": 2 }, { "part": 3 }]),
        "{out}"
    );
    assert_eq!(out["stream_status"], "COMPLETED");
    assert_eq!(out["cancel"]["status"], "CANCELLED", "{out}");
    assert_eq!(out["cancel_status"], "CANCELLED");
    assert_eq!(out["purge"]["removed"], 2, "{out}");
    assert_eq!(out["after_purge"], json!(["CANCELLED", "CANCELLED"]));
    assert_eq!(out["qhealth"]["jobs"]["inQueue"], 0, "{out}");
    assert_eq!(out["qhealth"]["workers"]["ready"], 0, "{out}");

    let ep_id = ep["id"].as_str().expect("id");
    // The worker's endpoint key may read status, but not submit.
    let ai_key = ep["aiKey"].as_str().expect("aiKey");
    let (_, job) = s
        .post(&format!("/v2/{ep_id}/run"), json!({ "input": {} }))
        .await;
    let job_id = job["id"].as_str().expect("job id");
    let r = s
        .http
        .get(format!("{}/v2/{ep_id}/status/{job_id}", s.url))
        .bearer_auth(ai_key)
        .send()
        .await
        .expect("status");
    assert_eq!(r.status(), 200);
    let r = s
        .http
        .post(format!("{}/v2/{ep_id}/run", s.url))
        .bearer_auth(ai_key)
        .json(&json!({"input": {}}))
        .send()
        .await
        .expect("run");
    assert_eq!(r.status(), 401);
    // Empty input is kept, not stripped.
    let done = s.wait_final(ep_id, job_id, Duration::from_secs(60)).await;
    assert_eq!(done["output"]["echo"], json!({}), "{done}");
    for key in ["id", "workerId", "delayTime", "executionTime"] {
        assert!(done.get(key).is_some(), "/status lacks {key}: {done}");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failures_timeouts_cancellation_and_runsync_timeout() {
    let s = TestServer::start().await;
    let ep = s
        .python_endpoint("echo", "echo", json!({ "executionTimeoutMs": 4000 }))
        .await;
    let ep_id = ep["id"].as_str().expect("id").to_string();

    // A handler exception: FAILED with the SDK's error string.
    let (code, failed) = s
        .post(
            &format!("/v2/{ep_id}/runsync"),
            json!({ "input": { "fail": true } }),
        )
        .await;
    assert_eq!(code, 200);
    assert_eq!(failed["status"], "FAILED", "{failed}");
    assert!(
        failed["error"]
            .as_str()
            .is_some_and(|e| e.contains("asked to fail")),
        "{failed}"
    );

    // /runsync that outlives its wait answers a non-final status with the job id.
    let (_, pending) = s
        .post(
            &format!("/v2/{ep_id}/runsync?wait=300"),
            json!({ "input": { "sleep": 1.5 } }),
        )
        .await;
    assert!(
        matches!(pending["status"].as_str(), Some("IN_QUEUE" | "IN_PROGRESS")),
        "{pending}"
    );
    let pending_id = pending["id"].as_str().expect("id").to_string();
    let done = s
        .wait_final(&ep_id, &pending_id, Duration::from_secs(30))
        .await;
    assert_eq!(done["status"], "COMPLETED", "{done}");

    // Execution timeout: TIMED_OUT, and the worker is told to stop the job.
    let (_, slow) = s
        .post(
            &format!("/v2/{ep_id}/run"),
            json!({ "input": { "sleep": 60 } }),
        )
        .await;
    let slow_id = slow["id"].as_str().expect("id").to_string();
    let timed_out = s
        .wait_final(&ep_id, &slow_id, Duration::from_secs(30))
        .await;
    assert_eq!(timed_out["status"], "TIMED_OUT", "{timed_out}");

    // Cancel a running job: the worker stops it and is free for the next one.
    let (_, long) = s
        .post(
            &format!("/v2/{ep_id}/run"),
            json!({ "input": { "sleep": 3.5 } }),
        )
        .await;
    let long_id = long["id"].as_str().expect("id").to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, st) = s.get(&format!("/v2/{ep_id}/status/{long_id}")).await;
        if st["status"] == "IN_PROGRESS" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never started: {st}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, c) = s
        .post(&format!("/v2/{ep_id}/cancel/{long_id}"), json!(null))
        .await;
    assert_eq!(c["status"], "CANCELLED");
    let (_, quick) = s
        .post(
            &format!("/v2/{ep_id}/runsync"),
            json!({ "input": { "after": "cancel" } }),
        )
        .await;
    assert_eq!(quick["status"], "COMPLETED", "{quick}");
    let (_, st) = s.get(&format!("/v2/{ep_id}/status/{long_id}")).await;
    assert_eq!(
        st["status"], "CANCELLED",
        "a late result must not revive a cancelled job: {st}"
    );

    // Unknown endpoint and bad bodies are JSON errors.
    let (code, body) = s.post("/v2/nope/run", json!({ "input": {} })).await;
    assert_eq!(code, 404);
    assert!(body["error"].is_string());
    let (code, body) = s
        .post(&format!("/v2/{ep_id}/run"), json!({ "no_input": 1 }))
        .await;
    assert_eq!(code, 400, "{body}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn load_balanced_endpoint_is_proxied_from_zero_workers() {
    let s = TestServer::start().await;
    let python = flash_tests::python().expect("venv");
    let worker = common::package_dir().join("tests/fixtures/lb_worker.py");
    let data = s
        .gql(common::SAVE_ENDPOINT, json!({ "input": { "name": "api", "type": "LB", "workersMin": 0, "workersMax": 1,
            "template": { "env": [{ "key": "FLASH_WORKER_COMMAND", "value": json!([python, worker]).to_string() }] } } }))
        .await;
    let ep = &data["saveEndpoint"];
    assert_eq!(ep["scalerType"], "REQUEST_COUNT");
    let id = ep["id"].as_str().expect("id");
    let r = s
        .http
        .post(format!("{}/lb/{id}/items/7?q=1", s.url))
        .bearer_auth(&s.key)
        .json(&json!({ "name": "x" }))
        .send()
        .await
        .expect("proxy");
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["path"], "/items/7?q=1");
    assert_eq!(body["body"], json!({ "name": "x" }));
    // The gateway checked the caller; a worker that enforces auth itself (flash-host without
    // `FLASH_DISABLE_RP_AUTH=true`) is handed the key it holds as RUNPOD_API_KEY, never the
    // caller's own header and never the server's key. This worker holds none.
    assert!(
        body["auth"].is_null(),
        "a worker without a key is handed none: {body}"
    );
    let r = s
        .http
        .get(format!("{}/lb/{id}/hello", s.url))
        .send()
        .await
        .expect("unauthenticated");
    assert_eq!(r.status(), 401);
    let (_, health) = s.get(&format!("/v2/{id}/health")).await;
    assert_eq!(health["workers"]["ready"], 1, "{health}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn webhook_receives_the_final_status() {
    let s = TestServer::start().await;
    let ep = s.python_endpoint("hooked", "echo", json!({})).await;
    let ep_id = ep["id"].as_str().expect("id").to_string();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<serde_json::Value>(4);
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |axum::Json(body): axum::Json<serde_json::Value>| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(body).await;
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let hook = format!("http://{}/hook", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    let (_, job) = s
        .post(
            &format!("/v2/{ep_id}/run"),
            json!({ "input": { "w": 1 }, "webhook": hook }),
        )
        .await;
    let got = tokio::time::timeout(Duration::from_secs(60), rx.recv())
        .await
        .expect("webhook within 60 s")
        .expect("body");
    assert_eq!(got["id"], job["id"]);
    assert_eq!(got["status"], "COMPLETED");
    assert_eq!(got["output"]["echo"], json!({ "w": 1 }));
    s.stop().await;
}

/// A worker sees what RunPod gives one, and nothing of the server's own environment: the
/// template env, the platform's variables, and only the local-only ones the supervisor
/// names with a reason (`LOCAL_ONLY_ENV`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workers_get_what_runpod_gives_them_and_nothing_more() {
    let s = TestServer::start().await;
    let out = s.dir.path().join("worker-env.txt");
    let command = json!([
        "sh",
        "-c",
        "env > \"$ENV_OUT.tmp\" && mv \"$ENV_OUT.tmp\" \"$ENV_OUT\"; exec sleep 60"
    ]);
    let input = json!({
        "name": "env-probe",
        "workersMin": 1,
        "workersMax": 1,
        "template": { "env": [
            { "key": "FLASH_WORKER_COMMAND", "value": command.to_string() },
            { "key": "ENV_OUT", "value": out.display().to_string() },
            { "key": "USER_SETTING", "value": "kept" },
            { "key": "RUNPOD_API_KEY", "value": "from-the-template" },
        ]},
    });
    s.gql(common::SAVE_ENDPOINT, json!({ "input": input }))
        .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !out.is_file() {
        assert!(
            std::time::Instant::now() < deadline,
            "the worker never started"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let text = std::fs::read_to_string(&out).unwrap();
    let vars: std::collections::BTreeMap<&str, &str> =
        text.lines().filter_map(|l| l.split_once('=')).collect();
    let platform = [
        "RUNPOD_WEBHOOK_GET_JOB",
        "RUNPOD_WEBHOOK_POST_OUTPUT",
        "RUNPOD_WEBHOOK_POST_STREAM",
        "RUNPOD_WEBHOOK_PING",
        "RUNPOD_POD_ID",
        "RUNPOD_AI_API_KEY",
        "RUNPOD_ENDPOINT_ID",
        "RUNPOD_PING_INTERVAL",
    ];
    let template = ["FLASH_WORKER_COMMAND", "RUNPOD_API_KEY"];
    let local_only: Vec<&str> = flash_control::supervisor::LOCAL_ONLY_ENV
        .iter()
        .map(|(k, _)| *k)
        .collect();
    for key in vars
        .keys()
        .filter(|k| k.starts_with("RUNPOD_") || k.contains("FLASH_"))
    {
        assert!(
            platform.contains(key)
                || template.contains(key)
                || local_only.contains(key)
                || flash_control::supervisor::MACHINE_ENV.contains(key),
            "{key} is neither RunPod's, the template's nor a named local-only variable:\n{text}"
        );
    }
    for key in platform {
        assert!(vars.contains_key(key), "{key} missing:\n{text}");
    }
    assert_eq!(vars["USER_SETTING"], "kept");
    // The template's key, not the server's own.
    assert_eq!(vars["RUNPOD_API_KEY"], "from-the-template");
    assert!(!vars.contains_key("FLASH_ARTIFACT_URL"));
    // Each worker gets its own app dir under the server's data dir.
    assert!(
        vars["FLASH_APP_DIR"].starts_with(&s.dir.path().join("workers").display().to_string()),
        "{}",
        vars["FLASH_APP_DIR"]
    );
    s.stop().await;
}
