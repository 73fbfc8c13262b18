//! [`Tensor`]: a wasi-nn tensor on the host, and its conversion to and from ONNX Runtime
//! values.
//!
//! wasi-nn tensors are dimensions + element type + row-major little-endian bytes. Inputs
//! are checked (byte length against dimensions and type) before ONNX Runtime sees them,
//! so a malformed guest tensor is an `invalid-argument`, not a native crash.

use ort::tensor::TensorElementType;
use ort::value::{DynValue, Tensor as OrtTensor, ValueType};

use crate::error::NnError;

/// Element type (WIT `tensor-type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorType {
    Fp16,
    Fp32,
    Fp64,
    Bf16,
    U8,
    I32,
    I64,
}

impl TensorType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Self::U8 => 1,
            Self::Fp16 | Self::Bf16 => 2,
            Self::Fp32 | Self::I32 => 4,
            Self::Fp64 | Self::I64 => 8,
        }
    }

    /// The ONNX element type, if this host can exchange it.
    pub(crate) fn onnx(self) -> Option<TensorElementType> {
        match self {
            Self::Fp32 => Some(TensorElementType::Float32),
            Self::Fp64 => Some(TensorElementType::Float64),
            Self::U8 => Some(TensorElementType::Uint8),
            Self::I32 => Some(TensorElementType::Int32),
            Self::I64 => Some(TensorElementType::Int64),
            Self::Fp16 | Self::Bf16 => None,
        }
    }
}

/// Little-endian bytes of `values` (wasi-nn's tensor layout), copied in one pass.
fn le_bytes<T: LeBytes>(values: &[T]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(std::mem::size_of_val(values));
    for v in values {
        v.extend_le(&mut bytes);
    }
    bytes
}

/// Numbers a tensor holds, written little-endian.
trait LeBytes: Copy {
    fn extend_le(self, out: &mut Vec<u8>);
}

macro_rules! le_bytes_impl {
    ($($t:ty),*) => {$(
        impl LeBytes for $t {
            fn extend_le(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
        }
    )*};
}

le_bytes_impl!(u8, i32, i64, f32, f64);

/// A tensor as wasi-nn defines it.
#[derive(Clone, PartialEq)]
pub struct Tensor {
    pub dimensions: Vec<u32>,
    pub ty: TensorType,
    pub data: Vec<u8>,
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tensor")
            .field("dimensions", &self.dimensions)
            .field("ty", &self.ty)
            .field("bytes", &self.data.len())
            .finish()
    }
}

impl Tensor {
    /// An `f32` tensor (little-endian bytes).
    pub fn from_f32(dimensions: Vec<u32>, values: &[f32]) -> Self {
        Self {
            dimensions,
            ty: TensorType::Fp32,
            data: le_bytes(values),
        }
    }

    /// The elements of an `f32` tensor.
    pub fn to_f32(&self) -> Option<Vec<f32>> {
        (self.ty == TensorType::Fp32).then(|| {
            self.data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        })
    }

    /// Checks the byte length against the dimensions and element type.
    pub(crate) fn check(&self, name: &str) -> Result<(), NnError> {
        let elements = self
            .dimensions
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d as usize));
        let expected = elements.and_then(|n| n.checked_mul(self.ty.size()));
        if expected != Some(self.data.len()) {
            return Err(NnError::InvalidArgument(format!(
                "tensor `{name}` has {} bytes, but dimensions {:?} of {:?} need {}",
                self.data.len(),
                self.dimensions,
                self.ty,
                expected.map_or("more than fit in memory".to_string(), |n| n.to_string())
            )));
        }
        Ok(())
    }

    /// Converts to an ONNX Runtime value (copies the data).
    pub(crate) fn to_ort(&self, name: &str) -> Result<DynValue, NnError> {
        self.check(name)?;
        let shape: Vec<i64> = self.dimensions.iter().map(|&d| i64::from(d)).collect();
        macro_rules! convert {
            ($t:ty, $n:literal) => {{
                let values: Vec<$t> = self
                    .data
                    .chunks_exact($n)
                    .map(|c| <$t>::from_le_bytes(c.try_into().expect("chunk size")))
                    .collect();
                OrtTensor::<$t>::from_array((shape, values))?.into_dyn()
            }};
        }
        Ok(match self.ty {
            TensorType::Fp32 => convert!(f32, 4),
            TensorType::Fp64 => convert!(f64, 8),
            TensorType::I32 => convert!(i32, 4),
            TensorType::I64 => convert!(i64, 8),
            TensorType::U8 => OrtTensor::<u8>::from_array((shape, self.data.clone()))?.into_dyn(),
            TensorType::Fp16 | TensorType::Bf16 => {
                return Err(NnError::Unsupported(format!(
                    "tensor `{name}`: {:?} tensors are not supported by this host (use FP32)",
                    self.ty
                )));
            }
        })
    }

    /// Converts an ONNX Runtime output (copies the data).
    pub(crate) fn from_ort(name: &str, value: &DynValue) -> Result<Self, NnError> {
        let ValueType::Tensor { ty, .. } = value.dtype() else {
            return Err(NnError::Unsupported(format!(
                "output `{name}` is not a tensor ({:?}); wasi-nn returns tensors only",
                value.dtype()
            )));
        };
        macro_rules! convert {
            ($t:ty, $wasi:expr) => {{
                let (shape, values) = value.try_extract_tensor::<$t>()?;
                let dimensions = shape
                    .iter()
                    .map(|&d| u32::try_from(d))
                    .collect::<Result<Vec<u32>, _>>()
                    .map_err(|_| {
                        NnError::Runtime(format!("output `{name}` has shape {shape:?}"))
                    })?;
                Tensor {
                    dimensions,
                    ty: $wasi,
                    data: le_bytes(values),
                }
            }};
        }
        Ok(match ty {
            TensorElementType::Float32 => convert!(f32, TensorType::Fp32),
            TensorElementType::Float64 => convert!(f64, TensorType::Fp64),
            TensorElementType::Int32 => convert!(i32, TensorType::I32),
            TensorElementType::Int64 => convert!(i64, TensorType::I64),
            TensorElementType::Uint8 => convert!(u8, TensorType::U8),
            other => {
                return Err(NnError::Unsupported(format!(
                    "output `{name}` has element type {other:?}, which wasi-nn cannot carry"
                )));
            }
        })
    }
}
