//! [`Flatten`]: `[n, ...]` -> `[n, prod(...)]`, keeping the batch axis.
//!
//! Our activations are NHWC, so a flattened feature map lists its features in `(h, w, c)`
//! order where PyTorch's NCHW `flatten(1)` gives `(c, h, w)`. The layer records the
//! `(h, w, c)` it flattened on the [`Net`]; a [`super::Dense`] reading the result tags its
//! weight so [`crate::models::torch`] permutes PyTorch's columns on import.

use super::{Layer, Net};
use crate::error::Result;
use crate::graph::ValueId;
use crate::ops::flatten as op;

/// Flatten everything but the batch axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Flatten;

impl Flatten {
    /// The layer.
    pub fn new() -> Flatten {
        Flatten
    }
}

impl Layer for Flatten {
    fn build(&self, net: &mut Net, x: ValueId) -> Result<ValueId> {
        net.layer("flatten", |net| {
            let shape = net.shape(x)?;
            let y = net.node("flatten", op::Flatten { axis: 1 }, &[x])?;
            if let &[_, h, w, c] = shape.as_slice() {
                net.mark_flattened_nhwc(y, [h, w, c]);
            }
            Ok(y)
        })
    }
}
