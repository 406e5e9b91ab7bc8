//! `TensorFact`: what the graph knows about a value before any data exists — dtype, shape
//! and (for int8) quantization parameters.

use crate::tensor::DType;

/// Affine quantization: `real = scale * (q - zero_point)`, per tensor or per channel.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantParams {
    /// One scale per tensor, or one per channel along `axis`.
    pub scale: Vec<f32>,
    /// Zero points, same length as `scale`.
    pub zero_point: Vec<i32>,
    /// The channel axis for per-channel parameters; `None` for per-tensor.
    pub axis: Option<usize>,
}

/// The static type of a value.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorFact {
    /// Element type.
    pub dtype: DType,
    /// Dimensions.
    pub shape: Vec<usize>,
    /// Quantization, for int8 values.
    pub quant: Option<QuantParams>,
}

impl TensorFact {
    /// An f32 fact of `shape`.
    pub fn f32(shape: impl Into<Vec<usize>>) -> Self {
        TensorFact {
            dtype: DType::F32,
            shape: shape.into(),
            quant: None,
        }
    }

    /// A fact of `dtype` and `shape`.
    pub fn new(dtype: DType, shape: impl Into<Vec<usize>>) -> Self {
        TensorFact {
            dtype,
            shape: shape.into(),
            quant: None,
        }
    }

    /// Number of elements (saturating: facts are checked against limits elsewhere).
    pub fn numel(&self) -> usize {
        self.shape.iter().fold(1usize, |a, &d| a.saturating_mul(d))
    }

    /// Rank.
    pub fn rank(&self) -> usize {
        self.shape.len()
    }
}
