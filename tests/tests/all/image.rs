//! The flash-host CPU container image (`image/Containerfile`), end to end without running a
//! container (this sandbox refuses to): `scripts/build-image.sh cpu` builds it with buildah
//! and copies its root filesystem out; the test checks that filesystem against the image's
//! config (entrypoint, a static executable, CA bundle, RunPod's directories), then makes
//! that very entrypoint the worker program of a real `flash server` and deploys the
//! quickstart: a queue job, and a load-balanced route whose function calls the queue
//! endpoint, are served by the image's binary. It also checks what a user sees when a
//! resource of the CPU image preloads a `wasi:nn` model.
//!
//! Cost: the first run builds flash-host in release for `x86_64-unknown-linux-musl`, about
//! 15 minutes on a 2-core machine (wasmtime and Cranelift optimised), into the suite's
//! `CARGO_TARGET_DIR` (`target/x86_64-unknown-linux-musl/release`), where later runs find
//! it: seconds when nothing changed, 2-3 minutes after a change to flash-host's own crates.
//! Building the image (reproducible layers) and copying its root filesystem out take
//! seconds; the deploy and calls about as long as the other deploy tests.
//!
//! Needs buildah, the Rust target `x86_64-unknown-linux-musl` and musl-gcc (`musl-tools`):
//! `scripts/test.sh` installs them. The test installs nothing itself; without them it
//! fails saying what to install.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use flash_tests::control_plane::{Server, flash, ok};
use serde_json::Value;

use super::deploy::{call, quickstart_copy};

/// Not the published name: the suite must not replace an image a developer built to push.
const TAG: &str = "localhost/flash-host-test:cpu";
const ENTRYPOINT: &str = "/usr/local/bin/flash-host";

const PREREQUISITES: &str = "the CPU image needs buildah, the Rust target \
    x86_64-unknown-linux-musl and musl-gcc: run scripts/test.sh (as root it installs them), or \
    `rustup target add x86_64-unknown-linux-musl` and `sudo apt-get install buildah musl-tools`";

/// Builds the CPU image as `TAG` with its root filesystem copied into `rootfs`.
fn build_image(rootfs: &Path) {
    let started = Instant::now();
    let out = Command::new("bash")
        .arg(flash_tests::repo_root().join("scripts/build-image.sh"))
        .args(["cpu", "--tag", TAG, "--rootfs"])
        .arg(rootfs)
        .current_dir(flash_tests::repo_root())
        .env("CARGO_TARGET_DIR", flash_tests::target_dir())
        .env("FLASH_IMAGE_NO_INSTALL", "1")
        .output()
        .unwrap_or_else(|e| panic!("running scripts/build-image.sh: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "scripts/build-image.sh cpu failed ({}); {PREREQUISITES}.\n{stdout}\n{stderr}",
        out.status
    );
    eprintln!(
        "{stdout}(image built and extracted in {:.0?})",
        started.elapsed()
    );
}

/// The image's OCI config (`buildah inspect`).
fn image_config() -> Value {
    let out = Command::new("buildah")
        .args(["inspect", "--type", "image", TAG])
        .output()
        .expect("running buildah inspect");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let inspect: Value = serde_json::from_slice(&out.stdout).unwrap();
    inspect["OCIv1"]["config"].clone()
}

/// The program interpreter and the number of DT_NEEDED entries of an x86-64 ELF file.
fn elf_dependencies(bytes: &[u8]) -> (Option<String>, usize) {
    let u16_at = |o: usize| u16::from_le_bytes(bytes[o..o + 2].try_into().unwrap()) as usize;
    let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().unwrap()) as usize;
    assert_eq!(&bytes[..4], b"\x7fELF", "not an ELF file");
    assert_eq!((bytes[4], bytes[5]), (2, 1), "not 64-bit little-endian");
    assert_eq!(u16_at(0x12), 62, "not x86-64");
    let (phoff, phentsize, phnum) = (u64_at(0x20), u16_at(0x36), u16_at(0x38));
    let (mut interp, mut needed) = (None, 0);
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        let p_type = u32::from_le_bytes(bytes[ph..ph + 4].try_into().unwrap());
        let (offset, size) = (u64_at(ph + 8), u64_at(ph + 32));
        match p_type {
            3 => {
                // PT_INTERP
                let path = &bytes[offset..offset + size];
                interp = Some(
                    String::from_utf8_lossy(path)
                        .trim_end_matches('\0')
                        .to_string(),
                );
            }
            2 => {
                // PT_DYNAMIC: (tag, value) pairs up to DT_NULL; DT_NEEDED is 1.
                needed = (offset..offset + size)
                    .step_by(16)
                    .map(u64_at)
                    .take_while(|tag| *tag != 0)
                    .filter(|tag| *tag == 1)
                    .count();
            }
            _ => {}
        }
    }
    (interp, needed)
}

