//! The worker supervisor: makes saved endpoints real as worker processes, and scales them.
//!
//! (Not to be confused with flash-deploy's `provision`, which saves endpoints through the
//! State Manager: this module runs what was saved.) A reconcile loop (every `tick`, or at
//! once when [`Supervisor::kick`] is called after `saveEndpoint`, a new job, …) compares
//! each endpoint with its pool of worker processes:
//!
//! - **Spawn** ([`process`]): a worker is started with what RunPod gives a worker and nothing
//!   more, as its own process group that dies with the server.
//! - **Scale** ([`scaling`]): between `workersMin` and `workersMax`, by `QUEUE_DELAY` or
//!   `REQUEST_COUNT`. Workers idle for `idleTimeout` s beyond the target are drained (no new
//!   jobs), then stopped with `SIGTERM`, then `SIGKILL` after a grace period. An endpoint of
//!   a Flash environment gets no workers until the environment has an active build (they
//!   would have no artifact to boot).
//! - **Lease** ([`lease`]): load-balanced requests reserve a ready worker each.
//! - **Heal.** A worker that exits unexpectedly has its jobs requeued and is replaced after an
//!   exponential backoff. A changed endpoint, template or active build drains the old workers.
//! - **Report.** Worker states (initializing until the first take/ping, or for LB until
//!   `GET /ping` answers 200; then idle or running; unhealthy on a failed fitness ping) feed
//!   `/health`.

pub mod lease;
pub mod process;
pub mod scaling;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Result;
use tokio::process::Child;
use tokio::sync::Notify;

pub use lease::LbLease;
pub use process::{
    HOME_MARKER_ENV, LOCAL_ONLY_ENV, MACHINE_ENV, WORKER_COMMAND_ENV, default_worker_command,
};

use crate::artifacts::ArtifactStore;
use crate::auth::Auth;
use crate::endpoints::scaler_of;
use crate::metrics::{ScaleDirection, ServerMetrics};
use crate::signals::Signals;
use crate::store::{Endpoint, Store};
use crate::util::now_ms;
use process::{Launch, Process};
use scaling::{Active, Crashes, Demand, Policy, WorkerState};

/// Settings of the supervisor.
#[derive(Clone, Debug)]
pub struct SupervisorConfig {
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

/// A worker process and what the supervisor knows of it.
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
    /// Proxied requests in flight (load-balanced workers; see [`lease`]).
    inflight: Arc<AtomicUsize>,
    log: PathBuf,
}

impl Worker {
    fn new(p: Process) -> Self {
        Self {
            id: p.id,
            child: p.child,
            pid: p.pid,
            spawned: p.started,
            ready: false,
            healthy: true,
            busy: false,
            idle_since: p.started,
            draining: false,
            terminated_at: None,
            refresh: false,
            listen: p.listen,
            inflight: Arc::new(AtomicUsize::new(0)),
            log: p.log,
        }
    }

    fn state(&self) -> WorkerState<'_> {
        WorkerState {
            id: &self.id,
            ready: self.ready,
            busy: self.busy,
            draining: self.draining,
            idle_since: self.idle_since,
        }
    }
}

/// The workers of one endpoint.
#[derive(Default)]
struct Pool {
    workers: HashMap<String, Worker>,
    crashes: Crashes,
    /// The [`Spec`] fingerprint the workers were started with.
    spec: String,
    /// Load-balanced requests waiting for a ready worker.
    lb_demand: usize,
    /// Turn among equally busy load-balanced workers.
    rr: usize,
}

#[derive(Default)]
struct Inner {
    pools: HashMap<String, Pool>,
    /// worker id → endpoint id.
    index: HashMap<String, String>,
}

/// See the module docs.
pub struct Supervisor {
    cfg: SupervisorConfig,
    store: Arc<dyn Store>,
    signals: Arc<Signals>,
    artifacts: Arc<ArtifactStore>,
    inner: Mutex<Inner>,
    kick: Notify,
    stopping: AtomicBool,
    http: reqwest::Client,
    /// Derives the keys workers hold ([`Auth::worker_api_key`]).
    auth: Auth,
    /// Scale events and jobs failed for lost workers are counted here.
    metrics: Arc<ServerMetrics>,
}

