//! [`Conv2d`]: a 2-D convolution layer (OHWI weight, optional bias, optional fused
//! activation), PyTorch's `nn.Conv2d` in NHWC.

use super::init::{Fans, Init};
use super::{ActivationKind, Layer, Net, Padding, Padding2d, pad};
use crate::error::{Error, Result};
use crate::graph::ValueId;
use crate::ops::conv2d as op;

/// 2-D convolution. Parameters `weight` `[filters, kh, kw, c_in / groups]` and `bias`
/// `[filters]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Conv2d {
    /// Output channels.
    pub filters: usize,
    /// `[kh, kw]`.
    pub kernel_size: [usize; 2],
    /// `[stride_h, stride_w]`.
    pub strides: [usize; 2],
    /// Padding (PyTorch's default is none).
    pub padding: Padding,
    /// `[dilation_h, dilation_w]`.
    pub dilations: [usize; 2],
    /// Channel groups (1 = dense convolution).
    pub groups: usize,
    /// Add a bias.
    pub use_bias: bool,
    /// Activation fused into the convolution (applied after the bias).
    pub activation: Option<ActivationKind>,
    /// Weight initialiser (PyTorch's default: [`Init::TORCH_WEIGHT`]).
    pub weight_init: Init,
    /// Bias initialiser (PyTorch's default: [`Init::BiasUniform`]).
    pub bias_init: Init,
}

impl Conv2d {
    /// `filters` outputs, a square `kernel`, stride 1, no padding, a bias: `nn.Conv2d`'s
    /// defaults.
    pub fn new(filters: usize, kernel: usize) -> Conv2d {
        Conv2d {
            filters,
            kernel_size: [kernel, kernel],
            strides: [1, 1],
            padding: Padding::Explicit(Padding2d::ZERO),
            dilations: [1, 1],
            groups: 1,
            use_bias: true,
            activation: None,
            weight_init: Init::TORCH_WEIGHT,
            bias_init: Init::BiasUniform,
        }
    }

    /// With stride `s` on both axes.
    pub fn stride(mut self, s: usize) -> Conv2d {
        self.strides = [s, s];
        self
    }

    /// With `p` cells of padding on every side.
    pub fn pad(mut self, p: usize) -> Conv2d {
        self.padding = pad(p);
        self
    }

    /// With dilation `d` on both axes.
    pub fn dilation(mut self, d: usize) -> Conv2d {
        self.dilations = [d, d];
        self
    }

    /// With `g` channel groups.
    pub fn groups(mut self, g: usize) -> Conv2d {
        self.groups = g;
        self
    }

    /// With or without a bias.
    pub fn bias(mut self, use_bias: bool) -> Conv2d {
        self.use_bias = use_bias;
        self
    }

    /// With a fused activation.
    pub fn act(mut self, kind: ActivationKind) -> Conv2d {
        self.activation = Some(kind);
        self
    }

    /// With weight initialiser `w` and bias initialiser `b`.
    pub fn init(mut self, w: Init, b: Init) -> Conv2d {
        self.weight_init = w;
        self.bias_init = b;
        self
    }
}

impl Layer for Conv2d {
    fn build(&self, net: &mut Net, x: ValueId) -> Result<ValueId> {
        net.layer("conv2d", |net| {
            let shape = net.shape(x)?;
            let &[_, _, _, c_in] = shape.as_slice() else {
                return Err(Error::invalid_param(
                    net.path(),
                    format!("conv2d expects NHWC input, got {shape:?}"),
                ));
            };
            if self.groups == 0
                || !c_in.is_multiple_of(self.groups)
                || !self.filters.is_multiple_of(self.groups)
            {
                return Err(Error::invalid_param(
                    net.path(),
                    format!(
                        "{c_in} input and {} output channels do not split into {} groups",
                        self.filters, self.groups
                    ),
                ));
            }
            let [kh, kw] = self.kernel_size;
            let per_group = c_in / self.groups;
            let fans = Fans::new(per_group * kh * kw, self.filters * kh * kw);
            let w = net.param(
                "weight",
                &[self.filters, kh, kw, per_group],
                self.weight_init,
                fans,
            )?;
            let mut inputs = vec![x, w];
            if self.use_bias {
                inputs.push(net.param("bias", &[self.filters], self.bias_init, fans)?);
            }
            let conv = op::Conv2d {
                strides: self.strides,
                dilations: self.dilations,
                padding: self.padding,
                groups: self.groups,
                act: self.activation,
            };
            net.node("conv2d", conv, &inputs)
        })
    }
}
