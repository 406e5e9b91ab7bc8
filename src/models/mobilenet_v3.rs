//! MobileNetV3 small and large as torchvision's `mobilenet_v3_small` /
//! `mobilenet_v3_large` (Howard et al. 2019; `reduced_tail = False`, `dilated = False`).
//!
//! `features.0`: 3x3/2 `Conv2dNormActivation` to 16 (scaled), hard-swish;
//! `features.1..`: inverted residual blocks from torchvision's table `(in, kernel, expanded,
//! out, SE, activation, stride)`, every channel count `_make_divisible(c * width, 8)`; each
//! block is `features.{i}.block` with children: `Conv2dNormActivation` 1x1 expand (only when
//! `expanded != in`), depthwise `Conv2dNormActivation` (stride), `SqueezeExcitation` (`fc1`,
//! `fc2` 1x1 convolutions with bias; squeeze `_make_divisible(expanded / 4, 8)`, ReLU,
//! hard-sigmoid gate) when SE, and the linear 1x1 projection; a residual add when stride 1
//! and in == out. Then a 1x1 `Conv2dNormActivation` to `6 * last out`, hard-swish; global
//! average pooling; `classifier.0` Linear to `_make_divisible(1280 * width, 8)` (small: 1024),
//! hard-swish (fused), `classifier.2` dropout 0.2 (identity), `classifier.3` Linear. Batch
//! norm eps is 1e-3 everywhere (torchvision's `norm_layer`).
//!
//! Names are torchvision's `state_dict` keys (`features.0.0.weight`,
//! `features.4.block.2.fc1.weight`, `classifier.3.bias`, ...). Layouts (see
//! [`super::torch`]): convolutions (the SE ones included) OIHW -> OHWI, depthwise
//! `[c, 1, k, k]` -> `[k, k, c]`, Linear `[out, in]` -> `[in, out]`.
//!
//! Initialisation as torchvision: convolutions `kaiming_normal_(mode="fan_out")` with zero
//! biases, batch norm 1 / 0, Linear `normal(0, 0.01)` with zero bias. Standard config:
//! 2,542,856 (small) and 5,483,032 (large) parameters.

use super::{Arch, ConvBnAct, ModelConfig, finish, make_divisible, start};
use crate::error::Result;
use crate::graph::{Graph, ValueId};
use crate::layers::{
    Act, ActivationKind, Add, Dense, Dropout, GlobalAvgPool, Init, Layer, Merge, Net, Sequential,
    SqueezeExcite,
};

const RE: Act = Act::Op(ActivationKind::Relu);
const HS: Act = Act::Op(ActivationKind::HardSwish);
const EPS: f64 = 1e-3;

/// One row of torchvision's table: `(in, kernel, expanded, out, se, activation, stride)`.
type Row = (usize, usize, usize, usize, bool, Act, usize);

const LARGE: [Row; 15] = [
    (16, 3, 16, 16, false, RE, 1),
    (16, 3, 64, 24, false, RE, 2),
    (24, 3, 72, 24, false, RE, 1),
    (24, 5, 72, 40, true, RE, 2),
    (40, 5, 120, 40, true, RE, 1),
    (40, 5, 120, 40, true, RE, 1),
    (40, 3, 240, 80, false, HS, 2),
    (80, 3, 200, 80, false, HS, 1),
    (80, 3, 184, 80, false, HS, 1),
    (80, 3, 184, 80, false, HS, 1),
    (80, 3, 480, 112, true, HS, 1),
    (112, 3, 672, 112, true, HS, 1),
    (112, 5, 672, 160, true, HS, 2),
    (160, 5, 960, 160, true, HS, 1),
    (160, 5, 960, 160, true, HS, 1),
];

const SMALL: [Row; 11] = [
    (16, 3, 16, 16, true, RE, 2),
    (16, 3, 72, 24, false, RE, 2),
    (24, 3, 88, 24, false, RE, 1),
    (24, 5, 96, 40, true, HS, 2),
    (40, 5, 240, 40, true, HS, 1),
    (40, 5, 240, 40, true, HS, 1),
    (40, 5, 120, 48, true, HS, 1),
    (48, 5, 144, 48, true, HS, 1),
    (48, 5, 288, 96, true, HS, 2),
    (96, 5, 576, 96, true, HS, 1),
    (96, 5, 576, 96, true, HS, 1),
];

