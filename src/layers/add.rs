//! [`Add`]: elementwise sum of two or more values (a residual connection), optionally
//! followed by an activation (ResNet's `relu(out + identity)`).

use super::{Activation, ActivationKind, Layer, Merge, Net};
use crate::error::{Error, Result};
use crate::graph::ValueId;
use crate::ops::binary::{Binary, BinaryKind};

/// Sum of the inputs (NumPy broadcasting), then `activation` if set.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Add {
    /// Applied to the sum.
    pub activation: Option<ActivationKind>,
}

impl Add {
    /// A plain sum.
    pub fn new() -> Add {
        Add::default()
    }
}

impl Merge for Add {
    fn build(&self, net: &mut Net, inputs: &[ValueId]) -> Result<ValueId> {
        net.layer("add", |net| {
            let Some((&first, rest)) = inputs.split_first() else {
                return Err(Error::invalid_param(
                    net.path(),
                    "add needs at least one input",
                ));
            };
            let sum_all = |net: &mut Net| {
                rest.iter().try_fold(first, |sum, &x| {
                    net.node(
                        "add",
                        Binary {
                            kind: BinaryKind::Add,
                        },
                        &[sum, x],
                    )
                })
            };
            match self.activation {
                // The activation is the layer's output: it takes the scope's name.
                Some(kind) => {
                    let sum = net.scope("add", sum_all)?;
                    Activation::new(kind).build(net, sum)
                }
                None => sum_all(net),
            }
        })
    }
}
