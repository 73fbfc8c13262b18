//! Jobs per second through the control plane: client `/runsync` → gateway → worker → back.
//!
//! Run: `cargo bench -p flash-control --bench gateway_throughput` (add `-- --secs 10` to
//! measure longer, `-- --protocol-only` for the gateway's own ceiling without worker
//! processes, `-- --wrk` to load it with wrk instead of the bench's own client loop). For each worker kind and each concurrency `c` (1 and 16) it saves an
//! endpoint with `c` workers (`workersMin = workersMax = c`), waits until all are ready, then
//! `c` client tasks each send trivial jobs back to back with `/runsync` for the measuring
//! window. Jobs are durable (SQLite WAL) and take a long-polled `job-take` like in
//! production; only the timeouts are the defaults.
//!
//! Worker kinds:
//! - `runpod-python`: the real runpod 1.12.0 worker (`tests/fixtures/worker.py`, echo).
//! - `flash-host`: **hook** for the Rust worker. Set `FLASH_BENCH_FLASH_HOST` to a JSON argv
//!   (e.g. `["/path/to/flash-host"]`) and, if it needs one, `FLASH_BENCH_ARTIFACT` to the
//!   build tarball of an app with a trivial echo function (uploaded through the GraphQL
//!   flow and handed to workers as `FLASH_ARTIFACT_URL`); `FLASH_BENCH_ENV` may add
//!   template env as a JSON object (e.g. `{"FLASH_RESOURCE_NAME": "echo"}`). Unset: skipped.
//!
//! Every job's input is `{"x": 1}`, or the JSON in `FLASH_BENCH_INPUT` (the same for every
//! worker kind, e.g. `{"function_name": "echo", "kwargs": {"value": 1}}` for a flash-host
//! resource serving several functions; the Python echo worker returns any input).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use flash_control::{Config, Server};
use serde_json::{Value, json};

/// The input of every job: `FLASH_BENCH_INPUT` or `{"x": 1}`.
fn job_input() -> Result<Value> {
    match std::env::var("FLASH_BENCH_INPUT") {
        Ok(v) => serde_json::from_str(&v).context("FLASH_BENCH_INPUT must be JSON"),
        Err(_) => Ok(json!({ "x": 1 })),
    }
}

struct Client {
    http: reqwest::Client,
    url: String,
    key: String,
}

impl Client {
    async fn gql(&self, query: &str, variables: Value) -> Result<Value> {
        let resp: Value = self
            .http
            .post(format!("{}/graphql", self.url))
            .bearer_auth(&self.key)
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await?
            .json()
            .await?;
        if resp.get("errors").is_some() {
            bail!("GraphQL error: {resp}");
        }
        Ok(resp["data"].clone())
    }
}

struct Kind {
    name: &'static str,
    /// Its name in `FLASH_BENCH_RESULTS`.
    key: &'static str,
    /// No process: in-bench tasks speak the worker protocol (`job-take` → `job-done`)
    /// directly, measuring the gateway and store alone.
    in_process: bool,
    argv: Vec<String>,
    env: Vec<(String, String)>,
    artifact: Option<Vec<u8>>,
}

fn kinds(protocol_only: bool) -> Result<Vec<Kind>> {
    let mut kinds = vec![Kind {
        name: "protocol loop (in-process, no worker)",
        key: "protocol",
        in_process: true,
        argv: Vec::new(),
        env: Vec::new(),
        artifact: None,
    }];
    if protocol_only {
        return Ok(kinds);
    }
    let python = flash_tests::python()?;
    let worker =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/worker.py");
    kinds.push(Kind {
        name: "runpod-python 1.12.0",
        key: "runpod_python",
        in_process: false,
        argv: vec![python.display().to_string(), worker.display().to_string()],
        env: vec![
            ("RUNPOD_SKIP_GPU_CHECK".into(), "true".into()),
            ("RUNPOD_SKIP_AUTO_SYSTEM_CHECKS".into(), "true".into()),
            ("RUNPOD_LOG_LEVEL".into(), "ERROR".into()),
        ],
        artifact: None,
    });
    if let Ok(argv) = std::env::var("FLASH_BENCH_FLASH_HOST") {
        let argv: Vec<String> =
            serde_json::from_str(&argv).context("FLASH_BENCH_FLASH_HOST must be a JSON argv")?;
        let env: serde_json::Map<String, Value> = match std::env::var("FLASH_BENCH_ENV") {
            Ok(e) => serde_json::from_str(&e).context("FLASH_BENCH_ENV must be a JSON object")?,
            Err(_) => Default::default(),
        };
        let artifact = match std::env::var("FLASH_BENCH_ARTIFACT") {
            Ok(p) => Some(std::fs::read(&p).with_context(|| format!("reading {p}"))?),
            Err(_) => None,
        };
        kinds.push(Kind {
            name: "flash-host",
            key: "flash_host",
            in_process: false,
            argv,
            env: env
                .into_iter()
                .map(|(k, v)| {
                    (
                        k,
                        v.as_str()
                            .map(String::from)
                            .unwrap_or_else(|| v.to_string()),
                    )
                })
                .collect(),
            artifact,
        });
    } else {
        eprintln!("flash-host: skipped (set FLASH_BENCH_FLASH_HOST to a JSON argv to include it)");
    }
    Ok(kinds)
}

