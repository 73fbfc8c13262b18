//! [`OnnxRuntime`]: the ONNX Runtime shared library, loaded once per process at start-up.
//!
//! The library is not linked into `flash-host`: it comes from `ORT_DYLIB_PATH` (for
//! example the PyPI `onnxruntime` wheel's `onnxruntime/capi/libonnxruntime.so.1.22.1`, or
//! `onnxruntime-gpu`'s for CUDA). The `ort` crate loads it lazily and *panics* when it is
//! missing or too old, which would take down a request. So the host loads it here, before
//! serving: the file is probed with `libloading` first (exists, is a shared library,
//! exports `OrtGetApiBase`, version ≥ 1.22), and only then handed to `ort`. Every failure
//! is a [`RuntimeError`] naming `ORT_DYLIB_PATH` and what to do.
//!
//! A host that declares no model does not need the library at all; the caller decides
//! (see `flash-host`'s `host` module).
//!
//! A statically linked `flash-host` (the `x86_64-unknown-linux-musl` build of the CPU
//! container image) has no dynamic loader, so no library can ever be loaded: every attempt
//! is [`RuntimeError::StaticBuild`], which says so instead of asking for `ORT_DYLIB_PATH`.

use std::ffi::CStr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ort::execution_providers::{CUDAExecutionProvider, ExecutionProvider};

/// The environment variable naming the ONNX Runtime shared library.
pub const ORT_DYLIB_PATH: &str = "ORT_DYLIB_PATH";

/// The ONNX Runtime minor version (1.x) whose C API `ort` 2.0.0-rc.10 is built against;
/// older libraries lack functions it calls.
pub const REQUIRED_MINOR_VERSION: u32 = ort::MINOR_VERSION;

/// Whether this build can load shared libraries at all: not when the C runtime is linked
/// statically (musl), where `dlopen` always fails.
pub const CAN_LOAD_LIBRARIES: bool = !cfg!(target_feature = "crt-static");

/// Why ONNX Runtime could not be loaded.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RuntimeError {
    #[error(
        "this flash-host is statically linked (like the one of the CPU container image \
         `flash-host:<version>-cpu`) and cannot load the ONNX Runtime shared library, so it serves \
         no wasi:nn models ({ORT_DYLIB_PATH} cannot help); use the GPU image \
         (`flash-host:<version>-gpu`, which ships ONNX Runtime) or a flash-host built for glibc \
         with {ORT_DYLIB_PATH} set"
    )]
    StaticBuild,
    #[error(
        "{ORT_DYLIB_PATH} is not set: this host serves ONNX models and needs the ONNX Runtime \
         shared library; set {ORT_DYLIB_PATH} to libonnxruntime.so (e.g. from `pip install \
         onnxruntime==1.22.1`: <site-packages>/onnxruntime/capi/libonnxruntime.so.1.22.1)"
    )]
    NotSet,
    #[error(
        "{ORT_DYLIB_PATH}={path}: no such file; point {ORT_DYLIB_PATH} at the ONNX Runtime shared \
         library (libonnxruntime.so, version 1.{REQUIRED_MINOR_VERSION} or newer)"
    )]
    Missing { path: PathBuf },
    #[error(
        "{ORT_DYLIB_PATH}={path} is not a usable ONNX Runtime library: {reason}; point \
         {ORT_DYLIB_PATH} at libonnxruntime.so (version 1.{REQUIRED_MINOR_VERSION} or newer)"
    )]
    Broken { path: PathBuf, reason: String },
    #[error(
        "{ORT_DYLIB_PATH}={path} is ONNX Runtime {version}, but flash-host needs 1.{REQUIRED_MINOR_VERSION} \
         or newer; install a newer onnxruntime and update {ORT_DYLIB_PATH}"
    )]
    TooOld { path: PathBuf, version: String },
    #[error(
        "ONNX Runtime is already loaded from {loaded} in this process; cannot also load {wanted}"
    )]
    AlreadyLoaded { loaded: PathBuf, wanted: PathBuf },
}

impl RuntimeError {
    /// The error when no library is named: [`RuntimeError::NotSet`], or
    /// [`RuntimeError::StaticBuild`] where naming one could not help.
    pub fn not_set() -> Self {
        if CAN_LOAD_LIBRARIES {
            Self::NotSet
        } else {
            Self::StaticBuild
        }
    }
}

/// ONNX Runtime, loaded and initialised. Cheap to clone.
#[derive(Debug, Clone)]
pub struct OnnxRuntime(Arc<Info>);

