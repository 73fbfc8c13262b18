//! Wiring a host from its environment: the env contract of Flash endpoints.
//!
//! | variable | meaning |
//! |---|---|
//! | `FLASH_RESOURCE_NAME` | the resource config served (required except with `--test-input`) |
//! | `FLASH_ARTIFACT_URL` / `FLASH_BUILD_ARTIFACT_PATH` / `FLASH_MANIFEST_PATH` | where the artifact is (see [`crate::boot`]) |
//! | `RUNPOD_WEBHOOK_GET_JOB`, `…_POST_OUTPUT`, `…_PING`, `RUNPOD_POD_ID`, `RUNPOD_AI_API_KEY`, `RUNPOD_PING_INTERVAL` | queue worker protocol (see [`crate::queue`]) |
//! | `FLASH_LISTEN_ADDR` (or `0.0.0.0:$PORT`, default port 80) | load-balanced listen address |
//! | `RUNPOD_API_KEY` | auth of the load-balanced routes, of peer calls and artifact downloads |
//! | `FLASH_DISABLE_RP_AUTH=true` | serve load-balanced routes without auth |
//! | `FLASH_ENVIRONMENT_ID`, `RUNPOD_API_BASE_URL` | find peers through the State Manager (GraphQL `{base}/graphql`) |
//! | `FLASH_MANIFEST_TTL_S` | cache time of the fetched manifest (default 300) |
//! | `FLASH_PEER_ENDPOINTS` | JSON `{resource: url}` overriding both |
//! | `FLASH_CONCURRENCY` | jobs / requests run at once (default 1 for queue, 64 for load-balanced) |
//! | `FLASH_MAX_MEMORY_MB` | memory cap per instance (default 256) |
//! | `FLASH_KEEP_RESIDENT_KB` | memory of a recycled instance slot reset in place instead of returned to the kernel (default 1024; 0 trades speed for less resident memory) |
//! | `FLASH_PEER_TIMEOUT_S` | bound of one peer call (default 300) |
//! | `FLASH_IS_MOTHERSHIP=true` | run as the environment's mothership instead (see [`crate::mothership`]) |
//! | `ORT_DYLIB_PATH` | ONNX Runtime shared library for `wasi:nn`; required when the resource preloads models (see [`crate::models`]) |
//! | `FLASH_NN_TARGET` | `cpu` or `gpu`: run preloaded models there instead of the resource config's target |
//! | `FLASH_NN_SESSIONS` / `FLASH_NN_THREADS` | session pool size per model (when the model sets none; default: cores, at most 4) / intra-op threads per session (default 1) |

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use flash_runtime::{Engine, EngineOptions};
use serde_json::Value;
use tokio::sync::watch;

use crate::app::{AppOptions, HostApp};
use crate::manifest_fetcher::ManifestFetcher;
use crate::registry::{EndpointDirectory, PeerOptions, ServiceRegistry, StaticDirectory};
use crate::{boot, lb, models, queue};

/// What the binary was asked to do.
#[derive(Debug, Clone, Default)]
pub struct HostArgs {
    pub artifact: Option<String>,
    pub manifest: Option<PathBuf>,
    pub resource: Option<String>,
    /// Run this job input once, print the result and exit.
    pub test_input: Option<Value>,
    /// Run the test input this many times (timed, after a warm-up run).
    pub repeat: u32,
}

fn env(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.trim().is_empty())
}

fn env_parse<T: std::str::FromStr>(key: &str) -> Result<Option<T>> {
    match env(key) {
        None => Ok(None),
        Some(v) => v
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| anyhow::anyhow!("{key}=`{v}` is not a valid number")),
    }
}