/// torchvision's MobileNetV3 `InvertedResidual` (channel counts already scaled).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InvertedResidualV3 {
    /// Depthwise kernel size.
    pub kernel: usize,
    /// Expanded (hidden) channels.
    pub expanded: usize,
    /// Output channels.
    pub out_channels: usize,
    /// With a squeeze-and-excite gate.
    pub use_se: bool,
    /// ReLU or hard-swish.
    pub activation: Act,
    /// Depthwise stride.
    pub stride: usize,
}

impl Layer for InvertedResidualV3 {
    fn build(&self, net: &mut Net, x: ValueId) -> Result<ValueId> {
        net.layer("inverted_residual", |net| {
            let inp = net.shape(x)?.last().copied().unwrap_or(0);
            let act = Some(self.activation);
            let mut block = Sequential::new();
            if self.expanded != inp {
                block.push(ConvBnAct::new(self.expanded, 1, act).eps(EPS));
            }
            block.push(
                ConvBnAct::new(self.expanded, self.kernel, act)
                    .depthwise()
                    .stride(self.stride)
                    .eps(EPS),
            );
            if self.use_se {
                let mut se = SqueezeExcite::new(make_divisible((self.expanded / 4) as f64, 8));
                se.scale_activation = Act::Op(ActivationKind::HardSigmoid);
                se.weight_init = Init::HE_FAN_OUT;
                se.bias_init = Init::ZEROS;
                block.push(se);
            }
            block.push(ConvBnAct::new(self.out_channels, 1, None).eps(EPS));
            let y = net.scope("block", |net| block.build(net, x))?;
            if self.stride == 1 && inp == self.out_channels {
                Add::new().build(net, &[x, y])
            } else {
                Ok(y)
            }
        })
    }
}

fn mobilenet_v3(cfg: &ModelConfig, arch: Arch, rows: &[Row], last_channel: usize) -> Result<Graph> {
    let (mut net, x) = start(cfg)?;
    let adjust = |c: usize| make_divisible(c as f64 * cfg.width_multiplier, 8);
    let mut features = Sequential::new();
    let first = rows.first().map_or(16, |r| r.0);
    features.push(
        ConvBnAct::new(adjust(first), 3, Some(HS))
            .stride(2)
            .eps(EPS),
    );
    for &(_, kernel, expanded, out, use_se, activation, stride) in rows {
        features.push(InvertedResidualV3 {
            kernel,
            expanded: adjust(expanded),
            out_channels: adjust(out),
            use_se,
            activation,
            stride,
        });
    }
    let last_out = adjust(rows.last().map_or(16, |r| r.3));
    features.push(ConvBnAct::new(6 * last_out, 1, Some(HS)).eps(EPS));
    let x = net.scope("features", |net| features.build(net, x))?;
    let x = net.scope("avgpool", |net| GlobalAvgPool.build(net, x))?;
    let linear = |units| {
        Dense::new(units).init(
            Init::Normal {
                mean: 0.0,
                std: 0.01,
            },
            Init::ZEROS,
        )
    };
    let hidden = linear(adjust(last_channel)).act(ActivationKind::HardSwish);
    let x = net.scope("classifier", |net| {
        let x = net.scope("0", |net| hidden.build(net, x))?;
        net.scope("2", |net| Dropout::new(0.2).build(net, x))
    })?;
    net.name_next_node("logits");
    let y = net.scope("classifier", |net| {
        net.scope("3", |net| linear(cfg.classes).build(net, x))
    })?;
    finish(net, arch, cfg, y)
}

/// MobileNetV3-Small.
pub fn mobilenet_v3_small(cfg: &ModelConfig) -> Result<Graph> {
    mobilenet_v3(cfg, Arch::MobileNetV3Small, &SMALL, 1024)
}

/// MobileNetV3-Large.
pub fn mobilenet_v3_large(cfg: &ModelConfig) -> Result<Graph> {
    mobilenet_v3(cfg, Arch::MobileNetV3Large, &LARGE, 1280)
}
