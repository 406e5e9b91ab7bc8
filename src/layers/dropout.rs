//! [`Dropout`]: inverted dropout; the identity in the inference graphs the zoo builds
//! (`training = false`), kept as a node so a training transform can switch it on.

use super::{Layer, Net};
use crate::error::{Error, Result};
use crate::graph::ValueId;
use crate::ops::dropout as op;

/// Dropout with probability `rate`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Dropout {
    /// Probability of dropping an element, in `[0, 1)`.
    pub rate: f32,
    /// Apply the mask (training) rather than pass through (inference).
    pub training: bool,
    /// Mask stream; `None` derives one from the net's seed and the layer's name.
    pub seed: Option<u64>,
}

impl Dropout {
    /// Inference-mode dropout of `rate`.
    pub fn new(rate: f32) -> Dropout {
        Dropout {
            rate,
            training: false,
            seed: None,
        }
    }
}

impl Layer for Dropout {
    fn build(&self, net: &mut Net, x: ValueId) -> Result<ValueId> {
        net.layer("dropout", |net| {
            if !(0.0..1.0).contains(&self.rate) {
                return Err(Error::invalid_param(
                    net.path(),
                    format!("dropout rate {} is outside [0, 1)", self.rate),
                ));
            }
            let seed = self.seed.unwrap_or_else(|| net.name_seed(&net.path()));
            let y = net.node(
                "dropout",
                op::Dropout {
                    rate: self.rate,
                    seed,
                    training: self.training,
                },
                &[x],
            )?;
            net.forward_flattened(x, y);
            Ok(y)
        })
    }
}
