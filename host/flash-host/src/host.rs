//! Wiring a host from its environment, as the binary does: parse the env contract
//! ([`crate::env`]), boot the artifact ([`crate::boot`]), load this resource's components and
//! models, then hand over to one [`crate::role::Role`].

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use flash_runtime::{Engine, EngineOptions};
use serde_json::Value;

use flash_manifest::artifact::Selection;

use crate::app::{self, AppOptions, HostApp};
pub use crate::env::HostArgs;
use crate::env::{HostEnv, PeerDiscovery, Vars};
use crate::manifest_fetcher::ManifestFetcher;
use crate::registry::{EndpointDirectory, PeerOptions, ServiceRegistry, StaticDirectory};
use crate::{boot, lb, metrics, models, mothership, queue, role};

/// Boots and runs the host until shutdown (or, with a test input, one job).
pub async fn run(args: HostArgs) -> Result<i32> {
    let started = std::time::Instant::now();
    let env = HostEnv::parse(Vars::from_process(), &args)?;

    if env.mothership {
        // The mothership reads the manifest only.
        let unpacked = boot::locate(&env.artifact, env.api_key.as_deref(), |_| {
            Selection::Only(Default::default())
        })
        .await?;
        role::serve(mothership_role(&env, &unpacked.root)?).await?;
        return Ok(0);
    }

    let max_memory_bytes = env.max_memory_mb << 20;
    let engine = Engine::new(EngineOptions {
        max_memory_bytes,
        memory_keep_resident: env
            .keep_resident_kb
            .map_or(flash_runtime::engine::DEFAULT_MEMORY_KEEP_RESIDENT, |kb| {
                kb << 10
            }),
        perfmap: env.perfmap,
        cache: env.aot_cache.clone(),
        // Slots for the instances waiting for calls, apart from those calls can use.
        max_instances: flash_runtime::engine::DEFAULT_MAX_INSTANCES
            + flash_runtime::ready::reserved_slots(env.ready_instances) as u32,
        ..Default::default()
    })?;
    let options = AppOptions {
        max_memory_bytes,
        call_budget_bytes: env.call_budget_mb.map(|mb| mb << 20),
        max_guest_output_bytes: env.guest_output_max_kb << 10,
        ready_instances: env.ready_instances,
        ..Default::default()
    };
    let engine_ready = started.elapsed();
    let resource = env.resource.as_deref();
    let mut preloaded = BTreeMap::new();
    let unpacked = boot::locate(&env.artifact, env.api_key.as_deref(), |manifest| {
        app::needed_files(&engine, manifest, resource, &mut preloaded)
    })
    .await?;
    let located = started.elapsed();
    let app = HostApp::load_dir(&engine, &unpacked.root, resource, &options, preloaded)?;
    let components_loaded = started.elapsed();
    let inference = models::load(&app.manifest, &unpacked.root, resource, &env.nn)?;
    let app = Arc::new(app.with_inference(inference));
    tracing::info!(
        app = %app.manifest.project_name,
        resource = resource.unwrap_or("<all>"),
        functions = ?app.local_functions().collect::<Vec<_>>(),
        pooling = engine.uses_pooling(),
        engine_ms = engine_ready.as_millis(),
        artifact_ms = (located - engine_ready).as_millis(),
        components_ms = (components_loaded - located).as_millis(),
        total_ms = started.elapsed().as_millis(),
        models = ?app.inference.status().iter().map(|g| format!("{}:{}", g.name, g.device)).collect::<Vec<_>>(),
        "host ready"
    );

    let registry = ServiceRegistry::new(
        Arc::clone(&app),
        directory(&env, &app, &unpacked.root),
        PeerOptions {
            timeout: env.peer_timeout,
            api_key: env.api_key.clone(),
        },
    );

    if let Some(input) = args.test_input {
        return run_test_input(&registry, input, args.repeat).await;
    }

    if let Some(addr) = env.metrics_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr} (FLASH_METRICS_ADDR)"))?;
        tokio::spawn(metrics::serve(
            Arc::clone(&app),
            listener,
            env.header_read_timeout,
        ));
    }

    let load_balanced = app.resource_entry().is_some_and(|r| r.is_load_balanced);
    if load_balanced {
        let api_key = if env.auth_disabled {
            None
        } else {
            Some(env.api_key.clone().context(
                "RUNPOD_API_KEY is not set and FLASH_DISABLE_RP_AUTH is not `true`: set the key that \
                 callers must send, or disable auth explicitly",
            )?)
        };
        role::serve(lb::LbServer {
            registry,
            config: lb::LbConfig {
                listen: env.listen,
                api_key,
                concurrency: env.concurrency.unwrap_or(64),
                header_read_timeout: env.header_read_timeout,
            },
        })
        .await?;
    } else {
        let Some(config) = queue::WorkerConfig::from_vars(&env.vars)? else {
            bail!(
                "RUNPOD_WEBHOOK_GET_JOB is not set: a queue endpoint needs a job source (RunPod or \
                 `flash server`); to run one job locally use `flash-host --test-input '{{...}}'`"
            );
        };
        role::serve(queue::QueueWorker { registry, config }).await?;
    }
    drop(unpacked);
    Ok(0)
}

