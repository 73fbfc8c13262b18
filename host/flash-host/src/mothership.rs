//! `flash-host` as an environment's mothership (`FLASH_IS_MOTHERSHIP=true`).
//!
//! The mothership serves no user function. On boot it reconciles the environment's child
//! endpoints with the manifest of the artifact it booted with ([`flash_deploy::mothership`]
//! does the work, with the same engine as `flash deploy send`), then serves a small HTTP API
//! on the load-balanced listen address:
//!
//! | route | answer |
//! |---|---|
//! | `GET /ping` | 200 once reconciled (the platform's readiness probe), 503 while reconciling |
//! | `GET /manifest` | the environment's manifest as reconciled (endpoints included) |
//! | `GET /reconciliation` | what the last reconciliation found and did, with child health |
//!
//! `/manifest` and `/reconciliation` require `Authorization: Bearer <RUNPOD_API_KEY>` unless
//! `FLASH_DISABLE_RP_AUTH=true`, as the app's own load-balanced routes do. A reconciliation
//! that fails ends the process with the error: the platform restarts it (with backoff), and
//! each boot retries from what was persisted.
//!
//! | variable | meaning |
//! |---|---|
//! | `FLASH_ENVIRONMENT_ID`, `RUNPOD_API_KEY` | the environment, and the key of the account that holds it (required) |
//! | `RUNPOD_API_BASE_URL` | the State Manager (RunPod's API, `https://api.runpod.io`, when unset) |
//! | `RUNPOD_ENDPOINT_ID` | this mothership's endpoint id (recorded in the manifest it persists) |
//! | `FLASH_MOTHERSHIP_CONCURRENCY` | `saveEndpoint` calls in flight (default 3) |
//! | `FLASH_MOTHERSHIP_PUBLISH_WAIT_S` | wait for a `deploy send` still publishing (default 60) |
//! | `FLASH_MOTHERSHIP_HEALTH_WAIT_S` | wait for children's workers to be ready (default 60) |

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use flash_api::{ClientConfig, StateManagerClient};
use flash_deploy::mothership::{ReconcileOptions, Reconciliation, reconcile};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::env::Vars;
use crate::role::Role;

/// What the mothership needs from its environment.
#[derive(Debug, Clone)]
pub struct MothershipConfig {
    pub environment_id: String,
    /// The State Manager that holds the environment (`RUNPOD_API_BASE_URL`, RunPod's API
    /// when unset, and `RUNPOD_API_KEY`).
    pub state_manager: ClientConfig,
    pub listen: SocketAddr,
    /// `None`: the informational routes need no key (`FLASH_DISABLE_RP_AUTH=true`).
    pub route_key: Option<String>,
    pub options: ReconcileOptions,
}

#[derive(Clone, Default)]
struct Shared {
    done: Arc<Mutex<Option<Reconciliation>>>,
    route_key: Option<String>,
}

/// The mothership role: reconcile the environment to `desired` (the artifact's manifest),
/// then serve the routes above.
pub struct Mothership {
    pub config: MothershipConfig,
    pub desired: Value,
}

impl Role for Mothership {
    fn name(&self) -> &'static str {
        "mothership"
    }

    async fn serve(self, stop: watch::Receiver<bool>) -> Result<()> {
        run(self.config, self.desired, stop).await
    }
}

/// Reconciles once, then serves the mothership's routes until `stop` turns true.
pub async fn run(
    config: MothershipConfig,
    desired: Value,
    mut stop: watch::Receiver<bool>,
) -> Result<()> {
    let sm = StateManagerClient::new(config.state_manager.clone())?;
    let shared = Shared {
        done: Arc::default(),
        route_key: config.route_key.clone(),
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {} (FLASH_LISTEN_ADDR / PORT)", config.listen))?;
    tracing::info!(addr = %listener.local_addr()?, environment = %config.environment_id, "mothership listening; reconciling");
    let router = Router::new()
        .route("/ping", get(ping))
        .route("/manifest", get(manifest))
        .route("/reconciliation", get(report))
        .with_state(shared.clone());
    let mut server_stop = stop.clone();
    let server = tokio::spawn(async move {
        let stopped = async move {
            let _ = server_stop.wait_for(|s| *s).await;
        };
        flash_api::serve::serve(
            listener,
            router,
            flash_api::serve::DEFAULT_HEADER_READ_TIMEOUT,
            stopped,
        )
        .await
        .context("serving HTTP")
    });

    let outcome = tokio::select! {
        r = reconcile(&sm, &desired, &config.environment_id, &config.options) => Some(r),
        _ = stop.wait_for(|s| *s) => None,
    };
    match outcome {
        None => {}
        Some(Err(e)) => {
            server.abort();
            return Err(e.context(format!(
                "reconciling environment `{}` (the platform restarts the mothership to retry)",
                config.environment_id
            )));
        }
        Some(Ok(done)) => {
            let changes: Vec<String> = done
                .changes()
                .map(|r| format!("{} {}", r.resource, r.action.as_str()))
                .collect();
            tracing::info!(
                active = done.active,
                persisted = done.persisted,
                changes = ?changes,
                unhealthy = done.health.iter().filter(|h| !h.healthy).count(),
                "reconciliation complete"
            );
            if let Ok(mut slot) = shared.done.lock() {
                *slot = Some(done);
            }
        }
    }
    server.await.context("the HTTP task panicked")?
}

fn with_report(
    shared: &Shared,
    headers: &HeaderMap,
    f: impl FnOnce(&Reconciliation) -> Value,
) -> Response {
    if let Some(answer) = crate::lb::denied(shared.route_key.as_deref(), headers) {
        return answer;
    }
    match shared.done.lock().ok().as_deref().and_then(Option::as_ref) {
        Some(done) => axum::Json(f(done)).into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({ "status": "reconciling" })),
        )
            .into_response(),
    }
}

async fn ping(State(shared): State<Shared>) -> Response {
    let done = shared
        .done
        .lock()
        .ok()
        .and_then(|d| d.as_ref().map(|r| r.active));
    match done {
        Some(active) => axum::Json(json!({
            "status": "healthy", "role": "mothership", "active_build": active,
        }))
        .into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({ "status": "reconciling", "role": "mothership" })),
        )
            .into_response(),
    }
}

async fn manifest(State(shared): State<Shared>, headers: HeaderMap) -> Response {
    with_report(&shared, &headers, |r| r.manifest.clone())
}

async fn report(State(shared): State<Shared>, headers: HeaderMap) -> Response {
    with_report(&shared, &headers, |r| {
        let mut body =
            serde_json::to_value(r).unwrap_or_else(|e| json!({ "error": e.to_string() }));
        // Which boot this is (a restarted mothership reconciles again).
        body["pid"] = json!(std::process::id());
        body
    })
}

/// Default of [`ReconcileOptions`] with the env overrides of the module docs applied.
pub fn options_from_vars(vars: &Vars) -> Result<ReconcileOptions> {
    let mut options = ReconcileOptions {
        endpoint_id: vars.get("RUNPOD_ENDPOINT_ID"),
        ..Default::default()
    };
    if let Some(n) = vars.parse::<u64>("FLASH_MOTHERSHIP_CONCURRENCY")? {
        options.concurrency = n.clamp(1, 32) as usize;
    }
    if let Some(s) = vars.parse("FLASH_MOTHERSHIP_PUBLISH_WAIT_S")? {
        options.publish_wait = Duration::from_secs(s);
    }
    if let Some(s) = vars.parse("FLASH_MOTHERSHIP_HEALTH_WAIT_S")? {
        options.health_wait = Duration::from_secs(s);
    }
    Ok(options)
}
