//! MobileNetV2 exactly as torchvision's `mobilenet_v2(width_mult, num_classes)` (Sandler et
//! al. 2018), for cross-framework golden tests.
//!
//! `features.0`: `Conv2dNormActivation` 3x3/2 to `_make_divisible(32 * width)`, ReLU6;
//! `features.1..=17`: inverted residual blocks from the setting
//! `(t, c, n, s) = (1,16,1,1) (6,24,2,2) (6,32,3,2) (6,64,4,2) (6,96,3,1) (6,160,3,2)
//! (6,320,1,1)` (stride `s` on the first of `n` blocks, outputs `_make_divisible(c * width)`,
//! hidden `round(in * t)`; a residual add when stride 1 and in == out); `features.18`: 1x1 to
//! `_make_divisible(1280 * max(1, width))`, ReLU6; global average pooling; `classifier.0`
//! dropout 0.2 (identity here), `classifier.1` Linear.
//!
//! Parameter names are torchvision's `state_dict` keys: a block with `t != 1` has
//! `features.{i}.conv.0` (1x1 expand: `.0.weight`, `.1.{weight,bias,running_mean,
//! running_var}`), `conv.1` (3x3 depthwise, same children), `conv.2.weight` (1x1 project)
//! and `conv.3.*` (its batch norm); the `t = 1` block (`features.1`) lacks the expansion, so
//! its children are `conv.0` (depthwise), `conv.1.weight`, `conv.2.*`.
//!
//! Layouts (see [`super::torch`]): 1x1 and stem convolutions OIHW `[o, i, kh, kw]` -> OHWI
//! `[o, kh, kw, i]`; depthwise `[c, 1, 3, 3]` -> `[3, 3, c]`; `classifier.1.weight`
//! `[classes, last]` -> `[last, classes]`; batch-norm vectors as is (`num_batches_tracked`
//! is not needed). Padding is PyTorch's symmetric `(k - 1) / 2`, not TF's SAME.
//!
//! Initialisation as torchvision: convolutions `kaiming_normal_(mode="fan_out")`, batch norm
//! 1 / 0, classifier `normal(0, 0.01)` and zero bias. Standard config: 3,504,872 parameters.

use super::{Arch, ConvBnAct, ModelConfig, finish, make_divisible, start};
use crate::error::Result;
use crate::graph::{Graph, ValueId};
use crate::layers::{
    Act, ActivationKind, Add, BatchNorm, Conv2d, Dense, Dropout, GlobalAvgPool, Init, Layer, Merge,
    Net, Sequential,
};

/// torchvision's inverted residual setting `(t, c, n, s)`.
const SETTING: [(usize, usize, usize, usize); 7] = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
];

const RELU6: Option<Act> = Some(Act::Op(ActivationKind::Relu6));

/// torchvision's MobileNetV2 `InvertedResidual`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvertedResidual {
    /// Output channels.
    pub out_channels: usize,
    /// Stride of the depthwise convolution.
    pub stride: usize,
    /// Expansion ratio `t`.
    pub expand_ratio: usize,
}

impl Layer for InvertedResidual {
    fn build(&self, net: &mut Net, x: ValueId) -> Result<ValueId> {
        net.layer("inverted_residual", |net| {
            let inp = net.shape(x)?.last().copied().unwrap_or(0);
            // int(round(inp * expand_ratio)) of an integer product is the product.
            let hidden = inp * self.expand_ratio;
            let mut conv = Sequential::new();
            if self.expand_ratio != 1 {
                conv.push(ConvBnAct::new(hidden, 1, RELU6));
            }
            conv.push(
                ConvBnAct::new(hidden, 3, RELU6)
                    .depthwise()
                    .stride(self.stride),
            );
            conv.push(
                Conv2d::new(self.out_channels, 1)
                    .bias(false)
                    .init(Init::HE_FAN_OUT, Init::ZEROS),
            );
            conv.push(BatchNorm::new());
            let y = net.scope("conv", |net| conv.build(net, x))?;
            if self.stride == 1 && inp == self.out_channels {
                Add::new().build(net, &[x, y])
            } else {
                Ok(y)
            }
        })
    }
}

/// MobileNetV2 (torchvision's `mobilenet_v2(width_mult = cfg.width_multiplier,
/// num_classes = cfg.classes)`, with `cfg.in_channels` input channels).
pub fn mobilenet_v2(cfg: &ModelConfig) -> Result<Graph> {
    let (mut net, x) = start(cfg)?;
    let width = cfg.width_multiplier;
    let mut features = Sequential::new();
    features.push(ConvBnAct::new(make_divisible(32.0 * width, 8), 3, RELU6).stride(2));
    for (t, c, n, s) in SETTING {
        let out_channels = make_divisible(c as f64 * width, 8);
        for i in 0..n {
            let stride = if i == 0 { s } else { 1 };
            features.push(InvertedResidual {
                out_channels,
                stride,
                expand_ratio: t,
            });
        }
    }
    let last = make_divisible(1280.0 * width.max(1.0), 8);
    features.push(ConvBnAct::new(last, 1, RELU6));
    let x = net.scope("features", |net| features.build(net, x))?;
    let x = net.scope("avgpool", |net| GlobalAvgPool.build(net, x))?;
    let x = net.scope("classifier", |net| {
        net.scope("0", |net| Dropout::new(0.2).build(net, x))
    })?;
    net.name_next_node("logits");
    let fc = Dense::new(cfg.classes).init(
        Init::Normal {
            mean: 0.0,
            std: 0.01,
        },
        Init::ZEROS,
    );
    let y = net.scope("classifier", |net| net.scope("1", |net| fc.build(net, x)))?;
    finish(net, Arch::MobileNetV2, cfg, y)
}
