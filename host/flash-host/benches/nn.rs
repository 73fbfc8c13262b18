//! Inference throughput (issue 6, "Done means"): rows classified per second by
//!
//! 1. **Python `onnxruntime`** directly: `threads` Python threads, one `InferenceSession`
//!    each (1 intra-op thread), calling `run` in a loop — the baseline; and the same
//!    threads running a **Python handler** for the request flash-host gets (JSON rows in,
//!    `numpy` array, `run`, JSON predictions out), which is what a Python worker pays;
//! 2. **flash-nn graph**: the host's session pool without any guest
//!    (`flash_nn::Graph::compute` from `threads` tokio tasks) — ONNX Runtime plus our
//!    blocking-pool hand-off;
//! 3. **flash-host**: the full serving path, `HostApp::invoke("classify_with", …)` from
//!    `threads` tasks: a fresh instance of the `examples/inference` component per call,
//!    JSON in and out, guest → `wasi:nn` → the same session pool; once with the rows as
//!    JSON numbers and once in `Matrix`'s binary form (base64 float32).
//!
//! Same machine, same run, same model bytes, same inputs, same thread count (tokio
//! workers = session pool size = Python threads), for the example's tiny classifier, a
//! wider "embedding-size" MLP and a compute-bound deep MLP (`make_model.py --bench`), at
//! batch sizes 1 and more.
//!
//! Run: `cargo bench -p flash-host --bench nn` (needs the test venv with onnxruntime; see
//! `scripts/test.sh`). `FLASH_BENCH_SECS` (default 3) and `FLASH_BENCH_THREADS` (default:
//! cores) tune it, `FLASH_BENCH_CASES=deep/16,classifier/1` picks cases (model/batch);
//! without `--bench` it runs a short smoke version.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use flash_host::app::{AppOptions, HostApp};
use flash_host::models::{self, NnOptions};
use flash_nn::{Target, Tensor};
use flash_runtime::{Engine, EngineOptions, NoPeers};
use serde_json::{Value, json};

const PYTHON_BENCH: &str = r#"
import json, sys, threading, time
import numpy as np, onnxruntime as ort
model, rows, threads, seconds, mode = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
x = np.array(rows, dtype=np.float32)
payload = json.dumps({"rows": rows})
def session():
    o = ort.SessionOptions()
    o.intra_op_num_threads = 1
    o.inter_op_num_threads = 1
    return ort.InferenceSession(model, o, providers=["CPUExecutionProvider"])
sessions = [session() for _ in range(threads)]
for s in sessions:
    for _ in range(20):
        s.run(None, {"features": x})
counts = [0] * threads
start = time.perf_counter()
deadline = start + seconds
def handler(s):
    # What a Python worker does with the request flash-host gets: JSON in, JSON out.
    rows = np.array(json.loads(payload)["rows"], dtype=np.float32)
    (p,) = s.run(["probabilities"], {"features": rows})
    return json.dumps([{"class": int(r.argmax()), "probabilities": r.tolist()} for r in p])
def work(i):
    s, n = sessions[i], 0
    while time.perf_counter() < deadline:
        if mode == "handler":
            handler(s)
        else:
            s.run(None, {"features": x})
        n += 1
    counts[i] = n
ts = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
for t in ts: t.start()
for t in ts: t.join()
print(json.dumps({"calls": sum(counts), "seconds": time.perf_counter() - start}))
"#;

fn main() -> Result<()> {
    let full = std::env::args().any(|a| a == "--bench");
    let seconds: f64 = match std::env::var("FLASH_BENCH_SECS") {
        Ok(v) => v.parse().context("FLASH_BENCH_SECS")?,
        Err(_) if full => 3.0,
        Err(_) => 0.2,
    };
    let threads: usize = match std::env::var("FLASH_BENCH_THREADS") {
        Ok(v) => v.parse().context("FLASH_BENCH_THREADS")?,
        Err(_) => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?;
    runtime.block_on(run(seconds, threads))
}

async fn run(seconds: f64, threads: usize) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let lib = flash_tests::onnxruntime_lib()?;
    let model_dir = flash_tests::inference_models(&tmp.path().join("models"), &["--bench"])?;
    let wasm =
        tokio::task::spawn_blocking(|| flash_tests::build_guest("examples/inference")).await??;
    let classifier = model_dir.join("classifier.onnx");
    let wide = model_dir.join("wide.onnx");
    let deep = model_dir.join("deep.onnx");
    let artifact = flash_tests::guest_artifact_with_models(
        &wasm,
        "inference",
        tmp.path(),
        &[
            ("classifier", &classifier),
            ("wide", &wide),
            ("deep", &deep),
        ],
        |_| {},
    )
    .await?;
    let root = tmp.path().join("unpacked");
    flash_manifest::artifact::unpack(&artifact, &root, Default::default())?;
    let engine = Engine::new(EngineOptions::default())?;
    let app = HostApp::load_dir(
        &engine,
        &root,
        Some("classifier"),
        &AppOptions::default(),
        Default::default(),
    )?;
    let inference = models::load(
        &app.manifest,
        &root,
        Some("classifier"),
        &NnOptions {
            ort_dylib_path: Some(lib.clone()),
            target: Some(Target::Cpu),
            sessions: Some(threads),
            intra_threads: Some(1),
        },
    )?;
    let app = Arc::new(app.with_inference(inference.clone()));
    let ort = flash_nn::OnnxRuntime::load(&lib)?;

    println!(
        "\n#### Inference throughput, rows/s ({threads} threads, {seconds} s per cell, ONNX Runtime {}, CPU)\n",
        ort.version()
    );
    println!(
        "| model | batch | Python onnxruntime | Python handler (JSON) | flash-nn graph (no guest) | flash-host, JSON rows | flash-host, binary rows | Python onnxruntime / flash-host (JSON, binary) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    let cases: [(&str, &Path, usize, usize); 6] = [
        ("classifier 4→16→3", &classifier, 4, 1),
        ("classifier 4→16→3", &classifier, 4, 64),
        ("wide 256→1024→256", &wide, 256, 1),
        ("wide 256→1024→256", &wide, 256, 16),
        ("deep 256→2048→2048→2048→16", &deep, 256, 1),
        ("deep 256→2048→2048→2048→16", &deep, 256, 16),
    ];
    let picked = std::env::var("FLASH_BENCH_CASES").ok();
    for (label, path, width, batch) in cases {
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .context("model name")?;
        if let Some(picked) = &picked
            && !picked
                .split(',')
                .any(|c| c.trim() == format!("{name}/{batch}"))
        {
            continue;
        }
        let rows: Vec<Vec<f32>> = (0..batch)
            .map(|i| {
                (0..width)
                    .map(|j| ((i * 7 + j * 3) % 17) as f32 / 4.0 - 2.0)
                    .collect()
            })
            .collect();
        let python = python_rate(path, &rows, threads, seconds, "raw")?;
        let handler = python_rate(path, &rows, threads, seconds, "handler")?;
        let direct = graph_rate(&inference, name, &rows, threads, seconds).await?;
        let host = host_rate(&app, name, json!(rows), threads, seconds).await?;
        let binary = host_rate(&app, name, binary_form(&rows), threads, seconds).await?;
        println!(
            "| {label} | {batch} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2}×, {:.2}× |",
            python * batch as f64,
            handler * batch as f64,
            direct * batch as f64,
            host * batch as f64,
            binary * batch as f64,
            python / host,
            python / binary
        );
    }
    Ok(())
}

