//! Host-provided inference end to end: the `examples/inference` component, real
//! `flash-host` processes with ONNX Runtime from the test venv (`ORT_DYLIB_PATH`), jobs over
//! the RunPod worker protocol, and the same model run by `onnxruntime` in Python as the
//! reference.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::*;
use serde_json::{Value, json};

const EXAMPLE: &str = "examples/inference";
const RESOURCE: &str = "classifier";

/// The example component and an artifact with its `classifier` model (and `slow`, when
/// asked), built in `dir`.
async fn example_artifact(
    dir: &Path,
    slow: bool,
    tweak: impl FnOnce(&mut flash_manifest::Manifest),
) -> PathBuf {
    let wasm = tokio::task::spawn_blocking(|| flash_tests::build_guest(EXAMPLE))
        .await
        .unwrap()
        .unwrap();
    let flags: &[&str] = if slow { &["--slow"] } else { &[] };
    let models = flash_tests::inference_models(&dir.join("models"), flags).unwrap();
    let classifier = models.join("classifier.onnx");
    let slow_model = models.join("slow.onnx");
    let mut list: Vec<(&str, &Path)> = vec![("classifier", &classifier)];
    if slow {
        list.push(("slow", &slow_model));
    }
    flash_tests::guest_artifact_with_models(&wasm, "inference", dir, &list, tweak)
        .await
        .unwrap()
}

fn ort_lib() -> String {
    flash_tests::onnxruntime_lib()
        .unwrap()
        .display()
        .to_string()
}

/// Probabilities from Python `onnxruntime` for `rows` on the committed model.
fn reference(rows: &Value) -> Vec<Vec<f32>> {
    let script = r#"
import json, sys
import numpy as np, onnxruntime as ort
rows = np.array(json.loads(sys.argv[2]), dtype=np.float32)
session = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
print(json.dumps(session.run(["probabilities"], {"features": rows})[0].tolist()))
"#;
    let model = flash_tests::repo_root()
        .join(EXAMPLE)
        .join("model/classifier.onnx");
    let out = Command::new(flash_tests::python().unwrap())
        .arg("-c")
        .arg(script)
        .arg(&model)
        .arg(rows.to_string())
        .output()
        .unwrap();
    serde_json::from_value(stdout_json(out)).unwrap()
}

/// The binary form of a `Matrix` argument, built the way the SDK docs tell Python clients to.
fn binary_form(rows: &Value) -> Value {
    let script = r#"
import base64, json, sys
import numpy as np
x = np.array(json.loads(sys.argv[1]), dtype=np.float32)
print(json.dumps({"shape": list(x.shape), "f32_le_base64": base64.b64encode(x.astype("<f4").tobytes()).decode()}))
"#;
    let out = Command::new(flash_tests::python().unwrap())
        .arg("-c")
        .arg(script)
        .arg(rows.to_string())
        .output()
        .unwrap();
    stdout_json(out)
}

/// Rows of features, different per `seed`.
fn rows(seed: usize, n: usize) -> Value {
    json!(
        (0..n)
            .map(|i| (0..4)
                .map(|j| ((seed * 31 + i * 7 + j * 3) % 17) as f32 / 4.0 - 2.0)
                .collect::<Vec<f32>>())
            .collect::<Vec<_>>()
    )
}

/// Asserts a `classify` output equals the reference to 1e-5.
fn assert_matches(output: &Value, expected: &[Vec<f32>]) {
    let predictions = output.as_array().unwrap_or_else(|| panic!("{output}"));
    assert_eq!(predictions.len(), expected.len(), "{output}");
    for (p, want) in predictions.iter().zip(expected) {
        let got: Vec<f32> = serde_json::from_value(p["probabilities"].clone()).unwrap();
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() <= 1e-5, "got {got:?}, want {want:?}");
        }
        let class = want
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .unwrap()
            .0;
        assert_eq!(p["class"], json!(class));
    }
}

