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

/// Writes an app with `n` resource configs into `dir`.
fn generate_app(dir: &Path, n: usize) -> Result<()> {
    let sdk = repo_root().join("guest-sdk/flash-sdk").canonicalize()?;
    std::fs::create_dir_all(dir.join("src"))?;
    std::fs::write(
        dir.join("flash.toml"),
        format!(
            "[app]\nname = \"bench{n}\"\n\n[[component]]\nname = \"bench{n}\"\nkind = \"rust\"\npath = \".\"\n"
        ),
    )?;
    std::fs::write(
        dir.join("Cargo.toml"),
        format!(
            "[package]\nname = \"deploy_bench_{n}\"\nversion = \"0.1.0\"\nedition = \"2024\"\npublish = false\n\n\
             [lib]\ncrate-type = [\"cdylib\"]\n\n[dependencies]\nflash-sdk = {{ path = {:?} }}\n\n\
             [profile.release]\nopt-level = \"s\"\n\n[workspace]\n",
            sdk.display().to_string()
        ),
    )?;
    let mut src = String::from("use flash_sdk::{ResourceConfig, Result, remote};\n\n");
    for i in 0..n {
        src.push_str(&format!(
            "const R{i}: ResourceConfig = ResourceConfig::queue(\"r{i}\").cpu(&[\"cpu3c-1-2\"]).workers(0, 1);\n\n\
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
        generate_app(&dir, n)?;
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
            deploy::delete(&sm, None, project.name(), &env).await?;
        }
        rows.push((n, median(first), median(unchanged)));
    }
    let _ = stop_tx.send(());
    serving.await??;
    Ok(rows)
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
    }
    Ok(())
}
