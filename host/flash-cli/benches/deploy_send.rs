//! `flash deploy send` wall time for apps with 1, 5 and 10 resource configs.
//!
//! ```text
//! cargo bench -p flash-cli --bench deploy_send            # prints markdown tables
//! FLASH_BENCH_REPS=9 cargo bench -p flash-cli --bench deploy_send
//! ```
//!
//! For each size N the bench generates an app (one Rust component, N queue resource
//! configs with one function each, `workers(0, 1)` so no worker has to boot), builds it with
//! the `flash build` pipeline, starts an in-process `flash server` on loopback with a
//! temporary data dir, and then, per repetition, creates a fresh environment (`deploy new`,
//! with its mothership) and times:
//!
//! - **first send**: upload + `saveEndpoint` for N new endpoints (3 in flight, the default) +
//!   activate + publish;
//! - **unchanged send**: the same build again (upload + N live lookups, nothing saved).
//!
//! Then, for 10 configs with `workers(1, 1)`: **send until ready**, from the start of the
//! send until every endpoint has a ready worker (`/v2/{id}/health`), i.e. until each
//! config's `flash-host` has fetched the artifact, compiled (or loaded) its component and
//! taken its first job poll. Each repetition uses a fresh server (data dir, State Manager,
//! artifact store); the workers share this machine's AOT cache (`~/.cache/flash/aot`) as
//! real ones do, so after the first repetition their components load compiled (the median
//! is a warm boot; `cargo bench -p flash-host --bench host` gives the cold one).
//!
//! Medians over the repetitions, all sizes in one run (compare ratios, not absolute times:
//! this machine is shared and noisy). The mothership of each environment boots after
//! activation when a `flash-host` binary is found (`FLASH_HOST_BIN`, else `target/{release,
//! debug}/flash-host`), so its reconciliation runs alongside, as in real use.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use flash::build::{self, Silent};
use flash::deploy::{self, Quiet, SendOptions};
use flash::project::Project;
use flash_api::{ClientConfig, KeySource, StateManagerClient};

const SIZES: [usize; 3] = [1, 5, 10];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"))
}

/// Writes an app with `n` resource configs into `dir`, each with `min_workers` warm workers.
fn generate_app(dir: &Path, n: usize, min_workers: u32) -> Result<()> {
    let sdk = repo_root().join("guest-sdk/flash-sdk").canonicalize()?;
    std::fs::create_dir_all(dir.join("src"))?;
    std::fs::write(
        dir.join("flash.toml"),
        format!(
            "[app]\nname = \"bench{n}-{min_workers}\"\n\n[[component]]\nname = \"bench{n}\"\nkind = \"rust\"\npath = \".\"\n"
        ),
    )?;
    std::fs::write(
        dir.join("Cargo.toml"),
        format!(
            "[package]\nname = \"deploy_bench_{n}_{min_workers}\"\nversion = \"0.1.0\"\nedition = \"2024\"\npublish = false\n\n\
             [lib]\ncrate-type = [\"cdylib\"]\n\n[dependencies]\nflash-sdk = {{ path = {:?} }}\n\n\
             [profile.release]\nopt-level = \"s\"\n\n[workspace]\n",
            sdk.display().to_string()
        ),
    )?;
    let mut src = String::from("use flash_sdk::{ResourceConfig, Result, remote};\n\n");
    for i in 0..n {
        src.push_str(&format!(
            "const R{i}: ResourceConfig = ResourceConfig::queue(\"r{i}\").cpu(&[\"cpu3c-1-2\"]).workers({min_workers}, 1);\n\n\
             #[remote(R{i})]\nfn f{i}(x: i64) -> Result<i64> {{\n    Ok(x + {i})\n}}\n\n"
        ));
    }
    src.push_str("flash_sdk::export_app!();\n");
    std::fs::write(dir.join("src/lib.rs"), src)?;
    Ok(())
}

fn flash_host_bin() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("FLASH_HOST_BIN") {
        return Some(PathBuf::from(bin));
    }
    ["release", "debug"]
        .iter()
        .map(|p| target_dir().join(p).join("flash-host"))
        .find(|p| p.is_file())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

async fn bench(reps: usize) -> Result<Vec<(usize, Duration, Duration)>> {
    let work = tempfile::tempdir()?;
    let data = tempfile::tempdir()?;
    let host_bin = flash_host_bin();
    // Guest builds share the tests' guest target dir (the SDK's dependencies compile once).
    // SAFETY: set before any thread of ours reads the environment concurrently.
    unsafe { std::env::set_var("CARGO_TARGET_DIR", target_dir().join("guests")) };
    match host_bin {
        // SAFETY: as above.
        Some(bin) => unsafe { std::env::set_var("FLASH_HOST_BIN", bin) },
        None => eprintln!("no flash-host binary found: motherships will not boot"),
    }
    let config = flash_control::server::Config::new(
        data.path().to_path_buf(),
        SocketAddr::from(([127, 0, 0, 1], 0)),
    );
    let server = flash_control::server::Server::bind(config).await?;
    let sm = StateManagerClient::new(ClientConfig::new(
        &server.url(),
        server.api_key().to_string(),
        KeySource::File(flash_control::auth::api_key_path(data.path())),
    )?)?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.run(async {
        let _ = stop_rx.await;
    }));

    let mut rows = Vec::new();
    for n in SIZES {
        let dir = work.path().join(format!("app{n}"));
        generate_app(&dir, n, 0)?;
        let project = Project::discover(&dir)?;
        eprintln!("building the {n}-resource app…");
        build::build(&project, &Silent)
            .await
            .with_context(|| format!("building the {n}-resource app"))?;
        let (mut first, mut unchanged) = (Vec::new(), Vec::new());
        for rep in 0..reps {
            let env = format!("bench-{rep}");
            deploy::new_environment(&sm, None, project.name(), &env, false, None).await?;
            let (flash_dir, options) = (project.flash_dir(), SendOptions::default());
            let send = || deploy::send(&sm, &flash_dir, &env, &options, &Quiet);
            let t = Instant::now();
            let report = send().await?;
            first.push(t.elapsed());
            assert_eq!(report.resources.len(), n);
            let t = Instant::now();
            send().await?;
            unchanged.push(t.elapsed());
            delete_when_free(&sm, project.name(), &env).await?;
        }
        rows.push((n, median(first), median(unchanged)));
    }
    let _ = stop_tx.send(());
    serving.await??;
    Ok(rows)
}

