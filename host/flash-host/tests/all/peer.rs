//! Peer calls between real `flash-host` processes of different resource configs, with
//! the peer URLs discovered through a State Manager ([`flash_api::stub`]).

use std::sync::Arc;
use std::time::Duration;

use flash_api::stub::{Stub, start};
use serde_json::{Value, json};

use crate::support::*;

/// A State Manager stand-in whose environment `env-1` has an active build with `manifest`
/// (its `resources_endpoints` set to `endpoints`).
async fn state_manager(manifest: Value, endpoints: Value) -> (String, Arc<Stub>) {
    let mut manifest = manifest;
    manifest["resources_endpoints"] = endpoints;
    let stub = Arc::new(Stub::default());
    stub.add_environment("env-1", Some("build-1"));
    stub.set_build("build-1", manifest);
    let url = start(Arc::clone(&stub)).await;
    (url, stub)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_are_called_across_processes_through_discovered_urls() {
    let tmp = tempfile::tempdir().unwrap();
    let artifact = rust_guest_artifact(tmp.path(), |_| {}).await;
    let unpacked = tmp.path().join("unpacked");
    let manifest =
        flash_manifest::artifact::unpack(&artifact, &unpacked, Default::default()).unwrap();
    let source = JobSource::start().await;
    let lb_port = flash_tests::free_port();
    let (graphql, hits) = state_manager(
        serde_json::to_value(&manifest).unwrap(),
        json!({
            "test_other": format!("{}/ep-other", source.base()),
            "test_lb": format!("http://127.0.0.1:{lb_port}"),
            "test_queue": format!("{}/ep-queue", source.base()),
        }),
    )
    .await;
    let discovery = envs(&[
        ("FLASH_ENVIRONMENT_ID", "env-1"),
        ("RUNPOD_API_KEY", "user-key"),
        ("FLASH_PEER_TIMEOUT_S", "3"),
    ]);
    let with = |mut env: Vec<(String, String)>, extra: &[(&str, &str)]| {
        env.extend(discovery.clone());
        env.extend(envs(extra));
        env.push(("RUNPOD_API_BASE_URL".into(), graphql.clone()));
        env.push(("FLASH_ARTIFACT_URL".into(), artifact.display().to_string()));
        env
    };
    let _a = spawn_host(
        tmp.path(),
        "a",
        &with(
            source.worker_env("ep-queue"),
            &[("FLASH_RESOURCE_NAME", "test_queue")],
        ),
    );
    let _c = spawn_host(
        tmp.path(),
        "c",
        &with(
            vec![("FLASH_LISTEN_ADDR".into(), format!("127.0.0.1:{lb_port}"))],
            &[("FLASH_RESOURCE_NAME", "test_lb")],
        ),
    );
    let ping = format!("http://127.0.0.1:{lb_port}/ping");
    tokio::task::spawn_blocking(move || flash_tests::wait_for_http(&ping, Duration::from_secs(30)))
        .await
        .unwrap()
        .unwrap();

    // Queue → queue peer while `test_other` has no worker: a typed timeout, not a hang.
    let r = source
        .run(
            "ep-queue",
            json!({"function_name": "remote_add", "kwargs": {"a": 1, "b": 2}}),
        )
        .await;
    let (kind, msg) = error_of(&r);
    assert_eq!(kind, "timeout", "{msg}\n{}", log(tmp.path(), "a"));

    // Start the `test_other` worker: the same call now crosses processes and succeeds.
    let _b = spawn_host(
        tmp.path(),
        "b",
        &with(
            source.worker_env("ep-other"),
            &[("FLASH_RESOURCE_NAME", "test_other")],
        ),
    );
    let job = source.submit(
        "ep-queue",
        json!({"function_name": "remote_add", "kwargs": {"a": 40, "b": 2}}),
    );
    let r = source.result(&job, Duration::from_secs(30)).await;
    assert_eq!(
        r,
        json!({"output": 42}),
        "{}\n{}",
        log(tmp.path(), "a"),
        log(tmp.path(), "b")
    );
    // What the callee printed is tagged with the job the call was made for (`trace`), as
    // well as its own peer job: `flash logs --job` finds it on the other host.
    let printed = log(tmp.path(), "b")
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["message"] == "other_add(40, 2)")
        .unwrap_or_else(|| panic!("no guest line:\n{}", log(tmp.path(), "b")));
    assert_eq!(printed["trace"], job.as_str(), "{printed}");
    assert!(
        printed["job"].as_str().is_some_and(|own| own != job),
        "{printed}"
    );

    // Queue → load-balanced peer through `/execute`.
    let r = source
        .run("ep-queue", json!({"function_name": "call", "kwargs": {"function": "lb_echo", "input": {"value": "via lb"}}}))
        .await;
    assert_eq!(
        r,
        json!({"output": "via lb"}),
        "{}\n{}",
        log(tmp.path(), "a"),
        log(tmp.path(), "c")
    );

    // A remote error arrives typed in the caller.
    let r = source
        .run("ep-queue", json!({"function_name": "call", "kwargs": {"function": "lb_echo", "input": {"wrong": 1}}}))
        .await;
    assert_eq!(error_of(&r).0, "invalid-input", "{r}");
    let r = source
        .run(
            "ep-queue",
            json!({"function_name": "call", "kwargs": {"function": "no_such_fn", "input": {}}}),
        )
        .await;
    assert_eq!(error_of(&r).0, "unknown-function", "{r}");

    // A call chain deeper than the limit ends with call-depth-exceeded.
    let mut nested = json!({"function": "add", "input": {"a": 1, "b": 1}});
    for _ in 0..10 {
        nested = json!({"function": "call", "input": nested});
    }
    let r = source
        .run(
            "ep-queue",
            json!({"function_name": "call", "kwargs": nested}),
        )
        .await;
    let (kind, msg) = error_of(&r);
    assert_eq!(kind, "call-depth-exceeded", "{msg}");
    assert!(msg.contains("limit 8"), "{msg}");

    // Discovery went through the State Manager, and its answers were cached.
    let n = hits.requests();
    assert!(n >= 2, "the State Manager was not asked ({n} requests)");
    assert!(n <= 8, "the manifest was not cached: {n} GraphQL requests");
}

