//! The provisioner: makes saved endpoints real as worker processes, and scales them.
//!
//! A reconcile loop (every `tick`, or at once when [`Provisioner::kick`] is called after
//! `saveEndpoint`, a new job, …) compares each endpoint with its pool of worker processes:
//!
//! - **Spawn.** A worker is the worker command (`flash-host` by default) started with what
//!   RunPod gives a worker and nothing more (reference §3.1, §5.6): the template env, the
//!   platform's variables (job-take/done/stream/ping URL templates pointing at this server,
//!   `RUNPOD_POD_ID`, `RUNPOD_ENDPOINT_ID`, the endpoint's `aiKey` as `RUNPOD_AI_API_KEY`,
//!   `RUNPOD_PING_INTERVAL`) and the environment's active build as RunPod's artifact file.
//!   Only what a shared machine cannot do as separate containers differs, each named in
//!   [`LOCAL_ONLY_ENV`]. Output goes to `<data_dir>/logs/<endpoint>/<worker>.log`; each
//!   worker unpacks into `<data_dir>/workers/<worker>/app`, removed when it exits and swept
//!   at start. Each worker is its own process group and gets `SIGKILL` if the server dies
//!   (Linux parent-death signal), so no worker outlives it.
//! - **Scale.** Between `workersMin` and `workersMax`: `QUEUE_DELAY` adds a worker when the
//!   oldest queued job waited `scalerValue` s (or none runs), `REQUEST_COUNT` keeps
//!   `ceil(outstanding / scalerValue)`. Workers idle for `idleTimeout` s beyond the target are
//!   drained (no new jobs), then stopped with `SIGTERM`, then `SIGKILL` after a grace period.
//!   An endpoint of a Flash environment gets no workers until the environment has an
//!   active build (they would have no artifact to boot).
//! - **Heal.** A worker that exits unexpectedly has its jobs requeued and is replaced after an
//!   exponential backoff. A changed endpoint, template or active build drains the old workers.
//! - **Report.** Worker states (initializing until the first take/ping, or for LB until
//!   `GET /ping` answers 200; then idle or running; unhealthy on a failed fitness ping) feed
//!   `/health`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::process::{Child, Command};
use tokio::sync::Notify;

use crate::artifacts::ArtifactStore;
use crate::auth::Auth;
use crate::signals::Signals;
use crate::store::{Endpoint, Store};
use crate::util::now_ms;

/// Template env key naming a per-endpoint worker command (a JSON array of argv), honoured
/// only when the server runs with `--allow-worker-command-override` (tests, development):
/// otherwise anyone holding the API key could run arbitrary programs on the host.
pub const WORKER_COMMAND_ENV: &str = "FLASH_WORKER_COMMAND";

/// The variables a local worker gets that a RunPod worker does not, and why each cannot be
/// removed: RunPod runs every worker in its own container with its own network and file
/// system, and its workers reach RunPod's own API by default.
pub const LOCAL_ONLY_ENV: &[(&str, &str)] = &[
    (
        "RUNPOD_API_BASE_URL",
        "RunPod's workers reach api.runpod.io, flash-host's default; local ones reach this server",
    ),
    (
        "RUNPOD_ENDPOINT_BASE_URL",
        "peers' queue URLs are this server's, not api.runpod.ai",
    ),
    (
        "FLASH_BUILD_ARTIFACT_PATH",
        "RunPod puts the artifact at /root/.runpod/artifact.tar.gz in each container; local \
         workers share one file system, so the server names the stored file",
    ),
    (
        "FLASH_APP_DIR",
        "each RunPod container unpacks into its own /app; local workers get one directory each",
    ),
    (
        "FLASH_LISTEN_ADDR",
        "a container listens on 0.0.0.0:$PORT of its own network; local load-balanced workers \
         share the machine's, so each gets a loopback port",
    ),
    (
        HOME_MARKER_ENV,
        "marks a worker's processes so that a restarted server can stop the strays of a \
         killed one",
    ),
];

