//! [`Reshape`]: the same elements under a new shape (one `-1` inferred).

use super::{Layer, Net};
use crate::error::Result;
use crate::graph::ValueId;
use crate::ops::reshape as op;

/// Reshape to `shape`; use `-1` for the batch axis so the graph can be resized.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Reshape {
    /// The new dimensions; at most one `-1`.
    pub shape: Vec<i64>,
}

impl Reshape {
    /// Reshape to `shape`.
    pub fn new(shape: &[i64]) -> Reshape {
        Reshape {
            shape: shape.to_vec(),
        }
    }
}

impl Layer for Reshape {
    fn build(&self, net: &mut Net, x: ValueId) -> Result<ValueId> {
        net.layer("reshape", |net| {
            net.node(
                "reshape",
                op::Reshape {
                    shape: self.shape.clone(),
                },
                &[x],
            )
        })
    }
}
