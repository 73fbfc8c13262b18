//! The `flash_manifest.json` document.
//!
//! Keys follow the manifest that RunPod's Flash generates (`version`, `generated_at`,
//! `project_name`, `resources`, `function_registry`, `routes`, `resources_endpoints`; config
//! fields in RunPod's camelCase), so tooling that reads one reads the other. Flash adds:
//! `flash_contract` (the WIT package the components target), `components` (every component
//! file with its sha256), per function the `component` file and its `component_sha256`, and
//! per resource a `config_hash` for drift detection, and `models` (ONNX files the hosts
//! preload for `wasi:nn`, each with its sha256).
//!
//! Unknown keys are kept (`extra`) and written back unchanged, so a newer manifest, or one
//! carrying deploy-time state, survives a read-modify-write by an older tool.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::describe::ScalerType;

/// File name of the manifest, at the artifact root and under `.flash/`.
pub const MANIFEST_FILE_NAME: &str = "flash_manifest.json";

/// The manifest schema version written by this crate.
pub const MANIFEST_VERSION: &str = "1.0";

/// The whole manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub version: String,
    pub generated_at: String,
    pub project_name: String,
    /// The WIT package (with version) that every component targets.
    #[serde(default)]
    pub flash_contract: String,
    pub resources: BTreeMap<String, ResourceEntry>,
    /// function name → resource config name.
    pub function_registry: BTreeMap<String, String>,
    /// resource config name → {"METHOD /path": function name}, load-balanced resources only.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub routes: BTreeMap<String, BTreeMap<String, String>>,
    /// artifact path (`components/<name>.wasm`) → digest and size.
    #[serde(default)]
    pub components: BTreeMap<String, ComponentEntry>,
    /// model name → its file in the artifact (`models/<name>.onnx`) and who preloads it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub models: BTreeMap<String, ModelEntry>,
    /// sha256 over every component (and model) digest: changes whenever any code changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_fingerprint: Option<String>,
    /// resource config name → endpoint URL; written by `flash deploy send`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources_endpoints: Option<BTreeMap<String, String>>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One component file of the artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentEntry {
    pub sha256: String,
    pub size: u64,
}

/// A model of the artifact, served to guests through `wasi:nn` (`load-by-name`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelEntry {
    /// Artifact path of the model file (`models/<name>.onnx`).
    pub file: String,
    pub sha256: String,
    pub size: u64,
    /// Graph encoding; `onnx` is the only one hosts serve today.
    #[serde(default = "default_encoding")]
    pub encoding: String,
    /// Resource configs whose hosts preload the model; empty means every one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<String>,
    /// Sessions per host (concurrent inferences of this model); absent = host default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sessions: Option<u32>,
}

fn default_encoding() -> String {
    "onnx".to_string()
}

impl ModelEntry {
    /// Whether hosts of `resource` preload this model.
    pub fn serves(&self, resource: &str) -> bool {
        self.resources.is_empty() || self.resources.iter().any(|r| r == resource)
    }
}

/// RunPod's resource classes; the queue/load-balanced × GPU/CPU matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResourceType {
    LiveServerless,
    CpuLiveServerless,
    LiveLoadBalancer,
    CpuLiveLoadBalancer,
}

impl ResourceType {
    pub fn is_load_balanced(self) -> bool {
        matches!(self, Self::LiveLoadBalancer | Self::CpuLiveLoadBalancer)
    }

    pub fn is_gpu(self) -> bool {
        matches!(self, Self::LiveServerless | Self::LiveLoadBalancer)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::LiveServerless => "LiveServerless",
            Self::CpuLiveServerless => "CpuLiveServerless",
            Self::LiveLoadBalancer => "LiveLoadBalancer",
            Self::CpuLiveLoadBalancer => "CpuLiveLoadBalancer",
        }
    }
}

