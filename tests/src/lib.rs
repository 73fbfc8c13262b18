//! Test harness shared by Flash's integration and end-to-end tests.
//!
//! Tests here use real things: guest components compiled from `examples/` and
//! `tests/guests/`, the real `flash` and `flash-host` binaries, real HTTP servers on
//! loopback and the real `runpod` Python package. This crate finds or builds them:
//!
//! - [`bin`] locates a workspace binary. `cargo test --workspace` builds every package's
//!   binaries before any test runs, so they are fresh when the suite runs as a whole.
//! - [`build_guest`] compiles a guest crate for `wasm32-wasip2` in a target directory of
//!   its own (`<target>/guests`): the outer `cargo test` holds the lock on the host target
//!   directory while tests run, so guest builds must not share it.
//! - [`python`] returns the interpreter of a virtual environment under
//!   `target/test-venv` with `tests/requirements.txt` installed, creating it on first use
//!   (under a file lock, so parallel test binaries create it once).
//! - [`onnxruntime_lib`] finds the ONNX Runtime shared library inside that venv's
//!   `onnxruntime` package (what `ORT_DYLIB_PATH` points `flash-host` at), and
//!   [`inference_models`] writes the inference example's models with its script.
//! - [`bench_results::record`] hands a bench's figures to `scripts/bench.sh`.

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

pub mod bench_results;
pub mod control_plane;

/// The repository root (the workspace directory).
///
/// Found at run time from the running test's package (`cargo test` sets
/// `CARGO_MANIFEST_DIR`): checkouts at other paths share one target dir, and cargo reuses a
/// test binary built in another checkout when its sources are the same, so a path compiled
/// in may name a checkout that is gone.
pub fn repo_root() -> PathBuf {
    let compiled = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf();
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .and_then(|dir| {
            dir.ancestors()
                .find(|d| d.join("wit/flash.wit").is_file())
                .map(Path::to_path_buf)
        })
        .unwrap_or(compiled)
}

/// Connects to `addr`, sends `head_part` (an incomplete request head, or nothing) and
/// returns how long the server took to close the connection (it may answer 408 first).
/// Panics if it is still open after 30 s.
pub fn connection_closed_after(addr: &str, head_part: &str) -> Duration {
    use std::io::{Read, Write};
    let started = std::time::Instant::now();
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream.write_all(head_part.as_bytes()).expect("write");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("read timeout");
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return started.elapsed(),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                panic!("the connection to {addr} was still open after 30 s")
            }
            Err(_) => return started.elapsed(),
        }
    }
}

/// The host target directory (`CARGO_TARGET_DIR` or `<repo>/target`).
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => repo_root().join("target"),
    }
}

/// The target directory for guest builds: separate from the host's (see the module docs).
pub fn guest_target_dir() -> PathBuf {
    match std::env::var_os("FLASH_GUEST_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => target_dir().join("guests"),
    }
}

/// Path of a workspace binary (`flash`, `flash-host`) built in the debug profile, or in
/// `FLASH_TEST_BIN_DIR` when set (a copy of them that builds from another checkout sharing
/// the target dir cannot replace mid-run).
pub fn bin(name: &str) -> PathBuf {
    let dir = match std::env::var_os("FLASH_TEST_BIN_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => target_dir().join("debug"),
    };
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "binary `{}` not found; run the suite with scripts/test.sh, or `cargo build --workspace \
         --bins` before `cargo test` (which builds flash-cli's binary for no test of its own)",
        path.display()
    );
    path
}

/// Compiles the guest crate at `crate_dir` (relative to the repo root) for
/// `wasm32-wasip2` in release mode and returns the path of its component.
///
/// Cargo's own fingerprints make repeated calls cheap; within one test process the
/// result is also memoised.
pub fn build_guest(crate_dir: &str) -> Result<PathBuf> {
    static BUILT: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let built = BUILT.get_or_init(Default::default);
    let mut built = built.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(path) = built.get(crate_dir) {
        return Ok(path.clone());
    }
    let dir = repo_root().join(crate_dir);
    let output = Command::new("cargo")
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--message-format=json-render-diagnostics",
        ])
        .current_dir(&dir)
        .env("CARGO_TARGET_DIR", guest_target_dir())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running cargo for guest {}", dir.display()))?;
    if !output.status.success() {
        bail!("building guest {} failed", dir.display());
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let wasm = stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|msg| msg["reason"] == "compiler-artifact")
        .flat_map(|msg| {
            msg["filenames"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter_map(|f| f.as_str().map(PathBuf::from))
        })
        .find(|f| f.extension().is_some_and(|e| e == "wasm"))
        .with_context(|| format!("cargo produced no .wasm for guest {}", dir.display()))?;
    built.insert(crate_dir.to_string(), wasm.clone());
    Ok(wasm)
}

