//! Python functions end to end: `flash build` of Python projects (componentize-py, pinned
//! and installed by `flash` itself), deploys on a real `flash server`, calls through the
//! real `flash` CLI, the real `runpod` client and plain HTTP, and calls across languages.
//!
//! Every project is copied to a temporary directory first, so tests never write into
//! `examples/` and can edit what they build.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use flash_tests::control_plane::{Server, fails, flash, flash_env, ok};
use serde_json::{Value, json};

/// Copies `examples/<name>` (or any directory) to a new temporary directory.
fn copy_project(from: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(from, dir.path());
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let name = entry.file_name();
        if name == ".flash" || name == "__pycache__" || name == "target" {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            copy_dir(&path, &to.join(&name));
        } else {
            std::fs::copy(&path, to.join(&name)).unwrap();
        }
    }
}

fn example(name: &str) -> PathBuf {
    flash_tests::repo_root().join("examples").join(name)
}

/// `flash build` with no server (build commands never talk to one).
fn build(dir: &Path) -> Output {
    flash(dir, "http://127.0.0.1:9", dir, &["build"])
}

fn call(dir: &Path, server: &Server, function: &str, args: &str) -> Value {
    let out = flash(
        dir,
        &server.url,
        server.data_dir.path(),
        &["call", function, args, "--env", "dev", "--timeout", "120"],
    );
    let stdout = ok(&out, Some(server));
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// Builds, creates `dev` and sends: the project is then served by `server`.
fn deploy(dir: &Path, server: &Server) {
    let home = server.data_dir.path();
    for args in [
        &["build"][..],
        &["deploy", "new", "dev"],
        &["deploy", "send", "dev"],
    ] {
        ok(&flash(dir, &server.url, home, args), Some(server));
    }
}

/// The endpoint id of `resource` in the project's deploy state.
fn endpoint_id(dir: &Path, resource: &str) -> String {
    let state: Value =
        serde_json::from_slice(&std::fs::read(dir.join(".flash/resources.json")).unwrap()).unwrap();
    state["environments"]["dev"]["resources"][resource]["endpoint_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no endpoint for {resource} in {state}"))
        .to_string()
}

