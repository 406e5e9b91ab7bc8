//! [`MaxPool2d`]: 2-D max pooling over NHWC activations.

use super::{Layer, Net, Padding, Padding2d, pad};
use crate::error::Result;
use crate::graph::ValueId;
use crate::ops::max_pool2d as op;

/// 2-D max pooling (PyTorch's `nn.MaxPool2d`, without `ceil_mode`).
#[derive(Debug, Clone, PartialEq)]
pub struct MaxPool2d {
    /// `[kh, kw]`.
    pub kernel: [usize; 2],
    /// `[stride_h, stride_w]`.
    pub strides: [usize; 2],
    /// Padding (padding cells never win).
    pub padding: Padding,
    /// `[dilation_h, dilation_w]`.
    pub dilations: [usize; 2],
}

impl MaxPool2d {
    /// A square `kernel` window moved by `stride`, no padding.
    pub fn new(kernel: usize, stride: usize) -> MaxPool2d {
        MaxPool2d {
            kernel: [kernel, kernel],
            strides: [stride, stride],
            padding: Padding::Explicit(Padding2d::ZERO),
            dilations: [1, 1],
        }
    }

    /// With `p` cells of padding on every side.
    pub fn pad(mut self, p: usize) -> MaxPool2d {
        self.padding = pad(p);
        self
    }
}

impl Layer for MaxPool2d {
    fn build(&self, net: &mut Net, x: ValueId) -> Result<ValueId> {
        net.layer("max_pool2d", |net| {
            let pool = op::MaxPool2d {
                kernel: self.kernel,
                strides: self.strides,
                dilations: self.dilations,
                padding: self.padding,
            };
            net.node("max_pool2d", pool, &[x])
        })
    }
}
