//! AlexNet as torchvision's `alexnet` (the one-GPU variant of Krizhevsky 2014):
//!
//! `features`: conv 64 11x11/4 pad 2, relu, maxpool 3/2, conv 192 5x5 pad 2, relu, maxpool
//! 3/2, conv 384 3x3 pad 1, relu, conv 256 3x3 pad 1, relu, conv 256 3x3 pad 1, relu,
//! maxpool 3/2; `avgpool`: adaptive average pooling to 6x6; `classifier`: dropout 0.5,
//! linear 4096, relu, dropout 0.5, linear 4096, relu, linear classes.
//!
//! Parameter names are torchvision's keys (`features.0.weight`, ..., `features.10.bias`,
//! `classifier.1.*`, `classifier.4.*`, `classifier.6.*`). Layouts: conv weights OIHW ->
//! OHWI; Linear `[out, in]` -> `[in, out]`; `classifier.1.weight` also has its rows permuted
//! from PyTorch's `(c, h, w)` flatten order to our `(h, w, c)` (graph metadata; the importer
//! applies it). Relus are fused into the convolutions and matmuls; PyTorch's default
//! initialisation (torchvision's AlexNet keeps it).
//!
//! The adaptive pooling follows PyTorch's windows for any input size (see
//! [`crate::layers::AdaptiveAvgPool2d`]), so the classifier always reads `256 * 6 * 6`
//! features as in torchvision; at 224 it is the identity. The width multiplier scales the
//! convolution channels and the 4096-wide hidden layers (rounded with
//! [`super::make_divisible`]). Standard config: 61,100,840 parameters.

use super::{Arch, ModelConfig, finish, make_divisible, start};
use crate::error::Result;
use crate::graph::Graph;
use crate::layers::{
    ActivationKind, AdaptiveAvgPool2d, Conv2d, Dense, Dropout, Flatten, Layer, MaxPool2d,
    Sequential,
};

/// AlexNet.
pub fn alexnet(cfg: &ModelConfig) -> Result<Graph> {
    let (mut net, x) = start(cfg)?;
    let w = |c: f64| make_divisible(c * cfg.width_multiplier, 8);
    let relu = ActivationKind::Relu;
    // torchvision's indices: each relu is its own module (1, 4, 7, 9, 11), fused here, so
    // its index is skipped.
    let mut features = Sequential::new();
    features
        .push_named("0", Conv2d::new(w(64.0), 11).stride(4).pad(2).act(relu))
        .push_named("2", MaxPool2d::new(3, 2))
        .push_named("3", Conv2d::new(w(192.0), 5).pad(2).act(relu))
        .push_named("5", MaxPool2d::new(3, 2))
        .push_named("6", Conv2d::new(w(384.0), 3).pad(1).act(relu))
        .push_named("8", Conv2d::new(w(256.0), 3).pad(1).act(relu))
        .push_named("10", Conv2d::new(w(256.0), 3).pad(1).act(relu))
        .push_named("12", MaxPool2d::new(3, 2));
    let x = net.scope("features", |net| features.build(net, x))?;
    let x = net.scope("avgpool", |net| AdaptiveAvgPool2d::new(6, 6).build(net, x))?;
    let x = net.scope("flatten", |net| Flatten.build(net, x))?;
    let hidden = w(4096.0);
    let mut classifier = Sequential::new();
    classifier
        .push_named("0", Dropout::new(0.5))
        .push_named("1", Dense::new(hidden).act(relu))
        .push_named("3", Dropout::new(0.5))
        .push_named("4", Dense::new(hidden).act(relu));
    let x = net.scope("classifier", |net| classifier.build(net, x))?;
    net.name_next_node("logits");
    let y = net.scope("classifier", |net| {
        net.scope("6", |net| Dense::new(cfg.classes).build(net, x))
    })?;
    finish(net, Arch::AlexNet, cfg, y)
}