/// A queue worker for the `classifier` resource; returns (source, guard).
async fn start_worker(
    dir: &Path,
    artifact: &Path,
    extra: &[(&str, &str)],
) -> (JobSource, flash_tests::ChildGuard) {
    let source = JobSource::start().await;
    let mut env = source.worker_env("ep-nn");
    env.extend(envs(&[
        ("FLASH_RESOURCE_NAME", RESOURCE),
        ("ORT_DYLIB_PATH", &ort_lib()),
    ]));
    env.extend(envs(extra));
    env.push(("FLASH_ARTIFACT_URL".into(), artifact.display().to_string()));
    let host = spawn_host(dir, "nn", &env);
    (source, host)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classify_matches_onnxruntime_and_gpu_falls_back_to_reported_cpu() {
    let tmp = tempfile::tempdir().unwrap();
    let artifact = example_artifact(tmp.path(), false, |_| {}).await;
    let (source, _host) = start_worker(tmp.path(), &artifact, &[]).await;

    let input = rows(1, 5);
    let r = source
        .run(
            "ep-nn",
            json!({"function_name": "classify", "kwargs": {"rows": input}}),
        )
        .await;
    let log_text = log(tmp.path(), "nn");
    assert!(r.get("output").is_some(), "{r}\n{log_text}");
    assert_matches(&r["output"], &reference(&input));

    // The same rows in the binary form (base64 float32) give the same predictions.
    let r = source
        .run(
            "ep-nn",
            json!({"function_name": "classify", "kwargs": {"rows": binary_form(&input)}}),
        )
        .await;
    assert_matches(&r["output"], &reference(&input));

    // The example's config is a GPU config: this machine's ONNX Runtime (the CPU wheel) has
    // no CUDA, so the model runs on the CPU, with a warning and the device reported.
    assert!(
        log_text.contains("WARN") && log_text.contains("running on the CPU"),
        "{log_text}"
    );
    assert!(
        log_text.contains("no CUDA execution provider"),
        "{log_text}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pings = source.inner.lock().unwrap().pings.clone();
        if let Some((_, query)) = pings.last() {
            assert_eq!(
                query.get("inference").map(String::as_str),
                Some("classifier:cpu")
            );
            break;
        }
        assert!(Instant::now() < deadline, "no heartbeat");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The component may load its own copy of the model, for any target; `tpu` is a typed
    // error, not a crash, and the worker keeps serving.
    let r = source
        .run(
            "ep-nn",
            json!({"function_name": "classify_with", "kwargs": {"model": "embedded", "target": "gpu", "rows": input}}),
        )
        .await;
    assert_matches(&r["output"], &reference(&input));
    let r = source
        .run(
            "ep-nn",
            json!({"function_name": "classify_with", "kwargs": {"model": "embedded", "target": "tpu", "rows": input}}),
        )
        .await;
    let (kind, message) = error_of(&r);
    assert_eq!(kind, "internal", "{message}");
    assert!(
        message.contains("wasi-nn unsupported-operation") && message.contains("tpu"),
        "{message}"
    );

    // An unknown model name is wasi-nn `not-found`, naming what the host has.
    let r = source
        .run(
            "ep-nn",
            json!({"function_name": "classify_with", "kwargs": {"model": "nope", "target": "cpu", "rows": input}}),
        )
        .await;
    let (_, message) = error_of(&r);
    assert!(
        message.contains("wasi-nn not-found") && message.contains("classifier"),
        "{message}"
    );

    // Bad input shape: `invalid-argument` from the guest's own check or the host's.
    let r = source
        .run(
            "ep-nn",
            json!({"function_name": "classify", "kwargs": {"rows": [[1.0, 2.0]]}}),
        )
        .await;
    assert_eq!(error_of(&r).0, "invalid-input");
    let r = source
        .run(
            "ep-nn",
            json!({"function_name": "classify", "kwargs": {"rows": [[1.0, 2.0, 3.0, 4.0], [1.0]]}}),
        )
        .await;
    let (kind, message) = error_of(&r);
    assert_eq!(kind, "invalid-input", "{message}");
    assert!(
        message.contains("argument `rows`: row 1 has 1 values, row 0 has 4"),
        "{message}"
    );

    let input = rows(2, 3);
    let r = source
        .run(
            "ep-nn",
            json!({"function_name": "classify", "kwargs": {"rows": input}}),
        )
        .await;
    assert_matches(&r["output"], &reference(&input));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_concurrent_requests_are_all_correct() {
    let tmp = tempfile::tempdir().unwrap();
    let artifact = example_artifact(tmp.path(), false, |_| {}).await;
    let (source, _host) = start_worker(
        tmp.path(),
        &artifact,
        &[("FLASH_CONCURRENCY", "16"), ("FLASH_NN_TARGET", "cpu")],
    )
    .await;
    let inputs: Vec<Value> = (0..16).map(|i| rows(100 + i, 1 + i % 4)).collect();
    let expected: Vec<_> = inputs.iter().map(reference).collect();
    let jobs: Vec<String> = inputs
        .iter()
        .map(|input| {
            source.submit(
                "ep-nn",
                json!({"function_name": "classify", "kwargs": {"rows": input}}),
            )
        })
        .collect();
    for (job, want) in jobs.iter().zip(&expected) {
        let r = source.result(job, Duration::from_secs(60)).await;
        assert!(r.get("output").is_some(), "{r}\n{}", log(tmp.path(), "nn"));
        assert_matches(&r["output"], want);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_during_compute_is_a_timeout_and_the_worker_recovers() {
    let tmp = tempfile::tempdir().unwrap();
    let artifact = example_artifact(tmp.path(), true, |m| {
        m.resources.get_mut(RESOURCE).unwrap().execution_timeout_ms = Some(1000);
        m.models.get_mut("slow").unwrap().sessions = Some(1);
    })
    .await;
    let (source, _host) = start_worker(tmp.path(), &artifact, &[]).await;
    let started = Instant::now();
    let r = source
        .run(
            "ep-nn",
            json!({"function_name": "classify_with", "kwargs": {"model": "slow", "target": "cpu", "rows": rows(3, 1)}}),
        )
        .await;
    let (kind, message) = error_of(&r);
    assert_eq!(kind, "timeout", "{message}\n{}", log(tmp.path(), "nn"));
    // The slow model computes for seconds; the call ends at its 1 s deadline.
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    let input = rows(4, 2);
    let r = source
        .run(
            "ep-nn",
            json!({"function_name": "classify", "kwargs": {"rows": input}}),
        )
        .await;
    assert_matches(&r["output"], &reference(&input));
}

/// Runs `flash-host --test-input` (one job, all resources local) with `env`.
fn one_shot(artifact: &Path, env: &[(&str, &str)], input: Value) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_flash-host"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", std::env::var("HOME").unwrap_or_default())
        .args(["--artifact", &artifact.display().to_string()])
        .args(["--test-input", &input.to_string()]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_broken_library_is_a_startup_error_naming_ort_dylib_path() {
    let tmp = tempfile::tempdir().unwrap();
    let artifact = example_artifact(tmp.path(), false, |_| {}).await;
    let input = json!({"function_name": "classify", "kwargs": {"rows": rows(5, 1)}});

    let (ok, stdout, stderr) = one_shot(&artifact, &[], input.clone());
    assert!(!ok && stdout.is_empty(), "{stdout}");
    assert!(stderr.contains("ORT_DYLIB_PATH is not set"), "{stderr}");
    assert!(stderr.contains("`classifier`"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    let missing = tmp.path().join("nope/libonnxruntime.so");
    let (ok, _, stderr) = one_shot(
        &artifact,
        &[("ORT_DYLIB_PATH", &missing.display().to_string())],
        input.clone(),
    );
    assert!(!ok);
    assert!(
        stderr.contains("ORT_DYLIB_PATH=") && stderr.contains("no such file"),
        "{stderr}"
    );

    let broken = tmp.path().join("libonnxruntime.so");
    std::fs::write(&broken, b"not a library").unwrap();
    let (ok, _, stderr) = one_shot(
        &artifact,
        &[("ORT_DYLIB_PATH", &broken.display().to_string())],
        input.clone(),
    );
    assert!(!ok);
    assert!(
        stderr.contains("is not a usable ONNX Runtime library") && !stderr.contains("panicked"),
        "{stderr}"
    );

    // With the library, the same one-shot run works.
    let (ok, stdout, stderr) = one_shot(&artifact, &[("ORT_DYLIB_PATH", &ort_lib())], input);
    assert!(ok, "{stdout}\n{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_without_models_starts_without_the_library() {
    let tmp = tempfile::tempdir().unwrap();
    let artifact = example_artifact(tmp.path(), false, |m| m.models.clear()).await;
    let (ok, stdout, stderr) = one_shot(
        &artifact,
        &[],
        json!({"function_name": "classify", "kwargs": {"rows": rows(6, 1)}}),
    );
    // The host starts and runs the job; the guest's wasi:nn calls get typed errors.
    assert!(!ok, "{stdout}");
    let message = one_shot_error(&stdout, &stderr);
    assert!(
        message.contains("wasi-nn not-found") && message.contains("preloads no models"),
        "{message}"
    );
    let (ok, stdout, stderr) = one_shot(
        &artifact,
        &[],
        json!({"function_name": "classify_with", "kwargs": {"model": "embedded", "target": "cpu", "rows": rows(6, 1)}}),
    );
    assert!(!ok, "{stdout}");
    let message = one_shot_error(&stdout, &stderr);
    assert!(
        message.contains("wasi-nn unsupported-operation") && message.contains("ORT_DYLIB_PATH"),
        "{message}"
    );
}

/// The error message of a failed `--test-input` run.
fn one_shot_error(stdout: &str, stderr: &str) -> String {
    let body: Value =
        serde_json::from_str(stdout).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"));
    body["error"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("{body}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_balanced_ping_reports_the_device_serving_each_model() {
    let tmp = tempfile::tempdir().unwrap();
    // The example's GPU config, served as a load-balanced endpoint (no routes: `/execute`).
    let artifact = example_artifact(tmp.path(), false, |m| {
        let r = m.resources.get_mut(RESOURCE).unwrap();
        r.resource_type = flash_manifest::ResourceType::LiveLoadBalancer;
        r.is_load_balanced = true;
        for f in &mut r.functions {
            f.is_load_balanced = true;
        }
    })
    .await;
    let port = flash_tests::free_port();
    let mut env = envs(&[
        ("FLASH_RESOURCE_NAME", RESOURCE),
        ("FLASH_DISABLE_RP_AUTH", "true"),
        ("ORT_DYLIB_PATH", &ort_lib()),
        ("FLASH_NN_SESSIONS", "2"),
    ]);
    env.push(("FLASH_LISTEN_ADDR".into(), format!("127.0.0.1:{port}")));
    env.push(("FLASH_ARTIFACT_URL".into(), artifact.display().to_string()));
    let _host = spawn_host(tmp.path(), "lb", &env);
    let base = format!("http://127.0.0.1:{port}");
    let url = format!("{base}/ping");
    tokio::task::spawn_blocking(move || flash_tests::wait_for_http(&url, Duration::from_secs(30)))
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{e}\n{}", log(tmp.path(), "lb")));

    let ping: Value = reqwest::get(format!("{base}/ping"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let model = &ping["inference"][0];
    assert_eq!(model["name"], "classifier", "{ping}");
    assert_eq!(model["requested"], "gpu");
    assert_eq!(model["device"], "cpu");
    assert_eq!(model["execution_provider"], "CPUExecutionProvider");
    assert_eq!(model["sessions"], 2);
    assert!(
        model["fallback"]
            .as_str()
            .is_some_and(|f| f.contains("no CUDA execution provider")),
        "{ping}"
    );

    let input = rows(7, 3);
    let r: Value = reqwest::Client::new()
        .post(format!("{base}/execute"))
        .json(&json!({"function_name": "classify", "kwargs": {"rows": input}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["success"], true, "{r}");
    assert_matches(&r["result"], &reference(&input));
}
