//! [`Concat`]: joins values along an axis (by default the channel axis of NHWC).

use super::{Merge, Net};
use crate::error::Result;
use crate::graph::ValueId;
use crate::ops::concat as op;

/// Concatenation along `axis`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Concat {
    /// The joined axis; negative counts from the end (`-1`: channels).
    pub axis: i64,
}

impl Default for Concat {
    fn default() -> Self {
        Concat { axis: -1 }
    }
}

impl Concat {
    /// Concatenation along `axis`.
    pub fn new(axis: i64) -> Concat {
        Concat { axis }
    }
}

impl Merge for Concat {
    fn build(&self, net: &mut Net, inputs: &[ValueId]) -> Result<ValueId> {
        net.layer("concat", |net| {
            net.node("concat", op::Concat { axis: self.axis }, inputs)
        })
    }
}
