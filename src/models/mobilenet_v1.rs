//! MobileNetV1 (Howard et al. 2017, "MobileNets"): a 3x3/2 stem convolution and 13
//! depthwise-separable blocks (3x3 depthwise + batch norm + activation, 1x1 pointwise + batch
//! norm + activation), global average pooling and a linear classifier.
//!
//! torchvision has no MobileNetV1, so this follows the paper's table 1 with the TensorFlow /
//! Keras reference choices: ReLU6 activations, no convolution biases, batch norm eps 1e-3,
//! and (as in the other zoo models) torchvision-style names: `features.0` is the stem
//! (`features.0.0.weight`, `features.0.1.*`), `features.{i}` for `i` in 1..=13 is a block
//! with children `0` (depthwise `Conv2dNormActivation`: `features.{i}.0.0.weight`
//! `[3, 3, c]`, PyTorch `[c, 1, 3, 3]`) and `1` (pointwise: `features.{i}.1.0.weight`
//! `[o, 1, 1, c]`, PyTorch `[o, c, 1, 1]`), then `classifier.1` (after `classifier.0`, a
//! dropout of 0.001 as Keras). Layouts as in [`super::torch`].
//!
//! Widths are rounded with [`super::make_divisible`] (Keras truncates `int(c * alpha)`;
//! the two agree at Keras' widths 1, 0.75, 0.5 and 0.25). Initialisation as torchvision's
//! MobileNetV2.
//! Standard config: 4,231,976 parameters (Keras `MobileNet(alpha=1)`'s trainable count).

use super::{Arch, ConvBnAct, ModelConfig, finish, make_divisible, start};
use crate::error::Result;
use crate::graph::Graph;
use crate::layers::{Act, ActivationKind, Dense, Dropout, GlobalAvgPool, Init, Layer, Sequential};

/// `(output channels, stride)` of the 13 depthwise-separable blocks.
const BLOCKS: [(usize, usize); 13] = [
    (64, 1),
    (128, 2),
    (128, 1),
    (256, 2),
    (256, 1),
    (512, 2),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (1024, 2),
    (1024, 1),
];

/// MobileNetV1.
pub fn mobilenet_v1(cfg: &ModelConfig) -> Result<Graph> {
    let (mut net, x) = start(cfg)?;
    let w = |c: usize| make_divisible(c as f64 * cfg.width_multiplier, 8);
    let act = Some(Act::Op(ActivationKind::Relu6));
    let eps = 1e-3;
    let mut features = Sequential::new();
    features.push(ConvBnAct::new(w(32), 3, act).stride(2).eps(eps));
    for (c, s) in BLOCKS {
        let mut block = Sequential::new();
        block.push(ConvBnAct::new(0, 3, act).depthwise().stride(s).eps(eps));
        block.push(ConvBnAct::new(w(c), 1, act).eps(eps));
        features.push(block);
    }
    let x = net.scope("features", |net| features.build(net, x))?;
    let x = net.scope("avgpool", |net| GlobalAvgPool.build(net, x))?;
    let x = net.scope("classifier", |net| {
        net.scope("0", |net| Dropout::new(0.001).build(net, x))
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
    finish(net, Arch::MobileNetV1, cfg, y)
}
