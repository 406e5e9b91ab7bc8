//! [`BatchNorm`]: inference-form batch normalisation over the channel (last) axis, as its own
//! node (folding it into the convolution before it is the planner's job).

use super::init::{Fans, Init};
use super::{Layer, Net};
use crate::error::{Error, Result};
use crate::graph::ValueId;
use crate::ops::batch_norm as op;

/// Batch norm with PyTorch's parameter names: trainable `weight` (gamma, init 1) and `bias`
/// (beta, init 0), non-trainable `running_mean` (0) and `running_var` (1), all `[c]`.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchNorm {
    /// Added to the variance (PyTorch's default 1e-5; MobileNetV3 uses 1e-3).
    pub eps: f64,
    /// Running-statistics momentum, PyTorch's convention (kept for training; inference
    /// ignores it).
    pub momentum: f64,
}

impl Default for BatchNorm {
    fn default() -> Self {
        BatchNorm {
            eps: 1e-5,
            momentum: 0.1,
        }
    }
}

impl BatchNorm {
    /// PyTorch's defaults: `eps = 1e-5`, `momentum = 0.1`.
    pub fn new() -> BatchNorm {
        BatchNorm::default()
    }

    /// With `eps`.
    pub fn eps(mut self, eps: f64) -> BatchNorm {
        self.eps = eps;
        self
    }
}

impl Layer for BatchNorm {
    fn build(&self, net: &mut Net, x: ValueId) -> Result<ValueId> {
        net.layer("batch_norm", |net| {
            let shape = net.shape(x)?;
            let Some(&c) = shape.last() else {
                return Err(Error::invalid_param(
                    net.path(),
                    "batch_norm needs rank >= 1 input",
                ));
            };
            // state_dict order: weight, bias, running_mean, running_var.
            let gamma = net.param("weight", &[c], Init::ONES, Fans::default())?;
            let beta = net.param("bias", &[c], Init::ZEROS, Fans::default())?;
            let mean = net.buffer("running_mean", &[c], Init::ZEROS)?;
            let var = net.buffer("running_var", &[c], Init::ONES)?;
            net.node(
                "batch_norm",
                op::BatchNorm { eps: self.eps },
                &[x, mean, var, gamma, beta],
            )
        })
    }
}
