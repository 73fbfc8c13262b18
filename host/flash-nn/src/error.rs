//! [`NnError`]: why a `wasi:nn` operation failed, one variant per WIT `error-code` that
//! this host produces. Guests see the code and the message (`error.data`).

/// A failed `wasi:nn` operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NnError {
    /// The guest passed something the graph cannot take (unknown input, wrong shape or type).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A graph encoding this host has no backend for.
    #[error("invalid encoding: {0}")]
    InvalidEncoding(String),
    /// No preloaded graph of that name.
    #[error("not found: {0}")]
    NotFound(String),
    /// A target or element type this host cannot serve (e.g. `tpu`).
    #[error("unsupported operation: {0}")]
    Unsupported(String),
    /// The call's deadline passed while waiting for or running inference.
    #[error("timeout: {0}")]
    Timeout(String),
    /// ONNX Runtime failed.
    #[error("runtime error: {0}")]
    Runtime(String),
}

impl From<ort::Error> for NnError {
    fn from(e: ort::Error) -> Self {
        Self::Runtime(format!("ONNX Runtime: {e}"))
    }
}