/// Flash settings of the machine rather than of a deploy (a worker image would set them):
/// the only FLASH_* variables local workers inherit from the server's environment.
pub const MACHINE_ENV: &[&str] = &[
    "FLASH_CACHE_DIR",
    "FLASH_NN_TARGET",
    "FLASH_NN_SESSIONS",
    "FLASH_NN_THREADS",
];

/// Environment marker set on every worker (inherited by its children): the data dir of the
/// server that started it, so a restarted server can find strays of a killed predecessor.
pub const HOME_MARKER_ENV: &str = "FLASH_CONTROL_HOME";

/// Settings of the provisioner.
#[derive(Clone, Debug)]
pub struct ProvisionerConfig {
    /// Worker argv; `None` resolves `flash-host` (see [`default_worker_command`]).
    pub worker_command: Option<Vec<String>>,
    pub allow_command_override: bool,
    pub logs_dir: PathBuf,
    /// This server's URL, `http://127.0.0.1:PORT`.
    pub base_url: String,
    /// `RUNPOD_PING_INTERVAL` handed to workers (ms; the SDK needs ≥ 1000).
    pub ping_interval_ms: u64,
    pub tick: Duration,
    pub max_backoff: Duration,
    pub stop_grace: Duration,
    pub max_retries: i32,
    /// The data dir, exported to workers as [`HOME_MARKER_ENV`].
    pub home: PathBuf,
    /// Where workers unpack their artifact (`<data_dir>/workers/<worker>/app`).
    pub workers_dir: PathBuf,
}

/// The worker command used when none is configured: `FLASH_HOST_BIN`, else `flash-host`
/// next to the running executable, else `flash-host` on `PATH`.
pub fn default_worker_command() -> Vec<String> {
    if let Ok(bin) = std::env::var("FLASH_HOST_BIN")
        && !bin.is_empty()
    {
        return vec![bin];
    }
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        let candidate = dir.join("flash-host");
        if candidate.is_file() {
            return vec![candidate.to_string_lossy().into_owned()];
        }
    }
    vec!["flash-host".into()]
}

/// Worker counts for `/health`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorkerCounts {
    pub idle: usize,
    pub initializing: usize,
    pub ready: usize,
    pub running: usize,
    pub throttled: usize,
    pub unhealthy: usize,
}

struct Worker {
    id: String,
    child: Child,
    pid: i32,
    spawned: Instant,
    ready: bool,
    healthy: bool,
    busy: bool,
    idle_since: Instant,
    /// Set once the worker is told to go: it gets no new jobs.
    draining: bool,
    /// When `SIGTERM` was sent.
    terminated_at: Option<Instant>,
    /// The worker asked to be replaced (`stopPod`): its exit is not a crash.
    refresh: bool,
    listen: Option<SocketAddr>,
    inflight: Arc<AtomicUsize>,
    log: PathBuf,
}

#[derive(Default)]
struct Pool {
    workers: HashMap<String, Worker>,
    crashes: u32,
    next_spawn: Option<Instant>,
    spec: String,
    lb_demand: usize,
    rr: usize,
}

#[derive(Default)]
struct Inner {
    pools: HashMap<String, Pool>,
    /// worker id → endpoint id.
    index: HashMap<String, String>,
}

/// See the module docs.
pub struct Provisioner {
    cfg: ProvisionerConfig,
    store: Arc<dyn Store>,
    signals: Arc<Signals>,
    artifacts: Arc<ArtifactStore>,
    inner: Mutex<Inner>,
    kick: Notify,
    stopping: AtomicBool,
    http: reqwest::Client,
    /// Derives the keys workers hold ([`Auth::worker_api_key`]).
    auth: Auth,
}

/// What a worker of an endpoint is started with; a changed fingerprint replaces workers.
struct Spec {
    fingerprint: String,
    env: Vec<(String, String)>,
    artifact_key: Option<String>,
}

/// A reservation of one LB worker for one proxied request.
pub struct LbLease {
    pub addr: SocketAddr,
    inflight: Arc<AtomicUsize>,
}

impl Drop for LbLease {
    fn drop(&mut self) {
        self.inflight.fetch_sub(1, Ordering::SeqCst);
    }
}

