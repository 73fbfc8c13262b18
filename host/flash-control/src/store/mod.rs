//! Durable state of the control plane, behind two traits, one per concern.
//!
//! Everything the server must remember across restarts lives here, in two parts that
//! change for different reasons and are used by different modules:
//!
//! - [`DeployStore`]: what deploys write and the supervisor reads: apps, environments
//!   (with their deploy leases), uploaded artifacts, builds (with their manifests), pod
//!   templates and endpoints;
//! - [`JobQueue`]: the queue-based endpoints' jobs: enqueue, claim, leases, results,
//!   stream chunks, requeues, timeouts and retention.
//!
//! [`Store`] is both, for the one handle the server shares (`AppState`);
//! code that needs one concern takes that trait (`&dyn DeployStore`). The traits are
//! synchronous and every method is one short transaction, which maps directly onto SQLite
//! (the embedded default, [`sqlite::SqliteStore`], whose schema is versioned: see
//! [`sqlite::SCHEMA_VERSION`]) and onto a pooled PostgreSQL client later. Methods that must
//! be atomic read-modify-writes (claiming jobs, updating a manifest) are single trait
//! methods so no caller can split them.

pub mod sqlite;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

pub use sqlite::SqliteStore;

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The named record does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// A record with the same unique key already exists.
    #[error("{0} already exists")]
    Conflict(String),
    /// The request is well-formed but not acceptable.
    #[error("{0}")]
    Invalid(String),
    /// The backend failed (I/O, corruption, ...).
    #[error("store failure: {0:#}")]
    Backend(#[from] anyhow::Error),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A Flash app: a named group of environments and builds.
#[derive(Clone, Debug, PartialEq)]
pub struct App {
    pub id: String,
    pub name: String,
    pub created_at: i64,
}

/// An environment of an app (`production`, `staging`): points at its active build.
#[derive(Clone, Debug, PartialEq)]
pub struct Environment {
    pub id: String,
    pub app_id: String,
    pub name: String,
    pub active_build_id: Option<String>,
    pub created_at: i64,
}

/// An environment's deploy lease: while it lasts, only requests that carry `token` may
/// change the environment's endpoints or active build (see [`crate::graphql`]). Whoever
/// deploys takes it, renews it while it works and releases it at the end; a holder that
/// dies stops renewing, and the lease ends at `expires_at`.
#[derive(Clone, Debug, PartialEq)]
pub struct EnvironmentLease {
    pub environment_id: String,
    /// The holder's own random token (never shown to anyone else).
    pub token: String,
    /// Who holds it, as the holder described itself (`flash deploy send` on host …).
    pub holder: String,
    pub acquired_at: i64,
    pub expires_at: i64,
}

/// A build: an uploaded artifact plus the manifest describing it.
#[derive(Clone, Debug, PartialEq)]
pub struct Build {
    pub id: String,
    pub app_id: String,
    pub object_key: String,
    pub manifest: Value,
    pub created_at: i64,
}

/// An artifact slot: reserved by `prepareFlashArtifactUpload`, filled by the upload PUT.
#[derive(Clone, Debug, PartialEq)]
pub struct Artifact {
    pub object_key: String,
    pub app_id: String,
    /// The size announced when the upload was prepared: the upload may not exceed it.
    pub declared_size: i64,
    /// Set once the upload completed.
    pub sha256: Option<String>,
    pub size: Option<i64>,
    pub created_at: i64,
}

/// One `KEY=value` pair of a template's environment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EnvVar {
    pub key: String,
    pub value: String,
}

/// A pod template: the worker image settings and, above all, the worker environment.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Template {
    pub id: String,
    pub name: Option<String>,
    pub image_name: Option<String>,
    pub container_disk_in_gb: Option<i32>,
    pub docker_args: Option<String>,
    pub env: Vec<EnvVar>,
    pub readme: Option<String>,
}

impl Template {
    /// The value of one environment entry.
    pub fn env_value(&self, key: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|e| e.key == key)
            .map(|e| e.value.as_str())
    }
}

