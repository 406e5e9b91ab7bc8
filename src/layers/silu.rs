//! [`Silu`]: SiLU / swish, `x * sigmoid(x)`, as a sigmoid node and a multiply (the op set
//! has no SiLU; the planner may fuse the pair).

use super::{Layer, Net};
use crate::error::Result;
use crate::graph::ValueId;
use crate::ops::activation::{Activation, ActivationKind};
use crate::ops::binary::{Binary, BinaryKind};

/// SiLU (PyTorch's `nn.SiLU`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Silu;

impl Layer for Silu {
    fn build(&self, net: &mut Net, x: ValueId) -> Result<ValueId> {
        net.layer("silu", |net| {
            // Name the multiply (the layer's output) after the scope: sigmoid gets a suffix.
            let sig = net.scope("sigmoid", |net| {
                net.node(
                    "sigmoid",
                    Activation {
                        kind: ActivationKind::Sigmoid,
                    },
                    &[x],
                )
            })?;
            let y = net.node(
                "mul",
                Binary {
                    kind: BinaryKind::Mul,
                },
                &[x, sig],
            )?;
            net.forward_flattened(x, y);
            Ok(y)
        })
    }
}
