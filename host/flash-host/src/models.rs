//! Inference at boot: load ONNX Runtime and preload this resource's models.
//!
//! The artifact's manifest lists models (`models/<name>.onnx` + sha256) and which resource
//! configs preload them. At start-up, before serving, the host:
//!
//! 1. decides whether it needs ONNX Runtime: when it preloads a model, or when
//!    `ORT_DYLIB_PATH` is set (so guests may `load` their own bytes). A host without
//!    either starts without the library, and its guests' `wasi:nn` calls get typed errors;
//! 2. loads the library ([`flash_nn::OnnxRuntime`]) — a missing or broken one stops the
//!    boot with an error naming `ORT_DYLIB_PATH`;
//! 3. verifies each model's sha256 and parses it once into a session pool on the target of
//!    the resource config: `gpu` for GPU configs (CUDA when the library offers it, else
//!    the CPU with a warning), `cpu` otherwise; `FLASH_NN_TARGET` overrides it.
//!
//! Which device serves each model is reported in the log, in the load-balanced `/ping`
//! body (`inference`) and in the queue worker's heartbeat (`inference=<model>:<device>`).

use std::path::Path;

use anyhow::{Context, Result, bail};
use flash_manifest::Manifest;
use flash_nn::{GraphOptions, Inference, OnnxRuntime, Target};

/// Knobs of inference, from the environment (see [`crate::host`]).
#[derive(Debug, Clone, Default)]
pub struct NnOptions {
    /// `ORT_DYLIB_PATH`: the ONNX Runtime shared library.
    pub ort_dylib_path: Option<std::path::PathBuf>,
    /// `FLASH_NN_TARGET`: run every preloaded model on this target instead of the
    /// resource config's.
    pub target: Option<Target>,
    /// `FLASH_NN_SESSIONS`: pool size for models whose declaration sets none.
    pub sessions: Option<usize>,
    /// `FLASH_NN_THREADS`: ONNX Runtime intra-op threads per session (default 1).
    pub intra_threads: Option<usize>,
}

/// Pool size when neither the model nor `FLASH_NN_SESSIONS` sets one: one session per core,
/// at most 4.
pub fn default_sessions() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(4))
}

/// Loads ONNX Runtime if this host needs it and preloads the models of `resource`
/// (every model when `None`) from the artifact in `root`.
pub fn load(
    manifest: &Manifest,
    root: &Path,
    resource: Option<&str>,
    options: &NnOptions,
) -> Result<Inference> {
    let models: Vec<_> = manifest.models_for(resource).collect();
    if models.is_empty() && options.ort_dylib_path.is_none() {
        return Ok(Inference::disabled());
    }
    let runtime = match &options.ort_dylib_path {
        Some(path) => OnnxRuntime::load(path),
        None => Err(flash_nn::RuntimeError::not_set()),
    };
    let runtime = runtime.with_context(|| {
        if models.is_empty() {
            "loading ONNX Runtime".to_string()
        } else {
            format!(
                "refusing to start: this host preloads model(s) {} for wasi:nn",
                models
                    .iter()
                    .map(|(n, _)| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    })?;
    let mut inference = Inference::new(runtime);
    for (name, entry) in models {
        if entry.encoding != "onnx" {
            bail!(
                "model `{name}` has encoding `{}`; this host serves ONNX models only",
                entry.encoding
            );
        }
        let path = root.join(&entry.file);
        let bytes = std::fs::read(&path).with_context(|| {
            format!(
                "artifact model `{name}` ({}) is missing; rebuild with `flash build`",
                entry.file
            )
        })?;
        let actual = flash_manifest::sha256_hex(&bytes);
        if actual != entry.sha256 {
            bail!(
                "artifact model `{name}` ({}) sha256 mismatch: expected {}, got {actual}; rebuild \
                 with `flash build`",
                entry.file,
                entry.sha256
            );
        }
        let target = options
            .target
            .unwrap_or_else(|| resource_target(manifest, resource, &entry.resources));
        let graph_options = GraphOptions {
            target,
            sessions: entry
                .sessions
                .map(|s| s as usize)
                .or(options.sessions)
                .unwrap_or_else(default_sessions),
            intra_threads: options.intra_threads.unwrap_or(1),
        };
        let graph = inference.preload(name, &bytes, &graph_options)?;
        let placement = graph.placement();
        match &placement.fallback {
            None => tracing::info!(
                model = name,
                target = %placement.requested,
                device = %placement.device,
                sessions = graph.sessions(),
                "model preloaded"
            ),
            Some(reason) => tracing::warn!(
                model = name,
                target = %placement.requested,
                device = %placement.device,
                sessions = graph.sessions(),
                %reason,
                "model preloaded on the CPU: execution target `{}` is not available here",
                placement.requested
            ),
        }
    }
    Ok(inference)
}

/// `gpu` when the resource config (in one-shot mode: any config preloading the model) is a
/// GPU config, else `cpu`.
fn resource_target(manifest: &Manifest, resource: Option<&str>, serves: &[String]) -> Target {
    let is_gpu = |name: &str| {
        manifest
            .resources
            .get(name)
            .is_some_and(|r| r.resource_type.is_gpu())
    };
    let gpu = match resource {
        Some(r) => is_gpu(r),
        None if serves.is_empty() => manifest.resources.keys().any(|r| is_gpu(r)),
        None => serves.iter().any(|r| is_gpu(r)),
    };
    if gpu { Target::Gpu } else { Target::Cpu }
}