/// A serverless endpoint as saved by `saveEndpoint` (field names as RunPod's API spells them).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    pub id: String,
    pub name: String,
    /// `QB` (queue based) or `LB` (load balanced).
    #[serde(rename = "type")]
    pub kind: String,
    pub ai_key: String,
    pub version: i32,
    pub template_id: Option<String>,
    pub gpu_ids: Option<String>,
    pub gpu_count: Option<i32>,
    pub allowed_cuda_versions: Option<String>,
    pub min_cuda_version: Option<String>,
    pub instance_ids: Option<Vec<String>>,
    pub locations: Option<String>,
    pub idle_timeout: i32,
    pub execution_timeout_ms: i64,
    pub scaler_type: String,
    pub scaler_value: i32,
    pub workers_min: i32,
    pub workers_max: i32,
    #[serde(rename = "workersPFBTarget")]
    pub workers_pfb_target: i32,
    pub network_volume_id: Option<String>,
    pub network_volume_ids: Vec<String>,
    pub flash_environment_id: Option<String>,
    pub flash_boot_type: Option<String>,
}

impl Endpoint {
    /// Whether this is a load-balanced endpoint (HTTP proxied to workers, no queue).
    pub fn is_lb(&self) -> bool {
        self.kind.eq_ignore_ascii_case("LB")
    }
}

/// Job states of the queue API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobStatus {
    InQueue,
    InProgress,
    Completed,
    Failed,
    Cancelled,
    TimedOut,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::InQueue => "IN_QUEUE",
            JobStatus::InProgress => "IN_PROGRESS",
            JobStatus::Completed => "COMPLETED",
            JobStatus::Failed => "FAILED",
            JobStatus::Cancelled => "CANCELLED",
            JobStatus::TimedOut => "TIMED_OUT",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "IN_QUEUE" => JobStatus::InQueue,
            "IN_PROGRESS" => JobStatus::InProgress,
            "COMPLETED" => JobStatus::Completed,
            "FAILED" => JobStatus::Failed,
            "CANCELLED" => JobStatus::Cancelled,
            "TIMED_OUT" => JobStatus::TimedOut,
            _ => return None,
        })
    }

    /// No further transition is possible.
    pub fn is_terminal(self) -> bool {
        !matches!(self, JobStatus::InQueue | JobStatus::InProgress)
    }
}

/// A queued job and everything the status API reports about it.
#[derive(Clone, Debug)]
pub struct Job {
    pub id: String,
    pub endpoint_id: String,
    /// The request body as submitted (`{"input": …, "webhook"?: …}`), as JSON text: the
    /// gateway stores it and hands it to a worker (with `id` added) without ever building a
    /// value of it, which for a payload of megabytes cost more than the store. Always an
    /// object; `null` where a store call says it leaves the request out.
    pub request: Box<RawValue>,
    pub webhook: Option<String>,
    pub status: JobStatus,
    pub worker_id: Option<String>,
    pub output: Option<Value>,
    pub error: Option<String>,
    /// How many times the job was handed out again after its worker was lost.
    pub retries: i32,
    /// Execution time limit in ms (0: none).
    pub timeout_ms: i64,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub completed_at: Option<i64>,
    pub lease_expires_at: Option<i64>,
}

/// The final (or progress) result a worker posts for a job.
#[derive(Clone, Debug, PartialEq)]
pub enum JobOutcome {
    /// `{"status":"IN_PROGRESS","output":p}`: progress, the job keeps running.
    Progress(Value),
    Completed(Option<Value>),
    Failed {
        error: String,
        output: Option<Value>,
    },
}

/// Per-endpoint job counters for `/health` and the scaler.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct JobCounts {
    pub in_queue: i64,
    pub in_progress: i64,
    pub completed: i64,
    pub failed: i64,
    pub retried: i64,
    /// Creation time of the oldest queued job.
    pub oldest_queued_at: Option<i64>,
}

/// An endpoint's live queue, what the scaler and the metrics read on every pass: unlike
/// [`JobCounts`] it never counts finished jobs, so its cost does not grow with the history
/// the retention window keeps.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct QueueDepth {
    pub in_queue: i64,
    pub in_progress: i64,
    /// Creation time of the oldest queued job.
    pub oldest_queued_at: Option<i64>,
}

/// What became of a pushed stream chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkPush {
    Stored,
    /// The job is not running on this worker (finished, cancelled, requeued elsewhere).
    NotRunning,
    /// The job already holds the most chunks a job may stream.
    Full,
}

/// What happened to jobs whose worker vanished.
#[derive(Clone, Debug, Default)]
pub struct Requeued {
    /// Put back in the queue (retry count incremented).
    pub requeued: Vec<String>,
    /// Out of retries: marked `FAILED`.
    pub failed: Vec<Job>,
    /// (worker, job) for every job above: the worker that held it, which is told to stop
    /// it should it come back.
    pub lost: Vec<(String, String)>,
}

