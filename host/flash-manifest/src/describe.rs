//! What a component says about itself: plain-Rust mirrors of the WIT `describe` records.
//!
//! `flash-runtime` converts the wasmtime bindgen types into these, so that manifest
//! building and validation stay free of wasmtime and can be unit-tested with literals.

use serde::{Deserialize, Serialize};

/// How an endpoint receives work (WIT `endpoint-kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EndpointKind {
    Queue,
    LoadBalanced,
}

/// What a resource config runs on (WIT `compute`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Compute {
    Gpu {
        gpu_ids: Vec<String>,
        gpu_count: u32,
    },
    Cpu {
        instance_ids: Vec<String>,
    },
}

/// How workers scale (WIT `scaler-type`), spelled as RunPod spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ScalerType {
    #[serde(rename = "QUEUE_DELAY")]
    QueueDelay,
    #[serde(rename = "REQUEST_COUNT")]
    RequestCount,
}

impl ScalerType {
    pub fn as_str(self) -> &'static str {
        match self {
            ScalerType::QueueDelay => "QUEUE_DELAY",
            ScalerType::RequestCount => "REQUEST_COUNT",
        }
    }
}

/// A resource config as declared by a component (WIT `resource-config`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceConfig {
    pub name: String,
    pub kind: EndpointKind,
    pub compute: Compute,
    pub workers_min: u32,
    pub workers_max: u32,
    pub idle_timeout_s: Option<u32>,
    pub execution_timeout_ms: Option<u64>,
    pub scaler_type: Option<ScalerType>,
    pub scaler_value: Option<u32>,
    pub env: Vec<(String, String)>,
    #[serde(default)]
    pub placement: Placement,
}

/// Where the platform places a config's workers (WIT `placement`): empty / none means the
/// platform's default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    pub locations: Vec<String>,
    pub min_cuda_version: Option<String>,
    pub container_disk_gb: Option<u32>,
    pub flashboot: Option<bool>,
}

/// A `#[remote]` function as declared by a component (WIT `function-spec`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionSpec {
    pub name: String,
    pub resource: String,
    pub module: String,
    pub is_async: bool,
    pub http_method: Option<String>,
    pub http_path: Option<String>,
}

/// Everything one component declares (WIT `description`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Description {
    pub resources: Vec<ResourceConfig>,
    pub functions: Vec<FunctionSpec>,
}
