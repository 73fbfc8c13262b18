//! The supervisor with real worker processes: scale-up from zero under load, scale-down
//! after `idleTimeout`, `workersMin` floors, crash restarts, endpoint updates and deletion
//! stopping workers.
//!
//! The rules themselves (how many workers for what load, the floor, the backoff between
//! restarts, who is drained first) are unit tests of the pure `supervisor::scaling`
//! functions; these tests prove that real processes follow them. They wait by polling with
//! deadlines, never by sleeping for a guessed time.

use crate::common;

use std::time::{Duration, Instant};

use crate::common::TestServer;
use serde_json::{Value, json};

fn total(h: &Value) -> i64 {
    ["ready", "initializing", "unhealthy"]
        .iter()
        .map(|k| h["workers"][k].as_i64().unwrap_or(0))
        .sum()
}

fn alive(pid: u32) -> bool {
    // Our own children are reaped by the supervisor, so a gone pid does not linger as a zombie.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit(')')
            .next()
            .is_some_and(|r| !r.trim_start().starts_with('Z'))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scales_up_from_zero_under_load_and_down_when_idle() {
    let s = TestServer::start().await;
    let ep = s
        .python_endpoint(
            "elastic",
            "echo",
            json!({ "workersMin": 0, "workersMax": 3,
            "scalerType": "REQUEST_COUNT", "scalerValue": 1, "idleTimeout": 2 }),
        )
        .await;
    let ep_id = ep["id"].as_str().expect("id").to_string();
    // No load, no workers (the rule: `scaling::tests`).
    let (_, idle) = s.get(&format!("/v2/{ep_id}/health")).await;
    assert_eq!(total(&idle), 0, "no load, no workers: {idle}");

    let mut jobs = Vec::new();
    for i in 0..6 {
        let (_, j) = s
            .post(
                &format!("/v2/{ep_id}/run"),
                json!({ "input": { "i": i, "sleep": 2 } }),
            )
            .await;
        jobs.push(j["id"].as_str().expect("id").to_string());
    }
    let peak = s
        .wait_health(&ep_id, Duration::from_secs(30), "3 workers", |h| {
            total(h) == 3
        })
        .await;
    assert!(total(&peak) <= 3);
    let pids = s.supervisor.worker_pids(&ep_id);
    assert_eq!(pids.len(), 3);
    let mut workers = std::collections::HashSet::new();
    for j in &jobs {
        let done = s.wait_final(&ep_id, j, Duration::from_secs(60)).await;
        assert_eq!(done["status"], "COMPLETED", "{done}");
        workers.insert(done["workerId"].as_str().unwrap_or_default().to_string());
    }
    assert!(workers.len() >= 2, "load was spread: {workers:?}");
    let (_, h) = s.get(&format!("/v2/{ep_id}/health")).await;
    assert!(total(&h) <= 3, "{h}");

    // Idle for idleTimeout (2 s): back to zero, processes gone.
    s.wait_health(&ep_id, Duration::from_secs(20), "scale to zero", |h| {
        total(h) == 0
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids.iter().any(|(_, pid)| alive(*pid)) {
        assert!(
            Instant::now() < deadline,
            "scaled-down workers still running: {pids:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queue_delay_scaler_respects_workers_min() {
    let s = TestServer::start().await;
    let ep = s
        .python_endpoint(
            "delay",
            "echo",
            json!({ "workersMin": 1, "workersMax": 2,
            "scalerType": "QUEUE_DELAY", "scalerValue": 1, "idleTimeout": 1 }),
        )
        .await;
    let ep_id = ep["id"].as_str().expect("id").to_string();
    s.wait_health(&ep_id, Duration::from_secs(60), "workersMin ready", |h| {
        h["workers"]["ready"] == 1
    })
    .await;
    let mut jobs = Vec::new();
    for i in 0..4 {
        let (_, j) = s
            .post(
                &format!("/v2/{ep_id}/run"),
                json!({ "input": { "i": i, "sleep": 1.5 } }),
            )
            .await;
        jobs.push(j["id"].as_str().expect("id").to_string());
    }
    // The queue waits longer than 1 s: a second worker is added.
    s.wait_health(&ep_id, Duration::from_secs(30), "second worker", |h| {
        total(h) == 2
    })
    .await;
    for j in &jobs {
        assert_eq!(
            s.wait_final(&ep_id, j, Duration::from_secs(60)).await["status"],
            "COMPLETED"
        );
    }
    // Idle again: down to workersMin (that it stays there is `scaling::tests`).
    s.wait_health(&ep_id, Duration::from_secs(20), "back to 1", |h| {
        total(h) == 1
    })
    .await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crashing_workers_restart_with_backoff_and_updates_replace_them() {
    let s = TestServer::start().await;
    let crash = json!(["sh", "-c", "exit 3"]).to_string();
    let data = s
        .gql(
            common::SAVE_ENDPOINT,
            json!({ "input": { "name": "broken", "workersMin": 1, "workersMax": 1,
            "template": { "env": [{ "key": "FLASH_WORKER_COMMAND", "value": crash }] } } }),
        )
        .await;
    let ep_id = data["saveEndpoint"]["id"].as_str().expect("id").to_string();
    // A worker that exits is started again (each start has its own log), after a backoff:
    // 0.5 s, then 1 s, … (the sequence is `scaling::tests`), so three starts take at least
    // 1.5 s, where restarting at once would take a few milliseconds.
    let logs = || {
        std::fs::read_dir(s.dir.path().join("logs").join(&ep_id))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut first_start = None;
    while logs() < 3 {
        if first_start.is_none() && logs() >= 1 {
            first_start = Some(Instant::now());
        }
        assert!(
            Instant::now() < deadline,
            "a crashed worker was not started again: {} start(s)",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let restarts_took = first_start.map_or(Duration::ZERO, |t| t.elapsed());
    assert!(
        restarts_took >= Duration::from_secs(1),
        "three starts of a crashing worker within {restarts_took:?}: no backoff"
    );

    // Fix the endpoint (update by id): a working worker replaces the broken one.
    let python = flash_tests::python().expect("venv");
    let worker = common::package_dir().join("tests/fixtures/worker.py");
    s.gql(
        common::SAVE_ENDPOINT,
        json!({ "input": { "id": ep_id, "name": "broken",
        "template": { "env": [
            { "key": "FLASH_WORKER_COMMAND", "value": json!([python, worker]).to_string() },
            { "key": "RUNPOD_SKIP_GPU_CHECK", "value": "true" },
            { "key": "RUNPOD_SKIP_AUTO_SYSTEM_CHECKS", "value": "true" } ] } } }),
    )
    .await;
    let (_, done) = s
        .post(
            &format!("/v2/{ep_id}/runsync"),
            json!({ "input": { "fixed": true } }),
        )
        .await;
    let done = if done["status"] == "COMPLETED" {
        done
    } else {
        s.wait_final(
            &ep_id,
            done["id"].as_str().expect("id"),
            Duration::from_secs(60),
        )
        .await
    };
    assert_eq!(done["status"], "COMPLETED", "{done}");

    // Deleting the endpoint stops its workers.
    let pids = s.supervisor.worker_pids(&ep_id);
    assert!(!pids.is_empty());
    s.gql(
        "mutation deleteEndpoint($id: String!) { deleteEndpoint(id: $id) }",
        json!({ "id": ep_id }),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while pids.iter().any(|(_, pid)| alive(*pid)) {
        assert!(
            Instant::now() < deadline,
            "workers of a deleted endpoint still run: {pids:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    s.stop().await;
}