#[test]
fn python_quickstart_serves_queue_and_http_functions_with_peer_calls() {
    let project = copy_project(&example("quickstart-python"));
    let dir = project.path();
    let server = Server::start();

    let out = ok(&build(dir), None);
    for expected in ["gpu_config", "api", "POST /predict", "GET /stats"] {
        assert!(out.contains(expected), "`{expected}` not in:\n{out}");
    }
    deploy(dir, &server);

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
    assert!(s.as_f64().is_some_and(|s| s > 0.0 && s <= 1.0), "{s}");
    // `predict` (load-balanced, `api`) awaits `embed` on `gpu_config`: a peer call.
    let p = call(dir, &server, "predict", r#"{"text": "what a great day"}"#);
    assert_eq!(p["label"], "positive", "{p}");
    assert_eq!(p["dims"], 64, "{p}");
    let stats = call(dir, &server, "stats", "{}");
    assert_eq!(stats["served_by"], "api", "{stats}");
    assert_eq!(stats["app"], "quickstart-python", "{stats}");

    // The real `runpod` client on the Python queue endpoint: a result, and a failure
    // whose kind and Python traceback travel in RunPod's error fields.
    let gpu = endpoint_id(dir, "gpu_config");
    let script = r#"
import json, os
import runpod
runpod.api_key = os.environ["KEY"]
ep = runpod.Endpoint(os.environ["EP"])
out = {"ok": ep.run_sync({"function_name": "embed", "kwargs": {"text": "hello flash", "dims": 8}}, timeout=120)}
job = ep.run({"function_name": "embed", "kwargs": {"text": "hello", "dims": 0}})
out["failed_output"] = job.output(timeout=120)
out["failed_status"] = job.status()
print(json.dumps(out))
"#;
    let out = flash_tests::run_python_script(
        script,
        &[
            ("RUNPOD_ENDPOINT_BASE_URL", format!("{}/v2", server.url)),
            ("KEY", server.key()),
            ("EP", gpu.clone()),
        ],
    )
    .unwrap();
    assert_eq!(out["ok"], v, "{out}");
    assert_eq!(out["failed_status"], "FAILED", "{out}");
    let status: Value = reqwest::blocking::Client::new()
        .post(format!("{}/v2/{gpu}/runsync", server.url))
        .bearer_auth(server.key())
        .json(&json!({"input": {"function_name": "embed", "kwargs": {"text": "hello", "dims": 0}}}))
        .timeout(Duration::from_secs(120))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(status["status"], "FAILED", "{status}");
    let error: Value = serde_json::from_str(status["error"].as_str().unwrap()).unwrap();
    assert_eq!(error["error_type"], "user-error", "{error}");
    assert_eq!(
        error["error_message"], "ValueError: dims must be in 1..=4096, got 0",
        "{error}"
    );
    let traceback = error["error_traceback"].as_str().unwrap();
    assert!(
        traceback.contains("embeddings.py") && traceback.contains("raise ValueError"),
        "{traceback}"
    );

    // `flash call` prints the same failure readably: what failed and how, then the
    // Python traceback, and exits 1 (the function failed as it ran).
    let out = flash(
        dir,
        &server.url,
        server.data_dir.path(),
        &[
            "call",
            "embed",
            r#"{"text": "x", "dims": 0}"#,
            "--env",
            "dev",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "\nerror: `embed` failed: user-error: ValueError: dims must be in 1..=4096, got 0\n\n\
             Traceback (most recent call last):\n"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("raise ValueError"), "{stderr}");

    // Invalid input names the argument, and exits 2 (the call was refused as asked).
    let out = flash(
        dir,
        &server.url,
        server.data_dir.path(),
        &["call", "embed", r#"{"text": "x"}"#, "--env", "dev"],
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = fails(&out);
    assert!(
        stderr.contains("error: `embed` failed: invalid-input: ") && stderr.contains("dims"),
        "{stderr}"
    );
}

#[test]
fn polyglot_functions_call_each_other_across_languages() {
    let project = polyglot_project();
    let dir = project.path();
    let server = Server::start();
    let home = server.data_dir.path().to_path_buf();
    for args in [
        &["build"][..],
        &["deploy", "new", "dev"],
        &["deploy", "send", "dev"],
    ] {
        ok(
            &flash_env(
                dir,
                &server.url,
                &home,
                args,
                &[(
                    "CARGO_TARGET_DIR",
                    &flash_tests::guest_target_dir().display().to_string(),
                )],
            ),
            Some(&server),
        );
    }
    // Python (load-balanced `py_api`) → Rust (queue `text_stats`).
    let analyzed = call(
        dir,
        &server,
        "analyze",
        r#"{"text": "polyglot teams ship faster"}"#,
    );
    assert_eq!(analyzed["stats"]["words"], 4, "{analyzed}");
    assert_eq!(analyzed["stats"]["longest"], "polyglot", "{analyzed}");
    assert_eq!(analyzed["stats"]["language"], "rust", "{analyzed}");
    assert_eq!(analyzed["served_by"], "py_api", "{analyzed}");
    // Rust (queue `text_stats`) → Python (queue `py_worker`).
    let headline = call(
        dir,
        &server,
        "headline",
        r#"{"text": "one two three four five"}"#,
    );
    assert_eq!(headline, json!("ONE TWO THREE ..."));
    // A GET route: `flash call` sends the arguments as the query string, with a string
    // that reads as JSON ("2") kept a string.
    let preview = call(
        dir,
        &server,
        "preview",
        r#"{"text": "to be or not", "words": 2}"#,
    );
    assert_eq!(preview, json!({"summary": "to be ...", "words": 2}));
    let preview = call(dir, &server, "preview", r#"{"text": "42", "words": 1}"#);
    assert_eq!(preview, json!({"summary": "42", "words": 1}));
    // Python → Rust → Python, and a failure at the far end: the caller learns where it
    // began and what it came through, and how to read that request's log lines.
    let title = call(dir, &server, "title", r#"{"text": "one two three four"}"#);
    assert_eq!(title, json!({"title": "ONE TWO THREE ..."}));
    let out = flash(
        dir,
        &server.url,
        &home,
        &["call", "title", r#"{"text": " "}"#, "--env", "dev"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "\nerror: `title` failed: user-error in summarize (resource py_worker, via headline): \
             ValueError: nothing to summarize: the text is empty\n"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("raise ValueError"),
        "the far end's traceback:\n{stderr}"
    );
    let request = stderr
        .split("its log lines: flash logs dev --job ")
        .nth(1)
        .map(str::trim)
        .unwrap_or_else(|| panic!("no log hint in:\n{stderr}"));
    let lines = ok(
        &flash(dir, &server.url, &home, &["logs", "dev", "--job", request]),
        Some(&server),
    );
    for resource in ["py_api", "text_stats", "py_worker"] {
        assert!(lines.contains(resource), "no {resource} line in:\n{lines}");
    }
    assert!(
        lines.contains("WARN  `headline` failed: user-error in summarize (resource py_worker): "),
        "{lines}"
    );
    // JavaScript in both directions. JS (load-balanced `js_api`) → Rust (`word_stats`),
    // → Python (`summarize`) and → JS on another config (`shout` on `js_worker`).
    let report = call(
        dir,
        &server,
        "report",
        r#"{"text": "polyglot teams ship faster"}"#,
    );
    assert_eq!(
        report,
        json!({
            "stats": {"words": 4, "longest": "polyglot", "language": "rust"},
            "summary": "polyglot teams ...",
            "shouted": "POLYGLOT TEAMS ...!",
            "served_by": "js_api",
        })
    );
    // Python → JS, and Rust → JS.
    let loud = call(dir, &server, "loud", r#"{"text": "hi there"}"#);
    assert_eq!(loud, json!({"loud": "HI THERE!"}));
    let exclaimed = call(dir, &server, "exclaim", r#"{"text": "wow"}"#);
    assert_eq!(exclaimed, json!("WOW! (4 characters)"));
    // An error thrown in JS, called from Rust: the caller learns where it began, with the
    // JavaScript stack.
    let out = flash(
        dir,
        &server.url,
        &home,
        &["call", "exclaim", r#"{"text": " "}"#, "--env", "dev"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "\nerror: `exclaim` failed: user-error in shout (resource js_worker): Error: \
             nothing to shout: the text is empty\n"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("nothing to shout: the text is empty\n")
            && stderr.contains("@index.ts:15:"),
        "the JavaScript stack, mapped back to the TypeScript source:\n{stderr}"
    );

    // The server saw the route fail, and what failed, without reading its body.
    let api = endpoint_id(dir, "py_api");
    let stats: Value = reqwest::blocking::Client::new()
        .get(format!("{}/v1/stats?endpoint={api}", server.url))
        .bearer_auth(server.key())
        .send()
        .unwrap()
        .json()
        .unwrap();
    let last = &stats["endpoints"][&api]["lastError"];
    assert_eq!(last["id"], request, "{stats}");
    assert_eq!(
        last["error"], "user-error (HTTP 500 Internal Server Error)",
        "{stats}"
    );

    // The build found who calls whom in the Rust, Python and TypeScript sources:
    // `py_worker`'s and `js_worker`'s only functions call no one, so their workers are
    // given no API key; the callers' are.
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(dir.join(".flash/flash_manifest.json")).unwrap())
            .unwrap();
    let calls = |r: &str| manifest["resources"][r]["makes_remote_calls"].clone();
    assert_eq!(
        [
            calls("py_api"),
            calls("text_stats"),
            calls("py_worker"),
            calls("js_api"),
            calls("js_worker")
        ],
        [
            json!(true),
            json!(true),
            json!(false),
            json!(true),
            json!(false)
        ],
        "{manifest}"
    );
    for (resource, holds_key) in [
        ("py_api", true),
        ("text_stats", true),
        ("py_worker", false),
        ("js_api", true),
    ] {
        let workers = server.workers_with_env("FLASH_RESOURCE_NAME", resource);
        assert!(
            !workers.is_empty(),
            "no {resource} worker:\n{}",
            server.log()
        );
        for pid in workers {
            assert_eq!(
                Server::env_of(pid, "RUNPOD_API_KEY").is_some(),
                holds_key,
                "{resource} worker {pid}"
            );
        }
    }
}

/// A Python project in a temporary directory: `files` are (path, content).
/// What a successful `flash build` printed, progress (stderr) included.
fn build_log(out: &Output) -> String {
    let stdout = ok(out, None);
    format!("{stdout}{}", String::from_utf8_lossy(&out.stderr))
}

fn python_project(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (path, content) in files {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
    dir
}

const FLASH_TOML: &str =
    "[app]\nname = \"pyapp\"\n\n[[component]]\nname = \"pyapp\"\nkind = \"python\"\npath = \".\"\n";

/// Runs one job of the built artifact with `flash-host --test-input` (every resource
/// local) and returns its output, or the error body when the job failed.
fn run_job(dir: &Path, function: &str, kwargs: Value) -> Result<Value, Value> {
    let out = std::process::Command::new(flash_tests::bin("flash-host"))
        .arg("--artifact")
        .arg(dir.join(".flash/artifact.tar.gz"))
        .args([
            "--test-input",
            &json!({"function_name": function, "kwargs": kwargs}).to_string(),
        ])
        .env_remove("FLASH_RESOURCE_NAME")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let body: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("{e}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr)));
    if out.status.success() {
        Ok(body["output"].clone())
    } else {
        Err(body)
    }
}

#[test]
fn pure_python_dependencies_are_bundled_and_native_ones_are_refused() {
    // A pure-Python package from requirements.txt, imported at the top of the module.
    let project = python_project(&[
        ("flash.toml", FLASH_TOML),
        (
            "requirements.txt",
            "# what the worker imports\nsix==1.17.0\nrunpod-flash\n",
        ),
        (
            "worker.py",
            "import six\nfrom flash_sdk import Endpoint\n\n\
             @Endpoint(name=\"worker\", cpu=\"cpu3c-1-2\")\n\
             def version() -> str:\n    return six.__version__\n",
        ),
    ]);
    let out = build_log(&build(project.path()));
    assert!(
        out.contains("`runpod-flash` is skipped: flash_sdk is built into every component"),
        "{out}"
    );
    assert_eq!(
        run_job(project.path(), "version", json!({})),
        Ok(json!("1.17.0"))
    );

    // A native package in requirements.txt: an error that names it.
    let native = python_project(&[
        ("flash.toml", FLASH_TOML),
        ("requirements.txt", "numpy==2.2.6\n"),
        (
            "worker.py",
            "from flash_sdk import Endpoint\n\n@Endpoint(name=\"worker\", cpu=\"cpu3c-1-2\")\n\
             def f() -> int:\n    return 1\n",
        ),
    ]);
    let stderr = fails(&build(native.path()));
    assert!(
        stderr.contains(
            "`numpy` (from requirements.txt) has no pure-Python wheel: it has native extensions"
        ),
        "{stderr}"
    );

    // A native package in `Endpoint(dependencies=[...])` (imported lazily, as runpod-flash
    // apps do): left out with a warning; the pure one next to it is bundled.
    let lazy = python_project(&[
        ("flash.toml", FLASH_TOML),
        (
            "worker.py",
            "from flash_sdk import Endpoint\n\n\
             @Endpoint(name=\"worker\", cpu=\"cpu3c-1-2\", dependencies=[\"numpy\", \"six==1.17.0\"])\n\
             def probe() -> dict:\n\
             \x20   import six\n\
             \x20   try:\n        import numpy\n        has_numpy = True\n\
             \x20   except ImportError:\n        has_numpy = False\n\
             \x20   return {\"six\": six.__version__, \"numpy\": has_numpy}\n",
        ),
    ]);
    let out = build_log(&build(lazy.path()));
    assert!(
        out.contains("warning: dependency `numpy` has no pure-Python wheel"),
        "{out}"
    );
    assert_eq!(
        run_job(lazy.path(), "probe", json!({})),
        Ok(json!({"six": "1.17.0", "numpy": false}))
    );
}

#[test]
fn unchanged_python_projects_are_not_rebuilt_and_changed_ones_are() {
    let project = copy_project(&example("quickstart-python"));
    let dir = project.path();
    let artifact = || std::fs::read(dir.join(".flash/artifact.tar.gz")).unwrap();
    let first_log = build_log(&build(dir));
    assert!(first_log.contains("componentize-py"), "{first_log}");
    let first = artifact();

    // Built again without a change: componentize-py does not run, and the artifact is
    // the same, byte for byte.
    let again = build_log(&build(dir));
    assert!(again.contains("up to date"), "{again}");
    assert!(!again.contains("componentize-py"), "{again}");
    assert!(
        artifact() == first,
        "an unchanged project gave a different artifact"
    );

    // A changed module is rebuilt, and the change is served.
    let api = dir.join("api.py");
    let source = std::fs::read_to_string(&api).unwrap();
    assert!(source.contains("\"version\": \"0.1.0\""), "{source}");
    std::fs::write(
        &api,
        source.replace("\"version\": \"0.1.0\"", "\"version\": \"0.2.0\""),
    )
    .unwrap();
    let rebuilt = build_log(&build(dir));
    assert!(!rebuilt.contains("up to date"), "{rebuilt}");
    assert_eq!(
        run_job(dir, "stats", json!({})).map(|v| v["version"].clone()),
        Ok(json!("0.2.0"))
    );
}

/// Two builds of the same sources from scratch, in two directories, give the same component
/// and artifact bytes (issue #11). The module reads the clock, the `random` module and
/// sleeps while it is imported, and its sets and dicts depend on the hash seed: all of that
/// runs when componentize-py pre-initialises the interpreter and snapshots its heap.
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
#[test]
fn python_builds_from_scratch_are_byte_identical() {
    const WORKER: &str = "import random\nimport time\nfrom dataclasses import dataclass\n\n\
        from flash_sdk import Endpoint\n\n\
        STARTED = time.time()\nJITTER = random.random()\ntime.sleep(0.05)\n\
        WORDS = {w: len(w) for w in \"alpha beta gamma delta\".split()}\n\n\
        @dataclass\nclass Reply:\n    words: int\n    started: float\n\n\
        worker = Endpoint(name=\"worker\", cpu=\"cpu3c-1-2\")\n\n\
        @worker\nasync def count(text: str) -> Reply:\n\
        \x20   return Reply(words=len(text.split()), started=STARTED)\n";
    let files = [("flash.toml", FLASH_TOML), ("worker.py", WORKER)];
    let epoch = [("SOURCE_DATE_EPOCH", "1700000000")];
    let digests: Vec<(String, String, u64)> = (0..2)
        .map(|_| {
            let project = python_project(&files);
            let dir = project.path();
            ok(
                &flash_env(dir, "http://127.0.0.1:9", dir, &["build"], &epoch),
                None,
            );
            let wasm = dir.join(".flash/python/pyapp/pyapp.wasm");
            let component = std::fs::read(&wasm).unwrap();
            let artifact = std::fs::read(dir.join(".flash/artifact.tar.gz")).unwrap();
            assert_eq!(
                run_job(dir, "count", json!({"text": "one two three"})).map(|v| v["words"].clone()),
                Ok(json!(3))
            );
            (
                flash_manifest::sha256_hex(&component),
                flash_manifest::sha256_hex(&artifact),
                component.len() as u64,
            )
        })
        .collect();
    let (first, second) = (&digests[0], &digests[1]);
    assert_eq!(
        first.0, second.0,
        "two builds gave different components ({} and {} bytes)",
        first.2, second.2
    );
    assert_eq!(first.1, second.1, "two builds gave different artifacts");
}

#[test]
fn init_python_scaffolds_runpod_flash_workers_that_build_and_run() {
    let dir = tempfile::tempdir().unwrap();
    ok(
        &flash(
            dir.path(),
            "http://127.0.0.1:9",
            dir.path(),
            &["init", "py-app", "--lang", "python"],
        ),
        None,
    );
    let project = dir.path().join("py-app");
    for file in [
        "flash.toml",
        "gpu_worker.py",
        "cpu_worker.py",
        "lb_worker.py",
        "requirements.txt",
    ] {
        assert!(project.join(file).is_file(), "{file} missing");
    }
    let out = ok(&build(&project), None);
    for expected in [
        "gpu_worker",
        "cpu_worker",
        "lb_worker",
        "POST /process",
        "GET /health",
    ] {
        assert!(out.contains(expected), "`{expected}` not in:\n{out}");
    }
    // `process` (lb_worker) awaits `gpu_hello` (gpu_worker); run locally it runs in place.
    let result = run_job(
        &project,
        "process",
        json!({"input_data": {"message": "two words"}}),
    );
    assert_eq!(
        result,
        Ok(json!({"status": "success", "gpu": {"message": "two words", "words": 2}}))
    );
}

#[test]
fn python_build_errors_say_what_to_do() {
    // No Python to run componentize-py with (in a cache of its own, so the pinned
    // toolchain has to be installed).
    let cache = tempfile::tempdir().unwrap();
    let project = python_project(&[
        ("flash.toml", FLASH_TOML),
        ("worker.py", "from flash_sdk import Endpoint\n"),
    ]);
    let out = flash_env(
        project.path(),
        "http://127.0.0.1:9",
        project.path(),
        &["build"],
        &[
            ("FLASH_CACHE_DIR", &cache.path().display().to_string()),
            ("FLASH_PYTHON", "/nonexistent/python3"),
        ],
    );
    let stderr = fails(&out);
    assert!(
        stderr.contains("Python components need Python 3.10 or newer at build time")
            && stderr.contains("FLASH_PYTHON"),
        "{stderr}"
    );

    // A module that fails at import: the build shows the Python error.
    let broken = python_project(&[
        ("flash.toml", FLASH_TOML),
        (
            "worker.py",
            "from flash_sdk import Endpoint\n\n@Endpoint(name=\"w\", gpu=\"AMPERE_48\", cpu=\"cpu3c-1-2\")\ndef f():\n    return 1\n",
        ),
    ]);
    let stderr = fails(&build(broken.path()));
    assert!(stderr.contains("worker.py"), "{stderr}");

    // No module uses flash_sdk.
    let empty = python_project(&[("flash.toml", FLASH_TOML), ("util.py", "X = 1\n")]);
    let stderr = fails(&build(empty.path()));
    assert!(stderr.contains("no Python module"), "{stderr}");
}

/// flash_sdk's own tests (guest-sdk/python/tests, run with the test venv's Python): its
/// `Endpoint` rules against the real runpod-flash from PyPI, and what a call does
/// (argument binding, results, error kinds, async functions, peer calls).
#[test]
fn flash_sdk_unit_tests_pass() {
    let out = std::process::Command::new(flash_tests::python().unwrap())
        .args([
            "-W",
            "ignore::FutureWarning",
            "-m",
            "unittest",
            "discover",
            "-v",
            "-s",
        ])
        .arg(flash_tests::repo_root().join("guest-sdk/python/tests"))
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{report}");
    assert!(report.contains("\nOK"), "{report}");
}

/// runpod-flash's own `flash init` skeleton, written by the real runpod-flash package, with
/// only its import lines changed and no flash.toml: it builds, deploys and answers.
#[test]
fn runpod_flash_skeleton_runs_with_only_the_import_changed() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("hello-flash");
    let created = flash_tests::run_python_script(
        "import json, os, pathlib, warnings\n\
         warnings.simplefilter('ignore')\n\
         from runpod_flash.cli.utils.skeleton import create_project_skeleton\n\
         print(json.dumps(create_project_skeleton(pathlib.Path(os.environ['DIR']))))",
        &[("DIR", dir.display().to_string())],
    )
    .unwrap();
    assert!(created.to_string().contains("lb_worker.py"), "{created}");
    for file in ["gpu_worker.py", "cpu_worker.py", "lb_worker.py"] {
        let path = dir.join(file);
        let source = std::fs::read_to_string(&path).unwrap();
        assert!(source.contains("from runpod_flash import"), "{source}");
        std::fs::write(
            &path,
            source.replace("from runpod_flash import", "from flash_sdk import"),
        )
        .unwrap();
    }
    assert!(!dir.join("flash.toml").exists());

    let server = Server::start();
    deploy(&dir, &server);
    let gpu = call(
        &dir,
        &server,
        "gpu_hello",
        r#"{"input_data": {"message": "hi gpu"}}"#,
    );
    assert_eq!(gpu["message"], "hi gpu", "{gpu}");
    // torch (a native package) is left out of the component; the skeleton handles that.
    assert_eq!(gpu["gpu"]["available"], false, "{gpu}");
    assert!(
        gpu["python_version"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.")),
        "{gpu}"
    );
    let cpu = call(&dir, &server, "cpu_hello", r#"{"input_data": {}}"#);
    assert_eq!(cpu["message"], "Hello from CPU worker!", "{cpu}");
    assert!(
        cpu["timestamp"].as_str().is_some_and(|t| t.len() >= 19),
        "{cpu}"
    );
    let processed = call(&dir, &server, "process", r#"{"input_data": {"n": 1}}"#);
    assert_eq!(processed["status"], "success", "{processed}");
    assert_eq!(processed["echo"], json!({"n": 1}), "{processed}");
    let health = call(&dir, &server, "health", "{}");
    assert_eq!(health, json!({"status": "healthy"}));
}

/// The polyglot example copied to a temporary directory; its Rust half depends on the SDK
/// by a relative path, pointed here at this repository's.
fn polyglot_project() -> tempfile::TempDir {
    let project = copy_project(&example("polyglot"));
    let cargo_toml = project.path().join("rust/Cargo.toml");
    let sdk = flash_tests::repo_root().join("guest-sdk/flash-sdk");
    let text = std::fs::read_to_string(&cargo_toml).unwrap().replace(
        "path = \"../../../guest-sdk/flash-sdk\"",
        &format!("path = {:?}", sdk.display().to_string()),
    );
    std::fs::write(&cargo_toml, text).unwrap();
    project
}

/// Polls `log` (a child's stdout file) until it has `count` lines containing `needle`;
/// returns the whole log. Bounded by `timeout`.
fn wait_for_line(log: &Path, needle: &str, count: usize, timeout: Duration) -> String {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.matches(needle).count() >= count {
            return text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no `{needle}` (x{count}) within {}s; output so far:\n{text}",
            timeout.as_secs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn run_watch_redeploys_only_the_endpoints_whose_code_changed() {
    let project = polyglot_project();
    let dir = project.path();
    // The polyglot test builds the same crate at the same time in the shared guest target
    // dir: a copy of a guest crate gets its own name.
    let cargo_toml = dir.join("rust/Cargo.toml");
    let text = std::fs::read_to_string(&cargo_toml).unwrap();
    std::fs::write(
        &cargo_toml,
        text.replace("name = \"polyglot_text\"", "name = \"polyglot_text_watch\""),
    )
    .unwrap();
    let port = flash_tests::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let log = dir.join("run.log");
    let home = dir.join(".flash/server");
    let _run = flash_tests::ChildGuard::spawn(
        std::process::Command::new(flash_tests::bin("flash"))
            .args(["run", "--watch", "--listen", &format!("127.0.0.1:{port}")])
            .current_dir(dir)
            .env("FLASH_HOME", &home)
            .env_remove("RUNPOD_API_KEY")
            .env("CARGO_TARGET_DIR", flash_tests::guest_target_dir())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(dir.join("run.err")).unwrap()),
    )
    .unwrap();
    wait_for_line(&log, "watching for changes", 1, Duration::from_secs(600));

    let summarize = |expected: &str| {
        // Workers of a restarted endpoint serve the new build once they are up: poll.
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        loop {
            let out = flash(
                dir,
                &url,
                &home,
                &[
                    "call",
                    "summarize",
                    r#"{"text": "a b c d", "words": 2}"#,
                    "--env",
                    "dev",
                ],
            );
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            if out.status.success()
                && serde_json::from_str::<Value>(&stdout).ok() == Some(json!(expected))
            {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "summarize never returned {expected:?}; last: {stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    };
    summarize("a b ...");

    // Edit the Python function: the two Python endpoints restart, the Rust one does not.
    let app = dir.join("python/app.py");
    let source = std::fs::read_to_string(&app).unwrap();
    std::fs::write(&app, source.replace("\" ...\"", "\" [more]\"")).unwrap();
    let text = wait_for_line(&log, "Redeployed:", 1, Duration::from_secs(600));
    let redeployed = text.lines().find(|l| l.starts_with("Redeployed:")).unwrap();
    assert!(
        redeployed.contains("py_worker") && redeployed.contains("py_api"),
        "{redeployed}"
    );
    assert!(!redeployed.contains("text_stats"), "{redeployed}");
    summarize("a b [more]");

    // A broken edit keeps the last good build serving.
    std::fs::write(&app, "this is not python\n").unwrap();
    let errors = dir.join("run.err");
    wait_for_line(
        &errors,
        "The last good build keeps serving",
        1,
        Duration::from_secs(600),
    );
    summarize("a b [more]");
}
