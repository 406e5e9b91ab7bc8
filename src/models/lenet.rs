//! LeNet-5 (LeCun et al. 1998) in the common PyTorch form, with padding 2 on `conv1` so
//! 28x28 MNIST digits work:
//!
//! `conv1` (6, 5x5, pad 2) -> relu -> maxpool 2 -> `conv2` (16, 5x5) -> relu -> maxpool 2 ->
//! flatten -> `fc1` (120) -> relu -> `fc2` (84) -> relu -> `fc3` (classes).
//!
//! Parameter names are the PyTorch module's `state_dict` keys: `conv1.weight`, `conv1.bias`,
//! `conv2.*`, `fc1.*`, `fc2.*`, `fc3.*`. Layouts (see [`super::torch`]): `conv*.weight`
//! OIHW `[o, i, 5, 5]` -> OHWI `[o, 5, 5, i]`; `fc*.weight` `[out, in]` -> `[in, out]`;
//! `fc1.weight` additionally has its input rows permuted from PyTorch's `(c, h, w)` flatten
//! order to our NHWC `(h, w, c)` order (recorded in the graph metadata, applied by the
//! importer). Relus are fused into the convolutions and matmuls. PyTorch's default
//! initialisation (`kaiming_uniform(a = sqrt 5)`, bias `±1/sqrt(fan_in)`).
//!
//! The width multiplier scales every hidden width (6, 16, 120, 84), rounded to the nearest
//! integer (at least 1): LeNet's widths are not multiples of 8.
//! 28x28x1, 10 classes: 61,706 parameters.

use super::{Arch, ModelConfig, finish, start};
use crate::error::Result;
use crate::graph::Graph;
use crate::layers::{ActivationKind, Conv2d, Dense, Flatten, Layer, MaxPool2d};

/// LeNet-5.
pub fn lenet5(cfg: &ModelConfig) -> Result<Graph> {
    let (mut net, x) = start(cfg)?;
    let width = |c: f64| ((c * cfg.width_multiplier).round() as usize).max(1);
    let relu = ActivationKind::Relu;
    let x = net.scope("conv1", |net| {
        Conv2d::new(width(6.0), 5).pad(2).act(relu).build(net, x)
    })?;
    let x = net.scope("pool1", |net| MaxPool2d::new(2, 2).build(net, x))?;
    let x = net.scope("conv2", |net| {
        Conv2d::new(width(16.0), 5).act(relu).build(net, x)
    })?;
    let x = net.scope("pool2", |net| MaxPool2d::new(2, 2).build(net, x))?;
    let x = net.scope("flatten", |net| Flatten.build(net, x))?;
    let x = net.scope("fc1", |net| {
        Dense::new(width(120.0)).act(relu).build(net, x)
    })?;
    let x = net.scope("fc2", |net| Dense::new(width(84.0)).act(relu).build(net, x))?;
    net.name_next_node("logits");
    let y = net.scope("fc3", |net| Dense::new(cfg.classes).build(net, x))?;
    finish(net, Arch::LeNet5, cfg, y)
}
