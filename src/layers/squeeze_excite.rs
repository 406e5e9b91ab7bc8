//! [`SqueezeExcite`]: torchvision's `SqueezeExcitation` (MobileNetV3, EfficientNet): channel
//! gates from the global mean through two 1x1 convolutions, multiplied onto the input.

use super::init::Init;
use super::{Act, Conv2d, GlobalAvgPool, Layer, Net, Reshape};
use crate::error::{Error, Result};
use crate::graph::ValueId;
use crate::ops::binary::{Binary, BinaryKind};

/// `x * scale_activation(fc2(activation(fc1(avgpool(x)))))` with torchvision's parameter
/// names `fc1.weight` `[squeeze, 1, 1, c]`, `fc1.bias`, `fc2.weight` `[c, 1, 1, squeeze]`,
/// `fc2.bias` (1x1 convolutions on the `[n, 1, 1, c]` pooled tensor, so PyTorch's
/// `[out, in, 1, 1]` weights import with the ordinary convolution rule).
#[derive(Debug, Clone, PartialEq)]
pub struct SqueezeExcite {
    /// Channels of the bottleneck.
    pub squeeze_channels: usize,
    /// After `fc1` (torchvision's default ReLU; EfficientNet: SiLU).
    pub activation: Act,
    /// The gate after `fc2` (torchvision's default sigmoid; MobileNetV3: hard sigmoid).
    pub scale_activation: Act,
    /// Weight initialiser of both convolutions.
    pub weight_init: Init,
    /// Bias initialiser of both convolutions.
    pub bias_init: Init,
}

impl SqueezeExcite {
    /// torchvision's defaults: ReLU, sigmoid gate, PyTorch's default initialisers.
    pub fn new(squeeze_channels: usize) -> SqueezeExcite {
        SqueezeExcite {
            squeeze_channels,
            activation: Act::Op(crate::ops::activation::ActivationKind::Relu),
            scale_activation: Act::Op(crate::ops::activation::ActivationKind::Sigmoid),
            weight_init: Init::TORCH_WEIGHT,
            bias_init: Init::BiasUniform,
        }
    }
}

fn conv_act(
    net: &mut Net,
    name: &str,
    act_name: &str,
    conv: Conv2d,
    act: Act,
    x: ValueId,
) -> Result<ValueId> {
    let mut conv = conv;
    conv.activation = act.fusable();
    let y = net.scope(name, |net| conv.build(net, x))?;
    match act {
        Act::Op(_) => Ok(y),
        Act::Silu => net.scope(act_name, |net| act.build(net, y)),
    }
}

impl Layer for SqueezeExcite {
    fn build(&self, net: &mut Net, x: ValueId) -> Result<ValueId> {
        net.layer("squeeze_excite", |net| {
            let shape = net.shape(x)?;
            let &[_, _, _, c] = shape.as_slice() else {
                return Err(Error::invalid_param(
                    net.path(),
                    format!("expects NHWC input, got {shape:?}"),
                ));
            };
            let c_i64 =
                i64::try_from(c).map_err(|e| Error::invalid_param(net.path(), e.to_string()))?;
            let pooled = net.scope("avgpool", |net| GlobalAvgPool.build(net, x))?;
            let s = net.scope("reshape", |net| {
                Reshape::new(&[-1, 1, 1, c_i64]).build(net, pooled)
            })?;
            let fc = |filters| Conv2d::new(filters, 1).init(self.weight_init, self.bias_init);
            let s = conv_act(
                net,
                "fc1",
                "activation",
                fc(self.squeeze_channels),
                self.activation,
                s,
            )?;
            let s = conv_act(
                net,
                "fc2",
                "scale_activation",
                fc(c),
                self.scale_activation,
                s,
            )?;
            net.node(
                "mul",
                Binary {
                    kind: BinaryKind::Mul,
                },
                &[x, s],
            )
        })
    }
}
