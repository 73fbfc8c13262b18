//! JavaScript and TypeScript functions end to end: `flash build` of `kind = "js"` projects
//! (esbuild and componentize-js, pinned and installed by `flash` itself with npm), jobs run
//! by the real `flash-host`, deploys on a real `flash server` called through the `flash`
//! CLI and plain HTTP, and the SDK's own unit tests (`node --test`). Calls across JS,
//! Python and Rust are in `python::polyglot_functions_call_each_other_across_languages`.
//!
//! Every project is copied to (or written in) a temporary directory first.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use flash_tests::control_plane::{Server, fails, flash, flash_env, ok};
use serde_json::{Value, json};

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let name = entry.file_name();
        if name == ".flash" || name == "node_modules" || name == "target" {
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

/// What a successful `flash build` printed, progress (stderr) included.
fn build_log(out: &Output) -> String {
    let stdout = ok(out, None);
    format!("{stdout}{}", String::from_utf8_lossy(&out.stderr))
}

fn project(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (path, content) in files {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
    dir
}

const FLASH_TOML: &str =
    "[app]\nname = \"jsapp\"\n\n[[component]]\nname = \"jsapp\"\nkind = \"js\"\npath = \".\"\n";

/// Runs one job of the built artifact with `flash-host --test-input`, as resource
/// `resource`, and returns its body (`output` and `stream`), or the error body.
fn run_job(dir: &Path, resource: &str, function: &str, input: Value) -> Result<Value, Value> {
    let out = std::process::Command::new(flash_tests::bin("flash-host"))
        .arg("--artifact")
        .arg(dir.join(".flash/artifact.tar.gz"))
        .args([
            "--test-input",
            &json!({"function_name": function, "kwargs": input}).to_string(),
        ])
        .env("FLASH_RESOURCE_NAME", resource)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let body: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("{e}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr)));
    if out.status.success() {
        Ok(body)
    } else {
        Err(body["error"].clone())
    }
}

const WORKER: &str = r#"import { Endpoint, RemoteError, emit, peerCall, currentResource } from 'flash-sdk';
import { double } from './lib/math';

const worker = new Endpoint({ name: 'worker', cpu: 'cpu3c-1-2', executionTimeoutMs: 20000 });
// Evaluated once, while the component is pre-initialised: the snapshot keeps these.
const STARTED = Date.now();
const WORDS = new Map('alpha beta gamma'.split(' ').map((w) => [w, w.length]));

export const slow = worker.fn(async function slow(ms: number, label = 'done') {
  await new Promise((resolve) => setTimeout(resolve, ms));
  emit({ waited: ms });
  return { label, doubled: double(ms), started: STARTED > 0, words: WORDS.size };
});

worker.fn(async function twice(ms: number) {
  // A call to a function of the same config runs in place.
  const first = await slow(ms, 'first');
  const byName = (await peerCall('slow', { ms, label: 'by name' })) as { label: string };
  return [first.label, byName.label, currentResource()];
});

worker.fn(function throws_string() {
  throw 'a plain string';
});

worker.fn(async function fails(n: number) {
  await null;
  throw new RangeError(`n is out of range: ${n}`);
});

worker.fn(function relays() {
  throw new RemoteError('timeout', 'the far end was too slow');
});

worker.fn(function big() {
  return 10n;
});
"#;

const MATH: &str = "export function double(n: number): number {\n  return n * 2;\n}\n";

/// Two builds of the same sources from scratch, in two directories, give the same component
/// and artifact bytes; the module reads the clock and builds a Map while it is evaluated.
/// Then: async functions, emit, local calls, thrown errors and their kinds.
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
#[test]
fn js_builds_are_byte_identical_and_functions_run() {
    let files = [
        ("flash.toml", FLASH_TOML),
        ("index.ts", WORKER),
        ("lib/math.ts", MATH),
    ];
    let epoch = [("SOURCE_DATE_EPOCH", "1700000000")];
    let projects: Vec<tempfile::TempDir> = (0..2).map(|_| project(&files)).collect();
    let digests: Vec<(String, String)> = projects
        .iter()
        .map(|project| {
            let dir = project.path();
            ok(
                &flash_env(dir, "http://127.0.0.1:9", dir, &["build"], &epoch),
                None,
            );
            let component = std::fs::read(dir.join(".flash/js/jsapp/jsapp.wasm")).unwrap();
            let artifact = std::fs::read(dir.join(".flash/artifact.tar.gz")).unwrap();
            (
                flash_manifest::sha256_hex(&component),
                flash_manifest::sha256_hex(&artifact),
            )
        })
        .collect();
    assert_eq!(
        digests[0].0, digests[1].0,
        "two builds gave different components"
    );
    assert_eq!(
        digests[0].1, digests[1].1,
        "two builds gave different artifacts"
    );

    let dir = projects[0].path();
    let body = run_job(dir, "worker", "slow", json!({"ms": 30})).unwrap();
    assert_eq!(
        body["output"],
        json!({"label": "done", "doubled": 60, "started": true, "words": 3})
    );
    assert_eq!(body["stream"], json!([{"waited": 30}]));
    let body = run_job(dir, "worker", "twice", json!({"ms": 1})).unwrap();
    assert_eq!(body["output"], json!(["first", "by name", "worker"]));

    let error = run_job(dir, "worker", "fails", json!({"n": 7})).unwrap_err();
    assert_eq!(error["kind"], "user-error", "{error}");
    assert_eq!(
        error["message"], "RangeError: n is out of range: 7",
        "{error}"
    );
    let error = run_job(dir, "worker", "throws_string", json!({})).unwrap_err();
    assert_eq!(
        (error["kind"].as_str(), error["message"].as_str()),
        (Some("user-error"), Some("a plain string"))
    );
    let error = run_job(dir, "worker", "relays", json!({})).unwrap_err();
    assert_eq!(
        (error["kind"].as_str(), error["message"].as_str()),
        (Some("timeout"), Some("the far end was too slow"))
    );
    let error = run_job(dir, "worker", "big", json!({})).unwrap_err();
    assert_eq!(error["kind"], "user-error", "{error}");
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("`big` returned a value that is not JSON")),
        "{error}"
    );
    let error = run_job(dir, "worker", "slow", json!({"msec": 1})).unwrap_err();
    assert_eq!(error["kind"], "invalid-input", "{error}");
    assert_eq!(
        error["message"],
        "`slow`: unexpected argument `msec` (its arguments: `ms`, `label`)"
    );
}

#[test]
fn unchanged_js_projects_are_not_rebuilt_and_changed_ones_are() {
    let project = project(&[
        ("flash.toml", FLASH_TOML),
        ("index.ts", WORKER),
        ("lib/math.ts", MATH),
    ]);
    let dir = project.path();
    let artifact = || std::fs::read(dir.join(".flash/artifact.tar.gz")).unwrap();
    let first_log = build_log(&build(dir));
    assert!(first_log.contains("componentize-js"), "{first_log}");
    let first = artifact();
    let again = build_log(&build(dir));
    assert!(again.contains("up to date"), "{again}");
    assert!(!again.contains("componentize-js"), "{again}");
    assert!(
        artifact() == first,
        "an unchanged project gave a different artifact"
    );

    // A change in an imported module is rebuilt, and served.
    std::fs::write(dir.join("lib/math.ts"), MATH.replace("n * 2", "n * 3")).unwrap();
    let rebuilt = build_log(&build(dir));
    assert!(!rebuilt.contains("up to date"), "{rebuilt}");
    let body = run_job(dir, "worker", "slow", json!({"ms": 1})).unwrap();
    assert_eq!(body["output"]["doubled"], 3);
}

/// Which configs call peers, from the build's reading of the sources: `front` calls `embed`
/// of `back` through a helper and a `const`; `back`'s functions call only each other;
/// `router` calls whatever name it is given; `lonely` never calls anyone.
const PEERS: &str = r#"import { Endpoint, peerCall } from 'flash-sdk';

const back = new Endpoint({ name: 'back', cpu: 'cpu3c-1-2' });
const front = new Endpoint({ name: 'front', cpu: 'cpu3c-1-2' });
const router = new Endpoint({ name: 'router', cpu: 'cpu3c-1-2' });
const lonely = new Endpoint({ name: 'lonely', cpu: 'cpu3c-1-2' });

const square = (n: number): number => n * n;
export const embed = back.fn(function embed(n: number): number { return square(n); });
back.fn(async function twice(n: number): Promise<number> { return 2 * (await embed(n)); });

class Helper {
  async viaBack(n: number): Promise<number> { return await embed(n); }
}
const helper = new Helper();
front.fn(async function ask(n: number): Promise<number> { return await helper.viaBack(n); });

router.fn(async function route(name: string, n: number): Promise<unknown> {
  return await peerCall(name, { n });
});
lonely.fn(function alone(n: number): number { return square(n) + 1; });
"#;

#[test]
fn js_sources_are_scanned_for_peer_calls() {
    let project = project(&[("flash.toml", FLASH_TOML), ("index.ts", PEERS)]);
    let dir = project.path();
    let log = build_log(&build(dir));
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(dir.join(".flash/flash_manifest.json")).unwrap())
            .unwrap();
    let calls = |r: &str| manifest["resources"][r]["makes_remote_calls"].clone();
    assert_eq!(
        [
            calls("front"),
            calls("router"),
            calls("back"),
            calls("lonely")
        ],
        [json!(true), json!(true), json!(false), json!(false)],
        "{manifest}\n{log}"
    );
    // What the scan saw, kept next to the component.
    let graph: Value =
        serde_json::from_slice(&std::fs::read(dir.join(".flash/js/jsapp/calls.json")).unwrap())
            .unwrap();
    assert_eq!(
        graph["functions"]["route"]["computed_peer_call"], true,
        "{graph}"
    );
    assert!(
        graph["functions"]["viaBack"]["names"]
            .as_array()
            .unwrap()
            .contains(&json!("embed")),
        "{graph}"
    );
}

