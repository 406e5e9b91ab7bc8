//! ResNet-18 and ResNet-50 as torchvision's `resnet18` / `resnet50` (ResNet v1.5: the
//! bottleneck's stride sits on its 3x3 convolution).
//!
//! Stem: `conv1` (64, 7x7/2, pad 3, no bias), `bn1`, relu, `maxpool` (3/2, pad 1); stages
//! `layer1`..`layer4` (64, 128, 256, 512 planes; stride 2 from `layer2` on) of
//! [`ResidualBlock`]s `[2, 2, 2, 2]` or bottlenecks `[3, 4, 6, 3]` (expansion 4); global
//! average pooling; `fc`. A block's shortcut is `downsample` (`0`: 1x1 conv with the block's
//! stride, `1`: batch norm) when the stride is not 1 or the channel count changes.
//!
//! Parameter names are torchvision's keys (`conv1.weight`, `bn1.running_mean`,
//! `layer1.0.conv1.weight`, `layer2.0.downsample.0.weight`, `fc.weight`, ...). Layouts: conv
//! weights OIHW -> OHWI, `fc.weight` `[out, in]` -> `[in, out]`, batch-norm vectors as is.
//! Initialisation as torchvision: convolutions `kaiming_normal_(mode="fan_out")`, batch norm
//! 1 / 0, `fc` PyTorch's default.
//!
//! The width multiplier scales the planes (rounded with [`super::make_divisible`]).
//! Standard config: 11,689,512 (ResNet-18) and 25,557,032 (ResNet-50) parameters.

use super::{Arch, ModelConfig, finish, make_divisible, start};
use crate::error::Result;
use crate::graph::{Graph, ValueId};
use crate::layers::{
    Act, ActivationKind, Add, BatchNorm, Conv2d, Dense, GlobalAvgPool, Init, Layer, MaxPool2d,
    Merge, Net,
};

const RELU: ActivationKind = ActivationKind::Relu;

fn conv(filters: usize, kernel: usize, stride: usize) -> Conv2d {
    Conv2d::new(filters, kernel)
        .stride(stride)
        .pad(kernel / 2)
        .bias(false)
        .init(Init::HE_FAN_OUT, Init::ZEROS)
}

/// `conv` then `bn` (named `conv{i}` / `bn{i}`).
fn conv_bn(net: &mut Net, i: usize, c: Conv2d, x: ValueId) -> Result<ValueId> {
    let y = net.scope(&format!("conv{i}"), |net| c.build(net, x))?;
    net.scope(&format!("bn{i}"), |net| BatchNorm::new().build(net, y))
}

/// A residual block: torchvision's `BasicBlock` (two 3x3 convolutions) or `Bottleneck` (1x1
/// reduce, 3x3 with the stride, 1x1 expand by 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResidualBlock {
    /// Planes (output channels before the expansion).
    pub planes: usize,
    /// Stride of the block.
    pub stride: usize,
    /// Bottleneck (expansion 4) rather than basic (expansion 1).
    pub bottleneck: bool,
}

impl ResidualBlock {
    /// Output channels: `planes * expansion`.
    pub fn out_channels(&self) -> usize {
        if self.bottleneck {
            self.planes * 4
        } else {
            self.planes
        }
    }
}

impl Layer for ResidualBlock {
    fn build(&self, net: &mut Net, x: ValueId) -> Result<ValueId> {
        net.layer("block", |net| {
            let c_in = net.shape(x)?.last().copied().unwrap_or(0);
            let out_c = self.out_channels();
            let relu =
                |net: &mut Net, name: &str, y| net.scope(name, |net| Act::Op(RELU).build(net, y));
            let y = if self.bottleneck {
                let y = conv_bn(net, 1, conv(self.planes, 1, 1), x)?;
                let y = relu(net, "relu1", y)?;
                let y = conv_bn(net, 2, conv(self.planes, 3, self.stride), y)?;
                let y = relu(net, "relu2", y)?;
                conv_bn(net, 3, conv(out_c, 1, 1), y)?
            } else {
                let y = conv_bn(net, 1, conv(self.planes, 3, self.stride), x)?;
                let y = relu(net, "relu1", y)?;
                conv_bn(net, 2, conv(self.planes, 3, 1), y)?
            };
            let identity = if self.stride != 1 || c_in != out_c {
                net.scope("downsample", |net| {
                    let d = net.scope("0", |net| conv(out_c, 1, self.stride).build(net, x))?;
                    net.scope("1", |net| BatchNorm::new().build(net, d))
                })?
            } else {
                x
            };
            Add {
                activation: Some(RELU),
            }
            .build(net, &[y, identity])
        })
    }
}

fn resnet(cfg: &ModelConfig, arch: Arch, blocks: [usize; 4], bottleneck: bool) -> Result<Graph> {
    let (mut net, x) = start(cfg)?;
    let w = |c: f64| make_divisible(c * cfg.width_multiplier, 8);
    let x = conv_bn(&mut net, 1, conv(w(64.0), 7, 2), x)?;
    let x = net.scope("relu", |net| Act::Op(RELU).build(net, x))?;
    let mut x = net.scope("maxpool", |net| MaxPool2d::new(3, 2).pad(1).build(net, x))?;
    for (stage, (&n, planes)) in blocks.iter().zip([64.0, 128.0, 256.0, 512.0]).enumerate() {
        let planes = w(planes);
        x = net.scope(&format!("layer{}", stage + 1), |net| {
            (0..n).try_fold(x, |x, i| {
                let stride = if stage > 0 && i == 0 { 2 } else { 1 };
                net.scope(&i.to_string(), |net| {
                    ResidualBlock {
                        planes,
                        stride,
                        bottleneck,
                    }
                    .build(net, x)
                })
            })
        })?;
    }
    let x = net.scope("avgpool", |net| GlobalAvgPool.build(net, x))?;
    net.name_next_node("logits");
    let y = net.scope("fc", |net| Dense::new(cfg.classes).build(net, x))?;
    finish(net, arch, cfg, y)
}

/// ResNet-18.
pub fn resnet18(cfg: &ModelConfig) -> Result<Graph> {
    resnet(cfg, Arch::ResNet18, [2, 2, 2, 2], false)
}

/// ResNet-50.
pub fn resnet50(cfg: &ModelConfig) -> Result<Graph> {
    resnet(cfg, Arch::ResNet50, [3, 4, 6, 3], true)
}
