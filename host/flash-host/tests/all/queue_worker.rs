//! The queue handler end to end: a real `flash-host` process with the real test guest,
//! taking jobs from an in-test job source over the RunPod worker protocol.

use std::time::Duration;

use crate::support::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_jobs_succeed_fail_typed_and_never_kill_the_worker() {
    let tmp = tempfile::tempdir().unwrap();
    let artifact = rust_guest_artifact(tmp.path(), |m| {
        m.resources
            .get_mut("test_queue")
            .unwrap()
            .execution_timeout_ms = Some(1500);
        m.resources
            .get_mut("test_queue")
            .unwrap()
            .env
            .insert("GREETING".into(), "hi".into());
    })
    .await;
    let source = JobSource::start().await;
    let mut env = source.worker_env("ep-queue");
    env.extend(envs(&[
        ("FLASH_RESOURCE_NAME", "test_queue"),
        ("FLASH_MAX_MEMORY_MB", "64"),
        ("FLASH_CONCURRENCY", "2"),
        ("SECRET_OF_THE_HOST", "must-not-leak"),
    ]));
    env.push(("FLASH_ARTIFACT_URL".into(), artifact.display().to_string()));
    let _host = spawn_host(tmp.path(), "queue", &env);

    // Named and positional arguments, sync and async functions.
    let r = source
        .run(
            "ep-queue",
            json!({"function_name": "add", "kwargs": {"a": 2, "b": 3}}),
        )
        .await;
    assert_eq!(r, json!({"output": 5}), "{}", log(tmp.path(), "queue"));
    let r = source
        .run(
            "ep-queue",
            json!({"function_name": "async_add", "args": [40, 2]}),
        )
        .await;
    assert_eq!(r, json!({"output": 42}));
    let r = source
        .run(
            "ep-queue",
            json!({"function_name": "echo", "kwargs": {"value": {"nested": [1, "x"]}}}),
        )
        .await;
    assert_eq!(r, json!({"output": {"nested": [1, "x"]}}));

    // The guest sees its declared env and FLASH_RESOURCE_NAME, and nothing of the host's.
    let r = source
        .run(
            "ep-queue",
            json!({"function_name": "env_var", "kwargs": {"name": "GREETING"}}),
        )
        .await;
    assert_eq!(r, json!({"output": "hi"}));
    let r = source
        .run(
            "ep-queue",
            json!({"function_name": "env_var", "kwargs": {"name": "FLASH_RESOURCE_NAME"}}),
        )
        .await;
    assert_eq!(r, json!({"output": "test_queue"}));
    let r = source
        .run(
            "ep-queue",
            json!({"function_name": "env_var", "kwargs": {"name": "SECRET_OF_THE_HOST"}}),
        )
        .await;
    assert_eq!(r, json!({"output": null}));

    // Partial output reaches the job's stream in order, before the result.
    let id = source.submit(
        "ep-queue",
        json!({"function_name": "count", "kwargs": {"n": 3}}),
    );
    assert_eq!(
        source.result(&id, Duration::from_secs(10)).await,
        json!({"output": 3})
    );
    let chunks = source
        .inner
        .lock()
        .unwrap()
        .streams
        .get(&id)
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        chunks,
        vec![
            json!({"output": {"i": 0}}),
            json!({"output": {"i": 1}}),
            json!({"output": {"i": 2}})
        ]
    );

    // Typed failures.
    let r = source
        .run("ep-queue", json!({"function_name": "nope"}))
        .await;
    let (kind, msg) = error_of(&r);
    assert_eq!(kind, "unknown-function");
    assert!(msg.contains("no function `nope`"), "{msg}");
    let r = source
        .run(
            "ep-queue",
            json!({"function_name": "other_add", "kwargs": {"a": 1, "b": 1}}),
        )
        .await;
    let (kind, msg) = error_of(&r);
    assert_eq!(kind, "unknown-function");
    assert!(msg.contains("served by resource `test_other`"), "{msg}");
    let r = source
        .run(
            "ep-queue",
            json!({"function_name": "add", "kwargs": {"a": "two", "b": 3}}),
        )
        .await;
    assert_eq!(error_of(&r).0, "invalid-input");
    let r = source.run("ep-queue", json!(["not", "an", "object"])).await;
    let (kind, msg) = error_of(&r);
    assert_eq!(kind, "invalid-input");
    assert!(msg.contains("serves several functions"), "{msg}");
    let r = source
        .run(
            "ep-queue",
            json!({"function_name": "fail", "kwargs": {"message": "boom"}}),
        )
        .await;
    let (kind, msg) = error_of(&r);
    assert_eq!(
        (kind.as_str(), msg.contains("boom")),
        ("user-error", true),
        "{msg}"
    );
    let r = source
        .run("ep-queue", json!({"function_name": "trap"}))
        .await;
    // A panic: the guest's own message and location, and a demangled backtrace.
    let (kind, msg) = error_of(&r);
    assert_eq!(kind, "user-error", "{msg}");
    assert!(
        msg.contains("function `trap` panicked at src/lib.rs:")
            && msg.contains("trap() was called"),
        "{msg}"
    );
    let traceback = r["error"]
        .as_str()
        .and_then(|e| serde_json::from_str::<serde_json::Value>(e).ok())
        .and_then(|e| e["error_traceback"].as_str().map(str::to_string))
        .unwrap_or_default();
    assert!(traceback.contains("rust_guest::trap"), "{traceback}");
    assert!(!traceback.contains("_ZN"), "mangled frames: {traceback}");
    let r = source
        .run("ep-queue", json!({"function_name": "spin"}))
        .await;
    let (kind, msg) = error_of(&r);
    assert_eq!(kind, "timeout");
    assert!(msg.contains("deadline of 1500 ms"), "{msg}");
    let r = source
        .run(
            "ep-queue",
            json!({"function_name": "grow", "kwargs": {"mb": 200}}),
        )
        .await;
    let (kind, msg) = error_of(&r);
    assert_eq!(kind, "internal");
    assert!(msg.contains("exceeded the memory cap of 64 MiB"), "{msg}");
    let r = source
        .run(
            "ep-queue",
            json!({"function_name": "grow", "kwargs": {"mb": 8}}),
        )
        .await;
    assert!(
        r.get("output").is_some(),
        "a small allocation still works: {r}"
    );

    // After all that, the same worker still serves, with two jobs at once.
    let a = source.submit("ep-queue", json!({"function_name": "add", "args": [1, 1]}));
    let b = source.submit("ep-queue", json!({"function_name": "add", "args": [2, 2]}));
    assert_eq!(
        source.result(&a, Duration::from_secs(10)).await,
        json!({"output": 2})
    );
    assert_eq!(
        source.result(&b, Duration::from_secs(10)).await,
        json!({"output": 4})
    );

    // Protocol details: raw worker key on takes, heartbeats with the job list and version.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let inner = source.inner.lock().unwrap();
    assert!(
        inner
            .take_auth
            .iter()
            .all(|a| a.as_deref() == Some("worker-key"))
    );
    assert!(!inner.pings.is_empty(), "no heartbeat");
    assert!(
        inner
            .pings
            .iter()
            .all(|(w, q)| w == "worker-ep-queue" && q.get("runpod_version").is_some())
    );
}

