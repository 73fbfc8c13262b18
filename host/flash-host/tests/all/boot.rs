//! Boot refuses bad artifacts and bad configuration with a clear message.

use std::io::Write;
use std::process::Command;
use std::time::Duration;

use crate::support::*;

fn run_host(env: &[(String, String)]) -> (bool, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_flash-host"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", std::env::var("HOME").unwrap_or_default());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.current_dir(std::env::temp_dir());
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn a_tampered_component_stops_the_boot() {
    let tmp = tempfile::tempdir().unwrap();
    // A manifest that pins other bytes than the component's: what a tampered component
    // looks like to the host.
    let artifact = rust_guest_artifact(tmp.path(), |m| {
        for c in m.components.values_mut() {
            c.sha256 = "0".repeat(64);
        }
        for r in m.resources.values_mut() {
            for f in &mut r.functions {
                f.component_sha256 = "0".repeat(64);
            }
        }
    })
    .await;
    let (ok, stderr) = run_host(&envs(&[
        ("FLASH_RESOURCE_NAME", "test_queue"),
        ("FLASH_ARTIFACT_URL", artifact.to_str().unwrap()),
    ]));
    assert!(!ok);
    assert!(stderr.contains("refusing to start"), "{stderr}");
    assert!(
        stderr.contains("sha256 mismatch: expected 0000"),
        "{stderr}"
    );
}

#[test]
fn an_artifact_with_parent_dir_entries_stops_the_boot() {
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("evil.tar.gz");
    let mut header = tar::Header::new_gnu();
    let name = b"../../escape.wasm";
    header.as_old_mut().name[..name.len()].copy_from_slice(name);
    header.set_size(4);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(&archive).unwrap(),
        flate2::Compression::default(),
    );
    gz.write_all(header.as_bytes()).unwrap();
    let mut data = [0u8; 512];
    data[..4].copy_from_slice(b"evil");
    gz.write_all(&data).unwrap();
    gz.write_all(&[0u8; 1024]).unwrap();
    gz.finish().unwrap();
    let (ok, stderr) = run_host(&envs(&[
        ("FLASH_RESOURCE_NAME", "x"),
        ("FLASH_ARTIFACT_URL", archive.to_str().unwrap()),
    ]));
    assert!(!ok);
    assert!(
        stderr.contains("refusing artifact entry `../../escape.wasm`: `..` is not allowed"),
        "{stderr}"
    );
}

#[tokio::test]
async fn an_unknown_resource_name_stops_the_boot() {
    let tmp = tempfile::tempdir().unwrap();
    let artifact = rust_guest_artifact(tmp.path(), |_| {}).await;
    let (ok, stderr) = run_host(&envs(&[
        ("FLASH_RESOURCE_NAME", "gpu_config"),
        ("FLASH_ARTIFACT_URL", artifact.to_str().unwrap()),
    ]));
    assert!(!ok);
    assert!(
        stderr.contains("FLASH_RESOURCE_NAME=`gpu_config` is not a resource config of app `testapp` (it has: test_lb, test_other, test_queue)"),
        "{stderr}"
    );
}

#[tokio::test]
async fn engine_settings_out_of_range_stop_the_boot() {
    let tmp = tempfile::tempdir().unwrap();
    let artifact = rust_guest_artifact(tmp.path(), |_| {}).await;
    for (value, expected) in [
        (
            "lots",
            "FLASH_KEEP_RESIDENT_KB=`lots` is not a valid number",
        ),
        (
            "1048576",
            "FLASH_KEEP_RESIDENT_KB=1048576 is more than an instance's memory cap (FLASH_MAX_MEMORY_MB=256)",
        ),
    ] {
        let (ok, stderr) = run_host(&envs(&[
            ("FLASH_RESOURCE_NAME", "test_queue"),
            ("FLASH_ARTIFACT_URL", artifact.to_str().unwrap()),
            ("FLASH_KEEP_RESIDENT_KB", value),
        ]));
        assert!(!ok);
        assert!(stderr.contains(expected), "{stderr}");
    }
    // In range (here: nothing kept resident), the same host runs a job.
    assert_eq!(
        one_job(
            &artifact,
            r#"{"function_name":"add","kwargs":{"a":1,"b":2}}"#,
            &[("FLASH_KEEP_RESIDENT_KB", "0")]
        ),
        serde_json::json!({"output": 3})
    );
}

/// Runs `flash-host --test-input input` on `artifact` with `env`; returns what it printed.
fn one_job(artifact: &std::path::Path, input: &str, env: &[(&str, &str)]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_flash-host"))
        .args([
            "--artifact",
            artifact.to_str().unwrap(),
            "--test-input",
            input,
        ])
        .env_remove("FLASH_RESOURCE_NAME")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    stdout_json(out)
}

