//! [`AdaptiveAvgPool2d`]: PyTorch's `nn.AdaptiveAvgPool2d((oh, ow))` over NHWC activations
//! (AlexNet's `avgpool` to 6x6), as cheap as the sizes allow.

use super::{Layer, Net};
use crate::error::{Error, Result};
use crate::graph::ValueId;
use crate::ops::avg_pool2d::AvgPool2d;
use crate::ops::binary::{Binary, BinaryKind};
use crate::ops::conv2d::Padding;
use crate::ops::reduce_sum::ReduceSum;
use crate::ops::reshape::Reshape;
use crate::tensor::Tensor;
use spore_kernels_cpu::reference::window::Padding2d;

/// Adaptive average pooling to `[n, oh, ow, c]`: output cell `i` (per axis) averages input
/// cells `floor(i * in / out) .. ceil((i + 1) * in / out)`, PyTorch's windows.
///
/// No node when the size already matches; one `avg_pool2d` when `out` divides `in` (the
/// windows are then uniform); otherwise the exact general form, a broadcast multiply by a
/// fixed `[oh * ow, h * w, 1]` pooling matrix (constant `pool_matrix`) and a sum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdaptiveAvgPool2d {
    /// `[oh, ow]`.
    pub output: [usize; 2],
}

impl AdaptiveAvgPool2d {
    /// Pooling to `oh x ow`.
    pub fn new(oh: usize, ow: usize) -> AdaptiveAvgPool2d {
        AdaptiveAvgPool2d { output: [oh, ow] }
    }
}

/// PyTorch's window of output cell `i` of `out` over an axis of `len`.
fn window(i: usize, len: usize, out: usize) -> std::ops::Range<usize> {
    (i * len / out)..((i + 1) * len).div_ceil(out)
}

fn dim(v: usize) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Layer for AdaptiveAvgPool2d {
    fn build(&self, net: &mut Net, x: ValueId) -> Result<ValueId> {
        net.layer("adaptive_avg_pool2d", |net| {
            let shape = net.shape(x)?;
            let [oh, ow] = self.output;
            let &[_, h, w, c] = shape.as_slice() else {
                return Err(Error::invalid_param(
                    net.path(),
                    format!("expects NHWC input, got {shape:?}"),
                ));
            };
            if oh == 0 || ow == 0 || h == 0 || w == 0 {
                return Err(Error::invalid_param(net.path(), "sizes must be positive"));
            }
            if (h, w) == (oh, ow) {
                return Ok(x);
            }
            if h.is_multiple_of(oh) && w.is_multiple_of(ow) {
                let (kh, kw) = (h / oh, w / ow);
                let pool = AvgPool2d {
                    kernel: [kh, kw],
                    strides: [kh, kw],
                    padding: Padding::Explicit(Padding2d::ZERO),
                    count_include_pad: true,
                };
                return net.node("avg_pool2d", pool, &[x]);
            }
            let mut m = vec![0f32; oh * ow * h * w];
            for i in 0..oh {
                for j in 0..ow {
                    let (rows, cols) = (window(i, h, oh), window(j, w, ow));
                    let weight = 1.0 / (rows.len() * cols.len()) as f32;
                    for y in rows {
                        for xx in cols.clone() {
                            m[(i * ow + j) * h * w + y * w + xx] = weight;
                        }
                    }
                }
            }
            let matrix =
                net.fixed_constant("pool_matrix", Tensor::from_vec(&[oh * ow, h * w, 1], m)?)?;
            let flat = net.scope("reshape_in", |net| {
                net.node(
                    "reshape",
                    Reshape {
                        shape: vec![-1, 1, dim(h * w), dim(c)],
                    },
                    &[x],
                )
            })?;
            let weighted = net.scope("weighted", |net| {
                net.node(
                    "mul",
                    Binary {
                        kind: BinaryKind::Mul,
                    },
                    &[flat, matrix],
                )
            })?;
            let summed = net.scope("sum", |net| {
                net.node(
                    "sum",
                    ReduceSum {
                        axes: vec![2],
                        keep_dims: false,
                    },
                    &[weighted],
                )
            })?;
            net.node(
                "reshape",
                Reshape {
                    shape: vec![-1, dim(oh), dim(ow), dim(c)],
                },
                &[summed],
            )
        })
    }
}
