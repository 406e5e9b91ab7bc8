//! [`Dense`]: a fully connected layer (PyTorch's `nn.Linear`) as one `matmul` node with a
//! shared `[in, units]` weight, an optional bias and an optional fused activation.

use super::init::{Fans, Init};
use super::{ActivationKind, Layer, Net};
use crate::error::{Error, Result};
use crate::graph::ValueId;
use crate::models::torch::TorchLayout;
use crate::ops::matmul::MatMul;

/// Fully connected layer over the last axis: `y = act(x @ weight + bias)`. Parameters
/// `weight` `[in, units]` (PyTorch's `[out, in]` transposed; see [`crate::models::torch`])
/// and `bias` `[units]`. The input size is read from `x` at build time.
#[derive(Debug, Clone, PartialEq)]
pub struct Dense {
    /// Output features.
    pub units: usize,
    /// Activation fused into the matmul (applied after the bias).
    pub activation: Option<ActivationKind>,
    /// Add a bias.
    pub use_bias: bool,
    /// Weight initialiser (PyTorch's default: [`Init::TORCH_WEIGHT`]).
    pub weight_init: Init,
    /// Bias initialiser (PyTorch's default: [`Init::BiasUniform`]).
    pub bias_init: Init,
}

impl Dense {
    /// `units` outputs with a bias, no activation and PyTorch's default initialisers.
    pub fn new(units: usize) -> Dense {
        Dense {
            units,
            activation: None,
            use_bias: true,
            weight_init: Init::TORCH_WEIGHT,
            bias_init: Init::BiasUniform,
        }
    }

    /// With a fused activation.
    pub fn act(mut self, kind: ActivationKind) -> Dense {
        self.activation = Some(kind);
        self
    }

    /// With or without a bias.
    pub fn bias(mut self, use_bias: bool) -> Dense {
        self.use_bias = use_bias;
        self
    }

    /// With weight initialiser `w` and bias initialiser `b`.
    pub fn init(mut self, w: Init, b: Init) -> Dense {
        self.weight_init = w;
        self.bias_init = b;
        self
    }
}

impl Layer for Dense {
    fn build(&self, net: &mut Net, x: ValueId) -> Result<ValueId> {
        net.layer("dense", |net| {
            let shape = net.shape(x)?;
            let Some(&features) = shape.last().filter(|_| shape.len() >= 2) else {
                return Err(Error::invalid_param(
                    net.path(),
                    format!("dense expects rank >= 2 input, got {shape:?}"),
                ));
            };
            let fans = Fans::new(features, self.units);
            let w = net.param("weight", &[features, self.units], self.weight_init, fans)?;
            if let Some([h, w_, c]) = net.flattened_nhwc(x).filter(|&[h, w, _]| h * w > 1) {
                let name = net.qualify("weight");
                net.set_torch_layout(&name, TorchLayout::LinearFromNhwc { h, w: w_, c });
            }
            let mut inputs = vec![x, w];
            if self.use_bias {
                inputs.push(net.param("bias", &[self.units], self.bias_init, fans)?);
            }
            let op = MatMul {
                transpose_a: false,
                transpose_b: false,
                act: self.activation,
            };
            net.node("dense", op, &inputs)
        })
    }
}