/// Checks the extracted root filesystem against the image config; returns the entrypoint.
fn check_rootfs(rootfs: &Path, config: &Value) -> PathBuf {
    assert_eq!(
        config["Entrypoint"],
        serde_json::json!([ENTRYPOINT]),
        "{config}"
    );
    assert_eq!(config["WorkingDir"], "/app", "{config}");
    let env: Vec<&str> = config["Env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for var in [
        "PORT=80",
        "HOME=/root",
        "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
    ] {
        assert!(env.contains(&var), "{var} not in the image env {env:?}");
    }
    assert!(
        !env.iter().any(|kv| kv.starts_with("ORT_DYLIB_PATH=")),
        "{env:?}"
    );

    let entrypoint = rootfs.join(ENTRYPOINT.trim_start_matches('/'));
    let bytes = std::fs::read(&entrypoint)
        .unwrap_or_else(|e| panic!("{} in the root filesystem: {e}", entrypoint.display()));
    let (interp, needed) = elf_dependencies(&bytes);
    assert_eq!(
        (interp.as_deref(), needed),
        (None, 0),
        "the entrypoint is not a static executable (interpreter, shared libraries)"
    );
    let certs = std::fs::read_to_string(rootfs.join("etc/ssl/certs/ca-certificates.crt")).unwrap();
    assert!(
        certs.matches("BEGIN CERTIFICATE").count() > 50,
        "a thin CA bundle"
    );
    for dir in ["app", "root/.runpod", "tmp"] {
        assert!(rootfs.join(dir).is_dir(), "/{dir} is not in the image");
    }
    // Nothing else: no shell, no libc, no loader (FROM scratch).
    let mut files: Vec<String> = walk(rootfs)
        .iter()
        .map(|p| p.strip_prefix(rootfs).unwrap().display().to_string())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "etc/group",
            "etc/passwd",
            "etc/ssl/certs/ca-certificates.crt",
            "usr/local/bin/flash-host"
        ],
        "unexpected files in the image"
    );
    entrypoint
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if entry.file_type().unwrap().is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// A resource that preloads a model cannot start on the static binary, and says why.
fn models_are_refused_clearly(flash_host: &Path) {
    let tmp = tempfile::tempdir().unwrap();
    let wasm = flash_tests::build_guest("tests/guests/rust-guest").unwrap();
    let model = tmp.path().join("m.onnx");
    std::fs::write(&model, b"the host refuses before reading it").unwrap();
    let artifact = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(flash_tests::guest_artifact_with_models(
            &wasm,
            "nn-static",
            tmp.path(),
            &[("m", model.as_path())],
            |_| {},
        ))
        .unwrap();
    // With ORT_DYLIB_PATH unset, and set: neither can help a static binary.
    for ort in [None, Some("/usr/lib/libonnxruntime.so.1.22.1")] {
        let mut cmd = Command::new(flash_host);
        cmd.arg("--artifact")
            .arg(&artifact)
            .args([
                "--test-input",
                r#"{"function_name": "add", "kwargs": {"a": 1, "b": 2}}"#,
            ])
            .env_remove("ORT_DYLIB_PATH")
            .env("HOME", tmp.path());
        if let Some(path) = ort {
            cmd.env("ORT_DYLIB_PATH", path);
        }
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{stderr}");
        for needle in [
            "refusing to start: this host preloads model(s) `m` for wasi:nn",
            "this flash-host is statically linked",
            "cannot load the ONNX Runtime shared library",
            "ORT_DYLIB_PATH cannot help",
            "use the GPU image",
        ] {
            assert!(stderr.contains(needle), "`{needle}` not in:\n{stderr}");
        }
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn the_cpu_image_entrypoint_serves_a_deployed_app_as_flash_server_workers() {
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = tmp.path().join("rootfs");
    build_image(&rootfs);
    let flash_host = check_rootfs(&rootfs, &image_config());
    let version = Command::new(&flash_host).arg("--version").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("flash-host {}", env!("CARGO_PKG_VERSION"))
    );
    models_are_refused_clearly(&flash_host);

    // The image's entrypoint as every worker of a RunPod-like control plane.
    let project = quickstart_copy();
    let dir = project.path();
    let server = Server::start_with_worker(&flash_host);
    let home = server.data_dir.path().to_path_buf();
    let run = |args: &[&str]| ok(&flash(dir, &server.url, &home, args), Some(&server));
    run(&["build"]);
    run(&["deploy", "new", "dev"]);
    run(&["deploy", "send", "dev"]);

    // A queue job (gpu_config's worker), then a load-balanced route (api's worker) whose
    // function calls `embed` on the queue endpoint.
    let v = call(
        dir,
        &server,
        "embed",
        r#"{"text": "from the image", "dims": 8}"#,
    );
    assert_eq!(v.as_array().map(Vec::len), Some(8), "{v}");
    let p = call(dir, &server, "predict", r#"{"text": "what a great day"}"#);
    assert_eq!(p["label"], "positive", "{p}");

    // Every worker process the server runs (the mothership, api, gpu_config) is the image's
    // binary.
    let workers = server.child_pids();
    assert!(workers.len() >= 2, "workers: {workers:?}");
    let expected = flash_host.canonicalize().unwrap();
    for pid in workers {
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
        assert_eq!(exe, expected, "worker {pid} runs {}", exe.display());
    }
}