#[tokio::test]
async fn test_input_runs_one_job_locally() {
    let tmp = tempfile::tempdir().unwrap();
    let artifact = rust_guest_artifact(tmp.path(), |_| {}).await;
    assert_eq!(
        one_job(
            &artifact,
            r#"{"function_name":"remote_add","kwargs":{"a":1,"b":2}}"#,
            &[]
        ),
        serde_json::json!({"output": 3})
    );
}

#[tokio::test]
async fn a_mothership_without_its_environment_says_what_it_needs() {
    let tmp = tempfile::tempdir().unwrap();
    let artifact = rust_guest_artifact(tmp.path(), |_| {}).await;
    let (ok, stderr) = run_host(&envs(&[
        ("FLASH_IS_MOTHERSHIP", "true"),
        ("FLASH_ARTIFACT_URL", artifact.to_str().unwrap()),
        ("RUNPOD_API_KEY", "k"),
    ]));
    assert!(!ok);
    assert!(
        stderr.contains(
            "FLASH_ENVIRONMENT_ID is not set: the mothership reconciles an environment through \
             the State Manager and needs FLASH_ENVIRONMENT_ID and RUNPOD_API_KEY \
             (RUNPOD_API_BASE_URL chooses the State Manager; RunPod's API when unset)"
        ),
        "{stderr}"
    );
}

/// Runs `flash-host --test-input input` with only `env` (no `--artifact`).
fn one_job_with_env(input: &str, env: &[(&str, &str)]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_flash-host"))
        .args(["--test-input", input])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn runpods_artifact_path_is_unpacked_into_the_app_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let artifact = rust_guest_artifact(tmp.path(), |_| {}).await;
    let app_dir = tmp.path().join("app");
    let env = [
        ("FLASH_BUILD_ARTIFACT_PATH", artifact.to_str().unwrap()),
        ("FLASH_APP_DIR", app_dir.to_str().unwrap()),
        ("RUNPOD_POD_ID", "worker-1"),
    ];
    let input = r#"{"function_name":"add","kwargs":{"a":2,"b":3}}"#;
    let (ok, stdout, stderr) = one_job_with_env(input, &env);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("\"output\": 5"), "{stdout}");
    assert!(app_dir.join("flash_manifest.json").is_file());

    // A restart replaces the previous boot's unpacked artifact.
    std::fs::write(app_dir.join("stale.txt"), "from the last boot").unwrap();
    let (ok, _, stderr) = one_job_with_env(input, &env);
    assert!(ok, "{stderr}");
    assert!(!app_dir.join("stale.txt").exists());

    // FLASH_DISABLE_UNPACK serves the app dir as it is, without the archive.
    let missing = tmp.path().join("gone.tar.gz");
    let (ok, stdout, stderr) = one_job_with_env(
        input,
        &[
            ("FLASH_BUILD_ARTIFACT_PATH", missing.to_str().unwrap()),
            ("FLASH_APP_DIR", app_dir.to_str().unwrap()),
            ("FLASH_DISABLE_UNPACK", "true"),
        ],
    );
    assert!(ok && stdout.contains("\"output\": 5"), "{stdout}{stderr}");

    // A directory with someone else's files is never unpacked over.
    let foreign = tmp.path().join("foreign");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("notes.txt"), "mine").unwrap();
    let (ok, _, stderr) = one_job_with_env(
        input,
        &[
            ("FLASH_BUILD_ARTIFACT_PATH", artifact.to_str().unwrap()),
            ("FLASH_APP_DIR", foreign.to_str().unwrap()),
        ],
    );
    assert!(!ok);
    assert!(
        stderr.contains("holds files that are not a Flash artifact"),
        "{stderr}"
    );
    assert!(foreign.join("notes.txt").is_file());
}

