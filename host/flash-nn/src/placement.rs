//! Where a graph runs: the [`Target`] a guest or resource config asks for and the
//! [`Device`] that serves it.
//!
//! `gpu` means the CUDA execution provider when the loaded ONNX Runtime offers it and it
//! registers; otherwise the graph runs on the CPU and [`Placement::fallback`] says why, so
//! the host can log a warning and report the device. `tpu` has no backend here and is an
//! [`NnError::Unsupported`](crate::NnError) — never a panic (upstream backends reach
//! `unimplemented!()` for some targets).

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

/// The execution target requested (WIT `execution-target`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    Cpu,
    Gpu,
    Tpu,
}

impl Target {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::Gpu => "gpu",
            Self::Tpu => "tpu",
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Target {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "cpu" => Ok(Self::Cpu),
            "gpu" => Ok(Self::Gpu),
            "tpu" => Ok(Self::Tpu),
            other => Err(format!(
                "unknown execution target `{other}` (expected cpu, gpu or tpu)"
            )),
        }
    }
}

/// The device that actually runs a graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    Cpu,
    Cuda,
}

impl Device {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::Cuda => "cuda",
        }
    }

    /// The ONNX Runtime execution provider of this device.
    pub fn execution_provider(self) -> &'static str {
        match self {
            Self::Cpu => "CPUExecutionProvider",
            Self::Cuda => "CUDAExecutionProvider",
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What was asked for and what serves it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Placement {
    pub requested: Target,
    pub device: Device,
    /// Why the device differs from the request (`gpu` served by the CPU), if it does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
}