/// Everything the server stores: deploy state and the job queue. See the module docs.
pub trait Store: DeployStore + JobQueue {}

impl<T: DeployStore + JobQueue + ?Sized> Store for T {}

/// Deploy state: apps, environments and their leases, artifacts, builds, templates and
/// endpoints. See the module docs.
pub trait DeployStore: Send + Sync + 'static {
    // Apps.
    fn create_app(&self, name: &str) -> StoreResult<App>;
    fn get_app(&self, id: &str) -> StoreResult<Option<App>>;
    fn get_app_by_name(&self, name: &str) -> StoreResult<Option<App>>;
    fn list_apps(&self) -> StoreResult<Vec<App>>;
    /// Deletes the app with its environments, builds and artifact records.
    fn delete_app(&self, id: &str) -> StoreResult<bool>;

    // Environments.
    fn create_environment(&self, app_id: &str, name: &str) -> StoreResult<Environment>;
    fn get_environment(&self, id: &str) -> StoreResult<Option<Environment>>;
    fn get_environment_by_name(&self, app_id: &str, name: &str)
    -> StoreResult<Option<Environment>>;
    fn list_environments(&self, app_id: &str) -> StoreResult<Vec<Environment>>;
    fn delete_environment(&self, id: &str) -> StoreResult<bool>;
    /// Points the environment at a build of the same app.
    fn set_active_build(&self, env_id: &str, build_id: &str) -> StoreResult<Environment>;

    // Environment leases (one atomic transaction each).
    /// Gives the environment's lease to `token` until `expires_at`, unless another token
    /// holds one that has not expired at `now` (the same token extends its own). Returns
    /// whether it was granted, and the lease as it is afterwards.
    fn acquire_lease(
        &self,
        env_id: &str,
        token: &str,
        holder: &str,
        now: i64,
        expires_at: i64,
    ) -> StoreResult<(bool, EnvironmentLease)>;
    /// Extends the lease `token` holds until `expires_at`, even past its expiry as long as
    /// nobody took it since. Returns whether it did, and the environment's lease afterwards
    /// (`None`: there is none).
    fn renew_lease(
        &self,
        env_id: &str,
        token: &str,
        expires_at: i64,
    ) -> StoreResult<(bool, Option<EnvironmentLease>)>;
    /// Ends the lease `token` holds; `false` when it holds none.
    fn release_lease(&self, env_id: &str, token: &str) -> StoreResult<bool>;
    /// The environment's lease unless it has expired at `now`.
    fn active_lease(&self, env_id: &str, now: i64) -> StoreResult<Option<EnvironmentLease>>;

    // Artifacts and builds.
    fn create_artifact(&self, artifact: &Artifact) -> StoreResult<()>;
    fn get_artifact(&self, object_key: &str) -> StoreResult<Option<Artifact>>;
    /// Records a completed upload. Fails if it was already uploaded.
    fn record_upload(&self, object_key: &str, sha256: &str, size: i64) -> StoreResult<()>;
    fn create_build(&self, app_id: &str, object_key: &str, manifest: &Value) -> StoreResult<Build>;
    fn get_build(&self, id: &str) -> StoreResult<Option<Build>>;
    fn list_builds(&self, app_id: &str) -> StoreResult<Vec<Build>>;
    /// Atomically replaces a build's manifest with `update(current)`.
    fn update_manifest(
        &self,
        build_id: &str,
        update: &mut dyn FnMut(&Value) -> StoreResult<Value>,
    ) -> StoreResult<Build>;

    // Templates and endpoints.
    fn save_template(&self, template: &Template) -> StoreResult<()>;
    fn get_template(&self, id: &str) -> StoreResult<Option<Template>>;
    fn save_endpoint(&self, endpoint: &Endpoint) -> StoreResult<()>;
    fn get_endpoint(&self, id: &str) -> StoreResult<Option<Endpoint>>;
    fn list_endpoints(&self) -> StoreResult<Vec<Endpoint>>;
    fn delete_endpoint(&self, id: &str) -> StoreResult<bool>;
}

