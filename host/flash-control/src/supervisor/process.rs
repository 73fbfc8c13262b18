//! Worker processes: how one is started, what it is given, and how it is stopped.
//!
//! A worker is the worker command (`flash-host` by default) started with what RunPod gives a
//! worker and nothing more (reference §3.1, §5.6): the template env, the platform's
//! variables (job-take/done/stream/ping URL templates pointing at this server,
//! `RUNPOD_POD_ID`, `RUNPOD_ENDPOINT_ID`, the endpoint's `aiKey` as `RUNPOD_AI_API_KEY`,
//! `RUNPOD_PING_INTERVAL`) and the environment's active build as RunPod's artifact file. Only
//! what a shared machine cannot do as separate containers differs, each named in
//! [`LOCAL_ONLY_ENV`]. Output goes to `<data_dir>/logs/<endpoint>/<worker>.log`; each worker
//! unpacks into `<data_dir>/workers/<worker>/app`, removed when it exits and swept at start.
//! Each worker is its own process group and gets `SIGKILL` if the server dies (Linux
//! parent-death signal), so no worker outlives it; stopping is `SIGTERM` to the group, then
//! `SIGKILL` after a grace period.
//!
//! Nothing here knows about pools or scaling: the supervisor decides, this module acts.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::process::{Child, Command};

use super::SupervisorConfig;
use crate::store::Endpoint;

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

/// A started worker process.
#[derive(Debug)]
pub(super) struct Process {
    /// The worker id (`RUNPOD_POD_ID`).
    pub id: String,
    pub child: Child,
    pub pid: i32,
    pub started: Instant,
    /// The loopback address a load-balanced worker listens on.
    pub listen: Option<SocketAddr>,
    pub log: PathBuf,
}

/// What to start a worker of an endpoint with.
pub(super) struct Launch<'a> {
    pub endpoint: &'a Endpoint,
    /// The template env.
    pub env: &'a [(String, String)],
    /// The active build's artifact file, when the endpoint has one.
    pub artifact: Option<PathBuf>,
}