/// The Python interpreter of the test virtual environment, created on first use.
pub fn python() -> Result<PathBuf> {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    if let Some(p) = PYTHON.get() {
        return Ok(p.clone());
    }
    let venv = match std::env::var_os("FLASH_TEST_VENV") {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => repo_root().join("target").join("test-venv"),
    };
    let requirements = repo_root().join("tests").join("requirements.txt");
    let wanted = std::fs::read_to_string(&requirements)
        .with_context(|| format!("reading {}", requirements.display()))?;
    let marker = venv.join(".flash-requirements");
    let python = venv.join("bin").join("python");
    std::fs::create_dir_all(venv.parent().unwrap_or(&venv))?;
    let _lock = FileLock::acquire(&venv.with_extension("lock"))?;
    if std::fs::read_to_string(&marker).ok().as_deref() != Some(wanted.as_str()) {
        let host_python =
            std::env::var("FLASH_TEST_HOST_PYTHON").unwrap_or_else(|_| "python3".into());
        run(Command::new(&host_python).args(["-m", "venv"]).arg(&venv))?;
        run(Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-r",
            ])
            .arg(&requirements))?;
        std::fs::write(&marker, &wanted)?;
    }
    let _ = PYTHON.set(python.clone());
    Ok(python)
}

/// Runs `script` with the test venv's Python and `envs`, and returns the JSON document it
/// prints on its last line of output.
pub fn run_python_script(script: &str, envs: &[(&str, String)]) -> Result<serde_json::Value> {
    let out = Command::new(python()?)
        .arg("-c")
        .arg(script)
        .envs(envs.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .output()
        .context("running python")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!(
            "python failed ({}):\nstdout: {stdout}\nstderr: {stderr}",
            out.status
        );
    }
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last)
        .with_context(|| format!("python printed no JSON: {stdout}\nstderr: {stderr}"))
}