/// `deploy delete`, retried while the environment's mothership still holds its deploy
/// lease (it reconciles right after activation; the State Manager refuses a delete then).
async fn delete_when_free(sm: &StateManagerClient, app: &str, env: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match deploy::delete(sm, None, app, env).await {
            Ok(_) => return Ok(()),
            Err(e)
                if Instant::now() < deadline && format!("{e:#}").contains("is being deployed") =>
            {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Configs of the send-until-ready measurement.
const READY_SIZE: usize = 10;

/// `flash deploy send` of [`READY_SIZE`] configs with a warm worker each, until every
/// endpoint reports a ready worker; the median of `reps`, each on a fresh server.
async fn send_until_ready(reps: usize) -> Result<Duration> {
    let work = tempfile::tempdir()?;
    let dir = work.path().join("ready");
    generate_app(&dir, READY_SIZE, 1)?;
    let project = Project::discover(&dir)?;
    eprintln!("building the {READY_SIZE}-resource app with warm workers…");
    build::build(&project, &Silent).await?;
    let http = reqwest::Client::new();
    let mut times = Vec::new();
    for rep in 0..reps {
        let data = tempfile::tempdir()?;
        let config = flash_control::server::Config::new(
            data.path().to_path_buf(),
            SocketAddr::from(([127, 0, 0, 1], 0)),
        );
        let server = flash_control::server::Server::bind(config).await?;
        let (url, key) = (server.url(), server.api_key().to_string());
        let sm = StateManagerClient::new(ClientConfig::new(
            &url,
            key.clone(),
            KeySource::File(flash_control::auth::api_key_path(data.path())),
        )?)?;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn(server.run(async {
            let _ = stop_rx.await;
        }));
        let env = format!("ready-{rep}");
        deploy::new_environment(&sm, None, project.name(), &env, false, None).await?;
        let started = Instant::now();
        let report = deploy::send(
            &sm,
            &project.flash_dir(),
            &env,
            &SendOptions::default(),
            &Quiet,
        )
        .await?;
        let deadline = started + Duration::from_secs(300);
        let mut waiting: Vec<String> = report
            .resources
            .iter()
            .map(|r| r.endpoint_id.clone())
            .collect();
        while !waiting.is_empty() {
            let mut still = Vec::new();
            for id in waiting {
                let health: serde_json::Value = http
                    .get(format!("{url}/v2/{id}/health"))
                    .bearer_auth(&key)
                    .send()
                    .await?
                    .json()
                    .await?;
                if health["workers"]["ready"].as_u64().unwrap_or(0) == 0 {
                    still.push(id);
                }
            }
            waiting = still;
            anyhow::ensure!(
                Instant::now() < deadline,
                "endpoints without a ready worker after 300 s: {waiting:?}"
            );
            if !waiting.is_empty() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        times.push(started.elapsed());
        // No `deploy delete`: the mothership may still hold the environment's deploy lease.
        // Stopping the server stops its workers, and the data dir goes with `data`.
        let _ = stop_tx.send(());
        serving.await??;
    }
    Ok(median(times))
}

fn main() -> Result<()> {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs benches with no flag:
    // then do nothing (this bench compiles guests and takes a minute).
    if !std::env::args().any(|a| a == "--bench") {
        return Ok(());
    }
    let reps: usize = std::env::var("FLASH_BENCH_REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
        .max(1);
    let runtime = tokio::runtime::Runtime::new()?;
    let rows = runtime.block_on(bench(reps))?;
    let ready = runtime.block_on(send_until_ready(reps.min(3)))?;
    println!(
        "\n| resource configs | first send (ms, median of {reps}) | per resource (ms) | unchanged send (ms) |"
    );
    println!("|---:|---:|---:|---:|");
    for (n, first, unchanged) in rows {
        println!(
            "| {n} | {} | {} | {} |",
            ms(first),
            ms(first / n as u32),
            ms(unchanged)
        );
        flash_tests::bench_results::record(
            &format!("deploy.first_send_ms.{n}"),
            first.as_secs_f64() * 1e3,
        )?;
    }
    println!(
        "\n{READY_SIZE} configs with one warm worker each, send until every endpoint has a ready worker: {} ms (median of {})",
        ms(ready),
        reps.min(3)
    );
    flash_tests::bench_results::record("deploy.until_ready_ms.10", ready.as_secs_f64() * 1e3)?;
    Ok(())
}