fn signal_group(pid: i32, signal: i32) {
    if pid > 0 {
        // SAFETY: kill(2) with a negative pid signals the process group we created for the
        // worker (process_group(0) makes its pgid equal its pid); no memory is involved.
        unsafe {
            libc::kill(-pid, signal);
        }
    }
}

fn free_local_addr() -> Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .context("finding a free port for an LB worker")?;
    Ok(listener.local_addr()?)
}

impl Provisioner {
    pub fn new(
        cfg: ProvisionerConfig,
        store: Arc<dyn Store>,
        signals: Arc<Signals>,
        artifacts: Arc<ArtifactStore>,
        auth: Auth,
    ) -> Self {
        Self {
            cfg,
            store,
            auth,
            signals,
            artifacts,
            inner: Mutex::default(),
            kick: Notify::new(),
            stopping: AtomicBool::new(false),
            http: reqwest::Client::builder()
                .timeout(Duration::from_millis(800))
                .build()
                .unwrap_or_default(),
        }
    }

    /// Where worker `id` unpacks its artifact.
    fn app_dir(&self, id: &str) -> PathBuf {
        self.cfg.workers_dir.join(id).join("app")
    }

    fn remove_worker_dir(&self, id: &str) {
        let dir = self.cfg.workers_dir.join(id);
        if let Err(e) = std::fs::remove_dir_all(&dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %dir.display(), error = %e, "removing a stopped worker's files");
        }
    }

    /// Removes what workers of an earlier run left (a server killed with `SIGKILL` cannot
    /// clean up after its workers). Returns how many worker directories were removed.
    pub fn sweep_worker_dirs(&self) -> usize {
        let Ok(entries) = std::fs::read_dir(&self.cfg.workers_dir) else {
            return 0;
        };
        let mut removed = 0;
        for entry in entries.flatten() {
            if std::fs::remove_dir_all(entry.path()).is_ok() {
                removed += 1;
            }
        }
        removed
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks for a reconcile pass now.
    /// Where workers' logs are written: `<this>/<endpoint>/<worker>.log`.
    pub fn logs_dir(&self) -> &Path {
        &self.cfg.logs_dir
    }

    pub fn kick(&self) {
        self.kick.notify_one();
    }

    fn with_worker<R>(&self, worker_id: &str, f: impl FnOnce(&mut Worker) -> R) -> Option<R> {
        let mut inner = self.lock();
        let ep = inner.index.get(worker_id)?.clone();
        inner.pools.get_mut(&ep)?.workers.get_mut(worker_id).map(f)
    }

    /// A worker talked to us (take, ping, result): it is up.
    pub fn seen(&self, _endpoint_id: &str, worker_id: &str, healthy: bool) {
        self.with_worker(worker_id, |w| {
            if w.listen.is_none() {
                w.ready = true;
            }
            w.healthy = healthy;
        });
    }

    /// Whether the worker must not get new jobs (scale-down, update, shutdown).
    pub fn is_draining(&self, worker_id: &str) -> bool {
        self.stopping.load(Ordering::SeqCst)
            || self.with_worker(worker_id, |w| w.draining).unwrap_or(false)
    }

    /// The worker took a job.
    pub fn assigned(&self, _endpoint_id: &str, worker_id: &str) {
        self.with_worker(worker_id, |w| {
            w.busy = true;
            w.idle_since = Instant::now();
        });
    }

    /// A job of the worker ended.
    pub fn job_done(&self, _endpoint_id: &str, worker_id: &str) {
        self.with_worker(worker_id, |w| w.idle_since = Instant::now());
        self.kick();
    }

    /// The worker announced it will exit to be replaced (`stopPod`).
    pub fn refresh_requested(&self, worker_id: &str) {
        self.with_worker(worker_id, |w| w.refresh = true);
    }

    /// Worker states of an endpoint.
    pub fn worker_counts(&self, endpoint_id: &str) -> WorkerCounts {
        let inner = self.lock();
        let mut c = WorkerCounts::default();
        for w in inner
            .pools
            .get(endpoint_id)
            .map(|p| p.workers.values())
            .into_iter()
            .flatten()
        {
            if !w.healthy {
                c.unhealthy += 1;
            } else if !w.ready {
                c.initializing += 1;
            } else {
                c.ready += 1;
                if w.busy {
                    c.running += 1;
                } else {
                    c.idle += 1;
                }
            }
        }
        c
    }

    /// Ids of the ready workers of an endpoint.
    pub fn ready_workers(&self, endpoint_id: &str) -> Vec<String> {
        let inner = self.lock();
        let mut ids: Vec<String> = inner
            .pools
            .get(endpoint_id)
            .map(|p| {
                p.workers
                    .values()
                    .filter(|w| w.ready && !w.draining)
                    .map(|w| w.id.clone())
                    .collect()
            })
            .unwrap_or_default();
        ids.sort();
        ids
    }

    /// Process ids of an endpoint's workers (for tests and diagnostics).
    pub fn worker_pids(&self, endpoint_id: &str) -> Vec<(String, u32)> {
        let inner = self.lock();
        inner
            .pools
            .get(endpoint_id)
            .map(|p| {
                p.workers
                    .values()
                    .map(|w| (w.id.clone(), w.pid as u32))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Reserves a ready worker of an LB endpoint, starting one if needed; waits up to `wait`.
    pub async fn acquire_lb(&self, endpoint_id: &str, wait: Duration) -> Option<LbLease> {
        let deadline = Instant::now() + wait;
        let mut registered = false;
        let lease = loop {
            {
                let mut inner = self.lock();
                let pool = inner.pools.entry(endpoint_id.to_string()).or_default();
                let mut ready: Vec<&Worker> = pool
                    .workers
                    .values()
                    .filter(|w| w.ready && w.healthy && !w.draining && w.listen.is_some())
                    .collect();
                ready.sort_by(|a, b| a.id.cmp(&b.id));
                if !ready.is_empty() {
                    let least = ready
                        .iter()
                        .map(|w| w.inflight.load(Ordering::SeqCst))
                        .min()
                        .unwrap_or(0);
                    let candidates: Vec<&&Worker> = ready
                        .iter()
                        .filter(|w| w.inflight.load(Ordering::SeqCst) == least)
                        .collect();
                    let w = candidates[pool.rr % candidates.len()];
                    w.inflight.fetch_add(1, Ordering::SeqCst);
                    let lease = LbLease {
                        addr: w
                            .listen
                            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0))),
                        inflight: w.inflight.clone(),
                    };
                    let id = w.id.clone();
                    pool.rr = pool.rr.wrapping_add(1);
                    if let Some(w) = pool.workers.get_mut(&id) {
                        w.idle_since = Instant::now();
                    }
                    if registered {
                        pool.lb_demand = pool.lb_demand.saturating_sub(1);
                    }
                    break Some(lease);
                }
                if !registered {
                    pool.lb_demand += 1;
                    registered = true;
                }
            }
            self.kick();
            if Instant::now() >= deadline {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        if lease.is_none() && registered {
            let mut inner = self.lock();
            if let Some(pool) = inner.pools.get_mut(endpoint_id) {
                pool.lb_demand = pool.lb_demand.saturating_sub(1);
            }
        }
        lease
    }

    /// The reconcile loop; returns once [`Provisioner::shutdown`] began.
    pub async fn run(self: Arc<Self>) {
        let mut shutdown = self.signals.shutdown();
        loop {
            if let Err(e) = self.reconcile().await {
                tracing::error!(error = %format!("{e:#}"), "provisioner pass failed");
            }
            tokio::select! {
                _ = tokio::time::sleep(self.cfg.tick) => {}
                _ = self.kick.notified() => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
    }

    fn spec_of(&self, ep: &Endpoint) -> Result<Spec> {
        let template = match &ep.template_id {
            Some(id) => self.store.get_template(id)?,
            None => None,
        };
        // Workers hold their environment's key, never the user key (crate::auth).
        let worker_key = self.auth.worker_api_key(template.as_ref(), ep);
        let env: Vec<(String, String)> = template
            .as_ref()
            .map(|t| {
                t.env
                    .iter()
                    .map(|e| match (&worker_key, e.key.as_str()) {
                        (Some(key), "RUNPOD_API_KEY") => (e.key.clone(), key.clone()),
                        _ => (e.key.clone(), e.value.clone()),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let artifact_key = match &ep.flash_environment_id {
            Some(env_id) => match self
                .store
                .get_environment(env_id)?
                .and_then(|e| e.active_build_id)
            {
                Some(build) => self.store.get_build(&build)?.map(|b| b.object_key),
                None => None,
            },
            None => None,
        };
        let spec = serde_json::json!({
            "type": ep.kind, "exec": ep.execution_timeout_ms, "env": env, "artifact": artifact_key,
        })
        .to_string();
        Ok(Spec {
            fingerprint: spec,
            env,
            artifact_key,
        })
    }

    fn command_for(&self, env: &[(String, String)]) -> Result<Vec<String>> {
        if let Some((_, value)) = env.iter().find(|(k, _)| k == WORKER_COMMAND_ENV) {
            if !self.cfg.allow_command_override {
                bail!(
                    "endpoint sets {WORKER_COMMAND_ENV} but the server was not started with \
                     --allow-worker-command-override"
                );
            }
            let argv: Vec<String> = serde_json::from_str(value).with_context(|| {
                format!("{WORKER_COMMAND_ENV} must be a JSON array of strings, got {value}")
            })?;
            if argv.is_empty() {
                bail!("{WORKER_COMMAND_ENV} is empty");
            }
            return Ok(argv);
        }
        Ok(self
            .cfg
            .worker_command
            .clone()
            .unwrap_or_else(default_worker_command))
    }

    fn spawn(
        &self,
        ep: &Endpoint,
        env: &[(String, String)],
        artifact_key: Option<&str>,
    ) -> Result<Worker> {
        let argv = self.command_for(env)?;
        let id = format!("w-{}", &uuid::Uuid::new_v4().simple().to_string()[..16]);
        let dir = self.cfg.logs_dir.join(&ep.id);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("creating log dir {}", dir.display()))?;
        let log_path = dir.join(format!("{id}.log"));
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let base = &self.cfg.base_url;
        let v2 = format!("{base}/v2/{}", ep.id);
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .process_group(0);
        // What RunPod does not give a worker, the server's own environment must not leak
        // either: the worker sees the template env, the platform's variables and the
        // machine's settings ([`MACHINE_ENV`]), never the server's RUNPOD_* / FLASH_*.
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            if (key.starts_with("RUNPOD_")
                || key.starts_with("FLASH_")
                || key.starts_with("_FLASH_"))
                && !MACHINE_ENV.contains(&key.as_ref())
            {
                cmd.env_remove(key.as_ref());
            }
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        // The platform's variables win over the template's, as on RunPod.
        cmd.env(
            "RUNPOD_WEBHOOK_GET_JOB",
            format!("{v2}/job-take/$ID?gpu=local"),
        )
        .env(
            "RUNPOD_WEBHOOK_POST_OUTPUT",
            format!("{v2}/job-done/$RUNPOD_POD_ID/$ID?gpu=local"),
        )
        .env(
            "RUNPOD_WEBHOOK_POST_STREAM",
            format!("{v2}/job-stream/$RUNPOD_POD_ID/$ID?gpu=local"),
        )
        .env(
            "RUNPOD_WEBHOOK_PING",
            format!("{v2}/ping/$RUNPOD_POD_ID?gpu=local"),
        )
        .env("RUNPOD_POD_ID", &id)
        .env("RUNPOD_AI_API_KEY", &ep.ai_key)
        .env("RUNPOD_ENDPOINT_ID", &ep.id)
        .env(
            "RUNPOD_PING_INTERVAL",
            self.cfg.ping_interval_ms.to_string(),
        )
        .env(HOME_MARKER_ENV, &self.cfg.home)
        .env("RUNPOD_API_BASE_URL", base)
        .env("RUNPOD_ENDPOINT_BASE_URL", format!("{base}/v2"))
        .env("FLASH_APP_DIR", self.app_dir(&id));
        if let Some(key) = artifact_key {
            cmd.env("FLASH_BUILD_ARTIFACT_PATH", self.artifacts.local_path(key));
        }
        let listen = if ep.is_lb() {
            let addr = free_local_addr()?;
            cmd.env("FLASH_LISTEN_ADDR", addr.to_string());
            Some(addr)
        } else {
            None
        };
        #[cfg(target_os = "linux")]
        // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and touches no memory of ours.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
                Ok(())
            });
        }
        let child = cmd.spawn().with_context(|| {
            format!(
                "starting worker `{}` for endpoint `{}` (set --worker-command or FLASH_HOST_BIN)",
                argv.join(" "),
                ep.id
            )
        })?;
        let pid = child.id().map(|p| p as i32).unwrap_or(0);
        tracing::info!(endpoint = %ep.id, worker = %id, pid, log = %log_path.display(), "worker started");
        Ok(Worker {
            id,
            child,
            pid,
            spawned: Instant::now(),
            ready: false,
            healthy: true,
            busy: false,
            idle_since: Instant::now(),
            draining: false,
            terminated_at: None,
            refresh: false,
            listen,
            inflight: Arc::new(AtomicUsize::new(0)),
            log: log_path,
        })
    }

    /// One pass over every endpoint. See the module docs.
    pub async fn reconcile(&self) -> Result<()> {
        if self.stopping.load(Ordering::SeqCst) {
            return Ok(());
        }
        let endpoints = self.store.list_endpoints()?;
        let mut probes: Vec<(String, SocketAddr)> = Vec::new();
        {
            let mut inner = self.lock();
            let Inner { pools, index } = &mut *inner;
            // Endpoints deleted: stop everything they run.
            for (ep_id, pool) in pools.iter_mut() {
                if !endpoints.iter().any(|e| &e.id == ep_id) {
                    for w in pool.workers.values_mut() {
                        w.draining = true;
                        w.busy = false;
                    }
                }
            }
            for ep in &endpoints {
                let pool = pools.entry(ep.id.clone()).or_default();
                match self.spec_of(ep) {
                    Ok(Spec {
                        fingerprint: spec,
                        env,
                        artifact_key: artifact,
                    }) => {
                        if pool.spec != spec {
                            if !pool.spec.is_empty() {
                                tracing::info!(endpoint = %ep.id, "endpoint changed: replacing its workers");
                                for w in pool.workers.values_mut() {
                                    w.draining = true;
                                }
                            }
                            pool.spec = spec;
                        }
                        self.scale(ep, pool, index, &env, artifact.as_deref())?;
                    }
                    Err(e) => {
                        tracing::error!(endpoint = %ep.id, error = %format!("{e:#}"), "reading endpoint spec")
                    }
                }
                for w in pool.workers.values() {
                    if let (Some(addr), false, false) = (w.listen, w.ready, w.draining) {
                        probes.push((w.id.clone(), addr));
                    }
                }
            }
            for (ep_id, pool) in pools.iter_mut() {
                self.reap_and_stop(ep_id, pool, index);
            }
            pools.retain(|id, p| !p.workers.is_empty() || endpoints.iter().any(|e| &e.id == id));
        }
        // LB readiness: GET /ping must answer 200.
        let checks = probes.into_iter().map(|(id, addr)| {
            let http = self.http.clone();
            async move {
                let ok = http
                    .get(format!("http://{addr}/ping"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == reqwest::StatusCode::OK);
                (id, ok)
            }
        });
        for (id, ok) in futures::future::join_all(checks).await {
            if ok {
                self.with_worker(&id, |w| {
                    if !w.ready {
                        tracing::info!(worker = %w.id, "LB worker ready");
                    }
                    w.ready = true;
                    w.idle_since = Instant::now();
                });
            }
        }
        Ok(())
    }

    fn scale(
        &self,
        ep: &Endpoint,
        pool: &mut Pool,
        index: &mut HashMap<String, String>,
        env: &[(String, String)],
        artifact: Option<&str>,
    ) -> Result<()> {
        let now = Instant::now();
        // Busy state.
        for w in pool.workers.values_mut() {
            w.busy = if w.listen.is_some() {
                w.inflight.load(Ordering::SeqCst) > 0
            } else {
                !self.store.worker_jobs(&w.id)?.is_empty()
            };
            if w.busy {
                w.idle_since = now;
            }
        }
        let active: Vec<&Worker> = pool.workers.values().filter(|w| !w.draining).collect();
        let n_active = active.len() as i64;
        let initializing = active.iter().filter(|w| !w.ready).count() as i64;
        let per = i64::from(ep.scaler_value.max(1));
        let want = if ep.is_lb() {
            let load: usize = active
                .iter()
                .map(|w| w.inflight.load(Ordering::SeqCst))
                .sum::<usize>()
                + pool.lb_demand;
            (load as i64 + per - 1) / per
        } else {
            let c = self.store.job_counts(&ep.id)?;
            let outstanding = c.in_queue + c.in_progress;
            if ep.scaler_type == "REQUEST_COUNT" {
                (outstanding + per - 1) / per
            } else if c.in_queue == 0 {
                0
            } else if n_active == 0 {
                1
            } else {
                let waited = c.oldest_queued_at.map_or(0, |t| now_ms() - t);
                if initializing == 0 && waited >= per * 1000 {
                    (n_active + 1).min(outstanding)
                } else {
                    n_active
                }
            }
        };
        let target = want.clamp(
            i64::from(ep.workers_min),
            i64::from(ep.workers_max.max(ep.workers_min)),
        );
        // An endpoint of a Flash environment serves that environment's active build: until
        // one is activated (the first `flash deploy send`) there is nothing to boot.
        let target = if ep.flash_environment_id.is_some() && artifact.is_none() {
            0
        } else {
            target
        };
        if n_active < target && !self.stopping.load(Ordering::SeqCst) {
            if pool.next_spawn.is_some_and(|t| now < t) {
                return Ok(());
            }
            // After crashes, start one at a time.
            let n = if pool.crashes > 0 {
                1
            } else {
                target - n_active
            };
            for _ in 0..n {
                match self.spawn(ep, env, artifact) {
                    Ok(w) => {
                        index.insert(w.id.clone(), ep.id.clone());
                        pool.workers.insert(w.id.clone(), w);
                    }
                    Err(e) => {
                        pool.crashes += 1;
                        let delay = self.backoff(pool.crashes);
                        pool.next_spawn = Some(now + delay);
                        tracing::error!(endpoint = %ep.id, error = %format!("{e:#}"), retry_in = ?delay, "cannot start worker");
                        break;
                    }
                }
            }
        } else if n_active > target {
            let idle_for = Duration::from_secs(u64::try_from(ep.idle_timeout.max(0)).unwrap_or(60));
            let mut excess = n_active - target;
            let mut idle: Vec<(&String, Instant)> = pool
                .workers
                .iter()
                .filter(|(_, w)| {
                    !w.draining
                        && !w.busy
                        && w.ready
                        && now.duration_since(w.idle_since) >= idle_for
                })
                .map(|(id, w)| (id, w.idle_since))
                .collect();
            idle.sort_by_key(|(_, t)| *t);
            let ids: Vec<String> = idle.into_iter().map(|(id, _)| id.clone()).collect();
            for id in ids {
                if excess == 0 {
                    break;
                }
                if let Some(w) = pool.workers.get_mut(&id) {
                    tracing::info!(endpoint = %ep.id, worker = %id, "idle: scaling down");
                    w.draining = true;
                    excess -= 1;
                }
            }
            self.signals.jobs_available(&ep.id);
        }
        Ok(())
    }

    fn backoff(&self, crashes: u32) -> Duration {
        let ms = 500u64.saturating_mul(1u64 << crashes.saturating_sub(1).min(16));
        Duration::from_millis(ms).min(self.cfg.max_backoff)
    }

    /// Collects exited workers (requeueing their jobs) and stops drained ones.
    fn reap_and_stop(&self, ep_id: &str, pool: &mut Pool, index: &mut HashMap<String, String>) {
        let now = Instant::now();
        let mut exited = Vec::new();
        for (id, w) in pool.workers.iter_mut() {
            match w.child.try_wait() {
                Ok(Some(status)) => exited.push((id.clone(), status)),
                Ok(None) => {
                    if w.draining && !w.busy {
                        match w.terminated_at {
                            None => {
                                signal_group(w.pid, libc::SIGTERM);
                                w.terminated_at = Some(now);
                            }
                            Some(t) if now.duration_since(t) >= self.cfg.stop_grace => {
                                signal_group(w.pid, libc::SIGKILL);
                            }
                            Some(_) => {}
                        }
                    }
                }
                Err(e) => tracing::warn!(worker = %id, error = %e, "checking worker process"),
            }
        }
        for (id, status) in exited {
            let Some(w) = pool.workers.remove(&id) else {
                continue;
            };
            index.remove(&id);
            self.remove_worker_dir(&id);
            // Stop requests for a worker that is gone have no one left to read them.
            let _ = self.signals.take_stops(&id);
            // Leftovers of the worker (e.g. the SDK's heartbeat process) go with it.
            signal_group(w.pid, libc::SIGKILL);
            match self
                .store
                .requeue_worker(&id, now_ms(), self.cfg.max_retries)
            {
                Ok(r) => {
                    if !r.requeued.is_empty() {
                        tracing::warn!(worker = %id, jobs = ?r.requeued, "worker gone: jobs requeued");
                    }
                    if !r.failed.is_empty() {
                        self.signals.job_finished();
                    }
                }
                Err(e) => {
                    tracing::error!(worker = %id, error = %e, "requeueing jobs of an exited worker")
                }
            }
            self.signals.jobs_available(ep_id);
            let expected = w.draining || w.refresh || self.stopping.load(Ordering::SeqCst);
            if expected {
                tracing::info!(endpoint = ep_id, worker = %id, %status, "worker stopped");
                pool.crashes = 0;
            } else {
                if now.duration_since(w.spawned) > Duration::from_secs(30) {
                    pool.crashes = 0;
                }
                pool.crashes += 1;
                let delay = self.backoff(pool.crashes);
                pool.next_spawn = Some(now + delay);
                tracing::warn!(
                    endpoint = ep_id, worker = %id, %status, restart_in = ?delay, log = %w.log.display(),
                    "worker exited unexpectedly; see its log"
                );
            }
        }
    }

    /// Stops every worker: `SIGTERM`, then `SIGKILL` after the grace period. No orphans.
    pub async fn shutdown(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        let mut children: Vec<(i32, Child)> = {
            let mut inner = self.lock();
            inner.index.clear();
            inner
                .pools
                .drain()
                .flat_map(|(_, p)| p.workers.into_values())
                .map(|w| (w.pid, w.child))
                .collect()
        };
        for (pid, _) in &children {
            signal_group(*pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + self.cfg.stop_grace;
        while Instant::now() < deadline {
            children.retain_mut(|(_, c)| !matches!(c.try_wait(), Ok(Some(_))));
            if children.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for (pid, child) in &mut children {
            signal_group(*pid, libc::SIGKILL);
            let _ = child.wait().await;
        }
        self.sweep_worker_dirs();
        tracing::info!("all workers stopped");
    }

    /// Kills processes left by an earlier server on the same data dir: the workers of a
    /// server killed with `SIGKILL` die with it (parent-death signal), but their own children
    /// (e.g. the runpod SDK's heartbeat process) do not. They carry [`HOME_MARKER_ENV`].
    /// Returns how many were killed. Linux only (reads `/proc`); a no-op elsewhere.
    pub fn sweep_strays(&self) -> usize {
        let marker = format!("{HOME_MARKER_ENV}={}", self.cfg.home.display());
        let own = std::process::id();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return 0;
        };
        let mut killed = 0;
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<i32>().ok())
            else {
                continue;
            };
            if pid as u32 == own {
                continue;
            }
            let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
                continue;
            };
            if environ.split(|b| *b == 0).any(|kv| kv == marker.as_bytes()) {
                // SAFETY: kill(2) on a process that carries our marker; no memory involved.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
                killed += 1;
            }
        }
        if killed > 0 {
            tracing::warn!(killed, "killed stray worker processes of a previous server");
        }
        killed
    }

    /// The log file of a worker (for messages and tests).
    pub fn log_path(&self, endpoint_id: &str, worker_id: &str) -> PathBuf {
        Path::new(&self.cfg.logs_dir)
            .join(endpoint_id)
            .join(format!("{worker_id}.log"))
    }
}
