//! Durability of the queue: a job accepted by `/run` completes even when its worker is
//! killed (process exit → requeue), hangs (missed heartbeats → lease expiry → requeue), or
//! the server itself is killed with `SIGKILL` (restart → requeue → complete). Real
//! processes throughout: runpod-python workers, and the `flash server` binary.

use crate::common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::TestServer;
use flash_tests::ChildGuard;
use serde_json::{Value, json};

async fn wait_for_file(path: &Path, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(text) = std::fs::read_to_string(path)
            && !text.trim().is_empty()
        {
            return text.trim().to_string();
        }
        assert!(
            Instant::now() < deadline,
            "{} not written within {timeout:?}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn signal(pid: i32, sig: i32) {
    // SAFETY: plain kill(2) on a pid/pgid this test owns.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// Live (non-zombie) processes whose environment contains `needle`.
fn processes_with_env(needle: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let zombie = std::fs::read_to_string(entry.path().join("stat"))
            .ok()
            .and_then(|s| {
                s.rsplit(')')
                    .next()
                    .map(|r| r.trim_start().starts_with('Z'))
            })
            .unwrap_or(true);
        if zombie {
            continue;
        }
        if let Ok(env) = std::fs::read(entry.path().join("environ"))
            && env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes())
        {
            out.push(pid);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_worker_mid_job_is_retried_and_completes() {
    let s = TestServer::start().await;
    let ep = s.python_endpoint("crashy", "echo", json!({})).await;
    let ep_id = ep["id"].as_str().expect("id").to_string();
    let pid_file = s.dir.path().join("worker.pid");
    let (_, job) = s
        .post(
            &format!("/v2/{ep_id}/run"),
            json!({ "input": { "sleep": 2, "pid_file": pid_file } }),
        )
        .await;
    let job_id = job["id"].as_str().expect("job id").to_string();
    let pid: i32 = wait_for_file(&pid_file, Duration::from_secs(60))
        .await
        .parse()
        .expect("pid");
    std::fs::remove_file(&pid_file).expect("rm pid file");
    let (_, running) = s.get(&format!("/v2/{ep_id}/status/{job_id}")).await;
    assert_eq!(running["status"], "IN_PROGRESS");
    signal(pid, libc::SIGKILL);

    let done = s.wait_final(&ep_id, &job_id, Duration::from_secs(90)).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert_eq!(done["retries"], 1, "{done}");
    assert_ne!(
        done["workerId"], running["workerId"],
        "a new worker finished it"
    );
    let (_, health) = s.get(&format!("/v2/{ep_id}/health")).await;
    assert_eq!(health["jobs"]["retried"], 1, "{health}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hung_worker_loses_its_lease_to_a_live_one() {
    let s = TestServer::start().await;
    let ep = s
        .python_endpoint("hangs", "echo", json!({ "workersMin": 2, "workersMax": 2 }))
        .await;
    let ep_id = ep["id"].as_str().expect("id").to_string();
    s.wait_health(&ep_id, Duration::from_secs(60), "2 ready workers", |h| {
        h["workers"]["ready"] == 2
    })
    .await;
    let pid_file = s.dir.path().join("worker.pid");
    let (_, job) = s
        .post(
            &format!("/v2/{ep_id}/run"),
            json!({ "input": { "sleep": 2, "pid_file": pid_file } }),
        )
        .await;
    let job_id = job["id"].as_str().expect("job id").to_string();
    let pid: i32 = wait_for_file(&pid_file, Duration::from_secs(60))
        .await
        .parse()
        .expect("pid");
    std::fs::remove_file(&pid_file).expect("rm pid file");
    let (_, running) = s.get(&format!("/v2/{ep_id}/status/{job_id}")).await;
    // Freeze the whole worker (its heartbeat process too): alive, but silent.
    signal(-pid, libc::SIGSTOP);
    let started = Instant::now();
    let done = s.wait_final(&ep_id, &job_id, Duration::from_secs(60)).await;
    // While it is frozen, not yet reaped (a reaped worker's stop requests are dropped), the
    // worker that lost the job is told to stop it, should it wake.
    let old_worker = running["workerId"].as_str().expect("worker id");
    let (code, stops) = s.get(&format!("/v2/{ep_id}/job-stop/{old_worker}")).await;
    signal(-pid, libc::SIGKILL);
    assert_eq!(code, 200, "{stops}");
    assert_eq!(stops["jobsToStop"], json!([job_id]));
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert_eq!(done["retries"], 1, "{done}");
    assert_ne!(done["workerId"], running["workerId"]);
    // The lease is 3 s: the job moved on well before the handler would have finished twice.
    assert!(started.elapsed() < Duration::from_secs(30));
    s.stop().await;
}

/// Whether the process leads its own process group (what the supervisor makes workers).
fn is_group_leader(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().nth(2))
                .and_then(|g| g.parse::<i32>().ok())
        })
        == Some(pid)
}

struct ServerProcess {
    _child: ChildGuard,
    pid: i32,
}

fn start_flash_server(dir: &Path, port: u16) -> ServerProcess {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("server.log"))
        .expect("log");
    let child = ChildGuard::spawn(
        Command::new(flash_tests::bin("flash"))
            .args(["server", "--data-dir"])
            .arg(dir.join("home"))
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--allow-worker-command-override",
            ])
            .args([
                "--take-hold",
                "2",
                "--lease",
                "3",
                "--ping-interval",
                "1000",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log),
    )
    .expect("spawn flash server");
    let pid = child.0.id() as i32;
    flash_tests::wait_for_http(
        &format!("http://127.0.0.1:{port}/ping"),
        Duration::from_secs(30),
    )
    .expect("server up");
    ServerProcess { _child: child, pid }
}

