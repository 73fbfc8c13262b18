//! A real `flash server` for end-to-end tests, and the `flash` CLI run against it.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::ChildGuard;

/// A `flash server` on a free port with its own data dir.
pub struct Server {
    pub url: String,
    pub data_dir: tempfile::TempDir,
    pub child: ChildGuard,
}

impl Server {
    /// A server whose workers are the `flash-host` built next to `flash`.
    pub fn start() -> Self {
        Self::start_with(&[], &[])
    }

    /// A server with `envs` in its environment: the machine's settings its workers inherit
    /// (what a worker image's env would set, e.g. `ORT_DYLIB_PATH`).
    pub fn start_with_env(envs: &[(&str, &std::ffi::OsStr)]) -> Self {
        Self::start_with(&[], envs)
    }

    /// A server whose workers run `worker` (`--worker-command`), e.g. the `flash-host` of
    /// an image's extracted root filesystem.
    pub fn start_with_worker(worker: &Path) -> Self {
        Self::start_with(
            &[std::ffi::OsStr::new("--worker-command"), worker.as_os_str()],
            &[],
        )
    }

    fn start_with(args: &[&std::ffi::OsStr], envs: &[(&str, &std::ffi::OsStr)]) -> Self {
        let data_dir = tempfile::tempdir().unwrap();
        let port = crate::free_port();
        let url = format!("http://127.0.0.1:{port}");
        let log = std::fs::File::create(data_dir.path().join("server.log")).unwrap();
        let child = ChildGuard::spawn(
            Command::new(crate::bin("flash"))
                .args(["server", "--data-dir"])
                .arg(data_dir.path())
                .args(["--listen", &format!("127.0.0.1:{port}")])
                .args(args)
                .envs(envs.iter().copied())
                .env_remove("RUNPOD_API_KEY")
                .stdout(log.try_clone().unwrap())
                .stderr(log),
        )
        .unwrap();
        crate::wait_for_http(&format!("{url}/graphql"), Duration::from_secs(60)).unwrap();
        Self {
            url,
            data_dir,
            child,
        }
    }

    pub fn key(&self) -> String {
        std::fs::read_to_string(self.data_dir.path().join("api_key"))
            .unwrap()
            .trim()
            .to_string()
    }

    pub fn graphql(&self, query: &str, variables: Value) -> Value {
        let body: Value = reqwest::blocking::Client::new()
            .post(format!("{}/graphql", self.url))
            .bearer_auth(self.key())
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert!(body.get("errors").is_none(), "{body}");
        body["data"].clone()
    }

    /// `POST /graphql` with `key`: the HTTP status and the body.
    pub fn graphql_with_key(&self, key: &str, query: &str, variables: Value) -> (u16, Value) {
        let response = reqwest::blocking::Client::new()
            .post(format!("{}/graphql", self.url))
            .bearer_auth(key)
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().unwrap_or(Value::Null))
    }

    pub fn endpoint(&self, id: &str) -> Value {
        self.graphql(
            "query($id: String!) { myself { endpoint(id: $id) { id name workersMax version } } }",
            json!({ "id": id }),
        )["myself"]["endpoint"]
            .clone()
    }

    pub fn endpoint_count(&self) -> usize {
        self.graphql("{ myself { endpoints { id } } }", json!({}))["myself"]["endpoints"]
            .as_array()
            .unwrap()
            .len()
    }

    /// Worker processes the server has started and not yet reaped.
    pub fn child_pids(&self) -> Vec<u32> {
        let pid = self.child.0.id();
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return Vec::new();
        };
        tasks
            .flatten()
            .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
            .flat_map(|c| {
                c.split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    pub fn children(&self) -> usize {
        self.child_pids().len()
    }

    /// The value of `key` in the environment of process `pid`.
    pub fn env_of(pid: u32, key: &str) -> Option<String> {
        let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
        environ.split(|b| *b == 0).find_map(|entry| {
            let entry = String::from_utf8_lossy(entry);
            entry.strip_prefix(&format!("{key}=")).map(str::to_string)
        })
    }

    /// Worker processes whose environment has `key=value`.
    pub fn workers_with_env(&self, key: &str, value: &str) -> Vec<u32> {
        self.child_pids()
            .into_iter()
            .filter(|p| has_env(*p, key, value))
            .collect()
    }

    /// The mothership's `/reconciliation` report once a mothership process other than
    /// `not_pid` has finished reconciling (bounded wait).
    pub fn reconciliation(&self, mothership: &str, not_pid: Option<u64>) -> Value {
        let url = format!("{}/lb/{mothership}/reconciliation", self.url);
        let client = reqwest::blocking::Client::new();
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            if let Ok(resp) = client
                .get(&url)
                .bearer_auth(self.key())
                .timeout(Duration::from_secs(30))
                .send()
                && resp.status() == 200
                && let Ok(body) = resp.json::<Value>()
                && body["pid"].as_u64() != not_pid
            {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "no reconciliation report from the mothership at {url} within 180 s; server log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// Kills the mothership process (SIGKILL); the server's provisioner starts a new one,
    /// which reconciles again.
    pub fn kill_mothership(&self) {
        let pids = self.workers_with_env("FLASH_IS_MOTHERSHIP", "true");
        assert_eq!(pids.len(), 1, "expected one mothership process: {pids:?}");
        assert!(
            Command::new("kill")
                .args(["-KILL", &pids[0].to_string()])
                .status()
                .unwrap()
                .success()
        );
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir.path().join("server.log")).unwrap_or_default()
    }
}

/// Runs `flash` in `dir` against `server_url`, with the key of `flash_home` (if any).
pub fn flash(dir: &Path, server_url: &str, flash_home: &Path, args: &[&str]) -> Output {
    flash_env(dir, server_url, flash_home, args, &[])
}

pub fn flash_env(
    dir: &Path,
    server_url: &str,
    flash_home: &Path,
    args: &[&str],
    envs: &[(&str, &str)],
) -> Output {
    flash_command(dir, server_url, flash_home, args, envs)
        .output()
        .expect("running flash")
}

/// The `flash` command [`flash_env`] runs, for tests that talk to it while it runs.
pub fn flash_command(
    dir: &Path,
    server_url: &str,
    flash_home: &Path,
    args: &[&str],
    envs: &[(&str, &str)],
) -> Command {
    let mut cmd = Command::new(crate::bin("flash"));
    cmd.args(args)
        .current_dir(dir)
        .env("FLASH_SERVER_URL", server_url)
        .env("FLASH_HOME", flash_home)
        .env_remove("RUNPOD_API_KEY")
        // Guest builds must not wait on the lock the outer `cargo test` holds.
        .env("CARGO_TARGET_DIR", crate::guest_target_dir())
        .env_remove("SOURCE_DATE_EPOCH");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd
}

pub fn ok(out: &Output, server: Option<&Server>) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "flash failed:\n{stdout}\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.map(Server::log).unwrap_or_default()
    );
    stdout
}

pub fn fails(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "flash should have failed:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Whether process `pid`'s environment has `key=value`.
pub fn has_env(pid: u32, key: &str, value: &str) -> bool {
    let needle = format!("{key}={value}");
    std::fs::read(format!("/proc/{pid}/environ"))
        .is_ok_and(|env| env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()))
}
