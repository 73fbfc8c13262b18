//! `flash deploy` and `flash call` end to end: the real CLI, a real `flash server` (spawned
//! on a free port with a temporary data dir) and real `flash-host` workers.
//!
//! The quickstart is copied to a temp dir (its `flash-sdk` path rewritten to the repo) so
//! this test can edit it — change a resource config, remove a resource — without touching
//! the example or racing the `build` tests, which build it in place.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use flash_tests::ChildGuard;
use flash_tests::control_plane::{Server, fails, flash, flash_command, flash_env, has_env, ok};
use serde_json::{Value, json};

/// A copy of the quickstart whose `flash-sdk` dependency points at this repo.
pub(crate) fn quickstart_copy() -> tempfile::TempDir {
    example_copy("quickstart", "quickstart")
}

/// A copy of `examples/<example>` (its `flash.toml`, `Cargo.toml`, `Cargo.lock`, `src/` and
/// `model/`) whose `flash-sdk` dependency points at this repo.
///
/// Each copy gets its own crate name: cargo identifies path packages by their path
/// relative to the workspace root, so same-named copies sharing the guest target dir would
/// overwrite each other's (and the example's own) build with the edited sources.
pub(crate) fn example_copy(example: &str, package: &str) -> tempfile::TempDir {
    static COPIES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let crate_name = format!(
        "{}_copy_{}",
        example.replace('-', "_"),
        COPIES.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    );
    let dir = tempfile::tempdir().unwrap();
    let source = flash_tests::repo_root().join("examples").join(example);
    for file in ["flash.toml", "Cargo.lock"] {
        if source.join(file).is_file() {
            std::fs::copy(source.join(file), dir.path().join(file)).unwrap();
        }
    }
    for sub in ["src", "model"] {
        let Ok(entries) = std::fs::read_dir(source.join(sub)) else {
            continue;
        };
        std::fs::create_dir(dir.path().join(sub)).unwrap();
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_file() {
                std::fs::copy(&path, dir.path().join(sub).join(path.file_name().unwrap())).unwrap();
            }
        }
    }
    let sdk = flash_tests::repo_root().join("guest-sdk/flash-sdk");
    let cargo = std::fs::read_to_string(source.join("Cargo.toml"))
        .unwrap()
        .replace(
            "path = \"../../guest-sdk/flash-sdk\"",
            &format!("path = {:?}", sdk.display().to_string()),
        );
    assert!(cargo.contains(&sdk.display().to_string()), "{cargo}");
    let package_line = format!("name = {package:?}");
    assert!(cargo.contains(&package_line), "{cargo}");
    let cargo = cargo.replacen(&package_line, &format!("name = {crate_name:?}"), 1);
    std::fs::write(dir.path().join("Cargo.toml"), cargo).unwrap();
    if let Ok(lock) = std::fs::read_to_string(dir.path().join("Cargo.lock")) {
        let lock = lock.replace(&package_line, &format!("name = {crate_name:?}"));
        std::fs::write(dir.path().join("Cargo.lock"), lock).unwrap();
    }
    dir
}

fn edit(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "`{from}` not in {}", path.display());
    std::fs::write(path, text.replacen(from, to, 1)).unwrap();
}

/// The `change` cell of `resource`'s row in the `deploy send` table.
fn change_of(table: &str, resource: &str) -> String {
    table
        .lines()
        .find(|l| {
            l.trim_start_matches('│')
                .trim()
                .starts_with(&format!("{resource} "))
        })
        .and_then(|l| {
            l.trim_end()
                .trim_end_matches('│')
                .rsplit('┆')
                .next()
                .map(|c| c.trim().to_string())
        })
        .unwrap_or_else(|| panic!("no row for {resource} in:\n{table}"))
}

fn deployed(project: &Path) -> Value {
    let state: Value =
        serde_json::from_slice(&std::fs::read(project.join(".flash/resources.json")).unwrap())
            .unwrap();
    state["environments"]["dev"]["resources"].clone()
}

pub(crate) fn call(project: &Path, server: &Server, function: &str, args: &str) -> Value {
    let out = flash(
        project,
        &server.url,
        server.data_dir.path(),
        &["call", function, args, "--env", "dev", "--timeout", "120"],
    );
    serde_json::from_str(&ok(&out, Some(server))).unwrap()
}