/// A directory holding the venv's executables (`componentize-py`, ...).
pub fn venv_bin_dir() -> Result<PathBuf> {
    Ok(python()?
        .parent()
        .context("venv python has a parent")?
        .to_path_buf())
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("spawning {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

/// An exclusive advisory lock on a file, released on drop.
struct FileLock(std::fs::File);

impl FileLock {
    fn acquire(path: &Path) -> Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .with_context(|| format!("opening lock file {}", path.display()))?;
        file.lock()
            .with_context(|| format!("locking {}", path.display()))?;
        Ok(Self(file))
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

/// A free TCP port on 127.0.0.1 (bound then released; good enough for tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding an ephemeral port on loopback")
}

/// Polls `url` until it answers with any HTTP status, or fails after `timeout`.
pub fn wait_for_http(url: &str, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    loop {
        match client.get(url).send() {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() >= deadline => {
                bail!("{url} did not come up within {timeout:?}: {e}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// A child process killed (and reaped) when dropped, so a failing test leaves no orphans.
pub struct ChildGuard(pub Child);

impl ChildGuard {
    pub fn spawn(cmd: &mut Command) -> Result<Self> {
        Ok(Self(
            cmd.spawn().with_context(|| format!("spawning {cmd:?}"))?,
        ))
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Builds an artifact from one guest component with `flash build`'s own pipeline
/// ([`flash_runtime::scan::describe_file`], [`flash_manifest::package::Package`]), letting the test adjust the
/// manifest first (e.g. a short `executionTimeoutMs`). Returns the artifact path in `dir`.
pub async fn guest_artifact(
    guest_wasm: &Path,
    project: &str,
    dir: &Path,
    tweak: impl FnOnce(&mut flash_manifest::Manifest),
) -> Result<PathBuf> {
    guest_artifact_with_models(guest_wasm, project, dir, &[], tweak).await
}

/// Like [`guest_artifact`], packing `models` (name → ONNX file) as `flash build` packs the
/// `[[model]]`s of `flash.toml` (every resource preloads them unless `tweak` says otherwise).
pub async fn guest_artifact_with_models(
    guest_wasm: &Path,
    project: &str,
    dir: &Path,
    models: &[(&str, &Path)],
    tweak: impl FnOnce(&mut flash_manifest::Manifest),
) -> Result<PathBuf> {
    let engine = flash_runtime::Engine::new(flash_runtime::EngineOptions {
        pooling: false,
        ..Default::default()
    })?;
    let name = guest_wasm
        .file_stem()
        .and_then(|s| s.to_str())
        .context("guest file name")?
        .replace('_', "-");
    let component = flash_runtime::scan::describe_file(&engine, &name, guest_wasm).await?;
    let models = models
        .iter()
        .map(|(name, path)| {
            let input = flash_manifest::package::model_input(name, path, vec![], None)?;
            Ok((input, path.to_path_buf()))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut package = flash_manifest::package::Package::new(
        project,
        "2026-01-01T00:00:00.000Z",
        vec![(component, guest_wasm.to_path_buf())],
        models,
    )?;
    tweak(&mut package.manifest);
    for entry in package.manifest.resources.values_mut() {
        entry.config_hash = flash_manifest::config_hash::config_hash(entry);
    }
    let out = dir.join("artifact.tar.gz");
    package.write_artifact(&out, 0)?;
    Ok(out)
}

/// Builds the hand-written Python test guest (`tests/guests/python-guest`) with the
/// venv's componentize-py; rebuilt only when `app.py` or `wit/` changed.
pub fn build_python_guest() -> Result<PathBuf> {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let dir = repo_root().join("tests/guests/python-guest");
    let out = guest_target_dir().join("python-guest.wasm");
    std::fs::create_dir_all(guest_target_dir())?;
    let _lock = FileLock::acquire(&guest_target_dir().join("python-guest.lock"))?;
    let newest_input = [dir.join("app.py"), repo_root().join("wit/flash.wit")]
        .iter()
        .filter_map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .max();
    let built = std::fs::metadata(&out).and_then(|m| m.modified()).ok();
    if let (Some(input), Some(built)) = (newest_input, built)
        && built >= input
    {
        return Ok(out);
    }
    let path = format!(
        "{}:{}",
        venv_bin_dir()?.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let tmp = out.with_extension("wasm.tmp");
    run(Command::new("sh")
        .arg(dir.join("build.sh"))
        .arg(&tmp)
        .env("PATH", path)
        .current_dir(&dir))?;
    std::fs::rename(&tmp, &out)?;
    Ok(out)
}

/// The ONNX Runtime shared library of the test venv's `onnxruntime` package
/// (`<site-packages>/onnxruntime/capi/libonnxruntime.so.<version>`).
pub fn onnxruntime_lib() -> Result<PathBuf> {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    if let Some(p) = LIB.get() {
        return Ok(p.clone());
    }
    let output = Command::new(python()?)
        .args([
            "-c",
            "import onnxruntime, os; print(os.path.join(os.path.dirname(onnxruntime.__file__), 'capi'))",
        ])
        .output()
        .context("asking the test venv where onnxruntime is")?;
    if !output.status.success() {
        bail!(
            "the test venv has no onnxruntime (tests/requirements.txt): {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let capi = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    let lib = std::fs::read_dir(&capi)
        .with_context(|| format!("listing {}", capi.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libonnxruntime.so") || n == "libonnxruntime.dylib")
        })
        .min_by_key(|p| p.as_os_str().len())
        .with_context(|| format!("no libonnxruntime.so in {}", capi.display()))?;
    let _ = LIB.set(lib.clone());
    Ok(lib)
}

/// Runs `examples/inference/model/make_model.py` into `dir` with `flags` (`classifier.onnx`;
/// `--slow` adds `slow.onnx`, `--bench` adds `wide.onnx`) and returns `dir`.
pub fn inference_models(dir: &Path, flags: &[&str]) -> Result<PathBuf> {
    let mut cmd = Command::new(python()?);
    cmd.arg(repo_root().join("examples/inference/model/make_model.py"))
        .arg(dir)
        .args(flags);
    run(&mut cmd)?;
    Ok(dir.to_path_buf())
}