#[tokio::test]
async fn a_single_function_resource_takes_the_bare_input() {
    let tmp = tempfile::tempdir().unwrap();
    let artifact = rust_guest_artifact(tmp.path(), |_| {}).await;
    let source = JobSource::start().await;
    let mut env = source.worker_env("ep-other");
    env.extend(envs(&[("FLASH_RESOURCE_NAME", "test_other")]));
    env.push(("FLASH_ARTIFACT_URL".into(), artifact.display().to_string()));
    let _host = spawn_host(tmp.path(), "other", &env);
    let r = source.run("ep-other", json!({"a": 20, "b": 22})).await;
    assert_eq!(r, json!({"output": 42}), "{}", log(tmp.path(), "other"));
}

#[tokio::test]
async fn a_stop_request_aborts_the_running_job_and_frees_its_slot() {
    let tmp = tempfile::tempdir().unwrap();
    let artifact = rust_guest_artifact(tmp.path(), |_| {}).await;
    let source = JobSource::start().await;
    let mut env = source.worker_env("ep-stop");
    env.extend(envs(&[
        ("FLASH_RESOURCE_NAME", "test_queue"),
        ("FLASH_CONCURRENCY", "1"),
    ]));
    env.push(("FLASH_ARTIFACT_URL".into(), artifact.display().to_string()));
    let _host = spawn_host(tmp.path(), "stop", &env);

    // `spin` never returns on its own (the default deadline is minutes away).
    let spinning = source.submit("ep-stop", json!({"function_name": "spin"}));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let running = source
            .inner
            .lock()
            .unwrap()
            .pings
            .iter()
            .any(|(_, q)| q.get("job_id") == Some(&spinning));
        if running {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the job never showed up in a heartbeat\n{}",
            log(tmp.path(), "stop")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    source.inner.lock().unwrap().to_stop.push(spinning.clone());

    // The only slot is free again: the next job completes, and the stopped one posted nothing.
    let r = source
        .run("ep-stop", json!({"function_name": "add", "args": [1, 2]}))
        .await;
    assert_eq!(r, json!({"output": 3}), "{}", log(tmp.path(), "stop"));
    assert!(
        !source.inner.lock().unwrap().has_result(&spinning),
        "a stopped job must not post a result"
    );
    assert!(log(tmp.path(), "stop").contains("job stopped by the job source"));
}