#[test]
fn js_build_errors_say_what_to_do() {
    // No entry module.
    let empty = project(&[("flash.toml", FLASH_TOML), ("README.md", "nothing\n")]);
    let stderr = fails(&build(empty.path()));
    assert!(
        stderr.contains("no entry module in") && stderr.contains("index.ts, index.js"),
        "{stderr}"
    );
    // npm dependencies without a lockfile.
    let unlocked = project(&[
        ("flash.toml", FLASH_TOML),
        ("index.js", "import ms from 'ms';\n"),
        ("package.json", r#"{"dependencies": {"ms": "2.1.3"}}"#),
    ]);
    let stderr = fails(&build(unlocked.path()));
    assert!(
        stderr.contains(
            "lists dependencies but there is no package-lock.json next to it: run `npm install`"
        ),
        "{stderr}"
    );
    // No Node.js.
    let entry_only = project(&[("flash.toml", FLASH_TOML), ("index.js", "export {};\n")]);
    let stderr_no_node = fails(&flash_env(
        entry_only.path(),
        "http://127.0.0.1:9",
        entry_only.path(),
        &["build"],
        &[("FLASH_NODE", "/nonexistent/node")],
    ));
    assert!(
        stderr_no_node.contains(
            "JavaScript components need Node.js 20 or newer and npm at build time (to run \
             esbuild and componentize-js), and `/nonexistent/node` (Node.js) was not found"
        ),
        "{stderr_no_node}"
    );
    // A module that throws while it is evaluated: the build says where.
    let broken = project(&[
        ("flash.toml", FLASH_TOML),
        (
            "index.js",
            "import { Endpoint } from 'flash-sdk';\nnew Endpoint({ workers: 'many' });\n",
        ),
    ]);
    let stderr = fails(&build(broken.path()));
    assert!(
        stderr.contains("workers must be an integer or [min, max] array, got string: 'many'"),
        "{stderr}"
    );
    // Random numbers while the module is evaluated (at build time) are refused.
    let random = project(&[
        ("flash.toml", FLASH_TOML),
        ("index.js", "export const SEED = Math.random();\n"),
    ]);
    let stderr = fails(&build(random.path()));
    assert!(
        stderr.contains("hint: the app's modules are evaluated at build time, where componentize-js offers no random numbers"),
        "{stderr}"
    );
    // A module that does not parse: esbuild names the file and line.
    let syntax = project(&[
        ("flash.toml", FLASH_TOML),
        ("index.ts", "export const = 1;\n"),
    ]);
    let stderr = fails(&build(syntax.path()));
    assert!(
        stderr.contains("bundling failed:") && stderr.contains("index.ts:1:"),
        "{stderr}"
    );
}

#[test]
fn js_quickstart_serves_queue_and_http_functions_with_peer_calls() {
    let project = tempfile::tempdir().unwrap();
    let dir = project.path();
    copy_dir(&example("quickstart-js"), dir);
    let server = Server::start();
    let home = server.data_dir.path();
    let out = build_log(&build(dir));
    for expected in [
        "gpu_config",
        "api",
        "POST /predict",
        "GET /stats",
        "installing npm dependencies",
    ] {
        assert!(out.contains(expected), "`{expected}` not in:\n{out}");
    }
    for args in [&["deploy", "new", "dev"][..], &["deploy", "send", "dev"]] {
        ok(&flash(dir, &server.url, home, args), Some(&server));
    }
    let call = |function: &str, args: &str| -> Value {
        let out = flash(
            dir,
            &server.url,
            home,
            &["call", function, args, "--env", "dev", "--timeout", "120"],
        );
        let stdout = ok(&out, Some(&server));
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
    };
    let v = call("embed", r#"{"text": "hello flash", "dims": 8}"#);
    assert_eq!(v.as_array().map(Vec::len), Some(8), "{v}");
    let s = call("similarity", r#"{"a": "good day", "b": "great day"}"#);
    assert!(s.as_f64().is_some_and(|s| s > 0.0 && s <= 1.0), "{s}");
    // `predict` (load-balanced, `api`) awaits `embed` on `gpu_config`: a peer call.
    let p = call("predict", r#"{"text": "what a great day"}"#);
    assert_eq!(p["label"], "positive", "{p}");
    assert_eq!(p["dims"], 64, "{p}");
    // `stats` uses the bundled npm dependency `ms`.
    let stats = call("stats", "{}");
    assert_eq!(
        stats,
        json!({"app": "quickstart-js", "version": "0.1.0", "served_by": "api", "idle_timeout": "1 minute"})
    );

    // A thrown error on the queue endpoint: its kind, message and JavaScript stack travel
    // in RunPod's error fields.
    let state: Value =
        serde_json::from_slice(&std::fs::read(dir.join(".flash/resources.json")).unwrap()).unwrap();
    let gpu = state["environments"]["dev"]["resources"]["gpu_config"]["endpoint_id"]
        .as_str()
        .unwrap()
        .to_string();
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
        error["error_message"], "RangeError: dims must be in 1..=4096, got 0",
        "{error}"
    );
    let traceback = error["error_traceback"].as_str().unwrap();
    // SpiderMonkey's frames (`function@file:line:column`) down to `embed`, mapped from the
    // bundle back to the TypeScript source (the line that throws).
    let frames: Vec<&str> = traceback.lines().collect();
    assert_eq!(
        frames[0], "RangeError: dims must be in 1..=4096, got 0",
        "{traceback}"
    );
    assert!(
        frames.len() == 2 && frames[1].contains("@src/embeddings.ts:16:"),
        "{traceback}"
    );

    // Invalid input names the argument, and exits 2.
    let out = flash(
        dir,
        &server.url,
        home,
        &["call", "embed", r#"{"text": "x"}"#, "--env", "dev"],
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = fails(&out);
    assert!(
        stderr.contains("error: `embed` failed: invalid-input: `embed`: missing argument `dims`"),
        "{stderr}"
    );
}

#[test]
fn init_js_and_ts_scaffold_projects_that_build_and_run() {
    for lang in ["ts", "js"] {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("hello");
        ok(
            &flash(
                parent.path(),
                "http://127.0.0.1:9",
                parent.path(),
                &["init", "hello", "--lang", lang],
            ),
            None,
        );
        let entry = if lang == "ts" { "index.ts" } else { "index.js" };
        assert!(dir.join(entry).is_file(), "{lang}: no {entry}");
        let out = build_log(&build(&dir));
        for expected in [
            "gpu_worker",
            "cpu_worker",
            "lb_worker",
            "POST /process",
            "GET /health",
        ] {
            assert!(
                out.contains(expected),
                "{lang}: `{expected}` not in:\n{out}"
            );
        }
        let body = run_job(
            &dir,
            "gpu_worker",
            "gpu_hello",
            json!({"message": "one two"}),
        )
        .unwrap();
        assert_eq!(
            body["output"],
            json!({"message": "one two", "words": 2}),
            "{lang}"
        );
        let body = run_job(&dir, "lb_worker", "health", json!({})).unwrap();
        assert_eq!(body["output"], json!({"status": "healthy"}), "{lang}");
    }
}

/// The SDK's unit tests (`node --test`, after `tsc`): every `Endpoint` rule with its exact
/// error, binding, in-place and peer calls, errors. Installs the pinned TypeScript first.
#[test]
fn js_sdk_unit_tests_pass() {
    let sdk = flash_tests::repo_root().join("guest-sdk/js");
    if !sdk.join("node_modules/.bin/tsc").is_file() {
        let out = std::process::Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&sdk)
            .output()
            .expect("running npm (Node.js and npm are needed: apt-get install nodejs npm)");
        assert!(
            out.status.success(),
            "npm ci: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = std::process::Command::new("npm")
        .args(["test", "--silent"])
        .current_dir(&sdk)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("# fail 0"), "{stdout}");
    assert!(!stdout.contains("# pass 0"), "{stdout}");
}