/// Boots and runs the host until shutdown (or, with a test input, one job).
pub async fn run(args: HostArgs) -> Result<i32> {
    let api_key = env("RUNPOD_API_KEY");
    let resource = args.resource.clone().or_else(|| env("FLASH_RESOURCE_NAME"));
    let is_mothership = env(flash_deploy::mothership::MOTHERSHIP_ENV).is_some_and(|v| v == "true");
    if resource.is_none() && args.test_input.is_none() && !is_mothership {
        bail!(
            "FLASH_RESOURCE_NAME is not set: name the resource config this host serves (or use --test-input to run one job with every resource local)"
        );
    }
    let artifact = args.artifact.clone().or_else(|| env("FLASH_ARTIFACT_URL"));
    let manifest_path = args
        .manifest
        .clone()
        .or_else(|| env("FLASH_MANIFEST_PATH").map(PathBuf::from));
    let unpacked = boot::locate(
        artifact.as_deref(),
        manifest_path.as_deref(),
        api_key.as_deref(),
    )
    .await?;

    if is_mothership {
        return run_mothership(&unpacked.root, api_key).await.map(|()| 0);
    }

    let max_memory_mb: usize = env_parse("FLASH_MAX_MEMORY_MB")?.unwrap_or(256);
    let memory_keep_resident = match env_parse::<usize>("FLASH_KEEP_RESIDENT_KB")? {
        None => flash_runtime::engine::DEFAULT_MEMORY_KEEP_RESIDENT,
        Some(kb) => kb
            .checked_mul(1024)
            .filter(|bytes| *bytes <= max_memory_mb << 20)
            .with_context(|| {
                format!(
                    "FLASH_KEEP_RESIDENT_KB={kb} is more than an instance's memory cap \
                     (FLASH_MAX_MEMORY_MB={max_memory_mb})"
                )
            })?,
    };
    let engine = Engine::new(EngineOptions {
        max_memory_bytes: max_memory_mb << 20,
        memory_keep_resident,
        ..Default::default()
    })?;
    let options = AppOptions {
        max_memory_bytes: max_memory_mb << 20,
        ..Default::default()
    };
    let app = HostApp::load_dir(&engine, &unpacked.root, resource.as_deref(), &options)?;
    let nn_options = models::NnOptions {
        ort_dylib_path: env(flash_nn::ORT_DYLIB_PATH).map(PathBuf::from),
        target: match env("FLASH_NN_TARGET") {
            Some(t) => Some(
                t.parse()
                    .map_err(|e: String| anyhow::anyhow!("FLASH_NN_TARGET: {e}"))?,
            ),
            None => None,
        },
        sessions: env_parse("FLASH_NN_SESSIONS")?,
        intra_threads: env_parse("FLASH_NN_THREADS")?,
    };
    let inference = models::load(
        &app.manifest,
        &unpacked.root,
        resource.as_deref(),
        &nn_options,
    )?;
    let app = Arc::new(app.with_inference(inference));
    tracing::info!(
        app = %app.manifest.project_name,
        resource = resource.as_deref().unwrap_or("<all>"),
        functions = ?app.local_functions().collect::<Vec<_>>(),
        pooling = engine.uses_pooling(),
        models = ?app.inference.status().iter().map(|g| format!("{}:{}", g.name, g.device)).collect::<Vec<_>>(),
        "host ready"
    );

    let directory = directory(&app, &unpacked.root)?;
    let peer_timeout = env_parse::<u64>("FLASH_PEER_TIMEOUT_S")?.unwrap_or(300);
    let registry = ServiceRegistry::new(
        Arc::clone(&app),
        directory,
        PeerOptions {
            timeout: Duration::from_secs(peer_timeout),
            api_key: api_key.clone(),
        },
    );

    if let Some(input) = args.test_input {
        if args.repeat > 1 {
            let _ = queue::run_once(&registry, input.clone()).await;
            let started = std::time::Instant::now();
            for _ in 1..args.repeat {
                queue::run_once(&registry, input.clone()).await;
            }
            let total = started.elapsed();
            eprintln!(
                "repeat: {} jobs in {:.3} s, {:.3} ms per job",
                args.repeat - 1,
                total.as_secs_f64(),
                total.as_secs_f64() * 1000.0 / f64::from(args.repeat - 1)
            );
        }
        let (ok, body) = queue::run_once(&registry, input).await;
        println!("{}", serde_json::to_string_pretty(&body)?);
        return Ok(if ok { 0 } else { 1 });
    }

    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutdown requested");
        let _ = stop_tx.send(true);
    });

    let load_balanced = app.resource_entry().is_some_and(|r| r.is_load_balanced);
    if load_balanced {
        let listen = listen_addr()?;
        let key = if auth_disabled() {
            None
        } else {
            Some(api_key.clone().context(
                "RUNPOD_API_KEY is not set and FLASH_DISABLE_RP_AUTH is not `true`: set the key that \
                 callers must send, or disable auth explicitly",
            )?)
        };
        let concurrency = env_parse("FLASH_CONCURRENCY")?.unwrap_or(64);
        let mut rx = stop_rx.clone();
        lb::serve(
            registry,
            lb::LbConfig {
                listen,
                api_key: key,
                concurrency,
            },
            async move {
                let _ = rx.wait_for(|stop| *stop).await;
            },
        )
        .await?;
    } else {
        let Some(config) = queue::WorkerConfig::from_env()? else {
            bail!(
                "RUNPOD_WEBHOOK_GET_JOB is not set: a queue endpoint needs a job source (RunPod or \
                 `flash server`); to run one job locally use `flash-host --test-input '{{...}}'`"
            );
        };
        queue::run(registry, config, stop_rx).await?;
    }
    drop(unpacked);
    Ok(0)
}