/// Uploads an artifact as `flash deploy` does; returns the environment id.
async fn deploy_artifact(c: &Client, name: &str, tarball: &[u8]) -> Result<String> {
    let app = c
        .gql(
            "mutation($i: CreateFlashAppInput!) { createFlashApp(input: $i) { id } }",
            json!({ "i": { "name": name } }),
        )
        .await?;
    let app = app["createFlashApp"]["id"]
        .as_str()
        .context("app id")?
        .to_string();
    let env = c
        .gql("mutation($i: CreateFlashEnvironmentInput!) { createFlashEnvironment(input: $i) { id } }", json!({ "i": { "flashAppId": app, "name": "bench" } }))
        .await?;
    let env = env["createFlashEnvironment"]["id"]
        .as_str()
        .context("env id")?
        .to_string();
    let t = c
        .gql("mutation($i: PrepareFlashArtifactUploadInput!) { prepareFlashArtifactUpload(input: $i) { uploadUrl objectKey } }", json!({ "i": { "flashAppId": app, "tarballSize": tarball.len() } }))
        .await?;
    let url = t["prepareFlashArtifactUpload"]["uploadUrl"]
        .as_str()
        .context("url")?;
    let key = t["prepareFlashArtifactUpload"]["objectKey"]
        .as_str()
        .context("key")?;
    c.http
        .put(url)
        .body(tarball.to_vec())
        .send()
        .await?
        .error_for_status()?;
    let b = c
        .gql("mutation($i: FinalizeFlashArtifactUploadInput!) { finalizeFlashArtifactUpload(input: $i) { id } }", json!({ "i": { "flashAppId": app, "objectKey": key, "manifest": {} } }))
        .await?;
    let build = b["finalizeFlashArtifactUpload"]["id"]
        .as_str()
        .context("build")?;
    c.gql("mutation($i: DeployBuildToEnvironmentInput!) { deployBuildToEnvironment(input: $i) { id } }", json!({ "i": { "flashEnvironmentId": env, "flashBuildId": build } }))
        .await?;
    Ok(env)
}

/// `wrk` as the load generator (`--wrk`): the client side is a real tool, as
/// `scripts/bench.sh` requires, instead of this bench's own request loop.
struct Wrk {
    dir: tempfile::TempDir,
}

impl Wrk {
    fn new() -> Result<Self> {
        let found = std::process::Command::new("wrk")
            .arg("--version")
            .output()
            .is_ok();
        if !found {
            bail!("--wrk needs wrk on PATH (apt-get install wrk)");
        }
        Ok(Self {
            dir: tempfile::tempdir()?,
        })
    }

