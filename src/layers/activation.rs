//! [`Activation`]: an elementwise activation node, and [`Act`], the activations a block can
//! ask for (every [`ActivationKind`] plus SiLU, which has no op of its own).

use super::{Layer, Net, Silu};
use crate::error::Result;
use crate::graph::ValueId;
use crate::ops::activation as op;
use crate::ops::activation::ActivationKind;

/// An elementwise activation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Activation {
    /// The function.
    pub kind: ActivationKind,
}

impl Activation {
    /// An activation of `kind`.
    pub fn new(kind: ActivationKind) -> Activation {
        Activation { kind }
    }
}

impl Layer for Activation {
    fn build(&self, net: &mut Net, x: ValueId) -> Result<ValueId> {
        net.layer("activation", |net| {
            let y = net.node(
                op::kind_name(self.kind),
                op::Activation { kind: self.kind },
                &[x],
            )?;
            net.forward_flattened(x, y);
            Ok(y)
        })
    }
}

/// An activation a block applies: an op [`ActivationKind`], or SiLU / swish
/// (`x * sigmoid(x)`, EfficientNet's), which is built from two nodes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Act {
    /// One `activation` node (or a fused attribute where the producer has one).
    Op(ActivationKind),
    /// `x * sigmoid(x)`.
    Silu,
}

impl Act {
    /// The kind a conv or matmul can fuse, if this is a single op.
    pub fn fusable(self) -> Option<ActivationKind> {
        match self {
            Act::Op(kind) => Some(kind),
            Act::Silu => None,
        }
    }
}

impl Layer for Act {
    fn build(&self, net: &mut Net, x: ValueId) -> Result<ValueId> {
        match *self {
            Act::Op(kind) => Activation::new(kind).build(net, x),
            Act::Silu => Silu.build(net, x),
        }
    }
}