/// `--test-input`: one job (or `repeat` timed ones after a warm-up), printed as RunPod's
/// local mode prints it; the exit code says whether it succeeded.
async fn run_test_input(registry: &ServiceRegistry, input: Value, repeat: u32) -> Result<i32> {
    if repeat > 1 {
        let _ = queue::run_once(registry, input.clone()).await;
        let started = std::time::Instant::now();
        for _ in 1..repeat {
            queue::run_once(registry, input.clone()).await;
        }
        let total = started.elapsed();
        eprintln!(
            "repeat: {} jobs in {:.3} s, {:.3} ms per job",
            repeat - 1,
            total.as_secs_f64(),
            total.as_secs_f64() * 1000.0 / f64::from(repeat - 1)
        );
    }
    let (ok, body) = queue::run_once(registry, input).await;
    println!("{}", serde_json::to_string_pretty(&body)?);
    Ok(if ok { 0 } else { 1 })
}

/// The mothership role: the artifact's manifest is what it reconciles the environment to.
fn mothership_role(env: &HostEnv, root: &std::path::Path) -> Result<mothership::Mothership> {
    let path = root.join(flash_manifest::MANIFEST_FILE_NAME);
    let desired: Value = serde_json::from_slice(
        &std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
    )
    .with_context(|| format!("{} is not JSON", path.display()))?;
    let need = |key: &str| {
        env.vars.get(key).with_context(|| {
            format!("{key} is not set: the mothership reconciles an environment through the State Manager and needs FLASH_ENVIRONMENT_ID and RUNPOD_API_KEY (RUNPOD_API_BASE_URL chooses the State Manager; RunPod's API when unset)")
        })
    };
    let api_key = need("RUNPOD_API_KEY")?;
    let environment_id = need("FLASH_ENVIRONMENT_ID")?;
    let state_manager = flash_api::ClientConfig::from_lookup(|name| env.vars.get(name))
        .context("configuring the State Manager client (RUNPOD_API_BASE_URL, RUNPOD_API_KEY)")?;
    Ok(mothership::Mothership {
        config: mothership::MothershipConfig {
            environment_id,
            state_manager,
            route_key: (!env.auth_disabled).then_some(api_key),
            listen: env.listen,
            options: mothership::options_from_vars(&env.vars)?,
        },
        desired,
    })
}

/// Where peers are found (see [`PeerDiscovery`]).
fn directory(env: &HostEnv, app: &HostApp, root: &std::path::Path) -> Arc<dyn EndpointDirectory> {
    match &env.peers {
        PeerDiscovery::Static(map) => Arc::new(StaticDirectory(map.clone())),
        PeerDiscovery::StateManager { ttl, .. } => {
            let mut fetcher = ManifestFetcher::from_lookup(|name| env.vars.get(name));
            if env.vars.get("FLASH_MANIFEST_PATH").is_none() {
                fetcher = fetcher.with_local_path(root.join(flash_manifest::MANIFEST_FILE_NAME));
            }
            if let Some(ttl) = ttl {
                fetcher = fetcher.with_ttl(*ttl);
            }
            Arc::new(fetcher)
        }
        PeerDiscovery::Manifest => Arc::new(StaticDirectory(
            app.manifest.resources_endpoints.clone().unwrap_or_default(),
        )),
    }
}
