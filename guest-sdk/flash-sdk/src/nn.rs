//! Inference through the host: a thin typed layer over `wasi:nn` (feature `nn`).
//!
//! The host owns the model and the accelerator. Models declared in `flash.toml` travel in
//! the artifact and are preloaded by `flash-host` once per process; [`Model::by_name`]
//! returns a handle to one without parsing anything per call. [`Model::load`] parses
//! model bytes the component carries itself.
//!
//! ```no_run
//! use flash_sdk::nn::Model;
//!
//! # fn main() -> flash_sdk::Result<()> {
//! let model = Model::by_name("classifier")?;
//! let outputs = model.run_f32(&[("features", &[1, 4], &[0.5, -1.0, 2.0, 0.25])])?;
//! let probabilities = &outputs[0].data; // [1, 3]
//! # Ok(()) }
//! ```
//!
//! Batches of rows arrive best as a [`crate::Matrix`] argument: JSON rows, or the binary
//! form that skips parsing numbers.
//!
//! Failures are [`NnError`]s with the `wasi:nn` error code; `?` turns them into a
//! [`crate::Error`] (`timeout` → [`ErrorKind::Timeout`], `invalid-argument` →
//! [`ErrorKind::InvalidInput`], anything else → [`ErrorKind::Internal`]), keeping the code
//! in the message.

use std::fmt;

use crate::error::{Error, ErrorKind};

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit/deps/wasi-nn",
        world: "wasi:nn/ml",
    });
}

use bindings::wasi::nn::{errors, graph, inference, tensor};

pub use bindings::wasi::nn::errors::ErrorCode;

/// Where a model the component loads itself should run (WIT `execution-target`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Cpu,
    Gpu,
    Tpu,
}

impl std::str::FromStr for Target {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "cpu" => Ok(Self::Cpu),
            "gpu" => Ok(Self::Gpu),
            "tpu" => Ok(Self::Tpu),
            other => Err(Error::invalid_input(format!(
                "unknown execution target `{other}` (expected cpu, gpu or tpu)"
            ))),
        }
    }
}

/// A failed `wasi:nn` call: the host's error code and message.
#[derive(Debug, Clone, PartialEq)]
pub struct NnError {
    pub code: ErrorCode,
    pub message: String,
}

impl NnError {
    fn from_host(e: errors::Error) -> Self {
        Self {
            code: e.code(),
            message: e.data(),
        }
    }

    /// The WIT spelling of the code, e.g. `not-found`.
    pub fn code_name(&self) -> &'static str {
        match self.code {
            ErrorCode::InvalidArgument => "invalid-argument",
            ErrorCode::InvalidEncoding => "invalid-encoding",
            ErrorCode::Timeout => "timeout",
            ErrorCode::RuntimeError => "runtime-error",
            ErrorCode::UnsupportedOperation => "unsupported-operation",
            ErrorCode::TooLarge => "too-large",
            ErrorCode::NotFound => "not-found",
            ErrorCode::Security => "security",
            ErrorCode::Unknown => "unknown",
        }
    }
}

impl fmt::Display for NnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "wasi-nn {}: {}", self.code_name(), self.message)
    }
}

// Not `std::error::Error`: that would pick `Error`'s blanket `From` (kind `user-error`)
// instead of the mapping below.
impl From<NnError> for Error {
    fn from(e: NnError) -> Self {
        let kind = match e.code {
            ErrorCode::Timeout => ErrorKind::Timeout,
            ErrorCode::InvalidArgument => ErrorKind::InvalidInput,
            _ => ErrorKind::Internal,
        };
        Error::new(kind, e)
    }
}

/// A graph: preloaded by the host or loaded from bytes.
pub struct Model {
    graph: graph::Graph,
}

/// One output tensor of [`Model::run_f32`].
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    pub name: String,
    pub dimensions: Vec<u32>,
    pub data: Vec<f32>,
}

impl Model {
    /// The graph the host preloaded under `name` (declared in `flash.toml`).
    pub fn by_name(name: &str) -> Result<Self, NnError> {
        graph::load_by_name(name)
            .map(|graph| Self { graph })
            .map_err(NnError::from_host)
    }

    /// Parses ONNX `model` bytes on the host for `target`.
    pub fn load(model: &[u8], target: Target) -> Result<Self, NnError> {
        let target = match target {
            Target::Cpu => graph::ExecutionTarget::Cpu,
            Target::Gpu => graph::ExecutionTarget::Gpu,
            Target::Tpu => graph::ExecutionTarget::Tpu,
        };
        graph::load(&[model.to_vec()], graph::GraphEncoding::Onnx, target)
            .map(|graph| Self { graph })
            .map_err(NnError::from_host)
    }

    /// Runs one inference on `f32` inputs `(name, dimensions, row-major data)` and returns
    /// every output (which must be `f32`), in the model's order.
    pub fn run_f32(&self, inputs: &[(&str, &[u32], &[f32])]) -> Result<Vec<Output>, NnError> {
        let context = self
            .graph
            .init_execution_context()
            .map_err(NnError::from_host)?;
        let named: Vec<inference::NamedTensor> = inputs
            .iter()
            .map(|(name, dims, data)| {
                let mut bytes = Vec::with_capacity(data.len() * 4);
                for v in *data {
                    bytes.extend_from_slice(&v.to_le_bytes());
                }
                let t = tensor::Tensor::new(&dims.to_vec(), tensor::TensorType::Fp32, &bytes);
                (name.to_string(), t)
            })
            .collect();
        let outputs = context.compute(named).map_err(NnError::from_host)?;
        outputs
            .into_iter()
            .map(|(name, t)| {
                if t.ty() != tensor::TensorType::Fp32 {
                    return Err(NnError {
                        code: ErrorCode::InvalidArgument,
                        message: format!("output `{name}` is not an f32 tensor"),
                    });
                }
                let data = t
                    .data()
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                Ok(Output {
                    name,
                    dimensions: t.dimensions(),
                    data,
                })
            })
            .collect()
    }
}