    /// `/runsync` at `concurrency` for 1 s of warm-up, then for `window`; every answer
    /// must be a `COMPLETED` job. Returns jobs/s and the count.
    fn measure(
        &self,
        url: &str,
        endpoint: &str,
        key: &str,
        input: &Value,
        concurrency: usize,
        window: Duration,
    ) -> Result<(f64, u64)> {
        let body = json!({ "input": input }).to_string();
        let script = self.dir.path().join("runsync.lua");
        std::fs::write(
            &script,
            format!(
                r#"wrk.method = "POST"
wrk.body = [==[{body}]==]
wrk.headers["content-type"] = "application/json"
wrk.headers["authorization"] = "Bearer {key}"
local threads = {{}}
function setup(thread) table.insert(threads, thread) end
function init(args) failed = 0 end
function response(status, headers, body)
  if status ~= 200 or not string.find(body, '"COMPLETED"', 1, true) then failed = failed + 1 end
end
function done(summary, latency, requests)
  local f = 0
  for _, t in ipairs(threads) do f = f + t:get("failed") end
  io.write(string.format("flash-bench-failed %d\n", f))
end
"#
            ),
        )?;
        let run = |secs: f64| -> Result<(f64, u64)> {
            let threads = concurrency.clamp(1, 2);
            let out = std::process::Command::new("wrk")
                .args([
                    format!("-t{threads}"),
                    format!("-c{concurrency}"),
                    format!("-d{}s", secs.ceil().max(1.0)),
                    "-s".into(),
                    script.display().to_string(),
                    format!("{url}/v2/{endpoint}/runsync"),
                ])
                .output()
                .context("running wrk")?;
            let text = String::from_utf8_lossy(&out.stdout);
            let field = |prefix: &str| -> Option<f64> {
                text.lines()
                    .find_map(|l| l.trim().strip_prefix(prefix))
                    .and_then(|v| v.split_whitespace().next())
                    .and_then(|v| v.parse().ok())
            };
            let failed = field("flash-bench-failed").unwrap_or(f64::NAN);
            if !out.status.success() || failed != 0.0 {
                bail!(
                    "wrk: {failed} jobs did not complete:\n{text}{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            let rate = field("Requests/sec:").context("wrk printed no Requests/sec")?;
            let count = text
                .lines()
                .find(|l| l.contains(" requests in "))
                .and_then(|l| l.split_whitespace().next())
                .and_then(|n| n.parse().ok())
                .context("wrk printed no request count")?;
            Ok((rate, count))
        };
        run(1.0)?;
        run(window.as_secs_f64())
    }
}

/// The bench's own client: `concurrency` tasks sending `/runsync` back to back, 1 s of
/// warm-up, then `window`. Returns jobs/s and the count.
async fn drive(
    c: &Arc<Client>,
    ep: &str,
    job: &Value,
    concurrency: usize,
    window: Duration,
) -> Result<(f64, u64)> {
    let run = |count: Arc<AtomicU64>, until: Instant| {
        let c = c.clone();
        let ep = ep.to_string();
        let input = job.clone();
        tokio::spawn(async move {
            while Instant::now() < until {
                let r: Value = c
                    .http
                    .post(format!("{}/v2/{ep}/runsync", c.url))
                    .bearer_auth(&c.key)
                    .json(&json!({ "input": input }))
                    .send()
                    .await?
                    .json()
                    .await?;
                if r["status"] != "COMPLETED" {
                    bail!("job did not complete: {r}");
                }
                count.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<_, anyhow::Error>(())
        })
    };
    // Warm-up.
    let warm = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs(1);
    for h in (0..concurrency)
        .map(|_| run(warm.clone(), until))
        .collect::<Vec<_>>()
    {
        h.await??;
    }
    let count = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let until = start + window;
    for h in (0..concurrency)
        .map(|_| run(count.clone(), until))
        .collect::<Vec<_>>()
    {
        h.await??;
    }
    let n = count.load(Ordering::Relaxed);
    let rate = n as f64 / start.elapsed().as_secs_f64();
    Ok((rate, n))
}

async fn measure(
    c: &Arc<Client>,
    kind: &Kind,
    concurrency: usize,
    window: Duration,
    wrk: Option<&Wrk>,
) -> Result<(f64, u64)> {
    let mut env: Vec<Value> = kind
        .env
        .iter()
        .map(|(k, v)| json!({ "key": k, "value": v }))
        .collect();
    env.push(json!({ "key": "FLASH_WORKER_COMMAND", "value": serde_json::to_string(&kind.argv)? }));
    let name = format!(
        "bench-{}-{concurrency}",
        kind.name.split(' ').next().unwrap_or("w")
    );
    let env_id = match &kind.artifact {
        Some(t) => Some(deploy_artifact(c, &name, t).await?),
        None => None,
    };
    let workers = if kind.in_process { 0 } else { concurrency };
    let saved = c
        .gql("mutation($i: EndpointInput!) { saveEndpoint(input: $i) { id aiKey } }", json!({ "i": {
            "name": name, "workersMin": workers, "workersMax": workers, "flashEnvironmentId": env_id,
            "template": { "env": env } } }))
        .await?;
    let ep = saved["saveEndpoint"]["id"]
        .as_str()
        .context("endpoint id")?
        .to_string();
    let ai_key = saved["saveEndpoint"]["aiKey"]
        .as_str()
        .context("aiKey")?
        .to_string();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut loops = Vec::new();
    if kind.in_process {
        for w in 0..concurrency {
            let (c, ep, key, stop) = (c.clone(), ep.clone(), ai_key.clone(), stop.clone());
            loops.push(tokio::spawn(async move {
                let worker = format!("bench-{w}");
                while !stop.load(Ordering::Relaxed) {
                    let r = c
                        .http
                        .get(format!(
                            "{}/v2/{ep}/job-take/{worker}?gpu=local&job_in_progress=0",
                            c.url
                        ))
                        .header("authorization", &key)
                        .timeout(Duration::from_secs(5))
                        .send()
                        .await;
                    let Ok(r) = r else { continue };
                    if r.status() != 200 {
                        continue;
                    }
                    let job: Value = r.json().await?;
                    let id = job["id"].as_str().context("job id")?.to_string();
                    let body = json!({ "output": job["input"] }).to_string();
                    c.http
                        .post(format!(
                            "{}/v2/{ep}/job-done/{worker}/{id}?gpu=local&isStream=false",
                            c.url
                        ))
                        .header("authorization", &key)
                        .header("content-type", "application/x-www-form-urlencoded")
                        .body(body)
                        .send()
                        .await?;
                }
                Ok::<_, anyhow::Error>(())
            }));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let h: Value = c
            .http
            .get(format!("{}/v2/{ep}/health", c.url))
            .bearer_auth(&c.key)
            .send()
            .await?
            .json()
            .await?;
        if h["workers"]["ready"].as_u64() == Some(workers as u64) {
            break;
        }
        if Instant::now() > deadline {
            bail!("{} workers not ready after 120 s: {h}", concurrency);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let job = job_input()?;
    let result = match wrk {
        Some(wrk) => wrk.measure(&c.url, &ep, &c.key, &job, concurrency, window),
        None => drive(c, &ep, &job, concurrency, window).await,
    };
    stop.store(true, Ordering::Relaxed);
    for l in loops {
        l.abort();
    }
    c.gql(
        "mutation($id: String!) { deleteEndpoint(id: $id) }",
        json!({ "id": ep }),
    )
    .await?;
    result
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let secs = args
        .iter()
        .position(|a| a == "--secs")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(5.0);
    let protocol_only = args.iter().any(|a| a == "--protocol-only");
    let wrk = if args.iter().any(|a| a == "--wrk") {
        Some(Wrk::new()?)
    } else {
        None
    };
    let dir = tempfile::tempdir()?;
    let mut config = Config::new(dir.path().to_path_buf(), "127.0.0.1:0".parse()?);
    config.allow_worker_command_override = true;
    let server = Server::bind(config).await?;
    let client = Arc::new(Client {
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .build()?,
        url: server.url(),
        key: server.api_key().to_string(),
    });
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(server.run(async move {
        let _ = rx.await;
    }));
    let window = Duration::from_secs_f64(secs);
    println!("| worker | concurrency | jobs | jobs/s |");
    println!("|---|---:|---:|---:|");
    let mut results = Vec::new();
    for kind in kinds(protocol_only)? {
        for c in [1usize, 16] {
            let (rate, n) = measure(&client, &kind, c, window, wrk.as_ref()).await?;
            println!("| {} | {c} | {n} | {rate:.1} |", kind.name);
            flash_tests::bench_results::record(&format!("gateway.{}.c{c}", kind.key), rate)?;
            results.push((kind.name, c, rate));
        }
    }
    for c in [1usize, 16] {
        let py = results
            .iter()
            .find(|r| r.0.starts_with("runpod") && r.1 == c);
        let fh = results.iter().find(|r| r.0 == "flash-host" && r.1 == c);
        if let (Some(py), Some(fh)) = (py, fh) {
            println!(
                "flash-host / runpod-python at concurrency {c}: {:.2}x",
                fh.2 / py.2
            );
        }
    }
    let _ = tx.send(());
    handle.await??;
    Ok(())
}
