//! [`DepthwiseConv2d`]: depthwise convolution with a channel multiplier (PyTorch's
//! `nn.Conv2d(c, c * m, k, groups=c)`), weight `[kh, kw, c * m]`.

use super::init::{Fans, Init};
use super::{ActivationKind, Layer, Net, Padding, Padding2d, pad};
use crate::error::{Error, Result};
use crate::graph::ValueId;
use crate::ops::depthwise_conv2d as op;

/// Depthwise 2-D convolution: output channel `ic * multiplier + m` filters input channel
/// `ic` (PyTorch's grouped-convolution order). Parameters `weight` `[kh, kw, c * m]` and
/// `bias` `[c * m]`.
#[derive(Debug, Clone, PartialEq)]
pub struct DepthwiseConv2d {
    /// `[kh, kw]`.
    pub kernel_size: [usize; 2],
    /// `[stride_h, stride_w]`.
    pub strides: [usize; 2],
    /// Padding.
    pub padding: Padding,
    /// `[dilation_h, dilation_w]`.
    pub dilations: [usize; 2],
    /// Output channels per input channel.
    pub multiplier: usize,
    /// Add a bias.
    pub use_bias: bool,
    /// Activation fused into the convolution.
    pub activation: Option<ActivationKind>,
    /// Weight initialiser (fans as PyTorch computes them on `[c * m, 1, kh, kw]`).
    pub weight_init: Init,
    /// Bias initialiser.
    pub bias_init: Init,
}

impl DepthwiseConv2d {
    /// A square `kernel`, stride 1, no padding, multiplier 1, a bias, PyTorch's default
    /// initialisers.
    pub fn new(kernel: usize) -> DepthwiseConv2d {
        DepthwiseConv2d {
            kernel_size: [kernel, kernel],
            strides: [1, 1],
            padding: Padding::Explicit(Padding2d::ZERO),
            dilations: [1, 1],
            multiplier: 1,
            use_bias: true,
            activation: None,
            weight_init: Init::TORCH_WEIGHT,
            bias_init: Init::BiasUniform,
        }
    }

    /// With stride `s` on both axes.
    pub fn stride(mut self, s: usize) -> DepthwiseConv2d {
        self.strides = [s, s];
        self
    }

    /// With `p` cells of padding on every side.
    pub fn pad(mut self, p: usize) -> DepthwiseConv2d {
        self.padding = pad(p);
        self
    }

    /// With dilation `d` on both axes.
    pub fn dilation(mut self, d: usize) -> DepthwiseConv2d {
        self.dilations = [d, d];
        self
    }

    /// With or without a bias.
    pub fn bias(mut self, use_bias: bool) -> DepthwiseConv2d {
        self.use_bias = use_bias;
        self
    }

    /// With a fused activation.
    pub fn act(mut self, kind: ActivationKind) -> DepthwiseConv2d {
        self.activation = Some(kind);
        self
    }

    /// With weight initialiser `w` and bias initialiser `b`.
    pub fn init(mut self, w: Init, b: Init) -> DepthwiseConv2d {
        self.weight_init = w;
        self.bias_init = b;
        self
    }
}

impl Layer for DepthwiseConv2d {
    fn build(&self, net: &mut Net, x: ValueId) -> Result<ValueId> {
        net.layer("depthwise_conv2d", |net| {
            let shape = net.shape(x)?;
            let &[_, _, _, c_in] = shape.as_slice() else {
                return Err(Error::invalid_param(
                    net.path(),
                    format!("depthwise_conv2d expects NHWC input, got {shape:?}"),
                ));
            };
            if self.multiplier == 0 {
                return Err(Error::invalid_param(
                    net.path(),
                    "multiplier must be positive",
                ));
            }
            let [kh, kw] = self.kernel_size;
            let c_out = c_in * self.multiplier;
            let fans = Fans::new(kh * kw, c_out * kh * kw);
            let w = net.param("weight", &[kh, kw, c_out], self.weight_init, fans)?;
            let mut inputs = vec![x, w];
            if self.use_bias {
                inputs.push(net.param("bias", &[c_out], self.bias_init, fans)?);
            }
            let conv = op::DepthwiseConv2d {
                strides: self.strides,
                dilations: self.dilations,
                padding: self.padding,
                act: self.activation,
            };
            net.node("depthwise_conv2d", conv, &inputs)
        })
    }
}
