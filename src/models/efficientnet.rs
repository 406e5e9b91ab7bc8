//! EfficientNet-B0 as torchvision's `efficientnet_b0` (Tan & Le 2019).
//!
//! `features.0`: 3x3/2 `Conv2dNormActivation` to 32 (scaled), SiLU; `features.1..=7`: one
//! stage per row of `(expand, kernel, stride, in, out, layers)` = `(1,3,1,32,16,1)
//! (6,3,2,16,24,2) (6,5,2,24,40,2) (6,3,2,40,80,3) (6,5,1,80,112,3) (6,5,2,112,192,4)
//! (6,3,1,192,320,1)` of MBConv blocks `features.{s}.{j}` (stride and input width only on
//! the first); `features.8`: 1x1 to `4 * 320` (scaled), SiLU; global average pooling;
//! `classifier.0` dropout 0.2 (identity), `classifier.1` Linear.
//!
//! An MBConv block is `features.{s}.{j}.block` with children: 1x1 expand
//! `Conv2dNormActivation` (when `expanded != in`), depthwise `Conv2dNormActivation`,
//! `SqueezeExcitation` (`fc1` / `fc2`, squeeze `max(1, in / 4)`, SiLU, sigmoid gate), linear
//! 1x1 projection; a residual add when stride 1 and in == out (stochastic depth is the
//! identity at inference). SiLU has no op: it is a sigmoid node and a multiply.
//!
//! Names are torchvision's `state_dict` keys (`features.1.0.block.0.0.weight`,
//! `features.2.0.block.2.fc1.bias`, `classifier.1.weight`, ...). Layouts as in
//! [`super::torch`]: convolutions OIHW -> OHWI, depthwise `[c, 1, k, k]` -> `[k, k, c]`,
//! Linear `[out, in]` -> `[in, out]`. Batch norm eps 1e-5 (torchvision's B0 default).
//!
//! Channels scale as `_make_divisible(c * width, 8)` (torchvision's `width_mult`; depth
//! stays B0's). Initialisation as torchvision: convolutions `kaiming_normal_(mode=
//! "fan_out")` with zero biases, batch norm 1 / 0, Linear uniform `±1/sqrt(out)` with zero
//! bias. Standard config: 5,288,548 parameters.

use super::{Arch, ConvBnAct, ModelConfig, finish, make_divisible, start};
use crate::error::Result;
use crate::graph::{Graph, ValueId};
use crate::layers::{
    Act, Add, Dense, Dropout, GlobalAvgPool, Init, Layer, Merge, Net, Sequential, SqueezeExcite,
};

/// `(expand_ratio, kernel, stride, in, out, layers)` of B0.
const STAGES: [(usize, usize, usize, usize, usize, usize); 7] = [
    (1, 3, 1, 32, 16, 1),
    (6, 3, 2, 16, 24, 2),
    (6, 5, 2, 24, 40, 2),
    (6, 3, 2, 40, 80, 3),
    (6, 5, 1, 80, 112, 3),
    (6, 5, 2, 112, 192, 4),
    (6, 3, 1, 192, 320, 1),
];

/// torchvision's `MBConv` (channel counts already scaled).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MbConv {
    /// Expansion ratio.
    pub expand_ratio: usize,
    /// Depthwise kernel size.
    pub kernel: usize,
    /// Depthwise stride.
    pub stride: usize,
    /// Output channels.
    pub out_channels: usize,
}

impl Layer for MbConv {
    fn build(&self, net: &mut Net, x: ValueId) -> Result<ValueId> {
        net.layer("mbconv", |net| {
            let inp = net.shape(x)?.last().copied().unwrap_or(0);
            let expanded = make_divisible((inp * self.expand_ratio) as f64, 8);
            let mut block = Sequential::new();
            if expanded != inp {
                block.push(ConvBnAct::new(expanded, 1, Some(Act::Silu)));
            }
            block.push(
                ConvBnAct::new(expanded, self.kernel, Some(Act::Silu))
                    .depthwise()
                    .stride(self.stride),
            );
            let mut se = SqueezeExcite::new((inp / 4).max(1));
            se.activation = Act::Silu;
            se.weight_init = Init::HE_FAN_OUT;
            se.bias_init = Init::ZEROS;
            block.push(se);
            block.push(ConvBnAct::new(self.out_channels, 1, None));
            let y = net.scope("block", |net| block.build(net, x))?;
            if self.stride == 1 && inp == self.out_channels {
                Add::new().build(net, &[x, y])
            } else {
                Ok(y)
            }
        })
    }
}

/// EfficientNet-B0.
pub fn efficientnet_b0(cfg: &ModelConfig) -> Result<Graph> {
    let (mut net, x) = start(cfg)?;
    let adjust = |c: usize| make_divisible(c as f64 * cfg.width_multiplier, 8);
    let mut features = Sequential::new();
    features.push(ConvBnAct::new(adjust(32), 3, Some(Act::Silu)).stride(2));
    for (expand_ratio, kernel, stride, _, out, layers) in STAGES {
        let mut stage = Sequential::new();
        for j in 0..layers {
            let stride = if j == 0 { stride } else { 1 };
            stage.push(MbConv {
                expand_ratio,
                kernel,
                stride,
                out_channels: adjust(out),
            });
        }
        features.push(stage);
    }
    features.push(ConvBnAct::new(4 * adjust(320), 1, Some(Act::Silu)));
    let x = net.scope("features", |net| features.build(net, x))?;
    let x = net.scope("avgpool", |net| GlobalAvgPool.build(net, x))?;
    let x = net.scope("classifier", |net| {
        net.scope("0", |net| Dropout::new(0.2).build(net, x))
    })?;
    net.name_next_node("logits");
    let bound = 1.0 / (cfg.classes as f32).sqrt();
    let fc = Dense::new(cfg.classes).init(
        Init::Uniform {
            low: -bound,
            high: bound,
        },
        Init::ZEROS,
    );
    let y = net.scope("classifier", |net| net.scope("1", |net| fc.build(net, x)))?;
    finish(net, Arch::EfficientNetB0, cfg, y)
}
