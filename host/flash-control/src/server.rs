//! Assembles the control plane: store, auth, artifact store, gateway, supervisor, HTTP app.
//!
//! [`Server::bind`] prepares everything and binds the listener (so callers, tests included,
//! learn the real port before serving); [`Server::run`] serves until the shutdown future
//! resolves, then ends long polls, stops every worker process and returns. Jobs that were
//! running when the previous server died are put back in the queue on start.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post, put};
use serde_json::json;

use crate::artifacts::{self, ArtifactStore};
use crate::auth::{self, Auth};
use crate::signals::Signals;
use crate::state::AppState;
use crate::store::{SqliteStore, Store};
use crate::supervisor::{Supervisor, SupervisorConfig};
use crate::util::now_ms;
use crate::{admission, gateway, graphql, login};

/// Settings of a server. [`Config::new`] gives production defaults.
#[derive(Clone, Debug)]
pub struct Config {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// How long `job-take` and `job-stop` hold an empty long poll.
    pub take_hold: Duration,
    /// How long `/runsync` waits before answering with a non-final status.
    pub runsync_wait: Duration,
    /// Lease of a taken job; heartbeats extend it, expiry requeues the job.
    pub lease: Duration,
    /// `RUNPOD_PING_INTERVAL` for workers (ms, at least 1000: the SDK divides by 1000).
    pub ping_interval_ms: u64,
    /// Requeues of one job before it is marked `FAILED`.
    pub max_retries: i32,
    pub maintenance_interval: Duration,
    /// Queued jobs per endpoint before `/run` answers 429.
    pub max_queue: usize,
    pub max_request_body: usize,
    pub max_lb_body: usize,
    /// How long a finished job (its result and stream) is kept before it is deleted.
    pub job_retention: Duration,
    /// The most stream chunks one job may hold; more are refused.
    pub max_stream_chunks: i64,
    /// How long a client may take to send a request head before its connection is closed.
    pub header_read_timeout: Duration,
    /// How long an LB request waits for a ready worker.
    pub lb_wait: Duration,
    pub artifact_url_ttl: Duration,
    pub max_artifact_bytes: u64,
    pub worker_command: Option<Vec<String>>,
    pub allow_worker_command_override: bool,
    pub reconcile_interval: Duration,
    /// Between `SIGTERM` and `SIGKILL` when stopping a worker.
    pub stop_grace: Duration,
    pub max_restart_backoff: Duration,
    /// A worker log larger than this is rotated (one rotated file is kept).
    pub worker_log_max_bytes: u64,
    /// How long the logs of workers that are gone are kept after their last line.
    pub log_retention: Duration,
}

impl Config {
    pub fn new(data_dir: PathBuf, listen: SocketAddr) -> Self {
        Self {
            data_dir,
            listen,
            take_hold: Duration::from_secs(60),
            runsync_wait: Duration::from_secs(90),
            lease: Duration::from_secs(30),
            ping_interval_ms: 5_000,
            max_retries: 3,
            maintenance_interval: Duration::from_millis(250),
            max_queue: 100_000,
            max_request_body: 20 * 1024 * 1024,
            // What a load-balanced worker accepts (flash-host's limit): larger bodies get
            // 413 here instead of being forwarded to be refused.
            max_lb_body: 10 << 20,
            // RunPod keeps results for about 30 minutes.
            job_retention: Duration::from_secs(30 * 60),
            max_stream_chunks: 10_000,
            header_read_timeout: flash_api::serve::DEFAULT_HEADER_READ_TIMEOUT,
            lb_wait: Duration::from_secs(60),
            artifact_url_ttl: Duration::from_secs(3600),
            max_artifact_bytes: 1500 * 1024 * 1024,
            worker_command: None,
            allow_worker_command_override: false,
            reconcile_interval: Duration::from_millis(250),
            stop_grace: Duration::from_secs(5),
            max_restart_backoff: Duration::from_secs(30),
            worker_log_max_bytes: 64 << 20,
            log_retention: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// A bound, ready-to-run control plane.
pub struct Server {
    state: AppState,
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
}

/// The job store's file in the data dir (SQLite adds `-wal` and `-shm` beside it).
pub const DB_FILE: &str = "flash.db";

/// Makes the data dir readable by its owner only (0700) and its secrets and database files
/// 0600, repairing a data dir made before this rule; creates the database file 0600 so that
/// SQLite, which gives its `-wal` and `-shm` files the database file's mode, makes those
/// 0600 too. The database holds job inputs and outputs and endpoint keys.
fn keep_private(data_dir: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let private = |path: &Path, mode: u32| -> Result<()> {
            match std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e).with_context(|| {
                    format!(
                        "making {} private (mode {mode:o}); is the data dir yours?",
                        path.display()
                    )
                }),
            }
        };
        private(data_dir, 0o700)?;
        let db = data_dir.join(DB_FILE);
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&db)
        {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e).with_context(|| format!("creating {}", db.display())),
        }
        for name in [
            DB_FILE.to_string(),
            format!("{DB_FILE}-wal"),
            format!("{DB_FILE}-shm"),
            auth::API_KEY_FILE.to_string(),
            auth::URL_SECRET_FILE.to_string(),
            auth::WORKER_KEY_SECRET_FILE.to_string(),
        ] {
            private(&data_dir.join(name), 0o600)?;
        }
    }
    #[cfg(not(unix))]
    let _ = data_dir;
    Ok(())
}