/// A resource whose build found no peer calls holds no key for them: a peer call from it
/// (a name the scan could not see) fails at once, saying why and what to change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resource_built_without_peer_calls_refuses_them_with_the_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let artifact = rust_guest_artifact(tmp.path(), |manifest| {
        let entry = manifest.resources.get_mut("test_queue").unwrap();
        entry.makes_remote_calls = false;
    })
    .await;
    let source = JobSource::start().await;
    let mut env = source.worker_env("ep-queue");
    env.extend(envs(&[
        ("FLASH_RESOURCE_NAME", "test_queue"),
        ("FLASH_ARTIFACT_URL", &artifact.display().to_string()),
    ]));
    let _a = spawn_host(tmp.path(), "a", &env);

    let r = source
        .run(
            "ep-queue",
            json!({"function_name": "remote_add", "kwargs": {"a": 1, "b": 2}}),
        )
        .await;
    let (kind, msg) = error_of(&r);
    assert_eq!(kind, "internal", "{msg}\n{}", log(tmp.path(), "a"));
    assert!(
        msg.contains("`other_add` runs on resource `test_other`, but resource `test_queue` was built as one that calls no other resource")
            && msg.contains("peer_call(\"other_add\", …)"),
        "{msg}"
    );
    // Calls within the resource still work.
    let r = source
        .run(
            "ep-queue",
            json!({"function_name": "add", "kwargs": {"a": 1, "b": 2}}),
        )
        .await;
    assert_eq!(r, json!({"output": 3}), "{}", log(tmp.path(), "a"));
}