#[derive(Debug)]
struct Info {
    path: PathBuf,
    version: String,
    cuda: bool,
}

/// The process-wide library: `ort` keeps one global environment.
static LOADED: Mutex<Option<OnnxRuntime>> = Mutex::new(None);

impl OnnxRuntime {
    /// Loads the library named by `ORT_DYLIB_PATH`.
    pub fn from_env() -> Result<Self, RuntimeError> {
        match std::env::var_os(ORT_DYLIB_PATH).filter(|v| !v.is_empty()) {
            Some(path) => Self::load(Path::new(&path)),
            None => Err(RuntimeError::not_set()),
        }
    }

    /// Loads the library at `path` (once per process; later calls with the same path
    /// return the same runtime).
    pub fn load(path: &Path) -> Result<Self, RuntimeError> {
        if !CAN_LOAD_LIBRARIES {
            return Err(RuntimeError::StaticBuild);
        }
        let mut loaded = LOADED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(rt) = loaded.as_ref() {
            if rt.0.path == path {
                return Ok(rt.clone());
            }
            return Err(RuntimeError::AlreadyLoaded {
                loaded: rt.0.path.clone(),
                wanted: path.to_path_buf(),
            });
        }
        let version = probe(path)?;
        let broken = |reason: String| RuntimeError::Broken {
            path: path.to_path_buf(),
            reason,
        };
        // `ort` must not panic past this point, but a library that passed the probe and
        // still fails inside `ort` is caught here rather than in a request.
        let committed = std::panic::catch_unwind(|| {
            ort::init_from(path.display().to_string())
                .with_name("flash-host")
                .with_telemetry(false)
                .commit()
        })
        .map_err(|panic| broken(panic_message(&panic)))?;
        committed.map_err(|e| broken(e.to_string()))?;
        let cuda = std::panic::catch_unwind(|| CUDAExecutionProvider::default().is_available())
            .ok()
            .and_then(Result::ok)
            .unwrap_or(false);
        let rt = Self(Arc::new(Info {
            path: path.to_path_buf(),
            version,
            cuda,
        }));
        tracing::info!(
            path = %path.display(),
            version = %rt.0.version,
            cuda_provider = cuda,
            "ONNX Runtime loaded"
        );
        *loaded = Some(rt.clone());
        Ok(rt)
    }

    /// The library's version (`1.22.1`).
    pub fn version(&self) -> &str {
        &self.0.version
    }

    pub fn path(&self) -> &Path {
        &self.0.path
    }

    /// Whether this ONNX Runtime build includes the CUDA execution provider. (Whether it
    /// works on this machine is only known when a session registers it.)
    pub fn has_cuda_provider(&self) -> bool {
        self.0.cuda
    }
}

/// Checks that `path` is an ONNX Runtime library `ort` can use; returns its version.
fn probe(path: &Path) -> Result<String, RuntimeError> {
    if !path.is_file() {
        return Err(RuntimeError::Missing {
            path: path.to_path_buf(),
        });
    }
    let broken = |reason: String| RuntimeError::Broken {
        path: path.to_path_buf(),
        reason,
    };
    // SAFETY: loading a shared library runs its initialisers; ORT_DYLIB_PATH is trusted
    // configuration of the host, like the binary itself.
    let lib = unsafe { libloading::Library::new(path) }.map_err(|e| broken(e.to_string()))?;
    // SAFETY: the symbol's type is ONNX Runtime's C API entry point.
    let get_base: libloading::Symbol<unsafe extern "C" fn() -> *const ort::sys::OrtApiBase> =
        unsafe { lib.get(b"OrtGetApiBase") }
            .map_err(|e| broken(format!("it does not export OrtGetApiBase ({e})")))?;
    // SAFETY: OrtGetApiBase takes no arguments and returns a static table (or null).
    let base = unsafe { get_base() };
    if base.is_null() {
        return Err(broken("OrtGetApiBase returned null".into()));
    }
    // SAFETY: `base` is non-null and points at the library's static OrtApiBase, whose
    // GetVersionString returns a static NUL-terminated string.
    let version = unsafe { CStr::from_ptr(((*base).GetVersionString)()) }
        .to_string_lossy()
        .into_owned();
    let minor = version
        .split('.')
        .nth(1)
        .and_then(|m| m.parse::<u32>().ok())
        .unwrap_or(0);
    if !version.starts_with("1.") || minor < REQUIRED_MINOR_VERSION {
        return Err(RuntimeError::TooOld {
            path: path.to_path_buf(),
            version,
        });
    }
    Ok(version)
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "ONNX Runtime initialisation panicked".into())
}
