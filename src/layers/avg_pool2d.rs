//! [`AvgPool2d`]: 2-D average pooling over NHWC activations.

use super::{Layer, Net, Padding, Padding2d, pad};
use crate::error::Result;
use crate::graph::ValueId;
use crate::ops::avg_pool2d as op;

/// 2-D average pooling (PyTorch's `nn.AvgPool2d`, without `ceil_mode`).
#[derive(Debug, Clone, PartialEq)]
pub struct AvgPool2d {
    /// `[kh, kw]`.
    pub kernel: [usize; 2],
    /// `[stride_h, stride_w]`.
    pub strides: [usize; 2],
    /// Padding.
    pub padding: Padding,
    /// Divide by the whole window, padding included (PyTorch's default `true`).
    pub count_include_pad: bool,
}

impl AvgPool2d {
    /// A square `kernel` window moved by `stride`, no padding, PyTorch's divisor.
    pub fn new(kernel: usize, stride: usize) -> AvgPool2d {
        AvgPool2d {
            kernel: [kernel, kernel],
            strides: [stride, stride],
            padding: Padding::Explicit(Padding2d::ZERO),
            count_include_pad: true,
        }
    }

    /// With `p` cells of padding on every side.
    pub fn pad(mut self, p: usize) -> AvgPool2d {
        self.padding = pad(p);
        self
    }
}

impl Layer for AvgPool2d {
    fn build(&self, net: &mut Net, x: ValueId) -> Result<ValueId> {
        net.layer("avg_pool2d", |net| {
            let pool = op::AvgPool2d {
                kernel: self.kernel,
                strides: self.strides,
                padding: self.padding,
                count_include_pad: self.count_include_pad,
            };
            net.node("avg_pool2d", pool, &[x])
        })
    }
}