/// Listen address of HTTP handlers: `FLASH_LISTEN_ADDR`, else `0.0.0.0:$PORT` (default 80).
fn listen_addr() -> Result<SocketAddr> {
    Ok(match env("FLASH_LISTEN_ADDR") {
        Some(addr) => addr
            .parse()
            .with_context(|| format!("FLASH_LISTEN_ADDR=`{addr}` is not host:port"))?,
        None => SocketAddr::from(([0, 0, 0, 0], env_parse::<u16>("PORT")?.unwrap_or(80))),
    })
}

fn auth_disabled() -> bool {
    env("FLASH_DISABLE_RP_AUTH").is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// The mothership role (see [`crate::mothership`]).
async fn run_mothership(root: &std::path::Path, api_key: Option<String>) -> Result<()> {
    let path = root.join(flash_manifest::MANIFEST_FILE_NAME);
    let desired: Value = serde_json::from_slice(
        &std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
    )
    .with_context(|| format!("{} is not JSON", path.display()))?;
    let need = |key: &str| {
        env(key).with_context(|| {
            format!("{key} is not set: the mothership reconciles an environment through the State Manager and needs FLASH_ENVIRONMENT_ID and RUNPOD_API_KEY (RUNPOD_API_BASE_URL chooses the State Manager; RunPod's API when unset)")
        })
    };
    let api_key = api_key.map(Ok).unwrap_or_else(|| need("RUNPOD_API_KEY"))?;
    let environment_id = need("FLASH_ENVIRONMENT_ID")?;
    let state_manager = flash_api::ClientConfig::from_env()
        .context("configuring the State Manager client (RUNPOD_API_BASE_URL, RUNPOD_API_KEY)")?;
    let config = crate::mothership::MothershipConfig {
        environment_id,
        state_manager,
        route_key: (!auth_disabled()).then(|| api_key.clone()),
        listen: listen_addr()?,
        options: crate::mothership::options_from_env(env_parse::<u64>, env("RUNPOD_ENDPOINT_ID"))?,
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutdown requested");
        let _ = stop_tx.send(true);
    });
    crate::mothership::run(config, desired, stop_rx).await
}

/// Where peers are found: `FLASH_PEER_ENDPOINTS`, else the State Manager (when
/// `FLASH_ENVIRONMENT_ID` and `RUNPOD_API_KEY` are set), else the manifest's own
/// `resources_endpoints`.
fn directory(app: &HostApp, root: &std::path::Path) -> Result<Arc<dyn EndpointDirectory>> {
    if let Some(json) = env("FLASH_PEER_ENDPOINTS") {
        let map: BTreeMap<String, String> = serde_json::from_str(&json)
            .context("FLASH_PEER_ENDPOINTS must be a JSON object {resource: url}")?;
        return Ok(Arc::new(StaticDirectory(map)));
    }
    if env("FLASH_ENVIRONMENT_ID").is_some() && env("RUNPOD_API_KEY").is_some() {
        let mut fetcher = ManifestFetcher::from_env();
        if env("FLASH_MANIFEST_PATH").is_none() {
            fetcher = fetcher.with_local_path(root.join(flash_manifest::MANIFEST_FILE_NAME));
        }
        if let Some(ttl) = env_parse::<u64>("FLASH_MANIFEST_TTL_S")? {
            fetcher = fetcher.with_ttl(Duration::from_secs(ttl));
        }
        return Ok(Arc::new(fetcher));
    }
    Ok(Arc::new(StaticDirectory(
        app.manifest.resources_endpoints.clone().unwrap_or_default(),
    )))
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