/// One resource config: one deployable endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceEntry {
    pub resource_type: ResourceType,
    pub functions: Vec<FunctionEntry>,
    pub is_load_balanced: bool,
    /// Whether a function of this resource may call a function of another one, which is
    /// what its workers need the API key for (see [`crate::peer_calls`]). Manifests
    /// written before Flash decided it have no such key: they read as `true`, as they
    /// were deployed.
    #[serde(default = "yes")]
    pub makes_remote_calls: bool,
    /// See [`crate::config_hash`].
    pub config_hash: String,
    /// GPU pool ids, comma-separated (RunPod's format); GPU configs only.
    #[serde(rename = "gpuIds", default, skip_serializing_if = "Option::is_none")]
    pub gpu_ids: Option<String>,
    #[serde(rename = "gpuCount", default, skip_serializing_if = "Option::is_none")]
    pub gpu_count: Option<u32>,
    /// CPU instance ids; CPU configs only.
    #[serde(
        rename = "instanceIds",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub instance_ids: Option<Vec<String>>,
    #[serde(rename = "workersMin")]
    pub workers_min: u32,
    #[serde(rename = "workersMax")]
    pub workers_max: u32,
    /// Seconds an idle worker stays up.
    #[serde(rename = "idleTimeout")]
    pub idle_timeout: u32,
    /// Per-job deadline; absent means the host default.
    #[serde(
        rename = "executionTimeoutMs",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub execution_timeout_ms: Option<u64>,
    #[serde(rename = "scalerType")]
    pub scaler_type: ScalerType,
    #[serde(rename = "scalerValue")]
    pub scaler_value: u32,
    /// Environment variables given to this config's components.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Data centre ids, comma-separated (RunPod's format); absent = the platform default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locations: Option<String>,
    /// Lowest CUDA version of GPU workers; absent = 12.8.
    #[serde(
        rename = "minCudaVersion",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub min_cuda_version: Option<String>,
    /// Container disk in GB; absent = 64 (GPU) or the CPU instance's limit.
    #[serde(
        rename = "containerDiskInGb",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub container_disk_gb: Option<u32>,
    /// FlashBoot; absent = on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flashboot: Option<bool>,
    /// Deploy-time state (`endpoint_id`, `aiKey`, …) and keys from newer tools.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn yes() -> bool {
    true
}

impl ResourceEntry {
    /// The component files (artifact paths) that serve this resource's functions.
    pub fn component_files(&self) -> BTreeSet<&str> {
        self.functions
            .iter()
            .map(|f| f.component.as_str())
            .collect()
    }
}

/// One function of a resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionEntry {
    pub name: String,
    pub module: String,
    pub is_async: bool,
    pub is_class: bool,
    pub is_load_balanced: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_path: Option<String>,
    /// Artifact path of the component that exports this function.
    pub component: String,
    pub component_sha256: String,
}

impl Manifest {
    /// Parses a manifest from JSON bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Self> {
        serde_json::from_slice(bytes).context("manifest is not a valid Flash manifest")
    }

    /// Reads a manifest file.
    pub fn read(path: &Path) -> Result<Self> {
        let bytes =
            std::fs::read(path).with_context(|| format!("reading manifest {}", path.display()))?;
        Self::from_slice(&bytes).with_context(|| format!("parsing manifest {}", path.display()))
    }

    /// Pretty JSON with a trailing newline: the on-disk form.
    pub fn to_json_pretty(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).expect("a manifest always serialises");
        out.push(b'\n');
        out
    }

    /// Writes the manifest atomically ([`crate::atomic`]).
    pub fn write(&self, path: &Path) -> Result<()> {
        crate::atomic::write(path, &self.to_json_pretty())
            .with_context(|| format!("writing {}", path.display()))
    }

    /// The models hosts of `resource` preload (every model when `None`: one-shot mode).
    pub fn models_for<'a>(
        &'a self,
        resource: Option<&'a str>,
    ) -> impl Iterator<Item = (&'a str, &'a ModelEntry)> + 'a {
        self.models
            .iter()
            .filter(move |(_, m)| resource.is_none_or(|r| m.serves(r)))
            .map(|(name, m)| (name.as_str(), m))
    }

    /// The resource config that serves `function`, if any.
    pub fn resource_of(&self, function: &str) -> Option<&str> {
        self.function_registry.get(function).map(String::as_str)
    }

    /// The entry of `function`, with its resource name.
    pub fn function(&self, function: &str) -> Option<(&str, &FunctionEntry)> {
        let resource = self.resource_of(function)?;
        let entry = self.resources.get(resource)?;
        let f = entry.functions.iter().find(|f| f.name == function)?;
        Some((resource, f))
    }
}