/// What a worker of an endpoint is started with; a changed fingerprint replaces workers.
struct Spec {
    fingerprint: String,
    env: Vec<(String, String)>,
    artifact_key: Option<String>,
}

impl Supervisor {
    pub fn new(
        cfg: SupervisorConfig,
        store: Arc<dyn Store>,
        signals: Arc<Signals>,
        artifacts: Arc<ArtifactStore>,
        auth: Auth,
        metrics: Arc<ServerMetrics>,
    ) -> Self {
        Self {
            cfg,
            store,
            auth,
            metrics,
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

    /// Removes what workers of an earlier run left (a server killed with `SIGKILL` cannot
    /// clean up after its workers). Returns how many worker directories were removed.
    pub fn sweep_worker_dirs(&self) -> usize {
        process::sweep_worker_dirs(&self.cfg)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks for a reconcile pass now.
    /// Where workers' logs are written: `<this>/<endpoint>/<worker>.log`.
    pub fn logs_dir(&self) -> &std::path::Path {
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

    /// A job of the worker ended. A worker waiting to stop (draining, or replaced at its own
    /// request) is seen to at once; for the others the next tick is soon enough: a reconcile
    /// pass per finished job was a tenth of the gateway's CPU at 2,000 jobs/s.
    pub fn job_done(&self, _endpoint_id: &str, worker_id: &str) {
        let waiting_to_stop = self.with_worker(worker_id, |w| {
            w.idle_since = Instant::now();
            w.draining || w.refresh
        });
        if waiting_to_stop == Some(true) {
            self.kick();
        }
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

    /// The ids of every worker process this supervisor runs.
    pub fn live_workers(&self) -> std::collections::HashSet<String> {
        self.lock().index.keys().cloned().collect()
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

    /// The reconcile loop; returns once [`Supervisor::shutdown`] began.
    pub async fn run(self: Arc<Self>) {
        let mut shutdown = self.signals.shutdown();
        loop {
            if let Err(e) = self.reconcile().await {
                tracing::error!(error = %format!("{e:#}"), "supervisor pass failed");
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

    /// Measures an endpoint's demand and pool, asks [`scaling`] what to do, and does it.
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
        let n_active = active.len();
        let counts = Active {
            workers: n_active,
            initializing: active.iter().filter(|w| !w.ready).count(),
        };
        let demand = if ep.is_lb() {
            Demand::Requests {
                in_flight: active
                    .iter()
                    .map(|w| w.inflight.load(Ordering::SeqCst) as u64)
                    .sum(),
                waiting: pool.lb_demand as u64,
            }
        } else {
            let c = self.store.queue_depth(&ep.id)?;
            let count = |n: i64| u64::try_from(n).unwrap_or(0);
            Demand::Queue {
                queued: count(c.in_queue),
                running: count(c.in_progress),
                oldest_wait: Duration::from_millis(
                    c.oldest_queued_at.map_or(0, |t| count(now_ms() - t)),
                ),
            }
        };
        let non_negative = |n: i32| u32::try_from(n).unwrap_or(0);
        let policy = Policy {
            scaler: scaler_of(ep),
            scaler_value: non_negative(ep.scaler_value),
            workers_min: non_negative(ep.workers_min),
            workers_max: non_negative(ep.workers_max),
            // An endpoint of a Flash environment serves that environment's active build:
            // until one is activated (the first `flash deploy send`) there is nothing to boot.
            bootable: ep.flash_environment_id.is_none() || artifact.is_some(),
        };
        let target = scaling::target(&policy, &demand, counts);
        if n_active < target && !self.stopping.load(Ordering::SeqCst) {
            let n = scaling::starts(target, n_active, pool.crashes, now);
            let before = pool.workers.len();
            for _ in 0..n {
                let launch = Launch {
                    endpoint: ep,
                    env,
                    artifact: artifact.map(|key| self.artifacts.local_path(key)),
                };
                match process::spawn(&self.cfg, launch) {
                    Ok(p) => {
                        let w = Worker::new(p);
                        index.insert(w.id.clone(), ep.id.clone());
                        pool.workers.insert(w.id.clone(), w);
                    }
                    Err(e) => {
                        pool.crashes.count += 1;
                        let delay = scaling::backoff(pool.crashes.count, self.cfg.max_backoff);
                        pool.crashes.next_start = Some(now + delay);
                        tracing::error!(endpoint = %ep.id, error = %format!("{e:#}"), retry_in = ?delay, "cannot start worker");
                        break;
                    }
                }
            }
            let started = pool.workers.len() - before;
            if started > 0 {
                self.metrics.scaled(&ep.id, ScaleDirection::Up, started);
            }
        } else if n_active > target {
            let idle_timeout =
                Duration::from_secs(u64::try_from(ep.idle_timeout.max(0)).unwrap_or(60));
            let drain: Vec<String> = scaling::idle_to_drain(
                pool.workers.values().map(Worker::state),
                n_active - target,
                idle_timeout,
                now,
            )
            .into_iter()
            .map(str::to_string)
            .collect();
            if !drain.is_empty() {
                self.metrics
                    .scaled(&ep.id, ScaleDirection::Down, drain.len());
            }
            for id in drain {
                if let Some(w) = pool.workers.get_mut(&id) {
                    tracing::info!(endpoint = %ep.id, worker = %id, "idle: scaling down");
                    w.draining = true;
                }
            }
            self.signals.jobs_available(&ep.id);
        }
        Ok(())
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
                                process::signal_group(w.pid, libc::SIGTERM);
                                w.terminated_at = Some(now);
                            }
                            Some(t) if now.duration_since(t) >= self.cfg.stop_grace => {
                                process::signal_group(w.pid, libc::SIGKILL);
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
            process::remove_worker_dir(&self.cfg, &id);
            // Stop requests for a worker that is gone have no one left to read them.
            let _ = self.signals.take_stops(&id);
            // Leftovers of the worker (e.g. the SDK's heartbeat process) go with it.
            process::signal_group(w.pid, libc::SIGKILL);
            match self
                .store
                .requeue_worker(&id, now_ms(), self.cfg.max_retries)
            {
                Ok(r) => {
                    if !r.requeued.is_empty() {
                        tracing::warn!(worker = %id, jobs = ?r.requeued, "worker gone: jobs requeued");
                    }
                    for job in &r.failed {
                        self.metrics.job_finished(job);
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
                pool.crashes.count = 0;
            } else {
                if now.duration_since(w.spawned) > Duration::from_secs(30) {
                    pool.crashes.count = 0;
                }
                pool.crashes.count += 1;
                let delay = scaling::backoff(pool.crashes.count, self.cfg.max_backoff);
                pool.crashes.next_start = Some(now + delay);
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
        let children: Vec<(i32, Child)> = {
            let mut inner = self.lock();
            inner.index.clear();
            inner
                .pools
                .drain()
                .flat_map(|(_, p)| p.workers.into_values())
                .map(|w| (w.pid, w.child))
                .collect()
        };
        process::stop_all(children, self.cfg.stop_grace).await;
        self.sweep_worker_dirs();
        tracing::info!("all workers stopped");
    }

    /// Kills processes left by an earlier server on the same data dir: the workers of a
    /// server killed with `SIGKILL` die with it (parent-death signal), but their own children
    /// (e.g. the runpod SDK's heartbeat process) do not. They carry [`HOME_MARKER_ENV`].
    /// Returns how many were killed. Linux only (reads `/proc`); a no-op elsewhere.
    pub fn sweep_strays(&self) -> usize {
        let killed = process::sweep_strays(&self.cfg.home);
        if killed > 0 {
            tracing::warn!(killed, "killed stray worker processes of a previous server");
        }
        killed
    }

    /// The log file of a worker (for messages and tests).
    pub fn log_path(&self, endpoint_id: &str, worker_id: &str) -> PathBuf {
        process::log_path(&self.cfg, endpoint_id, worker_id)
    }
}