/// Calls per second of Python onnxruntime; `mode` is `raw` (`run` on a ready array) or
/// `handler` (JSON request to JSON answer).
fn python_rate(
    model: &Path,
    rows: &[Vec<f32>],
    threads: usize,
    seconds: f64,
    mode: &str,
) -> Result<f64> {
    let out = Command::new(flash_tests::python()?)
        .args(["-c", PYTHON_BENCH])
        .arg(model)
        .arg(serde_json::to_string(rows)?)
        .arg(threads.to_string())
        .arg(seconds.to_string())
        .arg(mode)
        .output()?;
    ensure!(
        out.status.success(),
        "python bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout)?;
    Ok(v["calls"].as_f64().unwrap_or(0.0) / v["seconds"].as_f64().unwrap_or(1.0))
}

/// Calls per second of `Graph::compute` from `threads` tasks.
async fn graph_rate(
    inference: &flash_nn::Inference,
    name: &str,
    rows: &[Vec<f32>],
    threads: usize,
    seconds: f64,
) -> Result<f64> {
    let graph = inference.get(name)?;
    let data: Vec<f32> = rows.iter().flatten().copied().collect();
    let tensor = Tensor::from_f32(vec![rows.len() as u32, rows[0].len() as u32], &data);
    let input = vec![("features".to_string(), tensor)];
    for _ in 0..20 {
        graph.compute(input.clone(), None).await?;
    }
    measure(threads, seconds, move || {
        let graph = Arc::clone(&graph);
        let input = input.clone();
        async move { graph.compute(input, None).await.is_ok() }
    })
    .await
}

/// `rows` as `flash_sdk::Matrix`'s binary form.
fn binary_form(rows: &[Vec<f32>]) -> Value {
    use base64::Engine as _;
    let bytes: Vec<u8> = rows
        .iter()
        .flatten()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    json!({
        "shape": [rows.len(), rows[0].len()],
        "f32_le_base64": base64::engine::general_purpose::STANDARD.encode(bytes),
    })
}

/// Calls per second of the full path through the guest, `rows` being the argument's JSON.
async fn host_rate(
    app: &Arc<HostApp>,
    name: &str,
    rows: Value,
    threads: usize,
    seconds: f64,
) -> Result<f64> {
    let input = json!({"model": name, "target": "cpu", "rows": rows}).to_string();
    for _ in 0..20 {
        app.invoke(
            "classify_with",
            &input,
            0,
            Arc::new(NoPeers),
            None,
            Default::default(),
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let app = Arc::clone(app);
    let input: Arc<str> = input.into();
    measure(threads, seconds, move || {
        let app = Arc::clone(&app);
        let input = Arc::clone(&input);
        async move {
            app.invoke(
                "classify_with",
                &input,
                0,
                Arc::new(NoPeers),
                None,
                Default::default(),
            )
            .await
            .is_ok()
        }
    })
    .await
}

/// Runs `call` from `threads` tasks until `seconds` pass; returns successful calls/s.
async fn measure<F, Fut>(threads: usize, seconds: f64, call: F) -> Result<f64>
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(seconds);
    let tasks: Vec<_> = (0..threads)
        .map(|_| {
            let call = call.clone();
            let (ok, failed) = (Arc::clone(&ok), Arc::clone(&failed));
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    let counter = if call().await { &ok } else { &failed };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await?;
    }
    let elapsed = start.elapsed().as_secs_f64();
    ensure!(
        failed.load(Ordering::Relaxed) == 0,
        "{} calls failed",
        failed.load(Ordering::Relaxed)
    );
    Ok(ok.load(Ordering::Relaxed) as f64 / elapsed)
}