async fn start_server_async(dir: &Path, port: u16) -> ServerProcess {
    let dir = dir.to_path_buf();
    // The harness waits with a blocking HTTP client: keep it off the async workers.
    tokio::task::spawn_blocking(move || start_flash_server(&dir, port))
        .await
        .expect("start server")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_server_loses_no_job() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = flash_tests::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let server = start_server_async(dir.path(), port).await;
    let key = std::fs::read_to_string(dir.path().join("home/api_key"))
        .expect("api key")
        .trim()
        .to_string();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");

    let python = flash_tests::python().expect("venv");
    let worker = common::package_dir().join("tests/fixtures/worker.py");
    let save = json!({ "query": common::SAVE_ENDPOINT, "variables": { "input": {
        "name": "durable", "workersMin": 0, "workersMax": 2, "scalerType": "REQUEST_COUNT", "scalerValue": 1,
        "template": { "env": [
            { "key": "FLASH_WORKER_COMMAND", "value": json!([python, worker]).to_string() },
            { "key": "RUNPOD_SKIP_GPU_CHECK", "value": "true" },
            { "key": "RUNPOD_SKIP_AUTO_SYSTEM_CHECKS", "value": "true" } ] } } } });
    let resp: Value = http
        .post(format!("{url}/graphql"))
        .bearer_auth(&key)
        .json(&save)
        .send()
        .await
        .expect("save")
        .json()
        .await
        .expect("json");
    let ep_id = resp["data"]["saveEndpoint"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("saveEndpoint: {resp}"))
        .to_string();

    let mut jobs = Vec::new();
    for i in 0..8 {
        let r: Value = http
            .post(format!("{url}/v2/{ep_id}/run"))
            .bearer_auth(&key)
            .json(&json!({ "input": { "i": i, "sleep": 1 } }))
            .send()
            .await
            .expect("run")
            .json()
            .await
            .expect("json");
        jobs.push(r["id"].as_str().expect("job id").to_string());
    }
    // Kill the server while jobs run and others wait.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let h: Value = http
            .get(format!("{url}/v2/{ep_id}/health"))
            .bearer_auth(&key)
            .send()
            .await
            .expect("health")
            .json()
            .await
            .expect("json");
        if h["jobs"]["inProgress"].as_i64().unwrap_or(0) > 0 {
            assert!(
                h["jobs"]["inQueue"].as_i64().unwrap_or(0) > 0,
                "jobs should still be queued: {h}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "no job started: {h}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    signal(server.pid, libc::SIGKILL);
    drop(server);
    // Its workers (process-group leaders) die with it: parent-death signal. Their forked
    // children (the SDK's heartbeat process) are swept by the next server on this data dir.
    let marker = format!("RUNPOD_ENDPOINT_ID={ep_id}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while processes_with_env(&marker).into_iter().any(is_group_leader) {
        assert!(
            Instant::now() < deadline,
            "workers outlived the killed server"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let server = start_server_async(dir.path(), port).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    for job in &jobs {
        loop {
            let st: Value = http
                .get(format!("{url}/v2/{ep_id}/status/{job}"))
                .bearer_auth(&key)
                .send()
                .await
                .expect("status")
                .json()
                .await
                .expect("json");
            if st["status"] == "COMPLETED" {
                break;
            }
            assert!(
                !matches!(
                    st["status"].as_str(),
                    Some("FAILED" | "CANCELLED" | "TIMED_OUT")
                ),
                "{st}"
            );
            assert!(
                Instant::now() < deadline,
                "job {job} did not complete after the restart: {st}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // Graceful stop: SIGTERM, and no worker process of this data dir is left.
    signal(server.pid, libc::SIGTERM);
    let home_marker = format!(
        "FLASH_CONTROL_HOME={}",
        std::fs::canonicalize(dir.path().join("home"))
            .expect("home")
            .display()
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while !processes_with_env(&home_marker).is_empty() {
        assert!(
            Instant::now() < deadline,
            "worker processes left after shutdown: {:?}",
            processes_with_env(&home_marker)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(server);
}

/// The data dir holds the API key, the artifact-signing secret and every job's input and
/// output: it is the owner's alone (0700), its secrets and database files 0600, also when an
/// older server made them with looser modes, and SQLite's `-wal`/`-shm` files follow.
#[cfg(unix)]
#[tokio::test]
async fn the_data_dir_and_its_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let parent = tempfile::tempdir().unwrap();

    // A fresh data dir.
    let fresh = parent.path().join("fresh");
    let server = flash_control::Server::bind(common::test_config(fresh.clone()))
        .await
        .unwrap();
    // Opening the store created its tables: SQLite's WAL files exist now.
    assert_eq!(mode(&fresh), 0o700);
    for name in [
        "api_key",
        "url_secret",
        "flash.db",
        "flash.db-wal",
        "flash.db-shm",
    ] {
        assert_eq!(mode(&fresh.join(name)), 0o600, "{name}");
    }
    drop(server);

    // One an older server left world-readable is repaired.
    let old = parent.path().join("old");
    std::fs::create_dir(&old).unwrap();
    std::fs::write(old.join("api_key"), "fl_old").unwrap();
    std::fs::write(old.join("flash.db"), b"").unwrap();
    for path in [old.clone(), old.join("api_key"), old.join("flash.db")] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let server = flash_control::Server::bind(common::test_config(old.clone()))
        .await
        .unwrap();
    assert_eq!(mode(&old), 0o700);
    assert_eq!(mode(&old.join("api_key")), 0o600);
    assert_eq!(mode(&old.join("flash.db")), 0o600);
    assert_eq!(server.api_key(), "fl_old");
}

/// A finished job is kept for the retention window (RunPod keeps results about 30 minutes),
/// then deleted with its stream, so the queue's storage does not grow without bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn finished_jobs_are_forgotten_after_the_retention_window() {
    let s = TestServer::start_with(|c| c.job_retention = Duration::from_secs(3)).await;
    let ep = s.python_endpoint("kept", "echo", json!({})).await;
    let ep_id = ep["id"].as_str().expect("id").to_string();
    let (_, done) = s
        .post(&format!("/v2/{ep_id}/run"), json!({ "input": { "n": 1 } }))
        .await;
    let job_id = done["id"].as_str().expect("job id").to_string();
    let finished = s.wait_final(&ep_id, &job_id, Duration::from_secs(60)).await;
    assert_eq!(finished["status"], "COMPLETED", "{finished}");
    // Still there right after it finished...
    let (code, _) = s.get(&format!("/v2/{ep_id}/status/{job_id}")).await;
    assert_eq!(code, 200);
    // ...and gone once the window has passed (bounded poll).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (code, body) = s.get(&format!("/v2/{ep_id}/status/{job_id}")).await;
        if code == 404 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "job still answered after the retention window: {code} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