#[test]
fn deploy_lifecycle_on_the_embedded_server() {
    let project = quickstart_copy();
    let dir = project.path();
    let server = Server::start();
    let home = server.data_dir.path().to_path_buf();
    let run = |args: &[&str]| ok(&flash(dir, &server.url, &home, args), Some(&server));

    run(&["build"]);
    let out = run(&["deploy", "new", "dev"]);
    assert!(out.contains("Created app `quickstart`"), "{out}");
    assert!(out.contains("Created environment `dev`: env-"), "{out}");
    assert!(out.contains("Next: flash deploy send dev"), "{out}");
    let mothership = out
        .split("Mothership endpoint: ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no mothership in:\n{out}"))
        .to_string();
    assert_eq!(server.endpoint(&mothership)["name"], "mothership");

    // First send: both endpoints created, published, callable.
    let out = run(&["deploy", "send", "dev"]);
    assert_eq!(change_of(&out, "api"), "created", "{out}");
    assert_eq!(change_of(&out, "gpu_config"), "created", "{out}");
    let first = deployed(dir);
    let api_id = first["api"]["endpoint_id"].as_str().unwrap().to_string();
    let gpu_id = first["gpu_config"]["endpoint_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        out.contains(&format!("{}/lb/{api_id}", server.url)),
        "{out}"
    );
    assert!(
        out.contains(&format!("{}/v2/{gpu_id}", server.url)),
        "{out}"
    );

    let v = call(
        dir,
        &server,
        "embed",
        r#"{"text": "hello flash", "dims": 8}"#,
    );
    assert_eq!(v.as_array().map(Vec::len), Some(8), "{v}");
    let s = call(
        dir,
        &server,
        "similarity",
        r#"{"a": "good day", "b": "great day"}"#,
    );
    assert!(s.as_f64().is_some_and(|s| s > 0.0), "{s}");
    // Load-balanced route whose function calls `embed` on the queue endpoint (peer call).
    let p = call(dir, &server, "predict", r#"{"text": "what a great day"}"#);
    assert_eq!(p["label"], "positive", "{p}");
    assert_eq!(p["dims"], 64, "{p}");
    let st = call(dir, &server, "stats", "{}");
    assert_eq!(st["served_by"], "api", "{st}");

    // A failed call says what failed and how, exits by class (2: refused as asked), and
    // `--json` prints the job as received.
    let out = flash(
        dir,
        &server.url,
        &home,
        &["call", "embed", r#"{"text": "x", "dims": 0}"#],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(
            "\nerror: `embed` failed: invalid-input: dims must be in 1..=4096, got 0\n\n\
             its log lines: flash logs dev --job "
        ),
        "{stderr}"
    );
    let out = flash(
        dir,
        &server.url,
        &home,
        &["call", "embed", r#"{"text": "x", "dims": 0}"#, "--json"],
    );
    assert_eq!(out.status.code(), Some(2));
    let job: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(job["status"], "FAILED", "{job}");
    let error: Value = serde_json::from_str(job["error"].as_str().unwrap()).unwrap();
    assert_eq!(error["error_type"], "invalid-input", "{job}");
    let out = flash(dir, &server.url, &home, &["call", "stats", "{}", "--json"]);
    let body: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(body["served_by"], "api", "{body}");

    // `flash logs --job` shows what the function printed for that job, and only that.
    let out = flash(
        dir,
        &server.url,
        &home,
        &[
            "call",
            "embed",
            r#"{"text": "three little words", "dims": 8}"#,
            "--json",
        ],
    );
    let job: Value = serde_json::from_slice(&out.stdout).unwrap();
    let job_id = job["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{job}"))
        .to_string();
    let lines = ok(
        &flash(dir, &server.url, &home, &["logs", "dev", "--job", &job_id]),
        Some(&server),
    );
    assert!(
        lines.contains(&format!(
            " [{job_id}] INFO  embed: embedding 3 words into 8 dimensions"
        )) && lines.contains("gpu_config"),
        "{lines}"
    );
    assert!(
        !lines.contains("embedding 2 words"),
        "another job's line:\n{lines}"
    );
    let json_lines = ok(
        &flash(
            dir,
            &server.url,
            &home,
            &[
                "logs",
                "dev",
                "--job",
                &job_id,
                "--json",
                "--resource",
                "gpu_config",
            ],
        ),
        Some(&server),
    );
    let guest: Vec<Value> = json_lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|l: &Value| l["target"] == "guest")
        .collect();
    assert_eq!(guest.len(), 1, "{json_lines}");
    assert_eq!(guest[0]["job"], job_id.as_str());
    assert_eq!(guest[0]["stream"], "stdout");
    let err = fails(&flash(
        dir,
        &server.url,
        &home,
        &["logs", "dev", "--resource", "nope"],
    ));
    assert!(
        err.contains("has no endpoint for resource `nope` (it has: "),
        "{err}"
    );

    // Workers hold their environment's key, never the server's: `predict` found and called
    // `embed` with it just now, and it is good for nothing else.
    let user_key = server.key();
    let api_worker = *server
        .workers_with_env("FLASH_RESOURCE_NAME", "api")
        .first()
        .unwrap_or_else(|| panic!("no api worker:\n{}", server.log()));
    let worker_key = Server::env_of(api_worker, "RUNPOD_API_KEY").expect("the worker's key");
    assert!(worker_key.starts_with("flw_env-"), "{worker_key}");
    assert_ne!(worker_key, user_key);
    for pid in server.child_pids() {
        let held = Server::env_of(pid, "RUNPOD_API_KEY");
        let is_mothership = Server::env_of(pid, "FLASH_IS_MOTHERSHIP").as_deref() == Some("true");
        assert_eq!(
            held.as_deref() == Some(user_key.as_str()),
            is_mothership,
            "only the mothership (no user code) holds the server key; worker {pid}"
        );
    }
    // And only workers that call peers hold a key at all: `gpu_config`'s functions call no
    // other resource (its build says `makes_remote_calls: false`).
    let gpu_workers = server.workers_with_env("FLASH_RESOURCE_NAME", "gpu_config");
    assert!(
        !gpu_workers.is_empty(),
        "no gpu_config worker:\n{}",
        server.log()
    );
    for pid in gpu_workers {
        assert_eq!(Server::env_of(pid, "RUNPOD_API_KEY"), None, "worker {pid}");
    }
    let environment = worker_key
        .strip_prefix("flw_")
        .and_then(|rest| rest.rsplit_once('_'))
        .map(|(env, _)| env.to_string())
        .unwrap();
    let (status, body) = server.graphql_with_key(
        &worker_key,
        "query($id: String!) { flashEnvironment(flashEnvironmentId: $id) { activeBuildId endpoints { id } } }",
        json!({ "id": environment }),
    );
    assert_eq!(status, 200, "{body}");
    assert!(body["errors"].is_null(), "{body}");
    let (status, body) = server.graphql_with_key(
        &worker_key,
        "mutation($id: String!) { deleteEndpoint(id: $id) }",
        json!({ "id": gpu_id }),
    );
    assert_eq!(status, 401, "a worker's key deletes nothing: {body}");
    let (status, body) = server.graphql_with_key(
        &worker_key,
        "query($id: String!) { flashEnvironment(flashEnvironmentId: $id) { id } }",
        json!({ "id": "env-of-someone-else" }),
    );
    assert_eq!(status, 200);
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("cannot read environment `env-of-someone-else`")),
        "{body}"
    );
    let err = fails(&flash_env(
        dir,
        &server.url,
        &home,
        &["deploy", "list"],
        &[("RUNPOD_API_KEY", worker_key.as_str())],
    ));
    assert!(err.contains("401") || err.contains("rejected"), "{err}");

    // The mothership booted with the active build and found nothing to do: `deploy send`
    // had provisioned and published everything already.
    let report = server.reconciliation(&mothership, None);
    assert_eq!(report["active"], true, "{report}");
    assert_eq!(report["persisted"], false, "{report}");
    let actions = |report: &Value| -> Vec<(String, String)> {
        let mut a: Vec<(String, String)> = report["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["resource"].as_str().unwrap().to_string(),
                    r["action"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        a.sort();
        a
    };
    assert_eq!(
        actions(&report),
        [
            ("api".into(), "unchanged".into()),
            ("gpu_config".into(), "unchanged".into())
        ],
        "{report}"
    );

    // Out-of-band drift: the GPU endpoint is deleted and the API endpoint's workers edited.
    // The next mothership boot recreates one and restores the other, and persists it.
    server.graphql(
        "mutation($id: String!) { deleteEndpoint(id: $id) }",
        json!({ "id": gpu_id }),
    );
    server.graphql(
        "mutation($input: EndpointInput!) { saveEndpoint(input: $input) { id } }",
        json!({ "input": { "id": api_id, "name": "api", "workersMax": 7 } }),
    );
    let pid = report["pid"].as_u64();
    server.kill_mothership();
    let healed = server.reconciliation(&mothership, pid);
    assert_eq!(
        actions(&healed),
        [
            ("api".into(), "updated (config)".into()),
            ("gpu_config".into(), "created".into())
        ],
        "{healed}"
    );
    assert_eq!(healed["persisted"], true, "{healed}");
    assert_eq!(server.endpoint(&api_id)["workersMax"], 3);
    let new_gpu = healed["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["resource"] == "gpu_config")
        .and_then(|r| r["endpoint_id"].as_str())
        .unwrap()
        .to_string();
    assert_ne!(new_gpu, gpu_id);
    // `flash call` finds the recreated endpoint through the persisted manifest.
    let v = call(dir, &server, "embed", r#"{"text": "healed", "dims": 4}"#);
    assert_eq!(v.as_array().map(Vec::len), Some(4), "{v}");
    let gpu_id = new_gpu;

    // Idempotent: another boot with no change saves nothing and persists nothing.
    let versions = (
        server.endpoint(&api_id)["version"].clone(),
        server.endpoint(&gpu_id)["version"].clone(),
    );
    server.kill_mothership();
    let again = server.reconciliation(&mothership, healed["pid"].as_u64());
    assert_eq!(
        actions(&again),
        [
            ("api".into(), "unchanged".into()),
            ("gpu_config".into(), "unchanged".into())
        ],
        "{again}"
    );
    assert_eq!(again["persisted"], false, "{again}");
    assert_eq!(
        (
            server.endpoint(&api_id)["version"].clone(),
            server.endpoint(&gpu_id)["version"].clone()
        ),
        versions
    );

    let out = run(&["deploy", "info", "dev"]);
    assert!(out.contains("active build build-"), "{out}");
    assert!(out.contains(&mothership), "{out}");
    assert!(out.contains(&api_id) && out.contains(&gpu_id), "{out}");
    let out = run(&["deploy", "list"]);
    assert!(out.contains("dev") && out.contains("build-"), "{out}");
    // runpod-flash's views of the same: `env get` and `app get`.
    let out = run(&["env", "get", "dev"]);
    assert!(
        out.contains("\n  app     quickstart\n  build   build-"),
        "{out}"
    );
    for id in [&api_id, &gpu_id, &mothership] {
        assert!(out.contains(id.as_str()), "{id} in {out}");
    }
    let out = run(&["app", "get", "quickstart"]);
    assert!(out.contains("\n  1 build\n  build-"), "{out}");

    // `deploy send --app-name` deploys the same build to another app; `app delete` then
    // removes that app's endpoints and the app, and leaves `quickstart` alone.
    run(&["env", "create", "staging", "--app", "renamed"]);
    let out = run(&["deploy", "send", "staging", "--app-name", "renamed"]);
    assert_eq!(change_of(&out, "api"), "created", "{out}");
    let out = run(&["app", "get", "renamed"]);
    assert!(out.contains("\n  staging  build-"), "{out}");
    let out = run(&["app", "delete", "renamed", "--yes"]);
    assert!(out.ends_with("✓ deleted app renamed\n"), "{out}");
    assert_eq!(out.matches("✓ deleted endpoint ").count(), 3, "{out}");
    let out = run(&["app", "list"]);
    assert!(
        out.contains("quickstart") && !out.contains("renamed"),
        "{out}"
    );
    assert_eq!(server.endpoint(&api_id)["name"], "api");

    // An environment created with --require-auth: its HTTP endpoint wants the key.
    run(&["deploy", "new", "secure", "--require-auth"]);
    run(&["deploy", "send", "secure"]);
    let secure = std::fs::read_to_string(dir.join(".flash/resources.json")).unwrap();
    let secure: Value = serde_json::from_str(&secure).unwrap();
    let secure_api = secure["environments"]["secure"]["resources"]["api"]["url"]
        .as_str()
        .unwrap()
        .to_string();
    let status = reqwest::blocking::Client::new()
        .get(format!("{secure_api}/stats"))
        .timeout(Duration::from_secs(120))
        .send()
        .unwrap()
        .status();
    assert_eq!(
        status, 401,
        "an unauthenticated call to {secure_api} got {status}"
    );
    let out = run(&["call", "stats", "--env", "secure"]);
    assert!(out.contains("\"served_by\": \"api\""), "{out}");
    let err = fails(&flash(dir, &server.url, &home, &["call", "stats"]));
    assert!(
        err.contains(
            "app `quickstart` has several environments (dev, secure): pick one with --env"
        ),
        "{err}"
    );
    run(&["deploy", "delete", "secure", "--yes"]);

    // Same build again: nothing is uploaded, saved or restarted.
    let out = run(&["deploy", "send", "dev"]);
    assert_eq!(change_of(&out, "api"), "unchanged", "{out}");
    assert_eq!(change_of(&out, "gpu_config"), "unchanged", "{out}");
    assert!(out.contains("Already deployed: build "), "{out}");

    // Toggling --require-auth on an environment is a change to deploy, not "already
    // deployed": the settings Flash writes into templates are part of the plan (#13 item 8).
    let dev_api = deployed(dir)["api"]["url"].as_str().unwrap().to_string();
    let unauthenticated = || {
        reqwest::blocking::Client::new()
            .get(format!("{dev_api}/stats"))
            .timeout(Duration::from_secs(120))
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    for (flags, status) in [(&["--require-auth"][..], 401), (&[][..], 200)] {
        run(&[&["deploy", "new", "dev"][..], flags].concat());
        let out = run(&["deploy", "send", "dev"]);
        assert_eq!(
            change_of(&out, "api"),
            "updated (config)",
            "{flags:?}: {out}"
        );
        assert!(!out.contains("Already deployed"), "{out}");
        let deadline = Instant::now() + Duration::from_secs(120);
        while unauthenticated() != status {
            assert!(
                Instant::now() < deadline,
                "{flags:?}: {dev_api} never answered {status} without a key"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let out = run(&["deploy", "send", "dev"]);
    assert!(out.contains("Already deployed: build "), "{out}");

    // Change the GPU config's workers: its endpoint is updated in place (same id, new
    // config hash); `api` keeps its config hash and is re-saved only because it shares the
    // changed component (its code changed too).
    edit(
        &dir.join("src/lib.rs"),
        ".workers(0, 3);",
        ".workers(0, 2);",
    );
    run(&["build"]);
    let out = run(&["deploy", "send", "dev"]);
    assert_eq!(change_of(&out, "gpu_config"), "updated (config)", "{out}");
    assert_eq!(change_of(&out, "api"), "updated (code)", "{out}");
    let second = deployed(dir);
    assert_eq!(second["gpu_config"]["endpoint_id"], gpu_id.as_str());
    assert_eq!(second["api"]["endpoint_id"], api_id.as_str());
    assert_ne!(
        second["gpu_config"]["config_hash"],
        first["gpu_config"]["config_hash"]
    );
    assert_eq!(second["api"]["config_hash"], first["api"]["config_hash"]);
    assert_eq!(server.endpoint(&gpu_id)["workersMax"], 2);
    let p = call(dir, &server, "predict", r#"{"text": "an awful sad day"}"#);
    assert_eq!(p["label"], "negative", "{p}");

    // Remove the `api` resource (its two functions and its config): its endpoint goes.
    let src = std::fs::read_to_string(dir.join("src/lib.rs")).unwrap();
    let start = src.find("/// The answer of `POST /predict`.").unwrap();
    let end = src.find("/// 64-bit FNV-1a").unwrap();
    let mut src = format!("{}{}", &src[..start], &src[end..]);
    let api_start = src.find("/// CPU HTTP endpoint").unwrap();
    let api_end = api_start + src[api_start..].find(";\n").unwrap() + 2;
    src.replace_range(api_start..api_end, "");
    std::fs::write(dir.join("src/lib.rs"), src).unwrap();
    run(&["build"]);
    let out = run(&["deploy", "send", "dev"]);
    assert_eq!(change_of(&out, "api"), "deleted", "{out}");
    assert_eq!(server.endpoint(&api_id), Value::Null);
    assert_eq!(deployed(dir)["api"], Value::Null);
    let v = call(
        dir,
        &server,
        "embed",
        r#"{"text": "still here", "dims": 4}"#,
    );
    assert_eq!(v.as_array().map(Vec::len), Some(4), "{v}");
    let err = fails(&flash(
        dir,
        &server.url,
        &home,
        &["call", "stats", "--env", "dev"],
    ));
    assert!(
        err.contains("function `stats` is not in the active build of `dev`"),
        "{err}"
    );

    // Delete: no endpoints, no environment, no worker processes left.
    let err = fails(&flash(
        dir,
        &server.url,
        &home,
        &["deploy", "delete", "dev"],
    ));
    assert!(err.contains("pass --yes"), "{err}");
    let out = run(&["deploy", "delete", "dev", "--yes"]);
    assert!(out.contains("Deleted environment `dev`"), "{out}");
    assert_eq!(server.endpoint_count(), 0);
    let out = run(&["deploy", "list"]);
    assert!(out.contains("No environments"), "{out}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while server.children() > 0 {
        assert!(
            Instant::now() < deadline,
            "worker processes still running 60 s after `deploy delete`"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A project with a flash.toml and nothing built.
/// The active build of environment `env_id`: (build id, published manifest).
fn active_build(server: &Server, env_id: &str) -> (String, Value) {
    let env = server.graphql(
        "query($id: String!) { flashEnvironment(flashEnvironmentId: $id) { activeBuildId } }",
        json!({ "id": env_id }),
    );
    let build = env["flashEnvironment"]["activeBuildId"]
        .as_str()
        .expect("an active build")
        .to_string();
    let manifest = server.graphql(
        "query($id: String!) { flashBuild(flashBuildId: $id) { manifest } }",
        json!({ "id": build }),
    )["flashBuild"]["manifest"]
        .clone();
    (build, manifest)
}

/// Two `deploy send`s of different builds to one environment at once, arranged so that
/// without serialisation their saves interleave: A's endpoint saves are held up (so they
/// land after B's) while B's activation is held up (so it lands after A's). Afterwards the
/// environment must be exactly what one of them deployed — its active build, every
/// endpoint's settings and code fingerprint, and no endpoint besides — and the other must
/// have finished before it or failed saying to run it again.
#[test]
fn concurrent_sends_to_one_environment_do_not_interleave() {
    use flash_api::stub::{FaultyProxy, ProxyFault, start_proxy};
    use std::sync::Arc;

    let a = quickstart_copy();
    let b = quickstart_copy();
    let server = Server::start();
    let home = server.data_dir.path().to_path_buf();
    let run = |dir: &Path, args: &[&str]| ok(&flash(dir, &server.url, &home, args), Some(&server));

    // A first deploy, which both sends then change in place (config and code).
    run(a.path(), &["build"]);
    let out = run(a.path(), &["deploy", "new", "dev"]);
    let env_id = out
        .split("Created environment `dev`: ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no environment in:\n{out}"))
        .to_string();
    run(a.path(), &["deploy", "send", "dev"]);
    for (project, workers, tag) in [(&a, "4", "A"), (&b, "5", "B")] {
        let lib = project.path().join("src/lib.rs");
        edit(&lib, ".workers(0, 3);", &format!(".workers(0, {workers});"));
        edit(
            &lib,
            "dims must be in 1..=4096, got {dims}",
            &format!("dims must be in 1..=4096 ({tag}), got {{dims}}"),
        );
        run(project.path(), &["build"]);
    }
    let sha = |project: &tempfile::TempDir| {
        flash_manifest::sha256_hex(
            &std::fs::read(project.path().join(".flash/artifact.tar.gz")).unwrap(),
        )
    };
    let (sha_a, sha_b) = (sha(&a), sha(&b));
    assert_ne!(sha_a, sha_b);

    // Each send goes through its own proxy, which holds up the chosen operations.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (proxy_a, proxy_b) = (
        Arc::new(FaultyProxy::default()),
        Arc::new(FaultyProxy::default()),
    );
    proxy_a.fault(
        "saveEndpoint",
        ProxyFault::Delay(Duration::from_secs(2)),
        usize::MAX,
    );
    proxy_b.fault(
        "deployBuildToEnvironment",
        ProxyFault::Delay(Duration::from_secs(4)),
        usize::MAX,
    );
    let url_a = runtime.block_on(start_proxy(proxy_a.clone(), &server.url));
    let url_b = runtime.block_on(start_proxy(proxy_b.clone(), &server.url));
    let started = Instant::now();
    let send = |dir: &Path, url: &str| {
        flash_command(dir, url, &home, &["deploy", "send", "dev"], &[])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (child_a, child_b) = (send(a.path(), &url_a), send(b.path(), &url_b));
    let (out_a, out_b) = std::thread::scope(|scope| {
        let wait = |child: std::process::Child| {
            scope.spawn(move || {
                let out = child.wait_with_output().unwrap();
                (out, started.elapsed())
            })
        };
        let (ha, hb) = (wait(child_a), wait(child_b));
        (ha.join().unwrap(), hb.join().unwrap())
    });
    drop(runtime);
    let text = |out: &std::process::Output| {
        format!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    let deployed_build = |out: &std::process::Output| {
        String::from_utf8_lossy(&out.stdout)
            .split("Deployed build ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .map(str::to_string)
    };
    for (name, (out, took)) in [("A", &out_a), ("B", &out_b)] {
        eprintln!("send {name} ({took:?}, {}):\n{}", out.status, text(out));
        if !out.status.success() {
            let text = text(out);
            assert!(
                text.contains("is being deployed by") && text.contains("run this command again"),
                "send {name} failed without saying why or what to do:\n{text}\nserver log:\n{}",
                server.log()
            );
        }
    }
    assert!(
        out_a.0.status.success() || out_b.0.status.success(),
        "one send must succeed:\nA: {}\nB: {}",
        text(&out_a.0),
        text(&out_b.0)
    );

    // The environment is what one send deployed, and that is the send that finished last.
    let (build, manifest) = active_build(&server, &env_id);
    let published_sha = manifest["flash_deploy"]["artifact_sha256"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let (winner, winner_out, workers_max, other_out) = if published_sha == sha_a {
        ("A", &out_a, 4, &out_b)
    } else {
        assert_eq!(published_sha, sha_b, "the active build is neither send's");
        ("B", &out_b, 5, &out_a)
    };
    assert_eq!(
        deployed_build(&winner_out.0).as_deref(),
        Some(build.as_str()),
        "send {winner}'s build is active:\n{}",
        text(&winner_out.0)
    );
    if other_out.0.status.success() {
        assert!(
            other_out.1 <= winner_out.1,
            "the other send finished after the active one, yet its build is not active:\n{}",
            text(&other_out.0)
        );
    }
    let mut wanted: Vec<String> = Vec::new();
    for (resource, entry) in manifest["resources"].as_object().unwrap() {
        let id = entry["endpoint_id"].as_str().unwrap();
        wanted.push(id.to_string());
        let endpoint = server.graphql(
            "query($id: String!) { myself { endpoint(id: $id) { workersMax templateId } } }",
            json!({ "id": id }),
        )["myself"]["endpoint"]
            .clone();
        if resource == "gpu_config" {
            assert_eq!(
                endpoint["workersMax"], workers_max,
                "gpu_config has send {winner}'s config"
            );
        }
        let template = server.graphql(
            "query($id: String!) { podTemplate(id: $id) { env { key value } } }",
            json!({ "id": endpoint["templateId"] }),
        );
        let fingerprint = template["podTemplate"]["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["key"] == "_FLASH_SOURCE_FINGERPRINT")
            .map(|e| e["value"].clone());
        assert_eq!(
            fingerprint.as_ref(),
            Some(&entry["source_hash"]),
            "{resource}'s template carries the code of send {winner}'s build, not the other's"
        );
    }
    let env = server.graphql(
        "query($id: String!) { flashEnvironment(flashEnvironmentId: $id) { endpoints { id name } } }",
        json!({ "id": env_id }),
    );
    let mut live: Vec<String> = env["flashEnvironment"]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["name"] != "mothership")
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    live.sort();
    wanted.sort();
    assert_eq!(live, wanted, "no endpoint besides the active build's");
}

fn bare_project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("flash.toml"),
        "[app]\nname = \"errs\"\n\n[[component]]\nname = \"errs\"\nkind = \"rust\"\npath = \".\"\n",
    )
    .unwrap();
    dir
}

/// The inference example deployed on `flash server`, RunPod's way: its worker gets the
/// artifact at `FLASH_BUILD_ARTIFACT_PATH`, preloads the model packed in it (sha256 checked),
/// loads ONNX Runtime from the machine's `ORT_DYLIB_PATH` (as the GPU image's env sets it)
/// and answers `classify` through the queue with onnxruntime's probabilities.
#[test]
fn inference_example_deploys_and_classifies_on_the_embedded_server() {
    let ort = flash_tests::onnxruntime_lib().unwrap();
    let project = example_copy("inference", "flash-example-inference");
    let dir = project.path();
    let server = Server::start_with_env(&[("ORT_DYLIB_PATH", ort.as_os_str())]);
    let home = server.data_dir.path().to_path_buf();
    let run = |args: &[&str]| ok(&flash(dir, &server.url, &home, args), Some(&server));
    run(&["build"]);
    run(&["deploy", "new", "dev"]);
    run(&["deploy", "send", "dev"]);

    // Rows whose classes differ, checked against onnxruntime in Python on the same model.
    let rows = json!([
        [0.5, -1.0, 2.0, 0.25],
        [-2.0, 1.5, 0.0, 1.0],
        [3.0, 3.0, -3.0, 0.0]
    ]);
    let output = call(
        dir,
        &server,
        "classify",
        &json!({ "rows": rows }).to_string(),
    );
    let expected: Vec<Vec<f64>> = serde_json::from_value(
        flash_tests::run_python_script(
            "import json, os\n\
             import numpy as np, onnxruntime as ort\n\
             rows = np.array(json.loads(os.environ['ROWS']), dtype=np.float32)\n\
             s = ort.InferenceSession(os.environ['MODEL'], providers=['CPUExecutionProvider'])\n\
             print(json.dumps(s.run(['probabilities'], {'features': rows})[0].tolist()))",
            &[
                ("ROWS", rows.to_string()),
                (
                    "MODEL",
                    dir.join("model/classifier.onnx").display().to_string(),
                ),
            ],
        )
        .unwrap(),
    )
    .unwrap();
    let predictions = output.as_array().unwrap_or_else(|| panic!("{output}"));
    assert_eq!(predictions.len(), expected.len(), "{output}");
    for (prediction, want) in predictions.iter().zip(&expected) {
        let got: Vec<f64> = serde_json::from_value(prediction["probabilities"].clone()).unwrap();
        assert_eq!(got.len(), want.len(), "{output}");
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() <= 1e-5, "got {got:?}, want {want:?}");
        }
    }

    // The worker got RunPod's artifact path and no Flash-only way to the artifact.
    let workers = server.workers_with_env("FLASH_RESOURCE_NAME", "classifier");
    assert!(
        !workers.is_empty(),
        "no classifier worker:\n{}",
        server.log()
    );
    for pid in workers {
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
        let environ = String::from_utf8_lossy(&environ);
        assert!(
            environ.contains("FLASH_BUILD_ARTIFACT_PATH="),
            "worker {pid}"
        );
        assert!(!environ.contains("FLASH_ARTIFACT_URL="), "worker {pid}");
    }
}

#[test]
fn deploy_errors_say_what_to_do() {
    let project = bare_project();
    let dir = project.path();
    let server = Server::start();
    let home = server.data_dir.path().to_path_buf();

    // Server down.
    let port = flash_tests::free_port();
    let down = format!("http://127.0.0.1:{port}");
    let err = fails(&flash(dir, &down, &home, &["deploy", "list"]));
    assert!(
        err.contains(&format!(
            "error: cannot reach the server at {down} (Connection refused (os error 111)): \
             start a local one with `flash server`"
        )),
        "{err}"
    );

    // Bad key.
    let err = fails(&flash_env(
        dir,
        &server.url,
        &home,
        &["deploy", "list"],
        &[("RUNPOD_API_KEY", "not-the-key")],
    ));
    assert!(
        err.contains(&format!(
            "error: the State Manager at {} rejected the API key from RUNPOD_API_KEY",
            server.url
        )),
        "{err}"
    );

    // No key anywhere.
    let empty = tempfile::tempdir().unwrap();
    let err = fails(&flash(dir, &server.url, empty.path(), &["deploy", "list"]));
    assert!(
        err.contains("error: no API key: set RUNPOD_API_KEY, or start `flash server`"),
        "{err}"
    );

    // Unknown app, then unknown environment.
    let err = fails(&flash(dir, &server.url, &home, &["deploy", "info", "dev"]));
    assert!(err.contains("error: app `errs` not found on"), "{err}");
    ok(
        &flash(dir, &server.url, &home, &["deploy", "new", "dev"]),
        Some(&server),
    );
    let err = fails(&flash(dir, &server.url, &home, &["deploy", "info", "nope"]));
    assert!(
        err.contains(
            "error: environment `nope` not found in app `errs`: create it with `flash deploy new nope`"
        ),
        "{err}"
    );
    let err = fails(&flash(
        dir,
        &server.url,
        &home,
        &["call", "f", "--env", "nope"],
    ));
    assert!(err.contains("environment `nope` not found"), "{err}");

    // No artifact.
    let err = fails(&flash(dir, &server.url, &home, &["deploy", "send", "dev"]));
    let artifact: PathBuf = dir.join(".flash/artifact.tar.gz");
    assert!(
        err.contains(&format!(
            "error: no artifact at {}: run `flash build` first",
            artifact.display()
        )),
        "{err}"
    );

    // Nothing deployed yet.
    let err = fails(&flash(
        dir,
        &server.url,
        &home,
        &["call", "f", "--env", "dev"],
    ));
    assert!(
        err.contains(
            "environment `dev` has no active build: deploy one with `flash deploy send dev`"
        ),
        "{err}"
    );

    // Bad arguments.
    let err = fails(&flash(
        dir,
        &server.url,
        &home,
        &["call", "f", "{nope", "--env", "dev"],
    ));
    assert!(err.contains("are not JSON"), "{err}");
}

#[test]
fn flash_run_builds_serves_deploys_and_stops_on_sigterm() {
    let project = quickstart_copy();
    let dir = project.path();
    let data = tempfile::tempdir().unwrap();
    let port = flash_tests::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let (mut guard, seen) = spawn_until(
        Command::new(flash_tests::bin("flash"))
            .args([
                "run",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--data-dir",
            ])
            .arg(data.path())
            .current_dir(dir)
            .env_remove("RUNPOD_API_KEY")
            .env("CARGO_TARGET_DIR", flash_tests::guest_target_dir()),
        "Ready.",
    );
    assert!(seen.contains(&format!("POST {url}/lb/")), "{seen}");
    assert!(seen.contains("flash call embed"), "{seen}");

    let out = flash(
        dir,
        &url,
        data.path(),
        &["call", "predict", r#"{"text": "great"}"#],
    );
    let p: Value = serde_json::from_str(&ok(&out, None)).unwrap();
    assert_eq!(p["label"], "positive", "{p}");

    terminate(&mut guard, "`flash run`");
}

/// Spawns `cmd` with piped stdout and reads lines until one starts with `marker` (bounded).
fn spawn_until(cmd: &mut Command, marker: &str) -> (ChildGuard, String) {
    let mut guard = ChildGuard::spawn(
        cmd.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null()),
    )
    .unwrap();
    let stdout = guard.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut seen = String::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                seen.push_str(&line);
                seen.push('\n');
                if line.starts_with(marker) {
                    return (guard, seen);
                }
            }
            Err(e) => panic!("no `{marker}` line ({e}):\n{seen}"),
        }
    }
}

/// Sends SIGTERM and waits (bounded) for a successful exit.
fn terminate(guard: &mut ChildGuard, what: &str) {
    let pid = guard.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = guard.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "{what} ignored SIGTERM for 30 s");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{what} exited with {status}");
}

/// Processes (anywhere on the machine) whose environment has `key=value`.
fn processes_with_env(key: &str, value: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| has_env(*p, key, value))
        .collect()
}

#[test]
fn build_preview_runs_every_resource_and_the_mothership_then_cleans_up() {
    let project = quickstart_copy();
    let dir = project.path();
    let port = flash_tests::free_port();
    let (mut guard, seen) = spawn_until(
        Command::new(flash_tests::bin("flash"))
            .args(["build", "--preview", "--preview-port", &port.to_string()])
            .current_dir(dir)
            .env_remove("RUNPOD_API_KEY")
            .env("FLASH_HOST_BIN", flash_tests::bin("flash-host"))
            .env("CARGO_TARGET_DIR", flash_tests::guest_target_dir()),
        "Control plane:",
    );
    assert!(
        seen.contains(&format!("Mothership: http://localhost:{port}")),
        "{seen}"
    );
    // The data dir of the throwaway control plane, from "… (key in <dir>/api_key)".
    let data_dir = seen
        .split("(key in ")
        .nth(1)
        .and_then(|rest| rest.split("/api_key").next())
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("no key path in:\n{seen}"));
    assert!(data_dir.is_dir(), "{}", data_dir.display());

    let client = reqwest::blocking::Client::new();
    let mothership = format!("http://127.0.0.1:{port}");
    let ping = client.get(format!("{mothership}/ping")).send().unwrap();
    assert_eq!(ping.status(), 200);
    let report: Value = client
        .get(format!("{mothership}/reconciliation"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(report["active"], true, "{report}");
    let resources: Vec<&str> = report["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["resource"].as_str().unwrap())
        .collect();
    assert_eq!(resources, ["api", "gpu_config"], "{report}");
    let manifest: Value = client
        .get(format!("{mothership}/manifest"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let api_url = manifest["resources_endpoints"]["api"].as_str().unwrap();

    // A load-balanced route whose function calls a queue function on its own worker.
    let p: Value = client
        .post(format!("{api_url}/predict"))
        .json(&json!({ "text": "what a great day" }))
        .timeout(Duration::from_secs(120))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(p["label"], "positive", "{p}");
    let home = data_dir.display().to_string();
    assert!(
        processes_with_env("FLASH_CONTROL_HOME", &home).len() >= 2,
        "the workers of {home} should be running"
    );

    terminate(&mut guard, "`flash build --preview`");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !processes_with_env("FLASH_CONTROL_HOME", &home).is_empty() {
        assert!(
            Instant::now() < deadline,
            "preview workers still running 30 s after Ctrl+C"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(!data_dir.exists(), "the preview's data dir is left behind");
}