/// The argv of a worker: the template's override (when allowed), else the configured
/// command, else [`default_worker_command`].
pub(super) fn command_for(cfg: &SupervisorConfig, env: &[(String, String)]) -> Result<Vec<String>> {
    if let Some((_, value)) = env.iter().find(|(k, _)| k == WORKER_COMMAND_ENV) {
        if !cfg.allow_command_override {
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
    Ok(cfg
        .worker_command
        .clone()
        .unwrap_or_else(default_worker_command))
}

/// Where worker `id` unpacks its artifact.
fn app_dir(cfg: &SupervisorConfig, id: &str) -> PathBuf {
    cfg.workers_dir.join(id).join("app")
}

/// The log file of a worker.
pub(super) fn log_path(cfg: &SupervisorConfig, endpoint_id: &str, worker_id: &str) -> PathBuf {
    Path::new(&cfg.logs_dir)
        .join(endpoint_id)
        .join(format!("{worker_id}.log"))
}

fn free_local_addr() -> Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .context("finding a free port for an LB worker")?;
    Ok(listener.local_addr()?)
}

/// Starts one worker. See the module docs.
pub(super) fn spawn(cfg: &SupervisorConfig, launch: Launch<'_>) -> Result<Process> {
    let Launch {
        endpoint: ep,
        env,
        artifact,
    } = launch;
    let argv = command_for(cfg, env)?;
    let id = format!("w-{}", &uuid::Uuid::new_v4().simple().to_string()[..16]);
    let log_path = log_path(cfg, &ep.id, &id);
    if let Some(dir) = log_path.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating log dir {}", dir.display()))?;
    }
    // Append mode: when the log is rotated (emptied in place, crate::logs::upkeep), the
    // worker's next line goes to the start of the file, not past a hole.
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    let base = &cfg.base_url;
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
        if (key.starts_with("RUNPOD_") || key.starts_with("FLASH_") || key.starts_with("_FLASH_"))
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
    .env("RUNPOD_PING_INTERVAL", cfg.ping_interval_ms.to_string())
    .env(HOME_MARKER_ENV, &cfg.home)
    .env("RUNPOD_API_BASE_URL", base)
    .env("RUNPOD_ENDPOINT_BASE_URL", format!("{base}/v2"))
    .env("FLASH_APP_DIR", app_dir(cfg, &id));
    if let Some(path) = artifact {
        cmd.env("FLASH_BUILD_ARTIFACT_PATH", path);
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
    Ok(Process {
        id,
        child,
        pid,
        started: Instant::now(),
        listen,
        log: log_path,
    })
}

/// Signals a worker's whole process group (its children, e.g. the SDK's heartbeat process,
/// go with it).
pub(super) fn signal_group(pid: i32, signal: i32) {
    if pid > 0 {
        // SAFETY: kill(2) with a negative pid signals the process group we created for the
        // worker (process_group(0) makes its pgid equal its pid); no memory is involved.
        unsafe {
            libc::kill(-pid, signal);
        }
    }
}

/// Stops processes: `SIGTERM` to each group, `SIGKILL` to those still running after
/// `grace`, then waits for every one. No orphans.
pub(super) async fn stop_all(mut children: Vec<(i32, Child)>, grace: Duration) {
    for (pid, _) in &children {
        signal_group(*pid, libc::SIGTERM);
    }
    let deadline = Instant::now() + grace;
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
}

/// Removes the files of a worker that exited.
pub(super) fn remove_worker_dir(cfg: &SupervisorConfig, id: &str) {
    let dir = cfg.workers_dir.join(id);
    if let Err(e) = std::fs::remove_dir_all(&dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(dir = %dir.display(), error = %e, "removing a stopped worker's files");
    }
}

/// Removes every worker directory; returns how many.
pub(super) fn sweep_worker_dirs(cfg: &SupervisorConfig) -> usize {
    let Ok(entries) = std::fs::read_dir(&cfg.workers_dir) else {
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

/// Kills the processes that carry `home` as their [`HOME_MARKER_ENV`]; returns how many.
/// Linux only (reads `/proc`); a no-op elsewhere.
pub(super) fn sweep_strays(home: &Path) -> usize {
    let marker = format!("{HOME_MARKER_ENV}={}", home.display());
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
    killed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(allow: bool, command: Option<Vec<String>>) -> SupervisorConfig {
        SupervisorConfig {
            worker_command: command,
            allow_command_override: allow,
            logs_dir: "/logs".into(),
            base_url: "http://127.0.0.1:1".into(),
            ping_interval_ms: 1000,
            tick: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            stop_grace: Duration::from_secs(1),
            max_retries: 3,
            home: "/home".into(),
            workers_dir: "/workers".into(),
        }
    }

    #[test]
    fn a_template_command_needs_the_override_flag() {
        let env = vec![(
            WORKER_COMMAND_ENV.to_string(),
            r#"["sh","-c","true"]"#.to_string(),
        )];
        let err = command_for(&cfg(false, None), &env).expect_err("refused");
        assert!(
            err.to_string().contains("--allow-worker-command-override"),
            "{err}"
        );
        assert_eq!(
            command_for(&cfg(true, None), &env).expect("argv"),
            ["sh", "-c", "true"]
        );
        let empty = vec![(WORKER_COMMAND_ENV.to_string(), "[]".to_string())];
        assert!(command_for(&cfg(true, None), &empty).is_err());
        let configured = cfg(false, Some(vec!["my-host".into(), "--x".into()]));
        assert_eq!(
            command_for(&configured, &[]).expect("argv"),
            ["my-host", "--x"]
        );
        assert_eq!(
            log_path(&configured, "ep", "w-1"),
            Path::new("/logs/ep/w-1.log")
        );
    }
}