/// The job queue of queue-based endpoints. See the module docs.
pub trait JobQueue: Send + Sync + 'static {
    fn enqueue_job(&self, job: &Job) -> StoreResult<()>;
    fn get_job(&self, id: &str) -> StoreResult<Option<Job>>;
    /// A job without its request (left `null`): what the status API answers, without reading
    /// an input that may be megabytes.
    fn job_result(&self, id: &str) -> StoreResult<Option<Job>> {
        self.get_job(id)
    }
    /// A job's status alone: what a waiter polls, without reading (and parsing) the
    /// job's input and output, which may be megabytes.
    fn job_status(&self, id: &str) -> StoreResult<Option<JobStatus>> {
        Ok(self.get_job(id)?.map(|j| j.status))
    }
    /// The endpoint's last `limit` jobs, newest first, whatever their status (finished ones
    /// until the retention window deletes them).
    fn recent_jobs(&self, endpoint_id: &str, limit: usize) -> StoreResult<Vec<Job>>;
    /// Hands up to `max` queued jobs of the endpoint (oldest first) to `worker_id`, leased
    /// until `lease_until`.
    fn claim_jobs(
        &self,
        endpoint_id: &str,
        worker_id: &str,
        max: usize,
        now: i64,
        lease_until: i64,
    ) -> StoreResult<Vec<Job>>;
    /// Applies a worker's result. Returns the updated job without its request (`null`), or
    /// `None` when the job is not (any more) running on this worker: cancelled, timed out or
    /// handed to another worker.
    fn finish_job(
        &self,
        job_id: &str,
        worker_id: &str,
        outcome: &JobOutcome,
        now: i64,
    ) -> StoreResult<Option<Job>>;
    /// Extends the leases of the listed jobs that are running on `worker_id`.
    fn extend_leases(&self, worker_id: &str, job_ids: &[String], until: i64) -> StoreResult<()>;
    /// Puts running jobs whose lease expired back in the queue.
    fn requeue_expired(&self, now: i64, max_retries: i32) -> StoreResult<Requeued>;
    /// Puts the running jobs of a worker (which is gone) back in the queue.
    fn requeue_worker(&self, worker_id: &str, now: i64, max_retries: i32) -> StoreResult<Requeued>;
    /// Puts every running job back in the queue (on start-up: no worker survived).
    fn requeue_all_running(&self, now: i64, max_retries: i32) -> StoreResult<Requeued>;
    /// Marks running jobs past their execution timeout `TIMED_OUT` and returns them.
    fn time_out_jobs(&self, now: i64) -> StoreResult<Vec<Job>>;
    /// Cancels a job that is not final yet; returns the job as it is afterwards.
    fn cancel_job(&self, id: &str, now: i64) -> StoreResult<Option<Job>>;
    /// Cancels every queued job of the endpoint; returns how many.
    fn purge_queue(&self, endpoint_id: &str, now: i64) -> StoreResult<usize>;
    fn job_counts(&self, endpoint_id: &str) -> StoreResult<JobCounts>;
    /// The queued and running jobs of the endpoint, without the finished ones (the
    /// supervisor asks on every reconcile pass). The default derives it from
    /// [`JobQueue::job_counts`]; a backend with an index on the status does better.
    fn queue_depth(&self, endpoint_id: &str) -> StoreResult<QueueDepth> {
        let c = self.job_counts(endpoint_id)?;
        Ok(QueueDepth {
            in_queue: c.in_queue,
            in_progress: c.in_progress,
            oldest_queued_at: c.oldest_queued_at,
        })
    }
    /// Jobs waiting in the endpoint's queue, counted on the queue index alone (every
    /// submit asks).
    fn queued_count(&self, endpoint_id: &str) -> StoreResult<i64>;
    /// Deletes finished jobs (and their stream chunks) that finished before `cutoff`, at
    /// most `limit` of them; returns how many.
    fn delete_finished_before(&self, cutoff: i64, limit: usize) -> StoreResult<usize>;
    /// Ids of the jobs running on a worker.
    fn worker_jobs(&self, worker_id: &str) -> StoreResult<Vec<String>>;
    /// Appends a stream chunk to a running job of this worker, unless it is not running there
    /// or already holds `max_chunks` chunks.
    fn push_chunk(
        &self,
        job_id: &str,
        worker_id: &str,
        chunk: &Value,
        max_chunks: i64,
    ) -> StoreResult<ChunkPush>;
    /// Returns the job and the chunks not yet returned by an earlier call (each chunk once).
    fn take_chunks(&self, job_id: &str) -> StoreResult<Option<(Job, Vec<Value>)>>;
}