impl Server {
    /// Opens the data dir (creating the store and the API key on first start) and binds.
    pub async fn bind(config: Config) -> Result<Self> {
        let data_dir = &config.data_dir;
        std::fs::create_dir_all(data_dir).with_context(|| {
            format!(
                "creating data dir {} (pass --data-dir to use another)",
                data_dir.display()
            )
        })?;
        keep_private(data_dir)?;
        let user_key = auth::load_or_create_secret(&auth::api_key_path(data_dir))?;
        let url_secret = auth::load_or_create_secret(&data_dir.join(auth::URL_SECRET_FILE))?;
        let worker_secret =
            auth::load_or_create_secret(&data_dir.join(auth::WORKER_KEY_SECRET_FILE))?;
        let auth = Auth::new(user_key, worker_secret);
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&data_dir.join(DB_FILE))?);
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| {
                format!(
                    "binding {} (is another flash server running? use --listen)",
                    config.listen
                )
            })?;
        let addr = listener.local_addr()?;
        let host = if addr.ip().is_unspecified() {
            "127.0.0.1".to_string()
        } else {
            addr.ip().to_string()
        };
        let base_url = format!("http://{host}:{}", addr.port());
        let artifacts = Arc::new(ArtifactStore::new(
            data_dir.join("artifacts"),
            url_secret,
            base_url.clone(),
            config.artifact_url_ttl,
            config.max_artifact_bytes,
        ));
        let signals = Arc::new(Signals::default());
        let metrics = Arc::new(crate::metrics::ServerMetrics::default());
        let supervisor = Arc::new(Supervisor::new(
            SupervisorConfig {
                worker_command: config.worker_command.clone(),
                allow_command_override: config.allow_worker_command_override,
                logs_dir: data_dir.join("logs"),
                base_url,
                ping_interval_ms: config.ping_interval_ms.max(1000),
                tick: config.reconcile_interval,
                max_backoff: config.max_restart_backoff,
                stop_grace: config.stop_grace,
                max_retries: config.max_retries,
                home: std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.clone()),
                workers_dir: data_dir.join("workers"),
            },
            store.clone(),
            signals.clone(),
            artifacts.clone(),
            auth.clone(),
            metrics.clone(),
        ));
        let state = AppState {
            store,
            auth,
            config: Arc::new(config),
            artifacts,
            signals,
            supervisor,
            metrics,
            logins: Default::default(),
            // Webhooks and the load-balanced proxy: a worker or webhook that does not accept
            // a connection in 10 s is down (each request sets its own total timeout).
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(10))
                .build()
                .context("building the HTTP client")?,
        };
        Ok(Self {
            state,
            listener,
            addr,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://host:port` of this server.
    pub fn url(&self) -> String {
        let host = if self.addr.ip().is_unspecified() {
            "127.0.0.1".to_string()
        } else {
            self.addr.ip().to_string()
        };
        format!("http://{host}:{}", self.addr.port())
    }

    /// The user API key.
    pub fn api_key(&self) -> &str {
        self.state.auth.user_key()
    }

    /// The supervisor (worker pids and states, for diagnostics and tests).
    pub fn supervisor(&self) -> Arc<Supervisor> {
        self.state.supervisor.clone()
    }

    /// Serves until `shutdown` resolves, then stops all workers.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
        let state = self.state;
        state.supervisor.sweep_strays();
        let swept = state.supervisor.sweep_worker_dirs();
        if swept > 0 {
            tracing::info!(swept, "removed the files of workers from an earlier run");
        }
        let requeued = state
            .store
            .requeue_all_running(now_ms(), state.config.max_retries)?;
        for job in &requeued.failed {
            state.metrics.job_finished(job);
        }
        if !requeued.requeued.is_empty() {
            tracing::warn!(
                jobs = requeued.requeued.len(),
                "jobs that were running when the server stopped were requeued"
            );
        }
        let schema = graphql::schema(state.clone());
        // Keys are checked before bodies are read, and bodies are bounded as they stream
        // (crate::admission).
        use axum::middleware::from_fn_with_state as admit;
        let limit = tower_http::limit::RequestBodyLimitLayer::new;
        let graphql_routes = Router::new()
            .route("/graphql", post(graphql::handler))
            .layer(limit(state.config.max_request_body))
            .layer(admit(state.clone(), admission::graphql));
        let queue_routes = gateway::queue_router()
            .layer(limit(state.config.max_request_body))
            .layer(admit(state.clone(), admission::endpoint));
        let lb_routes = gateway::lb_router()
            .layer(limit(state.config.max_lb_body))
            .layer(admit(state.clone(), admission::endpoint));
        let app = Router::new()
            .merge(graphql_routes)
            .merge(queue_routes)
            .merge(lb_routes)
            .merge(crate::console::router())
            .route("/artifacts/{*key}", put(artifacts::put).get(artifacts::get))
            .route("/flash/login", get(login::page).post(login::decide))
            .route(crate::logs::LOGS_PATH, get(crate::logs::handler))
            .route(crate::metrics::METRICS_PATH, get(crate::metrics::handler))
            .route(
                crate::metrics::STATS_PATH,
                get(crate::metrics::stats_handler),
            )
            .route(
                "/ping",
                get(|| async { axum::Json(json!({ "status": "healthy" })) }),
            )
            .fallback(|| async {
                (
                    StatusCode::NOT_FOUND,
                    axum::Json(json!({ "error": "no such route" })),
                )
                    .into_response()
            })
            .layer(axum::Extension(schema))
            .layer(DefaultBodyLimit::max(state.config.max_request_body))
            .layer(tower_http::trace::TraceLayer::new_for_http())
            .with_state(state.clone());

        let maintenance = tokio::spawn(gateway::maintenance(state.clone()));
        let log_upkeep = tokio::spawn(crate::logs::keep_bounded(state.clone()));
        let reconcile = tokio::spawn(state.supervisor.clone().run());
        let signals = state.signals.clone();
        let supervisor = state.supervisor.clone();
        let stopper = tokio::spawn(async move {
            shutdown.await;
            tracing::info!("shutting down: stopping workers");
            signals.begin_shutdown();
            supervisor.shutdown().await;
        });
        let mut shutdown_rx = state.signals.shutdown();
        let served = flash_api::serve::serve(
            self.listener,
            app,
            state.config.header_read_timeout,
            async move {
                let _ = shutdown_rx.wait_for(|s| *s).await;
            },
        );
        // Connections still open 10 s after shutdown began are cut.
        let mut shutdown_rx = state.signals.shutdown();
        let result = tokio::select! {
            r = served => r.context("serving HTTP"),
            _ = async {
                let _ = shutdown_rx.wait_for(|s| *s).await;
                tokio::time::sleep(Duration::from_secs(10)).await;
            } => Ok(()),
        };
        if state.signals.is_shutting_down() {
            let _ = stopper.await;
        } else {
            // The server ended by itself (an error): still no orphans.
            stopper.abort();
            state.signals.begin_shutdown();
            state.supervisor.shutdown().await;
        }
        state.supervisor.sweep_strays();
        maintenance.abort();
        log_upkeep.abort();
        reconcile.abort();
        result
    }
}