#[tokio::test]
async fn a_killed_hosts_unpacked_artifact_is_removed_by_the_next_host() {
    let tmp = tempfile::tempdir().unwrap();
    let artifact = rust_guest_artifact(tmp.path(), |_| {}).await;
    let temp_dir = tmp.path().join("tmp");
    std::fs::create_dir(&temp_dir).unwrap();
    let unpacked = || -> Vec<std::path::PathBuf> {
        std::fs::read_dir(&temp_dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("flash-host-")
            })
            .collect()
    };
    // A load-balanced host that stays up, then dies with SIGKILL (no chance to clean up).
    let port = flash_tests::free_port();
    let mut host = spawn_host(
        tmp.path(),
        "killed",
        &envs(&[
            ("FLASH_RESOURCE_NAME", "test_lb"),
            ("FLASH_ARTIFACT_URL", artifact.to_str().unwrap()),
            ("FLASH_LISTEN_ADDR", &format!("127.0.0.1:{port}")),
            ("FLASH_DISABLE_RP_AUTH", "true"),
            ("TMPDIR", temp_dir.to_str().unwrap()),
        ]),
    );
    let ping = format!("http://127.0.0.1:{port}/ping");
    tokio::task::spawn_blocking(move || flash_tests::wait_for_http(&ping, Duration::from_secs(30)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(unpacked().len(), 1, "the running host's artifact");
    host.0.kill().unwrap();
    host.0.wait().unwrap();
    assert_eq!(unpacked().len(), 1, "SIGKILL leaves the directory behind");

    // The next host on the machine removes it, and cleans up after itself.
    let out = Command::new(env!("CARGO_BIN_EXE_flash-host"))
        .args([
            "--artifact",
            artifact.to_str().unwrap(),
            "--test-input",
            r#"{"function_name":"add","kwargs":{"a":1,"b":2}}"#,
        ])
        .env_remove("FLASH_RESOURCE_NAME")
        .env("TMPDIR", &temp_dir)
        .output()
        .unwrap();
    assert_eq!(stdout_json(out), serde_json::json!({"output": 3}));
    assert!(unpacked().is_empty(), "{:?}", unpacked());
}

/// With its AOT cache warm, a host unpacks nothing but the manifest: the compiled code of
/// each component is found by the sha256 the manifest pins, so the component's bytes are
/// neither decompressed nor written.
#[tokio::test]
async fn a_warm_host_unpacks_only_the_manifest() {
    let tmp = tempfile::tempdir().unwrap();
    let artifact = rust_guest_artifact(tmp.path(), |_| {}).await;
    let app_dir = tmp.path().join("app");
    let cache = tmp.path().join("cache");
    let env = [
        ("FLASH_BUILD_ARTIFACT_PATH", artifact.to_str().unwrap()),
        ("FLASH_APP_DIR", app_dir.to_str().unwrap()),
        ("FLASH_CACHE_DIR", cache.to_str().unwrap()),
    ];
    let input = r#"{"function_name":"add","kwargs":{"a":2,"b":3}}"#;
    let components = |dir: &std::path::Path| -> Vec<String> {
        std::fs::read_dir(dir.join("components"))
            .map(|entries| {
                entries
                    .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };

    let (ok, stdout, stderr) = one_job_with_env(input, &env);
    assert!(ok && stdout.contains("\"output\": 5"), "{stdout}{stderr}");
    assert!(
        !components(&app_dir).is_empty(),
        "a cold host unpacks its components"
    );

    let (ok, stdout, stderr) = one_job_with_env(input, &env);
    assert!(ok && stdout.contains("\"output\": 5"), "{stdout}{stderr}");
    assert!(app_dir.join("flash_manifest.json").is_file());
    assert_eq!(components(&app_dir), Vec::<String>::new(), "{stderr}");

    // An unusable cache entry is not trusted blindly: the host unpacks and compiles again.
    for entry in std::fs::read_dir(cache.join("aot")).unwrap() {
        std::fs::write(entry.unwrap().path(), b"not a compiled component").unwrap();
    }
    let (ok, stdout, stderr) = one_job_with_env(input, &env);
    assert!(ok && stdout.contains("\"output\": 5"), "{stdout}{stderr}");
    assert!(
        stderr.contains("ignoring unusable AOT cache entry"),
        "{stderr}"
    );
    assert!(!components(&app_dir).is_empty());
}

/// Answers one HTTP request on a loopback port with `head` and `body`, from a thread that
/// returns the request head it read.
fn answer_once(head: String, body: Vec<u8>) -> (String, std::thread::JoinHandle<String>) {
    use std::io::{BufRead, BufReader};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/artifact.tar.gz", listener.local_addr().unwrap());
    let server = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut request = String::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
                break;
            }
            request.push_str(&line);
        }
        stream.write_all(head.as_bytes()).unwrap();
        let _ = stream.write_all(&body);
        request
    });
    (url, server)
}

#[tokio::test]
async fn an_artifact_url_is_downloaded_with_the_key_and_a_short_body_stops_the_boot() {
    let tmp = tempfile::tempdir().unwrap();
    let artifact = rust_guest_artifact(tmp.path(), |_| {}).await;
    let bytes = std::fs::read(&artifact).unwrap();
    let input = r#"{"function_name":"add","kwargs":{"a":2,"b":3}}"#;

    let (url, server) = answer_once(
        format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            bytes.len()
        ),
        bytes.clone(),
    );
    let (ok, stdout, stderr) = one_job_with_env(
        input,
        &[("FLASH_ARTIFACT_URL", &url), ("RUNPOD_API_KEY", "the-key")],
    );
    assert!(ok && stdout.contains("\"output\": 5"), "{stdout}{stderr}");
    let request = server.join().unwrap().to_ascii_lowercase();
    assert!(
        request.contains("authorization: bearer the-key"),
        "{request}"
    );

    // A body that ends before its declared length is never unpacked.
    let (url, server) = answer_once(
        format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            bytes.len()
        ),
        bytes[..bytes.len() / 2].to_vec(),
    );
    let (ok, _, stderr) = one_job_with_env(input, &[("FLASH_ARTIFACT_URL", &url)]);
    server.join().unwrap();
    assert!(!ok);
    assert!(stderr.contains(&format!("downloading {url}")), "{stderr}");
}
